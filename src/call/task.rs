//! The call task: the driver of one call's media. It moves RTP between the call's sockets and
//! its sans-IO [`Session`], runs the 20 ms playout clock (jitter buffer out, greeting in), and
//! enforces the call's limits (maximum duration, RTP silence).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{CallCommand, CallSettings, GreetingPlayer};
use crate::media::frame::{FRAME_DURATION, FRAME_SAMPLES, Frame, SILENCE};
use crate::media::g711::Law;
use crate::media::jitter::{JitterBuffer, JitterConfig};
use crate::net::clock;
use crate::net::rtp::RtpSockets;
use crate::net::sip::SipCommand;
use crate::rtp::{RtpEvent, Session, SessionConfig, Ssrc};
use crate::sip::endpoint::CallRef;
use crate::sip::sdp::{Codec, Direction, Negotiated};

/// Largest datagram read from an RTP socket; larger ones are truncated and fail to parse.
const MAX_DATAGRAM: usize = 1500;
/// Largest RTP payload decoded: 60 ms of G.711.
const MAX_SAMPLES: usize = 3 * FRAME_SAMPLES;

pub(super) struct CallTask {
    call: CallRef,
    sockets: RtpSockets,
    settings: Arc<CallSettings>,
    greeting: GreetingPlayer,
    sip: mpsc::UnboundedSender<SipCommand>,
    session: Option<Session>,
    law: Law,
    jitter: JitterBuffer,
    /// Whether we may send RTP (not while the caller holds us with sendonly/inactive... from
    /// our side: our direction allows sending).
    sending: bool,
    started: Instant,
    /// When media was first negotiated: the silence timeout counts from here.
    media_since: Option<Instant>,
    hangup_requested: bool,
}

impl CallTask {
    pub(super) fn new(
        call: CallRef,
        sockets: RtpSockets,
        settings: Arc<CallSettings>,
        greeting: GreetingPlayer,
        sip: mpsc::UnboundedSender<SipCommand>,
    ) -> Self {
        Self {
            call,
            sockets,
            settings,
            greeting,
            sip,
            session: None,
            law: Law::Ulaw,
            jitter: JitterBuffer::new(JitterConfig::default()),
            sending: true,
            started: clock::now(),
            media_since: None,
            hangup_requested: false,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<CallCommand>) {
        let mut rtp_buf = vec![0u8; MAX_DATAGRAM];
        let mut rtcp_buf = vec![0u8; MAX_DATAGRAM];
        let mut tick = tokio::time::interval(FRAME_DURATION);
        // Catch up after a stall so the RTP clock keeps real time.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
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
                    Some(CallCommand::Ended) | None => break,
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
                _ = tick.tick() => self.playout_tick().await,
                _ = clock::sleep_until(rtcp_at) => {
                    if let Some(session) = self.session.as_mut() {
                        session.handle_timeout(clock::now());
                    }
                    self.flush_rtcp().await;
                }
                _ = clock::sleep_until(max_end), if !self.hangup_requested => {
                    tracing::info!(call = self.call.0, "maximum call duration reached, hanging up");
                    self.request_hangup();
                }
            }
        }
        self.finish().await;
    }

    fn command(&mut self, command: CallCommand) {
        match command {
            CallCommand::Confirmed => tracing::debug!(call = self.call.0, "call confirmed"),
            CallCommand::Media(media) => self.apply_media(media),
            CallCommand::Dtmf {
                digit,
                duration_ms,
                via,
            } => {
                tracing::debug!(call = self.call.0, %digit, duration_ms, via, "DTMF");
            }
            CallCommand::Ended => {}
        }
    }

    fn apply_media(&mut self, media: Negotiated) {
        let now = clock::now();
        self.law = match media.codec {
            Codec::Pcmu => Law::Ulaw,
            Codec::Pcma => Law::Alaw,
        };
        self.sending = matches!(
            media.local_direction,
            Direction::SendRecv | Direction::SendOnly
        );
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
                    cname: format!("earshot-{}", self.call.0),
                    clock_rate: 8000,
                    initial_seq: rand::random(),
                    initial_ts: rand::random(),
                    wallclock: clock::wallclock(),
                };
                let mut session = Session::new(config, now);
                session.set_sending(self.sending);
                self.session = Some(session);
                self.media_since = Some(now);
            }
        }
        tracing::debug!(call = self.call.0, codec = ?media.codec, direction = ?media.local_direction, "media");
    }

    fn rtp_in(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = clock::now();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if let Some(audio) = session.handle_rtp(now, from, datagram) {
            let mut pcm = [0i16; MAX_SAMPLES];
            let n = audio.payload.len().min(MAX_SAMPLES);
            if let (Some(src), Some(dst)) = (audio.payload.get(..n), pcm.get_mut(..n)) {
                self.law.decode(src, dst);
                self.jitter.push(now, audio.seq, audio.timestamp, audio.marker, audio.ssrc.0, dst);
            }
        }
        while let Some(event) = session.poll_event() {
            match event {
                RtpEvent::Dtmf { digit, duration_ms } => {
                    tracing::debug!(call = self.call.0, %digit, duration_ms, "DTMF (RFC 4733)");
                }
                RtpEvent::SourceLearned(addr) => {
                    tracing::debug!(call = self.call.0, %addr, "RTP source learned")
                }
                other => tracing::trace!(call = self.call.0, ?other, "RTP event"),
            }
        }
    }

    /// Every 20 ms: one frame out of the jitter buffer, one frame of ours to the caller.
    async fn playout_tick(&mut self) {
        let now = clock::now();
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let mut heard: Frame = SILENCE;
        self.jitter.pop(now, &mut heard);

        let mut said: Frame = SILENCE;
        self.greeting.next_frame(&mut said);
        let mut payload = [0u8; FRAME_SAMPLES];
        self.law.encode(&said, &mut payload);
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

    fn check_silence(&mut self, now: Instant) {
        let (Some(limit), Some(since)) = (self.settings.silence_timeout, self.media_since) else {
            return;
        };
        if self.hangup_requested || !self.sending_or_receiving_expected() {
            return;
        }
        let last = self
            .session
            .as_ref()
            .and_then(Session::last_packet_at)
            .unwrap_or(since);
        if now.saturating_duration_since(last) >= limit {
            tracing::info!(
                call = self.call.0,
                silent_secs = limit.as_secs(),
                "no RTP received, hanging up"
            );
            self.request_hangup();
        }
    }

    /// On hold (the caller sends nothing by agreement) silence is expected.
    fn sending_or_receiving_expected(&self) -> bool {
        self.sending
    }

    fn request_hangup(&mut self) {
        self.hangup_requested = true;
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

    async fn finish(&mut self) {
        let now = clock::now();
        if let Some(session) = self.session.as_mut() {
            if let Some(bye) = session.bye(now) {
                let _ = self.sockets.rtcp.send_to(&bye.bytes, bye.dest).await;
            }
            let stats = session.stats();
            tracing::debug!(
                call = self.call.0,
                received = stats.packets_received,
                lost = stats.packets_lost,
                sent = stats.packets_sent,
                "call media finished"
            );
        }
    }
}
