//! A Redis Cluster of real `redis-server --cluster-enabled yes` processes
//! on free ports, created with `redis-cli --cluster create`: three
//! primaries, optionally one replica each. Tests that only read and write
//! their own prefix share one cluster ([`shared`]); tests that kill a
//! primary start their own.

use std::time::Duration;

use tokio::sync::OnceCell;

use super::redis_proc::{base_args, cli, Lifetime, RedisProc};
use super::redis_tls::{cli_flags, TlsFiles};
use super::{eventually, free_port};

/// A running cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisProc>,
    /// Certificates, when the cluster speaks only TLS (clients and bus).
    pub tls: Option<TlsFiles>,
    dir: tempfile::TempDir,
}

fn node_args(port: u16, tls: Option<&TlsFiles>) -> Vec<String> {
    let mut args = match tls {
        None => base_args(port),
        Some(files) => {
            let mut args = files.server_args(port, false);
            args.extend(
                ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                    .iter()
                    .chain(&["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .map(|s| s.to_string()),
            );
            args
        }
    };
    args.extend(
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            "1000",
            // Not the default port + 10000, which may exceed 65535.
            "--cluster-port",
            &free_port().to_string(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

/// Polls `check` (a quick redis-cli call) until it holds, up to `limit`.
async fn wait_until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    eventually(what, limit, || {
        let ok = check();
        async move { ok }
    })
    .await;
}

impl RedisCluster {
    /// Three primaries with `replicas` replicas each, all slots covered and
    /// `cluster_state:ok` everywhere.
    pub async fn start(replicas: usize) -> RedisCluster {
        Self::start_with(replicas, false, None).await
    }

    /// Three primaries that speak only TLS, to clients and to each other.
    pub async fn start_tls() -> RedisCluster {
        Self::start_with(0, false, Some(TlsFiles::generate())).await
    }

    async fn start_with(replicas: usize, watched: bool, tls: Option<TlsFiles>) -> RedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let lifetime = if watched {
            Lifetime::Watched
        } else {
            Lifetime::Owned
        };
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            let node = RedisProc::start(
                dir.path(),
                lifetime,
                |port| node_args(port, tls.as_ref()),
                |port| cli(&cli_flags(tls.as_ref(), port), &["PING"]) == "PONG",
            )
            .await;
            nodes.push(node);
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let cluster = RedisCluster { nodes, tls, dir };
        let mut create: Vec<String> = match &cluster.tls {
            None => Vec::new(),
            Some(files) => {
                let mut flags = files.cli_args(ports[0]);
                flags.truncate(flags.len() - 2); // no -p: the ports follow
                flags
            }
        };
        create.extend(["--cluster".into(), "create".into()]);
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let refs: Vec<&str> = create.iter().map(String::as_str).collect();
        cli(&[], &refs);
        cluster.wait_healthy(Duration::from_secs(20)).await;
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and (with
    /// replicas) every replica's link to its primary is up.
    pub async fn wait_healthy(&self, limit: Duration) {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            wait_until("cluster_state:ok", limit, || {
                cli(&self.flags(node.port), &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })
            .await;
            wait_until("replication link up", limit, || {
                let info = cli(&self.flags(node.port), &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            })
            .await;
        }
    }

    /// redis-cli flags reaching the node on `port`.
    pub fn flags(&self, port: u16) -> Vec<String> {
        cli_flags(self.tls.as_ref(), port)
    }

    /// `redis://127.0.0.1:<p1>,…` (`rediss://` with TLS) for every node:
    /// the seed list.
    pub fn urls(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the primary that owns `key`'s slot (a channel name
    /// hashes the same way).
    pub fn primary_for(&self, key: &str) -> u16 {
        let slot: u16 = cli(&self.flags(self.any_port()), &["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        self.primary_for_slot(slot)
    }

    /// The port of the primary serving `slot` now.
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        let shards = cli(&self.flags(self.any_port()), &["CLUSTER", "SLOTS"]);
        // redis-cli prints CLUSTER SLOTS flat: start, end, then per node
        // ip, port, id (and hostname info); the first node is the primary.
        let lines: Vec<&str> = shards.lines().map(str::trim).collect();
        let mut i = 0;
        while i + 3 < lines.len() {
            if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>()) {
                if lines[i + 2] == "127.0.0.1" && (start..=end).contains(&slot) {
                    return lines[i + 3].parse().expect("port");
                }
            }
            i += 1;
        }
        panic!("no primary serves slot {slot}: {shards}");
    }

    /// Ports of the current primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter(|n| cli(&self.flags(n.port), &["ROLE"]).starts_with("master"))
            .map(|n| n.port)
            .collect()
    }

    fn any_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node")
            .port
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
    }

    /// Working directory (logs, nodes.conf).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// One three-primary cluster for every test in this process that only
/// uses its own key prefix; started on first use.
pub async fn shared() -> &'static RedisCluster {
    static SHARED: OnceCell<RedisCluster> = OnceCell::const_new();
    SHARED
        .get_or_init(|| RedisCluster::start_with(0, true, None))
        .await
}
