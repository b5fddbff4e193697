//! The RTP wire edge: RFC 3550 §5.1 fixed header, §5.3.1 header extension and the padding rule,
//! checked as Appendix A.1 asks ("RTP header validity checks") before anything else sees a packet.
//!
//! Parsing is zero-copy: [`RtpPacket`] borrows the payload from the datagram and the parser never
//! allocates. It decodes the 12-byte fixed header itself rather than through
//! `rtp::header::Header::unmarshal`, because that function allocates for every CSRC list or
//! extension and panics (`copy_to_bytes` past the end) on an RFC 8285 extension element that
//! overruns the datagram — peer input must never panic us. Outbound headers are written with the
//! `rtp` crate's `Marshal`, which neither allocates nor can be fed by a peer.

use ::rtp::header::Header;
use thiserror::Error;
use webrtc_util::marshal::{Marshal, MarshalSize};

use super::Ssrc;

/// RTP version carried by every packet (RFC 3550 §5.1).
const RTP_VERSION: u8 = 2;
/// Length of the fixed header, before CSRCs and extension.
const FIXED_HEADER_LEN: usize = 12;

/// Why a datagram on the RTP port is not a valid RTP packet. Always the peer's fault: count it
/// and drop the datagram.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum MalformedRtp {
    /// Fewer bytes than the 12-byte fixed header.
    #[error("datagram of {len} bytes is shorter than the 12-byte RTP header")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {version}, expected 2")]
    BadVersion {
        /// The version the peer sent.
        version: u8,
    },
    /// The CSRC count claims more identifiers than the datagram holds.
    #[error("{count} CSRCs do not fit in a {len}-byte datagram")]
    CsrcOverflow {
        /// The CC field.
        count: u8,
        /// Datagram length.
        len: usize,
    },
    /// The header extension's length runs past the end of the datagram.
    #[error("header extension runs past the end of a {len}-byte datagram")]
    ExtensionOverflow {
        /// Datagram length.
        len: usize,
    },
    /// The padding count is zero or larger than the payload it would strip.
    #[error("padding count {padding} is invalid for a {available}-byte payload")]
    BadPadding {
        /// The last octet of the datagram.
        padding: u8,
        /// Bytes between the header and the end of the datagram.
        available: usize,
    },
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The M bit: first packet of a talkspurt for audio (RFC 3551 §4.1), start of an event for
    /// RFC 4733.
    pub marker: bool,
    /// The 7-bit payload type.
    pub payload_type: u8,
    /// The 16-bit sequence number as sent.
    pub seq: u16,
    /// The media timestamp.
    pub timestamp: u32,
    /// The synchronization source.
    pub ssrc: Ssrc,
    /// The payload, after CSRCs and extension, without padding.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses one datagram, applying the A.1 validity checks (version, CSRC/extension lengths,
    /// padding). Never allocates, never panics.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, MalformedRtp> {
        let len = datagram.len();
        let Some(fixed) = datagram.first_chunk::<FIXED_HEADER_LEN>() else {
            return Err(MalformedRtp::TooShort { len });
        };
        let [b0, b1, s0, s1, t0, t1, t2, t3, i0, i1, i2, i3] = *fixed;
        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(MalformedRtp::BadVersion { version });
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = b0 & 0x0f;

        let mut header_len = FIXED_HEADER_LEN + usize::from(csrc_count) * 4;
        if header_len > len {
            return Err(MalformedRtp::CsrcOverflow {
                count: csrc_count,
                len,
            });
        }
        if has_extension {
            // §5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the words.
            let Some(&[_, _, l0, l1]) = datagram
                .get(header_len..)
                .and_then(|rest| rest.first_chunk::<4>())
            else {
                return Err(MalformedRtp::ExtensionOverflow { len });
            };
            header_len += 4 + usize::from(u16::from_be_bytes([l0, l1])) * 4;
            if header_len > len {
                return Err(MalformedRtp::ExtensionOverflow { len });
            }
        }

        let mut end = len;
        if has_padding {
            let available = len - header_len;
            let padding = datagram.last().copied().unwrap_or(0);
            if padding == 0 || usize::from(padding) > available {
                return Err(MalformedRtp::BadPadding { padding, available });
            }
            end -= usize::from(padding);
        }
        let payload = datagram.get(header_len..end).unwrap_or_default();

        Ok(RtpPacket {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            seq: u16::from_be_bytes([s0, s1]),
            timestamp: u32::from_be_bytes([t0, t1, t2, t3]),
            ssrc: Ssrc(u32::from_be_bytes([i0, i1, i2, i3])),
            payload,
        })
    }
}

/// The fields of an outbound packet's header; no CSRCs, no extension, no padding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboundHeader {
    pub(crate) marker: bool,
    pub(crate) payload_type: u8,
    pub(crate) seq: u16,
    pub(crate) timestamp: u32,
    pub(crate) ssrc: Ssrc,
}

/// Writes header and payload into `buf`; `None` when `buf` is too small. Does not allocate: the
/// `rtp` crate's header with empty CSRC and extension vectors marshals straight into the slice.
pub(crate) fn write_packet(h: OutboundHeader, payload: &[u8], buf: &mut [u8]) -> Option<usize> {
    let header = Header {
        version: RTP_VERSION,
        padding: false,
        extension: false,
        marker: h.marker,
        payload_type: h.payload_type & 0x7f,
        sequence_number: h.seq,
        timestamp: h.timestamp,
        ssrc: h.ssrc.0,
        ..Header::default()
    };
    let header_len = header.marshal_size();
    let total = header_len.checked_add(payload.len())?;
    let out = buf.get_mut(..total)?;
    let (head, body) = out.split_at_mut(header_len);
    let written = header.marshal_to(head).ok()?;
    body.copy_from_slice(payload);
    (written == header_len).then_some(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(b0: u8) -> Vec<u8> {
        vec![
            b0, 0x80, 0x12, 0x34, 0, 0, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef,
        ]
    }

    #[test]
    fn parses_fixed_header_fields_per_section_5_1() {
        let mut d = header(0x80);
        d.extend_from_slice(&[1, 2, 3]);
        let p = RtpPacket::parse(&d).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 0);
        assert_eq!(p.seq, 0x1234);
        assert_eq!(p.timestamp, 256);
        assert_eq!(p.ssrc, Ssrc(0xdead_beef));
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn skips_csrcs_and_extension_to_find_the_payload() {
        let mut d = header(0x80 | 0x10 | 0x01);
        d.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        d.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-word extension
        d.extend_from_slice(&[7, 7]);
        assert_eq!(RtpPacket::parse(&d).unwrap().payload, &[7, 7]);
    }

    #[test]
    fn strips_padding_counted_by_the_last_octet() {
        let mut d = header(0xa0);
        d.extend_from_slice(&[5, 6, 0, 0, 3]);
        assert_eq!(RtpPacket::parse(&d).unwrap().payload, &[5, 6]);
    }

    #[test]
    fn rejects_what_appendix_a1_calls_invalid() {
        assert_eq!(
            RtpPacket::parse(&[0x80; 11]),
            Err(MalformedRtp::TooShort { len: 11 })
        );
        assert_eq!(
            RtpPacket::parse(&header(0x40)),
            Err(MalformedRtp::BadVersion { version: 1 })
        );
        assert_eq!(
            RtpPacket::parse(&header(0x8f)),
            Err(MalformedRtp::CsrcOverflow { count: 15, len: 12 })
        );
        let mut ext = header(0x90);
        ext.extend_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
        assert_eq!(
            RtpPacket::parse(&ext),
            Err(MalformedRtp::ExtensionOverflow { len: 16 })
        );
        let mut zero_pad = header(0xa0);
        zero_pad.extend_from_slice(&[1, 0]);
        assert!(matches!(
            RtpPacket::parse(&zero_pad),
            Err(MalformedRtp::BadPadding { padding: 0, .. })
        ));
        let mut long_pad = header(0xa0);
        long_pad.extend_from_slice(&[1, 9]);
        assert!(matches!(
            RtpPacket::parse(&long_pad),
            Err(MalformedRtp::BadPadding { padding: 9, .. })
        ));
    }

    #[test]
    fn survives_an_extension_element_that_overruns_the_datagram() {
        // One-byte-header element claiming 16 bytes inside a one-word extension at the very end
        // of the datagram: the input that makes `rtp::header::Header::unmarshal` panic.
        let mut d = header(0x90);
        d.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x1f, 0, 0, 0]);
        assert_eq!(RtpPacket::parse(&d).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn written_packet_parses_back() {
        let mut buf = [0u8; 64];
        let h = OutboundHeader {
            marker: true,
            payload_type: 8,
            seq: 65535,
            timestamp: 0xffff_fff0,
            ssrc: Ssrc(42),
        };
        let n = write_packet(h, &[1, 2, 3, 4], &mut buf).unwrap();
        assert_eq!(n, 16);
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(
            (p.marker, p.payload_type, p.seq, p.timestamp, p.ssrc),
            (true, 8, 65535, 0xffff_fff0, Ssrc(42))
        );
        assert_eq!(p.payload, &[1, 2, 3, 4]);
        assert_eq!(write_packet(h, &[0; 60], &mut buf), None);
    }
}
