//! Call recordings: one stereo 8 kHz 16-bit WAV per call (left the caller, right what earshot
//! sent), written by one thread for all calls, and the startup repair of files a crash left
//! unfinished.
//!
//! - [`writer`]: [`RecordingService`] and its writer thread; the call task's [`CallRecording`].
//! - [`gate`]: the free-disk [`RecordingGate`], set by the store's housekeeping.
//! - [`repair`]: rewrites the header sizes of WAV files that were not closed.

pub mod gate;
pub mod repair;
pub mod writer;

pub use gate::RecordingGate;
pub use repair::{RepairOutcome, Repaired, repair_dir, repair_file};
pub use writer::{CallRecording, RecordingError, RecordingEvent, RecordingService, StopReason};
