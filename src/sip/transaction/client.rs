//! RFC 3261 §17.1 client transactions: INVITE (§17.1.1) and non-INVITE (§17.1.2).

use std::time::{Duration, Instant};

use super::{Action, T1, T2, T4, TIMEOUT, Timer, Timers, backoff};

/// What a client transaction tells its TU about a received response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Pass the response up to the TU.
    Deliver,
    /// A retransmission of a final response already delivered: absorb it.
    Absorb,
}

/// The non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6).
#[derive(Debug)]
pub struct ClientNonInvite {
    request: Vec<u8>,
    interval: Duration,
    state: NonInviteState,
    timers: Timers,
    reliable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonInviteState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl ClientNonInvite {
    /// Starts the transaction; `request` has just been sent.
    pub fn new(now: Instant, request: Vec<u8>, reliable: bool) -> Self {
        let mut timers = Timers::default();
        if !reliable {
            timers.set(Timer::E, now + T1);
        }
        timers.set(Timer::F, now + TIMEOUT);
        Self {
            request,
            interval: T1,
            state: NonInviteState::Trying,
            timers,
            reliable,
        }
    }

    pub fn on_response(&mut self, now: Instant, status: u16) -> Delivery {
        match (self.state, status) {
            (NonInviteState::Trying | NonInviteState::Proceeding, 100..=199) => {
                self.state = NonInviteState::Proceeding;
                Delivery::Deliver
            }
            (NonInviteState::Trying | NonInviteState::Proceeding, _) => {
                self.timers.clear();
                if self.reliable {
                    self.state = NonInviteState::Terminated;
                } else {
                    self.state = NonInviteState::Completed;
                    self.timers.set(Timer::K, now + T4);
                }
                Delivery::Deliver
            }
            _ => Delivery::Absorb,
        }
    }

    pub fn is_terminated(&self) -> bool {
        self.state == NonInviteState::Terminated
    }

    /// True once a final response arrived: only retransmissions are left to absorb.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            NonInviteState::Completed | NonInviteState::Terminated
        )
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        match self.timers.pop_due(now)? {
            Timer::E => {
                // §17.1.2.2: in Proceeding the interval is T2 from then on.
                self.interval = match self.state {
                    NonInviteState::Proceeding => T2,
                    _ => backoff(self.interval, T2),
                };
                self.timers.set(Timer::E, now + self.interval);
                Some(Action::Retransmit(self.request.clone()))
            }
            Timer::F => {
                self.state = NonInviteState::Terminated;
                self.timers.clear();
                Some(Action::TimedOut)
            }
            Timer::K => {
                self.state = NonInviteState::Terminated;
                Some(Action::Terminated)
            }
            _ => None,
        }
    }
}

/// The INVITE client transaction (RFC 3261 §17.1.1, Figure 5, with RFC 6026's Accepted state).
#[derive(Debug)]
pub struct ClientInvite {
    request: Vec<u8>,
    interval: Duration,
    state: InviteState,
    timers: Timers,
    reliable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InviteState {
    Calling,
    Proceeding,
    /// A non-2xx final arrived and was ACKed; absorb its retransmits until timer D.
    Completed,
    /// RFC 6026: a 2xx arrived; further 2xx go to the TU (which ACKs each) until timer M (=L).
    Accepted,
    Terminated,
}

impl ClientInvite {
    pub fn new(now: Instant, request: Vec<u8>, reliable: bool) -> Self {
        let mut timers = Timers::default();
        if !reliable {
            timers.set(Timer::A, now + T1);
        }
        timers.set(Timer::B, now + TIMEOUT);
        Self {
            request,
            interval: T1,
            state: InviteState::Calling,
            timers,
            reliable,
        }
    }

    /// A response arrived. For a non-2xx final response the caller must send (or resend) the
    /// transaction's ACK, built per §17.1.1.3.
    pub fn on_response(&mut self, now: Instant, status: u16) -> Delivery {
        match (self.state, status) {
            (InviteState::Calling | InviteState::Proceeding, 100..=199) => {
                // §17.1.1.2: timers A and B run in Calling only; in Proceeding the TU decides
                // how long to wait (a ring timeout, then CANCEL).
                self.timers.cancel(Timer::A);
                self.timers.cancel(Timer::B);
                self.state = InviteState::Proceeding;
                Delivery::Deliver
            }
            (InviteState::Calling | InviteState::Proceeding, 200..=299) => {
                self.timers.clear();
                self.state = InviteState::Accepted;
                self.timers.set(Timer::L, now + TIMEOUT);
                Delivery::Deliver
            }
            (InviteState::Accepted, 200..=299) => Delivery::Deliver,
            (InviteState::Calling | InviteState::Proceeding, _) => {
                self.timers.clear();
                self.state = InviteState::Completed;
                let wait = if self.reliable {
                    Duration::ZERO
                } else {
                    Duration::from_secs(32)
                };
                self.timers.set(Timer::D, now + wait);
                Delivery::Deliver
            }
            _ => Delivery::Absorb,
        }
    }

    pub fn is_terminated(&self) -> bool {
        self.state == InviteState::Terminated
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        match self.timers.pop_due(now)? {
            Timer::A => {
                self.interval *= 2;
                self.timers.set(Timer::A, now + self.interval);
                Some(Action::Retransmit(self.request.clone()))
            }
            Timer::B => {
                self.state = InviteState::Terminated;
                self.timers.clear();
                Some(Action::TimedOut)
            }
            Timer::D | Timer::L => {
                self.state = InviteState::Terminated;
                self.timers.clear();
                Some(Action::Terminated)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn non_invite_retransmits_with_backoff_then_times_out_with_timer_f() {
        let t0 = Instant::now();
        let mut tx = ClientNonInvite::new(t0, b"REGISTER".to_vec(), false);
        let mut sends = vec![];
        while let Some(at) = tx.poll_timeout() {
            match tx.handle_timeout(at) {
                Some(Action::Retransmit(_)) => sends.push(at - t0),
                Some(Action::TimedOut) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms[..6], [500, 1500, 3500, 7500, 11500, 15500]);
        assert!(tx.is_terminated());
    }

    #[test]
    fn non_invite_absorbs_retransmitted_final_in_completed() {
        let t0 = Instant::now();
        let mut tx = ClientNonInvite::new(t0, b"BYE".to_vec(), false);
        assert_eq!(tx.on_response(t0, 200), Delivery::Deliver);
        assert_eq!(tx.on_response(t0, 200), Delivery::Absorb);
        assert_eq!(tx.handle_timeout(t0 + T4), Some(Action::Terminated));
    }

    #[test]
    fn proceeding_non_invite_retransmits_every_t2() {
        let t0 = Instant::now();
        let mut tx = ClientNonInvite::new(t0, b"BYE".to_vec(), false);
        tx.on_response(t0, 100);
        assert!(tx.handle_timeout(t0 + T1).is_some());
        assert_eq!(tx.poll_timeout(), Some(t0 + T1 + T2));
    }

    #[test]
    fn invite_retransmits_until_provisional_then_waits() {
        let t0 = Instant::now();
        let mut tx = ClientInvite::new(t0, b"INVITE".to_vec(), false);
        assert_eq!(
            tx.handle_timeout(t0 + T1),
            Some(Action::Retransmit(b"INVITE".to_vec()))
        );
        assert_eq!(tx.poll_timeout(), Some(t0 + T1 * 3));
        tx.on_response(t0 + T1, 180);
        assert_eq!(
            tx.poll_timeout(),
            None,
            "no timer in Proceeding: the TU's ring timeout decides"
        );
        assert_eq!(tx.on_response(t0 + T1, 486), Delivery::Deliver);
        assert_eq!(tx.on_response(t0 + T1, 486), Delivery::Absorb);
    }
}
