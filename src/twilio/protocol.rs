//! The messages of a bidirectional Twilio Media Stream, as typed values: the edge where
//! WebSocket text from Twilio becomes [`Message`]s and where our `media`, `mark` and `clear`
//! become JSON. Past this module nothing re-checks peer input.
//!
//! Implements Twilio "Media Streams — WebSocket Messages": inbound `connected`, `start`,
//! `media`, `dtmf`, `mark`, `stop`; outbound `media`, `mark`, `clear`. Twilio writes numbers
//! (`sequenceNumber`, `chunk`, `timestamp`) as JSON strings; both strings and numbers are taken.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// Bytes of one 20 ms frame of 8 kHz μ-law.
pub const FRAME_BYTES: usize = 160;
/// Largest media payload taken: 60 ms.
pub const MAX_PAYLOAD: usize = 3 * FRAME_BYTES;
/// Payloads must be whole 10 ms blocks (what the jitter buffer places).
const PAYLOAD_UNIT: usize = FRAME_BYTES / 2;
/// Room for any base64 text whose decoded length estimate passed the size check.
const DECODE_CAP: usize = MAX_PAYLOAD + 3;
/// Longest id (`CallSid`, `StreamSid`) taken; Twilio's are 34 characters.
const MAX_SID: usize = 64;

/// Why a message from Twilio was not taken. Each is the peer's fault: counted, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not a JSON message: {0}")]
    NotJson(String),
    #[error("`{event}` message without `{field}`")]
    Missing {
        event: &'static str,
        field: &'static str,
    },
    #[error("bad `{field}` {value:?}")]
    BadField { field: &'static str, value: String },
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("media payload is not base64")]
    BadBase64,
    #[error("media payload of about {0} bytes (expected 80 to 480, in 80-byte steps)")]
    PayloadSize(usize),
    #[error("unsupported media format {0}")]
    UnsupportedFormat(String),
}

/// Twilio's id of one call (`CA` + 32 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSid(String);

/// Twilio's id of one media stream (`MZ` + 32 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamSid(String);

/// Parses a Twilio id: 1 to 64 ASCII letters and digits (so it is safe in logs and JSON).
fn sid(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= MAX_SID && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| s.to_owned())
}

impl CallSid {
    pub fn parse(s: &str) -> Option<Self> {
        sid(s).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StreamSid {
    pub fn parse(s: &str) -> Option<Self> {
        sid(s).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CallSid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for StreamSid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message from Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `sequenceNumber`: counts every message of the stream after `connected`, from 1.
    pub sequence: Option<u64>,
    pub event: Inbound,
}

/// What a message from Twilio says.
// `Media` carries its payload inline (480 bytes): a message is parsed, used and dropped at
// once, and boxing would allocate for every 20 ms chunk.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The WebSocket is up; `start` follows.
    Connected,
    Start(Start),
    Media(Media),
    /// A key pressed by the caller.
    Dtmf {
        digit: char,
    },
    /// Twilio played our audio up to the `mark` of this name (or dropped it on `clear`).
    Mark {
        name: String,
    },
    /// The stream is over (the call hung up or moved on).
    Stop,
}

/// The `start` message: which call this stream belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub stream_sid: StreamSid,
    pub call_sid: CallSid,
    pub account_sid: String,
    pub tracks: Vec<String>,
    /// The `<Parameter>`s of our TwiML (Twilio strips query strings from Stream URLs).
    pub parameters: BTreeMap<String, String>,
}

/// The direction of a media track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// What the caller says.
    Inbound,
    /// What the caller hears (only in unidirectional streams).
    Outbound,
}

/// One chunk of μ-law audio from the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Media {
    pub track: Track,
    /// `chunk`: counts media messages of the track, from 1.
    pub chunk: Option<u64>,
    /// `timestamp`: milliseconds since the stream started.
    pub timestamp_ms: Option<u64>,
    payload: [u8; DECODE_CAP],
    len: usize,
}

impl Media {
    /// The decoded μ-law bytes: 80 to 480, a multiple of 80.
    pub fn payload(&self) -> &[u8] {
        self.payload.get(..self.len).unwrap_or_default()
    }
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("track", &self.track)
            .field("chunk", &self.chunk)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("len", &self.len)
            .finish()
    }
}

/// A number Twilio may write as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(u64),
    Text(String),
}

/// The largest media `timestamp` (ms) and `chunk` taken: a week of stream, far beyond any call
/// (`[calls].max_duration_secs` is capped at about 37 hours). Larger values are hostile or
/// broken input, refused as a bad field (counted as malformed), so the sample arithmetic built
/// on them (`ms * 8`, `chunk * 160`) always fits.
pub const MAX_MEDIA_TIMESTAMP_MS: u64 = 7 * 24 * 3600 * 1000;

/// The largest media `chunk` taken: a week of 20 ms chunks (see [`MAX_MEDIA_TIMESTAMP_MS`]).
pub const MAX_MEDIA_CHUNK: u64 = MAX_MEDIA_TIMESTAMP_MS / 20;

impl Number {
    /// The value, refused as a bad field when it is above `max`.
    fn get_at_most(self, field: &'static str, max: u64) -> Result<u64, ProtocolError> {
        let shown = match &self {
            Number::Int(n) => n.to_string(),
            Number::Text(s) => truncate(s),
        };
        match self.get(field)? {
            n if n <= max => Ok(n),
            _ => Err(ProtocolError::BadField {
                field,
                value: shown,
            }),
        }
    }

    fn get(self, field: &'static str) -> Result<u64, ProtocolError> {
        match self {
            Number::Int(n) => Ok(n),
            Number::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| ProtocolError::BadField { field, value: s }),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    event: String,
    sequence_number: Option<Number>,
    stream_sid: Option<String>,
    start: Option<RawStart>,
    media: Option<RawMedia>,
    dtmf: Option<RawDtmf>,
    mark: Option<RawMark>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStart {
    stream_sid: Option<String>,
    call_sid: Option<String>,
    account_sid: Option<String>,
    #[serde(default)]
    tracks: Vec<String>,
    #[serde(default)]
    custom_parameters: BTreeMap<String, serde_json::Value>,
    media_format: Option<RawFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFormat {
    encoding: String,
    sample_rate: u32,
    channels: u16,
}

#[derive(Deserialize)]
struct RawMedia {
    track: Option<String>,
    chunk: Option<Number>,
    timestamp: Option<Number>,
    payload: String,
}

#[derive(Deserialize)]
struct RawDtmf {
    digit: String,
}

#[derive(Deserialize)]
struct RawMark {
    name: String,
}

/// Parses one text message from Twilio.
pub fn parse(text: &str) -> Result<Message, ProtocolError> {
    let raw: RawMessage =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let sequence = raw
        .sequence_number
        .map(|n| n.get("sequenceNumber"))
        .transpose()?;
    let event = match raw.event.as_str() {
        "connected" => Inbound::Connected,
        "start" => Inbound::Start(start(raw.start, raw.stream_sid)?),
        "media" => Inbound::Media(media(raw.media)?),
        "dtmf" => {
            let dtmf = raw.dtmf.ok_or(ProtocolError::Missing {
                event: "dtmf",
                field: "dtmf",
            })?;
            Inbound::Dtmf {
                digit: dtmf_digit(&dtmf.digit)?,
            }
        }
        "mark" => {
            let mark = raw.mark.ok_or(ProtocolError::Missing {
                event: "mark",
                field: "mark",
            })?;
            Inbound::Mark { name: mark.name }
        }
        "stop" => Inbound::Stop,
        other => return Err(ProtocolError::UnknownEvent(truncate(other))),
    };
    Ok(Message { sequence, event })
}

fn start(raw: Option<RawStart>, outer_sid: Option<String>) -> Result<Start, ProtocolError> {
    let missing = |field| ProtocolError::Missing {
        event: "start",
        field,
    };
    let raw = raw.ok_or(missing("start"))?;
    let stream = raw.stream_sid.or(outer_sid).ok_or(missing("streamSid"))?;
    let stream_sid = StreamSid::parse(&stream).ok_or_else(|| ProtocolError::BadField {
        field: "streamSid",
        value: truncate(&stream),
    })?;
    let call = raw.call_sid.ok_or(missing("callSid"))?;
    let call_sid = CallSid::parse(&call).ok_or_else(|| ProtocolError::BadField {
        field: "callSid",
        value: truncate(&call),
    })?;
    if let Some(format) = raw.media_format
        && (!format.encoding.eq_ignore_ascii_case("audio/x-mulaw")
            || format.sample_rate != 8000
            || format.channels != 1)
    {
        return Err(ProtocolError::UnsupportedFormat(format!(
            "{} {} Hz {} channels",
            truncate(&format.encoding),
            format.sample_rate,
            format.channels
        )));
    }
    let parameters = raw
        .custom_parameters
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(Start {
        stream_sid,
        call_sid,
        account_sid: raw.account_sid.unwrap_or_default(),
        tracks: raw.tracks,
        parameters,
    })
}

fn media(raw: Option<RawMedia>) -> Result<Media, ProtocolError> {
    let raw = raw.ok_or(ProtocolError::Missing {
        event: "media",
        field: "media",
    })?;
    let track = match raw.track.as_deref() {
        None | Some("inbound") | Some("inbound_track") => Track::Inbound,
        Some("outbound") | Some("outbound_track") => Track::Outbound,
        Some(other) => {
            return Err(ProtocolError::BadField {
                field: "track",
                value: truncate(other),
            });
        }
    };
    let estimate = base64::decoded_len_estimate(raw.payload.len());
    if estimate > MAX_PAYLOAD + 2 {
        return Err(ProtocolError::PayloadSize(estimate));
    }
    let mut payload = [0u8; DECODE_CAP];
    let len = BASE64
        .decode_slice(raw.payload.as_bytes(), &mut payload)
        .map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => ProtocolError::PayloadSize(estimate),
            base64::DecodeSliceError::DecodeError(_) => ProtocolError::BadBase64,
        })?;
    if len == 0 || len > MAX_PAYLOAD || len % PAYLOAD_UNIT != 0 {
        return Err(ProtocolError::PayloadSize(len));
    }
    Ok(Media {
        track,
        chunk: raw
            .chunk
            .map(|n| n.get_at_most("chunk", MAX_MEDIA_CHUNK))
            .transpose()?,
        timestamp_ms: raw
            .timestamp
            .map(|n| n.get_at_most("timestamp", MAX_MEDIA_TIMESTAMP_MS))
            .transpose()?,
        payload,
        len,
    })
}

fn dtmf_digit(s: &str) -> Result<char, ProtocolError> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if matches!(c, '0'..='9' | '*' | '#' | 'A'..='D' | 'a'..='d') => {
            Ok(c.to_ascii_uppercase())
        }
        _ => Err(ProtocolError::BadField {
            field: "digit",
            value: truncate(s),
        }),
    }
}

/// Peer text quoted in errors is cut short, so a hostile message cannot bloat the logs.
fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A message we send to Twilio on a bidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// μ-law audio to play to the caller, queued by Twilio in order.
    Media(&'a [u8]),
    /// Asks Twilio to send this name back once everything before it has played.
    Mark(&'a str),
    /// Drops the audio Twilio has queued; pending marks come back at once.
    Clear,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutMessage<'a> {
    event: &'static str,
    stream_sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<OutMedia>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mark: Option<OutMark<'a>>,
}

#[derive(Serialize)]
struct OutMedia {
    payload: String,
}

#[derive(Serialize)]
struct OutMark<'a> {
    name: &'a str,
}

impl Outbound<'_> {
    /// The JSON text of this message on stream `sid`.
    pub fn to_json(&self, sid: &StreamSid) -> String {
        let mut msg = OutMessage {
            event: "",
            stream_sid: sid.as_str(),
            media: None,
            mark: None,
        };
        match *self {
            Outbound::Media(audio) => {
                msg.event = "media";
                msg.media = Some(OutMedia {
                    payload: BASE64.encode(audio),
                });
            }
            Outbound::Mark(name) => {
                msg.event = "mark";
                msg.mark = Some(OutMark { name });
            }
            Outbound::Clear => msg.event = "clear",
        }
        // Serializing these plain structs cannot fail; an empty object would be dropped by Twilio.
        serde_json::to_string(&msg).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC0123","streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0","callSid":"CA0123abc","tracks":["inbound"],"customParameters":{"token":"abc","n":5},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}"#;

    #[test]
    fn parses_the_documented_start_message_with_custom_parameters() {
        let msg = parse(START).unwrap();
        assert_eq!(msg.sequence, Some(1));
        let Inbound::Start(start) = msg.event else {
            panic!("{msg:?}")
        };
        assert_eq!(
            start.stream_sid.as_str(),
            "MZ18ad3ab5a668481ce02b83e7395059f0"
        );
        assert_eq!(start.call_sid.as_str(), "CA0123abc");
        assert_eq!(
            start.parameters.get("token").map(String::as_str),
            Some("abc")
        );
        assert_eq!(start.parameters.get("n").map(String::as_str), Some("5"));
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)
                .unwrap()
                .event,
            Inbound::Connected
        );
    }

    #[test]
    fn parses_media_with_string_or_numeric_counters() {
        let payload = BASE64.encode([0xffu8; 160]);
        let text = format!(
            r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":"{payload}"}},"streamSid":"MZ1"}}"#
        );
        let msg = parse(&text).unwrap();
        let Inbound::Media(media) = msg.event else {
            panic!()
        };
        assert_eq!(
            (media.chunk, media.timestamp_ms, media.track),
            (Some(1), Some(5), Track::Inbound)
        );
        assert_eq!(media.payload(), &[0xff; 160][..]);
        let numeric = format!(
            r#"{{"event":"media","sequenceNumber":4,"media":{{"chunk":2,"timestamp":25,"payload":"{payload}"}}}}"#
        );
        assert_eq!(parse(&numeric).unwrap().sequence, Some(4));
    }

    #[test]
    fn rejects_bad_payloads_without_panicking() {
        let media = |p: &str| {
            parse(&format!(
                r#"{{"event":"media","media":{{"payload":"{p}"}}}}"#
            ))
        };
        assert_eq!(media("!!!notbase64").unwrap_err(), ProtocolError::BadBase64);
        assert!(matches!(
            media(&BASE64.encode([0u8; 7])),
            Err(ProtocolError::PayloadSize(7))
        ));
        assert!(matches!(
            media(&BASE64.encode([0u8; 161])),
            Err(ProtocolError::PayloadSize(161))
        ));
        assert!(matches!(
            media(&BASE64.encode([0u8; 4000])),
            Err(ProtocolError::PayloadSize(_))
        ));
        assert!(matches!(media(""), Err(ProtocolError::PayloadSize(0))));
        assert!(matches!(parse("not json"), Err(ProtocolError::NotJson(_))));
        assert!(matches!(
            parse(r#"{"event":"media"}"#),
            Err(ProtocolError::Missing { .. })
        ));
        assert!(matches!(
            parse(r#"{"event":"bogus"}"#),
            Err(ProtocolError::UnknownEvent(_))
        ));
        assert!(matches!(
            parse(r#"{"event":"media","sequenceNumber":"x","media":{"payload":""}}"#),
            Err(ProtocolError::BadField { .. })
        ));
        let other_format = START.replace("audio/x-mulaw", "audio/x-alaw");
        assert!(matches!(
            parse(&other_format),
            Err(ProtocolError::UnsupportedFormat(_))
        ));
        let hostile_sid = START.replace("CA0123abc", "CA\\n../../x");
        assert!(matches!(
            parse(&hostile_sid),
            Err(ProtocolError::BadField {
                field: "callSid",
                ..
            })
        ));
    }

    #[test]
    fn parses_dtmf_mark_and_stop() {
        let dtmf = parse(
            r##"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"#"}}"##,
        );
        assert_eq!(dtmf.unwrap().event, Inbound::Dtmf { digit: '#' });
        assert!(parse(r#"{"event":"dtmf","dtmf":{"digit":"12"}}"#).is_err());
        let mark = parse(
            r#"{"event":"mark","sequenceNumber":"4","streamSid":"MZ1","mark":{"name":"greeting"}}"#,
        );
        assert_eq!(
            mark.unwrap().event,
            Inbound::Mark {
                name: "greeting".into()
            }
        );
        let stop = parse(
            r#"{"event":"stop","sequenceNumber":"5","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#,
        );
        assert_eq!(stop.unwrap().event, Inbound::Stop);
    }

    #[test]
    fn outbound_messages_are_the_documented_json() {
        let sid = StreamSid::parse("MZ1").unwrap();
        let media: serde_json::Value =
            serde_json::from_str(&Outbound::Media(&[0xff; 160]).to_json(&sid)).unwrap();
        assert_eq!(media["event"], "media");
        assert_eq!(media["streamSid"], "MZ1");
        assert_eq!(
            BASE64
                .decode(media["media"]["payload"].as_str().unwrap())
                .unwrap(),
            vec![0xff; 160]
        );
        assert_eq!(
            Outbound::Mark("a\"b").to_json(&sid),
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"a\"b"}}"#
        );
        assert_eq!(
            Outbound::Clear.to_json(&sid),
            r#"{"event":"clear","streamSid":"MZ1"}"#
        );
    }
}
