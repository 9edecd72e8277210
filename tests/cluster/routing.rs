//! Cross-node routing through Redis: every signal type, codec translation,
//! ids and stamping, order of 10,000 signals, takeover across nodes.

use std::time::Duration;

use signal_manager_client::{Client, ConnectOptions, Event};
use signal_manager_service::protocol::{Codec, Message, MessageType, Payload};

use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::*;

const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
const BOB: (&str, &str) = ("test_client_2", "test_token_2");

#[tokio::test]
async fn every_signal_type_crosses_nodes_with_its_id_in_the_receivers_codec() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("cross");
    let a = start_node(&redis, &prefix, "node-a").await;
    let b = start_node(&redis, &prefix, "node-b").await;
    for (from, to) in [
        (Codec::Protobuf, Codec::Json),
        (Codec::Json, Codec::Cbor),
        (Codec::Cbor, Codec::Protobuf),
    ] {
        let mut alice = a.login(ALICE.0, ALICE.1, from).await;
        let mut bob = b.login(BOB.0, BOB.1, to).await;
        for kind in [
            MessageType::SignalOffer,
            MessageType::SignalAnswer,
            MessageType::SignalIceCandidate,
        ] {
            let m = signal(
                kind,
                BOB.0,
                "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host ü",
            );
            alice.send(&m, from).await.unwrap();
            let got = recv_message(&mut bob).await;
            assert_eq!(got.message_type, kind);
            assert_eq!(got.message_id, m.message_id);
            assert_eq!(got.source_client_id.as_deref(), Some(ALICE.0));
            assert_eq!(got.payload, {
                let mut expected = m.clone();
                if let Payload::SignalOffer(p)
                | Payload::SignalAnswer(p)
                | Payload::SignalIceCandidate(p) = &mut expected.payload
                {
                    p.target_client_id = BOB.0.into();
                }
                expected.payload
            });
            assert_eq!(got.encode(to).unwrap()[18], to.payload_type().as_u8());
        }
        // And back the other way.
        let reply = signal(MessageType::SignalAnswer, ALICE.0, "answer");
        bob.send(&reply, to).await.unwrap();
        assert_eq!(recv_message(&mut alice).await.message_id, reply.message_id);
        alice.close().await;
        bob.close().await;
    }
    // One cross-node signal costs one presence lookup and one pipelined publish.
    let metrics = a.get("/metrics").await.1;
    assert!(metrics.contains(
        "signal_manager_redis_command_duration_seconds_count{command=\"EVALSHA locate\"}"
    ));
    assert!(metrics
        .contains("signal_manager_redis_command_duration_seconds_count{command=\"PUBLISH\"}"));
}

#[tokio::test]
async fn ten_thousand_cross_node_signals_arrive_in_order() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("order");
    let a = start_node(&redis, &prefix, "node-a").await;
    let b = start_node(&redis, &prefix, "node-b").await;
    let alice = Client::connect(ConnectOptions::new(&a.url, ALICE.0, ALICE.1))
        .await
        .unwrap();
    let mut bob = Client::connect(ConnectOptions::new(&b.url, BOB.0, BOB.1).codec(Codec::Protobuf))
        .await
        .unwrap();
    const N: usize = 10_000;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            alice.ice_candidate(BOB.0, &i.to_string()).await.unwrap();
        }
        alice
    });
    for expected in 0..N {
        match tokio::time::timeout(Duration::from_secs(20), bob.next_event())
            .await
            .unwrap()
        {
            Some(Event::Signal(s)) => {
                assert_eq!(s.data, expected.to_string(), "out of order");
                assert_eq!(s.source, ALICE.0);
            }
            other => panic!("unexpected {other:?} at {expected}"),
        }
    }
    let _alice = sender.await.unwrap();
}

#[tokio::test]
async fn connecting_on_another_node_replaces_the_session_there() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("takeover");
    let a = start_node(&redis, &prefix, "node-a").await;
    let b = start_node(&redis, &prefix, "node-b").await;
    let mut old = a.login(ALICE.0, ALICE.1, Codec::Json).await;
    let mut new = b.login(ALICE.0, ALICE.1, Codec::Cbor).await;
    assert_disconnect(&recv_message(&mut old).await, "REPLACED");
    assert_eq!(recv_close(&mut old).await, Some(1000));

    let mut bob = a.login(BOB.0, BOB.1, Codec::Json).await;
    let m = signal(MessageType::SignalOffer, ALICE.0, "to the newest");
    bob.send(&m, Codec::Json).await.unwrap();
    assert_eq!(recv_message(&mut new).await.message_id, m.message_id);
    // The old node's cleanup did not erase the new session's record.
    let key = format!("{prefix}:client:{}", ALICE.0);
    assert!(redis.command(&["GET", &key]).await.contains("node-b"));
}

#[tokio::test]
async fn unknown_peers_are_not_found_cluster_wide() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("notfound");
    let a = start_node(&redis, &prefix, "node-a").await;
    let mut alice = a.login(ALICE.0, ALICE.1, Codec::Json).await;
    let m = signal(MessageType::SignalOffer, "nobody", "x");
    alice.send(&m, Codec::Json).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "PEER_NOT_FOUND",
        m.message_id,
    );
}

#[tokio::test]
async fn a_stale_cached_location_is_forwarded_or_answered() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("stale");
    let a = start_node(&redis, &prefix, "node-a").await;
    let b = start_node(&redis, &prefix, "node-b").await;
    let c = start_node(&redis, &prefix, "node-c").await;
    let mut alice = a.login(ALICE.0, ALICE.1, Codec::Json).await;
    let mut bob_on_b = b.login(BOB.0, BOB.1, Codec::Json).await;
    // node-a learns (and caches) that bob is on node-b.
    let first = signal(MessageType::SignalOffer, BOB.0, "1");
    alice.send(&first, Codec::Json).await.unwrap();
    assert_eq!(
        recv_message(&mut bob_on_b).await.message_id,
        first.message_id
    );

    // bob moves to node-c; only node-b is told, node-a's cache is stale.
    let mut bob_on_c = c.login(BOB.0, BOB.1, Codec::Protobuf).await;
    assert_disconnect(&recv_message(&mut bob_on_b).await, "REPLACED");
    let second = signal(MessageType::SignalAnswer, BOB.0, "2");
    alice.send(&second, Codec::Json).await.unwrap();
    let got = recv_message(&mut bob_on_c).await;
    assert_eq!(
        got.message_id, second.message_id,
        "forwarded by the node bob left"
    );
    assert_eq!(got.source_client_id.as_deref(), Some(ALICE.0));

    // bob leaves for good: the answer is PEER_NOT_FOUND with the signal's id.
    bob_on_c
        .send(
            &Message::new(MessageType::Disconnect, Payload::empty()),
            Codec::Json,
        )
        .await
        .unwrap();
    assert_eq!(recv_close(&mut bob_on_c).await, Some(1000));
    for _ in 0..2 {
        let third = signal(MessageType::SignalIceCandidate, BOB.0, "3");
        alice.send(&third, Codec::Json).await.unwrap();
        assert_error(
            &recv_message(&mut alice).await,
            "PEER_NOT_FOUND",
            third.message_id,
        );
    }
}
