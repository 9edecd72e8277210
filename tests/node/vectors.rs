//! The shared test vectors in `crates/signal-manager-protocol/vectors/` (also used by the JS client's
//! tests): the Rust encoder and decoder agree with them byte for byte, and a
//! node answers every invalid vector with its code and message id.

use bytes::Bytes;
use serde_json::Value;
use signal_manager_service::protocol::{Codec, Frame, Message, MessageType, PayloadType};
use uuid::Uuid;

use crate::support::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn load(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/crates/signal-manager-protocol/vectors/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
}

#[test]
fn rust_encoding_matches_every_frame_vector() {
    let vectors = load("frames.json");
    assert!(vectors.len() >= 20);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let bytes = Bytes::from(hex(v["frame_hex"].as_str().unwrap()));
        let message = Message::decode(bytes.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            u64::from(message.message_type.as_u8()),
            v["message_type"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            message.message_id,
            Uuid::parse_str(v["message_id"].as_str().unwrap()).unwrap(),
            "{name}"
        );
        let frame = Frame::decode(bytes.clone()).unwrap();
        assert_eq!(
            u64::from(frame.payload_type.as_u8()),
            v["payload_type"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            frame.payload.to_vec(),
            hex(v["payload_hex"].as_str().unwrap()),
            "{name}"
        );
        let codec = Codec::from_payload_type(frame.payload_type).unwrap_or(Codec::Json);
        let encoded = message.encode(codec).unwrap();
        assert_eq!(
            encoded, bytes,
            "{name}: Rust re-encoding differs from the vector"
        );
        if frame.payload_type == PayloadType::Json && !v["payload"].is_null() {
            let parsed: Value = serde_json::from_slice(&frame.payload).unwrap();
            assert_eq!(parsed, v["payload"], "{name}");
        }
    }
}

#[tokio::test]
async fn a_node_answers_every_invalid_vector_with_its_code() {
    let node = TestNode::start(test_settings()).await;
    for v in load("invalid.json") {
        let name = v["name"].as_str().unwrap();
        let bytes = Bytes::from(hex(v["frame_hex"].as_str().unwrap()));
        let mut c = node.open().await;
        c.send_bytes(bytes).await.unwrap();
        let m = recv_message(&mut c).await;
        assert_eq!(m.message_type, MessageType::Error, "{name}");
        let id = Uuid::parse_str(v["message_id"].as_str().unwrap()).unwrap();
        let code = v["code"].as_str().unwrap();
        assert_error(&m, code, id);
        assert_eq!(recv_close(&mut c).await, Some(1008), "{name}");
    }
}
