//! Transfer: handing a call's caller to another destination (a person), as values — the
//! checked destination, how a leg carries it out, why it failed, who asked — and the policy
//! every request passes first (`[calls].outbound_allow`) beside the DTMF rules.
//!
//! The call task runs a transfer ([`super::task`]); each leg does it its own way
//! ([`super::Leg::transfer`]): a Twilio stream hands the call back to Twilio with `<Dial>`
//! TwiML, a SIP leg REFERs (RFC 3515) or, when the caller's side does not take REFER, bridges
//! ([`super::bridge`]). A leg that cannot answers
//! [`TransferStart::Unsupported`] and the call goes on.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::destination::{DialPattern, DialTarget, TargetError, allowed};
use crate::config::{DtmfAction, DtmfRule};

/// A transfer's destination: a [`DialTarget`] (a number or a `sip:`/`sips:` URI, as written),
/// parsed by the one parser of destinations, [`crate::config::destination`].
pub type TransferTarget = DialTarget;

/// How a transfer was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMethod {
    /// SIP REFER (RFC 3515): the caller's side calls the destination itself.
    Refer,
    /// earshot called the destination and joined the two legs' media.
    Bridge,
    /// The Twilio call was handed back to Twilio with `<Dial>` TwiML.
    TwilioDial,
    /// The caller's side asked by REFER (RFC 3515) and earshot called the target itself: the
    /// call moved there, the target is its caller leg now.
    ReferredByPeer,
}

impl TransferMethod {
    pub const ALL: [TransferMethod; 4] = [
        TransferMethod::Refer,
        TransferMethod::Bridge,
        TransferMethod::TwilioDial,
        TransferMethod::ReferredByPeer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferMethod::Refer => "refer",
            TransferMethod::Bridge => "bridge",
            TransferMethod::TwilioDial => "twilio_dial",
            TransferMethod::ReferredByPeer => "referred_by_peer",
        }
    }
}

impl fmt::Display for TransferMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transfer did not happen (the call goes on, unless the agent's fallback asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferFailure {
    /// The caller's leg has no way to transfer.
    NotSupported,
    /// Another transfer of the call is under way.
    InProgress,
    /// The call is already ending.
    CallEnding,
    /// The far end refused it (REFER answered with an error, NOTIFY with a failure).
    Refused,
    /// No final answer in time.
    Timeout,
    /// The leg could not take it now (its table of calls is full, no media ports).
    Unavailable,
    /// The bridged target was busy (SIP 486, 600).
    Busy,
    /// The bridged target declined (SIP 603).
    Declined,
    /// The bridged target does not exist or cannot be reached (SIP 404, 410, 484, 604, 503).
    Unreachable,
    /// The destination a peer's REFER named is not matched by `[calls].outbound_allow`.
    NotAllowed,
}

impl TransferFailure {
    pub const ALL: [TransferFailure; 10] = [
        TransferFailure::NotSupported,
        TransferFailure::InProgress,
        TransferFailure::CallEnding,
        TransferFailure::Refused,
        TransferFailure::Timeout,
        TransferFailure::Unavailable,
        TransferFailure::Busy,
        TransferFailure::Declined,
        TransferFailure::Unreachable,
        TransferFailure::NotAllowed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferFailure::NotSupported => "not_supported",
            TransferFailure::InProgress => "in_progress",
            TransferFailure::CallEnding => "call_ending",
            TransferFailure::Refused => "refused",
            TransferFailure::Timeout => "timeout",
            TransferFailure::Unavailable => "unavailable",
            TransferFailure::Busy => "busy",
            TransferFailure::Declined => "declined",
            TransferFailure::Unreachable => "unreachable",
            TransferFailure::NotAllowed => "not_allowed",
        }
    }
}

impl TransferFailure {
    /// Why a bridged transfer's call to the target failed, from its final SIP status (408
    /// and 480 when it rang unanswered, 487 when earshot cancelled it at the ring timeout).
    pub fn from_sip_status(status: u16) -> Self {
        match status {
            486 | 600 => TransferFailure::Busy,
            603 => TransferFailure::Declined,
            404 | 410 | 484 | 503 | 604 => TransferFailure::Unreachable,
            408 | 480 | 487 => TransferFailure::Timeout,
            _ => TransferFailure::Refused,
        }
    }
}

impl fmt::Display for TransferFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id of a model's function call (OpenAI Realtime `call_id`): what its result must name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionCallId(pub String);

/// Who asked for a transfer. Recorded (in `transfer_requested`) as `api`, `agent`,
/// `agent_fallback` or `dtmf`: a function call's id is the model's business, not the record's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "OriginName", from = "OriginName")]
pub enum TransferOrigin {
    /// `POST /api/calls/{id}/transfer` (and the console).
    Api,
    /// The agent, through the Twilio-compatible call REST.
    Agent,
    /// An OpenAI Realtime model, through its transfer function: this transfer, and no other,
    /// answers that function call.
    AgentFunction(FunctionCallId),
    /// The agent failed and `[agent].fallback = "transfer"`.
    AgentFallback,
    /// A `[[calls.dtmf_rule]]`.
    Dtmf,
    /// The caller's side, by a REFER (RFC 3515) that `[sip].accept_refer` let in.
    Peer,
}

/// What a leg reports of a transfer the caller's side asked for (a SIP REFER earshot carries
/// out by calling the target itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerTransfer {
    /// The target is being called.
    Requested,
    /// The target answered: it is the call's caller leg from now on.
    Moved,
    /// The target was not called (`[calls].outbound_allow`, no route) or did not answer; the
    /// call goes on with the caller as before (or ends, if the caller already hung up).
    Failed(TransferFailure),
}

impl TransferOrigin {
    /// The model's function call this transfer answers, if a model asked for it.
    pub fn function_call(&self) -> Option<&FunctionCallId> {
        match self {
            TransferOrigin::AgentFunction(id) => Some(id),
            _ => None,
        }
    }
}

/// [`TransferOrigin`] as recorded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OriginName {
    Api,
    Agent,
    AgentFallback,
    Dtmf,
    Peer,
}

impl From<TransferOrigin> for OriginName {
    fn from(origin: TransferOrigin) -> Self {
        match origin {
            TransferOrigin::Api => OriginName::Api,
            TransferOrigin::Agent | TransferOrigin::AgentFunction(_) => OriginName::Agent,
            TransferOrigin::AgentFallback => OriginName::AgentFallback,
            TransferOrigin::Dtmf => OriginName::Dtmf,
            TransferOrigin::Peer => OriginName::Peer,
        }
    }
}

impl From<OriginName> for TransferOrigin {
    fn from(name: OriginName) -> Self {
        match name {
            OriginName::Api => TransferOrigin::Api,
            OriginName::Agent => TransferOrigin::Agent,
            OriginName::AgentFallback => TransferOrigin::AgentFallback,
            OriginName::Dtmf => TransferOrigin::Dtmf,
            OriginName::Peer => TransferOrigin::Peer,
        }
    }
}

/// What a leg answers to [`super::Leg::transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferStart {
    /// Handed over: the call task ends the leg with [`super::EndReason::Transferred`].
    Done(TransferMethod),
    /// Under way: a [`super::LegInput::Transfer`] reports the outcome.
    Pending(TransferMethod),
    /// This leg cannot transfer.
    Unsupported,
    /// This leg could not begin it.
    Failed(TransferFailure),
}

/// Why a transfer request was refused before reaching the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not a destination: {0}")]
    Invalid(TargetError),
    /// Not matched by `[calls].outbound_allow` (the destination is not repeated: it is
    /// personal data and the caller knows it).
    #[error("the destination is not allowed by calls.outbound_allow")]
    NotAllowed,
    #[error("the call has ended")]
    Ended,
}

/// What every transfer and key press of a call obeys: `[calls].outbound_allow` and
/// `[[calls.dtmf_rule]]`. Shared by all calls; replaced for new calls on reload.
#[derive(Debug, Clone, Default)]
pub struct TransferPolicy {
    allow: Arc<[DialPattern]>,
    dtmf_rules: Arc<[DtmfRule]>,
}

impl TransferPolicy {
    pub fn new(outbound_allow: &[DialPattern], dtmf_rules: &[DtmfRule]) -> Self {
        Self {
            allow: outbound_allow.into(),
            dtmf_rules: dtmf_rules.into(),
        }
    }

    /// Parses `to` and checks it against the allow-list.
    pub fn check(&self, to: &str) -> Result<TransferTarget, TransferError> {
        let target = TransferTarget::parse(to).map_err(TransferError::Invalid)?;
        if !allowed(&self.allow, &target) {
            return Err(TransferError::NotAllowed);
        }
        Ok(target)
    }

    /// The rule for `digit`, if one is configured.
    pub fn dtmf_rule(&self, digit: char) -> Option<&DtmfAction> {
        self.dtmf_rules
            .iter()
            .find(|r| r.digit == digit)
            .map(|r| &r.action)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_are_the_serialized_names() {
        for method in TransferMethod::ALL {
            assert_eq!(
                serde_json::to_string(&method).unwrap(),
                format!("\"{}\"", method.as_str())
            );
        }
        for reason in TransferFailure::ALL {
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
        for reason in crate::call::PlaceFailure::ALL {
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
    }

    #[test]
    fn requests_pass_syntax_then_the_allow_list() {
        let policy = TransferPolicy::new(
            &[
                DialPattern::parse("+1555*").unwrap(),
                DialPattern::parse("sip:*@pbx.example.com").unwrap(),
            ],
            &[DtmfRule {
                digit: '0',
                action: DtmfAction::Hangup,
            }],
        );
        let number = policy.check("+15551234567").unwrap();
        assert!(!number.is_sip());
        assert!(policy.check("sip:bob@pbx.example.com").unwrap().is_sip());
        assert_eq!(policy.check("+4420123"), Err(TransferError::NotAllowed));
        assert!(matches!(
            policy.check("+1555 1234"),
            Err(TransferError::Invalid(_))
        ));
        assert_eq!(
            TransferPolicy::default().check("+15551234567"),
            Err(TransferError::NotAllowed)
        );
        assert_eq!(policy.dtmf_rule('0'), Some(&DtmfAction::Hangup));
        assert_eq!(policy.dtmf_rule('1'), None);
        assert_eq!(
            serde_json::to_string(&TransferMethod::TwilioDial).unwrap(),
            "\"twilio_dial\""
        );
        assert_eq!(
            serde_json::to_string(&TransferFailure::NotSupported).unwrap(),
            "\"not_supported\""
        );
    }

    #[test]
    fn only_the_function_calls_own_transfer_carries_its_id() {
        let model = TransferOrigin::AgentFunction(FunctionCallId("call_1".into()));
        assert_eq!(
            model.function_call(),
            Some(&FunctionCallId("call_1".into()))
        );
        let other = TransferOrigin::AgentFunction(FunctionCallId("call_2".into()));
        assert_ne!(model.function_call(), other.function_call());
        for origin in [
            TransferOrigin::Api,
            TransferOrigin::Agent,
            TransferOrigin::AgentFallback,
            TransferOrigin::Dtmf,
        ] {
            assert_eq!(origin.function_call(), None, "{origin:?}");
        }
        // The record names the agent either way, and reads back as the agent.
        assert_eq!(serde_json::to_string(&model).unwrap(), "\"agent\"");
        assert_eq!(
            serde_json::from_str::<TransferOrigin>("\"agent\"").unwrap(),
            TransferOrigin::Agent
        );
        assert_eq!(
            serde_json::to_string(&TransferOrigin::AgentFallback).unwrap(),
            "\"agent_fallback\""
        );
    }

    #[test]
    fn a_bridged_targets_sip_status_names_the_failure() {
        use TransferFailure::*;
        let table = [
            (486, Busy),
            (600, Busy),
            (603, Declined),
            (404, Unreachable),
            (480, Timeout),
            (487, Timeout),
            (488, Refused),
        ];
        for (status, failure) in table {
            assert_eq!(
                TransferFailure::from_sip_status(status),
                failure,
                "{status}"
            );
        }
        assert_eq!(serde_json::to_string(&Busy).unwrap(), "\"busy\"");
    }
}
