//! The agent bridge against agents written here. Each test runs its own Twilio Media Streams
//! agent (tokio-tungstenite; wss through tokio-rustls with a CA made by the `openssl` CLI)
//! beside the real binary and SIPp callers, and checks what the agent receives field by field,
//! the accounting of marks and `clear`, what bad agent input does (nothing but counters), and
//! every fallback: refused, connect timeout, TLS, handshake, closed, busy, not reading.
//!
//! The test bodies are synchronous (SIPp, the HTTP API); each test's agent runs on its own
//! tokio runtime and is driven with `block_on`.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;
mod twilio_client;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use earshot::media::g711::Law;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use support::Earshot;
use support::pcap;
use support::sipp::{self, Scenario, Sipp};
use twilio_client::{Plan, TwilioSide};

/// Debug logs of the call path: the agent session's counters are logged at debug.
const DEBUG_LOG: &str = "[log]\nlevel = \"info,earshot=debug\"\n";
/// How long an agent waits for any one thing earshot should send.
const WAIT: Duration = Duration::from_secs(15);
/// The agent's voice in these tests: a tone the recording's right channel is checked for.
const AGENT_HZ: f64 = 600.0;
/// The fallback message's tone.
const FALLBACK_HZ: f64 = 1000.0;

// ---------------------------------------------------------------------------------------------
// The agent: a WebSocket server whose connections the test drives.
// ---------------------------------------------------------------------------------------------

/// What an agent connection's reader saw.
#[derive(Debug)]
enum Got {
    /// A text message (JSON; anything else is kept as `{"not_json": text}`), when it arrived.
    Text(Instant, Value),
    Binary,
    End(Ended),
    /// A write to earshot failed.
    WriteFailed(String),
}

/// How an agent connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// With a close frame from earshot, of this code.
    Close(Option<u16>),
    /// Without a close frame: why.
    Abrupt(String),
}

/// What the test has an agent connection do, in order.
enum Out {
    Send(Message),
    /// Answers once everything before it was written to the socket.
    Flushed(oneshot::Sender<()>),
    /// Drops the TCP connection without a close frame.
    Drop,
}

/// One connection from earshot, as the test drives it. A reader task keeps reading (until
/// [`AgentConn::stop_reading`]), so the agent never stalls earshot while it writes.
struct AgentConn {
    inbox: mpsc::UnboundedReceiver<Got>,
    outbox: mpsc::Sender<Out>,
    reading: watch::Sender<bool>,
    /// Every text received so far, in order.
    seen: Vec<Value>,
    binary: usize,
    write_errors: Vec<String>,
    /// How the connection ended, once it has.
    ended: Option<Ended>,
}

impl AgentConn {
    fn spawn<S>(ws: WebSocketStream<S>) -> AgentConn
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (in_tx, inbox) = mpsc::unbounded_channel();
        let in_tx_writer = in_tx.clone();
        let (outbox, mut out_rx) = mpsc::channel::<Out>(64);
        let (reading, mut read_rx) = watch::channel(true);
        let (drop_tx, mut drop_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut closed = false;
            loop {
                let read = *read_rx.borrow_and_update();
                tokio::select! {
                    // The writer dropped the connection (or the test dropped the conn).
                    _ = &mut drop_rx => return,
                    changed = read_rx.changed() => if changed.is_err() {
                        return;
                    },
                    message = stream.next(), if read => {
                        let got = match message {
                            Some(Ok(Message::Text(text))) => Got::Text(
                                Instant::now(),
                                serde_json::from_str(text.as_str())
                                    .unwrap_or_else(|_| json!({ "not_json": text.as_str() })),
                            ),
                            Some(Ok(Message::Binary(_))) => Got::Binary,
                            // Keep reading after a close frame: that flushes our reply.
                            Some(Ok(Message::Close(frame))) => {
                                closed = true;
                                Got::End(Ended::Close(frame.map(|f| u16::from(f.code))))
                            }
                            Some(Ok(_)) => continue,
                            Some(Err(err)) => {
                                if !closed {
                                    let _ = in_tx.send(Got::End(Ended::Abrupt(err.to_string())));
                                }
                                return;
                            }
                            None => {
                                if !closed {
                                    let _ = in_tx.send(Got::End(Ended::Abrupt("end of stream".into())));
                                }
                                return;
                            }
                        };
                        let _ = in_tx.send(got);
                    }
                }
            }
        });
        let errors = in_tx_writer;
        tokio::spawn(async move {
            let mut failed = false;
            while let Some(out) = out_rx.recv().await {
                match out {
                    Out::Send(message) if !failed => {
                        if let Err(err) = sink.send(message).await {
                            failed = true;
                            let _ = errors.send(Got::WriteFailed(err.to_string()));
                        }
                    }
                    Out::Send(_) => {}
                    Out::Flushed(done) => {
                        let _ = done.send(());
                    }
                    Out::Drop => break,
                }
            }
            // Dropping `drop_tx` ends the reader; with both halves gone the socket closes.
            drop(drop_tx);
        });
        AgentConn {
            inbox,
            outbox,
            reading,
            seen: Vec::new(),
            binary: 0,
            write_errors: Vec::new(),
            ended: None,
        }
    }

    /// The next message within `limit` (`None` when the time is up or the connection ended).
    async fn next(&mut self, limit: Duration) -> Option<(Instant, Value)> {
        if self.ended.is_some() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(Got::Text(at, value))) => {
                    self.seen.push(value.clone());
                    return Some((at, value));
                }
                Ok(Some(Got::Binary)) => self.binary += 1,
                Ok(Some(Got::WriteFailed(err))) => self.write_errors.push(err),
                Ok(Some(Got::End(how))) => {
                    self.ended = Some(how);
                    return None;
                }
                Ok(None) => {
                    self.ended = Some(Ended::Abrupt("the reader stopped".into()));
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Reads until a message matching `pred`; returns it and how many caller `media` arrived
    /// at or after `since` before it. Panics with what came instead after `limit`.
    async fn until(
        &mut self,
        limit: Duration,
        what: &str,
        since: Instant,
        pred: impl Fn(&Value) -> bool,
    ) -> (Value, usize) {
        let deadline = Instant::now() + limit;
        let mut media = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((at, value)) = self.next(left).await else {
                panic!(
                    "{what}: not received within {limit:?} (connection ended: {:?}, write errors {:?}); the last messages:\n{}",
                    self.ended,
                    self.write_errors,
                    self.tail(8)
                );
            };
            if pred(&value) {
                return (value, media);
            }
            if value["event"] == "media" && at >= since {
                media += 1;
            }
        }
    }

    /// Reads until the connection ends (or `limit`); returns how it ended.
    async fn drain(&mut self, limit: Duration) -> Option<Ended> {
        let deadline = Instant::now() + limit;
        while self.ended.is_none() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            self.next(left).await;
        }
        self.ended.clone()
    }

    async fn send(&self, message: Message) {
        let _ = self.outbox.send(Out::Send(message)).await;
    }

    async fn send_json(&self, value: &Value) {
        self.send(Message::text(value.to_string())).await;
    }

    /// Waits until everything sent so far was written to the socket.
    async fn flushed(&self) {
        let (done, wait) = oneshot::channel();
        if self.outbox.send(Out::Flushed(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    async fn close(&self, code: CloseCode) {
        let frame = CloseFrame {
            code,
            reason: "goodbye".into(),
        };
        self.send(Message::Close(Some(frame))).await;
    }

    /// Drops the TCP connection without a close frame.
    async fn drop_connection(&self) {
        let _ = self.outbox.send(Out::Drop).await;
    }

    /// Stops reading the socket for good: what earshot sends piles up in the kernel.
    fn stop_reading(&self) {
        let _ = self.reading.send(false);
    }

    fn tail(&self, n: usize) -> String {
        let from = self.seen.len().saturating_sub(n);
        self.seen[from..]
            .iter()
            .map(|v| {
                let mut text = v.to_string();
                text.truncate(300);
                text
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A Twilio Media Streams agent on a fresh loopback port.
struct AgentServer {
    url: String,
    conns: mpsc::UnboundedReceiver<AgentConn>,
    /// Connections whose TLS or WebSocket handshake failed.
    failed_handshakes: Arc<AtomicUsize>,
}

impl AgentServer {
    /// Starts an agent: `ws://`, or `wss://` with `tls`. `recv_buffer` sets the listener's
    /// receive buffer, which accepted connections inherit (an agent that reads slowly).
    fn start(
        rt: &Runtime,
        tls: Option<tokio_rustls::TlsAcceptor>,
        recv_buffer: Option<u32>,
    ) -> AgentServer {
        let _runtime = rt.enter();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .unwrap();
        let listener = socket.listen(64).unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let (tx, conns) = mpsc::unbounded_channel();
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let failed = failed_handshakes.clone();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tx, tls, failed) = (tx.clone(), tls.clone(), failed.clone());
                tokio::spawn(async move {
                    let conn = match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => tokio_tungstenite::accept_async(stream)
                                .await
                                .map(AgentConn::spawn),
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        },
                        None => tokio_tungstenite::accept_async(tcp)
                            .await
                            .map(AgentConn::spawn),
                    };
                    match conn {
                        Ok(conn) => {
                            let _ = tx.send(conn);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        AgentServer {
            url: format!("{scheme}://{addr}/agent"),
            conns,
            failed_handshakes,
        }
    }

    /// The next connection from earshot.
    async fn accept(&mut self, limit: Duration) -> AgentConn {
        tokio::time::timeout(limit, self.conns.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("earshot did not connect to the agent within {limit:?}"))
    }

    /// A connection that is already there.
    fn try_accept(&mut self) -> Option<AgentConn> {
        self.conns.try_recv().ok()
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Reads `connected` and `start`; returns the stream's sid.
async fn read_start(conn: &mut AgentConn) -> String {
    let now = Instant::now();
    conn.until(WAIT, "connected", now, |m| m["event"] == "connected")
        .await;
    let (start, _) = conn
        .until(WAIT, "start", now, |m| m["event"] == "start")
        .await;
    start["streamSid"].as_str().unwrap().to_owned()
}

fn media_json(sid: &str, ulaw: &[u8]) -> Value {
    json!({ "event": "media", "streamSid": sid, "media": { "payload": BASE64.encode(ulaw) } })
}

fn mark_json(sid: &str, name: &str) -> Value {
    json!({ "event": "mark", "streamSid": sid, "mark": { "name": name } })
}

fn is_mark(name: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["event"] == "mark" && m["mark"]["name"] == name
}

// ---------------------------------------------------------------------------------------------
// Audio.
// ---------------------------------------------------------------------------------------------

/// `ms` of a sine at `hz`, 8 kHz.
fn tone(hz: f64, ms: u32, amplitude: f64) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            ((2.0 * std::f64::consts::PI * hz * t).sin() * amplitude) as i16
        })
        .collect()
}

fn ulaw(pcm: &[i16]) -> Vec<u8> {
    let mut codes = vec![0u8; pcm.len()];
    Law::Ulaw.encode(pcm, &mut codes);
    codes
}

fn rms(samples: &[i16]) -> f64 {
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (energy / samples.len().max(1) as f64).sqrt()
}

// ---------------------------------------------------------------------------------------------
// earshot and SIPp.
// ---------------------------------------------------------------------------------------------

/// earshot's configuration with `[agent]` at `url` (more `[agent]` keys in `agent_keys`) and
/// any other sections in `rest`.
fn agent_config(url: &str, agent_keys: &str, rest: &str) -> String {
    format!("[agent]\nurl = {url:?}\nprotocol = \"twilio\"\n{agent_keys}\n{rest}")
}

/// The test signal for `ms` (PCMU), then an RFC 4733 press of `digit`: the caller's capture.
/// Returns its path and the 160-byte payloads it carries.
fn caller_pcap(e: &Earshot, ms: u32, digit: u8) -> (String, Vec<Vec<u8>>) {
    let codes = pcap::coded_test_signal(Law::Ulaw, ms);
    let mut packets = pcap::g711_packets(0, 1000, &codes);
    packets.extend(pcap::dtmf_packets(
        101,
        1000 + codes.len() as u32,
        digit,
        800,
    ));
    let path = e.dir().join(format!("caller-{ms}.pcap"));
    pcap::write_rtp_pcap(&path, 0x1234_5678, 100, &packets).unwrap();
    let frames = codes.chunks(160).map(<[u8]>::to_vec).collect();
    (path.display().to_string(), frames)
}

/// A caller that streams its capture and stays on until earshot hangs up.
fn caller_waiting_for_bye(e: &Earshot, pcap: &str) -> Sipp {
    caller_in(e, pcap, "uac_wait_early_bye.xml")
}

/// A caller of `scenario` (one with a `PCAP` and a `BYE_TIMEOUT_MS`).
fn caller_in(e: &Earshot, pcap: &str, scenario: &str) -> Sipp {
    let vars = [
        ("PCAP", pcap.to_owned()),
        ("BYE_TIMEOUT_MS", "40000".into()),
    ];
    sipp::caller(e, scenario, &vars)
}

/// Callers that stream `pcap_ms` of their capture, send an INFO digit, stay `hold_ms` more and
/// hang up themselves; `args` are SIPp's (`-m`, `-l`).
fn callers_hanging_up(e: &Earshot, pcap: &str, pcap_ms: u32, hold_ms: u32, args: &[&str]) -> Sipp {
    let vars = vec![
        ("CODECS", "0".to_owned()),
        ("PTS", "0".to_owned()),
        ("RTPMAPS", "a=rtpmap:0 PCMU/8000".to_owned()),
        ("ANSWER_PT", "0".to_owned()),
        ("PCAP", pcap.to_owned()),
        ("PCAP_MS", (pcap_ms + 500).to_string()),
        ("HOLD_MS", hold_ms.to_string()),
        ("CALLER", "+15551234567".to_owned()),
        ("CALLEE", "1000".to_owned()),
    ];
    let scenario = Scenario::load("uac_call.xml", &vars);
    sipp::start(e.dir(), &scenario, Some(e.sip_addr()), sipp::port(), args)
}

/// The ids of the calls earshot knows, once there are `n`.
fn call_ids(e: &Earshot, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = http::get(e.http_addr(), "/api/calls?limit=10").json()["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if calls.len() >= n || Instant::now() > deadline {
            assert_eq!(calls.len(), n, "calls: {calls:#?}");
            return calls
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The call's record once it has ended (the store commits just after the BYE).
fn ended_call(e: &Earshot, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let call = http::get(e.http_addr(), &format!("/api/calls/{id}")).json();
        if call["status"] == "ended" {
            return call;
        }
        assert!(
            Instant::now() < deadline,
            "call {id} did not end: {call:#}\n{}",
            e.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `agent_fallback` events of a call record.
fn fallbacks(call: &Value) -> Vec<String> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| ev["type"] == "agent_fallback")
        .map(|ev| ev["reason"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn has_event(call: &Value, kind: &str) -> bool {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|ev| ev["type"] == kind)
}

/// One series of `/metrics` (`name{labels}` as written), if it is there.
fn metric(e: &Earshot, series: &str) -> Option<f64> {
    let text = http::get(e.http_addr(), "/metrics").text();
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Waits until a series of `/metrics` reads `value`; panics with what it read after 10 s.
fn wait_metric(e: &Earshot, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(e, series);
        if now == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {now:?}, not {value}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fallback_metric(e: &Earshot, reason: &str) -> f64 {
    metric(
        e,
        &format!("earshot_agent_fallbacks_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or_else(|| panic!("no fallback metric for {reason}"))
}

/// A `key=value` field of the last log line containing `marker`.
fn log_field(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

/// The call's recording, (left, right), once its writer has closed it.
fn recording(e: &Earshot, call: &Value) -> (Vec<i16>, Vec<i16>) {
    let id = call["id"].as_str().unwrap();
    let path = call["recording"]["path"].as_str().map_or_else(
        || e.dir().join("recordings").join(format!("{id}.wav")),
        PathBuf::from,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last_len = None;
    loop {
        if let Ok(reader) = hound::WavReader::open(&path) {
            let spec = reader.spec();
            assert_eq!(
                (spec.channels, spec.sample_rate, spec.bits_per_sample),
                (2, 8000, 16),
                "{}",
                path.display()
            );
            let samples: Vec<i16> = reader.into_samples::<i16>().map_while(Result::ok).collect();
            if !samples.is_empty() && last_len == Some(samples.len()) {
                let left = samples.iter().step_by(2).copied().collect();
                let right = samples.iter().skip(1).step_by(2).copied().collect();
                return (left, right);
            }
            last_len = Some(samples.len());
        }
        assert!(
            Instant::now() < deadline,
            "no finished recording at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's resident memory every 20 ms and keeps the peak.
struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssPeak { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol, field by field.
// ---------------------------------------------------------------------------------------------

/// Checks every message an agent received against Twilio's Media Streams: `connected`, then
/// `start` (numbered 1), then numbered `media`, `dtmf`, `mark` and a final `stop`, all with
/// the stream's sid. Returns the caller's audio frames, in order.
fn assert_twilio_stream(seen: &[Value], call_id: &str) -> Vec<Vec<u8>> {
    let all = || {
        seen.iter()
            .take(6)
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(seen.len() >= 2, "too few messages:\n{}", all());
    let connected = &seen[0];
    assert_eq!(connected["event"], "connected", "{}", all());
    assert_eq!(connected["protocol"], "Call");
    assert_eq!(connected["version"], "1.0.0");
    assert!(
        connected.get("sequenceNumber").is_none(),
        "connected is not numbered: {connected}"
    );

    let start = &seen[1];
    assert_eq!(start["event"], "start", "{}", all());
    assert_eq!(start["sequenceNumber"], "1");
    let sid = start["streamSid"].as_str().unwrap();
    let sid_ok = |s: &str, prefix: &str| {
        s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    assert!(sid_ok(sid, "MZ"), "streamSid {sid}");
    let s = &start["start"];
    assert_eq!(s["streamSid"], sid);
    let account = s["accountSid"].as_str().unwrap();
    let call_sid = s["callSid"].as_str().unwrap();
    assert!(sid_ok(account, "AC"), "accountSid {account}");
    assert!(sid_ok(call_sid, "CA"), "callSid {call_sid}");
    assert_eq!(s["tracks"], json!(["inbound"]));
    assert_eq!(
        s["mediaFormat"],
        json!({ "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 })
    );
    let params = &s["customParameters"];
    assert_eq!(params["callId"], call_id, "{start}");
    assert_eq!(params["source"], "sip");
    assert!(params["caller"].is_string() && params["callee"].is_string());

    let mut chunks = 0u64;
    let mut last_timestamp = 0u64;
    let mut frames = Vec::new();
    for (i, m) in seen.iter().enumerate().skip(1) {
        assert_eq!(
            m["sequenceNumber"],
            i.to_string(),
            "message {i} is out of sequence: {m}"
        );
        assert_eq!(m["streamSid"], sid, "{m}");
        match m["event"].as_str().unwrap_or_default() {
            "start" => assert_eq!(i, 1, "a second start: {m}"),
            "media" => {
                chunks += 1;
                let media = &m["media"];
                assert_eq!(media["track"], "inbound", "{m}");
                assert_eq!(media["chunk"], chunks.to_string(), "{m}");
                let timestamp: u64 = media["timestamp"].as_str().unwrap().parse().unwrap();
                assert!(timestamp >= last_timestamp, "time went back: {m}");
                last_timestamp = timestamp;
                let payload = BASE64.decode(media["payload"].as_str().unwrap()).unwrap();
                assert_eq!(payload.len(), 160, "{m}");
                frames.push(payload);
            }
            "dtmf" => {
                assert_eq!(m["dtmf"]["track"], "inbound_track", "{m}");
                let digit = m["dtmf"]["digit"].as_str().unwrap();
                assert!(
                    digit.len() == 1 && "0123456789*#ABCD".contains(digit),
                    "{m}"
                );
            }
            "mark" => assert!(m["mark"]["name"].is_string(), "{m}"),
            "stop" => {
                assert_eq!(i, seen.len() - 1, "stop is not the last message");
                assert_eq!(m["stop"]["accountSid"], account);
                assert_eq!(m["stop"]["callSid"], call_sid);
            }
            other => panic!("unexpected event {other:?}: {m}"),
        }
    }
    frames
}

/// How many of the caller's frames reached the agent exactly as sent.
fn frames_delivered(sent: &[Vec<u8>], received: &[Vec<u8>]) -> usize {
    let received: std::collections::HashSet<&[u8]> = received.iter().map(Vec::as_slice).collect();
    sent.iter()
        .filter(|f| f.len() == 160 && received.contains(f.as_slice()))
        .count()
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn marks_echo_after_their_audio_and_clear_echoes_at_once() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&agent_config(&agent.url, "", ""));
    let (pcap, caller_frames) = caller_pcap(&e, 3000, 5);
    let sipp = caller_waiting_for_bye(&e, &pcap);

    let (seen, media_before_one, media_before_two, closed) = rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        let sid = read_start(&mut conn).await;
        // The session counts as up before `start` is sent.
        assert_eq!(metric(&e, "earshot_agent_sessions"), Some(1.0));
        // One second of speech in odd-sized pieces, then a mark.
        let speech = ulaw(&tone(AGENT_HZ, 1000, 8000.0));
        assert_eq!(speech.len(), 8000);
        for piece in speech.chunks(1234) {
            conn.send_json(&media_json(&sid, piece)).await;
        }
        conn.flushed().await;
        let marked = Instant::now();
        conn.send_json(&mark_json(&sid, "one")).await;
        let (_, media_before_one) = conn
            .until(WAIT, "the echo of mark one", marked, is_mark("one"))
            .await;
        // Ten seconds more, a mark, and a clear: the mark comes back at once.
        let long = ulaw(&tone(AGENT_HZ, 10_000, 8000.0));
        for piece in long.chunks(1234) {
            conn.send_json(&media_json(&sid, piece)).await;
        }
        conn.send_json(&mark_json(&sid, "two")).await;
        conn.send_json(&json!({ "event": "clear", "streamSid": sid }))
            .await;
        conn.flushed().await;
        let cleared = Instant::now();
        let (_, media_before_two) = conn
            .until(WAIT, "the echo of mark two", cleared, is_mark("two"))
            .await;
        // The caller's key press (RFC 4733, after its three seconds of audio).
        conn.until(WAIT, "the caller's DTMF", cleared, |m| m["event"] == "dtmf")
            .await;
        conn.close(CloseCode::Normal).await;
        let closed = conn.drain(WAIT).await;
        assert!(conn.write_errors.is_empty(), "{:?}", conn.write_errors);
        assert_eq!(conn.binary, 0, "earshot sent binary frames");
        (conn.seen, media_before_one, media_before_two, closed)
    });

    let outcome = sipp.wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
    assert!(
        (35..=150).contains(&media_before_one),
        "mark one came back after {media_before_one} caller frames; its second of audio is 50"
    );
    assert!(
        media_before_two < 10,
        "mark two came back {media_before_two} caller frames after the clear"
    );
    // (Whether earshot answers the close frame is `the_agents_close_frame_is_answered`.)
    assert!(
        closed.is_some(),
        "earshot kept the socket open after the agent closed it"
    );

    let id = call_ids(&e, 1).remove(0);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "agent hangup", "{call:#}");
    assert!(call["agent"]["connect_ms"].is_u64(), "{call:#}");
    assert!(call["agent"]["fallback"].is_null(), "{call:#}");
    assert!(has_event(&call, "agent_connected"), "{call:#}");
    assert_eq!(metric(&e, "earshot_agent_connect_seconds_count"), Some(1.0));
    wait_metric(&e, "earshot_agent_sessions", 0.0);

    let frames = assert_twilio_stream(&seen, &id);
    // The agent closed: earshot has nobody to send `stop` to.
    assert!(seen.iter().all(|m| m["event"] != "stop"));
    let digits: Vec<&str> = seen
        .iter()
        .filter(|m| m["event"] == "dtmf")
        .map(|m| m["dtmf"]["digit"].as_str().unwrap())
        .collect();
    assert_eq!(digits, ["5"], "the caller's RFC 4733 key press");
    let marks: Vec<&str> = seen
        .iter()
        .filter(|m| m["event"] == "mark")
        .map(|m| m["mark"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(marks, ["one", "two"]);
    let delivered = frames_delivered(&caller_frames, &frames);
    assert!(
        delivered * 10 >= caller_frames.len() * 8,
        "only {delivered} of the caller's {} frames reached the agent unchanged",
        caller_frames.len()
    );

    // The agent's second played; the cleared ten seconds did not.
    let (_, right) = recording(&e, &call);
    let played = support::tone_blocks(&right, AGENT_HZ);
    assert!(
        (45..=75).contains(&played),
        "{played} frames of the agent's tone recorded; 50 were played before the clear"
    );
    assert!(e.panics().is_empty(), "{:?}", e.panics());
}

#[test]
fn bad_agent_input_is_counted_and_the_call_goes_on() {
    const BLAST: usize = 3600;
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&agent_config(
        &agent.url,
        "max_queue_secs = 60\n",
        DEBUG_LOG,
    ));
    std::thread::sleep(Duration::from_millis(300));
    let idle_kib = rss_kib(e.pid());
    let (pcap, _) = caller_pcap(&e, 2000, 5);
    let sipp = callers_hanging_up(&e, &pcap, 2000, 6000, &["-m", "1"]);
    let peak = RssPeak::start(e.pid());

    let (seen, blast_time) = rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        let sid = read_start(&mut conn).await;
        let other = format!("MZ{}", "0".repeat(32));
        conn.send(Message::text("this is not JSON")).await;
        conn.send_json(&json!({ "event": "dance", "streamSid": sid }))
            .await;
        conn.send_json(&json!({ "event": "media", "streamSid": sid, "media": { "payload": "!!not base64!!" } }))
            .await;
        conn.send(Message::binary(vec![1u8, 2, 3])).await;
        conn.send_json(&media_json(&other, &[0x55; 160])).await;
        conn.send_json(&json!({ "event": "mark", "streamSid": sid }))
            .await;
        // An hour of audio in one go: a second of tone per message.
        let second = Message::text(media_json(&sid, &ulaw(&tone(AGENT_HZ, 1000, 8000.0))).to_string());
        let began = Instant::now();
        for _ in 0..BLAST {
            conn.send(second.clone()).await;
        }
        conn.flushed().await;
        let blast_time = began.elapsed();
        // The caller hangs up; `stop` is the last word.
        conn.until(Duration::from_secs(40), "stop", began, |m| m["event"] == "stop")
            .await;
        let ended = conn.drain(WAIT).await;
        assert!(
            matches!(ended, Some(Ended::Close(_))),
            "earshot did not close with a close frame: {ended:?}"
        );
        (conn.seen, blast_time)
    });
    let peak_kib = peak.stop();

    let outcome = sipp.wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
    assert!(e.panics().is_empty(), "{:?}", e.panics());
    let id = call_ids(&e, 1).remove(0);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert_eq!(fallbacks(&call), Vec::<String>::new(), "{call:#}");
    assert_twilio_stream(&seen, &id);
    assert_eq!(seen.last().unwrap()["event"], "stop");

    // Every piece of junk counted, the audio accounted for byte by byte.
    let log = e.stderr_log();
    let field = |key| {
        log_field(&log, "agent session finished", key)
            .unwrap_or_else(|| panic!("no {key} in the session's counters:\n{}", e.log_tail(20)))
    };
    // Not JSON, bad base64, the binary frame, the mark without a name.
    assert_eq!(field("malformed"), 4, "{}", e.log_tail(5));
    assert_eq!(field("unknown"), 1);
    assert_eq!(field("foreign"), 1);
    let media = field("media");
    let dropped = metric(&e, "earshot_agent_messages_dropped_total").unwrap() as u64;
    assert_eq!(
        media + dropped,
        BLAST as u64,
        "media taken {media} + dropped {dropped} (the blast took {blast_time:?})"
    );
    let overrun = metric(&e, "earshot_agent_overrun_bytes_total").unwrap() as u64;
    assert!(overrun > 0, "no overrun counted");
    assert_eq!(overrun, field("overrun_bytes"));
    assert_eq!(field("audio_bytes") + overrun, media * 8000);
    assert!(
        field("audio_bytes") <= 60 * 8000 + 8000 * 20,
        "the queue outgrew max_queue_secs"
    );

    let grown_mib = peak_kib.saturating_sub(idle_kib) / 1024;
    assert!(
        grown_mib < 60,
        "earshot grew {grown_mib} MiB (idle {idle_kib} KiB, peak {peak_kib} KiB)"
    );
    let (_, right) = recording(&e, &call);
    assert!(
        support::tone_blocks(&right, AGENT_HZ) >= 50,
        "the agent's audio is not in the recording (right channel RMS {:.0})",
        rms(&right)
    );
}

#[test]
fn connect_failures_take_the_fallback() {
    let rt = runtime();
    let dir = support::temp_dir("agent-fallback");

    // (a) Refused, with a message before the hang-up.
    let wav = dir.join("sorry.wav");
    support::write_wav_8k(&wav, &tone(FALLBACK_HZ, 1000, 10000.0));
    let closed_port = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let e = Earshot::start(&agent_config(
        &format!("ws://127.0.0.1:{closed_port}/agent"),
        &format!(
            "fallback = \"hangup\"\nfallback_wav = {:?}\n",
            wav.display().to_string()
        ),
        "",
    ));
    let call = fallback_call(&e, "refused");
    let (_, right) = recording(&e, &call);
    let heard = support::tone_blocks(&right, FALLBACK_HZ);
    assert!(
        heard >= 40,
        "{heard} frames of the fallback message recorded (it is 50)"
    );
    drop(e);

    // (b) A listener that takes the connection and never answers the upgrade.
    let silent = {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        addr
    };
    let e = Earshot::start(&agent_config(
        &format!("ws://{silent}/agent"),
        "connect_timeout_ms = 500\n",
        "",
    ));
    fallback_call(&e, "connect_timeout");
    drop(e);

    // (c) A web server that answers the upgrade with 404.
    let web = {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tcp
                        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n")
                        .await;
                });
            }
        });
        addr
    };
    let e = Earshot::start(&agent_config(&format!("ws://{web}/agent"), "", ""));
    fallback_call(&e, "handshake");
}

/// One call to an earshot whose agent cannot be reached: earshot hangs up, and the call and
/// the metrics say why. Returns the call's record.
fn fallback_call(e: &Earshot, reason: &str) -> Value {
    let (pcap, _) = caller_pcap(e, 4000, 5);
    let outcome = caller_waiting_for_bye(e, &pcap).wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, e);
    let id = call_ids(e, 1).remove(0);
    let call = ended_call(e, &id);
    assert_eq!(fallbacks(&call), [reason], "{call:#}");
    assert_eq!(call["agent"]["fallback"], reason, "{call:#}");
    assert_eq!(call["end_reason"], "agent failed", "{call:#}");
    assert_eq!(fallback_metric(e, reason), 1.0);
    assert_eq!(metric(e, "earshot_agent_connect_seconds_count"), Some(0.0));
    assert!(e.panics().is_empty(), "{:?}", e.panics());
    call
}

#[test]
fn wss_with_a_test_ca_and_a_bad_certificate() {
    let rt = runtime();
    let dir = support::temp_dir("agent-wss");
    let (ca, acceptor) = support::tls::test_pki(&dir);
    let mut agent = AgentServer::start(&rt, Some(acceptor), None);
    assert!(agent.url.starts_with("wss://127.0.0.1:"));

    // Trusting the test CA: the call is bridged.
    let e = Earshot::start(&agent_config(
        &agent.url,
        &format!("ca_file = {:?}\n", ca.display().to_string()),
        "",
    ));
    let (pcap, _) = caller_pcap(&e, 4000, 5);
    let sipp = caller_waiting_for_bye(&e, &pcap);
    let seen = rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        read_start(&mut conn).await;
        // A few frames of the caller over TLS, then goodbye.
        let now = Instant::now();
        for _ in 0..5 {
            conn.until(WAIT, "caller media", now, |m| m["event"] == "media")
                .await;
        }
        conn.close(CloseCode::Away).await;
        conn.drain(WAIT).await;
        conn.seen
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    let id = call_ids(&e, 1).remove(0);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "agent hangup", "{call:#}");
    assert_eq!(fallbacks(&call), Vec::<String>::new());
    assert_twilio_stream(&seen, &id);
    assert_eq!(metric(&e, "earshot_agent_connect_seconds_count"), Some(1.0));
    assert_eq!(agent.failed_handshakes.load(Ordering::Relaxed), 0);
    drop(e);

    // The webpki roots alone do not know the test CA.
    let e = Earshot::start(&agent_config(&agent.url, "", ""));
    fallback_call(&e, "tls");
    assert!(
        agent.try_accept().is_none(),
        "a WebSocket came up without trust"
    );
    assert!(agent.failed_handshakes.load(Ordering::Relaxed) >= 1);
}

#[test]
fn agent_dropping_mid_call_with_listen_fallback_keeps_the_call() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&agent_config(&agent.url, "fallback = \"listen\"\n", ""));
    let (pcap, _) = caller_pcap(&e, 3000, 5);
    let sipp = callers_hanging_up(&e, &pcap, 3000, 1000, &["-m", "1"]);
    rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        read_start(&mut conn).await;
        conn.drop_connection().await;
        conn.drain(WAIT).await;
    });
    let outcome = sipp.wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
    let id = call_ids(&e, 1).remove(0);
    let call = ended_call(&e, &id);
    assert_eq!(fallbacks(&call), ["closed"], "{call:#}");
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert!(call["agent"]["connect_ms"].is_u64(), "{call:#}");
    assert_eq!(fallback_metric(&e, "closed"), 1.0);
    assert!(agent.try_accept().is_none(), "earshot connected again");
    assert!(e.panics().is_empty(), "{:?}", e.panics());
}

#[test]
fn max_concurrent_sessions_busy() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&agent_config(
        &agent.url,
        "max_concurrent = 1\nfallback = \"listen\"\n",
        "",
    ));
    let (pcap, _) = caller_pcap(&e, 2000, 5);
    let sipp = callers_hanging_up(&e, &pcap, 2000, 1500, &["-m", "2", "-l", "2", "-r", "10"]);
    // The one session stays up (its reader keeps reading) until the calls are over.
    let conn = rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        read_start(&mut conn).await;
        conn
    });
    let outcome = sipp.wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 2, &e);
    let calls: Vec<Value> = call_ids(&e, 2)
        .iter()
        .map(|id| ended_call(&e, id))
        .collect();
    let mut reasons: Vec<Vec<String>> = calls.iter().map(fallbacks).collect();
    reasons.sort();
    assert_eq!(reasons, [vec![], vec!["busy".to_owned()]], "{calls:#?}");
    for call in &calls {
        assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    }
    assert_eq!(fallback_metric(&e, "busy"), 1.0);
    assert!(agent.try_accept().is_none(), "a second session was opened");
    // The slot is given back with the call.
    wait_metric(&e, "earshot_agent_sessions", 0.0);
    drop(conn);
}

#[test]
fn an_agent_that_never_reads_is_given_up() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, Some(4096));
    let e = Earshot::start(&agent_config(
        &agent.url,
        "",
        "[rtp]\nsilence_timeout_secs = 120\n",
    ));
    let (pcap, _) = caller_pcap(&e, 3000, 5);
    let sipp = caller_waiting_for_bye(&e, &pcap);
    let (conn, stopped) = rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        read_start(&mut conn).await;
        conn.stop_reading();
        (conn, Instant::now())
    });
    let outcome = sipp.wait(Duration::from_secs(45));
    let given_up_after = stopped.elapsed();
    sipp::assert_passed(&outcome, 1, &e);
    let id = call_ids(&e, 1).remove(0);
    let call = ended_call(&e, &id);
    assert_eq!(
        fallbacks(&call),
        ["not_reading"],
        "after {given_up_after:?}: {call:#}"
    );
    assert_eq!(call["end_reason"], "agent failed", "{call:#}");
    assert_eq!(fallback_metric(&e, "not_reading"), 1.0);
    assert!(
        given_up_after < Duration::from_secs(40),
        "given up only after {given_up_after:?}"
    );
    assert!(e.panics().is_empty(), "{:?}", e.panics());
    drop(conn);
}

/// RFC 6455 §5.5.1: an endpoint that receives a close frame answers with one before it closes
/// the connection.
#[test]
fn the_agents_close_frame_is_answered() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&agent_config(&agent.url, "", ""));
    let (pcap, _) = caller_pcap(&e, 3000, 5);
    let sipp = caller_waiting_for_bye(&e, &pcap);
    let ended = rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        read_start(&mut conn).await;
        conn.close(CloseCode::Normal).await;
        conn.drain(WAIT).await
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    let id = call_ids(&e, 1).remove(0);
    assert_eq!(ended_call(&e, &id)["end_reason"], "agent hangup");
    assert_eq!(
        ended,
        Some(Ended::Close(Some(1000))),
        "earshot did not answer the agent's close frame"
    );
}

/// `[[route]]` keeps some calls away from the agent: a caller matched by a route with
/// `agent = false` gets the greeting, the others the agent.
#[test]
fn routes_choose_which_calls_get_the_agent() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&agent_config(
        &agent.url,
        "",
        "[[route]]\ncaller = \"+1555*\"\nsource = \"sip\"\nagent = false\n",
    ));
    let (pcap, _) = caller_pcap(&e, 1000, 5);
    let sipp = callers_hanging_up(&e, &pcap, 1000, 300, &["-m", "1"]);
    let outcome = sipp.wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
    let id = call_ids(&e, 1).remove(0);
    let call = ended_call(&e, &id);
    assert!(
        call["agent"].is_null(),
        "the routed call had an agent: {call:#}"
    );
    assert!(
        agent.try_accept().is_none(),
        "earshot connected to the agent"
    );
}

/// The Twilio-compatible call REST answers as Twilio's does: Basic auth with the API token as
/// password, a Twilio-shaped 404 for a call it does not know, 400 for other updates.
#[test]
fn call_rest_checks_auth_and_answers_unknown_calls_like_twilio() {
    const TOKEN: &str = "call-rest-test-token-0123456789";
    let e = Earshot::start(&format!("[http]\ntoken = \"{TOKEN}\"\n"));
    let path = "/2010-04-01/Accounts/AC00000000000000000000000000000001/Calls/CA0000000000000000000000000000dead.json";
    let basic = |password: &str| {
        format!(
            "Basic {}",
            BASE64.encode(format!("AC00000000000000000000000000000001:{password}"))
        )
    };
    let post = |auth: &str, body: &[u8]| {
        http::request(
            e.http_addr(),
            "POST",
            path,
            &[
                ("Authorization", auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            body,
        )
        .unwrap()
    };
    assert_eq!(post(&basic("wrong"), b"Status=completed").status, 401);
    let unknown = post(&basic(TOKEN), b"Status=completed");
    assert_eq!(unknown.status, 404);
    let json = unknown.json();
    assert_eq!(json["code"], 20404, "{json}");
    assert_eq!(json["status"], 404, "{json}");
    assert!(
        json["more_info"].as_str().unwrap().contains("20404"),
        "{json}"
    );
    assert_eq!(post(&basic(TOKEN), b"Status=ringing").status, 400);
}

/// What a Twilio caller with an agent saw of a transfer: the stream's end, and the record.
struct Handed {
    close: Option<u16>,
    /// The `<Connect action>` callback's TwiML.
    action: String,
    call: Value,
    /// What the agent was sent, in order, and how its socket ended.
    agent_seen: Vec<Value>,
    agent_ended: Option<Ended>,
}

/// A Twilio call bridged to `agent`: `during` runs once the agent has the stream's `start`
/// (the caller keeps streaming, and presses `dtmf` if given); then the stream must end, the
/// agent session too, and Twilio's `<Connect action>` callback is made.
fn twilio_agent_call<F>(
    rt: &Runtime,
    agent: &mut AgentServer,
    e: &Earshot,
    dtmf: Option<(usize, char)>,
    during: impl FnOnce(TwilioSide, String) -> F,
) -> Handed
where
    F: std::future::Future<Output = ()>,
{
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    rt.block_on(async {
        let token = side.webhook(&call_sid).await;
        let plan = Plan {
            stop: false,
            dtmf,
            ..Plan::new(&call_sid, &token, vec![0xff; 160 * 1000])
        };
        let stream = tokio::spawn(async move { side.stream(&plan).await });
        let mut conn = agent.accept(WAIT).await;
        read_start(&mut conn).await;
        during(side, call_sid.clone()).await;
        conn.until(WAIT, "stop", Instant::now(), |m| m["event"] == "stop")
            .await;
        let agent_ended = conn.drain(WAIT).await;
        let outcome = tokio::time::timeout(WAIT, stream).await.unwrap().unwrap();
        let (_, action) = side.post_webhook(&call_sid, "?fallback=1").await;
        let deadline = Instant::now() + WAIT;
        let call = loop {
            let stored = side.stored_call(&call_sid).await.map(|(call, _)| call);
            match stored {
                Some(call) if call["status"] == "ended" => break call,
                _ if Instant::now() > deadline => panic!("{call_sid} did not end"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Handed {
            close: outcome.close,
            action,
            call,
            agent_seen: conn.seen.clone(),
            agent_ended,
        }
    })
}

fn transfer_events(call: &Value) -> Vec<Value> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| {
            ev["type"]
                .as_str()
                .unwrap_or_default()
                .starts_with("transfer")
        })
        .cloned()
        .collect()
}

/// A `[[calls.dtmf_rule]]` transfer on a Twilio call bridged to an agent: the caller's "0"
/// closes the stream normally, the `<Connect action>` callback dials the rule's number, and the
/// agent session ends (`stop`, then the close frame) without hearing the key.
#[test]
fn dtmf_zero_transfers_a_twilio_agent_call_and_the_agent_session_ends() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&twilio_client::config(&agent_config(
        &agent.url,
        "",
        "[calls]\noutbound_allow = [\"+1555*\"]\n\
         [[calls.dtmf_rule]]\ndigit = \"0\"\naction = \"transfer\"\nto = \"+15557654321\"\n",
    )));
    let handed = twilio_agent_call(&rt, &mut agent, &e, Some((100, '0')), |_, _| async {});
    assert_eq!(handed.close, Some(1000));
    assert!(
        handed
            .action
            .ends_with("<Response><Dial>+15557654321</Dial></Response>"),
        "{}",
        handed.action
    );
    assert!(
        matches!(handed.agent_ended, Some(Ended::Close(_))),
        "{:?}",
        handed.agent_ended
    );
    assert_eq!(handed.agent_seen.last().unwrap()["event"], "stop");
    assert!(
        handed.agent_seen.iter().all(|m| m["event"] != "dtmf"),
        "the rule's key reached the agent"
    );
    let call = &handed.call;
    assert_eq!(call["end_reason"], "transferred", "{call:#}");
    assert_eq!(call["dtmf"], "0");
    assert_eq!(call["transfer"]["to"], "+15557654321");
    let events = transfer_events(call);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["by"], "dtmf");
    assert_eq!(events[1]["type"], "transferred");
    assert_eq!(events[1]["method"], "twilio_dial");
}

/// An agent asks for a transfer the way it would ask Twilio: `Twiml=<Response><Dial>..` on the
/// call REST. Other TwiML and `Url=` get Twilio-shaped 400s, a destination outside
/// `[calls].outbound_allow` 403, and none of them touches the call; the allowed `<Dial><Sip>`
/// hands the caller over and ends the agent's session.
#[test]
fn agents_transfer_through_the_call_rest_with_dial_twiml() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&twilio_client::config(&agent_config(
        &agent.url,
        "",
        "[calls]\noutbound_allow = [\"sip:*@pbx.example.com\"]\n",
    )));
    let handed = twilio_agent_call(&rt, &mut agent, &e, None, |side, call_sid| async move {
        let path = format!(
            "/2010-04-01/Accounts/AC00000000000000000000000000000001/Calls/{call_sid}.json"
        );
        let form = "application/x-www-form-urlencoded";
        let post = |key: &str, value: &str| {
            let body = twilio_client::form_encode(&[(key.to_owned(), value.to_owned())]);
            let path = path.clone();
            async move { side.post_body(&path, form, &body).await }
        };
        for (key, value, status, code) in [
            (
                "Twiml",
                "<Response><Say>Bye</Say><Hangup/></Response>",
                400,
                12100,
            ),
            (
                "Twiml",
                "<Response><Dial>+15551234567</Dial><Dial>+1666</Dial></Response>",
                400,
                12100,
            ),
            ("Url", "https://agent.example.com/twiml", 400, 21205),
            (
                "Twiml",
                "<Response><Dial>+15551234567</Dial></Response>",
                403,
                13227,
            ),
            (
                "Twiml",
                "<Response><Dial><Sip>sip:bob@evil.example.com</Sip></Dial></Response>",
                403,
                13227,
            ),
        ] {
            let (got, body) = post(key, value).await;
            assert_eq!(got, status, "{key}={value}: {body}");
            let json: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["code"], code, "{json}");
        }
        let (got, body) = post(
            "Twiml",
            "<?xml version=\"1.0\"?><Response><Dial><Sip>sip:bob@pbx.example.com</Sip></Dial></Response>",
        )
        .await;
        assert_eq!(got, 200, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["sid"], call_sid.as_str());
    });
    assert_eq!(handed.close, Some(1000));
    assert!(
        handed
            .action
            .ends_with("<Response><Dial><Sip>sip:bob@pbx.example.com</Sip></Dial></Response>"),
        "{}",
        handed.action
    );
    assert!(matches!(handed.agent_ended, Some(Ended::Close(_))));
    let call = &handed.call;
    assert_eq!(call["end_reason"], "transferred", "{call:#}");
    let events = transfer_events(call);
    assert_eq!(
        events.len(),
        2,
        "only the allowed request reached the call: {events:#?}"
    );
    assert_eq!(events[0]["by"], "agent");
    assert_eq!(call["transfer"]["to"], "sip:bob@pbx.example.com");
}

/// A `hangup` rule ends a SIP call: SIPp presses "#" (RFC 4733) and gets earshot's BYE. Before
/// that, a transfer asked of the API is recorded as failed (the caller's Allow has no REFER)
/// and the call goes on.
#[test]
fn a_hangup_rule_ends_a_sip_call() {
    let e = Earshot::start(&format!(
        "{DEBUG_LOG}[calls]\noutbound_allow = [\"+1555*\"]\n\
         [[calls.dtmf_rule]]\ndigit = \"#\"\naction = \"hangup\"\n"
    ));
    let (pcap, _) = caller_pcap(&e, 4000, 11);
    let sipp = caller_waiting_for_bye(&e, &pcap);
    let id = call_ids(&e, 1).remove(0);
    let transfer = |to: &str| {
        http::send_json(
            e.http_addr(),
            "POST",
            &format!("/api/calls/{id}/transfer"),
            &json!({ "to": to }),
        )
    };
    assert_eq!(transfer("+4420123").status, 403);
    let asked = transfer("+15557654321");
    assert_eq!(asked.status, 202, "{}", asked.text());
    sipp::assert_passed(&sipp.wait(Duration::from_secs(40)), 1, &e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "dtmf hangup", "{call:#}");
    assert_eq!(call["dtmf"], "#");
    // The caller's Allow has no REFER: the REFER is not sent, and the transfer fails.
    let events = transfer_events(&call);
    let kinds: Vec<_> = events.iter().map(|ev| ev["type"].clone()).collect();
    assert_eq!(
        kinds,
        ["transfer_requested", "transfer_failed"],
        "{events:#?}"
    );
    assert_eq!(events[1]["reason"], "not_supported");
    assert!(call["transfer"].is_null());
}

/// An API transfer of a SIP call whose caller's side takes REFER (RFC 3515): earshot sends the
/// REFER, the caller answers 202 and NOTIFYs 100 then 200 (its call to the target answered),
/// and earshot hangs up its own leg: the record says transferred by REFER, to whom.
#[test]
fn an_api_transfer_of_a_sip_call_goes_by_refer() {
    let e = Earshot::start(&format!(
        "{DEBUG_LOG}[calls]\noutbound_allow = [\"sip:*@pbx.example.com\"]\n"
    ));
    let (pcap, _) = caller_pcap(&e, 4000, 12);
    let sipp = caller_in(&e, &pcap, "uac_accepts_refer.xml");
    let id = call_ids(&e, 1).remove(0);
    let asked = http::send_json(
        e.http_addr(),
        "POST",
        &format!("/api/calls/{id}/transfer"),
        &json!({ "to": "sip:desk@pbx.example.com" }),
    );
    assert_eq!(asked.status, 202, "{}", asked.text());
    sipp::assert_passed(&sipp.wait(Duration::from_secs(40)), 1, &e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "transferred", "{call:#}");
    assert_eq!(
        call["transfer"]["to"], "sip:desk@pbx.example.com",
        "{call:#}"
    );
    assert_eq!(call["transfer"]["method"], "refer", "{call:#}");
    let events = transfer_events(&call);
    let kinds: Vec<_> = events.iter().map(|ev| ev["type"].clone()).collect();
    assert_eq!(kinds, ["transfer_requested", "transferred"], "{events:#?}");
}

/// A `stop_agent` rule ends the agent's session (`stop`, then the close frame) and nothing else:
/// the SIP call stays up, without the agent, until it is hung up.
#[test]
fn a_stop_agent_rule_ends_the_session_and_the_call_goes_on() {
    let rt = runtime();
    let mut agent = AgentServer::start(&rt, None, None);
    let e = Earshot::start(&agent_config(
        &agent.url,
        "",
        "[[calls.dtmf_rule]]\ndigit = \"*\"\naction = \"stop_agent\"\n",
    ));
    let (pcap, _) = caller_pcap(&e, 1000, 10);
    let sipp = caller_waiting_for_bye(&e, &pcap);
    let ended = rt.block_on(async {
        let mut conn = agent.accept(WAIT).await;
        read_start(&mut conn).await;
        conn.until(WAIT, "stop", Instant::now(), |m| m["event"] == "stop")
            .await;
        let ended = conn.drain(WAIT).await;
        assert!(conn.seen.iter().all(|m| m["event"] != "dtmf"));
        ended
    });
    assert!(matches!(ended, Some(Ended::Close(_))), "{ended:?}");
    let id = call_ids(&e, 1).remove(0);
    let live = http::get(e.http_addr(), &format!("/api/calls/{id}")).json();
    assert_eq!(
        live["live"], true,
        "the call ended with its agent: {live:#}"
    );
    assert_eq!(live["live_state"]["agent"], "closed", "{live:#}");
    http::hang_up(e.http_addr(), &id, &[]);
    sipp::assert_passed(&sipp.wait(Duration::from_secs(40)), 1, &e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "local hangup", "{call:#}");
    assert_eq!(call["dtmf"], "*");
    assert!(fallbacks(&call).is_empty());
}
