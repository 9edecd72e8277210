//! The three structured codecs (JSON, CBOR, protobuf) behind one enum.
//!
//! A payload struct from `payload.rs` is decoded from or encoded to any of
//! them. JSON and CBOR must carry a map/object at the top level; unknown
//! fields are ignored by all three.

use bytes::{BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use super::PayloadType;

/// A structured payload encoding; a session's codec is the one of its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub enum Codec {
    /// Payload type 0x02.
    Json,
    /// Payload type 0x05.
    Cbor,
    /// Payload type 0x04.
    Protobuf,
}

/// Why a structured payload does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not a JSON object, not valid JSON, wrong field type, missing field.
    #[error("invalid JSON payload: {0}")]
    Json(String),
    /// Not a CBOR map, not valid CBOR, wrong field type, missing field.
    #[error("invalid CBOR payload: {0}")]
    Cbor(String),
    /// Not a valid protobuf message (including invalid UTF-8 in a string).
    #[error("invalid protobuf payload: {0}")]
    Protobuf(String),
    /// The payload decoded but a field value is not allowed.
    #[error("invalid {0}")]
    Field(&'static str),
    /// A raw payload type (BINARY, TEXT) where a structure is required.
    #[error("a structured payload (JSON, CBOR or protobuf) is required")]
    NotStructured,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 3] = [Codec::Json, Codec::Cbor, Codec::Protobuf];

    /// The codec of a structured payload type; `None` for BINARY and TEXT.
    pub const fn from_payload_type(pt: PayloadType) -> Option<Codec> {
        match pt {
            PayloadType::Json => Some(Codec::Json),
            PayloadType::Cbor => Some(Codec::Cbor),
            PayloadType::Protobuf => Some(Codec::Protobuf),
            PayloadType::Binary | PayloadType::Text => None,
        }
    }

    /// The payload type byte this codec writes.
    pub const fn payload_type(self) -> PayloadType {
        match self {
            Codec::Json => PayloadType::Json,
            Codec::Cbor => PayloadType::Cbor,
            Codec::Protobuf => PayloadType::Protobuf,
        }
    }

    /// Lower-case name, for logs, metrics and span attributes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Cbor => "cbor",
            Codec::Protobuf => "protobuf",
        }
    }

    /// Decodes a payload struct. Never panics.
    pub fn decode<T>(self, bytes: &[u8]) -> Result<T, PayloadError>
    where
        T: DeserializeOwned + prost::Message + Default,
    {
        match self {
            Codec::Json => {
                let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
                if first != Some(&b'{') {
                    return Err(PayloadError::Json("expected a JSON object".into()));
                }
                serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))
            }
            Codec::Cbor => {
                // Major type 5 (map) is 0xA0..=0xBF in the initial byte.
                if !matches!(bytes.first(), Some(0xA0..=0xBF)) {
                    return Err(PayloadError::Cbor("expected a CBOR map".into()));
                }
                ciborium::from_reader(bytes).map_err(|e| PayloadError::Cbor(cbor_reason(&e)))
            }
            Codec::Protobuf => T::decode(bytes).map_err(|e| PayloadError::Protobuf(e.to_string())),
        }
    }

    /// Appends the encoding of `value` to `buf`.
    pub fn encode_into<T>(self, value: &T, buf: &mut BytesMut)
    where
        T: Serialize + prost::Message,
    {
        match self {
            Codec::Json => {
                // Writing plain structs of strings and integers to memory
                // cannot fail; a failure would leave a short payload that the
                // receiver reports, never a panic here.
                let _ = serde_json::to_writer(buf.writer(), value);
            }
            Codec::Cbor => {
                let _ = ciborium::into_writer(value, buf.writer());
            }
            Codec::Protobuf => value.encode_raw(buf),
        }
    }
}

fn cbor_reason<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    match e {
        ciborium::de::Error::Semantic(_, msg) => msg.clone(),
        ciborium::de::Error::Syntax(offset) => format!("syntax error at byte {offset}"),
        ciborium::de::Error::Io(_) => "truncated CBOR".into(),
        ciborium::de::Error::RecursionLimitExceeded => "nesting too deep".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectPayload, WireSignal};
    use proptest::prelude::*;

    fn round_trip<T>(codec: Codec, value: &T) -> T
    where
        T: Serialize + DeserializeOwned + prost::Message + Default,
    {
        let mut buf = BytesMut::new();
        codec.encode_into(value, &mut buf);
        codec.decode(&buf).unwrap()
    }

    #[test]
    fn json_matches_the_documented_field_order() {
        let mut buf = BytesMut::new();
        Codec::Json.encode_into(
            &WireSignal {
                target_client_id: "bob".into(),
                source_client_id: "alice".into(),
                signal_data: "x".into(),
            },
            &mut buf,
        );
        assert_eq!(
            &buf[..],
            br#"{"target_client_id":"bob","source_client_id":"alice","signal_data":"x"}"#
        );
    }

    #[test]
    fn missing_fields_and_wrong_types_are_rejected() {
        for bad in [
            &br#"{"client_id":"a"}"#[..],
            br#"{"client_id":5,"auth_token":"t"}"#,
            br#"["a","b"]"#,
            b"not json",
            b"",
            b"{\"client_id\":\"\xff\",\"auth_token\":\"t\"}",
        ] {
            assert!(
                Codec::Json.decode::<ConnectPayload>(bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(Codec::Cbor.decode::<ConnectPayload>(&[0x80]).is_err());
        assert!(Codec::Protobuf
            .decode::<ConnectPayload>(&[0x0A, 0x02, 0xFF, 0xFE])
            .is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let p: ConnectPayload = Codec::Json
            .decode(br#"{"client_id":"a","auth_token":"t","extra":[1,2]}"#)
            .unwrap();
        assert_eq!(p.client_id, "a");
    }

    proptest! {
        #[test]
        fn every_codec_round_trips(target in ".{0,40}", source in ".{0,40}", data in ".{0,300}") {
            let s = WireSignal { target_client_id: target, source_client_id: source, signal_data: data };
            for codec in Codec::ALL {
                prop_assert_eq!(&round_trip(codec, &s), &s);
            }
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for codec in Codec::ALL {
                let _ = codec.decode::<WireSignal>(&bytes);
                let _ = codec.decode::<ConnectPayload>(&bytes);
            }
        }
    }
}
