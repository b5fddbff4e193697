//! `earshot jitter-sim TRACE.csv` and `earshot jitter-sim --pcap FILE`: the operator's tool for
//! replaying a captured arrival trace, or a packet capture of a call, through the jitter buffer,
//! run as the binary. The capture is a real one: tcpdump on loopback, in a private network
//! namespace, recording an RTP stream this test sends.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(trace: &str) -> (bool, String, String) {
    run_with(trace, None)
}

/// Runs `earshot jitter-sim` on `trace`, with `--config` holding `config` if given.
fn run_with(trace: &str, config: Option<&str>) -> (bool, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "earshot-jsim-{}-{}-{}",
        std::process::id(),
        trace.len(),
        config.map_or(0, str::len)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trace.csv");
    std::fs::write(&path, trace).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_earshot"));
    cmd.arg("jitter-sim").arg(&path);
    if let Some(config) = config {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        cmd.arg("--config").arg(config_path);
    }
    let out = cmd.output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn plays_every_packet_of_a_clean_trace_once_in_order_across_seq_wrap() {
    let mut trace = String::from("arrival_ms,seq,rtp_ts\n");
    for i in 0..50u32 {
        let seq = (65_520 + i) % 65_536;
        trace.push_str(&format!("{},{},{}\n", 1000 + 20 * i, seq, 160 * i));
    }
    let (ok, out, err) = run(&trace);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    // One line per 20 ms tick from the first arrival, `tick_ms,seq`, `tick_ms,seq+seq` (two
    // frames compressed into one tick) or `tick_ms,-`.
    for (k, line) in lines.iter().enumerate() {
        let (tick, _) = line.split_once(',').unwrap();
        assert_eq!(tick.parse::<u64>().unwrap(), 1000 + 20 * k as u64, "{line}");
    }
    let played: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.split_once(','))
        .flat_map(|(_, seqs)| seqs.split('+'))
        .filter_map(|seq| seq.parse().ok())
        .collect();
    let expected: Vec<u32> = (0..50).map(|i| (65_520 + i) % 65_536).collect();
    assert_eq!(played, expected, "every packet once, in order");
    // The score goes to stderr: loss and R beside the delay.
    assert!(
        err.contains("50 packets: 0.00 % not played (0 late, 0 dropped in time), mean delay"),
        "{err}"
    );
    assert!(err.contains("E-model R 9"), "{err}");
}

#[test]
fn a_lost_packet_is_concealed_and_a_bad_line_is_reported_with_its_number() {
    let mut trace = String::from("arrival_ms,seq,rtp_ts\n");
    for i in (0..20u32).filter(|i| *i != 10) {
        trace.push_str(&format!("{},{},{}\n", 20 * i, i, 160 * i));
    }
    let (ok, out, _) = run(&trace);
    assert!(ok);
    let after_9 = out
        .lines()
        .skip_while(|l| !l.ends_with(",9") && !l.ends_with("+9"))
        .nth(1)
        .unwrap();
    assert!(after_9.ends_with(",-"), "{after_9}");
    let (ok, _, err) = run("arrival_ms,seq,rtp_ts\n0,1,160\n20,x,320\n");
    assert!(!ok);
    assert!(err.contains('3'), "line number in: {err}");
}

#[test]
fn a_config_files_jitter_settings_are_replayed_and_a_bad_one_names_its_field() {
    let mut trace = String::from("arrival_ms,seq,rtp_ts\n");
    for i in 0..100u32 {
        trace.push_str(&format!("{},{},{}\n", 20 * i, i, 160 * i));
    }
    let first_played = |out: &str| -> u64 {
        let line = out.lines().find(|l| !l.ends_with(",-")).unwrap();
        line.split_once(',').unwrap().0.parse().unwrap()
    };
    let (ok, out, err) = run(&trace);
    assert!(ok, "{err}");
    assert_eq!(
        first_played(&out),
        20,
        "the default plays the first packet with a 20 ms margin"
    );
    let (ok, out, err) = run_with(&trace, Some("[jitter]\ninitial_delay_ms = 100\n"));
    assert!(ok, "{err}");
    assert_eq!(first_played(&out), 100, "{out}");
    let (ok, _, err) = run_with(&trace, Some("[jitter]\nmax_delay_ms = 10\n"));
    assert!(!ok);
    assert!(
        err.contains("jitter.max_delay_ms: 10 is out of range"),
        "{err}"
    );
}

/// Sends 100 packets of 20 ms PCMU from 127.0.0.1 to `to`: seq 30 is lost, 50 and 51 swap
/// places, and a SIP datagram, an RTCP report and an RFC 4733 event are mixed in.
fn send_call(to: std::net::SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let packet = |pt: u8, seq: u16, ts: u32| {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x5eed_cafe_u32.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    };
    let start = Instant::now();
    for slot in 0..100u16 {
        let seq = match slot {
            50 => 51,
            51 => 50,
            n => n,
        };
        let due = start + Duration::from_millis(20 * u64::from(slot));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if seq != 30 {
            let wire_seq = 65_500u16.wrapping_add(seq);
            socket
                .send_to(&packet(0, wire_seq, 160 * u32::from(seq)), to)
                .unwrap();
        }
        if slot == 60 {
            socket
                .send_to(b"OPTIONS sip:earshot SIP/2.0\r\n\r\n", to)
                .unwrap();
            socket.send_to(&[0x80, 200, 0, 6, 0, 0, 0, 1], to).unwrap();
            socket.send_to(&packet(101, 1, 160 * 60), to).unwrap();
        }
    }
}

#[test]
fn a_tcpdump_capture_of_an_rtp_stream_is_replayed_with_pcap() {
    support::in_netns(
        "a_tcpdump_capture_of_an_rtp_stream_is_replayed_with_pcap",
        || {
            let dir = support::temp_dir("earshot-jsim-pcap-");
            let pcap = dir.join("call.pcap");
            let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = receiver.local_addr().unwrap();
            let mut tcpdump = Command::new("tcpdump")
                .args(["-i", "lo", "-n", "-U", "--immediate-mode", "-w"])
                .arg(&pcap)
                .arg(format!("udp and port {}", to.port()))
                .stderr(Stdio::piped())
                .spawn()
                .expect("tcpdump (scripts/test.sh installs it)");
            let mut stderr = BufReader::new(tcpdump.stderr.take().unwrap());
            let mut line = String::new();
            while !line.contains("listening on") {
                line.clear();
                assert!(stderr.read_line(&mut line).unwrap() > 0, "tcpdump exited");
            }
            // tcpdump says it listens a moment before its filter is in place.
            std::thread::sleep(Duration::from_millis(200));
            send_call(to);
            std::thread::sleep(Duration::from_millis(300));
            let pid = tcpdump.id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            tcpdump.wait().unwrap();

            let out = Command::new(env!("CARGO_BIN_EXE_earshot"))
                .arg("jitter-sim")
                .arg("--pcap")
                .arg(&pcap)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            assert!(
                stderr.contains("replaying SSRC 0x5eedcafe (payload type 0) 127.0.0.1:")
                    && stderr.contains(&format!("-> {to}: 99 packets; 2 other packets skipped")),
                "{stderr}"
            );
            // One tick line per 20 ms from the first packet; every packet played at most once, in
            // order, the lost one never.
            let lines: Vec<&str> = stdout.lines().collect();
            for (k, line) in lines.iter().enumerate() {
                let (tick, _) = line.split_once(',').unwrap();
                assert_eq!(tick.parse::<u64>().unwrap(), 20 * k as u64, "{line}");
            }
            let played: Vec<u16> = lines
                .iter()
                .filter_map(|l| l.split_once(','))
                .flat_map(|(_, seqs)| seqs.split('+'))
                .filter_map(|seq| seq.parse().ok())
                .map(|seq: u16| seq.wrapping_sub(65_500))
                .collect();
            assert!(played.windows(2).all(|w| w[0] < w[1]), "{played:?}");
            assert!(!played.contains(&30), "{played:?}");
            // A busy box sends some packets late; the buffer may give a few up, no more.
            assert!(
                played.len() >= 94,
                "{} of 99 played: {played:?}",
                played.len()
            );
            drop(receiver);
            std::fs::remove_dir_all(&dir).ok();
        },
    );
}
