//! Hostile SIP that must be refused, against the real earshot binary: the INVITEs of
//! tests/data/hostile-invites (control and NUL bytes in headers and SDP, line-ending framing,
//! `c=` lines that are no usable address, RFC 3261 Contact rules; see its README.md) over UDP
//! and some over TCP, and the RFC 4475 messages that break TCP framing (dblreq: a second
//! request in the stream; mcl01: two Content-Lengths), which must be answered before the
//! connection is closed (RFC 3261 §18.3).
//!
//! Each message must get exactly the expected final status (never a 2xx), every 400 must carry
//! a reason phrase naming the fault, earshot must not panic, and a normal call must still work
//! afterwards. Runs in a private network namespace (see `support::in_netns`).

#![allow(clippy::unwrap_used)]
// Tests wait on real sockets and processes, so they read the real clock and sleep.
#![allow(clippy::disallowed_methods)]

mod support;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use support::sip::{self, Message};
use support::{Earshot, SipTcp, in_netns, unique};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// One hostile message and the one final status it must get; `tcp` also sends it over TCP.
struct Case {
    file: &'static str,
    status: u16,
    tcp: bool,
}

const fn case(file: &'static str, status: u16, tcp: bool) -> Case {
    Case { file, status, tcp }
}

/// The rows of tests/data/hostile-invites/README.md.
const CASES: &[Case] = &[
    case("01-nul-in-call-id", 400, true),
    case("02-ctl-in-from-display-name", 400, false),
    case("03-nul-in-user-agent", 400, false),
    case("04-escape-sequence-in-subject", 400, false),
    case("05-del-in-to", 400, false),
    case("06-cr-nul-line-end", 400, false),
    case("07-bare-cr-header-separator", 400, false),
    case("08-bare-lf-smuggles-a-via", 400, true),
    case("09-fold-before-first-header", 400, false),
    case("10-fold-carrying-bare-cr", 400, false),
    case("11-no-empty-line-before-body", 400, false),
    case("12-body-shorter-than-content-length", 400, false),
    case("13-content-length-cuts-the-sdp", 400, false),
    // Over TCP it cannot be framed: see `tcp_refuses_unframeable_streams_with_an_answer`.
    case("14-two-content-lengths", 400, false),
    case("15-content-length-overflow", 400, false),
    case("16-header-name-of-9000-bytes", 400, false),
    case("17-nul-in-sdp-attribute", 400, false),
    case("18-sdp-ends-in-bare-cr", 400, false),
    case("19-bare-cr-inside-sdp", 400, false),
    case("20-ctl-in-sdp-session-name", 400, false),
    case("21-c-ip4-octet-999", 400, true),
    case("22-c-ip4-punctuation", 400, false),
    case("23-c-ip6-with-ipv4-address", 400, false),
    case("24-c-non-numeric-ttl", 400, false),
    case("25-c-missing", 400, false),
    case("26-c-host-name", 488, true),
    case("27-c-multicast", 488, false),
    case("28-payload-type-overflow", 488, false),
    case("29-contact-missing", 400, true),
    case("30-contact-two-values", 400, false),
    case("31-contact-two-headers", 400, false),
    case("32-contact-wildcard", 400, false),
    case("33-contact-tel-uri", 400, false),
    case("34-request-uri-ends-in-percent", 400, false),
    case("35-xml-body", 415, false),
    case("36-from-tag-of-9000-bytes", 400, false),
];

/// The file's bytes with its placeholders filled for one send. The files are ASCII (control
/// bytes included), so they are filled as text.
fn fill(file: &str, target: SocketAddr, local: SocketAddr, transport: &str) -> Vec<u8> {
    let path = Path::new(DATA)
        .join("hostile-invites")
        .join(format!("{file}.sip"));
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8(bytes)
        .unwrap_or_else(|e| panic!("{}: not ASCII: {e}", path.display()))
        .replace("$TARGET", &target.to_string())
        .replace("$LOCAL", &local.to_string())
        .replace("$ID", &unique("h"))
        .replace("SIP/2.0/UDP", &format!("SIP/2.0/{transport}"))
        .into_bytes()
}

/// Adds one answer to the printed report, and its problem, if any, to `failures`.
fn record(
    report: &mut String,
    failures: &mut Vec<String>,
    case: &Case,
    transport: &str,
    finals: &[Message],
    extra: &str,
) {
    let starts: Vec<&str> = finals.iter().map(|m| m.start.as_str()).collect();
    report.push_str(&format!(
        "{:<40} {transport} {starts:?}{extra}\n",
        case.file
    ));
    let what = format!("{} over {transport}", case.file);
    failures.extend(judge(&what, case.status, finals));
}

/// The reason phrase of a response's status line.
fn reason(msg: &Message) -> &str {
    msg.start.splitn(3, ' ').nth(2).unwrap_or_default()
}

/// What went wrong with one answer, if anything: `finals` are the distinct final statuses
/// received for the message.
fn judge(what: &str, expected: u16, finals: &[Message]) -> Option<String> {
    let statuses: Vec<u16> = finals.iter().filter_map(Message::status).collect();
    if statuses != [expected] {
        return Some(format!(
            "{what}: got finals {statuses:?}, expected [{expected}]"
        ));
    }
    let reason = reason(&finals[0]);
    if expected == 400 && !(reason.starts_with("Bad Request (") && reason.ends_with(')')) {
        return Some(format!("{what}: 400 without the fault named: {reason:?}"));
    }
    None
}

/// Sends `bytes` from `socket` and collects the final responses to it: until a final arrives
/// and then 300 ms more (a second, different final would be a bug), or 3 s. A non-2xx final
/// is acknowledged; a 2xx (a failure of the test) is acknowledged and hung up.
fn send_udp(socket: &UdpSocket, target: SocketAddr, bytes: &[u8], uri: &str) -> Vec<Message> {
    socket.send_to(bytes, target).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let local = socket.local_addr().unwrap();
    let started = Instant::now();
    let mut final_at: Option<Instant> = None;
    let mut finals: Vec<Message> = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && let Some(msg) = Message::parse(&buf[..n])
            && let Some(status) = msg.status()
            && status >= 200
            && msg.cseq_method() == Some("INVITE")
        {
            if !finals.iter().any(|f| f.status() == Some(status)) {
                let reply = if (200..300).contains(&status) {
                    let cseq = msg.cseq_number().unwrap_or(1);
                    let ack = sip::in_dialog("ACK", &msg, local, cseq);
                    socket.send_to(&ack, target).unwrap();
                    sip::in_dialog("BYE", &msg, local, cseq + 1)
                } else {
                    sip::ack_for_failure(uri, &msg)
                };
                socket.send_to(&reply, target).unwrap();
                finals.push(msg);
            }
            final_at.get_or_insert_with(Instant::now);
        }
        let settled = final_at.is_some_and(|t| t.elapsed() > Duration::from_millis(300));
        if settled || started.elapsed() > Duration::from_secs(3) {
            return finals;
        }
    }
}

/// Sends `bytes` on a TCP connection and collects its final responses as [`send_udp`] does;
/// the second value says whether earshot closed the connection meanwhile.
fn send_tcp(conn: &mut SipTcp, bytes: &[u8]) -> (Vec<Message>, bool) {
    conn.send(bytes).unwrap();
    let started = Instant::now();
    let mut final_at: Option<Instant> = None;
    let mut finals: Vec<Message> = Vec::new();
    loop {
        match conn.recv(Duration::from_millis(50)) {
            Ok(Some(msg)) => {
                if msg.status().is_some_and(|s| s >= 200)
                    && !finals.iter().any(|f| f.status() == msg.status())
                {
                    finals.push(msg);
                    final_at.get_or_insert_with(Instant::now);
                }
            }
            Ok(None) => {}
            Err(_) => return (finals, true),
        }
        let settled = final_at.is_some_and(|t| t.elapsed() > Duration::from_millis(300));
        if settled || started.elapsed() > Duration::from_secs(3) {
            return (finals, false);
        }
    }
}

/// An OPTIONS over an open connection gets 200.
fn tcp_options_ok(conn: &mut SipTcp, target: SocketAddr) -> bool {
    let local = conn.stream.local_addr().unwrap();
    let (finals, _) = send_tcp(conn, &sip::options(local, target, &unique("o"), "tcp"));
    finals.first().and_then(Message::status) == Some(200)
}

/// A plain call: INVITE, 200 with SDP, ACK, BYE answered 200.
fn normal_call_works(earshot: &Earshot) -> Result<(), String> {
    let socket = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let rtp = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let local = socket.local_addr().unwrap();
    let target = earshot.sip_addr();
    let invite = sip::invite(local, target, &unique("call"), rtp.local_addr().unwrap());
    socket.send_to(&invite, target).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    let mut bye_sent = false;
    while Instant::now() < deadline {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(msg) = Message::parse(&buf[..n]) else {
            continue;
        };
        match (msg.cseq_method(), msg.status()) {
            (Some("INVITE"), Some(200)) if !bye_sent => {
                if msg.sdp_audio().is_none() {
                    return Err("200 OK without an SDP answer".into());
                }
                let cseq = msg.cseq_number().unwrap_or(1);
                socket
                    .send_to(&sip::in_dialog("ACK", &msg, local, cseq), target)
                    .unwrap();
                socket
                    .send_to(&sip::in_dialog("BYE", &msg, local, cseq + 1), target)
                    .unwrap();
                bye_sent = true;
            }
            (Some("INVITE"), Some(status)) if status >= 300 => {
                return Err(format!("the normal INVITE got {status}"));
            }
            (Some("BYE"), Some(200)) => return Ok(()),
            (Some("BYE"), Some(status)) if status >= 300 => {
                return Err(format!("BYE got {status}"));
            }
            _ => {}
        }
    }
    Err(format!(
        "no complete call within 10 s (BYE sent: {bye_sent})"
    ))
}

#[test]
fn hostile_invites_get_the_exact_refusal_and_never_a_2xx() {
    in_netns(
        "hostile_invites_get_the_exact_refusal_and_never_a_2xx",
        || {
            // Every file has a row and every row a file.
            let files = support::data_files(&Path::new(DATA).join("hostile-invites"), ".sip");
            let rows: Vec<&str> = CASES.iter().map(|c| c.file).collect();
            let rows: Vec<String> = rows.iter().map(|r| format!("{r}.sip")).collect();
            assert_eq!(
                files, rows,
                "CASES must cover tests/data/hostile-invites exactly"
            );
            assert!(rows.len() >= 21);

            let mut earshot = Earshot::start("[calls]\nmax_concurrent = 20\n");
            let target = earshot.sip_addr();
            let uri = format!("sip:earshot@{target}");
            let mut failures = Vec::new();
            let mut report = String::from("\nhostile INVITEs: file | transport | got\n");
            for case in CASES {
                let socket = UdpSocket::bind((LOCALHOST, 0)).unwrap();
                let local = socket.local_addr().unwrap();
                let bytes = fill(case.file, target, local, "UDP");
                let finals = send_udp(&socket, target, &bytes, &uri);
                record(&mut report, &mut failures, case, "UDP", &finals, "");
                if case.tcp {
                    let mut conn = SipTcp::connect(target).unwrap();
                    let local = conn.stream.local_addr().unwrap();
                    let bytes = fill(case.file, target, local, "TCP");
                    let (finals, closed) = send_tcp(&mut conn, &bytes);
                    let extra = format!(" closed={closed}");
                    record(&mut report, &mut failures, case, "TCP", &finals, &extra);
                    // A message that could be framed leaves the stream usable.
                    if closed || !tcp_options_ok(&mut conn, target) {
                        failures.push(format!(
                            "{} over TCP: the connection did not stay usable",
                            case.file
                        ));
                    }
                }
            }
            println!("{report}");
            assert!(
                earshot.is_running(),
                "earshot exited\n{}",
                earshot.log_tail(30)
            );
            assert_eq!(
                earshot.panics(),
                Vec::<String>::new(),
                "panics in earshot's log"
            );
            if let Err(why) = normal_call_works(&earshot) {
                failures.push(format!("normal call afterwards: {why}"));
            }
            assert!(
                failures.is_empty(),
                "{} problems:\n{}\n{}",
                failures.len(),
                failures.join("\n"),
                earshot.log_tail(20)
            );
        },
    );
}

/// RFC 4475 messages that cannot be framed on a stream, each on its own connection: every
/// request that could be framed is answered, the one that could not is answered 400 from its
/// header section, and then earshot closes the connection (RFC 3261 §18.3).
#[test]
fn tcp_refuses_unframeable_streams_with_an_answer() {
    in_netns("tcp_refuses_unframeable_streams_with_an_answer", || {
        let earshot = Earshot::start("[calls]\nmax_concurrent = 20\n");
        let target = earshot.sip_addr();
        let rfc4475 =
            |file: &str| fs::read(Path::new(DATA).join("sip-rfc4475").join(file)).unwrap();
        let hostile = |conn: &SipTcp| {
            let local = conn.stream.local_addr().unwrap();
            fill("14-two-content-lengths", target, local, "TCP")
        };
        let mut failures = Vec::new();
        // dblreq.dat: REGISTER (405: not a registrar), then an INVITE whose 150 body bytes
        // hold a malformed m= line (400), then 5 stray bytes that frame as nothing.
        // mcl01.dat: an OPTIONS with Content-Length 13 and 5: 400, then close.
        // 14-two-content-lengths: the same for an INVITE.
        for (what, expected) in [
            ("dblreq.dat", vec![405, 400]),
            ("mcl01.dat", vec![400]),
            ("14-two-content-lengths", vec![400]),
        ] {
            let mut conn = SipTcp::connect(target).unwrap();
            let bytes = if what.ends_with(".dat") {
                rfc4475(what)
            } else {
                hostile(&conn)
            };
            conn.send(&bytes).unwrap();
            let mut finals: Vec<Message> = Vec::new();
            let mut closed = false;
            let deadline = Instant::now() + Duration::from_secs(5);
            while !closed && Instant::now() < deadline {
                match conn.recv(Duration::from_millis(100)) {
                    Ok(Some(msg)) if msg.status().is_some_and(|s| s >= 200) => finals.push(msg),
                    Ok(_) => {}
                    Err(_) => closed = true,
                }
            }
            let statuses: Vec<u16> = finals.iter().filter_map(Message::status).collect();
            println!("{what} over TCP: {statuses:?}, closed={closed}");
            if statuses != expected {
                failures.push(format!(
                    "{what}: finals {statuses:?}, expected {expected:?}"
                ));
            }
            if let Some(last) = finals.last()
                && !reason(last).starts_with("Bad Request (")
            {
                failures.push(format!(
                    "{what}: 400 without the fault named: {}",
                    last.start
                ));
            }
            if !closed {
                failures.push(format!("{what}: the connection was not closed"));
            }
        }
        // The listener and new connections are unaffected.
        let mut fresh = SipTcp::connect(target).unwrap();
        if !tcp_options_ok(&mut fresh, target) {
            failures.push("a new TCP connection afterwards got no 200 to OPTIONS".into());
        }
        assert_eq!(
            earshot.panics(),
            Vec::<String>::new(),
            "panics in earshot's log"
        );
        assert!(
            failures.is_empty(),
            "{}\n{}",
            failures.join("\n"),
            earshot.log_tail(20)
        );
    });
}
