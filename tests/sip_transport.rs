//! The SIP transport's limits against the real earshot binary: a TCP connect flood from a
//! source outside `[sip] allow` is reset at accept (counted, logged once in a while, taking no
//! connection slot from allowed peers), and UDP datagrams over `[sip] max_message_bytes` are
//! dropped unanswered and counted.
//!
//! The flood test runs in a private network namespace with only loopback
//! (`support::in_netns`), where 127.0.0.2 is the allowed peer and 127.0.0.1 the stranger.

#![allow(clippy::unwrap_used)]
// Tests wait on real sockets and processes, so they read the real clock and sleep.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use support::sip::{self, Message};
use support::{Earshot, SipTcp, in_netns, unique};

const ALLOWED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A counter of `/metrics`.
fn metric(e: &Earshot, name: &str) -> u64 {
    let text = http::get(e.http_addr(), "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// A TCP connection to `to` from the address `from` (std cannot bind before connecting).
fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        socket.connect(to).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Sends an OPTIONS on `stream` and returns the final status read back.
fn options_over(stream: TcpStream) -> Option<u16> {
    let target = stream.peer_addr().ok()?;
    SipTcp::from_stream(stream).options_status(target)
}

/// Bytes read from a refused connection until it ends (EOF or reset).
fn bytes_until_closed(stream: &mut TcpStream) -> (usize, bool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut total = 0;
    let mut buf = [0u8; 2048];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (total, false),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (total, false),
            Err(_) => return (total, true),
        }
    }
}

const FLOOD: usize = 400;

#[test]
fn tcp_flood_from_outside_the_allow_list_is_reset_counted_and_quiet() {
    in_netns(
        "tcp_flood_from_outside_the_allow_list_is_reset_counted_and_quiet",
        || {
            let earshot = Earshot::start_probing_from(
                "[sip]\nallow = [\"127.0.0.2/32\"]\nmax_tcp_connections = 8\n",
                ALLOWED,
            );
            let target = earshot.sip_addr();
            let blocked_before = metric(&earshot, "earshot_sip_blocked_total");

            // The stranger opens FLOOD connections and holds them, each with an OPTIONS
            // written, while the allowed peer uses every one of the 8 slots.
            let flood = std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut connected = 0;
                for i in 0..FLOOD {
                    let mut stream = match TcpStream::connect(target) {
                        Ok(stream) => stream,
                        // Accepted and reset before connect returned.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            connected += 1;
                            continue;
                        }
                        Err(_) => continue,
                    };
                    connected += 1;
                    if let Ok(local) = stream.local_addr() {
                        let options = sip::options(local, target, &format!("flood-{i}"), "tcp");
                        let _ = stream.write_all(&options);
                    }
                    held.push(stream);
                }
                (connected, held)
            });
            let mut answered = 0;
            let mut allowed = Vec::new();
            for _ in 0..8 {
                let stream = connect_from(ALLOWED, target).unwrap();
                allowed.push(stream.try_clone().unwrap());
                if options_over(stream) == Some(200) {
                    answered += 1;
                }
            }
            let (connected, mut held) = flood.join().unwrap();
            assert_eq!(
                answered,
                8,
                "the allowed peer lost connection slots to the flood\n{}",
                earshot.log_tail(20)
            );
            assert!(
                connected > FLOOD / 2,
                "only {connected} flood connects succeeded"
            );

            // Every flood connection was closed without one byte of SIP.
            let mut closed = 0;
            for stream in &mut held {
                let (bytes, ended) = bytes_until_closed(stream);
                assert_eq!(bytes, 0, "a refused connection was answered");
                closed += usize::from(ended);
            }
            assert_eq!(closed, held.len(), "refused connections left open");

            // Counted, one by one...
            let blocked = metric(&earshot, "earshot_sip_blocked_total") - blocked_before;
            assert_eq!(blocked, connected as u64, "connections counted as blocked");
            assert_eq!(metric(&earshot, "earshot_sip_tcp_refused_total"), 0);
            // ...but logged in a summary line at most every 10 s, not one line each.
            let log = earshot.stderr_log();
            let lines = log
                .lines()
                .filter(|l| l.contains("SIP TCP connections refused"))
                .count();
            assert!(
                lines <= 3,
                "{lines} log lines about refused connections:\n{}",
                earshot.log_tail(20)
            );
            assert!(lines >= 1, "the refusals were not logged at all");

            // The allowed connections, still open, keep working after the flood.
            for stream in allowed {
                assert_eq!(options_over(stream), Some(200));
            }
            drop(held);
        },
    );
}

/// An OPTIONS padded with a header to exactly `len` bytes.
fn padded_options(local: SocketAddr, target: SocketAddr, call_id: &str, len: usize) -> Vec<u8> {
    let plain = sip::options(local, target, call_id, "udp");
    let head_end = sip::find(&plain, b"\r\n").unwrap() + 2;
    let overhead = plain.len() + "X-Pad: \r\n".len();
    assert!(len > overhead);
    let mut out = plain[..head_end].to_vec();
    out.extend_from_slice(b"X-Pad: ");
    out.extend(std::iter::repeat_n(b'a', len - overhead));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&plain[head_end..]);
    assert_eq!(out.len(), len);
    out
}

/// The final status of the answer to `request` sent from `socket`, if any within `timeout`.
fn udp_exchange(
    socket: &UdpSocket,
    target: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Option<u16> {
    socket.send_to(request, target).unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Message::parse(&buf[..n])?.status()
}

#[test]
fn udp_datagrams_over_max_message_bytes_are_dropped_unanswered_and_counted() {
    let earshot = Earshot::start("[sip]\nmax_message_bytes = 2048\n");
    let target = earshot.sip_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let received_before = metric(&earshot, "earshot_sip_messages_received_total");

    // At the limit: answered.
    let at_limit = padded_options(local, target, &unique("fits-"), 2048);
    assert_eq!(
        udp_exchange(&socket, target, &at_limit, Duration::from_secs(3)),
        Some(200)
    );
    // One byte over, and far over: no answer at all, each counted.
    for len in [2049, 8000, 60000] {
        let big = padded_options(local, target, &unique("big-"), len);
        assert_eq!(
            udp_exchange(&socket, target, &big, Duration::from_millis(1500)),
            None,
            "a {len}-byte datagram over max_message_bytes = 2048 was answered"
        );
    }
    assert_eq!(metric(&earshot, "earshot_sip_oversized_total"), 3);
    assert_eq!(
        metric(&earshot, "earshot_sip_messages_received_total") - received_before,
        1,
        "oversized datagrams reached the SIP endpoint"
    );
    assert!(earshot.options_ok());
}
