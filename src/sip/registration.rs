//! RFC 3261 §10 registration with a trunk's registrar: REGISTER with digest authentication
//! (§22.2, RFC 8760), refresh before expiry, backoff on failure, and unregistration.
//!
//! One [`Registration`] per configured trunk. It owns no transaction: the endpoint sends what
//! [`Registration::request`] asks for and reports each final response back, matched by the
//! registration's Call-ID and the CSeq of its latest REGISTER (a response to an older one is
//! ignored).
//!
//! Retries follow one schedule, written here as data: a failure waits 5 s, doubling to 5 min
//! (or the registrar's Retry-After, capped the same); answers that would make a loop — a
//! `stale=true` challenge (RFC 7616 §3.3) or `423 Interval Too Brief` (§10.2.8, §10.3) — are
//! retried at once the first time, then after 1 s, doubling to 5 min, until a 2xx. A 423
//! without a usable Min-Expires (missing, not a number, or 0) gives up until the next reload
//! ([`RegFailure`]). Unregistration (Expires: 0, on shutdown or when a reload drops the trunk)
//! answers one challenge and gives up after [`UNREGISTER_TIMEOUT`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::{self, Challenge, Credentials};
use super::dialog::Transport;
use super::message::{Headers, Method, NameAddr, Request, Response, Uri};

/// A trunk that needs registration, resolved by the driver.
#[derive(Debug, Clone)]
pub struct TrunkRegistration {
    /// The trunk's configured name, for logs and events.
    pub name: String,
    /// The registrar's resolved address.
    pub registrar: SocketAddr,
    pub transport: Transport,
    /// The AOR domain (Request-URI and To/From host).
    pub domain: String,
    /// The AOR user.
    pub username: String,
    /// Digest username when it differs from the AOR user.
    pub auth_username: String,
    pub password: String,
    /// Requested registration lifetime.
    pub expires: u32,
    /// User part of our Contact.
    pub contact_user: String,
}

/// What a registration is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// Waiting to send the first REGISTER, or a retry after a failure.
    Waiting { attempt_at: Instant },
    /// A REGISTER is in flight.
    Pending,
    /// Bound until `expires_at`; refreshed at `refresh_at`.
    Registered {
        refresh_at: Instant,
        expires_at: Instant,
    },
    /// Unbinding (shutdown, or the trunk left the configuration): an Expires: 0 REGISTER is
    /// due now (`due`) or in flight; abandoned at `give_up_at`.
    Unregistering { give_up_at: Instant, due: bool },
    /// Done: unregistered.
    Stopped,
    /// Given up until the configuration is reloaded.
    Failed(RegFailure),
}

/// Why a registration gave up for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegFailure {
    /// 423 without a Min-Expires header (§20.23 requires one).
    MinExpiresMissing,
    /// 423 whose Min-Expires is not a delta-seconds value.
    MinExpiresInvalid,
    /// 423 with Min-Expires: 0, which no retry can satisfy.
    MinExpiresZero,
}

/// The result of a final response, for events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOutcome {
    Registered {
        expires: u32,
    },
    /// Challenged: the request is sent again with credentials after `retry_in`.
    Challenged {
        stale: bool,
        retry_in: Duration,
    },
    /// 423: the request is sent again with `min_expires` after `retry_in`.
    IntervalTooBrief {
        min_expires: u32,
        retry_in: Duration,
    },
    Failed {
        status: u16,
        retry_in: Duration,
    },
    /// No more REGISTERs until the configuration is reloaded.
    GaveUp {
        status: u16,
        reason: RegFailure,
    },
    Unregistered,
    /// The Expires: 0 REGISTER was refused, or never answered (408); the binding will lapse
    /// at its expiry.
    UnregisterFailed {
        status: u16,
    },
}

/// An exponential retry schedule: the `n`-th consecutive retry (from 1) waits
/// `first · 2^(n-1)`, at most `max`; with `immediate_first`, the first retry does not wait.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub immediate_first: bool,
}

impl Backoff {
    pub fn delay(&self, n: u32) -> Duration {
        let n = if self.immediate_first {
            if n <= 1 {
                return Duration::ZERO;
            }
            n - 1
        } else {
            n.max(1)
        };
        self.first
            .saturating_mul(1 << (n - 1).min(16))
            .min(self.max)
    }
}

/// After a failure (error status, no answer).
pub const FAILURE_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(5),
    max: Duration::from_secs(300),
    immediate_first: false,
};
/// After answers that loop without a failure: stale challenges and 423s.
pub const LOOP_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(300),
    immediate_first: true,
};
/// How long an unregistration may take before the registration is dropped anyway.
pub const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Registration {
    pub trunk: TrunkRegistration,
    pub state: RegState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The registrar's last challenge, and whether it came as 407 (Proxy-Authorization).
    challenge: Option<(Challenge, bool)>,
    /// Nonce count for the current challenge (RFC 7616 §3.4: one increment per use).
    nc: u32,
    /// Challenges answered in a row without success; a second one that is not stale fails.
    auth_rounds: u32,
    failures: u32,
    /// Stale challenges and 423s since the last 2xx ([`LOOP_BACKOFF`]).
    loops: u32,
    /// Set when the next REGISTER must unregister (Expires: 0).
    unregister: bool,
    /// The trunk left the configuration: drop this registration once it is finished.
    pub retired: bool,
}

impl Registration {
    pub fn new(trunk: TrunkRegistration, now: Instant, call_id: String, from_tag: String) -> Self {
        Self {
            trunk,
            state: RegState::Waiting { attempt_at: now },
            call_id,
            from_tag,
            cseq: 0,
            challenge: None,
            nc: 0,
            auth_rounds: 0,
            failures: 0,
            loops: 0,
            unregister: false,
            retired: false,
        }
    }

    /// The Call-ID of every REGISTER of this registration (§10.2: the same for all of them):
    /// what the endpoint keys its REGISTER transactions by.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whether a final response to the REGISTER with this CSeq is for the latest request.
    pub fn is_current(&self, cseq: u32) -> bool {
        cseq == self.cseq
    }

    /// When this registration next needs the endpoint's attention.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            RegState::Waiting { attempt_at } => Some(attempt_at),
            RegState::Registered { refresh_at, .. } => Some(refresh_at),
            RegState::Unregistering { give_up_at, .. } => Some(give_up_at),
            _ => None,
        }
    }

    /// Whether a REGISTER is due now.
    pub fn is_due(&self, now: Instant) -> bool {
        match self.state {
            RegState::Unregistering { due, give_up_at } => due && now < give_up_at,
            _ => self.poll_timeout().is_some_and(|at| at <= now),
        }
    }

    pub fn is_unregistering(&self) -> bool {
        matches!(self.state, RegState::Unregistering { .. })
    }

    /// Stopped or given up: nothing more will be sent.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, RegState::Stopped | RegState::Failed(_))
    }

    /// Begins unregistration: true when a REGISTER with Expires: 0 is now due (the trunk is
    /// bound, or a REGISTER that may bind it is in flight).
    pub fn start_unregister(&mut self, now: Instant) -> bool {
        if self.is_unregistering() || self.is_finished() {
            return false;
        }
        let bound = matches!(self.state, RegState::Registered { .. } | RegState::Pending);
        self.unregister = true;
        self.auth_rounds = 0;
        self.state = if bound {
            RegState::Unregistering {
                give_up_at: now + UNREGISTER_TIMEOUT,
                due: true,
            }
        } else {
            RegState::Stopped
        };
        bound
    }

    /// A reload kept this trunk: a registration that had given up starts again.
    pub fn restart_if_failed(&mut self, now: Instant) {
        if matches!(self.state, RegState::Failed(_)) {
            self.failures = 0;
            self.loops = 0;
            self.state = RegState::Waiting { attempt_at: now };
        }
    }

    /// An unregistration past its deadline is abandoned.
    pub fn expire(&mut self, now: Instant) -> Option<RegOutcome> {
        match self.state {
            RegState::Unregistering { give_up_at, .. } if give_up_at <= now => {
                self.state = RegState::Stopped;
                Some(RegOutcome::UnregisterFailed { status: 408 })
            }
            _ => None,
        }
    }

    /// The REGISTER to send now; `contact` is our advertised host:port and `cnonce` fresh
    /// randomness for digest.
    pub fn request(&mut self, contact: &str, cnonce: &str) -> Request {
        self.cseq = self.cseq.wrapping_add(1);
        self.state = match self.state {
            RegState::Unregistering { give_up_at, .. } => RegState::Unregistering {
                give_up_at,
                due: false,
            },
            _ => RegState::Pending,
        };
        let t = &self.trunk;
        let registrar_uri = format!("sip:{}", t.domain);
        let aor = format!("<sip:{}@{}>", t.username, t.domain);
        let transport = match t.transport {
            Transport::Udp => "",
            Transport::Tcp(_) => ";transport=tcp",
        };
        let expires = if self.unregister { 0 } else { t.expires };
        let mut headers = Headers::default();
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{aor};tag={}", self.from_tag));
        headers.push("To", aor);
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{} REGISTER", self.cseq));
        headers.push(
            "Contact",
            format!("<sip:{}@{contact}{transport}>", t.contact_user),
        );
        headers.push("Expires", expires.to_string());
        if let Some((ch, proxy)) = &self.challenge {
            self.nc += 1;
            let creds = Credentials {
                username: &t.auth_username,
                password: &t.password,
            };
            let value =
                auth::authorization(ch, &creds, "REGISTER", &registrar_uri, cnonce, self.nc);
            headers.push(
                if *proxy {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                },
                value,
            );
        }
        let uri = Uri::parse(&registrar_uri).unwrap_or_else(|_| Uri {
            scheme: "sip".into(),
            user: None,
            password: None,
            host: t.registrar.ip().to_string(),
            port: Some(t.registrar.port()),
            params: Vec::new(),
            headers: Vec::new(),
        });
        Request {
            method: Method::Register,
            uri,
            headers,
            body: Vec::new(),
        }
    }

    /// A final response to our latest REGISTER arrived (the endpoint checks
    /// [`Registration::is_current`] first). Says what happened; the state says when the next
    /// REGISTER is due.
    pub fn on_response(&mut self, now: Instant, response: &Response) -> RegOutcome {
        let status = response.status;
        if self.unregister {
            return self.on_unregister_response(response);
        }
        match status {
            200..=299 => {
                self.failures = 0;
                self.auth_rounds = 0;
                self.loops = 0;
                let expires = granted_expires(&response.headers, &self.trunk.contact_user)
                    .unwrap_or(self.trunk.expires)
                    .max(1);
                // Refresh at half-life, so one lost refresh still leaves time for a retry.
                let lifetime = Duration::from_secs(u64::from(expires));
                self.state = RegState::Registered {
                    refresh_at: now + lifetime / 2,
                    expires_at: now + lifetime,
                };
                RegOutcome::Registered { expires }
            }
            401 | 407 => match self.take_challenge(response) {
                Some(stale) => {
                    let retry_in = if stale {
                        self.loop_delay()
                    } else {
                        Duration::ZERO
                    };
                    self.state = RegState::Waiting {
                        attempt_at: now + retry_in,
                    };
                    RegOutcome::Challenged { stale, retry_in }
                }
                None => self.fail(now, status, None),
            },
            423 => match min_expires(&response.headers) {
                Ok(min) => {
                    // §10.2.8: retry with at least the registrar's minimum.
                    self.trunk.expires = self.trunk.expires.max(min);
                    let retry_in = self.loop_delay();
                    self.state = RegState::Waiting {
                        attempt_at: now + retry_in,
                    };
                    RegOutcome::IntervalTooBrief {
                        min_expires: self.trunk.expires,
                        retry_in,
                    }
                }
                Err(reason) => {
                    self.challenge = None;
                    self.state = RegState::Failed(reason);
                    RegOutcome::GaveUp { status, reason }
                }
            },
            _ => {
                let retry_after = response
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                    .map(Duration::from_secs);
                self.fail(now, status, retry_after)
            }
        }
    }

    /// A 401/407: keeps its challenge for the next REGISTER. `Some(stale)` when it is to be
    /// answered (the first in a row, or a stale nonce), `None` when the credentials were
    /// refused.
    fn take_challenge(&mut self, response: &Response) -> Option<bool> {
        let proxy = response.status == 407;
        let header = if proxy {
            "proxy-authenticate"
        } else {
            "www-authenticate"
        };
        let ch = Challenge::pick_best(response.headers.get_all(header)).ok()?;
        if self.auth_rounds > 0 && !ch.stale {
            return None;
        }
        let stale = ch.stale;
        self.auth_rounds += 1;
        self.nc = 0;
        self.challenge = Some((ch, proxy));
        Some(stale)
    }

    /// The next wait of [`LOOP_BACKOFF`].
    fn loop_delay(&mut self) -> Duration {
        self.loops = self.loops.saturating_add(1);
        LOOP_BACKOFF.delay(self.loops)
    }

    fn on_unregister_response(&mut self, response: &Response) -> RegOutcome {
        let status = response.status;
        let give_up_at = match self.state {
            RegState::Unregistering { give_up_at, .. } => give_up_at,
            _ => {
                self.state = RegState::Stopped;
                return RegOutcome::Unregistered;
            }
        };
        match status {
            200..=299 => {
                self.state = RegState::Stopped;
                RegOutcome::Unregistered
            }
            // One challenge per unregistration is answered; stale or not, a second one ends it.
            401 | 407 if self.auth_rounds == 0 && self.take_challenge(response).is_some() => {
                self.state = RegState::Unregistering {
                    give_up_at,
                    due: true,
                };
                RegOutcome::Challenged {
                    stale: false,
                    retry_in: Duration::ZERO,
                }
            }
            _ => {
                self.state = RegState::Stopped;
                RegOutcome::UnregisterFailed { status }
            }
        }
    }

    /// The REGISTER transaction timed out (no response at all).
    pub fn on_timeout(&mut self, now: Instant) -> RegOutcome {
        if self.unregister {
            self.state = RegState::Stopped;
            return RegOutcome::UnregisterFailed { status: 408 };
        }
        self.fail(now, 408, None)
    }

    fn fail(&mut self, now: Instant, status: u16, retry_after: Option<Duration>) -> RegOutcome {
        self.failures = self.failures.saturating_add(1);
        self.auth_rounds = 0;
        self.challenge = None;
        let retry_in = retry_after
            .unwrap_or_else(|| FAILURE_BACKOFF.delay(self.failures))
            .min(FAILURE_BACKOFF.max);
        self.state = RegState::Waiting {
            attempt_at: now + retry_in,
        };
        RegOutcome::Failed { status, retry_in }
    }
}

/// §20.23: a 423's Min-Expires, which must be a positive delta-seconds.
fn min_expires(headers: &Headers) -> Result<u32, RegFailure> {
    let value = headers
        .get("min-expires")
        .ok_or(RegFailure::MinExpiresMissing)?;
    match value.trim().parse::<u32>() {
        Ok(0) => Err(RegFailure::MinExpiresZero),
        Ok(min) => Ok(min),
        Err(_) => Err(RegFailure::MinExpiresInvalid),
    }
}

/// §10.2.4: the lifetime granted to our binding: its Contact's expires parameter, else Expires.
fn granted_expires(headers: &Headers, contact_user: &str) -> Option<u32> {
    let ours = headers
        .values("contact")
        .into_iter()
        .filter_map(|c| NameAddr::parse(c).ok())
        .find(|c| c.uri.user.as_deref() == Some(contact_user));
    let from_contact = ours.and_then(|c| {
        c.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("expires"))
            .and_then(|(_, v)| v.as_deref()?.parse().ok())
    });
    from_contact.or_else(|| headers.expires())
}
