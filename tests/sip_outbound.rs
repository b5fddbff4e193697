//! Outbound calls against a real peer: a SIPp trunk (registrar and callee in one) that
//! challenges earshot's INVITE with digest, checks the credentials, rings, answers and streams
//! a tone. earshot places the call through `POST /api/calls`; the recording's left channel
//! must hold the callee's tone, the callee must get earshot's RTP, and the call's events must
//! read placed, ringing, answered, ended. A target `[calls].outbound_allow` does not allow gets
//! 403 and no INVITE. Early media (a 183 with SDP, then the tone, then the answer) reaches the
//! recording before the answer. baresip in auto-answer takes a call. A busy callee (a bare UDP
//! socket answering 486) fails the call with its status; the same callee serves the post-dial
//! delay measurement. A callee answering 422 gets the session interval its Min-SE asks for.
//! earshot's side starts at the answer: over a callee's early media the greeting is not played
//! (the recording's right channel is silent until the 200, then holds the whole greeting), and a
//! call that fails after a 183 without audio leaves no recording at all.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use support::pcap;
use support::sipp::{self, Scenario};
use support::{Earshot, only_recording, temp_dir, tone_blocks};

const NUMBER: &str = "+15550001111";
const TONE_HZ: f64 = 1000.0;
const TONE_MS: u32 = 2000;

/// A capture of `TONE_MS` of a pure tone, μ-law, for the callee to stream.
fn tone_pcap(dir: &Path) -> String {
    let pcm: Vec<i16> = (0..TONE_MS * 8)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (12000.0 * (2.0 * std::f64::consts::PI * TONE_HZ * t).sin()) as i16
        })
        .collect();
    let mut codes = vec![0u8; pcm.len()];
    Law::Ulaw.encode(&pcm, &mut codes);
    let packets = pcap::g711_packets(0, 1000, &codes);
    let path = dir.join("callee.pcap");
    pcap::write_rtp_pcap(&path, 0x0bad_cafe, 100, &packets).unwrap();
    path.display().to_string()
}

fn post_call(e: &Earshot, body: &str) -> http::Response {
    http::request(
        e.http_addr(),
        "POST",
        "/api/calls",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

/// Hangs up a live call through the API.
fn hang_up(e: &Earshot, id: &str) {
    http::hang_up(e.http_addr(), id, &[]);
}

fn call_detail(e: &Earshot, id: &str) -> serde_json::Value {
    http::request(e.http_addr(), "GET", &format!("/api/calls/{id}"), &[], b"")
        .unwrap()
        .json()
}

/// The call's first stored event of type `kind`.
fn event(detail: &serde_json::Value, kind: &str) -> serde_json::Value {
    detail["events"]
        .as_array()
        .and_then(|events| events.iter().find(|ev| ev["type"] == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} event: {detail}"))
}

/// Once the call's recording is complete: its 20 ms blocks of the callee's tone, on the left
/// channel (what the call heard from the far end).
fn left_tone_blocks(e: &Earshot, id: &str) -> usize {
    wait_for("the recording finished", e, Duration::from_secs(10), || {
        call_detail(e, id)["recording"]["state"] == "complete"
    });
    let wav = only_recording(e.dir());
    let mut reader = hound::WavReader::open(&wav).unwrap();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    tone_blocks(&left, TONE_HZ)
}

/// The types of the call's stored events, in order.
fn event_types(detail: &serde_json::Value) -> Vec<String> {
    detail["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|ev| ev["type"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for(what: &str, e: &Earshot, limit: Duration, done: impl FnMut() -> bool) {
    e.wait_for(what, limit, done);
}

/// INVITEs SIPp received, from its `-trace_msg` log in `dir`.
fn invites_in_trace(dir: &Path) -> Vec<String> {
    let mut invites = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("uas_outbound") && name.ends_with("_messages.log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            invites.extend(
                text.lines()
                    .filter(|l| l.starts_with("INVITE "))
                    .map(str::to_owned),
            );
        }
    }
    invites
}

#[test]
fn call_placed_through_a_challenging_trunk_is_answered_recorded_and_hung_up() {
    let dir = temp_dir("outbound-callee");
    let trunk_port = sipp::port();
    let scenario = Scenario::load(
        "uas_outbound.xml",
        &[
            ("NONCE", "n0nce-outbound".into()),
            ("NUMBER", NUMBER.replace('+', "\\+")),
            ("PCAP", tone_pcap(&dir)),
            ("BYE_TIMEOUT_MS", "30000".into()),
        ],
    );
    // Two calls for SIPp: earshot's registration, then the INVITE.
    let callee = sipp::start(
        &dir,
        &scenario,
        None,
        trunk_port,
        &["-m", "2", "-trace_msg"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let e = Earshot::start(&format!(
        "[log]\nlevel = \"info,earshot=debug\"\n\
         [calls]\noutbound_allow = [\"+1555000*\"]\n\
         [[sip.trunk]]\nname = \"provider\"\nregistrar = \"127.0.0.1:{trunk_port}\"\n\
         username = \"trunkuser\"\npassword = \"s3cret\"\ndomain = \"earshot.test\"\n"
    ));

    // Not allowed: refused before anything is sent.
    let refused = post_call(&e, r#"{"to": "+442071234567"}"#);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.error_code(), "forbidden");
    let malformed = post_call(&e, r#"{"to": "not a number"}"#);
    assert_eq!(malformed.status, 422, "{}", malformed.text());
    let unknown_trunk = post_call(&e, &format!(r#"{{"to": "{NUMBER}", "trunk": "nope"}}"#));
    assert_eq!(unknown_trunk.status, 422, "{}", unknown_trunk.text());

    let placed = post_call(&e, &format!(r#"{{"to": "{NUMBER}"}}"#));
    assert_eq!(placed.status, 201, "{}", placed.text());
    let record = placed.json();
    let first_key = placed
        .text()
        .trim_start_matches('{')
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(first_key, "\"id\"", "the record starts with its id");
    assert_eq!(record["direction"], "outbound");
    let id = record["id"].as_str().unwrap().to_owned();

    wait_for("the call answered", &e, Duration::from_secs(20), || {
        event_types(&call_detail(&e, &id)).contains(&"answered".to_owned())
    });
    // The callee's tone plays; then earshot hangs up.
    std::thread::sleep(Duration::from_millis(u64::from(TONE_MS) + 500));
    hang_up(&e, &id);

    let outcome = callee.wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 2, &e);
    wait_for("the call ended", &e, Duration::from_secs(10), || {
        call_detail(&e, &id)["status"] == "ended"
    });
    let detail = call_detail(&e, &id);
    let types = event_types(&detail);
    let position = |t: &str| {
        types
            .iter()
            .position(|x| x == t)
            .unwrap_or_else(|| panic!("no {t} event in {types:?}"))
    };
    assert!(position("started") < position("placed"));
    assert!(position("placed") < position("ringing"));
    assert!(position("ringing") < position("answered"));
    assert!(position("answered") < position("ended"));
    assert!(!types.contains(&"failed".to_owned()), "{types:?}");
    assert_eq!(detail["direction"], "outbound");
    assert_eq!(detail["callee"], NUMBER);

    // SIPp saw exactly the two INVITEs of the allowed call (challenged, then authorized),
    // never the refused target.
    let invites = invites_in_trace(&dir);
    assert_eq!(invites.len(), 2, "{invites:?}");
    assert!(
        invites
            .iter()
            .all(|l| l.contains(&format!("sip:{NUMBER}@earshot.test"))),
        "{invites:?}"
    );

    // The callee's tone is on the recording's left channel.
    let tone = left_tone_blocks(&e, &id);
    // 2 s of tone is 100 blocks; allow for the jitter buffer's start and the block alignment.
    assert!(
        tone >= 60,
        "{tone} blocks of the callee's tone on the left channel"
    );

    // The callee got earshot's audio for the whole answered call.
    let log = e.stderr_log();
    let sent: u64 = log
        .lines()
        .filter(|l| l.contains("call media finished"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("sent="))
                .and_then(|v| v.parse().ok())
        })
        .next()
        .unwrap_or(0);
    assert!(sent >= 75, "earshot sent {sent} RTP packets to the callee");
}

/// A SIPp callee running `file` (one call) and an earshot allowed to call it directly; the
/// call placed through the API, once answered: (earshot, the callee, the call id).
fn answered_by_sipp(
    dir: &Path,
    file: &str,
    vars: &[(&str, String)],
) -> (Earshot, sipp::Sipp, String) {
    answered_by_sipp_with(dir, file, vars, direct_config())
}

/// A SIPp callee running `file` for one call, started: it and its port.
fn sipp_callee(dir: &Path, file: &str, vars: &[(&str, String)]) -> (sipp::Sipp, u16) {
    let port = sipp::port();
    let callee = sipp::start(dir, &Scenario::load(file, vars), None, port, &["-m", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    (callee, port)
}

/// [`answered_by_sipp`] with earshot's configuration `config`.
fn answered_by_sipp_with(
    dir: &Path,
    file: &str,
    vars: &[(&str, String)],
    config: &str,
) -> (Earshot, sipp::Sipp, String) {
    let (callee, port) = sipp_callee(dir, file, vars);
    let e = Earshot::start(config);
    let placed = post_call(&e, &format!(r#"{{"to": "sip:bob@127.0.0.1:{port}"}}"#));
    assert_eq!(placed.status, 201, "{}", placed.text());
    let id = placed.json()["id"].as_str().unwrap().to_owned();
    wait_for("the call answered", &e, Duration::from_secs(20), || {
        event_types(&call_detail(&e, &id)).contains(&"answered".to_owned())
    });
    (e, callee, id)
}

/// Early media: the callee's tone, sent only between its 183 (with SDP) and its 200, reaches
/// the call's media path (the recording's left channel, as the speakers get it), and the
/// `ringing` event says early media.
#[test]
fn early_media_before_the_answer_reaches_the_recording() {
    let dir = temp_dir("outbound-early");
    let vars = [
        ("PCAP", tone_pcap(&dir)),
        // The whole tone plays before the answer.
        ("EARLY_MS", (TONE_MS + 500).to_string()),
        ("BYE_TIMEOUT_MS", "30000".into()),
    ];
    let (e, callee, id) = answered_by_sipp(&dir, "uas_early_media.xml", &vars);
    hang_up(&e, &id);
    sipp::assert_passed(&callee.wait(Duration::from_secs(20)), 1, &e);
    let tone = left_tone_blocks(&e, &id);
    assert_eq!(event(&call_detail(&e, &id), "ringing")["early_media"], true);
    assert!(
        tone >= 50,
        "{tone} blocks of early-media tone on the left channel"
    );
}

/// Whether each 20 ms block of `samples` is a tone of `hz`.
fn tone_at(samples: &[i16], hz: f64) -> Vec<bool> {
    samples
        .chunks_exact(160)
        .map(|block| tone_blocks(block, hz) == 1)
        .collect()
}

/// A placed call's greeting starts when the callee answers, not over its early media: the
/// callee streams a 1 kHz tone after its 183 and answers 500 ms after the tone ends. On the
/// recording (left what the callee sent, right what earshot sent it) the right channel is
/// silent while the early tone plays, and the whole greeting (a 400 Hz tone) comes after.
#[test]
fn a_placed_calls_greeting_starts_at_the_answer_not_over_early_media() {
    const GREETING_HZ: f64 = 400.0;
    let dir = temp_dir("outbound-early-greeting");
    let greeting_path = dir.join("greeting.wav");
    let greeting: Vec<i16> = (0..8000)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (12000.0 * (2.0 * std::f64::consts::PI * GREETING_HZ * t).sin()) as i16
        })
        .collect();
    support::write_wav_8k(&greeting_path, &greeting);
    let vars = [
        ("PCAP", tone_pcap(&dir)),
        ("EARLY_MS", (TONE_MS + 500).to_string()),
        ("BYE_TIMEOUT_MS", "30000".into()),
    ];
    let config = format!(
        "{}greeting = {:?}\n",
        direct_config(),
        greeting_path.display().to_string()
    );
    let (e, callee, id) = answered_by_sipp_with(&dir, "uas_early_media.xml", &vars, &config);
    // The 1 s greeting plays out after the answer, with margin.
    std::thread::sleep(Duration::from_secs(3));
    hang_up(&e, &id);
    sipp::assert_passed(&callee.wait(Duration::from_secs(20)), 1, &e);
    wait_for(
        "the recording finished",
        &e,
        Duration::from_secs(10),
        || call_detail(&e, &id)["recording"]["state"] == "complete",
    );
    let wav = only_recording(e.dir());
    let mut reader = hound::WavReader::open(&wav).unwrap();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let early = tone_at(&left, TONE_HZ);
    let said = tone_at(&right, GREETING_HZ);
    let early_blocks = early.iter().filter(|&&b| b).count();
    assert!(
        early_blocks >= 50,
        "{early_blocks} blocks of early media recorded"
    );
    let last_early = early.iter().rposition(|&b| b).unwrap();
    // Nothing of earshot's side while the callee's early media played.
    let loud_before = right
        .chunks_exact(160)
        .take(last_early)
        .filter(|block| {
            let energy: f64 = block.iter().map(|&s| f64::from(s).powi(2)).sum();
            (energy / 160.0).sqrt() > 300.0
        })
        .count();
    assert_eq!(loud_before, 0, "earshot spoke over the early media");
    // All of the greeting (50 blocks) after it.
    let greeting_blocks = said.iter().filter(|&&b| b).count();
    let first_said = said.iter().position(|&b| b).unwrap_or(0);
    assert!(
        first_said > last_early,
        "greeting from block {first_said}, early media until {last_early}"
    );
    assert!(
        greeting_blocks >= 45,
        "{greeting_blocks} blocks of the greeting after the answer"
    );
}

/// A callee that rings with a 183 and SDP but sends no audio, then answers 486: the call fails
/// before anything was heard or said, and leaves no recording — no file, and the call's record
/// names none.
#[test]
fn a_placed_call_failing_after_early_media_without_audio_leaves_no_recording() {
    let dir = temp_dir("outbound-early-busy");
    let (callee, port) = sipp_callee(&dir, "uas_early_then_busy.xml", &[]);
    let e = Earshot::start(direct_config());
    let placed = post_call(&e, &format!(r#"{{"to": "sip:bob@127.0.0.1:{port}"}}"#));
    assert_eq!(placed.status, 201, "{}", placed.text());
    let id = placed.json()["id"].as_str().unwrap().to_owned();
    wait_for("the call ended", &e, Duration::from_secs(20), || {
        call_detail(&e, &id)["status"] == "ended"
    });
    sipp::assert_passed(&callee.wait(Duration::from_secs(20)), 1, &e);
    let detail = call_detail(&e, &id);
    assert_eq!(event(&detail, "ringing")["early_media"], true);
    assert_eq!(event(&detail, "failed")["status"], 486);
    assert!(detail["recording"].is_null(), "{detail}");
    let wavs: Vec<_> = std::fs::read_dir(e.dir().join("recordings"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert!(wavs.is_empty(), "recordings of a failed call: {wavs:?}");
}

/// A callee that answers every INVITE with 486 Busy Here: a bare UDP socket.
struct BusyCallee {
    socket: std::net::UdpSocket,
}

impl BusyCallee {
    fn new() -> Self {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Self { socket }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Waits for the next INVITE (skipping ACKs of earlier 486s); returns when it came.
    fn invite(&self) -> (Instant, String, std::net::SocketAddr) {
        let mut buf = [0u8; 65535];
        loop {
            let (n, from) = self.socket.recv_from(&mut buf).unwrap();
            if buf.starts_with(b"INVITE ") {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                return (Instant::now(), text, from);
            }
        }
    }

    /// Answers `invite` with 486.
    fn busy(&self, invite: &str, to: std::net::SocketAddr) {
        let header = |name: &str| {
            invite
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                .unwrap()
                .to_owned()
        };
        let busy = format!(
            "SIP/2.0 486 Busy Here\r\n{}\r\n{}\r\n{};tag=busy\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
            header("via"),
            header("from"),
            header("to"),
            header("call-id"),
            header("cseq"),
        );
        self.socket.send_to(busy.as_bytes(), to).unwrap();
    }
}

fn direct_config() -> &'static str {
    "[calls]\noutbound_allow = [\"sip:bob@127.0.0.1:*\"]\n"
}

#[test]
fn busy_callee_fails_the_call_with_486() {
    let callee = BusyCallee::new();
    let e = Earshot::start(direct_config());
    let placed = post_call(
        &e,
        &format!(r#"{{"to": "sip:bob@127.0.0.1:{}"}}"#, callee.port()),
    );
    assert_eq!(placed.status, 201, "{}", placed.text());
    let id = placed.json()["id"].as_str().unwrap().to_owned();
    let (_, invite, from) = callee.invite();
    callee.busy(&invite, from);
    wait_for("the call ended", &e, Duration::from_secs(10), || {
        call_detail(&e, &id)["status"] == "ended"
    });
    let detail = call_detail(&e, &id);
    let failed = event(&detail, "failed");
    assert_eq!(failed["status"], 486);
    assert_eq!(failed["reason"], "rejected");
    assert_eq!(detail["end_reason"], "rejected 486");
    assert!(detail["answered_at"].is_null());
}

/// RFC 4028 §7.4 against SIPp: a callee whose Min-SE is an hour answers 422; earshot retries
/// with Session-Expires and Min-SE at 3600 (the scenario checks both headers), the call is
/// answered with that timer and earshot hangs up.
#[test]
fn a_callee_answering_422_gets_the_interval_it_asks_for() {
    let dir = temp_dir("outbound-422");
    let vars = [("BYE_TIMEOUT_MS", "30000".to_owned())];
    let (e, callee, id) = answered_by_sipp(&dir, "uas_session_interval.xml", &vars);
    hang_up(&e, &id);
    sipp::assert_passed(&callee.wait(Duration::from_secs(30)), 1, &e);
    wait_for("the call ended", &e, Duration::from_secs(10), || {
        call_detail(&e, &id)["status"] == "ended"
    });
    assert!(
        event_types(&call_detail(&e, &id))
            .iter()
            .all(|t| t != "failed")
    );
}

/// Post-dial delay added by earshot, for BENCHMARKS.md: from sending `POST /api/calls` to the
/// INVITE arriving at the callee (a UDP socket here, answering 486 so each call ends at once),
/// over `CALLS` calls. In the suite it checks that every request is answered 201 and puts
/// an INVITE on the wire; the figures are printed, never asserted. Run with
/// `cargo test --profile ci --test sip_outbound -- --nocapture post_dial_delay`.
#[test]
fn post_dial_delay() {
    const CALLS: usize = 200;
    let callee = BusyCallee::new();
    let e = Earshot::start(direct_config());
    let body = format!(r#"{{"to": "sip:bob@127.0.0.1:{}"}}"#, callee.port());
    let mut delays = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        let http = e.http_addr();
        let body = body.clone();
        let post = std::thread::spawn(move || {
            http::request(
                http,
                "POST",
                "/api/calls",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .unwrap()
            .status
        });
        let (arrived, invite, from) = callee.invite();
        delays.push(arrived - started);
        assert_eq!(post.join().unwrap(), 201);
        callee.busy(&invite, from);
    }
    report("earshot (POST /api/calls sent", &mut delays);
    drop(e);

    // The peer in the same run: baresip asked to dial over its control socket (ctrl_tcp,
    // netstring JSON), from the command leaving the client to its INVITE at the same callee.
    let dir = temp_dir("post-dial-baresip");
    let silence = dir.join("silence.wav");
    support::write_wav_8k(&silence, &[0; 8000]);
    let peer = support::baresip::configure(&dir, &silence, ";regint=0;audio_codecs=PCMU");
    // Not sip_listen + 1: baresip takes that port for SIP over TLS.
    let ctrl =
        std::iter::repeat_with(|| support::free_tcp_port(std::net::Ipv4Addr::LOCALHOST).unwrap())
            .find(|&p| p != peer.port + 1)
            .unwrap();
    let config = peer.cfg.join("config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n"
    ));
    std::fs::write(&config, text).unwrap();
    let baresip = peer.spawn(600);
    let mut control = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            std::net::TcpStream::connect(("127.0.0.1", ctrl)).ok()
        })
        .expect("baresip's ctrl_tcp socket");
    let mut delays = Vec::with_capacity(CALLS);
    for n in 0..CALLS {
        let command = format!(
            r#"{{"command":"dial","params":"sip:bob@127.0.0.1:{}","token":"{n}"}}"#,
            callee.port()
        );
        let started = Instant::now();
        std::io::Write::write_all(
            &mut control,
            format!("{}:{command},", command.len()).as_bytes(),
        )
        .unwrap();
        let (arrived, invite, from) = callee.invite();
        delays.push(arrived - started);
        assert!(
            invite.contains("baresip"),
            "not baresip's INVITE:\n{invite}"
        );
        callee.busy(&invite, from);
    }
    support::baresip::stop(baresip);
    report("baresip 1.0 (dial command sent", &mut delays);
}

fn report(who: &str, delays: &mut [Duration]) {
    delays.sort();
    let at = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    println!(
        "post-dial delay, {who} -> INVITE received), {} calls: p50 {:?}, p99 {:?}, max {:?}",
        delays.len(),
        at(0.50),
        at(0.99),
        delays[delays.len() - 1]
    );
}

/// A real softphone as the callee: baresip in auto-answer. earshot places the call directly to
/// it; baresip answers and hears earshot's greeting (its decoded audio is dumped to a file),
/// and the API hangs up.
#[test]
fn baresip_in_auto_answer_takes_earshots_call_and_hears_the_greeting() {
    let dir = temp_dir("outbound-baresip");
    let greeting_path = dir.join("greeting.wav");
    let greeting: Vec<i16> = pcap::test_signal(3000);
    support::write_wav_8k(&greeting_path, &greeting);
    // What baresip says: a quiet tone, longer than the call (baresip hangs up when its file
    // source ends).
    let source_path = dir.join("callee.wav");
    let source: Vec<i16> = (0..8000 * 20)
        .map(|i| ((f64::from(i) * 0.345).sin() * 300.0) as i16)
        .collect();
    support::write_wav_8k(&source_path, &source);
    let peer = support::baresip::configure(
        &dir,
        &source_path,
        ";regint=0;audio_codecs=PCMU;answermode=auto",
    );
    let port = peer.port;
    let mut baresip = peer.spawn(20);
    std::thread::sleep(Duration::from_millis(500));
    let e = Earshot::start(&format!(
        "[calls]\ngreeting = {:?}\noutbound_allow = [\"sip:baresip@127.0.0.1:{port}\"]\n",
        greeting_path.display().to_string()
    ));
    let placed = post_call(&e, &format!(r#"{{"to": "sip:baresip@127.0.0.1:{port}"}}"#));
    assert_eq!(placed.status, 201, "{}", placed.text());
    let id = placed.json()["id"].as_str().unwrap().to_owned();
    wait_for("baresip answered", &e, Duration::from_secs(10), || {
        event_types(&call_detail(&e, &id)).contains(&"answered".to_owned())
    });
    // The greeting (3 s) plays out, with margin for the media gate's grace.
    std::thread::sleep(Duration::from_secs(4));
    hang_up(&e, &id);
    wait_for("the call ended", &e, Duration::from_secs(10), || {
        call_detail(&e, &id)["status"] == "ended"
    });
    let _ = baresip.kill();
    let out = baresip.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("Call established"),
        "baresip:\n{log}\n--- earshot ---\n{}",
        e.log_tail(20)
    );
    let heard = support::baresip::heard(&peer.dump);
    // The greeting is loud (about -12 dBFS); silence or comfort noise is not.
    let loud = heard
        .chunks(160)
        .filter(|block| {
            let energy: f64 = block.iter().map(|&s| f64::from(s).powi(2)).sum();
            (energy / block.len() as f64).sqrt() > 2000.0
        })
        .count();
    assert!(
        loud >= 25,
        "baresip heard {loud} loud 20 ms blocks of the greeting"
    );
}
