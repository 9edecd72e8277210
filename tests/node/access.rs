//! Protocol 1.1 on one node: ICE servers in CONNECT_ACK (checked against an
//! independent HMAC computation), the peers claim, and the admin API.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signal_manager_client::Connection;
use signal_manager_service::auth;
use signal_manager_service::config::{Secret, Settings};
use signal_manager_service::protocol::{Message, MessageType, Payload};

use crate::support::http_fixture::http_request;
use crate::support::*;
use crate::*;

const SECRET: &str = "node-secret";
const TURN_SECRET: &str = "turn-shared-secret";
const API_TOKEN: &str = "admin-api-token";

fn secured() -> Settings {
    let mut s = test_settings();
    s.auth.token_secret = Some(Secret::new(SECRET));
    s
}

fn token(s: &Settings, client: &str, peers: &[&str]) -> String {
    let peers: Vec<String> = peers.iter().map(|p| (*p).to_owned()).collect();
    auth::mint_with_peers(&s.auth, client, Duration::from_secs(600), &peers).unwrap()
}

/// base64(HMAC-SHA1(secret, data)) by the openssl command line, not by the
/// crates the node uses.
fn openssl_hmac_sha1_base64(secret: &str, data: &str) -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            "printf %s \"$DATA\" | openssl dgst -sha1 -hmac \"$KEY\" -binary | base64",
        ])
        .env("DATA", data)
        .env("KEY", secret)
        .output()
        .expect("openssl is needed: apt-get install -y openssl");
    assert!(out.status.success(), "openssl failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn connect_ack_carries_stun_and_turn_servers_with_rest_api_credentials() {
    let mut s = secured();
    s.turn.urls = vec![
        "turn:127.0.0.1:3478".into(),
        "turn:127.0.0.1:3478?transport=tcp".into(),
    ];
    s.turn.stun_urls = vec!["stun:127.0.0.1:3478".into()];
    s.turn.secret = Some(Secret::new(TURN_SECRET));
    s.turn.ttl = 600;
    let node = TestNode::start(s.clone()).await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut alice = node.open().await;
    let ack = alice
        .authenticate("alice", &token(&s, "alice", &[]), JSON)
        .await
        .unwrap();
    assert!(!ack.resumed);
    assert_eq!(ack.ice_servers.len(), 2, "{:?}", ack.ice_servers);
    let stun = &ack.ice_servers[0];
    assert_eq!(stun.urls, ["stun:127.0.0.1:3478"]);
    assert!(stun.username.is_empty() && stun.credential.is_empty());
    let turn = &ack.ice_servers[1];
    assert_eq!(turn.urls, s.turn.urls);
    let (expiry, who) = turn.username.split_once(':').unwrap();
    assert_eq!(who, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    assert!((before + 600..=before + 605).contains(&expiry), "{expiry}");
    assert_eq!(
        turn.credential,
        openssl_hmac_sha1_base64(TURN_SECRET, &turn.username)
    );
    assert_ne!(
        turn.credential,
        openssl_hmac_sha1_base64("another secret", &turn.username),
        "the check can fail"
    );

    // A refresh's CONNECT_ACK carries credentials too.
    let refresh = connect("alice", &token(&s, "alice", &[]));
    alice.send(&refresh, JSON).await.unwrap();
    match recv_message(&mut alice).await.payload {
        Payload::ConnectAck(again) => {
            assert_eq!(again.session_id, ack.session_id);
            assert_eq!(again.ice_servers.len(), 2);
            assert_eq!(
                again.ice_servers[1].credential,
                openssl_hmac_sha1_base64(TURN_SECRET, &again.ice_servers[1].username)
            );
        }
        other => panic!("expected CONNECT_ACK, got {other:?}"),
    }

    // Without [turn], no ice_servers at all.
    let plain = TestNode::start(secured()).await;
    let mut bob = plain.open().await;
    let ack = bob
        .authenticate("bob", &token(&s, "bob", &[]), JSON)
        .await
        .unwrap();
    assert!(ack.ice_servers.is_empty());
}

/// Sends a heartbeat and expects its ACK as the next message: proves that
/// nothing (no signal) was queued for `conn` before it.
async fn expect_nothing_queued(conn: &mut Connection) {
    let hb = Message::new(MessageType::Heartbeat, Payload::empty());
    conn.send(&hb, JSON).await.unwrap();
    let next = recv_message(conn).await;
    assert_eq!(
        (next.message_type, next.message_id),
        (MessageType::HeartbeatAck, hb.message_id),
        "unexpected {next:?}"
    );
}

#[tokio::test]
async fn the_peers_claim_allows_exact_prefix_and_wildcard_targets_only() {
    let s = secured();
    let node = TestNode::start(s.clone()).await;
    let mut alice = node.open().await;
    alice
        .authenticate("alice", &token(&s, "alice", &["bob", "room-1:*"]), JSON)
        .await
        .unwrap();
    let mut bob = node.login("bob", &token(&s, "bob", &[]), JSON).await;
    let mut carol = node
        .login("room-1:carol", &token(&s, "room-1:carol", &[]), JSON)
        .await;
    let mut dave = node.login("dave", &token(&s, "dave", &["*"]), JSON).await;

    for (target, conn) in [("bob", &mut bob), ("room-1:carol", &mut carol)] {
        let m = offer(target, "sdp");
        alice.send(&m, JSON).await.unwrap();
        assert_eq!(recv_message(conn).await.message_id, m.message_id);
    }
    // dave is online, but not allowed: FORBIDDEN, nothing delivered.
    let refused = offer("dave", "sdp");
    alice.send(&refused, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "FORBIDDEN",
        refused.message_id,
    );
    expect_nothing_queued(&mut dave).await;
    // An offline target that is not allowed is FORBIDDEN too (checked first).
    let offline = offer("room-2:erin", "sdp");
    alice.send(&offline, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut alice).await,
        "FORBIDDEN",
        offline.message_id,
    );
    // The session goes on.
    let again = offer("bob", "again");
    alice.send(&again, JSON).await.unwrap();
    assert_eq!(recv_message(&mut bob).await.message_id, again.message_id);
    // `*` allows anyone.
    let m = offer("alice", "from dave");
    dave.send(&m, JSON).await.unwrap();
    assert_eq!(recv_message(&mut alice).await.message_id, m.message_id);

    let metrics = node.get("/metrics").await.1;
    assert!(
        metrics.contains("signal_manager_forbidden_signals_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_refresh_replaces_the_peers_claim() {
    let s = secured();
    let node = TestNode::start(s.clone()).await;
    let mut alice = node
        .login("alice", &token(&s, "alice", &["bob"]), JSON)
        .await;
    let mut bob = node.login("bob", &token(&s, "bob", &[]), JSON).await;
    let mut carol = node.login("carol", &token(&s, "carol", &[]), JSON).await;
    let m = offer("carol", "x");
    alice.send(&m, JSON).await.unwrap();
    assert_error(&recv_message(&mut alice).await, "FORBIDDEN", m.message_id);

    alice
        .send(&connect("alice", &token(&s, "alice", &["carol"])), JSON)
        .await
        .unwrap();
    assert!(matches!(
        recv_message(&mut alice).await.payload,
        Payload::ConnectAck(_)
    ));
    let m = offer("carol", "y");
    alice.send(&m, JSON).await.unwrap();
    assert_eq!(recv_message(&mut carol).await.message_id, m.message_id);
    let m = offer("bob", "z");
    alice.send(&m, JSON).await.unwrap();
    assert_error(&recv_message(&mut alice).await, "FORBIDDEN", m.message_id);
    expect_nothing_queued(&mut bob).await;

    // A refresh without the claim allows everyone again.
    alice
        .send(&connect("alice", &token(&s, "alice", &[])), JSON)
        .await
        .unwrap();
    recv_message(&mut alice).await;
    let m = offer("bob", "w");
    alice.send(&m, JSON).await.unwrap();
    assert_eq!(recv_message(&mut bob).await.message_id, m.message_id);
}

#[tokio::test]
async fn require_peers_claim_refuses_tokens_without_it_at_connect() {
    let mut s = secured();
    s.auth.require_peers_claim = true;
    let node = TestNode::start(s.clone()).await;
    let mut refused = node.open().await;
    let m = connect("alice", &token(&s, "alice", &[]));
    refused.send(&m, JSON).await.unwrap();
    assert_error(
        &recv_message(&mut refused).await,
        "AUTH_FAILED",
        m.message_id,
    );
    assert_eq!(recv_close(&mut refused).await, Some(1008));
    // A claim of the wrong type is refused the same way.
    let wrong = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64, "peers": "bob"}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut c = node.open().await;
    let m = connect("alice", &wrong);
    c.send(&m, JSON).await.unwrap();
    assert_error(&recv_message(&mut c).await, "AUTH_FAILED", m.message_id);
    // With the claim: in.
    let mut ok = node.open().await;
    ok.authenticate("alice", &token(&s, "alice", &["bob"]), JSON)
        .await
        .unwrap();
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn admin_api_finds_and_kicks_a_local_client() {
    let mut s = test_settings();
    s.admin.api_token = Some(Secret::new(API_TOKEN));
    let node = TestNode::start(s).await;
    let mut alice = node.login(ALICE.0, ALICE.1, JSON).await;
    let auth = bearer(API_TOKEN);
    let with = [("Authorization", auth.as_str())];

    let (status, body) = http_request(&node.admin, "GET", "/v1/clients/test_client_1", &with).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["online"], true);
    assert_eq!(v["node_id"], node.node.id().as_str());
    assert!(uuid::Uuid::parse_str(v["session_id"].as_str().unwrap()).is_ok());

    let (status, body) = http_request(&node.admin, "GET", "/v1/clients/nobody", &with).await;
    assert_eq!((status, body.as_str()), (404, r#"{"online":false}"#));

    // Missing, wrong, and differently shaped tokens: 401.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Bearer admin-api-token-and-more")],
        vec![("Authorization", API_TOKEN)],
    ] {
        let (status, _) = http_request(
            &node.admin,
            "POST",
            "/v1/clients/test_client_1/disconnect",
            &headers,
        )
        .await;
        assert_eq!(status, 401, "{headers:?}");
    }
    // Malformed ids: 400.
    for path in ["/v1/clients/a%20b", "/v1/clients/%C3%A9/disconnect"] {
        let method = if path.ends_with("disconnect") {
            "POST"
        } else {
            "GET"
        };
        assert_eq!(
            http_request(&node.admin, method, path, &with).await.0,
            400,
            "{path}"
        );
    }
    let long = format!("/v1/clients/{}", "x".repeat(129));
    assert_eq!(http_request(&node.admin, "GET", &long, &with).await.0, 400);
    // A request head beyond the admin listener's bound is refused, and the
    // listener goes on serving.
    let huge = "y".repeat(64 * 1024);
    let (status, _) = http_request(
        &node.admin,
        "GET",
        "/v1/clients/test_client_1",
        &[("Authorization", auth.as_str()), ("X-Padding", &huge)],
    )
    .await;
    assert!(
        matches!(status, 0 | 400 | 431),
        "oversized head answered {status}"
    );
    assert_eq!(node.get("/healthz").await.0, 200);

    let (status, body) = http_request(
        &node.admin,
        "POST",
        "/v1/clients/test_client_1/disconnect",
        &with,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"disconnected":true}"#));
    assert_disconnect(&recv_message(&mut alice).await, "KICKED");
    assert_eq!(recv_close(&mut alice).await, Some(1008));
    eventually("alice offline", Duration::from_secs(5), || async {
        http_request(&node.admin, "GET", "/v1/clients/test_client_1", &with)
            .await
            .0
            == 404
    })
    .await;
    let (status, body) = http_request(
        &node.admin,
        "POST",
        "/v1/clients/test_client_1/disconnect",
        &with,
    )
    .await;
    assert_eq!((status, body.as_str()), (404, r#"{"disconnected":false}"#));

    let metrics = node.get("/metrics").await.1;
    for line in [
        "signal_manager_admin_requests_total{endpoint=\"disconnect\",outcome=\"ok\"} 1",
        "signal_manager_admin_requests_total{endpoint=\"disconnect\",outcome=\"unauthorized\"} 4",
        "signal_manager_disconnects_total{reason=\"KICKED\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in {metrics}");
    }
}

#[tokio::test]
async fn a_kicked_session_that_lost_its_socket_cannot_be_resumed() {
    let mut s = test_settings();
    s.admin.api_token = Some(Secret::new(API_TOKEN));
    s.server.resume_window = 30;
    let node = TestNode::start(s).await;
    let auth = bearer(API_TOKEN);
    let with = [("Authorization", auth.as_str())];
    let mut alice = node.open().await;
    let ack = alice.authenticate(ALICE.0, ALICE.1, JSON).await.unwrap();
    let resume_token = ack.resume_token.clone().expect("resume is on");
    // The socket goes away without DISCONNECT: the session is parked, and
    // still online for everyone.
    drop(alice);
    eventually("alice parked", Duration::from_secs(5), || async {
        node.get("/metrics")
            .await
            .1
            .contains("signal_manager_resumable_sessions 1")
    })
    .await;
    let (status, _) = http_request(&node.admin, "GET", "/v1/clients/test_client_1", &with).await;
    assert_eq!(status, 200);
    let (status, body) = http_request(
        &node.admin,
        "POST",
        "/v1/clients/test_client_1/disconnect",
        &with,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"disconnected":true}"#));
    eventually("alice offline", Duration::from_secs(5), || async {
        http_request(&node.admin, "GET", "/v1/clients/test_client_1", &with)
            .await
            .0
            == 404
    })
    .await;
    let mut again = node.open().await;
    let ack = again
        .authenticate_resuming(ALICE.0, ALICE.1, Some(&resume_token), JSON)
        .await
        .unwrap();
    assert!(!ack.resumed, "a kicked session is not resumable");
    assert_ne!(ack.session_id, "");
}

#[tokio::test]
async fn admin_api_is_absent_without_a_token() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = node.login(ALICE.0, ALICE.1, JSON).await;
    for (method, path) in [
        ("GET", "/v1/clients/test_client_1"),
        ("POST", "/v1/clients/test_client_1/disconnect"),
        ("GET", "/v1"),
    ] {
        let headers = [("Authorization", "Bearer anything")];
        assert_eq!(
            http_request(&node.admin, method, path, &headers).await.0,
            404
        );
    }
    assert_eq!(node.get("/readyz").await.0, 200, "the rest of admin works");
    // And the session was not touched.
    expect_nothing_queued(&mut alice).await;
}

fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(binary());
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run binary")
}

#[tokio::test]
async fn the_token_subcommand_writes_the_peers_claim() {
    let env = [("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", SECRET)];
    let out = run_binary(
        &[
            "token",
            "--client-id",
            "alice",
            "--peer",
            "bob",
            "--peer",
            "room-1:*",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let node = TestNode::start(secured()).await;
    let mut alice = node.login("alice", &token, JSON).await;
    let _bob = node.login("bob", &token_for("bob"), JSON).await;
    let mut carol = node.login("carol", &token_for("carol"), JSON).await;
    let m = offer("carol", "x");
    alice.send(&m, JSON).await.unwrap();
    assert_error(&recv_message(&mut alice).await, "FORBIDDEN", m.message_id);
    expect_nothing_queued(&mut carol).await;

    let bad = run_binary(&["token", "--client-id", "alice", "--peer", "a*b"], &env);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--peer"));
}

fn token_for(client: &str) -> String {
    token(&secured(), client, &[])
}

#[test]
fn two_key_sources_stop_start_up_naming_both() {
    let (port, admin) = (free_port().to_string(), free_port().to_string());
    let out = run_binary(
        &["--port", &port, "--admin-port", &admin],
        &[
            ("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", "hunter2-secret"),
            (
                "SIGNAL_MANAGER_AUTH_JWKS_URL",
                "https://issuer.example/jwks.json",
            ),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.token_secret") && stderr.contains("auth.jwks_url"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2-secret"));
}
