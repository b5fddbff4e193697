//! `GET /api/calls/{id}/recording`: a call's WAV file, with single byte ranges (RFC 9110 §14)
//! so browsers can seek: `206 Partial Content` with `Content-Range`, `416` with
//! `Content-Range: bytes */len` for a range outside the file, `Accept-Ranges: bytes` always.
//! `?download=true` adds `Content-Disposition: attachment`.
//!
//! The file is read in chunks as the client takes them, never whole into memory. The path
//! comes from the store (what the recorder reported), never from the request.

use std::io::SeekFrom;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::calls::call_id;
use super::{ApiError, ApiState, blocking, params};
use crate::store::RecordingState;

/// Bytes read per chunk of the body.
const CHUNK: usize = 64 * 1024;

/// What a `Range` header asks of a file of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ranged {
    /// No usable range: the whole file (also for syntax we ignore, as RFC 9110 allows).
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A valid range that misses the file.
    Unsatisfiable,
}

/// Parses `Range: bytes=a-b | a- | -n`; several ranges are served whole.
pub(super) fn parse_range(header: Option<&str>, len: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if first.is_empty() {
        // A suffix: the last n bytes.
        return match number(last) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if len == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return Ranged::Whole;
    };
    let end = match (last.is_empty(), number(last)) {
        (true, _) => None,
        (false, Some(end)) if end >= start => Some(end),
        (false, _) => return Ranged::Whole,
    };
    if start >= len {
        return Ranged::Unsatisfiable;
    }
    Ranged::Part {
        start,
        end: end.map_or(len - 1, |e| e.min(len - 1)),
    }
}

/// The handler.
pub(super) async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query, &["download"])?;
    let download = match p.get("download").map(String::as_str) {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "download must be true or false".into(),
            ));
        }
    };
    let id = call_id(&id)?;
    let lookup = id.clone();
    let record = blocking(&state, move |store| store.get_record(&lookup))
        .await??
        .ok_or_else(|| ApiError::no_call(id.as_str()))?;
    let recording = record
        .recording
        .ok_or_else(|| ApiError::NotFound(format!("call {id} has no recording")))?;
    if recording.state == RecordingState::Deleted {
        return Err(ApiError::NotFound(format!(
            "the recording of call {id} was deleted by retention"
        )));
    }
    let path = recording
        .path
        .ok_or_else(|| ApiError::NotFound(format!("call {id} has no recording")))?;
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NotFound(format!(
                "the recording of call {id} is missing"
            )));
        }
        Err(e) => return Err(ApiError::internal("cannot open recording", e)),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal("cannot stat recording", e))?
        .len();
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (status, start, count) = match range {
        Ranged::Whole => (StatusCode::OK, 0, len),
        Ranged::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Ranged::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable(len)),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal("cannot seek recording", e))?;
    }
    let body = futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
        match file.read(&mut buf).await {
            // The file shrank (retention deleted it mid-download): end the body early.
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(buf)),
                    (file, left - n as u64),
                ))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    let disposition = if download { "attachment" } else { "inline" };
    if let Ok(v) = HeaderValue::from_str(&format!("{disposition}; filename=\"{id}.wav\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110_byte_range_rules() {
        let len = 1000;
        let r = |h: &str| parse_range(Some(h), len);
        assert_eq!(r("bytes=0-99"), Ranged::Part { start: 0, end: 99 });
        assert_eq!(
            r("bytes=900-"),
            Ranged::Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=990-5000"),
            Ranged::Part {
                start: 990,
                end: 999
            }
        );
        assert_eq!(
            r("bytes=-100"),
            Ranged::Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(r("bytes=-5000"), Ranged::Part { start: 0, end: 999 });
        assert_eq!(r("bytes=1000-"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Ranged::Unsatisfiable);
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=1-x",
            "bytes=-",
        ] {
            assert_eq!(r(ignored), Ranged::Whole, "{ignored}");
        }
        assert_eq!(parse_range(None, len), Ranged::Whole);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Ranged::Unsatisfiable);
    }
}
