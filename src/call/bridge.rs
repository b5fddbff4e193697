//! A bridged transfer's media link: the two bounded, wait-free frame queues between a call and
//! the far leg earshot placed to the transfer target (for callers that do not take REFER,
//! RFC 3515). The call task holds the [`BridgePeer`] as its responder: every tick it sends the
//! caller's frame and takes the target's. The far leg's driver holds the [`BridgeEnd`] and does
//! the same on its own 20 ms clock.
//!
//! Frames are linear 8 kHz PCM, so each leg speaks its own G.711 law. Both queues hold at most
//! [`QUEUE_FRAMES`]; a frame that finds its queue full is dropped, and a reader that finds more
//! than [`MAX_BACKLOG`] waiting drops the oldest (latency stays bounded after a stall); every
//! drop is counted in the shared counter the driver reports to the metrics. Nothing here
//! allocates after [`pair`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::media::frame::{Frame, SILENCE};

/// Frames each queue holds (200 ms).
pub const QUEUE_FRAMES: usize = 10;
/// Frames a reader lets wait behind the one it takes; older ones are dropped (60 ms).
pub const MAX_BACKLOG: usize = 3;

/// One direction: a producer for the writer, a consumer for the reader.
struct Lane {
    tx: rtrb::Producer<Frame>,
    rx: rtrb::Consumer<Frame>,
}

fn lane() -> Lane {
    let (tx, rx) = rtrb::RingBuffer::new(QUEUE_FRAMES);
    Lane { tx, rx }
}

/// The call's side: sends the caller's frames, takes the target's.
pub struct BridgePeer {
    to_target: rtrb::Producer<Frame>,
    from_target: rtrb::Consumer<Frame>,
    dropped: Arc<AtomicU64>,
}

/// The far leg's side: takes the caller's frames, sends the target's.
pub struct BridgeEnd {
    from_call: rtrb::Consumer<Frame>,
    to_call: rtrb::Producer<Frame>,
    dropped: Arc<AtomicU64>,
}

/// A connected pair; drops on either side are added to `dropped`.
pub fn pair(dropped: Arc<AtomicU64>) -> (BridgePeer, BridgeEnd) {
    let (up, down) = (lane(), lane());
    (
        BridgePeer {
            to_target: up.tx,
            from_target: down.rx,
            dropped: dropped.clone(),
        },
        BridgeEnd {
            from_call: up.rx,
            to_call: down.tx,
            dropped,
        },
    )
}

/// Queues `frame`, or counts it dropped when the queue is full.
fn send(tx: &mut rtrb::Producer<Frame>, frame: &Frame, dropped: &AtomicU64) {
    if tx.push(*frame).is_err() {
        dropped.fetch_add(1, Relaxed);
    }
}

/// The next frame into `out` (silence when none waits), after dropping, counted, what is
/// beyond the backlog. Returns whether a frame was taken.
fn take(rx: &mut rtrb::Consumer<Frame>, out: &mut Frame, dropped: &AtomicU64) -> bool {
    while rx.slots() > MAX_BACKLOG + 1 {
        if rx.pop().is_ok() {
            dropped.fetch_add(1, Relaxed);
        }
    }
    match rx.pop() {
        Ok(frame) => {
            *out = frame;
            true
        }
        Err(_) => {
            *out = SILENCE;
            false
        }
    }
}

impl BridgePeer {
    /// The caller's frame, for the target.
    pub fn send(&mut self, frame: &Frame) {
        send(&mut self.to_target, frame, &self.dropped);
    }

    /// The target's next frame (silence when none came in time).
    pub fn next_frame(&mut self, out: &mut Frame) -> bool {
        take(&mut self.from_target, out, &self.dropped)
    }
}

impl BridgeEnd {
    /// The target's frame, for the caller.
    pub fn send(&mut self, frame: &Frame) {
        send(&mut self.to_call, frame, &self.dropped);
    }

    /// The caller's next frame (silence when none came in time).
    pub fn next_frame(&mut self, out: &mut Frame) -> bool {
        take(&mut self.from_call, out, &self.dropped)
    }

    /// Frames dropped so far on both sides, taken (the counter restarts from zero).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Relaxed)
    }
}

impl std::fmt::Debug for BridgePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgePeer")
            .field("waiting", &self.from_target.slots())
            .finish()
    }
}

impl std::fmt::Debug for BridgeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeEnd")
            .field("waiting", &self.from_call.slots())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: i16) -> Frame {
        [v; crate::media::frame::FRAME_SAMPLES]
    }

    #[test]
    fn frames_cross_both_ways_in_order() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut peer, mut end) = pair(dropped.clone());
        let mut out = SILENCE;
        peer.send(&frame(1));
        peer.send(&frame(2));
        assert!(end.next_frame(&mut out));
        assert_eq!(out, frame(1));
        assert!(end.next_frame(&mut out));
        assert_eq!(out, frame(2));
        assert!(!end.next_frame(&mut out), "nothing waits: silence");
        assert_eq!(out, SILENCE);
        end.send(&frame(7));
        assert!(peer.next_frame(&mut out));
        assert_eq!(out, frame(7));
        assert_eq!(dropped.load(Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_new_frames_and_a_reader_skips_a_backlog_counting_both() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut peer, mut end) = pair(dropped.clone());
        for v in 0..(QUEUE_FRAMES as i16 + 5) {
            peer.send(&frame(v));
        }
        assert_eq!(end.take_dropped(), 5, "five frames found the queue full");
        let mut out = SILENCE;
        assert!(end.next_frame(&mut out));
        // The reader kept the newest MAX_BACKLOG + 1 frames and took the oldest of those.
        let first_kept = (QUEUE_FRAMES - MAX_BACKLOG - 1) as i16;
        assert_eq!(out, frame(first_kept));
        assert_eq!(end.take_dropped(), first_kept as u64);
        for v in first_kept + 1..QUEUE_FRAMES as i16 {
            assert!(end.next_frame(&mut out));
            assert_eq!(out, frame(v));
        }
        assert!(!end.next_frame(&mut out));
        assert_eq!(end.take_dropped(), 0, "the counter restarts after a take");
    }
}
