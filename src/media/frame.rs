//! The 20 ms PCM frame shared by everything: 160 samples of 16-bit linear audio at 8 kHz.

/// Narrowband sample rate of every call's audio.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at [`SAMPLE_RATE`].
pub const FRAME_SAMPLES: usize = 160;
/// Duration of one frame.
pub const FRAME_DURATION: std::time::Duration = std::time::Duration::from_millis(20);

/// One 20 ms frame of 16-bit linear PCM at 8 kHz.
pub type Frame = [i16; FRAME_SAMPLES];

/// A frame of silence.
pub const SILENCE: Frame = [0; FRAME_SAMPLES];
