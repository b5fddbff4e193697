//! The wire pieces of call transfer, parsed once at the edge: RFC 3515 Refer-To (exactly one,
//! §2.4.1) with an RFC 3891 Replaces in its URI headers or on the REFER, the Event and
//! Subscription-State of the implicit subscription's NOTIFYs (RFC 3515 §2.4.4–§2.4.5, RFC
//! 6665 §8.2.3), and the RFC 3420 `message/sipfrag` status line they carry. Pure functions: no
//! state, no response.

use super::message::{Headers, NameAddr, Uri};

/// The event package of REFER's implicit subscription (RFC 3515 §2.4.4).
pub const EVENT_REFER: &str = "refer";
/// The Content-Type of the NOTIFY bodies (RFC 3420 §2, version 2.0 for a status line only).
pub const SIPFRAG: &str = "message/sipfrag;version=2.0";

/// Why a REFER's Refer-To (or Replaces) is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReferToError {
    #[error("Missing Refer-To")]
    Missing,
    #[error("Several Refer-To")]
    Several,
    #[error("Bad Refer-To URI")]
    BadUri,
    #[error("Bad Replaces")]
    BadReplaces,
}

/// RFC 3891 §6.1: `callid ;to-tag=.. ;from-tag=.. [;early-only]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    pub to_tag: String,
    pub from_tag: String,
    pub early_only: bool,
}

impl Replaces {
    /// Parses a Replaces value; both tags are required, the Call-ID must be a non-empty word.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(';');
        let call_id = parts.next()?.trim();
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"\"<>;,".contains(&b))
        };
        if !word(call_id) {
            return None;
        }
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for param in parts {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (param.trim(), None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("to-tag", Some(v)) if word(v) => to_tag = Some(v.to_string()),
                ("from-tag", Some(v)) if word(v) => from_tag = Some(v.to_string()),
                ("early-only", None) => early_only = true,
                ("to-tag" | "from-tag" | "early-only", _) => return None,
                _ => {}
            }
        }
        Some(Self {
            call_id: call_id.to_string(),
            to_tag: to_tag?,
            from_tag: from_tag?,
            early_only,
        })
    }
}

/// A REFER's target: the Refer-To URI (its `?Replaces=` still in it, for whoever dials) and
/// the Replaces it carries, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo {
    pub target: Uri,
    pub replaces: Option<Replaces>,
}

/// RFC 3515 §2.4.1: the one Refer-To of a REFER (long form or compact `r`), naming a SIP, SIPS
/// or tel URI, and any Replaces (RFC 3891 §3: as a URI header of the target, or a header of the
/// REFER itself) well formed.
pub fn refer_to(headers: &Headers) -> Result<ReferTo, ReferToError> {
    let values = headers.values("refer-to");
    let value = match values.as_slice() {
        [] => return Err(ReferToError::Missing),
        [one] => *one,
        _ => return Err(ReferToError::Several),
    };
    let target = NameAddr::parse(value)
        .map_err(|_| ReferToError::BadUri)?
        .uri;
    if !(target.is_sip() || target.scheme == "tel") {
        return Err(ReferToError::BadUri);
    }
    let embedded = target
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("replaces"))
        .map(|(_, value)| unescape(value).ok_or(ReferToError::BadReplaces))
        .transpose()?;
    let on_refer = headers.get("replaces").map(str::to_string);
    let replaces = match embedded.or(on_refer) {
        Some(value) => Some(Replaces::parse(&value).ok_or(ReferToError::BadReplaces)?),
        None => None,
    };
    Ok(ReferTo { target, replaces })
}

/// `%XX` escapes of a URI header value (RFC 3261 §19.1.1), undone; `None` for a broken escape
/// or bytes that are not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// The Event header (long form or compact `o`): its package, lowercase, and `id` parameter.
pub fn event_of(headers: &Headers) -> Option<(String, Option<String>)> {
    let value = headers.get("event")?;
    let mut parts = value.split(';');
    let package = parts.next()?.trim().to_ascii_lowercase();
    if package.is_empty() {
        return None;
    }
    let id = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("id")
            .then(|| value.trim().to_string())
    });
    Some((package, id))
}

/// RFC 6665 §8.2.3: whether Subscription-State says the subscription is over.
pub fn subscription_terminated(headers: &Headers) -> bool {
    headers
        .get("subscription-state")
        .and_then(|v| v.split(';').next())
        .is_some_and(|state| state.trim().eq_ignore_ascii_case("terminated"))
}

/// RFC 3420: the status code of a `message/sipfrag` body's status line (`SIP/2.0 200 OK`), the
/// only part RFC 3515 §2.4.5 requires; `None` when the body holds no valid status line.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim_end();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if rest.len() > 3 && !rest.get(3..)?.starts_with(' ') {
        return None;
    }
    code.parse().ok().filter(|c| (100..700).contains(c))
}

/// A sipfrag body stating `status` (RFC 3420 §2, RFC 3515 §2.4.5).
pub fn sipfrag_body(status: u16, reason: &str) -> String {
    format!("SIP/2.0 {status} {reason}\r\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> Headers {
        Headers::from_lines(lines)
    }

    #[test]
    fn refer_to_needs_exactly_one_usable_uri() {
        let one = refer_to(&headers(&[("Refer-To", "<sip:3000@pbx.example.com>")])).unwrap();
        assert_eq!(one.target.user.as_deref(), Some("3000"));
        assert_eq!(one.replaces, None);
        let compact = refer_to(&headers(&[("r", "sip:3000@10.0.0.1")])).unwrap();
        assert_eq!(compact.target.host, "10.0.0.1");
        assert_eq!(refer_to(&Headers::new()), Err(ReferToError::Missing));
        assert_eq!(
            refer_to(&headers(&[("Refer-To", "<sip:a@b>, <sip:c@d>")])),
            Err(ReferToError::Several)
        );
        assert_eq!(
            refer_to(&headers(&[("Refer-To", "<sip:a@b>"), ("r", "<sip:c@d>")])),
            Err(ReferToError::Several)
        );
        for bad in [
            "<sip:@>",
            "<not a uri>",
            "<http://evil.example/>",
            "<sip:a@b",
        ] {
            assert_eq!(
                refer_to(&headers(&[("Refer-To", bad)])),
                Err(ReferToError::BadUri),
                "{bad}"
            );
        }
    }

    #[test]
    fn replaces_is_parsed_from_the_uri_or_the_header_and_refused_when_broken() {
        let embedded = refer_to(&headers(&[(
            "Refer-To",
            "<sip:3000@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        )]))
        .unwrap();
        assert_eq!(
            embedded.replaces,
            Some(Replaces {
                call_id: "abc@host".into(),
                to_tag: "1".into(),
                from_tag: "2".into(),
                early_only: false
            })
        );
        for bad in [
            "<sip:3000@pbx?Replaces=abc%3Bto-tag%3D1>",
            "<sip:3000@pbx?Replaces=%ZZ>",
            "<sip:3000@pbx?Replaces=%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        ] {
            assert_eq!(
                refer_to(&headers(&[("Refer-To", bad)])),
                Err(ReferToError::BadReplaces),
                "{bad}"
            );
        }
        assert_eq!(
            refer_to(&headers(&[
                ("Refer-To", "<sip:3000@pbx>"),
                ("Replaces", "abc;from-tag=2")
            ])),
            Err(ReferToError::BadReplaces)
        );
        let early = Replaces::parse("x;to-tag=1;from-tag=2;early-only").unwrap();
        assert!(early.early_only);
    }

    #[test]
    fn sipfrag_status_lines_parse_and_junk_does_not() {
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying\r\n"), Some(100));
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"),
            Some(486)
        );
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK",
            b"SIP/2.0 2000 OK",
            b"SIP/2.0 099 Low",
            b"SIP/2.0 abc",
            b"\xff\xfe",
        ] {
            assert_eq!(sipfrag_status(bad), None, "{bad:?}");
        }
        assert_eq!(
            sipfrag_status(sipfrag_body(503, "Service Unavailable").as_bytes()),
            Some(503)
        );
    }

    #[test]
    fn event_and_subscription_state_are_read() {
        let h = headers(&[
            ("o", "Refer;id=7"),
            ("Subscription-State", "terminated;reason=noresource"),
        ]);
        assert_eq!(event_of(&h), Some(("refer".into(), Some("7".into()))));
        assert!(subscription_terminated(&h));
        assert!(!subscription_terminated(&headers(&[(
            "Subscription-State",
            "active;expires=60"
        )])));
        assert_eq!(event_of(&headers(&[("Event", " ")])), None);
    }
}
