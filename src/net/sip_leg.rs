//! The SIP caller leg: a call's RTP/RTCP sockets around its sans-IO RTP [`Session`], and the
//! signalling the SIP task relays to it (media agreed, INFO DTMF, the dialog's end). The
//! call's 20 ms tick is its [`PlayoutClock`]: it lands just after the caller's next frame
//! falls due. [`SipCalls`] starts a call task for each answered INVITE.
//!
//! The leg sends nothing until its session opens (see [`crate::rtp::Session`]: the ACK, then
//! the peer heard or a short grace), and only then starts its 20 ms ticks, so the greeting
//! starts when the caller can hear it rather than being spent on a closed gate. The first
//! packet heard from the peer is reported to the SIP task ([`SipCommand::PeerMedia`]): a
//! dialog whose ACK never comes is then ended with a BYE only if the peer was ever heard.
//!
//! A REFER from the caller's side (RFC 3515) that earshot carries out moves the call: the SIP
//! task places a call to the target, and once it answers hands this leg the new dialog and its
//! sockets ([`SipSignal::Moved`]). The leg drops the old RTP session (its counters kept for the
//! record) and goes on with a new one towards the target: same call task, same recording.
//! While the caller has hung up and the target still rings, the leg is idle (no ticks, no
//! silence timeout).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::rtp::{PortAllocator, RtpSockets};
use super::sip::SipCommand;
use crate::call::{
    self, BridgePeer, CallHandle, CallId, CallInfo, CallSettings, Codec, DtmfSource, EndReason,
    Leg, LegAudio, LegInput, LegStats, PeerTransfer, Services, Source, TransferFailure,
    TransferMethod, TransferStart, TransferTarget,
};
use crate::clock;
use crate::media::frame::FRAME_SAMPLES;
use crate::media::playout_clock::PlayoutClock;
use crate::metrics::Metrics;
use crate::rtp::{RtpEvent, Session, SessionConfig, Ssrc};
use crate::sip::endpoint::{CallRef, IncomingCall};
use crate::sip::sdp::{Direction, LocalMedia, Negotiated};

/// Largest datagram read from an RTP socket; larger ones are truncated and fail to parse.
const MAX_DATAGRAM: usize = 1500;
/// Datagrams already waiting on the RTP socket that are taken before a tick's frame is chosen
/// (bounded, so that a flood cannot hold the tick up).
const DRAIN_BEFORE_TICK: usize = 4;
/// Datagrams taken in one wake-up of [`Leg::readable`].
const MAX_BATCH: usize = 16;
/// RTP datagrams kept when they arrive before the SIP task said media is agreed (the caller
/// may start sending the moment it has our 200 OK, a hair before the signal reaches the leg);
/// they are replayed into the session once it exists. Beyond this they are dropped.
const EARLY_RTP: usize = 16;

/// What the SIP task tells a call's leg.
#[derive(Debug)]
pub enum SipSignal {
    /// Negotiated media, first or changed by a re-INVITE.
    Media(Negotiated),
    /// The dialog is confirmed: the caller's ACK came (or, for a call we placed, our ACK went).
    Confirmed,
    /// A call we placed has early media (an SDP answer in a 18x): receive and play it; nothing
    /// is sent until the answer.
    EarlyMedia(Negotiated),
    /// A DTMF digit signalled in SIP INFO.
    Dtmf { digit: char, duration_ms: u32 },
    /// A transfer is over: by REFER, the peer reached the target; bridged, the target
    /// answered; or it failed.
    Transfer(Result<TransferMethod, TransferFailure>),
    /// Whether the caller's side takes REFER (its Allow), learnt when the dialog is confirmed.
    ReferSupport(bool),
    /// The REFER under way was refused as not supported: earshot bridges instead.
    TransferVia(TransferMethod),
    /// The far leg of a bridged transfer is placed: its media link, held until the answer.
    BridgePlaced(BridgePeer),
    /// The far leg of the bridged transfer hung up.
    TargetEnded,
    /// News of a transfer the caller's side asked for by REFER, to `to`.
    Referred { to: String, news: PeerTransfer },
    /// The caller hung up after asking for a transfer whose target still rings: the leg has
    /// no one to talk to until [`SipSignal::Moved`] (or its end).
    ReferrerGone,
    /// The target of the caller's REFER answered: the leg is the dialog `call` now, its media
    /// on `sockets` as agreed in `media`.
    Moved {
        call: CallRef,
        sockets: RtpSockets,
        media: Negotiated,
    },
    /// The dialog is over.
    Ended(EndReason),
}

/// After the ACK, how long a session waits for the peer's first packet before sending anyway.
pub const PEER_GRACE: Duration = Duration::from_secs(1);

/// RTP settings of SIP calls, from `[rtp]` and `[sip]`.
#[derive(Debug, Clone)]
pub struct RtpSettings {
    pub learn_packets: u16,
    /// `[rtp].learn_window_ms`.
    pub learn_window: Duration,
    pub rtcp_interval: Duration,
    /// The address written in our SDP.
    pub advertised_ip: IpAddr,
}

/// A live SIP call as the SIP task keeps it.
#[derive(Debug)]
pub struct SipCall {
    pub handle: CallHandle,
    pub signals: mpsc::UnboundedSender<SipSignal>,
}

impl SipCall {
    pub fn signal(&self, signal: SipSignal) {
        let _ = self.signals.send(signal);
    }
}

/// Starts SIP calls' tasks.
#[derive(Debug, Clone)]
pub struct SipCalls {
    pub ports: Arc<PortAllocator>,
    pub rtp: Arc<RtpSettings>,
    pub settings: Arc<CallSettings>,
    pub services: Services,
    /// Where legs ask the SIP task to hang up.
    pub sip: mpsc::UnboundedSender<SipCommand>,
    /// Where legs count the packets they drop from foreign sources.
    pub metrics: Arc<Metrics>,
}

impl SipCalls {
    /// Binds the call's RTP/RTCP sockets and starts its task. Returns the media to offer.
    pub fn spawn(&self, incoming: &IncomingCall) -> io::Result<(LocalMedia, SipCall)> {
        let (sockets, media) = self.media()?;
        let call = self.start_leg(
            incoming.call,
            sockets,
            incoming.sip_call_id.clone(),
            incoming.caller.clone(),
            incoming.callee.clone(),
        );
        Ok((media, call))
    }

    /// A call's RTP/RTCP sockets, and the media we offer or answer with on them.
    pub fn media(&self) -> io::Result<(RtpSockets, LocalMedia)> {
        let sockets = self.ports.allocate()?;
        let media = LocalMedia {
            addr: self.rtp.advertised_ip,
            port: sockets.rtp_port(),
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            session_id: rand::random::<u32>().into(),
            session_version: 1,
            direction: Direction::SendRecv,
        };
        Ok((sockets, media))
    }

    /// Starts the call task of the SIP call `call` (Call-ID `sip_call_id`) on `sockets`.
    pub fn start_leg(
        &self,
        call: CallRef,
        sockets: RtpSockets,
        sip_call_id: String,
        caller: String,
        callee: String,
    ) -> SipCall {
        let now = clock::wallclock();
        let info = CallInfo {
            id: CallId::new(now, rand::random()),
            source: Source::Sip,
            external_id: sip_call_id,
            caller,
            callee,
            started_at: now,
        };
        let (leg, signals) = self.leg(call, sockets, format!("earshot-{}", info.id));
        let (handle, task) = call::start(info, leg, self.settings.clone(), &self.services);
        tokio::spawn(task);
        SipCall { handle, signals }
    }

    /// The media leg of the SIP call `call` on `sockets`, and where the SIP task signals it;
    /// `cname` is its RTCP CNAME.
    pub fn leg(
        &self,
        call: CallRef,
        sockets: RtpSockets,
        cname: String,
    ) -> (SipLeg, mpsc::UnboundedSender<SipSignal>) {
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let leg = SipLeg {
            call,
            cname,
            sockets,
            rtp: self.rtp.clone(),
            session: None,
            signals: signals_rx,
            sip: self.sip.clone(),
            playout: PlayoutClock::new(clock::now()),
            receiving: true,
            rtp_buf: vec![0u8; MAX_DATAGRAM],
            rtcp_buf: vec![0u8; MAX_DATAGRAM],
            early: Vec::new(),
            early_media: false,
            confirmed: false,
            ticking: false,
            foreign_counted: 0,
            metrics: self.metrics.clone(),
            refer: true,
            bridge: None,
            idle: false,
            earlier: LegStats::default(),
        };
        (leg, signals)
    }
}

/// One SIP call's media leg.
pub struct SipLeg {
    call: CallRef,
    cname: String,
    sockets: RtpSockets,
    rtp: Arc<RtpSettings>,
    session: Option<Session>,
    signals: mpsc::UnboundedReceiver<SipSignal>,
    sip: mpsc::UnboundedSender<SipCommand>,
    playout: PlayoutClock,
    /// Whether the caller sends to us (a caller holding us with sendonly still does).
    receiving: bool,
    rtp_buf: Vec<u8>,
    rtcp_buf: Vec<u8>,
    /// RTP that came before the session: (source, datagram), at most [`EARLY_RTP`].
    early: Vec<(SocketAddr, Vec<u8>)>,
    /// Early media of a call we placed is playing: ticks run before the answer.
    early_media: bool,
    /// The caller's ACK came.
    confirmed: bool,
    /// The session is open and the 20 ms ticks run.
    ticking: bool,
    /// The session's foreign-source drops already added to the metrics.
    foreign_counted: u64,
    metrics: Arc<Metrics>,
    /// The caller's side takes REFER (its Allow lists it, or it sent none); otherwise a
    /// transfer bridges.
    refer: bool,
    /// The far leg of a bridged transfer being placed, until the call task takes it.
    bridge: Option<BridgePeer>,
    /// The caller hung up while the target of its REFER rings: nothing to send or expect.
    idle: bool,
    /// The counters of the sessions before the call moved (REFER), added to the last one's.
    earlier: LegStats,
}

impl SipLeg {
    fn signal(&mut self, signal: SipSignal, inputs: &mut VecDeque<LegInput>) {
        match signal {
            SipSignal::Media(media) => {
                let input = self.apply_media(media);
                inputs.push_back(input);
                self.replay_early(inputs);
            }
            SipSignal::EarlyMedia(media) => {
                // The media path opens (receiving, ticks for the speakers); the call is not
                // answered yet, so no `LegInput::Media`.
                self.early_media = true;
                let _ = self.apply_media(media);
                self.replay_early(inputs);
            }
            SipSignal::Confirmed => {
                self.confirmed = true;
                if let Some(session) = self.session.as_mut() {
                    session.confirm(clock::now());
                }
                self.sync_gate();
            }
            SipSignal::Dtmf { digit, duration_ms } => inputs.push_back(LegInput::Dtmf {
                digit,
                duration_ms,
                source: DtmfSource::SipInfo,
            }),
            SipSignal::Transfer(outcome) => {
                if outcome.is_err() {
                    self.bridge = None;
                }
                inputs.push_back(LegInput::Transfer(outcome));
            }
            SipSignal::ReferSupport(refer) => self.refer = refer,
            SipSignal::TransferVia(method) => inputs.push_back(LegInput::TransferVia(method)),
            SipSignal::BridgePlaced(peer) => self.bridge = Some(peer),
            SipSignal::TargetEnded => inputs.push_back(LegInput::TargetEnded),
            SipSignal::Referred { to, news } => inputs.push_back(LegInput::Referred { to, news }),
            SipSignal::ReferrerGone => {
                self.idle = true;
                self.ticking = false;
                self.retire_session();
            }
            SipSignal::Moved {
                call,
                sockets,
                media,
            } => {
                self.retire_session();
                self.call = call;
                self.sockets = sockets;
                self.early.clear();
                self.early_media = false;
                self.idle = false;
                self.ticking = false;
                self.foreign_counted = 0;
                // The target's 2xx is ACKed: the new dialog is confirmed.
                self.confirmed = true;
                let input = self.apply_media(media);
                inputs.push_back(input);
            }
            SipSignal::Ended(reason) => inputs.push_back(LegInput::Ended(reason)),
        }
    }

    /// Ends the current RTP session (the call moves, or its caller left): its counters go to
    /// the record with the next one's.
    fn retire_session(&mut self) {
        if let Some(session) = self.session.take() {
            add_stats(&mut self.earlier, &session);
        }
    }

    /// RTP that came before the session exists goes into it now.
    fn replay_early(&mut self, inputs: &mut VecDeque<LegInput>) {
        for (from, datagram) in std::mem::take(&mut self.early) {
            if let Some(buf) = self.rtp_buf.get_mut(..datagram.len()) {
                buf.copy_from_slice(&datagram);
                self.rtp_in(from, datagram.len(), inputs);
            }
        }
    }

    fn apply_media(&mut self, media: Negotiated) -> LegInput {
        let now = clock::now();
        let sending = media.local_direction.sends();
        self.receiving = media.local_direction.receives();
        let hold = !matches!(
            media.remote_direction,
            Direction::SendRecv | Direction::RecvOnly
        );
        match self.session.as_mut() {
            Some(session) => {
                session.set_remote(now, media.remote_rtp, media.remote_rtcp);
                session.set_sending(sending);
            }
            None => {
                let config = SessionConfig {
                    local_ssrc: Ssrc(rand::random()),
                    payload_type: media.codec.payload_type(),
                    dtmf_pt: media.dtmf_pt,
                    remote_rtp: media.remote_rtp,
                    remote_rtcp: media.remote_rtcp,
                    learn_packets: self.rtp.learn_packets,
                    learn_window: self.rtp.learn_window,
                    peer_grace: PEER_GRACE,
                    rtcp_interval: self.rtp.rtcp_interval,
                    rtcp_seed: rand::random(),
                    // Kept: a call that moves to a REFER's target starts a new session.
                    cname: self.cname.clone(),
                    clock_rate: 8000,
                    initial_seq: rand::random(),
                    initial_ts: rand::random(),
                    wallclock: clock::wallclock(),
                };
                let mut session = Session::new(config, now);
                session.set_sending(sending);
                if self.confirmed {
                    session.confirm(now);
                }
                self.session = Some(session);
                self.playout = PlayoutClock::new(now);
            }
        }
        self.sync_gate();
        tracing::debug!(codec = media.codec.name(), direction = ?media.local_direction, "SIP media");
        LegInput::Media {
            codec: media.codec,
            hold,
        }
    }

    fn rtp_in(&mut self, from: SocketAddr, n: usize, inputs: &mut VecDeque<LegInput>) {
        let now = clock::now();
        let Some(session) = self.session.as_mut() else {
            if self.early.len() < EARLY_RTP {
                let datagram = self.rtp_buf.get(..n).unwrap_or_default();
                self.early.push((from, datagram.to_vec()));
            }
            return;
        };
        let datagram = self.rtp_buf.get(..n).unwrap_or_default();
        if let Some(audio) = session.handle_rtp(now, from, datagram) {
            inputs.push_back(LegInput::Audio(LegAudio::new(
                now,
                audio.seq,
                audio.timestamp,
                audio.marker,
                audio.ssrc.0,
                audio.payload,
            )));
        }
        self.events(inputs);
    }

    /// The session's events after an input, and what they mean for the leg.
    fn events(&mut self, inputs: &mut VecDeque<LegInput>) {
        self.sync_gate();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        while let Some(event) = session.poll_event() {
            match event {
                RtpEvent::Dtmf { digit, duration_ms } => inputs.push_back(LegInput::Dtmf {
                    digit,
                    duration_ms,
                    source: DtmfSource::Rfc4733,
                }),
                RtpEvent::SourceLearned(addr) => {
                    tracing::debug!(%addr, "RTP source learned")
                }
                RtpEvent::PeerHeard => {
                    let _ = self.sip.send(SipCommand::PeerMedia(self.call));
                }
                other => tracing::trace!(?other, "RTP event"),
            }
        }
    }

    fn rtcp_in(&mut self, from: SocketAddr, n: usize, inputs: &mut VecDeque<LegInput>) {
        if let Some(session) = self.session.as_mut() {
            let datagram = self.rtcp_buf.get(..n).unwrap_or_default();
            session.handle_rtcp(clock::now(), from, datagram);
            self.events(inputs);
        }
    }

    /// After the session's input: starts the ticks when it has just opened, and adds its new
    /// foreign-source drops to the metrics.
    fn sync_gate(&mut self) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        if !self.ticking && (session.is_open() || self.early_media) {
            self.ticking = true;
            // The first tick is the next one on the grid the clock got when media was agreed:
            // no burst of catch-up ticks for the time the gate was shut, and the phase relative
            // to the caller's frames is whatever it was (a tick at the very instant of the
            // caller's first packet would sit just before its frames fall due, and slew). At
            // most 64·T1 plus the grace of 20 ms steps.
            let now = clock::now();
            while self.playout.tick_at() < now {
                self.playout.advance(None);
            }
            tracing::debug!("RTP open: sending to the caller");
        }
        let foreign = session.stats().foreign_source;
        if foreign > self.foreign_counted {
            self.metrics
                .rtp_foreign_dropped
                .fetch_add(foreign - self.foreign_counted, Ordering::Relaxed);
            self.foreign_counted = foreign;
        }
    }

    async fn flush_rtcp(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        while let Some(transmit) = session.poll_transmit() {
            let _ = self
                .sockets
                .rtcp
                .send_to(&transmit.bytes, transmit.dest)
                .await;
        }
    }

    /// Everything readable now, without waiting (bounded).
    fn take_ready(&mut self, inputs: &mut VecDeque<LegInput>, rtp_budget: usize) {
        while let Ok(signal) = self.signals.try_recv() {
            self.signal(signal, inputs);
        }
        for _ in 0..rtp_budget {
            let Ok((n, from)) = self.sockets.rtp.try_recv_from(&mut self.rtp_buf) else {
                break;
            };
            self.rtp_in(from, n, inputs);
        }
        for _ in 0..rtp_budget {
            let Ok((n, from)) = self.sockets.rtcp.try_recv_from(&mut self.rtcp_buf) else {
                break;
            };
            self.rtcp_in(from, n, inputs);
        }
    }
}

impl Leg for SipLeg {
    async fn readable(&mut self, inputs: &mut VecDeque<LegInput>) {
        tokio::select! {
            // Signalling first: media agreed before the RTP it applies to.
            biased;
            signal = self.signals.recv() => match signal {
                Some(signal) => self.signal(signal, inputs),
                // The SIP task is gone (shutdown).
                None => {
                    inputs.push_back(LegInput::Ended(EndReason::Shutdown));
                    return;
                }
            },
            received = self.sockets.rtp.recv_from(&mut self.rtp_buf) => {
                if let Ok((n, from)) = received {
                    self.rtp_in(from, n, inputs);
                }
            }
            received = self.sockets.rtcp.recv_from(&mut self.rtcp_buf) => {
                if let Ok((n, from)) = received {
                    self.rtcp_in(from, n, inputs);
                }
            }
        }
        self.take_ready(inputs, MAX_BATCH);
    }

    fn drain(&mut self, inputs: &mut VecDeque<LegInput>) {
        self.take_ready(inputs, DRAIN_BEFORE_TICK);
    }

    fn tick_at(&self) -> Option<Instant> {
        self.ticking.then(|| self.playout.tick_at())
    }

    async fn send_frame(
        &mut self,
        now: Instant,
        frame: &[u8; FRAME_SAMPLES],
        next_due: Option<Instant>,
    ) {
        // Ticks land just after the caller's next frame falls due. After a stall they catch
        // up at once (each is 20 ms after the one before), so the RTP clock keeps real time.
        self.playout.advance(next_due);
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let mut packet = [0u8; 12 + FRAME_SAMPLES];
        if let Some((dest, len)) = session.send_audio(now, frame, FRAME_SAMPLES as u32, &mut packet)
        {
            let _ = self
                .sockets
                .rtp
                .send_to(packet.get(..len).unwrap_or_default(), dest)
                .await;
        }
    }

    fn timer_at(&self) -> Option<Instant> {
        self.session.as_ref().and_then(Session::poll_timeout)
    }

    async fn on_timer(&mut self, now: Instant) {
        if let Some(session) = self.session.as_mut() {
            session.handle_timeout(now);
        }
        self.sync_gate();
        self.flush_rtcp().await;
    }

    fn expects_media(&self) -> bool {
        self.receiving && !self.idle
    }

    fn clear(&mut self) {}

    fn mark(&mut self, _now: Instant, _name: &'static str) {}

    /// Blind transfer by REFER (RFC 3515): the caller's side calls the target itself; a number
    /// goes as a `tel:` URI. A caller whose Allow leaves REFER out is bridged instead: earshot
    /// calls the target ([`SipCommand::Bridge`]). The SIP task reports the outcome
    /// ([`SipSignal::Transfer`]).
    fn transfer(&mut self, target: &TransferTarget) -> TransferStart {
        let (command, method) = if self.refer {
            let uri = if target.is_sip() {
                target.as_str().to_owned()
            } else {
                format!("tel:{}", target.as_str())
            };
            let refer = SipCommand::Refer {
                call: self.call,
                target: uri,
                then_bridge: target.clone(),
            };
            (refer, TransferMethod::Refer)
        } else {
            let bridge = SipCommand::Bridge {
                call: self.call,
                target: target.clone(),
            };
            (bridge, TransferMethod::Bridge)
        };
        if self.sip.send(command).is_ok() {
            TransferStart::Pending(method)
        } else {
            TransferStart::Failed(TransferFailure::CallEnding)
        }
    }

    fn take_bridge(&mut self) -> Option<BridgePeer> {
        self.bridge.take()
    }

    fn hang_up(&mut self, _reason: EndReason) -> bool {
        // The SIP task sends BYE (or answers the INVITE with an error) and reports the end.
        self.sip.send(SipCommand::Hangup(self.call)).is_err()
    }

    async fn finish(mut self) -> LegStats {
        let mut stats = std::mem::take(&mut self.earlier);
        let now = clock::now();
        if let Some(session) = self.session.as_mut() {
            if let Some(bye) = session.bye(now) {
                let _ = self.sockets.rtcp.send_to(&bye.bytes, bye.dest).await;
            }
            add_stats(&mut stats, session);
        }
        stats
    }
}

/// Adds a session's counters to a leg's (the jitter of the latest session stands).
fn add_stats(stats: &mut LegStats, session: &Session) {
    let s = session.stats();
    stats.packets_received += s.packets_received;
    stats.packets_lost += s.packets_lost;
    stats.packets_sent += s.packets_sent;
    stats.jitter_ms = s.jitter_ms();
    stats.malformed_packets += s.malformed + s.wrong_pt + s.foreign_source;
}
