//! `POST /api/drain` (body optional: `{"drain": true}` by default, `{"drain": false}` undoes),
//! `DELETE /api/drain` (undoes) and `GET /api/drain`: this box's draining switch
//! ([`Drain`](crate::call::Drain)). While draining, new SIP calls and OPTIONS get 503 with
//! Retry-After (a dispatcher's probing takes the box out) and Twilio webhooks the fallback
//! TwiML; calls in progress go on. Each answers `{"draining", "active_calls", "source_node"}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde_json::{Value, json};

use super::{ApiError, ApiState, json_body};

/// `GET /api/drain`.
pub(super) async fn get(State(state): State<ApiState>) -> Json<Value> {
    Json(drain_json(&state))
}

/// `POST /api/drain`.
pub(super) async fn post(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DrainBody {
        drain: bool,
    }
    let empty = body
        .as_ref()
        .is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace));
    let drain = if empty {
        true
    } else {
        json_body::<DrainBody>(body, "{\"drain\": true} or no body")?.drain
    };
    Ok(set(&state, drain))
}

/// `DELETE /api/drain`.
pub(super) async fn delete(State(state): State<ApiState>) -> Json<Value> {
    set(&state, false)
}

fn set(state: &ApiState, drain: bool) -> Json<Value> {
    if state.drain.set(drain) {
        tracing::info!(
            draining = drain,
            active_calls = state.registry.len(),
            "API: draining switched"
        );
    }
    Json(drain_json(state))
}

fn drain_json(state: &ApiState) -> Value {
    json!({
        "draining": state.drain.is_draining(),
        "active_calls": state.registry.len(),
        "source_node": &*state.node,
    })
}
