//! `POST /api/calls/{id}/transfer` with `{"to": "..."}`: hands a live call's caller to a number
//! or `sip:` URI that `[calls].outbound_allow` allows (403 otherwise, and nothing happens). The
//! answer is 202: the outcome follows as the call's events (`transfer_requested`,
//! `transferred` or `transfer_failed`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, ApiState, calls, json_body};
use crate::call::{TransferError, TransferOrigin};

/// `POST /api/calls/{id}/transfer`.
pub(super) async fn transfer(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TransferBody {
        to: String,
    }
    let to = json_body::<TransferBody>(body, "{\"to\": \"+15551234567\"}")?.to;
    let handle = calls::live_call(&state, &id).await?;
    let target = handle.transfer(&to, TransferOrigin::Api).map_err(refusal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": handle.id(), "to": target.as_str(), "status": "transferring" })),
    )
        .into_response())
}

/// A refused transfer as the API answers it.
fn refusal(e: TransferError) -> ApiError {
    match e {
        TransferError::Invalid(_) => ApiError::BadRequest(e.to_string()),
        TransferError::NotAllowed => ApiError::Forbidden(e.to_string()),
        TransferError::Ended => ApiError::Conflict(e.to_string()),
    }
}
