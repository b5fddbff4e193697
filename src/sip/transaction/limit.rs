//! Per-source token buckets: how many requests (or responses) one source IP may cause per
//! second, with a bounded burst. This is flood control in front of the transaction layer, not
//! an RFC 3261 mechanism; RFC 3261 §8.2.7 and §17.2 only make it possible to answer without
//! state, and this module bounds how often that answer goes out.
//!
//! Buckets are keyed by source IP (not port: a flooder has 64 k ports). The map of buckets is
//! bounded: when it is full, the oldest bucket is evicted (first in, first out, O(1)). Eviction
//! only ever gives a source a fresh, full bucket, so a spoofing flooder can at worst make the
//! limit more lenient for one other source, never lock a legitimate one out; and only sources
//! inside `[sip].allow` reach the endpoint at all.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

/// One token bucket: `rate` tokens a second, up to `burst`, starting full. Sans-IO: the caller
/// gives the time. Also what limits a call's DTMF events.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// `rate` per second (0: only the burst, ever), `burst` at most (at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            at: None,
        }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket per source IP: `rate` tokens a second, up to `burst`.
#[derive(Debug)]
pub struct SourceLimiter {
    rate: u32,
    burst: u32,
    max_sources: usize,
    buckets: HashMap<IpAddr, TokenBucket>,
    /// Insertion order of `buckets`, for eviction.
    order: VecDeque<IpAddr>,
    evicted: u64,
}

impl SourceLimiter {
    /// `rate` per second (0 refuses everything), `burst` at most (at least 1), and at most
    /// `max_sources` buckets (at least 1).
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> Self {
        Self {
            rate,
            burst,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Takes one token for `source` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        if !self.buckets.contains_key(&source) {
            while self.buckets.len() >= self.max_sources {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                self.buckets.remove(&oldest);
                self.evicted += 1;
            }
            self.buckets
                .insert(source, TokenBucket::new(self.rate, self.burst));
            self.order.push_back(source);
        }
        self.buckets
            .get_mut(&source)
            .is_some_and(|bucket| bucket.take(now))
    }

    /// Sources tracked now (at most `max_sources`).
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Buckets evicted to make room, since creation.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(2, 5, 16);
        let passed = (0..20).filter(|_| l.allow(t0, ip(1))).count();
        assert_eq!(passed, 5, "the burst, then nothing");
        // Another source has its own bucket.
        assert!(l.allow(t0, ip(2)));
        // One second refills `rate` tokens.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..20).filter(|_| l.allow(t1, ip(1))).count();
        assert_eq!(passed, 2);
        // A long pause refills up to the burst only.
        let t2 = t1 + Duration::from_secs(3600);
        let passed = (0..20).filter(|_| l.allow(t2, ip(1))).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn bucket_map_is_bounded_and_evicts_oldest() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(1, 1, 3);
        for n in 0..=200 {
            l.allow(t0, ip(n));
            assert!(l.sources() <= 3);
        }
        assert_eq!(l.evicted(), 198);
        // 200 is still tracked (empty bucket); 1 was evicted long ago and starts full again.
        assert!(!l.allow(t0, ip(200)));
        assert!(l.allow(t0, ip(1)));
    }

    #[test]
    fn zero_rate_refuses_after_the_burst() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(0, 1, 4);
        assert!(l.allow(t0, ip(1)));
        assert!(!l.allow(t0 + Duration::from_secs(100), ip(1)));
    }
}
