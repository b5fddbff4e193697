//! The web console in headless Chromium, driven over W3C WebDriver (chromedriver) with the
//! tests' tiny HTTP client, against a running earshot with a token and a real SIPp call:
//! sign in, see the live call appear, toggle listen, hang up (SIPp gets the BYE), open the
//! call page, play its recording, save a note. Screenshots go to `target/test-artifacts/`.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)]

#[path = "console/http.rs"]
mod http;
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use earshot::media::g711::Law;
use serde_json::{Value, json};
use support::pcap;
use support::sipp::{self, Scenario};
use support::{Earshot, free_tcp_port, free_udp_tcp_port};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const TOKEN: &str = "console-test-token-0123456789";

/// A chromedriver process with one headless Chromium session.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

impl Browser {
    fn start(dir: &Path) -> Browser {
        let chromedriver = find_program(&["chromedriver"])
            .expect("chromedriver must be installed (scripts/test.sh installs chromium-driver)");
        let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"])
            .expect("chromium must be installed (scripts/test.sh installs it)");
        let port = free_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http::request(addr, "GET", "/status", &[], b"")
                && r.json()["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--autoplay-policy=no-user-gesture-required".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium.display().to_string(), "args": args },
        }}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let created = browser.call("POST", "/session", &caps);
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        browser
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let r = http::request(
            self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let v = r.json();
        assert!(
            r.status < 400,
            "webdriver {method} {path}: {} {v}",
            r.status
        );
        v
    }

    fn session_call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.session_call("POST", "/url", &json!({ "url": url }));
    }

    fn find(&self, css: &str) -> Option<String> {
        let found = self.session_call(
            "POST",
            "/elements",
            &json!({ "using": "css selector", "value": css }),
        );
        found
            .as_array()?
            .first()?
            .get(ELEMENT)?
            .as_str()
            .map(str::to_owned)
    }

    fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.find(css) {
                return element;
            }
            assert!(Instant::now() < deadline, "{css} never appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, element: &str) {
        self.session_call("POST", &format!("/element/{element}/click"), &json!({}));
    }

    fn type_text(&self, element: &str, text: &str) {
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            &json!({ "text": text }),
        );
    }

    /// Clears the field `element`, then types `text` into it.
    fn retype(&self, element: &str, text: &str) {
        self.session_call("POST", &format!("/element/{element}/clear"), &json!({}));
        self.type_text(element, text);
    }

    fn attr(&self, element: &str, name: &str) -> Value {
        self.session_call(
            "GET",
            &format!("/element/{element}/attribute/{name}"),
            &json!({}),
        )
    }

    fn script(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": [] }),
        )
    }

    fn script_async(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            &json!({ "script": script, "args": [] }),
        )
    }

    fn set_window(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            &json!({ "width": width, "height": height }),
        );
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.session_call("GET", "/screenshot", &json!({}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http::request(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn caller_pcap(e: &Earshot, ms: u32) -> String {
    let codes = pcap::coded_test_signal(Law::Ulaw, ms);
    let path = e.dir().join("caller.pcap");
    pcap::write_rtp_pcap(&path, 0x5151_5151, 7, &pcap::g711_packets(0, 0, &codes)).unwrap();
    path.display().to_string()
}

fn api_get(e: &Earshot, path: &str) -> Value {
    let bearer = format!("Bearer {TOKEN}");
    http::get_with(e.http_addr(), path, &[("Authorization", &bearer)]).json()
}

/// Whether call `id`'s stored events have one that passes `check`.
fn has_event(e: &Earshot, id: &str, check: impl Fn(&Value) -> bool) -> bool {
    api_get(e, &format!("/api/calls/{id}"))["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(check))
}

/// Waits up to `timeout` until `script` returns `expected`.
fn eventually_returns(
    browser: &Browser,
    what: &str,
    timeout: Duration,
    script: &str,
    expected: &Value,
) {
    eventually(what, timeout, || browser.script(script) == *expected);
}

fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Waits until the string `script` returns passes `check`.
fn eventually_text(browser: &Browser, what: &str, script: &str, check: impl Fn(&str) -> bool) {
    eventually(what, Duration::from_secs(10), || {
        browser.script(script).as_str().is_some_and(&check)
    });
}

/// A form's text field and its submit button, as WebDriver element ids.
struct Form {
    field: String,
    button: String,
}

impl Form {
    /// Waits for the field and the button (CSS selectors) to be on the page.
    fn find(browser: &Browser, field: &str, button: &str) -> Form {
        Form {
            field: browser.wait_for(field, Duration::from_secs(10)),
            button: browser.wait_for(button, Duration::from_secs(2)),
        }
    }

    /// Puts `text` in the field, clicks the button, and waits until the string `shown` (a
    /// script) returns passes `check`.
    fn submit(
        &self,
        browser: &Browser,
        text: &str,
        what: &str,
        shown: &str,
        check: impl Fn(&str) -> bool,
    ) {
        browser.retype(&self.field, text);
        browser.click(&self.button);
        eventually_text(browser, what, shown, check);
    }
}

/// What [`Form::submit`] waits for after a target `[calls].outbound_allow` does not allow.
fn refused(text: &str) -> bool {
    text.contains("outbound_allow")
}

/// A browser signed in to `e`'s console with the token, its event stream live; and the base URL.
fn signed_in(e: &Earshot) -> (Browser, String) {
    let browser = Browser::start(e.dir());
    let base = format!("http://{}", e.http_addr());
    browser.goto(&format!("{base}/"));
    let field = browser.wait_for("#login:not([hidden]) #token", Duration::from_secs(10));
    browser.type_text(&field, TOKEN);
    browser.click(&browser.wait_for("#login-form button", Duration::from_secs(2)));
    browser.wait_for("#home:not([hidden])", Duration::from_secs(5));
    eventually(
        "the event stream never connected",
        Duration::from_secs(10),
        || browser.script("return document.getElementById('conn').textContent") == "live",
    );
    (browser, base)
}

/// A SIPp caller that streams 20 s of audio and stays on until earshot hangs up.
fn long_call(e: &Earshot) -> sipp::Sipp {
    let pcap = caller_pcap(e, 20_000);
    let scenario = Scenario::load(
        "uac_wait_bye.xml",
        &[("PCAP", pcap), ("BYE_TIMEOUT_MS", "60000".into())],
    );
    let sipp_port = free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    sipp::start(
        e.dir(),
        &scenario,
        Some(e.sip_addr()),
        sipp_port,
        &["-m", "1"],
    )
}

/// A [`long_call`] once the console lists it: the caller and the call's id.
fn live_call(e: &Earshot, browser: &Browser) -> (sipp::Sipp, String) {
    let caller = long_call(e);
    let item = browser.wait_for("li.live-call", Duration::from_secs(15));
    let id = browser
        .attr(&item, "data-call-id")
        .as_str()
        .unwrap()
        .to_owned();
    (caller, id)
}

/// Hangs `id` up through the API; `caller` must have got the BYE.
fn hang_up(e: &Earshot, id: &str, caller: sipp::Sipp) {
    http::hang_up(
        e.http_addr(),
        id,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    let outcome = caller.wait(Duration::from_secs(20));
    assert!(outcome.all_passed(1), "SIPp: {}", outcome.errors);
}

#[test]
fn console_shows_a_live_call_toggles_listen_hangs_up_and_plays_the_recording() {
    let e = Earshot::start(&format!("[http]\ntoken = \"{TOKEN}\"\n"));
    let (browser, base) = signed_in(&e);

    // A long SIPp call appears in the live list.
    let (caller, id) = live_call(&e, &browser);
    eventually(
        "the live call never showed as connected with a level",
        Duration::from_secs(10),
        || {
            let state = browser.script(&format!(
            "const li = document.querySelector('li[data-call-id=\"{id}\"]');\
             return li ? [li.querySelector('.state').textContent, li.querySelector('.meter-fill').style.width] : null"
        ));
            state[0] == "connected"
                && state[1]
                    .as_str()
                    .is_some_and(|w| w != "0%" && !w.is_empty())
        },
    );
    let shown = browser.script(&format!(
        "const li = document.querySelector('li[data-call-id=\"{id}\"]'); return [li.querySelector('.number').textContent, li.querySelector('.codec').textContent]"
    ));
    assert_eq!(shown, json!(["2000", "PCMU"]));
    browser.screenshot("console-live.png");

    // Toggle listen: playout starts on (the harness default), the button turns it off.
    let listen = browser.wait_for(
        &format!("li[data-call-id=\"{id}\"] [data-action=\"listen\"]"),
        Duration::from_secs(2),
    );
    assert_eq!(browser.attr(&listen, "aria-pressed"), "true");
    browser.click(&listen);
    eventually(
        "listen never went off in /api/live",
        Duration::from_secs(5),
        || {
            api_get(&e, "/api/live")["calls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == id.as_str() && c["listen"] == false)
        },
    );
    eventually(
        "the listen event was not stored",
        Duration::from_secs(5),
        || has_event(&e, &id, |ev| ev["type"] == "listen" && ev["on"] == false),
    );
    eventually(
        "the button never showed muted",
        Duration::from_secs(5),
        || browser.attr(&listen, "aria-pressed") == "false",
    );

    // Let the call last a little, so the recording has some length.
    std::thread::sleep(Duration::from_millis(2000));
    // Hang up (the button asks for confirmation): SIPp gets our BYE and completes.
    let hangup = browser.wait_for(
        &format!("li[data-call-id=\"{id}\"] [data-action=\"hangup\"]"),
        Duration::from_secs(2),
    );
    browser.click(&hangup);
    browser.click(&hangup);
    let outcome = caller.wait(Duration::from_secs(20));
    assert!(
        outcome.all_passed(1),
        "SIPp did not get a BYE: {outcome:?}\n{}",
        e.log_tail(30)
    );
    eventually(
        "the call stayed in the live list",
        Duration::from_secs(10),
        || browser.find("li.live-call").is_none(),
    );
    eventually(
        "the history never showed the ended call",
        Duration::from_secs(10),
        || {
            browser
                .find(&format!("tr[data-call-id=\"{id}\"] .status.ended"))
                .is_some()
        },
    );
    browser.screenshot("console-history.png");

    // The call page: timeline, the recording plays, a note saves.
    browser.goto(&format!("{base}/#/calls/{id}"));
    browser.wait_for(
        "#call:not([hidden]) #timeline li.event.ended",
        Duration::from_secs(10),
    );
    let played = browser.script_async(
        "const done = arguments[arguments.length - 1];\
         const a = document.getElementById('player');\
         const report = (why) => done({ why, readyState: a.readyState, duration: a.duration, error: a.error && a.error.code, src: a.currentSrc });\
         const wait = () => { if (a.error) return report('error'); if (a.readyState >= 2 && a.duration > 0) return report('ready'); setTimeout(wait, 100); };\
         a.play().then(() => wait(), (e) => { a.load(); setTimeout(wait, 100); });\
         setTimeout(() => report('timeout'), 8000);",
    );
    assert_eq!(
        played["why"], "ready",
        "the recording did not load: {played}"
    );
    let call_secs = api_get(&e, &format!("/api/calls/{id}"))["duration_secs"]
        .as_f64()
        .unwrap();
    let audio_secs = played["duration"].as_f64().unwrap();
    assert!(
        audio_secs > 0.2 && audio_secs <= call_secs + 0.5,
        "{audio_secs} s of audio for a {call_secs} s call: {played}"
    );
    assert!(played["error"].is_null(), "{played}");
    let note = browser.wait_for("#note", Duration::from_secs(2));
    browser.type_text(&note, "Called back — ok ✓");
    browser.click(&browser.wait_for("#note-form button", Duration::from_secs(2)));
    eventually("the note was not saved", Duration::from_secs(5), || {
        api_get(&e, &format!("/api/calls/{id}"))["note"]["text"] == "Called back — ok ✓"
    });
    browser.script("window.scrollTo(0, 0); return true");
    let console_png = browser.screenshot("console.png");
    browser.set_window(390, 844);
    std::thread::sleep(Duration::from_millis(300));
    browser.script("window.scrollTo(0, 0); return true");
    browser.screenshot("console-phone.png");
    browser.goto(&format!("{base}/"));
    browser.wait_for("#history tr", Duration::from_secs(5));
    browser.screenshot("console-phone-home.png");
    assert!(std::fs::metadata(console_png).unwrap().len() > 10_000);
}

/// An agent that takes the call and says nothing: accepts WebSocket upgrades on loopback and
/// reads until the socket closes. Returns its URL.
fn silent_agent() -> String {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            use futures_util::StreamExt as _;
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                });
            }
        });
    });
    url
}

#[test]
fn console_shows_which_calls_have_an_agent_and_its_state() {
    let e = Earshot::start(&format!(
        "[http]\ntoken = \"{TOKEN}\"\n[agent]\nurl = {:?}\n",
        silent_agent()
    ));
    let (browser, base) = signed_in(&e);
    let (caller, id) = live_call(&e, &browser);
    eventually(
        "the live call never showed its agent listening",
        Duration::from_secs(10),
        || {
            browser.script(&format!(
                "const li = document.querySelector('li[data-call-id=\"{id}\"]');\
                 return li ? li.querySelector('.agent').textContent : null"
            )) == "agent: listening"
        },
    );
    browser.screenshot("console-live-agent.png");
    let live = api_get(&e, "/api/live");
    assert_eq!(live["calls"][0]["agent"], "listening", "{live}");

    // Hung up from the API: the call page says the agent was connected.
    hang_up(&e, &id, caller);
    browser.goto(&format!("{base}/#/calls/{id}"));
    browser.wait_for(
        "#call:not([hidden]) #timeline li.event.ended",
        Duration::from_secs(10),
    );
    let facts = browser.script("return document.getElementById('call-facts').textContent");
    assert!(
        facts.as_str().unwrap().contains("connected in"),
        "no agent on the call page: {facts}"
    );
    let timeline = browser.script("return document.getElementById('timeline').textContent");
    assert!(
        timeline.as_str().unwrap().contains("Agent connected"),
        "{timeline}"
    );
}

/// The call page's Transfer form: a destination outside `[calls].outbound_allow` shows the
/// API's refusal and changes nothing; an allowed one reaches the call — a SIP call cannot
/// transfer yet, so its timeline shows the transfer failed, and the call goes on.
#[test]
fn console_transfers_a_live_call_from_its_page() {
    let e = Earshot::start(&format!(
        "[http]\ntoken = \"{TOKEN}\"\n[calls]\noutbound_allow = [\"+1555*\"]\n"
    ));
    let (browser, base) = signed_in(&e);
    let (caller, id) = live_call(&e, &browser);
    browser.goto(&format!("{base}/#/calls/{id}"));
    let form = Form::find(
        &browser,
        "#call-actions form.transfer input[name=\"to\"]",
        "#call-actions form.transfer button",
    );
    form.submit(
        &browser,
        "+442071234567",
        "the refusal was not shown",
        "const t = document.getElementById('toast'); return t ? t.textContent : ''",
        refused,
    );
    form.submit(
        &browser,
        "+15557654321",
        "the failed transfer never showed in the timeline",
        "return document.getElementById('timeline').textContent",
        |t| t.contains("Transfer to +15557654321 failed: not supported"),
    );
    let call = api_get(&e, &format!("/api/calls/{id}"));
    assert_eq!(call["live"], true, "{call:#}");
    let kinds: Vec<&str> = call["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|ev| ev["type"].as_str())
        .filter(|t| t.starts_with("transfer"))
        .collect();
    // The allowed request reached the call; the caller's Allow has no REFER, so it failed.
    assert_eq!(
        kinds,
        ["transfer_requested", "transfer_failed"],
        "only the allowed request reached the call"
    );
    hang_up(&e, &id, caller);
}

/// A Realtime service that transcribes the caller once: after the session update it reports a
/// caller turn whose transcript is `text`, then listens until the socket closes.
fn transcribing_agent(text: &'static str) -> String {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!(
        "ws://{}/v1/realtime?model=gpt-realtime",
        listener.local_addr().unwrap()
    );
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            use futures_util::{SinkExt as _, StreamExt as _};
            use tokio_tungstenite::tungstenite::Message;
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    // The first message is the session update.
                    if !matches!(ws.next().await, Some(Ok(Message::Text(_)))) {
                        return;
                    }
                    for event in [
                        json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 100, "item_id": "item_c1"}),
                        json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "item_c1"}),
                        json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_c1", "content_index": 0, "transcript": text}),
                    ] {
                        let _ = ws.send(Message::Text(event.to_string().into())).await;
                    }
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
        });
    });
    url
}

/// The call page shows a live call's transcript as it comes, as text: markup in what a caller
/// said is shown, never run.
#[test]
fn console_shows_the_transcript_as_text() {
    const SAID: &str = "<img src=x onerror=\"window.injected=1\"> <b>hello</b> & 你好";
    let e = Earshot::start(&format!(
        "[http]\ntoken = \"{TOKEN}\"\n[agent]\nprotocol = \"openai-realtime\"\nurl = {:?}\napi_key = \"sk-console-test-0123456789\"\n",
        transcribing_agent(SAID)
    ));
    let (browser, base) = signed_in(&e);
    let (caller, id) = live_call(&e, &browser);
    browser.goto(&format!("{base}/#/calls/{id}"));
    let segment = browser.wait_for("#transcript li.segment.caller", Duration::from_secs(15));
    browser.screenshot("console-transcript.png");
    let shown = browser.script(
        "const li = document.querySelector('#transcript li.segment.caller');\
         return [li.querySelector('.text').textContent, li.querySelectorAll('img, b').length, window.injected === undefined]",
    );
    assert_eq!(shown, json!([SAID, 0, true]), "{segment}");
    let txt = http::get_with(
        e.http_addr(),
        &format!("/api/calls/{id}/transcript?format=txt"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert!(
        txt.text().contains(&format!("caller: {SAID}")),
        "{}",
        txt.text()
    );
    hang_up(&e, &id, caller);
}

/// The home page lists the webhook outbox: a receiver on loopback without `allow_private` is
/// refused, and the console shows that delivery failed.
#[test]
fn console_shows_webhook_deliveries() {
    let e = Earshot::start(&format!(
        "[http]\ntoken = \"{TOKEN}\"\n[[webhook]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nevents = [\"call.started\"]\n"
    ));
    let (browser, _) = signed_in(&e);
    let caller = long_call(&e);
    browser.wait_for("li.live-call", Duration::from_secs(15));
    eventually_returns(
        &browser,
        "the refused delivery never showed",
        Duration::from_secs(20),
        "const tr = document.querySelector('#deliveries tr.delivery');\
         return tr ? [tr.children[1].textContent, tr.querySelector('.state').textContent] : null",
        &json!(["call.started", "failed"]),
    );
    browser.screenshot("console-webhooks.png");
    let live = api_get(&e, "/api/live");
    let id = live["calls"][0]["id"].as_str().unwrap().to_owned();
    hang_up(&e, &id, caller);
}

/// The dial pad: a target outside `[calls].outbound_allow` shows the API's refusal and places
/// no call; an allowed `sip:` target typed on the keys and the field places the call (a SIPp
/// callee answers it), the page goes to the new call, the API lists it as outbound, and after a
/// reload the target is among the targets dialled here and the recent outbound calls.
#[test]
fn console_dial_pad_places_an_outbound_call() {
    let e = Earshot::start(&format!(
        "[http]\ntoken = \"{TOKEN}\"\n[calls]\noutbound_allow = [\"sip:bob@127.0.0.1:*\"]\n"
    ));
    let port = sipp::port();
    let scenario = Scenario::load(
        "uas_early_media.xml",
        &[
            ("PCAP", caller_pcap(&e, 500)),
            ("EARLY_MS", "200".into()),
            ("BYE_TIMEOUT_MS", "60000".into()),
        ],
    );
    let callee = sipp::start(e.dir(), &scenario, None, port, &["-m", "1"]);
    let (browser, base) = signed_in(&e);
    let form = Form::find(&browser, "#dial-to", "#dial-call");
    form.submit(
        &browser,
        "+442071234567",
        "the refusal was not shown",
        "const p = document.getElementById('dial-error'); return p.hidden ? '' : p.textContent",
        refused,
    );
    let calls = api_get(&e, "/api/calls");
    assert_eq!(calls["calls"], json!([]), "no call was placed: {calls:#}");
    for key in ["*", "0", "#", "+"] {
        let button = browser.wait_for(
            &format!("#dial-keys button[data-key=\"{key}\"]"),
            Duration::from_secs(2),
        );
        browser.click(&button);
    }
    assert_eq!(
        browser.script("return document.getElementById('dial-to').value"),
        "+442071234567*0#+",
        "the keys type into the field"
    );

    let target = format!("sip:bob@127.0.0.1:{port}");
    form.submit(
        &browser,
        &target,
        "the page never went to the new call",
        "return location.hash",
        |h| h.starts_with("#/calls/"),
    );
    let hash = browser.script("return location.hash");
    let id = hash
        .as_str()
        .unwrap()
        .trim_start_matches("#/calls/")
        .to_owned();
    let listed = api_get(&e, "/api/calls");
    let calls = listed["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{listed:#}");
    assert_eq!(calls[0]["id"], id.as_str());
    assert_eq!(calls[0]["direction"], "outbound");
    assert_eq!(calls[0]["callee"], "bob");
    eventually(
        "the call was never answered",
        Duration::from_secs(20),
        || has_event(&e, &id, |ev| ev["type"] == "answered"),
    );

    browser.goto(&format!("{base}/"));
    browser.script("location.reload(); return null");
    browser.wait_for("#home:not([hidden])", Duration::from_secs(10));
    eventually_returns(
        &browser,
        "the dialled target was not kept",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#dial-recent li')].map((li) => li.textContent)",
        &json!([target]),
    );
    eventually_returns(
        &browser,
        "the outbound call was not listed",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#dial-outbound a')]\
         .map((a) => [a.textContent, a.getAttribute('href')])",
        &json!([["bob", format!("#/calls/{id}")]]),
    );

    let recent = browser.wait_for("#dial-recent li button", Duration::from_secs(2));
    browser.script("document.getElementById('dial-to').value = ''; return null");
    browser.click(&recent);
    assert_eq!(
        browser.script("return document.getElementById('dial-to').value"),
        target.as_str(),
        "a recent target fills the field"
    );
    browser.screenshot("console-dial-pad.png");
    hang_up(&e, &id, callee);
}
