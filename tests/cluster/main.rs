//! Cluster mode over a real `redis-server` per test: the seam contracts
//! against both backends, cross-node routing, takeover, node and Redis
//! faults, and no silent loss.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod acl;
mod chaos;
mod contract;
mod delivery;
mod faults;
mod lost_confirmations;
mod otlp_tls;
mod redis_cluster;
mod resume;
mod routing;
mod sentinel;
mod sentinel_secure;
mod tls;
mod tracing;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use signal_manager_service::app;
use signal_manager_service::config::{Secret, Settings};
use signal_manager_service::Node;
use support::redis_server::RedisServer;
use support::{test_settings, TestNode};

/// Settings for a node of a test cluster on `redis` under `prefix`.
pub fn cluster_settings(redis: &RedisServer, prefix: &str, node_id: &str) -> Settings {
    settings_for_url(&redis.url(), prefix, node_id)
}

/// Settings for a node of a test cluster on the Redis at `url`.
pub fn settings_for_url(url: &str, prefix: &str, node_id: &str) -> Settings {
    let mut s = test_settings();
    s.cluster.redis_url = Some(Secret::new(url));
    s.cluster.key_prefix = prefix.to_owned();
    s.cluster.node_id = Some(node_id.to_owned());
    s.cluster.presence_ttl = Some(3);
    s.server.heartbeat_interval = 10;
    s.server.rate_limit_per_second = 1_000_000;
    s.server.rate_limit_burst = 1_000_000;
    s.server.outbound_queue_frames = 50_000;
    s.server.outbound_queue_bytes = 64 << 20;
    s
}

/// Starts an in-process cluster node.
pub async fn start_node(redis: &RedisServer, prefix: &str, node_id: &str) -> TestNode {
    let node: Arc<Node> = app::build_node(cluster_settings(redis, prefix, node_id))
        .await
        .expect("build cluster node");
    TestNode::run(node).await
}

/// Starts an in-process node on `settings`.
pub async fn start_with(settings: Settings) -> TestNode {
    let node: Arc<Node> = app::build_node(settings).await.expect("build cluster node");
    TestNode::run(node).await
}

/// Sends one offer from `from` (on `a`) to `to` (on `b`) and waits for it;
/// retried while the cluster settles (a fresh node may not be subscribed yet).
pub async fn crosses(a: &TestNode, b: &TestNode, from: (&str, &str), to: (&str, &str)) {
    use signal_manager_service::protocol::{Codec, MessageType};
    let mut sender = a.login(from.0, from.1, Codec::Json).await;
    let mut receiver = b.login(to.0, to.1, Codec::Json).await;
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let m = support::signal(MessageType::SignalOffer, to.0, "sdp");
        sender.send(&m, Codec::Json).await.unwrap();
        let got = tokio::time::timeout(
            Duration::from_millis(500),
            support::recv_message(&mut receiver),
        )
        .await;
        if matches!(got, Ok(got) if got.message_id == m.message_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no signal crossed from {} to {} within {LONG:?}",
            from.0,
            to.0
        );
    }
    sender.close().await;
    receiver.close().await;
}

/// A key prefix unique to this test run.
pub fn unique_prefix(name: &str) -> String {
    format!(
        "t-{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub const LONG: Duration = Duration::from_secs(10);
