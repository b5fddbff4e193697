//! RFC 4028 session timers, sans-IO: the negotiation of the session interval and its refresher
//! (§7–§9) and, once agreed, the two deadlines of §10 — when the refresher sends its refresh
//! (half the interval) and when the other side gives the session up (the interval less
//! min(32 s, interval/3)). The endpoint decides what a deadline means for its dialog (a
//! re-INVITE or UPDATE, a BYE); this module never sends anything.
//!
//! It is written for both roles a dialog can have: the UAS answering an INVITE
//! ([`answer_request`]) and the UAC reading the 2xx to its INVITE or refresh
//! ([`from_response`]). `refresher=uac`/`uas` name the parties of the transaction that agreed
//! the interval, so [`Agreed::local_refreshes`] is told which side earshot was.

use std::fmt;
use std::time::{Duration, Instant};

use super::message::Headers;

/// RFC 4028 §4: the smallest Min-SE any party may ask for, in seconds.
pub const MIN_SE_FLOOR: u32 = 90;
/// The longest interval earshot keeps, whatever a peer asks (its Min-SE, a 2xx): one day,
/// the longest `[sip].session_expires_secs`, so no deadline lies absurdly far ahead.
pub const MAX_INTERVAL: u32 = 86_400;
/// The option tag (RFC 4028 §3) in Supported and Require.
pub const OPTION_TAG: &str = "timer";

/// earshot's own bounds, from `[sip].session_expires_secs` and `[sip].min_se_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerPolicy {
    /// The interval earshot asks for, and the longest it accepts: a longer one asked by the
    /// peer is reduced to this (§9), never below the peer's Min-SE.
    pub session_expires: u32,
    /// The shortest interval earshot accepts; a shorter Session-Expires gets 422 (§9).
    pub min_se: u32,
}

impl TimerPolicy {
    /// RFC 4028 §7.1: the Session-Expires a UAC puts in its INVITE, with `Supported: timer`
    /// and `Min-SE: min_se`; no refresher, so that the UAS chooses (§7.1 allows either).
    pub fn request_value(&self) -> SessionExpires {
        SessionExpires {
            delta: self.session_expires,
            refresher: None,
        }
    }

    /// RFC 4028 §7.4, the UAC of an INVITE answered 422 (Session Interval Too Small): the
    /// policy of the retry — Session-Expires and Min-SE raised to the 422's Min-SE — or `None`
    /// when the 422 gives no Min-SE, one no larger than what was asked (retrying would loop),
    /// or one beyond [`MAX_INTERVAL`].
    pub fn after_422(&self, response: &Headers) -> Option<TimerPolicy> {
        let wanted = min_se_of(response)?;
        (wanted > self.session_expires && wanted <= MAX_INTERVAL).then_some(TimerPolicy {
            session_expires: wanted,
            min_se: self.min_se.max(wanted),
        })
    }
}

impl Default for TimerPolicy {
    fn default() -> Self {
        Self {
            session_expires: 1800,
            min_se: MIN_SE_FLOOR,
        }
    }
}

/// The `refresher` parameter of Session-Expires: a party of the transaction that agreed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// Which party of a transaction earshot was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Uac,
    Uas,
}

/// A Session-Expires header value (RFC 4028 §4): `delta-seconds [;refresher=uac|uas]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta: u32,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    /// Parses a header value; unknown parameters are ignored, a bad delta or refresher value
    /// is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';');
        let delta = parts.next()?.trim().parse().ok()?;
        let mut refresher = None;
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("refresher") {
                refresher = match value.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => return None,
                };
            }
        }
        Some(Self { delta, refresher })
    }

    /// The Session-Expires of a message (long form or compact `x`), when it parses.
    pub fn of(headers: &Headers) -> Option<Self> {
        headers
            .get("session-expires")
            .or_else(|| headers.get("x"))
            .and_then(Self::parse)
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta)?;
        match self.refresher {
            Some(Refresher::Uac) => f.write_str(";refresher=uac"),
            Some(Refresher::Uas) => f.write_str(";refresher=uas"),
            None => Ok(()),
        }
    }
}

/// The Min-SE of a message (RFC 4028 §5), when present and numeric.
pub fn min_se_of(headers: &Headers) -> Option<u32> {
    let value = headers.get("min-se")?;
    value.split(';').next()?.trim().parse().ok()
}

/// Whether the message lists `timer` in Supported (long form or compact `k`).
pub fn supports_timer(headers: &Headers) -> bool {
    headers
        .values("supported")
        .iter()
        .any(|tag| tag.eq_ignore_ascii_case(OPTION_TAG))
}

/// An agreed session interval and who refreshes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub interval: u32,
    pub refresher: Refresher,
}

impl Agreed {
    /// The Session-Expires header value that states this agreement.
    pub fn header(&self) -> String {
        SessionExpires {
            delta: self.interval,
            refresher: Some(self.refresher),
        }
        .to_string()
    }

    /// §9: a 2xx naming the UAC as refresher carries `Require: timer`.
    pub fn requires_timer(&self) -> bool {
        self.refresher == Refresher::Uac
    }

    /// Whether earshot refreshes, having been `side` of the agreeing transaction.
    pub fn local_refreshes(&self, side: Side) -> bool {
        matches!(
            (self.refresher, side),
            (Refresher::Uac, Side::Uac) | (Refresher::Uas, Side::Uas)
        )
    }
}

/// What a UAS does with the session timer of an INVITE (or refresh) it is about to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasDecision {
    /// Neither asked for nor supported by the peer: no session timer.
    NoTimer,
    /// §9: the interval asked is below our Min-SE: refuse with 422 carrying this Min-SE.
    TooSmall { min_se: u32 },
    /// Accept: the 2xx carries this Session-Expires (and Require: timer when the UAC refreshes).
    Agreed(Agreed),
}

/// RFC 4028 §9, the UAS: the interval is the request's Session-Expires reduced to our
/// `session_expires` (never below the request's Min-SE nor ours), or ours when the peer
/// supports timers without asking; the UAC refreshes only when it supports timers and asked
/// to (`refresher=uac`), otherwise we do.
pub fn answer_request(policy: TimerPolicy, request: &Headers) -> UasDecision {
    let supported = supports_timer(request);
    let asked = SessionExpires::of(request);
    let floor = min_se_of(request)
        .unwrap_or(MIN_SE_FLOOR)
        .max(policy.min_se)
        .min(MAX_INTERVAL);
    let (interval, refresher) = match asked {
        None if !supported => return UasDecision::NoTimer,
        None => (policy.session_expires.max(floor), None),
        Some(se) if se.delta < policy.min_se => {
            return UasDecision::TooSmall {
                min_se: policy.min_se,
            };
        }
        Some(se) => (
            se.delta
                .min(policy.session_expires.max(floor))
                .min(MAX_INTERVAL),
            se.refresher,
        ),
    };
    let refresher = match refresher {
        Some(Refresher::Uac) if supported => Refresher::Uac,
        _ => Refresher::Uas,
    };
    UasDecision::Agreed(Agreed {
        interval,
        refresher,
    })
}

/// RFC 4028 §7.2, the UAC: the agreement a 2xx states, or `None` (no session timer) when it
/// carries no Session-Expires. A 2xx without refresher leaves the refresh to the UAC.
pub fn from_response(response: &Headers) -> Option<Agreed> {
    let se = SessionExpires::of(response)?;
    Some(Agreed {
        interval: se.delta.clamp(1, MAX_INTERVAL),
        refresher: se.refresher.unwrap_or(Refresher::Uac),
    })
}

/// RFC 4028 §7.2/§7.4 with §3, the UAC of a request that asked for a timer: the agreement its
/// 2xx states, or, when the 2xx carries no Session-Expires (a UAS that does not know timers),
/// the interval the request asked for with earshot refreshing it alone (`refresher=uac`).
/// `None` when the request asked for no timer and the 2xx states none.
pub fn uac_agreement(request: &Headers, response: &Headers) -> Option<Agreed> {
    from_response(response).or_else(|| {
        SessionExpires::of(request).map(|asked| Agreed {
            interval: asked.delta.clamp(1, MAX_INTERVAL),
            refresher: Refresher::Uac,
        })
    })
}

/// What a session timer's deadline asks of the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Send a session refresh now (earshot is the refresher).
    Refresh,
    /// No refresh succeeded in time: end the session (BYE).
    Expired,
}

/// A running session timer: the agreement and the deadlines it sets (§10).
#[derive(Debug, Clone)]
pub struct SessionTimer {
    agreed: Agreed,
    local: bool,
    /// When earshot's next refresh is due, while it is the refresher and none is in flight.
    refresh_at: Option<Instant>,
    /// When the session is given up without a refresh.
    expires_at: Instant,
}

impl SessionTimer {
    /// A timer started (or restarted) by a successful refresh at `now`, agreed by a
    /// transaction in which earshot was `side`.
    pub fn new(now: Instant, agreed: Agreed, side: Side) -> Self {
        let interval = Duration::from_secs(u64::from(agreed.interval));
        let local = agreed.local_refreshes(side);
        // §10: the side that does not refresh gives up min(32 s, interval/3) before the end.
        let margin = Duration::from_secs(32).min(interval / 3);
        Self {
            agreed,
            local,
            refresh_at: local.then(|| now + interval / 2),
            expires_at: now + interval.saturating_sub(margin),
        }
    }

    pub fn agreed(&self) -> Agreed {
        self.agreed
    }

    /// Whether earshot is the refresher.
    pub fn is_local_refresher(&self) -> bool {
        self.local
    }

    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(
            self.refresh_at
                .map_or(self.expires_at, |r| r.min(self.expires_at)),
        )
    }

    /// The deadline due at `now`, if any. A refresh is asked for once; a failed refresh is
    /// rescheduled with [`SessionTimer::retry_refresh`].
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TimerAction> {
        if self.expires_at <= now {
            self.refresh_at = None;
            return Some(TimerAction::Expired);
        }
        match self.refresh_at {
            Some(at) if at <= now => {
                self.refresh_at = None;
                Some(TimerAction::Refresh)
            }
            _ => None,
        }
    }

    /// A refresh failed without ending the dialog (a 491, a 5xx...): try again halfway to the
    /// expiry, or not at all when that is under `min_gap` away.
    pub fn retry_refresh(&mut self, now: Instant, min_gap: Duration) {
        let left = self.expires_at.saturating_duration_since(now);
        self.refresh_at = (left / 2 >= min_gap).then(|| now + (left / 2).max(min_gap));
    }

    /// Refresh again at `at` (a 491's back-off, a 422's larger interval).
    pub fn refresh_again_at(&mut self, at: Instant) {
        if self.local {
            self.refresh_at = Some(at.min(self.expires_at));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> Headers {
        Headers::from_lines(lines)
    }

    #[test]
    fn session_expires_parses_delta_and_refresher_and_prints_back() {
        let se = SessionExpires::parse("90 ; Refresher=UAS;x=1").unwrap();
        assert_eq!(se.delta, 90);
        assert_eq!(se.refresher, Some(Refresher::Uas));
        assert_eq!(se.to_string(), "90;refresher=uas");
        assert_eq!(SessionExpires::parse("abc"), None);
        assert_eq!(SessionExpires::parse("90;refresher=me"), None);
        assert_eq!(
            SessionExpires::of(&headers(&[("x", "1800")])).map(|s| s.delta),
            Some(1800)
        );
    }

    #[test]
    fn a_422_raises_the_uac_policy_to_its_min_se_once() {
        let policy = TimerPolicy {
            session_expires: 1800,
            min_se: 90,
        };
        let raised = policy.after_422(&headers(&[("Min-SE", "3600")])).unwrap();
        assert_eq!(
            raised,
            TimerPolicy {
                session_expires: 3600,
                min_se: 3600
            }
        );
        assert_eq!(raised.after_422(&headers(&[("Min-SE", "3600")])), None);
        for bad in ["1800", "90", "x", "86401"] {
            assert_eq!(
                policy.after_422(&headers(&[("Min-SE", bad)])),
                None,
                "{bad}"
            );
        }
        assert_eq!(policy.after_422(&headers(&[])), None);
    }

    #[test]
    fn uas_refuses_an_interval_below_its_min_se_with_422() {
        let policy = TimerPolicy::default();
        let req = headers(&[("Session-Expires", "60"), ("Supported", "timer")]);
        assert_eq!(
            answer_request(policy, &req),
            UasDecision::TooSmall { min_se: 90 }
        );
    }

    #[test]
    fn uas_lets_the_uac_refresh_only_when_it_supports_timers_and_asks() {
        let policy = TimerPolicy::default();
        let asks = headers(&[
            ("Supported", "100rel, timer"),
            ("Session-Expires", "300;refresher=uac"),
        ]);
        assert_eq!(
            answer_request(policy, &asks),
            UasDecision::Agreed(Agreed {
                interval: 300,
                refresher: Refresher::Uac
            })
        );
        // A proxy inserted Session-Expires (§8): the UAC knows nothing of it, so we refresh.
        let proxy = headers(&[("Session-Expires", "300;refresher=uac")]);
        let UasDecision::Agreed(agreed) = answer_request(policy, &proxy) else {
            panic!("agreed")
        };
        assert_eq!(agreed.refresher, Refresher::Uas);
        assert!(agreed.local_refreshes(Side::Uas));
        // Supported without Session-Expires: ours, refreshed by us.
        let supports = headers(&[("k", "timer")]);
        assert_eq!(
            answer_request(policy, &supports),
            UasDecision::Agreed(Agreed {
                interval: 1800,
                refresher: Refresher::Uas
            })
        );
        assert_eq!(
            answer_request(policy, &Headers::new()),
            UasDecision::NoTimer
        );
    }

    #[test]
    fn uas_reduces_a_long_interval_but_not_below_the_peers_min_se() {
        let policy = TimerPolicy {
            session_expires: 600,
            min_se: 90,
        };
        let long = headers(&[("Session-Expires", "7200")]);
        assert_eq!(
            answer_request(policy, &long),
            UasDecision::Agreed(Agreed {
                interval: 600,
                refresher: Refresher::Uas
            })
        );
        let floor = headers(&[("Session-Expires", "7200"), ("Min-SE", "1000")]);
        let UasDecision::Agreed(agreed) = answer_request(policy, &floor) else {
            panic!("agreed")
        };
        assert_eq!(agreed.interval, 1000);
    }

    #[test]
    fn absurd_intervals_from_the_peer_are_capped_at_a_day() {
        let policy = TimerPolicy::default();
        let req = headers(&[("Supported", "timer"), ("Min-SE", "4294967295")]);
        let UasDecision::Agreed(agreed) = answer_request(policy, &req) else {
            panic!("agreed")
        };
        assert_eq!(agreed.interval, MAX_INTERVAL);
        let resp = headers(&[("Session-Expires", "4294967295;refresher=uas")]);
        assert_eq!(from_response(&resp).map(|a| a.interval), Some(MAX_INTERVAL));
        assert_eq!(SessionExpires::parse("99999999999"), None);
    }

    #[test]
    fn refresher_refreshes_at_half_and_the_other_side_expires_early_by_a_third_or_32s() {
        let t0 = Instant::now();
        let agreed = Agreed {
            interval: 90,
            refresher: Refresher::Uas,
        };
        let mut ours = SessionTimer::new(t0, agreed, Side::Uas);
        assert_eq!(ours.poll_timeout(), Some(t0 + Duration::from_secs(45)));
        assert_eq!(ours.handle_timeout(t0 + Duration::from_secs(44)), None);
        assert_eq!(
            ours.handle_timeout(t0 + Duration::from_secs(45)),
            Some(TimerAction::Refresh)
        );
        // 90 - min(32, 30) = 60 s.
        assert_eq!(ours.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        let mut theirs = SessionTimer::new(t0, agreed, Side::Uac);
        assert!(!theirs.is_local_refresher());
        assert_eq!(theirs.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(
            theirs.handle_timeout(t0 + Duration::from_secs(60)),
            Some(TimerAction::Expired)
        );
        let long = SessionTimer::new(
            t0,
            Agreed {
                interval: 1800,
                refresher: Refresher::Uac,
            },
            Side::Uas,
        );
        assert_eq!(long.expires_at(), t0 + Duration::from_secs(1768));
    }

    #[test]
    fn the_uac_keeps_the_2xx_agreement_or_refreshes_alone_when_the_2xx_has_none() {
        let asked = headers(&[("Session-Expires", "1800"), ("Supported", "timer")]);
        let stated = headers(&[("Session-Expires", "90;refresher=uas")]);
        assert_eq!(
            uac_agreement(&asked, &stated),
            Some(Agreed {
                interval: 90,
                refresher: Refresher::Uas
            })
        );
        assert_eq!(
            uac_agreement(&asked, &headers(&[])),
            Some(Agreed {
                interval: 1800,
                refresher: Refresher::Uac
            })
        );
        assert_eq!(uac_agreement(&headers(&[]), &headers(&[])), None);
    }

    #[test]
    fn a_failed_refresh_is_retried_halfway_to_expiry() {
        let t0 = Instant::now();
        let agreed = Agreed {
            interval: 90,
            refresher: Refresher::Uac,
        };
        let mut timer = SessionTimer::new(t0, agreed, Side::Uac);
        assert_eq!(
            timer.handle_timeout(t0 + Duration::from_secs(45)),
            Some(TimerAction::Refresh)
        );
        timer.retry_refresh(t0 + Duration::from_secs(46), Duration::from_secs(2));
        assert_eq!(timer.poll_timeout(), Some(t0 + Duration::from_secs(53)));
        assert_eq!(
            from_response(&headers(&[("Session-Expires", "120")])).map(|a| a.refresher),
            Some(Refresher::Uac)
        );
    }
}
