//! Before a successful CONNECT: the connect timeout, the first frame's
//! validation (frame, then payload, then token) and the refusals the
//! protocol prescribes, then the session's registration and CONNECT_ACK.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::Instrument;
use uuid::Uuid;

use super::live::Session;
use super::{is_too_big, send_and_close, Ws};
use crate::auth::Verified;
use crate::ids::ClientId;
use crate::node::Node;
use crate::protocol::{
    decode_structured, encode_error, CloseCode, Codec, ConnectPayload, DisconnectPayload,
    ErrorCode, Frame, MessageType, PayloadError, WireSignal,
};
use crate::shutdown::Shutdown;
use crate::telemetry;

// ---------------------------------------------------------------------------
// Before CONNECT
// ---------------------------------------------------------------------------

pub(super) struct ConnectRequest {
    pub(super) message_id: Uuid,
    pub(super) codec: Codec,
    pub(super) client: ClientId,
    pub(super) verified: Verified,
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

pub(super) async fn authenticate(
    node: &Arc<Node>,
    ws: &mut Ws,
    shutdown: &mut Shutdown,
) -> Option<Session> {
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
pub(super) fn check_payload(frame: &Frame) -> Result<(), (ErrorCode, String)> {
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
