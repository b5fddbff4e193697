//! Talk-back end to end: the box's microphone is a PulseAudio source fed with a 1 kHz tone (a
//! second null sink, `mic_feed`, whose monitor is made the default source), a caller calls in
//! over SIP/RTP, and the operator turns talk on and off through the API. While talk is on the
//! caller receives the tone at pitch with no silent frame; before and after, no tone. Talk
//! turned on for a second live call moves the microphone there: the first caller stops hearing
//! it. Without a microphone, talk is refused with 409 and the call goes on.
//!
//! Needs the test PulseAudio of scripts/test.sh (`PULSE_SERVER`); the modules this test loads
//! into it are unloaded at the end.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use serde_json::json;
use support::caller::{Caller, rtp_packet};
use support::{Earshot, tone_blocks};

const TONE_HZ: f64 = 1000.0;

/// The test PulseAudio has one default source: tests that make the tone the microphone take
/// turns.
static MICROPHONE: Mutex<()> = Mutex::new(());

fn pactl(server: &str, args: &[&str]) -> String {
    let out = Command::new("pactl")
        .args(args)
        .env("PULSE_SERVER", server)
        .output()
        .expect("pactl (pulseaudio-utils)");
    assert!(
        out.status.success(),
        "pactl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The microphone: a null sink `mic_feed` playing a tone, its monitor the default source.
/// Dropping it stops the tone, unloads the sink and puts the default source back.
struct ToneMicrophone {
    server: String,
    module: String,
    previous_source: String,
    player: Child,
}

impl ToneMicrophone {
    fn start(dir: &std::path::Path) -> ToneMicrophone {
        let server = std::env::var("PULSE_SERVER")
            .expect("PULSE_SERVER: run through scripts/test.sh, which starts the test PulseAudio");
        let previous_source = pactl(&server, &["get-default-source"]);
        let module = pactl(
            &server,
            &[
                "load-module",
                "module-null-sink",
                "sink_name=mic_feed",
                "rate=48000",
                "channels=2",
            ],
        );
        pactl(&server, &["set-default-source", "mic_feed.monitor"]);
        // Two minutes of a 1 kHz tone at -6 dBFS, longer than the test.
        let wav = dir.join("mic-tone.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&wav, spec).unwrap();
        for i in 0..48_000 * 120 {
            let phase = 2.0 * std::f64::consts::PI * TONE_HZ * f64::from(i) / 48_000.0;
            w.write_sample((phase.sin() * 16_000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
        let player = Command::new("paplay")
            .args(["-d", "mic_feed"])
            .arg(&wav)
            .env("PULSE_SERVER", &server)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("paplay (pulseaudio-utils)");
        ToneMicrophone {
            server,
            module,
            previous_source,
            player,
        }
    }
}

impl Drop for ToneMicrophone {
    fn drop(&mut self) {
        let _ = self.player.kill();
        let _ = self.player.wait();
        let pactl = |args: &[&str]| {
            let _ = Command::new("pactl")
                .args(args)
                .env("PULSE_SERVER", &self.server)
                .output();
        };
        pactl(&["set-default-source", &self.previous_source]);
        pactl(&["unload-module", &self.module]);
    }
}

/// The caller's side of the media: silence sent every 20 ms (so earshot hears a live peer),
/// everything earshot sends kept in order of arrival.
struct CallerMedia {
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<()>>,
}

impl CallerMedia {
    fn start(caller: &Caller, earshot_rtp: SocketAddr) -> CallerMedia {
        let socket = caller.rtp.try_clone().unwrap();
        let out = caller.rtp.try_clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let sender = std::thread::spawn(move || {
            let start = Instant::now();
            let mut n: u32 = 0;
            while !stopped.load(Relaxed) {
                let packet = rtp_packet(n as u16, n * 160, 0x7a1c_0001);
                let _ = out.send_to(&packet, earshot_rtp);
                n += 1;
                let due = start + Duration::from_millis(20) * n;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        CallerMedia {
            socket,
            stop,
            sender: Some(sender),
        }
    }

    /// Drops what earshot sent so far and nobody read.
    fn discard(&self) {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while self.socket.recv(&mut buf).is_ok() {}
        self.socket.set_nonblocking(false).unwrap();
    }

    /// Decoded audio of every RTP packet from earshot in the next `span`.
    fn receive(&self, span: Duration) -> Vec<i16> {
        let until = Instant::now() + span;
        let mut pcm = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            if let Ok(n) = self.socket.recv(&mut buf)
                && n > 12
            {
                let payload = &buf[12..n];
                let mut frame = vec![0i16; payload.len()];
                Law::Ulaw.decode(payload, &mut frame);
                pcm.extend_from_slice(&frame);
            }
        }
        pcm
    }
}

impl Drop for CallerMedia {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

/// Zero crossings per second of 8 kHz `samples`, halved: the frequency of a tone.
fn zero_crossing_hz(samples: &[i16]) -> f64 {
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    crossings as f64 / 2.0 / (samples.len() as f64 / 8000.0)
}

/// 20 ms frames of `samples` with no sound at all (peak under -40 dBFS).
fn silent_frames(samples: &[i16]) -> usize {
    samples
        .chunks_exact(160)
        .filter(|f| f.iter().all(|s| s.unsigned_abs() < 330))
        .count()
}

/// The one live call's id.
fn live_call_id(e: &Earshot) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live = http::get(e.http_addr(), "/api/live").json();
        if let Some(id) = live["calls"][0]["id"].as_str() {
            return id.to_owned();
        }
        assert!(Instant::now() < deadline, "no live call: {live}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(e: &Earshot, name: &str) -> Option<f64> {
    let metrics = http::get(e.http_addr(), "/metrics").text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn talk(e: &Earshot, id: &str, body: serde_json::Value) -> http::Response {
    http::send_json(
        e.http_addr(),
        "POST",
        &format!("/api/calls/{id}/talk"),
        &body,
    )
}

/// An earshot with the default source as its microphone (`period_ms` audio periods), once the
/// capture runs: the box has long been up when calls arrive.
fn talking_box(period_ms: u32) -> Earshot {
    let e = Earshot::start(&format!(
        "[audio]\noutput = \"none\"\ninput = \"default\"\nperiod_ms = {period_ms}\n[log]\nlevel = \"info,earshot=debug\"\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&e, "earshot_capture_device_running") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the microphone never started capturing\n{}",
            e.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    e
}

#[test]
fn the_operator_is_heard_by_the_caller_at_pitch_without_gaps_while_talk_is_on() {
    let _turn = MICROPHONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = support::temp_dir("talk-back");
    let _mic = ToneMicrophone::start(&dir);
    // 20 ms periods: this test is about gapless talk-back at pitch, and the suite runs on busy
    // 2-core boxes where the 10 ms default leaves the PulseAudio capture too little headroom.
    // BENCHMARKS.md runs it with EARSHOT_TALK_PERIOD_MS=10 for the default's latency.
    let period_ms: u32 = std::env::var("EARSHOT_TALK_PERIOD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let e = talking_box(period_ms);
    let caller = Caller::new();
    let ok = caller.call(e.sip_addr(), "talk-back-1");
    let media = CallerMedia::start(&caller, ok.sdp_audio().unwrap());
    let id = live_call_id(&e);

    let before = media.receive(Duration::from_secs(2));
    let response = talk(&e, &id, json!({ "on": true }));
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body["talk"], true);
    assert_eq!(body["moved_from"], serde_json::Value::Null);
    let talking = media.receive(Duration::from_secs(5));
    let response = talk(&e, &id, json!({ "on": false }));
    assert_eq!(response.status, 200, "{}", response.text());
    let after = media.receive(Duration::from_secs(2));
    caller.send_in_dialog("BYE", &ok, e.sip_addr(), 2);

    assert_eq!(
        tone_blocks(&before, TONE_HZ),
        0,
        "a tone before talk was on"
    );
    // Margins for the request and the capture ring filling at the start, and the request at
    // the end: 0.5 s and 0.3 s. In between, every frame carries the tone.
    assert!(talking.len() >= 8000 * 4, "{} samples", talking.len());
    let window = &talking[4000..talking.len() - 2400];
    let frames = window.len() / 160;
    let silent: Vec<usize> = window
        .chunks_exact(160)
        .enumerate()
        .filter(|(_, f)| silent_frames(f) == 1)
        .map(|(i, _)| i)
        .collect();
    assert!(
        silent.is_empty(),
        "silent frames {silent:?} of {frames} while talking; capture underruns {:?}",
        metric(&e, "earshot_capture_underruns_total")
    );
    let hz = zero_crossing_hz(window);
    assert!(
        (hz - TONE_HZ).abs() <= TONE_HZ * 0.02,
        "the tone arrived at {hz:.1} Hz"
    );
    let pure = tone_blocks(window, TONE_HZ);
    assert!(
        pure * 10 >= frames * 9,
        "{pure} of {frames} frames are the tone"
    );
    assert_eq!(
        tone_blocks(&after[4000..], TONE_HZ),
        0,
        "the tone went on after talk was off"
    );

    // Accounted for: the events, and the microphone-to-network latency of every frame.
    std::thread::sleep(Duration::from_millis(500));
    let call = http::get(e.http_addr(), &format!("/api/calls/{id}")).json();
    let kinds: Vec<&str> = call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"talk_started") && kinds.contains(&"talk_stopped"),
        "{kinds:?}"
    );
    let sent = metric(&e, "earshot_talk_latency_seconds_count").unwrap_or(0.0);
    assert!(sent >= f64::from(frames as u32), "{sent} frames measured");
    let quantile = |q: &str| {
        metric(
            &e,
            &format!("earshot_talk_latency_seconds{{quantile=\"{q}\"}}"),
        )
        .unwrap()
            * 1000.0
    };
    eprintln!(
        "microphone to network ({period_ms} ms periods, {sent} frames): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        quantile("0.5"),
        quantile("0.9"),
        quantile("0.99")
    );
    assert_eq!(metric(&e, "earshot_capture_underruns_total"), Some(0.0));
}

/// Frames of `samples` after the first 0.5 s (the request and the capture ring filling) that
/// carry the tone, and how many frames there are.
fn tone_share(samples: &[i16]) -> (usize, usize) {
    let window = samples.get(4000..).unwrap_or_default();
    (tone_blocks(window, TONE_HZ), window.len() / 160)
}

/// The events of call `id`.
fn events(e: &Earshot, id: &str) -> Vec<serde_json::Value> {
    let call = http::get(e.http_addr(), &format!("/api/calls/{id}")).json();
    call["events"].as_array().unwrap().clone()
}

#[test]
fn talk_moves_the_microphone_from_one_live_call_to_another() {
    let _turn = MICROPHONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = support::temp_dir("talk-move");
    let _mic = ToneMicrophone::start(&dir);
    let e = talking_box(20);
    let first = Caller::new();
    let ok_first = first.call(e.sip_addr(), "talk-move-1");
    let media_first = CallerMedia::start(&first, ok_first.sdp_audio().unwrap());
    let id_first = live_call_id(&e);
    let second = Caller::new();
    let ok_second = second.call(e.sip_addr(), "talk-move-2");
    let media_second = CallerMedia::start(&second, ok_second.sdp_audio().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let id_second = loop {
        let live = http::get(e.http_addr(), "/api/live").json();
        let other = live["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["id"].as_str())
            .find(|id| *id != id_first)
            .map(str::to_owned);
        if let Some(id) = other {
            break id;
        }
        assert!(Instant::now() < deadline, "no second live call: {live}");
        std::thread::sleep(Duration::from_millis(100));
    };

    media_first.discard();
    let response = talk(&e, &id_first, json!({ "on": true }));
    assert_eq!(response.status, 200, "{}", response.text());
    let to_first = media_first.receive(Duration::from_secs(3));
    media_second.discard();
    let response = talk(&e, &id_second, json!({ "on": true }));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["moved_from"], id_first.as_str());
    // The first caller's packets queue in its socket meanwhile: read after, they are all
    // from after the move.
    let to_second = media_second.receive(Duration::from_secs(3));
    let first_after = media_first.receive(Duration::from_secs(1));
    let response = talk(&e, &id_second, json!({ "on": false }));
    assert_eq!(response.status, 200, "{}", response.text());
    // The call task takes the request in turn with its other inputs: hang up once it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http::get(e.http_addr(), "/api/live").json()["calls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["talk"] == true)
    {
        assert!(Instant::now() < deadline, "talk never went off");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.send_in_dialog("BYE", &ok_first, e.sip_addr(), 2);
    second.send_in_dialog("BYE", &ok_second, e.sip_addr(), 2);

    let (tone, frames) = tone_share(&to_first);
    assert!(
        tone * 10 >= frames * 9,
        "first call: {tone} of {frames} frames are the tone"
    );
    let (tone, frames) = tone_share(&to_second);
    assert!(
        tone * 10 >= frames * 9,
        "second call: {tone} of {frames} frames are the tone"
    );
    let (tone, frames) = tone_share(&first_after);
    assert!(
        frames >= 150,
        "{frames} frames to the first caller after the move"
    );
    assert_eq!(
        tone, 0,
        "the first caller still heard the microphone after the move"
    );

    std::thread::sleep(Duration::from_millis(500));
    let stopped = |id: &str| -> Vec<String> {
        events(&e, id)
            .iter()
            .filter(|ev| ev["type"] == "talk_stopped")
            .map(|ev| ev["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(stopped(&id_first), ["moved"]);
    assert_eq!(stopped(&id_second), ["released"]);
}

#[test]
fn without_a_microphone_talk_is_refused_with_409_and_the_call_goes_on() {
    let e = Earshot::start("[audio]\ninput = \"none\"\n");
    let caller = Caller::new();
    let ok = caller.call(e.sip_addr(), "talk-back-none");
    let media = CallerMedia::start(&caller, ok.sdp_audio().unwrap());
    let id = live_call_id(&e);
    let response = talk(&e, &id, json!({ "on": true }));
    assert_eq!(response.status, 409, "{}", response.text());
    assert!(
        response.text().contains("[audio].input"),
        "{}",
        response.text()
    );
    // Malformed bodies are 400s, not talk.
    let response = talk(&e, &id, json!({ "on": "yes" }));
    assert_eq!(response.status, 400, "{}", response.text());
    // The call goes on: media keeps flowing and it is still live.
    let heard = media.receive(Duration::from_secs(2));
    assert!(heard.len() >= 8000, "{} samples after the 409", heard.len());
    let live = http::get(e.http_addr(), "/api/live").json();
    assert_eq!(live["calls"][0]["id"], id.as_str());
    assert_eq!(live["calls"][0]["talk"], false);
    caller.send_in_dialog("BYE", &ok, e.sip_addr(), 2);
}
