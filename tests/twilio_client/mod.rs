//! Twilio's side of a call, written from Twilio's documentation rather than from earshot's
//! code: request signing (HMAC-SHA1 over URL + sorted parameters), the voice webhook, the
//! Media Streams WebSocket client (tokio-tungstenite), G.711 μ-law (Sun's reference `g711.c`),
//! espeak-ng speech, and the load measurements (CPU and RSS from `/proc`).

#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support;

pub const AUTH_TOKEN: &str = "twilio-test-auth-token-0123456789";
/// The URL Twilio believes it calls; the test connects to 127.0.0.1 but signs over this.
pub const PUBLIC_URL: &str = "https://earshot.test";
/// `[http].token`: Twilio sharing the API's listener needs one (its proxy exposes the API).
pub const API_TOKEN: &str = "twilio-test-api-token-0123456789";

/// Earshot's configuration for these tests: Twilio on, the API's token, debug logs of the
/// call path, and the test's own TOML merged over it.
pub fn config(extra: &str) -> String {
    let base = format!(
        "[twilio]\nenabled = true\nauth_token = {AUTH_TOKEN:?}\npublic_url = {PUBLIC_URL:?}\n[http]\ntoken = {API_TOKEN:?}\n[log]\nlevel = \"info,earshot=debug\"\n"
    );
    let mut table: toml::Table = base.parse().unwrap();
    let extra: toml::Table = extra.parse().unwrap();
    merge(&mut table, extra);
    toml::to_string(&table).unwrap()
}

fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => merge(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The Stream URL of `token`, as Twilio connects to it and signs it.
pub fn stream_url_of(token: &str) -> String {
    format!("{}/{token}", stream_url())
}

pub fn stream_url() -> String {
    format!(
        "{}/twilio/stream",
        PUBLIC_URL.replacen("https://", "wss://", 1)
    )
}

/// A fresh CallSid: `CA` and 32 hex digits.
pub fn call_sid() -> String {
    format!("CA{:032x}", rand::random::<u128>())
}

/// X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each sorted name and value)).
pub fn sign(url: &str, params: &[(String, String)]) -> String {
    sign_with(AUTH_TOKEN, url, params)
}

pub fn sign_with(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(&k);
        data.push_str(&v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The parameters of Twilio's voice webhook for an inbound call.
pub fn webhook_params(call_sid: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", "+15550002222"),
        ("Caller", "+15550001111"),
        ("Direction", "inbound"),
        ("From", "+15550001111"),
        ("To", "+15550002222"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

pub fn form_encode(params: &[(String, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// What one stream is to do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub call_sid: String,
    pub token: String,
    /// μ-law, sent in 160-byte frames every 20 ms.
    pub audio: Vec<u8>,
    /// Random 0–15 ms of delay per frame and, every second, four frames held back and sent
    /// at once (an 80 ms burst).
    pub jitter: bool,
    pub seed: u64,
    /// At frame 30: text that is not JSON, bad base64, a 161-byte payload, a 100 kB message, a
    /// binary frame and an unknown event.
    pub junk: bool,
    /// Two sequence numbers skipped before this frame.
    pub skip_sequence_at: Option<usize>,
    /// A key pressed after this frame.
    pub dtmf: Option<(usize, char)>,
    /// Send `stop` and close after the audio (Twilio hanging up); otherwise wait for earshot.
    pub stop: bool,
    /// Wait between the last frame and `stop`.
    pub linger: Duration,
    /// Post a `completed` status callback this long after the stream started.
    pub status_after: Option<Duration>,
}

impl Plan {
    pub fn new(call_sid: &str, token: &str, audio: Vec<u8>) -> Self {
        Self {
            call_sid: call_sid.to_owned(),
            token: token.to_owned(),
            audio,
            jitter: false,
            seed: 1,
            junk: false,
            skip_sequence_at: None,
            dtmf: None,
            stop: true,
            linger: Duration::from_millis(200),
            status_after: None,
        }
    }
}

/// What Twilio's side saw of one stream.
#[derive(Debug, Default)]
pub struct Outcome {
    pub connect_error: Option<String>,
    /// From starting the upgrade to the first outbound media frame.
    pub first_media: Option<Duration>,
    /// Arrival times of outbound media frames.
    pub media: Vec<Instant>,
    /// Outbound media that was not 160 bytes of base64 for our streamSid.
    pub bad_media: usize,
    /// Every outbound message's `event`, in order.
    pub events: Vec<String>,
    pub marks: Vec<String>,
    pub clears: usize,
    /// The code of earshot's close frame.
    pub close: Option<u16>,
}

impl Outcome {
    /// Every outbound message's `event`, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.events.clone()
    }
}

/// Twilio, talking to one earshot over HTTP and WebSocket.
#[derive(Clone, Copy, Debug)]
pub struct TwilioSide {
    addr: SocketAddr,
}

impl TwilioSide {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// POSTs a form to `path_and_query` with an optional signature: (status, body).
    pub async fn post(
        &self,
        path_and_query: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> (u16, String) {
        let body = form_encode(params);
        let mut request = format!(
            "POST {path_and_query} HTTP/1.1\r\nHost: earshot.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(sig) = signature {
            request.push_str(&format!("X-Twilio-Signature: {sig}\r\n"));
        }
        if path_and_query.starts_with("/api/") {
            request.push_str(&format!("Authorization: Bearer {API_TOKEN}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        self.exchange(&request).await
    }

    /// POSTs `body` as `content_type` with the API token of [`config`]: (status, body).
    pub async fn post_body(&self, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: earshot.test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAuthorization: Bearer {API_TOKEN}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        self.exchange(&request).await
    }

    /// A GET with the API token of [`config`]: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_authorized(path, API_TOKEN).await
    }

    /// A GET with the API's bearer token: (status, body).
    pub async fn get_authorized(&self, path: &str, token: &str) -> (u16, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        self.exchange(&request).await
    }

    /// Sends one HTTP/1.1 request on a new connection and reads the response to its close:
    /// (status, body).
    async fn exchange(&self, request: &str) -> (u16, String) {
        let mut tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// A signed status callback: `CallStatus` of `call_sid` is `status`. Returns the HTTP status.
    pub async fn post_status(&self, call_sid: &str, status: &str) -> u16 {
        let params = vec![
            ("CallSid".to_owned(), call_sid.to_owned()),
            ("CallStatus".to_owned(), status.to_owned()),
        ];
        let sig = sign(&format!("{PUBLIC_URL}/twilio/status"), &params);
        self.post("/twilio/status", &params, Some(&sig)).await.0
    }

    /// The stored call of `call_sid` (its record, with `events`) and its events, from the API.
    pub async fn stored_call(
        &self,
        call_sid: &str,
    ) -> Option<(serde_json::Value, Vec<serde_json::Value>)> {
        let (status, body) = self.get("/api/calls?source=twilio&limit=200").await;
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = page["calls"]
            .as_array()?
            .iter()
            .find(|c| c["external_id"] == call_sid)?["id"]
            .as_str()?
            .to_owned();
        let (status, body) = self.get(&format!("/api/calls/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let detail: serde_json::Value = serde_json::from_str(&body).unwrap();
        let events = detail["events"].as_array().cloned().unwrap_or_default();
        Some((detail, events))
    }

    /// The voice webhook, signed, for `call_sid`, with `query` (`""` or `?fallback=1`).
    pub async fn post_webhook(&self, call_sid: &str, query: &str) -> (u16, String) {
        let params = webhook_params(call_sid);
        let sig = sign(&format!("{PUBLIC_URL}/twilio/voice{query}"), &params);
        self.post(&format!("/twilio/voice{query}"), &params, Some(&sig))
            .await
    }

    /// Posts the webhook and returns the stream token of the `<Connect><Stream>` answer.
    pub async fn webhook(&self, call_sid: &str) -> String {
        let (status, twiml) = self.post_webhook(call_sid, "").await;
        assert_eq!(status, 200, "{twiml}");
        let action = format!(r#"<Connect action="{PUBLIC_URL}/twilio/voice?fallback=1">"#);
        assert!(twiml.contains(&action), "{twiml}");
        let token = twiml
            .split(r#"<Parameter name="token" value=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no token in {twiml}"))
            .to_owned();
        // The token is in the Stream URL too: the upgrade's signature covers it.
        let stream = format!(r#"<Stream url="{}">"#, stream_url_of(&token));
        assert!(twiml.contains(&stream), "{twiml}");
        token
    }

    /// The HTTP status of a refused upgrade to the Stream URL of `token` (`None` if it was
    /// accepted; the socket is then closed at once).
    pub async fn upgrade_status(&self, token: &str, signature: Option<&str>) -> Option<u16> {
        let mut request = format!("ws://{}/twilio/stream/{token}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(sig) = signature {
            request
                .headers_mut()
                .insert("X-Twilio-Signature", sig.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => None,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Some(response.status().as_u16())
            }
            Err(other) => panic!("upgrade failed: {other}"),
        }
    }

    /// Runs one stream to its end.
    pub async fn stream(&self, plan: &Plan) -> Outcome {
        let begun = Instant::now();
        let mut request = format!("ws://{}/twilio/stream/{}", self.addr, plan.token)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "X-Twilio-Signature",
            sign(&stream_url_of(&plan.token), &[]).parse().unwrap(),
        );
        // Twilio's media servers send without Nagle's delay; so does this client.
        let ws = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => ws,
            Err(err) => {
                return Outcome {
                    connect_error: Some(err.to_string()),
                    ..Outcome::default()
                };
            }
        };
        let (mut sink, source) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let last = matches!(msg, Message::Close(_));
                if sink.send(msg).await.is_err() || last {
                    break;
                }
            }
        });
        let stream_sid = format!("MZ{:032x}", rand::random::<u128>());
        let closed = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_outbound(
            source,
            tx.clone(),
            stream_sid.clone(),
            begun,
            closed.clone(),
        ));
        let send = |text: String| {
            let _ = tx.send(Message::Text(text.into()));
        };
        send(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned());
        let mut seq = 1u64;
        send(format!(
            r#"{{"event":"start","sequenceNumber":"{seq}","start":{{"accountSid":"AC00000000000000000000000000000000","streamSid":"{stream_sid}","callSid":"{}","tracks":["inbound"],"customParameters":{{"token":"{}"}},"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}},"streamSid":"{stream_sid}"}}"#,
            plan.call_sid, plan.token
        ));
        let t0 = tokio::time::Instant::now();
        let schedule = schedule(plan, t0);
        let side = *self;
        if let Some(after) = plan.status_after {
            let call_sid = plan.call_sid.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                side.post_status(&call_sid, "completed").await;
            });
        }
        for (i, chunk) in plan.audio.chunks(160).enumerate() {
            if closed.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep_until(schedule[i]).await;
            if plan.skip_sequence_at == Some(i) {
                seq += 2;
            }
            if plan.junk && i == 30 {
                send_junk(&tx, &stream_sid);
            }
            seq += 1;
            send(format!(
                r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{}","timestamp":"{}","payload":"{}"}},"streamSid":"{stream_sid}"}}"#,
                i + 1,
                i * 20,
                BASE64.encode(chunk)
            ));
            if let Some((at, digit)) = plan.dtmf
                && at == i
            {
                seq += 1;
                send(format!(
                    r#"{{"event":"dtmf","streamSid":"{stream_sid}","sequenceNumber":"{seq}","dtmf":{{"track":"inbound_track","digit":"{digit}"}}}}"#
                ));
            }
        }
        if plan.stop && !closed.load(Ordering::Acquire) {
            tokio::time::sleep(plan.linger).await;
            seq += 1;
            send(format!(
                r#"{{"event":"stop","sequenceNumber":"{seq}","streamSid":"{stream_sid}","stop":{{"accountSid":"AC00000000000000000000000000000000","callSid":"{}"}}}}"#,
                plan.call_sid
            ));
        }
        let outcome = match tokio::time::timeout(Duration::from_secs(15), reader).await {
            Ok(Ok(outcome)) => outcome,
            _ => Outcome {
                connect_error: Some("earshot never closed the stream".into()),
                ..Outcome::default()
            },
        };
        let _ = tx.send(Message::Close(None));
        drop(tx);
        let _ = writer.await;
        outcome
    }
}

/// When each frame goes out: every 20 ms, plus jitter and bursts if planned; never reordered.
fn schedule(plan: &Plan, t0: tokio::time::Instant) -> Vec<tokio::time::Instant> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed);
    let frame = Duration::from_millis(20);
    let mut prev = t0;
    (0..plan.audio.len().div_ceil(160))
        .map(|i| {
            let mut at = t0 + frame * i as u32;
            if plan.jitter {
                at += Duration::from_millis(rng.random_range(0..15));
                let k = i % 50;
                if i >= 50 && k < 4 {
                    at = at.max(t0 + frame * (i - k + 4) as u32);
                }
            }
            prev = prev.max(at);
            prev
        })
        .collect()
}

fn send_junk(tx: &mpsc::UnboundedSender<Message>, sid: &str) {
    let media = |payload: &str| {
        format!(
            r#"{{"event":"media","media":{{"track":"inbound","payload":"{payload}"}},"streamSid":"{sid}"}}"#
        )
    };
    for text in [
        "this is not json".to_owned(),
        media("@@@@not-base64@@@@"),
        media(&BASE64.encode([0xffu8; 161])),
        format!(r#"{{"event":"media","pad":"{}"}}"#, "x".repeat(100_000)),
        format!(r#"{{"event":"hello","streamSid":"{sid}"}}"#),
    ] {
        let _ = tx.send(Message::Text(text.into()));
    }
    let _ = tx.send(Message::Binary(vec![1u8, 2, 3].into()));
}

async fn read_outbound(
    mut source: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    echo: mpsc::UnboundedSender<Message>,
    sid: String,
    begun: Instant,
    closed: Arc<AtomicBool>,
) -> Outcome {
    let mut out = Outcome::default();
    while let Some(msg) = source.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                let now = Instant::now();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
                    out.events.push("<not json>".into());
                    continue;
                };
                let kind = v["event"].as_str().unwrap_or("<none>").to_owned();
                match kind.as_str() {
                    "media" => {
                        out.first_media.get_or_insert(now - begun);
                        let payload = v["media"]["payload"]
                            .as_str()
                            .and_then(|p| BASE64.decode(p).ok());
                        if v["streamSid"] != sid.as_str() || payload.map(|p| p.len()) != Some(160) {
                            out.bad_media += 1;
                        }
                        out.media.push(now);
                    }
                    "mark" => {
                        let name = v["mark"]["name"].as_str().unwrap_or_default().to_owned();
                        // Twilio echoes a mark once the audio before it has played; ours is
                        // played as it arrives.
                        let _ = echo.send(Message::Text(
                            format!(r#"{{"event":"mark","streamSid":"{sid}","mark":{{"name":"{name}"}}}}"#).into(),
                        ));
                        out.marks.push(name);
                    }
                    "clear" => out.clears += 1,
                    _ => {}
                }
                out.events.push(kind);
            }
            Ok(Message::Close(frame)) => {
                out.close = Some(frame.map_or(1005, |f| u16::from(f.code)));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    closed.store(true, Ordering::Release);
    out
}

/// Sun's `ulaw2linear`.
pub fn decode_ulaw(codes: &[u8]) -> Vec<i16> {
    codes
        .iter()
        .map(|&c| {
            let u = !c;
            let t = ((i32::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
            (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
        })
        .collect()
}

/// Sun's `linear2ulaw`.
pub fn encode_ulaw(pcm: &[i16]) -> Vec<u8> {
    const SEG_END: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
    pcm.iter()
        .map(|&s| {
            let mut v = i32::from(s) >> 2;
            let mask = if v < 0 {
                v = -v;
                0x7f
            } else {
                0xff
            };
            v = v.min(8159) + (0x84 >> 2);
            match SEG_END.iter().position(|&end| v <= end) {
                Some(seg) => ((((seg as i32) << 4) | ((v >> (seg + 1)) & 0xf)) ^ mask) as u8,
                None => (0x7f ^ mask) as u8,
            }
        })
        .collect()
}

/// `text` spoken by espeak-ng, at 8 kHz mono (sox); the harness's test signal without them.
pub fn speech(dir: &Path, name: &str, text: &str) -> Vec<i16> {
    let raw = dir.join(format!("{name}-espeak.wav"));
    let out = dir.join(format!("{name}-8k.wav"));
    let run = |cmd: &mut std::process::Command| cmd.status().is_ok_and(|s| s.success());
    let made = run(std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&raw)
        .arg(text))
        && run(std::process::Command::new("sox")
            .arg(&raw)
            .args(["-r", "8000", "-c", "1", "-b", "16"])
            .arg(&out));
    if !made {
        eprintln!(
            "espeak-ng or sox missing (scripts/test.sh installs them): using the test signal"
        );
        return support::pcap::test_signal(3000);
    }
    hound::WavReader::open(&out)
        .unwrap()
        .into_samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

/// How outbound media frames arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacing {
    pub mean_gap_ms: f64,
    /// Share of gaps under 5 ms.
    pub short_gaps: f64,
    pub largest_gap_ms: f64,
    /// Most frames in any 100 ms.
    pub densest_100ms: usize,
    /// Three or more frames within 10 ms.
    pub bursts: usize,
}

impl Pacing {
    pub fn of(arrivals: &[Instant]) -> Self {
        let gaps: Vec<f64> = arrivals
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
            .collect();
        if gaps.is_empty() {
            return Self::default();
        }
        let within = |i: usize, span: u64| {
            arrivals[i..]
                .iter()
                .take_while(|&&t| t - arrivals[i] < Duration::from_millis(span))
                .count()
        };
        Self {
            mean_gap_ms: gaps.iter().sum::<f64>() / gaps.len() as f64,
            short_gaps: gaps.iter().filter(|&&g| g < 5.0).count() as f64 / gaps.len() as f64,
            largest_gap_ms: gaps.iter().cloned().fold(0.0, f64::max),
            densest_100ms: (0..arrivals.len())
                .map(|i| within(i, 100))
                .max()
                .unwrap_or(0),
            bursts: (0..arrivals.len()).filter(|&i| within(i, 10) >= 3).count(),
        }
    }

    fn merge(&mut self, other: &Pacing, weight: f64, total: f64) {
        self.mean_gap_ms += other.mean_gap_ms * weight / total;
        self.short_gaps += other.short_gaps * weight / total;
        self.largest_gap_ms = self.largest_gap_ms.max(other.largest_gap_ms);
        self.densest_100ms = self.densest_100ms.max(other.densest_100ms);
        self.bursts += other.bursts;
    }
}

impl fmt::Display for Pacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mean gap {:.2} ms, {:.2}% of gaps under 5 ms, largest {:.1} ms, at most {} frames in 100 ms, {} bursts",
            self.mean_gap_ms,
            self.short_gaps * 100.0,
            self.largest_gap_ms,
            self.densest_100ms,
            self.bursts
        )
    }
}

/// What 50 (or `n`) concurrent streams did.
#[derive(Debug, Default)]
pub struct Report {
    pub streams: usize,
    pub failures: Vec<String>,
    /// Upgrade to the first outbound media frame.
    pub handshakes: Vec<Duration>,
    pub pacing: Pacing,
}

impl Report {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.handshakes.clone();
        sorted.sort();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied().unwrap_or_default()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} streams, {} failed; upgrade→first media p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; outbound {}",
            self.streams,
            self.failures.len(),
            self.quantile(0.5).as_secs_f64() * 1000.0,
            self.quantile(0.95).as_secs_f64() * 1000.0,
            self.quantile(1.0).as_secs_f64() * 1000.0,
            self.pacing,
        )?;
        for failure in &self.failures {
            write!(f, "\n  {failure}")?;
        }
        Ok(())
    }
}

/// `n` calls, their webhooks and streams started over one second, each streaming `audio`
/// with jitter and bursts, then hanging up.
pub async fn run_concurrent(addr: SocketAddr, n: usize, audio: Vec<u8>) -> Report {
    let side = TwilioSide::new(addr);
    let audio = Arc::new(audio);
    let tasks: Vec<_> = (0..n)
        .map(|k| {
            let audio = audio.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20 * k as u64)).await;
                let call_sid = call_sid();
                let token = side.webhook(&call_sid).await;
                let plan = Plan {
                    jitter: true,
                    seed: k as u64,
                    ..Plan::new(&call_sid, &token, (*audio).clone())
                };
                side.stream(&plan).await
            })
        })
        .collect();
    let mut report = Report {
        streams: n,
        ..Report::default()
    };
    for (k, task) in tasks.into_iter().enumerate() {
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(err) => {
                report
                    .failures
                    .push(format!("stream {k}: task failed: {err}"));
                continue;
            }
        };
        let frames = audio.len() / 160;
        let pacing = Pacing::of(&outcome.media);
        report.pacing.merge(&pacing, 1.0, n as f64);
        let problem = if let Some(err) = &outcome.connect_error {
            Some(err.clone())
        } else if outcome.bad_media > 0 {
            Some(format!("{} malformed media frames", outcome.bad_media))
        } else if outcome.media.len() < frames * 9 / 10 {
            Some(format!(
                "{} media frames for {frames} sent",
                outcome.media.len()
            ))
        } else if pacing.densest_100ms > 10 || !(19.0..21.5).contains(&pacing.mean_gap_ms) {
            // With 50 streams on two cores both sides stall now and then, and the client reads
            // what queued meanwhile at once; a sender that bursts puts far more in 100 ms.
            Some(format!("not paced: {pacing}"))
        } else if outcome.close != Some(1000) {
            Some(format!("closed with {:?}", outcome.close))
        } else {
            None
        };
        if let Some(problem) = problem {
            report.failures.push(format!("stream {k}: {problem}"));
        }
        if let Some(h) = outcome.first_media {
            report.handshakes.push(h);
        }
    }
    report
}

/// CPU time and resident memory of a process at one moment, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    at: Instant,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    rss_kb: u64,
}

impl ProcSample {
    pub fn take(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        let tick = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            at: Instant::now(),
            cpu_ticks: tick(14) + tick(15),
            rss_kb,
        }
    }
}

/// CPU use over a window and the largest RSS seen, measured on a thread beside the test.
pub struct Sampler(std::thread::JoinHandle<Busy>);

#[derive(Debug, Clone, Copy)]
pub struct Busy {
    /// Percent of one core.
    pub cpu_percent: f64,
    pub peak_rss_kb: u64,
}

impl Sampler {
    /// Waits `delay`, then measures for `window`.
    pub fn start(pid: u32, delay: Duration, window: Duration) -> Self {
        Self(std::thread::spawn(move || {
            std::thread::sleep(delay);
            let first = ProcSample::take(pid);
            let mut peak = first.rss_kb;
            while first.at.elapsed() < window {
                std::thread::sleep(Duration::from_millis(100));
                peak = peak.max(ProcSample::take(pid).rss_kb);
            }
            let last = ProcSample::take(pid);
            let ticks_per_sec = 100.0; // USER_HZ on Linux
            let cpu = (last.cpu_ticks - first.cpu_ticks) as f64 / ticks_per_sec;
            Busy {
                cpu_percent: cpu / (last.at - first.at).as_secs_f64() * 100.0,
                peak_rss_kb: peak.max(last.rss_kb),
            }
        }))
    }

    pub fn finish(self) -> Busy {
        self.0.join().unwrap()
    }
}

pub fn per_call(idle: &ProcSample, busy: &Busy, n: usize) -> String {
    format!(
        "CPU {:.1}% of a core ({:.2}% per call); RSS {} kB idle, {} kB peak ({:.0} kB per call)",
        busy.cpu_percent,
        busy.cpu_percent / n as f64,
        idle.rss_kb,
        busy.peak_rss_kb,
        busy.peak_rss_kb.saturating_sub(idle.rss_kb) as f64 / n as f64
    )
}

/// The same load over SIP: `n` concurrent SIPp calls streaming `audio` as RTP (PCMU).
pub fn sip_load(dir: &Path, n: usize, audio: &[u8]) -> String {
    let e = support::Earshot::start("[log]\nlevel = \"warn\"\n");
    let packets = support::pcap::g711_packets(0, 1000, audio);
    let pcap = dir.join("load.pcap");
    support::pcap::write_rtp_pcap(&pcap, 0x1234_5678, 100, &packets).unwrap();
    let ms = audio.len() / 8;
    let vars = vec![
        ("CODECS", "0".to_owned()),
        ("PTS", "0".to_owned()),
        ("RTPMAPS", "a=rtpmap:0 PCMU/8000".to_owned()),
        ("ANSWER_PT", "0".to_owned()),
        ("PCAP", pcap.display().to_string()),
        ("PCAP_MS", ms.to_string()),
        ("HOLD_MS", "200".to_owned()),
        ("CALLER", "+15551234567".to_owned()),
        ("CALLEE", "1000".to_owned()),
    ];
    let scenario = support::sipp::Scenario::load("uac_call.xml", &vars);
    let idle = ProcSample::take(e.pid());
    let port = support::free_udp_tcp_port(std::net::Ipv4Addr::LOCALHOST).unwrap();
    let count = n.to_string();
    let run = support::sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        port,
        &["-m", &count, "-l", &count, "-r", "50"],
    );
    let busy = Sampler::start(e.pid(), Duration::from_secs(2), Duration::from_secs(2)).finish();
    let outcome = run.wait(Duration::from_secs(60));
    format!(
        "{} ({} SIPp calls ok, {} failed)",
        per_call(&idle, &busy, n),
        outcome.successful,
        outcome.failed
    )
}
