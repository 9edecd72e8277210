//! A session's socket, holding the WebSocket layer only while bytes are in
//! flight. The layer keeps a read buffer (2 KiB), a write buffer, and two
//! waker cells for the connection's life and cannot release them; an idle
//! signaling client has nothing in any of them. So once the socket is quiet
//! the link drops the layer and keeps only the TCP stream (it is *dormant*),
//! waits for the socket to become readable, and rebuilds the layer when it
//! does or when there is something to write.
//!
//! Quiet means: the layer holds no unread byte and nothing unwritten.
//! Unread: the stream counts every byte the layer read, the link counts a
//! lower bound of the wire bytes of every message the layer returned
//! (`wire.rs`), starting from the handshake's exact count; when the two
//! agree the layer's buffer is empty. Because the bound is never above the
//! truth, a wrong count can only keep a link awake (a fragmented message
//! or an unusual length encoding keeps that connection awake for good),
//! never lose a byte. Unwritten: a flush that completes at once (a queued
//! pong, a partial write). The link rests only where the session says it
//! may: in the loop of an authenticated, open session.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{FutureExt, Sink, Stream};
use prometheus_client::metrics::gauge::Gauge;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::wire::wire_len;
use crate::server::counted::CountedStream;
use crate::server::listener::websocket_config;

/// The WebSocket layer over a counted stream.
pub(crate) type Ws = WebSocketStream<CountedStream>;

/// What the layer yields per read.
pub(super) type Read = Option<Result<WsMessage, WsError>>;

/// A session's socket, awake (the WebSocket layer, boxed) or dormant (the
/// stream alone).
pub(super) struct Link {
    state: State,
    /// The handshake's bytes plus the lower bound of every message's.
    taken: u64,
    /// Dormant links on this node (this one counted while dormant).
    dormant: Gauge,
}

enum State {
    Awake(Box<Ws>),
    Dormant(CountedStream),
    /// Only inside [`Link::wake`] and [`Link::rest`], between taking one
    /// form apart and building the other.
    Moving,
}

/// Whether a read may leave the link dormant when the socket goes quiet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Rest {
    /// Keep the layer (before CONNECT).
    Never,
    /// Drop the layer whenever the socket is quiet.
    WhenQuiet,
}

impl Link {
    /// Takes over a WebSocket right after its handshake; `dormant` counts
    /// the dormant links.
    pub(super) fn new(ws: Box<Ws>, dormant: Gauge) -> Link {
        // The stream cut its reads at the request's end (and the library
        // refuses bytes after a request): the layer's buffer starts empty,
        // and everything read so far is the request.
        let taken = ws.get_ref().bytes_read();
        Link {
            state: State::Awake(ws),
            taken,
            dormant,
        }
    }

    /// The WebSocket layer, rebuilt first if the link is dormant.
    pub(super) fn ws(&mut self) -> &mut Ws {
        self.wake();
        match &mut self.state {
            State::Awake(ws) => ws,
            // `wake` leaves the link awake on every path.
            State::Dormant(_) | State::Moving => unreachable!("the link was just woken"),
        }
    }

    /// Whether the WebSocket layer is in memory.
    #[cfg(test)]
    pub(super) fn is_awake(&self) -> bool {
        matches!(self.state, State::Awake(_))
    }

    /// The next message. Cancel-safe: a dormant link only waits for
    /// readiness, an awake one keeps partial frames in its buffer.
    pub(super) async fn next(&mut self, rest: Rest) -> Read {
        poll_fn(|cx| self.poll_next(cx, rest)).await
    }

    /// After a batch was written and flushed: goes dormant if nothing is
    /// unread and the last read found the socket empty (so its readiness
    /// is clear and waiting on it costs nothing). Reads nothing itself: a
    /// batch costs no extra system call.
    pub(super) fn rest_if_quiet(&mut self) -> bool {
        let State::Awake(ws) = &self.state else {
            return false;
        };
        let stream = ws.get_ref();
        if stream.drained() && stream.bytes_read() == self.taken {
            self.rest();
            return true;
        }
        false
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, rest: Rest) -> Poll<Read> {
        loop {
            match &mut self.state {
                State::Dormant(stream) => {
                    // An error wakes the layer too, which then reports it.
                    let _ = std::task::ready!(stream.poll_read_ready(cx));
                    self.wake();
                }
                State::Awake(ws) => {
                    let polled = Pin::new(&mut **ws).poll_next(cx);
                    if let Poll::Ready(read) = polled {
                        if let Some(Ok(message)) = &read {
                            self.taken += wire_len(message);
                        }
                        return Poll::Ready(read);
                    }
                    // Pending: the socket is empty. Rest if the layer holds
                    // nothing unread and its flush completes now.
                    let quiet = ws.get_ref().bytes_read() == self.taken;
                    if rest == Rest::Never
                        || !quiet
                        || !matches!(Pin::new(&mut **ws).poll_flush(cx), Poll::Ready(Ok(())))
                    {
                        return Poll::Pending;
                    }
                    self.rest();
                    // Dormant: the next turn registers for readiness.
                }
                State::Moving => return Poll::Ready(None),
            }
        }
    }

    /// Drops the layer, keeping the stream.
    fn rest(&mut self) {
        if let State::Awake(_) = self.state {
            if let State::Awake(ws) = std::mem::replace(&mut self.state, State::Moving) {
                self.state = State::Dormant(ws.into_inner());
                self.dormant.inc();
            }
        }
    }

    /// Rebuilds the layer around the stream, if dormant.
    fn wake(&mut self) {
        if let State::Dormant(_) = self.state {
            if let State::Dormant(stream) = std::mem::replace(&mut self.state, State::Moving) {
                self.state = State::Awake(Box::new(rebuild(stream)));
                self.dormant.dec();
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let State::Dormant(_) = self.state {
            self.dormant.dec();
        }
    }
}

/// A fresh WebSocket layer (the connection is past its handshake).
fn rebuild(stream: CountedStream) -> Ws {
    WebSocketStream::from_raw_socket(stream, Role::Server, Some(websocket_config()))
        .now_or_never()
        // tokio-tungstenite wraps a raw socket in a future that is ready on
        // its first poll (`without_handshake`); the link tests pin that.
        .expect("wrapping a raw socket completes at once")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    type Client = WebSocketStream<TcpStream>;

    /// A real client and the server side's link, past the handshake.
    async fn connected() -> (Client, Link) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async_with_config(
                CountedStream::new(tcp),
                Some(websocket_config()),
            )
            .await
            .unwrap();
            ws.get_mut().end_handshake();
            ws
        };
        let client = async {
            let tcp = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            tokio_tungstenite::client_async(url, tcp).await.unwrap().0
        };
        let (client, server) = tokio::join!(client, server);
        (client, Link::new(Box::new(server), Gauge::default()))
    }

    /// Reads with resting allowed until the link goes dormant (bounded).
    async fn until_dormant(link: &mut Link) {
        for _ in 0..100 {
            let poll = futures_util::poll!(std::pin::pin!(link.next(Rest::WhenQuiet)));
            assert!(poll.is_pending(), "no message expected, got {poll:?}");
            if !link.is_awake() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the link never went dormant");
    }

    #[test]
    fn a_raw_socket_is_wrapped_on_the_first_poll() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_client, mut link) = connected().await;
            link.rest();
            assert!(!link.is_awake());
            let _ = link.ws();
            assert!(link.is_awake());
        });
    }

    #[tokio::test]
    async fn a_quiet_link_rests_and_wakes_for_the_next_message() {
        let (mut client, mut link) = connected().await;
        until_dormant(&mut link).await;
        client
            .send(WsMessage::Binary(Bytes::from_static(b"hello")))
            .await
            .unwrap();
        let read = link.next(Rest::WhenQuiet).await;
        assert!(matches!(read, Some(Ok(WsMessage::Binary(b))) if b == "hello"));
        until_dormant(&mut link).await;
        // Writing wakes it; the write was flushed and nothing is unread.
        link.ws()
            .send(WsMessage::Binary(Bytes::from_static(b"back")))
            .await
            .unwrap();
        assert!(link.rest_if_quiet());
        let got = client.next().await.unwrap().unwrap();
        assert_eq!(got, WsMessage::Binary(Bytes::from_static(b"back")));
    }

    #[tokio::test]
    async fn a_link_never_rests_with_bytes_left_unread() {
        let (mut client, mut link) = connected().await;
        // Two messages in one write: after the first, the second is in the
        // layer's buffer, and the link must stay awake for it.
        client
            .feed(WsMessage::Binary(Bytes::from_static(b"one")))
            .await
            .unwrap();
        client
            .feed(WsMessage::Binary(Bytes::from_static(b"two")))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let first = link.next(Rest::WhenQuiet).await;
        assert!(matches!(first, Some(Ok(WsMessage::Binary(b))) if b == "one"));
        assert!(!link.rest_if_quiet(), "the second message is buffered");
        assert!(link.is_awake());
        let second = link.next(Rest::WhenQuiet).await;
        assert!(matches!(second, Some(Ok(WsMessage::Binary(b))) if b == "two"));
    }

    #[tokio::test]
    async fn a_never_resting_read_keeps_the_layer() {
        let (_client, mut link) = connected().await;
        let poll = futures_util::poll!(std::pin::pin!(link.next(Rest::Never)));
        assert!(poll.is_pending());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let poll = futures_util::poll!(std::pin::pin!(link.next(Rest::Never)));
        assert!(poll.is_pending());
        assert!(link.is_awake());
    }
}
