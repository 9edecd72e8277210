//! ACL users: nodes work under exactly the rule docs/DEPLOYMENT.md
//! documents (these commands, keys `~<prefix>:*`, channels `&<prefix>:*`),
//! in standalone and Redis Cluster mode; a permission taken away shows as
//! an error naming the command.

use signal_manager_service::bus::{MessageBus, RedisBus};
use signal_manager_service::ids::NodeId;
use signal_manager_service::metrics::Metrics;
use signal_manager_service::presence::{PresenceRegistry, RedisPresence};
use tokio::sync::oneshot;

use crate::support::redis_cluster;
use crate::support::redis_proc::{cli, plain};
use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::*;

const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
const BOB: (&str, &str) = ("test_client_2", "test_token_2");

/// The commands of the documented rule (DEPLOYMENT.md, "ACL user").
pub const COMMANDS: &[&str] = &[
    "+ping",
    "+get",
    "+set",
    "+del",
    "+exists",
    "+pexpire",
    "+evalsha",
    "+script|load",
    "+publish",
    "+subscribe",
    "+role",
    "+spublish",
    "+ssubscribe",
    "+cluster|slots",
];

/// `ACL SETUSER <user> …` arguments: the documented rule for `prefix`,
/// without the commands in `except`.
pub fn rule(user: &str, prefix: &str, except: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["ACL", "SETUSER", user, "reset", "on", ">sm-password"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("~{prefix}:*"));
    args.push(format!("&{prefix}:*"));
    args.extend(
        COMMANDS
            .iter()
            .filter(|c| !except.contains(c))
            .map(|c| c.to_string()),
    );
    args
}

fn user_url(port: u16, user: &str) -> String {
    format!("redis://{user}:sm-password@127.0.0.1:{port}")
}

async fn set_user(redis: &RedisServer, args: &[String]) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(redis.command(&refs).await.contains("OK"));
}

#[tokio::test]
async fn nodes_work_under_the_documented_acl_rule() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("acl");
    set_user(&redis, &rule("sm", &prefix, &[])).await;
    let url = user_url(redis.port, "sm");
    let a = start_with(settings_for_url(&url, &prefix, "node-a")).await;
    let b = start_with(settings_for_url(&url, &prefix, "node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    crosses(&b, &a, BOB, ALICE).await;
    let admin = a.admin.clone();
    eventually("ready under the rule", LONG, || {
        let admin = admin.clone();
        async move { http_get(&admin, "/readyz").await.0 == 200 }
    })
    .await;
    // Nothing outside the prefix is reachable for this user.
    let denied = redis
        .command(&["ACL", "DRYRUN", "sm", "SET", "other:key", "1"])
        .await;
    assert!(denied.contains("no permissions"), "{denied}");
}

/// The error with its sources, as the node logs it.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_missing_permission_is_an_error_naming_the_command() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("noperm");
    set_user(&redis, &rule("no-set", &prefix, &["+set"])).await;
    set_user(&redis, &rule("no-publish", &prefix, &["+publish"])).await;

    let presence = RedisPresence::new(
        &user_url(redis.port, "no-set"),
        &prefix,
        Duration::from_secs(5),
        2,
        Metrics::new().into(),
    )
    .unwrap();
    let error = presence
        .keep_node_alive(&NodeId::new("n1"))
        .await
        .expect_err("SET is not allowed");
    let error = chain(&error);
    assert!(
        error.contains("no permissions") && error.contains("'set'"),
        "{error}"
    );

    let bus = RedisBus::new(
        &user_url(redis.port, "no-publish"),
        &prefix,
        Metrics::new().into(),
    )
    .unwrap();
    let (tx, rx) = oneshot::channel();
    bus.publish(
        &NodeId::new("n1"),
        bytes::Bytes::from_static(b"x"),
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    );
    let error = chain(&rx.await.unwrap().expect_err("PUBLISH is not allowed"));
    assert!(
        error.contains("no permissions") && error.contains("'publish'"),
        "{error}"
    );
}

#[tokio::test]
async fn nodes_work_under_the_documented_acl_rule_in_redis_cluster() {
    let cluster = redis_cluster::shared().await;
    let prefix = unique_prefix("cacl");
    let user = format!("u-{prefix}");
    let args = rule(&user, &prefix, &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    for node in &cluster.nodes {
        assert_eq!(cli(&plain(node.port), &refs), "OK");
    }
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| user_url(n.port, &user))
        .collect();
    let settings = |node: &str| {
        let mut s = settings_for_url(&urls.join(","), &prefix, node);
        s.cluster.redis_mode = signal_manager_service::config::RedisMode::Cluster;
        s
    };
    let a = start_with(settings("node-a")).await;
    let b = start_with(settings("node-b")).await;
    crosses(&a, &b, ALICE, BOB).await;
    crosses(&b, &a, BOB, ALICE).await;
}
