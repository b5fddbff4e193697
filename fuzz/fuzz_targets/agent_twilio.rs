//! Fuzz target: an agent's messages to the Twilio Media Streams session
//! (`earshot::agent::twilio::AgentStream`): JSON of any shape, base64 of any size, marks and
//! clears in any order, interleaved with playout.
//!
//! Whatever the agent sends, the session must not panic, its audio queue must stay within its
//! bound, and every text it sends back must be JSON with a strictly rising `sequenceNumber`.

#![no_main]

use earshot::agent::twilio::{AgentStream, FRAME_BYTES, StartInfo};
use libfuzzer_sys::fuzz_target;

/// 2 s of agent audio at most.
const MAX_QUEUE: usize = 16_000;

fuzz_target!(|data: &[u8]| {
    let mut stream = AgentStream::new(
        StartInfo {
            stream_sid: "MZ00000000000000000000000000000001".into(),
            call_sid: "CA00000000000000000000000000000001".into(),
            account_sid: "AC00000000000000000000000000000001".into(),
            parameters: Default::default(),
        },
        MAX_QUEUE,
    );
    let mut last_seq = 0u64;
    let mut frame = [0u8; FRAME_BYTES];
    // Messages are separated by 0xff bytes; a 0xfe byte plays a frame.
    for chunk in data.split(|&b| b == 0xff) {
        let (plays, text) = match chunk.split_first() {
            Some((&0xfe, rest)) => (true, rest),
            _ => (false, chunk),
        };
        if let Ok(text) = std::str::from_utf8(text) {
            stream.handle_text(text);
        } else {
            stream.handle_binary();
        }
        if plays {
            stream.next_frame(&mut frame);
        }
        stream.caller_audio(20, &[0x7f; FRAME_BYTES]);
        assert!(stream.queued_bytes() <= MAX_QUEUE);
        while let Some(out) = stream.poll_transmit() {
            let value: serde_json::Value = serde_json::from_str(&out).expect("JSON out");
            if let Some(seq) = value["sequenceNumber"].as_str() {
                let seq: u64 = seq.parse().expect("numeric sequenceNumber");
                assert!(seq > last_seq, "sequenceNumber went from {last_seq} to {seq}");
                last_seq = seq;
            }
        }
    }
});
