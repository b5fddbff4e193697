//! Per-packet cost of the receive path of a call, exactly as the call task runs it: an RTP
//! datagram through `rtp::Session::handle_rtp`, G.711 decode of its payload, the jitter
//! buffer's `push`, one 20 ms `pop` (the playout tick; one per packet in steady state), and the
//! frame pushed into an rtrb ring like the speaker feed. Three networks: in order, jitter with
//! reordering, and 10 % loss (the tick conceals). Datagrams are handled in arrival order, each
//! before the first tick after its arrival ([`Arrivals`]), as the call task sees them. Sequence
//! numbers and timestamps start just before their wrap. The stages are also timed alone, on
//! the in-order stream.
//!
//! `cargo bench --bench pipeline`; the per-packet median is criterion's `median` estimate
//! (`target/criterion/pipeline*/*/new/estimates.json`).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use earshot::media::frame::{FRAME_SAMPLES, Frame, SILENCE};
use earshot::media::g711::Law;
use earshot::media::jitter::{JitterBuffer, JitterConfig};
use earshot::media::jitter_sim::{Arrivals, speech_like};
use earshot::rtp::{Session, SessionConfig, Ssrc};
use rtrb::{Consumer, Producer, RingBuffer};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// Datagrams cycled through (one second of speech-like audio).
const DATAGRAMS: usize = 50;
/// First sequence number and timestamp: both wrap early in every run.
const SEQ0: u16 = 65_000;
const TS0: u32 = u32::MAX - 160 * 400;
/// The speaker feed's ring: one second at 8 kHz, as `audio::mixer::INPUT_RING_SAMPLES`.
const RING_SAMPLES: usize = 8000;

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000))
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
            cname: "earshot@bench".into(),
            clock_rate: 8000,
            initial_seq: 1,
            initial_ts: 1,
            wallclock: SystemTime::UNIX_EPOCH,
        },
        t0,
    )
}

/// One second of PCMU datagrams (12-byte header + 160 bytes); seq and timestamp are patched in
/// before each use.
fn datagrams() -> Vec<[u8; 12 + FRAME_SAMPLES]> {
    (0..DATAGRAMS)
        .map(|i| {
            let mut pcm = SILENCE;
            speech_like(i as u32 * 160, &mut pcm);
            let mut d = [0u8; 12 + FRAME_SAMPLES];
            d[..12].copy_from_slice(&[0x80, 0x00, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
            Law::Ulaw.encode(&pcm, &mut d[12..]);
            d
        })
        .collect()
}

fn hash(k: u64) -> u64 {
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 32
}

/// Network model: packet `n`'s delay in ms, or `None` when it is lost.
type Network = fn(u64) -> Option<u64>;

/// Ticks are 40 ms after their frame was sent; time only moves forward, and every datagram that
/// has arrived by a tick is handled (in arrival order) before that tick.
const TICK_PHASE_MS: u64 = 40;

fn in_order(_: u64) -> Option<u64> {
    Some(0)
}

/// 0–30 ms of jitter, and one pair in eight arrives swapped (its first packet 50 ms late).
fn jitter_reorder(n: u64) -> Option<u64> {
    let swapped = hash(n / 2).is_multiple_of(8) && n.is_multiple_of(2);
    Some(hash(n) % 30 + if swapped { 50 } else { 0 })
}

fn loss_10pct(n: u64) -> Option<u64> {
    (!hash(n).is_multiple_of(10)).then_some(0)
}

/// Everything one call's receive path owns.
struct Path {
    t0: Instant,
    session: Session,
    jitter: JitterBuffer,
    ring: Producer<i16>,
    /// The mixer's end, drained whenever the ring is nearly full (amortized: once per 49 frames).
    speaker: Consumer<i16>,
    datagrams: Vec<[u8; 12 + FRAME_SAMPLES]>,
    arrivals: Arrivals<Network>,
    frame: Frame,
}

impl Path {
    fn new(network: Network) -> Path {
        let t0 = Instant::now();
        let (ring, speaker) = RingBuffer::new(RING_SAMPLES);
        Path {
            t0,
            session: session(t0),
            jitter: JitterBuffer::new(JitterConfig::default()),
            ring,
            speaker,
            datagrams: datagrams(),
            arrivals: Arrivals::new(network),
            frame: SILENCE,
        }
    }

    /// Tick `k`, after the datagrams that arrived since the last one (one on average).
    #[inline]
    fn step(&mut self, k: u64) {
        let tick_ms = 20 * k + TICK_PHASE_MS;
        while let Some((n, at)) = self.arrivals.next_by(tick_ms) {
            let d = &mut self.datagrams[(n % DATAGRAMS as u64) as usize];
            d[2..4].copy_from_slice(&SEQ0.wrapping_add(n as u16).to_be_bytes());
            d[4..8].copy_from_slice(&TS0.wrapping_add((n as u32).wrapping_mul(160)).to_be_bytes());
            let now = self.t0 + Duration::from_millis(at);
            if let Some(audio) = self.session.handle_rtp(now, peer(), black_box(&d[..])) {
                let mut pcm = [0i16; 3 * FRAME_SAMPLES];
                let len = audio.payload.len().min(pcm.len());
                Law::Ulaw.decode(&audio.payload[..len], &mut pcm[..len]);
                self.jitter.push(
                    now,
                    audio.seq,
                    audio.timestamp,
                    audio.marker,
                    audio.ssrc.0,
                    &pcm[..len],
                );
            }
        }
        let tick = self.t0 + Duration::from_millis(tick_ms);
        black_box(self.jitter.pop(tick, &mut self.frame));
        push_frame(&mut self.ring, &self.frame);
        if self.ring.slots() < FRAME_SAMPLES {
            let n = self.speaker.slots();
            self.speaker.read_chunk(n).unwrap().commit_all();
        }
    }
}

/// The speaker feed's push: the whole frame or nothing, without blocking.
#[inline]
fn push_frame(ring: &mut Producer<i16>, frame: &Frame) -> bool {
    match ring.write_chunk_uninit(frame.len()) {
        Ok(chunk) => {
            chunk.fill_from_iter(frame.iter().copied());
            true
        }
        Err(_) => false,
    }
}

fn whole_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline/packet");
    group.throughput(Throughput::Elements(1));
    let networks: [(&str, Network); 3] = [
        ("in_order", in_order),
        ("jitter_reorder", jitter_reorder),
        ("loss_10pct", loss_10pct),
    ];
    for (name, network) in networks {
        group.bench_function(name, |b| {
            let mut path = Path::new(network);
            let mut k = 0u64;
            b.iter(|| {
                path.step(k);
                k += 1;
            });
        });
    }
    group.finish();
}

fn stages(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline/stage");
    group.throughput(Throughput::Elements(1));
    group.bench_function("handle_rtp", |b| {
        let t0 = Instant::now();
        let mut session = session(t0);
        let mut datagrams = datagrams();
        let mut k = 0u64;
        b.iter(|| {
            let d = &mut datagrams[(k % DATAGRAMS as u64) as usize];
            d[2..4].copy_from_slice(&SEQ0.wrapping_add(k as u16).to_be_bytes());
            d[4..8].copy_from_slice(&TS0.wrapping_add((k as u32).wrapping_mul(160)).to_be_bytes());
            let now = t0 + Duration::from_millis(20 * k);
            let len = session
                .handle_rtp(now, peer(), black_box(&d[..]))
                .map(|a| a.payload.len());
            k += 1;
            len
        });
    });
    group.bench_function("g711_decode_160", |b| {
        let datagrams = datagrams();
        let mut pcm = [0i16; FRAME_SAMPLES];
        b.iter(|| {
            Law::Ulaw.decode(black_box(&datagrams[7][12..]), &mut pcm);
            black_box(pcm[0])
        });
    });
    group.bench_function("ring_push_160", |b| {
        let (mut ring, mut speaker) = RingBuffer::<i16>::new(RING_SAMPLES);
        let mut frame = SILENCE;
        speech_like(0, &mut frame);
        b.iter(|| {
            push_frame(&mut ring, black_box(&frame));
            if ring.slots() < FRAME_SAMPLES {
                let n = speaker.slots();
                speaker.read_chunk(n).unwrap().commit_all();
            }
        });
    });
    group.finish();
}

criterion_group!(benches, whole_path, stages);
criterion_main!(benches);
