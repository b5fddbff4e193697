//! earshot — a headless call appliance.
//!
//! Phone calls reach earshot from SIP trunks (its own SIP and RTP stack) and from Twilio Media
//! Streams. Every call goes through one media pipeline: G.711, an adaptive jitter buffer, a WAV
//! recording, live playout on the box's speakers, and audio back to the caller.
//!
//! # Layout
//!
//! - [`config`]: typed configuration, defaults and validation with field-level errors.
//! - [`sip`]: the SIP user agent, sans-IO: message adapter, transactions, dialogs, SDP, digest.
//! - [`rtp`]: the RTP/RTCP session, sans-IO: stats, symmetric-RTP source learning, RFC 4733.
//! - [`media`]: pure DSP: G.711, the 20 ms frame, the jitter buffer with loss concealment.
//! - [`call`]: one task per call; `CallHandle` is all the rest of the program sees of a call.
//! - [`net`]: IO drivers: the SIP transport (UDP/TCP) and per-call RTP sockets.
//! - [`app`]: wires the drivers together and runs until shutdown.

pub mod api;
pub mod app;
pub mod audio;
pub mod call;
pub mod config;
pub mod doctor;
pub mod media;
pub mod metrics;
pub mod net;
pub mod recording;
pub mod rtp;
pub mod sip;
pub mod store;
pub mod systemd;
pub mod twilio;
