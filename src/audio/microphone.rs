//! The microphone driver (talk-back): opens the cpal input device named by `[audio].input` on
//! its own thread, runs a [`CaptureCallback`](super::capture::CaptureCallback) in its callback,
//! and lends the [`CaptureReader`] to the one call that holds the microphone.
//!
//! One call at a time: [`Microphone::claim`] makes a call the owner (taking it from another
//! moves it, and says from which); the owner's task reads a frame every 20 ms with
//! [`Microphone::read`] and learns there when the microphone moved on. While nobody talks the
//! device thread discards what is captured, so a call that starts talking hears nothing old.
//!
//! A missing or failing device never touches calls: the thread logs once, reports the error
//! (talk-back is refused with it) and retries every [`RETRY_INTERVAL`].

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{InputCallbackInfo, SampleFormat, StreamConfig, SupportedStreamConfig};

use super::capture::{self, CaptureCounters, CaptureReader};
use super::device::{device_matches, id_and_name, lock, period_frames, pick_format, stopping};
use super::mixer::LatencySnapshot;
use crate::clock;
use crate::config::AudioInput;
use crate::media::frame::Frame;

/// Wait between attempts to open a missing or failed input device.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// How often the device thread wakes to discard unclaimed audio and check the stream.
const SUPERVISE_PERIOD: Duration = Duration::from_millis(100);

/// A stream whose callback has not run for this long is considered dead.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// One input device, as `earshot devices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    /// The host's identifier; `[audio] input` accepts it.
    pub id: String,
    /// Human-readable name; `[audio] input` accepts it too.
    pub name: String,
    /// Whether this is the host's default input.
    pub is_default: bool,
}

/// Lists the default host's input devices; empty when the host cannot enumerate them.
pub fn list_inputs() -> Vec<InputInfo> {
    let host = cpal::default_host();
    let default_id = host
        .default_input_device()
        .and_then(|d| d.id().ok())
        .map(|id| id.id().to_owned());
    let Ok(devices) = host.input_devices() else {
        return Vec::new();
    };
    devices
        .map(|device| {
            let (id, name) = id_and_name(&device);
            InputInfo {
                is_default: default_id.as_deref() == Some(id.as_str()),
                id,
                name,
            }
        })
        .collect()
}

/// Why talk-back cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// `[audio].input = "none"`.
    #[error("no microphone: [audio].input is \"none\"")]
    NotConfigured,
    /// The device is configured but not capturing.
    #[error("the microphone is not capturing: {0}")]
    NotCapturing(String),
}

/// What a call's tick got from the microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The call holds the microphone; the frame was captured at this instant, if known
    /// (`None` for silence while the capture ring fills).
    Frame(Option<Instant>),
    /// Another call has the microphone now, or nobody (it was released).
    NotOwner,
}

/// A snapshot of capture health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Whether an input device is capturing.
    pub running: bool,
    /// Callbacks that found the capture ring full and dropped audio.
    pub overruns: u64,
    /// Frames of the operator's voice with a gap.
    pub underruns: u64,
    /// Times the capture ring was too far ahead and its excess discarded.
    pub skips: u64,
    /// Capture → RTP sent of every frame of the operator's voice sent.
    pub latency: LatencySnapshot,
}

/// Who holds the microphone, and its reader while a stream captures.
#[derive(Debug, Default)]
struct Slot {
    owner: Option<String>,
    reader: Option<CaptureReader>,
}

/// State shared by the service and the device thread.
#[derive(Debug)]
struct Shared {
    /// Locked by the owner's call task once per 20 ms tick and by the device thread every
    /// [`SUPERVISE_PERIOD`], never by the callback; held for one frame's resampling at most.
    slot: Mutex<Slot>,
    counters: Arc<CaptureCounters>,
    /// Whether a stream captures (callbacks arriving).
    running: AtomicBool,
    /// The last device error, while nothing captures. Locked because it holds a string.
    last_error: Mutex<Option<String>>,
}

/// The box's microphone.
#[derive(Debug)]
pub struct Microphone {
    /// `None` when `[audio].input = "none"`.
    shared: Option<Arc<Shared>>,
    /// Dropping it stops the device thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Microphone {
    /// Starts capturing as `[audio].input` says, asking for `period_ms` callbacks (0: the
    /// device's default; `[audio].period_ms`, shared with playout). Never fails: a missing
    /// device is retried.
    pub fn start(input: &AudioInput, period_ms: u32) -> Microphone {
        let target = match input {
            AudioInput::None => {
                return Microphone {
                    shared: None,
                    stop: None,
                    thread: None,
                };
            }
            AudioInput::Default => None,
            AudioInput::Device(name) => Some(name.clone()),
        };
        let shared = Arc::new(Shared {
            slot: Mutex::default(),
            counters: Arc::default(),
            running: AtomicBool::new(false),
            last_error: Mutex::new(Some("opening the input device".to_owned())),
        });
        let (stop, stopped) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("earshot-mic".to_owned())
            .spawn(move || {
                DeviceThread {
                    target,
                    period_ms,
                    shared: thread_shared,
                    stopped,
                    last_logged: None,
                }
                .run();
            });
        match thread {
            Ok(thread) => Microphone {
                shared: Some(shared),
                stop: Some(stop),
                thread: Some(thread),
            },
            Err(err) => {
                tracing::error!(error = %err, "cannot start the microphone thread");
                Microphone {
                    shared: None,
                    stop: None,
                    thread: None,
                }
            }
        }
    }

    /// Makes call `call` the one whose tick reads the microphone. Returns the call that had
    /// it before, if another did.
    pub fn claim(&self, call: &str) -> Result<Option<String>, Unavailable> {
        let shared = self.shared.as_ref().ok_or(Unavailable::NotConfigured)?;
        if !shared.running.load(Relaxed) {
            let reason = lock(&shared.last_error)
                .clone()
                .unwrap_or_else(|| "no input stream".to_owned());
            return Err(Unavailable::NotCapturing(reason));
        }
        let mut slot = lock(&shared.slot);
        let previous = slot.owner.replace(call.to_owned());
        if previous.is_none()
            && let Some(reader) = &mut slot.reader
        {
            reader.discard();
        }
        Ok(previous.filter(|p| p != call))
    }

    /// Lets go of the microphone if call `call` holds it.
    pub fn release(&self, call: &str) {
        if let Some(shared) = &self.shared {
            let mut slot = lock(&shared.slot);
            if slot.owner.as_deref() == Some(call) {
                slot.owner = None;
            }
        }
    }

    /// The next 20 ms of the microphone for call `call`, if it holds it.
    pub fn read(&self, call: &str, out: &mut Frame) -> Read {
        let Some(shared) = &self.shared else {
            return Read::NotOwner;
        };
        let mut slot = lock(&shared.slot);
        if slot.owner.as_deref() != Some(call) {
            return Read::NotOwner;
        }
        match &mut slot.reader {
            Some(reader) => Read::Frame(reader.read_frame(out)),
            None => {
                *out = [0; crate::media::frame::FRAME_SAMPLES];
                Read::Frame(None)
            }
        }
    }

    /// A frame captured at `captured` was sent to the caller at `sent`.
    pub fn record_sent(&self, captured: Instant, sent: Instant) {
        if let Some(shared) = &self.shared {
            shared
                .counters
                .latency
                .record(sent.saturating_duration_since(captured));
        }
    }

    /// A snapshot of capture health.
    pub fn stats(&self) -> CaptureStats {
        let Some(shared) = &self.shared else {
            return CaptureStats::default();
        };
        let c = &shared.counters;
        CaptureStats {
            running: shared.running.load(Relaxed),
            overruns: c.overruns.load(Relaxed),
            underruns: c.underruns.load(Relaxed),
            skips: c.skips.load(Relaxed),
            latency: c.latency.snapshot(),
        }
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the microphone thread panicked");
        }
    }
}

/// The device thread's state.
struct DeviceThread {
    /// The device's id or name; `None` for the host's default.
    target: Option<String>,
    /// `[audio].period_ms`.
    period_ms: u32,
    shared: Arc<Shared>,
    stopped: mpsc::Receiver<()>,
    last_logged: Option<String>,
}

impl DeviceThread {
    fn run(mut self) {
        loop {
            let failure = match self.open() {
                Ok(stream) => match self.supervise() {
                    Some(reason) => {
                        drop(stream);
                        reason
                    }
                    None => return,
                },
                Err(reason) => reason,
            };
            self.shared.running.store(false, Relaxed);
            // The reader goes with its stream; the owner keeps the claim and reads silence.
            lock(&self.shared.slot).reader = None;
            if self.last_logged.as_deref() != Some(failure.as_str()) {
                tracing::warn!(
                    error = %failure,
                    retry_secs = RETRY_INTERVAL.as_secs(),
                    "microphone unavailable; talk-back is refused until it comes back"
                );
            }
            *lock(&self.shared.last_error) = Some(failure.clone());
            self.last_logged = Some(failure);
            if self.wait(RETRY_INTERVAL) {
                return;
            }
        }
    }

    /// Opens the device and starts its stream; the reader goes into the slot.
    fn open(&mut self) -> Result<cpal::Stream, String> {
        let host = cpal::default_host();
        let device = match &self.target {
            None => host
                .default_input_device()
                .ok_or_else(|| "no default input device".to_owned())?,
            Some(name) => host
                .input_devices()
                .map_err(|e| e.to_string())?
                .find(|d| device_matches(d, name))
                .ok_or_else(|| format!("no input device named {name:?}"))?,
        };
        let (_, name) = id_and_name(&device);
        let supported = choose_config(&device)?;
        let rate = supported.sample_rate();
        let channels = usize::from(supported.channels().max(1));
        let counters = &self.shared.counters;
        // Ask for the configured period; a host that refuses it gets its own default.
        let (stream, reader) = match period_frames(&supported, self.period_ms) {
            Some(frames) => build_stream(
                &device,
                &supported,
                cpal::BufferSize::Fixed(frames),
                counters,
            )
            .or_else(|err| {
                tracing::debug!(%err, frames, "input device refused the period; using its default");
                build_stream(&device, &supported, cpal::BufferSize::Default, counters)
            }),
            None => build_stream(&device, &supported, cpal::BufferSize::Default, counters),
        }?;
        stream.play().map_err(|e| e.to_string())?;
        lock(&self.shared.slot).reader = Some(reader);
        tracing::info!(device = %name, rate, channels, period_ms = self.period_ms, "microphone capturing");
        Ok(stream)
    }

    /// Watches the stream; `None` when the service stops, else why the stream is given up.
    fn supervise(&mut self) -> Option<String> {
        let counters = Arc::clone(&self.shared.counters);
        let mut last_count = counters.callbacks.load(Relaxed);
        let mut last_progress = clock::now();
        loop {
            if self.wait(SUPERVISE_PERIOD) {
                return None;
            }
            {
                let mut slot = lock(&self.shared.slot);
                if slot.owner.is_none()
                    && let Some(reader) = &mut slot.reader
                {
                    reader.discard();
                }
            }
            let count = counters.callbacks.load(Relaxed);
            let now = clock::now();
            if count != last_count {
                (last_count, last_progress) = (count, now);
                if !self.shared.running.swap(true, Relaxed) {
                    *lock(&self.shared.last_error) = None;
                    self.last_logged = None;
                }
            } else if now.duration_since(last_progress) > STALL_TIMEOUT {
                return Some("the input device stopped calling back".to_owned());
            }
        }
    }

    /// Sleeps up to `timeout`; true when the service is stopping.
    fn wait(&self, timeout: Duration) -> bool {
        stopping(&self.stopped, timeout)
    }
}

/// Builds (does not start) an input stream on `device` whose callback feeds a fresh capture
/// ring; returns it with the ring's reader.
fn build_stream(
    device: &cpal::Device,
    supported: &SupportedStreamConfig,
    buffer_size: cpal::BufferSize,
    counters: &Arc<CaptureCounters>,
) -> Result<(cpal::Stream, CaptureReader), String> {
    let channels = usize::from(supported.channels().max(1));
    let config = StreamConfig {
        channels: supported.channels(),
        sample_rate: supported.sample_rate(),
        buffer_size,
    };
    let (mut callback, reader) =
        capture::channel(supported.sample_rate(), channels, Arc::clone(counters));
    // Errors show as the callback stalling, which the device thread watches; an xrun shows
    // as an overrun or underrun.
    let on_error = |_: cpal::Error| {};
    let stream = match supported.sample_format() {
        SampleFormat::F32 => device.build_input_stream(
            config,
            move |data: &[f32], info: &InputCallbackInfo| callback.capture_f32(data, info),
            on_error,
            None,
        ),
        _ => device.build_input_stream(
            config,
            move |data: &[i16], info: &InputCallbackInfo| callback.capture_i16(data, info),
            on_error,
            None,
        ),
    }
    .map_err(|e| e.to_string())?;
    Ok((stream, reader))
}

/// The device's preferred input configuration if it is f32 or i16, else the best f32 or i16
/// range at a standard rate.
fn choose_config(device: &cpal::Device) -> Result<SupportedStreamConfig, String> {
    let preferred = device.default_input_config().map_err(|e| e.to_string())?;
    let ranges = || device.supported_input_configs().map(Iterator::collect);
    pick_format(preferred, ranges)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the input device offers neither f32 nor i16".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A capturing microphone without a device: its reader is fed by the test.
    fn fed() -> (Microphone, capture::CaptureCallback) {
        let counters = Arc::new(CaptureCounters::default());
        let (callback, reader) = capture::channel(8000, 1, Arc::clone(&counters));
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                owner: None,
                reader: Some(reader),
            }),
            counters,
            running: AtomicBool::new(true),
            last_error: Mutex::default(),
        });
        let mic = Microphone {
            shared: Some(shared),
            stop: None,
            thread: None,
        };
        (mic, callback)
    }

    #[test]
    fn one_call_holds_the_microphone_and_taking_it_elsewhere_moves_it() {
        let (mic, _callback) = fed();
        let mut frame = [0; 160];
        assert_eq!(mic.read("c1", &mut frame), Read::NotOwner);
        assert_eq!(mic.claim("c1"), Ok(None));
        assert!(matches!(mic.read("c1", &mut frame), Read::Frame(_)));
        assert_eq!(mic.claim("c1"), Ok(None), "claiming again is no move");
        assert_eq!(mic.claim("c2"), Ok(Some("c1".to_owned())));
        assert_eq!(mic.read("c1", &mut frame), Read::NotOwner);
        assert!(matches!(mic.read("c2", &mut frame), Read::Frame(_)));
        mic.release("c1");
        assert!(matches!(mic.read("c2", &mut frame), Read::Frame(_)));
        mic.release("c2");
        assert_eq!(mic.read("c2", &mut frame), Read::NotOwner);
    }

    #[test]
    fn input_none_refuses_talk_back_with_a_clear_reason() {
        let mic = Microphone::start(&AudioInput::None, 10);
        let err = mic.claim("c1").unwrap_err();
        assert_eq!(err, Unavailable::NotConfigured);
        assert!(err.to_string().contains("[audio].input"));
        let mut frame = [1; 160];
        assert_eq!(mic.read("c1", &mut frame), Read::NotOwner);
        assert!(!mic.stats().running);
    }

    #[test]
    fn a_missing_device_refuses_talk_back_and_says_why() {
        let mic = Microphone::start(&AudioInput::Device("earshot-no-such-mic".into()), 10);
        let err = mic.claim("c1").unwrap_err();
        assert!(matches!(err, Unavailable::NotCapturing(_)), "{err}");
    }
}
