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
//! - [`config`]: typed configuration, one module per section, defaults, validation with
//!   field-level errors; [`config::destination`] is the one parser of destinations (a number or
//!   a `sip:`/`sips:` URI) and the `[calls].outbound_allow` match every outbound call and
//!   transfer goes through.
//! - [`clock`]: the one process clock (monotonic and wall time); nothing else reads the time.
//! - [`sip`] (sans-IO): [`sip::message`] (earshot's own tolerant parser and serializer; the only
//!   module that touches rsip, as a cross-check in its tests), [`sip::transaction`] (RFC 3261
//!   §17, timers as data; the bounded server-transaction table with its timer heap, and
//!   per-source token buckets), [`sip::dialog`], [`sip::endpoint`] (the UAS core: dispatch, per-call
//!   state with its session refreshes and REFER transfers, the one response builder, and trunk
//!   registrations in one state machine),
//!   [`sip::registration`], [`sip::sdp`] (RFC 3264 offer/answer), [`sip::auth`] (digest
//!   MD5/SHA-256), [`sip::session_timer`] (RFC 4028 negotiation and deadlines, for either
//!   role), [`sip::refer`] (Refer-To, Replaces, Event and sipfrag of RFC 3515/3891/3420). The
//!   endpoint also places calls as a UAC (`place_call`: INVITE, digest, CANCEL, 2xx ACK,
//!   forking, redirects), answered ones becoming dialogs like incoming calls.
//! - [`rtp`] (sans-IO): RTP/RTCP session — sequence extension, loss and jitter (RFC 3550 A.1,
//!   A.3, A.8), strict source learning in a window after the ACK, nothing sent before the ACK
//!   and the peer heard (no reflection from a spoofed INVITE), RFC 4733 DTMF, SR/RR/BYE.
//! - [`media`]: the media path, pure DSP and allocation-free after construction — G.711, the
//!   20 ms frame, the adaptive jitter buffer, G.711 Appendix I loss concealment, time-scale
//!   compression ([`media::accelerate`]: a stall's backlog played faster, no frame lost), the
//!   playout clock's phase (ticks that land just after the next frame falls due), the energy
//!   voice detector, the recording lane ([`media::record_lane`]: the arrived stream put back in order
//!   by timestamp for the recording, apart from playout) — and the offline tools that replay
//!   traces through it: the `jitter-sim` runner and its pcap/pcapng reader, the trace corpus
//!   (families; tuning and held-out seeds), the G.107 E-model scorer and the hindsight
//!   fixed-delay baseline.
//! - [`twilio`] (sans-IO): Twilio as a caller — Media Streams messages, signatures, TwiML,
//!   stream tokens, the stream state machine (pacing, marks, clear).
//! - [`agent`] (sans-IO): voice agents on earshot's side — [`agent::twilio`] plays Twilio's part
//!   of a Media Stream towards any agent that speaks it (queue, pacing, marks, clear);
//!   [`agent::openai`] is an OpenAI Realtime session (μ-law both ways, server VAD, barge-in
//!   truncation at the played milliseconds, transcripts of both sides).
//! - [`call`]: one task per call, whatever its source ([`call::start`]). A call has a caller
//!   [`call::Leg`] (SIP/RTP or a Twilio stream) and a [`call::responder::Responder`] (the
//!   greeting, an agent, silence, a bridged transfer's target); [`call::Pipeline`] is the one
//!   media path between them; events, limits, silence timeout, barge-in, DTMF and stats are
//!   written once, in the call task, and so are transfers ([`call::transfer`]: the parsed
//!   destination, the `[calls].outbound_allow` policy, each leg's way of handing the caller
//!   over; [`call::bridge`]: the bounded frame queues that make a bridged transfer's target
//!   the call's responder). [`call::CallHandle`] is all the rest of the program sees of a
//!   call. A SIP call's dialog lives in the SIP endpoint's task, not in the call task:
//!   transactions and dialogs are one state machine in RFC 3261, and splitting them would
//!   need a lock or a second copy of the dialog; the SIP leg hears of the dialog through the
//!   SIP task's signals. Events reach the store through [`call::EventSink`]: lifecycle events
//!   never dropped, details (DTMF, hold, agent notices) through a bounded lane, counted when
//!   full. [`call::Drain`] is the box's draining switch (`/api/drain`, SIGUSR1/SIGUSR2): the
//!   SIP task hands it to the endpoint, the Twilio webhook reads it.
//! - [`net`]: IO drivers — the SIP transport (UDP, TCP with limits), the SIP leg (RTP sockets
//!   around the RTP session), outbound dialling ([`net::sip_dial`]: `[calls].outbound_allow`
//!   and the trunk a call goes through), bridged transfers ([`net::sip_bridge`]: the far leg
//!   placed to the target for a caller that does not take REFER, and its media driver),
//!   transfers the caller's side asks for ([`net::sip_referred`]: the call placed to a REFER's
//!   target, moved onto the call's leg once it answers), the Twilio webhook and WebSocket (the
//!   Twilio leg), the agents'
//!   WebSocket client and the TLS client settings it shares with webhooks; RTP port pairs are
//!   drawn at random from `[rtp].ports`.
//! - [`audio`]: the real-time audio thread (cpal), per-call SPSC rings, the mixer, 8 kHz to
//!   device-rate resampling with drift correction (the resampler lives here, not in `media`,
//!   because its ratio is steered by the rings' fill); and the operator's microphone for
//!   talk-back ([`audio::capture`], [`audio::microphone`]): an allocation-free input callback
//!   into a ring, read back at 8 kHz with drift correction by the one call that holds it.
//! - [`recording`]: the WAV writer thread, the crash repair of unfinished files, and the
//!   free-disk recording gate. Each call feeds its recording through [`call::record_feed`]:
//!   the caller from the recording lane, paired with what earshot sent, drained before the
//!   file is finalized however the call ends.
//! - [`store`]: redb tables and queries, schema version, crash recovery of call states,
//!   recordings housekeeping, history retention, commits retried through a full disk.
//! - [`webhooks`]: signed webhooks out (Standard Webhooks): payloads enqueued in the store's
//!   outbox in the same commit as their call event, [`webhooks::signature`] and
//!   [`webhooks::policy`] (sans-IO: signing, retry schedule and verdicts),
//!   [`webhooks::address`] (the private-address filter), a minimal HTTP/1.1 client, and the
//!   delivery task (at most 8 attempts in flight, every result recorded durably).
//! - [`api`]: axum — REST, Server-Sent Events, `/metrics`, the embedded web console, and the
//!   Twilio-compatible call REST agents hang up with; the Host/Origin guard ([`api::guard`])
//!   and the HTTP/1.1 server with its timeouts and connection limit ([`api::server`]).
//! - [`metrics`]: the counters and histograms behind `/metrics`.
//! - [`doctor`]: `earshot doctor`'s checks of the box.
//! - [`systemd`]: sd_notify readiness and watchdog.
//! - [`app`]: wires everything together, runs until SIGTERM/SIGINT, reloads on SIGHUP, drains
//!   on SIGUSR1 (SIGUSR2 undoes).
//!
//! Layers, lower never importing higher (no import loops): the sans-IO cores `sip`, `rtp`,
//! `twilio`, `agent` and `clock` → `media` → `config` → `audio`, `recording` → `call` →
//! `metrics`, `store` → `webhooks`, `net` → `api` → `app`.

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
pub mod webhooks;
