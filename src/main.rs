//! The `earshot` command line: `run` (the default), `check-config`, `devices`, `jitter-sim`.
//!
//! This file only parses arguments, loads the configuration, sets up logging and the tokio
//! runtime, and hands over to [`earshot::app::run`]. Configuration errors are printed one field
//! per line (`sip.allow[2]: ...`) and exit with status 1, before anything starts.

use std::error::Error;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use earshot::config::{self, Config, ConfigError, LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// A headless call appliance: SIP trunks and Twilio Media Streams to speakers and recordings.
#[derive(Debug, Parser)]
#[command(name = "earshot", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of the implicit `run`, so `earshot --config x.toml` works without `run`.
    #[command(flatten)]
    run: ConfigArg,
}

/// The `--config` option shared by `run` and `check-config`.
#[derive(Debug, Args)]
struct ConfigArg {
    /// Configuration file (TOML). Every key is optional; see the shipped config.toml.
    #[arg(short, long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance until SIGINT/SIGTERM (the default command).
    Run(ConfigArg),
    /// Validate a configuration file; print every invalid field and exit 1 if any.
    CheckConfig(ConfigArg),
    /// Check the box: ports free, audio device, store, recording folder, free disk, clock.
    Doctor(ConfigArg),
    /// List the audio output and input devices usable as `[audio] output` and `input`.
    Devices,
    /// Replay a packet-arrival trace (CSV) or an RTP capture through the jitter buffer and print
    /// what it plays.
    JitterSim {
        /// The trace file: `arrival_ms,seq,rtp_ts` lines in arrival order.
        #[arg(value_name = "TRACE.csv", required_unless_present = "pcap")]
        trace: Option<PathBuf>,
        /// Read the trace from a pcap or pcapng capture instead: the RTP stream sent into
        /// `[rtp].ports` (the caller's leg; the most packets among several), or the one
        /// `--ssrc` names.
        #[arg(long, value_name = "FILE", conflicts_with = "trace")]
        pcap: Option<PathBuf>,
        /// With `--pcap`: the SSRC of the stream to replay (decimal, or hex with 0x).
        #[arg(long, value_name = "SSRC", requires = "pcap", value_parser = parse_ssrc)]
        ssrc: Option<u32>,
        /// Use this configuration file's `[jitter]` settings instead of the defaults.
        #[arg(short, long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Run(arg) => run(&arg.config),
        Command::CheckConfig(arg) => check_config(&arg.config),
        Command::Doctor(arg) => doctor(&arg.config),
        Command::Devices => devices(),
        Command::JitterSim {
            trace,
            pcap,
            ssrc,
            config,
        } => {
            let input = match (trace, pcap) {
                (_, Some(pcap)) => TraceInput::Capture { path: pcap, ssrc },
                (Some(csv), None) => TraceInput::Csv(csv),
                // clap requires one of the two.
                (None, None) => {
                    eprintln!("earshot: jitter-sim needs TRACE.csv or --pcap FILE");
                    return ExitCode::FAILURE;
                }
            };
            jitter_sim(&input, config.as_deref())
        }
    }
}

/// `earshot run`: load the configuration, start logging and the runtime, run the app.
fn run(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => return config_failed(path, &err),
    };
    init_tracing(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(config = %path.display(), "earshot {} starting", env!("CARGO_PKG_VERSION"));
    match runtime.block_on(serve(config, path.to_path_buf())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the application inside the runtime (it reports readiness and feeds the watchdog).
async fn serve(config: Config, path: PathBuf) -> Result<(), Box<dyn Error>> {
    earshot::app::run(config, path).await.map_err(Into::into)
}

/// `earshot doctor`: check the box for this configuration; exit 1 if anything fails.
fn doctor(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => return config_failed(path, &err),
    };
    let mut failed = false;
    for check in earshot::doctor::run(&config) {
        let mark = match check.status {
            earshot::doctor::Status::Ok => "ok  ",
            earshot::doctor::Status::Warn => "warn",
            earshot::doctor::Status::Fail => {
                failed = true;
                "FAIL"
            }
        };
        println!("{mark} {:<11} {}", check.name, check.detail);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `earshot check-config`: validate and report, exit 1 on any error.
fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_) => {
            println!("config OK: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => config_failed(path, &err),
    }
}

/// Prints a configuration error, one field per line, and returns exit status 1.
fn config_failed(path: &Path, err: &ConfigError) -> ExitCode {
    match err {
        ConfigError::Read { .. } => eprintln!("{err}"),
        ConfigError::Syntax { .. } => eprintln!("config INVALID: {}\n{err}", path.display()),
        ConfigError::Invalid(fields) => {
            let n = fields.len();
            let s = if n == 1 { "" } else { "s" };
            eprintln!(
                "config INVALID: {} ({n} invalid field{s})\n{err}",
                path.display()
            );
        }
    }
    ExitCode::FAILURE
}

/// Sets up `tracing` on stderr: `RUST_LOG` if set, else `[log] level`.
fn init_tracing(log: &LogConfig) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(&env).unwrap_or_else(|err| {
            eprintln!("earshot: ignoring invalid RUST_LOG={env:?}: {err}");
            EnvFilter::new(&log.level)
        }),
        _ => EnvFilter::new(&log.level),
    };
    let terminal = io::stderr().is_terminal();
    // journald stamps every line itself and shows no colour; systemd sets JOURNAL_STREAM.
    let journald = !terminal && std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match log.format {
        LogFormat::Auto if journald => builder.with_ansi(false).without_time().init(),
        LogFormat::Auto => builder.with_ansi(terminal).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => {
            builder.with_ansi(false).init();
            tracing::warn!(
                "log.format = \"json\" needs tracing-subscriber's `json` feature; writing text"
            );
        }
    }
}

/// `earshot devices`: list audio output and input devices, marking the defaults.
fn devices() -> ExitCode {
    use cpal::traits::{DeviceTrait, HostTrait};

    let host = cpal::default_host();
    let default = host.default_output_device();
    let devices = match host.output_devices() {
        Ok(devices) => devices,
        Err(err) => {
            eprintln!(
                "earshot: cannot list {} output devices: {err}",
                host.id().name()
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} output devices (* = default); use the id as [audio] output:",
        host.id().name()
    );
    let mut count = 0;
    for device in devices {
        let mark = if default.as_ref() == Some(&device) {
            '*'
        } else {
            ' '
        };
        let id = device
            .id()
            .map_or_else(|_| "?".to_owned(), |id| id.to_string());
        println!("{mark} {id:<24} {device}");
        count += 1;
    }
    if count == 0 {
        println!("  (none; set [audio] output = \"none\")");
    }
    let inputs = earshot::audio::list_inputs();
    println!(
        "{} input devices (* = default); use the id as [audio] input (talk-back):",
        host.id().name()
    );
    for input in &inputs {
        let mark = if input.is_default { '*' } else { ' ' };
        println!("{mark} {:<24} {}", input.id, input.name);
    }
    if inputs.is_empty() {
        println!("  (none; talk-back needs one)");
    }
    ExitCode::SUCCESS
}

/// What `earshot jitter-sim` replays.
enum TraceInput {
    /// A trace CSV.
    Csv(PathBuf),
    /// A stream in a pcap or pcapng file.
    Capture { path: PathBuf, ssrc: Option<u32> },
}

/// `--ssrc`: decimal or `0x` hex.
fn parse_ssrc(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("{s:?} is not a 32-bit SSRC (decimal, or hex with 0x)"))
}

/// `earshot jitter-sim (TRACE.csv | --pcap FILE [--ssrc SSRC]) [--config PATH]`: replay a
/// trace through the jitter buffer.
fn jitter_sim(input: &TraceInput, config: Option<&Path>) -> ExitCode {
    use earshot::media::jitter_sim;
    let config = match config.map(|path| (path, Config::load(path))) {
        None => Config::default(),
        Some((_, Ok(config))) => config,
        Some((path, Err(err))) => return config_failed(path, &err),
    };
    let ports = config.rtp.ports.start..=config.rtp.ports.end;
    let packets = match load_trace(input, ports) {
        Ok(packets) => packets,
        Err(err) => {
            eprintln!("earshot: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = jitter_sim::write_playout(&packets, config.jitter, &mut out)
        .and_then(|score| Ok(io::Write::flush(&mut out).map(|()| score)?));
    match written {
        Ok(s) => {
            eprintln!(
                "{} packets: {:.2} % not played ({} late, {} dropped in time), mean delay \
                 {:.1} ms (max {:.1}), burst ratio {:.2}, E-model R {:.1}",
                s.packets,
                s.not_played_pct,
                s.late,
                s.discarded,
                s.mean_delay_ms,
                s.max_delay_ms,
                s.burst_r,
                s.r
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("earshot: jitter-sim: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The packets `jitter-sim` replays, or what stopped it reading them.
fn load_trace(
    input: &TraceInput,
    ports: std::ops::RangeInclusive<u16>,
) -> Result<Vec<earshot::media::jitter_sim::TracePacket>, String> {
    use earshot::media::{capture, jitter_sim};
    match input {
        TraceInput::Csv(path) => {
            let csv = std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            jitter_sim::parse_trace(&csv)
                .map_err(|err| format!("jitter-sim {}: {err}", path.display()))
        }
        TraceInput::Capture { path, ssrc } => {
            let file = std::fs::File::open(path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let trace = capture::read_capture(io::BufReader::new(file), *ssrc, ports)
                .map_err(|err| format!("jitter-sim --pcap {}: {err}", path.display()))?;
            describe_capture(&trace);
            Ok(trace.packets)
        }
    }
}

/// Tells, on stderr, which stream of a capture is replayed and which others there were.
fn describe_capture(trace: &earshot::media::capture::CaptureTrace) {
    let s = &trace.stream;
    eprintln!(
        "earshot: replaying SSRC {:#010x} (payload type {}) {} -> {}: {} packets; {} other \
         packets skipped",
        s.ssrc, s.payload_type, s.src, s.dst, s.packets, trace.skipped
    );
    if trace.truncated {
        eprintln!("earshot: the capture breaks off mid-record; replaying what came before");
    }
    // Stray datagrams that happen to look like RTP make streams of a packet or two.
    for other in trace.streams.iter().filter(|o| *o != s && o.packets >= 10) {
        eprintln!(
            "earshot:   also in the capture: SSRC {:#010x} (payload type {}) {} -> {}: {} \
             packets (--ssrc {:#x})",
            other.ssrc, other.payload_type, other.src, other.dst, other.packets, other.ssrc
        );
    }
}
