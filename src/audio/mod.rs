//! Live playout of calls on the box's speaker: the real-time audio thread (cpal), one SPSC
//! ring per call, and the mixer that the device callback runs.
//!
//! - [`resample`]: 8 kHz → device rate with an adjustable ratio (drift correction).
//! - [`mixer`]: sans-IO, allocation-free mixing of every call's ring; commands in, retired
//!   inputs out, through rings.
//! - [`device`]: the driver: opens the output device on its own thread, retries when it is
//!   missing, and hands out a [`SpeakerFeed`] per call.

pub mod device;
pub mod mixer;
pub mod resample;

pub use device::{AudioService, AudioStats, DeviceInfo, SpeakerFeed, list_devices};
