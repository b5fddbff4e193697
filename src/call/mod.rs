//! Calls: one tokio task per call owns its media — the RTP session, the jitter buffer, the
//! greeting, the recording and the speaker feed. [`CallHandle`] is all the rest of the program
//! sees of a call: commands over a channel.
//!
//! The SIP dialog of a call lives in the SIP endpoint's task rather than here: transactions
//! and dialogs are one state machine in RFC 3261, and splitting them across tasks would need
//! locks or a second copy of the dialog. The call task asks for a hangup with
//! [`SipCommand::Hangup`](crate::net::sip::SipCommand).

mod greeting;
mod task;

pub use greeting::{Greeting, GreetingError, GreetingPlayer};

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::net::rtp::PortAllocator;
use crate::net::sip::SipCommand;
use crate::sip::endpoint::{CallRef, IncomingCall};
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
    /// The call is over: send RTCP BYE, close the recording, stop.
    Ended,
}

/// The rest of the program's view of one call.
#[derive(Debug, Clone)]
pub struct CallHandle {
    pub call: CallRef,
    commands: mpsc::UnboundedSender<CallCommand>,
}

impl CallHandle {
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

    pub fn ended(&self) {
        let _ = self.commands.send(CallCommand::Ended);
    }
}

/// Creates call tasks for answered INVITEs.
#[derive(Debug, Clone)]
pub struct CallSpawner {
    pub ports: Arc<PortAllocator>,
    pub settings: Arc<CallSettings>,
    pub greeting: Greeting,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let task = task::CallTask::new(
            incoming.call,
            sockets,
            self.settings.clone(),
            self.greeting.player(),
            self.sip.clone(),
        );
        tokio::spawn(task.run(rx));
        Ok((
            media,
            CallHandle {
                call: incoming.call,
                commands: tx,
            },
        ))
    }
}
