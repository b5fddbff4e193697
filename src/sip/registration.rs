//! RFC 3261 §10 registration with a trunk's registrar: REGISTER with digest authentication
//! (§22.2, RFC 8760), refresh before expiry, backoff on failure, and unregistration.
//!
//! One [`Registration`] per configured trunk. It owns no transaction: the endpoint sends what
//! [`Registration::request`] asks for and reports each final response back.

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
    /// An Expires: 0 REGISTER is in flight (shutdown).
    Unregistering,
    /// Done: unregistered or given up for good (until reconfigured).
    Stopped,
}

/// The result of a final response, for events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegOutcome {
    Registered {
        expires: u32,
    },
    /// Challenged: the request is sent again with credentials.
    Challenged,
    Failed {
        status: u16,
        retry_in: Duration,
    },
    Unregistered,
}

/// First retry after a failure; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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
    /// Set when the next REGISTER must unregister (Expires: 0).
    unregister: bool,
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
            unregister: false,
        }
    }

    /// When this registration next needs the endpoint's attention.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            RegState::Waiting { attempt_at } => Some(attempt_at),
            RegState::Registered { refresh_at, .. } => Some(refresh_at),
            _ => None,
        }
    }

    /// Whether a REGISTER is due now.
    pub fn is_due(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|at| at <= now)
    }

    /// Begins unregistration: true when a REGISTER with Expires: 0 must now be sent.
    pub fn start_unregister(&mut self) -> bool {
        let bound = matches!(self.state, RegState::Registered { .. } | RegState::Pending);
        self.unregister = true;
        self.state = if bound {
            RegState::Unregistering
        } else {
            RegState::Stopped
        };
        bound
    }

    /// The REGISTER to send now; `contact` is our advertised host:port and `cnonce` fresh
    /// randomness for digest.
    pub fn request(&mut self, contact: &str, cnonce: &str) -> Request {
        self.cseq = self.cseq.wrapping_add(1);
        if !self.unregister {
            self.state = RegState::Pending;
        }
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

    /// A final response to our REGISTER arrived. Returns what happened and whether a new
    /// REGISTER must be sent right away (after a challenge).
    pub fn on_response(&mut self, now: Instant, response: &Response) -> RegOutcome {
        let status = response.status;
        if self.unregister {
            self.state = RegState::Stopped;
            return RegOutcome::Unregistered;
        }
        match status {
            200..=299 => {
                self.failures = 0;
                self.auth_rounds = 0;
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
            401 | 407 => {
                let header = if status == 401 {
                    "www-authenticate"
                } else {
                    "proxy-authenticate"
                };
                let challenge = Challenge::pick_best(response.headers.get_all(header));
                match challenge {
                    Ok(ch) if self.auth_rounds == 0 || ch.stale => {
                        self.auth_rounds += 1;
                        self.nc = 0;
                        self.challenge = Some((ch, status == 407));
                        self.state = RegState::Waiting { attempt_at: now };
                        RegOutcome::Challenged
                    }
                    _ => self.fail(now, status, None),
                }
            }
            423 => {
                // §10.3: Interval Too Brief — retry at once with the registrar's minimum.
                if let Some(min) = response
                    .headers
                    .get("min-expires")
                    .and_then(|v| v.trim().parse().ok())
                {
                    self.trunk.expires = min;
                    self.state = RegState::Waiting { attempt_at: now };
                    return RegOutcome::Failed {
                        status,
                        retry_in: Duration::ZERO,
                    };
                }
                self.fail(now, status, None)
            }
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

    /// The REGISTER transaction timed out (no response at all).
    pub fn on_timeout(&mut self, now: Instant) -> RegOutcome {
        if self.unregister {
            self.state = RegState::Stopped;
            return RegOutcome::Unregistered;
        }
        self.fail(now, 408, None)
    }

    fn fail(&mut self, now: Instant, status: u16, retry_after: Option<Duration>) -> RegOutcome {
        self.failures = self.failures.saturating_add(1);
        self.auth_rounds = 0;
        self.challenge = None;
        let backoff = MIN_BACKOFF
            .saturating_mul(1 << self.failures.saturating_sub(1).min(6))
            .min(MAX_BACKOFF);
        let retry_in = retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
        self.state = RegState::Waiting {
            attempt_at: now + retry_in,
        };
        RegOutcome::Failed { status, retry_in }
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
