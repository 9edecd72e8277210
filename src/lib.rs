//! Signal Manager: a horizontally scalable WebRTC signaling service.
pub mod protocol;
