//! The call history, in one redb file: calls, their events, notes and the global event log,
//! with crash recovery of call states and the schema version. Plus the housekeeping around
//! recordings (retention, the free-disk gate), which shares its view of calls.
//!
//! - [`schema`]: tables, the stored schema version, migrations.
//! - [`record`]: [`CallRecord`] and how each `CallEvent` changes it; event JSON.
//! - [`writer`]: the store thread: persists every `CallEvent` durably, then publishes it with
//!   its global sequence number for the event stream.
//! - [`query`]: listing with cursors and filters, one call with its events, analytics, notes,
//!   event-log replay. Blocking: call them from `spawn_blocking`.
//! - [`outbox`]: the webhook outbox — deliveries enqueued with their events, attempts,
//!   the recent list.
//! - [`housekeeping`]: recording retention and the free-disk [`RecordingGate`](crate::recording::RecordingGate).
//! - [`retention`]: deleting calls older than `[store].keep_days` with their history.
//! - [`timestamp`]: Unix milliseconds, RFC 3339.
//!
//! Every write transaction commits with `Durability::Immediate` (fsync) and runs on the store
//! thread or a blocking thread, never on a tokio worker. Writes that append events hold
//! `Inner::append` from `begin_write` until they have published, so subscribers see events in
//! sequence order.

pub mod housekeeping;
pub mod outbox;
pub mod query;
pub mod record;
pub mod retention;
pub mod schema;
pub mod timestamp;
pub mod writer;

pub use housekeeping::Housekeeping;
pub use outbox::{AttemptResult, Delivery, DeliveryState, NewDelivery, Outbox};
pub use query::{
    Analytics, CallDetail, CallPage, Cursor, Interval, ListQuery, Note, NoteError, QueryError,
};
pub use record::{CallRecord, CallStatus, RecordingInfo, RecordingState, TransferRecord};
pub use schema::{CURRENT_VERSION, MigrateError};
pub use writer::WriterHandle;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, DatabaseError, ReadableTable, StorageError};
use tokio::sync::broadcast;

use crate::call::CallId;
use schema::{CALL_EVENTS, CALLS, EVENT_LOG, OPEN};

/// A handle on the open database for one transaction; none while it is being reopened.
pub(super) struct Db(Option<Arc<Database>>);

impl Db {
    pub(super) fn begin_write(&self) -> Result<redb::WriteTransaction, redb::TransactionError> {
        match &self.0 {
            Some(db) => db.begin_write(),
            None => Err(StorageError::DatabaseClosed.into()),
        }
    }

    pub(super) fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        use redb::ReadableDatabase as _;
        match &self.0 {
            Some(db) => db.begin_read(),
            None => Err(StorageError::DatabaseClosed.into()),
        }
    }
}

/// Events kept for slow subscribers before they are told they lagged (and dropped).
const BROADCAST_CAPACITY: usize = 1024;
/// redb's page cache; the default (1 GiB) is too much for a small box.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// An event as persisted and published: its global sequence number and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    /// Position in the global event log (1, 2, ...); the event stream's `id:`.
    pub seq: u64,
    pub call_id: CallId,
    /// The JSON object, as stored (see [`record::event_json`]).
    pub json: String,
}

/// Why the store file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store {path}: the file is in use by another process (is another earshot running?)")]
    Locked { path: PathBuf },
    #[error("store {path}: not a valid earshot database (corrupt, or not a redb file): {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("store {path}: redb file format {version} needs a manual upgrade")]
    UpgradeRequired { path: PathBuf, version: u8 },
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {source}")]
    Schema { path: PathBuf, source: MigrateError },
    #[error("store {path}: {detail}")]
    Storage { path: PathBuf, detail: String },
}

/// The call history. Cheap to clone; every clone is the same open file.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open database; `None` only while [`Store::reopen`] replaces it after an IO error.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    events: broadcast::Sender<Arc<PublishedEvent>>,
    /// Held by writes that append events, from `begin_write` to the end of publishing, so the
    /// broadcast carries events in sequence order (redb alone only orders the commits).
    append: Mutex<()>,
    /// Calls found open at startup and closed as interrupted.
    interrupted: Vec<CallId>,
    /// The schema version the file had when opened (`None`: a new file).
    previous_version: Option<u64>,
    /// Turns call events into webhook deliveries, in the events' own transaction.
    outbox: std::sync::OnceLock<Arc<dyn Outbox>>,
    /// The store's file system is nearly full: only lifecycle events are written, so the
    /// space left goes to what the history must have (see [`Store::set_low_space`]).
    low_space: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, migrates its schema, and closes calls a crash
    /// left open as `interrupted`. Blocking (it commits): call it before starting the runtime's
    /// work or from `spawn_blocking`. Without an outbox hook: see [`Store::open_with`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        Store::open_with(path, None)
    }

    /// [`Store::open`] with the webhook outbox hook installed first, so the deliveries the
    /// calls closed as interrupted owe are inserted in the same transaction that closes them.
    pub fn open_with(
        path: impl AsRef<Path>,
        outbox: Option<Arc<dyn Outbox>>,
    ) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| open_error(&path, e))?;
        let storage = |e: redb::Error| match e {
            redb::Error::Corrupted(detail) => OpenError::Corrupt {
                path: path.clone(),
                detail,
            },
            other => OpenError::Storage {
                path: path.clone(),
                detail: other.to_string(),
            },
        };
        let txn = db.begin_write().map_err(|e| storage(e.into()))?;
        let previous_version = schema::migrate(&txn).map_err(|source| OpenError::Schema {
            path: path.clone(),
            source,
        })?;
        let interrupted = close_open_calls(&txn, outbox.as_deref()).map_err(storage)?;
        let forget_alive = |txn: &redb::WriteTransaction| -> Result<(), redb::Error> {
            txn.open_table(schema::META)?.remove(schema::ALIVE_KEY)?;
            Ok(())
        };
        forget_alive(&txn).map_err(storage)?;
        txn.commit().map_err(|e| storage(e.into()))?;
        if !interrupted.is_empty() {
            tracing::warn!(
                calls = interrupted.len(),
                "calls left open by the last run closed as interrupted"
            );
        }
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let hook = std::sync::OnceLock::new();
        if let Some(outbox) = outbox {
            let _ = hook.set(outbox);
        }
        Ok(Store {
            inner: Arc::new(Inner {
                db: std::sync::RwLock::new(Some(Arc::new(db))),
                path,
                events,
                append: Mutex::new(()),
                interrupted,
                previous_version,
                outbox: hook,
                low_space: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// [`Store::open_with`] on the blocking pool, for callers on the runtime.
    pub async fn open_async(
        path: PathBuf,
        outbox: Option<Arc<dyn Outbox>>,
    ) -> Result<Store, OpenError> {
        let shown = path.clone();
        tokio::task::spawn_blocking(move || Store::open_with(path, outbox))
            .await
            .unwrap_or_else(|e| {
                Err(OpenError::Storage {
                    path: shown,
                    detail: format!("the open task failed: {e}"),
                })
            })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Calls that were still ringing or active in the file and were closed as interrupted.
    pub fn interrupted_at_open(&self) -> &[CallId] {
        &self.inner.interrupted
    }

    /// The schema version the file had before this open migrated it (`None`: new file).
    pub fn previous_version(&self) -> Option<u64> {
        self.inner.previous_version
    }

    /// Events as they are persisted. A receiver that falls more than
    /// [`BROADCAST_CAPACITY`] events behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PublishedEvent>> {
        self.inner.events.subscribe()
    }

    /// Records that earshot is alive now (durably), so calls a crash interrupts end near the
    /// crash rather than at their last event. The housekeeping task calls it every few seconds
    /// while calls are live.
    pub fn mark_alive(&self) -> Result<(), redb::Error> {
        let txn = self.db().begin_write()?;
        txn.open_table(schema::META)?.insert(
            schema::ALIVE_KEY,
            timestamp::unix_ms(crate::clock::wallclock()),
        )?;
        txn.commit()?;
        Ok(())
    }

    fn db(&self) -> Db {
        let slot = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
        Db(slot.clone())
    }

    /// Guards the store's disk as the recordings' is guarded: while `low` (free space under
    /// `[recording].min_free_mb`, checked by the housekeeping task), the store thread writes
    /// lifecycle events only and drops details (DTMF, hold, listen, agent notices), counted.
    pub fn set_low_space(&self, low: bool) -> bool {
        self.inner
            .low_space
            .swap(low, std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn low_space(&self) -> bool {
        self.inner
            .low_space
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes and opens the database again: after a failed commit (a full disk, an IO error)
    /// redb refuses every transaction until then. Waits up to a second for queries still
    /// using the old handle. Blocking; the store thread calls it before retrying a commit.
    // The short waits block the store thread, never a tokio worker.
    #[allow(clippy::disallowed_methods)]
    pub(super) fn reopen(&self) -> Result<(), OpenError> {
        let mut slot = self.inner.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            let deadline = crate::clock::now() + std::time::Duration::from_secs(1);
            while Arc::strong_count(&old) > 1 && crate::clock::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let path = &self.inner.path;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        *slot = Some(Arc::new(db));
        Ok(())
    }

    fn append_lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave anything half-updated.
        self.inner.append.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, events: Vec<PublishedEvent>) {
        for event in events {
            // No subscriber is not an error.
            let _ = self.inner.events.send(Arc::new(event));
        }
    }
}

/// Maps redb's open errors to ours.
fn open_error(path: &Path, e: DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen => OpenError::Locked { path },
        DatabaseError::UpgradeRequired(version) => OpenError::UpgradeRequired { path, version },
        DatabaseError::Storage(StorageError::Corrupted(detail)) => {
            OpenError::Corrupt { path, detail }
        }
        DatabaseError::Storage(StorageError::Io(source)) => match source.kind() {
            // A file too short or inconsistent for redb reads past its end.
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => {
                OpenError::Corrupt {
                    path,
                    detail: source.to_string(),
                }
            }
            std::io::ErrorKind::WouldBlock => OpenError::Locked { path },
            _ => OpenError::Io { path, source },
        },
        other => OpenError::Storage {
            path,
            detail: other.to_string(),
        },
    }
}

/// Closes every call of `calls_open` as interrupted, as of its last event or the last
/// [`Store::mark_alive`] after it, and records an `interrupted` event for it, with the
/// deliveries `outbox` says it owes.
fn close_open_calls(
    txn: &redb::WriteTransaction,
    outbox: Option<&dyn Outbox>,
) -> Result<Vec<CallId>, redb::Error> {
    let alive_ms = txn
        .open_table(schema::META)?
        .get(schema::ALIVE_KEY)?
        .map_or(0, |v| v.value());
    let ids: Vec<String> = {
        let open = txn.open_table(OPEN)?;
        open.iter()?
            .map(|e| e.map(|(k, _)| k.value().to_owned()))
            .collect::<Result<_, _>>()?
    };
    let mut closed = Vec::new();
    let mut seq = writer::next_seq(txn)?;
    for id in ids {
        txn.open_table(OPEN)?.remove(id.as_str())?;
        let Some(mut record) = query::load_record(&txn.open_table(CALLS)?, &id)? else {
            continue;
        };
        let last_ms = {
            let events = txn.open_table(CALL_EVENTS)?;
            let mut range = events.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?;
            match range.next_back() {
                Some(entry) => {
                    let (_, json) = entry?;
                    serde_json::from_slice::<serde_json::Value>(json.value())
                        .ok()
                        .and_then(|v| v.get("at_ms").and_then(serde_json::Value::as_u64))
                        .unwrap_or(record.started_ms)
                }
                None => record.started_ms,
            }
        };
        let last_ms = last_ms.max(alive_ms);
        let before = record.status;
        record.interrupt(last_ms);
        schema::add_count(txn, record.source, before, -1)?;
        schema::add_count(txn, record.source, record.status, 1)?;
        let json = record::store_event_json(
            seq,
            last_ms,
            &record.id,
            "interrupted",
            "earshot stopped during the call",
        );
        txn.open_table(CALL_EVENTS)?
            .insert((id.as_str(), seq), json.as_bytes())?;
        txn.open_table(EVENT_LOG)?.insert(seq, id.as_str())?;
        if let Some(outbox) = outbox {
            let owed = outbox.interrupted(&record, seq, last_ms);
            outbox::insert_deliveries(txn, &owed, last_ms)?;
        }
        seq += 1;
        query::save_record(&mut txn.open_table(CALLS)?, &record)?;
        closed.push(record.id);
    }
    Ok(closed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "earshot-store-{}-{name}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("store.redb")
    }

    #[test]
    fn garbage_file_is_a_clear_corrupt_error_not_a_panic() {
        let path = temp_path("garbage");
        for garbage in [b"this is not a database\n".to_vec(), vec![0xa5; 1 << 16]] {
            std::fs::write(&path, &garbage).unwrap();
            let err = Store::open(&path).unwrap_err();
            assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
            assert!(
                err.to_string().contains("not a valid earshot database"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_file_held_open_elsewhere_is_reported_as_locked() {
        let path = temp_path("locked");
        let _held = Database::create(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
    }

    #[test]
    fn new_file_gets_the_current_schema_version() {
        let path = temp_path("fresh");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.previous_version(), None);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.previous_version(), Some(CURRENT_VERSION));
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        let path = temp_path("newer");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(schema::META)
                .unwrap()
                .insert(schema::VERSION_KEY, CURRENT_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                OpenError::Schema {
                    source: MigrateError::TooNew { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
