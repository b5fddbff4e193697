//! Jitter buffer cost per packet: one `push` plus one `pop` (a 20 ms tick) in steady state, with
//! jitter and reordering, and with 10 % loss (concealment, including pitch searches); plus a
//! whole 60 s trace replay through the simulator.

#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use earshot::media::frame::SILENCE;
use earshot::media::jitter::{JitterBuffer, JitterConfig};
use earshot::media::jitter_sim::{simulate, speech_like, traces};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Network model of one benchmark: extra delay (ms) and loss for packet `k`.
type Network = fn(u64) -> (u64, bool);

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
        let mut out = SILENCE;
        let mut k = 0u64;
        b.iter(|| {
            // Packet k is sent at 20·k ms and arrives after the model's delay; the tick at
            // 20·k ms follows it. Virtual time runs on forever, so every iteration is alike.
            let (delay, lost) = network(k);
            let ts = (k as u32).wrapping_mul(160);
            if !lost {
                let pcm = &speech[(k % 50) as usize];
                let arrival = t0 + Duration::from_millis(20 * k + delay);
                jb.push(arrival, k as u16, ts, false, 1, black_box(pcm));
            }
            let tick = t0 + Duration::from_millis(20 * k + 60);
            black_box(jb.pop(tick, &mut out));
            k += 1;
        });
    });
    group.finish();
}

fn jitter(c: &mut Criterion) {
    push_pop(c, "steady", |_| (0, false));
    push_pop(c, "jitter_reorder", |k| (hash(k) % 50, false));
    push_pop(c, "loss_10pct", |k| (0, hash(k).is_multiple_of(10)));

    let trace = traces::pareto(60, 1);
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
