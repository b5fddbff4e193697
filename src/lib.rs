//! earshot — a headless call appliance.
//!
//! Phone calls reach earshot from SIP trunks (its own SIP and RTP stack) and from Twilio Media
//! Streams. Every call goes through one media pipeline: G.711, an adaptive jitter buffer, a WAV
//! recording, live playout on the box's speakers, and audio back to the caller.
//!
//! # Layout
//!
//! Protocol cores are sans-IO: they take bytes and an `Instant` and return bytes, events and the
//! next deadline; they never read the clock, sleep or touch a socket. Drivers are thin loops
//! around them.
//!
//! - [`config`]: typed configuration, defaults, validation with field-level errors.
//! - [`sip`] (sans-IO): [`sip::message`] (earshot's own tolerant parser and serializer; the only
//!   module that touches rsip, as a cross-check in its tests), [`sip::transaction`] (RFC 3261
//!   §17, timers as data), [`sip::dialog`], [`sip::endpoint`] (the UAS core: transactions,
//!   dialogs and registrations in one state machine), [`sip::registration`], [`sip::sdp`]
//!   (RFC 3264 offer/answer), [`sip::auth`] (digest MD5/SHA-256).
//! - [`rtp`] (sans-IO): RTP/RTCP session — sequence extension, loss and jitter (RFC 3550 A.1,
//!   A.3, A.8), strict source learning, RFC 4733 DTMF, SR/RR/BYE.
//! - [`media`]: the media path, pure DSP and allocation-free after construction — G.711, the
//!   20 ms frame, the adaptive jitter buffer, G.711 Appendix I loss concealment, the playout
//!   clock's phase (ticks that land just after the next frame falls due) — and the offline tools
//!   that replay traces through it: the `jitter-sim` runner and its pcap/pcapng reader.
//! - [`twilio`] (sans-IO): Media Streams messages, signatures, TwiML, stream tokens, the stream
//!   state machine (pacing, marks, barge-in).
//! - [`call`]: one task per call owns its media; [`call::Pipeline`] is the one media path every
//!   call goes through; [`call::CallHandle`] is all the rest of the program sees of a call; call
//!   events and ids. A SIP call's dialog lives in the SIP endpoint's task, not in the call task:
//!   transactions and dialogs are one state machine in RFC 3261, and splitting them would need a
//!   lock or a second copy of the dialog.
//! - [`net`]: IO drivers — the clock, the SIP transport (UDP, TCP with limits), RTP sockets, the
//!   Twilio webhook and WebSocket.
//! - [`audio`]: the real-time audio thread (cpal), per-call SPSC rings, the mixer, 8 kHz to
//!   device-rate resampling with drift correction (the resampler lives here, not in `media`,
//!   because its ratio is steered by the rings' fill).
//! - [`recording`]: the WAV writer thread and the crash repair of unfinished files.
//! - [`store`]: redb tables and queries, schema version, crash recovery of call states,
//!   recordings housekeeping.
//! - [`api`]: axum — REST, Server-Sent Events, `/metrics`, the embedded web console.
//! - [`metrics`]: the counters and histograms behind `/metrics`.
//! - [`doctor`]: `earshot doctor`'s checks of the box.
//! - [`systemd`]: sd_notify readiness and watchdog.
//! - [`app`]: wires everything together, runs until SIGTERM/SIGINT, reloads on SIGHUP.

pub mod agent;
pub mod api;
pub mod app;
pub mod audio;
pub mod call;
pub mod clock;
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
