//! A Sentinel set: one master, one replica and three
//! `redis-server --sentinel` processes watching it as `mymaster`, with a
//! one-second down-after so a killed master is replaced in a few seconds.

use std::time::Duration;

use super::redis_proc::{base_args, cli, plain, RedisProc};
use super::{eventually, free_port};

/// The name the Sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// A running master, replica and three Sentinels.
pub struct SentinelSet {
    pub master: RedisProc,
    pub replica: RedisProc,
    pub sentinels: Vec<RedisProc>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts all five processes at once and waits until the replica is in
    /// sync and every Sentinel knows the replica and the two other Sentinels.
    pub async fn start() -> SentinelSet {
        let dir = tempfile::tempdir().expect("tempdir");
        let (m, r) = (free_port(), free_port());
        let master = RedisProc::spawn(m, dir.path(), &base_args(m));
        let mut replica_args = base_args(r);
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
        let replica = RedisProc::spawn(r, dir.path(), &replica_args);
        let sentinels: Vec<RedisProc> = (0..3)
            .map(|_| {
                let port = free_port();
                let conf = dir.path().join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {m} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 5000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n"
                    ),
                )
                .expect("write sentinel.conf");
                RedisProc::spawn(
                    port,
                    dir.path(),
                    &[conf.display().to_string(), "--sentinel".into()],
                )
            })
            .collect();
        let set = SentinelSet {
            master,
            replica,
            sentinels,
            _dir: dir,
        };
        eventually("replica in sync", Duration::from_secs(15), || async {
            cli(&plain(r), &["INFO", "replication"]).contains("master_link_status:up")
        })
        .await;
        for s in &set.sentinels {
            let port = s.port;
            eventually(
                "sentinel knows the replica and its peers",
                Duration::from_secs(20),
                || async move {
                    let info = cli(&plain(port), &["SENTINEL", "MASTER", MASTER_NAME]);
                    let field = |name: &str| {
                        let lines: Vec<&str> = info.lines().collect();
                        lines
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| lines.get(i + 1))
                            .map(|v| v.to_string())
                    };
                    field("num-slaves").as_deref() == Some("1")
                        && field("num-other-sentinels").as_deref() == Some("2")
                },
            )
            .await;
        }
        set
    }

    /// `redis://127.0.0.1:<s1>,redis://127.0.0.1:<s2>,…`.
    pub fn urls(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port as the first live Sentinel reports it.
    pub fn reported_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let answer = cli(
                &plain(s.port),
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            );
            answer.lines().nth(1).and_then(|p| p.trim().parse().ok())
        })
    }
}
