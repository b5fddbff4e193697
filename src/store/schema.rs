//! The redb tables, the schema version stored in the file, and the migrations that bring an
//! older file up to [`CURRENT_VERSION`] when it is opened.
//!
//! | table | key → value | why |
//! |---|---|---|
//! | `meta` | name → u64 | `schema_version`, `alive_ms` (crash-time estimate) |
//! | `calls` | call id → [`CallRecord`](super::CallRecord) JSON | the history |
//! | `calls_by_start` | (started ms, call id) → () | newest-first listing, time filters, cursors |
//! | `calls_by_external_id` | `source:external id` → call id | idempotent `Started` |
//! | `calls_open` | call id → () | ringing/active calls, closed as interrupted at startup |
//! | `call_counts` | `source/status` → count | `/metrics` without scanning the history |
//! | `call_events` | (call id, seq) → event JSON | a call's timeline |
//! | `event_log` | seq → call id | the global order, for event-stream resume |
//! | `notes` | call id → note JSON | operators' notes, last write wins |
//! | `webhook_deliveries` | key → [`Delivery`](super::outbox::Delivery) JSON | the webhook outbox and recent deliveries |
//! | `webhook_due` | (next attempt ms, key) → () | pending deliveries, by when they are due |
//! | `webhook_held` | (message id, webhook) → key | deliveries owed before their payload exists |
//!
//! Version history: 0 is the layout before the indexes existed (only `calls`, `call_events`,
//! `event_log`, `notes`); 1 adds `calls_by_start`, `calls_by_external_id`, `calls_open` and
//! `call_counts`, built from `calls` by [`migrate`]; 2 adds the webhook outbox
//! (`webhook_deliveries`, `webhook_due`), empty; 3 adds `webhook_held`, empty.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::record::{CallRecord, CallStatus};
use crate::call::Source;

/// The schema this build reads and writes.
pub const CURRENT_VERSION: u64 = 3;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("calls");
pub(super) const BY_START: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("calls_by_start");
pub(super) const BY_EXTERNAL: TableDefinition<&str, &str> =
    TableDefinition::new("calls_by_external_id");
pub(super) const OPEN: TableDefinition<&str, ()> = TableDefinition::new("calls_open");
pub(super) const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("call_counts");
pub(super) const CALL_EVENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("call_events");
pub(super) const EVENT_LOG: TableDefinition<u64, &str> = TableDefinition::new("event_log");
pub(super) const NOTES: TableDefinition<&str, &[u8]> = TableDefinition::new("notes");
pub(super) const WEBHOOK_DELIVERIES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("webhook_deliveries");
pub(super) const WEBHOOK_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("webhook_due");
/// Held deliveries by (message id, webhook) → their key in `webhook_deliveries`.
pub(super) const WEBHOOK_HELD: TableDefinition<(&str, u64), u64> =
    TableDefinition::new("webhook_held");

pub(super) const VERSION_KEY: &str = "schema_version";
/// Last time earshot was seen alive with calls open (Unix ms); see `Store::mark_alive`.
pub(super) const ALIVE_KEY: &str = "alive_ms";

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the file has schema version {found}, newer than this earshot understands ({CURRENT_VERSION})"
    )]
    TooNew { found: u64 },
    #[error("call {id} in the file cannot be read: {reason}")]
    BadRecord { id: String, reason: String },
    #[error(transparent)]
    Storage(#[from] redb::Error),
}

impl From<redb::TableError> for MigrateError {
    fn from(e: redb::TableError) -> Self {
        Self::Storage(e.into())
    }
}

impl From<redb::StorageError> for MigrateError {
    fn from(e: redb::StorageError) -> Self {
        Self::Storage(e.into())
    }
}

/// Key of `calls_by_external_id`.
pub(super) fn external_key(source: Source, external_id: &str) -> String {
    format!("{}:{external_id}", source.as_str())
}

/// Key of `call_counts`.
pub(super) fn count_key(source: Source, status: CallStatus) -> String {
    format!("{}/{}", source.as_str(), status.as_str())
}

/// Adds `delta` to the count of (`source`, `status`).
pub(super) fn add_count(
    txn: &WriteTransaction,
    source: Source,
    status: CallStatus,
    delta: i64,
) -> Result<(), redb::Error> {
    let mut counts = txn.open_table(COUNTS)?;
    let key = count_key(source, status);
    let now = counts.get(key.as_str())?.map_or(0, |v| v.value());
    counts.insert(key.as_str(), now.saturating_add_signed(delta))?;
    Ok(())
}

/// Creates every table and brings the file to [`CURRENT_VERSION`]. Returns the version the
/// file had (`None` for a new file). A file without a version but with calls is version 0.
pub(super) fn migrate(txn: &WriteTransaction) -> Result<Option<u64>, MigrateError> {
    let found = txn.open_table(META)?.get(VERSION_KEY)?.map(|v| v.value());
    let found = match found {
        Some(v) => Some(v),
        None if !txn.open_table(CALLS)?.is_empty()? => Some(0),
        None => None,
    };
    if let Some(v) = found
        && v > CURRENT_VERSION
    {
        return Err(MigrateError::TooNew { found: v });
    }
    open_all(txn)?;
    let mut version = found.unwrap_or(CURRENT_VERSION);
    while version < CURRENT_VERSION {
        MIGRATIONS
            .get(version as usize)
            .map_or(Ok(()), |step| step(txn))?;
        version += 1;
    }
    txn.open_table(META)?.insert(VERSION_KEY, CURRENT_VERSION)?;
    Ok(found)
}

/// One step of the schema's history.
type Migration = fn(&WriteTransaction) -> Result<(), MigrateError>;

/// `MIGRATIONS[v]` turns version `v` into `v + 1`.
const MIGRATIONS: &[Migration] = &[v0_to_v1, v1_to_v2, v2_to_v3];

fn open_all(txn: &WriteTransaction) -> Result<(), MigrateError> {
    txn.open_table(META)?;
    txn.open_table(CALLS)?;
    txn.open_table(BY_START)?;
    txn.open_table(BY_EXTERNAL)?;
    txn.open_table(OPEN)?;
    txn.open_table(COUNTS)?;
    txn.open_table(CALL_EVENTS)?;
    txn.open_table(EVENT_LOG)?;
    txn.open_table(NOTES)?;
    txn.open_table(WEBHOOK_DELIVERIES)?;
    txn.open_table(WEBHOOK_DUE)?;
    txn.open_table(WEBHOOK_HELD)?;
    Ok(())
}

/// Version 3 adds held deliveries (`webhook_held`), which [`open_all`] creates empty.
fn v2_to_v3(_txn: &WriteTransaction) -> Result<(), MigrateError> {
    Ok(())
}

/// Version 2 adds the webhook outbox, which [`open_all`] creates empty.
fn v1_to_v2(_txn: &WriteTransaction) -> Result<(), MigrateError> {
    Ok(())
}

/// Version 1 adds the indexes: rebuilt from every stored call.
fn v0_to_v1(txn: &WriteTransaction) -> Result<(), MigrateError> {
    let calls = txn.open_table(CALLS)?;
    let mut by_start = txn.open_table(BY_START)?;
    let mut by_external = txn.open_table(BY_EXTERNAL)?;
    let mut open = txn.open_table(OPEN)?;
    let mut counts = std::collections::HashMap::<String, u64>::new();
    for entry in calls.iter()? {
        let (key, value) = entry?;
        let record: CallRecord =
            serde_json::from_slice(value.value()).map_err(|e| MigrateError::BadRecord {
                id: key.value().to_owned(),
                reason: e.to_string(),
            })?;
        let id = record.id.as_str();
        by_start.insert((record.started_ms, id), ())?;
        by_external.insert(
            external_key(record.source, &record.external_id).as_str(),
            id,
        )?;
        if record.status.is_open() {
            open.insert(id, ())?;
        }
        *counts
            .entry(count_key(record.source, record.status))
            .or_default() += 1;
    }
    let mut table = txn.open_table(COUNTS)?;
    for (key, n) in counts {
        table.insert(key.as_str(), n)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::{CallId, CallInfo};
    use crate::store::tests::temp_path;
    use crate::store::timestamp::system_time;
    use crate::store::{ListQuery, Store};
    use redb::Database;

    /// Writes a version-0 file: calls only, no indexes, `schema_version = 0`.
    fn write_v0(path: &std::path::Path, records: &[CallRecord]) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut calls = txn.open_table(CALLS).unwrap();
            for r in records {
                calls
                    .insert(r.id.as_str(), serde_json::to_vec(r).unwrap().as_slice())
                    .unwrap();
            }
            txn.open_table(META)
                .unwrap()
                .insert(VERSION_KEY, 0)
                .unwrap();
        }
        txn.commit().unwrap();
    }

    fn record(ms: u64, status: CallStatus) -> CallRecord {
        let info = CallInfo {
            id: CallId::new(system_time(ms), 7),
            source: Source::Sip,
            external_id: format!("ext-{ms}"),
            caller: "+15550001111".into(),
            callee: "1000".into(),
            started_at: system_time(ms),
        };
        let mut r = CallRecord::new(&info);
        r.status = status;
        if status == CallStatus::Ended {
            r.ended_ms = Some(ms + 5000);
        }
        r
    }

    #[test]
    fn opening_a_version_0_file_builds_the_indexes_and_upgrades_it() {
        let path = temp_path("v0");
        let (old, open) = (
            record(1_000_000, CallStatus::Ended),
            record(2_000_000, CallStatus::Active),
        );
        write_v0(&path, &[old.clone(), open.clone()]);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.previous_version(), Some(0));
        let listed: Vec<CallId> = store
            .list(&ListQuery::default())
            .unwrap()
            .calls
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, vec![open.id.clone(), old.id.clone()]);
        // The migration rebuilt `calls_open`, so the call left active was closed.
        assert_eq!(store.interrupted_at_open(), std::slice::from_ref(&open.id));
        let counts = store.counts().unwrap();
        assert!(
            counts.contains(&(Source::Sip, "ended", 1))
                && counts.contains(&(Source::Sip, "interrupted", 1)),
            "{counts:?}"
        );
        drop(store);
        assert_eq!(
            Store::open(&path).unwrap().previous_version(),
            Some(CURRENT_VERSION)
        );
    }

    #[test]
    fn a_file_without_a_version_but_with_calls_is_version_0() {
        let path = temp_path("unversioned");
        write_v0(&path, &[record(3_000_000, CallStatus::Ended)]);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().remove(VERSION_KEY).unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(Store::open(&path).unwrap().previous_version(), Some(0));
    }
}
