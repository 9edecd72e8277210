//! Confirmation batches this node published recently, kept so they can be
//! published again when their origin asks (`Envelope::ConfirmAgain`), as
//! pure bookkeeping (no clock, no I/O: callers pass the time in ms of the
//! node's monotonic clock).
//!
//! Why: a PUBLISH that Redis counted as received proves only that the
//! origin was subscribed, not that it read the envelope. When the origin's
//! pub/sub connection is dropped (a Sentinel switch, Sentinel's own
//! `CLIENT KILL TYPE pubsub` on a demoted master, a broken socket), the
//! confirmations counted but unread are lost, and this node, having seen a
//! count of 1, would never publish them again: the origin would answer
//! PEER_UNREACHABLE for signals that were delivered. So the already-encoded
//! envelopes are kept (one `Bytes` clone per batch, nothing per signal) and
//! the origin, once subscribed again, asks for them.
//!
//! This module owns only the keeping; publishing is `delivery.rs`'s job.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use crate::ids::NodeId;

/// Most batches kept, over all origins.
const MAX_BATCHES: usize = 16_384;
/// Most envelope bytes kept, over all origins.
const MAX_BYTES: usize = 16 << 20;

/// One published confirmation envelope.
struct Sent {
    at_ms: u64,
    origin: NodeId,
    envelope: Bytes,
}

#[derive(Default)]
struct Kept {
    /// Oldest first.
    batches: VecDeque<Sent>,
    bytes: usize,
}

/// Recently published confirmation envelopes, bounded in age, count and
/// bytes (the oldest go first).
pub(crate) struct SentBatches {
    kept: Mutex<Kept>,
    keep_ms: u64,
    max_batches: usize,
    max_bytes: usize,
}

impl SentBatches {
    /// Keeps each batch for `keep_ms`, within the default bounds.
    pub(crate) fn new(keep_ms: u64) -> SentBatches {
        SentBatches::bounded(keep_ms, MAX_BATCHES, MAX_BYTES)
    }

    fn bounded(keep_ms: u64, max_batches: usize, max_bytes: usize) -> SentBatches {
        SentBatches {
            kept: Mutex::new(Kept::default()),
            keep_ms,
            max_batches,
            max_bytes,
        }
    }

    /// Remembers a confirmation envelope for `origin` published at `now_ms`.
    pub(crate) fn keep(&self, origin: &NodeId, envelope: &Bytes, now_ms: u64) {
        let mut kept = self.lock();
        kept.bytes += envelope.len();
        kept.batches.push_back(Sent {
            at_ms: now_ms,
            origin: origin.clone(),
            envelope: envelope.clone(),
        });
        self.trim(&mut kept, now_ms);
    }

    /// The envelopes for `origin` still kept at `now_ms`, oldest first.
    pub(crate) fn for_origin(&self, origin: &NodeId, now_ms: u64) -> Vec<Bytes> {
        let mut kept = self.lock();
        self.trim(&mut kept, now_ms);
        kept.batches
            .iter()
            .filter(|s| s.origin == *origin)
            .map(|s| s.envelope.clone())
            .collect()
    }

    /// Batches kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().batches.len()
    }

    fn trim(&self, kept: &mut Kept, now_ms: u64) {
        while let Some(oldest) = kept.batches.front() {
            let expired = now_ms.saturating_sub(oldest.at_ms) > self.keep_ms;
            if !expired && kept.batches.len() <= self.max_batches && kept.bytes <= self.max_bytes {
                break;
            }
            if let Some(gone) = kept.batches.pop_front() {
                kept.bytes -= gone.envelope.len();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding the lock cannot leave the queue inconsistent
        // beyond a byte count that the next trims correct.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn batches_are_returned_for_their_origin_only_oldest_first() {
        let s = SentBatches::new(3000);
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        s.keep(&a, &Bytes::from_static(b"1"), 0);
        s.keep(&b, &Bytes::from_static(b"2"), 10);
        s.keep(&a, &Bytes::from_static(b"3"), 20);
        assert_eq!(
            s.for_origin(&a, 30),
            vec![Bytes::from_static(b"1"), Bytes::from_static(b"3")]
        );
        assert_eq!(s.for_origin(&b, 30), vec![Bytes::from_static(b"2")]);
        assert!(s.for_origin(&NodeId::new("c"), 30).is_empty());
    }

    #[test]
    fn batches_are_kept_for_their_age_only() {
        let s = SentBatches::new(3000);
        let a = NodeId::new("a");
        s.keep(&a, &bytes(1), 0);
        s.keep(&a, &bytes(2), 2000);
        assert_eq!(s.for_origin(&a, 3000).len(), 2, "3 s old: still kept");
        assert_eq!(s.for_origin(&a, 3001), vec![bytes(2)]);
        // Keeping trims too, so an idle origin's batches do not pile up.
        s.keep(&NodeId::new("b"), &bytes(1), 5001);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_count_is_bounded_oldest_first() {
        let s = SentBatches::bounded(60_000, 3, usize::MAX);
        let a = NodeId::new("a");
        for n in 1..=5 {
            s.keep(&a, &bytes(n), n as u64);
        }
        assert_eq!(s.for_origin(&a, 10), vec![bytes(3), bytes(4), bytes(5)]);
    }

    #[test]
    fn the_bytes_are_bounded_oldest_first() {
        let s = SentBatches::bounded(60_000, usize::MAX, 100);
        let a = NodeId::new("a");
        s.keep(&a, &bytes(60), 0);
        s.keep(&a, &bytes(30), 1);
        assert_eq!(s.len(), 2);
        s.keep(&a, &bytes(20), 2);
        assert_eq!(s.for_origin(&a, 3), vec![bytes(30), bytes(20)]);
        // One batch larger than the bound is not kept at all.
        s.keep(&a, &bytes(200), 4);
        assert!(s.for_origin(&a, 5).is_empty());
    }
}
