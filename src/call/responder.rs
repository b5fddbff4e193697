//! The responder: who speaks on earshot's side of a call. One at a time per call, switched by
//! the call task (an agent that fails gives way to its fallback).
//!
//! - the greeting, then silence (the default, and the fallback's message before it hangs up);
//! - a voice agent ([`super::agent::AgentLink`]);
//! - silence (a listen-only call);
//! - the far leg of a bridged transfer ([`super::bridge`]): the target speaks to the caller.

use std::time::Instant;

use super::agent::{AgentLink, AgentOutcome};
use super::bridge::BridgePeer;
use super::greeting::GreetingPlayer;
use crate::agent::twilio::FRAME_BYTES;
use crate::media::frame::{Frame, SILENCE};
use crate::media::g711::decode_ulaw;

/// Who speaks.
#[derive(Debug)]
pub enum Responder {
    /// A recorded message; `then_hang_up` ends the call when it is over.
    Message {
        player: GreetingPlayer,
        then_hang_up: bool,
    },
    Agent(Box<AgentLink>),
    Silent,
    /// The transfer target, bridged: what it says is what the caller hears.
    Bridge(BridgePeer),
}

/// What the responder said in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// Audio (possibly silence); the message is still playing.
    Playing,
    /// The message played its last frame now.
    MessageOver,
    /// Nothing more to say.
    Quiet,
    /// The agent needs the call task's attention.
    Agent(AgentOutcome),
}

impl Responder {
    /// Fills `out` with the next 20 ms of earshot's side.
    pub fn next_frame(&mut self, now: Instant, out: &mut Frame) -> Said {
        *out = SILENCE;
        match self {
            Responder::Message { player, .. } => {
                if !player.is_playing() {
                    return Said::Quiet;
                }
                player.next_frame(out);
                if player.is_playing() {
                    Said::Playing
                } else {
                    Said::MessageOver
                }
            }
            Responder::Agent(link) => {
                let mut ulaw = [0u8; FRAME_BYTES];
                let outcome = link.next_frame(now, &mut ulaw);
                decode_ulaw(&ulaw, out);
                Said::Agent(outcome)
            }
            Responder::Bridge(peer) => {
                peer.next_frame(out);
                Said::Quiet
            }
            Responder::Silent => Said::Quiet,
        }
    }

    /// Whether a recorded message is playing (a caller may barge in on it).
    pub fn message_playing(&self) -> bool {
        matches!(self, Responder::Message { player, .. } if player.is_playing())
    }

    /// Stops the message (the caller barged in).
    pub fn stop_message(&mut self) {
        if let Responder::Message { player, .. } = self {
            player.stop();
        }
    }

    /// Whether the call ends once the message is over.
    pub fn hangs_up_after(&self) -> bool {
        matches!(
            self,
            Responder::Message {
                then_hang_up: true,
                ..
            }
        )
    }

    /// The bridged target, when the caller is bridged to one.
    pub fn bridge(&mut self) -> Option<&mut BridgePeer> {
        match self {
            Responder::Bridge(peer) => Some(peer),
            _ => None,
        }
    }

    pub fn agent(&mut self) -> Option<&mut AgentLink> {
        match self {
            Responder::Agent(link) => Some(link),
            _ => None,
        }
    }

    /// The next report of the agent's driver; pends forever for other responders.
    pub async fn agent_input(&mut self) -> super::agent::AgentInput {
        match self {
            Responder::Agent(link) => link.recv().await,
            _ => std::future::pending().await,
        }
    }
}
