//! The OpenAI Realtime API, sans-IO: earshot is the client and the model is the call's agent.
//! The call task hands this session the caller's audio and DTMF and the server's WebSocket
//! text; it gives back the JSON events to send, the model's audio 20 ms at a time, and
//! [`RealtimeEvent`]s (barge-ins, transcripts, service errors, rate limits).
//!
//! The GA interface (not the beta: no `OpenAI-Beta` header, `session.type = "realtime"`,
//! `response.output_audio.*` names), over a WebSocket to [`ws_url`], with G.711 μ-law at 8 kHz
//! both ways (`audio/pcmu`), so nothing is resampled.
//!
//! Towards the server:
//! - `session.update`, queued first: `type` `realtime`, `model`, `output_modalities` `["audio"]`,
//!   `instructions`, `audio.input.format` `{"type":"audio/pcmu"}`, `audio.input.transcription`
//!   `{"model"}`, `audio.input.turn_detection` `server_vad` (`threshold`, `prefix_padding_ms`,
//!   `silence_duration_ms`, `create_response` and `interrupt_response` true: the server answers
//!   each turn and cancels its response when the caller speaks over it), `audio.output.format`
//!   `{"type":"audio/pcmu"}` and `audio.output.voice`.
//! - `input_audio_buffer.append` with each 20 ms of the caller, base64.
//! - `conversation.item.truncate` (`item_id`, `content_index`, `audio_end_ms`) when the caller
//!   barges in: the server drops the part of the model's answer the caller never heard, and its
//!   transcript with it.
//! - DTMF as a user message: `conversation.item.create` with an `input_text` part
//!   ("The caller pressed 123#"), then `response.create` (deferred while a response is
//!   active). Digits are gathered until `#` or [`DTMF_IDLE_MS`] without a key, as pipecat's
//!   `DTMFAggregator` does before handing keypad input to an LLM as user text; OpenAI's own
//!   Twilio samples drop DTMF.
//!
//! From the server:
//! - `response.output_audio.delta` (and the beta `response.audio.delta`): queued up to a bound,
//!   the excess dropped and counted, played 160 bytes per [`RealtimeSession::next_frame`].
//!   Each item's (`item_id`, `content_index`) played bytes are tracked: 8 bytes are 1 ms.
//! - `input_audio_buffer.speech_started`: barge-in. The queued audio is dropped at once, every
//!   item not wholly played is truncated at the milliseconds actually played, and
//!   [`RealtimeEvent::BargeIn`] tells the call task to clear the caller's leg. Later deltas of
//!   a truncated item, or of the response it belonged to, are counted and never played; an
//!   item is truncated once.
//! - Transcripts: the caller's from `conversation.item.input_audio_transcription.completed`,
//!   timed by that item's `speech_started.audio_start_ms` / `speech_stopped.audio_end_ms`
//!   (milliseconds of appended audio, mapped back to call time); the agent's from
//!   `response.output_audio_transcript.done` (beta `response.audio_transcript.done`), timed by
//!   when its audio started and stopped playing, and reported once its audio is settled
//!   (played out, truncated, or the session stopped).
//! - A function call, `response.output_item.done` with an item of type `function_call`: when
//!   the session offers [`TRANSFER_FUNCTION`] (`tools` in `session.update`, with
//!   `tool_choice` `auto`) and the model calls it, [`RealtimeEvent::TransferRequested`] asks
//!   the call task to hand the caller to a person; [`RealtimeSession::function_result`] tells
//!   the model how that went (`conversation.item.create` of a `function_call_output`, then
//!   `response.create`). A call of any other function is answered as unknown and counted.
//! - `error` and `rate_limits.updated` become events; `response.created` / `response.done`
//!   track the active response; `response.output_audio.done` closes an item's audio. Other
//!   documented events are taken and ignored; unknown, malformed and out-of-order ones are
//!   counted and dropped. The session never holds the API key (the driver sends it as a
//!   header), and error texts are scrubbed of anything shaped like one.
//!
//! Time is the call's clock, in ms, as `caller_audio`'s `elapsed_ms` gives it (its origin is
//! the call task's choice): each caller frame holds the 20 ms that end at its `elapsed_ms`. Each `next_frame` plays the 20 ms that
//! start at the last `elapsed_ms` and moves the clock on by 20 — in a call task's tick it
//! plays first, then sends the caller's frame, so both cover the same 20 ms — and an item's
//! playback times are exact to the byte within its frames. The session never reads a clock.
//!
//! Sources:
//! - Client events (GA): <https://developers.openai.com/api/reference/resources/realtime/client-events>
//!   (`session.update` schema, `audio/pcmu`, `conversation.item.truncate`).
//! - Server events (GA), read through copies of OpenAI's API spec rather than OpenAI's own page:
//!   the Azure SDK reference `@azure/ai-projects` `RealtimeServerEvent*` interfaces
//!   (<https://learn.microsoft.com/en-us/javascript/api/@azure/ai-projects/realtimeservereventresponseaudiotranscriptdone>:
//!   `response.output_audio_transcript.done`, `…speechstarted`: `audio_start_ms`, `item_id`;
//!   `…conversationitemtruncate`: `audio_end_ms` may not exceed the audio's duration) and the
//!   spec-generated `openai-client-base` / `async-openai` docs on docs.rs (event list, `error`,
//!   `rate_limits.updated`, `conversation.item.input_audio_transcription.completed`).
//! - Realtime conversations guide: <https://developers.openai.com/api/docs/guides/realtime-conversations>.
//! - Beta → GA renames (`response.audio.delta` → `response.output_audio.delta`, …, and
//!   `session.type`): <https://learn.microsoft.com/en-us/azure/foundry/openai/how-to/realtime-audio-preview-api-migration-guide>,
//!   <https://voximplant.com/docs/voice-ai/openai/migration-guide>.
//! - Voices (`marin`, `cedar` recommended): openai-java `RealtimeResponseCreateAudioOutput.Output.Voice`.
//! - Barge-in and truncation as published: twilio-samples/speech-assistant-openai-realtime-api-python
//!   (`main.py`: truncate the last assistant item at the ms played, then Twilio `clear`);
//!   openai/openai-agents-js `packages/agents-extensions/src/TwilioRealtimeTransport.ts`
//!   (per-item played duration, every playing item truncated, deltas of interrupted
//!   responses discarded); pipecat-ai/pipecat `src/pipecat/services/openai/realtime/llm.py`
//!   (truncate at no more than the audio received; `item_id`/`content_index` of the current
//!   audio). DTMF: pipecat `DTMFAggregator` (idle timeout, `#` terminates).

use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::AudioQueue;
pub use super::{FRAME_BYTES, Fill, MAX_MESSAGE, Received};

/// The GA Realtime WebSocket endpoint; the model goes in `?model=` ([`ws_url`]).
pub const ENDPOINT: &str = "wss://api.openai.com/v1/realtime";
/// Milliseconds without a key after which the gathered DTMF digits are sent.
pub const DTMF_IDLE_MS: u64 = 2000;
/// μ-law bytes per millisecond at 8 kHz.
const BYTES_PER_MS: u64 = 8;
/// Milliseconds of one frame.
const FRAME_MS: u64 = 20;
/// Agent items whose playback is tracked at once; beyond this the oldest is forgotten.
const MAX_ITEMS: usize = 32;
/// Ids of interrupted items and responses remembered, so their late deltas are dropped.
const MAX_INTERRUPTED: usize = 64;
/// Caller turns (speech started, not yet transcribed) remembered.
const MAX_TURNS: usize = 32;
/// Breaks in the caller's audio timeline remembered for mapping VAD times to call time.
const MAX_ANCHORS: usize = 256;
/// Events not yet polled; beyond this the oldest is dropped and counted.
const MAX_EVENTS: usize = 1024;
/// Longest transcript kept (bytes); longer ones are cut at a character boundary.
const MAX_TRANSCRIPT: usize = 16 * 1024;
/// Longest error message or code kept (bytes).
const MAX_ERROR_TEXT: usize = 1024;
/// Digits gathered before they must be sent.
const MAX_DIGITS: usize = 32;
/// Rate limits taken from one `rate_limits.updated`.
const MAX_RATE_LIMITS: usize = 8;

/// The GA WebSocket URL for `model`.
/// The one function a session may offer the model: hand the caller to a person.
pub const TRANSFER_FUNCTION: &str = "transfer_call";

/// Longest reason kept from a function call's arguments, in bytes.
pub const MAX_REASON: usize = 256;

/// Longest `call_id` kept from a function call.
const MAX_CALL_ID: usize = 128;

pub fn ws_url(model: &str) -> String {
    format!("{ENDPOINT}?model={model}")
}

/// How the model is set up for a call: what `session.update` says.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeConfig {
    /// The Realtime model, also in the URL's `?model=`.
    pub model: String,
    /// `audio.output.voice`; fixed once the model has spoken.
    pub voice: String,
    /// The system instructions; empty: the model's default (the field is left out).
    pub instructions: String,
    /// Server VAD activation threshold, 0.0..=1.0: higher needs louder speech.
    pub vad_threshold: f32,
    /// Audio kept before detected speech, in ms.
    pub prefix_padding_ms: u32,
    /// Silence that ends the caller's turn, in ms.
    pub silence_duration_ms: u32,
    /// `audio.input.transcription.model` for the caller's transcripts; empty: none.
    pub transcription_model: String,
    /// Offer the model [`TRANSFER_FUNCTION`], to hand the caller to a person.
    pub transfer_function: bool,
}

impl Default for RealtimeConfig {
    /// `gpt-realtime`, voice `marin` (one of the two OpenAI recommends), server VAD at its
    /// documented defaults (0.5, 300 ms, 500 ms) and `gpt-4o-transcribe`.
    fn default() -> Self {
        Self {
            model: "gpt-realtime".to_owned(),
            voice: "marin".to_owned(),
            instructions: String::new(),
            vad_threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            transcription_model: "gpt-4o-transcribe".to_owned(),
            transfer_function: false,
        }
    }
}

/// Who spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Caller,
    Agent,
}

/// What was said, for the call's record. Times are milliseconds on the call's clock (the
/// `elapsed_ms` of [`RealtimeSession::caller_audio`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    pub speaker: Speaker,
    /// The conversation item: the caller's audio turn or the model's answer.
    pub item_id: String,
    /// The caller's words as transcribed, or the model's as it generated them (all of them,
    /// even when the caller barged in: `end_ms` says how far it was heard).
    pub text: String,
    /// Caller: where speech was detected (prefix padding included). Agent: when its audio
    /// began to play. `None` when unknown, or never played.
    pub start_ms: Option<u64>,
    /// Caller: where the silence began. Agent: when its last played byte ended.
    pub end_ms: Option<u64>,
    /// Agent only: the caller barged in (or the call ended) before it was all played.
    pub interrupted: bool,
}

/// One limit of `rate_limits.updated`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// `requests` or `tokens`.
    pub name: String,
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_seconds: Option<f64>,
}

/// What the session has to tell the call task, from [`RealtimeSession::poll_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum RealtimeEvent {
    /// The caller spoke over the model: its queued audio is dropped and the items it was
    /// playing are truncated. The call task clears the caller's leg too.
    BargeIn {
        /// The item whose audio was playing (or queued next), if any.
        item_id: Option<String>,
        /// Milliseconds of that item the caller heard: its `audio_end_ms`.
        played_ms: u64,
        /// Queued audio dropped, in bytes (8 per ms).
        dropped_bytes: u64,
    },
    Transcript(Transcript),
    /// The server's `error` event (`code` and `message`, scrubbed of key-like strings).
    ServiceError {
        code: Option<String>,
        message: String,
    },
    RateLimits(Vec<RateLimit>),
    /// The model called [`TRANSFER_FUNCTION`]: the call task transfers the caller and answers
    /// with [`RealtimeSession::function_result`] for `call_id`.
    TransferRequested {
        call_id: String,
        /// The model's stated reason, at most [`MAX_REASON`] bytes (may quote the caller:
        /// personal data).
        reason: String,
    },
    /// `response.done`: `completed`, `cancelled`, `failed` or `incomplete`.
    ResponseDone {
        response_id: String,
        status: String,
    },
}

/// Counters of one Realtime session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealtimeStats {
    /// Messages received from the server.
    pub received: u64,
    /// Audio deltas taken.
    pub audio_deltas: u64,
    /// Agent audio bytes queued, and dropped because the queue was full.
    pub audio_bytes: u64,
    pub overrun_bytes: u64,
    /// Frames the queue could only partly fill.
    pub underruns: u64,
    /// `speech_started` events that dropped or truncated the model's audio.
    pub barge_ins: u64,
    /// `conversation.item.truncate` sent.
    pub truncations: u64,
    /// Queued agent audio dropped by barge-ins, in bytes.
    pub barge_in_bytes: u64,
    /// Deltas of interrupted items or responses, or after an item's audio was done.
    pub stale_deltas: u64,
    /// Transcripts reported, both sides.
    pub transcripts: u64,
    /// `conversation.item.input_audio_transcription.failed`.
    pub transcription_failures: u64,
    /// `error` events.
    pub service_errors: u64,
    /// DTMF user messages sent.
    pub dtmf_messages: u64,
    /// Calls of [`TRANSFER_FUNCTION`], and of functions the session never offered.
    pub function_calls: u64,
    pub unknown_functions: u64,
    /// Not JSON, missing or mistyped fields, bad base64, oversized, binary.
    pub malformed: u64,
    pub unknown_events: u64,
    /// Events about items, turns or truncations this session does not know.
    pub out_of_order: u64,
    /// Events dropped because nobody polled them.
    pub events_dropped: u64,
    /// Messages sent to the server.
    pub sent: u64,
}

/// One model output item's audio (`item_id`, `content_index`) as it is played.
#[derive(Debug)]
struct Item {
    /// Internal number, for the playback runs.
    seq: u64,
    id: String,
    content_index: u32,
    response_id: Option<String>,
    /// Bytes of its audio received (queued or not), queued, and played.
    received: u64,
    queued: u64,
    played: u64,
    /// Call time its first byte began, and its last played byte ended.
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    /// No more audio will come (`response.output_audio.done` or `response.done`).
    audio_done: bool,
    transcript: Option<String>,
    /// Truncated by a barge-in, or cut short by `stop`.
    interrupted: bool,
    /// Its transcript has been reported.
    reported: bool,
}

impl Item {
    /// All of its audio is in and played, or it was interrupted: its times are final.
    fn settled(&self) -> bool {
        self.interrupted || (self.audio_done && self.played == self.queued)
    }
}

/// A stretch of the playback queue belonging to one item.
#[derive(Debug)]
struct Run {
    item: u64,
    bytes: usize,
}

/// The caller's speech as server VAD saw it, until its transcript comes.
#[derive(Debug)]
struct Turn {
    item_id: String,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
}

/// Maps milliseconds of appended caller audio (what VAD times count) to call time.
#[derive(Debug, Default)]
struct InputClock {
    /// Caller audio appended so far, in ms.
    appended_ms: u64,
    /// (audio ms, call ms) where the appended audio stopped following the call clock.
    anchors: VecDeque<(u64, u64)>,
}

impl InputClock {
    /// The next 20 ms appended are the caller's from `call_ms` on.
    fn append(&mut self, call_ms: u64) {
        let expected = self
            .anchors
            .back()
            .map(|&(audio, call)| call + (self.appended_ms - audio));
        if expected != Some(call_ms) {
            if self.anchors.len() == MAX_ANCHORS {
                self.anchors.pop_front();
            }
            self.anchors.push_back((self.appended_ms, call_ms));
        }
        self.appended_ms += FRAME_MS;
    }

    fn call_ms(&self, audio_ms: u64) -> Option<u64> {
        let &(audio, call) = self
            .anchors
            .iter()
            .rev()
            .find(|(audio, _)| *audio <= audio_ms)
            .or_else(|| self.anchors.front())?;
        Some(if audio_ms >= audio {
            call.saturating_add(audio_ms - audio)
        } else {
            call.saturating_sub(audio - audio_ms)
        })
    }
}

/// One call's OpenAI Realtime session.
#[derive(Debug)]
pub struct RealtimeSession {
    config: RealtimeConfig,
    /// The call's clock: the last `elapsed_ms`, moved on 20 ms by each frame played since.
    now_ms: u64,
    input: InputClock,
    /// The model's audio not yet played (μ-law), and whose it is.
    queue: AudioQueue,
    runs: VecDeque<Run>,
    items: VecDeque<Item>,
    next_seq: u64,
    interrupted_items: VecDeque<String>,
    interrupted_responses: VecDeque<String>,
    /// The response being generated (`response.created` until `response.done`).
    active_response: Option<String>,
    turns: VecDeque<Turn>,
    /// DTMF digits gathered, and when they are sent.
    digits: String,
    digits_due: Option<u64>,
    /// A `response.create` waits for the active response to finish.
    respond_when_idle: bool,
    transmit: VecDeque<String>,
    events: VecDeque<RealtimeEvent>,
    stopped: bool,
    stats: RealtimeStats,
}

#[derive(Serialize)]
struct OutSessionUpdate<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: OutSession<'a>,
}

#[derive(Serialize)]
struct OutSession<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    model: &'a str,
    output_modalities: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
    audio: OutAudio<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[OutFunction; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
}

/// A function offered to the model (`tools[]` of `session.update`).
#[derive(Serialize)]
struct OutFunction {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    description: &'static str,
    parameters: serde_json::Value,
}

impl OutFunction {
    fn transfer() -> Self {
        Self {
            kind: "function",
            name: TRANSFER_FUNCTION,
            description: "Transfer the caller to a human colleague. Call it when the caller \
                          asks for a person, or when you cannot help them. Tell the caller \
                          you are transferring them first.",
            parameters: serde_json::json!({
                "type": "object",
                "properties": {
                    "reason": {
                        "type": "string",
                        "description": "Why the caller is transferred, in a few words."
                    }
                },
                "required": []
            }),
        }
    }
}

#[derive(Serialize)]
struct OutFunctionOutput<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item: OutFunctionOutputItem<'a>,
}

#[derive(Serialize)]
struct OutFunctionOutputItem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    call_id: &'a str,
    output: &'a str,
}

#[derive(Serialize)]
struct OutAudio<'a> {
    input: OutAudioInput<'a>,
    output: OutAudioOutput<'a>,
}

#[derive(Serialize)]
struct OutAudioInput<'a> {
    format: OutFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    transcription: Option<OutTranscription<'a>>,
    turn_detection: OutTurnDetection,
}

#[derive(Serialize)]
struct OutAudioOutput<'a> {
    format: OutFormat,
    voice: &'a str,
}

#[derive(Serialize)]
struct OutFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// G.711 μ-law, 8 kHz: what the caller's leg carries.
const PCMU: OutFormat = OutFormat { kind: "audio/pcmu" };

#[derive(Serialize)]
struct OutTranscription<'a> {
    model: &'a str,
}

#[derive(Serialize)]
struct OutTurnDetection {
    #[serde(rename = "type")]
    kind: &'static str,
    threshold: f32,
    prefix_padding_ms: u32,
    silence_duration_ms: u32,
    create_response: bool,
    interrupt_response: bool,
}

#[derive(Serialize)]
struct OutAppend {
    #[serde(rename = "type")]
    kind: &'static str,
    audio: String,
}

#[derive(Serialize)]
struct OutTruncate<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item_id: &'a str,
    content_index: u32,
    audio_end_ms: u64,
}

#[derive(Serialize)]
struct OutItemCreate<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    item: OutMessage<'a>,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: [OutText<'a>; 1],
}

#[derive(Serialize)]
struct OutText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct OutEvent {
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A server event: the fields earshot reads of every kind it handles, flat.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    item_id: Option<String>,
    content_index: Option<u32>,
    response_id: Option<String>,
    delta: Option<String>,
    transcript: Option<String>,
    audio_start_ms: Option<u64>,
    audio_end_ms: Option<u64>,
    error: Option<IncomingError>,
    rate_limits: Option<Vec<IncomingRateLimit>>,
    response: Option<IncomingResponse>,
    item: Option<IncomingItem>,
}

/// `response.output_item.done`'s item: only function calls are read.
#[derive(Deserialize)]
struct IncomingItem {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    call_id: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct TransferArguments {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct IncomingError {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct IncomingRateLimit {
    name: Option<String>,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_seconds: Option<f64>,
}

#[derive(Deserialize)]
struct IncomingResponse {
    id: Option<String>,
    status: Option<String>,
}

/// Documented server events this session takes without acting on them.
const TAKEN: &[&str] = &[
    "session.created",
    "session.updated",
    "conversation.created",
    "conversation.item.added",
    "conversation.item.created",
    "conversation.item.done",
    "conversation.item.retrieved",
    "conversation.item.deleted",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.segment",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.timeout_triggered",
    "output_audio_buffer.started",
    "output_audio_buffer.stopped",
    "output_audio_buffer.cleared",
    "response.output_item.added",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.text.delta",
    "response.text.done",
    "response.output_audio_transcript.delta",
    "response.audio_transcript.delta",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
];

impl RealtimeSession {
    /// A session for one call: `session.update` is queued at once. At most `max_queue_bytes`
    /// of the model's audio wait to be played.
    pub fn new(config: RealtimeConfig, max_queue_bytes: usize) -> Self {
        let mut session = Self {
            config,
            now_ms: 0,
            input: InputClock::default(),
            queue: AudioQueue::new(max_queue_bytes),
            runs: VecDeque::new(),
            items: VecDeque::new(),
            next_seq: 0,
            interrupted_items: VecDeque::new(),
            interrupted_responses: VecDeque::new(),
            active_response: None,
            turns: VecDeque::new(),
            digits: String::new(),
            digits_due: None,
            respond_when_idle: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stopped: false,
            stats: RealtimeStats::default(),
        };
        let c = &session.config;
        let update = OutSessionUpdate {
            kind: "session.update",
            session: OutSession {
                kind: "realtime",
                model: &c.model,
                output_modalities: ["audio"],
                instructions: (!c.instructions.is_empty()).then_some(c.instructions.as_str()),
                audio: OutAudio {
                    input: OutAudioInput {
                        format: PCMU,
                        transcription: (!c.transcription_model.is_empty()).then_some(
                            OutTranscription {
                                model: &c.transcription_model,
                            },
                        ),
                        turn_detection: OutTurnDetection {
                            kind: "server_vad",
                            threshold: c.vad_threshold,
                            prefix_padding_ms: c.prefix_padding_ms,
                            silence_duration_ms: c.silence_duration_ms,
                            create_response: true,
                            interrupt_response: true,
                        },
                    },
                    output: OutAudioOutput {
                        format: PCMU,
                        voice: &c.voice,
                    },
                },
                tools: c.transfer_function.then(|| [OutFunction::transfer()]),
                tool_choice: c.transfer_function.then_some("auto"),
            },
        };
        let text = serde_json::to_string(&update).unwrap_or_default();
        session.send(text);
        session
    }

    pub fn config(&self) -> &RealtimeConfig {
        &self.config
    }

    /// 20 ms of the caller's audio (μ-law), `elapsed_ms` into the call: appended to the
    /// server's input buffer. Gathered DTMF digits that are due go out first.
    pub fn caller_audio(&mut self, elapsed_ms: u64, ulaw: &[u8; FRAME_BYTES]) {
        if self.stopped {
            return;
        }
        // The caller's clock rules: frames played before the first caller audio (while the
        // socket was opening) must not put playback ahead of it.
        self.now_ms = elapsed_ms;
        if self.digits_due.is_some_and(|due| due <= self.now_ms) {
            self.send_digits();
        }
        self.input.append(elapsed_ms.saturating_sub(FRAME_MS));
        let append = OutAppend {
            kind: "input_audio_buffer.append",
            audio: BASE64.encode(ulaw),
        };
        let text = serde_json::to_string(&append).unwrap_or_default();
        self.send(text);
    }

    /// A key the caller pressed (`0`-`9`, `*`, `#`, `A`-`D`; others are dropped): gathered,
    /// and sent as a user message on `#` or after [`DTMF_IDLE_MS`] without another key
    /// (counted on `caller_audio`'s clock).
    pub fn dtmf(&mut self, digit: char) {
        if self.stopped || !matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D') {
            return;
        }
        if self.digits.len() >= MAX_DIGITS {
            self.send_digits();
        }
        self.digits.push(digit);
        self.digits_due = Some(self.now_ms + DTMF_IDLE_MS);
        if digit == '#' {
            self.send_digits();
        }
    }

    /// The call is over: the queued audio is dropped, the transcripts of the model's items
    /// are reported as they stand, and nothing more is queued or taken.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = self.queue.clear();
        self.runs.clear();
        self.digits.clear();
        self.digits_due = None;
        for item in &mut self.items {
            if !item.settled() {
                item.interrupted = true;
            }
        }
        self.report_settled();
    }

    /// One text message from the server.
    pub fn handle_text(&mut self, text: &str) -> Received {
        self.stats.received += 1;
        if self.stopped {
            return Received::Ignored;
        }
        if text.len() > MAX_MESSAGE {
            self.stats.malformed += 1;
            return Received::Ignored;
        }
        let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        match msg.kind.as_str() {
            "response.output_audio.delta" | "response.audio.delta" => self.audio_delta(msg),
            "response.output_audio.done" | "response.audio.done" => self.audio_done(msg),
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                self.agent_transcript(msg)
            }
            "input_audio_buffer.speech_started" => self.speech_started(msg),
            "input_audio_buffer.speech_stopped" => self.speech_stopped(msg),
            "conversation.item.input_audio_transcription.completed" => self.caller_transcript(msg),
            "conversation.item.input_audio_transcription.failed" => {
                self.stats.transcription_failures += 1;
                if let Some(id) = msg.item_id {
                    self.turns.retain(|t| t.item_id != id);
                }
                Received::Handled
            }
            "conversation.item.truncated" => self.truncated(msg),
            "response.created" => {
                self.active_response = msg.response.and_then(|r| r.id);
                Received::Handled
            }
            "response.done" => self.response_done(msg),
            "response.output_item.done" => self.output_item_done(msg),
            "error" => self.service_error(msg),
            "rate_limits.updated" => self.rate_limits(msg),
            kind if TAKEN.contains(&kind) => Received::Handled,
            _ => {
                self.stats.unknown_events += 1;
                Received::Ignored
            }
        }
    }

    /// Someone else took the floor (earshot's operator): the queued audio is dropped and the
    /// items not wholly played are truncated at what was played, as for a barge-in.
    pub fn interrupt(&mut self) {
        if !self.stopped {
            self.barge_in();
        }
    }

    /// A binary message from the server: not part of the protocol.
    pub fn handle_binary(&mut self) {
        self.stats.received += 1;
        self.stats.malformed += 1;
    }

    /// Fills `out` with the next 20 ms of the model's audio (silence where there is none).
    pub fn next_frame(&mut self, out: &mut [u8; FRAME_BYTES]) -> Fill {
        let n = self.queue.pop_frame(out);
        self.account_played(n);
        self.now_ms += FRAME_MS;
        let fill = Fill::of(n);
        if fill == Fill::Partial {
            self.stats.underruns += 1;
        }
        fill
    }

    /// Whether the model's audio is waiting to be played.
    pub fn has_audio(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Audio queued, in bytes (8 per ms).
    pub fn queued_bytes(&self) -> usize {
        self.queue.len()
    }

    /// The next JSON text for the server.
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

    /// The next thing the call task should know.
    pub fn poll_event(&mut self) -> Option<RealtimeEvent> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> &RealtimeStats {
        &self.stats
    }

    fn audio_delta(&mut self, msg: Incoming) -> Received {
        let (Some(item_id), Some(delta)) = (msg.item_id, msg.delta) else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        if self.was_interrupted(&item_id, msg.response_id.as_deref()) {
            self.stats.stale_deltas += 1;
            return Received::Ignored;
        }
        let audio = match BASE64.decode(delta.as_bytes()) {
            Ok(audio) if !audio.is_empty() => audio,
            _ => {
                self.stats.malformed += 1;
                return Received::Ignored;
            }
        };
        let content_index = msg.content_index.unwrap_or(0);
        let seq = match self.item_index(&item_id, content_index) {
            Some(i) => match self.items.get(i) {
                Some(item) if item.audio_done => {
                    self.stats.stale_deltas += 1;
                    return Received::Ignored;
                }
                Some(item) => item.seq,
                None => return Received::Ignored,
            },
            None => self.add_item(item_id, content_index, msg.response_id),
        };
        self.stats.audio_deltas += 1;
        let take = self.queue.push(&audio);
        self.stats.audio_bytes += take as u64;
        self.stats.overrun_bytes += (audio.len() - take) as u64;
        if let Some(item) = self.items.iter_mut().find(|i| i.seq == seq) {
            item.received += audio.len() as u64;
            item.queued += take as u64;
        }
        if take > 0 {
            match self.runs.back_mut() {
                Some(run) if run.item == seq => run.bytes += take,
                _ => self.runs.push_back(Run {
                    item: seq,
                    bytes: take,
                }),
            }
        }
        Received::Audio
    }

    fn audio_done(&mut self, msg: Incoming) -> Received {
        let Some(item_id) = msg.item_id else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        match self.item_index(&item_id, msg.content_index.unwrap_or(0)) {
            Some(i) => {
                if let Some(item) = self.items.get_mut(i) {
                    item.audio_done = true;
                }
                self.report_settled();
                Received::Handled
            }
            None if self.was_interrupted(&item_id, msg.response_id.as_deref()) => Received::Handled,
            None => {
                self.stats.out_of_order += 1;
                Received::Ignored
            }
        }
    }

    fn agent_transcript(&mut self, msg: Incoming) -> Received {
        let (Some(item_id), Some(text)) = (msg.item_id, msg.transcript) else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        let content_index = msg.content_index.unwrap_or(0);
        let i = match self.item_index(&item_id, content_index) {
            Some(i) => i,
            None => {
                // No audio of it was taken: it was interrupted before any played, or its
                // transcript came first. It is reported once settled.
                let interrupted = self.was_interrupted(&item_id, msg.response_id.as_deref());
                self.add_item(item_id, content_index, msg.response_id);
                let last = self.items.len().saturating_sub(1);
                if let Some(item) = self.items.get_mut(last) {
                    item.interrupted = interrupted;
                }
                last
            }
        };
        match self.items.get_mut(i) {
            Some(item) if item.transcript.is_none() && !item.reported => {
                item.transcript = Some(bounded(&text, MAX_TRANSCRIPT));
            }
            _ => {
                self.stats.out_of_order += 1;
                return Received::Ignored;
            }
        }
        self.report_settled();
        Received::Handled
    }

    /// Server VAD heard the caller: a new turn, and a barge-in if the model was speaking.
    fn speech_started(&mut self, msg: Incoming) -> Received {
        let Some(item_id) = msg.item_id else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        if self.turns.iter().any(|t| t.item_id == item_id) {
            self.stats.out_of_order += 1;
        } else {
            if self.turns.len() == MAX_TURNS {
                self.turns.pop_front();
            }
            let start_ms = msg.audio_start_ms.and_then(|ms| self.input.call_ms(ms));
            self.turns.push_back(Turn {
                item_id,
                start_ms,
                end_ms: None,
            });
        }
        if self.barge_in() {
            Received::Clear
        } else {
            Received::Handled
        }
    }

    fn speech_stopped(&mut self, msg: Incoming) -> Received {
        let Some(item_id) = msg.item_id else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        let end_ms = msg.audio_end_ms.and_then(|ms| self.input.call_ms(ms));
        match self.turns.iter_mut().find(|t| t.item_id == item_id) {
            Some(turn) => {
                turn.end_ms = end_ms;
                Received::Handled
            }
            None => {
                self.stats.out_of_order += 1;
                Received::Ignored
            }
        }
    }

    fn caller_transcript(&mut self, msg: Incoming) -> Received {
        let (Some(item_id), Some(text)) = (msg.item_id, msg.transcript) else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        let (start_ms, end_ms) = match self.turns.iter().position(|t| t.item_id == item_id) {
            Some(i) => self
                .turns
                .remove(i)
                .map_or((None, None), |t| (t.start_ms, t.end_ms)),
            None => {
                // Reported all the same: the words matter more than their times.
                self.stats.out_of_order += 1;
                (None, None)
            }
        };
        self.stats.transcripts += 1;
        self.push_event(RealtimeEvent::Transcript(Transcript {
            speaker: Speaker::Caller,
            item_id,
            text: bounded(&text, MAX_TRANSCRIPT),
            start_ms,
            end_ms,
            interrupted: false,
        }));
        Received::Handled
    }

    fn truncated(&mut self, msg: Incoming) -> Received {
        let Some(item_id) = msg.item_id else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        if self.interrupted_items.contains(&item_id) {
            Received::Handled
        } else {
            self.stats.out_of_order += 1;
            Received::Ignored
        }
    }

    /// An output item is complete: a function call is acted on, anything else was followed
    /// through its own events.
    fn output_item_done(&mut self, msg: Incoming) -> Received {
        let Some(item) = msg.item else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        if item.kind.as_deref() != Some("function_call") {
            return Received::Handled;
        }
        let Some(call_id) = item
            .call_id
            .filter(|id| !id.is_empty() && id.len() <= MAX_CALL_ID)
        else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        if !self.config.transfer_function || item.name.as_deref() != Some(TRANSFER_FUNCTION) {
            self.stats.unknown_functions += 1;
            self.function_result(&call_id, r#"{"error":"unknown function"}"#);
            return Received::Handled;
        }
        // Arguments the model got wrong do not stop a transfer it asked for.
        let reason = item
            .arguments
            .and_then(|a| serde_json::from_str::<TransferArguments>(&a).ok())
            .and_then(|a| a.reason)
            .map(|r| bounded(&r, MAX_REASON))
            .unwrap_or_default();
        self.stats.function_calls += 1;
        self.push_event(RealtimeEvent::TransferRequested { call_id, reason });
        Received::Handled
    }

    /// Answers the model's function call `call_id` with `output` (JSON text) and asks for a
    /// response to it (once the active response is done).
    pub fn function_result(&mut self, call_id: &str, output: &str) {
        if self.stopped {
            return;
        }
        let create = OutFunctionOutput {
            kind: "conversation.item.create",
            item: OutFunctionOutputItem {
                kind: "function_call_output",
                call_id,
                output,
            },
        };
        let json = serde_json::to_string(&create).unwrap_or_default();
        self.send(json);
        self.respond();
    }

    fn response_done(&mut self, msg: Incoming) -> Received {
        let Some(IncomingResponse {
            id: Some(response_id),
            status,
        }) = msg.response
        else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        for item in &mut self.items {
            if item.response_id.as_deref() == Some(response_id.as_str()) {
                item.audio_done = true;
            }
        }
        if self.active_response.as_deref() == Some(response_id.as_str()) {
            self.active_response = None;
        }
        if self.active_response.is_none() && self.respond_when_idle {
            self.respond_when_idle = false;
            self.send_event("response.create");
        }
        self.report_settled();
        self.push_event(RealtimeEvent::ResponseDone {
            response_id,
            status: status.unwrap_or_default(),
        });
        Received::Handled
    }

    fn service_error(&mut self, msg: Incoming) -> Received {
        let Some(error) = msg.error else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        self.stats.service_errors += 1;
        self.push_event(RealtimeEvent::ServiceError {
            code: error.code.map(|c| scrub(&c)),
            message: scrub(error.message.as_deref().unwrap_or_default()),
        });
        Received::Handled
    }

    fn rate_limits(&mut self, msg: Incoming) -> Received {
        let Some(limits) = msg.rate_limits else {
            self.stats.malformed += 1;
            return Received::Ignored;
        };
        let limits = limits
            .into_iter()
            .take(MAX_RATE_LIMITS)
            .map(|l| RateLimit {
                name: bounded(l.name.as_deref().unwrap_or_default(), 64),
                limit: l.limit,
                remaining: l.remaining,
                reset_seconds: l.reset_seconds,
            })
            .collect();
        self.push_event(RealtimeEvent::RateLimits(limits));
        Received::Handled
    }

    /// Drops the queued audio and truncates every item not wholly played at what was played.
    /// Whether anything was dropped or truncated.
    fn barge_in(&mut self) -> bool {
        let dropped = self.queue.clear() as u64;
        self.runs.clear();
        let mut truncate = Vec::new();
        for item in &mut self.items {
            if !item.settled() && item.received > 0 {
                item.interrupted = true;
                truncate.push((
                    item.id.clone(),
                    item.content_index,
                    item.played,
                    item.response_id.clone(),
                ));
            }
        }
        if let Some(response) = self.active_response.take() {
            self.remember_response(response);
        }
        // The caller's new turn gets a response of its own, which sees any digits sent.
        self.respond_when_idle = false;
        if dropped == 0 && truncate.is_empty() {
            return false;
        }
        self.stats.barge_ins += 1;
        self.stats.barge_in_bytes += dropped;
        let playing = truncate
            .first()
            .map(|(id, _, played, _)| (id.clone(), played / BYTES_PER_MS));
        for (item_id, content_index, played, response) in truncate {
            if let Some(response) = response {
                self.remember_response(response);
            }
            let out = OutTruncate {
                kind: "conversation.item.truncate",
                item_id: &item_id,
                content_index,
                audio_end_ms: played / BYTES_PER_MS,
            };
            let text = serde_json::to_string(&out).unwrap_or_default();
            self.send(text);
            self.stats.truncations += 1;
            if !self.interrupted_items.contains(&item_id) {
                if self.interrupted_items.len() == MAX_INTERRUPTED {
                    self.interrupted_items.pop_front();
                }
                self.interrupted_items.push_back(item_id);
            }
        }
        let (item_id, played_ms) = playing.map_or((None, 0), |(id, ms)| (Some(id), ms));
        self.push_event(RealtimeEvent::BargeIn {
            item_id,
            played_ms,
            dropped_bytes: dropped,
        });
        self.report_settled();
        true
    }

    /// Credits `n` bytes just played to the items they belong to, at the frame starting now.
    fn account_played(&mut self, n: usize) {
        let mut offset = 0;
        while offset < n {
            let Some(run) = self.runs.front_mut() else {
                break;
            };
            let take = run.bytes.min(n - offset);
            let seq = run.item;
            run.bytes -= take;
            if run.bytes == 0 {
                self.runs.pop_front();
            }
            let start = self.now_ms + offset as u64 / BYTES_PER_MS;
            let end = self.now_ms + (offset + take) as u64 / BYTES_PER_MS;
            if let Some(item) = self.items.iter_mut().find(|i| i.seq == seq) {
                item.played += take as u64;
                item.start_ms.get_or_insert(start);
                item.end_ms = Some(end);
            }
            offset += take;
        }
        if n > 0 {
            self.report_settled();
        }
    }

    /// Reports the transcripts of settled items. Reported items stay until evicted, so a
    /// repeated transcript or a late delta of theirs is recognised.
    fn report_settled(&mut self) {
        let mut reports = Vec::new();
        for item in &mut self.items {
            if !item.reported
                && item.settled()
                && let Some(text) = item.transcript.take()
            {
                item.reported = true;
                reports.push(Transcript {
                    speaker: Speaker::Agent,
                    item_id: item.id.clone(),
                    text,
                    start_ms: item.start_ms,
                    end_ms: item.end_ms,
                    interrupted: item.interrupted,
                });
            }
        }
        for report in reports {
            self.stats.transcripts += 1;
            self.push_event(RealtimeEvent::Transcript(report));
        }
    }

    fn item_index(&self, id: &str, content_index: u32) -> Option<usize> {
        self.items
            .iter()
            .position(|i| i.id == id && i.content_index == content_index)
    }

    /// Tracks a new item; the oldest reported one, else the oldest settled one, else the
    /// oldest makes room.
    fn add_item(&mut self, id: String, content_index: u32, response_id: Option<String>) -> u64 {
        if self.items.len() >= MAX_ITEMS {
            let oldest = (self.items.iter().position(|i| i.reported))
                .or_else(|| self.items.iter().position(Item::settled))
                .unwrap_or(0);
            self.items.remove(oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.push_back(Item {
            seq,
            id,
            content_index,
            response_id,
            received: 0,
            queued: 0,
            played: 0,
            start_ms: None,
            end_ms: None,
            audio_done: false,
            transcript: None,
            interrupted: false,
            reported: false,
        });
        seq
    }

    /// Whether the item, or the response it belongs to, was cut off by a barge-in.
    fn was_interrupted(&self, item_id: &str, response_id: Option<&str>) -> bool {
        self.interrupted_items.iter().any(|i| i == item_id)
            || response_id.is_some_and(|r| self.interrupted_responses.iter().any(|i| i == r))
    }

    fn remember_response(&mut self, response: String) {
        if self.interrupted_responses.contains(&response) {
            return;
        }
        if self.interrupted_responses.len() == MAX_INTERRUPTED {
            self.interrupted_responses.pop_front();
        }
        self.interrupted_responses.push_back(response);
    }

    /// The gathered digits as a user message, and a response to them.
    fn send_digits(&mut self) {
        self.digits_due = None;
        if self.digits.is_empty() {
            return;
        }
        let text = format!("The caller pressed {}", self.digits);
        self.digits.clear();
        let create = OutItemCreate {
            kind: "conversation.item.create",
            item: OutMessage {
                kind: "message",
                role: "user",
                content: [OutText {
                    kind: "input_text",
                    text: &text,
                }],
            },
        };
        let json = serde_json::to_string(&create).unwrap_or_default();
        self.send(json);
        self.stats.dtmf_messages += 1;
        self.respond();
    }

    /// Asks the model to answer: now, or once the active response is done.
    fn respond(&mut self) {
        if self.active_response.is_some() {
            self.respond_when_idle = true;
        } else {
            self.send_event("response.create");
        }
    }

    fn send_event(&mut self, kind: &'static str) {
        let text = serde_json::to_string(&OutEvent { kind }).unwrap_or_default();
        self.send(text);
    }

    fn send(&mut self, text: String) {
        self.stats.sent += 1;
        self.transmit.push_back(text);
    }

    fn push_event(&mut self, event: RealtimeEvent) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }
}

/// `text`, cut to at most `max` bytes at a character boundary.
fn bounded(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// An error text fit for a log: bounded, and anything shaped like an API key (`sk-` and at
/// least 8 more key characters) replaced, in case a server ever echoes one.
fn scrub(text: &str) -> String {
    let text = bounded(text, MAX_ERROR_TEXT);
    let key_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*';
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("sk-") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let key_len = from.find(|c: char| !key_char(c)).unwrap_or(from.len());
        let word_start = !before.ends_with(|c: char| c.is_ascii_alphanumeric());
        if word_start && key_len >= "sk-".len() + 8 {
            out.push_str("sk-[redacted]");
            rest = from.get(key_len..).unwrap_or_default();
        } else {
            out.push_str("sk-");
            rest = from.get(3..).unwrap_or_default();
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::agent::SILENCE;
    use serde_json::{Value, json};

    /// A call in virtual time: each tick plays a frame, then sends the caller's 20 ms, as the
    /// call task does.
    struct Call {
        s: RealtimeSession,
        /// The call clock: `elapsed_ms` of the last caller frame.
        t: u64,
    }

    impl Call {
        fn new() -> Self {
            Self::with(RealtimeConfig {
                instructions: "Be brief.".into(),
                ..RealtimeConfig::default()
            })
        }

        fn with(config: RealtimeConfig) -> Self {
            let mut call = Call {
                s: RealtimeSession::new(config, 80_000),
                t: 0,
            };
            call.sent();
            call
        }

        fn tick(&mut self) -> Fill {
            let mut out = [0u8; FRAME_BYTES];
            let fill = self.s.next_frame(&mut out);
            self.t += FRAME_MS;
            self.s.caller_audio(self.t, &[0x7f; FRAME_BYTES]);
            fill
        }

        fn ticks(&mut self, n: usize) {
            for _ in 0..n {
                self.tick();
            }
        }

        /// What the session sent, less the caller's audio.
        fn sent(&mut self) -> Vec<Value> {
            std::iter::from_fn(|| self.s.poll_transmit())
                .map(|t| serde_json::from_str::<Value>(&t).unwrap())
                .filter(|v| v["type"] != "input_audio_buffer.append")
                .collect()
        }

        fn events(&mut self) -> Vec<RealtimeEvent> {
            std::iter::from_fn(|| self.s.poll_event()).collect()
        }

        fn recv(&mut self, event: Value) -> Received {
            self.s.handle_text(&event.to_string())
        }
    }

    fn delta(response: &str, item: &str, bytes: &[u8]) -> Value {
        json!({
            "type": "response.output_audio.delta",
            "event_id": "event_1",
            "response_id": response,
            "item_id": item,
            "output_index": 0,
            "content_index": 0,
            "delta": BASE64.encode(bytes),
        })
    }

    fn audio_done(response: &str, item: &str) -> Value {
        json!({"type": "response.output_audio.done", "event_id": "event_2",
               "response_id": response, "item_id": item, "output_index": 0, "content_index": 0})
    }

    fn agent_said(response: &str, item: &str, text: &str) -> Value {
        json!({"type": "response.output_audio_transcript.done", "event_id": "event_3",
               "response_id": response, "item_id": item, "output_index": 0, "content_index": 0,
               "transcript": text})
    }

    fn speech_started(item: &str, audio_start_ms: u64) -> Value {
        json!({"type": "input_audio_buffer.speech_started", "event_id": "event_4",
               "audio_start_ms": audio_start_ms, "item_id": item})
    }

    fn speech_stopped(item: &str, audio_end_ms: u64) -> Value {
        json!({"type": "input_audio_buffer.speech_stopped", "event_id": "event_5",
               "audio_end_ms": audio_end_ms, "item_id": item})
    }

    fn caller_said(item: &str, text: &str) -> Value {
        json!({"type": "conversation.item.input_audio_transcription.completed",
               "event_id": "event_6", "item_id": item, "content_index": 0, "transcript": text,
               "usage": {"type": "duration", "seconds": 2}})
    }

    fn response_created(id: &str) -> Value {
        json!({"type": "response.created", "event_id": "event_7",
               "response": {"id": id, "object": "realtime.response", "status": "in_progress",
                            "output": []}})
    }

    fn response_done(id: &str, status: &str) -> Value {
        json!({"type": "response.done", "event_id": "event_8",
               "response": {"id": id, "object": "realtime.response", "status": status,
                            "output": [], "usage": {"total_tokens": 10}}})
    }

    fn function_call(call_id: &str, name: &str, arguments: &str) -> Value {
        json!({"type": "response.output_item.done", "event_id": "event_9",
               "response_id": "resp_f", "output_index": 1,
               "item": {"id": "item_f", "object": "realtime.item", "type": "function_call",
                        "status": "completed", "name": name, "call_id": call_id,
                        "arguments": arguments}})
    }

    #[test]
    fn the_transfer_function_is_offered_only_when_configured() {
        let mut plain = RealtimeSession::new(RealtimeConfig::default(), 8000);
        let update: Value = serde_json::from_str(&plain.poll_transmit().unwrap()).unwrap();
        assert!(update["session"].get("tools").is_none());
        assert!(update["session"].get("tool_choice").is_none());
        let mut offered = RealtimeSession::new(
            RealtimeConfig {
                transfer_function: true,
                ..RealtimeConfig::default()
            },
            8000,
        );
        let update: Value = serde_json::from_str(&offered.poll_transmit().unwrap()).unwrap();
        let tools = update["session"]["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0]["type"], "function");
        assert_eq!(tools[0]["name"], TRANSFER_FUNCTION);
        assert_eq!(tools[0]["parameters"]["type"], "object");
        assert_eq!(
            tools[0]["parameters"]["properties"]["reason"]["type"],
            "string"
        );
        assert_eq!(update["session"]["tool_choice"], "auto");
    }

    #[test]
    fn a_transfer_call_becomes_an_event_and_its_result_a_function_output() {
        let mut call = Call::with(RealtimeConfig {
            transfer_function: true,
            ..RealtimeConfig::default()
        });
        call.recv(response_created("resp_f"));
        let got = call.recv(function_call(
            "call_7",
            TRANSFER_FUNCTION,
            r#"{"reason":"wants a person"}"#,
        ));
        assert_eq!(got, Received::Handled);
        assert_eq!(
            call.events(),
            [RealtimeEvent::TransferRequested {
                call_id: "call_7".into(),
                reason: "wants a person".into(),
            }]
        );
        assert_eq!(call.s.stats().function_calls, 1);
        // The transfer failed: the model hears why, and answers once its response is done.
        call.s
            .function_result("call_7", r#"{"status":"failed","reason":"busy"}"#);
        let sent = call.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["type"], "conversation.item.create");
        assert_eq!(
            sent[0]["item"],
            json!({"type": "function_call_output", "call_id": "call_7",
                   "output": r#"{"status":"failed","reason":"busy"}"#})
        );
        call.recv(response_done("resp_f", "completed"));
        let sent = call.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["type"], "response.create");
    }

    #[test]
    fn arguments_the_model_got_wrong_still_transfer() {
        let mut call = Call::with(RealtimeConfig {
            transfer_function: true,
            ..RealtimeConfig::default()
        });
        let long = "x".repeat(4 * MAX_REASON);
        for arguments in ["not json", "{}", r#"{"reason": 7}"#, ""] {
            call.recv(function_call("c", TRANSFER_FUNCTION, arguments));
        }
        call.recv(function_call(
            "c",
            TRANSFER_FUNCTION,
            &json!({ "reason": long }).to_string(),
        ));
        let reasons: Vec<usize> = call
            .events()
            .into_iter()
            .map(|e| match e {
                RealtimeEvent::TransferRequested { reason, .. } => reason.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons, [0, 0, 0, 0, MAX_REASON]);
    }

    #[test]
    fn functions_never_offered_are_answered_as_unknown() {
        // Without the transfer function configured, even its name is unknown.
        let mut call = Call::new();
        call.recv(function_call("c1", TRANSFER_FUNCTION, "{}"));
        call.recv(function_call("c2", "delete_everything", "{}"));
        assert!(call.events().is_empty());
        assert_eq!(call.s.stats().unknown_functions, 2);
        let sent = call.sent();
        let outputs: Vec<&Value> = sent
            .iter()
            .filter(|v| v["type"] == "conversation.item.create")
            .collect();
        assert_eq!(outputs.len(), 2);
        assert_eq!(outputs[0]["item"]["call_id"], "c1");
        assert_eq!(
            outputs[1]["item"]["output"],
            r#"{"error":"unknown function"}"#
        );
        assert_eq!(
            sent.iter()
                .filter(|v| v["type"] == "response.create")
                .count(),
            2
        );
        // Items that are not function calls are taken; broken ones are counted.
        let message = json!({"type": "response.output_item.done", "event_id": "e",
                             "item": {"type": "message", "role": "assistant"}});
        assert_eq!(call.recv(message), Received::Handled);
        let malformed = call.s.stats().malformed;
        for broken in [
            json!({"type": "response.output_item.done"}),
            json!({"type": "response.output_item.done", "item": {"type": "function_call"}}),
            function_call("", TRANSFER_FUNCTION, "{}"),
            function_call(&"c".repeat(MAX_CALL_ID + 1), TRANSFER_FUNCTION, "{}"),
        ] {
            assert_eq!(call.recv(broken), Received::Ignored);
        }
        assert_eq!(call.s.stats().malformed, malformed + 4);
        assert!(call.events().is_empty());
    }

    #[test]
    fn session_update_is_the_ga_shape_field_by_field() {
        let mut s = RealtimeSession::new(
            RealtimeConfig {
                model: "gpt-realtime".into(),
                voice: "cedar".into(),
                instructions: "You answer the phone for a bakery.".into(),
                vad_threshold: 0.55,
                prefix_padding_ms: 250,
                silence_duration_ms: 650,
                transcription_model: "gpt-4o-transcribe".into(),
                transfer_function: false,
            },
            8000,
        );
        assert_eq!(s.pending(), 1);
        let update: Value = serde_json::from_str(&s.poll_transmit().unwrap()).unwrap();
        assert_eq!(update["type"], "session.update");
        let session = &update["session"];
        assert_eq!(session["type"], "realtime");
        assert_eq!(session["model"], "gpt-realtime");
        assert_eq!(session["output_modalities"], json!(["audio"]));
        assert_eq!(
            session["instructions"],
            "You answer the phone for a bakery."
        );
        let input = &session["audio"]["input"];
        assert_eq!(input["format"], json!({"type": "audio/pcmu"}));
        assert_eq!(
            input["transcription"],
            json!({"model": "gpt-4o-transcribe"})
        );
        let vad = &input["turn_detection"];
        assert_eq!(vad["type"], "server_vad");
        assert_eq!(vad["threshold"].as_f64().unwrap(), 0.55);
        assert_eq!(vad["prefix_padding_ms"], 250);
        assert_eq!(vad["silence_duration_ms"], 650);
        assert_eq!(vad["create_response"], true);
        assert_eq!(vad["interrupt_response"], true);
        let output = &session["audio"]["output"];
        assert_eq!(output["format"], json!({"type": "audio/pcmu"}));
        assert_eq!(output["voice"], "cedar");
        // Nothing of the beta shape, and nothing else.
        let keys: Vec<&str> = session
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "audio",
                "instructions",
                "model",
                "output_modalities",
                "type"
            ]
        );
        assert_eq!(input.as_object().unwrap().len(), 3);
        assert_eq!(output.as_object().unwrap().len(), 2);
        assert_eq!(vad.as_object().unwrap().len(), 6);
    }

    #[test]
    fn defaults_are_gpt_realtime_marin_and_documented_vad() {
        let c = RealtimeConfig::default();
        assert_eq!(c.model, "gpt-realtime");
        assert_eq!(c.voice, "marin");
        assert_eq!(
            (c.vad_threshold, c.prefix_padding_ms, c.silence_duration_ms),
            (0.5, 300, 500)
        );
        assert_eq!(c.transcription_model, "gpt-4o-transcribe");
        assert_eq!(
            ws_url(&c.model),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        // Empty instructions and transcription model leave their fields out.
        let mut s = RealtimeSession::new(
            RealtimeConfig {
                transcription_model: String::new(),
                ..c
            },
            8000,
        );
        let update: Value = serde_json::from_str(&s.poll_transmit().unwrap()).unwrap();
        assert!(update["session"].get("instructions").is_none());
        assert!(
            update["session"]["audio"]["input"]
                .get("transcription")
                .is_none()
        );
        assert_eq!(update["session"]["audio"]["output"]["voice"], "marin");
    }

    #[test]
    fn caller_audio_is_appended_as_base64_20_ms_a_message() {
        let mut s = RealtimeSession::new(RealtimeConfig::default(), 8000);
        s.poll_transmit();
        s.caller_audio(20, &[0x7f; FRAME_BYTES]);
        s.caller_audio(40, &[0x00; FRAME_BYTES]);
        let msgs: Vec<Value> = std::iter::from_fn(|| s.poll_transmit())
            .map(|t| serde_json::from_str(&t).unwrap())
            .collect();
        assert_eq!(msgs.len(), 2);
        for (msg, byte) in msgs.iter().zip([0x7f, 0x00]) {
            assert_eq!(msg.as_object().unwrap().len(), 2, "{msg}");
            assert_eq!(msg["type"], "input_audio_buffer.append");
            let audio = BASE64.decode(msg["audio"].as_str().unwrap()).unwrap();
            assert_eq!(audio, vec![byte; FRAME_BYTES]);
        }
        assert_eq!(s.stats().sent, 3);
    }

    #[test]
    fn deltas_are_queued_and_played_160_bytes_a_frame() {
        let mut c = Call::new();
        assert_eq!(
            c.recv(delta("resp_1", "item_A", &[1; 200])),
            Received::Audio
        );
        // The beta name is taken too.
        let mut beta = delta("resp_1", "item_A", &[2; 50]);
        beta["type"] = json!("response.audio.delta");
        assert_eq!(c.recv(beta), Received::Audio);
        assert_eq!(c.s.queued_bytes(), 250);
        assert!(c.s.has_audio());
        let mut out = [0u8; FRAME_BYTES];
        assert_eq!(c.s.next_frame(&mut out), Fill::Full);
        assert_eq!(out, [1; FRAME_BYTES]);
        assert_eq!(c.s.next_frame(&mut out), Fill::Partial);
        assert_eq!((out[39], out[40], out[89], out[90]), (1, 2, 2, SILENCE));
        assert_eq!(c.s.next_frame(&mut out), Fill::Empty);
        assert_eq!(out, [SILENCE; FRAME_BYTES]);
        let st = c.s.stats();
        assert_eq!((st.audio_deltas, st.audio_bytes, st.underruns), (2, 250, 1));
        assert!(c.sent().is_empty(), "playing sends nothing");
    }

    #[test]
    fn barge_in_truncates_at_exactly_the_ms_played() {
        let mut c = Call::new();
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 8000]));
        c.ticks(37);
        assert_eq!(c.s.queued_bytes(), 8000 - 37 * FRAME_BYTES);
        assert_eq!(c.recv(speech_started("item_U", 700)), Received::Clear);
        assert_eq!(
            c.sent(),
            [
                json!({"type": "conversation.item.truncate", "item_id": "item_A",
                    "content_index": 0, "audio_end_ms": 740})
            ]
        );
        assert_eq!(c.s.queued_bytes(), 0);
        assert_eq!(c.tick(), Fill::Empty, "dropped at once");
        assert_eq!(
            c.events(),
            [RealtimeEvent::BargeIn {
                item_id: Some("item_A".into()),
                played_ms: 740,
                dropped_bytes: 8000 - 37 * 160,
            }]
        );
        let st = c.s.stats();
        assert_eq!((st.barge_ins, st.truncations), (1, 1));
        assert_eq!(st.barge_in_bytes, 8000 - 37 * 160);
        // The server confirms; nothing is out of order.
        let confirmed = json!({"type": "conversation.item.truncated", "event_id": "e",
                               "item_id": "item_A", "content_index": 0, "audio_end_ms": 740});
        assert_eq!(c.recv(confirmed), Received::Handled);
        assert_eq!(c.s.stats().out_of_order, 0);
    }

    #[test]
    fn an_item_is_truncated_once_and_interrupted_deltas_never_play() {
        let mut c = Call::new();
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 1600]));
        c.ticks(5);
        assert_eq!(c.recv(speech_started("item_U", 0)), Received::Clear);
        assert_eq!(c.sent().len(), 1);
        c.events();
        // Speech again, and the same turn reported twice: nothing more to truncate.
        assert_eq!(c.recv(speech_started("item_U2", 0)), Received::Handled);
        assert_eq!(c.recv(speech_started("item_U2", 0)), Received::Handled);
        assert!(c.sent().is_empty());
        assert!(c.events().is_empty());
        // Late audio of the truncated item, and of another item of its response.
        assert_eq!(
            c.recv(delta("resp_1", "item_A", &[1; 800])),
            Received::Ignored
        );
        assert_eq!(
            c.recv(delta("resp_1", "item_B", &[1; 800])),
            Received::Ignored
        );
        assert_eq!(c.s.queued_bytes(), 0);
        assert_eq!(c.tick(), Fill::Empty);
        let st = c.s.stats().clone();
        assert_eq!((st.stale_deltas, st.truncations, st.barge_ins), (2, 1, 1));
        assert_eq!(st.out_of_order, 1, "the repeated turn");
        // The next answer plays.
        c.recv(response_created("resp_2"));
        assert_eq!(
            c.recv(delta("resp_2", "item_C", &[3; 160])),
            Received::Audio
        );
        assert_eq!(c.tick(), Fill::Full);
    }

    #[test]
    fn barge_in_truncates_every_item_not_wholly_played() {
        let mut c = Call::new();
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 400]));
        c.recv(audio_done("resp_1", "item_A"));
        c.recv(delta("resp_1", "item_B", &[2; 400]));
        c.recv(delta("resp_1", "item_C", &[3; 400]));
        // 480 bytes: all of A, 80 of B.
        c.ticks(3);
        assert_eq!(c.recv(speech_started("item_U", 0)), Received::Clear);
        let truncated: Vec<(Value, Value)> = c
            .sent()
            .iter()
            .map(|m| (m["item_id"].clone(), m["audio_end_ms"].clone()))
            .collect();
        assert_eq!(
            truncated,
            [(json!("item_B"), json!(10)), (json!("item_C"), json!(0))]
        );
        assert_eq!(
            c.events(),
            [RealtimeEvent::BargeIn {
                item_id: Some("item_B".into()),
                played_ms: 10,
                dropped_bytes: 720,
            }]
        );
    }

    #[test]
    fn speech_with_nothing_playing_is_only_a_turn() {
        let mut c = Call::new();
        assert_eq!(c.recv(speech_started("item_U", 100)), Received::Handled);
        assert!(c.sent().is_empty());
        assert!(c.events().is_empty());
        // An answer played out before the caller spoke is not truncated either.
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 320]));
        c.recv(audio_done("resp_1", "item_A"));
        c.recv(response_done("resp_1", "completed"));
        c.ticks(3);
        assert_eq!(c.recv(speech_started("item_U2", 900)), Received::Handled);
        assert!(c.sent().is_empty());
        assert_eq!(c.s.stats().barge_ins, 0);
    }

    #[test]
    fn agent_transcript_is_timed_by_its_playback() {
        let mut c = Call::new();
        c.ticks(50); // t = 1000
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 100]));
        c.recv(audio_done("resp_1", "item_A"));
        c.recv(delta("resp_1", "item_B", &[2; 300]));
        assert_eq!(
            c.recv(agent_said("resp_1", "item_B", "Hello there.")),
            Received::Handled
        );
        c.recv(agent_said("resp_1", "item_A", "Hi."));
        c.recv(response_done("resp_1", "completed"));
        assert_eq!(
            c.events(),
            [RealtimeEvent::ResponseDone {
                response_id: "resp_1".into(),
                status: "completed".into(),
            }],
            "transcripts wait for their audio to play"
        );
        c.tick(); // [1000, 1020): A's 100 bytes, then 60 of B
        assert_eq!(
            c.events(),
            [RealtimeEvent::Transcript(Transcript {
                speaker: Speaker::Agent,
                item_id: "item_A".into(),
                text: "Hi.".into(),
                start_ms: Some(1000),
                end_ms: Some(1012),
                interrupted: false,
            })]
        );
        c.ticks(2); // 160 more of B, then its last 80
        assert_eq!(
            c.events(),
            [RealtimeEvent::Transcript(Transcript {
                speaker: Speaker::Agent,
                item_id: "item_B".into(),
                text: "Hello there.".into(),
                start_ms: Some(1012),
                end_ms: Some(1050),
                interrupted: false,
            })]
        );
        assert_eq!(c.s.stats().transcripts, 2);
        // Said once: a repeated transcript is out of order.
        assert_eq!(
            c.recv(agent_said("resp_1", "item_B", "Hello there.")),
            Received::Ignored
        );
        assert!(c.events().is_empty());
    }

    #[test]
    fn frames_played_before_the_caller_audio_starts_do_not_shift_the_clock() {
        let mut s = RealtimeSession::new(RealtimeConfig::default(), 8000);
        let mut out = [0u8; FRAME_BYTES];
        // 25 ticks while the WebSocket opens: silence, and no caller audio yet.
        for _ in 0..25 {
            s.next_frame(&mut out);
        }
        s.caller_audio(20, &[0x7f; FRAME_BYTES]);
        s.handle_text(&delta("resp_1", "item_A", &[1; 160]).to_string());
        s.handle_text(&audio_done("resp_1", "item_A").to_string());
        s.handle_text(&agent_said("resp_1", "item_A", "Hello.").to_string());
        s.next_frame(&mut out);
        let Some(RealtimeEvent::Transcript(t)) = s.poll_event() else {
            panic!("no transcript");
        };
        assert_eq!((t.start_ms, t.end_ms), (Some(20), Some(40)));
    }

    #[test]
    fn interrupted_agent_transcript_says_how_far_it_was_heard() {
        let mut c = Call::new();
        c.ticks(10); // t = 200
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 8000]));
        c.recv(agent_said(
            "resp_1",
            "item_A",
            "Our opening hours are nine to five.",
        ));
        c.ticks(37);
        c.recv(speech_started("item_U", 900));
        let events = c.events();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[1],
            RealtimeEvent::Transcript(Transcript {
                speaker: Speaker::Agent,
                item_id: "item_A".into(),
                text: "Our opening hours are nine to five.".into(),
                start_ms: Some(200),
                end_ms: Some(940),
                interrupted: true,
            })
        );
        // A transcript of an item cut off before any of it played has no times.
        c.recv(response_created("resp_2"));
        c.recv(delta("resp_2", "item_B", &[1; 800]));
        c.recv(speech_started("item_U2", 2000));
        c.events();
        c.recv(agent_said("resp_2", "item_B", "As I was"));
        assert_eq!(
            c.events(),
            [RealtimeEvent::Transcript(Transcript {
                speaker: Speaker::Agent,
                item_id: "item_B".into(),
                text: "As I was".into(),
                start_ms: None,
                end_ms: None,
                interrupted: true,
            })]
        );
    }

    #[test]
    fn caller_transcript_takes_its_times_from_server_vad() {
        let mut c = Call::new();
        // The agent connected 1 s into the call: the first appended audio is call time 1000.
        c.t = 1000;
        c.ticks(100); // audio 0..2000 ms = call 1000..3000
        assert_eq!(c.recv(speech_started("item_U", 500)), Received::Handled);
        assert_eq!(c.recv(speech_stopped("item_U", 1500)), Received::Handled);
        assert!(c.events().is_empty());
        assert_eq!(
            c.recv(caller_said("item_U", "Are you open on Sunday?")),
            Received::Handled
        );
        assert_eq!(
            c.events(),
            [RealtimeEvent::Transcript(Transcript {
                speaker: Speaker::Caller,
                item_id: "item_U".into(),
                text: "Are you open on Sunday?".into(),
                start_ms: Some(1500),
                end_ms: Some(2500),
                interrupted: false,
            })]
        );
        // A gap in the caller's audio (nothing appended for 1 s) does not shift later times.
        c.t += 1000; // audio 2000.. = call 4000..
        c.ticks(50);
        c.recv(speech_started("item_V", 2100));
        c.recv(speech_stopped("item_V", 2600));
        c.recv(caller_said("item_V", "Thanks."));
        let Some(RealtimeEvent::Transcript(t)) = c.s.poll_event() else {
            panic!("no transcript");
        };
        assert_eq!((t.start_ms, t.end_ms), (Some(4100), Some(4600)));
    }

    #[test]
    fn caller_transcript_without_its_turn_is_kept_and_counted() {
        let mut c = Call::new();
        c.ticks(5);
        assert_eq!(c.recv(speech_stopped("item_X", 100)), Received::Ignored);
        assert_eq!(c.recv(caller_said("item_X", "hello")), Received::Handled);
        assert_eq!(
            c.events(),
            [RealtimeEvent::Transcript(Transcript {
                speaker: Speaker::Caller,
                item_id: "item_X".into(),
                text: "hello".into(),
                start_ms: None,
                end_ms: None,
                interrupted: false,
            })]
        );
        assert_eq!(c.s.stats().out_of_order, 2);
        // A failed transcription forgets its turn.
        c.recv(speech_started("item_Y", 0));
        let failed = json!({"type": "conversation.item.input_audio_transcription.failed",
                            "event_id": "e", "item_id": "item_Y", "content_index": 0,
                            "error": {"type": "transcription_error", "code": "audio_unintelligible",
                                      "message": "The audio could not be transcribed.",
                                      "param": null}});
        assert_eq!(c.recv(failed), Received::Handled);
        assert_eq!(c.s.stats().transcription_failures, 1);
        assert!(c.events().is_empty());
    }

    #[test]
    fn dtmf_becomes_a_user_message_then_a_response() {
        let mut c = Call::new();
        c.ticks(5);
        c.s.dtmf('1');
        c.ticks(50); // 1 s: more may come
        c.s.dtmf('2');
        c.ticks(99);
        assert!(
            c.sent().is_empty(),
            "waits {DTMF_IDLE_MS} ms after the last key"
        );
        c.tick();
        assert_eq!(
            c.sent(),
            [
                json!({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "The caller pressed 12"}]}}),
                json!({"type": "response.create"}),
            ]
        );
        // `#` sends at once.
        c.s.dtmf('5');
        c.s.dtmf('#');
        let sent = c.sent();
        assert_eq!(
            sent[0]["item"]["content"][0]["text"],
            "The caller pressed 5#"
        );
        assert_eq!(sent[1]["type"], "response.create");
        // While the model answers, the response waits for it to finish.
        c.recv(response_created("resp_1"));
        c.s.dtmf('0');
        c.s.dtmf('x'); // not a key
        c.s.dtmf('#');
        let sent = c.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["type"], "conversation.item.create");
        assert_eq!(
            sent[0]["item"]["content"][0]["text"],
            "The caller pressed 0#"
        );
        c.recv(response_done("resp_1", "completed"));
        assert_eq!(c.sent(), [json!({"type": "response.create"})]);
        assert_eq!(c.s.stats().dtmf_messages, 3);
    }

    #[test]
    fn errors_and_rate_limits_become_events_without_keys() {
        let mut c = Call::new();
        let error = json!({"type": "error", "event_id": "e", "error": {
            "type": "invalid_request_error", "code": "invalid_api_key",
            "message": "Incorrect API key provided: sk-proj-abcdefghijklmnop1234. Your task-based key", 
            "param": null, "event_id": null}});
        assert_eq!(c.recv(error), Received::Handled);
        let limits = json!({"type": "rate_limits.updated", "event_id": "e", "rate_limits": [
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
            {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 0.5}]});
        assert_eq!(c.recv(limits), Received::Handled);
        let events = c.events();
        assert_eq!(
            events,
            [
                RealtimeEvent::ServiceError {
                    code: Some("invalid_api_key".into()),
                    message: "Incorrect API key provided: sk-[redacted]. Your task-based key"
                        .into(),
                },
                RealtimeEvent::RateLimits(vec![
                    RateLimit {
                        name: "requests".into(),
                        limit: Some(1000),
                        remaining: Some(999),
                        reset_seconds: Some(60.0),
                    },
                    RateLimit {
                        name: "tokens".into(),
                        limit: Some(50000),
                        remaining: Some(49950),
                        reset_seconds: Some(0.5),
                    },
                ])
            ]
        );
        assert_eq!(c.s.stats().service_errors, 1);
    }

    #[test]
    fn documented_events_are_taken_and_bad_input_is_counted() {
        let mut c = Call::new();
        for taken in [
            json!({"type": "session.created", "event_id": "e", "session": {"type": "realtime"}}),
            json!({"type": "session.updated", "event_id": "e", "session": {"type": "realtime"}}),
            json!({"type": "conversation.item.added", "event_id": "e", "item": {"id": "x"}}),
            json!({"type": "input_audio_buffer.committed", "event_id": "e", "item_id": "x",
                   "previous_item_id": null}),
            json!({"type": "response.output_audio_transcript.delta", "event_id": "e",
                   "item_id": "x", "delta": "Hel"}),
        ] {
            assert_eq!(c.recv(taken.clone()), Received::Handled, "{taken}");
        }
        let bad_delta = json!({"type": "response.output_audio.delta", "item_id": "i",
                               "delta": "!!!"});
        for bad in [
            "not json".to_owned(),
            "{}".to_owned(),
            r#"{"type":5}"#.to_owned(),
            r#"{"type":"response.output_audio.delta","delta":"AAAA"}"#.to_owned(),
            bad_delta.to_string(),
            r#"{"type":"response.output_audio.delta","item_id":"i","delta":""}"#.to_owned(),
            r#"{"type":"response.output_audio_transcript.done","item_id":"i","transcript":7}"#
                .to_owned(),
            r#"{"type":"input_audio_buffer.speech_started","item_id":"u","audio_start_ms":-5}"#
                .to_owned(),
            r#"{"type":"response.done","response":{}}"#.to_owned(),
            r#"{"type":"error"}"#.to_owned(),
            format!(
                r#"{{"type":"response.output_audio.delta","item_id":"i","delta":"{}"}}"#,
                "A".repeat(MAX_MESSAGE)
            ),
        ] {
            assert_eq!(c.s.handle_text(&bad), Received::Ignored, "{bad:.80}");
        }
        c.s.handle_binary();
        assert_eq!(c.recv(json!({"type": "response.dance"})), Received::Ignored);
        for out_of_order in [
            speech_stopped("nobody", 10),
            audio_done("resp_9", "item_9"),
            json!({"type": "conversation.item.truncated", "item_id": "item_9",
                   "content_index": 0, "audio_end_ms": 10}),
        ] {
            assert_eq!(c.recv(out_of_order), Received::Ignored);
        }
        let st = c.s.stats().clone();
        assert_eq!(
            (st.malformed, st.unknown_events, st.out_of_order),
            (12, 1, 3),
            "{st:?}"
        );
        assert_eq!(st.received, 5 + 11 + 1 + 1 + 3);
        assert!(c.sent().is_empty());
        assert!(c.events().is_empty());
        assert_eq!(c.tick(), Fill::Empty);
    }

    #[test]
    fn the_queue_is_bounded_and_the_excess_counted() {
        let mut s = RealtimeSession::new(RealtimeConfig::default(), 8000);
        let ten_s = vec![1u8; 80_000];
        for _ in 0..36 {
            assert_eq!(
                s.handle_text(&delta("resp_1", "item_A", &ten_s).to_string()),
                Received::Audio
            );
        }
        assert_eq!(s.queued_bytes(), 8000);
        assert_eq!(s.stats().overrun_bytes, 36 * 80_000 - 8000);
        assert_eq!(s.stats().audio_bytes, 8000);
        // Only what was queued counts as the item's: it is truncated at what was played.
        let mut out = [0u8; FRAME_BYTES];
        for _ in 0..50 {
            s.next_frame(&mut out);
        }
        assert_eq!(s.next_frame(&mut out), Fill::Empty);
        s.handle_text(&speech_started("item_U", 0).to_string());
        let truncate: Value = std::iter::from_fn(|| s.poll_transmit())
            .map(|t| serde_json::from_str::<Value>(&t).unwrap())
            .find(|m| m["type"] == "conversation.item.truncate")
            .unwrap();
        assert_eq!(truncate["audio_end_ms"], 1000);
        // An item none of whose audio found room is truncated at 0: the caller heard none.
        s.handle_text(&delta("resp_2", "item_B", &vec![1u8; 8000]).to_string());
        s.handle_text(&delta("resp_2", "item_C", &[1; 800]).to_string());
        s.handle_text(&speech_started("item_U2", 0).to_string());
        let ends: Vec<(Value, Value)> = std::iter::from_fn(|| s.poll_transmit())
            .map(|t| serde_json::from_str::<Value>(&t).unwrap())
            .filter(|m| m["type"] == "conversation.item.truncate")
            .map(|m| (m["item_id"].clone(), m["audio_end_ms"].clone()))
            .collect();
        assert_eq!(
            ends,
            [(json!("item_B"), json!(0)), (json!("item_C"), json!(0))]
        );
    }

    #[test]
    fn late_deltas_after_an_item_is_done_are_not_played() {
        let mut c = Call::new();
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 160]));
        c.recv(response_done("resp_1", "cancelled"));
        assert_eq!(
            c.events(),
            [RealtimeEvent::ResponseDone {
                response_id: "resp_1".into(),
                status: "cancelled".into(),
            }]
        );
        assert_eq!(
            c.recv(delta("resp_1", "item_A", &[1; 160])),
            Received::Ignored
        );
        assert_eq!(c.s.queued_bytes(), 160);
        assert_eq!(c.s.stats().stale_deltas, 1);
    }

    #[test]
    fn stop_ends_the_session() {
        let mut c = Call::new();
        c.recv(response_created("resp_1"));
        c.recv(delta("resp_1", "item_A", &[1; 1600]));
        c.recv(agent_said("resp_1", "item_A", "Goodbye then."));
        c.ticks(2);
        c.s.dtmf('7');
        c.s.stop();
        assert_eq!(
            c.events(),
            [RealtimeEvent::Transcript(Transcript {
                speaker: Speaker::Agent,
                item_id: "item_A".into(),
                text: "Goodbye then.".into(),
                start_ms: Some(0),
                end_ms: Some(40),
                interrupted: true,
            })]
        );
        assert!(!c.s.has_audio());
        let sent_before = c.s.stats().sent;
        c.s.caller_audio(1000, &[0x7f; FRAME_BYTES]);
        c.s.dtmf('1');
        c.s.stop();
        assert_eq!(
            c.recv(delta("resp_2", "item_B", &[1; 160])),
            Received::Ignored
        );
        assert_eq!(c.recv(caller_said("item_U", "wait")), Received::Ignored);
        let mut out = [0u8; FRAME_BYTES];
        assert_eq!(c.s.next_frame(&mut out), Fill::Empty);
        assert_eq!(c.s.stats().sent, sent_before);
        assert!(
            c.sent().is_empty(),
            "nothing more queued (the digit was dropped)"
        );
        assert!(c.events().is_empty());
    }

    #[test]
    fn unsend_puts_a_text_back_first() {
        let mut s = RealtimeSession::new(RealtimeConfig::default(), 8000);
        s.caller_audio(20, &[0x7f; FRAME_BYTES]);
        let first = s.poll_transmit().unwrap();
        assert!(first.contains("session.update"));
        s.unsend(first.clone());
        assert_eq!((s.pending(), s.stats().sent), (2, 1));
        assert_eq!(s.poll_transmit(), Some(first));
    }

    #[test]
    fn scrub_redacts_key_shaped_words_only() {
        assert_eq!(scrub("key sk-abc"), "key sk-abc");
        assert_eq!(scrub("sk-12345678"), "sk-[redacted]");
        assert_eq!(scrub("(sk-proj-AbC_123456789)."), "(sk-[redacted]).");
        assert_eq!(scrub("risk-assessment-model"), "risk-assessment-model");
        assert_eq!(scrub(&"é".repeat(2000)).len(), MAX_ERROR_TEXT);
    }
}
