//! `[rtp]`: the media port range, per-stream timers, source learning and the networks media
//! may be sent to.

use std::str::FromStr;

use serde::Deserialize;

use super::Errors;
use super::net::{Cidr, PortRange};
use super::sip::cidr_list;

/// `[rtp]`: media streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpConfig {
    /// UDP ports for RTP (even) and RTCP (odd); the firewall must let these through.
    pub ports: PortRange,
    /// Hang up after this many seconds without media, so dead calls do not hold a slot;
    /// 0 disables the check.
    pub silence_timeout_secs: u64,
    /// Consecutive packets from one new source before symmetric RTP switches to it; resists
    /// hijacking by a stray packet while still following NAT rebinding.
    pub learn_packets: u16,
    /// How long after the call is confirmed (ACK) or its SDP address changes a new RTP/RTCP
    /// source may be learned; afterwards packets from anyone else are dropped.
    pub learn_window_ms: u64,
    /// Networks an SDP `c=` (and `a=rtcp`) address must fall in; an offer naming another is
    /// refused with 488. `None` allows every address.
    pub allow_media: Option<Vec<Cidr>>,
    /// Seconds between RTCP reports we send.
    pub rtcp_interval_secs: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            ports: PortRange {
                start: 10000,
                end: 20000,
            },
            silence_timeout_secs: 30,
            learn_packets: 4,
            learn_window_ms: 2000,
            allow_media: None,
            rtcp_interval_secs: 5,
        }
    }
}

/// `[rtp]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRtp {
    ports: Option<String>,
    silence_timeout_secs: Option<u64>,
    learn_packets: Option<u16>,
    learn_window_ms: Option<u64>,
    allow_media: Option<Vec<String>>,
    rtcp_interval_secs: Option<u64>,
}

pub(super) fn validate_rtp(e: &mut Errors, raw: RawRtp) -> RtpConfig {
    let d = RtpConfig::default();
    RtpConfig {
        ports: e.parse("rtp.ports", raw.ports, d.ports, PortRange::from_str),
        silence_timeout_secs: raw.silence_timeout_secs.unwrap_or(d.silence_timeout_secs),
        learn_packets: e.ranged(
            "rtp.learn_packets",
            raw.learn_packets,
            d.learn_packets,
            1..=100,
        ),
        learn_window_ms: e.ranged(
            "rtp.learn_window_ms",
            raw.learn_window_ms,
            d.learn_window_ms,
            100..=60_000,
        ),
        allow_media: raw.allow_media.map(|list| allow_media(e, &list)),
        rtcp_interval_secs: e.ranged(
            "rtp.rtcp_interval_secs",
            raw.rtcp_interval_secs,
            d.rtcp_interval_secs,
            1..=60,
        ),
    }
}

/// `[rtp].allow_media`: every entry a CIDR, and at least one (an empty list would refuse
/// every call; leave the key out to allow all addresses).
fn allow_media(e: &mut Errors, list: &[String]) -> Vec<Cidr> {
    if list.is_empty() {
        e.push(
            "rtp.allow_media",
            "an empty list refuses every call; leave the key out to allow every address",
        );
    }
    cidr_list(e, "rtp.allow_media", list)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

    #[test]
    fn learning_window_and_media_networks_are_read_and_checked() {
        let config = Config::from_toml_str(
            "[rtp]\nlearn_window_ms = 500\nallow_media = [\"10.0.0.0/8\", \"::1/128\"]\n",
        )
        .unwrap();
        assert_eq!(config.rtp.learn_window_ms, 500);
        let media = config.rtp.allow_media.unwrap();
        assert!(media[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!media[0].contains("192.0.2.1".parse().unwrap()));
        assert_eq!(Config::default().rtp.allow_media, None);

        let errors = invalid("[rtp]\nlearn_window_ms = 50\nallow_media = [\"10.0.0.1/8\"]\n");
        assert_eq!(
            paths(&errors),
            ["rtp.learn_window_ms", "rtp.allow_media[0]"]
        );
        assert!(errors[1].reason.contains("10.0.0.0/8"), "{}", errors[1]);
        let errors = invalid("[rtp]\nallow_media = []\n");
        assert_eq!(paths(&errors), ["rtp.allow_media"]);
    }
}
