//! Packet loss concealment for 8 kHz speech: pitch-based waveform substitution in the manner of
//! ITU-T G.711 Appendix I.
//!
//! The concealer owns the last 50 ms of output. When a 10 ms block is lost it estimates the
//! pitch period (5–15 ms) by normalized cross-correlation, as Appendix I does: a coarse search on
//! the signal decimated 2:1, refined at full rate around the best coarse period, once per
//! erasure. It then repeats the last period, smoothing the loop point with a quarter-period
//! overlap-add. After 10 ms it widens the repeated segment
//! to two, then three periods (so long erasures do not buzz), and from 10 ms on it attenuates
//! linearly by 20 % per 10 ms: 60 ms into an erasure it is silent. The first good block after a
//! loss is overlap-added from the synthetic continuation, over a quarter period plus 4 ms per
//! extra lost block (at most 10 ms).
//!
//! Unlike Appendix I, output is not delayed by 3.75 ms: the onset of an erasure is not smoothed
//! (the repeated period starts where the real signal ended, which is continuous for voiced
//! speech), in exchange for zero added latency. All state is inline; nothing allocates. The
//! history is a mirrored ring, so keeping it costs a block's writes rather than a shift.

/// Samples per concealment block (10 ms at 8 kHz); a 20 ms frame is two blocks.
pub const BLOCK: usize = 80;

/// History kept for pitch search and repetition: 50 ms, three longest periods plus overlap,
/// rounded up to whole blocks so that a block is never split across the ring's end.
const HISTORY: usize = 5 * BLOCK;
/// Shortest pitch period searched: 5 ms.
const PITCH_MIN: usize = 40;
/// Longest pitch period searched: 15 ms.
const PITCH_MAX: usize = 120;
/// Longest overlap-add at the loop point: a quarter of the longest period.
const OVERLAP_MAX: usize = PITCH_MAX / 4;
/// Window correlated against its shifted copies during the pitch search: 20 ms.
const CORR_LEN: usize = 160;
/// Decimation of the coarse pitch search.
const DECIMATION: usize = 2;
/// Coarse periods refined at full rate.
const COARSE_LEADERS: usize = 3;
/// Periods either side of a coarse estimate tried at full rate.
const REFINE: usize = DECIMATION - 1;
/// Energy floor in the correlation's normalization, so near-silence does not pick noise.
const CORR_MIN_POWER: f32 = 250.0;
/// Extra overlap on the first good block per additional lost block: 4 ms.
const OVERLAP_GROWTH: usize = 32;
/// Attenuation per lost block after the first.
const ATTENUATION_PER_BLOCK: f32 = 0.2;
/// Blocks after which the output is silent: 10 ms full level, then five 10 ms fades.
const FADE_BLOCKS: usize = 6;
/// Number of pitch periods the repeated segment grows to.
const MAX_PERIODS: usize = 3;

/// Conceals lost 10 ms blocks of one stream. Feed it every block that is played, in order.
#[derive(Clone, Debug)]
pub struct Concealer {
    /// The last [`HISTORY`] output samples, real or synthetic, twice over: the one at ring
    /// position `i` is also at `i + HISTORY`, so `ring[pos..pos + HISTORY]` is the history,
    /// oldest first.
    ring: [f32; 2 * HISTORY],
    /// Where the oldest sample of the history is (and the next block is written).
    pos: usize,
    /// Snapshot of `history` taken at the start of an erasure, with its loop point smoothed.
    pitch_buf: [f32; HISTORY],
    /// The original last quarter period before smoothing, re-used when periods are added.
    last_quarter: [f32; OVERLAP_MAX],
    /// Estimated pitch period in samples.
    pitch: usize,
    /// Overlap length: a quarter of `pitch`.
    overlap: usize,
    /// Read position inside the repeated segment.
    offset: usize,
    /// Length of the repeated segment: one to three pitch periods.
    segment_len: usize,
    /// Consecutive lost blocks in the current erasure; 0 while the signal is real.
    erased: usize,
    /// Whether any real block was seen since construction or [`Concealer::reset`].
    primed: bool,
}

impl Default for Concealer {
    fn default() -> Self {
        Self::new()
    }
}

impl Concealer {
    /// A concealer with silent history.
    pub fn new() -> Self {
        Self {
            ring: [0.0; 2 * HISTORY],
            pos: 0,
            pitch_buf: [0.0; HISTORY],
            last_quarter: [0.0; OVERLAP_MAX],
            pitch: PITCH_MAX,
            overlap: OVERLAP_MAX,
            offset: 0,
            segment_len: PITCH_MAX,
            erased: 0,
            primed: false,
        }
    }

    /// Forgets the history, as for a new stream.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// True while concealment would output silence: nothing real was ever seen, or the current
    /// erasure has faded out (60 ms).
    pub fn is_silent(&self) -> bool {
        !self.primed || self.erased >= FADE_BLOCKS
    }

    /// True while inside an erasure (the last block handled was concealed).
    pub fn is_concealing(&self) -> bool {
        self.erased > 0
    }

    /// Takes a real block. After an erasure its start is cross-faded from the synthetic
    /// continuation, so `block` is modified in place.
    pub fn good(&mut self, block: &mut [i16; BLOCK]) {
        if self.erased == 0 || !self.primed {
            // The common case: the block goes into the history as it is.
            let at = self.pos;
            let (older, newer) = self.ring.split_at_mut(HISTORY);
            let (Some(a), Some(b)) = (older.get_mut(at..at + BLOCK), newer.get_mut(at..at + BLOCK))
            else {
                return;
            };
            for ((x, y), &s) in a.iter_mut().zip(b.iter_mut()).zip(block.iter()) {
                *x = f32::from(s);
                *y = *x;
            }
            self.pos = (at + BLOCK) % HISTORY;
            self.erased = 0;
            self.primed = true;
            return;
        }
        // The first good block after an erasure fades in from the synthetic continuation.
        let mut real: [f32; BLOCK] = std::array::from_fn(|i| f32::from(block[i]));
        let len = (self.overlap + (self.erased - 1) * OVERLAP_GROWTH).min(BLOCK);
        let mut synthetic = [0.0f32; BLOCK];
        self.synthesize(&mut synthetic[..len]);
        let gain = self.gain_at_block_start(self.erased);
        cross_fade(&mut real[..len], &synthetic[..len], gain);
        for (s, &r) in block.iter_mut().zip(real.iter()) {
            *s = to_sample(r);
        }
        self.erased = 0;
        self.primed = true;
        self.remember(&real);
    }

    /// Synthesizes the next lost block into `out`.
    pub fn conceal(&mut self, out: &mut [i16; BLOCK]) {
        let mut synthetic = [0.0f32; BLOCK];
        match self.erased {
            0 => {
                let history = &self.ring[self.pos..self.pos + HISTORY];
                self.pitch_buf.copy_from_slice(history);
                self.pitch = find_pitch(&self.pitch_buf);
                self.overlap = self.pitch / 4;
                let tail = HISTORY - self.overlap;
                self.last_quarter[..self.overlap].copy_from_slice(&self.pitch_buf[tail..]);
                self.offset = 0;
                self.segment_len = self.pitch;
                self.smooth_loop_point();
                self.synthesize(&mut synthetic);
            }
            n if n < MAX_PERIODS => {
                // Widen the segment by one period, keeping the phase, and blend old into new.
                let mut old = [0.0f32; OVERLAP_MAX];
                let saved = self.offset;
                self.synthesize(&mut old[..self.overlap]);
                self.offset = saved % self.pitch;
                self.segment_len += self.pitch;
                self.smooth_loop_point();
                self.synthesize(&mut synthetic);
                cross_fade(&mut synthetic[..self.overlap], &old[..self.overlap], 1.0);
                self.attenuate(&mut synthetic);
            }
            n if n < FADE_BLOCKS => {
                self.synthesize(&mut synthetic);
                self.attenuate(&mut synthetic);
            }
            _ => {}
        }
        self.erased = self.erased.saturating_add(1);
        for (s, &x) in out.iter_mut().zip(synthetic.iter()) {
            *s = to_sample(x);
        }
        self.remember(&synthetic);
    }

    /// Appends one block of output to the history (over its oldest block).
    fn remember(&mut self, block: &[f32; BLOCK]) {
        // `pos` is a multiple of BLOCK and HISTORY of BLOCK: the block never wraps.
        let at = self.pos;
        self.ring[at..at + BLOCK].copy_from_slice(block);
        self.ring[at + HISTORY..at + HISTORY + BLOCK].copy_from_slice(block);
        self.pos = (at + BLOCK) % HISTORY;
    }

    /// Overlap-adds the segment's last quarter period with the quarter period before its start,
    /// so that jumping from the end back to the start is smooth.
    fn smooth_loop_point(&mut self) {
        let start = HISTORY - self.segment_len;
        let before = start - self.overlap;
        let tail = HISTORY - self.overlap;
        let step = 1.0 / self.overlap.max(1) as f32;
        for i in 0..self.overlap {
            let rise = (i + 1) as f32 * step;
            self.pitch_buf[tail + i] =
                self.last_quarter[i] * (1.0 - rise) + self.pitch_buf[before + i] * rise;
        }
    }

    /// Reads the next samples of the repeated segment.
    fn synthesize(&mut self, out: &mut [f32]) {
        let start = HISTORY - self.segment_len;
        for s in out {
            *s = self.pitch_buf[start + self.offset];
            self.offset += 1;
            if self.offset >= self.segment_len {
                self.offset = 0;
            }
        }
    }

    /// Gain at the start of lost block number `block` (0-based): 1 for the first two blocks'
    /// starts, then 20 % less per block.
    fn gain_at_block_start(&self, block: usize) -> f32 {
        (1.0 - block.saturating_sub(1) as f32 * ATTENUATION_PER_BLOCK).max(0.0)
    }

    /// Applies the linear fade for the block being concealed now (`self.erased` blocks before it).
    fn attenuate(&self, block: &mut [f32; BLOCK]) {
        let mut gain = self.gain_at_block_start(self.erased);
        let step = ATTENUATION_PER_BLOCK / BLOCK as f32;
        for s in block.iter_mut() {
            *s *= gain;
            gain = (gain - step).max(0.0);
        }
    }
}

/// Cross-fades from `from` (scaled by `from_gain`) into `into`, in place over `into`.
fn cross_fade(into: &mut [f32], from: &[f32], from_gain: f32) {
    let step = 1.0 / (into.len() + 1) as f32;
    for (i, (x, &f)) in into.iter_mut().zip(from).enumerate() {
        let rise = (i + 1) as f32 * step;
        *x = *x * rise + f * from_gain * (1.0 - rise);
    }
}

/// The pitch period (in samples) that best predicts the last 20 ms from the signal one period
/// earlier, by normalized cross-correlation over 40–120 samples: every period on the signal
/// decimated 2:1 (pairs summed), then, at full rate, the periods next to the best few coarse
/// ones (a high voice's period is below the range, so several of its multiples compete).
fn find_pitch(buf: &[f32; HISTORY]) -> usize {
    let mut decimated = [0.0f32; HISTORY / DECIMATION];
    for (d, pair) in decimated.iter_mut().zip(buf.as_chunks::<DECIMATION>().0) {
        *d = pair.iter().sum();
    }
    let coarse_len = CORR_LEN / DECIMATION;
    let coarse_floor = CORR_MIN_POWER * DECIMATION as f32;
    let end = decimated.len();
    let reference = &decimated[end - coarse_len..];
    let periods = PITCH_MIN / DECIMATION..=PITCH_MAX / DECIMATION;
    let first = &decimated[end - coarse_len - periods.start()..end - periods.start()];
    // The candidate window slides back one sample per period: its energy is kept up to date.
    let mut energy = dot(first, first);
    let mut leaders = [(f32::NEG_INFINITY, PITCH_MAX / DECIMATION); COARSE_LEADERS];
    for period in periods {
        let candidate = &decimated[end - coarse_len - period..end - period];
        let corr = dot(reference, candidate);
        let score = corr * corr.abs() / energy.max(coarse_floor);
        // Keep the best few, best first; the first of equals stays ahead.
        if let Some(at) = leaders.iter().position(|&(s, _)| score > s) {
            leaders.copy_within(at..COARSE_LEADERS - 1, at + 1);
            leaders[at] = (score, period);
        }
        let entering = decimated.get(end - coarse_len - period - 1).copied();
        let leaving = decimated[end - period - 1];
        energy += entering.map_or(0.0, |x| x * x) - leaving * leaving;
    }
    let mut best = (f32::NEG_INFINITY, PITCH_MAX);
    for &(_, coarse) in &leaders {
        let around = coarse * DECIMATION;
        let low = around.saturating_sub(REFINE).max(PITCH_MIN);
        for period in low..=(around + REFINE).min(PITCH_MAX) {
            let score = match_score(buf, CORR_LEN, period, CORR_MIN_POWER);
            if score > best.0 || (score == best.0 && period < best.1) {
                best = (score, period);
            }
        }
    }
    best.1
}

/// How well the `len` samples one `period` before the end of `signal` predict its last `len`:
/// correlation normalized by the candidate's energy (floored at `floor`), as corr·|corr| / energy,
/// which orders like corr / √energy without the root.
fn match_score(signal: &[f32], len: usize, period: usize, floor: f32) -> f32 {
    let end = signal.len();
    let reference = &signal[end - len..];
    let candidate = &signal[end - len - period..end - period];
    let corr = dot(reference, candidate);
    corr * corr.abs() / dot(candidate, candidate).max(floor)
}

/// Sum of products, in eight independent lanes so that it vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(&x, &y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

/// Rounds to the nearest sample (halves away from zero), saturating at the i16 range.
pub(crate) fn to_sample(x: f32) -> i16 {
    // Adding ±0.5 and truncating rounds like `f32::round` but compiles to a few instructions
    // instead of a libm call per sample; `as` saturates (and maps NaN to 0).
    (x + 0.5f32.copysign(x)) as i16
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sine(n: usize, freq: f32, amplitude: f32) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let phase = 2.0 * std::f32::consts::PI * freq * i as f32 / 8000.0;
                (amplitude * phase.sin()).round() as i16
            })
            .collect()
    }

    fn block(samples: &[i16]) -> [i16; BLOCK] {
        samples.try_into().unwrap()
    }

    fn squared_error(a: &[i16], b: &[i16]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum()
    }

    /// Plays `signal` in 10 ms blocks, losing `lost` blocks, and returns the output.
    fn play(signal: &[i16], lost: std::ops::Range<usize>) -> Vec<i16> {
        let mut plc = Concealer::new();
        let mut out = Vec::new();
        for (i, chunk) in signal.chunks_exact(BLOCK).enumerate() {
            let mut b = block(chunk);
            if lost.contains(&i) {
                plc.conceal(&mut b);
            } else {
                plc.good(&mut b);
            }
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn finds_the_pitch_of_a_voiced_signal() {
        let mut plc = Concealer::new();
        // 100 Hz: an 80-sample period, inside the 40–120 search range.
        for chunk in sine(800, 100.0, 8000.0).chunks_exact(BLOCK) {
            plc.good(&mut block(chunk));
        }
        plc.conceal(&mut [0; BLOCK]);
        assert_eq!(plc.pitch, 80);
    }

    #[test]
    fn concealed_sine_is_far_closer_to_the_truth_than_silence_or_blunt_repeat() {
        let signal = sine(1600, 440.0, 10000.0);
        // Lose one 20 ms frame (blocks 10 and 11) and score it plus the frame after.
        let span = 10 * BLOCK..14 * BLOCK;
        let concealed = play(&signal, 10..12);
        let ours = squared_error(&concealed[span.clone()], &signal[span.clone()]);

        let mut silence = signal.clone();
        silence[10 * BLOCK..12 * BLOCK].fill(0);
        let silent = squared_error(&silence[span.clone()], &signal[span.clone()]);

        let mut repeat = signal.clone();
        repeat.copy_within(8 * BLOCK..10 * BLOCK, 10 * BLOCK);
        let repeated = squared_error(&repeat[span.clone()], &signal[span]);

        assert!(
            ours * 20.0 < silent,
            "ours {ours:.3e} vs silence {silent:.3e}"
        );
        assert!(
            ours * 10.0 < repeated,
            "ours {ours:.3e} vs repeat {repeated:.3e}"
        );
    }

    #[test]
    fn long_erasure_fades_to_silence_after_60_ms() {
        let signal = sine(4000, 200.0, 12000.0);
        let out = play(&signal, 10..50);
        let peak = |r: std::ops::Range<usize>| out[r].iter().map(|s| s.unsigned_abs()).max();
        // The first 10 ms of the erasure is at full level, the next 50 ms fade, then silence.
        assert!(peak(10 * BLOCK..11 * BLOCK).unwrap() > 10000);
        assert!(peak(14 * BLOCK..15 * BLOCK).unwrap() < 5000);
        assert_eq!(peak(16 * BLOCK..50 * BLOCK).unwrap(), 0);
    }

    #[test]
    fn reports_silence_only_once_faded_or_never_primed() {
        let mut plc = Concealer::new();
        assert!(plc.is_silent());
        plc.good(&mut block(&sine(BLOCK, 300.0, 5000.0)));
        for _ in 0..FADE_BLOCKS {
            assert!(!plc.is_silent());
            plc.conceal(&mut [0; BLOCK]);
        }
        assert!(plc.is_silent());
    }

    #[test]
    fn first_good_block_after_a_long_loss_ramps_in_without_a_click() {
        let signal = sine(2400, 300.0, 20000.0);
        let out = play(&signal, 5..20);
        // The real signal resumes at block 20; its first sample must start near zero.
        let first = out[20 * BLOCK];
        assert!(
            first.unsigned_abs() < 1000,
            "first sample after loss {first}"
        );
        assert_eq!(out[21 * BLOCK..], signal[21 * BLOCK..2400]);
    }

    #[test]
    fn repeated_periods_stay_in_phase_across_period_additions() {
        // A 100 Hz tone is periodic in 80 samples; the concealed 20 ms (the segment grows from
        // one to two periods at 10 ms, and fades from there) must stay in phase with it.
        let signal = sine(1600, 100.0, 10000.0);
        let out = play(&signal, 10..12);
        // Expected: the true signal, at full level for 10 ms, then faded from 1.0 towards 0.8.
        let expected: Vec<f64> = (800..960)
            .map(|i| {
                let gain = if i < 880 {
                    1.0
                } else {
                    1.0 - 0.2 * (i - 880) as f64 / 80.0
                };
                f64::from(signal[i]) * gain
            })
            .collect();
        let worst = out[800..960]
            .iter()
            .zip(&expected)
            .map(|(&x, &e)| (f64::from(x) - e).abs())
            .fold(0.0, f64::max);
        assert!(worst < 100.0, "worst deviation {worst}");
    }
}
