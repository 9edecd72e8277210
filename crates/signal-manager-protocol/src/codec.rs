//! The three structured codecs (JSON, CBOR, protobuf) behind one enum.
//!
//! A payload struct from `payload.rs` is decoded from or encoded to any of
//! them. JSON and CBOR must carry a map/object at the top level; unknown
//! fields are ignored by all three.

use bytes::{BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use super::{PayloadType, SignalFields, WireSignal};

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
                expect_json_object(bytes)?;
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

    /// Decodes a client's SIGNAL_* payload, borrowing its strings from
    /// `bytes` where the codec allows it (JSON). Accepts and refuses what
    /// `decode::<WireSignal>` does. Never panics.
    pub fn decode_signal(self, bytes: &[u8]) -> Result<SignalFields<'_>, PayloadError> {
        match self {
            Codec::Json => {
                expect_json_object(bytes)?;
                serde_json::from_slice(bytes).map_err(|e| PayloadError::Json(e.to_string()))
            }
            Codec::Cbor | Codec::Protobuf => self.decode::<WireSignal>(bytes).map(Into::into),
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

/// JSON payloads are objects at the top level.
fn expect_json_object(bytes: &[u8]) -> Result<(), PayloadError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(PayloadError::Json("expected a JSON object".into())),
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
    use std::borrow::Cow;

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

    /// What `decode_signal` reads, as an owned signal.
    fn signal_fields(codec: Codec, bytes: &[u8]) -> Option<WireSignal> {
        codec.decode_signal(bytes).ok().map(|f| WireSignal {
            target_client_id: f.target_client_id.into_owned(),
            source_client_id: f.source_client_id.into_owned(),
            signal_data: f.signal_data.into_owned(),
        })
    }

    fn owned_signal(codec: Codec, bytes: &[u8]) -> Option<WireSignal> {
        codec.decode::<WireSignal>(bytes).ok()
    }

    #[test]
    fn json_signal_strings_are_borrowed_unless_escaped() {
        let plain = br#"{"target_client_id":"bob","signal_data":"candidate:1 1 udp"}"#;
        let fields = Codec::Json.decode_signal(plain).unwrap();
        assert!(matches!(fields.target_client_id, Cow::Borrowed("bob")));
        assert!(matches!(
            fields.signal_data,
            Cow::Borrowed("candidate:1 1 udp")
        ));
        let escaped = br#"{"target_client_id":"bob","signal_data":"v=0\r\n"}"#;
        let fields = Codec::Json.decode_signal(escaped).unwrap();
        assert_eq!(fields.signal_data, "v=0\r\n");
        assert!(matches!(fields.signal_data, Cow::Owned(_)));
    }

    #[test]
    fn signal_fields_refuse_what_wire_signal_refuses_by_example() {
        for bad in [
            &br#"{"target_client_id":"b","signal_data":"x","source_client_id":5}"#[..],
            br#"{"target_client_id":"b","target_client_id":"c","signal_data":"x"}"#,
            br#"{"target_client_id":"b"}"#,
            br#"{"signal_data":"x"}"#,
            br#"{"target_client_id":null,"signal_data":"x"}"#,
            br#"["b","x"]"#,
            b" \"b\"",
            b"{\"target_client_id\":\"\xff\",\"signal_data\":\"x\"}",
            b"",
        ] {
            assert!(Codec::Json.decode::<WireSignal>(bad).is_err(), "{bad:?}");
            assert!(Codec::Json.decode_signal(bad).is_err(), "{bad:?}");
        }
        let extra =
            br#"{"target_client_id":"b","signal_data":"x","source_client_id":"me","more":[1]}"#;
        assert_eq!(
            signal_fields(Codec::Json, extra),
            owned_signal(Codec::Json, extra)
        );
        assert!(signal_fields(Codec::Json, extra).is_some());
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
                prop_assert_eq!(signal_fields(codec, &bytes), owned_signal(codec, &bytes));
            }
        }

        #[test]
        fn signal_fields_read_what_wire_signal_reads(target in ".{0,40}", source in ".{0,40}", data in ".{0,300}") {
            let s = WireSignal { target_client_id: target, source_client_id: source, signal_data: data };
            for codec in Codec::ALL {
                let mut buf = BytesMut::new();
                codec.encode_into(&s, &mut buf);
                prop_assert_eq!(signal_fields(codec, &buf), Some(s.clone()));
            }
        }

        /// Damaged JSON signals: the borrowed decode accepts and refuses
        /// exactly what the owned one does, and reads the same values.
        #[test]
        fn signal_fields_refuse_what_wire_signal_refuses(
            data in ".{0,60}",
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:0a5 \\tnul".to_vec()),
        ) {
            let mut bytes = serde_json::to_vec(&WireSignal {
                target_client_id: "bob".into(),
                source_client_id: String::new(),
                signal_data: data,
            }).unwrap();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            prop_assert_eq!(signal_fields(Codec::Json, &bytes), owned_signal(Codec::Json, &bytes));
        }
    }
}
