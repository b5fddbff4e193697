//! The TwiML documents our webhooks answer with: connect the call to our media stream, or the
//! fallback when we cannot take it. Every value is XML-escaped.
//!
//! Implements Twilio "TwiML `<Connect>`/`<Stream>`" (bidirectional stream, custom
//! `<Parameter>`s, the `action` URL fetched when the stream ends), `<Say>`, `<Dial>` (a number,
//! or `<Sip>`), `<Reject>` and `<Hangup>`; and reads the one document agents may send through
//! the call REST ([`parse_dial`]).

use std::fmt::Write as _;

const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// `<Connect action=".."><Stream url=".."><Parameter name=".." value=".."/>…</Stream></Connect>`:
/// Twilio opens a WebSocket to `stream_url` and, when the stream ends, fetches `action_url`.
pub fn connect_stream(action_url: &str, stream_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(HEADER);
    let _ = write!(
        out,
        r#"<Response><Connect action="{}"><Stream url="{}">"#,
        escape(action_url),
        escape(stream_url)
    );
    for (name, value) in parameters {
        let _ = write!(
            out,
            r#"<Parameter name="{}" value="{}"/>"#,
            escape(name),
            escape(value)
        );
    }
    out.push_str("</Stream></Connect></Response>");
    out
}

/// What Twilio does with a call we cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback<'a> {
    /// The caller hears busy. A rejected call is never answered, so nothing can be said first:
    /// with `say`, the call is answered, `say` is spoken and the call hung up instead.
    Reject { say: Option<&'a str> },
    /// `say` (if any), then the call is forwarded to `number`.
    Dial {
        say: Option<&'a str>,
        number: &'a str,
    },
}

/// The fallback document.
pub fn fallback(fallback: Fallback<'_>) -> String {
    let mut out = String::with_capacity(160);
    out.push_str(HEADER);
    out.push_str("<Response>");
    let say = match fallback {
        Fallback::Reject { say } | Fallback::Dial { say, .. } => say,
    };
    if let Some(text) = say {
        let _ = write!(out, "<Say>{}</Say>", escape(text));
    }
    match fallback {
        Fallback::Reject { say: None } => out.push_str(r#"<Reject reason="busy"/>"#),
        Fallback::Reject { say: Some(_) } => out.push_str("<Hangup/>"),
        Fallback::Dial { number, .. } => dial_element(&mut out, number),
    }
    out.push_str("</Response>");
    out
}

/// Hands the call to `to` — a number, or a `sip:`/`sips:` URI (`<Dial><Sip>`): the answer to
/// the `action` callback of a stream closed to transfer its call.
pub fn dial(to: &str) -> String {
    let mut out = String::with_capacity(128);
    out.push_str(HEADER);
    out.push_str("<Response>");
    dial_element(&mut out, to);
    out.push_str("</Response>");
    out
}

fn dial_element(out: &mut String, to: &str) {
    if is_sip_uri(to) {
        let _ = write!(out, "<Dial><Sip>{}</Sip></Dial>", escape(to));
    } else {
        let _ = write!(out, "<Dial>{}</Dial>", escape(to));
    }
}

fn is_sip_uri(s: &str) -> bool {
    let scheme = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    scheme("sip:") || scheme("sips:")
}

/// Why a document is not the one `<Dial>` [`parse_dial`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("expected {0}")]
    Expected(&'static str),
    #[error("an entity other than &amp; &lt; &gt; &quot; &apos;")]
    Entity,
    #[error("<Dial> names no destination")]
    Empty,
    #[error("<Sip> needs a sip: URI, and a number is not one")]
    Scheme,
}

/// Reads `<Response><Dial>NUMBER</Dial></Response>` (or `<Dial><Number>…</Number></Dial>`,
/// `<Dial><Sip>sip:…</Sip></Dial>`), with an optional XML declaration and whitespace between
/// elements: the destination, unescaped. Anything else — attributes, other verbs, a second
/// `<Dial>` — is refused: earshot does not run TwiML, it only hands the call over.
pub fn parse_dial(doc: &str) -> Result<String, DialError> {
    let mut rest = doc.trim_start();
    if let Some(decl) = rest.strip_prefix("<?xml") {
        let end = decl.find("?>").ok_or(DialError::Expected("?>"))?;
        rest = decl.get(end + 2..).unwrap_or_default();
    }
    rest = tag(rest, "<Response>")?;
    rest = tag(rest, "<Dial>")?;
    let (to, sip, mut rest) = if let Some(inner) = rest.trim_start().strip_prefix("<Number>") {
        let (text, after) = text_until(inner, "</Number>")?;
        (text, false, after)
    } else if let Some(inner) = rest.trim_start().strip_prefix("<Sip>") {
        let (text, after) = text_until(inner, "</Sip>")?;
        (text, true, after)
    } else {
        let (text, after) = text_until(rest, "")?;
        (text, false, after)
    };
    rest = tag(rest, "</Dial>")?;
    rest = tag(rest, "</Response>")?;
    if !rest.trim().is_empty() {
        return Err(DialError::Expected("nothing after </Response>"));
    }
    if to.is_empty() {
        return Err(DialError::Empty);
    }
    if sip != is_sip_uri(&to) {
        return Err(DialError::Scheme);
    }
    Ok(to)
}

/// `rest` after `expected`, whitespace before it skipped.
fn tag<'a>(rest: &'a str, expected: &'static str) -> Result<&'a str, DialError> {
    rest.trim_start()
        .strip_prefix(expected)
        .ok_or(DialError::Expected(expected))
}

/// The text up to the next `<` (unescaped, trimmed), and what follows `close` there (`close`
/// empty: the rest from that `<`).
fn text_until<'a>(rest: &'a str, close: &'static str) -> Result<(String, &'a str), DialError> {
    let end = rest.find('<').unwrap_or(rest.len());
    let raw = rest.get(..end).unwrap_or_default();
    let after = rest.get(end..).unwrap_or_default();
    let after = if close.is_empty() {
        after
    } else {
        after
            .strip_prefix(close)
            .ok_or(DialError::Expected(close))?
    };
    Ok((unescape(raw.trim())?, after))
}

fn unescape(s: &str) -> Result<String, DialError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(rest.get(..at).unwrap_or_default());
        let entity = rest.get(at..).unwrap_or_default();
        let end = entity.find(';').ok_or(DialError::Entity)?;
        out.push(match entity.get(..=end).unwrap_or_default() {
            "&amp;" => '&',
            "&lt;" => '<',
            "&gt;" => '>',
            "&quot;" => '"',
            "&apos;" => '\'',
            _ => return Err(DialError::Entity),
        });
        rest = entity.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// Ends the call: the answer to the `action` callback of a stream that ran and ended normally.
pub fn hangup() -> String {
    format!("{HEADER}<Response><Hangup/></Response>")
}

/// XML-escapes text for an element or a double- or single-quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no escape for other control characters: they are dropped.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_stream_carries_the_action_url_and_escaped_parameters() {
        let xml = connect_stream(
            "https://box.example.com/twilio/voice?fallback=1&x=<y>",
            "wss://box.example.com/twilio/stream",
            &[("token", "a\"b'c&d")],
        );
        assert_eq!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#,
                r#"<Connect action="https://box.example.com/twilio/voice?fallback=1&amp;x=&lt;y&gt;">"#,
                r#"<Stream url="wss://box.example.com/twilio/stream">"#,
                r#"<Parameter name="token" value="a&quot;b&apos;c&amp;d"/>"#,
                "</Stream></Connect></Response>"
            )
        );
    }

    #[test]
    fn fallback_rejects_or_says_then_dials() {
        assert!(
            fallback(Fallback::Reject { say: None })
                .ends_with(r#"<Response><Reject reason="busy"/></Response>"#)
        );
        assert!(
            fallback(Fallback::Reject { say: Some("Busy") })
                .ends_with("<Response><Say>Busy</Say><Hangup/></Response>")
        );
        let dial = fallback(Fallback::Dial {
            say: Some("One <moment> & more"),
            number: "+15551234567",
        });
        assert!(dial.ends_with("<Response><Say>One &lt;moment&gt; &amp; more</Say><Dial>+15551234567</Dial></Response>"), "{dial}");
        assert!(hangup().ends_with("<Response><Hangup/></Response>"));
    }

    #[test]
    fn dial_escapes_numbers_and_uses_sip_for_uris() {
        assert!(dial("+15551234567").ends_with("<Response><Dial>+15551234567</Dial></Response>"));
        assert!(
            dial("sip:bob@pbx.example.com?x=1&y=2").ends_with(
                "<Dial><Sip>sip:bob@pbx.example.com?x=1&amp;y=2</Sip></Dial></Response>"
            )
        );
    }

    #[test]
    fn parse_dial_takes_one_dial_and_nothing_else() {
        for (doc, to) in [
            (
                "<Response><Dial>+15551234567</Dial></Response>",
                "+15551234567",
            ),
            (
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Dial> +15551234567 </Dial>\n</Response>\n",
                "+15551234567",
            ),
            (
                "<Response><Dial><Number>1000</Number></Dial></Response>",
                "1000",
            ),
            (
                "<Response><Dial><Sip>sip:bob@pbx?a=1&amp;b=2</Sip></Dial></Response>",
                "sip:bob@pbx?a=1&b=2",
            ),
        ] {
            assert_eq!(parse_dial(doc).as_deref(), Ok(to), "{doc}");
            assert_eq!(parse_dial(&dial(to)).as_deref(), Ok(to), "round trip {to}");
        }
        for bad in [
            "",
            "+15551234567",
            "<Response></Response>",
            "<Response><Dial></Dial></Response>",
            "<Response><Say>hi</Say><Dial>+1555</Dial></Response>",
            "<Response><Dial>+1555</Dial><Dial>+1666</Dial></Response>",
            "<Response><Dial callerId=\"+1\">+1555</Dial></Response>",
            "<Response><Dial><Number>+1555</Number><Number>+1666</Number></Dial></Response>",
            "<Response><Dial><Sip>+1555</Sip></Dial></Response>",
            "<Response><Dial><Number>sip:a@b</Number></Dial></Response>",
            "<Response><Dial>+1555&#43;</Dial></Response>",
            "<Response><Dial>+1555</Dial></Response><Hangup/>",
            "<Response><Dial>+1555</Dial>",
            "<Response><Dial>+1555",
        ] {
            assert!(parse_dial(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn control_characters_are_dropped_not_passed_into_xml() {
        assert_eq!(escape("a\u{0}b\u{1b}c\td"), "abc\td");
    }
}
