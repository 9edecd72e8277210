//! The idle scenario: open `connections` authenticated connections spread
//! over the nodes, hold them with heartbeats, and report each node's RSS
//! before and after, per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::fleet::{self, error_kind, ErrorCounts, Fleet, HoldEnd};
use super::proc_stats::{open_files, rss_bytes, CpuSnapshot};
use super::report::{Progress, Report};
use super::Common;

/// `loadgen idle` flags.
#[derive(ClapArgs, Debug, Clone)]
pub struct IdleArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open, spread round robin over the nodes. One process
    /// can hold about 19,000 here; run several for more.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds to hold them once all are open (RSS is read at the end).
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// Index of the first client id (so several processes use distinct ids).
    #[arg(long, default_value_t = 0)]
    pub first_client: usize,
}

/// Runs the idle scenario.
pub async fn run(args: IdleArgs) -> Result<Report, String> {
    let common = &args.common;
    let total = args.connections;
    let fleet = Arc::new(Fleet::new(common, args.first_client + total)?);
    let nodes = fleet.nodes();
    let rss = |pids: &[u32]| pids.iter().map(|&p| rss_bytes(p)).collect::<Vec<_>>();
    let rss_before = rss(&common.node_pids);
    let fds_before: Vec<_> = common.node_pids.iter().map(|&p| open_files(p)).collect();
    let cpu_start = CpuSnapshot::take(&common.node_pids, &common.redis_pids);
    eprintln!("[idle] opening {total} connections over {nodes} node(s)");

    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let progress = {
        let (opened, failed) = (Arc::clone(&opened), Arc::clone(&failed));
        Progress::start(
            "idle",
            Arc::new(move || {
                format!(
                    "open {} / {total}, failed {}",
                    opened.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed)
                )
            }),
        )
    };
    let (stop_tx, stop) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let i = args.first_client + k;
        let token = fleet.token(i)?;
        let (fleet, gate, opened, failed) = (
            Arc::clone(&fleet),
            Arc::clone(&gate),
            Arc::clone(&opened),
            Arc::clone(&failed),
        );
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let result = fleet.open(i, k % fleet.nodes(), &token).await;
            drop(permit);
            let (mut conn, ack, _) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return Some(error_kind(&e));
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            match fleet::hold(&mut conn, fleet::heartbeat_interval(&ack), &mut stop).await {
                HoldEnd::Stopped => None,
                HoldEnd::Closed(reason, code) => Some(format!(
                    "closed_{}_{}",
                    reason.unwrap_or_default(),
                    code.unwrap_or(0)
                )),
                HoldEnd::Broken(kind) => Some(kind),
            }
        }));
    }
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < total as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_after = rss(&common.node_pids);
    let fds_after: Vec<_> = common.node_pids.iter().map(|&p| open_files(p)).collect();
    let cpu_end = CpuSnapshot::take(&common.node_pids, &common.redis_pids);
    let own_rss = rss_bytes(std::process::id());
    let _ = stop_tx.send(true);
    drop(progress);
    let mut errors = ErrorCounts::new();
    for task in tasks {
        if let Ok(Some(kind)) = task.await {
            fleet::count(&mut errors, kind);
        }
    }
    let held = opened.load(Ordering::Relaxed);

    let mut per_node = Vec::new();
    let mut worst: Option<f64> = None;
    for (n, (before, after)) in rss_before.iter().zip(&rss_after).enumerate() {
        // Connection k went to node k % nodes.
        let on_node = (0..total).filter(|k| k % nodes == n).count() as u64;
        let per = match (before, after) {
            (Some(b), Some(a)) if on_node > 0 => Some((*a as f64 - *b as f64) / on_node as f64),
            _ => None,
        };
        if let Some(p) = per {
            worst = Some(worst.map_or(p, |w: f64| w.max(p)));
        }
        per_node.push(json!({
            "pid": common.node_pids.get(n),
            "connections": on_node,
            "rss_before_bytes": before,
            "rss_after_bytes": after,
            "bytes_per_connection": per.map(f64::round),
            "open_files_before": fds_before.get(n).copied().flatten(),
            "open_files_after": fds_after.get(n).copied().flatten(),
        }));
    }
    let usage = cpu_start.until(&cpu_end);
    let mut report = Report::new("idle", common);
    report
        .set("connections", total)
        .set("held", held)
        .set("failed", failed.load(Ordering::Relaxed))
        .set("errors", json!(errors))
        .set("open_seconds", (open_seconds * 1000.0).round() / 1000.0)
        .set("per_node", json!(per_node))
        .set("bytes_per_connection_max", json!(worst.map(f64::round)))
        .set("loadgen_rss_bytes", json!(own_rss))
        .cpu(&usage, held, "connection");
    report.line(format!(
        "held {held} of {total} connections (opened in {open_seconds:.1} s); node RSS per connection: {}",
        per_node
            .iter()
            .map(|n| format!(
                "{:.2} KiB",
                n["bytes_per_connection"].as_f64().unwrap_or(f64::NAN) / 1024.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if held < total as u64 {
        report.fail(format!(
            "{} connections failed to open",
            total as u64 - held
        ));
    }
    if !errors.is_empty() {
        report.fail(format!("connections ended early: {errors:?}"));
    }
    Ok(report)
}
