//! Retention of the call history (`[store].keep_days`): calls that started before the cutoff
//! are deleted with everything stored about them — the record and its indexes, its events
//! (transcripts included) and their places in the global event log, and its note. Calls still
//! open are never deleted. The per-status counts shown by `/api/status` are decremented, so
//! they count what is stored.
//!
//! Deletion runs in small transactions ([`PURGE_BATCH`] calls each), oldest first, so the
//! store thread's commits are never held up for long. The recordings of deleted calls are
//! returned, for the housekeeping task to delete after the commit.

use std::path::PathBuf;

use redb::ReadableTable as _;

use super::Store;
use super::query::load_record;
use super::schema::{
    self, BY_EXTERNAL, BY_START, CALL_EVENTS, CALLS, EVENT_LOG, NOTES, external_key,
};

/// Calls deleted per transaction.
pub const PURGE_BATCH: usize = 200;

/// What one purge transaction removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    pub calls: usize,
    pub events: usize,
    /// Recording files of the deleted calls (deleting them is the caller's).
    pub recordings: Vec<PathBuf>,
}

impl Store {
    /// Deletes up to [`PURGE_BATCH`] closed calls that started before `cutoff_ms`, oldest
    /// first, in one durable transaction. Call it until it deletes nothing. Blocking.
    pub fn purge_before(&self, cutoff_ms: u64) -> Result<Purged, redb::Error> {
        let txn = self.db().begin_write()?;
        let mut purged = Purged::default();
        {
            let mut by_start = txn.open_table(BY_START)?;
            // Open calls are skipped, so look a little further than one batch.
            let victims: Vec<(u64, String)> = by_start
                .range((0, "")..(cutoff_ms, ""))?
                .take(PURGE_BATCH * 4)
                .map(|e| e.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
                .collect::<Result<_, _>>()?;
            let mut calls = txn.open_table(CALLS)?;
            let mut events = txn.open_table(CALL_EVENTS)?;
            let mut log = txn.open_table(EVENT_LOG)?;
            for (started_ms, id) in victims {
                if purged.calls >= PURGE_BATCH {
                    break;
                }
                let record = load_record(&calls, &id)?;
                if record.as_ref().is_some_and(|r| r.status.is_open()) {
                    continue;
                }
                let seqs: Vec<u64> = events
                    .range((id.as_str(), 0)..=(id.as_str(), u64::MAX))?
                    .map(|e| e.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                for seq in &seqs {
                    events.remove((id.as_str(), *seq))?;
                    log.remove(*seq)?;
                }
                purged.events += seqs.len();
                by_start.remove((started_ms, id.as_str()))?;
                calls.remove(id.as_str())?;
                txn.open_table(NOTES)?.remove(id.as_str())?;
                if let Some(record) = record {
                    let key = external_key(record.source, &record.external_id);
                    let mut by_external = txn.open_table(BY_EXTERNAL)?;
                    if by_external.get(key.as_str())?.map(|v| v.value() == id) == Some(true) {
                        by_external.remove(key.as_str())?;
                    }
                    schema::add_count(&txn, record.source, record.status, -1)?;
                    if let Some(path) = record.recording.and_then(|r| r.path) {
                        purged.recordings.push(PathBuf::from(path));
                    }
                }
                purged.calls += 1;
            }
        }
        txn.commit()?;
        Ok(purged)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::{CallEvent, CallId, CallInfo, CallStats, EndReason, Source};
    use crate::metrics::Metrics;
    use crate::store::tests::temp_path;
    use crate::store::timestamp::system_time;

    fn call(ms: u64, n: u32) -> CallInfo {
        CallInfo {
            id: CallId::new(system_time(ms), n),
            source: Source::Sip,
            external_id: format!("call-{n}@h"),
            caller: "+15551234567".into(),
            callee: "1000".into(),
            started_at: system_time(ms),
        }
    }

    fn ended(info: &CallInfo) -> Vec<CallEvent> {
        vec![
            CallEvent::Started { info: info.clone() },
            CallEvent::Dtmf {
                id: info.id.clone(),
                digit: '1',
                duration_ms: 100,
                via: crate::call::DtmfSource::Rfc4733,
            },
            CallEvent::Ended {
                id: info.id.clone(),
                reason: EndReason::RemoteHangup,
                stats: CallStats::default(),
            },
        ]
    }

    #[test]
    fn old_closed_calls_go_with_their_events_notes_and_counts_and_the_rest_stays() {
        let store = Store::open(temp_path("purge")).unwrap();
        let (old, open, recent) = (call(1_000_000, 1), call(1_000_100, 2), call(9_000_000, 3));
        let mut events = ended(&old);
        events.push(CallEvent::Started { info: open.clone() });
        events.extend(ended(&recent));
        store.write_events(events, &Metrics::default()).unwrap();
        store.put_note(&old.id, "call back").unwrap();
        let before = store.counts().unwrap();
        assert!(before.contains(&(Source::Sip, "ended", 2)), "{before:?}");

        let purged = store.purge_before(5_000_000).unwrap();
        assert_eq!((purged.calls, purged.events), (1, 3));
        assert!(store.get(&old.id).unwrap().is_none());
        assert!(store.get(&open.id).unwrap().is_some(), "open calls stay");
        assert_eq!(store.get(&recent.id).unwrap().unwrap().events.len(), 3);
        let counts = store.counts().unwrap();
        assert!(counts.contains(&(Source::Sip, "ended", 1)), "{counts:?}");
        // Nothing of it is left in any table.
        let txn = store.db().begin_read().unwrap();
        let id = old.id.as_str();
        assert!(txn.open_table(NOTES).unwrap().get(id).unwrap().is_none());
        let log: Vec<String> = txn
            .open_table(EVENT_LOG)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().1.value().to_owned())
            .collect();
        assert!(!log.iter().any(|c| c == id), "{log:?}");
        assert_eq!(log.len(), 4);
        let key = external_key(Source::Sip, &old.external_id);
        assert!(
            txn.open_table(BY_EXTERNAL)
                .unwrap()
                .get(key.as_str())
                .unwrap()
                .is_none()
        );
        drop(txn);
        assert_eq!(store.purge_before(5_000_000).unwrap(), Purged::default());
    }
}
