//! What each event owes each webhook: the payloads (`{"type", "timestamp", "data"}`), their
//! stable message ids, and the [`Outbox`] hook the store thread calls inside an event's
//! transaction. Events that do not come through the store thread (`recording.ready`,
//! `transcript.ready`) are enqueued by [`Webhooks`](super::Webhooks) in a commit of their own.

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

/// The body sent for `event_type` with `data`.
pub fn envelope(event_type: WebhookEvent, at_ms: u64, data: Value) -> String {
    json!({
        "type": event_type.as_str(),
        "timestamp": format_rfc3339(at_ms),
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
        })
        .collect()
}

/// The store hook: call events → deliveries.
#[derive(Debug)]
pub struct EventDeliveries {
    pub endpoints: Arc<[Endpoint]>,
}

impl Outbox for EventDeliveries {
    fn deliveries(
        &self,
        event: &CallEvent,
        record: &CallRecord,
        seq: u64,
        at_ms: u64,
    ) -> Vec<NewDelivery> {
        let Some((event_type, data)) = payload(event, record) else {
            return Vec::new();
        };
        // The event's global sequence number makes the id unique per event and stable.
        let msg_id = format!("msg_{}_{seq}", record.id);
        let mut deliveries = fan_out(
            &self.endpoints,
            event_type,
            &msg_id,
            &envelope(event_type, at_ms, data),
        );
        // A call that was transcribed owes `transcript.ready` once it is over, in the same
        // commit as its `call.ended`.
        if matches!(event, CallEvent::Ended { .. }) && record.transcript_segments > 0 {
            let ready = json!({
                "call_id": record.id,
                "url": format!("/api/calls/{}/transcript", record.id),
                "segments": record.transcript_segments,
            });
            deliveries.extend(fan_out(
                &self.endpoints,
                WebhookEvent::TranscriptReady,
                &format!("msg_{}_transcript", record.id),
                &envelope(WebhookEvent::TranscriptReady, at_ms, ready),
            ));
        }
        deliveries
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
}
