//! Where a signal goes: a local session directly, else the node presence
//! names, through the bus. Every failure is returned (or, for a publish that
//! reaches nobody, delivered later) as an ERROR carrying the signal's id.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use bytes::Bytes;

use super::confirm::Pending;
use super::outbox::Tag;
use super::{Node, RouteError, SessionHandle};
use crate::bus::{BusError, MessageBus, SignalRef};
use crate::ids::ClientId;
use crate::ids::NodeId;
use crate::metrics::RouteOutcome;
use crate::presence::{Location, PresenceRegistry};
use crate::protocol::{encode_error, encode_signal, MessageType};
use crate::telemetry;
use crate::telemetry::ErrorChain;

/// One publish of a cross-node signal, kept until the publish is answered.
struct Attempt {
    seq: u64,
    to: NodeId,
    /// The encoded signal; its target is read back from it on the rare
    /// paths that need it ([`Attempt::target`]), so a publish keeps no copy.
    envelope: Bytes,
    /// Already published once to a node that turned out to be gone.
    rerouted: bool,
}

/// One signal to route.
pub(crate) struct Outgoing<'a> {
    /// SIGNAL_OFFER, SIGNAL_ANSWER or SIGNAL_ICE_CANDIDATE.
    pub(crate) kind: MessageType,
    /// The sender's message id.
    pub(crate) message_id: Uuid,
    /// The authenticated sender.
    pub(crate) source: &'a ClientId,
    /// The receiver.
    pub(crate) target: &'a str,
    /// The signal data.
    pub(crate) data: &'a str,
    /// When its frame was read (the cached location's freshness is judged
    /// at that reading, not at a new one).
    pub(crate) read_at: tokio::time::Instant,
}

impl Attempt {
    /// The signal's target, from the envelope this node encoded itself.
    fn target(&self) -> &str {
        SignalRef::decode(&self.envelope).map_or("", |signal| signal.target)
    }
}

impl Node {
    /// Routes without waiting when it can: a local target, or a remote one
    /// whose location is cached. `None`: a presence lookup is needed
    /// ([`Node::route_after_lookup`]). Splitting the two keeps the session
    /// task's future small; only the rare lookup is awaited.
    pub(crate) fn route_now(
        self: &Arc<Self>,
        signal: &Outgoing<'_>,
        sender: &Arc<SessionHandle>,
    ) -> Option<Result<(), RouteError>> {
        let span = tracing::Span::current();
        if let Some(target) = self.hub.get(signal.target) {
            span.record("signal_manager.route", "local");
            let outcome = self.deliver_local(signal, &target);
            self.metrics
                .routed(false, outcome_of(&outcome, RouteOutcome::LocalDelivered));
            return Some(outcome);
        }
        let location = self.locations.get(signal.target, signal.read_at)?;
        span.record("signal_manager.route", "remote");
        // Nothing was awaited since the frame was read: its reading is the
        // publish time.
        let outcome = self.publish_signal(signal, sender, location, signal.read_at);
        self.metrics
            .routed(true, outcome_of(&outcome, RouteOutcome::RemotePublished));
        Some(outcome)
    }

    /// Looks the target up in presence, then publishes to its node.
    pub(crate) async fn route_after_lookup(
        self: &Arc<Self>,
        signal: &Outgoing<'_>,
        sender: &Arc<SessionHandle>,
    ) -> Result<(), RouteError> {
        tracing::Span::current().record("signal_manager.route", "remote");
        let result = match self.lookup(signal.target).await {
            Ok(location) => {
                self.locations.insert(signal.target, location.clone());
                // Read now: the lookup may have taken long, and the
                // timeout counts from the publish.
                self.publish_signal(signal, sender, location, tokio::time::Instant::now())
            }
            // The target arrived here while presence was asked (a session
            // resumed or connected on this node meanwhile).
            Err(RouteError::NotFound) => match self.hub.get(signal.target) {
                Some(target) => return self.deliver_local(signal, &target),
                None => Err(RouteError::NotFound),
            },
            Err(error) => Err(error),
        };
        self.metrics
            .routed(true, outcome_of(&result, RouteOutcome::RemotePublished));
        result
    }

    async fn lookup(&self, target: &str) -> Result<Location, RouteError> {
        let location = match self.presence.locate(target).await {
            Ok(Some(location)) => location,
            Ok(None) => return Err(RouteError::NotFound),
            Err(error) => {
                tracing::debug!(error = %ErrorChain(&error), "presence lookup failed");
                return Err(RouteError::Unavailable);
            }
        };
        if location.node_id == self.id {
            // The session was handed over from here and the new node has not
            // written its record yet: route there.
            if let Some(node_id) = self.moved_to(target) {
                return Ok(Location {
                    node_id,
                    ..location
                });
            }
            // Our own stale record: the session ended a moment ago.
            return Err(RouteError::NotFound);
        }
        Ok(location)
    }

    fn deliver_local(
        &self,
        signal: &Outgoing<'_>,
        target: &SessionHandle,
    ) -> Result<(), RouteError> {
        let frame = encode_signal(
            target.codec,
            signal.kind,
            signal.message_id,
            signal.target,
            signal.source.as_str(),
            signal.data,
        )
        .map_err(|_| RouteError::TooLarge)?;
        let tag = Tag {
            source: signal.source.clone(),
            message_id: signal.message_id,
            receipt: None,
            confirmed: false,
        };
        target.deliver_with(frame, Some(tag))?;
        Ok(())
    }

    /// Publishes to the target's node and waits (without blocking) for its
    /// confirmation; refused at once when too many signals wait already.
    /// `published_at`: a clock reading no older than this publish.
    fn publish_signal(
        self: &Arc<Self>,
        signal: &Outgoing<'_>,
        sender: &Arc<SessionHandle>,
        location: Location,
        published_at: tokio::time::Instant,
    ) -> Result<(), RouteError> {
        let (seq, first) = self
            .unconfirmed
            .track(
                Arc::clone(sender),
                signal.message_id,
                location.node_id.clone(),
                self.ms_at(published_at),
            )
            .map_err(|_| {
                self.metrics.publish_failed("unconfirmed_full");
                RouteError::Unavailable
            })?;
        self.metrics.unconfirmed.inc();
        // Only an idle sweeper needs waking (a stored permit covers the
        // race with its emptiness check).
        if first {
            self.sweep_wake.notify_one();
        }
        // The routing span is the delivery span's parent on the target node.
        let traceparent = telemetry::traceparent(&tracing::Span::current());
        let envelope = SignalRef {
            origin: self.id.as_str(),
            kind: signal.kind.as_u8(),
            message_id: signal.message_id,
            source: signal.source.as_str(),
            target: signal.target,
            data: signal.data,
            sent_at_us: now_micros(),
            traceparent: traceparent.as_deref(),
            forwarded: false,
            seq,
        }
        .encode();
        let publish = crate::child_span!(
            !tracing::Span::current().is_disabled(),
            "publish",
            otel.kind = "producer",
            messaging.system = "redis",
            messaging.operation.type = "publish",
            messaging.message.id = %signal.message_id,
            signal_manager.target_node = %location.node_id,
        );
        let attempt = Attempt {
            seq,
            to: location.node_id,
            envelope,
            rerouted: false,
        };
        self.publish_attempt(attempt, publish);
        self.metrics.cross_node_sent.inc();
        Ok(())
    }

    fn publish_attempt(self: &Arc<Self>, attempt: Attempt, span: tracing::Span) {
        let node = Arc::clone(self);
        let to = attempt.to.clone();
        let envelope = attempt.envelope.clone();
        self.bus.publish(
            &to,
            envelope,
            Some(Box::new(move |result| {
                // The publish span ends when the publish is answered.
                if let Some(error) = node.on_published(result, attempt) {
                    telemetry::record_error(&span, error.code(), &error.to_string());
                }
            })),
        );
    }

    /// What a publish's outcome settles. Reaching a node settles nothing:
    /// that node's confirmation (or its bounce, or the timeout) will.
    fn on_published(
        self: &Arc<Self>,
        result: Result<usize, BusError>,
        attempt: Attempt,
    ) -> Option<RouteError> {
        match result {
            Ok(n) if n > 0 => None,
            Ok(_) => {
                self.metrics.publish_failed("no_subscriber");
                self.locations.evict(attempt.target());
                let pending = self.settle(attempt.seq)?;
                // Presence decides the answer: gone, moved, or its record
                // names the node that did not take it.
                let node = Arc::clone(self);
                tokio::spawn(async move { node.after_no_subscriber(pending, attempt).await });
                Some(RouteError::Unreachable)
            }
            // Never sent: nothing can have been delivered.
            Err(error @ (BusError::NotConnected | BusError::QueueFull)) => {
                tracing::debug!(error = %ErrorChain(&error), "publish not sent");
                self.metrics.publish_failed("unavailable");
                self.locations.evict(attempt.target());
                let pending = self.settle(attempt.seq)?;
                self.fail(&pending, RouteError::Unavailable);
                Some(RouteError::Unavailable)
            }
            // Maybe sent (a timeout, a broken connection): only the
            // receiver's confirmation or the delivery timeout may answer,
            // or the sender could be told "failed" about a delivered signal.
            Err(error) => {
                tracing::debug!(error = %ErrorChain(&error), "publish outcome unknown; awaiting confirmation");
                self.metrics.publish_failed("uncertain");
                self.locations.evict(attempt.target());
                None
            }
        }
    }

    async fn after_no_subscriber(self: Arc<Self>, pending: Pending, attempt: Attempt) {
        let target = attempt.target().to_owned();
        let error = match self.presence.locate(&target).await {
            Ok(None) => RouteError::NotFound,
            // Our own record without a session: it ended a moment ago. With
            // one, the client resumed here meanwhile: the publish below goes
            // to this node's own channel and is delivered from there, in
            // order behind what the old node forwarded.
            Ok(Some(location))
                if location.node_id == self.id && self.hub.get(&target).is_none() =>
            {
                RouteError::NotFound
            }
            Ok(Some(location)) if location.node_id == attempt.to => {
                // The record names the node that is gone: drop it, so later
                // signals get PEER_NOT_FOUND without a publish.
                if let Some(client) = ClientId::new(&target) {
                    let _ = self.presence.unregister(&client, &location).await;
                }
                RouteError::Unreachable
            }
            Ok(Some(location)) if !attempt.rerouted => {
                // The client moved: publish once more, where it is now.
                let mut pending = pending;
                pending.to = location.node_id.clone();
                self.unconfirmed.restore(attempt.seq, pending);
                if location.node_id != self.id {
                    self.locations.insert(&target, location.clone());
                }
                let retry = Attempt {
                    to: location.node_id,
                    rerouted: true,
                    ..attempt
                };
                self.publish_attempt(retry, tracing::Span::none());
                return;
            }
            Ok(Some(_)) => RouteError::Unreachable,
            Err(_) => RouteError::Unavailable,
        };
        self.fail(&pending, error);
    }

    /// Takes a signal out of the unconfirmed set (once).
    pub(super) fn settle(&self, seq: u64) -> Option<Pending> {
        let pending = self.unconfirmed.settle(seq)?;
        self.metrics.unconfirmed.dec();
        Some(pending)
    }

    /// Answers a settled cross-node signal's sender with `error`.
    pub(super) fn fail(&self, pending: &Pending, error: RouteError) {
        self.metrics
            .routed(true, RouteOutcome::Failed(error.code()));
        self.answer(&pending.sender, pending.message_id, error);
    }

    /// Forgets a remote peer's cached location.
    pub(super) fn forget_location(&self, client: &str) {
        self.locations.evict(client);
    }

    /// Queues an ERROR for a session (best effort: a closing session is gone).
    pub(super) fn answer(&self, session: &SessionHandle, message_id: Uuid, error: RouteError) {
        let code = error.code();
        tracing::debug!(%message_id, code = code.as_str(), "signal answered with an error");
        let frame = encode_error(session.codec, message_id, code, &error.to_string());
        if session.deliver(frame).is_ok() {
            self.metrics.error_sent(code);
        }
    }
}

fn outcome_of(result: &Result<(), RouteError>, ok: RouteOutcome) -> RouteOutcome {
    match result {
        Ok(()) => ok,
        Err(error) => RouteOutcome::Failed(error.code()),
    }
}

/// Microseconds since the Unix epoch (for cross-node latency).
pub(super) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
