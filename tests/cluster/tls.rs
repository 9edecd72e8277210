//! Redis over TLS (`rediss://`, rustls): nodes route across each other
//! through a TLS-only server that requires client certificates, and
//! through a TLS-only Redis Cluster; a CA that
//! does not verify the server keeps a node unready with one log line
//! naming the reason; a bad TLS file stops start-up naming its key.

use std::process::{Command, Stdio};
use std::time::Duration;

use signal_manager_service::config::RedisMode;
use signal_manager_service::redis_conn::{Connector, TlsOptions};

use crate::support::redis_cluster::RedisCluster;
use crate::support::redis_tls::TlsRedis;
use crate::support::*;
use crate::*;

const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
const BOB: (&str, &str) = ("test_client_2", "test_token_2");

fn tls_settings(redis: &TlsRedis, prefix: &str, node: &str) -> Settings {
    let mut s = settings_for_url(&redis.url(), prefix, node);
    s.cluster.redis_tls_ca_path = Some(redis.files.ca.clone());
    s.cluster.redis_tls_cert_path = Some(redis.files.client_cert.clone());
    s.cluster.redis_tls_key_path = Some(redis.files.client_key.clone());
    s
}

#[tokio::test]
async fn nodes_route_across_each_other_over_mutual_tls() {
    let redis = TlsRedis::start(true).await;
    let prefix = unique_prefix("tls");
    let a = start_with(tls_settings(&redis, &prefix, "node-a")).await;
    let b = start_with(tls_settings(&redis, &prefix, "node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    crosses(&b, &a, BOB, ALICE).await;
    assert!(
        redis
            .cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| !l.contains("cmd=client"))
            .count()
            >= 4,
        "both nodes hold command and pub/sub connections over TLS"
    );

    // Without its client certificate the server turns a connection away.
    let mut no_cert = tls_settings(&redis, &prefix, "node-c");
    no_cert.cluster.redis_tls_cert_path = None;
    no_cert.cluster.redis_tls_key_path = None;
    let tls = TlsOptions::from_settings(&no_cert.cluster).unwrap();
    let refused = Connector::standalone(&redis.url(), &tls)
        .unwrap()
        .multiplexed()
        .await;
    assert!(refused.is_err(), "the server requires a client certificate");
}

#[tokio::test]
async fn a_certificate_that_does_not_verify_keeps_the_node_unready_with_one_line_saying_why() {
    let redis = TlsRedis::start(false).await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut child = Command::new(binary())
        .args([
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
        ])
        .env_remove("RUST_LOG")
        .env(
            "SIGNAL_MANAGER_CLUSTER_REDIS_URL",
            redis.url().replace("rediss://", "rediss://user:hunter2@"),
        )
        .env(
            "SIGNAL_MANAGER_CLUSTER_REDIS_TLS_CA_PATH",
            &redis.files.wrong_ca,
        )
        .env("SIGNAL_MANAGER_CLUSTER_KEY_PREFIX", unique_prefix("badca"))
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let admin = format!("127.0.0.1:{admin_port}");
    let path = log.path().to_owned();
    let lines = move || -> Vec<String> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("cannot connect to Redis"))
            .map(str::to_owned)
            .collect()
    };
    let deadline = tokio::time::Instant::now() + LONG;
    while lines().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reason logged: {}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It keeps trying and stays unready, without repeating itself.
    for _ in 0..25 {
        assert_eq!(http_get(&admin, "/readyz").await.0, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = lines();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(logged.len(), 1, "one line, not one per attempt: {logged:?}");
    let line = &logged[0];
    println!("{line}");
    assert!(
        line.contains("TLS") && line.contains("UnknownIssuer"),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "no secret in the log: {line}");
}

#[test]
fn a_bad_tls_file_stops_start_up_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    for (key, path) in [
        ("CA_PATH", &missing),
        ("CA_PATH", &garbage),
        ("CERT_PATH", &garbage),
    ] {
        let mut cmd = Command::new(binary());
        cmd.args([
            "--port",
            &free_port().to_string(),
            "--admin-port",
            &free_port().to_string(),
        ])
        .env("SIGNAL_MANAGER_CLUSTER_REDIS_URL", "rediss://127.0.0.1:1")
        .env(format!("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_{key}"), path)
        .env("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_KEY_PATH", &garbage)
        .env("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_CERT_PATH", &garbage);
        if key == "CA_PATH" {
            cmd.env_remove("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_KEY_PATH")
                .env_remove("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_CERT_PATH");
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{key} {}: started", path.display());
        let name = format!("cluster.redis_tls_{}", key.to_ascii_lowercase());
        assert!(
            text.contains(&name),
            "{key}: the error names {name}: {text}"
        );
    }
}

#[tokio::test]
async fn nodes_route_across_each_other_over_tls_in_redis_cluster() {
    let cluster = RedisCluster::start_tls().await;
    let files = cluster.tls.as_ref().expect("a TLS cluster");
    let prefix = unique_prefix("ctls");
    let settings = |node: &str| {
        let mut s = settings_for_url(&cluster.urls(), &prefix, node);
        s.cluster.redis_mode = RedisMode::Cluster;
        s.cluster.redis_tls_ca_path = Some(files.ca.clone());
        s
    };
    let a = start_with(settings("node-a")).await;
    let b = start_with(settings("node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    crosses(&b, &a, BOB, ALICE).await;
}
