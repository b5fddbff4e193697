//! RFC 4028 §10 session refreshes earshot sends, and what the session timer's deadlines mean for
//! a call.
//!
//! When earshot is the refresher, the [`SessionTimer`] asks for a refresh at half the
//! interval: an UPDATE without a body when the peer's Allow lists UPDATE (§10 recommends it),
//! otherwise a re-INVITE offering our last SDP again unchanged (RFC 3264 §8: nothing to
//! renegotiate, so its answer changes nothing). The re-INVITE runs in its own INVITE client
//! transaction (RFC 3261 §17.1.1) held by the call: its 2xx is ACKed end to end (§13.2.2.4,
//! again for each retransmitted 2xx), a non-2xx hop by hop (§17.1.1.3). A 2xx restarts the
//! timer with the interval it states; 408, 481 or a timeout end the call (§12.2.1.2: the dialog
//! is gone or unreachable; BYE except after 481); 491 is retried after 2 s (§14.1), any other
//! failure halfway to the expiry. When the peer is the refresher and nothing came by the
//! expiry, or our own refreshes never succeeded, the call ends with a BYE
//! ([`EndReason::SessionExpired`]).

use std::time::{Duration, Instant};

use super::call::{CallState, contact};
use super::{ALLOW, CallRef, EndReason, Endpoint, SUPPORTED};
use crate::sip::dialog::Flow;
use crate::sip::message::{Method, Request, Response};
use crate::sip::session_timer::{self, Refresher, SessionExpires, SessionTimer, Side, TimerAction};
use crate::sip::transaction::{Action, ClientInvite, ClientNonInvite, Delivery};

/// §14.1: the back-off before trying again after our re-INVITE got 491 (we are the UAS of the
/// dialog, which does not own its Call-ID: 0–2 s; the top of the range, without randomness).
const GLARE_RETRY: Duration = Duration::from_secs(2);
/// A refresh that failed is tried again only while this much is left before the expiry.
const MIN_RETRY_GAP: Duration = Duration::from_secs(2);

#[derive(Debug)]
enum RefreshTx {
    Invite(ClientInvite),
    Update(ClientNonInvite),
}

/// One session refresh of ours in its client transaction.
#[derive(Debug)]
pub(super) struct Refresh {
    branch: String,
    tx: RefreshTx,
    flow: Flow,
    /// The request, for the ACK of a non-2xx final (§17.1.1.3).
    request: Request,
    /// A final response has arrived; the transaction only absorbs retransmissions now.
    answered: bool,
    /// The ACK sent for the 2xx, sent again for each retransmission of it (§13.2.2.4).
    ack: Option<Vec<u8>>,
}

impl Refresh {
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match &self.tx {
            RefreshTx::Invite(tx) => tx.poll_timeout(),
            RefreshTx::Update(tx) => tx.poll_timeout(),
        }
    }

    /// Whether a re-INVITE of ours still waits for its final response (§14.1: a re-INVITE from
    /// the peer meanwhile gets 491).
    pub(super) fn is_invite_pending(&self) -> bool {
        matches!(self.tx, RefreshTx::Invite(_)) && !self.answered
    }

    /// §17.1.1.3: the ACK of a non-2xx final response to our re-INVITE: the INVITE's top Via,
    /// Request-URI, From, Call-ID and Route set, the response's To, the CSeq number.
    fn hop_ack(&self, resp: &Response) -> Request {
        let mut headers = crate::sip::message::Headers::default();
        if let Some(via) = self.request.headers.get("via") {
            headers.push("Via", via);
        }
        for route in self.request.headers.get_all("route") {
            headers.push("Route", route);
        }
        headers.push("Max-Forwards", "70");
        for name in ["From", "Call-ID"] {
            if let Some(value) = self.request.headers.get(name) {
                headers.push(name, value);
            }
        }
        if let Some(to) = resp.headers.get("to") {
            headers.push("To", to);
        }
        let seq = self.request.headers.cseq().map_or(0, |c| c.seq);
        headers.push("CSeq", format!("{seq} ACK"));
        Request {
            method: Method::Ack,
            uri: self.request.uri.clone(),
            headers,
            body: Vec::new(),
        }
    }
}

impl Endpoint {
    /// The call's session timer at `now`: a refresh to send, or the session to end.
    pub(super) fn session_timer_due(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !matches!(c.state, CallState::Established) {
            return;
        }
        let Some(timer) = c.timer.as_mut() else {
            return;
        };
        match timer.handle_timeout(now) {
            Some(TimerAction::Expired) => self.send_bye(now, call, EndReason::SessionExpired),
            Some(TimerAction::Refresh) => self.send_refresh(now, call),
            None => {}
        }
    }

    /// RFC 4028 §10: our session refresh, by UPDATE when the peer allows it, else re-INVITE.
    fn send_refresh(&mut self, now: Instant, call: CallRef) {
        let advertised = self.config.advertised;
        let user_agent = self.config.user_agent.clone();
        let min_se = self.policy.timers.min_se;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(interval) = c.timer.as_ref().map(|t| t.agreed().interval) else {
            return;
        };
        // §14.1: not while an INVITE transaction of either side is in progress.
        let busy = c.invite_in_progress() || c.refresh.as_ref().is_some_and(|r| !r.answered);
        let update = c.peer_allows("UPDATE") == Some(true);
        if busy || (!update && c.last_sdp.is_none()) {
            if let Some(timer) = c.timer.as_mut() {
                timer.retry_refresh(now, MIN_RETRY_GAP);
            }
            return;
        }
        let method = if update {
            Method::Update
        } else {
            Method::Invite
        };
        let mut req = c.dialog.request(method.clone());
        let headers = &mut req.headers;
        headers.push("Contact", contact(advertised, c.dialog.flow.transport));
        headers.push("Allow", ALLOW);
        headers.push("Supported", SUPPORTED);
        let asked = SessionExpires {
            delta: interval,
            refresher: Some(Refresher::Uac),
        };
        headers.push("Session-Expires", asked.to_string());
        headers.push("Min-SE", min_se.to_string());
        headers.push("User-Agent", user_agent);
        if method == Method::Invite
            && let Some(sdp) = &c.last_sdp
        {
            req.headers.push("Content-Type", super::ACCEPT);
            req.body = sdp.clone().into_bytes();
        }
        let flow = c.dialog.next_hop();
        let branch = self.stamp_via(flow, &mut req);
        let bytes = req.to_bytes();
        let reliable = flow.transport.is_reliable();
        let tx = match method {
            Method::Invite => RefreshTx::Invite(ClientInvite::new(now, bytes.clone(), reliable)),
            _ => RefreshTx::Update(ClientNonInvite::new(now, bytes.clone(), reliable)),
        };
        if let Some(c) = self.calls.get_mut(&call) {
            c.refresh = Some(Refresh {
                branch,
                tx,
                flow,
                request: req,
                answered: false,
                ack: None,
            });
        }
        self.send(flow, bytes);
    }

    /// A response to a session refresh of ours; `false` when `branch` names none.
    pub(super) fn refresh_response(&mut self, now: Instant, branch: &str, resp: &Response) -> bool {
        let Some(call) = self
            .calls
            .iter()
            .find(|(_, c)| c.refresh.as_ref().is_some_and(|r| r.branch == branch))
            .map(|(call, _)| *call)
        else {
            return false;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return true;
        };
        let Some(refresh) = c.refresh.as_mut() else {
            return true;
        };
        let status = resp.status;
        let (delivery, invite) = match &mut refresh.tx {
            RefreshTx::Invite(tx) => (tx.on_response(now, status), true),
            RefreshTx::Update(tx) => (tx.on_response(now, status), false),
        };
        let flow = refresh.flow;
        let already_answered = refresh.answered;
        // §17.1.1.3: every final non-2xx, retransmissions too, is ACKed in the transaction;
        // §13.2.2.4: a 2xx end to end, the same ACK again for each retransmission.
        let ack = match status {
            300.. if invite => Some(Ok(refresh.hop_ack(resp).to_bytes())),
            200..=299 if invite => Some(refresh.ack.clone().ok_or_else(|| {
                let seq = refresh.request.headers.cseq().map_or(0, |c| c.seq);
                c.dialog.ack(seq)
            })),
            _ => None,
        };
        match ack {
            Some(Ok(bytes)) => self.send(flow, bytes),
            Some(Err(mut request)) => {
                let _ = self.stamp_via(flow, &mut request);
                let bytes = request.to_bytes();
                if let Some(r) = self.calls.get_mut(&call).and_then(|c| c.refresh.as_mut()) {
                    r.ack = Some(bytes.clone());
                }
                self.send(flow, bytes);
            }
            None => {}
        }
        if delivery == Delivery::Absorb || status < 200 || already_answered {
            return true;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return true;
        };
        if let Some(refresh) = c.refresh.as_mut() {
            refresh.answered = true;
        }
        match status {
            200..=299 => {
                // RFC 4028 §7.4: the 2xx states the interval; without Session-Expires (a peer
                // that does not know timers), earshot keeps refreshing alone what it asked.
                let asked = c.refresh.as_ref().map(|r| &r.request.headers);
                c.timer = asked
                    .and_then(|asked| session_timer::uac_agreement(asked, &resp.headers))
                    .map(|agreed| SessionTimer::new(now, agreed, Side::Uac));
                if let Some(target) = resp.headers.contact() {
                    c.dialog.remote_target = Some(target.uri);
                }
            }
            481 => self.end_call(call, EndReason::RefreshFailed(481)),
            408 => self.send_bye(now, call, EndReason::RefreshFailed(408)),
            491 => {
                if let Some(timer) = c.timer.as_mut() {
                    timer.refresh_again_at(now + GLARE_RETRY);
                }
            }
            _ => {
                if let Some(timer) = c.timer.as_mut() {
                    timer.retry_refresh(now, MIN_RETRY_GAP);
                }
            }
        }
        true
    }

    /// The refresh transaction's timers: retransmissions, and a timeout that ends the call.
    pub(super) fn refresh_timeouts(&mut self, now: Instant, call: CallRef) {
        let Some(refresh) = self.calls.get_mut(&call).and_then(|c| c.refresh.as_mut()) else {
            return;
        };
        let flow = refresh.flow;
        let mut actions = Vec::new();
        loop {
            let action = match &mut refresh.tx {
                RefreshTx::Invite(tx) => tx.handle_timeout(now),
                RefreshTx::Update(tx) => tx.handle_timeout(now),
            };
            match action {
                Some(action) => actions.push(action),
                None => break,
            }
        }
        for action in actions {
            match action {
                Action::Retransmit(bytes) => self.send(flow, bytes),
                Action::TimedOut => {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.refresh = None;
                    }
                    self.send_bye(now, call, EndReason::RefreshFailed(408));
                }
                Action::Terminated | Action::AckTimeout => {
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.refresh = None;
                    }
                }
            }
        }
    }
}
