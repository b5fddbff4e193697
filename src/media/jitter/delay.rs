//! The recent-delay window behind the jitter buffer's target: the relative delays (arrival time
//! minus media time) of the last few hundred packets, kept as a 1 ms histogram so the floor (the
//! fastest packet) and a high quantile cost one pass over the bins, never a sort.

/// Width of one histogram bin.
const BIN_US: i64 = 1_000;
/// Number of bins: the histogram spans 1.024 s above its anchor. Delays beyond that are counted
/// in the top bin (they exceed any allowed playout delay anyway).
const BINS: usize = 1024;
/// Headroom kept below the floor when the histogram is re-anchored, so that a falling delay
/// (clock drift, a faster route) rarely forces another re-anchor.
const MARGIN_US: i64 = 256_000;

/// The last `capacity` delays in arrival order, plus their histogram.
#[derive(Clone, Debug)]
pub(super) struct DelayWindow {
    /// Ring of delays in µs; the valid entries are `samples[..len]`.
    samples: Box<[i64]>,
    /// Ring position the next delay is written to.
    next: usize,
    /// Number of valid entries (grows to `samples.len()`, then stays).
    len: usize,
    /// Counts per 1 ms bin, bin 0 starting at `anchor`.
    bins: Box<[u16]>,
    /// Delay at the low edge of bin 0.
    anchor: i64,
}

impl DelayWindow {
    /// Allocates the window; nothing allocates afterwards.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            samples: vec![0; capacity.clamp(1, usize::from(u16::MAX))].into_boxed_slice(),
            next: 0,
            len: 0,
            bins: vec![0; BINS].into_boxed_slice(),
            anchor: -MARGIN_US,
        }
    }

    /// Forgets every delay, as for a new stream.
    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
        self.bins.fill(0);
        self.anchor = -MARGIN_US;
    }

    /// Number of delays in the window.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds one packet's delay, evicting the oldest once full.
    pub(super) fn push(&mut self, delay_us: i64) {
        if self.len == self.samples.len() {
            if let Some(&old) = self.samples.get(self.next) {
                let bin = self.bin(old);
                if let Some(count) = self.bins.get_mut(bin) {
                    *count = count.saturating_sub(1);
                }
            }
        } else {
            self.len += 1;
        }
        if let Some(slot) = self.samples.get_mut(self.next) {
            *slot = delay_us;
        }
        self.next = (self.next + 1) % self.samples.len();

        let offset = delay_us - self.anchor;
        if offset < 0 {
            self.reanchor(delay_us - MARGIN_US);
        } else if offset >= BINS as i64 * BIN_US && self.floor_bin() > BINS / 2 {
            // Every delay moved far up (a slower route): follow it.
            let floor = self
                .samples
                .get(..self.len)
                .into_iter()
                .flatten()
                .copied()
                .min();
            self.reanchor(floor.unwrap_or(delay_us) - MARGIN_US);
        } else {
            let bin = self.bin(delay_us);
            if let Some(count) = self.bins.get_mut(bin) {
                *count = count.saturating_add(1);
            }
        }
    }

    /// The smallest delay in the window (to 1 ms), or `None` if empty.
    pub(super) fn floor(&self) -> Option<i64> {
        (self.len > 0).then(|| self.anchor + self.floor_bin() as i64 * BIN_US)
    }

    /// The delay that `permille`/1000 of the window does not exceed, rounded up to the bin's
    /// upper edge, or `None` if empty.
    pub(super) fn quantile(&self, permille: u16) -> Option<i64> {
        if self.len == 0 {
            return None;
        }
        let rank = (self.len * usize::from(permille.min(1000)))
            .div_ceil(1000)
            .max(1);
        let mut seen = 0usize;
        for (bin, &count) in self.bins.iter().enumerate() {
            seen += usize::from(count);
            if seen >= rank {
                return Some(self.anchor + (bin as i64 + 1) * BIN_US);
            }
        }
        Some(self.anchor + BINS as i64 * BIN_US)
    }

    fn floor_bin(&self) -> usize {
        self.bins.iter().position(|&c| c > 0).unwrap_or(0)
    }

    fn bin(&self, delay_us: i64) -> usize {
        ((delay_us - self.anchor).div_euclid(BIN_US)).clamp(0, BINS as i64 - 1) as usize
    }

    fn reanchor(&mut self, anchor: i64) {
        self.anchor = anchor;
        self.bins.fill(0);
        for i in 0..self.len {
            let bin = self.samples.get(i).map(|&d| self.bin(d));
            if let Some(count) = bin.and_then(|b| self.bins.get_mut(b)) {
                *count = count.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_quantile_follow_the_window() {
        let mut w = DelayWindow::new(100);
        assert_eq!(w.floor(), None);
        for i in 0..100 {
            w.push(i * 1000);
        }
        assert_eq!(w.floor(), Some(0));
        assert_eq!(w.quantile(980), Some(98_000));
        assert_eq!(w.quantile(1000), Some(100_000));
        // Pushing 100 more evicts the first 100.
        for i in 100..200 {
            w.push(i * 1000);
        }
        assert_eq!(w.floor(), Some(100_000));
        assert_eq!(w.len(), 100);
    }

    #[test]
    fn reanchors_when_delays_fall_or_rise_beyond_the_histogram() {
        let mut w = DelayWindow::new(10);
        for _ in 0..10 {
            w.push(-2_000_000);
        }
        assert_eq!(w.floor(), Some(-2_000_000));
        for _ in 0..10 {
            w.push(5_000_000);
        }
        assert_eq!(w.floor(), Some(5_000_000));
        assert_eq!(w.quantile(500), Some(5_001_000));
    }
}
