//! SIPVicious, the scanner that sweeps the internet for SIP servers, against earshot from a
//! source outside `[sip] allow`: earshot must not exist for it. svmap (OPTIONS sweep) and
//! svwar (extension enumeration by REGISTER, OPTIONS and INVITE) run over UDP; SIPVicious OSS
//! speaks no TCP, so its own requests are replayed over TCP by tests/agents/sipvicious_tcp.py.
//! tcpdump on the namespace's loopback records every packet from earshot's SIP port to the
//! scanner: no UDP packet at all, and over TCP no byte of payload (the handshake is the
//! kernel's; earshot resets the connection at accept). The same svmap from the allowed address
//! does find earshot, so the tools and the capture are shown to work.
//!
//! Runs in a private network namespace (`support::in_netns`): 127.0.0.1 is the scanner,
//! 127.0.0.2 the allowed peer. SIPVicious comes from the test venv (tests/agents/
//! requirements.txt, made by scripts/test.sh; `EARSHOT_AGENT_PYTHON` names its python).

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Earshot, in_netns};

const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ALLOWED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The test venv's bin directory.
fn venv_bin() -> PathBuf {
    let python = std::env::var("EARSHOT_AGENT_PYTHON").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/agent-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "no test venv at {}: run the README's test command (scripts/test.sh), which makes it",
        python.display()
    );
    python.parent().unwrap().to_path_buf()
}

fn metric(e: &Earshot, name: &str) -> u64 {
    let text = http::get(e.http_addr(), "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Runs a venv tool and returns its stdout and stderr together.
fn run(bin: &Path, tool: &str, args: &[String]) -> String {
    let out = Command::new(bin.join(tool))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// tcpdump on loopback, writing `filter`'s packets to a file until stopped.
struct Capture {
    child: Child,
    file: PathBuf,
    log: PathBuf,
}

impl Capture {
    fn start(file: PathBuf, filter: &str) -> Capture {
        let log = file.with_extension("log");
        let child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "--immediate-mode", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tcpdump (scripts/test.sh installs it)");
        // Capturing once it says so.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("listening") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "tcpdump: {said}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Capture { child, file, log }
    }

    /// Stops the capture and returns its packets, one tcpdump line each.
    fn stop(mut self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&self.file)
            .output()
            .unwrap();
        let packets: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        eprintln!(
            "tcpdump: {}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
        packets
    }
}

/// The payload length tcpdump reports at the end of a line.
fn payload_len(line: &str) -> usize {
    line.rsplit("length ")
        .next()
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(usize::MAX)
}

#[test]
fn sipvicious_from_outside_the_allow_list_gets_zero_bytes_over_udp_and_tcp() {
    in_netns(
        "sipvicious_from_outside_the_allow_list_gets_zero_bytes_over_udp_and_tcp",
        || {
            let bin = venv_bin();
            let earshot =
                Earshot::start_probing_from("[sip]\nallow = [\"127.0.0.2/32\"]\n", ALLOWED);
            let port = earshot.sip_addr().port();
            let sent_before = metric(&earshot, "earshot_sip_messages_sent_total");
            let capture = Capture::start(
                earshot.dir().join("scanner.pcap"),
                &format!("src host 127.0.0.1 and src port {port} and dst host {SCANNER}"),
            );

            // UDP: svmap's OPTIONS sweep and svwar's extension enumeration.
            let scan = |tool: &str, extra: &[&str]| {
                let mut args: Vec<String> = vec!["-p".into(), port.to_string()];
                args.extend(extra.iter().map(|s| s.to_string()));
                args.push(SCANNER.to_string());
                run(&bin, tool, &args)
            };
            let svmap = scan("sipvicious_svmap", &["-b", "127.0.0.1"]);
            assert!(
                svmap.contains("found nothing"),
                "svmap found something:\n{svmap}"
            );
            for method in ["REGISTER", "OPTIONS", "INVITE"] {
                let svwar = scan(
                    "sipvicious_svwar",
                    &["--force", "-e", "100-140", "-m", method],
                );
                assert!(
                    svwar.contains("found nothing"),
                    "svwar -m {method} found something:\n{svwar}"
                );
            }

            // TCP: the same requests, one connection each.
            let tcp = run(
                &bin,
                "python",
                &[
                    concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/tests/agents/sipvicious_tcp.py"
                    )
                    .into(),
                    "--bind".into(),
                    SCANNER.to_string(),
                    "--target".into(),
                    earshot.sip_addr().to_string(),
                ],
            );
            let result: serde_json::Value = serde_json::from_str(
                tcp.lines()
                    .rev()
                    .find(|l| l.starts_with('{'))
                    .unwrap_or("{}"),
            )
            .unwrap_or_else(|e| panic!("{e}: {tcp}"));
            let connections = result["connections"].as_u64().unwrap();
            assert!(connections >= 40, "{result}");
            assert_eq!(result["bytes"], 0, "TCP probes were answered: {result}");
            assert_eq!(
                result["reset"].as_u64().unwrap() + result["eof"].as_u64().unwrap(),
                connections,
                "TCP probes' connections were left open: {result}"
            );

            let packets = capture.stop();
            let udp: Vec<_> = packets.iter().filter(|l| !l.contains("Flags [")).collect();
            assert!(udp.is_empty(), "UDP sent to the scanner: {udp:#?}");
            let payload: Vec<_> = packets
                .iter()
                .filter(|l| l.contains("Flags [") && payload_len(l) != 0)
                .collect();
            assert!(
                payload.is_empty(),
                "TCP payload sent to the scanner: {payload:#?}"
            );
            let resets = packets.iter().filter(|l| l.contains("Flags [R")).count();
            eprintln!(
                "TCP probes: {result}; {} packets from earshot's port to the scanner, {resets} of them resets",
                packets.len()
            );
            assert!(
                resets as u64 >= connections,
                "{resets} resets for {connections} connections:\n{}",
                packets.join("\n")
            );
            assert_eq!(
                metric(&earshot, "earshot_sip_messages_sent_total"),
                sent_before,
                "earshot sent SIP during the scan"
            );
            assert!(metric(&earshot, "earshot_sip_blocked_total") >= connections + 4);

            // The control: svmap from the allowed address finds earshot.
            let found = scan("sipvicious_svmap", &["-b", &ALLOWED.to_string()]);
            assert!(
                found.contains(&format!("127.0.0.1:{port}")) && !found.contains("found nothing"),
                "svmap from the allowed address did not find earshot:\n{found}"
            );
        },
    );
}
