//! The store thread: takes every [`CallEvent`] from the calls' event channel, persists it (the
//! call's record, its timeline, the global event log) in a durable commit, then publishes it
//! with its sequence number to the event stream's subscribers.
//!
//! Events that queue up while a commit runs are written together in the next transaction (at
//! most [`MAX_BATCH`]), so a burst costs one fsync, not one per event. A dedicated thread keeps
//! fsyncs off the tokio workers (it waits on the channel through a small current-thread
//! runtime of its own, so it can also wait for a stop request). It ends when every sender of
//! the channel is gone, or at shutdown once the channel has been quiet for [`QUIET`].
//!
//! A commit that fails is never discarded for an IO error (a full disk, a failing device): the
//! store is reopened (redb refuses every transaction after an IO error until then) and the
//! same batch is retried, backing off to every 5 s, until it commits. Meanwhile calls go on;
//! their lifecycle events wait in the channel's lifecycle lane, and details beyond its bounded
//! lane are dropped and counted (see [`EventSink`](crate::call::EventSink)).
//!
//! Idempotency: a `Started` whose source and external id (SIP Call-ID, Twilio CallSid) are
//! already stored does not create a second call. While the stored call is open, the new id
//! becomes an alias of it and the alias's later events are recorded on the stored call. An
//! ended call never reopens: a `Started` for it is refused (counted in `calls_replayed`), and
//! the refused id's later events are dropped as unknown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use redb::{ReadableTable, WriteTransaction};
use tokio::sync::oneshot;

use super::record::{CallRecord, event_json};
use super::schema::{self, BY_EXTERNAL, BY_START, CALL_EVENTS, CALLS, EVENT_LOG, OPEN};
use super::timestamp::unix_ms;
use super::{PublishedEvent, Store, query};
use crate::call::EventStream;
use crate::call::{CallEvent, CallId, CallStats, Source};
use crate::clock;
use crate::metrics::Metrics;

/// Most events written in one transaction.
const MAX_BATCH: usize = 256;
/// At shutdown, the thread ends once no event came for this long.
const QUIET: Duration = Duration::from_millis(250);

/// The running store thread.
#[derive(Debug)]
pub struct WriterHandle {
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<()>,
}

impl WriterHandle {
    /// Asks the thread to finish: it writes what is queued and what still arrives until the
    /// channel is quiet for [`QUIET`] (calls send their last events while they hang up), then
    /// ends. Waits at most `limit`; returns whether it ended in time.
    pub async fn finished(self, limit: Duration) -> bool {
        let _ = self.stop.send(());
        matches!(tokio::time::timeout(limit, self.done).await, Ok(Ok(())))
    }
}

/// What the store thread waits for.
enum Next {
    Event(CallEvent),
    /// Every sender is gone, or the channel went quiet after a stop request.
    End,
    /// [`WriterHandle::finished`] was called.
    Stop,
    /// The handle was dropped without asking to stop: go on until the senders are gone.
    HandleDropped,
}

/// Attempts at a batch that failed for another reason than IO (a bug, a corrupt table)
/// before its events are given up (counted in `earshot_store_errors_total`). IO failures
/// (a full disk) are retried until the disk recovers: the events are the calls' history.
const NON_IO_ATTEMPTS: u32 = 3;

/// A failed commit's error that reopening and retrying can cure.
fn is_io(err: &redb::Error) -> bool {
    matches!(
        err,
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
    )
}

/// Wait before retry `n` (1, 2, ...): 100 ms doubling, at most 5 s.
fn retry_delay(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(6).saturating_sub(1)))
        .min(Duration::from_secs(5))
}

impl Store {
    /// Starts the store thread on `events` (the receiving end of every call's
    /// [`EventSink`](crate::call::EventSink)).
    pub fn spawn_writer(
        &self,
        events: EventStream,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<WriterHandle> {
        let (done_tx, done) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel();
        let mut writer = Writer {
            store: self.clone(),
            metrics,
            aliases: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("earshot-store".to_owned())
            .spawn(move || {
                writer.run(events, stop_rx);
                let _ = done_tx.send(());
            })?;
        Ok(WriterHandle { stop, done })
    }

    /// Persists `events` now, on this thread (tests and tools; the app uses the store thread).
    pub fn write_events(
        &self,
        events: Vec<CallEvent>,
        metrics: &Metrics,
    ) -> Result<(), redb::Error> {
        let mut writer = Writer {
            store: self.clone(),
            metrics: Arc::new(Metrics::default()),
            aliases: HashMap::new(),
        };
        let _order = self.append_lock();
        let committed = writer.persist(&events)?;
        writer.after_commit(&committed, metrics);
        self.publish(committed.published);
        Ok(())
    }
}

struct Writer {
    store: Store,
    metrics: Arc<Metrics>,
    /// Ids of duplicate `Started` calls → the stored call they are (see the module docs).
    aliases: HashMap<CallId, CallId>,
}

impl Writer {
    fn run(&mut self, mut events: EventStream, mut stop: oneshot::Receiver<()>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                tracing::error!(%err, "the store thread cannot start: call events are not stored");
                return;
            }
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let (mut stopping, mut stop_gone) = (false, false);
        loop {
            let next = runtime.block_on(async {
                if stopping {
                    return match tokio::time::timeout(QUIET, events.recv()).await {
                        Ok(Some(event)) => Next::Event(event),
                        Ok(None) | Err(_) => Next::End,
                    };
                }
                tokio::select! {
                    event = events.recv() => event.map_or(Next::End, Next::Event),
                    asked = &mut stop, if !stop_gone => match asked {
                        Ok(()) => Next::Stop,
                        Err(_) => Next::HandleDropped,
                    },
                }
            });
            let first = match next {
                Next::Event(event) => event,
                Next::End => break,
                Next::Stop => {
                    stopping = true;
                    continue;
                }
                Next::HandleDropped => {
                    stop_gone = true;
                    continue;
                }
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match events.try_recv() {
                    Some(event) => batch.push(event),
                    None => break,
                }
            }
            if self.store.low_space() {
                let before = batch.len();
                batch.retain(CallEvent::is_lifecycle);
                let dropped = (before - batch.len()) as u64;
                self.metrics.call_drops.events.fetch_add(dropped, Relaxed);
                if batch.is_empty() {
                    continue;
                }
            }
            let store = self.store.clone();
            let _order = store.append_lock();
            let started = clock::now();
            let mut failures = 0u32;
            loop {
                match self.persist(&batch) {
                    Ok(committed) => {
                        self.metrics
                            .store_commit_seconds
                            .observe(started.elapsed().as_secs_f64());
                        let metrics = Arc::clone(&self.metrics);
                        self.after_commit(&committed, &metrics);
                        self.store.publish(committed.published);
                        if failures > 0 {
                            tracing::warn!(
                                failures,
                                events = batch.len(),
                                "call events stored after the store recovered"
                            );
                        }
                        break;
                    }
                    Err(err) => {
                        self.metrics.store_errors.fetch_add(1, Relaxed);
                        failures += 1;
                        let io = is_io(&err);
                        if failures == 1 {
                            tracing::error!(%err, events = batch.len(), "call events could not be stored; retrying until they are");
                        }
                        if !io && failures >= NON_IO_ATTEMPTS {
                            tracing::error!(%err, events = batch.len(), "call events dropped: the store refuses them");
                            break;
                        }
                        let delay = retry_delay(failures);
                        runtime.block_on(async { tokio::time::sleep(delay).await });
                        // After an IO error redb refuses every transaction until reopened.
                        if io && let Err(err) = self.store.reopen() {
                            tracing::debug!(%err, "the store could not be reopened yet");
                        }
                    }
                }
            }
            batch.clear();
        }
        tracing::debug!("store thread: event channel closed");
    }

    /// Writes `batch` in one durable transaction; returns what to publish once committed.
    fn persist(&mut self, batch: &[CallEvent]) -> Result<Committed, redb::Error> {
        let txn = self.store.db().begin_write()?;
        let mut seq = next_seq(&txn)?;
        let mut committed = Committed::default();
        for event in batch {
            let at_ms = unix_ms(clock::wallclock());
            let Some((record, created)) = self.apply(&txn, event, at_ms)? else {
                continue;
            };
            if let Some(outbox) = self.store.outbox() {
                let owed = outbox.deliveries(event, &record, seq, at_ms);
                super::outbox::insert_deliveries(&txn, &owed, at_ms)?;
            }
            let call_id = record.id;
            let json = event_json(seq, at_ms, &call_id, event);
            txn.open_table(CALL_EVENTS)?
                .insert((call_id.as_str(), seq), json.as_bytes())?;
            txn.open_table(EVENT_LOG)?.insert(seq, call_id.as_str())?;
            if created {
                committed.started.push(record.source);
            }
            match event {
                CallEvent::Ended { id, stats, .. } => {
                    committed
                        .ended
                        .push((id.clone(), record.source, stats.clone()));
                }
                CallEvent::Placed { .. }
                | CallEvent::Failed { .. }
                | CallEvent::Transferred { .. }
                | CallEvent::TransferFailed { .. } => committed.handoffs.push(event.clone()),
                _ => {}
            }
            committed
                .published
                .push(PublishedEvent { seq, call_id, json });
            seq += 1;
        }
        txn.commit()?;
        Ok(committed)
    }

    /// Updates the call's record for `event`; returns the stored record and whether this event
    /// created it. `None` when the event names a call that was never started (it is logged and
    /// dropped), or changes nothing (a repeated carrier status): nothing is written.
    fn apply(
        &mut self,
        txn: &WriteTransaction,
        event: &CallEvent,
        at_ms: u64,
    ) -> Result<Option<(CallRecord, bool)>, redb::Error> {
        let mut calls = txn.open_table(CALLS)?;
        let (mut record, before) = match event {
            CallEvent::Started { info } => {
                let key = schema::external_key(info.source, &info.external_id);
                let existing = txn
                    .open_table(BY_EXTERNAL)?
                    .get(key.as_str())?
                    .map(|v| v.value().to_owned());
                let stored = match existing {
                    Some(id) => query::load_record(&calls, &id)?,
                    None => query::load_record(&calls, info.id.as_str())?,
                };
                match stored {
                    Some(record) if !record.status.is_open() => {
                        self.metrics.calls_replayed.fetch_add(1, Relaxed);
                        tracing::warn!(call = %record.id, refused = %info.id, "start of an ended call refused: ended calls never reopen");
                        return Ok(None);
                    }
                    Some(record) => {
                        if record.id != info.id {
                            tracing::info!(call = %record.id, duplicate = %info.id, "second start of a stored call: recorded on it");
                            self.aliases.insert(info.id.clone(), record.id.clone());
                        }
                        let status = record.status;
                        (record, Some(status))
                    }
                    None => {
                        txn.open_table(BY_START)?
                            .insert((unix_ms(info.started_at), info.id.as_str()), ())?;
                        txn.open_table(BY_EXTERNAL)?
                            .insert(key.as_str(), info.id.as_str())?;
                        (CallRecord::new(info), None)
                    }
                }
            }
            other => {
                let id = other.call_id();
                let id = self.aliases.get(id).unwrap_or(id);
                match query::load_record(&calls, id.as_str())? {
                    Some(record) => {
                        let status = record.status;
                        (record, Some(status))
                    }
                    None => {
                        tracing::warn!(call = %id, kind = other.kind(), "event for a call the store never saw start");
                        return Ok(None);
                    }
                }
            }
        };
        if !record.apply(event, at_ms) {
            return Ok(None);
        }
        if before != Some(record.status) {
            if let Some(before) = before {
                schema::add_count(txn, record.source, before, -1)?;
            }
            schema::add_count(txn, record.source, record.status, 1)?;
            let mut open = txn.open_table(OPEN)?;
            if record.status.is_open() {
                open.insert(record.id.as_str(), ())?;
            } else {
                open.remove(record.id.as_str())?;
            }
        }
        query::save_record(&mut calls, &record)?;
        Ok(Some((record, before.is_none())))
    }

    /// Counts what was committed; forgets aliases of ended calls.
    fn after_commit(&mut self, committed: &Committed, metrics: &Metrics) {
        for source in &committed.started {
            metrics.calls_started.get(*source).fetch_add(1, Relaxed);
        }
        for (id, source, stats) in &committed.ended {
            self.aliases.remove(id);
            metrics.call_ended(*source, stats);
        }
        for event in &committed.handoffs {
            match event {
                CallEvent::Placed { .. } => {
                    metrics.calls_placed.fetch_add(1, Relaxed);
                }
                CallEvent::Failed { reason, .. } => metrics.place_failed(*reason),
                CallEvent::Transferred { method, .. } => metrics.transferred(*method),
                CallEvent::TransferFailed { reason, .. } => metrics.transfer_failed(*reason),
                _ => {}
            }
        }
    }
}

/// What a committed batch did, for the counters.
#[derive(Debug, Default)]
struct Committed {
    published: Vec<PublishedEvent>,
    /// Sources of the calls it created.
    started: Vec<Source>,
    /// Calls it ended: the event's id, the call's source, its stats.
    ended: Vec<(CallId, Source, CallStats)>,
    /// Its outbound-call and transfer outcomes (placed, failed, transferred, transfer failed).
    handoffs: Vec<CallEvent>,
}

/// The next global sequence number: one past the last in the event log.
pub(super) fn next_seq(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    let log = txn.open_table(EVENT_LOG)?;
    let last = log.last()?.map_or(0, |(k, _)| k.value());
    Ok(last + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::CallInfo;
    use crate::store::tests::temp_path;
    use crate::store::timestamp::system_time;
    use crate::store::{CallStatus, ListQuery};

    fn started(ms: u64, external: &str) -> CallInfo {
        CallInfo {
            id: CallId::new(system_time(ms), rand::random()),
            source: Source::Sip,
            external_id: external.into(),
            caller: "+15551234567".into(),
            callee: "1000".into(),
            started_at: system_time(ms),
        }
    }

    #[test]
    fn a_second_start_with_the_same_external_id_does_not_create_a_second_call() {
        let store = Store::open(temp_path("idem")).unwrap();
        let metrics = Metrics::default();
        let first = started(1_000_000, "same@host");
        let second = started(1_000_500, "same@host");
        let mut writer = Writer {
            store: store.clone(),
            metrics: Arc::new(Metrics::default()),
            aliases: HashMap::new(),
        };
        let events = vec![
            CallEvent::Started {
                info: first.clone(),
            },
            CallEvent::Started {
                info: second.clone(),
            },
            CallEvent::Answered {
                id: second.id.clone(),
                codec: crate::call::Codec::Pcma,
            },
        ];
        let committed = writer.persist(&events).unwrap();
        writer.after_commit(&committed, &metrics);
        let page = store.list(&ListQuery::default()).unwrap();
        assert_eq!(page.calls.len(), 1);
        let call = &page.calls[0];
        assert_eq!(
            (&call.id, call.status, call.codec.as_deref()),
            (&first.id, CallStatus::Active, Some("PCMA"))
        );
        assert_eq!(metrics.calls_started.sip.load(Relaxed), 1);
        assert_eq!(store.get(&first.id).unwrap().unwrap().events.len(), 3);
    }

    #[test]
    fn placed_calls_and_transfers_are_counted_once_committed() {
        use crate::call::{PlaceFailure, TransferFailure, TransferMethod};
        let store = Store::open(temp_path("handoffs")).unwrap();
        let metrics = Metrics::default();
        let mut writer = Writer {
            store: store.clone(),
            metrics: Arc::new(Metrics::default()),
            aliases: HashMap::new(),
        };
        let (a, b) = (started(1_000_000, "a@host"), started(1_000_100, "b@host"));
        let events = vec![
            CallEvent::Started { info: a.clone() },
            CallEvent::Placed {
                id: a.id.clone(),
                trunk: None,
            },
            CallEvent::Failed {
                id: a.id.clone(),
                status: 408,
                reason: PlaceFailure::NoAnswer,
            },
            CallEvent::Started { info: b.clone() },
            CallEvent::TransferFailed {
                id: b.id.clone(),
                to: "+15550001111".into(),
                reason: TransferFailure::Refused,
            },
            CallEvent::Transferred {
                id: b.id.clone(),
                to: "+15550001111".into(),
                method: TransferMethod::Bridge,
            },
        ];
        let committed = writer.persist(&events).unwrap();
        writer.after_commit(&committed, &metrics);
        assert_eq!(metrics.calls_placed.load(Relaxed), 1);
        assert_eq!(metrics.place_failures.get("no_answer"), 1);
        assert_eq!(metrics.place_failures.get("rejected"), 0);
        assert_eq!(metrics.transfer_failures.get("refused"), 1);
        assert_eq!(metrics.transfers.get("bridge"), 1);
        let text = metrics.render(&crate::metrics::Snapshot::default());
        for line in [
            "earshot_calls_placed_total 1",
            "earshot_calls_place_failed_total{reason=\"no_answer\"} 1",
            "earshot_transfers_total{method=\"bridge\"} 1",
            "earshot_transfers_total{method=\"refer\"} 0",
            "earshot_transfers_failed_total{reason=\"refused\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn a_start_for_an_ended_call_is_refused_and_changes_nothing() {
        let store = Store::open(temp_path("reopen")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let first = started(1_000_000, "reused@host");
        let replay = started(1_900_000, "reused@host");
        let ended = |id: &CallId| CallEvent::Ended {
            id: id.clone(),
            reason: crate::call::EndReason::RemoteHangup,
            stats: CallStats::default(),
        };
        store
            .write_events(
                vec![
                    CallEvent::Started {
                        info: first.clone(),
                    },
                    ended(&first.id),
                ],
                &metrics,
            )
            .unwrap();
        let before = store.get(&first.id).unwrap().unwrap();
        let mut writer = Writer {
            store: store.clone(),
            metrics: metrics.clone(),
            aliases: HashMap::new(),
        };
        let committed = writer
            .persist(&[
                CallEvent::Started {
                    info: replay.clone(),
                },
                CallEvent::Answered {
                    id: replay.id.clone(),
                    codec: crate::call::Codec::Pcmu,
                },
                ended(&replay.id),
            ])
            .unwrap();
        assert!(committed.published.is_empty());
        assert_eq!(metrics.calls_replayed.load(Relaxed), 1);
        let after = store.get(&first.id).unwrap().unwrap();
        assert_eq!(after.record, before.record);
        assert_eq!(after.events.len(), before.events.len());
        assert_eq!(after.record.status, CallStatus::Ended);
        assert!(store.get(&replay.id).unwrap().is_none());
        assert_eq!(store.list(&ListQuery::default()).unwrap().calls.len(), 1);
    }

    #[test]
    fn events_get_consecutive_sequence_numbers_and_are_published_after_commit() {
        let store = Store::open(temp_path("seq")).unwrap();
        let mut rx = store.subscribe();
        let info = started(2_000_000, "a@b");
        let id = info.id.clone();
        store
            .write_events(
                vec![
                    CallEvent::Started { info },
                    CallEvent::Ended {
                        id: id.clone(),
                        reason: crate::call::EndReason::RemoteHangup,
                        stats: CallStats::default(),
                    },
                ],
                &Metrics::default(),
            )
            .unwrap();
        let (a, b) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(store.events_after(1, 10).unwrap(), vec![(*b).clone()]);
        assert_eq!(
            store.get_record(&id).unwrap().unwrap().status,
            CallStatus::Ended
        );
    }

    #[test]
    fn a_deleted_recording_takes_the_transcript_with_it() {
        let store = Store::open(temp_path("transcript")).unwrap();
        let info = started(4_000_000, "t@x");
        let id = info.id.clone();
        let segment = |item: &str| CallEvent::Transcript {
            id: id.clone(),
            speaker: crate::call::Speaker::Caller,
            item_id: item.into(),
            text: "private words".into(),
            start_ms: 0,
            end_ms: 900,
        };
        store
            .write_events(
                vec![CallEvent::Started { info }, segment("i1"), segment("i2")],
                &Metrics::default(),
            )
            .unwrap();
        assert_eq!(
            store.get_record(&id).unwrap().unwrap().transcript_segments,
            2
        );
        store.recording_deleted(&id, "retention").unwrap();
        let detail = store.get(&id).unwrap().unwrap();
        assert_eq!(detail.record.transcript_segments, 0);
        assert!(
            detail.events.iter().all(|e| e["type"] != "transcript"),
            "{:?}",
            detail.events
        );
        assert!(
            detail
                .events
                .iter()
                .any(|e| e["type"] == "recording_deleted")
        );
    }

    #[test]
    fn events_of_unknown_calls_are_dropped_without_failing_the_batch() {
        let store = Store::open(temp_path("unknown")).unwrap();
        let info = started(3_000_000, "x@y");
        let stray = CallId::new(system_time(5), 5);
        store
            .write_events(
                vec![
                    CallEvent::Listen {
                        id: stray,
                        on: true,
                    },
                    CallEvent::Started { info },
                ],
                &Metrics::default(),
            )
            .unwrap();
        assert_eq!(store.events_after(0, 10).unwrap().len(), 1);
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn calls_left_open_are_interrupted_at_the_next_open_and_finished_ones_stay() {
        let path = temp_path("crash");
        let (open, done) = (started(4_000_000, "open@h"), started(4_000_100, "done@h"));
        {
            let store = Store::open(&path).unwrap();
            store
                .write_events(
                    vec![
                        CallEvent::Started { info: open.clone() },
                        CallEvent::Answered {
                            id: open.id.clone(),
                            codec: crate::call::Codec::Pcmu,
                        },
                        CallEvent::Started { info: done.clone() },
                        CallEvent::Ended {
                            id: done.id.clone(),
                            reason: crate::call::EndReason::RemoteHangup,
                            stats: CallStats::default(),
                        },
                    ],
                    &Metrics::default(),
                )
                .unwrap();
            std::thread::sleep(Duration::from_millis(30));
            store.mark_alive().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.interrupted_at_open(), std::slice::from_ref(&open.id));
        let detail = store.get(&open.id).unwrap().unwrap();
        let answered_at = detail.events[1]["at_ms"].as_u64().unwrap();
        assert!(
            detail.record.ended_ms.unwrap() >= answered_at + 30,
            "ends at the alive mark, after its last event"
        );
        let interrupted = store.get(&open.id).unwrap().unwrap();
        assert_eq!(interrupted.record.status, CallStatus::Interrupted);
        assert_eq!(interrupted.events.last().unwrap()["type"], "interrupted");
        assert_eq!(
            store.get_record(&done.id).unwrap().unwrap().status,
            CallStatus::Ended
        );
        let counts = store.counts().unwrap();
        assert!(
            counts.contains(&(Source::Sip, "interrupted", 1))
                && counts.contains(&(Source::Sip, "ended", 1)),
            "{counts:?}"
        );
        assert!(
            !counts.iter().any(|(_, s, n)| *s == "active" && *n > 0),
            "{counts:?}"
        );
    }

    #[tokio::test]
    async fn the_store_thread_writes_what_is_queued_and_stops_when_asked_while_senders_live() {
        let store = Store::open(temp_path("stop")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = crate::call::event_sink::channel(8, Arc::default());
        let handle = store.spawn_writer(rx, Arc::clone(&metrics)).unwrap();
        let info = started(5_000_000, "stop@h");
        assert!(tx.send(CallEvent::Started { info: info.clone() }));
        assert!(tx.send(CallEvent::Ended {
            id: info.id.clone(),
            reason: crate::call::EndReason::RemoteHangup,
            stats: CallStats::default(),
        }));
        assert!(
            handle.finished(Duration::from_secs(5)).await,
            "ends although `tx` is alive"
        );
        assert_eq!(
            store.get_record(&info.id).unwrap().unwrap().status,
            CallStatus::Ended
        );
        assert_eq!(metrics.calls_ended.sip.load(Relaxed), 1);
        drop(tx);
    }
}
