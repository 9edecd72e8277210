//! Integration tests of a single node (memory backend) and of two nodes
//! sharing in-memory seams, through real WebSocket clients.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod admin;
mod cli;
mod client;
mod dormant;
mod errors;
mod jwks;
mod lifecycle;
mod memory_cluster;
mod routing;
mod vectors;

use bytes::Bytes;
use signal_manager_service::protocol::{
    Codec, ConnectPayload, Message, MessageType, Payload, SignalPayload,
};
use uuid::Uuid;

/// A CONNECT message.
pub fn connect(client: &str, token: &str) -> Message {
    Message::new(
        MessageType::Connect,
        Payload::Connect(ConnectPayload {
            client_id: client.into(),
            auth_token: token.into(),
        }),
    )
}

/// A SIGNAL_OFFER message.
pub fn offer(target: &str, data: &str) -> Message {
    Message::new(
        MessageType::SignalOffer,
        Payload::SignalOffer(SignalPayload {
            target_client_id: target.into(),
            signal_data: data.into(),
        }),
    )
}

/// Raw frame bytes.
pub fn raw_frame(ty: u8, id: Uuid, pt: u8, payload: &[u8]) -> Bytes {
    let mut v = vec![0xA5, ty];
    v.extend_from_slice(id.as_bytes());
    v.push(pt);
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

pub const ALICE: (&str, &str) = ("test_client_1", "test_token_1");
pub const BOB: (&str, &str) = ("test_client_2", "test_token_2");
pub const JSON: Codec = Codec::Json;
