//! The message bus seam: node-addressed delivery of envelopes.
//!
//! Contract, for every implementation:
//! - `publish(to, bytes)` delivers to the one node subscribed as `to`, never
//!   to every node.
//! - Envelopes published through one bus instance to one node arrive in
//!   publish order.
//! - `publish` never blocks; `done` is called exactly once with the number of
//!   subscribers that received it (0: the node is gone) or an error (the
//!   backend is unreachable), so no envelope is dropped unnoticed.
//! - `subscribe` hands every envelope for the node to its [`EnvelopeSink`],
//!   in order, for as long as the sink lives, across backend reconnects.
//! - `leave` ends the subscription for good: once it resolves, a publish to
//!   the node reaches no subscriber, and every envelope the backend counted
//!   as received before was handed to the sink (a draining node thus loses
//!   nothing that was published to it: the rest is answered by presence).

mod envelope;
mod memory;
mod redis;
mod redis_cluster;

use std::future::Future;

use bytes::Bytes;
use std::sync::Arc;

pub use self::redis::RedisBus;
pub use self::redis_cluster::RedisClusterBus;
pub use envelope::{Envelope, EnvelopeError, HeldSignal, SignalEnvelope, SignalRef};
pub use memory::MemoryBus;

use crate::ids::NodeId;

/// Receives the envelopes published to a node: the node itself. Called on
/// the bus's own task (or, in memory, the publisher's), so it must not block.
pub trait EnvelopeSink: Send + Sync + 'static {
    /// Handles one encoded envelope.
    fn on_envelope(&self, bytes: &[u8]);

    /// The subscription was (re-)established. After a re-subscription the
    /// backend may have restarted empty or dropped envelopes meanwhile.
    fn on_subscribed(&self) {}
}

/// Called once with the outcome of a publish.
pub type PublishDone = Box<dyn FnOnce(Result<usize, BusError>) + Send>;

/// A bus failure. Cloneable (one failed pipeline answers every publish in
/// it), so the backend's error is shared.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BusError {
    /// The backend refused or failed the publish.
    #[error("message bus: publish failed")]
    Command(#[source] Arc<::redis::RedisError>),
    /// The backend did not answer in time.
    #[error("message bus: publish timed out")]
    Timeout,
    /// No connection to the backend (it is being re-established).
    #[error("message bus: not connected")]
    NotConnected,
    /// The node's publish queue is full or its publisher stopped.
    #[error("message bus: publish queue full")]
    QueueFull,
    /// The pipeline answered a different number of replies than it held.
    #[error("message bus: pipeline answered {got} replies for {sent} publishes")]
    ReplyCount {
        /// Publishes sent.
        sent: usize,
        /// Replies received.
        got: usize,
    },
    /// The backend could not be set up from its URL.
    #[error("message bus cannot be set up")]
    Setup(#[source] Arc<::redis::RedisError>),
}

/// The message bus seam; see the module docs for the contract.
pub trait MessageBus: Send + Sync + 'static {
    /// Queues `envelope` for node `to`.
    fn publish(&self, to: &NodeId, envelope: Bytes, done: Option<PublishDone>);

    /// Subscribes node `node` to its channel; envelopes go to `sink`.
    fn subscribe(
        &self,
        node: &NodeId,
        sink: Arc<dyn EnvelopeSink>,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Drops and re-creates the subscription (the node's probes stopped
    /// coming back: the connection may have died silently).
    fn resubscribe(&self) {}

    /// Ends the subscription for good (see the module docs); bounded in
    /// time when the backend does not answer.
    fn leave(&self) -> impl Future<Output = ()> + Send;
}

/// The backend chosen at the composition root.
pub enum Bus {
    /// In-process bus.
    Memory(MemoryBus),
    /// Redis pub/sub (one server, or the master behind Sentinels).
    Redis(RedisBus),
    /// Redis Cluster sharded pub/sub.
    RedisCluster(RedisClusterBus),
}

impl MessageBus for Bus {
    fn publish(&self, to: &NodeId, envelope: Bytes, done: Option<PublishDone>) {
        match self {
            Bus::Memory(b) => b.publish(to, envelope, done),
            Bus::Redis(b) => b.publish(to, envelope, done),
            Bus::RedisCluster(b) => b.publish(to, envelope, done),
        }
    }

    fn resubscribe(&self) {
        match self {
            Bus::Memory(b) => b.resubscribe(),
            Bus::Redis(b) => b.resubscribe(),
            Bus::RedisCluster(b) => b.resubscribe(),
        }
    }

    async fn subscribe(&self, node: &NodeId, sink: Arc<dyn EnvelopeSink>) -> Result<(), BusError> {
        match self {
            Bus::Memory(b) => b.subscribe(node, sink).await,
            Bus::Redis(b) => b.subscribe(node, sink).await,
            Bus::RedisCluster(b) => b.subscribe(node, sink).await,
        }
    }

    async fn leave(&self) {
        match self {
            Bus::Memory(b) => b.leave().await,
            Bus::Redis(b) => b.leave().await,
            Bus::RedisCluster(b) => b.leave().await,
        }
    }
}

/// The subscriber task's side of [`MessageBus::leave`]: a request carrying
/// the sender to answer once the subscription is gone.
pub(crate) type LeaveRequest = tokio::sync::oneshot::Sender<()>;

/// The bus's side of [`MessageBus::leave`]: one line to each subscriber
/// task this bus started.
#[derive(Default)]
pub(crate) struct Leaves(std::sync::Mutex<Vec<tokio::sync::mpsc::Sender<LeaveRequest>>>);

impl Leaves {
    /// A line for a new subscriber task.
    pub(crate) fn add(&self) -> tokio::sync::mpsc::Receiver<LeaveRequest> {
        let (to, from) = tokio::sync::mpsc::channel(1);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(to);
        from
    }

    /// Asks every subscriber task to leave and waits for each (bounded).
    pub(crate) async fn leave_all(&self) {
        let lines = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for to in lines {
            let (done, left) = tokio::sync::oneshot::channel();
            if to.send(done).await.is_ok() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), left).await;
            }
        }
    }
}
