//! Calls: one tokio task per call owns its media — the RTP session, the jitter buffer, the
//! greeting, the recording and the speaker feed. [`CallHandle`] is all the rest of the program
//! sees of a call: commands over a channel.
//!
//! The SIP dialog of a call lives in the SIP endpoint's task rather than here: transactions
//! and dialogs are one state machine in RFC 3261, and splitting them across tasks would need
//! locks or a second copy of the dialog. The call task asks for a hangup with
//! [`SipCommand::Hangup`](crate::net::sip::SipCommand).

pub mod event;
mod greeting;
pub mod pipeline;
mod registry;
mod task;

pub use event::{CallEvent, CallId, CallInfo, CallStats, CarrierStatus, Source};
pub use greeting::{Greeting, GreetingError, GreetingPlayer};
pub use pipeline::{Pipeline, Services};
pub use registry::Registry;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::media::jitter::JitterConfig;
use crate::net::rtp::PortAllocator;
use crate::net::sip::SipCommand;
use crate::sip::endpoint::IncomingCall;
use crate::sip::sdp::{Codec, Direction, LocalMedia, Negotiated};

/// Settings every call task needs, from `[calls]` and `[rtp]`.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// Hang up after this long (`[calls].max_duration_secs`); `None` for no limit.
    pub max_duration: Option<Duration>,
    /// Hang up when no RTP arrived for this long (`[rtp].silence_timeout_secs`).
    pub silence_timeout: Option<Duration>,
    pub learn_packets: u16,
    pub rtcp_interval: Duration,
    /// The address written in our SDP.
    pub advertised_ip: IpAddr,
    /// The jitter buffer of each call (`[jitter]`).
    pub jitter: JitterConfig,
}

/// What a call task is told.
#[derive(Debug)]
enum CallCommand {
    /// The caller ACKed our answer.
    Confirmed,
    /// Negotiated media, first or changed by a re-INVITE.
    Media(Negotiated),
    /// A DTMF digit signalled in SIP (INFO).
    Dtmf {
        digit: char,
        duration_ms: u32,
        via: &'static str,
    },
    /// The call is over (for this reason): send RTCP BYE, close the recording, stop.
    Ended(Option<String>),
    /// Hang up from our side (the API, shutdown).
    Hangup,
    /// Switch this call's playout on the speakers.
    Listen(bool),
}

/// What the console shows of a live call, published by its task several times a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveState {
    pub answered: bool,
    /// The negotiated codec: `PCMU` or `PCMA`.
    pub codec: Option<&'static str>,
    /// Played on the speakers.
    pub listen: bool,
    /// The caller has put us on hold.
    pub hold: bool,
    /// Level of the caller's audio over the last 100 ms, in dBFS (−100 for silence).
    pub level_dbfs: f32,
}

/// Events of every call go here (to the store, which persists and republishes them).
pub type EventSink = mpsc::UnboundedSender<CallEvent>;

/// The rest of the program's view of one call.
#[derive(Debug, Clone)]
pub struct CallHandle {
    info: Arc<CallInfo>,
    commands: mpsc::UnboundedSender<CallCommand>,
    live: tokio::sync::watch::Receiver<LiveState>,
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
        let _ = self.commands.send(CallCommand::Hangup);
    }

    /// Switches the call's playout on the speakers.
    pub fn set_listen(&self, on: bool) {
        let _ = self.commands.send(CallCommand::Listen(on));
    }

    pub fn confirmed(&self) {
        let _ = self.commands.send(CallCommand::Confirmed);
    }

    pub fn media(&self, media: Negotiated) {
        let _ = self.commands.send(CallCommand::Media(media));
    }

    pub fn dtmf(&self, digit: char, duration_ms: u32, via: &'static str) {
        let _ = self.commands.send(CallCommand::Dtmf {
            digit,
            duration_ms,
            via,
        });
    }

    /// The call ended in signalling; `reason` overrides the one the task knows.
    pub fn ended(&self, reason: Option<String>) {
        let _ = self.commands.send(CallCommand::Ended(reason));
    }
}

/// Creates call tasks for answered INVITEs.
#[derive(Debug, Clone)]
pub struct CallSpawner {
    pub ports: Arc<PortAllocator>,
    pub settings: Arc<CallSettings>,
    pub services: Services,
    pub sip: mpsc::UnboundedSender<SipCommand>,
}

impl CallSpawner {
    /// Binds the call's RTP/RTCP sockets and starts its task. Returns the media to offer.
    pub fn spawn(&self, incoming: &IncomingCall) -> io::Result<(LocalMedia, CallHandle)> {
        let sockets = self.ports.allocate()?;
        let media = LocalMedia {
            addr: self.settings.advertised_ip,
            port: sockets.rtp_port(),
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            session_id: rand::random::<u32>().into(),
            session_version: 1,
            direction: Direction::SendRecv,
        };
        let now = crate::clock::wallclock();
        let info = Arc::new(CallInfo {
            id: CallId::new(now, rand::random()),
            source: Source::Sip,
            external_id: incoming.sip_call_id.clone(),
            caller: incoming.caller.clone(),
            callee: incoming.callee.clone(),
            started_at: now,
        });
        let _ = self.services.events.send(CallEvent::Started {
            info: (*info).clone(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (live_tx, live) = tokio::sync::watch::channel(LiveState::default());
        let handle = CallHandle {
            info: info.clone(),
            commands: tx,
            live,
        };
        self.services.registry.insert(handle.clone());
        let task = task::CallTask::new(
            incoming.call,
            info,
            sockets,
            self.settings.clone(),
            self.services.clone(),
            self.sip.clone(),
            live_tx,
        );
        tokio::spawn(task.run(rx));
        Ok((media, handle))
    }
}
