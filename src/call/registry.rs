//! The live calls, by id: how the API finds a call's [`CallHandle`] to show it, hang it up or
//! switch its speaker playout.
//!
//! The map sits behind a `std::sync::RwLock` because it is read by every API request and
//! written only when a call starts or ends; the lock is never held across an `.await` or while
//! talking to a call (handles are cloned out first).

use std::collections::HashMap;
use std::sync::RwLock;

use super::CallHandle;
use super::event::CallId;

#[derive(Debug, Default)]
pub struct Registry {
    calls: RwLock<HashMap<CallId, CallHandle>>,
}

impl Registry {
    pub fn insert(&self, handle: CallHandle) {
        self.write().insert(handle.id().clone(), handle);
    }

    pub fn remove(&self, id: &CallId) -> Option<CallHandle> {
        self.write().remove(id)
    }

    pub fn get(&self, id: &CallId) -> Option<CallHandle> {
        self.read().get(id).cloned()
    }

    /// Every live call, oldest first.
    pub fn list(&self) -> Vec<CallHandle> {
        let mut calls: Vec<CallHandle> = self.read().values().cloned().collect();
        calls.sort_by(|a, b| a.id().cmp(b.id()));
        calls
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CallId, CallHandle>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still good to use.
        self.calls.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<CallId, CallHandle>> {
        self.calls.write().unwrap_or_else(|p| p.into_inner())
    }
}
