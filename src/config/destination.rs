//! Destinations: what a call may be placed or transferred to ([`DialTarget`]), and
//! `[calls].outbound_allow` ([`DialPattern`], [`allowed`]), the glob patterns that say which of
//! them earshot may dial. Every destination — `POST /api/calls`, a transfer from the API, a DTMF
//! rule, the agent (TwiML `<Dial>`, its transfer function, its fallback), a bridged leg — is
//! parsed here and matched here; nothing else decides what a destination is.
//!
//! A destination is a phone number (an optional `+`, then digits, `*` and `#`: dialled through
//! a trunk) or a `sip:`/`sips:` URI (RFC 3261 §19.1.1: `user@host` or `host`, an optional port,
//! parameters) with nothing that could break out of a SIP header, a TwiML element or a log
//! line. `tel:` URIs are not taken. Toll-fraud protection by default: an empty allow-list (the
//! default) allows no destination at all. Each pattern (`*` any run of characters, `?` exactly
//! one) is matched against the whole destination as written: `"+4420*"`,
//! `"sip:*@pbx.example.com"`.

/// Patterns at most.
pub(super) const MAX_PATTERNS: usize = 256;
/// The longest destination, and the longest pattern: far beyond any number or SIP URI a
/// person writes, and short enough for a header, a TwiML document and a log line.
pub const MAX_TARGET: usize = 256;
/// Digits a number may have (E.164 has 15; extensions and prefixes get room).
const MAX_DIGITS: usize = 32;

/// A destination that parsed. Personal data: never logged at info level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTarget {
    /// A phone number or extension (`+`, digits, `*`, `#`), dialled through a trunk.
    Number(String),
    /// A `sip:` or `sips:` URI, as written.
    Uri(String),
}

/// Why a destination is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the target is empty")]
    Empty,
    #[error("the target is over {MAX_TARGET} characters")]
    TooLong,
    #[error("the target contains spaces or control characters")]
    Spaces,
    #[error("not a SIP URI (user@host or host, an optional port, no quotes or angle brackets)")]
    BadUri,
    #[error("not a phone number (+, up to {MAX_DIGITS} digits, * and #) or a sip: URI")]
    Malformed,
}

impl DialTarget {
    /// Reads a destination as written: nothing is trimmed or rewritten, so what
    /// `outbound_allow` is matched against is what was asked for.
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if s.len() > MAX_TARGET {
            return Err(TargetError::TooLong);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TargetError::Spaces);
        }
        if let Some(rest) = strip_scheme(s, "sips:").or_else(|| strip_scheme(s, "sip:")) {
            return if sip_uri_rest(rest) {
                Ok(DialTarget::Uri(s.to_owned()))
            } else {
                Err(TargetError::BadUri)
            };
        }
        let dial = s.strip_prefix('+').unwrap_or(s);
        let digits = dial.bytes().filter(u8::is_ascii_digit).count();
        if (1..=MAX_DIGITS).contains(&digits)
            && dial.len() <= MAX_DIGITS
            && dial
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
        {
            return Ok(DialTarget::Number(s.to_owned()));
        }
        Err(TargetError::Malformed)
    }

    /// The destination as written (what `outbound_allow` is matched against).
    pub fn as_str(&self) -> &str {
        match self {
            DialTarget::Number(s) | DialTarget::Uri(s) => s,
        }
    }

    /// A `sip:`/`sips:` URI rather than a number.
    pub fn is_sip(&self) -> bool {
        matches!(self, DialTarget::Uri(_))
    }
}

/// `s` past `scheme`, matched without regard to case.
fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let head = s.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| s.get(scheme.len()..))
        .flatten()
}

/// A SIP URI past its scheme: `[user[:password]@]host[:port][;params][?headers]`, every part
/// from RFC 3261's character classes, less the quote (`'`), which would break a TwiML attribute.
fn sip_uri_rest(rest: &str) -> bool {
    const USER: &str = "-_.!~*()&=+$,;?/%:";
    const PARAMS: &str = "-_.!~*()&=+$,;?/%:[]@";
    let (user, host_and_params) = match rest.split_once('@') {
        Some((user, after)) => (Some(user), after),
        None => (None, rest),
    };
    if let Some(user) = user
        && (user.is_empty()
            || !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || USER.contains(c)))
    {
        return false;
    }
    let end = host_and_params
        .find([';', '?'])
        .unwrap_or(host_and_params.len());
    let (hostport, params) = host_and_params.split_at(end);
    host_port(hostport)
        && params
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || PARAMS.contains(c))
}

/// `host[:port]`: a name or IPv4 address, or an IPv6 reference in brackets; a port 1..=65535.
fn host_port(s: &str) -> bool {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match (after, after.strip_prefix(':')) {
            ("", _) => return true,
            (_, Some(port)) => ("v6", Some(port)),
            (_, None) => return false,
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let name = !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let port = port.is_none_or(|p| {
        p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    name && port
}

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
    pub fn matches(&self, target: &DialTarget) -> bool {
        glob(self.0.as_bytes(), target.as_str().as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `target` is allowed by one of `patterns` (none: never).
pub fn allowed(patterns: &[DialPattern], target: &DialTarget) -> bool {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn target(s: &str) -> DialTarget {
        DialTarget::parse(s).unwrap()
    }

    #[test]
    fn globs_match_the_whole_target() {
        let p = |s: &str| DialPattern::parse(s).unwrap();
        assert!(p("+4420*").matches(&target("+442071234567")));
        assert!(!p("+4420*").matches(&target("+4430")));
        assert!(!p("+4420*").matches(&target("044201")));
        assert!(p("sip:*@pbx.example.com").matches(&target("sip:bob@pbx.example.com")));
        assert!(!p("sip:*@pbx.example.com").matches(&target("sip:bob@pbx.example.com.evil")));
        assert!(p("+1555???????").matches(&target("+15551234567")));
        assert!(!p("+1555???????").matches(&target("+155512345678")));
        assert!(p("1*2*3").matches(&target("1992883")));
        assert!(!p("1*2*3").matches(&target("1992884")));
        assert!(p("100").matches(&target("100")) && !p("100").matches(&target("1000")));
        // A `*` in a number is a character of the number, whatever the pattern's stars mean.
        assert!(p("*69").matches(&target("*69")));
        // Many stars against a long near-miss: answered at once, no exponential backtracking.
        let long = "*a".repeat(60);
        assert!(glob(long.as_bytes(), "a".repeat(200).as_bytes()));
        assert!(!glob(
            long.as_bytes(),
            format!("{}b", "a".repeat(200)).as_bytes()
        ));
        assert!(!glob(long.as_bytes(), "a".repeat(59).as_bytes()));
    }

    #[test]
    fn patterns_refuse_blanks_and_match_everything() {
        assert!(DialPattern::parse("").is_err());
        assert!(DialPattern::parse("*").is_err());
        assert!(DialPattern::parse("***").is_err());
        assert!(DialPattern::parse("+44 20*").is_err());
        assert!(DialPattern::parse("+4420*\n").is_err());
        assert!(DialPattern::parse(&"1".repeat(MAX_TARGET + 1)).is_err());
    }

    #[test]
    fn nothing_is_allowed_by_an_empty_list() {
        assert!(!allowed(&[], &target("+15551234567")));
        let list = [DialPattern::parse("+1555*").unwrap()];
        assert!(allowed(&list, &target("+15551234567")));
        assert!(!allowed(&list, &target("sip:+15551234567@192.0.2.1")));
    }

    #[test]
    fn numbers_are_an_optional_plus_then_digits_star_and_hash() {
        for good in ["+442071234567", "1000", "*69", "123#", "+1*2#3", "0"] {
            assert_eq!(
                DialTarget::parse(good),
                Ok(DialTarget::Number(good.into())),
                "{good}"
            );
        }
        assert!(!target("+15551234567").is_sip());
        let longest = "1".repeat(MAX_DIGITS);
        assert!(DialTarget::parse(&longest).is_ok());
        assert!(DialTarget::parse(&format!("+{longest}")).is_ok());
        for bad in [
            "+",
            "*",
            "#",
            "*#",
            "++1555",
            "1+555",
            "555-1234",
            "(555)1234",
            "bob",
            "tel:+15551234567",
            "TEL:+15551234567",
            "</Dial><Hangup/>",
            "+44<1>",
        ] {
            assert_eq!(
                DialTarget::parse(bad),
                Err(TargetError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            DialTarget::parse(&"1".repeat(MAX_DIGITS + 1)),
            Err(TargetError::Malformed)
        );
    }

    #[test]
    fn sip_uris_name_a_host_or_an_address() {
        for good in [
            "sip:bob@pbx.example.com",
            "sip:bob@127.0.0.1:5070",
            "sip:127.0.0.1",
            "sip:pbx.example.com",
            "SIPS:bob@pbx.example.com:5061",
            "sips:bob@[2001:db8::1]:5061",
            "sip:[::1]",
            "sip:+15551234567@trunk.example;user=phone",
            "sip:bob@10.0.0.1;transport=tcp",
            "sip:*69@pbx.example.com",
            "sip:bob:secret@pbx.example.com",
        ] {
            assert_eq!(
                DialTarget::parse(good),
                Ok(DialTarget::Uri(good.into())),
                "{good}"
            );
        }
        assert!(target("sip:bob@pbx.example.com").is_sip());
        for bad in [
            "sip:",
            "sips:",
            "sip:@host",
            "sip:bob@",
            "sip:bob@host>",
            "sip:\"x\"@host",
            "sip:'x'@host",
            "sip:bob@host:0",
            "sip:bob@host:65536",
            "sip:bob@host:50x",
            "sip:bob@[::1",
            "sip:bob@[::1]x",
            "sip:bob@[not-v6]",
            "sip:bob@-host",
            "sip:bob@a@b",
            "sip:bob@host;x=<y>",
        ] {
            assert_eq!(DialTarget::parse(bad), Err(TargetError::BadUri), "{bad:?}");
        }
    }

    #[test]
    fn spaces_control_bytes_and_length_are_refused_before_anything_else() {
        assert_eq!(DialTarget::parse(""), Err(TargetError::Empty));
        for bad in [
            " +15551234567",
            "+15551234567 ",
            "+1555 1234",
            "sip:bob@host\r\nVia: x",
            "sip:a b@c",
            "+1555\t1234",
            "+1555\u{0}1234",
            "sip:bob@host\u{7f}",
            "+1555\u{85}",
        ] {
            assert_eq!(DialTarget::parse(bad), Err(TargetError::Spaces), "{bad:?}");
        }
        assert_eq!(
            DialTarget::parse(&format!("sip:{}", "a".repeat(MAX_TARGET))),
            Err(TargetError::TooLong)
        );
        let longest = format!("sip:{}", "a".repeat(MAX_TARGET - 4));
        assert!(DialTarget::parse(&longest).is_ok());
    }
}
