//! Every lifecycle step of the protocol: connect, refresh, replace,
//! heartbeat, idle timeout, token expiry, disconnect, shutdown.

use std::time::Duration;

use signal_manager_client::Incoming;
use signal_manager_service::auth;
use signal_manager_service::config::Secret;
use signal_manager_service::protocol::{
    Codec, Message, MessageType, Payload, PayloadType, RawPayload,
};

use crate::support::*;
use crate::*;

#[tokio::test]
async fn connect_ack_carries_the_connect_id_in_every_codec() {
    let node = TestNode::start(test_settings()).await;
    for codec in Codec::ALL {
        let mut c = node.open().await;
        let hello = connect(ALICE.0, ALICE.1);
        c.send(&hello, codec).await.unwrap();
        let ack = recv_message(&mut c).await;
        assert_eq!(ack.message_type, MessageType::ConnectAck);
        assert_eq!(ack.message_id, hello.message_id);
        let Payload::ConnectAck(p) = ack.payload else {
            panic!("not an ack")
        };
        assert_eq!(p.client_id, ALICE.0);
        assert_eq!(p.node_id, node.node.id().as_str());
        assert_eq!(p.heartbeat_interval_ms, 30_000);
        assert!(uuid::Uuid::parse_str(&p.session_id).is_ok());
        // The ack is in the session codec.
        let bytes = Message::with_id(
            MessageType::ConnectAck,
            ack.message_id,
            Payload::ConnectAck(p),
        )
        .encode(codec)
        .unwrap();
        assert_eq!(bytes[18], codec.payload_type().as_u8());
    }
}

#[tokio::test]
async fn refresh_keeps_the_session_and_rejects_another_client_id() {
    let node = TestNode::start(test_settings()).await;
    let mut c = node.open().await;
    let ack = c.authenticate(ALICE.0, ALICE.1, JSON).await.unwrap();

    let again = connect(ALICE.0, ALICE.1);
    c.send(&again, JSON).await.unwrap();
    let m = recv_message(&mut c).await;
    assert_eq!(m.message_id, again.message_id);
    let Payload::ConnectAck(p) = m.payload else {
        panic!("expected ack, got {m:?}")
    };
    assert_eq!(p.session_id, ack.session_id, "refresh keeps the session id");

    let other = connect(BOB.0, BOB.1);
    c.send(&other, JSON).await.unwrap();
    assert_error(&recv_message(&mut c).await, "BAD_PAYLOAD", other.message_id);

    let bad_token = connect(ALICE.0, "wrong");
    c.send(&bad_token, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut c).await,
        "AUTH_FAILED",
        bad_token.message_id,
    );

    // The session goes on under its current token.
    let hb = Message::new(MessageType::Heartbeat, Payload::empty());
    c.send(&hb, JSON).await.unwrap();
    assert_eq!(
        recv_message(&mut c).await.message_type,
        MessageType::HeartbeatAck
    );
}

#[tokio::test]
async fn a_new_connect_replaces_the_old_session() {
    let node = TestNode::start(test_settings()).await;
    let mut first = node.login(ALICE.0, ALICE.1, JSON).await;
    let mut second = node.login(ALICE.0, ALICE.1, Codec::Cbor).await;
    assert_disconnect(&recv_message(&mut first).await, "REPLACED");
    assert_eq!(recv_close(&mut first).await, Some(1000));

    let mut bob = node.login(BOB.0, BOB.1, JSON).await;
    let o = offer(ALICE.0, "to newest");
    bob.send(&o, JSON).await.unwrap();
    let got = recv_message(&mut second).await;
    assert_eq!(got.message_id, o.message_id);
}

#[tokio::test]
async fn heartbeat_is_echoed_with_id_payload_type_and_bytes() {
    let node = TestNode::start(test_settings()).await;
    let mut c = node.login(ALICE.0, ALICE.1, JSON).await;
    for (pt, data) in [
        (PayloadType::Text, &b"ping 1"[..]),
        (PayloadType::Binary, &[0u8, 1, 2, 255][..]),
        (PayloadType::Json, &b"{\"t\":1}"[..]),
        (PayloadType::Binary, &b""[..]),
    ] {
        let hb = Message::new(
            MessageType::Heartbeat,
            Payload::Raw(RawPayload {
                payload_type: pt,
                data: bytes::Bytes::copy_from_slice(data),
            }),
        );
        c.send(&hb, JSON).await.unwrap();
        let ack = recv_message(&mut c).await;
        assert_eq!(ack.message_type, MessageType::HeartbeatAck);
        assert_eq!(ack.message_id, hb.message_id);
        assert_eq!(ack.payload, hb.payload);
    }
}

#[tokio::test]
async fn idle_sessions_are_closed_and_pings_do_not_count() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval = 1;
    let node = TestNode::start(settings).await;
    let mut c = node.login(ALICE.0, ALICE.1, JSON).await;
    for _ in 0..3 {
        c.ping(b"p").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_disconnect(&recv_message(&mut c).await, "IDLE_TIMEOUT");
    assert_eq!(recv_close(&mut c).await, Some(1000));
}

#[tokio::test]
async fn heartbeats_keep_a_session_alive() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval = 1;
    let node = TestNode::start(settings).await;
    let mut c = node.login(ALICE.0, ALICE.1, JSON).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(
            &Message::new(MessageType::Heartbeat, Payload::empty()),
            JSON,
        )
        .await
        .unwrap();
        assert_eq!(
            recv_message(&mut c).await.message_type,
            MessageType::HeartbeatAck
        );
    }
}

fn jwt_settings() -> signal_manager_service::config::Settings {
    let mut s = test_settings();
    s.auth.token_secret = Some(Secret::new("test-secret"));
    s
}

#[tokio::test]
async fn token_expiry_ends_the_session_unless_refreshed() {
    let settings = jwt_settings();
    let node = TestNode::start(settings.clone()).await;
    let short = auth::mint(&settings.auth, "alice", Duration::from_secs(2)).unwrap();
    let mut expiring = node.login("alice", &short, JSON).await;

    let short_bob = auth::mint(&settings.auth, "bob", Duration::from_secs(2)).unwrap();
    let mut refreshed = node.login("bob", &short_bob, JSON).await;
    let long_bob = auth::mint(&settings.auth, "bob", Duration::from_secs(60)).unwrap();
    let r = connect("bob", &long_bob);
    refreshed.send(&r, JSON).await.unwrap();
    assert_eq!(recv_message(&mut refreshed).await.message_id, r.message_id);

    assert_disconnect(&recv_message(&mut expiring).await, "TOKEN_EXPIRED");
    assert_eq!(recv_close(&mut expiring).await, Some(1008));

    tokio::time::sleep(Duration::from_secs(2)).await;
    refreshed
        .send(
            &Message::new(MessageType::Heartbeat, Payload::empty()),
            JSON,
        )
        .await
        .unwrap();
    assert_eq!(
        recv_message(&mut refreshed).await.message_type,
        MessageType::HeartbeatAck
    );
}

#[tokio::test]
async fn expired_and_foreign_tokens_are_refused_at_connect() {
    let settings = jwt_settings();
    let node = TestNode::start(settings.clone()).await;
    let expired = auth::mint(&settings.auth, "alice", Duration::from_secs(0)).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = node.open().await;
    let hello = connect("alice", &expired);
    c.send(&hello, Codec::Cbor).await.unwrap();
    let m = recv_message(&mut c).await;
    assert_error(&m, "TOKEN_EXPIRED", hello.message_id);
    assert_eq!(recv_close(&mut c).await, Some(1008));

    let for_bob = auth::mint(&settings.auth, "bob", Duration::from_secs(60)).unwrap();
    let mut c = node.open().await;
    let hello = connect("alice", &for_bob);
    c.send(&hello, Codec::Protobuf).await.unwrap();
    assert_error(&recv_message(&mut c).await, "AUTH_FAILED", hello.message_id);
    assert_eq!(recv_close(&mut c).await, Some(1008));

    // Development tokens are not accepted once a secret is configured.
    let mut c = node.open().await;
    let hello = connect(ALICE.0, ALICE.1);
    c.send(&hello, JSON).await.unwrap();
    assert_error(&recv_message(&mut c).await, "AUTH_FAILED", hello.message_id);
}

#[tokio::test]
async fn client_disconnect_removes_presence_at_once() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = node.login(ALICE.0, ALICE.1, JSON).await;
    let mut bob = node.login(BOB.0, BOB.1, JSON).await;
    alice
        .send(
            &Message::new(MessageType::Disconnect, Payload::empty()),
            JSON,
        )
        .await
        .unwrap();
    assert_eq!(recv_close(&mut alice).await, Some(1000));
    let o = offer(ALICE.0, "gone?");
    bob.send(&o, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut bob).await,
        "PEER_NOT_FOUND",
        o.message_id,
    );
}

#[tokio::test]
async fn shutdown_disconnects_every_client_and_turns_readiness_off() {
    let mut node = TestNode::start(test_settings()).await;
    let mut alice = node.login(ALICE.0, ALICE.1, JSON).await;
    let mut bob = node.login(BOB.0, BOB.1, Codec::Protobuf).await;
    node.trigger_shutdown();
    let admin = node.admin.clone();
    eventually("readiness 503", Duration::from_secs(5), || {
        let admin = admin.clone();
        async move { http_get(&admin, "/readyz").await.0 == 503 }
    })
    .await;
    for c in [&mut alice, &mut bob] {
        assert_disconnect(&recv_message(c).await, "SERVER_SHUTDOWN");
        assert_eq!(recv_close(c).await, Some(1001));
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_socket_without_connect_is_closed_after_the_connect_timeout() {
    let mut settings = test_settings();
    settings.server.connect_timeout = 1;
    let node = TestNode::start(settings).await;
    let mut c = node.open().await;
    let started = tokio::time::Instant::now();
    match c.recv_timeout(Duration::from_secs(5)).await.unwrap() {
        Incoming::Closed(code, _) => assert_eq!(code, Some(1008)),
        other => panic!("expected close, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn websocket_path_alias_is_served_and_other_paths_are_not() {
    let node = TestNode::start(test_settings()).await;
    let mut c = signal_manager_client::Connection::open(&format!("{}/ws", node.url))
        .await
        .unwrap();
    c.authenticate(ALICE.0, ALICE.1, JSON).await.unwrap();
    assert!(
        signal_manager_client::Connection::open(&format!("{}/nope", node.url))
            .await
            .is_err()
    );
}
