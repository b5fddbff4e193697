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
