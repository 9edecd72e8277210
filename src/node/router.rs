//! Where a signal goes: a local session directly, else the node presence
//! names, through the bus. Every failure is returned (or, for a publish that
//! reaches nobody, delivered later) as an ERROR carrying the signal's id.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::{Node, RouteError, SessionHandle};
use crate::bus::{MessageBus, SignalRef};
use crate::ids::ClientId;
use crate::metrics::RouteOutcome;
use crate::presence::{Location, PresenceRegistry};
use crate::protocol::{encode_error, encode_signal, MessageType};
use crate::telemetry;
use crate::telemetry::ErrorChain;

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
        let location = self.locations.get(signal.target)?;
        span.record("signal_manager.route", "remote");
        self.publish_signal(signal, sender, location);
        self.metrics.routed(true, RouteOutcome::RemotePublished);
        Some(Ok(()))
    }

    /// Looks the target up in presence, then publishes to its node.
    pub(crate) async fn route_after_lookup(
        self: &Arc<Self>,
        signal: &Outgoing<'_>,
        sender: &Arc<SessionHandle>,
    ) -> Result<(), RouteError> {
        tracing::Span::current().record("signal_manager.route", "remote");
        let result = self.lookup(signal.target).await.map(|location| {
            self.locations.insert(signal.target, location.clone());
            self.publish_signal(signal, sender, location);
        });
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
        Ok(target.deliver(frame)?)
    }

    fn publish_signal(
        self: &Arc<Self>,
        signal: &Outgoing<'_>,
        sender: &Arc<SessionHandle>,
        location: Location,
    ) {
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
        let node = Arc::clone(self);
        let sender = Arc::clone(sender);
        let message_id = signal.message_id;
        let target = signal.target.to_owned();
        let to = location.node_id.clone();
        self.bus.publish(
            &to,
            envelope,
            Some(Box::new(move |result| {
                // The publish span ends when the publish is answered.
                if let Some(error) =
                    node.on_published(result, &sender, message_id, &target, location)
                {
                    telemetry::record_error(&publish, error.code(), &error.to_string());
                }
            })),
        );
        self.metrics.cross_node_sent.inc();
    }

    fn on_published(
        self: &Arc<Self>,
        result: Result<usize, crate::bus::BusError>,
        sender: &SessionHandle,
        message_id: Uuid,
        target: &str,
        location: Location,
    ) -> Option<RouteError> {
        let error = match result {
            Ok(n) if n > 0 => return None,
            Ok(_) => {
                self.metrics.publish_failed("no_subscriber");
                self.locations.evict(target);
                // The target's node is gone: drop its stale record so later
                // signals get PEER_NOT_FOUND without a publish.
                if let Some(client) = ClientId::new(target) {
                    let node = Arc::clone(self);
                    tokio::spawn(async move {
                        let _ = node.presence.unregister(&client, &location).await;
                    });
                }
                RouteError::Unreachable
            }
            Err(error) => {
                tracing::debug!(error = %ErrorChain(&error), "publish failed");
                self.metrics.publish_failed("unavailable");
                self.locations.evict(target);
                RouteError::Unavailable
            }
        };
        self.metrics
            .routed(true, RouteOutcome::Failed(error.code()));
        self.answer(sender, message_id, error);
        Some(error)
    }

    /// Forgets a remote peer's cached location.
    pub(super) fn forget_location(&self, client: &str) {
        self.locations.evict(client);
    }

    /// Queues an ERROR for a session (best effort: a closing session is gone).
    pub(super) fn answer(&self, session: &SessionHandle, message_id: Uuid, error: RouteError) {
        let code = error.code();
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
