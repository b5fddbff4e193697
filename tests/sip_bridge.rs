//! Bridged transfers against real peers: a SIPp caller whose Allow has no REFER is transferred
//! through the API, so earshot calls the target itself and joins the two legs' media.
//!
//! - baresip in auto-answer is the target. The caller streams a 600 Hz tone, baresip says a
//!   1000 Hz tone: baresip's decoded audio holds the caller's tone, and earshot's recording
//!   holds the target's on its right channel (what the caller hears). baresip hangs up when
//!   its tone is over, and the caller gets earshot's BYE; the record says bridged, to whom,
//!   and that the target hung up.
//! - A busy target (a SIPp callee answering 486): `transfer_failed` with reason `busy`, and
//!   the call goes on until it is hung up.
//! - A caller whose side answers earshot's REFER 403: the transfer goes on as a bridge.
//! - The caller hanging up a bridged call: baresip gets earshot's BYE; hanging up while the
//!   target rings: the target gets earshot's CANCEL.

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
use serde_json::{Value, json};
use support::pcap;
use support::sipp::{self, Scenario, Sipp};
use support::{Earshot, only_recording, temp_dir, tone_blocks};

const CALLER_HZ: f64 = 600.0;
const TARGET_HZ: f64 = 1000.0;

fn tone(hz: f64, ms: u32, amplitude: f64) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect()
}

/// A capture of `ms` of the caller's tone, μ-law.
fn caller_pcap(dir: &Path, ms: u32) -> String {
    let pcm = tone(CALLER_HZ, ms, 10000.0);
    let mut codes = vec![0u8; pcm.len()];
    Law::Ulaw.encode(&pcm, &mut codes);
    let packets = pcap::g711_packets(0, 1000, &codes);
    let path = dir.join("caller.pcap");
    pcap::write_rtp_pcap(&path, 0x600d_f00d, 100, &packets).unwrap();
    path.display().to_string()
}

/// A SIPp caller without REFER in its Allow, streaming `pcap` and waiting for earshot's BYE.
fn caller(e: &Earshot, pcap: String) -> Sipp {
    caller_in(e, "uac_wait_bye.xml", pcap, &[])
}

/// A SIPp caller of `scenario` (one with a `PCAP` and a `BYE_TIMEOUT_MS`, and `vars`).
fn caller_in(e: &Earshot, scenario: &str, pcap: String, vars: &[(&str, String)]) -> Sipp {
    let mut all = vec![("PCAP", pcap), ("BYE_TIMEOUT_MS", "60000".to_owned())];
    all.extend(vars.iter().cloned());
    sipp::caller(e, scenario, &all)
}

/// The one call earshot has, once it is answered.
fn answered_call(e: &Earshot) -> String {
    let mut id = String::new();
    e.wait_for(
        "the caller's call answered",
        Duration::from_secs(20),
        || {
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
            has_event(&call_detail(e, &id), "answered")
        },
    );
    id
}

fn transfer(e: &Earshot, id: &str, to: &str) {
    let asked = http::send_json(
        e.http_addr(),
        "POST",
        &format!("/api/calls/{id}/transfer"),
        &json!({ "to": to }),
    );
    assert_eq!(asked.status, 202, "{}", asked.text());
}

#[test]
fn a_caller_without_refer_is_bridged_to_baresip_with_media_both_ways() {
    let dir = temp_dir("bridge-baresip");
    // What the target says: 6 s of its tone; baresip hangs up when its file source ends.
    let source_path = dir.join("target.wav");
    support::write_wav_8k(&source_path, &tone(TARGET_HZ, 6000, 8000.0));
    // The target speaks A-law, the caller μ-law: the bridge carries linear audio between them.
    let params = ";regint=0;audio_codecs=PCMA;answermode=auto";
    let (peer, baresip) = support::baresip::start(&dir, &source_path, params, 60);
    let target = format!("sip:baresip@127.0.0.1:{}", peer.port);
    let e = Earshot::start(&format!(
        "[log]\nlevel = \"info,earshot=debug\"\n[calls]\noutbound_allow = [{target:?}]\n"
    ));
    // The caller's tone lasts well past the bridge.
    let sipp = caller(&e, caller_pcap(e.dir(), 20_000));
    let id = answered_call(&e);
    transfer(&e, &id, &target);

    // baresip answers, says its tone, hangs up; earshot hangs up the caller.
    sipp::assert_passed(&sipp.wait(Duration::from_secs(60)), 1, &e);
    let call = ended(&e, &id);
    let log = support::baresip::stop(baresip);
    assert!(
        log.contains("Call established"),
        "baresip:\n{log}\n--- earshot ---\n{}",
        e.log_tail(30)
    );
    assert_eq!(call["end_reason"], "target hangup", "{call:#}");
    assert_eq!(call["transfer"]["to"], target.as_str(), "{call:#}");
    assert_eq!(call["transfer"]["method"], "bridge", "{call:#}");
    let transfers = events_of(&call, "transfer");
    let kinds: Vec<_> = transfers.iter().map(|ev| ev["type"].clone()).collect();
    assert_eq!(
        kinds,
        ["transfer_requested", "transferred"],
        "{transfers:#?}"
    );
    assert!(
        transfers.iter().all(|ev| ev["method"] == "bridge"),
        "{transfers:#?}"
    );

    // The target's tone is what the caller heard: the recording's right channel.
    e.wait_for("the recording finished", Duration::from_secs(10), || {
        call_detail(&e, &id)["recording"]["state"] == "complete"
    });
    let mut reader = hound::WavReader::open(only_recording(e.dir())).unwrap();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let target_blocks = tone_blocks(&right, TARGET_HZ);
    // 6 s of tone is 300 blocks; allow for the answer, the jitter buffer and the hangup.
    assert!(
        target_blocks >= 150,
        "{target_blocks} blocks of the target's tone on the right channel"
    );

    // The caller's tone reached the target.
    let heard = support::baresip::heard(&peer.dump);
    let caller_blocks = tone_blocks(&heard, CALLER_HZ);
    assert!(
        caller_blocks >= 150,
        "baresip heard {caller_blocks} blocks of the caller's tone"
    );
}

/// Transfers a call of `caller` (a scenario and its vars) to a SIPp callee answering 486, and
/// checks the call goes on and ends normally; returns the call's transfer events.
fn transfer_to_a_busy_target(prefix: &str, scenario: &str, vars: &[(&str, String)]) -> Vec<Value> {
    let dir = temp_dir(prefix);
    let busy_port = sipp::port();
    let busy = sipp::start(
        &dir,
        &Scenario::load("uas_busy.xml", &[]),
        None,
        busy_port,
        &["-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let target = format!("sip:bob@127.0.0.1:{busy_port}");
    let e = Earshot::start("[calls]\noutbound_allow = [\"sip:bob@127.0.0.1:*\"]\n");
    let sipp = caller_in(&e, scenario, caller_pcap(e.dir(), 4000), vars);
    let id = answered_call(&e);
    transfer(&e, &id, &target);
    e.wait_for("transfer_failed", Duration::from_secs(20), || {
        has_event(&call_detail(&e, &id), "transfer_failed")
    });
    sipp::assert_passed(&busy.wait(Duration::from_secs(20)), 1, &e);
    let live = call_detail(&e, &id);
    assert_eq!(live["status"], "active", "the call goes on: {live:#}");

    http::hang_up(e.http_addr(), &id, &[]);
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    let call = ended(&e, &id);
    assert_eq!(call["end_reason"], "local hangup", "{call:#}");
    assert!(call["transfer"].is_null(), "{call:#}");
    let transfers = events_of(&call, "transfer");
    let failed = transfers.last().unwrap();
    assert_eq!(failed["type"], "transfer_failed", "{transfers:#?}");
    assert_eq!(failed["reason"], "busy", "{transfers:#?}");
    assert_eq!(failed["to"], target.as_str(), "{transfers:#?}");
    transfers
}

#[test]
fn a_busy_target_fails_the_bridged_transfer_and_the_call_goes_on() {
    let transfers = transfer_to_a_busy_target("bridge-busy", "uac_wait_bye.xml", &[]);
    let kinds: Vec<_> = transfers.iter().map(|ev| ev["type"].clone()).collect();
    assert_eq!(
        kinds,
        ["transfer_requested", "transfer_failed"],
        "{transfers:#?}"
    );
    assert_eq!(transfers[0]["method"], "bridge", "{transfers:#?}");
}

/// A caller whose Allow lists REFER but whose side refuses it (403): the transfer asked by
/// REFER goes on as a bridge (a second `transfer_requested`, method `bridge`).
#[test]
fn a_refer_refused_by_the_callers_side_becomes_a_bridge() {
    let transfers = transfer_to_a_busy_target(
        "bridge-after-refer",
        "uac_refuses_refer.xml",
        &[("REFER_STATUS", "403 Forbidden".to_owned())],
    );
    let kinds: Vec<_> = transfers.iter().map(|ev| ev["type"].clone()).collect();
    assert_eq!(
        kinds,
        [
            "transfer_requested",
            "transfer_requested",
            "transfer_failed"
        ],
        "{transfers:#?}"
    );
    assert_eq!(transfers[0]["method"], "refer", "{transfers:#?}");
    assert_eq!(transfers[1]["method"], "bridge", "{transfers:#?}");
}

/// The caller hangs up a bridged call: earshot ends the target's leg with a BYE (baresip says
/// its call closed before it would have quit by itself), and the record says the caller hung
/// up.
#[test]
fn the_caller_hanging_up_a_bridged_call_ends_the_targets_leg() {
    let dir = temp_dir("bridge-caller-hangs-up");
    // Longer than the call: baresip must not hang up first.
    let source_path = dir.join("target.wav");
    support::write_wav_8k(&source_path, &tone(TARGET_HZ, 30_000, 8000.0));
    let params = ";regint=0;audio_codecs=PCMU;answermode=auto";
    let (peer, baresip) = support::baresip::start(&dir, &source_path, params, 60);
    let target = format!("sip:baresip@127.0.0.1:{}", peer.port);
    let e = Earshot::start(&format!("[calls]\noutbound_allow = [{target:?}]\n"));
    let talk = [("TALK_MS", "6000".to_owned())];
    let sipp = caller_in(
        &e,
        "uac_hangs_up_no_refer.xml",
        caller_pcap(e.dir(), 6000),
        &talk,
    );
    let id = answered_call(&e);
    transfer(&e, &id, &target);
    e.wait_for("the bridge", Duration::from_secs(20), || {
        has_event(&call_detail(&e, &id), "transferred")
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    let call = ended(&e, &id);
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert_eq!(call["transfer"]["method"], "bridge", "{call:#}");
    // Give baresip a moment to take the BYE, then read what it said.
    std::thread::sleep(Duration::from_secs(1));
    let log = support::baresip::stop(baresip);
    assert!(log.contains("Call established"), "baresip:\n{log}");
    // baresip's words for a BYE from the far end.
    assert!(
        log.contains("session closed: Connection reset by peer"),
        "baresip got no BYE:\n{log}\n--- earshot ---\n{}",
        e.log_tail(30)
    );
}

/// The caller hangs up while the target still rings: earshot cancels the target's INVITE
/// (the SIPp callee gets the CANCEL), and the record names no transfer.
#[test]
fn the_caller_hanging_up_while_the_target_rings_cancels_it() {
    let dir = temp_dir("bridge-cancel");
    let ringing_port = sipp::port();
    let ringing = sipp::start(
        &dir,
        &Scenario::load(
            "uas_rings_until_cancel.xml",
            &[("CANCEL_TIMEOUT_MS", "30000".to_owned())],
        ),
        None,
        ringing_port,
        &["-m", "1"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let target = format!("sip:bob@127.0.0.1:{ringing_port}");
    let e = Earshot::start("[calls]\noutbound_allow = [\"sip:bob@127.0.0.1:*\"]\n");
    let talk = [("TALK_MS", "3000".to_owned())];
    let sipp = caller_in(
        &e,
        "uac_hangs_up_no_refer.xml",
        caller_pcap(e.dir(), 3000),
        &talk,
    );
    let id = answered_call(&e);
    transfer(&e, &id, &target);
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    sipp::assert_passed(&ringing.wait(Duration::from_secs(30)), 1, &e);
    let call = ended(&e, &id);
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert!(call["transfer"].is_null(), "{call:#}");
}
