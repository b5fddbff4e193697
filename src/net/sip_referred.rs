//! Transfers the caller's side asks for: a REFER (RFC 3515) accepted by the endpoint
//! (`[sip].accept_refer`), carried out by earshot as the transferee. It places a call to the
//! Refer-To target (with the REFER's Referred-By, RFC 3892) through the dial rules of
//! [`super::sip_dial`] — `[calls].outbound_allow` first: a target it does not match is
//! refused with a NOTIFY "403" and no INVITE — and reports the call's progress to the referrer
//! through [`Endpoint::refer_outcome`] (180 once it rings, then its final status).
//!
//! Once the target answers, **the call moves there**: the caller's [`SipCall`] (same call
//! task, same record and recording, the same responder) is re-keyed to the new dialog and its
//! leg takes the new dialog's sockets ([`SipSignal::Moved`]). The old dialog ends by the
//! referrer's BYE (RFC 5589 §6) or, failing that, by ours after 64·T1; either way the call
//! goes on. If the target fails, the call goes on with the caller as before.
//!
//! A blind transfer outlives its referrer: a caller that hangs up while the target rings does
//! not end the call; its [`SipCall`] waits here, idle, for the answer, or ends with
//! [`CallEnd::ReferFailed`] when the target fails. Hanging the call up meanwhile cancels the
//! target's INVITE. At most one such call per call (the endpoint takes one REFER at a time).
//!
//! [`Endpoint::refer_outcome`]: crate::sip::endpoint::Endpoint::refer_outcome

use super::rtp::RtpSockets;
use super::sip::{LoopState, SipDriver};
use super::sip_bridge::target_failure;
use super::sip_dial::DialError;
use super::sip_leg::{SipCall, SipSignal};
use crate::call::{EndReason as CallEnd, PeerTransfer, TransferFailure};
use crate::clock;
use crate::config::DialTarget;
use crate::sip::endpoint::{CallRef, EndReason, Event};
use crate::sip::message::Uri;

/// A call placed for a caller's REFER, until its target answers or fails.
#[derive(Debug)]
pub struct Referred {
    /// The call whose caller asked (its old dialog).
    pub caller: CallRef,
    /// The target as dialled, for the call's events (personal data: not logged at info).
    to: String,
    /// The new call's media sockets, handed to the caller's leg at the answer.
    sockets: RtpSockets,
    /// The caller's call, once its side hung up before the target answered.
    held: Option<SipCall>,
    /// The referrer was told the target rings.
    rang: bool,
}

impl Referred {
    /// The caller's call it holds, if its caller hung up (at shutdown).
    pub(super) fn take_held(&mut self) -> Option<SipCall> {
        self.held.take()
    }
}

/// The target a Refer-To names, as a dial request writes it: a `tel:` URI's number, or the
/// `sip:` URI without its headers (a Replaces never gets here: the endpoint answers 501).
pub fn dial_text(target: &Uri) -> String {
    if target.scheme == "tel" {
        let number = target.host.split(';').next().unwrap_or_default();
        return number.to_owned();
    }
    let mut uri = target.clone();
    uri.headers.clear();
    uri.to_string()
}

/// Why no call was placed for a REFER: the NOTIFY's status and the transfer's failure.
fn refusal(err: &DialError) -> (u16, TransferFailure) {
    match err {
        DialError::NotAllowed => (403, TransferFailure::NotAllowed),
        DialError::NoTrunk | DialError::NeedsAddress | DialError::UnknownTrunk(_) => {
            (404, TransferFailure::Unreachable)
        }
        DialError::NoMediaPorts | DialError::Refused(_) => (503, TransferFailure::Unavailable),
    }
}

impl SipDriver {
    /// The caller's side of `caller` asked to be transferred to `target`: call it.
    pub(super) fn refer_requested(
        &mut self,
        state: &mut LoopState,
        caller: CallRef,
        target: &Uri,
        referred_by: Option<String>,
    ) {
        let now = clock::now();
        let Some(call) = state.calls.get(&caller) else {
            self.endpoint.refer_outcome(now, caller, 503);
            return;
        };
        let to = dial_text(target);
        tracing::info!(call = %call.handle.id(), "the caller's side asked for a transfer (REFER accepted)");
        call.signal(SipSignal::Referred {
            to: to.clone(),
            news: PeerTransfer::Requested,
        });
        let placed = DialTarget::parse(&to)
            .map_err(|_| DialError::NeedsAddress)
            .and_then(|dial| {
                let route = self.dial.route(&dial, None, self.endpoint.advertised())?;
                self.place_route(route, referred_by)
            });
        match placed {
            Ok((target_call, sockets)) => {
                self.endpoint.refer_dialling(now, caller);
                let referred = Referred {
                    caller,
                    to,
                    sockets,
                    held: None,
                    rang: false,
                };
                state.referred.insert(target_call, referred);
            }
            Err(err) => {
                tracing::info!(call = %call.handle.id(), %err, "the caller's transfer not placed");
                let (status, failure) = refusal(&err);
                call.signal(SipSignal::Referred {
                    to,
                    news: PeerTransfer::Failed(failure),
                });
                self.endpoint.refer_outcome(now, caller, status);
            }
        }
    }

    /// An endpoint event of a call placed for a REFER: ringing, answered (the move) or failed.
    pub(super) fn referred_event(&mut self, state: &mut LoopState, event: Event) {
        let now = clock::now();
        match event {
            Event::Progress {
                call,
                ringing,
                media,
            } => {
                let Some(referred) = state.referred.get_mut(&call) else {
                    return;
                };
                if (ringing || media.is_some()) && !referred.rang {
                    referred.rang = true;
                    self.endpoint.refer_outcome(now, referred.caller, 180);
                }
            }
            Event::Answered { call, media } => {
                let Some(referred) = state.referred.remove(&call) else {
                    return;
                };
                self.endpoint.refer_outcome(now, referred.caller, 200);
                let moving = referred
                    .held
                    .or_else(|| state.calls.remove(&referred.caller));
                let Some(moving) = moving else {
                    // The call ended meanwhile: nobody to move there.
                    self.endpoint.hangup(now, call);
                    return;
                };
                moving.signal(SipSignal::ReferSupport(self.endpoint.allows_refer(call)));
                moving.signal(SipSignal::Moved {
                    call,
                    sockets: referred.sockets,
                    media,
                });
                moving.signal(SipSignal::Referred {
                    to: referred.to,
                    news: PeerTransfer::Moved,
                });
                state.calls.insert(call, moving);
            }
            Event::Failed {
                call,
                status,
                reason,
            } => {
                let Some(referred) = state.referred.remove(&call) else {
                    return;
                };
                tracing::info!(
                    status,
                    ?reason,
                    "the target of the caller's transfer did not answer"
                );
                self.endpoint.refer_outcome(now, referred.caller, status);
                let news = SipSignal::Referred {
                    to: referred.to,
                    news: PeerTransfer::Failed(target_failure(status, reason)),
                };
                if let Some(held) = referred.held {
                    held.signal(news);
                    held.signal(SipSignal::Ended(CallEnd::ReferFailed));
                } else if let Some(caller) = state.calls.get(&referred.caller) {
                    caller.signal(news);
                }
            }
            other => tracing::trace!(?other, "event of a referred call"),
        }
    }

    /// The old dialog of `caller` ended for `reason`. A caller that hung up while its REFER's
    /// target rings leaves the call waiting for the target (true: the call goes on); any other
    /// end cancels the target's INVITE.
    pub(super) fn referrer_ended(
        &mut self,
        state: &mut LoopState,
        caller: CallRef,
        reason: &EndReason,
    ) -> bool {
        let Some((&target, referred)) = state
            .referred
            .iter_mut()
            .find(|(_, r)| r.caller == caller && r.held.is_none())
        else {
            return false;
        };
        if *reason == EndReason::RemoteBye
            && let Some(call) = state.calls.remove(&caller)
        {
            tracing::info!(call = %call.handle.id(), "the caller hung up; its transfer's target still rings");
            call.signal(SipSignal::ReferrerGone);
            referred.held = Some(call);
            return true;
        }
        state.referred.remove(&target);
        self.endpoint.hangup(clock::now(), target);
        false
    }

    /// A hang-up asked by a call's task. A call whose caller left while the target rings is
    /// ended here (the target's INVITE cancelled); true when that was the case.
    pub(super) fn hang_up_held(&mut self, state: &mut LoopState, caller: CallRef) -> bool {
        let Some(target) = state
            .referred
            .iter()
            .find(|(_, r)| r.caller == caller && r.held.is_some())
            .map(|(target, _)| *target)
        else {
            return false;
        };
        if let Some(held) = state.referred.remove(&target).and_then(|r| r.held) {
            held.signal(SipSignal::Ended(CallEnd::LocalHangup));
        }
        self.endpoint.hangup(clock::now(), target);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_refer_to_is_dialled_as_a_number_or_a_uri_without_headers() {
        let tel = Uri::parse("tel:+15551234567;phone-context=example.com").unwrap();
        assert_eq!(dial_text(&tel), "+15551234567");
        let sip = Uri::parse("sip:bob@127.0.0.1:5070?X-Foo=1").unwrap();
        assert_eq!(dial_text(&sip), "sip:bob@127.0.0.1:5070");
    }

    #[test]
    fn a_target_that_cannot_be_dialled_names_its_notify_status() {
        assert_eq!(
            refusal(&DialError::NotAllowed),
            (403, TransferFailure::NotAllowed)
        );
        assert_eq!(
            refusal(&DialError::NeedsAddress),
            (404, TransferFailure::Unreachable)
        );
        assert_eq!(
            refusal(&DialError::NoMediaPorts),
            (503, TransferFailure::Unavailable)
        );
    }
}
