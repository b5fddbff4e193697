//! The SIP driver: UDP and TCP sockets on `[sip].listen` around the sans-IO
//! [`Endpoint`]. It filters sources by `[sip].allow`, drops datagrams over
//! `[sip].max_message_bytes` (both counted, neither answered), feeds the endpoint, sends what
//! it asks, and carries call events to and from the call tasks (and the far legs of bridged
//! transfers, [`super::sip_bridge`], and the calls placed for the caller's REFERs,
//! [`super::sip_referred`]). It decides nothing about SIP itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::rtp::RtpSockets;
use super::sip_bridge::{self, FarLeg};
use super::sip_dial::{DialError, DialPolicy, DialRequest, Route};
use super::sip_leg::{SipCall, SipCalls, SipSignal};
use super::sip_referred::Referred;
use super::tcp::{self, TcpEvent, TcpLimits};
use crate::call::{
    CallEvent, CallHandle, EndReason as CallEnd, PlaceFailure, TransferFailure, TransferMethod,
    TransferTarget,
};
use crate::clock;
use crate::config::Cidr;
use crate::sip::dialog::{ConnId, Flow, Transport};
use crate::sip::endpoint::{
    CallRef, EndReason, Endpoint, Event, FailReason, ReferError, TransferProgress, Transmit,
};
use crate::sip::registration::{RegOutcome, TrunkRegistration};

/// Commands from the rest of the program to the SIP task.
#[derive(Debug)]
pub enum SipCommand {
    /// Hang up a call (max duration, RTP silence, the API).
    Hangup(CallRef),
    /// The call's RTP leg heard the peer for the first time.
    PeerMedia(CallRef),
    /// Apply a re-read configuration (SIGHUP).
    Reload(Box<Reload>),
    /// Place a call (`POST /api/calls`).
    Dial(Box<DialRequest>),
    /// Transfer a call by REFER (RFC 3515) to `target` (a sip:, sips: or tel: URI), or bridge
    /// it to `then_bridge` if the caller's side refuses REFER as not supported. The outcome
    /// reaches the call's leg as a [`SipSignal::Transfer`].
    Refer {
        call: CallRef,
        target: String,
        then_bridge: TransferTarget,
    },
    /// Bridge a call to `target` through a far leg ([`super::sip_bridge`]): its caller's side
    /// does not take REFER.
    Bridge {
        call: CallRef,
        target: TransferTarget,
    },
}

/// The settings SIGHUP can change without a restart.
#[derive(Debug)]
pub struct Reload {
    pub allow: Vec<Cidr>,
    pub trunks: Vec<TrunkRegistration>,
    pub greeting: crate::call::Greeting,
    pub listen_default: bool,
    /// `[calls].outbound_allow`, ring timeout and redirect limit, with the trunks.
    pub dial: DialPolicy,
}

/// Everything the SIP task needs, bound and ready.
pub struct SipDriver {
    pub endpoint: Endpoint,
    pub udp: UdpSocket,
    /// Taken by the accept loop when the driver starts.
    pub tcp: Option<TcpListener>,
    pub allow: Vec<Cidr>,
    pub limits: TcpLimits,
    pub calls: SipCalls,
    pub commands: mpsc::UnboundedReceiver<SipCommand>,
    /// A sender to `commands`, for whoever needs to reach the SIP task (reload, the API).
    pub sip_commands: mpsc::UnboundedSender<SipCommand>,
    /// Where the transport's counters go (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The call history: an INVITE whose Call-ID an earlier call had is refused.
    pub store: crate::store::Store,
    pub trunks: Vec<TrunkRegistration>,
    /// Ringing time before the 200 OK.
    pub ring: Duration,
    /// Where calls may be placed, and through which trunks.
    pub dial: DialPolicy,
    /// The draining switch: handed to the endpoint whenever it changes.
    pub drain: crate::call::Drain,
}

/// How long shutdown waits for BYEs and unregistrations to be answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Binds the UDP socket and TCP listener on `listen`.
pub async fn bind(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(listen).await?;
    let tcp = TcpListener::bind(udp.local_addr()?).await?;
    Ok((udp, tcp))
}

impl SipDriver {
    /// Runs until `shutdown` is cancelled and the calls have been hung up.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(1024);
        let next_conn = Arc::new(AtomicU64::new(1));
        let tcp_stop = CancellationToken::new();
        self.share_allow();
        if let Some(listener) = self.tcp.take() {
            let accept = tcp::accept_loop(
                listener,
                tcp_tx.clone(),
                self.limits.clone(),
                next_conn.clone(),
                tcp_stop.clone(),
            );
            tokio::spawn(accept);
        }

        let mut state = LoopState {
            conns: HashMap::new(),
            calls: HashMap::new(),
            tcp_tx,
            next_conn,
            tcp_stop: tcp_stop.clone(),
            pending_connects: HashMap::new(),
            dialled: Vec::new(),
            bridges: HashMap::new(),
            refers: HashMap::new(),
            referred: HashMap::new(),
        };
        let mut drain = self.drain.watch();
        self.endpoint.set_draining(*drain.borrow_and_update());
        let trunks = std::mem::take(&mut self.trunks);
        self.endpoint.set_trunks(clock::now(), trunks);
        self.drain(&mut state).await;

        // One byte more than the limit, so a longer datagram shows as filling the buffer.
        let mut buf = vec![0u8; self.limits.max_message.saturating_add(1)];
        let mut stopping: Option<tokio::time::Instant> = None;
        // systemd's watchdog is fed from this loop, so a wedged SIP task gets us restarted.
        let watchdog_every = crate::systemd::watchdog_interval().map(|d| d / 2);
        let mut watchdog =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
        loop {
            let deadline = self
                .endpoint
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let grace =
                stopping.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled(), if stopping.is_none() => {
                    let now = clock::now();
                    self.endpoint.shut_down(now);
                    let calls = state.calls.keys().chain(state.bridges.keys()).chain(state.referred.keys());
                    for call in calls.copied().collect::<Vec<_>>() {
                        self.endpoint.hangup(now, call);
                    }
                    stopping = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                }
                _ = tokio::time::sleep_until(grace), if stopping.is_some() => break,
                received = self.udp.recv_from(&mut buf) => {
                    match received {
                        Ok((n, from)) => self.datagram(Flow { transport: Transport::Udp, remote: from }, buf.get(..n).unwrap_or_default()),
                        Err(err) => tracing::debug!(%err, "SIP UDP receive error"),
                    }
                }
                Some(event) = tcp_rx.recv() => self.tcp_event(&mut state, event),
                // The sender lives in `self.drain`, so this never reports a closed channel.
                Ok(()) = drain.changed() => {
                    let draining = *drain.borrow_and_update();
                    self.endpoint.set_draining(draining);
                    tracing::info!(draining, calls = state.calls.len(), "SIP: draining switched");
                }
                Some(command) = self.commands.recv() => match command {
                    SipCommand::Hangup(call) => {
                        if !self.hang_up_held(&mut state, call) {
                            self.endpoint.hangup(clock::now(), call);
                        }
                    }
                    SipCommand::PeerMedia(call) => self.endpoint.peer_media(call),
                    SipCommand::Dial(request) => self.dial(&mut state, *request),
                    SipCommand::Refer { call, target, then_bridge } => {
                        match self.endpoint.refer(clock::now(), call, &target) {
                            Ok(()) => {
                                state.refers.insert(call, then_bridge);
                            }
                            Err(ReferError::NotSupported) => self.bridge_instead(&mut state, call, &then_bridge),
                            Err(err) => {
                                if let Some(call) = state.calls.get(&call) {
                                    call.signal(SipSignal::Transfer(Err(refer_refused(err))));
                                }
                            }
                        }
                    }
                    SipCommand::Bridge { call, target } => self.bridge(&mut state, call, &target),
                    SipCommand::Reload(reload) => {
                        let Reload { allow, trunks, greeting, listen_default, dial } = *reload;
                        self.allow = allow;
                        self.share_allow();
                        self.dial = dial;
                        self.endpoint.set_trunks(clock::now(), trunks);
                        self.calls.services.greeting = greeting;
                        self.calls.services.listen_default = listen_default;
                        tracing::info!("configuration reloaded");
                    }
                },
                _ = clock::sleep_until(deadline) => self.endpoint.handle_timeout(clock::now()),
                _ = watchdog.tick(), if watchdog_every.is_some() => crate::systemd::notify("WATCHDOG=1"),
            }
            self.drain(&mut state).await;
            // The INVITEs are on the wire now: the API may answer.
            for (reply, result) in state.dialled.drain(..) {
                let _ = reply.send(result);
            }
            self.publish_flood_counters();
            if stopping.is_some() && self.endpoint.is_idle() {
                break;
            }
        }
        tcp_stop.cancel();
        for call in state.calls.values() {
            call.signal(SipSignal::Ended(CallEnd::Shutdown));
        }
        for far in state.bridges.values() {
            let _ = far.signals.send(SipSignal::Ended(CallEnd::Shutdown));
        }
        for held in state.referred.values_mut().filter_map(Referred::take_held) {
            held.signal(SipSignal::Ended(CallEnd::Shutdown));
        }
    }

    /// The caller's side refused REFER as not supported: the transfer bridges instead.
    fn bridge_instead(&mut self, state: &mut LoopState, call: CallRef, target: &TransferTarget) {
        if let Some(caller) = state.calls.get(&call) {
            tracing::info!(call = %caller.handle.id(), "the caller's side does not take REFER: bridging");
            caller.signal(SipSignal::TransferVia(TransferMethod::Bridge));
        }
        self.bridge(state, call, target);
    }

    /// Hands `[sip].allow` to the TCP accept loop, which refuses connections before they take a
    /// slot.
    fn share_allow(&self) {
        if let Ok(mut shared) = self.limits.allow.write() {
            shared.clone_from(&self.allow);
        }
    }

    fn datagram(&mut self, flow: Flow, bytes: &[u8]) {
        if !self.allowed(flow.remote) {
            self.metrics.sip_blocked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if bytes.len() > self.limits.max_message {
            self.metrics.sip_oversized.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // RFC 5626 §3.5.1 keep-alives (CRLF pings) are not messages.
        if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return;
        }
        self.metrics.sip_received.fetch_add(1, Ordering::Relaxed);
        self.endpoint.handle_datagram(clock::now(), flow, bytes);
    }

    fn tcp_event(&mut self, state: &mut LoopState, event: TcpEvent) {
        match event {
            TcpEvent::Opened { conn, peer, writer } => {
                // The accept loop refuses these already; this catches a connection accepted
                // just before a reload narrowed the list.
                if !self.allowed(peer) {
                    self.metrics.sip_blocked.fetch_add(1, Ordering::Relaxed);
                    // Dropping the writer closes the connection.
                    return;
                }
                if let Some(queued) = state.pending_connects.remove(&peer) {
                    for bytes in queued {
                        let _ = writer.try_send(bytes);
                    }
                }
                state.conns.insert(conn, (peer, writer));
            }
            TcpEvent::Message { conn, peer, bytes } => {
                if state.conns.contains_key(&conn) {
                    self.datagram(
                        Flow {
                            transport: Transport::Tcp(Some(conn)),
                            remote: peer,
                        },
                        &bytes,
                    );
                }
            }
            TcpEvent::Closed { conn } => {
                state.conns.remove(&conn);
                self.endpoint.connection_closed(conn);
            }
            TcpEvent::ConnectFailed { peer } => {
                state.pending_connects.remove(&peer);
                tracing::debug!(%peer, "SIP TCP connect failed");
            }
        }
    }

    /// Copies the endpoint's flood counters and transaction count to `/metrics`.
    fn publish_flood_counters(&self) {
        let stats = self.endpoint.stats();
        let m = &self.metrics;
        let transactions = self.endpoint.server_transactions() as u64;
        m.sip_server_transactions
            .store(transactions, Ordering::Relaxed);
        m.sip_overload_dropped
            .store(stats.overload_dropped, Ordering::Relaxed);
        m.sip_overload_rejected
            .store(stats.overload_rejected, Ordering::Relaxed);
        m.sip_invites_limited
            .store(stats.invites_limited, Ordering::Relaxed);
        m.sip_stateless_responses
            .store(stats.stateless_responses, Ordering::Relaxed);
        m.sip_responses_limited
            .store(stats.responses_limited, Ordering::Relaxed);
        m.sip_refers_refused
            .store(stats.refers_refused, Ordering::Relaxed);
    }

    /// Whether the store has a call with this Call-ID. A read transaction: it neither waits
    /// for the store thread's writes (redb readers see the last commit) nor syncs, but it may
    /// read the disk, so the runtime moves this worker's other tasks away meanwhile
    /// (`block_in_place`). A store that cannot tell lets the call in (logged).
    fn call_id_used(&self, call_id: &str) -> bool {
        let found = tokio::task::block_in_place(|| {
            self.store.find_external(crate::call::Source::Sip, call_id)
        });
        match found {
            Ok(found) => found.is_some(),
            Err(err) => {
                tracing::error!(%err, "cannot check the Call-ID against the store");
                false
            }
        }
    }

    fn allowed(&self, from: SocketAddr) -> bool {
        self.allow.iter().any(|cidr| cidr.contains(from.ip()))
    }

    /// After every input: send everything, deliver every event.
    async fn drain(&mut self, state: &mut LoopState) {
        while let Some(transmit) = self.endpoint.poll_transmit() {
            self.transmit(state, transmit).await;
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.event(state, event);
            while let Some(transmit) = self.endpoint.poll_transmit() {
                self.transmit(state, transmit).await;
            }
        }
    }

    async fn transmit(&mut self, state: &mut LoopState, Transmit { flow, bytes }: Transmit) {
        self.metrics.sip_sent.fetch_add(1, Ordering::Relaxed);
        match flow.transport {
            Transport::Udp => {
                if let Err(err) = self.udp.send_to(&bytes, flow.remote).await {
                    tracing::debug!(%err, dest = %flow.remote, "SIP UDP send failed");
                }
            }
            Transport::Tcp(Some(conn)) if state.conns.contains_key(&conn) => {
                if let Some((_, writer)) = state.conns.get(&conn) {
                    // A full queue means the peer stopped reading: drop rather than block the
                    // whole SIP task on one connection.
                    let _ = writer.try_send(bytes);
                }
            }
            Transport::Tcp(_) => {
                // Reuse any connection to that peer, else open one.
                if let Some((_, writer)) =
                    state.conns.values().find(|(peer, _)| *peer == flow.remote)
                {
                    let _ = writer.try_send(bytes);
                    return;
                }
                if let Some(queue) = state.pending_connects.get_mut(&flow.remote) {
                    queue.push(bytes);
                    return;
                }
                state.pending_connects.insert(flow.remote, Vec::new());
                let conn = ConnId(state.next_conn.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(tcp::connect(
                    flow.remote,
                    conn,
                    bytes,
                    state.tcp_tx.clone(),
                    self.limits.clone(),
                    state.tcp_stop.clone(),
                ));
            }
        }
    }

    fn event(&mut self, state: &mut LoopState, event: Event) {
        let now = clock::now();
        if sip_bridge::event_call(&event).is_some_and(|call| state.bridges.contains_key(&call)) {
            self.far_leg_event(state, event);
            return;
        }
        if sip_bridge::event_call(&event).is_some_and(|call| state.referred.contains_key(&call)) {
            self.referred_event(state, event);
            return;
        }
        match event {
            Event::Incoming(incoming) if self.call_id_used(&incoming.sip_call_id) => {
                // RFC 3261 §8.1.1.4: a Call-ID names one call, forever. A new INVITE (no To tag:
                // not a request within a dialog, so not 481, §12.2.2) reusing a finished call's
                // is malformed in that sense: 400. Its retransmissions within the transaction
                // never get here (the transaction layer absorbs them).
                self.metrics
                    .calls_replayed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(remote = %incoming.remote, "INVITE refused: its Call-ID belongs to an earlier call");
                self.endpoint.reject(now, incoming.call, 400);
            }
            Event::Incoming(incoming) => match self.calls.spawn(&incoming) {
                Ok((media, call)) => {
                    state.calls.insert(incoming.call, call);
                    self.endpoint.answer(now, incoming.call, media, self.ring);
                }
                Err(err) => {
                    self.metrics
                        .rtp_ports_exhausted
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%err, "cannot take call: no media sockets");
                    self.endpoint.reject(now, incoming.call, 503);
                }
            },
            Event::Confirmed { call: call_ref } => {
                if let Some(call) = state.calls.get(&call_ref) {
                    tracing::debug!(call = %call.handle.id(), "call confirmed");
                    call.signal(SipSignal::ReferSupport(
                        self.endpoint.allows_refer(call_ref),
                    ));
                    call.signal(SipSignal::Confirmed);
                }
            }
            Event::MediaChanged { call, media } => {
                if let Some(call) = state.calls.get(&call) {
                    call.signal(SipSignal::Media(media));
                }
            }
            Event::Dtmf {
                call,
                digit,
                duration_ms,
            } => {
                if let Some(call) = state.calls.get(&call) {
                    call.signal(SipSignal::Dtmf { digit, duration_ms });
                }
            }
            Event::Ended {
                call: call_ref,
                reason,
            } => {
                state.refers.remove(&call_ref);
                self.end_far_legs(state, call_ref);
                if self.referrer_ended(state, call_ref, &reason) {
                    return;
                }
                if let Some(call) = state.calls.remove(&call_ref) {
                    tracing::info!(call = %call.handle.id(), ?reason, "call ended");
                    call.signal(SipSignal::Ended(end_reason(&reason)));
                }
            }
            Event::Progress {
                call,
                ringing,
                media,
            } => {
                if let Some(call) = state.calls.get(&call) {
                    let early_media = media.is_some();
                    if let Some(media) = media {
                        call.signal(SipSignal::EarlyMedia(media));
                    }
                    if ringing || early_media {
                        let id = call.handle.id().clone();
                        let _ = self
                            .calls
                            .services
                            .events
                            .send(CallEvent::Ringing { id, early_media });
                    }
                }
            }
            Event::Answered {
                call: call_ref,
                media,
            } => {
                if let Some(call) = state.calls.get(&call_ref) {
                    tracing::debug!(call = %call.handle.id(), "placed call answered");
                    call.signal(SipSignal::Media(media));
                    call.signal(SipSignal::ReferSupport(
                        self.endpoint.allows_refer(call_ref),
                    ));
                    call.signal(SipSignal::Confirmed);
                }
            }
            Event::Failed {
                call,
                status,
                reason,
            } => {
                if let Some(call) = state.calls.remove(&call) {
                    tracing::info!(call = %call.handle.id(), status, ?reason, "placed call failed");
                    let id = call.handle.id().clone();
                    let reason = place_failure(reason);
                    let _ =
                        self.calls
                            .services
                            .events
                            .send(CallEvent::Failed { id, status, reason });
                    call.signal(SipSignal::Ended(CallEnd::Rejected(status)));
                }
            }
            Event::ReferRequested {
                call,
                target,
                referred_by,
            } => self.refer_requested(state, call, &target, referred_by),
            Event::Transfer {
                call: call_ref,
                progress,
            } => {
                let bridge_to = match progress {
                    TransferProgress::Accepted | TransferProgress::Trying(_) => None,
                    _ => state.refers.remove(&call_ref),
                };
                if let (TransferProgress::NotSupported, Some(target)) = (progress, bridge_to) {
                    self.bridge_instead(state, call_ref, &target);
                } else if let Some(call) = state.calls.get(&call_ref) {
                    tracing::info!(call = %call.handle.id(), ?progress, "transfer by REFER");
                    if let Some(outcome) = transfer_outcome(progress) {
                        call.signal(SipSignal::Transfer(outcome));
                    }
                }
            }
            Event::Registration { trunk, outcome } => match outcome {
                RegOutcome::Registered { expires } => tracing::info!(%trunk, expires, "registered"),
                // A stale nonce again and again is a broken registrar: say so, once per retry.
                RegOutcome::Challenged { stale, retry_in } if !retry_in.is_zero() => {
                    tracing::warn!(%trunk, stale, retry_in_secs = retry_in.as_secs(), "registrar keeps answering with a stale nonce; backing off")
                }
                RegOutcome::Challenged { stale, .. } => {
                    tracing::debug!(%trunk, stale, "registrar challenged, answering")
                }
                RegOutcome::IntervalTooBrief {
                    min_expires,
                    retry_in,
                } => {
                    tracing::info!(%trunk, min_expires, retry_in_secs = retry_in.as_secs(), "registrar wants a longer registration (423)")
                }
                RegOutcome::Failed { status, retry_in } => {
                    tracing::warn!(%trunk, status, retry_in_secs = retry_in.as_secs(), "registration failed")
                }
                RegOutcome::GaveUp { status, reason } => {
                    tracing::error!(%trunk, status, ?reason, "registration given up until the configuration is reloaded")
                }
                RegOutcome::Unregistered => tracing::info!(%trunk, "unregistered"),
                RegOutcome::UnregisterFailed { status } => {
                    tracing::warn!(%trunk, status, "unregistration not confirmed; the binding lapses at its expiry")
                }
            },
        }
    }
}

impl SipDriver {
    /// Places a call (see [`super::sip_dial`]); the reply waits in `state` until the INVITE is
    /// sent.
    fn dial(&mut self, state: &mut LoopState, request: DialRequest) {
        let DialRequest {
            target,
            trunk,
            reply,
        } = request;
        let result = self.place(state, &target, trunk.as_deref());
        if let Err(err) = &result {
            tracing::info!(%err, "outbound call not placed");
        }
        state.dialled.push((reply, result));
    }

    fn place(
        &mut self,
        state: &mut LoopState,
        target: &crate::config::DialTarget,
        trunk: Option<&str>,
    ) -> Result<CallHandle, DialError> {
        let route = self.dial.route(target, trunk, self.endpoint.advertised())?;
        let trunk_name = route.trunk.clone();
        let (caller, callee) = (route.caller.clone(), route.callee.clone());
        let (call, sockets) = self.place_route(route, None)?;
        let call_id = self
            .endpoint
            .outbound_call_id(call)
            .unwrap_or_default()
            .to_string();
        let sip_call = self.calls.start_leg(call, sockets, call_id, caller, callee);
        let handle = sip_call.handle.clone();
        let _ = self.calls.services.events.send(CallEvent::Placed {
            id: handle.id().clone(),
            trunk: trunk_name,
        });
        state.calls.insert(call, sip_call);
        Ok(handle)
    }
}

impl SipDriver {
    /// Takes media sockets and sends the INVITE of `route` (with `referred_by` for a REFER's
    /// target): the new call and its sockets.
    pub(super) fn place_route(
        &mut self,
        route: Route,
        referred_by: Option<String>,
    ) -> Result<(CallRef, RtpSockets), DialError> {
        let (sockets, media) = self.calls.media().map_err(|err| {
            self.metrics
                .rtp_ports_exhausted
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%err, "cannot place call: no media sockets");
            DialError::NoMediaPorts
        })?;
        let mut call = route.into_call(media);
        call.referred_by = referred_by;
        let call = self
            .endpoint
            .place_call(clock::now(), call)
            .map_err(DialError::Refused)?;
        Ok((call, sockets))
    }
}

/// A placed call's failure, in the call's terms.
fn place_failure(reason: FailReason) -> PlaceFailure {
    match reason {
        FailReason::Rejected => PlaceFailure::Rejected,
        FailReason::AuthFailed => PlaceFailure::AuthFailed,
        FailReason::Timeout => PlaceFailure::Timeout,
        FailReason::NoAnswer => PlaceFailure::NoAnswer,
        FailReason::Cancelled => PlaceFailure::Cancelled,
        FailReason::TooManyRedirects | FailReason::RedirectLoop | FailReason::BadRedirect => {
            PlaceFailure::Redirect
        }
        FailReason::UnusableAnswer => PlaceFailure::UnusableAnswer,
    }
}

/// A dial reply and what it says, sent once the loop has drained.
type Dialled = (
    tokio::sync::oneshot::Sender<Result<CallHandle, DialError>>,
    Result<CallHandle, DialError>,
);

pub(super) struct LoopState {
    conns: HashMap<ConnId, (SocketAddr, mpsc::Sender<Vec<u8>>)>,
    pub(super) calls: HashMap<CallRef, SipCall>,
    tcp_tx: mpsc::Sender<TcpEvent>,
    next_conn: Arc<AtomicU64>,
    tcp_stop: CancellationToken,
    /// Messages waiting for an outbound connection to open.
    pending_connects: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// Calls placed since the last drain, with their API replies.
    dialled: Vec<Dialled>,
    /// The far legs of bridged transfers, by their own call (at most one per call).
    pub(super) bridges: HashMap<CallRef, FarLeg>,
    /// REFERs under way, with the target to bridge to if the caller's side turns out not to
    /// take REFER (at most one per call).
    refers: HashMap<CallRef, TransferTarget>,
    /// Calls placed for the caller's REFERs, by their own call, until answered or failed (at
    /// most one per call: the endpoint takes one REFER at a time).
    pub(super) referred: HashMap<CallRef, Referred>,
}

/// Connection limits from the config. The allow-list is filled in when the driver starts.
pub fn limits(
    max_message: usize,
    max_connections: usize,
    idle: Duration,
    metrics: Arc<crate::metrics::Metrics>,
) -> TcpLimits {
    TcpLimits {
        max_message,
        idle_timeout: idle,
        slots: Arc::new(Semaphore::new(max_connections)),
        allow: Arc::new(std::sync::RwLock::new(Vec::new())),
        metrics,
    }
}

/// Why the call ended, in the call's terms.
fn end_reason(reason: &EndReason) -> CallEnd {
    match reason {
        EndReason::RemoteBye => CallEnd::RemoteHangup,
        EndReason::Cancelled => CallEnd::Cancelled,
        EndReason::LocalHangup => CallEnd::LocalHangup,
        EndReason::Rejected(status) => CallEnd::Rejected(*status),
        EndReason::AckTimeout => CallEnd::NoAck,
        EndReason::SessionExpired | EndReason::RefreshFailed(_) => CallEnd::SessionExpired,
        EndReason::Transferred => CallEnd::Transferred,
    }
}

/// Why a REFER could not be sent, as the call's transfer failure.
fn refer_refused(err: ReferError) -> TransferFailure {
    match err {
        ReferError::NotSupported => TransferFailure::NotSupported,
        ReferError::InProgress => TransferFailure::InProgress,
        ReferError::NoSuchCall => TransferFailure::CallEnding,
        ReferError::NotEstablished | ReferError::BadTarget => TransferFailure::Unavailable,
    }
}

/// A REFER's progress that ends the transfer: done (the peer reached the target; the endpoint
/// sends BYE) or failed (the call goes on). `None` while it is under way.
fn transfer_outcome(progress: TransferProgress) -> Option<Result<TransferMethod, TransferFailure>> {
    match progress {
        TransferProgress::Accepted | TransferProgress::Trying(_) => None,
        TransferProgress::Succeeded => Some(Ok(TransferMethod::Refer)),
        TransferProgress::NotSupported => Some(Err(TransferFailure::NotSupported)),
        TransferProgress::Failed(408) => Some(Err(TransferFailure::Timeout)),
        TransferProgress::Failed(_) => Some(Err(TransferFailure::Refused)),
    }
}
