//! Runs SIPp scenarios from `tests/sipp/` against earshot: fills the `{{NAME}}` placeholders,
//! picks free ports, and reports SIPp's verdict with its logs.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A scenario with its placeholders filled, ready to run.
pub struct Scenario {
    pub name: String,
    pub xml: String,
}

impl Scenario {
    /// Loads `tests/sipp/<file>` and fills `{{KEY}}` with each value.
    pub fn load(file: &str, vars: &[(&str, String)]) -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(file);
        let mut xml =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (key, value) in vars {
            xml = xml.replace(&format!("{{{{{key}}}}}"), value);
        }
        assert!(
            !xml.contains("{{"),
            "unfilled placeholder in {file}: {}",
            xml.lines().find(|l| l.contains("{{")).unwrap_or("")
        );
        Scenario {
            name: file.trim_end_matches(".xml").to_string(),
            xml,
        }
    }
}

/// What SIPp reported.
#[derive(Debug)]
pub struct SippOutcome {
    pub exit_code: Option<i32>,
    pub successful: u64,
    pub failed: u64,
    pub stdout: String,
    pub errors: String,
}

impl SippOutcome {
    pub fn all_passed(&self, expected_calls: u64) -> bool {
        self.exit_code == Some(0) && self.successful == expected_calls && self.failed == 0
    }
}

/// One SIPp process.
pub struct Sipp {
    child: Child,
    dir: PathBuf,
    name: String,
}

/// Starts SIPp with `scenario` in `dir`. `target` is None for a UAS scenario (a registrar).
pub fn start(
    dir: &Path,
    scenario: &Scenario,
    target: Option<SocketAddr>,
    local_port: u16,
    args: &[&str],
) -> Sipp {
    let file = dir.join(format!("{}.xml", scenario.name));
    std::fs::write(&file, &scenario.xml).expect("write scenario");
    let media_port = super::free_udp_tcp_port(Ipv4Addr::LOCALHOST).expect("media port");
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(&file)
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args([
            "-p",
            &local_port.to_string(),
            "-mp",
            &media_port.to_string(),
        ])
        .args(["-trace_err", "-nostdin", "-timeout_error"])
        .args(args);
    if let Some(target) = target {
        cmd.arg(target.to_string());
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp must be installed (scripts/test.sh installs sip-tester)");
    Sipp {
        child,
        dir: dir.to_path_buf(),
        name: scenario.name.clone(),
    }
}

impl Sipp {
    /// Waits for SIPp to finish (it is killed after `limit`) and collects its verdict.
    pub fn wait(mut self, limit: Duration) -> SippOutcome {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let output = self.child.wait_with_output().expect("sipp output");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let mut errors = String::from_utf8_lossy(&output.stderr).to_string();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with(&self.name) && name.ends_with("_errors.log") {
                    errors.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
                }
            }
        }
        SippOutcome {
            exit_code: output.status.code(),
            successful: last_count(&stdout, "Successful call"),
            failed: last_count(&stdout, "Failed call"),
            stdout,
            errors,
        }
    }
}

/// The cumulative column of the last line of SIPp's statistics screen starting with `label`.
fn last_count(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A free loopback port for SIPp's own SIP socket.
pub fn port() -> u16 {
    super::free_udp_tcp_port(Ipv4Addr::LOCALHOST).expect("a free loopback port for SIPp")
}

/// Asserts that SIPp completed `calls` calls without failures, with SIPp's errors and the end of
/// earshot's log.
pub fn assert_passed(outcome: &SippOutcome, calls: u64, earshot: &super::Earshot) {
    assert!(
        outcome.all_passed(calls),
        "SIPp: exit {:?}, {} ok, {} failed\n{}\n--- earshot ---\n{}",
        outcome.exit_code,
        outcome.successful,
        outcome.failed,
        outcome.errors,
        earshot.log_tail(40)
    );
}

/// One SIPp caller running `file` (from tests/sipp, with `vars`) towards earshot.
#[allow(dead_code)]
pub fn caller(e: &super::Earshot, file: &str, vars: &[(&str, String)]) -> Sipp {
    let scenario = Scenario::load(file, vars);
    start(e.dir(), &scenario, Some(e.sip_addr()), port(), &["-m", "1"])
}

/// One SIPp call with a second of the coded test signal, an INFO digit and a BYE (from
/// `+15550001234` to 1000); asserts it passed.
#[allow(dead_code)]
pub fn make_call(e: &super::Earshot) {
    use earshot::media::g711::Law;
    let codes = super::pcap::coded_test_signal(Law::Ulaw, 1000);
    let packets = super::pcap::g711_packets(0, 1000, &codes);
    let path = e.dir().join("caller.pcap");
    super::pcap::write_rtp_pcap(&path, 0x1234_5678, 100, &packets).unwrap();
    let vars = vec![
        ("CODECS", "0".to_string()),
        ("PTS", "0".to_string()),
        ("RTPMAPS", "a=rtpmap:0 PCMU/8000".to_string()),
        ("ANSWER_PT", "0".to_string()),
        ("PCAP", path.display().to_string()),
        ("PCAP_MS", "1200".to_string()),
        ("HOLD_MS", "200".to_string()),
        ("CALLER", "+15550001234".to_string()),
        ("CALLEE", "1000".to_string()),
    ];
    let scenario = Scenario::load("uac_call.xml", &vars);
    let outcome = start(e.dir(), &scenario, Some(e.sip_addr()), port(), &["-m", "1"])
        .wait(Duration::from_secs(60));
    assert_passed(&outcome, 1, e);
}
