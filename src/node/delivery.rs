//! The two tasks behind delivery confirmation (the bookkeeping is in
//! `confirm.rs`): the flusher publishes what this node took, one
//! confirmation envelope per origin node, a moment after the first signal
//! of a batch; the sweeper answers this node's signals that nobody
//! confirmed in time, publishing marks to its own channel meanwhile as the
//! evidence that Redis passes envelopes on.

use std::sync::Arc;
use std::time::Duration;

use super::confirm::Timing;
use super::Node;
use crate::bus::{Envelope, MessageBus};

/// How long the flusher lets a batch grow after its first signal: short
/// next to any delivery timeout, long enough that a busy node confirms
/// hundreds of signals per envelope.
const CONFIRM_DELAY: Duration = Duration::from_millis(2);
/// How long after a failed confirmation publish it is retried.
const CONFIRM_RETRY: Duration = Duration::from_millis(50);
/// How often the sweeper looks at unconfirmed signals (and publishes a
/// mark) while any wait.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

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
            for (origin, seqs) in self.confirmations.take() {
                let node = Arc::clone(&self);
                let retry_origin = origin.clone();
                let envelope = Envelope::Confirm { seqs: seqs.clone() }.encode();
                self.metrics.confirmations_sent.inc();
                self.bus.publish(
                    &origin,
                    envelope,
                    Some(Box::new(move |result| {
                        // Reaching nobody: the origin is gone, and with it
                        // the senders that could be answered.
                        if result.is_err() {
                            node.confirmations.requeue(retry_origin, seqs);
                            let node = Arc::clone(&node);
                            tokio::spawn(async move {
                                tokio::time::sleep(CONFIRM_RETRY).await;
                                node.confirm_wake.notify_one();
                            });
                        }
                    })),
                );
            }
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
