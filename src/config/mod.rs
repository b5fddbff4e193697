//! Typed configuration: the TOML file, its defaults and its validation.
//!
//! Loading takes two passes. Serde first reads the file into a raw form where every key is
//! optional and anything that needs checking is still a string; a TOML syntax or type error
//! stops there and is reported with the key's dotted path, line and column. [`validate`] then
//! turns the raw form into [`Config`], collecting *every* invalid field
//! (`sip.allow[2]: "10.0.0.0/33" is not a CIDR (prefix longer than 32)`), so one run of
//! `earshot check-config` shows all mistakes instead of the first. Past this module nothing
//! re-checks the configuration: the types ([`Cidr`], [`PortRange`], [`HostPort`], [`Secret`],
//! [`WsUrl`]) carry what was checked.
//!
//! Every key has a default, so an empty file is a valid configuration; unknown keys are errors,
//! so a typo never silently falls back to a default. Relative paths are resolved against the
//! working directory (the systemd unit sets it to the state directory).
//!
//! # Layout
//!
//! This file holds [`Config`], the errors, the loading entry points and the field-error
//! accumulator. Each TOML section has its own module with its typed struct, its raw serde form
//! and its `validate_*` function: `sip` (with the trunks), `rtp`, `calls`, `audio`, `jitter`,
//! `recording`, `store`, `http`, `twilio`, `agent` (its OpenAI Realtime keys in `realtime`),
//! `destination` (what a call may be placed or transferred to, and the `[calls].outbound_allow`
//! patterns that allow it: the one parser of destinations), `dtmf_rule` (`[[calls.dtmf_rule]]`),
//! `log`, `webhook` (`[[webhook]]` and `[webhooks]`), `node`. Value types shared by sections live in
//! `net` ([`Cidr`], [`PortRange`], [`HostPort`]) and `secret` ([`Secret`]); `syntax` locates
//! TOML syntax and type errors. Every public type is re-exported here, so callers name it
//! `config::Xxx` whatever file it lives in.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::media::jitter::JitterConfig;

mod agent;
mod audio;
mod calls;
pub mod destination;
mod dtmf_rule;
mod http;
mod jitter;
mod log;
mod net;
mod node;
mod realtime;
mod recording;
mod route;
mod rtp;
mod secret;
mod sip;
mod store;
mod syntax;
mod twilio;
mod webhook;

pub use agent::{AgentConfig, AgentFallback, AgentProtocol, WsUrl};
pub use audio::{AudioConfig, AudioInput, AudioOutput};
pub use calls::CallsConfig;
pub use destination::{DialPattern, DialTarget, TargetError, allowed as outbound_allowed};
pub use dtmf_rule::{DtmfAction, DtmfRule};
pub use http::HttpConfig;
pub use log::{LogConfig, LogFormat};
pub use net::{Cidr, CidrError, HostPort, PortRange};
pub use node::NodeConfig;
pub use realtime::{MAX_INSTRUCTIONS, OpenAiRealtime, VadThreshold};
pub use recording::RecordingConfig;
pub use route::{NumberPattern, Route, RouteSource, wants_agent};
pub use rtp::RtpConfig;
pub use secret::Secret;
pub use sip::{SipConfig, Transport, Trunk};
pub use store::StoreConfig;
pub use twilio::{Fallback, TwilioConfig};
pub use webhook::{
    MAX_WEBHOOKS, WebhookConfig, WebhookEvent, WebhookSecret, WebhookUrl, WebhooksConfig,
};

/// The configuration file used when none is given on the command line.
pub const DEFAULT_PATH: &str = "config.toml";

/// The whole validated configuration, one field per TOML section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `[sip]`: the SIP listener, who may reach it, and the trunks to register with.
    pub sip: SipConfig,
    /// `[rtp]`: the media port range and per-stream timers.
    pub rtp: RtpConfig,
    /// `[calls]`: admission limits and the greeting played to callers.
    pub calls: CallsConfig,
    /// `[audio]`: where live calls are played on the box.
    pub audio: AudioConfig,
    /// `[jitter]`: the SIP calls' jitter buffer (`earshot jitter-sim --config` replays a trace
    /// with it).
    pub jitter: JitterConfig,
    /// `[recording]`: where WAV recordings go and how long they are kept.
    pub recording: RecordingConfig,
    /// `[store]`: the redb database file.
    pub store: StoreConfig,
    /// `[http]`: the REST API and web console.
    pub http: HttpConfig,
    /// `[twilio]`: Twilio Media Streams.
    pub twilio: TwilioConfig,
    /// `[agent]`: the voice agent bridged to every call; `None` when the section is absent,
    /// and then calls have no agent.
    pub agent: Option<AgentConfig>,
    /// `[[route]]`: which calls are bridged to the agent, first match first.
    pub routes: Vec<Route>,
    /// `[log]`: log filtering and output format.
    pub log: LogConfig,
    /// `[[webhook]]`: signed HTTP callbacks for call events; none by default.
    pub webhooks: Vec<WebhookConfig>,
    /// `[webhooks]`: the retry schedule of every webhook.
    pub webhook_retry: WebhooksConfig,
    /// `[node]`: this box's name in a fleet (`source_node`).
    pub node: NodeConfig,
}

/// One invalid field: its dotted path in the file (`sip.trunk[0].expires_secs`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct FieldError {
    /// Dotted key path, with `[i]` for array elements.
    pub path: String,
    /// What is wrong, including the offending value.
    pub reason: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type or an unknown key; parsing
    /// stops at the first such error.
    #[error("{}line {line}, column {column}: {message}", path.as_deref().map(|p| format!("{p}: ")).unwrap_or_default())]
    Syntax {
        /// Dotted path of the key at the error, when the document parsed far enough to tell.
        path: Option<String>,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// The file parsed but these fields are invalid; every one is listed, one per line.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<FieldError>),
}

/// Renders field errors one per line, for [`ConfigError::Invalid`]'s `Display`.
fn join_lines(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Parses and validates a configuration from TOML text.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(s).map_err(|e| syntax::syntax_error(s, &e))?;
        validate(raw).map_err(ConfigError::Invalid)
    }
}

/// The file as written: every key optional, checked values still strings.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    sip: sip::RawSip,
    rtp: rtp::RawRtp,
    calls: calls::RawCalls,
    audio: audio::RawAudio,
    jitter: jitter::RawJitter,
    recording: recording::RawRecording,
    store: store::RawStore,
    http: http::RawHttp,
    twilio: twilio::RawTwilio,
    /// `None` when the section is absent: no agent, rather than an agent with defaults.
    agent: Option<agent::RawAgent>,
    route: Vec<route::RawRoute>,
    log: log::RawLog,
    webhook: Vec<webhook::RawWebhook>,
    webhooks: webhook::RawWebhooks,
    node: node::RawNode,
}

/// Collects field errors during [`validate`].
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// Parses `raw` with `parse`, or returns `default` when absent; on error records it and
    /// returns `default` so validation carries on to the next field.
    fn parse<T>(
        &mut self,
        path: &str,
        raw: Option<String>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match raw {
            None => default,
            Some(s) => parse(&s).unwrap_or_else(|reason| {
                self.push(path, reason);
                default
            }),
        }
    }

    /// Like [`Errors::parse`] for an optional value without a default.
    fn parse_opt<T>(
        &mut self,
        path: &str,
        raw: Option<String>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = raw?;
        parse(&s).map_err(|reason| self.push(path, reason)).ok()
    }

    /// `raw` or `default`, recording an error when it lies outside `range`.
    fn ranged<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        path: &str,
        raw: Option<T>,
        default: T,
        range: RangeInclusive<T>,
    ) -> T {
        let value = raw.unwrap_or(default);
        if !range.contains(&value) {
            self.push(
                path,
                format!(
                    "{value} is out of range ({}..={})",
                    range.start(),
                    range.end()
                ),
            );
        }
        value
    }

    /// The value of a required key, recording an error when it is missing or empty.
    fn required(&mut self, path: &str, raw: Option<String>) -> String {
        match raw {
            Some(s) if !s.is_empty() => s,
            Some(_) => {
                self.push(path, "must not be empty");
                String::new()
            }
            None => {
                self.push(path, "required");
                String::new()
            }
        }
    }
}

/// Values that go verbatim into SIP headers (`[sip]`, trunks) or TwiML (`[twilio]`) must not be
/// able to break the message.
fn header_safe(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else if s.chars().any(char::is_control) {
        Err(format!("{s:?} contains control characters"))
    } else {
        Ok(s.to_owned())
    }
}

/// A path key that must not be empty; `default` when absent.
fn non_empty_path(
    errors: &mut Errors,
    path: &str,
    raw: Option<PathBuf>,
    default: PathBuf,
) -> PathBuf {
    let value = raw.unwrap_or(default);
    if value.as_os_str().is_empty() {
        errors.push(path, "must not be empty");
    }
    value
}

/// Twilio's reverse proxy forwards the internet to the listener Twilio is served on: if that
/// is `[http].listen`, the API behind it must demand a token.
fn check_twilio_exposure(e: &mut Errors, http: &HttpConfig, twilio: &TwilioConfig) {
    match twilio.listen {
        Some(listen) if listen == http.listen => e.push(
            "twilio.listen",
            "must differ from http.listen (Twilio's listener serves only the Twilio routes)",
        ),
        Some(_) => {}
        // An invalid token is reported on its own.
        None if twilio.enabled
            && http.token.is_none()
            && !e.0.iter().any(|f| f.path == "http.token") =>
        {
            e.push(
                "http.token",
                "required when twilio.enabled = true and Twilio shares http.listen (its public \
             reverse proxy would expose the API); set http.token, or serve Twilio on its own \
             twilio.listen and expose only that",
            )
        }
        None => {}
    }
}

/// Raw form → [`Config`], collecting every invalid field.
fn validate(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut e = Errors::default();
    let sip = sip::validate_sip(&mut e, raw.sip);
    let rtp = rtp::validate_rtp(&mut e, raw.rtp);
    let calls = calls::validate_calls(&mut e, raw.calls, &sip.trunks);
    let audio = audio::validate_audio(&mut e, raw.audio);
    let jitter = jitter::validate_jitter(&mut e, raw.jitter);
    let recording = recording::validate_recording(&mut e, raw.recording);
    let store = store::validate_store(&mut e, raw.store);
    let http = http::validate_http(&mut e, raw.http);
    let twilio = twilio::validate_twilio(&mut e, raw.twilio);
    // An invalid [agent] is reported on its own fields, not again on every route.
    let agent_section = raw.agent.is_some();
    let agent = raw
        .agent
        .and_then(|raw| agent::validate_agent(&mut e, raw, &calls));
    let routes = route::validate_routes(&mut e, raw.route, agent_section);
    let log = log::validate_log(&mut e, raw.log);
    let webhooks = webhook::validate_webhook_list(&mut e, raw.webhook);
    let webhook_retry = webhook::validate_webhooks(&mut e, raw.webhooks);
    let node = node::validate_node(&mut e, raw.node);
    check_twilio_exposure(&mut e, &http, &twilio);
    let pairs = rtp.ports.pairs();
    if calls.max_concurrent > pairs {
        e.push(
            "calls.max_concurrent",
            format!(
                "{} calls need {} RTP/RTCP port pairs but rtp.ports {} holds only {pairs}",
                calls.max_concurrent, calls.max_concurrent, rtp.ports
            ),
        );
    }
    let config = Config {
        sip,
        rtp,
        calls,
        audio,
        jitter,
        recording,
        store,
        http,
        twilio,
        agent,
        routes,
        log,
        webhooks,
        webhook_retry,
        node,
    };
    if e.0.is_empty() { Ok(config) } else { Err(e.0) }
}

/// What the sections' tests share: error inspection and throwaway files.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod test_support {
    use std::path::{Path, PathBuf};

    use super::{Config, ConfigError, FieldError};

    /// The field errors of a configuration that must not validate.
    pub(super) fn invalid(toml: &str) -> Vec<FieldError> {
        match Config::from_toml_str(toml) {
            Err(ConfigError::Invalid(errors)) => errors,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    /// The dotted paths of `errors`, in order.
    pub(super) fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    /// `path` as a TOML string value.
    pub(super) fn toml_path(path: &Path) -> String {
        format!("{:?}", path.display().to_string())
    }

    /// A directory of its own for one test (tests run in parallel), removed on drop.
    pub(super) struct TempDir(PathBuf);

    impl TempDir {
        pub(super) fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("earshot-config-test-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Writes `contents` to `name` in the directory.
        pub(super) fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        /// Writes a file that passes the WAV check: a RIFF/WAVE header and some bytes.
        pub(super) fn wav(&self, name: &str) -> PathBuf {
            let mut bytes = b"RIFF\0\0\0\0WAVE".to_vec();
            bytes.extend_from_slice(&[0; 32]);
            self.file(name, &bytes)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::test_support::{invalid, paths};
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.sip.listen, "0.0.0.0:5060".parse().unwrap());
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.rtp.ports,
            PortRange {
                start: 10000,
                end: 20000
            }
        );
        assert_eq!(
            config.sip.user_agent,
            format!("earshot/{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            config
                .sip
                .allow
                .iter()
                .any(|c| c.contains("127.0.0.1".parse().unwrap()))
        );
        assert!(
            config
                .sip
                .allow
                .iter()
                .any(|c| c.contains("::1".parse().unwrap()))
        );
        assert_eq!(config.sip.allow.len(), 2);
    }

    #[test]
    fn shipped_config_toml_validates_and_equals_the_defaults() {
        let shipped = Config::from_toml_str(include_str!("../../config.toml")).unwrap();
        // The file sets every key to its default; optional keys are shown commented out.
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let errors = invalid(
            r#"
            [sip]
            allow = ["127.0.0.0/8", "::1", "10.0.0.0/33"]
            [rtp]
            ports = "10001-20000"
            [http]
            listen = "0.0.0.0:8080"
            "#,
        );
        assert_eq!(paths(&errors), ["sip.allow[2]", "rtp.ports", "http.token"]);
        assert_eq!(
            errors[0].to_string(),
            r#"sip.allow[2]: "10.0.0.0/33" is not a CIDR (prefix longer than 32)"#
        );
        assert_eq!(
            errors[2].reason,
            "required when http.listen is not a loopback address"
        );
    }

    #[test]
    fn invalid_display_lists_one_field_per_line() {
        let err = Config::from_toml_str("[rtp]\nports = \"5\"\nlearn_packets = 0\n").unwrap_err();
        let text = err.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().next().unwrap().starts_with("rtp.ports: "));
        assert!(text.contains("rtp.learn_packets: 0 is out of range (1..=100)"));
    }
}
