//! `X-Twilio-Signature`: proof that a webhook or stream upgrade comes from Twilio.
//!
//! Implements Twilio "Webhooks security — validating signatures", as the official SDK
//! validators do (twilio-python `RequestValidator`, twilio-csharp `RequestValidator`):
//! - form-encoded requests sign the full URL Twilio requested, followed by every POST
//!   parameter sorted by name (then value), each as `name` + `value`, with HMAC-SHA1 keyed by
//!   the account's auth token, base64-encoded;
//! - JSON requests carry `bodySHA256=<hex>` in the query and sign the URL alone;
//! - Twilio is inconsistent about default ports, so a signature is accepted for the URL with
//!   its port removed or with the scheme's default port added.
//!
//! The comparison runs in constant time (`hmac`'s `verify_slice`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

type HmacSha1 = Hmac<Sha1>;

/// Why a request was not taken as Twilio's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Twilio-Signature header")]
    Missing,
    #[error("X-Twilio-Signature does not match")]
    Mismatch,
    #[error("bodySHA256 is missing from the URL or does not match the body")]
    BodyHash,
}

/// The signature Twilio computes for a form-encoded request to exactly `url`.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: &[(K, V)],
) -> String {
    mac(auth_token, url, params)
        .map(|mac| BASE64.encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Checks the signature of a form-encoded request (or of a GET, such as the stream upgrade,
/// with no parameters). `url` is the public URL Twilio requested, query included.
pub fn check_form<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: &[(K, V)],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let given = decode(signature)?;
    let mut ok = false;
    for variant in port_variants(url) {
        // Both variants are always computed: the time taken does not depend on which matched.
        ok |= mac(auth_token, &variant, params).is_some_and(|m| m.verify_slice(&given).is_ok());
    }
    ok.then_some(()).ok_or(SignatureError::Mismatch)
}

/// Checks the signature of a JSON request: the URL carries `bodySHA256`, the hex SHA-256 of the
/// raw body, and the signature covers the URL only.
pub fn check_json(
    auth_token: &str,
    url: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let given = decode(signature)?;
    let hash = query_param(url, "bodySHA256").ok_or(SignatureError::BodyHash)?;
    let actual: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !hash.eq_ignore_ascii_case(&actual) {
        return Err(SignatureError::BodyHash);
    }
    let mut ok = false;
    for variant in port_variants(url) {
        ok |= mac::<&str, &str>(auth_token, &variant, &[])
            .is_some_and(|m| m.verify_slice(&given).is_ok());
    }
    ok.then_some(()).ok_or(SignatureError::Mismatch)
}

fn decode(signature: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    BASE64
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)
}

/// The MAC over `url` and the sorted parameters; `None` never happens (HMAC takes keys of any
/// length), but is a mismatch rather than a panic.
fn mac<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: &[(K, V)],
) -> Option<HmacSha1> {
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes()).ok()?;
    mac.update(url.as_bytes());
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    Some(mac)
}

/// The URL with its port removed and with the scheme's default port added; an explicit
/// non-default port stays in the second variant, as in the SDK validators.
fn port_variants(url: &str) -> [String; 2] {
    let Some(parts) = UrlParts::split(url) else {
        return [url.to_owned(), url.to_owned()];
    };
    let without = format!("{}{}{}", parts.prefix, parts.host, parts.rest);
    let with = match parts.port {
        Some(port) => format!("{}{}:{}{}", parts.prefix, parts.host, port, parts.rest),
        None => match default_port(parts.scheme) {
            Some(port) => format!("{}{}:{}{}", parts.prefix, parts.host, port, parts.rest),
            None => url.to_owned(),
        },
    };
    [without, with]
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => Some(443),
        "http" | "ws" => Some(80),
        _ => None,
    }
}

/// A URL cut around its port: `prefix` (scheme, `://`, user info), `host`, `port`, `rest`.
struct UrlParts<'a> {
    scheme: &'a str,
    prefix: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<Self> {
        let scheme_end = url.find("://")?;
        let scheme = url.get(..scheme_end)?;
        let after = scheme_end + 3;
        let tail = url.get(after..)?;
        let authority_len = tail.find(['/', '?', '#']).unwrap_or(tail.len());
        let authority = tail.get(..authority_len)?;
        let rest = tail.get(authority_len..)?;
        let host_start = authority.rfind('@').map_or(0, |at| at + 1);
        let prefix = url.get(..after + host_start)?;
        let host_port = authority.get(host_start..)?;
        let port_sep = if host_port.starts_with('[') {
            host_port.find("]:").map(|i| i + 1)
        } else {
            host_port.rfind(':')
        };
        let (host, port) = match port_sep {
            Some(i) => {
                let port = host_port.get(i + 1..)?;
                if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (host_port.get(..i)?, Some(port))
            }
            None => (host_port, None),
        };
        Some(Self {
            scheme,
            prefix,
            host,
            port,
            rest,
        })
    }
}

/// The raw value of the first `name=` parameter in the query of `url`.
fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The vectors file, copied from the shared test data; every signature below must appear
    /// in it, so the table cannot drift from the official values.
    const VECTORS: &str = include_str!("../../tests/data/twilio-signature-vectors.txt");
    const TOKEN: &str = "12345";
    const BODY: &str = r#"{"property": "value", "boolean": true}"#;
    const BODY_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

    fn params() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
    }

    fn url(base: &str) -> String {
        format!("{base}/myapp.php?foo=1&bar=2")
    }

    #[test]
    fn signs_the_documented_string() {
        assert_eq!(
            sign(TOKEN, &url("https://mycompany.com"), &params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn all_twenty_official_vectors() {
        let form = |n: u32, base: &str, sig: &str, expect: bool| {
            assert!(
                VECTORS.contains(sig),
                "vector {n}: {sig} is not in the vectors file"
            );
            let got = check_form(TOKEN, &url(base), &params(), Some(sig));
            assert_eq!(got.is_ok(), expect, "vector {n}: {base} {sig} -> {got:?}");
        };
        form(
            1,
            "https://mycompany.com",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        );
        form(
            2,
            "https://mycompany.com:1234",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        );
        form(
            3,
            "https://mycompany.com",
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
            true,
        );
        form(
            4,
            "http://mycompany.com",
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            true,
        );
        form(
            5,
            "http://mycompany.com:1234",
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            true,
        );
        form(
            6,
            "https://mycompany.com:1234",
            "CYn1h0gLBdNxDGkKJg6hYohgeD8=",
            true,
        );
        let duplicates = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ];
        let sig7 = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
        assert!(VECTORS.contains(sig7));
        assert_eq!(
            check_form(
                TOKEN,
                &url("https://mycompany.com"),
                &duplicates,
                Some(sig7)
            ),
            Ok(()),
            "vector 7"
        );
        form(
            8,
            "https://MyCompany.com",
            "g9IN/x4Cft2g517EjYvEvM/W7LU=",
            true,
        );
        form(
            9,
            "https://MyCompany.com:1234",
            "PCqOZm8cnu/L6+u5i5fuEd+Iac4=",
            true,
        );
        form(
            10,
            "http://MyCompany.com",
            "XY7AlKOKL6im4yWyX84gldUrtis=",
            true,
        );
        form(
            11,
            "http://username:password@MyCompany.com",
            "PJ08CxXr7KLPjEQCTc8LkUSMwSM=",
            true,
        );
        form(
            12,
            "HTTP://username:password@MyCompany.com",
            "hy/l8pca+LFms4cvRdv8uiP6NGc=",
            true,
        );
        form(
            13,
            "http://Username:Password@MyCompany.com",
            "SkTSKyDJH9kUlhItI0slbgZ1UsI=",
            true,
        );
        for (n, url, sig) in [
            (
                14,
                format!("https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={BODY_HASH}"),
                "a9nBmqA0ju/hNViExpshrM61xv4=",
            ),
            (
                15,
                format!("https://mycompany.com/myapp.php?bodySHA256={BODY_HASH}"),
                "y77kIzt2vzLz71DgmJGsen2scGs=",
            ),
        ] {
            assert!(VECTORS.contains(sig) && VECTORS.contains(BODY_HASH));
            assert_eq!(
                check_json(TOKEN, &url, BODY.as_bytes(), Some(sig)),
                Ok(()),
                "vector {n}"
            );
        }
        form(
            16,
            "https://MyCompany.com",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            false,
        );
        form(
            17,
            "https://MyCompany.com:1234",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            false,
        );
        form(
            18,
            "http://MyCompany.com",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            false,
        );
        form(
            19,
            "https://mycompany.com",
            "NOTRSOYDt4T1cUTdK1PDd93/VVr8B8=",
            false,
        );
        assert_eq!(
            check_json(
                TOKEN,
                &url("https://mycompany.com"),
                BODY.as_bytes(),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            ),
            Err(SignatureError::BodyHash),
            "vector 20"
        );
        // The extra vector computed beside the official ones.
        form(
            21,
            "http://MyCompany.com",
            "kwoQzXtJWD1pkO5cgHeuD6cfBOk=",
            true,
        );
    }

    #[test]
    fn missing_signature_and_tampered_parameters_are_refused() {
        let u = url("https://mycompany.com");
        assert_eq!(
            check_form(TOKEN, &u, &params(), None),
            Err(SignatureError::Missing)
        );
        let mut p = params();
        p[2].1 = "9999";
        assert_eq!(
            check_form(TOKEN, &u, &p, Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check_form("54321", &u, &params(), Some("RSOYDt4T1cUTdK1PDd93/VVr8B8=")),
            Err(SignatureError::Mismatch)
        );
        let body_url = format!("https://mycompany.com/myapp.php?bodySHA256={BODY_HASH}");
        assert_eq!(
            check_json(
                TOKEN,
                &body_url,
                b"{}",
                Some("y77kIzt2vzLz71DgmJGsen2scGs=")
            ),
            Err(SignatureError::BodyHash)
        );
    }

    #[test]
    fn websocket_urls_get_the_wss_default_port_and_ipv6_hosts_keep_their_brackets() {
        let [a, b] = port_variants("wss://box.example.com/twilio/stream");
        assert_eq!(
            (a.as_str(), b.as_str()),
            (
                "wss://box.example.com/twilio/stream",
                "wss://box.example.com:443/twilio/stream"
            )
        );
        let [a, b] = port_variants("https://[2001:db8::1]:8443/x?y=1");
        assert_eq!(
            (a.as_str(), b.as_str()),
            (
                "https://[2001:db8::1]/x?y=1",
                "https://[2001:db8::1]:8443/x?y=1"
            )
        );
        let sig = sign::<&str, &str>("tok", "wss://box.example.com:443/twilio/stream", &[]);
        assert_eq!(
            check_form::<&str, &str>(
                "tok",
                "wss://box.example.com/twilio/stream",
                &[],
                Some(&sig)
            ),
            Ok(())
        );
        // Not a URL at all: compared as is.
        assert_eq!(port_variants("nonsense")[0], "nonsense");
    }
}
