//! earshot as a system service: sd_notify readiness and watchdog, a graceful SIGTERM during
//! live SIPp calls, and the unit file's `systemd-analyze security` rating.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use support::pcap;
use support::sipp::{self, Scenario};
use support::{Earshot, free_udp_tcp_port};

#[test]
fn notifies_ready_after_binding_then_feeds_the_watchdog() {
    let dir = support::temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sip_port = free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\n[audio]\noutput = \"none\"\n[recording]\ndir = {:?}\n[store]\npath = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("rec").display().to_string(),
            dir.join("store.redb").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(support::EARSHOT_BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut messages: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 256];
    while started.elapsed() < Duration::from_secs(4) {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text == "READY=1" {
                // Ready means listening: an OPTIONS gets its answer right away.
                let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                probe
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
                let options = format!(
                    "OPTIONS sip:earshot@127.0.0.1:{sip_port} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKready\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:earshot@127.0.0.1>\r\nCall-ID: ready\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    probe.local_addr().unwrap()
                );
                probe
                    .send_to(options.as_bytes(), ("127.0.0.1", sip_port))
                    .unwrap();
                let mut answer = [0u8; 2048];
                let got = probe
                    .recv(&mut answer)
                    .map(|n| String::from_utf8_lossy(&answer[..n]).to_string());
                assert!(
                    got.as_deref().is_ok_and(|a| a.starts_with("SIP/2.0 200")),
                    "after READY=1: {got:?}"
                );
            }
            messages.push((started.elapsed(), text));
        }
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success());
    let ready = messages
        .iter()
        .position(|(_, m)| m == "READY=1")
        .expect("READY=1 sent");
    let pings: Vec<Duration> = messages[ready..]
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    // WATCHDOG_USEC = 400 ms: a ping every 200 ms, so well over 10 in ~4 s.
    assert!(pings.len() >= 10, "watchdog pings: {messages:?}");
    assert!(
        pings
            .windows(2)
            .all(|w| w[1] - w[0] < Duration::from_millis(400)),
        "gaps: {pings:?}"
    );
}

#[test]
fn sigterm_during_calls_sends_bye_finalizes_recordings_and_exits_0_within_5_s() {
    let mut e = Earshot::start("");
    let pcm = pcap::test_signal(10_000);
    let mut codes = vec![0u8; pcm.len()];
    Law::Ulaw.encode(&pcm, &mut codes);
    let capture = e.dir().join("caller.pcap");
    pcap::write_rtp_pcap(&capture, 7, 1, &pcap::g711_packets(0, 0, &codes)).unwrap();
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[
            ("PCAP", capture.display().to_string()),
            ("BYE_TIMEOUT_MS", "30000".into()),
        ],
    );
    let port = free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let run = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        port,
        &["-m", "3", "-l", "3", "-r", "10"],
    );
    std::thread::sleep(Duration::from_secs(3));
    let asked = Instant::now();
    let status = e.terminate(Duration::from_secs(10));
    let took = asked.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{}",
        e.log_tail(30)
    );
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let outcome = run.wait(Duration::from_secs(10));
    assert!(
        outcome.all_passed(3),
        "every caller got its BYE: {outcome:?}"
    );
    let recordings: Vec<_> = std::fs::read_dir(e.dir().join("recordings"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(recordings.len(), 3);
    for wav in recordings {
        let reader = hound::WavReader::open(wav.path()).unwrap();
        let frames = reader.duration();
        // Finalized: the header's length is the file's, and about 2–3 s were recorded.
        let expected_bytes = 44 + u64::from(frames) * 4;
        assert_eq!(
            std::fs::metadata(wav.path()).unwrap().len(),
            expected_bytes,
            "{:?}",
            wav.path()
        );
        assert!(frames >= 8000 * 2, "{:?}: {frames} frames", wav.path());
    }
}

#[test]
fn unit_file_exposure_is_at_most_2() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/earshot.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", unit])
        .output()
        .expect("systemd-analyze (package systemd, installed by scripts/test.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(level <= 2.0, "{line}");
}

#[test]
fn sighup_reloads_the_allowlist_and_reports_restart_only_changes() {
    let e = Earshot::start("[log]\nlevel = \"info\"\n");
    assert!(e.options_ok());
    let original = std::fs::read_to_string(e.config_path()).unwrap();
    let mut table: toml::Table = original.parse().unwrap();
    let sip = table.get_mut("sip").and_then(|s| s.as_table_mut()).unwrap();
    sip.insert(
        "allow".into(),
        toml::Value::Array(vec![toml::Value::String("127.0.0.2/32".into())]),
    );
    let calls = table
        .entry("calls")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    calls
        .as_table_mut()
        .unwrap()
        .insert("max_duration_secs".into(), toml::Value::Integer(60));
    std::fs::write(e.config_path(), toml::to_string(&table).unwrap()).unwrap();
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(e.pid().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !e.stderr_log().contains("configuration reloaded") {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = e.stderr_log();
    assert!(log.contains("configuration reloaded"), "{}", e.log_tail(10));
    assert!(
        log.lines()
            .any(|l| l.contains("needs a restart") && l.contains("calls.max_duration_secs")),
        "{}",
        e.log_tail(10)
    );
    assert_eq!(e.options(), None, "127.0.0.1 is no longer allowed");
    assert_eq!(
        e.options_from("127.0.0.2".parse().unwrap(), Duration::from_secs(2)),
        Some(200)
    );
}

#[test]
fn doctor_reports_a_taken_sip_port_and_passes_otherwise() {
    let dir = support::temp_dir("doctor");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.join("config.toml");
    let write = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "[sip]\nlisten = \"127.0.0.1:{port}\"\n[audio]\noutput = \"none\"\n[recording]\ndir = {:?}\nmin_free_mb = 1\n[store]\npath = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n",
                dir.join("rec").display().to_string(),
                dir.join("store.redb").display().to_string()
            ),
        )
        .unwrap()
    };
    write(port);
    let out = Command::new(support::EARSHOT_BIN)
        .args(["doctor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("sip port")),
        "{text}"
    );
    drop(taken);
    write(free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap());
    let out = Command::new(support::EARSHOT_BIN)
        .args(["doctor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for check in [
        "sip port",
        "http port",
        "rtp ports",
        "audio",
        "store",
        "recordings",
        "disk",
        "clock",
    ] {
        assert!(text.contains(check), "{check} missing:\n{text}");
    }
}
