//! earshot's RTP stack against a hand-written peer on loopback: RTCP reports on the odd port
//! and a BYE at the end (RFC 3550 §6), symmetric RTP with strict source learning, and
//! `[sip].public_addr` advertised in Contact and SDP.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::Earshot;
use support::caller::{Caller as Peer, rtp_packet};
use support::sip;

/// RTCP packet types in a compound: 200 SR, 201 RR, 202 SDES, 203 BYE.
fn rtcp_types(datagram: &[u8]) -> Vec<u8> {
    let mut types = vec![];
    let mut rest = datagram;
    while rest.len() >= 4 {
        types.push(rest[1]);
        let words = u16::from_be_bytes([rest[2], rest[3]]) as usize + 1;
        rest = rest.get(words * 4..).unwrap_or_default();
    }
    types
}

#[test]
fn sends_rtcp_reports_to_the_odd_port_and_a_bye_at_the_end() {
    let e = Earshot::start("[rtp]\nrtcp_interval_secs = 1\n");
    let peer = Peer::new();
    let ok = peer.call(e.sip_addr(), "rtcp-1");
    let media = ok.sdp_audio().unwrap();
    let mut reports = vec![];
    let started = Instant::now();
    let mut seq = 100u16;
    let mut buf = [0u8; 1500];
    while started.elapsed() < Duration::from_secs(4) {
        peer.rtp
            .send_to(&rtp_packet(seq, u32::from(seq) * 160, 0xabc), media)
            .unwrap();
        seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
        if let Ok(n) = peer.rtcp.recv(&mut buf) {
            reports.push(rtcp_types(&buf[..n]));
        }
    }
    assert!(reports.len() >= 2, "RTCP compounds: {reports:?}");
    // Earshot sends, so its reports are sender reports with SDES (CNAME).
    assert!(
        reports
            .iter()
            .all(|r| r.first() == Some(&200) && r.contains(&202)),
        "{reports:?}"
    );
    let bye = sip::in_dialog("BYE", &ok, peer.sip.local_addr().unwrap(), 2);
    peer.sip.send_to(&bye, e.sip_addr()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut saw_bye = false;
    while Instant::now() < deadline && !saw_bye {
        if let Ok(n) = peer.rtcp.recv(&mut buf) {
            saw_bye = rtcp_types(&buf[..n]).contains(&203);
        }
    }
    assert!(saw_bye, "RTCP BYE after the call");
}

#[test]
fn follows_a_new_rtp_source_only_after_consecutive_in_sequence_packets() {
    let e = Earshot::start("[rtp]\nlearn_packets = 4\n");
    let peer = Peer::new();
    let ok = peer.call(e.sip_addr(), "learn-1");
    let media = ok.sdp_audio().unwrap();
    let mut buf = [0u8; 1500];
    // The caller's NAT rebinds: its RTP now comes from another port.
    let moved = UdpSocket::bind("127.0.0.1:0").unwrap();
    moved
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A stray packet from the new address alone does not move the stream.
    moved.send_to(&rtp_packet(1, 160, 0x55), media).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    while moved.recv(&mut buf).is_ok() {}
    assert!(
        moved.recv(&mut buf).is_err(),
        "one packet must not redirect earshot's RTP"
    );
    // Consecutive in-sequence packets do.
    for i in 0..10u16 {
        moved
            .send_to(&rtp_packet(2 + i, 160 * u32::from(2 + i), 0x55), media)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut redirected = false;
    while Instant::now() < deadline && !redirected {
        redirected = moved.recv(&mut buf).is_ok_and(|n| n >= 12);
    }
    assert!(redirected, "earshot sends to the learned source");
    let bye = sip::in_dialog("BYE", &ok, peer.sip.local_addr().unwrap(), 2);
    peer.sip.send_to(&bye, e.sip_addr()).unwrap();
}

#[test]
fn public_addr_is_advertised_in_contact_and_sdp() {
    let e = Earshot::start("[sip]\npublic_addr = \"127.0.0.9\"\n");
    let peer = Peer::new();
    let ok = peer.call(e.sip_addr(), "nat-1");
    assert!(
        ok.header("contact").unwrap().contains("127.0.0.9"),
        "{:?}",
        ok.header("contact")
    );
    let body = String::from_utf8_lossy(&ok.body);
    assert!(body.contains("c=IN IP4 127.0.0.9"), "{body}");
    let bye = sip::in_dialog("BYE", &ok, peer.sip.local_addr().unwrap(), 2);
    peer.sip.send_to(&bye, e.sip_addr()).unwrap();
}
