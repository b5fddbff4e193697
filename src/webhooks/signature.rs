//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, "Signature scheme"):
//! `webhook-signature: v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")),
//! the key being the bytes of the `whsec_` secret. Sans-IO: the timestamp is an argument.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `webhook-signature` header value for one attempt.
pub fn sign(key: &[u8], msg_id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::WebhookSecret;

    /// The specification's example, shared by its reference libraries' tests.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specification_test_vector() {
        let key = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(
            sign(key.expose(), MSG_ID, TIMESTAMP, BODY.as_bytes()),
            EXPECTED
        );
    }

    #[test]
    fn any_change_to_id_timestamp_or_body_changes_the_signature() {
        let key = WebhookSecret::parse(SECRET).unwrap();
        let key = key.expose();
        assert_ne!(sign(key, "msg_other", TIMESTAMP, BODY.as_bytes()), EXPECTED);
        assert_ne!(sign(key, MSG_ID, TIMESTAMP + 1, BODY.as_bytes()), EXPECTED);
        assert_ne!(
            sign(key, MSG_ID, TIMESTAMP, b"{\"test\": 2432232315}"),
            EXPECTED
        );
    }
}
