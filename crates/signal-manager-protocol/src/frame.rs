//! The 21-byte frame header: pure encode and decode, no payload semantics.
//!
//! Decoding slices the input [`Bytes`] (no copy) and checks, in this order:
//! header length, start byte, exact length, message type, payload type. The
//! first failure is returned as a [`FrameError`] that carries the message id
//! whenever the header was readable.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::ErrorCode;

/// First byte of every frame.
pub const START_BYTE: u8 = 0xA5;
/// Size of the frame header.
pub const HEADER_LEN: usize = 21;
/// Largest payload a frame can declare.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;
/// Largest valid frame, header included.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;

/// The frame's message type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// 0x01, client → server.
    Connect = 0x01,
    /// 0x02, server → client.
    ConnectAck = 0x02,
    /// 0x03, both directions.
    Disconnect = 0x03,
    /// 0x04, client → server.
    Heartbeat = 0x04,
    /// 0x05, server → client.
    HeartbeatAck = 0x05,
    /// 0x10, both directions.
    SignalOffer = 0x10,
    /// 0x11, both directions.
    SignalAnswer = 0x11,
    /// 0x12, both directions.
    SignalIceCandidate = 0x12,
    /// 0xFF, server → client.
    Error = 0xFF,
}

impl MessageType {
    /// Every message type, in the order of the protocol's table.
    pub const ALL: [MessageType; 9] = [
        MessageType::Connect,
        MessageType::ConnectAck,
        MessageType::Disconnect,
        MessageType::Heartbeat,
        MessageType::HeartbeatAck,
        MessageType::SignalOffer,
        MessageType::SignalAnswer,
        MessageType::SignalIceCandidate,
        MessageType::Error,
    ];

    /// The type for a wire byte, if the table has it.
    pub const fn from_u8(byte: u8) -> Option<MessageType> {
        Some(match byte {
            0x01 => MessageType::Connect,
            0x02 => MessageType::ConnectAck,
            0x03 => MessageType::Disconnect,
            0x04 => MessageType::Heartbeat,
            0x05 => MessageType::HeartbeatAck,
            0x10 => MessageType::SignalOffer,
            0x11 => MessageType::SignalAnswer,
            0x12 => MessageType::SignalIceCandidate,
            0xFF => MessageType::Error,
            _ => return None,
        })
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The protocol's name, e.g. `SIGNAL_OFFER`; also the metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::Connect => "CONNECT",
            MessageType::ConnectAck => "CONNECT_ACK",
            MessageType::Disconnect => "DISCONNECT",
            MessageType::Heartbeat => "HEARTBEAT",
            MessageType::HeartbeatAck => "HEARTBEAT_ACK",
            MessageType::SignalOffer => "SIGNAL_OFFER",
            MessageType::SignalAnswer => "SIGNAL_ANSWER",
            MessageType::SignalIceCandidate => "SIGNAL_ICE_CANDIDATE",
            MessageType::Error => "ERROR",
        }
    }

    /// Whether a client may send this type (server-only types are not).
    pub const fn is_client_sendable(self) -> bool {
        !matches!(
            self,
            MessageType::ConnectAck | MessageType::HeartbeatAck | MessageType::Error
        )
    }

    /// Whether this is one of the three SIGNAL types.
    pub const fn is_signal(self) -> bool {
        matches!(
            self,
            MessageType::SignalOffer | MessageType::SignalAnswer | MessageType::SignalIceCandidate
        )
    }

    /// A dense index in `0..9`, for per-type metric handles.
    pub const fn index(self) -> usize {
        match self {
            MessageType::Connect => 0,
            MessageType::ConnectAck => 1,
            MessageType::Disconnect => 2,
            MessageType::Heartbeat => 3,
            MessageType::HeartbeatAck => 4,
            MessageType::SignalOffer => 5,
            MessageType::SignalAnswer => 6,
            MessageType::SignalIceCandidate => 7,
            MessageType::Error => 8,
        }
    }
}

/// The frame's payload type byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadType {
    /// 0x01: raw bytes (free-form payloads only).
    Binary = 0x01,
    /// 0x02: a UTF-8 JSON object.
    Json = 0x02,
    /// 0x03: UTF-8 text (free-form payloads only).
    Text = 0x03,
    /// 0x04: a proto3 message of package `signal_manager.v1`.
    Protobuf = 0x04,
    /// 0x05: a CBOR map with the JSON field names.
    Cbor = 0x05,
}

impl PayloadType {
    /// The type for a wire byte, if the table has it.
    pub const fn from_u8(byte: u8) -> Option<PayloadType> {
        Some(match byte {
            0x01 => PayloadType::Binary,
            0x02 => PayloadType::Json,
            0x03 => PayloadType::Text,
            0x04 => PayloadType::Protobuf,
            0x05 => PayloadType::Cbor,
            _ => return None,
        })
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether this type carries a structure (JSON, CBOR, protobuf).
    pub const fn is_structured(self) -> bool {
        matches!(
            self,
            PayloadType::Json | PayloadType::Protobuf | PayloadType::Cbor
        )
    }
}

/// A frame whose header is valid; the payload is not interpreted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message type.
    pub message_type: MessageType,
    /// The message id chosen by the frame's sender.
    pub message_id: Uuid,
    /// How the payload is encoded.
    pub payload_type: PayloadType,
    /// The payload bytes (a slice of the received message, not a copy).
    pub payload: Bytes,
}

/// Why a byte sequence is not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than 21 bytes: the header is unreadable.
    #[error("frame has {0} bytes, fewer than the 21-byte header")]
    TooShort(usize),
    /// More than 65,556 bytes.
    #[error("message of {0} bytes exceeds the largest frame of 65556 bytes")]
    Oversized(usize),
    /// The first byte is not 0xA5.
    #[error("start byte is {found:#04x}, expected 0xa5")]
    BadStartByte {
        /// The id from the header.
        id: Uuid,
        /// The byte found.
        found: u8,
    },
    /// The message is not exactly `21 + N` bytes.
    #[error("payload length field says {declared} bytes but {actual} follow the header")]
    LengthMismatch {
        /// The id from the header.
        id: Uuid,
        /// N from the header.
        declared: usize,
        /// Bytes after the header.
        actual: usize,
    },
    /// The message type byte is not in the table.
    #[error("unknown message type {code:#04x}")]
    UnknownMessageType {
        /// The id from the header.
        id: Uuid,
        /// The type byte.
        code: u8,
    },
    /// The payload type byte is not in the table.
    #[error("unknown payload type {code:#04x}")]
    UnsupportedPayloadType {
        /// The id from the header.
        id: Uuid,
        /// The payload type byte.
        code: u8,
    },
}

impl FrameError {
    /// The protocol error code that answers this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooShort(_)
            | FrameError::Oversized(_)
            | FrameError::BadStartByte { .. }
            | FrameError::LengthMismatch { .. } => ErrorCode::BadFrame,
            FrameError::UnknownMessageType { .. } => ErrorCode::UnknownMessageType,
            FrameError::UnsupportedPayloadType { .. } => ErrorCode::UnsupportedPayloadType,
        }
    }

    /// The message id the ERROR carries: the header's, or nil when unreadable.
    pub fn message_id(&self) -> Uuid {
        match self {
            FrameError::TooShort(_) | FrameError::Oversized(_) => Uuid::nil(),
            FrameError::BadStartByte { id, .. }
            | FrameError::LengthMismatch { id, .. }
            | FrameError::UnknownMessageType { id, .. }
            | FrameError::UnsupportedPayloadType { id, .. } => *id,
        }
    }
}

impl Frame {
    /// Decodes one WebSocket binary message into a frame. Never panics.
    pub fn decode(bytes: Bytes) -> Result<Frame, FrameError> {
        let len = bytes.len();
        if len < HEADER_LEN {
            return Err(FrameError::TooShort(len));
        }
        if len > MAX_FRAME_LEN {
            return Err(FrameError::Oversized(len));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[2..18]);
        let id = Uuid::from_bytes(id);
        if bytes[0] != START_BYTE {
            return Err(FrameError::BadStartByte {
                id,
                found: bytes[0],
            });
        }
        let declared = usize::from(u16::from_be_bytes([bytes[19], bytes[20]]));
        let actual = len - HEADER_LEN;
        if declared != actual {
            return Err(FrameError::LengthMismatch {
                id,
                declared,
                actual,
            });
        }
        let message_type = MessageType::from_u8(bytes[1])
            .ok_or(FrameError::UnknownMessageType { id, code: bytes[1] })?;
        let payload_type =
            PayloadType::from_u8(bytes[18]).ok_or(FrameError::UnsupportedPayloadType {
                id,
                code: bytes[18],
            })?;
        Ok(Frame {
            message_type,
            message_id: id,
            payload_type,
            payload: bytes.slice(HEADER_LEN..),
        })
    }

    /// Encodes this frame. The payload must fit in 65,535 bytes.
    pub fn encode(&self) -> Option<Bytes> {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + self.payload.len());
        write_header(
            &mut buf,
            self.message_type,
            self.message_id,
            self.payload_type,
            self.payload.len(),
        )?;
        buf.put_slice(&self.payload);
        Some(buf.freeze())
    }
}

/// Writes a header for a payload of `payload_len` bytes; `None` when the
/// payload is too long for a frame.
pub(crate) fn write_header(
    buf: &mut BytesMut,
    message_type: MessageType,
    message_id: Uuid,
    payload_type: PayloadType,
    payload_len: usize,
) -> Option<()> {
    let len = u16::try_from(payload_len).ok()?;
    buf.reserve(HEADER_LEN);
    buf.put_u8(START_BYTE);
    buf.put_u8(message_type.as_u8());
    buf.put_slice(message_id.as_bytes());
    buf.put_u8(payload_type.as_u8());
    buf.put_u16(len);
    Some(())
}

/// Patches the length field of a header written at `start` with a
/// placeholder; `None` when the payload grew past 65,535 bytes.
pub(crate) fn patch_length(buf: &mut BytesMut, start: usize) -> Option<()> {
    let payload_len = buf.len().checked_sub(start + HEADER_LEN)?;
    let len = u16::try_from(payload_len).ok()?;
    buf[start + 19..start + 21].copy_from_slice(&len.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_bytes(ty: u8, pt: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![START_BYTE, ty];
        v.extend_from_slice(&[7u8; 16]);
        v.push(pt);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_valid_frame() {
        let f = Frame::decode(Bytes::from(frame_bytes(0x10, 0x02, b"{}"))).unwrap();
        assert_eq!(f.message_type, MessageType::SignalOffer);
        assert_eq!(f.payload_type, PayloadType::Json);
        assert_eq!(f.message_id, Uuid::from_bytes([7; 16]));
        assert_eq!(&f.payload[..], b"{}");
    }

    #[test]
    fn each_malformed_case_maps_to_its_code() {
        let short = Frame::decode(Bytes::from_static(&[0xA5, 1, 2])).unwrap_err();
        assert_eq!(short.code(), ErrorCode::BadFrame);
        assert_eq!(short.message_id(), Uuid::nil());

        let mut bad_start = frame_bytes(0x01, 0x02, b"{}");
        bad_start[0] = 0x5A;
        let e = Frame::decode(Bytes::from(bad_start)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadFrame);
        assert_eq!(e.message_id(), Uuid::from_bytes([7; 16]));

        let mut mismatch = frame_bytes(0x01, 0x02, b"{}");
        mismatch.push(0);
        let e = Frame::decode(Bytes::from(mismatch)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadFrame);

        let e = Frame::decode(Bytes::from(frame_bytes(0x7E, 0x02, b""))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownMessageType);
        assert_eq!(e.message_id(), Uuid::from_bytes([7; 16]));

        let e = Frame::decode(Bytes::from(frame_bytes(0x01, 0x09, b""))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedPayloadType);

        let e = Frame::decode(Bytes::from(vec![0u8; MAX_FRAME_LEN + 1])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadFrame);
        assert_eq!(e.message_id(), Uuid::nil());
    }

    #[test]
    fn largest_frame_is_accepted() {
        let payload = vec![b'x'; MAX_PAYLOAD_LEN];
        let f = Frame::decode(Bytes::from(frame_bytes(0x04, 0x01, &payload))).unwrap();
        assert_eq!(f.payload.len(), MAX_PAYLOAD_LEN);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(Bytes::from(bytes));
        }

        #[test]
        fn arbitrary_headers_never_panic(ty in any::<u8>(), pt in any::<u8>(), len in any::<u16>(),
                                         body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut v = vec![START_BYTE, ty];
            v.extend_from_slice(&[1u8; 16]);
            v.push(pt);
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&body);
            let _ = Frame::decode(Bytes::from(v));
        }

        #[test]
        fn encode_then_decode_is_identity(idx in 0usize..9, pt in 1u8..=5, id in any::<[u8; 16]>(),
                                          payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let frame = Frame {
                message_type: MessageType::ALL[idx],
                message_id: Uuid::from_bytes(id),
                payload_type: PayloadType::from_u8(pt).unwrap(),
                payload: Bytes::from(payload),
            };
            let bytes = frame.encode().unwrap();
            prop_assert_eq!(Frame::decode(bytes).unwrap(), frame);
        }
    }
}
