//! `[http]`: the REST API and web console listener, and the token it demands.

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

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    listen: Option<String>,
    token: Option<String>,
    max_body_bytes: Option<usize>,
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
    }
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
}
