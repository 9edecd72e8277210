//! Tokens verified with a JWK Set served by a local HTTP fixture: RS256,
//! ES256 and EdDSA keys chosen by `kid`, rotation without a restart, an
//! outage that keeps the last set, readiness before the first set, and
//! slow or oversized answers that cannot stall the node.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use signal_manager_service::app;
use signal_manager_service::config::Settings;
use signal_manager_service::Node;

use crate::support::http_fixture::{Behaviour, JwksServer};
use crate::support::*;
use crate::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    ed: EncodingKey,
}

fn keys() -> Keys {
    Keys {
        rsa: EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap(),
        ec: EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap(),
        ed: EncodingKey::from_ed_pem(&fixture("ed25519_private.pem")).unwrap(),
    }
}

/// A JWK Set body of `(key, algorithm, kid)` entries (public parts only).
fn set(entries: &[(&EncodingKey, Algorithm, &str)]) -> String {
    let keys: Vec<serde_json::Value> = entries
        .iter()
        .map(|(key, alg, kid)| {
            let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            serde_json::to_value(jwk).unwrap()
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn token(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &serde_json::json!({"sub": sub, "exp": exp}), key).unwrap()
}

fn jwks_settings(url: &str, refresh: u64) -> Settings {
    let mut s = test_settings();
    s.auth.jwks_url = Some(url.to_owned());
    s.auth.jwks_refresh = refresh;
    s
}

async fn start(settings: Settings) -> TestNode {
    let node: Arc<Node> = app::build_node(settings).await.expect("build node");
    TestNode::run_unready(node).await
}

async fn wait_ready(node: &TestNode) {
    eventually("readyz 200", Duration::from_secs(15), || async {
        node.get("/readyz").await.0 == 200
    })
    .await;
}

/// Connects `client` with `token`; the error code on refusal.
async fn try_login(node: &TestNode, client: &str, token: &str) -> Result<(), String> {
    let mut c = node.open().await;
    match c.authenticate(client, token, JSON).await {
        Ok(_) => Ok(()),
        Err(signal_manager_client::ClientError::Refused { code, .. }) => Err(code),
        Err(other) => Err(other.to_string()),
    }
}

const FAILED: &str = "signal_manager_jwks_fetches_total{result=\"failed\"}";

#[tokio::test]
async fn keys_are_chosen_by_kid_and_a_rotation_needs_no_restart() {
    let k = keys();
    let server = JwksServer::start(Behaviour::Serve(set(&[
        (&k.rsa, Algorithm::RS256, "rsa-1"),
        (&k.ec, Algorithm::ES256, "ec-1"),
        (&k.ed, Algorithm::EdDSA, "ed-1"),
    ])))
    .await;
    let node = start(jwks_settings(&server.url, 300)).await;
    wait_ready(&node).await;
    assert!(node
        .get("/metrics")
        .await
        .1
        .contains("signal_manager_jwks_keys 3"));

    let rsa = token(&k.rsa, Algorithm::RS256, Some("rsa-1"), "alice");
    let ec = token(&k.ec, Algorithm::ES256, Some("ec-1"), "alice");
    let ed = token(&k.ed, Algorithm::EdDSA, Some("ed-1"), "alice");
    for t in [&rsa, &ec, &ed] {
        assert_eq!(try_login(&node, "alice", t).await, Ok(()));
    }
    // The kid decides the key: a token naming another key's kid fails.
    let mislabelled = token(&k.rsa, Algorithm::RS256, Some("ec-1"), "alice");
    assert_eq!(
        try_login(&node, "alice", &mislabelled).await,
        Err("AUTH_FAILED".into())
    );
    // No kid while the set holds three keys: refused.
    let no_kid = token(&k.rsa, Algorithm::RS256, None, "alice");
    assert_eq!(
        try_login(&node, "alice", &no_kid).await,
        Err("AUTH_FAILED".into())
    );

    // Rotate: a new kid, the old keys gone.
    let fetched = server.requests();
    server.set(Behaviour::Serve(set(&[(&k.ec, Algorithm::ES256, "ec-2")])));
    let rotated = token(&k.ec, Algorithm::ES256, Some("ec-2"), "alice");
    assert_eq!(
        try_login(&node, "alice", &rotated).await,
        Ok(()),
        "an unknown kid refetches the set at once"
    );
    assert_eq!(server.requests(), fetched + 1);
    for old in [&rsa, &ec, &ed] {
        assert_eq!(
            try_login(&node, "alice", old).await,
            Err("AUTH_FAILED".into())
        );
    }
    assert_eq!(
        server.requests(),
        fetched + 1,
        "unknown kids refetch at most once every 10 s"
    );
    // One key left: a token without kid uses it.
    let single = token(&k.ec, Algorithm::ES256, None, "alice");
    assert_eq!(try_login(&node, "alice", &single).await, Ok(()));
}

#[tokio::test]
async fn readyz_waits_for_the_first_set_and_an_outage_keeps_the_last_one() {
    let k = keys();
    let server = JwksServer::start(Behaviour::Refuse).await;
    let node = start(jwks_settings(&server.url, 1)).await;
    eventually("a failed fetch", Duration::from_secs(10), || async {
        metric(&node.get("/metrics").await.1, FAILED) >= 1.0
    })
    .await;
    let (status, body) = node.get("/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "signing keys not loaded yet\n")
    );
    assert_eq!(node.get("/healthz").await.0, 200);

    server.set(Behaviour::Serve(set(&[(
        &k.rsa,
        Algorithm::RS256,
        "rsa-1",
    )])));
    wait_ready(&node).await;
    let t = token(&k.rsa, Algorithm::RS256, Some("rsa-1"), "alice");
    assert_eq!(try_login(&node, "alice", &t).await, Ok(()));

    // The JWKS server goes away: fetches fail, the last set stays in use.
    server.set(Behaviour::Refuse);
    let failed = metric(&node.get("/metrics").await.1, FAILED);
    eventually(
        "two more failed fetches",
        Duration::from_secs(10),
        || async { metric(&node.get("/metrics").await.1, FAILED) >= failed + 2.0 },
    )
    .await;
    assert_eq!(try_login(&node, "alice", &t).await, Ok(()));
    assert_eq!(node.get("/readyz").await.0, 200);
}

#[tokio::test]
async fn a_slow_or_endless_jwks_answer_does_not_stall_the_node() {
    let k = keys();
    let server = JwksServer::start(Behaviour::Serve(set(&[(
        &k.rsa,
        Algorithm::RS256,
        "rsa-1",
    )])))
    .await;
    let node = start(jwks_settings(&server.url, 300)).await;
    wait_ready(&node).await;
    let known = token(&k.rsa, Algorithm::RS256, Some("rsa-1"), "alice");
    let unknown = token(&k.rsa, Algorithm::RS256, Some("rsa-9"), "bob");

    // An unknown kid starts a fetch the server answers at one byte a second.
    server.set(Behaviour::Slow);
    let slow_login = {
        let url = node.url.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut c = signal_manager_client::Connection::open(&url).await.unwrap();
            let result = c.authenticate("bob", &unknown, JSON).await;
            (started.elapsed(), result.is_err())
        })
    };
    eventually("the slow fetch started", Duration::from_secs(5), || async {
        server.requests() >= 2
    })
    .await;
    // Meanwhile known keys, readiness and health answer at once.
    let started = Instant::now();
    assert_eq!(try_login(&node, "alice", &known).await, Ok(()));
    assert_eq!(node.get("/readyz").await.0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The slow fetch gives up at its timeout and the CONNECT is refused.
    let (took, refused) = slow_login.await.unwrap();
    assert!(refused);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(metric(&node.get("/metrics").await.1, FAILED) >= 1.0);

    // An endless body: the fetch stops at the size cap, the node stays up.
    let huge = JwksServer::start(Behaviour::Huge).await;
    let other = start(jwks_settings(&huge.url, 1)).await;
    eventually(
        "the oversized fetch failed",
        Duration::from_secs(10),
        || async { metric(&other.get("/metrics").await.1, FAILED) >= 1.0 },
    )
    .await;
    assert_eq!(other.get("/healthz").await.0, 200);
    assert_eq!(other.get("/readyz").await.0, 503);
}
