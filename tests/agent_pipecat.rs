//! The agent bridge against a real voice-agent framework: pipecat's `TwilioFrameSerializer`
//! over its FastAPI WebSocket transport (tests/agents/pipecat_agent.py, in the venv the test
//! command makes). A SIPp caller with known audio and an RFC 4733 `#`, and a Twilio-sourced
//! call, are bridged to it: the agent receives the audio and the digit, the caller gets the
//! agent's reply, and the agent's auto hang-up (Twilio's call REST, answered by earshot) ends
//! the call with a BYE or a closed stream.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

mod support;
mod twilio_client;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use support::pcap::{self, RtpPacket};
use support::sipp::{self, Scenario};
use support::{Earshot, free_tcp_port, free_udp_tcp_port};
use twilio_client::{Plan, TwilioSide};

const TOKEN: &str = "pipecat-test-api-token-0123456789";
/// The agent's reply: a 660 Hz tone, easy to find in the recording.
const REPLY_HZ: f64 = 660.0;

/// One pipecat agent process.
struct Agent {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Agent {
    /// Starts the agent; its hang-up POSTs go to earshot's HTTP API at `api_port`.
    fn start(dir: &Path, api_port: u16) -> Agent {
        let python = std::env::var("EARSHOT_AGENT_PYTHON").unwrap_or_else(|_| {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/agent-venv/bin/python");
            assert!(
                venv.exists(),
                "no pipecat venv: run the README's test command (scripts/test.sh), which makes it"
            );
            venv.display().to_string()
        });
        let out = dir.join("agent");
        std::fs::create_dir_all(&out).unwrap();
        let reply = dir.join("reply.wav");
        write_tone(&reply, REPLY_HZ, 1500);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents/pipecat_agent.py");
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut child = Command::new(python)
            .arg(script)
            .args(["--port", "0", "--hangup-on-digit", "#"])
            .arg("--out")
            .arg(&out)
            .arg("--reply-wav")
            .arg(&reply)
            .arg("--twilio-api-base")
            .arg(format!("http://127.0.0.1:{api_port}"))
            .args(["--auth-token", TOKEN])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        // Importing pipecat takes a few seconds on a busy box.
        let addr = rx
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|_| {
                panic!(
                    "pipecat agent did not start:\n{}",
                    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
                )
            });
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Agent { child, port, out }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// The agent's report of its one call, once written.
    fn report(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = std::fs::read_dir(&self.out)
                .unwrap()
                .flatten()
                .map(|f| f.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"));
            if let Some(path) = found
                && let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(value) = serde_json::from_str(&text)
            {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "no agent report in {:?}",
                self.out
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The caller audio the agent received (8 kHz).
    fn heard(&self) -> Vec<i16> {
        let wav = std::fs::read_dir(&self.out)
            .unwrap()
            .flatten()
            .map(|f| f.path())
            .find(|p| p.to_string_lossy().ends_with("-in.wav"))
            .unwrap();
        let reader = hound::WavReader::open(wav).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        reader.into_samples::<i16>().map_while(Result::ok).collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_tone(path: &Path, hz: f64, ms: u32) {
    let tone: Vec<i16> = (0..ms * 8)
        .map(|i| ((2.0 * std::f64::consts::PI * hz * f64::from(i) / 8000.0).sin() * 8000.0) as i16)
        .collect();
    support::write_wav_8k(path, &tone);
}

/// Share of a signal's energy at `hz` (Goertzel over the whole slice).
fn tone_share(samples: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &x in samples {
        let x = f64::from(x);
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
        energy += x * x;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A pure tone of N samples has Goertzel power N²A²/4 and energy NA²/2.
    (2.0 * power / samples.len().max(1) as f64) / energy.max(1.0)
}

/// The one recording of the test's earshot, as (left, right), once it is finished.
fn recording(e: &Earshot) -> (Vec<i16>, Vec<i16>) {
    let dir = e.dir().join("recordings");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    loop {
        let wav = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|f| f.path())
            .find(|p| p.extension().is_some_and(|x| x == "wav"));
        if let Some(wav) = wav
            && let Ok(reader) = hound::WavReader::open(&wav)
        {
            let samples: Vec<i16> = reader.into_samples::<i16>().map_while(Result::ok).collect();
            if !samples.is_empty() && last == Some(samples.len()) {
                let left = samples.iter().step_by(2).copied().collect();
                let right = samples.iter().skip(1).step_by(2).copied().collect();
                return (left, right);
            }
            last = Some(samples.len());
        }
        assert!(Instant::now() < deadline, "no finished recording");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The agent's reply is in what earshot sent the caller: a loud stretch of 660 Hz.
fn assert_reply_sent(right: &[i16]) {
    let loud: Vec<i16> = right
        .chunks(160)
        .filter(|f| f.iter().map(|&s| f64::from(s).abs()).sum::<f64>() / 160.0 > 1000.0)
        .flatten()
        .copied()
        .collect();
    assert!(
        loud.len() >= 8000,
        "the agent's reply reached the caller for {} ms only",
        loud.len() / 8
    );
    let share = tone_share(&loud, REPLY_HZ);
    assert!(
        share > 0.8,
        "the audio sent is not the agent's tone ({share:.2})"
    );
}

/// The history's record of the test's one call.
async fn stored_call(e: &Earshot) -> serde_json::Value {
    let side = TwilioSide::new(e.http_addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = side.get_authorized("/api/calls?limit=5", TOKEN).await;
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(call) = list["calls"].as_array().and_then(|c| c.first())
            && call["status"] == "ended"
        {
            let id = call["id"].as_str().unwrap().to_owned();
            let (_, body) = side
                .get_authorized(&format!("/api/calls/{id}"), TOKEN)
                .await;
            return serde_json::from_str(&body).unwrap();
        }
        assert!(Instant::now() < deadline, "no ended call: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn event_types(call: &serde_json::Value) -> Vec<String> {
    call["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["type"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn earshot_with_agent(api_port: u16, agent: &Agent, extra: &str) -> Earshot {
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{api_port}\"\ntoken = {TOKEN:?}\n\
         [agent]\nurl = {:?}\nconnect_timeout_ms = 10000\n\
         [log]\nlevel = \"info,earshot=debug\"\n{extra}",
        agent.url()
    );
    Earshot::start(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_call_reaches_pipecat_hears_it_and_its_hang_up_sends_bye() {
    let dir = support::temp_dir("pipecat-sip");
    let api_port = free_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let agent = Agent::start(&dir, api_port);
    let e = earshot_with_agent(api_port, &agent, "");

    // 4 s of the test signal, then `#` (RFC 4733 event 11): the agent hangs up on it.
    let codes = pcap::coded_test_signal(Law::Ulaw, 4000);
    let mut packets: Vec<RtpPacket> = pcap::g711_packets(0, 1000, &codes);
    packets.extend(pcap::dtmf_packets(101, 1000 + codes.len() as u32, 11, 800));
    let capture = e.dir().join("caller.pcap");
    pcap::write_rtp_pcap(&capture, 0x1234_5678, 100, &packets).unwrap();
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[
            ("PCAP", capture.display().to_string()),
            ("BYE_TIMEOUT_MS", "20000".into()),
        ],
    );
    let sipp_port = free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let outcome = tokio::task::spawn_blocking({
        let dir = e.dir().to_owned();
        let sip = e.sip_addr();
        move || {
            sipp::start(&dir, &scenario, Some(sip), sipp_port, &["-m", "1"])
                .wait(Duration::from_secs(60))
        }
    })
    .await
    .unwrap();
    // SIPp succeeds only when earshot's BYE came: the agent's hang-up reached the call REST.
    assert!(
        outcome.all_passed(1),
        "SIPp: {:?} {}\n--- earshot ---\n{}\n--- agent ---\n{}",
        outcome.exit_code,
        outcome.errors,
        e.log_tail(40),
        std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
    );

    let report = agent.report();
    let call = stored_call(&e).await;
    let params = &report["custom_parameters"];
    assert_eq!(params["callId"], call["id"], "{report}");
    assert_eq!(params["source"], "sip");
    assert_eq!(params["caller"], "2000");
    assert_eq!(params["callee"], "1000");
    let start = &report["start"]["start"];
    assert_eq!(start["mediaFormat"]["encoding"], "audio/x-mulaw");
    assert_eq!(start["mediaFormat"]["sampleRate"], 8000);
    assert!(
        report["digits"].as_str().unwrap().contains('#'),
        "digits: {}",
        report["digits"]
    );
    assert_eq!(report["hangup"]["post"]["status"], 200, "{report}");

    // The agent heard the caller sample for sample (G.711 both ways, a clean network).
    let heard = agent.heard();
    let sent = earshot::media::g711::Law::Ulaw;
    let mut signal = vec![0i16; codes.len()];
    sent.decode(&codes, &mut signal);
    let probe = signal.get(800..960).unwrap();
    let lag = heard
        .windows(160)
        .position(|w| w == probe)
        .expect("the caller's audio is not in what the agent heard");
    let compared = (heard.len() - lag).min(signal.len() - 800);
    let same = (0..compared)
        .filter(|&i| heard[lag + i] == signal[800 + i])
        .count();
    assert!(
        compared >= 16000 && same * 100 >= compared * 99,
        "the agent heard {same} of {compared} samples as sent"
    );

    let (_, right) = recording(&e);
    assert_reply_sent(&right);
    assert_eq!(call["end_reason"], "agent hangup", "{call}");
    assert!(call["agent"]["connect_ms"].is_u64(), "{call}");
    let types = event_types(&call);
    assert!(types.contains(&"agent_connected".to_owned()), "{types:?}");
    assert!(!types.contains(&"agent_fallback".to_owned()), "{types:?}");

    let (_, metrics) = TwilioSide::new(e.http_addr())
        .get_authorized("/metrics", TOKEN)
        .await;
    assert!(
        metrics.contains("earshot_agent_connect_seconds_count 1"),
        "{metrics}"
    );
    assert!(e.panics().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_call_is_bridged_to_pipecat_too() {
    let dir = support::temp_dir("pipecat-twilio");
    let api_port = free_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let agent = Agent::start(&dir, api_port);
    let twilio = format!(
        "[twilio]\nenabled = true\nauth_token = {:?}\npublic_url = {:?}\n",
        twilio_client::AUTH_TOKEN,
        twilio_client::PUBLIC_URL
    );
    let e = earshot_with_agent(api_port, &agent, &twilio);

    let codes = pcap::coded_test_signal(Law::Ulaw, 4000);
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let frames = codes.len() / 160;
    let plan = Plan {
        dtmf: Some((frames - 1, '#')),
        // Twilio stays on until earshot closes the stream (the agent hung up).
        stop: false,
        ..Plan::new(&call_sid, &token, codes.clone())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), side.stream(&plan))
        .await
        .expect("the stream was not closed after the agent hung up");
    assert_eq!(outcome.connect_error, None);
    assert_eq!(outcome.close, Some(1000), "{:?}", outcome.kinds());
    assert_eq!(outcome.bad_media, 0);

    let report = agent.report();
    assert_eq!(report["custom_parameters"]["source"], "twilio", "{report}");
    // A Twilio call keeps its own CallSid towards the agent.
    assert_eq!(report["call_sid"], call_sid.as_str());
    assert!(report["digits"].as_str().unwrap().contains('#'));
    assert_eq!(report["hangup"]["post"]["status"], 200, "{report}");
    assert!(report["audio_in"]["samples"].as_u64().unwrap() >= 16000);

    let (_, right) = recording(&e);
    assert_reply_sent(&right);
    let call = stored_call(&e).await;
    assert_eq!(call["end_reason"], "agent hangup", "{call}");
    assert!(e.panics().is_empty());
}
