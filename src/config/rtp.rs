//! `[rtp]`: the media port range and per-stream timers.

use std::str::FromStr;

use serde::Deserialize;

use super::Errors;
use super::net::PortRange;

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
        rtcp_interval_secs: e.ranged(
            "rtp.rtcp_interval_secs",
            raw.rtcp_interval_secs,
            d.rtcp_interval_secs,
            1..=60,
        ),
    }
}
