//! Scenario tests of the endpoint in virtual time: a scripted caller talks to the endpoint
//! through bytes only, the way a peer on the network would.

#![allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::sip::dialog::Transport;
use crate::sip::message::{self, Message};
use crate::sip::sdp::{Codec, Direction, LocalMedia};

const CALLER: &str = "127.0.0.1:5070";

struct Harness {
    ep: Endpoint,
    now: Instant,
    flow: Flow,
}

impl Harness {
    fn new() -> Self {
        Self::with_limits(2, Limits::default())
    }

    fn with_limits(max_calls: usize, limits: Limits) -> Self {
        let config = EndpointConfig {
            advertised: "127.0.0.1:5060".parse().unwrap(),
            user_agent: "earshot-test".into(),
            max_calls,
            limits,
        };
        Self {
            ep: Endpoint::new(config, 7),
            now: Instant::now(),
            flow: Flow {
                transport: Transport::Udp,
                remote: CALLER.parse().unwrap(),
            },
        }
    }

    fn send(&mut self, text: &str) {
        let bytes = text.replace('\n', "\r\n");
        self.ep
            .handle_datagram(self.now, self.flow, bytes.as_bytes());
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(at) = self.ep.poll_timeout() {
            if at > until {
                break;
            }
            self.now = at.max(self.now);
            self.ep.handle_timeout(self.now);
        }
        self.now = until;
    }

    /// Statuses of the responses sent since the last call.
    fn responses(&mut self) -> Vec<(u16, String)> {
        let mut out = vec![];
        while let Some(t) = self.ep.poll_transmit() {
            if let Ok(Message::Response(r)) = message::parse(&t.bytes) {
                out.push((
                    r.status,
                    r.headers
                        .cseq()
                        .map(|c| c.method.to_string())
                        .unwrap_or_default(),
                ));
            }
        }
        out
    }

    fn requests(&mut self) -> Vec<Request> {
        let mut out = vec![];
        while let Some(t) = self.ep.poll_transmit() {
            if let Ok(Message::Request(r)) = message::parse(&t.bytes) {
                out.push(r);
            }
        }
        out
    }

    fn last_response(&mut self) -> Option<Response> {
        let mut last = None;
        while let Some(t) = self.ep.poll_transmit() {
            if let Ok(Message::Response(r)) = message::parse(&t.bytes) {
                last = Some(r);
            }
        }
        last
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }

    fn answer_incoming(&mut self, ring: Duration) -> CallRef {
        let call = self
            .events()
            .into_iter()
            .find_map(|e| match e {
                Event::Incoming(i) => Some(i.call),
                _ => None,
            })
            .expect("incoming call");
        self.ep.answer(self.now, call, local_media(), ring);
        call
    }
}

fn local_media() -> LocalMedia {
    LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 20000,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        session_id: 1,
        session_version: 1,
        direction: Direction::SendRecv,
    }
}

fn invite(branch: &str, call_id: &str) -> String {
    invite_with(branch, call_id, "c=IN IP4 127.0.0.1", "")
}

/// An INVITE whose SDP has this `c=` line and these extra attribute lines.
fn invite_with(branch: &str, call_id: &str, connection: &str, attributes: &str) -> String {
    let sdp = format!(
        "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\n{connection}\nt=0 0\nm=audio 40000 RTP/AVP 8 0 101\na=rtpmap:101 telephone-event/8000\n{attributes}"
    );
    let sdp = sdp.replace('\n', "\r\n");
    format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\nFrom: <sip:2000@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:2000@127.0.0.1:5070>\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
        sdp.len()
    )
    .replace("\r\n", "\n")
}

fn in_dialog(method: &str, cseq: u32, branch: &str, call_id: &str, to_tag: &str) -> String {
    format!(
        "{method} sip:earshot@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\nFrom: <sip:2000@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>;tag={to_tag}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
}

/// A re-INVITE (CSeq 2) in the dialog with our tag `to_tag`, carrying `sdp` (CRLF lines).
fn reinvite(branch: &str, call_id: &str, to_tag: &str, sdp: &str) -> String {
    in_dialog("INVITE", 2, branch, call_id, to_tag).replace(
        "Content-Length: 0\n\n",
        &format!(
            "Content-Type: application/sdp\nContent-Length: {}\n\n",
            sdp.len()
        ),
    ) + &sdp.replace("\r\n", "\n")
}

/// A call answered and ACKed, its events taken; returns our tag.
fn confirmed_call(h: &mut Harness, branch: &str, call_id: &str) -> String {
    h.send(&invite(branch, call_id));
    h.answer_incoming(Duration::ZERO);
    let tag = to_tag(&h.last_response().unwrap());
    h.send(&in_dialog("ACK", 1, &format!("{branch}a"), call_id, &tag));
    h.events();
    tag
}

fn to_tag(resp: &Response) -> String {
    resp.headers.to().unwrap().tag().unwrap().to_string()
}

#[test]
fn answers_invite_with_100_180_then_200_carrying_the_callers_first_codec() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK1", "c1"));
    assert_eq!(h.responses(), [(100, "INVITE".into())]);
    h.answer_incoming(Duration::ZERO);
    let sent: Vec<_> = std::iter::from_fn(|| h.ep.poll_transmit()).collect();
    let statuses: Vec<u16> = sent
        .iter()
        .filter_map(|t| match message::parse(&t.bytes) {
            Ok(Message::Response(r)) => Some(r.status),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [180, 200]);
    let ok = match message::parse(&sent[1].bytes).unwrap() {
        Message::Response(r) => r,
        _ => unreachable!(),
    };
    let body = String::from_utf8(ok.body.clone()).unwrap();
    assert!(body.contains("m=audio 20000 RTP/AVP 8 101"), "{body}");
    assert!(ok.headers.contact().is_some());
    let media = h.events().into_iter().find_map(|e| match e {
        Event::MediaChanged { media, .. } => Some(media),
        _ => None,
    });
    assert_eq!(media.unwrap().codec, Codec::Pcma);
}

#[test]
fn retransmitted_invite_gets_the_last_provisional_response_again() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK2", "c2"));
    h.answer_incoming(Duration::from_secs(5));
    assert_eq!(
        h.responses(),
        [(100, "INVITE".into()), (180, "INVITE".into())]
    );
    h.send(&invite("z9hG4bK2", "c2"));
    assert_eq!(h.responses(), [(180, "INVITE".into())]);
    assert!(h.events().is_empty(), "a retransmission is not a new call");
}

#[test]
fn retransmits_200_until_ack_then_absorbs_duplicates() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK3", "c3"));
    h.answer_incoming(Duration::ZERO);
    let ok = h.last_response().unwrap();
    let tag = to_tag(&ok);
    // Lost ACK: the 200 comes again at T1, 2·T1, 4·T1...
    h.advance(Duration::from_millis(500));
    assert_eq!(h.responses(), [(200, "INVITE".into())]);
    h.advance(Duration::from_millis(1000));
    assert_eq!(h.responses(), [(200, "INVITE".into())]);
    h.events();
    h.send(&in_dialog("ACK", 1, "z9hG4bK3ack", "c3", &tag));
    assert!(matches!(h.events().as_slice(), [Event::Confirmed { .. }]));
    h.advance(Duration::from_secs(10));
    assert!(h.responses().is_empty(), "no 200 after the ACK");
    h.send(&in_dialog("ACK", 1, "z9hG4bK3ack", "c3", &tag));
    assert!(h.events().is_empty(), "a retransmitted ACK is absorbed");
}

#[test]
fn lost_200_is_resent_when_the_invite_is_retransmitted_and_the_call_survives() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK4", "c4"));
    h.answer_incoming(Duration::ZERO);
    h.responses();
    h.advance(Duration::from_millis(400));
    // The caller never saw our 200 and retransmits its INVITE: it is absorbed (RFC 6026), the
    // 200 keeps coming from the UAS core.
    h.send(&invite("z9hG4bK4", "c4"));
    h.advance(Duration::from_millis(200));
    assert!(h.responses().contains(&(200, "INVITE".into())));
    assert_eq!(h.ep.active_calls(), 1);
}

#[test]
fn no_ack_within_64_t1_ends_the_call_with_a_bye() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK5", "c5"));
    let call = h.answer_incoming(Duration::ZERO);
    h.events();
    // The caller's RTP was heard: it is there, only its ACKs were lost.
    h.ep.peer_media(call);
    h.advance(Duration::from_millis(32_100));
    let byes: Vec<_> = h
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::Bye)
        .collect();
    assert_eq!(byes.len(), 1);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::AckTimeout,
            ..
        }
    )));
}

#[test]
fn cancel_while_ringing_gets_200_and_the_invite_487() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK6", "c6"));
    h.answer_incoming(Duration::from_secs(5));
    h.responses();
    let cancel = invite("z9hG4bK6", "c6")
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    h.send(&cancel);
    assert_eq!(
        h.responses(),
        [(200, "CANCEL".into()), (487, "INVITE".into())]
    );
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::Cancelled,
            ..
        }
    )));
    // The 487 is retransmitted until its ACK, which the INVITE transaction absorbs.
    h.advance(Duration::from_millis(500));
    assert_eq!(h.responses(), [(487, "INVITE".into())]);
    let ack = invite("z9hG4bK6", "c6")
        .replacen("INVITE sip", "ACK sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    h.send(&ack);
    h.advance(Duration::from_secs(40));
    assert!(h.responses().is_empty());
    assert_eq!(h.ep.active_calls(), 0);
}

#[test]
fn cancel_racing_the_200_gets_200_and_leaves_the_call_up() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK7", "c7"));
    h.answer_incoming(Duration::ZERO);
    h.responses();
    h.events();
    let cancel = invite("z9hG4bK7", "c7")
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    h.send(&cancel);
    assert_eq!(
        h.responses(),
        [(200, "CANCEL".into())],
        "no 487 after a final response"
    );
    assert!(h.events().is_empty());
    assert_eq!(h.ep.active_calls(), 1);
}

#[test]
fn bye_from_the_caller_ends_the_call() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK8", "c8"));
    h.answer_incoming(Duration::ZERO);
    let tag = to_tag(&h.last_response().unwrap());
    h.send(&in_dialog("ACK", 1, "z9hG4bK8a", "c8", &tag));
    h.events();
    h.send(&in_dialog("BYE", 2, "z9hG4bK8b", "c8", &tag));
    assert_eq!(h.responses(), [(200, "BYE".into())]);
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::RemoteBye,
            ..
        }
    )));
    // A retransmitted BYE gets the same 200 from its transaction.
    h.send(&in_dialog("BYE", 2, "z9hG4bK8b", "c8", &tag));
    assert_eq!(h.responses(), [(200, "BYE".into())]);
    assert_eq!(h.ep.active_calls(), 0);
}

#[test]
fn hangup_sends_bye_and_retransmits_it_until_answered() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK9", "c9"));
    let call = h.answer_incoming(Duration::ZERO);
    let tag = to_tag(&h.last_response().unwrap());
    h.send(&in_dialog("ACK", 1, "z9hG4bK9a", "c9", &tag));
    h.ep.hangup(h.now, call);
    let bye = h.requests().pop().unwrap();
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(bye.uri.port, Some(5070), "BYE goes to the caller's Contact");
    assert_eq!(bye.headers.to().unwrap().tag(), Some("caller"));
    assert_eq!(bye.headers.from().unwrap().tag(), Some(tag.as_str()));
    h.advance(Duration::from_millis(500));
    assert_eq!(h.requests().len(), 1, "timer E retransmits the BYE");
    let branch = bye.headers.via().unwrap().branch().unwrap().to_string();
    let ok = format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\nFrom: <sip:1000@127.0.0.1>;tag={tag}\nTo: <sip:2000@127.0.0.1>;tag=caller\nCall-ID: c9\nCSeq: {} BYE\nContent-Length: 0\n\n",
        bye.headers.cseq().unwrap().seq
    );
    h.send(&ok);
    assert!(h.ep.is_idle());
}

#[test]
fn hangup_before_the_ack_waits_for_it() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK10", "c10"));
    let call = h.answer_incoming(Duration::ZERO);
    let tag = to_tag(&h.last_response().unwrap());
    h.ep.hangup(h.now, call);
    assert!(h.requests().is_empty(), "§15: no BYE before the ACK");
    h.send(&in_dialog("ACK", 1, "z9hG4bK10a", "c10", &tag));
    assert_eq!(
        h.requests()
            .into_iter()
            .map(|r| r.method)
            .collect::<Vec<_>>(),
        [Method::Bye]
    );
}

#[test]
fn busy_beyond_max_calls_and_options_says_503_at_capacity() {
    let mut h = Harness::new();
    for i in 0..2 {
        h.send(&invite(&format!("z9hG4bKc{i}"), &format!("cap{i}")));
        h.answer_incoming(Duration::ZERO);
    }
    h.responses();
    h.send(&invite("z9hG4bKc3", "cap3"));
    // Refused before any dialog: statelessly, so no 100 Trying (§8.2.7).
    assert_eq!(h.responses(), [(486, "INVITE".into())]);
    let options = "OPTIONS sip:earshot@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo\nFrom: <sip:mon@127.0.0.1>;tag=m\nTo: <sip:earshot@127.0.0.1>\nCall-ID: o1\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n";
    h.send(options);
    assert_eq!(h.responses(), [(503, "OPTIONS".into())]);
}

#[test]
fn options_lists_allow_accept_and_shutdown_refuses_calls() {
    let mut h = Harness::new();
    let options = "OPTIONS sip:earshot@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo1\nFrom: <sip:mon@127.0.0.1>;tag=m\nTo: <sip:earshot@127.0.0.1>\nCall-ID: o2\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n";
    h.send(options);
    let ok = h.last_response().unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers.get("allow"), Some(ALLOW));
    assert_eq!(ok.headers.get("accept"), Some(ACCEPT));
    h.ep.shut_down(h.now);
    h.send(&invite("z9hG4bK11", "c11"));
    assert_eq!(h.responses(), [(503, "INVITE".into())]);
}

/// The Retry-After of the last response sent.
fn retry_after(h: &mut Harness) -> Option<String> {
    h.last_response()
        .and_then(|r| r.headers.get("retry-after").map(str::to_string))
}

#[test]
fn options_says_503_with_retry_after_when_full_and_200_again_when_a_call_ends() {
    let mut h = Harness::new();
    let mut tags = vec![];
    for i in 0..2 {
        tags.push(confirmed_call(
            &mut h,
            &format!("z9hG4bKf{i}"),
            &format!("full{i}"),
        ));
    }
    h.responses();
    assert_eq!(h.ep.admission(), Admission::Full);
    h.send(&options("z9hG4bKfo1"));
    let full = h.last_response().unwrap();
    assert_eq!(full.status, 503);
    assert_eq!(full.headers.get("retry-after"), Some("5"));
    h.send(&in_dialog("BYE", 2, "z9hG4bKfb", "full0", &tags[0]));
    h.responses();
    assert_eq!(h.ep.admission(), Admission::Open);
    h.send(&options("z9hG4bKfo2"));
    assert_eq!(h.responses(), [(200, "OPTIONS".into())]);
}

#[test]
fn draining_refuses_new_calls_and_options_with_503_while_current_calls_go_on() {
    let mut h = Harness::new();
    let tag = confirmed_call(&mut h, "z9hG4bKd1", "drain1");
    h.responses();
    h.ep.set_draining(true);
    assert_eq!(h.ep.admission(), Admission::Draining);
    h.send(&options("z9hG4bKdo1"));
    assert_eq!(h.ep.stats().refused, 1);
    let refused = h.last_response().unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers.get("retry-after"), Some("30"));
    h.send(&invite("z9hG4bKd2", "drain2"));
    // Refused before any dialog, statelessly: no 100 Trying, no event.
    assert_eq!(retry_after(&mut h).as_deref(), Some("30"));
    h.send(&invite("z9hG4bKd3", "drain3"));
    assert_eq!(h.responses(), [(503, "INVITE".into())]);
    assert!(h.events().iter().all(|e| !matches!(e, Event::Incoming(_))));
    assert_eq!(h.ep.stats().refused, 3);
    // The call in progress is untouched and ends normally.
    assert_eq!(h.ep.active_calls(), 1);
    h.send(&in_dialog("BYE", 2, "z9hG4bKdb", "drain1", &tag));
    assert_eq!(h.responses(), [(200, "BYE".into())]);
    assert_eq!(h.ep.active_calls(), 0);
    // Undrained: calls are taken again.
    h.ep.set_draining(false);
    h.send(&options("z9hG4bKdo2"));
    assert_eq!(h.responses(), [(200, "OPTIONS".into())]);
    h.send(&invite("z9hG4bKd4", "drain4"));
    assert_eq!(h.responses(), [(100, "INVITE".into())]);
}

#[test]
fn behind_a_record_routing_proxy_the_2xx_keeps_its_route_and_our_bye_goes_through_it() {
    let mut h = Harness::new();
    // A dispatcher on 127.0.0.2 that sends from another port than its Via names (rport).
    let proxy: SocketAddr = "127.0.0.2:5999".parse().unwrap();
    h.flow.remote = proxy;
    let forwarded = invite("z9hG4bKrr1", "rr1").replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070",
        "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKproxy1;rport\nRecord-Route: <sip:127.0.0.2;lr;ftag=caller>\nVia: SIP/2.0/UDP 127.0.0.1:5070",
    );
    h.send(&forwarded);
    let call = h.answer_incoming(Duration::ZERO);
    let mut sent = vec![];
    while let Some(t) = h.ep.poll_transmit() {
        sent.push(t);
    }
    let ok = sent
        .iter()
        .find_map(|t| match message::parse(&t.bytes) {
            Ok(Message::Response(r)) if r.status == 200 => Some((t.flow, r)),
            _ => None,
        })
        .unwrap();
    // §18.2.2 and RFC 3581: to the proxy's source port, Vias and Record-Route as received.
    assert_eq!(ok.0.remote, proxy);
    assert_eq!(
        ok.1.headers.values("record-route"),
        ["<sip:127.0.0.2;lr;ftag=caller>"]
    );
    assert_eq!(ok.1.headers.vias().len(), 2);
    let tag = to_tag(&ok.1);
    h.send(&in_dialog("ACK", 1, "z9hG4bKrr1a", "rr1", &tag));
    h.events();
    h.ep.hangup(h.now, call);
    let bye = h.ep.poll_transmit().unwrap();
    // §12.2.1.1: loose routing — to the first Route, the caller's Contact as Request-URI.
    assert_eq!(bye.flow.remote, "127.0.0.2:5060".parse().unwrap());
    let Ok(Message::Request(req)) = message::parse(&bye.bytes) else {
        panic!("not a request")
    };
    assert_eq!(req.method, Method::Bye);
    assert_eq!(req.uri.to_string(), "sip:2000@127.0.0.1:5070");
    assert_eq!(
        req.headers.values("route"),
        ["<sip:127.0.0.2;lr;ftag=caller>"]
    );
}

#[test]
fn reinvite_sendonly_is_answered_recvonly_and_reported() {
    let mut h = Harness::new();
    let tag = confirmed_call(&mut h, "z9hG4bK12", "c12");
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\na=sendonly\r\n";
    h.send(&reinvite("z9hG4bK12r", "c12", &tag, sdp));
    let ok = h.last_response().unwrap();
    assert_eq!(ok.status, 200);
    assert!(String::from_utf8_lossy(&ok.body).contains("a=recvonly"));
    let media = h.events().into_iter().find_map(|e| match e {
        Event::MediaChanged { media, .. } => Some(media),
        _ => None,
    });
    assert_eq!(media.unwrap().local_direction, Direction::RecvOnly);
    h.send(&in_dialog("ACK", 2, "z9hG4bK12b", "c12", &tag));
    h.advance(Duration::from_secs(2));
    assert!(
        h.responses().is_empty(),
        "the re-INVITE's 200 stops at its ACK"
    );
}

#[test]
fn info_dtmf_relay_is_a_digit_event() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK13", "c13"));
    h.answer_incoming(Duration::ZERO);
    let tag = to_tag(&h.last_response().unwrap());
    h.send(&in_dialog("ACK", 1, "z9hG4bK13a", "c13", &tag));
    h.events();
    let body = "Signal=5\nDuration=250\n";
    let info = in_dialog("INFO", 2, "z9hG4bK13i", "c13", &tag).replace(
        "Content-Length: 0\n\n",
        &format!(
            "Content-Type: application/dtmf-relay\nContent-Length: {}\n\n",
            body.len() + 2
        ),
    ) + body;
    h.send(&info);
    assert_eq!(h.responses(), [(200, "INFO".into())]);
    assert!(matches!(
        h.events().as_slice(),
        [Event::Dtmf {
            digit: '5',
            duration_ms: 250,
            ..
        }]
    ));
}

#[test]
fn unknown_dialog_gets_481_and_unknown_method_501() {
    let mut h = Harness::new();
    h.send(&in_dialog("BYE", 2, "z9hG4bK14", "nope", "nope"));
    assert_eq!(h.responses(), [(481, "BYE".into())]);
    h.send(
        &in_dialog("FROB", 2, "z9hG4bK15", "nope2", "x")
            .replace("To: <sip:1000@127.0.0.1>;tag=x", "To: <sip:1000@127.0.0.1>"),
    );
    assert_eq!(h.responses(), [(501, "FROB".into())]);
}

#[test]
fn require_gets_420_with_unsupported_and_bad_content_type_415() {
    let mut h = Harness::new();
    h.send(
        &invite("z9hG4bK16", "c16")
            .replace("Max-Forwards: 70", "Max-Forwards: 70\nRequire: 100rel"),
    );
    let r = h.last_response().unwrap();
    assert_eq!(r.status, 420);
    assert_eq!(r.headers.get("unsupported"), Some("100rel"));
    h.send(&invite("z9hG4bK17", "c17").replace("application/sdp", "text/plain"));
    let r = h.last_response().unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(r.headers.get("accept"), Some(ACCEPT));
}

#[test]
fn no_common_codec_is_488() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK18", "c18").replace("RTP/AVP 8 0 101", "RTP/AVP 4 9 101"));
    h.answer_incoming(Duration::ZERO);
    assert_eq!(
        h.responses(),
        [(100, "INVITE".into()), (488, "INVITE".into())]
    );
    assert_eq!(h.ep.active_calls(), 0);
}

#[test]
fn responses_follow_rport_to_the_source_port() {
    let mut h = Harness::new();
    h.flow.remote = "127.0.0.1:40123".parse().unwrap();
    h.send(&invite("z9hG4bK19", "c19"));
    let t = h.ep.poll_transmit().unwrap();
    assert_eq!(
        t.flow.remote,
        "127.0.0.1:40123".parse::<SocketAddr>().unwrap()
    );
    let Ok(Message::Response(r)) = message::parse(&t.bytes) else {
        panic!()
    };
    let via = r.headers.via().unwrap();
    assert_eq!(via.rport(), Some(Some(40123)));
}

// ---- floods ------------------------------------------------------------------------------------

fn options(branch: &str) -> String {
    format!(
        "OPTIONS sip:earshot@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\nFrom: <sip:mon@127.0.0.1>;tag=m\nTo: <sip:earshot@127.0.0.1>\nCall-ID: {branch}\nCSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )
}

fn statuses(h: &mut Harness) -> Vec<u16> {
    h.responses().into_iter().map(|(s, _)| s).collect()
}

#[test]
fn refusal_before_a_dialog_is_sent_once_per_request_and_its_ack_absorbed() {
    let mut h = Harness::new();
    let req =
        invite("z9hG4bKreq", "creq").replace("Max-Forwards: 70", "Max-Forwards: 70\nRequire: x");
    h.send(&req);
    let first = h.last_response().unwrap();
    assert_eq!(first.status, 420);
    assert_eq!(h.ep.server_transactions(), 0, "no state for a refusal");
    // No Timer G: nothing more, however long we wait.
    h.advance(Duration::from_secs(40));
    assert!(h.responses().is_empty());
    // A retransmission is answered again, identically (same To tag).
    h.send(&req);
    let again = h.last_response().unwrap();
    assert_eq!((again.status, to_tag(&again)), (420, to_tag(&first)));
    // Its ACK matches nothing and is absorbed silently.
    let ack = format!(
        "ACK sip:1000@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKreq\nFrom: <sip:2000@127.0.0.1>;tag=caller\nTo: <sip:1000@127.0.0.1>;tag={}\nCall-ID: creq\nCSeq: 1 ACK\nMax-Forwards: 70\nContent-Length: 0\n\n",
        to_tag(&first)
    );
    h.send(&ack);
    assert!(h.responses().is_empty());
    assert!(h.events().is_empty());
    assert_eq!(h.ep.stats().stateless_responses, 2);
}

#[test]
fn transaction_bounds_drop_per_source_and_refuse_globally() {
    let limits = Limits {
        max_transactions: 16,
        max_transactions_per_source: 10,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(2, limits);
    let a = h.flow;
    for i in 0..25 {
        h.send(&options(&format!("z9hG4bKa{i}")));
    }
    assert_eq!(statuses(&mut h), [200; 10], "the rest dropped unanswered");
    assert_eq!(h.ep.stats().overload_dropped, 15);
    assert_eq!(h.ep.server_transactions(), 10);
    // Another source still gets in, up to the global bound; beyond it, a stateless 503.
    h.flow.remote = "127.0.0.2:5070".parse().unwrap();
    for i in 0..10 {
        h.send(&options(&format!("z9hG4bKb{i}")));
    }
    let got = h.last_response();
    assert_eq!(got.map(|r| r.status), Some(503));
    assert_eq!(h.ep.stats().overload_rejected, 4);
    assert_eq!(h.ep.server_transactions(), 16);
    // Retransmissions of held transactions are still answered from them.
    h.send(&options("z9hG4bKb0"));
    assert_eq!(statuses(&mut h), [200]);
    // Timer J frees the table.
    h.advance(Duration::from_secs(33));
    assert_eq!(h.ep.server_transactions(), 0);
    h.flow = a;
    h.send(&options("z9hG4bKafter"));
    assert_eq!(statuses(&mut h), [200]);
}

#[test]
fn invite_burst_is_rate_limited_with_a_stateless_503() {
    let limits = Limits {
        invite_rate: 1,
        invite_burst: 3,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(100, limits);
    for i in 0..10 {
        h.send(&invite(&format!("z9hG4bKr{i}"), &format!("r{i}")));
    }
    let got = h.responses();
    assert_eq!(got.iter().filter(|(s, _)| *s == 100).count(), 3);
    assert_eq!(got.iter().filter(|(s, _)| *s == 503).count(), 7);
    assert_eq!(h.ep.stats().invites_limited, 7);
    assert_eq!(
        h.ep.server_transactions(),
        3,
        "only the admitted calls hold state"
    );
    // The bucket refills at the rate.
    h.advance(Duration::from_secs(1));
    h.send(&invite("z9hG4bKr10", "r10"));
    assert_eq!(statuses(&mut h), [100]);
}

#[test]
fn stateless_responses_are_rate_limited_per_source() {
    let limits = Limits {
        stateless_response_rate: 2,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(2, limits);
    for i in 0..10 {
        h.send(&in_dialog(
            "BYE",
            2,
            &format!("z9hG4bKs{i}"),
            "gone",
            "gone",
        ));
    }
    assert_eq!(statuses(&mut h), [481; 4], "a burst of twice the rate");
    assert_eq!(h.ep.stats().responses_limited, 6);
    // Another source has its own allowance.
    h.flow.remote = "127.0.0.2:5070".parse().unwrap();
    h.send(&in_dialog("BYE", 2, "z9hG4bKs99", "gone", "gone"));
    assert_eq!(statuses(&mut h), [481]);
}

#[test]
fn reinvite_before_the_invites_final_response_gets_500_with_a_random_retry_after() {
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..40 {
        let mut h = Harness::new();
        h.ep = Endpoint::new(h.ep.config.clone(), n);
        let call_id = format!("c-ri{n}");
        h.send(&invite("z9hG4bKri", &call_id));
        h.answer_incoming(Duration::from_secs(30));
        let ringing = h.last_response().unwrap();
        assert_eq!(ringing.status, 180);
        let tag = to_tag(&ringing);
        h.send(&in_dialog("INVITE", 2, "z9hG4bKri2", &call_id, &tag));
        let refusal = h.last_response().unwrap();
        assert_eq!(
            refusal.status, 500,
            "§14.2: a second INVITE while the first is pending"
        );
        let retry: u32 = refusal
            .headers
            .get("retry-after")
            .expect("§14.2: Retry-After on the 500")
            .trim()
            .parse()
            .unwrap();
        assert!(retry <= 10, "Retry-After {retry} is outside 0-10 s");
        seen.insert(retry);
    }
    assert!(seen.len() > 3, "Retry-After is not random: {seen:?}");
}

#[test]
fn no_ack_and_no_media_ends_the_call_without_a_bye() {
    let mut h = Harness::new();
    h.send(&invite("z9hG4bK5n", "c5n"));
    h.answer_incoming(Duration::ZERO);
    h.events();
    h.advance(Duration::from_millis(40_000));
    assert!(
        h.requests().iter().all(|r| r.method != Method::Bye),
        "a dialog with neither ACK nor media is likely spoofed: no BYE to amplify"
    );
    assert!(h.events().iter().any(|e| matches!(
        e,
        Event::Ended {
            reason: EndReason::AckTimeout,
            ..
        }
    )));
    assert_eq!(h.ep.active_calls(), 0);
}

/// A filter allowing only 127.0.0.0/8.
fn loopback_only() -> MediaFilter {
    std::sync::Arc::new(|ip: IpAddr| ip.is_loopback())
}

#[test]
fn an_offer_outside_allow_media_gets_488_with_a_warning() {
    let mut h = Harness::new();
    h.ep.set_media_filter(Some(loopback_only()));
    h.send(&invite_with("z9hG4bK30", "c30", "c=IN IP4 192.0.2.66", ""));
    let resp = h.last_response().unwrap();
    assert_eq!(resp.status, 488);
    let warning = resp.headers.get("warning").unwrap().to_string();
    assert!(warning.starts_with("399 127.0.0.1:5060 \""), "{warning}");
    assert!(h.events().is_empty(), "the application never sees the call");
    assert_eq!(h.ep.active_calls(), 0);
    // An a=rtcp address outside is refused too; hold (0.0.0.0) and inside are not.
    h.send(&invite_with(
        "z9hG4bK31",
        "c31",
        "c=IN IP4 127.0.0.1",
        "a=rtcp:40001 IN IP4 198.51.100.1\n",
    ));
    assert_eq!(h.last_response().unwrap().status, 488);
    h.send(&invite_with("z9hG4bK32", "c32", "c=IN IP4 0.0.0.0", ""));
    assert_eq!(h.last_response().unwrap().status, 100);
    h.send(&invite("z9hG4bK33", "c33"));
    assert_eq!(h.last_response().unwrap().status, 100);
}

#[test]
fn a_reinvite_moving_media_outside_allow_media_is_refused_and_changes_nothing() {
    let mut h = Harness::new();
    h.ep.set_media_filter(Some(loopback_only()));
    let tag = confirmed_call(&mut h, "z9hG4bK34", "c34");
    let sdp = "v=0\r\no=- 1 2 IN IP4 192.0.2.66\r\ns=-\r\nc=IN IP4 192.0.2.66\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n";
    h.send(&reinvite("z9hG4bK34r", "c34", &tag, sdp));
    let resp = h.last_response().unwrap();
    assert_eq!(resp.status, 488);
    assert!(resp.headers.get("warning").is_some());
    assert!(h.events().is_empty(), "no MediaChanged");
    assert_eq!(h.ep.active_calls(), 1, "the call goes on as it was");
}

#[path = "dialog_tests.rs"]
mod dialog;
