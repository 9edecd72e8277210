//! Every ERROR code where the protocol says, with the right message id and
//! close code, before and after authentication.

use std::time::Duration;

use bytes::Bytes;
use signal_manager_client::Incoming;
use signal_manager_service::protocol::{Codec, Message, MessageType, Payload};
use uuid::Uuid;

use crate::support::*;
use crate::*;

async fn expect_refusal(node: &TestNode, bytes: Bytes, code: &str, id: Uuid, close: u16) {
    let mut c = node.open().await;
    c.send_bytes(bytes).await.unwrap();
    let m = recv_message(&mut c).await;
    assert_error(&m, code, id);
    assert_eq!(
        recv_close(&mut c).await,
        Some(close),
        "close code for {code}"
    );
}

#[tokio::test]
async fn invalid_frames_before_connect_get_their_code_then_1008() {
    let node = TestNode::start(test_settings()).await;
    let id = Uuid::new_v4();
    expect_refusal(
        &node,
        Bytes::from_static(&[0xA5, 0x01, 0x02]),
        "BAD_FRAME",
        Uuid::nil(),
        1008,
    )
    .await;
    let mut wrong_start = raw_frame(0x01, id, 0x02, b"{}").to_vec();
    wrong_start[0] = 0x00;
    expect_refusal(&node, Bytes::from(wrong_start), "BAD_FRAME", id, 1008).await;
    let mut long = raw_frame(0x01, id, 0x02, b"{}").to_vec();
    long.push(b'x');
    expect_refusal(&node, Bytes::from(long), "BAD_FRAME", id, 1008).await;
    expect_refusal(
        &node,
        raw_frame(0x7E, id, 0x02, b"{}"),
        "UNKNOWN_MESSAGE_TYPE",
        id,
        1008,
    )
    .await;
    expect_refusal(
        &node,
        raw_frame(0x02, id, 0x02, b"{}"),
        "UNKNOWN_MESSAGE_TYPE",
        id,
        1008,
    )
    .await;
    expect_refusal(
        &node,
        raw_frame(0x01, id, 0x09, b"{}"),
        "UNSUPPORTED_PAYLOAD_TYPE",
        id,
        1008,
    )
    .await;
    expect_refusal(
        &node,
        raw_frame(0x01, id, 0x03, b"hello"),
        "UNSUPPORTED_PAYLOAD_TYPE",
        id,
        1008,
    )
    .await;
    expect_refusal(
        &node,
        raw_frame(0x01, id, 0x02, b"{\"client_id\":\"a\"}"),
        "BAD_PAYLOAD",
        id,
        1008,
    )
    .await;
    expect_refusal(
        &node,
        raw_frame(0x01, id, 0x02, b"not json"),
        "BAD_PAYLOAD",
        id,
        1008,
    )
    .await;
    let bad_id = br#"{"client_id":"has space","auth_token":"t"}"#;
    expect_refusal(
        &node,
        raw_frame(0x01, id, 0x02, bad_id),
        "BAD_PAYLOAD",
        id,
        1008,
    )
    .await;
    let long_id = format!(r#"{{"client_id":"{}","auth_token":"t"}}"#, "x".repeat(129));
    expect_refusal(
        &node,
        raw_frame(0x01, id, 0x02, long_id.as_bytes()),
        "BAD_PAYLOAD",
        id,
        1008,
    )
    .await;
    // A bad signal payload before CONNECT is reported as such, not as NOT_AUTHENTICATED.
    expect_refusal(
        &node,
        raw_frame(0x10, id, 0x02, b"{"),
        "BAD_PAYLOAD",
        id,
        1008,
    )
    .await;
    let o = offer(BOB.0, "x");
    expect_refusal(
        &node,
        o.encode(Codec::Json).unwrap(),
        "NOT_AUTHENTICATED",
        o.message_id,
        1008,
    )
    .await;
}

#[tokio::test]
async fn messages_before_connect_are_not_authenticated() {
    let node = TestNode::start(test_settings()).await;
    for message in [
        offer(BOB.0, "x"),
        Message::new(MessageType::Heartbeat, Payload::empty()),
        Message::new(MessageType::Disconnect, Payload::empty()),
    ] {
        let mut c = node.open().await;
        c.send(&message, Codec::Cbor).await.unwrap();
        let m = recv_message(&mut c).await;
        assert_error(&m, "NOT_AUTHENTICATED", message.message_id);
        assert_eq!(recv_close(&mut c).await, Some(1008));
    }
}

#[tokio::test]
async fn errors_answering_the_first_connect_use_its_codec() {
    let node = TestNode::start(test_settings()).await;
    for codec in Codec::ALL {
        let mut c = node.open().await;
        let hello = connect(ALICE.0, "wrong-token");
        c.send(&hello, codec).await.unwrap();
        let bytes = match c.recv_timeout(Duration::from_secs(5)).await.unwrap() {
            Incoming::Message(m) => {
                assert_error(&m, "AUTH_FAILED", hello.message_id);
                m.encode(codec).unwrap()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(bytes[18], codec.payload_type().as_u8());
        assert_eq!(recv_close(&mut c).await, Some(1008));
    }
}

#[tokio::test]
async fn text_messages_get_unsupported_payload_type_then_1003() {
    let node = TestNode::start(test_settings()).await;
    let mut c = node.open().await;
    c.send_text("hello").await.unwrap();
    assert_error(
        &recv_message(&mut c).await,
        "UNSUPPORTED_PAYLOAD_TYPE",
        Uuid::nil(),
    );
    assert_eq!(recv_close(&mut c).await, Some(1003));

    let mut c = node.login(ALICE.0, ALICE.1, Codec::Protobuf).await;
    c.send_text("{}").await.unwrap();
    assert_error(
        &recv_message(&mut c).await,
        "UNSUPPORTED_PAYLOAD_TYPE",
        Uuid::nil(),
    );
    assert_eq!(recv_close(&mut c).await, Some(1003));
}

#[tokio::test]
async fn oversized_messages_get_bad_frame_then_1009() {
    let node = TestNode::start(test_settings()).await;
    let mut c = node.open().await;
    c.send_bytes(Bytes::from(vec![0xA5; 70_000])).await.unwrap();
    assert_error(&recv_message(&mut c).await, "BAD_FRAME", Uuid::nil());
    assert_eq!(recv_close(&mut c).await, Some(1009));

    let mut c = node.login(ALICE.0, ALICE.1, JSON).await;
    c.send_bytes(Bytes::from(vec![0u8; 65_557])).await.unwrap();
    assert_error(&recv_message(&mut c).await, "BAD_FRAME", Uuid::nil());
    assert_eq!(recv_close(&mut c).await, Some(1009));
}

#[tokio::test]
async fn frame_errors_after_connect_keep_the_session_open() {
    let node = TestNode::start(test_settings()).await;
    let mut c = node.login(ALICE.0, ALICE.1, Codec::Cbor).await;
    let id = Uuid::new_v4();
    let cases: Vec<(Bytes, &str, Uuid)> = vec![
        (Bytes::from_static(&[0xA5]), "BAD_FRAME", Uuid::nil()),
        (raw_frame(0x7E, id, 0x02, b""), "UNKNOWN_MESSAGE_TYPE", id),
        (raw_frame(0xFF, id, 0x02, b"{}"), "UNKNOWN_MESSAGE_TYPE", id),
        (raw_frame(0x05, id, 0x01, b""), "UNKNOWN_MESSAGE_TYPE", id),
        (
            raw_frame(0x10, id, 0x07, b""),
            "UNSUPPORTED_PAYLOAD_TYPE",
            id,
        ),
        (
            raw_frame(0x10, id, 0x01, b"raw"),
            "UNSUPPORTED_PAYLOAD_TYPE",
            id,
        ),
        (
            raw_frame(0x03, id, 0x03, b"bye"),
            "UNSUPPORTED_PAYLOAD_TYPE",
            id,
        ),
        (
            raw_frame(0x11, id, 0x02, br#"{"signal_data":"x"}"#),
            "BAD_PAYLOAD",
            id,
        ),
        (
            raw_frame(
                0x12,
                id,
                0x02,
                br#"{"target_client_id":"a b","signal_data":"x"}"#,
            ),
            "BAD_PAYLOAD",
            id,
        ),
        (
            raw_frame(
                0x10,
                id,
                0x02,
                br#"{"target_client_id":5,"signal_data":"x"}"#,
            ),
            "BAD_PAYLOAD",
            id,
        ),
        (raw_frame(0x10, id, 0x05, &[0xFF, 0x00]), "BAD_PAYLOAD", id),
        (
            raw_frame(0x10, id, 0x04, &[0x0A, 0x05, 0x61]),
            "BAD_PAYLOAD",
            id,
        ),
        (raw_frame(0x03, id, 0x02, b"[1]"), "BAD_PAYLOAD", id),
    ];
    for (bytes, code, expected_id) in cases {
        c.send_bytes(bytes).await.unwrap();
        let m = recv_message(&mut c).await;
        assert_error(&m, code, expected_id);
    }
    let hb = Message::new(MessageType::Heartbeat, Payload::empty());
    c.send(&hb, JSON).await.unwrap();
    assert_eq!(recv_message(&mut c).await.message_id, hb.message_id);
}

#[tokio::test]
async fn repeated_invalid_frames_end_with_policy() {
    let mut settings = test_settings();
    settings.server.max_invalid_frames = 3;
    let node = TestNode::start(settings).await;
    let mut c = node.login(ALICE.0, ALICE.1, JSON).await;
    for _ in 0..3 {
        c.send_bytes(Bytes::from_static(&[1, 2, 3])).await.unwrap();
    }
    for _ in 0..3 {
        assert_error(&recv_message(&mut c).await, "BAD_FRAME", Uuid::nil());
    }
    assert_disconnect(&recv_message(&mut c).await, "POLICY");
    assert_eq!(recv_close(&mut c).await, Some(1008));
}

#[tokio::test]
async fn rate_limit_answers_the_dropped_frame() {
    let mut settings = test_settings();
    settings.server.rate_limit_per_second = 1;
    settings.server.rate_limit_burst = 3;
    let node = TestNode::start(settings).await;
    let mut c = node.login(ALICE.0, ALICE.1, JSON).await;
    let beats: Vec<Message> = (0..6)
        .map(|_| Message::new(MessageType::Heartbeat, Payload::empty()))
        .collect();
    for hb in &beats {
        c.send(hb, JSON).await.unwrap();
    }
    let mut acks = 0;
    let mut limited = Vec::new();
    for _ in 0..6 {
        let m = recv_message(&mut c).await;
        match m.message_type {
            MessageType::HeartbeatAck => acks += 1,
            MessageType::Error => {
                assert_error(&m, "RATE_LIMITED", m.message_id);
                limited.push(m.message_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, 3, "the burst passes");
    assert_eq!(
        limited,
        beats[3..].iter().map(|b| b.message_id).collect::<Vec<_>>()
    );
    // CONNECT refreshes do not count against the limit.
    let r = connect(ALICE.0, ALICE.1);
    c.send(&r, JSON).await.unwrap();
    assert_eq!(
        recv_message(&mut c).await.message_type,
        MessageType::ConnectAck
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_server_busy() {
    let mut settings = test_settings();
    settings.server.max_connections = 2;
    let node = TestNode::start(settings).await;
    let _a = node.login(ALICE.0, ALICE.1, JSON).await;
    let _b = node.open().await;
    let mut c = node.open().await;
    assert_error(&recv_message(&mut c).await, "SERVER_BUSY", Uuid::nil());
    assert_eq!(recv_close(&mut c).await, Some(1013));
}

#[tokio::test]
async fn unknown_peers_get_peer_not_found() {
    let node = TestNode::start(test_settings()).await;
    let mut c = node.login(ALICE.0, ALICE.1, Codec::Protobuf).await;
    let o = offer("nobody", "x");
    c.send(&o, Codec::Json).await.unwrap();
    let m = recv_message(&mut c).await;
    assert_error(&m, "PEER_NOT_FOUND", o.message_id);
}
