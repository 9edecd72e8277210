//! The two tasks behind delivery confirmation (the bookkeeping is in
//! `confirm.rs`): the flusher publishes what this node took, one
//! confirmation envelope per origin node, a moment after the first signal
//! of a batch; the sweeper answers this node's signals that nobody
//! confirmed in time, publishing marks to its own channel meanwhile as the
//! evidence that Redis passes envelopes on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::confirm::Timing;
use super::Node;
use crate::bus::{Envelope, MessageBus};
use crate::ids::NodeId;

/// How long the flusher lets a batch grow after its first signal, at
/// least: short next to any delivery timeout. At 2 ms a node receiving
/// 5,000 signals/s published 500 confirmations a second, which cost about
/// 20 µs of CPU per signal (nodes and Redis); at 10 ms it publishes 100.
const CONFIRM_DELAY: Duration = Duration::from_millis(10);
/// A batch smaller than this after [`CONFIRM_DELAY`] waits for as long as
/// the rate seen so far takes to fill it, up to [`CONFIRM_DELAY_MAX`]. A
/// confirmation publish costs about as much as a signal's (a wake-up on
/// each of three processes), so at 1,000 signals/s ten-signal batches
/// cost about 15 µs per signal, and fifty-signal ones about 3.
const CONFIRM_BATCH: usize = 128;
/// The longest a taken signal waits for its confirmation to leave. This is
/// the kill -9 window: a signal written, then its node killed before the
/// confirmation left, is both delivered and answered. Filling batches by
/// count bounds what one such crash puts in doubt at about
/// [`CONFIRM_BATCH`] signals per origin at any rate above 2,560/s, and to
/// 50 ms of signals below it.
const CONFIRM_DELAY_MAX: Duration = Duration::from_millis(50);
/// How long after a failed confirmation publish it is retried.
const CONFIRM_RETRY: Duration = Duration::from_millis(50);
/// Publishes of one confirmation before it is given up (about 5 s).
const CONFIRM_ATTEMPTS: u32 = 100;
/// Publishes of one `ConfirmAgain` before it is given up (about 2 s): the
/// origin holds back its timeouts meanwhile, so this bounds how late a
/// signal to a node that is gone for good can be answered.
const CONFIRM_AGAIN_ATTEMPTS: u32 = 40;
/// How long a draining node waits for its last confirmations to publish.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// How often the sweeper looks at unconfirmed signals (and publishes a
/// mark) while any wait.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// An envelope published until a subscriber hears it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Persistent {
    /// Signals this node took, to their origin: a lost confirmation would
    /// have them answered as failed although they were delivered.
    Confirmation,
    /// This node asks a node holding its signals to confirm again. While
    /// it fails or reaches no subscriber (that node may itself be moving to
    /// a new master), no mark counts, so no signal is answered before its
    /// confirmation could arrive.
    ConfirmAgain,
}

impl Persistent {
    fn attempts(self) -> u32 {
        match self {
            Persistent::Confirmation => CONFIRM_ATTEMPTS,
            Persistent::ConfirmAgain => CONFIRM_AGAIN_ATTEMPTS,
        }
    }
}

impl Node {
    /// The receiver's accept window in µs (see `confirm.rs`).
    pub(super) fn accept_window_us(&self) -> u64 {
        let timeout_ms = self.settings.delivery_timeout().as_millis() as u64;
        Timing::accept_window(timeout_ms).saturating_mul(1000)
    }

    pub(super) async fn run_confirmations(self: Arc<Self>) {
        loop {
            self.confirm_wake.notified().await;
            tokio::time::sleep(CONFIRM_DELAY).await;
            let taken = self.confirmations.len();
            if taken < CONFIRM_BATCH {
                tokio::time::sleep(fill_time(taken)).await;
            }
            let now_ms = self.now_ms();
            for (origin, seqs) in self.confirmations.take() {
                // Encoded once: kept as is for an origin that asks again,
                // and published as is on every retry.
                let envelope = Envelope::Confirm { seqs }.encode();
                self.sent_confirmations.keep(&origin, &envelope, now_ms);
                Arc::clone(&self).publish_confirmation(origin, envelope, 0);
            }
        }
    }

    /// Publishes one confirmation until `origin` hears it (see
    /// [`Persistent::Confirmation`]).
    fn publish_confirmation(self: Arc<Self>, origin: NodeId, envelope: Bytes, attempt: u32) {
        self.publish_persistently(Persistent::Confirmation, origin, envelope, attempt);
    }

    /// This node's subscription is back: ask every node holding signals of
    /// it unconfirmed for the confirmations the old subscription may have
    /// lost (counted by Redis, never read).
    pub(super) fn ask_confirmations_again(self: &Arc<Self>) {
        let request = Envelope::ConfirmAgain {
            origin: self.id.as_str().to_owned(),
        }
        .encode();
        for to in self.unconfirmed.targets() {
            Arc::clone(self).publish_persistently(Persistent::ConfirmAgain, to, request.clone(), 0);
        }
    }

    /// Publishes `envelope` to `to`'s channel; retried `CONFIRM_RETRY`
    /// apart while the publish fails or reaches no subscriber, up to the
    /// kind's attempts.
    fn publish_persistently(
        self: Arc<Self>,
        kind: Persistent,
        to: NodeId,
        envelope: Bytes,
        attempt: u32,
    ) {
        if kind == Persistent::Confirmation {
            self.metrics.confirmations_sent.inc();
        }
        let node = Arc::clone(&self);
        let target = to.clone();
        self.bus.publish(
            &target,
            envelope.clone(),
            Some(Box::new(move |result| {
                if matches!(result, Ok(n) if n > 0) {
                    return;
                }
                if kind == Persistent::ConfirmAgain {
                    node.unconfirmed.resubscribed(node.now_ms());
                }
                if attempt + 1 >= kind.attempts() {
                    return;
                }
                tokio::spawn(async move {
                    tokio::time::sleep(CONFIRM_RETRY).await;
                    node.publish_persistently(kind, to, envelope, attempt + 1);
                });
            })),
        );
    }

    /// `origin` asks again: publish every confirmation for it still kept
    /// (a duplicate settles nothing there).
    pub(super) fn confirm_again(self: &Arc<Self>, origin: NodeId) {
        for envelope in self.sent_confirmations.for_origin(&origin, self.now_ms()) {
            Arc::clone(self).publish_confirmation(origin.clone(), envelope, 0);
        }
    }

    /// Publishes every confirmation still waiting and awaits the publishes
    /// (bounded): a draining node must not exit with confirmations of
    /// signals its sessions wrote, or their senders are told they failed.
    pub(crate) async fn flush_confirmations(&self) {
        let mut outcomes = Vec::new();
        for (origin, seqs) in self.confirmations.take() {
            let (done, outcome) = tokio::sync::oneshot::channel();
            self.metrics.confirmations_sent.inc();
            self.bus.publish(
                &origin,
                Envelope::Confirm { seqs }.encode(),
                Some(Box::new(move |result| {
                    let _ = done.send(result.is_ok());
                })),
            );
            outcomes.push(outcome);
        }
        let all = futures_util::future::join_all(outcomes);
        if tokio::time::timeout(FINAL_FLUSH, all).await.is_err() {
            tracing::warn!("confirmations not all published before exit");
        }
    }

    pub(super) async fn run_sweeper(self: Arc<Self>) {
        loop {
            if self.unconfirmed.len() == 0 {
                self.sweep_wake.notified().await;
            }
            tokio::time::sleep(SWEEP_INTERVAL).await;
            let mark = Envelope::Mark {
                at_ms: self.now_ms(),
            };
            self.bus.publish(&self.id, mark.encode(), None);
            for (pending, error) in self.unconfirmed.expire(self.now_ms()) {
                self.metrics.unconfirmed.dec();
                self.metrics.delivery_timeouts.inc();
                self.fail(&pending, error);
            }
        }
    }
}

/// How much longer than [`CONFIRM_DELAY`] a batch of `taken` signals waits
/// for [`CONFIRM_BATCH`], at the rate it grew so far (capped).
fn fill_time(taken: usize) -> Duration {
    let room = CONFIRM_DELAY_MAX - CONFIRM_DELAY;
    if taken == 0 {
        return room;
    }
    let missing = CONFIRM_BATCH.saturating_sub(taken) as u32;
    (CONFIRM_DELAY * missing / taken as u32).min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_wait_for_more_up_to_the_cap() {
        // 1,000 signals/s: 10 in the first 10 ms; the cap is reached first.
        assert_eq!(fill_time(10), CONFIRM_DELAY_MAX - CONFIRM_DELAY);
        // 6,400 signals/s: 64 in 10 ms fill the batch in 10 ms more.
        assert_eq!(fill_time(64), Duration::from_millis(10));
        assert_eq!(
            fill_time(CONFIRM_BATCH - 1),
            CONFIRM_DELAY / (CONFIRM_BATCH as u32 - 1)
        );
        assert_eq!(fill_time(CONFIRM_BATCH), Duration::ZERO);
        assert_eq!(fill_time(0), CONFIRM_DELAY_MAX - CONFIRM_DELAY);
    }
}
