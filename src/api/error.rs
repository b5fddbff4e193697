//! The API's errors and their one wire form: a status and
//! `{"error": {"code": "not_found", "message": "no call c0123…"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What went wrong with a request, as the client is told.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such call, recording or route; also any id that is not a call id.
    #[error("{0}")]
    NotFound(String),
    /// A malformed parameter or body.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// A cross-site state change (its `Origin` or `Sec-Fetch-Site` names another site).
    #[error("{0}")]
    Forbidden(String),
    /// A `Host` this box does not answer to (DNS rebinding).
    #[error("{0}")]
    Misdirected(String),
    /// The call exists but is not in a state for this (not live).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but not something that can be done (an outbound target that is not one).
    #[error("{0}")]
    Unprocessable(String),
    /// A body or note over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A `Range` outside the file; carries the file's length for `Content-Range`.
    #[error("range not satisfiable: the file has {0} bytes")]
    RangeNotSatisfiable(u64),
    /// Shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// Our fault (storage, a failed task); details are logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Misdirected(_) => "misdirected_request",
            Self::Conflict(_) => "conflict",
            Self::Unprocessable(_) => "unprocessable",
            Self::TooLarge(_) => "payload_too_large",
            Self::RangeNotSatisfiable(_) => "range_not_satisfiable",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// An internal error: logged here with its detail, sent without it.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "{what}");
        Self::Internal(format!("{what}; see the log"))
    }

    pub fn no_call(id: &str) -> Self {
        Self::NotFound(format!("no call {id:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"earshot\""),
                );
            }
            Self::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<crate::store::QueryError> for ApiError {
    fn from(e: crate::store::QueryError) -> Self {
        Self::internal("store read failed", e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_code_and_message() {
        let response = ApiError::RangeNotSatisfiable(44).into_response();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */44");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(ApiError::TooLarge("x".into()).code(), "payload_too_large");
    }
}
