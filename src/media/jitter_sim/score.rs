//! The one scorer every jitter buffer is judged by: which arrived frames were played, how long
//! after arriving, and the E-model rating ([`super::emodel`]) that follows.
//!
//! A frame counts once however often it arrived. An arrived frame not played is lost, whether
//! playout had passed it when it came (late) or it was dropped although in time (discarded):
//! the listener hears a gap either way. A frame compressed with another into one tick
//! (time-scale compression) was played; its delay runs to where it is heard (the tick plus
//! the audio carried over before it).

use super::emodel;
use super::{Tick, TracePacket};
use std::collections::{BTreeMap, HashMap};

/// How well a simulation did on a trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// Distinct packets that arrived.
    pub packets: usize,
    /// Ticks that played a received frame.
    pub played: usize,
    /// Arrived packets never played because playout had already passed them on arrival.
    pub late: usize,
    /// Arrived packets never played although they were in time (dropped to cut the delay).
    pub discarded: usize,
    /// Ticks that played no received frame.
    pub gap_ticks: usize,
    /// `late` as a percentage of `packets`.
    pub late_loss_pct: f64,
    /// `discarded` as a percentage of `packets`.
    pub discarded_pct: f64,
    /// Arrived packets not played (`late + discarded`) as a percentage of `packets`: Ppl.
    pub not_played_pct: f64,
    /// Burst ratio of the not-played pattern, in sequence order (1: random).
    pub burst_r: f64,
    /// Mean time from a packet's arrival to its playout tick, in ms.
    pub mean_delay_ms: f64,
    /// Longest such time, in ms.
    pub max_delay_ms: f64,
    /// E-model rating R from the mean delay, Ppl and BurstR.
    pub r: f64,
}

/// Scores a simulation's ticks against its trace.
pub fn score(packets: &[TracePacket], ticks: &[Tick]) -> Score {
    // Extend sequence numbers in arrival order; remember each one's first arrival.
    let mut arrivals: BTreeMap<i64, i64> = BTreeMap::new();
    let mut highest: Option<i64> = None;
    for p in packets {
        let ext = extend(highest, p.seq);
        highest = Some(highest.map_or(ext, |h| h.max(ext)));
        arrivals.entry(ext).or_insert(p.arrival_us);
    }
    // Extend the played numbers likewise; track the highest played so far at each tick.
    let mut played_ext: Vec<(i64, i64)> = Vec::new(); // (tick_us, highest played ext seq)
    let mut played = HashMap::new();
    let mut last: Option<i64> = packets.first().map(|p| i64::from(p.seq));
    let (mut delay_sum, mut max_delay, mut count) = (0i64, 0i64, 0usize);
    let mut top = i64::MIN;
    for tick in ticks {
        let heard = tick.seq.map(|seq| (seq, tick.lag_us));
        for (seq, lag_us) in heard.into_iter().chain(tick.merged) {
            let ext = extend(last, seq);
            last = Some(ext);
            top = top.max(ext);
            let at = tick.tick_us + lag_us;
            if let Some(&arrival) = arrivals.get(&ext)
                && played.insert(ext, at).is_none()
            {
                delay_sum += at - arrival;
                max_delay = max_delay.max(at - arrival);
                count += 1;
            }
        }
        played_ext.push((tick.tick_us, top));
    }
    let (mut late, mut discarded) = (0, 0);
    for (&ext, &arrival) in &arrivals {
        if played.contains_key(&ext) {
            continue;
        }
        let before = played_ext.partition_point(|&(t, _)| t < arrival);
        let passed = before > 0
            && played_ext
                .get(before - 1)
                .is_some_and(|&(_, top)| top > ext);
        if passed {
            late += 1;
        } else {
            discarded += 1;
        }
    }
    let n = arrivals.len().max(1) as f64;
    let burst_r = emodel::burst_ratio(arrivals.keys().map(|ext| !played.contains_key(ext)));
    let not_played_pct = 100.0 * (late + discarded) as f64 / n;
    let mean_delay_ms = delay_sum as f64 / count.max(1) as f64 / 1000.0;
    Score {
        packets: arrivals.len(),
        played: count,
        late,
        discarded,
        gap_ticks: ticks.iter().filter(|t| t.seq.is_none()).count(),
        late_loss_pct: 100.0 * late as f64 / n,
        discarded_pct: 100.0 * discarded as f64 / n,
        not_played_pct,
        burst_r,
        mean_delay_ms,
        max_delay_ms: max_delay as f64 / 1000.0,
        r: emodel::rating(mean_delay_ms, not_played_pct, burst_r),
    }
}

/// Extends a 16-bit sequence number to the one nearest `reference`.
pub(super) fn extend(reference: Option<i64>, seq: u16) -> i64 {
    match reference {
        None => i64::from(seq),
        Some(r) => r + i64::from(seq.wrapping_sub(r as u16) as i16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(arrival_ms: i64, seq: u16) -> TracePacket {
        TracePacket {
            arrival_us: arrival_ms * 1000,
            seq,
            rtp_ts: u32::from(seq) * 160,
        }
    }

    fn tick(ms: i64, seq: Option<u16>) -> Tick {
        Tick {
            tick_us: ms * 1000,
            seq,
            ..Tick::default()
        }
    }

    #[test]
    fn a_compressed_frame_counts_as_played_where_it_is_heard() {
        let packets = [packet(0, 1), packet(0, 2), packet(0, 3)];
        let ticks = [
            tick(20, Some(1)),
            Tick {
                tick_us: 40_000,
                seq: Some(2),
                lag_us: 5_000,
                merged: Some((3, 12_000)),
            },
        ];
        let s = score(&packets, &ticks);
        assert_eq!((s.played, s.late, s.discarded), (3, 0, 0));
        // Delays 20, 45 and 52 ms.
        assert!((s.mean_delay_ms - 39.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn scorer_separates_late_from_discarded_and_counts_both_as_lost() {
        let packets = [
            packet(0, 1),
            packet(0, 2),
            packet(0, 3),
            packet(70, 5),
            packet(90, 4),
        ];
        let ticks = [
            tick(20, Some(1)),
            tick(40, Some(3)), // 2 discarded while in time
            tick(60, None),
            tick(80, Some(5)), // 4 arrives after 5 played: late
            tick(100, None),
        ];
        let s = score(&packets, &ticks);
        assert_eq!((s.packets, s.played, s.late, s.discarded), (5, 3, 1, 1));
        assert!((s.not_played_pct - 40.0).abs() < 1e-9);
        // Delays 20, 40 (packet 3) and 10 ms; pattern played, lost, played, lost, played.
        assert!((s.mean_delay_ms - 70.0 / 3.0).abs() < 1e-9);
        assert!((s.burst_r - 0.5).abs() < 1e-9);
        let r = emodel::rating(70.0 / 3.0, 40.0, 0.5);
        assert!((s.r - r).abs() < 1e-9);
    }

    #[test]
    fn a_perfect_playout_loses_nothing_and_rates_by_delay_alone() {
        let packets: Vec<TracePacket> = (0..50).map(|k| packet(20 * k, k as u16)).collect();
        let ticks: Vec<Tick> = (0..50).map(|k| tick(20 * k + 20, Some(k as u16))).collect();
        let s = score(&packets, &ticks);
        assert_eq!((s.late, s.discarded, s.played), (0, 0, 50));
        // Ta = 150 + 20 ms: 93.2 − 0.772443.
        assert!((s.r - (93.2 - 0.772443)).abs() < 1e-4, "{s:?}");
    }

    #[test]
    fn a_frame_played_twice_counts_once() {
        let packets = [packet(0, 7), packet(20, 8)];
        let ticks = [tick(0, Some(7)), tick(20, Some(7)), tick(40, Some(8))];
        let s = score(&packets, &ticks);
        assert_eq!((s.played, s.late, s.discarded), (2, 0, 0));
    }
}
