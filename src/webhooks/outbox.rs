//! What each event owes each webhook: the payloads (`{"type", "timestamp", "data"}`), their
//! stable message ids, and the [`Outbox`] hook the store calls inside an event's transaction.
//! Every delivery is owed in the same commit as the event that makes it owed:
//! - `call.*` and `agent.fallback`: with their call event;
//! - `transcript.ready`: with `call.ended`, when the call has transcript segments;
//! - `recording.ready`: held from `recording_started` (the promise) and released by
//!   `recording_finished` (duration and size of the final WAV); a crash between the two leaves
//!   it held for [`Webhooks`](super::Webhooks) to release at the next start;
//! - a call closed as interrupted when the store opens: `call.ended` (reason `interrupted`)
//!   and `transcript.ready`, in the transaction that closes it.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::call::{CallEvent, CallId};
use crate::config::{WebhookConfig, WebhookEvent};
use crate::store::timestamp::format_rfc3339;
use crate::store::{CallRecord, NewDelivery, Outbox};

/// A configured webhook and its outbox identity.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// A hash of the URL: which webhook a stored delivery is for, across restarts and
    /// reordered configs.
    pub id: u64,
    pub config: WebhookConfig,
}

impl Endpoint {
    pub fn new(config: WebhookConfig) -> Endpoint {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(config.url.as_str().as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        Endpoint {
            id: u64::from_be_bytes(id),
            config,
        }
    }
}

/// `recording.ready`: a call's WAV is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingReady {
    pub call_id: CallId,
    /// The API path that serves it: `/api/calls/{id}/recording`.
    pub url: String,
    pub duration_ms: u64,
    pub size_bytes: u64,
}

impl RecordingReady {
    pub fn new(call_id: CallId, duration_ms: u64, size_bytes: u64) -> RecordingReady {
        RecordingReady {
            url: format!("/api/calls/{call_id}/recording"),
            call_id,
            duration_ms,
            size_bytes,
        }
    }
}

/// The body sent for `event_type` with `data`, from the box named `node` (`[node].name`, so
/// that one receiver of a fleet's webhooks can tell the boxes apart).
pub fn envelope(node: &str, event_type: WebhookEvent, at_ms: u64, data: Value) -> String {
    json!({
        "type": event_type.as_str(),
        "timestamp": format_rfc3339(at_ms),
        "source_node": node,
        "data": data,
    })
    .to_string()
}

/// One delivery of `body` per endpoint subscribed to `event_type`.
pub fn fan_out(
    endpoints: &[Endpoint],
    event_type: WebhookEvent,
    msg_id: &str,
    body: &str,
) -> Vec<NewDelivery> {
    endpoints
        .iter()
        .filter(|e| e.config.events.contains(&event_type))
        .map(|e| NewDelivery {
            endpoint: e.id,
            url_host: e.config.url.host().to_owned(),
            msg_id: msg_id.to_owned(),
            event_type: event_type.as_str().to_owned(),
            body: body.to_owned(),
            held: false,
        })
        .collect()
}

/// The message id of a call's `recording.ready`: one per call, held or released.
pub fn recording_msg_id(call: &CallId) -> String {
    format!("msg_{call}_recording")
}

/// The call a `recording.ready` message id belongs to.
pub fn recording_call(msg_id: &str) -> Option<CallId> {
    msg_id
        .strip_prefix("msg_")?
        .strip_suffix("_recording")
        .and_then(CallId::parse)
}

/// `recording.ready` for `ready`, released (`held` false) or as the promise (`held` true).
pub fn recording_deliveries(
    endpoints: &[Endpoint],
    node: &str,
    ready: &RecordingReady,
    at_ms: u64,
    held: bool,
) -> Vec<NewDelivery> {
    let event = WebhookEvent::RecordingReady;
    let body = envelope(
        node,
        event,
        at_ms,
        serde_json::to_value(ready).unwrap_or_default(),
    );
    let mut owed = fan_out(endpoints, event, &recording_msg_id(&ready.call_id), &body);
    for d in &mut owed {
        d.held = held;
    }
    owed
}

/// The store hook: call events → deliveries.
#[derive(Debug)]
pub struct EventDeliveries {
    pub endpoints: Arc<[Endpoint]>,
    /// `[node].name`, the bodies' `source_node`.
    pub node: Arc<str>,
}

impl Outbox for EventDeliveries {
    fn deliveries(
        &self,
        event: &CallEvent,
        record: &CallRecord,
        seq: u64,
        at_ms: u64,
    ) -> Vec<NewDelivery> {
        match event {
            CallEvent::RecordingStarted { id, .. } => {
                return recording_deliveries(
                    &self.endpoints,
                    &self.node,
                    &RecordingReady::new(id.clone(), 0, 0),
                    at_ms,
                    true,
                );
            }
            CallEvent::RecordingFinished {
                id,
                duration_ms,
                size_bytes,
            } => {
                return recording_deliveries(
                    &self.endpoints,
                    &self.node,
                    &RecordingReady::new(id.clone(), *duration_ms, *size_bytes),
                    at_ms,
                    false,
                );
            }
            _ => {}
        }
        let Some((event_type, data)) = payload(event, record) else {
            return Vec::new();
        };
        // The event's global sequence number makes the id unique per event and stable.
        let msg_id = format!("msg_{}_{seq}", record.id);
        let mut deliveries = fan_out(
            &self.endpoints,
            event_type,
            &msg_id,
            &envelope(&self.node, event_type, at_ms, data),
        );
        if matches!(event, CallEvent::Ended { .. }) {
            deliveries.extend(self.transcript_ready(record, at_ms));
        }
        deliveries
    }

    fn interrupted(&self, record: &CallRecord, _seq: u64, at_ms: u64) -> Vec<NewDelivery> {
        let ended = record.ended_ms.unwrap_or(record.started_ms);
        let data = json!({
            "call_id": record.id,
            "source": record.source,
            "caller": record.caller,
            "callee": record.callee,
            "started_at": format_rfc3339(record.started_ms),
            "reason": "interrupted",
            "answered_at": record.answered_ms.map(format_rfc3339),
            "ended_at": format_rfc3339(ended),
            "duration_ms": ended.saturating_sub(record.started_ms),
        });
        let event = WebhookEvent::CallEnded;
        let mut deliveries = fan_out(
            &self.endpoints,
            event,
            &format!("msg_{}_interrupted", record.id),
            &envelope(&self.node, event, at_ms, data),
        );
        deliveries.extend(self.transcript_ready(record, at_ms));
        deliveries
    }
}

impl EventDeliveries {
    /// A call that was transcribed owes `transcript.ready` once it is over, in the same commit
    /// as its `call.ended`.
    fn transcript_ready(&self, record: &CallRecord, at_ms: u64) -> Vec<NewDelivery> {
        if record.transcript_segments == 0 {
            return Vec::new();
        }
        let ready = json!({
            "call_id": record.id,
            "url": format!("/api/calls/{}/transcript", record.id),
            "segments": record.transcript_segments,
        });
        fan_out(
            &self.endpoints,
            WebhookEvent::TranscriptReady,
            &format!("msg_{}_transcript", record.id),
            &envelope(&self.node, WebhookEvent::TranscriptReady, at_ms, ready),
        )
    }
}

/// The webhook type and `data` of a call event, if webhooks carry it.
fn payload(event: &CallEvent, record: &CallRecord) -> Option<(WebhookEvent, Value)> {
    let mut data = json!({
        "call_id": record.id,
        "source": record.source,
        "caller": record.caller,
        "callee": record.callee,
        "started_at": format_rfc3339(record.started_ms),
    });
    let extra = match event {
        CallEvent::Started { .. } => (WebhookEvent::CallStarted, json!({})),
        CallEvent::Answered { .. } => (
            WebhookEvent::CallAnswered,
            json!({ "codec": record.codec, "answered_at": record.answered_ms.map(format_rfc3339) }),
        ),
        CallEvent::Ended { reason, stats, .. } => {
            let ended = record.ended_ms.unwrap_or(record.started_ms);
            (
                WebhookEvent::CallEnded,
                json!({
                    "reason": reason.as_str(),
                    "answered_at": record.answered_ms.map(format_rfc3339),
                    "ended_at": format_rfc3339(ended),
                    "duration_ms": ended.saturating_sub(record.started_ms),
                    "stats": stats,
                }),
            )
        }
        CallEvent::AgentFallback { reason, .. } => (
            WebhookEvent::AgentFallback,
            json!({ "reason": reason.as_str() }),
        ),
        _ => return None,
    };
    if let (Value::Object(data), (_, Value::Object(more))) = (&mut data, &extra) {
        data.extend(more.clone());
    }
    Some((extra.0, data))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::{CallInfo, CallStats, EndReason, Source};
    use crate::config::WebhookUrl;
    use crate::store::timestamp::system_time;

    fn endpoint(url: &str, events: &[WebhookEvent]) -> Endpoint {
        Endpoint::new(WebhookConfig {
            url: WebhookUrl::parse(url).unwrap(),
            events: events.iter().copied().collect(),
            secret: crate::config::WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap(),
            allow_private: false,
            timeout_ms: 1000,
        })
    }

    #[test]
    fn each_event_goes_to_the_webhooks_subscribed_to_it_with_an_id_per_event() {
        let info = CallInfo {
            id: CallId::new(system_time(1_000_000), 1),
            source: Source::Sip,
            external_id: "x@y".into(),
            caller: "+15551234567".into(),
            callee: "1000".into(),
            started_at: system_time(1_000_000),
        };
        let mut record = CallRecord::new(&info);
        let hooks = EventDeliveries {
            endpoints: vec![
                endpoint("https://a.example.com/", &WebhookEvent::ALL),
                endpoint("https://b.example.com/", &[WebhookEvent::CallEnded]),
            ]
            .into(),
            node: "node-a".into(),
        };
        let started = hooks.deliveries(
            &CallEvent::Started { info: info.clone() },
            &record,
            7,
            1_000_000,
        );
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].msg_id, format!("msg_{}_7", info.id));
        let body: Value = serde_json::from_str(&started[0].body).unwrap();
        assert_eq!(body["type"], "call.started");
        assert_eq!(body["source_node"], "node-a");
        assert_eq!(body["data"]["caller"], "+15551234567");
        let ended = CallEvent::Ended {
            id: info.id.clone(),
            reason: EndReason::RemoteHangup,
            stats: CallStats::default(),
        };
        record.ended_ms = Some(1_004_000);
        let ended = hooks.deliveries(&ended, &record, 9, 1_004_000);
        assert_eq!(ended.len(), 2);
        assert_ne!(ended[0].endpoint, ended[1].endpoint);
        let body: Value = serde_json::from_str(&ended[1].body).unwrap();
        assert_eq!(
            (
                body["data"]["reason"].as_str(),
                body["data"]["duration_ms"].as_u64()
            ),
            (Some("remote hangup"), Some(4000))
        );
        assert!(
            hooks
                .deliveries(
                    &CallEvent::Hold {
                        id: info.id.clone(),
                        on: true
                    },
                    &record,
                    10,
                    0
                )
                .is_empty()
        );
    }

    /// Through a real store: a recording's `recording.ready` is owed (held) from
    /// `recording_started`, released by `recording_finished`; a call a crash left open owes
    /// `call.ended` (interrupted) from the open that closes it, and its recording stays owed.
    #[test]
    fn every_delivery_is_owed_in_the_commit_of_the_event_that_owes_it() {
        use crate::metrics::Metrics;
        use crate::store::{DeliveryState, Store};
        let path = crate::store::tests::temp_path("owed");
        let hook = || -> Option<Arc<dyn crate::store::Outbox>> {
            Some(Arc::new(EventDeliveries {
                endpoints: vec![endpoint("https://a.example.com/", &WebhookEvent::ALL)].into(),
                node: "node-a".into(),
            }))
        };
        let call = |n: u64| CallInfo {
            id: CallId::new(system_time(2_000_000 + n), 1),
            source: Source::Sip,
            external_id: format!("call-{n}@h"),
            caller: "+15551234567".into(),
            callee: "1000".into(),
            started_at: system_time(2_000_000 + n),
        };
        let (done, cut) = (call(1), call(2));
        let recording = |info: &CallInfo| CallEvent::RecordingStarted {
            id: info.id.clone(),
            path: format!("/tmp/{}.wav", info.id),
        };
        {
            let store = Store::open_with(&path, hook()).unwrap();
            store
                .write_events(
                    vec![
                        CallEvent::Started { info: done.clone() },
                        recording(&done),
                        CallEvent::Started { info: cut.clone() },
                        recording(&cut),
                        CallEvent::Ended {
                            id: done.id.clone(),
                            reason: EndReason::RemoteHangup,
                            stats: CallStats::default(),
                        },
                    ],
                    &Metrics::default(),
                )
                .unwrap();
            assert_eq!(store.held_deliveries(10).unwrap().len(), 2);
            store
                .write_events(
                    vec![CallEvent::RecordingFinished {
                        id: done.id.clone(),
                        duration_ms: 4000,
                        size_bytes: 128_044,
                    }],
                    &Metrics::default(),
                )
                .unwrap();
        }
        // Reopened after a crash: `cut` is closed and owes its call.ended at once.
        let store = Store::open_with(&path, hook()).unwrap();
        assert_eq!(store.interrupted_at_open(), std::slice::from_ref(&cut.id));
        let due = store.due_deliveries(u64::MAX, 100).unwrap();
        let types: Vec<(&str, &str)> = due
            .iter()
            .map(|d| (d.msg_id.as_str(), d.event_type.as_str()))
            .collect();
        let done_recording = recording_msg_id(&done.id);
        let cut_ended = format!("msg_{}_interrupted", cut.id);
        assert!(
            types.contains(&(done_recording.as_str(), "recording.ready"))
                && types.contains(&(cut_ended.as_str(), "call.ended")),
            "{types:?}"
        );
        let ready = due.iter().find(|d| d.msg_id == done_recording).unwrap();
        let body: Value = serde_json::from_str(ready.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            (
                body["data"]["duration_ms"].as_u64(),
                body["data"]["size_bytes"].as_u64()
            ),
            (Some(4000), Some(128_044))
        );
        let held = store.held_deliveries(10).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(
            (held[0].state, recording_call(&held[0].msg_id)),
            (DeliveryState::Held, Some(cut.id.clone()))
        );
    }
}
