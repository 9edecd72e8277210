//! A wake-up for the one task that waits on it: any thread may raise it,
//! the waiting task takes it. A raise while nobody waits is kept until the
//! next wait, and a wait dropped before it completes loses nothing (the
//! state lives here, not in the future), so waiting is cancel-safe in a
//! `select!` that is re-entered every frame.
//!
//! Cheaper than `tokio::sync::Notify` for a single waiter, and that is
//! where it pays: a session polls its queue's wake-up once per frame it
//! reads, and a bus subscriber its events once per envelope; `Notify`
//! takes a lock to register the waiter and again to drop it (or to poll
//! it again); this takes one atomic swap when nothing is due.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// A kept wake-up for one waiting task.
#[derive(Default)]
pub(crate) struct Wake {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Raises it: the waiting task (or the next one to wait) resumes.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once raised since the last time it resolved. One task at
    /// a time may wait.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| self.poll_take(cx)).await
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A raise between the check and the registration woke nobody.
        if self.raised.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_raise_while_nobody_waits_is_kept_once() {
        let wake = Wake::default();
        assert!(wake.wait().now_or_never().is_none(), "nothing raised");
        wake.raise();
        wake.raise();
        assert!(wake.wait().now_or_never().is_some(), "kept");
        assert!(wake.wait().now_or_never().is_none(), "taken once");
    }

    #[test]
    fn a_dropped_wait_loses_nothing() {
        let wake = Wake::default();
        let waiting = wake.wait();
        drop(waiting);
        wake.raise();
        assert!(wake.wait().now_or_never().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raise_from_another_thread_wakes_the_waiter() {
        let wake = Arc::new(Wake::default());
        for _ in 0..1000 {
            let raiser = Arc::clone(&wake);
            let raised = tokio::spawn(async move { raiser.raise() });
            tokio::time::timeout(Duration::from_secs(5), wake.wait())
                .await
                .expect("woken");
            raised.await.expect("the raiser ran");
        }
    }
}
