//! In-process bus: one bounded channel per subscribed node. Clones share the
//! subscriptions, so nodes built on clones of one bus form a cluster.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{BusError, MessageBus, PublishDone};
use crate::ids::NodeId;

/// Envelopes a node's inbox holds before publishes to it count as not received.
const INBOX_CAPACITY: usize = 65_536;

/// In-memory bus; clones share one set of subscriptions.
#[derive(Clone, Default)]
pub struct MemoryBus {
    subscribers: Arc<RwLock<HashMap<NodeId, mpsc::Sender<Bytes>>>>,
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
        let tx = self
            .subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(to)
            .cloned();
        let received = match tx {
            Some(tx) => usize::from(tx.try_send(envelope).is_ok()),
            None => 0,
        };
        if let Some(done) = done {
            done(Ok(received));
        }
    }

    async fn subscribe(&self, node: &NodeId) -> Result<mpsc::Receiver<Bytes>, BusError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.clone(), tx);
        Ok(rx)
    }
}
