//! Twilio Media Streams against the real binary. The test plays Twilio: it signs and posts the
//! voice webhook, opens the media stream with a WebSocket client written here from Twilio's
//! protocol (tokio-tungstenite), streams espeak-ng speech as μ-law in real time with jitter and
//! bursts, presses a key and stops — and checks what earshot recorded, sent and refused.
//!
//! `load_numbers_twilio_beside_sip` (ignored; run with `--ignored --nocapture`) prints the
//! handshake, CPU and RSS numbers of 50 concurrent streams beside 50 SIPp calls.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;
mod twilio_client;

use std::time::{Duration, Instant};

use support::Earshot;
use twilio_client::{Plan, TwilioSide, decode_ulaw, encode_ulaw, speech};

/// Tests that stream in real time share two cores: one at a time keeps their timing honest.
static REAL_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn dir_for(name: &str) -> std::path::PathBuf {
    support::temp_dir(name)
}

/// The greeting: a spoken prompt at 8 kHz, written as a WAV for `[calls] greeting`.
fn greeting_wav(dir: &std::path::Path, text: &str) -> (std::path::PathBuf, Vec<i16>) {
    let samples = speech(dir, "greeting", text);
    let path = dir.join("greeting.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    samples.iter().for_each(|s| w.write_sample(*s).unwrap());
    w.finalize().unwrap();
    (path, samples)
}

/// The caller's words, μ-law, padded to whole frames, followed by `tail_ms` of silence.
fn caller_audio(dir: &std::path::Path, text: &str, tail_ms: usize) -> Vec<u8> {
    let pcm = speech(dir, "caller", text);
    let mut codes = encode_ulaw(&pcm);
    let padded = codes.len().div_ceil(160) * 160 + tail_ms * 8;
    codes.resize(padded, 0xff);
    codes
}

/// Waits until `pred` holds for the log, or panics with its tail after `limit`.
fn wait_log(e: &Earshot, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let log = e.stderr_log();
        if pred(&log) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen in the log:\n{}",
            e.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `key=value` field of the last log line containing `marker`.
fn log_field(log: &str, marker: &str, key: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_owned())
}

/// The caller (left) channel of the only recording, once its writer closed it.
fn recorded_caller(e: &Earshot) -> Vec<i16> {
    let dir = e.dir().join("recordings");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last_len = None;
    loop {
        let wavs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|x| x == "wav"))
            .collect();
        assert!(wavs.len() <= 1, "{} recordings", wavs.len());
        if let Some(wav) = wavs.first()
            && let Ok(reader) = hound::WavReader::open(wav.path())
        {
            let spec = reader.spec();
            assert_eq!(
                (spec.channels, spec.sample_rate, spec.bits_per_sample),
                (2, 8000, 16)
            );
            let samples: Vec<i16> = reader.into_samples::<i16>().map_while(Result::ok).collect();
            if !samples.is_empty() && last_len == Some(samples.len()) {
                return samples.chunks(2).map(|lr| lr[0]).collect();
            }
            last_len = Some(samples.len());
        }
        assert!(
            Instant::now() < deadline,
            "no finished recording in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Outbound media comes about every 20 ms and never in bursts: no three frames within 10 ms
/// (earshot catches up after a stall at 10 ms spacing at most; the receiving side adds its own
/// scheduling noise, which can pair two frames), and no 100 ms with more than 8 frames (5 is
/// the pace).
fn assert_paced(arrivals: &[Instant]) {
    let p = twilio_client::Pacing::of(arrivals);
    assert!(
        arrivals.len() > 20
            && (19.0..21.5).contains(&p.mean_gap_ms)
            && p.bursts == 0
            && p.densest_100ms <= 8
            && p.largest_gap_ms < 120.0,
        "{} frames, pacing {p}",
        arrivals.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_real_speech_records_it_sample_for_sample_and_barges_in() {
    let _serial = REAL_TIME.lock().await;
    let dir = dir_for("twilio-speech");
    let (greeting, _) = greeting_wav(
        &dir,
        "Thank you for calling earshot. Your call is being recorded. Please speak after the tone, and press a key when you are done.",
    );
    let e = Earshot::start(&twilio_client::config(&format!(
        "[calls]\ngreeting = {:?}\n",
        greeting.display().to_string()
    )));
    let audio = caller_audio(
        &dir,
        "Hello earshot. This is a test of the Twilio media stream. One, two, three, four, five.",
        600,
    );
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let plan = Plan {
        jitter: true,
        junk: true,
        skip_sequence_at: Some(40),
        dtmf: Some((audio.len() / 160 - 10, '5')),
        ..Plan::new(&call_sid, &token, audio.clone())
    };
    let outcome = side.stream(&plan).await;
    assert_eq!(outcome.bad_media, 0, "malformed outbound media");
    assert!(
        outcome.clears >= 1,
        "no clear on barge-in: {:?}",
        outcome.kinds()
    );
    assert!(
        outcome.marks.is_empty(),
        "the interrupted greeting was marked: {:?}",
        outcome.marks
    );
    assert_paced(&outcome.media);

    let log = wait_log(&e, Duration::from_secs(5), "twilio stream finished", |l| {
        l.contains("twilio stream finished")
    });
    assert!(
        log.lines()
            .any(|l| l.contains("DTMF") && l.contains("via=twilio") && l.contains("digit=5")),
        "no DTMF:\n{}",
        e.log_tail(30)
    );
    assert!(
        log.contains("caller barged in"),
        "no barge-in:\n{}",
        e.log_tail(30)
    );
    assert_eq!(
        log_field(&log, "twilio stream finished", "gaps").as_deref(),
        Some("2"),
        "{}",
        e.log_tail(10)
    );
    // not JSON, bad base64, 161 bytes, 100 kB, a binary frame (the unknown event is apart).
    assert_eq!(
        log_field(&log, "twilio stream finished", "malformed").as_deref(),
        Some("5"),
        "{}",
        e.log_tail(10)
    );
    assert_eq!(
        log_field(&log, "twilio stream finished", "unknown").as_deref(),
        Some("1")
    );

    let sent = decode_ulaw(&audio);
    let recorded = recorded_caller(&e);
    let first = |s: &[i16]| s.iter().position(|&v| v != 0).unwrap();
    let (a, b) = (first(&sent), first(&recorded));
    let speech_len = sent.len() - a - 600 * 8;
    assert!(
        recorded.len() - b >= speech_len,
        "recording too short: {} of {speech_len} samples",
        recorded.len() - b
    );
    let mismatch = (0..speech_len).find(|&i| sent[a + i] != recorded[b + i]);
    if let Some(m) = mismatch {
        // Where the rest lines up again says what happened: ±160 is a dropped or inserted frame.
        let lag = (-1600i64..1600).find(|&lag| {
            (200..1000).all(|k| {
                let r = (b + m) as i64 + k + lag;
                r >= 0 && recorded.get(r as usize) == sent.get(a + m + k as usize)
            })
        });
        panic!(
            "recording differs from the sent audio at sample {m} of {speech_len}; the rest lines up {lag:?} samples later"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_goes_out_paced_then_a_mark_that_comes_back() {
    let _serial = REAL_TIME.lock().await;
    let dir = dir_for("twilio-mark");
    let (greeting, samples) = greeting_wav(&dir, "Welcome to earshot.");
    let e = Earshot::start(&twilio_client::config(&format!(
        "[calls]\ngreeting = {:?}\n",
        greeting.display().to_string()
    )));
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let frames = samples.len().div_ceil(160) + 50;
    let plan = Plan::new(&call_sid, &token, vec![0xff; frames * 160]);
    let outcome = side.stream(&plan).await;
    assert_eq!(outcome.bad_media, 0);
    assert_eq!(outcome.clears, 0, "clear without a barge-in");
    assert_eq!(outcome.marks, ["greeting"], "{:?}", outcome.kinds());
    // The mark follows the greeting's last frame.
    let kinds = outcome.kinds();
    let mark_at = kinds.iter().position(|k| k == "mark").unwrap();
    assert_eq!(
        kinds[..mark_at].iter().filter(|k| *k == "media").count(),
        samples.len().div_ceil(160)
    );
    assert_paced(&outcome.media);
    let log = wait_log(&e, Duration::from_secs(5), "stream end", |l| {
        l.contains("twilio stream finished")
    });
    assert!(log.contains("mark played"), "{}", e.log_tail(20));
    assert_eq!(
        log_field(&log, "twilio stream finished", "marks_played").as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signatures_get_403_and_create_nothing() {
    let e = Earshot::start(&twilio_client::config(""));
    let side = TwilioSide::new(e.http_addr());
    let params = twilio_client::webhook_params("CA00000000000000000000000000000001");
    let url = format!("{}/twilio/voice", twilio_client::PUBLIC_URL);
    let good = twilio_client::sign(&url, &params);
    let wrong_key = twilio_client::sign_with("not-the-token", &url, &params);
    let wrong_url = twilio_client::sign("http://127.0.0.1/twilio/voice", &params);
    for (what, signature) in [
        ("missing", None),
        ("wrong key", Some(wrong_key)),
        ("wrong url", Some(wrong_url)),
    ] {
        let (status, body) = side
            .post("/twilio/voice", &params, signature.as_deref())
            .await;
        assert_eq!(status, 403, "webhook, {what} signature: {body}");
    }
    // Tampered parameters under a good signature.
    let mut tampered = params.clone();
    tampered[1].1 = "+15550009999".into();
    assert_eq!(
        side.post("/twilio/voice", &tampered, Some(&good)).await.0,
        403
    );
    let status_url = format!("{}/twilio/status", twilio_client::PUBLIC_URL);
    let status_params = vec![
        ("CallSid".to_owned(), "CA1".to_owned()),
        ("CallStatus".to_owned(), "completed".to_owned()),
    ];
    assert_eq!(
        side.post("/twilio/status", &status_params, None).await.0,
        403
    );
    assert_eq!(
        side.post(
            "/twilio/status",
            &status_params,
            Some(&twilio_client::sign(&status_url, &params))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        side.post(
            "/twilio/status",
            &status_params,
            Some(&twilio_client::sign(&status_url, &status_params))
        )
        .await
        .0,
        204
    );
    // The upgrade: missing, wrong key, signed over the URL actually connected to, over the
    // constant URL without the token (what a captured upgrade of the old scheme carried), and
    // over another token's URL.
    let token = "0123456789abcdef0123456789abcdef";
    let url = twilio_client::stream_url_of(token);
    for signature in [
        None,
        Some(twilio_client::sign_with("nope", &url, &[])),
        Some(twilio_client::sign(
            &format!("ws://{}/twilio/stream/{token}", e.http_addr()),
            &[],
        )),
        Some(twilio_client::sign(&twilio_client::stream_url(), &[])),
        Some(twilio_client::sign(
            &twilio_client::stream_url_of("fedcba9876543210fedcba9876543210"),
            &[],
        )),
    ] {
        assert_eq!(
            side.upgrade_status(token, signature.as_deref()).await,
            Some(403)
        );
    }
    // A well-signed upgrade with a token nobody issued: 403 before any WebSocket, no call.
    let signed = twilio_client::sign(&url, &[]);
    assert_eq!(side.upgrade_status(token, Some(&signed)).await, Some(403));
    // The Stream URL without a token is no route at all.
    let (status, _) = side.get("/twilio/stream").await;
    assert_eq!(status, 404);
    // An issued token whose stream starts for another CallSid: closed with 1008, no call.
    let issued = side.webhook("CA00000000000000000000000000000003").await;
    let plan = Plan::new(
        "CA00000000000000000000000000000002",
        &issued,
        vec![0xff; 1600],
    );
    let outcome = side.stream(&plan).await;
    assert_eq!(outcome.close, Some(1008), "{:?}", outcome.kinds());
    assert!(outcome.media.is_empty());
    let log = wait_log(&e, Duration::from_secs(3), "refusal", |l| {
        l.contains("twilio stream refused") && l.contains("twilio stream upgrade refused")
    });
    assert!(
        !log.contains("twilio call started"),
        "a call was created:\n{}",
        e.log_tail(20)
    );
    let recordings = std::fs::read_dir(e.dir().join("recordings"))
        .unwrap()
        .count();
    assert_eq!(recordings, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_one_time_and_retried_webhooks_make_one_call() {
    let e = Earshot::start(&twilio_client::config(""));
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    assert_eq!(
        side.webhook(&call_sid).await,
        token,
        "a retried webhook got another token"
    );
    let plan = Plan {
        linger: Duration::from_millis(200),
        ..Plan::new(&call_sid, &token, vec![0xff; 160 * 25])
    };
    let first = side.stream(&plan).await;
    assert!(!first.media.is_empty());
    // The same token again: the upgrade is refused.
    let again = side.stream(&plan).await;
    assert!(
        again
            .connect_error
            .as_deref()
            .is_some_and(|e| e.contains("403")),
        "{:?}",
        again.connect_error
    );
    let log = wait_log(&e, Duration::from_secs(3), "two streams", |l| {
        l.matches("twilio stream upgrade refused").count() == 1
    });
    assert_eq!(log.matches("twilio call started").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstarted_streams_fall_back_and_so_do_calls_beyond_the_limit() {
    let e = Earshot::start(&twilio_client::config(
        "[twilio]\nhandshake_timeout_secs = 1\nfallback = \"dial\"\nfallback_number = \"+15557654321\"\nfallback_say = \"Please hold <now>\"\n[calls]\nmax_concurrent = 1\n",
    ));
    let side = TwilioSide::new(e.http_addr());
    let slow = twilio_client::call_sid();
    let _token = side.webhook(&slow).await;
    // The one slot is taken by the pending call: the next webhook gets the fallback.
    let (status, busy) = side.post_webhook(&twilio_client::call_sid(), "").await;
    assert_eq!(status, 200);
    assert!(
        busy.contains("<Say>Please hold &lt;now&gt;</Say><Dial>+15557654321</Dial>"),
        "{busy}"
    );
    // No stream within the handshake timeout: the call falls back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = wait_log(&e, Duration::from_secs(3), "fallback", |l| {
        l.contains("why=\"handshake timeout\"")
    });
    assert!(log.contains(slow.as_str()));
    // Twilio's action callback and a retried webhook answer the same fallback.
    let (_, action) = side.post_webhook(&slow, "?fallback=1").await;
    assert!(action.contains("<Dial>+15557654321</Dial>"), "{action}");
    let (_, retry) = side.post_webhook(&slow, "").await;
    assert!(retry.contains("<Dial>"), "{retry}");
    // Counted once each: the busy call and the handshake timeout.
    let (_, metrics) = side.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "earshot_twilio_fallbacks_total 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_time_out_and_status_callbacks_end_calls() {
    let e = Earshot::start(&twilio_client::config("[rtp]\nsilence_timeout_secs = 1\n"));
    let side = TwilioSide::new(e.http_addr());
    let first_sid = twilio_client::call_sid();
    let token = side.webhook(&first_sid).await;
    // Half a second of audio, then silence on the wire: earshot closes the stream itself.
    let plan = Plan {
        stop: false,
        ..Plan::new(&first_sid, &token, vec![0xff; 160 * 25])
    };
    let started = Instant::now();
    let outcome = side.stream(&plan).await;
    assert_eq!(outcome.close, Some(1000));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let log = wait_log(&e, Duration::from_secs(3), "timeout", |l| {
        l.contains("call media finished")
    });
    assert_eq!(
        log_field(&log, "call media finished", "reason").as_deref(),
        Some("media"),
        "{}",
        e.log_tail(5)
    );

    // A completed status for a live call ends it, with a close frame; a repeat is a no-op.
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let plan = Plan {
        stop: false,
        status_after: Some(Duration::from_millis(500)),
        ..Plan::new(&call_sid, &token, vec![0xff; 160 * 100])
    };
    let outcome = side.stream(&plan).await;
    assert_eq!(outcome.close, Some(1000));
    assert!(
        outcome.media.len() < 60,
        "{} frames: the status did not end the call",
        outcome.media.len()
    );
    let log = wait_log(&e, Duration::from_secs(3), "status end", |l| {
        l.contains("reason=twilio completed") || l.contains("reason=\"twilio completed\"")
    });
    assert_eq!(log.matches("twilio stream finished").count(), 2);
    // The status is stored on the call, once: retried and crossed callbacks change nothing.
    assert_eq!(side.post_status(&call_sid, "completed").await, 204);
    assert_eq!(side.post_status(&call_sid, "in-progress").await, 204);
    let (call, events) = stored_call_settled(&side, &call_sid).await;
    assert_eq!(call["carrier_status"], "completed", "{call}");
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(carrier_events(&events), ["completed"], "{events:?}");

    // A status that comes after the stream ended (the timed-out call) is found in the store.
    assert_eq!(side.post_status(&first_sid, "in-progress").await, 204);
    assert_eq!(side.post_status(&first_sid, "no-answer").await, 204);
    assert_eq!(side.post_status(&first_sid, "no-answer").await, 204);
    let (call, events) = stored_call_settled(&side, &first_sid).await;
    assert_eq!(call["carrier_status"], "no-answer", "{call}");
    assert_eq!(
        carrier_events(&events),
        ["in-progress", "no-answer"],
        "{events:?}"
    );

    // Calls earshot never streamed have nothing to update; nonsense statuses are refused.
    let stranger = twilio_client::call_sid();
    assert_eq!(side.post_status(&stranger, "completed").await, 204);
    assert!(side.stored_call(&stranger).await.is_none());
    assert_eq!(side.post_status(&first_sid, "exploded").await, 400);
    assert_eq!(side.post_status("../etc", "completed").await, 400);
}

/// The stored call of `call_sid`, once the store has written what was sent (events reach the
/// store thread asynchronously: read until two reads a moment apart agree).
async fn stored_call_settled(
    side: &TwilioSide,
    call_sid: &str,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let mut last = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = side.stored_call(call_sid).await;
        if now.is_some() && now == last {
            break;
        }
        last = now;
    }
    last.unwrap_or_else(|| panic!("{call_sid} is not stored"))
}

/// The statuses of a call's `carrier_status` events, in order.
fn carrier_events(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "carrier_status")
        .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A call streaming 10 s of silence without `stop`: its CallSid, earshot's call id once it
/// started, and the stream's task.
async fn live_stream(
    e: &Earshot,
    side: TwilioSide,
) -> (
    String,
    String,
    tokio::task::JoinHandle<twilio_client::Outcome>,
) {
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let plan = Plan {
        stop: false,
        ..Plan::new(&call_sid, &token, vec![0xff; 160 * 500])
    };
    let stream = tokio::spawn(async move { side.stream(&plan).await });
    let log = wait_log(e, Duration::from_secs(5), "call start", |l| {
        l.contains("twilio call started")
    });
    let id = log_field(&log, "twilio call started", "call").unwrap();
    (call_sid, id, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_hangup_closes_the_stream_with_a_close_frame() {
    let e = Earshot::start(&twilio_client::config(""));
    let side = TwilioSide::new(e.http_addr());
    let (_, id, stream) = live_stream(&e, side).await;
    let (status, body) = side
        .post(&format!("/api/calls/{id}/hangup"), &[], None)
        .await;
    assert!((200..300).contains(&status), "hangup: {status} {body}");
    let outcome = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.close, Some(1000), "{:?}", outcome.kinds());
    assert!(
        outcome.media.len() < 400,
        "the stream ran on: {} frames",
        outcome.media.len()
    );
    let log = wait_log(&e, Duration::from_secs(3), "end", |l| {
        l.contains("call media finished")
    });
    assert_eq!(
        log_field(&log, "call media finished", "reason").as_deref(),
        Some("local"),
        "{}",
        e.log_tail(5)
    );
}

/// `POST /api/calls/{id}/transfer` hands a Twilio call back to Twilio: a destination
/// `[calls].outbound_allow` does not allow gets 403 and changes nothing; an allowed one closes
/// the stream normally, and the signed `<Connect action>` callback Twilio then makes answers
/// `<Dial>` to it. The record shows where the call went and how.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_transfer_hands_the_call_back_to_twilio_with_dial() {
    let e = Earshot::start(&twilio_client::config(
        "[calls]\noutbound_allow = [\"+1555*\", \"sip:*@pbx.example.com\"]\n",
    ));
    let side = TwilioSide::new(e.http_addr());
    let (call_sid, id, stream) = live_stream(&e, side).await;
    let path = format!("/api/calls/{id}/transfer");
    let json = "application/json";
    let (status, body) = side
        .post_body(&path, json, r#"{"to": "+442071234567"}"#)
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("outbound_allow"), "{body}");
    let (status, body) = side.post_body(&path, json, r#"{"to": "+1555 123"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = side.post_body(&path, json, r#"{"number": "+1555"}"#).await;
    assert_eq!(status, 400, "{body}");
    // Refused requests left the call as it was, and Twilio would still be told to hang up.
    let (_, action) = side.post_webhook(&call_sid, "?fallback=1").await;
    assert!(action.contains("<Hangup/>"), "{action}");
    let (status, body) = side
        .post_body(&path, json, r#"{"to": "+15551234567"}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    let outcome = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.close, Some(1000), "{:?}", outcome.kinds());
    assert!(outcome.media.len() < 400, "the stream ran on");
    let (status, action) = side.post_webhook(&call_sid, "?fallback=1").await;
    assert_eq!(status, 200);
    assert!(
        action.ends_with("<Response><Dial>+15551234567</Dial></Response>"),
        "{action}"
    );
    // The callback is signed like every other request.
    let params = twilio_client::webhook_params(&call_sid);
    let (status, _) = side
        .post(
            "/twilio/voice?fallback=1",
            &params,
            Some("bm90IGEgc2lnbmF0dXJl"),
        )
        .await;
    assert_eq!(status, 403);
    let (call, events) = stored_call_settled(&side, &call_sid).await;
    assert_eq!(call["end_reason"], "transferred", "{call:#}");
    assert_eq!(call["transfer"]["to"], "+15551234567", "{call:#}");
    assert_eq!(call["transfer"]["method"], "twilio_dial", "{call:#}");
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["type"].as_str())
        .filter(|t| t.starts_with("transfer"))
        .collect();
    assert_eq!(kinds, ["transfer_requested", "transferred"], "{events:#?}");
    let requested = events
        .iter()
        .find(|e| e["type"] == "transfer_requested")
        .unwrap();
    assert_eq!(requested["by"], "api");
    assert_eq!(requested["method"], "twilio_dial");
    // The destination is personal data: not in the log at info level.
    let log = e.stderr_log();
    assert!(
        !log.lines()
            .any(|l| l.contains("INFO") && l.contains("+15551234567")),
        "{log}"
    );
}

/// `[agent].fallback = "transfer"`: an agent that cannot be reached hands the caller to a person
/// — the stream closes and the `<Connect action>` callback dials `fallback_to`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_agent_falls_back_to_a_transfer() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/agent", refused.local_addr().unwrap());
    drop(refused);
    let e = Earshot::start(&twilio_client::config(&format!(
        "[calls]\noutbound_allow = [\"+1555*\"]\n[agent]\nurl = {url:?}\n\
         fallback = \"transfer\"\nfallback_to = \"+15557654321\"\n"
    )));
    let side = TwilioSide::new(e.http_addr());
    let (call_sid, _, stream) = live_stream(&e, side).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.close, Some(1000), "{:?}", outcome.kinds());
    let (_, action) = side.post_webhook(&call_sid, "?fallback=1").await;
    assert!(
        action.ends_with("<Response><Dial>+15557654321</Dial></Response>"),
        "{action}"
    );
    let (call, events) = stored_call_settled(&side, &call_sid).await;
    assert_eq!(call["end_reason"], "transferred", "{call:#}");
    assert_eq!(call["agent"]["fallback"], "refused", "{call:#}");
    let requested = events
        .iter()
        .find(|e| e["type"] == "transfer_requested")
        .unwrap();
    assert_eq!(requested["by"], "agent_fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_streams_with_a_close_frame() {
    let _serial = REAL_TIME.lock().await;
    let mut e = Earshot::start(&twilio_client::config(""));
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let plan = Plan {
        stop: false,
        ..Plan::new(&call_sid, &token, vec![0xff; 160 * 500])
    };
    let stream = tokio::spawn(async move { side.stream(&plan).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = e.pid();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.close, Some(1001), "{:?}", outcome.kinds());
    let status = e.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        e.log_tail(20)
    );
    let log = e.stderr_log();
    assert!(log.contains("twilio stream finished"), "{}", e.log_tail(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Fifty real-time streams and their client saturate two cores in an unoptimized build.
#[cfg_attr(
    debug_assertions,
    ignore = "real-time load: runs in release (scripts/test.sh)"
)]
async fn fifty_concurrent_streams_run_without_failures() {
    let _serial = REAL_TIME.lock().await;
    let dir = dir_for("twilio-fifty");
    let e = Earshot::start(&twilio_client::config("[log]\nlevel = \"info\"\n"));
    let audio = caller_audio(
        &dir,
        "One two three four five six seven eight nine ten.",
        200,
    );
    let report = twilio_client::run_concurrent(e.http_addr(), 50, audio).await;
    eprintln!("{report}");
    assert_eq!(report.failures, Vec::<String>::new(), "{report}");
    let log = wait_log(&e, Duration::from_secs(10), "50 calls", |l| {
        l.matches("twilio call started").count() == 50
    });
    assert!(!log.contains("twilio stream refused"));
}

/// Numbers for BENCHMARKS.md (printed; see `--nocapture`): 50 concurrent Twilio streams beside
/// 50 concurrent SIPp calls, each measured in its own earshot; neither may fail a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_numbers_twilio_beside_sip() {
    let _serial = REAL_TIME.lock().await;
    let dir = dir_for("twilio-load");
    let audio = caller_audio(
        &dir,
        "One two three four five six seven eight nine ten. Eleven twelve thirteen fourteen fifteen.",
        200,
    );
    let e = Earshot::start(&twilio_client::config("[log]\nlevel = \"warn\"\n"));
    let idle = twilio_client::ProcSample::take(e.pid());
    let sampler =
        twilio_client::Sampler::start(e.pid(), Duration::from_secs(2), Duration::from_secs(2));
    let report = twilio_client::run_concurrent(e.http_addr(), 50, audio.clone()).await;
    let busy = sampler.finish();
    eprintln!("{report}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    eprintln!("twilio x50: {}", twilio_client::per_call(&idle, &busy, 50));
    drop(e);
    let sip = twilio_client::sip_load(&dir, 50, &audio);
    eprintln!("sip x50:    {sip}");
}

/// Five Twilio streams in a row on one earshot, sent with jitter and 80 ms bursts, ending with
/// speech (no silence to hide a lost tail): each recording's caller channel is the sent audio
/// sample for sample, from its first sound to its last, then silence. Streams 1–4 end with
/// Twilio's `stop` right after the last frame (the jitter buffer is full then); stream 5 with
/// an API hangup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_streams_record_every_frame_to_the_last_stream_after_stream() {
    let _serial = REAL_TIME.lock().await;
    let dir = dir_for("twilio-tail");
    let e = Earshot::start(&twilio_client::config(""));
    let audio = caller_audio(&dir, "One, two, three, four, five, six.", 0);
    // Cut to end on sound: the last frame must be recorded, not just silence.
    let sent_all = decode_ulaw(&audio);
    let last_sound = sent_all.iter().rposition(|&s| s != 0).unwrap();
    let frames = last_sound / 160 + 1;
    let audio = audio[..frames * 160].to_vec();
    let sent = decode_ulaw(&audio);
    let first = |s: &[i16]| s.iter().position(|&v| v != 0).unwrap();
    let a = first(&sent);
    let side = TwilioSide::new(e.http_addr());
    let mut seen = Vec::new();
    for run in 0..5u64 {
        let call_sid = twilio_client::call_sid();
        let token = side.webhook(&call_sid).await;
        let plan = Plan {
            jitter: true,
            seed: 7 + run,
            linger: Duration::ZERO,
            stop: run < 4,
            ..Plan::new(&call_sid, &token, audio.clone())
        };
        if run < 4 {
            let outcome = side.stream(&plan).await;
            assert_eq!(outcome.bad_media, 0);
        } else {
            let stream = tokio::spawn(async move { side.stream(&plan).await });
            let log = wait_log(&e, Duration::from_secs(5), "call start", |l| {
                l.matches("twilio call started").count() == 5
            });
            let id = log_field(&log, "twilio call started", "call").unwrap();
            // Every frame sent (with its jitter), then the hangup.
            tokio::time::sleep(Duration::from_millis(frames as u64 * 20 + 600)).await;
            let (status, body) = side
                .post(&format!("/api/calls/{id}/hangup"), &[], None)
                .await;
            assert!((200..300).contains(&status), "hangup: {status} {body}");
            tokio::time::timeout(Duration::from_secs(5), stream)
                .await
                .unwrap()
                .unwrap();
        }
        let recorded: Vec<i16> = hound::WavReader::open(support::next_recording(&e, &mut seen))
            .unwrap()
            .into_samples::<i16>()
            .map_while(Result::ok)
            .step_by(2)
            .collect();
        let b = first(&recorded);
        let what = format!("stream {}", run + 1);
        let len = sent.len() - a;
        assert!(
            recorded.len() >= b + len,
            "{what}: the recording lacks the last {} samples",
            b + len - recorded.len()
        );
        if let Some(m) = (0..len).find(|&i| sent[a + i] != recorded[b + i]) {
            panic!("{what}: differs from the sent audio at sample {m} of {len}");
        }
        assert!(
            recorded[b + len..].iter().all(|&s| s == 0),
            "{what}: sound after the last frame"
        );
    }
}

/// SIGUSR1 drains the box: a new Twilio call gets the fallback TwiML (`<Reject reason="busy"/>`
/// without `[twilio].fallback_say`), SIP OPTIONS 503; SIGUSR2 takes calls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_box_answers_new_twilio_calls_with_the_fallback() {
    let e = Earshot::start(&twilio_client::config(""));
    let side = TwilioSide::new(e.http_addr());
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &e.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-USR1");
    wait_log(&e, Duration::from_secs(5), "draining", |l| {
        l.contains("SIGUSR1: draining") && l.contains("draining switched")
    });
    let (status, twiml) = side.post_webhook(&twilio_client::call_sid(), "").await;
    assert_eq!(status, 200);
    assert!(twiml.contains(r#"<Reject reason="busy"/>"#), "{twiml}");
    assert_eq!(e.options(), Some(503));
    let (_, metrics) = side.get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "earshot_draining 1"),
        "{metrics}"
    );
    signal("-USR2");
    wait_log(&e, Duration::from_secs(5), "draining ended", |l| {
        l.contains("SIGUSR2: draining ended")
    });
    let _token = side.webhook(&twilio_client::call_sid()).await;
    assert_eq!(e.options(), Some(200));
}
