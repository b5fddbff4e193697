//! The 8 kHz → device-rate resampler of one call's playout, with an adjustable ratio.
//!
//! Four-tap cubic Hermite (Catmull-Rom) interpolation: cheap enough to run for every call in
//! the audio callback, and far cleaner than linear interpolation for narrowband speech. The
//! ratio can be nudged by up to [`MAX_ADJUST`] around nominal so the mixer can track the drift
//! between the network clock and the sound card's clock. Allocation-free: all state is inline.

/// Largest relative ratio correction, ±0.5 %: far beyond ±100 ppm clocks plus jitter, yet small
/// enough that the pitch change is inaudible.
pub const MAX_ADJUST: f64 = 0.005;

/// Scale from 16-bit PCM to the `[-1, 1)` float range the mixer works in.
const PCM_SCALE: f32 = 1.0 / 32768.0;

/// Resamples a stream of 16-bit samples to another rate, one output sample at a time.
#[derive(Debug, Clone)]
pub struct Resampler {
    /// The last four input samples, oldest first; output is interpolated between `history[1]`
    /// and `history[2]`.
    history: [f32; 4],
    /// Position of the next output sample between `history[1]` (0.0) and `history[2]` (1.0).
    /// When it reaches 1.0 or more, input samples must be shifted in first.
    position: f64,
    /// Input samples per output sample at the nominal ratio (`in_rate / out_rate`).
    nominal_step: f64,
    /// Relative correction applied to `nominal_step`, within ±[`MAX_ADJUST`].
    adjust: f64,
    /// `nominal_step * (1 + adjust)`, cached because it is used for every output sample.
    step: f64,
}

impl Resampler {
    /// A resampler from `in_rate` to `out_rate` (both in Hz, both non-zero in practice; a zero
    /// rate is treated as 1 Hz so nothing divides by zero).
    pub fn new(in_rate: u32, out_rate: u32) -> Resampler {
        let mut resampler = Resampler {
            history: [0.0; 4],
            position: 0.0,
            nominal_step: 1.0,
            adjust: 0.0,
            step: 1.0,
        };
        resampler.set_rates(in_rate, out_rate);
        resampler
    }

    /// Changes the rates, keeping the current correction and history.
    pub fn set_rates(&mut self, in_rate: u32, out_rate: u32) {
        self.nominal_step = f64::from(in_rate.max(1)) / f64::from(out_rate.max(1));
        self.step = self.nominal_step * (1.0 + self.adjust);
    }

    /// Sets the relative ratio correction; positive consumes input faster. Clamped to
    /// ±[`MAX_ADJUST`]; NaN is treated as zero.
    pub fn set_adjust(&mut self, adjust: f64) {
        self.adjust = if adjust.is_nan() {
            0.0
        } else {
            adjust.clamp(-MAX_ADJUST, MAX_ADJUST)
        };
        self.step = self.nominal_step * (1.0 + self.adjust);
    }

    /// The current relative ratio correction.
    pub fn adjust(&self) -> f64 {
        self.adjust
    }

    /// Forgets the history, so the next output starts from silence (after an underrun).
    pub fn reset(&mut self) {
        self.history = [0.0; 4];
        self.position = 0.0;
    }

    /// The next output sample in `[-1, 1]`-ish float, pulling input samples from `input` as
    /// needed. `None` when `input` ran dry; nothing is lost then, and the next call resumes
    /// exactly where this one stopped.
    #[inline]
    pub fn next_sample(&mut self, input: &mut impl FnMut() -> Option<i16>) -> Option<f32> {
        while self.position >= 1.0 {
            let sample = input()?;
            self.history = [
                self.history[1],
                self.history[2],
                self.history[3],
                f32::from(sample) * PCM_SCALE,
            ];
            self.position -= 1.0;
        }
        let out = catmull_rom(&self.history, self.position as f32);
        self.position += self.step;
        Some(out)
    }
}

/// Cubic Hermite interpolation with Catmull-Rom tangents between `p[1]` (t = 0) and `p[2]`
/// (t = 1).
#[inline]
fn catmull_rom(p: &[f32; 4], t: f32) -> f32 {
    let [p0, p1, p2, p3] = *p;
    let a = -0.5 * p0 + 1.5 * p1 - 1.5 * p2 + 0.5 * p3;
    let b = p0 - 2.5 * p1 + 2.0 * p2 - 0.5 * p3;
    let c = -0.5 * p0 + 0.5 * p2;
    ((a * t + b) * t + c) * t + p1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(resampler: &mut Resampler, input: &[i16], outputs: usize) -> Vec<f32> {
        let mut it = input.iter().copied();
        let mut pull = || it.next();
        (0..outputs)
            .map_while(|_| resampler.next_sample(&mut pull))
            .collect()
    }

    #[test]
    fn upsampling_by_six_passes_input_samples_through_delayed() {
        let input: Vec<i16> = (0..100).map(|i| (i * 300) as i16).collect();
        let mut r = Resampler::new(8000, 48000);
        let out = run(&mut r, &input, 500);
        // Every sixth output lands on an input sample, three inputs late (the four-tap window).
        for k in 3..80 {
            let expected = f32::from(input[k - 3]) / 32768.0;
            assert!((out[6 * k] - expected).abs() < 1e-6, "k={k}");
        }
        // A ramp is interpolated exactly by Catmull-Rom.
        for i in 60..400 {
            let slope = (out[i + 1] - out[i]) - (out[i] - out[i - 1]);
            assert!(slope.abs() < 1e-5, "i={i}");
        }
    }

    #[test]
    fn running_dry_loses_nothing_and_resumes_in_place() {
        let input: Vec<i16> = (0..64).map(|i| (i * 97 % 2000) as i16).collect();
        let mut whole = Resampler::new(8000, 44100);
        let expected = run(&mut whole, &input, 300);

        let mut split = Resampler::new(8000, 44100);
        let mut got = run(&mut split, &input[..20], 1000);
        assert!(got.len() < 300);
        let mut rest = input[20..].iter().copied();
        let mut pull = || rest.next();
        while got.len() < expected.len() {
            got.push(split.next_sample(&mut pull).unwrap());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn adjust_is_clamped_and_changes_consumption() {
        let mut r = Resampler::new(8000, 48000);
        r.set_adjust(0.5);
        assert_eq!(r.adjust(), MAX_ADJUST);
        r.set_adjust(f64::NAN);
        assert_eq!(r.adjust(), 0.0);

        let consumed = |adjust: f64| {
            let mut r = Resampler::new(8000, 48000);
            r.set_adjust(adjust);
            let mut n = 0u32;
            let mut pull = || {
                n += 1;
                Some(0)
            };
            for _ in 0..480_000 {
                r.next_sample(&mut pull).unwrap();
            }
            n
        };
        assert!((consumed(0.0) as i64 - 80_000).abs() <= 1);
        assert!((consumed(MAX_ADJUST) as i64 - 80_400).abs() <= 1);
        assert!((consumed(-MAX_ADJUST) as i64 - 79_600).abs() <= 1);
    }
}
