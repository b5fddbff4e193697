//! Where a call may be transferred: the syntax of a destination (a phone number or a `sip:`
//! URI that cannot break out of a header or a TwiML element), and the check against
//! `[calls].outbound_allow` ([`super::outbound`]'s patterns), the same list outbound calls obey.

/// The longest destination taken: far beyond any number or SIP URI a person writes, and short
/// enough that it fits a header, a TwiML document and a log line.
pub const MAX_TARGET: usize = 256;
/// Digits a number may have (E.164 has 15; extensions and prefixes get room).
const MAX_DIGITS: usize = 32;

/// What kind of destination a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A phone number or extension: an optional `+`, then digits.
    Number,
    /// A `sip:` or `sips:` URI.
    Sip,
}

/// Whether `target` matches one of `patterns` (empty: never).
pub fn allowed(patterns: &[super::DialPattern], target: &str) -> bool {
    super::outbound_allowed(patterns, target)
}

/// Checks a destination's syntax: a number (`+15551234567`, `1000`) or a `sip:`/`sips:` URI
/// with nothing that could break out of a header or a TwiML element.
pub fn check_target(target: &str) -> Result<TargetKind, String> {
    if target.is_empty() {
        return Err("must not be empty".into());
    }
    if target.len() > MAX_TARGET {
        return Err(format!("longer than {MAX_TARGET} bytes"));
    }
    let lower = target.get(..5).map(str::to_ascii_lowercase);
    let rest = match lower.as_deref() {
        Some("sips:") => target.get(5..),
        Some(s) if s.starts_with("sip:") => target.get(4..),
        _ => None,
    };
    if let Some(rest) = rest {
        let bad = |c: char| c.is_whitespace() || c.is_control() || "<>\"'".contains(c);
        return if rest.is_empty() || rest.starts_with('@') || rest.ends_with('@') {
            Err(format!("{target:?} is not a SIP URI (user@host or host)"))
        } else if rest.chars().any(bad) {
            Err(format!(
                "{target:?} contains whitespace, quotes or angle brackets"
            ))
        } else {
            Ok(TargetKind::Sip)
        };
    }
    let digits = target.strip_prefix('+').unwrap_or(target);
    if !digits.is_empty()
        && digits.len() <= MAX_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        Ok(TargetKind::Number)
    } else {
        Err(format!(
            "{target:?} is neither a number (+ and up to {MAX_DIGITS} digits) nor a sip: URI"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_numbers_or_sip_uris_that_cannot_break_a_document() {
        assert_eq!(check_target("+15551234567"), Ok(TargetKind::Number));
        assert_eq!(check_target("1000"), Ok(TargetKind::Number));
        assert_eq!(check_target("sip:bob@pbx.example.com"), Ok(TargetKind::Sip));
        assert_eq!(
            check_target("SIPS:bob@pbx.example.com:5061"),
            Ok(TargetKind::Sip)
        );
        for bad in [
            "",
            "+",
            "+1 555",
            "555-1234",
            "sip:",
            "sip:@host",
            "sip:bob@",
            "sip:bob@host>",
            "sip:bob@host\r\nVia: x",
            "sip:\"x\"@host",
            "tel:+15551234567",
            "</Dial><Hangup/>",
        ] {
            assert!(check_target(bad).is_err(), "{bad:?}");
        }
        assert!(check_target(&format!("sip:{}", "a".repeat(MAX_TARGET))).is_err());
    }
}
