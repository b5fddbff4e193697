//! One bidirectional Twilio Media Stream, sans-IO: the driver hands it WebSocket text and the
//! time, and takes back the caller's audio, events, the JSON to send and the next deadline.
//!
//! States are named for what they expect next: `connected`, then `start` (before the handshake
//! deadline), then media until `stop`. Peer faults — text that is not JSON, bad base64, wrong
//! payload sizes, oversized frames, unknown events, messages out of place — are counted and
//! dropped; the stream stays up. `sequenceNumber` gaps are counted as lost messages.
//!
//! Outbound, one 160-byte μ-law frame goes out every 20 ms on the stream's own frame clock,
//! paced and never in a burst: frames that fell behind after a stall catch up at most at
//! twice the pace (10 ms apart), and beyond [`MAX_LAG`] the clock skips ahead instead. The call
//! task asks for a `mark` after the greeting's last frame (Twilio echoes it once the caller
//! heard everything) and for a `clear` when the caller barges in.
//!
//! Inbound audio is placed on the stream's own media clock: TCP delivers every chunk, in order,
//! late rather than lost, so the first chunk anchors the timeline and a chunk is never taken as
//! earlier than it (the jitter buffer would trim "excess" delay by dropping audio). A chunk more
//! than [`MAX_EARLY`] ahead re-anchors the clock: the sender's clock runs fast.
//!
//! Implements Twilio "Media Streams — WebSocket Messages" (bidirectional).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::protocol::{
    self, FRAME_BYTES, Inbound, Media, Outbound, ProtocolError, Start, StreamSid, Track,
};

/// Largest text message parsed; Twilio's are a few hundred bytes. Larger ones are dropped.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// One frame of the outbound clock.
const FRAME: Duration = Duration::from_millis(20);
/// Behind the frame clock by more than this, it skips ahead instead of catching up.
pub const MAX_LAG: Duration = Duration::from_millis(100);
/// Frames that catch up after a stall still go out at least this far apart.
const MIN_SPACING: Duration = Duration::from_millis(10);
/// Marks awaiting their echo; older ones are forgotten (Twilio lost them or never will).
const MAX_OUTSTANDING_MARKS: usize = 16;
/// A chunk this far ahead of the media clock re-anchors it.
pub const MAX_EARLY: Duration = Duration::from_millis(100);
/// The SSRC given to the pipeline: one stream is one source.
const SSRC: u32 = 1;

/// Settings of one stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    /// From the WebSocket upgrade to `start`.
    pub handshake_timeout: Duration,
    /// The stream ends when no media came for this long; `None` disables the check (the
    /// call task keeps its own).
    pub silence_timeout: Option<Duration>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(3),
            silence_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Twilio sent `stop`: the call hung up or moved on.
    Stopped,
    /// The WebSocket closed without `stop`.
    Closed,
    /// No `start` before the handshake deadline.
    HandshakeTimeout,
    /// No media for the silence timeout.
    SilenceTimeout,
    /// We closed it (hangup, shutdown, refused token).
    Local,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Stopped => "remote hangup",
            EndReason::Closed => "stream closed",
            EndReason::HandshakeTimeout => "handshake timeout",
            EndReason::SilenceTimeout => "stream timeout",
            EndReason::Local => "local hangup",
        }
    }
}

/// What happened on the stream, for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// `start` arrived: the driver checks its token and starts the call.
    Started(Box<Start>),
    Dtmf {
        digit: char,
    },
    /// Twilio echoed a mark `after` we sent it.
    MarkPlayed {
        name: String,
        after: Duration,
    },
    /// The stream is over.
    Ended(EndReason),
}

/// One chunk of the caller's audio, placed for the jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audio<'a> {
    /// From `chunk`, as an RTP-style sequence number.
    pub seq: u16,
    /// From `timestamp`, in 8 kHz samples.
    pub ts: u32,
    pub ssrc: u32,
    /// When it counts as arrived: now, or when the media clock says it was due, if later.
    pub at: Instant,
    /// μ-law.
    pub payload: &'a [u8],
}

/// Counters of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Text and binary messages received.
    pub messages: u64,
    /// Media messages taken.
    pub media: u64,
    /// Messages missing by `sequenceNumber`.
    pub sequence_gaps: u64,
    /// `sequenceNumber`s that went backwards or repeated.
    pub sequence_disorder: u64,
    /// Not JSON, bad fields, bad base64, wrong payload size, binary frames.
    pub malformed: u64,
    /// Of those, messages over [`MAX_MESSAGE`].
    pub oversized: u64,
    pub unknown_events: u64,
    /// Messages valid but out of place (media before `start`, a second `start`, …).
    pub out_of_state: u64,
    pub frames_sent: u64,
    /// Outbound frames skipped after a stall longer than [`MAX_LAG`].
    pub frames_skipped: u64,
    /// Outbound frames sent 10 ms or more after they were due.
    pub frames_late: u64,
    pub marks_sent: u64,
    pub marks_played: u64,
    pub clears_sent: u64,
    pub dtmf: u64,
}

enum State {
    ExpectConnected { deadline: Instant },
    ExpectStart { deadline: Instant },
    Streaming(Streaming),
    Ended,
}

struct Streaming {
    sid: StreamSid,
    /// When the next outbound frame is due.
    next_frame: Instant,
    /// When the last one went out (catching up keeps [`MIN_SPACING`]).
    last_sent: Option<Instant>,
    /// The silence timeout counts from here.
    last_media: Instant,
}

impl Streaming {
    /// When the next frame may go: when due, and not sooner than [`MIN_SPACING`] after the last.
    fn frame_at(&self) -> Instant {
        self.last_sent.map_or(self.next_frame, |last| {
            self.next_frame.max(last + MIN_SPACING)
        })
    }
}

/// One stream's state machine.
pub struct Stream {
    config: StreamConfig,
    state: State,
    stats: StreamStats,
    last_sequence: Option<u64>,
    /// Media messages without a `chunk`, numbered by us.
    chunks: u64,
    /// The last media message, lent out as [`Audio`].
    media: Option<Media>,
    events: VecDeque<StreamEvent>,
    transmit: VecDeque<String>,
    marks: VecDeque<(String, Instant)>,
    /// The media clock: when the chunk with this timestamp (in samples) arrived.
    anchor: Option<(Instant, u64)>,
    last_error: Option<ProtocolError>,
}

impl Stream {
    /// A stream whose WebSocket was accepted at `now`.
    pub fn new(config: StreamConfig, now: Instant) -> Self {
        Self {
            config,
            state: State::ExpectConnected {
                deadline: now + config.handshake_timeout,
            },
            stats: StreamStats::default(),
            last_sequence: None,
            chunks: 0,
            media: None,
            events: VecDeque::new(),
            transmit: VecDeque::new(),
            marks: VecDeque::new(),
            anchor: None,
            last_error: None,
        }
    }

    /// Takes one text message; returns the caller's audio if it carried some.
    pub fn handle_text(&mut self, now: Instant, text: &str) -> Option<Audio<'_>> {
        self.stats.messages += 1;
        if text.len() > MAX_MESSAGE {
            self.stats.oversized += 1;
            self.malformed(ProtocolError::NotJson(format!("{} bytes", text.len())));
            return None;
        }
        let message = match protocol::parse(text) {
            Ok(message) => message,
            Err(ProtocolError::UnknownEvent(event)) => {
                self.stats.unknown_events += 1;
                self.last_error = Some(ProtocolError::UnknownEvent(event));
                return None;
            }
            Err(err) => {
                self.malformed(err);
                return None;
            }
        };
        if matches!(self.state, State::Ended) {
            return None;
        }
        self.sequence(message.sequence);
        match message.event {
            Inbound::Connected => self.connected(),
            Inbound::Start(start) => self.start(now, start),
            Inbound::Media(media) => return self.media(now, media),
            Inbound::Dtmf { digit } => self.dtmf(digit),
            Inbound::Mark { name } => self.mark_echoed(now, name),
            Inbound::Stop => self.end(EndReason::Stopped),
        }
        None
    }

    /// A binary message: Twilio sends none.
    pub fn handle_binary(&mut self, _now: Instant, len: usize) {
        self.stats.messages += 1;
        self.malformed(ProtocolError::NotJson(format!(
            "binary message of {len} bytes"
        )));
    }

    /// The WebSocket closed (by the peer or an error).
    pub fn handle_closed(&mut self, _now: Instant) {
        self.end(EndReason::Closed);
    }

    /// We end the stream (hangup, shutdown, refused token). Nothing more is sent.
    pub fn close(&mut self) {
        self.end(EndReason::Local);
        self.transmit.clear();
    }

    /// Checks the handshake and silence deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::ExpectConnected { deadline } | State::ExpectStart { deadline }
                if now >= *deadline =>
            {
                self.end(EndReason::HandshakeTimeout)
            }
            State::Streaming(s) => {
                if let Some(limit) = self.config.silence_timeout
                    && now.saturating_duration_since(s.last_media) >= limit
                {
                    self.end(EndReason::SilenceTimeout);
                }
            }
            _ => {}
        }
    }

    /// The next deadline: the handshake, the next outbound frame or the silence timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::ExpectConnected { deadline } | State::ExpectStart { deadline } => {
                Some(*deadline)
            }
            State::Streaming(s) => {
                let frame = s.frame_at();
                let silence = self
                    .config
                    .silence_timeout
                    .map(|limit| s.last_media + limit);
                Some(silence.map_or(frame, |at| at.min(frame)))
            }
            State::Ended => None,
        }
    }

    /// Whether an outbound frame is due: the driver then makes one and calls
    /// [`Stream::send_frame`].
    pub fn frame_due(&self, now: Instant) -> bool {
        matches!(&self.state, State::Streaming(s) if now >= s.frame_at())
    }

    /// When the next outbound frame may go; `None` unless streaming.
    pub fn frame_at(&self) -> Option<Instant> {
        match &self.state {
            State::Streaming(s) => Some(s.frame_at()),
            _ => None,
        }
    }

    /// Queues one outbound frame of μ-law.
    pub fn send_frame(&mut self, now: Instant, frame: &[u8; FRAME_BYTES]) {
        let State::Streaming(s) = &mut self.state else {
            return;
        };
        self.transmit
            .push_back(Outbound::Media(frame).to_json(&s.sid));
        self.stats.frames_sent += 1;
        if now.saturating_duration_since(s.next_frame) >= MIN_SPACING {
            self.stats.frames_late += 1;
        }
        s.last_sent = Some(now);
        s.next_frame += FRAME;
        let behind = now.saturating_duration_since(s.next_frame);
        if behind > MAX_LAG {
            self.stats.frames_skipped += (behind.as_micros() / FRAME.as_micros()) as u64;
            s.next_frame = now + FRAME;
        }
    }

    /// Queues a `mark`: Twilio echoes it once everything sent before it has played.
    pub fn mark(&mut self, now: Instant, name: &str) {
        let State::Streaming(s) = &self.state else {
            return;
        };
        self.transmit
            .push_back(Outbound::Mark(name).to_json(&s.sid));
        self.stats.marks_sent += 1;
        if self.marks.len() == MAX_OUTSTANDING_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back((name.to_owned(), now));
    }

    /// Queues a `clear`: Twilio drops the audio it has queued (the caller barged in).
    pub fn clear(&mut self) {
        let State::Streaming(s) = &self.state else {
            return;
        };
        self.transmit.push_back(Outbound::Clear.to_json(&s.sid));
        self.stats.clears_sent += 1;
    }

    /// The next JSON text to send.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    pub fn stream_sid(&self) -> Option<&StreamSid> {
        match &self.state {
            State::Streaming(s) => Some(&s.sid),
            _ => None,
        }
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// The last peer fault, for the log.
    pub fn last_error(&self) -> Option<&ProtocolError> {
        self.last_error.as_ref()
    }

    fn malformed(&mut self, err: ProtocolError) {
        self.stats.malformed += 1;
        self.last_error = Some(err);
    }

    fn sequence(&mut self, sequence: Option<u64>) {
        let Some(seq) = sequence else { return };
        match self.last_sequence {
            Some(last) if seq <= last => self.stats.sequence_disorder += 1,
            Some(last) => {
                // seq > last, and gaps only add up to the largest seq: this cannot overflow,
                // but it saturates rather than trust that reasoning with hostile numbers.
                self.stats.sequence_gaps = self.stats.sequence_gaps.saturating_add(seq - last - 1);
                self.last_sequence = Some(seq);
            }
            None => self.last_sequence = Some(seq),
        }
    }

    fn connected(&mut self) {
        match self.state {
            State::ExpectConnected { deadline } => self.state = State::ExpectStart { deadline },
            _ => self.stats.out_of_state += 1,
        }
    }

    fn start(&mut self, now: Instant, start: Start) {
        if !matches!(
            self.state,
            State::ExpectConnected { .. } | State::ExpectStart { .. }
        ) {
            self.stats.out_of_state += 1;
            return;
        }
        self.state = State::Streaming(Streaming {
            sid: start.stream_sid.clone(),
            next_frame: now,
            last_sent: None,
            last_media: now,
        });
        self.events.push_back(StreamEvent::Started(Box::new(start)));
    }

    fn media(&mut self, now: Instant, media: Media) -> Option<Audio<'_>> {
        let State::Streaming(s) = &mut self.state else {
            self.stats.out_of_state += 1;
            return None;
        };
        if media.track != Track::Inbound {
            self.stats.out_of_state += 1;
            return None;
        }
        s.last_media = now;
        self.stats.media += 1;
        self.chunks += 1;
        let index = media.chunk.unwrap_or(self.chunks);
        // The parser caps both (a week of stream); saturating anyway, so no input can overflow.
        let ts = media.timestamp_ms.map_or(
            index.saturating_sub(1).saturating_mul(FRAME_BYTES as u64),
            |ms| ms.saturating_mul(8),
        );
        let at = self.media_clock(now, ts);
        let media = self.media.insert(media);
        Some(Audio {
            seq: index as u16,
            ts: ts as u32,
            ssrc: SSRC,
            at,
            payload: media.payload(),
        })
    }

    /// When a chunk of media timestamp `ts` (samples) counts as arrived.
    fn media_clock(&mut self, now: Instant, ts: u64) -> Instant {
        let offset = |from: u64| Duration::from_micros(ts.saturating_sub(from).saturating_mul(125));
        if let Some((at, ts0)) = self.anchor {
            let due = at + offset(ts0);
            if due <= now + MAX_EARLY {
                return now.max(due);
            }
        }
        self.anchor = Some((now, ts));
        now
    }

    fn dtmf(&mut self, digit: char) {
        if !matches!(self.state, State::Streaming(_)) {
            self.stats.out_of_state += 1;
            return;
        }
        self.stats.dtmf += 1;
        self.events.push_back(StreamEvent::Dtmf { digit });
    }

    fn mark_echoed(&mut self, now: Instant, name: String) {
        // Twilio echoes marks in the order sent; ones before this were dropped by a `clear`.
        match self.marks.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                if let Some((name, sent)) = self.marks.drain(..=i).next_back() {
                    self.stats.marks_played += 1;
                    let after = now.saturating_duration_since(sent);
                    self.events
                        .push_back(StreamEvent::MarkPlayed { name, after });
                }
            }
            None => self.stats.out_of_state += 1,
        }
    }

    fn end(&mut self, reason: EndReason) {
        if matches!(self.state, State::Ended) {
            return;
        }
        self.state = State::Ended;
        self.events.push_back(StreamEvent::Ended(reason));
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("sid", &self.stream_sid())
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Any instant will do: the core only compares the instants it is given.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    const SID: &str = "MZ0123456789abcdef0123456789abcdef";

    fn start_msg(seq: u64) -> String {
        format!(
            r#"{{"event":"start","sequenceNumber":"{seq}","start":{{"accountSid":"AC1","streamSid":"{SID}","callSid":"CA1","tracks":["inbound"],"customParameters":{{"token":"t"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}},"streamSid":"{SID}"}}"#
        )
    }

    fn media_msg(seq: u64, chunk: u64, code: u8) -> String {
        let payload = BASE64.encode([code; 160]);
        format!(
            r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{SID}"}}"#,
            (chunk - 1) * 20
        )
    }

    fn started(t0: Instant) -> Stream {
        let mut s = Stream::new(StreamConfig::default(), t0);
        s.handle_text(
            t0,
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        );
        s.handle_text(t0, &start_msg(1));
        assert!(matches!(s.poll_event(), Some(StreamEvent::Started(_))));
        s
    }

    fn sent(s: &mut Stream) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|t| serde_json::from_str(&t).unwrap())
            .collect()
    }

    /// μ-law code of a loud sample (about −6 dBFS) and of silence.
    const LOUD: u8 = 0x80;
    const QUIET: u8 = 0xff;

    #[test]
    fn media_becomes_audio_on_the_8khz_grid() {
        let t0 = t0();
        let mut s = started(t0);
        let audio = s.handle_text(t0, &media_msg(2, 3, QUIET)).unwrap();
        assert_eq!((audio.seq, audio.ts, audio.payload.len()), (3, 320, 160));
        assert_eq!(s.stats().media, 1);
    }

    #[test]
    fn absurd_timestamps_and_chunks_are_dropped_and_counted_not_overflowed() {
        let t0 = t0();
        let mut s = started(t0);
        let payload = BASE64.encode([QUIET; 160]);
        let media = |chunk: &str, ts: &str| {
            format!(
                r#"{{"event":"media","media":{{"track":"inbound","chunk":{chunk},"timestamp":{ts},"payload":"{payload}"}}}}"#
            )
        };
        let max_ms = super::super::protocol::MAX_MEDIA_TIMESTAMP_MS;
        let max_chunk = super::super::protocol::MAX_MEDIA_CHUNK;
        // `ms * 8` of these would overflow u64; `chunk * 160` of the last one too.
        for (chunk, ts) in [
            ("1".to_owned(), u64::MAX.to_string()),
            ("1".to_owned(), "\"18446744073709551615\"".to_owned()),
            ("1".to_owned(), (u64::MAX / 8 + 1).to_string()),
            ("1".to_owned(), (max_ms + 1).to_string()),
            (u64::MAX.to_string(), "0".to_owned()),
            ((max_chunk + 1).to_string(), "0".to_owned()),
        ] {
            assert!(
                s.handle_text(t0, &media(&chunk, &ts)).is_none(),
                "{chunk} {ts}"
            );
        }
        assert_eq!((s.stats().malformed, s.stats().media), (6, 0));
        assert!(matches!(
            s.last_error(),
            Some(ProtocolError::BadField { field: "chunk", .. })
        ));
        // The largest values taken map onto the 8 kHz grid, wrapping like RTP timestamps.
        let audio = s
            .handle_text(t0, &media(&max_chunk.to_string(), &max_ms.to_string()))
            .unwrap();
        assert_eq!(audio.ts, (max_ms * 8) as u32);
        assert_eq!(audio.seq, max_chunk as u16);
        // Without a timestamp the chunk number places the audio, also without overflow.
        let no_ts =
            format!(r#"{{"event":"media","media":{{"chunk":{max_chunk},"payload":"{payload}"}}}}"#);
        let audio = s.handle_text(t0, &no_ts).unwrap();
        assert_eq!(audio.ts, ((max_chunk - 1) * 160) as u32);
        assert_eq!((s.stats().malformed, s.stats().media), (6, 2));
    }

    #[test]
    fn a_sequence_number_jump_to_the_largest_u64_is_counted_without_overflow() {
        let t0 = t0();
        let mut s = started(t0);
        s.handle_text(t0, &media_msg(u64::MAX, 1, QUIET)).unwrap();
        assert_eq!(s.stats().sequence_gaps, u64::MAX - 2);
        s.handle_text(t0, &media_msg(3, 2, QUIET)).unwrap();
        assert_eq!(
            (s.stats().sequence_gaps, s.stats().sequence_disorder),
            (u64::MAX - 2, 1)
        );
    }

    #[test]
    fn early_chunks_keep_the_first_chunks_timeline_and_a_fast_clock_re_anchors() {
        let t0 = t0();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = started(t0);
        // Chunk 1 (media time 0) is 15 ms late; chunk 2 (20 ms) comes on time for its own
        // clock but early for the stream's: it counts from 35 ms. Chunk 3 is 50 ms late.
        assert_eq!(
            s.handle_text(ms(15), &media_msg(2, 1, QUIET)).unwrap().at,
            ms(15)
        );
        assert_eq!(
            s.handle_text(ms(20), &media_msg(3, 2, QUIET)).unwrap().at,
            ms(35)
        );
        assert_eq!(
            s.handle_text(ms(105), &media_msg(4, 3, QUIET)).unwrap().at,
            ms(105)
        );
        // Chunk 20 (380 ms) due at 395, arriving 150 ms early: the clock is re-anchored.
        assert_eq!(
            s.handle_text(ms(245), &media_msg(5, 20, QUIET)).unwrap().at,
            ms(245)
        );
        assert_eq!(
            s.handle_text(ms(260), &media_msg(6, 21, QUIET)).unwrap().at,
            ms(265)
        );
    }

    #[test]
    fn handshake_times_out_without_start() {
        let t0 = t0();
        let mut s = Stream::new(StreamConfig::default(), t0);
        s.handle_text(
            t0,
            r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#,
        );
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        s.handle_timeout(t0 + Duration::from_millis(2999));
        assert_eq!(s.poll_event(), None);
        s.handle_timeout(t0 + Duration::from_secs(3));
        assert_eq!(
            s.poll_event(),
            Some(StreamEvent::Ended(EndReason::HandshakeTimeout))
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn malformed_frames_are_counted_and_the_stream_stays_up() {
        let t0 = t0();
        let mut s = started(t0);
        assert!(s.handle_text(t0, "not json").is_none());
        assert!(
            s.handle_text(
                t0,
                r#"{"event":"media","sequenceNumber":"2","media":{"payload":"@@@"}}"#
            )
            .is_none()
        );
        let short = BASE64.encode([0u8; 100]);
        assert!(
            s.handle_text(
                t0,
                &format!(r#"{{"event":"media","media":{{"payload":"{short}"}}}}"#)
            )
            .is_none()
        );
        assert!(s.handle_text(t0, &"x".repeat(MAX_MESSAGE + 1)).is_none());
        s.handle_binary(t0, 12);
        assert!(s.handle_text(t0, r#"{"event":"hello"}"#).is_none());
        assert_eq!(s.stats().malformed, 5);
        assert_eq!(s.stats().oversized, 1);
        assert_eq!(s.stats().unknown_events, 1);
        assert!(s.handle_text(t0, &media_msg(3, 1, QUIET)).is_some());
        assert!(!s.is_ended());
    }

    #[test]
    fn sequence_number_gaps_are_counted() {
        let t0 = t0();
        let mut s = started(t0);
        s.handle_text(t0, &media_msg(2, 1, QUIET));
        s.handle_text(t0, &media_msg(5, 4, QUIET));
        s.handle_text(t0, &media_msg(4, 3, QUIET));
        assert_eq!(
            (s.stats().sequence_gaps, s.stats().sequence_disorder),
            (2, 1)
        );
    }

    #[test]
    fn media_before_start_is_out_of_state() {
        let t0 = t0();
        let mut s = Stream::new(StreamConfig::default(), t0);
        assert!(s.handle_text(t0, &media_msg(2, 1, QUIET)).is_none());
        assert_eq!(s.stats().out_of_state, 1);
        s.handle_text(t0, &start_msg(1));
        s.handle_text(t0, &start_msg(3));
        assert_eq!(s.stats().out_of_state, 2);
    }

    #[test]
    fn frames_are_paced_every_20ms_and_catch_up_gently_after_a_stall() {
        let t0 = t0();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = started(t0);
        let frame = [QUIET; 160];
        assert!(s.frame_due(t0));
        s.send_frame(t0, &frame);
        assert!(!s.frame_due(ms(19)));
        assert!(s.frame_due(ms(20)));
        assert_eq!(s.poll_timeout(), Some(ms(20)));
        let out = sent(&mut s);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["event"], "media");
        assert_eq!(
            BASE64
                .decode(out[0]["media"]["payload"].as_str().unwrap())
                .unwrap()
                .len(),
            160
        );
        // Frame 1 goes 30 ms late: frame 2 (due at 40) waits until 10 ms after it, frame 3 is
        // on time again.
        s.send_frame(ms(50), &frame);
        assert!(!s.frame_due(ms(59)));
        assert_eq!(s.poll_timeout(), Some(ms(60)));
        s.send_frame(ms(60), &frame);
        assert_eq!(s.poll_timeout(), Some(ms(70)));
        s.send_frame(ms(70), &frame);
        assert_eq!(s.poll_timeout(), Some(ms(80)));
        assert_eq!((s.stats().frames_late, s.stats().frames_skipped), (3, 0));
        // A 300 ms stall: the clock skips ahead rather than catching up.
        s.send_frame(ms(380), &frame);
        assert_eq!(s.poll_timeout(), Some(ms(400)));
        assert!(s.stats().frames_skipped >= 14, "{:?}", s.stats());
    }

    #[test]
    fn a_mark_follows_its_frame_and_its_echo_is_reported() {
        let t0 = t0();
        let mut s = started(t0);
        let frame = [LOUD; 160];
        s.send_frame(t0, &frame);
        s.send_frame(t0 + FRAME, &frame);
        s.mark(t0 + FRAME, "greeting");
        s.send_frame(t0 + FRAME * 2, &frame);
        let events: Vec<String> = sent(&mut s)
            .iter()
            .map(|v| v["event"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(events, ["media", "media", "mark", "media"]);
        let echo = format!(
            r#"{{"event":"mark","sequenceNumber":"2","streamSid":"{SID}","mark":{{"name":"greeting"}}}}"#
        );
        s.handle_text(t0 + Duration::from_millis(300), &echo);
        assert_eq!(
            s.poll_event(),
            Some(StreamEvent::MarkPlayed {
                name: "greeting".into(),
                after: Duration::from_millis(280)
            })
        );
        assert_eq!(s.stats().marks_played, 1);
    }

    #[test]
    fn dtmf_is_reported_and_clear_is_sent_when_asked() {
        let t0 = t0();
        let mut s = started(t0);
        s.send_frame(t0, &[LOUD; 160]);
        sent(&mut s);
        s.handle_text(t0, &format!(r#"{{"event":"dtmf","streamSid":"{SID}","sequenceNumber":"2","dtmf":{{"track":"inbound_track","digit":"5"}}}}"#));
        assert_eq!(s.poll_event(), Some(StreamEvent::Dtmf { digit: '5' }));
        assert_eq!(s.poll_event(), None);
        s.clear();
        assert_eq!(sent(&mut s)[0]["event"], "clear");
        assert_eq!(s.stats().clears_sent, 1);
    }

    #[test]
    fn silence_past_the_timeout_ends_the_stream() {
        let t0 = t0();
        let config = StreamConfig {
            silence_timeout: Some(Duration::from_secs(2)),
            ..StreamConfig::default()
        };
        let mut s = Stream::new(config, t0);
        s.handle_text(t0, &start_msg(1));
        s.poll_event();
        s.handle_text(t0 + Duration::from_secs(1), &media_msg(2, 1, QUIET));
        s.handle_timeout(t0 + Duration::from_millis(2900));
        assert_eq!(s.poll_event(), None);
        s.handle_timeout(t0 + Duration::from_secs(3));
        assert_eq!(
            s.poll_event(),
            Some(StreamEvent::Ended(EndReason::SilenceTimeout))
        );
    }

    #[test]
    fn stop_ends_the_stream_once() {
        let t0 = t0();
        let mut s = started(t0);
        s.handle_text(
            t0,
            &format!(r#"{{"event":"stop","sequenceNumber":"2","streamSid":"{SID}","stop":{{}}}}"#),
        );
        s.handle_closed(t0);
        assert_eq!(s.poll_event(), Some(StreamEvent::Ended(EndReason::Stopped)));
        assert_eq!(s.poll_event(), None);
        s.send_frame(t0, &[QUIET; 160]);
        assert_eq!(s.poll_transmit(), None);
    }
}
