//! The caller leg: how the caller is connected to a call. A leg yields the caller's audio and
//! DTMF, takes earshot's audio 20 ms at a time, and can hang up. SIP/RTP
//! ([`crate::net::sip_leg`]) and a Twilio Media Stream ([`crate::net::twilio`]) are the two
//! legs of today; the call task ([`super::task`]) drives either the same way.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Instant;

use super::bridge::BridgePeer;
use super::event::{Codec, DtmfSource, EndReason, TransferFailure, TransferMethod};
use super::transfer::{PeerTransfer, TransferStart, TransferTarget};
use crate::media::frame::FRAME_SAMPLES;

/// Largest payload of one caller packet: 60 ms of G.711.
pub const MAX_PAYLOAD: usize = 3 * FRAME_SAMPLES;

/// One packet of the caller's audio, placed for the jitter buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LegAudio {
    /// When it counts as arrived.
    pub at: Instant,
    pub seq: u16,
    /// In 8 kHz samples.
    pub ts: u32,
    pub marker: bool,
    pub ssrc: u32,
    len: usize,
    payload: [u8; MAX_PAYLOAD],
}

impl LegAudio {
    /// A packet; payloads beyond [`MAX_PAYLOAD`] are cut there.
    pub fn new(at: Instant, seq: u16, ts: u32, marker: bool, ssrc: u32, payload: &[u8]) -> Self {
        let len = payload.len().min(MAX_PAYLOAD);
        let mut buf = [0u8; MAX_PAYLOAD];
        if let (Some(dst), Some(src)) = (buf.get_mut(..len), payload.get(..len)) {
            dst.copy_from_slice(src);
        }
        Self {
            at,
            seq,
            ts,
            marker,
            ssrc,
            len,
            payload: buf,
        }
    }

    /// The G.711 payload.
    pub fn payload(&self) -> &[u8] {
        self.payload.get(..self.len).unwrap_or_default()
    }
}

impl std::fmt::Debug for LegAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegAudio")
            .field("seq", &self.seq)
            .field("ts", &self.ts)
            .field("len", &self.len)
            .finish()
    }
}

/// What a leg reports to its call task.
// `Audio` carries its payload inline: inputs are queued and used at once, and boxing would
// allocate for every packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegInput {
    Audio(LegAudio),
    /// Media is agreed (first, or changed by a re-INVITE): the codec, and whether the caller
    /// holds the call.
    Media {
        codec: Codec,
        hold: bool,
    },
    Dtmf {
        digit: char,
        duration_ms: u32,
        source: DtmfSource,
    },
    /// A transfer the leg began ([`TransferStart::Pending`]) is over: done this way, or
    /// failed (the call goes on).
    Transfer(Result<TransferMethod, TransferFailure>),
    /// The transfer under way is carried out another way now (a REFER the caller's side
    /// refused became a bridge).
    TransferVia(TransferMethod),
    /// The far leg of a bridged transfer hung up (or failed after the answer).
    TargetEnded,
    /// A transfer the caller's side asked for (REFER) to `to`: begun, done (the leg now
    /// carries the target), or failed.
    Referred {
        to: String,
        news: PeerTransfer,
    },
    /// The leg is over.
    Ended(EndReason),
}

/// Media counters of a leg, for the call's record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegStats {
    pub packets_received: u64,
    pub packets_lost: i64,
    pub packets_sent: u64,
    pub jitter_ms: f64,
    pub malformed_packets: u64,
}

/// A caller leg, as the call task drives it. Futures are `Send`, so call tasks can be spawned.
pub trait Leg: Send {
    /// Waits until the leg has something for the call, then moves what is already readable
    /// (bounded) into `inputs`. Cancel-safe: nothing is lost if the future is dropped.
    fn readable(&mut self, inputs: &mut VecDeque<LegInput>) -> impl Future<Output = ()> + Send;

    /// Moves what is readable right now into `inputs`, without waiting (before a tick, so a
    /// packet the reactor has already seen is not taken for late).
    fn drain(&mut self, inputs: &mut VecDeque<LegInput>);

    /// When the next 20 ms frame is due; `None` while no media flows.
    fn tick_at(&self) -> Option<Instant>;

    /// Sends one frame of earshot's audio, in the leg's codec. `next_due` is when the caller's
    /// next frame falls due in the jitter buffer (a leg may align its clock to it).
    fn send_frame(
        &mut self,
        now: Instant,
        frame: &[u8; FRAME_SAMPLES],
        next_due: Option<Instant>,
    ) -> impl Future<Output = ()> + Send;

    /// When the leg's own timers (RTCP) want [`Leg::on_timer`].
    fn timer_at(&self) -> Option<Instant>;

    fn on_timer(&mut self, now: Instant) -> impl Future<Output = ()> + Send;

    /// Whether the caller is expected to be sending (not on hold by agreement): the silence
    /// timeout applies only then.
    fn expects_media(&self) -> bool;

    /// Drops the audio the far end has buffered (Twilio's `clear`); a no-op for RTP.
    fn clear(&mut self);

    /// Asks the far end to report when everything sent so far was played (Twilio's `mark`).
    fn mark(&mut self, now: Instant, name: &'static str);

    /// Hands the caller to `target`. The default: this leg cannot.
    fn transfer(&mut self, target: &TransferTarget) -> TransferStart {
        let _ = target;
        TransferStart::Unsupported
    }

    /// The far leg of a bridged transfer, once [`LegInput::Transfer`] reported it answered
    /// with [`TransferMethod::Bridge`]. The default: this leg never bridges.
    fn take_bridge(&mut self) -> Option<BridgePeer> {
        None
    }

    /// Ends the leg from earshot's side. Returns true when the leg is over at once; otherwise
    /// an [`LegInput::Ended`] follows once the far end confirmed (SIP BYE answered).
    fn hang_up(&mut self, reason: EndReason) -> bool;

    /// Closes the leg (RTCP BYE, the WebSocket close frame) and returns its counters.
    fn finish(self) -> impl Future<Output = LegStats> + Send;
}
