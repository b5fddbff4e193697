//! What a call's recording is written from: the caller (left) from the reordered arrived
//! stream ([`crate::media::record_lane`]), not from the speakers' playout, so every frame that
//! arrived is recorded in its place; earshot (right) from what each tick sent.
//!
//! The two sides are paired frame by frame in order: before the caller's first packet every
//! tick records silence on the left, then the lane's frames follow. Each side waits in a
//! bounded queue ([`QUEUE_FRAMES`], 1.28 s; one queue, since only one side waits at a time)
//! for its partner; the lane lags the ticks by at most
//! its window while a packet is missing. A side whose queue is full (a sender clock far off
//! ours) is written against silence, counted in [`FeedStats::unpaired`]. At the end the lane
//! is drained and the rest written, so the recording ends with the last frame that arrived.
//!
//! Everything is allocated in [`RecordFeed::new`]; receiving and ticking never allocate.

use std::time::Instant;

use crate::media::frame::{Frame, SILENCE};
use crate::media::record_lane::{LaneStats, Placed, RESYNC_FRAMES, RecordLane};
use crate::recording::CallRecording;

/// Frames each side may wait for its partner: 1.28 s, twice the lane's window.
const QUEUE_FRAMES: usize = 64;

/// Counters of the feed, for the call's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    pub lane: LaneStats,
    /// Frames written against silence because the other side's queue overflowed.
    pub unpaired: u64,
}

/// A bounded FIFO of frames.
struct Frames {
    buf: Box<[Frame]>,
    head: usize,
    len: usize,
}

impl Frames {
    fn new() -> Self {
        Self {
            buf: vec![SILENCE; QUEUE_FRAMES].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Queues `frame`; the caller makes room first.
    fn push(&mut self, frame: &Frame) {
        if self.is_full() {
            return;
        }
        let at = (self.head + self.len) % self.buf.len();
        if let Some(slot) = self.buf.get_mut(at) {
            *slot = *frame;
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        let frame = self.buf.get(self.head).copied();
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        frame
    }
}

/// Which side of the recording a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Sent,
}

/// One call's recording and the lane and queue that feed it.
pub(super) struct RecordFeed {
    recording: CallRecording,
    lane: RecordLane,
    /// Frames of one side waiting for their partners. Only one side ever waits (a frame that
    /// finds the other side's oldest waiting is written with it at once), so one queue serves
    /// both: each side still has [`QUEUE_FRAMES`], in half the memory of a queue per side.
    waiting: Frames,
    /// The side the waiting frames are.
    side: Side,
    /// The caller's first packet came: from then on the lane fills the left side.
    started: bool,
    unpaired: u64,
}

impl RecordFeed {
    pub(super) fn new(recording: CallRecording) -> Self {
        Self {
            recording,
            lane: RecordLane::new(),
            waiting: Frames::new(),
            side: Side::Sent,
            started: false,
            unpaired: 0,
        }
    }

    pub(super) fn recording(&self) -> &CallRecording {
        &self.recording
    }

    pub(super) fn stats(&self) -> FeedStats {
        FeedStats {
            lane: *self.lane.stats(),
            unpaired: self.unpaired,
        }
    }

    /// One packet of the caller's decoded audio.
    pub(super) fn receive(&mut self, now: Instant, ts: u32, ssrc: u32, pcm: &[i16]) {
        self.started = true;
        let mut frame = SILENCE;
        // Each `Full` hands out a frame; a jump beyond this restarts the lane instead.
        for _ in 0..=RESYNC_FRAMES {
            if self.lane.push(now, ts, ssrc, pcm) != Placed::Full {
                break;
            }
            if self.lane.make_room(&mut frame).is_none() {
                break;
            }
            self.caller_frame(&frame);
        }
    }

    /// Every 20 ms: what earshot sent, and the caller's frames now in order.
    pub(super) fn tick(&mut self, now: Instant, sent: &Frame) {
        self.arrive(Side::Sent, sent);
        if !self.started {
            self.caller_frame(&SILENCE);
        }
        let mut frame = SILENCE;
        while self.lane.pop(now, &mut frame).is_some() {
            self.caller_frame(&frame);
        }
    }

    /// Ends the recording: the lane's rest and both queues are written, then the file is
    /// finalized by the writer.
    pub(super) fn finish(mut self) -> FeedStats {
        let mut frame = SILENCE;
        while self.lane.drain(&mut frame).is_some() {
            self.caller_frame(&frame);
        }
        while let Some(frame) = self.waiting.pop() {
            self.write_alone(self.side, &frame);
        }
        let stats = self.stats();
        self.recording.finish();
        stats
    }

    fn caller_frame(&mut self, frame: &Frame) {
        self.arrive(Side::Caller, frame);
    }

    /// A frame of `side`: written with the other side's oldest waiting frame, or queued to
    /// wait for its partner (the oldest waiting is written against silence when the queue is
    /// full, counted as unpaired).
    fn arrive(&mut self, side: Side, frame: &Frame) {
        if side != self.side {
            if let Some(partner) = self.waiting.pop() {
                match side {
                    Side::Caller => self.recording.push(frame, &partner),
                    Side::Sent => self.recording.push(&partner, frame),
                };
                return;
            }
            self.side = side;
        }
        if self.waiting.is_full() {
            if let Some(oldest) = self.waiting.pop() {
                self.write_alone(side, &oldest);
            }
            self.unpaired += 1;
        }
        self.waiting.push(frame);
    }

    /// Writes `frame` of `side` against silence on the other.
    fn write_alone(&mut self, side: Side, frame: &Frame) {
        match side {
            Side::Caller => self.recording.push(frame, &SILENCE),
            Side::Sent => self.recording.push(&SILENCE, frame),
        };
    }
}

impl std::fmt::Debug for RecordFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFeed")
            .field("stats", &self.stats())
            .finish()
    }
}
