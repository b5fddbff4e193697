//! `[agent]`: the voice agent bridged to every call over a WebSocket — where it is ([`WsUrl`]),
//! which protocol it speaks, how many calls it takes and what a call does when the agent cannot
//! be reached. The section is optional; without it calls have no agent. With
//! `protocol = "openai-realtime"` the section also sets up OpenAI's model (its keys are checked
//! in `realtime`), and `url` defaults to the GA Realtime endpoint.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use super::Errors;
use super::calls::{CallsConfig, check_wav};
use super::net::HostPort;
use super::realtime::{OpenAiRealtime, RawRealtime, validate_realtime};
use crate::agent::openai::ws_url;

/// `[agent]`: a voice agent bridged to every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The agent's WebSocket endpoint; `wss://` connections trust the webpki roots and
    /// `ca_file`.
    pub url: WsUrl,
    /// The messages spoken on that WebSocket.
    pub protocol: AgentProtocol,
    /// Milliseconds a call waits for the WebSocket to open before it takes the fallback, so an
    /// unreachable agent never leaves a caller in silence for long.
    pub connect_timeout_ms: u64,
    /// Most calls bridged to the agent at once; bounds the connections an agent must take
    /// apart from `[calls].max_concurrent`, which is its default.
    pub max_concurrent: usize,
    /// What a call does when the agent cannot be reached.
    pub fallback: AgentFallback,
    /// Where [`AgentFallback::Transfer`] transfers the caller; allowed by
    /// `[calls].outbound_allow`. `Some` exactly with that fallback.
    pub fallback_to: Option<super::DialTarget>,
    /// WAV file played to the caller before hanging up with [`AgentFallback::Hangup`]; checked
    /// to be a WAV when loading. `None` hangs up without a word.
    pub fallback_wav: Option<PathBuf>,
    /// PEM file of CA certificates trusted for `wss://` besides the webpki roots (an agent
    /// behind a private CA); checked to hold a certificate when loading.
    pub ca_file: Option<PathBuf>,
    /// Sent to the agent as Twilio's `accountSid` (`AC` and 32 hex digits); `None`: earshot
    /// makes one up per box.
    pub account_sid: Option<String>,
    /// Seconds of agent audio that may be queued towards the caller, bounding memory per call
    /// when an agent sends faster than real time.
    pub max_queue_secs: u64,
    /// The OpenAI model and how it listens: `Some` exactly when `protocol` is
    /// [`AgentProtocol::OpenAiRealtime`].
    pub openai: Option<OpenAiRealtime>,
    /// Where the model's `transfer_call` function transfers the caller (a person); allowed by
    /// `[calls].outbound_allow`. `None`: the model is offered no such function. OpenAI
    /// Realtime only (an agent speaking Twilio's protocol transfers through the call REST).
    pub transfer_to: Option<super::DialTarget>,
}

/// The protocol spoken to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentProtocol {
    /// Twilio Media Streams messages (`connected`, `start`, `media`, `mark`, `stop`), earshot
    /// in Twilio's place. `"twilio"` in the file.
    Twilio,
    /// The OpenAI Realtime API's events (GA), earshot the client and the model the agent.
    /// `"openai-realtime"` in the file; checked here with its keys, not bridged to calls yet.
    OpenAiRealtime,
}

impl fmt::Display for AgentProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentProtocol::Twilio => "twilio",
            AgentProtocol::OpenAiRealtime => "openai-realtime",
        })
    }
}

/// What a call does when the agent cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentFallback {
    /// Play `fallback_wav` if set, then hang up. `"hangup"` in the file.
    Hangup,
    /// Stay on the line as a listen-only call: no greeting, the caller is recorded and played on
    /// the speakers. `"listen"` in the file.
    Listen,
    /// Transfer the caller to `fallback_to` (a person). `"transfer"` in the file.
    Transfer,
}

impl fmt::Display for AgentFallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentFallback::Hangup => "hangup",
            AgentFallback::Listen => "listen",
            AgentFallback::Transfer => "transfer",
        })
    }
}

/// A `ws://` or `wss://` URL with a valid host: `wss://agent.example.com/stream?x=1`,
/// `ws://[::1]:9000`. Kept as written; the parts a connector needs are read off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// The URL as written in the file.
    url: String,
    /// `wss://`: TLS.
    tls: bool,
    /// The authority: host (IPv6 without brackets) and port if one was given.
    host: HostPort,
}

impl WsUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether the connection is TLS (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host: a DNS name or an IP literal (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host.host
    }

    /// The port given, or the scheme's (443 for `wss://`, 80 for `ws://`).
    pub fn port(&self) -> u16 {
        self.host.port.unwrap_or(if self.tls { 443 } else { 80 })
    }
}

impl FromStr for WsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<WsUrl, String> {
        let bad = |why: &str| format!("{s:?} is not a WebSocket URL ({why})");
        let (tls, rest) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("wss") => (true, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ws") => (false, rest),
            _ => return Err(format!("{s:?} must start with ws:// or wss://")),
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace"));
        }
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        if path.contains('#') {
            return Err(bad("WebSocket URLs have no #fragment"));
        }
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad("user:password@ is not supported"));
        }
        if !authority.starts_with('[') && authority.matches(':').count() > 1 {
            return Err(bad("an IPv6 host goes in [ ]"));
        }
        let host = authority.parse::<HostPort>().map_err(|why| bad(&why))?;
        Ok(WsUrl {
            url: s.to_owned(),
            tls,
            host,
        })
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// `[agent]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAgent {
    url: Option<String>,
    protocol: Option<String>,
    connect_timeout_ms: Option<u64>,
    max_concurrent: Option<usize>,
    fallback: Option<String>,
    fallback_to: Option<String>,
    fallback_wav: Option<PathBuf>,
    transfer_to: Option<String>,
    ca_file: Option<PathBuf>,
    account_sid: Option<String>,
    max_queue_secs: Option<u64>,
    // protocol = "openai-realtime" only: see `realtime`.
    api_key: Option<String>,
    model: Option<String>,
    voice: Option<String>,
    instructions: Option<String>,
    instructions_file: Option<PathBuf>,
    vad_threshold: Option<f64>,
    prefix_padding_ms: Option<u32>,
    silence_duration_ms: Option<u32>,
    transcription_model: Option<String>,
}

impl RawAgent {
    /// The OpenAI keys, taken out.
    fn take_realtime(&mut self) -> RawRealtime {
        RawRealtime {
            api_key: self.api_key.take(),
            model: self.model.take(),
            voice: self.voice.take(),
            instructions: self.instructions.take(),
            instructions_file: self.instructions_file.take(),
            vad_threshold: self.vad_threshold.take(),
            prefix_padding_ms: self.prefix_padding_ms.take(),
            silence_duration_ms: self.silence_duration_ms.take(),
            transcription_model: self.transcription_model.take(),
        }
    }
}

/// The section checked; `None` when the URL is missing or invalid (recorded in `e`, so the
/// configuration is rejected anyway).
pub(super) fn validate_agent(
    e: &mut Errors,
    mut raw: RawAgent,
    calls: &CallsConfig,
) -> Option<AgentConfig> {
    let realtime = raw.take_realtime();
    let openai_protocol = raw.protocol.as_deref() == Some("openai-realtime");
    // A misspelt protocol is reported once, at its own key, not again at each OpenAI key.
    let twilio_protocol = matches!(raw.protocol.as_deref(), None | Some("twilio"));
    let url_text = match (raw.url, openai_protocol) {
        // The GA endpoint for the model; an invalid model name is reported at its own key.
        (None, true) => realtime.url_model().map(|m| ws_url(&m)).unwrap_or_default(),
        (url, _) => e.required("agent.url", url),
    };
    let url = if url_text.is_empty() {
        None
    } else {
        url_text
            .parse::<WsUrl>()
            .map_err(|reason| e.push("agent.url", reason))
            .ok()
    };
    let protocol = e.parse(
        "agent.protocol",
        raw.protocol,
        AgentProtocol::Twilio,
        |s| match s {
            "twilio" => Ok(AgentProtocol::Twilio),
            "openai-realtime" => Ok(AgentProtocol::OpenAiRealtime),
            _ => Err(format!(
                "{s:?} is not a protocol (expected \"twilio\" or \"openai-realtime\")"
            )),
        },
    );
    let connect_timeout_ms = e.ranged(
        "agent.connect_timeout_ms",
        raw.connect_timeout_ms,
        3000,
        100..=60_000,
    );
    // Only a value written here is checked: an invalid default is reported at its own key.
    let max_concurrent = raw.max_concurrent.unwrap_or(calls.max_concurrent);
    if raw.max_concurrent == Some(0) {
        e.push("agent.max_concurrent", "0 is out of range (at least 1)");
    }
    let fallback = e.parse(
        "agent.fallback",
        raw.fallback,
        AgentFallback::Hangup,
        |s| match s {
            "hangup" => Ok(AgentFallback::Hangup),
            "listen" => Ok(AgentFallback::Listen),
            "transfer" => Ok(AgentFallback::Transfer),
            _ => Err(format!(
                "{s:?} is not a fallback (expected \"hangup\", \"listen\" or \"transfer\")"
            )),
        },
    );
    let fallback_to = match fallback {
        AgentFallback::Transfer => super::dtmf_rule::transfer_to(
            e,
            "agent.fallback_to",
            raw.fallback_to,
            &calls.outbound_allow,
        ),
        AgentFallback::Hangup | AgentFallback::Listen => {
            if raw.fallback_to.is_some() {
                e.push(
                    "agent.fallback_to",
                    "only used with fallback = \"transfer\"",
                );
            }
            None
        }
    };
    let transfer_to = match (raw.transfer_to, openai_protocol) {
        (None, _) => None,
        (Some(to), true) => {
            super::dtmf_rule::transfer_to(e, "agent.transfer_to", Some(to), &calls.outbound_allow)
        }
        (Some(_), false) => {
            e.push(
                "agent.transfer_to",
                "only used with protocol = \"openai-realtime\" (other agents transfer through the call REST)",
            );
            None
        }
    };
    if let Some(wav) = &raw.fallback_wav
        && let Err(reason) = check_wav(wav)
    {
        e.push("agent.fallback_wav", reason);
    }
    if let Some(pem) = &raw.ca_file
        && let Err(reason) = check_pem_certificates(pem)
    {
        e.push("agent.ca_file", reason);
    }
    let account_sid = e.parse_opt("agent.account_sid", raw.account_sid, |s| {
        match s.strip_prefix("AC") {
            Some(hex) if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(s.to_owned())
            }
            _ => Err(format!(
                "{s:?} is not an account SID (\"AC\" and 32 hex digits)"
            )),
        }
    });
    let max_queue_secs = e.ranged("agent.max_queue_secs", raw.max_queue_secs, 60, 1..=600);
    let openai = if openai_protocol {
        validate_realtime(e, realtime)
    } else {
        if twilio_protocol {
            for key in realtime.written() {
                e.push(
                    format!("agent.{key}"),
                    "only used with protocol = \"openai-realtime\"",
                );
            }
        }
        None
    };
    Some(AgentConfig {
        url: url?,
        protocol,
        connect_timeout_ms,
        max_concurrent,
        fallback,
        fallback_to,
        fallback_wav: raw.fallback_wav,
        ca_file: raw.ca_file,
        account_sid,
        max_queue_secs,
        openai,
        transfer_to,
    })
}

/// Checks that `path` is a readable file holding at least one PEM certificate. Only the first
/// MiBs are read: a CA bundle is far smaller, and a wrong path must not read a disk image.
pub(super) fn check_pem_certificates(path: &Path) -> Result<(), String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const MAX_BYTES: u64 = 4 << 20;
    let shown = path.display();
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|file| file.take(MAX_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("{shown}: cannot read ({e})"))?;
    if bytes.windows(BEGIN.len()).any(|w| w == BEGIN) {
        Ok(())
    } else {
        Err(format!(
            "{shown}: no PEM certificate in it (no \"-----BEGIN CERTIFICATE-----\")"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{TempDir, invalid, paths, toml_path};

    const PEM: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn agent(toml: &str) -> AgentConfig {
        Config::from_toml_str(toml).unwrap().agent.unwrap()
    }

    #[test]
    fn absent_section_means_no_agent() {
        assert_eq!(Config::from_toml_str("").unwrap().agent, None);
    }

    #[test]
    fn a_url_alone_takes_the_defaults() {
        let a = agent("[agent]\nurl = \"ws://127.0.0.1:9000/stream\"\n");
        assert_eq!(a.url.as_str(), "ws://127.0.0.1:9000/stream");
        assert_eq!(a.protocol, AgentProtocol::Twilio);
        assert_eq!(a.connect_timeout_ms, 3000);
        assert_eq!(a.max_concurrent, 100);
        assert_eq!(a.fallback, AgentFallback::Hangup);
        assert_eq!(
            (a.fallback_wav, a.ca_file, a.account_sid),
            (None, None, None)
        );
        assert_eq!(a.max_queue_secs, 60);
        assert_eq!(a.openai, None);
    }

    #[test]
    fn max_concurrent_defaults_to_the_calls_limit() {
        let a = agent("[calls]\nmax_concurrent = 7\n[agent]\nurl = \"ws://agent\"\n");
        assert_eq!(a.max_concurrent, 7);
        let a = agent(
            "[calls]\nmax_concurrent = 7\n[agent]\nurl = \"ws://agent\"\nmax_concurrent = 2\n",
        );
        assert_eq!(a.max_concurrent, 2);
    }

    #[test]
    fn valid_section_with_every_key() {
        let dir = TempDir::new("agent-valid");
        let wav = dir.wav("sorry.wav");
        let pem = dir.file("ca.pem", PEM);
        let a = agent(&format!(
            "[agent]\nurl = \"wss://agent.example.com:8443/media?box=1\"\n\
             protocol = \"twilio\"\nconnect_timeout_ms = 100\nmax_concurrent = 1\n\
             fallback = \"listen\"\nfallback_wav = {}\nca_file = {}\n\
             account_sid = \"AC0123456789abcdef0123456789ABCDEF\"\nmax_queue_secs = 600\n",
            toml_path(&wav),
            toml_path(&pem),
        ));
        assert_eq!(
            a,
            AgentConfig {
                url: "wss://agent.example.com:8443/media?box=1".parse().unwrap(),
                protocol: AgentProtocol::Twilio,
                connect_timeout_ms: 100,
                max_concurrent: 1,
                fallback: AgentFallback::Listen,
                fallback_to: None,
                fallback_wav: Some(wav),
                ca_file: Some(pem),
                account_sid: Some("AC0123456789abcdef0123456789ABCDEF".to_owned()),
                max_queue_secs: 600,
                openai: None,
                transfer_to: None,
            }
        );
    }

    #[test]
    fn every_bad_field_is_reported_with_its_path_and_reason() {
        let errors = invalid(
            "[agent]\nurl = \"https://agent.example.com\"\nprotocol = \"openai\"\n\
             connect_timeout_ms = 99\nmax_concurrent = 0\nfallback = \"voicemail\"\n\
             fallback_wav = \"/nonexistent/sorry.wav\"\nca_file = \"/nonexistent/ca.pem\"\n\
             account_sid = \"AC123\"\nmax_queue_secs = 601\n",
        );
        assert_eq!(
            paths(&errors),
            [
                "agent.url",
                "agent.protocol",
                "agent.connect_timeout_ms",
                "agent.max_concurrent",
                "agent.fallback",
                "agent.fallback_wav",
                "agent.ca_file",
                "agent.account_sid",
                "agent.max_queue_secs",
            ]
        );
        let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons[0],
            "\"https://agent.example.com\" must start with ws:// or wss://"
        );
        assert!(reasons[1].contains("expected \"twilio\" or \"openai-realtime\""));
        assert_eq!(reasons[2], "99 is out of range (100..=60000)");
        assert_eq!(reasons[3], "0 is out of range (at least 1)");
        assert!(reasons[4].contains("expected \"hangup\", \"listen\" or \"transfer\""));
        assert!(reasons[5].contains("cannot open"), "{}", reasons[5]);
        assert!(reasons[6].contains("cannot read"), "{}", reasons[6]);
        assert!(reasons[7].contains("not an account SID"));
        assert_eq!(reasons[8], "601 is out of range (1..=600)");
        assert_eq!(
            errors[2].to_string(),
            "agent.connect_timeout_ms: 99 is out of range (100..=60000)"
        );
    }

    #[test]
    fn url_is_required_once_the_section_is_there() {
        let errors = invalid("[agent]\n");
        assert_eq!(paths(&errors), ["agent.url"]);
        assert_eq!(errors[0].reason, "required");
        let errors = invalid("[agent]\nurl = \"\"\n");
        assert_eq!(errors[0].reason, "must not be empty");
    }

    #[test]
    fn url_needs_a_ws_scheme_and_a_host() {
        let url = |s: &str| s.parse::<WsUrl>();
        let plain = url("ws://agent.local").unwrap();
        assert_eq!(
            (plain.is_tls(), plain.host(), plain.port()),
            (false, "agent.local", 80)
        );
        let tls = url("WSS://agent.example.com/stream?token=x").unwrap();
        assert_eq!((tls.is_tls(), tls.port()), (true, 443));
        assert_eq!(tls.to_string(), "WSS://agent.example.com/stream?token=x");
        let v6 = url("ws://[::1]:9000/").unwrap();
        assert_eq!((v6.host(), v6.port()), ("::1", 9000));
        for bad in [
            "agent.example.com",
            "http://agent.example.com",
            "ws://",
            "ws:///stream",
            "ws://:9000/stream",
            "ws://user:pw@agent.example.com",
            "ws://agent.example.com:0",
            "ws://agent.example.com:99999",
            "ws://bad_host/",
            "ws://::1/",
            "ws://agent.example.com/#top",
            "ws://agent.example.com/a b",
        ] {
            assert!(url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fallback_wav_and_ca_file_are_checked_for_content() {
        let dir = TempDir::new("agent-files");
        let text = dir.file("sorry.txt", b"hello, this is not audio");
        let der = dir.file("ca.der", b"\x30\x82\x01\x0a");
        let errors = invalid(&format!(
            "[agent]\nurl = \"wss://agent\"\nfallback_wav = {}\nca_file = {}\n",
            toml_path(&text),
            toml_path(&der),
        ));
        assert_eq!(paths(&errors), ["agent.fallback_wav", "agent.ca_file"]);
        assert!(errors[0].reason.contains("not a WAV file"));
        assert!(errors[1].reason.contains("no PEM certificate"));
    }

    #[test]
    fn unknown_agent_key_is_a_syntax_error() {
        let err = Config::from_toml_str("[agent]\nurl = \"ws://a\"\ntimeout = 5\n").unwrap_err();
        assert!(
            err.to_string().starts_with("agent.timeout: line 3"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_agent_block_uncommented_is_valid_and_shows_the_defaults() {
        let dir = TempDir::new("agent-shipped");
        let wav = dir.wav("agent-unavailable.wav");
        let pem = dir.file("agent-ca.pem", PEM);
        let block: String = include_str!("../../config.toml")
            .lines()
            .skip_while(|line| *line != "# [agent]")
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| !line.starts_with("# "))
            .map(|line| match line.split_once(" = ") {
                // The example files do not exist here; the keys are what is checked.
                Some(("fallback_wav", _)) => format!("fallback_wav = {}\n", toml_path(&wav)),
                Some(("ca_file", _)) => format!("ca_file = {}\n", toml_path(&pem)),
                _ => format!("{line}\n"),
            })
            .collect();
        assert_eq!(block.lines().count(), 10, "{block}");
        let a = agent(&block);
        assert_eq!(a.protocol, AgentProtocol::Twilio);
        assert_eq!(a.connect_timeout_ms, 3000);
        assert_eq!(a.max_concurrent, 100);
        assert_eq!(a.fallback, AgentFallback::Hangup);
        assert_eq!(a.max_queue_secs, 60);
    }

    #[test]
    fn agent_errors_are_listed_with_the_other_sections() {
        let err = Config::from_toml_str(
            "[rtp]\nports = \"5\"\n[agent]\nurl = \"wss://\"\n[log]\nformat = \"xml\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        let keys: Vec<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
        assert_eq!(keys, ["rtp.ports", "agent.url", "log.format"], "{text}");
        assert!(
            text.contains("agent.url: \"wss://\" is not a WebSocket URL (no host)"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_calls_limit_is_not_reported_again_as_the_agent_default() {
        let errors = invalid("[calls]\nmax_concurrent = 0\n[agent]\nurl = \"ws://agent\"\n");
        assert_eq!(paths(&errors), ["calls.max_concurrent"]);
    }

    #[test]
    fn a_transfer_fallback_needs_an_allowed_destination() {
        let config = Config::from_toml_str(
            "[calls]\noutbound_allow = [\"+1555*\"]\n[agent]\nurl = \"ws://agent\"\n\
             fallback = \"transfer\"\nfallback_to = \"+15551234567\"\n",
        )
        .unwrap();
        let a = config.agent.unwrap();
        assert_eq!(a.fallback, AgentFallback::Transfer);
        assert_eq!(
            a.fallback_to.as_ref().map(super::super::DialTarget::as_str),
            Some("+15551234567")
        );
        let errors = invalid("[agent]\nurl = \"ws://agent\"\nfallback = \"transfer\"\n");
        assert_eq!(paths(&errors), ["agent.fallback_to"]);
        let errors = invalid(
            "[agent]\nurl = \"ws://agent\"\nfallback = \"transfer\"\nfallback_to = \"+15551234567\"\n",
        );
        assert!(errors[0].reason.contains("outbound_allow"), "{}", errors[0]);
        let errors = invalid(
            "[calls]\noutbound_allow = [\"+1555*\"]\n[agent]\nurl = \"ws://agent\"\nfallback_to = \"+15551234567\"\n",
        );
        assert_eq!(paths(&errors), ["agent.fallback_to"]);
    }

    #[test]
    fn the_models_transfer_destination_is_realtime_only_and_allowed() {
        let config = Config::from_toml_str(
            "[calls]\noutbound_allow = [\"sip:*@desk.example.com\"]\n[agent]\n\
             protocol = \"openai-realtime\"\napi_key = \"sk-test-0123456789abcdef0123\"\n\
             transfer_to = \"sip:help@desk.example.com\"\n",
        )
        .unwrap();
        let a = config.agent.unwrap();
        assert_eq!(
            a.transfer_to.as_ref().map(super::super::DialTarget::as_str),
            Some("sip:help@desk.example.com")
        );
        let errors = invalid(
            "[agent]\nprotocol = \"openai-realtime\"\napi_key = \"sk-test-0123456789abcdef0123\"\n\
             transfer_to = \"sip:help@desk.example.com\"\n",
        );
        assert_eq!(paths(&errors), ["agent.transfer_to"]);
        assert!(errors[0].reason.contains("outbound_allow"), "{}", errors[0]);
        let errors = invalid(
            "[calls]\noutbound_allow = [\"+1555*\"]\n[agent]\nurl = \"ws://agent\"\n\
             transfer_to = \"+15551234567\"\n",
        );
        assert_eq!(paths(&errors), ["agent.transfer_to"]);
        assert!(
            errors[0].reason.contains("openai-realtime"),
            "{}",
            errors[0]
        );
    }
}
