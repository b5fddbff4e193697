//! Reception statistics for one remote source: RFC 3550 Appendix A.1 (sequence number extension
//! and validity, probation), A.3 (cumulative and interval loss) and A.8 (interarrival jitter);
//! plus [`RtpStats`], the counters a session shows to the rest of the program.
//!
//! One deliberate departure from A.1, for telephony: packets seen while the source is on
//! probation are played out, and when probation ends they are counted as received and the base
//! sequence number is the first of them, so the loss figures cover every packet we played. And
//! the extended sequence number stays monotonic across a resynchronisation (A.1's "very large
//! jump" restart) so that the jitter buffer, which orders by [`SeqNo`], never sees time run
//! backwards.

use super::SeqNo;

/// A.1: packets with a sequence number this far ahead are a jump, not loss.
const MAX_DROPOUT: u16 = 3000;
/// A.1: packets this far behind the highest are late (reordered), not a restart.
const MAX_MISORDER: u16 = 100;
/// A.1: consecutive packets needed before a new source is valid.
const MIN_SEQUENTIAL: u16 = 2;
/// One sequence number cycle.
const SEQ_MOD: u64 = 1 << 16;

/// What [`SeqTracker::update`] decided about one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqVerdict {
    /// A valid packet, new or late; play it.
    Accept(SeqNo),
    /// The source is still on probation (A.1); play it, statistics start when probation ends.
    Probation(SeqNo),
    /// Already received (still inside the duplicate window): drop it.
    Duplicate,
    /// A very large jump; dropped unless the next packet confirms it (A.1 `bad_seq`).
    Jump,
}

/// Sequence, loss and jitter state for one SSRC (A.1 `source` struct).
#[derive(Debug, Clone)]
pub(crate) struct SeqTracker {
    /// Highest sequence number seen (A.1 `max_seq`).
    max_seq: u16,
    /// Shifted count of sequence number cycles (A.1 `cycles`), kept monotonic.
    cycles: u64,
    /// Extended sequence number of the first counted packet (A.1 `base_seq`).
    base_ext: u64,
    /// The sequence number after a jump; a packet carrying it confirms the jump (A.1 `bad_seq`).
    bad_seq: Option<u16>,
    /// Consecutive packets still needed to leave probation (A.1 `probation`).
    probation: u16,
    /// Packets counted since `base_ext`, duplicates included (A.1 `received`).
    received: u64,
    /// `expected` at the last report (A.3 `expected_prior`).
    expected_prior: u64,
    /// `received` at the last report (A.3 `received_prior`).
    received_prior: u64,
    /// Bit `i` set: extended sequence number `highest - i` has been received. Finds duplicates.
    window: u128,
    /// Relative transit time of the previous audio packet (A.8 `transit`).
    transit: Option<u32>,
    /// Interarrival jitter scaled by 16 (A.8 integer form).
    jitter_x16: u32,
}

impl SeqTracker {
    /// A.1 `init_seq` for the first packet of a new source, which starts on probation.
    pub(crate) fn new(seq: u16) -> Self {
        SeqTracker {
            max_seq: seq.wrapping_sub(1),
            cycles: 0,
            base_ext: u64::from(seq),
            bad_seq: None,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            window: 0,
            transit: None,
            jitter_x16: 0,
        }
    }

    /// A.1 `update_seq`: classify one packet and update the counters.
    pub(crate) fn update(&mut self, seq: u16) -> SeqVerdict {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if udelta == 1 {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.end_probation(seq);
                    return SeqVerdict::Accept(self.highest());
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqVerdict::Probation(SeqNo(self.cycles + u64::from(seq)));
        }

        if udelta == 0 {
            self.received += 1;
            return SeqVerdict::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += SEQ_MOD;
            }
            self.max_seq = seq;
            self.window = self.window.checked_shl(u32::from(udelta)).unwrap_or(0) | 1;
            self.received += 1;
            return SeqVerdict::Accept(self.highest());
        }
        if udelta <= u16::MAX - MAX_MISORDER + 1 {
            // A very large jump: restart only if the next packet follows it (A.1).
            if self.bad_seq == Some(seq) {
                self.resync(seq);
                return SeqVerdict::Accept(self.highest());
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return SeqVerdict::Jump;
        }

        // Late or duplicate: `back` packets behind the highest.
        let back = u32::from(self.max_seq.wrapping_sub(seq));
        self.received += 1;
        let bit = 1u128.checked_shl(back).unwrap_or(0);
        if self.window & bit != 0 {
            return SeqVerdict::Duplicate;
        }
        self.window |= bit;
        SeqVerdict::Accept(SeqNo(self.highest().0.saturating_sub(u64::from(back))))
    }

    /// Probation passed: count the run of `MIN_SEQUENTIAL` packets that proved the source.
    fn end_probation(&mut self, seq: u16) {
        let run = u64::from(MIN_SEQUENTIAL);
        if u64::from(seq) + 1 < run {
            // The run straddled a wrap; give the base room below zero.
            self.cycles += SEQ_MOD;
        }
        self.base_ext = self.cycles + u64::from(seq) + 1 - run;
        self.received = run;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.window = (1u128 << run) - 1;
        self.bad_seq = None;
    }

    /// A.1 restart after a confirmed jump, keeping the extended numbers moving forward.
    fn resync(&mut self, seq: u16) {
        self.cycles += SEQ_MOD;
        self.max_seq = seq;
        self.base_ext = self.cycles + u64::from(seq);
        self.bad_seq = None;
        self.received = 1;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.window = 1;
    }

    /// Extended highest sequence number received.
    pub(crate) fn highest(&self) -> SeqNo {
        SeqNo(self.cycles + u64::from(self.max_seq))
    }

    /// A.3 `expected`; zero while on probation.
    pub(crate) fn expected(&self) -> u64 {
        if self.probation > 0 {
            return 0;
        }
        (self.highest().0 + 1).saturating_sub(self.base_ext)
    }

    /// A.3 cumulative number of packets lost; negative when duplicates outnumber losses.
    pub(crate) fn lost(&self) -> i64 {
        i64::try_from(self.expected()).unwrap_or(i64::MAX)
            - i64::try_from(self.received).unwrap_or(i64::MAX)
    }

    /// A.3 packets counted since the base.
    #[cfg(test)]
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// A.8 `rr->jitter`: interarrival jitter in timestamp units.
    pub(crate) fn jitter(&self) -> u32 {
        self.jitter_x16 >> 4
    }

    /// A.8: fold in one packet's arrival time and RTP timestamp, both in timestamp units.
    pub(crate) fn update_jitter(&mut self, arrival: u32, timestamp: u32) {
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(previous) = self.transit {
            let d = (transit.wrapping_sub(previous) as i32).unsigned_abs();
            let decay = (self.jitter_x16 + 8) >> 4;
            self.jitter_x16 = self.jitter_x16.saturating_add(d) - decay;
        }
        self.transit = Some(transit);
    }

    /// A.3 loss fraction since the previous call (×256), for the next report block.
    pub(crate) fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        self.expected_prior = expected;
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.received_prior = self.received;
        let lost_interval = i128::from(expected_interval) - i128::from(received_interval);
        if expected_interval == 0 || lost_interval <= 0 {
            return 0;
        }
        let fraction = (lost_interval << 8) / i128::from(expected_interval);
        u8::try_from(fraction).unwrap_or(u8::MAX)
    }
}

/// Counters for one session. Reception figures marked "current source" describe the remote SSRC
/// being received now and restart when it changes; the rest count over the whole session.
/// Byte counts are payload octets, as in the SR octet count (RFC 3550 §6.4.1).
#[derive(Debug, Clone, PartialEq)]
pub struct RtpStats {
    /// Packets accepted from the remote source (any payload type, duplicates included).
    pub packets_received: u64,
    /// Payload octets of those packets.
    pub bytes_received: u64,
    /// Current source: packets expected, A.3 (extended highest − base + 1).
    pub expected: u64,
    /// Current source: cumulative packets lost, A.3; negative when duplicates outnumber losses.
    pub packets_lost: i64,
    /// Current source: interarrival jitter in timestamp units, A.8.
    pub jitter: u32,
    /// Packets dropped because they were already received.
    pub duplicates: u64,
    /// Packets dropped as an unconfirmed sequence number jump (A.1 `bad_seq`).
    pub seq_jumps: u64,
    /// Datagrams that are not valid RTP (A.1 header checks, short RFC 4733 payloads).
    pub malformed: u64,
    /// Packets from the remote source with a payload type we did not negotiate (e.g. CN).
    pub wrong_pt: u64,
    /// RTP from an address that is not the established source (strict source learning), and
    /// RTCP whose sender SSRC is not the remote source's.
    pub foreign_source: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// Payload octets sent.
    pub bytes_sent: u64,
    /// Valid RTCP compound packets received.
    pub rtcp_received: u64,
    /// RTCP datagrams that failed to parse or break the A.2 compound rules.
    pub rtcp_malformed: u64,
    /// RTCP compound packets made (reports and BYE).
    pub rtcp_sent: u64,
    /// The peer's view of our stream: fraction lost in its last report, 0.0..=1.0.
    pub remote_fraction_lost: Option<f32>,
    /// The peer's view of our stream: cumulative packets lost (24-bit signed).
    pub remote_packets_lost: Option<i32>,
    /// The peer's view of our stream: interarrival jitter in timestamp units.
    pub remote_jitter: Option<u32>,
    /// Round-trip time from the last report block carrying LSR/DLSR (RFC 3550 §6.4.1).
    pub rtt_ms: Option<f64>,
    /// Clock rate of the stream, to turn timestamp units into time.
    clock_rate: u32,
}

impl RtpStats {
    pub(crate) fn new(clock_rate: u32) -> Self {
        RtpStats {
            packets_received: 0,
            bytes_received: 0,
            expected: 0,
            packets_lost: 0,
            jitter: 0,
            duplicates: 0,
            seq_jumps: 0,
            malformed: 0,
            wrong_pt: 0,
            foreign_source: 0,
            packets_sent: 0,
            bytes_sent: 0,
            rtcp_received: 0,
            rtcp_malformed: 0,
            rtcp_sent: 0,
            remote_fraction_lost: None,
            remote_packets_lost: None,
            remote_jitter: None,
            rtt_ms: None,
            clock_rate: clock_rate.max(1),
        }
    }

    /// Current source's interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        f64::from(self.jitter) * 1000.0 / f64::from(self.clock_rate)
    }

    /// Refresh the current-source figures from the tracker.
    pub(crate) fn refresh(&mut self, tracker: &SeqTracker) {
        self.expected = tracker.expected();
        self.packets_lost = tracker.lost();
        self.jitter = tracker.jitter();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Feeds `seqs` to a fresh tracker and returns it with the verdicts.
    fn run(seqs: &[u16]) -> (SeqTracker, Vec<SeqVerdict>) {
        let mut t = SeqTracker::new(seqs[0]);
        let verdicts = seqs.iter().map(|&s| t.update(s)).collect();
        (t, verdicts)
    }

    #[test]
    fn probation_packets_are_played_and_then_counted() {
        let (t, v) = run(&[1000, 1001, 1002]);
        assert_eq!(v[0], SeqVerdict::Probation(SeqNo(1000)));
        assert_eq!(v[1], SeqVerdict::Accept(SeqNo(1001)));
        assert_eq!(v[2], SeqVerdict::Accept(SeqNo(1002)));
        assert_eq!((t.expected(), t.received(), t.lost()), (3, 3, 0));
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let seqs: Vec<u16> = (500..600).collect();
        let (t, _) = run(&seqs);
        assert_eq!((t.expected(), t.received(), t.lost()), (100, 100, 0));
        assert_eq!(t.highest(), SeqNo(599));
    }

    #[test]
    fn sequence_wraps_at_65535_into_the_next_cycle() {
        let (t, v) = run(&[65533, 65534, 65535, 0, 1]);
        assert_eq!(v[3], SeqVerdict::Accept(SeqNo(65536)));
        assert_eq!(v[4], SeqVerdict::Accept(SeqNo(65537)));
        assert_eq!((t.expected(), t.lost()), (5, 0));
    }

    #[test]
    fn probation_straddling_the_wrap_keeps_numbers_monotonic() {
        let (t, v) = run(&[65535, 0, 1]);
        assert_eq!(v[0], SeqVerdict::Probation(SeqNo(65535)));
        assert_eq!(v[1], SeqVerdict::Accept(SeqNo(65536)));
        assert_eq!(v[2], SeqVerdict::Accept(SeqNo(65537)));
        assert_eq!((t.expected(), t.received()), (3, 3));
    }

    #[test]
    fn loss_is_expected_minus_received_per_a3() {
        let (mut t, _) = run(&[10, 11, 12, 15, 16, 20]);
        assert_eq!((t.expected(), t.received(), t.lost()), (11, 6, 5));
        // 5 lost of 11 expected in the first interval: 5 * 256 / 11 = 116.
        assert_eq!(t.take_fraction_lost(), 116);
        assert_eq!(t.update(21), SeqVerdict::Accept(SeqNo(21)));
        assert_eq!(t.take_fraction_lost(), 0);
    }

    #[test]
    fn reordered_packet_fills_its_gap_and_keeps_its_number() {
        let (t, v) = run(&[10, 11, 13, 12, 14]);
        assert_eq!(v[3], SeqVerdict::Accept(SeqNo(12)));
        assert_eq!((t.expected(), t.lost()), (5, 0));
    }

    #[test]
    fn reordered_across_the_wrap_gets_the_previous_cycle() {
        let (_, v) = run(&[65533, 65534, 0, 65535, 1]);
        assert_eq!(v[2], SeqVerdict::Accept(SeqNo(65536)));
        assert_eq!(v[3], SeqVerdict::Accept(SeqNo(65535)));
        assert_eq!(v[4], SeqVerdict::Accept(SeqNo(65537)));
    }

    #[test]
    fn duplicates_are_flagged_and_make_loss_negative() {
        let (t, v) = run(&[10, 11, 12, 12, 11]);
        assert_eq!(v[3], SeqVerdict::Duplicate);
        assert_eq!(v[4], SeqVerdict::Duplicate);
        assert_eq!((t.expected(), t.received(), t.lost()), (3, 5, -2));
    }

    #[test]
    fn large_jump_is_dropped_until_confirmed_then_resyncs_forward() {
        let (t, v) = run(&[10, 11, 12, 30000, 30001, 30002]);
        assert_eq!(v[3], SeqVerdict::Jump);
        assert_eq!(v[4], SeqVerdict::Accept(SeqNo(65536 + 30001)));
        assert_eq!(v[5], SeqVerdict::Accept(SeqNo(65536 + 30002)));
        assert_eq!((t.expected(), t.received(), t.lost()), (2, 2, 0));
    }

    #[test]
    fn jitter_is_zero_for_constant_transit() {
        let mut t = SeqTracker::new(0);
        for i in 0..50u32 {
            t.update_jitter(1000 + i * 160, i * 160);
        }
        assert_eq!(t.jitter(), 0);
    }

    #[test]
    fn jitter_follows_the_a8_recurrence_on_a_hand_computed_example() {
        // Timestamps 0,160,320,480; arrivals (timestamp units) 0,240,320,480.
        // Transit 0,80,0,0 -> D = 80,80,0.
        // J = J + (|D| - J)/16: 5.0, 9.6875, 9.08203125 -> reported 9.
        // Integer form (x16): 80, 80+80-5 = 155, 155+0-10 = 145 -> 145 >> 4 = 9.
        let mut t = SeqTracker::new(0);
        for (arrival, ts) in [(0, 0), (240, 160), (320, 320), (480, 480)] {
            t.update_jitter(arrival, ts);
        }
        assert_eq!(t.jitter_x16, 145);
        assert_eq!(t.jitter(), 9);
    }

    #[test]
    fn jitter_handles_timestamp_wrap() {
        let mut t = SeqTracker::new(0);
        t.update_jitter(100, u32::MAX - 159);
        t.update_jitter(260, 0);
        assert_eq!(t.jitter_x16, 0);
    }
}
