//! A Sentinel set: one master, one replica and three
//! `redis-server --sentinel` processes watching it as `mymaster`, with a
//! one-second down-after so a killed master is replaced in a few seconds.
//!
//! Plain by default; [`SentinelOptions`] makes every process speak only
//! TLS (to clients and to each other), or puts ACL users on the data nodes
//! and a password of their own on the Sentinels.

use std::time::Duration;

use super::eventually;
use super::redis_proc::{base_args, cli, ephemeral_args, Lifetime, RedisProc};
use super::redis_tls::{cli_flags, TlsFiles};

/// The name the Sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// With [`SentinelOptions::acl`]: the Sentinels' own `requirepass`.
pub const SENTINEL_PASSWORD: &str = "sentinel-secret";

/// With [`SentinelOptions::acl`]: the user replication and the Sentinels
/// use on the data nodes (Redis's documented rights for both; not the
/// node's user).
const OPS_USER: &str = "ops";
const OPS_PASSWORD: &str = "ops-secret";
const OPS_RIGHTS: &[&str] = &[
    "allchannels",
    "+psync",
    "+replconf",
    "+ping",
    "+multi",
    "+exec",
    "+slaveof",
    "+replicaof",
    "+config|rewrite",
    "+role",
    "+info",
    "+publish",
    "+subscribe",
    "+client|setname",
    "+client|kill",
    "+script|kill",
];

/// With [`SentinelOptions::acl`]: the fixture's own user, for its checks
/// (the default user is off).
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";

/// How the set is secured.
#[derive(Default)]
pub struct SentinelOptions {
    /// Every process serves TLS only and requires a client certificate of
    /// the test CA; replication and the Sentinels talk TLS too
    /// (`tls-replication yes`).
    pub tls: bool,
    /// The data nodes' default user is off (replication and the Sentinels
    /// log in as their own user); the Sentinels have a `requirepass`.
    pub acl: bool,
}

/// A running master, replica and three Sentinels.
pub struct SentinelSet {
    pub master: RedisProc,
    pub replica: RedisProc,
    pub sentinels: Vec<RedisProc>,
    /// The certificates, when the set speaks only TLS.
    pub tls: Option<TlsFiles>,
    acl: bool,
    dir: tempfile::TempDir,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `redis-server` flags of a data node.
fn data_args(port: u16, tls: Option<&TlsFiles>, acl: bool) -> Vec<String> {
    let mut args = match tls {
        None => base_args(port),
        Some(files) => {
            let mut args = files.server_args(port, true);
            args.extend(ephemeral_args());
            args.extend(strings(&["--tls-replication", "yes"]));
            args
        }
    };
    // A replica's full sync starts at once, not after the default 5 s
    // wait for more replicas.
    args.extend(strings(&["--repl-diskless-sync-delay", "0"]));
    if acl {
        args.extend(strings(&["--user", "default", "off"]));
        args.extend(strings(&["--user", ADMIN_USER, "on"]));
        args.extend([format!(">{ADMIN_PASSWORD}"), "~*".into(), "&*".into()]);
        args.push("+@all".into());
        args.extend(strings(&["--user", OPS_USER, "on"]));
        args.push(format!(">{OPS_PASSWORD}"));
        args.extend(strings(OPS_RIGHTS));
        // Both data nodes: after a failover the old master replicates.
        args.extend(strings(&[
            "--masteruser",
            OPS_USER,
            "--masterauth",
            OPS_PASSWORD,
        ]));
    }
    args
}

/// A Sentinel's configuration file (Sentinel rewrites it as it learns).
fn sentinel_conf(port: u16, master: u16, tls: Option<&TlsFiles>, acl: bool) -> String {
    let mut conf = match tls {
        None => format!("port {port}\n"),
        Some(files) => format!(
            "port 0\ntls-port {port}\n\
             tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients yes\ntls-replication yes\n",
            files.server_cert.display(),
            files.server_key.display(),
            files.ca.display()
        ),
    };
    conf.push_str(&format!(
        "bind 127.0.0.1\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 5000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n"
    ));
    if acl {
        // The Sentinels also log in to each other with it.
        conf.push_str(&format!(
            "requirepass {SENTINEL_PASSWORD}\n\
             sentinel auth-user {MASTER_NAME} {OPS_USER}\n\
             sentinel auth-pass {MASTER_NAME} {OPS_PASSWORD}\n"
        ));
    }
    conf
}

/// `redis-cli` flags reaching a data node on `port`.
fn data_flags(tls: Option<&TlsFiles>, acl: bool, port: u16) -> Vec<String> {
    let mut flags = cli_flags(tls, port);
    if acl {
        flags.extend(strings(&[
            "--user",
            ADMIN_USER,
            "--pass",
            ADMIN_PASSWORD,
            "--no-auth-warning",
        ]));
    }
    flags
}

/// `redis-cli` flags reaching a Sentinel on `port`.
fn sentinel_flags(tls: Option<&TlsFiles>, acl: bool, port: u16) -> Vec<String> {
    let mut flags = cli_flags(tls, port);
    if acl {
        flags.extend(strings(&["-a", SENTINEL_PASSWORD, "--no-auth-warning"]));
    }
    flags
}

impl SentinelSet {
    /// A plain set.
    pub async fn start() -> SentinelSet {
        Self::start_with(SentinelOptions::default()).await
    }

    /// Starts the master and the replica at once, then, once the replica
    /// is in sync, the three Sentinels at once (a Sentinel that meets the
    /// master before the replica does would learn of it only at its next
    /// `INFO`, ten seconds later); waits until every Sentinel knows the
    /// replica and the two other Sentinels.
    pub async fn start_with(options: SentinelOptions) -> SentinelSet {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = options.tls.then(TlsFiles::generate);
        let acl = options.acl;
        let data_answers = |port| cli(&data_flags(tls.as_ref(), acl, port), &["PING"]) == "PONG";
        let master = RedisProc::start(
            dir.path(),
            Lifetime::Owned,
            |port| data_args(port, tls.as_ref(), acl),
            data_answers,
        )
        .await;
        let m = master.port;
        let replica = RedisProc::start(
            dir.path(),
            Lifetime::Owned,
            |port| {
                let mut args = data_args(port, tls.as_ref(), acl);
                args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
                args
            },
            data_answers,
        )
        .await;
        let r = replica.port;
        let mut set = SentinelSet {
            master,
            replica,
            sentinels: Vec::new(),
            tls,
            acl,
            dir,
        };
        eventually("replica in sync", Duration::from_secs(15), || {
            let info = set.data_cli(r, &["INFO", "replication"]);
            async move { info.contains("master_link_status:up") }
        })
        .await;
        for _ in 0..3 {
            let sentinel = RedisProc::start(
                set.dir.path(),
                Lifetime::Owned,
                |port| {
                    let conf = set.dir.path().join(format!("sentinel-{port}.conf"));
                    std::fs::write(&conf, sentinel_conf(port, m, set.tls.as_ref(), acl))
                        .expect("write sentinel.conf");
                    vec![conf.display().to_string(), "--sentinel".into()]
                },
                |port| cli(&set.sentinel_flags(port), &["PING"]) == "PONG",
            )
            .await;
            set.sentinels.push(sentinel);
        }
        for s in &set.sentinels {
            eventually(
                "sentinel knows the replica and its peers",
                Duration::from_secs(20),
                || {
                    let info = set.sentinel_cli(s.port, &["SENTINEL", "MASTER", MASTER_NAME]);
                    async move {
                        let lines: Vec<&str> = info.lines().collect();
                        let field = |name: &str| {
                            lines
                                .iter()
                                .position(|l| *l == name)
                                .and_then(|i| lines.get(i + 1))
                                .copied()
                        };
                        field("num-slaves") == Some("1")
                            && field("num-other-sentinels") == Some("2")
                    }
                },
            )
            .await;
        }
        set
    }

    /// `redis-cli` flags reaching the data node on `port` (as an
    /// administrator when the default user is off).
    pub fn data_flags(&self, port: u16) -> Vec<String> {
        data_flags(self.tls.as_ref(), self.acl, port)
    }

    /// `redis-cli` flags reaching the Sentinel on `port`.
    pub fn sentinel_flags(&self, port: u16) -> Vec<String> {
        sentinel_flags(self.tls.as_ref(), self.acl, port)
    }

    /// Runs a command on the data node on `port`.
    pub fn data_cli(&self, port: u16, args: &[&str]) -> String {
        cli(&self.data_flags(port), args)
    }

    /// Runs a command on the Sentinel on `port`.
    pub fn sentinel_cli(&self, port: u16, args: &[&str]) -> String {
        cli(&self.sentinel_flags(port), args)
    }

    /// `redis://127.0.0.1:<s1>,redis://127.0.0.1:<s2>,…` (`rediss://` with
    /// TLS).
    pub fn urls(&self) -> String {
        self.urls_as("")
    }

    /// The Sentinel URLs with `userinfo` (`user:password@`) in each.
    pub fn urls_as(&self, userinfo: &str) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.sentinels
            .iter()
            .map(|s| format!("{scheme}://{userinfo}127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills the master (-9) and waits, up to `budget`, until a Sentinel
    /// names another; returns when it was killed and how long promotion took.
    pub async fn kill_master_until_promoted(
        &mut self,
        budget: Duration,
    ) -> (tokio::time::Instant, Duration) {
        let old_master = self.master.port;
        self.master.kill();
        let killed = tokio::time::Instant::now();
        eventually("Sentinel promotes the replica", budget, || {
            let reported = self.reported_master_port();
            async move { reported.is_some_and(|p| p != old_master) }
        })
        .await;
        (killed, killed.elapsed())
    }

    /// The master's port as the first live Sentinel reports it.
    pub fn reported_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let answer = self.sentinel_cli(
                s.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            );
            answer.lines().nth(1).and_then(|p| p.trim().parse().ok())
        })
    }
}
