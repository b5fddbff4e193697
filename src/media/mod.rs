//! The media path, pure DSP and allocation-free after construction (G.711, frames, the jitter
//! buffer, concealment, time-scale compression, the playout clock, the energy voice-activity
//! detector, the recording's reorder lane), and the tools that replay traces and captures
//! through it (`jitter_sim`, `capture`).

pub mod accelerate;
pub mod capture;
pub mod frame;
pub mod g711;
pub mod jitter;
pub mod jitter_sim;
pub mod playout_clock;
pub mod plc;
pub mod record_lane;
pub mod vad;
