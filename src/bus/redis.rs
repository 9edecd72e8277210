//! Redis bus. Each node subscribes to its own channel
//! `<prefix>:node:<node_id>` on a dedicated pub/sub connection; a publish
//! goes to exactly the target node's channel.
//!
//! Publishes are queued to one publisher task that pipelines whatever is
//! queued into a single round trip on one dedicated connection, one batch
//! at a time: that keeps per-sender order (one queue, one connection, one
//! batch in flight) and makes the Redis cost per signal that of a pipelined
//! PUBLISH. PUBLISH's receiver count comes back to the caller.
//!
//! The subscriber hands each envelope to the node on its own task; the
//! rare events it acts on (probes stopped, master switched, leave) reach it
//! through one flag, gathered by a task of their own. When it
//! leaves a connection on purpose (the master was switched, probes stopped
//! coming back), it unsubscribes first and hands over everything that
//! arrived before the reply: Redis counted those as received.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::{BusError, EnvelopeSink, LeaveRequest, Leaves, MessageBus, PublishDone};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::redis_conn::Connector;
use crate::redis_names::RedisNames;
use crate::telemetry::ErrorChain;
use crate::wake::Wake;

/// Publishes waiting for the publisher task before new ones are refused.
const PUBLISH_QUEUE: usize = 65_536;
/// Most publishes in one pipeline.
const MAX_BATCH: usize = 1024;
/// Bound on connecting and on subscribing (a publish is bounded by the
/// connection's response timeout).
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on the UNSUBSCRIBE of a subscription left on purpose: short, as
/// the node receives nothing meanwhile (a live server answers in a round
/// trip; a dead connection never does).
const LEAVE_TIMEOUT: Duration = Duration::from_millis(250);
/// More node channels than a cluster has: the cache of their names starts
/// over only when something named made-up nodes.
const MAX_CHANNEL_NAMES: usize = 1024;

struct PublishRequest {
    channel: Arc<str>,
    payload: Bytes,
    done: Option<PublishDone>,
}

/// The Redis message bus.
pub struct RedisBus {
    client: Connector,
    names: RedisNames,
    queue: mpsc::Sender<PublishRequest>,
    resubscribe: Arc<Notify>,
    leaves: Leaves,
    /// Node channel names by node, built once: a publish shares one
    /// instead of formatting it.
    channels: Mutex<FxHashMap<NodeId, Arc<str>>>,
}

impl RedisBus {
    /// A bus on `url`; starts the publisher task (call inside a runtime).
    pub fn new(url: &str, prefix: &str, metrics: Arc<Metrics>) -> Result<RedisBus, BusError> {
        let client = redis::Client::open(url).map_err(|e| BusError::Setup(Arc::new(e)))?;
        Ok(Self::with_connector(
            Connector::direct(client),
            prefix,
            metrics,
        ))
    }

    /// A bus whose connections come from `client` (standalone or Sentinel).
    pub fn with_connector(client: Connector, prefix: &str, metrics: Arc<Metrics>) -> RedisBus {
        let (queue, rx) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(run_publisher(client.clone(), rx, metrics));
        RedisBus {
            client,
            names: RedisNames::new(prefix),
            queue,
            resubscribe: Arc::new(Notify::new()),
            leaves: Leaves::default(),
            channels: Mutex::default(),
        }
    }

    fn channel(&self, node: &NodeId) -> Arc<str> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = channels.get(node) {
            return Arc::clone(name);
        }
        if channels.len() >= MAX_CHANNEL_NAMES {
            channels.clear();
        }
        let name: Arc<str> = self.names.node_channel(node.as_str()).into();
        channels.insert(node.clone(), Arc::clone(&name));
        name
    }
}

impl MessageBus for RedisBus {
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
        let leave = self.leaves.add();
        tokio::spawn(run_subscriber(
            self.client.clone(),
            self.names.node_channel(node.as_str()),
            Arc::downgrade(&sink),
            Arc::clone(&self.resubscribe),
            leave,
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

async fn connect(client: &Connector) -> Option<MultiplexedConnection> {
    tokio::time::timeout(ROUND_TRIP_TIMEOUT, client.multiplexed())
        .await
        .ok()?
        .ok()
}

async fn run_publisher(
    client: Connector,
    mut rx: mpsc::Receiver<PublishRequest>,
    metrics: Arc<Metrics>,
) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut generation = client.generation();
    let mut retry_at = Instant::now();
    let mut batch: Vec<PublishRequest> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if client.generation() != generation {
            // Sentinel switched the master: this one may be the demoted one.
            connection = None;
        }
        if connection.is_none() && Instant::now() >= retry_at {
            generation = client.generation();
            connection = connect(&client).await;
            if connection.is_none() {
                // Fail fast for a moment instead of paying a connect timeout per batch.
                retry_at = Instant::now() + Duration::from_millis(200);
            }
        }
        let result = match connection.as_mut() {
            None => Err(BusError::NotConnected),
            Some(conn) => {
                let mut pipe = redis::Pipeline::with_capacity(batch.len());
                for r in &batch {
                    // Sized up front: the command's buffer never grows.
                    let mut publish =
                        redis::Cmd::with_capacity(3, 7 + r.channel.len() + r.payload.len());
                    publish.arg("PUBLISH").arg(&*r.channel).arg(&r.payload[..]);
                    pipe.add_command(publish);
                }
                let started = Instant::now();
                // The connection's own response timeout bounds the round
                // trip (crate::redis_conn::RESPONSE_TIMEOUT): no second
                // timer per batch.
                let outcome = pipe.query_async::<Vec<usize>>(conn).await;
                metrics.redis_publish(started.elapsed().as_secs_f64());
                match outcome {
                    Ok(counts) if counts.len() == batch.len() => Ok(counts),
                    Ok(counts) => Err(BusError::ReplyCount {
                        sent: batch.len(),
                        got: counts.len(),
                    }),
                    Err(e) if e.is_timeout() => Err(BusError::Timeout),
                    Err(e) => Err(BusError::Command(Arc::new(e))),
                }
            }
        };
        match result {
            Ok(counts) => {
                for (request, count) in batch.drain(..).zip(counts) {
                    if let Some(done) = request.done {
                        done(Ok(count));
                    }
                }
            }
            Err(error) => {
                if connection.is_some() {
                    tracing::warn!(error = %ErrorChain(&error), "publish failed; reconnecting");
                }
                connection = None;
                for request in batch.drain(..) {
                    if let Some(done) = request.done {
                        done(Err(error.clone()));
                    }
                }
            }
        }
    }
}

async fn run_subscriber(
    client: Connector,
    channel: String,
    sink: Weak<dyn EnvelopeSink>,
    resubscribe: Arc<Notify>,
    leaving: mpsc::Receiver<LeaveRequest>,
) {
    let events = Arc::new(Events::default());
    let _gatherer = AbortOnDropHandle::new(tokio::spawn(gather_events(
        Arc::clone(&events),
        resubscribe,
        client.switches(),
        leaving,
    )));
    let mut backoff = Duration::from_millis(50);
    loop {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(ROUND_TRIP_TIMEOUT, client.pubsub())
                .await
                .ok()?
                .ok()?;
            tokio::time::timeout(ROUND_TRIP_TIMEOUT, pubsub.subscribe(&channel))
                .await
                .ok()?
                .ok()?;
            Some(pubsub)
        }
        .await;
        if let Some(pubsub) = subscribed {
            backoff = Duration::from_millis(50);
            tracing::info!(%channel, "subscribed to the node channel");
            let Some(live) = sink.upgrade() else {
                return; // the node is gone
            };
            live.on_subscribed();
            drop(live);
            // Split, so that leaving on purpose can unsubscribe while the
            // stream still holds what arrived before.
            let (mut commands, mut stream) = pubsub.split();
            let control = loop {
                tokio::select! {
                    // Events first: a backlog of envelopes cannot hold them back.
                    biased;
                    control = events.next() => break control,
                    message = stream.next() => match message {
                        Some(message) => {
                            // Handled right here: no extra task hop, no copy.
                            let Some(sink) = sink.upgrade() else {
                                return; // the node is gone
                            };
                            sink.on_envelope(message.get_payload_bytes());
                        }
                        None => break Control::Lost,
                    },
                }
            };
            match control {
                Control::Lost => {}
                Control::Resubscribe => {
                    tracing::warn!(%channel, "probe echoes stopped; re-subscribing");
                    leave(&mut commands, &mut stream, &channel, &sink).await;
                }
                Control::Switched => {
                    tracing::info!(%channel, "the master was switched; re-subscribing");
                    leave(&mut commands, &mut stream, &channel, &sink).await;
                }
                Control::Leave(request) => {
                    leave(&mut commands, &mut stream, &channel, &sink).await;
                    tracing::info!(%channel, "left the node channel");
                    if let Some(done) = request {
                        let _ = done.send(());
                    }
                    return;
                }
            }
        }
        if sink.strong_count() == 0 {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            control = events.next() => {
                if let Control::Leave(request) = control {
                    // Not subscribed: nothing to leave.
                    if let Some(done) = request {
                        let _ = done.send(());
                    }
                    return;
                }
                // A re-subscription is what comes next anyway.
            }
        }
        // At most half a second between attempts: routing must be back
        // within 2 s of Redis answering again.
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// The rare events a subscriber acts on, gathered by a task of their own
/// ([`gather_events`]) so that the subscriber's loop checks one flag per
/// envelope: polling a `Notify`, a `watch` and a channel there took a lock
/// or two per envelope.
#[derive(Default)]
struct Events {
    wake: Wake,
    next: Mutex<Option<Control>>,
}

impl Events {
    /// Posts `control` for the subscriber. A leave replaces what waits;
    /// anything else only fills an empty slot (one re-subscription answers
    /// any number of reasons for one).
    fn post(&self, control: Control) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(control, Control::Leave(_)) || next.is_none() {
            *next = Some(control);
        }
        drop(next);
        self.wake.raise();
    }

    /// The next posted event (cancel-safe: nothing is taken until it resolves).
    async fn next(&self) -> Control {
        loop {
            self.wake.wait().await;
            if let Some(control) = self.next.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return control;
            }
        }
    }
}

/// Turns a probe alarm, a master switch and a leave request into events
/// for one subscriber, until it is asked to leave (or is dropped: it holds
/// this task's abort handle).
async fn gather_events(
    events: Arc<Events>,
    resubscribe: Arc<Notify>,
    mut switches: watch::Receiver<u64>,
    mut leaving: mpsc::Receiver<LeaveRequest>,
) {
    let mut watching = true;
    loop {
        let control = tokio::select! {
            _ = resubscribe.notified() => Control::Resubscribe,
            changed = switches.changed(), if watching => match changed {
                Ok(()) => Control::Switched,
                // The connector is gone: no switch can come any more.
                Err(_) => {
                    watching = false;
                    continue;
                }
            },
            request = leaving.recv() => Control::Leave(request),
        };
        let last = matches!(control, Control::Leave(_));
        events.post(control);
        if last {
            return;
        }
    }
}

/// Why a subscriber stops reading its subscription.
enum Control {
    /// The connection ended.
    Lost,
    /// The node's probes stopped coming back: subscribe again.
    Resubscribe,
    /// Sentinel switched the master: subscribe on the new one.
    Switched,
    /// The bus is leaving for good (`None`: nobody waits for it).
    Leave(Option<LeaveRequest>),
}

/// Leaves a subscription on purpose without losing what it carries: every
/// envelope Redis sent before the UNSUBSCRIBE reply precedes that reply
/// on the connection, so once the reply is in (or its bound passed), the
/// stream's queue holds them all. Publishers saw them counted as received:
/// dropping them would lose confirmations no node sends again.
async fn leave(
    commands: &mut PubSubSink,
    stream: &mut PubSubStream,
    channel: &str,
    sink: &Weak<dyn EnvelopeSink>,
) {
    let unsubscribed = tokio::time::timeout(LEAVE_TIMEOUT, commands.unsubscribe(channel)).await;
    if !matches!(unsubscribed, Ok(Ok(()))) {
        // A dead connection: what it held is what arrived.
        tracing::debug!(%channel, "no UNSUBSCRIBE reply; keeping what arrived");
    }
    let Some(sink) = sink.upgrade() else {
        return;
    };
    // Outside the task's cooperative budget: with the budget spent, the
    // stream would report "nothing yet" while messages wait in it.
    let drained = tokio::task::unconstrained(async {
        let mut drained = 0usize;
        while let Some(Some(message)) = stream.next().now_or_never() {
            sink.on_envelope(message.get_payload_bytes());
            drained += 1;
        }
        drained
    })
    .await;
    if drained > 0 {
        tracing::debug!(%channel, drained, "handled envelopes of the subscription left");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn a_leave_is_never_lost_behind_another_event() {
        let events = Events::default();
        events.post(Control::Resubscribe);
        let (done, _left) = tokio::sync::oneshot::channel();
        events.post(Control::Leave(Some(done)));
        events.post(Control::Switched);
        assert!(matches!(
            events.next().now_or_never(),
            Some(Control::Leave(Some(_)))
        ));
        assert!(events.next().now_or_never().is_none(), "taken once");
    }

    #[tokio::test]
    async fn the_gatherer_turns_each_source_into_an_event() {
        let events = Arc::new(Events::default());
        let resubscribe = Arc::new(Notify::new());
        let (switch, switches) = watch::channel(0u64);
        let (leave, leaving) = mpsc::channel(1);
        let gatherer = tokio::spawn(gather_events(
            Arc::clone(&events),
            Arc::clone(&resubscribe),
            switches,
            leaving,
        ));
        resubscribe.notify_one();
        assert!(matches!(events.next().await, Control::Resubscribe));
        switch.send_replace(1);
        assert!(matches!(events.next().await, Control::Switched));
        // A switch source that is gone is no event.
        drop(switch);
        let (done, left) = tokio::sync::oneshot::channel();
        leave.send(done).await.unwrap();
        match events.next().await {
            Control::Leave(Some(done)) => done.send(()).unwrap(),
            _ => panic!("expected the leave request"),
        }
        left.await.unwrap();
        gatherer.await.unwrap();
    }
}
