//! Counters read from outside the nodes over a measured window: Redis
//! `INFO commandstats` / `INFO stats` and the pub/sub topology, and each
//! node's `/metrics` (cross-node signals sent and received). Their deltas
//! per delivered signal show whether a signal's cost grows with the number
//! of nodes (it must not: one PUBLISH, received by exactly one node).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Common;

const TIMEOUT: Duration = Duration::from_secs(3);

/// One reading of every counter this module knows.
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    /// `cmdstat_<name>` → calls.
    commands: BTreeMap<String, u64>,
    /// `total_commands_processed`, `total_net_output_bytes`, ...
    stats: BTreeMap<String, u64>,
    /// Per node (in `--admin-url` order): (cross-node sent, cross-node received).
    nodes: Vec<Option<(f64, f64)>>,
}

impl ClusterSnapshot {
    /// Reads Redis (when `--redis-url` is set) and every `--admin-url`.
    pub async fn take(common: &Common) -> ClusterSnapshot {
        let mut snap = ClusterSnapshot::default();
        if let Some(url) = &common.redis_url {
            if let Some(text) = redis_info(url, "commandstats").await {
                snap.commands = parse_commandstats(&text);
            }
            if let Some(text) = redis_info(url, "stats").await {
                snap.stats = parse_info_numbers(&text);
            }
        }
        for admin in &common.admin_urls {
            snap.nodes.push(node_counters(admin).await);
        }
        snap
    }

    /// The deltas from `self` to `later`, per delivered signal, as JSON.
    pub fn per_signal(&self, later: &ClusterSnapshot, delivered: u64) -> Value {
        let per =
            |d: f64| (delivered > 0).then(|| (d / delivered as f64 * 1000.0).round() / 1000.0);
        let command = |name: &str| {
            later.commands.get(name).copied().unwrap_or(0) as f64
                - self.commands.get(name).copied().unwrap_or(0) as f64
        };
        let stat = |name: &str| {
            later.stats.get(name).copied().unwrap_or(0) as f64
                - self.stats.get(name).copied().unwrap_or(0) as f64
        };
        let mut commands = serde_json::Map::new();
        for name in later.commands.keys() {
            let d = command(name);
            if d > 0.0 {
                commands.insert(name.clone(), json!(per(d)));
            }
        }
        let mut out = json!({});
        if !later.stats.is_empty() {
            out["redis_commands_per_signal"] = json!(per(stat("total_commands_processed")));
            out["redis_publish_per_signal"] = json!(per(command("publish")));
            out["redis_output_bytes_per_signal"] = json!(per(stat("total_net_output_bytes")));
            out["redis_commandstats_per_signal"] = Value::Object(commands);
        }
        if !later.nodes.is_empty() {
            let (mut sent, mut received) = (0.0, 0.0);
            for (a, b) in self.nodes.iter().zip(&later.nodes) {
                if let (Some(a), Some(b)) = (a, b) {
                    sent += b.0 - a.0;
                    received += b.1 - a.1;
                }
            }
            out["node_publishes_per_signal"] = json!(per(sent));
            // Envelopes the nodes received from Redis, all nodes together:
            // the messages Redis delivered for each signal.
            out["redis_deliveries_per_signal"] = json!(per(received));
        }
        out
    }
}

/// Subscribers per node channel and pattern subscriptions, as JSON.
pub async fn pubsub_topology(common: &Common) -> Value {
    let Some(url) = &common.redis_url else {
        return Value::Null;
    };
    let result = tokio::time::timeout(TIMEOUT, async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let pattern = format!("{}:node:*", common.key_prefix);
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .ok()?;
        let mut numsub = redis::cmd("PUBSUB");
        numsub.arg("NUMSUB");
        for c in &channels {
            numsub.arg(c);
        }
        let pairs: Vec<(String, u64)> = numsub.query_async(&mut conn).await.ok()?;
        let numpat: u64 = redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(json!({
            "node_channels": pairs.len(),
            "subscribers_per_channel_max": pairs.iter().map(|p| p.1).max(),
            "pattern_subscriptions": numpat,
        }))
    })
    .await;
    result.ok().flatten().unwrap_or(Value::Null)
}

async fn redis_info(url: &str, section: &str) -> Option<String> {
    tokio::time::timeout(TIMEOUT, async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("INFO")
            .arg(section)
            .query_async::<String>(&mut conn)
            .await
            .ok()
    })
    .await
    .ok()
    .flatten()
}

/// `cmdstat_publish:calls=12,usec=...` → {"publish": 12}.
fn parse_commandstats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.trim().parse().ok()?))
        })
        .collect()
}

/// `name:123` lines with integer values.
fn parse_info_numbers(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// (cross-node signals sent, received) from a node's `/metrics`.
async fn node_counters(admin: &str) -> Option<(f64, f64)> {
    let body = http_get(admin, "/metrics").await?;
    Some((
        metric_sum(&body, "cross_node_signals_sent_total"),
        metric_sum(&body, "cross_node_signals_received_total"),
    ))
}

/// The value of a node metric whose name ends with `needle` (summed over
/// its labels), read from the node's `/metrics` now; `None` when the node
/// does not answer.
pub async fn node_metric(admin: &str, needle: &str) -> Option<f64> {
    let body = http_get(admin, "/metrics").await?;
    Some(metric_sum(&body, needle))
}

/// Sums the samples of the metric whose name ends with `needle`.
fn metric_sum(body: &str, needle: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split([' ', '{'])
                .next()
                .is_some_and(|name| name.ends_with(needle))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
}

/// A minimal HTTP/1.0 GET on a loopback admin address.
async fn http_get(base: &str, path: &str) -> Option<String> {
    let authority = base
        .split_once("://")
        .map_or(base, |(_, r)| r)
        .trim_end_matches('/');
    tokio::time::timeout(TIMEOUT, async {
        let mut stream = TcpStream::connect(authority).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (_, body) = text.split_once("\r\n\r\n")?;
        Some(body.to_owned())
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_parse() {
        let text = "# Commandstats\r\ncmdstat_publish:calls=12,usec=30,usec_per_call=2.5\r\ncmdstat_evalsha:calls=3,usec=9\r\n";
        let m = parse_commandstats(text);
        assert_eq!(m["publish"], 12);
        assert_eq!(m["evalsha"], 3);
    }

    #[test]
    fn metrics_are_summed_over_labels_by_name() {
        let body = "# HELP x\nsignal_manager_resumable_sessions 19000\nsignal_manager_resumes_total{where=\"local\"} 2\nsignal_manager_resumes_total{where=\"remote\"} 3\n";
        assert_eq!(metric_sum(body, "resumable_sessions"), 19000.0);
        assert_eq!(metric_sum(body, "resumes_total"), 5.0);
        assert_eq!(metric_sum(body, "absent"), 0.0);
    }

    #[test]
    fn deltas_per_signal() {
        let mut a = ClusterSnapshot::default();
        a.stats.insert("total_commands_processed".into(), 10);
        a.commands.insert("publish".into(), 5);
        a.nodes.push(Some((0.0, 0.0)));
        let mut b = a.clone();
        b.stats.insert("total_commands_processed".into(), 210);
        b.commands.insert("publish".into(), 105);
        b.nodes[0] = Some((100.0, 100.0));
        let v = a.per_signal(&b, 100);
        assert_eq!(v["redis_publish_per_signal"], json!(1.0));
        assert_eq!(v["redis_commands_per_signal"], json!(2.0));
        assert_eq!(v["redis_deliveries_per_signal"], json!(1.0));
    }
}
