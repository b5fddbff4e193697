//! The agent side of a Twilio Media Stream, sans-IO: earshot plays Twilio's part towards a
//! voice agent. The call task hands it the caller's audio and DTMF and the agent's WebSocket
//! text; it gives back the JSON to send and, 20 ms at a time, the agent's audio to play.
//!
//! Towards the agent, as Twilio "Media Streams — WebSocket Messages" defines them: `connected`,
//! then `start` (`streamSid`, `callSid`, `accountSid`, `tracks`, `mediaFormat` audio/x-mulaw
//! 8000 Hz mono, `customParameters`), `media` every 20 ms (`track` inbound, `chunk`,
//! `timestamp` in ms since the start, base64 payload), `dtmf`, `mark` echoes, and `stop`.
//! Every message after `connected` carries a running `sequenceNumber`; numbers are written
//! as strings, as Twilio writes them.
//!
//! From the agent: `media` of any size is queued (up to a bound, the excess dropped and
//! counted) and played 160 bytes per tick; `mark` is echoed once the audio queued before it
//! has been played; `clear` drops the queued audio and echoes the pending marks at once.
//! Anything else — not JSON, unknown events, bad base64, another stream's sid — is counted and
//! dropped.

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::AudioQueue;
pub use super::{FRAME_BYTES, Fill, MAX_MESSAGE, Received};

/// Marks awaiting their echo; beyond this the oldest is echoed at once.
const MAX_MARKS: usize = 256;
/// Longest mark name taken (bytes).
const MAX_MARK_NAME: usize = 256;

/// Who the stream is for, as `start` tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInfo {
    pub stream_sid: String,
    pub call_sid: String,
    pub account_sid: String,
    /// `customParameters`: earshot's call id, caller, callee, source.
    pub parameters: BTreeMap<String, String>,
}

/// Counters of one agent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Messages received from the agent.
    pub received: u64,
    /// Agent `media` messages taken.
    pub media: u64,
    /// Agent audio bytes queued, and dropped because the queue was full.
    pub audio_bytes: u64,
    pub overrun_bytes: u64,
    /// Frames played that the queue could only partly fill (the agent's audio ran dry
    /// mid-frame).
    pub underruns: u64,
    pub marks: u64,
    pub clears: u64,
    /// Not JSON, bad fields, bad base64, oversized, binary.
    pub malformed: u64,
    pub unknown_events: u64,
    /// Messages naming another stream.
    pub foreign: u64,
    /// Messages sent to the agent.
    pub sent: u64,
}

/// One agent session's state machine.
#[derive(Debug)]
pub struct AgentStream {
    start: StartInfo,
    /// The last `sequenceNumber` sent.
    sequence: u64,
    /// Caller `media` chunks sent.
    chunks: u64,
    /// The agent's audio not yet played (μ-law).
    queue: AudioQueue,
    /// Bytes played (or dropped by `clear`) since the start: the position marks wait for.
    played: u64,
    /// Bytes queued since the start.
    queued: u64,
    /// Marks by the queue position they follow.
    marks: VecDeque<(u64, String)>,
    transmit: VecDeque<String>,
    stopped: bool,
    stats: AgentStats,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Out<'a> {
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<OutStart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<OutMedia>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dtmf: Option<OutDtmf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mark: Option<OutMark<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<OutStop<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_sid: Option<&'a str>,
}

impl Out<'_> {
    fn event(event: &'static str) -> Self {
        Self {
            event,
            sequence_number: None,
            protocol: None,
            version: None,
            start: None,
            media: None,
            dtmf: None,
            mark: None,
            stop: None,
            stream_sid: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutStart<'a> {
    account_sid: &'a str,
    stream_sid: &'a str,
    call_sid: &'a str,
    tracks: [&'static str; 1],
    media_format: OutFormat,
    custom_parameters: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutFormat {
    encoding: &'static str,
    sample_rate: u32,
    channels: u16,
}

#[derive(Serialize)]
struct OutMedia {
    track: &'static str,
    chunk: String,
    timestamp: String,
    payload: String,
}

#[derive(Serialize)]
struct OutDtmf {
    track: &'static str,
    digit: String,
}

#[derive(Serialize)]
struct OutMark<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutStop<'a> {
    account_sid: &'a str,
    call_sid: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    event: String,
    stream_sid: Option<String>,
    media: Option<IncomingMedia>,
    mark: Option<IncomingMark>,
}

#[derive(Deserialize)]
struct IncomingMedia {
    payload: String,
}

#[derive(Deserialize)]
struct IncomingMark {
    name: String,
}

impl AgentStream {
    /// A session for one call: `connected` and `start` are queued at once. At most
    /// `max_queue_bytes` of the agent's audio wait to be played.
    pub fn new(start: StartInfo, max_queue_bytes: usize) -> Self {
        let mut stream = Self {
            start,
            sequence: 0,
            chunks: 0,
            queue: AudioQueue::new(max_queue_bytes),
            played: 0,
            queued: 0,
            marks: VecDeque::new(),
            transmit: VecDeque::new(),
            stopped: false,
            stats: AgentStats::default(),
        };
        let mut connected = Out::event("connected");
        connected.protocol = Some("Call");
        connected.version = Some("1.0.0");
        stream.push(connected);
        let s = &stream.start;
        let start = OutStart {
            account_sid: &s.account_sid,
            stream_sid: &s.stream_sid,
            call_sid: &s.call_sid,
            tracks: ["inbound"],
            media_format: OutFormat {
                encoding: "audio/x-mulaw",
                sample_rate: 8000,
                channels: 1,
            },
            custom_parameters: &s.parameters,
        };
        let text = stream.numbered("start", |out| out.start = Some(start));
        stream.send(text);
        stream
    }

    pub fn start_info(&self) -> &StartInfo {
        &self.start
    }

    /// 20 ms of the caller's audio (μ-law), `elapsed_ms` after the stream started.
    pub fn caller_audio(&mut self, elapsed_ms: u64, ulaw: &[u8; FRAME_BYTES]) {
        if self.stopped {
            return;
        }
        self.chunks += 1;
        let media = OutMedia {
            track: "inbound",
            chunk: self.chunks.to_string(),
            timestamp: elapsed_ms.to_string(),
            payload: BASE64.encode(ulaw),
        };
        let text = self.numbered("media", |out| out.media = Some(media));
        self.send(text);
    }

    /// A key the caller pressed.
    pub fn dtmf(&mut self, digit: char) {
        if self.stopped {
            return;
        }
        let dtmf = OutDtmf {
            track: "inbound_track",
            digit: digit.to_string(),
        };
        let text = self.numbered("dtmf", |out| out.dtmf = Some(dtmf));
        self.send(text);
    }

    /// The call is over: `stop` is the last message.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let stop = OutStop {
            account_sid: &self.start.account_sid,
            call_sid: &self.start.call_sid,
        };
        let seq = self.sequence + 1;
        let mut out = Out::event("stop");
        out.sequence_number = Some(seq.to_string());
        out.stop = Some(stop);
        out.stream_sid = Some(&self.start.stream_sid);
        let text = serde_json::to_string(&out).unwrap_or_default();
        self.sequence = seq;
        self.send(text);
        self.stopped = true;
    }

    /// One text message from the agent.
    pub fn handle_text(&mut self, text: &str) -> Received {
        self.stats.received += 1;
        if text.len() > MAX_MESSAGE {
            self.stats.malformed += 1;
            return Received::Ignored;
        }
        let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        if msg
            .stream_sid
            .as_deref()
            .is_some_and(|sid| sid != self.start.stream_sid)
        {
            self.stats.foreign += 1;
            return Received::Ignored;
        }
        match msg.event.as_str() {
            "media" => match msg.media.map(|m| BASE64.decode(m.payload.as_bytes())) {
                Some(Ok(audio)) if !audio.is_empty() => {
                    self.stats.media += 1;
                    self.enqueue(&audio);
                    Received::Audio
                }
                _ => {
                    self.stats.malformed += 1;
                    Received::Ignored
                }
            },
            "mark" => match msg.mark {
                Some(mark) if mark.name.len() <= MAX_MARK_NAME => {
                    self.stats.marks += 1;
                    if self.marks.len() == MAX_MARKS
                        && let Some((_, oldest)) = self.marks.pop_front()
                    {
                        self.echo(&oldest);
                    }
                    self.marks.push_back((self.queued, mark.name));
                    self.echo_played();
                    Received::Mark
                }
                _ => {
                    self.stats.malformed += 1;
                    Received::Ignored
                }
            },
            "clear" => {
                self.clear();
                Received::Clear
            }
            _ => {
                self.stats.unknown_events += 1;
                Received::Ignored
            }
        }
    }

    /// Drops the agent's queued audio and echoes the pending marks, as the agent's own `clear`
    /// does (earshot's operator took the floor).
    pub fn clear(&mut self) {
        self.stats.clears += 1;
        self.played += self.queue.clear() as u64;
        self.echo_played();
    }

    /// A binary message from the agent: not part of the protocol.
    pub fn handle_binary(&mut self) {
        self.stats.received += 1;
        self.stats.malformed += 1;
    }

    /// Fills `out` with the next 20 ms of the agent's audio (silence where there is none) and
    /// echoes the marks it reached.
    pub fn next_frame(&mut self, out: &mut [u8; FRAME_BYTES]) -> Fill {
        let n = self.queue.pop_frame(out);
        self.played += n as u64;
        self.echo_played();
        let fill = Fill::of(n);
        if fill == Fill::Partial {
            self.stats.underruns += 1;
        }
        fill
    }

    /// Whether agent audio is waiting to be played.
    pub fn has_audio(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Audio queued, in bytes (8 per ms).
    pub fn queued_bytes(&self) -> usize {
        self.queue.len()
    }

    /// The next JSON text for the agent.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmit.pop_front()
    }

    /// Puts back a text the driver could not take yet; it goes first next time.
    pub fn unsend(&mut self, text: String) {
        self.stats.sent = self.stats.sent.saturating_sub(1);
        self.transmit.push_front(text);
    }

    /// Texts waiting for the driver.
    pub fn pending(&self) -> usize {
        self.transmit.len()
    }

    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    fn enqueue(&mut self, audio: &[u8]) {
        let take = self.queue.push(audio);
        self.queued += take as u64;
        self.stats.audio_bytes += take as u64;
        self.stats.overrun_bytes += (audio.len() - take) as u64;
    }

    /// Echoes every mark whose audio has been played.
    fn echo_played(&mut self) {
        while let Some((at, _)) = self.marks.front() {
            if *at > self.played {
                break;
            }
            if let Some((_, name)) = self.marks.pop_front() {
                self.echo(&name);
            }
        }
    }

    fn echo(&mut self, name: &str) {
        let text = self.numbered("mark", |out| out.mark = Some(OutMark { name }));
        self.send(text);
    }

    /// A message with the next `sequenceNumber` and the stream's sid.
    fn numbered<'a>(&'a self, event: &'static str, fill: impl FnOnce(&mut Out<'a>)) -> String {
        let mut out = Out::event(event);
        out.sequence_number = Some((self.sequence + 1).to_string());
        out.stream_sid = Some(&self.start.stream_sid);
        fill(&mut out);
        serde_json::to_string(&out).unwrap_or_default()
    }

    fn push(&mut self, out: Out<'_>) {
        let text = serde_json::to_string(&out).unwrap_or_default();
        self.send(text);
    }

    fn send(&mut self, text: String) {
        if text.contains("\"sequenceNumber\"") {
            self.sequence += 1;
        }
        self.stats.sent += 1;
        self.transmit.push_back(text);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::agent::SILENCE;
    use serde_json::Value;

    fn stream() -> AgentStream {
        AgentStream::new(
            StartInfo {
                stream_sid: "MZ00000000000000000000000000000001".into(),
                call_sid: "CA00000000000000000000000000000001".into(),
                account_sid: "AC00000000000000000000000000000001".into(),
                parameters: [("callId".to_string(), "c1".to_string())].into(),
            },
            8000,
        )
    }

    fn sent(s: &mut AgentStream) -> Vec<Value> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|t| serde_json::from_str(&t).unwrap())
            .collect()
    }

    fn media(bytes: &[u8]) -> String {
        format!(
            r#"{{"event":"media","streamSid":"MZ00000000000000000000000000000001","media":{{"payload":"{}"}}}}"#,
            BASE64.encode(bytes)
        )
    }

    fn mark(name: &str) -> String {
        format!(
            r#"{{"event":"mark","streamSid":"MZ00000000000000000000000000000001","mark":{{"name":"{name}"}}}}"#
        )
    }

    #[test]
    fn speaks_twilio_field_by_field() {
        let mut s = stream();
        s.caller_audio(20, &[0x7f; FRAME_BYTES]);
        s.dtmf('5');
        s.stop();
        s.caller_audio(40, &[0x7f; FRAME_BYTES]);
        let msgs = sent(&mut s);
        assert_eq!(msgs.len(), 5, "{msgs:?}");
        assert_eq!(msgs[0]["event"], "connected");
        assert_eq!(msgs[0]["protocol"], "Call");
        assert_eq!(msgs[0]["version"], "1.0.0");
        assert!(msgs[0].get("sequenceNumber").is_none());
        let start = &msgs[1];
        assert_eq!(start["event"], "start");
        assert_eq!(start["sequenceNumber"], "1");
        assert_eq!(start["streamSid"], "MZ00000000000000000000000000000001");
        assert_eq!(
            start["start"]["callSid"],
            "CA00000000000000000000000000000001"
        );
        assert_eq!(
            start["start"]["accountSid"],
            "AC00000000000000000000000000000001"
        );
        assert_eq!(start["start"]["tracks"][0], "inbound");
        assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
        assert_eq!(start["start"]["mediaFormat"]["sampleRate"], 8000);
        assert_eq!(start["start"]["mediaFormat"]["channels"], 1);
        assert_eq!(start["start"]["customParameters"]["callId"], "c1");
        let media = &msgs[2];
        assert_eq!(media["sequenceNumber"], "2");
        assert_eq!(media["media"]["track"], "inbound");
        assert_eq!(media["media"]["chunk"], "1");
        assert_eq!(media["media"]["timestamp"], "20");
        assert_eq!(
            BASE64
                .decode(media["media"]["payload"].as_str().unwrap())
                .unwrap(),
            vec![0x7f; FRAME_BYTES]
        );
        assert_eq!(msgs[3]["event"], "dtmf");
        assert_eq!(msgs[3]["dtmf"]["digit"], "5");
        assert_eq!(msgs[3]["dtmf"]["track"], "inbound_track");
        assert_eq!(msgs[4]["event"], "stop");
        assert_eq!(msgs[4]["sequenceNumber"], "4");
        assert_eq!(
            msgs[4]["stop"]["callSid"],
            "CA00000000000000000000000000000001"
        );
    }

    #[test]
    fn audio_of_any_size_is_played_in_frames_and_marks_echo_after_it() {
        let mut s = stream();
        sent(&mut s);
        assert_eq!(s.handle_text(&media(&[1; 250])), Received::Audio);
        assert_eq!(s.handle_text(&mark("a")), Received::Mark);
        assert!(sent(&mut s).is_empty(), "echoed before its audio played");
        let mut out = [0u8; FRAME_BYTES];
        assert_eq!(s.next_frame(&mut out), Fill::Full);
        assert!(sent(&mut s).is_empty());
        assert_eq!(s.next_frame(&mut out), Fill::Partial);
        assert_eq!(out[89], 1);
        assert_eq!(out[90], SILENCE);
        let echoed = sent(&mut s);
        assert_eq!(echoed.len(), 1);
        assert_eq!(echoed[0]["event"], "mark");
        assert_eq!(echoed[0]["mark"]["name"], "a");
        assert_eq!(s.next_frame(&mut out), Fill::Empty);
        // A mark with nothing queued before it comes straight back.
        s.handle_text(&mark("b"));
        assert_eq!(sent(&mut s)[0]["mark"]["name"], "b");
    }

    #[test]
    fn clear_drops_the_audio_and_echoes_pending_marks_at_once() {
        let mut s = stream();
        sent(&mut s);
        s.handle_text(&media(&[1; 800]));
        s.handle_text(&mark("one"));
        s.handle_text(&media(&[2; 800]));
        s.handle_text(&mark("two"));
        assert_eq!(
            s.handle_text(r#"{"event":"clear","streamSid":"MZ00000000000000000000000000000001"}"#),
            Received::Clear
        );
        let names: Vec<_> = sent(&mut s)
            .iter()
            .map(|m| m["mark"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["one", "two"]);
        let mut out = [0u8; FRAME_BYTES];
        assert_eq!(s.next_frame(&mut out), Fill::Empty);
        // Audio after the clear plays.
        s.handle_text(&media(&[3; 160]));
        assert_eq!(s.next_frame(&mut out), Fill::Full);
        assert_eq!(out, [3; FRAME_BYTES]);
    }

    #[test]
    fn bad_input_is_counted_and_the_queue_stays_bounded() {
        let mut s = stream();
        for bad in [
            "not json",
            "{}",
            r#"{"event":"media","media":{"payload":"!!!"}}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"mark","mark":{}}"#,
            r#"{"event":"dance"}"#,
            r#"{"event":"media","streamSid":"MZother","media":{"payload":"AAAA"}}"#,
        ] {
            assert_eq!(s.handle_text(bad), Received::Ignored, "{bad}");
        }
        s.handle_binary();
        let st = s.stats().clone();
        assert_eq!((st.malformed, st.unknown_events, st.foreign), (6, 1, 1));
        // An hour of audio in one go: 1 s (the bound) is kept, the rest counted.
        let hour = vec![1u8; 8000 * 10];
        for _ in 0..36 {
            s.handle_text(&media(&hour));
        }
        assert_eq!(s.queued_bytes(), 8000);
        assert_eq!(s.stats().overrun_bytes, 36 * 80_000 - 8000);
    }
}
