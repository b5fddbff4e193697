//! A call's record as the API shows it, for the transfer tests: the detail, its events by
//! type, and waiting for its end. Included by the test crates with
//! `#[path = "call_record/mod.rs"] mod call_record;`, beside their `mod http`.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use serde_json::Value;

use super::http;
use super::support::Earshot;

/// `GET /api/calls/{id}`.
pub fn call_detail(e: &Earshot, id: &str) -> Value {
    http::get(e.http_addr(), &format!("/api/calls/{id}")).json()
}

/// The call's events whose type starts with `prefix`.
pub fn events_of(detail: &Value, prefix: &str) -> Vec<Value> {
    detail["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|ev| ev["type"].as_str().unwrap_or_default().starts_with(prefix))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

pub fn has_event(detail: &Value, kind: &str) -> bool {
    events_of(detail, kind).iter().any(|ev| ev["type"] == kind)
}

/// The call's record once it ended (within 20 s).
pub fn ended(e: &Earshot, id: &str) -> Value {
    e.wait_for("the call ended", Duration::from_secs(20), || {
        call_detail(e, id)["status"] == "ended"
    });
    call_detail(e, id)
}
