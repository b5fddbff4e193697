//! Call transfer by REFER (RFC 3515) within a call's dialog, both ways, with the NOTIFYs of
//! REFER's implicit subscription carrying RFC 3420 `message/sipfrag` status lines.
//!
//! **From the peer.** A REFER is refused with 403 unless `[sip].accept_refer` is set (nobody
//! may turn earshot into a dialer); one whose Refer-To is missing, repeated or unusable, or
//! whose Replaces (RFC 3891) does not parse, gets 400 first. An accepted REFER is answered 202,
//! followed at once by the NOTIFY "100 Trying" §2.4.4 requires, and reported as
//! [`Event::ReferRequested`] (with its Referred-By, RFC 3892, for the INVITE to the target);
//! whoever dials reports the outcome with [`Endpoint::refer_outcome`]: a 1xx (the target
//! rings) is a NOTIFY "180 Ringing" and gives the target [`REFER_RINGING`] to answer, a final
//! status the last NOTIFY. If nobody reports within 64·T1 (or that ringing time) the peer is
//! told "503". One NOTIFY is in flight at a time (RFC 6665 §4.2.2): a status reported
//! meanwhile waits for its answer, the latest one winning. A REFER whose Refer-To carries Replaces (RFC 3891, attended transfer) is
//! answered 501: earshot does blind transfers only.
//!
//! **The call moves.** After a 2xx outcome the call lives on with the target (the driver
//! swaps the call's leg); RFC 5589 §6 has the transferor BYE the old dialog once it reads the
//! 200 NOTIFY. If it has not within 64·T1, earshot sends the BYE itself
//! ([`EndReason::Transferred`]). Either way the call of the application goes on.
//!
//! **From earshot.** [`Endpoint::refer`] sends a REFER (Refer-To, Referred-By per RFC 3892)
//! and reports [`TransferProgress`]: the REFER's answer (202 accepted; 405, 501 or 420 not
//! supported, 403 not allowed — earshot bridges then; other failures), then each NOTIFY's sipfrag (1xx trying, 2xx success — earshot
//! then ends its leg with a BYE, [`EndReason::Transferred`] — and ≥300 failure, the call goes
//! on). A NOTIFY outside such a subscription gets 481, one without Event or with a body that is
//! no sipfrag status line 400.

use std::time::Instant;

use super::call::contact;
use super::response::ResponseBuilder;
use super::uac::Purpose;
use super::{CallRef, EndReason, Endpoint, Event, TxKey};
use crate::sip::dialog::Flow;
use crate::sip::message::{Method, Request, Uri};
use crate::sip::refer::{
    EVENT_REFER, SIPFRAG, event_of, refer_to, sipfrag_body, sipfrag_status, subscription_terminated,
};
use crate::sip::transaction::TIMEOUT;

/// How a transfer we asked for is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferProgress {
    /// The peer accepted the REFER (202).
    Accepted,
    /// A provisional status of the peer's call to the target (sipfrag 1xx).
    Trying(u16),
    /// The target answered (sipfrag 2xx); earshot hangs up its own leg.
    Succeeded,
    /// The REFER was refused, or the peer's call to the target failed, with this status
    /// (408 for no answer). The call goes on.
    Failed(u16),
    /// The peer does not do REFER (405, 501 or 420) or will not (403): bridge instead.
    NotSupported,
}

/// Why [`Endpoint::refer`] sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReferError {
    #[error("no such call")]
    NoSuchCall,
    #[error("the call is not answered and confirmed")]
    NotEstablished,
    #[error("a transfer of this call is already in progress")]
    InProgress,
    #[error("the caller's side does not allow REFER")]
    NotSupported,
    #[error("the transfer target is not a sip:, sips: or tel: URI")]
    BadTarget,
}

/// How long the target of a peer's REFER may ring, once a 1xx was reported, before the peer
/// is told "503": longer than any ring timeout a driver sets on the call it places.
pub const REFER_RINGING: std::time::Duration = std::time::Duration::from_secs(180);

/// Longest Referred-By (RFC 3892) carried from a REFER to the INVITE; longer ones are left out.
const MAX_REFERRED_BY: usize = 512;

/// A transfer the peer asked for: the REFER's CSeq (the subscription's `id`) and when the
/// peer is told it failed unless someone reports an outcome first; once it succeeded
/// (`moved`), when earshot BYEs the old dialog unless the peer has.
#[derive(Debug, Clone)]
pub(super) struct IncomingRefer {
    cseq: u32,
    deadline: Instant,
    moved: bool,
    /// The final status was reported: later ones are ignored.
    done: bool,
    /// A NOTIFY of ours awaits its answer.
    notifying: bool,
    /// The status to NOTIFY once that answer comes (the latest reported).
    queued: Option<u16>,
}

impl IncomingRefer {
    /// When the endpoint acts on its own: tells the peer "503", or BYEs the old dialog of a
    /// call that moved. None once a failure is final (its NOTIFY only waits for its turn).
    pub(super) fn deadline(&self) -> Option<Instant> {
        (!self.done || self.moved).then_some(self.deadline)
    }
}

/// A transfer we asked for, until its final NOTIFY or refusal.
#[derive(Debug, Clone)]
pub(super) struct OutgoingRefer {
    accepted: bool,
}

impl Endpoint {
    /// RFC 3515 §2.4.2: a REFER within the call's dialog.
    pub(super) fn handle_refer(
        &mut self,
        now: Instant,
        flow: Flow,
        key: TxKey,
        req: Request,
        call: CallRef,
    ) {
        let (target, replaces) = match refer_to(&req.headers) {
            Ok(refer) => (refer.target, refer.replaces.is_some()),
            Err(err) => {
                self.stats.malformed += 1;
                let resp = ResponseBuilder::new(&req.headers, 400, None)
                    .reason(err.to_string())
                    .build();
                self.respond_in_new_tx(now, flow, key, &req, resp);
                return;
            }
        };
        let busy = self
            .calls
            .get(&call)
            .is_none_or(|c| !c.is_up() || c.refer_in.is_some());
        let status = if !self.policy.accept_refer {
            self.stats.refers_refused += 1;
            403
        } else if replaces {
            // RFC 3891 attended transfer: not done; the REFER fails, the call goes on.
            501
        } else if busy {
            // §14.1-like: one transfer at a time, and only of an established call.
            491
        } else {
            202
        };
        let resp = ResponseBuilder::new(&req.headers, status, None).build();
        self.respond_in_new_tx(now, flow, key, &req, resp);
        if status != 202 {
            return;
        }
        let cseq = req.headers.cseq().map_or(0, |c| c.seq);
        let referred_by = req
            .headers
            .get("referred-by")
            .filter(|v| !v.is_empty() && v.len() <= MAX_REFERRED_BY)
            .map(str::to_owned);
        if let Some(c) = self.calls.get_mut(&call) {
            c.refer_in = Some(IncomingRefer {
                cseq,
                deadline: now + TIMEOUT,
                moved: false,
                done: false,
                notifying: false,
                queued: None,
            });
        }
        // §2.4.4: the NOTIFY that starts the subscription, at once.
        self.notify_now(now, call, 100);
        self.events.push_back(Event::ReferRequested {
            call,
            target,
            referred_by,
        });
    }

    /// Reports how the transfer the peer asked for went (the status of our call to its
    /// target): a NOTIFY with that status; a final one (≥200) ends the subscription. A 1xx
    /// gives the target [`REFER_RINGING`] more; a 2xx means the call moved to the target, and
    /// the old dialog gets our BYE unless the peer sends its own within 64·T1. Nothing is sent
    /// once the peer's dialog is over (it hung up first: a blind transfer goes on without it).
    pub fn refer_outcome(&mut self, now: Instant, call: CallRef, status: u16) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(refer) = c.refer_in.as_mut() else {
            return;
        };
        if refer.done {
            return;
        }
        refer.done = status >= 200;
        if (200..300).contains(&status) {
            refer.moved = true;
            refer.deadline = now + TIMEOUT;
        } else if !refer.done {
            refer.deadline = now + REFER_RINGING;
        }
        if refer.notifying {
            refer.queued = Some(status);
            return;
        }
        self.notify_now(now, call, status);
    }

    /// The target of the peer's REFER is being called: the peer is not told "503" at 64·T1
    /// but only after [`REFER_RINGING`] (the call placed has its own, shorter, ring timeout
    /// and reports its outcome). Sends nothing.
    pub fn refer_dialling(&mut self, now: Instant, call: CallRef) {
        if let Some(refer) = self
            .calls
            .get_mut(&call)
            .and_then(|c| c.refer_in.as_mut())
            .filter(|r| !r.done)
        {
            refer.deadline = now + REFER_RINGING;
        }
    }

    /// Sends the NOTIFY stating `status`; a final one ends the subscription (and, unless the
    /// call moved and awaits the BYE, the transfer's state).
    fn notify_now(&mut self, now: Instant, call: CallRef, status: u16) {
        let Some(refer) = self.calls.get_mut(&call).and_then(|c| c.refer_in.as_mut()) else {
            return;
        };
        refer.notifying = true;
        let cseq = refer.cseq;
        let last = status >= 200;
        if last
            && !refer.moved
            && let Some(c) = self.calls.get_mut(&call)
        {
            c.refer_in = None;
        }
        self.send_notify(now, call, cseq, status, last);
    }

    /// Our NOTIFY was answered (or timed out): the status waiting, if any, goes now.
    pub(super) fn notify_answered(&mut self, now: Instant, call: CallRef) {
        let Some(refer) = self.calls.get_mut(&call).and_then(|c| c.refer_in.as_mut()) else {
            return;
        };
        refer.notifying = false;
        if let Some(status) = refer.queued.take() {
            self.notify_now(now, call, status);
        }
    }

    /// Nobody reported on the peer's REFER in time: tell it the transfer failed. Or the call
    /// moved to the target and the peer never hung up its leg: hang it up.
    pub(super) fn refer_deadline(&mut self, now: Instant, call: CallRef) {
        let due = self
            .calls
            .get(&call)
            .and_then(|c| c.refer_in.as_ref())
            .filter(|r| r.deadline().is_some_and(|at| at <= now))
            .map(|r| r.moved);
        match due {
            Some(true) => self.send_bye(now, call, EndReason::Transferred),
            Some(false) => self.refer_outcome(now, call, 503),
            None => {}
        }
    }

    /// A NOTIFY of the subscription the peer's REFER `cseq` made, stating `status`.
    fn send_notify(&mut self, now: Instant, call: CallRef, cseq: u32, status: u16, last: bool) {
        let advertised = self.config.advertised;
        let user_agent = self.config.user_agent.clone();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !c.is_up() {
            return;
        }
        let mut notify = c.dialog.request(Method::Notify);
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let headers = &mut notify.headers;
        headers.push("Contact", contact(advertised, c.dialog.flow.transport));
        headers.push("Event", format!("{EVENT_REFER};id={cseq}"));
        headers.push("Subscription-State", state);
        headers.push("User-Agent", user_agent);
        headers.push("Content-Type", SIPFRAG);
        let reason = crate::sip::message::Response::reason_for(status);
        notify.body = sipfrag_body(status, reason).into_bytes();
        let flow = c.dialog.next_hop();
        self.send_request(now, flow, notify, Purpose::Notify(call));
    }

    /// Transfers the call to `target` by REFER (blind transfer). Progress comes as
    /// [`Event::Transfer`].
    pub fn refer(&mut self, now: Instant, call: CallRef, target: &str) -> Result<(), ReferError> {
        let target = Uri::parse(target.trim())
            .ok()
            .filter(|uri| uri.is_sip() || uri.scheme == "tel")
            .ok_or(ReferError::BadTarget)?;
        let advertised = self.config.advertised;
        let user_agent = self.config.user_agent.clone();
        let c = self.calls.get_mut(&call).ok_or(ReferError::NoSuchCall)?;
        if !c.is_up() {
            return Err(ReferError::NotEstablished);
        }
        if c.refer_out.is_some() {
            return Err(ReferError::InProgress);
        }
        if c.peer_allows("REFER") == Some(false) {
            return Err(ReferError::NotSupported);
        }
        let mut refer = c.dialog.request(Method::Refer);
        let headers = &mut refer.headers;
        headers.push("Contact", contact(advertised, c.dialog.flow.transport));
        headers.push("Refer-To", format!("<{target}>"));
        headers.push("Referred-By", format!("<{}>", c.dialog.local.uri));
        headers.push("User-Agent", user_agent);
        c.refer_out = Some(OutgoingRefer { accepted: false });
        let flow = c.dialog.next_hop();
        self.send_request(now, flow, refer, Purpose::Refer(call));
        Ok(())
    }

    /// Whether the peer of `call` may take a REFER: false only when its Allow left REFER out
    /// (earshot then bridges instead).
    pub fn allows_refer(&self, call: CallRef) -> bool {
        self.calls
            .get(&call)
            .is_none_or(|c| c.peer_allows("REFER") != Some(false))
    }

    /// The final answer to our REFER (408 for a timeout).
    pub(super) fn refer_answered(&mut self, _now: Instant, call: CallRef, status: u16) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(refer) = c.refer_out.as_mut() else {
            return;
        };
        let progress = match status {
            200..=299 => {
                refer.accepted = true;
                TransferProgress::Accepted
            }
            403 | 405 | 420 | 501 => TransferProgress::NotSupported,
            _ => TransferProgress::Failed(status),
        };
        if !refer.accepted {
            c.refer_out = None;
        }
        self.events.push_back(Event::Transfer { call, progress });
    }

    /// RFC 3515 §2.4.5 / RFC 6665 §4.1.3: a NOTIFY within the call's dialog.
    pub(super) fn handle_notify(
        &mut self,
        now: Instant,
        flow: Flow,
        key: TxKey,
        req: Request,
        call: CallRef,
    ) {
        let reply = |status: u16, reason: Option<&str>| {
            let mut resp = ResponseBuilder::new(&req.headers, status, None);
            if let Some(reason) = reason {
                resp = resp.reason(reason);
            }
            resp.build()
        };
        let Some((package, _id)) = event_of(&req.headers) else {
            self.stats.malformed += 1;
            let resp = reply(400, Some("Missing Event"));
            self.respond_in_new_tx(now, flow, key, &req, resp);
            return;
        };
        let subscribed = self.calls.get(&call).is_some_and(|c| c.refer_out.is_some());
        if package != EVENT_REFER || !subscribed {
            let resp = reply(481, None);
            self.respond_in_new_tx(now, flow, key, &req, resp);
            return;
        }
        let Some(status) = sipfrag_status(&req.body) else {
            self.stats.malformed += 1;
            let resp = reply(400, Some("Bad sipfrag"));
            self.respond_in_new_tx(now, flow, key, &req, resp);
            return;
        };
        let resp = reply(200, None);
        self.respond_in_new_tx(now, flow, key, &req, resp);
        let progress = match status {
            100..=199 => TransferProgress::Trying(status),
            200..=299 => TransferProgress::Succeeded,
            _ => TransferProgress::Failed(status),
        };
        let over = status >= 200 || subscription_terminated(&req.headers);
        if let Some(c) = self.calls.get_mut(&call)
            && over
        {
            c.refer_out = None;
        }
        self.events.push_back(Event::Transfer { call, progress });
        if progress == TransferProgress::Succeeded {
            self.send_bye(now, call, EndReason::Transferred);
        }
    }
}
