//! Proves the RTP audio path keeps its real-time promise: `Session::handle_rtp` on audio packets
//! and `Session::send_audio` never allocate. Runs under `assert_no_alloc`, whose global allocator
//! aborts the process on any allocation inside `assert_no_alloc(..)`; it needs a test binary of
//! its own because the library must not install a global allocator.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use assert_no_alloc::{AllocDisabler, assert_no_alloc};
use earshot::rtp::{Session, SessionConfig, Ssrc};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

fn peer() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], 4000))
}

fn config() -> SessionConfig {
    SessionConfig {
        local_ssrc: Ssrc(0x1111),
        payload_type: 0,
        dtmf_pt: Some(101),
        remote_rtp: Some(peer()),
        remote_rtcp: None,
        learn_packets: 4,
        learn_window: Duration::from_secs(2),
        peer_grace: Duration::ZERO,
        rtcp_interval: Duration::from_secs(5),
        rtcp_seed: 1,
        cname: "earshot@test".into(),
        clock_rate: 8000,
        initial_seq: 1,
        initial_ts: 1,
        wallclock: SystemTime::UNIX_EPOCH,
    }
}

/// A PCMU packet: 12-byte header and 160 bytes of payload.
fn audio_packet(seq: u16, timestamp: u32) -> [u8; 172] {
    let mut d = [0xffu8; 172];
    d[..12].copy_from_slice(&[0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xca, 0xfe]);
    d[2..4].copy_from_slice(&seq.to_be_bytes());
    d[4..8].copy_from_slice(&timestamp.to_be_bytes());
    d
}

#[test]
fn handle_rtp_of_audio_packets_does_not_allocate() {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    let packets: Vec<[u8; 172]> = (0..200u16)
        .map(|i| audio_packet(65500u16.wrapping_add(i), u32::from(i) * 160))
        .collect();
    let played = assert_no_alloc(|| {
        let mut played = 0usize;
        for (i, d) in packets.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            if let Some(audio) = session.handle_rtp(now, peer(), d) {
                played += audio.payload.len();
            }
        }
        played
    });
    assert_eq!(played, 200 * 160);
    assert_eq!(session.stats().packets_lost, 0);
}

#[test]
fn send_audio_does_not_allocate() {
    let t0 = Instant::now();
    let mut session = Session::new(config(), t0);
    session.confirm(t0);
    let payload = [0xd5u8; 160];
    let mut buf = [0u8; 1500];
    let sent = assert_no_alloc(|| {
        let mut sent = 0usize;
        for i in 0..200u64 {
            let now = t0 + Duration::from_millis(20 * i);
            if let Some((_, n)) = session.send_audio(now, &payload, 160, &mut buf) {
                sent += n;
            }
        }
        sent
    });
    assert_eq!(sent, 200 * 172);
}
