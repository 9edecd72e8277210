//! A session's socket, holding the WebSocket layer only while the
//! connection is busy. The layer keeps a read buffer (2 KiB), a write
//! buffer, and two waker cells for the connection's life and cannot release
//! them; an idle signaling client has nothing in any of them. So once the
//! socket has been quiet for [`REST_AFTER`], the link drops the layer and
//! keeps only the TCP stream (it is *dormant*), waits for the socket to
//! become readable, and rebuilds the layer when it does or when there is
//! something to write. A connection that talks more often than that keeps
//! its layer: rebuilding costs a few allocations, which a busy connection
//! should not pay per message.
//!
//! Quiet means: the layer holds no unread byte and nothing unwritten.
//! Unread: the stream counts every byte the layer read, the link counts a
//! lower bound of the wire bytes of every message the layer returned
//! (`wire.rs`), starting from the handshake's exact count; when the two
//! agree the layer's buffer is empty. Because the bound is never above the
//! truth, a wrong count can only keep a link awake (a fragmented message
//! or an unusual length encoding keeps that connection awake for good),
//! never lose a byte. Unwritten: a flush that completes at once (a queued
//! pong, a partial write). The link rests only when the session asks: in
//! the loop of an authenticated, open session.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{FutureExt, Sink, Stream};
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;
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

/// What a read of the link yields.
pub(super) enum Polled {
    /// What the layer yielded.
    Read(Read),
    /// The socket became readable and the link woke, but no whole message
    /// is there yet: the caller's loop turns once, so its rest timer counts
    /// from now.
    Woken,
}

/// How long a link stays awake after its last message in or out.
pub(super) const REST_AFTER: Duration = Duration::from_millis(250);

/// A session's socket, awake (the WebSocket layer, boxed) or dormant (the
/// stream alone).
pub(super) struct Link {
    state: State,
    /// The handshake's bytes plus the lower bound of every message's.
    taken: u64,
    /// Dormant links on this node (this one counted while dormant).
    dormant: Gauge,
    /// When the layer last returned a message or was handed out to write.
    active_at: Instant,
}

enum State {
    Awake(Box<Ws>),
    Dormant(CountedStream),
    /// Only inside [`Link::wake`] and [`Link::rest`], between taking one
    /// form apart and building the other.
    Moving,
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
            active_at: Instant::now(),
        }
    }

    /// The WebSocket layer, rebuilt first if the link is dormant.
    pub(super) fn ws(&mut self) -> &mut Ws {
        self.wake();
        self.active_at = Instant::now();
        match &mut self.state {
            State::Awake(ws) => ws,
            // `wake` leaves the link awake on every path.
            State::Dormant(_) | State::Moving => unreachable!("the link was just woken"),
        }
    }

    /// When the layer last returned a message or was handed out to write:
    /// right after [`Link::next`] returned a message, the moment it was
    /// read (one clock read per message, shared with the session).
    pub(super) fn active_at(&self) -> Instant {
        self.active_at
    }

    /// Whether the WebSocket layer is in memory.
    #[cfg(test)]
    pub(super) fn is_awake(&self) -> bool {
        matches!(self.state, State::Awake(_))
    }

    /// The next message, or [`Polled::Woken`]. Cancel-safe: a dormant
    /// link only waits for readiness, an awake one keeps partial frames in
    /// its buffer.
    pub(super) async fn next(&mut self) -> Polled {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// When the link should try to rest ([`Link::rest_if_quiet`]): while
    /// awake, [`REST_AFTER`] after its last message in or out.
    pub(super) fn rest_due(&self) -> Option<Instant> {
        matches!(self.state, State::Awake(_)).then(|| self.active_at + REST_AFTER)
    }

    /// Goes dormant if the layer holds nothing unread, the last read found
    /// the socket empty (so its readiness is clear and waiting on it costs
    /// nothing) and a flush completes now; else tries again [`REST_AFTER`]
    /// later. Reads nothing itself. True when the link is dormant after.
    pub(super) async fn rest_if_quiet(&mut self) -> bool {
        poll_fn(|cx| Poll::Ready(self.try_rest(cx))).await
    }

    fn try_rest(&mut self, cx: &mut Context<'_>) -> bool {
        let State::Awake(ws) = &mut self.state else {
            return true;
        };
        let stream = ws.get_ref();
        let quiet = stream.drained() && stream.bytes_read() == self.taken;
        if quiet && matches!(Pin::new(&mut **ws).poll_flush(cx), Poll::Ready(Ok(()))) {
            self.rest();
            return true;
        }
        self.active_at = Instant::now();
        false
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Polled> {
        let woken = match &mut self.state {
            State::Dormant(stream) => {
                // An error wakes the layer too, which then reports it.
                let _ = std::task::ready!(stream.poll_read_ready(cx));
                self.wake();
                true
            }
            State::Awake(_) | State::Moving => false,
        };
        let State::Awake(ws) = &mut self.state else {
            return Poll::Ready(Polled::Read(None));
        };
        match Pin::new(&mut **ws).poll_next(cx) {
            Poll::Ready(read) => {
                if let Some(Ok(message)) = &read {
                    self.taken += wire_len(message);
                    self.active_at = Instant::now();
                }
                Poll::Ready(Polled::Read(read))
            }
            Poll::Pending if woken => Poll::Ready(Polled::Woken),
            Poll::Pending => Poll::Pending,
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
                self.active_at = Instant::now();
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

    /// Polls for a message once, expecting none (the socket is empty).
    async fn nothing_to_read(link: &mut Link) {
        let poll = futures_util::poll!(std::pin::pin!(link.next()));
        assert!(
            matches!(poll, Poll::Pending | Poll::Ready(Polled::Woken)),
            "no message expected"
        );
    }

    /// The next thing the layer yields, past wake-ups.
    async fn message(link: &mut Link) -> Read {
        loop {
            if let Polled::Read(read) = link.next().await {
                return read;
            }
        }
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
        assert!(link.rest_due().is_some());
        nothing_to_read(&mut link).await;
        assert!(link.rest_if_quiet().await);
        assert_eq!(link.rest_due(), None, "a dormant link has nothing due");
        client
            .send(WsMessage::Binary(Bytes::from_static(b"hello")))
            .await
            .unwrap();
        let read = message(&mut link).await;
        assert!(matches!(read, Some(Ok(WsMessage::Binary(b))) if b == "hello"));
        assert!(link.is_awake());
        nothing_to_read(&mut link).await;
        assert!(link.rest_if_quiet().await);
        // Writing wakes it; once flushed, nothing holds it awake.
        link.ws()
            .send(WsMessage::Binary(Bytes::from_static(b"back")))
            .await
            .unwrap();
        assert!(link.rest_if_quiet().await);
        let got = client.next().await.unwrap().unwrap();
        assert_eq!(got, WsMessage::Binary(Bytes::from_static(b"back")));
    }

    #[tokio::test]
    async fn a_link_never_rests_with_bytes_left_unread() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut link) = connected().await;
        // Half a frame: the layer reads it, finds the socket empty, and
        // must keep the half it holds.
        let mut frame = vec![0x82, 0x85, 1, 2, 3, 4];
        frame.extend(
            b"hello"
                .iter()
                .zip([1u8, 2, 3, 4].iter().cycle())
                .map(|(b, m)| b ^ m),
        );
        client.get_mut().write_all(&frame[..7]).await.unwrap();
        let before = link.taken;
        for _ in 0..500 {
            nothing_to_read(&mut link).await;
            if link.ws().get_ref().bytes_read() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let before = Instant::now();
        assert!(!link.rest_if_quiet().await, "half a frame is buffered");
        assert!(link.is_awake());
        let due = link.rest_due().expect("awake");
        assert!(
            due >= before + REST_AFTER,
            "the next try is later, not at once"
        );
        client.get_mut().write_all(&frame[7..]).await.unwrap();
        let read = message(&mut link).await;
        assert!(matches!(read, Some(Ok(WsMessage::Binary(b))) if b == "hello"));
        nothing_to_read(&mut link).await;
        assert!(link.rest_if_quiet().await, "whole again");
    }

    #[tokio::test]
    async fn a_wake_without_a_whole_message_is_reported() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut link) = connected().await;
        nothing_to_read(&mut link).await;
        assert!(link.rest_if_quiet().await);
        // Two bytes of a header: readable, but nothing to return yet.
        let before = Instant::now();
        client.get_mut().write_all(&[0x82, 0x85]).await.unwrap();
        assert!(matches!(link.next().await, Polled::Woken));
        assert!(link.is_awake());
        let due = link.rest_due().expect("awake");
        assert!(
            due >= before + REST_AFTER,
            "the rest timer counts from the wake"
        );
    }

    #[tokio::test]
    async fn reading_alone_never_rests() {
        let (_client, mut link) = connected().await;
        nothing_to_read(&mut link).await;
        tokio::time::sleep(REST_AFTER + Duration::from_millis(20)).await;
        nothing_to_read(&mut link).await;
        assert!(link.is_awake());
    }
}
