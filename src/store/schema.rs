//! The redb tables, the schema version stored in the file, and the migrations that bring an
//! older file up to [`CURRENT_VERSION`] when it is opened.
//!
//! | table | key → value | why |
//! |---|---|---|
//! | `meta` | name → u64 | `schema_version` |
//! | `calls` | call id → [`CallRecord`](super::CallRecord) JSON | the history |
//! | `calls_by_start` | (started ms, call id) → () | newest-first listing, time filters, cursors |
//! | `calls_by_external_id` | `source:external id` → call id | idempotent `Started` |
//! | `calls_open` | call id → () | ringing/active calls, closed as interrupted at startup |
//! | `call_counts` | `source/status` → count | `/metrics` without scanning the history |
//! | `call_events` | (call id, seq) → event JSON | a call's timeline |
//! | `event_log` | seq → call id | the global order, for event-stream resume |
//! | `notes` | call id → note JSON | operators' notes, last write wins |
//!
//! Version history: 0 is the layout before the indexes existed (only `calls`, `call_events`,
//! `event_log`, `notes`); 1 adds `calls_by_start`, `calls_by_external_id`, `calls_open` and
//! `call_counts`, built from `calls` by [`migrate`].

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::record::{CallRecord, CallStatus};
use crate::call::Source;

/// The schema this build reads and writes.
pub const CURRENT_VERSION: u64 = 1;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const CALLS: TableDefinition<&str, &[u8]> = TableDefinition::new("calls");
pub(super) const BY_START: TableDefinition<(u64, &str), ()> = TableDefinition::new("calls_by_start");
pub(super) const BY_EXTERNAL: TableDefinition<&str, &str> = TableDefinition::new("calls_by_external_id");
pub(super) const OPEN: TableDefinition<&str, ()> = TableDefinition::new("calls_open");
pub(super) const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("call_counts");
pub(super) const CALL_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("call_events");
pub(super) const EVENT_LOG: TableDefinition<u64, &str> = TableDefinition::new("event_log");
pub(super) const NOTES: TableDefinition<&str, &[u8]> = TableDefinition::new("notes");

pub(super) const VERSION_KEY: &str = "schema_version";

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the file has schema version {found}, newer than this earshot understands ({CURRENT_VERSION})")]
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
    let found = {
        let meta = txn.open_table(META)?;
        let version = meta.get(VERSION_KEY)?.map(|v| v.value());
        version
    };
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
        MIGRATIONS.get(version as usize).map_or(Ok(()), |step| step(txn))?;
        version += 1;
    }
    txn.open_table(META)?.insert(VERSION_KEY, CURRENT_VERSION)?;
    Ok(found)
}

/// `MIGRATIONS[v]` turns version `v` into `v + 1`.
const MIGRATIONS: &[fn(&WriteTransaction) -> Result<(), MigrateError>] = &[v0_to_v1];

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
        let record: CallRecord = serde_json::from_slice(value.value())
            .map_err(|e| MigrateError::BadRecord { id: key.value().to_owned(), reason: e.to_string() })?;
        let id = record.id.as_str();
        by_start.insert((record.started_ms, id), ())?;
        by_external.insert(external_key(record.source, &record.external_id).as_str(), id)?;
        if record.status.is_open() {
            open.insert(id, ())?;
        }
        *counts.entry(count_key(record.source, record.status)).or_default() += 1;
    }
    let mut table = txn.open_table(COUNTS)?;
    for (key, n) in counts {
        table.insert(key.as_str(), n)?;
    }
    Ok(())
}
