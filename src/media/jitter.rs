//! The adaptive jitter buffer: turns one RTP audio stream's packets, as they arrive, into one
//! 20 ms frame per playout tick — real audio, concealment ([`crate::media::plc`]) or silence.
//!
//! Packets are placed on the stream's timestamp grid (RFC 3550 §5.1), in 10 ms half-slots, so
//! reordering, 10–60 ms packets and timestamp gaps (DTX) need no special cases. Sequence numbers
//! are extended across wrap and validated as in RFC 3550 §A.1 (a jump in numbering is believed
//! only once the next packet follows it); they also detect duplicates. A new SSRC, a timestamp
//! that runs backwards, or one that leaps more than three seconds restarts the stream.
//!
//! Timing is measured, never assumed. A frame is due once `now − media time` reaches the
//! playout offset: the largest of three delays over the last 512 packets (~10 s; kept as
//! incremental histograms by the `delay` submodule, so a packet costs a few bin steps):
//! - `coverage_permille` (default 95 %) of their relative delays (arrival minus media time);
//! - the delay that the ITU-T G.107 E-model rates best for them (§7.3 Idd of 150 ms plus the
//!   delay, plus §7.4 Ie,eff for G.711 with PLC of the share of packets later than it), chosen
//!   again every half second with one pass over the histogram: a lost frame costs as much R
//!   as tens of ms of delay, so a heavy tail is covered, while a rare stall is not;
//! - 99 % of what each packet that arrived after a later one needed for that later one not to
//!   be played first (a packet that arrived in order needs nothing): reordering is what loses
//!   packets outright, so it is covered more tightly than plain lateness.
//!
//! The offset lies between `min_delay_ms` (default 0) and `max_delay_ms` above the fastest
//! recent packet; following it also tracks sender clock drift. The offset actually played
//! changes only at safe points:
//! - a frame missing when due is waited for, concealing, until the frame after it is due (or,
//!   in a stream that reorders, where the missing one is likely on its way, 30 ms overdue);
//!   while nothing after it has arrived (a stall: its frames arrive together at its end) it is
//!   waited for up to 300 ms (or `min_delay_ms` if larger, `max_delay_ms` if smaller); once
//!   one was given up, missing frames before a present one are not waited for beyond 20 ms;
//! - a frame that is here is played if less than 300 ms late, even after a gap; if it came in
//!   order 25–50 ms late, the delay it needed is kept for 10 s, by when the window has seen it;
//! - playout 20 ms or more behind the target plays two frames in one tick, compressed
//!   ([`crate::media::accelerate`]: whole pitch periods removed, or quiet audio cut), so a
//!   stall's backlog is paid back without losing a frame;
//! - a gap (loss, DTX silence, a talkspurt's marker) re-aligns playout to the target for free;
//! - loud audio that cannot be compressed (not periodic) is dropped when playout is 70 ms
//!   late, at most every 100 ms, cross-faded, and budgeted as lost audio: one per 400 frames
//!   played (0.25 %), at most three banked; concealment is inserted after a quiet frame while
//!   playout is 10 ms early (30 ms in loud audio, at most every 100 ms), which costs only
//!   delay and is not limited.
//!
//! Everything is allocated in [`JitterBuffer::new`]; `push` and `pop` never allocate. The core
//! never reads the clock: callers pass `now`.

mod delay;

use crate::media::accelerate::Stretch;
use crate::media::frame::{FRAME_SAMPLES, Frame, SILENCE};
use crate::media::plc::{BLOCK, Concealer, to_sample};
use delay::DelayWindow;
use std::time::{Duration, Instant};

/// Samples per half-slot: 10 ms, the smallest packet accepted.
const UNIT: usize = BLOCK;
/// Duration of one sample (8 kHz) in µs.
const SAMPLE_US: i64 = 125;
/// Duration of one frame in µs.
const FRAME_US: i64 = FRAME_SAMPLES as i64 * SAMPLE_US;
/// Packets whose delays form the target window (~10 s of 20 ms packets).
const DELAY_WINDOW: usize = 512;
/// Pops between two choices of the E-model's best delay (half a second).
const RATE_EVERY: u32 = 25;
/// Below this many delay samples the initial delay is a floor for the target.
const WARMUP_PACKETS: usize = 50;
/// Share of recent packets whose reordering the offset must absorb, in per mille.
const REORDER_COVERAGE_PERMILLE: u16 = 990;
/// Share of recent packets that must have arrived after a later one (5 per mille) for a missing
/// frame to be waited for while the next one is due.
const REORDERING_PERMILLE: usize = 5;
/// A frame that comes late in order and needed less than this is played and its delay held;
/// later than this it is played and the backlog compressed away instead.
const PATIENCE_US: i64 = 50_000;
/// A missing frame is waited for while less overdue than this (or `min_delay_ms` if larger,
/// `max_delay_ms` if smaller), concealing: the frames of a stall arrive together at its end,
/// and compressing them costs less than losing them.
const STALL_PATIENCE_US: i64 = 300_000;
/// Late by at least this much (with the stage's carry): compress the next two frames into one
/// tick, where the audio is periodic or quiet.
const ACCEL_MARGIN_US: i64 = 20_000;
/// In a stream that reorders, how late the next frame may get while a missing one is awaited.
const REORDER_WAIT_US: i64 = 30_000;
/// Once a frame was given up, how late a frame may be to resume playout with (or
/// `min_delay_ms` if larger).
const RESUME_US: i64 = 20_000;
/// How long the delay needed by a late frame that was played is kept.
const HOLD_US: i64 = 10_000_000;
/// RFC 3550 §A.1: largest forward jump in sequence numbers still taken as loss.
const MAX_DROPOUT: i64 = 3000;
/// RFC 3550 §A.1: largest backward step in sequence numbers still taken as reordering.
const MAX_MISORDER: i64 = 100;
/// A timestamp leap (in samples) beyond which the stream restarts: 3 s.
const RESYNC_JUMP: i64 = 3 * 8000;
/// Sequence numbers remembered for duplicate detection (more than `MAX_MISORDER`).
const SEEN_WINDOW: i64 = 128;
/// Late by at least a frame and a margin: drop a quiet frame (playout stays after the target,
/// and timer noise around a whole frame of delay is no reason to drop).
const DROP_MARGIN_US: i64 = 25_000;
/// Frames played per drop allowed: drops of in-time frames stay under 0.25 % of frames, as
/// each is lost audio (G.107 counts it like a late frame).
const DROP_EARN: u32 = 400;
/// Drops that may be banked and spent at once (after a stall, to come back down).
const DROP_BURST: u32 = 3;
/// Late by at least this much: drop even a loud frame.
const FORCED_DROP_US: i64 = 70_000;
/// Early by at least this much: insert concealment after a quiet frame.
const INSERT_MARGIN_US: i64 = 10_000;
/// Early by at least this much: insert concealment even in loud audio.
const FORCED_INSERT_US: i64 = 30_000;
/// Frames between two adjustments in loud audio (100 ms).
const LOUD_SPACING: u32 = 5;
/// Samples cross-faded when a frame is dropped.
const DROP_FADE: usize = 40;
/// Mean-square energy below which a frame is quiet in absolute terms (RMS 100, ≈ −50 dBFS).
const QUIET_ENERGY: f32 = 100.0 * 100.0;
/// A frame 15 dB below the recent speech level is quiet too.
const QUIET_RATIO: f32 = 1.0 / 32.0;
/// Per-frame decay of the speech level tracker (time constant ≈ 4 s).
const LEVEL_DECAY: f32 = 0.995;

/// Jitter buffer settings; every field is fixed at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// Least playout delay above the fastest recent packet, in ms (default 0: the measured
    /// quantiles alone set the margin). A missing or late frame is also waited for this long.
    pub min_delay_ms: u32,
    /// Most playout delay above the fastest recent packet, in ms (default 500). A frame not
    /// there by then is given up as lost.
    pub max_delay_ms: u32,
    /// Capacity in 20 ms slots (default 64, i.e. 1.28 s; a 60 ms packet fills three). Raised to
    /// `max_delay_ms` plus 80 ms if smaller, so waiting up to the maximum delay always fits.
    pub max_packets: usize,
    /// Target delay before 50 packets have been measured, in ms (default 20: the first packet
    /// is played with a margin, so that the second is not late on a perfect network); after a
    /// restart the previous stream's target is used instead.
    pub initial_delay_ms: u32,
    /// Share of recent packets' delays the playout delay must cover at least, in per mille
    /// (default 950); reordered packets are covered to 99 % regardless, and the delay the
    /// G.107 E-model rates best for the window is covered whenever it is higher.
    pub coverage_permille: u16,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 0,
            max_delay_ms: 500,
            max_packets: 64,
            initial_delay_ms: 20,
            coverage_permille: 950,
        }
    }
}
/// What [`JitterBuffer::pop`] put in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Playout {
    /// Received audio. `seq` is the packet that supplied the frame's start (or its second half,
    /// if only that arrived; the other half is concealed).
    Played {
        /// RTP sequence number of that packet.
        seq: u16,
    },
    /// Synthesized audio covering a loss, a late packet or a delay increase.
    Concealed,
    /// Zeros: before the first frame, or once concealment has faded out (60 ms into a gap).
    Silence,
}

/// Counters and gauges of one jitter buffer (all streams since construction).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Calls to `push`.
    pub pushed: u64,
    /// Frames popped as [`Playout::Played`].
    pub played: u64,
    /// Frames popped as [`Playout::Concealed`].
    pub concealed: u64,
    /// Frames popped as [`Playout::Silence`].
    pub silence: u64,
    /// Packets that arrived after their slot had been played, concealed or given up, and
    /// frames given up after arriving too late to resume playout with.
    pub late: u64,
    /// Packets received twice (by sequence number, or for an already filled slot).
    pub duplicates: u64,
    /// Packets too far ahead of playout to fit in the buffer.
    pub dropped_overflow: u64,
    /// Packets with a sequence number far from the stream's, dropped while on probation.
    pub strays: u64,
    /// Packets with fewer than 80 samples (10 ms), dropped.
    pub malformed: u64,
    /// Stream restarts: new SSRC, timestamp jump, or confirmed sequence jump.
    pub resets: u64,
    /// Frames received in time but dropped to reduce the delay.
    pub discarded: u64,
    /// Concealment frames inserted to increase the delay (also counted in `concealed`).
    pub inserted: u64,
    /// Ticks that played two received frames compressed into one (both counted in `played`).
    pub accelerated: u64,
    /// Current target playout delay above the fastest recent packet, in ms.
    pub target_delay_ms: u32,
    /// Audio buffered from the next frame to play up to the newest received, in ms.
    pub buffered_ms: u32,
}

/// Where the received frames of the last [`JitterBuffer::pop`] start in the frame it output,
/// in samples from its start: what the time-scale stage carried over delays them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopPosition {
    /// Where the frame reported by `pop` (or the concealment) starts.
    pub lag: usize,
    /// A second received frame compressed into the same tick, and where what is left of it
    /// starts (it may start in the next tick's output when this exceeds a frame).
    pub merged: Option<(u16, usize)>,
}

/// A 20 ms slot on the stream's timestamp grid; frame 0 starts at the first packet's timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FrameIndex(i64);

impl FrameIndex {
    /// Media time of the frame's start, in µs from the stream's first packet.
    fn media_us(self) -> i64 {
        self.0 * FRAME_US
    }
}

/// An RTP sequence number extended across wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ExtSeq(i64);

/// One 20 ms slot of audio, filled by up to two 10 ms halves.
#[derive(Clone, Debug)]
struct Slot {
    /// The frame held, or `None` when free.
    frame: Option<FrameIndex>,
    /// Bit 0: first half present; bit 1: second half present.
    filled: u8,
    /// A packet starting here had the marker bit (talkspurt start).
    marker: bool,
    /// The packet that filled the first half (or the second, alone) arrived in order: nothing
    /// later had arrived before it.
    in_order: bool,
    /// Sequence numbers of the packets that filled each half.
    seq: [u16; 2],
    /// The audio; only the halves marked in `filled` are meaningful.
    pcm: Frame,
}

impl Slot {
    const FREE: Slot = Slot {
        frame: None,
        filled: 0,
        marker: false,
        in_order: false,
        seq: [0; 2],
        pcm: SILENCE,
    };

    fn holds(&self, frame: FrameIndex) -> bool {
        self.frame == Some(frame) && self.filled != 0
    }

    fn complete(&self, frame: FrameIndex) -> bool {
        self.frame == Some(frame) && self.filled == 0b11
    }

    /// Marks the slot free without touching its audio.
    fn free(&mut self) {
        self.frame = None;
        self.filled = 0;
        self.marker = false;
    }
}

/// The numbering and timing of the current RTP stream.
#[derive(Clone, Debug)]
struct Stream {
    ssrc: u32,
    /// Arrival of the stream's first packet: zero of the delay clock.
    epoch: Instant,
    /// Extended timestamp of frame 0's start.
    base_ts: i64,
    highest_seq: ExtSeq,
    /// Extended timestamp of the packet with `highest_seq`.
    highest_ts: i64,
    /// Bit i set: sequence number `highest_seq - i` was received.
    seen: u128,
}

/// A packet whose sequence number jumped; believed only if the next one follows it.
#[derive(Clone, Copy, Debug)]
struct Probation {
    seq: u16,
    ts: u32,
}

/// Where an accepted packet goes.
struct Admitted {
    /// Extended RTP timestamp of its first sample.
    ext_ts: i64,
    /// Whether it is the newest packet of the stream so far.
    newest: bool,
}

/// The adaptive jitter buffer of one call leg. See the module docs.
#[derive(Clone, Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    /// Ring of slots, a power of two long; frame `f` lives in `slots[f & mask]`.
    slots: Box<[Slot]>,
    mask: usize,
    /// Frames from `next_play` on that may be stored (`cfg.max_packets`).
    cap: i64,
    stream: Option<Stream>,
    probation: Option<Probation>,
    /// The frame the next `pop` plays (or waits for).
    next_play: FrameIndex,
    /// Whether this stream's first frame has been played (initial buffering is over).
    playing: bool,
    /// Highest frame holding audio; meaningful while `buffered > 0`.
    newest: FrameIndex,
    /// Slots holding audio for frames at or after `next_play`.
    buffered: usize,
    /// Relative delays of recent packets.
    delays: DelayWindow,
    /// For each recent packet that arrived after a later one, the delay it needed for that
    /// later one not to be played first; an entry without a delay for packets in order.
    reorder_needs: DelayWindow,
    plc: Concealer,
    /// G.107 delay impairment Idd for 150 ms + `i` ms of buffer delay, `i` in 0..1024.
    delay_cost: Box<[f32]>,
    /// The delay above the floor that the E-model rates best for the window, and the pops
    /// until it is chosen again.
    rated: (i64, u32),
    /// Target used until the delay window warms up.
    initial_us: i64,
    /// Pops since the last drop or insertion.
    since_adjust: u32,
    /// Slowly decaying peak of played frames' mean-square energy.
    speech_level: f32,
    /// Whether the last played frame was quiet.
    last_quiet: bool,
    /// Whether the last pop played received audio.
    last_played: bool,
    /// A frame was given up since the last one played: playout resumes on time.
    outage: bool,
    /// The last frame waited for: missing when it was due.
    waited: Option<FrameIndex>,
    /// Frames played towards the next drop: a drop needs [`DROP_EARN`] and spends them; at
    /// most [`DROP_BURST`] drops' worth is banked.
    drop_credit: u32,
    /// Playout offset kept after a late frame was played, and until when (stream µs).
    hold: (i64, i64),
    /// Frames go through here to be played: it compresses a backlog, carrying the remainder.
    stretch: Stretch,
    /// Where the last pop's frames start in its output.
    position: PopPosition,
    stats: JitterStats,
}

impl JitterBuffer {
    /// Builds a buffer; all of its memory is allocated here.
    pub fn new(cfg: JitterConfig) -> Self {
        let max_delay_ms = cfg.max_delay_ms.max(cfg.min_delay_ms);
        let needed = (max_delay_ms as usize).div_ceil(20) + 4;
        let cfg = JitterConfig {
            max_delay_ms,
            max_packets: cfg.max_packets.max(needed),
            coverage_permille: cfg.coverage_permille.min(1000),
            ..cfg
        };
        let ring = cfg.max_packets.next_power_of_two();
        Self {
            slots: vec![Slot::FREE; ring].into_boxed_slice(),
            mask: ring - 1,
            cap: cfg.max_packets as i64,
            stream: None,
            probation: None,
            next_play: FrameIndex(0),
            playing: false,
            newest: FrameIndex(0),
            buffered: 0,
            delays: DelayWindow::new(DELAY_WINDOW, cfg.coverage_permille),
            reorder_needs: DelayWindow::new(DELAY_WINDOW, REORDER_COVERAGE_PERMILLE),
            plc: Concealer::new(),
            delay_cost: (0..1024)
                .map(|ms| delay_impairment(150.0 + ms as f32))
                .collect(),
            rated: (0, 0),
            initial_us: i64::from(cfg.initial_delay_ms) * 1000,
            since_adjust: 0,
            speech_level: 0.0,
            last_quiet: true,
            last_played: false,
            outage: false,
            waited: None,
            drop_credit: 0,
            hold: (0, i64::MIN),
            stretch: Stretch::new(),
            position: PopPosition::default(),
            stats: JitterStats {
                target_delay_ms: cfg.initial_delay_ms.clamp(cfg.min_delay_ms, max_delay_ms),
                ..JitterStats::default()
            },
            cfg,
        }
    }

    /// Takes one received packet's PCM (decoded, 8 kHz). `pcm` is cut into 10 ms halves of the
    /// 20 ms slots on the timestamp grid, so any multiple of 80 samples works (10–60 ms ptime);
    /// a trailing partial 10 ms is ignored and a packet under 10 ms is dropped as malformed.
    /// `marker` starts a talkspurt; a new `ssrc` restarts the stream. Never allocates.
    pub fn push(&mut self, now: Instant, seq: u16, ts: u32, marker: bool, ssrc: u32, pcm: &[i16]) {
        self.stats.pushed += 1;
        if pcm.len() < UNIT {
            self.stats.malformed += 1;
            return;
        }
        let Some(admitted) = self.admit(now, seq, ts, ssrc) else {
            return;
        };
        let Some(stream) = &self.stream else {
            return;
        };
        let mut media = admitted.ext_ts - stream.base_ts;
        let first_frame = (media + UNIT as i64 / 2).div_euclid(FRAME_SAMPLES as i64);
        if admitted.newest && self.playing && first_frame - self.next_play.0 >= self.cap {
            // The newest packet lies beyond the buffer: the sender's timeline moved on.
            self.restart(now, seq, ts, ssrc);
            media = 0;
        }
        if let Some(stream) = &self.stream {
            let arrival_us = micros_between(stream.epoch, now);
            self.delays.push(arrival_us - media * SAMPLE_US);
            if admitted.newest {
                self.reorder_needs.push_none();
            } else {
                let overtaker = self.nearest_later(FrameIndex(first_frame));
                self.reorder_needs.push(arrival_us - overtaker.media_us());
            }
        }
        self.place(seq, marker, admitted.newest, media, pcm);
    }

    /// Produces the frame for this 20 ms tick into `out`. Never allocates.
    pub fn pop(&mut self, now: Instant, out: &mut Frame) -> Playout {
        self.position = PopPosition {
            lag: self.stretch.carried(),
            merged: None,
        };
        let playout = self.next_frames(now);
        if !self.stretch.emit(out) {
            *out = SILENCE;
        }
        playout
    }

    /// Where the received frames of the last `pop` start in its output.
    pub fn last_position(&self) -> PopPosition {
        self.position
    }

    /// Feeds this tick's frame (two when compressing) into the stage.
    fn next_frames(&mut self, now: Instant) -> Playout {
        self.since_adjust = self.since_adjust.saturating_add(1);
        let Some(stream) = &self.stream else {
            return self.fill_gap();
        };
        let now_us = micros_between(stream.epoch, now);
        if self.rated.1 == 0 || self.delays.len() < WARMUP_PACKETS {
            self.rated = (self.best_rated(), RATE_EVERY);
        }
        self.rated.1 -= 1;
        let (floor, mut offset) = self.playout_offset();
        if now_us < self.hold.1 {
            offset = offset.max(self.hold.0);
        }
        self.stats.target_delay_ms = u32::try_from((offset - floor) / 1000).unwrap_or(u32::MAX);
        let playout = self.choose(now_us, floor, offset);
        self.last_played = matches!(playout, Playout::Played { .. });
        self.stats.buffered_ms = if self.buffered == 0 {
            0
        } else {
            u32::try_from((self.newest.0 - self.next_play.0 + 1) * 20).unwrap_or(u32::MAX)
        };
        playout
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// Current target playout delay above the fastest recent packet, in ms.
    pub fn target_delay_ms(&self) -> u32 {
        self.stats.target_delay_ms
    }

    /// When the next frame to play falls due (its media time plus the playout offset), while
    /// playout runs on received audio: the caller's playout clock can tick just then instead of
    /// up to a frame later. `None` before playout starts, while nothing is buffered and after a
    /// frame was given up (then playout is re-aligned by the buffer itself).
    pub fn next_due(&self) -> Option<Instant> {
        let stream = self.stream.as_ref()?;
        if !self.playing || self.buffered == 0 || self.outage {
            return None;
        }
        let (_, offset) = self.playout_offset();
        let mut due_us = self.next_play.media_us() + offset;
        if due_us < self.hold.1 {
            // `pop` keeps the held offset until then.
            due_us = self.next_play.media_us() + offset.max(self.hold.0);
        }
        at_micros(stream.epoch, due_us)
    }

    /// True when no received audio is waiting to be played.
    pub fn is_drained(&self) -> bool {
        self.buffered == 0
    }

    /// The configuration in force (after `new` raised the capacity if needed).
    pub fn config(&self) -> &JitterConfig {
        &self.cfg
    }

    /// Validates the packet's numbering against the stream; `None` if it is not to be stored.
    fn admit(&mut self, now: Instant, seq: u16, ts: u32, ssrc: u32) -> Option<Admitted> {
        let restart = Some(Admitted {
            ext_ts: i64::from(ts),
            newest: true,
        });
        let Some(stream) = self.stream.as_mut().filter(|s| s.ssrc == ssrc) else {
            if self.stream.is_some() {
                self.restart(now, seq, ts, ssrc);
            } else {
                self.begin(now, seq, ts, ssrc);
            }
            return restart;
        };
        let seq_delta = i64::from(seq.wrapping_sub(stream.highest_seq.0 as u16) as i16);
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&seq_delta) {
            let follows = self.probation.is_some_and(|p| {
                p.seq.wrapping_add(1) == seq && i64::from(ts.wrapping_sub(p.ts)) <= RESYNC_JUMP
            });
            if follows {
                self.probation = None;
                self.restart(now, seq, ts, ssrc);
                return restart;
            }
            self.probation = Some(Probation { seq, ts });
            self.stats.strays += 1;
            return None;
        }
        self.probation = None;
        let ts_delta = i64::from(ts.wrapping_sub(stream.highest_ts as u32) as i32);
        if seq_delta <= 0 {
            let bit = 1u128 << (-seq_delta).min(SEEN_WINDOW - 1);
            if stream.seen & bit != 0 {
                self.stats.duplicates += 1;
                return None;
            }
            stream.seen |= bit;
            return Some(Admitted {
                ext_ts: stream.highest_ts + ts_delta,
                newest: false,
            });
        }
        if !(0..=RESYNC_JUMP).contains(&ts_delta) {
            self.restart(now, seq, ts, ssrc);
            return restart;
        }
        stream.seen = if seq_delta >= SEEN_WINDOW {
            0
        } else {
            stream.seen << seq_delta
        } | 1;
        stream.highest_seq = ExtSeq(stream.highest_seq.0 + seq_delta);
        stream.highest_ts += ts_delta;
        Some(Admitted {
            ext_ts: stream.highest_ts,
            newest: true,
        })
    }

    /// Starts the first stream.
    fn begin(&mut self, now: Instant, seq: u16, ts: u32, ssrc: u32) {
        self.stream = Some(Stream {
            ssrc,
            epoch: now,
            base_ts: i64::from(ts),
            highest_seq: ExtSeq(i64::from(seq)),
            highest_ts: i64::from(ts),
            seen: 1,
        });
        self.next_play = FrameIndex(0);
        self.playing = false;
        self.outage = false;
        self.waited = None;
        self.hold = (0, i64::MIN);
    }

    /// Drops the current stream's audio and timing and starts over at this packet. The
    /// concealer keeps its history so the old audio fades out; the learned target carries over.
    fn restart(&mut self, now: Instant, seq: u16, ts: u32, ssrc: u32) {
        self.stats.resets += 1;
        if self.delays.len() > 0 {
            let (floor, offset) = self.playout_offset();
            self.initial_us = offset - floor;
        }
        self.slots.iter_mut().for_each(Slot::free);
        self.buffered = 0;
        self.delays.clear();
        self.reorder_needs.clear();
        self.probation = None;
        self.begin(now, seq, ts, ssrc);
    }

    fn slot_index(&self, frame: FrameIndex) -> usize {
        // Two's complement wraps negative frames onto the ring as `rem_euclid` would.
        (frame.0 as usize) & self.mask
    }

    /// Copies the packet's 10 ms halves into their slots.
    fn place(&mut self, seq: u16, marker: bool, in_order: bool, media: i64, pcm: &[i16]) {
        let first_unit = (media + UNIT as i64 / 2).div_euclid(UNIT as i64);
        let (mut late, mut overflow, mut duplicate) = (false, false, false);
        for (i, chunk) in pcm.chunks_exact(UNIT).enumerate() {
            let unit = first_unit + i as i64;
            let frame = FrameIndex(unit.div_euclid(2));
            let half = unit.rem_euclid(2) as usize;
            if !self.playing
                && frame < self.next_play
                && (self.buffered == 0 || self.newest.0 - frame.0 < self.cap)
            {
                // Still buffering the start: an earlier packet moves the start back.
                self.next_play = frame;
            }
            if frame < self.next_play {
                late = true;
                continue;
            }
            if frame.0 - self.next_play.0 >= self.cap {
                overflow = true;
                continue;
            }
            let index = self.slot_index(frame);
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.frame != Some(frame) {
                if slot.filled != 0 {
                    self.buffered = self.buffered.saturating_sub(1);
                }
                slot.free();
                slot.frame = Some(frame);
            }
            let bit = 1u8 << half;
            if slot.filled & bit != 0 {
                duplicate = true;
                continue;
            }
            if slot.filled == 0 {
                if self.buffered == 0 || frame > self.newest {
                    self.newest = frame;
                }
                self.buffered += 1;
            }
            if half == 0 || slot.filled == 0 {
                slot.in_order = in_order;
            }
            slot.filled |= bit;
            if let Some(s) = slot.seq.get_mut(half) {
                *s = seq;
            }
            slot.marker |= marker && i == 0;
            if let Some(dst) = slot.pcm.get_mut(half * UNIT..(half + 1) * UNIT) {
                dst.copy_from_slice(chunk);
            }
        }
        self.stats.late += u64::from(late);
        self.stats.dropped_overflow += u64::from(overflow && !late);
        self.stats.duplicates += u64::from(duplicate && !late && !overflow);
    }

    /// The nearest frame after `frame` that already holds audio (`frame + 1` when it was
    /// played already or cannot be told): the one that overtook a packet for `frame`.
    fn nearest_later(&self, frame: FrameIndex) -> FrameIndex {
        let next = FrameIndex(frame.0 + 1);
        if frame < self.next_play || self.buffered == 0 {
            return next;
        }
        (next.0..=self.newest.0)
            .map(FrameIndex)
            .find(|&f| self.slot(f).is_some_and(|s| s.holds(f)))
            .unwrap_or(next)
    }

    /// The fastest recent delay and the playout offset (media time → play time) in µs.
    fn playout_offset(&self) -> (i64, i64) {
        let floor = self.delays.floor().unwrap_or(0);
        let covered = self
            .delays
            .quantile()
            .unwrap_or(floor)
            .max(floor + self.rated.0);
        let reordered = self.reorder_needs.quantile().unwrap_or(floor);
        let mut target = covered.max(reordered) - floor;
        if self.delays.len() < WARMUP_PACKETS {
            target = target.max(self.initial_us);
        }
        let min = i64::from(self.cfg.min_delay_ms) * 1000;
        let max = i64::from(self.cfg.max_delay_ms) * 1000;
        (floor, floor + target.clamp(min, max))
    }

    /// The delay above the floor that minimizes the G.107 impairments over the window: Idd of
    /// 150 ms plus that delay, plus Ie,eff (G.711 with PLC, random loss) of the share of the
    /// window's packets later than it.
    fn best_rated(&self) -> i64 {
        let total = self.delays.len().max(1) as f32;
        let cost = &self.delay_cost;
        self.delays
            .cheapest(|above_us, later| {
                let idd = cost
                    .get(usize::try_from(above_us / 1000).unwrap_or(0))
                    .copied()
                    .unwrap_or(f32::MAX);
                let ppl = 100.0 * later as f32 / total;
                idd + 95.0 * ppl / (ppl + 25.1)
            })
            .unwrap_or(0)
    }

    /// How late the frame after a missing one may get before the missing one is given up for
    /// it: a frame if the stream reorders (the missing one may be on its way), else nothing.
    fn reorder_wait(&self) -> i64 {
        let reordered = self.reorder_needs.with_delay() * 1000;
        if reordered >= REORDERING_PERMILLE * self.reorder_needs.len().max(1) {
            REORDER_WAIT_US
        } else {
            0
        }
    }

    /// Whether `frame` was waited for while missing, then arrived in order: a late frame
    /// rather than a reordered one or the end of a stall.
    fn straggled(&self, frame: FrameIndex) -> bool {
        self.waited == Some(frame) && self.slot(frame).is_some_and(|s| s.in_order)
    }

    /// Gives up on what playout should no longer wait for: a missing frame later than the
    /// patience, and, when resuming after a gap, a frame that came too late to resume with.
    fn give_up_late(&mut self, now_us: i64, floor: i64, offset: i64) {
        // A configured minimum delay is also waited for, whatever else says to give up.
        let floor_wait = i64::from(self.cfg.min_delay_ms) * 1000;
        let limit = floor + i64::from(self.cfg.max_delay_ms) * 1000;
        let patience = STALL_PATIENCE_US
            .min(i64::from(self.cfg.max_delay_ms) * 1000)
            .max(floor_wait);
        let wait = if self.outage {
            RESUME_US.max(floor_wait)
        } else {
            patience
        };
        if self.buffered == 0 {
            // Nothing to play: move straight to the first frame still worth waiting for (all
            // that comes within the patience is played, even after a gap).
            let first = (now_us - offset - patience).div_euclid(FRAME_US) + 1;
            let first = first.max((now_us - limit).div_euclid(FRAME_US) + 1);
            if first > self.next_play.0 {
                self.next_play = FrameIndex(first);
                self.outage = true;
            }
            return;
        }
        while self.buffered > 0 {
            let head = self.next_play;
            let present = self.head_present();
            let late = now_us - head.media_us() - offset;
            let hopeless = now_us - head.media_us() > limit;
            let gone = if present && self.last_played {
                false
            } else if present {
                // A frame that is here is played while within patience, even after an outage
                // (the rest of a stall, a talkspurt that resumed later): giving it up loses it
                // for certain, playing it costs delay that compression wins back.
                late >= patience || hopeless
            } else {
                late >= wait || hopeless
            };
            if !gone {
                break;
            }
            if present {
                self.stats.late += 1;
            }
            self.outage = true;
            self.advance();
        }
    }

    /// Decides this tick's frame.
    fn choose(&mut self, now_us: i64, floor: i64, offset: i64) -> Playout {
        // How far past its due time a frame is: ≥ 0 once it should be playing.
        let lateness = |frame: FrameIndex| now_us - frame.media_us() - offset;
        // What the stage carries plays before the next frame: it is that much later.
        let carried_us = self.stretch.carried() as i64 * SAMPLE_US;
        if !self.playing {
            return match self.earliest_buffered() {
                Some(first) if lateness(first) >= 0 => {
                    self.skip_to(first);
                    self.playing = true;
                    self.play_head(None)
                }
                _ => self.fill_gap(),
            };
        }
        self.give_up_late(now_us, floor, offset);
        if !self.head_present() {
            match self.earliest_buffered() {
                // Everything before the next received frame is lost or a silence: resume at
                // that frame's own time, which re-aligns the delay to the target.
                Some(next) if lateness(next) >= self.reorder_wait() => self.skip_to(next),
                // Wait for the missing frame (a delay spike), concealing.
                _ => {
                    if lateness(self.next_play) >= 0 {
                        self.waited = Some(self.next_play);
                    }
                    return self.fill_gap();
                }
            }
        }
        let mut error = lateness(self.next_play) + carried_us;
        if !self.last_played
            && self.straggled(self.next_play)
            && (DROP_MARGIN_US..PATIENCE_US).contains(&error)
        {
            // A late frame is played after all: keep the delay it needed for a while.
            self.hold = (now_us - self.next_play.media_us(), now_us + HOLD_US);
            error = 0;
        }
        let head = self.slot(self.next_play);
        if head.is_some_and(|s| s.marker) && !self.last_played && error < 0 {
            // A talkspurt starts after silence, early: hold it until its time.
            return self.fill_gap();
        }
        let loud_ok = self.since_adjust >= LOUD_SPACING;
        let next = FrameIndex(self.next_play.0 + 1);
        let can_drop = head.is_some_and(|s| s.complete(self.next_play))
            && self.slot(next).is_some_and(|s| s.complete(next));
        if can_drop
            && error >= ACCEL_MARGIN_US
            && let Some(playout) = self.accelerate()
        {
            return playout;
        }
        let head = self.slot(self.next_play);
        // Not on the first frame after a gap: the concealment carried before it keeps it from
        // being compressed on this tick, not on the next.
        if can_drop && self.last_played && error >= DROP_MARGIN_US && self.drop_credit >= DROP_EARN
        {
            let quiet = head.is_some_and(|s| self.is_quiet(&s.pcm));
            if quiet || (error >= FORCED_DROP_US && loud_ok) {
                let discarded = head.map_or(SILENCE, |s| s.pcm);
                self.since_adjust = 0;
                self.drop_credit -= DROP_EARN;
                self.stats.discarded += 1;
                self.advance();
                return self.play_head(Some(&discarded));
            }
        }
        if error <= -INSERT_MARGIN_US
            && (self.last_quiet || (error <= -FORCED_INSERT_US && loud_ok))
        {
            self.since_adjust = 0;
            self.stats.inserted += 1;
            return self.fill_gap();
        }
        self.play_head(None)
    }

    /// Plays the head and the frame after it compressed into one tick, if the audio allows
    /// (periodic or quiet); `None`, having done nothing, if not.
    fn accelerate(&mut self) -> Option<Playout> {
        let next = FrameIndex(self.next_play.0 + 1);
        let (Some(a), Some(b)) = (
            self.slot(self.next_play).map(|s| s.pcm),
            self.slot(next).map(|s| s.pcm),
        ) else {
            return None;
        };
        let quiet_below = QUIET_ENERGY.max(self.speech_level * QUIET_RATIO);
        let cut = self.stretch.plan(&a, &b, quiet_below)?;
        let first = self.play_head(None);
        let second_at = self.stretch.carried();
        if let Playout::Played { seq } = self.play_head(None) {
            self.position.merged = Some((seq, second_at.saturating_sub(cut.len)));
        }
        self.stretch.apply(cut);
        self.since_adjust = 0;
        self.stats.accelerated += 1;
        Some(first)
    }

    fn slot(&self, frame: FrameIndex) -> Option<&Slot> {
        self.slots
            .get(self.slot_index(frame))
            .filter(|s| s.frame == Some(frame))
    }

    fn head_present(&self) -> bool {
        self.slot(self.next_play)
            .is_some_and(|s| s.holds(self.next_play))
    }

    /// The first frame at or after `next_play` holding audio.
    fn earliest_buffered(&self) -> Option<FrameIndex> {
        if self.buffered == 0 {
            return None;
        }
        (self.next_play.0..=self.newest.0)
            .map(FrameIndex)
            .find(|&f| self.slot(f).is_some_and(|s| s.holds(f)))
    }

    /// Frees the slot of `next_play` and moves on by one frame.
    fn advance(&mut self) {
        let frame = self.next_play;
        let index = self.slot_index(frame);
        if let Some(slot) = self.slots.get_mut(index)
            && slot.frame == Some(frame)
        {
            if slot.filled != 0 {
                self.buffered = self.buffered.saturating_sub(1);
            }
            slot.free();
        }
        self.next_play = FrameIndex(frame.0 + 1);
    }

    fn skip_to(&mut self, frame: FrameIndex) {
        while self.next_play < frame {
            self.advance();
        }
    }

    /// Plays `next_play` into the stage, concealing a missing half; `fade_from` is a dropped
    /// frame to cross-fade from.
    fn play_head(&mut self, fade_from: Option<&Frame>) -> Playout {
        let mut frame = SILENCE;
        let out = &mut frame;
        let (filled, seq) = match self.slot(self.next_play) {
            Some(slot) => {
                *out = slot.pcm;
                let seq = if slot.filled & 1 != 0 {
                    slot.seq[0]
                } else {
                    slot.seq[1]
                };
                (slot.filled, seq)
            }
            None => (0, 0),
        };
        self.advance();
        self.outage = false;
        if let Some(from) = fade_from {
            let step = 1.0 / (DROP_FADE + 1) as f32;
            for (i, (s, &f)) in out.iter_mut().zip(from.iter()).take(DROP_FADE).enumerate() {
                let rise = (i + 1) as f32 * step;
                *s = to_sample(f32::from(*s) * rise + f32::from(f) * (1.0 - rise));
            }
        }
        let (blocks, _) = out.as_chunks_mut::<BLOCK>();
        for (half, block) in blocks.iter_mut().enumerate() {
            if filled & (1 << half) != 0 {
                self.plc.good(block);
            } else {
                self.plc.conceal(block);
            }
        }
        let energy = mean_square(out);
        self.speech_level = (self.speech_level * LEVEL_DECAY).max(energy);
        self.last_quiet = self.quiet_energy(energy);
        self.stats.played += 1;
        self.drop_credit = (self.drop_credit + 1).min(DROP_EARN * DROP_BURST);
        self.stretch.feed(&frame);
        Playout::Played { seq }
    }

    /// Conceals (or, once faded, plays silence) into the stage without consuming a frame.
    fn fill_gap(&mut self) -> Playout {
        let silent = self.plc.is_silent();
        let mut frame = SILENCE;
        let (blocks, _) = frame.as_chunks_mut::<BLOCK>();
        for block in blocks {
            self.plc.conceal(block);
        }
        self.stretch.feed(&frame);
        if silent {
            self.stats.silence += 1;
            Playout::Silence
        } else {
            self.stats.concealed += 1;
            Playout::Concealed
        }
    }

    fn is_quiet(&self, frame: &Frame) -> bool {
        self.quiet_energy(mean_square(frame))
    }

    fn quiet_energy(&self, energy: f32) -> bool {
        energy < QUIET_ENERGY || energy < self.speech_level * QUIET_RATIO
    }
}

/// Idd of ITU-T G.107 §7.3 for a one-way delay of `ta_ms`.
fn delay_impairment(ta_ms: f32) -> f32 {
    if ta_ms <= 100.0 {
        return 0.0;
    }
    let x = (ta_ms / 100.0).log2();
    let sixth = 1.0 / 6.0;
    25.0 * ((1.0 + x.powi(6)).powf(sixth) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(sixth) + 2.0)
}

fn mean_square(frame: &Frame) -> f32 {
    // Eight independent sums, so that it vectorizes.
    let mut lanes = [0.0f32; 8];
    for chunk in frame.as_chunks::<8>().0 {
        for (lane, &s) in lanes.iter_mut().zip(chunk) {
            *lane += f32::from(s) * f32::from(s);
        }
    }
    lanes.iter().sum::<f32>() / FRAME_SAMPLES as f32
}

/// Signed µs from `epoch` to `now`.
pub(crate) fn micros_between(epoch: Instant, now: Instant) -> i64 {
    match now.checked_duration_since(epoch) {
        Some(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        None => -i64::try_from(epoch.duration_since(now).as_micros()).unwrap_or(i64::MAX),
    }
}

/// The instant `us` µs after `epoch` (before it when negative); `None` outside `Instant`'s range.
pub(crate) fn at_micros(epoch: Instant, us: i64) -> Option<Instant> {
    let magnitude = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        epoch.checked_add(magnitude)
    } else {
        epoch.checked_sub(magnitude)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234;

    /// A buffer driven in virtual time (ms since `t0`).
    struct Harness {
        jb: JitterBuffer,
        t0: Instant,
        out: Frame,
    }

    impl Harness {
        fn new() -> Self {
            Self::with(JitterConfig::default())
        }

        fn with(cfg: JitterConfig) -> Self {
            #[allow(clippy::disallowed_methods)]
            let t0 = Instant::now();
            Self {
                jb: JitterBuffer::new(cfg),
                t0,
                out: SILENCE,
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Pushes a 20 ms packet of a tone whose level marks the sequence number.
        fn push(&mut self, ms: u64, seq: u16, ts: u32) {
            self.push_full(ms, seq, ts, false, SSRC, 160);
        }

        fn push_full(&mut self, ms: u64, seq: u16, ts: u32, marker: bool, ssrc: u32, len: usize) {
            let pcm: Vec<i16> = (0..len).map(|i| tone(ts.wrapping_add(i as u32))).collect();
            let now = self.at(ms);
            self.jb.push(now, seq, ts, marker, ssrc, &pcm);
        }

        fn pop(&mut self, ms: u64) -> Playout {
            let now = self.at(ms);
            self.jb.pop(now, &mut self.out)
        }

        /// Pops every 20 ms in `ms` (exclusive end), returning the played sequence numbers
        /// (`None` for concealment or silence), a compressed tick's second frame after its
        /// first.
        fn pop_range(&mut self, ms: std::ops::Range<u64>) -> Vec<Option<u16>> {
            let mut seqs = Vec::new();
            for t in ms.step_by(20) {
                seqs.push(match self.pop(t) {
                    Playout::Played { seq } => Some(seq),
                    _ => None,
                });
                if let Some((merged, _)) = self.jb.last_position().merged {
                    seqs.push(Some(merged));
                }
            }
            seqs
        }
    }

    /// A loud 400 Hz tone, so no frame counts as quiet.
    fn tone(n: u32) -> i16 {
        let phase = 2.0 * std::f32::consts::PI * 400.0 * (n % 8000) as f32 / 8000.0;
        (phase.sin() * 12000.0) as i16
    }

    /// Pushes packets 0..count sent every 20 ms with a constant 30 ms delay, popping every
    /// 20 ms; returns the played sequence numbers.
    fn steady(h: &mut Harness, seq0: u16, ts0: u32, count: u16) -> Vec<Option<u16>> {
        let mut played = Vec::new();
        for k in 0..count + 10 {
            let t = u64::from(k) * 20;
            if k < count {
                h.push(
                    t,
                    seq0.wrapping_add(k),
                    ts0.wrapping_add(160 * u32::from(k)),
                );
            }
            played.extend(h.pop_range(t..t + 1));
        }
        played
    }

    fn played(seqs: &[Option<u16>]) -> Vec<u16> {
        seqs.iter().flatten().copied().collect()
    }

    #[test]
    fn silence_until_the_first_packet_which_plays_after_the_initial_margin() {
        let mut h = Harness::new();
        assert_eq!(h.pop(0), Playout::Silence);
        assert_eq!(h.out, SILENCE);
        h.push(20, 100, 8000);
        // 20 ms of margin: the next packet may come a little late without being late.
        assert_eq!(h.pop(20), Playout::Silence);
        h.push(40, 101, 8160);
        assert_eq!(h.pop(40), Playout::Played { seq: 100 });
        let mut h = Harness::with(JitterConfig {
            initial_delay_ms: 0,
            ..JitterConfig::default()
        });
        h.push(20, 100, 8000);
        assert_eq!(h.pop(20), Playout::Played { seq: 100 });
    }

    #[test]
    fn a_configured_initial_delay_holds_the_first_frame() {
        let mut h = Harness::with(JitterConfig {
            initial_delay_ms: 40,
            ..JitterConfig::default()
        });
        h.push(20, 100, 8000);
        h.push(40, 101, 8160);
        h.push(60, 102, 8320);
        // Initial delay 40 ms: the first frame is due 40 ms after it arrived.
        assert_eq!(h.pop(20), Playout::Silence);
        assert_eq!(h.pop(40), Playout::Silence);
        assert_eq!(h.pop(60), Playout::Played { seq: 100 });
    }

    #[test]
    fn plays_in_sequence_order_despite_reordering() {
        let mut h = Harness::new();
        for (t, seq) in [
            (0, 0u16),
            (20, 2),
            (21, 1),
            (40, 4),
            (41, 3),
            (60, 5),
            (80, 6),
        ] {
            h.push(t, seq, u32::from(seq) * 160);
        }
        assert_eq!(played(&h.pop_range(0..300)), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(h.jb.stats().late, 0);
    }

    #[test]
    fn orders_across_sequence_and_timestamp_wrap() {
        let mut h = Harness::new();
        let out = steady(&mut h, 65530, u32::MAX - 800, 12);
        let expected: Vec<u16> = (0..12u16).map(|k| 65530u16.wrapping_add(k)).collect();
        assert_eq!(played(&out), expected);
        assert_eq!(h.jb.stats().resets, 0);
    }

    #[test]
    fn drops_duplicates_whether_buffered_or_already_played() {
        let mut h = Harness::new();
        h.push(0, 10, 0);
        h.push(1, 10, 0);
        let first = h.pop_range(0..20);
        h.push(15, 10, 0);
        h.push(16, 11, 160);
        let rest = h.pop_range(20..100);
        assert_eq!(played(&[first, rest].concat()), vec![10, 11]);
        assert_eq!(h.jb.stats().duplicates, 2);
        assert_eq!(h.jb.stats().late, 0);
    }

    #[test]
    fn conceals_a_lost_packet_and_keeps_its_timing() {
        let mut h = Harness::new();
        let mut outputs = Vec::new();
        for k in 0..20u16 {
            let t = u64::from(k) * 20;
            if k != 8 {
                h.push(t, k, u32::from(k) * 160);
            }
            outputs.push(h.pop(t));
        }
        let pos = outputs
            .iter()
            .position(|p| *p == Playout::Played { seq: 7 })
            .unwrap();
        assert_eq!(outputs[pos + 1], Playout::Concealed);
        assert_eq!(outputs[pos + 2], Playout::Played { seq: 9 });
        assert_eq!(h.jb.stats().concealed, 1);
    }

    #[test]
    fn counts_a_packet_arriving_after_its_slot_as_late() {
        let mut h = Harness::new();
        for k in 0..10u16 {
            let t = u64::from(k) * 20;
            if k != 4 {
                h.push(t, k, u32::from(k) * 160);
            }
            h.pop(t);
        }
        // Packet 4 shows up 200 ms late, long after its slot was concealed.
        h.push(280, 4, 4 * 160);
        assert_eq!(h.jb.stats().late, 1);
        assert_eq!(h.jb.stats().duplicates, 0);
    }

    /// Sends 20 ms packets 0..count, packet k arriving at `arrival(k)` ms (in order), popping
    /// every 20 ms from 0; returns the played sequence numbers.
    fn run(h: &mut Harness, count: u16, arrival: impl Fn(u64) -> u64) -> Vec<Option<u16>> {
        let arrivals: Vec<(u64, u16)> = (0..count).map(|k| (arrival(u64::from(k)), k)).collect();
        let end = arrivals.iter().map(|a| a.0).max().unwrap_or(0) + 600;
        let mut next = 0;
        let mut seqs = Vec::new();
        for t in (0..end).step_by(20) {
            while let Some(&(at, k)) = arrivals.get(next).filter(|a| a.0 <= t) {
                h.push(at, k, u32::from(k) * 160);
                next += 1;
            }
            seqs.extend(h.pop_range(t..t + 1));
        }
        seqs
    }

    #[test]
    fn a_late_frame_in_order_is_played_and_the_delay_it_needed_kept() {
        let mut h = Harness::new();
        // On time, except packet 20 (5 ms late), then from packet 200 (4 s later) on, every
        // packet 5 ms late.
        let seqs = run(&mut h, 300, |k| {
            20 * k + if k == 20 || k >= 200 { 5 } else { 0 }
        });
        let got = played(&seqs);
        // Every late frame is waited for and played; playout keeps the delay that needed.
        let missing: Vec<u16> = (0..300).filter(|k| !got.contains(k)).collect();
        assert_eq!(missing, Vec::<u16>::new(), "{:?}", h.jb.stats());
        assert_eq!(h.jb.stats().discarded, 0);
        assert!(h.jb.target_delay_ms() >= 5, "{}", h.jb.target_delay_ms());
    }

    #[test]
    fn a_stall_is_waited_through_and_its_backlog_compressed_away() {
        let mut h = Harness::new();
        // Packets sent between 10.6 and 10.8 s are held up until 10.8 s.
        let stall = 10_600..10_800;
        let arrival = |k: u64| {
            (20 * k).max(if stall.contains(&(20 * k)) {
                stall.end
            } else {
                0
            })
        };
        let mut got = Vec::new();
        for k in 0..1000u16 {
            let t = 20 * u64::from(k);
            for j in 0..1000u16 {
                if arrival(u64::from(j)) == t {
                    h.push(t, j, u32::from(j) * 160);
                }
            }
            got.extend(played(&h.pop_range(t..t + 1)));
            if t == 12_000 {
                // 1.2 s after the stall, playout is back on time: no backlog is left.
                assert!(h.jb.stats().buffered_ms <= 40, "{:?}", h.jb.stats());
            }
        }
        got.extend(played(&h.pop_range(20_000..21_000)));
        // Every frame is played, in order: the stalled ones late, then faster.
        assert_eq!(got, (0..1000).collect::<Vec<u16>>());
        let stats = h.jb.stats();
        assert!(stats.accelerated >= 5, "{stats:?}");
        assert_eq!((stats.late, stats.discarded), (0, 0), "{stats:?}");
        assert!(h.jb.target_delay_ms() <= 20, "{}", h.jb.target_delay_ms());
    }

    #[test]
    fn a_stall_longer_than_the_patience_is_given_up_and_playout_resumes_on_time() {
        let mut h = Harness::new();
        // Packets sent between 10.6 and 11.0 s are held up until 11.0 s.
        let stall = 10_600..11_000;
        let seqs = run(&mut h, 1000, |k| {
            (20 * k).max(if stall.contains(&(20 * k)) {
                stall.end
            } else {
                0
            })
        });
        let got = played(&seqs);
        // The first stalled frames are given up (late); playout resumes with a frame due
        // near 11.0 s, in order, without a backlog of delay.
        assert!(got.contains(&550) && !got.contains(&530), "{got:?}");
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted);
        assert_eq!(got.len() as u64 + h.jb.stats().late, 1000);
        // Ten stalled packets of the last 512 are not worth covering; what remains is the hold
        // of a frame that came late in order at the stall's end.
        assert!(h.jb.target_delay_ms() <= 20, "{}", h.jb.target_delay_ms());
        assert_eq!(h.jb.stats().discarded, 0, "{:?}", h.jb.stats());
    }

    #[test]
    fn a_configured_minimum_delay_waits_through_a_stall_of_that_length() {
        // As over TCP (Twilio): nothing is lost, only late, and the floor is 200 ms.
        let mut h = Harness::with(JitterConfig {
            min_delay_ms: 200,
            max_delay_ms: 600,
            initial_delay_ms: 200,
            coverage_permille: 990,
            ..JitterConfig::default()
        });
        // Packets sent between 2 s and 2.15 s are held up until 2.35 s (a 350 ms stall).
        let seqs = run(&mut h, 200, |k| {
            (20 * k).max(if (2000..2150).contains(&(20 * k)) {
                2350
            } else {
                0
            })
        });
        assert_eq!(played(&seqs), (0..200).collect::<Vec<u16>>());
        assert_eq!(h.jb.stats().late, 0);
    }

    #[test]
    fn late_frames_and_a_short_delay_spike_are_waited_through() {
        let mut h = Harness::new();
        // Packets 40 and 45 come 5 ms late, then a 15 ms spike holds 50 until 51 is sent.
        let seqs = run(&mut h, 100, |k| match k {
            40 => 805,
            45 => 905,
            50 => 1015,
            _ => 20 * k,
        });
        let got = played(&seqs);
        let missing: Vec<u16> = (0..100).filter(|k| !got.contains(k)).collect();
        assert_eq!(missing, Vec::<u16>::new(), "{:?}", h.jb.stats());
        assert_eq!(h.jb.stats().late, 0);
    }

    #[test]
    fn gives_up_on_a_missing_frame_at_the_maximum_delay() {
        let mut h = Harness::with(JitterConfig {
            max_delay_ms: 100,
            ..JitterConfig::default()
        });
        for k in 0..5u16 {
            h.push(u64::from(k) * 20, k, u32::from(k) * 160);
        }
        h.pop_range(0..400);
        // Packet 5 arrives 300 ms after it was due, beyond the 100 ms maximum.
        h.push(400, 5, 5 * 160);
        assert_eq!(h.jb.stats().late, 1);
    }

    #[test]
    fn new_ssrc_restarts_the_stream() {
        let mut h = Harness::new();
        let first = steady(&mut h, 0, 0, 10);
        assert_eq!(played(&first).len(), 10);
        let mut second = Vec::new();
        for k in 0..10u16 {
            let t = 400 + u64::from(k) * 20;
            h.push_full(
                t,
                5000 + k,
                999_999 + 160 * u32::from(k),
                k == 0,
                0xBEEF,
                160,
            );
            second.extend(h.pop_range(t..t + 1));
        }
        second.extend(h.pop_range(600..800));
        assert_eq!(played(&second), (5000..5010).collect::<Vec<u16>>());
        assert_eq!(h.jb.stats().resets, 1);
    }

    #[test]
    fn timestamp_jump_forward_or_backward_restarts_the_stream() {
        for jump in [10 * 8000i64, -40 * 160] {
            let mut h = Harness::new();
            let _ = steady(&mut h, 0, 100_000, 10);
            let mut after = Vec::new();
            for k in 0..10u16 {
                let t = 400 + u64::from(k) * 20;
                let ts = (100_000 + 1600 + jump + 160 * i64::from(k)) as u32;
                h.push(t, 10 + k, ts);
                after.extend(h.pop_range(t..t + 1));
            }
            after.extend(h.pop_range(600..800));
            assert_eq!(
                played(&after),
                (10..20).collect::<Vec<u16>>(),
                "jump {jump}"
            );
            assert_eq!(h.jb.stats().resets, 1, "jump {jump}");
        }
    }

    #[test]
    fn sequence_jump_is_believed_only_when_the_next_packet_follows() {
        let mut h = Harness::new();
        let _ = steady(&mut h, 0, 0, 10);
        // A lone stray with a wild sequence number is dropped...
        h.push(400, 40_000, 1600);
        assert_eq!((h.jb.stats().strays, h.jb.stats().resets), (1, 0));
        // ...but two in a row start a new numbering.
        h.push(420, 30_000, 1600);
        h.push(440, 30_001, 1760);
        assert_eq!((h.jb.stats().strays, h.jb.stats().resets), (2, 1));
        let out = h.pop_range(440..600);
        assert_eq!(played(&out), vec![30_001]);
    }

    #[test]
    fn splits_10_ms_and_30_ms_packets_onto_the_20_ms_grid() {
        for len in [80usize, 240, 480] {
            let mut h = Harness::new();
            let ms = len as u64 / 8;
            let mut samples = Vec::new();
            for k in 0..(1200 / ms) {
                let ts = (k as usize * len) as u32;
                h.push_full(k * ms, k as u16, ts, false, SSRC, len);
            }
            for t in (0..1600).step_by(20) {
                if let Playout::Played { .. } = h.pop(t) {
                    samples.extend_from_slice(&h.out);
                }
            }
            let expected: Vec<i16> = (0..samples.len() as u32).map(tone).collect();
            assert_eq!(samples.len(), 1200 * 8, "ptime {ms}");
            let first_difference = samples.iter().zip(&expected).position(|(a, b)| a != b);
            assert_eq!(first_difference, None, "ptime {ms}: {:?}", h.jb.stats());
        }
    }

    #[test]
    fn talkspurt_after_dtx_silence_resumes_at_the_target_delay() {
        let mut h = Harness::new();
        let _ = steady(&mut h, 0, 0, 100);
        let target = i64::from(h.jb.target_delay_ms());
        // Two seconds of DTX silence, then a talkspurt with the marker bit.
        let mut outputs = Vec::new();
        for k in 0..50u16 {
            let send = 4000 + u64::from(k) * 20;
            h.push_full(
                send,
                100 + k,
                32_000 + 160 * u32::from(k),
                k == 0,
                SSRC,
                160,
            );
            outputs.push((send, h.pop(send)));
        }
        let (start, _) = outputs
            .iter()
            .find(|(_, p)| *p == Playout::Played { seq: 100 })
            .unwrap();
        let delay = *start as i64 - 4000;
        assert!(
            delay >= target && delay < target + 20,
            "delay {delay} target {target}"
        );
    }

    #[test]
    fn short_packets_are_malformed_and_ignored() {
        let mut h = Harness::new();
        h.push_full(0, 1, 0, false, SSRC, 40);
        assert_eq!(h.jb.stats().malformed, 1);
        assert!(h.jb.is_drained());
    }

    #[test]
    fn a_flood_of_absurd_packets_stays_within_capacity() {
        let mut h = Harness::new();
        let mut x = 12345u32;
        for i in 0..20_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            h.push_full(
                i / 10,
                (x >> 16) as u16,
                x.rotate_left(7),
                x & 1 == 0,
                x % 3,
                160,
            );
            if i % 10 == 0 {
                h.pop(i / 10);
            }
        }
        assert!(h.jb.buffered <= h.jb.slots.len());
        assert!(h.jb.stats().buffered_ms <= 20 * h.jb.slots.len() as u32);
        assert_eq!(h.jb.slots.len(), 64);
    }

    #[test]
    fn target_grows_with_jitter_and_shrinks_once_it_calms() {
        let mut h = Harness::new();
        let mut x = 99u32;
        for k in 0..1500u32 {
            let send = u64::from(k) * 20;
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let jitter = if k < 500 { u64::from(x >> 16) % 80 } else { 0 };
            // In-order delivery: the queue delays everything behind a slow packet.
            h.push(send + jitter, k as u16, k * 160);
            h.pop_range(send..send + 1);
            if k == 499 {
                assert!(
                    h.jb.target_delay_ms() >= 60,
                    "jittery target {}",
                    h.jb.target_delay_ms()
                );
            }
        }
        assert_eq!(h.jb.target_delay_ms(), 0);
    }
}
