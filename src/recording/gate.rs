//! The free-disk recording gate: whether new recordings may start and running ones go on.
//! The store's housekeeping sets it from `[recording].min_free_mb`; the media pipeline reads it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

/// Whether new recordings may start, and running ones may go on: false while the recordings'
/// file system has less than `[recording].min_free_mb` free. Cheap to clone and to read (one
/// relaxed atomic load), so the media pipeline may check it every frame.
#[derive(Debug, Clone)]
pub struct RecordingGate(Arc<AtomicBool>);

impl Default for RecordingGate {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl RecordingGate {
    /// A gate that allows recording until the first disk check says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn recording_allowed(&self) -> bool {
        self.0.load(Relaxed)
    }

    pub(crate) fn set(&self, allowed: bool) -> bool {
        self.0.swap(allowed, Relaxed)
    }
}
