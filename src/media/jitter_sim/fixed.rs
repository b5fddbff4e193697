//! The hindsight baseline: a playout at one fixed delay for the whole trace, the delay chosen
//! knowing the trace (the one whose E-model rating is best). No adaptive buffer can know the
//! future, so beating it means adapting pays more than it costs.
//!
//! Frame n (its place on the timestamp grid, 160 samples a frame) plays at tick n − n₀ + k,
//! where n₀ is the first packet's frame and k the fixed delay in ticks; it plays if it arrived
//! by that tick. A timestamp that leaps (over 3 s, or backwards) while the numbering continues
//! is read as the sender re-basing its clock: the frame then follows the sequence number.

use super::score::{Score, extend, score};
use super::{Tick, TracePacket};
use std::collections::BTreeMap;

/// Largest fixed delay tried, in 20 ms ticks (500 ms).
pub const MAX_TICKS: i64 = 25;
const TICK_US: i64 = 20_000;
/// A timestamp step beyond the numbering's by more than this (3 s at 8 kHz) is a re-base.
const REBASE: i64 = 3 * 8000;

/// The playout at a fixed delay of `k` ticks.
pub fn fixed_delay(packets: &[TracePacket], k: i64) -> Vec<Tick> {
    let Some(first) = packets.first() else {
        return Vec::new();
    };
    let frames = frame_of_each(packets);
    let n0 = frames.first().copied().unwrap_or(0);
    // Tick index → (arrival, seq) of the first copy to arrive.
    let mut plan: BTreeMap<i64, (i64, u16)> = BTreeMap::new();
    for (p, &n) in packets.iter().zip(&frames) {
        let tick = n - n0 + k;
        if tick >= 0 {
            plan.entry(tick).or_insert((p.arrival_us, p.seq));
        }
    }
    let last = plan.keys().next_back().copied().unwrap_or(0);
    (0..=last)
        .map(|t| {
            let tick_us = first.arrival_us + t * TICK_US;
            let seq = plan
                .get(&t)
                .filter(|&&(arrival, _)| arrival <= tick_us)
                .map(|&(_, seq)| seq);
            Tick {
                tick_us,
                seq,
                ..Tick::default()
            }
        })
        .collect()
}

/// The best fixed delay for this trace: its ticks and score, and the delay in ticks.
pub fn best_fixed(packets: &[TracePacket]) -> (Vec<Tick>, Score, i64) {
    let mut best: Option<(Vec<Tick>, Score, i64)> = None;
    for k in 0..=MAX_TICKS {
        let ticks = fixed_delay(packets, k);
        let s = score(packets, &ticks);
        if best.as_ref().is_none_or(|(_, b, _)| s.r > b.r) {
            best = Some((ticks, s, k));
        }
    }
    best.unwrap_or_else(|| (Vec::new(), score(packets, &[]), 0))
}

/// Each packet's frame on the timestamp grid, in arrival order of `packets`.
fn frame_of_each(packets: &[TracePacket]) -> Vec<i64> {
    // Extended sequence numbers, then walk them in order accumulating timestamp steps.
    let mut highest: Option<i64> = None;
    let exts: Vec<i64> = packets
        .iter()
        .map(|p| {
            let ext = extend(highest, p.seq);
            highest = Some(highest.map_or(ext, |h| h.max(ext)));
            ext
        })
        .collect();
    let mut by_seq: BTreeMap<i64, u32> = BTreeMap::new();
    for (p, &ext) in packets.iter().zip(&exts) {
        by_seq.entry(ext).or_insert(p.rtp_ts);
    }
    let mut frame_of: BTreeMap<i64, i64> = BTreeMap::new();
    let mut previous: Option<(i64, u32, i64)> = None; // (ext seq, ts, frame)
    for (&ext, &ts) in &by_seq {
        let frame = match previous {
            None => 0,
            Some((pext, pts, pframe)) => {
                let gap = ext - pext;
                let step = i64::from(ts.wrapping_sub(pts) as i32);
                if step < 0 || step > 160 * gap + REBASE {
                    pframe + gap
                } else {
                    pframe + step.div_euclid(160)
                }
            }
        };
        frame_of.insert(ext, frame);
        previous = Some((ext, ts, frame));
    }
    exts.iter()
        .map(|ext| frame_of.get(ext).copied().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(arrival_ms: i64, seq: u16, ts: u32) -> TracePacket {
        TracePacket {
            arrival_us: arrival_ms * 1000,
            seq,
            rtp_ts: ts,
        }
    }

    #[test]
    fn plays_each_frame_k_ticks_after_the_first_and_only_if_it_arrived() {
        // Frame 1 arrives 25 ms late, frame 2 on time.
        let packets = [packet(0, 9, 0), packet(45, 10, 160), packet(40, 11, 320)];
        let mut packets = packets.to_vec();
        packets.sort_by_key(|p| p.arrival_us);
        let at_0: Vec<Option<u16>> = fixed_delay(&packets, 0).iter().map(|t| t.seq).collect();
        assert_eq!(at_0, [Some(9), None, Some(11)]);
        let at_2: Vec<Option<u16>> = fixed_delay(&packets, 2).iter().map(|t| t.seq).collect();
        assert_eq!(at_2, [None, None, Some(9), Some(10), Some(11)]);
        let (_, s, k) = best_fixed(&packets);
        // One late frame of three costs far more than 40 ms.
        assert_eq!((k, s.late), (2, 0));
    }

    #[test]
    fn a_timestamp_re_base_follows_the_numbering_and_silence_keeps_its_length() {
        let packets = [
            packet(0, 65535, 0),
            packet(20, 0, 160),
            packet(40, 1, 4_000_000_000),
            packet(100, 2, 4_000_000_000 + 160 * 3),
        ];
        assert_eq!(frame_of_each(&packets), [0, 1, 2, 5]);
    }
}
