//! earshot's media against attackers on loopback: a spoofed INVITE cannot make it a reflector
//! (nothing is sent before the ACK, no BYE for a dialog with neither ACK nor media), a
//! mid-call injected RTP stream reaches neither the recording nor diverts earshot's RTP (strict
//! source learning in a window), RTP ports are not handed out in sequence, and
//! `[rtp].allow_media` refuses offers naming other networks with 488.

#![allow(clippy::unwrap_used)]
// Real peers run in real time.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use earshot::media::g711::Law;
use support::caller::{Caller, rtp_packet_with};
use support::sip::{self, Message};
use support::{Earshot, only_recording};

/// Every datagram `socket` receives until `until`.
fn drain_until(socket: &UdpSocket, until: Instant) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

/// Datagrams already waiting on a socket (non-blocking, or with a short read timeout).
fn drain_now(socket: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while socket.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// A value of `/metrics`.
fn metric(e: &Earshot, name: &str) -> u64 {
    let text = http::get(e.http_addr(), "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// An INVITE from `from` whose SDP sends media to `media` and whose Contact is `contact`.
fn spoofed_invite(
    from: SocketAddr,
    target: SocketAddr,
    call_id: &str,
    media: SocketAddr,
    contact: SocketAddr,
) -> Vec<u8> {
    let invite = String::from_utf8(sip::invite(from, target, call_id, media)).unwrap();
    invite
        .replace(
            &format!("Contact: <sip:caller@{from}>"),
            &format!("Contact: <sip:caller@{contact}>"),
        )
        .into_bytes()
}

#[test]
fn a_spoofed_invite_that_is_never_acked_sends_the_victim_nothing() {
    let e = Earshot::start("");
    // The attacker forges an INVITE from an allowed address (here: it is that address) naming
    // the victim's ports in c= and Contact.
    let attacker = Caller::new();
    let victim = Caller::new();
    let invite = spoofed_invite(
        attacker.sip_addr(),
        e.sip_addr(),
        "reflect-1",
        victim.rtp_addr(),
        victim.sip_addr(),
    );
    let ok = attacker.invite(e.sip_addr(), &invite);
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    // The 200 is retransmitted for 64·T1 = 32 s, then earshot gives up on the ACK; wait past
    // that, counting everything the victim gets.
    let until = Instant::now() + Duration::from_secs(40);
    let mut ok_retransmissions = 0;
    let mut victim_rtp = 0;
    let mut victim_rtcp = 0;
    let mut victim_sip = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < until {
        if attacker.sip.recv(&mut buf).is_ok() {
            ok_retransmissions += 1;
        }
        victim_rtp += drain_now(&victim.rtp);
        victim_rtcp += drain_now(&victim.rtcp);
        if let Ok(n) = victim.sip.recv(&mut buf) {
            victim_sip.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(ok_retransmissions >= 3, "the 200 was retransmitted");
    assert_eq!(
        (victim_rtp, victim_rtcp),
        (0, 0),
        "media reached the victim"
    );
    assert!(
        victim_sip.is_empty(),
        "no BYE for a dialog with neither ACK nor media: {victim_sip:?}"
    );
    let log = e.stderr_log();
    assert!(log.contains("AckTimeout"), "the call ended unACKed:\n{log}");
    assert_eq!(metric(&e, "earshot_rtp_packets_sent_total"), 0);
}

#[test]
fn an_acked_call_from_a_silent_peer_gets_media_only_after_the_grace() {
    let e = Earshot::start("");
    let caller = Caller::new();
    let ok = caller.call(e.sip_addr(), "silent-1");
    let acked = Instant::now();
    // Nothing from the caller: earshot waits about a second (PEER_GRACE) before sending.
    let mut first = None;
    let until = acked + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < until && first.is_none() {
        if caller.rtp.recv(&mut buf).is_ok_and(|n| n >= 12) {
            first = Some(Instant::now());
        }
    }
    let first = first.expect("a silent but genuine (ACKing) caller gets media after the grace");
    assert!(
        first.duration_since(acked) >= Duration::from_millis(900),
        "RTP {:?} after the ACK, before the grace",
        first.duration_since(acked)
    );
    caller.send_in_dialog("BYE", &ok, e.sip_addr(), 2);
}

/// `n` 20 ms frames of a continuous `hz` tone in μ-law, starting at frame `from`.
fn tone_frames(hz: f64, from: usize, n: usize) -> Vec<[u8; 160]> {
    (from..from + n)
        .map(|f| {
            let pcm: Vec<i16> = (0..160)
                .map(|i| {
                    let t = (f * 160 + i) as f64 / 8000.0;
                    (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            let mut codes = [0u8; 160];
            Law::Ulaw.encode(&pcm, &mut codes);
            codes
        })
        .collect()
}

/// The left (caller) channel of a stereo recording.
fn caller_channel(path: &Path) -> Vec<i16> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    samples.iter().step_by(2).copied().collect()
}

#[test]
fn rtp_injected_mid_call_reaches_neither_the_recording_nor_earshots_media() {
    const CALLER_SSRC: u32 = 0x1111_1111;
    const FRAMES: usize = 200;
    const ATTACK_FROM: usize = 75;
    let mut e = Earshot::start("[rtp]\nlearn_window_ms = 500\n");
    let caller = Caller::new();
    let ok = caller.call(e.sip_addr(), "hijack-1");
    let media = ok.sdp_audio().unwrap();
    let media_rtcp = SocketAddr::new(media.ip(), media.port() + 1);
    // Two injectors: one copies the caller's SSRC and runs ahead of its sequence numbers,
    // the other has its own SSRC; both send a perfect in-sequence 2 kHz stream, and RTCP.
    let same_ssrc = Caller::new();
    let other_ssrc = Caller::new();
    // Their sockets are only drained, never waited on, so the caller keeps its 20 ms pace.
    for s in [&same_ssrc, &other_ssrc] {
        s.rtp.set_nonblocking(true).unwrap();
        s.rtcp.set_nonblocking(true).unwrap();
    }
    let legit = tone_frames(1000.0, 0, FRAMES);
    let injected = tone_frames(2000.0, 0, FRAMES);
    let mut caller_got_after_attack = 0;
    let mut injected_sent = 0u64;
    let mut injected_rtcp_sent = 0u64;
    let mut injectors_got = 0;
    let start = Instant::now();
    for (i, frame) in legit.iter().enumerate() {
        let seq = 1000 + i as u16;
        let ts = 160 * i as u32;
        caller
            .rtp
            .send_to(&rtp_packet_with(seq, ts, CALLER_SSRC, frame), media)
            .unwrap();
        if i >= ATTACK_FROM {
            // Started 1.5 s after the ACK: well past the 500 ms learning window.
            let ahead = seq.wrapping_add(50);
            let packet = rtp_packet_with(ahead, ts + 8000, CALLER_SSRC, &injected[i]);
            same_ssrc.rtp.send_to(&packet, media).unwrap();
            let packet = rtp_packet_with(seq, ts, 0x2222_2222, &injected[i]);
            other_ssrc.rtp.send_to(&packet, media).unwrap();
            injected_sent += 2;
            if i % 25 == 0 {
                // An empty RR (version 2, PT 201, length 1) claiming the caller's SSRC.
                let mut rr = vec![0x80, 201, 0, 1];
                rr.extend_from_slice(&CALLER_SSRC.to_be_bytes());
                same_ssrc.rtcp.send_to(&rr, media_rtcp).unwrap();
                injected_rtcp_sent += 1;
            }
        }
        // Pace at 20 ms per frame, reading what earshot sends meanwhile.
        let due = start + Duration::from_millis(20 * (i as u64 + 1));
        let got = drain_until(&caller.rtp, due).len();
        if i >= ATTACK_FROM {
            caller_got_after_attack += got;
        }
        injectors_got += drain_now(&same_ssrc.rtp) + drain_now(&other_ssrc.rtp);
        injectors_got += drain_now(&same_ssrc.rtcp) + drain_now(&other_ssrc.rtcp);
    }
    injectors_got += drain_until(&same_ssrc.rtp, Instant::now() + Duration::from_millis(200)).len()
        + drain_now(&other_ssrc.rtp);
    assert_eq!(
        injectors_got, 0,
        "earshot's media was diverted to an injector"
    );
    assert!(
        caller_got_after_attack >= (FRAMES - ATTACK_FROM) / 2,
        "earshot kept sending to the caller: {caller_got_after_attack} packets during the attack"
    );
    assert_eq!(
        metric(&e, "earshot_rtp_foreign_dropped_total"),
        injected_sent + injected_rtcp_sent,
        "every injected packet is counted"
    );

    caller.send_in_dialog("BYE", &ok, e.sip_addr(), 2);
    std::thread::sleep(Duration::from_millis(500));
    let status = e.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}");
    let left = caller_channel(&only_recording(e.dir()));
    let ours = support::tone_blocks(&left, 1000.0);
    let theirs = support::tone_blocks(&left, 2000.0);
    assert!(
        ours >= FRAMES / 2,
        "the caller's tone is recorded: {ours} blocks"
    );
    assert_eq!(theirs, 0, "injected audio reached the recording");
}

#[test]
fn twenty_calls_get_rtp_ports_out_of_sequence() {
    let e = Earshot::start("");
    let caller = Caller::new();
    let mut ports = Vec::new();
    for i in 0..20 {
        let ok = caller.call(e.sip_addr(), &format!("ports-{i}"));
        ports.push(ok.sdp_audio().unwrap().port());
        caller.send_in_dialog("BYE", &ok, e.sip_addr(), 2);
        // The 200 to the BYE (and any 200 retransmission) before the next call.
        drain_until(&caller.sip, Instant::now() + Duration::from_millis(100));
    }
    assert!(ports.iter().all(|p| p % 2 == 0), "{ports:?}");
    assert!(
        !ports.windows(2).all(|w| w[1] == w[0] + 2),
        "consecutive: {ports:?}"
    );
    assert!(
        !ports.windows(2).all(|w| w[1] > w[0]),
        "increasing: {ports:?}"
    );
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 10, "{ports:?}");
}

#[test]
fn allow_media_refuses_an_offer_naming_another_network_with_488() {
    let e = Earshot::start("[rtp]\nallow_media = [\"127.0.0.0/8\"]\n");
    let caller = Caller::new();
    let outside = SocketAddr::from(([192, 0, 2, 10], 40000));
    let invite = sip::invite(caller.sip_addr(), e.sip_addr(), "media-1", outside);
    let refused: Message = caller.invite(e.sip_addr(), &invite);
    assert_eq!(refused.status(), Some(488), "{refused:?}");
    let warning = refused.header("warning").unwrap_or_default();
    assert!(
        warning.starts_with("399 ") && warning.contains("not allowed"),
        "{warning:?}"
    );
    caller
        .sip
        .send_to(
            &sip::ack_for_failure(&format!("sip:earshot@{}", e.sip_addr()), &refused),
            e.sip_addr(),
        )
        .unwrap();
    // Inside the allowed network: answered.
    let ok = caller.call(e.sip_addr(), "media-2");
    caller.send_in_dialog("BYE", &ok, e.sip_addr(), 2);
}
