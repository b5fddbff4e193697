//! The playout mixer: what the audio callback runs. Sans-IO: no device, no clock, no thread.
//!
//! Real-time promise: after [`channel`] returns, [`Mixer::fill`] never allocates, frees, locks,
//! logs or blocks. Everything it touches was allocated up front: the input table (a `Vec` with
//! its final capacity), the mix buffer, and three rtrb rings — each call's samples, the command
//! ring that brings new inputs in, and the retired ring that carries removed inputs out to a
//! non-real-time thread, which drops them there ([`MixerControl::collect_retired`]).
//!
//! Each input is one call's 8 kHz mono stream. The mixer keeps every ring near a target fill
//! that is as shallow as the device allows: one device period, half a 20 ms push, and a
//! margin for scheduling jitter ([`MARGIN_START`], widened by each underrun). An input waits
//! until that much has arrived before it plays, and its resampler's ratio is nudged (within
//! ±0.5 %) from the smoothed fill level, so the drift between the network clock and the sound
//! card's clock neither starves playout nor lets latency grow. Inputs not being listened to
//! are consumed at the same rate and discarded, so switching one on is instant and call tasks
//! never find their ring full.
//!
//! Latency is measured, not assumed: a feed can stamp a frame with the arrival time of the
//! packet it came from; when the mixer plays that frame's first sample it records arrival →
//! playback (the callback's playback instant from the host, plus the sample's offset in the
//! buffer) in [`LatencyHistogram`], through a second, equally preallocated ring.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rtrb::{Consumer, Producer, PushError, RingBuffer};

use super::resample::Resampler;
use crate::media::frame::SAMPLE_RATE;

/// Samples a call task pushes at once: one 20 ms frame at 8 kHz.
const PUSH: usize = SAMPLE_RATE as usize / 50;

/// Margin above the least fill that plays without a gap, for the scheduling jitter of call
/// tasks and callbacks: 5 ms at 8 kHz.
pub const MARGIN_START: usize = SAMPLE_RATE as usize / 200;

/// What each underrun adds to that input's margin (5 ms), up to [`MARGIN_MAX`] (50 ms).
const MARGIN_STEP: usize = SAMPLE_RATE as usize / 200;
const MARGIN_MAX: usize = SAMPLE_RATE as usize / 20;

/// Beyond its target by more than this (160 ms), an input's excess is discarded at once
/// instead of slowly drifted away, bounding latency after a burst (a jitter buffer flushing).
pub const MAX_EXCESS: usize = SAMPLE_RATE as usize * 160 / 1000;

/// Callbacks over which the device period is re-measured (the largest callback in the window
/// counts; a larger one counts at once).
const PERIOD_WINDOW: u32 = 256;

/// Latency histogram resolution: 1 ms buckets up to this many ms (the last bucket holds
/// everything longer).
pub const LATENCY_BUCKETS: usize = 512;

/// Arrival stamps a feed can have in flight: more than the ring's second of 20 ms frames.
const STAMP_RING: usize = 64;

/// Capacity of each call's ring: one second at 8 kHz, longer than it takes the driver to
/// notice a dead device and take the mixer back.
pub const INPUT_RING_SAMPLES: usize = SAMPLE_RATE as usize;

/// Output frames mixed per pass; longer callbacks are processed in several passes.
const MIX_CHUNK: usize = 1024;

/// Drift control gain: ratio correction per sample of fill error beyond the dead band
/// (0.02 per 60 ms of error: a time constant of about 3 s).
const DRIFT_GAIN: f64 = 0.02 / 480.0;

/// Fill error left uncorrected: ±5 ms, or a quarter of the device period if that is more. The
/// 20 ms pushes against the callback period bias the measured fill by a few milliseconds
/// depending on their phase (more for long periods); steering that away would bend the pitch
/// for seconds after every start. Clock drift is corrected at the band's edge instead.
const fn dead_band(period: usize) -> usize {
    let floor = SAMPLE_RATE as usize / 200;
    if period / 4 > floor {
        period / 4
    } else {
        floor
    }
}

/// Time constant of the fill-level smoothing, in seconds; it averages out the 20 ms sawtooth of
/// pushes and the callback period.
const FILL_SMOOTHING_SECS: f64 = 0.5;

/// Where soft clipping starts: below this the mix passes unchanged.
const CLIP_KNEE: f32 = 0.5;

/// Counters shared by the mixer (writer of `underruns`, `skips`) and the feeds (`overruns`).
#[derive(Debug, Default)]
pub struct MixerCounters {
    /// A listened input ran dry in the middle of a callback (an audible gap).
    pub underruns: AtomicU64,
    /// A feed found its ring full and dropped a push (the mixer is not keeping up).
    pub overruns: AtomicU64,
    /// An input was more than [`MAX_FILL`] ahead and its excess was discarded.
    pub skips: AtomicU64,
    /// Inputs currently in the mixer (including ones awaiting retirement).
    pub inputs: AtomicU64,
    /// Packet arrival → playback of stamped frames of listened inputs.
    pub latency: LatencyHistogram,
    /// The first part of it: packet arrival → the frame pushed into its ring (the wait in the
    /// jitter buffer and for the call's 20 ms tick).
    pub queued: LatencyHistogram,
    /// The device period the mixer measured, in 8 kHz samples.
    pub period: AtomicU64,
}

/// Arrival-to-playback latency in 1 ms buckets: wait-free to record from the callback.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Bucket `i` counts latencies in `[i, i + 1)` ms; the last one everything longer.
    counts: [AtomicU64; LATENCY_BUCKETS],
    /// Sum of recorded latencies, µs.
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = usize::try_from(us / 1000)
            .map_or(LATENCY_BUCKETS - 1, |ms| ms.min(LATENCY_BUCKETS - 1));
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// A copy of the counts, for quantiles and the metrics.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Per 1 ms bucket, as in [`LatencyHistogram`].
    pub counts: Vec<u64>,
    /// Sum of recorded latencies, µs.
    pub sum_us: u64,
}

impl LatencySnapshot {
    /// Recorded latencies.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in ms, to the bucket's midpoint; `None` before any record.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(ms as f64 + 0.5);
            }
        }
        None
    }

    /// Latencies up to `ms` milliseconds (for cumulative buckets).
    pub fn count_below_ms(&self, ms: usize) -> u64 {
        self.counts.iter().take(ms).sum()
    }
}

/// The arrival time of the packet a frame came from, and where the frame starts in the
/// input's stream (samples pushed before it).
#[derive(Debug, Clone, Copy)]
struct Stamp {
    sample: u64,
    arrival: Instant,
}

/// A message from the control side to the mixer, through the command ring.
#[derive(Debug)]
pub enum Command {
    /// Start mixing this input.
    Add(Input),
    /// Stop mixing the input with this id and retire it, discarding unplayed samples.
    Remove(u64),
}

/// Whether an input is waiting for its ring to fill or playing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Playout {
    /// Silent until the ring holds the target fill (at start and after an underrun).
    Buffering,
    /// Consuming the ring through the resampler.
    Playing,
}

/// One call's stream inside the mixer.
#[derive(Debug)]
pub struct Input {
    /// The caller's id, used by [`Command::Remove`].
    id: u64,
    /// 8 kHz mono samples pushed by the call task.
    ring: Consumer<i16>,
    /// Arrival stamps of frames in `ring`, oldest first.
    stamps: Consumer<Stamp>,
    /// Samples taken from `ring` so far.
    consumed: u64,
    /// Jitter margin of this input, samples ([`MARGIN_START`] + one step per underrun).
    margin: usize,
    /// Whether this call is audible; shared with its feed.
    listen: Arc<AtomicBool>,
    /// 8 kHz → output rate, with the drift correction applied.
    resampler: Resampler,
    /// Buffering or playing.
    playout: Playout,
    /// Smoothed ring fill in samples, the drift control's measurement.
    fill: f64,
    /// Set by [`Command::Remove`]; the input is silent and retired at the end of the callback.
    removed: bool,
}

impl Input {
    /// An input reading `ring` (and the arrival `stamps` of its frames), audible while
    /// `listen` is set.
    fn new(
        id: u64,
        ring: Consumer<i16>,
        stamps: Consumer<Stamp>,
        listen: Arc<AtomicBool>,
    ) -> Input {
        Input {
            id,
            ring,
            stamps,
            consumed: 0,
            margin: MARGIN_START,
            listen,
            resampler: Resampler::new(SAMPLE_RATE, SAMPLE_RATE),
            playout: Playout::Buffering,
            fill: 0.0,
            removed: false,
        }
    }

    /// The caller's id for this input.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the input can leave the mixer: removed, or its producer is gone and every
    /// sample it pushed has been played.
    fn finished(&self) -> bool {
        self.removed || (self.ring.is_empty() && self.ring.is_abandoned())
    }

    /// The mean fill (sampled before each callback) this input steers to, for a device
    /// `period` of 8 kHz samples. Before a push the ring must still hold a whole period: the
    /// call task's clock and the card's drift apart, so now and then a push lands one
    /// callback late. Pushes and callbacks then make a sawtooth whose mean lies half a push
    /// and half a period above that floor. On top: the margin, and the dead band the mean may
    /// sit below its target.
    fn target(&self, period: usize) -> usize {
        period + (PUSH + period) / 2 + self.margin + dead_band(period)
    }

    /// Mixes `mix.len()` output frames of this input into `mix` (or consumes them silently when
    /// not listened to) and updates the drift control. `clock` says when `mix[0]` plays and
    /// at what rate, and how long the device period is.
    fn render(&mut self, mix: &mut [f32], clock: &PassClock, counters: &MixerCounters) {
        if self.removed {
            return;
        }
        let target = self.target(clock.period);
        let available = self.ring.slots();
        if available > target + MAX_EXCESS {
            // Far ahead: drop the excess now rather than play it late.
            for _ in 0..available - target {
                if self.ring.pop().is_err() {
                    break;
                }
                self.consumed += 1;
            }
            self.fill = target as f64;
            counters.skips.fetch_add(1, Relaxed);
        }
        if self.playout == Playout::Buffering {
            self.drop_stamps_before(self.consumed);
            // A call that ended pushes no more: what it left plays out at once.
            if self.ring.slots() < target && !self.ring.is_abandoned() {
                return;
            }
            self.playout = Playout::Playing;
            self.fill = self.ring.slots() as f64;
            self.resampler.reset();
        }
        self.steer(mix.len(), clock.rate, target, dead_band(clock.period));

        let listening = self.listen.load(Relaxed);
        let consumed = Cell::new(self.consumed);
        let ring = &mut self.ring;
        let mut pull = || {
            let sample = ring.pop().ok();
            if sample.is_some() {
                consumed.set(consumed.get() + 1);
            }
            sample
        };
        let mut next_stamp = self.stamps.peek().ok().map(|s| s.sample);
        for (i, out) in mix.iter_mut().enumerate() {
            match self.resampler.next_sample(&mut pull) {
                Some(value) if listening => *out += value,
                Some(_) => {}
                None => {
                    // Ran dry mid-callback. A call that ended simply drained; anything else is
                    // a gap the listener hears: give this input more margin.
                    if listening && !ring.is_abandoned() {
                        counters.underruns.fetch_add(1, Relaxed);
                        self.margin = (self.margin + MARGIN_STEP).min(MARGIN_MAX);
                    }
                    self.playout = Playout::Buffering;
                    break;
                }
            }
            // The stamped frame's first sample was just taken: it plays at this output frame.
            while next_stamp.is_some_and(|at| at < consumed.get()) {
                if let Ok(stamp) = self.stamps.pop()
                    && listening
                    && let Some(playback) = clock.at(i)
                {
                    counters
                        .latency
                        .record(playback.saturating_duration_since(stamp.arrival));
                }
                next_stamp = self.stamps.peek().ok().map(|s| s.sample);
            }
        }
        self.consumed = consumed.get();
    }

    /// Forgets stamps of frames that were skipped rather than played.
    fn drop_stamps_before(&mut self, sample: u64) {
        while self.stamps.peek().is_ok_and(|s| s.sample < sample) {
            let _ = self.stamps.pop();
        }
    }

    /// Updates the smoothed fill and nudges the resampler ratio toward `target`.
    fn steer(&mut self, frames: usize, out_rate: u32, target: usize, band: usize) {
        let seconds = frames as f64 / f64::from(out_rate.max(1));
        let alpha = (seconds / FILL_SMOOTHING_SECS).min(1.0);
        self.fill += alpha * (self.ring.slots() as f64 - self.fill);
        let error = self.fill - target as f64;
        let beyond_band = error.signum() * (error.abs() - band as f64).max(0.0);
        self.resampler.set_adjust(DRIFT_GAIN * beyond_band);
    }
}

/// When one mixing pass plays, for the latency measurement and the targets.
#[derive(Debug, Clone, Copy)]
struct PassClock {
    /// When the pass's first frame plays, if the host said.
    start: Option<Instant>,
    /// Output rate, Hz.
    rate: u32,
    /// The device period in 8 kHz samples.
    period: usize,
}

impl PassClock {
    /// When output frame `i` of the pass plays.
    fn at(&self, i: usize) -> Option<Instant> {
        self.start.map(|start| start + Self::offset(i, self.rate))
    }

    /// How long `frames` output frames at `rate` Hz last.
    fn offset(frames: usize, rate: u32) -> Duration {
        Duration::from_nanos(frames as u64 * 1_000_000_000 / u64::from(rate.max(1)))
    }
}

/// The real-time half: owned by the audio callback (or by the device thread while no device
/// plays).
#[derive(Debug)]
pub struct Mixer {
    /// Live inputs; allocated with room for the most inputs at once and never grown (an
    /// `Add` beyond its capacity waits in the command ring).
    inputs: Vec<Input>,
    /// Commands from [`MixerControl`].
    commands: Consumer<Command>,
    /// Inputs leaving the mixer, to be dropped by [`MixerControl::collect_retired`].
    retired: Producer<Input>,
    /// Mono mix of one pass, [`MIX_CHUNK`] frames.
    mix: Vec<f32>,
    /// Output sample rate in Hz.
    out_rate: u32,
    /// The device period in 8 kHz samples: the largest callback of the last window.
    period: u32,
    /// Largest callback so far in this window, and callbacks in it.
    window_max: u32,
    window_len: u32,
    /// Shared statistics.
    counters: Arc<MixerCounters>,
}

/// The control half: adds and removes inputs and drops retired ones. Not real-time; share it
/// behind a lock if several threads need it.
#[derive(Debug)]
pub struct MixerControl {
    /// Producer end of the command ring.
    commands: Producer<Command>,
    /// Consumer end of the retired ring.
    retired: Consumer<Input>,
    /// Shared statistics.
    counters: Arc<MixerCounters>,
}

/// Why an input could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The command ring is full: the mixer has not run for a while (no callback).
    #[error("the mixer's command ring is full")]
    CommandRingFull,
}

/// A mixer for `out_rate` Hz output with room for `max_inputs` inputs, and its control half.
pub fn channel(out_rate: u32, max_inputs: usize) -> (Mixer, MixerControl) {
    let max_inputs = max_inputs.max(1);
    let (command_tx, command_rx) = RingBuffer::new(max_inputs * 2 + 16);
    let (retired_tx, retired_rx) = RingBuffer::new(max_inputs * 2 + 16);
    let counters = Arc::new(MixerCounters::default());
    let mixer = Mixer {
        inputs: Vec::with_capacity(max_inputs),
        commands: command_rx,
        retired: retired_tx,
        mix: vec![0.0; MIX_CHUNK],
        out_rate: out_rate.max(1),
        period: 0,
        window_max: 0,
        window_len: 0,
        counters: Arc::clone(&counters),
    };
    let control = MixerControl {
        commands: command_tx,
        retired: retired_rx,
        counters,
    };
    (mixer, control)
}

impl Mixer {
    /// Fills `out` (interleaved, `channels` per frame) with the mix of all listened inputs, the
    /// same signal on every channel, soft-clipped. Returns the frames written: every whole
    /// frame of `out`; a trailing partial frame is left to the caller.
    pub fn fill(&mut self, out: &mut [f32], channels: usize) -> usize {
        self.fill_at(out, channels, None)
    }

    /// [`Mixer::fill`] for a buffer whose first frame plays at `playback` (from the host's
    /// timestamps), which lets stamped frames record their latency.
    pub fn fill_at(
        &mut self,
        out: &mut [f32],
        channels: usize,
        playback: Option<Instant>,
    ) -> usize {
        self.apply_commands();
        let channels = channels.max(1);
        let frames = out.len() / channels;
        self.measure_period(frames);
        let mut done = 0;
        while done < frames {
            let n = (frames - done).min(self.mix.len());
            let mix = &mut self.mix[..n];
            mix.fill(0.0);
            let clock = PassClock {
                start: playback.map(|at| at + PassClock::offset(done, self.out_rate)),
                rate: self.out_rate,
                period: self.period as usize,
            };
            for input in &mut self.inputs {
                input.render(mix, &clock, &self.counters);
            }
            let block = &mut out[done * channels..(done + n) * channels];
            for (frame, &value) in block.chunks_exact_mut(channels).zip(mix.iter()) {
                frame.fill(soft_clip(value));
            }
            done += n;
        }
        self.retire_finished();
        frames
    }

    /// Tracks the device period from callback sizes: a larger callback counts at once, a
    /// smaller period only once a whole window has been smaller.
    fn measure_period(&mut self, frames: usize) {
        let rate = u64::from(self.out_rate);
        let samples = u32::try_from((frames as u64 * u64::from(SAMPLE_RATE)).div_ceil(rate))
            .unwrap_or(u32::MAX);
        self.period = self.period.max(samples);
        self.window_max = self.window_max.max(samples);
        self.window_len += 1;
        if self.window_len >= PERIOD_WINDOW {
            self.period = self.window_max;
            self.window_max = 0;
            self.window_len = 0;
        }
        self.counters.period.store(u64::from(self.period), Relaxed);
    }

    /// The target fill of every input, in 8 kHz samples (the same for all while their margins
    /// are; for tests and diagnostics).
    pub fn targets(&self) -> impl Iterator<Item = usize> + '_ {
        self.inputs.iter().map(|i| i.target(self.period as usize))
    }

    /// Changes the output rate (a device with another rate was opened).
    pub fn set_output_rate(&mut self, out_rate: u32) {
        self.out_rate = out_rate.max(1);
        self.period = 0;
        self.window_max = 0;
        self.window_len = 0;
        for input in &mut self.inputs {
            input.resampler.set_rates(SAMPLE_RATE, self.out_rate);
        }
    }

    /// The output rate in Hz.
    pub fn output_rate(&self) -> u32 {
        self.out_rate
    }

    /// Inputs currently mixed.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether no input is mixed.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<MixerCounters> {
        &self.counters
    }

    /// Pops pending commands. An `Add` that does not fit waits in the ring for a free slot.
    fn apply_commands(&mut self) {
        loop {
            let is_add = match self.commands.peek() {
                Ok(Command::Add(_)) => true,
                Ok(Command::Remove(_)) => false,
                Err(_) => return,
            };
            if is_add && self.inputs.len() >= self.inputs.capacity() {
                return;
            }
            match self.commands.pop() {
                Ok(Command::Add(mut input)) => {
                    input.resampler.set_rates(SAMPLE_RATE, self.out_rate);
                    self.inputs.push(input);
                    self.counters
                        .inputs
                        .store(self.inputs.len() as u64, Relaxed);
                }
                Ok(Command::Remove(id)) => {
                    for input in self.inputs.iter_mut().filter(|i| i.id == id) {
                        input.removed = true;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Moves finished inputs to the retired ring. If that ring is full they stay (silent) and
    /// are tried again next time: dropping them here would free memory in the callback.
    fn retire_finished(&mut self) {
        let mut i = 0;
        while i < self.inputs.len() {
            if !self.inputs[i].finished() {
                i += 1;
                continue;
            }
            let input = self.inputs.swap_remove(i);
            if let Err(PushError::Full(mut input)) = self.retired.push(input) {
                input.removed = true;
                // Cannot reallocate: one slot was just freed by swap_remove.
                self.inputs.push(input);
                break;
            }
        }
        self.counters
            .inputs
            .store(self.inputs.len() as u64, Relaxed);
    }
}

impl MixerControl {
    /// Adds an input for call `id` and returns the feed the call task pushes into. The ring is
    /// allocated here, on the caller's thread.
    pub fn add(&mut self, id: u64, listen: bool) -> Result<InputFeed, AddError> {
        let (producer, consumer) = RingBuffer::new(INPUT_RING_SAMPLES);
        let (stamp_tx, stamp_rx) = RingBuffer::new(STAMP_RING);
        let listen = Arc::new(AtomicBool::new(listen));
        let input = Input::new(id, consumer, stamp_rx, Arc::clone(&listen));
        match self.commands.push(Command::Add(input)) {
            Ok(()) => Ok(InputFeed {
                id,
                ring: producer,
                stamps: stamp_tx,
                pushed: 0,
                listen,
                counters: Arc::clone(&self.counters),
            }),
            Err(PushError::Full(_)) => Err(AddError::CommandRingFull),
        }
    }

    /// Asks the mixer to drop call `id`'s input. Returns false if the command ring is full; the
    /// mixer still retires the input once its feed is dropped and its ring has drained.
    pub fn remove(&mut self, id: u64) -> bool {
        self.commands.push(Command::Remove(id)).is_ok()
    }

    /// Drops inputs the mixer has retired; returns how many. Call it regularly from a
    /// non-real-time thread.
    pub fn collect_retired(&mut self) -> usize {
        let mut n = 0;
        while self.retired.pop().is_ok() {
            n += 1;
        }
        n
    }

    /// The shared counters.
    pub fn counters(&self) -> &Arc<MixerCounters> {
        &self.counters
    }
}

/// The producer side of one input: the call task pushes 8 kHz samples into it.
#[derive(Debug)]
pub struct InputFeed {
    /// The call id given to [`MixerControl::add`].
    id: u64,
    /// Producer end of the input's ring.
    ring: Producer<i16>,
    /// Arrival stamps of pushed frames.
    stamps: Producer<Stamp>,
    /// Samples pushed so far.
    pushed: u64,
    /// Whether the call is audible; shared with the mixer's input.
    listen: Arc<AtomicBool>,
    /// Where overruns are counted.
    counters: Arc<MixerCounters>,
}

impl InputFeed {
    /// Pushes `samples` whole, without blocking. If they do not all fit, none are pushed, an
    /// overrun is counted and false is returned.
    pub fn push(&mut self, samples: &[i16]) -> bool {
        match self.ring.write_chunk_uninit(samples.len()) {
            Ok(chunk) => {
                chunk.fill_from_iter(samples.iter().copied());
                self.pushed += samples.len() as u64;
                true
            }
            Err(_) => {
                self.counters.overruns.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// [`InputFeed::push`] at `now` for samples that came from a packet that arrived at
    /// `arrival`: the mixer records arrival → playback when it plays the first of them. A full
    /// stamp ring only loses the measurement.
    pub fn push_from(&mut self, samples: &[i16], arrival: Instant, now: Instant) -> bool {
        self.counters
            .queued
            .record(now.saturating_duration_since(arrival));
        // The stamp goes first, so the mixer never plays the frame before seeing it; the room
        // checked here can only grow (this is the only producer).
        if self.ring.slots() >= samples.len() {
            let _ = self.stamps.push(Stamp {
                sample: self.pushed,
                arrival,
            });
        }
        self.push(samples)
    }

    /// Makes the call audible or silent; takes effect at the next callback.
    pub fn set_listen(&self, on: bool) {
        self.listen.store(on, Relaxed);
    }

    /// Whether the call is audible.
    pub fn listen(&self) -> bool {
        self.listen.load(Relaxed)
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Samples waiting in the ring (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        INPUT_RING_SAMPLES - self.ring.slots()
    }
}

/// Soft clipper: identity below the knee, then a smooth curve approaching ±1, so a loud mix of
/// several calls is compressed instead of hard-clipped.
#[inline]
pub fn soft_clip(x: f32) -> f32 {
    let magnitude = x.abs();
    if magnitude <= CLIP_KNEE {
        return x;
    }
    let over = (magnitude - CLIP_KNEE) / (1.0 - CLIP_KNEE);
    (CLIP_KNEE + (1.0 - CLIP_KNEE) * rational_tanh(over)).copysign(x)
}

/// A rational approximation of `tanh` for `z >= 0`: slope 1 at 0, monotonic, reaching exactly 1
/// with zero slope at `z = 3`.
#[inline]
fn rational_tanh(z: f32) -> f32 {
    if z >= 3.0 {
        1.0
    } else {
        let z2 = z * z;
        z * (27.0 + z2) / (27.0 + 9.0 * z2)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// A 8 kHz tone generator: `amplitude * sin(2π f n / 8000)`.
    struct Tone {
        freq: f64,
        amplitude: f64,
        n: u64,
    }

    impl Tone {
        fn new(freq: f64, amplitude: f64) -> Tone {
            Tone {
                freq,
                amplitude,
                n: 0,
            }
        }

        fn frame(&mut self) -> [i16; 160] {
            let mut frame = [0i16; 160];
            for s in &mut frame {
                let t = self.n as f64 / 8000.0;
                *s = (self.amplitude * (2.0 * PI * self.freq * t).sin()).round() as i16;
                self.n += 1;
            }
            frame
        }
    }

    /// Power of `freq` in `signal` sampled at `rate` (Goertzel), normalised by length.
    fn goertzel(signal: &[f32], rate: f64, freq: f64) -> f64 {
        let coeff = 2.0 * (2.0 * PI * freq / rate).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in signal {
            let s = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (signal.len() as f64).powi(2)
    }

    /// Runs `seconds` of real time: the feeds get a frame every 20 ms, the mixer a 10 ms
    /// callback; returns the mono output.
    fn play(
        mixer: &mut Mixer,
        feeds: &mut [(&mut InputFeed, &mut Tone)],
        rate: u32,
        seconds: u32,
    ) -> Vec<f32> {
        let per_callback = rate as usize / 100;
        let mut out = Vec::new();
        let mut buf = vec![0.0f32; per_callback];
        for tick in 0..seconds * 100 {
            if tick % 2 == 0 {
                for (feed, tone) in feeds.iter_mut() {
                    assert!(feed.push(&tone.frame()));
                }
            }
            assert_eq!(mixer.fill(&mut buf, 1), per_callback);
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn a_1khz_tone_at_8khz_plays_at_1khz_at_48khz() {
        let (mut mixer, mut control) = channel(48_000, 4);
        let mut feed = control.add(1, true).unwrap();
        let mut tone = Tone::new(1000.0, 8000.0);
        let out = play(&mut mixer, &mut [(&mut feed, &mut tone)], 48_000, 3);
        let last_second = &out[out.len() - 48_000..];
        let crossings = last_second
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!((1996..=2004).contains(&crossings), "{crossings}");
        let at_1k = goertzel(last_second, 48_000.0, 1000.0);
        for other in [500.0, 900.0, 1100.0, 2000.0, 3000.0, 7000.0] {
            assert!(
                at_1k > 1000.0 * goertzel(last_second, 48_000.0, other),
                "{other}"
            );
        }
        assert_eq!(mixer.counters().underruns.load(Relaxed), 0);
    }

    #[test]
    fn a_tone_keeps_its_pitch_at_44100() {
        let (mut mixer, mut control) = channel(44_100, 4);
        let mut feed = control.add(1, true).unwrap();
        let mut tone = Tone::new(1000.0, 8000.0);
        let out = play(&mut mixer, &mut [(&mut feed, &mut tone)], 44_100, 3);
        let last_second = &out[out.len() - 44_100..];
        let crossings = last_second
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!((1996..=2004).contains(&crossings), "{crossings}");
    }

    #[test]
    fn two_inputs_are_summed_and_silenced_ones_are_drained() {
        let (mut mixer, mut control) = channel(48_000, 4);
        let mut low = control.add(1, true).unwrap();
        let mut high = control.add(2, true).unwrap();
        let mut low_tone = Tone::new(500.0, 4000.0);
        let mut high_tone = Tone::new(1500.0, 4000.0);
        let out = play(
            &mut mixer,
            &mut [(&mut low, &mut low_tone), (&mut high, &mut high_tone)],
            48_000,
            6,
        );
        // A 100 ms window: wide bins, so the drift control's tiny ratio changes do not leak.
        let window = &out[out.len() - 4800..];
        let (p_low, p_high) = (
            goertzel(window, 48_000.0, 500.0),
            goertzel(window, 48_000.0, 1500.0),
        );
        // Catmull-Rom rolls 1.5 kHz off by about 0.2 dB.
        assert!(
            p_low > 0.0 && (p_high / p_low - 1.0).abs() < 0.1,
            "{p_low} {p_high}"
        );
        let tail = &out[out.len() - 48_000..];
        // Both tones at amplitude 4000/32768 = 0.122: sin x + sin 3x peaks near 1.5 times that,
        // well below the clipping knee, so the sum is linear.
        let peak = tail.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(peak > 0.17 && peak < 0.2, "{peak}");

        high.set_listen(false);
        let out = play(
            &mut mixer,
            &mut [(&mut low, &mut low_tone), (&mut high, &mut high_tone)],
            48_000,
            2,
        );
        let tail = &out[out.len() - 48_000..];
        assert!(goertzel(tail, 48_000.0, 1500.0) < 1e-9);
        assert!(goertzel(tail, 48_000.0, 500.0) > 1e-4);
        // The silenced ring is consumed at the same pace as the audible one.
        let target = mixer.targets().max().unwrap();
        assert!(high.queued() <= target + 200, "{}", high.queued());
        assert_eq!(mixer.counters().overruns.load(Relaxed), 0);
    }

    #[test]
    fn clipping_is_soft_monotonic_and_bounded() {
        assert_eq!(soft_clip(0.25), 0.25);
        assert_eq!(soft_clip(-0.5), -0.5);
        assert_eq!(soft_clip(100.0), 1.0);
        assert_eq!(soft_clip(-100.0), -1.0);
        let mut previous = soft_clip(-4.0);
        let mut x = -4.0f32;
        while x < 4.0 {
            x += 0.001;
            let y = soft_clip(x);
            // Allow f32 rounding where the curve flattens out near full scale.
            assert!(y >= previous - 1e-6, "not monotonic at {x}");
            assert!(y - previous < 0.0011, "a step at {x}");
            assert!(y.abs() <= 1.0);
            previous = y;
        }
        // Compressed, not flattened: louder input is still louder output above the knee.
        assert!(soft_clip(0.9) > soft_clip(0.7) && soft_clip(0.9) < 0.9);

        // Three full-scale calls never exceed full scale.
        let (mut mixer, mut control) = channel(48_000, 4);
        let mut feeds: Vec<_> = (0..3).map(|id| control.add(id, true).unwrap()).collect();
        for _ in 0..10 {
            for feed in &mut feeds {
                assert!(feed.push(&[i16::MAX; 160]));
            }
        }
        let mut out = vec![0.0f32; 960];
        mixer.fill(&mut out, 2);
        assert!(out.iter().all(|x| x.abs() <= 1.0));
        assert!(out.iter().any(|&x| x > 0.95));
    }

    #[test]
    fn channels_get_the_same_signal_and_a_partial_frame_is_left() {
        let (mut mixer, mut control) = channel(8_000, 1);
        let mut feed = control.add(7, true).unwrap();
        let mut tone = Tone::new(1000.0, 8000.0);
        for _ in 0..5 {
            assert!(feed.push(&tone.frame()));
        }
        let mut out = vec![9.0f32; 3 * 100 + 2];
        assert_eq!(mixer.fill(&mut out, 3), 100);
        for frame in out[..300].chunks_exact(3) {
            assert!(frame[0] == frame[1] && frame[1] == frame[2]);
        }
        assert_eq!(&out[300..], &[9.0, 9.0]);
        assert!(out[..300].iter().any(|&x| x != 0.0));
    }

    #[test]
    fn inputs_wait_for_the_target_fill_before_playing() {
        let (mut mixer, mut control) = channel(8_000, 1);
        let mut feed = control.add(1, true).unwrap();
        assert!(feed.push(&[1000; 160]));
        let mut out = vec![0.0f32; 80];
        mixer.fill(&mut out, 1);
        assert!(out.iter().all(|&x| x == 0.0));
        assert_eq!(feed.queued(), 160);
        assert!(feed.push(&[1000; 160]) && feed.push(&[1000; 160]));
        mixer.fill(&mut out, 1);
        assert!(out.iter().any(|&x| x != 0.0));
        assert_eq!(mixer.counters().underruns.load(Relaxed), 0);
    }

    #[test]
    fn a_listened_input_running_dry_counts_one_underrun_then_rebuffers() {
        let (mut mixer, mut control) = channel(8_000, 1);
        let mut feed = control.add(1, true).unwrap();
        // 50 ms callbacks: the target is 50 + 35 + 5 + 12.5 ms; 120 ms plays, then runs dry.
        for _ in 0..6 {
            assert!(feed.push(&[500; 160]));
        }
        let mut out = vec![0.0f32; 400];
        for _ in 0..3 {
            mixer.fill(&mut out, 1);
        }
        assert_eq!(mixer.counters().underruns.load(Relaxed), 1);
        mixer.fill(&mut out, 1);
        assert_eq!(
            mixer.counters().underruns.load(Relaxed),
            1,
            "buffering is not a gap"
        );

        // A silenced input running dry is not a gap either.
        feed.set_listen(false);
        for _ in 0..7 {
            assert!(feed.push(&[500; 160]));
        }
        for _ in 0..4 {
            mixer.fill(&mut out, 1);
        }
        assert_eq!(mixer.counters().underruns.load(Relaxed), 1);
        assert!(feed.queued() < 160, "the silenced input was consumed");
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn stamped_frames_record_arrival_to_playback_when_their_first_sample_plays() {
        let (mut mixer, mut control) = channel(8_000, 2);
        let mut heard = control.add(1, true).unwrap();
        let mut muted = control.add(2, false).unwrap();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for k in 0..3u64 {
            let arrival = t0 + ms(20 * k);
            assert!(heard.push_from(&[100; 160], arrival, arrival + ms(30)));
            assert!(muted.push_from(&[100; 160], arrival, arrival + ms(30)));
        }
        // 10 ms callbacks whose first frame plays 100 ms after the first arrival: every frame
        // starts playing 100 ms after its packet arrived.
        let mut out = vec![0.0f32; 80];
        for n in 0..6u64 {
            mixer.fill_at(&mut out, 1, Some(t0 + ms(100 + 10 * n)));
        }
        let latency = mixer.counters().latency.snapshot();
        assert_eq!(
            latency.count(),
            3,
            "one per frame heard; none for the muted call"
        );
        let p50 = latency.quantile_ms(0.5).unwrap();
        assert!((99.0..=101.0).contains(&p50), "{p50}");
        // Without the host's timestamps nothing is recorded, and stamps do not pile up.
        for _ in 0..40 {
            assert!(heard.push_from(&[1; 160], t0, t0));
            mixer.fill(&mut out, 1);
            mixer.fill(&mut out, 1);
        }
        assert_eq!(mixer.counters().latency.snapshot().count(), 3);
    }

    #[test]
    fn a_full_ring_counts_an_overrun_and_drops_the_whole_push() {
        let (_mixer, mut control) = channel(48_000, 1);
        let mut feed = control.add(1, true).unwrap();
        let frames = INPUT_RING_SAMPLES / 160;
        for _ in 0..frames {
            assert!(feed.push(&[1; 160]));
        }
        assert!(!feed.push(&[1; 160]));
        assert_eq!(feed.queued(), frames * 160);
        assert_eq!(control.counters().overruns.load(Relaxed), 1);
    }

    #[test]
    fn far_ahead_inputs_skip_to_the_target() {
        let (mut mixer, mut control) = channel(8_000, 1);
        let mut feed = control.add(1, true).unwrap();
        for _ in 0..20 {
            assert!(feed.push(&[1; 160]));
        }
        let mut out = vec![0.0f32; 80];
        mixer.fill(&mut out, 1);
        assert_eq!(mixer.counters().skips.load(Relaxed), 1);
        assert!(feed.queued() <= mixer.targets().max().unwrap());
    }

    #[test]
    fn removed_and_abandoned_inputs_are_retired_for_dropping_elsewhere() {
        let (mut mixer, mut control) = channel(8_000, 2);
        let mut a = control.add(1, true).unwrap();
        let b = control.add(2, true).unwrap();
        for _ in 0..3 {
            assert!(a.push(&[1; 160]));
        }
        let mut out = vec![0.0f32; 80];
        mixer.fill(&mut out, 1);
        assert_eq!(mixer.len(), 2);

        assert!(control.remove(1));
        mixer.fill(&mut out, 1);
        assert_eq!(mixer.len(), 1);
        assert_eq!(control.collect_retired(), 1);

        drop(b);
        mixer.fill(&mut out, 1);
        assert!(mixer.is_empty());
        assert_eq!(control.collect_retired(), 1);
        assert_eq!(mixer.counters().inputs.load(Relaxed), 0);
    }

    #[test]
    fn adds_beyond_capacity_wait_for_a_free_slot() {
        let (mut mixer, mut control) = channel(8_000, 1);
        let first = control.add(1, true).unwrap();
        let _second = control.add(2, true).unwrap();
        let mut out = vec![0.0f32; 80];
        mixer.fill(&mut out, 1);
        assert_eq!(mixer.len(), 1);
        drop(first);
        mixer.fill(&mut out, 1);
        mixer.fill(&mut out, 1);
        assert_eq!(mixer.len(), 1);
        assert_eq!(mixer.inputs[0].id(), 2);
    }

    /// Feeds at `ppm` faster (or slower) than nominal for `seconds` of simulated time; returns
    /// the (min, max) ring fill after a 30 s warm-up, the mean ratio correction over the last
    /// third, and the target fill.
    fn drift(ppm: f64, seconds: f64) -> (usize, usize, f64, usize) {
        let rate = 48_000u32;
        let (mut mixer, mut control) = channel(rate, 1);
        let mut feed = control.add(1, true).unwrap();
        let mut tone = Tone::new(440.0, 3000.0);
        let push_period = 0.020 / (1.0 + ppm * 1e-6);
        let callback_period = 0.010;
        let mut buf = vec![0.0f32; rate as usize / 100];
        let (mut next_push, mut next_callback) = (0.0f64, 0.005f64);
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        let (mut adjust_sum, mut adjust_n) = (0.0f64, 0u32);
        let warm_up = 30.0;
        while next_callback < seconds {
            if next_push <= next_callback {
                assert!(feed.push(&tone.frame()), "overrun at {next_push}");
                next_push += push_period;
            } else {
                mixer.fill(&mut buf, 1);
                if next_callback > warm_up {
                    lo = lo.min(feed.queued());
                    hi = hi.max(feed.queued());
                    if next_callback > seconds * 2.0 / 3.0 {
                        adjust_sum += mixer.inputs[0].resampler.adjust();
                        adjust_n += 1;
                    }
                }
                next_callback += callback_period;
            }
        }
        assert_eq!(mixer.counters().underruns.load(Relaxed), 0, "ppm {ppm}");
        assert_eq!(mixer.counters().skips.load(Relaxed), 0, "ppm {ppm}");
        let target = mixer.targets().max().unwrap();
        (lo, hi, adjust_sum / f64::from(adjust_n), target)
    }

    #[test]
    fn drift_of_plus_and_minus_100_ppm_keeps_the_ring_near_target_without_underruns() {
        // Ten minutes at ±100 ppm (real clocks); two at 0 and ±1000 ppm (margins).
        for (ppm, seconds) in [
            (100.0, 600.0),
            (-100.0, 600.0),
            (0.0, 120.0),
            (1000.0, 120.0),
            (-1000.0, 120.0),
        ] {
            // The 20 ms pushes against 10 ms callbacks make a sawtooth of 160 samples, and the
            // dead band lets the mean wander ±80; drift must add nothing beyond that, and the
            // ratio correction must match the drift.
            let (lo, hi, adjust, target) = drift(ppm, seconds);
            assert_eq!(target, 280, "10 + (20 + 10) / 2 + 5 + 5 ms");
            assert!(lo + 250 >= target, "ppm {ppm}: fill fell to {lo}");
            assert!(hi <= target + 250, "ppm {ppm}: fill grew to {hi}");
            assert!(
                (adjust - ppm * 1e-6).abs() < 1e-5,
                "ppm {ppm}: adjust {adjust}"
            );
        }
    }

    #[test]
    fn playout_starts_at_nominal_pitch_whatever_the_callback_size() {
        // 10, 13.3, 30 and 55 ms callbacks against 20 ms pushes.
        for callback in [80usize, 107, 240, 441] {
            let (mut mixer, mut control) = channel(48_000, 1);
            let mut feed = control.add(1, true).unwrap();
            let mut buf = vec![0.0f32; callback * 6];
            let (mut next_push, mut next_callback) = (0.0f64, 0.0013f64);
            let mut per_second = [(0.0f64, 0u32); 6];
            while next_callback < 6.0 {
                if next_push <= next_callback {
                    assert!(feed.push(&[100; 160]));
                    next_push += 0.02;
                } else {
                    mixer.fill(&mut buf, 1);
                    let (sum, n) = &mut per_second[next_callback as usize];
                    *sum += mixer.inputs[0].resampler.adjust();
                    *n += 1;
                    next_callback += callback as f64 / 8000.0;
                }
            }
            for (second, (sum, n)) in per_second.iter().enumerate() {
                let mean = sum / f64::from(*n);
                assert!(mean.abs() < 0.001, "{callback}: second {second}: {mean}");
            }
            assert_eq!(mixer.counters().underruns.load(Relaxed), 0);
        }
    }
}
