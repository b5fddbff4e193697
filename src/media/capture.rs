//! Packet captures as jitter-sim traces: `earshot jitter-sim --pcap FILE` reads a pcap or pcapng
//! file (tcpdump, Wireshark) and replays one RTP audio stream in it through the jitter buffer.
//!
//! Records are framed with `pcap-file`, read raw so that headers-only captures (`tcpdump -s 96`)
//! and pcapng's `if_tsresol` (the crate hands a pcapng timestamp over as nanoseconds whatever its
//! unit) are handled here. Link layers (Ethernet, Linux cooked v1 and v2, BSD loopback, raw IP),
//! IPv4/IPv6 and UDP are sliced by `etherparse` leniently, since the trace needs only the RTP
//! fixed header (RFC 3550 §5.1), checked by earshot's RTP parser. Payload types 64–95 are RTCP
//! sharing the port (RFC 5761 §4) and skipped.
//!
//! Packets are grouped into streams by SSRC, source and destination; a stream's payload type is
//! the one most of its packets carry, so RFC 4733 events on the same SSRC are left out. The
//! trace is the stream `--ssrc` names or else the likeliest call leg into the box: a stream sent
//! to a port in `[rtp].ports` before one sent from it (a capture of a call holds both
//! directions, and the one earshot sent has perfect timing), then the one with most packets.
//! Arrival times count from its first packet.
//!
//! Anything that is not a UDP datagram holding an RTP header is skipped and counted, never an
//! error: a capture of a bad call is full of such things. A capture cut off mid-record (copied
//! while tcpdump was writing) ends there. Only a file that is not a capture at all is refused.
//! (A stream spanning more than a day, from a clock set during the capture, is refused by the
//! replay, [`crate::media::jitter_sim::write_playout`], as any such trace is.)

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{
    Block, PcapNgReader, blocks::interface_description::InterfaceDescriptionOption,
};
use pcap_file::{DataLink, PcapError, TsResolution};

use crate::media::jitter_sim::TracePacket;
use crate::rtp::RtpPacket;
use std::ops::RangeInclusive;

/// pcapng files start with the Section Header Block's type.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// RFC 5761 §4: payload types that would clash with RTCP packet types on a shared port.
const RTCP_TYPES: std::ops::RangeInclusive<u8> = 64..=95;
/// `LINKTYPE_LINUX_SLL`'s header length; its protocol type is the last two bytes.
const SLL_HEADER: usize = 16;
/// `LINKTYPE_LINUX_SLL2`'s header length (`tcpdump -i any` since 4.99); protocol type first.
const SLL2_HEADER: usize = 20;

/// `LINKTYPE_NULL`/`LINKTYPE_LOOP`'s 4-byte address family header.
const LOOPBACK_HEADER: usize = 4;

/// One RTP stream seen in a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureStream {
    /// The stream's SSRC.
    pub ssrc: u32,
    /// The payload type most of its packets carry.
    pub payload_type: u8,
    /// Where its packets came from.
    pub src: SocketAddr,
    /// Where they went.
    pub dst: SocketAddr,
    /// Its packets of that payload type.
    pub packets: usize,
}

/// What a capture held: its RTP streams (likeliest first), the trace of the one chosen, and
/// how many records were skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureTrace {
    /// The stream the trace is of.
    pub stream: CaptureStream,
    /// Every RTP stream found, the chosen one included: those sent into the media ports first,
    /// then by packets.
    pub streams: Vec<CaptureStream>,
    /// The chosen stream's packets, in arrival order, from 0 µs.
    pub packets: Vec<TracePacket>,
    /// Records that were not UDP datagrams holding valid RTP (SIP, RTCP, fragments, other
    /// protocols, truncated frames).
    pub skipped: usize,
    /// Whether the file broke off mid-record (what came before it is used).
    pub truncated: bool,
}

/// Why a capture gave no trace.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file is not a pcap or pcapng capture.
    #[error("not a readable pcap or pcapng capture: {0}")]
    Format(#[from] PcapError),
    /// No packet in the capture is RTP.
    #[error("no RTP stream in the capture ({skipped} packets, none RTP)")]
    NoRtp {
        /// Records read.
        skipped: usize,
    },
    /// The SSRC asked for is not in the capture.
    #[error("no RTP stream with SSRC {ssrc:#010x} in the capture")]
    NoSuchSsrc {
        /// The SSRC asked for.
        ssrc: u32,
    },
}

/// A stream's identity while the capture is read.
type StreamKey = (u32, SocketAddr, SocketAddr);

#[derive(Default)]
struct Collector {
    /// Per stream: its packets with their payload types.
    streams: HashMap<StreamKey, Vec<(u8, TracePacket)>>,
    skipped: usize,
    /// Records framed so far.
    records: usize,
    truncated: bool,
}

impl Collector {
    /// Files one link-layer frame captured at `at`.
    fn frame(&mut self, link: DataLink, at: Duration, data: &[u8]) {
        let Some((src, dst, rtp)) = udp_payload(link, data).and_then(|(src, dst, payload)| {
            let rtp = RtpPacket::parse(payload).ok()?;
            (!RTCP_TYPES.contains(&rtp.payload_type)).then_some((src, dst, rtp))
        }) else {
            return self.skip();
        };
        self.records += 1;
        let packet = TracePacket {
            arrival_us: i64::try_from(at.as_micros()).unwrap_or(i64::MAX),
            seq: rtp.seq,
            rtp_ts: rtp.timestamp,
        };
        self.streams
            .entry((rtp.ssrc.0, src, dst))
            .or_default()
            .push((rtp.payload_type, packet));
    }

    /// Counts a record that holds no RTP packet for the trace.
    fn skip(&mut self) {
        self.records += 1;
        self.skipped += 1;
    }

    /// Ends reading at a framing error: past the first record it is a file cut off mid-record,
    /// before it a file that is not a capture.
    fn broke_off(&mut self, err: PcapError) -> Result<(), CaptureError> {
        let cut = matches!(&err, PcapError::IncompleteBuffer)
            || matches!(&err, PcapError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof);
        if cut && self.records > 0 {
            self.truncated = true;
            Ok(())
        } else {
            Err(err.into())
        }
    }

    fn finish(
        self,
        ssrc: Option<u32>,
        ports: RangeInclusive<u16>,
    ) -> Result<CaptureTrace, CaptureError> {
        let (skipped, truncated) = (self.skipped, self.truncated);
        let mut found: Vec<(CaptureStream, Vec<TracePacket>)> = self
            .streams
            .into_iter()
            .map(|((ssrc, src, dst), packets)| {
                let payload_type = dominant_type(&packets);
                let mut trace: Vec<TracePacket> = packets
                    .into_iter()
                    .filter(|(pt, _)| *pt == payload_type)
                    .map(|(_, p)| p)
                    .collect();
                // Merged interfaces can interleave; the trace must be in arrival order.
                trace.sort_by_key(|p| p.arrival_us);
                let stream = CaptureStream {
                    ssrc,
                    payload_type,
                    src,
                    dst,
                    packets: trace.len(),
                };
                (stream, trace)
            })
            .collect();
        // Into the box first, then by packets; the rest only makes the order stable.
        let inbound = |s: &CaptureStream| ports.contains(&s.dst.port());
        found.sort_by(|(a, _), (b, _)| {
            inbound(b)
                .cmp(&inbound(a))
                .then(b.packets.cmp(&a.packets))
                .then(a.ssrc.cmp(&b.ssrc))
                .then(a.src.cmp(&b.src))
                .then(a.dst.cmp(&b.dst))
        });
        let streams: Vec<CaptureStream> = found.iter().map(|(s, _)| *s).collect();
        let chosen = match ssrc {
            Some(ssrc) => found
                .into_iter()
                .find(|(s, _)| s.ssrc == ssrc)
                .ok_or(CaptureError::NoSuchSsrc { ssrc })?,
            None => found
                .into_iter()
                .next()
                .ok_or(CaptureError::NoRtp { skipped })?,
        };
        let (stream, mut packets) = chosen;
        let start = packets.first().map_or(0, |p| p.arrival_us);
        for p in &mut packets {
            p.arrival_us -= start;
        }
        Ok(CaptureTrace {
            stream,
            streams,
            packets,
            skipped,
            truncated,
        })
    }
}

/// Reads a pcap or pcapng capture and makes a trace of the RTP stream with `ssrc`, or of the
/// likeliest call leg into a box whose media ports are `ports` (see the module docs).
pub fn read_capture(
    mut input: impl Read,
    ssrc: Option<u32>,
    ports: RangeInclusive<u16>,
) -> Result<CaptureTrace, CaptureError> {
    let mut magic = [0u8; 4];
    input.read_exact(&mut magic).map_err(PcapError::IoError)?;
    let input = magic.as_slice().chain(input);
    let mut collector = Collector::default();
    if magic == PCAPNG_MAGIC {
        read_pcapng(input, &mut collector)?;
    } else {
        read_pcap(input, &mut collector)?;
    }
    collector.finish(ssrc, ports)
}

fn read_pcap(input: impl Read, collector: &mut Collector) -> Result<(), CaptureError> {
    let mut reader = PcapReader::new(input)?;
    let header = reader.header();
    // Raw records: the crate's checked ones refuse any record cut to the snapshot length.
    while let Some(packet) = reader.next_raw_packet() {
        let packet = match packet {
            Ok(packet) => packet,
            Err(err) => return collector.broke_off(err),
        };
        let frac = match header.ts_resolution {
            TsResolution::MicroSecond => Duration::from_micros(u64::from(packet.ts_frac)),
            TsResolution::NanoSecond => Duration::from_nanos(u64::from(packet.ts_frac)),
        };
        let at = Duration::from_secs(u64::from(packet.ts_sec)) + frac;
        collector.frame(header.datalink, at, &packet.data);
    }
    Ok(())
}

fn read_pcapng(input: impl Read, collector: &mut Collector) -> Result<(), CaptureError> {
    let mut reader = PcapNgReader::new(input)?;
    // Per interface of the current section: link type and seconds per timestamp unit.
    let mut interfaces: Vec<(DataLink, TsUnit)> = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = match block {
            Ok(block) => block,
            Err(err) => return collector.broke_off(err),
        };
        match block {
            Block::SectionHeader(_) => interfaces.clear(),
            Block::InterfaceDescription(idb) => {
                let unit = idb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        InterfaceDescriptionOption::IfTsResol(r) => Some(TsUnit(*r)),
                        _ => None,
                    })
                    .unwrap_or(TsUnit::MICROS);
                interfaces.push((idb.linktype, unit));
            }
            Block::EnhancedPacket(epb) => {
                let Some(&(link, unit)) = usize::try_from(epb.interface_id)
                    .ok()
                    .and_then(|i| interfaces.get(i))
                else {
                    collector.skip();
                    continue;
                };
                // The crate reads the 64-bit count as nanoseconds; it is in `unit`s.
                let raw = epb.timestamp.as_nanos();
                collector.frame(link, unit.duration(raw), &epb.data);
            }
            Block::Packet(_) | Block::SimplePacket(_) => collector.skip(),
            _ => {}
        }
    }
    Ok(())
}

/// pcapng `if_tsresol`: the top bit picks base 2 or 10, the rest is the negative exponent.
#[derive(Clone, Copy, Debug)]
struct TsUnit(u8);

impl TsUnit {
    /// The default when the option is absent: microseconds.
    const MICROS: TsUnit = TsUnit(6);

    fn duration(self, count: u128) -> Duration {
        let exp = u32::from(self.0 & 0x7f);
        if self.0 & 0x80 != 0 {
            // 2^-exp seconds per unit; float casts saturate, and µs is all a trace keeps.
            let exp = i32::try_from(exp).unwrap_or(i32::MAX);
            return Duration::try_from_secs_f64(count as f64 / 2f64.powi(exp))
                .unwrap_or(Duration::MAX);
        }
        let nanos = if exp <= 9 {
            count.saturating_mul(10u128.pow(9 - exp))
        } else {
            10u128
                .checked_pow(exp - 9)
                .map_or(0, |per_nano| count / per_nano)
        };
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The UDP datagram in one link-layer frame: source, destination and payload (as much of it as
/// was captured).
fn udp_payload(link: DataLink, data: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let after = |header: usize| data.get(header..);
    let ether_type = |at: usize| {
        let bytes = data.get(at..at + 2)?;
        Some(EtherType(u16::from_be_bytes([bytes[0], bytes[1]])))
    };
    let sliced = match link {
        DataLink::ETHERNET => LaxSlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => {
            LaxSlicedPacket::from_ether_type(ether_type(SLL_HEADER - 2)?, after(SLL_HEADER)?)
        }
        DataLink::LINUX_SLL2 => {
            LaxSlicedPacket::from_ether_type(ether_type(0)?, after(SLL2_HEADER)?)
        }
        DataLink::NULL | DataLink::LOOP => {
            LaxSlicedPacket::from_ip(after(LOOPBACK_HEADER)?).ok()?
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => LaxSlicedPacket::from_ip(data).ok()?,
        _ => return None,
    };
    let (src, dst): (IpAddr, IpAddr) = match sliced.net.as_ref()? {
        LaxNetSlice::Ipv4(ip) if !ip.is_payload_fragmented() => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        LaxNetSlice::Ipv6(ip) if !ip.is_payload_fragmented() => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let Some(TransportSlice::Udp(udp)) = sliced.transport.as_ref() else {
        return None;
    };
    Some((
        SocketAddr::new(src, udp.source_port()),
        SocketAddr::new(dst, udp.destination_port()),
        udp.payload(),
    ))
}

/// The payload type most of a stream's packets carry (the lowest on a tie).
fn dominant_type(packets: &[(u8, TracePacket)]) -> u8 {
    let mut counts = [0usize; 128];
    for (pt, _) in packets {
        if let Some(c) = counts.get_mut(usize::from(*pt)) {
            *c += 1;
        }
    }
    let (mut best, mut most) = (0u8, 0usize);
    for (pt, &n) in (0u8..).zip(counts.iter()) {
        if n > most {
            (best, most) = (pt, n);
        }
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::media::jitter::JitterConfig;
    use crate::media::jitter_sim::{TraceError, write_playout};
    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use std::borrow::Cow;

    const CALLER: ([u8; 4], u16) = ([192, 0, 2, 10], 40000);
    const EARSHOT: ([u8; 4], u16) = ([192, 0, 2, 1], 10000);
    const PORTS: RangeInclusive<u16> = 10000..=20000;

    fn read(bytes: &[u8], ssrc: Option<u32>) -> Result<CaptureTrace, CaptureError> {
        read_capture(bytes, ssrc, PORTS.clone())
    }

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    fn ethernet(from: ([u8; 4], u16), to: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(from.0, to.0, 64)
            .udp(from.1, to.1)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    fn raw_ipv6(payload: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        let (a, b) = ([0x20, 0x01, 0x0d, 0xb8], [0u8; 12]);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&a);
        src[15] = 1;
        let mut dst = src;
        dst[4..].copy_from_slice(&b);
        dst[15] = 2;
        PacketBuilder::ipv6(src, dst, 64)
            .udp(5004, 6000)
            .write(&mut frame, payload)
            .unwrap();
        frame
    }

    /// A classic pcap holding `frames` as (µs, frame).
    fn pcap(link: DataLink, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let header = PcapHeader {
            datalink: link,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (us, frame) in frames {
            let len = u32::try_from(frame.len()).unwrap();
            w.write_packet(&PcapPacket::new(Duration::from_micros(*us), len, frame))
                .unwrap();
        }
        w.into_writer()
    }

    /// A caller's stream: 20 ms packets, with a DTMF event, RTCP and SIP mixed in.
    fn call_frames() -> Vec<(u64, Vec<u8>)> {
        let mut frames = Vec::new();
        for i in 0..50u16 {
            let at = 1_000_000 + u64::from(i) * 20_000 + u64::from(i % 3) * 4_000;
            let p = rtp(0, 65_530u16.wrapping_add(i), 160 * u32::from(i), 0xabcd);
            frames.push((at, ethernet(CALLER, EARSHOT, &p)));
        }
        // Its RFC 4733 event on the same SSRC, RTCP on the same port, SIP, and our own stream.
        frames.push((
            1_500_100,
            ethernet(CALLER, EARSHOT, &rtp(101, 1, 800, 0xabcd)),
        ));
        let mut rr = vec![0x81, 201, 0, 7];
        rr.extend_from_slice(&[0; 28]);
        frames.push((1_500_200, ethernet(CALLER, EARSHOT, &rr)));
        frames.push((
            1_500_300,
            ethernet(CALLER, ([192, 0, 2, 1], 5060), b"INVITE sip:x SIP/2.0\r\n"),
        ));
        // What the box sent back: more packets than the lossy leg in, perfect timing.
        for i in 0..60u16 {
            let p = rtp(8, i, 160 * u32::from(i), 0x1111);
            frames.push((
                1_000_000 + u64::from(i) * 20_000,
                ethernet(EARSHOT, CALLER, &p),
            ));
        }
        frames.push((1_600_000, vec![0xde, 0xad]));
        frames.sort_by_key(|(at, _)| *at);
        frames
    }

    #[test]
    fn the_leg_into_the_box_becomes_the_trace_without_its_events_or_rtcp() {
        let trace = read(&pcap(DataLink::ETHERNET, &call_frames()), None).unwrap();
        assert_eq!(
            trace.stream,
            CaptureStream {
                ssrc: 0xabcd,
                payload_type: 0,
                src: SocketAddr::from(CALLER),
                dst: SocketAddr::from(EARSHOT),
                packets: 50,
            }
        );
        assert_eq!(trace.streams.len(), 2);
        assert_eq!(trace.streams[1].ssrc, 0x1111);
        // RTCP, SIP and the truncated frame.
        assert_eq!(trace.skipped, 3);
        assert_eq!(trace.packets.len(), 50);
        assert_eq!(trace.packets[0].arrival_us, 0);
        for (i, p) in trace.packets.iter().enumerate() {
            let i = i as u16;
            assert_eq!(p.seq, 65_530u16.wrapping_add(i));
            assert_eq!(p.rtp_ts, 160 * u32::from(i));
            assert_eq!(
                p.arrival_us,
                i64::from(i) * 20_000 + i64::from(i % 3) * 4_000
            );
        }
        let ours = read(&pcap(DataLink::ETHERNET, &call_frames()), Some(0x1111));
        assert_eq!(ours.unwrap().packets.len(), 60);
        let missing = read(&pcap(DataLink::ETHERNET, &call_frames()), Some(7));
        assert!(matches!(missing, Err(CaptureError::NoSuchSsrc { ssrc: 7 })));
    }

    #[test]
    fn pcapng_timestamps_follow_the_interfaces_resolution() {
        for (tsresol, per_us) in [(None, 1u64), (Some(9u8), 1000), (Some(3), 0)] {
            let mut w = PcapNgWriter::new(Vec::new()).unwrap();
            let options = tsresol
                .map(InterfaceDescriptionOption::IfTsResol)
                .into_iter()
                .collect();
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::RAW,
                snaplen: 0,
                options,
            })
            .unwrap();
            for i in 0..5u16 {
                let frame = raw_ipv6(&rtp(8, i, 160 * u32::from(i), 0x5555));
                // In the interface's units: 20 ms (or 20 units of 1 ms at 10^-3).
                let count = if per_us == 0 {
                    u64::from(i) * 20
                } else {
                    u64::from(i) * 20_000 * per_us
                };
                w.write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_nanos(count),
                    original_len: u32::try_from(frame.len()).unwrap(),
                    data: Cow::Borrowed(&frame),
                    options: vec![],
                })
                .unwrap();
            }
            let trace = read(&w.into_inner(), None).unwrap();
            assert_eq!(trace.stream.payload_type, 8);
            assert_eq!(trace.stream.src.port(), 5004);
            assert!(trace.stream.src.is_ipv6());
            let arrivals: Vec<i64> = trace.packets.iter().map(|p| p.arrival_us).collect();
            assert_eq!(
                arrivals,
                [0, 20_000, 40_000, 60_000, 80_000],
                "tsresol {tsresol:?}"
            );
        }
    }

    #[test]
    fn cooked_and_loopback_link_layers_are_read() {
        let payload = rtp(0, 1, 160, 0x42);
        let mut ip = Vec::new();
        PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .udp(4000, 4002)
            .write(&mut ip, &payload)
            .unwrap();
        let mut sll2 = vec![0x08, 0x00];
        sll2.resize(SLL2_HEADER, 0);
        sll2.extend_from_slice(&ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        for (link, frame) in [
            (DataLink::LINUX_SLL2, sll2),
            (DataLink::NULL, null),
            (DataLink::RAW, ip.clone()),
        ] {
            let trace = read(&pcap(link, &[(5, frame)]), None).unwrap();
            assert_eq!(trace.stream.ssrc, 0x42, "{link:?}");
            assert_eq!(trace.stream.dst, SocketAddr::from(([127, 0, 0, 1], 4002)));
        }
    }

    #[test]
    fn what_is_not_a_capture_is_refused_and_a_capture_without_rtp_says_so() {
        for junk in [
            &b""[..],
            b"arrival_ms,seq,rtp_ts\n0,1,160\n",
            &[0xd4, 0xc3, 0xb2, 0xa1, 2],
        ] {
            assert!(
                matches!(read(junk, None), Err(CaptureError::Format(_))),
                "{junk:?}"
            );
        }
        let sip = ethernet(CALLER, ([192, 0, 2, 1], 5060), b"OPTIONS sip:x SIP/2.0\r\n");
        let err = read(&pcap(DataLink::ETHERNET, &[(0, sip)]), None);
        assert!(matches!(err, Err(CaptureError::NoRtp { skipped: 1 })));
    }

    #[test]
    fn timestamp_units_in_base_10_and_base_2() {
        assert_eq!(
            TsUnit::MICROS.duration(1_500_000),
            Duration::from_millis(1500)
        );
        assert_eq!(TsUnit(9).duration(20_000_000), Duration::from_millis(20));
        assert_eq!(TsUnit(0).duration(3), Duration::from_secs(3));
        assert_eq!(TsUnit(12).duration(5_000_000), Duration::from_micros(5));
        assert_eq!(TsUnit(0x80 | 10).duration(1024), Duration::from_secs(1));
        assert_eq!(
            TsUnit(0x80 | 20).duration(1 << 19),
            Duration::from_millis(500)
        );
        // Absurd units and counts saturate instead of overflowing.
        assert_eq!(TsUnit(0x7f).duration(u128::MAX), Duration::ZERO);
        assert_eq!(TsUnit(0xff).duration(u128::MAX), Duration::from_secs(2));
        assert_eq!(TsUnit(0x80).duration(u128::MAX), Duration::MAX);
    }

    #[test]
    fn a_headers_only_capture_and_one_cut_off_mid_record_are_read() {
        let frames = call_frames();
        // `tcpdump -s 96`: every record cut to 96 bytes, with the wire length kept.
        let header = PcapHeader {
            snaplen: 96,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for (us, frame) in &frames {
            let kept = &frame[..frame.len().min(96)];
            let len = u32::try_from(frame.len()).unwrap();
            w.write_packet(&PcapPacket::new(Duration::from_micros(*us), len, kept))
                .unwrap();
        }
        let trace = read(&w.into_writer(), None).unwrap();
        assert_eq!((trace.stream.ssrc, trace.packets.len()), (0xabcd, 50));
        assert!(!trace.truncated);
        // Copied while tcpdump was writing: the last record breaks off.
        let whole = pcap(DataLink::ETHERNET, &frames);
        let trace = read(&whole[..whole.len() - 30], None).unwrap();
        assert!(trace.truncated);
        assert_eq!(trace.packets.len(), 50);
    }

    #[test]
    fn a_stream_spanning_more_than_a_day_is_refused() {
        let frames = [
            (0, ethernet(CALLER, EARSHOT, &rtp(0, 1, 160, 9))),
            (
                90_000 * 1_000_000,
                ethernet(CALLER, EARSHOT, &rtp(0, 2, 320, 9)),
            ),
        ];
        let trace = read(&pcap(DataLink::ETHERNET, &frames), None).unwrap();
        let err = write_playout(&trace.packets, JitterConfig::default(), &mut Vec::new());
        assert!(
            matches!(err, Err(TraceError::TooLong { hours: 25 })),
            "{err:?}"
        );
    }
}
