//! How many bytes a message the WebSocket layer returned took on the wire,
//! as a lower bound: the length of one masked client frame carrying its
//! payload with the shortest length encoding. The true length is never
//! smaller: a fragmented message repeats the header per fragment, a longer
//! length encoding adds bytes, and a close frame whose code the layer
//! replaced is counted as an empty one. A session that sums this bound can
//! therefore only believe more bytes are still unread than really are,
//! never fewer (see `link.rs`).

use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Header bytes of a masked frame with `payload` bytes: two, the extended
/// length (none below 126, 2 bytes up to 65,535, else 8), the 4-byte mask.
fn header_len(payload: usize) -> u64 {
    let extended = match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    2 + extended + 4
}

/// The fewest bytes `message` can have taken as a client's frames.
pub(super) fn wire_len(message: &WsMessage) -> u64 {
    let payload = match message {
        WsMessage::Text(text) => text.len(),
        WsMessage::Binary(bytes) | WsMessage::Ping(bytes) | WsMessage::Pong(bytes) => bytes.len(),
        // The layer may have replaced a disallowed code and its reason.
        WsMessage::Close(_) => 0,
        // Only ever written, never read; the frame knows its own length.
        WsMessage::Frame(frame) => return frame.len() as u64,
    };
    header_len(payload) + payload as u64
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor, Read, Write};

    use bytes::Bytes;
    use proptest::prelude::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};

    use super::*;

    /// The payload sizes around every length-encoding boundary.
    fn sizes() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..=130,
            65_530usize..=65_541,
            Just(1 << 16),
            (1usize << 16)..(1 << 18),
        ]
    }

    fn masked(frame: Frame, mask: [u8; 4]) -> Frame {
        let mut frame = frame;
        frame.header_mut().mask = Some(mask);
        frame
    }

    /// A message as a client sends it: one masked frame, encoded by the
    /// WebSocket library.
    fn encoded(frame: Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.format(&mut out).expect("a frame encodes into a Vec");
        out
    }

    /// Reads as a server every message in `wire`, returning each with the
    /// bytes the library had read from the stream when it returned it.
    fn read_all(wire: Vec<u8>) -> Vec<WsMessage> {
        struct Stream(Cursor<Vec<u8>>);
        impl Read for Stream {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n => Ok(n),
                }
            }
        }
        impl Write for Stream {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut ws = WebSocket::from_raw_socket(Stream(Cursor::new(wire)), Role::Server, None);
        let mut messages = Vec::new();
        while let Ok(message) = ws.read() {
            messages.push(message);
        }
        messages
    }

    proptest! {
        #[test]
        fn a_single_masked_frame_is_counted_exactly(
            size in sizes(),
            mask in any::<[u8; 4]>(),
            kind in 0u8..4,
        ) {
            let payload = Bytes::from(vec![b'a'; size]);
            let (frame, message) = match kind {
                0 => (Frame::message(payload.clone(), OpCode::Data(Data::Binary), true),
                      WsMessage::Binary(payload)),
                1 => (Frame::message(payload.clone(), OpCode::Data(Data::Text), true),
                      WsMessage::Text(String::from_utf8(payload.to_vec()).expect("ascii").into())),
                2 => {
                    let small = payload.slice(..size.min(125));
                    (Frame::ping(small.clone()), WsMessage::Ping(small))
                }
                _ => {
                    let small = payload.slice(..size.min(125));
                    (Frame::pong(small.clone()), WsMessage::Pong(small))
                }
            };
            let frame = masked(frame, mask);
            prop_assert_eq!(wire_len(&message), frame.len() as u64);
            prop_assert_eq!(wire_len(&message), encoded(frame).len() as u64);
        }

        /// What a server really reads for a sequence of messages is at least
        /// their sum, and equal when every message is one minimal frame.
        #[test]
        fn the_sum_never_exceeds_what_the_server_read(
            messages in proptest::collection::vec((sizes(), 1usize..4, any::<bool>()), 1..6),
            mask in any::<[u8; 4]>(),
        ) {
            let mut wire = Vec::new();
            let mut exact = true;
            for (size, fragments, long_length) in &messages {
                let payload = vec![b'x'; *size];
                let pieces: Vec<&[u8]> = if *fragments == 1 || *size < *fragments {
                    vec![&payload[..]]
                } else {
                    payload.chunks(size.div_ceil(*fragments)).collect()
                };
                exact &= pieces.len() == 1;
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { Data::Binary } else { Data::Continue };
                    let fin = i + 1 == pieces.len();
                    let frame = masked(
                        Frame::message(Bytes::copy_from_slice(piece), OpCode::Data(opcode), fin),
                        mask,
                    );
                    let mut bytes = encoded(frame);
                    if *long_length && piece.len() < 126 {
                        // The same frame with a 16-bit length: valid, longer.
                        let mut long = vec![bytes[0], (bytes[1] & 0x80) | 126];
                        long.extend_from_slice(&(piece.len() as u16).to_be_bytes());
                        long.extend_from_slice(&bytes[2..]);
                        bytes = long;
                        exact = false;
                    }
                    wire.extend_from_slice(&bytes);
                }
            }
            let read = read_all(wire.clone());
            prop_assert_eq!(read.len(), messages.len());
            let counted: u64 = read.iter().map(wire_len).sum();
            prop_assert!(counted <= wire.len() as u64);
            if exact {
                prop_assert_eq!(counted, wire.len() as u64);
            }
        }
    }

    #[test]
    fn a_replaced_close_is_counted_as_an_empty_one() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        // Close code 1005 may not be sent: the library reports a protocol
        // close with its own, longer reason.
        let close = CloseFrame {
            code: CloseCode::from(1005),
            reason: "x".into(),
        };
        let wire = encoded(masked(Frame::close(Some(close)), [1, 2, 3, 4]));
        let read = read_all(wire.clone());
        let [WsMessage::Close(Some(reported))] = read.as_slice() else {
            panic!("expected one close, got {read:?}");
        };
        assert!(reported.reason.len() > 1, "the reason was replaced");
        assert!(wire_len(&read[0]) <= wire.len() as u64);
    }
}
