//! Jitter buffer cost per packet: one `push` plus one `pop` (a 20 ms tick) in steady state, with
//! jitter and reordering, and with 10 % loss (concealment, including pitch searches); plus a
//! whole 60 s trace replay through the simulator. Packets are pushed in arrival order, each
//! before the first tick after its arrival ([`Arrivals`]), as a call's task would see them.

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use earshot::media::frame::SILENCE;
use earshot::media::jitter::{JitterBuffer, JitterConfig};
use earshot::media::jitter_sim::{Arrivals, simulate, speech_like, traces};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Network model of one benchmark: packet `n`'s delay in ms, or `None` when it is lost.
type Network = fn(u64) -> Option<u64>;

/// Ticks are 40 ms after their frame was sent; time only moves forward, and every packet that
/// has arrived by a tick is pushed (in arrival order) before that tick's pop.
const TICK_PHASE_MS: u64 = 40;

fn hash(k: u64) -> u64 {
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32
}

fn push_pop(c: &mut Criterion, name: &str, network: Network) {
    let mut group = c.benchmark_group("jitter/push_pop");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        // One second of speech-like audio, synthesized outside the measured loop.
        let speech: Vec<_> = (0..50u32)
            .map(|f| {
                let mut frame = SILENCE;
                speech_like(f * 160, &mut frame);
                frame
            })
            .collect();
        let mut arrivals = Arrivals::new(network);
        let mut out = SILENCE;
        let mut k = 0u64;
        b.iter(|| {
            // Tick k, and the packets that arrived since the last one (one on average).
            // Virtual time runs on forever, so every iteration is alike.
            let tick_ms = 20 * k + TICK_PHASE_MS;
            while let Some((n, at)) = arrivals.next_by(tick_ms) {
                let pcm = &speech[(n % 50) as usize];
                let ts = (n as u32).wrapping_mul(160);
                let arrival = t0 + Duration::from_millis(at);
                jb.push(arrival, n as u16, ts, false, 1, black_box(pcm));
            }
            black_box(jb.pop(t0 + Duration::from_millis(tick_ms), &mut out));
            k += 1;
        });
    });
    group.finish();
}

fn jitter(c: &mut Criterion) {
    push_pop(c, "steady", |_| Some(0));
    // 0–49 ms, independently per packet: packets overtake each other.
    push_pop(c, "jitter_reorder", |n| Some(hash(n) % 50));
    push_pop(c, "loss_10pct", |n| {
        (!hash(n).is_multiple_of(10)).then_some(0)
    });

    let trace = traces::generate(traces::Family::Pareto, 60, 1);
    let mut group = c.benchmark_group("jitter/simulate");
    group.throughput(Throughput::Elements(trace.len() as u64));
    group.sample_size(20);
    group.bench_function("pareto_60s", |b| {
        b.iter(|| simulate(black_box(&trace), JitterConfig::default()));
    });
    group.finish();
}

criterion_group!(benches, jitter);
criterion_main!(benches);
