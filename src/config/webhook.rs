//! `[[webhook]]`: signed HTTP callbacks for call events (Standard Webhooks), and `[webhooks]`,
//! the retry schedule they share.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::Errors;

/// Most `[[webhook]]` entries.
pub const MAX_WEBHOOKS: usize = 16;

/// The events a webhook can subscribe to, by their wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WebhookEvent {
    CallStarted,
    CallAnswered,
    CallEnded,
    RecordingReady,
    TranscriptReady,
    AgentFallback,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 6] = [
        WebhookEvent::CallStarted,
        WebhookEvent::CallAnswered,
        WebhookEvent::CallEnded,
        WebhookEvent::RecordingReady,
        WebhookEvent::TranscriptReady,
        WebhookEvent::AgentFallback,
    ];

    /// The `type` of the payload (`call.started`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::CallStarted => "call.started",
            WebhookEvent::CallAnswered => "call.answered",
            WebhookEvent::CallEnded => "call.ended",
            WebhookEvent::RecordingReady => "recording.ready",
            WebhookEvent::TranscriptReady => "transcript.ready",
            WebhookEvent::AgentFallback => "agent.fallback",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook's signing key: the bytes decoded from `whsec_<base64>`. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// Decodes `whsec_` + base64 (standard alphabet, padding optional) of 24..=64 bytes.
    pub fn parse(s: &str) -> Result<WebhookSecret, String> {
        let b64 = s
            .strip_prefix("whsec_")
            .ok_or_else(|| "must start with \"whsec_\" (Standard Webhooks)".to_owned())?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|_| "is not whsec_ followed by base64".to_owned())?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!(
                "decodes to {} bytes; must be 24..=64 bytes",
                bytes.len()
            ));
        }
        Ok(WebhookSecret(bytes))
    }

    /// The key bytes, for the HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A checked `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: String,
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, at least `/`.
    path: String,
}

impl WebhookUrl {
    pub fn parse(s: &str) -> Result<WebhookUrl, String> {
        let (tls, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{s:?} must start with http:// or https://"));
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{s:?} is not a URL"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!("{s:?}: credentials in the URL are not supported"));
        }
        if let Some(fragment) = path.find('#') {
            return Err(format!(
                "{s:?}: a fragment ({}) is not sent",
                path.get(fragment..).unwrap_or_default()
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{s:?} is not a URL")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?}: {p:?} is not a port"))?,
            None => default_port,
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(WebhookUrl {
            url: s.to_owned(),
            tls,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }
    /// `https://`.
    pub fn tls(&self) -> bool {
        self.tls
    }
    /// The host name or address literal (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The request target: path and query.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// One `[[webhook]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where deliveries are POSTed.
    pub url: WebhookUrl,
    /// The events sent to it; every event when `events` is absent.
    pub events: BTreeSet<WebhookEvent>,
    /// The Standard Webhooks signing key.
    pub secret: WebhookSecret,
    /// Whether `url` may resolve to loopback, private, link-local or metadata addresses.
    /// Off by default, so a config mistake cannot aim earshot at the box's own services.
    pub allow_private: bool,
    /// Milliseconds one attempt may take, connect to response head.
    pub timeout_ms: u64,
}

/// `[webhooks]`: the retry schedule every `[[webhook]]` shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    /// Backoff before the first retry, doubled per attempt (full jitter).
    pub retry_base_ms: u64,
    /// Longest wait between two attempts.
    pub retry_cap_ms: u64,
    /// A delivery still failing this long after its event is given up.
    pub give_up_after_secs: u64,
    /// PEM certificates trusted for `https://` webhooks besides the webpki roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            retry_base_ms: 5_000,
            retry_cap_ms: 3_600_000,
            give_up_after_secs: 86_400,
            ca_file: None,
        }
    }
}

/// One `[[webhook]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Option<String>,
    events: Option<Vec<String>>,
    secret: Option<String>,
    allow_private: Option<bool>,
    timeout_ms: Option<u64>,
}

/// `[webhooks]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawWebhooks {
    retry_base_ms: Option<u64>,
    retry_cap_ms: Option<u64>,
    give_up_after_secs: Option<u64>,
    ca_file: Option<std::path::PathBuf>,
}

pub(super) fn validate_webhooks(e: &mut Errors, raw: RawWebhooks) -> WebhooksConfig {
    let d = WebhooksConfig::default();
    let retry_base_ms = e.ranged(
        "webhooks.retry_base_ms",
        raw.retry_base_ms,
        d.retry_base_ms,
        10..=3_600_000,
    );
    let retry_cap_ms = e.ranged(
        "webhooks.retry_cap_ms",
        raw.retry_cap_ms,
        d.retry_cap_ms,
        10..=86_400_000,
    );
    if retry_cap_ms < retry_base_ms {
        e.push(
            "webhooks.retry_cap_ms",
            format!("{retry_cap_ms} is less than webhooks.retry_base_ms ({retry_base_ms})"),
        );
    }
    WebhooksConfig {
        retry_base_ms,
        retry_cap_ms,
        give_up_after_secs: e.ranged(
            "webhooks.give_up_after_secs",
            raw.give_up_after_secs,
            d.give_up_after_secs,
            1..=7 * 86_400,
        ),
        ca_file: raw
            .ca_file
            .filter(|pem| match super::agent::check_pem_certificates(pem) {
                Ok(()) => true,
                Err(reason) => {
                    e.push("webhooks.ca_file", reason);
                    false
                }
            }),
    }
}

pub(super) fn validate_webhook_list(e: &mut Errors, raw: Vec<RawWebhook>) -> Vec<WebhookConfig> {
    if raw.len() > MAX_WEBHOOKS {
        e.push(
            "webhook",
            format!("{} webhooks; at most {MAX_WEBHOOKS}", raw.len()),
        );
    }
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, raw)| validate_webhook(e, i, raw))
        .collect()
}

fn validate_webhook(e: &mut Errors, i: usize, raw: RawWebhook) -> Option<WebhookConfig> {
    let at = |key: &str| format!("webhook[{i}].{key}");
    let url = e.required(&at("url"), raw.url);
    let url = if url.is_empty() {
        None
    } else {
        WebhookUrl::parse(&url)
            .map_err(|reason| e.push(at("url"), reason))
            .ok()
    };
    let secret = e.required(&at("secret"), raw.secret);
    let secret = if secret.is_empty() {
        None
    } else {
        WebhookSecret::parse(&secret)
            .map_err(|reason| e.push(at("secret"), reason))
            .ok()
    };
    let events = match raw.events {
        None => WebhookEvent::ALL.into_iter().collect(),
        Some(names) => {
            let mut set = BTreeSet::new();
            for (j, name) in names.iter().enumerate() {
                match WebhookEvent::parse(name) {
                    Some(event) => {
                        set.insert(event);
                    }
                    None => e.push(
                        format!("webhook[{i}].events[{j}]"),
                        format!(
                            "{name:?} is not an event (expected one of {})",
                            WebhookEvent::ALL.map(WebhookEvent::as_str).join(", ")
                        ),
                    ),
                }
            }
            if names.is_empty() {
                e.push(at("events"), "must not be empty (omit it for every event)");
            }
            set
        }
    };
    let timeout_ms = e.ranged(&at("timeout_ms"), raw.timeout_ms, 10_000, 100..=120_000);
    Some(WebhookConfig {
        url: url?,
        events,
        secret: secret?,
        allow_private: raw.allow_private.unwrap_or(false),
        timeout_ms,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_minimal_webhook_gets_every_event_and_the_defaults() {
        let config = Config::from_toml_str(&format!(
            "[[webhook]]\nurl = \"https://hooks.example.com:8443/in?x=1\"\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap();
        let hook = &config.webhooks[0];
        assert_eq!(hook.events.len(), WebhookEvent::ALL.len());
        assert!(!hook.allow_private);
        assert_eq!(hook.timeout_ms, 10_000);
        assert_eq!(
            (
                hook.url.tls(),
                hook.url.host(),
                hook.url.port(),
                hook.url.path()
            ),
            (true, "hooks.example.com", 8443, "/in?x=1")
        );
        assert_eq!(hook.secret.expose().len(), 24);
        assert!(!format!("{config:?}").contains("MfKQ9r8"));
    }

    #[test]
    fn every_bad_field_is_reported_with_its_index() {
        let errors = invalid(&format!(
            r#"
            [[webhook]]
            url = "https://ok.example.com/"
            secret = "{SECRET}"
            [[webhook]]
            url = "ftp://x"
            secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            events = ["call.started", "call.exploded"]
            timeout_ms = 5
            [[webhook]]
            url = "http://[::1]:8080/hook"
            secret = "whsec_c2hvcnQ="
            "#
        ));
        assert_eq!(
            paths(&errors),
            [
                "webhook[1].url",
                "webhook[1].secret",
                "webhook[1].events[1]",
                "webhook[1].timeout_ms",
                "webhook[2].secret"
            ]
        );
        assert!(errors[4].reason.contains("5 bytes"), "{}", errors[4]);
    }

    #[test]
    fn at_most_sixteen_webhooks() {
        let one = format!("[[webhook]]\nurl = \"http://h/\"\nsecret = \"{SECRET}\"\n");
        let errors = invalid(&one.repeat(17));
        assert_eq!(paths(&errors), ["webhook"]);
    }

    #[test]
    fn urls_split_into_host_port_and_target() {
        let url = WebhookUrl::parse("http://[fd00::1]:81?q").unwrap();
        assert_eq!((url.host(), url.port(), url.path()), ("fd00::1", 81, "/?q"));
        let url = WebhookUrl::parse("http://Example.COM").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("example.com", 80, "/")
        );
        assert!(WebhookUrl::parse("http://u:p@h/").is_err());
        assert!(WebhookUrl::parse("http://h:0/").is_err());
        assert!(WebhookUrl::parse("https:///x").is_err());
    }
}
