//! What to do after an attempt (sans-IO): which answers settle a delivery, which are retried,
//! and when. Exponential backoff with full jitter (`random(0, min(cap, base × 2^attempt))`,
//! never below `base / 2`, so a retry storm cannot hammer a receiver), until the delivery is
//! older than the give-up age.

use std::time::Duration;

use crate::config::WebhooksConfig;

/// How one attempt ended, before the policy judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status(u16),
    /// The address filter refused the URL's address: nothing was sent.
    Refused(String),
    /// Connect, TLS, write or read failed, timed out, or the connection closed early.
    Transport(String),
}

/// The policy's verdict on an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry,
    GiveUp,
}

/// 2xx delivers; 408, 409, 425, 429 and 5xx are retried, as are transport failures; other
/// statuses (3xx: redirects are not followed; 4xx: the receiver refuses) and refused addresses
/// are given up.
pub fn judge(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Status(s) if (200..300).contains(s) => Verdict::Delivered,
        Outcome::Status(408 | 409 | 425 | 429) => Verdict::Retry,
        Outcome::Status(s) if (500..600).contains(s) => Verdict::Retry,
        Outcome::Status(_) | Outcome::Refused(_) => Verdict::GiveUp,
        Outcome::Transport(_) => Verdict::Retry,
    }
}

/// The retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub base: Duration,
    pub cap: Duration,
    pub give_up_after: Duration,
}

impl From<&WebhooksConfig> for Schedule {
    fn from(c: &WebhooksConfig) -> Self {
        Schedule {
            base: Duration::from_millis(c.retry_base_ms),
            cap: Duration::from_millis(c.retry_cap_ms),
            give_up_after: Duration::from_secs(c.give_up_after_secs),
        }
    }
}

impl Schedule {
    /// When to try again after `attempts` failed attempts (1 after the first), given a delivery
    /// created at `created_ms`, now `now_ms`, and a uniform `random` in 0..=u64::MAX. `None`:
    /// give up, the next attempt would come after the give-up age.
    pub fn next_attempt(
        &self,
        attempts: u32,
        created_ms: u64,
        now_ms: u64,
        random: u64,
    ) -> Option<u64> {
        let base = self.base.as_millis() as u64;
        let exp = attempts.saturating_sub(1).min(40);
        let ceiling = base
            .saturating_mul(1u64 << exp)
            .min(self.cap.as_millis() as u64)
            .max(1);
        let floor = (base / 2).min(ceiling);
        let delay = floor + random % (ceiling - floor + 1);
        let next = now_ms.saturating_add(delay);
        let deadline = created_ms.saturating_add(self.give_up_after.as_millis() as u64);
        (next <= deadline).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule::from(&WebhooksConfig::default())
    }

    #[test]
    fn statuses_are_judged_as_the_retry_rules_say() {
        for s in [200, 202, 204, 299] {
            assert_eq!(judge(&Outcome::Status(s)), Verdict::Delivered, "{s}");
        }
        for s in [408, 409, 425, 429, 500, 502, 503, 599] {
            assert_eq!(judge(&Outcome::Status(s)), Verdict::Retry, "{s}");
        }
        for s in [100, 301, 302, 307, 400, 401, 404, 410, 413, 600] {
            assert_eq!(judge(&Outcome::Status(s)), Verdict::GiveUp, "{s}");
        }
        assert_eq!(judge(&Outcome::Transport("timeout".into())), Verdict::Retry);
        assert_eq!(judge(&Outcome::Refused("loopback".into())), Verdict::GiveUp);
    }

    #[test]
    fn backoff_doubles_within_full_jitter_and_stops_at_the_cap() {
        let s = schedule();
        for (attempts, ceiling) in [(1, 5_000), (2, 10_000), (3, 20_000), (12, 3_600_000)] {
            assert_eq!(s.next_attempt(attempts, 0, 0, 0), Some(2_500));
            let span = ceiling - 2_500;
            assert_eq!(s.next_attempt(attempts, 0, 0, span), Some(ceiling));
            assert_eq!(s.next_attempt(attempts, 0, 0, span + 1), Some(2_500));
        }
        assert_eq!(s.next_attempt(1, 0, 0, 1234), Some(2_500 + 1234));
    }

    #[test]
    fn gives_up_once_the_next_attempt_would_pass_a_day() {
        let s = schedule();
        let day = 86_400_000;
        assert!(s.next_attempt(20, 0, day - 3_600_000, 0).is_some());
        assert_eq!(s.next_attempt(20, 0, day - 1_000, 0), None);
        assert_eq!(s.next_attempt(1, 0, day + 1, 0), None);
    }
}
