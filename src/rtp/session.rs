//! One call's RTP/RTCP session, sans-IO: RFC 3550 (§5 packets, §6 RTCP reporting, Appendix A
//! statistics), the RFC 3551 audio profile (20 ms G.711 at 8 kHz, marker at talkspurt start,
//! §4.1), RFC 4733 DTMF reception and symmetric RTP with strict source learning.
//!
//! # Nothing is sent before the caller proves it asked for the call
//!
//! A spoofed INVITE from an allowed address, with a victim's address in `c=`, would otherwise
//! make earshot stream 50 packets a second at the victim from its 200 OK until the ACK timeout.
//! So the session sends no RTP and no RTCP (reports, BYE) until the driver says the dialog is
//! confirmed ([`Session::confirm`], on the ACK), and then only once the peer has been heard
//! (an accepted RTP packet or RTCP report) or `peer_grace` has passed since the ACK.
//!
//! The ACK is the main defence: it must carry the To tag of our 200 OK, which went to the
//! INVITE's Via, so a blind spoofer never sees it and cannot ACK. Waiting also for the peer's
//! first packet narrows what an on-path attacker who forges the ACK as well can get, to what
//! the grace lets through; the grace exists because some peers listen before they talk, and a
//! `recvonly` caller never sends RTP at all (it normally sends RTCP, which counts). A caller
//! whose RTP comes from another address than its SDP says (NAT) opens the gate as soon as that
//! address is learned, and our RTP then goes there. earshot sends no early media (183), so no
//! media ever precedes the 200 OK. A re-INVITE does not close the gate again: it comes inside
//! a dialog that the ACK already proved.
//!
//! The session never reads the clock: every input carries `now`, and the NTP time of our reports
//! is the wall-clock anchor from [`SessionConfig`] plus the `Instant`s elapsed since creation.
//! The audio path (`handle_rtp` of an audio packet, `send_audio`) does not allocate; RTCP, every
//! few seconds, does.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::dtmf::{Digit, DtmfReceiver, EventPayload};
use super::packet::{OutboundHeader, RtpPacket, write_packet};
use super::report::{self, Outgoing, SenderInfo};
use super::source::{Admission, SourceFilter};
use super::stats::{RtpStats, SeqTracker, SeqVerdict};
use super::{AudioIn, RtpEvent, Ssrc, Transmit};

/// Shortest and longest RTCP report interval accepted from configuration.
const MIN_RTCP_INTERVAL: Duration = Duration::from_millis(100);
const MAX_RTCP_INTERVAL: Duration = Duration::from_secs(3600);

/// Everything a session needs from signalling and from the driver's clock and random source.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our SSRC; random, chosen by the caller (RFC 3550 §8.1).
    pub local_ssrc: Ssrc,
    /// Negotiated audio payload type: 0 PCMU or 8 PCMA (RFC 3551 §6).
    pub payload_type: u8,
    /// Negotiated telephone-event payload type (RFC 4733), if any.
    pub dtmf_pt: Option<u8>,
    /// The peer's RTP address from SDP; `None` waits to learn it from the first packet.
    pub remote_rtp: Option<SocketAddr>,
    /// The peer's RTCP address from SDP (`a=rtcp`); `None` means learned, else RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// Consecutive in-sequence packets a new address must send to take over the stream.
    pub learn_packets: u16,
    /// How long source learning stays open after the dialog is confirmed or the SDP address
    /// changes (see `source`).
    pub learn_window: Duration,
    /// After the ACK, how long to wait for the peer's first packet before sending anyway
    /// (see the module docs); zero sends from the ACK on.
    pub peer_grace: Duration,
    /// Mean RTCP report interval (RFC 3550 §6.2, 5 s); each is randomized to 0.5–1.5 times it.
    pub rtcp_interval: Duration,
    /// Seed for that randomization, from the caller, so the core stays deterministic.
    pub rtcp_seed: u64,
    /// SDES CNAME (§6.5.1); cut to 255 bytes.
    pub cname: String,
    /// RTP clock rate of the audio and events: 8000 for G.711.
    pub clock_rate: u32,
    /// First outbound sequence number; random, chosen by the caller (§5.1).
    pub initial_seq: u16,
    /// First outbound timestamp; random, chosen by the caller (§5.1).
    pub initial_ts: u32,
    /// The wall-clock time at the `now` passed to [`Session::new`], for SR NTP timestamps.
    pub wallclock: SystemTime,
}

/// Whether the session may send (RTP and RTCP), see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendGate {
    /// No ACK yet: nothing is sent.
    Unconfirmed,
    /// ACKed; waiting for the peer's first packet until `until`.
    AwaitingPeer { until: Instant },
    /// Sending.
    Open,
}

/// The remote source currently received: its SSRC and A.1 state.
#[derive(Debug, Clone)]
struct Remote {
    ssrc: Ssrc,
    seq: SeqTracker,
    /// §6.4: a report block is only sent for sources heard since the last report.
    heard_since_report: bool,
}

/// The RTP/RTCP session of one call. See the module docs.
#[derive(Debug)]
pub struct Session {
    local_ssrc: Ssrc,
    payload_type: u8,
    dtmf_pt: Option<u8>,
    clock_rate: u32,
    cname: String,
    rtcp_interval: Duration,
    peer_grace: Duration,
    /// Whether we may send yet (see the module docs).
    gate: SendGate,
    /// An accepted RTP packet or RTCP report has come from the peer.
    peer_heard: bool,
    /// The `now` at creation: origin of arrival times (A.8) and of NTP times.
    created_at: Instant,
    wallclock: SystemTime,

    source: SourceFilter,
    remote: Option<Remote>,
    dtmf: DtmfReceiver,
    /// Middle 32 bits of the peer's last SR and when it arrived, for LSR/DLSR.
    last_sr: Option<(u32, Instant)>,
    last_packet_at: Option<Instant>,

    /// Next outbound sequence number.
    seq: u16,
    /// Timestamp of the next outbound packet; advances with every frame, sent or not.
    timestamp: u32,
    /// The timestamp of the last frame and when it was offered, to map `now` to RTP time in SRs.
    timestamp_at: Option<(Instant, u32)>,
    marker_next: bool,
    sending: bool,
    sent_since_report: bool,

    next_report: Instant,
    rng: SmallRng,
    /// After `bye`: no more RTP or reports.
    closed: bool,

    stats: RtpStats,
    events: VecDeque<RtpEvent>,
    transmits: VecDeque<Transmit>,
}

impl Session {
    /// Creates the session at `now`; the first RTCP report is due after half an interval (§6.2).
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        let mut cname = cfg.cname;
        if cname.len() > report::MAX_CNAME_LEN {
            let mut cut = report::MAX_CNAME_LEN;
            while !cname.is_char_boundary(cut) {
                cut -= 1;
            }
            cname.truncate(cut);
        }
        let clock_rate = cfg.clock_rate.max(1);
        let mut session = Session {
            local_ssrc: cfg.local_ssrc,
            payload_type: cfg.payload_type & 0x7f,
            dtmf_pt: cfg.dtmf_pt,
            clock_rate,
            cname,
            rtcp_interval: cfg
                .rtcp_interval
                .clamp(MIN_RTCP_INTERVAL, MAX_RTCP_INTERVAL),
            peer_grace: cfg.peer_grace,
            gate: SendGate::Unconfirmed,
            peer_heard: false,
            created_at: now,
            wallclock: cfg.wallclock,
            source: SourceFilter::new(
                cfg.remote_rtp,
                cfg.remote_rtcp,
                cfg.learn_packets,
                cfg.learn_window,
            ),
            remote: None,
            dtmf: DtmfReceiver::default(),
            last_sr: None,
            last_packet_at: None,
            seq: cfg.initial_seq,
            timestamp: cfg.initial_ts,
            timestamp_at: None,
            marker_next: true,
            sending: true,
            sent_since_report: false,
            next_report: now,
            rng: SmallRng::seed_from_u64(cfg.rtcp_seed),
            closed: false,
            stats: RtpStats::new(clock_rate),
            events: VecDeque::with_capacity(16),
            transmits: VecDeque::with_capacity(4),
        };
        session.next_report = now + session.randomized_interval() / 2;
        session
    }

    /// One datagram from the RTP socket. Returns the payload to decode when it is an accepted
    /// audio packet of the negotiated payload type; RFC 4733 packets become events; anything
    /// else is counted in [`RtpStats`] and dropped. Does not allocate for audio packets.
    pub fn handle_rtp<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Option<AudioIn<'a>> {
        let Ok(packet) = RtpPacket::parse(datagram) else {
            self.stats.malformed += 1;
            return None;
        };
        match self.source.admit(now, from, packet.ssrc, packet.seq) {
            Admission::Accept => {}
            Admission::Learned => self.events.push_back(RtpEvent::SourceLearned(from)),
            Admission::Drop => {
                self.stats.foreign_source += 1;
                return None;
            }
        }
        self.heard_peer();

        self.select_remote(packet.ssrc, packet.seq);
        let arrival = self.arrival(now);
        let is_audio = packet.payload_type == self.payload_type;
        let remote = self.remote.as_mut()?;
        let ext_seq = match remote.seq.update(packet.seq) {
            SeqVerdict::Jump => {
                self.stats.seq_jumps += 1;
                return None;
            }
            SeqVerdict::Duplicate => None,
            SeqVerdict::Accept(ext) | SeqVerdict::Probation(ext) => Some(ext),
        };
        remote.heard_since_report = true;
        if is_audio && ext_seq.is_some() {
            remote.seq.update_jitter(arrival, packet.timestamp);
        }
        self.stats.refresh(&remote.seq);
        self.stats.packets_received += 1;
        self.stats.bytes_received += packet.payload.len() as u64;
        self.last_packet_at = Some(now);
        let Some(ext_seq) = ext_seq else {
            self.stats.duplicates += 1;
            return None;
        };

        if is_audio {
            return Some(AudioIn {
                seq: packet.seq,
                ext_seq,
                timestamp: packet.timestamp,
                marker: packet.marker,
                ssrc: packet.ssrc,
                payload: packet.payload,
                payload_type: packet.payload_type,
            });
        }
        if Some(packet.payload_type) == self.dtmf_pt {
            match EventPayload::parse(packet.payload) {
                Some(event) => {
                    let digits = self
                        .dtmf
                        .on_packet(now, packet.timestamp, packet.marker, event);
                    for digit in digits.into_iter().flatten() {
                        self.push_digit(digit);
                    }
                }
                None => self.stats.malformed += 1,
            }
        } else {
            self.stats.wrong_pt += 1;
        }
        None
    }

    /// Makes `ssrc` the remote source, starting its A.1 state afresh (and saying so) when the
    /// source's SSRC changed.
    fn select_remote(&mut self, ssrc: Ssrc, seq: u16) {
        let changed = self.remote.as_ref().map(|r| r.ssrc != ssrc);
        if changed != Some(false) {
            if changed == Some(true) {
                self.events.push_back(RtpEvent::SsrcChanged(ssrc));
                if let Some(digit) = self.dtmf.reset() {
                    self.push_digit(digit);
                }
                self.last_sr = None;
            }
            self.remote = None;
        }
        self.remote.get_or_insert_with(|| Remote {
            ssrc,
            seq: SeqTracker::new(seq),
            heard_since_report: false,
        });
    }

    fn push_digit(&mut self, digit: Digit) {
        let duration_ms = u64::from(digit.duration) * 1000 / u64::from(self.clock_rate);
        self.events.push_back(RtpEvent::Dtmf {
            digit: digit.digit,
            duration_ms: u32::try_from(duration_ms).unwrap_or(u32::MAX),
        });
    }

    /// A.8: the arrival time of a packet in timestamp units since the session began.
    fn arrival(&self, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(self.created_at);
        // Wraps like the RTP timestamp it is compared with.
        (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32
    }

    /// NTP time at `now`: the wall-clock anchor plus the time elapsed since creation.
    fn ntp_at(&self, now: Instant) -> u64 {
        report::ntp_time(self.wallclock + now.saturating_duration_since(self.created_at))
    }

    /// One datagram from the RTCP socket: the peer's SR/RR, SDES, BYE. Reads the peer's report
    /// on our stream (loss, jitter, round-trip time); malformed compounds are counted.
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok(incoming) = report::parse(datagram, self.local_ssrc) else {
            self.stats.rtcp_malformed += 1;
            return;
        };
        if let Some(remote) = &self.remote
            && remote.ssrc != incoming.sender
        {
            self.stats.foreign_source += 1;
            return;
        }
        if self.source.admit_rtcp(now, from) == Admission::Drop {
            self.stats.foreign_source += 1;
            return;
        }
        self.heard_peer();
        self.stats.rtcp_received += 1;
        if let Some(ntp) = incoming.sr_ntp {
            self.last_sr = Some((report::ntp_middle(ntp), now));
        }
        if let Some(block) = incoming.about_us {
            self.stats.remote_fraction_lost = Some(f32::from(block.fraction_lost) / 256.0);
            self.stats.remote_packets_lost = Some(report::decode_lost(block.total_lost));
            self.stats.remote_jitter = Some(block.jitter);
            if block.last_sender_report != 0 {
                // §6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                let arrived = report::ntp_middle(self.ntp_at(now));
                let rtt = arrived
                    .wrapping_sub(block.last_sender_report)
                    .wrapping_sub(block.delay);
                if let Ok(rtt) = u32::try_from(rtt as i32) {
                    self.stats.rtt_ms = Some(report::ntp_short_ms(rtt));
                }
            }
        }
        if incoming.bye.contains(&incoming.sender) {
            self.events.push_back(RtpEvent::Bye(incoming.sender));
        }
    }

    /// Packetizes one outbound frame into `buf`: sequence number +1, timestamp + `samples`,
    /// marker on the first packet and after a gap or [`Session::set_marker_next`]. Returns the
    /// destination and the packet length; `None` when no remote is known, sending is off (hold)
    /// or `buf` is too small. The timestamp advances even then, so it keeps pace with the clock.
    pub fn send_audio(
        &mut self,
        now: Instant,
        payload: &[u8],
        samples: u32,
        buf: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        if self.closed {
            return None;
        }
        let timestamp = self.timestamp;
        self.timestamp = timestamp.wrapping_add(samples);
        self.timestamp_at = Some((now, timestamp));
        let sent = self.write_audio(timestamp, payload, buf);
        if sent.is_none() {
            // RFC 3551 §4.1: the first packet after a gap starts a talkspurt.
            self.marker_next = true;
        }
        sent
    }

    fn write_audio(
        &mut self,
        timestamp: u32,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        if !self.sending || self.gate != SendGate::Open {
            return None;
        }
        let dest = self.source.destination()?;
        let header = OutboundHeader {
            marker: self.marker_next,
            payload_type: self.payload_type,
            seq: self.seq,
            timestamp,
            ssrc: self.local_ssrc,
        };
        let len = write_packet(header, payload, buf)?;
        self.seq = self.seq.wrapping_add(1);
        self.marker_next = false;
        self.sent_since_report = true;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += payload.len() as u64;
        Some((dest, len))
    }

    /// Sets the marker bit on the next packet sent (a new talkspurt after silence suppression).
    pub fn set_marker_next(&mut self) {
        self.marker_next = true;
    }

    /// New remote addresses from a re-INVITE at `now`. A changed RTP address reopens source
    /// learning for the learning window.
    pub fn set_remote(&mut self, now: Instant, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        self.source.set_signalled(now, rtp, rtcp);
    }

    /// The dialog is confirmed (the ACK came) at `now`: the learning window starts, and
    /// sending starts once the peer has been heard or `peer_grace` has passed.
    pub fn confirm(&mut self, now: Instant) {
        self.source.start_window(now);
        if self.gate == SendGate::Unconfirmed {
            self.gate = if self.peer_heard || self.peer_grace.is_zero() {
                SendGate::Open
            } else {
                SendGate::AwaitingPeer {
                    until: now + self.peer_grace,
                }
            };
        }
    }

    /// Whether the session sends RTP and RTCP yet (see the module docs).
    pub fn is_open(&self) -> bool {
        self.gate == SendGate::Open
    }

    /// Whether anything accepted has come from the peer yet.
    pub fn peer_heard(&self) -> bool {
        self.peer_heard
    }

    /// Notes an accepted packet from the peer: the first one opens a gate waiting for it.
    fn heard_peer(&mut self) {
        if !self.peer_heard {
            self.peer_heard = true;
            self.events.push_back(RtpEvent::PeerHeard);
        }
        if matches!(self.gate, SendGate::AwaitingPeer { .. }) {
            self.gate = SendGate::Open;
        }
    }

    /// Hold (`false`) stops RTP; RTCP continues. Resuming starts a talkspurt.
    pub fn set_sending(&mut self, on: bool) {
        self.sending = on;
    }

    /// The next instant `handle_timeout` has work: an RTCP report, a DTMF end timeout, or the
    /// end of the wait for the peer's first packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let report = (!self.closed).then_some(self.next_report);
        let grace = match self.gate {
            SendGate::AwaitingPeer { until } => Some(until),
            _ => None,
        };
        [report, self.dtmf.deadline(), grace]
            .into_iter()
            .flatten()
            .min()
    }

    /// Ends DTMF events whose end packets were lost, and when due queues a compound SR (if we
    /// sent since the last report) or RR, with SDES CNAME, for [`Session::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(digit) = self.dtmf.handle_timeout(now) {
            self.push_digit(digit);
        }
        if let SendGate::AwaitingPeer { until } = self.gate
            && until <= now
        {
            self.gate = SendGate::Open;
        }
        if self.closed || now < self.next_report {
            return;
        }
        if self.gate == SendGate::Open
            && let Some(transmit) = self.report(now, false)
        {
            self.transmits.push_back(transmit);
        }
        self.next_report = now + self.randomized_interval();
    }

    /// The next RTCP datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Ends the session: a final compound report with BYE (§6.6). Afterwards no RTP is sent and
    /// no reports are scheduled. `None` if no RTCP destination is known or already ended.
    pub fn bye(&mut self, now: Instant) -> Option<Transmit> {
        if self.closed {
            return None;
        }
        self.closed = true;
        if self.gate != SendGate::Open {
            // Nothing was ever sent to this peer: no goodbye either.
            return None;
        }
        self.report(now, true)
    }

    /// The next event: a DTMF digit, a learned source, a new SSRC, the peer's BYE.
    pub fn poll_event(&mut self) -> Option<RtpEvent> {
        self.events.pop_front()
    }

    /// The session's counters.
    pub fn stats(&self) -> &RtpStats {
        &self.stats
    }

    /// When the last packet was accepted from the remote source, for the silence timeout.
    pub fn last_packet_at(&self) -> Option<Instant> {
        self.last_packet_at
    }

    /// Builds one compound packet: SR or RR, report block, SDES CNAME, optionally BYE.
    fn report(&mut self, now: Instant, bye: bool) -> Option<Transmit> {
        let dest = self.source.rtcp_destination()?;
        let sender = self.sent_since_report.then(|| SenderInfo {
            ntp_time: self.ntp_at(now),
            rtp_time: self.rtp_time_at(now),
            // §6.4.1: both counts wrap at 32 bits.
            packet_count: self.stats.packets_sent as u32,
            octet_count: self.stats.bytes_sent as u32,
        });
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, report::to_ntp_short(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        let block = match self.remote.as_mut() {
            Some(remote) if remote.heard_since_report => {
                remote.heard_since_report = false;
                Some(::rtcp::reception_report::ReceptionReport {
                    ssrc: remote.ssrc.0,
                    fraction_lost: remote.seq.take_fraction_lost(),
                    total_lost: report::encode_lost(remote.seq.lost()),
                    // §6.4.1: cycles in the high 16 bits, wrapping with them.
                    last_sequence_number: remote.seq.highest().0 as u32,
                    jitter: remote.seq.jitter(),
                    last_sender_report: lsr,
                    delay: dlsr,
                })
            }
            _ => None,
        };
        self.sent_since_report = false;
        let bytes = report::build(&Outgoing {
            ssrc: self.local_ssrc,
            sender,
            block,
            cname: &self.cname,
            bye,
        })?;
        self.stats.rtcp_sent += 1;
        Some(Transmit { dest, bytes })
    }

    /// The RTP timestamp that corresponds to `now` (§6.4.1 SR "RTP timestamp").
    fn rtp_time_at(&self, now: Instant) -> u32 {
        match self.timestamp_at {
            Some((at, ts)) => {
                let elapsed = now.saturating_duration_since(at);
                let ticks = elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
                ts.wrapping_add(ticks as u32)
            }
            None => self.timestamp,
        }
    }

    /// §6.2/§6.3.1: the report interval times a uniform factor in [0.5, 1.5).
    fn randomized_interval(&mut self) -> Duration {
        self.rtcp_interval.mul_f64(self.rng.random_range(0.5..1.5))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use std::time::UNIX_EPOCH;

    use ::rtcp::goodbye::Goodbye;
    use ::rtcp::receiver_report::ReceiverReport;
    use ::rtcp::reception_report::ReceptionReport;
    use ::rtcp::sender_report::SenderReport;
    use ::rtcp::source_description::SourceDescription;
    use rand::RngCore;
    use webrtc_util::marshal::Marshal;

    use super::*;
    use crate::rtp::SeqNo;

    const PEER: Ssrc = Ssrc(0xCAFE);
    const LOCAL: Ssrc = Ssrc(0x1111);
    const DTMF_PT: u8 = 101;

    fn peer() -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], 4000))
    }

    fn elsewhere() -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 9], 6000))
    }

    fn config() -> SessionConfig {
        SessionConfig {
            local_ssrc: LOCAL,
            payload_type: 0,
            dtmf_pt: Some(DTMF_PT),
            remote_rtp: Some(peer()),
            remote_rtcp: None,
            learn_packets: 4,
            learn_window: Duration::from_secs(2),
            peer_grace: Duration::ZERO,
            rtcp_interval: Duration::from_secs(5),
            rtcp_seed: 7,
            cname: "earshot@test".into(),
            clock_rate: 8000,
            initial_seq: 1000,
            initial_ts: 5000,
            wallclock: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    /// A session whose dialog is confirmed at `t0`, sending at once (no grace).
    fn started(cfg: SessionConfig, t0: Instant) -> Session {
        let mut s = Session::new(cfg, t0);
        s.confirm(t0);
        s
    }

    fn ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn packet(ssrc: Ssrc, pt: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0; 12 + payload.len()];
        let header = OutboundHeader {
            marker,
            payload_type: pt,
            seq,
            timestamp: ts,
            ssrc,
        };
        let n = write_packet(header, payload, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn audio(seq: u16, ts: u32) -> Vec<u8> {
        packet(PEER, 0, seq, ts, false, &[0xff; 160])
    }

    fn dtmf(seq: u16, ts: u32, marker: bool, event: u8, end: bool, duration: u16) -> Vec<u8> {
        let [d0, d1] = duration.to_be_bytes();
        let flags = if end { 0x8a } else { 0x0a };
        packet(PEER, DTMF_PT, seq, ts, marker, &[event, flags, d0, d1])
    }

    fn events(s: &mut Session) -> Vec<RtpEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// Runs `handle_timeout` at every deadline up to `until`; returns the RTCP sent.
    fn run_timers(s: &mut Session, until: Instant) -> Vec<Transmit> {
        while let Some(at) = s.poll_timeout().filter(|&at| at <= until) {
            s.handle_timeout(at);
        }
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn unmarshal(bytes: &[u8]) -> Vec<Box<dyn ::rtcp::packet::Packet + Send + Sync>> {
        ::rtcp::packet::unmarshal(&mut &bytes[..]).unwrap()
    }

    #[test]
    fn in_order_stream_yields_every_packet_and_honest_stats() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        for i in 0..50u16 {
            let d = audio(100 + i, 160 * u32::from(i));
            let a = s.handle_rtp(ms(t0, 20 * u64::from(i)), peer(), &d).unwrap();
            assert_eq!((a.seq, a.ext_seq), (100 + i, SeqNo(u64::from(100 + i))));
            assert_eq!((a.ssrc, a.payload.len(), a.payload_type), (PEER, 160, 0));
        }
        let st = s.stats();
        assert_eq!((st.packets_received, st.bytes_received), (50, 8000));
        assert_eq!((st.expected, st.packets_lost, st.jitter), (50, 0, 0));
        // The signalled address is the source from the start: nothing to learn.
        assert_eq!(events(&mut s), vec![RtpEvent::PeerHeard]);
        assert_eq!(s.last_packet_at(), Some(ms(t0, 980)));
    }

    #[test]
    fn sequence_number_wraps_at_65535() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        let exts: Vec<u64> = (0..6u16)
            .map(|i| {
                let d = audio(65533u16.wrapping_add(i), 160 * u32::from(i));
                s.handle_rtp(ms(t0, 20 * u64::from(i)), peer(), &d)
                    .unwrap()
                    .ext_seq
                    .0
            })
            .collect();
        assert_eq!(exts, vec![65533, 65534, 65535, 65536, 65537, 65538]);
        assert_eq!((s.stats().expected, s.stats().packets_lost), (6, 0));
    }

    #[test]
    fn reordered_packet_is_played_and_duplicate_is_dropped() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        let mut played = Vec::new();
        for seq in [10u16, 11, 13, 12, 13, 14] {
            let d = audio(seq, u32::from(seq) * 160);
            if let Some(a) = s.handle_rtp(t0, peer(), &d) {
                played.push(a.ext_seq.0);
            }
        }
        assert_eq!(played, vec![10, 11, 13, 12, 14]);
        let st = s.stats();
        assert_eq!(st.duplicates, 1);
        // A.3: duplicates count as received, so loss goes negative.
        assert_eq!(
            (st.expected, st.packets_received, st.packets_lost),
            (5, 6, -1)
        );
    }

    #[test]
    fn lost_packets_are_counted_per_a3() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        for seq in (0u16..100).filter(|seq| seq % 10 != 5) {
            s.handle_rtp(t0, peer(), &audio(seq, u32::from(seq) * 160));
        }
        assert_eq!((s.stats().expected, s.stats().packets_lost), (100, 10));
    }

    #[test]
    fn jitter_is_zero_for_constant_arrivals_and_per_a8_for_jittered() {
        let t0 = Instant::now();
        let mut steady = started(config(), t0);
        for i in 0..20u16 {
            let d = audio(i, 9000 + 160 * u32::from(i));
            steady.handle_rtp(ms(t0, 7 + 20 * u64::from(i)), peer(), &d);
        }
        assert_eq!(steady.stats().jitter, 0);

        // Arrivals at 0, 30, 40, 60 ms for timestamps 0, 160, 320, 480: transit differences
        // of 80, 80, 0 units give J = 5, 9.69, 9.08 -> 9 units (see stats.rs), 1.125 ms.
        let mut jittery = started(config(), t0);
        for (i, at) in [0u64, 30, 40, 60].into_iter().enumerate() {
            let d = audio(i as u16, 160 * i as u32);
            jittery.handle_rtp(ms(t0, at), peer(), &d);
        }
        assert_eq!(jittery.stats().jitter, 9);
        assert_eq!(jittery.stats().jitter_ms(), 1.125);
    }

    #[test]
    fn foreign_source_is_dropped_until_it_sends_n_consecutive_packets() {
        let t0 = Instant::now();
        let mut cfg = config();
        cfg.remote_rtp = None;
        let mut s = started(cfg, t0);
        s.handle_rtp(t0, peer(), &audio(1, 0)).unwrap();
        events(&mut s);
        let attacker = Ssrc(0xBAD);
        for seq in [500u16, 900, 501, 502] {
            let d = packet(attacker, 0, seq, 0, false, &[0; 160]);
            assert!(s.handle_rtp(t0, elsewhere(), &d).is_none());
        }
        assert_eq!(s.stats().foreign_source, 4);
        // 501, 502 started a run; 503 and 504 complete the four.
        let d = packet(attacker, 0, 503, 0, false, &[0; 160]);
        assert!(s.handle_rtp(t0, elsewhere(), &d).is_none());
        let d = packet(attacker, 0, 504, 0, false, &[0; 160]);
        assert!(s.handle_rtp(t0, elsewhere(), &d).is_some());
        assert_eq!(
            events(&mut s),
            vec![
                RtpEvent::SourceLearned(elsewhere()),
                RtpEvent::SsrcChanged(attacker)
            ]
        );
        let (dest, _) = s.send_audio(t0, &[0; 160], 160, &mut [0; 200]).unwrap();
        assert_eq!(dest, elsewhere());
        // The old address is now the foreign one.
        assert!(s.handle_rtp(t0, peer(), &audio(2, 160)).is_none());
    }

    #[test]
    fn nat_rebinding_with_the_same_ssrc_keeps_the_statistics() {
        let t0 = Instant::now();
        let mut cfg = config();
        cfg.remote_rtp = None;
        let mut s = started(cfg, t0);
        for seq in 0u16..10 {
            s.handle_rtp(t0, peer(), &audio(seq, 0));
        }
        for seq in 10u16..20 {
            s.handle_rtp(t0, elsewhere(), &audio(seq, 0));
        }
        assert_eq!(s.stats().foreign_source, 3);
        assert_eq!((s.stats().expected, s.stats().packets_lost), (20, 3));
        assert_eq!(
            events(&mut s),
            vec![
                RtpEvent::SourceLearned(peer()),
                RtpEvent::PeerHeard,
                RtpEvent::SourceLearned(elsewhere())
            ]
        );
    }

    #[test]
    fn dtmf_5_with_three_end_packets_is_one_event() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &audio(1, 0));
        let ts = 160;
        let packets = [
            dtmf(2, ts, true, 5, false, 160),
            dtmf(3, ts, false, 5, false, 480),
            dtmf(4, ts, false, 5, false, 800),
            dtmf(5, ts, false, 5, true, 960),
            dtmf(6, ts, false, 5, true, 960),
            dtmf(7, ts, false, 5, true, 960),
        ];
        for (i, d) in packets.iter().enumerate() {
            assert!(
                s.handle_rtp(ms(t0, 20 + 50 * i as u64), peer(), d)
                    .is_none()
            );
        }
        let dtmf: Vec<_> = events(&mut s)
            .into_iter()
            .filter(|e| matches!(e, RtpEvent::Dtmf { .. }))
            .collect();
        assert_eq!(
            dtmf,
            vec![RtpEvent::Dtmf {
                digit: '5',
                duration_ms: 120
            }]
        );
        assert_eq!(s.stats().packets_lost, 0);
        assert_eq!(s.stats().malformed, 0);
    }

    #[test]
    fn dtmf_whose_end_packets_were_lost_is_delivered_once_by_timeout() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &dtmf(1, 800, true, 11, false, 160));
        s.handle_rtp(ms(t0, 50), peer(), &dtmf(2, 800, false, 11, false, 560));
        events(&mut s);
        let deadline = s.poll_timeout().unwrap();
        assert_eq!(deadline, ms(t0, 50) + super::super::dtmf::END_TIMEOUT);
        s.handle_timeout(deadline);
        assert_eq!(
            events(&mut s),
            vec![RtpEvent::Dtmf {
                digit: '#',
                duration_ms: 70
            }]
        );
        s.handle_timeout(ms(t0, 2000));
        s.handle_rtp(ms(t0, 2000), peer(), &dtmf(3, 800, false, 11, true, 800));
        assert!(
            !events(&mut s)
                .iter()
                .any(|e| matches!(e, RtpEvent::Dtmf { .. }))
        );
    }

    #[test]
    fn short_telephone_event_payload_is_malformed() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &packet(PEER, DTMF_PT, 1, 0, true, &[5, 0x80]));
        assert_eq!(s.stats().malformed, 1);
    }

    #[test]
    fn other_payload_types_are_counted_but_keep_the_sequence() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &audio(1, 0)).unwrap();
        assert!(
            s.handle_rtp(t0, peer(), &packet(PEER, 13, 2, 160, false, &[40]))
                .is_none()
        );
        s.handle_rtp(t0, peer(), &audio(3, 320)).unwrap();
        assert_eq!((s.stats().wrong_pt, s.stats().packets_lost), (1, 0));
    }

    #[test]
    fn send_audio_numbers_packets_and_marks_talkspurts() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        let mut buf = [0u8; 200];
        let mut sent = Vec::new();
        let mut send = |s: &mut Session, i: u64| {
            let r = s.send_audio(ms(t0, 20 * i), &[0xd5; 160], 160, &mut buf);
            if let Some((dest, n)) = r {
                assert_eq!((dest, n), (peer(), 172));
                let p = RtpPacket::parse(&buf[..n]).unwrap();
                sent.push((p.seq, p.timestamp, p.marker));
            }
            r.is_some()
        };
        assert!(send(&mut s, 0));
        assert!(send(&mut s, 1));
        s.set_marker_next();
        assert!(send(&mut s, 2));
        s.set_sending(false);
        assert!(!send(&mut s, 3));
        s.set_sending(true);
        assert!(send(&mut s, 4));
        assert_eq!(
            sent,
            vec![
                (1000, 5000, true),
                (1001, 5160, false),
                (1002, 5320, true),
                // held for one frame: the timestamp kept running, the sequence did not
                (1003, 5640, true),
            ]
        );
        assert_eq!((s.stats().packets_sent, s.stats().bytes_sent), (4, 640));
        assert_eq!(s.send_audio(t0, &[0; 160], 160, &mut [0; 100]), None);
    }

    #[test]
    fn without_an_sdp_address_nothing_is_sent_until_a_source_is_learned() {
        let t0 = Instant::now();
        let mut cfg = config();
        cfg.remote_rtp = None;
        let mut s = started(cfg, t0);
        assert_eq!(s.send_audio(t0, &[0; 160], 160, &mut [0; 200]), None);
        s.handle_rtp(t0, elsewhere(), &audio(1, 0));
        let (dest, _) = s.send_audio(t0, &[0; 160], 160, &mut [0; 200]).unwrap();
        assert_eq!(dest, elsewhere());
    }

    #[test]
    fn set_remote_with_a_new_address_redirects_and_relearns() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &audio(1, 0));
        s.set_remote(t0, Some(elsewhere()), None);
        let (dest, _) = s.send_audio(t0, &[0; 160], 160, &mut [0; 200]).unwrap();
        assert_eq!(dest, elsewhere());
    }

    #[test]
    fn sender_report_follows_sending_and_parses_back() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        for i in 0..10 {
            s.send_audio(ms(t0, 20 * i), &[0; 160], 160, &mut [0; 200]);
        }
        let first = s.poll_timeout().unwrap();
        assert!(
            first >= ms(t0, 1250) && first < ms(t0, 3750),
            "§6.2 half interval"
        );
        let sent = run_timers(&mut s, first);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].dest, SocketAddr::from(([198, 51, 100, 7], 4001)));
        let packets = unmarshal(&sent[0].bytes);
        let sr = packets[0].as_any().downcast_ref::<SenderReport>().unwrap();
        assert_eq!(sr.ssrc, LOCAL.0);
        assert_eq!((sr.packet_count, sr.octet_count), (10, 1600));
        assert!(sr.reports.is_empty());
        let elapsed = first - t0;
        let wall = config().wallclock + elapsed;
        assert_eq!(sr.ntp_time, report::ntp_time(wall));
        // RTP time runs on from the last frame (timestamp 5000 + 9 * 160 at 180 ms).
        let ticks = (elapsed - Duration::from_millis(180)).as_nanos() * 8000 / 1_000_000_000;
        assert_eq!(sr.rtp_time, 5000 + 9 * 160 + ticks as u32);
        let sdes = packets[1]
            .as_any()
            .downcast_ref::<SourceDescription>()
            .unwrap();
        assert_eq!(sdes.chunks[0].source, LOCAL.0);
        assert_eq!(&sdes.chunks[0].items[0].text[..], b"earshot@test");
        assert_eq!(s.stats().rtcp_sent, 1);

        // Nothing sent since: the next report is an RR, scheduled 2.5-7.5 s later.
        let next = s.poll_timeout().unwrap();
        assert!(next >= first + Duration::from_millis(2500));
        assert!(next < first + Duration::from_millis(7500));
        let sent = run_timers(&mut s, next);
        let packets = unmarshal(&sent[0].bytes);
        assert!(
            packets[0]
                .as_any()
                .downcast_ref::<ReceiverReport>()
                .is_some()
        );
    }

    #[test]
    fn receiver_report_block_carries_our_loss_and_jitter() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.set_sending(false);
        for (i, at) in [0u64, 30, 40, 60].into_iter().enumerate() {
            s.handle_rtp(
                ms(t0, at),
                peer(),
                &audio(65534u16.wrapping_add(i as u16), 160 * i as u32),
            );
        }
        s.handle_rtp(ms(t0, 100), peer(), &audio(4, 800)); // 2 and 3 lost
        let sent = run_timers(&mut s, ms(t0, 10_000));
        let packets = unmarshal(&sent[0].bytes);
        let rr = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap();
        let block = &rr.reports[0];
        assert_eq!(block.ssrc, PEER.0);
        assert_eq!(block.total_lost, 2);
        assert_eq!(block.fraction_lost, (2 * 256 / 7) as u8);
        assert_eq!(block.last_sequence_number, 0x0001_0004);
        assert_eq!(block.jitter, s.stats().jitter);
        assert!(block.jitter > 0);
        assert_eq!((block.last_sender_report, block.delay), (0, 0));
        // Not heard since: the next report has no block.
        let later = run_timers(&mut s, ms(t0, 20_000));
        let packets = unmarshal(&later[0].bytes);
        let rr = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap();
        assert!(rr.reports.is_empty());
    }

    #[test]
    fn peer_report_gives_remote_loss_and_round_trip_time() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.send_audio(t0, &[0; 160], 160, &mut [0; 200]);
        let at = s.poll_timeout().unwrap();
        let sr_bytes = run_timers(&mut s, at).remove(0).bytes;
        let packets = unmarshal(&sr_bytes);
        let sr = packets[0].as_any().downcast_ref::<SenderReport>().unwrap();

        // The peer holds our SR for 100 ms; its RR arrives 150 ms after we sent: RTT 50 ms.
        let rr = ReceiverReport {
            ssrc: PEER.0,
            reports: vec![ReceptionReport {
                ssrc: LOCAL.0,
                fraction_lost: 64,
                total_lost: 0xff_fffe,
                last_sequence_number: 1000,
                jitter: 33,
                last_sender_report: report::ntp_middle(sr.ntp_time),
                delay: 6554, // 100 ms
            }],
            ..Default::default()
        };
        s.handle_rtcp(
            at + Duration::from_millis(150),
            peer(),
            &rr.marshal().unwrap(),
        );
        let st = s.stats();
        assert_eq!(st.rtcp_received, 1);
        assert_eq!(st.remote_fraction_lost, Some(0.25));
        assert_eq!(st.remote_packets_lost, Some(-2));
        assert_eq!(st.remote_jitter, Some(33));
        let rtt = st.rtt_ms.unwrap();
        assert!((rtt - 50.0).abs() < 0.1, "rtt {rtt}");
    }

    #[test]
    fn our_report_echoes_the_peers_sender_report_in_lsr_and_dlsr() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.set_sending(false);
        s.handle_rtp(t0, peer(), &audio(1, 0));
        let ntp = 0x1234_5678_9abc_def0u64;
        let sr = SenderReport {
            ssrc: PEER.0,
            ntp_time: ntp,
            ..Default::default()
        };
        s.handle_rtcp(ms(t0, 100), peer(), &sr.marshal().unwrap());
        let sent = run_timers(&mut s, ms(t0, 10_000));
        let packets = unmarshal(&sent[0].bytes);
        let rr = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap();
        assert_eq!(rr.reports[0].last_sender_report, 0x5678_9abc);
        assert!(rr.reports[0].delay > 0);
        // Symmetric RTCP: sent back to where the SR came from.
        assert_eq!(sent[0].dest, peer());
    }

    #[test]
    fn rtcp_from_another_ssrc_is_ignored() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &audio(1, 0));
        let rr = ReceiverReport {
            ssrc: 0xBAD,
            reports: vec![ReceptionReport {
                ssrc: LOCAL.0,
                fraction_lost: 255,
                ..Default::default()
            }],
            ..Default::default()
        };
        s.handle_rtcp(t0, elsewhere(), &rr.marshal().unwrap());
        assert_eq!(s.stats().remote_fraction_lost, None);
        assert_eq!(s.stats().rtcp_received, 0);
    }

    #[test]
    fn bye_is_a_compound_report_sdes_bye_and_ends_the_session() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &audio(1, 0));
        let t = s.bye(ms(t0, 500)).unwrap();
        let packets = unmarshal(&t.bytes);
        assert_eq!(packets.len(), 3);
        assert!(
            packets[0]
                .as_any()
                .downcast_ref::<ReceiverReport>()
                .is_some()
        );
        assert!(
            packets[1]
                .as_any()
                .downcast_ref::<SourceDescription>()
                .is_some()
        );
        let bye = packets[2].as_any().downcast_ref::<Goodbye>().unwrap();
        assert_eq!(bye.sources, vec![LOCAL.0]);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.send_audio(t0, &[0; 160], 160, &mut [0; 200]), None);
        assert_eq!(s.bye(ms(t0, 600)), None);
    }

    #[test]
    fn peer_bye_is_reported() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        s.handle_rtp(t0, peer(), &audio(1, 0));
        events(&mut s);
        let packets: Vec<Box<dyn ::rtcp::packet::Packet + Send + Sync>> = vec![
            Box::new(ReceiverReport {
                ssrc: PEER.0,
                ..Default::default()
            }),
            Box::new(Goodbye {
                sources: vec![PEER.0],
                ..Default::default()
            }),
        ];
        let bytes = ::rtcp::packet::marshal(&packets).unwrap();
        s.handle_rtcp(t0, peer(), &bytes);
        assert_eq!(events(&mut s), vec![RtpEvent::Bye(PEER)]);
    }

    #[test]
    fn malformed_datagrams_are_counted_and_never_panic() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        let valid = audio(1, 0);
        let mut v1 = valid.clone();
        v1[0] = 0x40;
        let mut bad_padding = valid.clone();
        bad_padding[0] |= 0x20;
        *bad_padding.last_mut().unwrap() = 200;
        let mut csrc_overflow = valid[..20].to_vec();
        csrc_overflow[0] |= 0x0f;
        for d in [
            &valid[..5],
            &v1[..],
            &bad_padding[..],
            &csrc_overflow[..],
            &[][..],
        ] {
            assert!(s.handle_rtp(t0, peer(), d).is_none());
        }
        assert_eq!(s.stats().malformed, 5);
        for d in [&[][..], &[0x80, 0xc8, 0, 50][..], &valid[..]] {
            s.handle_rtcp(t0, peer(), d);
        }
        assert_eq!(s.stats().rtcp_malformed, 3);

        // Random and mutated datagrams: counted somewhere, never a panic.
        let mut rng = SmallRng::seed_from_u64(42);
        let mut sr = Vec::new();
        s.send_audio(t0, &[0; 160], 160, &mut [0; 200]);
        s.handle_timeout(ms(t0, 10_000));
        if let Some(t) = s.poll_transmit() {
            sr = t.bytes;
        }
        for i in 0..20_000u32 {
            let base: &[u8] = if i % 2 == 0 { &valid } else { &sr };
            let mut d = base.to_vec();
            d.truncate(rng.random_range(0..=d.len()));
            for _ in 0..rng.random_range(0..4) {
                if let Some(b) = d.get_mut(rng.random_range(0..=base.len())) {
                    *b = rng.random();
                }
            }
            if i % 7 == 0 {
                d = vec![0; rng.random_range(0..64)];
                rng.fill_bytes(&mut d);
            }
            let at = ms(t0, u64::from(i));
            s.handle_rtp(at, peer(), &d);
            s.handle_rtcp(at, peer(), &d);
            s.handle_timeout(at);
            while s.poll_transmit().is_some() {}
            while s.poll_event().is_some() {}
        }
    }

    fn gated(t0: Instant) -> Session {
        let mut cfg = config();
        cfg.peer_grace = Duration::from_millis(1000);
        Session::new(cfg, t0)
    }

    #[test]
    fn nothing_is_sent_before_the_ack_however_long_it_takes() {
        let t0 = Instant::now();
        let mut s = gated(t0);
        let mut buf = [0u8; 200];
        // 32 s of a never-ACKed 200 OK: no RTP, no RTCP, no RTCP BYE.
        for i in 0..1600u64 {
            let now = ms(t0, 20 * i);
            assert_eq!(s.send_audio(now, &[0; 160], 160, &mut buf), None);
            s.handle_timeout(now);
            assert_eq!(s.poll_transmit(), None);
        }
        assert!(!s.is_open());
        assert_eq!(s.bye(ms(t0, 32_000)), None);
        assert_eq!((s.stats().packets_sent, s.stats().rtcp_sent), (0, 0));
    }

    #[test]
    fn after_the_ack_sending_waits_for_the_peer_or_the_grace() {
        let t0 = Instant::now();
        let mut buf = [0u8; 200];
        // The peer's RTP came before the ACK: open at the ACK.
        let mut early = gated(t0);
        early.handle_rtp(ms(t0, 10), peer(), &audio(1, 0)).unwrap();
        assert_eq!(events(&mut early), vec![RtpEvent::PeerHeard]);
        assert!(!early.is_open(), "not before the ACK");
        early.confirm(ms(t0, 30));
        assert!(early.is_open());

        // ACK first, then the peer's first packet opens it.
        let mut s = gated(t0);
        s.confirm(ms(t0, 30));
        assert_eq!(s.send_audio(ms(t0, 40), &[0; 160], 160, &mut buf), None);
        assert_eq!(s.poll_timeout(), Some(ms(t0, 1030)));
        s.handle_rtp(ms(t0, 50), peer(), &audio(1, 0)).unwrap();
        assert!(s.is_open());
        let (dest, _) = s.send_audio(ms(t0, 60), &[0; 160], 160, &mut buf).unwrap();
        assert_eq!(dest, peer());

        // A foreign packet does not count as the peer.
        let mut quiet = gated(t0);
        quiet.confirm(ms(t0, 30));
        quiet.handle_rtp(ms(t0, 50), elsewhere(), &audio(1, 0));
        assert!(!quiet.is_open());
        assert!(!quiet.peer_heard());
        // A silent peer (recvonly, or one that listens first) is sent to after the grace.
        quiet.handle_timeout(ms(t0, 1029));
        assert!(!quiet.is_open());
        quiet.handle_timeout(ms(t0, 1030));
        assert!(quiet.is_open());
        assert!(
            quiet
                .send_audio(ms(t0, 1040), &[0; 160], 160, &mut buf)
                .is_some()
        );
    }

    #[test]
    fn an_rtcp_report_from_the_peer_opens_the_gate() {
        let t0 = Instant::now();
        let mut s = gated(t0);
        s.confirm(t0);
        let rr = ReceiverReport {
            ssrc: PEER.0,
            ..Default::default()
        };
        s.handle_rtcp(
            ms(t0, 100),
            SocketAddr::from(([198, 51, 100, 7], 4001)),
            &rr.marshal().unwrap(),
        );
        assert!(s.is_open());
        assert!(s.peer_heard());
    }

    #[test]
    fn after_the_learning_window_an_injected_stream_is_dropped_and_counted() {
        let t0 = Instant::now();
        let mut s = started(config(), t0);
        for i in 0..10u16 {
            s.handle_rtp(
                ms(t0, 20 * u64::from(i)),
                peer(),
                &audio(i, 160 * u32::from(i)),
            )
            .unwrap();
        }
        events(&mut s);
        // Mid-call, another address sends a perfect in-sequence stream with the caller's SSRC.
        for i in 10..60u16 {
            let at = ms(t0, 3000 + 20 * u64::from(i));
            assert!(
                s.handle_rtp(at, elsewhere(), &audio(i, 160 * u32::from(i)))
                    .is_none()
            );
        }
        assert_eq!(s.stats().foreign_source, 50);
        assert!(events(&mut s).is_empty(), "no source learned");
        let (dest, _) = s
            .send_audio(ms(t0, 5000), &[0; 160], 160, &mut [0; 200])
            .unwrap();
        assert_eq!(dest, peer());
        // Its RTCP neither counts nor redirects our reports.
        let rr = ReceiverReport {
            ssrc: PEER.0,
            ..Default::default()
        };
        s.handle_rtcp(ms(t0, 5000), elsewhere(), &rr.marshal().unwrap());
        assert_eq!((s.stats().rtcp_received, s.stats().foreign_source), (0, 51));
        let sent = run_timers(&mut s, ms(t0, 20_000));
        assert!(!sent.is_empty());
        assert!(
            sent.iter()
                .all(|t| t.dest == SocketAddr::from(([198, 51, 100, 7], 4001)))
        );
    }
}
