//! SIP over TCP (RFC 3261 §18.3): one task per connection that frames the byte stream into
//! messages and writes what the SIP task sends. Connection count, message size and idle time
//! are bounded, so a peer cannot make earshot buffer without limit. A connection from outside
//! `[sip].allow` is reset at accept, before it takes a slot or a task: a flood of them is
//! counted, and logged at most once per [`LOG_EVERY`].
//!
//! A stream that cannot be framed any more (§18.3: a bad or ambiguous Content-Length, or a
//! message over the size limit) is closed gracefully: the header section of the offending
//! message goes to the SIP task like any message (it answers 400 when it can), then the task
//! is told the connection is closed, which drops its sender; everything it queued before that
//! (the answers to earlier messages in the stream and the 400) is still written, and then the
//! connection is shut down.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::Cidr;
use crate::metrics::Metrics;
use crate::sip::dialog::ConnId;
use crate::sip::message::StreamFramer;

/// What connection tasks tell the SIP task.
#[derive(Debug)]
pub enum TcpEvent {
    /// A connection is up; messages for it go into the sender.
    Opened {
        conn: ConnId,
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    /// One complete SIP message.
    Message {
        conn: ConnId,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    Closed {
        conn: ConnId,
    },
    /// An outbound connection could not be made.
    ConnectFailed {
        peer: SocketAddr,
    },
}

/// Limits shared by all connections.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    pub max_message: usize,
    pub idle_timeout: Duration,
    /// One permit per connection; a connection beyond the limit is closed at once.
    pub slots: Arc<Semaphore>,
    /// `[sip].allow`, shared with the SIP task (which replaces it on reload).
    pub allow: Arc<RwLock<Vec<Cidr>>>,
    pub metrics: Arc<Metrics>,
}

impl TcpLimits {
    /// Whether `peer` is inside `[sip].allow`.
    pub fn allowed(&self, peer: SocketAddr) -> bool {
        self.allow
            .read()
            .is_ok_and(|cidrs| cidrs.iter().any(|c| c.contains(peer.ip())))
    }
}

/// The accept loop logs refused connections at most this often, with their count since.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Connections refused at accept since the last log line.
#[derive(Debug, Default)]
struct Refusals {
    blocked: u64,
    full: u64,
    next_log: Option<Instant>,
}

impl Refusals {
    /// Counts one refusal and logs the tally when the last line is old enough.
    fn count(&mut self, blocked: bool) {
        if blocked {
            self.blocked += 1;
        } else {
            self.full += 1;
        }
        let now = clock::now();
        if self.next_log.is_some_and(|at| now < at) {
            return;
        }
        tracing::warn!(
            outside_allow = self.blocked,
            over_limit = self.full,
            "SIP TCP connections refused (outside [sip] allow, or beyond max_tcp_connections); \
             next summary in 10 s at the earliest"
        );
        *self = Refusals {
            next_log: Some(now + LOG_EVERY),
            ..Refusals::default()
        };
    }
}

/// Closes a connection from outside `[sip].allow` with a reset (SO_LINGER 0): nothing is
/// written to it, and no TIME_WAIT socket is left behind per refused peer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Messages queued for one connection before it counts as stuck and is closed.
const WRITE_QUEUE: usize = 128;
/// After our FIN, how long the peer's remaining bytes are read and discarded, so closing with
/// unread data does not reset the connection and destroy the answers just written.
const LINGER: Duration = Duration::from_secs(1);

/// Accepts connections until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    limits: TcpLimits,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "SIP TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !limits.allowed(peer) {
            limits.metrics.sip_blocked.fetch_add(1, Ordering::Relaxed);
            refusals.count(true);
            reset(stream);
            continue;
        }
        let Ok(permit) = limits.slots.clone().try_acquire_owned() else {
            limits
                .metrics
                .sip_tcp_refused
                .fetch_add(1, Ordering::Relaxed);
            refusals.count(false);
            // An allowed peer over the limit gets an orderly close, not a reset.
            drop(stream);
            continue;
        };
        let conn = ConnId(next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        tokio::spawn(run_connection(
            stream,
            peer,
            conn,
            events.clone(),
            limits.clone(),
            permit,
            shutdown.clone(),
        ));
    }
}

/// Opens an outbound connection (for requests over TCP to a peer we have no connection with)
/// and sends `first` on it.
pub async fn connect(
    peer: SocketAddr,
    conn: ConnId,
    first: Vec<u8>,
    events: mpsc::Sender<TcpEvent>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer)).await;
    let (Ok(Ok(mut stream)), Ok(permit)) = (stream, limits.slots.clone().try_acquire_owned())
    else {
        let _ = events.send(TcpEvent::ConnectFailed { peer }).await;
        return;
    };
    if stream.write_all(&first).await.is_err() {
        let _ = events.send(TcpEvent::ConnectFailed { peer }).await;
        return;
    }
    run_connection(stream, peer, conn, events, limits, permit, shutdown).await;
}

async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    conn: ConnId,
    events: mpsc::Sender<TcpEvent>,
    limits: TcpLimits,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut outbound) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    if events
        .send(TcpEvent::Opened {
            conn,
            peer,
            writer: tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let mut framer = StreamFramer::new(limits.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    let unframeable = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break false,
            read = tokio::time::timeout(limits.idle_timeout, reader.read(&mut buf)) => {
                let n = match read {
                    Ok(Ok(0)) | Ok(Err(_)) => break false,
                    Err(_) => {
                        tracing::debug!(%peer, "SIP TCP connection idle, closing");
                        break false;
                    }
                    Ok(Ok(n)) => n,
                };
                if let Err(err) = framer.push(buf.get(..n).unwrap_or_default()) {
                    limits.metrics.sip_oversized.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, %err, "SIP TCP message too large, closing");
                    break true;
                }
                match forward_messages(&mut framer, &events, conn, peer).await {
                    Forwarded::All => {}
                    Forwarded::Unframeable => break true,
                    Forwarded::SipTaskGone => break false,
                }
            }
            bytes = outbound.recv() => {
                // The SIP task dropped its sender: it refused this peer or forgot the connection.
                let Some(bytes) = bytes else { break false };
                if writer.write_all(&bytes).await.is_err() {
                    break false;
                }
            }
        }
    };
    let _ = events.send(TcpEvent::Closed { conn }).await;
    if unframeable {
        // The SIP task drops its sender when it handles Closed, after queueing its answers.
        let flush = async {
            while let Some(bytes) = outbound.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::timeout(limits.idle_timeout, flush) => {}
        }
    }
    let _ = writer.shutdown().await;
    if unframeable {
        let discard = async { while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(LINGER, discard).await;
    }
}

/// How [`forward_messages`] ended.
enum Forwarded {
    /// Every whole message went to the SIP task; more bytes are needed.
    All,
    /// The stream cannot be framed any more: close it (gracefully).
    Unframeable,
    /// The SIP task is gone.
    SipTaskGone,
}

/// Hands every whole message in the framer to the SIP task, and, when framing broke, the header
/// section of the message that broke it (for its 400).
async fn forward_messages(
    framer: &mut StreamFramer,
    events: &mpsc::Sender<TcpEvent>,
    conn: ConnId,
    peer: SocketAddr,
) -> Forwarded {
    while let Some(frame) = framer.next_message() {
        let bytes = match frame {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::debug!(%peer, %err, "SIP TCP framing error, answering and closing");
                if let Some(bytes) = framer.take_broken_head() {
                    let _ = events.send(TcpEvent::Message { conn, peer, bytes }).await;
                }
                return Forwarded::Unframeable;
            }
        };
        if events
            .send(TcpEvent::Message { conn, peer, bytes })
            .await
            .is_err()
        {
            return Forwarded::SipTaskGone;
        }
    }
    Forwarded::All
}
