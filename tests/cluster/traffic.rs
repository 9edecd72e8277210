//! Steady cross-node traffic with a ledger, for failover tests: one sender
//! on one node signals one receiver on another every few milliseconds;
//! every signal must end up delivered or answered with an ERROR, never
//! neither (PROTOCOL.md, "Delivery guarantees").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use signal_manager_client::{Client, ConnectOptions, Event};
use signal_manager_service::protocol::MessageType;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// How often the sender signals.
const EVERY: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Ledger {
    sent: Vec<(Uuid, Instant)>,
    delivered: HashMap<Uuid, u32>,
    errors: HashMap<Uuid, (u32, String)>,
}

/// Running traffic.
pub struct Traffic {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    sender: JoinHandle<()>,
    receiver: JoinHandle<()>,
}

/// What became of the signals.
#[derive(Debug)]
pub struct Outcome {
    pub sent: usize,
    pub delivered: usize,
    pub answered: usize,
    pub silent: usize,
    pub duplicated: usize,
    /// Error codes seen, with counts.
    pub codes: HashMap<String, usize>,
    /// From `since` to the send time after which every signal was
    /// delivered (cross-node routing is back).
    pub back_after: Option<Duration>,
    /// What each duplicated signal got, so a failure says which kind of
    /// duplicate it was (delivered twice, or delivered and answered).
    pub duplicates: Vec<Duplicate>,
}

/// A signal that was delivered more than once, or delivered and answered.
#[derive(Debug)]
pub struct Duplicate {
    pub id: Uuid,
    /// Sent this long after the traffic started.
    pub sent_after: Duration,
    pub deliveries: u32,
    /// ERRORs carrying its id, and the code of the first.
    pub errors: u32,
    pub code: Option<String>,
}

impl Outcome {
    /// Prints a failover's figures (`what` names it) and asserts that no
    /// signal was silent or duplicated; returns when routing came back.
    pub fn check_failover(&self, what: &str, promoted: Duration) -> Duration {
        let back = self.back_after.expect("routing came back");
        println!(
            "{what}: promoted after {promoted:?}, cross-node routing back after {back:?}; \
             {} signals: {} delivered, {} answered {:?}, {} silent, {} duplicated",
            self.sent, self.delivered, self.answered, self.codes, self.silent, self.duplicated
        );
        self.print_duplicates(what);
        assert_eq!(self.silent, 0, "no signal goes unanswered");
        assert_eq!(self.duplicated, 0, "duplicates: {:?}", self.duplicates);
        back
    }

    /// Prints one line per duplicated signal (none when there are none).
    pub fn print_duplicates(&self, what: &str) {
        for d in &self.duplicates {
            println!(
                "{what}: duplicated signal {} sent at +{:?}: delivered {} time(s), \
                 answered {} time(s){}",
                d.id,
                d.sent_after,
                d.deliveries,
                d.errors,
                d.code
                    .as_deref()
                    .map(|c| format!(" with {c}"))
                    .unwrap_or_default()
            );
        }
    }
}

impl Traffic {
    /// Starts `from` (on `from_url`) signalling `to` (on `to_url`).
    pub async fn start(
        from_url: &str,
        from: (&str, &str),
        to_url: &str,
        to: (&str, &str),
    ) -> Traffic {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut receiver_client = Client::connect(ConnectOptions::new(to_url, to.0, to.1))
            .await
            .expect("receiver connects");
        let mut sender_client = Client::connect(ConnectOptions::new(from_url, from.0, from.1))
            .await
            .expect("sender connects");
        let receiver = {
            let (ledger, stop) = (Arc::clone(&ledger), Arc::clone(&stop));
            tokio::spawn(async move {
                // Gives up after 30 s without a delivery; after the stop,
                // waits out late deliveries for 4 s. Short slices, so a
                // stop is noticed in a wait that began before it.
                let mut last = Instant::now();
                loop {
                    let quiet = if stop.load(Ordering::Acquire) {
                        Duration::from_secs(4)
                    } else {
                        Duration::from_secs(30)
                    };
                    if last.elapsed() >= quiet {
                        return;
                    }
                    let slice = Duration::from_millis(100);
                    match tokio::time::timeout(slice, receiver_client.next_event()).await {
                        Ok(Some(Event::Signal(s))) => {
                            last = Instant::now();
                            *ledger
                                .lock()
                                .unwrap()
                                .delivered
                                .entry(s.message_id)
                                .or_default() += 1;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        Err(_) => {}
                    }
                }
            })
        };
        let target = to.0.to_owned();
        let sender = {
            let (ledger, stop) = (Arc::clone(&ledger), Arc::clone(&stop));
            tokio::spawn(async move {
                let record = |event: Event| {
                    if let Event::Error {
                        message_id, code, ..
                    } = event
                    {
                        let mut l = ledger.lock().unwrap();
                        let e = l.errors.entry(message_id).or_insert((0, code));
                        e.0 += 1;
                    }
                };
                let mut tick = tokio::time::interval(EVERY);
                while !stop.load(Ordering::Acquire) {
                    tick.tick().await;
                    let id = Uuid::new_v4();
                    ledger.lock().unwrap().sent.push((id, Instant::now()));
                    sender_client
                        .signal_with_id(MessageType::SignalOffer, id, &target, "sdp")
                        .await
                        .expect("sender socket stays up");
                    while let Ok(Some(event)) =
                        tokio::time::timeout(Duration::ZERO, sender_client.next_event()).await
                    {
                        record(event);
                    }
                }
                // Answers may take up to the publish timeout plus the
                // delivery timeout.
                while let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_secs(5), sender_client.next_event()).await
                {
                    record(event);
                }
            })
        };
        Traffic {
            ledger,
            stop,
            sender,
            receiver,
        }
    }

    /// Whether the last `n` signals sent were all delivered.
    pub fn last_delivered(&self, n: usize) -> bool {
        let l = self.ledger.lock().unwrap();
        l.sent.len() >= n
            && l.sent[l.sent.len() - n..]
                .iter()
                .all(|(id, _)| l.delivered.contains_key(id))
    }

    /// What became of the last `n` signals, for a failure message.
    fn recent(&self, n: usize) -> String {
        let l = self.ledger.lock().unwrap();
        let mut tally: HashMap<String, usize> = HashMap::new();
        for (id, _) in l.sent.iter().rev().take(n) {
            let state = if l.delivered.contains_key(id) {
                "delivered".to_owned()
            } else if let Some((_, code)) = l.errors.get(id) {
                code.clone()
            } else {
                "pending".to_owned()
            };
            *tally.entry(state).or_default() += 1;
        }
        format!(
            "{tally:?} of {} sent, last sent {:?} ago",
            l.sent.len(),
            l.sent.last().map(|(_, at)| at.elapsed())
        )
    }

    /// Waits until routing is back: the last 50 signals (half a second),
    /// all sent after this call, all delivered; up to `limit`.
    pub async fn wait_back(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let first = self.ledger.lock().unwrap().sent.len();
        while self.ledger.lock().unwrap().sent.len() < first + 50 || !self.last_delivered(50) {
            assert!(
                Instant::now() < deadline,
                "routing not back within {limit:?}; last signals: {}",
                self.recent(50)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops sending, collects the late answers and deliveries, and
    /// accounts for every signal; recovery is measured from `since`.
    pub async fn finish(self, since: Instant) -> Outcome {
        self.stop.store(true, Ordering::Release);
        self.sender.await.unwrap();
        self.receiver.await.unwrap();
        let l = self.ledger.lock().unwrap();
        let (mut delivered, mut answered, mut silent, mut duplicated) = (0, 0, 0, 0);
        let mut codes: HashMap<String, usize> = HashMap::new();
        let mut last_failure: Option<Instant> = None;
        let mut duplicates = Vec::new();
        let started = l.sent.first().map(|(_, at)| *at);
        for (id, at) in &l.sent {
            let d = l.delivered.get(id).copied().unwrap_or(0);
            let e = l.errors.get(id);
            match (d, e) {
                (0, None) => silent += 1,
                (0, Some((_, code))) => {
                    answered += 1;
                    *codes.entry(code.clone()).or_default() += 1;
                }
                (1, None) => delivered += 1,
                _ => {
                    duplicated += 1;
                    duplicates.push(Duplicate {
                        id: *id,
                        sent_after: started.map_or(Duration::ZERO, |s| at.duration_since(s)),
                        deliveries: d,
                        errors: e.map_or(0, |(n, _)| *n),
                        code: e.map(|(_, code)| code.clone()),
                    });
                }
            }
            if d == 0 && *at >= since {
                last_failure = Some(*at);
            }
        }
        let back_after = match last_failure {
            None => Some(Duration::ZERO),
            Some(t) => l
                .sent
                .iter()
                .find(|(_, at)| *at > t)
                .map(|(_, at)| at.duration_since(since)),
        };
        Outcome {
            sent: l.sent.len(),
            delivered,
            answered,
            silent,
            duplicated,
            codes,
            back_after,
            duplicates,
        }
    }
}
