//! Fuzzes digest authentication (`earshot::sip::auth`): `Challenge::parse` and
//! `Challenge::pick_best` on WWW-Authenticate / Proxy-Authenticate values, then
//! `authorization` on every challenge parsed. Invariants: a parsed challenge, written back as
//! a header value (quoted strings escaped), parses to the same challenge; the Authorization
//! value quotes the realm and nonce it was given (less CR and LF) and carries a hex response of the algorithm's
//! length. The same holds for the challenge `pick_best` chooses among one value per line.

#![no_main]

use earshot::sip::auth::{Algorithm, Challenge, Credentials, authorization};
use libfuzzer_sys::fuzz_target;

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn header_value(ch: &Challenge) -> String {
    let mut out = format!(
        "Digest realm={}, nonce={}, algorithm={}",
        quote(&ch.realm),
        quote(&ch.nonce),
        ch.algorithm.name()
    );
    if let Some(opaque) = &ch.opaque {
        out.push_str(&format!(", opaque={}", quote(opaque)));
    }
    if ch.qop_auth {
        out.push_str(", qop=\"auth\"");
    }
    if ch.stale {
        out.push_str(", stale=true");
    }
    out
}

fn check(ch: &Challenge, text: &str) {
    let value = header_value(ch);
    let again = Challenge::parse(&value);
    assert_eq!(
        again.as_ref(),
        Ok(ch),
        "challenge round trip through {value:?}"
    );

    let creds = Credentials {
        username: "alice",
        password: text,
    };
    let auth = authorization(ch, &creds, "REGISTER", "sip:example.com", "0a4f113b", 1);
    assert!(auth.starts_with("Digest "), "{auth}");
    // CR and LF are dropped from quoted values (no header injection); the rest is kept.
    let shown = |s: &str| quote(&s.replace(['\r', '\n'], ""));
    assert!(
        auth.contains(&format!("realm={}", shown(&ch.realm))),
        "{auth}"
    );
    assert!(
        auth.contains(&format!("nonce={}", shown(&ch.nonce))),
        "{auth}"
    );
    let hex = match ch.algorithm {
        Algorithm::Md5 | Algorithm::Md5Sess => 32,
        _ => 64,
    };
    let response = auth
        // After the fixed uri: a realm or nonce cannot hold this with its quotes unescaped.
        .split("uri=\"sip:example.com\", response=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a response parameter");
    assert_eq!(response.len(), hex, "{auth}");
    assert!(response.bytes().all(|b| b.is_ascii_hexdigit()), "{auth}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ch) = Challenge::parse(text) {
        check(&ch, text);
    }
    // Several header values, one per line.
    let values: Vec<&str> = text.lines().collect();
    if let Ok(best) = Challenge::pick_best(values.iter().copied()) {
        check(&best, text);
    }
});
