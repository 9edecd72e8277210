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
use tokio::sync::Notify;

use crate::ids::{NodeId, SessionId};
use crate::protocol::{Codec, DisconnectReason};

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

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Receipts of the queued frames that came from other nodes, in order;
    /// handed out with the frames (an idle session allocates none).
    receipts: Vec<Receipt>,
    bytes: usize,
    closing: Option<DisconnectReason>,
}

/// The shared half of a session: what others need to reach it.
pub struct SessionHandle {
    /// The session's id.
    pub session_id: SessionId,
    /// The session codec every frame to this client uses.
    pub codec: Codec,
    limits: OutboxLimits,
    queue: Mutex<Queue>,
    notify: Notify,
    close_notify: Notify,
}

impl SessionHandle {
    /// A handle with an empty queue.
    pub fn new(session_id: SessionId, codec: Codec, limits: OutboxLimits) -> SessionHandle {
        SessionHandle {
            session_id,
            codec,
            limits,
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            close_notify: Notify::new(),
        }
    }

    /// Queues a frame for the client. On overflow the session is marked
    /// SLOW_CONSUMER, its queue dropped, and the frame refused.
    pub fn deliver(&self, frame: Bytes) -> Result<(), DeliverError> {
        self.deliver_with(frame, None)
    }

    /// Queues a frame from another node; its receipt is handed out with it
    /// and reported once the frame is written. Dropped frames (overflow,
    /// close) lose their receipts: their origin answers them.
    pub(crate) fn deliver_with(
        &self,
        frame: Bytes,
        receipt: Option<Receipt>,
    ) -> Result<(), DeliverError> {
        {
            let mut q = self.lock();
            if q.closing.is_some() {
                return Err(DeliverError::Closed);
            }
            if q.frames.len() >= self.limits.frames || q.bytes + frame.len() > self.limits.bytes {
                q.closing = Some(DisconnectReason::SlowConsumer);
                q.frames = VecDeque::new();
                q.receipts = Vec::new();
                q.bytes = 0;
                drop(q);
                self.notify.notify_one();
                self.close_notify.notify_one();
                return Err(DeliverError::Full);
            }
            q.bytes += frame.len();
            q.frames.push_back(frame);
            if let Some(receipt) = receipt {
                q.receipts.push(receipt);
            }
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the session to end with `reason`; the first reason wins.
    pub fn close(&self, reason: DisconnectReason) {
        let mut q = self.lock();
        if q.closing.is_none() {
            q.closing = Some(reason);
        }
        drop(q);
        self.notify.notify_one();
        self.close_notify.notify_one();
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
        out.extend(q.frames.drain(..));
        receipts.append(&mut q.receipts);
        q.bytes = 0;
        if q.frames.capacity() > 64 {
            q.frames.shrink_to(8);
        }
        if q.receipts.capacity() > 64 {
            q.receipts = Vec::new();
        }
        q.closing
    }

    /// Resolves when something was queued or a close was requested since the
    /// last call. Cancel-safe: a wake-up missed by a dropped future is kept
    /// as a stored permit.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Resolves when a close was requested (not on new frames): lets a
    /// blocked write give up as soon as the session must end. Cancel-safe.
    pub async fn close_requested(&self) {
        if self.closing().is_some() {
            return;
        }
        self.close_notify.notified().await;
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
        h.deliver(Bytes::from_static(b"local")).unwrap();
        h.deliver_with(Bytes::from_static(b"remote"), Some(receipt(7)))
            .unwrap();
        let (mut out, mut receipts) = (Vec::new(), Vec::new());
        h.take(&mut out, &mut receipts);
        assert_eq!((out.len(), receipts), (2, vec![receipt(7)]));

        h.deliver_with(Bytes::from_static(b"a"), Some(receipt(8)))
            .unwrap();
        h.deliver_with(Bytes::from_static(b"b"), Some(receipt(9)))
            .unwrap();
        assert_eq!(
            h.deliver_with(Bytes::from_static(b"c"), Some(receipt(10))),
            Err(DeliverError::Full)
        );
        let (mut out, mut receipts) = (Vec::new(), Vec::new());
        h.take(&mut out, &mut receipts);
        assert!(
            receipts.is_empty(),
            "dropped frames are never confirmed: their origin answers them"
        );
    }
}
