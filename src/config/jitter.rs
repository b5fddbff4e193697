//! `[jitter]`: the SIP calls' jitter buffer settings, checked into
//! [`JitterConfig`](crate::media::jitter::JitterConfig) (`earshot jitter-sim --config` replays
//! a trace with them).

use serde::Deserialize;

use super::Errors;
use crate::media::jitter::JitterConfig;

/// `[jitter]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawJitter {
    min_delay_ms: Option<u32>,
    max_delay_ms: Option<u32>,
    initial_delay_ms: Option<u32>,
    coverage_permille: Option<u16>,
}

pub(super) fn validate_jitter(e: &mut Errors, raw: RawJitter) -> JitterConfig {
    let d = JitterConfig::default();
    let max = e.ranged(
        "jitter.max_delay_ms",
        raw.max_delay_ms,
        d.max_delay_ms,
        40..=2000,
    );
    let within_max = |e: &mut Errors, path: &str, raw: Option<u32>, default: u32| {
        let range = 0..=1000;
        let value = e.ranged(path, raw, default, range.clone());
        if range.contains(&value) && value > max {
            e.push(
                path,
                format!("{value} is above jitter.max_delay_ms ({max})"),
            );
        }
        value
    };
    JitterConfig {
        min_delay_ms: within_max(e, "jitter.min_delay_ms", raw.min_delay_ms, d.min_delay_ms),
        initial_delay_ms: within_max(
            e,
            "jitter.initial_delay_ms",
            raw.initial_delay_ms,
            d.initial_delay_ms,
        ),
        max_delay_ms: max,
        coverage_permille: e.ranged(
            "jitter.coverage_permille",
            raw.coverage_permille,
            d.coverage_permille,
            500..=999,
        ),
        // Raised by the buffer to hold `max_delay_ms` (plus margin) whatever is set here.
        max_packets: d.max_packets,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn jitter_settings_are_bounded_and_kept_below_the_maximum_delay() {
        let config = Config::from_toml_str(
            "[jitter]\nmin_delay_ms = 40\nmax_delay_ms = 300\ninitial_delay_ms = 60\n\
             coverage_permille = 990\n",
        )
        .unwrap();
        assert_eq!(
            config.jitter,
            JitterConfig {
                min_delay_ms: 40,
                max_delay_ms: 300,
                initial_delay_ms: 60,
                coverage_permille: 990,
                ..JitterConfig::default()
            }
        );
        assert_eq!(
            Config::from_toml_str("").unwrap().jitter,
            JitterConfig::default()
        );
        let err = Config::from_toml_str(
            "[jitter]\nmin_delay_ms = 200\nmax_delay_ms = 100\ncoverage_permille = 1000\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("jitter.min_delay_ms: 200 is above jitter.max_delay_ms (100)"),
            "{text}"
        );
        assert!(
            text.contains("jitter.coverage_permille: 1000 is out of range (500..=999)"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
