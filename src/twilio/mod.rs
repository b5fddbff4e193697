//! Twilio Media Streams, sans-IO: the messages of a bidirectional stream, the
//! `X-Twilio-Signature` check, the TwiML we answer webhooks with, the one-time tokens that tie
//! a stream to its webhook, and the state machine of one stream (pacing, marks, barge-in).
//!
//! Nothing here reads the clock, sleeps or touches a socket: callers pass `now` and bytes, and
//! get values back. The driver is [`crate::net::twilio`].
//!
//! References: Twilio "Media Streams — WebSocket Messages" (bidirectional streams), "TwiML
//! `<Connect><Stream>`", "Webhooks security" (request validation).

pub mod form;
pub mod handshake;
pub mod protocol;
pub mod signature;
pub mod stream;
pub mod token;
pub mod twiml;

pub use protocol::{CallSid, StreamSid};
