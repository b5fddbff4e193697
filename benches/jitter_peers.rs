//! The held-out table: earshot's jitter buffer against speexdsp's (libspeexdsp-dev, with its
//! defaults and with Mumble's settings) and against the best fixed playout delay chosen in
//! hindsight for each trace, on the same traces and scored by the same scorer.
//!
//! Traces come from `jitter_sim::traces::generate`, one row per family, on seeds from
//! `HELD_OUT_SEEDS` (never used to tune earshot's constants). earshot runs through
//! `jitter_sim::simulate`; speexdsp through `benches/c/speex_jb.c` (compiled here with the
//! system `cc`), which prints the same `tick_ms,seq|-` lines; the hindsight delay through
//! `jitter_sim::fixed::best_fixed`. `jitter_sim::score` scores all of them: "lost" is the share
//! of arrived frames not played (late, or dropped while in time), delay the mean from arrival to
//! playout, R the G.107 E-model rating (Ta = 150 ms + that delay).
//!
//! Run: `cargo bench --bench jitter_peers` (a plain `main`, no criterion). Environment:
//! `JITTER_PEERS_SEEDS` (default 5) traces per family, `JITTER_PEERS_SECONDS` (default 60) each,
//! `JITTER_PEERS_SET=tuning` to run on the tuning seeds instead, `JITTER_PEERS_ONLY=earshot` to
//! skip the peers, `JITTER_PEERS_DETAIL=1` to split earshot's loss into late and dropped.
//! Needs `cc` and libspeexdsp-dev.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use earshot::media::jitter::JitterConfig;
use earshot::media::jitter_sim::traces::{self, Family};
use earshot::media::jitter_sim::{Score, Tick, TracePacket, fixed, score, simulate, to_csv};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One playout under test.
enum Buffer {
    Earshot,
    /// speexdsp through its C driver, with these arguments.
    Speex(Vec<&'static str>),
    /// The best fixed delay for each trace, chosen in hindsight.
    Hindsight,
}

struct Contender {
    name: &'static str,
    buffer: Buffer,
}

fn main() {
    let seeds: u64 = env_or("JITTER_PEERS_SEEDS", 5);
    let seconds: u32 = env_or("JITTER_PEERS_SECONDS", 60);
    let tuning = std::env::var("JITTER_PEERS_SET").is_ok_and(|s| s == "tuning");
    let only_earshot = std::env::var("JITTER_PEERS_ONLY").is_ok_and(|s| s == "earshot");
    let detail = std::env::var("JITTER_PEERS_DETAIL").is_ok();
    let first_seed = if tuning {
        traces::TUNING_SEEDS.start
    } else {
        traces::HELD_OUT_SEEDS.start
    };
    let dir = std::env::temp_dir().join(format!("earshot-jitter-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut contenders = vec![Contender {
        name: "earshot",
        buffer: Buffer::Earshot,
    }];
    let speex = if only_earshot {
        None
    } else {
        match build(&dir, "speex_jb", &["-lspeexdsp"]) {
            Ok(exe) => Some(exe),
            Err(e) => {
                eprintln!("jitter_peers: {e}");
                std::process::exit(1);
            }
        }
    };
    if speex.is_some() {
        contenders.push(Contender {
            name: "speexdsp default",
            buffer: Buffer::Speex(vec![]),
        });
        contenders.push(Contender {
            name: "speexdsp Mumble",
            buffer: Buffer::Speex(vec!["mumble"]),
        });
        contenders.push(Contender {
            name: "hindsight fixed",
            buffer: Buffer::Hindsight,
        });
    }
    let set = if tuning { "TUNING" } else { "held-out" };
    println!(
        "jitter buffers on {set} seeds {first_seed}..{}: {seeds} traces x {seconds} s per family",
        first_seed + seeds
    );
    println!("per cell: lost % mean (worst trace) / mean delay ms / mean R");
    print!("{:<18}", "family");
    for c in &contenders {
        print!(" | {:<27}", c.name);
    }
    println!();
    let mut all: Vec<Vec<Score>> = contenders.iter().map(|_| Vec::new()).collect();
    let mut worst_family: Vec<(f64, &str)> = contenders.iter().map(|_| (0.0, "")).collect();
    for family in Family::ALL {
        let runs: Vec<Vec<TracePacket>> = (first_seed..first_seed + seeds)
            .map(|seed| traces::generate(family, seconds, seed))
            .collect();
        print!("{:<18}", family.name());
        for (i, contender) in contenders.iter().enumerate() {
            let scores: Vec<Score> = runs
                .iter()
                .map(|packets| play(&contender.buffer, speex.as_deref(), packets))
                .collect();
            let n = scores.len().max(1) as f64;
            let mean = |f: &dyn Fn(&Score) -> f64| scores.iter().map(f).sum::<f64>() / n;
            let worst = scores.iter().map(|s| s.not_played_pct).fold(0.0, f64::max);
            if worst > worst_family[i].0 {
                worst_family[i] = (worst, family.name());
            }
            print!(
                " | {:>5.2} ({:>5.2}) {:>6.1} {:>6.2}",
                mean(&|s| s.not_played_pct),
                worst,
                mean(&|s| s.mean_delay_ms),
                mean(&|s| s.r)
            );
            if detail && i == 0 {
                let late = mean(&|s| s.late_loss_pct);
                let dropped = mean(&|s| s.discarded_pct);
                print!(" [late {late:.2} dropped {dropped:.2}]");
            }
            all[i].extend(scores);
        }
        println!();
    }
    println!();
    for (i, c) in contenders.iter().enumerate() {
        let n = all[i].len().max(1) as f64;
        let r = all[i].iter().map(|s| s.r).sum::<f64>() / n;
        let lost = all[i].iter().map(|s| s.not_played_pct).sum::<f64>() / n;
        let delay = all[i].iter().map(|s| s.mean_delay_ms).sum::<f64>() / n;
        let over = all[i].iter().filter(|s| s.not_played_pct > 1.0).count();
        println!(
            "{:<18} mean R {r:6.2}  lost {lost:5.2} %  delay {delay:6.1} ms  traces over 1 % lost: {over}/{}  worst {:.2} % ({})",
            c.name,
            all[i].len(),
            worst_family[i].0,
            worst_family[i].1,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// earshot's defaults, or `JITTER_PEERS_CONFIG` as `coverage_permille,initial_delay_ms`.
fn earshot_config() -> JitterConfig {
    let mut cfg = JitterConfig::default();
    if let Ok(text) = std::env::var("JITTER_PEERS_CONFIG")
        && let Some((coverage, initial)) = text.split_once(',')
    {
        cfg.coverage_permille = coverage.parse().unwrap();
        cfg.initial_delay_ms = initial.parse().unwrap();
    }
    cfg
}

fn play(buffer: &Buffer, speex: Option<&Path>, packets: &[TracePacket]) -> Score {
    match buffer {
        Buffer::Earshot => score(packets, &simulate(packets, earshot_config())),
        Buffer::Hindsight => fixed::best_fixed(packets).1,
        Buffer::Speex(args) => {
            let exe = speex.unwrap();
            let mut child = Command::new(exe)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
            let csv = to_csv(packets);
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || stdin.write_all(csv.as_bytes()));
            let output = child.wait_with_output().unwrap();
            writer.join().unwrap().unwrap();
            assert!(output.status.success(), "{} failed", exe.display());
            score(
                packets,
                &parse_ticks(&String::from_utf8(output.stdout).unwrap()),
            )
        }
    }
}

/// Parses `tick_ms,seq` / `tick_ms,-` lines (tick_ms with up to three decimals).
fn parse_ticks(text: &str) -> Vec<Tick> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (ms, seq) = line.split_once(',').unwrap();
            let (whole, frac) = ms.split_once('.').unwrap_or((ms, ""));
            let frac_us: i64 = format!("{frac:0<3}").parse().unwrap();
            let tick_us = whole.parse::<i64>().unwrap() * 1000 + frac_us;
            let seq = match seq.trim() {
                "-" => None,
                s => Some(s.parse().unwrap()),
            };
            Tick {
                tick_us,
                seq,
                ..Tick::default()
            }
        })
        .collect()
}

/// Compiles `benches/c/<name>.c` into `dir` with the system C compiler.
fn build(dir: &Path, name: &str, flags: &[&str]) -> Result<PathBuf, String> {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("benches/c/{name}.c"));
    let exe = dir.join(name);
    let output = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&source)
        .args(flags)
        .output()
        .map_err(|e| format!("running cc: {e} (install a C compiler)"))?;
    if !output.status.success() {
        return Err(format!(
            "cc {name}.c failed (is libspeexdsp-dev installed?):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(exe)
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
