//! A real `redis-server` per test on a free port, with no persistence;
//! killed on drop and restartable on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// A running redis-server.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
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
    /// Starts a server on a free port and waits until it answers. The
    /// port is free when chosen but another process may take it before
    /// redis-server binds: then the server exits at once and another port
    /// is tried.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: 0,
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.try_spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its port; panics unless it answers.
    async fn spawn(&mut self) {
        assert!(
            self.try_spawn().await,
            "redis-server could not start on port {}",
            self.port
        );
    }

    /// Starts the server on its port: true once it answers, false if it
    /// exited (the port was taken).
    async fn try_spawn(&mut self) -> bool {
        let child = Command::new(binary())
            .args(super::redis_proc::base_args(self.port))
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if ping(self.port).await {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    /// The server's process id (for SIGSTOP / SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("redis-server runs")
    }

    /// Kills the server (SIGKILL); its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Runs a command with redis-cli-like arguments over a plain socket (RESP).
    pub async fn command(&self, args: &[&str]) -> String {
        command(self.port, args).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ping(port: u16) -> bool {
    command(port, &["PING"]).await.contains("PONG")
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
