//! Live playout of calls on the box's speaker: the real-time audio thread (cpal), one SPSC
//! ring per call, and the mixer that the device callback runs; and the operator's microphone
//! for talk-back.
//!
//! - [`resample`]: 8 kHz → device rate with an adjustable ratio (drift correction).
//! - [`mixer`]: sans-IO, allocation-free mixing of every call's ring; commands in, retired
//!   inputs out, through rings.
//! - [`device`]: the driver: opens the output device on its own thread, retries when it is
//!   missing, and hands out a [`SpeakerFeed`] per call.
//! - [`capture`]: sans-IO, the allocation-free input callback body and the reader that turns
//!   device-rate capture into 8 kHz frames (anti-aliasing, resampling, drift correction).
//! - [`microphone`]: the input driver: opens `[audio] input` on its own thread, retries when it
//!   is missing, and lends the capture to the one call that talks.

pub mod capture;
pub mod device;
pub mod microphone;
pub mod mixer;
pub mod resample;

pub use device::{AudioService, AudioStats, DeviceInfo, SpeakerFeed, list_devices};
pub use microphone::{CaptureStats, InputInfo, Microphone, list_inputs};
