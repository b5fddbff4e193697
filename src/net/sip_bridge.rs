//! Bridged transfers of SIP calls: when the caller's side does not take REFER (RFC 3515; its
//! Allow leaves REFER out, or it answers our REFER 405/501/420), earshot places a call to the
//! target itself (the far leg: an outbound INVITE through the dial rules of
//! [`super::sip_dial`], RFC 3261 §13 as a UAC: a number through the trunk the call came in on,
//! else `[calls].transfer_trunk`, else the first trunk) and joins the two legs' media.
//!
//! One call task keeps owning the call: once the target answers, the far leg's media link
//! ([`crate::call::bridge`]) becomes the call's responder. The far leg itself is a
//! [`SipLeg`] driven here by a small task with its own jitter buffer and 20 ms clock; it
//! never becomes a call of its own (no second record). The SIP task tells the caller's leg
//! how it goes: placed (the link, held until the answer), answered (`transferred`, method
//! `bridge`), failed with the target's status (`transfer_failed`, the call goes on as
//! before), and the target hanging up (the caller gets a BYE). The caller hanging up ends the
//! far leg (BYE, or CANCEL while it rings).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::mpsc;

use super::sip::{LoopState, SipDriver};
use super::sip_dial::DialError;
use super::sip_leg::{SipLeg, SipSignal};
use crate::call::bridge::{self, BridgeEnd, BridgePeer};
use crate::call::{
    Codec, EndReason as CallEnd, Leg, LegInput, TransferFailure, TransferMethod, TransferTarget,
};
use crate::clock;
use crate::media::frame::{FRAME_SAMPLES, SILENCE};
use crate::media::g711::Law;
use crate::media::jitter::{JitterBuffer, JitterConfig};
use crate::metrics::Metrics;
use crate::sip::endpoint::{CallRef, Event, FailReason};

/// Largest payload decoded from one packet of the target: 60 ms of G.711.
const MAX_SAMPLES: usize = 3 * FRAME_SAMPLES;

/// A far leg in the SIP task's table.
#[derive(Debug)]
pub struct FarLeg {
    /// The call whose caller is bridged to it.
    pub caller: CallRef,
    pub signals: mpsc::UnboundedSender<SipSignal>,
}

impl FarLeg {
    fn signal(&self, signal: SipSignal) {
        let _ = self.signals.send(signal);
    }
}

/// Why no far leg could be routed, in the transfer's terms: with no trunk for a number (or no
/// address for a URI) there is no way to transfer at all.
fn route_failure(err: &DialError) -> TransferFailure {
    match err {
        DialError::NoTrunk | DialError::NeedsAddress | DialError::UnknownTrunk(_) => {
            TransferFailure::NotSupported
        }
        DialError::NotAllowed => TransferFailure::Refused,
        DialError::NoMediaPorts | DialError::Refused(_) => TransferFailure::Unavailable,
    }
}

/// Why a bridged target's call failed, in the transfer's terms.
pub fn target_failure(status: u16, reason: FailReason) -> TransferFailure {
    match reason {
        FailReason::Rejected => TransferFailure::from_sip_status(status),
        FailReason::Timeout | FailReason::NoAnswer | FailReason::Cancelled => {
            TransferFailure::Timeout
        }
        FailReason::AuthFailed
        | FailReason::TooManyRedirects
        | FailReason::RedirectLoop
        | FailReason::BadRedirect
        | FailReason::UnusableAnswer => TransferFailure::Refused,
    }
}

impl SipDriver {
    /// Bridges the caller of `caller` to `target`: places the far leg, and tells the caller's
    /// leg it is placed, or why not.
    pub(super) fn bridge(
        &mut self,
        state: &mut LoopState,
        caller: CallRef,
        target: &TransferTarget,
    ) {
        if !state.calls.contains_key(&caller) {
            return;
        }
        let signal = match self.place_far_leg(state, caller, target) {
            Ok(peer) => SipSignal::BridgePlaced(peer),
            Err(reason) => SipSignal::Transfer(Err(reason)),
        };
        if let Some(call) = state.calls.get(&caller) {
            call.signal(signal);
        }
    }

    fn place_far_leg(
        &mut self,
        state: &mut LoopState,
        caller: CallRef,
        target: &TransferTarget,
    ) -> Result<BridgePeer, TransferFailure> {
        let came_from = self.endpoint.call_peer(caller);
        let route = self
            .dial
            .route_transfer(target, came_from, self.endpoint.advertised())
            .map_err(|err| {
                tracing::info!(%err, "bridged transfer not placed");
                route_failure(&err)
            })?;
        let (far, sockets) = self.place_route(route, None).map_err(|err| {
            tracing::info!(%err, "bridged transfer not placed");
            route_failure(&err)
        })?;
        let cname = format!("earshot-bridge-{}", rand::random::<u32>());
        let (leg, signals) = self.calls.leg(far, sockets, cname);
        let (peer, end) = bridge::pair(Arc::default());
        tokio::spawn(run_far_leg(leg, end, self.metrics.clone()));
        state.bridges.insert(far, FarLeg { caller, signals });
        Ok(peer)
    }

    /// An endpoint event of a far leg: answered, failed, ended or its media changed.
    pub(super) fn far_leg_event(&mut self, state: &mut LoopState, event: Event) {
        match event {
            Event::Answered { call, media } => {
                if let Some(far) = state.bridges.get(&call) {
                    far.signal(SipSignal::Media(media));
                    far.signal(SipSignal::Confirmed);
                    if let Some(caller) = state.calls.get(&far.caller) {
                        caller.signal(SipSignal::Transfer(Ok(TransferMethod::Bridge)));
                    }
                }
            }
            Event::MediaChanged { call, media } => {
                if let Some(far) = state.bridges.get(&call) {
                    far.signal(SipSignal::Media(media));
                }
            }
            Event::Failed {
                call,
                status,
                reason,
            } => {
                if let Some(far) = state.bridges.remove(&call) {
                    tracing::info!(status, ?reason, "bridged transfer's target did not answer");
                    far.signal(SipSignal::Ended(CallEnd::Rejected(status)));
                    if let Some(caller) = state.calls.get(&far.caller) {
                        let failure = target_failure(status, reason);
                        caller.signal(SipSignal::Transfer(Err(failure)));
                    }
                }
            }
            Event::Ended { call, .. } => {
                if let Some(far) = state.bridges.remove(&call) {
                    far.signal(SipSignal::Ended(CallEnd::RemoteHangup));
                    if let Some(caller) = state.calls.get(&far.caller) {
                        caller.signal(SipSignal::TargetEnded);
                    }
                }
            }
            // The target's ringing, DTMF and requests are not the caller's business.
            other => tracing::trace!(?other, "far leg event"),
        }
    }

    /// The caller's call ended: its far legs end too (BYE, or CANCEL while ringing).
    pub(super) fn end_far_legs(&mut self, state: &LoopState, caller: CallRef) {
        let now = clock::now();
        for (far, leg) in &state.bridges {
            if leg.caller == caller {
                self.endpoint.hangup(now, *far);
            }
        }
    }
}

/// The call of an endpoint event, when it names one.
pub fn event_call(event: &Event) -> Option<CallRef> {
    match event {
        Event::Confirmed { call }
        | Event::MediaChanged { call, .. }
        | Event::Dtmf { call, .. }
        | Event::Ended { call, .. }
        | Event::Progress { call, .. }
        | Event::Answered { call, .. }
        | Event::Failed { call, .. }
        | Event::ReferRequested { call, .. }
        | Event::Transfer { call, .. } => Some(*call),
        Event::Incoming(_) | Event::Registration { .. } => None,
    }
}

/// The far leg's media: the target's packets through a jitter buffer into the link, the
/// caller's frames from the link to the target, every 20 ms of the leg's clock. Runs until the
/// SIP task ends the leg. No allocation per packet or frame.
async fn run_far_leg(mut leg: SipLeg, mut end: BridgeEnd, metrics: Arc<Metrics>) {
    let mut inputs: VecDeque<LegInput> = VecDeque::with_capacity(64);
    let mut media = FarMedia {
        jitter: JitterBuffer::new(JitterConfig::default()),
        law: Law::Ulaw,
    };
    let mut over = false;
    while !over {
        let tick_at = leg.tick_at().map(tokio::time::Instant::from_std);
        let timer_at = leg.timer_at().map(tokio::time::Instant::from_std);
        tokio::select! {
            () = leg.readable(&mut inputs) => {}
            () = clock::sleep_until(tick_at) => {
                leg.drain(&mut inputs);
                over = media.take(&mut inputs);
                let now = clock::now();
                let mut frame = SILENCE;
                media.jitter.pop(now, &mut frame);
                end.send(&frame);
                end.next_frame(&mut frame);
                let mut out = [0u8; FRAME_SAMPLES];
                media.law.encode(&frame, &mut out);
                leg.send_frame(now, &out, media.jitter.next_due()).await;
                metrics.bridge_frames_dropped.fetch_add(end.take_dropped(), Relaxed);
            }
            () = clock::sleep_until(timer_at) => leg.on_timer(clock::now()).await,
        }
        over |= media.take(&mut inputs);
    }
    let stats = leg.finish().await;
    tracing::debug!(
        received = stats.packets_received,
        sent = stats.packets_sent,
        "bridged target's media finished"
    );
}

/// The far leg's receiving side.
struct FarMedia {
    jitter: JitterBuffer,
    law: Law,
}

impl FarMedia {
    /// Takes the leg's inputs; returns whether the leg is over.
    fn take(&mut self, inputs: &mut VecDeque<LegInput>) -> bool {
        let mut over = false;
        while let Some(input) = inputs.pop_front() {
            match input {
                LegInput::Audio(audio) => {
                    let payload = audio.payload();
                    let mut pcm = [0i16; MAX_SAMPLES];
                    let n = payload.len().min(MAX_SAMPLES);
                    if let (Some(src), Some(dst)) = (payload.get(..n), pcm.get_mut(..n)) {
                        self.law.decode(src, dst);
                        self.jitter.push(
                            audio.at,
                            audio.seq,
                            audio.ts,
                            audio.marker,
                            audio.ssrc,
                            dst,
                        );
                    }
                }
                LegInput::Media { codec, .. } => {
                    self.law = match codec {
                        Codec::Pcmu => Law::Ulaw,
                        Codec::Pcma => Law::Alaw,
                    }
                }
                LegInput::Ended(_) => over = true,
                LegInput::Dtmf { .. }
                | LegInput::Transfer(_)
                | LegInput::TransferVia(_)
                | LegInput::TargetEnded
                | LegInput::Referred { .. } => {}
            }
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_that_cannot_be_routed_or_answered_names_the_transfer_failure() {
        assert_eq!(
            route_failure(&DialError::NoTrunk),
            TransferFailure::NotSupported
        );
        assert_eq!(
            route_failure(&DialError::NotAllowed),
            TransferFailure::Refused
        );
        assert_eq!(
            route_failure(&DialError::NoMediaPorts),
            TransferFailure::Unavailable
        );
        assert_eq!(
            target_failure(486, FailReason::Rejected),
            TransferFailure::Busy
        );
        assert_eq!(
            target_failure(487, FailReason::NoAnswer),
            TransferFailure::Timeout
        );
        assert_eq!(
            target_failure(401, FailReason::AuthFailed),
            TransferFailure::Refused
        );
    }
}
