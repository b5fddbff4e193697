//! A caller that blind-transfers earshot (RFC 3515 REFER, earshot the transferee, with
//! `[sip].accept_refer`): earshot calls the Refer-To target itself and the call moves there.
//!
//! - The target is baresip in auto-answer (SIP trace on, so its log shows earshot's INVITE
//!   with the caller's Referred-By). The SIPp caller gets 202, NOTIFY 100, NOTIFY 200 and hangs
//!   up its leg; the call goes on with baresip as its caller: baresip's tone is on the
//!   recording's left channel, earshot's greeting reaches baresip, and baresip hanging up
//!   ends the call, once.
//! - A Refer-To that `[calls].outbound_allow` does not match: NOTIFY 403, no INVITE anywhere,
//!   the call goes on (the caller hangs it up afterwards).
//! - A busy target (a SIPp callee that also checks the Referred-By): NOTIFY 486, the call goes
//!   on.
//! - A caller that hangs up right after the NOTIFY 100 (blind transfer): the call waits for the
//!   target, moves there when it answers, or ends with `refer failed` when it is busy.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "call_record/mod.rs"]
mod call_record;
#[path = "console/http.rs"]
mod http;
mod support;

use std::path::Path;
use std::time::Duration;

use call_record::{call_detail, ended, events_of, has_event};
use earshot::media::g711::Law;
use serde_json::Value;
use support::pcap;
use support::sipp::{self, Scenario, Sipp};
use support::{Earshot, only_recording, temp_dir, tone_blocks};

const CALLER_HZ: f64 = 600.0;
const TARGET_HZ: f64 = 1000.0;
const GREETING_HZ: f64 = 1500.0;

/// The caller ends its leg itself after the final NOTIFY.
const SEND_BYE: &str = r#"  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:2000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:1000@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Contact: <sip:2000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>"#;

fn tone(hz: f64, ms: u32, amplitude: f64) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect()
}

/// The caller's PCMA tone, quiet: under the voice detector, so it does not barge in on the
/// greeting the target is to hear.
fn caller_pcap(dir: &Path, ms: u32) -> String {
    let pcm = tone(CALLER_HZ, ms, 400.0);
    let mut codes = vec![0u8; pcm.len()];
    Law::Alaw.encode(&pcm, &mut codes);
    let packets = pcap::g711_packets(8, 1000, &codes);
    let path = dir.join("caller.pcap");
    pcap::write_rtp_pcap(&path, 0x600d_f00d, 100, &packets).unwrap();
    path.display().to_string()
}

/// earshot with REFER accepted, a greeting of `GREETING_HZ` and `outbound_allow`.
fn earshot(allow: &str) -> Earshot {
    let dir = temp_dir("refer-in-greeting");
    let greeting = dir.join("greeting.wav");
    support::write_wav_8k(&greeting, &tone(GREETING_HZ, 30_000, 8000.0));
    Earshot::start(&format!(
        "[log]\nlevel = \"info,earshot=debug\"\n[sip]\naccept_refer = true\n[calls]\ngreeting = {:?}\noutbound_allow = [{allow:?}]\n",
        greeting.display().to_string()
    ))
}

/// The SIPp caller: REFERs to `target`, expects the final NOTIFY `final_status` (or, empty,
/// only the NOTIFY 100), then `after`.
fn caller(e: &Earshot, target: &str, final_status: &str, after: &str) -> Sipp {
    let vars = [
        ("PCAP", caller_pcap(e.dir(), 20_000)),
        ("TARGET", target.to_owned()),
        ("FINAL", final_status.to_owned()),
        (
            "LOOP",
            if final_status.is_empty() { "2" } else { "1" }.to_owned(),
        ),
        ("AFTER", after.to_owned()),
    ];
    sipp::caller(e, "uac_refers_earshot.xml", &vars)
}

/// The one call earshot has.
fn only_call(e: &Earshot) -> String {
    let mut id = String::new();
    e.wait_for("the caller's call", Duration::from_secs(20), || {
        let calls = http::request(e.http_addr(), "GET", "/api/calls?limit=5", &[], b"")
            .unwrap()
            .json()["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(first) = calls.first() else {
            return false;
        };
        id = first["id"].as_str().unwrap_or_default().to_owned();
        true
    });
    id
}

fn kinds(events: &[Value]) -> Vec<Value> {
    events.iter().map(|ev| ev["type"].clone()).collect()
}

#[test]
fn a_caller_that_refers_earshot_to_baresip_moves_the_call_there() {
    let dir = temp_dir("refer-in-baresip");
    // baresip says nothing for 3 s (earshot's greeting is heard alone), then its tone for 6 s:
    // over the greeting, it barges in.
    let source_path = dir.join("target.wav");
    let mut said = vec![0i16; 3 * 8000];
    said.extend(tone(TARGET_HZ, 6000, 8000.0));
    support::write_wav_8k(&source_path, &said);
    let peer = support::baresip::configure(
        &dir,
        &source_path,
        ";regint=0;audio_codecs=PCMU;answermode=auto",
    );
    let baresip = std::process::Command::new("baresip")
        .arg("-f")
        .arg(&peer.cfg)
        .args(["-s", "-t", "90"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("baresip must be installed (scripts/test.sh installs baresip-core)");
    std::thread::sleep(Duration::from_millis(500));
    let target = format!("sip:baresip@127.0.0.1:{}", peer.port);
    let e = earshot(&target);
    let sipp = caller(&e, &target, "200", SEND_BYE);
    let id = only_call(&e);

    // 202, NOTIFY 100, (180), 200, and the caller's BYE.
    sipp::assert_passed(&sipp.wait(Duration::from_secs(60)), 1, &e);
    e.wait_for("transferred", Duration::from_secs(20), || {
        has_event(&call_detail(&e, &id), "transferred")
    });
    let live = call_detail(&e, &id);
    assert_eq!(
        live["status"], "active",
        "the caller's BYE did not end the call: {live:#}"
    );
    // baresip's silence, then its tone, reach the call; baresip hangs up when its file is
    // over, and that ends the call.
    let call = ended(&e, &id);
    std::thread::sleep(Duration::from_secs(1));
    let log = support::baresip::stop(baresip);
    assert!(
        log.contains("Call established"),
        "baresip:\n{log}\n--- earshot ---\n{}",
        e.log_tail(40)
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("Referred-By:") && l.contains("sip:2000@")),
        "earshot's INVITE carries the caller's Referred-By:\n{log}"
    );
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert_eq!(call["transfer"]["to"], target.as_str(), "{call:#}");
    assert_eq!(call["transfer"]["method"], "referred_by_peer", "{call:#}");
    let transfers = events_of(&call, "transfer");
    assert_eq!(
        kinds(&transfers),
        ["transfer_requested", "transferred"],
        "{transfers:#?}"
    );
    assert_eq!(transfers[0]["by"], "peer", "{transfers:#?}");
    assert!(
        transfers
            .iter()
            .all(|ev| ev["method"] == "referred_by_peer"),
        "{transfers:#?}"
    );
    assert_eq!(events_of(&call, "ended").len(), 1, "{call:#}");

    // After the move baresip is the caller: its tone is on the recording's left channel.
    e.wait_for("the recording finished", Duration::from_secs(10), || {
        call_detail(&e, &id)["recording"]["state"] == "complete"
    });
    let mut reader = hound::WavReader::open(only_recording(e.dir())).unwrap();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let target_blocks = tone_blocks(&left, TARGET_HZ);
    // 6 s of tone is 300 blocks; allow for the move and the jitter buffer.
    assert!(
        target_blocks >= 150,
        "{target_blocks} blocks of baresip's tone on the left channel"
    );
    // And earshot's greeting reached baresip before its tone barged in.
    let heard = support::baresip::heard(&peer.dump);
    let greeting_blocks = tone_blocks(&heard, GREETING_HZ);
    assert!(
        greeting_blocks >= 50,
        "baresip heard {greeting_blocks} blocks of earshot's greeting"
    );
}

/// A caller REFERs `e`'s call to `target` and expects the final NOTIFY `final_status`; then
/// (and once `peer`, the target's side, is done) it hangs up itself: the call went on after
/// the failed transfer, with its dialog intact, and ends as callers' calls do. Returns the
/// failure's reason.
fn the_call_goes_on_after_a_failed_refer(
    e: &Earshot,
    target: &str,
    final_status: &str,
    peer: impl FnOnce(),
) -> Value {
    let sipp = caller(e, target, final_status, SEND_BYE);
    let id = only_call(e);
    peer();
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, e);
    let call = ended(e, &id);
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert!(call["transfer"].is_null(), "{call:#}");
    let transfers = events_of(&call, "transfer");
    assert_eq!(
        kinds(&transfers),
        ["transfer_requested", "transfer_failed"],
        "{transfers:#?}"
    );
    assert_eq!(transfers[1]["to"], target, "{transfers:#?}");
    transfers[1]["reason"].clone()
}

#[test]
fn a_refer_to_a_target_outbound_allow_does_not_match_gets_403_and_the_call_goes_on() {
    // Where the INVITE would go: nothing may arrive.
    let target_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!(
        "sip:bob@127.0.0.1:{}",
        target_socket.local_addr().unwrap().port()
    );
    let e = earshot("sip:alice@127.0.0.1:*");
    let reason = the_call_goes_on_after_a_failed_refer(&e, &target, "403", || {});
    assert_eq!(reason, "not_allowed");
    target_socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        target_socket.recv_from(&mut buf).is_err(),
        "an INVITE went to a target outbound_allow does not match"
    );
}

#[test]
fn a_busy_target_is_notified_486_and_the_call_goes_on() {
    let dir = temp_dir("refer-in-busy");
    let busy_port = sipp::port();
    let busy = sipp::start(
        &dir,
        &Scenario::load("uas_busy_referred.xml", &[]),
        None,
        busy_port,
        &["-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let target = format!("sip:bob@127.0.0.1:{busy_port}");
    let e = earshot("sip:bob@127.0.0.1:*");
    let reason = the_call_goes_on_after_a_failed_refer(&e, &target, "486", || {
        // The callee saw the Referred-By and answered 486.
        sipp::assert_passed(&busy.wait(Duration::from_secs(20)), 1, &e);
    });
    assert_eq!(reason, "busy");
}

/// The caller REFERs to a SIPp `callee` (a scenario) that rings, and hangs up right after
/// the NOTIFY 100: the call must outlive it. Returns earshot, the call, and the callee.
fn referrer_leaves_before_the_answer(prefix: &str, callee: &str) -> (Earshot, String, Sipp) {
    let dir = temp_dir(prefix);
    let callee_port = sipp::port();
    let callee = sipp::start(
        &dir,
        &Scenario::load(callee, &[]),
        None,
        callee_port,
        &["-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let target = format!("sip:bob@127.0.0.1:{callee_port}");
    let e = earshot("sip:bob@127.0.0.1:*");
    let referrer = caller(&e, &target, "", SEND_BYE);
    let id = only_call(&e);
    sipp::assert_passed(&referrer.wait(Duration::from_secs(30)), 1, &e);
    (e, id, callee)
}

#[test]
fn a_referrer_that_hangs_up_while_the_target_rings_leaves_the_call_to_the_target() {
    let (e, id, callee) =
        referrer_leaves_before_the_answer("refer-in-blind", "uas_rings_then_answers.xml");
    e.wait_for("transferred", Duration::from_secs(20), || {
        has_event(&call_detail(&e, &id), "transferred")
    });
    let live = call_detail(&e, &id);
    assert_eq!(live["status"], "active", "the call moved: {live:#}");
    http::hang_up(e.http_addr(), &id, &[]);
    // The callee got earshot's BYE.
    sipp::assert_passed(&callee.wait(Duration::from_secs(30)), 1, &e);
    let call = ended(&e, &id);
    assert_eq!(call["end_reason"], "local hangup", "{call:#}");
    assert_eq!(call["transfer"]["method"], "referred_by_peer", "{call:#}");
    assert_eq!(events_of(&call, "ended").len(), 1, "{call:#}");
}

#[test]
fn a_referrer_that_hung_up_and_a_target_that_fails_end_the_call_with_refer_failed() {
    let (e, id, callee) =
        referrer_leaves_before_the_answer("refer-in-blind-busy", "uas_rings_then_busy.xml");
    sipp::assert_passed(&callee.wait(Duration::from_secs(30)), 1, &e);
    let call = ended(&e, &id);
    assert_eq!(call["end_reason"], "refer failed", "{call:#}");
    let transfers = events_of(&call, "transfer");
    assert_eq!(
        kinds(&transfers),
        ["transfer_requested", "transfer_failed"],
        "{transfers:#?}"
    );
    assert_eq!(transfers[1]["reason"], "busy", "{transfers:#?}");
}
