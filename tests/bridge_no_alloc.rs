//! The bridged transfer's media link allocates nothing per frame: the caller's frames into the
//! far leg's queue and the target's back, taken each tick, including full queues and backlogs
//! dropped after a stall — 10 000 frames each way under `assert_no_alloc` (whose global
//! allocator aborts the process on any allocation inside `assert_no_alloc(..)`). A test binary
//! of its own, because the library must not install a global allocator.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use assert_no_alloc::{AllocDisabler, assert_no_alloc};
use earshot::call::bridge::{self, QUEUE_FRAMES};
use earshot::media::frame::{FRAME_SAMPLES, Frame, SILENCE};

#[global_allocator]
static ALLOCATOR: AllocDisabler = AllocDisabler;

const FRAMES: usize = 10_000;

#[test]
fn the_bridge_link_moves_frames_both_ways_without_allocating() {
    let dropped = Arc::new(AtomicU64::new(0));
    let (mut peer, mut end) = bridge::pair(dropped.clone());
    let mut crossed = 0usize;
    assert_no_alloc(|| {
        let mut out: Frame = SILENCE;
        for i in 0..FRAMES {
            let frame: Frame = [(i % 1000) as i16 + 1; FRAME_SAMPLES];
            // Every 500th tick one side stalls: a burst overfills its queue.
            let burst = if i % 500 == 0 { QUEUE_FRAMES + 4 } else { 1 };
            for _ in 0..burst {
                peer.send(&frame);
                end.send(&frame);
            }
            // After a burst the reader keeps a short backlog: the frame it takes may be a few
            // ticks old, never silence.
            if end.next_frame(&mut out) && out != SILENCE {
                crossed += 1;
            }
            if peer.next_frame(&mut out) && out != SILENCE {
                crossed += 1;
            }
        }
    });
    assert_eq!(crossed, 2 * FRAMES, "every tick found a frame each way");
    assert!(
        dropped.load(Relaxed) > 0,
        "the bursts were counted as drops"
    );
}
