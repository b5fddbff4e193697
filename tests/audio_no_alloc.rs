//! The audio callbacks' real-time promise, checked: the mixer, the whole cpal output callback
//! body and the microphone's capture callback body run under `assert_no_alloc`, which aborts
//! the process on any allocation or free.
//!
//! `assert_no_alloc` is built without its `disable_release` feature (see Cargo.toml), so the
//! check holds in release test runs too. The checker is thread-local:
//! allocations made by the test harness on other threads are not seen.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

use assert_no_alloc::{AllocDisabler, assert_no_alloc};
use cpal::{
    InputCallbackInfo, InputStreamTimestamp, OutputCallbackInfo, OutputStreamTimestamp,
    StreamInstant,
};
use earshot::audio::capture::{self, CaptureCounters};
use earshot::audio::device::{Callback, CallbackProbe};
use earshot::audio::mixer::{self, InputFeed};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

/// Environment variable that turns the canary test into the child that must abort.
const CANARY_CHILD: &str = "EARSHOT_NO_ALLOC_CANARY_CHILD";

fn tone_frame(n: &mut u32) -> [i16; 160] {
    let mut frame = [0i16; 160];
    for s in &mut frame {
        *s = (((*n % 8) as i16) - 4) * 2000;
        *n += 1;
    }
    frame
}

fn info() -> OutputCallbackInfo {
    OutputCallbackInfo::new(OutputStreamTimestamp {
        callback: StreamInstant::from_millis(1000),
        playback: StreamInstant::from_millis(1025),
    })
}

#[test]
fn mixer_fill_never_allocates_through_adds_removes_full_and_empty_rings() {
    let (mut mixer, mut control) = mixer::channel(48_000, 8);
    let mut out = vec![0.0f32; 480 * 2];
    let mut n = 0u32;

    // Empty mixer; then inputs arriving through the command ring.
    assert_no_alloc(|| mixer.fill(&mut out, 2));
    let mut feeds: Vec<InputFeed> = (0..4)
        .map(|id| control.add(id, id % 2 == 0).unwrap())
        .collect();
    assert_no_alloc(|| mixer.fill(&mut out, 2));
    assert_eq!(mixer.len(), 4);

    // Steady state with listen toggled, pushes interleaved with callbacks.
    for round in 0..400 {
        if round % 2 == 0 {
            for feed in &mut feeds {
                let frame = tone_frame(&mut n);
                assert_no_alloc(|| feed.push(&frame));
            }
        }
        if round % 50 == 0 {
            for feed in &feeds {
                feed.set_listen(!feed.listen());
            }
        }
        assert_no_alloc(|| mixer.fill(&mut out, 2));
    }

    // A full ring (overrun on the producer side, skip on the mixer side) and an empty one.
    while feeds[0].push(&tone_frame(&mut n)) {}
    assert_no_alloc(|| mixer.fill(&mut out, 2));
    for _ in 0..100 {
        assert_no_alloc(|| mixer.fill(&mut out, 2));
    }
    assert!(mixer.counters().overruns.load(Relaxed) >= 1);
    assert!(mixer.counters().skips.load(Relaxed) >= 1);
    assert!(mixer.counters().underruns.load(Relaxed) >= 1);

    // Removal by command and by abandonment: retired, not freed, in the callback.
    assert!(control.remove(1));
    drop(feeds.remove(2));
    assert_no_alloc(|| mixer.fill(&mut out, 2));
    assert_eq!(mixer.len(), 2);
    assert_eq!(control.collect_retired(), 2);

    // More adds than slots: the extra ones wait in the command ring.
    let mut extra: Vec<InputFeed> = (10..20).map(|id| control.add(id, true).unwrap()).collect();
    assert_no_alloc(|| mixer.fill(&mut out, 2));
    assert_eq!(mixer.len(), 8);

    // Churn without collecting until the retired ring is full: finished inputs stay put.
    for round in 0..12 {
        extra.clear();
        feeds.clear();
        assert_no_alloc(|| mixer.fill(&mut out, 2));
        // Once the mixer is clogged the command ring fills too, and adds are refused.
        extra = (0..8)
            .filter_map(|i| control.add(100 + round * 8 + i, true).ok())
            .collect();
        assert_no_alloc(|| mixer.fill(&mut out, 2));
    }
    assert!(control.collect_retired() > 0);

    // Once collected, everything finished leaves and the mixer empties.
    drop(extra);
    for _ in 0..100 {
        assert_no_alloc(|| mixer.fill(&mut out, 2));
        control.collect_retired();
    }
    assert!(mixer.is_empty());
}

#[test]
#[allow(clippy::disallowed_methods)]
fn the_device_callback_body_never_allocates_for_f32_or_i16_devices() {
    let (mixer, mut control) = mixer::channel(44_100, 4);
    let (home_tx, home) = mpsc::channel();
    let probe = Arc::new(CallbackProbe::default());
    let (mut callback, mut handoff) = Callback::new(2, home_tx, Arc::clone(&probe));
    let mut feed = control.add(1, true).unwrap();
    let mut n = 0u32;
    let info = info();
    let mut f32_out = vec![1.0f32; 441 * 2 + 1];

    // Until the mixer is handed over, the stream plays silence.
    assert_no_alloc(|| callback.render_f32(&mut f32_out, &info));
    assert!(f32_out.iter().all(|&x| x == 0.0));
    assert!(handoff.push(mixer).is_ok());
    // Bigger than the callback's scratch buffer, so the i16 path works in several blocks.
    let mut i16_out = vec![0i16; 9000 * 2];
    for round in 0..200 {
        let frame = tone_frame(&mut n);
        // Stamped with an arrival time: the callback measures latency from the host's
        // playback timestamp, without allocating either.
        let arrival = std::time::Instant::now();
        assert_no_alloc(|| feed.push_from(&frame, arrival, arrival));
        assert_no_alloc(|| callback.render_f32(&mut f32_out, &info));
        if round % 20 == 0 {
            assert_no_alloc(|| callback.render_i16(&mut i16_out, &info));
        }
    }
    assert_eq!(
        f32_out[f32_out.len() - 1],
        0.0,
        "the partial frame is zeroed"
    );
    assert!(f32_out.iter().any(|&x| x != 0.0));
    assert_eq!(probe.latency_us.load(Relaxed), 25_000);
    assert_eq!(probe.callbacks.load(Relaxed), 211);
    let latency = control.counters().latency.snapshot();
    assert!(latency.count() > 100, "{}", latency.count());
    assert!(latency.quantile_ms(0.5).unwrap() >= 25.0);

    // Dropping the callback (as cpal does with a dead stream) sends the mixer home.
    drop(callback);
    let mixer = home.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(mixer.len(), 1);
}

#[test]
fn the_capture_callback_body_never_allocates_with_room_or_with_a_full_ring() {
    let counters = Arc::new(CaptureCounters::default());
    let (mut callback, mut reader) = capture::channel(48_000, 2, Arc::clone(&counters));
    let info = InputCallbackInfo::new(InputStreamTimestamp {
        callback: StreamInstant::from_millis(1010),
        capture: StreamInstant::from_millis(1000),
    });
    let stereo_f32: Vec<f32> = (0..960).map(|i| ((i % 48) as f32 / 48.0) - 0.5).collect();
    let stereo_i16: Vec<i16> = (0..960).map(|i| ((i % 48) as i16 - 24) * 500).collect();
    let mut frame = [0i16; 160];
    // Read at the network's pace for a while, then stop reading until the ring is full.
    for round in 0..200 {
        assert_no_alloc(|| callback.capture_f32(&stereo_f32, &info));
        assert_no_alloc(|| callback.capture_i16(&stereo_i16, &info));
        if round < 50 {
            reader.read_frame(&mut frame);
            reader.read_frame(&mut frame);
        }
    }
    assert!(counters.overruns.load(Relaxed) > 0, "the ring never filled");
    reader.discard();
    assert_no_alloc(|| callback.capture_f32(&stereo_f32, &info));
    // A partial frame of a 3-channel device, and an empty buffer.
    let (mut odd, _reader) = capture::channel(44_100, 3, Arc::clone(&counters));
    assert_no_alloc(|| odd.capture_f32(&stereo_f32[..7], &info));
    assert_no_alloc(|| odd.capture_i16(&[], &info));
    assert_eq!(counters.callbacks.load(Relaxed), 403);
}

/// Proves the check can fail: a child process allocating inside `assert_no_alloc` must abort.
#[test]
fn an_allocation_inside_the_check_aborts_the_process() {
    if std::env::var_os(CANARY_CHILD).is_some() {
        let v = assert_no_alloc(|| Vec::<u64>::with_capacity(64));
        println!("CANARY SURVIVED {}", v.capacity());
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_allocation_inside_the_check_aborts_the_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CANARY_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "child survived: {stdout}");
    assert!(!stdout.contains("CANARY SURVIVED"), "{stdout}");
}
