//! earshot's jitter buffer against two peers on the same traces, through the same interface and
//! scored by the same scorer: speexdsp's adaptive jitter buffer (libspeexdsp-dev) and libre's
//! `jbuf` (libre-dev 1.1.0, what baresip 1.0 uses).
//!
//! Every trace comes from earshot's generators (`jitter_sim::traces`), is written as the CSV of
//! `earshot jitter-sim`, and is replayed by earshot's `jitter_sim::simulate` and by two small C
//! programs (`benches/c/speex_jb.c`, `benches/c/re_jbuf.c`, compiled here with the system `cc`)
//! that print the same `tick_ms,seq|-` lines: ticks every 20 ms from the first arrival, every
//! packet with arrival ≤ tick put before that tick's frame is taken. `jitter_sim::score` scores
//! all of them. Late loss is packets that arrived but were never played because playout had
//! already passed them; mean delay is from a packet's arrival to the tick that played it.
//!
//! Run: `cargo bench --bench jitter_peers` (a plain `main`, no criterion). Environment:
//! `JITTER_PEERS_SEEDS` (default 5) and `JITTER_PEERS_SECONDS` (default 60) per trace.
//! Needs `cc`, libspeexdsp-dev and libre-dev.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use earshot::media::jitter::JitterConfig;
use earshot::media::jitter_sim::{Score, Tick, TracePacket, score, simulate, to_csv, traces};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One jitter buffer under test.
enum Buffer {
    Earshot,
    /// A C program and its arguments.
    Peer {
        exe: PathBuf,
        args: Vec<String>,
    },
}

struct Contender {
    name: &'static str,
    buffer: Buffer,
}

type Generator = Box<dyn Fn(u32, u64) -> Vec<TracePacket>>;

fn main() {
    let seeds: u64 = env_or("JITTER_PEERS_SEEDS", 5);
    let seconds: u32 = env_or("JITTER_PEERS_SECONDS", 60);
    let dir = std::env::temp_dir().join(format!("earshot-jitter-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let speex = build(&dir, "speex_jb", &["-lspeexdsp"]);
    let re = build(&dir, "re_jbuf", &["-I/usr/include/re", "-lre"]);
    let (speex, re) = match (speex, re) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("jitter_peers: {e}");
            std::process::exit(1);
        }
    };
    let peer = |name, exe: &Path, args: &[&str]| Contender {
        name,
        buffer: Buffer::Peer {
            exe: exe.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        },
    };
    let contenders = [
        Contender {
            name: "earshot",
            buffer: Buffer::Earshot,
        },
        peer("speexdsp (default, max late 4%)", &speex, &[]),
        peer("speexdsp (max late rate 1%)", &speex, &["1"]),
        peer("libre jbuf 5-10 (baresip default)", &re, &[]),
        peer("libre jbuf 1-10", &re, &["1", "10"]),
    ];
    let generators: Vec<(&str, Generator)> = vec![
        ("clean", Box::new(traces::clean)),
        // The tick grid starts at the first arrival, so on `clean` every packet lands exactly
        // on a tick; here every packet after the first arrives 10 ms after a tick instead.
        (
            "clean, 10ms phase",
            Box::new(|s, seed| {
                let mut packets = traces::clean(s, seed);
                packets
                    .iter_mut()
                    .skip(1)
                    .for_each(|p| p.arrival_us += 10_000);
                packets
            }),
        ),
        ("pareto", Box::new(traces::pareto)),
        ("spikes 200ms", Box::new(traces::spikes)),
        ("bursty loss (G-E)", Box::new(traces::bursty_loss)),
        ("reorder", Box::new(traces::reorder)),
        (
            "drift +100ppm",
            Box::new(|s, seed| traces::drift(s, seed, 100.0)),
        ),
        (
            "drift -100ppm",
            Box::new(|s, seed| traces::drift(s, seed, -100.0)),
        ),
        ("wifi stalls", Box::new(traces::wifi)),
    ];

    println!(
        "jitter buffers on earshot's traces: {seeds} seeds x {seconds} s each; mean over seeds (worst seed in brackets)"
    );
    println!(
        "{:<18} {:<34} {:>16} {:>16} {:>8} {:>9} {:>7} {:>7}",
        "trace", "buffer", "late loss %", "mean delay ms", "max ms", "discard%", "gap %", "ooo %"
    );
    let mut earshot_ok = true;
    let mut verdicts = Vec::new();
    for (trace_name, generate) in &generators {
        let runs: Vec<Vec<TracePacket>> = (1..=seeds).map(|seed| generate(seconds, seed)).collect();
        let mut summaries = Vec::new();
        for contender in &contenders {
            let scores: Vec<(Score, Vec<Tick>)> = runs
                .iter()
                .map(|packets| {
                    let ticks = replay(&contender.buffer, packets);
                    (score(packets, &ticks), ticks)
                })
                .collect();
            let summary = Summary::of(&scores);
            println!(
                "{:<18} {:<34} {:>7.2} [{:>5.2}] {:>7.1} [{:>6.1}] {:>8.0} {:>9.2} {:>7.2} {:>7.2}",
                trace_name,
                contender.name,
                summary.late_mean,
                summary.late_worst,
                summary.delay_mean,
                summary.delay_worst,
                summary.max_delay,
                summary.discarded,
                summary.gap_pct,
                summary.out_of_order,
            );
            summaries.push(summary);
        }
        let ours = &summaries[0];
        earshot_ok &= ours.late_worst <= 1.0;
        // Two readings of "as fast as speexdsp at no more late loss", both checked: against
        // the fastest speexdsp run that loses as much or more, and against every speexdsp run
        // that loses as little or less. Delays are compared exactly (means over the seeds).
        let speex = &summaries[1..3];
        let fastest = |keep: &dyn Fn(&Summary) -> bool| {
            speex
                .iter()
                .filter(|s| keep(s))
                .map(|s| s.delay_mean)
                .fold(f64::INFINITY, f64::min)
        };
        let at_more_loss = fastest(&|s| s.late_mean >= ours.late_mean);
        let at_less_loss = fastest(&|s| s.late_mean <= ours.late_mean);
        let verdict = |best: f64| {
            if !best.is_finite() {
                "n/a".to_string()
            } else if ours.delay_mean <= best {
                format!("yes ({best:.2} ms)")
            } else {
                format!("NO ({best:.2} ms)")
            }
        };
        verdicts.push(format!(
            "{trace_name}: earshot late {:.2}% (worst {:.2}%), delay {:.2} ms -> <= speexdsp at >= late loss: {}; at <= late loss: {}",
            ours.late_mean,
            ours.late_worst,
            ours.delay_mean,
            verdict(at_more_loss),
            verdict(at_less_loss),
        ));
        println!();
    }
    for v in &verdicts {
        println!("{v}");
    }
    println!(
        "earshot late loss <= 1% on every trace and seed: {}",
        if earshot_ok { "yes" } else { "NO" }
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scores of one buffer on one trace kind, over all seeds.
struct Summary {
    late_mean: f64,
    late_worst: f64,
    delay_mean: f64,
    delay_worst: f64,
    max_delay: f64,
    discarded: f64,
    gap_pct: f64,
    /// Frames played after a later one had been played (the scorer counts them as played).
    out_of_order: f64,
}

impl Summary {
    fn of(scores: &[(Score, Vec<Tick>)]) -> Summary {
        let n = scores.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Score) -> f64| scores.iter().map(|(s, _)| f(s)).sum::<f64>() / n;
        let worst = |f: &dyn Fn(&Score) -> f64| {
            scores
                .iter()
                .map(|(s, _)| f(s))
                .fold(f64::NEG_INFINITY, f64::max)
        };
        Summary {
            late_mean: mean(&|s| s.late_loss_pct),
            late_worst: worst(&|s| s.late_loss_pct),
            delay_mean: mean(&|s| s.mean_delay_ms),
            delay_worst: worst(&|s| s.mean_delay_ms),
            max_delay: worst(&|s| s.max_delay_ms),
            discarded: mean(&|s| s.discarded_pct),
            gap_pct: scores
                .iter()
                .map(|(s, ticks)| 100.0 * s.gap_ticks as f64 / ticks.len().max(1) as f64)
                .sum::<f64>()
                / n,
            out_of_order: scores
                .iter()
                .map(|(s, ticks)| 100.0 * out_of_order(ticks) as f64 / s.played.max(1) as f64)
                .sum::<f64>()
                / n,
        }
    }
}

/// Played frames whose sequence number is below one played before (across wrap).
fn out_of_order(ticks: &[Tick]) -> usize {
    let mut highest: Option<u16> = None;
    let mut count = 0;
    for seq in ticks.iter().filter_map(|t| t.seq) {
        match highest {
            Some(h) if (seq.wrapping_sub(h) as i16) < 0 => count += 1,
            _ => highest = Some(seq),
        }
    }
    count
}

fn replay(buffer: &Buffer, packets: &[TracePacket]) -> Vec<Tick> {
    match buffer {
        Buffer::Earshot => simulate(packets, JitterConfig::default()),
        Buffer::Peer { exe, args } => {
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
            parse_ticks(&String::from_utf8(output.stdout).unwrap())
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
            Tick { tick_us, seq }
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
            "cc {name}.c failed (are libspeexdsp-dev and libre-dev installed?):\n{}",
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
