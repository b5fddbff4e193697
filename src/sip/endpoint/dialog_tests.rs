//! Scenario tests, in virtual time, of what happens inside an established call's dialog: RFC
//! 4028 session timers (the peer refreshing, the peer silent, earshot refreshing) and RFC 3515
//! transfer by REFER both ways.

use super::*;

/// Everything sent since the last call, parsed: responses and requests apart.
fn sent(h: &mut Harness) -> (Vec<Response>, Vec<Request>) {
    let (mut responses, mut requests) = (vec![], vec![]);
    while let Some(t) = h.ep.poll_transmit() {
        match message::parse(&t.bytes) {
            Ok(Message::Response(r)) => responses.push(r),
            Ok(Message::Request(r)) => requests.push(r),
            Err(err) => panic!("unparsable output: {err:?}"),
        }
    }
    (responses, requests)
}

/// `text` with `headers` (lines ending in `\n`) inserted after Max-Forwards.
fn with_headers(text: &str, headers: &str) -> String {
    text.replacen(
        "Max-Forwards: 70\n",
        &format!("Max-Forwards: 70\n{headers}"),
        1,
    )
}

/// `text` (a request without body) carrying `body` of `content_type`.
fn with_body(text: &str, content_type: &str, body: &str) -> String {
    text.replace(
        "Content-Length: 0\n\n",
        &format!(
            "Content-Type: {content_type}\nContent-Length: {}\n\n{body}",
            body.len()
        ),
    )
}

/// A call answered and ACKed whose INVITE carried `headers`; returns our tag and the 200.
fn call_with(h: &mut Harness, call_id: &str, headers: &str) -> (String, Response) {
    let (tag, ok, _) = answered(h, call_id, headers);
    (tag, ok)
}

/// [`call_with`], with the call's handle too.
fn answered(h: &mut Harness, call_id: &str, headers: &str) -> (String, Response, CallRef) {
    h.send(&with_headers(
        &invite(&format!("z9hG4bK{call_id}"), call_id),
        headers,
    ));
    let call = h.answer_incoming(Duration::ZERO);
    let ok = h.last_response().unwrap();
    assert_eq!(ok.status, 200);
    let tag = to_tag(&ok);
    h.send(&in_dialog(
        "ACK",
        1,
        &format!("z9hG4bK{call_id}a"),
        call_id,
        &tag,
    ));
    h.events();
    (tag, ok, call)
}

/// The peer's answer to a request of ours, with `extra` header lines.
fn reply(req: &Request, status: u16, extra: &str) -> String {
    let mut text = format!("SIP/2.0 {status} Whatever\n");
    for name in ["via", "from", "to", "call-id", "cseq"] {
        for value in req.headers.get_all(name) {
            text.push_str(&format!("{name}: {value}\n"));
        }
    }
    text.push_str(extra);
    text.push_str("Content-Length: 0\n\n");
    text
}

fn ended(events: &[Event]) -> Option<EndReason> {
    events.iter().find_map(|e| match e {
        Event::Ended { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

fn methods(requests: &[Request]) -> Vec<String> {
    requests.iter().map(|r| r.method.to_string()).collect()
}

const PEER_REFRESHES: &str = "Supported: timer\nSession-Expires: 90;refresher=uac\n";
const WE_REFRESH: &str = "Supported: timer\nSession-Expires: 90;refresher=uas\n";

// ---- session timers (RFC 4028) ------------------------------------------------------------

#[test]
fn session_expires_below_min_se_gets_422_with_our_min_se() {
    let mut h = Harness::new();
    h.send(&with_headers(
        &invite("z9hG4bKst1", "st1"),
        "Supported: timer\nSession-Expires: 60\n",
    ));
    let resp = h.last_response().unwrap();
    assert_eq!(resp.status, 422);
    assert_eq!(resp.headers.get("min-se"), Some("90"));
    assert!(h.events().is_empty(), "no call");
}

#[test]
fn require_timer_is_supported_and_the_2xx_names_the_uac_refresher_with_require() {
    let mut h = Harness::new();
    let headers = format!("Require: timer\n{PEER_REFRESHES}");
    let (_, ok) = call_with(&mut h, "st2", &headers);
    assert_eq!(ok.headers.get("session-expires"), Some("90;refresher=uac"));
    assert_eq!(ok.headers.get("require"), Some("timer"));
    assert_eq!(ok.headers.get("supported"), Some("timer"));
}

#[test]
fn peer_refreshing_keeps_the_call_past_session_expires_and_silence_ends_it_with_a_bye() {
    let mut h = Harness::new();
    let (tag, _) = call_with(&mut h, "st3", PEER_REFRESHES);
    h.advance(Duration::from_secs(40));
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n";
    h.send(&with_headers(
        &reinvite("z9hG4bKst3r", "st3", &tag, sdp),
        PEER_REFRESHES,
    ));
    let ok = h.last_response().unwrap();
    assert_eq!(
        (ok.status, ok.headers.get("session-expires")),
        (200, Some("90;refresher=uac"))
    );
    h.send(&in_dialog("ACK", 2, "z9hG4bKst3ra", "st3", &tag));
    // The first interval would have run out at 60 s (90 - min(32, 30)); refreshed at 40 s, the
    // session now lasts until 100 s.
    h.advance(Duration::from_secs(59));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "no BYE before the refreshed expiry");
    assert_eq!(ended(&h.events()), None);
    h.advance(Duration::from_secs(1));
    let (_, requests) = sent(&mut h);
    assert_eq!(methods(&requests), ["BYE"]);
    assert_eq!(ended(&h.events()), Some(EndReason::SessionExpired));
}

#[test]
fn a_silent_refresher_gets_a_bye_at_expiry_minus_a_third() {
    let mut h = Harness::new();
    call_with(&mut h, "st4", PEER_REFRESHES);
    h.advance(Duration::from_millis(59_999));
    assert!(sent(&mut h).1.is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(methods(&sent(&mut h).1), ["BYE"]);
    assert_eq!(ended(&h.events()), Some(EndReason::SessionExpired));
}

#[test]
fn earshot_refreshes_by_reinvite_at_half_the_interval_and_acks_the_200() {
    let mut h = Harness::new();
    let (_, ok) = call_with(&mut h, "st5", WE_REFRESH);
    assert_eq!(ok.headers.get("session-expires"), Some("90;refresher=uas"));
    assert_eq!(ok.headers.get("require"), None);
    h.advance(Duration::from_millis(44_999));
    assert!(sent(&mut h).1.is_empty());
    h.advance(Duration::from_millis(1));
    let (_, requests) = sent(&mut h);
    assert_eq!(methods(&requests), ["INVITE"]);
    let refresh = &requests[0];
    assert_eq!(refresh.body, ok.body, "the same SDP as our answer");
    assert_eq!(
        refresh.headers.get("session-expires"),
        Some("90;refresher=uac")
    );
    assert!(refresh.headers.contact().is_some());
    h.send(&reply(
        refresh,
        200,
        "Session-Expires: 90;refresher=uac\nContact: <sip:2000@127.0.0.1:5070>\n",
    ));
    let (_, requests) = sent(&mut h);
    assert_eq!(methods(&requests), ["ACK"]);
    let ack = &requests[0];
    assert_eq!(
        ack.headers.cseq().unwrap().seq,
        refresh.headers.cseq().unwrap().seq
    );
    assert_ne!(
        ack.headers.via().unwrap().branch(),
        refresh.headers.via().unwrap().branch()
    );
    // A retransmitted 200 gets the same ACK again.
    h.send(&reply(refresh, 200, "Session-Expires: 90;refresher=uac\n"));
    assert_eq!(sent(&mut h).1[0].to_bytes(), ack.to_bytes());
    // Refreshed at 45 s: the next refresh at 90 s, and the call still up.
    h.advance(Duration::from_secs(45));
    assert_eq!(methods(&sent(&mut h).1), ["INVITE"]);
    assert_eq!(ended(&h.events()), None);
    assert_eq!(h.ep.active_calls(), 1);
}

#[test]
fn a_481_to_our_refresh_ends_the_call_and_is_acked_in_its_transaction() {
    let mut h = Harness::new();
    call_with(&mut h, "st6", WE_REFRESH);
    h.advance(Duration::from_secs(45));
    let refresh = sent(&mut h).1.remove(0);
    h.send(&reply(&refresh, 481, ""));
    let (_, requests) = sent(&mut h);
    assert_eq!(methods(&requests), ["ACK"]);
    assert_eq!(
        requests[0].headers.via().unwrap().branch(),
        refresh.headers.via().unwrap().branch(),
        "§17.1.1.3: the ACK of a non-2xx is part of the INVITE transaction"
    );
    assert_eq!(ended(&h.events()), Some(EndReason::RefreshFailed(481)));
    assert_eq!(h.ep.active_calls(), 0);
}

#[test]
fn an_unanswered_refresh_times_out_and_ends_the_call_with_a_bye() {
    let mut h = Harness::new();
    call_with(
        &mut h,
        "st7",
        "Supported: timer\nSession-Expires: 1800;refresher=uas\n",
    );
    h.advance(Duration::from_secs(900));
    assert_eq!(methods(&sent(&mut h).1), ["INVITE"]);
    // Timer B at 64·T1, long before the expiry (1768 s).
    h.advance(Duration::from_secs(32));
    let (_, requests) = sent(&mut h);
    assert_eq!(methods(&requests).last().map(String::as_str), Some("BYE"));
    assert_eq!(ended(&h.events()), Some(EndReason::RefreshFailed(408)));
}

#[test]
fn refreshes_that_keep_failing_end_the_session_at_its_expiry() {
    let mut h = Harness::new();
    call_with(&mut h, "st10", WE_REFRESH);
    h.advance(Duration::from_secs(45));
    let refresh = sent(&mut h).1.remove(0);
    h.send(&reply(&refresh, 500, ""));
    // Tried again halfway to the expiry (60 s), then the session ends there.
    h.advance(Duration::from_millis(7_499));
    assert_eq!(methods(&sent(&mut h).1), ["ACK"]);
    h.advance(Duration::from_millis(1));
    assert_eq!(methods(&sent(&mut h).1), ["INVITE"]);
    h.advance(Duration::from_millis(7_500));
    assert_eq!(
        methods(&sent(&mut h).1).last().map(String::as_str),
        Some("BYE")
    );
    assert_eq!(ended(&h.events()), Some(EndReason::SessionExpired));
}

#[test]
fn earshot_refreshes_by_update_without_a_body_when_the_peer_allows_it() {
    let mut h = Harness::new();
    let headers = format!("Allow: INVITE, ACK, BYE, UPDATE\n{WE_REFRESH}");
    call_with(&mut h, "st8", &headers);
    h.advance(Duration::from_secs(45));
    let (_, requests) = sent(&mut h);
    assert_eq!(methods(&requests), ["UPDATE"]);
    assert!(requests[0].body.is_empty());
    h.send(&reply(
        &requests[0],
        200,
        "Session-Expires: 90;refresher=uac\n",
    ));
    assert!(sent(&mut h).1.is_empty(), "no ACK for UPDATE");
    h.advance(Duration::from_secs(45));
    assert_eq!(methods(&sent(&mut h).1), ["UPDATE"]);
}

#[test]
fn a_peer_that_does_not_know_timers_gets_no_session_timer() {
    let mut h = Harness::new();
    let (_, ok) = call_with(&mut h, "st9", "");
    assert_eq!(ok.headers.get("session-expires"), None);
    h.advance(Duration::from_secs(4000));
    assert!(sent(&mut h).1.is_empty());
    assert_eq!(h.ep.active_calls(), 1);
}

// ---- REFER from the peer (RFC 3515) -------------------------------------------------------

fn refer_from_peer(call_id: &str, tag: &str, cseq: u32, refer_to: &str) -> String {
    with_headers(
        &in_dialog("REFER", cseq, &format!("z9hG4bKrf{cseq}"), call_id, tag),
        refer_to,
    )
}

fn accept_refer(h: &mut Harness) {
    h.ep.set_dialog_policy(DialogPolicy {
        accept_refer: true,
        ..DialogPolicy::default()
    });
}

#[test]
fn a_refer_is_refused_with_403_unless_the_config_accepts_it() {
    let mut h = Harness::new();
    let tag = confirmed_call(&mut h, "z9hG4bKrf1", "rf1");
    h.send(&refer_from_peer(
        "rf1",
        &tag,
        2,
        "Refer-To: <sip:9999@evil.example>\n",
    ));
    let (responses, requests) = sent(&mut h);
    assert_eq!(
        responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        [403]
    );
    assert!(requests.is_empty(), "no NOTIFY");
    assert!(h.events().is_empty(), "nobody is asked to dial");
    assert_eq!(h.ep.stats().refers_refused, 1);
    // Outside a dialog: 403 as well, whatever the config.
    accept_refer(&mut h);
    let outside = in_dialog("REFER", 1, "z9hG4bKrf1o", "other", "x")
        .replace(";tag=x", "")
        .replacen(
            "Max-Forwards: 70\n",
            "Max-Forwards: 70\nRefer-To: <sip:1@x>\n",
            1,
        );
    h.send(&outside);
    assert_eq!(h.last_response().unwrap().status, 403);
}

#[test]
fn malformed_refer_to_and_replaces_get_400() {
    let mut h = Harness::new();
    accept_refer(&mut h);
    let tag = confirmed_call(&mut h, "z9hG4bKrf2", "rf2");
    let cases = [
        "",
        "Refer-To: <sip:1@a>\nRefer-To: <sip:2@b>\n",
        "Refer-To: <http://evil.example/>\n",
        "Refer-To: <sip:1@a?Replaces=abc%3Bto-tag%3D1>\n",
        "Refer-To: <sip:1@a>\nReplaces: ;to-tag=1;from-tag=2\n",
    ];
    for (i, case) in cases.iter().enumerate() {
        h.send(&refer_from_peer("rf2", &tag, 2 + i as u32, case));
        let resp = h.last_response().unwrap();
        assert_eq!(resp.status, 400, "{case}");
    }
    assert!(h.events().is_empty());
    assert_eq!(h.ep.active_calls(), 1);
}

#[test]
fn an_accepted_refer_gets_202_a_notify_100_and_503_when_nobody_acts() {
    let mut h = Harness::new();
    let (_, responses, requests) = peer_refers(&mut h, "rf3", "Refer-To: <sip:3000@10.0.0.9>\n");
    assert_eq!(responses[0].status, 202);
    assert_eq!(methods(&requests), ["NOTIFY"]);
    let notify = &requests[0];
    assert_eq!(notify.headers.get("event"), Some("refer;id=2"));
    assert_eq!(notify.body, b"SIP/2.0 100 Trying\r\n");
    let target = h.events().into_iter().find_map(|e| match e {
        Event::ReferRequested { target, .. } => Some(target),
        _ => None,
    });
    assert_eq!(target.unwrap().to_string(), "sip:3000@10.0.0.9");
    h.send(&reply(notify, 200, ""));
    h.advance(Duration::from_secs(32));
    let (_, requests) = sent(&mut h);
    assert_eq!(methods(&requests), ["NOTIFY"]);
    assert!(String::from_utf8_lossy(&requests[0].body).starts_with("SIP/2.0 503 "));
    assert!(
        requests[0]
            .headers
            .get("subscription-state")
            .unwrap()
            .starts_with("terminated")
    );
    assert_eq!(h.ep.active_calls(), 1, "the call goes on");
}

/// With REFER accepted, a confirmed call (Call-ID `call_id`) whose peer sends a REFER with
/// `headers`: our tag, and what we sent back.
fn peer_refers(
    h: &mut Harness,
    call_id: &str,
    headers: &str,
) -> (String, Vec<Response>, Vec<Request>) {
    accept_refer(h);
    let tag = confirmed_call(h, &format!("z9hG4bK{call_id}"), call_id);
    h.send(&refer_from_peer(call_id, &tag, 2, headers));
    let (responses, requests) = sent(h);
    (tag, responses, requests)
}

/// A confirmed call whose peer sent an accepted REFER (202, NOTIFY 100 answered): its ref,
/// our tag, and what the endpoint reported.
fn refer_accepted(h: &mut Harness, call_id: &str, extra: &str) -> (CallRef, String, Event) {
    let headers = format!("Refer-To: <sip:3000@10.0.0.9>\n{extra}");
    let (tag, responses, requests) = peer_refers(h, call_id, &headers);
    assert_eq!(responses[0].status, 202);
    h.send(&reply(&requests[0], 200, ""));
    let event = h
        .events()
        .into_iter()
        .find(|e| matches!(e, Event::ReferRequested { .. }))
        .unwrap();
    let Event::ReferRequested { call, .. } = event else {
        unreachable!()
    };
    (call, tag, event)
}

/// The one request sent is a NOTIFY stating `status_line`, its subscription `state`: answered
/// 200.
fn answer_notify(h: &mut Harness, status_line: &str, state: &str) {
    let (_, requests) = sent(h);
    assert_eq!(methods(&requests), ["NOTIFY"]);
    let notify = &requests[0];
    assert_eq!(
        String::from_utf8_lossy(&notify.body).trim_end(),
        status_line
    );
    let subscription = notify.headers.get("subscription-state").unwrap();
    assert!(subscription.starts_with(state), "{subscription}");
    h.send(&reply(notify, 200, ""));
}

#[test]
fn the_target_ringing_is_notified_as_180_and_its_answer_as_200_then_the_old_dialog_is_byed() {
    let mut h = Harness::new();
    let (call, _tag, event) = refer_accepted(&mut h, "rm1", "Referred-By: <sip:2000@127.0.0.1>\n");
    let Event::ReferRequested { referred_by, .. } = event else {
        unreachable!()
    };
    assert_eq!(referred_by.as_deref(), Some("<sip:2000@127.0.0.1>"));
    h.ep.refer_outcome(h.now, call, 180);
    answer_notify(&mut h, "SIP/2.0 180 Ringing", "active");
    // Ringing past 64·T1 is no failure once the target rings.
    h.advance(Duration::from_secs(40));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "{:?}", methods(&requests));
    h.ep.refer_outcome(h.now, call, 200);
    answer_notify(&mut h, "SIP/2.0 200 OK", "terminated");
    // Outcomes after the final one are ignored.
    h.ep.refer_outcome(h.now, call, 486);
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty());
    // The referrer never hangs up: earshot does, after 64·T1, and says the call was
    // transferred.
    h.advance(Duration::from_secs(33));
    let (_, requests) = sent(&mut h);
    let methods = methods(&requests);
    assert!(
        !methods.is_empty() && methods.iter().all(|m| m == "BYE"),
        "the BYE and its retransmissions: {methods:?}"
    );
    assert_eq!(ended(&h.events()), Some(EndReason::Transferred));
}

#[test]
fn the_referrers_bye_after_the_200_notify_ends_the_old_dialog_without_a_bye_of_ours() {
    let mut h = Harness::new();
    let (call, tag, event) = refer_accepted(&mut h, "rm2", "");
    let Event::ReferRequested { referred_by, .. } = event else {
        unreachable!()
    };
    assert_eq!(referred_by, None);
    h.ep.refer_outcome(h.now, call, 200);
    answer_notify(&mut h, "SIP/2.0 200 OK", "terminated");
    h.send(&in_dialog("BYE", 3, "z9hG4bKrm2b", "rm2", &tag));
    let (responses, _) = sent(&mut h);
    assert_eq!(responses[0].status, 200);
    assert_eq!(ended(&h.events()), Some(EndReason::RemoteBye));
    h.advance(Duration::from_secs(40));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "{:?}", methods(&requests));
}

#[test]
fn an_outcome_after_the_referrers_bye_sends_nothing() {
    let mut h = Harness::new();
    let (call, tag, _) = refer_accepted(&mut h, "rm3", "");
    h.send(&in_dialog("BYE", 3, "z9hG4bKrm3b", "rm3", &tag));
    assert_eq!(ended(&h.events()), Some(EndReason::RemoteBye));
    sent(&mut h);
    h.ep.refer_outcome(h.now, call, 180);
    h.ep.refer_outcome(h.now, call, 486);
    h.advance(Duration::from_secs(40));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "{:?}", methods(&requests));
}

#[test]
fn a_failed_target_is_the_final_notify_and_the_call_goes_on() {
    let mut h = Harness::new();
    let (call, _, _) = refer_accepted(&mut h, "rm4", "");
    h.ep.refer_outcome(h.now, call, 486);
    answer_notify(&mut h, "SIP/2.0 486 Busy Here", "terminated");
    h.advance(Duration::from_secs(40));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "{:?}", methods(&requests));
    assert_eq!(h.ep.active_calls(), 1, "the call goes on");
}

#[test]
fn one_notify_at_a_time_and_the_latest_status_goes_when_it_is_answered() {
    let mut h = Harness::new();
    let headers = "Refer-To: <sip:3000@10.0.0.9>\n";
    let (_, responses, requests) = peer_refers(&mut h, "rm6", headers);
    assert_eq!(responses[0].status, 202);
    let call = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::ReferRequested { call, .. } => Some(call),
            _ => None,
        })
        .unwrap();
    // NOTIFY 100 unanswered: the 180 and then the 403 wait; only the 403 goes.
    h.ep.refer_outcome(h.now, call, 180);
    h.ep.refer_outcome(h.now, call, 403);
    let (_, waiting) = sent(&mut h);
    assert!(waiting.is_empty(), "{:?}", methods(&waiting));
    h.send(&reply(&requests[0], 200, ""));
    answer_notify(&mut h, "SIP/2.0 403 Forbidden", "terminated");
    h.advance(Duration::from_secs(40));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "{:?}", methods(&requests));
    assert_eq!(h.ep.active_calls(), 1, "the call goes on");
}

#[test]
fn a_target_being_dialled_is_given_the_ringing_time_before_503() {
    let mut h = Harness::new();
    let (call, _, _) = refer_accepted(&mut h, "rm7", "");
    h.ep.refer_dialling(h.now, call);
    h.advance(Duration::from_secs(40));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "{:?}", methods(&requests));
    h.advance(REFER_RINGING);
    let (_, requests) = sent(&mut h);
    // The NOTIFY and its retransmissions (nobody answers them here).
    assert!(requests.iter().all(|r| r.method == Method::Notify));
    assert!(String::from_utf8_lossy(&requests[0].body).starts_with("SIP/2.0 503 "));
}

#[test]
fn an_attended_transfer_with_replaces_is_answered_501() {
    let mut h = Harness::new();
    let replaces = "Refer-To: <sip:3000@pbx?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>\n";
    let (_, responses, requests) = peer_refers(&mut h, "rm5", replaces);
    assert_eq!(responses[0].status, 501);
    assert!(
        requests.is_empty(),
        "no subscription: {:?}",
        methods(&requests)
    );
    assert!(
        !h.events()
            .iter()
            .any(|e| matches!(e, Event::ReferRequested { .. }))
    );
}

#[test]
fn a_notify_outside_our_subscription_gets_481_and_one_without_event_400() {
    let mut h = Harness::new();
    let tag = confirmed_call(&mut h, "z9hG4bKnt1", "nt1");
    let notify = with_body(
        &with_headers(
            &in_dialog("NOTIFY", 2, "z9hG4bKnt1n", "nt1", &tag),
            "Event: refer\nSubscription-State: active\n",
        ),
        "message/sipfrag",
        "SIP/2.0 200 OK\r\n",
    );
    h.send(&notify);
    assert_eq!(h.last_response().unwrap().status, 481);
    let no_event = in_dialog("NOTIFY", 3, "z9hG4bKnt1m", "nt1", &tag);
    h.send(&no_event);
    assert_eq!(h.last_response().unwrap().status, 400);
    // Outside any dialog: 481.
    let stray = in_dialog("NOTIFY", 1, "z9hG4bKnt1s", "nope", "nope");
    h.send(&stray);
    assert_eq!(h.last_response().unwrap().status, 481);
}

// ---- REFER from earshot (blind transfer) --------------------------------------------------

fn notify_from_peer(call_id: &str, tag: &str, cseq: u32, body: &str, state: &str) -> String {
    with_body(
        &with_headers(
            &in_dialog("NOTIFY", cseq, &format!("z9hG4bKnf{cseq}"), call_id, tag),
            &format!("Event: refer\nSubscription-State: {state}\n"),
        ),
        "message/sipfrag;version=2.0",
        body,
    )
}

fn transfers(events: &[Event]) -> Vec<TransferProgress> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Transfer { progress, .. } => Some(*progress),
            _ => None,
        })
        .collect()
}

/// A confirmed call, then our REFER to `sip:3000@10.0.0.9`; returns our tag, the call, the REFER.
fn referred(h: &mut Harness, call_id: &str, headers: &str) -> (String, CallRef, Request) {
    let (tag, _, call) = answered(h, call_id, headers);
    h.ep.refer(h.now, call, "sip:3000@10.0.0.9").unwrap();
    let refer = sent(h).1.remove(0);
    (tag, call, refer)
}

#[test]
fn blind_transfer_by_refer_reports_progress_and_ends_with_bye_on_success() {
    let mut h = Harness::new();
    let (tag, call, refer) = referred(&mut h, "xf1", "");
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(refer.headers.get("refer-to"), Some("<sip:3000@10.0.0.9>"));
    assert!(refer.headers.get("referred-by").is_some());
    assert_eq!(
        h.ep.refer(h.now, call, "sip:1@x"),
        Err(ReferError::InProgress)
    );
    h.send(&reply(&refer, 202, ""));
    assert_eq!(transfers(&h.events()), [TransferProgress::Accepted]);
    h.send(&notify_from_peer(
        "xf1",
        &tag,
        2,
        "SIP/2.0 100 Trying\r\n",
        "active;expires=60",
    ));
    assert_eq!(h.last_response().unwrap().status, 200);
    assert_eq!(transfers(&h.events()), [TransferProgress::Trying(100)]);
    h.send(&notify_from_peer(
        "xf1",
        &tag,
        3,
        "SIP/2.0 200 OK\r\n",
        "terminated;reason=noresource",
    ));
    let (responses, requests) = sent(&mut h);
    assert_eq!(responses[0].status, 200);
    assert_eq!(methods(&requests), ["BYE"]);
    let events = h.events();
    assert_eq!(transfers(&events), [TransferProgress::Succeeded]);
    assert_eq!(ended(&events), Some(EndReason::Transferred));
}

#[test]
fn a_failed_transfer_leaves_the_call_up_and_a_new_one_may_be_tried() {
    let mut h = Harness::new();
    let (tag, call, refer) = referred(&mut h, "xf2", "");
    h.send(&reply(&refer, 202, ""));
    h.send(&notify_from_peer(
        "xf2",
        &tag,
        2,
        "SIP/2.0 486 Busy Here\r\n",
        "terminated",
    ));
    let (_, requests) = sent(&mut h);
    assert!(requests.is_empty(), "no BYE");
    let events = h.events();
    assert_eq!(
        transfers(&events),
        [TransferProgress::Accepted, TransferProgress::Failed(486)]
    );
    assert_eq!(ended(&events), None);
    assert!(h.ep.refer(h.now, call, "sip:3001@10.0.0.9").is_ok());
    // A broken sipfrag is refused and changes nothing.
    h.send(&notify_from_peer(
        "xf2",
        &tag,
        3,
        "HTTP/1.1 200 OK\r\n",
        "active",
    ));
    assert_eq!(h.last_response().unwrap().status, 400);
}

#[test]
fn refer_refused_with_405_or_403_is_not_supported_and_an_allow_without_refer_is_refused_at_once() {
    let mut h = Harness::new();
    let (_, _, refer) = referred(&mut h, "xf3", "");
    h.send(&reply(&refer, 405, ""));
    assert_eq!(transfers(&h.events()), [TransferProgress::NotSupported]);
    // A REFER refused as forbidden by the caller's side: earshot may still bridge.
    let mut h = Harness::new();
    let (_, _, refer) = referred(&mut h, "xf5", "");
    h.send(&reply(&refer, 403, ""));
    assert_eq!(transfers(&h.events()), [TransferProgress::NotSupported]);
    let mut h = Harness::new();
    let (_, _, call) = answered(&mut h, "xf4", "Allow: INVITE, ACK, BYE\n");
    assert_eq!(
        h.ep.refer(h.now, call, "sip:3000@10.0.0.9"),
        Err(ReferError::NotSupported)
    );
    assert_eq!(
        h.ep.refer(h.now, call, "http://x"),
        Err(ReferError::BadTarget)
    );
}
