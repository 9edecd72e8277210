//! Node and Redis faults: SIGKILL, SIGTERM drain, Redis down and back
//! empty, and no silent loss while a node restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use signal_manager_client::{Client, ConnectOptions, Event};
use signal_manager_service::auth;
use signal_manager_service::config::{AuthSettings, Secret};
use signal_manager_service::protocol::{Codec, Message, MessageType, Payload, SignalPayload};
use uuid::Uuid;

use crate::support::eventually;
use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::*;

const SECRET: &str = "cluster-test-secret";

fn token(client: &str) -> String {
    let settings = AuthSettings {
        token_secret: Some(Secret::new(SECRET)),
        ..AuthSettings::default()
    };
    auth::mint(&settings, client, Duration::from_secs(600)).unwrap()
}

async fn child(redis: &RedisServer, prefix: &str, node_id: &str) -> ChildNode {
    let url = redis.url();
    ChildNode::spawn(
        &["--redis-url", &url, "--node-id", node_id],
        &[
            ("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", SECRET),
            ("SIGNAL_MANAGER_CLUSTER_KEY_PREFIX", prefix),
            ("SIGNAL_MANAGER_CLUSTER_PRESENCE_TTL", "3"),
            ("SIGNAL_MANAGER_SERVER_RATE_LIMIT_PER_SECOND", "100000"),
            ("SIGNAL_MANAGER_SERVER_RATE_LIMIT_BURST", "100000"),
            ("SIGNAL_MANAGER_SERVER_DRAIN_TIMEOUT", "5"),
        ],
    )
    .await
}

fn offer(target: &str) -> Message {
    Message::new(
        MessageType::SignalOffer,
        Payload::SignalOffer(SignalPayload {
            target_client_id: target.into(),
            signal_data: "sdp".into(),
        }),
    )
}

async fn keys(redis: &RedisServer, prefix: &str) -> String {
    redis.command(&["KEYS", &format!("{prefix}:*")]).await
}

#[tokio::test]
async fn a_killed_node_yields_peer_unreachable_then_not_found_and_leaves_no_keys() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("kill");
    let a = child(&redis, &prefix, "node-a").await;
    let mut b = child(&redis, &prefix, "node-b").await;
    let mut bob = signal_manager_client::Connection::open(&b.url)
        .await
        .unwrap();
    bob.authenticate("bob", &token("bob"), Codec::Json)
        .await
        .unwrap();
    let mut alice = signal_manager_client::Connection::open(&a.url)
        .await
        .unwrap();
    alice
        .authenticate("alice", &token("alice"), Codec::Json)
        .await
        .unwrap();

    b.kill();
    let m = offer("bob");
    alice.send(&m, Codec::Json).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "PEER_UNREACHABLE",
        m.message_id,
    );

    // After the presence TTL nothing of node-b is left in Redis.
    eventually("node-b's keys expire", Duration::from_secs(10), || async {
        !keys(&redis, &prefix).await.contains("node-b")
            && !keys(&redis, &prefix).await.contains(":client:bob")
    })
    .await;
    let m = offer("bob");
    alice.send(&m, Codec::Json).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "PEER_NOT_FOUND",
        m.message_id,
    );
    drop(a);
}

#[tokio::test]
async fn sigterm_drains_and_removes_the_nodes_records() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("term");
    let mut b = child(&redis, &prefix, "node-b").await;
    let mut bob = signal_manager_client::Connection::open(&b.url)
        .await
        .unwrap();
    bob.authenticate("bob", &token("bob"), Codec::Cbor)
        .await
        .unwrap();
    assert!(keys(&redis, &prefix).await.contains(":client:bob"));
    b.terminate();
    assert_disconnect(&recv_message(&mut bob).await, "SERVER_SHUTDOWN");
    assert_eq!(recv_close(&mut bob).await, Some(1001));
    let status = b.wait_exit(Duration::from_secs(15)).await.expect("exits");
    assert!(status.success());
    let left = keys(&redis, &prefix).await;
    assert!(
        !left.contains("node-b") && !left.contains(":client:bob"),
        "left behind: {left}"
    );
}

#[tokio::test]
async fn redis_down_means_unavailable_cross_node_and_routing_returns_with_redis() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("redisdown");
    let a = start_node(&redis, &prefix, "node-a").await;
    let b = start_node(&redis, &prefix, "node-b").await;
    let alice = Client::connect(ConnectOptions::new(&a.url, "test_client_1", "test_token_1"))
        .await
        .unwrap();
    let mut alice = alice;
    let mut bob = Client::connect(ConnectOptions::new(&b.url, "test_client_2", "test_token_2"))
        .await
        .unwrap();

    redis.stop();
    // Cross-node: UNAVAILABLE at once, never a hang.
    let id = alice.offer("test_client_2", "x").await.unwrap();
    let started = Instant::now();
    expect_error_event(&mut alice, id, "UNAVAILABLE").await;
    println!("UNAVAILABLE answered in {:?}", started.elapsed());
    // Same-node routing keeps working.
    let id = alice.offer("test_client_1", "to myself").await.unwrap();
    expect_signal_event(&mut alice, id).await;
    let admin = a.admin.clone();
    eventually(
        "readiness 503 without Redis",
        Duration::from_secs(10),
        || {
            let admin = admin.clone();
            async move { http_get(&admin, "/readyz").await.0 == 503 }
        },
    )
    .await;

    // Redis comes back empty: routing returns with no client action.
    redis.restart().await;
    let back = Instant::now();
    loop {
        let id = alice.offer("test_client_2", "again").await.unwrap();
        let delivered = tokio::time::timeout(Duration::from_millis(500), bob.next_event()).await;
        if let Ok(Some(Event::Signal(s))) = delivered {
            assert_eq!(s.message_id, id);
            break;
        }
        // Drain alice's error for that attempt.
        let _ = tokio::time::timeout(Duration::from_millis(200), alice.next_event()).await;
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "routing not restored"
        );
    }
    println!(
        "cross-node routing restored {:?} after Redis restarted",
        back.elapsed()
    );
    let admin = a.admin.clone();
    eventually("ready again", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move { http_get(&admin, "/readyz").await.0 == 200 }
    })
    .await;
    assert!(a
        .get("/metrics")
        .await
        .1
        .contains("signal_manager_presence_reregistrations_total"));
}

#[derive(Default)]
struct Ledger {
    sent: HashMap<Uuid, u32>,
    delivered: HashMap<Uuid, u32>,
    errors: HashMap<Uuid, u32>,
}

#[tokio::test]
async fn no_signal_is_lost_silently_while_a_node_restarts() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("noloss");
    let a = child(&redis, &prefix, "node-a").await;
    let mut b = child(&redis, &prefix, "node-b").await;
    let c = child(&redis, &prefix, "node-c").await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let receivers: Vec<(String, String)> = (0..6)
        .map(|i| (format!("r{i}"), [&a.url, &b.url, &c.url][i % 3].clone()))
        .collect();

    let mut tasks = Vec::new();
    for (id, url) in &receivers {
        let tokens: signal_manager_client::TokenSource = {
            let id = id.clone();
            Arc::new(move || token(&id))
        };
        let mut client = Client::connect(ConnectOptions::new(url, id, token(id)).reconnect(tokens))
            .await
            .unwrap();
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_secs(8), client.next_event()).await
            {
                if let Event::Signal(s) = event {
                    *ledger
                        .lock()
                        .unwrap()
                        .delivered
                        .entry(s.message_id)
                        .or_default() += 1;
                }
            }
        }));
    }
    let mut senders = Vec::new();
    for (i, url) in [&a.url, &c.url, &a.url, &c.url].into_iter().enumerate() {
        let name = format!("s{i}");
        let client = Client::connect(ConnectOptions::new(url, &name, token(&name)))
            .await
            .unwrap();
        senders.push(client);
    }
    let mut sender_tasks = Vec::new();
    for (n, mut sender) in senders.into_iter().enumerate() {
        let ledger = Arc::clone(&ledger);
        let targets: Vec<String> = receivers.iter().map(|(id, _)| id.clone()).collect();
        sender_tasks.push(tokio::spawn(async move {
            for i in 0..600usize {
                let target = &targets[(i * 7 + n) % targets.len()];
                let id = Uuid::new_v4();
                ledger.lock().unwrap().sent.insert(id, 1);
                sender
                    .signal_with_id(MessageType::SignalOffer, id, target, "sdp")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                while let Ok(Some(event)) =
                    tokio::time::timeout(Duration::ZERO, sender.next_event()).await
                {
                    if let Event::Error { message_id, .. } = event {
                        *ledger.lock().unwrap().errors.entry(message_id).or_default() += 1;
                    }
                }
            }
            // Signals held for the drained node's resumable sessions are
            // answered at its drain deadline (5 s).
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_secs(8), sender.next_event()).await
            {
                if let Event::Error { message_id, .. } = event {
                    *ledger.lock().unwrap().errors.entry(message_id).or_default() += 1;
                }
            }
        }));
    }
    // Restart node-b in the middle of the traffic: once signals flow.
    eventually("signals flow", Duration::from_secs(10), || {
        let flowing = ledger.lock().unwrap().delivered.len() >= 200;
        async move { flowing }
    })
    .await;
    b.terminate();
    b.wait_exit(Duration::from_secs(10))
        .await
        .expect("node-b exits");
    let _b2 = child(&redis, &prefix, "node-b").await;
    for t in sender_tasks {
        t.await.unwrap();
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ledger = ledger.lock().unwrap();
    let (mut delivered, mut answered) = (0, 0);
    for id in ledger.sent.keys() {
        let d = ledger.delivered.get(id).copied().unwrap_or(0);
        let e = ledger.errors.get(id).copied().unwrap_or(0);
        assert_eq!(d + e, 1, "signal {id}: delivered {d} times, {e} errors");
        delivered += d;
        answered += e;
    }
    println!(
        "{} signals: {delivered} delivered, {answered} answered with an error",
        ledger.sent.len()
    );
    assert!(answered > 0 || delivered == ledger.sent.len() as u32);
    drop((a, c));
}
