//! The recording writer: one thread writes every call's stereo WAV (hound) from its own ring.
//!
//! A call task holds a [`CallRecording`] and pushes one frame pair every 20 ms — left the
//! caller (what we received, after the jitter buffer), right what earshot sent. The push only
//! copies into an rtrb ring allocated at open (about 2 s deep): no allocation, no lock, no
//! syscall, so a slow disk never delays a call. The writer thread wakes every
//! [`WAKE_PERIOD`], drains every ring into its file and, about once per [`FLUSH_PERIOD`],
//! flushes and rewrites the header sizes, so a crash loses at most about a second (which
//! [`super::repair`] recovers at the next start).
//!
//! A write error (a full disk) stops that recording only: its file is closed as far as
//! possible and its header repaired from what reached the disk, a
//! [`RecordingEvent::Stopped`] is sent, and the call keeps pushing (into nothing) unharmed.
//! No fsync is done: the page cache survives a process crash, not a power cut.

use std::fmt;
use std::fs::OpenOptions;
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

/// Where recordings are stored: files, or a stand-in in tests (a disk that fills up).
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// Creates a new, empty file at `path`; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WavSink>>;
    /// Makes the most of a file whose writing failed (after the writer was dropped).
    fn salvage(&self, path: &Path);
}

/// Recordings as files on disk.
#[derive(Debug)]
struct Files;

impl Storage for Files {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WavSink>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(BufWriter::new(file)))
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
        RecordingService::start_with(dir, events, Arc::new(Files))
    }

    /// [`RecordingService::start`] with another storage (tests).
    pub(crate) fn start_with(
        dir: PathBuf,
        events: UnboundedSender<RecordingEvent>,
        storage: Arc<dyn Storage>,
    ) -> io::Result<RecordingService> {
        std::fs::create_dir_all(&dir)?;
        let (to_writer, inbox) = mpsc::channel();
        let thread_storage = Arc::clone(&storage);
        let thread = std::thread::Builder::new()
            .name("earshot-recording".to_owned())
            .spawn(move || Writer::new(inbox, events, thread_storage).run())?;
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
        let create_error = |source| RecordingError::Create {
            path: path.clone(),
            source,
        };
        let sink = self.storage.create(&path).map_err(create_error)?;
        let mut writer = WavWriter::new(sink, SPEC).map_err(|e| create_error(hound_to_io(e)))?;
        // Put the header on disk now, so even a crash within the first second leaves a file
        // the repair recognises.
        writer.flush().map_err(|e| create_error(hound_to_io(e)))?;

        let (producer, consumer) = RingBuffer::new(RING_SAMPLES);
        let shared = Arc::new(Shared::default());
        let recording = Recording {
            id,
            path: path.clone(),
            writer,
            ring: consumer,
            shared: Arc::clone(&shared),
            finishing: false,
        };
        if self
            .to_writer
            .send(ToWriter::Open(Box::new(recording)))
            .is_err()
        {
            return Err(RecordingError::WriterGone);
        }
        Ok(CallRecording {
            id,
            path,
            ring: producer,
            shared,
            to_writer: self.to_writer.clone(),
        })
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
            self.drain_all();
            if shutdown {
                return;
            }
            let now = clock::now();
            if now.duration_since(self.last_flush) >= FLUSH_PERIOD {
                self.last_flush = now;
                self.flush_all();
            }
        }
    }

    /// Applies one message; true for shutdown.
    fn handle(&mut self, message: ToWriter) -> bool {
        match message {
            ToWriter::Open(recording) => {
                self.send(RecordingEvent::Started {
                    id: recording.id,
                    path: recording.path.clone(),
                });
                self.recordings.push(*recording);
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
            let result = drain(recording);
            match result {
                Err(err) => {
                    let recording = self.recordings.swap_remove(i);
                    self.stop(recording, &err);
                }
                Ok(()) if recording.finishing => {
                    let recording = self.recordings.swap_remove(i);
                    self.finalize(recording);
                }
                Ok(()) => i += 1,
            }
        }
    }

    /// Flushes every file, rewriting its header sizes.
    fn flush_all(&mut self) {
        let mut i = 0;
        while i < self.recordings.len() {
            match self.recordings[i].writer.flush() {
                Ok(()) => i += 1,
                Err(err) => {
                    let recording = self.recordings.swap_remove(i);
                    self.stop(recording, &err);
                }
            }
        }
    }

    fn finalize(&mut self, recording: Recording) {
        let Recording {
            id,
            path,
            writer,
            shared,
            ..
        } = recording;
        let frames = u64::from(writer.duration());
        match writer.finalize() {
            Ok(()) => self.send(RecordingEvent::Finished {
                id,
                path,
                frames,
                dropped: shared.dropped.load(Relaxed),
            }),
            Err(err) => {
                shared.stopped.store(true, Relaxed);
                self.storage.salvage(&path);
                self.send(RecordingEvent::Stopped {
                    id,
                    path,
                    reason: StopReason::from_hound(&err),
                    frames,
                });
            }
        }
    }

    fn stop(&mut self, recording: Recording, err: &hound::Error) {
        let Recording {
            id,
            path,
            writer,
            shared,
            ..
        } = recording;
        shared.stopped.store(true, Relaxed);
        let frames = u64::from(writer.duration());
        // Dropping the writer rewrites the header as far as it can; salvage then makes it
        // match what actually reached the disk.
        drop(writer);
        self.storage.salvage(&path);
        tracing::warn!(call_id = id, path = %path.display(), error = %err, "recording stopped");
        self.send(RecordingEvent::Stopped {
            id,
            path,
            reason: StopReason::from_hound(err),
            frames,
        });
    }

    fn send(&self, event: RecordingEvent) {
        // Nobody listening is fine: events are informational.
        let _ = self.events.send(event);
    }
}

/// Moves everything queued in `recording`'s ring into its file.
fn drain(recording: &mut Recording) -> Result<(), hound::Error> {
    let available = recording.ring.slots();
    let Ok(chunk) = recording.ring.read_chunk(available) else {
        return Ok(());
    };
    let (first, second) = chunk.as_slices();
    let written = first
        .iter()
        .chain(second)
        .try_for_each(|&sample| recording.writer.write_sample(sample));
    chunk.commit_all();
    written
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
        let expected: Vec<i16> = (0..90)
            .flat_map(|k| {
                let (caller, sent) = pattern(k);
                caller
                    .into_iter()
                    .zip(sent)
                    .flat_map(|(l, r)| [l, r])
                    .collect::<Vec<_>>()
            })
            .collect();
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

    impl Storage for SmallDisk {
        fn create(&self, path: &Path) -> io::Result<Box<dyn WavSink>> {
            self.files.lock().unwrap().push(path.to_owned());
            Ok(Box::new(SmallFile {
                data: Cursor::new(Vec::new()),
                capacity: self.capacity,
            }))
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
        let service = RecordingService::start_with(dir.clone(), tx, disk.clone()).unwrap();
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
        assert!(matches!(
            next_event(&mut events),
            RecordingEvent::Started { .. }
        ));
        assert!(matches!(
            next_event(&mut events),
            RecordingEvent::Finished { frames: 1600, .. }
        ));
        assert!(!recording.push(&pattern(0).0, &pattern(0).1));
        drop(recording);
        let reader = hound::WavReader::open(dir.join("open-at-shutdown.wav")).unwrap();
        assert_eq!(reader.duration(), 1600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
