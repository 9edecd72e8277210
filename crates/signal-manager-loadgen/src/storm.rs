//! The storm scenario: `clients` connected clients all lose their
//! connection at the same instant (what a node restart looks like from the
//! clients) and reconnect at once, retrying with jittered exponential
//! backoff like the crate's client. Reports how long until every client is
//! connected again and what errors they met on the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

use super::fleet::{self, error_kind, ErrorCounts, Fleet, HoldEnd};
use super::proc_stats::CpuSnapshot;
use super::report::{histogram, percentile_line, percentiles, Progress, Report};
use super::Common;

/// `loadgen storm` flags.
#[derive(ClapArgs, Debug, Clone)]
pub struct StormArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Connected clients (about 19,000 at most per process here).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Connections opened at once while setting up (not during the storm).
    #[arg(long, default_value_t = 200)]
    pub setup_concurrency: usize,
    /// Spread each client's first reconnect uniformly over this many ms
    /// (0: everyone at the same instant).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Seconds connected before the drop.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// Give up on clients not back after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub deadline: u64,
}

fn random_below(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        (Uuid::new_v4().as_u128() % u128::from(n)) as u64
    }
}

/// Runs the storm scenario.
pub async fn run(args: StormArgs) -> Result<Report, String> {
    let common = &args.common;
    let total = args.clients;
    let fleet = Arc::new(Fleet::new(common, total)?);
    eprintln!(
        "[storm] connecting {total} clients over {} node(s)",
        fleet.nodes()
    );
    let tokens = Arc::new(fleet.tokens(total)?);
    let connected = Arc::new(AtomicU64::new(0));
    let back = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let progress = {
        let (connected, back) = (Arc::clone(&connected), Arc::clone(&back));
        Progress::start(
            "storm",
            Arc::new(move || {
                format!(
                    "connected {} / {total}, reconnected {}",
                    connected.load(Ordering::Relaxed),
                    back.load(Ordering::Relaxed)
                )
            }),
        )
    };
    let (drop_tx, drop_rx) = watch::channel(false);
    let (finish_tx, finish_rx) = watch::channel(false);
    let (t0_tx, t0_rx) = watch::channel(Instant::now());
    let gate = Arc::new(Semaphore::new(args.setup_concurrency.max(1)));
    let deadline = Duration::from_secs(args.deadline);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let (fleet, tokens, gate) = (Arc::clone(&fleet), Arc::clone(&tokens), Arc::clone(&gate));
        let (connected, back, attempts) = (
            Arc::clone(&connected),
            Arc::clone(&back),
            Arc::clone(&attempts),
        );
        let (mut drop_rx, mut finish_rx, t0_rx) =
            (drop_rx.clone(), finish_rx.clone(), t0_rx.clone());
        let jitter = args.jitter_ms;
        tasks.push(tokio::spawn(async move {
            let mut errors = ErrorCounts::new();
            let node = i % fleet.nodes();
            let permit = gate.acquire().await;
            let first = fleet.open(i, node, &tokens[i]).await;
            drop(permit);
            let (mut conn, ack, _) = match first {
                Ok(ok) => ok,
                Err(e) => {
                    fleet::count(&mut errors, format!("setup_{}", error_kind(&e)));
                    return (None, errors);
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            match fleet::hold(&mut conn, fleet::heartbeat_interval(&ack), &mut drop_rx).await {
                HoldEnd::Stopped => {}
                other => fleet::count(&mut errors, format!("before_storm_{other:?}")),
            }
            // The drop: the socket vanishes without a close handshake.
            drop(conn);
            let t0 = *t0_rx.borrow();
            if jitter > 0 {
                tokio::time::sleep(Duration::from_millis(random_below(jitter))).await;
            }
            let mut backoff = Duration::from_millis(100);
            let conn = loop {
                attempts.fetch_add(1, Ordering::Relaxed);
                match fleet.open(i, node, &tokens[i]).await {
                    Ok((conn, ack, _)) => break Some((conn, ack)),
                    Err(e) => fleet::count(&mut errors, error_kind(&e)),
                }
                if t0.elapsed() >= deadline {
                    break None;
                }
                // Full jitter, as the crate's client reconnects.
                let wait = backoff.mul_f64(random_below(1000) as f64 / 1000.0);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            };
            let Some((mut conn, ack)) = conn else {
                return (None, errors);
            };
            let took = t0.elapsed();
            back.fetch_add(1, Ordering::Relaxed);
            match fleet::hold(&mut conn, fleet::heartbeat_interval(&ack), &mut finish_rx).await {
                HoldEnd::Stopped => {}
                other => fleet::count(&mut errors, format!("after_storm_{other:?}")),
            }
            (Some(took), errors)
        }));
    }
    let setup_deadline = Instant::now() + deadline;
    while connected.load(Ordering::Relaxed) < total as u64 && Instant::now() < setup_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = connected.load(Ordering::Relaxed);
    if before < total as u64 {
        return Err(format!(
            "only {before} of {total} clients connected before the storm"
        ));
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;

    let cpu_start = CpuSnapshot::take(&common.node_pids, &common.redis_pids);
    let t0 = Instant::now();
    let _ = t0_tx.send(t0);
    let _ = drop_tx.send(true);
    let storm_deadline = t0 + deadline + Duration::from_secs(5);
    while back.load(Ordering::Relaxed) < total as u64 && Instant::now() < storm_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_back = t0.elapsed().as_secs_f64();
    let cpu_end = CpuSnapshot::take(&common.node_pids, &common.redis_pids);
    // Let late closes (REPLACED, idle) show up before finishing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = finish_tx.send(true);
    drop(progress);

    let mut times = histogram();
    let mut errors = ErrorCounts::new();
    let mut reconnected = 0u64;
    for task in tasks {
        if let Ok((took, e)) = task.await {
            if let Some(t) = took {
                reconnected += 1;
                let _ = times.record(t.as_micros().max(1) as u64);
            }
            fleet::merge(&mut errors, e);
        }
    }
    let attempts = attempts.load(Ordering::Relaxed);
    let usage = cpu_start.until(&cpu_end);
    let mut report = Report::new("storm", common);
    report
        .set("clients", total)
        .set("jitter_ms", args.jitter_ms)
        .set("reconnected", reconnected)
        .set("all_reconnected_s", (all_back * 1000.0).round() / 1000.0)
        .set("reconnect_attempts", attempts)
        .set("reconnect_time", percentiles(&times))
        .set("errors", json!(errors))
        .cpu(&usage, reconnected, "reconnect");
    report
        .line(format!(
            "{reconnected} of {total} clients back in {all_back:.2} s after {attempts} attempts"
        ))
        .line(format!(
            "per-client reconnect time: {}",
            percentile_line(&times)
        ))
        .line(format!("errors: {errors:?}"));
    if reconnected < total as u64 {
        report.fail(format!(
            "{} clients never came back",
            total as u64 - reconnected
        ));
    }
    Ok(report)
}
