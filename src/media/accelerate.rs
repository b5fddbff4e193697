//! Time-scale compression ("accelerate") of 8 kHz speech, and the short playout stage it
//! needs: a jitter buffer that has fallen behind (a stall's backlog arrived at once) plays the
//! backlog faster instead of dropping frames, losing no frame. No RFC covers this; the method is
//! WebRTC NetEQ's accelerate, a pitch-synchronous overlap-add (WSOLA, Verhelst and Roelands
//! 1993):
//! - in periodic audio (voiced speech, tones) whole pitch periods are removed: the period `P`
//!   is found by normalized cross-correlation (a coarse search at half rate, refined at full
//!   rate, 5–15 ms), and the window is cross-faded over one period into the same phase `k·P`
//!   samples later, so the pitch and the waveform are kept and the join has no step;
//! - quiet audio (below a level the caller gives) is cut by a frame's worth outright, with a
//!   10 ms cross-fade;
//! - anything else (loud and aperiodic: plosives, noise) is not compressed: [`Stretch::plan`]
//!   says no, and the caller plays it as it is.
//!
//! Whole periods rarely add up to a 20 ms frame, so output runs through [`Stretch`]: frames go
//! in, 20 ms come out per tick, and what is left over (less than a frame) is carried into the
//! next tick. A compression takes two frames in and leaves less than a frame carried: `k` is
//! the most periods that fit in a frame plus the carry.
//!
//! Everything is inline and fixed-size; nothing allocates.

use crate::media::frame::{FRAME_SAMPLES, Frame};
use crate::media::plc::to_sample;

/// Samples the stage holds at most: a carry below one frame plus the two frames compressed.
const CAPACITY: usize = 3 * FRAME_SAMPLES;
/// Shortest pitch period searched: 5 ms.
const PITCH_MIN: usize = 40;
/// Longest pitch period searched: 15 ms.
const PITCH_MAX: usize = 120;
/// Window correlated against its shifted copies: 20 ms.
const CORR_LEN: usize = 160;
/// Decimation of the coarse search.
const DECIMATION: usize = 2;
/// Normalized correlation at the cut above which the audio counts as periodic there.
const PERIODIC: f32 = 0.8;
/// Energy floor in the correlation's normalization, so near-silence does not pick noise.
const CORR_MIN_POWER: f32 = 250.0;
/// Cross-fade when quiet audio is cut: 10 ms.
const QUIET_FADE: usize = 80;

/// A compression: the first `fade` samples are cross-faded into the ones `len` samples later,
/// and `len` samples are removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Samples removed.
    pub len: usize,
    /// Samples cross-faded at the join.
    pub fade: usize,
    /// Why the audio could be compressed.
    pub kind: CutKind,
}

/// What made a window compressible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutKind {
    /// Periodic with this period in samples; whole periods were removed.
    Periodic {
        /// The pitch period, in samples.
        period: usize,
    },
    /// Below the quiet level: a frame's worth (and the carry) was cut.
    Quiet,
}

/// The playout stage: frames in, 20 ms out per tick, with compression in between. See the
/// module docs.
#[derive(Clone, Debug)]
pub struct Stretch {
    /// Samples waiting to be played, oldest first.
    buf: [i16; CAPACITY],
    /// How many of `buf` are waiting.
    len: usize,
}

impl Default for Stretch {
    fn default() -> Self {
        Self::new()
    }
}

impl Stretch {
    /// An empty stage.
    pub const fn new() -> Self {
        Self {
            buf: [0; CAPACITY],
            len: 0,
        }
    }

    /// Samples waiting to be played: between ticks, fewer than a frame, the delay the stage
    /// adds to what comes next.
    pub fn carried(&self) -> usize {
        self.len
    }

    /// Appends a frame. Between ticks at most two frames are fed, so it fits; if it ever did
    /// not, the oldest samples would be dropped (returns false).
    pub fn feed(&mut self, frame: &Frame) -> bool {
        let fits = self.len + FRAME_SAMPLES <= CAPACITY;
        if !fits {
            let excess = self.len + FRAME_SAMPLES - CAPACITY;
            self.buf.copy_within(excess..self.len, 0);
            self.len -= excess;
        }
        if let Some(dst) = self.buf.get_mut(self.len..self.len + FRAME_SAMPLES) {
            dst.copy_from_slice(frame);
            self.len += FRAME_SAMPLES;
        }
        fits
    }

    /// Takes the next 20 ms into `out`; false (and `out` untouched) if less is waiting.
    pub fn emit(&mut self, out: &mut Frame) -> bool {
        let Some(head) = self.buf.get(..FRAME_SAMPLES) else {
            return false;
        };
        if self.len < FRAME_SAMPLES {
            return false;
        }
        out.copy_from_slice(head);
        self.buf.copy_within(FRAME_SAMPLES..self.len, 0);
        self.len -= FRAME_SAMPLES;
        true
    }

    /// How the carry followed by frames `a` and `b` could be compressed so that one frame and
    /// less than a frame of carry are left; `None` when the audio is loud and not periodic.
    /// `quiet_below` is the mean-square level under which the window counts as quiet.
    pub fn plan(&self, a: &Frame, b: &Frame, quiet_below: f32) -> Option<Cut> {
        let mut window = [0i16; CAPACITY];
        let carry = self.len.min(FRAME_SAMPLES - 1);
        let (head, rest) = window.split_at_mut(carry);
        head.copy_from_slice(self.buf.get(..carry)?);
        let (first, second) = rest.split_at_mut(FRAME_SAMPLES);
        first.copy_from_slice(a);
        second.get_mut(..FRAME_SAMPLES)?.copy_from_slice(b);
        find_cut(window.get(..carry + 2 * FRAME_SAMPLES)?, carry, quiet_below)
    }

    /// Applies a cut planned by [`Stretch::plan`] after both frames were fed.
    pub fn apply(&mut self, cut: Cut) {
        if let Some(waiting) = self.buf.get_mut(..self.len) {
            self.len = splice(waiting, cut);
        }
    }

    /// Forgets what is waiting.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Plans the compression of `x` (a carry of `carry` samples, then two frames) that leaves one
/// frame and less than a frame of carry: see [`Stretch::plan`].
pub fn find_cut(x: &[i16], carry: usize, quiet_below: f32) -> Option<Cut> {
    // At most a frame plus the carry is removed, so that a frame is left to play.
    let budget = FRAME_SAMPLES + carry;
    if x.len() < budget + FRAME_SAMPLES || x.len() < CORR_LEN + PITCH_MAX {
        return None;
    }
    let energy = x.iter().map(|&s| f32::from(s) * f32::from(s)).sum::<f32>() / x.len() as f32;
    if energy < quiet_below {
        return Some(Cut {
            len: budget,
            fade: QUIET_FADE,
            kind: CutKind::Quiet,
        });
    }
    let period = find_period(x)?;
    let len = budget / period * period;
    // The join must hold: the faded period and the one `len` later match.
    let a = x.get(..period)?;
    let b = x.get(len..len + period)?;
    if correlation(a, b) < PERIODIC {
        return None;
    }
    Some(Cut {
        len,
        fade: period,
        kind: CutKind::Periodic { period },
    })
}

/// Applies `cut` to `x` in place; returns the length left.
pub fn splice(x: &mut [i16], cut: Cut) -> usize {
    let Cut { len, fade, .. } = cut;
    if len == 0 || len + fade > x.len() {
        return x.len();
    }
    let step = 1.0 / (fade + 1) as f32;
    for i in 0..fade {
        let (Some(&old), Some(&new)) = (x.get(i), x.get(i + len)) else {
            break;
        };
        let rise = (i + 1) as f32 * step;
        if let Some(s) = x.get_mut(i) {
            *s = to_sample(f32::from(old) * (1.0 - rise) + f32::from(new) * rise);
        }
    }
    x.copy_within(len + fade.., fade);
    x.len() - len
}

/// The pitch period of the start of `x` (length at least `CORR_LEN + PITCH_MAX`): a coarse
/// search at half rate, refined at full rate around the best.
fn find_period(x: &[i16]) -> Option<usize> {
    let mut decimated = [0.0f32; (CORR_LEN + PITCH_MAX) / DECIMATION];
    for (d, pair) in decimated
        .iter_mut()
        .zip(x.get(..CORR_LEN + PITCH_MAX)?.chunks_exact(DECIMATION))
    {
        *d = pair.iter().map(|&s| f32::from(s)).sum();
    }
    let reference = decimated.get(..CORR_LEN / DECIMATION)?;
    let mut best = (f32::MIN, 0);
    for lag in PITCH_MIN / DECIMATION..=PITCH_MAX / DECIMATION {
        let shifted = decimated.get(lag..lag + CORR_LEN / DECIMATION)?;
        let c = correlation(reference, shifted);
        if c > best.0 {
            best = (c, lag);
        }
    }
    let centre = best.1 * DECIMATION;
    let mut fine = (f32::MIN, 0);
    let full: [f32; CORR_LEN + PITCH_MAX] =
        std::array::from_fn(|i| x.get(i).copied().map_or(0.0, f32::from));
    let reference = full.get(..CORR_LEN)?;
    for lag in (centre - 1).max(PITCH_MIN)..=(centre + 1).min(PITCH_MAX) {
        let c = correlation(reference, full.get(lag..lag + CORR_LEN)?);
        if c > fine.0 {
            fine = (c, lag);
        }
    }
    (fine.1 > 0).then_some(fine.1)
}

/// Normalized cross-correlation of two equally long windows (0 when either is near silent).
fn correlation<T: Copy + Into<f32>>(a: &[T], b: &[T]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y): (f32, f32) = (x.into(), y.into());
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let floor = CORR_MIN_POWER * a.len() as f32;
    ab / (aa.max(floor) * bb.max(floor)).sqrt()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::frame::SILENCE;

    fn tone(n: usize, freq: f32, amplitude: f32) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 8000.0;
                (amplitude * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn frames(signal: &[i16]) -> Vec<Frame> {
        signal
            .chunks_exact(FRAME_SAMPLES)
            .map(|c| c.try_into().unwrap())
            .collect()
    }

    fn zero_crossings(x: &[i16]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
    }

    fn max_step(x: &[i16]) -> i32 {
        x.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap()
    }

    /// Plays `signal` through a stage, compressing every other tick; returns the output and
    /// the ticks played.
    fn play(signal: &[i16], quiet_below: f32) -> (Vec<i16>, usize, usize) {
        let input = frames(signal);
        let mut stage = Stretch::new();
        let mut out = Vec::new();
        let (mut next, mut cuts) = (0, 0);
        let mut frame = SILENCE;
        while next < input.len() {
            let cut = match (input.get(next), input.get(next + 1)) {
                (Some(a), Some(b)) if cuts * 2 <= out.len() / FRAME_SAMPLES => {
                    stage.plan(a, b, quiet_below)
                }
                _ => None,
            };
            stage.feed(&input[next]);
            next += 1;
            if let Some(cut) = cut {
                stage.feed(&input[next]);
                next += 1;
                stage.apply(cut);
                cuts += 1;
            }
            assert!(stage.emit(&mut frame));
            assert!(stage.carried() < FRAME_SAMPLES, "{}", stage.carried());
            out.extend_from_slice(&frame);
        }
        (out, input.len(), cuts)
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_has_no_click_at_the_joins() {
        for freq in [125.0f32, 190.0, 440.0] {
            let signal = tone(8000, freq, 10_000.0);
            let (out, frames_in, cuts) = play(&signal, 0.0);
            assert!(cuts >= 10, "{freq} Hz: only {cuts} compressions");
            // Fewer ticks than frames: the compression removed audio.
            let ticks = out.len() / FRAME_SAMPLES;
            assert!(ticks + cuts / 2 < frames_in, "{freq} Hz: {ticks} ticks");
            // The pitch is kept: zero crossings per second as in the input (within 3 %).
            let rate_in = zero_crossings(&signal) as f32 / signal.len() as f32;
            let rate_out = zero_crossings(&out) as f32 / out.len() as f32;
            assert!(
                (rate_out / rate_in - 1.0).abs() < 0.03,
                "{freq} Hz: {rate_in} vs {rate_out}"
            );
            // No click: no step between samples larger than the tone's own (plus 10 %).
            let bound = max_step(&signal) * 11 / 10;
            assert!(max_step(&out) <= bound, "{freq} Hz: {}", max_step(&out));
        }
    }

    #[test]
    fn each_cut_leaves_a_frame_and_less_than_a_frame_of_carry() {
        let signal = tone(3 * FRAME_SAMPLES, 180.0, 8000.0);
        let input = frames(&signal);
        for carry in [0usize, 1, 40, 64, 100, 159] {
            for quiet_below in [0.0f32, 1e12] {
                let mut stage = Stretch::new();
                // Build the carry from the first frame's tail.
                let mut scratch = SILENCE;
                stage.feed(&input[0]);
                stage.emit(&mut scratch);
                stage.feed(&input[0]);
                stage
                    .buf
                    .copy_within(FRAME_SAMPLES - carry..FRAME_SAMPLES, 0);
                stage.len = carry;
                let cut = stage.plan(&input[1], &input[2], quiet_below).unwrap();
                stage.feed(&input[1]);
                stage.feed(&input[2]);
                stage.apply(cut);
                let left = carry + 2 * FRAME_SAMPLES - cut.len;
                assert_eq!(stage.carried(), left, "carry {carry}: {cut:?}");
                assert!(
                    (FRAME_SAMPLES..2 * FRAME_SAMPLES).contains(&left),
                    "carry {carry}: {cut:?}"
                );
                if quiet_below > 0.0 {
                    assert_eq!(cut.kind, CutKind::Quiet);
                    assert_eq!(left, FRAME_SAMPLES);
                } else {
                    let CutKind::Periodic { period } = cut.kind else {
                        panic!("{cut:?}")
                    };
                    // 180 Hz: 44.4 samples, or a multiple of it.
                    let periods = period as f32 / (8000.0 / 180.0);
                    assert!((periods - periods.round()).abs() < 0.05, "{period}");
                    assert_eq!(cut.len % period, 0);
                }
            }
        }
    }

    #[test]
    fn silence_compresses_by_a_whole_frame() {
        let mut stage = Stretch::new();
        let cut = stage.plan(&SILENCE, &SILENCE, 1.0).unwrap();
        assert_eq!(cut.kind, CutKind::Quiet);
        assert_eq!(cut.len, FRAME_SAMPLES);
        stage.feed(&SILENCE);
        stage.feed(&SILENCE);
        stage.apply(cut);
        let mut out = [1i16; FRAME_SAMPLES];
        assert!(stage.emit(&mut out));
        assert_eq!(out, SILENCE);
        assert_eq!(stage.carried(), 0);
    }

    #[test]
    fn loud_noise_is_not_compressed() {
        let mut x = 7u32;
        let noise: Vec<i16> = (0..2 * FRAME_SAMPLES)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as i16) / 2
            })
            .collect();
        let input = frames(&noise);
        assert_eq!(Stretch::new().plan(&input[0], &input[1], 100.0), None);
    }

    #[test]
    fn the_stage_delays_by_its_carry_and_never_overflows() {
        let mut stage = Stretch::new();
        let mut out = SILENCE;
        assert!(!stage.emit(&mut out));
        for k in 0..5 {
            assert_eq!(stage.feed(&[k; FRAME_SAMPLES]), k < 3);
        }
        assert_eq!(stage.carried(), CAPACITY);
        assert!(stage.emit(&mut out));
        assert_eq!(out, [2; FRAME_SAMPLES]);
    }
}
