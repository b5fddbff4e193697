//! Voice agents on earshot's side of a call, sans-IO: the protocols earshot speaks to them.
//!
//! - [`twilio`]: earshot plays Twilio's part of a bidirectional Media Stream towards any agent
//!   that speaks it (pipecat's Twilio serializer, hosted agents, the Twilio samples).
//! - [`openai`]: earshot is the client of the OpenAI Realtime API (GA interface): the model is
//!   the agent, spoken to in its own events.
//!
//! Both sessions have the same shape, so the call task can hold either: the caller's audio in
//! (`caller_audio`, `dtmf`), the agent's WebSocket text in (`handle_text`, `handle_binary`), the
//! agent's audio out 20 ms at a time (`next_frame`), and the texts to send
//! (`poll_transmit`, `unsend`, `pending`). The types they share live here.
//!
//! The WebSocket driver is [`crate::net::agent`]; the call task ([`crate::call`]) owns one
//! session per call.

pub mod openai;
pub mod twilio;

/// Bytes of one 20 ms frame of 8 kHz μ-law.
pub const FRAME_BYTES: usize = 160;
/// μ-law silence.
const SILENCE: u8 = 0xff;
/// Largest agent message taken; larger ones are counted and dropped (the driver's socket
/// limit is the same).
pub const MAX_MESSAGE: usize = 1 << 20;

/// What an agent message did, for the call task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Audio was queued.
    Audio,
    Mark,
    /// The queued audio was dropped (Twilio `clear`; an OpenAI barge-in): the call task clears
    /// the caller's leg too.
    Clear,
    /// A message of the protocol that queued no audio (OpenAI session, transcript, error and
    /// rate-limit events); what came of it is in the session's events.
    Handled,
    /// Counted and dropped.
    Ignored,
}

/// How much of a frame the agent's queue filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Nothing queued: silence.
    Empty,
    /// The queue ran dry inside the frame; the rest is silence.
    Partial,
    Full,
}
