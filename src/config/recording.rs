//! `[recording]`: where WAV recordings go and how long they are kept.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Errors, non_empty_path};

/// `[recording]`: WAV recordings of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingConfig {
    /// Whether calls are recorded at all.
    pub enabled: bool,
    /// Folder for the WAV files.
    pub dir: PathBuf,
    /// Recordings older than this many days are deleted; 0 keeps them forever.
    pub keep_days: u32,
    /// Oldest recordings are deleted beyond this total size in MiB; 0 means no limit.
    pub max_total_mb: u64,
    /// New recordings are not started when the disk has less than this many MiB free, so a
    /// full disk never takes the store down with it.
    pub min_free_mb: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: true,
            dir: PathBuf::from("recordings"),
            keep_days: 30,
            max_total_mb: 0,
            min_free_mb: 200,
        }
    }
}

/// `[recording]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRecording {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    keep_days: Option<u32>,
    max_total_mb: Option<u64>,
    min_free_mb: Option<u64>,
}

pub(super) fn validate_recording(e: &mut Errors, raw: RawRecording) -> RecordingConfig {
    let d = RecordingConfig::default();
    RecordingConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        dir: non_empty_path(e, "recording.dir", raw.dir, d.dir),
        keep_days: raw.keep_days.unwrap_or(d.keep_days),
        max_total_mb: raw.max_total_mb.unwrap_or(d.max_total_mb),
        min_free_mb: raw.min_free_mb.unwrap_or(d.min_free_mb),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::test_support::{invalid, paths};

    #[test]
    fn dir_must_not_be_empty() {
        let errors = invalid("[recording]\ndir = \"\"\n");
        assert_eq!(paths(&errors), ["recording.dir"]);
        assert_eq!(errors[0].reason, "must not be empty");
    }
}
