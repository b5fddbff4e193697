//! The recording lane: the caller's stream as it arrived, put back in order by RTP timestamp
//! (RFC 3550 §5.1; a Twilio stream's media timestamps), for the recording — apart from the
//! speakers' low-latency playout ([`crate::media::jitter`]), so that what playout gives up on
//! is still recorded in its place.
//!
//! Audio is placed on the timestamp grid in 10 ms units, in a ring of [`CAPACITY_UNITS`]
//! (1.28 s). Frames leave in order, 20 ms at a time, as soon as both their units are there. A
//! unit still missing [`WINDOW`] after it was due (measured from the earliest-arriving packets,
//! so the lane follows the sender's pace) is given up and concealed
//! ([`crate::media::plc`]); the same when a packet lands beyond the ring and room must be
//! made. Only units that never arrived are concealed: arrived audio is written unchanged.
//! One that arrives after its place was concealed is counted late, a second copy is
//! counted as a duplicate. A new SSRC, or a timestamp more than [`RESYNC_UNITS`] (3 s)
//! away, restarts the lane once what it holds has left. At the end of a call
//! [`RecordLane::drain`] hands out everything up to the last unit that arrived.
//!
//! The lane never reads the clock (callers pass `now`) and allocates only in
//! [`RecordLane::new`].

use std::time::{Duration, Instant};

use crate::media::frame::{FRAME_SAMPLES, Frame};
use crate::media::plc::{BLOCK, Concealer};

/// Samples per unit: 10 ms.
const UNIT: usize = BLOCK;
/// Units in the ring: 1.28 s of audio.
pub const CAPACITY_UNITS: usize = 128;
/// How long a missing unit is waited for after it was due.
pub const WINDOW: Duration = Duration::from_millis(600);
/// Duration of one unit.
const UNIT_DURATION: Duration = Duration::from_millis(10);
/// A timestamp this many units away from the lane's place (3 s) restarts it.
pub const RESYNC_UNITS: i64 = 300;
/// Frames [`RecordLane::make_room`] may have to hand out before a packet is placed or the
/// lane restarts: a jump just short of a restart, with the ring and its lead full.
pub const RESYNC_FRAMES: usize =
    (RESYNC_UNITS as usize + CAPACITY_UNITS + LEAD_UNITS as usize) / 2 + 1;
/// Room kept before a stream's first packet (500 ms), for packets that overtook it.
const LEAD_UNITS: u64 = 50;
/// How far a packet later than its due time moves the anchor (20 µs a packet, 1 ms a second
/// at 50 packets a second): a sender whose clock runs slow is followed, jitter barely moves it.
const ANCHOR_CREEP: Duration = Duration::from_micros(20);

/// What one frame handed out holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneFrame {
    /// Both units arrived.
    Arrived,
    /// One unit arrived, the other is concealed.
    Partial,
    /// Neither unit arrived: concealment (silence once it has faded).
    Concealed,
}

/// What became of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// In its place.
    Placed,
    /// Its place was already handed out, concealed: counted late.
    Late,
    /// Its place holds it already (or handed it out): counted as a duplicate.
    Duplicate,
    /// No room: hand out a frame with [`RecordLane::make_room`], then push the packet again.
    Full,
}

/// Counters of one lane, for the call's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Frames handed out.
    pub frames: u64,
    /// 10 ms units concealed: missing while a later one arrived (by their time, or when room
    /// was needed). Silence while nothing arrives is not counted.
    pub concealed_units: u64,
    /// Packets that arrived after their place was concealed.
    pub late: u64,
    /// Packets put in their place after a later one had arrived (reordered, not lost).
    pub reordered: u64,
    /// Packets whose audio the lane had already.
    pub duplicates: u64,
    /// Restarts on a new SSRC or a timestamp jump.
    pub restarts: u64,
}

/// One 10 ms place on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Nothing for this place yet (or the slot belongs to an older place).
    Empty,
    /// The place's audio arrived and waits to leave.
    Held,
    /// The place left with its audio.
    Gone,
    /// The place left concealed.
    Concealed,
}

/// The reorder lane of one call's caller stream.
pub struct RecordLane {
    /// `CAPACITY_UNITS * UNIT` samples, unit `u` at `(u % CAPACITY_UNITS) * UNIT`.
    samples: Box<[i16]>,
    /// The state of each slot and the place (unit number) it is for.
    units: Box<[(Unit, u64)]>,
    /// The stream: its SSRC, and the unit number and timestamp of the next unit to leave.
    stream: Option<Stream>,
    /// One past the highest unit that arrived.
    end: u64,
    /// When unit `.1` counts as due: the earliest arrival, kept as the packet that came
    /// soonest relative to its place.
    anchor: Option<(Instant, u64)>,
    concealer: Concealer,
    stats: LaneStats,
}

#[derive(Debug, Clone, Copy)]
struct Stream {
    ssrc: u32,
    /// The next unit to leave.
    next: u64,
    /// Its RTP timestamp.
    next_ts: u32,
    /// Nothing has left yet: the units before the first that arrived are skipped, not
    /// concealed (they are the room kept for packets that overtook the first).
    lead: bool,
}

impl Default for RecordLane {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordLane {
    /// An empty lane; all its memory is allocated here.
    pub fn new() -> Self {
        Self {
            samples: vec![0; CAPACITY_UNITS * UNIT].into_boxed_slice(),
            units: vec![(Unit::Empty, 0); CAPACITY_UNITS].into_boxed_slice(),
            stream: None,
            end: 0,
            anchor: None,
            concealer: Concealer::new(),
            stats: LaneStats::default(),
        }
    }

    pub fn stats(&self) -> &LaneStats {
        &self.stats
    }

    /// Whether audio that arrived is waiting to leave.
    pub fn holds_audio(&self) -> bool {
        self.stream.is_some_and(|s| s.next < self.end)
    }

    /// One packet of decoded audio, `pcm` starting at RTP timestamp `ts` (8 kHz).
    pub fn push(&mut self, now: Instant, ts: u32, ssrc: u32, pcm: &[i16]) -> Placed {
        let units = pcm.len() / UNIT;
        let stream = match self.stream {
            Some(s) if s.ssrc == ssrc => s,
            Some(_) if self.holds_audio() => return Placed::Full,
            Some(_) => {
                self.stats.restarts += 1;
                self.start(now, ts, ssrc)
            }
            None => self.start(now, ts, ssrc),
        };
        // Signed distance from the next unit to leave, rounded to whole units.
        let delta = i64::from(ts.wrapping_sub(stream.next_ts) as i32);
        let offset = (delta + (UNIT as i64) / 2).div_euclid(UNIT as i64);
        if !(-RESYNC_UNITS..RESYNC_UNITS).contains(&offset) {
            if self.holds_audio() {
                return Placed::Full;
            }
            self.stats.restarts += 1;
            self.start(now, ts, ssrc);
            return self.push(now, ts, ssrc, pcm);
        }
        let first = stream.next as i64 + offset;
        if first < 0 {
            self.stats.late += 1;
            return Placed::Late;
        }
        let first = first as u64;
        if first + units as u64 > stream.next + CAPACITY_UNITS as u64 {
            return Placed::Full;
        }
        self.follow(now, first);
        let behind = first < self.end;
        let mut placed = Placed::Duplicate;
        for (k, chunk) in pcm.chunks_exact(UNIT).enumerate() {
            let unit = first + k as u64;
            let slot = (unit % CAPACITY_UNITS as u64) as usize;
            let state = match self.units.get(slot) {
                Some(&(state, at)) if at == unit => state,
                _ => Unit::Empty,
            };
            match state {
                _ if unit < stream.next => {
                    placed = if state == Unit::Gone {
                        Placed::Duplicate
                    } else {
                        Placed::Late
                    };
                }
                Unit::Held | Unit::Gone => {}
                Unit::Empty | Unit::Concealed => {
                    if let Some(dst) = self.samples.get_mut(slot * UNIT..(slot + 1) * UNIT) {
                        dst.copy_from_slice(chunk);
                    }
                    if let Some(s) = self.units.get_mut(slot) {
                        *s = (Unit::Held, unit);
                    }
                    self.end = self.end.max(unit + 1);
                    placed = Placed::Placed;
                }
            }
        }
        match placed {
            Placed::Late => self.stats.late += 1,
            Placed::Duplicate => self.stats.duplicates += 1,
            Placed::Placed if behind => self.stats.reordered += 1,
            Placed::Placed | Placed::Full => {}
        }
        placed
    }

    /// The next frame, once both its units arrived or were waited for long enough.
    pub fn pop(&mut self, now: Instant, out: &mut Frame) -> Option<LaneFrame> {
        let stream = self.stream?;
        if stream.lead {
            // The first frame waits until nothing can still come before the earliest unit.
            let first = self.earliest_held()?;
            if first > stream.next && !self.overdue(now, first - 1) {
                return None;
            }
            self.skip_lead();
        }
        let stream = self.stream?;
        let ready = |lane: &Self, unit: u64| lane.held(unit) || lane.overdue(now, unit);
        if !(ready(self, stream.next) && ready(self, stream.next + 1)) {
            return None;
        }
        Some(self.take(out))
    }

    /// Hands out the next frame at once, concealing what is missing of it: after
    /// [`Placed::Full`]. `None` when the lane has not started.
    pub fn make_room(&mut self, out: &mut Frame) -> Option<LaneFrame> {
        self.stream?;
        Some(self.take(out))
    }

    /// At the end of the stream: the next frame while any arrived audio is left, concealing
    /// what never came between.
    pub fn drain(&mut self, out: &mut Frame) -> Option<LaneFrame> {
        if !self.holds_audio() {
            return None;
        }
        Some(self.take(out))
    }

    fn start(&mut self, now: Instant, ts: u32, ssrc: u32) -> Stream {
        // Unit numbers keep growing across restarts, so old slots never look current.
        let next = self.stream.map_or(0, |s| s.next.max(self.end)) + CAPACITY_UNITS as u64;
        let stream = Stream {
            ssrc,
            next,
            next_ts: ts.wrapping_sub((LEAD_UNITS as usize * UNIT) as u32),
            lead: true,
        };
        self.stream = Some(stream);
        self.end = next;
        self.anchor = Some((now, next + LEAD_UNITS));
        self.concealer.reset();
        stream
    }

    /// Moves the anchor to a packet that came sooner, relative to its place, than the
    /// anchor's; one that came later moves it a little ([`ANCHOR_CREEP`]).
    fn follow(&mut self, now: Instant, unit: u64) {
        let due = self
            .anchor
            .and_then(|(at, anchor)| Some((at, self.due(at, anchor, unit)?, anchor)));
        match due {
            Some((at, due, anchor)) if now >= due => {
                let creep = now.saturating_duration_since(due).min(ANCHOR_CREEP);
                self.anchor = Some((at + creep, anchor));
            }
            _ => self.anchor = Some((now, unit)),
        }
    }

    /// The first unit waiting to leave.
    fn earliest_held(&self) -> Option<u64> {
        let next = self.stream?.next;
        (next..self.end.min(next + CAPACITY_UNITS as u64)).find(|&u| self.held(u))
    }

    /// Leaves the lead: the lane starts at the earliest unit that arrived.
    fn skip_lead(&mut self) {
        let first = self.earliest_held();
        if let Some(stream) = self.stream.as_mut() {
            if let Some(first) = first {
                let skipped = first - stream.next;
                stream.next = first;
                stream.next_ts = stream
                    .next_ts
                    .wrapping_add((skipped as usize * UNIT) as u32);
            }
            stream.lead = false;
        }
    }

    /// When `unit` is due, from an anchor.
    fn due(&self, at: Instant, anchor: u64, unit: u64) -> Option<Instant> {
        if unit >= anchor {
            at.checked_add(UNIT_DURATION.checked_mul(u32::try_from(unit - anchor).ok()?)?)
        } else {
            at.checked_sub(UNIT_DURATION.checked_mul(u32::try_from(anchor - unit).ok()?)?)
        }
    }

    fn held(&self, unit: u64) -> bool {
        let slot = (unit % CAPACITY_UNITS as u64) as usize;
        self.units.get(slot) == Some(&(Unit::Held, unit))
    }

    fn overdue(&self, now: Instant, unit: u64) -> bool {
        let Some((at, anchor)) = self.anchor else {
            return false;
        };
        self.due(at, anchor, unit)
            .and_then(|due| due.checked_add(WINDOW))
            .is_none_or(|limit| now >= limit)
    }

    /// Hands out the next two units, concealing what is not there.
    fn take(&mut self, out: &mut Frame) -> LaneFrame {
        if self.stream.is_some_and(|s| s.lead) {
            self.skip_lead();
        }
        let mut arrived = 0;
        for half in out.chunks_exact_mut(UNIT) {
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            let unit = stream.next;
            stream.next += 1;
            stream.next_ts = stream.next_ts.wrapping_add(UNIT as u32);
            let slot = (unit % CAPACITY_UNITS as u64) as usize;
            let mut block = [0i16; UNIT];
            let is_held = self.units.get(slot) == Some(&(Unit::Held, unit));
            if is_held {
                if let Some(src) = self.samples.get(slot * UNIT..(slot + 1) * UNIT) {
                    block.copy_from_slice(src);
                }
                half.copy_from_slice(&block);
                // The concealer learns from a copy: arrived audio is recorded unchanged.
                self.concealer.good(&mut block);
                arrived += 1;
            } else if unit >= self.end {
                // Nothing later arrived: the caller paused (DTX, hold) or stopped. Silence,
                // as sent, not a concealment of speech that was not there.
                half.copy_from_slice(&block);
                self.concealer.good(&mut block);
            } else {
                self.concealer.conceal(&mut block);
                half.copy_from_slice(&block);
                self.stats.concealed_units += 1;
            }
            if let Some(s) = self.units.get_mut(slot) {
                *s = (if is_held { Unit::Gone } else { Unit::Concealed }, unit);
            }
        }
        self.end = self.end.max(self.stream.map_or(0, |s| s.next));
        self.stats.frames += 1;
        match arrived {
            2 => LaneFrame::Arrived,
            1 => LaneFrame::Partial,
            _ => LaneFrame::Concealed,
        }
    }
}

impl std::fmt::Debug for RecordLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordLane")
            .field("stream", &self.stream)
            .field("end", &self.end)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Frames of [`FRAME_SAMPLES`] are two units.
const _: () = assert!(FRAME_SAMPLES == 2 * UNIT);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::media::frame::SILENCE;

    const SSRC: u32 = 0x1234;

    /// Frame `n` of the sent stream: samples no other frame has.
    fn frame(n: u32) -> Frame {
        std::array::from_fn(|i| (1 + (n as usize * FRAME_SAMPLES + i) % 30_000) as i16)
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Everything the lane hands out until `until_ms` (at most the last arrival: later, time
    /// alone would conceal what follows the stream), popped every 20 ms, then drained.
    fn run(
        lane: &mut RecordLane,
        t0: Instant,
        packets: &[(u64, u32, u32)],
        until_ms: u64,
    ) -> Vec<(Frame, LaneFrame)> {
        let mut out = Vec::new();
        let mut pending = packets.to_vec();
        pending.sort_by_key(|p| p.0);
        let last = pending.last().map_or(0, |p| p.0);
        let mut next = pending.into_iter().peekable();
        for ms in (0..=until_ms.min(last)).step_by(20) {
            while let Some(&(arrive, ts, n)) = next.peek() {
                if arrive > ms {
                    break;
                }
                next.next();
                while lane.push(at(t0, arrive), ts, SSRC, &frame(n)) == Placed::Full {
                    let mut f = SILENCE;
                    let kind = lane.make_room(&mut f).unwrap();
                    out.push((f, kind));
                }
            }
            let mut f = SILENCE;
            while let Some(kind) = lane.pop(at(t0, ms), &mut f) {
                out.push((f, kind));
            }
        }
        let mut f = SILENCE;
        while let Some(kind) = lane.drain(&mut f) {
            out.push((f, kind));
        }
        out
    }

    /// Which sent frame each frame handed out is (`None`: not one of them, concealment).
    fn arrived(out: &[(Frame, LaneFrame)]) -> Vec<Option<u32>> {
        out.iter().map(|(f, _)| id(f)).collect()
    }

    fn id(f: &Frame) -> Option<u32> {
        let n = (f[0] as u32).checked_sub(1)? / FRAME_SAMPLES as u32;
        (frame(n) == *f).then_some(n)
    }

    fn ids(range: std::ops::Range<u32>) -> Vec<Option<u32>> {
        range.map(Some).collect()
    }

    #[test]
    fn frames_in_order_leave_as_they_arrived_and_nothing_is_concealed() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let packets: Vec<_> = (0..100u32)
            .map(|n| (20 * u64::from(n), 1000 + 160 * n, n))
            .collect();
        let out = run(&mut lane, t0, &packets, 2000);
        assert_eq!(arrived(&out), ids(0..100));
        assert!(out.iter().all(|(_, k)| *k == LaneFrame::Arrived));
        assert_eq!(lane.stats().concealed_units, 0);
        assert_eq!(lane.stats().reordered, 0);
    }

    #[test]
    fn reordered_packets_are_put_back_in_place_even_the_first() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        // Pairs swapped, the first included: 1, 0, 3, 2, ... and one 300 ms behind.
        let mut packets: Vec<_> = (0..100u32)
            .map(|n| {
                let slot = if n % 2 == 0 { n + 1 } else { n - 1 };
                (20 * u64::from(slot), 160 * n, n)
            })
            .collect();
        packets[50].0 += 300;
        let out = run(&mut lane, t0, &packets, 3000);
        assert_eq!(arrived(&out), ids(0..100));
        assert_eq!(lane.stats().concealed_units, 0);
        assert_eq!(lane.stats().late, 0);
        // Each even packet came after the odd one behind it.
        assert_eq!(lane.stats().reordered, 50, "{:?}", lane.stats());
    }

    #[test]
    fn duplicates_are_counted_and_change_nothing() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let mut packets: Vec<_> = (0..50u32)
            .map(|n| (20 * u64::from(n), 160 * n, n))
            .collect();
        // A copy while held, and one long after it left.
        packets.push((20 * 10 + 5, 160 * 10, 10));
        packets.push((20 * 40, 160 * 20, 20));
        let out = run(&mut lane, t0, &packets, 2000);
        assert_eq!(arrived(&out), ids(0..50));
        assert_eq!(lane.stats().duplicates, 2);
        assert_eq!(lane.stats().late, 0);
    }

    #[test]
    fn a_frame_that_never_came_is_concealed_and_its_neighbours_stay_exact() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let packets: Vec<_> = (0..60u32)
            .filter(|&n| n != 30)
            .map(|n| (20 * u64::from(n), 160 * n, n))
            .collect();
        let out = run(&mut lane, t0, &packets, 3000);
        assert_eq!(out.len(), 60);
        for (n, (f, kind)) in out.iter().enumerate() {
            if n == 30 {
                assert_eq!(*kind, LaneFrame::Concealed);
                assert_eq!(id(f), None);
            } else {
                assert_eq!(
                    (id(f), *kind),
                    (Some(n as u32), LaneFrame::Arrived),
                    "frame {n}"
                );
            }
        }
        assert_eq!(lane.stats().concealed_units, 2);
    }

    #[test]
    fn the_lane_waits_the_window_for_a_missing_frame_then_counts_it_late() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let mut f = SILENCE;
        for n in 0..5u32 {
            lane.push(at(t0, 20 * u64::from(n)), 160 * n, SSRC, &frame(n));
        }
        // Frame 5 is missing; 6 and 7 arrived.
        for n in 6..8u32 {
            lane.push(at(t0, 20 * u64::from(n)), 160 * n, SSRC, &frame(n));
        }
        // The first frame waits until nothing can still overtake it.
        assert_eq!(lane.pop(at(t0, 200), &mut f), None);
        let mut got = Vec::new();
        while lane.pop(at(t0, 600), &mut f).is_some() {
            got.push(id(&f));
        }
        assert_eq!(got, ids(0..5));
        // 500 ms after it was due: still waited for.
        assert_eq!(lane.pop(at(t0, 600), &mut f), None);
        // Beyond the window: concealed; then 6 and 7 follow.
        assert_eq!(
            lane.pop(at(t0, 100 + 610), &mut f),
            Some(LaneFrame::Concealed)
        );
        assert_eq!(lane.pop(at(t0, 710), &mut f), Some(LaneFrame::Arrived));
        assert_eq!(id(&f), Some(6));
        assert_eq!(
            lane.push(at(t0, 720), 160 * 5, SSRC, &frame(5)),
            Placed::Late
        );
        assert_eq!(lane.stats().late, 1);
    }

    #[test]
    fn sequence_and_timestamp_wrap_change_nothing() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let ts0 = u32::MAX - 160 * 20 + 1;
        let packets: Vec<_> = (0..60u32)
            .map(|n| {
                let slot = if n % 5 == 1 { n + 2 } else { n };
                (20 * u64::from(slot), ts0.wrapping_add(160 * n), n)
            })
            .collect();
        let out = run(&mut lane, t0, &packets, 3000);
        assert_eq!(arrived(&out), ids(0..60));
    }

    #[test]
    fn a_timestamp_jump_restarts_the_lane_after_what_it_held() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let mut packets: Vec<_> = (0..20u32)
            .map(|n| (20 * u64::from(n), 160 * n, n))
            .collect();
        // 10 s ahead in media time, 400 ms later in real time, while 0..20 may still be held.
        packets.extend((20..40u32).map(|n| (20 * u64::from(n), 80_000 + 160 * n, n)));
        let out = run(&mut lane, t0, &packets, 3000);
        assert_eq!(arrived(&out), ids(0..40));
        assert_eq!(lane.stats().restarts, 1);
        assert_eq!(lane.stats().concealed_units, 0);
    }

    #[test]
    fn a_packet_beyond_the_ring_makes_room_and_the_gap_is_never_taken_for_audio() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let mut packets: Vec<_> = (0..10u32)
            .map(|n| (20 * u64::from(n), 160 * n, n))
            .collect();
        // 2 s of media later, arriving at once (under the restart threshold).
        packets.push((220, 160 * 110, 110));
        let out = run(&mut lane, t0, &packets, 300);
        let frames = arrived(&out);
        assert_eq!(frames.len(), 111);
        assert_eq!(&frames[..10], &ids(0..10)[..]);
        assert_eq!(frames[110], Some(110));
        // What left to make room (nothing later had arrived) is silence; the rest of the gap
        // is concealed, which fades to silence.
        assert!(out[10..110].iter().all(|(f, _)| id(f).is_none()));
        assert!(out[10..20].iter().all(|(f, _)| *f == SILENCE));
    }

    #[test]
    fn drain_hands_out_everything_that_arrived_up_to_the_last_packet() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let mut f = SILENCE;
        // The tail arrives reordered, with one frame never sent; nothing was popped yet.
        for n in [0u32, 1, 2, 4, 3, 6, 8, 7] {
            lane.push(at(t0, 20 * u64::from(n)), 160 * n, SSRC, &frame(n));
        }
        let mut out = Vec::new();
        while let Some(kind) = lane.drain(&mut f) {
            out.push((f, kind));
        }
        assert_eq!(out.len(), 9);
        for (n, (f, kind)) in out.iter().enumerate() {
            if n == 5 {
                assert_eq!(*kind, LaneFrame::Concealed);
            } else {
                assert_eq!(id(f), Some(n as u32), "frame {n}");
            }
        }
        assert!(!lane.holds_audio());
        assert_eq!(lane.drain(&mut f), None);
    }

    #[test]
    fn after_the_last_packet_time_brings_silence_not_concealment() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let mut f = SILENCE;
        for n in 0..10u32 {
            lane.push(at(t0, 20 * u64::from(n)), 160 * n, SSRC, &frame(n));
        }
        let mut out = Vec::new();
        for ms in (200..2000).step_by(20) {
            while lane.pop(at(t0, ms), &mut f).is_some() {
                out.push(f);
            }
        }
        // Frame 10 is due at 200 ms and given up 600 ms later; then one a tick until 1980 ms.
        assert!((58..=60).contains(&(out.len() - 10)), "{}", out.len());
        assert!(out[10..].iter().all(|f| *f == SILENCE));
        assert_eq!(lane.stats().concealed_units, 0);
    }

    #[test]
    fn a_new_ssrc_restarts_the_lane() {
        let t0 = Instant::now();
        let mut lane = RecordLane::new();
        let mut out = Vec::new();
        let mut f = SILENCE;
        for n in 0..5u32 {
            lane.push(at(t0, 20 * u64::from(n)), 160 * n, SSRC, &frame(n));
        }
        let mut n = 5u32;
        while lane.push(at(t0, 100), 777, SSRC + 1, &frame(n)) == Placed::Full {
            lane.make_room(&mut f).unwrap();
            out.push(id(&f));
        }
        n += 1;
        lane.push(at(t0, 120), 777 + 160, SSRC + 1, &frame(n));
        while lane.drain(&mut f).is_some() {
            out.push(id(&f));
        }
        assert_eq!(out, ids(0..7));
        assert_eq!(lane.stats().restarts, 1);
    }
}
