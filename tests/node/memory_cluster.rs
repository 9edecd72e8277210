//! Two nodes sharing one in-memory presence registry and bus form a
//! cluster: the seams work before any Redis is involved.

use std::time::Duration;

use signal_manager_service::app;
use signal_manager_service::bus::MemoryBus;
use signal_manager_service::config::Settings;
use signal_manager_service::presence::MemoryPresence;
use signal_manager_service::protocol::{Codec, MessageType};

use crate::support::*;
use crate::*;

async fn pair() -> (TestNode, TestNode) {
    let presence = MemoryPresence::new(Duration::from_secs(30), Duration::from_secs(30));
    let bus = MemoryBus::default();
    let node = |id: &str| {
        let mut s: Settings = test_settings();
        s.cluster.node_id = Some(id.into());
        app::memory_node(s, presence.clone(), bus.clone()).unwrap()
    };
    let a = TestNode::run(node("node-a")).await;
    let b = TestNode::run(node("node-b")).await;
    (a, b)
}

#[tokio::test]
async fn signals_cross_nodes_through_the_shared_seams() {
    let (a, b) = pair().await;
    let mut alice = a.login(ALICE.0, ALICE.1, Codec::Protobuf).await;
    let mut bob = b.login(BOB.0, BOB.1, JSON).await;
    let o = offer(BOB.0, "cross");
    alice.send(&o, Codec::Protobuf).await.unwrap();
    let got = recv_message(&mut bob).await;
    assert_eq!(got.message_id, o.message_id);
    assert_eq!(got.source_client_id.as_deref(), Some(ALICE.0));
    assert!(a
        .get("/metrics")
        .await
        .1
        .contains("signal_manager_cross_node_signals_sent_total 1"));
    assert!(b
        .get("/metrics")
        .await
        .1
        .contains("signal_manager_cross_node_signals_received_total 1"));

    let lost = offer("nobody", "x");
    alice.send(&lost, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "PEER_NOT_FOUND",
        lost.message_id,
    );
}

#[tokio::test]
async fn connecting_on_another_node_replaces_the_session() {
    let (a, b) = pair().await;
    let mut old = a.login(ALICE.0, ALICE.1, JSON).await;
    let mut new = b.login(ALICE.0, ALICE.1, Codec::Cbor).await;
    assert_disconnect(&recv_message(&mut old).await, "REPLACED");
    assert_eq!(recv_close(&mut old).await, Some(1000));
    let mut bob = a.login(BOB.0, BOB.1, JSON).await;
    let o = offer(ALICE.0, "to the new node");
    bob.send(&o, JSON).await.unwrap();
    let got = recv_message(&mut new).await;
    assert_eq!(got.message_type, MessageType::SignalOffer);
    assert_eq!(got.message_id, o.message_id);
}

#[tokio::test]
async fn a_node_that_vanished_yields_peer_unreachable() {
    let presence = MemoryPresence::new(Duration::from_secs(30), Duration::from_secs(30));
    let bus = MemoryBus::default();
    let build = |id: &str| {
        let mut s = test_settings();
        s.cluster.node_id = Some(id.into());
        app::memory_node(s, presence.clone(), bus.clone()).unwrap()
    };
    let a = TestNode::run(build("node-a")).await;
    let b = TestNode::run(build("node-b")).await;
    let _bob = b.login(BOB.0, BOB.1, JSON).await;
    // node-b's subscription disappears as a crashed node's would; its
    // records stay until their TTL.
    bus.unsubscribe(b.node.id());
    let mut alice = a.login(ALICE.0, ALICE.1, JSON).await;
    let o = offer(BOB.0, "x");
    alice.send(&o, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "PEER_UNREACHABLE",
        o.message_id,
    );
    // The stale record was removed: the next signal is PEER_NOT_FOUND.
    let o2 = offer(BOB.0, "y");
    eventually("stale record removed", Duration::from_secs(5), || {
        let presence = presence.clone();
        async move { presence.is_empty() || presence.len() == 1 }
    })
    .await;
    alice.send(&o2, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "PEER_NOT_FOUND",
        o2.message_id,
    );
}
