//! SIP floods against the real earshot binary, on loopback: tens of thousands of OPTIONS and
//! INVITEs with distinct branches from allowed sources (127.0.0.2, .3, .4: Linux answers all of
//! 127/8 on loopback), while a peer on 127.0.0.1 keeps calling.
//!
//! What is checked, from `/metrics` and the datagrams received: the server-transaction gauge
//! stays at `[sip].max_transactions_per_source` for one flooding source and at
//! `[sip].max_transactions` for several; what was dropped, refused and rate-limited is counted;
//! earshot's RSS after 4N datagrams is within a generous margin of its RSS after N; the peer's
//! OPTIONS and a full call (INVITE, 200, ACK, BYE, 200) are answered during the flood. A
//! request refused before any dialog (an INVITE with `Require: x`) gets exactly one 420 and its
//! ACK nothing; a burst of INVITEs from one source is rate-limited with 503 + Retry-After.
//! Timing is never asserted (CPU per datagram is measured by scripts/bench-sip-load.sh flood).

#![allow(clippy::unwrap_used)]
// Tests wait on real sockets and processes, so they read the real clock and sleep.
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::sip::{self, Message};
use support::{Earshot, unique};

const PEER: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// One series of `/metrics`, as a number (0 when absent).
fn metric(e: &Earshot, name: &str) -> u64 {
    let text = http::get(e.http_addr(), "/metrics").text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// VmRSS of the earshot process, kB.
fn rss_kb(e: &Earshot) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", e.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn socket_on(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(IpAddr::V4(ip), 0)).unwrap()
}

/// Sends `n` requests built by `make(i)` from `socket`, yielding now and then so earshot's
/// receive buffer is not simply overrun (the kernel would drop them before earshot saw them).
fn flood(socket: &UdpSocket, target: SocketAddr, n: usize, make: impl Fn(usize) -> Vec<u8>) {
    for i in 0..n {
        let _ = socket.send_to(&make(i), target);
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The SIP messages arriving on `socket` within `wait`, up to the first one that `last` picks.
fn receive(socket: &UdpSocket, wait: Duration, last: impl Fn(&Message) -> bool) -> Vec<Message> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && let Some(msg) = Message::parse(&buf[..n])
        {
            let done = last(&msg);
            out.push(msg);
            if done {
                break;
            }
        }
    }
    out
}

/// Every SIP message arriving on `socket` within `wait`.
fn receive_all(socket: &UdpSocket, wait: Duration) -> Vec<Message> {
    receive(socket, wait, |_| false)
}

/// Sends `request` (again every 3 s, up to 5 times: a flood may delay it) and returns the first
/// final response to it: same Call-ID and CSeq method.
fn request_final(
    socket: &UdpSocket,
    target: SocketAddr,
    request: &[u8],
    call_id: &str,
    method: &str,
) -> Option<Message> {
    let is_final = |msg: &Message| {
        msg.header("call-id") == Some(call_id)
            && msg.cseq_method() == Some(method)
            && msg.status().is_some_and(|s| s >= 200)
    };
    (0..5).find_map(|_| {
        socket.send_to(request, target).unwrap();
        receive(socket, Duration::from_secs(3), is_final)
            .into_iter()
            .find(is_final)
    })
}

/// The peer's OPTIONS, retried (a flood may delay one): its final status.
fn peer_options(e: &Earshot) -> Option<u16> {
    (0..5).find_map(|_| e.options_from(IpAddr::V4(PEER), Duration::from_secs(3)))
}

/// A whole call from the peer: INVITE, 200, ACK, BYE, 200.
fn peer_call(e: &Earshot) {
    let socket = socket_on(PEER);
    let local = socket.local_addr().unwrap();
    let call_id = unique("peer-");
    let rtp = socket_on(PEER);
    let invite = sip::invite(local, e.sip_addr(), &call_id, rtp.local_addr().unwrap());
    let ok = request_final(&socket, e.sip_addr(), &invite, &call_id, "INVITE")
        .expect("the peer's INVITE is answered during the flood");
    assert_eq!(ok.status(), Some(200), "the peer's call is taken");
    let cseq = ok.cseq_number().unwrap_or(1);
    socket
        .send_to(&sip::in_dialog("ACK", &ok, local, cseq), e.sip_addr())
        .unwrap();
    let bye = sip::in_dialog("BYE", &ok, local, cseq + 1);
    let bye_ok = request_final(&socket, e.sip_addr(), &bye, &call_id, "BYE")
        .expect("the peer's BYE is answered");
    assert_eq!(bye_ok.status(), Some(200));
}

const FLOOD_CONFIG: &str = "[sip]\nmax_transactions = 600\nmax_transactions_per_source = 400\n\
     invite_rate_per_source = 5\ninvite_burst_per_source = 10\n\
     stateless_responses_per_source = 100000\n[calls]\nmax_concurrent = 200\n";

/// Waits until earshot has read everything sent so far (its received counter stops moving),
/// and returns that counter.
fn settled_received(e: &Earshot) -> u64 {
    let mut last = metric(e, "earshot_sip_messages_received_total");
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = metric(e, "earshot_sip_messages_received_total");
        if now == last {
            return now;
        }
        last = now;
    }
}

fn options_from(socket: &UdpSocket, target: SocketAddr) -> impl Fn(usize) -> Vec<u8> + use<> {
    let local = socket.local_addr().unwrap();
    move |_| sip::options(local, target, &unique("flood-"), "udp")
}

#[test]
fn floods_stay_at_the_bounds_in_flat_memory_and_a_peer_is_still_answered() {
    let e = Earshot::start(FLOOD_CONFIG);
    let target = e.sip_addr();
    // The harness's start-up probes and the peer's OPTIONS (at most 20 below) hold transactions
    // of their own (Timer J, 32 s) on top of a flooder's bound.
    let peer_slack = 40;

    // OPTIONS from one source: it holds at most its bound; the rest is dropped and counted.
    let flooder = socket_on(Ipv4Addr::new(127, 0, 0, 2));
    let n = 10_000;
    flood(&flooder, target, n, options_from(&flooder, target));
    let received_n = settled_received(&e);
    let held = metric(&e, "earshot_sip_server_transactions");
    assert!(
        (400..=400 + peer_slack).contains(&held),
        "one source fills its bound and no more: {held}"
    );
    let dropped_n = metric(&e, "earshot_sip_overload_dropped_total");
    assert!(
        dropped_n + 400 >= received_n - peer_slack,
        "everything past the bound is counted: {dropped_n} dropped of {received_n}"
    );
    let rss_n = rss_kb(&e);

    // 3N more, while the peer asks OPTIONS and the gauge is sampled.
    let sender = flooder.try_clone().unwrap();
    let make = options_from(&flooder, target);
    let flooding = std::thread::spawn(move || flood(&sender, target, 3 * n, make));
    let mut peer_statuses = Vec::new();
    let mut peak = 0;
    for _ in 0..20 {
        peer_statuses.push(peer_options(&e));
        peak = peak.max(metric(&e, "earshot_sip_server_transactions"));
        if flooding.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    flooding.join().unwrap();
    let received_4n = settled_received(&e);
    let rss_4n = rss_kb(&e);
    let dropped_4n = metric(&e, "earshot_sip_overload_dropped_total");
    eprintln!(
        "OPTIONS flood: earshot read {received_n} then {received_4n} messages; RSS {rss_n} kB \
         after N={n}, {rss_4n} kB after 4N; dropped {dropped_n} then {dropped_4n}; peak \
         transactions {peak}; the peer got {peer_statuses:?}"
    );
    assert!(
        peer_statuses.iter().all(|s| *s == Some(200)),
        "the peer is answered during the flood: {peer_statuses:?}"
    );
    assert!(
        received_4n >= 2 * received_n,
        "the flood reached earshot: {received_n}, then {received_4n}"
    );
    assert!(peak <= 400 + peer_slack, "held at the bound: {peak}");
    assert!(dropped_4n > dropped_n, "dropped requests are counted");
    assert!(
        rss_4n < rss_n + 16 * 1024,
        "memory stays flat: {rss_n} kB after N datagrams, {rss_4n} kB after 4N"
    );

    // INVITEs from another source: rate-limited (503, counted); few become calls.
    let inviter = socket_on(Ipv4Addr::new(127, 0, 0, 3));
    let local = inviter.local_addr().unwrap();
    let media = socket_on(Ipv4Addr::new(127, 0, 0, 3)).local_addr().unwrap();
    let started = Instant::now();
    flood(&inviter, target, 5_000, |_| {
        sip::invite(local, target, &unique("iflood-"), media)
    });
    let invites = settled_received(&e) - received_4n;
    let limited = metric(&e, "earshot_sip_invites_limited_total");
    let admitted = invites.saturating_sub(limited);
    let allowed_by_rate = 10 + 5 * (started.elapsed().as_secs() + 1);
    eprintln!("INVITE flood: {invites} read, {limited} limited, {admitted} admitted");
    assert!(invites >= 2_500, "the flood reached earshot: {invites}");
    assert!(
        admitted <= allowed_by_rate,
        "{admitted} INVITEs admitted, the rate allows {allowed_by_rate}"
    );
    // The peer still calls, start to end.
    peer_call(&e);
    assert_eq!(peer_options(&e), Some(200));

    // More sources fill the table: beyond it, a stateless 503 to everyone.
    let others: Vec<_> = (4..=5)
        .map(|ip| socket_on(Ipv4Addr::new(127, 0, 0, ip)))
        .collect();
    let mut peer = None;
    for _ in 0..5 {
        for s in &others {
            flood(s, target, 1_000, options_from(s, target));
        }
        peer = peer_options(&e);
        if peer == Some(503) {
            break;
        }
    }
    // Full when the peer was refused; a few of the first flooder's may have expired since.
    let held = metric(&e, "earshot_sip_server_transactions");
    assert!(
        (580..=600).contains(&held),
        "the table holds its bound: {held}"
    );
    assert!(metric(&e, "earshot_sip_overload_rejected_total") > 0);
    assert_eq!(peer, Some(503), "a full table refuses, statelessly");
    assert_eq!(e.panics(), Vec::<String>::new());
}

fn invite_requiring(local: SocketAddr, target: SocketAddr, call_id: &str) -> Vec<u8> {
    let rtp = SocketAddr::new(local.ip(), 9);
    let invite = String::from_utf8(sip::invite(local, target, call_id, rtp)).unwrap();
    invite
        .replacen(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRequire: x\r\n",
            1,
        )
        .into_bytes()
}

#[test]
fn an_invite_requiring_an_extension_gets_exactly_one_420_and_its_ack_nothing() {
    let e = Earshot::start("");
    let socket = socket_on(Ipv4Addr::new(127, 0, 0, 6));
    let local = socket.local_addr().unwrap();
    let call_id = unique("require-");
    socket
        .send_to(
            &invite_requiring(local, e.sip_addr(), &call_id),
            e.sip_addr(),
        )
        .unwrap();
    // Timer G would have resent it at 0.5, 1.5 and 3.5 s.
    let got = receive_all(&socket, Duration::from_secs(4));
    let statuses: Vec<_> = got.iter().map(Message::status).collect();
    assert_eq!(statuses, [Some(420)], "exactly one response");
    assert_eq!(got[0].header("unsupported"), Some("x"));
    socket
        .send_to(
            &sip::ack_for_failure(&format!("sip:earshot@{}", e.sip_addr()), &got[0]),
            e.sip_addr(),
        )
        .unwrap();
    assert!(
        receive_all(&socket, Duration::from_secs(1)).is_empty(),
        "the ACK is absorbed"
    );
    assert_eq!(metric(&e, "earshot_sip_stateless_responses_total"), 1);
    assert!(e.options_ok());
}

#[test]
fn a_burst_of_invites_from_one_source_is_rate_limited() {
    let e = Earshot::start(
        "[sip]\ninvite_rate_per_source = 2\ninvite_burst_per_source = 5\n[calls]\nmax_concurrent = 100\n",
    );
    let socket = socket_on(Ipv4Addr::new(127, 0, 0, 7));
    let local = socket.local_addr().unwrap();
    let media = socket_on(Ipv4Addr::new(127, 0, 0, 7)).local_addr().unwrap();
    let burst = 40;
    for _ in 0..burst {
        let invite = sip::invite(local, e.sip_addr(), &unique("burst-"), media);
        socket.send_to(&invite, e.sip_addr()).unwrap();
    }
    let got = receive_all(&socket, Duration::from_secs(3));
    let mut finals: BTreeMap<String, u16> = BTreeMap::new();
    let mut retry_after = 0;
    for m in &got {
        if let (Some(status @ 200..), Some(id)) = (m.status(), m.header("call-id")) {
            finals.entry(id.to_owned()).or_insert(status);
            if status == 503 && m.header("retry-after").is_some() {
                retry_after += 1;
            }
        }
    }
    let refused = finals.values().filter(|&&s| s == 503).count() as u64;
    let limited = metric(&e, "earshot_sip_invites_limited_total");
    assert_eq!(
        refused, limited,
        "each limited INVITE got one 503: {finals:?}"
    );
    assert_eq!(retry_after, limited, "with Retry-After");
    assert!(
        (burst - 5 - 2 * 4..=burst - 5).contains(&(limited as usize)),
        "the burst of 5 passes, the rest is limited: {limited}"
    );
    assert_eq!(finals.len(), burst, "every INVITE got its final answer");
}
