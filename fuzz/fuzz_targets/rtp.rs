//! Fuzz target: the RTP/RTCP session (`earshot::rtp`), RFC 3550 / RFC 4733 receive paths.
//!
//! The input is a script of datagrams: each step is one control byte (which socket, which of
//! two source addresses, how far virtual time moves) and a length byte, then that many bytes.
//! Whatever arrives, the session must not panic, audio it returns must lie inside the datagram
//! after the 12-byte header, and timers and RTCP output must keep working.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use earshot::rtp::{RtpPacket, Session, SessionConfig, Ssrc};
use libfuzzer_sys::fuzz_target;

fn config() -> SessionConfig {
    SessionConfig {
        local_ssrc: Ssrc(0x1111),
        payload_type: 0,
        dtmf_pt: Some(101),
        remote_rtp: Some(SocketAddr::from(([192, 0, 2, 1], 4000))),
        remote_rtcp: None,
        learn_packets: 2,
        learn_window: Duration::from_secs(2),
        peer_grace: Duration::ZERO,
        rtcp_interval: Duration::from_secs(1),
        rtcp_seed: 0,
        cname: "fuzz".into(),
        clock_rate: 8000,
        initial_seq: 0,
        initial_ts: 0,
        wallclock: SystemTime::UNIX_EPOCH,
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut session = Session::new(config(), t0);
    let sources = [
        SocketAddr::from(([192, 0, 2, 1], 4000)),
        SocketAddr::from(([198, 51, 100, 9], 5000)),
    ];
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (datagram, after) = tail.split_at(take);
        rest = after;
        now += Duration::from_millis(u64::from(control >> 2) * 5);
        let from = sources[usize::from(control & 1)];
        if control & 2 == 0 {
            let parsed_len = RtpPacket::parse(datagram).map(|p| p.payload.len());
            if let Some(audio) = session.handle_rtp(now, from, datagram) {
                assert!(audio.payload.len() + 12 <= datagram.len());
                assert_eq!(Ok(audio.payload.len()), parsed_len);
            }
        } else {
            session.handle_rtcp(now, from, datagram);
        }
        if session
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now)
        {
            session.handle_timeout(now);
        }
        let mut buf = [0u8; 256];
        let _ = session.send_audio(now, &[0xff; 160], 160, &mut buf);
        while session.poll_transmit().is_some() {}
        while session.poll_event().is_some() {}
    }
    let _ = session.bye(now);
    let _ = session.stats().jitter_ms();
});
