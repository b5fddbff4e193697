//! The media real-time promise: after construction, the jitter buffer's `push` and `pop`
//! (concealment and time-scale compression included) and the G.711 codec never allocate. Any allocation inside
//! `assert_no_alloc` aborts this test binary (debug builds; release builds disable the check).

use assert_no_alloc::{AllocDisabler, assert_no_alloc};
use earshot::media::frame::SILENCE;
use earshot::media::g711::Law;
use earshot::media::jitter::{JitterBuffer, JitterConfig};
use earshot::media::jitter_sim::speech_like;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

#[test]
fn push_and_pop_never_allocate_through_loss_reorder_resync_and_floods() {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut out = SILENCE;
    let mut pcm = [0i16; 480];
    for (i, s) in pcm.iter_mut().enumerate() {
        *s = ((i as f32 * 0.35).sin() * 9000.0) as i16;
    }
    let mut codes = [0u8; 480];
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);

    let played = assert_no_alloc(|| {
        let mut played = 0u32;
        let mut x = 7u32;
        for k in 0..6000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let phase = k / 1000;
            let ssrc = if phase >= 3 { 2 } else { 1 };
            let ts_base: u32 = if phase >= 4 { 0x8000_0000 } else { 0 };
            let send = u64::from(k) * 20;
            let jitter = u64::from(x >> 16) % 60;
            let len = [160usize, 80, 240, 480][(k as usize / 500) % 4];
            let lost = x.is_multiple_of(17);
            if !lost {
                let seq = (k as u16).wrapping_add(65000);
                let ts = ts_base.wrapping_add(k.wrapping_mul(160));
                Law::Ulaw.encode(&pcm[..len], &mut codes[..len]);
                let mut decoded = [0i16; 480];
                Law::Ulaw.decode(&codes[..len], &mut decoded[..len]);
                jb.push(
                    at(send + jitter),
                    seq,
                    ts,
                    k % 250 == 0,
                    ssrc,
                    &decoded[..len],
                );
                if x.is_multiple_of(23) {
                    jb.push(at(send + jitter), seq, ts, false, ssrc, &decoded[..len]);
                }
            }
            if phase == 5 {
                // A flood of absurd packets.
                jb.push(at(send), (x >> 8) as u16, x, x & 1 == 0, x % 5, &pcm[..160]);
            }
            if !matches!(
                jb.pop(at(send), &mut out),
                earshot::media::jitter::Playout::Silence
            ) {
                played += 1;
            }
        }
        played
    });
    assert!(played > 3000, "only {played} frames played or concealed");
    assert!(jb.stats().resets >= 1);
}

#[test]
fn a_stalls_backlog_is_compressed_without_allocating() {
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut out = SILENCE;
    let mut pcm = SILENCE;
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // A 200 ms stall every 3 s: the packets sent during it arrive together at its end.
    let arrival = |k: u64| {
        let stall = k % 150;
        if (100..110).contains(&stall) {
            20 * (k - stall + 110)
        } else {
            20 * k
        }
    };
    assert_no_alloc(|| {
        let mut next = 0u64;
        for tick in 0..3000u64 {
            let now = 20 * tick;
            while next < 3000 && arrival(next) <= now {
                speech_like(next as u32 * 160, &mut pcm);
                jb.push(
                    at(arrival(next)),
                    next as u16,
                    next as u32 * 160,
                    false,
                    9,
                    &pcm,
                );
                next += 1;
            }
            jb.pop(at(now), &mut out);
        }
    });
    let stats = jb.stats();
    assert!(stats.accelerated > 100, "{stats:?}");
    assert_eq!((stats.late, stats.discarded), (0, 0), "{stats:?}");
}
