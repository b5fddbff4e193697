//! Pure DSP, allocation-free after construction.

pub mod frame;
pub mod g711;
