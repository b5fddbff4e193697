//! `[log]`: log filtering and output format.

use serde::Deserialize;

use super::Errors;

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` `EnvFilter` directive (`info`, `earshot::sip=debug,info`); `RUST_LOG`
    /// overrides it.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text; colour and timestamps only on a terminal, plain under journald.
    Auto,
    /// Plain text always.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    level: Option<String>,
    format: Option<String>,
}

pub(super) fn validate_log(e: &mut Errors, raw: RawLog) -> LogConfig {
    let d = LogConfig::default();
    LogConfig {
        level: e.parse("log.level", raw.level, d.level, |s| {
            if s.trim().is_empty() {
                return Err("must not be empty (e.g. \"info\")".to_owned());
            }
            tracing_subscriber::EnvFilter::try_new(s)
                .map(|_| s.to_owned())
                .map_err(|err| format!("{s:?} is not a log filter ({err})"))
        }),
        format: e.parse("log.format", raw.format, d.format, |s| match s {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{s:?} is not a log format (expected \"auto\", \"text\" or \"json\")"
            )),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

    #[test]
    fn level_is_a_tracing_filter_and_format_is_auto_text_or_json() {
        let config = Config::from_toml_str(
            "[log]\nlevel = \"earshot::sip=debug,info\"\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(config.log.level, "earshot::sip=debug,info");
        assert_eq!(config.log.format, LogFormat::Json);
        let errors = invalid("[log]\nlevel = \"=[\"\nformat = \"xml\"\n");
        assert_eq!(paths(&errors), ["log.level", "log.format"]);
    }
}
