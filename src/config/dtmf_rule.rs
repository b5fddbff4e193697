//! `[[calls.dtmf_rule]]`: what a caller's key press does beside reaching the agent — transfer the
//! caller (`to`, which `[calls].outbound_allow` must allow), hang up, or stop the call's agent.
//! One rule per digit; the call task applies them ([`crate::call`]).

use serde::Deserialize;

use super::Errors;
use super::destination::{DialTarget, allowed};

/// The keys of a phone pad, RFC 4733 events 0–15.
const DIGITS: &str = "0123456789*#ABCD";

/// One rule: pressing `digit` does `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfRule {
    /// `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    pub action: DtmfAction,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtmfAction {
    /// Transfers the caller to this destination (checked against `outbound_allow`).
    Transfer { to: DialTarget },
    /// Ends the call.
    Hangup,
    /// Ends the call's agent session; the call goes on without it.
    StopAgent,
}

/// A rule as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawDtmfRule {
    digit: Option<String>,
    action: Option<String>,
    to: Option<String>,
}

/// The rules checked; invalid ones are recorded in `e` and left out.
pub(super) fn validate_dtmf_rules(
    e: &mut Errors,
    raw: Vec<RawDtmfRule>,
    outbound_allow: &[super::DialPattern],
) -> Vec<DtmfRule> {
    let mut rules: Vec<DtmfRule> = Vec::with_capacity(raw.len());
    for (i, rule) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("calls.dtmf_rule[{i}].{key}");
        let RawDtmfRule { digit, action, to } = rule;
        if to.is_some() && action.as_deref() != Some("transfer") {
            e.push(at("to"), "only used with action = \"transfer\"");
        }
        let digit = match digit.as_deref() {
            None => {
                e.push(at("digit"), "required");
                None
            }
            Some(d) => {
                let mut chars = d.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if DIGITS.contains(c) => Some(c),
                    _ => {
                        e.push(
                            at("digit"),
                            format!("{d:?} is not one key of 0-9, *, #, A-D"),
                        );
                        None
                    }
                }
            }
        };
        if let Some(c) = digit
            && rules.iter().any(|r| r.digit == c)
        {
            e.push(at("digit"), format!("{c:?} already has a rule"));
        }
        let action = match action.as_deref() {
            None => {
                e.push(at("action"), "required");
                None
            }
            Some("transfer") => {
                transfer_to(e, &at("to"), to, outbound_allow).map(|to| DtmfAction::Transfer { to })
            }
            Some("hangup") => Some(DtmfAction::Hangup),
            Some("stop_agent") => Some(DtmfAction::StopAgent),
            Some(other) => {
                e.push(
                    at("action"),
                    format!(
                        "{other:?} is not an action (expected \"transfer\", \"hangup\" or \"stop_agent\")"
                    ),
                );
                None
            }
        };
        if let (Some(digit), Some(action)) = (digit, action) {
            rules.push(DtmfRule { digit, action });
        }
    }
    rules
}

/// A transfer destination from the file: required, a number or SIP URI, and allowed by
/// `[calls].outbound_allow`.
pub(super) fn transfer_to(
    e: &mut Errors,
    path: &str,
    raw: Option<String>,
    outbound_allow: &[super::DialPattern],
) -> Option<DialTarget> {
    let Some(raw) = raw else {
        e.push(path, "required for a transfer");
        return None;
    };
    let to = match DialTarget::parse(&raw) {
        Ok(to) => to,
        Err(reason) => {
            e.push(path, format!("{raw:?}: {reason}"));
            return None;
        }
    };
    if !allowed(outbound_allow, &to) {
        e.push(
            path,
            format!("{raw:?} is not allowed by calls.outbound_allow"),
        );
        return None;
    }
    Some(to)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

    use super::*;

    #[test]
    fn rules_read_with_their_actions() {
        let config = Config::from_toml_str(
            "[calls]\noutbound_allow = [\"+1555*\"]\n\
             [[calls.dtmf_rule]]\ndigit = \"0\"\naction = \"transfer\"\nto = \"+15551234567\"\n\
             [[calls.dtmf_rule]]\ndigit = \"#\"\naction = \"hangup\"\n\
             [[calls.dtmf_rule]]\ndigit = \"*\"\naction = \"stop_agent\"\n",
        )
        .unwrap();
        assert_eq!(
            config.calls.dtmf_rules,
            [
                DtmfRule {
                    digit: '0',
                    action: DtmfAction::Transfer {
                        to: DialTarget::Number("+15551234567".into())
                    }
                },
                DtmfRule {
                    digit: '#',
                    action: DtmfAction::Hangup
                },
                DtmfRule {
                    digit: '*',
                    action: DtmfAction::StopAgent
                },
            ]
        );
    }

    #[test]
    fn bad_rules_name_their_field() {
        let errors = invalid(
            "[calls]\noutbound_allow = [\"+1555*\"]\n\
             [[calls.dtmf_rule]]\ndigit = \"0\"\naction = \"transfer\"\n\
             [[calls.dtmf_rule]]\ndigit = \"12\"\naction = \"hangup\"\n\
             [[calls.dtmf_rule]]\ndigit = \"E\"\naction = \"dance\"\n\
             [[calls.dtmf_rule]]\ndigit = \"1\"\naction = \"transfer\"\nto = \"+4420123\"\n\
             [[calls.dtmf_rule]]\ndigit = \"2\"\naction = \"transfer\"\nto = \"sip:x@y>\"\n\
             [[calls.dtmf_rule]]\ndigit = \"3\"\naction = \"hangup\"\nto = \"+15551\"\n\
             [[calls.dtmf_rule]]\ndigit = \"3\"\naction = \"hangup\"\n",
        );
        assert_eq!(
            paths(&errors),
            [
                "calls.dtmf_rule[0].to",
                "calls.dtmf_rule[1].digit",
                "calls.dtmf_rule[2].digit",
                "calls.dtmf_rule[2].action",
                "calls.dtmf_rule[3].to",
                "calls.dtmf_rule[4].to",
                "calls.dtmf_rule[5].to",
                "calls.dtmf_rule[6].digit",
            ]
        );
        assert!(errors[4].reason.contains("outbound_allow"), "{}", errors[4]);
    }
}
