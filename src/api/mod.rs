//! The HTTP API and web console (axum), on `[http].listen`.
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | `{"status", "uptime_secs", "active_calls", "draining", "source_node"}`, no token needed; 503 while draining or shutting down |
//! | `GET /metrics` | Prometheus text |
//! | `GET /api/calls` | history, newest first: `limit`, `cursor`, `source`, `status`, `since`, `until`, `q` |
//! | `POST /api/calls` | `{"to", "trunk"?}`: place a call ([`dial`]); 201 with its record, 403 not allowed, 422 not a target |
//! | `GET /api/calls/{id}` | one call: record, note, events, live state |
//! | `GET /api/calls/{id}/recording` | the WAV, with `Range` (206/416); `?download=true` |
//! | `PUT /api/calls/{id}/notes` | `{"note": "..."}` or text; last write wins |
//! | `POST /api/calls/{id}/hangup` | hang up a live call (404 unknown, 409 not live) |
//! | `POST /api/calls/{id}/listen` | `{"on": bool}`: speaker playout of a live call |
//! | `POST /api/calls/{id}/talk` | `{"on": bool, "takeover": bool}`: the box's microphone on a live call (409 without one) |
//! | `POST /api/calls/{id}/transfer` | `{"to": "..."}`: hand the caller over (403 unless `[calls].outbound_allow` allows it) |
//! | `GET /api/analytics` | `interval=hour\|day\|week`, `since`, `until` |
//! | `GET /api/events` | server-sent events, `id:` = global sequence, `Last-Event-ID` resumes |
//! | `GET /api/live` | live calls for the console (masked numbers, level) |
//! | `POST /api/drain` | `{"drain": bool}` (default true): stop taking new calls, current ones go on ([`drain`]) |
//! | `DELETE /api/drain` | stop draining; `GET /api/drain` shows the switch |
//! | `GET /api/webhooks/deliveries` | recent webhook deliveries and their state: `limit` |
//! | `GET /`, `/app.js`, `/style.css` | the console |
//!
//! Errors are JSON (see [`error`]). `/api/*` and `/metrics` require `Authorization: Bearer
//! <[http].token>` when a token is configured (and refuse everything when none is and the
//! request may come from elsewhere: a non-loopback listener, Twilio's proxy, a proxy header;
//! see [`auth`]). Because `EventSource` and `<audio>` cannot send headers, the two GET routes
//! `/api/events` and `/api/calls/{id}/recording` also accept `?token=`.
//!
//! Other drivers add their own routes (Twilio's `/twilio/*`, with their own signature check)
//! by merging a router into [`router`]'s result; [`guarded`] puts the Host and Origin checks
//! ([`guard`]) in front of everything, and [`serve`] ([`server`]) serves it with connection
//! limits.

mod auth;
mod calls;
mod console;
mod dial;
mod drain;
pub mod error;
mod events;
pub mod guard;
mod recording;
pub mod server;
mod status;
mod transcript;
mod transfer;
mod twilio_calls;
mod webhooks;

pub use error::ApiError;
pub use guard::HostPolicy;
pub use server::{ConnLimits, serve};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query};
use axum::routing::{get, post, put};
use tokio_util::sync::CancellationToken;

use crate::audio::AudioService;
use crate::call::Registry;
use crate::config::{HttpConfig, Secret};
use crate::metrics::Metrics;
use crate::recording::RecordingGate;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// Live calls: the only way the API reaches a call (its `CallHandle`).
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The speakers, for `/metrics` (underruns); `None` in tools and tests without audio.
    pub audio: Option<Arc<AudioService>>,
    pub gate: RecordingGate,
    /// `[http].token`.
    pub token: Option<Secret>,
    /// The listener is not loopback, or Twilio shares it (behind its public proxy): without a
    /// token, nothing under `/api` is served.
    pub exposed: bool,
    pub max_body_bytes: usize,
    pub started: Instant,
    /// Cancelled at shutdown: requests get 503 and event streams end.
    pub shutdown: CancellationToken,
    /// The SIP task, where `POST /api/calls` places calls; `None` where there is none (tools,
    /// tests), and then no call is placed.
    pub dial: Option<tokio::sync::mpsc::UnboundedSender<crate::net::sip::SipCommand>>,
    /// The draining switch (`/api/drain`, shown by `/health` and `/metrics`).
    pub drain: crate::call::Drain,
    /// `[node].name`: the `source_node` of every call record served.
    pub node: Arc<str>,
}

impl ApiState {
    /// State for `http` with the rest of the program's shared parts.
    pub fn new(
        http: &HttpConfig,
        store: Store,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            registry,
            metrics,
            audio: None,
            gate: RecordingGate::new(),
            token: http.token.clone(),
            exposed: !http.listen.ip().to_canonical().is_loopback(),
            max_body_bytes: http.max_body_bytes,
            started: crate::clock::now(),
            shutdown,
            dial: None,
            drain: crate::call::Drain::default(),
            node: Arc::from(crate::config::NodeConfig::default().name),
        }
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("store", &self.store)
            .field("exposed", &self.exposed)
            .finish_non_exhaustive()
    }
}

/// Every route of the API and the console, with `state` applied.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/api/calls", get(calls::list).post(dial::place))
        .route("/api/calls/{id}", get(calls::get))
        .route("/api/calls/{id}/recording", get(recording::get))
        .route("/api/calls/{id}/transcript", get(transcript::get))
        .route(
            "/api/calls/{id}/notes",
            put(calls::put_note).post(calls::put_note),
        )
        .route("/api/calls/{id}/hangup", post(calls::hangup))
        .route("/api/calls/{id}/listen", post(calls::listen))
        .route("/api/calls/{id}/talk", post(calls::talk))
        .route("/api/calls/{id}/transfer", post(transfer::transfer))
        .route("/api/analytics", get(calls::analytics))
        .route("/api/events", get(events::stream))
        .route("/api/live", get(calls::live))
        .route("/api/webhooks/deliveries", get(webhooks::deliveries))
        .route(
            "/api/drain",
            get(drain::get).post(drain::post).delete(drain::delete),
        )
        .route("/metrics", get(status::metrics))
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}",
            post(twilio_calls::update),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(status::health))
        .route("/", get(console::index))
        .route("/app.js", get(console::script))
        .route("/style.css", get(console::style))
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// `router` behind the Host and Origin checks of `policy` (refusals counted in `metrics`).
pub fn guarded(router: Router, policy: HostPolicy, metrics: Arc<Metrics>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        (Arc::new(policy), metrics),
        guard::check_host,
    ))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&Store) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal("store task failed", e))
}

/// A small JSON body of type `T`; `expected` shows its shape in the 400.
fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    expected: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge("body too large".into()),
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    serde_json::from_slice::<T>(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {expected}: {e}")))
}

/// Query parameters as a map, rejecting malformed encodings, repeated keys and keys outside
/// `allowed` (`token` is always allowed: the auth layer reads it).
fn params(
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    let mut map = HashMap::new();
    for (key, value) in pairs {
        if key != "token" && !allowed.contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter {key:?} (known: {})",
                allowed.join(", ")
            )));
        }
        if map.insert(key.clone(), value).is_some() {
            return Err(ApiError::BadRequest(format!(
                "parameter {key:?} given twice"
            )));
        }
    }
    Ok(map)
}
