//! How many worker threads the node's runtime gets. `server.worker_threads`
//! set to a number is taken as is; `0` (the default) means one per CPU the
//! process may use: the scheduler affinity mask and a cgroup CPU quota
//! (v1 `cpu.cfs_quota_us` or v2 `cpu.max`, i.e. a Kubernetes CPU limit)
//! both count, rounded down, at least one. BENCHMARKS.md ("Worker threads")
//! has the measurements behind the rule.

use std::num::NonZeroUsize;

/// Where the worker count came from, for the start-up log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkersFrom {
    /// `server.worker_threads` named it.
    Setting,
    /// The CPUs this process may use (affinity, cgroup quota).
    AvailableCpus,
}

impl WorkersFrom {
    /// How the log line says it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkersFrom::Setting => "server.worker_threads",
            WorkersFrom::AvailableCpus => "the CPUs this process may use",
        }
    }
}

/// The worker count for `configured` (`server.worker_threads`), given what
/// the system reports as available (`None` when it cannot tell).
pub fn worker_threads(configured: usize, available: Option<NonZeroUsize>) -> (usize, WorkersFrom) {
    if configured > 0 {
        return (configured, WorkersFrom::Setting);
    }
    (
        available.map_or(1, NonZeroUsize::get),
        WorkersFrom::AvailableCpus,
    )
}

/// [`worker_threads`] with what this process may use right now.
pub fn worker_threads_here(configured: usize) -> (usize, WorkersFrom) {
    worker_threads(configured, std::thread::available_parallelism().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_count_wins_and_zero_means_the_available_cpus() {
        let four = NonZeroUsize::new(4);
        assert_eq!(worker_threads(3, four), (3, WorkersFrom::Setting));
        assert_eq!(worker_threads(0, four), (4, WorkersFrom::AvailableCpus));
        // A system that cannot tell still gets one worker.
        assert_eq!(worker_threads(0, None), (1, WorkersFrom::AvailableCpus));
    }
}
