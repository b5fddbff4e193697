//! The jitter-buffer trace runner behind `earshot jitter-sim TRACE.csv`, with the corpus of
//! synthetic traces ([`traces`]), the one scorer ([`score()`], E-model rating in [`emodel`]) and
//! the hindsight fixed-delay baseline ([`fixed`]) that tests and benchmarks judge buffers by.
//!
//! Trace format (the whole contract): CSV with the header `arrival_ms,seq,rtp_ts`, one packet
//! per line in arrival order; `seq` is the 16-bit RTP sequence number (it wraps), `rtp_ts` the
//! 32-bit RTP timestamp at 8 kHz, 160 per 20 ms frame. `arrival_ms` may carry up to three
//! decimals. The runner prints one line per 20 ms playout tick, `tick_ms,seq` for the frame
//! played, `tick_ms,seq+seq2` when a second frame was compressed into the same tick (time-scale
//! compression, [`crate::media::accelerate`]), or `tick_ms,-` when it is not playing a received
//! frame (initial buffering, concealment, silence). Tick k is at the first arrival + 20·k ms, on the trace's clock; every
//! packet with `arrival_ms ≤ tick_ms` is pushed before that tick's frame is chosen. Output ends
//! once the buffer has drained after the last arrival. No header is printed. The trace carries
//! no marker bit: the runner sets it, as RFC 3551 §4.1 senders do at a talkspurt's start, on a
//! packet that follows the newest one's number but not its time (a silence was skipped).
//!
//! The audio pushed is synthetic speech-like PCM derived from the RTP timestamp (a voiced tone
//! in 250 ms syllables with 150 ms pauses), so the buffer's quiet-frame preferences behave as
//! they do on speech.
//!
//! [`Arrivals`] generates a packet stream as time goes, for loops without end (benchmarks), so
//! that packets are handed over in arrival order and never before they arrive.

use crate::media::frame::{Frame, SILENCE};
use crate::media::jitter::{JitterBuffer, JitterConfig, Playout};
use std::fmt;

pub mod emodel;
pub mod fixed;
mod score;
pub mod traces;

pub use score::{Score, score};
use std::time::{Duration, Instant};

/// One received packet of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracePacket {
    /// Arrival time in µs on the trace's clock.
    pub arrival_us: i64,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp (8 kHz).
    pub rtp_ts: u32,
}

/// One playout tick of a simulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Tick time in µs on the trace's clock.
    pub tick_us: i64,
    /// Sequence number of the frame played, or `None` when no received frame was played.
    pub seq: Option<u16>,
    /// How long after the tick `seq` starts to be heard, in µs (audio carried over by
    /// time-scale compression plays first).
    pub lag_us: i64,
    /// A second frame compressed into this tick, and how long after the tick it starts to be
    /// heard, in µs.
    pub merged: Option<(u16, i64)>,
}

/// Why a trace could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A line of the CSV is malformed; `line` counts from 1.
    #[error("trace line {line}: {problem}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
    /// Writing the playout failed.
    #[error("writing the playout: {0}")]
    Io(#[from] std::io::Error),
    /// The trace spans more than [`MAX_SPAN_US`]: it would replay for ever.
    #[error(
        "the trace spans {hours} hours (a clock set while capturing?); replays are limited to \
         24: split it at the jump"
    )]
    TooLong {
        /// Its span in whole hours.
        hours: i64,
    },
}

/// What is wrong with one trace line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// The first line is not `arrival_ms,seq,rtp_ts`.
    #[error("expected the header `arrival_ms,seq,rtp_ts`")]
    MissingHeader,
    /// Not exactly three comma-separated fields.
    #[error("expected 3 fields, found {0}")]
    FieldCount(usize),
    /// `arrival_ms` is not a non-negative number with at most three decimals.
    #[error("arrival_ms is not a non-negative number of milliseconds")]
    BadArrival,
    /// `seq` is not an integer 0..=65535.
    #[error("seq is not an integer 0..=65535")]
    BadSeq,
    /// `rtp_ts` is not an integer 0..=4294967295.
    #[error("rtp_ts is not an integer 0..=4294967295")]
    BadTimestamp,
    /// The trace is not in arrival order.
    #[error("arrival_ms is earlier than the previous line's")]
    OutOfOrder,
}

const HEADER: &str = "arrival_ms,seq,rtp_ts";
/// SSRC given to trace packets (traces carry a single stream).
const TRACE_SSRC: u32 = 0x7ace;
const TICK_US: i64 = 20_000;
/// Longest trace replayed, first to last arrival: a day, in µs.
pub const MAX_SPAN_US: i64 = 24 * 3600 * 1_000_000;

/// Replays a CSV trace (see the module docs) and writes one `tick_ms,seq` line per tick.
pub fn run_trace(
    csv: &str,
    cfg: JitterConfig,
    out: &mut impl std::io::Write,
) -> Result<Score, TraceError> {
    write_playout(&parse_trace(csv)?, cfg, out)
}

/// Replays packets (in arrival order), writes one `tick_ms,seq` line per tick and returns the
/// playout's score.
pub fn write_playout(
    packets: &[TracePacket],
    cfg: JitterConfig,
    out: &mut impl std::io::Write,
) -> Result<Score, TraceError> {
    if let (Some(first), Some(last)) = (packets.first(), packets.last())
        && last.arrival_us - first.arrival_us > MAX_SPAN_US
    {
        return Err(TraceError::TooLong {
            hours: (last.arrival_us - first.arrival_us) / 3_600_000_000,
        });
    }
    let ticks = simulate(packets, cfg);
    for tick in &ticks {
        match (tick.seq, tick.merged) {
            (Some(seq), Some((merged, _))) => {
                writeln!(out, "{},{seq}+{merged}", Millis(tick.tick_us))?
            }
            (Some(seq), None) => writeln!(out, "{},{seq}", Millis(tick.tick_us))?,
            (None, _) => writeln!(out, "{},-", Millis(tick.tick_us))?,
        }
    }
    Ok(score(packets, &ticks))
}

/// Parses a trace. Blank lines are skipped; line numbers in errors count them.
pub fn parse_trace(csv: &str) -> Result<Vec<TracePacket>, TraceError> {
    let mut lines = csv
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header_ok = lines.next().is_some_and(|(_, l)| {
        let fields: Vec<&str> = l
            .trim_start_matches('\u{feff}')
            .split(',')
            .map(str::trim)
            .collect();
        fields == HEADER.split(',').collect::<Vec<_>>()
    });
    if !header_ok {
        return Err(TraceError::Line {
            line: 1,
            problem: LineProblem::MissingHeader,
        });
    }
    let mut packets = Vec::new();
    for (index, line) in lines {
        let err = |problem| TraceError::Line {
            line: index + 1,
            problem,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [arrival, seq, ts] = fields.as_slice() else {
            return Err(err(LineProblem::FieldCount(fields.len())));
        };
        let arrival_us = parse_millis(arrival).ok_or_else(|| err(LineProblem::BadArrival))?;
        let seq = seq.parse().map_err(|_| err(LineProblem::BadSeq))?;
        let rtp_ts = ts.parse().map_err(|_| err(LineProblem::BadTimestamp))?;
        if packets
            .last()
            .is_some_and(|p: &TracePacket| p.arrival_us > arrival_us)
        {
            return Err(err(LineProblem::OutOfOrder));
        }
        packets.push(TracePacket {
            arrival_us,
            seq,
            rtp_ts,
        });
    }
    Ok(packets)
}

/// Formats packets as a trace CSV (header included).
pub fn to_csv(packets: &[TracePacket]) -> String {
    let mut csv = String::from(HEADER);
    csv.push('\n');
    for p in packets {
        csv.push_str(&format!(
            "{},{},{}\n",
            Millis(p.arrival_us),
            p.seq,
            p.rtp_ts
        ));
    }
    csv
}

/// Replays `packets` (in arrival order) through a jitter buffer in virtual time.
pub fn simulate(packets: &[TracePacket], cfg: JitterConfig) -> Vec<Tick> {
    let (Some(first), Some(last)) = (packets.first(), packets.last()) else {
        return Vec::new();
    };
    let mut buffer = JitterBuffer::new(cfg);
    // Any instant serves as the origin of the trace's clock; only differences are used.
    #[allow(clippy::disallowed_methods)]
    let origin = Instant::now();
    let at = |us: i64| origin + Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(0));
    let drain_ticks = (buffer.config().max_packets as i64 + 2) * 2;
    let mut ticks = Vec::new();
    let mut pcm = SILENCE;
    let mut frame = SILENCE;
    let mut next = 0;
    let mut newest = (first.seq.wrapping_sub(1), first.rtp_ts.wrapping_sub(160));
    for k in 0.. {
        let tick_us = first.arrival_us + TICK_US * k;
        while let Some(p) = packets.get(next).filter(|p| p.arrival_us <= tick_us) {
            speech_like(p.rtp_ts, &mut pcm);
            let step = p.seq.wrapping_sub(newest.0) as i16;
            let marker = step == 1 && p.rtp_ts.wrapping_sub(newest.1) > 160;
            if step > 0 {
                newest = (p.seq, p.rtp_ts);
            }
            buffer.push(at(p.arrival_us), p.seq, p.rtp_ts, marker, TRACE_SSRC, &pcm);
            next += 1;
        }
        let all_in = next >= packets.len();
        if all_in && (buffer.is_drained() || tick_us > last.arrival_us + drain_ticks * TICK_US) {
            break;
        }
        let seq = match buffer.pop(at(tick_us), &mut frame) {
            Playout::Played { seq } => Some(seq),
            Playout::Concealed | Playout::Silence => None,
        };
        let position = buffer.last_position();
        let sample_us = |samples: usize| i64::try_from(samples).unwrap_or(0) * 125;
        ticks.push(Tick {
            tick_us,
            seq,
            lag_us: sample_us(position.lag),
            merged: position.merged.map(|(seq, at)| (seq, sample_us(at))),
        });
    }
    ticks
}

/// Fills `out` with the synthetic speech for the frame starting at RTP time `ts`.
pub fn speech_like(ts: u32, out: &mut Frame) {
    // One period of a 125 Hz voiced tone (64 samples) with six harmonics.
    let mut period = [0.0f32; 64];
    for (i, p) in period.iter_mut().enumerate() {
        *p = (1..=6)
            .map(|h| (2.0 * std::f32::consts::PI * (h * i) as f32 / 64.0).sin() / h as f32)
            .sum();
    }
    for (i, s) in out.iter_mut().enumerate() {
        let n = u64::from(ts) + i as u64;
        // 400 ms syllable cycle: 250 ms voiced under a triangular envelope, 150 ms pause.
        let phase = (n % 3200) as f32 / 2000.0;
        let envelope = if phase < 1.0 {
            1.0 - (2.0 * phase - 1.0).abs()
        } else {
            0.0
        };
        *s = (envelope * period[(n % 64) as usize] * 8000.0) as i16;
    }
}

/// µs printed as milliseconds, with up to three decimals when not whole.
struct Millis(i64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ms, frac) = (self.0.div_euclid(1000), self.0.rem_euclid(1000));
        if frac == 0 {
            write!(f, "{ms}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{ms}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Parses non-negative milliseconds with up to three decimals into µs.
fn parse_millis(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) || text.ends_with('.') {
        return None;
    }
    let ms: i64 = whole.parse().ok()?;
    let frac_us: i64 = format!("{frac:0<3}").parse().ok()?;
    ms.checked_mul(1000)?.checked_add(frac_us)
}

/// A packet stream generated as time goes: packet `n` is sent at `20·n` ms and arrives
/// `delay(n)` ms later, or never when `delay(n)` is `None`. Delays beyond
/// [`Arrivals::MAX_DELAY_MS`] are cut to it. Nothing allocates.
#[derive(Clone, Debug)]
pub struct Arrivals<F> {
    delay: F,
    /// Packets sent so far.
    sent: u64,
    /// Packets sent but not handed over yet: (arrival ms, index).
    in_flight: [(u64, u64); 8],
    len: usize,
}

impl<F: Fn(u64) -> Option<u64>> Arrivals<F> {
    /// Longest delay modelled: at most seven packets are in flight at once.
    pub const MAX_DELAY_MS: u64 = 120;

    /// A stream whose packet `n` is `delay(n)` ms late (`None`: lost).
    pub fn new(delay: F) -> Self {
        Self {
            delay,
            sent: 0,
            in_flight: [(0, 0); 8],
            len: 0,
        }
    }

    /// The earliest packet that has arrived by `now_ms` and was not handed over yet, as
    /// (index, arrival ms); ties go to the lower index. Call with non-decreasing times.
    pub fn next_by(&mut self, now_ms: u64) -> Option<(u64, u64)> {
        while 20 * self.sent <= now_ms {
            let n = self.sent;
            self.sent += 1;
            if let Some(delay) = (self.delay)(n)
                && let Some(slot) = self.in_flight.get_mut(self.len)
            {
                *slot = (20 * n + delay.min(Self::MAX_DELAY_MS), n);
                self.len += 1;
            }
        }
        let flying = self.in_flight.get(..self.len)?;
        let (i, &(at, n)) = flying.iter().enumerate().min_by_key(|&(_, &p)| p)?;
        if at > now_ms {
            return None;
        }
        self.len -= 1;
        self.in_flight.swap(i, self.len);
        Some((n, at))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(csv: &str) -> String {
        let mut out = Vec::new();
        run_trace(csv, JitterConfig::default(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn clean_trace_plays_every_frame_in_order_after_initial_buffering() {
        let mut csv = String::from("arrival_ms,seq,rtp_ts\n");
        for k in 0..50u32 {
            csv.push_str(&format!(
                "{},{},{}\n",
                1000 + 20 * k,
                65530u16.wrapping_add(k as u16),
                160 * k
            ));
        }
        let out = run(&csv);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("1000,"));
        let played: Vec<u16> = lines
            .iter()
            .flat_map(|l| l.split_once(',').unwrap().1.split('+'))
            .filter_map(|seq| seq.parse().ok())
            .collect();
        let expected: Vec<u16> = (0..50u16).map(|k| 65530u16.wrapping_add(k)).collect();
        assert_eq!(played, expected);
        // Only the initial buffering ticks are `-`, and output stops once drained (a tick that
        // compressed two frames into one plays both).
        let gaps = lines.iter().take_while(|l| l.ends_with(",-")).count();
        let merged = lines.iter().filter(|l| l.contains('+')).count();
        assert_eq!(gaps + 50, lines.len() + merged);
        assert!(gaps <= 3, "{gaps} ticks of initial buffering");
    }

    #[test]
    fn ticks_are_20_ms_apart_from_the_first_arrival_and_keep_decimals() {
        let out = run("arrival_ms,seq,rtp_ts\n5.5,1,0\n25.5,2,160\n");
        for (k, line) in out.lines().enumerate() {
            let tick = line.split_once(',').unwrap().0;
            let expected = Millis(5500 + 20_000 * k as i64).to_string();
            assert_eq!(tick, expected);
        }
        assert!(out.starts_with("5.5,"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let cases = [
            ("seq,arrival\n", 1, LineProblem::MissingHeader),
            (
                "arrival_ms,seq,rtp_ts\n0,1,0\n20,2\n",
                3,
                LineProblem::FieldCount(2),
            ),
            (
                "arrival_ms,seq,rtp_ts\n-1,1,0\n",
                2,
                LineProblem::BadArrival,
            ),
            (
                "arrival_ms,seq,rtp_ts\n1.2345,1,0\n",
                2,
                LineProblem::BadArrival,
            ),
            ("arrival_ms,seq,rtp_ts\n0,70000,0\n", 2, LineProblem::BadSeq),
            (
                "arrival_ms,seq,rtp_ts\n0,1,x\n",
                2,
                LineProblem::BadTimestamp,
            ),
            (
                "arrival_ms,seq,rtp_ts\n\n30,1,0\n20,2,160\n",
                4,
                LineProblem::OutOfOrder,
            ),
        ];
        for (csv, line, problem) in cases {
            match run_trace(csv, JitterConfig::default(), &mut Vec::new()) {
                Err(TraceError::Line {
                    line: l,
                    problem: p,
                }) => {
                    assert_eq!((l, p), (line, problem.clone()), "{csv:?}")
                }
                other => panic!("{csv:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn arrivals_come_in_arrival_order_and_never_early() {
        // Packet n is 0–59 ms late, every tenth lost.
        let delay = |n: u64| (n % 10 != 3).then_some((n * 37) % 60);
        let mut arrivals = Arrivals::new(delay);
        let mut got = Vec::new();
        for now in (0..2000).step_by(7) {
            while let Some((n, at)) = arrivals.next_by(now) {
                assert!(
                    at <= now && at == 20 * n + delay(n).unwrap(),
                    "{n} at {at}, {now}"
                );
                got.push((at, n));
            }
        }
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted);
        let last = (0..2000).step_by(7).last().unwrap();
        let expected: Vec<u64> = (0..100)
            .filter(|&n| delay(n).is_some_and(|d| 20 * n + d <= last))
            .collect();
        let mut indices: Vec<u64> = got.iter().map(|&(_, n)| n).collect();
        indices.sort_unstable();
        assert_eq!(indices, expected);
    }

    #[test]
    fn header_only_trace_prints_nothing() {
        assert_eq!(run("arrival_ms,seq,rtp_ts\n"), "");
    }

    #[test]
    fn csv_round_trips_through_the_parser() {
        let packets = traces::generate(traces::Family::Pareto, 2, 7);
        assert_eq!(parse_trace(&to_csv(&packets)).unwrap(), packets);
    }
}
