//! The agent driver: one WebSocket client task per agent session (`ws://`, or `wss://` through
//! rustls with the webpki roots and `[agent].ca_file`). It connects within
//! `[agent].connect_timeout_ms`, then moves text between the socket and the call task's
//! channels; it decides nothing about the protocol ([`crate::agent`] does, in the call task).
//!
//! [`AgentBridge`] is the [`AgentConnector`] calls use: it holds the `[agent].max_concurrent`
//! slots and records the agent metrics. Every way a session fails is reported to the call as a
//! [`FallbackReason`]; a socket that stops taking writes for [`SEND_STALL`] is one of them.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::call::agent::{
    AgentConnector, AgentInput, AgentIo, AgentObservation, AgentSettings, Outgoing,
};
use crate::call::{CallInfo, FallbackReason};
use crate::clock;
use crate::metrics::Metrics;
use crate::net::tls::{TlsError, client_config};

/// Texts from the call task waiting for the socket (a few seconds of caller audio).
const TO_AGENT: usize = 512;
/// Agent messages waiting for the call task; beyond it they are dropped and counted.
const FROM_AGENT: usize = 1024;
/// Largest agent message or frame; larger ones break the session (a fallback).
pub const MAX_MESSAGE: usize = 4 << 20;
/// A write the agent does not take within this long ends the session (it stopped reading).
pub const SEND_STALL: Duration = Duration::from_secs(2);
/// The socket's kernel send buffer: about 4 s of caller audio. Audio queued deeper than that
/// is stale anyway, and an agent that stops reading is noticed within seconds.
const SEND_BUFFER: u32 = 64 * 1024;
/// How long our close frame waits for the agent's.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Where and how to reach the agent.
#[derive(Debug, Clone)]
pub struct AgentTarget {
    /// `ws://` or `wss://`.
    pub url: String,
    /// The URL's host (IPv6 without brackets) and port.
    pub host: String,
    pub port: u16,
    pub connect_timeout: Duration,
    pub max_concurrent: usize,
    /// Extra trusted CAs (PEM), besides the webpki roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Sent as `Authorization: Bearer` on the upgrade (the OpenAI Realtime API key).
    pub bearer: Option<crate::config::Secret>,
}

/// The agent bridge of a running earshot.
#[derive(Debug)]
pub struct AgentBridge {
    target: AgentTarget,
    settings: AgentSettings,
    tls: Arc<rustls::ClientConfig>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl AgentBridge {
    pub fn new(
        target: AgentTarget,
        settings: AgentSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TlsError> {
        let tls = client_config(target.ca_file.as_deref())?;
        Ok(Self {
            slots: Arc::new(Semaphore::new(target.max_concurrent.max(1))),
            target,
            settings,
            tls,
            metrics,
        })
    }
}

impl AgentConnector for AgentBridge {
    fn connect(&self, info: &CallInfo, _call_sid: &str) -> AgentIo {
        let (to_agent, to_rx) = mpsc::channel(TO_AGENT);
        let (from_tx, from_agent) = mpsc::channel(FROM_AGENT);
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let session = Session {
                    target: self.target.clone(),
                    tls: self.tls.clone(),
                    metrics: self.metrics.clone(),
                    to_agent: to_rx,
                    from_agent: from_tx,
                    _permit: permit,
                };
                tracing::debug!(call = %info.id, "agent session starting");
                tokio::spawn(session.run());
            }
            Err(_) => {
                let _ = from_tx.try_send(AgentInput::Failed(FallbackReason::Busy));
            }
        }
        AgentIo {
            to_agent,
            from_agent,
        }
    }

    fn observe(&self, what: AgentObservation) {
        let m = &self.metrics;
        match what {
            AgentObservation::ResponseLatency(d) => {
                m.agent_response_seconds.observe(d.as_secs_f64())
            }
            AgentObservation::Underruns(n) => {
                m.agent_underruns.fetch_add(n, Relaxed);
            }
            AgentObservation::OverrunBytes(n) => {
                m.agent_overrun_bytes.fetch_add(n, Relaxed);
            }
            AgentObservation::Fallback(reason) => m.agent_fallback(reason),
            AgentObservation::Downlink(d) => m.agent_downlink_seconds.observe(d.as_secs_f64()),
            AgentObservation::FrameOut(d) => m.agent_frame_out_seconds.observe(d.as_secs_f64()),
        }
    }

    fn settings(&self) -> &AgentSettings {
        &self.settings
    }
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// One session's driver task.
struct Session {
    target: AgentTarget,
    tls: Arc<rustls::ClientConfig>,
    metrics: Arc<Metrics>,
    to_agent: mpsc::Receiver<Outgoing>,
    from_agent: mpsc::Sender<AgentInput>,
    /// One of `[agent].max_concurrent`, held for the session's life.
    _permit: OwnedSemaphorePermit,
}

/// Counts a session as up until dropped.
struct Up(Arc<Metrics>);

impl Drop for Up {
    fn drop(&mut self) {
        self.0.agent_sessions.fetch_sub(1, Relaxed);
    }
}

impl Session {
    async fn run(mut self) {
        let began = clock::now();
        let socket = match self.connect().await {
            Ok(socket) => socket,
            Err(reason) => {
                tracing::info!(%reason, "agent connect failed");
                let _ = self.from_agent.send(AgentInput::Failed(reason)).await;
                return;
            }
        };
        let after = clock::now().saturating_duration_since(began);
        self.metrics
            .agent_connect_seconds
            .observe(after.as_secs_f64());
        self.metrics.agent_sessions.fetch_add(1, Relaxed);
        let _up = Up(self.metrics.clone());
        if self
            .from_agent
            .send(AgentInput::Connected { after })
            .await
            .is_err()
        {
            return;
        }
        self.relay(socket).await;
    }

    async fn connect(&self) -> Result<Socket, FallbackReason> {
        match tokio::time::timeout(self.target.connect_timeout, self.try_connect()).await {
            Err(_) => Err(FallbackReason::ConnectTimeout),
            Ok(result) => result,
        }
    }

    /// TCP (with a bounded send buffer), then TLS for `wss`, then the upgrade.
    async fn try_connect(&self) -> Result<Socket, FallbackReason> {
        let target = &self.target;
        let addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|err| {
                tracing::debug!(%err, "agent host does not resolve");
                FallbackReason::Refused
            })?;
        let mut last = FallbackReason::Refused;
        for addr in addrs {
            let socket = match addr {
                std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            };
            let Ok(socket) = socket else { continue };
            let _ = socket.set_send_buffer_size(SEND_BUFFER);
            let _ = socket.set_nodelay(true);
            let stream = match socket.connect(addr).await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(%err, %addr, "agent TCP connect failed");
                    last = FallbackReason::Refused;
                    continue;
                }
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_MESSAGE))
                .max_frame_size(Some(MAX_MESSAGE));
            let connector = Connector::Rustls(self.tls.clone());
            let request = self.request()?;
            return match tokio_tungstenite::client_async_tls_with_config(
                request,
                stream,
                Some(config),
                Some(connector),
            )
            .await
            {
                Ok((socket, _)) => Ok(socket),
                Err(err) => {
                    tracing::debug!(%err, "agent upgrade failed");
                    Err(classify(&err))
                }
            };
        }
        Err(last)
    }

    /// The upgrade request: the URL, and the bearer token when there is one.
    fn request(&self) -> Result<tungstenite::handshake::client::Request, FallbackReason> {
        use tungstenite::client::IntoClientRequest as _;
        let mut request = self
            .target
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| FallbackReason::Handshake)?;
        if let Some(key) = &self.target.bearer {
            let value = format!("Bearer {}", key.expose())
                .parse()
                .map_err(|_| FallbackReason::Handshake)?;
            request.headers_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// Moves messages both ways until either side is done.
    async fn relay(&mut self, mut socket: Socket) {
        loop {
            tokio::select! {
                text = self.to_agent.recv() => match text {
                    Some(Outgoing { text, at }) => {
                        match tokio::time::timeout(SEND_STALL, socket.send(Message::Text(text.into()))).await {
                            Ok(Ok(())) => {
                                let took = clock::now().saturating_duration_since(at);
                                self.metrics.agent_uplink_seconds.observe(took.as_secs_f64());
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(%err, "agent write failed");
                                let _ = self.from_agent.try_send(AgentInput::Closed { normal: false });
                                return;
                            }
                            Err(_) => {
                                let _ = self.from_agent.try_send(AgentInput::Failed(FallbackReason::NotReading));
                                return;
                            }
                        }
                    }
                    // The call is over (or gave the agent up): close politely.
                    None => {
                        let _ = tokio::time::timeout(CLOSE_WAIT, SinkExt::close(&mut socket)).await;
                        return;
                    }
                },
                message = socket.next() => {
                    let input = match message {
                        Some(Ok(Message::Text(text))) => AgentInput::Text {
                            text: text.as_str().to_owned(),
                            at: clock::now(),
                        },
                        Some(Ok(Message::Binary(_))) => AgentInput::Binary,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Close(frame))) => {
                            let normal = frame
                                .as_ref()
                                .is_none_or(|f| matches!(f.code, CloseCode::Normal | CloseCode::Away));
                            let _ = self.from_agent.try_send(AgentInput::Closed { normal });
                            let _ = tokio::time::timeout(CLOSE_WAIT, SinkExt::close(&mut socket)).await;
                            return;
                        }
                        Some(Err(err)) => {
                            tracing::debug!(%err, "agent read failed");
                            let _ = self.from_agent.try_send(AgentInput::Closed { normal: false });
                            return;
                        }
                        None => {
                            let _ = self.from_agent.try_send(AgentInput::Closed { normal: false });
                            return;
                        }
                    };
                    if self.from_agent.try_send(input).is_err() {
                        self.metrics.agent_messages_dropped.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

/// Which fallback a connect error is.
fn classify(err: &tungstenite::Error) -> FallbackReason {
    match err {
        tungstenite::Error::Tls(_) => FallbackReason::Tls,
        tungstenite::Error::Http(_) | tungstenite::Error::HttpFormat(_) => {
            FallbackReason::Handshake
        }
        tungstenite::Error::Io(io) => {
            // rustls reports certificate and protocol failures as I/O errors wrapping its own.
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                FallbackReason::Tls
            } else {
                FallbackReason::Refused
            }
        }
        tungstenite::Error::Protocol(_) => FallbackReason::Handshake,
        _ => FallbackReason::Refused,
    }
}
