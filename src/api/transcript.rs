//! `GET /api/calls/{id}/transcript`: a call's transcript — both sides, one segment per
//! conversation item, in the order they were spoken — as JSON, or as plain text with
//! `?format=txt`.
//!
//! Segments are the call's `transcript` events. They are keyed by item id: a later segment
//! with the same id (a retried write, a corrected transcription) replaces the earlier one.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::calls::call_id;
use super::{ApiError, ApiState, blocking, params};

/// One segment, as served.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Segment {
    speaker: String,
    text: String,
    start_ms: u64,
    end_ms: u64,
    item_id: String,
}

/// The call's segments from its events, deduplicated by item id, by start time.
fn segments(events: &[Value]) -> Vec<Segment> {
    let mut by_item: BTreeMap<String, Segment> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "transcript") {
        let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
        let segment = Segment {
            speaker: text("speaker"),
            text: text("text"),
            start_ms: e["start_ms"].as_u64().unwrap_or(0),
            end_ms: e["end_ms"].as_u64().unwrap_or(0),
            item_id: text("item_id"),
        };
        by_item.insert(segment.item_id.clone(), segment);
    }
    let mut segments: Vec<Segment> = by_item.into_values().collect();
    segments.sort_by_key(|s| (s.start_ms, s.end_ms));
    segments
}

/// `[mm:ss.s] speaker: text`, one line a segment.
fn as_text(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| {
            let secs = s.start_ms as f64 / 1000.0;
            let min = (secs / 60.0).floor();
            format!(
                "[{:02}:{:04.1}] {}: {}\n",
                min as u64,
                secs - min * 60.0,
                s.speaker,
                s.text.replace(['\r', '\n'], " ")
            )
        })
        .collect()
}

pub(super) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = params(query, &["format"])?;
    let text = match params.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("txt") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?}: \"json\" or \"txt\""
            )));
        }
    };
    let id = call_id(&id)?;
    let lookup = id.clone();
    let detail = blocking(&state, move |store| store.get(&lookup))
        .await??
        .ok_or_else(|| ApiError::no_call(id.as_str()))?;
    let segments = segments(&detail.events);
    if text {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            as_text(&segments),
        )
            .into_response());
    }
    Ok(Json(json!({ "call_id": id, "segments": segments })).into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_keyed_by_item_and_ordered_by_time() {
        let events = vec![
            json!({"type": "answered", "codec": "PCMU"}),
            json!({"type": "transcript", "speaker": "agent", "item_id": "b", "text": "Hi there", "start_ms": 2500, "end_ms": 3100}),
            json!({"type": "transcript", "speaker": "caller", "item_id": "a", "text": "draft", "start_ms": 1000, "end_ms": 2000}),
            json!({"type": "transcript", "speaker": "caller", "item_id": "a", "text": "Hello\nthere", "start_ms": 1000, "end_ms": 2000}),
        ];
        let s = segments(&events);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].item_id.as_str(), s[0].text.as_str()),
            ("a", "Hello\nthere")
        );
        assert_eq!(
            as_text(&s),
            "[00:01.0] caller: Hello there\n[00:02.5] agent: Hi there\n"
        );
    }
}
