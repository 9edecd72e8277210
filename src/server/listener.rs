//! The accept loop: connection limit, handshake with its timeout, one task
//! per connection. Beyond `server.max_connections` a socket still completes
//! the upgrade, gets ERROR SERVER_BUSY and close 1013.

use std::sync::Arc;

use futures_util::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::counted::CountedStream;
use super::session::{self, Ws};
use crate::node::Node;
use crate::protocol::{encode_error, Codec, ErrorCode, MAX_FRAME_LEN};
use crate::shutdown::Shutdown;

/// The WebSocket settings every connection uses: small buffers (a signaling
/// session needs a few KiB, not the library's 128 KiB defaults) and the
/// protocol's largest frame as the message limit.
pub(crate) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Accepts WebSocket clients until the drain starts. Every connection task
/// runs on `connections`, whose length is the open-connection count and
/// which the drain awaits.
pub(crate) async fn serve_websockets(
    listener: TcpListener,
    node: Arc<Node>,
    mut shutdown: Shutdown,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let node = Arc::clone(&node);
        let busy = connections.len() >= node.settings().server.max_connections;
        let shutdown = shutdown.clone();
        let connection = async move {
            let guard = ConnectionGauge::open(&node);
            if busy {
                Box::pin(reject_busy(&node, stream)).await;
            } else if let Some(ws) = Box::pin(handshake(&node, stream)).await {
                tracing::debug!(%peer, "websocket opened");
                session::run(&node, ws, shutdown).await;
            }
            drop(guard);
        };
        tracing::trace!(
            bytes = std::mem::size_of_val(&connection),
            "connection task"
        );
        connections.spawn(connection);
    }
}

/// Keeps the open-connections gauge true on every exit of a connection task.
struct ConnectionGauge(Arc<Node>);

impl ConnectionGauge {
    fn open(node: &Arc<Node>) -> ConnectionGauge {
        node.metrics().connections.inc();
        ConnectionGauge(Arc::clone(node))
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.metrics().connections.dec();
    }
}

/// The upgrade, boxed: the connection task keeps nothing of it inline.
async fn handshake(node: &Node, stream: TcpStream) -> Option<Box<Ws>> {
    let accept = tokio_tungstenite::accept_hdr_async_with_config(
        CountedStream::new(stream),
        check_path,
        Some(websocket_config()),
    );
    match tokio::time::timeout(node.settings().server.connect_timeout(), accept).await {
        Ok(Ok(mut ws)) => {
            ws.get_mut().end_handshake();
            Some(Box::new(ws))
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "websocket handshake failed");
            None
        }
        Err(_) => None,
    }
}

#[allow(clippy::result_large_err)] // the callback signature is the library's
fn check_path(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    match request.uri().path() {
        "/" | "/ws" => Ok(response),
        _ => {
            let mut not_found = ErrorResponse::new(Some("not found: use / or /ws".into()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            Err(not_found)
        }
    }
}

async fn reject_busy(node: &Node, stream: TcpStream) {
    let Some(mut ws) = handshake(node, stream).await else {
        return;
    };
    let frame = encode_error(
        Codec::Json,
        Uuid::nil(),
        ErrorCode::ServerBusy,
        "node is at its connection limit",
    );
    node.metrics().error_sent(ErrorCode::ServerBusy);
    let close = CloseFrame {
        code: WsCloseCode::from(1013),
        reason: "server busy".into(),
    };
    let _ = ws.send(WsMessage::Binary(frame)).await;
    let _ = ws.send(WsMessage::Close(Some(close))).await;
    session::await_close(&mut ws).await;
}
