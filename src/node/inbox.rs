//! Envelopes arriving on this node's channel: signals for local clients,
//! failures to report to local senders, takeover notices, probe echoes.
//! Every client id and node id an envelope carries is validated before use;
//! an envelope that fails is counted and dropped.

use std::sync::{Arc, Weak};

use super::outbox::{Queuing, Receipt, Tag};
use super::router::now_micros;
use super::{Node, RouteError};
use crate::bus::{Envelope, EnvelopeSink, MessageBus, SignalEnvelope, SignalRef};
use crate::ids::{ClientId, KnownNodes, NodeId};
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

    fn on_subscribed(&self) {
        if let Some(node) = self.0.upgrade() {
            node.on_subscribed();
        }
    }
}

/// A signal envelope whose ids were checked, with its origin parsed; its
/// strings borrowed from the bytes the bus received.
struct Inbound<'a> {
    signal: SignalRef<'a>,
    kind: MessageType,
    origin: NodeId,
}

impl<'a> Inbound<'a> {
    fn check(signal: SignalRef<'a>, known: &KnownNodes) -> Result<Inbound<'a>, &'static str> {
        let origin = known.parse(signal.origin).ok_or("invalid_id")?;
        if !is_valid_client_id(signal.source) || !is_valid_client_id(signal.target) {
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
    /// The subscription is (again) in place. A re-subscription means Redis
    /// restarted or the connection broke: Redis may have lost every record,
    /// so re-register every local session now (not at the next upkeep
    /// tick), and ask the nodes holding this node's signals for the
    /// confirmations the broken connection may have lost (and wait for
    /// them) before giving up on any signal.
    fn on_subscribed(self: &Arc<Self>) {
        if self
            .subscribed
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::info!("bus subscription re-established; re-registering local sessions");
            self.unconfirmed.resubscribed(self.now_ms());
            self.ask_confirmations_again();
            self.health.upkeep_now();
        }
    }

    /// Handles one envelope from the bus.
    fn on_envelope(self: &Arc<Self>, bytes: &[u8]) {
        // Signals, nearly every envelope, decode without copying.
        if let Some(signal) = SignalRef::decode(bytes) {
            return self.on_signal(signal);
        }
        let envelope = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(error) => {
                self.metrics.envelope_refused("malformed");
                tracing::warn!(%error, "dropping malformed envelope from the bus");
                return;
            }
        };
        match envelope {
            // Decoded above already, unless it is not one after all.
            Envelope::Signal(signal) => self.on_signal(SignalRef::from(&signal)),
            Envelope::Undeliverable {
                target, code, seq, ..
            } => {
                if !is_valid_client_id(&target) {
                    self.metrics.envelope_refused("invalid_id");
                    return;
                }
                self.forget_location(&target);
                // Answered once: unless a timeout answered it already.
                if let Some(pending) = self.settle(seq) {
                    self.fail(&pending, RouteError::from_code(&code));
                }
            }
            Envelope::Confirm { seqs } => {
                let settled = self.unconfirmed.confirm(&seqs);
                self.metrics.unconfirmed.dec_by(settled as i64);
            }
            Envelope::ConfirmAgain { origin } => match NodeId::parse(&origin) {
                Some(origin) => self.confirm_again(origin),
                None => self.metrics.envelope_refused("invalid_id"),
            },
            Envelope::Mark { at_ms } => self.unconfirmed.mark_echoed(at_ms, self.now_ms()),
            Envelope::ResumeRequest {
                client,
                session,
                secret,
                reply_to,
                request,
            } => self.on_resume_request(&client, session, &secret, &reply_to, request),
            Envelope::Handover { request, signals } => self.on_handover(request, signals),
            Envelope::Fence { request, reply_to } => self.on_fence(request, &reply_to),
            Envelope::FenceDone { request } => self.on_fence_done(request),
            Envelope::Unheld { source, message_id } => {
                if !is_valid_client_id(&source) {
                    self.metrics.envelope_refused("invalid_id");
                    return;
                }
                self.metrics.held_answered.inc();
                self.answer_local(&source, message_id, RouteError::NotFound);
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
                        // A resumable session ends for good.
                        let node = Arc::clone(self);
                        tokio::spawn(async move {
                            node.end_parked(&client, old.session_id).await;
                        });
                    }
                }
            }
            Envelope::Probe { nonce } => self.health.probe_echoed(nonce, &self.metrics),
            Envelope::Kick { client, session } => {
                if ClientId::new(&client).is_none() {
                    self.metrics.envelope_refused("invalid_id");
                    return;
                }
                // Ending a parked session awaits its held signals' answers.
                let node = Arc::clone(self);
                tokio::spawn(async move {
                    node.kick_local(&client, Some(session)).await;
                });
            }
        }
    }

    fn on_signal(self: &Arc<Self>, signal: SignalRef<'_>) {
        match Inbound::check(signal, &self.origins) {
            Ok(inbound) => self.deliver_remote(inbound),
            Err(reason) => {
                self.metrics.envelope_refused(reason);
                tracing::warn!(reason, "dropping a signal envelope with invalid fields");
            }
        }
    }

    fn deliver_remote(self: &Arc<Self>, inbound: Inbound<'_>) {
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
            signal_manager.source = signal.source,
            signal_manager.target = signal.target,
            signal_manager.origin_node = signal.origin,
            signal_manager.node_id = %self.id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if let Some(parent) = signal.traceparent {
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
    fn try_deliver_remote(self: &Arc<Self>, inbound: Inbound<'_>) -> Option<RouteError> {
        self.metrics.cross_node_received.inc();
        let Inbound {
            signal,
            kind,
            origin,
        } = inbound;
        let age_us = now_micros().saturating_sub(signal.sent_at_us);
        if age_us > self.accept_window_us() {
            // The origin may have given up on it already (or will): never
            // deliver what its sender may be told failed.
            self.metrics.signals_expired.inc();
            self.bounce(&signal, &origin, RouteError::Unreachable);
            return Some(RouteError::Unreachable);
        }
        let error = match self.hub.get(signal.target) {
            None if self.moved_to(signal.target).is_some() => {
                // Its session was handed over from here: pass it on, after
                // the handover on the same ordered path.
                let to = self.moved_to(signal.target)?;
                let envelope = SignalRef {
                    forwarded: true,
                    ..signal
                };
                self.bus.publish(&to, envelope.encode(), None);
                return None;
            }
            None if !signal.forwarded => {
                // The origin's cached location is stale: pass it on, within
                // a bound on forwards in flight.
                match Arc::clone(&self.forwards).try_acquire_owned() {
                    Ok(permit) => {
                        let node = Arc::clone(self);
                        let signal = signal.to_owned();
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
                    signal.target,
                    signal.source,
                    signal.data,
                );
                // Confirmed once the session has written it (a node killed
                // before that never confirms: the origin answers), or at
                // once when it is held for a resumable session.
                let receipt = Receipt {
                    origin: origin.clone(),
                    seq: signal.seq,
                };
                let tag = ClientId::new(signal.source).map(|source| Tag {
                    source,
                    message_id: signal.message_id,
                    receipt: Some(receipt.clone()),
                    confirmed: false,
                });
                let forwarded = signal.forwarded;
                let deliver = |f| {
                    if forwarded {
                        target.deliver_forwarded(f, tag)
                    } else {
                        target.deliver_with(f, tag)
                    }
                };
                match frame.map(deliver) {
                    Ok(Ok(queuing)) => {
                        self.metrics
                            .cross_node_delivery
                            .observe(age_us as f64 / 1e6);
                        if queuing == Queuing::Held {
                            self.confirm_written(&[receipt]);
                        }
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
    fn bounce(&self, signal: &SignalRef<'_>, origin: &NodeId, error: RouteError) {
        tracing::debug!(
            message_id = %signal.message_id,
            code = error.code().as_str(),
            %origin,
            "bouncing a signal to its origin"
        );
        let bounce = Envelope::Undeliverable {
            source: signal.source.to_owned(),
            target: signal.target.to_owned(),
            message_id: signal.message_id,
            code: error.code().as_str().to_owned(),
            seq: signal.seq,
        };
        self.bus.publish(origin, bounce.encode(), None);
    }

    /// Re-routes a signal whose target is no longer here: to the node
    /// presence names now, or back to the origin as a failure.
    async fn forward(self: Arc<Self>, signal: SignalEnvelope, origin: NodeId) {
        let location = match self.presence.locate(&signal.target).await {
            Ok(Some(location)) if location.node_id != self.id => location,
            Ok(_) => return self.bounce(&(&signal).into(), &origin, RouteError::NotFound),
            Err(_) => return self.bounce(&(&signal).into(), &origin, RouteError::Unavailable),
        };
        let envelope = SignalRef {
            forwarded: true,
            ..SignalRef::from(&signal)
        };
        let node = Arc::clone(&self);
        self.bus.publish(
            &location.node_id,
            envelope.encode(),
            Some(Box::new(move |result| match result {
                Ok(n) if n > 0 => {}
                Ok(_) => node.bounce(&(&signal).into(), &origin, RouteError::Unreachable),
                Err(_) => node.bounce(&(&signal).into(), &origin, RouteError::Unavailable),
            })),
        );
    }
}
