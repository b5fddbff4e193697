//! Talk-back on one call: while the operator holds the box's microphone here, its audio is what
//! the caller hears and what the recording's right channel holds (it replaces the responder's),
//! the call's own speaker playout is muted (no echo of the caller back to them), and the call's
//! agent is paused with its queued audio dropped — or, with `takeover`, ended for good.
//!
//! The API claims the microphone for the call ([`crate::audio::Microphone::claim`]) before it
//! tells the call task; the task reads a frame each tick and learns there when the operator
//! took the microphone to another call.

use std::time::Instant;

use super::{CallTask, Leg};
use crate::audio::microphone::Read;
use crate::call::agent::AgentState;
use crate::call::event::{CallEvent, TalkStopReason};
use crate::call::responder::Responder;
use crate::media::frame::{Frame, SILENCE};

impl<L: Leg> CallTask<L> {
    /// The operator's microphone on (already claimed for this call) or off.
    pub(super) fn talk(&mut self, on: bool, takeover: bool) {
        if !on {
            self.services
                .audio
                .microphone()
                .release(self.info.id.as_str());
            self.stop_talking(TalkStopReason::Released);
            return;
        }
        let ended_agent = takeover && self.end_agent();
        if self.talking && !ended_agent {
            return;
        }
        if !self.talking {
            self.talking = true;
            self.pipeline.set_talking(true);
            if let Some(link) = self.responder.agent() {
                link.pause();
            }
            if self.responder.message_playing() && !self.responder.hangs_up_after() {
                self.responder.stop_message();
            }
            // What the responder queued at the far end (a Twilio stream) goes too.
            self.leg.clear();
            self.live.send_modify(|l| l.talk = true);
        }
        tracing::debug!(call = %self.info.id, takeover, "operator talks");
        let _ = self.services.events.send(CallEvent::TalkStarted {
            id: self.info.id.clone(),
            takeover,
        });
    }

    /// Ends the call's agent session (takeover); whether there was one.
    fn end_agent(&mut self) -> bool {
        let Responder::Agent(link) = std::mem::replace(&mut self.responder, Responder::Silent)
        else {
            return false;
        };
        link.stop();
        self.live
            .send_modify(|l| l.agent = Some(AgentState::Closed));
        true
    }

    /// The microphone left this call: the responder speaks again.
    pub(super) fn stop_talking(&mut self, reason: TalkStopReason) {
        if !self.talking {
            return;
        }
        self.talking = false;
        self.pipeline.set_talking(false);
        if let Some(link) = self.responder.agent() {
            link.resume();
        }
        self.live.send_modify(|l| l.talk = false);
        tracing::debug!(call = %self.info.id, ?reason, "operator stopped talking");
        let _ = self.services.events.send(CallEvent::TalkStopped {
            id: self.info.id.clone(),
            reason,
        });
    }

    /// In the tick: while the operator talks, `said` becomes the microphone's next 20 ms.
    /// Returns when that frame was captured, if known.
    pub(super) fn talk_frame(&mut self, said: &mut Frame) -> Option<Instant> {
        if !self.talking {
            return None;
        }
        match self
            .services
            .audio
            .microphone()
            .read(self.info.id.as_str(), said)
        {
            Read::Frame(captured) => captured,
            Read::NotOwner => {
                *said = SILENCE;
                self.stop_talking(TalkStopReason::Moved);
                None
            }
        }
    }

    /// A frame of the operator captured at `captured` has just been sent.
    pub(super) fn talk_sent(&self, captured: Option<Instant>) {
        if let Some(captured) = captured {
            self.services
                .audio
                .microphone()
                .record_sent(captured, crate::clock::now());
        }
    }

    /// The call is over: the microphone is free again.
    pub(super) fn end_talk(&mut self) {
        if self.talking {
            self.services
                .audio
                .microphone()
                .release(self.info.id.as_str());
            self.stop_talking(TalkStopReason::CallEnded);
        }
    }
}
