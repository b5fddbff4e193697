//! RTP/RTCP socket pairs for calls (RFC 3550 §11: RTP on an even port, RTCP on the next one),
//! handed out round-robin from `[rtp].ports`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use tokio::net::UdpSocket;

use crate::config::PortRange;

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
    /// Where the next search starts, so ports of just-ended calls are reused last. The lock is
    /// held for one addition: allocations come from the SIP task and the Twilio handlers.
    next: Mutex<u16>,
}

impl PortAllocator {
    pub fn new(ip: IpAddr, range: PortRange) -> Self {
        Self {
            ip,
            range,
            next: Mutex::new(range.start),
        }
    }

    /// Binds the next free RTP/RTCP pair.
    pub fn allocate(&self) -> io::Result<RtpSockets> {
        let pairs = self.range.pairs().max(1);
        for _ in 0..pairs {
            let port = self.advance();
            let Ok(rtp) = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port)) else {
                continue;
            };
            let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(self.ip, port + 1)) else {
                continue;
            };
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            return Ok(RtpSockets {
                rtp: UdpSocket::from_std(rtp)?,
                rtcp: UdpSocket::from_std(rtcp)?,
            });
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("no free RTP port pair in {}", self.range),
        ))
    }

    fn advance(&self) -> u16 {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let port = *next;
        let following = port.saturating_add(2);
        *next = if following.saturating_add(1) > self.range.end {
            self.range.start
        } else {
            following
        };
        port
    }
}
