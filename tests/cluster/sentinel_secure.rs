//! Sentinel mode with TLS and with ACL users: nodes find the master
//! through TLS-only Sentinels (mutual TLS everywhere), route across each
//! other and follow a kill -9 failover; and nodes work under exactly the
//! documented ACL rule while the Sentinels have a password of their own,
//! a wrong one being an error that names `cluster.redis_sentinel_password`.

use signal_manager_service::config::Secret;
use signal_manager_service::redis_conn::{Connector, TlsOptions};

use crate::acl::{chain, rule};
use crate::sentinel::{sentinel_settings, FAILOVER_BUDGET};
use crate::support::redis_sentinel::{
    SentinelOptions, SentinelSet, MASTER_NAME, SENTINEL_PASSWORD,
};
use crate::support::*;
use crate::traffic::Traffic;
use crate::*;

const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
const BOB: (&str, &str) = ("test_client_2", "test_token_2");

/// A node of `set` (TLS-only) with the test CA and a client certificate.
fn tls_settings(set: &SentinelSet, prefix: &str, node: &str) -> Settings {
    let files = set.tls.as_ref().expect("a TLS set");
    let mut s = sentinel_settings(set, prefix, node);
    s.cluster.redis_tls_ca_path = Some(files.ca.clone());
    s.cluster.redis_tls_cert_path = Some(files.client_cert.clone());
    s.cluster.redis_tls_key_path = Some(files.client_key.clone());
    s
}

#[tokio::test]
async fn nodes_find_the_master_through_sentinels_over_tls_and_follow_a_failover() {
    let mut set = SentinelSet::start_with(SentinelOptions {
        tls: true,
        ..SentinelOptions::default()
    })
    .await;
    let prefix = unique_prefix("stls");
    let a = start_with(tls_settings(&set, &prefix, "node-a")).await;
    let b = start_with(tls_settings(&set, &prefix, "node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    crosses(&b, &a, BOB, ALICE).await;
    // The master has no plain port: the node reached it over TLS, and
    // subscribed there.
    let channel = format!("{prefix}:node:node-b");
    let numsub = set.data_cli(set.master.port, &["PUBSUB", "NUMSUB", &channel]);
    assert!(numsub.ends_with('1'), "{numsub}");

    // Every Sentinel requires a client certificate: without one, discovery
    // fails.
    let mut no_cert = tls_settings(&set, &prefix, "node-c");
    no_cert.cluster.redis_tls_cert_path = None;
    no_cert.cluster.redis_tls_key_path = None;
    let tls = TlsOptions::from_settings(&no_cert.cluster).unwrap();
    let refused = Connector::sentinel(&no_cert.cluster.redis_urls(), MASTER_NAME, None, &tls)
        .unwrap()
        .multiplexed()
        .await;
    assert!(
        refused.is_err(),
        "the Sentinels require a client certificate"
    );

    let traffic = Traffic::start(&a.url, ALICE, &b.url, BOB).await;
    traffic.wait_back(LONG).await;
    let (killed, promoted) = set.kill_master_until_promoted(FAILOVER_BUDGET).await;
    traffic
        .wait_back(FAILOVER_BUDGET + Duration::from_secs(2))
        .await;
    let outcome = traffic.finish(killed).await;
    outcome.check_failover("sentinel failover over TLS", promoted);
    // (After +switch-master a node may resubscribe once more.)
    eventually("node-b subscribed on the promoted replica", LONG, || {
        let numsub = set.data_cli(set.replica.port, &["PUBSUB", "NUMSUB", &channel]);
        async move { numsub.ends_with('1') }
    })
    .await;
}

/// Whether `ACL LOG` (as redis-cli prints it) has an entry for `user`.
fn denied_for(acl_log: &str, user: &str) -> bool {
    let lines: Vec<&str> = acl_log.lines().map(str::trim).collect();
    lines.windows(2).any(|w| w[0] == "username" && w[1] == user)
}

#[tokio::test]
async fn nodes_work_under_the_documented_acl_rule_in_sentinel_mode() {
    let set = SentinelSet::start_with(SentinelOptions {
        acl: true,
        ..SentinelOptions::default()
    })
    .await;
    let prefix = unique_prefix("sacl");
    let args = rule("sm", &prefix, &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // ACLs are per server: the replica needs the user once it is promoted.
    for port in [set.master.port, set.replica.port] {
        assert_eq!(set.data_cli(port, &refs), "OK");
    }
    let urls = set.urls_as("sm:sm-password@");
    let settings = |node: &str| {
        let mut s = sentinel_settings(&set, &prefix, node);
        s.cluster.redis_url = Some(Secret::new(&urls));
        s.cluster.redis_sentinel_password = Some(Secret::new(SENTINEL_PASSWORD));
        s
    };
    let a = start_with(settings("node-a")).await;
    let b = start_with(settings("node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    crosses(&b, &a, BOB, ALICE).await;
    // The rule was enough for everything the nodes did, upkeep included.
    let log = set.data_cli(set.master.port, &["ACL", "LOG"]);
    assert!(!denied_for(&log, "sm"), "the node was refused: {log}");

    // A wrong Sentinel password, and none (the URL's credentials then go
    // to the Sentinels, which refuse them), each name the key to set.
    let url_list: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let connect = |urls: Vec<String>, password: Option<&'static str>| async move {
        Connector::sentinel(&urls, MASTER_NAME, password, &TlsOptions::default())
            .unwrap()
            .multiplexed()
            .await
    };
    for password in [Some("wrong-password"), None] {
        let error = connect(url_list.clone(), password)
            .await
            .expect_err("the Sentinels refuse the password");
        let error = chain(&error);
        println!("Sentinel password {password:?}: {error}");
        assert!(error.contains("cluster.redis_sentinel_password"), "{error}");
        assert!(!error.contains("wrong-password") && !error.contains("sm-password"));
    }
    // The right Sentinel password and a wrong data password: the master
    // is the one that refuses.
    let wrong_data: Vec<String> = url_list
        .iter()
        .map(|u| u.replace("sm-password", "not-it"))
        .collect();
    let error = chain(
        &connect(wrong_data, Some(SENTINEL_PASSWORD))
            .await
            .expect_err("the master refuses the password"),
    );
    println!("data password wrong: {error}");
    assert!(
        error.contains("master") && error.contains("cluster.redis_url"),
        "{error}"
    );

    // Sentinels without a password of their own (Redis's default) and the
    // data user in the URLs, no cluster.redis_sentinel_password: the
    // Sentinels refuse the URL's credentials, so they are asked without.
    for s in &set.sentinels {
        let open = set.sentinel_cli(s.port, &["ACL", "SETUSER", "default", "nopass"]);
        assert_eq!(open, "OK");
    }
    let mut open = settings("node-c");
    open.cluster.redis_sentinel_password = None;
    let c = start_with(open).await;
    crosses(&c, &a, BOB, ALICE).await;
}
