//! The network edges of a node: the WebSocket listener with its per-client
//! session task, and the admin HTTP endpoints (with the `/v1` operator API).

mod admin;
mod admin_api;
mod counted;
mod listener;
mod session;

pub(crate) use admin::serve_admin;
pub(crate) use listener::serve_websockets;
