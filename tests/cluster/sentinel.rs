//! Sentinel mode: nodes find the master through any Sentinel, route across
//! each other, and follow a failover (kill -9 of the master): commands,
//! publishes and the subscription reconnect to the promoted replica, local
//! sessions are registered again, and no signal goes unanswered meanwhile.

use std::time::Duration;

use signal_manager_service::config::RedisMode;
use tokio::time::Instant;

use signal_manager_service::protocol::Codec;

use crate::support::redis_proc::{cli, plain};
use crate::support::redis_sentinel::{SentinelSet, MASTER_NAME};
use crate::support::*;
use crate::traffic::Traffic;
use crate::*;

const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
const BOB: (&str, &str) = ("test_client_2", "test_token_2");

/// Sentinel's down-after (1 s) plus its election and promotion.
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(10);

/// Settings for a node that finds the master through `set`'s Sentinels.
pub fn sentinel_settings(set: &SentinelSet, prefix: &str, node: &str) -> Settings {
    let mut s = settings_for_url(&set.urls(), prefix, node);
    s.cluster.redis_mode = RedisMode::Sentinel;
    s.cluster.redis_sentinel_master = Some(MASTER_NAME.into());
    s
}

#[tokio::test]
async fn nodes_follow_a_sentinel_failover_without_a_silent_signal() {
    let mut set = SentinelSet::start().await;
    let prefix = unique_prefix("sentinel");
    let a = start_with(sentinel_settings(&set, &prefix, "node-a")).await;
    let b = start_with(sentinel_settings(&set, &prefix, "node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;

    let traffic = Traffic::start(&a.url, ALICE, &b.url, BOB).await;
    traffic.wait_back(LONG).await;
    let (killed, promoted) = set.kill_master_until_promoted(FAILOVER_BUDGET).await;
    traffic
        .wait_back(FAILOVER_BUDGET + Duration::from_secs(2))
        .await;
    let outcome = traffic.finish(killed).await;
    let back = outcome.check_failover("sentinel failover", promoted);
    assert!(
        back <= promoted + Duration::from_secs(2),
        "routing back {back:?} after the kill, promotion took {promoted:?}"
    );
    // Both nodes are ready on the new master, their sessions registered there.
    for node in [&a, &b] {
        let admin = node.admin.clone();
        eventually("ready on the new master", LONG, || {
            let admin = admin.clone();
            async move { http_get(&admin, "/readyz").await.0 == 200 }
        })
        .await;
    }
}

#[tokio::test]
async fn nodes_leave_a_demoted_master_on_a_manual_failover() {
    let set = SentinelSet::start().await;
    let prefix = unique_prefix("switch");
    let a = start_with(sentinel_settings(&set, &prefix, "node-a")).await;
    let b = start_with(sentinel_settings(&set, &prefix, "node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    let traffic = Traffic::start(&a.url, ALICE, &b.url, BOB).await;
    traffic.wait_back(LONG).await;

    // The old master stays up and answers, as a replica: only the
    // +switch-master announcement tells the nodes to leave it.
    let (old, new) = (set.master.port, set.replica.port);
    let started = Instant::now();
    assert_eq!(
        cli(
            &plain(set.sentinels[0].port),
            &["SENTINEL", "FAILOVER", MASTER_NAME]
        ),
        "OK"
    );
    eventually("Sentinel names the replica", FAILOVER_BUDGET, || {
        let reported = set.reported_master_port();
        async move { reported == Some(new) }
    })
    .await;
    let channel = format!("{prefix}:node:node-b");
    eventually("node-b subscribed on the new master only", LONG, || {
        let (on_new, on_old) = (
            cli(&plain(new), &["PUBSUB", "NUMSUB", &channel]),
            cli(&plain(old), &["PUBSUB", "NUMSUB", &channel]),
        );
        async move { on_new.ends_with('1') && on_old.ends_with('0') }
    })
    .await;
    traffic.wait_back(LONG).await;
    let outcome = traffic.finish(started).await;
    println!("manual sentinel failover: {outcome:?}");
    outcome.print_duplicates("manual sentinel failover");
    assert_eq!(outcome.silent, 0);
    assert_eq!(
        outcome.duplicated, 0,
        "duplicates: {:?}",
        outcome.duplicates
    );
    // Writes go to the new master: a new session registers there (a write
    // on the demoted master would fail, and the CONNECT with it).
    let mut again = a.login(ALICE.0, ALICE.1, Codec::Json).await;
    again.close().await;
    assert!(cli(&plain(new), &["EXISTS", &format!("{prefix}:node:node-a")]).ends_with('1'));
}
