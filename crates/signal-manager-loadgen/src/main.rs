//! `signal-manager-loadgen`: drives running Signal Manager nodes through the
//! project's Rust client and prints one JSON result line per
//! run on stdout (a human summary and a progress line go to stderr).
//!
//! It owns the scenarios and their measurements; it does not start nodes or
//! Redis (`bench/run.sh` does) and it only ever talks to loopback addresses.
//!
//! Layout: `relay.rs` (sender → receiver pairs across nodes, fixed rate or
//! saturation), `pair.rs` (one pair's sender and receiver tasks, one write
//! per signal or one per batch: `--send-mode`), `idle.rs`
//! (held connections, RSS per connection), `connect.rs` (connection rate
//! and CONNECT → CONNECT_ACK latency),
//! `storm.rs` (everyone drops and reconnects at once), `resumable.rs`
//! (everyone drops at once and stays resumable: node RSS while parked and
//! after the window), `fleet.rs` (opening
//! authenticated connections: ids, tokens, source addresses), `proc_stats.rs`
//! (CPU and RSS of other processes from `/proc`), `cluster_stats.rs` (Redis
//! `INFO` and node `/metrics` deltas), `report.rs` (JSON line, summary,
//! progress).

mod cluster_stats;
mod connect;
mod fleet;
mod idle;
mod pair;
mod proc_stats;
mod relay;
mod report;
mod resumable;
mod storm;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use signal_manager_protocol::Codec;

/// Drive running nodes with a load scenario and print one JSON result line
/// (see BENCHMARKS.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "signal-manager-loadgen", version, about)]
struct Args {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios; each prints one JSON line on stdout.
#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Sender → receiver pairs across nodes: fixed rate (latency) or
    /// saturation (throughput); fails on any loss, duplicate or reordering.
    Relay(relay::RelayArgs),
    /// Open and hold authenticated connections; report each node's RSS
    /// per connection.
    Idle(idle::IdleArgs),
    /// Open connections with bounded concurrency; report connections/s and
    /// CONNECT → CONNECT_ACK latency.
    Connect(connect::ConnectArgs),
    /// Connect clients, drop them all at once, and time their reconnection.
    Storm(storm::StormArgs),
    /// Connect sessions, drop them all at once and let them stay
    /// resumable: node RSS while parked and after the resume window; held
    /// signals answered PEER_NOT_FOUND when it passes.
    Resumable(resumable::ResumableArgs),
}

/// Flags every scenario shares.
#[derive(ClapArgs, Debug, Clone)]
pub struct Common {
    /// A node's WebSocket URL, e.g. ws://127.0.0.1:8080 (repeatable; clients
    /// are spread over them round robin). Loopback addresses only.
    #[arg(long = "url", required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// HS256 secret the nodes verify with (default: the
    /// SIGNAL_MANAGER_AUTH_TOKEN_SECRET environment variable). Without one
    /// only the two development tokens exist.
    #[arg(long)]
    pub secret: Option<String>,
    /// A node's process id, for CPU and RSS (repeatable, in --url order).
    #[arg(long = "node-pid", value_name = "PID")]
    pub node_pids: Vec<u32>,
    /// A redis-server's process id, for its CPU (repeatable: every
    /// process of a Redis Cluster; their CPU is summed).
    #[arg(long = "redis-pid", value_name = "PID")]
    pub redis_pids: Vec<u32>,
    /// Redis URL, for INFO commandstats / PUBSUB deltas over the window.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// A node's admin base URL, e.g. http://127.0.0.1:9090, for /metrics
    /// deltas (repeatable).
    #[arg(long = "admin-url", value_name = "URL")]
    pub admin_urls: Vec<String>,
    /// The nodes' cluster.key_prefix (for PUBSUB NUMSUB on node channels).
    #[arg(long, default_value = "sm")]
    pub key_prefix: String,
    /// Session codec of every client.
    #[arg(long, value_enum, default_value_t = CodecArg::Json)]
    pub codec: CodecArg,
    /// Client connections come from 127.0.0.<source-base> onwards.
    #[arg(long, default_value_t = 2)]
    pub source_base: u8,
    /// How many consecutive source addresses to spread connections over.
    #[arg(long, default_value_t = 4)]
    pub source_count: u8,
    /// Prefix of every client id (default: `lg<pid>-`), so runs never collide.
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// A free-form label copied into the JSON line.
    #[arg(long)]
    pub label: Option<String>,
    /// Hard bound on the whole run, in seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
}

/// The `--codec` values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecArg {
    /// JSON (payload type 0x02).
    Json,
    /// CBOR (payload type 0x05).
    Cbor,
    /// Protobuf (payload type 0x04).
    Protobuf,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Json => Codec::Json,
            CodecArg::Cbor => Codec::Cbor,
            CodecArg::Protobuf => Codec::Protobuf,
        }
    }
}

impl Common {
    /// The secret from the flag or the environment.
    fn secret(&self) -> Option<String> {
        self.secret
            .clone()
            .or_else(|| std::env::var("SIGNAL_MANAGER_AUTH_TOKEN_SECRET").ok())
            .filter(|s| !s.is_empty())
    }

    /// The source address of the `i`-th connection.
    fn source(&self, i: usize) -> IpAddr {
        let count = usize::from(self.source_count.max(1));
        let last = usize::from(self.source_base) + i % count;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last.min(254) as u8))
    }

    fn id_prefix(&self) -> String {
        self.id_prefix
            .clone()
            .unwrap_or_else(|| format!("lg{}-", std::process::id()))
    }

    /// Refuses anything but loopback targets.
    fn check(&self) -> Result<(), String> {
        for url in self.urls.iter().chain(&self.admin_urls) {
            if !is_loopback_url(url) {
                return Err(format!("{url}: only loopback targets are allowed"));
            }
        }
        if let Some(url) = &self.redis_url {
            if !is_loopback_url(url) {
                return Err(format!("{url}: only loopback targets are allowed"));
            }
        }
        Ok(())
    }
}

/// Whether a URL's host is a loopback address (or `localhost`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Runs the chosen scenario on its own runtime; exit 0 when it passed, 1
/// when it failed (loss, duplicates, reordering, errors), 2 on bad flags.
fn main() -> ExitCode {
    let args = Args::parse();
    let common = match &args.scenario {
        Scenario::Relay(a) => &a.common,
        Scenario::Idle(a) => &a.common,
        Scenario::Connect(a) => &a.common,
        Scenario::Storm(a) => &a.common,
        Scenario::Resumable(a) => &a.common,
    };
    if let Err(reason) = common.check() {
        eprintln!("loadgen: {reason}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(common.max_seconds);
    let scenario = args.scenario.clone();
    let outcome = runtime.block_on(async move {
        let run = async {
            match scenario {
                Scenario::Relay(a) => relay::run(a).await,
                Scenario::Idle(a) => idle::run(a).await,
                Scenario::Connect(a) => connect::run(a).await,
                Scenario::Storm(a) => storm::run(a).await,
                Scenario::Resumable(a) => resumable::run(a).await,
            }
        };
        tokio::time::timeout(limit, run)
            .await
            .unwrap_or_else(|_| Err(format!("gave up after --max-seconds {}", limit.as_secs())))
    });
    // Connection tasks may still be closing; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match outcome {
        Ok(report) => {
            report.print();
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(reason) => {
            eprintln!("loadgen: {reason}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_pass() {
        for ok in [
            "ws://127.0.0.1:8080",
            "ws://localhost:1/ws",
            "redis://127.0.0.5:6379/0",
            "http://[::1]:9090",
            "redis://:pw@127.0.0.1:1",
        ] {
            assert!(is_loopback_url(ok), "{ok}");
        }
        for bad in ["ws://10.0.0.1:8080", "ws://example.com", "http://[::2]:1"] {
            assert!(!is_loopback_url(bad), "{bad}");
        }
    }

    fn send_mode(extra: &[&str]) -> pair::SendMode {
        let mut argv = vec!["loadgen", "relay", "--url", "ws://127.0.0.1:1"];
        argv.extend_from_slice(extra);
        match Args::try_parse_from(argv).unwrap().scenario {
            Scenario::Relay(a) => a.send_mode,
            other => panic!("not relay: {other:?}"),
        }
    }

    #[test]
    fn relay_writes_one_message_at_a_time_unless_told_to_batch() {
        assert_eq!(send_mode(&[]), pair::SendMode::PerMessage);
        assert_eq!(
            send_mode(&["--send-mode", "batched"]),
            pair::SendMode::Batched
        );
        assert_eq!(
            send_mode(&["--send-mode", "per-message"]),
            pair::SendMode::PerMessage
        );
    }
}
