//! One-time stream tokens: what ties a media stream to the webhook that asked for it.
//!
//! The voice webhook is signed by Twilio and tells us the call (CallSid, From, To); the stream
//! that follows arrives on a separate WebSocket. Twilio strips query strings from Stream URLs,
//! so the token travels as a `<Parameter>` and comes back in the stream's `start` message. A
//! token is good once, and only until the handshake deadline; a webhook retried with the same
//! CallSid gets the same token back, so a retry never makes a second call. Entries are
//! remembered for a while after use, for idempotency and for the `action` callback — which,
//! for a call whose stream was closed to transfer it, answers `<Dial>` to the destination kept
//! here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::protocol::CallSid;

/// A stream token: 128 random bits as 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamToken(String);

impl StreamToken {
    /// A token from random bytes the caller drew (the core has no randomness of its own).
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the webhook told us about the call a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub call_sid: CallSid,
    /// `From` (personal data: never logged at info level).
    pub from: String,
    /// `To`.
    pub to: String,
    /// When the webhook arrived: the handshake is timed from here.
    pub webhook_at: Instant,
}

/// The answer to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// A fresh token for a new call.
    New(StreamToken),
    /// A retried webhook: the token already issued for this CallSid.
    Again(StreamToken),
    /// This CallSid already fell back (its handshake timed out): answer the fallback again.
    FellBack,
    /// Too many calls remembered: answer the fallback.
    Full,
}

/// Why a stream's token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown stream token")]
    Unknown,
    #[error("stream token already used")]
    Reused,
    #[error("stream token expired")]
    Expired,
}

/// Where the call of a CallSid stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Waiting for its stream to start.
    Pending,
    /// Its stream started.
    Streaming,
    /// Its stream did not start in time; Twilio is (or will be) told the fallback.
    FellBack,
}

#[derive(Debug)]
struct Entry {
    token: StreamToken,
    ticket: Ticket,
    state: CallState,
    /// Pending: the handshake deadline. Otherwise: when the entry is forgotten.
    until: Instant,
    /// Where the call goes once its stream is over (the `action` callback dials it).
    transfer: Option<String>,
}

/// The tokens of recent webhooks, by CallSid and by token.
#[derive(Debug)]
pub struct TokenBook {
    handshake_timeout: Duration,
    remember: Duration,
    capacity: usize,
    by_sid: HashMap<CallSid, Entry>,
    by_token: HashMap<StreamToken, CallSid>,
}

impl TokenBook {
    /// Tokens expire `handshake_timeout` after their webhook; entries are kept `remember` after
    /// use or expiry; at most `capacity` calls are remembered (bounding memory).
    pub fn new(handshake_timeout: Duration, remember: Duration, capacity: usize) -> Self {
        Self {
            handshake_timeout,
            remember,
            capacity,
            by_sid: HashMap::new(),
            by_token: HashMap::new(),
        }
    }

    /// Issues the token for a webhook, or the one already issued for its CallSid.
    pub fn issue(&mut self, now: Instant, random: [u8; 16], ticket: Ticket) -> Issue {
        self.handle_timeout(now);
        if let Some(entry) = self.by_sid.get(&ticket.call_sid) {
            return match entry.state {
                CallState::Pending | CallState::Streaming => Issue::Again(entry.token.clone()),
                CallState::FellBack => Issue::FellBack,
            };
        }
        if self.by_sid.len() >= self.capacity {
            return Issue::Full;
        }
        let token = StreamToken::from_random(random);
        self.by_token.insert(token.clone(), ticket.call_sid.clone());
        let until = ticket.webhook_at + self.handshake_timeout;
        self.by_sid.insert(
            ticket.call_sid.clone(),
            Entry {
                token: token.clone(),
                ticket,
                state: CallState::Pending,
                until,
                transfer: None,
            },
        );
        Issue::New(token)
    }

    /// Takes a token from a stream's `start`: good once, before its deadline.
    pub fn redeem(&mut self, now: Instant, token: &str) -> Result<Ticket, TokenError> {
        self.handle_timeout(now);
        let key = StreamToken(token.to_owned());
        let sid = self.by_token.get(&key).ok_or(TokenError::Unknown)?;
        let entry = self.by_sid.get_mut(sid).ok_or(TokenError::Unknown)?;
        match entry.state {
            CallState::Pending => {
                entry.state = CallState::Streaming;
                entry.until = now + self.remember;
                Ok(entry.ticket.clone())
            }
            CallState::Streaming => Err(TokenError::Reused),
            CallState::FellBack => Err(TokenError::Expired),
        }
    }

    /// Where the call of `call_sid` stands, if it is remembered.
    pub fn state(&self, call_sid: &CallSid) -> Option<CallState> {
        self.by_sid.get(call_sid).map(|e| e.state)
    }

    /// Remembers that the streaming call of `ticket` goes to `to` once its stream is over, for
    /// `remember` from `now` (the entry is put back if it was already forgotten: a call longer
    /// than `remember`). False when the book is full or the call is not streaming.
    pub fn remember_transfer(
        &mut self,
        now: Instant,
        token: &str,
        ticket: &Ticket,
        to: &str,
    ) -> bool {
        let until = now + self.remember;
        if let Some(entry) = self.by_sid.get_mut(&ticket.call_sid) {
            if entry.state != CallState::Streaming {
                return false;
            }
            entry.transfer = Some(to.to_owned());
            entry.until = until;
            return true;
        }
        if self.by_sid.len() >= self.capacity {
            return false;
        }
        let token = StreamToken(token.to_owned());
        self.by_token.insert(token.clone(), ticket.call_sid.clone());
        self.by_sid.insert(
            ticket.call_sid.clone(),
            Entry {
                token,
                ticket: ticket.clone(),
                state: CallState::Streaming,
                until,
                transfer: Some(to.to_owned()),
            },
        );
        true
    }

    /// Where the call of `call_sid` is to be transferred, if it is.
    pub fn transfer_of(&self, call_sid: &CallSid) -> Option<&str> {
        self.by_sid.get(call_sid)?.transfer.as_deref()
    }

    /// Marks a pending call as fallen back (Twilio gave up on its stream before we did).
    /// Returns its ticket if it was pending.
    pub fn fall_back(&mut self, now: Instant, call_sid: &CallSid) -> Option<Ticket> {
        let entry = self.by_sid.get_mut(call_sid)?;
        (entry.state == CallState::Pending).then(|| {
            entry.state = CallState::FellBack;
            entry.until = now + self.remember;
            entry.ticket.clone()
        })
    }

    /// Calls waiting for their stream (they count against the concurrency limit).
    pub fn pending(&self) -> usize {
        self.by_sid
            .values()
            .filter(|e| e.state == CallState::Pending)
            .count()
    }

    /// Expires pending tokens past their deadline (returned: these calls fell back) and
    /// forgets old entries.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Ticket> {
        let mut expired = Vec::new();
        let remember = self.remember;
        let by_token = &mut self.by_token;
        self.by_sid.retain(|_, entry| {
            if now < entry.until {
                return true;
            }
            if entry.state == CallState::Pending {
                entry.state = CallState::FellBack;
                entry.until = now + remember;
                expired.push(entry.ticket.clone());
                return true;
            }
            by_token.remove(&entry.token);
            false
        });
        expired
    }

    /// The next deadline (a handshake to expire or an entry to forget).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.by_sid.values().map(|e| e.until).min()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Any instant will do: the core only compares the instants it is given.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn ticket(sid: &str, at: Instant) -> Ticket {
        Ticket {
            call_sid: CallSid::parse(sid).unwrap(),
            from: "+15550001111".into(),
            to: "+15550002222".into(),
            webhook_at: at,
        }
    }

    fn book() -> TokenBook {
        TokenBook::new(Duration::from_secs(3), Duration::from_secs(600), 4)
    }

    #[test]
    fn a_token_is_good_once() {
        let t0 = t0();
        let mut book = book();
        let Issue::New(token) = book.issue(t0, [7; 16], ticket("CA1", t0)) else {
            panic!()
        };
        assert_eq!(token.as_str().len(), 32);
        assert_eq!(book.pending(), 1);
        let got = book
            .redeem(t0 + Duration::from_millis(500), token.as_str())
            .unwrap();
        assert_eq!(got.call_sid.as_str(), "CA1");
        assert_eq!(
            book.redeem(t0 + Duration::from_secs(1), token.as_str()),
            Err(TokenError::Reused)
        );
        assert_eq!(book.redeem(t0, "0123"), Err(TokenError::Unknown));
        assert_eq!(
            book.state(&CallSid::parse("CA1").unwrap()),
            Some(CallState::Streaming)
        );
        assert_eq!(book.pending(), 0);
    }

    #[test]
    fn retried_webhook_gets_the_same_token_and_no_second_call() {
        let t0 = t0();
        let mut book = book();
        let Issue::New(token) = book.issue(t0, [1; 16], ticket("CA1", t0)) else {
            panic!()
        };
        let retry = book.issue(
            t0 + Duration::from_secs(1),
            [2; 16],
            ticket("CA1", t0 + Duration::from_secs(1)),
        );
        assert_eq!(retry, Issue::Again(token.clone()));
        book.redeem(t0 + Duration::from_secs(2), token.as_str())
            .unwrap();
        assert_eq!(
            book.issue(t0 + Duration::from_secs(5), [3; 16], ticket("CA1", t0)),
            Issue::Again(token)
        );
    }

    #[test]
    fn unstarted_streams_expire_at_the_handshake_deadline_and_fall_back() {
        let t0 = t0();
        let mut book = book();
        let Issue::New(token) = book.issue(t0, [1; 16], ticket("CA1", t0)) else {
            panic!()
        };
        assert_eq!(book.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        assert!(
            book.handle_timeout(t0 + Duration::from_millis(2999))
                .is_empty()
        );
        let expired = book.handle_timeout(t0 + Duration::from_secs(3));
        assert_eq!(expired.len(), 1);
        assert_eq!(
            book.redeem(t0 + Duration::from_secs(4), token.as_str()),
            Err(TokenError::Expired)
        );
        assert_eq!(
            book.issue(t0 + Duration::from_secs(4), [2; 16], ticket("CA1", t0)),
            Issue::FellBack
        );
        // Forgotten after `remember`.
        book.handle_timeout(t0 + Duration::from_secs(3 + 600));
        assert_eq!(
            book.redeem(t0 + Duration::from_secs(700), token.as_str()),
            Err(TokenError::Unknown)
        );
        assert_eq!(book.state(&CallSid::parse("CA1").unwrap()), None);
    }

    #[test]
    fn capacity_bounds_memory() {
        let t0 = t0();
        let mut book = book();
        for i in 0..4 {
            assert!(matches!(
                book.issue(t0, [i; 16], ticket(&format!("CA{i}"), t0)),
                Issue::New(_)
            ));
        }
        assert_eq!(book.issue(t0, [9; 16], ticket("CA9", t0)), Issue::Full);
    }

    #[test]
    fn action_callback_falls_back_a_pending_call_once() {
        let t0 = t0();
        let mut book = book();
        book.issue(t0, [1; 16], ticket("CA1", t0));
        let sid = CallSid::parse("CA1").unwrap();
        assert!(book.fall_back(t0, &sid).is_some());
        assert!(book.fall_back(t0, &sid).is_none());
        assert_eq!(book.state(&sid), Some(CallState::FellBack));
    }

    #[test]
    fn a_transfer_is_kept_for_the_action_callback_even_after_a_long_call() {
        let t0 = t0();
        let mut book = book();
        let Issue::New(token) = book.issue(t0, [1; 16], ticket("CA1", t0)) else {
            panic!()
        };
        let sid = CallSid::parse("CA1").unwrap();
        let t = ticket("CA1", t0);
        assert!(!book.remember_transfer(t0, token.as_str(), &t, "+15551234567"));
        book.redeem(t0, token.as_str()).unwrap();
        assert_eq!(book.transfer_of(&sid), None);
        assert!(book.remember_transfer(t0, token.as_str(), &t, "+15551234567"));
        assert_eq!(book.transfer_of(&sid), Some("+15551234567"));
        // A call longer than `remember` was forgotten: the transfer puts it back, streaming.
        book.handle_timeout(t0 + Duration::from_secs(601));
        assert_eq!(book.state(&sid), None);
        let later = t0 + Duration::from_secs(700);
        assert!(book.remember_transfer(later, token.as_str(), &t, "sip:bob@pbx"));
        assert_eq!(book.state(&sid), Some(CallState::Streaming));
        assert_eq!(book.transfer_of(&sid), Some("sip:bob@pbx"));
        assert_eq!(book.redeem(later, token.as_str()), Err(TokenError::Reused));
    }
}
