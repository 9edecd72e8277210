//! The wire protocol of version 1 (with the optional fields of 1.1): frames, message and payload types, the
//! three structured codecs, and the error and disconnect vocabulary.
//!
//! Everything here is pure: no I/O, no clocks, no global state. Decoding never
//! panics on any byte sequence; it returns a typed error that maps to the
//! protocol's `ERROR` code in one place ([`ErrorCode`]).

mod codec;
mod error;
mod frame;
mod message;
mod payload;

pub use codec::{Codec, PayloadError};
pub use error::{CloseCode, DisconnectReason, ErrorCode};
pub use frame::{
    Frame, FrameError, MessageType, PayloadType, HEADER_LEN, MAX_FRAME_LEN, MAX_PAYLOAD_LEN,
    START_BYTE,
};
pub use message::{
    decode_signal, decode_structured, encode_disconnect, encode_error, encode_frame, encode_raw,
    encode_signal, DecodeError, EncodeError, Message, Payload, RawPayload,
};
pub use payload::{
    is_valid_client_id, ConnectAckPayload, ConnectPayload, DisconnectPayload, ErrorPayload,
    IceServer, SignalFields, SignalPayload, WireConnect, WireSignal, MAX_CLIENT_ID_LEN,
};
