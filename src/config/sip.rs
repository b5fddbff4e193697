//! `[sip]`: the SIP listener, who may reach it, and the `[[sip.trunk]]` registrations.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

use super::net::{Cidr, HostPort, check_host, socket_addr};
use super::secret::Secret;
use super::{Errors, header_safe};

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
    /// Server transactions held at once, in all; beyond it requests get a stateless 503.
    pub max_transactions: usize,
    /// Server transactions held at once for one source IP; beyond it requests are dropped.
    pub max_transactions_per_source: usize,
    /// New INVITEs a second from one source IP, and the burst; the excess gets a stateless 503.
    pub invite_rate_per_source: u32,
    pub invite_burst_per_source: u32,
    /// Responses sent without a transaction (refusals) a second to one source IP.
    pub stateless_responses_per_source: u32,
    /// RFC 4028 session interval earshot asks for and the longest it accepts, in seconds:
    /// a dialog not refreshed within it is ended, so a call whose BYE was lost does not live on.
    pub session_expires_secs: u32,
    /// RFC 4028 Min-SE: shorter intervals are refused with 422 (at least 90, the RFC's floor).
    pub min_se_secs: u32,
    /// Whether a REFER from the far end is accepted (202) and carried out (earshot calls the
    /// target, within `[calls].outbound_allow`); off, it gets 403, so that nobody can turn the
    /// box into a dialer.
    pub accept_refer: bool,
    /// Trunks to register with (`[[sip.trunk]]`); empty means only direct SIP calls are taken.
    pub trunks: Vec<Trunk>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5060)),
            public_addr: None,
            allow: vec![Cidr::LOOPBACK_V4, Cidr::LOOPBACK_V6],
            user_agent: concat!("earshot/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_message_bytes: 65535,
            max_tcp_connections: 256,
            tcp_idle_timeout_secs: 120,
            domain: None,
            max_transactions: 16384,
            max_transactions_per_source: 8192,
            invite_rate_per_source: 50,
            invite_burst_per_source: 100,
            stateless_responses_per_source: 100,
            session_expires_secs: 1800,
            min_se_secs: 90,
            accept_refer: false,
            trunks: Vec::new(),
        }
    }
}

/// `[sip]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSip {
    listen: Option<String>,
    public_addr: Option<String>,
    allow: Option<Vec<String>>,
    user_agent: Option<String>,
    max_message_bytes: Option<usize>,
    max_tcp_connections: Option<usize>,
    tcp_idle_timeout_secs: Option<u64>,
    domain: Option<String>,
    max_transactions: Option<usize>,
    max_transactions_per_source: Option<usize>,
    invite_rate_per_source: Option<u32>,
    invite_burst_per_source: Option<u32>,
    stateless_responses_per_source: Option<u32>,
    session_expires_secs: Option<u32>,
    min_se_secs: Option<u32>,
    accept_refer: Option<bool>,
    trunk: Vec<RawTrunk>,
}

/// A list of CIDRs at `path`; each entry that is not one is reported as `path[i]`.
pub(super) fn cidr_list(e: &mut Errors, path: &str, list: &[String]) -> Vec<Cidr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.parse::<Cidr>()
                .map_err(|err| {
                    e.push(
                        format!("{path}[{i}]"),
                        format!("{s:?} is not a CIDR ({err})"),
                    )
                })
                .ok()
        })
        .collect()
}

pub(super) fn validate_sip(e: &mut Errors, raw: RawSip) -> SipConfig {
    let d = SipConfig::default();
    let allow = match raw.allow {
        None => d.allow,
        Some(list) => cidr_list(e, "sip.allow", &list),
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
    let min_se_secs = e.ranged(
        "sip.min_se_secs",
        raw.min_se_secs,
        d.min_se_secs,
        90..=86400,
    );
    let session_expires_secs = e.ranged(
        "sip.session_expires_secs",
        raw.session_expires_secs,
        d.session_expires_secs,
        90..=86400,
    );
    if session_expires_secs < min_se_secs {
        e.push(
            "sip.session_expires_secs",
            format!("{session_expires_secs} is below sip.min_se_secs ({min_se_secs})"),
        );
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
        max_transactions: e.ranged(
            "sip.max_transactions",
            raw.max_transactions,
            d.max_transactions,
            16..=1_000_000,
        ),
        max_transactions_per_source: e.ranged(
            "sip.max_transactions_per_source",
            raw.max_transactions_per_source,
            d.max_transactions_per_source,
            1..=1_000_000,
        ),
        invite_rate_per_source: e.ranged(
            "sip.invite_rate_per_source",
            raw.invite_rate_per_source,
            d.invite_rate_per_source,
            1..=100_000,
        ),
        invite_burst_per_source: e.ranged(
            "sip.invite_burst_per_source",
            raw.invite_burst_per_source,
            d.invite_burst_per_source,
            1..=100_000,
        ),
        stateless_responses_per_source: e.ranged(
            "sip.stateless_responses_per_source",
            raw.stateless_responses_per_source,
            d.stateless_responses_per_source,
            1..=1_000_000,
        ),
        session_expires_secs,
        min_se_secs,
        accept_refer: raw.accept_refer.unwrap_or(d.accept_refer),
        trunks,
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

/// One `[[sip.trunk]]` as written.
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

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
    fn flood_limits_default_and_are_ranged() {
        let config = Config::from_toml_str("[sip]\ninvite_rate_per_source = 5\n").unwrap();
        assert_eq!(config.sip.invite_rate_per_source, 5);
        assert_eq!(config.sip.max_transactions, 16384);
        let errors = invalid(
            "[sip]\nmax_transactions = 0\nmax_transactions_per_source = 0\n\
             invite_rate_per_source = 0\ninvite_burst_per_source = 0\n\
             stateless_responses_per_source = 0\n",
        );
        assert_eq!(
            paths(&errors),
            [
                "sip.max_transactions",
                "sip.max_transactions_per_source",
                "sip.invite_rate_per_source",
                "sip.invite_burst_per_source",
                "sip.stateless_responses_per_source",
            ]
        );
    }

    #[test]
    fn session_timer_and_refer_settings_default_and_are_checked() {
        let d = Config::from_toml_str("").unwrap().sip;
        assert_eq!(
            (d.session_expires_secs, d.min_se_secs, d.accept_refer),
            (1800, 90, false)
        );
        let errors = invalid("[sip]\nmin_se_secs = 60\n");
        assert_eq!(paths(&errors), ["sip.min_se_secs"]);
        let errors = invalid("[sip]\nmin_se_secs = 600\nsession_expires_secs = 300\n");
        assert_eq!(paths(&errors), ["sip.session_expires_secs"]);
        assert!(errors[0].reason.contains("below sip.min_se_secs"));
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
