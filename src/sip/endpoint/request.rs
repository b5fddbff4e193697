//! What the endpoint reads out of a request body, past the parser: the SDP offer of an INVITE
//! (RFC 3261 §13.3.1 and RFC 3264 §5, found in a multipart body per RFC 2046 §5.1) and the DTMF
//! digit of an INFO (RFC 6086 transport; application/dtmf-relay and application/dtmf bodies by
//! common practice). Pure functions of the request: no state, no transaction, no response;
//! `offer_of` names the status (§8.2.3: 415, or 400 with the SDP fault in its reason phrase)
//! that refuses a body it cannot use.

use super::ACCEPT;
use crate::sip::message::Request;
use crate::sip::sdp::SessionDescription;

/// Why an INVITE's body is refused: the status, and for a 400 the reason phrase naming the
/// fault in the SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BodyRefusal {
    pub(super) status: u16,
    pub(super) reason: Option<String>,
}

/// The SDP offer of an INVITE: `None` for a late offer (no body), or the refusal — 415 for a
/// body that holds no SDP, 400 for SDP that does not parse.
pub(super) fn offer_of(req: &Request) -> Result<Option<SessionDescription>, BodyRefusal> {
    if req.body.is_empty() {
        return Ok(None);
    }
    let body = sdp_body(req).ok_or(BodyRefusal {
        status: 415,
        reason: None,
    })?;
    SessionDescription::parse(body)
        .map(Some)
        .map_err(|err| BodyRefusal {
            status: 400,
            reason: Some(format!("Bad Request (SDP {err})")),
        })
}

/// The SDP of a request: the body itself, or the application/sdp part of a multipart body.
fn sdp_body(req: &Request) -> Option<&[u8]> {
    let media = req
        .headers
        .content_media_type()
        .unwrap_or_else(|| ACCEPT.to_string());
    if media == ACCEPT {
        return Some(&req.body);
    }
    if media.starts_with("multipart/") {
        let content_type = req.headers.content_type()?;
        let boundary = content_type.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })?;
        return multipart_sdp(&req.body, &boundary);
    }
    None
}

/// RFC 2046 §5.1: finds the application/sdp part of a multipart body.
fn multipart_sdp<'a>(body: &'a [u8], boundary: &str) -> Option<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    loop {
        let start = find(rest, delimiter.as_bytes())?;
        rest = rest.get(start + delimiter.len()..)?;
        if rest.starts_with(b"--") {
            return None;
        }
        let end = find(rest, delimiter.as_bytes()).unwrap_or(rest.len());
        let part = rest.get(..end)?;
        let header_end = find(part, b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| find(part, b"\n\n").map(|i| (i, 2)))?;
        let head = String::from_utf8_lossy(part.get(..header_end.0)?).to_ascii_lowercase();
        if head
            .lines()
            .any(|l| l.starts_with("content-type") && l.contains("application/sdp"))
        {
            let body = part.get(header_end.0 + header_end.1..)?;
            let body = body.strip_suffix(b"\r\n").unwrap_or(body);
            return Some(body);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// SIP INFO DTMF: `application/dtmf-relay` (`Signal=5`, `Duration=160`) or `application/dtmf`.
pub(super) fn dtmf_from_info(req: &Request) -> Option<(char, u32)> {
    let media = req.headers.content_media_type()?;
    let body = std::str::from_utf8(&req.body).ok()?;
    let digit_of = |s: &str| {
        let s = s.trim();
        match s {
            "10" => Some('*'),
            "11" => Some('#'),
            _ => s
                .chars()
                .next()
                .filter(|c| c.is_ascii_digit() || "*#ABCDabcd".contains(*c))
                .map(|c| c.to_ascii_uppercase()),
        }
    };
    match media.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = 160;
            for line in body.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = digit_of(v),
                    "duration" => duration = v.trim().parse().unwrap_or(160),
                    _ => {}
                }
            }
            digit.map(|d| (d, duration))
        }
        "application/dtmf" => digit_of(body).map(|d| (d, 160)),
        _ => None,
    }
}
