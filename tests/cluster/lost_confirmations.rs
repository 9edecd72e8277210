//! Confirmations that Redis counted as received but the origin never read
//! (its pub/sub connection lost with them in it) are asked for again and
//! published again: a delivered signal is never also answered.
//!
//! The origin node reaches Redis through a tap that, for a moment, reads
//! and drops everything Redis sends it, then cuts its connections: the
//! receiving node's confirmations of that moment are counted (the origin
//! is still subscribed) and lost, as when a demoted master's pub/sub
//! clients are killed. Without asking again, each signal delivered in that
//! moment would also be answered PEER_UNREACHABLE.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::redis_server::RedisServer;
use crate::support::tcp_tap::TcpTap;
use crate::traffic::Traffic;
use crate::*;

const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
const BOB: (&str, &str) = ("test_client_2", "test_token_2");

/// How long the origin hears nothing from Redis: long enough for many
/// signals to be delivered and their confirmations lost, short of its
/// probes' alarm (three missed, 3 s) and of the receiver's accept window.
const DEAF_FOR: Duration = Duration::from_millis(400);

#[tokio::test]
async fn confirmations_lost_with_the_origins_subscription_are_sent_again() {
    let redis = RedisServer::start().await;
    let tap = TcpTap::start(redis.port).await;
    let prefix = unique_prefix("lost-confirm");
    let a = start_with(settings_for_url(&tap.url(), &prefix, "node-a")).await;
    let b = start_with(cluster_settings(&redis, &prefix, "node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    let traffic = Traffic::start(&a.url, ALICE, &b.url, BOB).await;
    traffic.wait_back(LONG).await;

    for round in 0..3 {
        let started = Instant::now();
        tap.blackhole(true);
        tokio::time::sleep(DEAF_FOR).await;
        tap.cut();
        tap.blackhole(false);
        traffic.wait_back(LONG).await;
        println!(
            "round {round}: routing back {:?} after going deaf",
            started.elapsed()
        );
    }
    let outcome = traffic.finish(Instant::now()).await;
    println!("lost confirmations: {outcome:?}");
    outcome.print_duplicates("lost confirmations");
    assert_eq!(outcome.silent, 0, "no signal goes unanswered");
    assert_eq!(
        outcome.duplicated, 0,
        "duplicates: {:?}",
        outcome.duplicates
    );
    assert!(
        outcome.delivered > 200,
        "the traffic ran through the faults: {outcome:?}"
    );
}
