//! HTTP on both sides of the 1.1 tests: a request helper with a method and
//! headers (for the admin API), and a tiny JWK Set server whose behaviour a
//! test switches at run time: serve a body, answer slowly, answer an
//! endless body, or refuse connections. Hand-written HTTP/1.0 is fine for a
//! fixture; the node itself uses a real client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `(status, body)` of one request; status 0 when unreachable.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
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

/// What the JWK Set server does with the next requests.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with this body.
    Serve(String),
    /// Headers promising a body, then one byte a second.
    Slow,
    /// An endless body.
    Huge,
    /// Close every connection at once, without an answer.
    Refuse,
}

/// A JWK Set server on a free loopback port.
pub struct JwksServer {
    pub url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `behaviour` at `http://127.0.0.1:<port>/jwks.json`.
    pub async fn start(behaviour: Behaviour) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let behaviour = Arc::new(Mutex::new(behaviour));
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, r) = (Arc::clone(&behaviour), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                r.fetch_add(1, Ordering::SeqCst);
                let now = b.lock().unwrap().clone();
                tokio::spawn(answer(stream, now));
            }
        });
        JwksServer {
            url,
            behaviour,
            requests,
            task,
        }
    }

    /// Changes what the next requests get.
    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Connections accepted so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, behaviour: Behaviour) {
    if matches!(behaviour, Behaviour::Refuse) {
        return;
    }
    // Read the request head (small; one read is enough on loopback).
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    match behaviour {
        Behaviour::Serve(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        }
        Behaviour::Slow => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n{";
            let _ = stream.write_all(head.as_bytes()).await;
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
            }
        }
        Behaviour::Huge => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"keys\":[";
            let _ = stream.write_all(head.as_bytes()).await;
            let chunk = vec![b' '; 64 * 1024];
            // Until the node hangs up (it must, at its size cap).
            while stream.write_all(&chunk).await.is_ok() {}
        }
        Behaviour::Refuse => {}
    }
    let _ = stream.shutdown().await;
}
