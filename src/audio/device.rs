//! The speaker driver: opens the cpal output device on its own thread and runs the [`Mixer`]
//! in its callback; hands out a [`SpeakerFeed`] per call.
//!
//! The device thread owns the cpal stream (streams are `!Send` on some hosts) and supervises
//! it. A missing or failing device stops nothing: the thread logs once, keeps the mixer
//! consuming every call's ring at real-time pace (so call tasks never find them full), and
//! retries every [`RETRY_INTERVAL`]. When a stream is torn down, its callback closure hands the
//! mixer back to the thread through a channel as it is dropped, so calls survive a device
//! change. The same thread drops inputs the mixer retired, keeping frees out of the callback.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{OutputCallbackInfo, SampleFormat, StreamConfig, SupportedStreamConfig};
use rtrb::{Consumer, Producer, RingBuffer};

use super::microphone::{CaptureStats, Microphone};
use super::mixer::{self, InputFeed, Mixer, MixerControl, MixerCounters};
use crate::clock;
use crate::config::{AudioConfig, AudioOutput};
use crate::media::frame::{Frame, SAMPLE_RATE};

/// Most calls mixed at once; calls beyond it get a silent feed (and a warning).
pub const MAX_FEEDS: usize = 128;

/// Wait between attempts to open a missing or failed device.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// How often the device thread wakes to collect retired inputs and check the stream.
const SUPERVISE_PERIOD: Duration = Duration::from_millis(100);

/// How often the mixer runs while no device plays.
const DRAIN_PERIOD: Duration = Duration::from_millis(20);

/// A running stream whose callback has not run for this long is considered dead (and its
/// calls' rings, one second deep, have not overflowed yet).
const STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// A new stream must call back in this many consecutive windows before it gets the mixer.
const STEADY_WINDOWS: u32 = 3;

/// Length of one such window; longer than any sane callback period.
const STEADY_WINDOW: Duration = Duration::from_millis(100);

/// A new stream that does not call back steadily within this time is given up on.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for a torn-down stream to hand the mixer back.
const MIXER_RETURN_TIMEOUT: Duration = Duration::from_secs(2);

/// Output rate the mixer assumes while no device is open.
const IDLE_RATE: u32 = 48_000;

/// Samples per pass when converting the mix for integer devices or draining without a device.
const SCRATCH_SAMPLES: usize = 8192;

/// Sentinel for "no latency measured yet".
const LATENCY_UNKNOWN: u64 = u64::MAX;

/// One output device, as `earshot devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Human-readable name; `[audio] output` accepts it.
    pub name: String,
    /// The host's identifier (for ALSA the PCM name, like `default` or `hw:CARD=0,DEV=0`);
    /// `[audio] output` accepts it too.
    pub id: String,
    /// Whether this is the host's default output.
    pub is_default: bool,
    /// Supported configurations; empty when the device could not be queried (e.g. busy).
    pub formats: Vec<OutputFormat>,
}

/// One supported output configuration range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFormat {
    /// Channel count.
    pub channels: u16,
    /// Lowest sample rate, Hz.
    pub min_rate: u32,
    /// Highest sample rate, Hz.
    pub max_rate: u32,
    /// Sample format name (`f32`, `i16`, ...).
    pub sample_format: String,
}

impl DeviceInfo {
    /// A one-line summary of channels and rates, e.g. `1-2 ch, 8000-192000 Hz`.
    pub fn summary(&self) -> String {
        let (Some(min_ch), Some(max_ch)) = (
            self.formats.iter().map(|f| f.channels).min(),
            self.formats.iter().map(|f| f.channels).max(),
        ) else {
            return "formats unknown".to_owned();
        };
        let min_rate = self.formats.iter().map(|f| f.min_rate).min().unwrap_or(0);
        let max_rate = self.formats.iter().map(|f| f.max_rate).max().unwrap_or(0);
        let channels = if min_ch == max_ch {
            format!("{min_ch} ch")
        } else {
            format!("{min_ch}-{max_ch} ch")
        };
        if min_rate == max_rate {
            format!("{channels}, {min_rate} Hz")
        } else {
            format!("{channels}, {min_rate}-{max_rate} Hz")
        }
    }
}

/// Lists the default host's output devices. Devices that cannot be queried are listed with no
/// formats; a host that cannot enumerate at all gives an empty list.
pub fn list_devices() -> Vec<DeviceInfo> {
    let host = cpal::default_host();
    let default_id = host
        .default_output_device()
        .and_then(|d| d.id().ok())
        .map(|id| id.id().to_owned());
    let Ok(devices) = host.output_devices() else {
        return Vec::new();
    };
    devices
        .map(|device| {
            let (id, name) = id_and_name(&device);
            let formats = device
                .supported_output_configs()
                .map(|ranges| {
                    ranges
                        .map(|r| OutputFormat {
                            channels: r.channels(),
                            min_rate: r.min_sample_rate(),
                            max_rate: r.max_sample_rate(),
                            sample_format: r.sample_format().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            DeviceInfo {
                is_default: default_id.as_deref() == Some(id.as_str()),
                name,
                id,
                formats,
            }
        })
        .collect()
}

/// A snapshot of playout health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStats {
    /// Gaps: a listened call's ring ran dry mid-callback.
    pub underruns: u64,
    /// Frames a call task could not push because its ring was full.
    pub overruns: u64,
    /// Times a call's ring was too far ahead and its excess was discarded.
    pub skips: u64,
    /// Device-level underruns reported by the host (the callback was late).
    pub xruns: u64,
    /// The open device's name, if one is open.
    pub device: Option<String>,
    /// Whether a device stream is playing.
    pub running: bool,
    /// The open stream's rate and channel count.
    pub sample_rate: Option<u32>,
    /// Channels of the open stream.
    pub channels: Option<u16>,
    /// Latest callback-to-playback delay reported by the host, µs: the device's share of the
    /// playout latency.
    pub output_latency_us: Option<u64>,
    /// Packet arrival → playback of every frame played on the speakers.
    pub latency: mixer::LatencySnapshot,
    /// Its first part: packet arrival → the frame handed to the speaker ring.
    pub queued: mixer::LatencySnapshot,
    /// The device period the mixer measured, µs (0 before the first callback).
    pub period_us: u64,
    /// Calls with a feed.
    pub feeds: usize,
    /// Device callbacks so far (stops growing when the device stalls).
    pub callbacks: u64,
    /// The last device error, while no device plays.
    pub last_error: Option<String>,
    /// The microphone's health (talk-back).
    pub capture: CaptureStats,
}

/// Why the output device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The host has no default output device.
    #[error("no default output device")]
    NoDefault,
    /// No output device has this name or id.
    #[error("no output device named {0:?}")]
    NotFound(String),
    /// The device offers neither f32 nor i16 output.
    #[error("device offers neither f32 nor i16 output")]
    NoUsableFormat,
    /// cpal failed.
    #[error("{0}")]
    Cpal(#[from] cpal::Error),
}

/// What the device thread publishes about the device.
#[derive(Debug, Default)]
struct DeviceState {
    name: Option<String>,
    sample_rate: Option<u32>,
    channels: Option<u16>,
    last_error: Option<String>,
}

/// State shared between the service, its feeds, the device thread and the callback.
#[derive(Debug)]
struct Shared {
    /// The control half of the mixer. Locked (briefly, never by the callback) because many
    /// call tasks add and remove feeds and the device thread collects retired inputs, while
    /// the command ring has a single producer.
    control: Mutex<MixerControl>,
    /// Counters of the current mixer; replaced only if a mixer is lost with a stream.
    counters: Mutex<Arc<MixerCounters>>,
    /// Device description for [`AudioService::stats`]; written by the device thread only,
    /// locked because it holds strings.
    device: Mutex<DeviceState>,
    /// Whether a stream is playing.
    running: AtomicBool,
    /// Host-reported underruns.
    xruns: AtomicU64,
    /// Latency and liveness reported by the callback.
    probe: Arc<CallbackProbe>,
    /// Live feeds, to enforce [`MAX_FEEDS`].
    feeds: AtomicUsize,
}

/// Recovers a guard from a poisoned lock: every value behind these locks stays consistent
/// even if a holder panicked (single pushes, plain assignments).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Live playout of calls on the box's speaker.
#[derive(Debug)]
pub struct AudioService {
    /// `None` when `[audio] output = "none"`: feeds are detached and nothing plays.
    shared: Option<Arc<Shared>>,
    /// Dropping it tells the device thread to stop.
    stop: Option<mpsc::Sender<()>>,
    /// The device thread.
    thread: Option<JoinHandle<()>>,
    /// Whether new calls start audible (`[audio] listen`).
    default_listen: bool,
    /// The operator's microphone (`[audio] input`), for talk-back.
    microphone: Microphone,
}

impl AudioService {
    /// Starts playout as `[audio]` says. Never fails: a missing device is retried in the
    /// background.
    pub fn start(config: &AudioConfig) -> AudioService {
        let default_listen = config.listen;
        let period_ms = config.period_ms;
        let microphone = Microphone::start(&config.input, config.period_ms);
        let target = match &config.output {
            AudioOutput::None => {
                return AudioService {
                    shared: None,
                    stop: None,
                    thread: None,
                    default_listen,
                    microphone,
                };
            }
            AudioOutput::Default => Target::Default,
            AudioOutput::Device(name) => Target::Named(name.clone()),
        };
        let (mixer, control) = mixer::channel(IDLE_RATE, MAX_FEEDS);
        let shared = Arc::new(Shared {
            counters: Mutex::new(Arc::clone(control.counters())),
            control: Mutex::new(control),
            device: Mutex::new(DeviceState::default()),
            running: AtomicBool::new(false),
            xruns: AtomicU64::new(0),
            probe: Arc::default(),
            feeds: AtomicUsize::new(0),
        });
        let (stop, stopped) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("earshot-audio".to_owned())
            .spawn(move || {
                let thread = DeviceThread {
                    target,
                    period_ms,
                    shared: thread_shared,
                    stopped,
                    last_logged: None,
                };
                thread.run(mixer);
            });
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::error!(error = %err, "cannot start the audio thread; calls will not play");
                None
            }
        };
        AudioService {
            shared: thread.as_ref().map(|_| shared),
            stop: Some(stop),
            thread,
            default_listen,
            microphone,
        }
    }

    /// The operator's microphone.
    pub fn microphone(&self) -> &Microphone {
        &self.microphone
    }

    /// Whether new calls should start audible, from `[audio] listen`.
    pub fn default_listen(&self) -> bool {
        self.default_listen
    }

    /// A feed for call `call_id`; the call task pushes its received audio into it every 20 ms.
    /// Dropping the feed removes the call from the mix.
    pub fn add_call(&self, call_id: u64, listen: bool) -> SpeakerFeed {
        let mut speaker = SpeakerFeed {
            id: call_id,
            listen_when_detached: AtomicBool::new(listen),
            link: None,
        };
        let Some(shared) = &self.shared else {
            return speaker;
        };
        if shared.feeds.fetch_add(1, Relaxed) >= MAX_FEEDS {
            shared.feeds.fetch_sub(1, Relaxed);
            tracing::warn!(
                call_id,
                max = MAX_FEEDS,
                "too many calls to mix; this one is not played"
            );
            return speaker;
        }
        match lock(&shared.control).add(call_id, listen) {
            Ok(feed) => {
                speaker.link = Some(FeedLink {
                    feed,
                    shared: Arc::clone(shared),
                });
                speaker
            }
            Err(err) => {
                shared.feeds.fetch_sub(1, Relaxed);
                tracing::warn!(call_id, error = %err, "call is not played");
                speaker
            }
        }
    }

    /// A snapshot of playout health.
    pub fn stats(&self) -> AudioStats {
        let Some(shared) = &self.shared else {
            return AudioStats {
                underruns: 0,
                overruns: 0,
                skips: 0,
                xruns: 0,
                device: None,
                running: false,
                sample_rate: None,
                channels: None,
                output_latency_us: None,
                latency: mixer::LatencySnapshot::default(),
                queued: mixer::LatencySnapshot::default(),
                period_us: 0,
                feeds: 0,
                callbacks: 0,
                last_error: None,
                capture: self.microphone.stats(),
            };
        };
        let counters = Arc::clone(&lock(&shared.counters));
        let device = lock(&shared.device);
        let latency = shared.probe.latency_us.load(Relaxed);
        AudioStats {
            underruns: counters.underruns.load(Relaxed),
            overruns: counters.overruns.load(Relaxed),
            skips: counters.skips.load(Relaxed),
            xruns: shared.xruns.load(Relaxed),
            device: device.name.clone(),
            running: shared.running.load(Relaxed),
            sample_rate: device.sample_rate,
            channels: device.channels,
            output_latency_us: (latency != LATENCY_UNKNOWN).then_some(latency),
            latency: counters.latency.snapshot(),
            queued: counters.queued.snapshot(),
            period_us: counters.period.load(Relaxed) * 1_000_000 / u64::from(SAMPLE_RATE),
            feeds: shared.feeds.load(Relaxed),
            callbacks: shared.probe.callbacks.load(Relaxed),
            last_error: device.last_error.clone(),
            capture: self.microphone.stats(),
        }
    }
}

impl Drop for AudioService {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the audio thread panicked");
        }
    }
}

/// One call's connection to the speaker.
#[derive(Debug)]
pub struct SpeakerFeed {
    /// The call id given to [`AudioService::add_call`].
    id: u64,
    /// The listen flag of a detached feed (no device configured, or too many calls).
    listen_when_detached: AtomicBool,
    /// The mixer input, unless detached.
    link: Option<FeedLink>,
}

/// A feed attached to the mixer.
#[derive(Debug)]
struct FeedLink {
    feed: InputFeed,
    shared: Arc<Shared>,
}

impl SpeakerFeed {
    /// Queues one 20 ms frame for playout, without blocking. Returns false (and counts an
    /// overrun) when the ring is full; a detached feed discards frames and returns true.
    pub fn push(&mut self, frame: &Frame) -> bool {
        match &mut self.link {
            Some(link) => link.feed.push(frame),
            None => true,
        }
    }

    /// [`SpeakerFeed::push`] at `now` for a frame decoded from a packet that arrived at
    /// `arrival`; its arrival → playback latency is measured.
    pub fn push_from(&mut self, frame: &Frame, arrival: Instant, now: Instant) -> bool {
        match &mut self.link {
            Some(link) => link.feed.push_from(frame, arrival, now),
            None => true,
        }
    }

    /// Makes this call audible or silent.
    pub fn set_listen(&self, on: bool) {
        match &self.link {
            Some(link) => link.feed.set_listen(on),
            None => self.listen_when_detached.store(on, Relaxed),
        }
    }

    /// Whether this call is audible.
    pub fn listen(&self) -> bool {
        match &self.link {
            Some(link) => link.feed.listen(),
            None => self.listen_when_detached.load(Relaxed),
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether frames pushed here reach the mixer.
    pub fn is_attached(&self) -> bool {
        self.link.is_some()
    }

    /// Ends the call's feed (the same as dropping it): what it pushed still plays, then the
    /// mixer retires the input.
    pub fn remove(self) {}
}

impl Drop for SpeakerFeed {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            // No remove command: the mixer retires the input once it sees the ring abandoned
            // and drained, so the call's last frames (the jitter buffer's rest) are heard.
            link.shared.feeds.fetch_sub(1, Relaxed);
        }
    }
}

/// Which device to open.
#[derive(Debug, Clone)]
enum Target {
    Default,
    Named(String),
}

/// Why supervision of a running stream ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Stop,
    Failed(String),
}

/// What the callback reports to the device thread, through atomics only.
#[derive(Debug)]
pub struct CallbackProbe {
    /// Latest callback-to-playback delay in µs; `u64::MAX` until measured.
    pub latency_us: AtomicU64,
    /// Incremented by every callback: the device thread's liveness check.
    pub callbacks: AtomicU64,
}

impl Default for CallbackProbe {
    fn default() -> Self {
        CallbackProbe {
            latency_us: AtomicU64::new(LATENCY_UNKNOWN),
            callbacks: AtomicU64::new(0),
        }
    }
}

/// The body of the cpal output callback: runs the mixer into the device's buffer.
///
/// The stream is built and started without the mixer (the callback plays silence meanwhile,
/// while a drainer thread keeps the call rings moving); the mixer then arrives through a
/// one-slot ring and is picked up at the next callback. Dropping the callback (when cpal drops
/// the stream's closure) sends the mixer home to the device thread, so the calls it holds
/// survive the stream.
#[derive(Debug)]
pub struct Callback {
    /// The mixer, once handed over.
    mixer: Option<Mixer>,
    /// Where the mixer arrives.
    incoming: Consumer<Mixer>,
    /// Where the mixer goes when the callback is dropped.
    home: mpsc::Sender<Mixer>,
    /// Interleaved channels of the device.
    channels: usize,
    /// Latency and liveness, for the device thread.
    probe: Arc<CallbackProbe>,
    /// Conversion buffer for integer devices, allocated here, before the stream starts.
    scratch: Vec<f32>,
}

impl Callback {
    /// A callback for a device with `channels` interleaved channels, and the producer through
    /// which its mixer is handed over.
    pub fn new(
        channels: usize,
        home: mpsc::Sender<Mixer>,
        probe: Arc<CallbackProbe>,
    ) -> (Callback, Producer<Mixer>) {
        let channels = channels.max(1);
        let (handoff, incoming) = RingBuffer::new(1);
        let callback = Callback {
            mixer: None,
            incoming,
            home,
            channels,
            probe,
            scratch: vec![0.0; SCRATCH_SAMPLES.max(channels)],
        };
        (callback, handoff)
    }

    /// The callback for f32 devices.
    pub fn render_f32(&mut self, out: &mut [f32], info: &OutputCallbackInfo) {
        let playback = self.note(info);
        self.pick_up_mixer();
        let Some(mixer) = &mut self.mixer else {
            out.fill(0.0);
            return;
        };
        let n = mixer.fill_at(out, self.channels, playback);
        out[n * self.channels..].fill(0.0);
    }

    /// The callback for i16 devices: mixes in f32 blocks through the scratch buffer.
    pub fn render_i16(&mut self, out: &mut [i16], info: &OutputCallbackInfo) {
        let playback = self.note(info);
        self.pick_up_mixer();
        let Some(mixer) = &mut self.mixer else {
            out.fill(0);
            return;
        };
        let block_len = self.scratch.len() / self.channels * self.channels;
        let rate = u64::from(mixer.output_rate().max(1));
        for (i, block) in out.chunks_mut(block_len).enumerate() {
            let scratch = &mut self.scratch[..block.len()];
            let frames_before = (i * block_len / self.channels) as u64;
            let at =
                playback.map(|p| p + Duration::from_nanos(frames_before * 1_000_000_000 / rate));
            let n = mixer.fill_at(scratch, self.channels, at);
            scratch[n * self.channels..].fill(0.0);
            for (o, &s) in block.iter_mut().zip(scratch.iter()) {
                // Saturating float-to-int cast; the mix is already within ±1.
                *o = (s * 32767.0) as i16;
            }
        }
    }

    /// Takes the mixer from the handoff ring if it has just arrived.
    fn pick_up_mixer(&mut self) {
        if self.mixer.is_none() {
            self.mixer = self.incoming.pop().ok();
        }
    }

    /// Records the host's callback-to-playback delay and that the callback ran; returns when
    /// the buffer's first frame plays, on earshot's monotonic clock (a vDSO read: no system
    /// call, lock or allocation).
    fn note(&self, info: &OutputCallbackInfo) -> Option<Instant> {
        let ts = info.timestamp();
        let ahead = ts.playback.duration_since(ts.callback);
        self.probe.latency_us.store(
            u64::try_from(ahead.as_micros()).unwrap_or(LATENCY_UNKNOWN - 1),
            Relaxed,
        );
        self.probe.callbacks.fetch_add(1, Relaxed);
        clock::now().checked_add(ahead)
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(mixer) = self.mixer.take().or_else(|| self.incoming.pop().ok()) {
            // The device thread may be gone at shutdown; the mixer is dropped here then.
            let _ = self.home.send(mixer);
        }
    }
}

/// Keeps the call rings draining at real-time pace on its own thread while no stream holds
/// the mixer (no device, or one being opened, which can take seconds).
struct Drainer {
    /// Dropping or signalling it stops the thread.
    stop: mpsc::Sender<()>,
    /// Returns the mixer when joined.
    thread: JoinHandle<Mixer>,
}

impl Drainer {
    /// Starts draining `mixer`; if no thread can be started, gives the mixer back.
    fn start(mut mixer: Mixer, shared: &Arc<Shared>) -> Result<Drainer, Mixer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let shared_for_thread = Arc::clone(shared);
        let (give, take) = mpsc::channel::<Mixer>();
        // The mixer moves in through a channel so it can be recovered if the spawn fails.
        let spawned = std::thread::Builder::new()
            .name("earshot-audio-drain".to_owned())
            .spawn(move || {
                let mut mixer = take
                    .recv()
                    .unwrap_or_else(|_| mixer::channel(IDLE_RATE, 1).0);
                drain(&mut mixer, &shared_for_thread, &stopped);
                mixer
            });
        match spawned {
            Ok(thread) => match give.send(mixer) {
                Ok(()) => Ok(Drainer { stop, thread }),
                Err(mpsc::SendError(mixer)) => Err(mixer),
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot start the audio drain thread");
                mixer.set_output_rate(IDLE_RATE);
                Err(mixer)
            }
        }
    }

    /// Stops draining and returns the mixer (a fresh one if the thread panicked).
    fn finish(self, device: &DeviceThread) -> Mixer {
        drop(self.stop);
        match self.thread.join() {
            Ok(mixer) => mixer,
            Err(_) => {
                tracing::error!("the audio drain thread panicked; calls in progress go silent");
                device.replace_mixer()
            }
        }
    }
}

/// Runs `mixer` into a scratch buffer at real-time pace until `stopped` fires or disconnects,
/// collecting retired inputs as it goes.
fn drain(mixer: &mut Mixer, shared: &Shared, stopped: &mpsc::Receiver<()>) {
    mixer.set_output_rate(IDLE_RATE);
    let mut scratch = vec![0.0f32; SCRATCH_SAMPLES];
    let mut last: Instant = clock::now();
    let mut owed = 0.0f64;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(DRAIN_PERIOD) {
        let now = clock::now();
        owed += now.duration_since(last).as_secs_f64() * f64::from(IDLE_RATE);
        last = now;
        while owed >= 1.0 {
            let n = (owed as usize).min(scratch.len());
            mixer.fill(&mut scratch[..n], 1);
            owed -= n as f64;
        }
        lock(&shared.control).collect_retired();
    }
}

/// The device thread's state: it opens, holds and supervises the stream.
struct DeviceThread {
    target: Target,
    /// `[audio].period_ms`.
    period_ms: u32,
    shared: Arc<Shared>,
    stopped: mpsc::Receiver<()>,
    /// The last error logged, so a device that keeps failing the same way is logged once.
    last_logged: Option<String>,
}

/// What [`DeviceThread::start_stream`] returns: the stream, the mixer's way in and home,
/// cpal's errors, and the buffer size asked for.
type StartedStream = (
    cpal::Stream,
    Producer<Mixer>,
    mpsc::Receiver<Mixer>,
    Consumer<cpal::Error>,
    cpal::BufferSize,
);

/// A playing stream and the ends of its rings.
struct Open {
    stream: cpal::Stream,
    /// Hands the mixer to the callback.
    handoff: Producer<Mixer>,
    /// Where the callback sends the mixer back when dropped.
    home: mpsc::Receiver<Mixer>,
    /// Errors reported by cpal's error callback.
    errors: Consumer<cpal::Error>,
    /// The stream's rate.
    rate: u32,
}

impl DeviceThread {
    fn run(mut self, mut mixer: Mixer) {
        loop {
            // Drain while (re)opening: opening can take seconds and retries go on for as long
            // as the device is missing.
            let drainer = Drainer::start(mixer, &self.shared);
            let opened = loop {
                let outcome = match self.open() {
                    Ok(open) => self.await_steady_callbacks().map(|()| open),
                    Err(err) => Err(Ended::Failed(err.to_string())),
                };
                match outcome {
                    Ok(open) => break Some(open),
                    Err(Ended::Stop) => break None,
                    Err(Ended::Failed(reason)) => self.report_failure(reason),
                }
                if self.wait(RETRY_INTERVAL) {
                    break None;
                }
            };
            mixer = match drainer {
                Ok(drainer) => drainer.finish(&self),
                Err(mixer) => mixer,
            };
            let Some(open) = opened else { return };
            let (ended, back) = self.play(open, mixer);
            mixer = back;
            match ended {
                Ended::Stop => return,
                Ended::Failed(reason) => self.report_failure(reason),
            }
        }
    }

    /// Hands `mixer` to the playing stream and supervises it; returns why it ended and the
    /// mixer, recovered from the stream.
    fn play(&mut self, mut open: Open, mut mixer: Mixer) -> (Ended, Mixer) {
        mixer.set_output_rate(open.rate);
        if open.handoff.is_abandoned() {
            // The callback is already gone: keep the mixer.
            self.shared.running.store(false, Relaxed);
            return (Ended::Failed("the audio stream ended".to_owned()), mixer);
        }
        if let Err(rtrb::PushError::Full(mixer)) = open.handoff.push(mixer) {
            self.shared.running.store(false, Relaxed);
            return (
                Ended::Failed("the audio stream refused the mixer".to_owned()),
                mixer,
            );
        }
        let ended = self.supervise(&mut open.errors);
        drop(open.stream);
        drop(open.handoff);
        self.shared.running.store(false, Relaxed);
        (ended, self.recover_mixer(&open.home))
    }

    fn report_failure(&mut self, reason: String) {
        if self.last_logged.as_deref() != Some(reason.as_str()) {
            tracing::warn!(
                error = %reason,
                retry_secs = RETRY_INTERVAL.as_secs(),
                "audio output unavailable; calls are not played until it comes back"
            );
        }
        let mut device = lock(&self.shared.device);
        device.name = None;
        device.sample_rate = None;
        device.channels = None;
        device.last_error = Some(reason.clone());
        drop(device);
        self.last_logged = Some(reason);
    }

    /// Opens the device and starts a stream whose callback waits for the mixer.
    fn open(&mut self) -> Result<Open, OpenError> {
        let host = cpal::default_host();
        let device = match &self.target {
            Target::Default => host.default_output_device().ok_or(OpenError::NoDefault)?,
            Target::Named(name) => host
                .output_devices()?
                .find(|d| device_matches(d, name))
                .ok_or_else(|| OpenError::NotFound(name.clone()))?,
        };
        let name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or_else(|_| device.to_string());
        let supported = choose_config(&device)?;
        let rate = supported.sample_rate();
        let period = period_frames(&supported, self.period_ms);
        // Ask for the configured period; a host that refuses it gets its own default.
        let (stream, handoff, home, errors, buffer) = match period
            .map(|frames| self.start_stream(&device, &supported, cpal::BufferSize::Fixed(frames)))
        {
            Some(Ok(started)) => started,
            Some(Err(err)) => {
                tracing::debug!(%err, period, "device refused the period; using its default");
                self.start_stream(&device, &supported, cpal::BufferSize::Default)?
            }
            None => self.start_stream(&device, &supported, cpal::BufferSize::Default)?,
        };
        let channels = usize::from(supported.channels().max(1));
        let config = StreamConfig {
            channels: supported.channels(),
            sample_rate: rate,
            buffer_size: buffer,
        };
        tracing::info!(
            device = %name,
            rate = config.sample_rate,
            channels,
            format = %supported.sample_format(),
            period = ?config.buffer_size,
            "audio output playing"
        );
        let mut device = lock(&self.shared.device);
        device.name = Some(name);
        device.sample_rate = Some(config.sample_rate);
        device.channels = Some(config.channels);
        device.last_error = None;
        drop(device);
        self.shared.running.store(true, Relaxed);
        self.last_logged = None;
        Ok(Open {
            stream,
            handoff,
            home,
            errors,
            rate: config.sample_rate,
        })
    }

    /// Builds and starts a stream on `device` whose callback waits for the mixer. Returns the
    /// stream, the ends of its rings and the buffer size it was built with.
    fn start_stream(
        &self,
        device: &cpal::Device,
        supported: &SupportedStreamConfig,
        buffer_size: cpal::BufferSize,
    ) -> Result<StartedStream, OpenError> {
        let config = StreamConfig {
            channels: supported.channels(),
            sample_rate: supported.sample_rate(),
            buffer_size,
        };
        let channels = usize::from(config.channels.max(1));
        let (home_tx, home) = mpsc::channel();
        let (mut error_tx, errors) = RingBuffer::new(16);
        let shared = Arc::clone(&self.shared);
        let on_error = move |err: cpal::Error| {
            if err.kind() == cpal::ErrorKind::Xrun {
                shared.xruns.fetch_add(1, Relaxed);
            } else {
                // Full ring: the device thread has enough to report already.
                let _ = error_tx.push(err);
            }
        };
        let (mut callback, handoff) =
            Callback::new(channels, home_tx, Arc::clone(&self.shared.probe));
        let stream = match supported.sample_format() {
            SampleFormat::F32 => device.build_output_stream(
                config,
                move |out: &mut [f32], info: &OutputCallbackInfo| callback.render_f32(out, info),
                on_error,
                None,
            ),
            _ => device.build_output_stream(
                config,
                move |out: &mut [i16], info: &OutputCallbackInfo| callback.render_i16(out, info),
                on_error,
                None,
            ),
        }?;
        stream.play()?;
        Ok((stream, handoff, home, errors, buffer_size))
    }

    /// Waits until the new stream's callback runs steadily: some hosts (the ALSA PulseAudio
    /// plugin) call back a few times, then pause for up to seconds before playing. The mixer
    /// stays with the drainer meanwhile, so call rings do not overflow.
    fn await_steady_callbacks(&self) -> Result<(), Ended> {
        let start = clock::now();
        let mut last = self.shared.probe.callbacks.load(Relaxed);
        let mut steady = 0;
        while steady < STEADY_WINDOWS {
            if self.wait(STEADY_WINDOW) {
                return Err(Ended::Stop);
            }
            let count = self.shared.probe.callbacks.load(Relaxed);
            steady = if count != last { steady + 1 } else { 0 };
            last = count;
            if clock::now().duration_since(start) > STARTUP_TIMEOUT {
                self.shared.running.store(false, Relaxed);
                return Err(Ended::Failed(
                    "the audio device does not start playing".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Watches a playing stream until it fails, stalls, or the service stops.
    fn supervise(&mut self, errors: &mut Consumer<cpal::Error>) -> Ended {
        let mut last_count = self.shared.probe.callbacks.load(Relaxed);
        let mut last_progress = clock::now();
        loop {
            if self.wait(SUPERVISE_PERIOD) {
                return Ended::Stop;
            }
            lock(&self.shared.control).collect_retired();
            while let Ok(err) = errors.pop() {
                match err.kind() {
                    cpal::ErrorKind::DeviceNotAvailable
                    | cpal::ErrorKind::StreamInvalidated
                    | cpal::ErrorKind::HostUnavailable => return Ended::Failed(err.to_string()),
                    _ => tracing::debug!(error = %err, "audio stream error"),
                }
            }
            let count = self.shared.probe.callbacks.load(Relaxed);
            let now = clock::now();
            if count != last_count {
                (last_count, last_progress) = (count, now);
            } else if now.duration_since(last_progress) > STALL_TIMEOUT {
                return Ended::Failed("the audio device stopped calling back".to_owned());
            }
        }
    }

    /// Takes the mixer back from a dropped stream's callback. If it never comes back, a fresh
    /// mixer replaces it; the calls in the lost one go silent (their feeds count overruns).
    fn recover_mixer(&self, home: &mpsc::Receiver<Mixer>) -> Mixer {
        match home.recv_timeout(MIXER_RETURN_TIMEOUT) {
            Ok(mixer) => mixer,
            Err(_) => {
                tracing::error!("audio stream kept the mixer; calls in progress go silent");
                self.replace_mixer()
            }
        }
    }

    /// A fresh mixer whose control half replaces the service's.
    fn replace_mixer(&self) -> Mixer {
        let (mixer, control) = mixer::channel(IDLE_RATE, MAX_FEEDS);
        *lock(&self.shared.counters) = Arc::clone(control.counters());
        *lock(&self.shared.control) = control;
        mixer
    }

    /// Sleeps up to `timeout`; true when the service is stopping.
    fn wait(&self, timeout: Duration) -> bool {
        stopping(&self.stopped, timeout)
    }
}

/// Sleeps up to `timeout` on a device thread's stop channel; true when its service is stopping
/// (signalled or dropped).
pub(super) fn stopping(stopped: &mpsc::Receiver<()>, timeout: Duration) -> bool {
    !matches!(
        stopped.recv_timeout(timeout),
        Err(RecvTimeoutError::Timeout)
    )
}

/// A device's id (the host's identifier, e.g. the ALSA PCM name) and human-readable name.
pub(super) fn id_and_name(device: &cpal::Device) -> (String, String) {
    let id = device.id().map(|id| id.id().to_owned()).unwrap_or_default();
    let name = device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| id.clone());
    (id, name)
}

/// Whether `device` is the one `[audio] output` (or `input`) names, by id or by name.
pub(super) fn device_matches(device: &cpal::Device, wanted: &str) -> bool {
    // `earshot devices` prints ids with their host (`alsa:default`); both spellings match.
    device
        .id()
        .is_ok_and(|id| id.id() == wanted || id.to_string() == wanted)
        || device.description().is_ok_and(|d| d.name() == wanted)
}

/// The device's preferred configuration if it is f32 or i16, else the best f32 or i16 range at
/// a standard rate.
/// The period to ask for: `period_ms` at the stream's rate, within what the device supports;
/// `None` for the device's default (`period_ms` 0).
pub(super) fn period_frames(supported: &SupportedStreamConfig, period_ms: u32) -> Option<u32> {
    if period_ms == 0 {
        return None;
    }
    let frames = (supported.sample_rate() * period_ms / 1000).max(1);
    Some(match *supported.buffer_size() {
        cpal::SupportedBufferSize::Range { min, max } => frames.clamp(min, max.max(min)),
        cpal::SupportedBufferSize::Unknown => frames,
    })
}

fn choose_config(device: &cpal::Device) -> Result<SupportedStreamConfig, OpenError> {
    let preferred = device.default_output_config()?;
    let ranges = || device.supported_output_configs().map(Iterator::collect);
    pick_format(preferred, ranges)?.ok_or(OpenError::NoUsableFormat)
}

/// `preferred` if it is f32 or i16, else the best f32 or i16 of the `ranges` at a standard
/// rate (most channels up to two); `None` when the device offers neither.
pub(super) fn pick_format(
    preferred: SupportedStreamConfig,
    ranges: impl FnOnce() -> Result<Vec<cpal::SupportedStreamConfigRange>, cpal::Error>,
) -> Result<Option<SupportedStreamConfig>, cpal::Error> {
    if matches!(
        preferred.sample_format(),
        SampleFormat::F32 | SampleFormat::I16
    ) {
        return Ok(Some(preferred));
    }
    let ranges = ranges()?;
    Ok([SampleFormat::F32, SampleFormat::I16]
        .into_iter()
        .find_map(|format| {
            ranges
                .iter()
                .filter(|r| r.sample_format() == format)
                .max_by_key(|r| r.channels().min(2))
                .map(|r| {
                    r.try_with_standard_sample_rate()
                        .unwrap_or_else(|| r.with_max_sample_rate())
                })
        }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::frame::FRAME_DURATION;

    /// A 1 kHz tone, frame by frame.
    fn tone(n: &mut u64) -> Frame {
        let mut frame = [0i16; 160];
        for s in &mut frame {
            let phase = 2.0 * std::f64::consts::PI * 1000.0 * (*n as f64) / 8000.0;
            *s = (8000.0 * phase.sin()) as i16;
            *n += 1;
        }
        frame
    }

    /// Pushes `frames` 20 ms frames at real-time pace.
    #[allow(clippy::disallowed_methods)]
    fn push_realtime(feed: &mut SpeakerFeed, frames: usize) {
        let mut n = 0;
        let start = std::time::Instant::now();
        for i in 0..frames {
            feed.push(&tone(&mut n));
            let due = start + FRAME_DURATION * (i as u32 + 1);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
    }

    #[test]
    fn output_none_gives_detached_feeds_that_remember_listen() {
        let service = AudioService::start(&AudioConfig {
            output: AudioOutput::None,
            listen: false,
            ..AudioConfig::default()
        });
        assert!(!service.default_listen());
        let mut feed = service.add_call(7, true);
        assert!(!feed.is_attached());
        assert!(feed.push(&[0; 160]));
        assert!(feed.listen());
        feed.set_listen(false);
        assert!(!feed.listen());
        assert_eq!(feed.id(), 7);
        let stats = service.stats();
        assert!(!stats.running && stats.device.is_none() && stats.feeds == 0);
    }

    #[test]
    fn a_missing_device_is_reported_and_calls_keep_draining() {
        let service = AudioService::start(&AudioConfig {
            output: AudioOutput::Device("earshot-no-such-device".into()),
            ..AudioConfig::default()
        });
        let mut feed = service.add_call(1, true);
        assert!(feed.is_attached());
        assert_eq!(service.stats().feeds, 1);
        // 2 s of audio into a 1 s ring: only draining keeps it from overflowing.
        push_realtime(&mut feed, 100);
        let stats = service.stats();
        assert!(!stats.running);
        assert_eq!(stats.overruns, 0, "{stats:?}");
        assert!(stats.last_error.is_some(), "{stats:?}");
        drop(feed);
        assert_eq!(service.stats().feeds, 0);
    }
}
