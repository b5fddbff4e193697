//! The call routes: history listing and detail, notes, hang-up and speaker playout of live
//! calls, the live view of the console, and analytics.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiState, blocking, json_body, params};
use crate::call::event::mask_number;
use crate::call::{CallHandle, CallId, Source};
use crate::clock;
use crate::store::query::MAX_LIMIT;
use crate::store::timestamp::{format_rfc3339, parse_instant, unix_ms};
use crate::store::{CallRecord, CallStatus, Cursor, Interval, ListQuery, NoteError};

/// `GET /api/calls`.
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(
        query,
        &[
            "limit", "cursor", "source", "status", "since", "until", "q", "caller",
        ],
    )?;
    let mut q = ListQuery {
        limit: 50,
        ..ListQuery::default()
    };
    if let Some(limit) = p.get("limit") {
        q.limit = limit
            .parse()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1..={MAX_LIMIT}")))?;
    }
    if let Some(cursor) = p.get("cursor") {
        q.cursor =
            Some(Cursor::decode(cursor).ok_or_else(|| ApiError::BadRequest("bad cursor".into()))?);
    }
    if let Some(source) = p.get("source") {
        q.source = Some(parse_source(source)?);
    }
    if let Some(status) = p.get("status") {
        q.status = Some(CallStatus::parse(status).ok_or_else(|| {
            ApiError::BadRequest("status must be ringing, active, ended or interrupted".into())
        })?);
    }
    q.since_ms = p.get("since").map(|s| instant("since", s)).transpose()?;
    q.until_ms = p.get("until").map(|s| instant("until", s)).transpose()?;
    q.number = p.get("q").filter(|s| !s.is_empty()).cloned();
    q.caller = p.get("caller").filter(|s| !s.is_empty()).cloned();
    let page = blocking(&state, move |store| store.list(&q)).await??;
    let now = unix_ms(clock::wallclock());
    let calls: Vec<Value> = page
        .calls
        .iter()
        .map(|r| call_json(r, now, state.registry.get(&r.id).is_some(), &state.node))
        .collect();
    Ok(Json(
        json!({ "calls": calls, "next_cursor": page.next.map(|c| c.encode()) }),
    ))
}

/// `GET /api/calls/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = call_id(&id)?;
    let lookup = id.clone();
    let detail = blocking(&state, move |store| store.get(&lookup))
        .await??
        .ok_or_else(|| ApiError::no_call(id.as_str()))?;
    let now = unix_ms(clock::wallclock());
    let live = state.registry.get(&id);
    let mut body = call_json(&detail.record, now, live.is_some(), &state.node);
    if let Value::Object(map) = &mut body {
        map.insert(
            "note".into(),
            detail.note.map_or(
                Value::Null,
                |n| json!({ "text": n.text, "updated_at": format_rfc3339(n.updated_ms) }),
            ),
        );
        map.insert("events".into(), Value::Array(detail.events));
        map.insert(
            "live_state".into(),
            live.map_or(Value::Null, |h| live_json(&h, now)),
        );
    }
    Ok(Json(body))
}

/// `PUT` or `POST /api/calls/{id}/notes`: `{"note": "..."}` (or `{"notes": "..."}`), or the
/// note as the plain-text body.
pub(super) async fn put_note(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = call_id(&id)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(format!("the body is over {} bytes", state.max_body_bytes))
        }
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let text = if is_json {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NoteBody {
            #[serde(alias = "notes")]
            note: String,
        }
        serde_json::from_slice::<NoteBody>(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"note\": \"...\"}}: {e}")))?
            .note
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::BadRequest("the note is not UTF-8".into()))?
    };
    let target = id.clone();
    let saved = blocking(&state, move |store| store.put_note(&target, &text)).await?;
    match saved {
        Ok(note) => Ok(Json(json!({
            "id": id,
            "note": note.map(|n| json!({ "text": n.text, "updated_at": format_rfc3339(n.updated_ms) })),
        }))),
        Err(NoteError::NotFound(_)) => Err(ApiError::no_call(id.as_str())),
        Err(e @ NoteError::TooLong { .. }) => Err(ApiError::TooLarge(e.to_string())),
        Err(e @ NoteError::Storage(_)) => Err(ApiError::internal("note not saved", e)),
    }
}

/// `POST /api/calls/{id}/hangup`.
pub(super) async fn hangup(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let handle = live_call(&state, &id).await?;
    handle.hangup();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": handle.id(), "status": "hanging_up" })),
    )
        .into_response())
}

/// `POST /api/calls/{id}/listen` with `{"on": bool}`.
pub(super) async fn listen(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ListenBody {
        on: bool,
    }
    let on = json_body::<ListenBody>(body, r#"{"on": true|false}"#)?.on;
    let handle = live_call(&state, &id).await?;
    handle.set_listen(on);
    Ok(Json(json!({ "id": handle.id(), "listen": on })))
}

/// `POST /api/calls/{id}/talk` with `{"on": bool, "takeover": bool}` (`takeover` optional,
/// false): the box's microphone on this call, or off. One call has it at a time: taking it here
/// moves it from the call named in `moved_from`. No microphone: 409 with the reason.
pub(super) async fn talk(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TalkBody {
        on: bool,
        #[serde(default)]
        takeover: bool,
    }
    let TalkBody { on, takeover } =
        json_body(body, r#"{"on": true|false, "takeover": true|false}"#)?;
    let handle = live_call(&state, &id).await?;
    let mut moved_from = None;
    if on {
        let microphone = state.audio.as_ref().map(|audio| audio.microphone());
        moved_from = match microphone {
            Some(microphone) => microphone.claim(handle.id().as_str()),
            None => Err(crate::audio::microphone::Unavailable::NotConfigured),
        }
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    }
    handle.set_talk(on, takeover);
    Ok(Json(json!({
        "id": handle.id(),
        "talk": on,
        "takeover": on && takeover,
        "moved_from": moved_from,
    })))
}

/// `GET /api/live`: live calls, oldest first.
pub(super) async fn live(State(state): State<ApiState>) -> Json<Value> {
    let now = unix_ms(clock::wallclock());
    let calls: Vec<Value> = state
        .registry
        .list()
        .iter()
        .map(|h| live_json(h, now))
        .collect();
    Json(json!({ "calls": calls }))
}

/// `GET /api/analytics?interval=hour|day|week&since=&until=`.
pub(super) async fn analytics(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = params(query, &["interval", "since", "until"])?;
    let interval = match p.get("interval") {
        None => Interval::Day,
        Some(s) => Interval::parse(s)
            .ok_or_else(|| ApiError::BadRequest("interval must be hour, day or week".into()))?,
    };
    let until = match p.get("until") {
        Some(s) => instant("until", s)?,
        None => unix_ms(clock::wallclock()) + 1,
    };
    let since = match p.get("since") {
        Some(s) => instant("since", s)?,
        None => until.saturating_sub(interval.default_span_ms()),
    };
    if since >= until {
        return Err(ApiError::BadRequest("since must be before until".into()));
    }
    let a = blocking(&state, move |store| store.analytics(interval, since, until)).await??;
    let mut body = serde_json::to_value(&a)
        .map_err(|e| ApiError::internal("analytics not serializable", e))?;
    if let Value::Object(map) = &mut body {
        map.insert("since".into(), format_rfc3339(since).into());
        map.insert("until".into(), format_rfc3339(until).into());
        if let Some(Value::Array(series)) = map.get_mut("series") {
            for bucket in series {
                let start = bucket.get("start_ms").and_then(Value::as_u64).unwrap_or(0);
                if let Value::Object(b) = bucket {
                    b.insert("start".into(), format_rfc3339(start).into());
                }
            }
        }
    }
    Ok(Json(body))
}

/// A live call's handle: 404 for an unknown id, 409 for a stored call that is not live.
pub(super) async fn live_call(state: &ApiState, raw: &str) -> Result<CallHandle, ApiError> {
    let id = call_id(raw)?;
    if let Some(handle) = state.registry.get(&id) {
        return Ok(handle);
    }
    let lookup = id.clone();
    if blocking(state, move |store| store.contains(&lookup)).await?? {
        Err(ApiError::Conflict(format!("call {id} is not live")))
    } else {
        Err(ApiError::no_call(id.as_str()))
    }
}

/// A path id; anything that is not a call id (including `..`) is a 404.
pub(super) fn call_id(raw: &str) -> Result<CallId, ApiError> {
    CallId::parse(raw).ok_or_else(|| ApiError::no_call(raw))
}

fn parse_source(s: &str) -> Result<Source, ApiError> {
    match s {
        "sip" => Ok(Source::Sip),
        "twilio" => Ok(Source::Twilio),
        _ => Err(ApiError::BadRequest("source must be sip or twilio".into())),
    }
}

fn instant(name: &str, s: &str) -> Result<u64, ApiError> {
    parse_instant(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{name} must be RFC 3339 (2024-05-01T12:00:00Z), a date or Unix seconds"
        ))
    })
}

/// A stored call as the API shows it: the record with RFC 3339 times and its duration.
/// A call record as the API shows it; `node` (`[node].name`) becomes its `source_node`, so
/// that records gathered from a fleet can be told apart.
pub(super) fn call_json(r: &CallRecord, now_ms: u64, live: bool, node: &str) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("started_at".into(), format_rfc3339(r.started_ms).into());
        map.insert(
            "answered_at".into(),
            r.answered_ms.map(format_rfc3339).into(),
        );
        map.insert("ended_at".into(), r.ended_ms.map(format_rfc3339).into());
        map.insert("duration_secs".into(), json!(r.duration_secs(now_ms)));
        map.insert("live".into(), live.into());
        map.insert("source_node".into(), node.into());
    }
    v
}

/// A live call as the console shows it (numbers masked).
fn live_json(h: &CallHandle, now_ms: u64) -> Value {
    let info = h.info();
    let live = h.live();
    let started = unix_ms(info.started_at);
    json!({
        "id": info.id,
        "source": info.source,
        "caller": mask_number(&info.caller),
        "callee": mask_number(&info.callee),
        "started_at": format_rfc3339(started),
        "duration_secs": now_ms.saturating_sub(started) as f64 / 1000.0,
        "answered": live.answered,
        "codec": live.codec,
        "listen": live.listen,
        "hold": live.hold,
        "level_dbfs": live.level_dbfs,
        "agent": live.agent,
        "talk": live.talk,
    })
}
