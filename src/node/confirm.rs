//! Delivery confirmation between nodes, as pure bookkeeping (no clock, no
//! I/O: callers pass the time in ms of the node's monotonic clock).
//!
//! Origin side ([`Unconfirmed`]): every cross-node signal gets a sequence
//! number and waits here until the receiving node confirms it (it took the
//! signal), bounces it (`Undeliverable`), or the publish itself settles it.
//! An entry nobody settled within the delivery timeout is answered
//! PEER_UNREACHABLE, but only once the node holds evidence that Redis has
//! passed on everything published before: the echo of one of its own
//! marks, published at least `evidence` after the signal and come back
//! quickly. A confirmation stuck in a stalled Redis therefore arrives before
//! the node gives up; the receiving node refuses a signal older than its
//! accept window, so nothing the origin gave up on is delivered. After
//! `hard` without such evidence (Redis gone for good) the entry is answered
//! UNAVAILABLE.
//!
//! Receiving side ([`Confirmations`]): the sequence numbers taken, batched
//! per origin node, so one confirmation envelope covers many signals.

use rustc_hash::FxHashMap;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::{RouteError, SessionHandle};
use crate::ids::NodeId;

/// A mark's echo counts as evidence only when it came back this fast: a
/// mark that sat in a stalled Redis proves nothing about what was queued
/// beside it.
const FRESH_MARK_MS: u64 = 250;
/// After the subscription was re-established, marks published within this
/// grace prove nothing: other nodes may still be re-sending confirmations
/// that a dead connection lost. It covers the round trip of asking them
/// (`ConfirmAgain` to every node with signals waiting here, their kept
/// batches published back: a few ms while Redis answers), and is extended
/// while such a request reaches no subscriber (`delivery.rs`).
pub(crate) const RESUBSCRIBE_GRACE_MS: u64 = 1000;

/// How much earlier than the delivery timeout an entry is due, so that the
/// sweep that finds it (every 100 ms) answers within the timeout.
const SWEEP_SLACK_MS: u64 = 200;

/// A signal waiting for its confirmation.
pub(crate) struct Pending {
    /// The sending session, answered if the signal fails.
    pub(crate) sender: Arc<SessionHandle>,
    /// The sender's message id.
    pub(crate) message_id: Uuid,
    /// The node it was published to (a shared id: no allocation), asked
    /// for its confirmations again after a re-subscription.
    pub(crate) to: NodeId,
    published_ms: u64,
}

/// Timing of the origin side, in ms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// `cluster.delivery_timeout`.
    pub(crate) timeout: u64,
    /// How long after a signal a mark must be published to prove its
    /// confirmation would have arrived.
    pub(crate) evidence: u64,
    /// Give up without evidence (UNAVAILABLE) after this long.
    pub(crate) hard: u64,
}

impl Timing {
    /// The timing for a delivery timeout: answered a sweep early so the
    /// answer arrives within the timeout, evidence from 80 % of it (the
    /// receiver accepts signals younger than 60 %, leaving 20 % for its
    /// confirmation to reach Redis and for clock skew), and a hard limit of
    /// five times it.
    pub(crate) fn for_timeout(timeout_ms: u64) -> Timing {
        let timeout = timeout_ms.max(1);
        Timing {
            timeout: timeout - (timeout / 10).min(SWEEP_SLACK_MS),
            evidence: timeout * 4 / 5,
            hard: timeout.saturating_mul(5),
        }
    }

    /// How long a receiver keeps the confirmations it published, for an
    /// origin that asks again: as long as an origin may still wait for
    /// them. That is the hard limit, not the timeout: an origin whose
    /// subscription is down sees no mark echo, so its signals wait past
    /// the timeout until it is subscribed again (after a master killed
    /// under Sentinel, 2 to 4 s later) and asks, plus the grace in which it
    /// asks.
    pub(crate) fn keep_sent(timeout_ms: u64) -> u64 {
        Timing::for_timeout(timeout_ms).hard + RESUBSCRIBE_GRACE_MS
    }

    /// The receiver's accept window: a signal older than this (by the
    /// origin's wall clock) is not delivered; the origin answers it.
    pub(crate) fn accept_window(timeout_ms: u64) -> u64 {
        timeout_ms.max(1) * 3 / 5
    }
}

/// Places consecutive sequence numbers in consecutive buckets: the set
/// takes them in order and confirmations settle them nearly in order, so
/// its inserts and removes walk the table like a ring instead of touching
/// a cold cache line each (a scattering hash made the insert the sending
/// node's costliest function at saturation). The table indexes buckets by
/// the hash's low bits and filters a group of 16 by its top 7, which here
/// are the number's low 7: neighbours in a group never share them.
#[derive(Default)]
pub(crate) struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 << 57)
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; anything else still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

type BySeq = HashMap<u64, Pending, BuildHasherDefault<SeqHasher>>;

/// The origin's unconfirmed signals, bounded.
pub(crate) struct Unconfirmed {
    /// Keyed by sequence numbers this node hands out in order (no client
    /// chooses them), so a placement hash without flooding resistance is
    /// safe.
    entries: Mutex<BySeq>,
    next_seq: AtomicU64,
    capacity: usize,
    timing: Timing,
    /// Publish time of the latest fresh mark echoed (0: none yet).
    evidence_ms: AtomicU64,
    /// Marks published before this prove nothing.
    blind_until_ms: AtomicU64,
}

/// The unconfirmed set is full: the signal is refused before publishing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

impl Unconfirmed {
    /// An empty set holding at most `capacity` signals.
    pub(crate) fn new(capacity: usize, timing: Timing) -> Unconfirmed {
        Unconfirmed {
            entries: Mutex::new(BySeq::default()),
            next_seq: AtomicU64::new(1),
            capacity,
            timing,
            evidence_ms: AtomicU64::new(0),
            blind_until_ms: AtomicU64::new(0),
        }
    }

    /// Starts waiting for a signal published now; its sequence number, and
    /// whether the set was empty (the sweeper then needs waking).
    pub(crate) fn track(
        &self,
        sender: Arc<SessionHandle>,
        message_id: Uuid,
        to: NodeId,
        now_ms: u64,
    ) -> Result<(u64, bool), Full> {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            return Err(Full);
        }
        let first = entries.is_empty();
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        entries.insert(
            seq,
            Pending {
                sender,
                message_id,
                to,
                published_ms: now_ms,
            },
        );
        Ok((seq, first))
    }

    /// Takes a signal out (confirmed, bounced or answered); `None` when it
    /// was settled already. Whoever gets `Some` answers (or not) alone.
    pub(crate) fn settle(&self, seq: u64) -> Option<Pending> {
        self.lock().remove(&seq)
    }

    /// Settles every signal a confirmation lists, under one lock; how many
    /// were still waiting (the others were settled already).
    pub(crate) fn confirm(&self, seqs: &[u64]) -> usize {
        let mut entries = self.lock();
        seqs.iter()
            .filter(|seq| entries.remove(seq).is_some())
            .count()
    }

    /// Puts a settled signal back (its publish is retried elsewhere).
    pub(crate) fn restore(&self, seq: u64, pending: Pending) {
        self.lock().insert(seq, pending);
    }

    /// A mark published at `published_ms` came back at `now_ms`. A slow
    /// echo means Redis stalled: other nodes' confirmations may still sit in
    /// their queues, so for a grace period no mark counts.
    pub(crate) fn mark_echoed(&self, published_ms: u64, now_ms: u64) {
        let fresh = now_ms.saturating_sub(published_ms) <= FRESH_MARK_MS;
        if !fresh {
            self.blind_until_ms
                .fetch_max(now_ms + RESUBSCRIBE_GRACE_MS, Ordering::AcqRel);
        } else if published_ms >= self.blind_until_ms.load(Ordering::Acquire) {
            self.evidence_ms.fetch_max(published_ms, Ordering::AcqRel);
        }
    }

    /// The subscription was re-established at `now_ms`, or a request for
    /// the confirmations it may have lost has not reached its node yet: no
    /// mark published within the grace from now counts.
    pub(crate) fn resubscribed(&self, now_ms: u64) {
        self.blind_until_ms
            .fetch_max(now_ms + RESUBSCRIBE_GRACE_MS, Ordering::AcqRel);
    }

    /// The nodes that signals waiting here were published to, each once.
    pub(crate) fn targets(&self) -> Vec<NodeId> {
        let targets: std::collections::HashSet<NodeId> =
            self.lock().values().map(|p| p.to.clone()).collect();
        targets.into_iter().collect()
    }

    /// Takes out every signal whose time is up at `now_ms`, with its answer.
    pub(crate) fn expire(&self, now_ms: u64) -> Vec<(Pending, RouteError)> {
        let evidence = self.evidence_ms.load(Ordering::Acquire);
        let timing = self.timing;
        let mut entries = self.lock();
        let due: Vec<(u64, RouteError)> = entries
            .iter()
            .filter_map(|(seq, p)| {
                let age = now_ms.saturating_sub(p.published_ms);
                if age >= timing.timeout && evidence >= p.published_ms + timing.evidence {
                    Some((*seq, RouteError::Unreachable))
                } else if age >= timing.hard {
                    Some((*seq, RouteError::Unavailable))
                } else {
                    None
                }
            })
            .collect();
        due.into_iter()
            .filter_map(|(seq, error)| entries.remove(&seq).map(|p| (p, error)))
            .collect()
    }

    /// Signals waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BySeq> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sequence numbers this node took, by origin, waiting to be confirmed.
#[derive(Default)]
pub(crate) struct Confirmations {
    batches: Mutex<Batches>,
}

/// The batches, and how many sequence numbers they hold in all.
#[derive(Default)]
struct Batches {
    by_origin: FxHashMap<NodeId, Vec<u64>>,
    len: usize,
}

impl Confirmations {
    /// Records that these signals (origin, sequence number) were taken,
    /// under one lock; true when they are the first waiting (the flusher
    /// should be woken).
    pub(crate) fn add<'a>(&self, taken: impl IntoIterator<Item = (&'a NodeId, u64)>) -> bool {
        let mut batches = self.lock();
        let was_empty = batches.len == 0;
        for (origin, seq) in taken {
            batches.len += 1;
            match batches.by_origin.get_mut(origin) {
                Some(batch) => batch.push(seq),
                None => {
                    batches.by_origin.insert(origin.clone(), vec![seq]);
                }
            }
        }
        was_empty && batches.len > 0
    }

    /// Sequence numbers waiting, over every origin.
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Every waiting batch.
    pub(crate) fn take(&self) -> Vec<(NodeId, Vec<u64>)> {
        let mut batches = self.lock();
        batches.len = 0;
        batches.by_origin.drain().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Batches> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SessionId;
    use crate::node::OutboxLimits;
    use crate::protocol::Codec;

    fn sender() -> Arc<SessionHandle> {
        Arc::new(SessionHandle::new(
            SessionId::generate(),
            Codec::Json,
            OutboxLimits {
                frames: 8,
                bytes: 1 << 20,
            },
        ))
    }

    fn node(id: &str) -> NodeId {
        NodeId::new(id)
    }

    fn set(capacity: usize) -> Unconfirmed {
        Unconfirmed::new(capacity, Timing::for_timeout(2000))
    }

    #[test]
    fn consecutive_sequence_numbers_take_consecutive_buckets_with_distinct_tags() {
        use std::hash::BuildHasher;
        let hash = |n: u64| BuildHasherDefault::<SeqHasher>::default().hash_one(n);
        for n in [1u64, 127, 128, 1 << 40] {
            let (a, b) = (hash(n), hash(n + 1));
            // Low bits: the bucket (the mask takes far fewer than 57 bits).
            assert_eq!(b & 0xFFFF, ((a & 0xFFFF) + 1) & 0xFFFF);
            // Top 7 bits: the tag a group of 16 is filtered by.
            assert_ne!(a >> 57, b >> 57);
        }
        let tags: std::collections::HashSet<u64> = (0..128).map(|n| hash(n) >> 57).collect();
        assert_eq!(tags.len(), 128, "128 neighbours, 128 tags");
    }

    #[test]
    fn a_confirmed_signal_is_never_answered() {
        let u = set(10);
        let (seq, _) = u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        assert!(u.settle(seq).is_some());
        u.mark_echoed(1700, 1710);
        assert!(u.expire(10_000).is_empty());
        assert!(u.settle(seq).is_none(), "settled only once");
    }

    #[test]
    fn unconfirmed_signals_time_out_only_with_fresh_evidence() {
        let u = set(10);
        let id = Uuid::new_v4();
        u.track(sender(), id, node("b"), 100).unwrap();
        // Past the timeout but no mark has come back: wait.
        assert!(u.expire(2200).is_empty());
        // A mark published too soon after the signal proves nothing.
        u.mark_echoed(1500, 1520);
        assert!(u.expire(2200).is_empty());
        // A fresh mark published 1.6 s after the signal does.
        u.mark_echoed(1750, 1760);
        let expired = u.expire(2200);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0.message_id, id);
        assert_eq!(expired[0].1, RouteError::Unreachable);
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn after_a_stall_no_mark_counts_for_a_grace_period() {
        let u = set(10);
        u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        // A mark that sat in a stalled Redis comes back late.
        u.mark_echoed(1800, 4000);
        // Fresh marks right after the stall prove nothing yet: other nodes'
        // confirmations may still be on their way.
        u.mark_echoed(4100, 4110);
        assert!(u.expire(4200).is_empty());
        u.mark_echoed(5100, 5110);
        assert_eq!(u.expire(5200).len(), 1);
    }

    #[test]
    fn not_before_the_timeout() {
        let u = set(10);
        u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        u.mark_echoed(1650, 1651);
        assert!(u.expire(1799).is_empty());
        assert_eq!(u.expire(1800).len(), 1, "a sweep early, within the 2 s");
    }

    #[test]
    fn a_late_confirmation_after_the_answer_finds_nothing() {
        let u = set(10);
        let (seq, _) = u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        u.mark_echoed(1700, 1701);
        assert_eq!(u.expire(2000).len(), 1);
        assert!(u.settle(seq).is_none(), "the late confirmation is ignored");
    }

    #[test]
    fn without_any_evidence_the_hard_limit_answers_unavailable() {
        let u = set(10);
        u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        assert!(u.expire(9_999).is_empty());
        let expired = u.expire(10_000);
        assert_eq!(expired[0].1, RouteError::Unavailable);
    }

    #[test]
    fn marks_right_after_a_resubscription_prove_nothing() {
        let u = set(10);
        u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        u.resubscribed(1100);
        u.mark_echoed(1700, 1710);
        assert!(u.expire(2500).is_empty());
        u.mark_echoed(2200, 2210);
        assert_eq!(u.expire(2500).len(), 1);
    }

    #[test]
    fn the_targets_of_waiting_signals_are_named_once_each() {
        let u = set(10);
        let (seq, _) = u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        u.track(sender(), Uuid::nil(), node("c"), 0).unwrap();
        let mut targets = u.targets();
        targets.sort();
        assert_eq!(targets, vec![node("b"), node("c")]);
        // A settled signal names its node no more; a restored one does again.
        let pending = u.settle(seq).unwrap();
        assert_eq!(pending.to, node("b"));
        u.restore(
            seq,
            Pending {
                to: node("d"),
                ..pending
            },
        );
        let mut targets = u.targets();
        targets.sort();
        assert_eq!(targets, vec![node("b"), node("c"), node("d")]);
    }

    #[test]
    fn a_duplicate_confirmation_is_harmless() {
        let u = set(10);
        let (seq, _) = u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        let (other, _) = u.track(sender(), Uuid::nil(), node("b"), 0).unwrap();
        assert!(u.settle(seq).is_some());
        // The same batch published again (asked for with ConfirmAgain).
        assert!(u.settle(seq).is_none());
        assert_eq!(u.len(), 1, "the other signal still waits");
        assert!(u.settle(other).is_some());
    }

    #[test]
    fn the_set_is_bounded() {
        let u = set(2);
        assert!(
            u.track(sender(), Uuid::nil(), node("b"), 0).unwrap().1,
            "the first wakes the sweeper"
        );
        assert!(!u.track(sender(), Uuid::nil(), node("b"), 0).unwrap().1);
        assert_eq!(u.track(sender(), Uuid::nil(), node("b"), 0), Err(Full));
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn a_confirmation_settles_each_listed_signal_once() {
        let u = set(10);
        let seqs: Vec<u64> = (0..3)
            .map(|_| u.track(sender(), Uuid::nil(), node("b"), 0).unwrap().0)
            .collect();
        assert!(u.settle(seqs[1]).is_some());
        assert_eq!(
            u.confirm(&seqs),
            2,
            "the one settled already is not counted"
        );
        assert_eq!(u.confirm(&seqs), 0);
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn confirmations_batch_per_origin() {
        let c = Confirmations::default();
        let a = NodeId::new("a");
        let b = NodeId::new("b");
        assert!(!c.add([]), "nothing taken wakes nobody");
        assert!(c.add([(&a, 1)]));
        assert!(!c.add([(&a, 2), (&b, 3)]));
        assert_eq!(c.len(), 3);
        let mut batches = c.take();
        batches.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(batches, vec![(a.clone(), vec![1, 2]), (b, vec![3])]);
        assert!(c.take().is_empty());
        assert_eq!(c.len(), 0);
        assert!(
            c.add([(&a, 4)]),
            "a new batch after a take wakes the flusher"
        );
    }
}
