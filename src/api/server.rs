//! The HTTP/1.1 server under the API and Twilio's routes, with the limits `axum::serve` lacks
//! (slowloris): a request head must arrive within `[http].header_read_timeout_secs` (hyper's
//! timer, which also bounds the keep-alive wait for the next request), a connection that
//! moves no byte either way for `[http].idle_timeout_secs` is closed (a slow body, a response
//! nobody reads), and at most `[http].max_connections` are open at once: beyond it, new ones
//! are closed at accept. Each refusal and timeout is counted.
//!
//! A connection's permit lives in its socket, so an upgraded WebSocket (a Twilio stream) keeps
//! counting until it closes; the idle timeout stops at the upgrade (streams have their own
//! silence timeout).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::HttpConfig;
use crate::metrics::Metrics;

/// Back-off after a failed accept (out of file descriptors): the error repeats at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// `[http]`'s connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ConnLimits {
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(http.idle_timeout_secs),
            max_connections: http.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish (event
/// streams end on the same token).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection task holds a receiver; the server waits for them all at shutdown.
    let (done_tx, done_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                tracing::debug!(%err, "http accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_connections_refused.fetch_add(1, Relaxed);
            tracing::debug!(
                max = limits.max_connections,
                "http connection refused: at max_connections"
            );
            drop(tcp);
            continue;
        };
        // Without TCP_NODELAY, Nagle holds a Twilio stream's 20 ms media frames back until the
        // peer's delayed ACK (up to 40 ms), then sends them in pairs.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        let task = connection(
            tcp,
            permit,
            router.clone(),
            limits,
            metrics.clone(),
            shutdown.clone(),
        );
        let done = done_rx.clone();
        tokio::spawn(async move {
            task.await;
            drop(done);
        });
    }
    drop(done_rx);
    drop(listener);
    done_tx.closed().await;
    Ok(())
}

/// One connection, until it closes, upgrades, times out or shutdown has drained it.
async fn connection(
    tcp: TcpStream,
    permit: OwnedSemaphorePermit,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let opened = clock::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = Tracked {
        tcp,
        opened,
        activity: activity.clone(),
        _permit: permit,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let idle_at = opened + Duration::from_millis(activity.load(Relaxed)) + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    if err.is_timeout() {
                        metrics.http_connections_timed_out.fetch_add(1, Relaxed);
                        tracing::debug!("http connection closed: request head too slow");
                    } else {
                        tracing::debug!(%err, "http connection ended with an error");
                    }
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = clock::sleep_until(Some(tokio::time::Instant::from_std(idle_at))) => {
                let last = opened + Duration::from_millis(activity.load(Relaxed));
                if clock::now().saturating_duration_since(last) >= limits.idle_timeout {
                    metrics.http_connections_timed_out.fetch_add(1, Relaxed);
                    tracing::debug!("http connection closed: idle");
                    return;
                }
            }
        }
    }
}

/// The connection's socket: notes when a byte last moved, and holds the connection's permit
/// for as long as the socket lives (through a WebSocket upgrade too).
struct Tracked {
    tcp: TcpStream,
    opened: Instant,
    /// Milliseconds from `opened` to the last read or write that moved bytes.
    activity: Arc<AtomicU64>,
    _permit: OwnedSemaphorePermit,
}

impl Tracked {
    fn touch(&self) {
        let ms = clock::now()
            .saturating_duration_since(self.opened)
            .as_millis();
        self.activity
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write(cx, data);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
