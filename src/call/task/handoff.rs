//! The call task's transfers and DTMF rules: a transfer asked by the API, the agent, its
//! fallback or a key press goes through the leg ([`super::Leg::transfer`]) and is recorded as
//! `transfer_requested`, then `transferred` or `transfer_failed` (the call goes on);
//! `[[calls.dtmf_rule]]` keys transfer, hang up or stop the agent.
//!
//! A transfer by REFER or to Twilio ends the call ([`EndReason::Transferred`]). A bridged one
//! keeps it: the answered target becomes the call's responder ([`Responder::Bridge`]), the
//! agent or greeting stops, and the call lasts until either side hangs up
//! ([`EndReason::TargetHangup`] when the target does).
//!
//! A transfer the caller's side asks for (a SIP REFER earshot carries out itself, method
//! `referred_by_peer`, by `peer`) is not run here: the leg calls the target and, once it
//! answers, carries it as the call's caller; this task only records what the leg reports
//! ([`PeerTransfer`]). The responder, the recording and everything else stay as they were.

use super::CallTask;
use crate::call::agent::AgentState;
use crate::call::event::{CallEvent, EndReason, TransferFailure, TransferMethod, TransferOrigin};
use crate::call::leg::Leg;
use crate::call::responder::Responder;
use crate::call::transfer::{FunctionCallId, PeerTransfer, TransferStart, TransferTarget};
use crate::clock;
use crate::config::DtmfAction;

impl<L: Leg> CallTask<L> {
    /// The leg's news of a transfer the caller's side asked for, to `to`.
    pub(super) fn peer_transfer(&mut self, to: String, news: PeerTransfer) {
        let id = self.info.id.clone();
        let method = TransferMethod::ReferredByPeer;
        let event = match news {
            PeerTransfer::Requested => {
                tracing::info!(call = %id, %method, "the caller's side asked for a transfer");
                CallEvent::TransferRequested {
                    id,
                    to,
                    method,
                    by: TransferOrigin::Peer,
                }
            }
            PeerTransfer::Moved => {
                tracing::info!(call = %id, %method, "call moved to the transfer target");
                CallEvent::Transferred { id, to, method }
            }
            PeerTransfer::Failed(reason) => {
                tracing::info!(call = %id, %reason, "the caller's transfer failed");
                CallEvent::TransferFailed { id, to, reason }
            }
        };
        let _ = self.services.events.send(event);
    }

    pub(super) fn dtmf_rule(&mut self, digit: char, action: DtmfAction) {
        match action {
            DtmfAction::Transfer { to } => {
                tracing::debug!(call = %self.info.id, %digit, "DTMF rule: transfer");
                self.transfer(to, TransferOrigin::Dtmf);
            }
            DtmfAction::Hangup => {
                tracing::info!(call = %self.info.id, %digit, "DTMF rule: hanging up");
                self.hang_up(EndReason::DtmfHangup);
            }
            DtmfAction::StopAgent => {
                tracing::info!(call = %self.info.id, %digit, "DTMF rule: agent stopped");
                self.stop_agent();
            }
        }
    }

    /// Ends the agent session (its `stop`, then the socket closes); the call goes on, silent.
    fn stop_agent(&mut self) {
        if let Responder::Agent(mut link) =
            std::mem::replace(&mut self.responder, Responder::Silent)
        {
            link.stop_session();
            self.agent_events(clock::now());
            link.stop();
            self.leg.clear();
            self.live
                .send_modify(|l| l.agent = Some(AgentState::Closed));
        }
    }

    /// Hands the caller to `target` through the leg. The outcome is recorded as events; a
    /// transfer done ends the call, one that failed leaves it as it was (except the agent's
    /// fallback, which then hangs up).
    pub(super) fn transfer(&mut self, target: TransferTarget, by: TransferOrigin) {
        let busy = if self.hanging_up.is_some() || self.ended.is_some() {
            Some(TransferFailure::CallEnding)
        } else if self.transferring.is_some() {
            Some(TransferFailure::InProgress)
        } else {
            None
        };
        let start = match busy {
            Some(reason) => Err(reason),
            None => match self.leg.transfer(&target) {
                TransferStart::Unsupported => Err(TransferFailure::NotSupported),
                TransferStart::Failed(reason) => Err(reason),
                TransferStart::Done(method) => Ok((method, true)),
                TransferStart::Pending(method) => Ok((method, false)),
            },
        };
        let (method, done) = match start {
            Ok(started) => started,
            Err(reason) => {
                self.transfer_failed(&target, by, reason);
                return;
            }
        };
        tracing::info!(call = %self.info.id, %method, ?by, "transfer requested");
        tracing::debug!(call = %self.info.id, to = target.as_str(), "transfer destination");
        let _ = self.services.events.send(CallEvent::TransferRequested {
            id: self.info.id.clone(),
            to: target.as_str().to_owned(),
            method,
            by: by.clone(),
        });
        if done {
            self.transferred(&target, by, method);
        } else {
            self.transferring = Some((target, by));
        }
    }

    /// The model called its transfer function: the caller goes to `[agent].transfer_to`, and
    /// the model hears how that went if the call goes on.
    pub(super) fn agent_transfer(&mut self, call_id: String) {
        let target = self.responder.agent().and_then(|link| link.transfer_to());
        let Some(target) = target else {
            self.agent_function_result(&call_id, "failed", "not_configured");
            return;
        };
        self.transfer(
            target,
            TransferOrigin::AgentFunction(FunctionCallId(call_id)),
        );
    }

    /// Answers the model's function call, if the agent is still on the call.
    fn agent_function_result(&mut self, call_id: &str, status: &str, reason: &str) {
        let output = serde_json::json!({ "status": status, "reason": reason }).to_string();
        if let Some(link) = self.responder.agent() {
            link.function_result(call_id, &output);
        }
    }

    /// The leg's report on the transfer it had under way.
    pub(super) fn transfer_over(&mut self, outcome: Result<TransferMethod, TransferFailure>) {
        let Some((target, by)) = self.transferring.take() else {
            return;
        };
        match outcome {
            Ok(method) => self.transferred(&target, by, method),
            Err(reason) => self.transfer_failed(&target, by, reason),
        }
    }

    /// The leg carries the transfer under way another way now (REFER refused: a bridge).
    pub(super) fn transfer_via(&mut self, method: TransferMethod) {
        let Some((target, by)) = self.transferring.as_ref() else {
            return;
        };
        tracing::info!(call = %self.info.id, %method, ?by, "transfer requested");
        let _ = self.services.events.send(CallEvent::TransferRequested {
            id: self.info.id.clone(),
            to: target.as_str().to_owned(),
            method,
            by: by.clone(),
        });
    }

    /// The bridged target hung up: so does the caller's leg.
    pub(super) fn target_ended(&mut self) {
        if matches!(self.responder, Responder::Bridge(_)) {
            tracing::info!(call = %self.info.id, "the bridged target hung up");
            self.hang_up(EndReason::TargetHangup);
        }
    }

    fn transferred(&mut self, target: &TransferTarget, by: TransferOrigin, method: TransferMethod) {
        if method == TransferMethod::Bridge {
            let Some(peer) = self.leg.take_bridge() else {
                // The leg reported a bridge it does not hold: nothing joins the two.
                self.transfer_failed(target, by, TransferFailure::Unavailable);
                return;
            };
            self.stop_agent();
            self.responder.stop_message();
            self.responder = Responder::Bridge(peer);
            self.leg.clear();
            tracing::info!(call = %self.info.id, %method, "call bridged to the transfer target");
            let _ = self.services.events.send(CallEvent::Transferred {
                id: self.info.id.clone(),
                to: target.as_str().to_owned(),
                method,
            });
            return;
        }
        tracing::info!(call = %self.info.id, %method, "call transferred");
        let _ = self.services.events.send(CallEvent::Transferred {
            id: self.info.id.clone(),
            to: target.as_str().to_owned(),
            method,
        });
        self.hang_up(EndReason::Transferred);
    }

    fn transfer_failed(
        &mut self,
        target: &TransferTarget,
        by: TransferOrigin,
        reason: TransferFailure,
    ) {
        tracing::warn!(call = %self.info.id, %reason, ?by, "transfer failed");
        let _ = self.services.events.send(CallEvent::TransferFailed {
            id: self.info.id.clone(),
            to: target.as_str().to_owned(),
            reason,
        });
        if by == TransferOrigin::AgentFallback {
            self.hang_up(EndReason::AgentFailed);
        }
        // Only the transfer the model asked for answers its function call.
        if let Some(FunctionCallId(call_id)) = by.function_call() {
            self.agent_function_result(call_id, "failed", reason.as_str());
        }
    }
}
