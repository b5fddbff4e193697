//! `[twilio]`: Twilio Media Streams — the webhook's credentials and public URL, and what
//! Twilio is told to do with calls we cannot take.

use std::net::SocketAddr;

use serde::Deserialize;

use super::net::socket_addr;
use super::secret::{Secret, token};
use super::{Errors, header_safe};

/// `[twilio]`: Twilio Media Streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioConfig {
    /// Whether the Twilio webhook and stream endpoints are served.
    pub enabled: bool,
    /// Account auth token, used to check `X-Twilio-Signature`; required when enabled.
    pub auth_token: Option<Secret>,
    /// The public base URL Twilio calls (no trailing `/`); signatures are computed over it, and
    /// it is required when enabled.
    pub public_url: Option<String>,
    /// Twilio's own listener: when set, the webhook, status callback and stream are served
    /// here only (not on `[http].listen`), so a reverse proxy can expose them and nothing else.
    pub listen: Option<SocketAddr>,
    /// Seconds to wait for a stream's `start` event before giving up on it.
    pub handshake_timeout_secs: u64,
    /// What the webhook answers when we cannot take the call (busy, shutting down).
    pub fallback: Fallback,
    /// Text Twilio speaks to the caller before the fallback, if any.
    pub fallback_say: Option<String>,
    /// E.164 number dialled when `fallback` is `Dial`.
    pub fallback_number: Option<String>,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            enabled: false,
            auth_token: None,
            public_url: None,
            listen: None,
            handshake_timeout_secs: 3,
            fallback: Fallback::Reject,
            fallback_say: None,
            fallback_number: None,
        }
    }
}

/// What Twilio is told to do with a call we cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// `<Reject/>`: the caller hears busy.
    Reject,
    /// `<Dial>` `fallback_number`.
    Dial,
}

/// `[twilio]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTwilio {
    enabled: Option<bool>,
    auth_token: Option<String>,
    public_url: Option<String>,
    listen: Option<String>,
    handshake_timeout_secs: Option<u64>,
    fallback: Option<String>,
    fallback_say: Option<String>,
    fallback_number: Option<String>,
}

pub(super) fn validate_twilio(e: &mut Errors, raw: RawTwilio) -> TwilioConfig {
    let d = TwilioConfig::default();
    let enabled = raw.enabled.unwrap_or(d.enabled);
    let auth_token = e.parse_opt("twilio.auth_token", raw.auth_token, |s| token(s, 1));
    let public_url = e.parse_opt("twilio.public_url", raw.public_url, |s| {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .ok_or_else(|| format!("{s:?} must start with https:// or http://"))?;
        if rest.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?} is not a URL"));
        }
        Ok(s.trim_end_matches('/').to_owned())
    });
    if enabled && auth_token.is_none() {
        e.push("twilio.auth_token", "required when twilio.enabled = true");
    }
    if enabled && public_url.is_none() {
        e.push("twilio.public_url", "required when twilio.enabled = true");
    }
    let fallback = e.parse("twilio.fallback", raw.fallback, d.fallback, |s| match s {
        "reject" => Ok(Fallback::Reject),
        "dial" => Ok(Fallback::Dial),
        _ => Err(format!(
            "{s:?} is not a fallback (expected \"reject\" or \"dial\")"
        )),
    });
    let fallback_number = e.parse_opt("twilio.fallback_number", raw.fallback_number, |s| {
        let digits = s.strip_prefix('+').unwrap_or_default();
        if (3..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(s.to_owned())
        } else {
            Err(format!(
                "{s:?} is not an E.164 number (e.g. \"+15551234567\")"
            ))
        }
    });
    if fallback == Fallback::Dial && fallback_number.is_none() {
        e.push(
            "twilio.fallback_number",
            "required when twilio.fallback = \"dial\"",
        );
    }
    TwilioConfig {
        enabled,
        auth_token,
        public_url,
        listen: e.parse_opt("twilio.listen", raw.listen, socket_addr),
        handshake_timeout_secs: e.ranged(
            "twilio.handshake_timeout_secs",
            raw.handshake_timeout_secs,
            d.handshake_timeout_secs,
            1..=60,
        ),
        fallback,
        fallback_say: e.parse_opt("twilio.fallback_say", raw.fallback_say, header_safe),
        fallback_number,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

    const TWILIO: &str = "[twilio]\nenabled = true\nauth_token = \"tw-token\"\npublic_url = \"https://calls.example.com\"\n";

    #[test]
    fn twilio_behind_its_proxy_needs_an_api_token_or_its_own_listener() {
        let errors = invalid(TWILIO);
        assert_eq!(paths(&errors), ["http.token"]);
        assert!(errors[0].reason.contains("twilio.listen"), "{}", errors[0]);
        let with_token = format!("{TWILIO}[http]\ntoken = \"0123456789abcdef\"\n");
        assert!(Config::from_toml_str(&with_token).is_ok());
        let own = Config::from_toml_str(&format!("{TWILIO}listen = \"127.0.0.1:8081\"\n")).unwrap();
        assert_eq!(own.twilio.listen, Some("127.0.0.1:8081".parse().unwrap()));
        let same = invalid(&format!("{TWILIO}listen = \"127.0.0.1:8080\"\n"));
        assert_eq!(paths(&same), ["twilio.listen"]);
        // A bad token is reported once, on its own.
        let short = invalid(&format!("{TWILIO}[http]\ntoken = \"short\"\n"));
        assert_eq!(paths(&short), ["http.token"]);
        assert_eq!(short[0].reason, "must be at least 16 characters");
    }

    #[test]
    fn twilio_requirements_when_enabled() {
        let errors = invalid("[twilio]\nenabled = true\nfallback = \"dial\"\n");
        assert_eq!(
            paths(&errors),
            [
                "twilio.auth_token",
                "twilio.public_url",
                "twilio.fallback_number",
                "http.token"
            ]
        );
        let errors = invalid(
            "[twilio]\npublic_url = \"ftp://x\"\nfallback_number = \"555\"\nfallback = \"hangup\"\n",
        );
        assert_eq!(
            paths(&errors),
            [
                "twilio.public_url",
                "twilio.fallback",
                "twilio.fallback_number"
            ]
        );
    }
}
