//! Chaos: Redis and three nodes, 200 sender → receiver pairs across nodes
//! at about 1,000 signals/s in total, while the test in turn kills a node
//! (kill -9) and starts it again, drains one (SIGTERM) and starts it again,
//! restarts Redis empty, and stops Redis for 3 s (SIGSTOP). Clients of a
//! node that went away reconnect. Every signal is accounted for: delivered
//! exactly once, or answered exactly once with an ERROR carrying its id;
//! none silent, duplicated, both, or out of order per pair.
//!
//! A signal whose sender's own session broke within seconds of sending it
//! cannot be answered by anyone (the sender's node is gone, with what it
//! had not yet read): those are counted apart as "in doubt" and printed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signal_manager_client::{Client, ConnectOptions, Event, TokenSource};
use signal_manager_service::protocol::MessageType;
use tokio::time::Instant;
use uuid::Uuid;

use crate::support::redis_server::RedisServer;
use crate::support::*;
use crate::*;

const SECRET: &str = "chaos-test-secret";
const PAIRS: usize = 200;
/// Each sender's pace: 200 senders × 5/s = 1,000 signals/s.
const PACE: Duration = Duration::from_millis(200);
/// How long after sending a sender's broken session puts a signal in doubt.
const DOUBT: Duration = Duration::from_secs(3);

fn token(client: &str) -> String {
    use signal_manager_service::auth;
    use signal_manager_service::config::{AuthSettings, Secret};
    let settings = AuthSettings {
        token_secret: Some(Secret::new(SECRET)),
        ..AuthSettings::default()
    };
    auth::mint(&settings, client, Duration::from_secs(3600)).expect("mint")
}

fn tokens(client: &str) -> TokenSource {
    let client = client.to_owned();
    Arc::new(move || token(&client))
}

struct Sent {
    pair: usize,
    at: Instant,
}

#[derive(Default)]
struct Ledger {
    sent: HashMap<Uuid, Sent>,
    delivered: HashMap<Uuid, u32>,
    delivered_at: HashMap<Uuid, Instant>,
    answered: HashMap<Uuid, u32>,
    codes: HashMap<Uuid, String>,
    reordered: u32,
    /// When each pair's sender saw its session break.
    sender_breaks: HashMap<usize, Vec<Instant>>,
    /// When each pair's receiver saw its session break.
    receiver_breaks: HashMap<usize, Vec<Instant>>,
}

/// A node's ports, to start it again where its clients expect it.
struct Slot {
    node: Option<ChildNode>,
    port: u16,
    admin: u16,
    id: String,
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("address with a port")
}

fn env(prefix: &str) -> Vec<(&str, &str)> {
    vec![
        ("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", SECRET),
        ("SIGNAL_MANAGER_CLUSTER_KEY_PREFIX", prefix),
        ("SIGNAL_MANAGER_SERVER_DRAIN_TIMEOUT", "5"),
        ("SIGNAL_MANAGER_SERVER_RATE_LIMIT_PER_SECOND", "10000"),
        ("SIGNAL_MANAGER_SERVER_RATE_LIMIT_BURST", "10000"),
    ]
}

impl Slot {
    async fn start(redis: &RedisServer, prefix: &str, id: &str) -> Slot {
        let url = redis.url();
        let node = ChildNode::spawn(&["--redis-url", &url, "--node-id", id], &env(prefix)).await;
        Slot {
            port: port_of(&node.url),
            admin: port_of(&node.admin),
            node: Some(node),
            id: id.to_owned(),
        }
    }

    async fn restart(&mut self, redis: &RedisServer, prefix: &str) {
        let url = redis.url();
        let args = ["--redis-url", url.as_str(), "--node-id", self.id.as_str()];
        self.node = Some(ChildNode::spawn_on(self.port, self.admin, &args, &env(prefix)).await);
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_silently() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("chaos");
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Slot::start(&redis, &prefix, &format!("chaos-{i}")).await);
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let sending = Arc::new(AtomicBool::new(true));
    let started = Instant::now();

    let mut receivers = Vec::new();
    for pair in 0..PAIRS {
        let id = format!("r{pair}");
        let url = nodes[(pair + 1) % 3].url();
        let mut client =
            Client::connect(ConnectOptions::new(&url, &id, token(&id)).reconnect(tokens(&id)))
                .await
                .expect("receiver connects");
        let ledger = Arc::clone(&ledger);
        receivers.push(tokio::spawn(async move {
            let mut last = 0u64;
            while let Some(event) = client.next_event().await {
                match event {
                    Event::Signal(s) => {
                        let seq: u64 = s.data.parse().unwrap_or(0);
                        let mut l = ledger.lock().unwrap();
                        *l.delivered.entry(s.message_id).or_default() += 1;
                        l.delivered_at.insert(s.message_id, Instant::now());
                        if seq <= last {
                            l.reordered += 1;
                        }
                        last = last.max(seq);
                    }
                    Event::Disconnected { .. } => {
                        let mut l = ledger.lock().unwrap();
                        l.receiver_breaks
                            .entry(pair)
                            .or_default()
                            .push(Instant::now());
                    }
                    _ => {}
                }
            }
        }));
    }
    let mut senders = Vec::new();
    for pair in 0..PAIRS {
        let id = format!("s{pair}");
        let url = nodes[pair % 3].url();
        let mut client =
            Client::connect(ConnectOptions::new(&url, &id, token(&id)).reconnect(tokens(&id)))
                .await
                .expect("sender connects");
        let ledger = Arc::clone(&ledger);
        let sending = Arc::clone(&sending);
        let target = format!("r{pair}");
        senders.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(PACE);
            // Spread the senders over the pace.
            tokio::time::sleep(PACE * (pair as u32) / PAIRS as u32).await;
            let mut seq = 0u64;
            let mut quiet_until = None;
            loop {
                tokio::select! {
                    _ = pace.tick(), if quiet_until.is_none() => {
                        if !sending.load(Ordering::Acquire) {
                            quiet_until = Some(Instant::now() + Duration::from_secs(10));
                            continue;
                        }
                        seq += 1;
                        let id = Uuid::new_v4();
                        ledger.lock().unwrap().sent.insert(id, Sent { pair, at: Instant::now() });
                        if client.signal_with_id(MessageType::SignalOffer, id, &target, &seq.to_string()).await.is_err() {
                            return;
                        }
                    }
                    event = client.next_event() => match event {
                        Some(Event::Error { message_id, code, .. }) => {
                            let mut l = ledger.lock().unwrap();
                            *l.answered.entry(message_id).or_default() += 1;
                            l.codes.insert(message_id, code);
                        }
                        Some(Event::Disconnected { .. }) => {
                            ledger.lock().unwrap().sender_breaks.entry(pair).or_default().push(Instant::now());
                        }
                        Some(_) => {}
                        None => return,
                    },
                    _ = async {
                        match quiet_until {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => return,
                }
            }
        }));
    }
    let at = |secs: u64| started + Duration::from_secs(secs);
    let mut log = Vec::new();

    tokio::time::sleep_until(at(4)).await;
    nodes[0].node.as_mut().expect("running").kill();
    log.push(format!("{:?} kill -9 {}", started.elapsed(), nodes[0].id));
    tokio::time::sleep_until(at(6)).await;
    nodes[0].restart(&redis, &prefix).await;
    log.push(format!(
        "{:?} {} started again",
        started.elapsed(),
        nodes[0].id
    ));

    tokio::time::sleep_until(at(11)).await;
    let drained = nodes[1].node.as_mut().expect("running");
    drained.terminate();
    let status = drained
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("drains");
    assert!(status.success(), "a drained node exits 0");
    log.push(format!("{:?} {} drained", started.elapsed(), nodes[1].id));
    nodes[1].restart(&redis, &prefix).await;
    log.push(format!(
        "{:?} {} started again",
        started.elapsed(),
        nodes[1].id
    ));

    tokio::time::sleep_until(at(18)).await;
    redis.restart().await;
    log.push(format!("{:?} Redis restarted empty", started.elapsed()));

    tokio::time::sleep_until(at(24)).await;
    send_os_signal(redis.pid(), "STOP");
    log.push(format!("{:?} Redis SIGSTOP", started.elapsed()));
    tokio::time::sleep_until(at(27)).await;
    send_os_signal(redis.pid(), "CONT");
    log.push(format!("{:?} Redis SIGCONT", started.elapsed()));

    tokio::time::sleep_until(at(33)).await;
    sending.store(false, Ordering::Release);
    // Every signal settles: answers arrive within the delivery timeout.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = {
            let l = ledger.lock().unwrap();
            l.sent
                .keys()
                .filter(|id| !l.delivered.contains_key(id) && !l.answered.contains_key(id))
                .count()
        };
        if open == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in senders {
        s.abort();
    }
    for r in receivers {
        r.abort();
    }

    let l = ledger.lock().unwrap();
    let (mut delivered, mut answered, mut silent, mut doubt, mut duplicated, mut both) =
        (0, 0, 0, 0, 0, 0);
    let mut receiver_doubt = 0;
    let broke_within = |breaks: &HashMap<usize, Vec<Instant>>, pair: usize, from: Instant| {
        breaks
            .get(&pair)
            .is_some_and(|b| b.iter().any(|at| *at >= from && *at <= from + DOUBT))
    };
    for (id, sent) in &l.sent {
        let d = l.delivered.get(id).copied().unwrap_or(0);
        let e = l.answered.get(id).copied().unwrap_or(0);
        match (d, e) {
            (1, 0) => delivered += 1,
            (0, 1) => answered += 1,
            (0, 0) => {
                if broke_within(&l.sender_breaks, sent.pair, sent.at) {
                    doubt += 1;
                } else {
                    silent += 1;
                }
            }
            // Written to the receiver's socket, then its node was killed
            // before the confirmation left: the origin cannot know.
            (1, 1)
                if l.delivered_at.get(id).is_some_and(|at| {
                    broke_within(
                        &l.receiver_breaks,
                        sent.pair,
                        *at - Duration::from_millis(100),
                    )
                }) =>
            {
                receiver_doubt += 1;
            }
            (d, e) if d >= 1 && e >= 1 => {
                both += 1;
                println!(
                    "chaos: both: pair {} sent at {:?}, answered {:?}",
                    sent.pair,
                    sent.at - started,
                    l.codes.get(id)
                );
            }
            _ => duplicated += 1,
        }
    }
    for line in &log {
        println!("chaos: {line}");
    }
    println!(
        "chaos: {} signals sent: {delivered} delivered, {answered} answered with an error, \
         {silent} silent, {duplicated} duplicated, {both} both delivered and answered, \
         {} reordered, {doubt} in doubt (the sender's own session broke), \
         {receiver_doubt} delivered and answered as the receiver's node was killed",
        l.sent.len(),
        l.reordered
    );
    assert_eq!(silent, 0, "signals lost silently");
    assert_eq!(duplicated, 0, "signals delivered or answered twice");
    assert_eq!(both, 0, "signals both delivered and answered");
    assert_eq!(l.reordered, 0, "signals out of order per pair");
    assert!(delivered > l.sent.len() / 2, "most signals are delivered");
}

/// Rolling restart: three nodes, 100 pairs at about 500 signals/s in total;
/// each node in turn is drained (SIGTERM) and started again while its
/// clients reconnect through the other nodes and resume. Nothing is answered
/// PEER_NOT_FOUND, nothing is silent, duplicated or out of order, and every
/// reconnect resumes its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_is_invisible_to_resuming_clients() {
    const ROLLING_PAIRS: usize = 100;
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("rolling");
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Slot::start(&redis, &prefix, &format!("rolling-{i}")).await);
    }
    let urls: Vec<String> = nodes.iter().map(Slot::url).collect();
    let options = |i: usize, id: &str| {
        let others = (1..3).map(|k| urls[(i + k) % 3].clone()).collect();
        ConnectOptions::new(&urls[i], id, token(id))
            .reconnect(tokens(id))
            .fallback_urls(others)
    };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let fresh_sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let resumed_sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for pair in 0..ROLLING_PAIRS {
        let id = format!("r{pair}");
        let mut receiver = Client::connect(options((pair + 1) % 3, &id))
            .await
            .expect("receiver connects");
        let (ledger, fresh, resumed) = (
            Arc::clone(&ledger),
            Arc::clone(&fresh_sessions),
            Arc::clone(&resumed_sessions),
        );
        tasks.push(tokio::spawn(async move {
            let mut last = 0u64;
            while let Some(event) = receiver.next_event().await {
                match event {
                    Event::Signal(s) => {
                        let seq: u64 = s.data.parse().unwrap_or(0);
                        let mut l = ledger.lock().unwrap();
                        *l.delivered.entry(s.message_id).or_default() += 1;
                        if seq <= last {
                            l.reordered += 1;
                        }
                        last = last.max(seq);
                    }
                    Event::Reconnected(ack) if ack.resumed => {
                        resumed.fetch_add(1, Ordering::AcqRel);
                    }
                    Event::Reconnected(_) => {
                        fresh.fetch_add(1, Ordering::AcqRel);
                    }
                    _ => {}
                }
            }
        }));
    }
    for pair in 0..ROLLING_PAIRS {
        let id = format!("s{pair}");
        let mut sender = Client::connect(options(pair % 3, &id))
            .await
            .expect("sender connects");
        let (ledger, sending, fresh, resumed) = (
            Arc::clone(&ledger),
            Arc::clone(&sending),
            Arc::clone(&fresh_sessions),
            Arc::clone(&resumed_sessions),
        );
        let target = format!("r{pair}");
        tasks.push(tokio::spawn(async move {
            let mut pace = tokio::time::interval(PACE);
            tokio::time::sleep(PACE * (pair as u32) / ROLLING_PAIRS as u32).await;
            let mut seq = 0u64;
            let mut quiet_until: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = pace.tick(), if quiet_until.is_none() => {
                        if !sending.load(Ordering::Acquire) {
                            quiet_until = Some(Instant::now() + Duration::from_secs(10));
                            continue;
                        }
                        seq += 1;
                        let id = Uuid::new_v4();
                        ledger.lock().unwrap().sent.insert(id, Sent { pair, at: Instant::now() });
                        if sender.signal_with_id(MessageType::SignalOffer, id, &target, &seq.to_string()).await.is_err() {
                            return;
                        }
                    }
                    event = sender.next_event() => match event {
                        Some(Event::Error { message_id, code, .. }) => {
                            let mut l = ledger.lock().unwrap();
                            *l.answered.entry(message_id).or_default() += 1;
                            l.codes.insert(message_id, code);
                        }
                        Some(Event::Disconnected { .. }) => {
                            ledger.lock().unwrap().sender_breaks.entry(pair).or_default().push(Instant::now());
                        }
                        Some(Event::Reconnected(ack)) if ack.resumed => {
                            resumed.fetch_add(1, Ordering::AcqRel);
                        }
                        Some(Event::Reconnected(_)) => {
                            fresh.fetch_add(1, Ordering::AcqRel);
                        }
                        Some(_) => {}
                        None => return,
                    },
                    _ = async {
                        match quiet_until {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => return,
                }
            }
        }));
    }
    let mut log = Vec::new();
    for (turn, slot) in nodes.iter_mut().enumerate() {
        tokio::time::sleep_until(started + Duration::from_secs(3 + 6 * turn as u64)).await;
        let node = slot.node.as_mut().expect("running");
        node.terminate();
        let status = node
            .wait_exit(Duration::from_secs(15))
            .await
            .expect("drains");
        assert!(status.success(), "a drained node exits 0");
        log.push(format!("{:?} {} drained", started.elapsed(), slot.id));
        slot.restart(&redis, &prefix).await;
        log.push(format!("{:?} {} started again", started.elapsed(), slot.id));
    }
    tokio::time::sleep_until(started + Duration::from_secs(22)).await;
    sending.store(false, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = {
            let l = ledger.lock().unwrap();
            l.sent
                .keys()
                .filter(|id| !l.delivered.contains_key(id) && !l.answered.contains_key(id))
                .count()
        };
        if open == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tasks {
        t.abort();
    }
    let l = ledger.lock().unwrap();
    let (mut delivered, mut not_found, mut other_errors, mut silent, mut doubt, mut twice) =
        (0, 0, 0, 0, 0, 0);
    for (id, sent) in &l.sent {
        let d = l.delivered.get(id).copied().unwrap_or(0);
        let e = l.answered.get(id).copied().unwrap_or(0);
        match (d, e) {
            (1, 0) => delivered += 1,
            (0, 1) => {
                let code = l.codes.get(id).cloned().unwrap_or_default();
                println!(
                    "rolling: {code} for pair {} sent at {:?} (message {id})",
                    sent.pair,
                    sent.at - started
                );
                if code == "PEER_NOT_FOUND" {
                    not_found += 1;
                } else {
                    other_errors += 1;
                }
            }
            (0, 0) => {
                let broke = l
                    .sender_breaks
                    .get(&sent.pair)
                    .is_some_and(|b| b.iter().any(|at| *at >= sent.at && *at <= sent.at + DOUBT));
                if broke {
                    doubt += 1;
                } else {
                    silent += 1;
                }
            }
            _ => twice += 1,
        }
    }
    for line in &log {
        println!("rolling: {line}");
    }
    let (resumed, fresh) = (
        resumed_sessions.load(Ordering::Acquire),
        fresh_sessions.load(Ordering::Acquire),
    );
    println!(
        "rolling: {} signals sent: {delivered} delivered, {not_found} PEER_NOT_FOUND, \
         {other_errors} other errors, {silent} silent, {twice} duplicated or both, {} reordered, \
         {doubt} in doubt (the sender's own socket closed with them unread); \
         {resumed} reconnects resumed, {fresh} started a new session",
        l.sent.len(),
        l.reordered
    );
    assert_eq!(not_found, 0, "PEER_NOT_FOUND during a rolling restart");
    // A drained node leaves only once its sessions' new nodes took them and
    // once it has handled everything published to it: no timeout either.
    assert_eq!(other_errors, 0, "errors during a rolling restart");
    assert_eq!(silent, 0, "signals lost silently");
    assert_eq!(
        twice, 0,
        "signals duplicated or both delivered and answered"
    );
    assert_eq!(l.reordered, 0, "signals out of order per pair");
    assert_eq!(fresh, 0, "every reconnect resumes its session");
    assert!(resumed > 0);
}
