//! Fuzzes Twilio's side of earshot (`earshot::twilio`): webhook form bodies (`form::parse`),
//! request signatures (`signature::sign`, `check_form`, `check_json`), Media Streams messages
//! (`protocol::parse`) and the stream state machine (`stream::Stream`) fed a sequence of
//! messages with virtual time passing between them.
//!
//! Input: the first byte picks the part; the rest is split on newlines (one message, or url /
//! token / body / signature). Invariants: a parsed form, percent-encoded again, parses to the
//! same pairs; a signature `sign` made is accepted by `check_form`, and one bit off is not;
//! the stream's counters add up (every message counted once, media never more than messages)
//! and an ended stream stays ended and takes no more media.

#![no_main]

use std::time::{Duration, Instant};

use earshot::twilio::stream::{Stream, StreamConfig};
use earshot::twilio::{form, protocol, signature};
use libfuzzer_sys::fuzz_target;

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn forms(body: &[u8]) {
    let Ok(params) = form::parse(body) else {
        return;
    };
    let again: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let reparsed = form::parse(again.join("&").as_bytes());
    assert_eq!(reparsed.as_ref(), Ok(&params), "form round trip");
}

fn signatures(text: &str) {
    let mut parts = text.splitn(4, '\n');
    let url = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let given = parts.next();
    let params = form::parse(body.as_bytes()).unwrap_or_default();
    let _ = signature::check_form(token, url, &params, given);
    let _ = signature::check_json(token, url, body.as_bytes(), given);
    let signed = signature::sign(token, url, &params);
    if !signed.is_empty() {
        assert_eq!(
            signature::check_form(token, url, &params, Some(&signed)),
            Ok(()),
            "a signature we made is accepted"
        );
        // The first character changed: a different MAC (or not base64 at all).
        let mut wrong = signed.clone();
        let first = if wrong.starts_with('A') { "B" } else { "A" };
        wrong.replace_range(0..1, first);
        assert!(
            signature::check_form(token, url, &params, Some(&wrong)).is_err(),
            "a changed signature is refused"
        );
    }
}

fn stream(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = StreamConfig {
        handshake_timeout: Duration::from_secs(3),
        silence_timeout: Some(Duration::from_secs(5)),
    };
    let mut now = Instant::now();
    let mut s = Stream::new(config, now);
    let mut sent = 0u64;
    for (i, line) in text.split('\n').take(256).enumerate() {
        // Time passes by the length of the line's index pattern: 0, 20, 40 ms..., and a long
        // pause now and then so deadlines fire.
        now += Duration::from_millis(if i % 17 == 16 { 4000 } else { 20 });
        if s.poll_timeout().is_some_and(|at| at <= now) {
            s.handle_timeout(now);
        }
        let was_ended = s.is_ended();
        let media_before = s.stats().media;
        let audio = s.handle_text(now, line).map(|a| a.payload.len());
        sent += 1;
        if let Some(len) = audio {
            assert!(len <= protocol::MAX_PAYLOAD, "payload over the bound");
            assert!(!was_ended, "media taken after the end");
        }
        if was_ended {
            assert!(s.is_ended(), "an ended stream came back");
            assert_eq!(s.stats().media, media_before, "media counted after the end");
        }
        if s.stream_sid().is_some() && !s.is_ended() && s.frame_due(now) {
            s.send_frame(now, &[0xff; protocol::FRAME_BYTES]);
        }
        if line.len() % 5 == 0 {
            s.mark(now, "m");
        }
        while s.poll_transmit().is_some() {}
        while s.poll_event().is_some() {}
    }
    let stats = s.stats();
    assert_eq!(stats.messages, sent, "every message counted once");
    assert!(stats.media <= stats.messages);
    assert!(stats.oversized <= stats.malformed);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => forms(rest),
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                signatures(text);
            }
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = protocol::parse(text);
            }
        }
        _ => stream(rest),
    }
});
