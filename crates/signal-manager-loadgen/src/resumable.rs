//! The resumable scenario: `sessions` authenticated connections on one node
//! all lose their socket at once, without a close handshake, and stay
//! resumable for the node's `server.resume_window` (PROTOCOL.md, "Session
//! resume"). It reads the node's RSS before connecting (baseline), with
//! everyone connected, while the sessions are parked (sampled every 100 ms,
//! with the peak), once `held` signals wait in them, and after the window;
//! it checks that the node's resumable-sessions gauge counts every session
//! and returns to 0, that no held signal is answered before the window
//! passes, and that then its sender gets PEER_NOT_FOUND with its id.
//! `--cycles` repeats all of it on the same node: memory the node kept
//! would grow the RSS after the window cycle by cycle; memory the allocator
//! kept for reuse would not.
//!
//! The sessions go to the first `--url`; the sender of the held signals
//! connects to the last one (another node, when two are given, so held
//! signals are confirmed to and answered on their origin across Redis).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Args as ClapArgs;
use serde_json::{json, Value};
use signal_manager_client::{Connection, Incoming};
use signal_manager_protocol::{encode_signal, Message, MessageType, Payload, SignalPayload};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

use super::cluster_stats::node_metric;
use super::fleet::{self, error_kind, ErrorCounts, Fleet, HoldEnd};
use super::proc_stats::rss_bytes;
use super::report::{Progress, Report};
use super::Common;

/// The gauge of sessions parked for resume.
const RESUMABLE_GAUGE: &str = "resumable_sessions";
/// The gauge of authenticated sessions.
const SESSIONS_GAUGE: &str = "signal_manager_sessions";
/// How often RSS is sampled while sessions are parked.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// `loadgen resumable` flags.
#[derive(ClapArgs, Debug, Clone)]
pub struct ResumableArgs {
    /// Shared flags. The first `--url`, `--node-pid` and `--admin-url` name
    /// the node that holds the sessions (all three are needed).
    #[command(flatten)]
    pub common: Common,
    /// Sessions to open on the first node and then drop at once (about
    /// 19,000 at most per process here).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Signals sent to the parked sessions (one each to sessions 0, 1, ...,
    /// round robin past the last), held until the window passes.
    #[arg(long, default_value_t = 1000)]
    pub held: usize,
    /// `signal_data` bytes of each held signal.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// The node's `server.resume_window` in seconds (bounds the waits).
    #[arg(long, default_value_t = 30)]
    pub window: u64,
    /// Seconds connected before the drop, and after the window before the
    /// last RSS reading.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Rounds of connect, drop, hold and expiry on the same node.
    #[arg(long, default_value_t = 1)]
    pub cycles: usize,
}

/// RSS readings of one cycle, in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Cycle {
    connected: Option<u64>,
    parked: Option<u64>,
    peak: Option<u64>,
    held: Option<u64>,
    after: Option<u64>,
    /// When the sockets were dropped.
    dropped: Option<Instant>,
    parked_in: f64,
    expired_in: f64,
    /// Held signals answered PEER_NOT_FOUND with their id after the window.
    answered: usize,
}

/// What the sender of the held signals saw: ERROR codes by message id.
type Answers = Arc<Mutex<HashMap<Uuid, String>>>;

/// A batch for the sender, and where to say it went out.
type Batch = (Vec<Bytes>, oneshot::Sender<Result<(), String>>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the resumable scenario.
pub async fn run(args: ResumableArgs) -> Result<Report, String> {
    let common = &args.common;
    let (Some(&pid), Some(admin)) = (common.node_pids.first(), common.admin_urls.first()) else {
        return Err("resumable needs --node-pid and --admin-url of the first --url's node".into());
    };
    let total = args.sessions;
    let fleet = Arc::new(Fleet::new(common, total + 1)?);
    let tokens = Arc::new(fleet.tokens(total + 1)?);
    let sender_node = fleet.nodes() - 1;
    let baseline = rss_bytes(pid);
    eprintln!(
        "[resumable] {total} sessions on {}, held signals from {}",
        fleet.url(0),
        fleet.url(sender_node)
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let answers: Answers = Arc::default();
    let (batches, sender) = {
        let (mut conn, ack, _) = fleet
            .open(total, sender_node, &tokens[total])
            .await
            .map_err(|e| format!("the sender cannot connect: {e}"))?;
        let (tx, rx) = mpsc::channel::<Batch>(1);
        let interval = fleet::heartbeat_interval(&ack);
        let answers = Arc::clone(&answers);
        let stop = stop_rx.clone();
        let task =
            tokio::spawn(
                async move { send_and_listen(&mut conn, interval, rx, answers, stop).await },
            );
        (tx, task)
    };
    let targets: Vec<String> = (0..args.held)
        .map(|k| fleet.client_id(k % total.max(1)))
        .collect();
    let data = "x".repeat(args.size);
    // What the node holds: each signal re-encoded with its source, in the
    // session codec.
    let sender_id = fleet.client_id(total);
    let held_frame_bytes: usize = targets
        .iter()
        .map(|target| {
            encode_signal(
                fleet.codec,
                MessageType::SignalOffer,
                Uuid::nil(),
                target,
                &sender_id,
                &data,
            )
            .map_or(0, |f| f.len())
        })
        .sum();

    let mut cycles = Vec::new();
    let mut errors = ErrorCounts::new();
    let mut report = Report::new("resumable", common);
    for round in 0..args.cycles.max(1) {
        let cycle = run_cycle(&args, round, &fleet, &tokens, pid, admin, &mut errors).await;
        let cycle = match cycle {
            Ok(c) => c,
            Err(why) => {
                report.fail(format!("cycle {}: {why}", round + 1));
                break;
            }
        };
        // Held signals: sent now, answered only when the window passes.
        let mut sent = Vec::with_capacity(targets.len());
        let frames: Vec<Bytes> = targets
            .iter()
            .filter_map(|target| {
                let m = Message::new(
                    MessageType::SignalOffer,
                    Payload::SignalOffer(SignalPayload {
                        target_client_id: target.clone(),
                        signal_data: data.clone(),
                    }),
                );
                let frame = m.encode(fleet.codec).ok()?;
                sent.push(m.message_id);
                Some(frame)
            })
            .collect();
        let (done, went) = oneshot::channel();
        if batches.send((frames, done)).await.is_err() {
            report.fail("the sender's connection ended");
            break;
        }
        went.await
            .map_err(|_| "the sender's connection ended".to_string())
            .and_then(|r| r)?;
        let cycle = finish_cycle(&args, cycle, pid, admin, &answers, &sent, &mut report).await;
        cycles.push(cycle);
    }
    let _ = stop_tx.send(true);
    if let Ok(Some(why)) = sender.await {
        report.fail(format!("the sender's connection ended: {why}"));
    }
    let sessions_left = node_metric(admin, SESSIONS_GAUGE).await;
    summarise(
        &mut report,
        &args,
        baseline,
        &cycles,
        held_frame_bytes,
        sessions_left,
        errors,
    );
    Ok(report)
}

/// Opens every session, holds them `settle` seconds, drops them all at
/// once and waits until the node counts every one resumable.
async fn run_cycle(
    args: &ResumableArgs,
    round: usize,
    fleet: &Arc<Fleet>,
    tokens: &Arc<Vec<String>>,
    pid: u32,
    admin: &str,
    errors: &mut ErrorCounts,
) -> Result<Cycle, String> {
    let total = args.sessions;
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let progress = {
        let (opened, failed) = (Arc::clone(&opened), Arc::clone(&failed));
        Progress::start(
            "resumable",
            Arc::new(move || {
                format!(
                    "cycle {}: open {} / {total}, failed {}",
                    round + 1,
                    opened.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed)
                )
            }),
        )
    };
    let (drop_tx, drop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let (fleet, tokens, gate) = (Arc::clone(fleet), Arc::clone(tokens), Arc::clone(&gate));
        let (opened, failed) = (Arc::clone(&opened), Arc::clone(&failed));
        let mut drop_rx = drop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire().await;
            let result = fleet.open(i, 0, &tokens[i]).await;
            drop(permit);
            let (mut conn, ack, _) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return Some(format!("open_{}", error_kind(&e)));
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            let end = fleet::hold(&mut conn, fleet::heartbeat_interval(&ack), &mut drop_rx).await;
            // The drop: the socket vanishes without a close handshake.
            drop(conn);
            match end {
                HoldEnd::Stopped => None,
                other => Some(format!("before_drop_{other:?}")),
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < total as u64 {
        if Instant::now() > deadline {
            return Err("sessions still opening after 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(progress);
    if failed.load(Ordering::Relaxed) > 0 {
        let _ = drop_tx.send(true);
        for task in tasks {
            if let Ok(Some(kind)) = task.await {
                fleet::count(errors, kind);
            }
        }
        return Err(format!(
            "{} sessions failed to open",
            failed.load(Ordering::Relaxed)
        ));
    }
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let mut cycle = Cycle {
        connected: rss_bytes(pid),
        ..Cycle::default()
    };
    eprintln!(
        "[resumable] cycle {}: {total} connected; dropping them all",
        round + 1
    );
    let t0 = Instant::now();
    let _ = drop_tx.send(true);
    for task in tasks {
        if let Ok(Some(kind)) = task.await {
            fleet::count(errors, kind);
        }
    }
    cycle.dropped = Some(t0);
    let window = Duration::from_secs(args.window);
    loop {
        cycle.peak = cycle.peak.max(rss_bytes(pid));
        if node_metric(admin, RESUMABLE_GAUGE).await == Some(total as f64) {
            break;
        }
        if t0.elapsed() > window / 2 {
            return Err(format!(
                "the node did not count all {total} sessions resumable within half the window"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cycle.parked_in = t0.elapsed().as_secs_f64();
    cycle.parked = rss_bytes(pid);
    cycle.peak = cycle.peak.max(cycle.parked);
    Ok(cycle)
}

/// With the held signals sent: reads RSS with them held, then waits until
/// the window passes (gauge 0, every held signal answered), sampling the
/// peak, and reads RSS `settle` seconds later.
#[allow(clippy::too_many_arguments)]
async fn finish_cycle(
    args: &ResumableArgs,
    mut cycle: Cycle,
    pid: u32,
    admin: &str,
    answers: &Answers,
    sent: &[Uuid],
    report: &mut Report,
) -> Cycle {
    let total = args.sessions as f64;
    let sample = |cycle: &mut Cycle| {
        let now = rss_bytes(pid);
        cycle.peak = cycle.peak.max(now);
        now
    };
    // Let the node queue them, then check nothing was answered: a signal
    // answered now was refused, not held.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cycle.held = sample(&mut cycle);
    let early = {
        let answers = lock(answers);
        let mut early = ErrorCounts::new();
        for code in sent.iter().filter_map(|id| answers.get(id)) {
            fleet::count(&mut early, code.clone());
        }
        early
    };
    let still_parked = node_metric(admin, RESUMABLE_GAUGE).await;
    if !early.is_empty() || still_parked != Some(total) {
        report.fail(format!(
            "before the window passed, held signals were answered ({early:?}) and {still_parked:?} of {total} sessions were resumable"
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(args.window + 30);
    loop {
        sample(&mut cycle);
        if node_metric(admin, RESUMABLE_GAUGE).await == Some(0.0) {
            break;
        }
        if Instant::now() > deadline {
            report.fail("the resumable gauge did not return to 0 within the window + 30 s");
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    cycle.expired_in = cycle.dropped.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let answered = |a: &HashMap<Uuid, String>| {
        sent.iter()
            .filter(|id| a.get(id).is_some_and(|c| c == "PEER_NOT_FOUND"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered(&lock(answers)) < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = answered(&lock(answers));
    cycle.answered = got;
    if got < sent.len() {
        let mut other = ErrorCounts::new();
        {
            let answers = lock(answers);
            for code in sent.iter().filter_map(|id| answers.get(id)) {
                if code != "PEER_NOT_FOUND" {
                    fleet::count(&mut other, code.clone());
                }
            }
        }
        report.fail(format!(
            "{} of {} held signals answered PEER_NOT_FOUND with their id (other answers: {other:?})",
            got,
            sent.len()
        ));
    }
    let settle_until = Instant::now() + Duration::from_secs(args.settle);
    while Instant::now() < settle_until {
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    cycle.after = rss_bytes(pid);
    cycle
}

/// The sender's connection: sends each batch it is given (fed, then one
/// flush), keeps the session alive with heartbeats and records every ERROR
/// by the id it answers. Returns why it ended early, if it did.
async fn send_and_listen(
    conn: &mut Connection,
    interval: Duration,
    mut batches: mpsc::Receiver<Batch>,
    answers: Answers,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        if *stop.borrow() {
            conn.close().await;
            return None;
        }
        // Cancel-safe: reading keeps partial frames in the stream; the
        // interval, the channel and the watch lose nothing when dropped.
        tokio::select! {
            incoming = conn.recv() => match incoming {
                Ok(Incoming::Message(m)) => {
                    if let Payload::Error(e) = m.payload {
                        lock(&answers).insert(m.message_id, e.code);
                    }
                }
                Ok(Incoming::Invalid(_)) => {}
                Ok(Incoming::Closed(code, _)) => return Some(format!("closed {code:?}")),
                Err(e) => return Some(error_kind(&e)),
            },
            batch = batches.recv() => {
                let Some((frames, done)) = batch else { continue };
                let mut result = Ok(());
                for frame in frames {
                    if let Err(e) = conn.feed_bytes(frame).await {
                        result = Err(error_kind(&e));
                        break;
                    }
                }
                if result.is_ok() {
                    result = conn.flush().await.map_err(|e| error_kind(&e));
                }
                let failed = result.clone().err();
                let _ = done.send(result);
                if let Some(why) = failed {
                    return Some(why);
                }
            }
            _ = tick.tick() => {
                if let Err(e) = conn.send_bytes(fleet::heartbeat()).await {
                    return Some(error_kind(&e));
                }
            }
            _ = stop.changed() => {}
        }
    }
}

fn per(delta: Option<i128>, n: usize) -> Option<f64> {
    delta
        .filter(|_| n > 0)
        .map(|d| (d as f64 / n as f64).round())
}

fn diff(a: Option<u64>, b: Option<u64>) -> Option<i128> {
    Some(i128::from(a?) - i128::from(b?))
}

/// Fills the report: per-cycle readings, the first cycle's figures per
/// session, and how the RSS after the window moved between cycles.
fn summarise(
    report: &mut Report,
    args: &ResumableArgs,
    baseline: Option<u64>,
    cycles: &[Cycle],
    held_frame_bytes: usize,
    sessions_left: Option<f64>,
    errors: ErrorCounts,
) {
    let n = args.sessions;
    let kib = |v: Option<f64>| v.map_or("?".into(), |b| format!("{:.2} KiB", b / 1024.0));
    let mib = |v: Option<u64>| v.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
    let rows: Vec<Value> = cycles
        .iter()
        .map(|c| {
            json!({
                "rss_connected_bytes": c.connected,
                "rss_parked_bytes": c.parked,
                "rss_held_bytes": c.held,
                "rss_peak_bytes": c.peak,
                "rss_after_bytes": c.after,
                "all_parked_s": (c.parked_in * 1000.0).round() / 1000.0,
                "all_expired_s": (c.expired_in * 1000.0).round() / 1000.0,
                "held_answered": c.answered,
            })
        })
        .collect();
    report
        .set("sessions", n)
        .set("held_signals", args.held)
        .set("signal_size", args.size)
        .set("window_s", args.window)
        .set("rss_baseline_bytes", json!(baseline))
        .set("held_frame_bytes", held_frame_bytes)
        .set("cycles", json!(rows))
        .set("sessions_gauge_after", json!(sessions_left))
        .set(
            "held_answered_peer_not_found",
            cycles.iter().map(|c| c.answered).sum::<usize>(),
        )
        .set("held_sent", args.held * cycles.len())
        .set("errors", json!(errors));
    if !errors.is_empty() {
        report.fail(format!("sessions ended before the drop: {errors:?}"));
    }
    let Some(first) = cycles.first() else {
        return;
    };
    let over_baseline = per(diff(first.peak, baseline), n);
    let over_connected = per(diff(first.peak, first.connected), n);
    let net_of_held = per(
        diff(first.peak, baseline).map(|d| d - held_frame_bytes as i128),
        n,
    );
    let held_per_signal = per(diff(first.held, first.parked), args.held);
    let retained = per(diff(first.after, baseline), n);
    let growth = match (cycles.first(), cycles.last()) {
        (Some(a), Some(b)) if cycles.len() > 1 => per(diff(b.after, a.after), cycles.len() - 1),
        _ => None,
    };
    report
        .set("rss_connected_bytes", json!(first.connected))
        .set("rss_parked_peak_bytes", json!(first.peak))
        .set("rss_after_bytes", json!(first.after))
        .set("bytes_per_resumable_over_baseline", json!(over_baseline))
        .set("bytes_per_resumable_over_connected", json!(over_connected))
        .set("bytes_per_resumable_net_of_held", json!(net_of_held))
        .set("held_bytes_per_signal_measured", json!(held_per_signal))
        .set("bytes_per_session_after_window", json!(retained))
        .set("rss_after_growth_per_cycle_bytes", json!(growth));
    report.line(format!(
        "RSS: baseline {}, {n} connected {}, resumable (peak) {}, after the window {}",
        mib(baseline),
        mib(first.connected),
        mib(first.peak),
        mib(first.after)
    ));
    report.line(format!(
        "per resumable session: {} over baseline ({} net of {} held frame bytes), {} over connected; {} per held signal ({} B frames)",
        kib(over_baseline),
        kib(net_of_held),
        held_frame_bytes,
        kib(over_connected),
        held_per_signal.map_or("?".into(), |b| format!("{b:.0} B")),
        held_frame_bytes / args.held.max(1)
    ));
    report.line(format!(
        "after the window: {} per session still resident over baseline; all parked {:.2} s after the drop, all expired after {:.1} s",
        kib(retained),
        first.parked_in,
        first.expired_in
    ));
    if cycles.len() > 1 {
        report.line(format!(
            "RSS after each window: {} (growth per cycle {})",
            cycles
                .iter()
                .map(|c| mib(c.after))
                .collect::<Vec<_>>()
                .join(", "),
            kib(growth)
        ));
    }
}
