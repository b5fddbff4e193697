//! Writes RTP captures (libpcap format, Ethernet/IPv4/UDP) for SIPp's `play_pcap_audio`, so
//! tests know exactly which payload bytes a caller sent.

use std::io::Write;
use std::path::Path;

/// One RTP packet of a capture; packets go out 20 ms apart, numbered from the stream's `seq`.
pub struct RtpPacket {
    pub payload_type: u8,
    pub marker: bool,
    pub ts: u32,
    pub payload: Vec<u8>,
}

/// 20 ms G.711 packets carrying `codes`, from timestamp `ts`, the first with the marker bit.
pub fn g711_packets(payload_type: u8, ts: u32, codes: &[u8]) -> Vec<RtpPacket> {
    codes
        .chunks(160)
        .enumerate()
        .map(|(i, chunk)| RtpPacket {
            payload_type,
            marker: i == 0,
            ts: ts.wrapping_add(i as u32 * 160),
            payload: chunk.to_vec(),
        })
        .collect()
}

/// RFC 4733 packets for one key press of `event` at timestamp `ts`: a marked start, updates
/// every 20 ms, and the end packet sent three times (§2.5.1.4).
pub fn dtmf_packets(payload_type: u8, ts: u32, event: u8, duration_samples: u16) -> Vec<RtpPacket> {
    let body = |end: bool, duration: u16| {
        let mut p = vec![event, if end { 0x80 | 10 } else { 10 }];
        p.extend_from_slice(&duration.to_be_bytes());
        p
    };
    let mut packets = Vec::new();
    let mut duration = 160u16;
    while duration < duration_samples {
        packets.push(RtpPacket {
            payload_type,
            marker: packets.is_empty(),
            ts,
            payload: body(false, duration),
        });
        duration += 160;
    }
    for _ in 0..3 {
        packets.push(RtpPacket {
            payload_type,
            marker: false,
            ts,
            payload: body(true, duration_samples),
        });
    }
    packets
}

/// Writes `packets` as one RTP stream (SSRC `ssrc`, sequence from `seq`) in a pcap file, one
/// packet every 20 ms.
pub fn write_rtp_pcap(
    path: &Path,
    ssrc: u32,
    seq: u16,
    packets: &[RtpPacket],
) -> std::io::Result<()> {
    let send_us: Vec<u64> = (0..packets.len() as u64).map(|i| i * 20_000).collect();
    write_rtp_pcap_at(path, ssrc, seq, packets, &send_us)
}

/// Send times (µs) of `n` packets due every 20 ms through a network like `tc qdisc netem delay
/// 20ms 10ms reorder 10%`: 10 % go at once, the rest 20 ms ± 10 ms (uniform) later — so some
/// overtake others. Deterministic for a `seed`.
pub fn netem_send_times(n: usize, seed: u64) -> Vec<u64> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..n as u64)
        .map(|i| {
            let due = i * 20_000;
            if next() % 10 == 0 {
                due
            } else {
                due + 10_000 + next() % 20_000
            }
        })
        .collect()
}

/// [`write_rtp_pcap`] with each packet's send time (µs from the first); the capture lists
/// them in the order they go out, which SIPp replays.
pub fn write_rtp_pcap_at(
    path: &Path,
    ssrc: u32,
    seq: u16,
    packets: &[RtpPacket],
    send_us: &[u64],
) -> std::io::Result<()> {
    let mut order: Vec<usize> = (0..packets.len()).collect();
    order.sort_by_key(|&i| send_us.get(i).copied().unwrap_or(0));
    let mut out = Vec::new();
    // Global header: magic, version 2.4, GMT offset, accuracy, snaplen, LINKTYPE_ETHERNET.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for i in order {
        let packet = &packets[i];
        let mut rtp = Vec::with_capacity(12 + packet.payload.len());
        rtp.push(0x80);
        rtp.push(packet.payload_type | if packet.marker { 0x80 } else { 0 });
        rtp.extend_from_slice(&seq.wrapping_add(i as u16).to_be_bytes());
        rtp.extend_from_slice(&packet.ts.to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        rtp.extend_from_slice(&packet.payload);
        let frame = ethernet_ipv4_udp(&rtp, 40000, 40000);
        let micros = send_us.get(i).copied().unwrap_or(0);
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::File::create(path)?.write_all(&out)
}

fn ethernet_ipv4_udp(payload: &[u8], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[127, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[127, 0, 0, 1]);
    let mut sum = 0u32;
    for pair in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&0u16.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// [`test_signal`] of `ms`, G.711-encoded in `law`: what a test caller's capture carries.
pub fn coded_test_signal(law: earshot::media::g711::Law, ms: u32) -> Vec<u8> {
    let pcm = test_signal(ms);
    let mut codes = vec![0u8; pcm.len()];
    law.encode(&pcm, &mut codes);
    codes
}

/// A test signal that is easy to recognise and not periodic over short spans: two tones and a
/// slow sweep, 8 kHz, `ms` long.
pub fn test_signal(ms: u32) -> Vec<i16> {
    let n = (ms * 8) as usize;
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let sweep = (2.0 * std::f64::consts::PI * (300.0 + 200.0 * t) * t).sin();
            let v = 0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 0.2 * (2.0 * std::f64::consts::PI * 1250.0 * t).sin()
                + 0.2 * sweep;
            (v * 20000.0) as i16
        })
        .collect()
}
