//! The relay scenario: `pairs` sender → receiver pairs whose two ends sit on
//! different nodes, at a fixed offered rate (latency) or at saturation
//! (a window of signals in flight per pair; throughput).
//!
//! Every signal carries its pair's sequence number and its send time (µs
//! since the epoch) at the start of `signal_data`, padded to `--size`
//! bytes; its message id encodes the same sequence number. The receiver
//! checks source, id and order, so loss, duplicates and reordering are
//! counted exactly; any of them fails the run.
//!
//! By default each signal is its own WebSocket message and its own write
//! (`--send-mode per-message`, what a browser's `WebSocket.send` does);
//! `--send-mode batched` writes every signal due at once with one flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, ValueEnum};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cluster_stats::{pubsub_topology, ClusterSnapshot};
use super::fleet::{self, ErrorCounts, Fleet};
use super::pair::{now_us, receive, send, PairState, SendMode, SendPlan, Window};
use super::proc_stats::CpuSnapshot;
use super::report::{histogram, percentile_line, percentiles, Progress, Report};
use super::Common;
use signal_manager_client::Connection;
use signal_manager_protocol::MessageType;

/// `loadgen relay` flags.
#[derive(ClapArgs, Debug, Clone)]
pub struct RelayArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: Common,
    /// Sender → receiver pairs.
    #[arg(long, default_value_t = 32)]
    pub pairs: usize,
    /// Bytes of `signal_data` per signal (200 ≈ an ICE candidate, 2000 ≈ an
    /// SDP offer).
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// Offered rate in signals/s over all pairs; 0 runs at saturation.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Signals in flight per pair at saturation.
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// per-message: every signal its own WebSocket message and its own
    /// write, as a browser sends; batched: all signals due at once (a whole
    /// window at saturation) in one write, which overstates what real
    /// clients get.
    #[arg(long, value_enum, default_value_t = SendMode::PerMessage)]
    pub send_mode: SendMode,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Seconds to wait for signals still in flight once sending stops.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Senders all on the first node and receivers all on the second,
    /// instead of round robin (pair p: sender on node p, receiver on p + 1).
    #[arg(long)]
    pub one_way: bool,
    /// The signal type sent.
    #[arg(long, value_enum, default_value_t = KindArg::Ice)]
    pub kind: KindArg,
    /// Seconds to measure the server's CPU with no clients first; that
    /// background (upkeep, probes) is then taken out of a second,
    /// net per-signal CPU figure.
    #[arg(long, default_value_t = 0)]
    pub baseline: u64,
}

/// `--kind` values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindArg {
    /// SIGNAL_OFFER.
    Offer,
    /// SIGNAL_ANSWER.
    Answer,
    /// SIGNAL_ICE_CANDIDATE.
    Ice,
}

impl From<KindArg> for MessageType {
    fn from(k: KindArg) -> MessageType {
        match k {
            KindArg::Offer => MessageType::SignalOffer,
            KindArg::Answer => MessageType::SignalAnswer,
            KindArg::Ice => MessageType::SignalIceCandidate,
        }
    }
}

/// Runs the relay scenario.
pub async fn run(args: RelayArgs) -> Result<Report, String> {
    let pairs = args.pairs.max(1);
    let fleet = Arc::new(Fleet::new(&args.common, pairs * 2)?);
    let nodes = fleet.nodes();
    if args.one_way && nodes < 2 {
        return Err("--one-way needs two --url".into());
    }
    let placement = |p: usize| {
        if args.one_way {
            (0, 1)
        } else {
            (p % nodes, (p + 1) % nodes)
        }
    };
    let baseline = if args.baseline > 0 {
        eprintln!("[relay] measuring idle server CPU for {} s", args.baseline);
        let start = CpuSnapshot::take(&args.common.node_pids, &args.common.redis_pids);
        tokio::time::sleep(Duration::from_secs(args.baseline)).await;
        let usage = start.until(&CpuSnapshot::take(
            &args.common.node_pids,
            &args.common.redis_pids,
        ));
        Some(usage.server_seconds() / usage.wall_seconds.max(1e-9))
    } else {
        None
    };
    let run_tag = u64::from(std::process::id()) << 32;
    let states: Arc<Vec<Arc<PairState>>> =
        Arc::new((0..pairs).map(|_| Arc::new(PairState::default())).collect());
    let window = Arc::new(Window {
        start_us: AtomicU64::new(u64::MAX),
        end_us: AtomicU64::new(u64::MAX),
    });
    eprintln!(
        "[relay] opening {pairs} pairs over {nodes} node(s), {} bytes, {}, {}",
        args.size,
        args.send_mode.as_str(),
        if args.rate > 0 {
            format!("{} signals/s offered", args.rate)
        } else {
            format!("saturation with {} in flight per pair", args.window)
        }
    );

    // Receivers first, so every target is routable before anything is sent.
    let mut receivers = Vec::with_capacity(pairs);
    let mut senders = Vec::with_capacity(pairs);
    for p in 0..pairs {
        let (_, node) = placement(p);
        let token = fleet.token(2 * p + 1)?;
        receivers.push(open(&fleet, 2 * p + 1, node, token));
    }
    let receivers = futures_util::future::try_join_all(receivers).await?;
    for p in 0..pairs {
        let (node, _) = placement(p);
        let token = fleet.token(2 * p)?;
        senders.push(open(&fleet, 2 * p, node, token));
    }
    let senders = futures_util::future::try_join_all(senders).await?;

    let (stop_send_tx, stop_send) = watch::channel(false);
    let (stop_recv_tx, stop_recv) = watch::channel(false);
    let mut receiver_tasks = Vec::new();
    for (p, (conn, heartbeat)) in receivers.into_iter().enumerate() {
        receiver_tasks.push(tokio::spawn(receive(
            conn,
            heartbeat,
            fleet.client_id(2 * p),
            run_tag ^ p as u64,
            Arc::clone(&states[p]),
            Arc::clone(&window),
            stop_recv.clone(),
        )));
    }
    let started = Instant::now();
    let mut sender_tasks = Vec::new();
    for (p, (conn, _)) in senders.into_iter().enumerate() {
        let plan = SendPlan {
            kind: args.kind.into(),
            target: fleet.client_id(2 * p + 1),
            id_tag: run_tag ^ p as u64,
            size: args.size,
            codec: fleet.codec,
            window: args.window.max(1),
            send_mode: args.send_mode,
            // Stagger the pairs over one period so sends are spread evenly.
            pace: (args.rate > 0).then(|| {
                let period = Duration::from_secs_f64(pairs as f64 / args.rate as f64);
                (period, started + period.mul_f64(p as f64 / pairs as f64))
            }),
        };
        sender_tasks.push(tokio::spawn(send(
            conn,
            plan,
            Arc::clone(&states[p]),
            stop_send.clone(),
            stop_recv.clone(),
        )));
    }

    let sum = {
        let states = Arc::clone(&states);
        move |f: fn(&PairState) -> u64| states.iter().map(|s| f(s)).sum::<u64>()
    };
    let sent = |s: &PairState| s.sent.load(Ordering::Relaxed);
    let delivered = |s: &PairState| s.delivered.load(Ordering::Relaxed);
    let errored = |s: &PairState| s.errors.load(Ordering::Relaxed);
    let progress = {
        let sum = sum.clone();
        let last = Arc::new(AtomicU64::new(0));
        Progress::start(
            "relay",
            Arc::new(move || {
                let d = sum(delivered);
                let rate = d - last.swap(d, Ordering::Relaxed);
                format!(
                    "sent {} delivered {} errors {} ({rate}/s)",
                    sum(sent),
                    d,
                    sum(errored)
                )
            }),
        )
    };

    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let cpu_start = CpuSnapshot::take(&args.common.node_pids, &args.common.redis_pids);
    let cluster_start = ClusterSnapshot::take(&args.common).await;
    let delivered_start = sum(delivered);
    let sent_start = sum(sent);
    window.start_us.store(now_us(), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    window.end_us.store(now_us(), Ordering::Relaxed);
    let cpu_end = CpuSnapshot::take(&args.common.node_pids, &args.common.redis_pids);
    let delivered_end = sum(delivered);
    let sent_end = sum(sent);
    let cluster_end = ClusterSnapshot::take(&args.common).await;
    let topology = pubsub_topology(&args.common).await;

    let _ = stop_send_tx.send(true);
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain);
    let finished = |s: &PairState| u64::from(s.finished.load(Ordering::Acquire));
    while sum(finished) < pairs as u64 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while sum(delivered) + sum(errored) < sum(sent) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_recv_tx.send(true);
    drop(progress);
    let mut errors = ErrorCounts::new();
    let mut broken = Vec::new();
    for task in sender_tasks {
        if let Ok(done) = task.await {
            fleet::merge(&mut errors, done.errors);
            broken.extend(done.broken);
        }
    }

    let mut latency = histogram();
    let (mut unique, mut duplicates, mut reordered, mut malformed) = (0, 0, 0, 0);
    for task in receiver_tasks {
        if let Ok(done) = task.await {
            let _ = latency.add(&done.latency);
            unique += done.unique;
            duplicates += done.duplicates;
            reordered += done.reordered;
            malformed += done.malformed;
            broken.extend(done.broken);
        }
    }
    let total_sent = sum(sent);
    let total_errors = sum(errored);
    let lost = total_sent.saturating_sub(unique + total_errors);

    let usage = cpu_start.until(&cpu_end);
    let in_window = delivered_end - delivered_start;
    let throughput = in_window as f64 / usage.wall_seconds.max(1e-9);
    let offered = (sent_end - sent_start) as f64 / usage.wall_seconds.max(1e-9);
    let frame_bytes = sample_frame(&args, &fleet).len();

    let mut report = Report::new("relay", &args.common);
    report
        .set("mode", if args.rate > 0 { "rate" } else { "saturation" })
        .set("send_mode", args.send_mode.as_str())
        .set("pairs", pairs)
        .set("cross_node", nodes > 1)
        .set("size", args.size)
        .set("frame_bytes", frame_bytes)
        .set("offered_rate", args.rate)
        .set("window", args.window)
        .set("duration_s", args.duration)
        .set("sent_per_s", offered.round())
        .set("delivered_per_s", throughput.round())
        .set("sent", total_sent)
        .set("delivered", unique)
        .set("errors", total_errors)
        .set("error_codes", json!(errors))
        .set("lost", lost)
        .set("duplicates", duplicates)
        .set("reordered", reordered)
        .set("malformed", malformed)
        .set("broken_connections", json!(broken))
        .set("latency", percentiles(&latency))
        .set("cluster", cluster_start.per_signal(&cluster_end, in_window))
        .set("pubsub", topology)
        .cpu(&usage, in_window, "signal");
    if let Some(cores) = baseline {
        let net = (usage.server_seconds() - cores * usage.wall_seconds).max(0.0);
        let per = (in_window > 0).then(|| net * 1e6 / in_window as f64);
        report
            .set(
                "baseline_server_cores",
                (cores * 10_000.0).round() / 10_000.0,
            )
            .set(
                "cpu_us_per_signal_net",
                json!(per.map(|v| (v * 100.0).round() / 100.0)),
            )
            .line(format!(
                "idle server background {:.3} cores; net of it: {} µs per signal",
                cores,
                per.map_or("?".into(), |v| format!("{v:.1}"))
            ));
    }
    report
        .line(format!(
            "{pairs} pairs, {} B signal_data ({frame_bytes} B frames, {}): offered {offered:.0}/s, delivered {throughput:.0}/s in the {:.1} s window",
            args.size, args.send_mode.as_str(), usage.wall_seconds
        ))
        .line(format!("one-way latency: {}", percentile_line(&latency)))
        .line(format!(
            "sent {total_sent}, delivered {unique}, errors {total_errors} {errors:?}, lost {lost}, duplicates {duplicates}, reordered {reordered}"
        ));
    if lost > 0 {
        report.fail(format!("{lost} signals lost"));
    }
    if duplicates > 0 {
        report.fail(format!("{duplicates} duplicated signals"));
    }
    if reordered > 0 {
        report.fail(format!("{reordered} reordered signals"));
    }
    if total_errors > 0 {
        report.fail(format!("{total_errors} signals answered with ERROR"));
    }
    if malformed > 0 {
        report.fail(format!(
            "{malformed} signals with a wrong source, id or body"
        ));
    }
    if !broken.is_empty() {
        report.fail(format!("{} connections broke", broken.len()));
    }
    Ok(report)
}

/// Opens client `i` on `node`; returns the connection and its heartbeat interval.
async fn open(
    fleet: &Fleet,
    i: usize,
    node: usize,
    token: String,
) -> Result<(Connection, Duration), String> {
    let (conn, ack, _) = fleet
        .open(i, node, &token)
        .await
        .map_err(|e| format!("client {i} on {}: {e}", fleet.url(node)))?;
    Ok((conn, fleet::heartbeat_interval(&ack)))
}

fn sample_frame(args: &RelayArgs, fleet: &Fleet) -> bytes::Bytes {
    let plan = SendPlan {
        kind: args.kind.into(),
        target: fleet.client_id(1),
        id_tag: 0,
        size: args.size,
        codec: fleet.codec,
        window: 1,
        send_mode: args.send_mode,
        pace: None,
    };
    plan.frame(0, &mut String::new()).unwrap_or_default()
}
