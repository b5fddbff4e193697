//! `[calls].outbound_allow`: where earshot may place calls. Toll-fraud protection by default:
//! an empty list (the default) allows no outbound call at all.
//!
//! Each entry is a glob pattern (`*` any run of characters, `?` exactly one) matched against
//! the requested target as written: `"+4420*"`, `"sip:*@pbx.example.com"`. A target is a
//! phone number (dialled through a trunk) or a `sip:` URI (called directly, or through a
//! trunk's registrar when one is named); [`DialTarget::parse`] tells them apart.

/// Patterns at most.
pub(super) const MAX_PATTERNS: usize = 256;
/// Longest pattern, and longest target.
pub(super) const MAX_TARGET: usize = 256;

/// One `outbound_allow` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialPattern(String);

impl DialPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_TARGET {
            return Err(format!("{s:?} must be 1 to {MAX_TARGET} characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{s:?} must not contain spaces or control characters"
            ));
        }
        if s.chars().all(|c| c == '*') {
            return Err(format!(
                "{s:?} would allow calls anywhere; name the numbers or hosts (\"+4420*\", \
                 \"sip:*@pbx.example.com\")"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// Whether `target`, as written, matches the whole pattern.
    pub fn matches(&self, target: &str) -> bool {
        glob(self.0.as_bytes(), target.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `target` is allowed by any of `patterns`.
pub fn outbound_allowed(patterns: &[DialPattern], target: &str) -> bool {
    patterns.iter().any(|p| p.matches(target))
}

/// `*` and `?` glob matching, iterative with one backtrack point (linear in practice, never
/// exponential).
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
        .is_some_and(|rest| rest.iter().all(|c| *c == b'*'))
}

/// A requested call target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    /// A phone number (`+`, digits, `*`, `#`), dialled through a trunk.
    Number(String),
    /// A `sip:` URI, as written.
    Uri(String),
}

/// Why a target is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the target is empty")]
    Empty,
    #[error("the target is over {MAX_TARGET} characters")]
    TooLong,
    #[error("not a phone number (+, digits, * and #) or a sip: URI")]
    Malformed,
}

impl DialTarget {
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if s.len() > MAX_TARGET {
            return Err(TargetError::TooLong);
        }
        if let Some(rest) = s.strip_prefix("sip:") {
            let (user, host) = rest.split_once('@').unwrap_or(("", rest));
            let clean = |part: &str| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-_.!~*'()&=$,;?/%:[]".contains(c))
            };
            if !clean(host) || !(user.is_empty() || clean(user)) {
                return Err(TargetError::Malformed);
            }
            return Ok(DialTarget::Uri(s.to_owned()));
        }
        let digits = s.strip_prefix('+').unwrap_or(s);
        if !digits.is_empty()
            && digits
                .chars()
                .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
        {
            return Ok(DialTarget::Number(s.to_owned()));
        }
        Err(TargetError::Malformed)
    }

    /// The target as written (what `outbound_allow` is matched against).
    pub fn as_str(&self) -> &str {
        match self {
            DialTarget::Number(s) | DialTarget::Uri(s) => s,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn globs_match_the_whole_target() {
        let p = |s: &str| DialPattern::parse(s).unwrap();
        assert!(p("+4420*").matches("+442071234567"));
        assert!(!p("+4420*").matches("+4430"));
        assert!(!p("+4420*").matches("0+4420"));
        assert!(p("sip:*@pbx.example.com").matches("sip:bob@pbx.example.com"));
        assert!(!p("sip:*@pbx.example.com").matches("sip:bob@pbx.example.com.evil"));
        assert!(p("+1555???????").matches("+15551234567"));
        assert!(!p("+1555???????").matches("+155512345678"));
        assert!(p("1*2*3").matches("1xx2yy3"));
        assert!(!p("1*2*3").matches("1xx2yy4"));
        assert!(p("100").matches("100") && !p("100").matches("1000"));
        // Many stars against a long near-miss: answered at once, no exponential backtracking.
        let long = DialPattern::parse(&"*a".repeat(60)).unwrap();
        assert!(long.matches(&"a".repeat(200)));
        assert!(!long.matches(&format!("{}b", "a".repeat(200))));
        assert!(!long.matches(&"a".repeat(59)));
    }

    #[test]
    fn patterns_refuse_blanks_and_match_everything() {
        assert!(DialPattern::parse("").is_err());
        assert!(DialPattern::parse("*").is_err());
        assert!(DialPattern::parse("+44 20*").is_err());
    }

    #[test]
    fn targets_are_numbers_or_sip_uris() {
        assert_eq!(
            DialTarget::parse("+442071234567"),
            Ok(DialTarget::Number("+442071234567".into()))
        );
        assert_eq!(
            DialTarget::parse("sip:bob@127.0.0.1:5070"),
            Ok(DialTarget::Uri("sip:bob@127.0.0.1:5070".into()))
        );
        for bad in [
            "",
            "bob",
            "+",
            "tel:+44",
            "sip:",
            "sip:bob@",
            "sip:a b@c",
            "+44<1>",
        ] {
            assert!(DialTarget::parse(bad).is_err(), "{bad:?}");
        }
    }
}
