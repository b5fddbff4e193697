//! RTP/RTCP socket pairs for calls (RFC 3550 §11: RTP on an even port, RTCP on the next one),
//! handed out at random from `[rtp].ports`.
//!
//! Random, not round-robin: sequential ports let anyone who saw one call's SDP guess the next
//! call's media port and race its caller with injected RTP during source learning (the RTP
//! Bleed and injection attacks rtpengine and Asterisk also answer with random ports, RFC 6056
//! §3.3.1 reasons the same way for source ports). A bounded number of random pairs is tried
//! first; if all are taken, one sweep of the whole range from a random pair finds any that is
//! still free, so a nearly full range fails only when it really is full.

use std::io;
use std::net::{IpAddr, SocketAddr};

use rand::Rng;
use tokio::net::UdpSocket;

use crate::config::PortRange;

/// Random pairs tried before the sweep.
const RANDOM_PROBES: usize = 32;

/// One call's media sockets.
#[derive(Debug)]
pub struct RtpSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl RtpSockets {
    pub fn rtp_port(&self) -> u16 {
        self.rtp.local_addr().map_or(0, |a| a.port())
    }
}

/// Allocates port pairs. Ports in use by anyone (another call, another program) are skipped
/// because the bind fails; nothing is reserved, so an ended call frees its pair by dropping it.
#[derive(Debug)]
pub struct PortAllocator {
    ip: IpAddr,
    range: PortRange,
}

impl PortAllocator {
    pub fn new(ip: IpAddr, range: PortRange) -> Self {
        Self { ip, range }
    }

    /// Binds a free RTP/RTCP pair chosen at random. `AddrInUse` when none is free (the
    /// caller counts it).
    pub fn allocate(&self) -> io::Result<RtpSockets> {
        let pairs = self.range.pairs();
        let mut rng = rand::rng();
        let probes: Vec<usize> = (0..RANDOM_PROBES.min(pairs))
            .map(|_| rng.random_range(0..pairs))
            .collect();
        let start = if pairs == 0 {
            0
        } else {
            rng.random_range(0..pairs)
        };
        let sweep = (0..pairs).map(|i| (start + i) % pairs);
        for index in probes.into_iter().chain(sweep) {
            if let Some(sockets) = self.bind_pair(index)? {
                return Ok(sockets);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free RTP port pair in {}", self.range),
        ))
    }

    /// Binds pair `index` of the range; `None` when either port is taken.
    fn bind_pair(&self, index: usize) -> io::Result<Option<RtpSockets>> {
        let Some(port) = u16::try_from(index * 2)
            .ok()
            .and_then(|offset| self.range.start.checked_add(offset))
            .filter(|port| port.checked_add(1).is_some_and(|odd| odd <= self.range.end))
        else {
            return Ok(None);
        };
        let Ok(rtp) = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port)) else {
            return Ok(None);
        };
        let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1)) else {
            return Ok(None);
        };
        rtp.set_nonblocking(true)?;
        rtcp.set_nonblocking(true)?;
        Ok(Some(RtpSockets {
            rtp: UdpSocket::from_std(rtp)?,
            rtcp: UdpSocket::from_std(rtcp)?,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use super::*;

    fn allocator(start: u16, end: u16) -> PortAllocator {
        PortAllocator::new(IpAddr::V4(Ipv4Addr::LOCALHOST), PortRange { start, end })
    }

    #[tokio::test]
    async fn pairs_are_even_odd_in_range_and_not_sequential() {
        let ports = allocator(42000, 43999);
        let held: Vec<RtpSockets> = (0..20).map(|_| ports.allocate().unwrap()).collect();
        let rtp: Vec<u16> = held.iter().map(RtpSockets::rtp_port).collect();
        for (s, port) in held.iter().zip(&rtp) {
            assert!(port % 2 == 0 && (42000..=43998).contains(port), "{port}");
            assert_eq!(s.rtcp.local_addr().unwrap().port(), port + 1);
        }
        assert_eq!(rtp.iter().collect::<HashSet<_>>().len(), 20, "{rtp:?}");
        // Round-robin would give 42000, 42002, ...: random ports are neither consecutive nor
        // (with overwhelming odds, 1/20!) increasing.
        let consecutive = rtp.windows(2).filter(|w| w[1] == w[0] + 2).count();
        assert!(consecutive < 5, "{rtp:?}");
        assert!(rtp.windows(2).any(|w| w[1] < w[0]), "{rtp:?}");
    }

    #[tokio::test]
    async fn a_full_range_is_found_by_the_sweep_and_then_refused() {
        // Three pairs: random probes may miss the last free one; the sweep must not.
        let ports = allocator(44100, 44105);
        let held: Vec<RtpSockets> = (0..3).map(|_| ports.allocate().unwrap()).collect();
        let mut got: Vec<u16> = held.iter().map(RtpSockets::rtp_port).collect();
        got.sort_unstable();
        assert_eq!(got, vec![44100, 44102, 44104]);
        let err = ports.allocate().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(held);
        assert!(ports.allocate().is_ok(), "freed pairs are reused");
    }
}
