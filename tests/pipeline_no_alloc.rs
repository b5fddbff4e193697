//! The per-packet receive path allocates nothing: an RTP datagram through
//! `rtp::Session::handle_rtp`, G.711 decode, the jitter buffer's `push` and `pop`, the
//! recording lane's `push`, `make_room`, `pop` and final `drain`, and the frame's push into an
//! rtrb ring like the speaker feed's — for 10 000 packets with jitter,
//! reordering, duplicates, bursty loss and sequence-number and timestamp wrap.
//!
//! It runs under `assert_no_alloc` (without `disable_release`, so in release builds too), whose
//! global allocator aborts the process on any allocation inside `assert_no_alloc(..)`: passing
//! means zero allocations on the path. The library forbids `unsafe`, so this test cannot install
//! a counting allocator of its own; the aborting one proves the same. It needs a test binary of
//! its own because the library must not install a global allocator.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use assert_no_alloc::{AllocDisabler, assert_no_alloc};
use earshot::media::frame::{FRAME_SAMPLES, Frame, SILENCE};
use earshot::media::g711::Law;
use earshot::media::jitter::{JitterBuffer, JitterConfig, Playout};
use earshot::media::jitter_sim::speech_like;
use earshot::media::record_lane::{Placed, RecordLane};
use earshot::rtp::{Session, SessionConfig, Ssrc};
use rtrb::{Producer, RingBuffer};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

const PACKETS: u64 = 10_000;

fn peer() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], 4000))
}

fn session(t0: Instant) -> Session {
    Session::new(
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
        },
        t0,
    )
}

fn push_frame(ring: &mut Producer<i16>, frame: &Frame) -> bool {
    match ring.write_chunk_uninit(frame.len()) {
        Ok(chunk) => {
            chunk.fill_from_iter(frame.iter().copied());
            true
        }
        Err(_) => false,
    }
}

#[test]
fn rtp_to_speaker_ring_never_allocates_through_loss_reorder_and_wrap() {
    let t0 = Instant::now();
    let mut session = session(t0);
    let mut jitter = JitterBuffer::new(JitterConfig::default());
    let mut lane = RecordLane::new();
    let (mut ring, mut speaker) = RingBuffer::<i16>::new(8000);
    // Every datagram of the run, built before the checked region; seq starts 300 before its
    // wrap and the timestamp 100 frames before its own.
    let seq0: u16 = 65_236;
    let ts0: u32 = u32::MAX - 160 * 100 + 1;
    let datagrams: Vec<[u8; 12 + FRAME_SAMPLES]> = (0..PACKETS)
        .map(|n| {
            let mut pcm = SILENCE;
            speech_like(n as u32 * 160, &mut pcm);
            let mut d = [0u8; 12 + FRAME_SAMPLES];
            d[..2].copy_from_slice(&[0x80, if n == 0 { 0x80 } else { 0x00 }]);
            d[2..4].copy_from_slice(&seq0.wrapping_add(n as u16).to_be_bytes());
            d[4..8].copy_from_slice(&ts0.wrapping_add(n as u32 * 160).to_be_bytes());
            d[8..12].copy_from_slice(&0xcafe_f00du32.to_be_bytes());
            Law::Ulaw.encode(&pcm, &mut d[12..]);
            d
        })
        .collect();
    // Arrival order and times: 0–40 ms jitter, one pair in ten swapped, 3 % duplicated, and
    // Gilbert–Elliott-like loss bursts (about 5 %).
    let mut x = 0x2545_f491u32;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut arrivals: Vec<(u64, usize)> = Vec::new();
    let mut bad = false;
    for n in 0..PACKETS {
        bad = if bad {
            rand() % 10 >= 3
        } else {
            rand() % 100 < 2
        };
        if rand() % 100 < if bad { 60 } else { 1 } {
            continue;
        }
        let slot = if (n / 2) % 10 == 3 { n ^ 1 } else { n };
        let at = 20 * slot + u64::from(rand() % 40);
        // A 200 ms stall every 10 s: what was sent during it arrives at its end, and the
        // buffer compresses that backlog away (time-scale compression).
        let at = if (300..310).contains(&(n % 500)) {
            at.max(20 * (n - n % 500 + 310))
        } else {
            at
        };
        arrivals.push((at, n as usize));
        if rand() % 100 < 3 {
            arrivals.push((at + 1, n as usize));
        }
    }
    arrivals.sort_by_key(|&(at, n)| (at, n));
    let received = arrivals.len();

    let (played, concealed, pushed_frames, recorded) = assert_no_alloc(|| {
        let (mut played, mut concealed, mut pushed_frames) = (0u64, 0u64, 0u64);
        let mut recorded = 0u64;
        let mut frame = SILENCE;
        let mut lane_frame = SILENCE;
        let mut next = 0;
        for k in 0..PACKETS + 20 {
            let tick_ms = 20 * k + 60;
            while let Some(&(at, n)) = arrivals.get(next).filter(|(at, _)| *at <= tick_ms) {
                next += 1;
                let now = t0 + Duration::from_millis(at);
                if let Some(audio) = session.handle_rtp(now, peer(), &datagrams[n]) {
                    let mut pcm = [0i16; 3 * FRAME_SAMPLES];
                    let len = audio.payload.len().min(pcm.len());
                    Law::Ulaw.decode(&audio.payload[..len], &mut pcm[..len]);
                    jitter.push(
                        now,
                        audio.seq,
                        audio.timestamp,
                        audio.marker,
                        audio.ssrc.0,
                        &pcm[..len],
                    );
                    while lane.push(now, audio.timestamp, audio.ssrc.0, &pcm[..len]) == Placed::Full
                    {
                        lane.make_room(&mut lane_frame);
                        recorded += 1;
                    }
                }
            }
            while lane
                .pop(t0 + Duration::from_millis(tick_ms), &mut lane_frame)
                .is_some()
            {
                recorded += 1;
            }
            match jitter.pop(t0 + Duration::from_millis(tick_ms), &mut frame) {
                Playout::Played { .. } => played += 1,
                Playout::Concealed => concealed += 1,
                Playout::Silence => {}
            }
            if push_frame(&mut ring, &frame) {
                pushed_frames += 1;
            }
            // The mixer's side drains the ring (wait-free, no allocation either).
            if ring.slots() < FRAME_SAMPLES {
                let n = speaker.slots();
                if let Ok(chunk) = speaker.read_chunk(n) {
                    chunk.commit_all();
                }
            }
        }
        while lane.drain(&mut lane_frame).is_some() {
            recorded += 1;
        }
        (played, concealed, pushed_frames, recorded)
    });

    let stats = session.stats();
    let js = jitter.stats().clone();
    assert!(received > 9_000 && received < 10_300, "{received}");
    assert!(stats.duplicates > 100, "duplicates {}", stats.duplicates);
    assert!(stats.packets_lost > 200, "lost {}", stats.packets_lost);
    // Every packet that reached the buffer is accounted for: played, given up as late, or
    // dropped to bring playout back to its target after a loss burst was waited through.
    // A compressed tick plays two frames.
    assert!(js.accelerated > 0, "{js:?}");
    assert_eq!(js.played, played + js.accelerated);
    let dropped = js.duplicates + js.dropped_overflow + js.strays + js.malformed;
    assert_eq!(
        js.pushed,
        js.played + js.late + js.discarded + dropped,
        "{js:?}"
    );
    // Measured: played 8 867, late 141, discarded 461 of 9 469 taken.
    assert!(played > 8_500, "played {played}, {js:?}");
    assert!(js.discarded < PACKETS / 15, "{js:?}");
    assert!(js.late < PACKETS / 50, "{js:?}");
    assert!(concealed > 200, "concealed {concealed}");
    assert_eq!(pushed_frames, PACKETS + 20);
    // The recording lane put every packet in its place: one frame per packet sent (the run
    // starts and ends with packets that arrived), none of the late ones the playout gave up.
    let lane_stats = *lane.stats();
    assert_eq!(recorded, PACKETS, "{lane_stats:?}");
    assert_eq!(lane_stats.late, 0, "{lane_stats:?}");
    assert_eq!(lane_stats.restarts, 0, "{lane_stats:?}");
}
