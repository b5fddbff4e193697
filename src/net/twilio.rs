//! The Twilio driver: axum handlers for the voice webhook (`POST /twilio/voice`), the status
//! callback (`POST /twilio/status`) and the media stream (`GET /twilio/stream/{token}`, a
//! WebSocket),
//! and the per-stream task that moves messages between the WebSocket, the sans-IO
//! [`Stream`] and the call's [`Pipeline`] — the same pipeline SIP calls use.
//!
//! Every request must carry a valid `X-Twilio-Signature` (403 otherwise, and nothing is
//! created). The webhook answers `<Connect><Stream>` with a one-time token in the Stream URL's
//! path (and as a `<Parameter>`), or the fallback TwiML when the call cannot be taken (Twilio
//! disabled, shutting down, draining, at `[calls].max_concurrent`). The handshake watchdog
//! expires tokens whose stream did not start within `[twilio].handshake_timeout_secs`: those
//! calls are counted as fallen back, and the `<Connect action>` callback Twilio then makes
//! answers the fallback.
//!
//! Replays: Twilio signs the upgrade over the URL it connects to, token included, so a
//! captured upgrade is good for that one token: the upgrade redeems it (a used, expired or
//! unknown token gets 403 before any WebSocket exists), and the stream's `start` must name the
//! token's CallSid. A voice webhook for a CallSid the store already has a call for (a replay
//! after the token book forgot it) gets 409 and changes nothing; the store itself never
//! reopens an ended call.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::call::{
    self, CallEvent, CallId, CallInfo, CallSettings, CarrierStatus, Codec, DtmfSource, EndReason,
    Greeting, Leg, LegAudio, LegInput, LegStats, Services, Source, TransferFailure, TransferMethod,
    TransferStart, TransferTarget,
};
use crate::clock;
use crate::config::{self, Config};
use crate::media::frame::FRAME_SAMPLES;
use crate::media::jitter::JitterConfig;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::twilio::handshake::HandshakeStats;
use crate::twilio::protocol::{CallSid, Start};
use crate::twilio::signature::{self, SignatureError};
use crate::twilio::stream::{
    EndReason as StreamEnd, MAX_MESSAGE, Stream, StreamConfig, StreamEvent,
};
use crate::twilio::token::{CallState, Issue, Ticket, TokenBook};
use crate::twilio::{form, twiml};

/// Largest webhook body read; Twilio's are about 1 KiB.
const MAX_BODY: usize = 64 * 1024;
/// Largest WebSocket message or frame read; beyond it the stream is closed (1009). Messages
/// between [`MAX_MESSAGE`] and this are read, counted and dropped, and the stream stays up.
const MAX_WS_MESSAGE: usize = 4 * MAX_MESSAGE;
/// The WebSocket read buffer: Twilio's messages are about 300 bytes (the 128 KiB default
/// would be most of a stream's memory); larger ones still grow it.
const READ_BUFFER: usize = 8 * 1024;
/// How long a CallSid's token is remembered after use, for idempotent retries and callbacks.
const REMEMBER: Duration = Duration::from_secs(600);
/// Calls remembered at most (bounds the token book).
const MAX_REMEMBERED: usize = 10_000;
/// How often the handshake watchdog looks for expired tokens.
const WATCHDOG_PERIOD: Duration = Duration::from_millis(100);
/// Messages read in a row before the next outbound frame gets its turn.
const MAX_BATCH: usize = 64;
/// How long we wait for the peer's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// The stream's jitter buffer: TCP delivers everything, late and in bursts rather than lost (a
/// retransmission holds up everything behind it for a round trip or more), so playout keeps a
/// 200 ms floor and rarely has to stretch or drop audio; the recording stays sample-exact.
const JITTER: JitterConfig = JitterConfig {
    min_delay_ms: 200,
    max_delay_ms: 600,
    max_packets: 64,
    initial_delay_ms: 200,
    coverage_permille: 990,
};

/// `[twilio]` and the limits of `[calls]` and `[rtp]` that Twilio calls obey.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    pub enabled: bool,
    /// `None` only when disabled: such a box answers every webhook with the fallback.
    pub auth_token: Option<String>,
    /// The public base URL (`https://box.example.com`), no trailing `/`.
    pub public_url: String,
    /// The Stream URL in our TwiML without its token: `{stream_url}/{token}` is the URL the
    /// upgrade's signature covers.
    pub stream_url: String,
    pub handshake_timeout: Duration,
    /// `[rtp].silence_timeout_secs`: a stream without media this long is ended.
    pub silence_timeout: Option<Duration>,
    /// `[calls].max_duration_secs`.
    pub max_duration: Option<Duration>,
    /// `[calls].max_concurrent`, shared with SIP calls.
    pub max_concurrent: usize,
    pub fallback: config::Fallback,
    pub fallback_say: Option<String>,
    pub fallback_number: Option<String>,
}

impl TwilioSettings {
    pub fn from_config(config: &Config) -> Self {
        let t = &config.twilio;
        let public_url = t.public_url.clone().unwrap_or_default();
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Self {
            enabled: t.enabled && t.auth_token.is_some() && t.public_url.is_some(),
            auth_token: t.auth_token.as_ref().map(|s| s.expose().to_owned()),
            stream_url: stream_url(&public_url),
            public_url,
            handshake_timeout: Duration::from_secs(t.handshake_timeout_secs.max(1)),
            silence_timeout: secs(config.rtp.silence_timeout_secs),
            max_duration: secs(config.calls.max_duration_secs),
            max_concurrent: config.calls.max_concurrent,
            fallback: t.fallback,
            fallback_say: t.fallback_say.clone(),
            fallback_number: t.fallback_number.clone(),
        }
    }
}

/// `https://host/prefix` → `wss://host/prefix/twilio/stream` (`http` → `ws`).
fn stream_url(public_url: &str) -> String {
    let rest = public_url
        .strip_prefix("https://")
        .map(|r| ("wss://", r))
        .or_else(|| public_url.strip_prefix("http://").map(|r| ("ws://", r)));
    match rest {
        Some((scheme, rest)) => format!("{scheme}{rest}/twilio/stream"),
        None => format!("{public_url}/twilio/stream"),
    }
}

/// What the Twilio handlers and stream tasks share.
#[derive(Debug, Clone)]
pub struct TwilioState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    settings: TwilioSettings,
    /// Replaced on reload (greeting, listen default); cloned out for each new call, so the lock
    /// is held only for that clone or the swap.
    services: RwLock<Services>,
    /// Webhook tokens. Locked by the webhook, the stream start and the watchdog, each for a
    /// few map operations, never across an `.await`.
    tokens: Mutex<TokenBook>,
    /// Handshake times, for the log's quantiles (the metrics keep the histogram). Same rule.
    handshakes: Mutex<HandshakeStats>,
    metrics: Arc<Metrics>,
    /// The call history, where status callbacks find calls that are no longer live.
    store: Store,
    shutdown: CancellationToken,
    /// While draining, new calls get the fallback TwiML (streams in progress go on).
    drain: crate::call::Drain,
    /// Open stream tasks, so shutdown can wait for their close frames and recordings.
    streams: AtomicUsize,
    idle: Notify,
}

impl TwilioState {
    /// The shared state; [`TwilioState::start`] runs the handshake watchdog.
    pub fn new(
        settings: TwilioSettings,
        services: Services,
        metrics: Arc<Metrics>,
        store: Store,
        shutdown: CancellationToken,
        drain: crate::call::Drain,
    ) -> Self {
        let tokens = TokenBook::new(settings.handshake_timeout, REMEMBER, MAX_REMEMBERED);
        Self(Arc::new(Shared {
            settings,
            services: RwLock::new(services),
            tokens: Mutex::new(tokens),
            handshakes: Mutex::new(HandshakeStats::default()),
            metrics,
            store,
            shutdown,
            drain,
            streams: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
    }

    /// Spawns the handshake watchdog (until shutdown). Call once, inside the runtime.
    pub fn start(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCHDOG_PERIOD);
            loop {
                tokio::select! {
                    _ = tick.tick() => state.expire_handshakes(clock::now()),
                    _ = state.0.shutdown.cancelled() => break,
                }
            }
            let h = state.lock_handshakes().clone();
            tracing::info!(
                started = h.started,
                fell_back = h.fell_back,
                p50_ms = h.quantile(0.5).map_or(0, |d| d.as_millis() as u64),
                p95_ms = h.quantile(0.95).map_or(0, |d| d.as_millis() as u64),
                "twilio handshakes"
            );
        });
    }

    /// New calls use this greeting and speaker default (SIGHUP).
    pub fn reload(&self, greeting: Greeting, listen_default: bool) {
        let mut services = self.0.services.write().unwrap_or_else(|p| p.into_inner());
        services.greeting = greeting;
        services.listen_default = listen_default;
    }

    /// Waits until every stream task has closed its WebSocket and finished its call, or
    /// `limit` passed. For shutdown, after the token is cancelled.
    pub async fn drain(&self, limit: Duration) {
        let wait = async {
            loop {
                let idle = self.0.idle.notified();
                if self.0.streams.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Handshake times so far: (started, fell back, p50, p95).
    pub fn handshake_stats(&self) -> HandshakeStats {
        self.lock_handshakes().clone()
    }

    fn expire_handshakes(&self, now: Instant) {
        let expired = self.lock_tokens().handle_timeout(now);
        for ticket in expired {
            self.fell_back("handshake timeout", Some(&ticket.call_sid));
        }
    }

    fn fell_back(&self, why: &'static str, call_sid: Option<&CallSid>) {
        self.0.metrics.twilio_fallback();
        self.lock_handshakes().record_fallback();
        tracing::info!(
            call_sid = call_sid.map(CallSid::as_str),
            why,
            "twilio call answered with the fallback"
        );
    }

    /// The stored call of `call_sid`, if it ever started. `Err` when the store cannot tell
    /// (logged).
    async fn stored(&self, call_sid: &CallSid) -> Result<Option<CallId>, ()> {
        let store = self.0.store.clone();
        let sid = call_sid.clone();
        let found =
            tokio::task::spawn_blocking(move || store.find_external(Source::Twilio, sid.as_str()))
                .await;
        match found {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(err)) => {
                tracing::error!(%err, %call_sid, "twilio: store lookup failed");
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, TokenBook> {
        // Every change to the book is a single map operation: a poisoned lock is still whole.
        self.0.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_handshakes(&self) -> std::sync::MutexGuard<'_, HandshakeStats> {
        self.0.handshakes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn services(&self) -> Services {
        self.0
            .services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fallback_twiml(&self) -> String {
        let s = &self.0.settings;
        let say = s.fallback_say.as_deref();
        let fallback = match (s.fallback, s.fallback_number.as_deref()) {
            (config::Fallback::Dial, Some(number)) => twiml::Fallback::Dial { say, number },
            _ => twiml::Fallback::Reject { say },
        };
        twiml::fallback(fallback)
    }

    /// Checks a request's signature against the public URL it was sent to.
    fn verify(
        &self,
        uri: &Uri,
        base: &str,
        headers: &HeaderMap,
        params: &[(String, String)],
    ) -> Result<(), SignatureError> {
        let Some(token) = self.0.settings.auth_token.as_deref() else {
            return Err(SignatureError::Mismatch);
        };
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let url = format!("{base}{query}");
        let given = headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok());
        signature::check_form(token, &url, params, given)
    }

    /// Takes a stream whose `start` arrived on an upgrade that redeemed `ticket`'s token: it
    /// must be for the same call (and name the same token, if it names one).
    fn admit(
        &self,
        now: Instant,
        start: &Start,
        token: &str,
        ticket: &Ticket,
    ) -> Result<(), Refusal> {
        if start.parameters.get("token").is_some_and(|t| t != token) {
            return Err(Refusal::OtherToken);
        }
        if ticket.call_sid != start.call_sid {
            return Err(Refusal::OtherCall);
        }
        let took = now.saturating_duration_since(ticket.webhook_at);
        self.0.metrics.twilio_handshake(took.as_secs_f64());
        self.lock_handshakes().record_start(took);
        Ok(())
    }
}

/// Why a stream's `start` was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("start names another token than the upgrade's")]
    OtherToken,
    #[error("stream token belongs to another call")]
    OtherCall,
}

/// The Twilio routes, ready to merge into the API router.
pub fn twilio_routes(state: TwilioState) -> Router {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/status", post(status))
        .route("/twilio/stream/{token}", get(stream))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

fn forbidden(what: &'static str, err: SignatureError) -> Response {
    tracing::warn!(%err, what, "twilio request refused: bad signature");
    StatusCode::FORBIDDEN.into_response()
}

/// `POST /twilio/voice`: a call arrived (or, with `?fallback=1`, its stream ended).
async fn voice(
    State(state): State<TwilioState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = clock::now();
    let Ok(params) = form::parse(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let settings = &state.0.settings;
    if settings.auth_token.is_none() {
        // Twilio is off and no token is configured: nothing to verify, nothing to create.
        state.fell_back("twilio disabled", None);
        return xml(state.fallback_twiml());
    }
    let base = format!("{}/twilio/voice", settings.public_url);
    if let Err(err) = state.verify(&uri, &base, &headers, &params) {
        return forbidden("voice webhook", err);
    }
    let Some(call_sid) = form::get(&params, "CallSid").and_then(CallSid::parse) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let action = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "fallback=1"));
    if action {
        return action_callback(&state, now, &call_sid);
    }
    if !settings.enabled {
        state.fell_back("twilio disabled", Some(&call_sid));
        return xml(state.fallback_twiml());
    }
    if state.0.shutdown.is_cancelled() {
        state.fell_back("shutting down", Some(&call_sid));
        return xml(state.fallback_twiml());
    }
    // A call already streaming here (a retried webhook) keeps its token.
    if state.0.drain.is_draining() && state.lock_tokens().state(&call_sid).is_none() {
        state.fell_back("draining", Some(&call_sid));
        return xml(state.fallback_twiml());
    }
    let remembered = state.lock_tokens().state(&call_sid).is_some();
    if !remembered {
        match state.stored(&call_sid).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                state.0.metrics.calls_replayed.fetch_add(1, Relaxed);
                tracing::warn!(%call_sid, "twilio webhook refused: this CallSid already had its call (replay)");
                return StatusCode::CONFLICT.into_response();
            }
            Err(()) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    let live = state.services().registry.len();
    let issue = {
        let mut tokens = state.lock_tokens();
        let known = tokens.state(&call_sid).is_some();
        if !known && live + tokens.pending() >= settings.max_concurrent {
            None
        } else {
            let ticket = Ticket {
                call_sid: call_sid.clone(),
                from: form::get(&params, "From").unwrap_or_default().to_owned(),
                to: form::get(&params, "To").unwrap_or_default().to_owned(),
                webhook_at: now,
            };
            Some(tokens.issue(now, rand::random(), ticket))
        }
    };
    let token = match issue {
        None => {
            state.fell_back("at max_concurrent", Some(&call_sid));
            return xml(state.fallback_twiml());
        }
        Some(Issue::Full) => {
            state.fell_back("too many calls remembered", Some(&call_sid));
            return xml(state.fallback_twiml());
        }
        Some(Issue::FellBack) => return xml(state.fallback_twiml()),
        Some(Issue::New(token)) => {
            tracing::debug!(%call_sid, "twilio webhook: stream token issued");
            token
        }
        Some(Issue::Again(token)) => {
            tracing::debug!(%call_sid, "twilio webhook retried: same token");
            token
        }
    };
    let action_url = format!("{}/twilio/voice?fallback=1", settings.public_url);
    xml(twiml::connect_stream(
        &action_url,
        &format!("{}/{}", settings.stream_url, token.as_str()),
        &[("token", token.as_str())],
    ))
}

/// The `<Connect action>` callback: the stream is over. A call whose stream ran hangs up, or
/// is dialled to where it was transferred; one whose stream never started gets the fallback
/// (counted once).
fn action_callback(state: &TwilioState, now: Instant, call_sid: &CallSid) -> Response {
    let (streamed, transfer) = {
        let tokens = state.lock_tokens();
        let streamed = tokens.state(call_sid) == Some(CallState::Streaming);
        (streamed, tokens.transfer_of(call_sid).map(twiml::dial))
    };
    if streamed {
        if transfer.is_some() {
            tracing::debug!(%call_sid, "twilio action: dialling the transfer destination");
        }
        return xml(transfer.unwrap_or_else(twiml::hangup));
    }
    if state.lock_tokens().fall_back(now, call_sid).is_some() {
        state.fell_back("stream did not connect", Some(call_sid));
    }
    xml(state.fallback_twiml())
}

/// `POST /twilio/status`: Twilio reports the call's status. It is stored on the call's record
/// (and its timeline) whether the call is live or over, once per stage: retried or crossed
/// callbacks change nothing. A final status also ends the live call of that CallSid.
/// Callbacks for calls earshot never streamed (they fell back) have nothing to update.
async fn status(
    State(state): State<TwilioState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(params) = form::parse(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let base = format!("{}/twilio/status", state.0.settings.public_url);
    if let Err(err) = state.verify(&uri, &base, &headers, &params) {
        return forbidden("status callback", err);
    }
    let (Some(call_sid), Some(status)) = (
        form::get(&params, "CallSid").and_then(CallSid::parse),
        form::get(&params, "CallStatus").and_then(CarrierStatus::parse),
    ) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let services = state.services();
    let live = services
        .registry
        .list()
        .into_iter()
        .find(|c| c.info().external_id == call_sid.as_str());
    let id = match &live {
        Some(call) => Some(call.id().clone()),
        None => match state.stored(&call_sid).await {
            Ok(id) => id,
            Err(()) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
    };
    tracing::debug!(%call_sid, %status, live = live.is_some(), known = id.is_some(), "twilio status callback");
    if let Some(id) = id {
        let _ = services
            .events
            .send(CallEvent::CarrierStatus { id, status });
    }
    if let (true, Some(call)) = (status.is_final(), live) {
        call.hangup_for(EndReason::Carrier(status));
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /twilio/stream/{token}`: the media stream's WebSocket upgrade, signed over the Stream
/// URL with its token; the upgrade redeems the token (once).
async fn stream(
    State(state): State<TwilioState>,
    Path(token): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let settings = &state.0.settings;
    if !settings.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    let url = format!("{}/{token}", settings.stream_url);
    if let Err(err) = state.verify(&uri, &url, &headers, &[]) {
        return forbidden("stream upgrade", err);
    }
    if state.0.shutdown.is_cancelled() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let accepted = clock::now();
    let ticket = match state.lock_tokens().redeem(accepted, &token) {
        Ok(ticket) => ticket,
        Err(err) => {
            state.0.metrics.calls_replayed.fetch_add(1, Relaxed);
            tracing::warn!(%err, "twilio stream upgrade refused");
            return StatusCode::FORBIDDEN.into_response();
        }
    };
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE)
        .on_failed_upgrade(|err| tracing::debug!(%err, "twilio stream upgrade failed"))
        .on_upgrade(move |socket| run_stream(state, socket, accepted, token, ticket))
}

/// Counts a stream task for [`TwilioState::drain`], until dropped.
struct StreamGuard(TwilioState);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.idle.notify_waiters();
        }
    }
}

/// One stream, from the upgrade to the close frame: the handshake until `start` is admitted,
/// then the call task on a [`TwilioLeg`], in this same task.
async fn run_stream(
    state: TwilioState,
    ws: WebSocket,
    accepted: Instant,
    token: String,
    ticket: Ticket,
) {
    state.0.streams.fetch_add(1, Ordering::AcqRel);
    let _guard = StreamGuard(state.clone());
    let settings = &state.0.settings;
    let config = StreamConfig {
        handshake_timeout: settings.handshake_timeout,
        // The call task keeps the silence timeout of every call.
        silence_timeout: None,
    };
    let mut leg = TwilioLeg {
        ws,
        stream: Stream::new(config, accepted),
        handoff: Handoff {
            state: state.clone(),
            token: token.clone(),
            ticket: ticket.clone(),
        },
        shutdown: state.0.shutdown.clone(),
        close_with: ("stream over", close_code::NORMAL),
        peer_closed: false,
        ended: None,
        announce: true,
    };
    let Some(start) = leg.handshake(&state, &token, &ticket).await else {
        leg.close().await;
        let s = leg.stream.stats();
        tracing::debug!(
            messages = s.messages,
            malformed = s.malformed,
            "twilio stream ended without a call"
        );
        return;
    };
    let services = state.services();
    let started_at = clock::wallclock();
    let info = CallInfo {
        id: CallId::new(started_at, rand::random()),
        source: Source::Twilio,
        external_id: ticket.call_sid.as_str().to_owned(),
        caller: ticket.from.clone(),
        callee: ticket.to.clone(),
        started_at,
    };
    tracing::info!(call = %info.id, call_sid = %ticket.call_sid, stream_sid = %start.stream_sid, "twilio call started");
    let call_settings = Arc::new(CallSettings {
        max_duration: settings.max_duration,
        silence_timeout: settings.silence_timeout,
        jitter: JITTER,
    });
    let (_handle, task) = call::start(info, leg, call_settings, &services);
    task.await;
}

/// A Twilio Media Stream as a call's caller leg.
pub struct TwilioLeg {
    ws: WebSocket,
    stream: Stream,
    handoff: Handoff,
    shutdown: CancellationToken,
    /// How our close frame explains the end, unless the peer closed first.
    close_with: (&'static str, u16),
    peer_closed: bool,
    /// Set once the stream is over, until the call task has been told.
    ended: Option<EndReason>,
    /// The call task has yet to hear that media flows (μ-law, from `start` on).
    announce: bool,
}

/// What a leg needs to hand its call back to Twilio: the token book, where the `action`
/// callback finds the destination, and the call's entry in it.
struct Handoff {
    state: TwilioState,
    token: String,
    ticket: Ticket,
}

impl TwilioLeg {
    /// Reads until `start` is admitted (its message), or the stream ends.
    async fn handshake(
        &mut self,
        state: &TwilioState,
        token: &str,
        ticket: &Ticket,
    ) -> Option<Box<Start>> {
        let mut inputs = VecDeque::new();
        loop {
            let deadline = self
                .stream
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                message = self.ws.recv() => self.message(clock::now(), message, &mut inputs),
                () = self.shutdown.cancelled() => {
                    self.close_with = ("shutting down", close_code::AWAY);
                    self.stream.close();
                }
                () = clock::sleep_until(deadline) => self.stream.handle_timeout(clock::now()),
            }
            let now = clock::now();
            while let Some(event) = self.stream.poll_event() {
                match event {
                    StreamEvent::Started(start) => match state.admit(now, &start, token, ticket) {
                        Ok(()) => return Some(start),
                        Err(refusal) => {
                            tracing::warn!(call_sid = %start.call_sid, %refusal, "twilio stream refused");
                            self.close_with = ("refused", close_code::POLICY);
                            self.stream.close();
                        }
                    },
                    StreamEvent::Ended(why) => {
                        if why == StreamEnd::HandshakeTimeout {
                            tracing::info!(
                                reason = why.as_str(),
                                "twilio stream ended by its watchdog"
                            );
                            self.close_with = (why.as_str(), close_code::NORMAL);
                        }
                    }
                    StreamEvent::Dtmf { .. } | StreamEvent::MarkPlayed { .. } => {}
                }
            }
            if self.stream.is_ended() {
                return None;
            }
        }
    }

    /// Takes one WebSocket read into the stream; caller audio goes to `inputs`.
    fn message(
        &mut self,
        now: Instant,
        message: Option<Result<Message, axum::Error>>,
        inputs: &mut VecDeque<LegInput>,
    ) {
        match message {
            Some(Ok(Message::Text(text))) => {
                if let Some(audio) = self.stream.handle_text(now, text.as_str()) {
                    inputs.push_back(LegInput::Audio(LegAudio::new(
                        audio.at,
                        audio.seq,
                        audio.ts,
                        false,
                        audio.ssrc,
                        audio.payload,
                    )));
                }
            }
            Some(Ok(Message::Binary(data))) => self.stream.handle_binary(now, data.len()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                self.peer_closed = true;
                self.stream.handle_closed(now);
            }
            Some(Err(err)) => {
                // Oversized messages (beyond MAX_WS_MESSAGE) end up here too.
                tracing::debug!(%err, "twilio stream read failed");
                self.close_with = ("unreadable message", close_code::PROTOCOL);
                self.stream.handle_closed(now);
            }
        }
    }

    /// The stream's events, as the call task's inputs.
    fn events(&mut self, inputs: &mut VecDeque<LegInput>) {
        if std::mem::take(&mut self.announce) {
            inputs.push_front(LegInput::Media {
                codec: Codec::Pcmu,
                hold: false,
            });
        }
        while let Some(event) = self.stream.poll_event() {
            match event {
                StreamEvent::Dtmf { digit } => inputs.push_back(LegInput::Dtmf {
                    digit,
                    duration_ms: 0,
                    source: DtmfSource::Twilio,
                }),
                StreamEvent::MarkPlayed { name, after } => {
                    tracing::debug!(mark = %name, after_ms = after.as_millis() as u64, "mark played");
                }
                StreamEvent::Ended(why) => {
                    let reason = match why {
                        StreamEnd::Stopped => EndReason::RemoteHangup,
                        StreamEnd::Closed => EndReason::StreamClosed,
                        StreamEnd::HandshakeTimeout => EndReason::HandshakeTimeout,
                        StreamEnd::SilenceTimeout => EndReason::MediaTimeout,
                        StreamEnd::Local => EndReason::LocalHangup,
                    };
                    self.ended.get_or_insert(reason);
                }
                StreamEvent::Started(_) => {}
            }
        }
        if let Some(reason) = self.ended.take() {
            inputs.push_back(LegInput::Ended(reason));
        }
    }

    /// Sends what the stream queued.
    async fn flush(&mut self) {
        while let Some(text) = self.stream.poll_transmit() {
            if let Err(err) = self.ws.send(Message::Text(text.into())).await {
                tracing::debug!(%err, "twilio stream write failed");
                self.peer_closed = true;
                self.stream.handle_closed(clock::now());
                break;
            }
        }
    }

    /// Sends our close frame (unless the peer closed) and waits briefly for the peer's.
    async fn close(&mut self) {
        if self.peer_closed {
            return;
        }
        let (why, code) = self.close_with;
        let frame = CloseFrame {
            code,
            reason: why.into(),
        };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(msg)) = self.ws.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

impl Leg for TwilioLeg {
    async fn readable(&mut self, inputs: &mut VecDeque<LegInput>) {
        tokio::select! {
            message = self.ws.recv() => {
                self.message(clock::now(), message, inputs);
                // Everything already readable goes to the jitter buffer before the next tick,
                // so a stall of this task does not make buffered audio look lost.
                self.drain(inputs);
            }
            () = self.shutdown.cancelled() => {
                self.close_with = ("shutting down", close_code::AWAY);
                self.stream.close();
                self.ended = Some(EndReason::Shutdown);
            }
        }
        self.events(inputs);
    }

    fn drain(&mut self, inputs: &mut VecDeque<LegInput>) {
        for _ in 0..MAX_BATCH {
            if self.stream.is_ended() {
                break;
            }
            let Some(message) = self.ws.recv().now_or_never() else {
                break;
            };
            self.message(clock::now(), message, inputs);
        }
        self.events(inputs);
    }

    fn tick_at(&self) -> Option<Instant> {
        self.stream.frame_at()
    }

    async fn send_frame(&mut self, now: Instant, frame: &[u8; FRAME_SAMPLES], _: Option<Instant>) {
        self.stream.send_frame(now, frame);
        self.flush().await;
    }

    fn timer_at(&self) -> Option<Instant> {
        None
    }

    async fn on_timer(&mut self, _now: Instant) {}

    fn expects_media(&self) -> bool {
        true
    }

    fn clear(&mut self) {
        self.stream.clear();
    }

    fn mark(&mut self, now: Instant, name: &'static str) {
        self.stream.mark(now, name);
    }

    /// Twilio continues a call whose stream closes normally with the `<Connect action>` URL:
    /// the destination is remembered for that callback, which answers `<Dial>`, and the call
    /// task closes the stream.
    fn transfer(&mut self, target: &TransferTarget) -> TransferStart {
        let h = &self.handoff;
        let kept = h.state.lock_tokens().remember_transfer(
            clock::now(),
            &h.token,
            &h.ticket,
            target.as_str(),
        );
        if kept {
            TransferStart::Done(TransferMethod::TwilioDial)
        } else {
            TransferStart::Failed(TransferFailure::Unavailable)
        }
    }

    fn hang_up(&mut self, reason: EndReason) -> bool {
        self.close_with = match reason {
            EndReason::Shutdown => ("shutting down", close_code::AWAY),
            EndReason::Transferred => ("transferred", close_code::NORMAL),
            EndReason::MaxDuration => ("max duration", close_code::NORMAL),
            EndReason::MediaTimeout => ("stream timeout", close_code::NORMAL),
            EndReason::LocalHangup => ("hangup", close_code::NORMAL),
            _ => ("call ended", close_code::NORMAL),
        };
        self.stream.close();
        true
    }

    async fn finish(mut self) -> LegStats {
        self.close().await;
        let s = self.stream.stats();
        tracing::debug!(
            received = s.media,
            sent = s.frames_sent,
            skipped = s.frames_skipped,
            late = s.frames_late,
            gaps = s.sequence_gaps,
            disorder = s.sequence_disorder,
            malformed = s.malformed,
            oversized = s.oversized,
            unknown = s.unknown_events,
            out_of_state = s.out_of_state,
            marks_sent = s.marks_sent,
            marks_played = s.marks_played,
            clears = s.clears_sent,
            dtmf = s.dtmf,
            last_error = self.stream.last_error().map(ToString::to_string),
            "twilio stream finished"
        );
        LegStats {
            packets_received: s.media,
            // A hostile sequenceNumber jump must not wrap into a negative loss.
            packets_lost: i64::try_from(s.sequence_gaps).unwrap_or(i64::MAX),
            packets_sent: s.frames_sent,
            jitter_ms: 0.0,
            malformed_packets: s.malformed + s.unknown_events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_url_follows_the_public_url() {
        assert_eq!(
            stream_url("https://box.example.com"),
            "wss://box.example.com/twilio/stream"
        );
        assert_eq!(
            stream_url("http://10.0.0.5:8080/earshot"),
            "ws://10.0.0.5:8080/earshot/twilio/stream"
        );
    }
}
