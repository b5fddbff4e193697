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

use std::collections::VecDeque;

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

/// The agent's audio waiting to be played to the caller (μ-law): bounded, and played one
/// 20 ms frame at a time. Both sessions keep their own accounting around it.
#[derive(Debug)]
struct AudioQueue {
    bytes: VecDeque<u8>,
    max: usize,
}

impl AudioQueue {
    /// At most `max_bytes` wait (never less than one frame).
    fn new(max_bytes: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            max: max_bytes.max(FRAME_BYTES),
        }
    }

    /// Queues what fits of `audio`; returns how many bytes it took (the rest is an overrun).
    fn push(&mut self, audio: &[u8]) -> usize {
        let take = audio.len().min(self.max.saturating_sub(self.bytes.len()));
        self.bytes.extend(audio.iter().take(take));
        take
    }

    /// Fills `out` with the next frame, silence after the queued audio; returns how many
    /// queued bytes it played.
    fn pop_frame(&mut self, out: &mut [u8; FRAME_BYTES]) -> usize {
        let n = self.bytes.len().min(FRAME_BYTES);
        for (dst, src) in out.iter_mut().zip(self.bytes.drain(..n)) {
            *dst = src;
        }
        if let Some(rest) = out.get_mut(n..) {
            rest.fill(SILENCE);
        }
        n
    }

    /// Drops everything queued; returns how many bytes.
    fn clear(&mut self) -> usize {
        let n = self.bytes.len();
        self.bytes.clear();
        n
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Fill {
    /// How a frame of which `played` bytes came from the queue was filled.
    fn of(played: usize) -> Fill {
        match played {
            0 => Fill::Empty,
            FRAME_BYTES => Fill::Full,
            _ => Fill::Partial,
        }
    }
}
