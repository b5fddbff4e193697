//! From bytes to a [`Message`] (RFC 3261 §7, §7.3.1 folding, §7.4.1 Content-Length, §7.5
//! framing, §8.2.2 request checks, §18.3): start line, header section, body.
//!
//! Everything a later layer relies on is checked here, once: the start line, the header lines,
//! Content-Length, and for requests the presence and syntax of Via, From, To, Call-ID and CSeq,
//! that single-value headers appear once, and that the CSeq method matches the request method.
//!
//! Hostile-input rules (each a 400 for a request, a silent drop for a response):
//! - §25.1: no control character but HTAB in the start line or a header field (the ABNF has
//!   none outside quoted-pair; an escaped control in a quoted string is refused too, as no
//!   real peer sends one), no CR that is not followed by LF;
//! - one line-end style per header section: all CRLF, or (tolerated) all bare LF. A mix is how
//!   a header is smuggled past a parser that only splits on CRLF;
//! - §8.1.1.8 / §12.1.1: an INVITE carries at most one Contact, a SIP or SIPS URI, and a
//!   dialog-creating INVITE carries exactly one. RFC 2543 peers (a top Via without the
//!   `z9hG4bK` cookie, RFC 3261 §8.1.1.7) may omit it (RFC 4475 §3.4.1 inv2543). `Contact: *`
//!   belongs to REGISTER only (§10.2.2);
//! - §18.3 / §20.14: over a stream, Content-Length is mandatory ([`parse_stream`]).

use std::borrow::Cow;

use super::framing::header_end;
use super::headers::{parse_decimal, split_list};
use super::uri::is_token;
use super::{
    CSeq, Fault, Headers, Message, Method, NameAddr, ParseError, Request, Response, Uri, Via,
};

/// At most this many header fields (after unfolding); RFC 4475 longreq.dat has 43.
pub(crate) const MAX_HEADERS: usize = 256;
/// At most this many bytes in one unfolded header field; longreq.dat's longest is 594.
pub(crate) const MAX_LINE: usize = 8192;

/// Headers that must appear at most once, with one value (RFC 3261 §7.3.1, §20).
const SINGLE_VALUE: [&str; 5] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards"];

/// How the message arrived, which decides what a missing Content-Length means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Carrier {
    /// One UDP datagram: without Content-Length the body is the rest of it (§18.3).
    Datagram,
    /// One frame of a TCP or TLS stream: Content-Length must be present (§20.14).
    Stream,
}

pub(super) fn parse(bytes: &[u8], carrier: Carrier) -> Result<Message, ParseError> {
    // §7.5: CRLFs before the start line are ignored.
    let skipped = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let message = bytes.get(skipped..).unwrap_or_default();
    if message.is_empty() {
        return Err(ParseError::Invalid(Fault::Empty));
    }
    let (head, body_start, terminated) = match header_end(message) {
        Some(end) => (message.get(..end).unwrap_or_default(), end, true),
        None => (message, message.len(), false),
    };
    // Header fields are UTF-8 text (§25 TEXT-UTF8); invalid bytes become U+FFFD. Borrowed, no copy,
    // when the section is valid.
    let byte_fault = check_head_bytes(head);
    let head = match std::str::from_utf8(head) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(head),
    };
    let mut lines = head
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let start_line = lines.next().unwrap_or_default();
    let (headers, header_fault) = read_headers(lines);
    let header_fault = byte_fault.or(header_fault);
    let available = message.get(body_start..).unwrap_or_default();
    let body = frame_body(&headers, available, terminated, carrier);

    // Trailing whitespace on the start line is tolerated (RFC 4475 §3.1.2.10).
    let start_line = start_line.trim_end_matches([' ', '\t']);
    let first = start_line.split(' ').next().unwrap_or_default();
    let is_response = first
        .get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("SIP/"));
    if is_response {
        let (status, reason) = parse_status_line(start_line).map_err(ParseError::Invalid)?;
        let body = body.map_err(ParseError::Invalid)?;
        if let Some(fault) = header_fault {
            return Err(ParseError::Invalid(fault));
        }
        check_response(&headers).map_err(ParseError::Invalid)?;
        return Ok(Message::Response(Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: body.to_vec(),
        }));
    }

    let bad = |fault| ParseError::BadRequest {
        fault,
        headers: headers.clone(),
    };
    let mut parts = start_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(Fault::StartLine));
    };
    if !is_sip_version(version) {
        return Err(bad(Fault::Version));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::VersionNotSupported {
            version: version.to_owned(),
            headers,
        });
    }
    if !is_token(method) {
        return Err(bad(Fault::Method));
    }
    let method = Method::from_token(method);
    let uri = Uri::parse(uri).map_err(|_| bad(Fault::RequestUri))?;
    let body = body.map_err(bad)?;
    if let Some(fault) = header_fault {
        return Err(bad(fault));
    }
    check_request(&method, &headers).map_err(bad)?;
    check_contact(&method, &headers).map_err(bad)?;
    let body = body.to_vec();
    Ok(Message::Request(Request {
        method,
        uri,
        headers,
        body,
    }))
}

/// §25.1: the raw header section (start line included) holds no control character but HTAB
/// and line ends, except escaped in a quoted string (a quoted-pair may escape any octet but CR
/// and LF: RFC 4475 §3.1.1.2 intmeth has `"BEL:\<BEL> NUL:\<NUL>"`); every CR ends a line;
/// all lines end the same way.
fn check_head_bytes(head: &[u8]) -> Option<Fault> {
    let mut crlf = false;
    let mut bare_lf = false;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in head.iter().enumerate() {
        let next = head.get(i + 1).copied();
        match b {
            b'\r' if next != Some(b'\n') => return Some(Fault::BareCr),
            b'\r' => continue,
            b'\n' => {
                if i > 0 && head.get(i - 1) == Some(&b'\r') {
                    crlf = true;
                } else {
                    bare_lf = true;
                }
                // A quoted string may be folded, but never spans two header fields.
                if !matches!(next, Some(b' ' | b'\t')) {
                    in_quotes = false;
                }
                escaped = false;
                continue;
            }
            _ => {}
        }
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'\t' => {}
            0..=0x1f | 0x7f => return Some(Fault::ControlCharacter),
            _ => {}
        }
    }
    (crlf && bare_lf).then_some(Fault::MixedLineEnds)
}

/// Reads header lines up to the empty line, unfolding continuation lines (§7.3.1). Bad lines
/// are skipped and the first fault is reported, so a 400 can still copy Via, From, To...
fn read_headers<'a>(lines: impl Iterator<Item = &'a str>) -> (Headers, Option<Fault>) {
    let mut headers = Headers::new();
    let mut fault = None;
    let mut current: Option<(&str, Cow<'a, str>)> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            match current.as_mut() {
                Some((_, value)) => {
                    let more = line.trim_ascii();
                    if !more.is_empty() {
                        let value = value.to_mut();
                        if !value.is_empty() {
                            value.push(' ');
                        }
                        value.push_str(more);
                    }
                }
                None => {
                    fault.get_or_insert(Fault::HeaderLine);
                }
            }
            continue;
        }
        if let Some((name, value)) = current.take()
            && let Err(f) = store(&mut headers, name, value)
        {
            fault.get_or_insert(f);
            if f == Fault::TooManyHeaders {
                return (headers, fault);
            }
        }
        let Some((name, value)) = line.split_once(':') else {
            fault.get_or_insert(Fault::HeaderLine);
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            fault.get_or_insert(Fault::HeaderName);
            continue;
        }
        current = Some((name, Cow::Borrowed(value.trim_ascii())));
    }
    if let Some((name, value)) = current.take()
        && let Err(f) = store(&mut headers, name, value)
    {
        fault.get_or_insert(f);
    }
    (headers, fault)
}

fn store(headers: &mut Headers, name: &str, value: Cow<'_, str>) -> Result<(), Fault> {
    if headers.len() >= MAX_HEADERS {
        return Err(Fault::TooManyHeaders);
    }
    if name.len() + value.len() > MAX_LINE {
        return Err(Fault::LineTooLong);
    }
    headers.push(name, value.into_owned());
    Ok(())
}

/// The body: exactly Content-Length bytes, or the rest of the datagram when it is absent.
fn frame_body<'a>(
    headers: &Headers,
    available: &'a [u8],
    terminated: bool,
    carrier: Carrier,
) -> Result<&'a [u8], Fault> {
    let Some(length) = content_length(headers)? else {
        return match carrier {
            Carrier::Datagram => Ok(available),
            Carrier::Stream => Err(Fault::MissingContentLength),
        };
    };
    if length > 0 && !terminated {
        return Err(Fault::TruncatedBody);
    }
    available.get(..length).ok_or(Fault::TruncatedBody)
}

/// The one Content-Length of a header section, `None` when there is none.
fn content_length(headers: &Headers) -> Result<Option<usize>, Fault> {
    let mut lengths = headers.get_all("content-length");
    let Some(length) = lengths.next() else {
        return Ok(None);
    };
    if lengths.next().is_some() {
        return Err(Fault::MultipleContentLength);
    }
    let length = parse_decimal(length).ok_or(Fault::ContentLength)?;
    usize::try_from(length)
        .map(Some)
        .map_err(|_| Fault::ContentLength)
}

/// The body length a stream framer must wait for after the header section `head` (start line
/// and header lines, as far as the empty line), read with the same unfolding and the same
/// rules as [`parse`], so the framer and the parser never disagree about where a message
/// ends. An error means the stream cannot be framed any further.
pub(super) fn stream_body_length(head: &[u8]) -> Result<usize, Fault> {
    let head = String::from_utf8_lossy(head);
    let lines = head
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .skip(1);
    let (headers, _) = read_headers(lines);
    content_length(&headers)?.ok_or(Fault::MissingContentLength)
}

/// `SIP/` 1*DIGIT `.` 1*DIGIT (RFC 3261 §25.1 `SIP-Version`, "SIP" case-insensitive).
fn is_sip_version(version: &str) -> bool {
    let Some(number) = version
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and_then(|_| version.get(4..))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    number
        .split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

/// `SIP/2.0 SP Status-Code SP Reason-Phrase` (the reason may be empty, the last SP missing).
fn parse_status_line(line: &str) -> Result<(u16, &str), Fault> {
    let (version, rest) = line.split_once(' ').ok_or(Fault::StartLine)?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(Fault::Version);
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Fault::StatusCode);
    }
    let status: u16 = code.parse().map_err(|_| Fault::StatusCode)?;
    if !(100..=699).contains(&status) {
        return Err(Fault::StatusCode);
    }
    Ok((status, reason))
}

/// What the transaction layer needs of a response: a top Via and a CSeq that parse.
fn check_response(headers: &Headers) -> Result<(), Fault> {
    let vias = headers.values("via");
    let top = vias.first().ok_or(Fault::MissingHeader("Via"))?;
    Via::parse(top).map_err(|_| Fault::BadHeader("Via"))?;
    let cseq = headers.get("cseq").ok_or(Fault::MissingHeader("CSeq"))?;
    CSeq::parse(cseq).map_err(|_| Fault::BadHeader("CSeq"))?;
    for name in ["From", "To", "Call-ID"] {
        if !headers.contains(name) {
            return Err(Fault::MissingHeader(name));
        }
    }
    Ok(())
}

/// RFC 3261 §8.1.1 mandatory headers, §7.3.1 single values, §8.2.2 syntax, RFC 4475 §3.1.2.17.
fn check_request(method: &Method, headers: &Headers) -> Result<(), Fault> {
    let vias = headers.values("via");
    if vias.is_empty() {
        return Err(Fault::MissingHeader("Via"));
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if !headers.contains(name) {
            return Err(Fault::MissingHeader(name));
        }
    }
    for name in SINGLE_VALUE {
        if headers.count(name) > 1 {
            return Err(Fault::MultipleValues(name));
        }
    }
    for via in vias {
        Via::parse(via).map_err(|_| Fault::BadHeader("Via"))?;
    }
    for name in ["From", "To"] {
        let value = headers.get(name).unwrap_or_default();
        NameAddr::parse(value).map_err(|_| Fault::BadHeader(name))?;
    }
    let call_id = headers.call_id().unwrap_or_default();
    if split_list(call_id).len() > 1 {
        return Err(Fault::MultipleValues("Call-ID"));
    }
    if call_id.is_empty() || call_id.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(Fault::BadHeader("Call-ID"));
    }
    let cseq = CSeq::parse(headers.get("cseq").unwrap_or_default())
        .map_err(|_| Fault::BadHeader("CSeq"))?;
    if let Some(max_forwards) = headers.get("max-forwards") {
        parse_decimal(max_forwards).ok_or(Fault::BadHeader("Max-Forwards"))?;
    }
    for contact in headers.values("contact") {
        if contact != "*" {
            NameAddr::parse(contact).map_err(|_| Fault::BadHeader("Contact"))?;
        }
    }
    // An unknown method with another CSeq method is left to the endpoint's 501 (RFC 4475 §3.1.2.18).
    if !matches!(method, Method::Other(_)) && cseq.method != *method {
        return Err(Fault::CSeqMismatch);
    }
    Ok(())
}

/// §8.1.1.8, §12.1.1, §10.2.2: the Contact rules (see the module doc).
fn check_contact(method: &Method, headers: &Headers) -> Result<(), Fault> {
    let contacts = headers.values("contact");
    if *method != Method::Register && contacts.contains(&"*") {
        return Err(Fault::WildcardContact);
    }
    if *method != Method::Invite {
        return Ok(());
    }
    match contacts.as_slice() {
        [] => {
            let in_dialog = headers.to().is_some_and(|to| to.tag().is_some());
            let rfc3261 = headers
                .via()
                .and_then(|via| via.branch().map(|b| b.starts_with("z9hG4bK")))
                .unwrap_or(false);
            if rfc3261 && !in_dialog {
                return Err(Fault::MissingHeader("Contact"));
            }
            Ok(())
        }
        [contact] => {
            let addr = NameAddr::parse(contact).map_err(|_| Fault::BadHeader("Contact"))?;
            if addr.uri.is_sip() {
                Ok(())
            } else {
                Err(Fault::ContactScheme)
            }
        }
        _ => Err(Fault::MultipleValues("Contact")),
    }
}
