//! `GET /api/events`: call events as server-sent events. Each event's `id:` is its global
//! sequence number and its data the stored JSON; a client reconnecting with `Last-Event-ID`
//! (or `?last_event_id=`) first gets every event after it from the store, then live ones.
//! Comments keep idle connections open every 15 s.
//!
//! A client is subscribed to the store's broadcast before the replay is read, so nothing falls
//! between the two; duplicates are skipped by sequence number. A client too slow to keep up
//! lags the broadcast and is dropped (its stream ends); it reconnects with its last id and
//! catches up from the store, while nobody else ever waited for it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::{ApiError, ApiState, params};
use crate::metrics::Metrics;
use crate::store::{PublishedEvent, Store};

/// Events read from the store per replay step.
const REPLAY_STEP: usize = 500;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The handler.
pub(super) async fn stream(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let p = params(query, &["last_event_id"])?;
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("x").to_owned());
    let resume = match header.or_else(|| p.get("last_event_id").cloned()) {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(
            s.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::BadRequest("Last-Event-ID must be a number".into()))?,
        ),
    };
    let feed = Feed {
        live: state.store.subscribe(),
        store: state.store.clone(),
        last: resume.unwrap_or(0),
        replaying: resume.is_some(),
        backlog: VecDeque::new(),
        shutdown: state.shutdown.clone(),
        client: Client::new(Arc::clone(&state.metrics)),
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        let sse = Event::default()
            .id(event.seq.to_string())
            .data(event.json.as_str());
        Some((Ok(sse), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// One client's position in the event log.
struct Feed {
    live: broadcast::Receiver<Arc<PublishedEvent>>,
    store: Store,
    /// The last sequence number sent (or the one the client resumed from).
    last: u64,
    /// Still reading missed events from the store.
    replaying: bool,
    backlog: VecDeque<PublishedEvent>,
    shutdown: CancellationToken,
    /// Counted in `/metrics` while connected.
    client: Client,
}

impl Feed {
    /// The next event for this client; `None` ends the stream (shutdown, lagging, store error).
    async fn next(&mut self) -> Option<PublishedEvent> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.last = event.seq;
                return Some(event);
            }
            if self.replaying {
                let (store, after) = (self.store.clone(), self.last);
                match tokio::task::spawn_blocking(move || store.events_after(after, REPLAY_STEP))
                    .await
                {
                    Ok(Ok(events)) if !events.is_empty() => self.backlog.extend(events),
                    Ok(Ok(_)) => self.replaying = false,
                    Ok(Err(err)) => {
                        tracing::warn!(%err, "event replay failed; closing the stream");
                        return None;
                    }
                    Err(_) => return None,
                }
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                received = self.live.recv() => match received {
                    Ok(event) if event.seq > self.last => {
                        self.last = event.seq;
                        return Some((*event).clone());
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        self.client.metrics.sse_dropped.fetch_add(1, Relaxed);
                        tracing::info!(missed, last = self.last, "event-stream client fell behind; dropped");
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// Counts a connected client for `/metrics` while it lives.
struct Client {
    metrics: Arc<Metrics>,
}

impl Client {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.sse_clients.fetch_add(1, Relaxed);
        Self { metrics }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.metrics.sse_clients.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::{CallEvent, CallId, CallInfo, Source};
    use crate::store::timestamp::system_time;

    fn store() -> Store {
        let dir = std::env::temp_dir().join(format!(
            "earshot-sse-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Store::open(dir.join("store.redb")).unwrap()
    }

    fn calls(store: &Store, n: u32) {
        let events = (0..n)
            .map(|i| {
                let at = system_time(1_000_000 + u64::from(i));
                CallEvent::Started {
                    info: CallInfo {
                        id: CallId::new(at, rand::random()),
                        source: Source::Sip,
                        external_id: format!("x{i}-{}", rand::random::<u32>()),
                        caller: "1".into(),
                        callee: "2".into(),
                        started_at: at,
                    },
                }
            })
            .collect();
        store.write_events(events, &Metrics::default()).unwrap();
    }

    fn feed(store: &Store, metrics: &Arc<Metrics>, resume: Option<u64>) -> Feed {
        Feed {
            live: store.subscribe(),
            store: store.clone(),
            last: resume.unwrap_or(0),
            replaying: resume.is_some(),
            backlog: VecDeque::new(),
            shutdown: CancellationToken::new(),
            client: Client::new(Arc::clone(metrics)),
        }
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_is_dropped_and_catches_up_by_resuming() {
        let store = store();
        let metrics = Arc::new(Metrics::default());
        let mut stalled = feed(&store, &metrics, None);
        let mut reader = feed(&store, &metrics, None);
        calls(&store, 10);
        for seq in 1..=10 {
            assert_eq!(reader.next().await.unwrap().seq, seq);
        }
        // More than the broadcast holds, while `stalled` reads nothing; writing never waits.
        calls(&store, BROADCAST_LAG);
        assert!(
            stalled.next().await.is_none(),
            "a lagging client's stream ends"
        );
        assert_eq!(metrics.sse_dropped.load(Relaxed), 1);
        // Reconnecting with its last id replays everything from the store, in order.
        let mut resumed = feed(&store, &metrics, Some(0));
        let total = 10 + BROADCAST_LAG as u64;
        for seq in 1..=total {
            assert_eq!(resumed.next().await.unwrap().seq, seq);
        }
        assert_eq!(metrics.sse_clients.load(Relaxed), 3);
        drop((stalled, reader, resumed));
        assert_eq!(metrics.sse_clients.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn resuming_skips_what_was_seen_and_shutdown_ends_the_stream() {
        let store = store();
        let metrics = Arc::new(Metrics::default());
        calls(&store, 5);
        let mut resumed = feed(&store, &metrics, Some(3));
        assert_eq!(resumed.next().await.unwrap().seq, 4);
        assert_eq!(resumed.next().await.unwrap().seq, 5);
        calls(&store, 1);
        assert_eq!(
            resumed.next().await.unwrap().seq,
            6,
            "live after the replay, no duplicate"
        );
        resumed.shutdown.cancel();
        assert!(resumed.next().await.is_none());
    }

    /// Enough events to overflow the store's broadcast buffer.
    const BROADCAST_LAG: u32 = 1100;
}
