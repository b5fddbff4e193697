//! SIP and SIPS URIs (RFC 3261 §19.1, with the IPv6 references of RFC 5118) and the
//! name-addr / addr-spec forms of From, To, Contact and Route (RFC 3261 §20.10, §25.1).
//!
//! Other schemes (`tel:`, `http:`, `urn:`, the RFC 4475 `soap.beep:`...) are kept opaque: the
//! scheme plus everything after its colon in [`Uri::host`], so the endpoint can answer
//! 416 Unsupported URI Scheme instead of 400.

use std::fmt::{self, Write as _};

use super::{Fault, ParseError};

fn invalid(fault: Fault) -> ParseError {
    ParseError::Invalid(fault)
}

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// A non-empty RFC 3261 `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Reads a quoted-string at the start of `s` (which must begin with `"`): the unescaped content
/// and the rest after the closing quote. `None` when the quote is never closed.
pub(crate) fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let inner = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, inner.get(i + 1..)?)),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// Writes `s` as a quoted-string, escaping `"` and `\`; CR and LF (which no quoted-string can
/// carry) become spaces so a value can never inject a header line.
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            '\r' | '\n' => f.write_char(' ')?,
            c if c.is_ascii_control() && c != '\t' => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Whether `s` could be a bare (unquoted) parameter value or URI part: printable, no whitespace
/// and none of the delimiters that would end it.
fn is_plain(s: &str) -> bool {
    s.bytes()
        .all(|b| b > b' ' && b != 0x7f && !b"\"<>,;".contains(&b))
}

/// Parses header parameters (`;name[=value]` repeated, LWS allowed around `;` and `=`), as in
/// From/To/Contact/Via (RFC 3261 §25.1 `generic-param`). Values keep their quotes.
pub(crate) fn parse_params(s: &str) -> Option<Vec<(String, Option<String>)>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(Vec::new());
    }
    let rest = s.strip_prefix(';')?;
    let mut params = Vec::new();
    for segment in split_params(rest) {
        let segment = segment.trim();
        let (name, value) = match segment.split_once('=') {
            Some((name, value)) => (name.trim_end(), Some(value.trim_start())),
            None => (segment, None),
        };
        if !is_token(name) {
            return None;
        }
        let value = match value {
            None => None,
            Some(v) if v.starts_with('"') => {
                let (_, after) = parse_quoted(v)?;
                if !after.is_empty() {
                    return None;
                }
                Some(v.to_owned())
            }
            Some(v) if !v.is_empty() && is_plain(v) => Some(v.to_owned()),
            Some(_) => return None,
        };
        params.push((name.to_owned(), value));
    }
    Some(params)
}

/// Splits on `;` outside quoted strings.
fn split_params(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
        } else if c == '"' {
            in_quotes = true;
        } else if c == ';' {
            parts.push(s.get(start..i).unwrap_or(""));
            start = i + 1;
        }
    }
    parts.push(s.get(start..).unwrap_or(""));
    parts
}

/// Looks a parameter up case-insensitively.
pub(crate) fn find_param<'a>(
    params: &'a [(String, Option<String>)],
    name: &str,
) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Sets (replacing) or adds a parameter.
pub(crate) fn set_param(
    params: &mut Vec<(String, Option<String>)>,
    name: &str,
    value: Option<String>,
) {
    match params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(param) => param.1 = value,
        None => params.push((name.to_owned(), value)),
    }
}

pub(crate) fn write_params(
    f: &mut impl fmt::Write,
    params: &[(String, Option<String>)],
) -> fmt::Result {
    for (name, value) in params {
        write!(f, ";{name}")?;
        if let Some(value) = value {
            write!(f, "={value}")?;
        }
    }
    Ok(())
}

/// Writes a host, bracketing IPv6 references (RFC 3261 §19.1.1, RFC 5118).
pub(crate) fn write_host(f: &mut impl fmt::Write, host: &str) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]")
    } else {
        f.write_str(host)
    }
}

/// Parses `host[:port]` (RFC 3261 §25.1 `hostport`), LWS allowed around the colon as in Via's
/// `sent-by`. IPv6 references must be bracketed; the brackets are removed.
pub(crate) fn parse_hostport(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        // Hex digits, colons and dots: RFC 5118 §4.10 asks to tolerate the extra colon of
        // the RFC 3261 ABNF bug (`2001:db8:::192.0.2.1`), so no stricter IPv6 grammar here.
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let after = after.trim_start();
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.trim_start()),
            None if after.is_empty() => None,
            None => return None,
        };
        (addr, port)
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host.trim_end(), Some(port.trim_start())),
            None => (s, None),
        }
    };
    let is_name = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b':');
    if !is_name {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
    };
    Some((host.to_owned(), port))
}

/// Decodes `%HH` escapes (RFC 3261 §25.1 `escaped`). A `%` not followed by two hex digits is an
/// error; bytes that are not UTF-8 after decoding are replaced (U+FFFD).
fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let mut bytes = Vec::with_capacity(s.len());
    let mut iter = s.bytes();
    while let Some(b) = iter.next() {
        if b == b'%' {
            let hi = hex_value(iter.next()?)?;
            let lo = hex_value(iter.next()?)?;
            bytes.push(hi << 4 | lo);
        } else {
            bytes.push(b);
        }
    }
    Some(
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Writes `s`, %-escaping every byte outside `unreserved` and `extra`.
fn write_escaped(f: &mut impl fmt::Write, s: &str, extra: &[u8]) -> fmt::Result {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) || extra.contains(&b) {
            f.write_char(char::from(b))?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

/// RFC 3261 §25.1 `user-unreserved`.
const USER_UNRESERVED: &[u8] = b"&=+$,;?/";
/// RFC 3261 §25.1 `password` characters besides `unreserved`.
const PASSWORD_UNRESERVED: &[u8] = b"&=+$,";

/// A URI. `sip:` and `sips:` URIs are parsed into their parts; any other scheme is opaque:
/// `host` holds everything after `scheme:`, and the other parts are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lowercase: `"sip"`, `"sips"`, `"tel"`...
    pub scheme: String,
    /// The user part, %-unescaped (`sip:I%20have%20spaces@h` → `"I have spaces"`).
    pub user: Option<String>,
    /// The password part, %-unescaped (deprecated by RFC 3261 but valid syntax).
    pub password: Option<String>,
    /// Host name or address; IPv6 without brackets. For non-SIP schemes, the opaque part.
    pub host: String,
    pub port: Option<u16>,
    /// URI parameters in order, names and values as received (still escaped).
    pub params: Vec<(String, Option<String>)>,
    /// URI headers (`?name=value&...`) as received (still escaped). Never merged into the
    /// message's headers (RFC 4475 §3.1.2.11).
    pub headers: Vec<(String, String)>,
}

impl Uri {
    /// Parses a URI with no surrounding whitespace.
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        let (scheme, rest) = s.split_once(':').ok_or(invalid(Fault::Uri))?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
        if !scheme_ok {
            return Err(invalid(Fault::Uri));
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "sip" || scheme == "sips" {
            Self::parse_sip(scheme, rest).ok_or(invalid(Fault::Uri))
        } else if !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b > b' ' && b != 0x7f && !b"\"<>".contains(&b))
        {
            Ok(Uri {
                scheme,
                user: None,
                password: None,
                host: rest.to_owned(),
                port: None,
                params: Vec::new(),
                headers: Vec::new(),
            })
        } else {
            Err(invalid(Fault::Uri))
        }
    }

    fn parse_sip(scheme: String, rest: &str) -> Option<Uri> {
        if !rest
            .bytes()
            .all(|b| b > b' ' && b != 0x7f && !b"\"<>".contains(&b))
        {
            return None;
        }
        // `@` appears in no part after the userinfo (params and headers must escape it), while
        // the user part may hold `;` and `?` (RFC 4475 §3.1.1.9), so the first `@` ends it.
        let (userinfo, hostpart) = match rest.split_once('@') {
            Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(unescape(password)?)),
                    None => (info, None),
                };
                if user.is_empty() {
                    return None;
                }
                (Some(unescape(user)?), password)
            }
        };
        let (hostpart, headers) = match hostpart.split_once('?') {
            Some((hostpart, headers)) => (hostpart, Some(headers)),
            None => (hostpart, None),
        };
        let mut segments = hostpart.split(';');
        let (host, port) = parse_hostport(segments.next()?)?;
        if host.contains(':') && !hostpart.starts_with('[') {
            return None;
        }
        let mut params = Vec::new();
        for segment in segments {
            let (name, value) = match segment.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (segment, None),
            };
            if name.is_empty() {
                return None;
            }
            params.push((name.to_owned(), value));
        }
        let headers = match headers {
            None => Vec::new(),
            Some(h) => h
                .split('&')
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
                })
                .collect::<Option<Vec<_>>>()?,
        };
        Some(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// A `sip:` URI for `user@host[:port]` with no parameters.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: "sip".to_owned(),
            user: user.map(str::to_owned),
            password: None,
            host: host.to_owned(),
            port,
            params: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// A URI parameter, looked up case-insensitively: `Some(None)` when present without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Sets (replacing) or adds a URI parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    /// Whether the scheme is `sip` or `sips`.
    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if !self.is_sip() {
            return f.write_str(&self.host);
        }
        if let Some(user) = &self.user {
            write_escaped(f, user, USER_UNRESERVED)?;
            if let Some(password) = &self.password {
                f.write_char(':')?;
                write_escaped(f, password, PASSWORD_UNRESERVED)?;
            }
            f.write_char('@')?;
        }
        write_host(f, &self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)?;
        for (i, (name, value)) in self.headers.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{name}={value}")?;
        }
        Ok(())
    }
}

/// An address with optional display name and header parameters: the value of From, To,
/// Contact, Route, Record-Route, Refer-To... (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted and unescaped.
    pub display: Option<String>,
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `q`...), which belong to the header, not the URI.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// An address without display name or parameters.
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parses `"Display" <uri>;params`, `Display <uri>;params`, `<uri>;params` or the addr-spec
    /// form `uri;params`, where every `;` parameter belongs to the header (RFC 3261 §20.10).
    ///
    /// Liberal where RFC 4475 allows it: spaces inside `<...>` are ignored (§3.1.2.14), an
    /// unquoted display name may hold any character but `"` and `<` (§3.1.2.15), and an
    /// addr-spec may carry `?headers` (§3.1.2.13).
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        Self::parse_inner(s.trim()).ok_or(invalid(Fault::NameAddr))
    }

    fn parse_inner(s: &str) -> Option<NameAddr> {
        let (display, angle) = if s.starts_with('"') {
            let (display, rest) = parse_quoted(s)?;
            (Some(display), Some(rest.trim_start()))
        } else if let Some(lt) = s.find('<') {
            let display = s.get(..lt)?.trim();
            if display.contains('"') {
                return None;
            }
            (
                (!display.is_empty()).then(|| display.to_owned()),
                s.get(lt..),
            )
        } else {
            (None, None)
        };
        let (uri, params) = match angle {
            Some(angle) => {
                let inner = angle.strip_prefix('<')?;
                let (uri, rest) = inner.split_once('>')?;
                (Uri::parse(uri.trim()).ok()?, rest)
            }
            None => {
                let (uri, rest) = match s.find(';') {
                    Some(semi) => (s.get(..semi)?, s.get(semi..)?),
                    None => (s, ""),
                };
                (Uri::parse(uri.trim_end()).ok()?, rest)
            }
        };
        Some(NameAddr {
            display,
            uri,
            params: parse_params(params)?,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    /// This address with its `tag` parameter set to `tag`.
    pub fn with_tag(mut self, tag: &str) -> NameAddr {
        set_param(&mut self.params, "tag", Some(tag.to_owned()));
        self
    }

    /// A header parameter, looked up case-insensitively: `Some(None)` when present without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = &self.display {
            write_quoted(f, display)?;
            f.write_char(' ')?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts_are_split_and_user_unescaped() {
        let uri = Uri::parse(
            "SIP:I%20have%20spaces:p%40ss@Example.net:5070;transport=tcp;lr?Subject=hi&X=1",
        )
        .unwrap();
        assert_eq!(uri.scheme, "sip");
        assert_eq!(uri.user.as_deref(), Some("I have spaces"));
        assert_eq!(uri.password.as_deref(), Some("p@ss"));
        assert_eq!(uri.host, "Example.net");
        assert_eq!(uri.port, Some(5070));
        assert_eq!(uri.param("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(uri.param("lr"), Some(None));
        assert_eq!(uri.param("maddr"), None);
        assert_eq!(
            uri.headers,
            vec![("Subject".into(), "hi".into()), ("X".into(), "1".into())]
        );
        assert_eq!(
            uri.to_string(),
            "sip:I%20have%20spaces:p%40ss@Example.net:5070;transport=tcp;lr?Subject=hi&X=1"
        );
    }

    #[test]
    fn user_part_may_contain_semicolons_and_escaped_at() {
        let uri = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(uri.user.as_deref(), Some("user;par=u@example.net"));
        assert_eq!(uri.host, "example.com");
        assert!(uri.params.is_empty());
        assert_eq!(Uri::parse(&uri.to_string()).unwrap(), uri);
    }

    #[test]
    fn ipv6_references_need_brackets_and_lose_them() {
        let uri = Uri::parse("sip:[2001:db8::10]:5070").unwrap();
        assert_eq!(uri.host, "2001:db8::10");
        assert_eq!(uri.port, Some(5070));
        assert_eq!(uri.to_string(), "sip:[2001:db8::10]:5070");
        let uri = Uri::parse("sip:[2001:db8::10:5070]").unwrap();
        assert_eq!((uri.host.as_str(), uri.port), ("2001:db8::10:5070", None));
        assert!(Uri::parse("sip:2001:db8::10").is_err());
        assert!(Uri::parse("sip:user@[2001:db8:::192.0.2.1]").is_ok());
    }

    #[test]
    fn other_schemes_stay_opaque() {
        let uri = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(uri.scheme, "soap.beep");
        assert_eq!(uri.host, "//192.0.2.103:3002");
        assert!(!uri.is_sip());
        assert_eq!(uri.to_string(), "soap.beep://192.0.2.103:3002");
        assert!(Uri::parse("tel:+1-201-555-0123").is_ok());
    }

    #[test]
    fn malformed_uris_are_rejected() {
        for bad in [
            "",
            "sip",
            "<sip:a@b>",
            "sip:a@b c",
            "sip:@host",
            "sip:a@",
            "sip:a@host:",
            "sip:a@host:99999",
            "sip:a@host:5060x",
            "sip:%zz@host",
            "sip:host;;lr",
            "1sip:host",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn name_addr_forms_are_equivalent() {
        let quoted =
            NameAddr::parse("\"J Rosenberg \\\\\\\"\"  <sip:jdrosen@example.com> ; tag = 98asjd8")
                .unwrap();
        assert_eq!(quoted.display.as_deref(), Some("J Rosenberg \\\""));
        assert_eq!(quoted.tag(), Some("98asjd8"));
        let token = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(token.display.as_deref(), Some("caller"));
        let spec = NameAddr::parse("sip:watson@example.com;unknownparam").unwrap();
        assert_eq!(spec.uri.params, vec![]);
        assert_eq!(spec.param("unknownparam"), Some(None));
        let angle = NameAddr::parse("<sip:watson@example.com;unknownparam>").unwrap();
        assert_eq!(angle.uri.param("unknownparam"), Some(None));
        assert!(angle.params.is_empty());
    }

    #[test]
    fn name_addr_display_round_trips_through_quoting() {
        let addr = NameAddr::parse("\"a \\\"b\\\" \\\\ c\" <sip:x@y>;tag=1")
            .unwrap()
            .with_tag("2");
        assert_eq!(addr.to_string(), "\"a \\\"b\\\" \\\\ c\" <sip:x@y>;tag=2");
        assert_eq!(NameAddr::parse(&addr.to_string()).unwrap(), addr);
    }

    #[test]
    fn name_addr_display_cannot_inject_a_line_break() {
        let mut addr = NameAddr::new(Uri::sip(Some("a"), "b", None));
        addr.display = Some("x\r\nVia: evil".to_owned());
        assert!(!addr.to_string().contains('\n'));
    }

    #[test]
    fn malformed_name_addrs_are_rejected() {
        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b",
            "<sip:a@b>;tag",
            "<sip:a@b> junk",
            "<sip:a@b>;tag=",
        ] {
            let parsed = NameAddr::parse(bad);
            if bad == "<sip:a@b>;tag" {
                assert!(parsed.is_ok(), "a valueless parameter is valid");
            } else {
                assert!(parsed.is_err(), "{bad:?} should not parse");
            }
        }
    }
}
