//! Inside an established SIP call, against SIPp callers on loopback: RFC 4028 session timers
//! with earshot as the refresher (a re-INVITE at half of a 90 s interval, the smallest the RFC
//! allows), and REFER from the caller (RFC 3515), refused by default and accepted with
//! `[sip].accept_refer`.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use support::Earshot;
use support::sipp::{self, Scenario};

/// Keeps the call up without RTP from the caller for the whole test.
const NO_SILENCE_TIMEOUT: &str = "[rtp]\nsilence_timeout_secs = 0\n";

/// One SIPp call of `scenario` to `e`, which must pass within `secs`.
fn one_call(e: &Earshot, scenario: &Scenario, secs: u64) {
    let outcome = sipp::start(
        e.dir(),
        scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    )
    .wait(Duration::from_secs(secs));
    sipp::assert_passed(&outcome, 1, e);
}

#[test]
fn earshot_refreshes_a_90s_session_by_reinvite_and_the_call_goes_on() {
    let e = Earshot::start(NO_SILENCE_TIMEOUT);
    one_call(&e, &Scenario::load("uac_session_timer.xml", &[]), 90);
    let log = e.stderr_log();
    assert!(
        !log.contains("session_expired"),
        "the refreshed call must not expire:\n{}",
        e.log_tail(30)
    );
}

/// The caller's NOTIFY stating `status` (its sipfrag), answered 200.
fn notify(status: u16) -> String {
    format!(
        r#"  <recv request="NOTIFY">
    <action><ereg regexp="^SIP/2.0 {status} " search_in="body" check_it="true" assign_to="frag{status}"/></action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <Reference variables="frag{status}"/>"#
    )
}

/// Runs the REFER caller against earshot with `config`, expecting `status` to its REFER;
/// returns whether earshot reported a transfer request.
fn refer_call(config: &str, status: u16, notify: &str) -> bool {
    let e = Earshot::start(config);
    let scenario = Scenario::load(
        "uac_refer.xml",
        &[
            ("REFER_STATUS", status.to_string()),
            ("NOTIFY", notify.to_string()),
        ],
    );
    one_call(&e, &scenario, 30);
    e.stderr_log().contains("REFER accepted")
}

#[test]
fn a_refer_from_the_caller_is_refused_by_default_and_a_malformed_one_gets_400() {
    assert!(!refer_call("", 403, ""), "nobody may be asked to dial");
}

#[test]
fn a_refer_is_accepted_with_202_and_notify_when_the_config_allows_it() {
    // The NOTIFY "100 Trying" at once; then earshot would call the target, but
    // `[calls].outbound_allow` is empty: the NOTIFY says 403.
    let notifies = notify(100) + "\n" + &notify(403);
    assert!(refer_call("[sip]\naccept_refer = true\n", 202, &notifies));
}
