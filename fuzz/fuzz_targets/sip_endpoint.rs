//! Fuzzes the SIP endpoint state machine (`earshot::sip::endpoint::Endpoint`, sans-IO) with
//! SEQUENCES of inputs from three sources (UDP and TCP), virtual time advancing between them,
//! and the application answering, rejecting and hanging up calls as the bytes say.
//!
//! Input: a list of records, each an opcode byte then its operands (see [`step`]). Datagram
//! records carry a little-endian u16 length; `fuzz/seed.sh` writes seeds in this form from
//! the torture suites and from scripted dialogs (INVITE → ACK → INFO → re-INVITE → BYE).
//!
//! Invariants checked after every step: the server transactions never exceed their bound,
//! calls never exceed `max_calls`, everything the endpoint sends parses as SIP, the events
//! follow a call's life (Incoming first, at most one Ended, nothing after it), and timers
//! make progress (`handle_timeout` at a deadline never leaves the same deadline due forever).
//! At the end the application hangs up every call; four minutes later no call and no server
//! transaction may be left.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use earshot::sip::dialog::{ConnId, Flow, Transport};
use earshot::sip::endpoint::{CallRef, Endpoint, EndpointConfig, Event, Limits};
use earshot::sip::message::{self, Message};
use earshot::sip::sdp::{Codec, Direction, LocalMedia};
use libfuzzer_sys::fuzz_target;

const MAX_CALLS: usize = 3;
const LIMITS: Limits = Limits {
    max_transactions: 16,
    max_transactions_per_source: 8,
    invite_rate: 5,
    invite_burst: 10,
    stateless_response_rate: 20,
    rate_sources: 4,
};
const SOURCES: [&str; 3] = ["127.0.0.1:5070", "192.0.2.7:5060", "[2001:db8::1]:5062"];
/// Deadlines handled by one `advance`; far more than any legitimate schedule needs.
const MAX_TIMER_STEPS: usize = 10_000;
/// Headers a response copies from its request, as the parser's errors name them.
const ECHOED: [&str; 5] = ["\"Via\"", "\"From\"", "\"To\"", "\"Call-ID\"", "\"CSeq\""];
/// Records taken from one input (keeps each run short).
const MAX_STEPS: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Life {
    Offered,
    Confirmed,
    Ended,
}

struct World {
    ep: Endpoint,
    now: Instant,
    calls: HashMap<CallRef, Life>,
    /// Calls in offer order, for the application's commands.
    order: Vec<CallRef>,
    ended: HashSet<CallRef>,
    /// The To tag of the last response we sent: `$TAG` in a datagram stands for it, so
    /// scripted seeds can continue a dialog whose tag the endpoint chose.
    last_tag: String,
}

impl World {
    fn new() -> Self {
        let config = EndpointConfig {
            advertised: "127.0.0.1:5060".parse().expect("address"),
            user_agent: "earshot-fuzz".into(),
            max_calls: MAX_CALLS,
            limits: LIMITS,
        };
        Self {
            ep: Endpoint::new(config, 7),
            now: Instant::now(),
            calls: HashMap::new(),
            order: Vec::new(),
            ended: HashSet::new(),
            last_tag: String::new(),
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        let mut steps = 0;
        while let Some(at) = self.ep.poll_timeout() {
            if at > until {
                break;
            }
            steps += 1;
            assert!(steps < MAX_TIMER_STEPS, "timers make no progress");
            self.now = at.max(self.now);
            self.ep.handle_timeout(self.now);
            self.drain();
        }
        self.now = until;
    }

    fn pick(&self, byte: u8) -> Option<CallRef> {
        let live: Vec<CallRef> = self
            .order
            .iter()
            .copied()
            .filter(|c| !self.ended.contains(c))
            .collect();
        if live.is_empty() {
            None
        } else {
            live.get(usize::from(byte) % live.len()).copied()
        }
    }

    /// Takes what the endpoint produced and checks it.
    fn drain(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            match message::parse(&t.bytes) {
                Ok(Message::Response(r)) => {
                    if let Some(tag) = r.headers.to().as_ref().and_then(|to| to.tag()) {
                        self.last_tag = tag.to_string();
                    }
                }
                Ok(Message::Request(_)) => {}
                // A response copies Via, From, To, Call-ID and CSeq from the request (§8.2.6.2),
                // so one to a request with such a broken header (RFC 4475 badvers: `Via:
                // SIP/7.0/UDP`, answered 505) does not parse either; anything else must.
                Err(e) => assert!(
                    t.bytes.starts_with(b"SIP/2.0 ")
                        && ECHOED.iter().any(|h| format!("{e:?}").contains(h)),
                    "the endpoint sent unparseable SIP ({e:?}):\n{}",
                    String::from_utf8_lossy(&t.bytes)
                ),
            }
        }
        while let Some(event) = self.ep.poll_event() {
            if trace() {
                eprintln!("{:?} {event:?}", self.now);
            }
            match event {
                Event::Incoming(incoming) => {
                    let fresh = self.calls.insert(incoming.call, Life::Offered).is_none();
                    assert!(fresh, "a call offered twice");
                    self.order.push(incoming.call);
                }
                Event::Confirmed { call } => {
                    let life = self
                        .calls
                        .get_mut(&call)
                        .expect("confirmed an unknown call");
                    assert!(*life == Life::Offered, "confirmed twice or after its end");
                    *life = Life::Confirmed;
                }
                Event::MediaChanged { call, .. }
                | Event::Dtmf { call, .. }
                | Event::ReferRequested { call, .. }
                | Event::Transfer { call, .. } => {
                    let life = self.calls.get(&call).expect("event for an unknown call");
                    assert!(*life != Life::Ended, "event after the call ended");
                }
                Event::Ended { call, .. } => {
                    let life = self.calls.get_mut(&call).expect("ended an unknown call");
                    assert!(*life != Life::Ended, "a call ended twice");
                    *life = Life::Ended;
                    self.ended.insert(call);
                }
                // Progress of calls earshot places: this harness places none.
                Event::Registration { .. }
                | Event::Progress { .. }
                | Event::Answered { .. }
                | Event::Failed { .. } => {}
            }
        }
        assert!(
            self.ep.server_transactions() <= LIMITS.max_transactions,
            "server transactions over their bound"
        );
        assert!(self.ep.active_calls() <= MAX_CALLS, "calls over max_calls");
    }
}

/// `EARSHOT_FUZZ_TRACE=1` prints the events (to check what a seed reaches).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("EARSHOT_FUZZ_TRACE").is_some())
}

/// `bytes` with every `$TAG` replaced by `tag`.
fn substitute(bytes: &[u8], tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.starts_with(b"$TAG") {
            out.extend_from_slice(tag.as_bytes());
            rest = rest.get(4..).unwrap_or_default();
        } else if let Some((&b, tail)) = rest.split_first() {
            out.push(b);
            rest = tail;
        }
    }
    out
}

fn media(byte: u8) -> LocalMedia {
    LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 20000,
        codecs: match byte % 3 {
            0 => vec![Codec::Pcmu, Codec::Pcma],
            1 => vec![Codec::Pcma],
            _ => vec![Codec::Pcmu],
        },
        session_id: 1,
        session_version: 1,
        direction: Direction::SendRecv,
    }
}

fn flow(byte: u8) -> Flow {
    let source = usize::from(byte >> 4) % SOURCES.len();
    let remote: SocketAddr = SOURCES
        .get(source)
        .copied()
        .unwrap_or("127.0.0.1:5070")
        .parse()
        .expect("address");
    let transport = if byte & 0x08 != 0 {
        Transport::Tcp(Some(ConnId(source as u64)))
    } else {
        Transport::Udp
    };
    Flow { transport, remote }
}

/// Runs one record; returns the rest of the input, or `None` when it is used up.
fn step<'a>(world: &mut World, data: &'a [u8]) -> Option<&'a [u8]> {
    let (&op, rest) = data.split_first()?;
    let (&arg, rest) = rest.split_first().unwrap_or((&0, &[]));
    match op & 0x07 {
        // A datagram: `op` picks source and transport, then u16 length, then the bytes.
        0 | 1 | 2 => {
            let (&hi, rest) = rest.split_first().unwrap_or((&0, &[]));
            let len = usize::from(u16::from_le_bytes([arg, hi])).min(rest.len());
            let (bytes, rest) = rest.split_at(len);
            let bytes = substitute(bytes, &world.last_tag);
            world.ep.handle_datagram(world.now, flow(op), &bytes);
            world.drain();
            Some(rest)
        }
        // Time passes: `arg` tenths of a second, or seconds when the high bit of `op` is set.
        3 => {
            let unit = if op & 0x80 != 0 { 1000 } else { 100 };
            world.advance(Duration::from_millis(u64::from(arg) * unit));
            Some(rest)
        }
        4 => {
            if let Some(call) = world.pick(arg) {
                let ring = Duration::from_millis(u64::from(op >> 3) * 100);
                world.ep.answer(world.now, call, media(op >> 3), ring);
                world.drain();
            }
            Some(rest)
        }
        5 => {
            if let Some(call) = world.pick(arg) {
                let status = [486, 480, 603, 404, 500, 488][usize::from(op >> 3) % 6];
                world.ep.reject(world.now, call, status);
                world.drain();
            }
            Some(rest)
        }
        6 => {
            if let Some(call) = world.pick(arg) {
                world.ep.hangup(world.now, call);
                world.drain();
            }
            Some(rest)
        }
        _ => {
            match arg % 3 {
                0 => world.ep.connection_closed(ConnId(u64::from(op >> 4) % 3)),
                1 => {
                    if let Some(call) = world.pick(op >> 3) {
                        world.ep.peer_media(call);
                    }
                }
                _ => world.ep.shut_down(world.now),
            }
            world.drain();
            Some(rest)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut world = World::new();
    let mut rest = data;
    for _ in 0..MAX_STEPS {
        match step(&mut world, rest) {
            Some(next) => rest = next,
            None => break,
        }
    }
    // The application hangs up whatever is left, and every timer runs out: no transaction and
    // no call may outlive that.
    while let Some(call) = world.pick(0) {
        world.ep.hangup(world.now, call);
        world.drain();
        // A call that cannot end at once (BYE after the ACK) ends by its timers.
        world.ended.insert(call);
    }
    world.advance(Duration::from_secs(120));
    world.advance(Duration::from_secs(120));
    assert_eq!(
        world.ep.server_transactions(),
        0,
        "server transactions outlive their timers"
    );
    assert_eq!(
        world.ep.active_calls(),
        0,
        "calls outlive a hangup and their timers"
    );
});
