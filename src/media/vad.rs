//! An energy voice-activity detector over 20 ms frames: where the caller's speech starts (for
//! barge-in) and where it ends (for the agent's response latency).
//!
//! A frame is speech when its mean-square level is at or above the threshold. Speech starts
//! after [`VadConfig::start_frames`] speech frames in a row, and ends after
//! [`VadConfig::end_frames`] quiet frames in a row; the end is dated at the last speech frame,
//! not at the moment the hangover ran out. Pure: frames and instants in, events out.

use std::time::Instant;

use super::frame::{FRAME_SAMPLES, Frame};

/// Thresholds of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Frames at or above this level count as speech, in dBFS.
    pub threshold_dbfs: f32,
    /// Consecutive speech frames that start speech.
    pub start_frames: u32,
    /// Consecutive quiet frames that end it.
    pub end_frames: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold_dbfs: -35.0,
            start_frames: 3,
            end_frames: 15,
        }
    }
}

/// What the detector saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech started (dated at this frame).
    Started,
    /// Speech ended; `at` is when its last speech frame was heard.
    Ended { at: Instant },
}

/// The detector's state.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    /// Mean-square level at which a frame is speech.
    energy: f64,
    speaking: bool,
    run: u32,
    last_speech: Option<Instant>,
}

impl Vad {
    pub fn new(config: VadConfig) -> Self {
        let rms = 32768.0 * 10f64.powf(f64::from(config.threshold_dbfs) / 20.0);
        Self {
            config,
            energy: rms * rms,
            speaking: false,
            run: 0,
            last_speech: None,
        }
    }

    /// Mean-square level of one frame.
    pub fn energy(frame: &Frame) -> f64 {
        frame
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>()
            / FRAME_SAMPLES as f64
    }

    /// Whether speech is going on.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// One frame of mean-square level `energy`, heard at `now`.
    pub fn push(&mut self, now: Instant, energy: f64) -> Option<VadEvent> {
        let loud = energy >= self.energy;
        if loud {
            self.last_speech = Some(now);
        }
        if self.speaking == loud {
            self.run = 0;
            return None;
        }
        self.run += 1;
        if self.speaking && self.run >= self.config.end_frames {
            self.speaking = false;
            self.run = 0;
            return Some(VadEvent::Ended {
                at: self.last_speech.unwrap_or(now),
            });
        }
        if !self.speaking && self.run >= self.config.start_frames {
            self.speaking = true;
            self.run = 0;
            return Some(VadEvent::Started);
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn speech_starts_after_three_loud_frames_and_ends_at_the_last_one() {
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_millis(20 * i);
        let mut vad = Vad::new(VadConfig::default());
        let loud = Vad::energy(&[8000; FRAME_SAMPLES]);
        let quiet = Vad::energy(&[10; FRAME_SAMPLES]);
        assert_eq!(vad.push(at(0), loud), None);
        assert_eq!(
            vad.push(at(1), quiet),
            None,
            "one quiet frame resets the run"
        );
        assert_eq!(vad.push(at(2), loud), None);
        assert_eq!(vad.push(at(3), loud), None);
        assert_eq!(vad.push(at(4), loud), Some(VadEvent::Started));
        for i in 5..10 {
            assert_eq!(vad.push(at(i), loud), None);
        }
        // A short pause inside speech does not end it.
        for i in 10..20 {
            assert_eq!(vad.push(at(i), quiet), None);
        }
        assert_eq!(vad.push(at(20), loud), None);
        let mut ended = None;
        for i in 21..40 {
            ended = ended.or(vad.push(at(i), quiet));
        }
        assert_eq!(ended, Some(VadEvent::Ended { at: at(20) }));
        assert!(!vad.speaking());
    }
}
