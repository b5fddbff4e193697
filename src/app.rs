//! The appliance: binds the sockets, starts the drivers and call machinery from the config,
//! and runs until SIGTERM or SIGINT, then shuts down gracefully (503 to new calls, BYE to
//! active ones, unregister trunks).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::{CallSettings, CallSpawner, Greeting, GreetingError};
use crate::config::{self, Config};
use crate::net::{self, rtp::PortAllocator, sip::SipDriver};
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
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs earshot until a shutdown signal.
pub async fn run(config: Config) -> Result<(), AppError> {
    let shutdown = CancellationToken::new();
    spawn_signal_handlers(shutdown.clone())?;
    let driver = build_sip(&config).await?;
    tracing::info!(
        sip = %config.sip.listen,
        max_calls = config.calls.max_concurrent,
        trunks = config.sip.trunks.len(),
        "earshot running"
    );
    driver.run(shutdown).await;
    tracing::info!("earshot stopped");
    Ok(())
}

async fn build_sip(config: &Config) -> Result<SipDriver, AppError> {
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
    let (sip_tx, sip_rx) = mpsc::unbounded_channel();
    let greeting = match &config.calls.greeting {
        Some(path) => Greeting::load(path)?,
        None => Greeting::default(),
    };
    let media_ip = if bound.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        bound.ip()
    };
    let spawner = CallSpawner {
        ports: Arc::new(PortAllocator::new(media_ip, config.rtp.ports)),
        settings: Arc::new(CallSettings {
            max_duration: secs(config.calls.max_duration_secs),
            silence_timeout: secs(config.rtp.silence_timeout_secs),
            learn_packets: config.rtp.learn_packets,
            rtcp_interval: Duration::from_secs(config.rtp.rtcp_interval_secs.max(1)),
            advertised_ip: advertised.ip(),
        }),
        greeting,
        sip: sip_tx,
    };
    let endpoint = Endpoint::new(
        EndpointConfig {
            advertised,
            user_agent: config.sip.user_agent.clone(),
            max_calls: config.calls.max_concurrent,
        },
        rand::random(),
    );
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
        ),
        spawner,
        commands: sip_rx,
        counters: Arc::default(),
        trunks,
        ring: Duration::from_millis(config.calls.ring_ms),
    })
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

fn spawn_signal_handlers(shutdown: CancellationToken) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AppError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AppError::Signals)?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
    Ok(())
}
