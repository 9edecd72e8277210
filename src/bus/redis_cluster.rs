//! Redis Cluster bus: sharded pub/sub. Each node's channel
//! `<prefix>:node:<node_id>` hashes to one slot, so it lives on one shard;
//! a node `SSUBSCRIBE`s to it there and a signal costs one `SPUBLISH` on
//! that shard only (classic `PUBLISH` would be broadcast to every shard of
//! the cluster).
//!
//! The publisher task works like the standalone one: whatever is queued
//! goes out as one batch, one batch in flight. A batch is split by target
//! channel (one slot each) into one pipeline per channel, all sent at once;
//! order per target holds because a channel's publishes share one
//! pipeline, in queue order. The subscriber is a RESP3 cluster connection
//! whose push messages reach the node's sink directly; the connection
//! re-subscribes by itself after a reconnect or a shard failover, and is
//! rebuilt from scratch when the node's probes stop coming back or it
//! loses a cluster node; before it is dropped it unsubscribes, so every
//! envelope Redis counted for it reaches the node.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use redis::cluster::ClusterClient;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{BusError, EnvelopeSink, LeaveRequest, Leaves, MessageBus, PublishDone};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::redis_conn::{cluster_client, LazyCluster, RedisSetupError, TlsOptions};
use crate::redis_names::RedisNames;

/// Publishes waiting for the publisher task before new ones are refused.
const PUBLISH_QUEUE: usize = 65_536;
/// Most publishes in one batch.
const MAX_BATCH: usize = 1024;
/// Bound on one batch, retries through a shard failover included.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the SUNSUBSCRIBE of a subscription rebuilt on purpose.
const LEAVE_TIMEOUT: Duration = Duration::from_millis(250);

struct PublishRequest {
    channel: String,
    payload: Bytes,
    done: Option<PublishDone>,
}

/// The Redis Cluster message bus.
pub struct RedisClusterBus {
    urls: Vec<String>,
    tls: TlsOptions,
    names: RedisNames,
    queue: mpsc::Sender<PublishRequest>,
    resubscribe: Arc<Notify>,
    leaves: Leaves,
}

impl RedisClusterBus {
    /// A bus on the cluster seeded by `urls`; starts the publisher task
    /// (call inside a runtime).
    pub fn new(
        urls: &[String],
        tls: &TlsOptions,
        prefix: &str,
        metrics: Arc<Metrics>,
    ) -> Result<RedisClusterBus, RedisSetupError> {
        let publisher = cluster_client(urls, tls, None)?;
        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(run_publisher(publisher, rx, metrics));
        Ok(RedisClusterBus {
            urls: urls.to_vec(),
            tls: tls.clone(),
            names: RedisNames::new(prefix),
            queue,
            resubscribe: Arc::new(Notify::new()),
            leaves: Leaves::default(),
        })
    }

    fn channel(&self, node: &NodeId) -> String {
        self.names.node_channel(node.as_str())
    }
}

impl MessageBus for RedisClusterBus {
    fn publish(&self, to: &NodeId, envelope: Bytes, done: Option<PublishDone>) {
        let request = PublishRequest {
            channel: self.channel(to),
            payload: envelope,
            done,
        };
        if let Err(e) = self.queue.try_send(request) {
            let request = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            if let Some(done) = request.done {
                done(Err(BusError::QueueFull));
            }
        }
    }

    async fn subscribe(&self, node: &NodeId, sink: Arc<dyn EnvelopeSink>) -> Result<(), BusError> {
        let weak = Arc::downgrade(&sink);
        let to_sink = weak.clone();
        let lost = Arc::new(Notify::new());
        let on_lost = Arc::clone(&lost);
        let push = move |info: PushInfo| -> Result<(), ()> {
            if info.kind == PushKind::Disconnection {
                on_lost.notify_one();
            }
            deliver(&to_sink, info);
            Ok(())
        };
        let client =
            cluster_client(&self.urls, &self.tls, Some(Box::new(push))).map_err(|e| match e {
                RedisSetupError::Client { source, .. } => BusError::Setup(Arc::new(source)),
                _ => BusError::NotConnected,
            })?;
        let leave = self.leaves.add();
        tokio::spawn(run_subscriber(
            client,
            self.channel(node),
            weak,
            Wake {
                probes: Arc::clone(&self.resubscribe),
                lost,
                leave,
            },
        ));
        Ok(())
    }

    fn resubscribe(&self) {
        self.resubscribe.notify_one();
    }

    async fn leave(&self) {
        self.leaves.leave_all().await;
    }
}

/// Hands a sharded message to the sink, on the connection's own task.
fn deliver(sink: &Weak<dyn EnvelopeSink>, info: PushInfo) {
    if info.kind != PushKind::SMessage {
        return;
    }
    if let Some(Value::BulkString(payload)) = info.data.get(1) {
        if let Some(sink) = sink.upgrade() {
            sink.on_envelope(payload);
        }
    }
}

async fn run_publisher(
    client: ClusterClient,
    mut rx: mpsc::Receiver<PublishRequest>,
    metrics: Arc<Metrics>,
) {
    let cluster = LazyCluster::new(client);
    let mut batch: Vec<PublishRequest> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let items: Vec<(&str, &[u8])> = batch
            .iter()
            .map(|r| (r.channel.as_str(), &r.payload[..]))
            .collect();
        let counts = tokio::time::timeout(ROUND_TRIP_TIMEOUT, publish_batch(&cluster, &items))
            .await
            .unwrap_or_else(|_| vec![Err(BusError::Timeout); batch.len()]);
        drop(items);
        metrics.redis_command("SPUBLISH", started.elapsed().as_secs_f64());
        for (request, count) in batch.drain(..).zip(counts) {
            if let Some(done) = request.done {
                done(count);
            }
        }
    }
}

/// One pipeline per target channel, all in flight together; one outcome
/// per request, in batch order.
async fn publish_batch(
    cluster: &LazyCluster,
    batch: &[(&str, &[u8])],
) -> Vec<Result<usize, BusError>> {
    let conn = match cluster.get().await {
        Ok(conn) => conn,
        Err(e) => return vec![Err(BusError::Command(Arc::new(e))); batch.len()],
    };
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, (channel, _)) in batch.iter().enumerate() {
        match groups.iter_mut().find(|(c, _)| c == channel) {
            Some((_, members)) => members.push(i),
            None => groups.push((channel, vec![i])),
        }
    }
    let sends = groups.iter().map(|(channel, members)| {
        let mut conn = conn.clone();
        let mut pipe = redis::pipe();
        for &i in members {
            pipe.cmd("SPUBLISH").arg(*channel).arg(batch[i].1);
        }
        async move {
            match pipe.query_async::<Vec<usize>>(&mut conn).await {
                Ok(counts) if counts.len() == members.len() => Ok(counts),
                Ok(counts) => Err(BusError::ReplyCount {
                    sent: members.len(),
                    got: counts.len(),
                }),
                Err(e) => Err(BusError::Command(Arc::new(e))),
            }
        }
    });
    let answers = join_all(sends).await;
    let mut outcomes: Vec<Result<usize, BusError>> = vec![Ok(0); batch.len()];
    for ((_, members), answer) in groups.iter().zip(answers) {
        match answer {
            Ok(counts) => {
                for (&i, count) in members.iter().zip(counts) {
                    outcomes[i] = Ok(count);
                }
            }
            Err(reason) => {
                for &i in members {
                    outcomes[i] = Err(reason.clone());
                }
            }
        }
    }
    outcomes
}

/// What makes the subscriber rebuild its connection.
struct Wake {
    /// The node's probes stopped coming back.
    probes: Arc<Notify>,
    /// The connection lost a cluster node (a shard's primary may have
    /// failed over; the channel's slot may now live elsewhere).
    lost: Arc<Notify>,
    /// The node leaves for good (a drain's end).
    leave: mpsc::Receiver<LeaveRequest>,
}

async fn run_subscriber(
    client: ClusterClient,
    channel: String,
    sink: Weak<dyn EnvelopeSink>,
    mut wake: Wake,
) {
    let mut backoff = Duration::from_millis(50);
    while sink.strong_count() > 0 {
        let subscribed = tokio::time::timeout(ROUND_TRIP_TIMEOUT, async {
            let mut conn = client.get_async_connection().await?;
            conn.ssubscribe(&channel).await?;
            Ok::<_, redis::RedisError>(conn)
        })
        .await;
        match subscribed {
            Ok(Ok(mut conn)) => {
                backoff = Duration::from_millis(50);
                tracing::info!(%channel, "subscribed to the sharded node channel");
                let Some(live) = sink.upgrade() else {
                    return; // the node is gone
                };
                // A rebuilt subscription may have lost envelopes: the node
                // asks for its confirmations again.
                live.on_subscribed();
                drop(live);
                // The connection re-subscribes on its own after a reconnect
                // to the same node, but not on a replica promoted in its
                // place: rebuild it when it loses a node, and when probes
                // say deliveries stopped. A publish meanwhile reaches no
                // subscriber and is answered, never lost unnoticed.
                loop {
                    tokio::select! {
                        _ = wake.probes.notified() => {
                            tracing::warn!(%channel, "probe echoes stopped; re-subscribing");
                            break;
                        }
                        _ = wake.lost.notified() => {
                            tracing::info!(%channel, "lost a cluster node; re-subscribing");
                            break;
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            if sink.strong_count() == 0 {
                                return;
                            }
                        }
                        request = wake.leave.recv() => {
                            // The connection hands pushes to the sink as they
                            // arrive: once the unsubscribe is answered, every
                            // message before it has been handled.
                            let _ = tokio::time::timeout(ROUND_TRIP_TIMEOUT, conn.sunsubscribe(&channel)).await;
                            tracing::info!(%channel, "left the sharded node channel");
                            if let Some(done) = request {
                                let _ = done.send(());
                            }
                            return;
                        }
                    }
                }
                // Push messages reach the sink on the connection's task as
                // they are read, so once SUNSUBSCRIBE is answered, every
                // envelope Redis counted for this subscription was handed
                // over. Bounded: a lost node may never answer.
                let left = tokio::time::timeout(LEAVE_TIMEOUT, conn.sunsubscribe(&channel)).await;
                if !matches!(left, Ok(Ok(()))) {
                    tracing::debug!(%channel, "no SUNSUBSCRIBE reply; keeping what arrived");
                }
                drop(conn);
            }
            Ok(Err(error)) => {
                tracing::debug!(%channel, %error, "sharded subscription failed");
            }
            Err(_) => tracing::debug!(%channel, "sharded subscription timed out"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            request = wake.leave.recv() => {
                // Not subscribed: nothing to leave.
                if let Some(done) = request {
                    let _ = done.send(());
                }
                return;
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
