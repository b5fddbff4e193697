//! The microphone's two halves, sans-IO: [`CaptureCallback`], the body of the cpal input
//! callback, and [`CaptureReader`], which turns what it captured into 20 ms frames at 8 kHz.
//!
//! Real-time promise: after [`channel`] returns, [`CaptureCallback`] never allocates, frees,
//! locks, logs or blocks. It only folds the device's channels to mono, converts to 16-bit and
//! pushes into a preallocated SPSC ring (rtrb), with a stamp of when the buffer was captured
//! (from the host's timestamps) in a second ring. A full ring drops the rest of the buffer and
//! counts an overrun: nothing waits.
//!
//! Everything else runs on the reader's side, outside the callback: a low-pass filter (the
//! anti-aliasing before decimation to 8 kHz, 4th-order Butterworth at 3.4 kHz), the
//! device-rate → 8 kHz resampler ([`Resampler`]), and the drift correction. The reader keeps the
//! ring near a target fill (one 20 ms frame, half a device period, a margin widened by each
//! underrun, and a dead band) and nudges the resampler's ratio (within ±0.5 %) from the
//! smoothed fill, so the drift between the capture card's clock and the network's neither
//! starves the frames nor lets latency grow.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cpal::InputCallbackInfo;
use rtrb::{Consumer, Producer, RingBuffer};

use super::mixer::LatencyHistogram;
use super::resample::Resampler;
use crate::clock;
use crate::media::frame::{FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// Capture stamps in flight: far more than the callbacks in a second-deep ring.
const STAMP_RING: usize = 1024;

/// Jitter margin at the start and what each underrun adds, up to the maximum, in ms. Capture
/// through a sound server arrives in bursts of its own fragment size, later than the period.
const MARGIN_START_MS: f64 = 10.0;
const MARGIN_STEP_MS: f64 = 5.0;
const MARGIN_MAX_MS: f64 = 50.0;

/// Fill error left uncorrected, in ms (the 20 ms reads against the callback period make a
/// sawtooth the smoothing does not wholly remove).
const DEAD_BAND_MS: f64 = 5.0;

/// Beyond its target by more than this, the excess is discarded at once (counted as a skip).
const MAX_EXCESS_MS: f64 = 160.0;

/// Ratio correction per ms of fill error beyond the dead band (0.02 per 60 ms).
const DRIFT_GAIN_PER_MS: f64 = 0.02 / 60.0;

/// Time constant of the fill smoothing, seconds.
const FILL_SMOOTHING_SECS: f64 = 0.5;

/// Cut-off of the anti-aliasing filter, Hz: the telephone band's top.
const LOW_PASS_HZ: f64 = 3400.0;

/// Counters shared by the callback, the reader and the metrics.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    /// Callbacks that found the ring full and dropped captured audio (the reader stalled).
    pub overruns: AtomicU64,
    /// 20 ms frames the reader could only partly fill: the operator's voice had a gap.
    pub underruns: AtomicU64,
    /// Times the ring was too far ahead and its excess was discarded.
    pub skips: AtomicU64,
    /// Callbacks so far: the device thread's liveness check.
    pub callbacks: AtomicU64,
    /// Frames of the last callback: the device period.
    pub period_frames: AtomicU64,
    /// Capture → RTP sent, per frame of the operator's voice sent to a caller.
    pub latency: LatencyHistogram,
}

/// Where a callback's buffer starts in the stream (samples pushed before it), and when its
/// first frame was captured.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    sample: u64,
    captured: Instant,
}

/// A capture callback for a `channels`-channel device at `rate` Hz and its reader, around a
/// ring of one second.
pub fn channel(
    rate: u32,
    channels: usize,
    counters: Arc<CaptureCounters>,
) -> (CaptureCallback, CaptureReader) {
    let rate = rate.max(1);
    let (ring_tx, ring_rx) = RingBuffer::new(rate as usize);
    let (stamp_tx, stamp_rx) = RingBuffer::new(STAMP_RING);
    let callback = CaptureCallback {
        ring: ring_tx,
        stamps: stamp_tx,
        channels: channels.max(1),
        pushed: 0,
        counters: Arc::clone(&counters),
    };
    let mut resampler = Resampler::new(rate, SAMPLE_RATE);
    resampler.reset();
    let reader = CaptureReader {
        ring: ring_rx,
        stamps: stamp_rx,
        consumed: 0,
        last_stamp: None,
        rate,
        resampler,
        filter: LowPass::new(rate),
        reading: false,
        fill: 0.0,
        margin_ms: MARGIN_START_MS,
        counters,
    };
    (callback, reader)
}

/// The body of the cpal input callback.
#[derive(Debug)]
pub struct CaptureCallback {
    ring: Producer<i16>,
    stamps: Producer<Stamp>,
    /// Interleaved channels of the device.
    channels: usize,
    /// Samples pushed so far.
    pushed: u64,
    counters: Arc<CaptureCounters>,
}

impl CaptureCallback {
    /// The callback for f32 devices.
    pub fn capture_f32(&mut self, data: &[f32], info: &InputCallbackInfo) {
        let channels = self.channels;
        let scale = 32767.0 / channels as f32;
        self.push(data.len() / channels, info, |frame| {
            let start = frame * channels;
            let sum: f32 = data
                .get(start..start + channels)
                .map_or(0.0, |f| f.iter().sum());
            // Saturating float-to-int cast.
            (sum * scale) as i16
        });
    }

    /// The callback for i16 devices.
    pub fn capture_i16(&mut self, data: &[i16], info: &InputCallbackInfo) {
        let channels = self.channels;
        self.push(data.len() / channels, info, |frame| {
            let start = frame * channels;
            let sum: i32 = data
                .get(start..start + channels)
                .map_or(0, |f| f.iter().map(|&s| i32::from(s)).sum());
            (sum / channels as i32) as i16
        });
    }

    /// Pushes `frames` mono samples made by `sample`, stamped with their capture time.
    fn push(&mut self, frames: usize, info: &InputCallbackInfo, sample: impl Fn(usize) -> i16) {
        self.counters.callbacks.fetch_add(1, Relaxed);
        self.counters.period_frames.store(frames as u64, Relaxed);
        let ts = info.timestamp();
        let behind = ts.callback.duration_since(ts.capture);
        let captured = clock::now().checked_sub(behind);
        let room = self.ring.slots().min(frames);
        if room < frames {
            self.counters.overruns.fetch_add(1, Relaxed);
        }
        if room == 0 {
            return;
        }
        if let Some(captured) = captured {
            // The stamp goes first, so the reader never reads a sample before its stamp. A
            // full stamp ring only loses the measurement.
            let _ = self.stamps.push(Stamp {
                sample: self.pushed,
                captured,
            });
        }
        if let Ok(chunk) = self.ring.write_chunk_uninit(room) {
            chunk.fill_from_iter((0..room).map(&sample));
            self.pushed += room as u64;
        }
    }
}

/// A second-order section (RBJ cookbook), direct form I.
#[derive(Debug, Clone, Copy, Default)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl Biquad {
    fn low_pass(rate: u32, hz: f64, q: f64) -> Biquad {
        let w = 2.0 * std::f64::consts::PI * hz.min(f64::from(rate) * 0.45) / f64::from(rate);
        let alpha = w.sin() / (2.0 * q);
        let cos = w.cos();
        let a0 = 1.0 + alpha;
        Biquad {
            b: [
                (1.0 - cos) / 2.0 / a0,
                (1.0 - cos) / a0,
                (1.0 - cos) / 2.0 / a0,
            ],
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    fn run(&mut self, x: f64) -> f64 {
        let y = self.b[0] * x + self.b[1] * self.x[0] + self.b[2] * self.x[1]
            - self.a[0] * self.y[0]
            - self.a[1] * self.y[1];
        self.x = [x, self.x[0]];
        self.y = [y, self.y[0]];
        y
    }
}

/// The anti-aliasing filter: two sections make a 4th-order Butterworth. Passes everything
/// when the device already runs at 8 kHz.
#[derive(Debug, Clone, Copy)]
struct LowPass {
    sections: Option<[Biquad; 2]>,
}

impl LowPass {
    fn new(rate: u32) -> LowPass {
        let sections = (rate > SAMPLE_RATE).then(|| {
            [
                Biquad::low_pass(rate, LOW_PASS_HZ, 0.541_196_1),
                Biquad::low_pass(rate, LOW_PASS_HZ, 1.306_563),
            ]
        });
        LowPass { sections }
    }

    fn run(&mut self, sample: i16) -> i16 {
        let Some([a, b]) = &mut self.sections else {
            return sample;
        };
        let y = b.run(a.run(f64::from(sample)));
        y.clamp(-32768.0, 32767.0) as i16
    }
}

/// The reading half: 20 ms at 8 kHz at a time, with drift correction.
#[derive(Debug)]
pub struct CaptureReader {
    ring: Consumer<i16>,
    stamps: Consumer<Stamp>,
    /// Samples taken from the ring so far.
    consumed: u64,
    /// The latest stamp at or before `consumed`.
    last_stamp: Option<Stamp>,
    /// The device rate, Hz.
    rate: u32,
    resampler: Resampler,
    filter: LowPass,
    /// False while waiting for the ring to reach its target (at start and after a gap).
    reading: bool,
    /// Smoothed ring fill, samples.
    fill: f64,
    /// Current jitter margin, ms.
    margin_ms: f64,
    counters: Arc<CaptureCounters>,
}

impl CaptureReader {
    /// Discards everything captured so far (nobody was talking) and starts afresh.
    pub fn discard(&mut self) {
        let n = self.ring.slots();
        if let Ok(chunk) = self.ring.read_chunk(n) {
            chunk.commit_all();
            self.consumed += n as u64;
        }
        self.stamp_at(self.consumed);
        self.reading = false;
    }

    /// The device rate, Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The fill the reader steers to, in device samples.
    fn target(&self) -> f64 {
        let period_ms =
            self.counters.period_frames.load(Relaxed) as f64 * 1000.0 / f64::from(self.rate);
        let ms = 20.0 + period_ms / 2.0 + self.margin_ms + DEAD_BAND_MS;
        ms * f64::from(self.rate) / 1000.0
    }

    /// Fills `out` with the next 20 ms of the microphone at 8 kHz (silence where there is
    /// none). Returns when its first sample was captured, if the host said; `None` for a frame
    /// of silence (waiting for the ring to fill).
    pub fn read_frame(&mut self, out: &mut Frame) -> Option<Instant> {
        *out = [0; FRAME_SAMPLES];
        let per_ms = f64::from(self.rate) / 1000.0;
        let target = self.target();
        let available = self.ring.slots();
        if available as f64 > target + MAX_EXCESS_MS * per_ms {
            let excess = available - target as usize;
            if let Ok(chunk) = self.ring.read_chunk(excess) {
                chunk.commit_all();
                self.consumed += excess as u64;
            }
            self.fill = target;
            self.counters.skips.fetch_add(1, Relaxed);
        }
        if !self.reading {
            if (self.ring.slots() as f64) < target {
                self.stamp_at(self.consumed);
                return None;
            }
            self.reading = true;
            self.fill = self.ring.slots() as f64;
            self.resampler.reset();
        }
        let alpha = (0.02 / FILL_SMOOTHING_SECS).min(1.0);
        self.fill += alpha * (self.ring.slots() as f64 - self.fill);
        let error_ms = (self.fill - target) / per_ms;
        let beyond = error_ms.signum() * (error_ms.abs() - DEAD_BAND_MS).max(0.0);
        self.resampler.set_adjust(DRIFT_GAIN_PER_MS * beyond);

        let start = self.consumed;
        let consumed = Cell::new(self.consumed);
        let ring = &mut self.ring;
        let filter = &mut self.filter;
        let mut pull = || {
            let sample = ring.pop().ok()?;
            consumed.set(consumed.get() + 1);
            Some(filter.run(sample))
        };
        for o in out.iter_mut() {
            match self.resampler.next_sample(&mut pull) {
                Some(v) => *o = (v * 32768.0).clamp(-32768.0, 32767.0) as i16,
                None => {
                    self.counters.underruns.fetch_add(1, Relaxed);
                    self.margin_ms = (self.margin_ms + MARGIN_STEP_MS).min(MARGIN_MAX_MS);
                    self.reading = false;
                    break;
                }
            }
        }
        self.consumed = consumed.get();
        self.stamp_at(start)
    }

    /// When sample `at` of the stream was captured, from the latest stamp at or before it.
    fn stamp_at(&mut self, at: u64) -> Option<Instant> {
        while self.stamps.peek().is_ok_and(|s| s.sample <= at) {
            self.last_stamp = self.stamps.pop().ok();
        }
        let stamp = self.last_stamp?;
        let offset = at.saturating_sub(stamp.sample);
        Some(stamp.captured + Duration::from_nanos(offset * 1_000_000_000 / u64::from(self.rate)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cpal::{InputStreamTimestamp, StreamInstant};

    fn info() -> InputCallbackInfo {
        InputCallbackInfo::new(InputStreamTimestamp {
            callback: StreamInstant::from_millis(1010),
            capture: StreamInstant::from_millis(1000),
        })
    }

    /// `frames` stereo frames of a `hz` tone at `rate`, starting at frame `n`.
    fn stereo_tone(rate: u32, hz: f64, n: &mut u64, frames: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(frames * 2);
        for _ in 0..frames {
            let v = (2.0 * std::f64::consts::PI * hz * *n as f64 / f64::from(rate)).sin() * 0.25;
            out.extend([v as f32, v as f32]);
            *n += 1;
        }
        out
    }

    fn zero_crossing_hz(samples: &[i16]) -> f64 {
        let crossings = samples
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        crossings as f64 / 2.0 / (samples.len() as f64 / 8000.0)
    }

    /// Runs `seconds` of a device at `rate` (its clock `ppm` off) with 10 ms callbacks against
    /// 20 ms reads; returns the frames read and the final fill in ms.
    fn run(rate: u32, ppm: f64, seconds: usize) -> (Vec<i16>, f64, Arc<CaptureCounters>) {
        let counters = Arc::new(CaptureCounters::default());
        let (mut callback, mut reader) = channel(rate, 2, Arc::clone(&counters));
        let mut n = 0;
        let mut owed = 0.0;
        let mut read = Vec::new();
        for tick in 0..seconds * 50 {
            // Two callbacks of the card's 10 ms per 20 ms of network time.
            for _ in 0..2 {
                owed += f64::from(rate) / 100.0 * (1.0 + ppm / 1e6);
                let frames = owed as usize;
                owed -= frames as f64;
                callback.capture_f32(&stereo_tone(rate, 1000.0, &mut n, frames), &info());
            }
            let mut frame = [0; FRAME_SAMPLES];
            reader.read_frame(&mut frame);
            if tick >= 50 {
                read.extend_from_slice(&frame);
            }
        }
        let fill_ms = reader.ring.slots() as f64 * 1000.0 / f64::from(rate);
        (read, fill_ms, counters)
    }

    #[test]
    fn a_stereo_tone_comes_out_mono_at_8_khz_at_pitch_without_gaps() {
        let (read, _, counters) = run(48_000, 0.0, 10);
        let hz = zero_crossing_hz(&read);
        assert!((hz - 1000.0).abs() < 20.0, "{hz} Hz");
        for frame in read.chunks(160) {
            let peak = frame.iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(peak > 6000, "a quiet frame: peak {peak}");
        }
        assert_eq!(counters.underruns.load(Relaxed), 0);
        assert_eq!(counters.overruns.load(Relaxed), 0);
    }

    #[test]
    fn clock_drift_either_way_is_absorbed_and_the_fill_stays_near_its_target() {
        for ppm in [-300.0, 300.0] {
            let (read, fill_ms, counters) = run(44_100, ppm, 60);
            assert_eq!(counters.underruns.load(Relaxed), 0, "{ppm} ppm");
            assert_eq!(counters.skips.load(Relaxed), 0, "{ppm} ppm");
            // Target before a read: 20 + 5 + 10 + 5 ms, so about 20 ms after it, within the
            // dead band. Uncorrected, 300 ppm would have moved it 18 ms over the minute.
            assert!((13.0..=27.0).contains(&fill_ms), "{ppm} ppm: {fill_ms} ms");
            let hz = zero_crossing_hz(&read);
            assert!((hz - 1000.0).abs() < 20.0, "{hz} Hz");
        }
    }

    #[test]
    fn a_full_ring_counts_an_overrun_and_discard_starts_afresh() {
        let counters = Arc::new(CaptureCounters::default());
        let (mut callback, mut reader) = channel(8000, 1, Arc::clone(&counters));
        let data = vec![0.5f32; 3000];
        for _ in 0..3 {
            callback.capture_f32(&data, &info());
        }
        assert_eq!(counters.overruns.load(Relaxed), 1);
        reader.discard();
        assert_eq!(reader.ring.slots(), 0);
        let mut frame = [0; FRAME_SAMPLES];
        assert!(reader.read_frame(&mut frame).is_none());
        assert_eq!(frame, [0; FRAME_SAMPLES]);
    }

    #[test]
    fn frames_carry_the_capture_time_of_their_first_sample() {
        let counters = Arc::new(CaptureCounters::default());
        let (mut callback, mut reader) = channel(8000, 1, counters);
        let before = clock::now();
        for _ in 0..10 {
            callback.capture_i16(&[1000; 80], &info());
        }
        let mut frame = [0; FRAME_SAMPLES];
        let at = reader.read_frame(&mut frame).unwrap();
        // Captured 10 ms before the callback ran, which was after `before`.
        assert!(at + Duration::from_millis(10) >= before);
        assert!(at <= clock::now());
    }
}
