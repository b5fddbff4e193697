//! The store survives `kill -9` in the middle of a call: the next earshot on the same file
//! opens it, closes the call that was live as `interrupted`, and keeps the finished calls
//! intact. A store held by another earshot, or a file that is not a store, stops earshot with
//! a clear error instead of a panic.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use serde_json::Value;
use support::pcap;
use support::sipp::{self, Scenario};
use support::{EARSHOT_BIN, Earshot, free_udp_tcp_port};

fn caller_pcap(e: &Earshot, ms: u32) -> String {
    let codes = pcap::coded_test_signal(Law::Ulaw, ms);
    let path = e.dir().join(format!("caller-{ms}.pcap"));
    pcap::write_rtp_pcap(&path, 0x0bad_cafe, 1, &pcap::g711_packets(0, 0, &codes)).unwrap();
    path.display().to_string()
}

fn calls(e: &Earshot) -> Vec<Value> {
    http::get(e.http_addr(), "/api/calls?limit=500").json()["calls"]
        .as_array()
        .cloned()
        .unwrap()
}

/// Waits until `check` holds for the listed calls.
fn wait_calls(e: &Earshot, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = calls(e);
        if check(&listed) {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {listed:#?}\n{}",
            e.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_during_a_call_leaves_it_interrupted_and_finished_calls_intact() {
    let mut first = Earshot::start("");
    // Two calls that finish normally.
    let short = caller_pcap(&first, 300);
    let finished = Scenario::load(
        "uac_wait_bye.xml",
        &[("PCAP", short), ("BYE_TIMEOUT_MS", "20000".into())],
    );
    let run = sipp::start(
        first.dir(),
        &finished,
        Some(first.sip_addr()),
        sipp::port(),
        &["-m", "2", "-l", "2"],
    );
    // uac_wait_bye waits for our BYE: end them through the API once they are live.
    let live = wait_calls(&first, "two live calls", |c| {
        c.iter().filter(|c| c["status"] == "active").count() == 2
    });
    for call in &live {
        let r = http::request(
            first.http_addr(),
            "POST",
            &format!("/api/calls/{}/hangup", call["id"].as_str().unwrap()),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let outcome = run.wait(Duration::from_secs(20));
    assert!(outcome.all_passed(2), "{outcome:?}");
    let done = wait_calls(&first, "two ended calls", |c| {
        c.len() == 2 && c.iter().all(|c| c["status"] == "ended")
    });
    let done_details: Vec<Value> = done
        .iter()
        .map(|c| {
            http::get(
                first.http_addr(),
                &format!("/api/calls/{}", c["id"].as_str().unwrap()),
            )
            .json()
        })
        .collect();

    // A long call, killed in the middle.
    let long = caller_pcap(&first, 10_000);
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[("PCAP", long), ("BYE_TIMEOUT_MS", "15000".into())],
    );
    let caller = sipp::start(
        first.dir(),
        &scenario,
        Some(first.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    );
    let listed = wait_calls(&first, "the long call live", |c| {
        c.len() == 3 && c[0]["status"] == "active"
    });
    let victim = listed[0]["id"].as_str().unwrap().to_owned();
    let seen_live = std::time::Instant::now();
    // Long enough for an alive mark (every 2 s while calls are live) after the last event.
    std::thread::sleep(Duration::from_millis(4500));
    first.kill_9();
    let recorded_before_kill = seen_live.elapsed().as_secs_f64();
    let _ = caller.wait(Duration::from_secs(15));

    // Restart on the same store and recordings.
    let store = first.dir().join("earshot.redb");
    let recordings = first.dir().join("recordings");
    let second = Earshot::start(&format!(
        "[store]\npath = {:?}\n[recording]\ndir = {:?}\n",
        store.display().to_string(),
        recordings.display().to_string()
    ));
    let after = calls(&second);
    assert_eq!(after.len(), 3, "{after:#?}");
    let interrupted = &after[0];
    assert_eq!(interrupted["id"], victim.as_str());
    assert_eq!(interrupted["status"], "interrupted");
    assert!(interrupted["ended_at"].is_string(), "{interrupted:#}");
    let lasted = interrupted["duration_secs"].as_f64().unwrap();
    assert!(
        (2.0..30.0).contains(&lasted),
        "ends near the crash, not at its last event: {lasted}"
    );
    let detail = http::get(second.http_addr(), &format!("/api/calls/{victim}")).json();
    assert_eq!(
        detail["events"].as_array().unwrap().last().unwrap()["type"],
        "interrupted"
    );
    assert_eq!(detail["recording"]["state"], "interrupted");
    // The recording the crash left was repaired at startup and is served.
    let wav = http::get(
        second.http_addr(),
        &format!("/api/calls/{victim}/recording"),
    );
    assert_eq!(wav.status, 200);
    assert!(
        wav.body.starts_with(b"RIFF") && wav.body.len() > 44,
        "{} bytes",
        wav.body.len()
    );
    // Playable to the end, and at most the last second lost (the header is flushed about
    // once a second).
    let mut reader = hound::WavReader::open(recordings.join(format!("{victim}.wav"))).unwrap();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let samples = samples.len();
    let seconds = samples as f64 / 2.0 / 8000.0;
    assert!(
        seconds >= recorded_before_kill - 1.0,
        "{seconds:.2} s recorded of the {recorded_before_kill:.2} s the call was live"
    );

    for before in &done_details {
        let id = before["id"].as_str().unwrap();
        let now = http::get(second.http_addr(), &format!("/api/calls/{id}")).json();
        for key in [
            "status",
            "started_at",
            "answered_at",
            "ended_at",
            "end_reason",
            "stats",
            "events",
            "recording",
        ] {
            assert_eq!(
                now[key], before[key],
                "{key} of finished call {id} changed across the crash"
            );
        }
    }
    let metrics = http::get(second.http_addr(), "/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "earshot_calls_interrupted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "earshot_calls{source=\"sip\",status=\"ended\"} 2"),
        "{metrics}"
    );
    drop(second);
    drop(first);
}

/// Runs the binary on `config` and returns its exit status and output.
fn run_to_exit(config: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(EARSHOT_BIN)
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn a_store_in_use_by_another_earshot_is_a_clear_error() {
    let first = Earshot::start("");
    // Same config (same store), run while the first holds it. The store opens before any
    // socket is bound, so the error is the store's.
    let (code, output) = run_to_exit(first.config_path());
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("in use by another process"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
    assert!(first.options_ok(), "the first earshot is unaffected");
}

#[test]
fn a_garbage_store_file_is_a_clear_error() {
    let dir = support::temp_dir("earshot-garbage-store");
    let store = dir.join("earshot.redb");
    std::fs::write(&store, b"this is a text file, not a database\n".repeat(200)).unwrap();
    let config = dir.join("earshot.toml");
    let sip = free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = \"127.0.0.1:{sip}\"\n[audio]\noutput = \"none\"\n[recording]\ndir = {:?}\n[store]\npath = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("recordings").display().to_string(),
            store.display().to_string()
        ),
    )
    .unwrap();
    let (code, output) = run_to_exit(&config);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("not a valid earshot database"), "{output}");
    assert!(!output.contains("panicked"), "{output}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_during_a_call_ends_it_cleanly_in_the_store() {
    let mut first = Earshot::start("");
    let pcap = caller_pcap(&first, 10_000);
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[("PCAP", pcap), ("BYE_TIMEOUT_MS", "15000".into())],
    );
    let caller = sipp::start(
        first.dir(),
        &scenario,
        Some(first.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    );
    let listed = wait_calls(&first, "the call live", |c| {
        c.len() == 1 && c[0]["status"] == "active"
    });
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let stopped = Instant::now();
    let status = first.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        first.log_tail(20)
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        stopped.elapsed()
    );
    assert!(
        !first
            .stderr_log()
            .contains("did not write the last call events"),
        "{}",
        first.log_tail(20)
    );
    let outcome = caller.wait(Duration::from_secs(20));
    assert!(outcome.all_passed(1), "the caller got our BYE: {outcome:?}");

    let store = first.dir().join("earshot.redb");
    let second = Earshot::start(&format!(
        "[store]\npath = {:?}\n",
        store.display().to_string()
    ));
    let call = http::get(second.http_addr(), &format!("/api/calls/{id}")).json();
    assert_eq!(call["status"], "ended", "{call:#}");
    assert!(
        call["stats"]["packets_received"].as_u64().unwrap() > 0,
        "{call:#}"
    );
    drop(second);
    drop(first);
}
