//! Fuzz target: the OpenAI Realtime server's events to the session
//! (`earshot::agent::openai::RealtimeSession`): JSON of any shape, base64 of any size, audio
//! deltas, barge-ins, transcripts, truncations, function calls and response ends in any order,
//! interleaved with playout, caller audio and DTMF. The transfer function is offered when the
//! input's length is odd; each transfer asked for is answered as the call task would.
//!
//! Whatever the server sends, the session must not panic, its audio queue must stay within its
//! bound, every text it sends must be a JSON object with a `type`, every truncation must carry
//! an `audio_end_ms` no larger than the audio it was given, and no item's content part is
//! truncated twice while the session still remembers it (the last 64 interrupted items).

#![no_main]

use std::collections::VecDeque;

use earshot::agent::openai::{RealtimeConfig, RealtimeEvent, RealtimeSession};
use earshot::agent::FRAME_BYTES;
use libfuzzer_sys::fuzz_target;

/// 2 s of agent audio at most.
const MAX_QUEUE: usize = 16_000;

fuzz_target!(|data: &[u8]| {
    let config = RealtimeConfig {
        transfer_function: data.len() % 2 == 1,
        ..RealtimeConfig::default()
    };
    let mut session = RealtimeSession::new(config, MAX_QUEUE);
    let mut frame = [0u8; FRAME_BYTES];
    let mut elapsed = 0u64;
    let mut truncated: VecDeque<(String, u64)> = VecDeque::new();
    // Messages are separated by 0xff bytes; a leading 0xfe plays a frame and sends the
    // caller's 20 ms, a leading 0xfd presses a key.
    for chunk in data.split(|&b| b == 0xff) {
        let (text, plays, key) = match chunk.split_first() {
            Some((&0xfe, rest)) => (rest, true, None),
            Some((&0xfd, rest)) => (
                rest.get(1..).unwrap_or_default(),
                false,
                rest.first().map(|&b| char::from(b)),
            ),
            _ => (chunk, false, None),
        };
        if let Ok(text) = std::str::from_utf8(text) {
            session.handle_text(text);
        } else {
            session.handle_binary();
        }
        if let Some(key) = key {
            session.dtmf(key);
        }
        if plays {
            session.next_frame(&mut frame);
            elapsed += 20;
            session.caller_audio(elapsed, &[0x7f; FRAME_BYTES]);
        }
        assert!(session.queued_bytes() <= MAX_QUEUE);
        while let Some(out) = session.poll_transmit() {
            let value: serde_json::Value = serde_json::from_str(&out).expect("JSON out");
            let kind = value["type"].as_str().expect("a type");
            if kind == "conversation.item.truncate" {
                let item = value["item_id"].as_str().expect("item_id").to_owned();
                let part = value["content_index"].as_u64().expect("content_index");
                let end_ms = value["audio_end_ms"].as_u64().expect("audio_end_ms");
                assert!(end_ms * 8 <= session.stats().audio_bytes, "truncated past the audio");
                let item = (item, part);
                assert!(!truncated.contains(&item), "{item:?} truncated twice");
                if truncated.len() == 64 {
                    truncated.pop_front();
                }
                truncated.push_back(item);
            }
        }
        while let Some(event) = session.poll_event() {
            if let RealtimeEvent::TransferRequested { call_id, reason } = event {
                assert!(!call_id.is_empty() && reason.len() <= 256);
                session.function_result(&call_id, r#"{"status":"failed"}"#);
            }
        }
    }
    session.stop();
    assert!(!session.has_audio());
});
