//! Typed configuration: the TOML file, its defaults and its validation.
//!
//! Loading takes two passes. Serde first reads the file into a raw form where every key is
//! optional and anything that needs checking is still a string; a TOML syntax or type error
//! stops there and is reported with the key's dotted path, line and column. [`validate`] then
//! turns the raw form into [`Config`], collecting *every* invalid field
//! (`sip.allow[2]: "10.0.0.0/33" is not a CIDR (prefix longer than 32)`), so one run of
//! `earshot check-config` shows all mistakes instead of the first. Past this module nothing
//! re-checks the configuration: the types ([`Cidr`], [`PortRange`], [`HostPort`], [`Secret`])
//! carry what was checked.
//!
//! Every key has a default, so an empty file is a valid configuration; unknown keys are errors,
//! so a typo never silently falls back to a default. Relative paths are resolved against the
//! working directory (the systemd unit sets it to the state directory).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::media::jitter::JitterConfig;

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
    /// `[log]`: log filtering and output format.
    pub log: LogConfig,
}

/// `[sip]`: the SIP user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipConfig {
    /// Address SIP listens on, for both UDP and TCP, because trunks use either.
    pub listen: SocketAddr,
    /// Address advertised in Via, Contact and SDP when the box sits behind NAT; `None` uses the
    /// address of the local socket, which is only right when the box is directly reachable.
    pub public_addr: Option<HostPort>,
    /// Source networks allowed to send SIP. Everything else is dropped unanswered, so the
    /// appliance is invisible to SIP scanners.
    pub allow: Vec<Cidr>,
    /// `User-Agent` / `Server` header value; some trunks whitelist or log it.
    pub user_agent: String,
    /// Largest SIP message accepted; bounds per-message memory against hostile peers.
    pub max_message_bytes: usize,
    /// Cap on concurrent inbound TCP connections, so a flood cannot exhaust file descriptors.
    pub max_tcp_connections: usize,
    /// TCP connections idle this long are closed, reclaiming slots from vanished peers.
    pub tcp_idle_timeout_secs: u64,
    /// Our SIP domain (host part of our own URIs); `None` uses the advertised address.
    pub domain: Option<String>,
    /// Trunks to register with (`[[sip.trunk]]`); empty means only direct SIP calls are taken.
    pub trunks: Vec<Trunk>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5060)),
            public_addr: None,
            allow: vec![
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    prefix: 8,
                },
                Cidr {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix: 128,
                },
            ],
            user_agent: concat!("earshot/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_message_bytes: 65535,
            max_tcp_connections: 256,
            tcp_idle_timeout_secs: 120,
            domain: None,
            trunks: Vec::new(),
        }
    }
}

/// One `[[sip.trunk]]`: a provider we REGISTER with and take calls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// Unique name; it appears in logs, the API and the store, so it is kept short and plain.
    pub name: String,
    /// Registrar host and optional port (a leading `sip:` in the file is accepted and dropped).
    pub registrar: HostPort,
    /// Transport used towards this registrar; providers differ.
    pub transport: Transport,
    /// User part of our address of record.
    pub username: String,
    /// Digest password; a [`Secret`] so it never reaches a log through `Debug`.
    pub password: Secret,
    /// Digest user name when the provider's differs from `username`; `None` uses `username`.
    pub auth_username: Option<String>,
    /// Domain of our address of record; defaults to the registrar host, which most providers use.
    pub domain: String,
    /// Registration lifetime we ask for; we refresh before it runs out.
    pub expires_secs: u32,
    /// User part of our Contact; `None` uses `username`. Some providers route on it.
    pub contact_user: Option<String>,
}

/// A transport for SIP signalling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SIP over UDP (RFC 3261 §18), the default most trunks expect.
    Udp,
    /// SIP over TCP, for providers that require it or messages too large for UDP.
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// `[rtp]`: media streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpConfig {
    /// UDP ports for RTP (even) and RTCP (odd); the firewall must let these through.
    pub ports: PortRange,
    /// Hang up after this many seconds without media, so dead calls do not hold a slot;
    /// 0 disables the check.
    pub silence_timeout_secs: u64,
    /// Consecutive packets from one new source before symmetric RTP switches to it; resists
    /// hijacking by a stray packet while still following NAT rebinding.
    pub learn_packets: u16,
    /// Seconds between RTCP reports we send.
    pub rtcp_interval_secs: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            ports: PortRange {
                start: 10000,
                end: 20000,
            },
            silence_timeout_secs: 30,
            learn_packets: 4,
            rtcp_interval_secs: 5,
        }
    }
}

/// `[calls]`: admission and per-call limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsConfig {
    /// Calls beyond this are refused (486 Busy Here / stream closed) to protect the box.
    pub max_concurrent: usize,
    /// Calls are hung up after this many seconds, so a stuck call ends; 0 means no limit.
    pub max_duration_secs: u64,
    /// WAV file played to each caller on answer; checked to exist when loading.
    pub greeting: Option<PathBuf>,
    /// Milliseconds of ringing (180) before the answer; some carriers expect a ring before
    /// the 200 OK, and callers may cancel meanwhile. 0 answers at once.
    pub ring_ms: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            max_concurrent: 100,
            max_duration_secs: 14400,
            greeting: None,
            ring_ms: 0,
        }
    }
}

/// `[audio]`: live playout on the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// Which output device plays calls.
    pub output: AudioOutput,
    /// Whether new calls start audible; each call can be toggled through the API.
    pub listen: bool,
    /// Device period (callback size) asked of the host, in ms; 0 leaves it to the device.
    /// Shorter periods mean lower latency and more wake-ups.
    pub period_ms: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            output: AudioOutput::Default,
            listen: true,
            period_ms: 10,
        }
    }
}

/// Where live call audio is played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutput {
    /// The host's default output device.
    Default,
    /// No playout at all (a recorder-only box, or CI without a sound card).
    None,
    /// The output device with this id (`alsa:hw:1,0`) or name, as listed by `earshot devices`.
    Device(String),
}

/// `[recording]`: WAV recordings of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    /// Whether calls are recorded at all.
    pub enabled: bool,
    /// Folder for the WAV files.
    pub dir: PathBuf,
    /// Recordings older than this many days are deleted; 0 keeps them forever.
    pub keep_days: u32,
    /// Oldest recordings are deleted beyond this total size in MiB; 0 means no limit.
    pub max_total_mb: u64,
    /// New recordings are not started when the disk has less than this many MiB free, so a
    /// full disk never takes the store down with it.
    pub min_free_mb: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: true,
            dir: PathBuf::from("recordings"),
            keep_days: 30,
            max_total_mb: 0,
            min_free_mb: 200,
        }
    }
}

/// `[store]`: the embedded database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The redb file holding call history and state.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("earshot.redb"),
        }
    }
}

/// `[http]`: the REST API and web console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address the API listens on; loopback by default so nothing is exposed by accident.
    pub listen: SocketAddr,
    /// Bearer token the API demands; required whenever `listen` is not loopback.
    pub token: Option<Secret>,
    /// Largest request body accepted, bounding memory per request.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            token: None,
            max_body_bytes: 65536,
        }
    }
}

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

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` `EnvFilter` directive (`info`, `earshot::sip=debug,info`); `RUST_LOG`
    /// overrides it.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text; colour and timestamps only on a terminal, plain under journald.
    Auto,
    /// Plain text always.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A password or token. `Debug` prints `<redacted>` so secrets never reach a log by accident;
/// read the value with [`Secret::expose`] exactly where it is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An IPv4 or IPv6 network: an address with its host bits clear, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address; host bits are always zero (checked at construction).
    addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

/// Why a string is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("not an IP address")]
    BadAddress,
    /// The part after `/` is not a number.
    #[error("prefix is not a number")]
    BadPrefix,
    /// The prefix is longer than the address.
    #[error("prefix longer than {max}")]
    PrefixTooLong {
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits beyond the prefix are set, which usually means a mistyped network.
    #[error("host bits set; did you mean {network}?")]
    HostBitsSet {
        /// The network with the host bits cleared.
        network: String,
    },
}

impl Cidr {
    /// The network `addr/prefix`; fails when the prefix is too long or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong { max });
        }
        let network = mask(addr, prefix);
        if network != addr {
            return Err(CidrError::HostBitsSet {
                network: Cidr {
                    addr: network,
                    prefix,
                }
                .to_string(),
            });
        }
        Ok(Cidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports for IPv4 peers) match IPv4 networks and vice versa.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip.to_canonical()) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (_, ip) => ip,
        };
        let same_family = self.addr.is_ipv4() == ip.is_ipv4();
        same_family && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `addr/prefix`; a bare address is a single host (/32 or /128).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress)?;
        let prefix = match prefix {
            None => max_prefix(addr),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                // More digits than fit in a u8 are certainly too long, not "not a number".
                p.parse().unwrap_or(u8::MAX)
            }
            Some(_) => return Err(CidrError::BadPrefix),
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// 32 for IPv4, 128 for IPv6.
fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit past `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

/// An inclusive UDP port range for media, starting on an even port so RTP/RTCP pairs line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port (even, at least 1024).
    pub start: u16,
    /// Last port, inclusive.
    pub end: u16,
}

impl PortRange {
    /// How many RTP/RTCP pairs (one per call) fit in the range.
    pub fn pairs(&self) -> usize {
        let ports = usize::from(self.end) - usize::from(self.start) + 1;
        // An odd last port has no RTCP partner and is left unused.
        ports / 2
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// Parses `START-END`.
    fn from_str(s: &str) -> Result<PortRange, String> {
        let (start, end) = s.split_once('-').ok_or_else(|| {
            format!("{s:?} is not a port range (expected START-END, e.g. \"10000-20000\")")
        })?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{s:?} is not a port range ({:?} is not a port)", p.trim()))
        };
        let (start, end) = (port(start)?, port(end)?);
        if start < 1024 {
            return Err(format!("{s:?} starts below 1024 (privileged ports)"));
        }
        if start % 2 != 0 {
            return Err(format!(
                "{s:?} must start on an even port (RTP even, RTCP odd)"
            ));
        }
        if end <= start {
            return Err(format!(
                "{s:?} must hold at least 2 ports (one RTP/RTCP pair)"
            ));
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A host (IP address or DNS name) with an optional port: `pbx.example.com:5080`,
/// `203.0.113.7`, `[2001:db8::1]:5060`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// IP literal (IPv6 without brackets) or DNS name.
    pub host: String,
    /// Port, when one was given; SIP's default (5060) applies otherwise.
    pub port: Option<u16>,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPort, String> {
        let bad = |why: &str| format!("{s:?} is not host[:port] ({why})");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address inside [ ]"));
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("junk after ']'"))?,
                    ),
                ),
            }
        } else if s.parse::<Ipv6Addr>().is_ok() {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        check_host(host).map_err(|why| bad(&why))?;
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => Some(p),
                _ => return Err(bad(&format!("bad port {p:?}"))),
            },
        };
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Checks that `host` is an IP literal or a well-formed DNS name (RFC 1123 labels).
fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() || host.len() > 253 {
        return Err("host name must be 1 to 253 characters".to_owned());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(format!("{host:?} is not a valid host name"));
        }
    }
    Ok(())
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
        let raw: RawConfig = toml::from_str(s).map_err(|e| syntax_error(s, &e))?;
        validate(raw).map_err(ConfigError::Invalid)
    }
}

/// Turns a TOML error into [`ConfigError::Syntax`], finding the key path at its position.
fn syntax_error(input: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map(|s| s.start).unwrap_or(0);
    let (line, column) = line_column(input, offset);
    ConfigError::Syntax {
        path: err.span().and_then(|span| key_path_at(input, span.start)),
        line,
        column,
        message: err.message().to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `input`.
fn line_column(input: &str, offset: usize) -> (usize, usize) {
    let before = input.get(..offset.min(input.len())).unwrap_or(input);
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted path of the innermost key or value covering byte `offset`, if the document
/// parses as TOML (type errors happen after parsing, so they always get a path).
fn key_path_at(input: &str, offset: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(input).ok()?;
    let mut best: Option<(usize, String)> = None;
    search_table(doc.get_ref(), "", offset, &mut best);
    best.map(|(_, path)| path)
}

/// Depth-first search for the smallest key or value span covering `offset`.
fn search_table(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        consider(key.span(), &path, offset, best);
        search_value(value, &path, offset, best);
    }
}

/// [`search_table`] for one value: the value itself, then what it contains.
fn search_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    path: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    consider(value.span(), path, offset, best);
    match value.get_ref() {
        toml::de::DeValue::Table(table) => search_table(table, path, offset, best),
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                search_value(item, &format!("{path}[{i}]"), offset, best);
            }
        }
        _ => {}
    }
}

/// Records `path` as the best match if `span` covers `offset` and is the smallest so far.
fn consider(
    span: std::ops::Range<usize>,
    path: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    let len = span.end.saturating_sub(span.start);
    let covers = span.start <= offset && offset < span.start + len.max(1);
    if covers && best.as_ref().is_none_or(|(best_len, _)| len < *best_len) {
        *best = Some((len, path.to_owned()));
    }
}

/// The file as written: every key optional, checked values still strings.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    sip: RawSip,
    rtp: RawRtp,
    calls: RawCalls,
    audio: RawAudio,
    jitter: RawJitter,
    recording: RawRecording,
    store: RawStore,
    http: RawHttp,
    twilio: RawTwilio,
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSip {
    listen: Option<String>,
    public_addr: Option<String>,
    allow: Option<Vec<String>>,
    user_agent: Option<String>,
    max_message_bytes: Option<usize>,
    max_tcp_connections: Option<usize>,
    tcp_idle_timeout_secs: Option<u64>,
    domain: Option<String>,
    trunk: Vec<RawTrunk>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTrunk {
    name: Option<String>,
    registrar: Option<String>,
    transport: Option<String>,
    username: Option<String>,
    password: Option<String>,
    auth_username: Option<String>,
    domain: Option<String>,
    expires_secs: Option<u32>,
    contact_user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRtp {
    ports: Option<String>,
    silence_timeout_secs: Option<u64>,
    learn_packets: Option<u16>,
    rtcp_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCalls {
    max_concurrent: Option<usize>,
    max_duration_secs: Option<u64>,
    greeting: Option<PathBuf>,
    ring_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAudio {
    output: Option<String>,
    listen: Option<bool>,
    period_ms: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawJitter {
    min_delay_ms: Option<u32>,
    max_delay_ms: Option<u32>,
    initial_delay_ms: Option<u32>,
    coverage_permille: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRecording {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    keep_days: Option<u32>,
    max_total_mb: Option<u64>,
    min_free_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    token: Option<String>,
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTwilio {
    enabled: Option<bool>,
    auth_token: Option<String>,
    public_url: Option<String>,
    handshake_timeout_secs: Option<u64>,
    fallback: Option<String>,
    fallback_say: Option<String>,
    fallback_number: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
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

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address (expected IP:PORT, e.g. \"0.0.0.0:5060\")"))
}

/// Values that go into SIP headers verbatim must not be able to break the message.
fn header_safe(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else if s.chars().any(char::is_control) {
        Err(format!("{s:?} contains control characters"))
    } else {
        Ok(s.to_owned())
    }
}

/// The user part of a SIP URI: no separators, no whitespace, no control characters.
fn sip_user(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else if s
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "@:;<>\"".contains(c))
    {
        Err(format!(
            "{s:?} is not a SIP user (no spaces or any of @ : ; < > \")"
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// A bearer token or auth token: non-empty, no whitespace (it travels in headers).
fn token(s: &str, min_len: usize) -> Result<Secret, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain whitespace".to_owned())
    } else if s.chars().count() < min_len {
        Err(format!("must be at least {min_len} characters"))
    } else {
        Ok(Secret::new(s))
    }
}

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

/// Checks that `path` is a readable file starting with a RIFF/WAVE header.
fn check_wav(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| format!("{shown}: cannot open ({e})"))?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head)
        .map_err(|_| format!("{shown}: too short to be a WAV file"))?;
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE".as_slice()) {
        Ok(())
    } else {
        Err(format!("{shown}: not a WAV file (no RIFF/WAVE header)"))
    }
}

/// Raw form → [`Config`], collecting every invalid field.
fn validate(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut e = Errors::default();
    let config = Config {
        sip: validate_sip(&mut e, raw.sip),
        rtp: validate_rtp(&mut e, raw.rtp),
        calls: validate_calls(&mut e, raw.calls),
        audio: validate_audio(&mut e, raw.audio),
        jitter: validate_jitter(&mut e, raw.jitter),
        recording: validate_recording(&mut e, raw.recording),
        store: StoreConfig {
            path: non_empty_path(
                &mut e,
                "store.path",
                raw.store.path,
                StoreConfig::default().path,
            ),
        },
        http: validate_http(&mut e, raw.http),
        twilio: validate_twilio(&mut e, raw.twilio),
        log: validate_log(&mut e, raw.log),
    };
    let pairs = config.rtp.ports.pairs();
    if config.calls.max_concurrent > pairs {
        e.push(
            "calls.max_concurrent",
            format!(
                "{} calls need {} RTP/RTCP port pairs but rtp.ports {} holds only {pairs}",
                config.calls.max_concurrent, config.calls.max_concurrent, config.rtp.ports
            ),
        );
    }
    if e.0.is_empty() { Ok(config) } else { Err(e.0) }
}

fn validate_sip(e: &mut Errors, raw: RawSip) -> SipConfig {
    let d = SipConfig::default();
    let allow = match raw.allow {
        None => d.allow,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.parse::<Cidr>()
                    .map_err(|err| {
                        e.push(
                            format!("sip.allow[{i}]"),
                            format!("{s:?} is not a CIDR ({err})"),
                        )
                    })
                    .ok()
            })
            .collect(),
    };
    let mut trunks: Vec<Trunk> = Vec::with_capacity(raw.trunk.len());
    for (i, raw_trunk) in raw.trunk.into_iter().enumerate() {
        let trunk = validate_trunk(e, &format!("sip.trunk[{i}]"), raw_trunk);
        if let Some(first) = trunks
            .iter()
            .position(|t| !trunk.name.is_empty() && t.name == trunk.name)
        {
            e.push(
                format!("sip.trunk[{i}].name"),
                format!("{:?} is already used by sip.trunk[{first}]", trunk.name),
            );
        }
        trunks.push(trunk);
    }
    SipConfig {
        listen: e.parse("sip.listen", raw.listen, d.listen, socket_addr),
        public_addr: e.parse_opt("sip.public_addr", raw.public_addr, HostPort::from_str),
        allow,
        user_agent: e.parse("sip.user_agent", raw.user_agent, d.user_agent, header_safe),
        max_message_bytes: e.ranged(
            "sip.max_message_bytes",
            raw.max_message_bytes,
            d.max_message_bytes,
            1024..=65535,
        ),
        max_tcp_connections: e.ranged(
            "sip.max_tcp_connections",
            raw.max_tcp_connections,
            d.max_tcp_connections,
            1..=65536,
        ),
        tcp_idle_timeout_secs: e.ranged(
            "sip.tcp_idle_timeout_secs",
            raw.tcp_idle_timeout_secs,
            d.tcp_idle_timeout_secs,
            1..=86400,
        ),
        domain: e.parse_opt("sip.domain", raw.domain, |s| {
            check_host(s).map(|()| s.to_owned())
        }),
        trunks,
    }
}

fn validate_trunk(e: &mut Errors, at: &str, raw: RawTrunk) -> Trunk {
    let path = |key: &str| format!("{at}.{key}");
    let name = e.required(&path("name"), raw.name);
    if !name.is_empty()
        && (name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        e.push(
            path("name"),
            format!("{name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"),
        );
    }
    let registrar_text = e.required(&path("registrar"), raw.registrar);
    let registrar = if registrar_text.is_empty() {
        None
    } else {
        parse_registrar(&registrar_text)
            .map_err(|reason| e.push(path("registrar"), reason))
            .ok()
    };
    let username = e.required(&path("username"), raw.username);
    if !username.is_empty()
        && let Err(reason) = sip_user(&username)
    {
        e.push(path("username"), reason);
    }
    let password = Secret::new(e.required(&path("password"), raw.password));
    let domain = match raw.domain {
        Some(d) => match check_host(&d) {
            Ok(()) => d,
            Err(reason) => {
                e.push(path("domain"), reason);
                d
            }
        },
        None => registrar
            .as_ref()
            .map(|r| r.host.clone())
            .unwrap_or_default(),
    };
    Trunk {
        name,
        registrar: registrar.unwrap_or(HostPort {
            host: String::new(),
            port: None,
        }),
        transport: e.parse(
            &path("transport"),
            raw.transport,
            Transport::Udp,
            |s| match s {
                "udp" => Ok(Transport::Udp),
                "tcp" => Ok(Transport::Tcp),
                _ => Err(format!(
                    "{s:?} is not a transport (expected \"udp\" or \"tcp\")"
                )),
            },
        ),
        username,
        password,
        auth_username: e.parse_opt(&path("auth_username"), raw.auth_username, header_safe),
        domain,
        expires_secs: e.ranged(&path("expires_secs"), raw.expires_secs, 3600, 60..=86400),
        contact_user: e.parse_opt(&path("contact_user"), raw.contact_user, sip_user),
    }
}

/// `host[:port]` or `sip:host[:port]`.
fn parse_registrar(s: &str) -> Result<HostPort, String> {
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("sips:") {
        return Err(format!(
            "{s:?}: sips (TLS) is not supported; use sip: with udp or tcp"
        ));
    }
    let rest = if lower.starts_with("sip:") {
        s.get(4..).unwrap_or_default()
    } else {
        s
    };
    rest.parse()
}

fn validate_rtp(e: &mut Errors, raw: RawRtp) -> RtpConfig {
    let d = RtpConfig::default();
    RtpConfig {
        ports: e.parse("rtp.ports", raw.ports, d.ports, PortRange::from_str),
        silence_timeout_secs: raw.silence_timeout_secs.unwrap_or(d.silence_timeout_secs),
        learn_packets: e.ranged(
            "rtp.learn_packets",
            raw.learn_packets,
            d.learn_packets,
            1..=100,
        ),
        rtcp_interval_secs: e.ranged(
            "rtp.rtcp_interval_secs",
            raw.rtcp_interval_secs,
            d.rtcp_interval_secs,
            1..=60,
        ),
    }
}

fn validate_calls(e: &mut Errors, raw: RawCalls) -> CallsConfig {
    let d = CallsConfig::default();
    if let Some(greeting) = &raw.greeting
        && let Err(reason) = check_wav(greeting)
    {
        e.push("calls.greeting", reason);
    }
    CallsConfig {
        max_concurrent: e.ranged(
            "calls.max_concurrent",
            raw.max_concurrent,
            d.max_concurrent,
            1..=10000,
        ),
        max_duration_secs: raw.max_duration_secs.unwrap_or(d.max_duration_secs),
        greeting: raw.greeting,
        ring_ms: e.ranged("calls.ring_ms", raw.ring_ms, d.ring_ms, 0..=60_000),
    }
}

fn validate_audio(e: &mut Errors, raw: RawAudio) -> AudioConfig {
    let d = AudioConfig::default();
    AudioConfig {
        output: e.parse("audio.output", raw.output, d.output, |s| match s {
            "default" => Ok(AudioOutput::Default),
            "none" => Ok(AudioOutput::None),
            "" => Err("must not be empty (use \"default\", \"none\" or a device name)".to_owned()),
            name => Ok(AudioOutput::Device(name.to_owned())),
        }),
        listen: raw.listen.unwrap_or(d.listen),
        period_ms: e.ranged("audio.period_ms", raw.period_ms, d.period_ms, 0..=100),
    }
}

fn validate_jitter(e: &mut Errors, raw: RawJitter) -> JitterConfig {
    let d = JitterConfig::default();
    let max = e.ranged(
        "jitter.max_delay_ms",
        raw.max_delay_ms,
        d.max_delay_ms,
        40..=2000,
    );
    let within_max = |e: &mut Errors, path: &str, raw: Option<u32>, default: u32| {
        let range = 0..=1000;
        let value = e.ranged(path, raw, default, range.clone());
        if range.contains(&value) && value > max {
            e.push(
                path,
                format!("{value} is above jitter.max_delay_ms ({max})"),
            );
        }
        value
    };
    JitterConfig {
        min_delay_ms: within_max(e, "jitter.min_delay_ms", raw.min_delay_ms, d.min_delay_ms),
        initial_delay_ms: within_max(
            e,
            "jitter.initial_delay_ms",
            raw.initial_delay_ms,
            d.initial_delay_ms,
        ),
        max_delay_ms: max,
        coverage_permille: e.ranged(
            "jitter.coverage_permille",
            raw.coverage_permille,
            d.coverage_permille,
            500..=999,
        ),
        // Raised by the buffer to hold `max_delay_ms` (plus margin) whatever is set here.
        max_packets: d.max_packets,
    }
}

fn validate_recording(e: &mut Errors, raw: RawRecording) -> RecordingConfig {
    let d = RecordingConfig::default();
    RecordingConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        dir: non_empty_path(e, "recording.dir", raw.dir, d.dir),
        keep_days: raw.keep_days.unwrap_or(d.keep_days),
        max_total_mb: raw.max_total_mb.unwrap_or(d.max_total_mb),
        min_free_mb: raw.min_free_mb.unwrap_or(d.min_free_mb),
    }
}

fn validate_http(e: &mut Errors, raw: RawHttp) -> HttpConfig {
    let d = HttpConfig::default();
    let listen = e.parse("http.listen", raw.listen, d.listen, socket_addr);
    let token_given = raw.token.is_some();
    let token = e.parse_opt("http.token", raw.token, |s| token(s, 16));
    if !token_given && !listen.ip().to_canonical().is_loopback() {
        e.push(
            "http.token",
            "required when http.listen is not a loopback address",
        );
    }
    HttpConfig {
        listen,
        token,
        max_body_bytes: e.ranged(
            "http.max_body_bytes",
            raw.max_body_bytes,
            d.max_body_bytes,
            1024..=16 * 1024 * 1024,
        ),
    }
}

fn validate_twilio(e: &mut Errors, raw: RawTwilio) -> TwilioConfig {
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

fn validate_log(e: &mut Errors, raw: RawLog) -> LogConfig {
    let d = LogConfig::default();
    LogConfig {
        level: e.parse("log.level", raw.level, d.level, |s| {
            if s.trim().is_empty() {
                return Err("must not be empty (e.g. \"info\")".to_owned());
            }
            tracing_subscriber::EnvFilter::try_new(s)
                .map(|_| s.to_owned())
                .map_err(|err| format!("{s:?} is not a log filter ({err})"))
        }),
        format: e.parse("log.format", raw.format, d.format, |s| match s {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{s:?} is not a log format (expected \"auto\", \"text\" or \"json\")"
            )),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn invalid(toml: &str) -> Vec<FieldError> {
        match Config::from_toml_str(toml) {
            Err(ConfigError::Invalid(errors)) => errors,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

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
        let shipped = Config::from_toml_str(include_str!("../config.toml")).unwrap();
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

    #[test]
    fn audio_period_is_bounded_and_zero_means_the_device_default() {
        let err = Config::from_toml_str("[audio]\nperiod_ms = 250\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("audio.period_ms: 250 is out of range (0..=100)"),
            "{err}"
        );
        let config = Config::from_toml_str("[audio]\nperiod_ms = 0\n").unwrap();
        assert_eq!(config.audio.period_ms, 0);
        assert_eq!(Config::from_toml_str("").unwrap().audio.period_ms, 10);
    }

    #[test]
    fn jitter_settings_are_bounded_and_kept_below_the_maximum_delay() {
        let config = Config::from_toml_str(
            "[jitter]\nmin_delay_ms = 40\nmax_delay_ms = 300\ninitial_delay_ms = 60\n\
             coverage_permille = 990\n",
        )
        .unwrap();
        assert_eq!(
            config.jitter,
            JitterConfig {
                min_delay_ms: 40,
                max_delay_ms: 300,
                initial_delay_ms: 60,
                coverage_permille: 990,
                ..JitterConfig::default()
            }
        );
        assert_eq!(
            Config::from_toml_str("").unwrap().jitter,
            JitterConfig::default()
        );
        let err = Config::from_toml_str(
            "[jitter]\nmin_delay_ms = 200\nmax_delay_ms = 100\ncoverage_permille = 1000\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("jitter.min_delay_ms: 200 is above jitter.max_delay_ms (100)"),
            "{text}"
        );
        assert!(
            text.contains("jitter.coverage_permille: 1000 is out of range (500..=999)"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path_and_line() {
        let err =
            Config::from_toml_str("[sip]\nlisten = \"0.0.0.0:5060\"\nlisen = \"x\"\n").unwrap_err();
        match &err {
            ConfigError::Syntax {
                path,
                line,
                message,
                ..
            } => {
                assert_eq!(path.as_deref(), Some("sip.lisen"));
                assert_eq!(*line, 3);
                assert!(message.contains("unknown field `lisen`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(
            err.to_string().starts_with("sip.lisen: line 3, column 1: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_section_and_unknown_trunk_key_are_rejected() {
        let err = Config::from_toml_str("[sipp]\nlisten = \"x\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { path: Some(p), .. } if p == "sipp"),
            "{err:?}"
        );
        let err = Config::from_toml_str(
            "[[sip.trunk]]\nname = \"a\"\n[[sip.trunk]]\nname = \"b\"\npasword = \"x\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { path: Some(p), line: 5, .. } if p == "sip.trunk[1].pasword"),
            "{err:?}"
        );
    }

    #[test]
    fn type_error_reports_path_and_line() {
        let err = Config::from_toml_str("\n[calls]\nmax_concurrent = \"many\"\n").unwrap_err();
        match err {
            ConfigError::Syntax {
                path, line, column, ..
            } => {
                assert_eq!(path.as_deref(), Some("calls.max_concurrent"));
                assert_eq!((line, column), (3, 18));
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let err = Config::from_toml_str("[sip]\nallow = [\"::1\", 5]\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { path: Some(p), .. } if p == "sip.allow[1]"),
            "{err:?}"
        );
    }

    #[test]
    fn toml_syntax_error_reports_line() {
        let err = Config::from_toml_str("[sip]\nlisten = \n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn cidr_parses_networks_and_bare_addresses() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!((net.addr(), net.prefix()), ("10.0.0.0".parse().unwrap(), 8));
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix(), 32);
        assert_eq!("2001:db8::1".parse::<Cidr>().unwrap().prefix(), 128);
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn cidr_rejects_bad_input_with_a_reason() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { max: 32 })
        );
        assert_eq!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { max: 128 })
        );
        assert_eq!(
            "10.0.0.0/999".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { max: 32 })
        );
        assert_eq!("10.0.0/8".parse::<Cidr>(), Err(CidrError::BadAddress));
        assert_eq!("10.0.0.0/".parse::<Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!("10.0.0.0/-1".parse::<Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>(),
            Err(CidrError::HostBitsSet {
                network: "10.0.0.0/8".to_owned()
            })
        );
    }

    #[test]
    fn cidr_contains_checks_the_prefix() {
        let net: Cidr = "192.168.1.0/24".parse().unwrap();
        assert!(net.contains("192.168.1.0".parse().unwrap()));
        assert!(net.contains("192.168.1.255".parse().unwrap()));
        assert!(!net.contains("192.168.2.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn cidr_matches_ipv4_mapped_ipv6_addresses() {
        let v4: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(v4.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!v4.contains("::ffff:10.0.0.1".parse().unwrap()));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains("10.1.2.3".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config::from_toml_str(
            r#"
            [[sip.trunk]]
            name = "main"
            registrar = "sip:pbx.example.com:5080"
            username = "alice"
            password = "hunter2-trunk"
            [http]
            listen = "0.0.0.0:8080"
            token = "hunter2-http-token-0123"
            [twilio]
            enabled = true
            auth_token = "hunter2-twilio"
            public_url = "https://calls.example.com/"
            "#,
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(config.sip.trunks[0].password.expose(), "hunter2-trunk");
        assert!(!format!("{:?}", config.sip.trunks[0]).contains("hunter2"));
        assert_eq!(
            config.twilio.public_url.as_deref(),
            Some("https://calls.example.com")
        );
    }

    #[test]
    fn http_token_is_required_beyond_loopback() {
        for listen in [
            "127.0.0.1:8080",
            "127.0.0.53:80",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            let toml = format!("[http]\nlisten = \"{listen}\"\n");
            assert!(Config::from_toml_str(&toml).is_ok(), "{listen}");
        }
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.168.1.5:8080"] {
            let errors = invalid(&format!("[http]\nlisten = \"{listen}\"\n"));
            assert_eq!(paths(&errors), ["http.token"], "{listen}");
        }
        let ok = "[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"0123456789abcdef\"\n";
        assert!(Config::from_toml_str(ok).is_ok());
        let short = invalid("[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"short\"\n");
        assert_eq!(paths(&short), ["http.token"]);
        assert_eq!(short[0].reason, "must be at least 16 characters");
    }

    #[test]
    fn trunk_defaults_and_registrar_forms() {
        let config = Config::from_toml_str(
            r#"
            [[sip.trunk]]
            name = "a"
            registrar = "sip:pbx.example.com"
            username = "alice"
            password = "pw"
            [[sip.trunk]]
            name = "b"
            registrar = "[2001:db8::5]:5080"
            transport = "tcp"
            username = "bob"
            password = "pw"
            domain = "voip.example.net"
            expires_secs = 600
            "#,
        )
        .unwrap();
        let [a, b] = &config.sip.trunks[..] else {
            panic!("two trunks")
        };
        assert_eq!(
            a.registrar,
            HostPort {
                host: "pbx.example.com".into(),
                port: None
            }
        );
        assert_eq!(a.domain, "pbx.example.com");
        assert_eq!((a.transport, a.expires_secs), (Transport::Udp, 3600));
        assert_eq!(b.registrar.to_string(), "[2001:db8::5]:5080");
        assert_eq!(b.domain, "voip.example.net");
        assert_eq!((b.transport, b.expires_secs), (Transport::Tcp, 600));
    }

    #[test]
    fn trunk_errors_name_the_trunk_and_key() {
        let errors = invalid(
            r#"
            [[sip.trunk]]
            name = "dup"
            registrar = "pbx.example.com"
            username = "alice"
            password = "pw"
            [[sip.trunk]]
            name = "dup"
            registrar = "sips:pbx.example.com"
            transport = "tls"
            username = "bob smith"
            expires_secs = 10
            "#,
        );
        assert_eq!(
            paths(&errors),
            [
                "sip.trunk[1].registrar",
                "sip.trunk[1].username",
                "sip.trunk[1].password",
                "sip.trunk[1].transport",
                "sip.trunk[1].expires_secs",
                "sip.trunk[1].name",
            ]
        );
        assert_eq!(errors[2].reason, "required");
        assert!(errors[5].reason.contains("already used by sip.trunk[0]"));
    }

    #[test]
    fn host_port_forms() {
        let hp = |s: &str| s.parse::<HostPort>();
        assert_eq!(
            hp("203.0.113.7").unwrap(),
            HostPort {
                host: "203.0.113.7".into(),
                port: None
            }
        );
        assert_eq!(hp("pbx.example.com:5080").unwrap().port, Some(5080));
        assert_eq!(hp("2001:db8::1").unwrap().host, "2001:db8::1");
        assert_eq!(
            hp("[2001:db8::1]:5060").unwrap().to_string(),
            "[2001:db8::1]:5060"
        );
        for bad in [
            "",
            "host:",
            "host:0",
            "host:99999",
            "bad_host",
            "-x.com",
            "[::1",
            "[x]:5",
            "a..b",
        ] {
            assert!(hp(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_range_rules() {
        assert_eq!("10000-10001".parse::<PortRange>().unwrap().pairs(), 1);
        assert_eq!("10000-20000".parse::<PortRange>().unwrap().pairs(), 5000);
        for bad in [
            "10000",
            "10001-20000",
            "1000-2000",
            "10000-10000",
            "20000-10000",
            "a-b",
            "10000-70000",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn max_concurrent_must_fit_the_port_range() {
        let errors = invalid("[rtp]\nports = \"10000-10009\"\n[calls]\nmax_concurrent = 6\n");
        assert_eq!(paths(&errors), ["calls.max_concurrent"]);
        assert!(
            Config::from_toml_str("[rtp]\nports = \"10000-10009\"\n[calls]\nmax_concurrent = 5\n")
                .is_ok()
        );
    }

    #[test]
    fn twilio_requirements_when_enabled() {
        let errors = invalid("[twilio]\nenabled = true\nfallback = \"dial\"\n");
        assert_eq!(
            paths(&errors),
            [
                "twilio.auth_token",
                "twilio.public_url",
                "twilio.fallback_number"
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

    #[test]
    fn greeting_must_be_an_existing_wav() {
        let errors = invalid("[calls]\ngreeting = \"/nonexistent/greeting.wav\"\n");
        assert_eq!(paths(&errors), ["calls.greeting"]);
        let dir = std::env::temp_dir().join(format!("earshot-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wav = dir.join("greeting.wav");
        let mut bytes = b"RIFF\0\0\0\0WAVE".to_vec();
        bytes.extend_from_slice(&[0; 32]);
        std::fs::write(&wav, bytes).unwrap();
        let text = dir.join("greeting.txt");
        std::fs::write(&text, "hello, this is not audio").unwrap();
        let toml = |p: &Path| format!("[calls]\ngreeting = {:?}\n", p.display().to_string());
        assert_eq!(
            Config::from_toml_str(&toml(&wav))
                .unwrap()
                .calls
                .greeting
                .as_deref(),
            Some(wav.as_path())
        );
        assert!(invalid(&toml(&text))[0].reason.contains("not a WAV file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn audio_log_and_paths() {
        let config = Config::from_toml_str(
            "[audio]\noutput = \"USB Speaker\"\nlisten = false\n[log]\nlevel = \"earshot::sip=debug,info\"\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(
            config.audio.output,
            AudioOutput::Device("USB Speaker".into())
        );
        assert!(!config.audio.listen);
        assert_eq!(config.log.format, LogFormat::Json);
        let errors = invalid(
            "[audio]\noutput = \"\"\n[log]\nlevel = \"=[\"\nformat = \"xml\"\n[recording]\ndir = \"\"\n[store]\npath = \"\"\n",
        );
        assert_eq!(
            paths(&errors),
            [
                "audio.output",
                "recording.dir",
                "store.path",
                "log.level",
                "log.format"
            ]
        );
    }

    #[test]
    fn sip_header_values_cannot_inject_lines() {
        let errors = invalid(
            "[sip]\nuser_agent = \"x\\r\\nVia: evil\"\npublic_addr = \"nat box\"\ndomain = \"a_b\"\n",
        );
        assert_eq!(
            paths(&errors),
            ["sip.public_addr", "sip.user_agent", "sip.domain"]
        );
    }
}
