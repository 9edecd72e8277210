//! The presence seam: which node holds each client's session.
//!
//! Contract, for every implementation:
//! - A record lives `ttl` after its last `register` or `refresh`, then
//!   disappears (so a crashed node's clients go offline on their own).
//! - `unregister` is compare-and-delete: it removes the record only while it
//!   still names the given node and session, so an old node never erases a
//!   newer session.
//! - `locate` answers only records whose node is alive: a node keeps its own
//!   record alive with `keep_node_alive`; a record naming a node whose record
//!   has expired counts as offline.
//! - `refresh` re-creates missing records (the backend may have restarted
//!   empty) but never overwrites a record that names another session.

mod memory;
mod redis;
mod redis_cluster;

use std::future::Future;

pub use self::redis::RedisPresence;
pub use self::redis_cluster::RedisClusterPresence;
pub use memory::MemoryPresence;

use crate::ids::{ClientId, NodeId, SessionId};

/// Where a client's session lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The node holding the session.
    pub node_id: NodeId,
    /// The session on that node.
    pub session_id: SessionId,
}

/// A presence backend failure; the cause is kept as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The backend refused or failed a command.
    #[error("presence backend: {command} failed")]
    Command {
        /// The command (for the log).
        command: &'static str,
        /// The backend's error.
        #[source]
        source: ::redis::RedisError,
    },
    /// The backend did not answer in time.
    #[error("presence backend: {0} timed out")]
    Timeout(&'static str),
    /// No connection could be had from the pool.
    #[error("presence backend: no connection")]
    Pool(#[source] deadpool::managed::PoolError<::redis::RedisError>),
    /// The backend could not be set up from its URL.
    #[error("presence backend cannot be set up")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored record could not be parsed.
    #[error("malformed presence record for {0}")]
    Malformed(String),
}

impl PresenceError {
    /// Whether the backend lost its script cache (a restarted Redis).
    pub fn is_no_script(&self) -> bool {
        matches!(
            self,
            PresenceError::Command { source, .. }
                if source.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)
        )
    }
}

/// The presence registry seam; see the module docs for the contract.
pub trait PresenceRegistry: Send + Sync + 'static {
    /// Records `client → at` with the TTL; returns the location it replaced
    /// (which may be on another node: that node must be told).
    fn register(
        &self,
        client: &ClientId,
        at: &Location,
    ) -> impl Future<Output = Result<Option<Location>, PresenceError>> + Send;

    /// Refreshes the TTL of many records at once (one round trip), creating
    /// missing ones; returns how many had to be re-created.
    fn refresh(
        &self,
        entries: &[(ClientId, Location)],
    ) -> impl Future<Output = Result<usize, PresenceError>> + Send;

    /// Compare-and-delete; returns whether the record was removed.
    fn unregister(
        &self,
        client: &ClientId,
        at: &Location,
    ) -> impl Future<Output = Result<bool, PresenceError>> + Send;

    /// The client's location, if it is online on a live node.
    fn locate(
        &self,
        client: &str,
    ) -> impl Future<Output = Result<Option<Location>, PresenceError>> + Send;

    /// Creates or refreshes this node's liveness record.
    fn keep_node_alive(
        &self,
        node: &NodeId,
    ) -> impl Future<Output = Result<(), PresenceError>> + Send;

    /// Removes this node's liveness record (clean shutdown).
    fn remove_node(&self, node: &NodeId) -> impl Future<Output = Result<(), PresenceError>> + Send;
}

/// The backend chosen at the composition root.
pub enum Presence {
    /// In-process registry.
    Memory(MemoryPresence),
    /// Redis registry (one server, or the master behind Sentinels).
    Redis(RedisPresence),
    /// Redis Cluster registry.
    RedisCluster(Box<RedisClusterPresence>),
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Presence::Memory($p) => $e,
            Presence::Redis($p) => $e,
            Presence::RedisCluster($p) => $e,
        }
    };
}

impl PresenceRegistry for Presence {
    async fn register(
        &self,
        client: &ClientId,
        at: &Location,
    ) -> Result<Option<Location>, PresenceError> {
        dispatch!(self, p => p.register(client, at).await)
    }
    async fn refresh(&self, entries: &[(ClientId, Location)]) -> Result<usize, PresenceError> {
        dispatch!(self, p => p.refresh(entries).await)
    }
    async fn unregister(&self, client: &ClientId, at: &Location) -> Result<bool, PresenceError> {
        dispatch!(self, p => p.unregister(client, at).await)
    }
    async fn locate(&self, client: &str) -> Result<Option<Location>, PresenceError> {
        dispatch!(self, p => p.locate(client).await)
    }
    async fn keep_node_alive(&self, node: &NodeId) -> Result<(), PresenceError> {
        dispatch!(self, p => p.keep_node_alive(node).await)
    }
    async fn remove_node(&self, node: &NodeId) -> Result<(), PresenceError> {
        dispatch!(self, p => p.remove_node(node).await)
    }
}
