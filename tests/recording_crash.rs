//! A crash in the middle of a recording loses at most about a second.
//!
//! The test binary re-runs itself as a child (selected by an environment variable) that
//! records a known pattern in real time for 3 s and then calls `std::process::abort()`, which
//! like `kill -9` runs no destructors, flushes nothing and finalizes nothing. The parent then
//! runs the startup repair and checks that hound reads the file, that at least 3 s − 1.1 s of
//! audio survived, and that every surviving sample is the one written.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use earshot::media::frame::{FRAME_DURATION, FRAME_SAMPLES, Frame};
use earshot::recording::{RecordingService, RepairOutcome, repair_dir};

/// Set in the child: the folder to record into.
const CHILD_DIR: &str = "EARSHOT_RECORDING_CRASH_DIR";

/// How long the child records before aborting.
const RECORD_FOR: Duration = Duration::from_secs(3);

/// Sample `n` of the left (caller) and right (sent) channels.
fn pattern(n: u64) -> (i16, i16) {
    let left = (n.wrapping_mul(2_654_435_761) >> 7) as i16;
    let right = (n as i16).wrapping_mul(3).wrapping_sub(12_345);
    (left, right)
}

fn frames(k: u64) -> (Frame, Frame) {
    let mut caller = [0i16; FRAME_SAMPLES];
    let mut sent = [0i16; FRAME_SAMPLES];
    for i in 0..FRAME_SAMPLES {
        (caller[i], sent[i]) = pattern(k * FRAME_SAMPLES as u64 + i as u64);
    }
    (caller, sent)
}

/// The child: records in real time, then dies without cleanup.
#[allow(clippy::disallowed_methods)]
fn record_then_abort(dir: &Path) -> ! {
    let (events, _receiver) = tokio::sync::mpsc::unbounded_channel();
    let service = RecordingService::start(dir.to_owned(), events).unwrap();
    let mut recording = service.open(1, "crash").unwrap();
    let start = Instant::now();
    let mut k = 0u64;
    while start.elapsed() < RECORD_FOR {
        let (caller, sent) = frames(k);
        assert!(recording.push(&caller, &sent));
        k += 1;
        let due = start + FRAME_DURATION * k as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    println!("CHILD PUSHED {k}");
    std::process::abort();
}

#[test]
fn a_recording_survives_an_abort_losing_at_most_a_second() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        record_then_abort(Path::new(&dir));
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("earshot-recording-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_recording_survives_an_abort_losing_at_most_a_second",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(!child.status.success(), "the child did not crash: {stdout}");
    let pushed: u64 = stdout
        .lines()
        .find_map(|l| l.split("CHILD PUSHED ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the child did not record: {stdout}"));
    assert!(pushed >= 140, "{pushed}");

    // Before the repair the header describes the last flush, not the file.
    let path = dir.join("crash.wav");
    let repaired = repair_dir(&dir).unwrap();
    assert_eq!(repaired.len(), 1, "{repaired:?}");
    assert_eq!(repaired[0].path, path);
    assert!(
        matches!(repaired[0].outcome, Ok(RepairOutcome::Fixed { .. })),
        "{repaired:?}"
    );
    assert!(
        repair_dir(&dir).unwrap().is_empty(),
        "a repaired file is intact"
    );

    let mut reader = hound::WavReader::open(&path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let samples: Vec<i16> = reader.samples().map(Result::unwrap).collect();
    assert_eq!(samples.len() % 2, 0);
    let frames_kept = samples.len() as u64 / 2;
    let min_frames = (RECORD_FOR.as_secs_f64() - 1.1) * 8000.0;
    assert!(
        frames_kept as f64 >= min_frames,
        "only {frames_kept} sample frames survived"
    );
    assert!(frames_kept <= pushed * FRAME_SAMPLES as u64);
    eprintln!(
        "{frames_kept} of {} sample frames survived the abort",
        pushed * FRAME_SAMPLES as u64
    );
    for (n, pair) in samples.chunks_exact(2).enumerate() {
        assert_eq!((pair[0], pair[1]), pattern(n as u64), "sample frame {n}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
