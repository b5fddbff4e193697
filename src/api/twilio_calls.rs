//! The Twilio-compatible call REST that voice-agent frameworks call to end a call:
//! `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with `Status=completed`
//! (or `canceled`) hangs up the live call the agent knows by that `callSid`.
//!
//! Answers as Twilio's REST API does: the call resource as JSON on success, and errors as
//! `{"code", "message", "more_info", "status"}` (20404 for an unknown call). Authentication is
//! HTTP Basic (account SID as user, `[http].token` as password) through the API's token check.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;
use crate::call::EndReason;
use crate::twilio::form;

/// A Twilio-shaped error.
fn error(status: StatusCode, code: u32, message: String) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

/// `POST /2010-04-01/Accounts/{account}/Calls/{call}.json`.
pub(super) async fn update(
    State(state): State<ApiState>,
    Path((account, call)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(call_sid) = call.strip_suffix(".json") else {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found".into(),
        );
    };
    let Ok(params) = form::parse(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            20001,
            "The request body is not a form".into(),
        );
    };
    let status = form::get(&params, "Status");
    if !matches!(status, Some("completed" | "canceled")) {
        return error(
            StatusCode::BAD_REQUEST,
            21218,
            "Only Status=completed or Status=canceled is supported".into(),
        );
    }
    let live = state
        .registry
        .list()
        .into_iter()
        .find(|c| c.agent_call_sid() == call_sid);
    let Some(live) = live else {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            format!(
                "The requested resource /2010-04-01/Accounts/{}/Calls/{}.json was not found",
                sanitize(&account),
                sanitize(call_sid)
            ),
        );
    };
    tracing::info!(call = %live.id(), "agent asked to end the call");
    live.hangup_for(EndReason::AgentHangup);
    let body = json!({
        "sid": call_sid,
        "account_sid": account,
        "status": "completed",
        "direction": "inbound",
        "uri": format!("/2010-04-01/Accounts/{account}/Calls/{call_sid}.json"),
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// Peer text echoed in an error: ASCII letters and digits only, cut short.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect()
}
