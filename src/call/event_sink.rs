//! The channel from every call to the store: two lanes, so a flood can neither block a call
//! nor cost the history its lifecycle.
//!
//! - **Lifecycle** (`started`, `answered`, `ended`, recording, agent and transcript events,
//!   the carrier's status): never dropped. Unbounded, but bounded in practice: a call sends a
//!   handful of them (transcripts at the pace of speech) and calls are bounded by
//!   `[calls].max_concurrent`.
//! - **Detail** (`dtmf`, `hold`, `listen`, agent notices): what a caller or a far end can
//!   repeat at will. A bounded queue ([`DETAIL_CAPACITY`]); when full, the event is dropped
//!   and counted (`earshot_store_events_dropped_total`), and the call goes on.
//!
//! Sending never blocks. The store thread takes lifecycle events first, so a call's `started`
//! is always stored before its details (it was sent before them).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;

use super::event::CallEvent;

/// Detail events waiting for the store, at most.
pub const DETAIL_CAPACITY: usize = 4096;

/// What calls drop under abuse, counted (`/metrics` shows them).
#[derive(Debug, Default)]
pub struct Drops {
    /// Detail events dropped on a full lane.
    pub events: AtomicU64,
    /// DTMF digits over a call's rate limit.
    pub dtmf: AtomicU64,
}

/// The sending side, one clone per call task and driver.
#[derive(Debug, Clone)]
pub struct EventSink {
    lifecycle: mpsc::UnboundedSender<CallEvent>,
    detail: mpsc::Sender<CallEvent>,
    drops: Arc<Drops>,
}

/// The store thread's side.
#[derive(Debug)]
pub struct EventStream {
    lifecycle: mpsc::UnboundedReceiver<CallEvent>,
    detail: mpsc::Receiver<CallEvent>,
}

/// A new channel with `detail_capacity` places for detail events.
pub fn channel(detail_capacity: usize, drops: Arc<Drops>) -> (EventSink, EventStream) {
    let (lifecycle, lifecycle_rx) = mpsc::unbounded_channel();
    let (detail, detail_rx) = mpsc::channel(detail_capacity.max(1));
    (
        EventSink {
            lifecycle,
            detail,
            drops,
        },
        EventStream {
            lifecycle: lifecycle_rx,
            detail: detail_rx,
        },
    )
}

impl EventSink {
    /// The drop counters calls share.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// Queues `event` for the store without waiting. Returns false when it was not queued
    /// (the store is gone, or a full detail lane: counted).
    pub fn send(&self, event: CallEvent) -> bool {
        if event.is_lifecycle() {
            return self.lifecycle.send(event).is_ok();
        }
        match self.detail.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.drops.events.fetch_add(1, Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

impl EventStream {
    /// The next event, lifecycle first; `None` once every sender is gone and both lanes are
    /// empty.
    pub async fn recv(&mut self) -> Option<CallEvent> {
        tokio::select! {
            biased;
            Some(event) = self.lifecycle.recv() => Some(event),
            Some(event) = self.detail.recv() => Some(event),
            else => None,
        }
    }

    /// The next event already queued, lifecycle first.
    pub fn try_recv(&mut self) -> Option<CallEvent> {
        self.lifecycle
            .try_recv()
            .or_else(|_| self.detail.try_recv())
            .ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::call::{CallId, CallInfo, Codec, DtmfSource, Source};

    #[tokio::test]
    async fn a_full_detail_lane_drops_and_counts_but_lifecycle_events_always_pass() {
        let drops = Arc::new(Drops::default());
        let (sink, mut stream) = channel(2, Arc::clone(&drops));
        let id = CallId::new(crate::clock::wallclock(), 1);
        let dtmf = || CallEvent::Dtmf {
            id: id.clone(),
            digit: '5',
            duration_ms: 100,
            via: DtmfSource::Rfc4733,
        };
        let info = CallInfo {
            id: id.clone(),
            source: Source::Sip,
            external_id: "x".into(),
            caller: "1".into(),
            callee: "2".into(),
            started_at: crate::clock::wallclock(),
        };
        assert!(sink.send(CallEvent::Started { info }));
        let sent: Vec<bool> = (0..5).map(|_| sink.send(dtmf())).collect();
        assert_eq!(sent, [true, true, false, false, false]);
        for _ in 0..1000 {
            assert!(sink.send(CallEvent::Answered {
                id: id.clone(),
                codec: Codec::Pcmu,
            }));
        }
        assert_eq!(drops.events.load(Relaxed), 3);
        drop(sink);
        let mut kinds = Vec::new();
        while let Some(event) = stream.recv().await {
            kinds.push(event.kind());
        }
        assert_eq!(kinds.len(), 1 + 1000 + 2);
        assert_eq!(kinds[0], "started");
        assert_eq!(&kinds[1001..], ["dtmf", "dtmf"]);
    }
}
