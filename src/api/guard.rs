//! The Host and Origin checks in front of every route (the API, the console and Twilio's).
//!
//! - DNS rebinding: a page on `evil.example` whose name is made to resolve to 127.0.0.1 reaches
//!   the loopback API with `Host: evil.example`. Only IP literals, `localhost` and the names of
//!   `[http].hosts` (plus the host of `[twilio].public_url`) are answered; any other `Host`, or
//!   none, gets 421 Misdirected Request (RFC 9110 §15.5.20). `GET /health` is exempt: load
//!   balancers' checks often send no `Host` (HTTP/1.0), and it tells nothing personal.
//! - Cross-site requests: a state change (any method but GET, HEAD, OPTIONS) whose `Origin`
//!   names another site than the request's `Host` (or a configured name), whose `Origin` is
//!   `null`, or that the browser marks `Sec-Fetch-Site: cross-site`, gets 403 (RFC 6454 §7,
//!   Fetch Metadata). Requests without either header (curl, Twilio, agents) are not browsers'
//!   cross-site requests and pass. The console's own requests carry its own origin and pass.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::metrics::Metrics;

/// The host names this box answers to besides IP literals and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Lowercase, no port, no trailing dot.
    names: Vec<String>,
}

impl HostPolicy {
    /// `[http].hosts`, plus the host of `[twilio].public_url` when set.
    pub fn new(hosts: &[String], twilio_public_url: Option<&str>) -> Self {
        let mut names: Vec<String> = hosts.to_vec();
        if let Some(host) = twilio_public_url.and_then(url_host) {
            names.push(host);
        }
        names.sort();
        names.dedup();
        Self { names }
    }

    fn named(&self, host: &str) -> bool {
        self.names.iter().any(|n| n == host)
    }

    /// Whether a request may go on: `Err` is the refusal to send.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if safe && path == "/health" {
            return Ok(());
        }
        let Some(authority) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return Err(ApiError::Misdirected("the request has no Host".into()));
        };
        let Some(host) = hostname(authority) else {
            return Err(ApiError::Misdirected("the Host is malformed".into()));
        };
        if !(is_local_name(&host) || self.named(&host)) {
            return Err(ApiError::Misdirected(format!(
                "this box does not answer to {host:?}: add it to [http].hosts"
            )));
        }
        if safe {
            return Ok(());
        }
        let site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if site.eq_ignore_ascii_case("cross-site") {
            return Err(ApiError::Forbidden(
                "cross-site request refused (Sec-Fetch-Site)".into(),
            ));
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or_default();
        let same = origin_authority(origin).is_some_and(|o| {
            o.eq_ignore_ascii_case(authority.trim()) || hostname(o).is_some_and(|h| self.named(&h))
        });
        if same {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "cross-origin request refused: its Origin is not this box".into(),
            ))
        }
    }
}

/// The middleware: refusals are counted and answered, the rest goes on.
pub(super) async fn check_host(
    State((policy, metrics)): State<(Arc<HostPolicy>, Arc<Metrics>)>,
    request: Request,
    next: Next,
) -> Response {
    match policy.check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            metrics.http_requests_refused.fetch_add(1, Relaxed);
            tracing::debug!(%refusal, method = %request.method(), "http request refused");
            refusal.into_response()
        }
    }
}

/// IP literals (v4, bracketed v6) and `localhost` name this box whatever DNS says.
fn is_local_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host.parse::<IpAddr>().is_ok()
}

/// The lowercase host of an authority (`Host` or an origin's), without port, brackets or
/// trailing dot; `None` when malformed.
fn hostname(authority: &str) -> Option<String> {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        v6
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return None,
            None => authority,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    ok.then_some(host)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `scheme://authority` → `authority`; `None` for `null` and anything else.
fn origin_authority(origin: &str) -> Option<&str> {
    let (_, rest) = origin.trim().split_once("://")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The host of `https://host[:port][/path]`.
fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    hostname(authority)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn status(policy: &HostPolicy, method: Method, pairs: &[(&'static str, &str)]) -> u16 {
        match policy.check(&method, "/api/calls", &headers(pairs)) {
            Ok(()) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn only_ip_literals_localhost_and_configured_names_are_answered() {
        let policy = HostPolicy::new(
            &["calls.example.com".into()],
            Some("https://twilio.example.net/earshot"),
        );
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "[::1]",
            "192.168.1.20:8080",
            "localhost:8080",
            "LOCALHOST",
            "calls.example.com",
            "Calls.Example.com.:443",
            "twilio.example.net",
        ] {
            assert_eq!(
                status(&policy, Method::GET, &[("host", host)]),
                200,
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "calls.example.com.evil.example",
            "127.0.0.1.nip.io",
            "127.0.0.1:80:80",
            "[::1",
            "",
        ] {
            assert_eq!(
                status(&policy, Method::GET, &[("host", host)]),
                StatusCode::MISDIRECTED_REQUEST.as_u16(),
                "{host}"
            );
        }
        assert_eq!(status(&policy, Method::GET, &[]), 421);
        // Load balancers' health checks, with any Host or none.
        assert!(
            policy
                .check(&Method::GET, "/health", &HeaderMap::new())
                .is_ok()
        );
        assert!(
            policy
                .check(
                    &Method::POST,
                    "/health",
                    &headers(&[("host", "evil.example")])
                )
                .is_err()
        );
    }

    #[test]
    fn state_changes_from_other_origins_are_refused() {
        let policy = HostPolicy::new(&["calls.example.com".into()], None);
        let host = ("host", "127.0.0.1:8080");
        // Same origin, no Origin (curl, Twilio), and reads from anywhere pass.
        assert_eq!(
            status(
                &policy,
                Method::POST,
                &[host, ("origin", "http://127.0.0.1:8080")]
            ),
            200
        );
        assert_eq!(status(&policy, Method::POST, &[host]), 200);
        assert_eq!(
            status(
                &policy,
                Method::GET,
                &[host, ("origin", "https://evil.example")]
            ),
            200
        );
        assert_eq!(
            status(
                &policy,
                Method::POST,
                &[host, ("sec-fetch-site", "same-origin")]
            ),
            200
        );
        // Behind the proxy: the page is https://calls.example.com, the Host is rewritten.
        assert_eq!(
            status(
                &policy,
                Method::PUT,
                &[host, ("origin", "https://calls.example.com")]
            ),
            200
        );
        for origin in [
            "https://evil.example",
            "http://127.0.0.1:3000",
            "http://localhost:8080",
            "null",
            "garbage",
        ] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                assert_eq!(
                    status(&policy, method.clone(), &[host, ("origin", origin)]),
                    403,
                    "{method} from {origin}"
                );
            }
        }
        assert_eq!(
            status(
                &policy,
                Method::POST,
                &[host, ("sec-fetch-site", "cross-site")]
            ),
            403
        );
    }
}
