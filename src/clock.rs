//! The clock of the drivers: the only module that reads the time. Sans-IO cores are handed
//! `Instant`s from here, so they can be tested in virtual time.

use std::time::{Instant, SystemTime};

/// Monotonic now, for protocol timers.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock now, for RTCP NTP timestamps and stored call times.
#[allow(clippy::disallowed_methods)]
pub fn wallclock() -> SystemTime {
    SystemTime::now()
}

/// Sleeps until `deadline`, or forever when there is none (a `select!` arm that never fires).
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One timer a driver keeps across the turns of its loop: a pinned [`tokio::time::Sleep`]
/// moved in the timer wheel only when its deadline changes, where a `sleep_until` built on
/// every turn inserts and removes a timer each time (at 50 turns a second per call, thousands
/// of calls make that a large share of the runtime's work).
#[derive(Debug)]
pub struct Alarm {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: Option<tokio::time::Instant>,
}

impl Alarm {
    /// An alarm with no deadline (it never fires until [`Alarm::set`]).
    pub fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                now(),
            ))),
            at: None,
        }
    }

    /// The deadline, or none; the timer is moved only when it differs from the one set.
    pub fn set(&mut self, at: Option<Instant>) {
        let at = at.map(tokio::time::Instant::from_std);
        if at == self.at {
            return;
        }
        self.at = at;
        if let Some(at) = at {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Fires at the deadline set (at once when it has passed), or never when there is none.
    /// Cancel-safe: it stays armed when the future is dropped.
    pub async fn fired(&mut self) {
        match self.at {
            Some(_) => self.sleep.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

impl Default for Alarm {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Far above any scheduling delay of a busy box; only a hang reaches it.
    const PATIENCE: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn alarm_fires_not_before_its_deadline_and_follows_a_moved_one() {
        let mut alarm = Alarm::new();
        let first = now() + Duration::from_millis(20);
        alarm.set(Some(first));
        tokio::time::timeout(PATIENCE, alarm.fired()).await.unwrap();
        assert!(now() >= first);
        // Unchanged and passed: fires at once, as a fresh sleep_until would.
        tokio::time::timeout(PATIENCE, alarm.fired()).await.unwrap();
        // Moved far out, then back near: the last deadline set counts.
        alarm.set(Some(now() + Duration::from_secs(3600)));
        let near = now() + Duration::from_millis(20);
        alarm.set(Some(near));
        tokio::time::timeout(PATIENCE, alarm.fired()).await.unwrap();
        assert!(now() >= near);
    }

    #[tokio::test]
    async fn alarm_without_a_deadline_never_fires() {
        let mut alarm = Alarm::new();
        alarm.set(Some(now()));
        alarm.set(None);
        let fired = tokio::time::timeout(Duration::from_millis(100), alarm.fired()).await;
        assert!(fired.is_err());
    }
}
