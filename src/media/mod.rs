//! Pure DSP, allocation-free after construction.

pub mod frame;
pub mod g711;
pub mod jitter;
pub mod jitter_sim;
pub mod playout_clock;
pub mod plc;
