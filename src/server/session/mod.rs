//! One task per WebSocket: waits for CONNECT, then serves the session as the
//! only writer to its socket until it ends. The session's hub entry and
//! presence record belong to a [`crate::node::Registration`] guard, so they
//! go away on every path, a panic included.
//!
//! Layout: `link.rs` (the socket, which drops the WebSocket layer while
//! the connection is quiet), `wire.rs` (the wire length of a message, for
//! the link's count), `reader.rs` (the one frame reader of both phases),
//! `error.rs` (every refusal, mapped once to its code, sentence and close
//! code), `connect.rs` (everything before a successful CONNECT), `live.rs`
//! (the authenticated session loop), and here the entry point and the
//! closing helpers both use.

mod connect;
mod error;
mod link;
mod live;
mod reader;
#[cfg(test)]
mod tests;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::node::Node;
use crate::protocol::{CloseCode, DisconnectReason};
use crate::shutdown::Shutdown;
use connect::authenticate;
use link::Link;
pub(crate) use link::Ws;

/// How long the last frames and the close handshake may take.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How a session ends.
pub(super) enum End {
    /// Send DISCONNECT with this reason (none for CLIENT_LEFT) and close.
    Disconnect(DisconnectReason),
    /// An ERROR is already queued; close with this code.
    AfterError(CloseCode),
    /// The socket is gone; only clean up.
    Gone,
}

/// Serves one WebSocket from upgrade to close.
pub(super) async fn run(node: &Arc<Node>, ws: Box<Ws>, mut shutdown: Shutdown) {
    let mut link = Link::new(ws, node.metrics().dormant.clone());
    // The one-off phases are boxed: a task's future is as large as its
    // largest state, and only the session loop should stay resident.
    let Some(mut session) = Box::pin(authenticate(node, &mut link, &mut shutdown)).await else {
        return;
    };
    let end = session.serve(&mut link).await;
    Box::pin(session.finish(link.ws(), end)).await;
}

/// Reads until the peer's close (or the socket ends), within a grace period.
pub(super) async fn await_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Sends what the WebSocket layer still holds: after the peer's close
/// frame, the layer's answer to it (a broken socket fails at once, a peer
/// that reads nothing is given up on).
pub(super) async fn answer_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
}

fn close_frame(code: CloseCode) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: WsCloseCode::from(code.0),
        reason: "".into(),
    }))
}

/// Sends `frames`, then a close frame, then waits for the peer's close;
/// true when every frame and the close frame were written.
pub(super) async fn send_and_close(
    ws: &mut Ws,
    frames: Vec<Bytes>,
    code: CloseCode,
    node: &Node,
) -> bool {
    let written = tokio::time::timeout(CLOSE_GRACE, async {
        for frame in frames {
            node.metrics().frame_sent(frame[1]);
            if ws.feed(WsMessage::Binary(frame)).await.is_err() {
                return false;
            }
        }
        if ws.send(close_frame(code)).await.is_err() {
            return false;
        }
        await_close(ws).await;
        true
    })
    .await;
    written.unwrap_or(false)
}
