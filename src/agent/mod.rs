//! Voice agents on earshot's side of a call, sans-IO: the protocols earshot speaks to them.
//!
//! - [`twilio`]: earshot plays Twilio's part of a bidirectional Media Stream towards any agent
//!   that speaks it (pipecat's Twilio serializer, hosted agents, the Twilio samples).
//!
//! The WebSocket driver is [`crate::net::agent`]; the call task ([`crate::call`]) owns one
//! session per call.

pub mod twilio;
