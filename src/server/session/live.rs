//! An authenticated session: the loop that reads frames, routes signals,
//! writes the outbox, keeps the idle and expiry deadlines, and the close
//! when it ends (its registration guard does the cleanup).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::SinkExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::Instrument;
use uuid::Uuid;

use super::connect::{check_payload, ConnectRequest};
use super::error::SessionError;
use super::link::Link;
use super::reader::{self, Inbound};
use super::{answer_close, send_and_close, End, Ws};
use crate::auth::PeerPolicy;
use crate::ids::ClientId;
use crate::node::{new_token, Node, Outgoing, Registration, SessionHandle};
use crate::protocol::{
    decode_signal, decode_structured, encode_disconnect, encode_frame, encode_raw, CloseCode,
    ConnectAckPayload, ConnectPayload, DisconnectReason, Frame, MessageType,
};
use crate::telemetry;

/// How far the session's timer may lag behind the moment due before a
/// frame moves it: at most one timer update per this much traffic, and an
/// early wake-up only after a gap this long.
const TIMER_SLACK: std::time::Duration = std::time::Duration::from_millis(100);

// ---------------------------------------------------------------------------
// An authenticated session
// ---------------------------------------------------------------------------

pub(super) struct Session {
    node: Arc<Node>,
    /// The hub entry and presence record; dropped with the session.
    registration: Registration,
    pub(super) connect_id: Uuid,
    expires_at: Option<Instant>,
    last_inbound: Instant,
    limiter: DefaultDirectRateLimiter,
    invalid_streak: u32,
    /// Whom the current token may signal; a refresh replaces it.
    peers: PeerPolicy,
}

fn to_instant(at: Option<SystemTime>) -> Option<Instant> {
    at.map(|t| {
        let left = t.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left
    })
}

impl Session {
    pub(super) fn new(
        node: &Arc<Node>,
        request: ConnectRequest,
        registration: Registration,
    ) -> Session {
        let server = &node.settings().server;
        // Both values were validated to be non-zero at start-up.
        let rate = NonZeroU32::new(server.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(server.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
        Session {
            node: Arc::clone(node),
            registration,
            connect_id: request.message_id,
            expires_at: to_instant(request.verified.expires_at),
            peers: request.verified.peers,
            last_inbound: Instant::now(),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            invalid_streak: 0,
        }
    }

    /// The authenticated client.
    pub(super) fn client(&self) -> &ClientId {
        self.registration.client()
    }

    fn handle(&self) -> &Arc<SessionHandle> {
        self.registration.handle()
    }

    /// The CONNECT_ACK answering `message_id`, with a fresh resume token
    /// (the one before it stops working).
    pub(super) fn connect_ack(&self, message_id: Uuid, resumed: bool) -> Bytes {
        let resume_token = (self.node.settings().server.resume_window > 0).then(|| {
            let (token, secret) = new_token(self.handle().session_id);
            self.handle().set_resume_secret(secret);
            token
        });
        let payload = ConnectAckPayload {
            session_id: self.handle().session_id.to_string(),
            client_id: self.client().as_str().to_owned(),
            node_id: self.node.id().as_str().to_owned(),
            heartbeat_interval_ms: u32::try_from(self.node.heartbeat().as_millis())
                .unwrap_or(u32::MAX),
            resume_token,
            resumed,
            ice_servers: crate::turn::ice_servers(
                &self.node.settings().turn,
                self.client().as_str(),
                SystemTime::now(),
            ),
        };
        // Ids are at most 128 bytes: the payload is far below the limit.
        encode_frame(
            MessageType::ConnectAck,
            message_id,
            self.handle().codec,
            &payload,
        )
        .unwrap_or_default()
    }

    fn deadline(&self) -> (Instant, bool) {
        let idle = self.last_inbound + self.node.heartbeat() * 3;
        match self.expires_at {
            Some(exp) if exp <= idle => (exp, true),
            _ => (idle, false),
        }
    }

    /// Queues a frame for this client; a full queue ends the session.
    fn queue(&self, frame: Bytes) {
        let _ = self.handle().deliver(frame);
    }

    /// Answers the frame `id` with the error's ERROR.
    fn reply_error(&self, id: Uuid, error: &SessionError) {
        self.node.metrics().error_sent(error.code());
        self.queue(error.frame(self.handle().codec, id));
    }

    /// The session loop, until the session ends. A drain is seen through
    /// the session's own wake-up ([`Node::start_draining`] nudges every
    /// session), not by polling the node-wide drain signal with each frame:
    /// that signal's waiter list is one lock shared by every session.
    pub(super) async fn serve(&mut self, link: &mut Link) -> End {
        if self.node.is_draining() {
            return End::Disconnect(DisconnectReason::ServerShutdown);
        }
        // Both start empty and are emptied again whenever the link rests:
        // an idle session holds no buffer of its own either.
        let mut batch = Vec::new();
        let mut receipts = Vec::new();
        // One timer for both: the session's deadline, and before it the
        // moment an awake link may rest. Both move later with every frame;
        // the timer is moved at once when the moment due comes earlier, but
        // later only once it lags by [`TIMER_SLACK`], and when it fires
        // before the moment now due, it is set again. A busy session so
        // neither updates its timer per frame nor wakes per rest period.
        let mut timer = std::pin::pin!(sleep_until(self.deadline().0));
        loop {
            let (deadline, is_expiry) = self.deadline();
            let rest_at = link.rest_due().filter(|at| *at < deadline);
            let due = rest_at.unwrap_or(deadline);
            let armed = timer.deadline();
            if due < armed || due > armed + TIMER_SLACK {
                timer.as_mut().reset(due);
            }
            // Cancel-safe branches: `changed` keeps a stored permit, reading
            // keeps partial frames in the link (a dormant link only waits
            // for readiness), the timer is checked against the moment due.
            // Biased: when the timer is taken, the read was just polled and
            // found nothing.
            tokio::select! {
                biased;
                _ = self.registration.handle().changed() => {
                    let closing = self.handle().take(&mut batch, &mut receipts);
                    let written = if batch.is_empty() {
                        Ok(())
                    } else {
                        self.write(link.ws(), &mut batch).await
                    };
                    // Frames from other nodes are confirmed once written (a
                    // close that interrupted the write counts: the session
                    // took them); a broken socket confirms nothing, and
                    // their origins answer PEER_UNREACHABLE.
                    if !matches!(written, Err(End::Gone)) {
                        self.node.confirm_written(&receipts);
                    }
                    receipts.clear();
                    if let Err(end) = written {
                        return end;
                    }
                    if let Some(reason) = closing {
                        return End::Disconnect(reason);
                    }
                    if self.node.is_draining() {
                        return End::Disconnect(DisconnectReason::ServerShutdown);
                    }
                }
                inbound = reader::next(link) => {
                    if let Some(end) = self.on_inbound(inbound, link.active_at()).await {
                        return end;
                    }
                }
                _ = &mut timer => {
                    if due > Instant::now() {
                        timer.as_mut().reset(due);
                        continue;
                    }
                    if rest_at.is_some() {
                        if link.rest_if_quiet().await {
                            batch = Vec::new();
                            receipts = Vec::new();
                        }
                        continue;
                    }
                    return End::Disconnect(if is_expiry {
                        DisconnectReason::TokenExpired
                    } else {
                        DisconnectReason::IdleTimeout
                    });
                }
            }
        }
    }

    /// Writes a batch with one flush; gives up when a close is requested
    /// meanwhile (a client that does not read must not pin the task).
    async fn write(&self, ws: &mut Ws, batch: &mut Vec<Bytes>) -> Result<(), End> {
        let metrics = self.node.metrics();
        let write = async {
            for frame in batch.drain(..) {
                metrics.frame_sent(frame[1]);
                ws.feed(WsMessage::Binary(frame)).await?;
            }
            ws.flush().await
        };
        tokio::select! {
            result = write => result.map_err(|_| End::Gone),
            _ = self.handle().close_requested() => {
                let reason = self.handle().closing().unwrap_or(DisconnectReason::SlowConsumer);
                Err(End::Disconnect(reason))
            }
        }
    }

    /// Handles what the link read at `read_at`.
    async fn on_inbound(&mut self, inbound: Inbound, read_at: Instant) -> Option<End> {
        match inbound {
            Inbound::Frame(bytes) => {
                self.last_inbound = read_at;
                self.on_frame(bytes, read_at).await
            }
            // Pings are answered by the WebSocket layer and are not activity.
            Inbound::Ignored => None,
            Inbound::Closed => Some(End::Gone),
            Inbound::Refused(error) => {
                if matches!(error, SessionError::TextMessage) {
                    self.last_inbound = read_at;
                }
                self.reply_error(Uuid::nil(), &error);
                debug_assert!(error.ends_session());
                Some(End::AfterError(error.close_code()))
            }
        }
    }

    async fn on_frame(&mut self, bytes: Bytes, read_at: Instant) -> Option<End> {
        let frame = Frame::decode(bytes);
        let is_connect = matches!(&frame, Ok(f) if f.message_type == MessageType::Connect);
        if !is_connect && self.limiter.check().is_err() {
            let id = match &frame {
                Ok(f) => f.message_id,
                Err(e) => e.message_id(),
            };
            self.reply_error(id, &SessionError::RateLimited);
            return None;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return self.invalid(Uuid::nil(), SessionError::Frame(e)),
        };
        self.node.metrics().frame_received(frame.message_type);
        let id = frame.message_id;
        match frame.message_type {
            MessageType::Heartbeat => {
                #[cfg(test)]
                if frame.payload[..] == *super::tests::PANIC_HEARTBEAT {
                    panic!("test hook: the session task panics");
                }
                self.invalid_streak = 0;
                // Echo: same id, same payload type, same bytes.
                let ack = encode_raw(
                    MessageType::HeartbeatAck,
                    id,
                    frame.payload_type,
                    &frame.payload,
                );
                self.queue(ack.unwrap_or_default());
                None
            }
            // Boxed: the session loop's future is as large as its largest
            // state, and it stays resident for the connection's life; a
            // signal's routing state lives only while it is routed.
            MessageType::Connect => Box::pin(self.refresh(&frame)).await,
            MessageType::SignalOffer
            | MessageType::SignalAnswer
            | MessageType::SignalIceCandidate => Box::pin(self.signal(&frame, read_at)).await,
            MessageType::Disconnect => match check_payload(&frame) {
                Ok(()) => Some(End::Disconnect(DisconnectReason::ClientLeft)),
                Err(error) => self.invalid(id, error),
            },
            MessageType::ConnectAck | MessageType::HeartbeatAck | MessageType::Error => {
                self.invalid(id, SessionError::ServerOnly)
            }
        }
    }

    /// Answers an invalid frame; too many in a row end the session (POLICY).
    fn invalid(&mut self, id: Uuid, error: SessionError) -> Option<End> {
        self.reply_error(id, &error);
        self.invalid_streak += 1;
        (self.invalid_streak >= self.node.settings().server.max_invalid_frames)
            .then_some(End::Disconnect(DisconnectReason::Policy))
    }

    async fn refresh(&mut self, frame: &Frame) -> Option<End> {
        let id = frame.message_id;
        let payload: ConnectPayload = match decode_structured(frame) {
            Ok(p) => p,
            Err(source) => {
                return self.invalid(
                    id,
                    SessionError::Payload {
                        what: "CONNECT",
                        source,
                    },
                )
            }
        };
        if payload.client_id != self.client().as_str() {
            return self.invalid(id, SessionError::ClientIdChanged);
        }
        self.invalid_streak = 0;
        let span = crate::root_span!(
            "CONNECT",
            otel.kind = "server",
            signal_manager.node_id = %self.node.id(),
            signal_manager.client_id = self.client().as_str(),
            signal_manager.codec = self.handle().codec.as_str(),
            signal_manager.session_id = %self.handle().session_id,
            signal_manager.refresh = true,
            signal_manager.auth_result = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::record_ids(&span);
        // Boxed: a JWK Set refetch must not grow the session loop's future.
        let verified = Box::pin(
            self.node
                .auth()
                .verify(self.client().as_str(), &payload.auth_token)
                .instrument(span.clone()),
        )
        .await;
        let _entered = span.enter();
        match verified {
            Ok(verified) => {
                span.record("signal_manager.auth_result", "ok");
                self.expires_at = to_instant(verified.expires_at);
                self.peers = verified.peers;
                self.queue(self.connect_ack(id, false));
            }
            Err(e) => {
                span.record("signal_manager.auth_result", e.code().as_str());
                telemetry::record_error(&span, e.code(), "token refresh refused");
                self.node.metrics().auth_failed(e.reason());
                self.reply_error(id, &SessionError::Auth(e));
            }
        }
        None
    }

    async fn signal(&mut self, frame: &Frame, read_at: Instant) -> Option<End> {
        let span = crate::root_span!(
            "route",
            otel.name = %format_args!("{} route", frame.message_type.as_str()),
            otel.kind = "producer",
            messaging.operation.type = "send",
            messaging.message.id = %frame.message_id,
            signal_manager.message_type = frame.message_type.as_str(),
            signal_manager.source = self.client().as_str(),
            signal_manager.target = tracing::field::Empty,
            signal_manager.route = tracing::field::Empty,
            signal_manager.session_id = %self.handle().session_id,
            signal_manager.codec = self.handle().codec.as_str(),
            signal_manager.node_id = %self.node.id(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::record_ids(&span);
        self.route_signal(frame, &span, read_at)
            .instrument(span.clone())
            .await
    }

    /// Routes a signal read at `read_at` (the route duration counts from
    /// then, its decoding included).
    async fn route_signal(
        &mut self,
        frame: &Frame,
        span: &tracing::Span,
        read_at: Instant,
    ) -> Option<End> {
        let id = frame.message_id;
        let wire = match decode_signal(frame) {
            Ok(w) => w,
            Err(source) => {
                let error = SessionError::Payload {
                    what: "signal",
                    source,
                };
                telemetry::record_error(span, error.code(), "payload does not decode");
                return self.invalid(id, error);
            }
        };
        if !crate::protocol::is_valid_client_id(&wire.target_client_id) {
            let error = SessionError::InvalidClientId("target_client_id");
            telemetry::record_error(span, error.code(), "invalid target_client_id");
            return self.invalid(id, error);
        }
        self.invalid_streak = 0;
        // The peers claim, before any routing work: no lookup, no allocation.
        if !self.peers.allows(&wire.target_client_id) {
            self.node.metrics().access.forbidden_signals.inc();
            let error = SessionError::Forbidden;
            telemetry::record_error(span, error.code(), "peers claim refuses target");
            self.reply_error(id, &error);
            return None;
        }
        let outgoing = Outgoing {
            kind: frame.message_type,
            message_id: id,
            source: self.registration.client(),
            target: &wire.target_client_id,
            data: &wire.signal_data,
            read_at,
        };
        span.record("signal_manager.target", outgoing.target);
        // Local and cached routes complete without waiting; only a presence
        // lookup is awaited, boxed so the session's future stays small.
        let handle = self.registration.handle();
        let routed = match self.node.route_now(&outgoing, handle) {
            Some(result) => result,
            None => Box::pin(self.node.route_after_lookup(&outgoing, handle)).await,
        };
        if let Err(error) = routed {
            tracing::debug!(message_id = %id, code = error.code().as_str(), "signal refused at once");
            let error = SessionError::Route(error);
            telemetry::record_error(span, error.code(), &error.sentence());
            self.reply_error(id, &error);
        }
        self.node
            .metrics()
            .route_duration
            .observe(read_at.elapsed().as_secs_f64());
        None
    }

    /// Closes the socket as `end` says, then parks the session for resume
    /// (a lost socket, IDLE_TIMEOUT, SERVER_SHUTDOWN) or cleans it up
    /// (hub, presence) for good.
    pub(super) async fn finish(self, ws: &mut Ws, end: End) {
        let (reason, close) = match end {
            End::Disconnect(reason) => (reason, reason.close_code()),
            End::AfterError(code) => (DisconnectReason::Policy, code),
            End::Gone => (DisconnectReason::ClientLeft, CloseCode::NORMAL),
        };
        let resumable = self.node.settings().server.resume_window > 0
            && matches!(
                end,
                End::Gone
                    | End::Disconnect(DisconnectReason::IdleTimeout)
                    | End::Disconnect(DisconnectReason::ServerShutdown)
            );
        let handle = Arc::clone(self.handle());
        let client = self.client().clone();
        if !matches!(end, End::AfterError(_)) {
            self.node.metrics().disconnected(reason);
        }
        if resumable {
            // Park first, so what arrives while the last frames and the
            // close go out is held (and confirmed) at once; the frames taken
            // now are confirmed once written.
            let (mut frames, mut receipts) = (Vec::new(), Vec::new());
            handle.take(&mut frames, &mut receipts);
            tracing::debug!(%client, %reason, "session parked for resume");
            self.node.park(self.registration);
            if matches!(end, End::Gone) {
                answer_close(ws).await;
            } else {
                frames.push(encode_disconnect(handle.codec, reason));
                if send_and_close(ws, frames, close, &self.node).await {
                    self.node.confirm_written(&receipts);
                }
            }
            return;
        }
        // Refuse further deliveries first, so a late signal gets an ERROR
        // instead of sitting in a queue nobody writes.
        handle.close(reason);
        self.registration.end().await;
        if matches!(end, End::Gone) {
            answer_close(ws).await;
            return;
        }
        let (mut frames, mut receipts) = (Vec::new(), Vec::new());
        if reason != DisconnectReason::SlowConsumer {
            handle.take(&mut frames, &mut receipts);
        }
        if let End::Disconnect(reason) = end {
            if reason != DisconnectReason::ClientLeft {
                frames.push(encode_disconnect(handle.codec, reason));
            }
        }
        tracing::debug!(%client, %reason, "session ended");
        if send_and_close(ws, frames, close, &self.node).await {
            self.node.confirm_written(&receipts);
        }
    }
}
