//! Process-wide counters and histograms, and their Prometheus text rendering for
//! `GET /metrics` (exposition format 0.0.4).
//!
//! One [`Metrics`] is created at startup and shared as `Arc<Metrics>`. Every field is an atomic
//! (or a [`Histogram`] of atomics), so any task or thread increments it without a lock and the
//! scrape reads a consistent-enough snapshot. Who increments what is written on each field.
//! Gauges that already live elsewhere (live calls in the registry, stored calls per status in
//! the store, the audio device's counters) are not copied here: the scrape reads them and hands
//! them to [`Metrics::render`] as a [`Snapshot`].

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::call::{
    CallStats, FallbackReason, PlaceFailure, RecordingFrameKind, Source, TransferFailure,
    TransferMethod,
};

/// Bucket bounds of per-call RTP interarrival jitter, ms.
const JITTER_MS_BOUNDS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0];
/// Bucket bounds of the per-call mean jitter-buffer delay, ms.
const DELAY_MS_BOUNDS: &[f64] = &[20.0, 40.0, 60.0, 80.0, 120.0, 160.0, 240.0, 400.0];
/// Bucket bounds of the Twilio handshake (webhook to stream `start`), seconds.
const HANDSHAKE_BOUNDS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0];
/// Bucket bounds of the agent's WebSocket connect time, seconds.
const AGENT_CONNECT_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0];
/// Bucket bounds of the agent's response latency (end of the caller's speech to the agent's
/// first audio), seconds.
const AGENT_RESPONSE_BOUNDS: &[f64] = &[0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0];
/// Bucket bounds of the time a message spends inside earshot on its way to or from an agent,
/// seconds.
const AGENT_HOP_BOUNDS: &[f64] = &[
    0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05,
];
/// Bucket bounds of store commits, seconds.
const COMMIT_BOUNDS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

/// A Prometheus histogram with fixed bucket bounds: wait-free to observe.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound plus `+Inf`; not cumulative (the rendering sums them).
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths, so it fits an integer atomic.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation (negative and NaN values count as 0).
    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts.last().map_or(0, |c| c.load(Relaxed));
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Renders a 1 ms latency histogram as a Prometheus summary in seconds (p50, p90, p99).
fn summary_ms(
    out: &mut String,
    name: &str,
    help: &str,
    latency: &crate::audio::mixer::LatencySnapshot,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    for q in [0.5, 0.9, 0.99] {
        if let Some(ms) = latency.quantile_ms(q) {
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", ms / 1000.0);
        }
    }
    let sum = latency.sum_us as f64 / 1e6;
    let count = latency.count();
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
}

/// Counters without labels: `(name, help, value)`.
fn plain_counters(out: &mut String, counters: &[(&str, &str, u64)]) {
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
}

/// The microphone's (talk-back) counters and its capture → RTP sent latency.
fn render_capture(out: &mut String, capture: &crate::audio::CaptureStats) {
    let counters = [
        (
            "earshot_capture_overruns_total",
            "Microphone callbacks that dropped audio because the capture ring was full.",
            capture.overruns,
        ),
        (
            "earshot_capture_underruns_total",
            "Frames of the operator's voice with a gap: the capture ring ran dry.",
            capture.underruns,
        ),
        (
            "earshot_capture_skips_total",
            "Times the capture ring was too far ahead and its excess was discarded.",
            capture.skips,
        ),
    ];
    plain_counters(out, &counters);
    gauge_header(
        out,
        "earshot_capture_device_running",
        "1 while the microphone ([audio] input) captures.",
    );
    let _ = writeln!(
        out,
        "earshot_capture_device_running {}",
        u8::from(capture.running)
    );
    summary_ms(
        out,
        "earshot_talk_latency_seconds",
        "Microphone to network: capture timestamp (from the host) to the RTP frame sent, per frame of the operator's voice.",
        &capture.latency,
    );
}

/// Counters of one label over a fixed set of values (an enum's `ALL`, by its `as_str`).
#[derive(Debug)]
pub struct ByLabel<const N: usize> {
    names: [&'static str; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> ByLabel<N> {
    fn new(names: [&'static str; N]) -> Self {
        Self {
            names,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one for `name`; a name not in the set is not counted.
    fn add(&self, name: &str) {
        if let Some(i) = self.names.iter().position(|n| *n == name)
            && let Some(count) = self.counts.get(i)
        {
            count.fetch_add(1, Relaxed);
        }
    }

    /// The count of `name` (0 for a name not in the set).
    pub fn get(&self, name: &str) -> u64 {
        self.names
            .iter()
            .zip(&self.counts)
            .find(|(n, _)| **n == name)
            .map_or(0, |(_, c)| c.load(Relaxed))
    }

    fn render(&self, out: &mut String, metric: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for (name, n) in self.names.iter().zip(&self.counts) {
            let _ = writeln!(out, "{metric}{{{label}=\"{name}\"}} {}", n.load(Relaxed));
        }
    }
}

/// One counter per call source.
#[derive(Debug, Default)]
pub struct PerSource {
    pub sip: AtomicU64,
    pub twilio: AtomicU64,
}

impl PerSource {
    pub fn get(&self, source: Source) -> &AtomicU64 {
        match source {
            Source::Sip => &self.sip,
            Source::Twilio => &self.twilio,
        }
    }
}

/// The counters. Counters only grow (they restart at 0 with the process, as Prometheus expects).
#[derive(Debug)]
pub struct Metrics {
    /// Calls started, by source. The store writer, on each new call it records.
    pub calls_started: PerSource,
    /// Calls ended, by source. The store writer, on each `Ended`.
    pub calls_ended: PerSource,
    /// Calls found still open at startup and closed as interrupted. The store, at open.
    pub calls_interrupted: AtomicU64,
    /// RTP packets received / sent / lost / malformed, summed over ended calls. The store
    /// writer, from each `Ended` event's stats.
    pub rtp_packets_received: AtomicU64,
    pub rtp_packets_sent: AtomicU64,
    pub rtp_packets_lost: AtomicU64,
    pub rtp_packets_malformed: AtomicU64,
    /// RTP and RTCP packets dropped because they came from an address that is not the call's
    /// learned or signalled source (strict source learning). The SIP legs, as they drop them.
    pub rtp_foreign_dropped: AtomicU64,
    /// Audio frames dropped between the legs of bridged transfers (a full queue, or a backlog
    /// after a stall). The far legs' drivers.
    pub bridge_frames_dropped: AtomicU64,
    /// Calls refused because no RTP port pair in `[rtp].ports` could be bound. The SIP
    /// driver.
    pub rtp_ports_exhausted: AtomicU64,
    /// Frames the jitter buffer concealed, over ended calls. The store writer.
    pub concealed_frames: AtomicU64,
    /// Caller frames on their way into recordings, by what happened to them, over ended
    /// calls. The store writer.
    pub recording_frames: [AtomicU64; RecordingFrameKind::ALL.len()],
    /// Per ended call: its RTP interarrival jitter, ms. The store writer.
    pub call_jitter_ms: Histogram,
    /// Per ended call: its mean jitter-buffer target delay, ms. The store writer.
    pub jitter_buffer_delay_ms: Histogram,
    /// Twilio: seconds from the webhook to the stream's `start`. The Twilio driver, through
    /// [`Metrics::twilio_handshake`].
    pub twilio_handshake_seconds: Histogram,
    /// Twilio calls answered with the fallback TwiML (busy, shutting down, handshake timeout).
    /// The Twilio driver, through [`Metrics::twilio_fallback`].
    pub twilio_fallbacks: AtomicU64,
    /// Store transactions: duration, and failures (events that could not be persisted).
    pub store_commit_seconds: Histogram,
    pub store_errors: AtomicU64,
    /// Call events not stored because the store's detail lane was full, and DTMF digits over a
    /// call's rate limit. The call tasks, through their [`EventSink`](crate::call::EventSink).
    pub call_drops: Arc<crate::call::event_sink::Drops>,
    /// Event-stream clients connected now, and dropped for falling behind. The API.
    pub sse_clients: AtomicU64,
    pub sse_dropped: AtomicU64,
    /// Free bytes on the recordings file system at the last check. The disk watcher.
    pub disk_free_bytes: AtomicU64,
    /// Recordings deleted by retention. The housekeeping task.
    pub recordings_deleted: AtomicU64,
    /// Calls deleted with their history by `[store].keep_days`. The housekeeping task.
    pub calls_purged: AtomicU64,
    /// Recordings stopped because syncing their file or folder to the disk failed. The
    /// recording events' watcher.
    pub recording_sync_failures: AtomicU64,
    /// SIP messages received from allowed sources, and sent. The SIP driver.
    pub sip_received: AtomicU64,
    pub sip_sent: AtomicU64,
    /// SIP datagrams and TCP connections from sources outside `[sip].allow`, dropped
    /// unanswered. The SIP driver.
    pub sip_blocked: AtomicU64,
    /// SIP flood control, copied from the endpoint's counters by the SIP driver: server
    /// transactions held now; requests dropped (source over its transaction bound) and refused
    /// with a stateless 503 (table full); new INVITEs over their source's rate; responses sent
    /// without a transaction, and those withheld over their destination's rate.
    pub sip_server_transactions: AtomicU64,
    pub sip_overload_dropped: AtomicU64,
    pub sip_overload_rejected: AtomicU64,
    pub sip_invites_limited: AtomicU64,
    pub sip_stateless_responses: AtomicU64,
    pub sip_responses_limited: AtomicU64,
    /// REFERs refused with 403 (`[sip].accept_refer` off, or outside a dialog). The SIP driver.
    pub sip_refers_refused: AtomicU64,
    /// TCP connections refused at `[sip].max_tcp_connections`, and SIP messages dropped for
    /// exceeding `[sip].max_message_bytes` (UDP datagrams, and TCP messages whose connection
    /// was closed for it). The SIP driver.
    pub sip_tcp_refused: AtomicU64,
    pub sip_oversized: AtomicU64,
    /// Agent bridge: WebSocket connect time, sessions up now, fallbacks by reason, frames its
    /// audio only partly filled, audio bytes dropped on a full queue, agent messages dropped on
    /// a full channel, and the response latency per caller turn. The agent driver and the call
    /// tasks (through the connector).
    pub agent_connect_seconds: Histogram,
    pub agent_sessions: AtomicU64,
    pub agent_fallbacks: [AtomicU64; FallbackReason::ALL.len()],
    /// Outbound calls placed, and those that failed before an answer, by reason; transfers
    /// done, by method, and failed, by reason. The store writer, on each committed event.
    pub calls_placed: AtomicU64,
    pub place_failures: ByLabel<{ PlaceFailure::ALL.len() }>,
    pub transfers: ByLabel<{ TransferMethod::ALL.len() }>,
    pub transfer_failures: ByLabel<{ TransferFailure::ALL.len() }>,
    pub agent_underruns: AtomicU64,
    pub agent_overrun_bytes: AtomicU64,
    pub agent_messages_dropped: AtomicU64,
    pub agent_response_seconds: Histogram,
    /// Inside earshot, excluding pacing and the jitter buffer: a caller frame from its tick to
    /// its `media` written to the agent's socket (the driver); an agent message from its read
    /// to its audio queued (the call task); a tick playing agent audio from its start to the
    /// frame sent to the caller (the call task).
    pub agent_uplink_seconds: Histogram,
    pub agent_downlink_seconds: Histogram,
    pub agent_frame_out_seconds: Histogram,
    /// Webhook deliveries answered 2xx, attempts that will be retried, deliveries given up,
    /// and deliveries pending now. The webhook task.
    pub webhooks_delivered: AtomicU64,
    pub webhooks_retried: AtomicU64,
    pub webhooks_failed: AtomicU64,
    pub webhooks_pending: AtomicU64,
    /// HTTP connections closed at accept because `[http].max_connections` were open, and
    /// connections closed by the header-read or idle timeout. The HTTP server.
    pub http_connections_refused: AtomicU64,
    pub http_connections_timed_out: AtomicU64,
    /// HTTP requests refused by the Host and Origin checks (DNS rebinding, cross-site
    /// requests). The API.
    pub http_requests_refused: AtomicU64,
    /// Calls refused because their SIP Call-ID or Twilio CallSid belongs to an ended call, and
    /// Twilio stream upgrades refused for a used, expired or unknown token (replays). The SIP
    /// and Twilio drivers, and the store writer for a start that would reopen an ended call.
    pub calls_replayed: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            calls_started: PerSource::default(),
            calls_ended: PerSource::default(),
            calls_interrupted: AtomicU64::new(0),
            rtp_packets_received: AtomicU64::new(0),
            rtp_packets_sent: AtomicU64::new(0),
            rtp_packets_lost: AtomicU64::new(0),
            rtp_packets_malformed: AtomicU64::new(0),
            rtp_foreign_dropped: AtomicU64::new(0),
            bridge_frames_dropped: AtomicU64::new(0),
            rtp_ports_exhausted: AtomicU64::new(0),
            concealed_frames: AtomicU64::new(0),
            recording_frames: Default::default(),
            call_jitter_ms: Histogram::new(JITTER_MS_BOUNDS),
            jitter_buffer_delay_ms: Histogram::new(DELAY_MS_BOUNDS),
            twilio_handshake_seconds: Histogram::new(HANDSHAKE_BOUNDS),
            twilio_fallbacks: AtomicU64::new(0),
            store_commit_seconds: Histogram::new(COMMIT_BOUNDS),
            store_errors: AtomicU64::new(0),
            call_drops: Arc::default(),
            sse_clients: AtomicU64::new(0),
            sse_dropped: AtomicU64::new(0),
            disk_free_bytes: AtomicU64::new(0),
            recordings_deleted: AtomicU64::new(0),
            calls_purged: AtomicU64::new(0),
            recording_sync_failures: AtomicU64::new(0),
            sip_received: AtomicU64::new(0),
            sip_sent: AtomicU64::new(0),
            sip_blocked: AtomicU64::new(0),
            sip_server_transactions: AtomicU64::new(0),
            sip_overload_dropped: AtomicU64::new(0),
            sip_overload_rejected: AtomicU64::new(0),
            sip_invites_limited: AtomicU64::new(0),
            sip_stateless_responses: AtomicU64::new(0),
            sip_responses_limited: AtomicU64::new(0),
            sip_refers_refused: AtomicU64::new(0),
            sip_tcp_refused: AtomicU64::new(0),
            sip_oversized: AtomicU64::new(0),
            agent_connect_seconds: Histogram::new(AGENT_CONNECT_BOUNDS),
            agent_sessions: AtomicU64::new(0),
            agent_fallbacks: Default::default(),
            calls_placed: AtomicU64::new(0),
            place_failures: ByLabel::new(PlaceFailure::ALL.map(PlaceFailure::as_str)),
            transfers: ByLabel::new(TransferMethod::ALL.map(TransferMethod::as_str)),
            transfer_failures: ByLabel::new(TransferFailure::ALL.map(TransferFailure::as_str)),
            agent_underruns: AtomicU64::new(0),
            agent_overrun_bytes: AtomicU64::new(0),
            agent_messages_dropped: AtomicU64::new(0),
            agent_response_seconds: Histogram::new(AGENT_RESPONSE_BOUNDS),
            agent_uplink_seconds: Histogram::new(AGENT_HOP_BOUNDS),
            agent_downlink_seconds: Histogram::new(AGENT_HOP_BOUNDS),
            agent_frame_out_seconds: Histogram::new(AGENT_HOP_BOUNDS),
            webhooks_delivered: AtomicU64::new(0),
            webhooks_retried: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            webhooks_pending: AtomicU64::new(0),
            http_connections_refused: AtomicU64::new(0),
            http_connections_timed_out: AtomicU64::new(0),
            http_requests_refused: AtomicU64::new(0),
            calls_replayed: AtomicU64::new(0),
        }
    }
}

/// Gauges read at scrape time from their owners.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Live calls per source (the registry).
    pub active: Vec<(Source, u64)>,
    /// Stored calls per source and status (`ringing`, `active`, `ended`, `interrupted`).
    pub stored: Vec<(Source, &'static str, u64)>,
    /// The audio device's counters, when playout is configured.
    pub audio: Option<crate::audio::AudioStats>,
    /// Whether new recordings may start (enough free disk).
    pub recording_allowed: bool,
    /// Whether the box is draining (refusing new calls, `/api/drain`).
    pub draining: bool,
    pub uptime_secs: u64,
}

impl Metrics {
    /// A Twilio stream's handshake took `seconds` (webhook received → `start` event).
    pub fn twilio_handshake(&self, seconds: f64) {
        self.twilio_handshake_seconds.observe(seconds);
    }

    /// A Twilio call got the fallback TwiML instead of a stream.
    pub fn twilio_fallback(&self) {
        self.twilio_fallbacks.fetch_add(1, Relaxed);
    }

    /// An agent session was given up for `reason`.
    pub fn agent_fallback(&self, reason: FallbackReason) {
        let i = FallbackReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        if let Some(counter) = self.agent_fallbacks.get(i) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// An outbound call failed before its answer.
    pub fn place_failed(&self, reason: PlaceFailure) {
        self.place_failures.add(reason.as_str());
    }

    /// A call was handed over.
    pub fn transferred(&self, method: TransferMethod) {
        self.transfers.add(method.as_str());
    }

    /// A transfer did not happen.
    pub fn transfer_failed(&self, reason: TransferFailure) {
        self.transfer_failures.add(reason.as_str());
    }

    /// Adds an ended call's media counters.
    pub fn call_ended(&self, source: Source, stats: &CallStats) {
        self.calls_ended.get(source).fetch_add(1, Relaxed);
        self.rtp_packets_received
            .fetch_add(stats.packets_received, Relaxed);
        self.rtp_packets_sent.fetch_add(stats.packets_sent, Relaxed);
        self.rtp_packets_lost
            .fetch_add(stats.packets_lost.max(0) as u64, Relaxed);
        self.rtp_packets_malformed
            .fetch_add(stats.malformed_packets, Relaxed);
        self.concealed_frames
            .fetch_add(stats.concealed_frames, Relaxed);
        for (kind, counter) in RecordingFrameKind::ALL.iter().zip(&self.recording_frames) {
            counter.fetch_add(stats.recording.get(*kind), Relaxed);
        }
        if stats.packets_received > 0 {
            self.call_jitter_ms.observe(stats.jitter_ms);
            self.jitter_buffer_delay_ms
                .observe(f64::from(stats.jitter_delay_ms));
        }
    }

    /// The whole exposition text.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(8192);
        gauge_header(&mut out, "earshot_up", "1 while earshot runs.");
        let _ = writeln!(out, "earshot_up 1");
        gauge_header(
            &mut out,
            "earshot_uptime_seconds",
            "Seconds since earshot started.",
        );
        let _ = writeln!(out, "earshot_uptime_seconds {}", snapshot.uptime_secs);
        gauge_header(&mut out, "earshot_active_calls", "Live calls, by source.");
        for source in [Source::Sip, Source::Twilio] {
            let n = snapshot
                .active
                .iter()
                .filter(|(s, _)| *s == source)
                .map(|(_, n)| n)
                .sum::<u64>();
            let _ = writeln!(
                out,
                "earshot_active_calls{{source=\"{}\"}} {n}",
                source.as_str()
            );
        }
        gauge_header(
            &mut out,
            "earshot_calls",
            "Calls in the history, by source and status.",
        );
        for (source, status, n) in &snapshot.stored {
            let _ = writeln!(
                out,
                "earshot_calls{{source=\"{}\",status=\"{status}\"}} {n}",
                source.as_str()
            );
        }
        per_source(
            &mut out,
            "earshot_calls_started_total",
            "Calls started since earshot started.",
            &self.calls_started,
        );
        per_source(
            &mut out,
            "earshot_calls_ended_total",
            "Calls ended since earshot started.",
            &self.calls_ended,
        );
        // A slice, not a sized array, so adding a counter is one entry.
        let counters: &[(&str, &str, &AtomicU64)] = &[
            (
                "earshot_agent_sessions",
                "Agent WebSocket sessions up now.",
                &self.agent_sessions,
            ),
            (
                "earshot_agent_underruns_total",
                "Frames the agent's audio only partly filled (it ran dry mid-frame).",
                &self.agent_underruns,
            ),
            (
                "earshot_agent_overrun_bytes_total",
                "Agent audio bytes dropped because its queue was full.",
                &self.agent_overrun_bytes,
            ),
            (
                "earshot_agent_messages_dropped_total",
                "Agent messages dropped because the call could not take them fast enough.",
                &self.agent_messages_dropped,
            ),
            (
                "earshot_calls_interrupted_total",
                "Calls found open at startup and closed as interrupted.",
                &self.calls_interrupted,
            ),
            (
                "earshot_rtp_packets_received_total",
                "RTP packets received by ended calls.",
                &self.rtp_packets_received,
            ),
            (
                "earshot_rtp_packets_sent_total",
                "RTP packets sent by ended calls.",
                &self.rtp_packets_sent,
            ),
            (
                "earshot_rtp_packets_lost_total",
                "RTP packets lost (by sequence number) in ended calls.",
                &self.rtp_packets_lost,
            ),
            (
                "earshot_rtp_packets_malformed_total",
                "Malformed RTP packets dropped in ended calls.",
                &self.rtp_packets_malformed,
            ),
            (
                "earshot_rtp_foreign_dropped_total",
                "RTP and RTCP packets dropped for coming from neither the learned nor the signalled source.",
                &self.rtp_foreign_dropped,
            ),
            (
                "earshot_bridge_frames_dropped_total",
                "Audio frames dropped between the two legs of bridged transfers.",
                &self.bridge_frames_dropped,
            ),
            (
                "earshot_rtp_ports_exhausted_total",
                "Calls refused because no RTP port pair could be bound.",
                &self.rtp_ports_exhausted,
            ),
            (
                "earshot_concealed_frames_total",
                "20 ms frames the jitter buffer concealed in ended calls.",
                &self.concealed_frames,
            ),
            (
                "earshot_sip_messages_received_total",
                "SIP messages received from allowed sources.",
                &self.sip_received,
            ),
            (
                "earshot_sip_messages_sent_total",
                "SIP messages sent.",
                &self.sip_sent,
            ),
            (
                "earshot_sip_blocked_total",
                "SIP datagrams and connections from sources outside [sip].allow, dropped.",
                &self.sip_blocked,
            ),
            (
                "earshot_sip_server_transactions",
                "SIP server transactions held now.",
                &self.sip_server_transactions,
            ),
            (
                "earshot_sip_overload_dropped_total",
                "SIP requests dropped unanswered: their source held its most transactions.",
                &self.sip_overload_dropped,
            ),
            (
                "earshot_sip_overload_rejected_total",
                "SIP requests refused with a stateless 503: the transaction table was full.",
                &self.sip_overload_rejected,
            ),
            (
                "earshot_sip_invites_limited_total",
                "New SIP INVITEs over their source's rate, refused with a stateless 503.",
                &self.sip_invites_limited,
            ),
            (
                "earshot_sip_stateless_responses_total",
                "SIP responses sent without a transaction.",
                &self.sip_stateless_responses,
            ),
            (
                "earshot_sip_responses_limited_total",
                "Stateless SIP responses withheld: over their destination's rate.",
                &self.sip_responses_limited,
            ),
            (
                "earshot_sip_refers_refused_total",
                "SIP REFERs refused with 403: [sip].accept_refer is off, or outside a dialog.",
                &self.sip_refers_refused,
            ),
            (
                "earshot_sip_tcp_refused_total",
                "SIP TCP connections refused at [sip].max_tcp_connections.",
                &self.sip_tcp_refused,
            ),
            (
                "earshot_sip_oversized_total",
                "SIP messages over [sip].max_message_bytes, dropped unanswered.",
                &self.sip_oversized,
            ),
            (
                "earshot_twilio_fallbacks_total",
                "Twilio calls answered with the fallback TwiML.",
                &self.twilio_fallbacks,
            ),
            (
                "earshot_store_errors_total",
                "Store transactions that failed (events not persisted).",
                &self.store_errors,
            ),
            (
                "earshot_store_events_dropped_total",
                "Call events (DTMF, hold, listen, agent notices) dropped on a full store queue.",
                &self.call_drops.events,
            ),
            (
                "earshot_calls_purged_total",
                "Calls deleted with their events, transcripts and notes by [store].keep_days.",
                &self.calls_purged,
            ),
            (
                "earshot_dtmf_limited_total",
                "DTMF digits over a call's rate limit, ignored.",
                &self.call_drops.dtmf,
            ),
            (
                "earshot_sse_dropped_total",
                "Event-stream clients dropped for falling behind.",
                &self.sse_dropped,
            ),
            (
                "earshot_recordings_deleted_total",
                "Recordings deleted by retention.",
                &self.recordings_deleted,
            ),
            (
                "earshot_recording_sync_failures_total",
                "Recordings stopped because syncing them to the disk failed.",
                &self.recording_sync_failures,
            ),
            (
                "earshot_sse_clients",
                "Event-stream clients connected.",
                &self.sse_clients,
            ),
            (
                "earshot_webhook_deliveries_delivered_total",
                "Webhook deliveries answered with a 2xx.",
                &self.webhooks_delivered,
            ),
            (
                "earshot_webhook_deliveries_retried_total",
                "Webhook attempts that failed and will be retried.",
                &self.webhooks_retried,
            ),
            (
                "earshot_webhook_deliveries_failed_total",
                "Webhook deliveries given up (refused, 4xx, too old).",
                &self.webhooks_failed,
            ),
            (
                "earshot_webhook_deliveries_pending",
                "Webhook deliveries waiting in the outbox.",
                &self.webhooks_pending,
            ),
            (
                "earshot_http_connections_refused_total",
                "HTTP connections closed at accept: [http].max_connections were open.",
                &self.http_connections_refused,
            ),
            (
                "earshot_http_connections_timed_out_total",
                "HTTP connections closed by the header-read or idle timeout.",
                &self.http_connections_timed_out,
            ),
            (
                "earshot_http_requests_refused_total",
                "HTTP requests refused by the Host and Origin checks.",
                &self.http_requests_refused,
            ),
            (
                "earshot_calls_replayed_total",
                "Call starts refused as replays: an ended call's id, or a used stream token.",
                &self.calls_replayed,
            ),
        ];
        for &(name, help, value) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        self.call_jitter_ms.render(
            &mut out,
            "earshot_call_jitter_ms",
            "RTP interarrival jitter per ended call, ms.",
        );
        self.jitter_buffer_delay_ms.render(
            &mut out,
            "earshot_jitter_buffer_delay_ms",
            "Mean jitter-buffer delay per ended call, ms.",
        );
        self.twilio_handshake_seconds.render(
            &mut out,
            "earshot_twilio_handshake_seconds",
            "Twilio webhook to stream start, seconds.",
        );
        let _ = writeln!(
            out,
            "# HELP earshot_agent_fallbacks_total Agent sessions given up, by reason.\n# TYPE earshot_agent_fallbacks_total counter"
        );
        for (reason, n) in FallbackReason::ALL.iter().zip(&self.agent_fallbacks) {
            let _ = writeln!(
                out,
                "earshot_agent_fallbacks_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP earshot_recording_frames_total Caller frames on their way into recordings, by what happened to them (ended calls).\n# TYPE earshot_recording_frames_total counter"
        );
        for (kind, n) in RecordingFrameKind::ALL.iter().zip(&self.recording_frames) {
            let _ = writeln!(
                out,
                "earshot_recording_frames_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP earshot_calls_placed_total Outbound calls placed (INVITE sent).\n# TYPE earshot_calls_placed_total counter\nearshot_calls_placed_total {}",
            self.calls_placed.load(Relaxed)
        );
        self.place_failures.render(
            &mut out,
            "earshot_calls_place_failed_total",
            "Outbound calls that failed before an answer, by reason.",
            "reason",
        );
        self.transfers.render(
            &mut out,
            "earshot_transfers_total",
            "Calls handed to another destination, by method.",
            "method",
        );
        self.transfer_failures.render(
            &mut out,
            "earshot_transfers_failed_total",
            "Transfers that did not happen (the call went on), by reason.",
            "reason",
        );
        self.agent_connect_seconds.render(
            &mut out,
            "earshot_agent_connect_seconds",
            "Agent WebSocket connect time (TCP, TLS, upgrade), seconds.",
        );
        self.agent_response_seconds.render(
            &mut out,
            "earshot_agent_response_seconds",
            "End of the caller's speech to the agent's first audio, per turn, seconds.",
        );
        self.agent_uplink_seconds.render(
            &mut out,
            "earshot_agent_uplink_seconds",
            "A caller frame from its playout tick to its media message written to the agent.",
        );
        self.agent_downlink_seconds.render(
            &mut out,
            "earshot_agent_downlink_seconds",
            "An agent media message from its read to its audio queued for the caller.",
        );
        self.agent_frame_out_seconds.render(
            &mut out,
            "earshot_agent_frame_out_seconds",
            "A tick playing agent audio, from its start to the frame sent to the caller.",
        );
        self.store_commit_seconds.render(
            &mut out,
            "earshot_store_commit_seconds",
            "Store commit duration, seconds.",
        );
        if let Some(audio) = &snapshot.audio {
            let audio_counters = [
                (
                    "earshot_audio_underruns_total",
                    "Gaps: a listened call's ring ran dry.",
                    audio.underruns,
                ),
                (
                    "earshot_audio_overruns_total",
                    "Frames dropped because a call's ring was full.",
                    audio.overruns,
                ),
                (
                    "earshot_audio_xruns_total",
                    "Device underruns reported by the host.",
                    audio.xruns,
                ),
            ];
            plain_counters(&mut out, &audio_counters);
            gauge_header(
                &mut out,
                "earshot_audio_device_running",
                "1 while an output device plays.",
            );
            let _ = writeln!(
                out,
                "earshot_audio_device_running {}",
                u8::from(audio.running)
            );
            summary_ms(
                &mut out,
                "earshot_audio_latency_seconds",
                "Packet arrival to playback on the device, per frame played (from the host's playback timestamps).",
                &audio.latency,
            );
            summary_ms(
                &mut out,
                "earshot_audio_queued_seconds",
                "Packet arrival to the frame handed to the speaker ring (jitter buffer and call tick).",
                &audio.queued,
            );
            gauge_header(
                &mut out,
                "earshot_audio_period_seconds",
                "The device period (callback size) the mixer measured.",
            );
            let _ = writeln!(
                out,
                "earshot_audio_period_seconds {}",
                audio.period_us as f64 / 1e6
            );
            render_capture(&mut out, &audio.capture);
            if let Some(us) = audio.output_latency_us {
                gauge_header(
                    &mut out,
                    "earshot_audio_output_latency_seconds",
                    "The device's share: callback to playback, as the host reports it.",
                );
                let _ = writeln!(
                    out,
                    "earshot_audio_output_latency_seconds {}",
                    us as f64 / 1e6
                );
            }
        }
        gauge_header(
            &mut out,
            "earshot_disk_free_bytes",
            "Free bytes on the recordings file system.",
        );
        let _ = writeln!(
            out,
            "earshot_disk_free_bytes {}",
            self.disk_free_bytes.load(Relaxed)
        );
        gauge_header(
            &mut out,
            "earshot_recording_allowed",
            "1 when new recordings may start (enough free disk).",
        );
        let _ = writeln!(
            out,
            "earshot_recording_allowed {}",
            u8::from(snapshot.recording_allowed)
        );
        gauge_header(
            &mut out,
            "earshot_draining",
            "1 while draining: new calls are refused (SIP 503, Twilio fallback), current ones go on.",
        );
        let _ = writeln!(out, "earshot_draining {}", u8::from(snapshot.draining));
        out
    }
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn per_source(out: &mut String, name: &str, help: &str, values: &PerSource) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for source in [Source::Sip, Source::Twilio] {
        let _ = writeln!(
            out,
            "{name}{{source=\"{}\"}} {}",
            source.as_str(),
            values.get(source).load(Relaxed)
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.5, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum 12.5\nx_count 4\n"), "{out}");
    }

    #[test]
    fn ended_calls_add_their_rtp_counters_and_twilio_hooks_count() {
        let m = Metrics::default();
        let stats = CallStats {
            packets_received: 100,
            packets_lost: 3,
            packets_sent: 99,
            jitter_ms: 4.0,
            recording: crate::call::RecordingFrames {
                reordered: 7,
                duplicates: 2,
                ..Default::default()
            },
            ..CallStats::default()
        };
        m.call_ended(Source::Sip, &stats);
        m.twilio_handshake(0.3);
        m.twilio_fallback();
        let text = m.render(&Snapshot {
            active: vec![(Source::Sip, 2)],
            ..Snapshot::default()
        });
        for line in [
            "earshot_recording_frames_total{kind=\"reordered\"} 7",
            "earshot_recording_frames_total{kind=\"duplicate\"} 2",
            "earshot_recording_frames_total{kind=\"concealed\"} 0",
            "earshot_active_calls{source=\"sip\"} 2",
            "earshot_calls_ended_total{source=\"sip\"} 1",
            "earshot_rtp_packets_received_total 100",
            "earshot_rtp_packets_lost_total 3",
            "earshot_twilio_fallbacks_total 1",
            "earshot_twilio_handshake_seconds_count 1",
            "earshot_call_jitter_ms_bucket{le=\"5\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }
}
