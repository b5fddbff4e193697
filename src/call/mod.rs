//! Calls: one tokio task per call, whatever its source, owns the call's media and everything
//! else about it ([`task`]): a caller [`leg`] (SIP/RTP or a Twilio Media Stream) on one side,
//! a [`responder`] (the greeting, a voice [`agent`], silence, the far leg of a [`bridge`]d
//! transfer) on earshot's side, and the media
//! [`Pipeline`] between them. [`CallHandle`] is all the rest of the program sees of a call:
//! commands over a channel and the live state.
//!
//! The legs' drivers live in [`crate::net`] and start calls with [`start`]; this module never
//! imports `net`. Every call's events go to the store through one [`EventSink`].

pub mod agent;
pub mod bridge;
mod drain;
pub mod event;
pub mod event_sink;
mod greeting;
pub mod leg;
pub mod pipeline;
pub mod record_feed;
mod registry;
pub mod responder;
mod task;
pub mod transfer;

pub use bridge::{BridgeEnd, BridgePeer};
pub use drain::Drain;
pub use event::{
    AgentNoticeKind, CallEvent, CallId, CallInfo, CallStats, CarrierStatus, Codec, Direction,
    DtmfSource, EndReason, FallbackReason, PlaceFailure, RecordingFrameKind, RecordingFrames,
    Source, Speaker, TalkStopReason, TransferFailure, TransferMethod, TransferOrigin,
};
pub use event_sink::{EventSink, EventStream};
pub use greeting::{Greeting, GreetingError, GreetingPlayer};
pub use leg::{Leg, LegAudio, LegInput, LegStats};
pub use pipeline::{Pipeline, Services};
pub use registry::Registry;
pub use task::GREETING_MARK;
pub use transfer::{PeerTransfer, TransferError, TransferPolicy, TransferStart, TransferTarget};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::media::jitter::JitterConfig;

/// Settings every call obeys, from `[calls]`, `[rtp]` and `[jitter]`.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// Hang up after this long (`[calls].max_duration_secs`); `None` for no limit.
    pub max_duration: Option<Duration>,
    /// Hang up when no media came from the caller for this long
    /// (`[rtp].silence_timeout_secs`).
    pub silence_timeout: Option<Duration>,
    /// The call's jitter buffer.
    pub jitter: JitterConfig,
}

/// What a call task is told.
#[derive(Debug)]
enum CallCommand {
    /// End the call from our side, for this reason.
    Hangup(EndReason),
    /// Switch this call's playout on the speakers.
    Listen(bool),
    /// The operator's microphone on (already claimed for this call) or off; `takeover` ends
    /// the call's agent instead of pausing it.
    Talk { on: bool, takeover: bool },
    /// Hand the caller to this destination (checked against the allow-list already).
    Transfer(TransferTarget, TransferOrigin),
}

/// What the console shows of a live call, published by its task several times a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveState {
    pub answered: bool,
    pub codec: Option<Codec>,
    /// Played on the speakers.
    pub listen: bool,
    /// The caller has put us on hold.
    pub hold: bool,
    /// Level of the caller's audio over the last 100 ms, in dBFS (−100 for silence).
    pub level_dbfs: f32,
    /// The call's agent, when it has one.
    pub agent: Option<agent::AgentState>,
    /// The operator's microphone is on this call.
    pub talk: bool,
}

/// The rest of the program's view of one call.
#[derive(Debug, Clone)]
pub struct CallHandle {
    info: Arc<CallInfo>,
    commands: mpsc::UnboundedSender<CallCommand>,
    live: tokio::sync::watch::Receiver<LiveState>,
    /// `[calls].outbound_allow`, checked before a transfer reaches the call.
    transfer: TransferPolicy,
}

impl CallHandle {
    pub fn id(&self) -> &CallId {
        &self.info.id
    }

    pub fn info(&self) -> &CallInfo {
        &self.info
    }

    /// The latest live state.
    pub fn live(&self) -> LiveState {
        self.live.borrow().clone()
    }

    /// Ends the call from our side (BYE, or the stream closed).
    pub fn hangup(&self) {
        self.hangup_for(EndReason::LocalHangup);
    }

    /// Ends the call from our side, for `reason`.
    pub fn hangup_for(&self, reason: EndReason) {
        let _ = self.commands.send(CallCommand::Hangup(reason));
    }

    /// Switches the call's playout on the speakers.
    pub fn set_listen(&self, on: bool) {
        let _ = self.commands.send(CallCommand::Listen(on));
    }

    /// Turns the operator's microphone on this call on or off (the API claims it first).
    pub fn set_talk(&self, on: bool, takeover: bool) {
        let _ = self.commands.send(CallCommand::Talk { on, takeover });
    }

    /// Transfers the caller to `to`, if it is a destination `[calls].outbound_allow`
    /// allows; otherwise nothing happens. The outcome follows as call events
    /// (`transfer_requested`, `transferred` or `transfer_failed`).
    pub fn transfer(&self, to: &str, by: TransferOrigin) -> Result<TransferTarget, TransferError> {
        let target = self.transfer.check(to)?;
        self.commands
            .send(CallCommand::Transfer(target.clone(), by))
            .map_err(|_| TransferError::Ended)?;
        Ok(target)
    }

    /// The `callSid` the call's agent knows it by.
    pub fn agent_call_sid(&self) -> String {
        agent::agent_call_sid(&self.info)
    }
}

/// Starts a call on `leg`: announces it, registers it, and returns its handle and the call
/// task, for the leg's driver to spawn or await.
pub fn start<L: Leg + 'static>(
    info: CallInfo,
    leg: L,
    settings: Arc<CallSettings>,
    services: &Services,
) -> (CallHandle, impl Future<Output = ()> + Send + 'static) {
    let info = Arc::new(info);
    let _ = services.events.send(CallEvent::Started {
        info: (*info).clone(),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let (live_tx, live) = tokio::sync::watch::channel(LiveState::default());
    let handle = CallHandle {
        info: info.clone(),
        commands: tx,
        live,
        transfer: services.transfer.clone(),
    };
    services.registry.insert(handle.clone());
    let task = task::CallTask::new(info, leg, settings, services.clone(), live_tx);
    (handle, task.run(rx))
}
