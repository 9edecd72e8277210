//! Typed messages: a frame whose payload is decoded according to its message
//! type. This is the API client code uses; the server's hot path works on
//! [`Frame`]s and the encode helpers at the bottom of this file.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use uuid::Uuid;

use super::frame::{patch_length, write_header};
use super::{
    Codec, ConnectAckPayload, ConnectPayload, DisconnectPayload, ErrorCode, ErrorPayload, Frame,
    FrameError, MessageType, PayloadError, PayloadType, SignalFields, SignalPayload, WireSignal,
};

/// A free-form payload (HEARTBEAT, HEARTBEAT_ACK, empty DISCONNECT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPayload {
    /// The payload type byte to send it with.
    pub payload_type: PayloadType,
    /// The bytes.
    pub data: Bytes,
}

/// The decoded payload of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// CONNECT.
    Connect(ConnectPayload),
    /// CONNECT_ACK.
    ConnectAck(ConnectAckPayload),
    /// SIGNAL_OFFER.
    SignalOffer(SignalPayload),
    /// SIGNAL_ANSWER.
    SignalAnswer(SignalPayload),
    /// SIGNAL_ICE_CANDIDATE.
    SignalIceCandidate(SignalPayload),
    /// ERROR.
    Error(ErrorPayload),
    /// DISCONNECT with a body.
    Disconnect(DisconnectPayload),
    /// A free-form payload: HEARTBEAT, HEARTBEAT_ACK, or an empty DISCONNECT.
    Raw(RawPayload),
}

impl Payload {
    /// An empty BINARY payload (an empty DISCONNECT, a bare heartbeat).
    pub fn empty() -> Payload {
        Payload::Raw(RawPayload {
            payload_type: PayloadType::Binary,
            data: Bytes::new(),
        })
    }
}

/// One protocol message.
///
/// ```
/// use signal_manager_protocol::{Codec, ConnectPayload, Message, MessageType, Payload};
///
/// let msg = Message::new(
///     MessageType::Connect,
///     Payload::Connect(ConnectPayload {
///         client_id: "alice".into(),
///         auth_token: "test_token_1".into(),
///     }),
/// );
/// let bytes = msg.encode(Codec::Json).unwrap();
/// assert_eq!(Message::decode(bytes).unwrap(), msg);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message type.
    pub message_type: MessageType,
    /// The id chosen by the sender of the frame.
    pub message_id: Uuid,
    /// The decoded payload.
    pub payload: Payload,
    /// On a signal delivered by the server: the authenticated sender.
    /// Ignored by the server when a client sets it.
    pub source_client_id: Option<String>,
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded payload is longer than 65,535 bytes.
    #[error("encoded payload exceeds 65535 bytes")]
    TooLarge,
    /// The payload variant does not belong to the message type.
    #[error("payload does not match message type {0}")]
    Mismatch(&'static str),
}

/// Why bytes are not a valid message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame itself is invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame is valid but its payload is not.
    #[error("message {id}: {error}")]
    Payload {
        /// The frame's message id.
        id: Uuid,
        /// What is wrong with the payload.
        error: PayloadError,
    },
}

impl DecodeError {
    /// The protocol error code that answers this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Frame(e) => e.code(),
            DecodeError::Payload {
                error: PayloadError::NotStructured,
                ..
            } => ErrorCode::UnsupportedPayloadType,
            DecodeError::Payload { .. } => ErrorCode::BadPayload,
        }
    }

    /// The message id the answering ERROR carries.
    pub fn message_id(&self) -> Uuid {
        match self {
            DecodeError::Frame(e) => e.message_id(),
            DecodeError::Payload { id, .. } => *id,
        }
    }
}

/// Decodes a structured payload of a frame, refusing raw payload types.
pub fn decode_structured<T>(frame: &Frame) -> Result<T, PayloadError>
where
    T: serde::de::DeserializeOwned + prost::Message + Default,
{
    Codec::from_payload_type(frame.payload_type)
        .ok_or(PayloadError::NotStructured)?
        .decode(&frame.payload)
}

/// Decodes the payload of a client's SIGNAL_* frame, borrowing its strings
/// from the frame where the codec allows it; refuses raw payload types.
pub fn decode_signal(frame: &Frame) -> Result<SignalFields<'_>, PayloadError> {
    Codec::from_payload_type(frame.payload_type)
        .ok_or(PayloadError::NotStructured)?
        .decode_signal(&frame.payload)
}

impl Message {
    /// A message with a fresh random id.
    pub fn new(message_type: MessageType, payload: Payload) -> Message {
        Message::with_id(message_type, Uuid::new_v4(), payload)
    }

    /// A message with the given id.
    pub fn with_id(message_type: MessageType, message_id: Uuid, payload: Payload) -> Message {
        Message {
            message_type,
            message_id,
            payload,
            source_client_id: None,
        }
    }

    /// Decodes a frame and its payload (direction-agnostic).
    pub fn decode(bytes: Bytes) -> Result<Message, DecodeError> {
        let frame = Frame::decode(bytes)?;
        Message::from_frame(&frame)
    }

    /// Decodes the payload of an already valid frame.
    pub fn from_frame(frame: &Frame) -> Result<Message, DecodeError> {
        let id = frame.message_id;
        let wrap = |error| DecodeError::Payload { id, error };
        let mut source_client_id = None;
        let payload = match frame.message_type {
            MessageType::Connect => Payload::Connect(decode_structured(frame).map_err(wrap)?),
            MessageType::ConnectAck => Payload::ConnectAck(decode_structured(frame).map_err(wrap)?),
            MessageType::Error => Payload::Error(decode_structured(frame).map_err(wrap)?),
            MessageType::SignalOffer
            | MessageType::SignalAnswer
            | MessageType::SignalIceCandidate => {
                let wire: WireSignal = decode_structured(frame).map_err(wrap)?;
                if !wire.source_client_id.is_empty() {
                    source_client_id = Some(wire.source_client_id);
                }
                let signal = SignalPayload {
                    target_client_id: wire.target_client_id,
                    signal_data: wire.signal_data,
                };
                match frame.message_type {
                    MessageType::SignalOffer => Payload::SignalOffer(signal),
                    MessageType::SignalAnswer => Payload::SignalAnswer(signal),
                    _ => Payload::SignalIceCandidate(signal),
                }
            }
            MessageType::Disconnect if frame.payload.is_empty() => Payload::Raw(RawPayload {
                payload_type: frame.payload_type,
                data: Bytes::new(),
            }),
            MessageType::Disconnect => Payload::Disconnect(decode_structured(frame).map_err(wrap)?),
            MessageType::Heartbeat | MessageType::HeartbeatAck => Payload::Raw(RawPayload {
                payload_type: frame.payload_type,
                data: frame.payload.clone(),
            }),
        };
        Ok(Message {
            message_type: frame.message_type,
            message_id: id,
            payload,
            source_client_id,
        })
    }

    /// Encodes the message; structured payloads use `codec`, raw payloads
    /// keep their own payload type.
    pub fn encode(&self, codec: Codec) -> Result<Bytes, EncodeError> {
        let ty = self.message_type;
        let mismatch = || EncodeError::Mismatch(ty.as_str());
        let id = self.message_id;
        match (&self.payload, ty) {
            (Payload::Connect(p), MessageType::Connect) => encode_frame(ty, id, codec, p),
            (Payload::ConnectAck(p), MessageType::ConnectAck) => encode_frame(ty, id, codec, p),
            (Payload::Error(p), MessageType::Error) => encode_frame(ty, id, codec, p),
            (Payload::Disconnect(p), MessageType::Disconnect) => encode_frame(ty, id, codec, p),
            (Payload::SignalOffer(p), MessageType::SignalOffer)
            | (Payload::SignalAnswer(p), MessageType::SignalAnswer)
            | (Payload::SignalIceCandidate(p), MessageType::SignalIceCandidate) => {
                let wire = WireSignal {
                    target_client_id: p.target_client_id.clone(),
                    source_client_id: self.source_client_id.clone().unwrap_or_default(),
                    signal_data: p.signal_data.clone(),
                };
                encode_frame(ty, id, codec, &wire)
            }
            (
                Payload::Raw(raw),
                MessageType::Heartbeat | MessageType::HeartbeatAck | MessageType::Disconnect,
            ) => encode_raw(ty, id, raw.payload_type, &raw.data),
            _ => Err(mismatch()),
        }
    }
}

/// Encodes a frame with a structured payload in one buffer.
pub fn encode_frame<T>(
    message_type: MessageType,
    message_id: Uuid,
    codec: Codec,
    payload: &T,
) -> Result<Bytes, EncodeError>
where
    T: Serialize + prost::Message,
{
    let mut buf = BytesMut::with_capacity(128);
    write_header(&mut buf, message_type, message_id, codec.payload_type(), 0)
        .ok_or(EncodeError::TooLarge)?;
    codec.encode_into(payload, &mut buf);
    patch_length(&mut buf, 0).ok_or(EncodeError::TooLarge)?;
    Ok(buf.freeze())
}

/// Encodes a frame with a raw payload.
pub fn encode_raw(
    message_type: MessageType,
    message_id: Uuid,
    payload_type: PayloadType,
    data: &[u8],
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(super::HEADER_LEN + data.len());
    write_header(&mut buf, message_type, message_id, payload_type, data.len())
        .ok_or(EncodeError::TooLarge)?;
    buf.put_slice(data);
    Ok(buf.freeze())
}

/// Encodes an ERROR frame.
pub fn encode_error(codec: Codec, message_id: Uuid, code: ErrorCode, message: &str) -> Bytes {
    let payload = ErrorPayload {
        code: code.as_str().to_owned(),
        message: message.to_owned(),
    };
    // An error payload is a code and a short sentence: far below the limit.
    encode_frame(MessageType::Error, message_id, codec, &payload).unwrap_or_default()
}

/// Encodes a DISCONNECT frame with a body, under a fresh message id.
pub fn encode_disconnect(codec: Codec, reason: super::DisconnectReason) -> Bytes {
    let payload = DisconnectPayload {
        reason: reason.as_str().to_owned(),
        message: reason.description().to_owned(),
    };
    encode_frame(MessageType::Disconnect, Uuid::new_v4(), codec, &payload).unwrap_or_default()
}

/// A signal as the server delivers it, borrowed from wherever it came from.
#[derive(Serialize)]
struct SignalRef<'a> {
    target_client_id: &'a str,
    source_client_id: &'a str,
    signal_data: &'a str,
}

/// Writes `text` as a JSON string, as serde_json does: verbatim between
/// quotes when nothing in it needs escaping, else escaped by serde_json.
fn put_json_str(buf: &mut BytesMut, text: &str) {
    if needs_json_escape(text.as_bytes()) {
        // Writing a string to memory cannot fail.
        let _ = serde_json::to_writer(buf.writer(), text);
    } else {
        buf.reserve(text.len() + 2);
        buf.put_u8(b'"');
        buf.put_slice(text.as_bytes());
        buf.put_u8(b'"');
    }
}

/// Whether a JSON string of these bytes needs an escape: a quote, a
/// backslash or a control character. Checked 32 bytes at a time without
/// an early exit, so the compiler vectorises it.
fn needs_json_escape(bytes: &[u8]) -> bool {
    let escapes = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | escapes(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| escapes(b))
}

/// Encodes a delivered SIGNAL_* frame (target, stamped source, data) in the
/// receiver's codec without copying the strings into owned structs.
pub fn encode_signal(
    codec: Codec,
    message_type: MessageType,
    message_id: Uuid,
    target: &str,
    source: &str,
    data: &str,
) -> Result<Bytes, EncodeError> {
    let mut buf =
        BytesMut::with_capacity(super::HEADER_LEN + 64 + target.len() + source.len() + data.len());
    write_header(&mut buf, message_type, message_id, codec.payload_type(), 0)
        .ok_or(EncodeError::TooLarge)?;
    let value = SignalRef {
        target_client_id: target,
        source_client_id: source,
        signal_data: data,
    };
    match codec {
        Codec::Json => {
            // The same bytes serde_json writes for `value` (a test holds
            // them equal), without its per-byte escape scan of strings
            // that need no escaping: nearly every signal's.
            buf.put_slice(b"{\"target_client_id\":");
            put_json_str(&mut buf, target);
            buf.put_slice(b",\"source_client_id\":");
            put_json_str(&mut buf, source);
            buf.put_slice(b",\"signal_data\":");
            put_json_str(&mut buf, data);
            buf.put_u8(b'}');
        }
        Codec::Cbor => {
            let _ = ciborium::into_writer(&value, (&mut buf).writer());
        }
        Codec::Protobuf => {
            for (tag, text) in [(1, target), (2, source), (3, data)] {
                if !text.is_empty() {
                    prost::encoding::encode_key(
                        tag,
                        prost::encoding::WireType::LengthDelimited,
                        &mut buf,
                    );
                    prost::encoding::encode_varint(text.len() as u64, &mut buf);
                    buf.put_slice(text.as_bytes());
                }
            }
        }
    }
    patch_length(&mut buf, 0).ok_or(EncodeError::TooLarge)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signal_strategy() -> impl Strategy<Value = Message> {
        (
            0usize..3,
            any::<[u8; 16]>(),
            "[a-z0-9]{1,20}",
            ".{0,200}",
            proptest::option::of("[a-z]{1,10}"),
        )
            .prop_map(|(k, id, target, data, source)| {
                let p = SignalPayload {
                    target_client_id: target,
                    signal_data: data,
                };
                let (ty, payload) = match k {
                    0 => (MessageType::SignalOffer, Payload::SignalOffer(p)),
                    1 => (MessageType::SignalAnswer, Payload::SignalAnswer(p)),
                    _ => (
                        MessageType::SignalIceCandidate,
                        Payload::SignalIceCandidate(p),
                    ),
                };
                let mut m = Message::with_id(ty, Uuid::from_bytes(id), payload);
                m.source_client_id = source;
                m
            })
    }

    proptest! {
        #[test]
        fn json_signals_are_the_bytes_serde_json_writes(
            target in "\\PC{0,40}",
            source in ".{0,40}",
            data in prop_oneof![
                "[ -~]{0,300}",
                "(\\PC|[\u{0}-\u{1f}\"\\\\\u{7f}])*",
                ".{0,100}",
            ],
        ) {
            let frame = encode_signal(
                Codec::Json,
                MessageType::SignalOffer,
                Uuid::nil(),
                &target,
                &source,
                &data,
            )
            .unwrap();
            let expected = serde_json::to_vec(&SignalRef {
                target_client_id: &target,
                source_client_id: &source,
                signal_data: &data,
            })
            .unwrap();
            prop_assert_eq!(&frame[crate::HEADER_LEN..], &expected[..]);
        }

        #[test]
        fn signals_round_trip_in_every_codec(m in signal_strategy()) {
            for codec in Codec::ALL {
                let bytes = m.encode(codec).unwrap();
                prop_assert_eq!(&Message::decode(bytes).unwrap(), &m);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_message_decode(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::decode(Bytes::from(bytes));
        }

        #[test]
        fn valid_headers_with_arbitrary_payloads_never_panic(ty in 0usize..9, pt in 1u8..=5,
                                                             body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let frame = Frame {
                message_type: MessageType::ALL[ty],
                message_id: Uuid::nil(),
                payload_type: PayloadType::from_u8(pt).unwrap(),
                payload: Bytes::from(body),
            };
            let _ = Message::from_frame(&frame);
        }
    }

    #[test]
    fn every_structured_message_round_trips() {
        let msgs = [
            Message::new(
                MessageType::Connect,
                Payload::Connect(ConnectPayload {
                    client_id: "a".into(),
                    auth_token: "t".into(),
                }),
            ),
            Message::new(
                MessageType::ConnectAck,
                Payload::ConnectAck(ConnectAckPayload {
                    session_id: Uuid::new_v4().to_string(),
                    client_id: "a".into(),
                    node_id: "n".into(),
                    heartbeat_interval_ms: 30000,
                    ..ConnectAckPayload::default()
                }),
            ),
            Message::new(
                MessageType::ConnectAck,
                Payload::ConnectAck(ConnectAckPayload {
                    session_id: Uuid::new_v4().to_string(),
                    client_id: "a".into(),
                    node_id: "n".into(),
                    heartbeat_interval_ms: 30000,
                    resume_token: Some("r".into()),
                    resumed: true,
                    ice_servers: vec![
                        crate::IceServer {
                            urls: vec!["stun:s:3478".into()],
                            ..Default::default()
                        },
                        crate::IceServer {
                            urls: vec!["turn:t:3478".into(), "turns:t:5349".into()],
                            username: "1:a".into(),
                            credential: "c".into(),
                        },
                    ],
                }),
            ),
            Message::new(
                MessageType::Error,
                Payload::Error(ErrorPayload {
                    code: "BAD_FRAME".into(),
                    message: "m".into(),
                }),
            ),
            Message::new(
                MessageType::Disconnect,
                Payload::Disconnect(DisconnectPayload {
                    reason: "REPLACED".into(),
                    message: "m".into(),
                }),
            ),
            Message::new(MessageType::Disconnect, Payload::empty()),
            Message::new(
                MessageType::Heartbeat,
                Payload::Raw(RawPayload {
                    payload_type: PayloadType::Text,
                    data: Bytes::from_static(b"hi"),
                }),
            ),
        ];
        for m in msgs {
            for codec in Codec::ALL {
                let bytes = m.encode(codec).unwrap();
                assert_eq!(Message::decode(bytes).unwrap(), m);
            }
        }
    }

    #[test]
    fn raw_payload_for_structured_message_is_unsupported() {
        let frame = Frame {
            message_type: MessageType::Connect,
            message_id: Uuid::nil(),
            payload_type: PayloadType::Text,
            payload: Bytes::from_static(b"hello"),
        };
        assert_eq!(
            Message::from_frame(&frame).unwrap_err().code(),
            ErrorCode::UnsupportedPayloadType
        );
    }

    #[test]
    fn encode_signal_matches_the_owned_encoding() {
        for codec in Codec::ALL {
            let id = Uuid::new_v4();
            let fast = encode_signal(
                codec,
                MessageType::SignalAnswer,
                id,
                "bob",
                "alice",
                "sdp é",
            )
            .unwrap();
            let mut m = Message::with_id(
                MessageType::SignalAnswer,
                id,
                Payload::SignalAnswer(SignalPayload {
                    target_client_id: "bob".into(),
                    signal_data: "sdp é".into(),
                }),
            );
            m.source_client_id = Some("alice".into());
            assert_eq!(fast, m.encode(codec).unwrap(), "{codec:?}");
        }
    }

    #[test]
    fn version_1_1_connect_ack_in_json_is_what_a_browser_takes() {
        let ack = ConnectAckPayload {
            session_id: "s".into(),
            client_id: "a".into(),
            node_id: "n".into(),
            heartbeat_interval_ms: 1,
            resume_token: None,
            resumed: false,
            ice_servers: vec![
                crate::IceServer {
                    urls: vec!["stun:s".into()],
                    ..Default::default()
                },
                crate::IceServer {
                    urls: vec!["turn:t".into()],
                    username: "9:a".into(),
                    credential: "c".into(),
                },
            ],
        };
        let mut buf = BytesMut::new();
        Codec::Json.encode_into(&ack, &mut buf);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"session_id":"s","client_id":"a","node_id":"n","heartbeat_interval_ms":1,"ice_servers":[{"urls":["stun:s"]},{"urls":["turn:t"],"username":"9:a","credential":"c"}]}"#
        );
        // A version 1 CONNECT_ACK (no 1.1 field) still decodes, to defaults.
        let v1: ConnectAckPayload = Codec::Json
            .decode(
                br#"{"session_id":"s","client_id":"a","node_id":"n","heartbeat_interval_ms":1}"#,
            )
            .unwrap();
        assert_eq!(
            (v1.resume_token, v1.resumed, v1.ice_servers.len()),
            (None, false, 0)
        );
    }

    #[test]
    fn mismatched_payload_is_an_encode_error() {
        let m = Message::new(MessageType::Connect, Payload::empty());
        assert!(m.encode(Codec::Json).is_err());
    }

    #[test]
    fn oversized_payload_is_an_encode_error() {
        let m = Message::new(
            MessageType::SignalOffer,
            Payload::SignalOffer(SignalPayload {
                target_client_id: "b".into(),
                signal_data: "x".repeat(70_000),
            }),
        );
        assert_eq!(m.encode(Codec::Json), Err(EncodeError::TooLarge));
    }
}
