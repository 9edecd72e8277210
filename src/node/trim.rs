//! Gives freed memory back to the system once a burst of connections is
//! over. The allocator keeps what the process freed for reuse, so after
//! 19,000 sessions end at once (a reconnect storm, a resume window
//! expiring, a load balancer moving clients away) about 115 MiB of RSS stays
//! with a node that no longer uses it. When the open connections and parked
//! sessions fall to half their peak, and at least `MIN_DROP` below it, the
//! node asks the allocator to return its free pages (glibc's
//! `malloc_trim`), on a blocking thread, never on a runtime worker.

use std::sync::Arc;
use std::time::Duration;

use super::Node;

/// How often the node looks at its connection count.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Fewer ended sessions than this are not worth a trim.
const MIN_DROP: i64 = 1_000;

/// Decides when a trim is due, from the live count at each check.
#[derive(Debug, Default)]
pub(super) struct TrimTrigger {
    peak: i64,
}

impl TrimTrigger {
    /// True when `live` is at most half the peak seen since the last trim
    /// and at least `MIN_DROP` below it; the peak then starts again from
    /// `live`.
    pub(super) fn observe(&mut self, live: i64) -> bool {
        if live >= self.peak {
            self.peak = live;
            return false;
        }
        if self.peak - live >= MIN_DROP && live <= self.peak / 2 {
            self.peak = live;
            return true;
        }
        false
    }
}

/// Returns the allocator's free pages to the system (glibc only; other
/// allocators return memory on their own or offer no such call).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // lists; it takes no pointer and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Node {
    pub(super) async fn run_trim(self: Arc<Self>) {
        let mut trigger = TrimTrigger::default();
        let mut interval = tokio::time::interval(CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let live = self.metrics.connections.get() + self.metrics.resumable.get();
            if trigger.observe(live) {
                tracing::debug!(live, "returning freed memory to the system");
                let _ = tokio::task::spawn_blocking(release_free_memory).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_large_drop_to_half_the_peak_once() {
        let mut t = TrimTrigger::default();
        assert!(!t.observe(19_000), "growing is never a trim");
        assert!(!t.observe(12_000), "above half the peak");
        assert!(t.observe(9_000), "at half the peak and 10,000 below it");
        assert!(!t.observe(9_000), "the peak restarted from 9,000");
        assert!(!t.observe(5_000), "above half of the new peak (4,500)");
        assert!(
            t.observe(4_000),
            "4,000 is at most half of 9,000 and 5,000 below"
        );
    }

    #[test]
    fn small_drops_are_not_worth_a_trim() {
        let mut t = TrimTrigger::default();
        assert!(!t.observe(1_500));
        assert!(!t.observe(600), "900 below the peak is under MIN_DROP");
        assert!(t.observe(0), "1,500 below and under half: a trim");
    }
}
