//! The greeting played to every caller: a WAV file of any rate and channel count, converted
//! once at load time to 8 kHz mono 16-bit PCM, the pipeline's format.

use std::path::Path;
use std::sync::Arc;

use crate::media::frame::{FRAME_SAMPLES, Frame, SAMPLE_RATE, SILENCE};

#[derive(Debug, thiserror::Error)]
pub enum GreetingError {
    #[error("cannot read greeting {path}: {source}")]
    Read { path: String, source: hound::Error },
    #[error("greeting {path} has no audio")]
    Empty { path: String },
}

/// The greeting as 8 kHz mono samples, shared by all calls.
#[derive(Debug, Clone, Default)]
pub struct Greeting {
    samples: Arc<[i16]>,
}

impl Greeting {
    /// Loads and converts a WAV file.
    pub fn load(path: &Path) -> Result<Self, GreetingError> {
        let read_err = |source| GreetingError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut reader = hound::WavReader::open(path).map_err(read_err)?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels.max(1));
        let raw: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(read_err)?,
            hound::SampleFormat::Int => {
                let scale =
                    1.0 / (1u64 << spec.bits_per_sample.clamp(1, 32).saturating_sub(1)) as f32;
                reader
                    .samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
                    .map_err(read_err)?
            }
        };
        let mono: Vec<f32> = raw
            .chunks(channels)
            .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
            .collect();
        let samples = resample_linear(&mono, spec.sample_rate, SAMPLE_RATE);
        if samples.is_empty() {
            return Err(GreetingError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(Self {
            samples: samples.into(),
        })
    }

    /// `[calls].greeting`: the file when one is configured, else no greeting (silence).
    pub fn configured(path: Option<&Path>) -> Result<Self, GreetingError> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    /// A greeting from samples already at 8 kHz (tests, generated tones).
    pub fn from_samples(samples: Vec<i16>) -> Self {
        Self {
            samples: samples.into(),
        }
    }

    /// A cursor that plays the greeting once, then silence.
    pub fn player(&self) -> GreetingPlayer {
        GreetingPlayer {
            samples: self.samples.clone(),
            pos: 0,
        }
    }
}

/// Plays one call's greeting, 20 ms at a time.
#[derive(Debug)]
pub struct GreetingPlayer {
    samples: Arc<[i16]>,
    pos: usize,
}

impl GreetingPlayer {
    /// Fills `out` with the next frame; silence once the greeting is over.
    pub fn next_frame(&mut self, out: &mut Frame) {
        *out = SILENCE;
        let rest = self.samples.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(FRAME_SAMPLES);
        if let (Some(dst), Some(src)) = (out.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
    }

    pub fn is_playing(&self) -> bool {
        self.pos < self.samples.len()
    }

    /// Skips the rest of the greeting: silence from the next frame on.
    pub fn stop(&mut self) {
        self.pos = self.samples.len();
    }
}

/// Linear-interpolation resampling; good enough for a prompt converted once at load.
fn resample_linear(input: &[f32], from: u32, to: u32) -> Vec<i16> {
    if from == 0 || input.is_empty() {
        return Vec::new();
    }
    let out_len = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let idx = pos as usize;
            let frac = (pos - idx as f64) as f32;
            let a = input.get(idx).copied().unwrap_or(0.0);
            let b = input.get(idx + 1).copied().unwrap_or(a);
            let v = a + (b - a) * frac;
            (v.clamp(-1.0, 1.0) * 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn converts_stereo_16k_to_mono_8k() {
        let dir = std::env::temp_dir().join(format!("earshot-greeting-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("g.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for _ in 0..16000 {
            w.write_sample(1000i16).unwrap();
            w.write_sample(3000i16).unwrap();
        }
        w.finalize().unwrap();
        let g = Greeting::load(&path).unwrap();
        assert_eq!(g.samples.len(), 8000);
        assert!(g.samples.iter().all(|&s| (1999..=2001).contains(&s)));
        let mut p = g.player();
        let mut f = SILENCE;
        for _ in 0..50 {
            p.next_frame(&mut f);
        }
        assert!(!p.is_playing());
        p.next_frame(&mut f);
        assert_eq!(f, SILENCE);
        std::fs::remove_dir_all(dir).ok();
    }
}
