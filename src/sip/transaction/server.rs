//! RFC 3261 §17.2 server transactions: INVITE (§17.2.1, with RFC 6026's Accepted state) and
//! non-INVITE (§17.2.2).

use std::time::{Duration, Instant};

use super::{Action, T1, T2, T4, TIMEOUT, Timer, Timers, backoff};

/// The INVITE server transaction (RFC 3261 §17.2.1, Figure 7, amended by RFC 6026 §7.1).
#[derive(Debug)]
pub struct ServerInvite {
    state: ServerInviteState,
    timers: Timers,
    /// TCP needs no retransmissions and no Confirmed wait (timer I is zero).
    reliable: bool,
}

#[derive(Debug)]
enum ServerInviteState {
    /// Provisional responses may be sent; a retransmitted INVITE gets the last one again.
    Proceeding {
        last: Option<Vec<u8>>,
    },
    /// A 3xx–6xx was sent; it is retransmitted (timer G) until the ACK arrives or timer H.
    Completed {
        response: Vec<u8>,
        interval: Duration,
    },
    /// The ACK arrived; absorb ACK retransmits until timer I.
    Confirmed,
    /// RFC 6026: a 2xx was sent; the TU retransmits it. Absorb INVITE retransmits until timer L.
    Accepted,
    Terminated,
}

impl ServerInvite {
    /// A new transaction for a received INVITE. The TU is expected to send 100 Trying at once.
    pub fn new(reliable: bool) -> Self {
        Self {
            state: ServerInviteState::Proceeding { last: None },
            timers: Timers::default(),
            reliable,
        }
    }

    /// The INVITE arrived again: what to resend, if anything (§17.2.1 "retransmission ... the
    /// most recent provisional response").
    pub fn on_request_retransmit(&self) -> Option<Vec<u8>> {
        match &self.state {
            ServerInviteState::Proceeding { last } => last.clone(),
            ServerInviteState::Completed { response, .. } => Some(response.clone()),
            _ => None,
        }
    }

    /// The TU sends a response with this status; `bytes` is what went on the wire.
    pub fn on_response(&mut self, now: Instant, status: u16, bytes: &[u8]) {
        if !matches!(self.state, ServerInviteState::Proceeding { .. }) {
            return;
        }
        match status {
            100..=199 => {
                self.state = ServerInviteState::Proceeding {
                    last: Some(bytes.to_vec()),
                }
            }
            200..=299 => {
                self.state = ServerInviteState::Accepted;
                self.timers.set(Timer::L, now + TIMEOUT);
            }
            _ => {
                self.state = ServerInviteState::Completed {
                    response: bytes.to_vec(),
                    interval: T1,
                };
                if !self.reliable {
                    self.timers.set(Timer::G, now + T1);
                }
                self.timers.set(Timer::H, now + TIMEOUT);
            }
        }
    }

    /// An ACK matched this transaction (only a non-2xx final response is ACKed here).
    /// Returns true when the ACK belongs to the transaction (and is absorbed).
    pub fn on_ack(&mut self, now: Instant) -> bool {
        match self.state {
            ServerInviteState::Completed { .. } => {
                self.timers.clear();
                if self.reliable {
                    self.state = ServerInviteState::Terminated;
                } else {
                    self.state = ServerInviteState::Confirmed;
                    self.timers.set(Timer::I, now + T4);
                }
                true
            }
            ServerInviteState::Confirmed => true,
            _ => false,
        }
    }

    /// True once a final response has been sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, ServerInviteState::Proceeding { .. })
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, ServerInviteState::Terminated)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        let timer = self.timers.pop_due(now)?;
        match (timer, &mut self.state) {
            (Timer::G, ServerInviteState::Completed { response, interval }) => {
                *interval = backoff(*interval, T2);
                self.timers.set(Timer::G, now + *interval);
                Some(Action::Retransmit(response.clone()))
            }
            (Timer::H, _) => {
                self.state = ServerInviteState::Terminated;
                self.timers.clear();
                Some(Action::AckTimeout)
            }
            (Timer::I | Timer::L, _) => {
                self.state = ServerInviteState::Terminated;
                self.timers.clear();
                Some(Action::Terminated)
            }
            _ => None,
        }
    }
}

/// The non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8).
#[derive(Debug)]
pub struct ServerNonInvite {
    /// The last response sent, resent when the request is retransmitted.
    last: Option<Vec<u8>>,
    completed: bool,
    terminated: bool,
    timers: Timers,
    reliable: bool,
}

impl ServerNonInvite {
    pub fn new(reliable: bool) -> Self {
        Self {
            last: None,
            completed: false,
            terminated: false,
            timers: Timers::default(),
            reliable,
        }
    }

    pub fn on_request_retransmit(&self) -> Option<Vec<u8>> {
        self.last.clone()
    }

    pub fn on_response(&mut self, now: Instant, status: u16, bytes: &[u8]) {
        if self.completed {
            return;
        }
        self.last = Some(bytes.to_vec());
        if status >= 200 {
            self.completed = true;
            if self.reliable {
                self.terminated = true;
            } else {
                self.timers.set(Timer::J, now + TIMEOUT);
            }
        }
    }

    pub fn is_terminated(&self) -> bool {
        self.terminated
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        match self.timers.pop_due(now)? {
            Timer::J => {
                self.terminated = true;
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
    fn retransmits_final_error_response_until_ack_then_absorbs_acks() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(false);
        tx.on_response(t0, 100, b"100");
        assert_eq!(tx.on_request_retransmit(), Some(b"100".to_vec()));
        tx.on_response(t0, 486, b"486");
        assert_eq!(tx.poll_timeout(), Some(t0 + T1));
        assert_eq!(
            tx.handle_timeout(t0 + T1),
            Some(Action::Retransmit(b"486".to_vec()))
        );
        // G doubles: 1 s after the first retransmission.
        assert_eq!(tx.poll_timeout(), Some(t0 + T1 + 2 * T1));
        assert_eq!(tx.on_request_retransmit(), Some(b"486".to_vec()));
        assert!(tx.on_ack(t0 + Duration::from_secs(2)));
        assert!(
            tx.on_ack(t0 + Duration::from_secs(3)),
            "ACK retransmits are absorbed"
        );
        assert_eq!(
            tx.handle_timeout(t0 + Duration::from_secs(2) + T4),
            Some(Action::Terminated)
        );
        assert!(tx.is_terminated());
    }

    #[test]
    fn timer_g_caps_at_t2() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(false);
        tx.on_response(t0, 500, b"500");
        let mut now = t0;
        let mut intervals = vec![];
        while let Some(at) = tx.poll_timeout() {
            if at >= t0 + TIMEOUT {
                break;
            }
            intervals.push(at - now);
            now = at;
            tx.handle_timeout(now);
        }
        assert_eq!(intervals[..5], [T1, T1 * 2, T1 * 4, T2, T2]);
    }

    #[test]
    fn lost_ack_ends_in_timer_h() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(false);
        tx.on_response(t0, 603, b"603");
        let mut last = None;
        while let Some(at) = tx.poll_timeout() {
            last = tx.handle_timeout(at);
            if tx.is_terminated() {
                break;
            }
        }
        assert_eq!(last, Some(Action::AckTimeout));
    }

    #[test]
    fn reliable_transport_never_retransmits() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(true);
        tx.on_response(t0, 486, b"486");
        assert_eq!(tx.poll_timeout(), Some(t0 + TIMEOUT));
        assert!(tx.on_ack(t0));
        assert!(tx.is_terminated());
    }

    #[test]
    fn accepted_absorbs_invite_retransmits_until_timer_l() {
        let t0 = Instant::now();
        let mut tx = ServerInvite::new(false);
        tx.on_response(t0, 200, b"200");
        assert_eq!(
            tx.on_request_retransmit(),
            None,
            "the TU retransmits 2xx, not the transaction"
        );
        assert!(
            !tx.on_ack(t0),
            "an ACK to a 2xx is a new transaction, for the dialog"
        );
        assert_eq!(tx.handle_timeout(t0 + TIMEOUT), Some(Action::Terminated));
    }

    #[test]
    fn non_invite_resends_last_response_and_ends_after_timer_j() {
        let t0 = Instant::now();
        let mut tx = ServerNonInvite::new(false);
        assert_eq!(tx.on_request_retransmit(), None);
        tx.on_response(t0, 200, b"200");
        assert_eq!(tx.on_request_retransmit(), Some(b"200".to_vec()));
        tx.on_response(t0, 500, b"500");
        assert_eq!(
            tx.on_request_retransmit(),
            Some(b"200".to_vec()),
            "final response is final"
        );
        assert_eq!(tx.handle_timeout(t0 + TIMEOUT), Some(Action::Terminated));
    }
}
