//! Jitter buffer scenarios over synthetic network traces in virtual time, on held-out seeds
//! (never used to tune the buffer): at most 1 % of arrived frames go unplayed on every family,
//! stalls included (their backlog is compressed, not dropped), none on a clean network; sender clock drift of ±100 ppm is followed for ten minutes
//! without growth or starvation; the trace runner's output follows its spec.

#![allow(clippy::unwrap_used)]

use earshot::media::jitter::JitterConfig;
use earshot::media::jitter_sim::traces::{self, Family};
use earshot::media::jitter_sim::{parse_trace, run_trace, score, simulate, to_csv};
use std::collections::HashMap;

/// Held-out traces per family, and their length.
const SEEDS: u64 = 3;
const SECONDS: u32 = 60;

/// Plays `SEEDS` held-out traces of `family` and asserts that at most `bound` percent of the
/// arrived frames of each were not played.
fn loses_at_most(family: Family, bound: f64) {
    let seeds = traces::HELD_OUT_SEEDS.start..traces::HELD_OUT_SEEDS.start + SEEDS;
    for seed in seeds {
        let packets = traces::generate(family, SECONDS, seed);
        let s = score(&packets, &simulate(&packets, JitterConfig::default()));
        eprintln!(
            "{:18} seed {seed}: {:5.2} % not played (late {}, dropped {}), delay {:5.1} ms, R {:5.2}",
            family.name(),
            s.not_played_pct,
            s.late,
            s.discarded,
            s.mean_delay_ms,
            s.r
        );
        assert!(
            s.not_played_pct <= bound,
            "{family:?} seed {seed}: {:.2} % > {bound} %: {s:?}",
            s.not_played_pct
        );
        assert!(s.max_delay_ms <= 520.0, "{family:?} seed {seed}: {s:?}");
    }
}

#[test]
fn a_clean_network_loses_nothing() {
    loses_at_most(Family::Clean, 0.0);
}

#[test]
fn at_most_1_percent_unplayed_on_jitter_loss_reordering_and_drift() {
    for family in [
        Family::Pareto,
        Family::GilbertElliott,
        Family::Reorder,
        Family::Drift100,
        Family::Drift1000,
        Family::SeqWrap,
        Family::Satellite,
        Family::CongestedUplink,
        Family::DuplicateStorm,
        Family::SilenceSuppression,
    ] {
        loses_at_most(family, 1.0);
    }
}

#[test]
fn at_most_1_percent_unplayed_through_stalls() {
    // A stall of 150-300 ms every few seconds: its frames arrive together at its end, are
    // waited for and then played faster (time-scale compression) instead of given up.
    for family in [
        Family::Spikes,
        Family::Wifi,
        Family::DelayStep,
        Family::Combined,
    ] {
        loses_at_most(family, 1.0);
    }
}

/// Plays ten minutes of a sender whose clock is off by `ppm` and checks, minute by minute,
/// that the mean playout delay stays bounded and that playout never starves.
fn follows_drift(ppm: f64) {
    let packets = traces::drift(600, 11, ppm);
    let ticks = simulate(&packets, JitterConfig::default());
    let arrival: HashMap<u16, i64> = packets.iter().map(|p| (p.seq, p.arrival_us)).collect();
    let start = ticks[0].tick_us;
    let mut per_minute = [(0i64, 0i64); 10];
    for tick in &ticks {
        let minute = ((tick.tick_us - start) / 60_000_000) as usize;
        if let (Some(seq), Some(bucket)) = (tick.seq, per_minute.get_mut(minute)) {
            bucket.0 += tick.tick_us - arrival[&seq];
            bucket.1 += 1;
        }
    }
    let means: Vec<f64> = per_minute
        .iter()
        .map(|&(sum, n)| sum as f64 / n.max(1) as f64 / 1000.0)
        .collect();
    eprintln!("drift {ppm:+} ppm: mean delay per minute {means:.1?}");
    for (minute, mean) in means.iter().enumerate() {
        assert!(
            (5.0..=60.0).contains(mean),
            "{ppm} ppm minute {minute}: {mean} ms"
        );
    }
    let s = score(&packets, &ticks);
    // 60 ms of drift over ten minutes crosses three 20 ms ticks; each costs a few frames,
    // concealed or dropped (a late frame is concealed until lateness recurs).
    assert!(s.gap_ticks <= 20, "{ppm} ppm starved: {s:?}");
    assert!(s.discarded <= 20, "{ppm} ppm: {s:?}");
    assert_eq!(s.late, 0, "{ppm} ppm: {s:?}");
}

#[test]
fn follows_a_sender_clock_100_ppm_fast_for_10_minutes() {
    follows_drift(100.0);
}

#[test]
fn follows_a_sender_clock_100_ppm_slow_for_10_minutes() {
    follows_drift(-100.0);
}

#[test]
fn trace_runner_prints_one_line_per_tick_and_plays_each_frame_once_in_order() {
    let packets = traces::generate(Family::Reorder, 20, 5);
    let csv = to_csv(&packets);
    assert_eq!(parse_trace(&csv).unwrap(), packets);
    let mut out = Vec::new();
    run_trace(&csv, JitterConfig::default(), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let first = packets[0].arrival_us;
    let mut last_played: Option<i64> = None;
    let mut lines = 0;
    for (k, line) in text.lines().enumerate() {
        let (tick, seq) = line.split_once(',').unwrap();
        let tick_us = (tick.parse::<f64>().unwrap() * 1000.0).round() as i64;
        assert_eq!(tick_us, first + 20_000 * k as i64, "line {k}: {line}");
        // `seq`, or `seq+seq2` for two frames compressed into one tick.
        for seq in seq.split('+').filter(|s| *s != "-") {
            let seq: u16 = seq.parse().unwrap();
            let ext = match last_played {
                None => i64::from(seq),
                Some(prev) => prev + i64::from(seq.wrapping_sub(prev as u16) as i16),
            };
            assert!(
                last_played.is_none_or(|prev| ext > prev),
                "line {k}: {line}"
            );
            last_played = Some(ext);
        }
        lines += 1;
    }
    let last_arrival = packets.last().unwrap().arrival_us;
    assert!(
        first + 20_000 * (lines - 1) as i64 >= last_arrival,
        "stopped before the last arrival"
    );
}
