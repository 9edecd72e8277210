//! The structured payloads, one struct per protocol message. Each derives both
//! serde (for JSON and CBOR, with the wire field names) and prost (for
//! protobuf, with the tags of `proto/signal_manager/v1/signal_manager.proto`),
//! so one definition serves all three codecs.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest valid client id, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Whether `id` is 1 to 128 bytes of `[A-Za-z0-9._:@-]`.
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// CONNECT: a client authenticates as `client_id` with `auth_token`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
#[prost(skip_debug)]
pub struct ConnectPayload {
    /// The id the client wants to be reachable as.
    #[prost(string, tag = "1")]
    pub client_id: String,
    /// A JWT (or a development token).
    #[prost(string, tag = "2")]
    pub auth_token: String,
}

impl fmt::Debug for ConnectPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("ConnectPayload")
            .field("client_id", &self.client_id)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

/// The `Connect` message as it travels on the wire, with protocol 1.1's
/// optional `resume_token` ([`ConnectPayload`] keeps the two fields of
/// version 1, so code that builds it keeps compiling). A client resuming a
/// session encodes this; the server decodes every CONNECT as this.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
#[prost(skip_debug)]
pub struct WireConnect {
    /// The id the client wants to be reachable as.
    #[prost(string, tag = "1")]
    pub client_id: String,
    /// A JWT (or a development token).
    #[prost(string, tag = "2")]
    pub auth_token: String,
    /// The `resume_token` of an earlier CONNECT_ACK, to resume that
    /// session; absent (`None`) from version 1 clients.
    #[prost(string, optional, tag = "3")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
}

impl fmt::Debug for WireConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Both tokens are credentials: never print them.
        f.debug_struct("WireConnect")
            .field("client_id", &self.client_id)
            .field("auth_token", &"<redacted>")
            .field(
                "resume_token",
                &self.resume_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// CONNECT_ACK: the session is established.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
#[prost(skip_debug)]
pub struct ConnectAckPayload {
    /// The session's id; stays the same across token refreshes.
    #[prost(string, tag = "1")]
    pub session_id: String,
    /// The authenticated client id.
    #[prost(string, tag = "2")]
    pub client_id: String,
    /// The node holding the session.
    #[prost(string, tag = "3")]
    pub node_id: String,
    /// How often the client must send HEARTBEAT.
    #[prost(uint32, tag = "4")]
    pub heartbeat_interval_ms: u32,
    /// Protocol 1.1: the secret that resumes this session; `None` while the
    /// node does not offer resume.
    #[prost(string, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<String>,
    /// Protocol 1.1: whether this CONNECT_ACK resumed an earlier session.
    /// Left out of JSON and CBOR when false, as proto3 leaves it out.
    #[prost(bool, tag = "6")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub resumed: bool,
    /// Protocol 1.1: STUN and TURN servers for `RTCPeerConnection`; empty
    /// (and left out) when the node has none configured.
    #[prost(message, repeated, tag = "7")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
}

impl fmt::Debug for ConnectAckPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The resume token is a credential: never print it.
        f.debug_struct("ConnectAckPayload")
            .field("session_id", &self.session_id)
            .field("client_id", &self.client_id)
            .field("node_id", &self.node_id)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field(
                "resume_token",
                &self.resume_token.as_ref().map(|_| "<redacted>"),
            )
            .field("resumed", &self.resumed)
            .field("ice_servers", &self.ice_servers)
            .finish()
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// One entry of CONNECT_ACK's `ice_servers`, shaped like WebRTC's
/// `RTCIceServer` so a browser can use the list as it is. STUN entries have
/// no credentials (the fields are left out of JSON and CBOR).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
#[prost(skip_debug)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    #[prost(string, repeated, tag = "1")]
    #[serde(default)]
    pub urls: Vec<String>,
    /// TURN username (`<expiry>:<client_id>`); empty for STUN.
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// TURN credential; empty for STUN.
    #[prost(string, tag = "3")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credential is short-lived, but still a credential.
        let credential = if self.credential.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &credential)
            .finish()
    }
}

/// SIGNAL_OFFER / SIGNAL_ANSWER / SIGNAL_ICE_CANDIDATE as a client sends it.
///
/// The receiver additionally learns the sender, see [`Message::source_client_id`](super::Message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalPayload {
    /// The peer the signal is for.
    pub target_client_id: String,
    /// Opaque signaling data (SDP, ICE candidate), may be empty.
    pub signal_data: String,
}

/// The `Signal` message as it travels on the wire, with the optional source.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
pub struct WireSignal {
    /// The peer the signal is for.
    #[prost(string, tag = "1")]
    pub target_client_id: String,
    /// The sender, stamped by the server; ignored when a client sends it.
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_client_id: String,
    /// Opaque signaling data.
    #[prost(string, tag = "3")]
    pub signal_data: String,
}

/// A [`WireSignal`] as a server reads it from a client: the strings
/// borrowed from the frame where the codec allows it (JSON strings without
/// escapes, nearly every signal's), owned otherwise. It accepts exactly what
/// [`WireSignal`] accepts (a test holds the two equal).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SignalFields<'a> {
    /// See [`WireSignal::target_client_id`].
    #[serde(borrow)]
    pub target_client_id: Cow<'a, str>,
    /// See [`WireSignal::source_client_id`] (ignored from a client, but
    /// still type-checked).
    #[serde(borrow, default)]
    pub source_client_id: Cow<'a, str>,
    /// See [`WireSignal::signal_data`].
    #[serde(borrow)]
    pub signal_data: Cow<'a, str>,
}

impl From<WireSignal> for SignalFields<'_> {
    fn from(wire: WireSignal) -> Self {
        SignalFields {
            target_client_id: Cow::Owned(wire.target_client_id),
            source_client_id: Cow::Owned(wire.source_client_id),
            signal_data: Cow::Owned(wire.signal_data),
        }
    }
}

/// ERROR: a failure, answering the frame whose id it carries.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
pub struct ErrorPayload {
    /// One of the protocol's error codes.
    #[prost(string, tag = "1")]
    pub code: String,
    /// A short human sentence.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// DISCONNECT: why the session ends. A client may leave both fields out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, prost::Message)]
pub struct DisconnectPayload {
    /// One of the protocol's disconnect reasons.
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub reason: String,
    /// A short human sentence.
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_rules() {
        assert!(is_valid_client_id("alice"));
        assert!(is_valid_client_id("a.b_c:d@e-f9"));
        assert!(is_valid_client_id(&"x".repeat(128)));
        assert!(!is_valid_client_id(&"x".repeat(129)));
        assert!(!is_valid_client_id(""));
        assert!(!is_valid_client_id("with space"));
        assert!(!is_valid_client_id("é"));
        assert!(!is_valid_client_id("a/b"));
    }

    #[test]
    fn connect_debug_hides_the_token() {
        let p = ConnectPayload {
            client_id: "alice".into(),
            auth_token: "sekrit".into(),
        };
        assert!(!format!("{p:?}").contains("sekrit"));
        let w = WireConnect {
            client_id: "alice".into(),
            auth_token: "sekrit".into(),
            resume_token: Some("resumesekrit".into()),
        };
        assert!(!format!("{w:?}").contains("sekrit"));
        let ack = ConnectAckPayload {
            resume_token: Some("resumesekrit".into()),
            ice_servers: vec![IceServer {
                urls: vec!["turn:t".into()],
                username: "1:alice".into(),
                credential: "credsekrit".into(),
            }],
            ..ConnectAckPayload::default()
        };
        assert!(!format!("{ack:?}").contains("sekrit"));
    }
}

#[cfg(test)]
mod proto_file {
    //! The shipped `.proto` file and the prost structs describe the same
    //! messages: same names, same field names, same numbers.

    use std::collections::BTreeMap;

    fn parse(text: &str) -> BTreeMap<String, Vec<(String, u32)>> {
        let mut messages = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("message ") {
                current = rest.split_whitespace().next().map(str::to_owned);
                messages.insert(current.clone().unwrap_or_default(), Vec::new());
            } else if line.starts_with('}') {
                current = None;
            } else if let (Some(name), Some((decl, number))) = (&current, line.split_once('=')) {
                let field = decl
                    .split_whitespace()
                    .last()
                    .unwrap_or_default()
                    .to_owned();
                let number = number.trim().trim_end_matches(';').trim().parse().unwrap();
                messages.get_mut(name).unwrap().push((field, number));
            }
        }
        messages
    }

    #[test]
    fn proto_file_matches_the_structs() {
        let text = include_str!("../proto/signal_manager/v1/signal_manager.proto");
        let f = |pairs: &[(&str, u32)]| {
            pairs
                .iter()
                .map(|(n, t)| ((*n).to_owned(), *t))
                .collect::<Vec<_>>()
        };
        let expected: BTreeMap<String, Vec<(String, u32)>> = [
            (
                "Connect",
                f(&[("client_id", 1), ("auth_token", 2), ("resume_token", 3)]),
            ),
            (
                "ConnectAck",
                f(&[
                    ("session_id", 1),
                    ("client_id", 2),
                    ("node_id", 3),
                    ("heartbeat_interval_ms", 4),
                    ("resume_token", 5),
                    ("resumed", 6),
                    ("ice_servers", 7),
                ]),
            ),
            (
                "IceServer",
                f(&[("urls", 1), ("username", 2), ("credential", 3)]),
            ),
            (
                "Signal",
                f(&[
                    ("target_client_id", 1),
                    ("source_client_id", 2),
                    ("signal_data", 3),
                ]),
            ),
            ("Error", f(&[("code", 1), ("message", 2)])),
            ("Disconnect", f(&[("reason", 1), ("message", 2)])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(parse(text), expected);
        // And the structs encode those numbers: tag byte = number << 3 | 2.
        use prost::Message;
        let ack = super::ConnectAckPayload {
            session_id: "s".into(),
            client_id: "c".into(),
            node_id: "n".into(),
            heartbeat_interval_ms: 1,
            ..Default::default()
        };
        let bytes = ack.encode_to_vec();
        assert_eq!(
            bytes,
            [0x0A, 1, b's', 0x12, 1, b'c', 0x1A, 1, b'n', 0x20, 1]
        );
        // The 1.1 fields: 5 (string), 6 (varint), 7 (message) holding 1, 2, 3.
        let ack = super::ConnectAckPayload {
            resume_token: Some("r".into()),
            resumed: true,
            ice_servers: vec![super::IceServer {
                urls: vec!["u".into()],
                username: "n".into(),
                credential: "c".into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            ack.encode_to_vec(),
            [0x2A, 1, b'r', 0x30, 1, 0x3A, 9, 0x0A, 1, b'u', 0x12, 1, b'n', 0x1A, 1, b'c']
        );
        let connect = super::WireConnect {
            client_id: "a".into(),
            auth_token: "t".into(),
            resume_token: Some("r".into()),
        };
        assert_eq!(
            connect.encode_to_vec(),
            [0x0A, 1, b'a', 0x12, 1, b't', 0x1A, 1, b'r']
        );
    }
}
