//! Replays against the real binary: a captured Twilio stream upgrade sent again, a captured
//! voice webhook sent again after its call ended (and after a restart made earshot forget its
//! tokens), and a SIP Call-ID reused after its call ended. Each is refused, counted, and leaves
//! the stored call exactly as it was; a retransmitted INVITE is not a reuse.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

mod support;
mod twilio_client;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Earshot;
use support::sip::{self, Message};
use twilio_client::{Plan, TwilioSide};

/// One series of `/metrics`, as a number (0 when absent).
async fn metric(side: &TwilioSide, name: &str) -> u64 {
    let (status, text) = side.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The stored call of `call_sid` once it has ended and its record stopped changing.
async fn ended_call(side: &TwilioSide, call_sid: &str) -> (Value, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = None;
    loop {
        let now = side.stored_call(call_sid).await;
        if let Some((call, _)) = &now
            && call["status"] == "ended"
            && now == last
        {
            return now.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the call of {call_sid} never settled as ended: {now:?}"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every stored Twilio call's `external_id`.
async fn twilio_calls(side: &TwilioSide) -> Vec<String> {
    let (status, body) = side.get("/api/calls?source=twilio&limit=200").await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["external_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_stream_upgrade_is_refused() {
    let e = Earshot::start(&twilio_client::config(""));
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let plan = Plan::new(&call_sid, &token, vec![0xff; 160 * 25]);
    let first = side.stream(&plan).await;
    assert!(first.connect_error.is_none(), "{:?}", first.connect_error);
    assert!(!first.media.is_empty());
    // The captured upgrade: the same URL and the same signature, twice more.
    let signature = twilio_client::sign(&twilio_client::stream_url_of(&token), &[]);
    assert_eq!(
        side.upgrade_status(&token, Some(&signature)).await,
        Some(403)
    );
    assert_eq!(
        side.upgrade_status(&token, Some(&signature)).await,
        Some(403)
    );
    assert_eq!(metric(&side, "earshot_calls_replayed_total").await, 2);
    let (call, _) = ended_call(&side, &call_sid).await;
    assert_eq!(call["external_id"], call_sid.as_str());
    assert_eq!(twilio_calls(&side).await, [call_sid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_voice_webhook_after_the_call_ended_is_refused() {
    let store = support::temp_dir("replay-store").join("earshot.redb");
    let store_toml = format!("[store]\npath = {:?}\n", store.display().to_string());
    let mut e = Earshot::start(&twilio_client::config(&store_toml));
    let side = TwilioSide::new(e.http_addr());
    let call_sid = twilio_client::call_sid();
    let token = side.webhook(&call_sid).await;
    let outcome = side
        .stream(&Plan::new(&call_sid, &token, vec![0xff; 160 * 25]))
        .await;
    assert!(!outcome.media.is_empty());
    let (before, before_events) = ended_call(&side, &call_sid).await;
    // While earshot remembers the CallSid, the webhook is a retry: the same, spent token.
    assert_eq!(side.webhook(&call_sid).await, token);
    let signature = twilio_client::sign(&twilio_client::stream_url_of(&token), &[]);
    assert_eq!(
        side.upgrade_status(&token, Some(&signature)).await,
        Some(403)
    );
    e.terminate(Duration::from_secs(10));

    // A restart forgets the tokens (as 10 minutes would): the store still knows the call.
    let e = Earshot::start(&twilio_client::config(&store_toml));
    let side = TwilioSide::new(e.http_addr());
    let (status, body) = side.post_webhook(&call_sid, "").await;
    assert_eq!(status, 409, "{body}");
    assert!(!body.contains("<Stream"), "{body}");
    assert_eq!(metric(&side, "earshot_calls_replayed_total").await, 1);
    let (after, after_events) = ended_call(&side, &call_sid).await;
    assert_eq!(after, before);
    assert_eq!(after_events.len(), before_events.len());
    assert_eq!(twilio_calls(&side).await, std::slice::from_ref(&call_sid));
    // A new call is still welcome.
    let fresh = twilio_client::call_sid();
    assert_eq!(side.webhook(&fresh).await.len(), 32);
}

/// The SIP responses to our requests on `sock` until a final one (or `limit`).
fn final_response(sock: &UdpSocket, limit: Duration) -> Vec<Message> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && let Some(msg) = Message::parse(&buf[..n])
        {
            let last = msg.status().is_some_and(|s| s >= 200);
            seen.push(msg);
            if last {
                break;
            }
        }
    }
    seen
}

fn sip_call(api: SocketAddr, call_id: &str) -> Option<Value> {
    let page: Value = serde_json::from_str(&support_get(api, "/api/calls?source=sip")).unwrap();
    page["calls"]
        .as_array()?
        .iter()
        .find(|c| c["external_id"] == call_id)
        .cloned()
}

/// A GET on the API (loopback, no token): its body.
fn support_get(api: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(api).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{out}");
    body.to_owned()
}

#[test]
fn a_reused_sip_call_id_after_the_call_ended_is_refused() {
    let e = Earshot::start("");
    let target = e.sip_addr();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let call_id = support::unique("reuse");
    // The first INVITE, sent twice: a retransmission within the transaction is no reuse.
    let invite = sip::invite(local, target, &call_id, rtp.local_addr().unwrap());
    sock.send_to(&invite, target).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    sock.send_to(&invite, target).unwrap();
    let responses = final_response(&sock, Duration::from_secs(10));
    let ok = responses.last().unwrap().clone();
    assert_eq!(
        ok.status(),
        Some(200),
        "{:?}",
        responses.iter().map(Message::status).collect::<Vec<_>>()
    );
    assert!(responses.iter().all(|m| m.status() != Some(400)));
    sock.send_to(&sip::in_dialog("ACK", &ok, local, 1), target)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sock.send_to(&sip::in_dialog("BYE", &ok, local, 2), target)
        .unwrap();
    let bye = final_response(&sock, Duration::from_secs(5));
    assert!(
        bye.iter()
            .any(|m| m.status() == Some(200) && m.cseq_method() == Some("BYE"))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        if let Some(call) = sip_call(e.http_addr(), &call_id)
            && call["status"] == "ended"
        {
            break call;
        }
        assert!(
            Instant::now() < deadline,
            "the call never ended in the store"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // A new INVITE (new From tag, new branch) with the ended call's Call-ID.
    let again = sip::invite(local, target, &call_id, rtp.local_addr().unwrap());
    sock.send_to(&again, target).unwrap();
    let responses = final_response(&sock, Duration::from_secs(10));
    let refusal = responses.last().unwrap();
    assert_eq!(refusal.status(), Some(400), "{responses:?}");
    assert!(responses.iter().all(|m| m.status() != Some(200)));
    let uri = format!("sip:earshot@{target}");
    sock.send_to(&sip::ack_for_failure(&uri, refusal), target)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sip_call(e.http_addr(), &call_id).unwrap(), before);
    let calls: Value = serde_json::from_str(&support_get(e.http_addr(), "/api/calls")).unwrap();
    assert_eq!(calls["calls"].as_array().unwrap().len(), 1, "{calls}");
    let metrics = support_get(e.http_addr(), "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "earshot_calls_replayed_total 1"),
        "{metrics}"
    );
}
