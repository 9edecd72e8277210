//! The TCP stream under every WebSocket, counting the bytes it hands to its
//! reader. During the opening handshake it also hands out no byte past the
//! end of the HTTP request (it looks first, then takes only the request),
//! so frames a client sends before the 101 stay in the socket for the
//! WebSocket layer and the count at the end of the handshake is exactly the
//! request. A session compares this count with the bytes of the messages it
//! was given to know when the WebSocket layer holds nothing unread
//! (`session/link.rs`). It owns no buffer.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that counts what it reads.
#[derive(Debug)]
pub(crate) struct CountedStream {
    tcp: TcpStream,
    /// Bytes handed to the reader so far.
    read: u64,
    /// The last read found the socket empty (it returned `Pending`), so the
    /// runtime's read readiness is clear.
    drained: bool,
    /// Set during the handshake: where the scan for the request's end is.
    request: Option<RequestEnd>,
}

impl CountedStream {
    /// Wraps a freshly accepted stream, in its handshake.
    pub(crate) fn new(tcp: TcpStream) -> CountedStream {
        CountedStream {
            tcp,
            read: 0,
            drained: false,
            request: Some(RequestEnd::default()),
        }
    }

    /// Ends the handshake: reads are no longer cut at a request's end.
    pub(crate) fn end_handshake(&mut self) {
        self.request = None;
    }

    /// Bytes handed to the reader so far (the request's included).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Whether the last read found nothing to read.
    pub(crate) fn drained(&self) -> bool {
        self.drained
    }

    /// Resolves when the socket may be read (or has failed). Registers the
    /// task for the wake-up while it is not.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_read_ready(cx)
    }

    /// Reads at most up to the end of the request: peek, find the end, then
    /// take exactly that much.
    fn poll_read_request(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        loop {
            let peeked = ready!(self.tcp.poll_peek(cx, buf))?;
            if peeked == 0 {
                return Poll::Ready(Ok(()));
            }
            let scan = self.request.unwrap_or_default();
            let take = scan.within(&buf.filled()[before..]).unwrap_or(peeked);
            buf.set_filled(before);
            let into = buf.initialize_unfilled_to(take);
            match self.tcp.try_read(into) {
                Ok(got) => {
                    if let Some(request) = self.request.as_mut() {
                        request.feed(&into[..got]);
                    }
                    buf.advance(got);
                    return Poll::Ready(Ok(()));
                }
                // The peeked bytes are the socket's until read, so this is
                // only the readiness being stale: peek again (it registers
                // the wake-up).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = if this.request.is_some() {
            this.poll_read_request(cx, buf)
        } else {
            Pin::new(&mut this.tcp).poll_read(cx, buf)
        };
        this.drained = polled.is_pending();
        if let Poll::Ready(Ok(())) = polled {
            this.read += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The scan for the end of an HTTP request head: an empty line, where a
/// line ends with CRLF or a bare LF (the parser the handshake uses accepts
/// both), i.e. right after `\n\n` or `\n\r\n`. The first such place is
/// never after the parser's own end, so a read cut there never takes a
/// byte the parser would leave over; if the parser wants more (a request
/// that opens with empty lines), the next read runs to the next end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RequestEnd {
    /// 0: nothing; 1: after `\n`; 2: after `\n\r`.
    state: u8,
}

impl RequestEnd {
    fn step(self, byte: u8) -> (RequestEnd, bool) {
        match (self.state, byte) {
            (1 | 2, b'\n') => (RequestEnd { state: 0 }, true),
            (_, b'\n') => (RequestEnd { state: 1 }, false),
            (1, b'\r') => (RequestEnd { state: 2 }, false),
            _ => (RequestEnd { state: 0 }, false),
        }
    }

    /// How many of `bytes` belong to the request, if it ends within them.
    fn within(self, bytes: &[u8]) -> Option<usize> {
        let mut scan = self;
        for (i, &byte) in bytes.iter().enumerate() {
            let (next, ended) = scan.step(byte);
            if ended {
                return Some(i + 1);
            }
            scan = next;
        }
        None
    }

    /// Moves the scan past `bytes` (which end at or before an end).
    fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            *self = self.step(byte).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn the_request_ends_at_the_first_empty_line() {
        let end = RequestEnd::default();
        assert_eq!(
            end.within(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x82\x80"),
            Some(27)
        );
        assert_eq!(end.within(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(end.within(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(end.within(b"a\r\r\nb"), None, "a CR alone is no line end");
    }

    proptest! {
        /// However the bytes are split across reads, the scan stops at the
        /// same place as one pass over all of them.
        #[test]
        fn the_scan_does_not_depend_on_how_bytes_arrive(
            head in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b':')], 0..64),
            cut in 0usize..64,
        ) {
            let whole = RequestEnd::default().within(&head);
            let cut = cut.min(head.len());
            let mut scan = RequestEnd::default();
            let found = match scan.within(&head[..cut]) {
                Some(n) => Some(n),
                None => {
                    scan.feed(&head[..cut]);
                    scan.within(&head[cut..]).map(|n| cut + n)
                }
            };
            prop_assert_eq!(found, whole);
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_handshake_read_stops_at_the_request_and_counts_every_byte() {
        let (mut client, server) = pair().await;
        let mut stream = CountedStream::new(server);
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let frame = b"\x82\x85abcdhello";
        let mut sent = request.to_vec();
        sent.extend_from_slice(frame);
        client.write_all(&sent).await.unwrap();

        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], request, "nothing past the request");
        assert_eq!(stream.bytes_read(), request.len() as u64);

        stream.end_handshake();
        let mut rest = Vec::new();
        while rest.len() < frame.len() {
            let n = stream.read(&mut buf).await.unwrap();
            rest.extend_from_slice(&buf[..n]);
        }
        assert_eq!(rest, frame, "the frame stayed in the socket");
        assert_eq!(stream.bytes_read(), sent.len() as u64);
    }

    #[tokio::test]
    async fn a_request_in_tiny_pieces_is_read_whole_and_no_further() {
        let (mut client, server) = pair().await;
        let mut stream = CountedStream::new(server);
        let request = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for piece in request.chunks(3) {
            client.write_all(piece).await.unwrap();
            client.flush().await.unwrap();
            let want = got.len() + piece.len();
            while got.len() < want {
                let n = stream.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
        }
        client.write_all(b"after").await.unwrap();
        assert_eq!(got, request);
        assert_eq!(stream.bytes_read(), request.len() as u64);
        // Still in the handshake: the next read runs to the next end only.
        client.write_all(b"\r\n\r\nmore").await.unwrap();
        let mut tail = Vec::new();
        while !tail.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            tail.extend_from_slice(&buf[..n]);
        }
        assert_eq!(tail, b"after\r\n\r\n");
    }

    #[tokio::test]
    async fn an_empty_socket_is_reported_drained() {
        let (mut client, server) = pair().await;
        let mut stream = CountedStream::new(server);
        stream.end_handshake();
        client.write_all(b"xy").await.unwrap();
        let mut buf = [0u8; 8];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(!stream.drained());
        let again = futures_util::FutureExt::now_or_never(stream.read(&mut buf[n..]));
        assert!(again.is_none(), "nothing more to read");
        assert!(stream.drained());
        assert_eq!(stream.bytes_read(), 2);
    }
}
