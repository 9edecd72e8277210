//! Everything a session answers with an ERROR, and the one place that maps
//! each to its protocol code, its sentence and (when it ends the session
//! before or instead of going on) its close code.

use std::borrow::Cow;

use bytes::Bytes;
use uuid::Uuid;

use crate::auth::AuthError;
use crate::node::RouteError;
use crate::presence::PresenceError;
use crate::protocol::{encode_error, CloseCode, Codec, ErrorCode, FrameError, PayloadError};

/// Why a frame (or a whole socket) was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// A WebSocket text message.
    #[error("text messages are not supported; send binary frames")]
    TextMessage,
    /// A WebSocket message above the largest frame.
    #[error("message exceeds 65556 bytes")]
    TooBig,
    /// The frame itself is invalid.
    #[error(transparent)]
    Frame(FrameError),
    /// A server-only message type sent by a client.
    #[error("server-only message type sent by a client")]
    ServerOnly,
    /// The payload of `what` does not decode, or is not structured.
    #[error("{what}: {source}")]
    Payload {
        /// The message it belongs to ("CONNECT", "signal", ...).
        what: &'static str,
        /// The decoding error.
        source: PayloadError,
    },
    /// A client id that breaks the id rules.
    #[error("{0} must be 1 to 128 characters of [A-Za-z0-9._:@-]")]
    InvalidClientId(&'static str),
    /// Anything but CONNECT before a successful CONNECT.
    #[error("send CONNECT first")]
    NotAuthenticated,
    /// A refresh CONNECT naming another client.
    #[error("a refresh CONNECT must keep the session's client_id")]
    ClientIdChanged,
    /// The token was refused.
    #[error(transparent)]
    Auth(AuthError),
    /// The client's token bucket is empty.
    #[error("message rate exceeded; frame dropped")]
    RateLimited,
    /// Presence could not record the session.
    #[error("cluster backend unavailable; retry")]
    Unavailable(#[source] PresenceError),
    /// A signal could not be delivered.
    #[error(transparent)]
    Route(RouteError),
}

impl SessionError {
    /// The protocol's ERROR code.
    pub(super) fn code(&self) -> ErrorCode {
        match self {
            SessionError::TextMessage => ErrorCode::UnsupportedPayloadType,
            SessionError::TooBig => ErrorCode::BadFrame,
            SessionError::Frame(e) => e.code(),
            SessionError::ServerOnly => ErrorCode::UnknownMessageType,
            SessionError::Payload {
                source: PayloadError::NotStructured,
                ..
            } => ErrorCode::UnsupportedPayloadType,
            SessionError::Payload { .. } => ErrorCode::BadPayload,
            SessionError::InvalidClientId(_) => ErrorCode::BadPayload,
            SessionError::NotAuthenticated => ErrorCode::NotAuthenticated,
            SessionError::ClientIdChanged => ErrorCode::BadPayload,
            SessionError::Auth(e) => e.code(),
            SessionError::RateLimited => ErrorCode::RateLimited,
            SessionError::Unavailable(_) => ErrorCode::Unavailable,
            SessionError::Route(e) => e.code(),
        }
    }

    /// The sentence sent in ERROR.message: short, and never a secret, a
    /// token or an internal address (the presence error's cause is logged,
    /// not sent).
    pub(super) fn sentence(&self) -> Cow<'static, str> {
        match self {
            SessionError::Unavailable(_) => Cow::Borrowed("cluster backend unavailable; retry"),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// The message id the ERROR carries: the frame's, or nil when the
    /// header was unreadable or there was no frame.
    pub(super) fn message_id(&self, frame_id: Uuid) -> Uuid {
        match self {
            SessionError::TextMessage | SessionError::TooBig => Uuid::nil(),
            SessionError::Frame(e) => e.message_id(),
            _ => frame_id,
        }
    }

    /// The close code when this error ends the socket (always before a
    /// successful CONNECT; after it only for text and oversized messages).
    pub(super) fn close_code(&self) -> CloseCode {
        match self {
            SessionError::TextMessage => CloseCode::UNSUPPORTED_DATA,
            SessionError::TooBig => CloseCode::TOO_BIG,
            SessionError::Unavailable(_) => CloseCode::TRY_AGAIN_LATER,
            _ => CloseCode::POLICY,
        }
    }

    /// The ERROR frame answering the frame `frame_id`, in `codec`.
    pub(super) fn frame(&self, codec: Codec, frame_id: Uuid) -> Bytes {
        encode_error(
            codec,
            self.message_id(frame_id),
            self.code(),
            &self.sentence(),
        )
    }

    /// Whether the socket must close even on an authenticated session.
    pub(super) fn ends_session(&self) -> bool {
        matches!(self, SessionError::TextMessage | SessionError::TooBig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_code_and_close() {
        let cases = [
            (
                SessionError::TextMessage,
                ErrorCode::UnsupportedPayloadType,
                1003,
            ),
            (SessionError::TooBig, ErrorCode::BadFrame, 1009),
            (
                SessionError::ServerOnly,
                ErrorCode::UnknownMessageType,
                1008,
            ),
            (
                SessionError::Payload {
                    what: "signal",
                    source: PayloadError::NotStructured,
                },
                ErrorCode::UnsupportedPayloadType,
                1008,
            ),
            (
                SessionError::Payload {
                    what: "signal",
                    source: PayloadError::Field("target_client_id"),
                },
                ErrorCode::BadPayload,
                1008,
            ),
            (
                SessionError::NotAuthenticated,
                ErrorCode::NotAuthenticated,
                1008,
            ),
            (
                SessionError::Auth(AuthError::Expired),
                ErrorCode::TokenExpired,
                1008,
            ),
            (
                SessionError::Route(RouteError::NotFound),
                ErrorCode::PeerNotFound,
                1008,
            ),
        ];
        for (error, code, close) in cases {
            assert_eq!(error.code(), code, "{error}");
            assert_eq!(error.close_code().0, close, "{error}");
            assert!(!error.sentence().is_empty());
        }
        assert_eq!(
            SessionError::TooBig.message_id(Uuid::from_u128(7)),
            Uuid::nil()
        );
        assert_eq!(
            SessionError::RateLimited.message_id(Uuid::from_u128(7)),
            Uuid::from_u128(7)
        );
    }
}
