//! What the store keeps of a call: the [`CallRecord`] (one row of the `calls` table), how each
//! [`CallEvent`] changes it, and the JSON form of a stored event (what `GET /api/calls/{id}`
//! lists and the event stream sends).
//!
//! Pure data and functions: the writer thread loads a record, [`CallRecord::apply`]s the event
//! and writes it back in the same transaction.

use serde::{Deserialize, Serialize};

use super::timestamp::format_rfc3339;
use crate::call::{
    CallEvent, CallId, CallInfo, CallStats, CarrierStatus, Direction, FallbackReason, Source,
    TransferMethod,
};

/// Most DTMF digits kept on a record (the events keep every one).
const MAX_DTMF: usize = 256;

/// Where a call is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// Started, not answered yet.
    Ringing,
    /// Answered, media flowing.
    Active,
    /// Over, with an end reason.
    Ended,
    /// Was ringing or active when earshot stopped without ending it (crash, power loss);
    /// closed at the next startup.
    Interrupted,
}

impl CallStatus {
    pub const ALL: [CallStatus; 4] = [
        CallStatus::Ringing,
        CallStatus::Active,
        CallStatus::Ended,
        CallStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Ringing => "ringing",
            CallStatus::Active => "active",
            CallStatus::Ended => "ended",
            CallStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Ringing or active: the call has not ended.
    pub fn is_open(self) -> bool {
        matches!(self, CallStatus::Ringing | CallStatus::Active)
    }
}

/// A call's recording file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingInfo {
    /// The WAV file, as the recorder named it; `None` when the recording never started.
    pub path: Option<String>,
    pub state: RecordingState,
    /// Why it stopped early or never started (disk full, write failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Being written.
    Recording,
    /// Closed with the call.
    Complete,
    /// Stopped before the call ended (the file holds what came before), or never started.
    Stopped,
    /// The call was interrupted; the file was repaired at startup.
    Interrupted,
    /// Removed by retention.
    Deleted,
}

/// One call, as stored. Times are Unix milliseconds (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: CallId,
    pub source: Source,
    /// The SIP Call-ID or Twilio CallSid.
    pub external_id: String,
    pub caller: String,
    pub callee: String,
    pub status: CallStatus,
    pub started_ms: u64,
    #[serde(default)]
    pub answered_ms: Option<u64>,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    #[serde(default)]
    pub end_reason: Option<String>,
    /// The negotiated codec (`PCMU`, `PCMA`).
    #[serde(default)]
    pub codec: Option<String>,
    /// Media counters, once the call has ended.
    #[serde(default)]
    pub stats: Option<CallStats>,
    #[serde(default)]
    pub recording: Option<RecordingInfo>,
    /// Digits pressed, in order (at most [`MAX_DTMF`]).
    #[serde(default)]
    pub dtmf: String,
    /// The carrier's latest status of the call (Twilio's status callback), when it sent one.
    #[serde(default)]
    pub carrier_status: Option<CarrierStatus>,
    /// The call's voice agent, when it had one.
    #[serde(default)]
    pub agent: Option<AgentRecord>,
    /// Transcript segments written for the call.
    #[serde(default)]
    pub transcript_segments: u32,
    /// Inbound, or placed by earshot.
    #[serde(default)]
    pub direction: Direction,
    /// Who the caller was handed to, and how, once a transfer was done.
    #[serde(default)]
    pub transfer: Option<TransferRecord>,
}

/// A call's transfer that was done (attempts that failed are in its events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The destination (personal data).
    pub to: String,
    pub method: TransferMethod,
}

/// What became of a call's agent session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Milliseconds the agent took to answer its WebSocket upgrade.
    #[serde(default)]
    pub connect_ms: Option<u64>,
    /// Why the session was given up, if it was.
    #[serde(default)]
    pub fallback: Option<FallbackReason>,
}

impl CallRecord {
    /// A new ringing call.
    pub fn new(info: &CallInfo) -> Self {
        Self {
            id: info.id.clone(),
            source: info.source,
            external_id: info.external_id.clone(),
            caller: info.caller.clone(),
            callee: info.callee.clone(),
            status: CallStatus::Ringing,
            started_ms: super::timestamp::unix_ms(info.started_at),
            answered_ms: None,
            ended_ms: None,
            end_reason: None,
            codec: None,
            stats: None,
            recording: None,
            dtmf: String::new(),
            carrier_status: None,
            agent: None,
            transcript_segments: 0,
            direction: Direction::Inbound,
            transfer: None,
        }
    }

    /// Seconds from start to end (or to `now_ms` while the call is open).
    pub fn duration_secs(&self, now_ms: u64) -> f64 {
        let end = self.ended_ms.unwrap_or(now_ms).max(self.started_ms);
        (end - self.started_ms) as f64 / 1000.0
    }

    /// Applies one event that happened at `at_ms`; returns whether it changed anything worth
    /// recording. A `Started` for an open record that already exists is the same call starting
    /// again (a reconnect with the same external id) and changes nothing. An ended (or
    /// interrupted) call never opens again: a later `Started`, `Answered` or `Ended` changes
    /// nothing and is not recorded (a replayed webhook, a reused Call-ID). A carrier status
    /// that repeats the stored one, or belongs to an earlier stage of the call (callbacks are
    /// retried and can cross), changes nothing.
    pub fn apply(&mut self, event: &CallEvent, at_ms: u64) -> bool {
        let lifecycle = matches!(
            event,
            CallEvent::Started { .. } | CallEvent::Answered { .. } | CallEvent::Ended { .. }
        );
        if lifecycle && !self.status.is_open() {
            return false;
        }
        match event {
            CallEvent::Started { .. } => {}
            CallEvent::Answered { codec, .. } => {
                self.status = CallStatus::Active;
                self.answered_ms.get_or_insert(at_ms);
                self.codec = Some(codec.name().to_owned());
            }
            CallEvent::Dtmf { digit, .. } => {
                if self.dtmf.len() < MAX_DTMF {
                    self.dtmf.push(*digit);
                }
            }
            CallEvent::Hold { .. } | CallEvent::Listen { .. } => {}
            CallEvent::TalkStarted { .. } | CallEvent::TalkStopped { .. } => {}
            CallEvent::AgentConnected { connect_ms, .. } => {
                self.agent.get_or_insert_default().connect_ms = Some(*connect_ms);
            }
            CallEvent::AgentFallback { reason, .. } => {
                self.agent.get_or_insert_default().fallback = Some(*reason);
            }
            CallEvent::Transcript { .. } => {
                self.transcript_segments = self.transcript_segments.saturating_add(1);
            }
            CallEvent::Placed { .. } => self.direction = Direction::Outbound,
            // Kept in the call's timeline only.
            CallEvent::AgentNotice { .. }
            | CallEvent::RecordingFinished { .. }
            | CallEvent::Ringing { .. }
            | CallEvent::Failed { .. }
            | CallEvent::TransferRequested { .. }
            | CallEvent::TransferFailed { .. } => {}
            CallEvent::Transferred { to, method, .. } => {
                self.transfer = Some(TransferRecord {
                    to: to.clone(),
                    method: *method,
                });
            }
            CallEvent::RecordingStarted { path, .. } => {
                self.recording = Some(RecordingInfo {
                    path: Some(path.clone()),
                    state: RecordingState::Recording,
                    reason: None,
                });
            }
            CallEvent::RecordingStopped { reason, .. } => {
                let recording = self.recording.get_or_insert(RecordingInfo {
                    path: None,
                    state: RecordingState::Stopped,
                    reason: None,
                });
                recording.state = RecordingState::Stopped;
                recording.reason = Some(reason.clone());
            }
            CallEvent::Ended { reason, stats, .. } => {
                self.status = CallStatus::Ended;
                self.ended_ms = Some(at_ms.max(self.started_ms));
                self.end_reason = Some(reason.to_string());
                self.stats = Some(stats.clone());
                self.finish_recording(RecordingState::Complete);
            }
            CallEvent::CarrierStatus { status, .. } => {
                if self
                    .carrier_status
                    .is_some_and(|known| known.stage() >= status.stage())
                {
                    return false;
                }
                self.carrier_status = Some(*status);
            }
        }
        true
    }

    /// Closes a call that was open when earshot stopped, as of its last event `last_ms`.
    pub fn interrupt(&mut self, last_ms: u64) {
        self.status = CallStatus::Interrupted;
        self.ended_ms = Some(last_ms.max(self.started_ms));
        self.end_reason = Some("earshot stopped during the call".to_owned());
        self.finish_recording(RecordingState::Interrupted);
    }

    fn finish_recording(&mut self, state: RecordingState) {
        if let Some(recording) = &mut self.recording
            && recording.state == RecordingState::Recording
        {
            recording.state = state;
        }
    }
}

/// The JSON of one stored event: `{"seq", "at", "at_ms", "call_id", "type", ...fields}`, the
/// fields being the event's own (a `started` event carries the call's source, external id and
/// numbers). Stored as is and sent as is on the event stream.
pub fn event_json(seq: u64, at_ms: u64, call_id: &CallId, event: &CallEvent) -> String {
    let mut fields = match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    fields.remove("id");
    if let Some(serde_json::Value::Object(info)) = fields.remove("info") {
        for (key, value) in info {
            if key != "id" && key != "started_at" {
                fields.insert(key, value);
            }
        }
    }
    extra_event_json(seq, at_ms, call_id, fields)
}

/// The JSON of an event the store itself records (`interrupted`, `recording_deleted`).
pub fn store_event_json(
    seq: u64,
    at_ms: u64,
    call_id: &CallId,
    kind: &str,
    reason: &str,
) -> String {
    let mut fields = serde_json::Map::new();
    fields.insert("type".into(), kind.into());
    fields.insert("reason".into(), reason.into());
    extra_event_json(seq, at_ms, call_id, fields)
}

fn extra_event_json(
    seq: u64,
    at_ms: u64,
    call_id: &CallId,
    fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut out = serde_json::Map::new();
    out.insert("seq".into(), seq.into());
    out.insert("at".into(), format_rfc3339(at_ms).into());
    out.insert("at_ms".into(), at_ms.into());
    out.insert("call_id".into(), call_id.as_str().into());
    out.extend(fields);
    serde_json::Value::Object(out).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::timestamp::system_time;

    fn info() -> CallInfo {
        CallInfo {
            id: CallId::new(system_time(1_000_000), 1),
            source: Source::Sip,
            external_id: "abc@host".into(),
            caller: "+15551234567".into(),
            callee: "1000".into(),
            started_at: system_time(1_000_000),
        }
    }

    #[test]
    fn lifecycle_moves_ringing_to_active_to_ended_with_stats_and_recording() {
        let info = info();
        let id = info.id.clone();
        let mut r = CallRecord::new(&info);
        assert_eq!(r.status, CallStatus::Ringing);
        r.apply(
            &CallEvent::Answered {
                id: id.clone(),
                codec: crate::call::Codec::Pcmu,
            },
            1_000_500,
        );
        r.apply(
            &CallEvent::RecordingStarted {
                id: id.clone(),
                path: "recordings/x.wav".into(),
            },
            1_000_600,
        );
        r.apply(
            &CallEvent::Dtmf {
                id: id.clone(),
                digit: '5',
                duration_ms: 100,
                via: crate::call::DtmfSource::Rfc4733,
            },
            1_001_000,
        );
        assert_eq!(
            (r.status, r.answered_ms, r.dtmf.as_str()),
            (CallStatus::Active, Some(1_000_500), "5")
        );
        let stats = CallStats {
            packets_received: 10,
            ..CallStats::default()
        };
        r.apply(
            &CallEvent::Ended {
                id,
                reason: crate::call::EndReason::RemoteHangup,
                stats: stats.clone(),
            },
            1_003_000,
        );
        assert_eq!(r.status, CallStatus::Ended);
        assert_eq!(r.stats, Some(stats));
        assert_eq!(r.duration_secs(0), 3.0);
        assert_eq!(r.recording.unwrap().state, RecordingState::Complete);
    }

    #[test]
    fn an_ended_call_never_opens_again_nor_ends_twice() {
        let info = info();
        let id = info.id.clone();
        let mut r = CallRecord::new(&info);
        let ended = |reason| CallEvent::Ended {
            id: id.clone(),
            reason,
            stats: CallStats::default(),
        };
        assert!(r.apply(&ended(crate::call::EndReason::RemoteHangup), 1_002_000));
        let before = r.clone();
        assert!(!r.apply(&CallEvent::Started { info: info.clone() }, 1_005_000));
        assert!(!r.apply(
            &CallEvent::Answered {
                id: id.clone(),
                codec: crate::call::Codec::Pcma,
            },
            1_005_100
        ));
        assert!(!r.apply(&ended(crate::call::EndReason::LocalHangup), 1_006_000));
        assert_eq!(r, before);
        assert_eq!(r.ended_ms, Some(1_002_000));
        // An interrupted call is closed the same way.
        let mut r = CallRecord::new(&info);
        r.interrupt(1_001_000);
        assert!(!r.apply(&CallEvent::Started { info }, 1_005_000));
        assert_eq!(r.status, CallStatus::Interrupted);
    }

    #[test]
    fn carrier_status_moves_forward_only_and_repeats_change_nothing() {
        let info = info();
        let mut r = CallRecord::new(&info);
        let status = |status| CallEvent::CarrierStatus {
            id: info.id.clone(),
            status,
        };
        assert!(r.apply(&status(CarrierStatus::InProgress), 1_000_100));
        assert!(!r.apply(&status(CarrierStatus::InProgress), 1_000_200));
        assert!(!r.apply(&status(CarrierStatus::Ringing), 1_000_300));
        assert!(r.apply(&status(CarrierStatus::Completed), 1_000_400));
        assert!(!r.apply(&status(CarrierStatus::Failed), 1_000_500));
        assert_eq!(r.carrier_status, Some(CarrierStatus::Completed));
        // The carrier's view does not end the call's own record.
        assert_eq!(r.status, CallStatus::Ringing);
    }

    #[test]
    fn interrupted_call_ends_at_its_last_event_and_keeps_a_stopped_recording_reason() {
        let info = info();
        let mut r = CallRecord::new(&info);
        r.apply(
            &CallEvent::RecordingStopped {
                id: info.id.clone(),
                reason: "disk full".into(),
            },
            1_000_100,
        );
        r.interrupt(1_000_200);
        assert_eq!(
            (r.status, r.ended_ms),
            (CallStatus::Interrupted, Some(1_000_200))
        );
        let rec = r.recording.unwrap();
        assert_eq!(
            (rec.state, rec.reason.as_deref()),
            (RecordingState::Stopped, Some("disk full"))
        );
    }

    #[test]
    fn started_event_json_is_flat_with_seq_time_and_numbers() {
        let info = info();
        let json = event_json(
            7,
            1_000_000,
            &info.id,
            &CallEvent::Started { info: info.clone() },
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["type"], "started");
        assert_eq!(v["caller"], "+15551234567");
        assert_eq!(v["call_id"], info.id.as_str());
        assert_eq!(v["at"], "1970-01-01T00:16:40.000Z");
        assert!(
            v.get("info").is_none() && v.get("started_at").is_none(),
            "{json}"
        );
    }
}
