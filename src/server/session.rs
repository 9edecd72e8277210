//! One task per WebSocket: waits for CONNECT, then serves the session as the
//! only writer to its socket until it ends, and cleans up on every path.
//!
//! Everything the client is sent after CONNECT_ACK goes through the
//! session's outbox (deliveries, replies, heartbeat acks), so there is one
//! write path, bounded by the outbox limits.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::Verified;
use crate::ids::ClientId;
use crate::node::router::Outgoing;
use crate::node::{Node, SessionHandle};
use crate::protocol::{
    decode_structured, encode_disconnect, encode_error, encode_frame, encode_raw, CloseCode, Codec,
    ConnectAckPayload, ConnectPayload, DisconnectPayload, DisconnectReason, ErrorCode, Frame,
    MessageType, PayloadError, WireSignal,
};
use crate::shutdown::Shutdown;
use crate::telemetry;

type Ws = WebSocketStream<TcpStream>;

/// How long the last frames and the close handshake may take.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How a session ends.
enum End {
    /// Send DISCONNECT with this reason (none for CLIENT_LEFT) and close.
    Disconnect(DisconnectReason),
    /// An ERROR is already queued; close with this code.
    AfterError(CloseCode),
    /// The socket is gone; only clean up.
    Gone,
}

/// Serves one WebSocket from upgrade to close.
pub(super) async fn run(node: &Arc<Node>, mut ws: Ws, mut shutdown: Shutdown) {
    // The one-off phases are boxed: a task's future is as large as its
    // largest state, and only the session loop should stay resident.
    let Some(mut session) = Box::pin(authenticate(node, &mut ws, &mut shutdown)).await else {
        return;
    };
    let end = session.serve(&mut ws, &mut shutdown).await;
    Box::pin(session.finish(&mut ws, end)).await;
}

/// Reads until the peer's close (or the socket ends), within a grace period.
pub(super) async fn await_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn close_frame(code: CloseCode, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: WsCloseCode::from(code.0),
        reason: reason.into(),
    }))
}

fn is_too_big(error: &WsError) -> bool {
    matches!(
        error,
        WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_)
    )
}

/// Sends `frames`, then a close frame, then waits for the peer's close.
async fn send_and_close(ws: &mut Ws, frames: Vec<Bytes>, code: CloseCode, node: &Node) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        for frame in frames {
            node.metrics.frame_sent(frame[1]);
            if ws.feed(WsMessage::Binary(frame)).await.is_err() {
                return;
            }
        }
        if ws.send(close_frame(code, "")).await.is_ok() {
            await_close(ws).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Before CONNECT
// ---------------------------------------------------------------------------

struct ConnectRequest {
    message_id: Uuid,
    codec: Codec,
    client: ClientId,
    verified: Verified,
}

/// A refusal before authentication: the ERROR frame and the close code.
struct Refusal {
    code: ErrorCode,
    frame: Bytes,
    close: CloseCode,
}

fn refuse(codec: Codec, id: Uuid, code: ErrorCode, message: &str) -> Refusal {
    Refusal {
        code,
        frame: encode_error(codec, id, code, message),
        close: CloseCode::POLICY,
    }
}

async fn authenticate(node: &Arc<Node>, ws: &mut Ws, shutdown: &mut Shutdown) -> Option<Session> {
    let deadline = Instant::now() + node.settings.server.connect_timeout();
    loop {
        // Cancel-safe branches: reading keeps partial frames inside the
        // stream; the sleep and the drain signal are level-triggered.
        let message = tokio::select! {
            m = ws.next() => m,
            _ = sleep_until(deadline) => {
                send_and_close(ws, Vec::new(), CloseCode::POLICY, node).await;
                return None;
            }
            _ = shutdown.wait() => {
                send_and_close(ws, Vec::new(), CloseCode::GOING_AWAY, node).await;
                return None;
            }
        };
        let bytes = match message {
            None | Some(Ok(WsMessage::Close(_))) => return None,
            Some(Err(e)) if is_too_big(&e) => {
                let r = refuse(
                    Codec::Json,
                    Uuid::nil(),
                    ErrorCode::BadFrame,
                    "message exceeds 65556 bytes",
                );
                node.metrics.error_sent(r.code);
                send_and_close(ws, vec![r.frame], CloseCode::TOO_BIG, node).await;
                return None;
            }
            Some(Err(_)) => return None,
            Some(Ok(WsMessage::Text(_))) => {
                let r = refuse(
                    Codec::Json,
                    Uuid::nil(),
                    ErrorCode::UnsupportedPayloadType,
                    "text messages are not supported; send binary frames",
                );
                node.metrics.error_sent(r.code);
                send_and_close(ws, vec![r.frame], CloseCode::UNSUPPORTED_DATA, node).await;
                return None;
            }
            Some(Ok(WsMessage::Binary(bytes))) => bytes,
            Some(Ok(_)) => continue,
        };
        let span = crate::root_span!(
            "CONNECT",
            otel.kind = "server",
            signal_manager.node_id = %node.id,
            signal_manager.client_id = tracing::field::Empty,
            signal_manager.codec = tracing::field::Empty,
            signal_manager.auth_result = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::record_ids(&span);
        return connect(node, ws, bytes, &span)
            .instrument(span.clone())
            .await;
    }
}

/// Handles the first binary frame: a valid CONNECT becomes a session (its
/// CONNECT_ACK sent), anything else the refusal the protocol prescribes.
async fn connect(
    node: &Arc<Node>,
    ws: &mut Ws,
    bytes: Bytes,
    span: &tracing::Span,
) -> Option<Session> {
    let received = Instant::now();
    let request = match first_frame(node, bytes) {
        Ok(request) => request,
        Err(refusal) => {
            span.record("signal_manager.auth_result", refusal.code.as_str());
            telemetry::record_error(span, refusal.code, "CONNECT refused");
            node.metrics.error_sent(refusal.code);
            send_and_close(ws, vec![refusal.frame], refusal.close, node).await;
            return None;
        }
    };
    span.record("signal_manager.client_id", request.client.as_str());
    span.record("signal_manager.codec", request.codec.as_str());
    let handle = match node.establish(&request.client, request.codec).await {
        Ok(handle) => handle,
        Err(code) => {
            let mut r = refuse(
                request.codec,
                request.message_id,
                code,
                "cluster backend unavailable; retry",
            );
            r.close = CloseCode::TRY_AGAIN_LATER;
            span.record("signal_manager.auth_result", code.as_str());
            telemetry::record_error(span, code, "presence could not be recorded");
            node.metrics.error_sent(code);
            send_and_close(ws, vec![r.frame], r.close, node).await;
            return None;
        }
    };
    let session = Session::new(node, request, handle);
    // CONNECT_ACK goes straight to the socket, ahead of anything queued.
    let ack = session.connect_ack(session.connect_id);
    node.metrics.frame_sent(MessageType::ConnectAck.as_u8());
    if ws.send(WsMessage::Binary(ack)).await.is_err() {
        session
            .node
            .end_session(&session.client, &session.handle)
            .await;
        return None;
    }
    node.metrics
        .connect_duration
        .observe(received.elapsed().as_secs_f64());
    span.record("signal_manager.auth_result", "ok");
    tracing::debug!(client = %session.client, session = %session.handle.session_id, "session established");
    Some(session)
}

/// Validates the first frame: a CONNECT with a good token, else the refusal
/// the protocol prescribes (frame validity is checked before authentication).
fn first_frame(node: &Node, bytes: Bytes) -> Result<ConnectRequest, Refusal> {
    let frame = Frame::decode(bytes)
        .map_err(|e| refuse(Codec::Json, e.message_id(), e.code(), &e.to_string()))?;
    let id = frame.message_id;
    node.metrics.frame_received(frame.message_type);
    if !frame.message_type.is_client_sendable() {
        return Err(refuse(
            Codec::Json,
            id,
            ErrorCode::UnknownMessageType,
            "server-only message type sent by a client",
        ));
    }
    if frame.message_type != MessageType::Connect {
        if let Err((code, message)) = check_payload(&frame) {
            return Err(refuse(Codec::Json, id, code, &message));
        }
        return Err(refuse(
            Codec::Json,
            id,
            ErrorCode::NotAuthenticated,
            "send CONNECT first",
        ));
    }
    let codec = Codec::from_payload_type(frame.payload_type).ok_or_else(|| {
        refuse(
            Codec::Json,
            id,
            ErrorCode::UnsupportedPayloadType,
            "CONNECT needs a JSON, CBOR or protobuf payload",
        )
    })?;
    let payload: ConnectPayload = codec
        .decode(&frame.payload)
        .map_err(|e| refuse(codec, id, ErrorCode::BadPayload, &e.to_string()))?;
    let client = ClientId::new(&payload.client_id).ok_or_else(|| {
        refuse(
            codec,
            id,
            ErrorCode::BadPayload,
            "client_id must be 1 to 128 characters of [A-Za-z0-9._:@-]",
        )
    })?;
    let verified = node
        .auth
        .verify(client.as_str(), &payload.auth_token)
        .map_err(|e| {
            node.metrics.auth_failed(e.reason());
            tracing::info!(client = %client, reason = e.reason(), "CONNECT refused");
            refuse(codec, id, e.code(), &e.to_string())
        })?;
    Ok(ConnectRequest {
        message_id: id,
        codec,
        client,
        verified,
    })
}

/// Checks a non-CONNECT frame's payload the way an authenticated session
/// would, so invalid frames get their own code before NOT_AUTHENTICATED.
fn check_payload(frame: &Frame) -> Result<(), (ErrorCode, String)> {
    let result = match frame.message_type {
        t if t.is_signal() => decode_structured::<WireSignal>(frame).and_then(|w| {
            crate::protocol::is_valid_client_id(&w.target_client_id)
                .then_some(())
                .ok_or(PayloadError::Field("target_client_id"))
        }),
        MessageType::Disconnect if !frame.payload.is_empty() => {
            decode_structured::<DisconnectPayload>(frame).map(|_| ())
        }
        _ => Ok(()),
    };
    result.map_err(|e| {
        let code = match e {
            PayloadError::NotStructured => ErrorCode::UnsupportedPayloadType,
            _ => ErrorCode::BadPayload,
        };
        (code, e.to_string())
    })
}

// ---------------------------------------------------------------------------
// An authenticated session
// ---------------------------------------------------------------------------

struct Session {
    node: Arc<Node>,
    client: ClientId,
    handle: Arc<SessionHandle>,
    connect_id: Uuid,
    expires_at: Option<Instant>,
    last_inbound: Instant,
    limiter: DefaultDirectRateLimiter,
    invalid_streak: u32,
}

fn to_instant(at: Option<SystemTime>) -> Option<Instant> {
    at.map(|t| {
        let left = t.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left
    })
}

impl Session {
    fn new(node: &Arc<Node>, request: ConnectRequest, handle: Arc<SessionHandle>) -> Session {
        let server = &node.settings.server;
        // Both values were validated to be non-zero at start-up.
        let rate = NonZeroU32::new(server.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(server.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
        Session {
            node: Arc::clone(node),
            client: request.client,
            handle,
            connect_id: request.message_id,
            expires_at: to_instant(request.verified.expires_at),
            last_inbound: Instant::now(),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            invalid_streak: 0,
        }
    }

    fn connect_ack(&self, message_id: Uuid) -> Bytes {
        let payload = ConnectAckPayload {
            session_id: self.handle.session_id.to_string(),
            client_id: self.client.as_str().to_owned(),
            node_id: self.node.id.as_str().to_owned(),
            heartbeat_interval_ms: u32::try_from(self.node.heartbeat().as_millis())
                .unwrap_or(u32::MAX),
        };
        // Ids are at most 128 bytes: the payload is far below the limit.
        encode_frame(
            MessageType::ConnectAck,
            message_id,
            self.handle.codec,
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
        let _ = self.handle.deliver(frame);
    }

    fn reply_error(&self, id: Uuid, code: ErrorCode, message: &str) {
        self.node.metrics.error_sent(code);
        self.queue(encode_error(self.handle.codec, id, code, message));
    }

    async fn serve(&mut self, ws: &mut Ws, shutdown: &mut Shutdown) -> End {
        let mut batch = Vec::with_capacity(16);
        loop {
            let (deadline, is_expiry) = self.deadline();
            // Cancel-safe branches: `changed` keeps a stored permit, reading
            // keeps partial frames in the stream, the sleep is recomputed.
            tokio::select! {
                biased;
                _ = self.handle.changed() => {
                    let closing = self.handle.take(&mut batch);
                    if let Err(end) = self.write(ws, &mut batch).await {
                        return end;
                    }
                    if let Some(reason) = closing {
                        return End::Disconnect(reason);
                    }
                }
                message = ws.next() => {
                    if let Some(end) = self.on_message(message).await {
                        return end;
                    }
                }
                _ = sleep_until(deadline) => {
                    return End::Disconnect(if is_expiry {
                        DisconnectReason::TokenExpired
                    } else {
                        DisconnectReason::IdleTimeout
                    });
                }
                _ = shutdown.wait() => return End::Disconnect(DisconnectReason::ServerShutdown),
            }
        }
    }

    /// Writes a batch with one flush; gives up when a close is requested
    /// meanwhile (a client that does not read must not pin the task).
    async fn write(&self, ws: &mut Ws, batch: &mut Vec<Bytes>) -> Result<(), End> {
        if batch.is_empty() {
            return Ok(());
        }
        let metrics = &self.node.metrics;
        let write = async {
            for frame in batch.drain(..) {
                metrics.frame_sent(frame[1]);
                ws.feed(WsMessage::Binary(frame)).await?;
            }
            ws.flush().await
        };
        tokio::select! {
            result = write => result.map_err(|_| End::Gone),
            _ = self.handle.close_requested() => {
                let reason = self.handle.closing().unwrap_or(DisconnectReason::SlowConsumer);
                Err(End::Disconnect(reason))
            }
        }
    }

    async fn on_message(&mut self, message: Option<Result<WsMessage, WsError>>) -> Option<End> {
        match message {
            None | Some(Ok(WsMessage::Close(_))) => Some(End::Gone),
            Some(Err(e)) if is_too_big(&e) => {
                self.reply_error(
                    Uuid::nil(),
                    ErrorCode::BadFrame,
                    "message exceeds 65556 bytes",
                );
                Some(End::AfterError(CloseCode::TOO_BIG))
            }
            Some(Err(_)) => Some(End::Gone),
            Some(Ok(WsMessage::Text(_))) => {
                self.last_inbound = Instant::now();
                self.reply_error(
                    Uuid::nil(),
                    ErrorCode::UnsupportedPayloadType,
                    "text messages are not supported; send binary frames",
                );
                Some(End::AfterError(CloseCode::UNSUPPORTED_DATA))
            }
            Some(Ok(WsMessage::Binary(bytes))) => {
                self.last_inbound = Instant::now();
                self.on_frame(bytes).await
            }
            // Pings are answered by the WebSocket layer and are not activity.
            Some(Ok(_)) => None,
        }
    }

    async fn on_frame(&mut self, bytes: Bytes) -> Option<End> {
        let frame = Frame::decode(bytes);
        let is_connect = matches!(&frame, Ok(f) if f.message_type == MessageType::Connect);
        if !is_connect && self.limiter.check().is_err() {
            let id = match &frame {
                Ok(f) => f.message_id,
                Err(e) => e.message_id(),
            };
            self.reply_error(
                id,
                ErrorCode::RateLimited,
                "message rate exceeded; frame dropped",
            );
            return None;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return self.invalid(e.message_id(), e.code(), &e.to_string()),
        };
        self.node.metrics.frame_received(frame.message_type);
        let id = frame.message_id;
        match frame.message_type {
            MessageType::Heartbeat => {
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
            MessageType::Connect => self.refresh(&frame),
            MessageType::SignalOffer
            | MessageType::SignalAnswer
            | MessageType::SignalIceCandidate => self.signal(&frame).await,
            MessageType::Disconnect => match check_payload(&frame) {
                Ok(()) => Some(End::Disconnect(DisconnectReason::ClientLeft)),
                Err((code, message)) => self.invalid(id, code, &message),
            },
            MessageType::ConnectAck | MessageType::HeartbeatAck | MessageType::Error => self
                .invalid(
                    id,
                    ErrorCode::UnknownMessageType,
                    "server-only message type sent by a client",
                ),
        }
    }

    /// Answers an invalid frame; too many in a row end the session (POLICY).
    fn invalid(&mut self, id: Uuid, code: ErrorCode, message: &str) -> Option<End> {
        self.reply_error(id, code, message);
        self.invalid_streak += 1;
        (self.invalid_streak >= self.node.settings.server.max_invalid_frames)
            .then_some(End::Disconnect(DisconnectReason::Policy))
    }

    fn refresh(&mut self, frame: &Frame) -> Option<End> {
        let id = frame.message_id;
        let payload: ConnectPayload = match decode_structured(frame) {
            Ok(p) => p,
            Err(PayloadError::NotStructured) => {
                return self.invalid(
                    id,
                    ErrorCode::UnsupportedPayloadType,
                    "CONNECT needs a JSON, CBOR or protobuf payload",
                )
            }
            Err(e) => return self.invalid(id, ErrorCode::BadPayload, &e.to_string()),
        };
        if payload.client_id != self.client.as_str() {
            return self.invalid(
                id,
                ErrorCode::BadPayload,
                "a refresh CONNECT must keep the session's client_id",
            );
        }
        self.invalid_streak = 0;
        let span = crate::root_span!(
            "CONNECT",
            otel.kind = "server",
            signal_manager.node_id = %self.node.id,
            signal_manager.client_id = self.client.as_str(),
            signal_manager.codec = self.handle.codec.as_str(),
            signal_manager.session_id = %self.handle.session_id,
            signal_manager.refresh = true,
            signal_manager.auth_result = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::record_ids(&span);
        let _entered = span.enter();
        match self
            .node
            .auth
            .verify(self.client.as_str(), &payload.auth_token)
        {
            Ok(verified) => {
                span.record("signal_manager.auth_result", "ok");
                self.expires_at = to_instant(verified.expires_at);
                self.queue(self.connect_ack(id));
            }
            Err(e) => {
                span.record("signal_manager.auth_result", e.code().as_str());
                telemetry::record_error(&span, e.code(), "token refresh refused");
                self.node.metrics.auth_failed(e.reason());
                self.reply_error(id, e.code(), &e.to_string());
            }
        }
        None
    }

    async fn signal(&mut self, frame: &Frame) -> Option<End> {
        let span = crate::root_span!(
            "route",
            otel.name = %format_args!("{} route", frame.message_type.as_str()),
            otel.kind = "producer",
            messaging.operation.type = "send",
            messaging.message.id = %frame.message_id,
            signal_manager.message_type = frame.message_type.as_str(),
            signal_manager.source = self.client.as_str(),
            signal_manager.target = tracing::field::Empty,
            signal_manager.route = tracing::field::Empty,
            signal_manager.session_id = %self.handle.session_id,
            signal_manager.codec = self.handle.codec.as_str(),
            signal_manager.node_id = %self.node.id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::record_ids(&span);
        self.route_signal(frame, &span)
            .instrument(span.clone())
            .await
    }

    async fn route_signal(&mut self, frame: &Frame, span: &tracing::Span) -> Option<End> {
        let started = Instant::now();
        let id = frame.message_id;
        let wire: WireSignal = match decode_structured(frame) {
            Ok(w) => w,
            Err(PayloadError::NotStructured) => {
                telemetry::record_error(span, ErrorCode::UnsupportedPayloadType, "not structured");
                return self.invalid(
                    id,
                    ErrorCode::UnsupportedPayloadType,
                    "signals need a JSON, CBOR or protobuf payload",
                );
            }
            Err(e) => {
                telemetry::record_error(span, ErrorCode::BadPayload, "payload does not decode");
                return self.invalid(id, ErrorCode::BadPayload, &e.to_string());
            }
        };
        if !crate::protocol::is_valid_client_id(&wire.target_client_id) {
            telemetry::record_error(span, ErrorCode::BadPayload, "invalid target_client_id");
            return self.invalid(id, ErrorCode::BadPayload, "invalid target_client_id");
        }
        self.invalid_streak = 0;
        let outgoing = Outgoing {
            kind: frame.message_type,
            message_id: id,
            source: &self.client,
            target: &wire.target_client_id,
            data: &wire.signal_data,
        };
        span.record("signal_manager.target", outgoing.target);
        // Local and cached routes complete without waiting; only a presence
        // lookup is awaited, boxed so the session's future stays small.
        let routed = match self.node.route_now(&outgoing, &self.handle) {
            Some(result) => result,
            None => Box::pin(self.node.route_after_lookup(&outgoing, &self.handle)).await,
        };
        if let Err(code) = routed {
            let message = crate::node::router::describe(code);
            telemetry::record_error(span, code, message);
            self.reply_error(id, code, message);
        }
        self.node
            .metrics
            .route_duration
            .observe(started.elapsed().as_secs_f64());
        None
    }

    /// Cleans up (hub, presence) and closes the socket as `end` says.
    async fn finish(self, ws: &mut Ws, end: End) {
        let (reason, close) = match end {
            End::Disconnect(reason) => (reason, reason.close_code()),
            End::AfterError(code) => (DisconnectReason::Policy, code),
            End::Gone => (DisconnectReason::ClientLeft, CloseCode::NORMAL),
        };
        // Refuse further deliveries first, so a late signal gets an ERROR
        // instead of sitting in a queue nobody writes.
        self.handle.close(reason);
        self.node.end_session(&self.client, &self.handle).await;
        let counted = match end {
            End::AfterError(_) => None,
            _ => Some(reason),
        };
        if let Some(reason) = counted {
            self.node.metrics.disconnected(reason);
        }
        if matches!(end, End::Gone) {
            return;
        }
        let mut frames = Vec::new();
        if reason != DisconnectReason::SlowConsumer {
            self.handle.take(&mut frames);
        }
        if let End::Disconnect(reason) = end {
            if reason != DisconnectReason::ClientLeft {
                frames.push(encode_disconnect(self.handle.codec, reason));
            }
        }
        tracing::debug!(client = %self.client, reason = %reason, "session ended");
        send_and_close(ws, frames, close, &self.node).await;
    }
}
