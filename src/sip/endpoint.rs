//! The SIP endpoint: earshot's user agent as one sans-IO state machine.
//!
//! It owns the transactions (§17), the dialogs (§12) and the trunk registrations (§10), and
//! implements the UAS core of RFC 3261 §8.2 (request validation), §13.3 (answering INVITE,
//! retransmitting 2xx until ACK), §9.2 (CANCEL) and §15 (BYE). Driver API, after the style of
//! quinn-proto: `handle_datagram` / `handle_timeout` in, `poll_transmit` / `poll_event` /
//! `poll_timeout` out, plus commands from the application (`answer`, `reject`, `hangup`).
//! It never reads the clock, touches a socket or draws randomness of its own.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dialog::{ConnId, Dialog, DialogId, Flow, Transport, response_destination};
use super::message::{self, Headers, Message, Method, Request, Response};
use super::registration::{RegOutcome, RegState, Registration, TrunkRegistration};
use super::sdp::{self, LocalMedia, Negotiated, SessionDescription};
use super::transaction::{
    Action, ClientNonInvite, Delivery, ServerInvite, ServerNonInvite, T1, T2, TIMEOUT,
};

/// Methods earshot implements, as advertised in Allow (§20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO";
/// Bodies earshot understands (§20.1).
pub const ACCEPT: &str = "application/sdp";

/// The endpoint's settings, from `[sip]` and `[calls]`.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The host (and port) written in our Via, Contact and SDP: `[sip].public_addr` when set,
    /// else the listening address as seen by peers.
    pub advertised: SocketAddr,
    pub user_agent: String,
    /// `[calls].max_concurrent`: INVITEs beyond it get 486, and OPTIONS 503.
    pub max_calls: usize,
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
    Registration {
        trunk: String,
        outcome: RegOutcome,
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
    /// Requests refused at capacity (486) or while shutting down (503).
    pub refused: u64,
}

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

/// Why we sent a request, so its response reaches the right place.
#[derive(Debug, Clone)]
enum Purpose {
    Bye(CallRef),
    Register(usize),
}

#[derive(Debug)]
struct ClientEntry {
    tx: ClientNonInvite,
    flow: Flow,
    purpose: Purpose,
}

/// The answer earshot gave, waiting for the ACK (§13.3.1.4: retransmit it meanwhile).
#[derive(Debug)]
struct Unacked {
    cseq: u32,
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

#[derive(Debug)]
enum CallState {
    /// The INVITE is with the application, waiting for `answer` or `reject`.
    Offered,
    /// 180 sent; the 200 goes out at `answer_at`.
    Ringing {
        answer_at: Instant,
        media: LocalMedia,
    },
    /// Answered; the dialog is confirmed once the ACK arrives.
    Established,
    /// BYE sent; waiting for its response (or not: the call is over for the application).
    Terminating,
}

#[derive(Debug)]
struct Call {
    state: CallState,
    dialog: Dialog,
    /// The INVITE (or re-INVITE) currently in its server transaction.
    invite: Request,
    invite_key: TxKey,
    /// Whether the INVITE transaction has sent its final response.
    invite_final: bool,
    offer: Option<SessionDescription>,
    media: Option<LocalMedia>,
    unacked: Option<Unacked>,
    /// Hang up as soon as the ACK for our 2xx arrives (§15: not before).
    bye_after_ack: bool,
    confirmed: bool,
}

/// earshot's SIP user agent.
pub struct Endpoint {
    config: EndpointConfig,
    rng: StdRng,
    accepting: bool,
    server: HashMap<TxKey, ServerEntry>,
    client: HashMap<String, ClientEntry>,
    calls: HashMap<CallRef, Call>,
    dialogs: HashMap<DialogId, CallRef>,
    registrations: Vec<Registration>,
    next_call: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: EndpointStats,
}

impl Endpoint {
    /// `seed` feeds tags, branches and digest cnonces.
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            accepting: true,
            server: HashMap::new(),
            client: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            registrations: Vec::new(),
            next_call: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
        }
    }

    /// Replaces the trunks to register with (startup and reload). Existing bindings of trunks
    /// that stay are kept; removed trunks are unregistered.
    pub fn set_trunks(&mut self, now: Instant, trunks: Vec<TrunkRegistration>) {
        let mut keep = Vec::new();
        for reg in std::mem::take(&mut self.registrations) {
            let same = trunks.iter().any(|t| {
                t.name == reg.trunk.name
                    && t.registrar == reg.trunk.registrar
                    && t.username == reg.trunk.username
            });
            if same {
                keep.push(reg);
            } else {
                let mut reg = reg;
                if reg.start_unregister() {
                    self.registrations.push(reg);
                }
            }
        }
        for trunk in trunks {
            if let Some(pos) = keep.iter().position(|r| r.trunk.name == trunk.name) {
                let mut reg = keep.swap_remove(pos);
                reg.trunk = trunk;
                self.registrations.push(reg);
            } else {
                let call_id = self.random_token(16);
                let tag = self.random_token(8);
                self.registrations
                    .push(Registration::new(trunk, now, call_id, tag));
            }
        }
        self.drive_registrations(now);
    }

    /// Shutdown: refuse new calls (503), and unregister every trunk.
    pub fn shut_down(&mut self, now: Instant) {
        self.accepting = false;
        for idx in 0..self.registrations.len() {
            if self
                .registrations
                .get_mut(idx)
                .is_some_and(Registration::start_unregister)
            {
                self.send_register(now, idx);
            }
        }
    }

    /// True when nothing is left in flight: no call, no client transaction, no unregistration.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
            && self.client.values().all(|e| e.tx.is_finished())
            && self
                .registrations
                .iter()
                .all(|r| r.state != RegState::Unregistering)
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    pub fn registration_states(&self) -> impl Iterator<Item = (&str, &RegState)> {
        self.registrations
            .iter()
            .map(|r| (r.trunk.name.as_str(), &r.state))
    }

    /// One datagram, or one framed message from a TCP connection.
    pub fn handle_datagram(&mut self, now: Instant, flow: Flow, bytes: &[u8]) {
        match message::parse(bytes) {
            Ok(Message::Request(req)) => self.handle_request(now, flow, req),
            Ok(Message::Response(resp)) => self.handle_response(now, resp),
            Err(err) => match err.reply() {
                // §17: an ACK has no transaction to carry a response; a broken one is dropped.
                Some(_) if bytes.starts_with(b"ACK ") => self.stats.dropped += 1,
                Some((status, headers)) => {
                    self.stats.malformed += 1;
                    let resp = stateless_response(headers, status);
                    let dest = response_destination(headers.via().as_ref(), flow);
                    self.send(dest, resp.to_bytes());
                }
                None => self.stats.dropped += 1,
            },
        }
    }

    /// A TCP connection closed: forget it in the flows that used it.
    pub fn connection_closed(&mut self, conn: ConnId) {
        for call in self.calls.values_mut() {
            if call.dialog.flow.transport == Transport::Tcp(Some(conn)) {
                call.dialog.flow.transport = Transport::Tcp(None);
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let server = self.server.values().filter_map(|e| match &e.tx {
            ServerTx::Invite(tx) => tx.poll_timeout(),
            ServerTx::NonInvite(tx) => tx.poll_timeout(),
        });
        let client = self.client.values().filter_map(|e| e.tx.poll_timeout());
        let calls = self.calls.values().filter_map(|c| {
            let ring = match &c.state {
                CallState::Ringing { answer_at, .. } => Some(*answer_at),
                _ => None,
            };
            let unacked = c.unacked.as_ref().map(|u| u.next.min(u.give_up));
            ring.into_iter().chain(unacked).min()
        });
        let regs = self
            .registrations
            .iter()
            .filter_map(Registration::poll_timeout);
        server.chain(client).chain(calls).chain(regs).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.server_timeouts(now);
        self.client_timeouts(now);
        self.call_timeouts(now);
        self.drive_registrations(now);
    }

    /// Answers an offered call: 180 now, 200 OK with the SDP answer after `ring`.
    /// A failed negotiation answers 488 (RFC 3264 §6) and ends the call.
    pub fn answer(&mut self, now: Instant, call: CallRef, media: LocalMedia, ring: Duration) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !matches!(c.state, CallState::Offered) {
            return;
        }
        if let Some(offer) = &c.offer
            && sdp::answer(offer, &media).is_err()
        {
            self.reject(now, call, 488);
            return;
        }
        c.state = CallState::Ringing {
            answer_at: now + ring,
            media,
        };
        let ringing = self.call_response(call, 180, None);
        if let Some(resp) = ringing {
            self.respond_invite(now, call, resp);
        }
        if ring.is_zero() {
            self.call_timeouts(now);
        }
    }

    /// Refuses an offered or ringing call with a final status.
    pub fn reject(&mut self, now: Instant, call: CallRef, status: u16) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.invite_final {
            return;
        }
        if let Some(resp) = self.call_response(call, status, None) {
            self.respond_invite(now, call, resp);
        }
        self.end_call(call, EndReason::Rejected(status));
    }

    /// Ends a call from our side: BYE once confirmed, or a final error before the answer.
    pub fn hangup(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.state {
            CallState::Offered | CallState::Ringing { .. } => {
                self.reject(now, call, 480);
            }
            CallState::Established if !c.confirmed => c.bye_after_ack = true,
            CallState::Established => self.send_bye(now, call, EndReason::LocalHangup),
            CallState::Terminating => {}
        }
    }

    // ---- requests -------------------------------------------------------------------------

    fn handle_request(&mut self, now: Instant, flow: Flow, mut req: Request) {
        stamp_received(&mut req.headers, flow.remote);
        let Some(key) = tx_key(&req) else {
            self.reply(&req, flow, 400);
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
        let invite_key = with_method(&key, "INVITE");
        if let Some(ServerEntry {
            tx: ServerTx::Invite(tx),
            ..
        }) = self.server.get_mut(&invite_key)
            && tx.on_ack(now)
        {
            return;
        }
        // An ACK for a 2xx is part of the dialog (§13.2.2.4 / §13.3.1.4).
        let Some(call) = self.dialog_of(&req) else {
            return;
        };
        let cseq = req.headers.cseq().map(|c| c.seq);
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.unacked.as_ref().map(|u| u.cseq) != cseq {
            return;
        }
        c.unacked = None;
        let first = !c.confirmed;
        c.confirmed = true;
        // Late offer: our 2xx carried the offer and the ACK the answer.
        if c.offer.is_none()
            && !req.body.is_empty()
            && let (Ok(answer), Some(local)) =
                (SessionDescription::parse(&req.body), c.media.as_ref())
        {
            match sdp::negotiate_answer(&answer, local) {
                Ok(media) => self.events.push_back(Event::MediaChanged { call, media }),
                Err(_) => {
                    self.send_bye(now, call, EndReason::LocalHangup);
                    return;
                }
            }
        }
        if c.bye_after_ack {
            self.send_bye(now, call, EndReason::LocalHangup);
        } else if first {
            self.events.push_back(Event::Confirmed { call });
        }
    }

    fn handle_cancel(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let invite_key = with_method(&key, "INVITE");
        let call = self
            .calls
            .iter()
            .find(|(_, c)| c.invite_key == invite_key && !c.invite_final)
            .map(|(r, _)| *r);
        let known = self.server.contains_key(&invite_key);
        let status = if known { 200 } else { 481 };
        self.respond_new(now, flow, key, &req, status, None);
        // §9.2: the INVITE is answered 487 if it had no final response yet.
        if let Some(call) = call {
            if let Some(resp) = self.call_response(call, 487, None) {
                self.respond_invite(now, call, resp);
            }
            self.end_call(call, EndReason::Cancelled);
        }
    }

    fn handle_new_request(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        if let Some(status) = precheck(&req) {
            let extra = match status {
                405 => Some(("Allow", ALLOW)),
                415 | 406 => Some(("Accept", ACCEPT)),
                _ => None,
            };
            let mut resp = response_to(&req, status, self.random_tag_if_needed(&req, status));
            if let Some((name, value)) = extra {
                resp.headers.push(name, value);
            }
            if status == 420 {
                let unsupported = req.headers.values("require").join(", ");
                resp.headers.push("Unsupported", unsupported);
            }
            self.respond_raw(now, flow, key, &req, resp);
            return;
        }
        let in_dialog = req
            .headers
            .to()
            .and_then(|to| to.tag().map(str::to_string))
            .is_some();
        if in_dialog {
            match self.dialog_of(&req) {
                Some(call) => self.handle_in_dialog(now, flow, key, req, call),
                // §12.2.2: a request for a dialog we do not know.
                None => self.respond_new(now, flow, key, &req, 481, None),
            }
            return;
        }
        match req.method {
            Method::Invite => self.handle_invite(now, flow, key, req),
            Method::Options => {
                let status = if self.accepting && self.calls.len() < self.config.max_calls {
                    200
                } else {
                    503
                };
                let mut resp = response_to(&req, status, Some(self.random_token(8)));
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", ACCEPT);
                resp.headers.push("Supported", "");
                if status == 503 {
                    self.stats.refused += 1;
                    resp.headers.push("Retry-After", "5");
                }
                self.respond_raw(now, flow, key, &req, resp);
            }
            // BYE, INFO... outside a dialog.
            _ => self.respond_new(now, flow, key, &req, 481, None),
        }
    }

    fn handle_invite(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        let reliable = flow.transport.is_reliable();
        let dest = response_destination(req.headers.via().as_ref(), flow);
        self.server.insert(
            key.clone(),
            ServerEntry {
                tx: ServerTx::Invite(ServerInvite::new(reliable)),
                flow: dest,
            },
        );
        // §17.2.1: 100 Trying at once, so the caller stops retransmitting.
        let trying = response_to(&req, 100, None);
        self.send_response(now, &key, trying);
        if !self.accepting {
            self.stats.refused += 1;
            let mut resp = response_to(&req, 503, Some(self.random_token(8)));
            resp.headers.push("Retry-After", "30");
            self.send_response(now, &key, resp);
            return;
        }
        if self.calls.len() >= self.config.max_calls {
            self.stats.refused += 1;
            let resp = response_to(&req, 486, Some(self.random_token(8)));
            self.send_response(now, &key, resp);
            return;
        }
        let offer = match offer_of(&req) {
            Ok(offer) => offer,
            Err(status) => {
                let tag = Some(self.random_token(8));
                self.refuse_offer(now, &key, &req, status, tag);
                return;
            }
        };
        let tag = self.random_token(10);
        let first_cseq = self.rng.random_range(1..1_000_000);
        let Some(dialog) = Dialog::from_invite(&req, &tag, flow, first_cseq) else {
            let resp = response_to(&req, 400, Some(tag));
            self.send_response(now, &key, resp);
            return;
        };
        let call = CallRef(self.next_call);
        self.next_call += 1;
        let incoming = IncomingCall {
            call,
            sip_call_id: dialog.id.call_id.clone(),
            caller: dialog.remote.uri.user.clone().unwrap_or_default(),
            callee: req.uri.user.clone().unwrap_or_default(),
            remote: flow.remote,
            offer: offer.clone(),
        };
        self.dialogs.insert(dialog.id.clone(), call);
        self.calls.insert(
            call,
            Call {
                state: CallState::Offered,
                dialog,
                invite: req,
                invite_key: key,
                invite_final: false,
                offer,
                media: None,
                unacked: None,
                bye_after_ack: false,
                confirmed: false,
            },
        );
        self.events.push_back(Event::Incoming(incoming));
    }

    fn handle_in_dialog(
        &mut self,
        now: Instant,
        flow: Flow,
        key: TxKey,
        req: Request,
        call: CallRef,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let cseq = req.headers.cseq().map_or(0, |c| c.seq);
        // §12.2.2: a lower CSeq than already seen is out of order.
        if cseq < c.dialog.remote_cseq {
            let mut resp = response_to(&req, 500, None);
            resp.headers.push("Retry-After", "1");
            self.respond_raw(now, flow, key, &req, resp);
            return;
        }
        c.dialog.remote_cseq = cseq;
        match req.method {
            Method::Bye => {
                let ringing = !c.invite_final;
                self.respond_new(now, flow, key, &req, 200, None);
                if ringing && let Some(resp) = self.call_response(call, 487, None) {
                    self.respond_invite(now, call, resp);
                }
                self.end_call(call, EndReason::RemoteBye);
            }
            Method::Invite => self.handle_reinvite(now, flow, key, req, call),
            Method::Info => {
                let digit = dtmf_from_info(&req);
                let status = match (&digit, req.body.is_empty()) {
                    (Some(_), _) | (None, true) => 200,
                    (None, false) => 415,
                };
                self.respond_new(now, flow, key, &req, status, None);
                if let Some((digit, duration_ms)) = digit {
                    self.events.push_back(Event::Dtmf {
                        call,
                        digit,
                        duration_ms,
                    });
                }
            }
            Method::Options => {
                let mut resp = response_to(&req, 200, None);
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", ACCEPT);
                self.respond_raw(now, flow, key, &req, resp);
            }
            _ => {
                let mut resp = response_to(&req, 405, None);
                resp.headers.push("Allow", ALLOW);
                self.respond_raw(now, flow, key, &req, resp);
            }
        }
    }

    /// §14.2: a re-INVITE (hold, resume, new media).
    fn handle_reinvite(
        &mut self,
        now: Instant,
        flow: Flow,
        key: TxKey,
        req: Request,
        call: CallRef,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        // §14.2: an INVITE while ours is unfinished, or our 2xx not yet ACKed, gets 491/500.
        if !c.invite_final || c.unacked.is_some() || !matches!(c.state, CallState::Established) {
            let status = if c.invite_final { 491 } else { 500 };
            self.respond_new(now, flow, key, &req, status, None);
            return;
        }
        let reliable = flow.transport.is_reliable();
        let dest = response_destination(req.headers.via().as_ref(), flow);
        self.server.insert(
            key.clone(),
            ServerEntry {
                tx: ServerTx::Invite(ServerInvite::new(reliable)),
                flow: dest,
            },
        );
        let offer = match offer_of(&req) {
            Ok(offer) => offer,
            Err(status) => {
                self.refuse_offer(now, &key, &req, status, None);
                return;
            }
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(mut media) = c.media.clone() else {
            return;
        };
        media.session_version += 1;
        let (body, negotiated) = match &offer {
            Some(offer) => match sdp::answer(offer, &media) {
                Ok((body, negotiated)) => (body, Some(negotiated)),
                Err(_) => {
                    // RFC 3264 §8: a rejected modification leaves the session as it was.
                    let resp = response_to(&req, 488, None);
                    self.send_response(now, &key, resp);
                    return;
                }
            },
            None => (sdp::offer(&media), None),
        };
        c.media = Some(media);
        c.offer = offer;
        // §12.2.2: a re-INVITE is a target refresh request.
        if let Some(contact) = req.headers.contact() {
            c.dialog.remote_target = Some(contact.uri);
        }
        c.invite = req;
        c.invite_key = key;
        c.invite_final = false;
        if let Some(resp) = self.call_response(call, 200, Some(body)) {
            self.respond_invite(now, call, resp);
        }
        if let Some(media) = negotiated {
            self.events.push_back(Event::MediaChanged { call, media });
        }
    }

    // ---- responses ------------------------------------------------------------------------

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let Some(branch) = resp
            .headers
            .via()
            .and_then(|v| v.branch().map(str::to_string))
        else {
            self.stats.dropped += 1;
            return;
        };
        let Some(entry) = self.client.get_mut(&branch) else {
            // bcast.dat, strays, retransmitted 200s of finished transactions.
            self.stats.dropped += 1;
            return;
        };
        if entry.tx.on_response(now, resp.status) == Delivery::Absorb || resp.status < 200 {
            return;
        }
        let purpose = entry.purpose.clone();
        if entry.tx.is_terminated() {
            self.client.remove(&branch);
        }
        match purpose {
            Purpose::Bye(call) => {
                self.calls.remove(&call);
            }
            Purpose::Register(idx) => {
                let Some(reg) = self.registrations.get_mut(idx) else {
                    return;
                };
                let outcome = reg.on_response(now, &resp);
                let trunk = reg.trunk.name.clone();
                self.events
                    .push_back(Event::Registration { trunk, outcome });
                self.drive_registrations(now);
            }
        }
    }

    // ---- timers ---------------------------------------------------------------------------

    fn server_timeouts(&mut self, now: Instant) {
        let mut done = Vec::new();
        for (key, entry) in &mut self.server {
            loop {
                let action = match &mut entry.tx {
                    ServerTx::Invite(tx) => tx.handle_timeout(now),
                    ServerTx::NonInvite(tx) => tx.handle_timeout(now),
                };
                match action {
                    Some(Action::Retransmit(bytes)) => {
                        self.transmits.push_back(Transmit {
                            flow: entry.flow,
                            bytes,
                        });
                    }
                    // The call that refused with this response has already ended.
                    Some(_) => done.push(key.clone()),
                    None => break,
                }
            }
        }
        for key in done {
            self.server.remove(&key);
        }
    }

    fn client_timeouts(&mut self, now: Instant) {
        let mut finished = Vec::new();
        for (branch, entry) in &mut self.client {
            while let Some(action) = entry.tx.handle_timeout(now) {
                match action {
                    Action::Retransmit(bytes) => {
                        self.transmits.push_back(Transmit {
                            flow: entry.flow,
                            bytes,
                        });
                    }
                    Action::TimedOut => {
                        finished.push((branch.clone(), Some(entry.purpose.clone())))
                    }
                    _ => finished.push((branch.clone(), None)),
                }
            }
        }
        for (branch, timed_out) in finished {
            self.client.remove(&branch);
            match timed_out {
                Some(Purpose::Bye(call)) => {
                    self.calls.remove(&call);
                }
                Some(Purpose::Register(idx)) => {
                    if let Some(reg) = self.registrations.get_mut(idx) {
                        let outcome = reg.on_timeout(now);
                        let trunk = reg.trunk.name.clone();
                        self.events
                            .push_back(Event::Registration { trunk, outcome });
                    }
                }
                None => {}
            }
        }
    }

    fn call_timeouts(&mut self, now: Instant) {
        let refs: Vec<CallRef> = self.calls.keys().copied().collect();
        for call in refs {
            let Some(c) = self.calls.get_mut(&call) else {
                continue;
            };
            if let CallState::Ringing { answer_at, .. } = c.state
                && answer_at <= now
            {
                self.send_answer(now, call);
            }
            let Some(c) = self.calls.get_mut(&call) else {
                continue;
            };
            let Some(unacked) = c.unacked.as_mut() else {
                continue;
            };
            if unacked.give_up <= now {
                // §13.3.1.4: no ACK within 64·T1 — confirm and immediately end the dialog.
                c.unacked = None;
                c.confirmed = true;
                self.send_bye(now, call, EndReason::AckTimeout);
            } else if unacked.next <= now {
                if !c.dialog.flow.transport.is_reliable() {
                    let bytes = unacked.bytes.clone();
                    unacked.interval = (unacked.interval * 2).min(T2);
                    unacked.next = now + unacked.interval;
                    let dest = response_destination(c.invite.headers.via().as_ref(), c.dialog.flow);
                    self.transmits.push_back(Transmit { flow: dest, bytes });
                } else {
                    unacked.next = unacked.give_up;
                }
            }
        }
    }

    fn drive_registrations(&mut self, now: Instant) {
        for idx in 0..self.registrations.len() {
            let due = self
                .registrations
                .get(idx)
                .is_some_and(|r| r.is_due(now) && self.accepting);
            if due {
                self.send_register(now, idx);
            }
        }
    }

    // ---- sending --------------------------------------------------------------------------

    /// 200 OK with the SDP answer (§13.3.1.4), retransmitted until the ACK arrives.
    fn send_answer(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let CallState::Ringing { media, .. } =
            std::mem::replace(&mut c.state, CallState::Established)
        else {
            return;
        };
        let body = match &c.offer {
            Some(offer) => match sdp::answer(offer, &media) {
                Ok((body, negotiated)) => {
                    self.events.push_back(Event::MediaChanged {
                        call,
                        media: negotiated,
                    });
                    body
                }
                Err(_) => {
                    self.reject(now, call, 488);
                    return;
                }
            },
            None => sdp::offer(&media),
        };
        if let Some(c) = self.calls.get_mut(&call) {
            c.media = Some(media);
        }
        if let Some(resp) = self.call_response(call, 200, Some(body)) {
            self.respond_invite(now, call, resp);
        }
    }

    /// A response to the call's current INVITE, with our tag, Contact and Record-Route.
    fn call_response(&self, call: CallRef, status: u16, sdp: Option<String>) -> Option<Response> {
        let c = self.calls.get(&call)?;
        let mut resp = response_to(&c.invite, status, Some(c.dialog.id.local_tag.clone()));
        if (101..300).contains(&status) {
            for rr in c.invite.headers.get_all("record-route") {
                resp.headers.push("Record-Route", rr);
            }
            resp.headers
                .push("Contact", self.contact(c.dialog.flow.transport));
            resp.headers.push("Allow", ALLOW);
        }
        if let Some(body) = sdp {
            resp.headers.push("Content-Type", ACCEPT);
            resp.body = body.into_bytes();
        }
        Some(resp)
    }

    fn respond_invite(&mut self, now: Instant, call: CallRef, resp: Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let key = c.invite_key.clone();
        let status = resp.status;
        if status >= 200 {
            c.invite_final = true;
        }
        if (200..300).contains(&status) {
            let cseq = c.invite.headers.cseq().map_or(0, |cs| cs.seq);
            c.unacked = Some(Unacked {
                cseq,
                bytes: resp.to_bytes(),
                next: now + T1,
                interval: T1,
                give_up: now + TIMEOUT,
            });
        }
        self.send_response(now, &key, resp);
    }

    /// Answers an INVITE whose body is no usable offer (400, or 415 with Accept).
    fn refuse_offer(
        &mut self,
        now: Instant,
        key: &TxKey,
        req: &Request,
        status: u16,
        tag: Option<String>,
    ) {
        let mut resp = response_to(req, status, tag);
        if status == 415 {
            resp.headers.push("Accept", ACCEPT);
        }
        self.send_response(now, key, resp);
    }

    /// Sends a response through its server transaction.
    fn send_response(&mut self, now: Instant, key: &TxKey, resp: Response) {
        let bytes = resp.to_bytes();
        let Some(entry) = self.server.get_mut(key) else {
            return;
        };
        match &mut entry.tx {
            ServerTx::Invite(tx) => tx.on_response(now, resp.status, &bytes),
            ServerTx::NonInvite(tx) => tx.on_response(now, resp.status, &bytes),
        }
        let flow = entry.flow;
        let terminated = match &entry.tx {
            ServerTx::Invite(tx) => tx.is_terminated(),
            ServerTx::NonInvite(tx) => tx.is_terminated(),
        };
        if terminated {
            self.server.remove(key);
        }
        self.send(flow, bytes);
    }

    /// Answers a non-INVITE request in a new server transaction.
    fn respond_new(
        &mut self,
        now: Instant,
        flow: Flow,
        key: TxKey,
        req: &Request,
        status: u16,
        body: Option<String>,
    ) {
        let tag = self.random_tag_if_needed(req, status);
        let mut resp = response_to(req, status, tag);
        if let Some(body) = body {
            resp.body = body.into_bytes();
        }
        self.respond_raw(now, flow, key, req, resp);
    }

    fn respond_raw(&mut self, now: Instant, flow: Flow, key: TxKey, req: &Request, resp: Response) {
        let dest = response_destination(req.headers.via().as_ref(), flow);
        let tx = match req.method {
            Method::Invite => ServerTx::Invite(ServerInvite::new(flow.transport.is_reliable())),
            _ => ServerTx::NonInvite(ServerNonInvite::new(flow.transport.is_reliable())),
        };
        self.server
            .insert(key.clone(), ServerEntry { tx, flow: dest });
        self.send_response(now, &key, resp);
    }

    /// A stateless reply (the request had no usable transaction key).
    fn reply(&mut self, req: &Request, flow: Flow, status: u16) {
        let resp = response_to(req, status, self.random_tag_if_needed(req, status));
        let dest = response_destination(req.headers.via().as_ref(), flow);
        self.send(dest, resp.to_bytes());
    }

    fn send_bye(&mut self, now: Instant, call: CallRef, reason: EndReason) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if matches!(c.state, CallState::Terminating) {
            return;
        }
        c.state = CallState::Terminating;
        let mut bye = c.dialog.request(Method::Bye);
        let flow = c.dialog.next_hop();
        let user_agent = self.config.user_agent.clone();
        bye.headers.push("User-Agent", user_agent);
        self.send_request(now, flow, bye, Purpose::Bye(call));
        // The call is over for the application now; the BYE transaction finishes on its own.
        self.end_call_keep(call, reason);
    }

    fn send_register(&mut self, now: Instant, idx: usize) {
        let advertised = self.config.advertised.to_string();
        let cnonce = self.random_token(16);
        let Some(reg) = self.registrations.get_mut(idx) else {
            return;
        };
        let flow = Flow {
            transport: reg.trunk.transport,
            remote: reg.trunk.registrar,
        };
        let mut request = reg.request(&advertised, &cnonce);
        request
            .headers
            .push("User-Agent", self.config.user_agent.clone());
        self.send_request(now, flow, request, Purpose::Register(idx));
    }

    /// Adds our Via and starts a non-INVITE client transaction.
    fn send_request(&mut self, now: Instant, flow: Flow, mut request: Request, purpose: Purpose) {
        let branch = format!("z9hG4bK{}", self.random_token(16));
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            flow.transport.via_token(),
            self.config.advertised
        );
        let mut headers = Headers::default();
        headers.push("Via", via);
        for (name, value) in request.headers.iter() {
            headers.push(name, value);
        }
        request.headers = headers;
        let bytes = request.to_bytes();
        let tx = ClientNonInvite::new(now, bytes.clone(), flow.transport.is_reliable());
        self.client
            .insert(branch, ClientEntry { tx, flow, purpose });
        self.send(flow, bytes);
    }

    fn send(&mut self, flow: Flow, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { flow, bytes });
    }

    // ---- bookkeeping ----------------------------------------------------------------------

    fn end_call(&mut self, call: CallRef, reason: EndReason) {
        if let Some(c) = self.calls.remove(&call) {
            self.dialogs.remove(&c.dialog.id);
            if !matches!(c.state, CallState::Terminating) {
                self.events.push_back(Event::Ended { call, reason });
            }
        }
    }

    /// Reports the end but keeps the call until its BYE transaction completes.
    fn end_call_keep(&mut self, call: CallRef, reason: EndReason) {
        if let Some(c) = self.calls.get(&call) {
            self.dialogs.remove(&c.dialog.id);
            self.events.push_back(Event::Ended { call, reason });
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

    fn contact(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("<sip:earshot@{}>", self.config.advertised),
            Transport::Tcp(_) => format!("<sip:earshot@{};transport=tcp>", self.config.advertised),
        }
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

    /// §8.2.6.2: a final response outside a dialog gets a fresh To tag.
    fn random_tag_if_needed(&mut self, req: &Request, status: u16) -> Option<String> {
        let tagged = req.headers.to().is_some_and(|to| to.tag().is_some());
        (status > 100 && !tagged).then(|| self.random_token(10))
    }
}

/// §8.2.6.2: a response carrying the request's Via, From, To (plus our tag), Call-ID and CSeq.
fn response_to(req: &Request, status: u16, tag: Option<String>) -> Response {
    let mut resp = stateless_response(&req.headers, status);
    if let (Some(tag), true) = (tag, status > 100)
        && let Some(to) = req.headers.to()
        && to.tag().is_none()
    {
        resp.headers.set("To", to.with_tag(&tag).to_string());
    }
    resp
}

/// A response built from whatever identifying headers could be read.
fn stateless_response(headers: &Headers, status: u16) -> Response {
    let mut out = Headers::default();
    for name in ["via", "from", "to", "call-id", "cseq"] {
        for value in headers.get_all(name) {
            out.push(canonical_name(name), value);
        }
    }
    Response {
        status,
        reason: Response::reason_for(status).to_string(),
        headers: out,
        body: Vec::new(),
    }
}

fn canonical_name(name: &str) -> &'static str {
    match name {
        "via" => "Via",
        "from" => "From",
        "to" => "To",
        "call-id" => "Call-ID",
        _ => "CSeq",
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

/// §8.2.1–§8.2.3: checks that refuse a request before any processing, as a status code.
fn precheck(req: &Request) -> Option<u16> {
    // §8.2.1: methods we do not know are 501; ones we know but do not serve, 405.
    match &req.method {
        Method::Other(_) => return Some(501),
        Method::Register
        | Method::Subscribe
        | Method::Notify
        | Method::Refer
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
    // §8.2.2.3: any Require option tag is one we do not support (we support none).
    if req.method != Method::Cancel && !req.headers.values("require").is_empty() {
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

/// The SDP offer of an INVITE: `None` for a late offer (no body), or the status that refuses
/// it — 415 for a body that holds no SDP, 400 for SDP that does not parse.
fn offer_of(req: &Request) -> Result<Option<SessionDescription>, u16> {
    if req.body.is_empty() {
        return Ok(None);
    }
    let body = sdp_body(req).ok_or(415u16)?;
    SessionDescription::parse(body).map(Some).map_err(|_| 400)
}

/// The SDP of a request: the body itself, or the application/sdp part of a multipart body.
fn sdp_body(req: &Request) -> Option<&[u8]> {
    let media = req
        .headers
        .content_media_type()
        .unwrap_or_else(|| ACCEPT.to_string());
    if media == ACCEPT {
        return Some(&req.body);
    }
    if media.starts_with("multipart/") {
        let content_type = req.headers.content_type()?;
        let boundary = content_type.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })?;
        return multipart_sdp(&req.body, &boundary);
    }
    None
}

/// RFC 2046 §5.1: finds the application/sdp part of a multipart body.
fn multipart_sdp<'a>(body: &'a [u8], boundary: &str) -> Option<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    loop {
        let start = find(rest, delimiter.as_bytes())?;
        rest = rest.get(start + delimiter.len()..)?;
        if rest.starts_with(b"--") {
            return None;
        }
        let end = find(rest, delimiter.as_bytes()).unwrap_or(rest.len());
        let part = rest.get(..end)?;
        let header_end = find(part, b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| find(part, b"\n\n").map(|i| (i, 2)))?;
        let head = String::from_utf8_lossy(part.get(..header_end.0)?).to_ascii_lowercase();
        if head
            .lines()
            .any(|l| l.starts_with("content-type") && l.contains("application/sdp"))
        {
            let body = part.get(header_end.0 + header_end.1..)?;
            let body = body.strip_suffix(b"\r\n").unwrap_or(body);
            return Some(body);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// SIP INFO DTMF: `application/dtmf-relay` (`Signal=5`, `Duration=160`) or `application/dtmf`.
fn dtmf_from_info(req: &Request) -> Option<(char, u32)> {
    let media = req.headers.content_media_type()?;
    let body = std::str::from_utf8(&req.body).ok()?;
    let digit_of = |s: &str| {
        let s = s.trim();
        match s {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => s
                .chars()
                .next()
                .filter(|c| c.is_ascii_digit() || "*#ABCDabcd".contains(*c))
                .map(|c| c.to_ascii_uppercase()),
        }
    };
    match media.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = 160;
            for line in body.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = digit_of(v),
                    "duration" => duration = v.trim().parse().unwrap_or(160),
                    _ => {}
                }
            }
            digit.map(|d| (d, duration))
        }
        "application/dtmf" => digit_of(body).map(|d| (d, 160)),
        _ => None,
    }
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
