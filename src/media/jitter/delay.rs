//! The recent-delay windows behind the jitter buffer's target: one delay per packet (arrival
//! time minus media time, or what a reordered packet needed) for the last few hundred packets,
//! kept as a 1 ms histogram whose floor (the fastest packet) and chosen quantile are maintained
//! incrementally, so a packet costs a few bin steps and reading them costs nothing — never a
//! sort or a pass over the window. An entry may also have no delay (a packet that needed
//! nothing): it counts in the window and ranks below every delay.
//!
//! A bin holds the delays in `(edge − 1 ms, edge]` and both the floor and the quantile are read
//! as their bin's upper edge, so a delay that sits exactly on a 1 ms boundary (a packet that
//! arrives exactly when a playout tick is due) is reported exactly, not rounded up by a bin.

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
    /// Counts per 1 ms bin; bin `b` holds delays in `(anchor + (b − 1) ms, anchor + b ms]`.
    bins: Box<[u16]>,
    /// Upper edge of bin 0 minus one bin; always a multiple of [`BIN_US`].
    anchor: i64,
    /// The quantile tracked, in per mille.
    permille: usize,
    /// Lowest non-empty bin (0 when empty).
    floor_bin: usize,
    /// Lowest bin whose cumulative count reaches the quantile's rank (0 when empty).
    quantile_bin: usize,
    /// Delays in bins `0..=quantile_bin`, plus every entry without a delay.
    at_or_below: usize,
    /// Entries without a delay (they rank below every delay).
    nones: usize,
}

/// Ring marker of an entry without a delay.
const NONE: i64 = i64::MIN;

impl DelayWindow {
    /// Allocates a window of `capacity` delays tracking the `permille` quantile; nothing
    /// allocates afterwards.
    pub(super) fn new(capacity: usize, permille: u16) -> Self {
        Self {
            samples: vec![0; capacity.clamp(1, usize::from(u16::MAX))].into_boxed_slice(),
            next: 0,
            len: 0,
            bins: vec![0; BINS].into_boxed_slice(),
            anchor: -MARGIN_US,
            permille: usize::from(permille.min(1000)),
            floor_bin: 0,
            quantile_bin: 0,
            at_or_below: 0,
            nones: 0,
        }
    }

    /// Forgets every delay, as for a new stream.
    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
        self.bins.fill(0);
        self.anchor = -MARGIN_US;
        self.floor_bin = 0;
        self.quantile_bin = 0;
        self.at_or_below = 0;
        self.nones = 0;
    }

    /// Number of delays in the window.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Number of entries with a delay.
    pub(super) fn with_delay(&self) -> usize {
        self.len - self.nones
    }

    /// Adds an entry without a delay: it counts in the window but ranks below every delay.
    pub(super) fn push_none(&mut self) {
        self.push(NONE);
    }

    /// Adds one packet's delay, evicting the oldest once full.
    pub(super) fn push(&mut self, delay_us: i64) {
        let evicted = if self.len == self.samples.len() {
            self.samples.get(self.next).copied()
        } else {
            self.len += 1;
            None
        };
        if let Some(slot) = self.samples.get_mut(self.next) {
            *slot = delay_us;
        }
        self.next += 1;
        if self.next == self.samples.len() {
            self.next = 0;
        }

        if let Some(old) = evicted {
            self.remove(old);
        }
        if delay_us != NONE {
            let offset = delay_us - self.anchor;
            if offset <= 0 {
                self.reanchor(delay_us - MARGIN_US);
                return;
            }
            if offset > BINS as i64 * BIN_US && self.floor_bin > BINS / 2 {
                // Every delay moved far up (a slower route): follow it.
                let real = self.samples.get(..self.len).into_iter().flatten();
                let floor = real.filter(|&&d| d != NONE).min();
                let floor = floor.copied().unwrap_or(delay_us);
                self.reanchor(floor - MARGIN_US);
                return;
            }
        }
        self.insert(delay_us);
        self.settle();
    }

    /// The smallest delay in the window, rounded up to 1 ms, or `None` if it has none.
    pub(super) fn floor(&self) -> Option<i64> {
        (self.len > self.nones).then(|| self.edge(self.floor_bin))
    }

    /// The delay that the chosen quantile of the window does not exceed, rounded up to 1 ms,
    /// or `None` if that many entries have no delay.
    pub(super) fn quantile(&self) -> Option<i64> {
        (self.rank() > self.nones).then(|| self.edge(self.quantile_bin))
    }

    /// The delay above the floor, on a bin edge, that minimizes `cost(delay above the floor in
    /// µs, entries later than it)`; `None` if the window holds no delay. One pass over the bins.
    pub(super) fn cheapest(&self, cost: impl Fn(i64, usize) -> f32) -> Option<i64> {
        self.floor()?;
        let mut later = self.len - self.nones;
        let mut best = (f32::MAX, 0);
        for bin in self.floor_bin..BINS {
            later -= usize::from(self.count(bin)).min(later);
            let above = (bin - self.floor_bin) as i64 * BIN_US;
            let c = cost(above, later);
            if c < best.0 {
                best = (c, above);
            }
            if later == 0 {
                break;
            }
        }
        Some(best.1)
    }

    fn edge(&self, bin: usize) -> i64 {
        self.anchor + bin as i64 * BIN_US
    }

    fn bin(&self, delay_us: i64) -> usize {
        let offset = delay_us - self.anchor;
        // Ceiling division: a delay on an edge belongs to the bin below it.
        let bin = (offset + BIN_US - 1).div_euclid(BIN_US);
        bin.clamp(0, BINS as i64 - 1) as usize
    }

    /// Rank (1-based) of the quantile among the window's delays.
    fn rank(&self) -> usize {
        (self.len * self.permille).div_ceil(1000).max(1)
    }

    fn insert(&mut self, delay_us: i64) {
        if delay_us == NONE {
            self.nones += 1;
            self.at_or_below += 1;
            return;
        }
        let bin = self.bin(delay_us);
        if let Some(count) = self.bins.get_mut(bin) {
            *count = count.saturating_add(1);
        }
        if self.len == self.nones + 1 || bin < self.floor_bin {
            self.floor_bin = bin;
        }
        if bin <= self.quantile_bin {
            self.at_or_below += 1;
        }
    }

    fn remove(&mut self, delay_us: i64) {
        if delay_us == NONE {
            self.nones -= 1;
            self.at_or_below -= 1;
            return;
        }
        let bin = self.bin(delay_us);
        if let Some(count) = self.bins.get_mut(bin) {
            *count = count.saturating_sub(1);
        }
        if bin <= self.quantile_bin {
            self.at_or_below = self.at_or_below.saturating_sub(1);
        }
        if bin == self.floor_bin {
            // The floor bin may have emptied: move up to the next occupied one.
            let above = self.bins.get(bin..).into_iter().flatten();
            self.floor_bin = bin + above.take_while(|&&c| c == 0).count();
        }
    }

    /// Moves the quantile bin to the lowest bin whose cumulative count reaches the rank.
    fn settle(&mut self) {
        let rank = self.rank();
        while self.at_or_below < rank && self.quantile_bin + 1 < BINS {
            self.quantile_bin += 1;
            self.at_or_below += usize::from(self.count(self.quantile_bin));
        }
        while self.quantile_bin > 0
            && self.at_or_below - usize::from(self.count(self.quantile_bin)) >= rank
        {
            self.at_or_below -= usize::from(self.count(self.quantile_bin));
            self.quantile_bin -= 1;
        }
    }

    fn count(&self, bin: usize) -> u16 {
        self.bins.get(bin).copied().unwrap_or(0)
    }

    fn reanchor(&mut self, anchor: i64) {
        self.anchor = anchor.div_euclid(BIN_US) * BIN_US;
        self.bins.fill(0);
        self.floor_bin = BINS;
        self.nones = 0;
        for i in 0..self.len {
            match self.samples.get(i).copied() {
                Some(NONE) => self.nones += 1,
                Some(delay) => {
                    let bin = self.bin(delay);
                    if let Some(count) = self.bins.get_mut(bin) {
                        *count = count.saturating_add(1);
                    }
                    self.floor_bin = self.floor_bin.min(bin);
                }
                None => {}
            }
        }
        self.quantile_bin = 0;
        self.at_or_below = self.nones + usize::from(self.count(0));
        self.settle();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The reference: sort the window and index it.
    fn sorted_quantile(window: &[i64], permille: usize) -> i64 {
        let mut v = window.to_vec();
        v.sort_unstable();
        let rank = (v.len() * permille).div_ceil(1000).max(1);
        v[rank - 1]
    }

    fn round_up_ms(us: i64) -> i64 {
        (us + BIN_US - 1).div_euclid(BIN_US) * BIN_US
    }

    #[test]
    fn floor_and_quantile_follow_the_window() {
        let mut w = DelayWindow::new(100, 980);
        assert_eq!(w.floor(), None);
        for i in 0..100 {
            w.push(i * 1000);
        }
        assert_eq!(w.floor(), Some(0));
        assert_eq!(w.quantile(), Some(97_000));
        // Pushing 100 more evicts the first 100.
        for i in 100..200 {
            w.push(i * 1000);
        }
        assert_eq!(w.floor(), Some(100_000));
        assert_eq!(w.quantile(), Some(197_000));
        assert_eq!(w.len(), 100);
    }

    #[test]
    fn delays_on_a_millisecond_edge_are_exact_and_others_round_up() {
        let mut w = DelayWindow::new(10, 1000);
        for _ in 0..10 {
            w.push(20_000);
        }
        assert_eq!((w.floor(), w.quantile()), (Some(20_000), Some(20_000)));
        w.push(20_001);
        assert_eq!((w.floor(), w.quantile()), (Some(20_000), Some(21_000)));
    }

    #[test]
    fn incremental_quantile_matches_sorting_on_random_delays() {
        let mut x = 17u64;
        for permille in [500, 900, 980, 1000] {
            let mut w = DelayWindow::new(64, permille as u16);
            let mut all = Vec::new();
            for i in 0..3000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                // Mostly small jitter, sometimes a spike, slowly drifting down.
                let spike = if (x >> 60) == 0 { 200_000 } else { 0 };
                let d = ((x >> 33) % 30_000) as i64 + spike - i * 7;
                w.push(d);
                all.push(d);
                let window = &all[all.len().saturating_sub(64)..];
                let expected = round_up_ms(sorted_quantile(window, permille));
                assert_eq!(w.quantile(), Some(expected), "permille {permille} step {i}");
                let floor = round_up_ms(*window.iter().min().unwrap());
                assert_eq!(w.floor(), Some(floor), "step {i}");
            }
        }
    }

    #[test]
    fn entries_without_a_delay_rank_below_every_delay() {
        let mut w = DelayWindow::new(100, 990);
        for i in 0..100 {
            if i % 50 == 7 {
                w.push(30_000 + i);
            } else {
                w.push_none();
            }
        }
        // Two delays in 100 entries: the 99 % quantile is the lower one.
        assert_eq!((w.with_delay(), w.quantile()), (2, Some(31_000)));
        assert_eq!(w.floor(), Some(31_000));
        for _ in 0..100 {
            w.push_none();
        }
        assert_eq!((w.with_delay(), w.quantile(), w.floor()), (0, None, None));
        let mut x = 5u64;
        let mut all = vec![None; 100];
        for i in 0..2000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let d = ((x >> 33) % 50_000) as i64;
            if (x >> 20).is_multiple_of(4) {
                w.push(d);
                all.push(Some(d));
            } else {
                w.push_none();
                all.push(None);
            }
            let window = &all[all.len().saturating_sub(100)..];
            let rank = (window.len() * 990).div_ceil(1000).max(1);
            let mut delays: Vec<i64> = window.iter().flatten().copied().collect();
            delays.sort_unstable();
            let nones = window.len() - delays.len();
            let expected = (rank > nones).then(|| round_up_ms(delays[rank - nones - 1]));
            assert_eq!(w.quantile(), expected, "step {i}");
        }
    }

    #[test]
    fn reanchors_when_delays_fall_or_rise_beyond_the_histogram() {
        let mut w = DelayWindow::new(10, 500);
        for _ in 0..10 {
            w.push(-2_000_000);
        }
        assert_eq!(w.floor(), Some(-2_000_000));
        for _ in 0..10 {
            w.push(5_000_000);
        }
        assert_eq!(w.floor(), Some(5_000_000));
        assert_eq!(w.quantile(), Some(5_000_000));
    }
}
