//! Newtype ids: a client, a node, a session. Each is validated once, where
//! it enters the process, and cheap to clone afterwards.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::protocol::is_valid_client_id;

/// An authenticated client id: 1 to 128 bytes of `[A-Za-z0-9._:@-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Validates and wraps an id.
    pub fn new(id: &str) -> Option<ClientId> {
        is_valid_client_id(id).then(|| ClientId(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's id, unique in the cluster; names its bus channel.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Wraps an id (validated by configuration).
    pub fn new(id: &str) -> NodeId {
        NodeId(Arc::from(id))
    }

    /// Validates an id that arrived from outside (an envelope, a presence
    /// record): the same alphabet and length as a client id.
    pub fn parse(id: &str) -> Option<NodeId> {
        is_valid_client_id(id).then(|| NodeId::new(id))
    }

    /// `hostname-xxxxxx`: the default when `cluster.node_id` is unset.
    pub fn generate() -> NodeId {
        let host = gethostname::gethostname();
        let host: String = host
            .to_string_lossy()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .take(100)
            .collect();
        let suffix = &Uuid::new_v4().simple().to_string()[..8];
        let host = if host.is_empty() { "node" } else { &host };
        NodeId::new(&format!("{host}-{suffix}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One session of a client on a node; survives token refreshes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> SessionId {
        SessionId(Uuid::new_v4())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
