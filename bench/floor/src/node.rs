//! One floor node: local clients by id, where remote clients live, the
//! publisher that pipelines PUBLISHes to other nodes' channels, and the
//! subscriber that hands what arrives on this node's channel to its clients.
//!
//! What it leaves out on purpose, against the product: authentication,
//! presence TTL and refresh (a client's node is written once, never
//! removed), rate limits, bounded queues and slow-consumer handling,
//! confirmations, reconnecting to Redis, metrics and tracing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

/// A client's outbound queue.
pub type Outbound = mpsc::UnboundedSender<Bytes>;

/// Most PUBLISHes sent in one pipeline.
const MAX_BATCH: usize = 1024;

/// What every session of a node shares.
pub struct Node {
    pub id: String,
    prefix: String,
    clients: Mutex<HashMap<String, Outbound>>,
    /// client id → channel of its node, filled on first use and never dropped.
    locations: Mutex<HashMap<String, String>>,
    redis: MultiplexedConnection,
    publish: mpsc::UnboundedSender<(String, Bytes)>,
}

impl Node {
    /// Connects to Redis, subscribes to this node's channel (before it
    /// returns, so nothing sent to a client here is missed) and starts the
    /// publisher and the subscriber tasks.
    pub async fn start(
        redis_url: &str,
        id: String,
        prefix: String,
    ) -> redis::RedisResult<Arc<Node>> {
        let client = redis::Client::open(redis_url)?;
        let redis = client.get_multiplexed_async_connection().await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel(&prefix, &id)).await?;
        let (publish, queue) = mpsc::unbounded_channel();
        tokio::spawn(publisher(redis.clone(), queue));
        let node = Arc::new(Node {
            id,
            prefix,
            clients: Mutex::new(HashMap::new()),
            locations: Mutex::new(HashMap::new()),
            redis,
            publish,
        });
        tokio::spawn(subscriber(Arc::clone(&node), pubsub));
        Ok(node)
    }

    /// Registers a client here and writes its node to Redis (once).
    pub async fn register(&self, client_id: &str, outbound: Outbound) -> redis::RedisResult<()> {
        lock(&self.clients).insert(client_id.to_owned(), outbound);
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(client_key(&self.prefix, client_id))
            .arg(&self.id)
            .query_async::<()>(&mut redis)
            .await
    }

    /// Forgets a local client (its Redis key stays: no presence upkeep).
    pub fn unregister(&self, client_id: &str) {
        lock(&self.clients).remove(client_id);
    }

    /// Sends `frame` to `target`: straight to its queue when it is here,
    /// else one PUBLISH to its node's channel. Unknown targets are dropped.
    pub async fn route(&self, target: String, frame: Bytes) {
        let Some(frame) = self.deliver_local(&target, frame) else {
            return;
        };
        let known = lock(&self.locations).get(&target).cloned();
        let node_channel = match known {
            Some(c) => c,
            None => {
                let mut redis = self.redis.clone();
                let node: Option<String> = redis::cmd("GET")
                    .arg(client_key(&self.prefix, &target))
                    .query_async(&mut redis)
                    .await
                    .unwrap_or(None);
                let Some(node) = node else { return };
                let c = channel(&self.prefix, &node);
                lock(&self.locations).insert(target.clone(), c.clone());
                c
            }
        };
        let _ = self
            .publish
            .send((node_channel, seal_envelope(&target, &frame)));
    }

    /// Queues `frame` for a local client; hands it back when there is none.
    fn deliver_local(&self, target: &str, frame: Bytes) -> Option<Bytes> {
        match lock(&self.clients).get(target) {
            Some(queue) => {
                let _ = queue.send(frame);
                None
            }
            None => Some(frame),
        }
    }
}

/// Feeds this node's clients from its channel. If the subscription ends
/// the floor stops relaying across nodes (no resubscribe): the process exits.
async fn subscriber(node: Arc<Node>, pubsub: redis::aio::PubSub) {
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        if let Some((target, frame)) = open_envelope(message.get_payload_bytes()) {
            node.deliver_local(target, frame);
        }
    }
    eprintln!("floor: subscription to Redis ended");
    std::process::exit(1);
}

/// Drains the publish queue: whatever is waiting goes out as one pipeline,
/// and the next batch waits for its replies (order per channel is kept).
async fn publisher(
    mut redis: MultiplexedConnection,
    mut queue: mpsc::UnboundedReceiver<(String, Bytes)>,
) {
    while let Some(first) = queue.recv().await {
        let mut pipe = redis::pipe();
        let mut next = Some(first);
        let mut n = 0;
        while let Some((channel, payload)) = next {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(payload.as_ref())
                .ignore();
            n += 1;
            next = if n < MAX_BATCH {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        if let Err(e) = pipe.query_async::<()>(&mut redis).await {
            eprintln!("floor: publish failed: {e}");
        }
    }
}

fn channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:node:{node}")
}

fn client_key(prefix: &str, client: &str) -> String {
    format!("{prefix}:client:{client}")
}

/// A bus message: target id length (one byte; ids are ≤ 128 bytes), the
/// id, then the frame as the target receives it.
fn seal_envelope(target: &str, frame: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(1 + target.len() + frame.len());
    buf.put_u8(target.len().min(255) as u8);
    buf.put_slice(&target.as_bytes()[..target.len().min(255)]);
    buf.put_slice(frame);
    buf.freeze()
}

fn open_envelope(bytes: &[u8]) -> Option<(&str, Bytes)> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    let target = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((target, Bytes::copy_from_slice(&rest[len..])))
}

/// A poisoned map is still a usable map: a panicking session cannot corrupt
/// a `HashMap` insert or remove half-way.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let sealed = seal_envelope("bob", b"\xa5frame");
        let (target, frame) = open_envelope(&sealed).unwrap();
        assert_eq!(target, "bob");
        assert_eq!(&frame[..], b"\xa5frame");
        assert!(open_envelope(&[9, b'x']).is_none());
    }
}
