//! Session resume (PROTOCOL.md 1.1, "Session resume"), one test per
//! bullet: on the same node and on another, held signals in order and
//! exactly once, tokens that start a new session instead, expiry and
//! replacement answering each held signal, ends that are not resumable,
//! per-pair order across two moves, and a few hundred sessions expiring at
//! once with every held signal answered.

use std::time::Duration;

use signal_manager_client::{Connection, Incoming};
use signal_manager_service::protocol::{
    Codec, ConnectAckPayload, Message, MessageType, Payload, SignalPayload,
};
use tokio::time::Instant;
use uuid::Uuid;

use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::*;

async fn login(node: &TestNode, client: &str, token: &str) -> (Connection, ConnectAckPayload) {
    let mut c = node.open().await;
    let ack = c
        .authenticate(client, token, Codec::Json)
        .await
        .expect("authenticate");
    (c, ack)
}

async fn resume(
    node: &TestNode,
    client: &str,
    token: &str,
    resume_token: &str,
) -> (Connection, ConnectAckPayload) {
    let mut c = node.open().await;
    let ack = c
        .authenticate_resuming(client, token, Some(resume_token), Codec::Json)
        .await
        .expect("authenticate");
    (c, ack)
}

fn offer(target: &str, data: &str) -> Message {
    Message::new(
        MessageType::SignalOffer,
        Payload::SignalOffer(SignalPayload {
            target_client_id: target.into(),
            signal_data: data.into(),
        }),
    )
}

async fn send(c: &mut Connection, target: &str, data: &str) -> Uuid {
    let m = offer(target, data);
    c.send(&m, Codec::Json).await.expect("send");
    m.message_id
}

/// The next `n` signals' data, in arrival order.
async fn signals(c: &mut Connection, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.recv_timeout(Duration::from_secs(5)).await {
            Ok(Incoming::Message(m)) => match m.payload {
                Payload::SignalOffer(s) => got.push(s.signal_data),
                Payload::Error(e) => panic!("unexpected ERROR {}", e.code),
                _ => {}
            },
            other => panic!("expected {n} signals, got {got:?} then {other:?}"),
        }
    }
    got
}

/// Errors on `c` for the ids in `ids`, within a few seconds.
async fn errors_for(c: &mut Connection, ids: &[Uuid]) -> Vec<String> {
    let mut codes = vec![String::new(); ids.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while codes.iter().any(String::is_empty) && Instant::now() < deadline {
        if let Ok(Incoming::Message(m)) = c.recv_timeout(Duration::from_secs(1)).await {
            if let Payload::Error(e) = m.payload {
                if let Some(i) = ids.iter().position(|id| *id == m.message_id) {
                    codes[i] = e.code;
                }
            }
        }
    }
    codes
}

/// Cuts the socket without DISCONNECT, as a phone losing its network.
fn cut(c: Connection) {
    drop(c);
}

/// Waits until `node` counts `client`'s session as resumable.
async fn parked(node: &TestNode) {
    let admin = node.admin.clone();
    eventually("the session is resumable", LONG, || {
        let admin = admin.clone();
        async move {
            http_get(&admin, "/metrics")
                .await
                .1
                .lines()
                .any(|l| l.starts_with("signal_manager_resumable_sessions ") && !l.ends_with(" 0"))
        }
    })
    .await;
}

async fn two_nodes(name: &str) -> (RedisServer, TestNode, TestNode) {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix(name);
    let a = start_node(&redis, &prefix, "node-a").await;
    let b = start_node(&redis, &prefix, "node-b").await;
    (redis, a, b)
}

#[tokio::test]
async fn a_session_resumes_on_the_same_node_and_on_another_with_its_held_signals_in_order() {
    let (_redis, a, b) = two_nodes("resume").await;
    let (mut bob, _) = login(&b, "test_client_2", "test_token_2").await;
    for (name, resume_on) in [("same node", &a), ("other node", &b)] {
        let (alice, ack) = login(&a, "test_client_1", "test_token_1").await;
        let token = ack.resume_token.clone().expect("a resume token");
        assert!(token.len() >= 32 && token.len() <= 256);
        assert!(!ack.resumed);
        cut(alice);
        parked(&a).await;
        for i in 0..3 {
            send(&mut bob, "test_client_1", &format!("held {i}")).await;
        }
        let (mut alice, resumed) = resume(resume_on, "test_client_1", "test_token_1", &token).await;
        assert!(resumed.resumed, "{name}: resumed");
        assert_eq!(resumed.session_id, ack.session_id, "{name}: same session");
        let next = resumed.resume_token.clone().expect("a new token");
        assert_ne!(next, token, "{name}: a new token");
        send(&mut bob, "test_client_1", "new").await;
        assert_eq!(
            signals(&mut alice, 4).await,
            ["held 0", "held 1", "held 2", "new"],
            "{name}"
        );
        // The used token starts a new session.
        alice
            .send(
                &Message::new(MessageType::Disconnect, Payload::empty()),
                Codec::Json,
            )
            .await
            .unwrap();
        let (_again, fresh) = resume(&a, "test_client_1", "test_token_1", &token).await;
        assert!(!fresh.resumed, "{name}: a used token starts a new session");
        assert_ne!(fresh.session_id, ack.session_id);
    }
}

#[tokio::test]
async fn foreign_and_expired_tokens_start_new_sessions_and_expiry_answers_held_signals() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("expiry");
    let mut settings = cluster_settings(&redis, &prefix, "node-a");
    settings.server.resume_window = 1;
    let a = TestNode::run(
        signal_manager_service::app::build_node(settings)
            .await
            .expect("node"),
    )
    .await;
    let (mut bob, bob_ack) = login(&a, "test_client_2", "test_token_2").await;
    let (alice, ack) = login(&a, "test_client_1", "test_token_1").await;
    let token = ack.resume_token.clone().expect("token");
    cut(alice);
    parked(&a).await;
    let ids = [
        send(&mut bob, "test_client_1", "a").await,
        send(&mut bob, "test_client_1", "b").await,
    ];
    // Window passes: every held signal's sender is answered with its id.
    assert_eq!(
        errors_for(&mut bob, &ids).await,
        ["PEER_NOT_FOUND", "PEER_NOT_FOUND"]
    );
    let (_alice, late) = resume(&a, "test_client_1", "test_token_1", &token).await;
    assert!(!late.resumed, "an expired token starts a new session");
    // Bob's token names bob's session: not alice's.
    let bob_token = bob_ack.resume_token.expect("token");
    let (_c, foreign) = resume(&a, "test_client_1", "test_token_1", &bob_token).await;
    assert!(
        !foreign.resumed,
        "another client's token starts a new session"
    );
    let (_c, garbage) = resume(&a, "test_client_1", "test_token_1", "not-a-token").await;
    assert!(!garbage.resumed);
}

#[tokio::test]
async fn a_new_session_replacing_a_resumable_one_answers_its_held_signals() {
    let (_redis, a, b) = two_nodes("replace").await;
    let (mut bob, _) = login(&b, "test_client_2", "test_token_2").await;
    let (alice, _) = login(&a, "test_client_1", "test_token_1").await;
    cut(alice);
    parked(&a).await;
    let ids = [
        send(&mut bob, "test_client_1", "a").await,
        send(&mut bob, "test_client_1", "b").await,
    ];
    // Both are held on node A before the new session starts.
    let admin = a.admin.clone();
    eventually("both signals held", LONG, || {
        let admin = admin.clone();
        async move {
            http_get(&admin, "/metrics")
                .await
                .1
                .lines()
                .any(|l| l.starts_with("signal_manager_cross_node_signals_received_total 2"))
        }
    })
    .await;
    // A CONNECT without the token, on the other node, starts a new session.
    let (mut alice, fresh) = login(&b, "test_client_1", "test_token_1").await;
    assert!(!fresh.resumed);
    assert_eq!(
        errors_for(&mut bob, &ids).await,
        ["PEER_NOT_FOUND", "PEER_NOT_FOUND"]
    );
    send(&mut bob, "test_client_1", "to the new session").await;
    assert_eq!(signals(&mut alice, 1).await, ["to the new session"]);
}

#[tokio::test]
async fn a_client_disconnect_or_a_replacement_is_not_resumable() {
    let (_redis, a, _b) = two_nodes("final").await;
    let (mut bob, _) = login(&a, "test_client_2", "test_token_2").await;
    let (mut alice, ack) = login(&a, "test_client_1", "test_token_1").await;
    let token = ack.resume_token.clone().expect("token");
    alice
        .send(
            &Message::new(MessageType::Disconnect, Payload::empty()),
            Codec::Json,
        )
        .await
        .unwrap();
    assert_eq!(recv_close(&mut alice).await, Some(1000));
    let id = send(&mut bob, "test_client_1", "after DISCONNECT").await;
    assert_eq!(errors_for(&mut bob, &[id]).await, ["PEER_NOT_FOUND"]);
    let (_c, fresh) = resume(&a, "test_client_1", "test_token_1", &token).await;
    assert!(!fresh.resumed, "DISCONNECT ends the session for good");

    // REPLACED: the replaced session's token does not resume it.
    let (mut first, first_ack) = login(&a, "test_client_2", "test_token_2").await;
    let (_second, _) = login(&a, "test_client_2", "test_token_2").await;
    assert_disconnect(&recv_message(&mut first).await, "REPLACED");
    let (_c, again) = resume(
        &a,
        "test_client_2",
        "test_token_2",
        &first_ack.resume_token.unwrap(),
    )
    .await;
    assert!(!again.resumed);
}

#[tokio::test]
async fn two_thousand_signals_arrive_in_order_exactly_once_across_two_moves() {
    let (_redis, a, b) = two_nodes("order").await;
    let (mut alice, ack) = login(&a, "test_client_1", "test_token_1").await;
    let mut token = ack.resume_token.expect("token");
    let sender_node = b.url.clone();
    let sender = tokio::spawn(async move {
        let mut bob = Connection::open(&sender_node).await.expect("open");
        bob.authenticate("test_client_2", "test_token_2", Codec::Json)
            .await
            .expect("bob");
        let mut pace = tokio::time::interval(Duration::from_millis(2));
        let mut ids = Vec::new();
        for i in 0..2000 {
            pace.tick().await;
            ids.push(send(&mut bob, "test_client_1", &i.to_string()).await);
        }
        // Any ERROR is a failure: nothing may be refused across the moves.
        let mut errors = Vec::new();
        while let Ok(Incoming::Message(m)) = bob.recv_timeout(Duration::from_secs(3)).await {
            if let Payload::Error(e) = m.payload {
                let n = ids.iter().position(|id| *id == m.message_id);
                errors.push(format!("{n:?}: {}", e.code));
            }
        }
        errors
    });
    let mut got: Vec<u32> = Vec::new();
    for (cut_after, resume_on) in [(500usize, &a), (1200, &b), (usize::MAX, &b)] {
        while got.len() < cut_after.min(2000) {
            match alice.recv_timeout(Duration::from_secs(10)).await {
                Ok(Incoming::Message(m)) => match m.payload {
                    Payload::SignalOffer(s) => got.push(s.signal_data.parse().unwrap()),
                    Payload::Error(e) => panic!("ERROR {}", e.code),
                    _ => {}
                },
                other => {
                    let errors = sender.await.unwrap();
                    let missing: Vec<u32> =
                        (0..2000).filter(|i| !got.contains(i)).take(5).collect();
                    panic!(
                    "after {} signals: {other:?}; missing {missing:?}; sender's errors: {errors:?}",
                    got.len()
                )
                }
            }
        }
        if cut_after == usize::MAX {
            break;
        }
        // The link drops: the server sees the socket end; what it wrote
        // before noticing still arrives.
        alice.half_close().await;
        while let Ok(Incoming::Message(m)) = alice.recv_timeout(Duration::from_secs(5)).await {
            if let Payload::SignalOffer(s) = m.payload {
                got.push(s.signal_data.parse().unwrap());
            }
        }
        let (c, resumed) = resume(resume_on, "test_client_1", "test_token_1", &token).await;
        assert!(resumed.resumed, "resumed after {} signals", got.len());
        token = resumed.resume_token.expect("token");
        alice = c;
    }
    let errors = sender.await.unwrap();
    assert!(errors.is_empty(), "the sender got errors: {errors:?}");
    let expected: Vec<u32> = (0..2000).collect();
    let first_wrong = got.iter().zip(&expected).position(|(g, e)| g != e);
    assert!(
        got.len() == 2000 && first_wrong.is_none(),
        "all 2,000 in order, exactly once: {} received, first out of place at {first_wrong:?}",
        got.len()
    );
}

const MANY_SECRET: &str = "resume-many-secret";

fn minted(client: &str) -> String {
    use signal_manager_service::auth;
    use signal_manager_service::config::{AuthSettings, Secret};
    let settings = AuthSettings {
        token_secret: Some(Secret::new(MANY_SECRET)),
        ..AuthSettings::default()
    };
    auth::mint(&settings, client, Duration::from_secs(3600)).expect("mint")
}

/// The value of the metric line `name` on `node`'s `/metrics`.
async fn metric(node: &TestNode, name: &str) -> Option<f64> {
    let body = http_get(&node.admin, "/metrics").await.1;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn metric_is(node: &TestNode, name: &str, value: f64) {
    let what = format!("{name} = {value}");
    eventually(&what, LONG, || async {
        metric(node, name).await == Some(value)
    })
    .await;
}

/// A node's clients all losing their network at once, at a few hundred: every
/// session becomes resumable; a signal sent to each from another node is
/// held and, when the window passes, answered PEER_NOT_FOUND to its sender
/// with its id, exactly once; the node is left with no session, no parked
/// entry and no presence record of them.
#[tokio::test]
async fn hundreds_of_sessions_dropped_at_once_expire_and_every_held_signal_is_answered() {
    use signal_manager_service::config::Secret;
    const SESSIONS: usize = 300;
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("many");
    let settings = |id: &str| {
        let mut s = cluster_settings(&redis, &prefix, id);
        s.auth.token_secret = Some(Secret::new(MANY_SECRET));
        // Long enough to reach every parked session first; nothing is timed.
        s.server.resume_window = 5;
        // Records outlive the waits below unless the node removes them.
        s.cluster.presence_ttl = Some(60);
        s
    };
    let a = start_with(settings("node-a")).await;
    let b = start_with(settings("node-b")).await;
    let (mut sender, _) = login(&b, "sender", &minted("sender")).await;
    let ids: Vec<String> = (0..SESSIONS).map(|i| format!("many-{i}")).collect();
    let sessions = futures_util::future::join_all(ids.iter().map(|id| {
        let a = &a;
        async move { login(a, id, &minted(id)).await.0 }
    }))
    .await;
    metric_is(&a, "signal_manager_sessions", SESSIONS as f64).await;
    // The drop: every socket at once, no close handshake.
    drop(sessions);
    metric_is(&a, "signal_manager_resumable_sessions", SESSIONS as f64).await;

    let mut sent = Vec::with_capacity(SESSIONS);
    for id in &ids {
        sent.push(send(&mut sender, id, "held").await);
    }
    // Each signal is answered once, with its id, when its session ends.
    let mut answered: std::collections::HashMap<Uuid, String> = Default::default();
    let deadline = Instant::now() + LONG + Duration::from_secs(5);
    while answered.len() < SESSIONS && Instant::now() < deadline {
        if let Ok(Incoming::Message(m)) = sender.recv_timeout(Duration::from_secs(1)).await {
            if let Payload::Error(e) = m.payload {
                assert!(
                    sent.contains(&m.message_id),
                    "ERROR {} for an id never sent",
                    e.code
                );
                let again = answered.insert(m.message_id, e.code);
                assert!(again.is_none(), "signal {} answered twice", m.message_id);
            }
        }
    }
    let not_found = answered.values().filter(|c| *c == "PEER_NOT_FOUND").count();
    assert_eq!(
        (answered.len(), not_found),
        (SESSIONS, SESSIONS),
        "every held signal answered PEER_NOT_FOUND: {:?}",
        answered
            .values()
            .filter(|c| *c != "PEER_NOT_FOUND")
            .collect::<Vec<_>>()
    );
    // Held, not refused on arrival: node A answered them as held signals,
    // and node B passed its sessions' answers on.
    metric_is(
        &a,
        "signal_manager_held_signals_answered_total",
        SESSIONS as f64,
    )
    .await;
    metric_is(
        &b,
        "signal_manager_held_signals_answered_total",
        SESSIONS as f64,
    )
    .await;
    metric_is(&a, "signal_manager_resumable_sessions", 0.0).await;
    metric_is(&a, "signal_manager_sessions", 0.0).await;
    let pattern = format!("{prefix}:client:many-*");
    eventually(
        "no presence record of the expired sessions",
        LONG,
        || async { redis.command(&["KEYS", &pattern]).await.starts_with("*0") },
    )
    .await;
    // Nothing more reaches the sender: no second answer to any signal.
    while let Ok(Incoming::Message(m)) = sender.recv_timeout(Duration::from_millis(500)).await {
        assert!(
            !matches!(m.payload, Payload::Error(_)),
            "a late ERROR for {}",
            m.message_id
        );
    }
}
