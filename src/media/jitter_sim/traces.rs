//! Synthetic network traces, seeded and deterministic: the corpus a jitter buffer is tuned on
//! and judged on. A trace sends one 20 ms packet per frame for `seconds` and returns the packets
//! that arrive, in arrival order. Sequence numbers and timestamps start at seeded random values.
//!
//! Each [`Family`] draws its parameters from the seed (a Pareto trace may have a 10 or a 60 ms
//! base delay, a shape of 1.6 or 3), so two seeds are two different networks of one kind, not
//! one network sampled twice. Seeds are kept apart: [`TUNING_SEEDS`] are the only ones the
//! buffer's constants may be chosen on; [`HELD_OUT_SEEDS`] are what is reported.

use super::TracePacket;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::ops::Range;

/// Seeds the jitter buffer's constants may be tuned on.
pub const TUNING_SEEDS: Range<u64> = 0..100;
/// Seeds reported on and asserted by the scenario tests; never used for tuning.
pub const HELD_OUT_SEEDS: Range<u64> = 1000..1100;
const _: () = assert!(
    TUNING_SEEDS.end <= HELD_OUT_SEEDS.start,
    "seed sets overlap"
);

const FRAME_US: f64 = 20_000.0;

/// A kind of network. Parameters within a family are drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Constant 5–80 ms delay with ±0.3 ms of timer noise: nothing should be lost.
    Clean,
    /// Independent Pareto jitter (x_m 2–8 ms, shape 1.6–3, capped at 400 ms); packets overtake.
    Pareto,
    /// Gilbert–Elliott bursty loss (enter bad 1–5 %/packet, leave 20–50 %, 30–80 % lost when
    /// bad, 0–1 % when good) over 0–15 ms of queueing jitter.
    GilbertElliott,
    /// A 150–250 ms stall every 5–20 s; packets sent during it arrive together at its end.
    Spikes,
    /// 2–6 % of packets held back 20–60 ms behind later ones, over 0–5 ms jitter.
    Reorder,
    /// Mobile Wi-Fi: exponential jitter (mean 2–6 ms), 0.2–1 % loss, and every 2–10 s a
    /// 50–300 ms stall (scanning, retransmissions) flushed in a burst.
    Wifi,
    /// A sender clock ±100 ppm off (sign from the seed), 0–5 ms queueing jitter.
    Drift100,
    /// A sender clock ±1000 ppm off: a stress case.
    Drift1000,
    /// Sequence numbers that wrap within the first seconds, and a timestamp that jumps (a
    /// sender re-basing its clock) partway through while the numbering continues.
    SeqWrap,
    /// Satellite or long-haul path: 250–600 ms base delay, 0–20 ms queueing jitter.
    Satellite,
    /// Congested uplink: every 3–10 s a 1–4 s episode whose queue fills to 40–150 ms and
    /// drains, with 0–2 % tail drops while it is full.
    CongestedUplink,
    /// The base delay steps to a new level (10–150 ms) every 8–30 s: a route change.
    DelayStep,
    /// Duplicate storms: for 1–5 s every 5–20 s, 30–100 % of packets arrive twice (0–30 ms
    /// apart), over 0–10 ms jitter.
    DuplicateStorm,
    /// Silence suppression: talkspurts of 0.5–3 s with silent gaps of 0.3–2 s in which
    /// nothing is sent; the numbering continues and the timestamp jumps over the gap.
    SilenceSuppression,
    /// Two to four of the above effects at once.
    Combined,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 15] = [
        Family::Clean,
        Family::Pareto,
        Family::GilbertElliott,
        Family::Spikes,
        Family::Reorder,
        Family::Wifi,
        Family::Drift100,
        Family::Drift1000,
        Family::SeqWrap,
        Family::Satellite,
        Family::CongestedUplink,
        Family::DelayStep,
        Family::DuplicateStorm,
        Family::SilenceSuppression,
        Family::Combined,
    ];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Family::Clean => "clean",
            Family::Pareto => "pareto",
            Family::GilbertElliott => "gilbert-elliott",
            Family::Spikes => "spikes 200ms",
            Family::Reorder => "reorder",
            Family::Wifi => "mobile wifi",
            Family::Drift100 => "drift 100ppm",
            Family::Drift1000 => "drift 1000ppm",
            Family::SeqWrap => "seq wrap+ts jump",
            Family::Satellite => "satellite",
            Family::CongestedUplink => "congested uplink",
            Family::DelayStep => "delay steps",
            Family::DuplicateStorm => "duplicate storm",
            Family::SilenceSuppression => "silence suppr.",
            Family::Combined => "combined",
        }
    }

    fn index(self) -> u64 {
        Family::ALL.iter().position(|&f| f == self).unwrap_or(0) as u64
    }
}

/// One trace of `family`, `seconds` long, its parameters drawn from `seed`.
pub fn generate(family: Family, seconds: u32, seed: u64) -> Vec<TracePacket> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(64).wrapping_add(family.index()));
    let rng = &mut rng;
    let mut sent = send(seconds, 0.0);
    if let Some((delay, jitter, effect)) = layered(family) {
        base(&mut sent, rng, delay);
        queueing(&mut sent, rng, jitter);
        effect(&mut sent, rng);
        return finish(&sent, rng);
    }
    match family {
        Family::Clean => {
            let base = rng.random_range(5_000.0..80_000.0);
            for s in &mut sent {
                s.arrival_us += base + rng.random_range(-300.0..300.0);
            }
            fifo(&mut sent);
        }
        Family::Wifi => {
            wifi(&mut sent, rng);
        }
        Family::Drift100 | Family::Drift1000 => {
            let ppm = if family == Family::Drift100 {
                100.0
            } else {
                1000.0
            };
            let ppm = if rng.random_bool(0.5) { ppm } else { -ppm };
            sent = send(seconds, ppm);
            base(&mut sent, rng, 20_000.0..60_000.0);
            queueing(&mut sent, rng, 5_000.0);
        }
        Family::SeqWrap => {
            base(&mut sent, rng, 20_000.0..60_000.0);
            queueing(&mut sent, rng, 5_000.0);
            let count = sent.len() as u64;
            let seq0 = 65_535u16.wrapping_sub(rng.random_range(10..200));
            let at = rng.random_range(count / 4..count.max(4) * 3 / 4);
            let jump = rng.random::<u32>();
            return finish_with(&sent, rng, seq0, |frame| {
                let ts = (frame as u32).wrapping_mul(160);
                if frame >= at {
                    ts.wrapping_add(jump)
                } else {
                    ts
                }
            });
        }
        Family::DelayStep => {
            queueing(&mut sent, rng, 5_000.0);
            steps(&mut sent, rng);
        }
        _ => {
            let ppm = [0.0, 0.0, 100.0, -100.0][rng.random_range(0..4)];
            sent = send(seconds, ppm);
            base(&mut sent, rng, 10_000.0..80_000.0);
            let mut effects: Vec<u8> = (0..7).collect();
            let count = rng.random_range(2..=4);
            for _ in 0..count {
                let effect = effects.swap_remove(rng.random_range(0..effects.len()));
                match effect {
                    0 => pareto(&mut sent, rng),
                    1 => gilbert_elliott(&mut sent, rng),
                    2 => stalls(&mut sent, rng, 5e6..20e6, 50_000.0..250_000.0),
                    3 => reorder(&mut sent, rng),
                    4 => congestion(&mut sent, rng),
                    5 => duplicates(&mut sent, rng),
                    _ => silence(&mut sent, rng),
                }
            }
        }
    }
    finish(&sent, rng)
}

/// What changes a sent stream's arrivals.
type Effect = fn(&mut [Sent], &mut StdRng);

/// The families that are a base delay drawn from a range, queueing jitter up to a maximum
/// drawn from the seed, and one effect.
fn layered(family: Family) -> Option<(Range<f64>, f64, Effect)> {
    let none: Effect = |_, _| {};
    Some(match family {
        Family::Pareto => (10_000.0..60_000.0, 0.0, pareto),
        Family::GilbertElliott => (10_000.0..60_000.0, 15_000.0, gilbert_elliott),
        Family::Spikes => (20_000.0..60_000.0, 3_000.0, |sent, rng| {
            stalls(sent, rng, 5e6..20e6, 150_000.0..250_000.0)
        }),
        Family::Reorder => (20_000.0..60_000.0, 5_000.0, reorder),
        Family::Satellite => (250_000.0..600_000.0, 20_000.0, none),
        Family::CongestedUplink => (10_000.0..50_000.0, 3_000.0, congestion),
        Family::DuplicateStorm => (20_000.0..60_000.0, 10_000.0, duplicates),
        Family::SilenceSuppression => (20_000.0..60_000.0, 20_000.0, silence),
        _ => return None,
    })
}

/// A sender clock off by `ppm` parts per million, over 40 ms + 0–5 ms queueing jitter.
pub fn drift(seconds: u32, seed: u64, ppm: f64) -> Vec<TracePacket> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = send(seconds, ppm);
    base(&mut sent, &mut rng, 40_000.0..40_001.0);
    queueing(&mut sent, &mut rng, 5_000.0);
    finish(&sent, &mut rng)
}

/// One packet as sent, with its arrival time once the network model has run.
#[derive(Clone)]
struct Sent {
    /// Media frame (timestamp / 160 from the start).
    frame: u64,
    send_us: f64,
    arrival_us: f64,
    lost: bool,
    /// Arrival of a duplicate copy, if any.
    copy_us: Option<f64>,
    /// Not sent at all (silence suppression): takes no sequence number.
    silent: bool,
}

fn send(seconds: u32, ppm: f64) -> Vec<Sent> {
    let count = u64::from(seconds) * 50;
    (0..count)
        .map(|frame| {
            // A sender clock `ppm` fast emits its 20 ms frames slightly more often.
            let send_us = frame as f64 * FRAME_US / (1.0 + ppm * 1e-6);
            Sent {
                frame,
                send_us,
                arrival_us: send_us,
                lost: false,
                copy_us: None,
                silent: false,
            }
        })
        .collect()
}

/// A constant delay drawn from `range`.
fn base(sent: &mut [Sent], rng: &mut StdRng, range: Range<f64>) {
    let delay_us = rng.random_range(range);
    for s in sent {
        s.arrival_us += delay_us;
    }
}

/// Uniform 0..`max_us` queueing delay, in order.
fn queueing(sent: &mut [Sent], rng: &mut StdRng, max_us: f64) {
    let max_us = rng.random_range(0.0..=max_us);
    for s in sent.iter_mut() {
        s.arrival_us += rng.random_range(0.0..=max_us);
    }
    fifo(sent);
}

/// Packets leave a queue in order: nothing overtakes a packet ahead of it.
fn fifo(sent: &mut [Sent]) {
    let mut previous = f64::MIN;
    for s in sent.iter_mut().filter(|s| !s.lost && !s.silent) {
        s.arrival_us = s.arrival_us.max(previous);
        previous = s.arrival_us;
    }
}

fn pareto(sent: &mut [Sent], rng: &mut StdRng) {
    let x_m = rng.random_range(2_000.0..8_000.0);
    let shape: f64 = rng.random_range(1.6..3.0);
    for s in sent {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        s.arrival_us += (x_m / u.powf(1.0 / shape)).min(400_000.0) - x_m;
    }
}

fn gilbert_elliott(sent: &mut [Sent], rng: &mut StdRng) {
    let enter = rng.random_range(0.01..0.05);
    let leave = rng.random_range(0.2..0.5);
    let bad_loss = rng.random_range(0.3..0.8);
    let good_loss = rng.random_range(0.0..0.01);
    let mut bad = false;
    for s in sent {
        bad = if bad {
            !rng.random_bool(leave)
        } else {
            rng.random_bool(enter)
        };
        s.lost |= rng.random_bool(if bad { bad_loss } else { good_loss });
    }
}

/// Stalls every `every` µs lasting `len` µs: what was sent during one arrives at its end.
fn stalls(sent: &mut [Sent], rng: &mut StdRng, every: Range<f64>, len: Range<f64>) {
    let mut at = rng.random_range(every.clone());
    let mut length = rng.random_range(len.clone());
    let delay: Vec<f64> = sent.iter().map(|s| s.arrival_us - s.send_us).collect();
    for (s, delay) in sent.iter_mut().zip(delay) {
        while s.send_us >= at + length {
            at += length + rng.random_range(every.clone());
            length = rng.random_range(len.clone());
        }
        if s.send_us >= at {
            s.arrival_us = s.arrival_us.max(at + length + delay);
        }
    }
    fifo(sent);
}

fn reorder(sent: &mut [Sent], rng: &mut StdRng) {
    let share = rng.random_range(0.02..0.06);
    for s in sent {
        if rng.random_bool(share) {
            s.arrival_us += rng.random_range(20_000.0..60_000.0);
        }
    }
}

fn wifi(sent: &mut [Sent], rng: &mut StdRng) {
    let mean = rng.random_range(2_000.0..6_000.0);
    let loss = rng.random_range(0.002..0.01);
    base(sent, rng, 3_000.0..20_000.0);
    for s in sent.iter_mut() {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        s.arrival_us -= mean * u.ln();
        s.lost |= rng.random_bool(loss);
    }
    stalls(sent, rng, 2e6..10e6, 50_000.0..300_000.0);
}

fn congestion(sent: &mut [Sent], rng: &mut StdRng) {
    let mut start = rng.random_range(3e6..10e6);
    let mut length = rng.random_range(1e6..4e6);
    let mut peak = rng.random_range(40_000.0..150_000.0);
    let drop = rng.random_range(0.0..0.02);
    for s in sent.iter_mut() {
        while s.send_us >= start + length {
            start += length + rng.random_range(3e6..10e6);
            length = rng.random_range(1e6..4e6);
            peak = rng.random_range(40_000.0..150_000.0);
        }
        if s.send_us >= start {
            // The queue fills over the first 70 % of the episode and drains over the rest.
            let x = (s.send_us - start) / length;
            let fill = if x < 0.7 { x / 0.7 } else { (1.0 - x) / 0.3 };
            s.arrival_us += peak * fill;
            s.lost |= fill > 0.8 && rng.random_bool(drop);
        }
    }
    fifo(sent);
}

fn steps(sent: &mut [Sent], rng: &mut StdRng) {
    let mut level = rng.random_range(10_000.0..150_000.0);
    let mut until = rng.random_range(8e6..30e6);
    for s in sent.iter_mut() {
        while s.send_us >= until {
            level = rng.random_range(10_000.0..150_000.0);
            until += rng.random_range(8e6..30e6);
        }
        s.arrival_us += level;
    }
    fifo(sent);
}

fn duplicates(sent: &mut [Sent], rng: &mut StdRng) {
    let mut start = rng.random_range(5e6..20e6);
    let mut length = rng.random_range(1e6..5e6);
    let mut share = rng.random_range(0.3..1.0);
    for s in sent.iter_mut() {
        while s.send_us >= start + length {
            start += length + rng.random_range(5e6..20e6);
            length = rng.random_range(1e6..5e6);
            share = rng.random_range(0.3..1.0);
        }
        if s.send_us >= start && rng.random_bool(share) {
            s.copy_us = Some(s.arrival_us + rng.random_range(0.0..30_000.0));
        }
    }
}

fn silence(sent: &mut [Sent], rng: &mut StdRng) {
    let mut talk_until = rng.random_range(500_000.0..3e6);
    let mut quiet_until = talk_until + rng.random_range(300_000.0..2e6);
    for s in sent.iter_mut() {
        while s.send_us >= quiet_until {
            talk_until = quiet_until + rng.random_range(500_000.0..3e6);
            quiet_until = talk_until + rng.random_range(300_000.0..2e6);
        }
        s.silent = s.send_us >= talk_until;
    }
}

fn finish(sent: &[Sent], rng: &mut StdRng) -> Vec<TracePacket> {
    let seq0: u16 = rng.random();
    finish_with(sent, rng, seq0, |frame| (frame as u32).wrapping_mul(160))
}

/// Numbers the packets sent (silent frames take no number), timestamps them from `ts_of`
/// their frame plus a random origin, and lists those that arrive in arrival order.
fn finish_with(
    sent: &[Sent],
    rng: &mut StdRng,
    seq0: u16,
    ts_of: impl Fn(u64) -> u32,
) -> Vec<TracePacket> {
    let ts0: u32 = rng.random();
    let mut packets: Vec<(f64, u64, u16, u32)> = Vec::new();
    let mut seq = seq0;
    for s in sent.iter().filter(|s| !s.silent) {
        let ts = ts0.wrapping_add(ts_of(s.frame));
        if !s.lost {
            packets.push((s.arrival_us, s.frame, seq, ts));
            if let Some(copy) = s.copy_us {
                packets.push((copy, s.frame, seq, ts));
            }
        }
        seq = seq.wrapping_add(1);
    }
    packets.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    packets
        .into_iter()
        .map(|(arrival, _, seq, rtp_ts)| TracePacket {
            arrival_us: arrival.round() as i64,
            seq,
            rtp_ts,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_deterministic_per_seed_and_differs_across_seeds() {
        for family in Family::ALL {
            let a = generate(family, 10, 3);
            assert_eq!(a, generate(family, 10, 3), "{family:?}");
            assert_ne!(a, generate(family, 10, 4), "{family:?}");
            assert!(a.len() > 100, "{family:?}: {}", a.len());
            assert!(a.windows(2).all(|w| w[0].arrival_us <= w[1].arrival_us));
        }
    }

    #[test]
    fn silence_suppression_numbers_consecutively_and_jumps_the_timestamp() {
        let mut packets = generate(Family::SilenceSuppression, 30, 1);
        let first = packets[0].seq;
        packets.sort_by_key(|p| p.seq.wrapping_sub(first));
        let jumps = packets
            .windows(2)
            .filter(|w| w[1].rtp_ts.wrapping_sub(w[0].rtp_ts) > 160)
            .count();
        assert!(jumps >= 3, "{jumps} talkspurts");
    }

    #[test]
    fn duplicate_storms_repeat_sequence_numbers() {
        let packets = generate(Family::DuplicateStorm, 60, 2);
        let mut seqs: Vec<u16> = packets.iter().map(|p| p.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert!(packets.len() > seqs.len() + 20);
    }
}
