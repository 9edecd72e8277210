//! Idle sessions drop their WebSocket state and keep only the socket (the
//! link is dormant). Everything a client can do must work the same whether
//! it meets a dormant or an awake link: frames split across writes and
//! pauses, several frames in one write, pings, large signals, deliveries to
//! an idle receiver, heartbeats, the idle timeout, both ways of closing,
//! frames sent before the handshake's answer, fragmented messages.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use signal_manager_service::protocol::{
    Message, MessageType, Payload, PayloadType, RawPayload, SignalPayload,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::support::*;
use crate::*;

/// One client frame as a browser sends it: masked, the shortest length.
fn client_frame(opcode: OpCode, payload: &[u8], fin: bool) -> Vec<u8> {
    let mut frame = Frame::message(
        Bytes::copy_from_slice(payload),
        OpCode::Data(Data::Binary),
        fin,
    );
    frame.header_mut().opcode = opcode;
    frame.header_mut().mask = Some([0x1f, 0x2e, 0x3d, 0x4c]);
    let mut out = Vec::new();
    frame.format(&mut out).expect("a frame encodes into a Vec");
    out
}

fn binary_frame(payload: &[u8]) -> Vec<u8> {
    client_frame(OpCode::Data(Data::Binary), payload, true)
}

/// A HEARTBEAT with `data` as its payload, and its bytes.
fn heartbeat(data: &[u8]) -> (Message, Bytes) {
    let hb = Message::new(
        MessageType::Heartbeat,
        Payload::Raw(RawPayload {
            payload_type: PayloadType::Binary,
            data: Bytes::copy_from_slice(data),
        }),
    );
    let bytes = hb.encode(JSON).expect("heartbeat encodes");
    (hb, bytes)
}

/// A WebSocket client whose socket the test can also write to directly.
struct Raw {
    ws: WebSocketStream<TcpStream>,
}

impl Raw {
    async fn open(node: &TestNode) -> Raw {
        let tcp = TcpStream::connect(node.url.trim_start_matches("ws://"))
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (ws, _) = tokio_tungstenite::client_async(node.url.as_str(), tcp)
            .await
            .expect("handshake");
        Raw { ws }
    }

    async fn login(node: &TestNode, client: (&str, &str)) -> Raw {
        let mut raw = Raw::open(node).await;
        let hello = connect(client.0, client.1);
        raw.send(&hello).await;
        let ack = raw.recv_message().await;
        assert_eq!(ack.message_type, MessageType::ConnectAck, "{ack:?}");
        raw
    }

    /// Writes bytes straight to the socket, past the client's WebSocket.
    async fn write_raw(&mut self, bytes: &[u8]) {
        let tcp = self.ws.get_mut();
        tcp.write_all(bytes).await.expect("raw write");
        tcp.flush().await.expect("raw flush");
    }

    async fn send(&mut self, message: &Message) {
        let bytes = message.encode(JSON).expect("encodes");
        self.ws.send(WsMessage::Binary(bytes)).await.expect("send");
    }

    async fn recv(&mut self) -> WsMessage {
        match tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await {
            Ok(Some(Ok(message))) => message,
            other => panic!("expected a WebSocket message, got {other:?}"),
        }
    }

    async fn recv_message(&mut self) -> Message {
        match self.recv().await {
            WsMessage::Binary(bytes) => Message::decode(bytes).expect("a protocol message"),
            other => panic!("expected a binary message, got {other:?}"),
        }
    }

    async fn recv_close(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                WsMessage::Close(frame) => return frame.map(|f| u16::from(f.code)),
                WsMessage::Binary(_) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    }
}

/// A gauge of the node's, by name.
async fn gauge(node: &TestNode, name: &str) -> i64 {
    let (_, body) = node.get("/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

async fn dormant(node: &TestNode) -> i64 {
    gauge(node, "signal_manager_dormant_connections").await
}

async fn until_dormant(node: &TestNode, n: i64) {
    eventually(
        &format!("{n} dormant connection(s)"),
        Duration::from_secs(10),
        || async move { dormant(node).await == n },
    )
    .await;
}

async fn expect_ack(raw: &mut Raw, hb: &Message) {
    let ack = raw.recv_message().await;
    assert_eq!(ack.message_type, MessageType::HeartbeatAck, "{ack:?}");
    assert_eq!(ack.message_id, hb.message_id);
    assert_eq!(ack.payload, hb.payload);
}

#[tokio::test]
async fn a_frame_in_tiny_writes_with_pauses_arrives_whole() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = Raw::login(&node, ALICE).await;
    let mut bob = Raw::login(&node, BOB).await;
    until_dormant(&node, 2).await;
    let (hb, bytes) = heartbeat(&[7u8; 300]);
    let frame = binary_frame(&bytes);
    // Header and mask split too; each pause is longer than a link waits
    // before it rests.
    let offer = offer_of(ALICE.0, "while alice is mid-frame".into());
    let mut rest = &frame[..];
    for (i, size) in [1, 1, 2, 3, 5, 20, 60, 100, usize::MAX]
        .into_iter()
        .enumerate()
    {
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        alice.write_raw(piece).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if i == 4 {
            // A delivery to alice now: her link writes it while it holds
            // part of her frame, and must not rest after the write.
            bob.send(&offer).await;
            assert_eq!(alice.recv_message().await.message_id, offer.message_id);
        }
    }
    assert!(rest.is_empty());
    expect_ack(&mut alice, &hb).await;
    until_dormant(&node, 2).await;
}

#[tokio::test]
async fn two_frames_in_one_write_are_both_answered() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = Raw::login(&node, ALICE).await;
    until_dormant(&node, 1).await;
    let (first, one) = heartbeat(b"one");
    let (second, two) = heartbeat(b"two");
    let mut both = binary_frame(&one);
    both.extend_from_slice(&binary_frame(&two));
    alice.write_raw(&both).await;
    expect_ack(&mut alice, &first).await;
    expect_ack(&mut alice, &second).await;
    until_dormant(&node, 1).await;
    let (third, three) = heartbeat(b"three");
    alice.write_raw(&binary_frame(&three)).await;
    expect_ack(&mut alice, &third).await;
}

#[tokio::test]
async fn a_ping_to_a_dormant_session_gets_its_pong() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = Raw::login(&node, ALICE).await;
    for round in 0..3u8 {
        until_dormant(&node, 1).await;
        let payload = [b'p', round];
        alice
            .write_raw(&client_frame(
                OpCode::Control(Control::Ping),
                &payload,
                true,
            ))
            .await;
        assert_eq!(
            alice.recv().await,
            WsMessage::Pong(Bytes::copy_from_slice(&payload))
        );
    }
    until_dormant(&node, 1).await;
    let (hb, bytes) = heartbeat(b"after pings");
    alice.write_raw(&binary_frame(&bytes)).await;
    expect_ack(&mut alice, &hb).await;
}

fn offer_of(target: &str, data: String) -> Message {
    Message::new(
        MessageType::SignalOffer,
        Payload::SignalOffer(SignalPayload {
            target_client_id: target.into(),
            signal_data: data,
        }),
    )
}

#[tokio::test]
async fn a_large_signal_after_a_long_idle_arrives_whole() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = Raw::login(&node, ALICE).await;
    let mut bob = Raw::login(&node, BOB).await;
    until_dormant(&node, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 60 KiB: thirty times the read buffer, far past it.
    let data: String = (0..60 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let offer = offer_of(BOB.0, data.clone());
    alice.send(&offer).await;
    let got = bob.recv_message().await;
    assert_eq!(got.message_id, offer.message_id);
    let Payload::SignalOffer(p) = got.payload else {
        panic!("expected an offer, got {got:?}")
    };
    assert_eq!(p.signal_data, data);
    until_dormant(&node, 2).await;
}

#[tokio::test]
async fn signals_reach_a_dormant_receiver_in_order() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = Raw::login(&node, ALICE).await;
    let mut bob = Raw::login(&node, BOB).await;
    for round in 0..3 {
        until_dormant(&node, 2).await;
        let sent: Vec<Message> = (0..10)
            .map(|i| offer_of(BOB.0, format!("round {round} signal {i}")))
            .collect();
        for offer in &sent {
            alice.send(offer).await;
        }
        for offer in &sent {
            assert_eq!(bob.recv_message().await.message_id, offer.message_id);
        }
    }
}

#[tokio::test]
async fn heartbeats_keep_a_dormant_session_alive_and_silence_ends_it() {
    let mut settings = test_settings();
    settings.server.heartbeat_interval = 1;
    let node = TestNode::start(settings).await;
    let mut alice = Raw::login(&node, ALICE).await;
    // Eight heartbeats over four seconds, past the 3 s idle timeout, each
    // sent to a dormant link.
    for i in 0..8u8 {
        until_dormant(&node, 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (hb, bytes) = heartbeat(&[i]);
        alice.write_raw(&binary_frame(&bytes)).await;
        expect_ack(&mut alice, &hb).await;
    }
    // Then silence: the idle timeout reaches the dormant link.
    until_dormant(&node, 1).await;
    let bye = alice.recv_message().await;
    assert_disconnect(&bye, "IDLE_TIMEOUT");
    assert_eq!(alice.recv_close().await, Some(1000));
    until_dormant(&node, 0).await;
}

#[tokio::test]
async fn a_dormant_session_closes_on_disconnect_and_on_a_close_frame() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = Raw::login(&node, ALICE).await;
    let mut bob = Raw::login(&node, BOB).await;
    until_dormant(&node, 2).await;

    // DISCONNECT: the server closes with 1000.
    alice
        .send(&Message::new(MessageType::Disconnect, Payload::empty()))
        .await;
    assert_eq!(alice.recv_close().await, Some(1000));
    eventually("alice's session ended", Duration::from_secs(10), || async {
        node.node.session_count() == 1
    })
    .await;

    // A WebSocket close frame: answered, and the connection ends (the
    // session stays resumable: no DISCONNECT was sent).
    bob.ws.close(None).await.expect("close sent");
    assert_eq!(
        bob.recv_close().await,
        None,
        "the close is answered (no code)"
    );
    eventually(
        "both connections closed",
        Duration::from_secs(10),
        || async { gauge(&node, "signal_manager_connections").await == 0 },
    )
    .await;
    until_dormant(&node, 0).await;
}

#[tokio::test]
async fn a_frame_sent_before_the_handshake_answer_is_read() {
    let node = TestNode::start(test_settings()).await;
    let mut tcp = TcpStream::connect(node.url.trim_start_matches("ws://"))
        .await
        .expect("connect");
    let hello = connect(ALICE.0, ALICE.1);
    let mut eager = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    eager.extend_from_slice(&binary_frame(&hello.encode(JSON).expect("encodes")));
    // The request and CONNECT in one write, before any answer.
    tcp.write_all(&eager).await.expect("write");

    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("answer in time")
            .expect("read");
        assert_eq!(n, 1, "the server closed during the handshake: {head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut alice = Raw {
        ws: WebSocketStream::from_raw_socket(tcp, Role::Client, None).await,
    };
    let ack = alice.recv_message().await;
    assert_eq!(ack.message_type, MessageType::ConnectAck);
    assert_eq!(ack.message_id, hello.message_id);
}

#[tokio::test]
async fn fragments_and_long_lengths_keep_working() {
    let node = TestNode::start(test_settings()).await;
    let mut alice = Raw::login(&node, ALICE).await;
    let mut bob = Raw::login(&node, BOB).await;
    until_dormant(&node, 2).await;

    // A heartbeat in two fragments, with a pause between them.
    let (hb, bytes) = heartbeat(b"in two pieces");
    let (head, tail) = bytes.split_at(10);
    alice
        .write_raw(&client_frame(OpCode::Data(Data::Binary), head, false))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice
        .write_raw(&client_frame(OpCode::Data(Data::Continue), tail, true))
        .await;
    expect_ack(&mut alice, &hb).await;

    // A heartbeat whose length (below 126) is written in 16 bits.
    let (hb, bytes) = heartbeat(b"long length");
    let short = binary_frame(&bytes);
    let mut long = vec![short[0], 0x80 | 126];
    long.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    long.extend_from_slice(&short[2..]);
    alice.write_raw(&long).await;
    expect_ack(&mut alice, &hb).await;

    // The session goes on: frames either way.
    let (hb, bytes) = heartbeat(b"plain");
    alice.write_raw(&binary_frame(&bytes)).await;
    expect_ack(&mut alice, &hb).await;
    let offer = offer_of(ALICE.0, "to alice".into());
    bob.send(&offer).await;
    assert_eq!(alice.recv_message().await.message_id, offer.message_id);
}
