//! Calls the endpoint places, in virtual time: a scripted far end answers the INVITEs it
//! sends (challenges, rings, redirects, forks), and the tests check what goes out and which
//! events come up.

#![allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::{CallRef, Endpoint, EndpointConfig, Event, Limits};
use super::{FailReason, OutboundCall, TrunkCredentials};
use crate::sip::auth::{Algorithm, Challenge, Credentials, authorization};
use crate::sip::dialog::{Flow, Transport};
use crate::sip::message::{self, Message, Method, Request, Uri};
use crate::sip::sdp::{Codec, Direction, LocalMedia};

const PROXY: &str = "192.0.2.10:5060";
const RING: Duration = Duration::from_secs(30);
/// `[calls].max_redirects`' default.
const MAX_REDIRECTS: usize = 3;

fn sdp_answer(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

fn spec(target: &str) -> OutboundCall {
    OutboundCall {
        target: Uri::parse(target).unwrap(),
        from: Uri::parse("sip:alice@trunk.example").unwrap(),
        credentials: Some(TrunkCredentials {
            username: "alice".into(),
            password: "secret".into(),
        }),
        next_hop: Flow {
            transport: Transport::Udp,
            remote: PROXY.parse().unwrap(),
        },
        via_proxy: false,
        media: LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            port: 40000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            session_id: 7,
            session_version: 1,
            direction: Direction::SendRecv,
        },
        ring_timeout: RING,
        max_redirects: MAX_REDIRECTS,
        referred_by: None,
    }
}

/// The endpoint, a clock, and the far end's view of what it sent.
struct Harness {
    ep: Endpoint,
    now: Instant,
    call: CallRef,
}

impl Harness {
    fn place(target: &str) -> Self {
        Self::place_spec(spec(target))
    }

    fn place_spec(spec: OutboundCall) -> Self {
        let config = EndpointConfig {
            advertised: "127.0.0.1:5060".parse().unwrap(),
            user_agent: "earshot-test".into(),
            max_calls: 4,
            limits: Limits::default(),
        };
        let mut ep = Endpoint::new(config, 5);
        let now = Instant::now();
        let call = ep.place_call(now, spec).unwrap();
        Self { ep, now, call }
    }

    /// Every request sent since the last look, with where it went.
    fn sent(&mut self) -> Vec<(SocketAddr, Request)> {
        std::iter::from_fn(|| self.ep.poll_transmit())
            .filter_map(|t| match message::parse(&t.bytes) {
                Ok(Message::Request(r)) => Some((t.flow.remote, r)),
                _ => None,
            })
            .collect()
    }

    fn methods(&mut self) -> Vec<Method> {
        self.sent().into_iter().map(|(_, r)| r.method).collect()
    }

    /// The one INVITE sent since the last look.
    fn invite(&mut self) -> Request {
        let mut sent = self.sent();
        assert_eq!(sent.len(), 1, "one request: {sent:?}");
        let (_, req) = sent.remove(0);
        assert_eq!(req.method, Method::Invite);
        req
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }

    /// The far end answers `req` with `status`, its To tag `tag`, and extra header lines.
    fn respond(
        &mut self,
        req: &Request,
        status: u16,
        tag: Option<&str>,
        extra: &[&str],
        body: &str,
    ) {
        let h = &req.headers;
        let mut text = format!("SIP/2.0 {status} X\r\n");
        for name in ["via", "from", "call-id", "cseq"] {
            for value in h.get_all(name) {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        let to = h.get("to").unwrap();
        match tag {
            Some(tag) => text.push_str(&format!("To: {to};tag={tag}\r\n")),
            None => text.push_str(&format!("To: {to}\r\n")),
        }
        for line in extra {
            text.push_str(line);
            text.push_str("\r\n");
        }
        if !body.is_empty() {
            text.push_str("Content-Type: application/sdp\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let flow = Flow {
            transport: Transport::Udp,
            remote: PROXY.parse().unwrap(),
        };
        self.ep.handle_datagram(self.now, flow, text.as_bytes());
    }

    /// A 200 with an SDP answer and a Contact, from the fork tagged `tag`.
    fn ok(&mut self, invite: &Request, tag: &str) {
        let contact = format!("Contact: <sip:bob@192.0.2.30:5062;x={tag}>");
        self.respond(
            invite,
            200,
            Some(tag),
            &[
                &contact,
                "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>",
            ],
            &sdp_answer(30000),
        );
    }

    /// Runs timers until `span` has passed.
    fn advance(&mut self, span: Duration) {
        let until = self.now + span;
        while let Some(at) = self.ep.poll_timeout().filter(|at| *at <= until) {
            self.now = at.max(self.now);
            self.ep.handle_timeout(self.now);
        }
        self.now = until;
    }

    fn failed(&mut self) -> Option<(u16, FailReason)> {
        self.events().into_iter().find_map(|e| match e {
            Event::Failed { status, reason, .. } => Some((status, reason)),
            _ => None,
        })
    }
}

const CHALLENGE_MD5: &str =
    "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"abc\", qop=\"auth\", algorithm=MD5";
const CHALLENGE_SHA: &str =
    "Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"def\", qop=\"auth\", algorithm=SHA-256";

/// Checks a digest answer the way a registrar does: recomputes it with the password.
fn digest_valid(req: &Request, header: &str, challenge: &str) -> bool {
    let value = req.headers.get(header).unwrap();
    let ch = Challenge::parse(challenge.split_once(": ").unwrap().1).unwrap();
    let param = |name: &str| {
        value
            .split(", ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap()
    };
    let creds = Credentials {
        username: "alice",
        password: "secret",
    };
    let nc = u32::from_str_radix(&param("nc"), 16).unwrap();
    let expected = authorization(&ch, &creds, "INVITE", &param("uri"), &param("cnonce"), nc);
    param("uri") == req.uri.to_string() && expected == value
}

#[test]
fn digest_401_is_answered_with_a_new_cseq_on_the_same_call_id_then_200_is_acked() {
    let mut h = Harness::place("sip:+442071234567@trunk.example");
    let first = h.invite();
    assert!(first.headers.get("authorization").is_none());
    assert!(
        first.body.starts_with(b"v=0"),
        "the INVITE carries our offer"
    );
    h.respond(&first, 401, Some("t1"), &[CHALLENGE_MD5], "");
    let sent = h.sent();
    let methods: Vec<_> = sent.iter().map(|(_, r)| r.method.clone()).collect();
    assert_eq!(
        methods,
        [Method::Ack, Method::Invite],
        "ACK for the 401, new INVITE"
    );
    let second = sent[1].1.clone();
    assert_eq!(second.headers.call_id(), first.headers.call_id());
    assert_eq!(
        second.headers.cseq().unwrap().seq,
        first.headers.cseq().unwrap().seq + 1
    );
    assert_eq!(
        second.headers.from().unwrap().tag(),
        first.headers.from().unwrap().tag()
    );
    assert_ne!(
        second.headers.via().unwrap().branch(),
        first.headers.via().unwrap().branch()
    );
    assert!(digest_valid(&second, "authorization", CHALLENGE_MD5));

    h.ok(&second, "b1");
    let events = h.events();
    assert!(
        matches!(&events[..], [Event::Answered { media, .. }] if media.codec == Codec::Pcmu && media.remote_rtp == Some("192.0.2.20:30000".parse().unwrap())),
        "{events:?}"
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let (dest, ack) = &sent[0];
    assert_eq!(ack.method, Method::Ack);
    // §13.2.2.4: the ACK goes in the dialog: the route set reversed, CSeq of the INVITE.
    let routes = ack.headers.values("route");
    assert_eq!(routes, ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]);
    assert_eq!(ack.uri.to_string(), "sip:bob@192.0.2.30:5062;x=b1");
    assert_eq!(
        ack.headers.cseq().unwrap().seq,
        second.headers.cseq().unwrap().seq
    );
    assert_eq!(ack.headers.to().unwrap().tag(), Some("b1"));
    // p2 is a host name, not an address: the ACK follows the flow of the INVITE.
    assert_eq!(dest.to_string(), PROXY);
    assert_eq!(
        ack.headers.get("authorization"),
        second.headers.get("authorization"),
        "the ACK repeats the INVITE's credentials"
    );
}

#[test]
fn proxy_407_with_sha256_is_answered_once_and_a_second_challenge_fails_the_call() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let first = h.invite();
    h.respond(&first, 407, Some("p"), &[CHALLENGE_SHA], "");
    let sent = h.sent();
    let second = sent.last().unwrap().1.clone();
    assert!(digest_valid(&second, "proxy-authorization", CHALLENGE_SHA));
    let ch = Challenge::parse(CHALLENGE_SHA.split_once(": ").unwrap().1).unwrap();
    assert_eq!(ch.algorithm, Algorithm::Sha256);
    // The credentials are refused: a new, not stale, challenge.
    h.respond(&second, 407, Some("p"), &[CHALLENGE_SHA], "");
    assert_eq!(
        h.methods(),
        [Method::Ack],
        "only the ACK of the 407: no third INVITE"
    );
    assert_eq!(h.failed(), Some((407, FailReason::AuthFailed)));
}

#[test]
fn early_media_180_with_sdp_is_progress_then_200_answers() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.respond(&invite, 100, None, &[], "");
    assert!(h.events().is_empty(), "100 is not progress");
    h.respond(&invite, 180, Some("b1"), &[], &sdp_answer(31000));
    let events = h.events();
    match &events[..] {
        [
            Event::Progress {
                ringing: true,
                media: Some(media),
                ..
            },
        ] => assert_eq!(media.remote_rtp, Some("192.0.2.20:31000".parse().unwrap())),
        other => panic!("{other:?}"),
    }
    // Ringing past Timer B's 32 s is fine: only the ring timeout ends it.
    h.advance(Duration::from_secs(29));
    assert!(h.failed().is_none());
    h.ok(&invite, "b1");
    assert!(matches!(&h.events()[..], [Event::Answered { .. }]));
    assert_eq!(h.methods(), [Method::Ack]);
}

#[test]
fn ring_timeout_cancels_after_the_provisional_and_487_ends_the_call() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.respond(&invite, 180, Some("b1"), &[], "");
    h.events();
    h.advance(RING);
    let sent = h.sent();
    let cancels: Vec<_> = sent
        .iter()
        .filter(|(_, r)| r.method == Method::Cancel)
        .collect();
    assert_eq!(cancels.len(), 1, "{sent:?}");
    let cancel = &cancels[0].1;
    // §9.1: the CANCEL names the INVITE: same branch, Call-ID, CSeq number, no To tag.
    assert_eq!(
        cancel.headers.via().unwrap().branch(),
        invite.headers.via().unwrap().branch()
    );
    assert_eq!(
        cancel.headers.cseq().unwrap().seq,
        invite.headers.cseq().unwrap().seq
    );
    assert_eq!(cancel.headers.call_id(), invite.headers.call_id());
    assert_eq!(cancel.uri, invite.uri);
    assert!(
        h.failed().is_none(),
        "the call ends with the 487, not the CANCEL"
    );
    h.respond(cancel, 200, Some("b1"), &[], "");
    h.respond(&invite, 487, Some("b1"), &[], "");
    assert_eq!(h.methods(), [Method::Ack]);
    assert_eq!(h.failed(), Some((487, FailReason::NoAnswer)));
    // A retransmitted 487 is ACKed again; then everything is forgotten.
    h.respond(&invite, 487, Some("b1"), &[], "");
    assert_eq!(h.methods(), [Method::Ack]);
    h.advance(Duration::from_secs(40));
    assert!(h.ep.is_idle());
    assert!(h.ep.outbound.is_empty());
}

#[test]
fn ring_timeout_before_any_provisional_waits_for_one_before_cancelling() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.respond(&invite, 100, None, &[], "");
    h.advance(RING);
    assert!(
        !h.methods().contains(&Method::Cancel),
        "no CANCEL before a provisional response (§9.1)"
    );
    h.respond(&invite, 183, Some("b1"), &[], "");
    assert_eq!(h.methods(), [Method::Cancel]);
}

#[test]
fn hangup_before_any_provisional_times_out_with_timer_b() {
    let mut h = Harness::place("sip:bob@pbx.example");
    h.invite();
    h.ep.hangup(h.now, h.call);
    h.advance(Duration::from_secs(33));
    assert!(!h.methods().contains(&Method::Cancel));
    assert_eq!(h.failed(), Some((408, FailReason::Cancelled)));
}

#[test]
fn retransmitted_2xx_is_acked_again_each_time() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.ok(&invite, "b1");
    let first = h.sent();
    assert_eq!(first.len(), 1);
    for _ in 0..3 {
        h.ok(&invite, "b1");
        let again = h.sent();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1, first[0].1, "the very same ACK");
    }
    let answered = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Answered { .. }))
        .count();
    assert_eq!(answered, 1);
}

#[test]
fn forked_second_2xx_gets_ack_then_bye_and_the_first_dialog_stays() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.ok(&invite, "first");
    h.sent();
    h.ok(&invite, "second");
    let sent = h.sent();
    let methods: Vec<_> = sent.iter().map(|(_, r)| r.method.clone()).collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    for (_, req) in &sent {
        assert_eq!(req.headers.to().unwrap().tag(), Some("second"));
    }
    // The fork's 2xx again: ACK only.
    h.ok(&invite, "second");
    assert_eq!(h.methods(), [Method::Ack]);
    assert_eq!(h.ep.active_calls(), 1);
    // Hanging up ends the winner's dialog with a BYE.
    h.ep.hangup(h.now, h.call);
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.method, Method::Bye);
    assert_eq!(sent[0].1.headers.to().unwrap().tag(), Some("first"));
}

#[test]
fn redirect_is_followed_to_the_first_contact() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.respond(
        &invite,
        302,
        Some("r"),
        &["Contact: <sip:bob@192.0.2.40:5070>, <sip:bob@192.0.2.41>"],
        "",
    );
    let sent = h.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].1.method, Method::Ack);
    let (dest, next) = &sent[1];
    assert_eq!(next.method, Method::Invite);
    assert_eq!(next.uri.to_string(), "sip:bob@192.0.2.40:5070");
    assert_eq!(dest.to_string(), "192.0.2.40:5070");
    assert_eq!(next.headers.call_id(), invite.headers.call_id());
    h.ok(next, "b");
    assert!(matches!(&h.events()[..], [Event::Answered { .. }]));
}

#[test]
fn redirects_stop_at_the_limit_and_at_a_loop() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let mut invite = h.invite();
    for n in 0..MAX_REDIRECTS {
        let contact = format!("Contact: <sip:bob@192.0.2.{}>", 50 + n);
        h.respond(&invite, 302, Some("r"), &[&contact], "");
        invite = h.sent().pop().unwrap().1;
        assert_eq!(invite.method, Method::Invite);
    }
    h.respond(
        &invite,
        302,
        Some("r"),
        &["Contact: <sip:bob@192.0.2.99>"],
        "",
    );
    assert_eq!(h.methods(), [Method::Ack]);
    assert_eq!(h.failed(), Some((302, FailReason::TooManyRedirects)));

    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.respond(
        &invite,
        301,
        Some("r"),
        &["Contact: <sip:bob@pbx.example>"],
        "",
    );
    assert_eq!(h.methods(), [Method::Ack]);
    assert_eq!(h.failed(), Some((301, FailReason::RedirectLoop)));
}

#[test]
fn no_redirects_allowed_fails_the_first_3xx() {
    let mut none = spec("sip:bob@pbx.example");
    none.max_redirects = 0;
    let mut h = Harness::place_spec(none);
    let invite = h.invite();
    h.respond(
        &invite,
        302,
        Some("r"),
        &["Contact: <sip:bob@192.0.2.50>"],
        "",
    );
    assert_eq!(h.methods(), [Method::Ack], "no second INVITE");
    assert_eq!(h.failed(), Some((302, FailReason::TooManyRedirects)));
}

#[test]
fn a_configured_ring_timeout_cancels_at_that_time() {
    let mut short = spec("sip:bob@pbx.example");
    short.ring_timeout = Duration::from_secs(7);
    let mut h = Harness::place_spec(short);
    let invite = h.invite();
    h.respond(&invite, 180, Some("b1"), &[], "");
    h.events();
    h.advance(Duration::from_millis(6_999));
    assert!(
        !h.methods().contains(&Method::Cancel),
        "still ringing just before the timeout"
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.methods(), [Method::Cancel]);
    h.respond(&invite, 487, Some("b1"), &[], "");
    assert_eq!(h.failed(), Some((487, FailReason::NoAnswer)));
}

#[test]
fn busy_486_fails_the_call_with_its_status() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.respond(&invite, 180, Some("b"), &[], "");
    h.respond(&invite, 486, Some("b"), &[], "");
    let ack = h.sent().pop().unwrap().1;
    assert_eq!(ack.method, Method::Ack);
    // §17.1.1.3: same branch as the INVITE, the response's To.
    assert_eq!(
        ack.headers.via().unwrap().branch(),
        invite.headers.via().unwrap().branch()
    );
    assert_eq!(ack.headers.to().unwrap().tag(), Some("b"));
    assert_eq!(h.failed(), Some((486, FailReason::Rejected)));
    assert!(h.ep.is_idle());
}

#[test]
fn no_response_at_all_times_out_after_retransmissions() {
    let mut long_ring = spec("sip:bob@pbx.example");
    long_ring.ring_timeout = Duration::from_secs(120);
    let mut h = Harness::place_spec(long_ring);
    h.invite();
    h.advance(Duration::from_secs(33));
    let invites = h.methods().iter().filter(|m| **m == Method::Invite).count();
    assert_eq!(invites, 6, "Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s");
    assert_eq!(h.failed(), Some((408, FailReason::Timeout)));
    // With a ring timeout shorter than Timer B, the same silence is a call nobody answered.
    let mut h = Harness::place("sip:bob@pbx.example");
    h.invite();
    h.advance(Duration::from_secs(33));
    assert!(!h.methods().contains(&Method::Cancel));
    assert_eq!(h.failed(), Some((408, FailReason::NoAnswer)));
}

#[test]
fn a_2xx_crossing_the_cancel_is_acked_and_hung_up() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.respond(&invite, 180, Some("b"), &[], "");
    h.ep.hangup(h.now, h.call);
    assert_eq!(h.methods(), [Method::Cancel]);
    h.ok(&invite, "b");
    assert_eq!(h.methods(), [Method::Ack, Method::Bye]);
    assert_eq!(h.failed(), Some((200, FailReason::Cancelled)));
    assert_eq!(h.ep.active_calls(), 0);
}

#[test]
fn an_answered_call_ends_by_bye_like_an_incoming_one() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.invite();
    h.ok(&invite, "b");
    h.events();
    h.sent();
    // The callee hangs up: its BYE is in our dialog.
    let bye = format!(
        "BYE sip:earshot@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.30:5062;branch=z9hG4bKbye1\r\n\
         From: <sip:bob@pbx.example>;tag=b\r\nTo: {};tag={}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        invite
            .headers
            .get("from")
            .unwrap()
            .split(';')
            .next()
            .unwrap(),
        invite.headers.from().unwrap().tag().unwrap(),
        invite.headers.call_id().unwrap(),
    );
    let flow = Flow {
        transport: Transport::Udp,
        remote: "192.0.2.30:5062".parse().unwrap(),
    };
    h.ep.handle_datagram(h.now, flow, bye.as_bytes());
    let events = h.events();
    assert!(
        matches!(
            &events[..],
            [Event::Ended {
                reason: super::super::EndReason::RemoteBye,
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(h.ep.active_calls(), 0);
}

// ---- RFC 4028 session timers on placed calls ------------------------------------------------

impl Harness {
    /// Places a call whose 200 carries `extra` header lines; returns our INVITE, with the ACK
    /// and the Answered event taken.
    fn answered_with(&mut self, extra: &[&str]) -> Request {
        let invite = self.invite();
        let mut lines = vec!["Contact: <sip:bob@192.0.2.30:5062>"];
        lines.extend_from_slice(extra);
        self.respond(&invite, 200, Some("b"), &lines, &sdp_answer(30000));
        assert!(
            matches!(&self.events()[..], [Event::Answered { .. }]),
            "answered"
        );
        assert_eq!(self.methods(), [Method::Ack]);
        invite
    }

    /// Runs timers for `span`: nothing goes out and the call stays up until its last
    /// millisecond, which is then run.
    fn quiet_until(&mut self, span: Duration) {
        self.advance(span - Duration::from_millis(1));
        assert!(self.sent().is_empty(), "nothing before the deadline");
        assert_eq!(self.ep.active_calls(), 1);
        self.advance(Duration::from_millis(1));
    }

    fn ended(&mut self) -> Option<super::super::EndReason> {
        self.events().into_iter().find_map(|e| match e {
            Event::Ended { reason, .. } => Some(reason),
            _ => None,
        })
    }
}

#[test]
fn the_invite_asks_for_a_timer_and_a_uac_refresher_refreshes_at_half_and_survives_a_200() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let invite = h.answered_with(&["Session-Expires: 90;refresher=uac", "Require: timer"]);
    let asked = &invite.headers;
    assert_eq!(asked.get("session-expires"), Some("1800"));
    assert_eq!(asked.get("supported"), Some("timer"));
    assert_eq!(asked.get("min-se"), Some("90"));
    h.quiet_until(Duration::from_secs(45));
    let refresh = h.invite();
    assert_eq!(
        refresh.body, invite.body,
        "the refresh offers our SDP again"
    );
    assert_eq!(
        refresh.headers.get("session-expires"),
        Some("90;refresher=uac")
    );
    assert_eq!(refresh.headers.call_id(), invite.headers.call_id());
    assert!(refresh.headers.cseq().unwrap().seq > invite.headers.cseq().unwrap().seq);
    h.respond(
        &refresh,
        200,
        None,
        &["Session-Expires: 90;refresher=uac"],
        &sdp_answer(30000),
    );
    assert_eq!(h.methods(), [Method::Ack]);
    // Refreshed at 45 s: the call outlives the first interval and refreshes again at 90 s.
    h.quiet_until(Duration::from_secs(45));
    assert_eq!(h.ended(), None);
    assert_eq!(h.methods(), [Method::Invite]);
    assert_eq!(h.ep.active_calls(), 1);
}

#[test]
fn a_callee_refresher_that_never_refreshes_gets_a_bye_before_the_expiry() {
    let mut h = Harness::place("sip:bob@pbx.example");
    h.answered_with(&["Session-Expires: 90;refresher=uas"]);
    // §10: the side that does not refresh gives up min(32 s, 90/3) = 30 s early.
    h.quiet_until(Duration::from_secs(60));
    assert_eq!(h.methods(), [Method::Bye]);
    assert_eq!(h.ended(), Some(super::super::EndReason::SessionExpired));
}

#[test]
fn a_481_to_the_refresh_of_a_placed_call_ends_it() {
    let mut h = Harness::place("sip:bob@pbx.example");
    h.answered_with(&["Session-Expires: 90;refresher=uac"]);
    h.advance(Duration::from_secs(45));
    let refresh = h.invite();
    h.respond(&refresh, 481, None, &[], "");
    assert_eq!(h.methods(), [Method::Ack], "§17.1.1.3: the 481 is ACKed");
    assert_eq!(h.ended(), Some(super::super::EndReason::RefreshFailed(481)));
    assert_eq!(h.ep.active_calls(), 0);
}

#[test]
fn a_2xx_without_session_expires_leaves_earshot_refreshing_alone_by_update_when_allowed() {
    let mut h = Harness::place("sip:bob@pbx.example");
    h.answered_with(&["Allow: INVITE, ACK, BYE, UPDATE"]);
    // The interval we asked for (1800 s), refreshed by us at half of it.
    h.quiet_until(Duration::from_secs(900));
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let update = &sent[0].1;
    assert_eq!(update.method, Method::Update);
    assert!(update.body.is_empty());
    assert_eq!(
        update.headers.get("session-expires"),
        Some("1800;refresher=uac")
    );
    // The callee answers without Session-Expires again: the timer keeps running.
    h.respond(update, 200, None, &[], "");
    h.advance(Duration::from_secs(900));
    assert_eq!(h.methods(), [Method::Update]);
    assert_eq!(h.ended(), None);
    assert_eq!(h.ep.active_calls(), 1);
}

/// What a 422 brought: its ACK, then the retried INVITE.
fn ack_and_retry(h: &mut Harness) -> Request {
    let mut sent = h.sent();
    let methods: Vec<Method> = sent.iter().map(|(_, r)| r.method.clone()).collect();
    assert_eq!(
        methods,
        [Method::Ack, Method::Invite],
        "the ACK of the 422, then the retry"
    );
    sent.remove(1).1
}

#[test]
fn a_422_is_retried_with_the_interval_its_min_se_asks_and_a_422_that_asks_no_more_fails() {
    let mut h = Harness::place("sip:bob@pbx.example");
    let first = h.invite();
    assert_eq!(first.headers.get("session-expires"), Some("1800"));
    h.respond(&first, 422, Some("t"), &["Min-SE: 3600"], "");
    let retry = ack_and_retry(&mut h);
    assert_eq!(retry.headers.get("session-expires"), Some("3600"));
    assert_eq!(retry.headers.get("min-se"), Some("3600"));
    assert_eq!(retry.headers.call_id(), first.headers.call_id());
    assert!(retry.headers.cseq().unwrap().seq > first.headers.cseq().unwrap().seq);
    // A retransmitted 422 of the first INVITE is only ACKed again.
    h.respond(&first, 422, Some("t"), &["Min-SE: 3600"], "");
    assert_eq!(h.methods(), [Method::Ack]);
    // §7.4: the retry asked for all the 422 wanted; another 422 asking the same is final.
    h.respond(&retry, 422, Some("t"), &["Min-SE: 3600"], "");
    assert_eq!(h.methods(), [Method::Ack]);
    assert_eq!(h.failed(), Some((422, FailReason::Rejected)));
}

#[test]
fn a_422_without_a_usable_min_se_fails_and_raises_are_bounded() {
    let unusable: [&[&str]; 4] = [&[], &["Min-SE: soon"], &["Min-SE: 900"], &["Min-SE: 90000"]];
    for extra in unusable {
        let mut h = Harness::place("sip:bob@pbx.example");
        let invite = h.invite();
        h.respond(&invite, 422, Some("t"), extra, "");
        assert_eq!(h.methods(), [Method::Ack], "{extra:?}");
        assert_eq!(h.failed(), Some((422, FailReason::Rejected)), "{extra:?}");
    }
    let mut h = Harness::place("sip:bob@pbx.example");
    let mut invite = h.invite();
    for min_se in ["2000", "3000"] {
        h.respond(&invite, 422, Some("t"), &[&format!("Min-SE: {min_se}")], "");
        invite = ack_and_retry(&mut h);
        assert_eq!(invite.headers.get("session-expires"), Some(min_se));
    }
    h.respond(&invite, 422, Some("t"), &["Min-SE: 4000"], "");
    assert_eq!(h.methods(), [Method::Ack]);
    assert_eq!(h.failed(), Some((422, FailReason::Rejected)));
}
