//! The HTTP listener against slow and hostile clients, on the real binary: slow-header
//! (slowloris) connections are cut by the header-read timeout while normal requests go on, a
//! stalled body by the idle timeout, connections beyond `[http].max_connections` are closed at
//! accept; foreign `Host`s get 421 and cross-site state changes 403 (DNS rebinding, CSRF);
//! proxied requests need the token; Twilio on its own listener exposes nothing else.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;
mod twilio_client;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use support::{Earshot, free_tcp_port};

/// One series of `/metrics`, as a number (0 when absent).
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = http::get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Waits (generously) until the server closes `tcp`: true when it did, by EOF or reset.
fn closed_by_server(tcp: &mut TcpStream, limit: Duration) -> bool {
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A raw request with the given head lines; (status, body).
fn raw(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn slow_headers_are_cut_while_normal_requests_go_on() {
    let e = Earshot::start(
        "[http]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 3\nmax_connections = 16\n",
    );
    let addr = e.http_addr();
    const SLOW: usize = 6;
    // Each slow client sends a partial request head, then one more byte every second.
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            thread::spawn(move || {
                let mut tcp = TcpStream::connect(addr).unwrap();
                tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    .unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let started = Instant::now();
                let mut buf = [0u8; 256];
                while started.elapsed() < Duration::from_secs(60) {
                    if tcp.write_all(b"a").is_err() {
                        return (true, Vec::new());
                    }
                    match tcp.read(&mut buf) {
                        Ok(0) => return (true, Vec::new()),
                        Ok(n) => return (true, buf[..n].to_vec()),
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return (true, Vec::new()),
                    }
                }
                (false, Vec::new())
            })
        })
        .collect();
    // While they trickle, normal requests are served.
    thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        let health = http::get(addr, "/health");
        assert_eq!(health.status, 200, "{}", health.text());
    }
    for client in slow {
        let (closed, answer) = client.join().unwrap();
        assert!(closed, "a slow-header connection was never closed");
        // Closed without a response to the request it never finished.
        assert!(
            !String::from_utf8_lossy(&answer).contains("200 OK"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(
        metric(addr, "earshot_http_connections_timed_out_total") >= SLOW as u64,
        "{}",
        http::get(addr, "/metrics").text()
    );

    // A request whose body stalls is closed by the idle timeout.
    let before = metric(addr, "earshot_http_connections_timed_out_total");
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(
            b"POST /api/calls/c1/listen HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"on\"",
        )
        .unwrap();
    assert!(closed_by_server(&mut stalled, Duration::from_secs(30)));
    assert!(metric(addr, "earshot_http_connections_timed_out_total") > before);
    assert!(e.panics().is_empty(), "{:?}", e.panics());
}

#[test]
fn connections_beyond_the_limit_are_closed_and_counted() {
    let e = Earshot::start("[http]\nmax_connections = 3\nheader_read_timeout_secs = 120\n");
    let addr = e.http_addr();
    // Three connections that say nothing hold every slot.
    let mut holders: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Let the server accept them (a request on a fourth would otherwise race them).
    thread::sleep(Duration::from_millis(500));
    let mut extra = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(addr).unwrap();
        let _ = tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        extra.push(tcp);
    }
    for tcp in &mut extra {
        let mut buf = Vec::new();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = tcp.read_to_end(&mut buf);
        assert!(
            !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
            "a connection over the limit was served: {}",
            String::from_utf8_lossy(&buf)
        );
    }
    // The holders are still served.
    let holder = &mut holders[0];
    holder
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    holder
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = holder.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(holders);
    // Once the slots free up, the refusals are on /metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        if let Ok(r) = http::request(addr, "GET", "/metrics", &[], b"")
            && r.status == 200
        {
            break r
                .text()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("earshot_http_connections_refused_total ")?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0);
        }
        assert!(Instant::now() < deadline, "the slots never freed");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(refused, 2);
}

#[test]
fn foreign_hosts_get_421_and_cross_site_changes_403() {
    let e = Earshot::start("[http]\nhosts = [\"calls.example.com\"]\n");
    let addr = e.http_addr();
    let port = addr.port();
    let get = |host: &str| {
        raw(
            addr,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // DNS rebinding: a name that resolves here but is not ours.
    let (status, body) = get("evil.example");
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("misdirected_request"), "{body}");
    assert_eq!(get(&format!("rebind.evil.example:{port}")).0, 421);
    assert_eq!(raw(addr, "GET / HTTP/1.0\r\n\r\n").0, 421, "no Host at all");
    // Load balancers' health checks pass with any Host or none.
    assert_eq!(raw(addr, "GET /health HTTP/1.0\r\n\r\n").0, 200);
    assert_eq!(
        raw(
            addr,
            "GET /health HTTP/1.1\r\nHost: lb.internal\r\nConnection: close\r\n\r\n"
        )
        .0,
        200
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "calls.example.com".to_owned(),
    ] {
        assert_eq!(get(&host).0, 200, "{host}");
    }
    // The console's pages and the API alike.
    assert_eq!(
        raw(
            addr,
            "GET /api/calls HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        )
        .0,
        421
    );
    let post = |extra: &str| {
        raw(
            addr,
            &format!(
                "POST /api/calls/c0000000000000000000000000/hangup HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n"
            ),
        )
    };
    let (status, body) = post("Origin: https://evil.example\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    assert_eq!(post("Origin: null\r\n").0, 403);
    assert_eq!(post("Sec-Fetch-Site: cross-site\r\n").0, 403);
    assert_eq!(
        post(&format!("Origin: http://127.0.0.1:{}\r\n", port + 1)).0,
        403
    );
    // The same request from the console's own origin, or without browser headers, reaches the
    // handler (404: no such call).
    assert_eq!(post(&format!("Origin: http://127.0.0.1:{port}\r\n")).0, 404);
    assert_eq!(post("Origin: https://calls.example.com\r\n").0, 404);
    assert_eq!(post("Sec-Fetch-Site: same-origin\r\n").0, 404);
    assert_eq!(post("").0, 404);
    // GETs from other origins are reads, not state changes.
    assert_eq!(
        raw(
            addr,
            &format!(
                "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n"
            )
        )
        .0,
        200
    );
    assert_eq!(metric(addr, "earshot_http_requests_refused_total"), 8);
}

#[test]
fn proxied_requests_need_the_token() {
    let e = Earshot::start("");
    let addr = e.http_addr();
    assert_eq!(http::get(addr, "/api/calls").status, 200);
    for header in [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9;proto=https"),
        ("X-Forwarded-Proto", "https"),
        ("X-Real-IP", "203.0.113.9"),
    ] {
        let r = http::get_with(addr, "/api/calls", &[header]);
        assert_eq!(r.status, 401, "{header:?}: {}", r.text());
        assert_eq!(r.error_code(), "unauthorized");
        assert_eq!(
            http::request(addr, "POST", "/api/calls/c1/hangup", &[header], b"")
                .unwrap()
                .status,
            401
        );
    }
    // The health check stays open.
    assert_eq!(
        http::get_with(addr, "/health", &[("X-Forwarded-For", "203.0.113.9")]).status,
        200
    );
    drop(e);
    let token = "proxy-test-token-0123456789";
    let e = Earshot::start(&format!("[http]\ntoken = \"{token}\"\n"));
    let bearer = format!("Bearer {token}");
    let with = [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Authorization", bearer.as_str()),
    ];
    assert_eq!(
        http::get_with(e.http_addr(), "/api/calls", &with).status,
        200
    );
    assert_eq!(
        http::get_with(e.http_addr(), "/api/calls", &with[..1]).status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_shares_the_api_only_with_a_token_or_gets_its_own_listener() {
    // Shared listener: the token is required for the API, even on loopback.
    let e = Earshot::start(&twilio_client::config(""));
    let r = http::get(e.http_addr(), "/api/calls");
    assert_eq!(r.status, 401, "{}", r.text());
    let side = twilio_client::TwilioSide::new(e.http_addr());
    let (status, _) = side.get("/api/calls").await;
    assert_eq!(status, 200);
    drop(e);

    // Its own listener: the API stays on loopback without a token; each listener serves only
    // its own routes.
    let twilio_port = free_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let e = Earshot::start(&format!(
        "[twilio]\nenabled = true\nauth_token = {:?}\npublic_url = {:?}\nlisten = \"127.0.0.1:{twilio_port}\"\n",
        twilio_client::AUTH_TOKEN,
        twilio_client::PUBLIC_URL
    ));
    let twilio_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, twilio_port));
    assert_eq!(http::get(e.http_addr(), "/api/calls").status, 200);
    let on_api = twilio_client::TwilioSide::new(e.http_addr());
    let on_twilio = twilio_client::TwilioSide::new(twilio_addr);
    let sid = twilio_client::call_sid();
    assert_eq!(on_api.post_webhook(&sid, "").await.0, 404);
    let token = on_twilio.webhook(&sid).await;
    assert_eq!(token.len(), 32);
    for path in ["/api/calls", "/metrics", "/", "/app.js"] {
        assert_eq!(http::get(twilio_addr, path).status, 404, "{path}");
    }
}
