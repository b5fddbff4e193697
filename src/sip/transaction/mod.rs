//! RFC 3261 §17 transactions: the four state machines and their timers, as data.
//!
//! A transaction never sends anything itself. Each state machine takes the time and an input
//! (a retransmitted request, a response from the transaction user, a timer firing) and answers
//! with [`Action`]s for the endpoint to carry out. Timers are a small table of
//! `Option<Instant>`; the next deadline is the minimum.
//!
//! Around them: `table`, the bounded map of server transactions with its timer heap, and
//! `limit`, per-source token buckets that keep one source from creating transactions (or
//! drawing responses) without bound.

mod client;
pub mod limit;
mod server;
mod table;

pub use client::{ClientInvite, ClientNonInvite, Delivery};
pub use limit::SourceLimiter;
pub use server::{ServerInvite, ServerNonInvite};
pub use table::{Overload, Table, Timed};

use std::time::{Duration, Instant};

/// RFC 3261 §17.1.1.1: round-trip time estimate.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: maximum retransmit interval for non-INVITE requests and INVITE responses.
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 §17.1.2.2: maximum duration a message will remain in the network.
pub const T4: Duration = Duration::from_secs(5);
/// 64·T1: the transaction timeout (timers B, F, H) and the wait for an ACK to a 2xx.
pub const TIMEOUT: Duration = Duration::from_secs(32);

/// The timers of RFC 3261 §17 (Table 4 of §A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// INVITE request retransmit (client, UDP only).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Wait time for response retransmits (client INVITE).
    D,
    /// Non-INVITE request retransmit (client, UDP only).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE response retransmit (server, UDP only).
    G,
    /// Wait time for ACK receipt (server INVITE).
    H,
    /// Wait time for ACK retransmits (server INVITE).
    I,
    /// Wait time for non-INVITE request retransmits (server).
    J,
    /// Wait time for response retransmits (client non-INVITE).
    K,
    /// RFC 6026 §8.7: wait in Accepted for retransmitted INVITEs after a 2xx.
    L,
}

/// What a transaction asks its endpoint to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes again (a retransmission) to the transaction's peer.
    Retransmit(Vec<u8>),
    /// A client transaction gave up waiting: report a timeout (a local 408) to the TU.
    TimedOut,
    /// The server INVITE transaction gave up waiting for an ACK (timer H).
    AckTimeout,
    /// The transaction is over and can be forgotten.
    Terminated,
}

/// The armed timers of one transaction. Each entry is its deadline; `None` is disarmed.
#[derive(Debug, Clone, Default)]
struct Timers {
    armed: Vec<(Timer, Instant)>,
}

impl Timers {
    fn set(&mut self, timer: Timer, at: Instant) {
        self.cancel(timer);
        self.armed.push((timer, at));
    }

    fn cancel(&mut self, timer: Timer) {
        self.armed.retain(|(t, _)| *t != timer);
    }

    fn clear(&mut self) {
        self.armed.clear();
    }

    fn next(&self) -> Option<Instant> {
        self.armed.iter().map(|(_, at)| *at).min()
    }

    /// Removes and returns the earliest timer due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (idx, _) = self
            .armed
            .iter()
            .enumerate()
            .filter(|(_, (_, at))| *at <= now)
            .min_by_key(|(_, (_, at))| *at)?;
        Some(self.armed.swap_remove(idx).0)
    }
}

/// Doubles a retransmit interval, capped at `cap` (RFC 3261 §17.1.2.2 and §17.2.1).
fn backoff(interval: Duration, cap: Duration) -> Duration {
    (interval * 2).min(cap)
}
