//! Housekeeping of recordings and history: retention of recordings (`[recording].keep_days`,
//! `max_total_mb`; oldest first, at startup and hourly), of the call history
//! (`[store].keep_days`, through [`super::retention`], at the same times) and the free-disk [`RecordingGate`](crate::recording::RecordingGate) (`min_free_mb`, checked
//! every few seconds), which the media pipeline consults before and while recording.
//!
//! Deleting a recording is recorded on its call (`recording_deleted` event, state `deleted`),
//! so the history says why the file is gone. Recordings of live calls are never deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::recording::RecordingGate;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::record::{RecordingState, store_event_json};
use redb::ReadableTable as _;

use super::schema::{CALL_EVENTS, CALLS, EVENT_LOG};
use super::timestamp::{DAY_MS, unix_ms};
use super::{PublishedEvent, Store, query, writer};
use crate::call::{CallId, Registry};
use crate::clock;
use crate::metrics::Metrics;

/// How often free disk space is checked.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often, while calls are live, the store records that earshot is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(2);
/// How often retention runs (it also runs at startup).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const MIB: u64 = 1024 * 1024;

/// The periodic housekeeping task and its settings.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    pub store: Store,
    /// Live calls, whose recordings are never deleted.
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub gate: RecordingGate,
    /// `[recording].dir`.
    pub dir: PathBuf,
    /// `[recording].keep_days`; 0 keeps recordings forever.
    pub keep_days: u32,
    /// `[recording].max_total_mb`; 0 means no limit.
    pub max_total_mb: u64,
    /// `[recording].min_free_mb`; 0 disables the gate.
    pub min_free_mb: u64,
    /// `[store].keep_days`: calls older than this are deleted with their history; 0 keeps
    /// them forever.
    pub history_keep_days: u32,
}

/// A WAV file in the recordings folder named for a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFile {
    pub path: PathBuf,
    pub id: CallId,
    pub bytes: u64,
    pub modified_ms: u64,
}

/// A file retention deleted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub file: RecordingFile,
    pub reason: String,
}

impl Housekeeping {
    /// Housekeeping as `[recording]` configures it.
    pub fn new(
        config: &crate::config::RecordingConfig,
        store: Store,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        gate: RecordingGate,
    ) -> Self {
        Self {
            store,
            registry,
            metrics,
            gate,
            dir: config.dir.clone(),
            keep_days: config.keep_days,
            max_total_mb: config.max_total_mb,
            min_free_mb: config.min_free_mb,
            history_keep_days: 0,
        }
    }

    /// Runs until `shutdown`: the disk check every [`DISK_CHECK_EVERY`], retention at once and
    /// every [`RETENTION_EVERY`], the alive mark every [`ALIVE_EVERY`] while calls are live.
    /// The file-system and store work runs on blocking threads.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut disk = tokio::time::interval(DISK_CHECK_EVERY);
        let mut retention = tokio::time::interval(RETENTION_EVERY);
        let mut alive = tokio::time::interval(ALIVE_EVERY);
        for timer in [&mut disk, &mut retention, &mut alive] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = alive.tick() => {
                    if !self.registry.is_empty() {
                        let store = self.store.clone();
                        if let Ok(Err(err)) = tokio::task::spawn_blocking(move || store.mark_alive()).await {
                            tracing::warn!(%err, "cannot record the alive mark");
                        }
                    }
                }
                _ = disk.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.check_disk()).await;
                }
                _ = retention.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        this.sweep();
                        this.purge_history();
                    })
                    .await;
                }
            }
        }
    }

    /// Reads free space and opens or closes the gate (with a margin, so it does not flap);
    /// guards the store's file system with the same threshold.
    pub fn check_disk(&self) {
        if self.min_free_mb == 0 {
            self.gate.set(true);
            self.store.set_low_space(false);
            return;
        }
        self.check_store_disk();
        let free = match fs4::available_space(&self.dir) {
            Ok(free) => free,
            // No recordings folder (recording disabled): nothing to guard.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                tracing::warn!(%err, dir = %self.dir.display(), "cannot read free disk space");
                return;
            }
        };
        self.metrics.disk_free_bytes.store(free, Relaxed);
        let low = self.min_free_mb * MIB;
        let margin = (low / 10).max(16 * MIB);
        let was = self.gate.recording_allowed();
        let allowed = if was {
            free >= low
        } else {
            free >= low + margin
        };
        if self.gate.set(allowed) != allowed {
            if allowed {
                tracing::info!(
                    free_mb = free / MIB,
                    "disk space recovered: recordings may start again"
                );
            } else {
                tracing::warn!(
                    free_mb = free / MIB,
                    min_free_mb = self.min_free_mb,
                    "disk almost full: recordings stop"
                );
            }
        }
    }

    /// Below `min_free_mb` on the store's file system, the store keeps what space is left for
    /// lifecycle events (see [`Store::set_low_space`]).
    fn check_store_disk(&self) {
        let dir = match self.store.path().parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Ok(free) = fs4::available_space(&dir) else {
            return;
        };
        let low = free < self.min_free_mb * MIB;
        if self.store.set_low_space(low) != low {
            if low {
                tracing::warn!(
                    free_mb = free / MIB,
                    "store disk almost full: only call lifecycle events are stored"
                );
            } else {
                tracing::info!(free_mb = free / MIB, "store disk space recovered");
            }
        }
    }

    /// Deletes the calls older than `history_keep_days` with their history and recordings, a
    /// batch per transaction; returns how many calls it deleted.
    pub fn purge_history(&self) -> usize {
        if self.history_keep_days == 0 {
            return 0;
        }
        let now = unix_ms(clock::wallclock());
        let cutoff = now.saturating_sub(u64::from(self.history_keep_days) * DAY_MS);
        let mut total = 0;
        loop {
            let purged = match self.store.purge_before(cutoff) {
                Ok(purged) => purged,
                Err(err) => {
                    tracing::warn!(%err, "cannot delete old call history");
                    break;
                }
            };
            for path in &purged.recordings {
                match std::fs::remove_file(path) {
                    Ok(()) => {
                        self.metrics.recordings_deleted.fetch_add(1, Relaxed);
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        tracing::warn!(file = %path.display(), %err, "cannot delete recording")
                    }
                }
            }
            self.metrics
                .calls_purged
                .fetch_add(purged.calls as u64, Relaxed);
            total += purged.calls;
            if purged.calls == 0 {
                break;
            }
        }
        if total > 0 {
            tracing::info!(
                calls = total,
                keep_days = self.history_keep_days,
                "old call history deleted"
            );
        }
        total
    }

    /// Applies retention now; returns what it deleted.
    pub fn sweep(&self) -> Vec<Deleted> {
        let files = match list_recordings(&self.dir) {
            Ok(files) => files,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(err) => {
                tracing::warn!(%err, dir = %self.dir.display(), "cannot list recordings for retention");
                return Vec::new();
            }
        };
        let live: HashSet<CallId> = self
            .registry
            .list()
            .iter()
            .map(|h| h.id().clone())
            .collect();
        let now = unix_ms(clock::wallclock());
        let plan = retention_plan(files, now, self.keep_days, self.max_total_mb * MIB, &live);
        let mut deleted = Vec::new();
        for d in plan {
            match std::fs::remove_file(&d.file.path) {
                Ok(()) => {
                    self.metrics.recordings_deleted.fetch_add(1, Relaxed);
                    tracing::info!(call = %d.file.id, reason = %d.reason, "recording deleted");
                    if let Err(err) = self.store.recording_deleted(&d.file.id, &d.reason) {
                        tracing::warn!(call = %d.file.id, %err, "cannot record the recording's deletion");
                    }
                    deleted.push(d);
                }
                Err(err) => {
                    tracing::warn!(file = %d.file.path.display(), %err, "cannot delete recording")
                }
            }
        }
        deleted
    }
}

/// The `<call id>.wav` files in `dir` (other files are never touched).
pub fn list_recordings(dir: &Path) -> std::io::Result<Vec<RecordingFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wav"))
            .and_then(CallId::parse)
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified_ms = meta.modified().map(unix_ms).unwrap_or(0);
        files.push(RecordingFile {
            path,
            id,
            bytes: meta.len(),
            modified_ms,
        });
    }
    Ok(files)
}

/// Which files to delete: those older than `keep_days` (by last write), then the oldest until
/// the rest fit `max_total_bytes`. Files of `live` calls are kept and still count.
pub fn retention_plan(
    mut files: Vec<RecordingFile>,
    now_ms: u64,
    keep_days: u32,
    max_total_bytes: u64,
    live: &HashSet<CallId>,
) -> Vec<Deleted> {
    files.sort_by_key(|f| (f.modified_ms, f.id.clone()));
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let cutoff = now_ms.saturating_sub(u64::from(keep_days) * DAY_MS);
    let mut plan = Vec::new();
    for file in files {
        if live.contains(&file.id) {
            continue;
        }
        let reason = if keep_days > 0 && file.modified_ms < cutoff {
            format!("older than {keep_days} days")
        } else if max_total_bytes > 0 && total > max_total_bytes {
            format!("recordings over {} MiB", max_total_bytes / MIB)
        } else {
            continue;
        };
        total -= file.bytes;
        plan.push(Deleted { file, reason });
    }
    plan
}

impl Store {
    /// Marks call `id`'s recording deleted and records a `recording_deleted` event. The call's
    /// transcript goes with its recording (personal data, kept no longer).
    pub fn recording_deleted(&self, id: &CallId, reason: &str) -> Result<(), redb::Error> {
        let _order = self.append_lock();
        let txn = self.db().begin_write()?;
        let published = {
            let mut calls = txn.open_table(CALLS)?;
            let Some(mut record) = query::load_record(&calls, id.as_str())? else {
                return Ok(());
            };
            if let Some(recording) = &mut record.recording {
                recording.state = RecordingState::Deleted;
            }
            record.transcript_segments = 0;
            query::save_record(&mut calls, &record)?;
            let mut events = txn.open_table(CALL_EVENTS)?;
            let mut transcript = Vec::new();
            for entry in events.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
                let (key, json) = entry?;
                let is_transcript = serde_json::from_slice::<serde_json::Value>(json.value())
                    .is_ok_and(|e| e["type"] == "transcript");
                if is_transcript {
                    transcript.push(key.value().1);
                }
            }
            for seq in transcript {
                events.remove((id.as_str(), seq))?;
            }
            drop(events);
            let seq = writer::next_seq(&txn)?;
            let at_ms = unix_ms(clock::wallclock());
            let json = store_event_json(seq, at_ms, id, "recording_deleted", reason);
            txn.open_table(CALL_EVENTS)?
                .insert((id.as_str(), seq), json.as_bytes())?;
            txn.open_table(EVENT_LOG)?.insert(seq, id.as_str())?;
            PublishedEvent {
                seq,
                call_id: id.clone(),
                json,
            }
        };
        txn.commit()?;
        self.publish(vec![published]);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::timestamp::system_time;

    fn file(minute: u64, mb: u64) -> RecordingFile {
        let id = CallId::new(system_time(minute * 60_000), minute as u32);
        RecordingFile {
            path: PathBuf::from(format!("{id}.wav")),
            id,
            bytes: mb * MIB,
            modified_ms: minute * 60_000,
        }
    }

    #[test]
    fn deletes_files_older_than_keep_days_then_oldest_over_the_size_limit() {
        let now = 40 * DAY_MS;
        let old = RecordingFile {
            modified_ms: 5 * DAY_MS,
            ..file(1, 1)
        };
        let files = vec![
            file(57_000, 3),
            old.clone(),
            file(57_001, 3),
            file(57_002, 3),
        ];
        let plan = retention_plan(files, now, 30, 7 * MIB, &HashSet::new());
        let deleted: Vec<_> = plan
            .iter()
            .map(|d| (d.file.id.clone(), d.reason.clone()))
            .collect();
        assert_eq!(
            deleted,
            vec![
                (old.id, "older than 30 days".to_owned()),
                (file(57_000, 3).id, "recordings over 7 MiB".to_owned())
            ]
        );
    }

    #[test]
    fn recordings_of_live_calls_are_kept() {
        let live_file = file(1, 10);
        let live = HashSet::from([live_file.id.clone()]);
        let plan = retention_plan(vec![live_file, file(2, 10)], 3 * 60_000, 0, 5 * MIB, &live);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].file.id, file(2, 10).id);
    }

    #[test]
    fn nothing_is_deleted_without_limits_and_foreign_files_are_ignored() {
        assert!(retention_plan(vec![file(1, 100)], 100 * DAY_MS, 0, 0, &HashSet::new()).is_empty());
        let dir = std::env::temp_dir().join(format!("earshot-retention-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.wav"), b"x").unwrap();
        std::fs::write(dir.join(format!("{}.wav", file(3, 0).id)), b"RIFF").unwrap();
        let listed = list_recordings(&dir).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].id.clone(), listed[0].bytes), (file(3, 0).id, 4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_gate_closes_below_min_free_and_reopens_above_the_margin() {
        let store = Store::open(crate::store::tests::temp_path("gate")).unwrap();
        let dir = store.path().parent().unwrap().to_path_buf();
        let free = fs4::available_space(&dir).unwrap();
        let mut hk = Housekeeping {
            store,
            registry: Arc::default(),
            metrics: Arc::default(),
            gate: RecordingGate::new(),
            dir,
            keep_days: 0,
            max_total_mb: 0,
            min_free_mb: free / MIB + 1024,
            history_keep_days: 0,
        };
        hk.check_disk();
        assert!(!hk.gate.recording_allowed());
        assert!(hk.metrics.disk_free_bytes.load(Relaxed) > 0);
        hk.min_free_mb = 1;
        hk.check_disk();
        assert!(hk.gate.recording_allowed());
    }
}
