//! One relay pair's two tasks: the sender (paced or windowed, one write per
//! signal or one per batch) and the
//! receiver that checks source, id, order and latency of every signal.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use uuid::Uuid;

use super::fleet::{self, error_kind, ErrorCounts};
use super::report::histogram;
use signal_manager_client::{ClientError, Connection, Incoming};
use signal_manager_protocol::{encode_frame, Message, MessageType, Payload, WireSignal};

/// What one pair's two tasks share.
#[derive(Default)]
pub(super) struct PairState {
    pub(super) sent: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Set once the sender has sent its last signal (`sent` is final).
    pub(super) finished: AtomicBool,
    /// Wakes the sender when a window slot frees up.
    pub(super) freed: Notify,
}

/// The measured window, in µs since the epoch (end is `u64::MAX` while open).
pub(super) struct Window {
    pub(super) start_us: AtomicU64,
    pub(super) end_us: AtomicU64,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        t >= self.start_us.load(Ordering::Relaxed) && t < self.end_us.load(Ordering::Relaxed)
    }
}

pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(super) struct SenderDone {
    pub(super) errors: ErrorCounts,
    pub(super) broken: Option<String>,
}

pub(super) struct ReceiverDone {
    pub(super) latency: Histogram<u64>,
    pub(super) unique: u64,
    pub(super) duplicates: u64,
    pub(super) reordered: u64,
    pub(super) malformed: u64,
    pub(super) broken: Option<String>,
}

pub(super) struct SendPlan {
    pub(super) kind: MessageType,
    pub(super) target: String,
    pub(super) id_tag: u64,
    pub(super) size: usize,
    pub(super) codec: signal_manager_protocol::Codec,
    pub(super) window: u64,
    /// How signals reach the socket.
    pub(super) send_mode: SendMode,
    /// Fixed rate: (period per signal, first send); `None` = saturation.
    pub(super) pace: Option<(Duration, Instant)>,
}

impl SendPlan {
    /// The frame for sequence number `seq`, stamped now.
    pub(super) fn frame(&self, seq: u64, data: &mut String) -> Result<bytes::Bytes, ClientError> {
        data.clear();
        let _ = write!(data, "{seq} {} ", now_us());
        while data.len() < self.size {
            data.push('x');
        }
        let wire = WireSignal {
            target_client_id: self.target.clone(),
            source_client_id: String::new(),
            signal_data: data.clone(),
        };
        let id = Uuid::from_u64_pair(self.id_tag, seq);
        Ok(encode_frame(self.kind, id, self.codec, &wire)?)
    }
}

/// How a sender hands its signals to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SendMode {
    /// Each signal is its own WebSocket message, written and flushed on its
    /// own, as `WebSocket.send` in a browser does: one write per signal.
    PerMessage,
    /// Every signal due at once (a whole window at saturation) is queued,
    /// then flushed with one write, so the node reads many frames per
    /// system call. Faster than any browser sends; kept to compare with
    /// earlier figures.
    Batched,
}

impl SendMode {
    /// The name in the JSON line.
    pub fn as_str(self) -> &'static str {
        match self {
            SendMode::PerMessage => "per-message",
            SendMode::Batched => "batched",
        }
    }
}

/// The sender of one pair: paced or windowed sends, and the ERRORs that
/// answer them.
pub(super) async fn send(
    mut conn: Connection,
    plan: SendPlan,
    state: Arc<PairState>,
    mut stop: watch::Receiver<bool>,
    mut end: watch::Receiver<bool>,
) -> SenderDone {
    let mut done = SenderDone {
        errors: ErrorCounts::new(),
        broken: None,
    };
    let mut seq = 0u64;
    let mut data = String::with_capacity(plan.size + 32);
    let mut next_at = plan.pace.map(|(_, first)| first);
    let result: Result<(), ClientError> = async {
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let due = match (plan.pace, next_at) {
                (Some((period, _)), Some(at)) => {
                    // Everything due by now, catching up after a late wake.
                    let now = Instant::now();
                    let mut n = 0;
                    let mut t = at;
                    while t <= now && n < 1024 {
                        n += 1;
                        t += period;
                    }
                    next_at = Some(t);
                    n
                }
                _ => {
                    let open = seq
                        - state.delivered.load(Ordering::Acquire)
                        - state.errors.load(Ordering::Acquire);
                    plan.window.saturating_sub(open)
                }
            };
            if due > 0 {
                for _ in 0..due {
                    let frame = plan.frame(seq, &mut data)?;
                    match plan.send_mode {
                        SendMode::PerMessage => conn.send_bytes(frame).await?,
                        SendMode::Batched => conn.feed_bytes(frame).await?,
                    }
                    seq += 1;
                }
                state.sent.store(seq, Ordering::Release);
                if plan.send_mode == SendMode::Batched {
                    conn.flush().await?;
                }
                if plan.pace.is_none() {
                    continue;
                }
            }
            let wake = next_at.unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
            // Cancel-safe: `notified` and the sleep are re-created each turn,
            // reading keeps partial frames in the stream.
            tokio::select! {
                _ = state.freed.notified(), if plan.pace.is_none() => {}
                _ = tokio::time::sleep_until(wake) => {}
                incoming = conn.recv() => match incoming? {
                    Incoming::Message(Message { payload: Payload::Error(e), .. }) => {
                        state.errors.fetch_add(1, Ordering::AcqRel);
                        fleet::count(&mut done.errors, e.code);
                    }
                    Incoming::Message(_) | Incoming::Invalid(_) => {}
                    Incoming::Closed(code, _) => return Err(ClientError::Closed(code)),
                },
                _ = stop.changed() => {}
            }
        }
    }
    .await;
    state.sent.store(seq, Ordering::Release);
    state.finished.store(true, Ordering::Release);
    if let Err(e) = result {
        done.broken = Some(format!("sender: {}", error_kind(&e)));
        return done;
    }
    // Keep reading ERRORs for signals still in flight until the run ends
    // (bounded in case that signal never comes).
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if *end.borrow() {
                return;
            }
            tokio::select! {
                incoming = conn.recv() => match incoming {
                    Ok(Incoming::Message(Message { payload: Payload::Error(e), .. })) => {
                        state.errors.fetch_add(1, Ordering::AcqRel);
                        fleet::count(&mut done.errors, e.code);
                    }
                    Ok(Incoming::Message(_)) | Ok(Incoming::Invalid(_)) => {}
                    Ok(Incoming::Closed(..)) | Err(_) => return,
                },
                _ = end.changed() => {}
            }
        }
    })
    .await;
    done
}

/// The receiver of one pair: checks every signal and records its latency.
pub(super) async fn receive(
    mut conn: Connection,
    heartbeat: Duration,
    source: String,
    id_tag: u64,
    state: Arc<PairState>,
    window: Arc<Window>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverDone {
    let mut done = ReceiverDone {
        latency: histogram(),
        unique: 0,
        duplicates: 0,
        reordered: 0,
        malformed: 0,
        broken: None,
    };
    let mut next = 0u64;
    let mut missing = BTreeSet::new();
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    loop {
        if *stop.borrow() {
            break;
        }
        // Cancel-safe: see `send`.
        tokio::select! {
            incoming = conn.recv() => {
                let message = match incoming {
                    Ok(Incoming::Message(m)) => m,
                    Ok(Incoming::Invalid(_)) => { done.malformed += 1; continue; }
                    Ok(Incoming::Closed(code, _)) => {
                        done.broken = Some(format!("receiver: closed {code:?}"));
                        break;
                    }
                    Err(e) => {
                        done.broken = Some(format!("receiver: {}", error_kind(&e)));
                        break;
                    }
                };
                let Some((seq, sent_us)) = check(&message, &source, id_tag) else {
                    if !matches!(message.payload, Payload::Raw(_)) {
                        done.malformed += 1;
                    }
                    continue;
                };
                let now = now_us();
                if window.contains(sent_us) {
                    let _ = done.latency.record(now.saturating_sub(sent_us).max(1));
                }
                if seq == next {
                    next += 1;
                    done.unique += 1;
                } else if seq > next {
                    missing.extend(next..seq);
                    next = seq + 1;
                    done.unique += 1;
                } else if missing.remove(&seq) {
                    done.reordered += 1;
                    done.unique += 1;
                } else {
                    done.duplicates += 1;
                    continue;
                }
                state.delivered.fetch_add(1, Ordering::AcqRel);
                state.freed.notify_one();
            }
            _ = tick.tick() => {
                if conn.send_bytes(fleet::heartbeat()).await.is_err() {
                    done.broken = Some("receiver: heartbeat failed".into());
                    break;
                }
            }
            _ = stop.changed() => {}
        }
    }
    done
}

/// A delivered signal's (sequence, send time) if source, id and body agree.
fn check(message: &Message, source: &str, id_tag: u64) -> Option<(u64, u64)> {
    let data = match &message.payload {
        Payload::SignalOffer(s) | Payload::SignalAnswer(s) | Payload::SignalIceCandidate(s) => {
            &s.signal_data
        }
        _ => return None,
    };
    if message.source_client_id.as_deref() != Some(source) {
        return None;
    }
    let mut fields = data.splitn(3, ' ');
    let seq: u64 = fields.next()?.parse().ok()?;
    let sent_us: u64 = fields.next()?.parse().ok()?;
    (message.message_id == Uuid::from_u64_pair(id_tag, seq)).then_some((seq, sent_us))
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal_manager_protocol::Codec;

    #[test]
    fn frames_carry_sequence_and_time_and_pad_to_size() {
        let plan = SendPlan {
            kind: MessageType::SignalIceCandidate,
            target: "bob".into(),
            id_tag: 7,
            size: 200,
            codec: Codec::Json,
            window: 1,
            send_mode: SendMode::PerMessage,
            pace: None,
        };
        let frame = plan.frame(42, &mut String::new()).unwrap();
        let mut message = Message::decode(frame).unwrap();
        message.source_client_id = Some("alice".into());
        let Payload::SignalIceCandidate(s) = &message.payload else {
            panic!("not a signal")
        };
        assert_eq!(s.signal_data.len(), 200);
        let (seq, t) = check(&message, "alice", 7).unwrap();
        assert_eq!(seq, 42);
        assert!(t > 0);
        assert!(check(&message, "mallory", 7).is_none());
        assert!(check(&message, "alice", 8).is_none());
    }
}
