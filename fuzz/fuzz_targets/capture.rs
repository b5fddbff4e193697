//! Fuzz target: the capture reader behind `earshot jitter-sim --pcap` (`earshot::media::capture`):
//! pcap and pcapng framing, link layers, IPv4/IPv6/UDP and RTP headers.
//!
//! Whatever the file holds, reading it must not panic; a trace it returns must be in arrival
//! order from 0 µs and replay through the jitter buffer.

#![no_main]

use earshot::media::capture::read_capture;
use earshot::media::jitter::JitterConfig;
use earshot::media::jitter_sim::simulate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ports = 10000..=20000;
    if let Ok(trace) = read_capture(data, None, ports) {
        assert_eq!(trace.packets.first().map(|p| p.arrival_us), Some(0));
        assert!(trace.packets.windows(2).all(|w| w[0].arrival_us <= w[1].arrival_us));
        assert_eq!(trace.stream.packets, trace.packets.len());
        // Bound the replay: a fuzzed capture can span years.
        if trace.packets.last().is_some_and(|p| p.arrival_us < 60_000_000) {
            let _ = simulate(&trace.packets, JitterConfig::default());
        }
    }
});
