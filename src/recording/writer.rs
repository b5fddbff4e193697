//! The recording writer: one thread writes every call's stereo WAV (hound) from its own ring.
//!
//! A call task holds a [`CallRecording`] and pushes one frame pair every 20 ms — left the
//! caller (what we received, after the jitter buffer), right what earshot sent. The push only
//! copies into an rtrb ring allocated at open (about 2 s deep): no allocation, no lock, no
//! syscall, so a slow disk never delays a call. The writer thread wakes every
//! [`WAKE_PERIOD`], drains every ring into its file and, about once per [`FLUSH_PERIOD`],
//! flushes, rewrites the header sizes and syncs each file's data to the disk (`fdatasync`), so
//! a crash or a power cut loses at most about a second (which [`super::repair`] recovers at the
//! next start). A new file's data and its directory are synced when the writer takes it on (so
//! its entry survives a power cut), and a finished file's data when it is finalized. Every
//! sync is done on the writer thread, never on a call task.
//!
//! A write or sync error (a full disk) stops that recording only: its file is closed as far as
//! possible and its header repaired from what reached the disk, a
//! [`RecordingEvent::Stopped`] is sent, and the call keeps pushing (into nothing) unharmed.
//! A recording that reaches the WAV format's 4 GiB limit ([`MAX_FRAMES`], about 37 hours) stops
//! the same way ([`StopReason::SizeLimit`]) with a valid file, rather than wrap its sizes.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hound::{SampleFormat, WavSpec, WavWriter};
use rtrb::{Consumer, Producer, RingBuffer};
use tokio::sync::mpsc::UnboundedSender;

use crate::clock;
use crate::media::frame::{FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// How often the writer thread drains the rings.
pub const WAKE_PERIOD: Duration = Duration::from_millis(25);

/// How often each file is flushed and its header sizes rewritten: the most a crash can lose.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);

/// Seconds of audio each call's ring holds before pushes are dropped.
pub const RING_SECONDS: usize = 2;

/// Ring capacity in samples: stereo, so two per sample frame.
const RING_SAMPLES: usize = SAMPLE_RATE as usize * 2 * RING_SECONDS;

/// Samples one push adds: a frame pair, interleaved.
const PUSH_SAMPLES: usize = FRAME_SAMPLES * 2;

/// Samples encoded at a time when a ring is drained: one frame pair, as pushed (640 bytes of
/// scratch in hound per recording). A write that fails (a full disk) thus loses at most that
/// frame pair, and the frames counted written are whole 20 ms frames.
const WRITE_SAMPLES: usize = PUSH_SAMPLES;

/// Header bytes counted in the RIFF size (the 44-byte PCM header minus `RIFF` and its size).
const RIFF_HEADER_BYTES: u64 = 36;

/// The most sample frames one recording holds: the RIFF size (audio plus 36 header bytes) must
/// fit in 32 bits. 1 073 741 814 frames, 37 h 16 min at 8 kHz.
pub const MAX_FRAMES: u64 = (u32::MAX as u64 - RIFF_HEADER_BYTES) / BYTES_PER_FRAME;

/// Bytes per sample frame: two 16-bit channels.
const BYTES_PER_FRAME: u64 = 4;

/// The format of every recording: stereo 8 kHz 16-bit PCM.
pub const SPEC: WavSpec = WavSpec {
    channels: 2,
    sample_rate: SAMPLE_RATE,
    bits_per_sample: 16,
    sample_format: SampleFormat::Int,
};

/// What happened to a recording, sent to the application as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingEvent {
    /// The writer took the recording on.
    Started {
        /// The call id given to [`RecordingService::open`].
        id: u64,
        /// The WAV file.
        path: PathBuf,
    },
    /// Writing failed; the file holds what was written before, the call goes on unrecorded.
    Stopped {
        /// The call id.
        id: u64,
        /// The WAV file.
        path: PathBuf,
        /// Why it stopped.
        reason: StopReason,
        /// Sample frames (20 ms frames × 160) written before the failure.
        frames: u64,
    },
    /// The recording ended normally and its file is complete.
    Finished {
        /// The call id.
        id: u64,
        /// The WAV file.
        path: PathBuf,
        /// Sample frames written (8000 per second).
        frames: u64,
        /// 20 ms frames the call pushed while the ring was full, which are missing.
        dropped: u64,
    },
}

/// Why a recording stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    /// No space left on the device.
    #[error("disk full")]
    DiskFull,
    /// Any other write error.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// Syncing the file or its directory to the disk failed (counted in
    /// `earshot_recording_sync_failures_total`).
    #[error("sync failed: {0}")]
    SyncFailed(String),
    /// The recording reached the WAV format's 4 GiB limit ([`MAX_FRAMES`]).
    #[error("size limit")]
    SizeLimit,
}

impl StopReason {
    fn from_hound(err: &hound::Error) -> StopReason {
        match err {
            hound::Error::IoError(io) if io.kind() == io::ErrorKind::StorageFull => {
                StopReason::DiskFull
            }
            other => StopReason::WriteFailed(other.to_string()),
        }
    }

    fn from_sync(err: &io::Error) -> StopReason {
        StopReason::SyncFailed(err.to_string())
    }

    /// The reason without its detail, as the call's `recording_stopped` event names it.
    pub fn label(&self) -> &'static str {
        match self {
            StopReason::DiskFull => "disk full",
            StopReason::WriteFailed(_) => "write failed",
            StopReason::SyncFailed(_) => "sync failed",
            StopReason::SizeLimit => "size limit",
        }
    }
}

/// Why a recording could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file stem is empty, too long, or could escape the recording folder.
    #[error("invalid recording name {0:?}")]
    InvalidName(String),
    /// The file could not be created (it exists, no permission, disk full...).
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The writer thread has stopped (the service is shutting down).
    #[error("the recording writer has stopped")]
    WriterGone,
}

/// Something `Write + Seek` a WAV can be written to.
pub(crate) trait WavSink: Write + Seek + Send {}

impl<T: Write + Seek + Send> WavSink for T {}

/// Makes what reached a file durable: `fdatasync` of the file behind a [`WavSink`].
pub(crate) trait SyncData: Send {
    /// Waits until the file's data written so far is on the disk.
    fn sync_data(&mut self) -> io::Result<()>;
}

impl SyncData for File {
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// A file just created: where the WAV is written, and how to sync what was flushed to it.
pub(crate) struct Created {
    /// The buffered writer.
    pub(crate) sink: Box<dyn WavSink>,
    /// Syncs the same file (what the sink flushed).
    pub(crate) sync: Box<dyn SyncData>,
}

/// Where recordings are stored: files, or a stand-in in tests (a disk that fills up, or one
/// that loses what was not synced).
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// Creates a new, empty file at `path`; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Created>;
    /// Syncs the directory `dir`, so the entries created in it survive a power cut.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes the most of a file whose writing failed (after the writer was dropped).
    fn salvage(&self, path: &Path);
}

/// Recordings as files on disk.
#[derive(Debug)]
struct Files;

impl Storage for Files {
    fn create(&self, path: &Path) -> io::Result<Created> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let sync = file.try_clone()?;
        Ok(Created {
            sink: Box::new(BufWriter::new(file)),
            sync: Box::new(sync),
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn salvage(&self, path: &Path) {
        // The header may claim bytes that never reached the disk; make it match the file. The
        // outcome is not reported: the Stopped event already says the recording is short.
        let _ = super::repair::repair_file(path);
    }
}

/// State of one recording shared by its call side and the writer.
#[derive(Debug, Default)]
struct Shared {
    /// Set by the writer when it gave up on the file; pushes then return false.
    stopped: AtomicBool,
    /// Frame pairs dropped because the ring was full.
    dropped: AtomicU64,
    /// Why the writer gave up, once `stopped` is set (without the error's detail).
    reason: std::sync::OnceLock<&'static str>,
}

/// A message to the writer thread.
enum ToWriter {
    /// Take on a new recording.
    Open(Box<Recording>),
    /// The call ended: write what is left and finalize.
    Finish(u64),
    /// Finalize everything and exit.
    Shutdown,
}

/// The writer's side of one recording.
struct Recording {
    id: u64,
    path: PathBuf,
    writer: WavWriter<Box<dyn WavSink>>,
    /// Syncs the file's data to the disk.
    sync: Box<dyn SyncData>,
    ring: Consumer<i16>,
    shared: Arc<Shared>,
    /// Finish was requested: finalize after the next drain.
    finishing: bool,
}

/// Records calls into WAV files, one writer thread for all of them.
#[derive(Debug)]
pub struct RecordingService {
    /// The recording folder.
    dir: PathBuf,
    /// Creates the files.
    storage: Arc<dyn Storage>,
    /// Messages to the writer thread.
    to_writer: mpsc::Sender<ToWriter>,
    /// The writer thread, joined on shutdown.
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for ToWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToWriter::Open(r) => write!(f, "Open({})", r.id),
            ToWriter::Finish(id) => write!(f, "Finish({id})"),
            ToWriter::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl RecordingService {
    /// Creates `dir` if needed and starts the writer thread; events go to `events`.
    pub fn start(
        dir: PathBuf,
        events: UnboundedSender<RecordingEvent>,
    ) -> io::Result<RecordingService> {
        RecordingService::start_with(dir, events, Arc::new(Files), MAX_FRAMES)
    }

    /// [`RecordingService::start`] with another storage and size limit (tests).
    pub(crate) fn start_with(
        dir: PathBuf,
        events: UnboundedSender<RecordingEvent>,
        storage: Arc<dyn Storage>,
        max_frames: u64,
    ) -> io::Result<RecordingService> {
        std::fs::create_dir_all(&dir)?;
        let (to_writer, inbox) = mpsc::channel();
        let thread_storage = Arc::clone(&storage);
        let thread = std::thread::Builder::new()
            .name("earshot-recording".to_owned())
            .spawn(move || {
                let mut writer = Writer::new(inbox, events, thread_storage);
                writer.max_frames = max_frames.min(MAX_FRAMES);
                writer.run();
            })?;
        Ok(RecordingService {
            dir,
            storage,
            to_writer,
            thread: Some(thread),
        })
    }

    /// The recording folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts recording call `id` into `<dir>/<file_stem>.wav`, which must not exist yet.
    pub fn open(&self, id: u64, file_stem: &str) -> Result<CallRecording, RecordingError> {
        if !is_safe_stem(file_stem) {
            return Err(RecordingError::InvalidName(file_stem.to_owned()));
        }
        let path = self.dir.join(format!("{file_stem}.wav"));
        let (recording, call) = prepare(&*self.storage, id, path, &self.to_writer)?;
        if self.to_writer.send(ToWriter::Open(recording)).is_err() {
            return Err(RecordingError::WriterGone);
        }
        Ok(call)
    }

    /// Finalizes every open recording and stops the writer thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.to_writer.send(ToWriter::Shutdown);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the recording writer thread panicked");
        }
    }
}

impl Drop for RecordingService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One call's recording, held by the call task.
#[derive(Debug)]
pub struct CallRecording {
    /// The call id.
    id: u64,
    /// The WAV file.
    path: PathBuf,
    /// Producer end of the ring the writer drains.
    ring: Producer<i16>,
    /// Stop flag and drop counter, shared with the writer.
    shared: Arc<Shared>,
    /// To ask the writer to finalize.
    to_writer: mpsc::Sender<ToWriter>,
}

impl CallRecording {
    /// Queues one 20 ms frame pair: `caller` (left) and `sent` (right). Never blocks or
    /// allocates. False when the frame is not recorded: the ring is full (counted, see
    /// [`CallRecording::dropped_frames`]) or the recording stopped on a write error.
    pub fn push(&mut self, caller: &Frame, sent: &Frame) -> bool {
        if self.shared.stopped.load(Relaxed) {
            return false;
        }
        match self.ring.write_chunk_uninit(PUSH_SAMPLES) {
            Ok(chunk) => {
                let interleaved = caller.iter().zip(sent).flat_map(|(&l, &r)| [l, r]);
                chunk.fill_from_iter(interleaved);
                true
            }
            Err(_) => {
                self.shared.dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Ends the recording: the writer writes what is queued, finalizes the file and sends
    /// [`RecordingEvent::Finished`]. Dropping the recording does the same.
    pub fn finish(self) {}

    /// The WAV file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// 20 ms frames dropped so far because the ring was full.
    pub fn dropped_frames(&self) -> u64 {
        self.shared.dropped.load(Relaxed)
    }

    /// Whether the writer gave up on this recording (see [`RecordingEvent::Stopped`]).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Relaxed)
    }

    /// Why the writer gave up ([`StopReason::label`]); `None` while recording or after a
    /// shutdown.
    pub fn stop_label(&self) -> Option<&'static str> {
        self.shared.reason.get().copied()
    }
}

impl Drop for CallRecording {
    fn drop(&mut self) {
        // If the writer is gone (shutdown), it has finalized the file already.
        let _ = self.to_writer.send(ToWriter::Finish(self.id));
    }
}

/// The writer thread's state.
struct Writer {
    inbox: mpsc::Receiver<ToWriter>,
    events: UnboundedSender<RecordingEvent>,
    storage: Arc<dyn Storage>,
    recordings: Vec<Recording>,
    last_flush: Instant,
    /// Sample frames after which a recording stops ([`MAX_FRAMES`]; smaller in tests).
    max_frames: u64,
}

impl Writer {
    fn new(
        inbox: mpsc::Receiver<ToWriter>,
        events: UnboundedSender<RecordingEvent>,
        storage: Arc<dyn Storage>,
    ) -> Writer {
        Writer {
            inbox,
            events,
            storage,
            recordings: Vec::new(),
            last_flush: clock::now(),
            max_frames: MAX_FRAMES,
        }
    }

    fn run(mut self) {
        loop {
            let mut shutdown = match self.inbox.recv_timeout(WAKE_PERIOD) {
                Ok(message) => self.handle(message),
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                Err(mpsc::RecvTimeoutError::Disconnected) => true,
            };
            while let Ok(message) = self.inbox.try_recv() {
                shutdown |= self.handle(message);
            }
            if shutdown {
                for recording in &mut self.recordings {
                    recording.finishing = true;
                    recording.shared.stopped.store(true, Relaxed);
                }
            }
            if shutdown {
                self.drain_all();
                return;
            }
            self.tick(clock::now());
        }
    }

    /// One wake-up at `now`: drains every ring, and flushes and syncs every file once
    /// [`FLUSH_PERIOD`] has passed since the last time.
    fn tick(&mut self, now: Instant) {
        self.drain_all();
        if now.saturating_duration_since(self.last_flush) >= FLUSH_PERIOD {
            self.last_flush = now;
            self.flush_all();
        }
    }

    /// Applies one message; true for shutdown.
    fn handle(&mut self, message: ToWriter) -> bool {
        match message {
            ToWriter::Open(mut recording) => {
                self.send(RecordingEvent::Started {
                    id: recording.id,
                    path: recording.path.clone(),
                });
                // The header was flushed at open; make it and the file's entry durable.
                let dir = recording.path.parent().unwrap_or(Path::new("."));
                match recording
                    .sync
                    .sync_data()
                    .and_then(|()| self.storage.sync_dir(dir))
                {
                    Ok(()) => self.recordings.push(*recording),
                    Err(err) => self.stop(*recording, StopReason::from_sync(&err)),
                }
            }
            ToWriter::Finish(id) => {
                for recording in self.recordings.iter_mut().filter(|r| r.id == id) {
                    recording.finishing = true;
                }
            }
            ToWriter::Shutdown => return true,
        }
        false
    }

    /// Writes every ring's contents; finalizes finishing recordings and stops failed ones.
    fn drain_all(&mut self) {
        let mut i = 0;
        while i < self.recordings.len() {
            let recording = &mut self.recordings[i];
            let result = drain(recording, self.max_frames);
            match result {
                Err(reason) => {
                    let recording = self.recordings.swap_remove(i);
                    self.stop(recording, reason);
                }
                Ok(()) if recording.finishing => {
                    let recording = self.recordings.swap_remove(i);
                    self.finalize(recording);
                }
                Ok(()) => i += 1,
            }
        }
    }

    /// Flushes every file, rewriting its header sizes, and syncs its data to the disk.
    fn flush_all(&mut self) {
        let mut i = 0;
        while i < self.recordings.len() {
            let recording = &mut self.recordings[i];
            let result = match recording.writer.flush() {
                Ok(()) => recording
                    .sync
                    .sync_data()
                    .map_err(|e| StopReason::from_sync(&e)),
                Err(err) => Err(StopReason::from_hound(&err)),
            };
            match result {
                Ok(()) => i += 1,
                Err(reason) => {
                    let recording = self.recordings.swap_remove(i);
                    self.stop(recording, reason);
                }
            }
        }
    }

    fn finalize(&mut self, recording: Recording) {
        let Recording {
            id,
            path,
            writer,
            mut sync,
            shared,
            ..
        } = recording;
        let frames = u64::from(writer.duration());
        let finalized = writer
            .finalize()
            .map_err(|e| StopReason::from_hound(&e))
            .and_then(|()| sync.sync_data().map_err(|e| StopReason::from_sync(&e)));
        match finalized {
            Ok(()) => self.send(RecordingEvent::Finished {
                id,
                path,
                frames,
                dropped: shared.dropped.load(Relaxed),
            }),
            Err(reason) => {
                let _ = shared.reason.set(reason.label());
                shared.stopped.store(true, Relaxed);
                self.storage.salvage(&path);
                tracing::warn!(call_id = id, path = %path.display(), %reason, "recording stopped");
                self.send(RecordingEvent::Stopped {
                    id,
                    path,
                    reason,
                    frames,
                });
            }
        }
    }

    fn stop(&mut self, recording: Recording, reason: StopReason) {
        let Recording {
            id,
            path,
            writer,
            mut sync,
            shared,
            ..
        } = recording;
        let _ = shared.reason.set(reason.label());
        shared.stopped.store(true, Relaxed);
        let frames = u64::from(writer.duration());
        // Dropping the writer rewrites the header as far as it can; salvage then makes it
        // match what actually reached the disk, and the sync keeps that (best effort: the
        // recording is stopping for a reason already).
        drop(writer);
        self.storage.salvage(&path);
        let _ = sync.sync_data();
        tracing::warn!(call_id = id, path = %path.display(), %reason, "recording stopped");
        self.send(RecordingEvent::Stopped {
            id,
            path,
            reason,
            frames,
        });
    }

    fn send(&self, event: RecordingEvent) {
        // Nobody listening is fine: events are informational.
        let _ = self.events.send(event);
    }
}

/// Creates the file of a new recording at `path` with its header flushed, and the two ends of
/// its ring: the writer's [`Recording`] and the call's [`CallRecording`].
fn prepare(
    storage: &dyn Storage,
    id: u64,
    path: PathBuf,
    to_writer: &mpsc::Sender<ToWriter>,
) -> Result<(Box<Recording>, CallRecording), RecordingError> {
    let create_error = |source| RecordingError::Create {
        path: path.clone(),
        source,
    };
    let Created { sink, sync } = storage.create(&path).map_err(create_error)?;
    let mut writer = WavWriter::new(sink, SPEC).map_err(|e| create_error(hound_to_io(e)))?;
    // Put the header in the file now (the writer syncs it), so even a crash within the first
    // second leaves a file the repair recognises.
    writer.flush().map_err(|e| create_error(hound_to_io(e)))?;

    let (producer, consumer) = RingBuffer::new(RING_SAMPLES);
    let shared = Arc::new(Shared::default());
    let recording = Recording {
        id,
        path: path.clone(),
        writer,
        sync,
        ring: consumer,
        shared: Arc::clone(&shared),
        finishing: false,
    };
    let call = CallRecording {
        id,
        path,
        ring: producer,
        shared,
        to_writer: to_writer.clone(),
    };
    Ok((Box::new(recording), call))
}

/// Moves everything queued in `recording`'s ring into its file, up to `max_frames` sample
/// frames in the file; [`StopReason::SizeLimit`] once the ring holds more than fits.
fn drain(recording: &mut Recording, max_frames: u64) -> Result<(), StopReason> {
    let available = recording.ring.slots();
    let room = max_frames
        .saturating_sub(u64::from(recording.writer.duration()))
        .saturating_mul(u64::from(SPEC.channels));
    let take = available.min(usize::try_from(room).unwrap_or(usize::MAX));
    let Ok(chunk) = recording.ring.read_chunk(take) else {
        return Ok(());
    };
    let (first, second) = chunk.as_slices();
    let written = first
        .chunks(WRITE_SAMPLES)
        .chain(second.chunks(WRITE_SAMPLES))
        .try_for_each(|part| write_samples(&mut recording.writer, part));
    chunk.commit_all();
    written.map_err(|e| StopReason::from_hound(&e))?;
    if take < available {
        return Err(StopReason::SizeLimit);
    }
    Ok(())
}

/// Writes `samples` (at most [`WRITE_SAMPLES`]) to the file in one go: hound's 16-bit writer
/// encodes them into the recording's scratch buffer and hands that to the buffered file, where
/// `write_sample` dispatches on the format and writes two bytes at a time for each.
fn write_samples(writer: &mut WavWriter<Box<dyn WavSink>>, samples: &[i16]) -> hound::Result<()> {
    let Ok(n) = u32::try_from(samples.len()) else {
        return Err(hound::Error::TooWide);
    };
    // SPEC is 16-bit integer PCM, which this writer requires.
    let mut out = writer.get_i16_writer(n);
    for &sample in samples {
        out.write_sample(sample);
    }
    out.flush()
}

/// Whether `stem` is safe as a file name inside the recording folder: not empty, at most
/// 200 bytes, no path separators, no `..`, no leading dot, no control characters.
fn is_safe_stem(stem: &str) -> bool {
    !stem.is_empty()
        && stem.len() <= 200
        && !stem.starts_with('.')
        && !stem.contains("..")
        && !stem
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

fn hound_to_io(err: hound::Error) -> io::Error {
    match err {
        hound::Error::IoError(io) => io,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::recording::RepairOutcome;
    use std::io::Cursor;
    use std::sync::Mutex;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("earshot-recording-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The next event, or a panic after 5 s.
    #[allow(clippy::disallowed_methods)]
    fn next_event(events: &mut UnboundedReceiver<RecordingEvent>) -> RecordingEvent {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(event) = events.try_recv() {
                return event;
            }
            assert!(Instant::now() < deadline, "no recording event");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Frame `k` of the test pattern: distinct, full-range values on both channels.
    fn pattern(k: usize) -> (Frame, Frame) {
        let mut caller = [0i16; FRAME_SAMPLES];
        let mut sent = [0i16; FRAME_SAMPLES];
        for (i, (l, r)) in caller.iter_mut().zip(sent.iter_mut()).enumerate() {
            let n = (k * FRAME_SAMPLES + i) as u32;
            *l = n.wrapping_mul(2_654_435_761).rotate_left(7) as i16;
            *r = !(n as i16);
        }
        (caller, sent)
    }

    #[test]
    fn a_recording_is_bit_exact_stereo_caller_left_sent_right() {
        let dir = temp_dir("exact");
        let (tx, mut events) = unbounded_channel();
        let service = RecordingService::start(dir.clone(), tx).unwrap();
        let mut recording = service.open(42, "call-42").unwrap();
        assert_eq!(recording.path(), dir.join("call-42.wav"));
        assert_eq!(
            next_event(&mut events),
            RecordingEvent::Started {
                id: 42,
                path: dir.join("call-42.wav")
            }
        );
        for k in 0..90 {
            let (caller, sent) = pattern(k);
            assert!(recording.push(&caller, &sent));
        }
        recording.finish();
        assert_eq!(
            next_event(&mut events),
            RecordingEvent::Finished {
                id: 42,
                path: dir.join("call-42.wav"),
                frames: 90 * 160,
                dropped: 0,
            }
        );
        let mut reader = hound::WavReader::open(dir.join("call-42.wav")).unwrap();
        assert_eq!(reader.spec(), SPEC);
        let samples: Vec<i16> = reader.samples().map(Result::unwrap).collect();
        let expected = interleaved(90);
        assert!(samples == expected, "samples differ");
        service.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_that_could_escape_the_folder_or_clobber_a_file_are_refused() {
        let dir = temp_dir("names");
        let (tx, _events) = unbounded_channel();
        let service = RecordingService::start(dir.clone(), tx).unwrap();
        for bad in [
            "",
            "../x",
            "a/b",
            "a\\b",
            "..",
            ".hidden",
            "x\0y",
            "a\nb",
            &"x".repeat(201),
        ] {
            assert!(
                matches!(service.open(1, bad), Err(RecordingError::InvalidName(_))),
                "{bad:?}"
            );
        }
        let first = service
            .open(1, "2024-05-01T10:00:00Z_+15551234567")
            .unwrap();
        assert!(matches!(
            service.open(2, "2024-05-01T10:00:00Z_+15551234567"),
            Err(RecordingError::Create { .. })
        ));
        drop(first);
        service.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_ring_drops_and_counts_without_blocking() {
        let (producer, mut consumer) = RingBuffer::new(RING_SAMPLES);
        let (to_writer, inbox) = mpsc::channel();
        let mut recording = CallRecording {
            id: 1,
            path: PathBuf::from("x.wav"),
            ring: producer,
            shared: Arc::new(Shared::default()),
            to_writer,
        };
        let (caller, sent) = pattern(0);
        let capacity_frames = SAMPLE_RATE as usize * RING_SECONDS / FRAME_SAMPLES;
        for _ in 0..capacity_frames {
            assert!(recording.push(&caller, &sent));
        }
        assert!(!recording.push(&caller, &sent));
        assert!(!recording.push(&caller, &sent));
        assert_eq!(recording.dropped_frames(), 2);
        assert_eq!(consumer.slots(), RING_SAMPLES);
        assert_eq!(consumer.pop(), Ok(caller[0]));
        assert_eq!(consumer.pop(), Ok(sent[0]));
        drop(recording);
        assert!(matches!(inbox.try_recv(), Ok(ToWriter::Finish(1))));
    }

    /// A disk that fills up: writes beyond `capacity` bytes fail with `StorageFull`.
    #[derive(Debug)]
    struct SmallDisk {
        capacity: u64,
        files: Mutex<Vec<PathBuf>>,
        salvaged: Mutex<Vec<PathBuf>>,
    }

    struct SmallFile {
        data: Cursor<Vec<u8>>,
        capacity: u64,
    }

    impl Write for SmallFile {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.data.position() + buf.len() as u64 > self.capacity {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            self.data.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for SmallFile {
        fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
            self.data.seek(pos)
        }
    }

    /// A sync that always succeeds.
    struct NoSync;

    impl SyncData for NoSync {
        fn sync_data(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Storage for SmallDisk {
        fn create(&self, path: &Path) -> io::Result<Created> {
            self.files.lock().unwrap().push(path.to_owned());
            Ok(Created {
                sink: Box::new(SmallFile {
                    data: Cursor::new(Vec::new()),
                    capacity: self.capacity,
                }),
                sync: Box::new(NoSync),
            })
        }

        fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
            Ok(())
        }

        fn salvage(&self, path: &Path) {
            self.salvaged.lock().unwrap().push(path.to_owned());
        }
    }

    #[test]
    fn a_full_disk_stops_the_recording_not_the_call() {
        let dir = temp_dir("full");
        let disk = Arc::new(SmallDisk {
            capacity: 44 + 4 * 4000,
            files: Mutex::default(),
            salvaged: Mutex::default(),
        });
        let (tx, mut events) = unbounded_channel();
        let service =
            RecordingService::start_with(dir.clone(), tx, disk.clone(), MAX_FRAMES).unwrap();
        let mut recording = service.open(9, "full").unwrap();
        assert!(matches!(
            next_event(&mut events),
            RecordingEvent::Started { id: 9, .. }
        ));

        // 1.6 s of audio into room for 0.5 s, then the call keeps going for a while.
        for k in 0..80 {
            let (caller, sent) = pattern(k);
            recording.push(&caller, &sent);
        }
        match next_event(&mut events) {
            RecordingEvent::Stopped {
                id, reason, frames, ..
            } => {
                assert_eq!((id, reason), (9, StopReason::DiskFull));
                assert_eq!(frames, 4000);
            }
            other => panic!("expected Stopped, got {other:?}"),
        }
        assert!(recording.is_stopped());
        assert_eq!(recording.stop_label(), Some("disk full"));
        for k in 0..200 {
            let (caller, sent) = pattern(k);
            assert!(!recording.push(&caller, &sent));
        }
        assert_eq!(
            recording.dropped_frames(),
            0,
            "a stopped recording is not an overflow"
        );
        assert_eq!(*disk.salvaged.lock().unwrap(), [dir.join("full.wav")]);

        // The service still records other calls.
        let mut other = service.open(10, "other").unwrap();
        assert!(matches!(
            next_event(&mut events),
            RecordingEvent::Started { id: 10, .. }
        ));
        assert!(other.push(&pattern(0).0, &pattern(0).1));
        drop(other);
        assert!(matches!(
            next_event(&mut events),
            RecordingEvent::Finished {
                id: 10,
                frames: 160,
                ..
            }
        ));
        drop(recording);
        service.shutdown();
        assert!(
            events.try_recv().is_err(),
            "a stopped recording does not also finish"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shutdown_finalizes_open_recordings() {
        let dir = temp_dir("shutdown");
        let (tx, mut events) = unbounded_channel();
        let service = RecordingService::start(dir.clone(), tx).unwrap();
        let mut recording = service.open(3, "open-at-shutdown").unwrap();
        for k in 0..10 {
            let (caller, sent) = pattern(k);
            assert!(recording.push(&caller, &sent));
        }
        service.shutdown();
        expect_started_then_finished(&mut events, 1600);
        assert!(!recording.push(&pattern(0).0, &pattern(0).1));
        drop(recording);
        let reader = hound::WavReader::open(dir.join("open-at-shutdown.wav")).unwrap();
        assert_eq!(reader.duration(), 1600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Waits for a recording's Started, then its Finished with `frames` sample frames.
    fn expect_started_then_finished(events: &mut UnboundedReceiver<RecordingEvent>, frames: u64) {
        assert!(matches!(next_event(events), RecordingEvent::Started { .. }));
        match next_event(events) {
            RecordingEvent::Finished { frames: n, .. } => assert_eq!(n, frames),
            other => panic!("expected Finished, got {other:?}"),
        }
    }

    /// The interleaved samples of pattern frames `0..frames`, as a recording holds them.
    fn interleaved(frames: usize) -> Vec<i16> {
        (0..frames)
            .flat_map(|k| {
                let (caller, sent) = pattern(k);
                caller
                    .into_iter()
                    .zip(sent)
                    .flat_map(|(l, r)| [l, r])
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// One file on a [`PowerCutDisk`].
    #[derive(Debug, Default)]
    struct CutFile {
        path: PathBuf,
        /// What the page cache holds: every byte written.
        written: Cursor<Vec<u8>>,
        /// What is on the disk: the bytes as of the last `sync_data`.
        synced: Vec<u8>,
        /// Whether the directory was synced after the file was created.
        entry_durable: bool,
        /// Syncs that succeeded.
        syncs: u64,
    }

    /// A disk where a power cut loses everything not synced: file data written since the
    /// file's last `sync_data`, and files whose directory was not synced after their creation.
    /// Syncs beyond `sync_budget` fail (a dying disk).
    #[derive(Debug)]
    struct PowerCutDisk {
        files: Mutex<Vec<Arc<Mutex<CutFile>>>>,
        sync_budget: u64,
        syncs: AtomicU64,
    }

    impl PowerCutDisk {
        fn new(sync_budget: u64) -> Arc<PowerCutDisk> {
            Arc::new(PowerCutDisk {
                files: Mutex::default(),
                sync_budget,
                syncs: AtomicU64::new(0),
            })
        }

        /// What survives a power cut now: the durable files and their synced bytes.
        fn power_cut(&self) -> Vec<(PathBuf, Vec<u8>)> {
            let files = self.files.lock().unwrap();
            files
                .iter()
                .map(|f| f.lock().unwrap())
                .filter(|f| f.entry_durable)
                .map(|f| (f.path.clone(), f.synced.clone()))
                .collect()
        }

        fn sync(&self) -> io::Result<()> {
            if self.syncs.fetch_add(1, Relaxed) >= self.sync_budget {
                return Err(io::Error::other("I/O error"));
            }
            Ok(())
        }
    }

    /// The writing end of a [`CutFile`] (the page cache).
    struct CutSink(Arc<Mutex<CutFile>>);

    impl Write for CutSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().written.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for CutSink {
        fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
            self.0.lock().unwrap().written.seek(pos)
        }
    }

    /// `sync_data` of a [`CutFile`]: what was written reaches the disk.
    struct CutSync(Arc<Mutex<CutFile>>, Arc<PowerCutDisk>);

    impl SyncData for CutSync {
        fn sync_data(&mut self) -> io::Result<()> {
            self.1.sync()?;
            let mut file = self.0.lock().unwrap();
            file.synced = file.written.get_ref().clone();
            file.syncs += 1;
            Ok(())
        }
    }

    /// [`Storage`] on a shared [`PowerCutDisk`] (the sync needs the disk's budget).
    #[derive(Debug)]
    struct CutStorage(Arc<PowerCutDisk>);

    impl Storage for CutStorage {
        fn create(&self, path: &Path) -> io::Result<Created> {
            let file = Arc::new(Mutex::new(CutFile {
                path: path.to_owned(),
                ..CutFile::default()
            }));
            self.0.files.lock().unwrap().push(Arc::clone(&file));
            Ok(Created {
                // Buffered like the real files, so a sync without a flush would miss data.
                sink: Box::new(BufWriter::new(CutSink(Arc::clone(&file)))),
                sync: Box::new(CutSync(file, Arc::clone(&self.0))),
            })
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.0.sync()?;
            for file in self.0.files.lock().unwrap().iter() {
                let mut file = file.lock().unwrap();
                if file.path.parent() == Some(dir) {
                    file.entry_durable = true;
                }
            }
            Ok(())
        }

        fn salvage(&self, _path: &Path) {}
    }

    /// Writes `bytes` as `path`, runs the startup repair on it, and returns its samples.
    fn repaired_samples(path: &Path, bytes: &[u8]) -> (RepairOutcome, Vec<i16>) {
        std::fs::write(path, bytes).unwrap();
        let outcome = super::super::repair::repair_file(path).unwrap();
        let mut reader = hound::WavReader::open(path).unwrap();
        assert_eq!(reader.spec(), SPEC);
        let samples = reader.samples().map(Result::unwrap).collect();
        (outcome, samples)
    }

    #[test]
    fn a_power_cut_loses_at_most_a_second_and_the_repair_recovers_the_rest() {
        let dir = temp_dir("powercut");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("call.wav");
        let mut h = harness(u64::MAX, 1, path.clone());
        // Before the writer takes it on, a power cut loses the file: nothing was synced.
        assert!(h.disk.power_cut().is_empty());
        h.open();
        let Harness {
            disk,
            mut writer,
            t0,
            mut call,
            ..
        } = h;

        // Everything a power cut may lose: a flush period, a wake period and the frame being
        // pushed, in sample frames.
        let period_frames = |d: Duration| d.as_micros() as usize * 8 / 1000;
        let bound = period_frames(FLUSH_PERIOD) + period_frames(WAKE_PERIOD) + FRAME_SAMPLES;
        let all = interleaved(250);
        let mut cuts = 0;
        // Five seconds of a call in virtual time: a frame pushed every 20 ms, the writer
        // waking every 25 ms, a power cut tried every 70 ms.
        for ms in 0..5000u64 {
            if ms % 20 == 0 {
                let (caller, sent) = pattern((ms / 20) as usize);
                assert!(call.push(&caller, &sent));
            }
            if ms % 25 == 0 {
                writer.tick(t0 + Duration::from_millis(ms));
            }
            if ms % 70 == 69 {
                let survivors = disk.power_cut();
                assert_eq!(survivors.len(), 1, "the file's entry survives");
                let (_, samples) = repaired_samples(&dir.join("cut.wav"), &survivors[0].1);
                let pushed = (ms / 20 + 1) as usize * FRAME_SAMPLES;
                let recovered = samples.len() / 2;
                assert!(
                    samples == all[..samples.len()],
                    "recovered audio differs at {ms} ms"
                );
                assert!(
                    pushed - recovered <= bound,
                    "{} frames lost at {ms} ms (bound {bound})",
                    pushed - recovered
                );
                cuts += 1;
            }
        }
        assert_eq!(cuts, 71);
        let syncs = disk.files.lock().unwrap()[0].lock().unwrap().syncs;
        // One at open, then about one a second: not one per write.
        assert!((5..=7).contains(&syncs), "{syncs} syncs");

        // A finished recording survives whole, its header intact.
        drop(call);
        writer.handle(inbox_next(&writer));
        writer.tick(t0 + Duration::from_millis(5000));
        assert!(writer.recordings.is_empty());
        let survivors = disk.power_cut();
        let (outcome, samples) = repaired_samples(&path, &survivors[0].1);
        assert_eq!(outcome, RepairOutcome::Intact);
        assert!(samples == all, "the finished file is complete");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The message the writer would receive next.
    fn inbox_next(writer: &Writer) -> ToWriter {
        writer.inbox.try_recv().unwrap()
    }

    /// A writer driven by hand on a [`PowerCutDisk`] allowing `sync_budget` syncs, with
    /// recording `id` at `path` prepared (not yet handed to the writer).
    struct Harness {
        disk: Arc<PowerCutDisk>,
        writer: Writer,
        events: UnboundedReceiver<RecordingEvent>,
        t0: Instant,
        recording: Option<Box<Recording>>,
        call: CallRecording,
    }

    fn harness(sync_budget: u64, id: u64, path: PathBuf) -> Harness {
        let disk = PowerCutDisk::new(sync_budget);
        let (tx, events) = unbounded_channel();
        let (to_writer, inbox) = mpsc::channel();
        let writer = Writer::new(inbox, tx, Arc::new(CutStorage(Arc::clone(&disk))));
        let (recording, call) =
            prepare(&CutStorage(Arc::clone(&disk)), id, path, &to_writer).unwrap();
        Harness {
            disk,
            t0: writer.last_flush,
            writer,
            events,
            recording: Some(recording),
            call,
        }
    }

    impl Harness {
        /// Hands the recording to the writer.
        fn open(&mut self) {
            let recording = self.recording.take().unwrap();
            self.writer.handle(ToWriter::Open(recording));
        }
    }

    #[test]
    fn a_failed_sync_stops_the_recording_not_the_call() {
        // The open's file sync, then failure.
        let mut h = harness(1, 7, PathBuf::from("/rec/seven.wav"));
        h.open();
        assert!(matches!(
            h.events.try_recv(),
            Ok(RecordingEvent::Started { id: 7, .. })
        ));
        // The directory's sync was the second: it failed, and the recording stopped at once.
        match h.events.try_recv() {
            Ok(RecordingEvent::Stopped {
                id: 7,
                reason: StopReason::SyncFailed(why),
                frames: 0,
                ..
            }) => assert!(why.contains("I/O error"), "{why}"),
            other => panic!("expected Stopped, got {other:?}"),
        }
        assert!(h.call.is_stopped());
        assert_eq!(h.call.stop_label(), Some("sync failed"));
        assert!(!h.call.push(&pattern(0).0, &pattern(0).1));
        h.writer.tick(h.t0 + FLUSH_PERIOD);
        assert!(h.writer.recordings.is_empty());

        // A sync failing later (at the periodic flush) stops the recording the same way.
        let Harness {
            mut writer,
            mut events,
            t0,
            mut call,
            ..
        } = {
            let mut h = harness(2, 8, PathBuf::from("/rec/eight.wav"));
            h.open();
            h
        };
        for k in 0..10 {
            assert!(call.push(&pattern(k).0, &pattern(k).1));
        }
        writer.tick(t0);
        assert_eq!(writer.recordings.len(), 1);
        writer.tick(t0 + FLUSH_PERIOD);
        assert!(writer.recordings.is_empty());
        assert!(matches!(
            events.try_recv(),
            Ok(RecordingEvent::Started { .. })
        ));
        assert!(matches!(
            events.try_recv(),
            Ok(RecordingEvent::Stopped {
                id: 8,
                reason: StopReason::SyncFailed(_),
                frames: 1600,
                ..
            })
        ));
        assert!(!call.push(&pattern(0).0, &pattern(0).1));
        assert_eq!(call.dropped_frames(), 0);
    }

    #[test]
    fn the_writer_thread_syncs_a_finished_recording_whole() {
        let disk = PowerCutDisk::new(u64::MAX);
        let dir = temp_dir("synced");
        let (tx, mut events) = unbounded_channel();
        let service = RecordingService::start_with(
            dir.clone(),
            tx,
            Arc::new(CutStorage(Arc::clone(&disk))),
            MAX_FRAMES,
        )
        .unwrap();
        let mut recording = service.open(5, "synced").unwrap();
        for k in 0..30 {
            assert!(recording.push(&pattern(k).0, &pattern(k).1));
        }
        recording.finish();
        expect_started_then_finished(&mut events, 4800);
        let survivors = disk.power_cut();
        assert_eq!(survivors.len(), 1);
        let (outcome, samples) = repaired_samples(&dir.join("synced.wav"), &survivors[0].1);
        assert_eq!(outcome, RepairOutcome::Intact);
        assert!(samples == interleaved(30));
        service.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_wav_size_limit_stops_the_recording_with_a_valid_file() {
        // The real limit: the RIFF size of a full recording fits 32 bits, one frame more not.
        assert!(MAX_FRAMES * BYTES_PER_FRAME + RIFF_HEADER_BYTES <= u64::from(u32::MAX));
        assert!((MAX_FRAMES + 1) * BYTES_PER_FRAME + RIFF_HEADER_BYTES > u64::from(u32::MAX));

        // A small one, on real files: 1000 frames of the 3200 pushed are kept.
        let dir = temp_dir("limit");
        let (tx, mut events) = unbounded_channel();
        let service = RecordingService::start_with(dir.clone(), tx, Arc::new(Files), 1000).unwrap();
        let mut recording = service.open(4, "long").unwrap();
        for k in 0..20 {
            assert!(recording.push(&pattern(k).0, &pattern(k).1));
        }
        assert!(matches!(
            next_event(&mut events),
            RecordingEvent::Started { .. }
        ));
        assert_eq!(
            next_event(&mut events),
            RecordingEvent::Stopped {
                id: 4,
                path: dir.join("long.wav"),
                reason: StopReason::SizeLimit,
                frames: 1000,
            }
        );
        assert_eq!(StopReason::SizeLimit.to_string(), "size limit");
        assert!(recording.is_stopped());
        assert_eq!(recording.stop_label(), Some("size limit"));
        drop(recording);
        service.shutdown();
        assert!(
            events.try_recv().is_err(),
            "a stopped recording does not also finish"
        );
        let path = dir.join("long.wav");
        assert_eq!(
            super::super::repair::repair_file(&path).unwrap(),
            RepairOutcome::Intact
        );
        let mut reader = hound::WavReader::open(&path).unwrap();
        let samples: Vec<i16> = reader.samples().map(Result::unwrap).collect();
        assert!(
            samples == interleaved(20)[..2000],
            "the first 1000 frames are kept"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
