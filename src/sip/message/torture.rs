//! The parser against the SIP torture tests: every RFC 4475 and RFC 5118 message in
//! `tests/data` lands in the class its RFC gives it (or our documented liberal choice), and no
//! PROTOS c07-sip case makes parse(), serialization or the stream framer panic.

use std::path::{Path, PathBuf};

use super::{FramingError, Message, Method, ParseError, Request, Response, StreamFramer, parse};

/// What a torture message must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Request,
    Response,
    /// Refused; answered with this status.
    Reply(u16),
    /// Refused; dropped without answer (responses, requests without Via).
    Drop,
}

use Expect::{Drop, Reply};

const RFC4475: &[(&str, Expect)] = &[
    // §3.1.1 valid messages.
    ("wsinv.dat", Expect::Request),
    ("intmeth.dat", Expect::Request),
    ("esc01.dat", Expect::Request),
    ("escnull.dat", Expect::Request),
    ("esc02.dat", Expect::Request),
    ("lwsdisp.dat", Expect::Request),
    ("longreq.dat", Expect::Request),
    ("dblreq.dat", Expect::Request),
    ("semiuri.dat", Expect::Request),
    ("transports.dat", Expect::Request),
    ("mpart01.dat", Expect::Request),
    ("unreason.dat", Expect::Response),
    ("noreason.dat", Expect::Response),
    // §3.1.2 invalid messages.
    ("badinv01.dat", Reply(400)),
    ("clerr.dat", Reply(400)),
    ("ncl.dat", Reply(400)),
    ("scalar02.dat", Reply(400)),
    ("scalarlg.dat", Drop),
    ("quotbal.dat", Reply(400)),
    ("ltgtruri.dat", Reply(400)),
    ("lwsruri.dat", Reply(400)),
    ("lwsstart.dat", Reply(400)),
    ("trws.dat", Expect::Request),     // liberal: trailing SP ignored
    ("escruri.dat", Expect::Request),  // liberal: stays a URI header
    ("baddate.dat", Expect::Request),  // liberal: Date is never parsed
    ("regbadct.dat", Expect::Request), // liberal: <> inferred
    ("badaspec.dat", Expect::Request), // liberal: spaces in <> ignored
    ("baddn.dat", Expect::Request),    // liberal: quotes inferred, missing final CRLF tolerated
    ("badvers.dat", Reply(505)),
    ("mismatch01.dat", Reply(400)),
    ("mismatch02.dat", Expect::Request), // the endpoint answers 501
    ("bigcode.dat", Drop),
    // §3.2–3.4 semantic tests: parse, the endpoint answers.
    ("badbranch.dat", Expect::Request),
    ("insuf.dat", Reply(400)),
    ("unkscm.dat", Expect::Request),
    ("novelsc.dat", Expect::Request),
    ("unksm2.dat", Expect::Request),
    ("bext01.dat", Expect::Request),
    ("invut.dat", Expect::Request),
    ("regaut01.dat", Expect::Request),
    ("multi01.dat", Reply(400)),
    ("mcl01.dat", Reply(400)),
    ("bcast.dat", Expect::Response),
    ("zeromf.dat", Expect::Request),
    ("cparam01.dat", Expect::Request),
    ("cparam02.dat", Expect::Request),
    ("regescrt.dat", Expect::Request),
    ("sdp01.dat", Expect::Request),
    ("inv2543.dat", Expect::Request),
    // Stray archive file: no SIP version and no Via, so no response can be routed.
    ("test.dat", Drop),
    ("variants/baddn_with_terminating_crlf.dat", Expect::Request),
];

const RFC5118: &[(&str, Expect)] = &[
    ("ipv6-good.dat", Expect::Request),
    ("ipv6-bad.dat", Reply(400)),
    ("port-ambiguous.dat", Expect::Request),
    ("port-unambiguous.dat", Expect::Request),
    ("via-received-param-with-delim.dat", Expect::Request),
    ("via-received-param-no-delim.dat", Expect::Request),
    ("ipv6-in-sdp.dat", Expect::Request),
    ("mult-ip-in-header.dat", Expect::Request),
    ("mult-ip-in-sdp.dat", Expect::Request),
    ("ipv4-mapped-ipv6.dat", Expect::Request),
    ("ipv6-bug-abnf-3-colons.dat", Expect::Request), // §4.10: tolerated
    ("ipv6-correct-abnf-2-colons.dat", Expect::Request),
];

fn data_dir(corpus: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(corpus)
}

fn read(corpus: &str, file: &str) -> Vec<u8> {
    let path = data_dir(corpus).join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn request(corpus: &str, file: &str) -> Request {
    match parse(&read(corpus, file)) {
        Ok(Message::Request(request)) => request,
        other => panic!("{file}: expected a request, got {other:?}"),
    }
}

fn response(corpus: &str, file: &str) -> Response {
    match parse(&read(corpus, file)) {
        Ok(Message::Response(response)) => response,
        other => panic!("{file}: expected a response, got {other:?}"),
    }
}

fn class(result: &Result<Message, ParseError>) -> Expect {
    match result {
        Ok(Message::Request(_)) => Expect::Request,
        Ok(Message::Response(_)) => Expect::Response,
        Err(error) => error.reply().map_or(Drop, |(status, _)| Reply(status)),
    }
}

/// Serializing a parsed message and parsing it again reaches a fixpoint: same message, except
/// that Content-Length is now always present and exact.
fn assert_reserializes(message: &Message, what: &str) {
    let bytes = message.to_bytes();
    let again = parse(&bytes).unwrap_or_else(|e| panic!("{what}: reparse failed: {e}"));
    assert_eq!(
        again.to_bytes(),
        bytes,
        "{what}: serialization is not a fixpoint"
    );
    assert_eq!(again.body(), message.body(), "{what}");
    let same_start = match (&again, message) {
        (Message::Request(a), Message::Request(b)) => a.method == b.method && a.uri == b.uri,
        (Message::Response(a), Message::Response(b)) => {
            a.status == b.status && a.reason == b.reason
        }
        _ => false,
    };
    assert!(same_start, "{what}: start line changed");
}

fn check_corpus(corpus: &str, table: &[(&str, Expect)]) {
    let mut listed: Vec<String> = Vec::new();
    for sub in ["", "variants"] {
        let Ok(entries) = std::fs::read_dir(data_dir(corpus).join(sub)) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".dat") {
                listed.push(if sub.is_empty() {
                    name
                } else {
                    format!("{sub}/{name}")
                });
            }
        }
    }
    listed.sort();
    let mut expected: Vec<String> = table.iter().map(|(f, _)| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected, "every {corpus} file has an expectation");
    for (file, expect) in table {
        let result = parse(&read(corpus, file));
        assert_eq!(class(&result), *expect, "{corpus}/{file}: {result:?}");
        if let Ok(message) = &result {
            assert_reserializes(message, file);
        }
    }
}

#[test]
fn rfc4475_messages_land_in_their_class() {
    check_corpus("sip-rfc4475", RFC4475);
}

#[test]
fn rfc5118_messages_land_in_their_class() {
    check_corpus("sip-rfc5118", RFC5118);
}

#[test]
fn wsinv_unfolds_lines_and_reads_lws_everywhere() {
    let r = request("sip-rfc4475", "wsinv.dat");
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.param("unknownparam"), Some(None));
    assert_eq!(r.headers.max_forwards(), Some(68));
    let cseq = r.headers.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    assert_eq!(r.headers.to().unwrap().tag(), Some("1918181833n"));
    let from = r.headers.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    let vias = r.headers.vias();
    let sent_by: Vec<_> = vias
        .iter()
        .map(|v| (v.transport.as_str(), v.host.as_str(), v.branch()))
        .collect();
    assert_eq!(
        sent_by,
        vec![
            ("UDP", "192.0.2.2", Some("390skdjuw")),
            ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")),
            ("UDP", "192.168.255.111", Some("z9hG4bK30239")),
        ]
    );
    let contact = r.headers.contact().unwrap();
    assert_eq!(contact.display.as_deref(), Some("Quoted string \"\""));
    assert_eq!(contact.param("newparam"), Some(Some("newvalue")));
    assert_eq!(contact.param("secondparam"), Some(None));
    assert_eq!(contact.param("q"), Some(Some("0.33")));
    assert_eq!(
        r.headers.get("newfangledheader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        r.headers.get("UnknownHeaderWithUnusualValue"),
        Some(";;,,;;,;")
    );
    assert_eq!(r.headers.get("subject"), Some(""));
    assert_eq!(
        r.headers.content_media_type().as_deref(),
        Some("application/sdp")
    );
    assert_eq!(r.body.len(), 150);
}

#[test]
fn intmeth_keeps_an_unknown_method_and_odd_characters() {
    let r = request("sip-rfc4475", "intmeth.dat");
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(r.method, Method::Other(method.to_owned()));
    assert_eq!(r.headers.cseq().unwrap().method, r.method);
    assert_eq!(
        r.uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        r.uri.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(r.uri.host, "example.com");
    assert_eq!(
        r.headers.to().unwrap().display.as_deref(),
        Some("BEL:\x07 NUL:\0 DEL:\x7f")
    );
    let from = r.headers.from().unwrap();
    assert_eq!(
        from.display.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        r.headers.get("extensionHeader-!.%*+_`'~"),
        Some("\u{FEFF}大停電")
    );
}

#[test]
fn esc01_unescapes_user_parts() {
    let r = request("sip-rfc4475", "esc01.dat");
    assert_eq!(r.uri.user.as_deref(), Some("sips:user@example.com"));
    assert_eq!(r.uri.host, "example.net");
    assert_eq!(r.headers.to().unwrap().uri.user.as_deref(), Some("user"));
    assert_eq!(
        r.headers.from().unwrap().uri.user.as_deref(),
        Some("I have spaces")
    );
    let contact = r.headers.contact().unwrap();
    assert_eq!(contact.uri.user.as_deref(), Some("caller"));
    assert_eq!(contact.uri.params.len(), 2);
    assert_eq!(
        r.uri.to_string(),
        "sip:sips%3Auser%40example.com@example.net"
    );
}

#[test]
fn escnull_keeps_escaped_nuls() {
    let r = request("sip-rfc4475", "escnull.dat");
    assert_eq!(
        r.headers.to().unwrap().uri.user.as_deref(),
        Some("null-\0-null")
    );
    let users: Vec<_> = r
        .headers
        .values("contact")
        .into_iter()
        .map(|c| super::NameAddr::parse(c).unwrap().uri.user)
        .collect();
    assert_eq!(users, vec![Some("\0".to_owned()), Some("\0\0".to_owned())]);
}

#[test]
fn esc02_percent_in_method_and_header_name_is_not_an_escape() {
    let r = request("sip-rfc4475", "esc02.dat");
    assert_eq!(r.method, Method::Other("RE%47IST%45R".to_owned()));
    assert_eq!(r.headers.values("contact").len(), 2);
    assert_eq!(r.headers.to().unwrap().display.as_deref(), Some("%Z%45"));
    assert_eq!(
        r.headers.via().unwrap().branch(),
        Some("z9hG4bK209%fzsnel234")
    );
}

#[test]
fn lwsdisp_display_name_needs_no_space_before_angle() {
    let r = request("sip-rfc4475", "lwsdisp.dat");
    assert_eq!(r.headers.from().unwrap().display.as_deref(), Some("caller"));
}

#[test]
fn longreq_long_values_and_many_vias() {
    let r = request("sip-rfc4475", "longreq.dat");
    assert_eq!(r.headers.vias().len(), 34);
    let to = r.headers.to().unwrap();
    assert!(to.display.unwrap().ends_with("extreme proportion"));
    assert_eq!(to.uri.port, Some(6000));
    assert!(to.uri.params.len() >= 3);
    assert!(r.headers.vias().last().unwrap().branch().unwrap().len() > 200);
    let tag = r.headers.from().unwrap().tag().unwrap().to_owned();
    assert!(tag.starts_with("1298298") && tag.len() > 100);
    assert!(r.headers.call_id().unwrap().len() > 100);
    assert_eq!(r.body.len(), 150);
}

#[test]
fn dblreq_ignores_the_second_request_in_the_datagram() {
    let r = request("sip-rfc4475", "dblreq.dat");
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());
}

#[test]
fn semiuri_user_part_holds_semicolons() {
    let r = request("sip-rfc4475", "semiuri.dat");
    assert_eq!(r.uri.user.as_deref(), Some("user;par=u@example.net"));
    assert_eq!(r.uri.host, "example.com");
    assert!(r.uri.params.is_empty());
    assert_eq!(r.headers.values("accept").len(), 6);
}

#[test]
fn transports_keeps_unknown_transports() {
    let r = request("sip-rfc4475", "transports.dat");
    let transports: Vec<_> = r.headers.vias().into_iter().map(|v| v.transport).collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

#[test]
fn mpart01_binary_body_is_framed_by_content_length() {
    let r = request("sip-rfc4475", "mpart01.dat");
    let length: usize = r.headers.get("content-length").unwrap().parse().unwrap();
    assert_eq!(r.body.len(), length);
    assert_eq!(
        r.headers.content_media_type().as_deref(),
        Some("multipart/mixed")
    );
}

#[test]
fn unreason_and_noreason_reason_phrases() {
    let r = response("sip-rfc4475", "unreason.dat");
    assert_eq!(r.status, 200);
    assert!(r.reason.ends_with("простое"));
    let r = response("sip-rfc4475", "noreason.dat");
    assert_eq!((r.status, r.reason.as_str()), (100, ""));
}

#[test]
fn unknown_uri_schemes_parse_for_a_416() {
    let r = request("sip-rfc4475", "unkscm.dat");
    assert_eq!(r.uri.scheme, "nobodyknowsthisscheme");
    assert!(!r.uri.is_sip());
    let r = request("sip-rfc4475", "novelsc.dat");
    assert_eq!(r.uri.scheme, "soap.beep");
    let r = request("sip-rfc4475", "unksm2.dat");
    assert_eq!(r.headers.to().unwrap().uri.scheme, "isbn");
    assert_eq!(r.headers.from().unwrap().uri.scheme, "http");
    assert_eq!(r.headers.contact().unwrap().uri.scheme, "name");
}

#[test]
fn cparam_parameters_belong_to_header_or_uri_by_angle_brackets() {
    let c = request("sip-rfc4475", "cparam01.dat")
        .headers
        .contact()
        .unwrap();
    assert_eq!(
        (c.param("unknownparam"), c.uri.param("unknownparam")),
        (Some(None), None)
    );
    let c = request("sip-rfc4475", "cparam02.dat")
        .headers
        .contact()
        .unwrap();
    assert_eq!(
        (c.param("unknownparam"), c.uri.param("unknownparam")),
        (None, Some(None))
    );
}

#[test]
fn escaped_uri_headers_never_become_message_headers() {
    let r = request("sip-rfc4475", "regescrt.dat");
    let contact = r.headers.contact().unwrap();
    assert_eq!(
        contact.uri.headers,
        vec![("Route".to_owned(), "%3Csip:sip.example.com%3E".to_owned())]
    );
    assert!(!r.headers.contains("route"));
    let r = request("sip-rfc4475", "escruri.dat");
    assert_eq!(r.uri.headers.len(), 1);
    assert!(!r.headers.contains("route"));
}

#[test]
fn zeromf_badbranch_and_inv2543_parse_for_the_endpoint() {
    assert_eq!(
        request("sip-rfc4475", "zeromf.dat").headers.max_forwards(),
        Some(0)
    );
    let via = request("sip-rfc4475", "badbranch.dat")
        .headers
        .via()
        .unwrap();
    assert_eq!(via.branch(), Some("z9hG4bK"));
    let r = request("sip-rfc4475", "inv2543.dat");
    assert_eq!(r.headers.via().unwrap().branch(), None);
    assert_eq!(r.headers.max_forwards(), None);
    let r = request("sip-rfc4475", "mismatch02.dat");
    assert_eq!(r.method, Method::Other("NEWMETHOD".to_owned()));
    assert_eq!(r.headers.cseq().unwrap().method, Method::Invite);
}

#[test]
fn refused_requests_carry_the_headers_for_a_stateless_reply() {
    let error = parse(&read("sip-rfc4475", "insuf.dat")).unwrap_err();
    let (status, headers) = error.reply().unwrap();
    assert_eq!(status, 400);
    assert_eq!(headers.via().unwrap().branch(), Some("z9hG4bKkdj.insuf"));
    assert_eq!(headers.cseq().unwrap().seq, 193942);
    let error = parse(&read("sip-rfc4475", "badvers.dat")).unwrap_err();
    let (status, headers) = error.reply().unwrap();
    assert_eq!(status, 505);
    assert_eq!(headers.call_id(), Some("badvers.31417@c.example.com"));
}

#[test]
fn liberal_accepts_keep_the_obvious_meaning() {
    let r = request("sip-rfc4475", "baddn.dat");
    assert_eq!(
        r.headers.from().unwrap().display.as_deref(),
        Some("Bell, Alexander")
    );
    let r = request("sip-rfc4475", "badaspec.dat");
    assert_eq!(r.headers.to().unwrap().uri.host, "example.org");
    let r = request("sip-rfc4475", "trws.dat");
    assert_eq!(r.uri.user.as_deref(), Some("remote-target"));
}

#[test]
fn rfc5118_ipv6_references_in_uris_and_vias() {
    let r = request("sip-rfc5118", "ipv6-good.dat");
    assert_eq!((r.uri.host.as_str(), r.uri.port), ("2001:db8::10", None));
    assert_eq!(r.headers.via().unwrap().host, "2001:db8::9:1");
    assert_eq!(r.headers.contact().unwrap().uri.host, "2001:db8::1");
    let r = request("sip-rfc5118", "port-ambiguous.dat");
    assert_eq!(
        (r.uri.host.as_str(), r.uri.port),
        ("2001:db8::10:5070", None)
    );
    let r = request("sip-rfc5118", "port-unambiguous.dat");
    assert_eq!(
        (r.uri.host.as_str(), r.uri.port),
        ("2001:db8::10", Some(5070))
    );
    let r = request("sip-rfc5118", "via-received-param-with-delim.dat");
    assert_eq!(
        r.headers.via().unwrap().received(),
        Some("[2001:db8::9:255]")
    );
    let r = request("sip-rfc5118", "via-received-param-no-delim.dat");
    assert_eq!(r.headers.via().unwrap().received(), Some("2001:db8::9:255"));
    let r = request("sip-rfc5118", "mult-ip-in-header.dat");
    let vias: Vec<_> = r
        .headers
        .vias()
        .into_iter()
        .map(|v| (v.host, v.port))
        .collect();
    assert_eq!(
        vias,
        vec![
            ("2001:db8::9:1".to_owned(), Some(6050)),
            ("192.0.2.1".to_owned(), None),
            ("2001:db8::9:255".to_owned(), None),
        ]
    );
    let r = request("sip-rfc5118", "ipv4-mapped-ipv6.dat");
    let via = r.headers.via().unwrap();
    assert_eq!(
        (via.host.as_str(), via.port),
        ("::ffff:192.0.2.10", Some(19823))
    );
    let r = request("sip-rfc5118", "ipv6-bug-abnf-3-colons.dat");
    assert_eq!(r.uri.host, "2001:db8:::192.0.2.1");
}

/// Fills a PROTOS template in for a loopback target; Content-Length from the body.
fn fill_protos(template: &[u8], case: usize) -> Vec<u8> {
    let case = case.to_string();
    let values = [
        (&b"<To>"[..], "user@127.0.0.1"),
        (b"<From>", "protos@127.0.0.1"),
        (b"<From-Address>", "127.0.0.1"),
        (b"<From-IP>", "127.0.0.1"),
        (b"<Local-Port>", "5061"),
        (b"<Branch-ID>", case.as_str()),
        (b"<Call-ID>", case.as_str()),
        (b"<CSeq>", "1"),
        (b"<Teardown-Method>", "CANCEL"),
    ];
    let mut text = Vec::with_capacity(template.len());
    let mut length_at = Vec::new();
    let mut rest = template;
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'<' {
            if rest.starts_with(b"<Content-Length>") {
                length_at.push(text.len());
                rest = &rest[b"<Content-Length>".len()..];
                continue;
            }
            if let Some((name, value)) = values.iter().find(|(name, _)| rest.starts_with(name)) {
                text.extend_from_slice(value.as_bytes());
                rest = &rest[name.len()..];
                continue;
            }
        }
        text.push(first);
        rest = tail;
    }
    let body = super::framing::header_end(&text).map_or(0, |end| text.len() - end);
    let body = body.to_string();
    for at in length_at.into_iter().rev() {
        text.splice(at..at, body.bytes());
    }
    text
}

/// The PROTOS c07-sip cases, unpacked once per test run from the repository's archive
/// (`tests/data/protos-c07-sip.tar.xz`) into a temporary folder.
fn protos_cases() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let archive =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/protos-c07-sip.tar.xz");
        let into = std::env::temp_dir().join(format!("earshot-protos-unit-{}", std::process::id()));
        std::fs::create_dir_all(&into).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-xJf")
            .arg(&archive)
            .arg("-C")
            .arg(&into)
            .status()
            .unwrap();
        assert!(status.success(), "unpacking {}", archive.display());
        into.join("cases")
    })
    .clone()
}

/// Splits a PROTOS case file: `<N> ` + N bytes of INVITE + `<M> ` + M bytes of teardown.
fn split_protos(mut file: &[u8]) -> Vec<&[u8]> {
    let mut pdus = Vec::new();
    while !file.is_empty() {
        let digits = file.iter().take_while(|b| b.is_ascii_digit()).count();
        let length: usize = std::str::from_utf8(&file[..digits])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(file[digits], b' ');
        let start = digits + 1;
        pdus.push(&file[start..start + length]);
        file = &file[start + length..];
    }
    pdus
}

#[test]
fn protos_c07_cases_never_panic() {
    let dir = protos_cases();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 4527);
    let mut accepted = 0;
    for path in &cases {
        let case: usize = path.file_name().unwrap().to_string_lossy().parse().unwrap();
        let file = std::fs::read(path).unwrap();
        let pdus = split_protos(&file);
        assert_eq!(pdus.len(), 2, "{}", path.display());
        let mut framer = StreamFramer::new(65_535);
        for template in pdus {
            let pdu = fill_protos(template, case);
            let result = parse(&pdu);
            if let Ok(message) = &result {
                accepted += 1;
                assert_reserializes(message, &format!("PROTOS case {case}"));
            }
            if case == 0 {
                assert!(result.is_ok(), "the valid case parses: {result:?}");
            }
            if framer.push(&pdu).is_ok() {
                while let Some(Ok(_)) = framer.next_message() {}
            }
        }
    }
    assert!(accepted > 2, "the valid case and the teardowns parse");
}

#[test]
fn protos_valid_case_framed_over_a_stream_equals_the_datagram() {
    let dir = protos_cases();
    let file = std::fs::read(dir.join("0000000")).unwrap();
    let pdus: Vec<Vec<u8>> = split_protos(&file)
        .into_iter()
        .map(|p| fill_protos(p, 0))
        .collect();
    let stream = pdus.concat();
    let mut framer = StreamFramer::new(4096);
    for chunk in stream.chunks(100) {
        framer.push(chunk).unwrap();
    }
    for pdu in &pdus {
        let frame = framer.next_message().unwrap().unwrap();
        assert_eq!(&frame, pdu);
        assert_eq!(parse(&frame).unwrap(), parse(pdu).unwrap());
    }
    assert_eq!(framer.next_message(), None::<Result<Vec<u8>, FramingError>>);
}
