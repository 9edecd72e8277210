//! In-process bus: a map from node id to that node's sink. A publish hands
//! the envelope to the sink at once, on the publisher's task. Clones share
//! the map, so nodes built on clones of one bus form a cluster.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::{BusError, EnvelopeSink, MessageBus, PublishDone};
use crate::ids::NodeId;

/// In-memory bus; clones share one set of subscriptions.
#[derive(Default)]
pub struct MemoryBus {
    subscribers: Arc<RwLock<HashMap<NodeId, Arc<dyn EnvelopeSink>>>>,
    /// The nodes this instance subscribed (left by `leave`); not shared by
    /// clones, each of which serves a node of its own.
    own: RwLock<Vec<NodeId>>,
}

impl Clone for MemoryBus {
    fn clone(&self) -> Self {
        MemoryBus {
            subscribers: Arc::clone(&self.subscribers),
            own: RwLock::default(),
        }
    }
}

impl MemoryBus {
    /// Drops a node's subscription, as a crashed node's would vanish.
    pub fn unsubscribe(&self, node: &NodeId) {
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
    }
}

impl MessageBus for MemoryBus {
    fn publish(&self, to: &NodeId, envelope: Bytes, done: Option<PublishDone>) {
        // Clone the sink out so no lock is held while it runs (it may publish).
        let sink = self
            .subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(to)
            .cloned();
        let received = match sink {
            Some(sink) => {
                sink.on_envelope(&envelope);
                1
            }
            None => 0,
        };
        if let Some(done) = done {
            done(Ok(received));
        }
    }

    async fn subscribe(&self, node: &NodeId, sink: Arc<dyn EnvelopeSink>) -> Result<(), BusError> {
        self.own
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(node.clone());
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), Arc::clone(&sink));
        sink.on_subscribed();
        Ok(())
    }

    async fn leave(&self) {
        let own = std::mem::take(&mut *self.own.write().unwrap_or_else(|e| e.into_inner()));
        for node in own {
            self.unsubscribe(&node);
        }
    }
}
