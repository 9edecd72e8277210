//! Signal Manager: a horizontally scalable WebRTC signaling service.
pub mod config;
pub mod protocol;
