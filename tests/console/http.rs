//! A tiny HTTP/1.1 client for the API tests: one request per connection over `std::net`, plus a
//! server-sent-events reader. Enough for JSON, byte ranges, chunked bodies and SSE; nothing
//! more. Included by the test crates with `#[path = "console/http.rs"] mod http;`.

#![allow(dead_code, unreachable_pub)]
#![allow(clippy::disallowed_methods)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // Read until the body is complete (by Content-Length or the last chunk), or the end: some
    // servers keep the connection open despite `Connection: close`.
    loop {
        if complete(&raw) {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if !raw.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&raw)
}

/// Whether `raw` holds a whole response.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"))
    {
        let mut decoder = Chunked::default();
        decoder.feed(body);
        return decoder.done;
    }
    match head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        Some(len) => body.len() >= len,
        None => head.starts_with("http/1.1 304") || head.starts_with("http/1.1 204"),
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

pub fn send_json(addr: SocketAddr, method: &str, path: &str, body: &serde_json::Value) -> Response {
    let body = body.to_string();
    request(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `POST /api/calls/{id}/hangup` with `headers` (a token, if the box needs one); asserts the
/// API accepted it (202).
pub fn hang_up(addr: SocketAddr, id: &str, headers: &[(&str, &str)]) {
    let path = format!("/api/calls/{id}/hangup");
    let r = request(addr, "POST", &path, headers, b"").unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(r.status, 202, "{path}: {}", r.text());
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        let mut decoder = Chunked::default();
        decoder.feed(rest);
        decoder.out
    } else {
        match headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok())
        {
            Some(len) => rest[..len.min(rest.len())].to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Default)]
struct Chunked {
    pending: Vec<u8>,
    /// Bytes left in the current chunk (plus its CRLF), `None` between chunks.
    left: Option<usize>,
    out: Vec<u8>,
    done: bool,
}

impl Chunked {
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        loop {
            match self.left {
                None => {
                    let Some(eol) = find(&self.pending, b"\r\n") else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&self.pending[..eol]).into_owned();
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .unwrap_or(0);
                    self.pending.drain(..eol + 2);
                    if size == 0 {
                        self.done = true;
                        return;
                    }
                    self.left = Some(size + 2);
                }
                Some(left) => {
                    if self.pending.is_empty() {
                        return;
                    }
                    let take = left.min(self.pending.len());
                    let data_part = take.min(left.saturating_sub(2));
                    self.out.extend_from_slice(&self.pending[..data_part]);
                    self.pending.drain(..take);
                    self.left = if left == take {
                        None
                    } else {
                        Some(left - take)
                    };
                }
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// A connected `GET /api/events`.
pub struct Sse {
    stream: TcpStream,
    decoder: Chunked,
    consumed: usize,
    pub status: u16,
}

impl Sse {
    /// Connects, with `Last-Event-ID` when `last_id` is given and extra headers.
    pub fn connect(
        addr: SocketAddr,
        path: &str,
        last_id: Option<u64>,
        headers: &[(&str, &str)],
    ) -> io::Result<Sse> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut raw = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let end = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no response head"));
            }
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut decoder = Chunked::default();
        decoder.feed(&raw[end + 4..]);
        Ok(Sse {
            stream,
            decoder,
            consumed: 0,
            status,
        })
    }

    /// The next event (comments skipped), or `None` after `timeout` or when the stream ends.
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = &self.decoder.out[self.consumed..];
            if let Some(end) = find(text, b"\n\n") {
                let block = String::from_utf8_lossy(&text[..end]).into_owned();
                self.consumed += end + 2;
                let mut id = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(SseEvent {
                    id,
                    data: data.join("\n"),
                });
            }
            if self.decoder.done || Instant::now() > deadline {
                return None;
            }
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.decoder.feed(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    /// Events until one satisfies `stop` (included) or `timeout`.
    pub fn until(
        &mut self,
        timeout: Duration,
        stop: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(event) = self.next(left) else { break };
            let done = stop(&event.json());
            events.push(event);
            if done {
                break;
            }
        }
        events
    }
}
