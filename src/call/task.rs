//! The call task: one per call, whatever its source. It drives the caller [`Leg`], the media
//! [`Pipeline`] and the [`Responder`], and owns everything else of the call in one place:
//! lifecycle events, the registry entry, the maximum duration, the silence timeout, barge-in,
//! DTMF, stats, the recording and the speaker feed; transfers and DTMF rules in [`handoff`].
//!
//! Every 20 ms (when the leg says a frame is due): the caller's next frame leaves the jitter
//! buffer for the speakers, the recording, the voice detector and the agent (or a bridged
//! transfer's target); the responder's next frame goes to the caller.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::agent::{
    AgentConnector, AgentEvent, AgentLink, AgentObservation, AgentOutcome, AgentState, FallbackMode,
};
use super::event::{
    CallEvent, CallInfo, CallStats, Codec, DtmfSource, EndReason, FallbackReason, RecordingFrames,
    TransferOrigin,
};
use super::leg::{Leg, LegInput};
use super::pipeline::{Pipeline, Services};
use super::responder::{Responder, Said};
use super::transfer::TransferTarget;
use super::{CallCommand, CallSettings, LiveState};
use crate::clock;
use crate::config::{RouteSource, wants_agent};
use crate::media::frame::{FRAME_SAMPLES, Frame, SILENCE};
use crate::media::g711::{Law, encode_ulaw};
use crate::media::vad::{Vad, VadConfig, VadEvent};
use crate::sip::transaction::limit::TokenBucket;

mod handoff;

/// The mark sent after the greeting's last frame (Twilio echoes it once the caller heard it).
pub const GREETING_MARK: &str = "greeting";

/// DTMF digits a call may send a second, and in a burst: far above a person's or an IVR
/// dialler's pace (RFC 4733 digits last 40 ms at least), far below a flood's. Digits over it
/// are ignored (not stored, not forwarded to the agent) and counted.
const DTMF_RATE: u32 = 10;
const DTMF_BURST: u32 = 20;

mod talk;

/// Leg inputs the call has room for before its queue grows.
const INPUTS: usize = 4;

pub(super) struct CallTask<L: Leg> {
    info: Arc<CallInfo>,
    leg: L,
    pipeline: Pipeline,
    responder: Responder,
    settings: Arc<CallSettings>,
    services: Services,
    live: watch::Sender<LiveState>,
    vad: Vad,
    started: Instant,
    /// Media agreed: the silence timeout counts from here.
    media_since: Option<Instant>,
    /// The last caller audio or DTMF.
    last_media: Option<Instant>,
    codec: Option<Codec>,
    hold: bool,
    dtmf_limit: TokenBucket,
    /// We asked the leg to end; the reason stands.
    hanging_up: Option<EndReason>,
    ended: Option<EndReason>,
    /// The operator's microphone is on this call ([`talk`]).
    talking: bool,
    /// A transfer the leg has under way, and who asked for it.
    transferring: Option<(TransferTarget, TransferOrigin)>,
}

impl<L: Leg> CallTask<L> {
    pub(super) fn new(
        info: Arc<CallInfo>,
        leg: L,
        settings: Arc<CallSettings>,
        services: Services,
        live: watch::Sender<LiveState>,
    ) -> Self {
        let pipeline = Pipeline::with_jitter(&services, &info, live.clone(), settings.jitter);
        let source = match info.source {
            super::Source::Sip => RouteSource::Sip,
            super::Source::Twilio => RouteSource::Twilio,
        };
        let routed = |_: &&Arc<dyn AgentConnector>| {
            wants_agent(&services.routes, true, source, &info.caller, &info.callee)
        };
        let started = clock::now();
        let responder = match services.agent.as_ref().filter(routed) {
            Some(connector) => {
                live.send_modify(|l| l.agent = Some(AgentState::Connecting));
                Responder::Agent(Box::new(AgentLink::connect(
                    connector.clone(),
                    &info,
                    started,
                )))
            }
            None => Responder::Message {
                player: services.greeting.player(),
                then_hang_up: false,
            },
        };
        Self {
            info,
            leg,
            pipeline,
            responder,
            settings,
            services,
            live,
            vad: Vad::new(VadConfig::default()),
            started,
            media_since: None,
            last_media: None,
            codec: None,
            hold: false,
            dtmf_limit: TokenBucket::new(DTMF_RATE, DTMF_BURST),
            hanging_up: None,
            ended: None,
            talking: false,
            transferring: None,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<CallCommand>) {
        // A wake-up brings one packet or signal as a rule; a burst grows this once. (Its slots,
        // over 500 bytes each, are all touched as the queue turns: 64 of them were 32 kB of
        // every call's memory.)
        let mut inputs: VecDeque<LegInput> = VecDeque::with_capacity(INPUTS);
        let max_end = self
            .settings
            .max_duration
            .map(|d| tokio::time::Instant::from_std(self.started + d));
        while self.ended.is_none() {
            let tick_at = self.leg.tick_at().map(tokio::time::Instant::from_std);
            let timer_at = self.leg.timer_at().map(tokio::time::Instant::from_std);
            let silence_at = self.silence_deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(CallCommand::Hangup(reason)) => self.hang_up(reason),
                    Some(CallCommand::Listen(on)) => self.pipeline.set_listen(on),
                    Some(CallCommand::Talk { on, takeover }) => self.talk(on, takeover),
                    Some(CallCommand::Transfer(target, by)) => self.transfer(target, by),
                    None => self.hang_up(EndReason::LocalHangup),
                },
                () = self.leg.readable(&mut inputs) => {}
                input = self.responder.agent_input() => {
                    let now = clock::now();
                    let outcome = self.responder.agent().map(|link| link.input(now, input));
                    if let Some(outcome) = outcome {
                        self.agent_outcome(outcome);
                    }
                    self.agent_events(now);
                }
                () = clock::sleep_until(tick_at) => {
                    self.leg.drain(&mut inputs);
                    self.handle_inputs(&mut inputs);
                    if self.ended.is_none() {
                        self.tick().await;
                    }
                }
                () = clock::sleep_until(timer_at) => self.leg.on_timer(clock::now()).await,
                () = clock::sleep_until(silence_at), if self.hanging_up.is_none() => {
                    tracing::info!(call = %self.info.id, "no media from the caller, hanging up");
                    self.hang_up(EndReason::MediaTimeout);
                }
                () = clock::sleep_until(max_end), if self.hanging_up.is_none() => {
                    tracing::info!(call = %self.info.id, "maximum call duration reached, hanging up");
                    self.hang_up(EndReason::MaxDuration);
                }
            }
            self.handle_inputs(&mut inputs);
        }
        self.finish().await;
    }

    /// When the silence timeout fires, if it applies.
    fn silence_deadline(&self) -> Option<Instant> {
        let limit = self.settings.silence_timeout?;
        let since = self.media_since?;
        if !self.leg.expects_media() || self.hold {
            return None;
        }
        Some(self.last_media.unwrap_or(since).max(since) + limit)
    }

    fn handle_inputs(&mut self, inputs: &mut VecDeque<LegInput>) {
        while let Some(input) = inputs.pop_front() {
            match input {
                LegInput::Audio(audio) => {
                    self.last_media = Some(audio.at.max(self.last_media.unwrap_or(audio.at)));
                    self.pipeline.receive(
                        audio.at,
                        audio.seq,
                        audio.ts,
                        audio.marker,
                        audio.ssrc,
                        audio.payload(),
                    );
                }
                LegInput::Media { codec, hold } => self.media(codec, hold),
                LegInput::Dtmf {
                    digit,
                    duration_ms,
                    source,
                } => self.dtmf(digit, duration_ms, source),
                LegInput::Transfer(outcome) => self.transfer_over(outcome),
                LegInput::TransferVia(method) => self.transfer_via(method),
                LegInput::TargetEnded => self.target_ended(),
                LegInput::Referred { to, news } => self.peer_transfer(to, news),
                LegInput::Ended(reason) => {
                    // A hangup we asked for keeps our own, more precise reason.
                    self.ended = Some(self.hanging_up.unwrap_or(reason));
                }
            }
        }
    }

    fn media(&mut self, codec: Codec, hold: bool) {
        let now = clock::now();
        self.pipeline.set_law(match codec {
            Codec::Pcmu => Law::Ulaw,
            Codec::Pcma => Law::Alaw,
        });
        self.live.send_modify(|l| {
            l.codec = Some(codec);
            l.hold = hold;
        });
        if self.media_since.is_none() {
            self.media_since = Some(now);
            self.pipeline.start_recording();
            self.live.send_modify(|l| l.answered = true);
            let _ = self.services.events.send(CallEvent::Answered {
                id: self.info.id.clone(),
                codec,
            });
        } else if hold != self.hold {
            let _ = self.services.events.send(CallEvent::Hold {
                id: self.info.id.clone(),
                on: hold,
            });
        }
        self.codec = Some(codec);
        self.hold = hold;
        tracing::debug!(call = %self.info.id, codec = codec.name(), hold, "media");
    }

    fn dtmf(&mut self, digit: char, duration_ms: u32, source: DtmfSource) {
        if !self.dtmf_limit.take(clock::now()) {
            self.services.events.drops().dtmf.fetch_add(1, Relaxed);
            return;
        }
        tracing::debug!(call = %self.info.id, %digit, duration_ms, via = %source, "DTMF");
        self.last_media = Some(clock::now());
        let _ = self.services.events.send(CallEvent::Dtmf {
            id: self.info.id.clone(),
            digit,
            duration_ms,
            via: source,
        });
        if self.responder.message_playing() && !self.responder.hangs_up_after() {
            self.barge_in("dtmf");
        }
        if let Some(action) = self.services.transfer.dtmf_rule(digit).cloned() {
            // A rule takes the key: the agent does not hear it.
            self.dtmf_rule(digit, action);
            return;
        }
        let now = clock::now();
        let outcome = self.responder.agent().map(|link| link.dtmf(now, digit));
        if let Some(outcome) = outcome {
            self.agent_outcome(outcome);
        }
    }

    /// The caller spoke or pressed a key over the greeting: it stops, and what the far end
    /// queued of it is dropped.
    fn barge_in(&mut self, cause: &'static str) {
        tracing::debug!(call = %self.info.id, cause, "caller barged in: greeting stopped, clear sent");
        self.responder.stop_message();
        self.leg.clear();
    }

    /// Every 20 ms: one frame each way.
    async fn tick(&mut self) {
        let now = clock::now();
        let mut said: Frame = SILENCE;
        // Earshot's side starts at the answer: a placed call ticks for its early media, and
        // its greeting or agent must not be spent on (or barged in by) a callee still ringing.
        let answered = self.media_since.is_some();
        let was_playing = answered && self.responder.message_playing();
        let outcome = if answered {
            self.responder.next_frame(now, &mut said)
        } else {
            Said::Quiet
        };
        let captured = self.talk_frame(&mut said);
        let mut heard: Frame = SILENCE;
        let mut out = [0u8; FRAME_SAMPLES];
        let energy = self.pipeline.tick(now, &said, &mut heard, &mut out);
        if let Some(peer) = self.responder.bridge() {
            peer.send(&heard);
        }
        let next_due = self.pipeline.next_due();
        self.leg.send_frame(now, &out, next_due).await;
        self.talk_sent(captured);
        if let Some(link) = self.responder.agent()
            && link.speaking()
        {
            link.observe(AgentObservation::FrameOut(
                clock::now().saturating_duration_since(now),
            ));
        }
        match outcome {
            Said::MessageOver if self.responder.hangs_up_after() => {
                self.hang_up(EndReason::AgentFailed);
            }
            Said::MessageOver => self.leg.mark(now, GREETING_MARK),
            Said::Agent(outcome) => self.agent_outcome(outcome),
            Said::Playing | Said::Quiet => {}
        }
        match self.vad.push(now, energy) {
            Some(VadEvent::Started) if was_playing && !self.responder.hangs_up_after() => {
                self.barge_in("speech");
            }
            Some(VadEvent::Ended { at }) if answered => {
                if let Some(link) = self.responder.agent() {
                    link.caller_turn_ended(at);
                }
            }
            _ => {}
        }
        let mut ulaw = [0u8; FRAME_SAMPLES];
        encode_ulaw(&heard, &mut ulaw);
        let sent = self
            .responder
            .agent()
            .filter(|_| answered)
            .map(|link| (link.caller_frame(now, &ulaw), link.state()));
        if let Some((outcome, state)) = sent {
            if self.live.borrow().agent != Some(state) {
                self.live.send_modify(|l| l.agent = Some(state));
            }
            self.agent_outcome(outcome);
        }
        self.agent_events(now);
    }

    /// What a Realtime agent reported beside audio: barge-in, transcripts, service notices.
    fn agent_events(&mut self, now: Instant) {
        while let Some(event) = self.responder.agent().and_then(|link| link.poll_event(now)) {
            match event {
                // While the operator talks, the leg's audio is theirs: nothing to clear.
                AgentEvent::BargeIn if self.talking => {}
                AgentEvent::BargeIn => {
                    tracing::debug!(call = %self.info.id, "caller barged in on the agent: clear sent");
                    self.leg.clear();
                }
                AgentEvent::Transcript {
                    speaker,
                    item_id,
                    text,
                    start_ms,
                    end_ms,
                } => {
                    let _ = self.services.events.send(CallEvent::Transcript {
                        id: self.info.id.clone(),
                        speaker,
                        item_id,
                        text,
                        start_ms,
                        end_ms,
                    });
                }
                AgentEvent::TransferRequested { call_id } => self.agent_transfer(call_id),
                AgentEvent::Notice {
                    kind,
                    code,
                    message,
                } => {
                    tracing::warn!(call = %self.info.id, ?kind, %code, "agent service notice");
                    let _ = self.services.events.send(CallEvent::AgentNotice {
                        id: self.info.id.clone(),
                        kind,
                        code,
                        message,
                    });
                }
            }
        }
    }

    fn agent_outcome(&mut self, outcome: AgentOutcome) {
        match outcome {
            AgentOutcome::Continue => {}
            AgentOutcome::Connected { after } => {
                let connect_ms = after.as_millis() as u64;
                tracing::debug!(call = %self.info.id, connect_ms, "agent connected");
                self.live
                    .send_modify(|l| l.agent = Some(AgentState::Listening));
                let _ = self.services.events.send(CallEvent::AgentConnected {
                    id: self.info.id.clone(),
                    connect_ms,
                });
            }
            AgentOutcome::Hangup => {
                tracing::info!(call = %self.info.id, "agent hung up");
                self.hang_up(EndReason::AgentHangup);
            }
            AgentOutcome::Fallback(reason) => self.fall_back(reason),
        }
    }

    /// The agent failed: the `[agent].fallback` takes over, and the call goes on or ends after
    /// the fallback message.
    fn fall_back(&mut self, reason: FallbackReason) {
        let Responder::Agent(link) = std::mem::replace(&mut self.responder, Responder::Silent)
        else {
            return;
        };
        let mode = link.fallback_mode();
        link.fell_back(reason);
        tracing::warn!(call = %self.info.id, %reason, "agent failed, taking the fallback");
        self.live
            .send_modify(|l| l.agent = Some(AgentState::FellBack));
        let _ = self.services.events.send(CallEvent::AgentFallback {
            id: self.info.id.clone(),
            reason,
        });
        match mode {
            FallbackMode::Listen => {}
            FallbackMode::Transfer(target) => self.transfer(target, TransferOrigin::AgentFallback),
            FallbackMode::Hangup(message) => {
                let player = message.player();
                if player.is_playing() {
                    self.responder = Responder::Message {
                        player,
                        then_hang_up: true,
                    };
                } else {
                    self.hang_up(EndReason::AgentFailed);
                }
            }
        }
    }

    fn hang_up(&mut self, reason: EndReason) {
        if self.hanging_up.is_some() || self.ended.is_some() {
            return;
        }
        self.hanging_up = Some(reason);
        if self.leg.hang_up(reason) {
            self.ended = Some(reason);
        }
    }

    async fn finish(mut self) {
        let reason = self.ended.unwrap_or(EndReason::LocalHangup);
        self.end_talk();
        if let Some(link) = self.responder.agent() {
            link.stop_session();
        }
        self.agent_events(clock::now());
        if let Responder::Agent(link) = std::mem::replace(&mut self.responder, Responder::Silent) {
            link.stop();
        }
        let leg = self.leg.finish().await;
        let stats = CallStats {
            packets_received: leg.packets_received,
            packets_lost: leg.packets_lost,
            packets_sent: leg.packets_sent,
            jitter_ms: leg.jitter_ms,
            concealed_frames: self.pipeline.jitter_stats().concealed,
            jitter_delay_ms: self.pipeline.mean_delay_ms(),
            malformed_packets: leg.malformed_packets,
            recording: RecordingFrames::default(),
        };
        // The recording's caller side is drained before its file is finalized, whatever ended
        // the call: every way out of `run` comes here.
        let record = self.pipeline.finish();
        let stats = CallStats {
            recording: RecordingFrames::from_lane(&record.lane),
            ..stats
        };
        tracing::debug!(
            call = %self.info.id,
            received = stats.packets_received,
            lost = stats.packets_lost,
            sent = stats.packets_sent,
            recorded_late = record.lane.late,
            recorded_concealed_ms = record.lane.concealed_units * 10,
            recorded_duplicates = record.lane.duplicates,
            recorded_unpaired = record.unpaired,
            %reason,
            "call media finished"
        );
        self.services.registry.remove(&self.info.id);
        let _ = self.services.events.send(CallEvent::Ended {
            id: self.info.id.clone(),
            reason,
            stats,
        });
    }
}
