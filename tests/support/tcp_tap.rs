//! A TCP proxy in front of a server, for faults Redis itself cannot make:
//! a "blackhole" reads everything the server sends and throws it away
//! (the server counts its pub/sub messages as received, the client never
//! sees them), and a cut closes every connection open at that moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct State {
    blackhole: AtomicBool,
    cuts: watch::Sender<u64>,
}

/// The proxy; stops accepting when dropped.
pub struct TcpTap {
    pub port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl TcpTap {
    /// Listens on a free port and forwards each connection to `upstream`
    /// on 127.0.0.1.
    pub async fn start(upstream: u16) -> TcpTap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let port = listener.local_addr().expect("tap address").port();
        let state = Arc::new(State {
            blackhole: AtomicBool::new(false),
            cuts: watch::Sender::new(0),
        });
        let accept = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let state = Arc::clone(&state);
                    tokio::spawn(forward(client, upstream, state));
                }
            })
        };
        TcpTap {
            port,
            state,
            accept,
        }
    }

    /// A `redis://` URL through the tap.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// While on, what the server sends is read and dropped.
    pub fn blackhole(&self, on: bool) {
        self.state.blackhole.store(on, Ordering::Release);
    }

    /// Closes every connection open now (new ones are accepted as before).
    pub fn cut(&self) {
        self.state.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for TcpTap {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn forward(client: TcpStream, upstream: u16, state: Arc<State>) {
    let mut cuts = state.cuts.subscribe();
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
            if state.blackhole.load(Ordering::Acquire) {
                continue;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cuts.changed() => {}
    }
}
