//! `[store]`: the redb database file.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Errors, non_empty_path};

/// `[store]`: the embedded database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The redb file holding call history and state.
    pub path: PathBuf,
    /// Calls that started more than this many days ago are deleted with their events,
    /// transcripts, notes and recordings; 0 keeps the history forever.
    pub keep_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("earshot.redb"),
            keep_days: 90,
        }
    }
}

/// `[store]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStore {
    path: Option<PathBuf>,
    keep_days: Option<u32>,
}

pub(super) fn validate_store(e: &mut Errors, raw: RawStore) -> StoreConfig {
    let d = StoreConfig::default();
    StoreConfig {
        path: non_empty_path(e, "store.path", raw.path, d.path),
        keep_days: e.ranged("store.keep_days", raw.keep_days, d.keep_days, 0..=36_500),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::test_support::{invalid, paths};

    #[test]
    fn path_must_not_be_empty() {
        let errors = invalid("[store]\npath = \"\"\n");
        assert_eq!(paths(&errors), ["store.path"]);
        assert_eq!(errors[0].reason, "must not be empty");
    }

    #[test]
    fn keep_days_is_ranged() {
        let errors = invalid("[store]\nkeep_days = 40000\n");
        assert_eq!(paths(&errors), ["store.keep_days"]);
    }
}
