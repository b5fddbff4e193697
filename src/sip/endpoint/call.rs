//! One call as the UAS sees it, from the INVITE that creates it to the end of its dialog.
//!
//! RFC 3261 §12.1.1 (the dialog an INVITE creates), §13.3.1 (processing the INVITE: 180, then
//! 200 with the SDP answer, retransmitted until the ACK per §13.3.1.4, or a final refusal),
//! §9.2 (the 487 a CANCEL causes), §12.2.2 (requests within the dialog: CSeq order, BYE per
//! §15.1.2, re-INVITE per §14.2, INFO, OPTIONS) and §15.1.1 (our BYE, never before the ACK).
//! The application's commands `answer`, `reject` and `hangup` are here, and the UAS half of
//! RFC 4028 session timers: the INVITE's (and each re-INVITE's) Session-Expires is agreed per
//! §9 (422 with Min-SE below ours), stated in the 2xx, and the call's [`SessionTimer`] started
//! when that 2xx goes out; `refresh` acts on its deadlines. A call we placed starts its timer
//! from the 2xx to our INVITE instead ([`Call::placed`], RFC 4028 §7.4).
//!
//! Two defences against a spoofed INVITE are here. An offer (or late answer) whose media
//! addresses fall outside the [`MediaFilter`] is refused with 488 and a Warning (RFC 3261
//! §21.4.26, §20.43; re-INVITEs too, leaving the session as it was per RFC 3264 §8). And when
//! our 2xx is never ACKed, §13.3.1.4 asks for a BYE: earshot sends it only if the peer's media
//! was ever seen ([`Endpoint::peer_media`]). A dialog with neither ACK nor media was most
//! likely never asked for by whoever the Contact names: its BYE, retransmitted for 32 s over
//! UDP, would only be a second reflection towards it, and a genuine caller whose ACKs were all
//! lost still ends the call on its own side.
//!
//! The endpoint's dispatch decides which call a request concerns; this module takes over from
//! there. Responses are built with [`ResponseBuilder`] and sent through the endpoint's server
//! transactions.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::refresh::Refresh;
use super::request::{BodyRefusal, dtmf_from_info, offer_of};
use super::response::ResponseBuilder;
use super::transfer::{IncomingRefer, OutgoingRefer};
use super::uac::Purpose;
use super::{
    ACCEPT, ALLOW, Admission, CallRef, DRAIN_RETRY_AFTER_SECS, EndReason, Endpoint, Event,
    IncomingCall, SUPPORTED, Transmit, TxKey,
};
use crate::sip::dialog::{ConnId, Dialog, Flow, Transport, response_destination};
use crate::sip::message::{Headers, Method, Request, Response};
use crate::sip::sdp::{self, LocalMedia, SessionDescription};
use crate::sip::session_timer::{self, Agreed, SessionTimer, Side, UasDecision};
use crate::sip::transaction::{T1, T2, TIMEOUT};

/// Whether an SDP may name this media address (`[rtp].allow_media`).
pub type MediaFilter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// The Warning of a 488 for a media address outside the filter (RFC 3261 §20.43: 399,
/// miscellaneous, since no specific code says "address not allowed"; 305 is about formats).
const MEDIA_REFUSED_WARNING: (u16, &str) = (399, "Media address not allowed");

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
pub(super) enum CallState {
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

/// One call: its dialog, the INVITE (or re-INVITE) in progress, and where its answer stands.
#[derive(Debug)]
pub(super) struct Call {
    pub(super) state: CallState,
    pub(super) dialog: Dialog,
    /// The INVITE (or re-INVITE) currently in its server transaction.
    invite: Request,
    invite_key: TxKey,
    /// Whether the INVITE transaction has sent its final response.
    pub(super) invite_final: bool,
    offer: Option<SessionDescription>,
    media: Option<LocalMedia>,
    unacked: Option<Unacked>,
    /// RFC 4028: the session timer agreed for the current INVITE, started by its 2xx.
    timer_offer: Option<Agreed>,
    /// The running session timer, if the session has one.
    pub(super) timer: Option<SessionTimer>,
    /// Our session refresh in its client transaction.
    pub(super) refresh: Option<Refresh>,
    /// The SDP of our last 2xx: a refresh re-INVITE offers it again, unchanged (RFC 4028 §10).
    pub(super) last_sdp: Option<String>,
    /// The methods the peer's Allow listed (uppercase), if it sent one.
    pub(super) peer_allow: Option<Vec<String>>,
    /// A transfer the peer asked for by REFER, waiting for its outcome.
    pub(super) refer_in: Option<IncomingRefer>,
    /// A transfer we asked for by REFER.
    pub(super) refer_out: Option<OutgoingRefer>,
    /// Hang up as soon as the ACK for our 2xx arrives (§15: not before).
    bye_after_ack: bool,
    confirmed: bool,
    /// The call's RTP leg has heard the peer (see [`Endpoint::peer_media`]).
    peer_media: bool,
}

/// What waiting for the ACK to our 2xx asks for at a timeout (§13.3.1.4).
enum AckWait {
    /// Nothing now: no 2xx waiting, or not yet time.
    Idle,
    /// The 2xx again, to where the INVITE's responses go.
    Retransmit(Transmit),
    /// 64·T1 passed without an ACK: the dialog is confirmed, and must end at once.
    GaveUp,
}

impl Call {
    /// A call whose INVITE has just been handed to the application.
    fn offered(
        dialog: Dialog,
        invite: Request,
        invite_key: TxKey,
        offer: Option<SessionDescription>,
    ) -> Self {
        Self {
            state: CallState::Offered,
            dialog,
            invite,
            invite_key,
            invite_final: false,
            offer,
            media: None,
            unacked: None,
            bye_after_ack: false,
            confirmed: false,
            peer_media: false,
            timer_offer: None,
            timer: None,
            refresh: None,
            last_sdp: None,
            peer_allow: None,
            refer_in: None,
            refer_out: None,
        }
    }

    /// A call we placed, answered by `answer` at `now` and ACKed (§13.2.2.4): established and
    /// confirmed, `invite` the INVITE we sent, `media` what we offered. RFC 4028 §7.4: its
    /// session timer starts now as the 2xx states it (or with earshot refreshing alone when
    /// the 2xx states none); a refresh re-INVITE offers our INVITE's SDP again, and UPDATE is
    /// used when the 2xx's Allow lists it.
    pub(super) fn placed(
        now: Instant,
        dialog: Dialog,
        invite: Request,
        media: LocalMedia,
        answer: &Response,
    ) -> Self {
        let timer = session_timer::uac_agreement(&invite.headers, &answer.headers)
            .map(|agreed| SessionTimer::new(now, agreed, Side::Uac));
        let last_sdp = String::from_utf8(invite.body.clone()).ok();
        let peer_allow = allow_of(&answer.headers);
        Self {
            state: CallState::Established,
            dialog,
            invite,
            // Never matched: only a CANCEL of an INVITE we answer looks for it.
            invite_key: TxKey::Rfc2543 {
                fields: String::new(),
                method: "INVITE".into(),
            },
            invite_final: true,
            offer: None,
            media: Some(media),
            unacked: None,
            bye_after_ack: false,
            confirmed: true,
            peer_media: false,
            timer_offer: None,
            timer,
            refresh: None,
            last_sdp,
            peer_allow,
            refer_in: None,
            refer_out: None,
        }
    }

    /// Answered and ACKed, not ending: in-dialog requests of ours may go out.
    pub(super) fn is_up(&self) -> bool {
        matches!(self.state, CallState::Established) && self.confirmed
    }

    /// Whether the peer's INVITE (or re-INVITE) is unanswered or its 2xx not yet ACKed.
    pub(super) fn invite_in_progress(&self) -> bool {
        !self.invite_final || self.unacked.is_some()
    }

    /// Whether the peer's Allow lists `method`; `None` when it sent no Allow.
    pub(super) fn peer_allows(&self, method: &str) -> Option<bool> {
        self.peer_allow
            .as_ref()
            .map(|allow| allow.iter().any(|m| m == method))
    }

    /// When the call next needs the endpoint: the 200 of a ringing call, or the next
    /// retransmission of (or the end of the wait for the ACK to) an unacknowledged 2xx.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let ring = match &self.state {
            CallState::Ringing { answer_at, .. } => Some(*answer_at),
            _ => None,
        };
        let unacked = self.unacked.as_ref().map(|u| u.next.min(u.give_up));
        // A session timer runs while the call is up; ending, its deadlines mean nothing.
        let timer = match self.state {
            CallState::Established => self.timer.as_ref().and_then(SessionTimer::poll_timeout),
            _ => None,
        };
        let refresh = self.refresh.as_ref().and_then(Refresh::poll_timeout);
        let refer = self.refer_in.as_ref().and_then(IncomingRefer::deadline);
        ring.into_iter()
            .chain(unacked)
            .chain(timer)
            .chain(refresh)
            .chain(refer)
            .min()
    }

    /// §9.2: whether a CANCEL matching the INVITE transaction `invite_key` cancels this call,
    /// which it can only before the INVITE's final response.
    pub(super) fn is_cancelled_by(&self, invite_key: &TxKey) -> bool {
        self.invite_key == *invite_key && !self.invite_final
    }

    /// A TCP connection closed: the dialog's requests will need a new one.
    pub(super) fn connection_closed(&mut self, conn: ConnId) {
        if self.dialog.flow.transport == Transport::Tcp(Some(conn)) {
            self.dialog.flow.transport = Transport::Tcp(None);
        }
    }

    /// A response to the current INVITE, with our tag. §12.1.1: one that creates or confirms
    /// the dialog (101–299) also carries the INVITE's Record-Route set and our Contact, and
    /// Allow.
    fn invite_response(
        &self,
        status: u16,
        sdp: Option<String>,
        advertised: SocketAddr,
    ) -> Response {
        let mut builder = ResponseBuilder::new(
            &self.invite.headers,
            status,
            Some(self.dialog.id.local_tag.clone()),
        );
        if (101..300).contains(&status) {
            for rr in self.invite.headers.get_all("record-route") {
                builder = builder.header("Record-Route", rr);
            }
            builder = builder
                .header("Contact", contact(advertised, self.dialog.flow.transport))
                .header("Allow", ALLOW)
                .header("Supported", SUPPORTED);
        }
        // RFC 4028 §9: the 2xx states the agreed interval and refresher.
        if let (200..=299, Some(agreed)) = (status, self.timer_offer) {
            builder = builder.header("Session-Expires", agreed.header());
            if agreed.requires_timer() {
                builder = builder.header("Require", session_timer::OPTION_TAG);
            }
        }
        if let Some(body) = sdp {
            builder = builder.sdp(body);
        }
        builder.build()
    }

    /// Notes a response sent to the current INVITE: a final one completes it, and a 2xx waits
    /// for its ACK, retransmitted meanwhile (§13.3.1.4).
    fn invite_answered(&mut self, now: Instant, resp: &Response) {
        if resp.status >= 200 {
            self.invite_final = true;
        }
        if (200..300).contains(&resp.status) {
            let cseq = self.invite.headers.cseq().map_or(0, |cs| cs.seq);
            self.unacked = Some(Unacked {
                cseq,
                bytes: resp.to_bytes(),
                next: now + T1,
                interval: T1,
                give_up: now + TIMEOUT,
            });
        }
    }

    /// §13.3.1.4: an ACK with `cseq` ends the wait for the ACK to our 2xx. Returns whether it
    /// is the call's first ACK, or `None` when it matches no 2xx waiting.
    fn acked(&mut self, cseq: Option<u32>) -> Option<bool> {
        if self.unacked.as_ref().map(|u| u.cseq) != cseq {
            return None;
        }
        self.unacked = None;
        let first = !self.confirmed;
        self.confirmed = true;
        Some(first)
    }

    /// §13.3.1.4 at `now`: retransmits the 2xx waiting for its ACK (doubling the interval up
    /// to T2, unreliable transports only), or gives up after 64·T1.
    fn ack_wait(&mut self, now: Instant) -> AckWait {
        let Some(unacked) = self.unacked.as_mut() else {
            return AckWait::Idle;
        };
        if unacked.give_up <= now {
            // §13.3.1.4: no ACK within 64·T1 — confirm and immediately end the dialog.
            self.unacked = None;
            self.confirmed = true;
            return AckWait::GaveUp;
        }
        if unacked.next <= now {
            if !self.dialog.flow.transport.is_reliable() {
                let bytes = unacked.bytes.clone();
                unacked.interval = (unacked.interval * 2).min(T2);
                unacked.next = now + unacked.interval;
                let flow =
                    response_destination(self.invite.headers.via().as_ref(), self.dialog.flow);
                return AckWait::Retransmit(Transmit { flow, bytes });
            }
            unacked.next = unacked.give_up;
        }
        AckWait::Idle
    }
}

/// The methods an Allow header lists, uppercase; `None` without an Allow.
fn allow_of(headers: &Headers) -> Option<Vec<String>> {
    let allow = headers.values("allow");
    (!allow.is_empty()).then(|| allow.iter().map(|m| m.to_ascii_uppercase()).collect())
}

/// Our Contact for the dialog (§12.1.1), on the transport it uses.
pub(super) fn contact(advertised: SocketAddr, transport: Transport) -> String {
    match transport {
        Transport::Udp => format!("<sip:earshot@{advertised}>"),
        Transport::Tcp(_) => format!("<sip:earshot@{advertised};transport=tcp>"),
    }
}

/// The refusal of an INVITE whose body is no usable offer: 400 naming the fault, or 415 with
/// Accept (§8.2.3).
fn offer_refusal(req: &Request, refusal: BodyRefusal, to_tag: Option<String>) -> Response {
    let mut response = ResponseBuilder::new(&req.headers, refusal.status, to_tag);
    if let Some(reason) = refusal.reason {
        response = response.reason(reason);
    }
    if refusal.status == 415 {
        response = response.header("Accept", ACCEPT);
    }
    response.build()
}

impl Endpoint {
    // ---- commands from the application ----------------------------------------------------

    /// Limits the media addresses offers may name; `None` allows every address.
    pub fn set_media_filter(&mut self, filter: Option<MediaFilter>) {
        self.media_filter = filter;
    }

    /// Where the call's INVITE came from, or for a call we placed where it went: a bridged
    /// transfer looks up by it the trunk the call came in on.
    pub fn call_peer(&self, call: CallRef) -> Option<std::net::SocketAddr> {
        self.calls.get(&call).map(|c| c.dialog.flow.remote)
    }

    /// The call's media leg heard the peer: a missing ACK will then be answered with a BYE.
    pub fn peer_media(&mut self, call: CallRef) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.peer_media = true;
        }
    }

    /// Whether every media address of `sdp` passes the filter.
    pub(super) fn media_allowed(&self, sdp: &SessionDescription) -> bool {
        match &self.media_filter {
            Some(allowed) => sdp.media_addresses().all(|ip| allowed(ip)),
            None => true,
        }
    }

    /// 488 with a Warning for an offer naming a media address outside the filter.
    fn media_refusal(&self, req: &Request, to_tag: Option<String>) -> Response {
        let (code, text) = MEDIA_REFUSED_WARNING;
        ResponseBuilder::new(&req.headers, 488, to_tag)
            .header(
                "Warning",
                format!("{code} {} \"{text}\"", self.config.advertised),
            )
            .build()
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
        self.respond_to_invite(now, call, 180, None);
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
        self.respond_to_invite(now, call, status, None);
        self.end_call(call, EndReason::Rejected(status));
    }

    /// Ends a call from our side: BYE once confirmed, or a final error before the answer.
    pub fn hangup(&mut self, now: Instant, call: CallRef) {
        if self.hangup_outbound(now, call) {
            return;
        }
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

    // ---- requests for a call --------------------------------------------------------------

    /// An INVITE outside any dialog: a new call for the application (in its INVITE transaction,
    /// with 100 Trying at once), or a refusal sent statelessly (§8.2.7: shutting down, at
    /// capacity, draining, no usable offer), so that no transaction retransmits it.
    pub(super) fn handle_invite(&mut self, now: Instant, flow: Flow, key: TxKey, req: Request) {
        match self.admission() {
            Admission::Open => {}
            Admission::Full => {
                self.stats.refused += 1;
                let resp = self.stateless_response(&req, 486);
                self.reply_stateless(now, flow, &req, resp);
                return;
            }
            refusal @ (Admission::Draining | Admission::ShuttingDown) => {
                self.stats.refused += 1;
                let secs = refusal.retry_after().unwrap_or(DRAIN_RETRY_AFTER_SECS);
                self.unavailable(now, flow, &req, secs);
                return;
            }
        }
        let offer = match offer_of(&req) {
            Ok(offer) => offer,
            Err(refusal) => {
                let tag = self.stateless_tag(&req, refusal.status);
                self.send_stateless(now, &req.headers, flow, offer_refusal(&req, refusal, tag));
                return;
            }
        };
        if offer.as_ref().is_some_and(|o| !self.media_allowed(o)) {
            self.stats.refused += 1;
            let resp = self.media_refusal(&req, self.stateless_tag(&req, 488));
            self.send_stateless(now, &req.headers, flow, resp);
            return;
        }
        let timer_offer = match session_timer::answer_request(self.policy.timers, &req.headers) {
            UasDecision::TooSmall { min_se } => {
                let resp = self
                    .stateless_response(&req, 422)
                    .header("Min-SE", min_se.to_string());
                self.reply_stateless(now, flow, &req, resp);
                return;
            }
            UasDecision::NoTimer => None,
            UasDecision::Agreed(agreed) => Some(agreed),
        };
        let tag = self.random_token(10);
        let first_cseq = self.rng.random_range(1..1_000_000);
        let Some(dialog) = Dialog::from_invite(&req, &tag, flow, first_cseq) else {
            let resp = self.stateless_response(&req, 400);
            self.reply_stateless(now, flow, &req, resp);
            return;
        };
        self.open_server_tx(&key, &req, flow);
        // §17.2.1: 100 Trying at once, so the caller stops retransmitting.
        let trying = ResponseBuilder::new(&req.headers, 100, None).build();
        self.respond(now, &key, trying);
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
        let mut c = Call::offered(dialog, req, key, offer);
        c.timer_offer = timer_offer;
        c.peer_allow = allow_of(&c.invite.headers);
        self.calls.insert(call, c);
        self.events.push_back(Event::Incoming(incoming));
    }

    /// An ACK that no INVITE transaction absorbed: the ACK for our 2xx, part of the dialog
    /// (§13.2.2.4 / §13.3.1.4).
    pub(super) fn handle_2xx_ack(&mut self, now: Instant, call: CallRef, req: Request) {
        let cseq = req.headers.cseq().map(|c| c.seq);
        let answer_allowed = req.body.is_empty()
            || SessionDescription::parse(&req.body).map_or(true, |a| self.media_allowed(&a));
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(first) = c.acked(cseq) else {
            return;
        };
        // Late offer: our 2xx carried the offer and the ACK the answer.
        if c.offer.is_none()
            && !req.body.is_empty()
            && let (Ok(answer), Some(local)) =
                (SessionDescription::parse(&req.body), c.media.as_ref())
        {
            let negotiated = sdp::negotiate_answer(&answer, local)
                .ok()
                .filter(|_| answer_allowed);
            match negotiated {
                Some(media) => self.events.push_back(Event::MediaChanged { call, media }),
                None => {
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

    /// A request within the call's dialog (§12.2.2). Its To carries our tag already, so no
    /// response here needs a new one.
    pub(super) fn handle_in_dialog(
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
            let resp = ResponseBuilder::new(&req.headers, 500, None)
                .header("Retry-After", "1")
                .build();
            self.respond_in_new_tx(now, flow, key, &req, resp);
            return;
        }
        c.dialog.remote_cseq = cseq;
        match req.method {
            Method::Bye => {
                let ringing = !c.invite_final;
                let resp = ResponseBuilder::new(&req.headers, 200, None).build();
                self.respond_in_new_tx(now, flow, key, &req, resp);
                if ringing {
                    self.respond_to_invite(now, call, 487, None);
                }
                self.end_call(call, EndReason::RemoteBye);
            }
            Method::Invite => self.handle_reinvite(now, flow, key, req, call),
            Method::Refer => self.handle_refer(now, flow, key, req, call),
            Method::Notify => self.handle_notify(now, flow, key, req, call),
            Method::Info => {
                let digit = dtmf_from_info(&req);
                let status = match (&digit, req.body.is_empty()) {
                    (Some(_), _) | (None, true) => 200,
                    (None, false) => 415,
                };
                let resp = ResponseBuilder::new(&req.headers, status, None).build();
                self.respond_in_new_tx(now, flow, key, &req, resp);
                if let Some((digit, duration_ms)) = digit {
                    self.events.push_back(Event::Dtmf {
                        call,
                        digit,
                        duration_ms,
                    });
                }
            }
            Method::Options => {
                let resp = ResponseBuilder::new(&req.headers, 200, None)
                    .header("Allow", ALLOW)
                    .header("Accept", ACCEPT)
                    .build();
                self.respond_in_new_tx(now, flow, key, &req, resp);
            }
            _ => {
                let resp = ResponseBuilder::new(&req.headers, 405, None)
                    .header("Allow", ALLOW)
                    .build();
                self.respond_in_new_tx(now, flow, key, &req, resp);
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
        // §14.2: an INVITE while ours is unfinished, or our 2xx not yet ACKed, gets 491/500;
        // the 500 (a second INVITE before the first's final response) carries a Retry-After of
        // a random 0-10 s, so the two sides do not retry in lockstep.
        // §14.1: our own refresh re-INVITE in progress is a 491 too.
        let ours_pending = c.refresh.as_ref().is_some_and(Refresh::is_invite_pending);
        if !c.invite_final
            || c.unacked.is_some()
            || ours_pending
            || !matches!(c.state, CallState::Established)
        {
            let status = if c.invite_final { 491 } else { 500 };
            let mut resp = ResponseBuilder::new(&req.headers, status, None);
            if status == 500 {
                resp = resp.header("Retry-After", self.rng.random_range(0..=10u32).to_string());
            }
            let resp = resp.build();
            self.respond_in_new_tx(now, flow, key, &req, resp);
            return;
        }
        self.open_server_tx(&key, &req, flow);
        let offer = match offer_of(&req) {
            Ok(offer) => offer,
            Err(refusal) => {
                self.respond(now, &key, offer_refusal(&req, refusal, None));
                return;
            }
        };
        // RFC 4028 §9 again for a refresh; a re-INVITE without Session-Expires turns it off.
        let timer_offer = match session_timer::answer_request(self.policy.timers, &req.headers) {
            UasDecision::TooSmall { min_se } => {
                let resp = ResponseBuilder::new(&req.headers, 422, None)
                    .header("Min-SE", min_se.to_string())
                    .build();
                self.respond(now, &key, resp);
                return;
            }
            UasDecision::NoTimer => None,
            UasDecision::Agreed(agreed) => Some(agreed),
        };
        if offer.as_ref().is_some_and(|o| !self.media_allowed(o)) {
            // RFC 3264 §8: a rejected modification leaves the session as it was.
            let resp = self.media_refusal(&req, None);
            self.respond(now, &key, resp);
            return;
        }
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
                    let resp = ResponseBuilder::new(&req.headers, 488, None).build();
                    self.respond(now, &key, resp);
                    return;
                }
            },
            None => (sdp::offer(&media), None),
        };
        c.media = Some(media);
        c.offer = offer;
        c.timer_offer = timer_offer;
        if let Some(allow) = allow_of(&req.headers) {
            c.peer_allow = Some(allow);
        }
        // §12.2.2: a re-INVITE is a target refresh request.
        if let Some(contact) = req.headers.contact() {
            c.dialog.remote_target = Some(contact.uri);
        }
        c.invite = req;
        c.invite_key = key;
        c.invite_final = false;
        self.respond_to_invite(now, call, 200, Some(body));
        if let Some(media) = negotiated {
            self.events.push_back(Event::MediaChanged { call, media });
        }
    }

    // ---- the call's own responses and requests --------------------------------------------

    /// Answers the call's current INVITE with `status` (and an SDP body) through its server
    /// transaction, noting a final response and keeping a 2xx until its ACK.
    pub(super) fn respond_to_invite(
        &mut self,
        now: Instant,
        call: CallRef,
        status: u16,
        sdp: Option<String>,
    ) {
        let advertised = self.config.advertised;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if (200..300).contains(&status) {
            c.last_sdp.clone_from(&sdp);
            // RFC 4028 §10: the session is refreshed by the 2xx; the UAS starts its timer now.
            c.timer = c.timer_offer.map(|a| SessionTimer::new(now, a, Side::Uas));
        }
        let resp = c.invite_response(status, sdp, advertised);
        c.invite_answered(now, &resp);
        let key = c.invite_key.clone();
        self.respond(now, &key, resp);
    }

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
        self.respond_to_invite(now, call, 200, Some(body));
    }

    /// §15.1.1: ends the dialog with a BYE of ours.
    pub(super) fn send_bye(&mut self, now: Instant, call: CallRef, reason: EndReason) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if matches!(c.state, CallState::Terminating) {
            return;
        }
        c.state = CallState::Terminating;
        c.timer = None;
        c.refer_in = None;
        let mut bye = c.dialog.request(Method::Bye);
        let flow = c.dialog.next_hop();
        let user_agent = self.config.user_agent.clone();
        bye.headers.push("User-Agent", user_agent);
        self.send_request(now, flow, bye, Purpose::Bye(call));
        // The call is over for the application now; the BYE transaction finishes on its own.
        self.end_call_keep(call, reason);
    }

    // ---- timers and bookkeeping -----------------------------------------------------------

    /// The 200 of ringing calls whose time has come, and the 2xx retransmissions (or the
    /// give-up) of calls waiting for their ACK.
    pub(super) fn call_timeouts(&mut self, now: Instant) {
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
            let heard = c.peer_media;
            match c.ack_wait(now) {
                AckWait::Idle => {}
                AckWait::Retransmit(transmit) => self.transmits.push_back(transmit),
                AckWait::GaveUp if heard => self.send_bye(now, call, EndReason::AckTimeout),
                // Neither ACK nor media: likely spoofed, so no BYE (see the module docs).
                AckWait::GaveUp => self.end_call(call, EndReason::AckTimeout),
            }
            self.refresh_timeouts(now, call);
            self.session_timer_due(now, call);
            self.refer_deadline(now, call);
        }
    }

    /// Forgets the call and its dialog; reports the end unless a BYE of ours already did.
    pub(super) fn end_call(&mut self, call: CallRef, reason: EndReason) {
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
}
