//! The media pipeline every call goes through, whatever its source: G.711 in, the jitter
//! buffer, the speakers (both sides), the recording (left the caller, right earshot), and
//! G.711 out (what the responder said).
//!
//! The call task owns one [`Pipeline`] and drives it: [`Pipeline::receive`] for each packet,
//! [`Pipeline::tick`] every 20 ms. The recording's caller side is written from the arrived
//! stream put back in order ([`super::record_feed`]), not from what playout played; at the end
//! it is drained before the file is finalized, and the jitter buffer's rest goes to the
//! speakers. The recording opens at the answer or the caller's first packet (a placed call's
//! early media, [`Pipeline::start_recording`]): a call that fails before either leaves no file.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::agent::AgentConnector;
use super::event::{CallEvent, CallId, CallInfo};
use super::record_feed::{FeedStats, RecordFeed};
use super::{EventSink, Greeting, LiveState, Registry};
use crate::audio::{AudioService, SpeakerFeed};
use crate::media::frame::{FRAME_SAMPLES, Frame, SILENCE};
use crate::media::g711::Law;
use crate::media::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};
use crate::recording::{RecordingGate, RecordingService};

/// Largest payload decoded from one packet: 60 ms of G.711.
const MAX_SAMPLES: usize = 3 * FRAME_SAMPLES;
/// Numbers the speaker mixer and the recorder know pipelines by, unique in this process.
static NEXT_MEDIA_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
/// The live state is republished every this many ticks (100 ms).
const LIVE_EVERY: u64 = 5;
/// Arrival times remembered, by sequence number modulo this: longer than any playout delay in
/// packets, so a frame played finds its packet's arrival (for the latency measurement).
const ARRIVALS: usize = 64;
/// Most frames the jitter buffer is drained by at the end of a call (2 s, beyond its depth).
const DRAIN_FRAMES: usize = 100;

/// What calls share: the speakers, the recorder, the event sink, the registry, the greeting,
/// the agent bridge.
#[derive(Debug, Clone)]
pub struct Services {
    pub audio: Arc<AudioService>,
    /// `None` when `[recording].enabled` is false.
    pub recordings: Option<Arc<RecordingService>>,
    pub events: EventSink,
    pub registry: Arc<Registry>,
    pub greeting: Greeting,
    /// Whether new calls start on the speakers (`[audio].listen`, reloadable).
    pub listen_default: bool,
    /// False while the disk is below `[recording].min_free_mb`: no recording starts, and
    /// running ones stop (the calls go on).
    pub recording_gate: RecordingGate,
    /// `[agent]`: calls are bridged to it when set, as `routes` decide.
    pub agent: Option<Arc<dyn AgentConnector>>,
    /// `[[route]]`: which calls get the agent (first match; none matching: all of them).
    pub routes: Arc<[crate::config::Route]>,
    /// `[calls].outbound_allow` and `[[calls.dtmf_rule]]`.
    pub transfer: super::TransferPolicy,
}

/// One call's media path.
pub struct Pipeline {
    id: CallId,
    law: Law,
    jitter: JitterBuffer,
    speaker: SpeakerFeed,
    /// The recording and the reorder lane that feeds its caller side, once the call is
    /// answered.
    recording: Option<RecordFeed>,
    /// The recorder and the call's number in it, until [`Pipeline::start_recording`] (at the
    /// answer, or the first audio of a placed call's early media): a call that fails before
    /// either leaves no file, rather than an empty one.
    recorder: Option<(Arc<RecordingService>, u64)>,
    /// The recording's counters, kept once it stopped or finished.
    record_stats: FeedStats,
    events: EventSink,
    gate: RecordingGate,
    live: watch::Sender<LiveState>,
    /// Sum of squares of the caller's samples since the last live update.
    energy: f64,
    ticks: u64,
    /// Sum of the jitter buffer's target delay over all ticks, for the call's mean.
    delay_sum: u64,
    /// When recent packets arrived: `(seq, arrival)` at `seq % ARRIVALS`.
    arrivals: [Option<(u16, Instant)>; ARRIVALS],
    /// The operator talks on this call: its speaker playout is muted, so the box's microphone
    /// does not send the caller their own voice back.
    talking: bool,
}

impl Pipeline {
    /// Starts the call's speaker feed (all allocation happens here, and in
    /// [`Pipeline::start_recording`]).
    pub fn new(services: &Services, info: &CallInfo, live: watch::Sender<LiveState>) -> Self {
        Self::with_jitter(services, info, live, JitterConfig::default())
    }

    /// [`Pipeline::new`] with a jitter buffer of its own settings: a Twilio stream runs over
    /// TCP, where audio arrives late in bursts but is never lost, and wants a deeper floor.
    pub fn with_jitter(
        services: &Services,
        info: &CallInfo,
        live: watch::Sender<LiveState>,
        jitter: JitterConfig,
    ) -> Self {
        let listen = services.listen_default;
        // The speaker mixer and the recorder know calls by a number; each pipeline gets its own.
        let numeric = NEXT_MEDIA_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let speaker = services.audio.add_call(numeric, listen);
        live.send_modify(|l| l.listen = listen);
        Self {
            id: info.id.clone(),
            law: Law::Ulaw,
            jitter: JitterBuffer::new(jitter),
            speaker,
            recording: None,
            recorder: services.recordings.clone().map(|r| (r, numeric)),
            record_stats: FeedStats::default(),
            events: services.events.clone(),
            gate: services.recording_gate.clone(),
            live,
            energy: 0.0,
            ticks: 0,
            delay_sum: 0,
            arrivals: [None; ARRIVALS],
            talking: false,
        }
    }

    /// Opens the call's recording: at the answer or the caller's first packet (early media),
    /// so a call that fails before either records nothing. Only the first call does anything.
    pub fn start_recording(&mut self) {
        let Some((recordings, numeric)) = self.recorder.take() else {
            return;
        };
        if !self.gate.recording_allowed() {
            let _ = self.events.send(CallEvent::RecordingStopped {
                id: self.id.clone(),
                reason: "disk low".into(),
            });
            return;
        }
        self.recording = match recordings.open(numeric, self.id.as_str()) {
            Ok(rec) => {
                let _ = self.events.send(CallEvent::RecordingStarted {
                    id: self.id.clone(),
                    path: rec.path().display().to_string(),
                });
                Some(RecordFeed::new(rec))
            }
            Err(err) => {
                tracing::warn!(call = %self.id, %err, "recording not started");
                let _ = self.events.send(CallEvent::RecordingStopped {
                    id: self.id.clone(),
                    reason: err.to_string(),
                });
                None
            }
        };
    }

    /// Mutes the call's speaker playout while the operator talks on it (echo).
    pub fn set_talking(&mut self, on: bool) {
        self.talking = on;
    }

    pub fn set_law(&mut self, law: Law) {
        self.law = law;
    }

    /// One received packet of G.711 audio.
    pub fn receive(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        marker: bool,
        ssrc: u32,
        payload: &[u8],
    ) {
        let mut pcm = [0i16; MAX_SAMPLES];
        let n = payload.len().min(MAX_SAMPLES);
        if let (Some(src), Some(dst)) = (payload.get(..n), pcm.get_mut(..n)) {
            self.law.decode(src, dst);
            self.jitter.push(now, seq, ts, marker, ssrc, dst);
            // The first audio opens the recording (early media included); after that a no-op.
            self.start_recording();
            if let Some(feed) = self.recording.as_mut() {
                feed.receive(now, ts, ssrc, dst);
            }
            if let Some(slot) = self.arrivals.get_mut(usize::from(seq) % ARRIVALS) {
                *slot = Some((seq, now));
            }
        }
    }

    /// When the caller's next frame falls due in the jitter buffer, for the playout clock
    /// ([`crate::media::playout_clock`]).
    pub fn next_due(&self) -> Option<Instant> {
        self.jitter.next_due()
    }

    /// Every 20 ms: plays one frame of the caller (`heard`, to the speakers and the
    /// recording) and encodes what the responder `said` into `out`, the frame the caller gets.
    /// Returns the mean-square level of the caller's frame (for voice activity).
    pub fn tick(
        &mut self,
        now: Instant,
        said: &Frame,
        heard: &mut Frame,
        out: &mut [u8; FRAME_SAMPLES],
    ) -> f64 {
        *heard = SILENCE;
        let played = self.jitter.pop(now, heard);
        self.law.encode(said, out);
        // What the caller hears is the G.711 of what we said; record and play exactly that.
        let mut sent: Frame = SILENCE;
        self.law.decode(out, &mut sent);
        // Silence too: the call is one continuous stream for the speakers, so a pause in the
        // caller's speech is not an underrun. Received frames carry their packet's arrival.
        let arrival = match played {
            Playout::Played { seq } => self
                .arrivals
                .get(usize::from(seq) % ARRIVALS)
                .copied()
                .flatten()
                .filter(|(at_seq, _)| *at_seq == seq)
                .map(|(_, at)| at),
            Playout::Concealed | Playout::Silence => None,
        };
        // The listener hears both sides.
        let mut both: Frame = SILENCE;
        for ((mix, &a), &b) in both.iter_mut().zip(heard.iter()).zip(sent.iter()) {
            *mix = a.saturating_add(b);
        }
        if self.talking {
            // Muted, still one continuous stream for the mixer.
            both = SILENCE;
        }
        match arrival {
            Some(at) => self.speaker.push_from(&both, at, now),
            None => self.speaker.push(&both),
        };
        let heard: &Frame = heard;
        self.record(now, &sent);
        let energy = heard
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>();
        self.energy += energy;
        self.ticks += 1;
        self.delay_sum += u64::from(self.jitter.target_delay_ms());
        if self.ticks.is_multiple_of(LIVE_EVERY) {
            let rms = (self.energy / (LIVE_EVERY as f64 * FRAME_SAMPLES as f64)).sqrt();
            let dbfs = if rms < 1.0 {
                -100.0
            } else {
                (20.0 * (rms / 32768.0).log10()) as f32
            };
            self.energy = 0.0;
            self.live.send_modify(|l| l.level_dbfs = dbfs);
        }
        energy / FRAME_SAMPLES as f64
    }

    /// The law the caller's leg speaks.
    pub fn law(&self) -> Law {
        self.law
    }

    fn record(&mut self, now: Instant, said: &Frame) {
        let Some(feed) = self.recording.as_mut() else {
            return;
        };
        let reason = if !self.gate.recording_allowed() {
            "disk low"
        } else {
            feed.tick(now, said);
            let recording = feed.recording();
            if !recording.is_stopped() {
                return;
            }
            recording.stop_label().unwrap_or("write failed")
        };
        if let Some(feed) = self.recording.take() {
            self.record_stats = feed.finish();
        }
        let _ = self.events.send(CallEvent::RecordingStopped {
            id: self.id.clone(),
            reason: reason.into(),
        });
    }

    /// Switches playout on the speakers.
    pub fn set_listen(&mut self, on: bool) {
        if self.speaker.listen() == on {
            return;
        }
        self.speaker.set_listen(on);
        self.live.send_modify(|l| l.listen = on);
        let _ = self.events.send(CallEvent::Listen {
            id: self.id.clone(),
            on,
        });
    }

    pub fn jitter_stats(&self) -> &JitterStats {
        self.jitter.stats()
    }

    /// Mean jitter-buffer target delay so far, in ms.
    pub fn mean_delay_ms(&self) -> u32 {
        (self.delay_sum / self.ticks.max(1)) as u32
    }

    /// The recording lane's counters (late, duplicate and concealed caller audio).
    pub fn record_stats(&self) -> FeedStats {
        self.recording
            .as_ref()
            .map_or(self.record_stats, RecordFeed::stats)
    }

    /// Ends the call's media: the recording gets every caller frame that arrived (the lane is
    /// drained) before its file is finalized by the writer; the speakers get what the jitter
    /// buffer still holds; then the speaker feed stops. Returns the recording's counters.
    pub fn finish(mut self) -> FeedStats {
        if let Some(feed) = self.recording.take() {
            self.record_stats = feed.finish();
        }
        self.drain_to_speaker();
        self.speaker.remove();
        self.record_stats
    }

    /// Plays out what the jitter buffer holds, each frame at its due time (so none is taken
    /// for late), into the speaker ring; never blocks (a full ring drops, counted there).
    fn drain_to_speaker(&mut self) {
        let mut at = self.jitter.next_due();
        let mut frame = SILENCE;
        for _ in 0..DRAIN_FRAMES {
            if self.jitter.is_drained() {
                break;
            }
            let Some(due) = self.jitter.next_due().or(at) else {
                break;
            };
            let _ = self.jitter.pop(due, &mut frame);
            if self.talking {
                frame = SILENCE;
            }
            self.speaker.push(&frame);
            at = Some(due + crate::media::frame::FRAME_DURATION);
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("id", &self.id)
            .field("law", &self.law)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::call::event::{CallId, Source};
    use crate::config::{AudioConfig, AudioOutput};
    use std::time::{Duration, SystemTime};

    fn info(n: u32) -> CallInfo {
        CallInfo {
            id: CallId::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                n,
            ),
            source: Source::Sip,
            external_id: format!("call-{n}"),
            caller: "1".into(),
            callee: "2".into(),
            started_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// Calls' services with a recorder writing into `dir`: the services, the recorder, the
    /// calls' events, and the recorder's (kept open for the test).
    fn recording_services(
        dir: &std::path::Path,
    ) -> (
        Services,
        Arc<RecordingService>,
        crate::call::event_sink::EventStream,
        tokio::sync::mpsc::UnboundedReceiver<crate::recording::RecordingEvent>,
    ) {
        let (events, rx) = crate::call::event_sink::channel(8, Arc::default());
        let (rec_events, rec_rx) = tokio::sync::mpsc::unbounded_channel();
        let recordings = Arc::new(RecordingService::start(dir.to_owned(), rec_events).unwrap());
        let services = Services {
            audio: Arc::new(AudioService::start(&AudioConfig {
                output: AudioOutput::None,
                listen: false,
                ..AudioConfig::default()
            })),
            recordings: Some(recordings.clone()),
            events,
            registry: Arc::new(Registry::default()),
            greeting: Greeting::default(),
            listen_default: false,
            recording_gate: RecordingGate::new(),
            agent: None,
            routes: Arc::from([]),
            transfer: crate::call::TransferPolicy::default(),
        };
        (services, recordings, rx, rec_rx)
    }

    #[test]
    fn a_call_failing_before_answer_or_audio_leaves_no_recording() {
        let dir = std::env::temp_dir().join(format!("earshot-unanswered-{}", std::process::id()));
        let (services, recordings, mut rx, _rec_rx) = recording_services(&dir);
        let live = || watch::channel(LiveState::default()).0;
        let (silent, early) = (info(3), info(4));
        let t0 = Instant::now();
        let (mut out, mut heard) = ([0u8; FRAME_SAMPLES], SILENCE);
        // A 183 with SDP and no audio, then a failure: the media path ticked, nothing came.
        let mut p = Pipeline::new(&services, &silent, live());
        for i in 0..10u64 {
            p.tick(
                t0 + Duration::from_millis(20 * i),
                &SILENCE,
                &mut heard,
                &mut out,
            );
        }
        p.finish();
        // Early media that carried audio is recorded, answered or not: the box played it.
        let mut p = Pipeline::new(&services, &early, live());
        for i in 0..10u64 {
            let at = t0 + Duration::from_millis(20 * i);
            p.receive(at, i as u16, (160 * i) as u32, i == 0, 7, &[0x55; 160]);
            p.tick(at, &SILENCE, &mut heard, &mut out);
        }
        p.finish();
        drop(services);
        Arc::try_unwrap(recordings).unwrap().shutdown();
        assert!(
            !dir.join(format!("{}.wav", silent.id)).exists(),
            "no empty WAV"
        );
        assert!(dir.join(format!("{}.wav", early.id)).exists());
        let mut started = Vec::new();
        while let Some(event) = rx.try_recv() {
            if let CallEvent::RecordingStarted { id, .. } = event {
                started.push(id);
            }
        }
        assert_eq!(started.as_slice(), std::slice::from_ref(&early.id));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn one_call_ending_leaves_the_other_calls_recording_running() {
        let dir = std::env::temp_dir().join(format!("earshot-pipeline-{}", std::process::id()));
        let (services, recordings, _rx, _rec_rx) = recording_services(&dir);
        let (a_info, b_info) = (info(1), info(2));
        let mut a = Pipeline::new(&services, &a_info, watch::channel(LiveState::default()).0);
        let mut b = Pipeline::new(&services, &b_info, watch::channel(LiveState::default()).0);
        a.start_recording();
        b.start_recording();
        let t0 = Instant::now();
        let mut out = [0u8; FRAME_SAMPLES];
        let mut heard = SILENCE;
        // Well within the recorder's 2 s ring: the test ticks faster than real time.
        for i in 0..25u64 {
            a.tick(
                t0 + Duration::from_millis(20 * i),
                &SILENCE,
                &mut heard,
                &mut out,
            );
            b.tick(
                t0 + Duration::from_millis(20 * i),
                &SILENCE,
                &mut heard,
                &mut out,
            );
        }
        b.finish();
        for i in 25..75u64 {
            a.tick(
                t0 + Duration::from_millis(20 * i),
                &SILENCE,
                &mut heard,
                &mut out,
            );
        }
        a.finish();
        drop(services);
        Arc::try_unwrap(recordings).unwrap().shutdown();
        let frames = |info: &CallInfo| {
            hound::WavReader::open(dir.join(format!("{}.wav", info.id)))
                .unwrap()
                .duration()
        };
        assert_eq!(frames(&b_info), 25 * 160);
        assert_eq!(
            frames(&a_info),
            75 * 160,
            "the first call's recording was cut when the other ended"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
