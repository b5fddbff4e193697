//! The handshake watchdog's numbers: how long calls took from the voice webhook to their
//! stream's `start`, and how many fell back because their stream did not start in time.

use std::collections::VecDeque;
use std::time::Duration;

/// Handshakes kept for the quantiles (the most recent ones).
const WINDOW: usize = 1024;

/// Recent handshake times and the totals.
#[derive(Debug, Clone, Default)]
pub struct HandshakeStats {
    recent: VecDeque<Duration>,
    /// Streams that started (their call was taken).
    pub started: u64,
    /// Calls that fell back: busy, disabled, shutting down, or no `start` in time.
    pub fell_back: u64,
}

impl HandshakeStats {
    /// A stream started `took` after its webhook.
    pub fn record_start(&mut self, took: Duration) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
        self.started += 1;
    }

    /// A call was answered with the fallback.
    pub fn record_fallback(&mut self) {
        self.fell_back += 1;
    }

    /// The `q` quantile (0.0–1.0, nearest rank) of the recent handshakes.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.recent.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let rank =
            ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted.get(rank - 1).copied()
    }

    /// Share of calls that fell back, 0.0–1.0 (0 before any call).
    pub fn fallback_rate(&self) -> f64 {
        let total = self.started + self.fell_back;
        if total == 0 {
            0.0
        } else {
            self.fell_back as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank_over_the_recent_window() {
        let mut s = HandshakeStats::default();
        assert_eq!(s.quantile(0.5), None);
        for ms in 1..=100 {
            s.record_start(Duration::from_millis(ms));
        }
        assert_eq!(s.quantile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(s.quantile(0.95), Some(Duration::from_millis(95)));
        assert_eq!(s.quantile(1.0), Some(Duration::from_millis(100)));
        for _ in 0..WINDOW {
            s.record_start(Duration::from_secs(1));
        }
        assert_eq!(s.quantile(0.0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn fallback_rate_counts_every_call() {
        let mut s = HandshakeStats::default();
        assert_eq!(s.fallback_rate(), 0.0);
        s.record_start(Duration::from_millis(10));
        s.record_start(Duration::from_millis(10));
        s.record_start(Duration::from_millis(10));
        s.record_fallback();
        assert_eq!(s.fallback_rate(), 0.25);
    }
}
