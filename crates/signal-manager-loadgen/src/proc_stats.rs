//! CPU time and resident memory of other processes, read from `/proc`.
//! Linux only; a missing or unreadable process reads as `None`.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, which the
/// kernel fixes at 100 for this interface on every mainstream architecture).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// CPU seconds this process has used so far.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state (field 3) … utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open file descriptors of the process.
pub fn open_files(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// CPU readings of the watched processes at one instant.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    nodes: Vec<Option<f64>>,
    redis: Option<f64>,
    own: Option<f64>,
}

/// CPU used between two snapshots.
#[derive(Clone, Debug, Default)]
pub struct CpuUsage {
    /// Wall-clock seconds between the snapshots.
    pub wall_seconds: f64,
    /// CPU seconds of each node, in `--node-pid` order.
    pub nodes: Vec<Option<f64>>,
    /// CPU seconds of the redis-server processes together.
    pub redis: Option<f64>,
    /// CPU seconds of the load generator itself.
    pub loadgen: Option<f64>,
}

impl CpuSnapshot {
    /// Reads the CPU time of `nodes`, the `redis` processes (summed; none
    /// when one is unreadable) and this process now.
    pub fn take(nodes: &[u32], redis: &[u32]) -> CpuSnapshot {
        let redis = (!redis.is_empty())
            .then(|| redis.iter().map(|&p| cpu_seconds(p)).sum::<Option<f64>>())
            .flatten();
        CpuSnapshot {
            at: Instant::now(),
            nodes: nodes.iter().map(|&p| cpu_seconds(p)).collect(),
            redis,
            own: own_cpu_seconds(),
        }
    }

    /// What was used from `self` to `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUsage {
        let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        CpuUsage {
            wall_seconds: later.at.duration_since(self.at).as_secs_f64(),
            nodes: self
                .nodes
                .iter()
                .zip(&later.nodes)
                .map(|(a, b)| diff(*a, *b))
                .collect(),
            redis: diff(self.redis, later.redis),
            loadgen: diff(self.own, later.own),
        }
    }
}

impl CpuUsage {
    /// CPU seconds of the server side: every node plus Redis.
    pub fn server_seconds(&self) -> f64 {
        self.nodes.iter().flatten().sum::<f64>() + self.redis.unwrap_or(0.0)
    }

    /// Server CPU microseconds per unit of work (`None` without work or pids).
    pub fn micros_per(&self, units: u64) -> Option<f64> {
        let watched = self.nodes.iter().any(Option::is_some) || self.redis.is_some();
        (units > 0 && watched).then(|| self.server_seconds() * 1e6 / units as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "1234 (we (ird) name) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(line), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn several_redis_processes_are_summed_and_one_unreadable_spoils_the_sum() {
        let me = std::process::id();
        assert!(CpuSnapshot::take(&[], &[me, me]).redis.is_some());
        assert!(CpuSnapshot::take(&[], &[]).redis.is_none());
        // No process has id 0 in /proc.
        assert!(CpuSnapshot::take(&[], &[me, 0]).redis.is_none());
    }

    #[test]
    fn this_process_is_readable() {
        assert!(own_cpu_seconds().is_some());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(open_files(std::process::id()).unwrap() > 0);
    }
}
