//! `[http]`: the REST API and web console listener, the token it demands, the host names it
//! answers to (DNS rebinding), and its connection limits (slowloris).

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::Errors;
use super::net::socket_addr;
use super::secret::{Secret, token};

/// `[http]`: the REST API and web console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address the API listens on; loopback by default so nothing is exposed by accident.
    pub listen: SocketAddr,
    /// Bearer token the API demands; required whenever `listen` is not loopback, and whenever
    /// Twilio shares this listener (its reverse proxy exposes it; checked in `config`).
    pub token: Option<Secret>,
    /// Largest request body accepted, bounding memory per request.
    pub max_body_bytes: usize,
    /// Host names (lowercase, no port) requests may name in `Host` besides IP literals and
    /// `localhost`: the reverse proxy's public name. Everything else gets 421.
    pub hosts: Vec<String>,
    /// Seconds a connection may take to send a request's head (also the keep-alive wait for the
    /// next request): slow-header connections are closed.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go without a byte either way (a slow body, a response nobody
    /// reads) before it is closed. Upgraded WebSockets are not affected.
    pub idle_timeout_secs: u64,
    /// Connections open at once (WebSockets included); beyond it new ones are closed at accept
    /// and counted.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            token: None,
            max_body_bytes: 65536,
            hosts: Vec::new(),
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 256,
        }
    }
}

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: Option<String>,
    token: Option<String>,
    max_body_bytes: Option<usize>,
    hosts: Option<Vec<String>>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
}

pub(super) fn validate_http(e: &mut Errors, raw: RawHttp) -> HttpConfig {
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
        hosts: raw
            .hosts
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                host_name(h)
                    .map_err(|reason| e.push(format!("http.hosts[{i}]"), reason))
                    .ok()
            })
            .collect(),
        header_read_timeout_secs: e.ranged(
            "http.header_read_timeout_secs",
            raw.header_read_timeout_secs,
            d.header_read_timeout_secs,
            1..=300,
        ),
        idle_timeout_secs: e.ranged(
            "http.idle_timeout_secs",
            raw.idle_timeout_secs,
            d.idle_timeout_secs,
            1..=3600,
        ),
        max_connections: e.ranged(
            "http.max_connections",
            raw.max_connections,
            d.max_connections,
            1..=65536,
        ),
    }
}

/// A DNS host name as `Host` carries it: letters, digits, `-` and `.`, lowercased, no port.
pub(super) fn host_name(s: &str) -> Result<String, String> {
    let name = s.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{s:?} is not a host name"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "{s:?} is not a host name (letters, digits, '-' and '.', no scheme or port)"
        ));
    }
    Ok(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

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
    fn hosts_and_connection_limits() {
        let config = Config::from_toml_str(
            "[http]\nhosts = [\"Calls.Example.com.\", \"box-1.lan\"]\nheader_read_timeout_secs = 5\nidle_timeout_secs = 30\nmax_connections = 8\n",
        )
        .unwrap();
        assert_eq!(config.http.hosts, ["calls.example.com", "box-1.lan"]);
        assert_eq!(config.http.header_read_timeout_secs, 5);
        assert_eq!(config.http.idle_timeout_secs, 30);
        assert_eq!(config.http.max_connections, 8);
        let errors = invalid(
            "[http]\nhosts = [\"ok.example\", \"https://x.example\", \"x.example:443\"]\nheader_read_timeout_secs = 0\nmax_connections = 0\n",
        );
        assert_eq!(
            paths(&errors),
            [
                "http.hosts[1]",
                "http.hosts[2]",
                "http.header_read_timeout_secs",
                "http.max_connections"
            ]
        );
    }
}
