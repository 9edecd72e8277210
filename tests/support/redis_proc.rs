//! The pieces the TLS, Sentinel and Cluster fixtures share: a
//! `redis-server` child process killed on drop, and `redis-cli` for
//! commands (it speaks TLS and ACL users, which the plain RESP helper in
//! `redis_server` does not).

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A redis-server (or Sentinel) process; SIGKILLed on drop.
pub struct RedisProc {
    pub port: u16,
    child: Option<Child>,
}

impl RedisProc {
    /// Starts `redis-server <args…>` with its working files in `dir`;
    /// its log goes to `dir/redis-<port>.log`.
    pub fn spawn(port: u16, dir: &Path, args: &[String]) -> RedisProc {
        let log = dir.join(format!("redis-{port}.log"));
        let child = Command::new(super::redis_server::binary())
            .args(args)
            .args(["--dir", &dir.display().to_string()])
            .args(["--logfile", &log.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        RedisProc {
            port,
            child: Some(child),
        }
    }

    /// Like [`spawn`](Self::spawn), for a process that outlives every
    /// test (a fixture shared through a static, which is never dropped): a
    /// small shell watchdog kills the server once this test process is
    /// gone, so no server is left behind.
    pub fn spawn_watched(port: u16, dir: &Path, args: &[String]) -> RedisProc {
        let log = dir.join(format!("redis-{port}.log"));
        let script = "\"$0\" \"$@\" & child=$!; \
            while kill -0 \"$WATCH\" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done; \
            kill -9 $child 2>/dev/null";
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(super::redis_server::binary())
            .args(args)
            .args(["--dir", &dir.display().to_string()])
            .args(["--logfile", &log.display().to_string()])
            .env("WATCH", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        RedisProc {
            port,
            child: Some(child),
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has not been killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The usual flags of a throw-away server on loopback.
pub fn base_args(port: u16) -> Vec<String> {
    let mut args = vec!["--port".to_owned(), port.to_string()];
    args.extend(ephemeral_args());
    args
}

/// What every test server runs with: loopback only, nothing on disk.
pub fn ephemeral_args() -> Vec<String> {
    ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Runs `redis-cli <connection…> <args…>` and returns its stdout ("" when
/// it cannot run). Blocking, but short: a local command.
pub fn cli(connection: &[String], args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(connection)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-cli is not installed; install it with: apt-get install -y redis-tools")
        }
        Err(_) => String::new(),
    }
}

/// `redis-cli` connection flags for a plain server on `port`.
pub fn plain(port: u16) -> Vec<String> {
    vec!["-p".into(), port.to_string()]
}
