//! The HTTP API against a running earshot with a real redb store, fed by real SIPp calls:
//! pagination with cursors, filters, analytics, byte ranges on recordings, event-stream resume
//! with Last-Event-ID, error statuses (404, 400, 413, 409, traversal), notes (unicode,
//! concurrent writers), live-call control, and the token required beyond loopback.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use serde_json::{Value, json};
use support::pcap;
use support::sipp::{self, Scenario};
use support::{Earshot, free_tcp_port};

/// Writes the caller's capture: `ms` of the test signal in PCMU, then an RFC 4733 `5`.
fn caller_pcap(e: &Earshot, ms: u32) -> String {
    let codes = pcap::coded_test_signal(Law::Ulaw, ms);
    let mut packets = pcap::g711_packets(0, 1000, &codes);
    packets.extend(pcap::dtmf_packets(101, 1000 + codes.len() as u32, 5, 800));
    let path = e.dir().join(format!("caller-{ms}.pcap"));
    pcap::write_rtp_pcap(&path, 0x1234_5678, 100, &packets).unwrap();
    path.display().to_string()
}

/// Runs `calls` SIPp calls from `caller` (uac_call.xml: audio, RFC 4733 and INFO DTMF, BYE),
/// `parallel` at a time, and asserts they all succeeded.
fn make_calls(e: &Earshot, caller: &str, calls: u32, parallel: u32) {
    let pcap = caller_pcap(e, 1000);
    let vars = vec![
        ("CODECS", "0 8".to_string()),
        ("PTS", "0 8".to_string()),
        (
            "RTPMAPS",
            "a=rtpmap:0 PCMU/8000\n      a=rtpmap:8 PCMA/8000".to_string(),
        ),
        ("ANSWER_PT", "0".to_string()),
        ("PCAP", pcap),
        ("PCAP_MS", "1500".to_string()),
        ("HOLD_MS", "200".to_string()),
        ("CALLER", caller.to_string()),
        ("CALLEE", "1000".to_string()),
    ];
    let scenario = Scenario::load("uac_call.xml", &vars);
    let args = [
        "-m",
        &calls.to_string(),
        "-l",
        &parallel.to_string(),
        "-r",
        "5",
    ];
    let outcome = sipp::start(e.dir(), &scenario, Some(e.sip_addr()), sipp::port(), &args)
        .wait(Duration::from_secs(60));
    sipp::assert_passed(&outcome, u64::from(calls), e);
}

/// Polls `/api/calls` until `n` calls are ended (the store thread commits just after the BYE).
fn wait_for_ended(addr: SocketAddr, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = http::get(addr, "/api/calls?status=ended&limit=500").json()["calls"]
            .as_array()
            .cloned()
            .unwrap();
        if calls.len() >= n || Instant::now() > deadline {
            assert_eq!(calls.len(), n, "ended calls: {calls:#?}");
            return calls;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ids(calls: &[Value]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn pagination_filters_analytics_and_metrics_follow_real_calls() {
    let e = Earshot::start("");
    let api = e.http_addr();
    make_calls(&e, "+15551110001", 3, 2);
    make_calls(&e, "+15552220002", 2, 2);
    let all = wait_for_ended(api, 5);

    // Pages of 2, newest first, following cursors to the end.
    let mut seen = Vec::new();
    let mut path = "/api/calls?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = http::get(api, &path).json();
        let calls = page["calls"].as_array().unwrap();
        assert!(calls.len() <= 2);
        seen.extend(ids(calls));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/calls?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ids(&all),
        "pages must list every call once, like one big page"
    );
    let starts: Vec<&str> = all
        .iter()
        .map(|c| c["started_at"].as_str().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {starts:?}"
    );

    // Filters.
    let count = |query: &str| {
        let r = http::get(api, &format!("/api/calls?{query}"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()["calls"].as_array().unwrap().len()
    };
    assert_eq!(count("q=2220002"), 2);
    assert_eq!(count("q=%2B1555"), 5);
    assert_eq!(count("q=nobody"), 0);
    assert_eq!(count("source=sip"), 5);
    assert_eq!(count("source=twilio"), 0);
    assert_eq!(count("status=ended&q=1110001"), 3);
    assert_eq!(count("status=active"), 0);
    assert_eq!(count("since=2999-01-01"), 0);
    assert_eq!(count("until=2000-01-01T00:00:00Z"), 0);
    assert_eq!(count("since=2000-01-01&until=2999-01-01"), 5);
    for bad in [
        "status=bogus",
        "source=pstn",
        "limit=0",
        "limit=501",
        "limit=x",
        "since=yesterday",
        "cursor=nope",
        "colour=red",
    ] {
        let r = http::get(api, &format!("/api/calls?{bad}"));
        assert_eq!(
            (r.status, r.error_code()),
            (400, "bad_request".to_owned()),
            "{bad}: {}",
            r.text()
        );
    }

    // One call in detail: its events and media counters.
    let detail = http::get(
        api,
        &format!("/api/calls/{}", all[0]["id"].as_str().unwrap()),
    )
    .json();
    let kinds: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for kind in ["started", "answered", "recording_started", "dtmf", "ended"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(detail["status"], "ended");
    assert_eq!(detail["codec"], "PCMU");
    assert!(
        detail["stats"]["packets_received"].as_u64().unwrap() >= 40,
        "{detail:#}"
    );
    assert!(detail["dtmf"].as_str().unwrap().contains('7'), "{detail:#}");

    // Analytics agree with the calls.
    let a = http::get(api, "/api/analytics?interval=hour").json();
    assert_eq!(
        (a["total"].as_u64(), a["answered"].as_u64()),
        (Some(5), Some(5)),
        "{a:#}"
    );
    assert_eq!(a["by_status"]["ended"], 5);
    assert_eq!(a["by_source"]["sip"], 5);
    let series_total: u64 = a["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(series_total, 5);
    let durations: Vec<f64> = all
        .iter()
        .map(|c| c["duration_secs"].as_f64().unwrap())
        .collect();
    let mean = durations.iter().sum::<f64>() / durations.len() as f64;
    let avg = a["avg_duration_secs"].as_f64().unwrap();
    assert!(
        (avg - mean).abs() < 0.01,
        "analytics average {avg} vs calls' mean {mean} ({durations:?})"
    );
    assert!(
        (1.5..10.0).contains(&avg),
        "each call lasts about 2 s: {avg}"
    );
    for (query, code) in [
        ("interval=month", 400),
        ("since=2024-01-02&until=2024-01-01", 400),
        ("interval=day", 200),
    ] {
        assert_eq!(
            http::get(api, &format!("/api/analytics?{query}")).status,
            code,
            "{query}"
        );
    }

    // Prometheus counters from the same calls.
    let metrics = http::get(api, "/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for line in [
        "earshot_calls{source=\"sip\",status=\"ended\"} 5",
        "earshot_calls_ended_total{source=\"sip\"} 5",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
    let received: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("earshot_rtp_packets_received_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(received >= 200, "{received} RTP packets over 5 calls");
}

#[test]
fn recordings_are_served_with_byte_ranges() {
    let e = Earshot::start("");
    let api = e.http_addr();
    make_calls(&e, "+15553330003", 1, 1);
    let call = &wait_for_ended(api, 1)[0];
    let id = call["id"].as_str().unwrap();
    // The recorder closes the file just after the call; wait for its final size.
    let file = e.dir().join("recordings").join(format!("{id}.wav"));
    std::thread::sleep(Duration::from_millis(500));
    let bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    assert!(len > 1000, "recording of {len} bytes");
    let path = format!("/api/calls/{id}/recording");

    let whole = http::get(api, &path);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), Some("audio/wav"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.body, bytes);

    let first = http::get_with(api, &path, &[("Range", "bytes=0-99")]);
    assert_eq!(first.status, 206);
    assert_eq!(first.body.len(), 100);
    assert_eq!(first.body, bytes[..100]);
    assert_eq!(
        first.header("content-range"),
        Some(format!("bytes 0-99/{len}").as_str())
    );
    assert!(first.body.starts_with(b"RIFF"));

    let suffix = http::get_with(api, &path, &[("Range", "bytes=-50")]);
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, bytes[len - 50..]);
    assert_eq!(
        suffix.header("content-range"),
        Some(format!("bytes {}-{}/{len}", len - 50, len - 1).as_str())
    );

    let middle = http::get_with(
        api,
        &path,
        &[("Range", &format!("bytes=1000-{}", len + 5000))],
    );
    assert_eq!(
        (middle.status, middle.body.as_slice()),
        (206, &bytes[1000..])
    );

    let beyond = http::get_with(api, &path, &[("Range", &format!("bytes={len}-"))]);
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    assert_eq!(beyond.error_code(), "range_not_satisfiable");

    let download = http::get(api, &format!("{path}?download=true"));
    assert_eq!(download.status, 200);
    assert_eq!(
        download.header("content-disposition"),
        Some(format!("attachment; filename=\"{id}.wav\"").as_str())
    );
    assert_eq!(
        http::get(api, &format!("{path}?download=maybe")).status,
        400
    );
}

#[test]
fn event_stream_resumes_after_last_event_id() {
    // Unrecorded calls, so `ended` is each call's last event (a recording's
    // `recording_finished` follows its call's end).
    let e = Earshot::start("[recording]\nenabled = false\n");
    let api = e.http_addr();
    let mut sse = http::Sse::connect(api, "/api/events", None, &[]).unwrap();
    assert_eq!(sse.status, 200);
    make_calls(&e, "+15554440004", 1, 1);
    let first: Vec<http::SseEvent> = sse.until(Duration::from_secs(10), |e| e["type"] == "ended");
    let kinds: Vec<String> = first
        .iter()
        .map(|e| e.json()["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("started"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("ended"), "{kinds:?}");
    let seqs: Vec<u64> = first.iter().map(|e| e.id.unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive ids: {seqs:?}"
    );
    for event in &first {
        assert_eq!(
            event.json()["seq"].as_u64(),
            event.id,
            "id: is the stored seq"
        );
    }
    drop(sse);

    // Reconnect as if we had only seen the second event: the rest is replayed from the store.
    let resume_from = seqs[1];
    let mut resumed = http::Sse::connect(api, "/api/events", Some(resume_from), &[]).unwrap();
    let replay = resumed.until(Duration::from_secs(10), |e| e["type"] == "ended");
    let replayed: Vec<u64> = replay.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(replayed, seqs[2..].to_vec());
    assert_eq!(
        replay.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        first[2..]
            .iter()
            .map(|e| e.data.clone())
            .collect::<Vec<_>>()
    );

    // Then it goes on live: a new call's events follow without a gap.
    make_calls(&e, "+15554440005", 1, 1);
    let live = resumed.until(Duration::from_secs(10), |e| e["type"] == "ended");
    assert_eq!(
        live.first().and_then(|e| e.id),
        Some(seqs.last().unwrap() + 1)
    );
    assert_eq!(live.first().unwrap().json()["type"], "started");

    // A resume point in the future replays nothing; a bad one is a 400.
    let mut future = http::Sse::connect(api, "/api/events", Some(1_000_000), &[]).unwrap();
    assert!(future.next(Duration::from_millis(500)).is_none());
    let bad = http::get_with(api, "/api/events", &[("Last-Event-ID", "seven")]);
    assert_eq!(bad.status, 400);
}

#[test]
fn errors_are_json_for_unknown_ids_bad_input_oversized_bodies_and_traversal() {
    let e = Earshot::start("");
    let api = e.http_addr();
    make_calls(&e, "+15555550005", 1, 1);
    let id = wait_for_ended(api, 1)[0]["id"].as_str().unwrap().to_owned();
    let unknown = "c0000000003e8ffffffff";

    for path in [
        format!("/api/calls/{unknown}"),
        format!("/api/calls/{unknown}/recording"),
        "/api/calls/not-an-id".to_owned(),
        "/api/calls/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/api/calls/..%2F..%2Fetc%2Fpasswd/recording".to_owned(),
        "/api/calls/%2e%2e/recording".to_owned(),
        "/api/calls/../../../etc/passwd".to_owned(),
        format!("/api/calls/{id}%2F..%2F..%2Fearshot.toml/recording"),
        "/api/nothing-here".to_owned(),
    ] {
        let r = http::get(api, &path);
        assert_eq!(
            (r.status, r.error_code()),
            (404, "not_found".to_owned()),
            "{path}: {}",
            r.text()
        );
        assert!(!r.text().contains("[sip]"), "{path} leaked a file");
    }

    let notes = format!("/api/calls/{id}/notes");
    let huge = "n".repeat(100 * 1024);
    let r = http::send_json(api, "PUT", &notes, &json!({ "note": huge }));
    assert_eq!(
        (r.status, r.error_code()),
        (413, "payload_too_large".to_owned()),
        "{}",
        r.text()
    );
    let over_note_limit = "ü".repeat(20 * 1024);
    let r = http::send_json(api, "PUT", &notes, &json!({ "note": over_note_limit }));
    assert_eq!(
        r.status,
        413,
        "a 40 KB note is over the 32 KB note limit: {}",
        r.text()
    );
    let r = http::request(
        api,
        "PUT",
        &notes,
        &[("Content-Type", "application/json")],
        b"{\"note\": 5}",
    )
    .unwrap();
    assert_eq!((r.status, r.error_code()), (400, "bad_request".to_owned()));
    let r = http::request(
        api,
        "PUT",
        &notes,
        &[("Content-Type", "text/plain")],
        &[0xff, 0xfe],
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        http::send_json(
            api,
            "PUT",
            &format!("/api/calls/{unknown}/notes"),
            &json!({ "note": "x" })
        )
        .status,
        404
    );

    let hangup = http::request(api, "POST", &format!("/api/calls/{id}/hangup"), &[], b"").unwrap();
    assert_eq!(
        (hangup.status, hangup.error_code()),
        (409, "conflict".to_owned()),
        "an ended call is not live"
    );
    assert_eq!(
        http::request(
            api,
            "POST",
            &format!("/api/calls/{unknown}/hangup"),
            &[],
            b""
        )
        .unwrap()
        .status,
        404
    );
    let listen = http::send_json(
        api,
        "POST",
        &format!("/api/calls/{id}/listen"),
        &json!({ "on": "yes" }),
    );
    assert_eq!(listen.status, 400);
    let listen = http::send_json(
        api,
        "POST",
        &format!("/api/calls/{id}/listen"),
        &json!({ "on": true }),
    );
    assert_eq!(listen.status, 409);
}

#[test]
fn notes_keep_unicode_and_concurrent_writes_leave_one_whole_note() {
    let e = Earshot::start("");
    let api = e.http_addr();
    make_calls(&e, "+15556660006", 1, 1);
    let id = wait_for_ended(api, 1)[0]["id"].as_str().unwrap().to_owned();
    let notes = format!("/api/calls/{id}/notes");
    let before = http::get(api, &format!("/api/calls/{id}")).json();

    let text = "Rappeler Mme Dupont — «urgent» ☎️ 電話 🇫🇷\nsecond line";
    let r = http::send_json(api, "PUT", &notes, &json!({ "note": text }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["note"]["text"], text);
    assert_eq!(
        http::get(api, &format!("/api/calls/{id}")).json()["note"]["text"],
        text
    );
    let plain = http::request(
        api,
        "PUT",
        &notes,
        &[("Content-Type", "text/plain; charset=utf-8")],
        "plain ✓".as_bytes(),
    )
    .unwrap();
    assert_eq!(plain.json()["note"]["text"], "plain ✓");

    // Sixteen writers at once, each a long distinct note: one of them wins whole.
    let writers: Vec<String> = (0..16)
        .map(|i| format!("writer {i}: {}", "é".repeat(2000 + i)))
        .collect();
    let handles: Vec<_> = writers
        .iter()
        .cloned()
        .map(|note| {
            let path = notes.clone();
            std::thread::spawn(move || {
                http::send_json(api, "PUT", &path, &json!({ "note": note })).status
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), 200);
    }
    let after = http::get(api, &format!("/api/calls/{id}")).json();
    let final_note = after["note"]["text"].as_str().unwrap();
    assert!(
        writers.iter().any(|w| w == final_note),
        "the note is not one writer's whole text: {}",
        &final_note[..40.min(final_note.len())]
    );
    for key in [
        "status",
        "started_at",
        "ended_at",
        "stats",
        "events",
        "recording",
        "caller",
    ] {
        assert_eq!(after[key], before[key], "{key} changed by notes");
    }
    let cleared = http::send_json(api, "PUT", &notes, &json!({ "note": "" }));
    assert_eq!(cleared.json()["note"], Value::Null);
}

#[test]
fn live_calls_can_be_listed_muted_and_hung_up() {
    let e = Earshot::start("");
    let api = e.http_addr();
    let pcap = caller_pcap(&e, 8000);
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[("PCAP", pcap), ("BYE_TIMEOUT_MS", "30000".into())],
    );
    let sipp = sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp::port(),
        &["-m", "1"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let live = loop {
        let calls = http::get(api, "/api/live").json()["calls"]
            .as_array()
            .cloned()
            .unwrap();
        if let Some(call) = calls.into_iter().find(|c| c["answered"] == true) {
            break call;
        }
        assert!(
            Instant::now() < deadline,
            "the call never showed in /api/live"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = live["id"].as_str().unwrap().to_owned();
    assert_eq!(live["source"], "sip");
    assert_eq!(live["codec"], "PCMU");
    assert!(live["caller"].as_str().unwrap().ends_with("2000"));
    assert_eq!(
        http::get(api, &format!("/api/calls/{id}")).json()["live"],
        true
    );

    let listen = http::send_json(
        api,
        "POST",
        &format!("/api/calls/{id}/listen"),
        &json!({ "on": false }),
    );
    assert_eq!(listen.status, 200, "{}", listen.text());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let calls = http::get(api, "/api/live").json()["calls"]
            .as_array()
            .cloned()
            .unwrap();
        if calls
            .iter()
            .any(|c| c["id"] == id.as_str() && c["listen"] == false)
        {
            break;
        }
        assert!(Instant::now() < deadline, "listen never went off");
        std::thread::sleep(Duration::from_millis(100));
    }

    let hangup = http::request(api, "POST", &format!("/api/calls/{id}/hangup"), &[], b"").unwrap();
    assert_eq!(hangup.status, 202, "{}", hangup.text());
    let outcome = sipp.wait(Duration::from_secs(20));
    sipp::assert_passed(&outcome, 1, &e);
    let call = wait_for_ended(api, 1).remove(0);
    assert_eq!(call["id"], id.as_str());
    let events = http::get(api, &format!("/api/calls/{id}")).json()["events"].clone();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|ev| ev["type"] == "listen" && ev["on"] == false),
        "{events:#}"
    );
}

#[test]
fn token_is_required_when_listening_beyond_loopback() {
    let port = free_tcp_port(Ipv4Addr::UNSPECIFIED).unwrap();
    let token = "correct-horse-battery-staple";
    let _earshot = Earshot::start(&format!(
        "[http]\nlisten = \"0.0.0.0:{port}\"\ntoken = \"{token}\"\n"
    ));
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let bearer = format!("Bearer {token}");

    let open = http::get(api, "/api/calls");
    assert_eq!(
        (open.status, open.error_code()),
        (401, "unauthorized".to_owned())
    );
    assert!(
        open.header("www-authenticate")
            .unwrap_or("")
            .starts_with("Bearer")
    );
    let wrong = http::get_with(
        api,
        "/api/calls",
        &[("Authorization", "Bearer not-the-token-at-all")],
    );
    assert_eq!(wrong.status, 401);
    let ok = http::get_with(api, "/api/calls", &[("Authorization", &bearer)]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(http::get(api, "/metrics").status, 401);
    assert_eq!(
        http::get_with(api, "/metrics", &[("Authorization", &bearer)]).status,
        200
    );
    // Health and the console's static files need no token; query tokens only where headers
    // cannot be sent.
    assert_eq!(http::get(api, "/health").status, 200);
    assert_eq!(http::get(api, "/").status, 200);
    assert_eq!(
        http::get(api, &format!("/api/calls?token={token}")).status,
        401
    );
    let sse = http::Sse::connect(api, &format!("/api/events?token={token}"), None, &[]).unwrap();
    assert_eq!(sse.status, 200);
    let sse = http::Sse::connect(api, "/api/events?token=wrong-token-value", None, &[]).unwrap();
    assert_eq!(sse.status, 401);
}
