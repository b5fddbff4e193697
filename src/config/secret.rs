//! [`Secret`]: passwords and tokens of every section (`[[sip.trunk]].password`, `[http].token`,
//! `[twilio].auth_token`), kept out of logs.

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
}
