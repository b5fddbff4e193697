//! The agent responder: a voice agent speaks on earshot's side of the call. The call task owns
//! one [`AgentLink`] per call — the sans-IO protocol session ([`crate::agent::twilio`]) and the
//! channels to the WebSocket driver ([`crate::net::agent`]), which a [`AgentConnector`] starts.
//!
//! Sends to the driver never wait: a full channel keeps texts in the session, and an agent
//! that stops reading long enough ([`MAX_PENDING`]) is given up as a fallback.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::event::{AgentNoticeKind, CallInfo, FallbackReason, Speaker};
use super::greeting::Greeting;
use crate::agent::openai::{self, RealtimeConfig, RealtimeEvent, RealtimeSession};
use crate::agent::twilio::{AgentStream, StartInfo};
use crate::agent::{FRAME_BYTES, Fill, Received};

/// Texts waiting for a driver that does not take them (about 5 s of caller audio) before the
/// agent counts as not reading.
pub const MAX_PENDING: usize = 250;

/// What the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentInput {
    /// The WebSocket is up, `after` the connect began.
    Connected {
        after: Duration,
    },
    /// A text message, read from the socket `at`.
    Text {
        text: String,
        at: Instant,
    },
    Binary,
    /// The socket closed: `normal` with a close frame of code 1000 or 1001.
    Closed {
        normal: bool,
    },
    /// The session could not be had, or broke.
    Failed(FallbackReason),
}

/// A text for the agent, stamped with when the call task made it.
#[derive(Debug)]
pub struct Outgoing {
    pub text: String,
    pub at: Instant,
}

/// The call task's ends of a driver's channels.
#[derive(Debug)]
pub struct AgentIo {
    pub to_agent: mpsc::Sender<Outgoing>,
    pub from_agent: mpsc::Receiver<AgentInput>,
}

/// What a call task observed of its agent, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentObservation {
    /// From the end of the caller's speech to the agent's first audio of its turn.
    ResponseLatency(Duration),
    /// Frames the agent's audio only partly filled.
    Underruns(u64),
    /// Agent audio dropped because the queue was full, in bytes.
    OverrunBytes(u64),
    Fallback(FallbackReason),
    /// An agent message from its read off the socket to its audio queued for the caller.
    Downlink(Duration),
    /// A tick that played agent audio: from the tick to the frame sent to the caller.
    FrameOut(Duration),
}

/// What to do when the agent fails.
#[derive(Debug, Clone)]
pub enum FallbackMode {
    /// Play this message (empty: none), then hang up.
    Hangup(Greeting),
    /// Stay on the line as a listen-only call.
    Listen,
    /// Transfer the caller to this destination (a person); if the leg cannot, hang up.
    Transfer(super::TransferTarget),
}

/// Settings of the agent bridge.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub protocol: ProtocolSettings,
    pub fallback: FallbackMode,
    /// Agent audio that may wait to be played, in bytes (8 per ms).
    pub max_queue_bytes: usize,
    /// Sent as `accountSid`.
    pub account_sid: String,
    /// Where the model's transfer function hands the caller (`[agent].transfer_to`, OpenAI
    /// Realtime only); `None`: the function is not offered.
    pub transfer_to: Option<super::TransferTarget>,
}

/// Starts agent sessions: implemented by the WebSocket driver.
pub trait AgentConnector: Send + Sync + fmt::Debug {
    /// Opens a session for this call. Returns at once; the driver reports `Connected` or
    /// `Failed` on the channel.
    fn connect(&self, info: &CallInfo, call_sid: &str) -> AgentIo;

    fn observe(&self, what: AgentObservation);

    fn settings(&self) -> &AgentSettings;
}

/// The `callSid` an agent is told: Twilio's own for Twilio calls, else one derived from the
/// call id (`CA` + 32 hex digits), stable for the call.
pub fn agent_call_sid(info: &CallInfo) -> String {
    if info.source == super::Source::Twilio {
        return info.external_id.clone();
    }
    format!("CA{}", hex32(info.id.as_str().as_bytes()))
}

fn hex32(seed: &[u8]) -> String {
    let digest = Sha256::digest(seed);
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The agent's state, for the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Connecting,
    /// Connected; the caller has the floor.
    Listening,
    /// The agent's audio is playing.
    Speaking,
    /// Given up; the fallback runs.
    FellBack,
    Closed,
}

/// What the call task must do after an agent input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOutcome {
    Continue,
    Connected {
        after: Duration,
    },
    /// The agent hung up.
    Hangup,
    Fallback(FallbackReason),
}

/// The protocol spoken to an agent.
#[derive(Debug, Clone)]
pub enum ProtocolSettings {
    /// Twilio Media Streams, earshot playing Twilio.
    Twilio,
    /// The OpenAI Realtime API with this session.
    OpenAi(RealtimeConfig),
}

/// What an agent session has to tell the call task beside audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The service heard the caller speak over the agent: its audio is dropped; the caller's
    /// leg should drop what it buffered too.
    BargeIn,
    Transcript {
        speaker: Speaker,
        item_id: String,
        text: String,
        start_ms: u64,
        end_ms: u64,
    },
    Notice {
        kind: AgentNoticeKind,
        code: String,
        message: String,
    },
    /// The model asked to hand the caller to a person ([`AgentSettings::transfer_to`]); the
    /// call task answers with [`AgentLink::function_result`].
    TransferRequested { call_id: String },
}

/// One session's protocol state machine.
#[derive(Debug)]
enum Session {
    Twilio(Box<AgentStream>),
    OpenAi(Box<RealtimeSession>),
}

/// Calls one method of whichever session it is.
macro_rules! each {
    ($session:expr, $s:ident => $body:expr) => {
        match $session {
            Session::Twilio($s) => $body,
            Session::OpenAi($s) => $body,
        }
    };
}

impl Session {
    fn handle_text(&mut self, text: &str) -> Received {
        each!(self, s => s.handle_text(text))
    }
    fn handle_binary(&mut self) {
        each!(self, s => s.handle_binary())
    }
    fn caller_audio(&mut self, elapsed_ms: u64, ulaw: &[u8; FRAME_BYTES]) {
        each!(self, s => s.caller_audio(elapsed_ms, ulaw))
    }
    fn dtmf(&mut self, digit: char) {
        each!(self, s => s.dtmf(digit))
    }
    fn next_frame(&mut self, out: &mut [u8; FRAME_BYTES]) -> Fill {
        each!(self, s => s.next_frame(out))
    }
    fn has_audio(&self) -> bool {
        each!(self, s => s.has_audio())
    }
    fn poll_transmit(&mut self) -> Option<String> {
        each!(self, s => s.poll_transmit())
    }
    fn unsend(&mut self, text: String) {
        each!(self, s => s.unsend(text))
    }
    fn pending(&self) -> usize {
        each!(self, s => s.pending())
    }
    fn stop(&mut self) {
        each!(self, s => s.stop())
    }
    /// Drops the agent's queued audio (the operator has the floor).
    fn clear_audio(&mut self) {
        match self {
            Session::Twilio(s) => s.clear(),
            Session::OpenAi(s) => s.interrupt(),
        }
    }
    /// (underruns, overrun bytes) so far.
    fn counters(&self) -> (u64, u64) {
        each!(self, s => (s.stats().underruns, s.stats().overrun_bytes))
    }
}

/// One call's agent session.
#[derive(Debug)]
pub struct AgentLink {
    stream: Session,
    /// The call's start: Realtime times are call-relative.
    call_started: Instant,
    io: AgentIo,
    connector: Arc<dyn AgentConnector>,
    state: AgentState,
    /// When the stream started (caller `media` timestamps count from here).
    started: Option<Instant>,
    /// The caller stopped speaking here and the agent has not answered yet.
    awaiting: Option<Instant>,
    reported_underruns: u64,
    reported_overrun: u64,
    /// The operator talks: the agent's audio is dropped and it hears silence.
    paused: bool,
}

impl AgentLink {
    pub fn connect(
        connector: Arc<dyn AgentConnector>,
        info: &CallInfo,
        call_started: Instant,
    ) -> Self {
        let call_sid = agent_call_sid(info);
        let settings = connector.settings();
        let stream_sid = format!(
            "MZ{}",
            hex32(format!("{}{}", info.id, rand::random::<u64>()).as_bytes())
        );
        let parameters: BTreeMap<String, String> = [
            ("callId", info.id.as_str()),
            ("caller", info.caller.as_str()),
            ("callee", info.callee.as_str()),
            ("source", info.source.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let stream = match &settings.protocol {
            ProtocolSettings::Twilio => Session::Twilio(Box::new(AgentStream::new(
                StartInfo {
                    stream_sid,
                    call_sid: call_sid.clone(),
                    account_sid: settings.account_sid.clone(),
                    parameters,
                },
                settings.max_queue_bytes,
            ))),
            ProtocolSettings::OpenAi(config) => Session::OpenAi(Box::new(RealtimeSession::new(
                RealtimeConfig {
                    transfer_function: settings.transfer_to.is_some(),
                    ..config.clone()
                },
                settings.max_queue_bytes,
            ))),
        };
        let io = connector.connect(info, &call_sid);
        Self {
            stream,
            call_started,
            io,
            connector,
            state: AgentState::Connecting,
            started: None,
            awaiting: None,
            reported_underruns: 0,
            reported_overrun: 0,
            paused: false,
        }
    }

    /// The operator took the floor: the agent's queued audio is dropped, and until
    /// [`AgentLink::resume`] it hears silence and whatever it says is dropped too.
    pub fn pause(&mut self) {
        self.paused = true;
        if self.started.is_some() {
            self.stream.clear_audio();
        }
        if self.state == AgentState::Speaking {
            self.state = AgentState::Listening;
        }
    }

    /// The operator let go: the agent hears the caller and speaks again.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// Whether the agent's audio played in the last frame.
    pub fn speaking(&self) -> bool {
        self.state == AgentState::Speaking
    }

    pub fn state(&self) -> AgentState {
        self.state
    }

    pub fn fallback_mode(&self) -> FallbackMode {
        self.connector.settings().fallback.clone()
    }

    pub fn observe(&self, what: AgentObservation) {
        self.connector.observe(what);
    }

    /// The next report from the driver. Cancel-safe; pends forever once the driver is gone.
    pub async fn recv(&mut self) -> AgentInput {
        match self.io.from_agent.recv().await {
            Some(input) => input,
            None => std::future::pending().await,
        }
    }

    /// Takes one report from the driver.
    pub fn input(&mut self, now: Instant, input: AgentInput) -> AgentOutcome {
        match input {
            AgentInput::Connected { after } => {
                self.state = AgentState::Listening;
                self.started = Some(now);
                AgentOutcome::Connected { after }
            }
            AgentInput::Text { text, at } => {
                if self.stream.handle_text(&text) == Received::Audio {
                    let queued = crate::clock::now();
                    self.observe(AgentObservation::Downlink(
                        queued.saturating_duration_since(at),
                    ));
                }
                self.flush(now)
            }
            AgentInput::Binary => {
                self.stream.handle_binary();
                AgentOutcome::Continue
            }
            AgentInput::Closed { normal: true } => AgentOutcome::Hangup,
            AgentInput::Closed { normal: false } => AgentOutcome::Fallback(FallbackReason::Closed),
            AgentInput::Failed(reason) => AgentOutcome::Fallback(reason),
        }
    }

    /// 20 ms of the caller (μ-law), after the jitter buffer.
    pub fn caller_frame(&mut self, now: Instant, ulaw: &[u8; FRAME_BYTES]) -> AgentOutcome {
        let Some(started) = self.started else {
            // Not connected yet: Twilio, too, streams only once the socket is up.
            return AgentOutcome::Continue;
        };
        // Twilio's timestamps count from the stream's start; Realtime times are the call's.
        let origin = match self.stream {
            Session::Twilio(_) => started,
            Session::OpenAi(_) => self.call_started,
        };
        let elapsed = now.saturating_duration_since(origin).as_millis() as u64;
        if self.paused {
            // The stream's timeline goes on; the caller's words are for the operator.
            self.stream.caller_audio(elapsed, &[0xff; FRAME_BYTES]);
        } else {
            self.stream.caller_audio(elapsed, ulaw);
        }
        self.flush(now)
    }

    pub fn dtmf(&mut self, now: Instant, digit: char) -> AgentOutcome {
        if self.started.is_none() {
            return AgentOutcome::Continue;
        }
        self.stream.dtmf(digit);
        self.flush(now)
    }

    /// The caller stopped speaking at `at`: the agent's next audio answers it.
    pub fn caller_turn_ended(&mut self, at: Instant) {
        if self.started.is_some() && !self.stream.has_audio() {
            self.awaiting = Some(at);
        }
    }

    /// The agent's next 20 ms (μ-law, silence when it has nothing to say).
    pub fn next_frame(&mut self, now: Instant, out: &mut [u8; FRAME_BYTES]) -> AgentOutcome {
        if self.paused {
            if self.stream.has_audio() {
                self.stream.clear_audio();
            }
            *out = [0xff; FRAME_BYTES];
            return self.flush(now);
        }
        let fill = self.stream.next_frame(out);
        if self.state == AgentState::Listening || self.state == AgentState::Speaking {
            self.state = match fill {
                Fill::Empty => AgentState::Listening,
                Fill::Partial | Fill::Full => AgentState::Speaking,
            };
        }
        if fill != Fill::Empty
            && let Some(at) = self.awaiting.take()
        {
            self.observe(AgentObservation::ResponseLatency(
                now.saturating_duration_since(at),
            ));
        }
        self.report_counters();
        self.flush(now)
    }

    /// Sends what the session has queued, without waiting.
    fn flush(&mut self, now: Instant) -> AgentOutcome {
        while let Some(text) = self.stream.poll_transmit() {
            match self.io.to_agent.try_send(Outgoing { text, at: now }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(out)) => {
                    self.stream.unsend(out.text);
                    break;
                }
                // The driver is gone; its report says why.
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        if self.stream.pending() > MAX_PENDING {
            return AgentOutcome::Fallback(FallbackReason::NotReading);
        }
        AgentOutcome::Continue
    }

    fn report_counters(&mut self) {
        let (underruns, overrun_bytes) = self.stream.counters();
        if underruns > self.reported_underruns {
            self.observe(AgentObservation::Underruns(
                underruns - self.reported_underruns,
            ));
            self.reported_underruns = underruns;
        }
        if overrun_bytes > self.reported_overrun {
            self.observe(AgentObservation::OverrunBytes(
                overrun_bytes - self.reported_overrun,
            ));
            self.reported_overrun = overrun_bytes;
        }
    }

    /// The next thing the session has to say beside audio (Realtime sessions only).
    pub fn poll_event(&mut self, now: Instant) -> Option<AgentEvent> {
        let Session::OpenAi(session) = &mut self.stream else {
            return None;
        };
        let now_ms = now.saturating_duration_since(self.call_started).as_millis() as u64;
        loop {
            let event = session.poll_event()?;
            match event {
                RealtimeEvent::BargeIn { .. } => return Some(AgentEvent::BargeIn),
                RealtimeEvent::Transcript(t) => {
                    let start_ms = t.start_ms.or(t.end_ms).unwrap_or(now_ms);
                    return Some(AgentEvent::Transcript {
                        speaker: match t.speaker {
                            openai::Speaker::Caller => Speaker::Caller,
                            openai::Speaker::Agent => Speaker::Agent,
                        },
                        item_id: t.item_id,
                        text: t.text,
                        start_ms,
                        end_ms: t.end_ms.unwrap_or(start_ms).max(start_ms),
                    });
                }
                RealtimeEvent::ServiceError { code, message } => {
                    return Some(AgentEvent::Notice {
                        kind: AgentNoticeKind::Error,
                        code: code.unwrap_or_default(),
                        message,
                    });
                }
                RealtimeEvent::RateLimits(limits) => {
                    // Reported on every update; a limit used up is worth a notice.
                    if let Some(limit) = limits.iter().find(|l| l.remaining == Some(0)) {
                        return Some(AgentEvent::Notice {
                            kind: AgentNoticeKind::RateLimited,
                            code: limit.name.clone(),
                            message: format!(
                                "{} used up; resets in {:.1} s",
                                limit.name,
                                limit.reset_seconds.unwrap_or(0.0)
                            ),
                        });
                    }
                }
                RealtimeEvent::TransferRequested { call_id, reason } => {
                    // The reason may quote the caller: personal data.
                    tracing::debug!(%reason, "the model asked for a transfer");
                    return Some(AgentEvent::TransferRequested { call_id });
                }
                RealtimeEvent::ResponseDone { .. } => {}
            }
        }
    }

    /// Where the model's transfer function hands the caller, if it is offered.
    pub fn transfer_to(&self) -> Option<super::TransferTarget> {
        self.connector.settings().transfer_to.clone()
    }

    /// Tells the model how its function call `call_id` went (Realtime sessions only).
    pub fn function_result(&mut self, call_id: &str, output: &str) {
        if let Session::OpenAi(session) = &mut self.stream {
            session.function_result(call_id, output);
            let _ = self.flush(crate::clock::now());
        }
    }

    /// The session is given up: nothing more is sent (the driver closes the socket once its
    /// channel is dropped).
    pub fn fell_back(mut self, reason: FallbackReason) {
        self.state = AgentState::FellBack;
        self.observe(AgentObservation::Fallback(reason));
        self.end();
    }

    /// Ends the protocol session (Twilio's `stop`; a Realtime session reports what it was
    /// still transcribing); the call task drains [`AgentLink::poll_event`] after it.
    pub fn stop_session(&mut self) {
        if self.started.is_some() {
            self.stream.stop();
            let _ = self.flush(crate::clock::now());
        }
    }

    /// The call is over: `stop`, then the channel closes.
    pub fn stop(mut self) {
        if self.started.is_some() {
            self.stream.stop();
            let _ = self.flush(crate::clock::now());
        }
        self.end();
    }

    fn end(&mut self) {
        self.state = AgentState::Closed;
        match &self.stream {
            Session::Twilio(stream) => {
                let s = stream.stats();
                tracing::debug!(
                    received = s.received,
                    media = s.media,
                    audio_bytes = s.audio_bytes,
                    overrun_bytes = s.overrun_bytes,
                    underruns = s.underruns,
                    marks = s.marks,
                    clears = s.clears,
                    malformed = s.malformed,
                    unknown = s.unknown_events,
                    foreign = s.foreign,
                    sent = s.sent,
                    "agent session finished"
                );
            }
            Session::OpenAi(session) => {
                let s = session.stats();
                tracing::debug!(
                    received = s.received,
                    audio_deltas = s.audio_deltas,
                    audio_bytes = s.audio_bytes,
                    overrun_bytes = s.overrun_bytes,
                    underruns = s.underruns,
                    barge_ins = s.barge_ins,
                    truncations = s.truncations,
                    stale_deltas = s.stale_deltas,
                    transcripts = s.transcripts,
                    service_errors = s.service_errors,
                    malformed = s.malformed,
                    unknown = s.unknown_events,
                    out_of_order = s.out_of_order,
                    "realtime session finished"
                );
            }
        }
        self.report_counters();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::call::event::{CallId, Source};
    use base64::Engine as _;
    use std::sync::Mutex;
    use std::time::SystemTime;

    /// A connector whose driver is the test: it keeps the agent-bound receiver.
    #[derive(Debug)]
    struct TestConnector {
        settings: AgentSettings,
        to_agent: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    }

    impl AgentConnector for TestConnector {
        fn connect(&self, _: &CallInfo, _: &str) -> AgentIo {
            let (to_agent, rx) = mpsc::channel(1024);
            let (_tx, from_agent) = mpsc::channel(16);
            *self.to_agent.lock().unwrap() = Some(rx);
            AgentIo {
                to_agent,
                from_agent,
            }
        }
        fn observe(&self, _: AgentObservation) {}
        fn settings(&self) -> &AgentSettings {
            &self.settings
        }
    }

    fn media(sid: &str, bytes: &[u8]) -> String {
        let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
        format!(r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{payload}"}}}}"#)
    }

    #[test]
    fn a_paused_agent_is_silenced_hears_silence_and_speaks_again_on_resume() {
        let connector = Arc::new(TestConnector {
            settings: AgentSettings {
                protocol: ProtocolSettings::Twilio,
                fallback: FallbackMode::Listen,
                max_queue_bytes: 8000,
                account_sid: "AC1".into(),
                transfer_to: None,
            },
            to_agent: Mutex::new(None),
        });
        let info = CallInfo {
            id: CallId::new(SystemTime::UNIX_EPOCH, 1),
            source: Source::Sip,
            external_id: "x".into(),
            caller: "1".into(),
            callee: "2".into(),
            started_at: SystemTime::UNIX_EPOCH,
        };
        let t0 = Instant::now();
        let mut link = AgentLink::connect(connector.clone(), &info, t0);
        let mut to_agent = connector.to_agent.lock().unwrap().take().unwrap();
        link.input(
            t0,
            AgentInput::Connected {
                after: Duration::ZERO,
            },
        );
        let Session::Twilio(stream) = &link.stream else {
            panic!("a Twilio session")
        };
        let sid = stream.start_info().stream_sid.clone();
        let text = |bytes: &[u8]| AgentInput::Text {
            text: media(&sid, bytes),
            at: t0,
        };
        link.input(t0, text(&[1; 800]));
        let mut out = [0u8; FRAME_BYTES];
        link.next_frame(t0, &mut out);
        assert_eq!(out, [1; FRAME_BYTES]);

        link.pause();
        link.input(t0, text(&[2; 160]));
        link.next_frame(t0, &mut out);
        assert_eq!(out, [0xff; FRAME_BYTES], "the agent's audio was dropped");
        while to_agent.try_recv().is_ok() {}
        link.caller_frame(t0, &[0x10; FRAME_BYTES]);
        let sent = to_agent.try_recv().unwrap().text;
        let silence = base64::engine::general_purpose::STANDARD.encode([0xff; FRAME_BYTES]);
        assert!(
            sent.contains(&silence),
            "the agent heard the caller: {sent}"
        );

        link.resume();
        link.input(t0, text(&[3; 160]));
        link.next_frame(t0, &mut out);
        assert_eq!(out, [3; FRAME_BYTES]);
        link.caller_frame(t0, &[0x10; FRAME_BYTES]);
        let sent = to_agent.try_recv().unwrap().text;
        assert!(!sent.contains(&silence), "{sent}");
    }
}
