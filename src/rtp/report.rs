//! RTCP on the wire, through the `rtcp` crate: building compound packets of RFC 3550 §6.4 SR or
//! RR, §6.5.1 SDES CNAME and §6.6 BYE (§6.1: every compound starts with a report and carries a
//! CNAME), reading the peer's compounds with the Appendix A.2 validity checks, and the §4 NTP
//! timestamp arithmetic behind LSR/DLSR round-trip times (§6.4.1).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::rtcp::goodbye::Goodbye;
use ::rtcp::packet::Packet;
use ::rtcp::receiver_report::ReceiverReport;
use ::rtcp::reception_report::ReceptionReport;
use ::rtcp::sender_report::SenderReport;
use ::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use bytes::Bytes;
use thiserror::Error;
use webrtc_util::marshal::Unmarshal;

use super::Ssrc;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// Longest SDES item text (§6.5: an 8-bit length).
pub(crate) const MAX_CNAME_LEN: usize = 255;

/// Why a datagram on the RTCP port was not taken. Always the peer's fault.
#[derive(Debug, Error)]
pub(crate) enum MalformedRtcp {
    /// A packet header or the length it declares runs past the end of the datagram.
    #[error("RTCP packet truncated")]
    Truncated,
    /// A.2: every packet must be version 2.
    #[error("RTCP version {version}, expected 2")]
    BadVersion { version: u8 },
    /// A.2: only the last packet of a compound may be padded.
    #[error("padding bit on an RTCP packet that is not the last of its compound")]
    MisplacedPadding,
    /// A.2: a compound must begin with an SR or RR.
    #[error("RTCP compound packet does not begin with SR or RR")]
    FirstNotReport,
    /// The `rtcp` crate rejected an SR, RR or BYE body.
    #[error("unparseable RTCP packet")]
    Unparseable(#[source] webrtc_util::Error),
}

/// The sender info block of an SR (§6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SenderInfo {
    pub(crate) ntp_time: u64,
    pub(crate) rtp_time: u32,
    pub(crate) packet_count: u32,
    pub(crate) octet_count: u32,
}

/// One compound packet to send.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing<'a> {
    pub(crate) ssrc: Ssrc,
    /// `Some` makes it an SR, `None` an RR.
    pub(crate) sender: Option<SenderInfo>,
    /// Reception report about the remote source, if heard since the last report.
    pub(crate) block: Option<ReceptionReport>,
    pub(crate) cname: &'a str,
    pub(crate) bye: bool,
}

/// Marshals the compound packet; `None` only if the `rtcp` crate refuses it, which the inputs
/// here cannot cause (one block, a CNAME already cut to 255 bytes).
pub(crate) fn build(out: &Outgoing<'_>) -> Option<Vec<u8>> {
    let reports: Vec<ReceptionReport> = out.block.iter().cloned().collect();
    let mut packets: Vec<Box<dyn Packet + Send + Sync>> = Vec::with_capacity(3);
    match out.sender {
        Some(info) => packets.push(Box::new(SenderReport {
            ssrc: out.ssrc.0,
            ntp_time: info.ntp_time,
            rtp_time: info.rtp_time,
            packet_count: info.packet_count,
            octet_count: info.octet_count,
            reports,
            profile_extensions: Bytes::new(),
        })),
        None => packets.push(Box::new(ReceiverReport {
            ssrc: out.ssrc.0,
            reports,
            profile_extensions: Bytes::new(),
        })),
    }
    packets.push(Box::new(SourceDescription {
        chunks: vec![SourceDescriptionChunk {
            source: out.ssrc.0,
            items: vec![SourceDescriptionItem {
                sdes_type: SdesType::SdesCname,
                text: Bytes::copy_from_slice(out.cname.as_bytes()),
            }],
        }],
    }));
    if out.bye {
        packets.push(Box::new(Goodbye {
            sources: vec![out.ssrc.0],
            reason: Bytes::new(),
        }));
    }
    ::rtcp::packet::marshal(&packets).ok().map(|b| b.to_vec())
}

/// What a received compound says that we care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// SSRC of the SR/RR sender.
    pub(crate) sender: Ssrc,
    /// NTP timestamp of its SR, if it was one.
    pub(crate) sr_ntp: Option<u64>,
    /// The report block about `local`, if any.
    pub(crate) about_us: Option<ReceptionReport>,
    /// Sources leaving (BYE).
    pub(crate) bye: Vec<Ssrc>,
}

/// RTCP packet types read here (RFC 3550 §12.1).
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_BYE: u8 = 203;

/// Parses a compound packet and picks out the reports on `local`'s stream.
///
/// The compound is split by this function, with the A.2 checks, and only SR, RR and BYE bodies
/// are handed to the `rtcp` crate, each as its own slice: the crate's whole-compound
/// `rtcp::packet::unmarshal` panics on some malformed feedback packets (found by fuzzing), and
/// we have no use for SDES, APP, feedback or XR contents.
pub(crate) fn parse(datagram: &[u8], local: Ssrc) -> Result<Incoming, MalformedRtcp> {
    let mut incoming = Incoming {
        sender: Ssrc(0),
        sr_ntp: None,
        about_us: None,
        bye: Vec::new(),
    };
    let mut rest = datagram;
    let mut first = true;
    while !rest.is_empty() {
        let Some(&[b0, packet_type, l0, l1]) = rest.first_chunk::<4>() else {
            return Err(MalformedRtcp::Truncated);
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(MalformedRtcp::BadVersion { version });
        }
        let len = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
        let Some((mut packet, tail)) = rest.split_at_checked(len) else {
            return Err(MalformedRtcp::Truncated);
        };
        if b0 & 0x20 != 0 && !tail.is_empty() {
            return Err(MalformedRtcp::MisplacedPadding);
        }
        if first && packet_type != PT_SR && packet_type != PT_RR {
            return Err(MalformedRtcp::FirstNotReport);
        }
        first = false;
        rest = tail;
        let blocks = match packet_type {
            PT_SR => {
                let sr =
                    SenderReport::unmarshal(&mut packet).map_err(MalformedRtcp::Unparseable)?;
                incoming.sender = Ssrc(sr.ssrc);
                incoming.sr_ntp = Some(sr.ntp_time);
                sr.reports
            }
            PT_RR => {
                let rr =
                    ReceiverReport::unmarshal(&mut packet).map_err(MalformedRtcp::Unparseable)?;
                incoming.sender = Ssrc(rr.ssrc);
                rr.reports
            }
            PT_BYE => {
                let bye = Goodbye::unmarshal(&mut packet).map_err(MalformedRtcp::Unparseable)?;
                incoming.bye.extend(bye.sources.into_iter().map(Ssrc));
                continue;
            }
            _ => continue,
        };
        if let Some(block) = blocks.into_iter().find(|b| b.ssrc == local.0) {
            incoming.about_us = Some(block);
        }
    }
    if first {
        return Err(MalformedRtcp::Truncated);
    }
    Ok(incoming)
}

/// §4: 64-bit NTP timestamp (32.32 fixed point seconds since 1900) of a wall-clock time.
pub(crate) fn ntp_time(at: SystemTime) -> u64 {
    let since_unix = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let fraction = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// §6.4.1: the middle 32 bits of an NTP timestamp, as carried in LSR.
pub(crate) fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in 1/65536 s units (DLSR), saturating.
pub(crate) fn to_ntp_short(d: Duration) -> u32 {
    let units = (d.as_nanos() << 16) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// A duration in 1/65536 s units, in milliseconds.
pub(crate) fn ntp_short_ms(units: u32) -> f64 {
    f64::from(units) * 1000.0 / 65536.0
}

/// §6.4.1: cumulative lost as a 24-bit signed field, clamped.
pub(crate) fn encode_lost(lost: i64) -> u32 {
    let clamped = lost.clamp(-0x80_0000, 0x7f_ffff);
    (clamped as u32) & 0x00ff_ffff
}

/// The 24-bit signed cumulative lost field, sign-extended.
pub(crate) fn decode_lost(field: u32) -> i32 {
    ((field << 8) as i32) >> 8
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ntp_time_of_the_unix_epoch_is_2208988800_seconds() {
        assert_eq!(ntp_time(UNIX_EPOCH), NTP_UNIX_OFFSET << 32);
        let half = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp_time(half), ((NTP_UNIX_OFFSET + 1) << 32) | 0x8000_0000);
        assert_eq!(
            ntp_middle(ntp_time(half)),
            ((NTP_UNIX_OFFSET as u32 + 1) << 16) | 0x8000
        );
    }

    #[test]
    fn dlsr_units_are_1_65536_seconds() {
        assert_eq!(to_ntp_short(Duration::from_secs(1)), 65536);
        assert_eq!(to_ntp_short(Duration::from_millis(500)), 32768);
        assert_eq!(ntp_short_ms(32768), 500.0);
        assert_eq!(to_ntp_short(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn cumulative_lost_is_24_bit_signed() {
        assert_eq!(encode_lost(5), 5);
        assert_eq!(encode_lost(-1), 0xff_ffff);
        assert_eq!(decode_lost(encode_lost(-2)), -2);
        assert_eq!(encode_lost(i64::MAX), 0x7f_ffff);
        assert_eq!(decode_lost(encode_lost(i64::MIN)), -0x80_0000);
    }

    #[test]
    fn receiver_report_compound_round_trips_with_cname() {
        let block = ReceptionReport {
            ssrc: 7,
            fraction_lost: 64,
            total_lost: 3,
            last_sequence_number: 1000,
            jitter: 12,
            last_sender_report: 0,
            delay: 0,
        };
        let bytes = build(&Outgoing {
            ssrc: Ssrc(1),
            sender: None,
            block: Some(block.clone()),
            cname: "earshot@example",
            bye: false,
        })
        .unwrap();
        let incoming = parse(&bytes, Ssrc(7)).unwrap();
        assert_eq!(incoming.sender, Ssrc(1));
        assert_eq!(incoming.about_us, Some(block));
        assert_eq!(incoming.sr_ntp, None);
    }

    #[test]
    fn compound_not_starting_with_a_report_is_rejected_per_a2() {
        let sdes = SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: 1,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from_static(b"x"),
                }],
            }],
        };
        let packets: Vec<Box<dyn Packet + Send + Sync>> = vec![Box::new(sdes)];
        let bytes = ::rtcp::packet::marshal(&packets).unwrap();
        assert!(matches!(
            parse(&bytes, Ssrc(1)),
            Err(MalformedRtcp::FirstNotReport)
        ));
        assert!(matches!(
            parse(&[0x80, 0xc9], Ssrc(1)),
            Err(MalformedRtcp::Truncated)
        ));
        assert!(matches!(parse(&[], Ssrc(1)), Err(MalformedRtcp::Truncated)));
        assert!(matches!(
            parse(&[0x40, 0xc9, 0, 0], Ssrc(1)),
            Err(MalformedRtcp::BadVersion { version: 1 })
        ));
        assert!(matches!(
            parse(&[0x80, 0xc9, 0, 5, 0, 0, 0, 1], Ssrc(1)),
            Err(MalformedRtcp::Truncated)
        ));
        let padded_first = [0xa0, 0xc9, 0, 1, 0, 0, 0, 1, 0x80, 0xcb, 0, 0];
        assert!(matches!(
            parse(&padded_first, Ssrc(1)),
            Err(MalformedRtcp::MisplacedPadding)
        ));
    }
}
