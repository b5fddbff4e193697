//! Pure DSP, allocation-free after construction.

pub mod frame;
