//! The protocol's `ERROR` codes, `DISCONNECT` reasons and WebSocket close
//! codes, each with its wire spelling. Which situation gets which code is
//! decided by the layers that detect it; this file only names them.

use std::fmt;

/// An `ERROR` frame's `code` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Wrong start byte, length mismatch, oversized message.
    BadFrame,
    /// Type byte not in the table, or a server-only type sent by a client.
    UnknownMessageType,
    /// Unknown payload type, a raw type where a structure is required, or a text message.
    UnsupportedPayloadType,
    /// Payload does not decode, required field missing, invalid client id.
    BadPayload,
    /// A message before a successful CONNECT.
    NotAuthenticated,
    /// Token invalid, wrong signature, `sub` ≠ `client_id`.
    AuthFailed,
    /// Token past `exp`.
    TokenExpired,
    /// Target client is not online anywhere.
    PeerNotFound,
    /// The target's node did not take the signal.
    PeerUnreachable,
    /// The client exceeded its message rate.
    RateLimited,
    /// The node is at `server.max_connections`.
    ServerBusy,
    /// The cluster backend is unreachable for a cross-node route.
    Unavailable,
    /// Anything else.
    Internal,
    /// Protocol 1.1: the token's peers claim does not allow that target.
    Forbidden,
}

impl ErrorCode {
    /// Every code, in the order of the protocol's table.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadFrame,
        ErrorCode::UnknownMessageType,
        ErrorCode::UnsupportedPayloadType,
        ErrorCode::BadPayload,
        ErrorCode::NotAuthenticated,
        ErrorCode::AuthFailed,
        ErrorCode::TokenExpired,
        ErrorCode::PeerNotFound,
        ErrorCode::PeerUnreachable,
        ErrorCode::RateLimited,
        ErrorCode::ServerBusy,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::Forbidden,
    ];

    /// The wire spelling, e.g. `PEER_NOT_FOUND`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::UnknownMessageType => "UNKNOWN_MESSAGE_TYPE",
            ErrorCode::UnsupportedPayloadType => "UNSUPPORTED_PAYLOAD_TYPE",
            ErrorCode::BadPayload => "BAD_PAYLOAD",
            ErrorCode::NotAuthenticated => "NOT_AUTHENTICATED",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::PeerNotFound => "PEER_NOT_FOUND",
            ErrorCode::PeerUnreachable => "PEER_UNREACHABLE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ServerBusy => "SERVER_BUSY",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Forbidden => "FORBIDDEN",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `DISCONNECT` frame's `reason` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT.
    ClientLeft,
    /// A newer session for the same client id took over.
    Replaced,
    /// No inbound frame for three heartbeat intervals.
    IdleTimeout,
    /// The token's `exp` passed without a refresh.
    TokenExpired,
    /// The node is shutting down.
    ServerShutdown,
    /// The client's outbound queue overflowed.
    SlowConsumer,
    /// Repeated protocol abuse.
    Policy,
    /// Protocol 1.1: ended from the outside, through the admin API.
    Kicked,
}

impl DisconnectReason {
    /// Every reason.
    pub const ALL: [DisconnectReason; 8] = [
        DisconnectReason::ClientLeft,
        DisconnectReason::Replaced,
        DisconnectReason::IdleTimeout,
        DisconnectReason::TokenExpired,
        DisconnectReason::ServerShutdown,
        DisconnectReason::SlowConsumer,
        DisconnectReason::Policy,
        DisconnectReason::Kicked,
    ];

    /// The wire spelling, e.g. `SERVER_SHUTDOWN`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientLeft => "CLIENT_LEFT",
            DisconnectReason::Replaced => "REPLACED",
            DisconnectReason::IdleTimeout => "IDLE_TIMEOUT",
            DisconnectReason::TokenExpired => "TOKEN_EXPIRED",
            DisconnectReason::ServerShutdown => "SERVER_SHUTDOWN",
            DisconnectReason::SlowConsumer => "SLOW_CONSUMER",
            DisconnectReason::Policy => "POLICY",
            DisconnectReason::Kicked => "KICKED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<DisconnectReason> {
        DisconnectReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The WebSocket close code that follows a DISCONNECT with this reason.
    pub const fn close_code(self) -> CloseCode {
        match self {
            DisconnectReason::ClientLeft
            | DisconnectReason::Replaced
            | DisconnectReason::IdleTimeout
            | DisconnectReason::SlowConsumer => CloseCode::NORMAL,
            DisconnectReason::ServerShutdown => CloseCode::GOING_AWAY,
            DisconnectReason::TokenExpired
            | DisconnectReason::Policy
            | DisconnectReason::Kicked => CloseCode::POLICY,
        }
    }

    /// A short human sentence sent in the DISCONNECT's `message`.
    pub const fn description(self) -> &'static str {
        match self {
            DisconnectReason::ClientLeft => "client left",
            DisconnectReason::Replaced => "a newer session for this client id connected",
            DisconnectReason::IdleTimeout => "no frame received within three heartbeat intervals",
            DisconnectReason::TokenExpired => "the token expired without a refresh",
            DisconnectReason::ServerShutdown => "the node is shutting down; reconnect",
            DisconnectReason::SlowConsumer => "the client did not read fast enough",
            DisconnectReason::Policy => "too many invalid frames",
            DisconnectReason::Kicked => "the session was ended by an operator",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A WebSocket close code (RFC 6455 section 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going away.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1003: a data type the endpoint cannot accept (a text message).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1008: policy violation (auth failures, expiry, abuse).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: message too big.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        for reason in DisconnectReason::ALL {
            assert_eq!(DisconnectReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn close_codes_follow_the_table() {
        assert_eq!(DisconnectReason::ClientLeft.close_code().0, 1000);
        assert_eq!(DisconnectReason::Replaced.close_code().0, 1000);
        assert_eq!(DisconnectReason::IdleTimeout.close_code().0, 1000);
        assert_eq!(DisconnectReason::SlowConsumer.close_code().0, 1000);
        assert_eq!(DisconnectReason::ServerShutdown.close_code().0, 1001);
        assert_eq!(DisconnectReason::TokenExpired.close_code().0, 1008);
        assert_eq!(DisconnectReason::Policy.close_code().0, 1008);
        assert_eq!(DisconnectReason::Kicked.close_code().0, 1008);
    }

    #[test]
    fn version_1_1_spellings() {
        assert_eq!(ErrorCode::Forbidden.as_str(), "FORBIDDEN");
        assert_eq!(DisconnectReason::Kicked.as_str(), "KICKED");
    }
}
