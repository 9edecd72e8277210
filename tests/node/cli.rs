//! The binary: configuration sources, the token subcommand, start-up
//! refusals, and the SIGTERM drain with exit code 0.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use signal_manager_client::Connection;
use signal_manager_service::protocol::Codec;

use crate::support::*;
use crate::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run binary")
}

#[tokio::test]
async fn token_subcommand_mints_tokens_a_node_accepts() {
    let env = [("SIGNAL_MANAGER_AUTH_TOKEN_SECRET", "cli-secret")];
    let out = run(&["token", "--client-id", "alice", "--ttl", "60"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    let node = ChildNode::spawn(&[], &env).await;
    let mut c = Connection::open(&node.url).await.unwrap();
    let ack = c.authenticate("alice", &token, JSON).await.unwrap();
    assert_eq!(ack.client_id, "alice");

    let missing = run(&["token", "--client-id", "alice"], &[]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("auth.token_secret"));
}

#[tokio::test]
async fn env_vars_override_the_file_and_flags_override_env() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[server]\nheartbeat_interval = 7\nmax_connections = 1\n"
    )
    .unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let node = ChildNode::spawn(
        &["--config", &path],
        &[
            ("SIGNAL_MANAGER_SERVER_MAX_CONNECTIONS", "5"),
            ("SIGNAL_MANAGER_SERVICE_HOST", "10.1.1.1"),
        ],
    )
    .await;
    let mut c = Connection::open(&node.url).await.unwrap();
    let ack = c.authenticate(ALICE.0, ALICE.1, JSON).await.unwrap();
    assert_eq!(ack.heartbeat_interval_ms, 7000, "file value");
    // max_connections from env (5) beats the file (1): a second socket is fine.
    let mut second = Connection::open(&node.url).await.unwrap();
    second
        .authenticate(BOB.0, BOB.1, Codec::Cbor)
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_configuration_stops_start_up_naming_the_key() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[server]\nmax_conections = 5\n").unwrap();
    let out = run(&["--config", file.path().to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.max_conections"), "{err}");

    let out = run(&[], &[("SIGNAL_MANAGER_SERVER_HEARTBEAT_INTERVAL", "0")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIGNAL_MANAGER_SERVER_HEARTBEAT_INTERVAL")
    );

    let out = run(&["--port", "0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
}

#[tokio::test]
async fn development_mode_refuses_non_loopback_addresses() {
    let port = free_port().to_string();
    let admin = free_port().to_string();
    let out = run(
        &["--host", "0.0.0.0", "--port", &port, "--admin-port", &admin],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

#[tokio::test]
async fn sigterm_drains_clients_and_exits_zero() {
    let mut node = ChildNode::spawn(&[], &[]).await;
    let mut c = Connection::open(&node.url).await.unwrap();
    c.authenticate(ALICE.0, ALICE.1, JSON).await.unwrap();
    node.terminate();
    assert_disconnect(&recv_message(&mut c).await, "SERVER_SHUTDOWN");
    assert_eq!(recv_close(&mut c).await, Some(1001));
    let status = node
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("node exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn help_explains_the_flags() {
    let out = run(&["--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--host",
        "--port",
        "--redis-url",
        "--node-id",
        "token",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

/// A cgroup with a CPU quota of one CPU, made for one test and removed
/// after it; `None` where this process may not create one.
struct OneCpuCgroup {
    dir: std::path::PathBuf,
}

impl OneCpuCgroup {
    fn create() -> Option<OneCpuCgroup> {
        let name = format!("signal-manager-test-{}", std::process::id());
        // cgroup v2 (one unified hierarchy), else the v1 `cpu` controller.
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
        let (dir, quota_file, quota) = if v2.exists() {
            let dir = std::path::Path::new("/sys/fs/cgroup").join(&name);
            (dir, "cpu.max", "100000 100000")
        } else {
            let dir = std::path::Path::new("/sys/fs/cgroup/cpu").join(&name);
            (dir, "cpu.cfs_quota_us", "100000")
        };
        std::fs::create_dir(&dir).ok()?;
        let group = OneCpuCgroup { dir };
        std::fs::write(group.dir.join(quota_file), quota).ok()?;
        Some(group)
    }

    fn procs(&self) -> String {
        self.dir.join("cgroup.procs").display().to_string()
    }
}

impl Drop for OneCpuCgroup {
    fn drop(&mut self) {
        // Empty by now: the node (the wrapper exec'd into it) was killed
        // and reaped before the group is dropped.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[tokio::test]
async fn default_worker_threads_follow_the_cpus_and_a_cgroup_cpu_limit() {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let node = ChildNode::spawn(&[], &[]).await;
    let text = http_get(&node.admin, "/metrics").await.1;
    assert_eq!(
        metric(&text, "signal_manager_runtime_worker_threads "),
        available as f64,
        "server.worker_threads = 0 takes one worker per available CPU"
    );
    drop(node);

    let set = ChildNode::spawn(&[], &[("SIGNAL_MANAGER_SERVER_WORKER_THREADS", "3")]).await;
    let text = http_get(&set.admin, "/metrics").await.1;
    assert_eq!(metric(&text, "signal_manager_runtime_worker_threads "), 3.0);
    drop(set);

    // A Kubernetes CPU limit is a cgroup CPU quota: one CPU, one worker.
    let Some(group) = OneCpuCgroup::create() else {
        eprintln!("skipped the cgroup half: this process may not create a cgroup");
        return;
    };
    let procs = group.procs();
    let wrapper = [
        "sh",
        "-c",
        "echo $$ > \"$0\" && exec \"$@\"",
        procs.as_str(),
    ];
    let limited = ChildNode::spawn_wrapped(&wrapper, &[], &[]).await;
    let text = http_get(&limited.admin, "/metrics").await.1;
    assert_eq!(
        metric(&text, "signal_manager_runtime_worker_threads "),
        1.0,
        "a one-CPU quota must give one worker"
    );
    drop(limited);
}
