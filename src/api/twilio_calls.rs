//! The Twilio-compatible call REST that voice-agent frameworks call to end or hand over a call:
//! `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with `Status=completed`
//! (or `canceled`) hangs up the live call the agent knows by that `callSid`;
//! `Twiml=<Response><Dial>NUMBER</Dial></Response>` (or `<Dial><Number>`, `<Dial><Sip>`)
//! transfers its caller there, if `[calls].outbound_allow` allows it, and the agent session
//! ends with the call. Any other TwiML, and `Url=` (earshot fetches nothing), get 400.
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
use crate::call::{CallHandle, EndReason, TransferError, TransferOrigin};
use crate::twilio::{form, twiml};

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
    let twiml = form::get(&params, "Twiml");
    let request = match (status, twiml, form::get(&params, "Url")) {
        (Some("completed" | "canceled"), None, None) => Request::Hangup,
        (None, Some(doc), None) => match twiml::parse_dial(doc) {
            Ok(to) => Request::Transfer(to),
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    12100,
                    format!(
                        "Twiml: only <Response><Dial>NUMBER</Dial></Response> is supported ({err})"
                    ),
                );
            }
        },
        (None, None, Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                21205,
                "Url not supported: send the TwiML as Twiml=".into(),
            );
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                21218,
                "Only Status=completed, Status=canceled or Twiml=<Response><Dial>..</Dial></Response> is supported".into(),
            );
        }
    };
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
    let status = match request {
        Request::Hangup => {
            tracing::info!(call = %live.id(), "agent asked to end the call");
            live.hangup_for(EndReason::AgentHangup);
            "completed"
        }
        Request::Transfer(to) => match agent_transfer(&live, &to) {
            Ok(()) => "in-progress",
            Err((status, code, message)) => return error(status, code, message),
        },
    };
    let body = json!({
        "sid": call_sid,
        "account_sid": account,
        "status": status,
        "direction": "inbound",
        "uri": format!("/2010-04-01/Accounts/{account}/Calls/{call_sid}.json"),
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// What an agent asked of its call.
enum Request {
    Hangup,
    /// Transfer to this destination (from the `<Dial>`, not checked yet).
    Transfer(String),
}

/// Transfers the agent's call, or the Twilio-shaped refusal: (status, code, message).
fn agent_transfer(live: &CallHandle, to: &str) -> Result<(), (StatusCode, u32, String)> {
    match live.transfer(to, TransferOrigin::Agent) {
        Ok(_) => {
            tracing::info!(call = %live.id(), "agent asked to transfer the call");
            Ok(())
        }
        Err(e @ TransferError::Invalid(_)) => {
            Err((StatusCode::BAD_REQUEST, 13223, format!("Dial: {e}")))
        }
        Err(e @ TransferError::NotAllowed) => {
            Err((StatusCode::FORBIDDEN, 13227, format!("Dial: {e}")))
        }
        Err(e @ TransferError::Ended) => Err((StatusCode::CONFLICT, 21220, e.to_string())),
    }
}

/// Peer text echoed in an error: ASCII letters and digits only, cut short.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect()
}
