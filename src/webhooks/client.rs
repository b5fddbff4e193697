//! The HTTP driver: one POST per attempt, HTTP/1.1 over a fresh TCP connection (TLS for
//! `https://`, rustls with the ring provider and the webpki roots), `Connection: close`, no
//! redirects. The host is resolved here and each address checked by [`address::forbidden`]
//! before connecting, and the connection goes to the checked address. Only the response's
//! status line is read. The whole attempt — resolve, connect, handshake, write, response
//! head — runs under the webhook's `timeout_ms`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::address;
use super::policy::Outcome;
use crate::config::WebhookUrl;

/// Most bytes of response head read while looking for the status line's end.
const MAX_HEAD: usize = 16 * 1024;

/// What one attempt sends.
#[derive(Debug)]
pub struct Attempt<'a> {
    pub url: &'a WebhookUrl,
    pub allow_private: bool,
    pub timeout: Duration,
    pub msg_id: &'a str,
    pub timestamp: u64,
    pub signature: &'a str,
    pub body: &'a [u8],
}

/// Sends one attempt; every failure is an [`Outcome`], never an error.
pub async fn post(tls: &Arc<rustls::ClientConfig>, attempt: &Attempt<'_>) -> Outcome {
    match tokio::time::timeout(attempt.timeout, post_inner(tls, attempt)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Transport(format!("timed out after {:?}", attempt.timeout)),
    }
}

async fn post_inner(tls: &Arc<rustls::ClientConfig>, attempt: &Attempt<'_>) -> Outcome {
    let url = attempt.url;
    let addrs: Vec<SocketAddr> = match url.host().parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port())],
        Err(_) => match tokio::net::lookup_host((url.host(), url.port())).await {
            Ok(addrs) => addrs.collect(),
            Err(err) => return Outcome::Transport(format!("cannot resolve the host: {err}")),
        },
    };
    let mut refused = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match address::forbidden(a.ip()) {
            Some(why) if !attempt.allow_private => {
                refused.get_or_insert(format!(
                    "{} is {why} (set allow_private = true to permit)",
                    a.ip()
                ));
                false
            }
            _ => true,
        })
        .collect();
    if allowed.is_empty() {
        return match refused {
            Some(why) => Outcome::Refused(why),
            None => Outcome::Transport("the host has no address".to_owned()),
        };
    }
    let mut last_err = String::new();
    let mut stream = None;
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last_err = format!("connect {addr}: {err}"),
        }
    }
    let Some(tcp) = stream else {
        return Outcome::Transport(last_err);
    };
    let _ = tcp.set_nodelay(true);
    if url.tls() {
        let name = match rustls_pki_types::ServerName::try_from(url.host().to_owned()) {
            Ok(name) => name,
            Err(err) => return Outcome::Transport(format!("bad TLS name: {err}")),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
        match connector.connect(name, tcp).await {
            Ok(tls) => exchange(tls, attempt).await,
            Err(err) => Outcome::Transport(format!("TLS: {err}")),
        }
    } else {
        exchange(tcp, attempt).await
    }
}

/// Writes the request and reads the response's status.
async fn exchange(mut io: impl AsyncRead + AsyncWrite + Unpin, attempt: &Attempt<'_>) -> Outcome {
    let head = request_head(attempt);
    let written = async {
        io.write_all(head.as_bytes()).await?;
        io.write_all(attempt.body).await?;
        io.flush().await
    };
    if let Err(err) = written.await {
        return Outcome::Transport(format!("write: {err}"));
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(status) = parse_status(&buf) {
            match status {
                Ok(status) => return Outcome::Status(status),
                Err(why) => return Outcome::Transport(why),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Outcome::Transport("response head too long".to_owned());
        }
        match io.read(&mut chunk).await {
            Ok(0) => return Outcome::Transport("connection closed before a response".to_owned()),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(err) => return Outcome::Transport(format!("read: {err}")),
        }
    }
}

/// The request line and headers.
fn request_head(a: &Attempt<'_>) -> String {
    let url = a.url;
    let default_port = if url.tls() { 443 } else { 80 };
    let host = if url.host().contains(':') {
        format!("[{}]", url.host())
    } else {
        url.host().to_owned()
    };
    let host = if url.port() == default_port {
        host
    } else {
        format!("{host}:{}", url.port())
    };
    format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: earshot/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nwebhook-id: {}\r\nwebhook-timestamp: {}\r\nwebhook-signature: {}\r\nConnection: close\r\n\r\n",
        url.path(),
        env!("CARGO_PKG_VERSION"),
        a.body.len(),
        a.msg_id,
        a.timestamp,
        a.signature,
    )
}

/// The status of the first final response in `buf`, once its status line is complete
/// (`None`: read more). Interim 1xx responses are skipped.
fn parse_status(buf: &[u8]) -> Option<Result<u16, String>> {
    let mut rest = buf;
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = rest.get(..end)?;
        let status = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix("HTTP/1."))
            .and_then(|l| l.get(2..5))
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..600).contains(s));
        let Some(status) = status else {
            return Some(Err("not an HTTP/1.x response".to_owned()));
        };
        if !(100..200).contains(&status) {
            return Some(Ok(status));
        }
        // Skip the interim response's head.
        let head_end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        rest = rest.get(head_end + 4..)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_read_from_the_first_final_response() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(Ok(204)));
        assert_eq!(
            parse_status(b"HTTP/1.0 302 Found\r\nLocation: x\r\n"),
            Some(Ok(302))
        );
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(
            parse_status(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 410 Gone\r\n"),
            Some(Ok(410))
        );
        assert_eq!(parse_status(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        assert!(matches!(parse_status(b"SIP/2.0 200 OK\r\n"), Some(Err(_))));
        assert!(matches!(parse_status(b"HTTP/1.1 999 Hm\r\n"), Some(Err(_))));
    }

    #[test]
    fn the_request_names_the_host_and_carries_the_three_headers() {
        let url = WebhookUrl::parse("http://[fd00::1]:8080/hook?a=1").unwrap();
        let head = request_head(&Attempt {
            url: &url,
            allow_private: true,
            timeout: Duration::from_secs(1),
            msg_id: "msg_1",
            timestamp: 42,
            signature: "v1,abc",
            body: b"{}",
        });
        assert!(
            head.starts_with("POST /hook?a=1 HTTP/1.1\r\nHost: [fd00::1]:8080\r\n"),
            "{head}"
        );
        for line in [
            "webhook-id: msg_1\r\n",
            "webhook-timestamp: 42\r\n",
            "webhook-signature: v1,abc\r\n",
            "Content-Length: 2\r\n",
            "Content-Type: application/json\r\n",
        ] {
            assert!(head.contains(line), "{line}");
        }
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[tokio::test]
    async fn a_loopback_url_is_refused_without_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = WebhookUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let attempt = Attempt {
            url: &url,
            allow_private: false,
            timeout: Duration::from_secs(2),
            msg_id: "msg_1",
            timestamp: 1,
            signature: "v1,x",
            body: b"{}",
        };
        let outcome = post(&crate::net::tls::client_config(None).unwrap(), &attempt).await;
        assert!(
            matches!(&outcome, Outcome::Refused(why) if why.contains("loopback")),
            "{outcome:?}"
        );
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "nothing connected");
    }
}
