//! Which addresses may send us RTP and RTCP, and where ours goes: symmetric RTP (RFC 4961) with
//! strict source learning in a window, the defence Asterisk (`strictrtp`) and rtpengine use
//! against "RTP Bleed" and media hijacking.
//!
//! Learning is open while the call's media starts: from the session's creation until
//! `learn_window` after the dialog is confirmed ([`SourceFilter::start_window`], the ACK), and
//! again for `learn_window` after a re-INVITE moves the SDP address. While it is open, the RTP
//! address signalled in SDP is trusted at once; another address must send `learn_packets`
//! consecutive packets of one SSRC (sequence number +1 each) to become the source (the caller's
//! NAT or media relay rewrote it) and our RTP follows it; without an SDP address the first
//! packet establishes the source. RTCP is learned the same way: while learning is open, any
//! address whose reports pass the session's SSRC check becomes the RTCP peer.
//!
//! Once the window has closed, only the established RTP source and the signalled address are
//! accepted, and RTCP only from the learned RTCP address or the one SDP names (`a=rtcp`, else
//! RTP port + 1): a late in-sequence stream from anyone else, whatever its SSRC, is dropped and
//! counted, so a mid-call injection can neither reach the recording nor divert our media. If no
//! source was established by the end of the window (no SDP address, nothing heard yet), the
//! first source then still establishes, and learning closes with it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Ssrc;

/// What to do with a packet, judged only by where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// From the established source.
    Accept,
    /// From an address that has just become the established source.
    Learned,
    /// From a foreign address; drop it.
    Drop,
}

/// An address trying to become the source: the run of consecutive packets it has sent so far.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    ssrc: Ssrc,
    last_seq: u16,
    run: u16,
}

/// Strict source learning state for one session.
#[derive(Debug, Clone)]
pub(crate) struct SourceFilter {
    /// The RTP address from SDP, if any; trusted because it came through signalling.
    signalled: Option<SocketAddr>,
    /// The RTCP address from SDP (`a=rtcp`), if any.
    signalled_rtcp: Option<SocketAddr>,
    /// The address packets are accepted from and sent to once known.
    established: Option<SocketAddr>,
    /// The address the peer's valid RTCP comes from (symmetric RTCP).
    rtcp_learned: Option<SocketAddr>,
    /// A foreign address working towards `learn_packets`.
    candidate: Option<Candidate>,
    /// Consecutive in-sequence packets a foreign address needs to take over (at least 1).
    learn_packets: u16,
    /// How long learning stays open once started.
    learn_window: Duration,
    /// When learning closes; `None` until the window is started (the dialog is confirmed).
    learn_until: Option<Instant>,
}

impl SourceFilter {
    pub(crate) fn new(
        signalled: Option<SocketAddr>,
        signalled_rtcp: Option<SocketAddr>,
        learn_packets: u16,
        learn_window: Duration,
    ) -> Self {
        SourceFilter {
            signalled,
            signalled_rtcp,
            // The signalled address is trusted from the start: anyone else must prove itself
            // with consecutive packets, or a single stray packet could steal the stream.
            established: signalled,
            rtcp_learned: None,
            candidate: None,
            learn_packets: learn_packets.max(1),
            learn_window,
            learn_until: None,
        }
    }

    /// The call's media starts (the dialog is confirmed): learning closes `learn_window` from
    /// `now`. Only the first call counts; later ones keep the window as it is.
    pub(crate) fn start_window(&mut self, now: Instant) {
        if self.learn_until.is_none() {
            self.learn_until = Some(now + self.learn_window);
        }
    }

    /// Whether a new source may still be learned at `now`.
    pub(crate) fn learning(&self, now: Instant) -> bool {
        self.established.is_none() || self.learn_until.is_none_or(|until| now < until)
    }

    /// Judge one RTP packet from `from` carrying `ssrc` and `seq`, at `now`.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ssrc: Ssrc,
        seq: u16,
    ) -> Admission {
        if self.established == Some(from) {
            return Admission::Accept;
        }
        if self.established.is_none() || self.signalled == Some(from) {
            return self.establish(from);
        }
        if !self.learning(now) {
            self.candidate = None;
            return Admission::Drop;
        }
        let run = match self.candidate {
            Some(c) if c.addr == from && c.ssrc == ssrc && seq == c.last_seq.wrapping_add(1) => {
                c.run.saturating_add(1)
            }
            _ => 1,
        };
        if run >= self.learn_packets {
            return self.establish(from);
        }
        self.candidate = Some(Candidate {
            addr: from,
            ssrc,
            last_seq: seq,
            run,
        });
        Admission::Drop
    }

    fn establish(&mut self, from: SocketAddr) -> Admission {
        self.established = Some(from);
        self.candidate = None;
        Admission::Learned
    }

    /// Judge one RTCP compound from `from` at `now` (its SSRC already checked by the session):
    /// accepted from the learned or expected RTCP address, or, while learning is open, from
    /// any address, which then becomes the RTCP peer.
    pub(crate) fn admit_rtcp(&mut self, now: Instant, from: SocketAddr) -> Admission {
        if self.rtcp_learned == Some(from) {
            return Admission::Accept;
        }
        if self.expected_rtcp() == Some(from) || self.learning(now) {
            self.rtcp_learned = Some(from);
            return Admission::Learned;
        }
        Admission::Drop
    }

    /// The RTCP address signalling implies: `a=rtcp`, else the RTP destination's port + 1.
    fn expected_rtcp(&self) -> Option<SocketAddr> {
        self.signalled_rtcp.or_else(|| {
            let rtp = self.destination()?;
            Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?))
        })
    }

    /// Where our RTP goes: the learned source, else the SDP address.
    pub(crate) fn destination(&self) -> Option<SocketAddr> {
        self.established.or(self.signalled)
    }

    /// Where our RTCP goes: where valid reports come from, else what signalling implies.
    pub(crate) fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.rtcp_learned.or_else(|| self.expected_rtcp())
    }

    /// New SDP addresses after a re-INVITE at `now`. A changed RTP address reopens learning
    /// for a window (the peer moved, and the old source must not keep the stream); an
    /// unchanged one keeps what was learned. A changed RTCP address forgets the learned one.
    pub(crate) fn set_signalled(
        &mut self,
        now: Instant,
        signalled: Option<SocketAddr>,
        signalled_rtcp: Option<SocketAddr>,
    ) {
        let moved = signalled != self.signalled;
        if moved {
            self.signalled = signalled;
            self.established = signalled;
            self.candidate = None;
            if self.learn_until.is_some() {
                self.learn_until = Some(now + self.learn_window);
            }
        }
        if moved || signalled_rtcp != self.signalled_rtcp {
            self.rtcp_learned = None;
        }
        self.signalled_rtcp = signalled_rtcp;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2000);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn filter(signalled: Option<SocketAddr>, learn_packets: u16) -> SourceFilter {
        SourceFilter::new(signalled, None, learn_packets, WINDOW)
    }

    #[test]
    fn without_a_signalled_address_the_first_source_is_taken() {
        let t0 = Instant::now();
        let mut f = filter(None, 4);
        assert_eq!(f.destination(), None);
        assert_eq!(f.admit(t0, addr(5000), Ssrc(1), 10), Admission::Learned);
        assert_eq!(f.admit(t0, addr(5000), Ssrc(1), 11), Admission::Accept);
        assert_eq!(f.destination(), Some(addr(5000)));
    }

    #[test]
    fn a_stray_packet_cannot_take_the_stream_from_the_signalled_address() {
        let t0 = Instant::now();
        let mut f = filter(Some(addr(4000)), 4);
        assert_eq!(f.admit(t0, addr(5000), Ssrc(1), 10), Admission::Drop);
        assert_eq!(f.destination(), Some(addr(4000)));
        for seq in 11..13 {
            assert_eq!(f.admit(t0, addr(5000), Ssrc(1), seq), Admission::Drop);
        }
        assert_eq!(f.admit(t0, addr(5000), Ssrc(1), 13), Admission::Learned);
        assert_eq!(f.destination(), Some(addr(5000)));
    }

    #[test]
    fn foreign_packets_are_dropped_once_a_source_is_established() {
        let t0 = Instant::now();
        let mut f = filter(None, 4);
        f.admit(t0, addr(5000), Ssrc(1), 10);
        for seq in [100, 300, 200, 100] {
            assert_eq!(f.admit(t0, addr(6666), Ssrc(9), seq), Admission::Drop);
        }
        assert_eq!(f.destination(), Some(addr(5000)));
    }

    #[test]
    fn switches_after_n_consecutive_packets_of_one_ssrc() {
        let t0 = Instant::now();
        let mut f = filter(None, 4);
        f.admit(t0, addr(5000), Ssrc(1), 10);
        for seq in 20..23 {
            assert_eq!(f.admit(t0, addr(6000), Ssrc(1), seq), Admission::Drop);
        }
        assert_eq!(f.admit(t0, addr(6000), Ssrc(1), 23), Admission::Learned);
        assert_eq!(f.admit(t0, addr(5000), Ssrc(1), 11), Admission::Drop);
        assert_eq!(f.destination(), Some(addr(6000)));
    }

    #[test]
    fn a_gap_or_a_different_ssrc_restarts_the_run() {
        let t0 = Instant::now();
        let mut f = filter(None, 3);
        f.admit(t0, addr(5000), Ssrc(1), 10);
        assert_eq!(f.admit(t0, addr(6000), Ssrc(1), 20), Admission::Drop);
        assert_eq!(f.admit(t0, addr(6000), Ssrc(1), 21), Admission::Drop);
        assert_eq!(f.admit(t0, addr(6000), Ssrc(1), 23), Admission::Drop); // gap
        assert_eq!(f.admit(t0, addr(6000), Ssrc(2), 24), Admission::Drop); // other SSRC
        assert_eq!(f.admit(t0, addr(6000), Ssrc(2), 25), Admission::Drop);
        assert_eq!(f.admit(t0, addr(6000), Ssrc(2), 26), Admission::Learned);
    }

    #[test]
    fn the_signalled_address_is_always_accepted_and_takes_the_stream_back() {
        let t0 = Instant::now();
        let mut f = filter(Some(addr(4000)), 2);
        f.start_window(t0);
        assert_eq!(f.admit(t0, addr(4000), Ssrc(1), 9), Admission::Accept);
        f.admit(t0, addr(5000), Ssrc(1), 10);
        assert_eq!(f.admit(t0, addr(5000), Ssrc(1), 11), Admission::Learned);
        // Even after the window: signalling vouches for it.
        assert_eq!(
            f.admit(at(t0, 5000), addr(4000), Ssrc(1), 12),
            Admission::Learned
        );
        assert_eq!(f.destination(), Some(addr(4000)));
    }

    #[test]
    fn a_changed_sdp_address_is_trusted_and_others_must_prove_themselves() {
        let t0 = Instant::now();
        let mut f = filter(Some(addr(4000)), 4);
        f.set_signalled(t0, Some(addr(4000)), None);
        assert_eq!(f.destination(), Some(addr(4000)));
        f.set_signalled(t0, Some(addr(7000)), None);
        assert_eq!(f.destination(), Some(addr(7000)));
        assert_eq!(f.admit(t0, addr(7002), Ssrc(3), 1), Admission::Drop);
        assert_eq!(f.admit(t0, addr(7000), Ssrc(3), 1), Admission::Accept);
    }

    #[test]
    fn after_the_window_an_in_sequence_stream_from_elsewhere_never_takes_over() {
        let t0 = Instant::now();
        let mut f = filter(Some(addr(4000)), 4);
        f.start_window(t0);
        assert_eq!(
            f.admit(at(t0, 20), addr(4000), Ssrc(1), 1),
            Admission::Accept
        );
        assert!(f.learning(at(t0, 1999)));
        assert!(!f.learning(at(t0, 2000)));
        for i in 0..50u16 {
            let t = at(t0, 3000 + u64::from(i) * 20);
            // The caller's SSRC or another one: both are foreign after the window.
            assert_eq!(f.admit(t, addr(6000), Ssrc(1), 100 + i), Admission::Drop);
            assert_eq!(f.admit(t, addr(6002), Ssrc(9), 500 + i), Admission::Drop);
        }
        assert_eq!(f.destination(), Some(addr(4000)));
        assert_eq!(
            f.admit(at(t0, 9000), addr(4000), Ssrc(1), 2),
            Admission::Accept
        );
    }

    #[test]
    fn a_nat_rewritten_source_is_learned_inside_the_window() {
        let t0 = Instant::now();
        // The SDP names the caller's private address; its RTP comes from the NAT's.
        let mut f = filter(Some(addr(4000)), 4);
        f.start_window(t0);
        for seq in 1..4 {
            assert_eq!(
                f.admit(at(t0, 100), addr(30000), Ssrc(5), seq),
                Admission::Drop
            );
        }
        assert_eq!(
            f.admit(at(t0, 160), addr(30000), Ssrc(5), 4),
            Admission::Learned
        );
        assert_eq!(f.destination(), Some(addr(30000)));
        // After the window, the learned source keeps the stream and nobody else gets it.
        assert_eq!(
            f.admit(at(t0, 5000), addr(30000), Ssrc(5), 5),
            Admission::Accept
        );
        for seq in 6..20 {
            assert_eq!(
                f.admit(at(t0, 5000), addr(31000), Ssrc(5), seq),
                Admission::Drop
            );
        }
        assert_eq!(f.destination(), Some(addr(30000)));
    }

    #[test]
    fn learning_is_open_until_the_window_starts_and_reopens_on_a_new_sdp_address() {
        let t0 = Instant::now();
        let mut f = filter(Some(addr(4000)), 1);
        // Before the dialog is confirmed: open however long the ringing took.
        assert!(f.learning(at(t0, 60_000)));
        f.start_window(at(t0, 60_000));
        f.start_window(at(t0, 61_000)); // only the first start counts
        assert!(!f.learning(at(t0, 62_000)));
        assert_eq!(
            f.admit(at(t0, 62_000), addr(5000), Ssrc(1), 1),
            Admission::Drop
        );
        // The same address again changes nothing.
        f.set_signalled(at(t0, 63_000), Some(addr(4000)), None);
        assert!(!f.learning(at(t0, 63_000)));
        f.set_signalled(at(t0, 63_000), Some(addr(7000)), None);
        assert!(f.learning(at(t0, 64_999)));
        assert_eq!(
            f.admit(at(t0, 64_000), addr(5000), Ssrc(1), 2),
            Admission::Learned
        );
        assert!(!f.learning(at(t0, 65_000)));
    }

    #[test]
    fn without_any_source_the_first_one_is_taken_even_after_the_window() {
        let t0 = Instant::now();
        let mut f = filter(None, 4);
        f.start_window(t0);
        assert!(f.learning(at(t0, 10_000)));
        assert_eq!(
            f.admit(at(t0, 10_000), addr(5000), Ssrc(1), 1),
            Admission::Learned
        );
        assert!(!f.learning(at(t0, 10_000)));
        for seq in 1..10 {
            assert_eq!(
                f.admit(at(t0, 10_020), addr(6000), Ssrc(1), seq),
                Admission::Drop
            );
        }
    }

    #[test]
    fn rtcp_is_learned_in_the_window_and_afterwards_only_expected_addresses_are_accepted() {
        let t0 = Instant::now();
        let mut f = filter(Some(addr(4000)), 4);
        assert_eq!(f.rtcp_destination(), Some(addr(4001)));
        f.start_window(t0);
        // NAT: the reports come from elsewhere, inside the window.
        assert_eq!(f.admit_rtcp(at(t0, 500), addr(30001)), Admission::Learned);
        assert_eq!(f.rtcp_destination(), Some(addr(30001)));
        assert_eq!(f.admit_rtcp(at(t0, 5000), addr(30001)), Admission::Accept);
        // After the window: a third party is dropped and does not redirect our reports.
        assert_eq!(f.admit_rtcp(at(t0, 5000), addr(6001)), Admission::Drop);
        assert_eq!(f.rtcp_destination(), Some(addr(30001)));
        // The address signalling implies is still accepted.
        assert_eq!(f.admit_rtcp(at(t0, 6000), addr(4001)), Admission::Learned);
        assert_eq!(f.rtcp_destination(), Some(addr(4001)));
        // a=rtcp wins over port + 1, and a changed one forgets what was learned.
        f.set_signalled(at(t0, 7000), Some(addr(4000)), Some(addr(4100)));
        assert_eq!(f.rtcp_destination(), Some(addr(4100)));
        assert_eq!(f.admit_rtcp(at(t0, 7000), addr(4001)), Admission::Drop);
    }
}
