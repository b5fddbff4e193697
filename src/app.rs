//! The appliance: binds the sockets, starts the drivers and call machinery from the config,
//! and runs until SIGTERM or SIGINT, then shuts down gracefully (503 to new calls, BYE to
//! active ones, unregister trunks). SIGUSR1 starts draining (new calls refused, current ones
//! go on; see [`Drain`](crate::call::Drain)) and SIGUSR2 ends it; SIGHUP reloads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audio::AudioService;
use crate::call::{CallEvent, CallSettings, Greeting, GreetingError, Registry, Services};
use crate::config::{self, Config};
use crate::net::sip::{Reload, SipCommand, SipDriver};
use crate::net::sip_leg::{RtpSettings, SipCalls};
use crate::net::{self, rtp::PortAllocator};
use crate::recording::{self, RecordingEvent, RecordingService};
use crate::sip::dialog::Transport;
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::registration::TrunkRegistration;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind SIP on {addr}: {source}")]
    BindSip {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot resolve {what} {host:?}: {reason}")]
    Resolve {
        what: &'static str,
        host: String,
        reason: String,
    },
    #[error(transparent)]
    Greeting(#[from] GreetingError),
    #[error("cannot start the recorder in {dir}: {source}")]
    Recordings { dir: String, source: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error("cannot start the store thread: {0}")]
    StoreThread(std::io::Error),
    #[error("cannot bind HTTP on {addr}: {source}")]
    BindHttp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("agent.fallback_to: {0}")]
    AgentFallbackTo(&'static str),
    #[error("agent.fallback_wav: {0}")]
    AgentFallback(GreetingError),
    #[error(transparent)]
    AgentTls(#[from] crate::net::tls::TlsError),
    #[error("agent.protocol: {0} needs its settings (agent.api_key)")]
    AgentProtocol(config::AgentProtocol),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::StartError),
}

/// Runs earshot until a shutdown signal. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config, config_path: PathBuf) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    let drain = crate::call::Drain::default();
    spawn_signal_handlers(shutdown.clone(), drain.clone())?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let (events_tx, events_rx) = crate::call::event_sink::channel(
        crate::call::event_sink::DETAIL_CAPACITY,
        metrics.call_drops.clone(),
    );
    let (services, recording_events) = start_services(&config, events_tx, &metrics)?;
    let audio = services.audio.clone();
    // The SIP task's commands: the API places calls through them.
    let sip_channel = mpsc::unbounded_channel();
    let (history, twilio, store) = start_history(
        &config,
        &services,
        events_rx,
        recording_events,
        &shutdown,
        metrics.clone(),
        Steering {
            sip: sip_channel.0.clone(),
            drain: drain.clone(),
        },
    )
    .await?;
    let mut driver = build_sip(&config, services, metrics, store, sip_channel).await?;
    driver.drain = drain;
    spawn_reload_handler(
        config.clone(),
        config_path,
        driver.sip_commands.clone(),
        twilio.clone(),
    )?;
    tracing::info!(
        sip = %config.sip.listen,
        max_calls = config.calls.max_concurrent,
        trunks = config.sip.trunks.len(),
        node = %config.node.name,
        "earshot running"
    );
    // Sockets bound, recorder and audio thread started: ready for systemd (Type=notify).
    crate::systemd::notify("READY=1");
    driver.run(shutdown).await;
    // Twilio streams got the same token: wait for their close frames and last call events.
    twilio.drain(Duration::from_secs(5)).await;
    // Its event sender must go for the store thread to finish.
    drop(twilio);
    if !history.finished(Duration::from_secs(5)).await {
        tracing::warn!("the store did not write the last call events within 5 s");
    }
    let playout = audio.stats();
    tracing::info!(
        underruns = playout.underruns,
        overruns = playout.overruns,
        skips = playout.skips,
        xruns = playout.xruns,
        device = playout.device.as_deref().unwrap_or("none"),
        "speaker playout totals"
    );
    tracing::info!("earshot stopped");
    Ok(())
}

/// Starts what every call shares: speaker playout, the recorder (after repairing what a crash
/// left), the registry of live calls and the greeting. Also returns the recorder's events, for
/// [`start_history`] to watch.
fn start_services(
    config: &Config,
    events: crate::call::EventSink,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<(Services, Option<mpsc::UnboundedReceiver<RecordingEvent>>), AppError> {
    let greeting = Greeting::configured(config.calls.greeting.as_deref())?;
    let agent = match &config.agent {
        Some(agent) => Some(agent_bridge(config, agent, metrics)?),
        None => None,
    };
    let audio = Arc::new(AudioService::start(&config.audio));
    let mut recording_events = None;
    let recordings = if config.recording.enabled {
        let dir = config.recording.dir.clone();
        match recording::repair_dir(&dir) {
            Ok(repaired) => {
                for r in repaired {
                    match r.outcome {
                        Ok(recording::RepairOutcome::Intact) => {}
                        Ok(recording::RepairOutcome::Fixed { data_bytes, .. }) => {
                            tracing::info!(file = %r.path.display(), data_bytes, "repaired a recording left unfinished")
                        }
                        Ok(recording::RepairOutcome::Unrepairable(why)) => {
                            tracing::warn!(file = %r.path.display(), ?why, "recording cannot be repaired")
                        }
                        Err(err) => {
                            tracing::warn!(file = %r.path.display(), %err, "recording repair failed")
                        }
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(%err, dir = %dir.display(), "cannot scan recordings for repair")
            }
        }
        let (rec_tx, rec_rx) = mpsc::unbounded_channel();
        recording_events = Some(rec_rx);
        let service = RecordingService::start(dir.clone(), rec_tx).map_err(|source| {
            AppError::Recordings {
                dir: dir.display().to_string(),
                source,
            }
        })?;
        Some(Arc::new(service))
    } else {
        None
    };
    let services = Services {
        audio,
        recordings,
        events,
        registry: Arc::new(Registry::default()),
        greeting,
        listen_default: config.audio.listen,
        recording_gate: crate::recording::RecordingGate::new(),
        agent,
        routes: config.routes.clone().into(),
        transfer: crate::call::TransferPolicy::new(
            &config.calls.outbound_allow,
            &config.calls.dtmf_rules,
        ),
    };
    Ok((services, recording_events))
}

/// The `[agent]` bridge every call is connected to.
fn agent_bridge(
    config: &Config,
    agent: &config::AgentConfig,
    metrics: &Arc<crate::metrics::Metrics>,
) -> Result<Arc<dyn crate::call::agent::AgentConnector>, AppError> {
    use crate::call::agent::{AgentSettings, FallbackMode, ProtocolSettings};
    let (protocol, bearer) = match (&agent.protocol, &agent.openai) {
        (config::AgentProtocol::Twilio, _) => (ProtocolSettings::Twilio, None),
        (config::AgentProtocol::OpenAiRealtime, Some(openai)) => (
            ProtocolSettings::OpenAi(openai.session()),
            Some(openai.api_key.clone()),
        ),
        (config::AgentProtocol::OpenAiRealtime, None) => {
            return Err(AppError::AgentProtocol(agent.protocol));
        }
    };
    let fallback = match agent.fallback {
        config::AgentFallback::Listen => FallbackMode::Listen,
        config::AgentFallback::Transfer => FallbackMode::Transfer(
            agent
                .fallback_to
                .clone()
                .ok_or(AppError::AgentFallbackTo("required for a transfer"))?,
        ),
        config::AgentFallback::Hangup => FallbackMode::Hangup(
            Greeting::configured(agent.fallback_wav.as_deref()).map_err(AppError::AgentFallback)?,
        ),
    };
    let settings = AgentSettings {
        protocol,
        fallback,
        max_queue_bytes: usize::try_from(agent.max_queue_secs.saturating_mul(8000))
            .unwrap_or(usize::MAX),
        account_sid: agent
            .account_sid
            .clone()
            .unwrap_or_else(|| box_account_sid(config)),
        transfer_to: agent.transfer_to.clone(),
    };
    let target = crate::net::agent::AgentTarget {
        url: agent.url.as_str().to_owned(),
        host: agent.url.host().to_owned(),
        port: agent.url.port(),
        connect_timeout: Duration::from_millis(agent.connect_timeout_ms),
        max_concurrent: agent.max_concurrent,
        ca_file: agent.ca_file.clone(),
        bearer,
    };
    let bridge = crate::net::agent::AgentBridge::new(target, settings, metrics.clone())?;
    tracing::info!(protocol = %agent.protocol, "calls are bridged to the agent");
    Ok(Arc::new(bridge))
}

/// The `accountSid` agents are told when `[agent].account_sid` is not set: `AC` + 32 hex
/// digits derived from this box's machine id (or, without one, its SIP address), stable across
/// restarts.
fn box_account_sid(config: &Config) -> String {
    use sha2::Digest as _;
    let seed = std::fs::read_to_string("/etc/machine-id")
        .unwrap_or_else(|_| config.sip.listen.to_string());
    let digest = sha2::Sha256::digest(format!("earshot account {}", seed.trim()));
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("AC{hex}")
}

/// What the API and the Twilio webhook steer besides the store: the SIP task (where calls are
/// placed) and the draining switch.
struct Steering {
    sip: mpsc::UnboundedSender<SipCommand>,
    drain: crate::call::Drain,
}

/// Opens the call history (closing calls a crash left open), starts the webhooks (their
/// pending deliveries resume), the store thread on the calls' events, the recorder's event
/// watcher, the recordings housekeeping and the HTTP API. Returns the store thread, which
/// ends once every event sender is gone.
async fn start_history(
    config: &Config,
    services: &Services,
    events: crate::call::EventStream,
    recording_events: Option<mpsc::UnboundedReceiver<RecordingEvent>>,
    shutdown: &CancellationToken,
    metrics: Arc<crate::metrics::Metrics>,
    Steering { sip, drain }: Steering,
) -> Result<
    (
        crate::store::WriterHandle,
        crate::net::twilio::TwilioState,
        crate::store::Store,
    ),
    AppError,
> {
    use crate::store::{Housekeeping, Store};
    let store = Store::open_async(
        config.store.path.clone(),
        crate::webhooks::outbox_hook(config),
    )
    .await?;
    metrics.calls_interrupted.fetch_add(
        store.interrupted_at_open().len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    // Before the store thread starts, so every event it writes enqueues its deliveries.
    let webhooks = crate::webhooks::Webhooks::new(config, &store)?;
    if let Some(webhooks) = &webhooks {
        webhooks.spawn(metrics.clone(), shutdown.clone());
        tracing::info!(webhooks = config.webhooks.len(), "webhooks enabled");
        webhooks.release_held().await;
    }
    if let Some(rx) = recording_events {
        tokio::spawn(watch_recording_events(
            rx,
            services.events.clone(),
            metrics.clone(),
        ));
    }
    let writer = store
        .spawn_writer(events, metrics.clone())
        .map_err(AppError::StoreThread)?;
    // The media pipeline consults the same gate before and while recording.
    let gate = services.recording_gate.clone();
    let registry = services.registry.clone();
    let mut housekeeping = Housekeeping::new(
        &config.recording,
        store.clone(),
        registry.clone(),
        metrics.clone(),
        gate.clone(),
    );
    housekeeping.history_keep_days = config.store.keep_days;
    tokio::spawn(housekeeping.run(shutdown.clone()));
    let twilio = crate::net::twilio::TwilioState::new(
        crate::net::twilio::TwilioSettings::from_config(config),
        services.clone(),
        metrics.clone(),
        store.clone(),
        shutdown.clone(),
        drain.clone(),
    );
    twilio.start();
    let twilio_own_listener = config.twilio.listen;
    let mut state = crate::api::ApiState::new(
        &config.http,
        store.clone(),
        registry,
        metrics.clone(),
        shutdown.clone(),
    );
    // Twilio's reverse proxy forwards the internet to the listener Twilio is served on.
    state.exposed |= config.twilio.enabled && twilio_own_listener.is_none();
    state.audio = Some(services.audio.clone());
    state.gate = gate;
    state.dial = Some(sip);
    state.drain = drain;
    state.node = Arc::from(config.node.name.as_str());
    let policy =
        crate::api::HostPolicy::new(&config.http.hosts, config.twilio.public_url.as_deref());
    let limits = crate::api::ConnLimits::from_config(&config.http);
    let twilio_routes = crate::net::twilio::twilio_routes(twilio.clone());
    let mut router = crate::api::router(state);
    if let Some(addr) = twilio_own_listener {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::BindHttp { addr, source })?;
        let router = crate::api::guarded(twilio_routes, policy.clone(), metrics.clone());
        spawn_http(listener, router, limits, &metrics, shutdown);
        tracing::info!(twilio = %addr, "Twilio webhook and streams listening");
    } else {
        router = router.merge(twilio_routes);
    }
    let addr = config.http.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::BindHttp { addr, source })?;
    let router = crate::api::guarded(router, policy, metrics.clone());
    spawn_http(listener, router, limits, &metrics, shutdown);
    tracing::info!(http = %addr, "HTTP API and console listening");
    Ok((writer, twilio, store))
}

/// Serves `router` on `listener` in its own task until shutdown.
fn spawn_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: crate::api::ConnLimits,
    metrics: &Arc<crate::metrics::Metrics>,
    shutdown: &CancellationToken,
) {
    let serve = crate::api::serve(listener, router, limits, metrics.clone(), shutdown.clone());
    tokio::spawn(async move {
        if let Err(err) = serve.await {
            tracing::error!(%err, "an HTTP listener stopped");
        }
    });
}

/// Logs the recorder's events; a finished recording becomes the call's `recording_finished`
/// event (which releases its `recording.ready` webhooks in the store's commit).
async fn watch_recording_events(
    mut events: mpsc::UnboundedReceiver<RecordingEvent>,
    calls: crate::call::EventSink,
    metrics: Arc<crate::metrics::Metrics>,
) {
    while let Some(event) = events.recv().await {
        match event {
            RecordingEvent::Stopped { path, reason, .. } => {
                if matches!(reason, crate::recording::StopReason::SyncFailed(_)) {
                    metrics
                        .recording_sync_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::warn!(file = %path.display(), %reason, "recording stopped")
            }
            RecordingEvent::Finished { path, frames, .. } => {
                tracing::debug!(file = %path.display(), frames, "recording finished");
                // Recordings are named after their call (`{call id}.wav`).
                let Some(id) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(crate::call::CallId::parse)
                else {
                    continue;
                };
                let size_bytes = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
                let _ = calls.send(CallEvent::RecordingFinished {
                    id,
                    duration_ms: frames / 8,
                    size_bytes,
                });
            }
            other => tracing::debug!(?other, "recording"),
        }
    }
}

async fn build_sip(
    config: &Config,
    services: Services,
    metrics: Arc<crate::metrics::Metrics>,
    store: crate::store::Store,
    (sip_tx, sip_rx): (
        mpsc::UnboundedSender<SipCommand>,
        mpsc::UnboundedReceiver<SipCommand>,
    ),
) -> Result<SipDriver, AppError> {
    let listen = config.sip.listen;
    let (udp, tcp) = net::sip::bind(listen)
        .await
        .map_err(|source| AppError::BindSip {
            addr: listen,
            source,
        })?;
    let bound = udp.local_addr().map_err(|source| AppError::BindSip {
        addr: listen,
        source,
    })?;
    let advertised = advertised_address(config, bound).await?;
    let sip_commands = sip_tx.clone();
    let media_ip = if bound.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        bound.ip()
    };
    let calls = SipCalls {
        ports: Arc::new(PortAllocator::new(media_ip, config.rtp.ports)),
        rtp: Arc::new(RtpSettings {
            learn_packets: config.rtp.learn_packets,
            learn_window: Duration::from_millis(config.rtp.learn_window_ms),
            rtcp_interval: Duration::from_secs(config.rtp.rtcp_interval_secs.max(1)),
            advertised_ip: advertised.ip(),
        }),
        settings: Arc::new(CallSettings {
            max_duration: secs(config.calls.max_duration_secs),
            silence_timeout: secs(config.rtp.silence_timeout_secs),
            jitter: config.jitter,
        }),
        services,
        sip: sip_tx,
        metrics: metrics.clone(),
    };
    let mut endpoint = Endpoint::new(
        EndpointConfig {
            advertised,
            user_agent: config.sip.user_agent.clone(),
            max_calls: config.calls.max_concurrent,
            limits: sip_limits(&config.sip),
        },
        rand::random(),
    );
    endpoint.set_dialog_policy(crate::sip::endpoint::DialogPolicy {
        timers: crate::sip::session_timer::TimerPolicy {
            session_expires: config.sip.session_expires_secs,
            min_se: config.sip.min_se_secs,
        },
        accept_refer: config.sip.accept_refer,
    });
    if let Some(cidrs) = config.rtp.allow_media.clone() {
        let filter: crate::sip::endpoint::MediaFilter =
            Arc::new(move |ip| cidrs.iter().any(|cidr| cidr.contains(ip)));
        endpoint.set_media_filter(Some(filter));
    }
    let mut trunks = Vec::new();
    for trunk in &config.sip.trunks {
        trunks.push(resolve_trunk(trunk).await?);
    }
    Ok(SipDriver {
        endpoint,
        udp,
        tcp: Some(tcp),
        allow: config.sip.allow.clone(),
        limits: net::sip::limits(
            config.sip.max_message_bytes,
            config.sip.max_tcp_connections,
            Duration::from_secs(config.sip.tcp_idle_timeout_secs.max(1)),
            metrics.clone(),
        ),
        calls,
        commands: sip_rx,
        sip_commands,
        metrics,
        store,
        dial: net::sip_dial::DialPolicy::new(&config.calls, trunks.clone()),
        trunks,
        ring: Duration::from_millis(config.calls.ring_ms),
        drain: crate::call::Drain::default(),
    })
}

/// The endpoint's flood bounds from `[sip]`.
fn sip_limits(sip: &crate::config::SipConfig) -> crate::sip::endpoint::Limits {
    crate::sip::endpoint::Limits {
        max_transactions: sip.max_transactions,
        max_transactions_per_source: sip.max_transactions_per_source,
        invite_rate: sip.invite_rate_per_source,
        invite_burst: sip.invite_burst_per_source,
        stateless_response_rate: sip.stateless_responses_per_source,
        ..crate::sip::endpoint::Limits::default()
    }
}

/// The address peers should use to reach us: `[sip].public_addr`, else the bound address, else
/// (bound to a wildcard) the address of the interface that routes outwards, else loopback.
async fn advertised_address(config: &Config, bound: SocketAddr) -> Result<SocketAddr, AppError> {
    if let Some(public) = &config.sip.public_addr {
        let port = public.port.unwrap_or(bound.port());
        let addr = resolve("sip.public_addr", &public.host, port).await?;
        return Ok(addr);
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    // Connecting a UDP socket sends nothing; it only asks the kernel for a route.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr());
    let ip = probe
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    Ok(SocketAddr::new(ip, bound.port()))
}

async fn resolve_trunk(trunk: &config::Trunk) -> Result<TrunkRegistration, AppError> {
    let registrar = resolve(
        "sip.trunk registrar",
        &trunk.registrar.host,
        trunk.registrar.port.unwrap_or(5060),
    )
    .await?;
    Ok(TrunkRegistration {
        name: trunk.name.clone(),
        registrar,
        transport: match trunk.transport {
            config::Transport::Udp => Transport::Udp,
            config::Transport::Tcp => Transport::Tcp(None),
        },
        domain: trunk.domain.clone(),
        username: trunk.username.clone(),
        auth_username: trunk
            .auth_username
            .clone()
            .unwrap_or_else(|| trunk.username.clone()),
        password: trunk.password.expose().to_string(),
        expires: trunk.expires_secs,
        contact_user: trunk
            .contact_user
            .clone()
            .unwrap_or_else(|| trunk.username.clone()),
    })
}

async fn resolve(what: &'static str, host: &str, port: u16) -> Result<SocketAddr, AppError> {
    let err = |reason: String| AppError::Resolve {
        what,
        host: host.to_string(),
        reason,
    };
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| err(e.to_string()))?;
    addrs.next().ok_or_else(|| err("no address".into()))
}

fn secs(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

fn spawn_signal_handlers(
    shutdown: CancellationToken,
    drain: crate::call::Drain,
) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AppError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AppError::Signals)?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(AppError::Signals)?;
    let mut usr2 = signal(SignalKind::user_defined2()).map_err(AppError::Signals)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM: shutting down");
                    break;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: shutting down");
                    break;
                }
                _ = usr1.recv() => {
                    if drain.set(true) {
                        tracing::info!("SIGUSR1: draining (new calls refused, current ones go on)");
                    }
                }
                _ = usr2.recv() => {
                    if drain.set(false) {
                        tracing::info!("SIGUSR2: draining ended, taking calls again");
                    }
                }
            }
        }
        crate::systemd::notify("STOPPING=1");
        shutdown.cancel();
    });
    Ok(())
}

/// SIGHUP: re-read the configuration and apply what can change live (allowlist, trunks,
/// greeting, the listen default); report what needs a restart.
fn spawn_reload_handler(
    mut current: Config,
    path: PathBuf,
    sip: mpsc::UnboundedSender<SipCommand>,
    twilio: crate::net::twilio::TwilioState,
) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(AppError::Signals)?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let loaded = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || Config::load(&path)).await
            };
            let new = match loaded {
                Ok(Ok(new)) => new,
                Ok(Err(err)) => {
                    tracing::error!(config = %path.display(), "SIGHUP: configuration not reloaded:\n{err}");
                    continue;
                }
                Err(err) => {
                    tracing::error!(%err, "SIGHUP: reload failed");
                    continue;
                }
            };
            for field in restart_needed(&current, &new) {
                tracing::warn!(field, "SIGHUP: this change needs a restart to take effect");
            }
            let greeting = match Greeting::configured(new.calls.greeting.as_deref()) {
                Ok(g) => g,
                Err(err) => {
                    tracing::error!(%err, "SIGHUP: configuration not reloaded");
                    continue;
                }
            };
            let mut trunks = Vec::new();
            let mut failed = false;
            for trunk in &new.sip.trunks {
                match resolve_trunk(trunk).await {
                    Ok(t) => trunks.push(t),
                    Err(err) => {
                        tracing::error!(%err, "SIGHUP: configuration not reloaded");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                continue;
            }
            // Twilio calls start from the same greeting and listen default.
            twilio.reload(greeting.clone(), new.audio.listen);
            let reload = Reload {
                allow: new.sip.allow.clone(),
                dial: net::sip_dial::DialPolicy::new(&new.calls, trunks.clone()),
                trunks,
                greeting,
                listen_default: new.audio.listen,
            };
            if sip.send(SipCommand::Reload(Box::new(reload))).is_err() {
                return;
            }
            current = new;
        }
    });
    Ok(())
}

/// The settings that only take effect at startup, by their config path.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut check = |changed: bool, field: &'static str| {
        if changed {
            fields.push(field);
        }
    };
    check(old.sip.listen != new.sip.listen, "sip.listen");
    check(
        old.sip.public_addr != new.sip.public_addr,
        "sip.public_addr",
    );
    check(old.sip.user_agent != new.sip.user_agent, "sip.user_agent");
    check(old.rtp != new.rtp, "rtp");
    check(
        old.calls.max_concurrent != new.calls.max_concurrent,
        "calls.max_concurrent",
    );
    check(
        old.calls.max_duration_secs != new.calls.max_duration_secs,
        "calls.max_duration_secs",
    );
    let dialing = |c: &Config| (c.calls.outbound_allow.clone(), c.calls.dtmf_rules.clone());
    check(
        dialing(old) != dialing(new),
        "calls.outbound_allow, calls.dtmf_rule",
    );
    check(old.audio.output != new.audio.output, "audio.output");
    check(old.audio.input != new.audio.input, "audio.input");
    check(
        old.audio.period_ms != new.audio.period_ms,
        "audio.period_ms",
    );
    check(old.jitter != new.jitter, "jitter");
    check(old.recording != new.recording, "recording");
    check(old.store != new.store, "store");
    check(old.http != new.http, "http");
    check(old.twilio != new.twilio, "twilio");
    check(old.agent != new.agent, "agent");
    check(old.routes != new.routes, "route");
    check(old.log != new.log, "log");
    check(old.webhooks != new.webhooks, "webhook");
    check(old.webhook_retry != new.webhook_retry, "webhooks");
    check(old.node != new.node, "node.name");
    fields
}
