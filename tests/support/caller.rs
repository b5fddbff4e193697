//! A hand-written SIP caller on loopback, for the RTP tests: a signalling socket plus an
//! RTP/RTCP pair on consecutive ports, raw INVITE/ACK/BYE, and RTP packets built by hand.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::sip::{self, Message};

/// How long [`Caller::invite`] waits for a final response.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A caller: signalling socket plus an RTP/RTCP pair on consecutive ports (RTP even).
pub struct Caller {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl Caller {
    /// Binds the sockets on 127.0.0.1; reads time out after 20 ms.
    pub fn new() -> Caller {
        loop {
            let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = rtp.local_addr().unwrap().port();
            if !port.is_multiple_of(2) {
                continue;
            }
            let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) else {
                continue;
            };
            let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
            for s in [&sip, &rtp, &rtcp] {
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            }
            return Caller { sip, rtp, rtcp };
        }
    }

    pub fn sip_addr(&self) -> SocketAddr {
        self.sip.local_addr().unwrap()
    }

    pub fn rtp_addr(&self) -> SocketAddr {
        self.rtp.local_addr().unwrap()
    }

    /// Sends `invite` and returns the final response, without ACKing a 2xx.
    pub fn invite(&self, target: SocketAddr, invite: &[u8]) -> Message {
        self.sip.send_to(invite, target).unwrap();
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sip.recv_from(&mut buf) {
                let msg = Message::parse(&buf[..n]).unwrap();
                if msg.status().is_some_and(|s| s >= 200) {
                    return msg;
                }
            }
        }
        panic!("no final response to the INVITE");
    }

    /// Calls `target` offering media at our RTP socket, ACKs the 200 OK and returns it.
    pub fn call(&self, target: SocketAddr, call_id: &str) -> Message {
        let invite = sip::invite(self.sip_addr(), target, call_id, self.rtp_addr());
        let ok = self.invite(target, &invite);
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        self.send_in_dialog("ACK", &ok, target, 1);
        ok
    }

    /// Sends an in-dialog request (`ACK`, `BYE`) for the dialog of `ok`.
    pub fn send_in_dialog(&self, method: &str, ok: &Message, target: SocketAddr, cseq: u32) {
        let request = sip::in_dialog(method, ok, self.sip_addr(), cseq);
        self.sip.send_to(&request, target).unwrap();
    }
}

/// An RTP packet: version 2, payload type 0 (PCMU), `payload` after the 12-byte header.
pub fn rtp_packet_with(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A PCMU packet of 20 ms of silence.
pub fn rtp_packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    rtp_packet_with(seq, ts, ssrc, &[0xff; 160])
}
