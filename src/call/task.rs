//! The SIP call task: the driver of one SIP call's media. It moves RTP between the call's
//! sockets and its sans-IO [`Session`], runs the 20 ms clock of the call's [`Pipeline`], and
//! enforces the call's limits (maximum duration, RTP silence).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::event::{CallEvent, CallInfo, CallStats};
use super::pipeline::{Pipeline, Services};
use super::{CallCommand, CallSettings, LiveState};
use crate::clock;
use crate::media::frame::FRAME_SAMPLES;
use crate::media::g711::Law;
use crate::media::playout_clock::PlayoutClock;
use crate::net::rtp::RtpSockets;
use crate::net::sip::SipCommand;
use crate::rtp::{RtpEvent, Session, SessionConfig, Ssrc};
use crate::sip::endpoint::CallRef;
use crate::sip::sdp::{Codec, Direction, Negotiated};

/// Largest datagram read from an RTP socket; larger ones are truncated and fail to parse.
const MAX_DATAGRAM: usize = 1500;
/// Datagrams already waiting on the RTP socket that are taken before a tick's frame is chosen
/// (bounded, so that a flood cannot hold the tick up).
const DRAIN_BEFORE_TICK: usize = 4;

pub(super) struct CallTask {
    call: CallRef,
    info: Arc<CallInfo>,
    sockets: RtpSockets,
    settings: Arc<CallSettings>,
    services: Services,
    sip: mpsc::UnboundedSender<SipCommand>,
    session: Option<Session>,
    pipeline: Pipeline,
    live: watch::Sender<LiveState>,
    /// Whether our direction allows sending (not while we hold or are held inactive).
    sending: bool,
    /// Whether the caller sends to us (a caller holding us with sendonly still does).
    receiving: bool,
    started: Instant,
    /// When media was first negotiated: the silence timeout counts from here.
    media_since: Option<Instant>,
    hangup_requested: bool,
    end_reason: String,
}

impl CallTask {
    pub(super) fn new(
        call: CallRef,
        info: Arc<CallInfo>,
        sockets: RtpSockets,
        settings: Arc<CallSettings>,
        services: Services,
        sip: mpsc::UnboundedSender<SipCommand>,
        live: watch::Sender<LiveState>,
    ) -> Self {
        let pipeline = Pipeline::with_jitter(&services, &info, live.clone(), settings.jitter);
        Self {
            call,
            info,
            sockets,
            settings,
            services,
            sip,
            session: None,
            pipeline,
            live,
            sending: true,
            receiving: true,
            started: clock::now(),
            media_since: None,
            hangup_requested: false,
            end_reason: "remote hangup".into(),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<CallCommand>) {
        let mut rtp_buf = vec![0u8; MAX_DATAGRAM];
        let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
        // Ticks land just after the caller's next frame falls due. After a stall they catch
        // up at once (each is 20 ms after the one before, however late), so the RTP clock keeps
        // real time.
        let mut playout = PlayoutClock::new(clock::now());
        let max_end = self
            .settings
            .max_duration
            .map(|d| tokio::time::Instant::from_std(self.started + d));
        loop {
            let rtcp_at = self
                .session
                .as_ref()
                .and_then(Session::poll_timeout)
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(CallCommand::Ended(reason)) => {
                        // A hangup we asked for keeps our own, more precise reason.
                        if let (Some(reason), false) = (reason, self.hangup_requested) {
                            self.end_reason = reason;
                        }
                        break;
                    }
                    None => break,
                    Some(command) => self.command(command),
                },
                received = self.sockets.rtp.recv_from(&mut rtp_buf) => {
                    if let Ok((n, from)) = received {
                        self.rtp_in(from, rtp_buf.get(..n).unwrap_or_default());
                    }
                }
                received = self.sockets.rtcp.recv_from(&mut rtcp_buf) => {
                    if let (Ok((n, from)), Some(session)) = (received, self.session.as_mut()) {
                        session.handle_rtcp(clock::now(), from, rtcp_buf.get(..n).unwrap_or_default());
                    }
                }
                _ = clock::sleep_until(Some(tokio::time::Instant::from_std(playout.tick_at()))) => {
                    // A datagram the reactor has already seen (it became readable in the same
                    // poll as the timer) belongs before this tick's frame.
                    for _ in 0..DRAIN_BEFORE_TICK {
                        let Ok((n, from)) = self.sockets.rtp.try_recv_from(&mut rtp_buf) else {
                            break;
                        };
                        self.rtp_in(from, rtp_buf.get(..n).unwrap_or_default());
                    }
                    self.playout_tick().await;
                    playout.advance(self.pipeline.next_due());
                }
                _ = clock::sleep_until(rtcp_at) => {
                    if let Some(session) = self.session.as_mut() {
                        session.handle_timeout(clock::now());
                    }
                    self.flush_rtcp().await;
                }
                _ = clock::sleep_until(max_end), if !self.hangup_requested => {
                    tracing::info!(call = %self.info.id, "maximum call duration reached, hanging up");
                    self.request_hangup("max duration");
                }
            }
        }
        self.finish().await;
    }

    fn command(&mut self, command: CallCommand) {
        match command {
            CallCommand::Confirmed => tracing::debug!(call = %self.info.id, "call confirmed"),
            CallCommand::Media(media) => self.apply_media(media),
            CallCommand::Dtmf {
                digit,
                duration_ms,
                via,
            } => self.dtmf(digit, duration_ms, via),
            CallCommand::Hangup => self.request_hangup("local hangup"),
            CallCommand::Listen(on) => self.pipeline.set_listen(on),
            CallCommand::Ended(_) => {}
        }
    }

    fn dtmf(&self, digit: char, duration_ms: u32, via: &'static str) {
        tracing::debug!(call = %self.info.id, %digit, duration_ms, via, "DTMF");
        let id = self.info.id.clone();
        let _ = self.services.events.send(CallEvent::Dtmf {
            id,
            digit,
            duration_ms,
            via: via.to_string(),
        });
    }

    fn apply_media(&mut self, media: Negotiated) {
        let now = clock::now();
        let (law, codec) = match media.codec {
            Codec::Pcmu => (Law::Ulaw, "PCMU"),
            Codec::Pcma => (Law::Alaw, "PCMA"),
        };
        self.pipeline.set_law(law);
        self.sending = media.local_direction.sends();
        self.receiving = media.local_direction.receives();
        let hold = !matches!(
            media.remote_direction,
            Direction::SendRecv | Direction::RecvOnly
        );
        let was_hold = self.live.borrow().hold;
        self.live.send_modify(|l| {
            l.codec = Some(codec);
            l.hold = hold;
        });
        if hold != was_hold {
            let _ = self.services.events.send(CallEvent::Hold {
                id: self.info.id.clone(),
                on: hold,
            });
        }
        match self.session.as_mut() {
            Some(session) => {
                session.set_remote(media.remote_rtp, media.remote_rtcp);
                session.set_sending(self.sending);
            }
            None => {
                let config = SessionConfig {
                    local_ssrc: Ssrc(rand::random()),
                    payload_type: media.codec.payload_type(),
                    dtmf_pt: media.dtmf_pt,
                    remote_rtp: media.remote_rtp,
                    remote_rtcp: media.remote_rtcp,
                    learn_packets: self.settings.learn_packets,
                    rtcp_interval: self.settings.rtcp_interval,
                    rtcp_seed: rand::random(),
                    cname: format!("earshot-{}", self.info.id),
                    clock_rate: 8000,
                    initial_seq: rand::random(),
                    initial_ts: rand::random(),
                    wallclock: clock::wallclock(),
                };
                let mut session = Session::new(config, now);
                session.set_sending(self.sending);
                self.session = Some(session);
                self.media_since = Some(now);
                self.live.send_modify(|l| l.answered = true);
                let _ = self.services.events.send(CallEvent::Answered {
                    id: self.info.id.clone(),
                    codec: codec.into(),
                });
            }
        }
        tracing::debug!(call = %self.info.id, codec, direction = ?media.local_direction, "media");
    }

    fn rtp_in(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = clock::now();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if let Some(audio) = session.handle_rtp(now, from, datagram) {
            self.pipeline.receive(
                now,
                audio.seq,
                audio.timestamp,
                audio.marker,
                audio.ssrc.0,
                audio.payload,
            );
        }
        while let Some(event) = session.poll_event() {
            match event {
                RtpEvent::Dtmf { digit, duration_ms } => {
                    tracing::debug!(call = %self.info.id, %digit, duration_ms, "DTMF (RFC 4733)");
                    let id = self.info.id.clone();
                    let _ = self.services.events.send(CallEvent::Dtmf {
                        id,
                        digit,
                        duration_ms,
                        via: "rfc4733".into(),
                    });
                }
                RtpEvent::SourceLearned(addr) => {
                    tracing::debug!(call = %self.info.id, %addr, "RTP source learned")
                }
                other => tracing::trace!(call = %self.info.id, ?other, "RTP event"),
            }
        }
    }

    /// Every 20 ms: one frame through the pipeline, one packet to the caller.
    async fn playout_tick(&mut self) {
        let now = clock::now();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let mut payload = [0u8; FRAME_SAMPLES];
        self.pipeline.tick(now, &mut payload);
        let mut packet = [0u8; 12 + FRAME_SAMPLES];
        if let Some((dest, len)) =
            session.send_audio(now, &payload, FRAME_SAMPLES as u32, &mut packet)
        {
            let _ = self
                .sockets
                .rtp
                .send_to(packet.get(..len).unwrap_or_default(), dest)
                .await;
        }
        self.check_silence(now);
    }

    /// Hangs up when the caller should be sending but nothing came for the timeout.
    fn check_silence(&mut self, now: Instant) {
        let (Some(limit), Some(since)) = (self.settings.silence_timeout, self.media_since) else {
            return;
        };
        // On hold by agreement (inactive) silence is expected.
        if self.hangup_requested || !self.receiving {
            return;
        }
        let last = self
            .session
            .as_ref()
            .and_then(Session::last_packet_at)
            .unwrap_or(since)
            .max(since);
        if now.saturating_duration_since(last) >= limit {
            tracing::info!(call = %self.info.id, silent_secs = limit.as_secs(), "no RTP received, hanging up");
            self.request_hangup("rtp timeout");
        }
    }

    fn request_hangup(&mut self, reason: &'static str) {
        if self.hangup_requested {
            return;
        }
        self.hangup_requested = true;
        self.end_reason = reason.into();
        let _ = self.sip.send(SipCommand::Hangup(self.call));
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

    async fn finish(mut self) {
        let now = clock::now();
        let mut stats = CallStats {
            concealed_frames: self.pipeline.jitter_stats().concealed,
            jitter_delay_ms: self.pipeline.mean_delay_ms(),
            ..CallStats::default()
        };
        if let Some(session) = self.session.as_mut() {
            if let Some(bye) = session.bye(now) {
                let _ = self.sockets.rtcp.send_to(&bye.bytes, bye.dest).await;
            }
            let s = session.stats();
            stats.packets_received = s.packets_received;
            stats.packets_lost = s.packets_lost;
            stats.packets_sent = s.packets_sent;
            stats.jitter_ms = s.jitter_ms();
            stats.malformed_packets = s.malformed + s.wrong_pt + s.foreign_source;
        }
        tracing::debug!(
            call = %self.info.id,
            received = stats.packets_received,
            lost = stats.packets_lost,
            sent = stats.packets_sent,
            "call media finished"
        );
        self.pipeline.finish();
        self.services.registry.remove(&self.info.id);
        let reason = std::mem::take(&mut self.end_reason);
        let _ = self.services.events.send(CallEvent::Ended {
            id: self.info.id.clone(),
            reason,
            stats,
        });
    }
}
