//! Trunk registrations through the endpoint in virtual time: a scripted registrar answers the
//! REGISTERs the endpoint sends, and the tests count what goes out over virtual hours.

#![allow(clippy::unwrap_used)]
// Virtual time starts from one real instant; only differences matter.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::{Endpoint, EndpointConfig, Event};
use crate::sip::dialog::Transport;
use crate::sip::message::{self, Message, Request};
use crate::sip::registration::{
    FAILURE_BACKOFF, LOOP_BACKOFF, RegFailure, RegOutcome, RegState, TrunkRegistration,
};

const CHALLENGE: &str =
    "WWW-Authenticate: Digest realm=\"t\", nonce=\"n1\", qop=\"auth\", algorithm=MD5";
const STALE: &str =
    "WWW-Authenticate: Digest realm=\"t\", nonce=\"n2\", qop=\"auth\", algorithm=MD5, stale=true";
const STALE_N3: &str =
    "WWW-Authenticate: Digest realm=\"t\", nonce=\"n3\", qop=\"auth\", algorithm=MD5, stale=true";

fn trunk(name: &str, port: u16) -> TrunkRegistration {
    TrunkRegistration {
        name: name.into(),
        registrar: SocketAddr::from(([127, 0, 0, 1], port)),
        transport: Transport::Udp,
        domain: "example.test".into(),
        username: "user".into(),
        auth_username: "user".into(),
        password: "secret".into(),
        expires: 120,
        contact_user: "earshot".into(),
    }
}

struct Registrar {
    ep: Endpoint,
    now: Instant,
}

impl Registrar {
    fn new(trunks: Vec<TrunkRegistration>) -> Self {
        let config = EndpointConfig {
            advertised: "127.0.0.1:5060".parse().unwrap(),
            user_agent: "earshot-test".into(),
            max_calls: 2,
            limits: crate::sip::endpoint::Limits::default(),
        };
        let mut ep = Endpoint::new(config, 11);
        let now = Instant::now();
        ep.set_trunks(now, trunks);
        Self { ep, now }
    }

    /// The REGISTERs sent since the last call, with where they went.
    fn registers(&mut self) -> Vec<(SocketAddr, Request)> {
        std::iter::from_fn(|| self.ep.poll_transmit())
            .filter_map(|t| match message::parse(&t.bytes) {
                Ok(Message::Request(r)) => Some((t.flow.remote, r)),
                _ => None,
            })
            .collect()
    }

    fn answer(&mut self, req: &Request, status: u16, extra: &[&str]) {
        let h = &req.headers;
        let mut text = format!("SIP/2.0 {status} X\r\n");
        for name in ["via", "from", "call-id", "cseq", "contact"] {
            for value in h.get_all(name) {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        text.push_str(&format!("To: {};tag=reg\r\n", h.get("to").unwrap()));
        for line in extra {
            text.push_str(line);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        let flow = crate::sip::dialog::Flow {
            transport: Transport::Udp,
            remote: "127.0.0.1:5999".parse().unwrap(),
        };
        self.ep.handle_datagram(self.now, flow, text.as_bytes());
    }

    /// Runs virtual time for `span`, answering every REGISTER with `reply`; returns how many
    /// were sent.
    fn run(
        &mut self,
        span: Duration,
        reply: &dyn Fn(&Request) -> (u16, Vec<&'static str>),
    ) -> usize {
        let until = self.now + span;
        let mut sent = 0;
        loop {
            // Answer everything sent (answers may send again at once) before time moves on.
            let registers = self.registers();
            if !registers.is_empty() {
                for (_, req) in registers {
                    sent += 1;
                    let (status, extra) = reply(&req);
                    self.answer(&req, status, &extra);
                }
                continue;
            }
            match self.ep.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = at.max(self.now);
                    self.ep.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = until;
        sent
    }

    fn outcomes(&mut self) -> Vec<RegOutcome> {
        std::iter::from_fn(|| self.ep.poll_event())
            .filter_map(|e| match e {
                Event::Registration { outcome, .. } => Some(outcome),
                _ => None,
            })
            .collect()
    }

    fn state(&self, name: &str) -> Option<RegState> {
        self.ep
            .registration_states()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
    }
}

fn expires(req: &Request) -> u32 {
    req.headers.expires().unwrap()
}

#[test]
fn the_retry_schedules_double_up_to_their_cap() {
    let loops: Vec<u64> = (1..=12).map(|n| LOOP_BACKOFF.delay(n).as_secs()).collect();
    assert_eq!(loops, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    let failures: Vec<u64> = (1..=8)
        .map(|n| FAILURE_BACKOFF.delay(n).as_secs())
        .collect();
    assert_eq!(failures, [5, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(LOOP_BACKOFF.delay(u32::MAX), Duration::from_secs(300));
}

#[test]
fn a_registrar_answering_stale_forever_gets_a_backed_off_trickle() {
    let mut r = Registrar::new(vec![trunk("a", 5999)]);
    let sent = r.run(Duration::from_secs(3600), &|_| (401, vec![STALE]));
    // 0, 1, 2 ... 256 s (10 REGISTERs in 511 s), then one per 300 s: about 20 in an hour.
    assert!((15..=25).contains(&sent), "{sent} REGISTERs in an hour");
    let outcomes = r.outcomes();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, RegOutcome::Challenged { stale: true, .. }))
    );
    let waits: Vec<u64> = outcomes
        .iter()
        .take(5)
        .map(|o| match o {
            RegOutcome::Challenged { retry_in, .. } => retry_in.as_secs(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(waits, [0, 1, 2, 4, 8]);
}

#[test]
fn stale_then_success_resets_the_schedule() {
    let mut r = Registrar::new(vec![trunk("a", 5999)]);
    r.run(Duration::from_secs(10), &|_| (401, vec![STALE]));
    r.outcomes();
    let sent = r.run(Duration::from_secs(10), &|_| (200, vec![]));
    assert_eq!(sent, 1);
    assert_eq!(r.outcomes(), [RegOutcome::Registered { expires: 120 }]);
    // The refresh (at 60 s) meets one stale nonce: answered at once, not after the backoff.
    let sent = r.run(Duration::from_secs(60), &|req| {
        let auth = req.headers.get("authorization").unwrap_or_default();
        if auth.contains("nonce=\"n3\"") {
            (200, vec![])
        } else {
            (401, vec![STALE_N3])
        }
    });
    let outcomes = r.outcomes();
    assert_eq!(
        sent, 2,
        "the refresh and its answer to the new nonce: {outcomes:?}"
    );
    assert_eq!(
        outcomes,
        [
            RegOutcome::Challenged {
                stale: true,
                retry_in: Duration::ZERO
            },
            RegOutcome::Registered { expires: 120 }
        ]
    );
}

#[test]
fn interval_too_brief_retries_with_min_expires_then_registers() {
    let mut r = Registrar::new(vec![trunk("a", 5999)]);
    let first = r.registers();
    assert_eq!(expires(&first[0].1), 120);
    r.answer(&first[0].1, 423, &["Min-Expires: 600"]);
    let second = r.registers();
    assert_eq!(second.len(), 1, "retried at once the first time");
    assert_eq!(expires(&second[0].1), 600);
    r.answer(&second[0].1, 200, &["Expires: 600"]);
    assert_eq!(
        r.outcomes(),
        [
            RegOutcome::IntervalTooBrief {
                min_expires: 600,
                retry_in: Duration::ZERO
            },
            RegOutcome::Registered { expires: 600 }
        ]
    );
}

#[test]
fn a_registrar_answering_423_forever_is_backed_off() {
    let mut r = Registrar::new(vec![trunk("a", 5999)]);
    let sent = r.run(Duration::from_secs(3600), &|_| {
        (423, vec!["Min-Expires: 600"])
    });
    assert!((15..=25).contains(&sent), "{sent} REGISTERs in an hour");
}

#[test]
fn unusable_min_expires_gives_up_until_reload() {
    for (header, reason) in [
        (Some("Min-Expires: 0"), RegFailure::MinExpiresZero),
        (Some("Min-Expires: soon"), RegFailure::MinExpiresInvalid),
        (Some("Min-Expires: -5"), RegFailure::MinExpiresInvalid),
        (None, RegFailure::MinExpiresMissing),
    ] {
        let mut r = Registrar::new(vec![trunk("a", 5999)]);
        let extra: Vec<&'static str> = header.into_iter().collect();
        let sent = r.run(Duration::from_secs(3600), &|_| (423, extra.clone()));
        assert_eq!(sent, 1, "{header:?}: one REGISTER, no loop");
        assert_eq!(
            r.outcomes(),
            [RegOutcome::GaveUp {
                status: 423,
                reason
            }]
        );
        assert_eq!(r.state("a"), Some(RegState::Failed(reason)));
        // A reload (the trunk unchanged) tries again.
        r.ep.set_trunks(r.now, vec![trunk("a", 5999)]);
        assert_eq!(r.registers().len(), 1, "{header:?}: a reload starts over");
    }
}

#[test]
fn a_trunk_removed_on_reload_is_unregistered_then_dropped() {
    let mut r = Registrar::new(vec![trunk("a", 5999), trunk("b", 5998)]);
    r.run(Duration::from_secs(1), &|_| (200, vec![]));
    assert!(matches!(r.state("b"), Some(RegState::Registered { .. })));
    r.outcomes();
    r.ep.set_trunks(r.now, vec![trunk("a", 5999)]);
    let sent = r.registers();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].0.port(),
        5998,
        "the REGISTER goes to the removed trunk's registrar"
    );
    assert_eq!(expires(&sent[0].1), 0);
    assert!(!r.ep.is_idle(), "unregistering");
    r.answer(&sent[0].1, 200, &[]);
    assert_eq!(r.outcomes(), [RegOutcome::Unregistered]);
    assert_eq!(r.state("b"), None, "dropped once unregistered");
    assert!(r.ep.is_idle());
    assert!(matches!(r.state("a"), Some(RegState::Registered { .. })));
}

#[test]
fn an_unanswered_unregistration_is_abandoned_after_its_timeout() {
    let mut r = Registrar::new(vec![trunk("a", 5999)]);
    r.run(Duration::from_secs(1), &|_| (200, vec![]));
    r.outcomes();
    r.ep.set_trunks(r.now, vec![]);
    assert_eq!(expires(&r.registers()[0].1), 0);
    // Nobody answers: retransmissions only, then the registration is dropped.
    let until = r.now + Duration::from_secs(60);
    while let Some(at) = r.ep.poll_timeout().filter(|at| *at <= until) {
        r.now = at.max(r.now);
        r.ep.handle_timeout(r.now);
        assert!(r.registers().iter().all(|(_, req)| expires(req) == 0));
    }
    assert_eq!(r.state("a"), None);
    assert_eq!(r.outcomes(), [RegOutcome::UnregisterFailed { status: 408 }]);
    assert!(r.ep.registration_states().next().is_none());
    assert!(r.ep.is_idle());
}

#[test]
fn unregistration_answers_one_challenge() {
    let mut r = Registrar::new(vec![trunk("a", 5999)]);
    r.run(Duration::from_secs(1), &|_| (200, vec![]));
    r.outcomes();
    r.ep.shut_down(r.now);
    let sent = r.registers();
    assert_eq!(expires(&sent[0].1), 0);
    r.answer(&sent[0].1, 401, &[CHALLENGE]);
    let again = r.registers();
    assert_eq!(again.len(), 1);
    assert_eq!(expires(&again[0].1), 0);
    assert!(again[0].1.headers.get("authorization").is_some());
    r.answer(&again[0].1, 401, &[CHALLENGE]);
    assert!(r.registers().is_empty(), "a second challenge ends it");
    assert_eq!(
        r.outcomes().last(),
        Some(&RegOutcome::UnregisterFailed { status: 401 })
    );
    assert!(r.ep.is_idle());
}

#[test]
fn reordered_trunks_on_reload_get_their_own_responses() {
    let mut r = Registrar::new(vec![trunk("a", 5999), trunk("b", 5998)]);
    let sent = r.registers();
    assert_eq!(sent.len(), 2);
    // A reload swaps the trunks while both REGISTERs are in flight.
    r.ep.set_trunks(r.now, vec![trunk("b", 5998), trunk("a", 5999)]);
    assert!(r.registers().is_empty());
    for (_, req) in &sent {
        r.answer(req, 200, &[]);
    }
    assert!(matches!(r.state("a"), Some(RegState::Registered { .. })));
    assert!(matches!(r.state("b"), Some(RegState::Registered { .. })));
}

#[test]
fn a_response_to_a_superseded_register_is_ignored() {
    let mut r = Registrar::new(vec![trunk("a", 5999)]);
    let first = r.registers();
    // Shutdown while the REGISTER is in flight: Expires: 0 goes out at once.
    r.ep.shut_down(r.now);
    let zero = r.registers();
    assert_eq!(expires(&zero[0].1), 0);
    r.answer(&first[0].1, 200, &[]);
    assert!(
        r.outcomes().is_empty(),
        "the old REGISTER's 200 is not the unregistration's"
    );
    assert!(!r.ep.is_idle());
    r.answer(&zero[0].1, 200, &[]);
    assert_eq!(r.outcomes(), [RegOutcome::Unregistered]);
    assert!(r.ep.is_idle());
}
