//! `GET /health` (for load balancers and the watchdog: no token, no personal data) and
//! `GET /metrics` (Prometheus text, from [`Metrics`](crate::metrics::Metrics) plus gauges read
//! from their owners at scrape time).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, ApiState, blocking};
use crate::call::Source;
use crate::metrics::Snapshot;

/// `GET /health`: 200 while running and taking calls; 503 while draining (so that an HTTP
/// load balancer in front of Twilio webhooks sends them elsewhere too) or shutting down.
pub(super) async fn health(State(state): State<ApiState>) -> Response {
    let stopping = state.shutdown.is_cancelled();
    let draining = state.drain.is_draining();
    let status = match (stopping, draining) {
        (true, _) => "shutting_down",
        (false, true) => "draining",
        (false, false) => "ok",
    };
    let body = json!({
        "status": status,
        "uptime_secs": state.started.elapsed().as_secs(),
        "active_calls": state.registry.len(),
        "draining": draining,
        "source_node": &*state.node,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let code = if stopping || draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let stored = blocking(&state, |store| store.counts()).await??;
    let live = state.registry.list();
    let count = |source: Source| live.iter().filter(|h| h.info().source == source).count() as u64;
    let snapshot = Snapshot {
        active: vec![
            (Source::Sip, count(Source::Sip)),
            (Source::Twilio, count(Source::Twilio)),
        ],
        stored,
        audio: state.audio.as_ref().map(|a| a.stats()),
        recording_allowed: state.gate.recording_allowed(),
        draining: state.drain.is_draining(),
        uptime_secs: state.started.elapsed().as_secs(),
    };
    let mut response = state.metrics.render(&snapshot).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
