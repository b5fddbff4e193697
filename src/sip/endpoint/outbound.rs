//! Calls earshot places, as a UAC: RFC 3261 §13.2 from the INVITE to the dialog it creates.
//!
//! [`Endpoint::place_call`] sends the INVITE, with our SDP offer (RFC 3264 §5), in an INVITE
//! client transaction (§17.1.1). What comes back:
//!
//! - 100 is absorbed; 18x is [`Event::Progress`], with the early-media answer when it carries
//!   SDP (§13.2.1: the first answer counts).
//! - 401/407 is answered once per challenge (§22.2, §22.3; MD5 or SHA-256 as for REGISTER): a
//!   new INVITE with a new CSeq and branch, the same Call-ID and From tag (§8.1.3.5). A second
//!   challenge in a row that is not `stale` means the credentials were refused.
//! - 3xx: the first Contact becomes the new Request-URI (§8.1.3.4), at most `max_redirects`
//!   times and never to a target already tried.
//! - 2xx: the dialog of §12.1.2 (route set from Record-Route reversed, remote target from
//!   Contact) becomes a call like an incoming one, ACKed per §13.2.2.4; every retransmission
//!   of that 2xx is ACKed again. Forking: the first 2xx wins, a later 2xx with another To tag
//!   is ACKed and then ended with a BYE (§13.2.2.4).
//! - Any other final response, or Timer B, is [`Event::Failed`].
//!
//! RFC 4028 §7.1: the INVITE asks for a session timer (`Session-Expires` without refresher,
//! `Supported: timer`, our `Min-SE`); the winning 2xx starts the call's timer as it states it
//! (§7.4), or with earshot the lone refresher of the interval asked for when it states none.
//! A 422 (Session Interval Too Small) is retried once per raise with Session-Expires and
//! Min-SE at the 422's Min-SE (§7.4), at most [`MAX_INTERVAL_RAISES`] times.
//!
//! The ring timeout, and a hang-up before the answer, CANCEL the INVITE (§9.1) — only once a
//! provisional response came; before one, the CANCEL waits for it (or Timer B ends the call).
//! The 487 that follows ends the call; a 2xx that crosses the CANCEL is ACKed and hung up.
//!
//! Each attempt (the first INVITE, each one answering a challenge or following a redirect)
//! keeps its transaction until it terminates, so a retransmitted final response is ACKed
//! again (§17.1.1.3) whichever attempt it answers.

use std::time::{Duration, Instant};

use super::uac::Purpose;
use super::{CallRef, Endpoint, Event, Transmit};
use crate::sip::auth::{self, Challenge, Credentials};
use crate::sip::dialog::{Dialog, DialogId, Flow};
use crate::sip::message::{Headers, Method, NameAddr, Request, Response, Uri};
use crate::sip::sdp::{self, LocalMedia, Negotiated, SessionDescription};
use crate::sip::session_timer::TimerPolicy;
use crate::sip::transaction::{Action, ClientInvite, ClientNonInvite, Delivery, TIMEOUT};

/// Challenges answered for one call (stale nonces included) before it fails.
const MAX_CHALLENGES: usize = 4;
/// 422 answers retried with a longer session interval before the call fails.
const MAX_INTERVAL_RAISES: usize = 2;
/// Forked 2xx (other To tags) whose ACK is kept for their retransmissions.
const MAX_FORKS: usize = 8;

/// The digest credentials of the trunk a call goes through.
#[derive(Debug, Clone)]
pub struct TrunkCredentials {
    pub username: String,
    pub password: String,
}

/// A call to place.
#[derive(Debug, Clone)]
pub struct OutboundCall {
    /// The Request-URI.
    pub target: Uri,
    /// Our identity, in From: the trunk's user at its domain, or earshot at our address.
    pub from: Uri,
    /// What 401/407 are answered with; `None` fails the call on a challenge.
    pub credentials: Option<TrunkCredentials>,
    /// Where the INVITE goes (resolved by the driver): the trunk's proxy, or the target's host.
    pub next_hop: Flow,
    /// The next hop is a proxy that stays in the path: redirects keep sending to it.
    pub via_proxy: bool,
    /// Our media, offered in the INVITE.
    pub media: LocalMedia,
    /// How long the callee may ring before the INVITE is cancelled (`[calls].ring_timeout_secs`).
    pub ring_timeout: Duration,
    /// Redirections (3xx) followed before the call fails (`[calls].max_redirects`; 0 fails the
    /// first 3xx).
    pub max_redirects: usize,
    /// RFC 3892: who asked for this call, when it carries out a peer's REFER.
    pub referred_by: Option<String>,
}

/// Why a call could not be placed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("shutting down")]
    ShuttingDown,
    #[error("at the concurrent call limit")]
    AtCapacity,
}

/// Why a placed call failed before (or instead of) its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// A 4xx, 5xx or 6xx final response.
    Rejected,
    /// A challenge we could not answer, or a second one after our credentials.
    AuthFailed,
    /// No final response (Timer B), or none to our CANCEL within 64·T1.
    Timeout,
    /// The ring timeout passed: cancelled.
    NoAnswer,
    /// Hung up from our side before the answer: cancelled.
    Cancelled,
    /// More redirects than [`OutboundCall::max_redirects`].
    TooManyRedirects,
    /// A redirect back to a target already tried.
    RedirectLoop,
    /// A 3xx without a usable `sip:` Contact.
    BadRedirect,
    /// A 2xx whose SDP answer is unusable (or refused by `[rtp].allow_media`): ACKed, then
    /// ended with a BYE.
    UnusableAnswer,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Rejected => "rejected",
            FailReason::AuthFailed => "auth_failed",
            FailReason::Timeout => "timeout",
            FailReason::NoAnswer => "no_answer",
            FailReason::Cancelled => "cancelled",
            FailReason::TooManyRedirects => "too_many_redirects",
            FailReason::RedirectLoop => "redirect_loop",
            FailReason::BadRedirect => "bad_redirect",
            FailReason::UnusableAnswer => "unusable_answer",
        }
    }
}

/// Where a placed call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent; no provisional response yet, so no CANCEL may be sent (§9.1).
    Calling,
    /// A provisional response came.
    Proceeding,
    /// To be cancelled (for this reason) as soon as a provisional response comes.
    CancelPending(FailReason),
    /// CANCEL sent; the INVITE's final response is awaited until `give_up`.
    Cancelling {
        reason: FailReason,
        give_up: Instant,
    },
    /// A 2xx won: the call lives on in the endpoint's calls; what is left here ACKs
    /// retransmitted and forked 2xx until the transactions end.
    Accepted,
    /// Failed and reported; what is left ACKs retransmitted finals until the transactions end.
    Over,
}

/// One INVITE of the call, in its client transaction.
#[derive(Debug)]
struct Attempt {
    branch: String,
    /// As sent (with our Via): what a CANCEL and a non-2xx ACK are built from.
    request: Request,
    tx: ClientInvite,
    flow: Flow,
    /// The ACK of the non-2xx final response, resent for each retransmission of it.
    ack: Option<Vec<u8>>,
}

/// A call being placed, from the INVITE until its transactions end.
#[derive(Debug)]
pub(super) struct Outbound {
    spec: OutboundCall,
    call_id: String,
    /// Our From tag.
    local_tag: String,
    cseq: u32,
    phase: Phase,
    /// Every INVITE sent; the last is the current one.
    attempts: Vec<Attempt>,
    /// The CANCEL of the current INVITE, in its own non-INVITE transaction.
    cancel: Option<ClientNonInvite>,
    /// When the ring timeout cancels the call.
    ring_at: Instant,
    /// The challenge of the last 401/407, and whether it came as 407.
    challenge: Option<(Challenge, bool)>,
    /// Challenges answered in a row without a non-challenge answer.
    challenges: usize,
    /// The session timer asked for: `[sip]`'s, or raised by a 422 (RFC 4028 §7.4).
    timers: TimerPolicy,
    /// 422s answered with a raise.
    raises: usize,
    /// Every Request-URI tried (redirect loops).
    tried: Vec<String>,
    /// The early-media answer of a provisional response.
    early: Option<Negotiated>,
    /// The ACK of each 2xx by its To tag: the winner's first, then forks'.
    acks: Vec<(String, Transmit)>,
}

impl Outbound {
    /// Whether the call is still being placed (not answered, not failed).
    pub(super) fn is_pending(&self) -> bool {
        !matches!(self.phase, Phase::Accepted | Phase::Over)
    }

    /// Nothing left to do: answered or failed, and every transaction over.
    fn is_finished(&self) -> bool {
        !self.is_pending()
            && self.attempts.iter().all(|a| a.tx.is_terminated())
            && self
                .cancel
                .as_ref()
                .is_none_or(ClientNonInvite::is_terminated)
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let txs = self.attempts.iter().filter_map(|a| a.tx.poll_timeout());
        let cancel = self.cancel.as_ref().and_then(ClientNonInvite::poll_timeout);
        let phase = match self.phase {
            Phase::Calling | Phase::Proceeding => Some(self.ring_at),
            Phase::Cancelling { give_up, .. } => Some(give_up),
            _ => None,
        };
        txs.chain(cancel).chain(phase).min()
    }

    fn current(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// §17.1.1.3: the ACK of a non-2xx final response to `attempt`: its Request-URI, Call-ID,
    /// From, CSeq number and Via; the response's To.
    fn non_2xx_ack(attempt: &Attempt, resp: &Response) -> Vec<u8> {
        let to = resp.headers.get("to").unwrap_or_default();
        Self::same_transaction(attempt, Method::Ack, to)
    }

    /// §9.1: the CANCEL of `attempt`: its Request-URI, Call-ID, From, To, CSeq number and Via.
    fn cancel_of(attempt: &Attempt) -> Vec<u8> {
        let to = attempt.request.headers.get("to").unwrap_or_default();
        Self::same_transaction(attempt, Method::Cancel, to)
    }

    /// A request that names the INVITE of `attempt` (its branch, Request-URI, From, Call-ID and
    /// CSeq number) with `method` and this To.
    fn same_transaction(attempt: &Attempt, method: Method, to: &str) -> Vec<u8> {
        let inv = &attempt.request.headers;
        let mut headers = Headers::default();
        for name in ["via", "max-forwards", "from"] {
            if let Some(value) = inv.get(name) {
                headers.push(name, value);
            }
        }
        headers.push("To", to);
        headers.push("Call-ID", inv.call_id().unwrap_or_default());
        let seq = inv.cseq().map_or(0, |c| c.seq);
        headers.push("CSeq", format!("{seq} {method}"));
        Request {
            method,
            uri: attempt.request.uri.clone(),
            headers,
            body: Vec::new(),
        }
        .to_bytes()
    }

    /// The credentials header of the current INVITE, which the ACK of its 2xx repeats
    /// (§13.2.2.4).
    fn credentials_header(&self) -> Option<(&'static str, String)> {
        let headers = &self.current()?.request.headers;
        ["Authorization", "Proxy-Authorization"]
            .into_iter()
            .find_map(|name| Some((name, headers.get(name)?.to_string())))
    }

    /// §12.1.2: the dialog a 2xx (or the 2xx of a fork) creates.
    fn dialog(&self, resp: &Response, flow: Flow) -> Option<Dialog> {
        let to = resp.headers.to()?;
        let remote_tag = to.tag().unwrap_or_default().to_string();
        let mut route_set: Vec<String> = resp
            .headers
            .values("record-route")
            .into_iter()
            .map(str::to_string)
            .collect();
        route_set.reverse();
        Some(Dialog {
            id: DialogId {
                call_id: self.call_id.clone(),
                local_tag: self.local_tag.clone(),
                remote_tag,
            },
            local: NameAddr::new(self.spec.from.clone()).with_tag(&self.local_tag),
            remote: to,
            remote_target: resp.headers.contact().map(|c| c.uri),
            route_set,
            local_cseq: self.cseq,
            remote_cseq: 0,
            flow,
        })
    }
}

impl Endpoint {
    /// Places a call: sends the INVITE with our SDP offer and returns the call's handle. What
    /// follows comes as [`Event::Progress`], [`Event::Answered`] (then the events of any call)
    /// or [`Event::Failed`].
    pub fn place_call(&mut self, now: Instant, spec: OutboundCall) -> Result<CallRef, PlaceError> {
        if !self.accepting {
            return Err(PlaceError::ShuttingDown);
        }
        let pending = self.outbound.values().filter(|o| o.is_pending()).count();
        if self.calls.len() + pending >= self.config.max_calls {
            return Err(PlaceError::AtCapacity);
        }
        let call = CallRef(self.next_call);
        self.next_call += 1;
        let ring_at = now + spec.ring_timeout;
        let out = Outbound {
            call_id: format!("{}@earshot", self.random_token(20)),
            local_tag: self.random_token(10),
            cseq: rand::Rng::random_range(&mut self.rng, 1..1_000_000),
            phase: Phase::Calling,
            attempts: Vec::new(),
            cancel: None,
            ring_at,
            challenge: None,
            challenges: 0,
            timers: self.policy.timers,
            raises: 0,
            tried: vec![spec.target.to_string()],
            early: None,
            acks: Vec::new(),
            spec,
        };
        self.outbound.insert(call, out);
        self.send_invite(now, call);
        Ok(call)
    }

    /// The SIP Call-ID of a call being placed.
    pub fn outbound_call_id(&self, call: CallRef) -> Option<&str> {
        self.outbound.get(&call).map(|o| o.call_id.as_str())
    }

    /// Hangs up a call still being placed (CANCEL, §9.1). False when `call` is not one, and the
    /// hang-up is for its dialog.
    pub(super) fn hangup_outbound(&mut self, now: Instant, call: CallRef) -> bool {
        if !self.outbound.get(&call).is_some_and(Outbound::is_pending) {
            return false;
        }
        self.cancel_outbound(now, call, FailReason::Cancelled);
        true
    }

    /// A new INVITE for the call's current target, with the credentials of the last challenge.
    fn send_invite(&mut self, now: Instant, call: CallRef) {
        let advertised = self.config.advertised;
        let user_agent = self.config.user_agent.clone();
        let cnonce = self.random_token(16);
        let branch = format!("z9hG4bK{}", self.random_token(16));
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        out.cseq = out.cseq.wrapping_add(1);
        let timers = out.timers;
        let spec = &out.spec;
        let flow = spec.next_hop;
        let mut headers = Headers::default();
        headers.push(
            "Via",
            format!(
                "SIP/2.0/{} {advertised};branch={branch};rport",
                flow.transport.via_token()
            ),
        );
        headers.push("Max-Forwards", "70");
        headers.push(
            "From",
            NameAddr::new(spec.from.clone())
                .with_tag(&out.local_tag)
                .to_string(),
        );
        headers.push("To", NameAddr::new(spec.target.clone()).to_string());
        headers.push("Call-ID", out.call_id.clone());
        headers.push("CSeq", format!("{} INVITE", out.cseq));
        headers.push("Contact", super::call::contact(advertised, flow.transport));
        headers.push("Allow", super::ALLOW);
        // RFC 4028 §7.1: we ask for a session timer and let the UAS choose the refresher.
        headers.push("Supported", super::SUPPORTED);
        headers.push("Session-Expires", timers.request_value().to_string());
        headers.push("Min-SE", timers.min_se.to_string());
        headers.push("User-Agent", user_agent);
        if let Some(referred_by) = &spec.referred_by {
            headers.push("Referred-By", referred_by.clone());
        }
        if let (Some((ch, proxy)), Some(creds)) = (&out.challenge, &spec.credentials) {
            let creds = Credentials {
                username: &creds.username,
                password: &creds.password,
            };
            let uri = spec.target.to_string();
            let value = auth::authorization(ch, &creds, "INVITE", &uri, &cnonce, 1);
            let name = if *proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            headers.push(name, value);
        }
        headers.push("Content-Type", super::ACCEPT);
        let request = Request {
            method: Method::Invite,
            uri: spec.target.clone(),
            headers,
            body: sdp::offer(&spec.media).into_bytes(),
        };
        let bytes = request.to_bytes();
        let tx = ClientInvite::new(now, bytes.clone(), flow.transport.is_reliable());
        out.attempts.push(Attempt {
            branch,
            request,
            tx,
            flow,
            ack: None,
        });
        self.send(flow, bytes);
    }

    /// §9.1: cancels the call's INVITE now if a provisional response came, else as soon as
    /// one does.
    fn cancel_outbound(&mut self, now: Instant, call: CallRef, reason: FailReason) {
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        match out.phase {
            Phase::Calling => out.phase = Phase::CancelPending(reason),
            Phase::Proceeding => {
                let Some(attempt) = out.current() else {
                    return;
                };
                let bytes = Outbound::cancel_of(attempt);
                let flow = attempt.flow;
                out.cancel = Some(ClientNonInvite::new(
                    now,
                    bytes.clone(),
                    flow.transport.is_reliable(),
                ));
                out.phase = Phase::Cancelling {
                    reason,
                    give_up: now + TIMEOUT,
                };
                self.send(flow, bytes);
            }
            _ => {}
        }
    }

    /// A response whose top Via names one of our INVITEs (or their CANCEL): handled here, and
    /// true; false when it belongs to no call being placed.
    pub(super) fn outbound_response(
        &mut self,
        now: Instant,
        branch: &str,
        resp: &Response,
    ) -> bool {
        let found = self.outbound.iter().find_map(|(call, out)| {
            let idx = out.attempts.iter().position(|a| a.branch == branch)?;
            Some((*call, idx, idx + 1 == out.attempts.len()))
        });
        let Some((call, idx, current)) = found else {
            return false;
        };
        let method = resp.headers.cseq().map(|c| c.method);
        let Some(out) = self.outbound.get_mut(&call) else {
            return true;
        };
        if method == Some(Method::Cancel) {
            if current && let Some(cancel) = out.cancel.as_mut() {
                cancel.on_response(now, resp.status);
            }
            return true;
        }
        let phase = out.phase;
        let Some(attempt) = out.attempts.get_mut(idx) else {
            return true;
        };
        let delivery = attempt.tx.on_response(now, resp.status);
        if delivery == Delivery::Absorb {
            // §17.1.1.3: a retransmitted non-2xx final is ACKed again.
            if let Some(ack) = attempt.ack.clone() {
                let flow = attempt.flow;
                self.send(flow, ack);
            }
            return true;
        }
        if resp.status >= 300 {
            let ack = Outbound::non_2xx_ack(attempt, resp);
            attempt.ack = Some(ack.clone());
            let flow = attempt.flow;
            self.send(flow, ack);
        }
        let cancelling = cancelled(phase);
        match resp.status {
            100 => {}
            101..=199 if current => self.outbound_provisional(now, call, resp),
            200..=299 => self.outbound_2xx(now, call, resp),
            // A late answer to an INVITE we have replaced: ACKed above, nothing more.
            _ if !current => {}
            // Being cancelled: any final response ends the call, for the cancel's reason.
            _ if let Some(reason) = cancelling => self.fail_outbound(call, resp.status, reason),
            300..=399 => self.outbound_redirect(now, call, resp),
            401 | 407 => self.outbound_challenge(now, call, resp),
            422 => self.outbound_interval_too_small(now, call, resp),
            _ => self.fail_outbound(call, resp.status, FailReason::Rejected),
        }
        true
    }

    fn outbound_provisional(&mut self, now: Instant, call: CallRef, resp: &Response) {
        let early = self.outbound_answer(call, resp);
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        let mut media = None;
        if out.early.is_none()
            && let Some(Ok(negotiated)) = early
        {
            out.early = Some(negotiated.clone());
            media = Some(negotiated);
        }
        match out.phase {
            Phase::Calling => out.phase = Phase::Proceeding,
            Phase::CancelPending(reason) => {
                out.phase = Phase::Proceeding;
                self.cancel_outbound(now, call, reason);
                return;
            }
            _ => {}
        }
        if matches!(
            self.outbound.get(&call).map(|o| o.phase),
            Some(Phase::Proceeding)
        ) {
            self.events.push_back(Event::Progress {
                call,
                ringing: resp.status == 180,
                media,
            });
        }
    }

    /// The SDP answer a response carries, negotiated against our offer: `None` without one,
    /// an error when it is unusable or names a media address outside the filter.
    fn outbound_answer(
        &self,
        call: CallRef,
        resp: &Response,
    ) -> Option<Result<Negotiated, sdp::AnswerError>> {
        let out = self.outbound.get(&call)?;
        if resp.body.is_empty() {
            return None;
        }
        let Ok(answer) = SessionDescription::parse(&resp.body) else {
            return Some(Err(sdp::AnswerError::NoAudio));
        };
        if !self.media_allowed(&answer) {
            return Some(Err(sdp::AnswerError::UnusableAddress));
        }
        Some(sdp::negotiate_answer(&answer, &out.spec.media))
    }

    /// A 2xx: the winner becomes the call, a fork or a 2xx crossing our CANCEL gets ACK and
    /// BYE, a retransmission gets its ACK again.
    fn outbound_2xx(&mut self, now: Instant, call: CallRef, resp: &Response) {
        let answer = self.outbound_answer(call, resp);
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        let tag = resp
            .headers
            .to()
            .and_then(|t| t.tag().map(str::to_string))
            .unwrap_or_default();
        if let Some((_, ack)) = out.acks.iter().find(|(t, _)| *t == tag) {
            let ack = ack.clone();
            self.transmits.push_back(ack);
            return;
        }
        let Some(flow) = out.current().map(|a| a.flow) else {
            return;
        };
        let Some(dialog) = out.dialog(resp, flow) else {
            return;
        };
        let credentials = out.credentials_header();
        let ack = self.ack_2xx(&dialog, credentials);
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        if out.acks.len() < MAX_FORKS {
            out.acks.push((tag, ack.clone()));
        }
        self.transmits.push_back(ack);
        let media = match answer {
            Some(Ok(media)) => Some(media),
            None => out.early.clone(),
            Some(Err(_)) => None,
        };
        let failure = match (out.phase, &media) {
            (Phase::Accepted | Phase::Over, _) => None,
            (Phase::CancelPending(reason) | Phase::Cancelling { reason, .. }, _) => Some(reason),
            (_, None) => Some(FailReason::UnusableAnswer),
            (_, Some(_)) => {
                out.phase = Phase::Accepted;
                None
            }
        };
        // The first 2xx wins: the call has no dialog yet.
        let won = out.phase == Phase::Accepted && !self.calls.contains_key(&call);
        if won {
            let invite = out.current().map(|a| a.request.clone());
            let local = out.spec.media.clone();
            if let (Some(invite), Some(negotiated)) = (invite, media) {
                self.dialogs.insert(dialog.id.clone(), call);
                let placed = super::call::Call::placed(now, dialog, invite, local, resp);
                self.calls.insert(call, placed);
                self.events.push_back(Event::Answered {
                    call,
                    media: negotiated,
                });
            }
            return;
        }
        // A fork, or an answer we no longer want: end its dialog at once (§13.2.2.4, §9.1).
        self.bye_stray(now, dialog);
        if let Some(reason) = failure {
            self.fail_outbound(call, resp.status, reason);
        }
    }

    /// §13.2.2.4: the ACK of a 2xx, in the dialog it created (its own branch, the INVITE's
    /// CSeq number and credentials).
    fn ack_2xx(
        &mut self,
        dialog: &Dialog,
        credentials: Option<(&'static str, String)>,
    ) -> Transmit {
        let mut d = dialog.clone();
        d.local_cseq = d.local_cseq.wrapping_sub(1);
        let mut ack = d.request(Method::Ack);
        if let Some((name, value)) = credentials {
            ack.headers.push(name, value);
        }
        let flow = dialog.next_hop();
        self.stamp_via(flow, &mut ack);
        Transmit {
            flow,
            bytes: ack.to_bytes(),
        }
    }

    /// Ends a dialog no call owns (a fork's, or one answered after our CANCEL) with a BYE.
    fn bye_stray(&mut self, now: Instant, mut dialog: Dialog) {
        let mut bye = dialog.request(Method::Bye);
        bye.headers
            .push("User-Agent", self.config.user_agent.clone());
        let flow = dialog.next_hop();
        self.send_request(now, flow, bye, Purpose::Stray);
    }

    /// §8.1.3.4: follows the first Contact of a 3xx, within the limits.
    fn outbound_redirect(&mut self, now: Instant, call: CallRef, resp: &Response) {
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        let target = resp.headers.contact().map(|c| c.uri).filter(Uri::is_sip);
        let Some(target) = target else {
            self.fail_outbound(call, resp.status, FailReason::BadRedirect);
            return;
        };
        let key = target.to_string();
        // `tried` holds the first Request-URI and one per redirect followed.
        let reason = if out.tried.len() > out.spec.max_redirects {
            Some(FailReason::TooManyRedirects)
        } else if out.tried.contains(&key) {
            Some(FailReason::RedirectLoop)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.fail_outbound(call, resp.status, reason);
            return;
        }
        out.tried.push(key);
        if !out.spec.via_proxy
            && let Ok(ip) = target.host.parse()
        {
            out.spec.next_hop.remote = std::net::SocketAddr::new(ip, target.port.unwrap_or(5060));
        }
        out.spec.target = target;
        out.challenge = None;
        out.challenges = 0;
        out.phase = Phase::Calling;
        self.send_invite(now, call);
    }

    /// §22.2: a 401/407 answered with the trunk's credentials, once per challenge.
    fn outbound_challenge(&mut self, now: Instant, call: CallRef, resp: &Response) {
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        let proxy = resp.status == 407;
        let header = if proxy {
            "proxy-authenticate"
        } else {
            "www-authenticate"
        };
        let challenge = Challenge::pick_best(resp.headers.get_all(header)).ok();
        let usable = challenge.filter(|ch| {
            out.spec.credentials.is_some()
                && out.challenges < MAX_CHALLENGES
                && (out.challenges == 0 || ch.stale)
        });
        let Some(challenge) = usable else {
            self.fail_outbound(call, resp.status, FailReason::AuthFailed);
            return;
        };
        out.challenges += 1;
        out.challenge = Some((challenge, proxy));
        out.phase = Phase::Calling;
        self.send_invite(now, call);
    }

    /// RFC 4028 §7.4: a 422 retried with the session interval its Min-SE asks for.
    fn outbound_interval_too_small(&mut self, now: Instant, call: CallRef, resp: &Response) {
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        let raised = out.timers.after_422(&resp.headers);
        let Some(timers) = raised.filter(|_| out.raises < MAX_INTERVAL_RAISES) else {
            self.fail_outbound(call, resp.status, FailReason::Rejected);
            return;
        };
        out.raises += 1;
        out.timers = timers;
        out.phase = Phase::Calling;
        self.send_invite(now, call);
    }

    /// Reports the failure once; the transactions finish on their own.
    fn fail_outbound(&mut self, call: CallRef, status: u16, reason: FailReason) {
        let Some(out) = self.outbound.get_mut(&call) else {
            return;
        };
        if !out.is_pending() {
            return;
        }
        out.phase = Phase::Over;
        self.events.push_back(Event::Failed {
            call,
            status,
            reason,
        });
    }

    /// Retransmissions, Timer B, the ring timeout, the CANCEL's deadline; forgets calls whose
    /// transactions have all ended.
    pub(super) fn outbound_timeouts(&mut self, now: Instant) {
        let refs: Vec<CallRef> = self.outbound.keys().copied().collect();
        for call in refs {
            let Some(out) = self.outbound.get_mut(&call) else {
                continue;
            };
            let mut sends = Vec::new();
            let mut timed_out = false;
            let last = out.attempts.len().saturating_sub(1);
            for (idx, attempt) in out.attempts.iter_mut().enumerate() {
                while let Some(action) = attempt.tx.handle_timeout(now) {
                    match action {
                        Action::Retransmit(bytes) => sends.push((attempt.flow, bytes)),
                        Action::TimedOut if idx == last => timed_out = true,
                        _ => {}
                    }
                }
            }
            if let Some(cancel) = out.cancel.as_mut() {
                while let Some(action) = cancel.handle_timeout(now) {
                    if let Action::Retransmit(bytes) = action
                        && let Some(flow) = out.attempts.last().map(|a| a.flow)
                    {
                        sends.push((flow, bytes));
                    }
                }
            }
            let phase = out.phase;
            let ring_due = out.ring_at <= now;
            for (flow, bytes) in sends {
                self.send(flow, bytes);
            }
            match phase {
                Phase::Cancelling { reason, give_up } if timed_out || give_up <= now => {
                    self.fail_outbound(call, 408, reason);
                }
                Phase::CancelPending(reason) if timed_out => self.fail_outbound(call, 408, reason),
                Phase::Calling | Phase::Proceeding if timed_out => {
                    self.fail_outbound(call, 408, FailReason::Timeout);
                }
                Phase::Calling | Phase::Proceeding if ring_due => {
                    self.cancel_outbound(now, call, FailReason::NoAnswer);
                }
                _ => {}
            }
        }
        self.outbound.retain(|_, out| !out.is_finished());
    }
}

/// The reason a call is being cancelled, if it is.
fn cancelled(phase: Phase) -> Option<FailReason> {
    match phase {
        Phase::CancelPending(reason) | Phase::Cancelling { reason, .. } => Some(reason),
        _ => None,
    }
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
