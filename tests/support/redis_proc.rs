//! The pieces the TLS, Sentinel and Cluster fixtures share: a
//! `redis-server` child process killed on drop, and `redis-cli` for
//! commands (it speaks TLS and ACL users, which the plain RESP helper in
//! `redis_server` does not).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How a server is started by [`RedisProc::start`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed when the [`RedisProc`] is dropped.
    Owned,
    /// Also killed once this test process is gone (see
    /// [`RedisProc::spawn_watched`]).
    Watched,
}

/// A redis-server (or Sentinel) process; SIGKILLed on drop.
pub struct RedisProc {
    pub port: u16,
    child: Option<Child>,
    /// Whether `child` leads a process group (a watched server's shell and
    /// the server itself), killed as a whole.
    group: bool,
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
            group: false,
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
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        RedisProc {
            port,
            child: Some(child),
            group: true,
        }
    }

    /// Starts a server on a free port and waits until `answers(port)`
    /// holds ([`RedisProc::answered`]). The port is free when chosen, but another process (a test
    /// running beside this one) may bind it first: then the server exits
    /// at once and another port is tried, up to five. `args(port)` builds
    /// the command line (it may write a config file naming the port).
    pub async fn start(
        dir: &Path,
        lifetime: Lifetime,
        args: impl Fn(u16) -> Vec<String>,
        answers: impl Fn(u16) -> bool,
    ) -> RedisProc {
        for _ in 0..5 {
            let port = super::free_port();
            let args = args(port);
            let mut proc = match lifetime {
                Lifetime::Owned => RedisProc::spawn(port, dir, &args),
                Lifetime::Watched => RedisProc::spawn_watched(port, dir, &args),
            };
            if proc.answered(dir, &answers).await {
                return proc;
            }
            eprintln!(
                "redis-server on port {port} exited at start; trying another port. Its log:\n{}",
                log_tail(dir, port)
            );
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Waits until `answers(port)` holds: true then, false once the process
    /// exited instead (its port was taken). Panics with the log's last
    /// lines when it neither answers nor exits within 10 s.
    pub async fn answered(&mut self, dir: &Path, answers: impl Fn(u16) -> bool) -> bool {
        let port = self.port;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if answers(port) {
                return true;
            }
            if self.has_exited() {
                return false;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "redis-server on port {port} did not answer within 10 s; its log:\n{}",
                    log_tail(dir, port)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id (the shell's, for a watched server).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("the server was not killed")
    }

    /// Whether the process ended by itself.
    fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.group {
                // The shell's death alone would leave the server running.
                let _ = Command::new("kill")
                    .args(["-9", "--", &format!("-{}", child.id())])
                    .status();
            }
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

/// The last lines of the log of the server on `port` in `dir`.
fn log_tail(dir: &Path, port: u16) -> String {
    let log = std::fs::read_to_string(dir.join(format!("redis-{port}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
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
