//! Fuzzes the SIP message edge (`earshot::sip::message`): `parse` on datagrams, the TCP
//! `StreamFramer` on arbitrarily split streams, and the value parsers. Besides "never panics",
//! it checks that serialization is a fixpoint: a parsed message, written out and parsed again,
//! writes out to the same bytes, and a parsed URI survives Display and parse unchanged.
//!
//! Run with `cargo +nightly fuzz run sip_message` from the repository root; seed the corpus
//! with `tests/data/sip-rfc4475/*.dat` and `tests/data/sip-rfc5118/*.dat`.

#![no_main]

use earshot::sip::message::{CSeq, NameAddr, StreamFramer, Uri, Via, parse};
use libfuzzer_sys::fuzz_target;

/// A parsed message with this many header lines may legitimately fail to reparse once
/// serialization appends Content-Length (the parser caps header fields at 256).
const HEADER_HEADROOM: usize = 255;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = parse(data) {
        let bytes = message.to_bytes();
        if message.headers().len() < HEADER_HEADROOM {
            let again = parse(&bytes).expect("a serialized message parses again");
            assert_eq!(again.to_bytes(), bytes, "serialization is a fixpoint");
            assert_eq!(again.body(), message.body());
        }
    }

    // The same bytes as a stream, cut into chunks whose sizes come from the data itself.
    let mut framer = StreamFramer::new(16 * 1024);
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    'stream: for piece in data.chunks(chunk) {
        if framer.push(piece).is_err() {
            break;
        }
        while let Some(frame) = framer.next_message() {
            match frame {
                Ok(frame) => {
                    let _ = parse(&frame);
                }
                Err(_) => break 'stream,
            }
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(uri) = Uri::parse(text) {
            assert_eq!(
                Uri::parse(&uri.to_string()).as_ref(),
                Ok(&uri),
                "URI round trip"
            );
        }
        let _ = NameAddr::parse(text).map(|addr| addr.to_string());
        let _ = Via::parse(text).map(|via| via.to_string());
        let _ = CSeq::parse(text).map(|cseq| cseq.to_string());
    }
});
