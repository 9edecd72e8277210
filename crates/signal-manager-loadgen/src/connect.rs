//! The connect scenario: open `connections` connections, `concurrency` at a
//! time, each doing the WebSocket handshake, CONNECT with a JWT and waiting
//! for CONNECT_ACK (which the node sends only once presence is written).
//! Connections stay open until all are done, so every one is a new session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Args as ClapArgs;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::fleet::{self, error_kind, ErrorCounts, Fleet};
use super::proc_stats::CpuSnapshot;
use super::report::{histogram, percentile_line, percentiles, Progress, Report};
use super::Common;
use signal_manager_client::Connection;

/// `loadgen connect` flags.
#[derive(ClapArgs, Debug, Clone)]
pub struct ConnectArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open (all stay open until the end: at most about
    /// 19,000 per process here).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Runs the connect scenario.
pub async fn run(args: ConnectArgs) -> Result<Report, String> {
    let common = &args.common;
    let total = args.connections;
    let fleet = Arc::new(Fleet::new(common, total)?);
    let nodes = fleet.nodes();
    eprintln!("[connect] minting {total} tokens");
    let tokens = Arc::new(fleet.tokens(total)?);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let kept: Arc<Mutex<Vec<Connection>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let progress = {
        let done = Arc::clone(&done);
        let last = Arc::new(AtomicU64::new(0));
        Progress::start(
            "connect",
            Arc::new(move || {
                let d = done.load(Ordering::Relaxed);
                let rate = d - last.swap(d, Ordering::Relaxed);
                format!("{d} / {total} ({rate}/s)")
            }),
        )
    };
    let cpu_start = CpuSnapshot::take(&common.node_pids, &common.redis_pids);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1).min(total.max(1)) {
        let (fleet, tokens, next, done, kept) = (
            Arc::clone(&fleet),
            Arc::clone(&tokens),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&kept),
        );
        workers.push(tokio::spawn(async move {
            let mut ack_latency = histogram();
            let mut full_latency = histogram();
            let mut errors = ErrorCounts::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    break;
                }
                match fleet.open(i, i % fleet.nodes(), &tokens[i]).await {
                    Ok((conn, _, opened)) => {
                        let _ = ack_latency.record(opened.connect_ack.as_micros().max(1) as u64);
                        let full = opened.handshake + opened.connect_ack;
                        let _ = full_latency.record(full.as_micros().max(1) as u64);
                        kept.lock().await.push(conn);
                    }
                    Err(e) => fleet::count(&mut errors, error_kind(&e)),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (ack_latency, full_latency, errors)
        }));
    }
    let mut ack_latency = histogram();
    let mut full_latency = histogram();
    let mut errors = ErrorCounts::new();
    for worker in workers {
        if let Ok((a, f, e)) = worker.await {
            let _ = ack_latency.add(&a);
            let _ = full_latency.add(&f);
            fleet::merge(&mut errors, e);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_end = CpuSnapshot::take(&common.node_pids, &common.redis_pids);
    drop(progress);
    let succeeded = kept.lock().await.len() as u64;
    // Close them all; the nodes clean up on their own.
    kept.lock().await.clear();

    let usage = cpu_start.until(&cpu_end);
    let rate = succeeded as f64 / elapsed.max(1e-9);
    let mut report = Report::new("connect", common);
    report
        .set("connections", total)
        .set("concurrency", args.concurrency)
        .set("succeeded", succeeded)
        .set("errors", json!(errors))
        .set("seconds", (elapsed * 1000.0).round() / 1000.0)
        .set("connections_per_s", rate.round())
        .set("connections_per_s_per_node", (rate / nodes as f64).round())
        .set("connect_ack_latency", percentiles(&ack_latency))
        .set("handshake_and_connect_latency", percentiles(&full_latency))
        .cpu(&usage, succeeded, "connection");
    report
        .line(format!(
            "{succeeded} of {total} connections in {elapsed:.2} s: {rate:.0}/s ({:.0}/s per node), concurrency {}",
            rate / nodes as f64,
            args.concurrency
        ))
        .line(format!("CONNECT → ACK: {}", percentile_line(&ack_latency)))
        .line(format!(
            "TCP + handshake + CONNECT → ACK: {}",
            percentile_line(&full_latency)
        ));
    if succeeded < total as u64 {
        report.fail(format!(
            "{} connections failed: {errors:?}",
            total as u64 - succeeded
        ));
    }
    Ok(report)
}
