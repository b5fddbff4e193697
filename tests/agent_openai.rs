//! The OpenAI Realtime bridge against a Realtime server written here from the published GA
//! protocol, over wss:// with a test CA made by the `openssl` CLI: the upgrade's bearer key,
//! `session.update` field by field, the caller's appends, the model's audio in the recording,
//! transcripts in the call's record and `GET /api/calls/{id}/transcript`, barge-in truncation
//! at the milliseconds actually played, service errors as call events, and the model's transfer
//! function (a REFER done, a REFER declined reported back to the model).
//!
//! The test bodies are synchronous (SIPp, the HTTP API); each test's server runs on its own
//! tokio runtime and is driven with `block_on`.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use earshot::media::g711::Law;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use support::Earshot;
use support::pcap;
use support::sipp::{self, Scenario, Sipp};

/// How long the server waits for any one thing earshot should send.
const WAIT: Duration = Duration::from_secs(15);
/// The API key earshot is configured with.
const API_KEY: &str = "sk-test-0123456789abcdefghijklmn";
/// The model's voice in these tests: a tone the recording's right channel is checked for.
const AGENT_HZ: f64 = 600.0;
/// Deltas sent after a barge-in, in a tone of their own: they must never be heard.
const LATE_HZ: f64 = 1000.0;

// ---------------------------------------------------------------------------------------------
// The Realtime server.
// ---------------------------------------------------------------------------------------------

/// One WebSocket from earshot: what its upgrade carried, what it sent, and a way to answer.
struct Conn {
    /// The upgrade's request target and `Authorization` header.
    target: String,
    authorization: Option<String>,
    inbox: mpsc::UnboundedReceiver<Option<Value>>,
    outbox: mpsc::UnboundedSender<Message>,
    /// Every text received so far, in order.
    seen: Vec<Value>,
    ended: bool,
}

impl Conn {
    /// The next message within `limit` (`None` when the time is up or the connection ended).
    async fn next(&mut self, limit: Duration) -> Option<Value> {
        if self.ended {
            return None;
        }
        match tokio::time::timeout(limit, self.inbox.recv()).await {
            Ok(Some(Some(value))) => {
                self.seen.push(value.clone());
                Some(value)
            }
            Ok(_) => {
                self.ended = true;
                None
            }
            Err(_) => None,
        }
    }

    /// Reads until a message of type `kind`; panics with what came instead after `limit`.
    async fn until(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(v) if v["type"] == kind => return v,
                Some(_) => {}
                None => panic!(
                    "{kind}: not received within {WAIT:?} (ended: {}); the last messages:\n{}",
                    self.ended,
                    self.tail(8)
                ),
            }
        }
    }

    /// Reads until `n` more appends came.
    async fn appends(&mut self, n: usize) {
        for _ in 0..n {
            self.until("input_audio_buffer.append").await;
        }
    }

    /// Reads until the connection ends (or `limit`).
    async fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.ended && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            self.next(left).await;
        }
        assert!(self.ended, "the connection is still up after {limit:?}");
    }

    fn send(&self, value: &Value) {
        let _ = self.outbox.send(Message::text(value.to_string()));
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

    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["type"] == kind).collect()
    }
}

/// A Realtime server on a fresh loopback port, wss:// with the test CA.
struct RealtimeServer {
    url: String,
    conns: mpsc::UnboundedReceiver<Conn>,
}

impl RealtimeServer {
    // The upgrade callback's error type is tungstenite's.
    #[allow(clippy::result_large_err)]
    fn start(rt: &Runtime, tls: tokio_rustls::TlsAcceptor) -> RealtimeServer {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                0,
            ))))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tx, tls) = (tx.clone(), tls.clone());
                tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let mut upgrade = (String::new(), None);
                    let callback =
                        |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                            upgrade.0 = req.uri().to_string();
                            upgrade.1 = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            Ok(resp)
                        };
                    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                        return;
                    };
                    let (mut sink, mut stream) = ws.split();
                    let (in_tx, inbox) = mpsc::unbounded_channel();
                    let (outbox, mut out_rx) = mpsc::unbounded_channel::<Message>();
                    tokio::spawn(async move {
                        while let Some(message) = stream.next().await {
                            match message {
                                Ok(Message::Text(text)) => {
                                    let value = serde_json::from_str(text.as_str())
                                        .unwrap_or_else(|_| json!({ "not_json": text.as_str() }));
                                    let _ = in_tx.send(Some(value));
                                }
                                Ok(Message::Binary(_)) => {
                                    let _ = in_tx.send(Some(json!({ "binary": true })));
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = in_tx.send(None);
                    });
                    tokio::spawn(async move {
                        while let Some(message) = out_rx.recv().await {
                            if sink.send(message).await.is_err() {
                                break;
                            }
                        }
                    });
                    let _ = tx.send(Conn {
                        target: upgrade.0,
                        authorization: upgrade.1,
                        inbox,
                        outbox,
                        seen: Vec::new(),
                        ended: false,
                    });
                });
            }
        });
        RealtimeServer {
            url: format!("wss://{addr}/v1/realtime?model=gpt-realtime"),
            conns,
        }
    }

    async fn accept(&mut self) -> Conn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("earshot did not connect within {WAIT:?}"))
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Checks the upgrade and the first message, `session.update`, field by field.
async fn session_set_up(server: &mut RealtimeServer) -> Conn {
    let mut conn = server.accept().await;
    assert_eq!(
        conn.authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(conn.target, "/v1/realtime?model=gpt-realtime");
    let first = conn.next(WAIT).await.expect("no first message");
    assert_eq!(first["type"], "session.update", "{first:#}");
    let s = &first["session"];
    assert_eq!(s["type"], "realtime", "{first:#}");
    assert_eq!(s["model"], "gpt-realtime", "{first:#}");
    assert_eq!(s["output_modalities"], json!(["audio"]), "{first:#}");
    assert_eq!(s["instructions"], "You are a test.", "{first:#}");
    let input = &s["audio"]["input"];
    assert_eq!(
        input["format"],
        json!({ "type": "audio/pcmu" }),
        "{first:#}"
    );
    assert_eq!(
        input["transcription"]["model"], "gpt-4o-transcribe",
        "{first:#}"
    );
    let vad = &input["turn_detection"];
    assert_eq!(vad["type"], "server_vad", "{first:#}");
    assert_eq!(vad["create_response"], true, "{first:#}");
    assert_eq!(vad["interrupt_response"], true, "{first:#}");
    assert!(vad["threshold"].is_number(), "{first:#}");
    assert!(vad["silence_duration_ms"].is_u64(), "{first:#}");
    let output = &s["audio"]["output"];
    assert_eq!(
        output["format"],
        json!({ "type": "audio/pcmu" }),
        "{first:#}"
    );
    assert_eq!(output["voice"], "marin", "{first:#}");
    conn
}

/// `response.output_audio.delta`s of `ulaw` for `item_id`, `chunk` bytes each.
fn deltas(response_id: &str, item_id: &str, ulaw: &[u8], chunk: usize) -> Vec<Value> {
    ulaw.chunks(chunk)
        .map(|c| {
            json!({
                "type": "response.output_audio.delta",
                "event_id": support::unique("ev"),
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": BASE64.encode(c),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Audio.
// ---------------------------------------------------------------------------------------------

/// `ms` of a sine at `hz`, 8 kHz, μ-law.
fn tone_ulaw(hz: f64, ms: u32) -> Vec<u8> {
    let pcm: Vec<i16> = (0..ms * 8)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            ((2.0 * std::f64::consts::PI * hz * t).sin() * 10000.0) as i16
        })
        .collect();
    let mut codes = vec![0u8; pcm.len()];
    Law::Ulaw.encode(&pcm, &mut codes);
    codes
}

/// 20 ms blocks of `samples` louder than silence.
fn loud_blocks(samples: &[i16]) -> usize {
    samples
        .chunks_exact(160)
        .filter(|block| {
            let energy: f64 = block.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            (energy / 160.0).sqrt() > 300.0
        })
        .count()
}

// ---------------------------------------------------------------------------------------------
// earshot and SIPp.
// ---------------------------------------------------------------------------------------------

fn realtime_config(url: &str, ca: &Path) -> String {
    format!(
        "[agent]\nprotocol = \"openai-realtime\"\nurl = {url:?}\napi_key = \"{API_KEY}\"\n\
         ca_file = {:?}\ninstructions = \"You are a test.\"\n\
         [log]\nlevel = \"info,earshot=debug\"\n",
        ca.display().to_string()
    )
}

/// The test signal for `ms` (PCMU), then an RFC 4733 press of 5: the caller's capture.
/// Returns its path and the 160-byte payloads it carries.
fn caller_pcap(e: &Earshot, ms: u32) -> (String, Vec<Vec<u8>>) {
    let codes = pcap::coded_test_signal(Law::Ulaw, ms);
    let mut packets = pcap::g711_packets(0, 1000, &codes);
    packets.extend(pcap::dtmf_packets(101, 1000 + codes.len() as u32, 5, 800));
    let path = e.dir().join(format!("caller-{ms}.pcap"));
    pcap::write_rtp_pcap(&path, 0x1234_5678, 100, &packets).unwrap();
    let frames = codes.chunks(160).map(<[u8]>::to_vec).collect();
    (path.display().to_string(), frames)
}

/// A caller that streams `pcap_ms` of its capture, sends an INFO digit, stays `hold_ms` more
/// and hangs up itself.
fn caller_hanging_up(e: &Earshot, pcap: &str, pcap_ms: u32, hold_ms: u32) -> Sipp {
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
    sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    )
}

/// The id of the one call earshot knows.
fn only_call_id(e: &Earshot) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = http::get(e.http_addr(), "/api/calls?limit=10").json()["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !calls.is_empty() || Instant::now() > deadline {
            assert_eq!(calls.len(), 1, "calls: {calls:#?}");
            return calls[0]["id"].as_str().unwrap().to_owned();
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

fn events_of<'a>(call: &'a Value, kind: &str) -> Vec<&'a Value> {
    call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| ev["type"] == kind)
        .collect()
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

/// A Realtime server and an earshot bridged to it.
fn setup(name: &str) -> (Runtime, RealtimeServer, Earshot) {
    setup_with(name, "", "")
}

/// The same, with `agent` added to the `[agent]` section and `extra` to the file.
fn setup_with(name: &str, agent: &str, extra: &str) -> (Runtime, RealtimeServer, Earshot) {
    let rt = runtime();
    let dir = support::temp_dir(name);
    let (ca, acceptor) = support::tls::test_pki(&dir);
    let server = RealtimeServer::start(&rt, acceptor);
    let config =
        realtime_config(&server.url, &ca).replacen("[agent]\n", &format!("[agent]\n{agent}"), 1);
    let e = Earshot::start(&format!("{config}{extra}"));
    (rt, server, e)
}

/// Where the model's transfer function sends callers in these tests.
const DESK: &str = "sip:desk@pbx.example.com";

/// An earshot whose model is offered the transfer function, and a SIP caller (`scenario`: one
/// that waits for a REFER, then a BYE) on a call with it.
fn transfer_setup(name: &str, scenario: &str) -> (Runtime, RealtimeServer, Earshot, Sipp) {
    let (rt, server, e) = setup_with(
        name,
        &format!("transfer_to = \"{DESK}\"\n"),
        "[calls]\noutbound_allow = [\"sip:*@pbx.example.com\"]\n",
    );
    let (pcap, _) = caller_pcap(&e, 4000);
    let vars = [("PCAP", pcap), ("BYE_TIMEOUT_MS", "40000".to_owned())];
    let sipp = sipp::caller(&e, scenario, &vars);
    (rt, server, e, sipp)
}

/// The model calls `transfer_call` the way the GA server reports a function call: the
/// response, its `function_call` output item done, the response done.
fn model_calls_transfer(conn: &Conn, call_id: &str) {
    let response = "resp_transfer";
    conn.send(&json!({"type": "response.created", "event_id": "ev_t1",
        "response": {"id": response, "object": "realtime.response", "status": "in_progress",
                     "output": []}}));
    conn.send(
        &json!({"type": "response.output_item.done", "event_id": "ev_t2",
        "response_id": response, "output_index": 0,
        "item": {"id": "item_fc", "object": "realtime.item", "type": "function_call",
                 "status": "completed", "name": "transfer_call", "call_id": call_id,
                 "arguments": "{\"reason\":\"the caller asked for a person\"}"}}),
    );
    conn.send(&json!({"type": "response.done", "event_id": "ev_t3",
        "response": {"id": response, "object": "realtime.response", "status": "completed",
                     "output": []}}));
}

/// Checks that `session.update` offered the transfer function.
fn offers_transfer(conn: &Conn) {
    let update = &conn.seen[0];
    let tools = update["session"]["tools"]
        .as_array()
        .expect("tools offered");
    assert_eq!(tools.len(), 1, "{update:#}");
    assert_eq!(tools[0]["type"], "function", "{update:#}");
    assert_eq!(tools[0]["name"], "transfer_call", "{update:#}");
    assert_eq!(update["session"]["tool_choice"], "auto", "{update:#}");
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn realtime_session_is_set_up_bridged_and_transcribed() {
    let (rt, mut server, e) = setup("openai-session");
    let (pcap, frames) = caller_pcap(&e, 4000);
    let sipp = caller_hanging_up(&e, &pcap, 4000, 1000);
    let agent_audio = tone_ulaw(AGENT_HZ, 1500);
    let conn = rt.block_on(async {
        let mut conn = session_set_up(&mut server).await;
        conn.appends(10).await;
        // The caller's turn: VAD, then its transcript.
        conn.send(&json!({
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": 20,
            "item_id": "item_c1",
        }));
        conn.send(&json!({
            "type": "input_audio_buffer.speech_stopped",
            "audio_end_ms": 180,
            "item_id": "item_c1",
        }));
        conn.send(&json!({
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_c1",
            "content_index": 0,
            "transcript": "Hi, I am the caller",
        }));
        // The model's answer: 1.5 s of audio in 100 ms deltas, then its transcript.
        conn.send(&json!({
            "type": "response.created",
            "response": { "id": "resp_a1", "status": "in_progress" },
        }));
        for delta in deltas("resp_a1", "item_a1", &agent_audio, 800) {
            conn.send(&delta);
        }
        conn.send(&json!({
            "type": "response.output_audio.done",
            "response_id": "resp_a1",
            "item_id": "item_a1",
            "output_index": 0,
            "content_index": 0,
        }));
        conn.send(&json!({
            "type": "response.output_audio_transcript.done",
            "response_id": "resp_a1",
            "item_id": "item_a1",
            "output_index": 0,
            "content_index": 0,
            "transcript": "Hello from the test agent",
        }));
        conn.send(&json!({
            "type": "response.done",
            "response": { "id": "resp_a1", "status": "completed" },
        }));
        conn.drain(Duration::from_secs(30)).await;
        conn
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    let id = only_call_id(&e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert!(events_of(&call, "agent_fallback").is_empty(), "{call:#}");

    // The caller's audio, appended 20 ms at a time.
    let appends = conn.of_type("input_audio_buffer.append");
    let audio: Vec<Vec<u8>> = appends
        .iter()
        .map(|a| BASE64.decode(a["audio"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        audio.len() >= 150,
        "{} appends for a call of over 4 s",
        audio.len()
    );
    assert!(
        audio.iter().all(|a| a.len() == 160),
        "appends of {:?} bytes",
        audio
            .iter()
            .map(Vec::len)
            .filter(|&n| n != 160)
            .collect::<Vec<_>>()
    );
    let sent: HashSet<&Vec<u8>> = frames.iter().collect();
    let matched = audio.iter().filter(|a| sent.contains(a)).count();
    assert!(
        matched >= 150,
        "{matched} of {} appends carry the caller's frames (of {} sent)",
        audio.len(),
        frames.len()
    );
    assert_eq!(conn.of_type("conversation.item.truncate").len(), 0);

    // The model's audio, on the recording's right channel.
    let (_, right) = recording(&e, &call);
    let heard = support::tone_blocks(&right, AGENT_HZ);
    assert!(
        (70..=76).contains(&heard),
        "{heard} frames of the agent's 75 recorded"
    );

    // The transcript: two segments, in the call's record and from the API.
    let transcripts = events_of(&call, "transcript");
    assert_eq!(transcripts.len(), 2, "{call:#}");
    let segments = http::get(e.http_addr(), &format!("/api/calls/{id}/transcript")).json();
    assert_eq!(segments["call_id"], id.as_str(), "{segments:#}");
    let list = segments["segments"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{segments:#}");
    let (caller, agent) = (&list[0], &list[1]);
    assert_eq!(caller["speaker"], "caller", "{segments:#}");
    assert_eq!(caller["item_id"], "item_c1", "{segments:#}");
    assert_eq!(caller["text"], "Hi, I am the caller", "{segments:#}");
    assert_eq!(agent["speaker"], "agent", "{segments:#}");
    assert_eq!(agent["item_id"], "item_a1", "{segments:#}");
    assert_eq!(agent["text"], "Hello from the test agent", "{segments:#}");
    let ms = |s: &Value, k: &str| s[k].as_u64().unwrap();
    // VAD saw 160 ms of the caller's speech (20..180 ms of the appended audio), mapped to
    // the call's clock through the ticks the frames were appended at (which jitter).
    let spoke = ms(caller, "end_ms") - ms(caller, "start_ms");
    assert!((100..=250).contains(&spoke), "{segments:#}");
    // 1.5 s of the model's audio played (both ends rounded to the ms on the call's clock),
    // longer by the underruns of a busy box.
    let played = ms(agent, "end_ms") - ms(agent, "start_ms");
    assert!((1480..=2000).contains(&played), "{segments:#}");
    assert!(
        ms(agent, "start_ms") >= ms(caller, "end_ms"),
        "{segments:#}"
    );

    let txt = http::get(
        e.http_addr(),
        &format!("/api/calls/{id}/transcript?format=txt"),
    )
    .text();
    let lines: Vec<&str> = txt.lines().collect();
    assert_eq!(lines.len(), 2, "{txt}");
    assert!(lines[0].starts_with('[') && lines[0].ends_with("] caller: Hi, I am the caller"));
    assert!(
        lines[1].ends_with("] agent: Hello from the test agent"),
        "{txt}"
    );
    assert!(e.panics().is_empty(), "{:?}", e.panics());
}

#[test]
fn barge_in_truncates_at_the_played_ms() {
    let (rt, mut server, e) = setup("openai-barge-in");
    let (pcap, _) = caller_pcap(&e, 4000);
    let sipp = caller_hanging_up(&e, &pcap, 4000, 1500);
    let agent_audio = tone_ulaw(AGENT_HZ, 10_000);
    let late_audio = tone_ulaw(LATE_HZ, 600);
    let (conn, truncate, later) = rt.block_on(async {
        let mut conn = session_set_up(&mut server).await;
        conn.send(&json!({
            "type": "response.created",
            "response": { "id": "resp_a2", "status": "in_progress" },
        }));
        for delta in deltas("resp_a2", "item_a2", &agent_audio, 1600) {
            conn.send(&delta);
        }
        // About a second of playing later, the caller speaks.
        conn.appends(50).await;
        let speech = json!({
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": 900,
            "item_id": "item_c2",
        });
        conn.send(&speech);
        let truncate = conn.until("conversation.item.truncate").await;
        // The same event again, and late deltas of the interrupted item.
        conn.send(&speech);
        for delta in deltas("resp_a2", "item_a2", &late_audio, 1600) {
            conn.send(&delta);
        }
        let since = conn.seen.len();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            conn.next(deadline.saturating_duration_since(Instant::now()))
                .await;
        }
        let later = conn.seen.len() - since;
        conn.send(&json!({
            "type": "response.done",
            "response": { "id": "resp_a2", "status": "cancelled" },
        }));
        conn.drain(Duration::from_secs(30)).await;
        (conn, truncate, later)
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    let id = only_call_id(&e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert!(later > 0, "earshot sent nothing after the barge-in");

    assert_eq!(truncate["item_id"], "item_a2", "{truncate:#}");
    assert_eq!(truncate["content_index"], 0, "{truncate:#}");
    let end_ms = truncate["audio_end_ms"].as_u64().unwrap();
    assert!((200..=6000).contains(&end_ms), "{truncate:#}");
    let truncates = conn.of_type("conversation.item.truncate");
    assert_eq!(truncates.len(), 1, "{truncates:#?}");

    // What the caller heard is what was truncated at, and nothing after it.
    let (_, right) = recording(&e, &call);
    let heard = support::tone_blocks(&right, AGENT_HZ);
    let expected = (end_ms / 20) as usize;
    eprintln!("truncated at {end_ms} ms; {heard} frames of the agent recorded");
    assert!(
        heard.abs_diff(expected) <= 3,
        "{heard} frames of the agent recorded, truncated at {end_ms} ms ({expected} frames)"
    );
    assert_eq!(
        support::tone_blocks(&right, LATE_HZ),
        0,
        "late deltas were played"
    );
    let last_agent = right
        .chunks_exact(160)
        .rposition(|b| support::tone_blocks(b, AGENT_HZ) == 1)
        .unwrap();
    let after = &right[(last_agent + 1) * 160..];
    assert_eq!(
        loud_blocks(after),
        0,
        "the right channel is not quiet after the barge-in"
    );
    assert!(e.panics().is_empty(), "{:?}", e.panics());
}

#[test]
fn service_errors_are_call_events() {
    let (rt, mut server, e) = setup("openai-error");
    let (pcap, _) = caller_pcap(&e, 2000);
    let sipp = caller_hanging_up(&e, &pcap, 2000, 500);
    rt.block_on(async {
        let mut conn = session_set_up(&mut server).await;
        conn.appends(5).await;
        conn.send(&json!({
            "type": "error",
            "event_id": "event_err1",
            "error": {
                "type": "invalid_request_error",
                "code": "test_code",
                "message": "boom",
                "param": null,
                "event_id": null,
            },
        }));
        // The session goes on: the caller's audio keeps coming.
        conn.appends(25).await;
        conn.drain(Duration::from_secs(30)).await;
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(30)), 1, &e);
    let id = only_call_id(&e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
    assert!(events_of(&call, "agent_fallback").is_empty(), "{call:#}");
    let notices = events_of(&call, "agent_notice");
    assert_eq!(notices.len(), 1, "{call:#}");
    assert_eq!(notices[0]["kind"], "error", "{call:#}");
    assert_eq!(notices[0]["code"], "test_code", "{call:#}");
    assert_eq!(notices[0]["message"], "boom", "{call:#}");
    assert!(e.panics().is_empty(), "{:?}", e.panics());
}

/// The model's `transfer_call` hands a SIP caller whose side supports REFER to `[agent]
/// .transfer_to`: earshot REFERs, the caller's NOTIFYs report the new call, and the record says
/// the agent asked, by REFER, for that destination.
#[test]
fn the_models_transfer_function_refers_the_caller() {
    let (rt, mut server, e, sipp) = transfer_setup("openai-transfer", "uac_accepts_refer.xml");
    rt.block_on(async {
        let mut conn = session_set_up(&mut server).await;
        offers_transfer(&conn);
        conn.appends(5).await;
        model_calls_transfer(&conn, "call_desk_1");
        // The call ends with the transfer; the session is closed with it.
        conn.drain(WAIT).await;
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(40)), 1, &e);
    let id = only_call_id(&e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "transferred", "{call:#}");
    assert_eq!(call["transfer"]["to"], DESK, "{call:#}");
    assert_eq!(call["transfer"]["method"], "refer", "{call:#}");
    let requested = events_of(&call, "transfer_requested");
    assert_eq!(requested.len(), 1, "{call:#}");
    assert_eq!(requested[0]["by"], "agent", "{call:#}");
    assert_eq!(events_of(&call, "transferred").len(), 1, "{call:#}");
}

/// When the transfer the model asked for fails (the caller's side declines the REFER), the
/// call goes on with the model, which is told why (`function_call_output`) and asked to answer
/// (`response.create`).
#[test]
fn a_failed_transfer_is_reported_back_to_the_model() {
    let (rt, mut server, e, sipp) =
        transfer_setup("openai-transfer-declined", "uac_declines_refer.xml");
    let id = rt.block_on(async {
        let mut conn = session_set_up(&mut server).await;
        offers_transfer(&conn);
        conn.appends(5).await;
        model_calls_transfer(&conn, "call_desk_2");
        let output = conn.until("conversation.item.create").await;
        assert_eq!(output["item"]["type"], "function_call_output", "{output:#}");
        assert_eq!(output["item"]["call_id"], "call_desk_2", "{output:#}");
        let result: Value =
            serde_json::from_str(output["item"]["output"].as_str().unwrap()).unwrap();
        assert_eq!(result, json!({"status": "failed", "reason": "refused"}));
        conn.until("response.create").await;
        // The caller is still bridged to the model.
        conn.appends(5).await;
        let id = only_call_id(&e);
        http::hang_up(e.http_addr(), &id, &[]);
        conn.drain(WAIT).await;
        id
    });
    sipp::assert_passed(&sipp.wait(Duration::from_secs(40)), 1, &e);
    let call = ended_call(&e, &id);
    assert_eq!(call["end_reason"], "local hangup", "{call:#}");
    let failed = events_of(&call, "transfer_failed");
    assert_eq!(failed.len(), 1, "{call:#}");
    assert_eq!(failed[0]["reason"], "refused", "{call:#}");
    assert_eq!(failed[0]["to"], DESK, "{call:#}");
}
