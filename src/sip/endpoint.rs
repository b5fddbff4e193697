//! The SIP endpoint: earshot's user agent as one sans-IO state machine.
//!
//! It owns the transactions (§17), the dialogs (§12) and the trunk registrations (§10), and
//! implements the UAS core of RFC 3261 §8.2 (request validation), §13.3 (answering INVITE,
//! retransmitting 2xx until ACK), §9.2 (CANCEL) and §15 (BYE). Driver API, after the style of
//! quinn-proto: `handle_datagram` / `handle_timeout` in, `poll_transmit` / `poll_event` /
//! `poll_timeout` out, plus commands from the application (`answer`, `reject`, `hangup`).
//! It never reads the clock, touches a socket or draws randomness of its own.
//!
//! # Floods
//!
//! earshot faces SIP trunks on the internet, so no peer may make it hold state, or send
//! datagrams, without bound ([`Limits`], from `[sip]`):
//!
//! - Server transactions live in a bounded [`Table`] (a global bound and one per source IP)
//!   with a timer heap, so each loop costs O(log n) per timer due, not a scan.
//! - A request whose transaction would break the **per-source** bound is dropped, counted,
//!   and never answered: that source alone is flooding, an answer would only cost bandwidth
//!   (and go to whoever it spoofs), and a genuine peer retransmits over UDP until one of its
//!   own transactions has ended. A request that would break the **global** bound gets a 503
//!   with Retry-After sent statelessly: the overload is not necessarily its sender's doing, and
//!   a trunk told to back off retries later or fails over to another server at once.
//! - New INVITEs are rate-limited per source IP (a token bucket); the excess gets a 503 with
//!   Retry-After, statelessly: a trunk that bursts over the rate learns at once to slow down or
//!   fail over instead of retransmitting for 32 s, and no call, dialog or transaction is made.
//! - Refusals decided before any dialog exists (a failed §8.2.1–§8.2.3 check, 481 for an
//!   unknown dialog or CANCEL, 486 at capacity, 503 while draining or shutting down, 400/415 for an unusable
//!   offer, the two 503s above) are sent **statelessly** (§8.2.7): no transaction, so no Timer G
//!   retransmissions towards a possibly spoofed source; a retransmitted request is answered
//!   again (with the same To tag, derived from the request) and the ACK is absorbed because
//!   nothing matches it. One request buys at most one response, and stateless responses are
//!   themselves rate-limited per source. Non-2xx finals to a call the application already saw
//!   (480, 487, 488, 503 without media) keep their INVITE transaction, as §17.2.1 requires.
//!
//! # Layout
//!
//! - This file: the public types, the server transactions (§17.2.3 matching), request dispatch
//!   (§18.2.1 received/rport, the §8.2.1–§8.2.3 checks, then ACK, CANCEL, in-dialog and new
//!   requests each to their place), and the few ways a response is sent: statelessly, through
//!   its server transaction, or in a new one.
//! - `call`: one call's state and everything that changes it, with `answer`, `reject` and
//!   `hangup`.
//! - `uac`: the requests we send (BYE, REGISTER) in client transactions, their responses, and
//!   `set_trunks`.
//! - `outbound`: the calls we place (`place_call`): INVITE, digest, CANCEL, redirects, forking.
//! - `response`: the one builder every response goes through (§8.2.6).
//! - `request`: the SDP offer or DTMF digit read out of a request body.
//! - `refresh`: RFC 4028 session refreshes a call's [`SessionTimer`] asks of us (re-INVITE or
//!   UPDATE in its own client transaction), and the session's expiry.
//! - `transfer`: RFC 3515 REFER both ways and the NOTIFYs of its implicit subscription.

mod call;
mod outbound;
mod refresh;
mod request;
mod response;
mod transfer;
mod uac;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::call::Call;
pub use self::call::MediaFilter;
use self::outbound::Outbound;
pub use self::outbound::{FailReason, OutboundCall, PlaceError, TrunkCredentials};
use self::response::{ResponseBuilder, stateless_tag, wants_to_tag};
pub use self::transfer::{REFER_RINGING, ReferError, TransferProgress};
use self::uac::ClientEntry;
use super::dialog::{ConnId, DialogId, Flow, response_destination};
use super::message::Uri;
use super::message::{self, Headers, Message, Method, Request, Response};
use super::registration::{RegOutcome, RegState, Registration};
use super::sdp::{Negotiated, SessionDescription};
use super::session_timer::{OPTION_TAG, TimerPolicy};
use super::transaction::{
    Action, Overload, ServerInvite, ServerNonInvite, SourceLimiter, Table, Timed,
};

/// Methods earshot implements, as advertised in Allow (§20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER, NOTIFY";
/// Option tags earshot supports (§20.37): session timers (RFC 4028).
pub const SUPPORTED: &str = OPTION_TAG;
/// Bodies earshot understands (§20.1).
pub const ACCEPT: &str = "application/sdp";

/// The endpoint's settings, from `[sip]` and `[calls]`.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The host (and port) written in our Via, Contact and SDP: `[sip].public_addr` when set,
    /// else the listening address as seen by peers.
    pub advertised: SocketAddr,
    pub user_agent: String,
    /// `[calls].max_concurrent`: INVITEs beyond it get 486, and OPTIONS 503 (so a dispatcher's
    /// probing takes the box out until a call ends).
    pub max_calls: usize,
    pub limits: Limits,
}

/// What earshot agrees to within a dialog, from `[sip]` (set with
/// [`Endpoint::set_dialog_policy`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DialogPolicy {
    /// `[sip].session_expires_secs` and `[sip].min_se_secs` (RFC 4028).
    pub timers: TimerPolicy,
    /// `[sip].accept_refer`: a REFER from the peer is refused with 403 unless this is set, so
    /// that nobody can turn earshot into a dialer.
    pub accept_refer: bool,
}

/// Flood bounds, from `[sip]` (see the module doc for what happens beyond each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Server transactions held at once, in all.
    pub max_transactions: usize,
    /// Server transactions held at once for one source IP.
    pub max_transactions_per_source: usize,
    /// New INVITEs a second from one source IP, and the burst allowed.
    pub invite_rate: u32,
    pub invite_burst: u32,
    /// Stateless responses a second to one source IP (the burst is twice that).
    pub stateless_response_rate: u32,
    /// Source IPs tracked by each rate limiter (oldest evicted beyond).
    pub rate_sources: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_transactions: 16384,
            max_transactions_per_source: 8192,
            invite_rate: 50,
            invite_burst: 100,
            stateless_response_rate: 100,
            rate_sources: 4096,
        }
    }
}

/// Our handle on one call, stable for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

/// An INVITE that wants an answer.
#[derive(Debug, Clone)]
pub struct IncomingCall {
    pub call: CallRef,
    /// The SIP Call-ID (the external id of the call).
    pub sip_call_id: String,
    /// The caller's user part (a phone number: never log it at info level).
    pub caller: String,
    /// The called user part (the dialled number).
    pub callee: String,
    /// Where the INVITE came from.
    pub remote: SocketAddr,
    /// The caller's SDP offer; `None` for a late-offer INVITE.
    pub offer: Option<SessionDescription>,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// The caller cancelled before the answer.
    Cancelled,
    /// We hung up (BYE sent, or the INVITE rejected before the answer).
    LocalHangup,
    /// The INVITE was refused with this status (busy, no common codec...).
    Rejected(u16),
    /// The caller never ACKed our 2xx (§13.3.1.4).
    AckTimeout,
    /// RFC 4028 §10: no session refresh came before the session expired (BYE sent).
    SessionExpired,
    /// RFC 4028 §10: our session refresh failed with this status (408 for a timeout, 481).
    RefreshFailed(u16),
    /// The peer accepted our REFER and reported the transfer done (BYE sent).
    Transferred,
}

/// What the endpoint reports to the application.
#[derive(Debug, Clone)]
pub enum Event {
    Incoming(IncomingCall),
    /// The answer was accepted by the caller (ACK received): media flows.
    Confirmed {
        call: CallRef,
    },
    /// A re-INVITE changed the media (hold, resume, new address or codec).
    MediaChanged {
        call: CallRef,
        media: Negotiated,
    },
    /// A DTMF digit sent by SIP INFO (application/dtmf-relay or application/dtmf).
    Dtmf {
        call: CallRef,
        digit: char,
        duration_ms: u32,
    },
    Ended {
        call: CallRef,
        reason: EndReason,
    },
    /// The peer asked, by a REFER we accepted (202), that the call be transferred to `target`.
    /// Whoever dials reports back with [`Endpoint::refer_outcome`]; without it, the peer is
    /// told 503 after 64·T1 (or [`REFER_RINGING`] after a 1xx outcome).
    ReferRequested {
        call: CallRef,
        target: Uri,
        /// The REFER's Referred-By (RFC 3892), as sent, for the INVITE to the target.
        referred_by: Option<String>,
    },
    /// Progress of a transfer we asked for with [`Endpoint::refer`].
    Transfer {
        call: CallRef,
        progress: TransferProgress,
    },
    Registration {
        trunk: String,
        outcome: RegOutcome,
    },
    /// A call we placed got a provisional response (18x): ringing (180), and the early-media
    /// answer when it carried SDP.
    Progress {
        call: CallRef,
        ringing: bool,
        media: Option<Negotiated>,
    },
    /// A call we placed was answered (2xx, ACKed): from here on it is a call like any other.
    Answered {
        call: CallRef,
        media: Negotiated,
    },
    /// A call we placed failed before its answer, with the final status (408 for no answer
    /// at all).
    Failed {
        call: CallRef,
        status: u16,
        reason: FailReason,
    },
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub flow: Flow,
    pub bytes: Vec<u8>,
}

/// Counters of what the endpoint refused or dropped.
#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    /// Requests answered with 400 or 505 because they did not parse.
    pub malformed: u64,
    /// Datagrams dropped silently (unparseable, responses matching nothing).
    pub dropped: u64,
    /// Requests refused at capacity (486), while draining or shutting down (503), and OPTIONS
    /// answered 503 for either reason.
    pub refused: u64,
    /// Requests dropped unanswered: their source holds its most server transactions.
    pub overload_dropped: u64,
    /// Requests refused with a stateless 503: the transaction table is full.
    pub overload_rejected: u64,
    /// New INVITEs over their source's rate, refused with a stateless 503.
    pub invites_limited: u64,
    /// Responses sent without a transaction (§8.2.7).
    pub stateless_responses: u64,
    /// Stateless responses not sent: over their destination's rate.
    pub responses_limited: u64,
    /// REFERs refused with 403 (`[sip].accept_refer` off, or outside a dialog).
    pub refers_refused: u64,
}

/// Whether the endpoint takes new calls, as OPTIONS and new INVITEs are told (RFC 3261 §11:
/// OPTIONS answers as an INVITE would; §21.5.4: 503 with Retry-After sends a dispatcher
/// elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Room for a call: OPTIONS 200, INVITEs answered.
    Open,
    /// `max_calls` calls live: OPTIONS 503 (Retry-After 5), INVITEs 486.
    Full,
    /// Draining ([`Endpoint::set_draining`]): current calls go on, new ones are refused with
    /// 503 (Retry-After 30), and OPTIONS too.
    Draining,
    /// Shutting down: everything new is refused with 503 (Retry-After 30).
    ShuttingDown,
}

impl Admission {
    /// The Retry-After of a 503 given for this reason, if it is one.
    fn retry_after(self) -> Option<u32> {
        match self {
            Admission::Open => None,
            Admission::Full => Some(FULL_RETRY_AFTER_SECS),
            Admission::Draining | Admission::ShuttingDown => Some(DRAIN_RETRY_AFTER_SECS),
        }
    }
}

/// Retry-After when full: a call may end any moment.
const FULL_RETRY_AFTER_SECS: u32 = 5;
/// Retry-After when draining or shutting down: the box is going away for a while.
const DRAIN_RETRY_AFTER_SECS: u32 = 30;

/// Server transactions are found by §17.2.3 keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TxKey {
    /// RFC 3261: branch with the magic cookie, the sent-by, and the method (ACK as INVITE).
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// RFC 2543 fallback (§17.2.3): the request's identifying fields.
    Rfc2543 { fields: String, method: String },
}

#[derive(Debug)]
enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

#[derive(Debug)]
struct ServerEntry {
    tx: ServerTx,
    flow: Flow,
}

impl Timed for ServerEntry {
    fn poll_timeout(&self) -> Option<Instant> {
        match &self.tx {
            ServerTx::Invite(tx) => tx.poll_timeout(),
            ServerTx::NonInvite(tx) => tx.poll_timeout(),
        }
    }
}

/// earshot's SIP user agent.
pub struct Endpoint {
    config: EndpointConfig,
    rng: StdRng,
    accepting: bool,
    /// Set by the application (`POST /api/drain`, SIGUSR1): no new calls, current ones go on.
    draining: bool,
    server: Table<TxKey, ServerEntry>,
    invite_limiter: SourceLimiter,
    response_limiter: SourceLimiter,
    /// Keys the To tags of stateless responses (§8.2.7: the same request gets the same tag).
    tag_secret: u64,
    client: HashMap<String, ClientEntry>,
    calls: HashMap<CallRef, Call>,
    /// Calls we place, until their INVITE transactions end (`outbound`).
    outbound: HashMap<CallRef, Outbound>,
    dialogs: HashMap<DialogId, CallRef>,
    registrations: Vec<Registration>,
    next_call: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: EndpointStats,
    /// Which media addresses an SDP may name (`[rtp].allow_media`); `None` allows all.
    media_filter: Option<MediaFilter>,
    /// Session timers and REFER (`[sip]`).
    policy: DialogPolicy,
}

impl Endpoint {
    /// `seed` feeds tags, branches and digest cnonces.
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        let limits = config.limits;
        let mut rng = StdRng::seed_from_u64(seed);
        let tag_secret = rng.random();
        Self {
            config,
            rng,
            accepting: true,
            draining: false,
            server: Table::new(limits.max_transactions, limits.max_transactions_per_source),
            invite_limiter: SourceLimiter::new(
                limits.invite_rate,
                limits.invite_burst,
                limits.rate_sources,
            ),
            response_limiter: SourceLimiter::new(
                limits.stateless_response_rate,
                limits.stateless_response_rate.saturating_mul(2),
                limits.rate_sources,
            ),
            tag_secret,
            client: HashMap::new(),
            calls: HashMap::new(),
            outbound: HashMap::new(),
            dialogs: HashMap::new(),
            registrations: Vec::new(),
            next_call: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            media_filter: None,
            policy: DialogPolicy::default(),
        }
    }

    /// Sets the session-timer bounds and the REFER policy for calls from now on.
    pub fn set_dialog_policy(&mut self, policy: DialogPolicy) {
        self.policy = policy;
    }

    /// Shutdown: refuse new calls (503), and unregister every trunk.
    pub fn shut_down(&mut self, now: Instant) {
        self.accepting = false;
        self.unregister_all(now);
    }

    /// Drain (or stop draining): while set, new INVITEs and OPTIONS get 503 with Retry-After,
    /// and the calls in progress go on as before.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether a new call would be taken now, and why not.
    pub fn admission(&self) -> Admission {
        if !self.accepting {
            Admission::ShuttingDown
        } else if self.draining {
            Admission::Draining
        } else if self.calls.len() >= self.config.max_calls {
            Admission::Full
        } else {
            Admission::Open
        }
    }

    /// True when nothing is left in flight: no call, no client transaction, no unregistration.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && !self.outbound.values().any(Outbound::is_pending)
            && self.client.values().all(|e| e.tx.is_finished())
            && !self.unregistering()
    }

    /// The address written in our Via, Contact and SDP.
    pub fn advertised(&self) -> SocketAddr {
        self.config.advertised
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Server transactions held now (at most `[sip].max_transactions`).
    pub fn server_transactions(&self) -> usize {
        self.server.len()
    }

    pub fn registration_states(&self) -> impl Iterator<Item = (&str, &RegState)> {
        self.registrations
            .iter()
            .map(|r| (r.trunk.name.as_str(), &r.state))
    }

    /// One datagram, or one framed message from a TCP connection.
    pub fn handle_datagram(&mut self, now: Instant, flow: Flow, bytes: &[u8]) {
        let parsed = if flow.transport.is_reliable() {
            message::parse_stream(bytes)
        } else {
            message::parse(bytes)
        };
        match parsed {
            Ok(Message::Request(req)) => self.handle_request(now, flow, req),
            Ok(Message::Response(resp)) => self.handle_response(now, resp),
            Err(err) => match err.reply() {
                // §17: an ACK has no transaction to carry a response; a broken one is dropped.
                Some(_) if bytes.starts_with(b"ACK ") => self.stats.dropped += 1,
                Some((status, headers)) => {
                    self.stats.malformed += 1;
                    let resp = ResponseBuilder::new(headers, status, None)
                        .reason(err.reason())
                        .build();
                    self.send_stateless(now, headers, flow, resp);
                }
                None => self.stats.dropped += 1,
            },
        }
    }

    /// A TCP connection closed: forget it in the flows that used it.
    pub fn connection_closed(&mut self, conn: ConnId) {
        for call in self.calls.values_mut() {
            call.connection_closed(conn);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let server = self.server.next_deadline();
        let client = self.client.values().filter_map(|e| e.tx.poll_timeout());
        let calls = self.calls.values().filter_map(Call::poll_timeout);
        let outbound = self.outbound.values().filter_map(Outbound::poll_timeout);
        let regs = self
            .registrations
            .iter()
            .filter_map(Registration::poll_timeout);
        server
            .into_iter()
            .chain(client)
            .chain(calls)
            .chain(outbound)
            .chain(regs)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.server_timeouts(now);
        self.client_timeouts(now);
        self.call_timeouts(now);
        self.outbound_timeouts(now);
        self.drive_registrations(now);
    }

    // ---- request dispatch -----------------------------------------------------------------

    fn handle_request(&mut self, now: Instant, flow: Flow, mut req: Request) {
        stamp_received(&mut req.headers, flow.remote);
        let Some(key) = tx_key(&req) else {
            // No transaction to answer in: a stateless reply (never to an ACK, §17).
            if req.method != Method::Ack {
                self.reply_stateless(now, flow, &req, self.stateless_response(&req, 400));
            }
            return;
        };
        // §17.2.3: a retransmission goes to its transaction.
        if req.method != Method::Ack
            && let Some(entry) = self.server.get(&key)
        {
            let resend = match &entry.tx {
                ServerTx::Invite(tx) => tx.on_request_retransmit(),
                ServerTx::NonInvite(tx) => tx.on_request_retransmit(),
            };
            if let Some(bytes) = resend {
                let dest = entry.flow;
                self.send(dest, bytes);
            }
            return;
        }
        match req.method {
            Method::Ack => self.handle_ack(now, key, req),
            Method::Cancel => self.handle_cancel(now, flow, key, req),
            _ => self.handle_new_request(now, flow, key, req),
        }
    }

    fn handle_ack(&mut self, now: Instant, key: TxKey, req: Request) {
        // An ACK for a non-2xx final belongs to the INVITE transaction (§17.2.1).
        // An ACK for a stateless refusal matches nothing and ends here, absorbed (§8.2.7).
        let invite_key = with_method(&key, "INVITE");
        let absorbed = self.server.update(&invite_key, |e| match &mut e.tx {
            ServerTx::Invite(tx) => tx.on_ack(now),
            ServerTx::NonInvite(_) => false,
        });
        if absorbed == Some(true) {
            return;
        }
        // An ACK for a 2xx is part of the dialog (§13.2.2.4 / §13.3.1.4).
        if let Some(call) = self.dialog_of(&req) {
            self.handle_2xx_ack(now, call, req);
        }
    }

    fn handle_cancel(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let invite_key = with_method(&key, "INVITE");
        let call = self
            .calls
            .iter()
            .find(|(_, c)| c.is_cancelled_by(&invite_key))
            .map(|(r, _)| *r);
        if !self.server.contains_key(&invite_key) {
            self.reply_stateless(now, flow, &req, self.stateless_response(&req, 481));
            return;
        }
        if !self.admit(now, flow, &req) {
            return;
        }
        let resp = self.response_to(&req, 200).build();
        self.respond_in_new_tx(now, flow, key, &req, resp);
        // §9.2: the INVITE is answered 487 if it had no final response yet.
        if let Some(call) = call {
            self.respond_to_invite(now, call, 487, None);
            self.end_call(call, EndReason::Cancelled);
        }
    }

    fn handle_new_request(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        if let Some(status) = precheck(&req) {
            let mut resp = self.stateless_response(&req, status);
            match status {
                405 => resp = resp.header("Allow", ALLOW),
                415 | 406 => resp = resp.header("Accept", ACCEPT),
                420 => {
                    let unsupported = unsupported_requirements(&req).join(", ");
                    resp = resp.header("Unsupported", unsupported);
                }
                _ => {}
            }
            self.reply_stateless(now, flow, &req, resp);
            return;
        }
        let in_dialog = req
            .headers
            .to()
            .and_then(|to| to.tag().map(str::to_string))
            .is_some();
        let call = if in_dialog {
            self.dialog_of(&req)
        } else {
            None
        };
        // §12.2.2: a request for a dialog we do not know; outside a dialog, BYE, INFO...
        if call.is_none()
            && (in_dialog
                || !matches!(req.method, Method::Invite | Method::Options | Method::Refer))
        {
            self.reply_stateless(now, flow, &req, self.stateless_response(&req, 481));
            return;
        }
        // RFC 3515: a REFER outside a dialog would make us call whoever it names.
        if call.is_none() && req.method == Method::Refer {
            self.stats.refers_refused += 1;
            self.reply_stateless(now, flow, &req, self.stateless_response(&req, 403));
            return;
        }
        if call.is_none()
            && req.method == Method::Invite
            && !self.invite_limiter.allow(now, flow.remote.ip())
        {
            self.stats.invites_limited += 1;
            self.unavailable(now, flow, &req, 5);
            return;
        }
        if !self.admit(now, flow, &req) {
            return;
        }
        if let Some(call) = call {
            self.handle_in_dialog(now, flow, key, req, call);
            return;
        }
        match req.method {
            Method::Invite => self.handle_invite(now, flow, key, req),
            Method::Options => {
                let retry_after = self.admission().retry_after();
                let status = if retry_after.is_some() { 503 } else { 200 };
                let mut resp =
                    ResponseBuilder::new(&req.headers, status, Some(self.random_token(8)))
                        .header("Allow", ALLOW)
                        .header("Accept", ACCEPT)
                        .header("Supported", SUPPORTED);
                if let Some(secs) = retry_after {
                    self.stats.refused += 1;
                    resp = resp.header("Retry-After", secs.to_string());
                }
                self.respond_in_new_tx(now, flow, key, &req, resp.build());
            }
            // Sorted out above.
            _ => {}
        }
    }

    /// Whether the transaction table has room for a new transaction from `flow`; if not, the
    /// request is dropped (its source is over its bound) or refused statelessly with 503 (the
    /// table is full), and counted.
    fn admit(&mut self, now: Instant, flow: Flow, req: &Request) -> bool {
        match self.server.admit(flow.remote.ip()) {
            Ok(()) => true,
            Err(Overload::PerSource) => {
                self.stats.overload_dropped += 1;
                false
            }
            Err(Overload::Global) => {
                self.stats.overload_rejected += 1;
                self.unavailable(now, flow, req, 5);
                false
            }
        }
    }

    fn dialog_of(&self, req: &Request) -> Option<CallRef> {
        let id = DialogId {
            call_id: req.headers.call_id()?.to_string(),
            local_tag: req.headers.to()?.tag()?.to_string(),
            remote_tag: req.headers.from()?.tag().unwrap_or_default().to_string(),
        };
        self.dialogs.get(&id).copied()
    }

    // ---- server transactions --------------------------------------------------------------

    fn server_timeouts(&mut self, now: Instant) {
        while let Some(key) = self.server.pop_due(now) {
            let actions = self.server.update(&key, |entry| {
                let mut actions = Vec::new();
                loop {
                    let action = match &mut entry.tx {
                        ServerTx::Invite(tx) => tx.handle_timeout(now),
                        ServerTx::NonInvite(tx) => tx.handle_timeout(now),
                    };
                    match action {
                        Some(action) => actions.push((entry.flow, action)),
                        None => break actions,
                    }
                }
            });
            let mut done = false;
            for (flow, action) in actions.unwrap_or_default() {
                match action {
                    Action::Retransmit(bytes) => self.transmits.push_back(Transmit { flow, bytes }),
                    // The call that refused with this response has already ended.
                    _ => done = true,
                }
            }
            if done {
                self.server.remove(&key);
            }
        }
    }

    /// §17.2: a server transaction for `req` (INVITE or not), answering where §18.2.2 says.
    fn open_server_tx(&mut self, key: &TxKey, req: &Request, flow: Flow) {
        let dest = response_destination(req.headers.via().as_ref(), flow);
        let reliable = flow.transport.is_reliable();
        let tx = match req.method {
            Method::Invite => ServerTx::Invite(ServerInvite::new(reliable)),
            _ => ServerTx::NonInvite(ServerNonInvite::new(reliable)),
        };
        // Dispatch checked the bounds already ([`Endpoint::admit`]); a refusal here leaves
        // the request unanswered, and counted.
        let entry = ServerEntry { tx, flow: dest };
        if self
            .server
            .insert(key.clone(), flow.remote.ip(), entry)
            .is_err()
        {
            self.stats.overload_dropped += 1;
        }
    }

    // ---- sending responses ----------------------------------------------------------------

    /// §8.2.6.2: a response to `req` with a fresh To tag of ours when it needs one.
    fn response_to(&mut self, req: &Request, status: u16) -> ResponseBuilder {
        let tag = wants_to_tag(&req.headers, status).then(|| self.random_token(10));
        ResponseBuilder::new(&req.headers, status, tag)
    }

    /// §8.2.7: a response to `req` for a stateless reply, its To tag (when it needs one)
    /// derived from the request so that a retransmission gets the same one.
    fn stateless_response(&self, req: &Request, status: u16) -> ResponseBuilder {
        ResponseBuilder::new(&req.headers, status, self.stateless_tag(req, status))
    }

    /// The To tag for a stateless `status` to `req`, when it needs one.
    fn stateless_tag(&self, req: &Request, status: u16) -> Option<String> {
        wants_to_tag(&req.headers, status).then(|| stateless_tag(self.tag_secret, &req.headers))
    }

    /// A stateless 503 with Retry-After (§21.5.4): come back in `secs` seconds, or elsewhere.
    fn unavailable(&mut self, now: Instant, flow: Flow, req: &Request, secs: u32) {
        let resp = self
            .stateless_response(req, 503)
            .header("Retry-After", secs.to_string());
        self.reply_stateless(now, flow, req, resp);
    }

    /// §8.2.7: answers `req` without a transaction (see [`Endpoint::send_stateless`]).
    fn reply_stateless(&mut self, now: Instant, flow: Flow, req: &Request, resp: ResponseBuilder) {
        self.send_stateless(now, &req.headers, flow, resp.build());
    }

    /// A response outside any transaction, sent where its Via says, unless its source has had
    /// its share of stateless responses (then it is counted and dropped).
    fn send_stateless(&mut self, now: Instant, request: &Headers, flow: Flow, resp: Response) {
        if !self.response_limiter.allow(now, flow.remote.ip()) {
            self.stats.responses_limited += 1;
            return;
        }
        self.stats.stateless_responses += 1;
        let dest = response_destination(request.via().as_ref(), flow);
        self.send(dest, resp.to_bytes());
    }

    /// Sends a response through its server transaction.
    fn respond(&mut self, now: Instant, key: &TxKey, resp: Response) {
        let bytes = resp.to_bytes();
        let sent = self.server.update(key, |entry| {
            match &mut entry.tx {
                ServerTx::Invite(tx) => tx.on_response(now, resp.status, &bytes),
                ServerTx::NonInvite(tx) => tx.on_response(now, resp.status, &bytes),
            }
            let terminated = match &entry.tx {
                ServerTx::Invite(tx) => tx.is_terminated(),
                ServerTx::NonInvite(tx) => tx.is_terminated(),
            };
            (entry.flow, terminated)
        });
        let Some((flow, terminated)) = sent else {
            return;
        };
        if terminated {
            self.server.remove(key);
        }
        self.send(flow, bytes);
    }

    /// Answers a request in a server transaction opened for this response.
    fn respond_in_new_tx(
        &mut self,
        now: Instant,
        flow: Flow,
        key: TxKey,
        req: &Request,
        resp: Response,
    ) {
        self.open_server_tx(&key, req, flow);
        self.respond(now, &key, resp);
    }

    fn send(&mut self, flow: Flow, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { flow, bytes });
    }

    fn random_token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| {
                char::from(
                    ALPHABET
                        .get(self.rng.random_range(0..ALPHABET.len()))
                        .copied()
                        .unwrap_or(b'x'),
                )
            })
            .collect()
    }
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: note where the request really came from in its top Via.
fn stamp_received(headers: &mut Headers, source: SocketAddr) {
    let Some(mut via) = headers.via() else { return };
    let mut changed = false;
    if via.host.parse::<IpAddr>().ok() != Some(source.ip()) || via.rport().is_some() {
        via.set_param("received", Some(source.ip().to_string()));
        changed = true;
    }
    if via.rport().is_some() {
        via.set_param("rport", Some(source.port().to_string()));
        changed = true;
    }
    if changed {
        let rest: Vec<String> = headers
            .vias()
            .into_iter()
            .skip(1)
            .map(|v| v.to_string())
            .collect();
        headers.remove("via");
        let mut rebuilt = Headers::default();
        rebuilt.push("Via", via.to_string());
        for v in rest {
            rebuilt.push("Via", v);
        }
        for (name, value) in headers.iter() {
            rebuilt.push(name, value);
        }
        *headers = rebuilt;
    }
}

/// §17.2.3: the key that matches a request to its server transaction.
fn tx_key(req: &Request) -> Option<TxKey> {
    let via = req.headers.via()?;
    let method = match req.method {
        Method::Ack => "INVITE".to_string(),
        ref m => m.as_str().to_string(),
    };
    match via.branch() {
        Some(branch) if branch.starts_with("z9hG4bK") => {
            let sent_by = format!(
                "{}:{}",
                via.host.to_ascii_lowercase(),
                via.port.unwrap_or(5060)
            );
            Some(TxKey::Rfc3261 {
                branch: branch.to_string(),
                sent_by,
                method,
            })
        }
        _ => {
            let cseq = req.headers.cseq()?.seq;
            let from_tag = req.headers.from()?.tag().unwrap_or_default().to_string();
            // RFC 2543: the To tag of an ACK is the one in our response; leave it out.
            let fields = format!(
                "{}|{}|{}|{}|{}",
                req.uri,
                from_tag,
                req.headers.call_id()?,
                cseq,
                via
            );
            Some(TxKey::Rfc2543 { fields, method })
        }
    }
}

fn with_method(key: &TxKey, method: &str) -> TxKey {
    match key {
        TxKey::Rfc3261 {
            branch, sent_by, ..
        } => TxKey::Rfc3261 {
            branch: branch.clone(),
            sent_by: sent_by.clone(),
            method: method.to_string(),
        },
        TxKey::Rfc2543 { fields, .. } => TxKey::Rfc2543 {
            fields: fields.clone(),
            method: method.to_string(),
        },
    }
}

/// §8.2.2.3: the Require option tags of `req` that are not in [`SUPPORTED`].
fn unsupported_requirements(req: &Request) -> Vec<&str> {
    req.headers
        .values("require")
        .into_iter()
        .filter(|tag| !tag.eq_ignore_ascii_case(SUPPORTED))
        .collect()
}

/// §8.2.1–§8.2.3: checks that refuse a request before any processing, as a status code.
fn precheck(req: &Request) -> Option<u16> {
    // §8.2.1: methods we do not know are 501; ones we know but do not serve, 405.
    match &req.method {
        Method::Other(_) => return Some(501),
        Method::Register
        | Method::Subscribe
        | Method::Message
        | Method::Publish
        | Method::Prack
        | Method::Update => return Some(405),
        _ => {}
    }
    // §8.2.2.1: a Request-URI scheme we do not serve.
    if !(req.uri.is_sip() || req.uri.scheme == "tel") {
        return Some(416);
    }
    // §8.2.2.3: a Require option tag we do not support.
    if req.method != Method::Cancel && !unsupported_requirements(req).is_empty() {
        return Some(420);
    }
    // §8.2.3: Accept must allow the body we would answer with.
    if req.method == Method::Invite {
        let accepts = req.headers.values("accept");
        if !accepts.is_empty()
            && !accepts.iter().any(|a| {
                let media = a
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                media == ACCEPT || media == "application/*" || media == "*/*"
            })
        {
            return Some(406);
        }
    }
    None
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("calls", &self.calls.len())
            .field("server_transactions", &self.server.len())
            .field("client_transactions", &self.client.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
