//! earshot behind a real Kamailio dispatcher on loopback: Kamailio runs the shipped
//! `contrib/kamailio.cfg` (its addresses and timers given with `-A` defines) in front of two
//! earshot processes, and SIPp calls the proxy's one address.
//!
//! - Calls spread over both boxes, every one completing (ACK and BYE travel the Record-Route
//!   set through the proxy: SIPp sends them with the route set of earshot's 200).
//! - `POST /api/drain` on one box: it answers OPTIONS 503, new calls all go to the other, and
//!   the calls it had finish normally.
//! - SIGKILL of one box: new calls keep completing through the other (the first ones sent to
//!   the dead box fail over on Kamailio's timer), the calls that were on the dead box fail for
//!   their caller, and the survivor's calls are untouched.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::sipp::{self, Scenario, Sipp};
use support::{Earshot, free_udp_tcp_port, temp_dir, unique};

/// Kamailio's probing interval and its timer for an unanswered INVITE, in the tests.
const PING_SECS: u32 = 1;
const FR_TIMER_MS: u32 = 1500;

/// A Kamailio process running `contrib/kamailio.cfg` with a dispatcher set of `boxes`.
struct Kamailio {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Kamailio {
    fn start(boxes: &[SocketAddr]) -> Kamailio {
        let dir = temp_dir("kamailio");
        let list = dir.join("dispatcher.list");
        let lines: String = boxes.iter().map(|b| format!("1 sip:{b}\n")).collect();
        fs::write(&list, lines).unwrap();
        let port = free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/kamailio.cfg");
        let log = File::create(dir.join("kamailio.log")).unwrap();
        let child = Command::new("kamailio")
            // One receiving process: several would relay a 180 and the 200 right behind it in
            // either order, and SIPp fails a call on a 180 after its 200.
            .args(["-DD", "-E", "-n", "1", "-m", "64", "-M", "8"])
            .arg("-f")
            .arg(&cfg)
            .arg("-Y")
            .arg(&dir)
            .arg("-w")
            .arg(&dir)
            .args(["-A", &format!("LISTEN=udp:{addr}")])
            .args(["-A", &format!("DISPATCHER_LIST=\"{}\"", list.display())])
            .args(["-A", &format!("DS_PING_INTERVAL={PING_SECS}")])
            .args(["-A", &format!("FR_TIMER_MS={FR_TIMER_MS}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kamailio must be installed (scripts/test.sh installs it)");
        let mut k = Kamailio { child, dir, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while k.answers_options().is_none() {
            assert!(
                matches!(k.child.try_wait(), Ok(None)),
                "kamailio exited:\n{}",
                k.log()
            );
            assert!(
                Instant::now() < deadline,
                "kamailio does not answer:\n{}",
                k.log()
            );
        }
        k
    }

    /// The proxy's own answer to an OPTIONS for itself.
    fn answers_options(&self) -> Option<u16> {
        let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
        let call_id = unique("kprobe-");
        let local = socket.local_addr().ok()?;
        let request = format!(
            "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p\r\nTo: <sip:{target}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            target = self.addr
        );
        socket.send_to(request.as_bytes(), self.addr).ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .ok()?;
        let mut buf = [0u8; 4096];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM: the main process stops its worker processes too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An earshot box named `name` (`[node].name`).
fn node(name: &str) -> Earshot {
    Earshot::start(&format!("[node]\nname = \"{name}\"\n"))
}

/// Starts `calls` SIPp calls through the proxy, `parallel` at most at once, 10 a second, each
/// held `hold_ms` and hung up by the caller.
fn calls(k: &Kamailio, calls: u32, parallel: u32, hold_ms: u32) -> Sipp {
    calls_with(k, calls, parallel, hold_ms, String::new())
}

/// Like [`calls`], each call playing `media` (an action element) after its ACK.
fn calls_with(k: &Kamailio, calls: u32, parallel: u32, hold_ms: u32, media: String) -> Sipp {
    let vars = [("HOLD_MS", hold_ms.to_string()), ("MEDIA", media)];
    let scenario = Scenario::load("uac_via_proxy.xml", &vars);
    let (total, at_once) = (calls.to_string(), parallel.to_string());
    let args = ["-m", total.as_str(), "-l", at_once.as_str(), "-r", "10"];
    sipp::start(&k.dir, &scenario, Some(k.addr), sipp::port(), &args)
}

/// The calls a box has in its history.
fn history(e: &Earshot) -> Vec<Value> {
    let page = http::get(e.http_addr(), "/api/calls?limit=500").json();
    page["calls"].as_array().cloned().unwrap_or_default()
}

/// Waits until the boxes' histories hold `total` ended calls between them; returns each box's
/// ended calls.
fn ended(boxes: &[&Earshot], total: usize) -> Vec<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let each: Vec<Vec<Value>> = boxes
            .iter()
            .map(|e| {
                history(e)
                    .into_iter()
                    .filter(|c| c["status"] == "ended")
                    .collect()
            })
            .collect();
        let sum: usize = each.iter().map(Vec::len).sum();
        if sum >= total || Instant::now() > deadline {
            return each;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Live calls on a box, from `/health`.
fn live(e: &Earshot) -> u64 {
    http::get(e.http_addr(), "/health").json()["active_calls"]
        .as_u64()
        .unwrap()
}

/// Waits until the boxes have `total` live calls between them; returns each one's count.
fn wait_live(boxes: &[&Earshot], total: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let each: Vec<u64> = boxes.iter().map(|e| live(e)).collect();
        if each.iter().sum::<u64>() >= total {
            return each;
        }
        assert!(Instant::now() < deadline, "live calls: {each:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_all_passed(outcome: &sipp::SippOutcome, calls: u64, k: &Kamailio, boxes: &[&Earshot]) {
    assert!(
        outcome.all_passed(calls),
        "SIPp: exit {:?}, {} ok, {} failed\n{}\n--- kamailio ---\n{}\n--- earshots ---\n{}",
        outcome.exit_code,
        outcome.successful,
        outcome.failed,
        outcome.errors,
        k.log(),
        boxes
            .iter()
            .map(|e| e.log_tail(30))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
}

#[test]
fn calls_through_kamailio_spread_over_both_earshots() {
    let (a, b) = (node("node-a"), node("node-b"));
    let k = Kamailio::start(&[a.sip_addr(), b.sip_addr()]);
    let started = Instant::now();
    let outcome = calls(&k, 20, 5, 300).wait(Duration::from_secs(90));
    println!("20 calls through kamailio in {:?}", started.elapsed());
    assert_all_passed(&outcome, 20, &k, &[&a, &b]);
    let each = ended(&[&a, &b], 20);
    let (on_a, on_b) = (&each[0], &each[1]);
    assert_eq!(on_a.len() + on_b.len(), 20, "a: {on_a:?}\nb: {on_b:?}");
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "{} / {}",
        on_a.len(),
        on_b.len()
    );
    for (calls, name) in [(on_a, "node-a"), (on_b, "node-b")] {
        for call in calls.iter() {
            assert_eq!(call["source_node"], name, "{call}");
            assert!(call["answered_at"].is_string(), "{call}");
        }
    }
    assert!(a.panics().is_empty() && b.panics().is_empty());
}

#[test]
fn a_draining_box_gets_no_new_calls_and_its_calls_finish() {
    let (a, b) = (node("node-a"), node("node-b"));
    let k = Kamailio::start(&[a.sip_addr(), b.sip_addr()]);
    // Four long calls, two on each box (round-robin), in progress when A starts draining.
    let long = calls(&k, 4, 4, 5000);
    let before = wait_live(&[&a, &b], 4);
    assert!(before.iter().all(|n| *n > 0), "{before:?}");

    let drained = http::send_json(a.http_addr(), "POST", "/api/drain", &json!({}));
    assert_eq!(drained.status, 400, "{}", drained.text());
    let drained = http::request(a.http_addr(), "POST", "/api/drain", &[], b"").unwrap();
    assert_eq!(drained.status, 200, "{}", drained.text());
    assert_eq!(drained.json()["draining"], true);
    assert_eq!(drained.json()["source_node"], "node-a");
    assert_eq!(a.options(), Some(503));
    let health = http::get(a.http_addr(), "/health");
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (503, json!("draining"))
    );
    let metrics = http::get(a.http_addr(), "/metrics").text();
    assert!(metrics.contains("\nearshot_draining 1\n"), "{metrics}");
    assert!(
        http::get(b.http_addr(), "/metrics")
            .text()
            .contains("\nearshot_draining 0\n")
    );

    // New calls, whether or not the dispatcher's probe has seen the 503 yet, all land on B.
    let short = calls(&k, 10, 5, 200).wait(Duration::from_secs(90));
    assert_all_passed(&short, 10, &k, &[&a, &b]);
    // A's calls from before finish normally, hung up by their caller.
    let long = long.wait(Duration::from_secs(90));
    assert_all_passed(&long, 4, &k, &[&a, &b]);
    let each = ended(&[&a, &b], 14);
    assert_eq!(
        each[0].len() as u64,
        before[0],
        "A took a call while draining"
    );
    assert_eq!(each[1].len() as u64, before[1] + 10);
    assert_eq!(live(&a), 0);

    // Undone: A answers OPTIONS 200 again and the dispatcher puts it back.
    let undone = http::request(a.http_addr(), "DELETE", "/api/drain", &[], b"").unwrap();
    assert_eq!(undone.json()["draining"], false);
    assert_eq!(a.options(), Some(200));
    assert!(
        http::get(a.http_addr(), "/metrics")
            .text()
            .contains("\nearshot_draining 0\n")
    );
    std::thread::sleep(Duration::from_secs(u64::from(PING_SECS) * 3));
    let again = calls(&k, 6, 2, 100).wait(Duration::from_secs(90));
    assert_all_passed(&again, 6, &k, &[&a, &b]);
    let each = ended(&[&a, &b], 20);
    assert!(
        each[0].len() as u64 > before[0],
        "A got no call after draining ended"
    );
}

#[test]
fn killing_one_box_leaves_new_calls_and_the_survivors_calls_working() {
    let (mut a, b) = (node("node-a"), node("node-b"));
    let k = Kamailio::start(&[a.sip_addr(), b.sip_addr()]);
    let long = calls(&k, 4, 4, 4000);
    let before = wait_live(&[&a, &b], 4);
    assert!(before.iter().all(|n| *n > 0), "{before:?}");
    a.kill_9();
    let killed = Instant::now();
    // New calls: the first ones sent to the dead box fail over after FR_TIMER_MS; once the
    // dispatcher has marked it, none go there.
    let short = calls(&k, 10, 2, 200).wait(Duration::from_secs(120));
    println!(
        "10 calls after the kill completed in {:?} (fr_timer {FR_TIMER_MS} ms, probing every {PING_SECS} s)",
        killed.elapsed()
    );
    assert_all_passed(&short, 10, &k, &[&b]);
    // The dead box's callers fail (their BYE is never answered); the survivor's complete.
    let long = long.wait(Duration::from_secs(120));
    assert_eq!(
        (long.successful, long.failed),
        (before[1], before[0]),
        "{}\n{}",
        long.stdout,
        long.errors
    );
    let on_b = ended(&[&b], usize::try_from(before[1] + 10).unwrap());
    assert_eq!(on_b[0].len() as u64, before[1] + 10);
    assert!(on_b[0].iter().all(|c| c["source_node"] == "node-b"));
    assert!(b.panics().is_empty());
    assert_eq!(b.options(), Some(200));
    assert_eq!(live(&b), 0);
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel reports clock ticks of 1/100 s on Linux (USER_HZ).
    Duration::from_millis(ticks * 10)
}

/// Figures for BENCHMARKS.md, printed, not asserted beyond every call completing: calls with
/// two-way PCMU through Kamailio to one box and then to two (earshot CPU per call, each box),
/// and how long new calls take to stop reaching a box killed with SIGKILL.
#[test]
fn fleet_figures_one_box_versus_two() {
    const CALLS: u32 = 100;
    const PARALLEL: u32 = 50;
    const HOLD_MS: u32 = 3000;
    let names = ["node-a", "node-b"];
    for boxes in [1usize, 2] {
        let nodes: Vec<Earshot> = names[..boxes].iter().map(|n| node(n)).collect();
        let addrs: Vec<SocketAddr> = nodes.iter().map(Earshot::sip_addr).collect();
        let k = Kamailio::start(&addrs);
        let codes = support::pcap::coded_test_signal(earshot::media::g711::Law::Ulaw, HOLD_MS);
        let packets = support::pcap::g711_packets(0, 1000, &codes);
        let pcap = k.dir.join("caller.pcap");
        support::pcap::write_rtp_pcap(&pcap, 0x1234_5678, 100, &packets).unwrap();
        let media = format!(
            "<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>",
            pcap.display()
        );
        let before: Vec<Duration> = nodes.iter().map(|e| cpu_time(e.pid())).collect();
        let started = Instant::now();
        let outcome =
            calls_with(&k, CALLS, PARALLEL, HOLD_MS, media).wait(Duration::from_secs(180));
        let wall = started.elapsed();
        let refs: Vec<&Earshot> = nodes.iter().collect();
        assert_all_passed(&outcome, u64::from(CALLS), &k, &refs);
        let each = ended(&refs, CALLS as usize);
        for ((e, before), calls) in nodes.iter().zip(&before).zip(&each) {
            let cpu = cpu_time(e.pid()) - *before;
            println!(
                "fleet figures: {boxes} box(es), {CALLS} calls ({PARALLEL} at once, {HOLD_MS} ms \
                 of PCMU each way) in {wall:?}: box {} carried {} calls, {:?} CPU, {:.1} ms CPU \
                 per call; SIPp {} ok, {} failed",
                e.pid(),
                calls.len(),
                cpu,
                cpu.as_secs_f64() * 1000.0 / calls.len().max(1) as f64,
                outcome.successful,
                outcome.failed,
            );
        }
    }
    // Failover: one call at a time after a SIGKILL; each call's setup-to-end time shows when
    // the dispatcher stopped trying the dead box (a try costs FR_TIMER_MS).
    let (mut a, b) = (node("node-a"), node("node-b"));
    let k = Kamailio::start(&[a.sip_addr(), b.sip_addr()]);
    a.kill_9();
    let killed = Instant::now();
    let mut slow_until = Duration::ZERO;
    for _ in 0..8 {
        let started = Instant::now();
        let one = calls(&k, 1, 1, 0).wait(Duration::from_secs(30));
        assert_all_passed(&one, 1, &k, &[&b]);
        if started.elapsed() > Duration::from_millis(u64::from(FR_TIMER_MS)) {
            slow_until = killed.elapsed();
        }
    }
    println!(
        "fleet figures: after SIGKILL, the last call delayed by a try of the dead box ended \
         {slow_until:?} after the kill; later calls went to the survivor at once (fr_timer \
         {FR_TIMER_MS} ms, probing every {PING_SECS} s)"
    );
}
