//! Just enough of the wire format to route: the 21-byte header (start byte
//! 0xA5, message type, 16-byte id, payload type, big-endian payload length),
//! the JSON payload's `target_client_id`, and the two frames the floor
//! writes itself (CONNECT_ACK, and a signal with its source stamped in).
//! No validation beyond what routing needs: the floor trusts its clients.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

const START_BYTE: u8 = 0xA5;
const HEADER_LEN: usize = 21;
/// Message types the floor reads or writes.
pub const CONNECT: u8 = 0x01;
const CONNECT_ACK: u8 = 0x02;
const SIGNAL_OFFER: u8 = 0x10;
const SIGNAL_ICE_CANDIDATE: u8 = 0x12;
const PAYLOAD_JSON: u8 = 0x02;

/// A frame's header fields the floor uses; `payload` borrows the message.
pub struct Header<'a> {
    pub message_type: u8,
    pub id: &'a [u8],
    pub payload: &'a [u8],
}

/// The header of one WebSocket message, if it is a JSON frame of the
/// declared length.
pub fn header(frame: &[u8]) -> Option<Header<'_>> {
    if frame.len() < HEADER_LEN || frame[0] != START_BYTE || frame[18] != PAYLOAD_JSON {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([frame[19], frame[20]]));
    (declared == frame.len() - HEADER_LEN).then(|| Header {
        message_type: frame[1],
        id: &frame[2..18],
        payload: &frame[HEADER_LEN..],
    })
}

/// Whether a message type is one of the three SIGNAL types.
pub fn is_signal(message_type: u8) -> bool {
    (SIGNAL_OFFER..=SIGNAL_ICE_CANDIDATE).contains(&message_type)
}

#[derive(Deserialize)]
struct Connect {
    client_id: String,
}

/// The client id a CONNECT payload asks for (its token is not checked).
pub fn connect_client_id(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<Connect>(payload)
        .ok()
        .map(|c| c.client_id)
}

#[derive(Deserialize)]
struct Target<'a> {
    #[serde(borrow)]
    target_client_id: std::borrow::Cow<'a, str>,
    // Every other field (signal_data) is parsed past, not kept.
}

/// The target of a SIGNAL payload.
pub fn signal_target(payload: &[u8]) -> Option<String> {
    serde_json::from_slice::<Target<'_>>(payload)
        .ok()
        .map(|t| t.target_client_id.into_owned())
}

fn frame(message_type: u8, id: &[u8], payload_len: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload_len);
    buf.put_u8(START_BYTE);
    buf.put_u8(message_type);
    buf.put_slice(id);
    buf.put_u8(PAYLOAD_JSON);
    buf.put_u16(0);
    buf
}

fn patch_length(buf: &mut BytesMut) -> Option<()> {
    let len = u16::try_from(buf.len() - HEADER_LEN).ok()?;
    buf[19..21].copy_from_slice(&len.to_be_bytes());
    Some(())
}

/// The signal as the target receives it: the sender's payload with
/// `"source_client_id"` spliced in after its opening brace (no re-encode).
pub fn stamp_source(h: &Header<'_>, source: &str) -> Option<Bytes> {
    let rest = h.payload.strip_prefix(b"{")?;
    let mut buf = frame(h.message_type, h.id, h.payload.len() + source.len() + 24);
    buf.put_slice(b"{\"source_client_id\":");
    // A client id is [A-Za-z0-9._:@-]; serializing still escapes any other.
    serde_json::to_writer((&mut buf).writer(), source).ok()?;
    if rest.first() != Some(&b'}') {
        buf.put_u8(b',');
    }
    buf.put_slice(rest);
    patch_length(&mut buf)?;
    Some(buf.freeze())
}

/// CONNECT_ACK answering the CONNECT with id `id`.
pub fn connect_ack(id: &[u8], client_id: &str, node_id: &str, session: u64) -> Option<Bytes> {
    let payload = serde_json::json!({
        "session_id": format!("{node_id}-{session}"),
        "client_id": client_id,
        "node_id": node_id,
        // Heartbeats are read and ignored; ask for few of them.
        "heartbeat_interval_ms": 30_000,
    });
    let mut buf = frame(CONNECT_ACK, id, 128);
    serde_json::to_writer((&mut buf).writer(), &payload).ok()?;
    patch_length(&mut buf)?;
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(payload: &str) -> Vec<u8> {
        let mut f = vec![START_BYTE, 0x12];
        f.extend_from_slice(&[7; 16]);
        f.push(PAYLOAD_JSON);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(payload.as_bytes());
        f
    }

    #[test]
    fn routes_on_the_target_and_stamps_the_source() {
        let f = signal(r#"{"target_client_id":"bob","signal_data":"x y"}"#);
        let h = header(&f).unwrap();
        assert!(is_signal(h.message_type));
        assert_eq!(signal_target(h.payload).as_deref(), Some("bob"));
        let out = stamp_source(&h, "alice").unwrap();
        let h2 = header(&out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(h2.payload).unwrap();
        assert_eq!(v["source_client_id"], "alice");
        assert_eq!(v["target_client_id"], "bob");
        assert_eq!(v["signal_data"], "x y");
        assert_eq!(h2.id, &[7; 16]);
    }

    #[test]
    fn rejects_what_it_cannot_route() {
        assert!(header(&[START_BYTE; 5]).is_none());
        let mut f = signal(r#"{"target_client_id":"bob"}"#);
        f[20] += 1;
        assert!(header(&f).is_none());
        assert!(signal_target(b"{}").is_none());
    }
}
