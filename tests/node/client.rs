//! The Rust client library against a real node: automatic heartbeats,
//! typed events, and reconnect with a fresh token after a node restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use signal_manager_client::{Client, ConnectOptions, Event};
use signal_manager_service::auth;
use signal_manager_service::config::{AuthSettings, Secret};
use signal_manager_service::protocol::{Codec, MessageType};

use crate::support::*;
use crate::*;

#[tokio::test]
async fn the_client_heartbeats_on_its_own_and_reports_errors_with_ids() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval = 1;
    let node = TestNode::start(settings).await;
    let mut alice =
        Client::connect(ConnectOptions::new(&node.url, ALICE.0, ALICE.1).codec(Codec::Cbor))
            .await
            .unwrap();
    assert_eq!(alice.session().heartbeat_interval_ms, 1000);
    // Well past the 3 s idle timeout: heartbeats keep the session.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let id = alice.offer("nobody", "x").await.unwrap();
    expect_error_event(&mut alice, id, "PEER_NOT_FOUND").await;
    let id = alice.ice_candidate(ALICE.0, "candidate").await.unwrap();
    let s = expect_signal_event(&mut alice, id).await;
    assert_eq!(
        (s.kind, s.source.as_str()),
        (MessageType::SignalIceCandidate, ALICE.0)
    );
}

#[tokio::test]
async fn the_client_reconnects_with_a_fresh_token_after_a_node_restart() {
    const SECRET: &str = "client-test-secret";
    let mint = |client: &str| {
        let s = AuthSettings {
            token_secret: Some(Secret::new(SECRET)),
            ..AuthSettings::default()
        };
        auth::mint(&s, client, Duration::from_secs(60)).unwrap()
    };
    let env = [("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", SECRET)];
    let (port, admin) = (free_port(), free_port());
    let mut node = ChildNode::spawn_on(port, admin, &[], &env).await;
    let minted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&minted);
    let tokens = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        mint("alice")
    });
    let mut alice =
        Client::connect(ConnectOptions::new(&node.url, "alice", mint("alice")).reconnect(tokens))
            .await
            .unwrap();
    let first_session = alice.session().session_id.clone();

    node.terminate();
    match tokio::time::timeout(Duration::from_secs(10), alice.next_event())
        .await
        .unwrap()
    {
        Some(Event::Disconnected { reason, close_code }) => {
            assert_eq!(reason.as_deref(), Some("SERVER_SHUTDOWN"));
            assert_eq!(close_code, Some(1001));
        }
        other => panic!("{other:?}"),
    }
    node.wait_exit(Duration::from_secs(10))
        .await
        .expect("node exits");
    let _restarted = ChildNode::spawn_on(port, admin, &[], &env).await;
    match tokio::time::timeout(Duration::from_secs(20), alice.next_event())
        .await
        .unwrap()
    {
        Some(Event::Reconnected(ack)) => assert_ne!(ack.session_id, first_session),
        other => panic!("{other:?}"),
    }
    assert!(
        minted.load(Ordering::SeqCst) >= 1,
        "a fresh token was minted for the reconnect"
    );
    let id = alice.offer("alice", "after restart").await.unwrap();
    expect_signal_event(&mut alice, id).await;
}
