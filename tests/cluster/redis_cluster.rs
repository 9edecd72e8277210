//! Redis Cluster mode: the presence and bus contract suites against a
//! three-primary cluster, cross-node routing with each signal one
//! `SPUBLISH` on the shard owning the target's channel, the spread of node
//! channels over the shards, a seed that is not a cluster node, and a
//! primary's failover to its replica with no silent signal.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use signal_manager_service::bus::RedisClusterBus;
use signal_manager_service::config::RedisMode;
use signal_manager_service::metrics::Metrics;
use signal_manager_service::presence::RedisClusterPresence;
use signal_manager_service::protocol::{Codec, MessageType};
use signal_manager_service::redis_conn::{cluster_client, TlsOptions};
use tokio::time::Instant;

use crate::contract::{bus_contract, presence_contract};
use crate::support::redis_cluster::{self, RedisCluster};
use crate::support::redis_proc::{cli, plain};
use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::traffic::Traffic;
use crate::*;

const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
const BOB: (&str, &str) = ("test_client_2", "test_token_2");

fn seeds(cluster: &RedisCluster) -> Vec<String> {
    cluster.urls().split(',').map(str::to_owned).collect()
}

fn cluster_mode(cluster: &RedisCluster, prefix: &str, node: &str) -> Settings {
    let mut s = settings_for_url(&cluster.urls(), prefix, node);
    s.cluster.redis_mode = RedisMode::Cluster;
    s
}

#[tokio::test]
async fn redis_cluster_presence_meets_the_contract() {
    let cluster = redis_cluster::shared().await;
    let client = cluster_client(&seeds(cluster), &TlsOptions::default(), None).unwrap();
    let p = RedisClusterPresence::new(
        client,
        &unique_prefix("cpresence"),
        Duration::from_secs(2),
        Metrics::new().into(),
    );
    presence_contract(&p).await;
}

#[tokio::test]
async fn redis_cluster_bus_meets_the_contract() {
    let cluster = redis_cluster::shared().await;
    let bus = RedisClusterBus::new(
        &seeds(cluster),
        &TlsOptions::default(),
        &unique_prefix("cbus"),
        Metrics::new().into(),
    )
    .unwrap();
    bus_contract(&bus).await;
}

fn spublish_calls(port: u16) -> u64 {
    let stats = cli(&plain(port), &["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_spublish:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_signal_is_one_spublish_on_the_shard_owning_the_target_channel() {
    let cluster = redis_cluster::shared().await;
    let prefix = unique_prefix("shard");
    // Two node ids whose channels live on different shards, so the third
    // shard must see no publish at all.
    let owner = |node: &str| cluster.primary_for(&format!("{prefix}:node:{node}"));
    let a_id = "node-a";
    let b_id = (0..)
        .map(|i| format!("node-b{i}"))
        .find(|b| owner(b) != owner(a_id))
        .unwrap();
    let (a_shard, b_shard) = (owner(a_id), owner(&b_id));
    let a = start_with(cluster_mode(cluster, &prefix, a_id)).await;
    let b = start_with(cluster_mode(cluster, &prefix, &b_id)).await;
    crosses(&a, &b, ALICE, BOB).await;

    // The subscription is on the owning primary, and only there.
    let channel = format!("{prefix}:node:{b_id}");
    for port in cluster.primaries() {
        let answer = cli(&plain(port), &["PUBSUB", "SHARDNUMSUB", &channel]);
        let expected = if port == b_shard { "1" } else { "0" };
        assert_eq!(answer.lines().nth(1), Some(expected), "{port}: {answer}");
    }

    let others: Vec<u16> = cluster
        .primaries()
        .into_iter()
        .filter(|p| *p != a_shard && *p != b_shard)
        .collect();
    let before: Vec<u64> = [b_shard]
        .iter()
        .chain(&others)
        .map(|p| spublish_calls(*p))
        .collect();
    let mut alice = a.login(ALICE.0, ALICE.1, Codec::Json).await;
    let mut bob = b.login(BOB.0, BOB.1, Codec::Json).await;
    const N: u64 = 200;
    for _ in 0..N {
        let m = signal(MessageType::SignalOffer, BOB.0, "sdp");
        alice.send(&m, Codec::Json).await.unwrap();
        assert_eq!(recv_message(&mut bob).await.message_id, m.message_id);
    }
    let after: Vec<u64> = [b_shard]
        .iter()
        .chain(&others)
        .map(|p| spublish_calls(*p))
        .collect();
    let on_owner = after[0] - before[0];
    // node-b's own probes (one a second) land there too.
    assert!(
        (N..N + 10).contains(&on_owner),
        "{on_owner} SPUBLISH on the owning shard for {N} signals"
    );
    for (i, port) in others.iter().enumerate() {
        assert_eq!(after[i + 1], before[i + 1], "shard {port} saw a publish");
    }
    println!("{N} signals: {on_owner} SPUBLISH on the owning shard, 0 elsewhere");
}

#[tokio::test]
async fn channels_of_eight_nodes_spread_over_the_shards() {
    let cluster = redis_cluster::shared().await;
    let mut spread: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 1..=8 {
        let node = format!("node-{i}");
        spread
            .entry(cluster.primary_for(&format!("sm:node:{node}")))
            .or_default()
            .push(node);
    }
    let counts: Vec<usize> = spread.values().map(Vec::len).collect();
    println!("channels sm:node:node-1..8 over 3 shards: {counts:?} {spread:?}");
    assert_eq!(spread.len(), 3, "every shard carries some node channel");
    assert!(counts.iter().all(|c| *c <= 5));
}

#[test]
fn cluster_mode_on_a_server_that_is_not_a_cluster_node_stops_start_up() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(RedisServer::start());
    let out = Command::new(binary())
        .args([
            "--port",
            &free_port().to_string(),
            "--admin-port",
            &free_port().to_string(),
        ])
        .env("SIGNAL_MANAGER_CLUSTER_REDIS_URL", redis.url())
        .env("SIGNAL_MANAGER_CLUSTER_REDIS_MODE", "cluster")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("cluster.redis_url") && text.contains("not a Redis Cluster node"),
        "{text}"
    );
}

#[tokio::test]
async fn routing_survives_a_primary_failover_without_a_silent_signal() {
    let mut cluster = RedisCluster::start(1).await;
    let prefix = unique_prefix("cfail");
    let a = start_with(cluster_mode(&cluster, &prefix, "node-a")).await;
    let b = start_with(cluster_mode(&cluster, &prefix, "node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;

    let traffic = Traffic::start(&a.url, ALICE, &b.url, BOB).await;
    traffic.wait_back(LONG).await;
    // Kill the primary holding node-b's channel: its subscriber and every
    // publish to it must move to the promoted replica.
    let victim = cluster.primary_for(&format!("{prefix}:node:node-b"));
    cluster.kill(victim);
    let killed = Instant::now();
    let slot: u16 = cli(
        &plain(cluster.primaries()[0]),
        &["CLUSTER", "KEYSLOT", &format!("{prefix}:node:node-b")],
    )
    .parse()
    .unwrap();
    eventually("the replica takes over", Duration::from_secs(15), || {
        let owner = std::panic::catch_unwind(|| cluster.primary_for_slot(slot)).ok();
        async move { owner.is_some_and(|p| p != victim) }
    })
    .await;
    let promoted = killed.elapsed();
    traffic.wait_back(Duration::from_secs(15)).await;
    let outcome = traffic.finish(killed).await;
    let back = outcome.check_failover("cluster failover", promoted);
    assert!(
        back <= promoted + Duration::from_secs(2),
        "back {back:?}, promoted {promoted:?}"
    );
}
