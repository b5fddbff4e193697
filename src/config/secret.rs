//! [`Secret`]: passwords and tokens of every section (`[[sip.trunk]].password`, `[http].token`,
//! `[twilio].auth_token`, `[agent].api_key`), kept out of logs. (`[[webhook]].secret` is a
//! `WebhookSecret`, redacted the same way.)

use std::fmt;

/// A password or token. `Debug` prints `<redacted>` so secrets never reach a log by accident;
/// read the value with [`Secret::expose`] exactly where it is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A bearer token or auth token: non-empty, no whitespace (it travels in headers).
pub(super) fn token(s: &str, min_len: usize) -> Result<Secret, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain whitespace".to_owned())
    } else if s.chars().count() < min_len {
        Err(format!("must be at least {min_len} characters"))
    } else {
        Ok(Secret::new(s))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::Config;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config::from_toml_str(
            r#"
            [[sip.trunk]]
            name = "main"
            registrar = "sip:pbx.example.com:5080"
            username = "alice"
            password = "hunter2-trunk"
            [http]
            listen = "0.0.0.0:8080"
            token = "hunter2-http-token-0123"
            [twilio]
            enabled = true
            auth_token = "hunter2-twilio"
            public_url = "https://calls.example.com/"
            "#,
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(config.sip.trunks[0].password.expose(), "hunter2-trunk");
        assert!(!format!("{:?}", config.sip.trunks[0]).contains("hunter2"));
        assert_eq!(
            config.twilio.public_url.as_deref(),
            Some("https://calls.example.com")
        );
    }

    /// Every secret key of every section at once: `{:?}` of the whole configuration shows none
    /// of them (nor their bytes), and each is redacted.
    #[test]
    fn no_secret_of_any_section_reaches_debug() {
        let secrets = [
            "trunk-pass-Zq8",
            "http-token-Zq8-0123456789",
            "twilio-auth-Zq8",
            "sk-openai-Zq8-0123456789",
            // whsec_ + base64 of 32 bytes "webhook-secret-Zq8-padded-to-32b"
            "whsec_d2ViaG9vay1zZWNyZXQtWnE4LXBhZGRlZC10by0zMmI=",
        ];
        let config = Config::from_toml_str(&format!(
            r#"
            [[sip.trunk]]
            name = "main"
            registrar = "sip:pbx.example.com:5080"
            username = "alice"
            password = "{}"
            [http]
            token = "{}"
            [twilio]
            enabled = true
            auth_token = "{}"
            public_url = "https://calls.example.com"
            [agent]
            protocol = "openai-realtime"
            url = "wss://api.openai.com/v1/realtime"
            api_key = "{}"
            [[webhook]]
            url = "https://hooks.example.com/earshot"
            secret = "{}"
            "#,
            secrets[0], secrets[1], secrets[2], secrets[3], secrets[4]
        ))
        .unwrap();
        let debug = format!("{config:?}");
        let pretty = format!("{config:#?}");
        for secret in secrets {
            assert!(!debug.contains(secret), "{secret} in {debug}");
            assert!(!pretty.contains(secret), "{secret} in {pretty}");
        }
        assert!(!debug.contains("Zq8"), "{debug}");
        // The webhook key's bytes, as a byte array would print them.
        assert!(!debug.contains("119, 101, 98, 104"), "{debug}");
        assert_eq!(debug.matches("<redacted>").count(), 5, "{debug}");
        assert_eq!(
            config.webhooks[0].secret.expose(),
            b"webhook-secret-Zq8-padded-to-32b"
        );
    }
}
