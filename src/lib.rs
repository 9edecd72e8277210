//! Signal Manager: a horizontally scalable WebRTC signaling service.
//!
//! The wire protocol lives in its own crate and is re-exported here, so a
//! message is built as the README shows:
//!
//! ```
//! use signal_manager_service::protocol::{
//!     ConnectPayload, Message, MessageType, Payload, SignalPayload,
//! };
//!
//! let connect = Message::new(
//!     MessageType::Connect,
//!     Payload::Connect(ConnectPayload {
//!         client_id: "alice".into(),
//!         auth_token: "…".into(),
//!         ..Default::default()
//!     }),
//! );
//! let offer = Message::new(
//!     MessageType::SignalOffer,
//!     Payload::SignalOffer(SignalPayload {
//!         target_client_id: "bob".into(),
//!         signal_data: "v=0 …".into(),
//!     }),
//! );
//! assert_ne!(connect.message_id, offer.message_id);
//! ```
//!
//! # Layout
//!
//! Public (used by the binary, the integration tests and embedders):
//! - [`protocol`]: the wire format (the `signal-manager-protocol` crate).
//! - [`config`]: typed settings and their sources.
//! - [`app`]: the composition root: builds a node from settings and runs it
//!   until shutdown; [`Node`] is the handle it returns.
//! - [`presence`] and [`bus`]: the two cluster seams, each with a memory and
//!   a Redis implementation chosen once in [`app`].
//! - [`redis_conn`]: Redis connections in each `cluster.redis_mode`
//!   (standalone, Sentinel, Redis Cluster), TLS and ACL users.
//! - [`auth`]: JWT verification and token minting; [`ids`]: `ClientId`,
//!   `NodeId`, `SessionId`; [`shutdown`]: the drain signal; [`metrics`]: the
//!   Prometheus registry; [`access_metrics`]: peers-claim refusals, JWK Set
//!   fetches, admin API; [`cli`]: the binary's command line.
//!
//! Private: `node` (local sessions, routing, inbound envelopes, upkeep),
//! `server` (the WebSocket listener, the session task, the admin HTTP),
//! `telemetry` (logging and tracing), `redis_names` (every Redis key and
//! channel name), `turn` (the ICE servers of CONNECT_ACK), `wake` (a
//! wake-up for one waiting task, cheaper than a `Notify`).

// The admin and connection futures nest the node's futures deeply enough
// that proving them `Send` passes the default depth of 128.
#![recursion_limit = "256"]

pub mod access_metrics;
pub mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod ids;
pub mod metrics;
mod node;
pub mod presence;
pub mod redis_conn;
mod redis_names;
pub mod runtime;
mod server;
pub mod shutdown;
mod telemetry;
mod turn;
mod wake;

/// The wire protocol (the `signal-manager-protocol` crate).
pub use signal_manager_protocol as protocol;

pub use node::Node;

/// Node internals for the criterion benches only; not a stable API.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench {
    pub use crate::node::bench::*;
}
