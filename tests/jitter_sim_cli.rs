//! `earshot jitter-sim TRACE.csv`: the operator's tool for replaying a captured arrival trace
//! through the jitter buffer, run as the binary.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

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
    // One line per 20 ms tick from the first arrival, `tick_ms,seq` or `tick_ms,-`.
    for (k, line) in lines.iter().enumerate() {
        let (tick, _) = line.split_once(',').unwrap();
        assert_eq!(tick.parse::<u64>().unwrap(), 1000 + 20 * k as u64, "{line}");
    }
    let played: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.split_once(',')?.1.parse().ok())
        .collect();
    let expected: Vec<u32> = (0..50).map(|i| (65_520 + i) % 65_536).collect();
    assert_eq!(played, expected, "every packet once, in order");
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
        .skip_while(|l| !l.ends_with(",9"))
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
        0,
        "the default plays the first packet at once"
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
