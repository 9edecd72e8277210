//! `signal-manager-floor`: the least a relay does to carry Signal Manager's
//! frames from a client on one node to a client on another, through Redis
//! pub/sub with one channel per node. `bench/run.sh` drives it with the
//! same load generator and scenarios as the product, so each of the
//! product's figures has a floor to be read against.
//!
//! Per connection: WebSocket in; the first frame must be a JSON CONNECT,
//! whose client id is taken as given (no token check) and answered with a
//! CONNECT_ACK; then every JSON SIGNAL frame is routed on its
//! `target_client_id`, with the source spliced in, and everything else
//! (heartbeats, DISCONNECT, other codecs) is ignored. One `select!` loop per
//! connection is the only writer to its socket.
//!
//! Layout: `wire.rs` (header, the JSON fields it needs, the frames it
//! writes), `node.rs` (local clients, locations, publisher, subscriber).
//!
//! It measures nothing itself (the Redis client needs the runtime's timers).

mod node;
mod wire;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use node::Node;

/// A minimal cross-node relay speaking Signal Manager's frames (the
/// benchmark floor; see BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(name = "signal-manager-floor", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// WebSocket port.
    #[arg(long)]
    port: u16,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// This node's id (its channel is `<prefix>:node:<id>`).
    #[arg(long)]
    node_id: String,
    /// Prefix of every Redis key and channel.
    #[arg(long, default_value = "floor")]
    key_prefix: String,
    /// Runtime worker threads (bench/run.sh gives the product's nodes and
    /// the floor's the same number).
    #[arg(long, default_value_t = 1)]
    worker_threads: usize,
}

/// The same small buffers as the product's listener.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(21 + usize::from(u16::MAX)))
        .max_frame_size(Some(21 + usize::from(u16::MAX)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Subscribes, then listens: a client that connects can be reached at once.
async fn serve(args: Args) -> Result<(), String> {
    let node = Node::start(&args.redis_url, args.node_id.clone(), args.key_prefix)
        .await
        .map_err(|e| format!("redis {}: {e}", args.redis_url))?;
    let listener = TcpListener::bind((args.bind.as_str(), args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    eprintln!(
        "floor: node {} listening on {}:{}",
        args.node_id, args.bind, args.port
    );
    let sessions = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the others.
            Err(_) => continue,
        };
        let session = sessions.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(session_task(Arc::clone(&node), stream, session));
    }
}

/// One client: CONNECT, then signals in and deliveries out until it closes.
async fn session_task(node: Arc<Node>, stream: TcpStream, session: u64) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(stream, Some(websocket_config())).await
    else {
        return;
    };
    // The first message must be a JSON CONNECT.
    let client_id = match ws.next().await {
        Some(Ok(WsMessage::Binary(bytes))) => {
            let Some(h) = wire::header(&bytes).filter(|h| h.message_type == wire::CONNECT) else {
                return;
            };
            let Some(id) = wire::connect_client_id(h.payload) else {
                return;
            };
            let (outbound, queue) = mpsc::unbounded_channel();
            if node.register(&id, outbound).await.is_err() {
                node.unregister(&id);
                return;
            }
            let Some(ack) = wire::connect_ack(h.id, &id, &node.id, session) else {
                return;
            };
            if ws.send(WsMessage::Binary(ack)).await.is_err() {
                node.unregister(&id);
                return;
            }
            (id, queue)
        }
        _ => return,
    };
    let (client_id, mut queue) = client_id;
    loop {
        // Cancel-safe: `next` keeps partial frames in the stream and
        // `recv` loses nothing when the other branch wins.
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let Some(h) = wire::header(&bytes).filter(|h| wire::is_signal(h.message_type)) else {
                        continue;
                    };
                    let (Some(target), Some(frame)) =
                        (wire::signal_target(h.payload), wire::stamp_source(&h, &client_id))
                    else {
                        continue;
                    };
                    node.route(target, frame).await;
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(frame) = queue.recv() => {
                // Everything already queued goes out with one flush.
                let mut result = ws.feed(WsMessage::Binary(frame)).await;
                while result.is_ok() {
                    match queue.try_recv() {
                        Ok(more) => result = ws.feed(WsMessage::Binary(more)).await,
                        Err(_) => break,
                    }
                }
                if result.is_err() || ws.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    node.unregister(&client_id);
}
