//! A real `redis-server` per test on a free port, with no persistence;
//! killed on drop (a [`RedisProc`]) and restartable on the same port.

use std::path::PathBuf;
use std::time::Duration;

use super::redis_proc::{base_args, Lifetime, RedisProc};

/// A running redis-server.
pub struct RedisServer {
    pub port: u16,
    /// `None` while stopped.
    proc: Option<RedisProc>,
    dir: tempfile::TempDir,
}

/// The `redis-server` binary; panics with the install command when missing.
pub fn binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/redis-server");
    if path.exists() {
        return path;
    }
    if let Ok(found) = which("redis-server") {
        return found;
    }
    panic!("redis-server is not installed; install it with: apt-get install -y redis-server");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.exists())
        })
        .ok_or(())
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers (another
    /// port is tried when one was taken before the server bound it).
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc = RedisProc::start(dir.path(), Lifetime::Owned, base_args, answers_ping).await;
        RedisServer {
            port: proc.port,
            proc: Some(proc),
            dir,
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("redis-server runs").pid()
    }

    /// Kills the server (SIGKILL); its data is gone.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts a fresh, empty server on the same port; panics unless it
    /// answers.
    pub async fn restart(&mut self) {
        self.stop();
        let mut proc = RedisProc::spawn(self.port, self.dir.path(), &base_args(self.port));
        assert!(
            proc.answered(self.dir.path(), answers_ping).await,
            "redis-server could not start again on port {}",
            self.port
        );
        self.proc = Some(proc);
    }

    /// Runs a command with redis-cli-like arguments over a plain socket (RESP).
    pub async fn command(&self, args: &[&str]) -> String {
        command(self.port, args).await
    }
}

/// Whether a server answers PING on `port` (blocking, but on loopback it
/// returns at once or within the read timeout).
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && matches!(s.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG"))
}

/// Sends one RESP command and returns the raw reply text.
pub async fn command(port: u16, args: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 1 << 16];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).to_string()
}
