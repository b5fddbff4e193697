//! Writes RTP captures (libpcap format, Ethernet/IPv4/UDP) for SIPp's `play_pcap_audio`, so
//! tests know exactly which payload bytes a caller sent.

use std::io::Write;
use std::path::Path;

/// One RTP stream to write: 20 ms packets of `payloads`, starting at `seq`/`ts`.
pub struct RtpStream<'a> {
    pub payload_type: u8,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    /// Samples per packet (160 for 20 ms of G.711).
    pub samples_per_packet: u32,
    pub payloads: &'a [Vec<u8>],
}

/// Writes `stream` as a pcap file, one packet every 20 ms.
pub fn write_rtp_pcap(path: &Path, stream: &RtpStream) -> std::io::Result<()> {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, GMT offset, accuracy, snaplen, LINKTYPE_ETHERNET.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, payload) in stream.payloads.iter().enumerate() {
        let mut rtp = Vec::with_capacity(12 + payload.len());
        rtp.push(0x80);
        rtp.push(stream.payload_type | if i == 0 { 0x80 } else { 0 });
        rtp.extend_from_slice(&stream.seq.wrapping_add(i as u16).to_be_bytes());
        rtp.extend_from_slice(&stream.ts.wrapping_add(i as u32 * stream.samples_per_packet).to_be_bytes());
        rtp.extend_from_slice(&stream.ssrc.to_be_bytes());
        rtp.extend_from_slice(payload);
        let frame = ethernet_ipv4_udp(&rtp, 40000, 40000);
        let micros = i as u64 * 20_000;
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
