//! Fixtures shared by the integration test binaries: in-process nodes on
//! ephemeral ports, child-process nodes, a real `redis-server` per test,
//! bounded waits, and a tiny HTTP GET.
#![allow(dead_code)]

pub mod http_fixture;
pub mod redis_cluster;
pub mod redis_proc;
pub mod redis_sentinel;
pub mod redis_server;
pub mod redis_tls;
pub mod tcp_tap;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use signal_manager_client::{Connection, Incoming};
use signal_manager_service::app::{self, Listeners};
use signal_manager_service::config::Settings;
use signal_manager_service::protocol::{Codec, Message, Payload};
use signal_manager_service::shutdown::{self, ShutdownTrigger};
use signal_manager_service::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Settings for a test node: loopback, ephemeral ports, development tokens.
pub fn test_settings() -> Settings {
    let mut s = Settings::default();
    s.server.port = 0;
    s.admin.port = 0;
    s
}

/// A free TCP port on loopback (for child processes that need a number).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A node running in this process.
pub struct TestNode {
    pub node: Arc<Node>,
    pub url: String,
    pub admin: String,
    trigger: Option<ShutdownTrigger>,
    task: Option<JoinHandle<()>>,
}

impl TestNode {
    /// Starts a single node on memory backends.
    pub async fn start(settings: Settings) -> TestNode {
        let node = app::build_node(settings).await.expect("build node");
        TestNode::run(node).await
    }

    /// Runs an already built node.
    pub async fn run(node: Arc<Node>) -> TestNode {
        let t = TestNode::run_unready(node).await;
        let admin = t.admin.clone();
        eventually("node ready", Duration::from_secs(10), || {
            let admin = admin.clone();
            async move { http_get(&admin, "/readyz").await.0 == 200 }
        })
        .await;
        t
    }

    /// Runs an already built node without waiting for `/readyz` 200.
    pub async fn run_unready(node: Arc<Node>) -> TestNode {
        let listeners = app::bind(node.settings()).await.expect("bind");
        let url = format!("ws://{}", listeners.websocket.local_addr().unwrap());
        let admin = format!("{}", listeners.admin.local_addr().unwrap());
        let (trigger, shutdown) = shutdown::channel();
        let n = Arc::clone(&node);
        let task = tokio::spawn(async move {
            app::run_node(n, Listeners { ..listeners }, shutdown)
                .await
                .expect("run node");
        });
        let t = TestNode {
            node,
            url,
            admin,
            trigger: Some(trigger),
            task: Some(task),
        };
        eventually("admin listener up", Duration::from_secs(10), || {
            let admin = t.admin.clone();
            async move { http_get(&admin, "/healthz").await.0 == 200 }
        })
        .await;
        t
    }

    /// Starts the drain and waits for the node to finish.
    pub async fn shutdown(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Starts the drain without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
    }

    /// Opens a raw connection.
    pub async fn open(&self) -> Connection {
        Connection::open(&self.url).await.expect("open websocket")
    }

    /// Opens a connection authenticated as `client` with `token`.
    pub async fn login(&self, client: &str, token: &str, codec: Codec) -> Connection {
        let mut c = self.open().await;
        c.authenticate(client, token, codec)
            .await
            .expect("authenticate");
        c
    }

    /// GET on the admin listener.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.admin, path).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Waits until `check` holds, polling every 20 ms, failing after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A minimal HTTP/1.0 GET: (status, body); status 0 when unreachable.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Receives the next protocol message, failing on close or timeout.
pub async fn recv_message(conn: &mut Connection) -> Message {
    match conn.recv_timeout(Duration::from_secs(10)).await {
        Ok(Incoming::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Receives until the close; returns the close code.
pub async fn recv_close(conn: &mut Connection) -> Option<u16> {
    loop {
        match conn.recv_timeout(Duration::from_secs(10)).await {
            Ok(Incoming::Closed(code, _)) => return code,
            Ok(_) => continue,
            Err(e) => panic!("expected a close, got error {e}"),
        }
    }
}

/// A SIGNAL_* message of `kind` for `target`.
pub fn signal(
    kind: signal_manager_service::protocol::MessageType,
    target: &str,
    data: &str,
) -> Message {
    use signal_manager_service::protocol::{MessageType, SignalPayload};
    let p = SignalPayload {
        target_client_id: target.into(),
        signal_data: data.into(),
    };
    let payload = match kind {
        MessageType::SignalOffer => Payload::SignalOffer(p),
        MessageType::SignalAnswer => Payload::SignalAnswer(p),
        _ => Payload::SignalIceCandidate(p),
    };
    Message::new(kind, payload)
}

/// Expects an ERROR with `code` answering `id`.
pub fn assert_error(message: &Message, code: &str, id: uuid::Uuid) {
    match &message.payload {
        Payload::Error(e) => {
            assert_eq!(e.code, code, "unexpected error {e:?}");
            assert_eq!(message.message_id, id, "error must carry the frame's id");
        }
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

/// Waits for the client's next event and expects an ERROR `code` for `id`.
pub async fn expect_error_event(
    client: &mut signal_manager_client::Client,
    id: uuid::Uuid,
    code: &str,
) {
    use signal_manager_client::Event;
    match tokio::time::timeout(Duration::from_secs(5), client.next_event()).await {
        Ok(Some(Event::Error {
            message_id,
            code: got,
            ..
        })) => {
            assert_eq!((message_id, got.as_str()), (id, code));
        }
        other => panic!("expected ERROR {code} for {id}, got {other:?}"),
    }
}

/// Waits for the client's next event and expects the signal `id`.
pub async fn expect_signal_event(
    client: &mut signal_manager_client::Client,
    id: uuid::Uuid,
) -> signal_manager_client::IncomingSignal {
    use signal_manager_client::Event;
    match tokio::time::timeout(Duration::from_secs(5), client.next_event()).await {
        Ok(Some(Event::Signal(s))) if s.message_id == id => s,
        other => panic!("expected signal {id}, got {other:?}"),
    }
}

/// Expects a DISCONNECT with `reason`.
pub fn assert_disconnect(message: &Message, reason: &str) {
    match &message.payload {
        Payload::Disconnect(d) => assert_eq!(d.reason, reason),
        other => panic!("expected DISCONNECT {reason}, got {other:?}"),
    }
}

/// The value of the first line of a Prometheus text exposition that starts
/// with `line_prefix` (a metric name, with its labels when it has some); 0
/// when there is none.
pub fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Path of the service binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_signal-manager-service"))
}

/// A node in a child process (killed on drop).
pub struct ChildNode {
    pub child: Child,
    pub url: String,
    pub admin: String,
}

impl ChildNode {
    /// Spawns the binary with `args` and `env` on free ports; waits for
    /// `/readyz` 200. A port taken between choosing and binding makes the
    /// node exit at once; then other ports are tried.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> ChildNode {
        for _ in 0..5 {
            if let Some(node) = ChildNode::try_spawn_on(free_port(), free_port(), args, env).await {
                return node;
            }
        }
        panic!("the node did not start on any of 5 pairs of free ports");
    }

    /// Like [`ChildNode::spawn`], started through `wrapper` (a command line
    /// that ends by running what follows it, e.g. one that first moves
    /// itself into a cgroup).
    pub async fn spawn_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> ChildNode {
        for _ in 0..5 {
            let ports = (free_port(), free_port());
            if let Some(node) = ChildNode::launch(wrapper, ports, args, env).await {
                return node;
            }
        }
        panic!("the node did not start on any of 5 pairs of free ports");
    }

    /// Like [`ChildNode::spawn`] on the given ports (to restart a node where
    /// its clients expect it).
    pub async fn spawn_on(
        port: u16,
        admin_port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> ChildNode {
        ChildNode::try_spawn_on(port, admin_port, args, env)
            .await
            .unwrap_or_else(|| panic!("the node exited at start on ports {port}/{admin_port}"))
    }

    /// Spawns the node; `None` if it exits before it is ready.
    async fn try_spawn_on(
        port: u16,
        admin_port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<ChildNode> {
        ChildNode::launch(&[], (port, admin_port), args, env).await
    }

    async fn launch(
        wrapper: &[&str],
        (port, admin_port): (u16, u16),
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<ChildNode> {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(binary());
                cmd
            }
            None => Command::new(binary()),
        };
        cmd.args([
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        // SM_TEST_NODE_LOGS=1 shows the child nodes' logs (for debugging).
        if std::env::var_os("SM_TEST_NODE_LOGS").is_some() {
            cmd.stderr(Stdio::inherit())
                .env("SIGNAL_MANAGER_LOGGING_FORMAT", "pretty")
                .env("SIGNAL_MANAGER_LOGGING_LEVEL", "debug");
        } else {
            cmd.stderr(Stdio::null());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn node binary");
        let mut node = ChildNode {
            child,
            url: format!("ws://127.0.0.1:{port}"),
            admin: format!("127.0.0.1:{admin_port}"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if http_get(&node.admin, "/readyz").await.0 == 200 {
                return Some(node);
            }
            if let Ok(Some(_)) = node.child.try_wait() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("child node on port {port} was not ready within 15 s");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        send_os_signal(self.child.id(), "TERM");
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the exit status, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process by name (`TERM`, `KILL`, `STOP`, `CONT`).
pub fn send_os_signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}
