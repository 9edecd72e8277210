//! Envelopes arriving on this node's channel: signals for local clients,
//! failures to report to local senders, takeover notices, probe echoes.

use std::sync::{Arc, Weak};

use super::router::{describe, now_micros};
use super::{DeliverError, Node};
use crate::bus::{Envelope, EnvelopeSink, MessageBus, SignalEnvelope};
use crate::ids::NodeId;
use crate::presence::PresenceRegistry;
use crate::protocol::{encode_error, encode_signal, ErrorCode, MessageType};
use crate::telemetry;

/// The node as its bus's sink. Holds the node weakly: the bus must not
/// keep a stopped node alive.
pub struct NodeSink(pub Weak<Node>);

impl EnvelopeSink for NodeSink {
    fn on_envelope(&self, bytes: &[u8]) {
        if let Some(node) = self.0.upgrade() {
            node.on_envelope(bytes);
        }
    }
}

impl Node {
    /// Handles one envelope from the bus.
    pub fn on_envelope(self: &Arc<Self>, bytes: &[u8]) {
        let envelope = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(%error, "dropping malformed envelope from the bus");
                return;
            }
        };
        match envelope {
            Envelope::Signal(signal) => self.deliver_remote(signal),
            Envelope::Undeliverable {
                source,
                target,
                message_id,
                code,
            } => {
                self.forget_location(&target);
                let code = ErrorCode::parse(&code).unwrap_or(ErrorCode::PeerUnreachable);
                if let Some(sender) = self.hub.get(&source) {
                    let frame = encode_error(sender.codec, message_id, code, describe(code));
                    if sender.deliver(frame).is_ok() {
                        self.metrics.error_sent(code);
                    }
                }
            }
            Envelope::Takeover { client, session } => {
                self.forget_location(&client);
                if let Some(old) = self.hub.get(&client) {
                    if old.session_id.0 != session {
                        self.hub.remove(&client, old.session_id);
                        old.close(crate::protocol::DisconnectReason::Replaced);
                    }
                }
            }
            Envelope::Probe { nonce } => self.health.probe_echoed(nonce, &self.metrics),
        }
    }

    fn deliver_remote(self: &Arc<Self>, signal: SignalEnvelope) {
        let kind_name = MessageType::from_u8(signal.kind).map_or("SIGNAL", MessageType::as_str);
        let span = crate::child_span!(
            signal.traceparent.is_some(),
            "deliver",
            otel.name = %format_args!("{kind_name} deliver"),
            otel.kind = "consumer",
            messaging.system = "redis",
            messaging.operation.type = "receive",
            messaging.message.id = %signal.message_id,
            signal_manager.message_type = kind_name,
            signal_manager.source = signal.source.as_str(),
            signal_manager.target = signal.target.as_str(),
            signal_manager.origin_node = signal.origin.as_str(),
            signal_manager.node_id = %self.id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if let Some(parent) = &signal.traceparent {
            telemetry::set_remote_parent(&span, parent);
        }
        telemetry::record_ids(&span);
        let _entered = span.enter();
        if let Some(code) = self.try_deliver_remote(signal) {
            telemetry::record_error(&span, code, describe(code));
        }
    }

    /// Delivers, forwards (the target moved), or bounces the failure to the
    /// origin; returns the failure.
    fn try_deliver_remote(self: &Arc<Self>, signal: SignalEnvelope) -> Option<ErrorCode> {
        self.metrics.cross_node_received.inc();
        let kind = MessageType::from_u8(signal.kind).filter(|k| k.is_signal());
        let code = match (kind, self.hub.get(&signal.target)) {
            (None, _) => {
                tracing::warn!(
                    kind = signal.kind,
                    "dropping envelope with a non-signal type"
                );
                return None;
            }
            (Some(_), None) if !signal.forwarded => {
                // The origin's cached location is stale: pass it on.
                tokio::spawn(Arc::clone(self).forward(signal));
                return None;
            }
            (Some(_), None) => ErrorCode::PeerNotFound,
            (Some(kind), Some(target)) => {
                let frame = encode_signal(
                    target.codec,
                    kind,
                    signal.message_id,
                    &signal.target,
                    &signal.source,
                    &signal.data,
                );
                match frame.map(|f| target.deliver(f)) {
                    Ok(Ok(())) => {
                        let latency = now_micros().saturating_sub(signal.sent_at_us);
                        self.metrics
                            .cross_node_delivery
                            .observe(latency as f64 / 1e6);
                        return None;
                    }
                    // Too large once translated into the receiver's codec.
                    Err(_) => ErrorCode::BadPayload,
                    Ok(Err(DeliverError::Full)) => ErrorCode::PeerUnreachable,
                    Ok(Err(DeliverError::Closed)) => ErrorCode::PeerNotFound,
                }
            }
        };
        self.bounce(&signal, code);
        Some(code)
    }

    /// Tells the origin node that `signal` failed with `code`.
    fn bounce(&self, signal: &SignalEnvelope, code: ErrorCode) {
        let bounce = Envelope::Undeliverable {
            source: signal.source.clone(),
            target: signal.target.clone(),
            message_id: signal.message_id,
            code: code.as_str().to_owned(),
        };
        self.bus
            .publish(&NodeId::new(&signal.origin), bounce.encode(), None);
    }

    /// Re-routes a signal whose target is no longer here: to the node
    /// presence names now, or back to the origin as a failure.
    async fn forward(self: Arc<Self>, signal: SignalEnvelope) {
        let location = match self.presence.locate(&signal.target).await {
            Ok(Some(location)) if location.node_id != self.id => location,
            Ok(_) => return self.bounce(&signal, ErrorCode::PeerNotFound),
            Err(_) => return self.bounce(&signal, ErrorCode::Unavailable),
        };
        let envelope = Envelope::Signal(SignalEnvelope {
            forwarded: true,
            ..signal.clone()
        });
        let node = Arc::clone(&self);
        self.bus.publish(
            &location.node_id,
            envelope.encode(),
            Some(Box::new(move |result| match result {
                Ok(n) if n > 0 => {}
                Ok(_) => node.bounce(&signal, ErrorCode::PeerUnreachable),
                Err(_) => node.bounce(&signal, ErrorCode::Unavailable),
            })),
        );
    }
}
