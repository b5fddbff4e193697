//! What earshot may dial: the syntax of a destination (a phone number or a `sip:` URI) and
//! `[calls].outbound_allow`, the glob patterns a destination must match, as written, before
//! earshot places a call or transfers one to it (`"+4420*"`, `"sip:*@pbx.example.com"`). An
//! empty list allows nothing: no toll fraud through a box that was never told where it may call.
//!
//! Patterns: `*` matches any run of characters (none included), `?` exactly one; everything else
//! matches itself, case-sensitively.

/// The longest destination taken: far beyond any number or SIP URI a person writes, and short
/// enough that it fits a header, a TwiML document and a log line.
pub const MAX_TARGET: usize = 256;
/// The longest pattern taken.
const MAX_PATTERN: usize = 256;
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
pub fn allowed(patterns: &[String], target: &str) -> bool {
    patterns
        .iter()
        .any(|p| glob(p.as_bytes(), target.as_bytes()))
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

/// Checks a pattern of `outbound_allow`.
pub(super) fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        Err("must not be empty (write \"*\" to allow everything)".into())
    } else if pattern.len() > MAX_PATTERN {
        Err(format!("longer than {MAX_PATTERN} bytes"))
    } else if pattern.chars().any(char::is_control) {
        Err(format!("{pattern:?} contains control characters"))
    } else {
        Ok(())
    }
}

/// Glob match with one backtrack point (the last `*`): linear in practice, at worst
/// pattern × text, both bounded.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn patterns_match_the_target_as_written() {
        let allow = pats(&["+4420*", "sip:*@pbx.example.com", "10??"]);
        assert!(allowed(&allow, "+442071234567"));
        assert!(allowed(&allow, "+4420"));
        assert!(allowed(&allow, "sip:alice@pbx.example.com"));
        assert!(allowed(&allow, "1001"));
        assert!(!allowed(&allow, "+4421"));
        assert!(!allowed(&allow, "4420123"));
        assert!(!allowed(&allow, "sip:alice@pbx.example.com.evil"));
        assert!(!allowed(&allow, "SIP:alice@pbx.example.com"));
        assert!(!allowed(&allow, "100"));
        assert!(!allowed(&allow, "10011"));
        assert!(!allowed(&[], "+442071234567"), "empty allows nothing");
        assert!(allowed(&pats(&["*"]), "anything"));
        assert!(allowed(&pats(&["a*b*c"]), "aXbYbZc"));
        assert!(!allowed(&pats(&["a*b*c"]), "aXbYbZ"));
    }

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
        assert!(check_pattern("").is_err());
        assert!(check_pattern("+44*\n").is_err());
        assert!(check_pattern("+44*").is_ok());
    }
}
