//! The RTP/RTCP session of a SIP call, sans-IO: RFC 3550 (RTP, RTCP, Appendix A statistics),
//! RFC 3551 (the audio/video profile: G.711 at 8 kHz) and RFC 4733 (DTMF as telephone-events).
//!
//! A [`Session`] takes datagrams and `Instant`s and hands back audio payloads, events, RTCP
//! datagrams and its next deadline; it opens no socket and reads no clock. The per-call task
//! drives it: `handle_rtp` / `handle_rtcp` / `handle_timeout`, then drain `poll_event` and
//! `poll_transmit`, then sleep until `poll_timeout`.
//!
//! - `packet`: the RTP wire format, parsed zero-copy at the edge (§5.1, A.1 checks).
//! - `stats`: sequence extension, loss and jitter (A.1, A.3, A.8); [`RtpStats`].
//! - `source`: symmetric RTP/RTCP with strict source learning in a window (against RTP Bleed
//!   and mid-call injection).
//! - `dtmf`: RFC 4733 reception, one event per digit.
//! - `report`: RTCP SR/RR/SDES/BYE compounds through the `rtcp` crate (§6).
//! - `session`: [`Session`], which ties them together.

mod dtmf;
mod packet;
mod report;
mod session;
mod source;
mod stats;

use std::net::SocketAddr;

pub use packet::{MalformedRtp, RtpPacket};
pub use session::{Session, SessionConfig};
pub use stats::RtpStats;

/// A synchronization source identifier (RFC 3550 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// A sequence number extended with its count of 16-bit cycles (RFC 3550 A.1), so that it orders
/// packets across the wrap at 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(pub u64);

/// An RTCP datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dest: SocketAddr,
    /// The compound packet.
    pub bytes: Vec<u8>,
}

/// Something the call task should know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpEvent {
    /// A DTMF digit (`0`–`9`, `*`, `#`, `A`–`D`) received as an RFC 4733 event, once per key
    /// press however many end packets arrived, or none did.
    Dtmf {
        /// The key.
        digit: char,
        /// How long it was held, from the event's duration field.
        duration_ms: u32,
    },
    /// Outbound RTP now goes to this address: the first source, or a new one that proved
    /// itself with enough consecutive packets (the peer's NAT binding or relay moved).
    SourceLearned(SocketAddr),
    /// The remote source's SSRC changed: statistics restarted; reset playout (sequence numbers
    /// and timestamps start over).
    SsrcChanged(Ssrc),
    /// The peer sent an RTCP BYE for its source (RFC 3550 §6.6).
    Bye(Ssrc),
    /// The first accepted RTP packet or RTCP report from the peer: it really is there.
    PeerHeard,
}

/// One accepted audio packet, borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioIn<'a> {
    /// Sequence number as sent.
    pub seq: u16,
    /// Extended sequence number, for ordering in the jitter buffer.
    pub ext_seq: SeqNo,
    /// RTP timestamp (sample clock of the payload).
    pub timestamp: u32,
    /// Start of a talkspurt (RFC 3551 §4.1).
    pub marker: bool,
    /// The sender's SSRC.
    pub ssrc: Ssrc,
    /// The encoded audio (e.g. 160 bytes of G.711 for 20 ms).
    pub payload: &'a [u8],
    /// Its payload type, the negotiated audio one.
    pub payload_type: u8,
}
