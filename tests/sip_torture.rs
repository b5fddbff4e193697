//! Bad input against the real earshot binary: the RFC 4475 and RFC 5118 torture messages, all
//! 4527 PROTOS c07-sip cases, malformed ACKs, the source allow-list, TCP size and connection
//! limits, and malformed RTP in a live call.
//!
//! Every test runs in a private network namespace with only loopback (see
//! `support::in_netns`): torture SDPs name 192.0.2.x and 10.x hosts, and an answered call
//! sends RTP there. Run with `cargo test --release --test sip_torture` (as root, or with user
//! namespaces; util-linux and iproute2 installed).
//!
//! Responses over UDP go where RFC 3261 §18.2.2 says: the source address, at the port of the
//! top Via's sent-by (5060 when absent) unless the Via has `rport`. Torture messages name
//! hosts and ports that are not ours, so the runners listen on 127.0.0.1 at every port their
//! Via headers name, plus 5060. Inside the namespace those ports are free.
//!
//! The RFC tests print a table (file, statuses received, statuses accepted, why) and the PROTOS
//! test a count of answers per case group. `EARSHOT_PROTOS_CASES=1921-1930` runs only those
//! PROTOS cases and prints every response, to reproduce a finding; `EARSHOT_TEST_LOG=debug`
//! sets earshot's log level; a failing test keeps earshot's directory and prints its log tail.

#![allow(clippy::unwrap_used)]
// Tests wait on real sockets and processes, so they read the real clock and sleep.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::sip::{self, Message};
use support::{Earshot, SipTcp, in_netns, unique};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---- RFC 4475 / RFC 5118 ---------------------------------------------------------------------

/// In an accepted set: "no response at all" is acceptable.
const SILENCE: u16 = 0;

/// What one torture message must get: one final status out of `accept` (or, with [`SILENCE`],
/// nothing). `note` says why, where it is not simply the status INDEX.md gives.
struct Expect {
    file: &'static str,
    accept: &'static [u16],
    note: &'static str,
}

const fn expect(file: &'static str, accept: &'static [u16], note: &'static str) -> Expect {
    Expect { file, accept, note }
}

/// RFC 4475, one row per file of tests/data/sip-rfc4475 (baddn.dat replaced by its corrected
/// copy, see INDEX.md). earshot is a user agent, not a registrar or proxy: it answers REGISTER
/// (and the other methods it does not serve, like MESSAGE) with 405 Method Not Allowed plus
/// Allow (RFC 3261 §8.2.1), whatever a registrar would have said about the request's contents.
/// It answers what reaches it even when the Request-URI or Via names another host: a UAS has
/// no one to forward to.
const RFC4475: &[Expect] = &[
    // §3.1.1 valid messages.
    expect(
        "wsinv.dat",
        &[481],
        "To has a tag: mid-dialog INVITE, unknown dialog (§12.2.2)",
    ),
    expect("intmeth.dat", &[501], ""),
    expect("esc01.dat", &[200], "answered; ACK+BYE sent"),
    expect("escnull.dat", &[405], "REGISTER: UA, not registrar"),
    expect("esc02.dat", &[501], "RE%47IST%45R is not REGISTER"),
    expect("lwsdisp.dat", &[200], ""),
    expect("longreq.dat", &[200], "answered; ACK+BYE sent"),
    expect(
        "dblreq.dat",
        &[405],
        "REGISTER: UA, not registrar; trailing INVITE ignored",
    ),
    expect("semiuri.dat", &[200], ""),
    expect("transports.dat", &[200], ""),
    expect("mpart01.dat", &[405], "MESSAGE is not served"),
    expect("unreason.dat", &[SILENCE], "response: never answered"),
    expect("noreason.dat", &[SILENCE], "response: never answered"),
    // §3.1.2 invalid messages.
    expect("badinv01.dat", &[400], ""),
    expect("clerr.dat", &[400], ""),
    expect("ncl.dat", &[400], ""),
    expect("scalar02.dat", &[400], ""),
    expect("scalarlg.dat", &[SILENCE], "response: discarded"),
    expect("quotbal.dat", &[400], ""),
    expect("ltgtruri.dat", &[400], ""),
    expect(
        "lwsruri.dat",
        &[400, 481],
        "liberal: LWS dropped, then To tag -> 481",
    ),
    expect("lwsstart.dat", &[400, 200], "liberal: extra SP ignored"),
    expect("trws.dat", &[400, 200], "liberal: trailing SP ignored"),
    expect(
        "escruri.dat",
        &[400, 200],
        "liberal: escaped headers stay in the URI",
    ),
    expect("baddate.dat", &[400, 200], "liberal: Date ignored"),
    expect(
        "regbadct.dat",
        &[400, 405],
        "liberal: <> inferred, then REGISTER -> 405",
    ),
    expect("badaspec.dat", &[400, 200], "liberal: spaces ignored"),
    expect(
        "variants/baddn_with_terminating_crlf.dat",
        &[400, 200],
        "liberal: quotes inferred",
    ),
    expect("badvers.dat", &[505], ""),
    expect("mismatch01.dat", &[400], ""),
    expect("mismatch02.dat", &[501, 400], "501 preferred"),
    expect("bigcode.dat", &[SILENCE], "response: dropped"),
    // §3.2–§3.4 semantics.
    expect(
        "badbranch.dat",
        &[200, 400],
        "200 via RFC 2543 matching, or 400",
    ),
    expect("insuf.dat", &[400], ""),
    expect("unkscm.dat", &[416], ""),
    expect("novelsc.dat", &[416], ""),
    expect(
        "unksm2.dat",
        &[405],
        "REGISTER: UA, not registrar (a registrar: 400)",
    ),
    expect("bext01.dat", &[420], ""),
    expect("invut.dat", &[415], ""),
    expect(
        "regaut01.dat",
        &[405],
        "REGISTER: UA, not registrar (a registrar: 401)",
    ),
    expect("multi01.dat", &[400], ""),
    expect("mcl01.dat", &[400], ""),
    expect("bcast.dat", &[SILENCE], "response: discarded"),
    expect(
        "zeromf.dat",
        &[200],
        "Max-Forwards 0 only matters to proxies",
    ),
    expect("cparam01.dat", &[405], "REGISTER: UA, not registrar"),
    expect("cparam02.dat", &[405], "REGISTER: UA, not registrar"),
    expect("regescrt.dat", &[405], "REGISTER: UA, not registrar"),
    expect("sdp01.dat", &[406, 400], ""),
    expect(
        "inv2543.dat",
        &[200],
        "RFC 2543 matching; answered, ACK+BYE sent",
    ),
    expect(
        "test.dat",
        &[400, SILENCE],
        "no SIP version, no Via: nowhere to send a 400",
    ),
];

/// RFC 5118 (tests/data/sip-rfc5118/INDEX.md). INVITEs whose offer has no codec earshot
/// speaks (only payload type 2) are refused with 488 (RFC 3264 §6).
const RFC5118: &[Expect] = &[
    expect("ipv6-good.dat", &[405], "REGISTER: UA, not registrar"),
    expect("ipv6-bad.dat", &[400], ""),
    expect("port-ambiguous.dat", &[405], "REGISTER: UA, not registrar"),
    expect(
        "port-unambiguous.dat",
        &[405],
        "REGISTER: UA, not registrar",
    ),
    expect(
        "via-received-param-with-delim.dat",
        &[481],
        "BYE for an unknown dialog",
    ),
    expect("via-received-param-no-delim.dat", &[200], ""),
    expect(
        "ipv6-in-sdp.dat",
        &[488],
        "offer has only PT 2: no common codec",
    ),
    expect("mult-ip-in-header.dat", &[481], "BYE for an unknown dialog"),
    expect("mult-ip-in-sdp.dat", &[200], "answered; ACK+BYE sent"),
    expect(
        "ipv4-mapped-ipv6.dat",
        &[488],
        "offer has only PT 2: no common codec",
    ),
    expect(
        "ipv6-bug-abnf-3-colons.dat",
        &[200, 400],
        "RFC: tolerate; implementations differ",
    ),
    expect("ipv6-correct-abnf-2-colons.dat", &[200], ""),
];

/// What earshot sent back for one message.
#[derive(Debug, Default)]
struct Outcome {
    /// Distinct final statuses to the message itself, in order of arrival.
    finals: Vec<u16>,
    provisionals: BTreeSet<u16>,
    /// Every response datagram, retransmissions included.
    datagrams: usize,
    /// The BYE we sent after a 2xx: `Some(None)` while unanswered.
    bye: Option<Option<u16>>,
    /// Responses to our ACKs (there must be none).
    answered_acks: Vec<u16>,
    /// Requests earshot sent us (there should be none within the window).
    requests: Vec<String>,
}

impl Outcome {
    fn got(&self) -> String {
        let mut got = match self.finals.as_slice() {
            [] if self.datagrams == 0 => "-".to_owned(),
            [] => "no final".to_owned(),
            finals => finals
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join("+"),
        };
        match self.bye {
            Some(Some(status)) => write!(got, " (BYE {status})").unwrap(),
            Some(None) => got.push_str(" (BYE unanswered)"),
            None => {}
        }
        if !self.answered_acks.is_empty() {
            write!(got, " (ACK answered {:?})", self.answered_acks).unwrap();
        }
        got
    }

    fn passes(&self, accept: &[u16]) -> bool {
        let status_ok = match self.finals.as_slice() {
            [] => self.datagrams == 0 && accept.contains(&SILENCE),
            [only] => accept.contains(only),
            _ => false,
        };
        // Answers to our ACKs are reported, not judged here (see
        // `malformed_ack_is_never_answered`): the ACK for a refused malformed request copies
        // its malformation.
        status_ok && matches!(self.bye, None | Some(Some(200)))
    }
}

/// The ports the message's Via headers name (`:5070;`), plus 5060: where earshot may send
/// responses to a Via without `rport`.
fn via_ports(message: &[u8]) -> BTreeSet<u16> {
    let mut ports = BTreeSet::from([5060]);
    let Some(parsed) = Message::parse(message) else {
        return ports;
    };
    for via in parsed.header_all("via") {
        let bytes = via.as_bytes();
        for (i, _) in via.match_indices(':') {
            let digits: String = via[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let after = bytes.get(i + 1 + digits.len()).copied();
            let ends = matches!(after, None | Some(b';' | b',' | b' ' | b'\t'));
            if let (true, Ok(port)) = (ends, digits.parse::<u16>()) {
                ports.insert(port);
            }
        }
    }
    ports
}

/// Sends one message to a fresh earshot as one UDP datagram from 127.0.0.1 and collects what
/// comes back for about a second. Final responses to an INVITE are acknowledged; a 2xx gets
/// ACK then BYE, so no call outlives the test.
fn run_message(earshot: &Earshot, message: &[u8]) -> Outcome {
    let source = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let local = source.local_addr().unwrap();
    let mut sockets = vec![source];
    for port in via_ports(message) {
        if port != 0 && port != local.port() && port != earshot.sip_addr().port() {
            // A port taken by something else (outside a namespace) is just not watched.
            if let Ok(socket) = UdpSocket::bind((LOCALHOST, port)) {
                sockets.push(socket);
            }
        }
    }
    for socket in &sockets {
        socket.set_nonblocking(true).unwrap();
    }
    let request_uri = String::from_utf8_lossy(message)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_default();
    let target = earshot.sip_addr();
    sockets[0].send_to(message, target).unwrap();

    let mut out = Outcome::default();
    let started = Instant::now();
    let mut final_at: Option<Instant> = None;
    let mut acked = false;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut idle = true;
        for socket in &sockets {
            while let Ok((n, _)) = socket.recv_from(&mut buf) {
                idle = false;
                let Some(msg) = Message::parse(&buf[..n]) else {
                    continue;
                };
                let Some(status) = msg.status() else {
                    out.requests.push(msg.start.clone());
                    continue;
                };
                out.datagrams += 1;
                match msg.cseq_method().unwrap_or_default() {
                    "BYE" if out.bye.is_some() => {
                        if status >= 200 {
                            out.bye = Some(Some(status));
                        }
                    }
                    "ACK" => out.answered_acks.push(status),
                    method => {
                        if status < 200 {
                            out.provisionals.insert(status);
                            continue;
                        }
                        if !out.finals.contains(&status) {
                            out.finals.push(status);
                        }
                        final_at.get_or_insert_with(Instant::now);
                        if method == "INVITE" && !acked {
                            acked = true;
                            let cseq = msg.cseq_number().unwrap_or(1);
                            if (200..300).contains(&status) {
                                let ack = sip::in_dialog("ACK", &msg, local, cseq);
                                sockets[0].send_to(&ack, target).unwrap();
                                let bye =
                                    sip::in_dialog("BYE", &msg, local, cseq.saturating_add(1));
                                sockets[0].send_to(&bye, target).unwrap();
                                out.bye = Some(None);
                            } else {
                                let ack = sip::ack_for_failure(&request_uri, &msg);
                                sockets[0].send_to(&ack, target).unwrap();
                            }
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        let elapsed = now - started;
        let settled = final_at.is_some_and(|t| now - t > Duration::from_millis(300));
        let done = match out.bye {
            // Wait for the BYE's answer, within reason.
            Some(None) => elapsed > Duration::from_secs(2),
            _ => settled || elapsed > Duration::from_secs(1),
        };
        if done {
            break;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    out
}

/// Runs a corpus, one fresh earshot per message. Two torture messages may share a branch and
/// sent-by (cparam01/cparam02, escnull/regescrt, four RFC 5118 REGISTERs...), which makes the
/// second a retransmission of the first by the §17.2.3 matching rule; a fresh earshot judges
/// each message on its own.
fn run_corpus(corpus: &str, table: &[Expect]) {
    let dir = Path::new(DATA).join(corpus);
    let mut report = format!("\n{corpus}: file | got | accepted | note\n");
    let mut failures = Vec::new();
    for row in table {
        let path = dir.join(row.file);
        let message = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut earshot = Earshot::start("[calls]\nmax_concurrent = 20\n");
        let outcome = run_message(&earshot, &message);
        let accepted = row
            .accept
            .iter()
            .map(|s| match *s {
                SILENCE => "none".to_owned(),
                s => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join("|");
        let mut pass = outcome.passes(row.accept);
        let mut note = row.note.to_owned();
        if let (Some(&first), Some(&documented)) = (outcome.finals.first(), row.accept.first())
            && first != documented
            && pass
        {
            note = format!("{note} [liberal choice]");
        }
        if !outcome.requests.is_empty() {
            note = format!("{note} [earshot sent {:?}]", outcome.requests);
        }
        let alive = earshot.is_running();
        let probe = earshot.options();
        let panics = earshot.panics();
        if !alive || probe != Some(200) || !panics.is_empty() {
            pass = false;
            note = format!(
                "{note} [afterwards: running={alive}, OPTIONS -> {probe:?}, panics {panics:?}]"
            );
        }
        let mark = if pass { "ok  " } else { "FAIL" };
        writeln!(
            report,
            "{mark} {:<42} {:<28} {:<9} {note}",
            row.file,
            outcome.got(),
            accepted
        )
        .unwrap();
        if !pass {
            failures.push(format!(
                "{}: got {} (provisional {:?}), accepted {accepted}\n{}",
                row.file,
                outcome.got(),
                outcome.provisionals,
                earshot.log_tail(15)
            ));
        }
    }
    println!("{report}");
    assert!(
        failures.is_empty(),
        "{} of {} {corpus} messages not handled as expected:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n\n")
    );
}

#[test]
fn rfc4475_torture_messages_get_the_documented_answer() {
    in_netns("rfc4475_torture_messages_get_the_documented_answer", || {
        // Every .dat in the corpus has a row (baddn.dat through its corrected variant).
        let mut files = support::data_files(&Path::new(DATA).join("sip-rfc4475"), ".dat");
        files.retain(|f| f != "baddn.dat");
        files.push("variants/baddn_with_terminating_crlf.dat".to_owned());
        files.sort();
        let mut rows: Vec<String> = RFC4475.iter().map(|r| r.file.to_owned()).collect();
        rows.sort();
        assert_eq!(
            files, rows,
            "the table must cover tests/data/sip-rfc4475 exactly"
        );
        assert_eq!(rows.len(), 50);
        run_corpus("sip-rfc4475", RFC4475);
    });
}

#[test]
fn rfc5118_ipv6_torture_messages_get_the_documented_answer() {
    in_netns(
        "rfc5118_ipv6_torture_messages_get_the_documented_answer",
        || {
            let files = support::data_files(&Path::new(DATA).join("sip-rfc5118"), ".dat");
            let mut rows: Vec<String> = RFC5118.iter().map(|r| r.file.to_owned()).collect();
            rows.sort();
            assert_eq!(
                files, rows,
                "the table must cover tests/data/sip-rfc5118 exactly"
            );
            run_corpus("sip-rfc5118", RFC5118);
        },
    );
}

/// RFC 4475 over TCP, where a stream changes the answer; every other message must get the
/// answer it gets over UDP. `finals` are the final statuses expected, in order.
const RFC4475_TCP: &[(&str, &[u16], &str)] = &[
    (
        "dblreq.dat",
        &[405, 400],
        "two requests in one stream: REGISTER 405, then the INVITE (its 150 body bytes hold \
         `m =video`: 400); the 5 bytes left frame as nothing, and the stream is closed",
    ),
    (
        "inv2543.dat",
        &[400],
        "no Content-Length on a stream (RFC 3261 §20.14): 400, then closed",
    ),
    (
        "clerr.dat",
        &[],
        "Content-Length 9999: earshot waits for the body (RFC 4475 §3.1.2.2)",
    ),
];

/// Sends one message on a fresh TCP connection and collects the distinct final statuses to
/// it (a 2xx to an INVITE gets ACK and BYE on the same connection; the second value is then
/// `Some` of the BYE's final, if any), until things settle or the connection closes.
fn run_message_tcp(earshot: &Earshot, message: &[u8]) -> (Vec<u16>, Option<Option<u16>>) {
    let mut conn = SipTcp::connect(earshot.sip_addr()).unwrap();
    let local = conn.stream.local_addr().unwrap();
    conn.send(message).unwrap();
    let mut finals = Vec::new();
    let mut bye = None;
    let mut bye_sent = false;
    let started = Instant::now();
    let mut settled_at: Option<Instant> = None;
    while settled_at.is_none_or(|t| t.elapsed() < Duration::from_millis(300))
        && started.elapsed() < Duration::from_secs(2)
    {
        let msg = match conn.recv(Duration::from_millis(50)) {
            Ok(Some(msg)) => msg,
            Ok(None) => continue,
            Err(_) => break,
        };
        let Some(status) = msg.status().filter(|s| *s >= 200) else {
            continue;
        };
        if msg.cseq_method() == Some("BYE") && bye_sent {
            bye = Some(Some(status));
            continue;
        }
        if !finals.contains(&status) {
            finals.push(status);
        }
        settled_at = Some(Instant::now());
        if msg.cseq_method() == Some("INVITE") && (200..300).contains(&status) && !bye_sent {
            let cseq = msg.cseq_number().unwrap_or(1);
            let _ = conn.send(&sip::in_dialog("ACK", &msg, local, cseq));
            let _ = conn.send(&sip::in_dialog("BYE", &msg, local, cseq + 1));
            bye_sent = true;
            bye = Some(None);
            settled_at = None;
        }
    }
    (finals, bye)
}

#[test]
fn rfc4475_torture_messages_over_tcp_get_an_answer() {
    in_netns("rfc4475_torture_messages_over_tcp_get_an_answer", || {
        let mut failures = Vec::new();
        let mut report = String::from("\nsip-rfc4475 over TCP: file | got | accepted\n");
        for row in RFC4475 {
            let message = fs::read(Path::new(DATA).join("sip-rfc4475").join(row.file)).unwrap();
            let earshot = Earshot::start("[calls]\nmax_concurrent = 20\n");
            let (finals, bye) = run_message_tcp(&earshot, &message);
            let tcp_row = RFC4475_TCP.iter().find(|(file, _, _)| *file == row.file);
            let pass = match (tcp_row, finals.as_slice()) {
                (Some((_, expected, _)), got) => got == *expected,
                (None, []) => row.accept.contains(&SILENCE),
                (None, [only]) => row.accept.contains(only),
                (None, _) => false,
            };
            let bye_ok = matches!(bye, None | Some(Some(200)));
            let panics = earshot.panics();
            let ok = pass && bye_ok && panics.is_empty();
            let accepted = match tcp_row {
                Some((_, expected, why)) => format!("{expected:?} ({why})"),
                None => format!("{:?}", row.accept),
            };
            writeln!(
                report,
                "{} {:<42} {finals:?} BYE {bye:?} {accepted}",
                if ok { "ok  " } else { "FAIL" },
                row.file
            )
            .unwrap();
            if !ok {
                failures.push(format!(
                    "{}: got {finals:?} (BYE {bye:?}), accepted {accepted}, panics {panics:?}\n{}",
                    row.file,
                    earshot.log_tail(10)
                ));
            }
        }
        println!("{report}");
        assert!(
            failures.is_empty(),
            "{} RFC 4475 messages over TCP not handled as expected:\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    });
}

/// Malformed ACKs, each as the ACK for a refused torture INVITE would be built (a UAC copies
/// the INVITE's headers into it): no Call-ID/From/To (insuf), an unterminated display name
/// (quotbal), a Request-URI in `<>` (ltgtruri).
const MALFORMED_ACKS: &[(&str, &str)] = &[
    (
        "no Call-ID, From or To",
        "ACK sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{id};rport\r\n\
         Max-Forwards: 70\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "unterminated quoted display name",
        "ACK sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{id};rport\r\n\
         Max-Forwards: 70\r\nFrom: \"Mr. J. User <sip:j.user@example.com>;tag=1\r\n\
         To: <sip:user@example.com>;tag=2\r\nCall-ID: {id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "Request-URI in <>",
        "ACK <sip:user@example.com> SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=1\r\n\
         To: <sip:user@example.com>;tag=2\r\nCall-ID: {id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    ),
];

/// ACK is the one request SIP never answers (RFC 3261 §17: it has no transaction of its own
/// to carry a response), malformed or not; a 400 to it would only add traffic.
#[test]
fn malformed_ack_is_never_answered() {
    in_netns("malformed_ack_is_never_answered", || {
        let earshot = Earshot::start("");
        let mut answered = Vec::new();
        for (what, template) in MALFORMED_ACKS {
            let socket = UdpSocket::bind((LOCALHOST, 0)).unwrap();
            let local = socket.local_addr().unwrap();
            let id = unique("ack");
            let ack = template
                .replace("{local}", &local.to_string())
                .replace("{id}", &id);
            socket.send_to(ack.as_bytes(), earshot.sip_addr()).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .unwrap();
            let mut buf = vec![0u8; 65536];
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                let start = Message::parse(&buf[..n])
                    .map(|m| m.start)
                    .unwrap_or_default();
                answered.push(format!("{what}: answered {start:?}\n  sent: {ack:?}"));
            }
        }
        assert!(earshot.options_ok(), "OPTIONS after malformed ACKs");
        assert!(
            answered.is_empty(),
            "malformed ACKs were answered:\n{}",
            answered.join("\n")
        );
    });
}

// ---- PROTOS c07-sip --------------------------------------------------------------------------

/// Largest UDP payload over IPv4; larger cases go over TCP (PROTOS itself would truncate them
/// with `-maxpdusize 65507`; TCP delivers them whole, so earshot's size limit is exercised).
const MAX_UDP: usize = 65507;
/// How long a case waits for earshot's final response before the teardown (PROTOS -replywait).
const REPLY_WAIT: Duration = Duration::from_millis(20);

/// How earshot answered one PROTOS INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Success,
    Failure,
    ProvisionalOnly,
    Silence,
    /// Sent over TCP, and earshot closed the connection without an answer.
    Closed,
}

struct Group {
    name: String,
    first: usize,
    count: usize,
    expectation: String,
}

fn protos_groups() -> Vec<Group> {
    let csv = fs::read_to_string(Path::new(DATA).join("protos-c07-sip.groups.csv")).unwrap();
    csv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, ',').collect();
            Group {
                name: fields[0].to_owned(),
                first: fields[1].parse().unwrap(),
                count: fields[2].parse().unwrap(),
                expectation: fields.get(3).map_or(String::new(), |s| (*s).to_owned()),
            }
        })
        .collect()
}

/// Unpacks tests/data/protos-c07-sip.tar.xz; returns the `cases` directory.
fn unpack_protos(into: &Path) -> PathBuf {
    let archive = Path::new(DATA).join("protos-c07-sip.tar.xz");
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap_or_else(|e| panic!("cannot run tar (needs tar and xz): {e}"));
    assert!(
        status.success(),
        "tar -xJf {} failed: {status}",
        archive.display()
    );
    into.join("cases")
}

/// A case file: `"<N> "` + N bytes of INVITE + `"<M> "` + M bytes of teardown.
fn split_case(raw: &[u8]) -> (&[u8], &[u8]) {
    fn take(raw: &[u8]) -> (&[u8], &[u8]) {
        let space = raw.iter().position(|&b| b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&raw[..space]).unwrap().parse().unwrap();
        let start = space + 1;
        (&raw[start..start + len], &raw[start + len..])
    }
    let (invite, rest) = take(raw);
    let (teardown, _) = take(rest);
    (invite, teardown)
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(i) = sip::find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// The values a case's placeholders take for our loopback target.
struct Fill {
    to: String,
    from: String,
    port: u16,
    branch: String,
    call_id: String,
    cseq: String,
}

impl Fill {
    /// Fills a template; `<Content-Length>` becomes the length of the body after filling.
    fn apply(&self, template: &[u8], method: &str) -> Vec<u8> {
        let mut bytes = template.to_vec();
        let port = self.port.to_string();
        for (placeholder, value) in [
            ("<To>", self.to.as_str()),
            ("<From>", self.from.as_str()),
            ("<From-Address>", "127.0.0.1"),
            ("<From-IP>", "127.0.0.1"),
            ("<Local-Port>", port.as_str()),
            ("<Branch-ID>", self.branch.as_str()),
            ("<Call-ID>", self.call_id.as_str()),
            ("<CSeq>", self.cseq.as_str()),
            ("<Teardown-Method>", method),
        ] {
            bytes = replace_all(&bytes, placeholder.as_bytes(), value.as_bytes());
        }
        let body = sip::find(&bytes, b"\r\n\r\n").map_or(0, |i| bytes.len() - i - 4);
        replace_all(&bytes, b"<Content-Length>", body.to_string().as_bytes())
    }
}

/// Collects the responses arriving on `own` (a socket of this exchange alone), and those on
/// `shared` whose Call-ID contains `call_id`, until `until` returns true or `wait` has passed.
fn collect(
    own: &UdpSocket,
    shared: Option<&UdpSocket>,
    call_id: &str,
    wait: Duration,
    into: &mut Vec<Message>,
    mut until: impl FnMut(&[Message]) -> bool,
) {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut idle = true;
        for (socket, filtered) in [(Some(own), false), (shared, true)] {
            let Some(socket) = socket else { continue };
            while let Ok((n, _)) = socket.recv_from(&mut buf) {
                idle = false;
                let Some(msg) = Message::parse(&buf[..n]) else {
                    continue;
                };
                let ours = !filtered || msg.header("call-id").is_some_and(|c| c.contains(call_id));
                if msg.status().is_some() && ours {
                    into.push(msg);
                }
            }
        }
        if until(into) || Instant::now() >= deadline {
            return;
        }
        if idle {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
}

/// The final response to the INVITE: to anything but our CANCEL or BYE, since a mangled CSeq
/// comes back as it was sent.
fn invite_final(responses: &[Message]) -> Option<&Message> {
    responses.iter().find(|m| {
        !matches!(m.cseq_method(), Some("CANCEL" | "BYE")) && m.status().is_some_and(|s| s >= 200)
    })
}

fn trace(responses: &[Message]) -> Vec<String> {
    responses
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.status().unwrap_or(0),
                m.cseq_method().unwrap_or("?")
            )
        })
        .collect()
}

/// `EARSHOT_PROTOS_CASES=1243-1250` (or `=1243`) limits the PROTOS run to those cases and
/// prints every response, to reproduce a finding.
fn selected_cases() -> Option<std::ops::RangeInclusive<usize>> {
    let spec = std::env::var("EARSHOT_PROTOS_CASES").ok()?;
    let (a, b) = spec.split_once('-').unwrap_or((&spec, &spec));
    Some(a.trim().parse().ok()?..=b.trim().parse().ok()?)
}

fn classify(responses: &[Message]) -> Class {
    let invite: Vec<u16> = responses
        .iter()
        .filter(|m| m.cseq_method() != Some("BYE") && m.cseq_method() != Some("CANCEL"))
        .filter_map(Message::status)
        .collect();
    if invite.iter().any(|s| (200..300).contains(s)) {
        Class::Success
    } else if invite.iter().any(|&s| s >= 300) {
        Class::Failure
    } else if invite.is_empty() {
        Class::Silence
    } else {
        Class::ProvisionalOnly
    }
}

/// What the run of one case left behind.
struct CaseResult {
    class: Class,
    statuses: Vec<u16>,
    /// Every response as `status method`, for `EARSHOT_PROTOS_CASES` runs.
    trace: Vec<String>,
    /// A 2xx whose BYE got no 200.
    bye_failed: bool,
}

/// Sends one case over UDP: INVITE, up to [`REPLY_WAIT`] for a final response, then the
/// teardown (ACK after a final response, CANCEL otherwise); a 2xx gets ACK and BYE instead.
fn run_udp_case(
    target: SocketAddr,
    catcher: &UdpSocket,
    template: (&[u8], &[u8]),
    case: usize,
) -> CaseResult {
    let socket = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    socket.set_nonblocking(true).unwrap();
    let local = socket.local_addr().unwrap();
    let fill = Fill {
        to: format!("earshot@{target}"),
        from: format!("protos@{local}"),
        port: local.port(),
        branch: unique(&format!("{case}x")),
        call_id: unique(&format!("protos{case}-")),
        cseq: (case + 1).to_string(),
    };
    let invite = fill.apply(template.0, "");
    let mut responses = Vec::new();
    if invite.len() > MAX_UDP {
        return run_tcp_case(target, &fill, &invite, template.1);
    }
    // A send can fail only for a malformed destination; earshot's answer is what matters.
    let _ = socket.send_to(&invite, target);
    collect(
        &socket,
        Some(catcher),
        &fill.call_id,
        REPLY_WAIT,
        &mut responses,
        |r| invite_final(r).is_some(),
    );
    let mut bye_failed = false;
    match invite_final(&responses).cloned() {
        Some(ok) if ok.status().is_some_and(|s| (200..300).contains(&s)) => {
            bye_failed = !hang_up(&socket, catcher, target, &ok, &fill.call_id, &mut responses);
        }
        Some(_) => {
            let _ = socket.send_to(&fill.apply(template.1, "ACK"), target);
        }
        None => {
            let _ = socket.send_to(&fill.apply(template.1, "CANCEL"), target);
            // Something is in progress: let the CANCEL finish it, then ACK its final answer.
            if !responses.is_empty() {
                collect(
                    &socket,
                    Some(catcher),
                    &fill.call_id,
                    Duration::from_millis(200),
                    &mut responses,
                    |r| invite_final(r).is_some(),
                );
                match invite_final(&responses).cloned() {
                    Some(ok) if ok.status().is_some_and(|s| (200..300).contains(&s)) => {
                        bye_failed =
                            !hang_up(&socket, catcher, target, &ok, &fill.call_id, &mut responses);
                    }
                    Some(_) => {
                        let _ = socket.send_to(&fill.apply(template.1, "ACK"), target);
                    }
                    None => {}
                }
            }
        }
    }
    CaseResult {
        class: classify(&responses),
        statuses: responses.iter().filter_map(Message::status).collect(),
        trace: trace(&responses),
        bye_failed,
    }
}

/// ACK and BYE for an answered case; true when the BYE got 200.
fn hang_up(
    socket: &UdpSocket,
    catcher: &UdpSocket,
    target: SocketAddr,
    ok: &Message,
    call_id: &str,
    responses: &mut Vec<Message>,
) -> bool {
    let local = socket.local_addr().unwrap();
    let cseq = ok.cseq_number().unwrap_or(1);
    let _ = socket.send_to(&sip::in_dialog("ACK", ok, local, cseq), target);
    let _ = socket.send_to(
        &sip::in_dialog("BYE", ok, local, cseq.wrapping_add(1)),
        target,
    );
    let bye_done = |r: &[Message]| {
        r.iter()
            .any(|m| m.cseq_method() == Some("BYE") && m.status().is_some_and(|s| s >= 200))
    };
    collect(
        socket,
        Some(catcher),
        call_id,
        Duration::from_secs(1),
        responses,
        bye_done,
    );
    responses
        .iter()
        .any(|m| m.cseq_method() == Some("BYE") && m.status() == Some(200))
}

/// Cases larger than a UDP datagram, over a TCP connection of their own.
fn run_tcp_case(target: SocketAddr, fill: &Fill, invite: &[u8], teardown: &[u8]) -> CaseResult {
    let mut conn = SipTcp::connect(target).unwrap();
    // earshot may close the connection half-way through a message over its size limit.
    let sent = conn.send(invite).is_ok();
    let mut responses = Vec::new();
    let mut closed = !sent;
    let deadline = Instant::now() + Duration::from_millis(500);
    while !closed && invite_final(&responses).is_none() && Instant::now() < deadline {
        match conn.recv(Duration::from_millis(50)) {
            Ok(Some(msg)) => responses.push(msg),
            Ok(None) => {}
            Err(_) => closed = true,
        }
    }
    let mut bye_failed = false;
    if !closed {
        match invite_final(&responses).cloned() {
            Some(ok) if ok.status().is_some_and(|s| (200..300).contains(&s)) => {
                let local = conn.stream.local_addr().unwrap();
                let cseq = ok.cseq_number().unwrap_or(1);
                let _ = conn.send(&sip::in_dialog("ACK", &ok, local, cseq));
                let _ = conn.send(&sip::in_dialog("BYE", &ok, local, cseq.wrapping_add(1)));
                bye_failed = true;
                while let Ok(Some(msg)) = conn.recv(Duration::from_secs(1)) {
                    if msg.cseq_method() == Some("BYE") && msg.status() == Some(200) {
                        bye_failed = false;
                        break;
                    }
                }
            }
            Some(_) => {
                let _ = conn.send(&fill.apply(teardown, "ACK"));
            }
            None => {
                let _ = conn.send(&fill.apply(teardown, "CANCEL"));
            }
        }
    }
    let mut class = classify(&responses);
    if closed && class == Class::Silence {
        class = Class::Closed;
    }
    CaseResult {
        class,
        statuses: responses.iter().filter_map(Message::status).collect(),
        trace: trace(&responses),
        bye_failed,
    }
}

#[test]
fn protos_c07_sip_all_cases_keep_earshot_alive() {
    in_netns("protos_c07_sip_all_cases_keep_earshot_alive", || {
        let work = support::temp_dir("protos-c07");
        let cases = unpack_protos(&work);
        let groups = protos_groups();
        let total: usize = groups.iter().map(|g| g.count).sum();
        assert_eq!(total, 4527, "groups.csv must cover every case");

        // Answered cases are hung up at once, but calls whose responses went astray (a mangled
        // Via) live until earshot gives up on the ACK: leave room for them.
        // PROTOS sends all its cases from one source, faster than the per-source INVITE and
        // stateless-response rates and transaction bound allow by default (some 150 cases a
        // second, each holding three transactions for 32 s): lift them, so every case reaches
        // the stack and every liveness probe gets a transaction.
        let mut earshot = Earshot::start(
            "[calls]\nmax_concurrent = 10000\n[sip]\ninvite_rate_per_source = 100000\n\
             invite_burst_per_source = 100000\nstateless_responses_per_source = 1000000\n\
             max_transactions = 100000\nmax_transactions_per_source = 100000\n",
        );
        let target = earshot.sip_addr();
        // Responses to a Via without port (mangled host or port) go to 5060; they are picked
        // up here and matched by Call-ID.
        let catcher = UdpSocket::bind((LOCALHOST, 5060)).unwrap();
        catcher.set_nonblocking(true).unwrap();

        let selection = selected_cases();
        let started = Instant::now();
        let mut by_class: BTreeMap<(usize, Class), usize> = BTreeMap::new();
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        let mut probes: BTreeMap<Option<u16>, usize> = BTreeMap::new();
        let mut dead_after: Vec<usize> = Vec::new();
        let mut bye_failed: Vec<usize> = Vec::new();
        let mut tcp_cases = 0;
        for (gi, group) in groups.iter().enumerate() {
            for case in group.first..group.first + group.count {
                if selection.as_ref().is_some_and(|only| !only.contains(&case)) {
                    continue;
                }
                let raw = fs::read(cases.join(format!("{case:07}"))).unwrap();
                let (invite, teardown) = split_case(&raw);
                if invite.len() > MAX_UDP {
                    tcp_cases += 1;
                }
                let result = run_udp_case(target, &catcher, (invite, teardown), case);
                if selection.is_some() {
                    println!(
                        "case {case} ({}): {:?} {:?}",
                        group.name, result.class, result.trace
                    );
                }
                *by_class.entry((gi, result.class)).or_default() += 1;
                for status in result.statuses {
                    *statuses.entry(status).or_default() += 1;
                }
                if result.bye_failed {
                    bye_failed.push(case);
                }
                // PROTOS' pass criterion: after each case, the valid case must get a reply.
                let probe = earshot.options();
                *probes.entry(probe).or_default() += 1;
                if probe.is_none() {
                    dead_after.push(case);
                    if !earshot.is_running() || dead_after.len() >= 20 {
                        break;
                    }
                }
            }
            if !earshot.is_running() || dead_after.len() >= 20 {
                break;
            }
        }
        let elapsed = started.elapsed();

        let mut report = String::from(
            "\nPROTOS c07-sip: group | cases | 2xx | 3xx-6xx | 1xx only | none | TCP closed | rtckit expectation\n",
        );
        let mut totals = [0usize; 5];
        for (gi, group) in groups.iter().enumerate() {
            let n = |class| by_class.get(&(gi, class)).copied().unwrap_or(0);
            let row = [
                n(Class::Success),
                n(Class::Failure),
                n(Class::ProvisionalOnly),
                n(Class::Silence),
                n(Class::Closed),
            ];
            for (t, v) in totals.iter_mut().zip(row) {
                *t += v;
            }
            writeln!(
                report,
                "{:<30} {:>5} {:>5} {:>7} {:>8} {:>5} {:>10}  {}",
                group.name, group.count, row[0], row[1], row[2], row[3], row[4], group.expectation
            )
            .unwrap();
        }
        writeln!(
            report,
            "{:<30} {:>5} {:>5} {:>7} {:>8} {:>5} {:>10}",
            "TOTAL", total, totals[0], totals[1], totals[2], totals[3], totals[4]
        )
        .unwrap();
        writeln!(report, "response statuses seen (datagrams): {statuses:?}").unwrap();
        writeln!(
            report,
            "liveness probes (OPTIONS status -> count): {probes:?}"
        )
        .unwrap();
        writeln!(
            report,
            "{tcp_cases} cases over {MAX_UDP} bytes sent over TCP; {} s in all",
            elapsed.as_secs()
        )
        .unwrap();
        println!("{report}");

        let alive = earshot.is_running();
        assert!(
            alive,
            "earshot exited ({:?}) during PROTOS; the last case sent was {:?}\n{}",
            earshot.exit_status(),
            dead_after.last(),
            earshot.log_tail(40)
        );
        assert!(
            dead_after.is_empty(),
            "no answer to the liveness OPTIONS after cases {dead_after:?}\n{}",
            earshot.log_tail(40)
        );
        assert_eq!(
            earshot.options(),
            Some(200),
            "earshot must still answer at the end"
        );
        assert_eq!(
            earshot.panics(),
            Vec::<String>::new(),
            "panics in earshot's log"
        );
        assert!(
            bye_failed.is_empty(),
            "answered calls whose BYE got no 200: cases {bye_failed:?}"
        );
        drop(earshot);
        let _ = fs::remove_dir_all(&work);
    });
}

// ---- Source allow-list -----------------------------------------------------------------------

#[test]
fn sip_from_sources_outside_the_allow_list_is_ignored() {
    in_netns("sip_from_sources_outside_the_allow_list_is_ignored", || {
        let allowed: IpAddr = "127.0.0.2".parse().unwrap();
        let earshot = Earshot::start_probing_from("[sip]\nallow = [\"127.0.0.2/32\"]\n", allowed);
        assert_eq!(
            earshot.options_from(allowed, Duration::from_secs(2)),
            Some(200),
            "OPTIONS from the allowed 127.0.0.2"
        );
        assert_eq!(
            earshot.options_from(LOCALHOST, Duration::from_secs(1)),
            None,
            "OPTIONS from 127.0.0.1 must get no answer at all"
        );

        // Over TCP (from 127.0.0.1, outside the list): no answer, and the connection is closed
        // rather than left holding one of the connection slots.
        let mut conn = SipTcp::connect(earshot.sip_addr()).unwrap();
        let local = conn.stream.local_addr().unwrap();
        let _ = conn.send(&sip::options(
            local,
            earshot.sip_addr(),
            &unique("deny-"),
            "tcp",
        ));
        let answer = conn.recv(Duration::from_secs(1));
        assert!(
            !matches!(answer, Ok(Some(_))),
            "a TCP OPTIONS from 127.0.0.1 was answered: {answer:?}"
        );
        assert!(
            conn.closed_within(Duration::from_secs(2)),
            "earshot kept a TCP connection from a source outside [sip] allow open"
        );
        assert_eq!(
            earshot.options_from(allowed, Duration::from_secs(2)),
            Some(200)
        );
    });
}

// ---- TCP limits ------------------------------------------------------------------------------

/// An OPTIONS over an open connection gets 200.
fn tcp_options(conn: &mut SipTcp, target: SocketAddr) -> Option<u16> {
    conn.options_status(target)
}

#[test]
fn sip_tcp_limits_close_oversized_messages_and_extra_connections() {
    in_netns(
        "sip_tcp_limits_close_oversized_messages_and_extra_connections",
        || {
            let earshot =
                Earshot::start("[sip]\nmax_message_bytes = 8192\nmax_tcp_connections = 8\n");
            let target = earshot.sip_addr();

            // max_tcp_connections = 8: eight connections are served...
            let mut conns: Vec<SipTcp> = (0..8).map(|_| SipTcp::connect(target).unwrap()).collect();
            for (i, conn) in conns.iter_mut().enumerate() {
                assert_eq!(tcp_options(conn, target), Some(200), "connection {i} of 8");
            }
            // ...a ninth and tenth are closed at once, unanswered...
            for i in 0..2 {
                let mut extra = SipTcp::connect(target).unwrap();
                let local = extra.stream.local_addr().unwrap();
                let _ = extra.send(&sip::options(local, target, &unique("extra-"), "tcp"));
                assert!(
                    extra.closed_within(Duration::from_secs(2)),
                    "connection {} beyond max_tcp_connections = 8 was not closed",
                    9 + i
                );
            }
            // ...while the eight keep working.
            for (i, conn) in conns.iter_mut().enumerate() {
                assert_eq!(
                    tcp_options(conn, target),
                    Some(200),
                    "connection {i} after the refusals"
                );
            }
            // Closing one frees its slot for a newcomer.
            drop(conns.pop());
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut reused = false;
            while !reused && Instant::now() < deadline {
                let mut conn = SipTcp::connect(target).unwrap();
                reused = tcp_options(&mut conn, target) == Some(200);
                if !reused {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            assert!(reused, "a slot freed by a closed connection was not reused");
            drop(conns);
            std::thread::sleep(Duration::from_millis(200));

            // max_message_bytes = 8192: a header that never ends is cut off past the limit.
            let mut big = connect_with_retry(target);
            let mut closed_while_writing = false;
            let head = b"OPTIONS sip:earshot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKbig\r\nX-Filler: ";
            if big.send(head).is_err() {
                closed_while_writing = true;
            }
            for _ in 0..32 {
                if closed_while_writing {
                    break;
                }
                // 32 KiB in 1 KiB pieces, never a blank line.
                if big.send(&[b'a'; 1024]).is_err() {
                    closed_while_writing = true;
                }
            }
            assert!(
                closed_while_writing || big.closed_within(Duration::from_secs(3)),
                "a 32 KiB header without end was not cut off at max_message_bytes = 8192"
            );

            // A complete message whose body takes it past the limit is refused the same way.
            let mut long = connect_with_retry(target);
            let local = long.stream.local_addr().unwrap();
            let mut options = sip::options(local, target, &unique("long-"), "tcp");
            let body = vec![b'x'; 12_000];
            options = String::from_utf8(options)
                .unwrap()
                .replace(
                    "Content-Length: 0",
                    &format!("Content-Length: {}", body.len()),
                )
                .into_bytes();
            options.extend_from_slice(&body);
            let wrote = long.send(&options).is_ok();
            let answered = matches!(long.recv(Duration::from_secs(1)), Ok(Some(_)));
            assert!(
                !wrote || (!answered && long.closed_within(Duration::from_secs(3))),
                "a 12 KB message was answered or left open with max_message_bytes = 8192"
            );

            let mut small = connect_with_retry(target);
            assert_eq!(
                tcp_options(&mut small, target),
                Some(200),
                "TCP after the oversized ones"
            );
            assert!(earshot.options_ok(), "UDP after the oversized ones");
            assert_eq!(
                earshot.panics(),
                Vec::<String>::new(),
                "panics in earshot's log"
            );
        },
    );
}

/// Connects, retrying briefly while earshot releases slots of connections just closed.
fn connect_with_retry(target: SocketAddr) -> SipTcp {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match SipTcp::connect(target) {
            Ok(conn) => return conn,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {target}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

// ---- Malformed RTP ---------------------------------------------------------------------------

/// RTP packets earshot sent to `socket` (version 2, payload type PCMU or PCMA) within `wait`.
fn count_rtp(socket: &UdpSocket, wait: Duration) -> usize {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    let mut count = 0;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n >= 12 && buf[0] >> 6 == 2 && matches!(buf[1] & 0x7f, 0 | 8) => {
                count += 1;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("RTP socket: {e}"),
        }
    }
    count
}

/// An RTP header (RFC 3550 §5.1) with the given first two bytes, then `payload`.
fn rtp(b0: u8, b1: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![b0, b1];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Everything wrong an RTP or RTCP datagram can be, short of valid.
fn garbage() -> Vec<Vec<u8>> {
    let ulaw = [0xffu8; 160];
    let ssrc = 0x1234_5678;
    let mut all = vec![
        Vec::new(),
        vec![0x80],
        vec![0x80, 0x00, 0x00],
        vec![0x80; 11],
        rtp(0x80, 0x00, 1, 160, ssrc, &[]),
        rtp(0x40, 0x00, 2, 320, ssrc, &ulaw),    // version 1
        rtp(0x00, 0x00, 3, 480, ssrc, &ulaw),    // version 0
        rtp(0xc0, 0x00, 4, 640, ssrc, &ulaw),    // version 3
        rtp(0x80, 0x60, 5, 800, ssrc, &ulaw),    // PT 96, not negotiated
        rtp(0x80, 0x7f, 6, 960, ssrc, &ulaw),    // PT 127
        rtp(0x80, 0xc8, 7, 1120, ssrc, &ulaw),   // marker + PT 72: looks like an RTCP SR
        rtp(0x80, 0x0d, 8, 1280, ssrc, &[0x7f]), // comfort noise, 1 byte
        rtp(0x80, 0x65, 9, 1440, ssrc, &[0x05]), // PT 101, truncated telephone-event
        rtp(0x80, 0x65, 10, 1600, ssrc, &[0xff, 0xbf, 0xff, 0xff]), // event 255, max volume
        rtp(0x8f, 0x00, 11, 1760, ssrc, &[0; 8]), // 15 CSRCs announced, 2 present
        rtp(0x90, 0x00, 12, 1920, ssrc, &[0xbe, 0xde, 0xff, 0xff, 1, 2]), // extension overruns
        rtp(0xa0, 0x00, 13, 2080, ssrc, &[0x00, 0x00, 0xff]), // padding count 255 > packet
        rtp(0xa0, 0x00, 14, 2240, ssrc, &[0x00]), // padding count 0
        rtp(0x80, 0x00, 0xffff, u32::MAX, ssrc, &ulaw), // sequence and timestamp at the wrap
        rtp(0x80, 0x00, 0x7fff, 0, 0, &ulaw),    // SSRC 0, sequence jump
        rtp(0x80, 0x00, 15, 2400, ssrc, &[0xffu8; 4000]), // larger than any read buffer
        vec![0x81, 0xc8, 0xff, 0xff, 0, 0, 0, 1], // RTCP SR with a huge length
        vec![0x80, 0xc9, 0x00, 0x01, 0, 0, 0, 1], // RTCP RR, length one word too long
        vec![0x80, 0xcb, 0x00, 0x00],            // RTCP BYE without SSRC
        vec![0x81, 0xca, 0x00, 0x02, 0, 0, 0, 1, 1, 0xff, b'x', 0], // SDES item overruns
    ];
    for len in [1usize, 12, 13, 64, 172, 500, 1499, 1500, 1501, 9000] {
        all.push((0..len).map(|_| rand::random::<u8>()).collect());
    }
    all
}

#[test]
fn rtp_garbage_does_not_break_a_call() {
    in_netns("rtp_garbage_does_not_break_a_call", || {
        let mut earshot = Earshot::start("");
        let target = earshot.sip_addr();
        let signalling = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        signalling.set_nonblocking(true).unwrap();
        let local = signalling.local_addr().unwrap();
        let media = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let call_id = unique("rtp-");
        let invite = sip::invite(local, target, &call_id, media.local_addr().unwrap());
        signalling.send_to(&invite, target).unwrap();
        let mut responses = Vec::new();
        collect(
            &signalling,
            None,
            &call_id,
            Duration::from_secs(3),
            &mut responses,
            |r| invite_final(r).is_some(),
        );
        let ok = invite_final(&responses)
            .cloned()
            .unwrap_or_else(|| panic!("no final answer to the INVITE\n{}", earshot.log_tail(20)));
        assert_eq!(ok.status(), Some(200), "INVITE answered {:?}", ok.start);
        let cseq = ok.cseq_number().unwrap();
        signalling
            .send_to(&sip::in_dialog("ACK", &ok, local, cseq), target)
            .unwrap();
        let earshot_rtp = ok.sdp_audio().expect("the 200 OK carries an SDP answer");
        let earshot_rtcp = SocketAddr::new(earshot_rtp.ip(), earshot_rtp.port() + 1);

        // We have not sent RTP yet: earshot waits its 1 s grace for a silent caller first.
        let before = count_rtp(&media, Duration::from_millis(2000));
        assert!(
            before >= 10,
            "earshot sent {before} RTP packets in 2 s before any garbage"
        );

        // Garbage from our own media address and from a stranger, to RTP and RTCP.
        let stranger = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        for round in 0..3 {
            for packet in garbage() {
                for from in [&media, &stranger] {
                    for to in [earshot_rtp, earshot_rtcp] {
                        // A 9000-byte datagram may be refused locally; the rest must go.
                        let _ = from.send_to(&packet, to);
                    }
                }
            }
            // A few valid packets from the stranger: fewer than learn_packets (4), so they
            // must not move earshot's media away from us.
            for i in 0..3u16 {
                let p = rtp(
                    0x80,
                    0x00,
                    40_000 + i + round * 3,
                    0,
                    0xdead_beef,
                    &[0xff; 160],
                );
                let _ = stranger.send_to(&p, earshot_rtp);
            }
        }
        assert!(
            earshot.is_running(),
            "earshot died on malformed RTP:\n{}",
            earshot.log_tail(30)
        );

        // Then a second of valid PCMU from us, 20 ms apart, while earshot keeps sending.
        let mut received = 0;
        for i in 0..50u16 {
            let p = rtp(
                0x80,
                0x00,
                1000 + i,
                160 * u32::from(i),
                0x0bad_cafe,
                &[0xff; 160],
            );
            media.send_to(&p, earshot_rtp).unwrap();
            received += count_rtp(&media, Duration::from_millis(20));
        }
        assert!(
            received >= 25,
            "earshot sent {received} RTP packets to us in the second after the garbage (~50 due)\n{}",
            earshot.log_tail(20)
        );
        assert!(
            earshot.is_running(),
            "earshot exited:\n{}",
            earshot.log_tail(30)
        );
        assert!(earshot.options_ok(), "OPTIONS after malformed RTP");
        assert_eq!(
            earshot.panics(),
            Vec::<String>::new(),
            "panics in earshot's log"
        );

        let bye = sip::in_dialog("BYE", &ok, local, cseq + 1);
        signalling.send_to(&bye, target).unwrap();
        let mut after = Vec::new();
        collect(
            &signalling,
            None,
            &call_id,
            Duration::from_secs(2),
            &mut after,
            |r| r.iter().any(|m| m.cseq_method() == Some("BYE")),
        );
        let bye_status = after
            .iter()
            .find(|m| m.cseq_method() == Some("BYE"))
            .and_then(Message::status);
        assert_eq!(
            bye_status,
            Some(200),
            "BYE after malformed RTP\n{}",
            earshot.log_tail(20)
        );
    });
}
