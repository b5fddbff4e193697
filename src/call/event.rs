//! What happens to calls, as values: the lifecycle events every call reports (to the store,
//! which persists them and feeds the live event stream), and the identity of a call.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use super::transfer::{TransferFailure, TransferMethod, TransferOrigin};
pub use crate::sip::sdp::Codec;

/// A call's id: unique across restarts, sortable by start time, and safe in file names
/// (`c` + 12 hex digits of Unix milliseconds + 8 random hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(String);

impl CallId {
    /// A fresh id for a call starting at `at`, with `random` bits from the caller.
    pub fn new(at: SystemTime, random: u32) -> Self {
        let ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Self(format!("c{ms:012x}{random:08x}"))
    }

    /// Accepts only ids of the form [`CallId::new`] makes, so a path or query can never name
    /// anything else (no traversal through an id).
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix('c')?;
        (hex.len() == 20
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a call came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Sip,
    Twilio,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sip => "sip",
            Source::Twilio => "twilio",
        }
    }
}

/// What is known of a call when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    pub id: CallId,
    pub source: Source,
    /// The source's own id: the SIP Call-ID, or Twilio's CallSid. Used for idempotency.
    pub external_id: String,
    /// The caller's number or user (personal data: never logged at info level).
    pub caller: String,
    /// The number or user called.
    pub callee: String,
    pub started_at: SystemTime,
}

/// Media counters of a finished call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    pub packets_received: u64,
    pub packets_lost: i64,
    pub packets_sent: u64,
    pub jitter_ms: f64,
    /// Frames the jitter buffer concealed.
    pub concealed_frames: u64,
    /// Mean jitter-buffer target delay over the call, in ms.
    pub jitter_delay_ms: u32,
    pub malformed_packets: u64,
    /// What happened to the caller's frames on their way into the recording.
    #[serde(default)]
    pub recording: RecordingFrames,
}

/// What can happen to a caller's frame on its way into the recording
/// ([`crate::media::record_lane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordingFrameKind {
    /// Arrived after a later one and was put back in its place.
    Reordered,
    /// Arrived after its place had been concealed: not recorded.
    Late,
    /// Arrived twice: recorded once.
    Duplicate,
    /// Never arrived while a later one did: concealed in the recording.
    Concealed,
}

impl RecordingFrameKind {
    /// The name in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingFrameKind::Reordered => "reordered",
            RecordingFrameKind::Late => "late",
            RecordingFrameKind::Duplicate => "duplicate",
            RecordingFrameKind::Concealed => "concealed",
        }
    }

    pub const ALL: [RecordingFrameKind; 4] = [
        RecordingFrameKind::Reordered,
        RecordingFrameKind::Late,
        RecordingFrameKind::Duplicate,
        RecordingFrameKind::Concealed,
    ];
}

/// A call's recording counters by [`RecordingFrameKind`]: packets, and concealment in 20 ms
/// frames (10 ms halves rounded up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFrames {
    pub reordered: u64,
    pub late: u64,
    pub duplicates: u64,
    pub concealed: u64,
}

impl RecordingFrames {
    /// The lane's counters as recording counters.
    pub fn from_lane(lane: &crate::media::record_lane::LaneStats) -> Self {
        Self {
            reordered: lane.reordered,
            late: lane.late,
            duplicates: lane.duplicates,
            concealed: lane.concealed_units.div_ceil(2),
        }
    }

    /// The count of one kind.
    pub fn get(&self, kind: RecordingFrameKind) -> u64 {
        match kind {
            RecordingFrameKind::Reordered => self.reordered,
            RecordingFrameKind::Late => self.late,
            RecordingFrameKind::Duplicate => self.duplicates,
            RecordingFrameKind::Concealed => self.concealed,
        }
    }
}

/// How a caller's key press reached earshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event packets in the RTP stream.
    #[serde(rename = "rfc4733")]
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    #[serde(rename = "sip-info")]
    SipInfo,
    /// A Twilio Media Stream `dtmf` message.
    #[serde(rename = "twilio")]
    Twilio,
}

impl DtmfSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfSource::Rfc4733 => "rfc4733",
            DtmfSource::SipInfo => "sip-info",
            DtmfSource::Twilio => "twilio",
        }
    }
}

impl fmt::Display for DtmfSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call ended. Stored and shown as its text ([`EndReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum EndReason {
    /// The caller hung up (SIP BYE, Twilio `stop`).
    RemoteHangup,
    /// The caller cancelled before the answer.
    Cancelled,
    /// We hung up: the API, the console.
    LocalHangup,
    /// The INVITE was refused with this status.
    Rejected(u16),
    /// The caller never acknowledged our answer.
    NoAck,
    /// `[calls].max_duration_secs`.
    MaxDuration,
    /// No media from the caller for `[rtp].silence_timeout_secs`.
    MediaTimeout,
    /// earshot was stopped.
    Shutdown,
    /// The caller's WebSocket closed without a `stop`.
    StreamClosed,
    /// A Twilio stream whose `start` never came.
    HandshakeTimeout,
    /// The carrier reported the call over (Twilio status callback).
    Carrier(CarrierStatus),
    /// The agent hung up: its socket closed normally, or it asked through the call REST.
    AgentHangup,
    /// The agent failed and the fallback hung up.
    AgentFailed,
    /// RFC 4028: the SIP session was not refreshed in time (or our refresh failed).
    SessionExpired,
    /// The caller was transferred elsewhere (SIP REFER) and earshot's leg ended.
    Transferred,
    /// The caller was bridged to a transfer target, and the target hung up.
    TargetHangup,
    /// A `[[calls.dtmf_rule]]` with `action = "hangup"`.
    DtmfHangup,
    /// The caller asked for a transfer (REFER) and hung up; the target could not be reached.
    ReferFailed,
}

impl EndReason {
    const FIXED: [EndReason; 17] = [
        EndReason::RemoteHangup,
        EndReason::Cancelled,
        EndReason::LocalHangup,
        EndReason::NoAck,
        EndReason::MaxDuration,
        EndReason::MediaTimeout,
        EndReason::Shutdown,
        EndReason::StreamClosed,
        EndReason::HandshakeTimeout,
        EndReason::AgentHangup,
        EndReason::AgentFailed,
        EndReason::Transferred,
        EndReason::DtmfHangup,
        EndReason::Carrier(CarrierStatus::Completed),
        EndReason::SessionExpired,
        EndReason::TargetHangup,
        EndReason::ReferFailed,
    ];

    /// The reason as stored and shown (`remote hangup`, `rejected 486`, `twilio busy`, ...).
    pub fn as_str(self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            EndReason::RemoteHangup => Borrowed("remote hangup"),
            EndReason::Cancelled => Borrowed("cancelled"),
            EndReason::LocalHangup => Borrowed("local hangup"),
            EndReason::Rejected(status) => Owned(format!("rejected {status}")),
            EndReason::NoAck => Borrowed("no ack"),
            EndReason::MaxDuration => Borrowed("max duration"),
            EndReason::MediaTimeout => Borrowed("media timeout"),
            EndReason::Shutdown => Borrowed("shutdown"),
            EndReason::StreamClosed => Borrowed("stream closed"),
            EndReason::HandshakeTimeout => Borrowed("handshake timeout"),
            EndReason::Carrier(status) => Owned(format!("twilio {status}")),
            EndReason::AgentHangup => Borrowed("agent hangup"),
            EndReason::AgentFailed => Borrowed("agent failed"),
            EndReason::SessionExpired => Borrowed("session_expired"),
            EndReason::Transferred => Borrowed("transferred"),
            EndReason::TargetHangup => Borrowed("target hangup"),
            EndReason::DtmfHangup => Borrowed("dtmf hangup"),
            EndReason::ReferFailed => Borrowed("refer failed"),
        }
    }

    /// Reads a stored reason back; the names of earlier versions are taken too.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(status) = s.strip_prefix("rejected ") {
            return status.parse().ok().map(EndReason::Rejected);
        }
        if let Some(status) = s.strip_prefix("twilio ") {
            return CarrierStatus::parse(status).map(EndReason::Carrier);
        }
        match s {
            "rtp timeout" | "stream timeout" => return Some(EndReason::MediaTimeout),
            "stream over" => return Some(EndReason::StreamClosed),
            _ => {}
        }
        Self::FIXED.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl From<EndReason> for String {
    fn from(reason: EndReason) -> String {
        reason.as_str().into_owned()
    }
}

impl TryFrom<String> for EndReason {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        EndReason::parse(&s).ok_or_else(|| format!("unknown end reason {s:?}"))
    }
}

/// Why a call's agent session was given up and the `[agent].fallback` taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    /// The agent refused the connection (or its address did not resolve).
    Refused,
    /// No answer within `[agent].connect_timeout_ms`.
    ConnectTimeout,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The WebSocket upgrade was refused (an HTTP status instead of 101).
    Handshake,
    /// The socket closed abnormally mid-call (no close frame, or an error code).
    Closed,
    /// More than `[agent].max_concurrent` agent sessions.
    Busy,
    /// The agent stopped reading: earshot's sends to it backed up.
    NotReading,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Refused => "refused",
            FallbackReason::ConnectTimeout => "connect_timeout",
            FallbackReason::Tls => "tls",
            FallbackReason::Handshake => "handshake",
            FallbackReason::Closed => "closed",
            FallbackReason::Busy => "busy",
            FallbackReason::NotReading => "not_reading",
        }
    }

    pub const ALL: [FallbackReason; 7] = [
        FallbackReason::Refused,
        FallbackReason::ConnectTimeout,
        FallbackReason::Tls,
        FallbackReason::Handshake,
        FallbackReason::Closed,
        FallbackReason::Busy,
        FallbackReason::NotReading,
    ];
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an outbound call failed before its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceFailure {
    /// The far end refused (a 4xx, 5xx or 6xx).
    Rejected,
    /// The trunk's credentials were refused, or its challenge could not be answered.
    AuthFailed,
    /// Nothing answered the INVITE.
    Timeout,
    /// The ring timeout passed and the call was cancelled.
    NoAnswer,
    /// Hung up from earshot's side before the answer.
    Cancelled,
    /// Redirected too often, in a loop, or to nowhere usable.
    Redirect,
    /// The answer's media could not be used.
    UnusableAnswer,
}

impl PlaceFailure {
    pub const ALL: [PlaceFailure; 7] = [
        PlaceFailure::Rejected,
        PlaceFailure::AuthFailed,
        PlaceFailure::Timeout,
        PlaceFailure::NoAnswer,
        PlaceFailure::Cancelled,
        PlaceFailure::Redirect,
        PlaceFailure::UnusableAnswer,
    ];

    /// The name in events and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PlaceFailure::Rejected => "rejected",
            PlaceFailure::AuthFailed => "auth_failed",
            PlaceFailure::Timeout => "timeout",
            PlaceFailure::NoAnswer => "no_answer",
            PlaceFailure::Cancelled => "cancelled",
            PlaceFailure::Redirect => "redirect",
            PlaceFailure::UnusableAnswer => "unusable_answer",
        }
    }
}

/// Which way a call goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// It called earshot.
    #[default]
    Inbound,
    /// earshot placed it.
    Outbound,
}

/// Who said a transcript segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    Caller,
    Agent,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Caller => "caller",
            Speaker::Agent => "agent",
        }
    }
}

/// What an agent service reported about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentNoticeKind {
    /// The service reported an error.
    Error,
    /// The service reported its rate limits running low.
    RateLimited,
}

/// Why the operator's microphone left a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TalkStopReason {
    /// The operator let go (`{"on": false}`).
    Released,
    /// The operator took the microphone to another call.
    Moved,
    /// The call ended while the operator talked.
    CallEnded,
}

/// One thing that happened to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallEvent {
    Started {
        info: CallInfo,
    },
    Answered {
        id: CallId,
        codec: Codec,
    },
    Dtmf {
        id: CallId,
        digit: char,
        duration_ms: u32,
        via: DtmfSource,
    },
    Hold {
        id: CallId,
        on: bool,
    },
    Listen {
        id: CallId,
        on: bool,
    },
    /// The operator took the box's microphone on this call: their voice replaces the
    /// responder's. With `takeover` the call's agent session was ended for good; without, the
    /// agent is paused until the operator lets go.
    TalkStarted {
        id: CallId,
        takeover: bool,
    },
    /// The operator's microphone left this call.
    TalkStopped {
        id: CallId,
        reason: TalkStopReason,
    },
    RecordingStarted {
        id: CallId,
        path: String,
    },
    RecordingStopped {
        id: CallId,
        reason: String,
    },
    /// The call's WAV is finalized: its header is final and it is complete on disk.
    RecordingFinished {
        id: CallId,
        duration_ms: u64,
        size_bytes: u64,
    },
    /// The call's agent answered its WebSocket upgrade.
    AgentConnected {
        id: CallId,
        connect_ms: u64,
    },
    /// The call's agent session failed; the `[agent].fallback` was taken.
    AgentFallback {
        id: CallId,
        reason: FallbackReason,
    },
    /// One finished transcript segment (personal data: never logged at info level). Segments
    /// are keyed by `item_id`: a later one with the same id replaces the earlier.
    Transcript {
        id: CallId,
        speaker: Speaker,
        item_id: String,
        text: String,
        /// Milliseconds from the call's start.
        start_ms: u64,
        end_ms: u64,
    },
    /// The agent service reported an error or its rate limits.
    AgentNotice {
        id: CallId,
        kind: AgentNoticeKind,
        code: String,
        message: String,
    },
    /// A transfer was asked for and the leg began it (numbers are personal data: never
    /// logged at info level).
    TransferRequested {
        id: CallId,
        to: String,
        method: TransferMethod,
        by: TransferOrigin,
    },
    /// The caller was handed to `to`: by REFER or to Twilio, the call ends with
    /// [`EndReason::Transferred`]; bridged, it goes on with the target as its responder.
    Transferred {
        id: CallId,
        to: String,
        method: TransferMethod,
    },
    /// A transfer did not happen; the call goes on.
    TransferFailed {
        id: CallId,
        to: String,
        reason: TransferFailure,
    },
    Ended {
        id: CallId,
        reason: EndReason,
        stats: CallStats,
    },
    /// An outbound call: placed by earshot (`POST /api/calls`), through this trunk if any.
    /// Comes right after `Started`; the call record's direction is outbound from here.
    Placed {
        id: CallId,
        trunk: Option<String>,
    },
    /// The callee's side reported progress (SIP 180 or 183): ringing, and early media when
    /// the far end sent an SDP answer with it.
    Ringing {
        id: CallId,
        early_media: bool,
    },
    /// An outbound call failed before its answer: the SIP final status (408 when nothing
    /// answered) and why.
    Failed {
        id: CallId,
        status: u16,
        reason: PlaceFailure,
    },
    /// The carrier's own view of the call changed (Twilio's status callback `CallStatus`:
    /// `ringing`, `in-progress`, `completed`, `busy`, ...). May arrive after `Ended`.
    CarrierStatus {
        id: CallId,
        status: CarrierStatus,
    },
}

impl CallEvent {
    pub fn call_id(&self) -> &CallId {
        match self {
            CallEvent::Started { info } => &info.id,
            CallEvent::Answered { id, .. }
            | CallEvent::Dtmf { id, .. }
            | CallEvent::Hold { id, .. }
            | CallEvent::Listen { id, .. }
            | CallEvent::TalkStarted { id, .. }
            | CallEvent::TalkStopped { id, .. }
            | CallEvent::RecordingStarted { id, .. }
            | CallEvent::RecordingStopped { id, .. }
            | CallEvent::RecordingFinished { id, .. }
            | CallEvent::AgentConnected { id, .. }
            | CallEvent::AgentFallback { id, .. }
            | CallEvent::Transcript { id, .. }
            | CallEvent::AgentNotice { id, .. }
            | CallEvent::TransferRequested { id, .. }
            | CallEvent::Transferred { id, .. }
            | CallEvent::TransferFailed { id, .. }
            | CallEvent::Ended { id, .. }
            | CallEvent::Placed { id, .. }
            | CallEvent::Ringing { id, .. }
            | CallEvent::Failed { id, .. }
            | CallEvent::CarrierStatus { id, .. } => id,
        }
    }

    /// Whether the call's history must have it whatever the load (see
    /// [`EventSink`](super::EventSink)); the rest (DTMF, hold, listen, agent notices) can be
    /// repeated at will by a far end and are dropped, counted, when the store falls behind.
    pub fn is_lifecycle(&self) -> bool {
        !matches!(
            self,
            CallEvent::Dtmf { .. }
                | CallEvent::Hold { .. }
                | CallEvent::Listen { .. }
                | CallEvent::AgentNotice { .. }
        )
    }

    /// The event's name in the store and the event stream.
    pub fn kind(&self) -> &'static str {
        match self {
            CallEvent::Started { .. } => "started",
            CallEvent::Answered { .. } => "answered",
            CallEvent::Dtmf { .. } => "dtmf",
            CallEvent::Hold { .. } => "hold",
            CallEvent::Listen { .. } => "listen",
            CallEvent::TalkStarted { .. } => "talk_started",
            CallEvent::TalkStopped { .. } => "talk_stopped",
            CallEvent::RecordingStarted { .. } => "recording_started",
            CallEvent::RecordingStopped { .. } => "recording_stopped",
            CallEvent::RecordingFinished { .. } => "recording_finished",
            CallEvent::AgentConnected { .. } => "agent_connected",
            CallEvent::AgentFallback { .. } => "agent_fallback",
            CallEvent::Transcript { .. } => "transcript",
            CallEvent::AgentNotice { .. } => "agent_notice",
            CallEvent::TransferRequested { .. } => "transfer_requested",
            CallEvent::Transferred { .. } => "transferred",
            CallEvent::TransferFailed { .. } => "transfer_failed",
            CallEvent::Ended { .. } => "ended",
            CallEvent::CarrierStatus { .. } => "carrier_status",
            CallEvent::Placed { .. } => "placed",
            CallEvent::Ringing { .. } => "ringing",
            CallEvent::Failed { .. } => "failed",
        }
    }
}

/// A call's status as its carrier reports it: Twilio's `CallStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CarrierStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
}

impl CarrierStatus {
    const ALL: [CarrierStatus; 9] = [
        CarrierStatus::Queued,
        CarrierStatus::Initiated,
        CarrierStatus::Ringing,
        CarrierStatus::InProgress,
        CarrierStatus::Completed,
        CarrierStatus::Busy,
        CarrierStatus::Failed,
        CarrierStatus::NoAnswer,
        CarrierStatus::Canceled,
    ];

    /// Twilio's spelling (`in-progress`, `no-answer`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CarrierStatus::Queued => "queued",
            CarrierStatus::Initiated => "initiated",
            CarrierStatus::Ringing => "ringing",
            CarrierStatus::InProgress => "in-progress",
            CarrierStatus::Completed => "completed",
            CarrierStatus::Busy => "busy",
            CarrierStatus::Failed => "failed",
            CarrierStatus::NoAnswer => "no-answer",
            CarrierStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// The call is over for the carrier.
    pub fn is_final(self) -> bool {
        self.stage() == 3
    }

    /// How far along a call's life the status is. Callbacks can arrive out of order and be
    /// retried: a status only replaces one of an earlier stage, and the first final one stays.
    pub fn stage(self) -> u8 {
        match self {
            CarrierStatus::Queued | CarrierStatus::Initiated => 0,
            CarrierStatus::Ringing => 1,
            CarrierStatus::InProgress => 2,
            CarrierStatus::Completed
            | CarrierStatus::Busy
            | CarrierStatus::Failed
            | CarrierStatus::NoAnswer
            | CarrierStatus::Canceled => 3,
        }
    }
}

impl fmt::Display for CarrierStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Masks a phone number for display and logs: the last 4 digits stay (`+1555•••4567`).
pub fn mask_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let keep_head = if chars.first() == Some(&'+') { 2 } else { 0 };
    let keep_tail = 4.min(chars.len());
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_head || i >= chars.len() - keep_tail {
                *c
            } else {
                '•'
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn call_ids_sort_by_time_and_reject_anything_else() {
        let a = CallId::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1), 0xffff_ffff);
        let b = CallId::new(SystemTime::UNIX_EPOCH + Duration::from_secs(2), 0);
        assert!(a < b);
        assert_eq!(CallId::parse(a.as_str()), Some(a));
        for bad in [
            "",
            "c",
            "../etc/passwd",
            "c0000000003e8ffffffff/..",
            "C0000000003e8ffffffff",
            "c0000000003E8FFFFFFFF",
        ] {
            assert_eq!(CallId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn carrier_statuses_parse_as_twilio_spells_them_and_order_by_stage() {
        for status in CarrierStatus::ALL {
            assert_eq!(CarrierStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
        }
        assert_eq!(CarrierStatus::parse("In-Progress"), None);
        assert!(CarrierStatus::Ringing.stage() < CarrierStatus::InProgress.stage());
        assert!(CarrierStatus::NoAnswer.is_final());
        assert!(!CarrierStatus::InProgress.is_final());
    }

    #[test]
    fn end_reasons_read_back_as_written_and_from_earlier_names() {
        for reason in EndReason::FIXED.into_iter().chain([
            EndReason::Rejected(486),
            EndReason::Carrier(CarrierStatus::Busy),
        ]) {
            assert_eq!(EndReason::parse(&reason.as_str()), Some(reason));
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(serde_json::from_str::<EndReason>(&json).unwrap(), reason);
        }
        assert_eq!(
            EndReason::parse("rtp timeout"),
            Some(EndReason::MediaTimeout)
        );
        assert_eq!(EndReason::parse("nonsense"), None);
        let dtmf = serde_json::to_string(&DtmfSource::SipInfo).unwrap();
        assert_eq!(dtmf, "\"sip-info\"");
        assert_eq!(serde_json::to_string(&Codec::Pcma).unwrap(), "\"PCMA\"");
    }

    #[test]
    fn masks_all_but_the_country_code_and_last_four() {
        assert_eq!(mask_number("+15551234567"), "+1••••••4567");
        assert_eq!(mask_number("1000"), "1000");
        assert_eq!(mask_number(""), "");
    }
}
