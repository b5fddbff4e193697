//! `GET /api/webhooks/deliveries?limit=`: the webhook outbox, newest first — each delivery's
//! message id, event type, host, state, attempts, last answer and next attempt. Never the body.

use axum::Json;
use axum::extract::{Query, State, rejection::QueryRejection};
use serde_json::{Value, json};

use super::{ApiError, ApiState, blocking, params};
use crate::store::timestamp::format_rfc3339;

/// Most deliveries in one answer.
const MAX_LIMIT: usize = 500;

pub(super) async fn deliveries(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &["limit"])?;
    let limit = match p.get("limit") {
        None => 50,
        Some(limit) => limit
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1..={MAX_LIMIT}")))?,
    };
    let found = blocking(&state, move |store| store.recent_deliveries(limit))
        .await?
        .map_err(|e| ApiError::internal("cannot read the webhook outbox", e))?;
    let deliveries: Vec<Value> = found
        .into_iter()
        .map(|d| {
            json!({
                "id": d.msg_id,
                "type": d.event_type,
                "host": d.url_host,
                "state": d.state,
                "attempts": d.attempts,
                "created_at": format_rfc3339(d.created_ms),
                "last_status": d.last_status,
                "last_error": d.last_error,
                "next_attempt_at": d.next_attempt_ms.map(format_rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "deliveries": deliveries })))
}
