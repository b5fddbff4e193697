//! The TwiML documents our webhooks answer with: connect the call to our media stream, or the
//! fallback when we cannot take it. Every value is XML-escaped.
//!
//! Implements Twilio "TwiML `<Connect>`/`<Stream>`" (bidirectional stream, custom
//! `<Parameter>`s, the `action` URL fetched when the stream ends), `<Say>`, `<Dial>`,
//! `<Reject>` and `<Hangup>`.

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
        Fallback::Dial { number, .. } => {
            let _ = write!(out, "<Dial>{}</Dial>", escape(number));
        }
    }
    out.push_str("</Response>");
    out
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
    fn control_characters_are_dropped_not_passed_into_xml() {
        assert_eq!(escape("a\u{0}b\u{1b}c\td"), "abc\td");
    }
}
