//! `POST /api/calls`: place an outbound call, `{"to": "+442071234567" | "sip:bob@10.0.0.5",
//! "trunk": "name"?}`.
//!
//! A target that is not a number or a `sip:` URI is 422; one `[calls].outbound_allow` does not
//! allow is 403 (the SIP task decides, against its reloadable configuration), and neither sends
//! an INVITE. Otherwise the answer is 201 with the new call's record, once its INVITE is on the
//! wire; ringing, the answer or the failure follow as call events.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use serde_json::Value;

use super::calls::call_json;
use super::{ApiError, ApiState};
use crate::call::CallEvent;
use crate::clock;
use crate::config::DialTarget;
use crate::net::sip::SipCommand;
use crate::net::sip_dial::{DialError, DialRequest};
use crate::store::CallRecord;
use crate::store::timestamp::unix_ms;

/// The body of `POST /api/calls`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    to: String,
    #[serde(default)]
    trunk: Option<String>,
}

/// `POST /api/calls`.
pub(super) async fn place(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge("body too large".into()),
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    let PlaceBody { to, trunk } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"to\": \"...\", \"trunk\": \"...\"}} (trunk optional): {e}"
        ))
    })?;
    let target = DialTarget::parse(to.trim())
        .map_err(|e| ApiError::Unprocessable(format!("\"to\": {e}")))?;
    let sip = state
        .dial
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no SIP task to place calls".into()))?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = DialRequest {
        target,
        trunk,
        reply,
    };
    sip.send(SipCommand::Dial(Box::new(request)))
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?;
    let handle = answer
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))?
        .map_err(refusal)?;
    let mut record = CallRecord::new(handle.info());
    record.apply(
        &CallEvent::Placed {
            id: handle.id().clone(),
            trunk: None,
        },
        0,
    );
    let now = unix_ms(clock::wallclock());
    let body = id_first(call_json(&record, now, true, &state.node));
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// The record as JSON text with its `id` first (JSON objects are otherwise written in key
/// order), so a client reading the first field gets the call's id.
fn id_first(mut record: Value) -> String {
    let id = record
        .as_object_mut()
        .and_then(|map| map.remove("id"))
        .unwrap_or(Value::Null);
    let rest = record.to_string();
    match rest.strip_prefix('{').filter(|r| *r != "}") {
        Some(rest) => format!("{{\"id\":{id},{rest}"),
        None => format!("{{\"id\":{id}}}"),
    }
}

/// A dial refusal as the API answers it.
fn refusal(err: DialError) -> ApiError {
    match err {
        DialError::NotAllowed => ApiError::Forbidden(err.to_string()),
        DialError::UnknownTrunk(_) | DialError::NoTrunk | DialError::NeedsAddress => {
            ApiError::Unprocessable(err.to_string())
        }
        DialError::NoMediaPorts | DialError::Refused(_) => ApiError::Unavailable(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_comes_first() {
        let text = id_first(serde_json::json!({"agent": null, "id": "c1", "status": "ringing"}));
        assert_eq!(text, r#"{"id":"c1","agent":null,"status":"ringing"}"#);
        assert_eq!(id_first(serde_json::json!({"id": "c1"})), r#"{"id":"c1"}"#);
    }
}
