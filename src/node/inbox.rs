//! Envelopes arriving on this node's channel: signals for local clients,
//! failures to report to local senders, takeover notices, probe echoes.
//! Every client id and node id an envelope carries is validated before use;
//! an envelope that fails is counted and dropped.

use std::sync::{Arc, Weak};

use super::router::now_micros;
use super::{Node, RouteError};
use crate::bus::{Envelope, EnvelopeSink, MessageBus, SignalEnvelope};
use crate::ids::{ClientId, NodeId};
use crate::presence::PresenceRegistry;
use crate::protocol::{encode_signal, is_valid_client_id, MessageType};
use crate::telemetry;

/// The node as its bus's sink. Holds the node weakly: the bus must not
/// keep a stopped node alive.
pub(crate) struct NodeSink(pub(crate) Weak<Node>);

impl EnvelopeSink for NodeSink {
    fn on_envelope(&self, bytes: &[u8]) {
        if let Some(node) = self.0.upgrade() {
            node.on_envelope(bytes);
        }
    }
}

/// A signal envelope whose ids were checked, with its origin parsed.
struct Inbound {
    signal: SignalEnvelope,
    kind: MessageType,
    origin: NodeId,
}

impl Inbound {
    fn check(signal: SignalEnvelope) -> Result<Inbound, &'static str> {
        let origin = NodeId::parse(&signal.origin).ok_or("invalid_id")?;
        if !is_valid_client_id(&signal.source) || !is_valid_client_id(&signal.target) {
            return Err("invalid_id");
        }
        let kind = MessageType::from_u8(signal.kind)
            .filter(|k| k.is_signal())
            .ok_or("malformed")?;
        Ok(Inbound {
            signal,
            kind,
            origin,
        })
    }
}

impl Node {
    /// Handles one envelope from the bus.
    fn on_envelope(self: &Arc<Self>, bytes: &[u8]) {
        let envelope = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(error) => {
                self.metrics.envelope_refused("malformed");
                tracing::warn!(%error, "dropping malformed envelope from the bus");
                return;
            }
        };
        match envelope {
            Envelope::Signal(signal) => match Inbound::check(signal) {
                Ok(inbound) => self.deliver_remote(inbound),
                Err(reason) => {
                    self.metrics.envelope_refused(reason);
                    tracing::warn!(reason, "dropping a signal envelope with invalid fields");
                }
            },
            Envelope::Undeliverable {
                source,
                target,
                message_id,
                code,
            } => {
                if !is_valid_client_id(&source) || !is_valid_client_id(&target) {
                    self.metrics.envelope_refused("invalid_id");
                    return;
                }
                self.forget_location(&target);
                if let Some(sender) = self.hub.get(&source) {
                    self.answer(&sender, message_id, RouteError::from_code(&code));
                }
            }
            Envelope::Takeover { client, session } => {
                let Some(client) = ClientId::new(&client) else {
                    self.metrics.envelope_refused("invalid_id");
                    return;
                };
                self.forget_location(client.as_str());
                if let Some(old) = self.hub.get(client.as_str()) {
                    if old.session_id.0 != session {
                        self.hub.remove(client.as_str(), old.session_id);
                        old.close(crate::protocol::DisconnectReason::Replaced);
                    }
                }
            }
            Envelope::Probe { nonce } => self.health.probe_echoed(nonce, &self.metrics),
        }
    }

    fn deliver_remote(self: &Arc<Self>, inbound: Inbound) {
        let signal = &inbound.signal;
        let kind_name = inbound.kind.as_str();
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
        if let Some(error) = self.try_deliver_remote(inbound) {
            telemetry::record_error(&span, error.code(), &error.to_string());
        }
    }

    /// Delivers, forwards (the target moved), or bounces the failure to the
    /// origin; returns the failure.
    fn try_deliver_remote(self: &Arc<Self>, inbound: Inbound) -> Option<RouteError> {
        self.metrics.cross_node_received.inc();
        let Inbound {
            signal,
            kind,
            origin,
        } = inbound;
        let error = match self.hub.get(&signal.target) {
            None if !signal.forwarded => {
                // The origin's cached location is stale: pass it on, within
                // a bound on forwards in flight.
                match Arc::clone(&self.forwards).try_acquire_owned() {
                    Ok(permit) => {
                        let node = Arc::clone(self);
                        tokio::spawn(async move {
                            node.forward(signal, origin).await;
                            drop(permit);
                        });
                        return None;
                    }
                    Err(_) => {
                        self.metrics.envelope_refused("forward_limit");
                        RouteError::Unreachable
                    }
                }
            }
            None => RouteError::NotFound,
            Some(target) => {
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
                    Err(_) => RouteError::TooLarge,
                    Ok(Err(refused)) => refused.into(),
                }
            }
        };
        self.bounce(&signal, &origin, error);
        Some(error)
    }

    /// Tells the origin node that `signal` failed.
    fn bounce(&self, signal: &SignalEnvelope, origin: &NodeId, error: RouteError) {
        let bounce = Envelope::Undeliverable {
            source: signal.source.clone(),
            target: signal.target.clone(),
            message_id: signal.message_id,
            code: error.code().as_str().to_owned(),
        };
        self.bus.publish(origin, bounce.encode(), None);
    }

    /// Re-routes a signal whose target is no longer here: to the node
    /// presence names now, or back to the origin as a failure.
    async fn forward(self: Arc<Self>, signal: SignalEnvelope, origin: NodeId) {
        let location = match self.presence.locate(&signal.target).await {
            Ok(Some(location)) if location.node_id != self.id => location,
            Ok(_) => return self.bounce(&signal, &origin, RouteError::NotFound),
            Err(_) => return self.bounce(&signal, &origin, RouteError::Unavailable),
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
                Ok(_) => node.bounce(&signal, &origin, RouteError::Unreachable),
                Err(_) => node.bounce(&signal, &origin, RouteError::Unavailable),
            })),
        );
    }
}
