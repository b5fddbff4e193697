//! Signed webhooks out (`[[webhook]]`), Standard Webhooks style, from a crash-safe outbox in
//! the store.
//!
//! - [`outbox`]: payloads and message ids; the store hook that enqueues a call event's
//!   deliveries in the event's own transaction.
//! - [`signature`] (sans-IO): `webhook-signature`.
//! - [`policy`] (sans-IO): which answers deliver, retry or give up; the backoff schedule.
//! - [`address`] (sans-IO): the addresses a webhook may not reach without `allow_private`.
//! - [`client`]: one HTTP/1.1 POST per attempt.
//!
//! The delivery task ([`Webhooks::spawn`]) reads due deliveries from the store (on the
//! blocking pool), runs at most [`MAX_IN_FLIGHT`] attempts at once, and records each result
//! durably before the delivery is considered again: a 2xx settles it, a retryable failure
//! reschedules it, anything else marks it failed. A crash between an attempt and its record
//! only repeats that attempt (at-least-once, same `webhook-id`). It wakes when the store
//! publishes events, when [`Webhooks`] enqueues one, and when the next retry is due.

pub mod address;
pub mod client;
pub mod outbox;
pub mod policy;
pub mod signature;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

pub use outbox::{Endpoint, RecordingReady};

use crate::clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::timestamp::unix_ms;
use crate::store::{AttemptResult, Delivery, Outbox, QueryError, Store};
use policy::{Outcome, Schedule, Verdict};

/// Most attempts in flight at once, over every webhook.
pub const MAX_IN_FLIGHT: usize = 8;
/// Due deliveries read per look at the outbox.
const BATCH: usize = 64;
/// The longest the task sleeps without looking at the outbox.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Why the webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("webhooks: {0}")]
    Tls(#[from] crate::net::tls::TlsError),
}

/// The webhooks: enqueue events that do not pass through the store thread, and run the
/// delivery task. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    endpoints: Arc<[Endpoint]>,
    /// `[node].name`, the bodies' `source_node`.
    node: Arc<str>,
    schedule: Schedule,
    tls: Arc<rustls::ClientConfig>,
    /// Wakes the delivery task after [`Webhooks`] enqueued something itself.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("endpoints", &self.endpoints.len())
            .finish_non_exhaustive()
    }
}

/// Most held deliveries released in one startup sweep.
const MAX_HELD_SWEEP: usize = 10_000;

/// The store hook for `config`'s webhooks (`None` without `[[webhook]]`). Open the store with
/// it ([`Store::open_with`]), so the deliveries of calls closed as interrupted are owed in the
/// transaction that closes them, and every later call event's in its own.
pub fn outbox_hook(config: &Config) -> Option<Arc<dyn Outbox>> {
    if config.webhooks.is_empty() {
        return None;
    }
    Some(Arc::new(outbox::EventDeliveries {
        endpoints: endpoints(config),
        node: Arc::from(config.node.name.as_str()),
    }))
}

fn endpoints(config: &Config) -> Arc<[Endpoint]> {
    config.webhooks.iter().cloned().map(Endpoint::new).collect()
}

impl Webhooks {
    /// The configured webhooks, delivering from `store`'s outbox (opened with
    /// [`outbox_hook`]). `None` without `[[webhook]]`.
    pub fn new(config: &Config, store: &Store) -> Result<Option<Webhooks>, StartError> {
        if config.webhooks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Webhooks {
            store: store.clone(),
            endpoints: endpoints(config),
            node: Arc::from(config.node.name.as_str()),
            schedule: Schedule::from(&config.webhook_retry),
            tls: crate::net::tls::client_config(config.webhook_retry.ca_file.as_deref())?,
            wake: Arc::new(Notify::new()),
        }))
    }

    /// Releases the `recording.ready` deliveries a crash left held (the WAV was finalized, or
    /// repaired at this start, but its `recording_finished` never committed), with the file's
    /// size and duration as it is on disk now; one whose recording is gone is given up. Calls
    /// still live keep theirs. Call it once at startup, after the recordings were repaired.
    pub async fn release_held(&self) {
        let (store, endpoints) = (self.store.clone(), Arc::clone(&self.endpoints));
        let node = Arc::clone(&self.node);
        let swept =
            tokio::task::spawn_blocking(move || release_held(&store, &endpoints, &node)).await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(released)) => {
                tracing::info!(
                    released,
                    "recording.ready deliveries a crash left held released"
                );
                self.wake.notify_one();
            }
            Ok(Err(err)) => tracing::error!(%err, "held webhook deliveries not released"),
            Err(err) => tracing::error!(%err, "held webhook deliveries not released"),
        }
    }

    /// Starts the delivery task; it ends at `shutdown` (attempts in flight stay pending).
    pub fn spawn(&self, metrics: Arc<Metrics>, shutdown: CancellationToken) {
        let task = Delivering {
            hooks: self.clone(),
            metrics,
            in_flight: HashSet::new(),
        };
        tokio::spawn(task.run(shutdown));
    }
}

/// The delivery task's state.
struct Delivering {
    hooks: Webhooks,
    metrics: Arc<Metrics>,
    /// Keys of deliveries with an attempt running; skipped when the outbox is read again.
    in_flight: HashSet<u64>,
}

/// An attempt's result, back to the task.
struct Finished {
    delivery: Delivery,
    outcome: Outcome,
    at_ms: u64,
}

impl Delivering {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut published = self.hooks.store.subscribe();
        let (done_tx, mut done_rx) = mpsc::channel::<Finished>(MAX_IN_FLIGHT);
        loop {
            let now = unix_ms(clock::wallclock());
            let next_due = self.start_due(now, &done_tx).await;
            let wait = match next_due {
                Some(due) if due > now => Duration::from_millis(due - now).min(MAX_IDLE),
                // Due but in flight, or the slots are full: a result wakes us.
                Some(_) if !self.in_flight.is_empty() => MAX_IDLE,
                Some(_) => Duration::from_millis(100),
                None => MAX_IDLE,
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                finished = done_rx.recv() => {
                    if let Some(finished) = finished {
                        self.settle(finished).await;
                    }
                }
                () = self.hooks.wake.notified() => {}
                event = published.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = event {
                        published = self.hooks.store.subscribe();
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::debug!("webhook delivery task stopped");
    }

    /// Starts attempts for due deliveries while slots are free; returns when the earliest
    /// pending delivery is due.
    async fn start_due(&mut self, now: u64, done: &mpsc::Sender<Finished>) -> Option<u64> {
        let store = self.hooks.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let due = store.due_deliveries(now, BATCH)?;
            let next = store.next_delivery_due()?;
            let pending = store.pending_deliveries()?;
            Ok::<_, redb::Error>((due, next, pending))
        })
        .await;
        let (due, next, pending) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                tracing::error!(%err, "cannot read the webhook outbox");
                return Some(now + 5_000);
            }
            Err(err) => {
                tracing::error!(%err, "cannot read the webhook outbox");
                return Some(now + 5_000);
            }
        };
        self.metrics.webhooks_pending.store(pending, Relaxed);
        for delivery in due {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            if !self.in_flight.insert(delivery.key) {
                continue;
            }
            let hooks = self.hooks.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let outcome = attempt(&hooks, &delivery).await;
                let at_ms = unix_ms(clock::wallclock());
                let _ = done
                    .send(Finished {
                        delivery,
                        outcome,
                        at_ms,
                    })
                    .await;
            });
        }
        next
    }

    /// Judges an attempt and records the result.
    async fn settle(&mut self, finished: Finished) {
        let Finished {
            delivery: d,
            outcome,
            at_ms,
        } = finished;
        let (status, error) = match &outcome {
            Outcome::Status(s) => (Some(*s), None),
            Outcome::Refused(why) => (None, Some(format!("refused: {why}"))),
            Outcome::Transport(why) => (None, Some(why.clone())),
        };
        let attempts = d.attempts.saturating_add(1);
        let result = match policy::judge(&outcome) {
            Verdict::Delivered => AttemptResult::Delivered {
                status: status.unwrap_or(200),
            },
            Verdict::GiveUp => AttemptResult::GaveUp { status, error },
            Verdict::Retry => {
                match self.hooks.schedule.next_attempt(
                    attempts,
                    d.created_ms,
                    at_ms,
                    rand::random(),
                ) {
                    Some(next_ms) => AttemptResult::Retry {
                        status,
                        error,
                        next_ms,
                    },
                    None => AttemptResult::GaveUp {
                        status,
                        error: Some(format!(
                            "gave up after {attempts} attempts: {}",
                            error.as_deref().unwrap_or("retryable status")
                        )),
                    },
                }
            }
        };
        let store = self.hooks.store.clone();
        let key = d.key;
        let recorded = {
            let result = result.clone();
            tokio::task::spawn_blocking(move || store.record_attempt(key, &result)).await
        };
        self.in_flight.remove(&key);
        match recorded {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::error!(%err, msg_id = %d.msg_id, "webhook attempt not recorded; it will be repeated");
                return;
            }
            Err(err) => {
                tracing::error!(%err, msg_id = %d.msg_id, "webhook attempt not recorded; it will be repeated");
                return;
            }
        }
        // Never the body nor its phone numbers: ids, type, host and the answer only.
        match &result {
            AttemptResult::Delivered { status } => {
                self.metrics.webhooks_delivered.fetch_add(1, Relaxed);
                tracing::debug!(msg_id = %d.msg_id, event = %d.event_type, host = %d.url_host, status, attempts, "webhook delivered");
            }
            AttemptResult::Retry {
                status,
                error,
                next_ms,
                ..
            } => {
                self.metrics.webhooks_retried.fetch_add(1, Relaxed);
                tracing::info!(msg_id = %d.msg_id, event = %d.event_type, host = %d.url_host, ?status, error = error.as_deref().unwrap_or(""), attempts, retry_in_ms = next_ms.saturating_sub(at_ms), "webhook attempt failed; will retry");
            }
            AttemptResult::GaveUp { status, error } => {
                self.metrics.webhooks_failed.fetch_add(1, Relaxed);
                tracing::warn!(msg_id = %d.msg_id, event = %d.event_type, host = %d.url_host, ?status, error = error.as_deref().unwrap_or(""), attempts, "webhook delivery given up");
            }
        }
    }
}

/// One attempt at `d`, signed with this attempt's timestamp.
async fn attempt(hooks: &Webhooks, d: &Delivery) -> Outcome {
    let Some(endpoint) = hooks.endpoints.iter().find(|e| e.id == d.endpoint) else {
        return Outcome::Refused("the webhook is no longer configured".to_owned());
    };
    let Some(body) = d.body.as_deref() else {
        return Outcome::Refused("the delivery has no body".to_owned());
    };
    let timestamp = unix_ms(clock::wallclock()) / 1000;
    let config = &endpoint.config;
    let signature = signature::sign(
        config.secret.expose(),
        &d.msg_id,
        timestamp,
        body.as_bytes(),
    );
    client::post(
        &hooks.tls,
        &client::Attempt {
            url: &config.url,
            allow_private: config.allow_private,
            timeout: Duration::from_millis(config.timeout_ms),
            msg_id: &d.msg_id,
            timestamp,
            signature: &signature,
            body: body.as_bytes(),
        },
    )
    .await
}

/// [`Webhooks::release_held`] on the blocking pool: how many were released.
fn release_held(store: &Store, endpoints: &[Endpoint], node: &str) -> Result<usize, QueryError> {
    let now = unix_ms(clock::wallclock());
    let mut released = 0;
    for held in store.held_deliveries(MAX_HELD_SWEEP)? {
        let Some(call) = outbox::recording_call(&held.msg_id) else {
            store.abandon_held(held.key, "not a recording")?;
            continue;
        };
        let record = match store.get_record(&call) {
            Ok(record) => record,
            Err(QueryError::BadRecord { .. }) => None,
            Err(err) => return Err(err),
        };
        if record.as_ref().is_some_and(|r| r.status.is_open()) {
            continue;
        }
        let path = record.and_then(|r| r.recording).and_then(|r| r.path);
        let Some(size_bytes) = path
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
        else {
            store.abandon_held(held.key, "the recording is gone")?;
            continue;
        };
        // Stereo 16-bit 8 kHz after the 44-byte header: 32 bytes a millisecond.
        let ready = RecordingReady::new(call, size_bytes.saturating_sub(44) / 32, size_bytes);
        let owed: Vec<_> = outbox::recording_deliveries(endpoints, node, &ready, now, false)
            .into_iter()
            .filter(|d| d.endpoint == held.endpoint)
            .collect();
        if owed.is_empty() {
            store.abandon_held(held.key, "the webhook no longer wants it")?;
            continue;
        }
        store.enqueue_deliveries(&owed, now)?;
        released += 1;
    }
    Ok(released)
}
