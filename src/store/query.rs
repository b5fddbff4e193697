//! Reading the history: newest-first listing with cursors and filters, one call with its
//! timeline and note, analytics over a time range, the stored-calls counts, event-log replay
//! for the event stream; and writing notes.
//!
//! Every function here is blocking (redb reads, and `put_note` commits): the API calls them
//! from `spawn_blocking`. Reads run on a snapshot, so they never wait for the writer.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table};
use serde::Serialize;

use super::record::CallRecord;
use super::schema::{
    BY_EXTERNAL, BY_START, CALL_EVENTS, CALLS, COUNTS, EVENT_LOG, NOTES, external_key,
};
use super::timestamp::{DAY_MS, HOUR_MS, WEEK_MS, bucket_start, unix_ms};
use super::{CallStatus, PublishedEvent, Store};
use crate::call::{CallId, Source};
use crate::clock;

/// The largest page of [`Store::list`].
pub const MAX_LIMIT: usize = 500;
/// The largest note, in bytes of UTF-8.
pub const MAX_NOTE_BYTES: usize = 32 * 1024;
/// The most buckets one analytics answer holds.
pub const MAX_BUCKETS: u64 = 5000;

/// Why a read failed: only the storage can fail a read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("store read failed: {0}")]
    Storage(#[from] redb::Error),
    #[error("stored call {id} cannot be read: {reason}")]
    BadRecord { id: String, reason: String },
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for QueryError {
            fn from(e: $t) -> Self {
                Self::Storage(e.into())
            }
        }
    )*};
}
storage_from!(redb::TransactionError, redb::TableError, redb::StorageError);

/// Why a note was not saved.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("no call {0}")]
    NotFound(CallId),
    #[error("the note is {len} bytes; the limit is {MAX_NOTE_BYTES}")]
    TooLong { len: usize },
    #[error("store write failed: {0}")]
    Storage(#[from] redb::Error),
}

/// Where the next page of a listing starts (exclusive): the last call of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub started_ms: u64,
    pub id: CallId,
}

impl Cursor {
    /// The cursor as the API shows it: `<started ms>.<call id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.started_ms, self.id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (ms, id) = s.split_once('.')?;
        Some(Self {
            started_ms: ms.parse().ok()?,
            id: CallId::parse(id)?,
        })
    }
}

/// A listing request. Times are Unix ms; `since` inclusive, `until` exclusive.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size, 1..=[`MAX_LIMIT`]; 0 means 50.
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub source: Option<Source>,
    pub status: Option<CallStatus>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Case-insensitive substring of the caller or the callee.
    pub number: Option<String>,
    /// The caller's number, exactly.
    pub caller: Option<String>,
}

/// One page, newest first.
#[derive(Debug, Clone)]
pub struct CallPage {
    pub calls: Vec<CallRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// An operator's note on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Note {
    pub text: String,
    pub updated_ms: u64,
}

/// One call with everything stored about it.
#[derive(Debug, Clone)]
pub struct CallDetail {
    pub record: CallRecord,
    pub note: Option<Note>,
    /// Its events, oldest first (see [`record::event_json`](super::record::event_json)).
    pub events: Vec<serde_json::Value>,
}

/// Bucket width of an analytics time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
    Week,
}

impl Interval {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
        }
    }

    pub fn ms(self) -> u64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
            Self::Week => WEEK_MS,
        }
    }

    /// The range shown when none is given: a day of hours, 30 days, 26 weeks.
    pub fn default_span_ms(self) -> u64 {
        match self {
            Self::Hour => DAY_MS,
            Self::Day => 30 * DAY_MS,
            Self::Week => 26 * WEEK_MS,
        }
    }
}

/// Totals and a time series over calls started in `[since_ms, until_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analytics {
    pub interval: &'static str,
    pub since_ms: u64,
    pub until_ms: u64,
    pub total: u64,
    pub answered: u64,
    /// Mean of (end − start) over the calls that have ended, seconds.
    pub avg_duration_secs: f64,
    /// Mean of (end − answer) over answered calls that have ended, seconds.
    pub avg_talk_secs: f64,
    pub by_status: BTreeMap<&'static str, u64>,
    pub by_source: BTreeMap<&'static str, u64>,
    /// One bucket per interval from the bucket holding `since_ms`, zeros included.
    pub series: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start_ms: u64,
    pub calls: u64,
    pub answered: u64,
    pub avg_duration_secs: f64,
}

#[derive(Default)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    fn get(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.sum / self.n as f64 * 1000.0).round() / 1000.0
        }
    }
}

impl Store {
    /// A page of calls, newest first, matching every filter of `q`.
    pub fn list(&self, q: &ListQuery) -> Result<CallPage, QueryError> {
        let limit = if q.limit == 0 {
            50
        } else {
            q.limit.min(MAX_LIMIT)
        };
        let needle = q
            .number
            .as_deref()
            .map(str::to_lowercase)
            .filter(|n| !n.is_empty());
        let txn = self.db().begin_read()?;
        let by_start = txn.open_table(BY_START)?;
        let calls = txn.open_table(CALLS)?;
        let low = q.since_ms.unwrap_or(0);
        let mut high = (q.until_ms.unwrap_or(u64::MAX), "");
        if let Some(cursor) = &q.cursor
            && (cursor.started_ms, cursor.id.as_str()) < high
        {
            high = (cursor.started_ms, cursor.id.as_str());
        }
        let mut page = Vec::with_capacity(limit + 1);
        for entry in by_start.range((low, "")..high)?.rev() {
            let (key, _) = entry?;
            let (_, id) = key.value();
            let Some(record) = load_record(&calls, id)? else {
                continue;
            };
            let matches = q.source.is_none_or(|s| s == record.source)
                && q.status.is_none_or(|s| s == record.status)
                && q.caller.as_deref().is_none_or(|c| c == record.caller)
                && needle.as_deref().is_none_or(|n| {
                    record.caller.to_lowercase().contains(n)
                        || record.callee.to_lowercase().contains(n)
                });
            if matches {
                page.push(record);
                if page.len() > limit {
                    break;
                }
            }
        }
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|r| Cursor {
                started_ms: r.started_ms,
                id: r.id.clone(),
            })
        } else {
            None
        };
        Ok(CallPage { calls: page, next })
    }

    /// One call's record.
    pub fn get_record(&self, id: &CallId) -> Result<Option<CallRecord>, QueryError> {
        let txn = self.db().begin_read()?;
        Ok(load_record(&txn.open_table(CALLS)?, id.as_str())?)
    }

    /// The stored call of a source's own id (SIP Call-ID, Twilio CallSid).
    pub fn find_external(
        &self,
        source: Source,
        external_id: &str,
    ) -> Result<Option<CallId>, QueryError> {
        let txn = self.db().begin_read()?;
        let key = external_key(source, external_id);
        let by_external = txn.open_table(BY_EXTERNAL)?;
        let found = by_external.get(key.as_str())?;
        Ok(found.and_then(|v| CallId::parse(v.value())))
    }

    /// Whether call `id` is stored.
    pub fn contains(&self, id: &CallId) -> Result<bool, QueryError> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(CALLS)?.get(id.as_str())?.is_some())
    }

    /// One call with its note and events.
    pub fn get(&self, id: &CallId) -> Result<Option<CallDetail>, QueryError> {
        let txn = self.db().begin_read()?;
        let Some(record) = load_record(&txn.open_table(CALLS)?, id.as_str())? else {
            return Ok(None);
        };
        let note = txn
            .open_table(NOTES)?
            .get(id.as_str())?
            .and_then(|v| serde_json::from_slice::<Note>(v.value()).ok());
        let table = txn.open_table(CALL_EVENTS)?;
        let mut events = Vec::new();
        for entry in table.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
            let (_, json) = entry?;
            if let Ok(value) = serde_json::from_slice(json.value()) {
                events.push(value);
            }
        }
        Ok(Some(CallDetail {
            record,
            note,
            events,
        }))
    }

    /// Up to `limit` events with a sequence number above `after`, in order: what an event-stream
    /// client that last saw `after` missed.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<PublishedEvent>, QueryError> {
        let txn = self.db().begin_read()?;
        let log = txn.open_table(EVENT_LOG)?;
        let events = txn.open_table(CALL_EVENTS)?;
        let mut out = Vec::new();
        for entry in log.range(after.saturating_add(1)..)?.take(limit) {
            let (seq, id) = entry?;
            let (seq, id) = (seq.value(), id.value());
            let Some(call_id) = CallId::parse(id) else {
                continue;
            };
            if let Some(json) = events.get((id, seq))? {
                let json = String::from_utf8_lossy(json.value()).into_owned();
                out.push(PublishedEvent { seq, call_id, json });
            }
        }
        Ok(out)
    }

    /// The last sequence number in the event log (0 when empty).
    pub fn last_seq(&self) -> Result<u64, QueryError> {
        let txn = self.db().begin_read()?;
        Ok(txn
            .open_table(EVENT_LOG)?
            .last()?
            .map_or(0, |(k, _)| k.value()))
    }

    /// Stored calls per source and status (zeros included).
    pub fn counts(&self) -> Result<Vec<(Source, &'static str, u64)>, QueryError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(COUNTS)?;
        let mut out = Vec::new();
        for source in [Source::Sip, Source::Twilio] {
            for status in CallStatus::ALL {
                let key = super::schema::count_key(source, status);
                let n = table.get(key.as_str())?.map_or(0, |v| v.value());
                out.push((source, status.as_str(), n));
            }
        }
        Ok(out)
    }

    /// Totals and a time series of calls started in `[since_ms, until_ms)`.
    pub fn analytics(
        &self,
        interval: Interval,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Analytics, QueryError> {
        let now = unix_ms(clock::wallclock());
        let width = interval.ms();
        let first = bucket_start(since_ms, width);
        let buckets = until_ms
            .saturating_sub(first)
            .div_ceil(width)
            .clamp(1, MAX_BUCKETS);
        let mut series: Vec<(Bucket, Mean)> = (0..buckets)
            .map(|i| {
                (
                    Bucket {
                        start_ms: first + i * width,
                        calls: 0,
                        answered: 0,
                        avg_duration_secs: 0.0,
                    },
                    Mean::default(),
                )
            })
            .collect();
        let (mut total, mut answered) = (0, 0);
        let (mut duration, mut talk) = (Mean::default(), Mean::default());
        let mut by_status: BTreeMap<&'static str, u64> =
            CallStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let mut by_source: BTreeMap<&'static str, u64> = [Source::Sip, Source::Twilio]
            .iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        let txn = self.db().begin_read()?;
        let by_start = txn.open_table(BY_START)?;
        let calls = txn.open_table(CALLS)?;
        for entry in by_start.range((since_ms, "")..(until_ms, ""))? {
            let (key, _) = entry?;
            let (_, id) = key.value();
            let Some(r) = load_record(&calls, id)? else {
                continue;
            };
            total += 1;
            *by_status.entry(r.status.as_str()).or_default() += 1;
            *by_source.entry(r.source.as_str()).or_default() += 1;
            let index = ((bucket_start(r.started_ms, width) - first) / width) as usize;
            let answered_call = r.answered_ms.is_some();
            answered += u64::from(answered_call);
            let ended_secs = r.ended_ms.map(|_| r.duration_secs(now));
            if let Some((bucket, mean)) = series.get_mut(index) {
                bucket.calls += 1;
                bucket.answered += u64::from(answered_call);
                if let Some(secs) = ended_secs {
                    mean.add(secs);
                }
            }
            if let Some(secs) = ended_secs {
                duration.add(secs);
            }
            if let (Some(a), Some(e)) = (r.answered_ms, r.ended_ms) {
                talk.add(e.saturating_sub(a) as f64 / 1000.0);
            }
        }
        Ok(Analytics {
            interval: interval.as_str(),
            since_ms,
            until_ms,
            total,
            answered,
            avg_duration_secs: duration.get(),
            avg_talk_secs: talk.get(),
            by_status,
            by_source,
            series: series
                .into_iter()
                .map(|(b, m)| Bucket {
                    avg_duration_secs: m.get(),
                    ..b
                })
                .collect(),
        })
    }

    /// Sets call `id`'s note (an empty text removes it). Concurrent writers each commit a whole
    /// note: the last commit wins and the record is never touched.
    pub fn put_note(&self, id: &CallId, text: &str) -> Result<Option<Note>, NoteError> {
        if text.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLong { len: text.len() });
        }
        let storage = |e: redb::Error| NoteError::Storage(e);
        let txn = self.db().begin_write().map_err(|e| storage(e.into()))?;
        let note = {
            let calls = txn.open_table(CALLS).map_err(|e| storage(e.into()))?;
            if calls
                .get(id.as_str())
                .map_err(|e| storage(e.into()))?
                .is_none()
            {
                return Err(NoteError::NotFound(id.clone()));
            }
            let mut notes = txn.open_table(NOTES).map_err(|e| storage(e.into()))?;
            if text.is_empty() {
                notes.remove(id.as_str()).map_err(|e| storage(e.into()))?;
                None
            } else {
                let note = Note {
                    text: text.to_owned(),
                    updated_ms: unix_ms(clock::wallclock()),
                };
                let json = serde_json::to_vec(&note).unwrap_or_default();
                notes
                    .insert(id.as_str(), json.as_slice())
                    .map_err(|e| storage(e.into()))?;
                Some(note)
            }
        };
        txn.commit().map_err(|e| storage(e.into()))?;
        Ok(note)
    }
}

/// Reads one record from `calls`; `None` when absent. A record that does not parse is logged
/// and treated as absent, so one bad row cannot break every listing.
pub(super) fn load_record(
    calls: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<CallRecord>, redb::StorageError> {
    let Some(value) = calls.get(id)? else {
        return Ok(None);
    };
    match serde_json::from_slice(value.value()) {
        Ok(record) => Ok(Some(record)),
        Err(err) => {
            tracing::warn!(call = id, %err, "stored call record does not parse; skipped");
            Ok(None)
        }
    }
}

/// Writes one record to `calls`.
pub(super) fn save_record(
    calls: &mut Table<'_, &'static str, &'static [u8]>,
    record: &CallRecord,
) -> Result<(), redb::StorageError> {
    let json =
        serde_json::to_vec(record).map_err(|e| redb::StorageError::Corrupted(e.to_string()))?;
    calls.insert(record.id.as_str(), json.as_slice())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::{CallEvent, CallInfo, CallStats};
    use crate::metrics::Metrics;
    use crate::store::tests::temp_path;
    use crate::store::timestamp::system_time;

    /// Stores `n` ended SIP calls, one a minute from `t0`, each lasting `i` seconds; every
    /// third is from Alice (`+1555000xxxx`), the rest to Bob.
    fn seeded(n: u64, t0: u64) -> (Store, Vec<CallId>) {
        let store = Store::open(temp_path("query")).unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let at = t0 + i * 60_000;
            let info = CallInfo {
                id: CallId::new(system_time(at), i as u32),
                source: if i % 4 == 3 {
                    Source::Twilio
                } else {
                    Source::Sip
                },
                external_id: format!("call-{i}"),
                caller: if i % 3 == 0 {
                    format!("+1555000{i:04}")
                } else {
                    "Bob".into()
                },
                callee: "1000".into(),
                started_at: system_time(at),
            };
            ids.push(info.id.clone());
            store
                .write_events(vec![CallEvent::Started { info }], &Metrics::default())
                .unwrap();
        }
        (store, ids)
    }

    #[test]
    fn pages_follow_cursors_newest_first_without_gaps_or_repeats() {
        let (store, ids) = seeded(7, 1_000_000_000);
        let mut seen = Vec::new();
        let mut q = ListQuery {
            limit: 3,
            ..ListQuery::default()
        };
        loop {
            let page = store.list(&q).unwrap();
            seen.extend(page.calls.iter().map(|c| c.id.clone()));
            match page.next {
                Some(next) => q.cursor = Some(Cursor::decode(&next.encode()).unwrap()),
                None => break,
            }
        }
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first);
    }

    #[test]
    fn filters_combine_source_status_time_and_number() {
        let t0 = 1_000_000_000;
        let (store, ids) = seeded(12, t0);
        let q = |f: &dyn Fn(&mut ListQuery)| {
            let mut q = ListQuery::default();
            f(&mut q);
            store
                .list(&q)
                .unwrap()
                .calls
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(q(&|q| q.source = Some(Source::Twilio)).len(), 3);
        assert_eq!(q(&|q| q.number = Some("+1555".into())).len(), 4);
        assert_eq!(q(&|q| q.number = Some("bOB".into())).len(), 8);
        // `caller=` is the whole number, not a part of it.
        assert_eq!(q(&|q| q.caller = Some("+15550000003".into())).len(), 1);
        assert_eq!(q(&|q| q.caller = Some("+1555".into())).len(), 0);
        assert_eq!(q(&|q| q.status = Some(CallStatus::Ended)).len(), 0);
        assert_eq!(q(&|q| q.status = Some(CallStatus::Ringing)).len(), 12);
        let window = q(&|q| {
            q.since_ms = Some(t0 + 2 * 60_000);
            q.until_ms = Some(t0 + 5 * 60_000);
        });
        assert_eq!(window, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    }

    #[test]
    fn analytics_counts_buckets_and_averages_durations() {
        let t0 = 1_714_521_600_000; // 2024-05-01 00:00 UTC
        let (store, ids) = seeded(3, t0);
        let mut events = Vec::new();
        for id in ids.iter().take(2) {
            events.push(CallEvent::Answered {
                id: id.clone(),
                codec: crate::call::Codec::Pcmu,
            });
            events.push(CallEvent::Ended {
                id: id.clone(),
                reason: crate::call::EndReason::RemoteHangup,
                stats: CallStats::default(),
            });
        }
        store.write_events(events, &Metrics::default()).unwrap();
        let a = store
            .analytics(Interval::Hour, t0, t0 + 2 * HOUR_MS)
            .unwrap();
        assert_eq!((a.total, a.answered), (3, 2));
        assert_eq!(a.by_status["ended"], 2);
        assert_eq!(a.by_status["ringing"], 1);
        assert_eq!(a.by_source["sip"], 3);
        assert_eq!(a.series.len(), 2);
        assert_eq!((a.series[0].calls, a.series[1].calls), (3, 0));
        // Calls "ended" now, long after their synthetic start times: durations are positive.
        assert!(a.avg_duration_secs > 0.0);
    }

    #[test]
    fn notes_are_replaced_removed_and_bounded() {
        let (store, ids) = seeded(1, 1_000_000_000);
        store.put_note(&ids[0], "première note ✓").unwrap();
        store.put_note(&ids[0], "deuxième 📞").unwrap();
        assert_eq!(
            store.get(&ids[0]).unwrap().unwrap().note.unwrap().text,
            "deuxième 📞"
        );
        assert!(matches!(
            store.put_note(&ids[0], &"x".repeat(MAX_NOTE_BYTES + 1)),
            Err(NoteError::TooLong { .. })
        ));
        assert_eq!(store.put_note(&ids[0], "").unwrap(), None);
        assert!(store.get(&ids[0]).unwrap().unwrap().note.is_none());
        let unknown = CallId::new(system_time(1), 1);
        assert!(matches!(
            store.put_note(&unknown, "x"),
            Err(NoteError::NotFound(_))
        ));
    }
}
