//! Fuzz target: SDP parsing and RFC 3264 offer/answer (`earshot::sip::sdp`).
//!
//! Any bytes may be parsed, answered and negotiated without a panic, and every answer earshot
//! writes parses again with one m= line per offered m= line (RFC 3264 §6).

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use earshot::sip::sdp::{
    Codec, Direction, LocalMedia, SessionDescription, answer, negotiate_answer,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sd) = SessionDescription::parse(data) else {
        return;
    };
    let local = LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 40000,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        session_id: 1,
        session_version: 1,
        direction: Direction::SendRecv,
    };
    let _ = negotiate_answer(&sd, &local);
    if let Ok((text, _)) = answer(&sd, &local) {
        let again = SessionDescription::parse(text.as_bytes()).expect("our answer parses");
        assert_eq!(
            again.media.len(),
            sd.media.len(),
            "one answer m= per offer m="
        );
    }
});
