//! Trunk registration against SIPp registrars that answer what real ones sometimes do:
//! `423 Interval Too Brief` with a Min-Expires (earshot retries with it, registers, and
//! unregisters on shutdown), and a `stale=true` challenge to every REGISTER forever (earshot
//! backs off instead of looping; the REGISTERs are counted in SIPp's message trace), and a
//! trunk removed by a reload (SIGHUP) is unregistered while earshot keeps running.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::sipp::{self, Scenario, Sipp};
use support::{Earshot, temp_dir};

/// Starts SIPp with `scenario` as the registrar, then earshot with one trunk registering there
/// for `expires` seconds. Returns SIPp, earshot and SIPp's directory.
fn registrar_and_earshot(scenario: &str, args: &[&str], expires: u32) -> (Sipp, Earshot, PathBuf) {
    let registrar_port = sipp::port();
    let dir = temp_dir("registrar");
    let scenario = Scenario::load(scenario, &[]);
    let registrar = sipp::start(&dir, &scenario, None, registrar_port, args);
    std::thread::sleep(Duration::from_millis(300));
    let e = Earshot::start(&format!(
        "[[sip.trunk]]\nname = \"provider\"\nregistrar = \"127.0.0.1:{registrar_port}\"\nusername = \"trunkuser\"\npassword = \"s3cret\"\ndomain = \"earshot.test\"\nexpires_secs = {expires}\n"
    ));
    (registrar, e, dir)
}

#[test]
fn registrar_answering_423_gets_its_min_expires_then_the_unregistration() {
    let (registrar, mut e, _) = registrar_and_earshot("uas_registrar_423.xml", &["-m", "1"], 120);
    wait_for_log(&e, "registered");
    let log = e.stderr_log();
    assert!(
        log.contains("min_expires=300"),
        "the 423 was not reported:\n{}",
        e.log_tail(20)
    );
    let status = e.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "earshot exit: {status:?}"
    );
    let outcome = registrar.wait(Duration::from_secs(15));
    sipp::assert_passed(&outcome, 1, &e);
}

/// REGISTERs earshot sent, from SIPp's `-trace_msg` log in `dir`.
fn registers_in_trace(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("uas_registrar_stale") && name.ends_with("_messages.log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            count += text
                .lines()
                .filter(|l| l.starts_with("REGISTER sip:"))
                .count();
        }
    }
    count
}

#[test]
fn registrar_answering_stale_forever_is_backed_off() {
    const WINDOW_SECS: u64 = 20;
    let window = WINDOW_SECS.to_string();
    let (registrar, mut e, dir) = registrar_and_earshot(
        "uas_registrar_stale.xml",
        &["-m", "1", "-trace_msg", "-timeout", &window],
        120,
    );
    // SIPp quits at its global timeout; its trace then holds every REGISTER it received.
    let _ = registrar.wait(Duration::from_secs(WINDOW_SECS + 15));
    let registers = registers_in_trace(&dir);
    eprintln!("{registers} REGISTERs in {WINDOW_SECS} s");
    // Retries at 0, 1, 2, 4, 8 s...: 6 in 20 s. A loop would send hundreds.
    assert!(
        (3..=10).contains(&registers),
        "{registers} REGISTERs in {WINDOW_SECS} s to a registrar answering stale=true forever\n{}",
        e.log_tail(20)
    );
    let log = e.stderr_log();
    assert!(
        log.contains("stale nonce; backing off") && log.contains("retry_in_secs=2"),
        "{}",
        e.log_tail(20)
    );
    let _ = e.terminate(Duration::from_secs(10));
}

/// Waits up to 10 s for `text` in earshot's log.
fn wait_for_log(e: &Earshot, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.stderr_log().contains(text) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_trunk_removed_by_a_reload_is_unregistered() {
    let (registrar, mut e, _) =
        registrar_and_earshot("uas_registrar_removed.xml", &["-m", "1"], 3600);
    wait_for_log(&e, "registered");
    assert!(e.stderr_log().contains("registered"), "{}", e.log_tail(20));

    // The same configuration without the trunk, then SIGHUP.
    let mut table: toml::Table = std::fs::read_to_string(e.config_path())
        .unwrap()
        .parse()
        .unwrap();
    let sip = table.get_mut("sip").and_then(|s| s.as_table_mut()).unwrap();
    assert!(sip.remove("trunk").is_some());
    std::fs::write(e.config_path(), toml::to_string(&table).unwrap()).unwrap();
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(e.pid().to_string())
        .status();

    // SIPp gets its Expires: 0 and finishes while earshot still runs.
    let outcome = registrar.wait(Duration::from_secs(20));
    assert!(e.is_running(), "earshot stopped:\n{}", e.log_tail(20));
    sipp::assert_passed(&outcome, 1, &e);
    wait_for_log(&e, "unregistered");
    assert!(
        e.stderr_log().contains("unregistered"),
        "{}",
        e.log_tail(20)
    );
    assert!(e.options_ok());
}
