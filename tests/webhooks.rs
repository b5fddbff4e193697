//! Webhooks out against a real receiver (tests/agents/webhook_receiver.py) that verifies every
//! request with the Standard Webhooks reference library: the events of a real SIPp call,
//! retries with a stable `webhook-id`, deliveries pending across a kill -9, the private-address
//! refusal, and statuses that are given up at once (410, and 302: redirects are not followed).

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use serde_json::Value;
use support::pcap;
use support::sipp::{self, Scenario};
use support::{Earshot, free_tcp_port, free_udp_tcp_port};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CALL_EVENTS: [&str; 4] = [
    "call.started",
    "call.answered",
    "call.ended",
    "recording.ready",
];

fn python() -> String {
    std::env::var("EARSHOT_AGENT_PYTHON").unwrap_or_else(|_| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/agent-venv/bin/python");
        assert!(
            venv.exists(),
            "no agent venv: run the README's test command (scripts/test.sh), which makes it"
        );
        venv.display().to_string()
    })
}

/// One webhook_receiver.py process, killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
    scheme: &'static str,
}

impl Receiver {
    fn start(dir: &Path, name: &str, port: u16, args: &[&str]) -> Receiver {
        let out = dir.join(format!("{name}.jsonl"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--port", &port.to_string(), "--secret", SECRET, "--out"])
            .arg(&out)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // It prints once it listens.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening", "the receiver did not start");
        let tls = args.contains(&"--tls-cert");
        let scheme = if tls { "https" } else { "http" };
        Receiver {
            child,
            port,
            out,
            scheme,
        }
    }

    fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/hook", self.scheme, self.port)
    }

    /// Every request it received, in order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `done` holds for the requests; returns them.
    fn wait_for(&self, what: &str, e: &Earshot, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: received {requests:#?}\n--- earshot ---\n{}",
                e.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The accepted (2xx), verified requests by event type.
fn accepted(requests: &[Value]) -> Vec<(String, String)> {
    requests
        .iter()
        .filter(|r| r["verified"] == true && r["answered"] == 200)
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn has_all_events(requests: &[Value]) -> bool {
    let types: HashSet<String> = accepted(requests).into_iter().map(|(t, _)| t).collect();
    CALL_EVENTS.iter().all(|t| types.contains(*t))
}

fn webhook_toml(url: &str, extra: &str) -> String {
    format!("[[webhook]]\nurl = {url:?}\nsecret = {SECRET:?}\n{extra}\n")
}

/// `/api/webhooks/deliveries`.
fn deliveries(api: SocketAddr) -> Vec<Value> {
    http::get(api, "/api/webhooks/deliveries?limit=100").json()["deliveries"]
        .as_array()
        .cloned()
        .unwrap()
}

fn wait_deliveries(e: &Earshot, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = deliveries(e.http_addr());
        if done(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {list:#?}\n--- earshot ---\n{}",
            e.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Over https, with a private CA given as `[webhooks].ca_file`.
#[test]
fn a_sip_call_sends_its_events_signed_with_one_id_per_event() {
    let dir = support::temp_dir("webhooks-events");
    let (ca, _) = support::tls::test_pki(&dir);
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let rx = Receiver::start(
        &dir,
        "rx",
        free_tcp_port(Ipv4Addr::LOCALHOST).unwrap(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(rx.url().starts_with("https://"));
    let e = Earshot::start(&format!(
        "{}[webhooks]\nca_file = {:?}\n[node]\nname = \"box-7\"\n",
        webhook_toml(&rx.url(), "allow_private = true"),
        ca.display().to_string()
    ));
    sipp::make_call(&e);
    let requests = rx.wait_for("all four events", &e, has_all_events);
    assert!(
        requests.iter().all(|r| r["verified"] == true),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r["content_type"] == "application/json")
    );
    let got = accepted(&requests);
    let ids: HashSet<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "ids unique per event: {got:?}");
    let by_type: HashMap<&str, &Value> = requests
        .iter()
        .map(|r| (r["type"].as_str().unwrap(), &r["payload"]))
        .collect();
    // Every body names the box that sent it (`[node].name`).
    assert!(
        by_type.values().all(|p| p["source_node"] == "box-7"),
        "{by_type:#?}"
    );
    let started = &by_type["call.started"]["data"];
    assert_eq!(started["caller"], "+15550001234");
    let call_id = started["call_id"].as_str().unwrap();
    let recording = &by_type["recording.ready"]["data"];
    assert_eq!(
        recording["url"],
        format!("/api/calls/{call_id}/recording").as_str()
    );
    assert!(
        recording["size_bytes"].as_u64().unwrap() > 44,
        "{recording}"
    );
    assert!(
        recording["duration_ms"].as_u64().unwrap() > 500,
        "{recording}"
    );
    assert!(
        by_type["call.ended"]["data"]["duration_ms"]
            .as_u64()
            .is_some()
    );
    assert!(
        by_type["call.ended"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // The API shows them delivered, and the log never shows the caller's number.
    let list = wait_deliveries(&e, "delivered", |l| {
        l.len() == 4 && l.iter().all(|d| d["state"] == "delivered")
    });
    assert!(
        list.iter()
            .all(|d| d["host"] == "127.0.0.1" && d["attempts"] == 1)
    );
    assert!(
        e.stderr_log()
            .lines()
            .filter(|l| l.contains("webhook"))
            .all(|l| !l.contains("15550001234")),
        "no phone number in webhook log lines"
    );
    let metrics = http::get(e.http_addr(), "/metrics").text();
    assert!(
        metrics.contains("earshot_webhook_deliveries_delivered_total 4"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_attempts_are_retried_with_the_same_id_until_accepted() {
    let dir = support::temp_dir("webhooks-retry");
    let port = free_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let rx = Receiver::start(&dir, "rx", port, &["--fail-first", "4"]);
    let e = Earshot::start(&format!(
        "{}[webhooks]\nretry_base_ms = 100\nretry_cap_ms = 400\n",
        webhook_toml(&rx.url(), "allow_private = true")
    ));
    sipp::make_call(&e);
    let requests = rx.wait_for("all four events after retries", &e, has_all_events);
    let got = accepted(&requests);
    assert_eq!(got.len(), 4, "each event accepted exactly once: {got:?}");
    for (_, id) in &got {
        let attempts: Vec<&Value> = requests.iter().filter(|r| r["id"] == id.as_str()).collect();
        assert_eq!(attempts.len(), 5, "{id}: {attempts:#?}");
        assert!(attempts.iter().all(|r| r["verified"] == true));
    }
    let list = wait_deliveries(&e, "delivered after 5 attempts", |l| {
        l.len() == 4
            && l.iter()
                .all(|d| d["state"] == "delivered" && d["attempts"] == 5)
    });
    assert!(list.iter().all(|d| d["last_status"] == 200));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(accepted(&rx.requests()).len(), 4, "nothing sent twice");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deliveries_pending_at_a_kill_9_are_sent_after_the_restart() {
    let dir = support::temp_dir("webhooks-crash");
    let store = dir.join("store.redb");
    let port = free_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let url = format!("http://127.0.0.1:{port}/hook");
    let config = format!(
        "{}[webhooks]\nretry_base_ms = 300\nretry_cap_ms = 600\n[store]\npath = {:?}\n",
        webhook_toml(&url, "allow_private = true"),
        store.display().to_string()
    );
    let mut first = Earshot::start(&config);
    sipp::make_call(&first);
    // The receiver is down: every delivery fails and waits for its retry.
    let pending = wait_deliveries(&first, "four pending after failed attempts", |l| {
        l.len() == 4
            && l.iter()
                .all(|d| d["state"] == "pending" && d["attempts"].as_u64().unwrap_or(0) >= 1)
    });
    let ids: HashSet<String> = pending
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    first.kill_9();
    let second = Earshot::start(&config);
    let rx = Receiver::start(&dir, "rx", port, &[]);
    let requests = rx.wait_for("the four events after the restart", &second, has_all_events);
    let got = accepted(&requests);
    assert_eq!(got.len(), 4, "{got:?}");
    let delivered: HashSet<String> = got.into_iter().map(|(_, id)| id).collect();
    assert_eq!(delivered, ids, "the same webhook-ids as before the crash");
    wait_deliveries(&second, "delivered", |l| {
        l.len() == 4 && l.iter().all(|d| d["state"] == "delivered")
    });
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn private_addresses_are_refused_and_410_and_302_are_given_up_after_one_attempt() {
    let dir = support::temp_dir("webhooks-giveup");
    let target = Receiver::start(
        &dir,
        "target",
        free_tcp_port(Ipv4Addr::LOCALHOST).unwrap(),
        &[],
    );
    let gone = Receiver::start(
        &dir,
        "gone",
        free_tcp_port(Ipv4Addr::LOCALHOST).unwrap(),
        &["--status", "410"],
    );
    let redirect = Receiver::start(
        &dir,
        "redirect",
        free_tcp_port(Ipv4Addr::LOCALHOST).unwrap(),
        &["--status", "302", "--location", &target.url()],
    );
    let only_started = "events = [\"call.started\"]";
    let e = Earshot::start(&format!(
        "{}{}{}[webhooks]\nretry_base_ms = 100\nretry_cap_ms = 200\n",
        // 127.0.0.1 without allow_private: refused before connecting.
        webhook_toml(&target.url(), only_started),
        webhook_toml(
            &gone.url(),
            &format!("{only_started}\nallow_private = true")
        ),
        webhook_toml(
            &redirect.url(),
            &format!("{only_started}\nallow_private = true")
        ),
    ));
    sipp::make_call(&e);
    let list = wait_deliveries(&e, "three failed deliveries", |l| {
        l.len() == 3 && l.iter().all(|d| d["state"] == "failed")
    });
    assert!(list.iter().all(|d| d["attempts"] == 1), "{list:#?}");
    let statuses: HashSet<Option<u64>> = list.iter().map(|d| d["last_status"].as_u64()).collect();
    assert_eq!(statuses, HashSet::from([None, Some(410), Some(302)]));
    let refused = list.iter().find(|d| d["last_status"].is_null()).unwrap();
    assert!(
        refused["last_error"].as_str().unwrap().contains("loopback"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(gone.requests().len(), 1, "410 is not retried");
    assert_eq!(redirect.requests().len(), 1, "302 is not retried");
    assert!(
        target.requests().is_empty(),
        "nothing reached the refused address, and the redirect was not followed"
    );
    let metrics = http::get(e.http_addr(), "/metrics").text();
    assert!(
        metrics.contains("earshot_webhook_deliveries_failed_total 3"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A call cut by kill -9 is closed as interrupted at the next start, and its `call.ended`
/// (reason `interrupted`) and `recording.ready` (the repaired WAV) are delivered then.
#[test]
fn a_call_cut_by_a_kill_9_is_reported_ended_after_the_restart() {
    let dir = support::temp_dir("webhooks-interrupted");
    let store = dir.join("store.redb");
    let port = free_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let url = format!("http://127.0.0.1:{port}/hook");
    let config = format!(
        "{}[webhooks]\nretry_base_ms = 300\nretry_cap_ms = 600\n[store]\npath = {:?}\n[recording]\ndir = {:?}\n",
        webhook_toml(&url, "allow_private = true"),
        store.display().to_string(),
        dir.join("recordings").display().to_string()
    );
    let mut first = Earshot::start(&config);
    let codes = pcap::coded_test_signal(Law::Ulaw, 5000);
    let capture = first.dir().join("caller.pcap");
    pcap::write_rtp_pcap(
        &capture,
        0x1234_5678,
        100,
        &pcap::g711_packets(0, 1000, &codes),
    )
    .unwrap();
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[
            ("PCAP", capture.display().to_string()),
            ("BYE_TIMEOUT_MS", "8000".into()),
        ],
    );
    let caller = sipp::start(
        first.dir(),
        &scenario,
        Some(first.sip_addr()),
        free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap(),
        &["-m", "1"],
    );
    // Mid-call: started and answered are pending (the receiver is down), and recording.ready
    // is owed (held) since the recording started.
    wait_deliveries(
        &first,
        "started and answered pending, recording held",
        |l| {
            let state = |s: &str| l.iter().filter(|d| d["state"] == s).count();
            let held_recording = l
                .iter()
                .any(|d| d["state"] == "held" && d["type"] == "recording.ready");
            state("pending") == 2 && state("held") == 1 && held_recording
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    first.kill_9();
    let second = Earshot::start(&config);
    let rx = Receiver::start(&dir, "rx", port, &[]);
    let requests = rx.wait_for("every event of the cut call", &second, has_all_events);
    let got = accepted(&requests);
    assert_eq!(got.len(), 4, "{got:?}");
    let ended: Vec<&String> = got
        .iter()
        .filter(|(t, _)| t == "call.ended")
        .map(|(_, id)| id)
        .collect();
    assert!(
        ended.len() == 1 && ended[0].ends_with("_interrupted"),
        "{got:?}"
    );
    let _ = caller.wait(Duration::from_secs(15));
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}
