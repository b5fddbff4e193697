//! SIP trunk calls against real peers on loopback: SIPp callers (PCMU, PCMA, RFC 4733 and
//! INFO DTMF, CANCEL, hold/resume, earshot hanging up, TCP, 100 concurrent calls), a SIPp
//! registrar with digest authentication, and baresip calling earshot.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use support::Earshot;
use support::pcap::{self, RtpPacket};
use support::sipp::{self, Scenario};

/// Debug logs of the call path, which these tests read for DTMF and media counters.
const DEBUG_LOG: &str = "[log]\nlevel = \"info,earshot=debug\"\n";

/// Writes a capture of `ms` of the test signal in `law` followed by one RFC 4733 key press of
/// `digit`, and returns its path.
fn caller_pcap(e: &Earshot, law: Law, ms: u32, digit: u8) -> String {
    let codes = pcap::coded_test_signal(law, ms);
    let pt = match law {
        Law::Ulaw => 0,
        Law::Alaw => 8,
    };
    let mut packets: Vec<RtpPacket> = pcap::g711_packets(pt, 1000, &codes);
    let dtmf_ts = 1000 + codes.len() as u32;
    packets.extend(pcap::dtmf_packets(101, dtmf_ts, digit, 800));
    let path = e.dir().join(format!("caller-{pt}.pcap"));
    pcap::write_rtp_pcap(&path, 0x1234_5678, 100, &packets).unwrap();
    path.display().to_string()
}

fn call_vars(
    pcap: &str,
    pcap_ms: u32,
    codecs: &str,
    answer_pt: u8,
    hold_ms: u32,
) -> Vec<(&'static str, String)> {
    let rtpmaps = codecs
        .split(' ')
        .map(|pt| match pt {
            "0" => "a=rtpmap:0 PCMU/8000".to_string(),
            "8" => "a=rtpmap:8 PCMA/8000".to_string(),
            other => format!("a=rtpmap:{other} X/8000"),
        })
        .collect::<Vec<_>>()
        .join("\n      ");
    vec![
        ("CODECS", codecs.to_string()),
        ("PTS", codecs.to_string()),
        ("RTPMAPS", rtpmaps),
        ("ANSWER_PT", answer_pt.to_string()),
        ("PCAP", pcap.to_string()),
        // Audio, plus the key press and some slack for the jitter buffer.
        ("PCAP_MS", (pcap_ms + 500).to_string()),
        ("HOLD_MS", hold_ms.to_string()),
        ("CALLER", "+15551234567".to_string()),
        ("CALLEE", "1000".to_string()),
    ]
}

/// Media counters the call task logs when a call ends: (received, sent).
fn media_counters(log: &str) -> Vec<(u64, u64)> {
    log.lines()
        .filter(|l| l.contains("call media finished"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            (field("received"), field("sent"))
        })
        .collect()
}

fn run_call(law: Law, codecs: &str, answer_pt: u8, digit: u8, digit_char: char) {
    let e = Earshot::start(DEBUG_LOG);
    let pcap = caller_pcap(&e, law, 2000, digit);
    let scenario = Scenario::load(
        "uac_call.xml",
        &call_vars(&pcap, 2000, codecs, answer_pt, 300),
    );
    let run = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    );
    let outcome = run.wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
    std::thread::sleep(Duration::from_millis(300));
    let log = e.stderr_log();
    assert!(
        log.lines().any(|l| l.contains("DTMF")
            && l.contains("via=rfc4733")
            && l.contains(&format!("digit={digit_char}"))),
        "RFC 4733 digit {digit_char} not seen:\n{}",
        e.log_tail(30)
    );
    assert!(
        log.lines()
            .any(|l| l.contains("DTMF") && l.contains("digit=7") && l.contains("sip-info")),
        "INFO digit not seen:\n{}",
        e.log_tail(30)
    );
    let counters = media_counters(&log);
    let (received, sent) = counters.first().copied().unwrap_or_default();
    // 100 audio packets plus the key press; earshot streams for the whole call.
    assert!(received >= 100, "earshot received {received} RTP packets");
    assert!(sent >= 100, "earshot sent {sent} RTP packets");
}

#[test]
fn pcmu_call_streams_rtp_and_reports_rfc4733_and_info_dtmf() {
    run_call(Law::Ulaw, "0 8", 0, 1, '1');
}

#[test]
fn pcma_call_follows_the_callers_preference() {
    run_call(Law::Alaw, "8 0", 8, 11, '#');
}

#[test]
fn cancel_while_ringing_gets_487() {
    let e = Earshot::start("[calls]\nring_ms = 3000\n");
    let scenario = Scenario::load("uac_cancel.xml", &[]);
    let outcome = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    )
    .wait(Duration::from_secs(20));
    sipp::assert_passed(&outcome, 1, &e);
    assert!(e.options_ok());
}

/// A SIPp caller streams `audio_ms` of audio and waits for earshot's BYE; returns how long the
/// call lasted.
fn call_until_earshot_hangs_up(config: &str, audio_ms: u32) -> Duration {
    let e = Earshot::start(config);
    let pcap = caller_pcap(&e, Law::Ulaw, audio_ms, 5);
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[("PCAP", pcap), ("BYE_TIMEOUT_MS", "10000".into())],
    );
    let started = Instant::now();
    let outcome = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    )
    .wait(Duration::from_secs(20));
    sipp::assert_passed(&outcome, 1, &e);
    started.elapsed()
}

#[test]
fn earshot_hangs_up_at_max_duration() {
    let lasted = call_until_earshot_hangs_up("[calls]\nmax_duration_secs = 2\n", 6000);
    assert!(lasted < Duration::from_secs(6), "BYE came after {lasted:?}");
}

#[test]
fn earshot_hangs_up_when_rtp_stops() {
    // One second of audio, then nothing: the silence timeout ends the call.
    let lasted = call_until_earshot_hangs_up("[rtp]\nsilence_timeout_secs = 2\n", 1000);
    assert!(
        lasted >= Duration::from_secs(3) && lasted < Duration::from_secs(8),
        "BYE after {lasted:?}"
    );
}

#[test]
fn hold_and_resume_by_reinvite() {
    let e = Earshot::start(DEBUG_LOG);
    let pcap = caller_pcap(&e, Law::Ulaw, 1000, 5);
    let scenario = Scenario::load("uac_hold.xml", &[("PCAP", pcap)]);
    let outcome = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    )
    .wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
    let log = e.stderr_log();
    assert!(
        log.contains("direction=RecvOnly"),
        "hold not applied:\n{}",
        e.log_tail(30)
    );
}

#[test]
fn call_over_tcp() {
    let e = Earshot::start(DEBUG_LOG);
    let pcap = caller_pcap(&e, Law::Ulaw, 1000, 2);
    let scenario = Scenario::load("uac_call.xml", &call_vars(&pcap, 1000, "0", 0, 200));
    let outcome = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1", "-t", "t1"],
    )
    .wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
}

/// SIPp 3.6's `verifyauth` checks MD5 digests only; SHA-256 (RFC 8760) is covered by the
/// RFC 7616 vectors in `sip::auth`.
fn register_with(algorithm: &str) {
    let registrar_port = sipp::port();
    let dir = support::temp_dir("registrar");
    let scenario = Scenario::load(
        "uas_registrar.xml",
        &[
            ("NONCE", "dcd98b7102dd2f0e8b11d0f600bfb0c093".into()),
            ("ALGORITHM", algorithm.into()),
        ],
    );
    let registrar = sipp::start(&dir, &scenario, None, registrar_port, &["-m", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    let mut e = Earshot::start(&format!(
        "[[sip.trunk]]\nname = \"provider\"\nregistrar = \"127.0.0.1:{registrar_port}\"\nusername = \"trunkuser\"\npassword = \"s3cret\"\ndomain = \"earshot.test\"\nexpires_secs = 120\n"
    ));
    // Registered, then refreshed at half the 4 s lifetime the registrar grants.
    std::thread::sleep(Duration::from_secs(4));
    let status = e.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "earshot exit: {status:?}\n{}",
        e.log_tail(20)
    );
    let outcome = registrar.wait(Duration::from_secs(15));
    sipp::assert_passed(&outcome, 1, &e);
}

#[test]
fn registers_with_md5_digest_refreshes_and_unregisters_on_shutdown() {
    register_with("MD5");
}

#[test]
fn hundred_concurrent_calls_with_rtp_none_fail() {
    let e = Earshot::start("[calls]\nmax_concurrent = 150\n[log]\nlevel = \"warn\"\n");
    let pcap = caller_pcap(&e, Law::Ulaw, 3000, 3);
    let scenario = Scenario::load("uac_call.xml", &call_vars(&pcap, 3000, "0 8", 0, 1000));
    let outcome = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "100", "-l", "100", "-r", "50"],
    )
    .wait(Duration::from_secs(60));
    sipp::assert_passed(&outcome, 100, &e);
    assert!(e.options_ok());
}

/// Normalised cross-correlation of `b` against `a` at the best lag (up to `max_lag` samples).
fn best_correlation(a: &[f64], b: &[f64], max_lag: usize) -> f64 {
    let mut best = 0.0f64;
    for lag in 0..max_lag.min(b.len()) {
        let n = a.len().min(b.len() - lag);
        if n < 4000 {
            break;
        }
        let (x, y) = (&a[..n], &b[lag..lag + n]);
        let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let ex: f64 = x.iter().map(|p| p * p).sum();
        let ey: f64 = y.iter().map(|q| q * q).sum();
        if ex > 0.0 && ey > 0.0 {
            best = best.max(dot / (ex * ey).sqrt());
        }
    }
    best
}

#[test]
fn baresip_calls_earshot_and_hears_the_greeting() {
    let dir = support::temp_dir("baresip");
    // The greeting: two seconds of the test signal at 8 kHz.
    let greeting: Vec<i16> = pcap::test_signal(2000);
    let greeting_path = dir.join("greeting.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&greeting_path, spec).unwrap();
    greeting.iter().for_each(|s| w.write_sample(*s).unwrap());
    w.finalize().unwrap();
    // What baresip says: a quiet tone from a file (its sine source needs 48 kHz), below the
    // voice detector's threshold (-35 dBFS), so it does not barge in on the greeting.
    let caller_path = dir.join("caller.wav");
    let mut w = hound::WavWriter::create(&caller_path, spec).unwrap();
    (0..8000 * 6).for_each(|i| {
        w.write_sample(((i as f64 * 0.345).sin() * 300.0) as i16)
            .unwrap()
    });
    w.finalize().unwrap();

    let e = Earshot::start(&format!(
        "[calls]\ngreeting = {:?}\n",
        greeting_path.display().to_string()
    ));
    let peer = support::baresip::configure(&dir, &caller_path, ";regint=0;audio_codecs=PCMU");
    let out = std::process::Command::new("baresip")
        .arg("-f")
        .arg(&peer.cfg)
        .args(["-e", &format!("/dial sip:1000@{}", e.sip_addr()), "-t", "5"])
        .output()
        .expect("baresip must be installed (scripts/test.sh installs baresip-core)");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("Call established"),
        "baresip:\n{log}\n--- earshot ---\n{}",
        e.log_tail(20)
    );
    let heard: Vec<f64> = support::baresip::heard(&peer.dump)
        .into_iter()
        .map(f64::from)
        .collect();
    let sent: Vec<f64> = greeting.iter().map(|&s| f64::from(s)).collect();
    let correlation = best_correlation(&sent, &heard, 4000);
    assert!(
        correlation > 0.95,
        "baresip heard something else: correlation {correlation:.3}"
    );
}

/// A SIP caller who speaks over the greeting barges in, as a Twilio caller does: the greeting
/// stops and what earshot sends after it is silence (the recording's right channel).
#[test]
fn caller_speech_barges_in_on_the_greeting() {
    let dir = support::temp_dir("sip-barge-in");
    // Six seconds of a loud greeting; the caller talks from the start for 2 s.
    let greeting_path = dir.join("greeting.wav");
    let greeting: Vec<i16> = (0..8000 * 6)
        .map(|i| ((f64::from(i) * 0.2).sin() * 8000.0) as i16)
        .collect();
    support::write_wav_8k(&greeting_path, &greeting);
    let e = Earshot::start(&format!(
        "[calls]\ngreeting = {:?}\n{DEBUG_LOG}",
        greeting_path.display().to_string()
    ));
    let pcap = caller_pcap(&e, Law::Ulaw, 2000, 3);
    let scenario = Scenario::load("uac_call.xml", &call_vars(&pcap, 2000, "0", 0, 200));
    let outcome = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    )
    .wait(Duration::from_secs(30));
    sipp::assert_passed(&outcome, 1, &e);
    std::thread::sleep(Duration::from_millis(500));
    let log = e.stderr_log();
    assert!(
        log.contains("caller barged in") && log.contains("cause=\"speech\""),
        "no barge-in:\n{}",
        e.log_tail(20)
    );
    let wav = std::fs::read_dir(e.dir().join("recordings"))
        .unwrap()
        .flatten()
        .find(|f| f.path().extension().is_some_and(|x| x == "wav"))
        .unwrap();
    let right: Vec<i16> = hound::WavReader::open(wav.path())
        .unwrap()
        .into_samples::<i16>()
        .map_while(Result::ok)
        .skip(1)
        .step_by(2)
        .collect();
    // The greeting played for a moment at most, then nothing: far less than its 6 s.
    let loud = right
        .chunks(160)
        .filter(|f| f.iter().any(|s| s.unsigned_abs() > 1000))
        .count();
    assert!(
        loud > 0 && loud < 50,
        "{loud} loud frames sent: the greeting was not stopped"
    );
}

/// A caller pressing 200 keys in 4 s: the call's DTMF rate limit (10 a second, bursts of 20)
/// keeps the stored digits near what a person could press, counts the rest, and the call
/// goes on to its normal end.
#[test]
fn a_dtmf_flood_is_rate_limited_and_counted_and_the_call_goes_on() {
    let e = Earshot::start(DEBUG_LOG);
    let codes = pcap::coded_test_signal(Law::Ulaw, 1000);
    let mut packets: Vec<RtpPacket> = pcap::g711_packets(0, 1000, &codes);
    let mut ts = 1000 + codes.len() as u32;
    for n in 0..200u32 {
        // One end packet per key press (its own timestamp: a new event each), 20 ms apart.
        let mut press = pcap::dtmf_packets(101, ts, (n % 10) as u8, 160);
        press.truncate(1);
        packets.extend(press);
        ts += 160;
    }
    let path = e.dir().join("flood.pcap");
    pcap::write_rtp_pcap(&path, 0x1234_5678, 100, &packets).unwrap();
    let path = path.display().to_string();
    let scenario = Scenario::load("uac_call.xml", &call_vars(&path, 5000, "0", 0, 300));
    let run = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    );
    let outcome = run.wait(Duration::from_secs(40));
    sipp::assert_passed(&outcome, 1, &e);
    let calls = http::get(e.http_addr(), "/api/calls").json();
    let call = &calls["calls"][0];
    let digits = call["dtmf"].as_str().unwrap_or_default().len();
    // The burst plus 10 a second over the ~4 s of key presses (and the INFO digit).
    assert!(
        (20..=75).contains(&digits),
        "{digits} digits stored: {call:#}"
    );
    let metrics = http::get(e.http_addr(), "/metrics").text();
    let limited: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("earshot_dtmf_limited_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        limited >= 100 && limited as usize + digits >= 195,
        "limited {limited}, stored {digits}"
    );
    assert_eq!(call["end_reason"], "remote hangup", "{call:#}");
}
