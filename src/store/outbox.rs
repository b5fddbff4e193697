//! The webhook outbox: every delivery a webhook owes, in the store's file, so a crash loses
//! none. A call event's deliveries are inserted in the same transaction as the event itself
//! (through the [`Outbox`] hook the store thread calls); other events (`recording.ready`) in a
//! durable commit of their own. A delivery leaves the `pending` state only when an attempt
//! settles it (2xx, or given up); until then it is due again at `next_attempt_ms`.
//!
//! A delivery can be owed before its payload is known: `recording.ready` is owed from the
//! moment a recording starts, in that event's transaction, but its duration and size exist
//! only once the WAV is finalized. It waits `held` (indexed by message id and webhook in
//! `webhook_held`, never due) until a delivery with the same message id and webhook arrives
//! with the payload and releases it, so a crash between the WAV's last write and that release
//! leaves the promise on disk ([`Store::held_deliveries`] finds it at the next start).
//!
//! Finished deliveries are kept, without their bodies, for the API's recent list; the oldest
//! beyond [`KEEP_FINISHED`] are removed.

use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::Store;
use super::record::CallRecord;
use super::schema::{WEBHOOK_DELIVERIES, WEBHOOK_DUE, WEBHOOK_HELD};
use crate::call::CallEvent;

/// Finished deliveries kept for the API.
pub const KEEP_FINISHED: u64 = 1000;

/// What turns call events into deliveries; set once with [`Store::set_outbox`].
pub trait Outbox: Send + Sync {
    /// The deliveries `event` (global sequence `seq`, at `at_ms`) owes, given the call's record
    /// after the event. Called inside the event's write transaction: no IO.
    fn deliveries(
        &self,
        event: &CallEvent,
        record: &CallRecord,
        seq: u64,
        at_ms: u64,
    ) -> Vec<NewDelivery>;

    /// The deliveries a call closed as interrupted when the store opened owes (its
    /// `interrupted` event is `seq`, at `at_ms`). Called inside the transaction that closes it.
    fn interrupted(&self, record: &CallRecord, seq: u64, at_ms: u64) -> Vec<NewDelivery>;
}

/// A delivery to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Which webhook: a hash of its URL, so a reordered config still finds it.
    pub endpoint: u64,
    /// The URL's host, for the API.
    pub url_host: String,
    /// `webhook-id`: the same on every attempt.
    pub msg_id: String,
    /// `call.started`, ...
    pub event_type: String,
    /// The JSON body, signed and sent as is.
    pub body: String,
    /// Owed, but its payload is not known yet: stored held until a delivery with the same
    /// `msg_id` and `endpoint` releases it.
    pub held: bool,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Owed, waiting for its payload (never due).
    Held,
    Pending,
    Delivered,
    Failed,
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Its key in the outbox, in enqueue order.
    pub key: u64,
    pub endpoint: u64,
    pub url_host: String,
    pub msg_id: String,
    pub event_type: String,
    /// The body; dropped once the delivery is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_ms: u64,
    /// When the next attempt is due (pending only).
    pub next_attempt_ms: Option<u64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// How one attempt ended, as the delivery task decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx.
    Delivered { status: u16 },
    /// Try again at `next_ms`.
    Retry {
        status: Option<u16>,
        error: Option<String>,
        next_ms: u64,
    },
    /// No more attempts.
    GaveUp {
        status: Option<u16>,
        error: Option<String>,
    },
}

impl Store {
    /// Installs the hook that turns call events into deliveries (once; later calls are
    /// ignored). Set it before the store thread starts, or early events owe nothing.
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.inner.outbox.set(outbox);
    }

    pub(super) fn outbox(&self) -> Option<&Arc<dyn Outbox>> {
        self.inner.outbox.get()
    }

    /// Enqueues `deliveries` in a durable commit of their own. Blocking.
    pub fn enqueue_deliveries(
        &self,
        deliveries: &[NewDelivery],
        now_ms: u64,
    ) -> Result<(), redb::Error> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let txn = self.db().begin_write()?;
        insert_deliveries(&txn, deliveries, now_ms)?;
        txn.commit()?;
        Ok(())
    }

    /// Pending deliveries due at `now_ms`, earliest first, at most `limit`. Blocking.
    pub fn due_deliveries(&self, now_ms: u64, limit: usize) -> Result<Vec<Delivery>, redb::Error> {
        let txn = self.db().begin_read()?;
        let due = txn.open_table(WEBHOOK_DUE)?;
        let deliveries = txn.open_table(WEBHOOK_DELIVERIES)?;
        let mut out = Vec::new();
        for entry in due.range((0, 0)..=(now_ms, u64::MAX))?.take(limit) {
            let (key, _) = entry?;
            let (_, id) = key.value();
            if let Some(d) = load(&deliveries, id)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// When the earliest pending delivery is due, if any. Blocking.
    pub fn next_delivery_due(&self) -> Result<Option<u64>, redb::Error> {
        let txn = self.db().begin_read()?;
        let due = txn.open_table(WEBHOOK_DUE)?;
        Ok(due.first()?.map(|(k, _)| k.value().0))
    }

    /// Deliveries still held, oldest first, at most `limit`. Blocking.
    pub fn held_deliveries(&self, limit: usize) -> Result<Vec<Delivery>, redb::Error> {
        let txn = self.db().begin_read()?;
        let held = txn.open_table(WEBHOOK_HELD)?;
        let deliveries = txn.open_table(WEBHOOK_DELIVERIES)?;
        let mut out = Vec::new();
        for entry in held.iter()?.take(limit) {
            let (_, key) = entry?;
            if let Some(d) = load(&deliveries, key.value())? {
                out.push(d);
            }
        }
        out.sort_by_key(|d| d.key);
        Ok(out)
    }

    /// Gives up a held delivery whose payload will never exist (`why` is kept as its error).
    /// Blocking.
    pub fn abandon_held(&self, key: u64, why: &str) -> Result<(), redb::Error> {
        let txn = self.db().begin_write()?;
        {
            let mut deliveries = txn.open_table(WEBHOOK_DELIVERIES)?;
            if let Some(mut d) = load(&deliveries, key)?
                && d.state == DeliveryState::Held
            {
                txn.open_table(WEBHOOK_HELD)?
                    .remove((d.msg_id.as_str(), d.endpoint))?;
                d.state = DeliveryState::Failed;
                d.last_error = Some(why.to_owned());
                d.body = None;
                save(&mut deliveries, &d)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// How many deliveries are pending. Blocking.
    pub fn pending_deliveries(&self) -> Result<u64, redb::Error> {
        let txn = self.db().begin_read()?;
        Ok(txn.open_table(WEBHOOK_DUE)?.len()?)
    }

    /// Records how an attempt at delivery `key` ended, durably. Returns the updated delivery
    /// (`None` if it is gone or no longer pending). Blocking.
    pub fn record_attempt(
        &self,
        key: u64,
        result: &AttemptResult,
    ) -> Result<Option<Delivery>, redb::Error> {
        let txn = self.db().begin_write()?;
        let updated = {
            let mut deliveries = txn.open_table(WEBHOOK_DELIVERIES)?;
            let mut due = txn.open_table(WEBHOOK_DUE)?;
            let Some(mut d) = load(&deliveries, key)? else {
                return Ok(None);
            };
            if d.state != DeliveryState::Pending {
                return Ok(None);
            }
            if let Some(at) = d.next_attempt_ms {
                due.remove((at, key))?;
            }
            d.attempts = d.attempts.saturating_add(1);
            match result {
                AttemptResult::Delivered { status } => {
                    d.state = DeliveryState::Delivered;
                    d.last_status = Some(*status);
                    d.last_error = None;
                    d.next_attempt_ms = None;
                    d.body = None;
                }
                AttemptResult::Retry {
                    status,
                    error,
                    next_ms,
                } => {
                    d.last_status = *status;
                    d.last_error.clone_from(error);
                    d.next_attempt_ms = Some(*next_ms);
                    due.insert((*next_ms, key), ())?;
                }
                AttemptResult::GaveUp { status, error } => {
                    d.state = DeliveryState::Failed;
                    d.last_status = *status;
                    d.last_error.clone_from(error);
                    d.next_attempt_ms = None;
                    d.body = None;
                }
            }
            save(&mut deliveries, &d)?;
            if d.state != DeliveryState::Pending {
                prune(&mut deliveries, due.len()?)?;
            }
            d
        };
        txn.commit()?;
        Ok(Some(updated))
    }

    /// The newest deliveries first, at most `limit`, without bodies. Blocking.
    pub fn recent_deliveries(&self, limit: usize) -> Result<Vec<Delivery>, redb::Error> {
        let txn = self.db().begin_read()?;
        let deliveries = txn.open_table(WEBHOOK_DELIVERIES)?;
        let mut out = Vec::new();
        for entry in deliveries.iter()?.rev().take(limit) {
            let (_, json) = entry?;
            if let Ok(mut d) = serde_json::from_slice::<Delivery>(json.value()) {
                d.body = None;
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Inserts `deliveries` inside `txn`: pending and due now, or held. A delivery that finds a
/// held one with its message id and webhook releases it (fills in the body, due now); a held
/// one that finds one already held is the same promise again and changes nothing.
pub(super) fn insert_deliveries(
    txn: &WriteTransaction,
    deliveries: &[NewDelivery],
    now_ms: u64,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(WEBHOOK_DELIVERIES)?;
    let mut due = txn.open_table(WEBHOOK_DUE)?;
    let mut held = txn.open_table(WEBHOOK_HELD)?;
    let mut next = table.last()?.map_or(0, |(k, _)| k.value()) + 1;
    for new in deliveries {
        let index = (new.msg_id.as_str(), new.endpoint);
        let waiting = held.get(index)?.map(|v| v.value());
        if let Some(key) = waiting {
            if new.held {
                continue;
            }
            held.remove(index)?;
            if let Some(mut d) = load(&table, key)? {
                d.body = Some(new.body.clone());
                d.state = DeliveryState::Pending;
                d.next_attempt_ms = Some(now_ms);
                save(&mut table, &d)?;
                due.insert((now_ms, key), ())?;
                continue;
            }
        }
        let key = next;
        next += 1;
        let d = Delivery {
            key,
            endpoint: new.endpoint,
            url_host: new.url_host.clone(),
            msg_id: new.msg_id.clone(),
            event_type: new.event_type.clone(),
            body: Some(new.body.clone()),
            state: if new.held {
                DeliveryState::Held
            } else {
                DeliveryState::Pending
            },
            attempts: 0,
            created_ms: now_ms,
            next_attempt_ms: (!new.held).then_some(now_ms),
            last_status: None,
            last_error: None,
        };
        save(&mut table, &d)?;
        if new.held {
            held.insert(index, key)?;
        } else {
            due.insert((now_ms, key), ())?;
        }
    }
    Ok(())
}

fn load(
    table: &impl ReadableTable<u64, &'static [u8]>,
    key: u64,
) -> Result<Option<Delivery>, redb::Error> {
    let Some(json) = table.get(key)? else {
        return Ok(None);
    };
    match serde_json::from_slice(json.value()) {
        Ok(d) => Ok(Some(d)),
        Err(err) => {
            tracing::warn!(key, %err, "unreadable webhook delivery skipped");
            Ok(None)
        }
    }
}

fn save(table: &mut redb::Table<'_, u64, &[u8]>, d: &Delivery) -> Result<(), redb::Error> {
    let json = serde_json::to_vec(d).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    table.insert(d.key, json.as_slice())?;
    Ok(())
}

/// Removes the oldest finished deliveries beyond [`KEEP_FINISHED`] (a few per call, so a
/// commit stays small).
fn prune(table: &mut redb::Table<'_, u64, &[u8]>, pending: u64) -> Result<(), redb::Error> {
    let excess = table
        .len()?
        .saturating_sub(pending)
        .saturating_sub(KEEP_FINISHED);
    if excess == 0 {
        return Ok(());
    }
    let mut victims = Vec::new();
    for entry in table.iter()?.take(64) {
        let (key, json) = entry?;
        let finished = serde_json::from_slice::<Delivery>(json.value()).map_or(true, |d| {
            matches!(d.state, DeliveryState::Delivered | DeliveryState::Failed)
        });
        if finished {
            victims.push(key.value());
            if victims.len() as u64 >= excess.min(8) {
                break;
            }
        }
    }
    for key in victims {
        table.remove(key)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::tests::temp_path;

    fn new(msg: &str) -> NewDelivery {
        NewDelivery {
            endpoint: 7,
            url_host: "hooks.example.com".into(),
            msg_id: msg.into(),
            event_type: "call.started".into(),
            body: "{}".into(),
            held: false,
        }
    }

    #[test]
    fn a_delivery_stays_pending_through_retries_and_survives_reopening() {
        let path = temp_path("outbox");
        {
            let store = Store::open(&path).unwrap();
            store
                .enqueue_deliveries(&[new("msg_a"), new("msg_b")], 1000)
                .unwrap();
            let due = store.due_deliveries(1000, 10).unwrap();
            assert_eq!(due.len(), 2);
            let retry = AttemptResult::Retry {
                status: Some(500),
                error: None,
                next_ms: 6000,
            };
            store.record_attempt(due[0].key, &retry).unwrap();
            assert_eq!(store.due_deliveries(5999, 10).unwrap().len(), 1);
            assert_eq!(store.next_delivery_due().unwrap(), Some(1000));
            store
                .record_attempt(due[1].key, &AttemptResult::Delivered { status: 204 })
                .unwrap();
            assert_eq!(store.next_delivery_due().unwrap(), Some(6000));
        }
        let store = Store::open(&path).unwrap();
        let due = store.due_deliveries(6000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (
                due[0].msg_id.as_str(),
                due[0].attempts,
                due[0].body.as_deref()
            ),
            ("msg_a", 1, Some("{}"))
        );
        assert_eq!(store.pending_deliveries().unwrap(), 1);
        let recent = store.recent_deliveries(10).unwrap();
        assert_eq!(
            recent.iter().map(|d| d.state).collect::<Vec<_>>(),
            [DeliveryState::Delivered, DeliveryState::Pending]
        );
        // Settled deliveries are not settled twice.
        let gave_up = AttemptResult::GaveUp {
            status: Some(410),
            error: None,
        };
        assert!(
            store
                .record_attempt(due[0].key, &gave_up)
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .record_attempt(due[0].key, &gave_up)
                .unwrap()
                .is_none()
        );
        assert_eq!(store.pending_deliveries().unwrap(), 0);
    }

    #[test]
    fn a_held_delivery_waits_until_its_payload_releases_it_even_across_reopening() {
        let path = temp_path("held");
        let held = NewDelivery {
            held: true,
            body: "promise".into(),
            ..new("msg_c_recording")
        };
        {
            let store = Store::open(&path).unwrap();
            store
                .enqueue_deliveries(std::slice::from_ref(&held), 1000)
                .unwrap();
            // The same promise again (a repeated event) changes nothing.
            store
                .enqueue_deliveries(std::slice::from_ref(&held), 1500)
                .unwrap();
            assert!(store.due_deliveries(u64::MAX, 10).unwrap().is_empty());
            assert_eq!(store.pending_deliveries().unwrap(), 0);
        }
        let store = Store::open(&path).unwrap();
        let waiting = store.held_deliveries(10).unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].state, DeliveryState::Held);
        // Another webhook's delivery of the same message is its own.
        let other = NewDelivery {
            endpoint: 8,
            ..new("msg_c_recording")
        };
        let payload = NewDelivery {
            body: "final".into(),
            ..new("msg_c_recording")
        };
        store.enqueue_deliveries(&[payload, other], 2000).unwrap();
        let due = store.due_deliveries(2000, 10).unwrap();
        assert_eq!(due.len(), 2);
        let released = due.iter().find(|d| d.endpoint == 7).unwrap();
        assert_eq!(
            (released.key, released.body.as_deref(), released.created_ms),
            (waiting[0].key, Some("final"), 1000)
        );
        assert!(store.held_deliveries(10).unwrap().is_empty());
    }

    #[test]
    fn an_abandoned_held_delivery_is_failed_with_its_reason() {
        let store = Store::open(temp_path("abandon")).unwrap();
        let held = NewDelivery {
            held: true,
            ..new("msg_d_recording")
        };
        store.enqueue_deliveries(&[held], 1000).unwrap();
        let key = store.held_deliveries(10).unwrap()[0].key;
        store.abandon_held(key, "the recording is gone").unwrap();
        assert!(store.held_deliveries(10).unwrap().is_empty());
        let recent = store.recent_deliveries(10).unwrap();
        assert_eq!(
            (recent[0].state, recent[0].last_error.as_deref()),
            (DeliveryState::Failed, Some("the recording is gone"))
        );
    }
}
