//! The phase of a call's 20 ms playout clock: when the call asks its jitter buffer for the next
//! frame.
//!
//! A steady 20 ms clock started at an arbitrary instant makes a frame that falls due just after
//! a tick wait almost a whole frame for the next one; when packets arrive at a steady phase (a
//! clean network), every frame does. This clock moves its ticks, by at most [`SLEW`] per tick,
//! to land [`MARGIN`] after the jitter buffer's next frame falls due
//! ([`crate::media::jitter::JitterBuffer::next_due`]). It only corrects what the buffer leaves
//! alone: a frame due more than [`EARLY_WINDOW`] after the steady tick is the buffer's to
//! stretch (it inserts concealment after quiet audio), one more than [`LATE_WINDOW`] before it
//! the buffer's to shrink (it drops quiet audio). Ticks also stay within [`MAX_PHASE`] of the
//! clock's own steady grid, so over time it ticks at the local clock's rate and a sender whose
//! clock drifts is still followed by the buffer, in whole frames.
//!
//! A SIP call also sends its RTP on these ticks, so while the phase moves its packets go out
//! 18–22 ms apart: at most 2 ms of send jitter, in the first second of a call and after a
//! talkspurt re-aligns playout; its RTP timestamps stay exact.
//!
//! Sans-IO: the driver passes instants in and sleeps until [`PlayoutClock::tick_at`].

use crate::media::frame::FRAME_DURATION;
use crate::media::jitter::{at_micros, micros_between};
use std::time::{Duration, Instant};

/// Most a tick moves from 20 ms after the previous one.
pub const SLEW: Duration = Duration::from_millis(2);
/// How long after the frame falls due the tick aims to land: the packet that completes it may
/// be a little later than the buffer's estimate, and the timer fires on whole milliseconds.
pub const MARGIN: Duration = Duration::from_millis(1);
/// A frame due this much after the steady tick, or more, is left to the buffer.
pub const EARLY_WINDOW: Duration = Duration::from_millis(10);
/// A frame due this much before the steady tick, or more, is left to the buffer.
pub const LATE_WINDOW: Duration = Duration::from_millis(20);
/// Furthest the ticks may get from the steady 20 ms grid, either way.
pub const MAX_PHASE: Duration = FRAME_DURATION;

/// A 20 ms clock whose phase follows the jitter buffer's due frames. See the module docs.
#[derive(Clone, Copy, Debug)]
pub struct PlayoutClock {
    /// The steady grid point of the current tick.
    grid: Instant,
    /// When the current tick is.
    tick: Instant,
}

impl PlayoutClock {
    /// A clock whose first tick is at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            grid: start,
            tick: start,
        }
    }

    /// When the current tick is due.
    pub fn tick_at(&self) -> Instant {
        self.tick
    }

    /// Moves to the next tick, given when the frame the next tick will ask for falls due (if
    /// the buffer knows), and returns it.
    pub fn advance(&mut self, due: Option<Instant>) -> Instant {
        self.grid += FRAME_DURATION;
        let steady = self.tick + FRAME_DURATION;
        let shift = due.map_or(0, |due| {
            // The windows match the buffer's own thresholds, so they compare the due time
            // itself; the aim is the margin after it.
            let early = micros_between(steady, due);
            if early >= micros(EARLY_WINDOW) || early <= -micros(LATE_WINDOW) {
                0
            } else {
                (early + micros(MARGIN)).clamp(-micros(SLEW), micros(SLEW))
            }
        });
        let phase = (micros_between(self.grid, steady) + shift)
            .clamp(-micros(MAX_PHASE), micros(MAX_PHASE));
        self.tick = at_micros(self.grid, phase).unwrap_or(self.grid);
        self.tick
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Ticks, as ms after `t0`, with frames due `phase_ms` after each steady grid point.
    fn run(phase_ms: f64, ticks: usize) -> Vec<f64> {
        let t0 = Instant::now();
        let mut clock = PlayoutClock::new(t0);
        (1..=ticks)
            .map(|k| {
                let due = at_micros(t0, ((20.0 * k as f64 + phase_ms) * 1000.0) as i64).unwrap();
                let at = clock.advance(Some(due));
                micros_between(t0, at) as f64 / 1000.0
            })
            .collect()
    }

    #[test]
    fn without_due_frames_it_ticks_every_20_ms() {
        let t0 = Instant::now();
        let mut clock = PlayoutClock::new(t0);
        assert_eq!(clock.tick_at(), t0);
        for k in 1..=10 {
            assert_eq!(clock.advance(None), t0 + ms(20 * k));
        }
    }

    #[test]
    fn a_frame_due_just_after_the_tick_pulls_the_ticks_later_in_small_steps() {
        // Frames fall due 7 ms after the steady ticks: the ticks slide 2 ms per tick to 1 ms
        // after them, and stay there.
        let ticks = run(7.0, 10);
        let gaps: Vec<f64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (18.0..=22.0).contains(g)), "{gaps:?}");
        let last = ticks.last().unwrap() - 200.0;
        assert!((last - 8.0).abs() < 0.01, "{ticks:?}");
    }

    #[test]
    fn a_frame_due_before_the_tick_pulls_the_ticks_earlier() {
        let ticks = run(-15.0, 12);
        let last = ticks.last().unwrap() - 240.0;
        assert!((last + 14.0).abs() < 0.01, "{ticks:?}");
    }

    #[test]
    fn whole_frames_are_left_to_the_jitter_buffer() {
        // Due 12 ms after the steady tick: the buffer inserts concealment there; 25 ms before
        // it, the buffer drops a frame. The clock does not move for either.
        for phase in [12.0, -25.0] {
            let ticks = run(phase, 5);
            assert_eq!(ticks, vec![20.0, 40.0, 60.0, 80.0, 100.0], "{phase}");
        }
    }

    #[test]
    fn the_ticks_stay_within_a_frame_of_the_steady_grid() {
        // A sender running 1 % slow: its frames fall due ever later. The ticks follow them only
        // up to 20 ms off the grid; from then on the clock ticks every 20 ms again.
        let t0 = Instant::now();
        let mut clock = PlayoutClock::new(t0);
        let mut last = t0;
        for k in 1..=5000u32 {
            let due = t0 + Duration::from_secs_f64(f64::from(k) * 0.0202);
            let at = clock.advance(Some(due));
            let phase = at.duration_since(t0).as_secs_f64() - f64::from(k) * 0.020;
            assert!(phase <= 0.020 + 1e-9, "tick {k}: {phase}");
            last = at;
        }
        assert_eq!(clock.advance(None).duration_since(last), ms(20));
    }
}
