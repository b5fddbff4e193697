//! The SIP user agent (RFC 3261), sans-IO: no sockets, no clock reads, no tokio.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod refer;
pub mod registration;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
