//! Draining: whether this box takes new calls. One switch, set by `POST /api/drain` and
//! SIGUSR1 (undone by `DELETE /api/drain` and SIGUSR2), read by whoever admits calls — the SIP
//! task hands it to the endpoint (new INVITEs and OPTIONS get 503 with Retry-After, so a
//! dispatcher such as Kamailio's stops sending calls here), the Twilio webhook answers with its
//! fallback TwiML — and shown by `/health`, `/metrics` (`earshot_draining`) and the API. Calls
//! in progress are not touched: they end when their callers hang up.

use std::sync::Arc;

use tokio::sync::watch;

/// The draining switch; clones share it.
#[derive(Debug, Clone)]
pub struct Drain(Arc<watch::Sender<bool>>);

impl Default for Drain {
    fn default() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }
}

impl Drain {
    /// Starts (`true`) or ends (`false`) draining; returns whether that changed anything.
    pub fn set(&self, draining: bool) -> bool {
        self.0.send_replace(draining) != draining
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// A receiver that wakes on every change, for a task that must act on it.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn set_reports_changes_and_clones_share_the_switch() {
        let drain = Drain::default();
        let other = drain.clone();
        let mut rx = drain.watch();
        assert!(!other.is_draining());
        assert!(drain.set(true));
        assert!(!drain.set(true));
        assert!(other.is_draining());
        assert!(rx.has_changed().unwrap());
        assert!(*rx.borrow_and_update());
        assert!(other.set(false));
        assert!(!drain.is_draining());
    }
}
