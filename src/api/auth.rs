//! Bearer-token authentication of `/api/*`, `/metrics` and the Twilio-compatible call REST
//! (HTTP Basic there, the token as password), and 503 once shutdown has begun.
//!
//! The token is compared in constant time: both sides are hashed (SHA-256, so lengths do not
//! leak either) and the digests compared without an early exit. `?token=` is accepted only on
//! the GET routes a browser cannot add headers to (`EventSource`, `<audio>`).
//!
//! Without a configured token, only requests that plainly come from this box are served: the
//! listener is loopback, Twilio does not share it (Twilio's reverse proxy would forward the
//! internet to it), and the request carries no proxy header (`Forwarded`, `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Real-IP`): a proxied request is remote, whatever
//! address it arrives from.

use axum::extract::{Query, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};

/// The middleware: passes the request on, or answers 401/503.
pub(super) async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if state.shutdown.is_cancelled() {
        return ApiError::Unavailable("earshot is shutting down".into()).into_response();
    }
    let Some(token) = &state.token else {
        if state.exposed {
            return ApiError::Unauthorized(
                "this API is reachable from other machines (a non-loopback listener, or Twilio's proxy) and no [http].token is configured: nothing is served".into(),
            )
            .into_response();
        }
        if proxied(&request) {
            return ApiError::Unauthorized(
                "a proxied request is remote and no [http].token is configured: nothing is served"
                    .into(),
            )
            .into_response();
        }
        return next.run(request).await;
    };
    let given = presented_token(&request);
    match given {
        Some(given) if tokens_equal(given.as_bytes(), token.expose().as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::Unauthorized("wrong token".into()).into_response(),
        None => ApiError::Unauthorized("this API needs Authorization: Bearer <token>".into())
            .into_response(),
    }
}

/// Headers a reverse proxy adds: the request came from elsewhere.
const PROXY_HEADERS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// Whether the request came through a reverse proxy.
fn proxied(request: &Request) -> bool {
    PROXY_HEADERS
        .iter()
        .any(|name| request.headers().contains_key(*name))
}

/// The token the request carries: its bearer header, or `?token=` on the routes that allow it.
fn presented_token(request: &Request) -> Option<String> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    if bearer.is_some() {
        return bearer;
    }
    // The Twilio-compatible call REST authenticates as Twilio's does: HTTP Basic, the account
    // SID as user and the token as password.
    if request.uri().path().starts_with("/2010-04-01/") {
        return basic_password(request);
    }
    let path = request.uri().path();
    let query_allowed = request.method() == Method::GET
        && (path == "/api/events"
            || (path.starts_with("/api/calls/") && path.ends_with("/recording")));
    if !query_allowed {
        return None;
    }
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(request.uri()).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// The password of an `Authorization: Basic` header.
fn basic_password(request: &Request) -> Option<String> {
    use base64::Engine as _;
    let encoded = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// Constant-time equality of two secrets of any lengths.
fn tokens_equal(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(tokens_equal(b"s3cret-token-0123", b"s3cret-token-0123"));
        assert!(!tokens_equal(b"s3cret-token-0123", b"s3cret-token-0124"));
        assert!(!tokens_equal(b"s3cret", b"s3cret-token-0123"));
        assert!(!tokens_equal(b"", b"x"));
    }

    #[test]
    fn proxy_headers_mark_a_request_as_remote() {
        for name in PROXY_HEADERS {
            let request = Request::builder()
                .uri("/api/calls")
                .header(name, "203.0.113.7")
                .body(axum::body::Body::empty())
                .unwrap_or_default();
            assert!(proxied(&request), "{name}");
        }
        let direct = Request::builder()
            .uri("/api/calls")
            .header("x-request-id", "1")
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        assert!(!proxied(&direct));
    }

    #[test]
    fn query_tokens_count_only_on_the_event_stream_and_recordings() {
        let req = |method: Method, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap_or_default()
        };
        assert_eq!(
            presented_token(&req(Method::GET, "/api/events?token=abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&req(Method::GET, "/api/calls/c0123/recording?token=a%2Bb")).as_deref(),
            Some("a+b")
        );
        assert_eq!(
            presented_token(&req(Method::GET, "/api/calls?token=abc")),
            None
        );
        assert_eq!(
            presented_token(&req(Method::POST, "/api/events?token=abc")),
            None
        );
    }
}
