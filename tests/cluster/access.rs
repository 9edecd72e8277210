//! Protocol 1.1 across two nodes on one Redis: the peers claim is checked
//! on the sender's node, and the admin API of any node ends a session held
//! by another with DISCONNECT KICKED.

use std::time::Duration;

use signal_manager_service::app;
use signal_manager_service::auth;
use signal_manager_service::config::{Secret, Settings};

use crate::support::http_fixture::http_request;
use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::*;

const SECRET: &str = "cluster-secret";
const API_TOKEN: &str = "cluster-admin-token";
const JSON: signal_manager_service::protocol::Codec = signal_manager_service::protocol::Codec::Json;

fn settings(redis: &RedisServer, prefix: &str, node_id: &str) -> Settings {
    let mut s = cluster_settings(redis, prefix, node_id);
    s.auth.token_secret = Some(Secret::new(SECRET));
    s.admin.api_token = Some(Secret::new(API_TOKEN));
    s
}

async fn node(redis: &RedisServer, prefix: &str, node_id: &str) -> TestNode {
    let node = app::build_node(settings(redis, prefix, node_id))
        .await
        .expect("build node");
    TestNode::run(node).await
}

fn token(s: &Settings, client: &str, peers: &[&str]) -> String {
    let peers: Vec<String> = peers.iter().map(|p| (*p).to_owned()).collect();
    auth::mint_with_peers(&s.auth, client, Duration::from_secs(600), &peers).unwrap()
}

fn offer(target: &str) -> signal_manager_service::protocol::Message {
    signal(
        signal_manager_service::protocol::MessageType::SignalOffer,
        target,
        "sdp",
    )
}

#[tokio::test]
async fn the_peers_claim_holds_for_targets_on_another_node() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("peers");
    let a = node(&redis, &prefix, "node-a").await;
    let b = node(&redis, &prefix, "node-b").await;
    let s = settings(&redis, &prefix, "x");
    let mut alice = a
        .login("alice", &token(&s, "alice", &["bob", "team:*"]), JSON)
        .await;
    let mut bob = b.login("bob", &token(&s, "bob", &[]), JSON).await;
    let mut mate = b
        .login("team:carol", &token(&s, "team:carol", &[]), JSON)
        .await;
    let mut dave = b.login("dave", &token(&s, "dave", &["alice"]), JSON).await;

    for (target, conn) in [("bob", &mut bob), ("team:carol", &mut mate)] {
        let m = offer(target);
        alice.send(&m, JSON).await.unwrap();
        assert_eq!(recv_message(conn).await.message_id, m.message_id);
    }
    let refused = offer("dave");
    alice.send(&refused, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "FORBIDDEN",
        refused.message_id,
    );
    // dave may signal alice (on node A), but not bob (on his own node).
    let m = offer("alice");
    dave.send(&m, JSON).await.unwrap();
    assert_eq!(recv_message(&mut alice).await.message_id, m.message_id);
    let m = offer("bob");
    dave.send(&m, JSON).await.unwrap();
    assert_error(&recv_message(&mut dave).await, "FORBIDDEN", m.message_id);
    // Nothing reached dave or bob meanwhile: the next frame each gets is the
    // answer to its own heartbeat.
    for conn in [&mut dave, &mut bob] {
        let hb = signal_manager_service::protocol::Message::new(
            signal_manager_service::protocol::MessageType::Heartbeat,
            signal_manager_service::protocol::Payload::empty(),
        );
        conn.send(&hb, JSON).await.unwrap();
        assert_eq!(recv_message(conn).await.message_id, hb.message_id);
    }
}

#[tokio::test]
async fn the_admin_api_of_any_node_kicks_a_client_held_by_another() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("kick");
    let a = node(&redis, &prefix, "node-a").await;
    let b = node(&redis, &prefix, "node-b").await;
    let s = settings(&redis, &prefix, "x");
    let mut alice = b.login("alice", &token(&s, "alice", &[]), JSON).await;
    let mut bob = b.login("bob", &token(&s, "bob", &[]), JSON).await;
    let auth = format!("Bearer {API_TOKEN}");
    let with = [("Authorization", auth.as_str())];

    let (status, body) = http_request(&a.admin, "GET", "/v1/clients/alice", &with).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node_id"], "node-b");

    let (status, body) =
        http_request(&a.admin, "POST", "/v1/clients/alice/disconnect", &with).await;
    assert_eq!((status, body.as_str()), (200, r#"{"disconnected":true}"#));
    assert_disconnect(&recv_message(&mut alice).await, "KICKED");
    assert_eq!(recv_close(&mut alice).await, Some(1008));
    eventually("alice offline everywhere", LONG, || async {
        http_request(&a.admin, "GET", "/v1/clients/alice", &with)
            .await
            .0
            == 404
    })
    .await;
    let (status, body) =
        http_request(&a.admin, "POST", "/v1/clients/alice/disconnect", &with).await;
    assert_eq!((status, body.as_str()), (404, r#"{"disconnected":false}"#));
    // bob, on the same node, was not touched.
    let m = offer("bob");
    let mut carol = a.login("carol", &token(&s, "carol", &[]), JSON).await;
    carol.send(&m, JSON).await.unwrap();
    assert_eq!(recv_message(&mut bob).await.message_id, m.message_id);
    // The kick also works on the node that holds the session.
    let (status, _) = http_request(&a.admin, "POST", "/v1/clients/carol/disconnect", &with).await;
    assert_eq!(status, 200);
    assert_disconnect(&recv_message(&mut carol).await, "KICKED");
}
