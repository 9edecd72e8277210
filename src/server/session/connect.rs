//! Before a successful CONNECT: the connect timeout, the first frame's
//! validation (frame, then payload, then token) and the refusals the
//! protocol prescribes, then the session's registration and CONNECT_ACK.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::Instrument;
use uuid::Uuid;

use super::error::SessionError;
use super::link::Link;
use super::live::Session;
use super::reader::{self, Inbound};
use super::{send_and_close, Ws};
use crate::auth::Verified;
use crate::ids::ClientId;
use crate::node::Node;
use crate::protocol::{
    decode_structured, CloseCode, Codec, DisconnectPayload, Frame, MessageType, PayloadError,
    WireConnect, WireSignal,
};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// A valid CONNECT with a verified token.
pub(super) struct ConnectRequest {
    pub(super) message_id: Uuid,
    pub(super) codec: Codec,
    pub(super) client: ClientId,
    pub(super) verified: Verified,
    /// A resume token from an earlier CONNECT_ACK (never logged).
    resume_token: Option<String>,
}

/// A refusal before authentication: what went wrong, and the codec and
/// frame id its ERROR answers in.
struct Refusal {
    error: SessionError,
    codec: Codec,
    frame_id: Uuid,
}

impl Refusal {
    fn json(error: SessionError, frame_id: Uuid) -> Refusal {
        Refusal {
            error,
            codec: Codec::Json,
            frame_id,
        }
    }
}

/// Sends the refusal's ERROR and closes the socket with its close code.
async fn refuse(node: &Node, ws: &mut Ws, refusal: Refusal) {
    node.metrics().error_sent(refusal.error.code());
    let frame = refusal.error.frame(refusal.codec, refusal.frame_id);
    send_and_close(ws, vec![frame], refusal.error.close_code(), node).await;
}

pub(super) async fn authenticate(
    node: &Arc<Node>,
    link: &mut Link,
    shutdown: &mut Shutdown,
) -> Option<Session> {
    let deadline = Instant::now() + node.settings().server.connect_timeout();
    loop {
        // Cancel-safe branches: reading keeps partial frames inside the
        // stream; the sleep and the drain signal are level-triggered.
        let inbound = tokio::select! {
            inbound = reader::next(link) => inbound,
            _ = sleep_until(deadline) => {
                send_and_close(link.ws(), Vec::new(), CloseCode::POLICY, node).await;
                return None;
            }
            _ = shutdown.wait() => {
                send_and_close(link.ws(), Vec::new(), CloseCode::GOING_AWAY, node).await;
                return None;
            }
        };
        let ws = link.ws();
        let bytes = match inbound {
            Inbound::Frame(bytes) => bytes,
            Inbound::Ignored => continue,
            Inbound::Closed => return None,
            Inbound::Refused(error) => {
                refuse(node, ws, Refusal::json(error, Uuid::nil())).await;
                return None;
            }
        };
        let span = crate::root_span!(
            "CONNECT",
            otel.kind = "server",
            signal_manager.node_id = %node.id(),
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
    let mut request = match first_frame(node, bytes).await {
        Ok(request) => request,
        Err(refusal) => {
            let code = refusal.error.code();
            span.record("signal_manager.auth_result", code.as_str());
            telemetry::record_error(span, code, "CONNECT refused");
            refuse(node, ws, refusal).await;
            return None;
        }
    };
    span.record("signal_manager.client_id", request.client.as_str());
    span.record("signal_manager.codec", request.codec.as_str());
    let resumed = match request.resume_token.take() {
        Some(token) if node.settings().server.resume_window > 0 => {
            node.resume(&request.client, &token, request.codec).await
        }
        _ => None,
    };
    let is_resume = resumed.is_some();
    let established = match resumed {
        Some(registration) => Ok(registration),
        None => node.establish(&request.client, request.codec).await,
    };
    let registration = match established {
        Ok(registration) => registration,
        Err(cause) => {
            // The operator sees the cause once, here; the client a sentence.
            tracing::warn!(error = %crate::telemetry::ErrorChain(&cause), "presence registration failed; refusing CONNECT");
            let error = SessionError::Unavailable(cause);
            span.record("signal_manager.auth_result", error.code().as_str());
            telemetry::record_error(span, error.code(), "presence could not be recorded");
            let refusal = Refusal {
                error,
                codec: request.codec,
                frame_id: request.message_id,
            };
            refuse(node, ws, refusal).await;
            return None;
        }
    };
    let session = Session::new(node, request, registration);
    // CONNECT_ACK goes straight to the socket, ahead of anything queued.
    let ack = session.connect_ack(session.connect_id, is_resume);
    node.metrics().frame_sent(MessageType::ConnectAck.as_u8());
    if ws.send(WsMessage::Binary(ack)).await.is_err() {
        // Dropping the session drops its registration: hub and presence.
        return None;
    }
    node.metrics()
        .connect_duration
        .observe(received.elapsed().as_secs_f64());
    span.record("signal_manager.auth_result", "ok");
    tracing::debug!(client = %session.client(), resumed = is_resume, "session established");
    Some(session)
}

/// Validates the first frame: a CONNECT with a good token, else the refusal
/// the protocol prescribes (frame validity is checked before authentication).
async fn first_frame(node: &Node, bytes: Bytes) -> Result<ConnectRequest, Refusal> {
    let frame =
        Frame::decode(bytes).map_err(|e| Refusal::json(SessionError::Frame(e), Uuid::nil()))?;
    let id = frame.message_id;
    node.metrics().frame_received(frame.message_type);
    if !frame.message_type.is_client_sendable() {
        return Err(Refusal::json(SessionError::ServerOnly, id));
    }
    if frame.message_type != MessageType::Connect {
        check_payload(&frame).map_err(|e| Refusal::json(e, id))?;
        return Err(Refusal::json(SessionError::NotAuthenticated, id));
    }
    let codec = Codec::from_payload_type(frame.payload_type).ok_or_else(|| {
        Refusal::json(
            SessionError::Payload {
                what: "CONNECT",
                source: PayloadError::NotStructured,
            },
            id,
        )
    })?;
    let in_codec = |error| Refusal {
        error,
        codec,
        frame_id: id,
    };
    let payload: WireConnect = codec.decode(&frame.payload).map_err(|source| {
        in_codec(SessionError::Payload {
            what: "CONNECT",
            source,
        })
    })?;
    let client = ClientId::new(&payload.client_id)
        .ok_or_else(|| in_codec(SessionError::InvalidClientId("client_id")))?;
    let verified = node
        .auth()
        .verify(client.as_str(), &payload.auth_token)
        .await
        .map_err(|e| {
            node.metrics().auth_failed(e.reason());
            tracing::info!(client = %client, reason = e.reason(), "CONNECT refused");
            in_codec(SessionError::Auth(e))
        })?;
    Ok(ConnectRequest {
        message_id: id,
        codec,
        client,
        verified,
        resume_token: payload.resume_token.filter(|t| !t.is_empty()),
    })
}

/// Checks a non-CONNECT frame's payload the way an authenticated session
/// would, so invalid frames get their own code before NOT_AUTHENTICATED.
pub(super) fn check_payload(frame: &Frame) -> Result<(), SessionError> {
    match frame.message_type {
        t if t.is_signal() => {
            let wire: WireSignal =
                decode_structured(frame).map_err(|source| SessionError::Payload {
                    what: "signal",
                    source,
                })?;
            crate::protocol::is_valid_client_id(&wire.target_client_id)
                .then_some(())
                .ok_or(SessionError::InvalidClientId("target_client_id"))
        }
        MessageType::Disconnect if !frame.payload.is_empty() => {
            decode_structured::<DisconnectPayload>(frame)
                .map(|_| ())
                .map_err(|source| SessionError::Payload {
                    what: "DISCONNECT",
                    source,
                })
        }
        _ => Ok(()),
    }
}
