//! Which address may send us RTP, and where ours goes: symmetric RTP (RFC 4961) with strict
//! source learning, the defence Asterisk (`strictrtp`) and rtpengine use against "RTP Bleed".
//!
//! The first source is taken; packets from the address signalled in SDP are always taken. Once a
//! source is established, packets from any other address are dropped, unless that address sends
//! `learn_packets` consecutive packets of one SSRC (sequence number +1 each): then it becomes the
//! source (the peer's NAT binding or media relay moved) and our RTP follows it.

use std::net::SocketAddr;

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
    /// The address packets are accepted from and sent to once known.
    established: Option<SocketAddr>,
    /// A foreign address working towards `learn_packets`.
    candidate: Option<Candidate>,
    /// Consecutive in-sequence packets a foreign address needs to take over (at least 1).
    learn_packets: u16,
}

impl SourceFilter {
    pub(crate) fn new(signalled: Option<SocketAddr>, learn_packets: u16) -> Self {
        SourceFilter {
            signalled,
            // The signalled address is trusted from the start: anyone else must prove itself
            // with consecutive packets, or a single stray packet could steal the stream.
            established: signalled,
            candidate: None,
            learn_packets: learn_packets.max(1),
        }
    }

    /// Judge one packet from `from` carrying `ssrc` and `seq`.
    pub(crate) fn admit(&mut self, from: SocketAddr, ssrc: Ssrc, seq: u16) -> Admission {
        if self.established == Some(from) {
            return Admission::Accept;
        }
        if self.established.is_none() || self.signalled == Some(from) {
            return self.establish(from);
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

    /// Where our RTP goes: the learned source, else the SDP address.
    pub(crate) fn destination(&self) -> Option<SocketAddr> {
        self.established.or(self.signalled)
    }

    /// The RTP address from SDP.
    pub(crate) fn signalled(&self) -> Option<SocketAddr> {
        self.signalled
    }

    /// New SDP address after a re-INVITE. A changed address reopens learning (the peer moved,
    /// and the old source must not keep the stream); an unchanged one keeps what was learned.
    pub(crate) fn set_signalled(&mut self, signalled: Option<SocketAddr>) {
        if signalled != self.signalled {
            self.signalled = signalled;
            self.established = signalled;
            self.candidate = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn without_a_signalled_address_the_first_source_is_taken() {
        let mut f = SourceFilter::new(None, 4);
        assert_eq!(f.destination(), None);
        assert_eq!(f.admit(addr(5000), Ssrc(1), 10), Admission::Learned);
        assert_eq!(f.admit(addr(5000), Ssrc(1), 11), Admission::Accept);
        assert_eq!(f.destination(), Some(addr(5000)));
    }

    #[test]
    fn a_stray_packet_cannot_take_the_stream_from_the_signalled_address() {
        let mut f = SourceFilter::new(Some(addr(4000)), 4);
        assert_eq!(f.admit(addr(5000), Ssrc(1), 10), Admission::Drop);
        assert_eq!(f.destination(), Some(addr(4000)));
        for seq in 11..13 {
            assert_eq!(f.admit(addr(5000), Ssrc(1), seq), Admission::Drop);
        }
        assert_eq!(f.admit(addr(5000), Ssrc(1), 13), Admission::Learned);
        assert_eq!(f.destination(), Some(addr(5000)));
    }

    #[test]
    fn foreign_packets_are_dropped_once_a_source_is_established() {
        let mut f = SourceFilter::new(None, 4);
        f.admit(addr(5000), Ssrc(1), 10);
        for seq in [100, 300, 200, 100] {
            assert_eq!(f.admit(addr(6666), Ssrc(9), seq), Admission::Drop);
        }
        assert_eq!(f.destination(), Some(addr(5000)));
    }

    #[test]
    fn switches_after_n_consecutive_packets_of_one_ssrc() {
        let mut f = SourceFilter::new(None, 4);
        f.admit(addr(5000), Ssrc(1), 10);
        for seq in 20..23 {
            assert_eq!(f.admit(addr(6000), Ssrc(1), seq), Admission::Drop);
        }
        assert_eq!(f.admit(addr(6000), Ssrc(1), 23), Admission::Learned);
        assert_eq!(f.admit(addr(5000), Ssrc(1), 11), Admission::Drop);
        assert_eq!(f.destination(), Some(addr(6000)));
    }

    #[test]
    fn a_gap_or_a_different_ssrc_restarts_the_run() {
        let mut f = SourceFilter::new(None, 3);
        f.admit(addr(5000), Ssrc(1), 10);
        assert_eq!(f.admit(addr(6000), Ssrc(1), 20), Admission::Drop);
        assert_eq!(f.admit(addr(6000), Ssrc(1), 21), Admission::Drop);
        assert_eq!(f.admit(addr(6000), Ssrc(1), 23), Admission::Drop); // gap
        assert_eq!(f.admit(addr(6000), Ssrc(2), 24), Admission::Drop); // other SSRC
        assert_eq!(f.admit(addr(6000), Ssrc(2), 25), Admission::Drop);
        assert_eq!(f.admit(addr(6000), Ssrc(2), 26), Admission::Learned);
    }

    #[test]
    fn the_signalled_address_is_always_accepted_and_takes_the_stream_back() {
        let mut f = SourceFilter::new(Some(addr(4000)), 2);
        assert_eq!(f.admit(addr(4000), Ssrc(1), 9), Admission::Accept);
        f.admit(addr(5000), Ssrc(1), 10);
        assert_eq!(f.admit(addr(5000), Ssrc(1), 11), Admission::Learned);
        assert_eq!(f.admit(addr(4000), Ssrc(1), 12), Admission::Learned);
        assert_eq!(f.destination(), Some(addr(4000)));
    }

    #[test]
    fn a_changed_sdp_address_is_trusted_and_others_must_prove_themselves() {
        let mut f = SourceFilter::new(Some(addr(4000)), 4);
        f.set_signalled(Some(addr(4000)));
        assert_eq!(f.destination(), Some(addr(4000)));
        f.set_signalled(Some(addr(7000)));
        assert_eq!(f.destination(), Some(addr(7000)));
        assert_eq!(f.admit(addr(7002), Ssrc(3), 1), Admission::Drop);
        assert_eq!(f.admit(addr(7000), Ssrc(3), 1), Admission::Accept);
    }
}
