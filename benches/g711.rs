//! G.711 throughput: earshot's table-driven codec against spandsp's inline routines, on the
//! same speech-like input, for one 20 ms frame and for one second.
//!
//! spandsp is C, and this package has no build script, so the spandsp side runs in a helper
//! process (`tests/c/spandsp_g711.c`, compiled here with `cc -O2 … -lspandsp`). Criterion asks
//! it for N iterations through `iter_custom`; the helper times its own loop with
//! `clock_gettime`, so the pipe round trip is not measured. Both sides report in the same
//! criterion group. Without `cc` or libspandsp-dev the spandsp rows are skipped with a note.

#![allow(clippy::unwrap_used)]

#[path = "../tests/c/spandsp_shim.rs"]
mod spandsp_shim;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use earshot::media::g711::Law;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// One second of a voiced, speech-like signal: a 140 Hz harmonic series with a syllable
/// envelope plus low-level noise, so codes spread over all segments like real speech.
fn speech_like() -> Vec<i16> {
    let mut noise_state = 0x1234_5678u32;
    (0..8000)
        .map(|n| {
            let t = n as f32 / 8000.0;
            let envelope = 0.55 + 0.45 * (2.0 * std::f32::consts::PI * 4.0 * t).sin();
            let voiced: f32 = (1..=12)
                .map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32)
                .sum();
            noise_state = noise_state
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let noise = (noise_state >> 16) as f32 / 65536.0 - 0.5;
            (envelope * voiced * 6000.0 + noise * 400.0) as i16
        })
        .collect()
}

/// The spandsp helper process, kept alive for the whole run.
struct Spandsp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The temporary directory holding the helper and its input, removed on drop.
    dir: std::path::PathBuf,
}

impl Spandsp {
    fn start(pcm: &[i16]) -> Result<Self, String> {
        let exe = spandsp_shim::build()?;
        let input = exe.with_file_name("input.raw");
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        std::fs::write(&input, bytes).map_err(|e| e.to_string())?;
        let mut child = Command::new(&exe)
            .arg("bench")
            .arg(&input)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let dir = exe.parent().ok_or("no temp dir")?.to_path_buf();
        Ok(Self {
            child,
            stdin,
            stdout,
            dir,
        })
    }

    /// Runs `op` over the first `len` samples `iters` times and returns spandsp's own timing.
    fn time(&mut self, op: &str, len: usize, iters: u64) -> Duration {
        writeln!(self.stdin, "{op} {len} {iters}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        Duration::from_nanos(line.trim().parse().unwrap())
    }
}

impl Drop for Spandsp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn g711(c: &mut Criterion) {
    let pcm = speech_like();
    let mut spandsp = match Spandsp::start(&pcm) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("skipping spandsp comparison: {e}");
            None
        }
    };
    for (law, name) in [(Law::Ulaw, "ulaw"), (Law::Alaw, "alaw")] {
        let mut codes = vec![0u8; pcm.len()];
        law.encode(&pcm, &mut codes);
        for (len, span) in [(160usize, "frame"), (8000, "1s")] {
            let mut group = c.benchmark_group(format!("g711/{name}/{span}"));
            group.throughput(Throughput::Elements(len as u64));
            let mut out_codes = vec![0u8; len];
            group.bench_function("earshot_encode", |b| {
                b.iter(|| law.encode(black_box(&pcm[..len]), black_box(&mut out_codes)));
            });
            let mut out_pcm = vec![0i16; len];
            group.bench_function("earshot_decode", |b| {
                b.iter(|| law.decode(black_box(&codes[..len]), black_box(&mut out_pcm)));
            });
            if let Some(s) = spandsp.as_mut() {
                group.bench_function("spandsp_encode", |b| {
                    b.iter_custom(|iters| s.time(&format!("{name}_encode"), len, iters));
                });
                group.bench_function("spandsp_decode", |b| {
                    b.iter_custom(|iters| s.time(&format!("{name}_decode"), len, iters));
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, g711);
criterion_main!(benches);
