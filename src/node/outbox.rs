//! A session's outbound queue: bounded in frames and bytes, never blocking
//! the producer. The session task is its only consumer and the only writer to
//! the socket; routers, the bus and the session's own replies produce.
//!
//! A plain `VecDeque` under a mutex instead of a channel keeps an idle
//! session at zero queue allocation (a channel preallocates a block of slots
//! per session), and lets "full" and "closed" be decided under one lock.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use uuid::Uuid;

use crate::ids::{ClientId, NodeId, SessionId};
use crate::protocol::{Codec, DisconnectReason};
use crate::wake::Wake;

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliverError {
    /// The queue overflowed: the session is now closing with SLOW_CONSUMER.
    #[error("outbound queue full")]
    Full,
    /// The session is closing or closed.
    #[error("session closed")]
    Closed,
}

/// Queue limits.
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    /// Most frames queued.
    pub frames: usize,
    /// Most bytes queued.
    pub bytes: usize,
}

/// What the session reports once a frame from another node is written to
/// its socket: the signal was taken, and its origin may stop waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Receipt {
    /// The node that routed the signal.
    pub(crate) origin: NodeId,
    /// Its sequence number there.
    pub(crate) seq: u64,
}

/// Who sent a queued signal, so it can be answered if it is never written
/// (a resumable session that ends for good).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    /// The sender.
    pub(crate) source: ClientId,
    /// The signal's message id.
    pub(crate) message_id: Uuid,
    /// Set for a signal from another node: its origin and sequence number.
    pub(crate) receipt: Option<Receipt>,
    /// The receipt was reported already (the signal was held).
    pub(crate) confirmed: bool,
}

struct Queued {
    frame: Bytes,
    tag: Option<Tag>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Queued>,
    bytes: usize,
    closing: Option<DisconnectReason>,
    /// The session lost its socket and is resumable: frames are held (an
    /// overflow refuses the frame, nothing is dropped).
    parked: bool,
    /// The secret of the latest resume token handed out (single-use).
    resume_secret: Option<[u8; 32]>,
    /// While a session moves in from another node: what arrives other than
    /// through the old node waits here, behind what the old node still
    /// forwards, so per-pair order holds across the move.
    behind_barrier: Option<VecDeque<Queued>>,
}

/// How a frame was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queuing {
    /// For the session's socket (confirmed once written).
    Queued,
    /// Held for a resumable session (taken: confirm now).
    Held,
}

/// The shared half of a session: what others need to reach it.
pub struct SessionHandle {
    /// The session's id.
    pub session_id: SessionId,
    /// The session codec every frame to this client uses.
    pub codec: Codec,
    limits: OutboxLimits,
    queue: Mutex<Queue>,
    notify: Wake,
    close_notify: Wake,
}

impl SessionHandle {
    /// A handle with an empty queue.
    pub fn new(session_id: SessionId, codec: Codec, limits: OutboxLimits) -> SessionHandle {
        SessionHandle {
            session_id,
            codec,
            limits,
            queue: Mutex::new(Queue::default()),
            notify: Wake::default(),
            close_notify: Wake::default(),
        }
    }

    /// Queues a frame for the client. On overflow the session is marked
    /// SLOW_CONSUMER, its queue dropped, and the frame refused.
    pub fn deliver(&self, frame: Bytes) -> Result<(), DeliverError> {
        self.deliver_with(frame, None).map(|_| ())
    }

    /// Queues a signal with its sender's tag (and, from another node, its
    /// receipt: reported once the frame is written). Dropped frames
    /// (overflow, close) lose their receipts: their origin answers them.
    pub(crate) fn deliver_with(
        &self,
        frame: Bytes,
        tag: Option<Tag>,
    ) -> Result<Queuing, DeliverError> {
        self.enqueue(frame, tag, false)
    }

    /// Queues a signal the old node of a moving session forwarded: ahead of
    /// the barrier, if one is up.
    pub(crate) fn deliver_forwarded(
        &self,
        frame: Bytes,
        tag: Option<Tag>,
    ) -> Result<Queuing, DeliverError> {
        self.enqueue(frame, tag, true)
    }

    /// Puts up the barrier (a session moving in from another node).
    pub(crate) fn raise_barrier(&self) {
        self.lock().behind_barrier = Some(VecDeque::new());
    }

    /// The old node forwarded all it had: what waited behind the barrier
    /// follows.
    pub(crate) fn lift_barrier(&self) {
        let mut q = self.lock();
        if let Some(mut waiting) = q.behind_barrier.take() {
            q.frames.append(&mut waiting);
        }
        drop(q);
        self.notify.raise();
    }

    fn enqueue(
        &self,
        frame: Bytes,
        tag: Option<Tag>,
        forwarded: bool,
    ) -> Result<Queuing, DeliverError> {
        let queuing = {
            let mut q = self.lock();
            if q.closing.is_some() {
                return Err(DeliverError::Closed);
            }
            let queued = q.frames.len() + q.behind_barrier.as_ref().map_or(0, VecDeque::len);
            if queued >= self.limits.frames || q.bytes + frame.len() > self.limits.bytes {
                if q.parked {
                    // Held signals stay; only this one is refused.
                    return Err(DeliverError::Full);
                }
                q.closing = Some(DisconnectReason::SlowConsumer);
                q.frames = VecDeque::new();
                q.behind_barrier = None;
                q.bytes = 0;
                drop(q);
                self.notify.raise();
                self.close_notify.raise();
                return Err(DeliverError::Full);
            }
            q.bytes += frame.len();
            let mut tag = tag;
            if q.parked {
                // Held counts as taken: the caller confirms it now.
                if let Some(tag) = tag.as_mut() {
                    tag.confirmed = true;
                }
            }
            match q.behind_barrier.as_mut() {
                Some(waiting) if !forwarded => waiting.push_back(Queued { frame, tag }),
                _ => q.frames.push_back(Queued { frame, tag }),
            }
            if q.parked {
                Queuing::Held
            } else {
                Queuing::Queued
            }
        };
        self.notify.raise();
        Ok(queuing)
    }

    /// The session lost its socket and is resumable: hold what arrives.
    /// Returns the receipts of the frames queued so far (held now: to be
    /// confirmed as taken).
    pub(crate) fn park(&self) -> Vec<Receipt> {
        let mut q = self.lock();
        q.parked = true;
        let mut held = Vec::new();
        for tag in q.frames.iter_mut().filter_map(|f| f.tag.as_mut()) {
            if !std::mem::replace(&mut tag.confirmed, true) {
                held.extend(tag.receipt.clone());
            }
        }
        held
    }

    /// A new socket took the session over: its frames go out again.
    pub(crate) fn unpark(&self) {
        self.lock().parked = false;
        self.notify.raise();
    }

    /// Records the secret of the resume token just handed out; any earlier
    /// token stops working.
    pub(crate) fn set_resume_secret(&self, secret: [u8; 32]) {
        self.lock().resume_secret = Some(secret);
    }

    /// Consumes the resume secret if `secret` is it (constant time).
    pub(crate) fn take_resume_secret(&self, secret: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let mut q = self.lock();
        let matches = q
            .resume_secret
            .is_some_and(|expected| bool::from(expected.ct_eq(secret)));
        if matches {
            q.resume_secret = None;
        }
        matches
    }

    /// Takes every held frame with its tag, closing the handle (the session
    /// moves to another node or ends for good).
    pub(crate) fn drain_held(&self, reason: DisconnectReason) -> Vec<(Bytes, Option<Tag>)> {
        let mut q = self.lock();
        q.closing.get_or_insert(reason);
        q.bytes = 0;
        let waiting = q.behind_barrier.take().unwrap_or_default();
        let held = q
            .frames
            .drain(..)
            .chain(waiting)
            .map(|f| (f.frame, f.tag))
            .collect();
        drop(q);
        self.notify.raise();
        self.close_notify.raise();
        held
    }

    /// Makes the session task look at its queue and at its node (a drain)
    /// without queueing anything.
    pub(crate) fn nudge(&self) {
        self.notify.raise();
    }

    /// Asks the session to end with `reason`; the first reason wins.
    pub fn close(&self, reason: DisconnectReason) {
        let mut q = self.lock();
        if q.closing.is_none() {
            q.closing = Some(reason);
        }
        drop(q);
        self.notify.raise();
        self.close_notify.raise();
    }

    /// Whether the session is ending.
    pub fn closing(&self) -> Option<DisconnectReason> {
        self.lock().closing
    }

    /// Moves every queued frame into `out` and their receipts into
    /// `receipts`; returns the close reason if set. Frames queued before a
    /// close (other than SLOW_CONSUMER, which drops them) are still handed
    /// out so they reach the client before DISCONNECT.
    pub(crate) fn take(
        &self,
        out: &mut Vec<Bytes>,
        receipts: &mut Vec<Receipt>,
    ) -> Option<DisconnectReason> {
        let mut q = self.lock();
        for queued in q.frames.drain(..) {
            out.push(queued.frame);
            if let Some(receipt) = queued.tag.filter(|t| !t.confirmed).and_then(|t| t.receipt) {
                receipts.push(receipt);
            }
        }
        q.bytes = 0;
        if q.frames.capacity() > 64 {
            q.frames.shrink_to(8);
        }
        q.closing
    }

    /// Resolves when something was queued or a close was requested since the
    /// last call. Cancel-safe: a wake-up missed by a dropped future is kept.
    /// Only the session task waits on it.
    pub async fn changed(&self) {
        self.notify.wait().await;
    }

    /// Resolves when a close was requested (not on new frames): lets a
    /// blocked write give up as soon as the session must end. Cancel-safe.
    pub async fn close_requested(&self) {
        if self.closing().is_some() {
            return;
        }
        self.close_notify.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // queue itself is always consistent, so keep using it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(frames: usize, bytes: usize) -> SessionHandle {
        SessionHandle::new(
            SessionId::generate(),
            Codec::Json,
            OutboxLimits { frames, bytes },
        )
    }

    #[test]
    fn overflow_by_count_marks_slow_consumer() {
        let h = handle(2, 1000);
        h.deliver(Bytes::from_static(b"a")).unwrap();
        h.deliver(Bytes::from_static(b"b")).unwrap();
        assert_eq!(h.deliver(Bytes::from_static(b"c")), Err(DeliverError::Full));
        assert_eq!(h.closing(), Some(DisconnectReason::SlowConsumer));
        assert_eq!(
            h.deliver(Bytes::from_static(b"d")),
            Err(DeliverError::Closed)
        );
        let (mut out, mut receipts) = (Vec::new(), Vec::new());
        assert_eq!(
            h.take(&mut out, &mut receipts),
            Some(DisconnectReason::SlowConsumer)
        );
        assert!(out.is_empty(), "a slow consumer's queue is dropped");
    }

    #[test]
    fn overflow_by_bytes_marks_slow_consumer() {
        let h = handle(100, 10);
        h.deliver(Bytes::from_static(b"12345")).unwrap();
        assert_eq!(
            h.deliver(Bytes::from_static(b"123456")),
            Err(DeliverError::Full)
        );
    }

    #[test]
    fn frames_queued_before_a_close_are_handed_out_in_order() {
        let h = handle(10, 1000);
        h.deliver(Bytes::from_static(b"1")).unwrap();
        h.deliver(Bytes::from_static(b"2")).unwrap();
        h.close(DisconnectReason::Replaced);
        h.close(DisconnectReason::IdleTimeout);
        let (mut out, mut receipts) = (Vec::new(), Vec::new());
        assert_eq!(
            h.take(&mut out, &mut receipts),
            Some(DisconnectReason::Replaced)
        );
        assert_eq!(
            out,
            vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        );
    }

    #[test]
    fn receipts_travel_with_their_frames_and_vanish_with_a_dropped_queue() {
        let h = handle(2, 1000);
        let receipt = |seq| Receipt {
            origin: NodeId::new("origin"),
            seq,
        };
        let tag = |seq| Tag {
            source: ClientId::new("alice").unwrap(),
            message_id: Uuid::nil(),
            receipt: Some(receipt(seq)),
            confirmed: false,
        };
        h.deliver(Bytes::from_static(b"local")).unwrap();
        h.deliver_with(Bytes::from_static(b"remote"), Some(tag(7)))
            .unwrap();
        let (mut out, mut receipts) = (Vec::new(), Vec::new());
        h.take(&mut out, &mut receipts);
        assert_eq!((out.len(), receipts), (2, vec![receipt(7)]));

        h.deliver_with(Bytes::from_static(b"a"), Some(tag(8)))
            .unwrap();
        h.deliver_with(Bytes::from_static(b"b"), Some(tag(9)))
            .unwrap();
        assert_eq!(
            h.deliver_with(Bytes::from_static(b"c"), Some(tag(10))),
            Err(DeliverError::Full)
        );
        let (mut out, mut receipts) = (Vec::new(), Vec::new());
        h.take(&mut out, &mut receipts);
        assert!(
            receipts.is_empty(),
            "dropped frames are never confirmed: their origin answers them"
        );
    }

    #[test]
    fn a_parked_session_holds_and_refuses_only_the_overflowing_frame() {
        let h = handle(2, 1000);
        let tag = |seq| Tag {
            source: ClientId::new("alice").unwrap(),
            message_id: Uuid::from_u128(seq as u128),
            receipt: Some(Receipt {
                origin: NodeId::new("origin"),
                seq,
            }),
            confirmed: false,
        };
        h.deliver_with(Bytes::from_static(b"1"), Some(tag(1)))
            .unwrap();
        let held_now = h.park();
        assert_eq!(held_now.len(), 1, "queued frames count as held");
        assert_eq!(
            h.deliver_with(Bytes::from_static(b"2"), Some(tag(2))),
            Ok(Queuing::Held)
        );
        assert_eq!(
            h.deliver_with(Bytes::from_static(b"3"), Some(tag(3))),
            Err(DeliverError::Full)
        );
        assert_eq!(h.closing(), None, "a parked session is not a slow consumer");
        let held = h.drain_held(DisconnectReason::ClientLeft);
        let ids: Vec<_> = held
            .iter()
            .map(|(_, t)| t.as_ref().unwrap().message_id)
            .collect();
        assert_eq!(ids, vec![Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert!(
            held.iter()
                .all(|(_, t)| t.as_ref().unwrap().receipt.is_some()),
            "held signals keep their origin, to be answered there"
        );
    }

    #[test]
    fn behind_a_barrier_only_the_old_nodes_forwards_go_first() {
        let h = handle(10, 1000);
        h.raise_barrier();
        h.deliver(Bytes::from_static(b"local")).unwrap();
        h.deliver_forwarded(Bytes::from_static(b"forwarded"), None)
            .unwrap();
        let (mut out, mut receipts) = (Vec::new(), Vec::new());
        h.take(&mut out, &mut receipts);
        assert_eq!(out, vec![Bytes::from_static(b"forwarded")]);
        h.lift_barrier();
        out.clear();
        h.take(&mut out, &mut receipts);
        assert_eq!(out, vec![Bytes::from_static(b"local")]);
    }
}
