//! The local route and the hub lookup, exposed to the criterion benches
//! (`cargo bench --features bench`) and nothing else.

use std::sync::Arc;

use futures_util::FutureExt;
use uuid::Uuid;

use super::{Node, OutboxLimits, Outgoing, SessionHandle};
use crate::ids::{ClientId, SessionId};
use crate::protocol::{Codec, MessageType};

/// A node's hub with sessions whose queues are drained by the bench.
pub struct LocalRoute {
    node: Arc<Node>,
    sender: Arc<SessionHandle>,
    source: ClientId,
}

/// A queue large enough that a bench iteration never overflows it.
const LIMITS: OutboxLimits = OutboxLimits {
    frames: 1 << 20,
    bytes: 1 << 30,
};

impl LocalRoute {
    /// Adds `others` idle sessions and the sender `source` to `node`'s hub
    /// (`None` when `source` is not a valid client id).
    pub fn new(node: Arc<Node>, others: usize, source: &str) -> Option<LocalRoute> {
        for i in 0..others {
            if let Some(id) = ClientId::new(&format!("client-{i}")) {
                node.hub.insert(id, session(Codec::Json));
            }
        }
        let source = ClientId::new(source)?;
        let sender = session(Codec::Json);
        node.hub.insert(source.clone(), Arc::clone(&sender));
        Some(LocalRoute {
            node,
            sender,
            source,
        })
    }

    /// Adds (or replaces) the target `id` with session codec `codec`; the
    /// returned drain empties its queue.
    pub fn target(&self, id: &str, codec: Codec) -> Target {
        let handle = session(codec);
        if let Some(id) = ClientId::new(id) {
            self.node.hub.insert(id, Arc::clone(&handle));
        }
        Target {
            handle,
            drained: Vec::with_capacity(1024),
            receipts: Vec::new(),
        }
    }

    /// Routes one ICE candidate to `target` as a session would; true when
    /// it was queued locally without waiting.
    pub fn route(&self, target: &str, data: &str) -> bool {
        let signal = Outgoing {
            kind: MessageType::SignalIceCandidate,
            message_id: Uuid::nil(),
            source: &self.source,
            target,
            data,
            read_at: tokio::time::Instant::now(),
        };
        match self.node.route_now(&signal, &self.sender) {
            Some(result) => result.is_ok(),
            None => self
                .node
                .route_after_lookup(&signal, &self.sender)
                .now_or_never()
                .is_some_and(|r| r.is_ok()),
        }
    }

    /// Looks a client up in the hub.
    pub fn lookup(&self, client: &str) -> bool {
        self.node.hub.get(client).is_some()
    }
}

/// A bench target's queue.
pub struct Target {
    handle: Arc<SessionHandle>,
    drained: Vec<bytes::Bytes>,
    receipts: Vec<super::outbox::Receipt>,
}

impl Target {
    /// Empties the queue; false if the session closed.
    pub fn drain(&mut self) -> bool {
        let open = self
            .handle
            .take(&mut self.drained, &mut self.receipts)
            .is_none();
        self.drained.clear();
        self.receipts.clear();
        open
    }
}

fn session(codec: Codec) -> Arc<SessionHandle> {
    Arc::new(SessionHandle::new(SessionId::generate(), codec, LIMITS))
}

/// An origin's unconfirmed set in a steady state: `outstanding` signals
/// waiting, each step publishing one and a confirmation settling the
/// oldest in batches, as a saturated sending node does.
pub struct UnconfirmedSteady {
    set: super::confirm::Unconfirmed,
    sender: Arc<SessionHandle>,
    to: crate::ids::NodeId,
    oldest: u64,
    batch: Vec<u64>,
}

/// Sequence numbers one confirmation settles in the steady state.
const CONFIRM_BATCH: usize = 64;

impl UnconfirmedSteady {
    /// A set already holding `outstanding` signals.
    pub fn new(outstanding: usize) -> UnconfirmedSteady {
        let set = super::confirm::Unconfirmed::new(
            outstanding * 2 + CONFIRM_BATCH,
            super::confirm::Timing::for_timeout(5000),
        );
        let sender = session(Codec::Json);
        let to = crate::ids::NodeId::new("node-b");
        let mut oldest = 0;
        for i in 0..outstanding {
            if let Ok((seq, _)) = set.track(Arc::clone(&sender), Uuid::nil(), to.clone(), 0) {
                if i == 0 {
                    oldest = seq;
                }
            }
        }
        UnconfirmedSteady {
            set,
            sender,
            to,
            oldest,
            batch: Vec::with_capacity(CONFIRM_BATCH),
        }
    }

    /// Publishes one signal and marks the oldest confirmed; every
    /// [`CONFIRM_BATCH`] steps their confirmation settles them. True while
    /// every confirmation settled what it named.
    pub fn step(&mut self) -> bool {
        let tracked = self
            .set
            .track(Arc::clone(&self.sender), Uuid::nil(), self.to.clone(), 0)
            .is_ok();
        self.batch.push(self.oldest);
        self.oldest += 1;
        if self.batch.len() < CONFIRM_BATCH {
            return tracked;
        }
        let settled = self.set.confirm(&self.batch);
        let all = settled == self.batch.len();
        self.batch.clear();
        tracked && all
    }
}
