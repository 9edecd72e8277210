//! Signal Manager: a horizontally scalable WebRTC signaling service.
//!
//! # Layout
//!
//! - [`protocol`]: the wire format (frames, codecs, error vocabulary); pure.
//! - [`config`]: typed settings and their sources.
//! - [`auth`]: JWT verification and development tokens.
//! - [`ids`]: `ClientId`, `NodeId`, `SessionId`.
//! - [`presence`] and [`bus`]: the two cluster seams, each with a memory and
//!   a Redis implementation chosen once in [`app`].
//! - [`redis_conn`]: Redis connections in each `cluster.redis_mode`
//!   (standalone, Sentinel, Redis Cluster), TLS and ACL users.
//! - [`node`]: local sessions, routing, inbound envelopes, upkeep.
//! - [`server`]: the WebSocket listener, the session task, the admin HTTP.
//! - [`metrics`], [`telemetry`]: Prometheus metrics, logging and tracing.
//! - [`app`]: the composition root: builds a node from settings and runs it
//!   until shutdown.

pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod presence;
pub mod redis_conn;
pub mod server;
pub mod shutdown;
pub mod telemetry;

/// The wire protocol (the `signal-manager-protocol` crate).
pub use signal_manager_protocol as protocol;
