//! SDP for one audio stream: parsing (RFC 8866, formerly RFC 4566) and the RFC 3264 offer/answer
//! model for an endpoint that speaks PCMU (PT 0), PCMA (PT 8) and telephone-event/8000
//! (RFC 4733).
//!
//! Owns: [`SessionDescription::parse`] (tolerant: CRLF or LF, unknown lines and attributes
//! ignored), [`answer`] (RFC 3264 §6: one answer m= line per offered m= line, only the first
//! usable audio stream accepted, the rest rejected with port 0), [`offer`] (RFC 3264 §5) and
//! [`negotiate_answer`] (RFC 3264 §7). Hold is read both the RFC 3264 §8.4 way (direction
//! attributes) and the old RFC 2543 way (`c=0.0.0.0`).
//!
//! Pure functions: no IO, no clock. A malformed description is an [`SdpError`], never a panic.
//!
//! Hostile-input rules. Refused as malformed (400): a NUL, a CR not ending a line, or any other
//! control character but HTAB anywhere (RFC 8866 §9 allows some controls in byte-string
//! values; no real offer carries one, and sofia-sip CVE-2022-31001/31003 were built on them);
//! a `c=` whose address does not match its address type (§5.7: `IP4` takes a dotted quad,
//! `IP6` an IPv6 literal, either may take a host name, and a name of only digits and dots is
//! never a host name, RFC 1123 §2.1), or with a non-numeric `/ttl` or extra fields; an
//! enabled `m=` line without a `c=` for it (§5.7). Refused as unusable (488, RFC 3264 §6):
//! a connection address earshot cannot send media to — a host name (earshot resolves no
//! names for media), an address type other than IP4/IP6, a multicast or broadcast address.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An m= line count above this is refused: no real call needs it, and it bounds the work a
/// hostile offer can make us do.
const MAX_MEDIA: usize = 64;
/// The packetization earshot asks for and uses when the peer states none (RFC 3551 §4.5 default
/// for G.711 is 20 ms).
const DEFAULT_PTIME_MS: u32 = 20;
/// The payload type earshot puts on telephone-event in its own offers.
const OFFER_DTMF_PT: u8 = 101;
/// The RFC 4733 events earshot accepts: DTMF 0-9, *, #, A-D and flash.
const DTMF_EVENTS: &str = "0-16";

/// An audio codec earshot can send and receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0 (RFC 3551 §6).
    #[serde(rename = "PCMU")]
    Pcmu,
    /// G.711 A-law, static payload type 8 (RFC 3551 §6).
    #[serde(rename = "PCMA")]
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name used in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The codec behind a static payload type, if it is one of ours.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }
}

/// A stream direction attribute (RFC 3264 §5.1, §6.1), from the point of view of whoever wrote
/// the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv`, also the default when no attribute is present.
    #[default]
    SendRecv,
    /// `a=sendonly`: the writer sends but will not receive (it is putting the other side on hold).
    SendOnly,
    /// `a=recvonly`: the writer receives but will not send.
    RecvOnly,
    /// `a=inactive`: no media either way.
    Inactive,
}

impl Direction {
    /// The direction an answerer mirrors back (RFC 3264 §6.1): sendonly becomes recvonly and
    /// recvonly becomes sendonly.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// The attribute name, without `a=`.
    pub fn as_attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the writer of this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the writer of this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_flags(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    fn from_attr(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_attr()))
    }
}

/// Why a description could not be parsed. Every variant is the peer's fault (answer 400 or 488).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body does not start with `v=`.
    #[error("not an SDP body: the first line is not v=")]
    NotSdp,
    /// `v=` is present but not 0 (RFC 8866 §5.1).
    #[error("unsupported SDP version")]
    UnsupportedVersion,
    /// A line is not of the form `<type>=<value>`.
    #[error("line {line}: not of the form <type>=<value>")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// An m= line lacks media, port, proto or formats, or the port is not a number.
    #[error("line {line}: malformed m= line")]
    BadMedia {
        /// 1-based line number.
        line: usize,
    },
    /// A c= line lacks fields or is not of network type IN.
    #[error("line {line}: malformed c= line")]
    BadConnection {
        /// 1-based line number.
        line: usize,
    },
    /// More m= lines than earshot will look at (64).
    #[error("more than {MAX_MEDIA} m= lines")]
    TooManyMedia,
    /// A NUL or another control character (HTAB aside) in a line.
    #[error("line {line}: control character")]
    ControlCharacter {
        /// 1-based line number.
        line: usize,
    },
    /// A CR that does not end a line.
    #[error("line {line}: CR without LF")]
    BareCr {
        /// 1-based line number.
        line: usize,
    },
    /// An enabled m= section with no c= line, at its level or the session's.
    #[error("m= line {line}: no c= line for it")]
    MissingConnection {
        /// 1-based line number of the m= line.
        line: usize,
    },
}

/// Why an offer could not be answered, or an answer to our offer could not be used. Both map to
/// SIP 488 Not Acceptable Here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Audio streams are offered, but none lists PCMU or PCMA (among the codecs we allow).
    #[error("no codec in common")]
    NoCommonCodec,
    /// No enabled RTP/AVP audio stream (none at all, port 0, or a transport such as SRTP we do
    /// not speak).
    #[error("no usable audio stream")]
    NoAudio,
    /// The accepted stream's connection address is not one earshot can send media to: a host
    /// name, another address type, a multicast or broadcast address.
    #[error("connection address unusable for media")]
    UnusableAddress,
}

/// The address of a `c=` line (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAddress {
    /// An IPv4 or IPv6 literal (any `/ttl` or `/count` suffix dropped).
    Ip(IpAddr),
    /// A host name; earshot is sans-IO and does not resolve it, so an offer whose accepted
    /// stream has one is refused with 488.
    Host(String),
    /// An address type other than IP4 and IP6 (§5.7 lets them be defined), with its address;
    /// refused like a host name.
    OtherType {
        /// The address type as written.
        addrtype: String,
        /// The address as written.
        address: String,
    },
}

/// One `a=rtpmap` (RFC 8866 §6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it names.
    pub payload_type: u8,
    /// The encoding name as written, e.g. `telephone-event`.
    pub encoding: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count, when given.
    pub channels: Option<u8>,
}

/// An `a=rtcp` attribute (RFC 3605): where the peer wants RTCP when it is not port + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcpAttr {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address when it differs from the c= address.
    pub addr: Option<IpAddr>,
}

/// The `o=` line (RFC 8866 §5.2): kept so the dialog layer can tell an unchanged re-offer
/// (same version, RFC 3264 §8) from a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The username field (often `-`).
    pub username: String,
    /// The session id, kept as text: peers write numbers wider than 64 bits.
    pub session_id: String,
    /// The session version, incremented by the peer on every change.
    pub session_version: u64,
}

/// One `m=` section (RFC 8866 §5.14) with the attributes earshot reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media type, e.g. `audio`, `video`.
    pub media: String,
    /// The transport port; 0 means the stream is disabled or rejected.
    pub port: u16,
    /// The transport protocol, e.g. `RTP/AVP`.
    pub proto: String,
    /// The format tokens separated by single spaces, as offered (payload types for RTP). Kept
    /// as text because a rejected stream must echo them (RFC 3264 §6) and non-RTP formats are
    /// not numbers.
    pub formats: String,
    /// Media-level `c=`; overrides the session-level one.
    pub connection: Option<ConnectionAddress>,
    /// Media-level direction attribute; overrides the session-level one.
    pub direction: Option<Direction>,
    /// `a=ptime` in milliseconds.
    pub ptime_ms: Option<u32>,
    /// `a=rtcp` (RFC 3605).
    pub rtcp: Option<RtcpAttr>,
    /// Every well-formed `a=rtpmap`.
    pub rtpmaps: Vec<RtpMap>,
}

impl MediaDescription {
    /// The RTP payload types among the formats, in the writer's preference order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .split(' ')
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt <= 127)
    }

    /// The `a=rtpmap` for a payload type.
    pub fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|r| r.payload_type == pt)
    }

    /// The first listed payload type mapped to telephone-event/8000 (RFC 4733 §7).
    pub fn telephone_event_pt(&self) -> Option<u8> {
        self.payload_types().find(|pt| {
            self.rtpmap(*pt).is_some_and(|r| {
                r.encoding.eq_ignore_ascii_case("telephone-event") && r.clock_rate == 8000
            })
        })
    }

    /// Whether this is an enabled RTP audio stream without encryption.
    fn is_usable_audio(&self) -> bool {
        self.port != 0
            && self.media.eq_ignore_ascii_case("audio")
            && (self.proto.eq_ignore_ascii_case("RTP/AVP")
                || self.proto.eq_ignore_ascii_case("RTP/AVPF"))
    }

    /// The first payload type, in this description's order, that is one of `codecs`.
    fn first_common_codec(&self, codecs: &[Codec]) -> Option<Codec> {
        self.payload_types()
            .filter_map(Codec::from_payload_type)
            .find(|c| codecs.contains(c))
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line, when present and well-formed.
    pub origin: Option<Origin>,
    /// Session-level `c=`.
    pub connection: Option<ConnectionAddress>,
    /// The first `t=` line (start, stop); an answer must repeat it (RFC 3264 §6).
    pub timing: Option<(u64, u64)>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    /// Session-level `a=ptime` (not standard there, but written by some peers).
    pub ptime_ms: Option<u32>,
    /// The m= sections in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses an SDP body. Lines may end in CRLF or LF; blank lines, unknown line types and
    /// unknown or malformed attributes are skipped. Only a missing `v=0` and broken `m=` or `c=`
    /// lines, which would make the answer wrong, are errors.
    pub fn parse(text: &[u8]) -> Result<SessionDescription, SdpError> {
        check_bytes(text)?;
        let mut lines = text
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_ascii()))
            .filter(|(_, l)| !l.is_empty());

        match lines.next() {
            Some((_, b"v=0")) => {}
            Some((_, l)) if l.starts_with(b"v=") => return Err(SdpError::UnsupportedVersion),
            _ => return Err(SdpError::NotSdp),
        }

        let mut sd = SessionDescription {
            origin: None,
            connection: None,
            timing: None,
            direction: None,
            ptime_ms: None,
            media: Vec::new(),
        };
        let mut media_lines = Vec::new();
        for (line, bytes) in lines {
            let Some((kind, value)) = split_type(bytes) else {
                return Err(SdpError::MalformedLine { line });
            };
            match kind {
                b'm' => {
                    if sd.media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooManyMedia);
                    }
                    sd.media
                        .push(parse_media(value).ok_or(SdpError::BadMedia { line })?);
                    media_lines.push(line);
                }
                b'c' => {
                    let addr = parse_connection(value).ok_or(SdpError::BadConnection { line })?;
                    // Several c= lines per level are legal for multicast; the first one wins.
                    let slot = match sd.media.last_mut() {
                        Some(m) => &mut m.connection,
                        None => &mut sd.connection,
                    };
                    slot.get_or_insert(addr);
                }
                b'o' if sd.media.is_empty() && sd.origin.is_none() => {
                    sd.origin = std::str::from_utf8(value).ok().and_then(parse_origin);
                }
                b't' if sd.media.is_empty() && sd.timing.is_none() => {
                    sd.timing = std::str::from_utf8(value).ok().and_then(parse_timing);
                }
                b'a' => {
                    if let Ok(attr) = std::str::from_utf8(value) {
                        apply_attribute(&mut sd, attr);
                    }
                }
                _ => {}
            }
        }
        if sd.connection.is_none()
            && let Some((_, &line)) = sd
                .media
                .iter()
                .zip(&media_lines)
                .find(|(m, _)| m.port != 0 && m.connection.is_none())
        {
            return Err(SdpError::MissingConnection { line });
        }
        Ok(sd)
    }

    /// The IP addresses the enabled RTP audio streams would have media sent to: their `c=`
    /// (media-level, else session-level) and any `a=rtcp` address. `0.0.0.0` (hold) and host
    /// names are left out: nothing is ever sent to them.
    pub fn media_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.media
            .iter()
            .filter(|m| m.is_usable_audio())
            .flat_map(|m| {
                let rtp = match self.connection_for(m) {
                    Some(ConnectionAddress::Ip(ip)) => Some(*ip),
                    _ => None,
                };
                let rtcp = m.rtcp.and_then(|r| r.addr);
                rtp.into_iter().chain(rtcp)
            })
            .filter(|ip| !ip.is_unspecified())
    }

    fn connection_for<'a>(&'a self, m: &'a MediaDescription) -> Option<&'a ConnectionAddress> {
        m.connection.as_ref().or(self.connection.as_ref())
    }
}

/// What earshot offers and accepts.
#[derive(Debug, Clone)]
pub struct LocalMedia {
    /// Advertised in `o=` and `c=`.
    pub addr: IpAddr,
    /// Our RTP port (RTCP on port + 1).
    pub port: u16,
    /// The codecs we allow. The caller's offer decides the preference among them; our own
    /// offers list them in this order.
    pub codecs: Vec<Codec>,
    /// The `o=` session id, stable for the dialog.
    pub session_id: u64,
    /// The `o=` session version; bump it whenever the description changes.
    pub session_version: u64,
    /// The direction we want, usually `SendRecv` (`SendOnly` to put the peer on hold).
    pub direction: Direction,
}

/// The outcome of an offer/answer exchange: what the RTP session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec both sides send.
    pub codec: Codec,
    /// The telephone-event payload type, when both sides support RFC 4733.
    pub dtmf_pt: Option<u8>,
    /// Where to send RTP; `None` when the peer's address is 0.0.0.0 (hold), a host name, or
    /// missing, or its port is 0.
    pub remote_rtp: Option<SocketAddr>,
    /// Where to send RTCP: `a=rtcp` if present, otherwise RTP port + 1.
    pub remote_rtcp: Option<SocketAddr>,
    /// The peer's direction, with an RFC 2543 `c=0.0.0.0` hold folded in.
    pub remote_direction: Direction,
    /// Our direction: what we want, limited by what the peer allows.
    pub local_direction: Direction,
    /// The packetization the peer asked for, or 20 ms.
    pub ptime_ms: u32,
}

/// RFC 3264 §6: builds the answer to an offer. The chosen codec is the first of the offer's
/// payload types (the caller's preference) that is in `local.codecs`; the first usable audio
/// stream is accepted, every other m= line is rejected with port 0 in the same position.
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(String, Negotiated), AnswerError> {
    let mut saw_audio = false;
    let mut chosen = None;
    for (index, m) in offer.media.iter().enumerate() {
        if !m.is_usable_audio() {
            continue;
        }
        saw_audio = true;
        if let Some(codec) = m.first_common_codec(&local.codecs) {
            chosen = Some((index, codec));
            break;
        }
    }
    let Some((chosen_index, codec)) = chosen else {
        return Err(if saw_audio {
            AnswerError::NoCommonCodec
        } else {
            AnswerError::NoAudio
        });
    };
    let Some(stream) = offer.media.get(chosen_index) else {
        return Err(AnswerError::NoAudio);
    };
    check_usable_address(offer, stream)?;
    let negotiated = negotiated(offer, stream, local, codec, stream.telephone_event_pt());

    let mut sdp = String::with_capacity(320);
    write_session_header(&mut sdp, local, offer.timing.unwrap_or((0, 0)));
    for (index, m) in offer.media.iter().enumerate() {
        if index == chosen_index {
            write_audio(
                &mut sdp,
                &m.proto,
                local.port,
                &[codec],
                negotiated.dtmf_pt,
                negotiated.local_direction,
            );
        } else {
            line(
                &mut sdp,
                format_args!("m={} 0 {} {}", m.media, m.proto, m.formats),
            );
        }
    }
    Ok((sdp, negotiated))
}

/// RFC 3264 §5: our own offer, for an INVITE that arrived without SDP (the ACK carries the
/// answer) or a re-INVITE we start. One audio stream: `local.codecs` in order, then
/// telephone-event on payload type 101.
pub fn offer(local: &LocalMedia) -> String {
    let mut codecs: Vec<Codec> = Vec::with_capacity(local.codecs.len());
    for c in &local.codecs {
        if !codecs.contains(c) {
            codecs.push(*c);
        }
    }
    let mut sdp = String::with_capacity(320);
    write_session_header(&mut sdp, local, (0, 0));
    write_audio(
        &mut sdp,
        "RTP/AVP",
        local.port,
        &codecs,
        Some(OFFER_DTMF_PT),
        local.direction,
    );
    sdp
}

/// RFC 3264 §7: applies the answer to an offer made by [`offer`]. The answer's first audio m=
/// line corresponds to ours; port 0 there means the peer rejected it.
pub fn negotiate_answer(
    answer: &SessionDescription,
    local: &LocalMedia,
) -> Result<Negotiated, AnswerError> {
    let stream = answer
        .media
        .iter()
        .find(|m| m.media.eq_ignore_ascii_case("audio"))
        .filter(|m| m.is_usable_audio())
        .ok_or(AnswerError::NoAudio)?;
    let codec = stream
        .first_common_codec(&local.codecs)
        .ok_or(AnswerError::NoCommonCodec)?;
    check_usable_address(answer, stream)?;
    // An answerer must reuse our payload type (RFC 3264 §6.1); accept a missing rtpmap for it.
    let dtmf_pt = stream
        .telephone_event_pt()
        .or_else(|| stream.payload_types().find(|pt| *pt == OFFER_DTMF_PT));
    Ok(negotiated(answer, stream, local, codec, dtmf_pt))
}

/// The accepted stream must have a unicast IP address, or 0.0.0.0 / :: (RFC 2543 hold).
fn check_usable_address(
    remote: &SessionDescription,
    stream: &MediaDescription,
) -> Result<(), AnswerError> {
    match remote.connection_for(stream) {
        Some(ConnectionAddress::Ip(ip)) if !is_multicast_or_broadcast(*ip) => Ok(()),
        _ => Err(AnswerError::UnusableAddress),
    }
}

fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// Works out addresses and directions for the accepted stream of `remote`.
fn negotiated(
    remote: &SessionDescription,
    stream: &MediaDescription,
    local: &LocalMedia,
    codec: Codec,
    dtmf_pt: Option<u8>,
) -> Negotiated {
    let mut remote_direction = stream.direction.or(remote.direction).unwrap_or_default();
    let remote_ip = match remote.connection_for(stream) {
        Some(ConnectionAddress::Ip(ip)) if ip.is_unspecified() => {
            // RFC 2543 hold (RFC 3264 §8.4): the peer will not receive anything.
            remote_direction = Direction::from_flags(remote_direction.sends(), false);
            None
        }
        Some(ConnectionAddress::Ip(ip)) => Some(*ip),
        Some(ConnectionAddress::Host(_) | ConnectionAddress::OtherType { .. }) | None => None,
    };
    let remote_rtp = remote_ip
        .filter(|_| stream.port != 0)
        .map(|ip| SocketAddr::new(ip, stream.port));
    let remote_rtcp = remote_rtp.and_then(|rtp| match stream.rtcp {
        Some(RtcpAttr { port, addr }) => Some(SocketAddr::new(addr.unwrap_or(rtp.ip()), port)),
        None => rtp
            .port()
            .checked_add(1)
            .map(|p| SocketAddr::new(rtp.ip(), p)),
    });
    let local_direction = Direction::from_flags(
        local.direction.sends() && remote_direction.receives() && remote_rtp.is_some(),
        local.direction.receives() && remote_direction.sends(),
    );
    let ptime_ms = stream
        .ptime_ms
        .or(remote.ptime_ms)
        .filter(|p| (10..=120).contains(p))
        .unwrap_or(DEFAULT_PTIME_MS);
    Negotiated {
        codec,
        dtmf_pt,
        remote_rtp,
        remote_rtcp,
        remote_direction,
        local_direction,
        ptime_ms,
    }
}

/// Appends one line and its CRLF. Writing into a `String` cannot fail.
fn line(out: &mut String, args: fmt::Arguments<'_>) {
    let _ = out.write_fmt(args);
    out.push_str("\r\n");
}

fn write_session_header(out: &mut String, local: &LocalMedia, (start, stop): (u64, u64)) {
    let family = match local.addr {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    line(out, format_args!("v=0"));
    line(
        out,
        format_args!(
            "o=earshot {} {} IN {family} {}",
            local.session_id, local.session_version, local.addr
        ),
    );
    line(out, format_args!("s=-"));
    line(out, format_args!("c=IN {family} {}", local.addr));
    line(out, format_args!("t={start} {stop}"));
}

fn write_audio(
    out: &mut String,
    proto: &str,
    port: u16,
    codecs: &[Codec],
    dtmf_pt: Option<u8>,
    direction: Direction,
) {
    let _ = write!(out, "m=audio {port} {proto}");
    for c in codecs {
        let _ = write!(out, " {}", c.payload_type());
    }
    if let Some(pt) = dtmf_pt {
        let _ = write!(out, " {pt}");
    }
    out.push_str("\r\n");
    for c in codecs {
        line(
            out,
            format_args!("a=rtpmap:{} {}/8000", c.payload_type(), c.name()),
        );
    }
    if let Some(pt) = dtmf_pt {
        line(out, format_args!("a=rtpmap:{pt} telephone-event/8000"));
        line(out, format_args!("a=fmtp:{pt} {DTMF_EVENTS}"));
    }
    line(out, format_args!("a=ptime:{DEFAULT_PTIME_MS}"));
    line(out, format_args!("a={}", direction.as_attr()));
}

/// Splits `x=value` into its type letter and value.
fn split_type(line: &[u8]) -> Option<(u8, &[u8])> {
    match line {
        [kind, b'=', value @ ..] if kind.is_ascii_alphabetic() => Some((*kind, value)),
        _ => None,
    }
}

/// `m=<media> <port>[/<count>] <proto> <fmt> ...`
fn parse_media(value: &[u8]) -> Option<MediaDescription> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let media = fields.next()?;
    let port = fields.next()?.split('/').next()?.parse::<u16>().ok()?;
    let proto = fields.next()?;
    let mut formats = String::new();
    for f in fields {
        if !formats.is_empty() {
            formats.push(' ');
        }
        formats.push_str(f);
    }
    if formats.is_empty() {
        return None;
    }
    Some(MediaDescription {
        media: media.to_owned(),
        port,
        proto: proto.to_owned(),
        formats,
        connection: None,
        direction: None,
        ptime_ms: None,
        rtcp: None,
        rtpmaps: Vec::new(),
    })
}

/// RFC 8866 §9: no NUL, no CR but before LF, no other control character but HTAB.
fn check_bytes(text: &[u8]) -> Result<(), SdpError> {
    let mut line = 1;
    for (i, &b) in text.iter().enumerate() {
        match b {
            b'\n' => line += 1,
            b'\r' if text.get(i + 1) != Some(&b'\n') => return Err(SdpError::BareCr { line }),
            b'\t' | b'\r' => {}
            0..=0x1f | 0x7f => return Err(SdpError::ControlCharacter { line }),
            _ => {}
        }
    }
    Ok(())
}

/// `c=IN <addrtype> <address>[/ttl[/count]]` (RFC 8866 §5.7). `None` when malformed: not IN,
/// missing or extra fields, a non-numeric suffix, or an address that fits neither its type
/// nor a host name.
fn parse_connection(value: &[u8]) -> Option<ConnectionAddress> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let (nettype, addrtype, address) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || !nettype.eq_ignore_ascii_case("IN") {
        return None;
    }
    let mut parts = address.split('/');
    let host = parts.next()?;
    let mut suffixes = 0;
    for part in parts {
        suffixes += 1;
        if suffixes > 2 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let ip = if addrtype.eq_ignore_ascii_case("IP4") {
        host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else if addrtype.eq_ignore_ascii_case("IP6") {
        // Brackets are not SDP syntax, but some peers write them; tolerated.
        let bare = host
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(host);
        bare.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        return (token(addrtype) && token(host)).then(|| ConnectionAddress::OtherType {
            addrtype: addrtype.to_owned(),
            address: host.to_owned(),
        });
    };
    match ip {
        Some(ip) => Some(ConnectionAddress::Ip(ip)),
        None if is_host_name(host) => Some(ConnectionAddress::Host(host.to_owned())),
        None => None,
    }
}

/// A host name (RFC 8866 §9 FQDN, RFC 1123 §2.1): dot-separated labels of letters, digits and
/// inner hyphens, at least 4 characters, and a last label that is not all digits — so
/// `999.1.1.1` or `1.2.3.4` (under IP6) is a bad address, not a name.
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let last_alpha = name
        .rsplit('.')
        .next()
        .is_some_and(|label| label.bytes().any(|b| b.is_ascii_alphabetic()));
    (4..=253).contains(&host.len()) && labels_ok && last_alpha
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`
fn parse_origin(text: &str) -> Option<Origin> {
    let mut fields = text.split_ascii_whitespace();
    let username = fields.next()?;
    let session_id = fields.next()?;
    let session_version = fields.next()?.parse::<u64>().ok()?;
    Some(Origin {
        username: username.to_owned(),
        session_id: session_id.to_owned(),
        session_version,
    })
}

/// `t=<start> <stop>`
fn parse_timing(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace();
    let start = fields.next()?.parse().ok()?;
    let stop = fields.next()?.parse().ok()?;
    Some((start, stop))
}

/// Applies one `a=` line to the current m= section, or to the session before the first m=.
/// Unknown and malformed attributes are ignored.
fn apply_attribute(sd: &mut SessionDescription, attr: &str) {
    let (name, value) = match attr.split_once(':') {
        Some((n, v)) => (n.trim(), v.trim()),
        None => (attr.trim(), ""),
    };
    if let Some(direction) = Direction::from_attr(name) {
        match sd.media.last_mut() {
            Some(m) => m.direction = Some(direction),
            None => sd.direction = Some(direction),
        }
    } else if name.eq_ignore_ascii_case("ptime") {
        let ptime = parse_ptime(value);
        match sd.media.last_mut() {
            Some(m) => m.ptime_ms = ptime.or(m.ptime_ms),
            None => sd.ptime_ms = ptime.or(sd.ptime_ms),
        }
    } else if let Some(m) = sd.media.last_mut() {
        if name.eq_ignore_ascii_case("rtpmap") {
            if let Some(map) = parse_rtpmap(value) {
                m.rtpmaps.push(map);
            }
        } else if name.eq_ignore_ascii_case("rtcp") {
            m.rtcp = parse_rtcp(value).or(m.rtcp);
        }
    }
}

/// `a=ptime:<ms>`; a fractional value ("20.0") is cut to whole milliseconds.
fn parse_ptime(value: &str) -> Option<u32> {
    value.split('.').next()?.parse().ok()
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`
fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    let payload_type = pt.parse::<u8>().ok().filter(|pt| *pt <= 127)?;
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.trim().parse::<u32>().ok()?;
    let channels = match parts.next() {
        Some(ch) => Some(ch.trim().parse::<u8>().ok()?),
        None => None,
    };
    Some(RtpMap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

/// `a=rtcp:<port> [IN <IP4|IP6> <address>]` (RFC 3605 §2.1)
fn parse_rtcp(value: &str) -> Option<RtcpAttr> {
    let mut fields = value.split_ascii_whitespace();
    let port = fields.next()?.parse::<u16>().ok()?;
    let addr = match (fields.next(), fields.next(), fields.next()) {
        (Some(net), Some(_), Some(a)) if net.eq_ignore_ascii_case("IN") => a.parse().ok(),
        _ => None,
    };
    Some(RtcpAttr { port, addr })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn local() -> LocalMedia {
        LocalMedia {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            port: 40000,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            session_id: 1234,
            session_version: 1,
            direction: Direction::SendRecv,
        }
    }

    fn sdp(body: &str) -> SessionDescription {
        SessionDescription::parse(body.as_bytes()).unwrap()
    }

    fn audio_offer(formats: &str, extra: &str) -> SessionDescription {
        sdp(&format!(
            "v=0\r\no=alice 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n\
             t=0 0\r\nm=audio 49170 RTP/AVP {formats}\r\n{extra}"
        ))
    }

    fn m_lines(text: &str) -> Vec<&str> {
        text.split("\r\n").filter(|l| l.starts_with("m=")).collect()
    }

    /// RFC 5118 §4.6 body (testdata/sip-rfc5118/ipv6-in-sdp.dat).
    const RFC5118_IPV6_IN_SDP: &str = "v=0\r\n\
        o=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\n\
        s=Live video feed for today's meeting\r\n\
        c=IN IP6 2001:db8::20\r\n\
        t=3338481189 3370017201\r\n\
        m=audio 6000 RTP/AVP 2\r\n\
        a=rtpmap:2 G726-32/8000\r\n\
        m=video 6024 RTP/AVP 107\r\n\
        a=rtpmap:107 H263-1998/90000\r\n";

    /// RFC 5118 §4.8 body (testdata/sip-rfc5118/mult-ip-in-sdp.dat).
    const RFC5118_MULT_IP_IN_SDP: &str = "v=0\r\n\
        o=bob 280744730 28977631 IN IP4 host.example.com\r\n\
        s=\r\n\
        t=0 0\r\n\
        m=audio 22334 RTP/AVP 0\r\n\
        c=IN IP4 192.0.2.1\r\n\
        m=video 6024 RTP/AVP 107\r\n\
        c=IN IP6 2001:db8::1\r\n\
        a=rtpmap:107 H263-1998/90000\r\n";

    #[test]
    fn parses_session_and_media_fields() {
        let sd = audio_offer(
            "0 8 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:30\r\n\
             a=rtcp:53020 IN IP4 198.51.100.2\r\na=x-unknown\r\n",
        );
        assert_eq!(
            sd.origin,
            Some(Origin {
                username: "alice".into(),
                session_id: "1".into(),
                session_version: 1
            })
        );
        assert_eq!(sd.timing, Some((0, 0)));
        let m = sd.media.first().unwrap();
        assert_eq!(
            (m.media.as_str(), m.port, m.proto.as_str()),
            ("audio", 49170, "RTP/AVP")
        );
        assert_eq!(m.payload_types().collect::<Vec<_>>(), vec![0, 8, 101]);
        assert_eq!(m.telephone_event_pt(), Some(101));
        assert_eq!(m.ptime_ms, Some(30));
        assert_eq!(
            m.rtcp,
            Some(RtcpAttr {
                port: 53020,
                addr: Some("198.51.100.2".parse().unwrap())
            })
        );
    }

    #[test]
    fn pcmu_first_offer_chooses_pcmu() {
        let (text, n) = answer(&audio_offer("0 8", ""), &local()).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(m_lines(&text), vec!["m=audio 40000 RTP/AVP 0"]);
        assert!(text.contains("a=rtpmap:0 PCMU/8000\r\n"));
    }

    #[test]
    fn pcma_first_offer_chooses_pcma_the_callers_preference() {
        let (text, n) = answer(&audio_offer("8 0", ""), &local()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(m_lines(&text), vec!["m=audio 40000 RTP/AVP 8"]);
    }

    #[test]
    fn codec_we_do_not_allow_is_skipped() {
        let mut l = local();
        l.codecs = vec![Codec::Pcma];
        let (_, n) = answer(&audio_offer("0 8", ""), &l).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
    }

    #[test]
    fn g729_only_offer_is_no_common_codec() {
        let offer = audio_offer("18", "a=rtpmap:18 G729/8000\r\n");
        assert_eq!(answer(&offer, &local()), Err(AnswerError::NoCommonCodec));
    }

    #[test]
    fn offer_without_audio_is_no_audio() {
        let offer = sdp("v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n");
        assert_eq!(answer(&offer, &local()), Err(AnswerError::NoAudio));
        let srtp = sdp("v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 5000 RTP/SAVP 0\r\n");
        assert_eq!(answer(&srtp, &local()), Err(AnswerError::NoAudio));
    }

    #[test]
    fn answer_echoes_telephone_event_pt_101_with_fmtp() {
        let offer = audio_offer(
            "0 101",
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
        );
        let (text, n) = answer(&offer, &local()).unwrap();
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(m_lines(&text), vec!["m=audio 40000 RTP/AVP 0 101"]);
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=fmtp:101 0-16\r\n"));
    }

    #[test]
    fn answer_echoes_telephone_event_pt_96() {
        let offer = audio_offer(
            "8 96 97",
            "a=rtpmap:97 telephone-event/48000\r\na=rtpmap:96 TELEPHONE-EVENT/8000\r\n",
        );
        let (text, n) = answer(&offer, &local()).unwrap();
        assert_eq!(n.dtmf_pt, Some(96));
        assert_eq!(m_lines(&text), vec!["m=audio 40000 RTP/AVP 8 96"]);
        assert!(text.contains("a=fmtp:96 0-16\r\n"));
    }

    #[test]
    fn no_telephone_event_in_offer_means_no_dtmf_pt() {
        let (text, n) = answer(&audio_offer("0 101", ""), &local()).unwrap();
        assert_eq!(n.dtmf_pt, None);
        assert!(!text.contains("telephone-event"));
    }

    #[test]
    fn audio_and_video_offer_gets_two_m_lines_with_video_rejected() {
        let offer = audio_offer(
            "0",
            "m=video 51372 RTP/AVP 31 32\r\na=rtpmap:31 H261/90000\r\n",
        );
        let (text, _) = answer(&offer, &local()).unwrap();
        assert_eq!(
            m_lines(&text),
            vec!["m=audio 40000 RTP/AVP 0", "m=video 0 RTP/AVP 31 32"]
        );
    }

    #[test]
    fn only_first_usable_audio_stream_is_accepted_in_order() {
        let offer = sdp("v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n\
             m=video 5000 RTP/AVP 96\r\n\
             m=audio 0 RTP/AVP 0\r\n\
             m=audio 6000 RTP/AVP 18\r\n\
             m=audio 7000 RTP/AVP 8\r\n\
             m=audio 8000 RTP/AVP 0\r\n");
        let (text, n) = answer(&offer, &local()).unwrap();
        assert_eq!(
            m_lines(&text),
            vec![
                "m=video 0 RTP/AVP 96",
                "m=audio 0 RTP/AVP 0",
                "m=audio 0 RTP/AVP 18",
                "m=audio 40000 RTP/AVP 8",
                "m=audio 0 RTP/AVP 0",
            ]
        );
        assert_eq!(n.remote_rtp, Some("198.51.100.1:7000".parse().unwrap()));
    }

    #[test]
    fn answer_repeats_offer_timing_and_is_crlf_terminated() {
        let offer = sdp(RFC5118_MULT_IP_IN_SDP);
        let (text, _) = answer(&offer, &local()).unwrap();
        assert!(text.starts_with("v=0\r\no=earshot 1234 1 IN IP4 192.0.2.10\r\ns=-\r\n"));
        assert!(text.contains("c=IN IP4 192.0.2.10\r\nt=0 0\r\n"));
        assert!(text.ends_with("\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'));
        let reparsed = SessionDescription::parse(text.as_bytes()).unwrap();
        assert_eq!(reparsed.media.len(), 2);
    }

    #[test]
    fn sendrecv_offer_negotiates_both_ways_with_rtcp_on_port_plus_one() {
        let (text, n) = answer(&audio_offer("0", ""), &local()).unwrap();
        assert_eq!(n.remote_rtp, Some("198.51.100.1:49170".parse().unwrap()));
        assert_eq!(n.remote_rtcp, Some("198.51.100.1:49171".parse().unwrap()));
        assert_eq!(n.remote_direction, Direction::SendRecv);
        assert_eq!(n.local_direction, Direction::SendRecv);
        assert_eq!(n.ptime_ms, 20);
        assert!(text.contains("a=sendrecv\r\n"));
    }

    #[test]
    fn a_rtcp_overrides_port_plus_one() {
        let offer = audio_offer("0", "a=rtcp:50000\r\n");
        let (_, n) = answer(&offer, &local()).unwrap();
        assert_eq!(n.remote_rtcp, Some("198.51.100.1:50000".parse().unwrap()));
    }

    #[test]
    fn sendonly_offer_is_hold_and_answered_recvonly() {
        let (text, n) = answer(&audio_offer("0", "a=sendonly\r\n"), &local()).unwrap();
        assert_eq!(n.remote_direction, Direction::SendOnly);
        assert_eq!(n.local_direction, Direction::RecvOnly);
        assert!(text.contains("a=recvonly\r\n"));
    }

    #[test]
    fn inactive_offer_is_answered_inactive() {
        let (text, n) = answer(&audio_offer("0", "a=inactive\r\n"), &local()).unwrap();
        assert_eq!(n.remote_direction, Direction::Inactive);
        assert_eq!(n.local_direction, Direction::Inactive);
        assert!(text.contains("a=inactive\r\n"));
    }

    #[test]
    fn session_level_direction_applies_unless_media_overrides() {
        let offer = sdp("v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\na=sendonly\r\n\
             m=audio 5000 RTP/AVP 0\r\nm=audio 6000 RTP/AVP 0\r\na=recvonly\r\n");
        assert_eq!(offer.direction, Some(Direction::SendOnly));
        assert_eq!(
            offer.media.get(1).unwrap().direction,
            Some(Direction::RecvOnly)
        );
        let (_, n) = answer(&offer, &local()).unwrap();
        assert_eq!(n.remote_direction, Direction::SendOnly);
    }

    #[test]
    fn rfc2543_hold_with_c_0_0_0_0_has_no_remote_address() {
        let offer = sdp("v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n");
        let (text, n) = answer(&offer, &local()).unwrap();
        assert_eq!(n.remote_rtp, None);
        assert_eq!(n.remote_rtcp, None);
        assert_eq!(n.remote_direction, Direction::SendOnly);
        assert_eq!(n.local_direction, Direction::RecvOnly);
        assert!(text.contains("a=recvonly\r\n"));
    }

    #[test]
    fn resume_after_hold_is_sendrecv_again() {
        let held = answer(&audio_offer("0", "a=sendonly\r\n"), &local())
            .unwrap()
            .1;
        let resumed = answer(&audio_offer("0", "a=sendrecv\r\n"), &local())
            .unwrap()
            .1;
        assert_eq!(held.local_direction, Direction::RecvOnly);
        assert_eq!(resumed.local_direction, Direction::SendRecv);
        assert_eq!(
            resumed.remote_rtp,
            Some("198.51.100.1:49170".parse().unwrap())
        );
    }

    #[test]
    fn we_put_the_peer_on_hold_with_sendonly() {
        let mut l = local();
        l.direction = Direction::SendOnly;
        let (text, n) = answer(&audio_offer("0", ""), &l).unwrap();
        assert_eq!(n.local_direction, Direction::SendOnly);
        assert!(text.contains("a=sendonly\r\n"));
    }

    #[test]
    fn ipv6_connection_is_used_for_remote_rtp() {
        let offer = sdp("v=0\r\nc=IN IP6 2001:db8::5\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n");
        let mut l = local();
        l.addr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
        let (text, n) = answer(&offer, &l).unwrap();
        assert_eq!(n.remote_rtp, Some("[2001:db8::5]:5004".parse().unwrap()));
        assert!(text.contains("o=earshot 1234 1 IN IP6 2001:db8::10\r\n"));
        assert!(text.contains("c=IN IP6 2001:db8::10\r\n"));
    }

    #[test]
    fn rfc5118_ipv6_in_sdp_parses_and_g726_only_is_no_common_codec() {
        let sd = sdp(RFC5118_IPV6_IN_SDP);
        assert_eq!(
            sd.connection,
            Some(ConnectionAddress::Ip("2001:db8::20".parse().unwrap()))
        );
        assert_eq!(sd.timing, Some((3338481189, 3370017201)));
        assert_eq!(sd.media.len(), 2);
        assert_eq!(answer(&sd, &local()), Err(AnswerError::NoCommonCodec));

        let with_pcmu = RFC5118_IPV6_IN_SDP.replace("RTP/AVP 2", "RTP/AVP 2 0");
        let (text, n) = answer(&sdp(&with_pcmu), &local()).unwrap();
        assert_eq!(n.remote_rtp, Some("[2001:db8::20]:6000".parse().unwrap()));
        assert!(text.contains("t=3338481189 3370017201\r\n"));
        assert_eq!(
            m_lines(&text),
            vec!["m=audio 40000 RTP/AVP 0", "m=video 0 RTP/AVP 107"]
        );
    }

    #[test]
    fn rfc5118_mult_ip_in_sdp_uses_media_level_connections() {
        let sd = sdp(RFC5118_MULT_IP_IN_SDP);
        assert_eq!(sd.connection, None);
        assert_eq!(
            sd.media.get(1).unwrap().connection,
            Some(ConnectionAddress::Ip("2001:db8::1".parse().unwrap()))
        );
        let (text, n) = answer(&sd, &local()).unwrap();
        assert_eq!(n.remote_rtp, Some("192.0.2.1:22334".parse().unwrap()));
        assert_eq!(
            m_lines(&text),
            vec!["m=audio 40000 RTP/AVP 0", "m=video 0 RTP/AVP 107"]
        );
    }

    #[test]
    fn lf_only_and_odd_whitespace_are_tolerated() {
        let sd = sdp("\nv=0\no=- 7 8 IN IP4 h\ns=x\nc=IN IP4 203.0.113.9/127\n\n\
             t=0 0\nm=audio  4000/2  RTP/AVP  8   0 \nz=ignored\na=ptime:20.0\n");
        let m = sd.media.first().unwrap();
        assert_eq!(m.port, 4000);
        assert_eq!(m.formats, "8 0");
        assert_eq!(m.ptime_ms, Some(20));
        assert_eq!(
            sd.connection,
            Some(ConnectionAddress::Ip("203.0.113.9".parse().unwrap()))
        );
    }

    #[test]
    fn host_names_and_other_unusable_addresses_are_refused_by_the_answer() {
        for c in [
            "c=IN IP4 media.example.com",
            "c=IN IP6 media.example.com.",
            "c=IN ATM NSAP-47.0091",
            "c=IN IP4 224.2.1.1/127",
            "c=IN IP4 255.255.255.255",
            "c=IN IP6 ff0e::101",
        ] {
            let offer = sdp(&format!(
                "v=0\r\n{c}\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n"
            ));
            assert_eq!(
                answer(&offer, &local()).map(|(_, n)| n),
                Err(AnswerError::UnusableAddress),
                "{c}"
            );
            assert_eq!(
                negotiate_answer(&offer, &local()),
                Err(AnswerError::UnusableAddress),
                "{c}"
            );
        }
        let offer = sdp("v=0\r\nc=IN IP4 media.example.com\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n");
        assert_eq!(
            offer.connection,
            Some(ConnectionAddress::Host("media.example.com".into()))
        );
    }

    #[test]
    fn connection_addresses_must_match_their_type() {
        let parse = |c: &str| {
            SessionDescription::parse(
                format!("v=0\r\n{c}\r\nm=audio 5000 RTP/AVP 0\r\n").as_bytes(),
            )
        };
        for bad in [
            "c=IN IP4 999.1.1.1",
            "c=IN IP4 ;;;",
            "c=IN IP6 1.2.3.4",
            "c=IN IP4 ::1",
            "c=IN IP4 [192.0.2.1]",
            "c=IN IP4 192.0.2.1/x",
            "c=IN IP4 192.0.2.1/1/2/3",
            "c=IN IP4 192.0.2.1 extra",
            "c=IN IP4 -bad-.example.com",
            "c=IN IP4 a..b",
            "c=IN IP4",
            "c=ATM NSAP 47.0091",
        ] {
            assert_eq!(
                parse(bad),
                Err(SdpError::BadConnection { line: 2 }),
                "{bad}"
            );
        }
        for good in [
            "c=IN IP4 192.0.2.1",
            "c=IN IP4 0.0.0.0",
            "c=IN IP4 224.2.1.1/127/3",
            "c=IN IP6 2001:db8::1",
            "c=IN IP6 [2001:db8::1]",
            "c=in ip4 host.example.com",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            SessionDescription::parse(
                b"v=0\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n"
            ),
            Err(SdpError::MissingConnection { line: 3 })
        );
        // A rejected stream needs no address.
        assert!(SessionDescription::parse(b"v=0\r\nm=audio 0 RTP/AVP 0\r\n").is_ok());
    }

    #[test]
    fn control_characters_and_bare_cr_are_malformed() {
        let body = |line: &[u8]| {
            let mut b = b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 5000 RTP/AVP 0\r\n".to_vec();
            b.extend_from_slice(line);
            SessionDescription::parse(&b)
        };
        assert_eq!(
            body(b"a=rtpmap:0 PCMU/8000\0AAAA\r\n"),
            Err(SdpError::ControlCharacter { line: 4 })
        );
        assert_eq!(
            body(b"a=tool:\x1b[2J\r\n"),
            Err(SdpError::ControlCharacter { line: 4 })
        );
        assert_eq!(body(b"a=sendrecv\r"), Err(SdpError::BareCr { line: 4 }));
        assert_eq!(
            body(b"a=sendrecv\ra=inactive\r\n"),
            Err(SdpError::BareCr { line: 4 })
        );
        assert!(body(b"a=tool:\tx\r\n").is_ok());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let parse = |s: &str| SessionDescription::parse(s.as_bytes());
        assert_eq!(parse(""), Err(SdpError::NotSdp));
        assert_eq!(parse("o=x\r\n"), Err(SdpError::NotSdp));
        assert_eq!(parse("v=1\r\n"), Err(SdpError::UnsupportedVersion));
        assert_eq!(
            parse("v=0\r\nnonsense\r\n"),
            Err(SdpError::MalformedLine { line: 2 })
        );
        assert_eq!(
            parse("v=0\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::BadMedia { line: 2 })
        );
        assert_eq!(
            parse("v=0\r\nm=audio 5000 RTP/AVP\r\n"),
            Err(SdpError::BadMedia { line: 2 })
        );
        assert_eq!(
            parse("v=0\r\nc=IN IP4\r\n"),
            Err(SdpError::BadConnection { line: 2 })
        );
        let many = format!("v=0\r\n{}", "m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1));
        assert_eq!(parse(&many), Err(SdpError::TooManyMedia));
    }

    #[test]
    fn offer_lists_our_codecs_then_telephone_event() {
        let text = offer(&local());
        assert_eq!(m_lines(&text), vec!["m=audio 40000 RTP/AVP 0 8 101"]);
        for expected in [
            "a=rtpmap:0 PCMU/8000\r\n",
            "a=rtpmap:8 PCMA/8000\r\n",
            "a=rtpmap:101 telephone-event/8000\r\n",
            "a=fmtp:101 0-16\r\n",
            "a=ptime:20\r\n",
            "a=sendrecv\r\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }

    #[test]
    fn our_offer_answered_by_ourselves_round_trips() {
        let ours = sdp(&offer(&local()));
        let mut peer = local();
        peer.addr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        peer.port = 30000;
        peer.codecs = vec![Codec::Pcma];
        let (text, peer_view) = answer(&ours, &peer).unwrap();
        assert_eq!(peer_view.codec, Codec::Pcma);
        let n = negotiate_answer(&sdp(&text), &local()).unwrap();
        assert_eq!(n.codec, Codec::Pcma);
        assert_eq!(n.dtmf_pt, Some(101));
        assert_eq!(n.remote_rtp, Some("198.51.100.7:30000".parse().unwrap()));
        assert_eq!(n.local_direction, Direction::SendRecv);
    }

    #[test]
    fn rejected_answer_is_no_audio_and_foreign_codec_is_no_common_codec() {
        let rejected = sdp("v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n");
        assert_eq!(
            negotiate_answer(&rejected, &local()),
            Err(AnswerError::NoAudio)
        );
        let g729 = sdp("v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 5 RTP/AVP 18\r\n");
        assert_eq!(
            negotiate_answer(&g729, &local()),
            Err(AnswerError::NoCommonCodec)
        );
    }

    #[test]
    fn recvonly_answer_to_our_offer_means_we_only_send() {
        let a =
            sdp("v=0\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\na=recvonly\r\n");
        let n = negotiate_answer(&a, &local()).unwrap();
        assert_eq!(n.local_direction, Direction::SendOnly);
    }

    #[test]
    fn direction_answer_mirrors_send_and_receive() {
        assert_eq!(Direction::SendOnly.answer(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.answer(), Direction::SendOnly);
        assert_eq!(Direction::SendRecv.answer(), Direction::SendRecv);
        assert_eq!(Direction::Inactive.answer(), Direction::Inactive);
    }

    /// Every offer is parsed, answered and negotiated; whatever the bytes, nothing panics and
    /// every answer we produce parses again with one m= line per offered one.
    /// Returns whether an answer was produced, so the loop can check it reached that far.
    fn exercise(bytes: &[u8]) -> bool {
        let Ok(sd) = SessionDescription::parse(bytes) else {
            return false;
        };
        let _ = negotiate_answer(&sd, &local());
        let Ok((text, _)) = answer(&sd, &local()) else {
            return false;
        };
        let again = SessionDescription::parse(text.as_bytes()).unwrap();
        assert_eq!(again.media.len(), sd.media.len());
        true
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5d9);
        let seeds = [
            RFC5118_IPV6_IN_SDP.as_bytes().to_vec(),
            RFC5118_MULT_IP_IN_SDP.as_bytes().to_vec(),
            offer(&local()).into_bytes(),
        ];
        let vocabulary: &[&[u8]] = &[
            b"v=0",
            b"m=audio 0 RTP/AVP 0",
            b"m=audio 65535 RTP/AVP 0 8 101",
            b"c=IN IP4 0.0.0.0",
            b"c=IN IP6 ::",
            b"c=IN IP4 192.0.2.1",
            b"c=IN",
            b"a=rtpmap:101 telephone-event/8000",
            b"a=rtpmap:",
            b"a=rtcp:",
            b"a=rtcp:65535 IN IP6 ::1",
            b"a=ptime:4294967296",
            b"a=sendonly",
            b"t=1",
            b"o=",
            b"m=",
            b"\xff\xfe=\xc3",
            b"a=\xff",
        ];
        let mut answered = 0;
        for round in 0..4000 {
            let mut bytes = match round % 3 {
                0 => (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect::<Vec<u8>>(),
                1 => {
                    let mut b = b"v=0\r\n".to_vec();
                    for _ in 0..rng.random_range(0..12) {
                        let pick = rng.random_range(0..vocabulary.len());
                        b.extend_from_slice(vocabulary.get(pick).unwrap());
                        b.extend_from_slice(if rng.random() { b"\r\n" } else { b"\n" });
                    }
                    b
                }
                _ => seeds.get(rng.random_range(0..seeds.len())).unwrap().clone(),
            };
            for _ in 0..rng.random_range(0..8) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => *bytes.get_mut(at).unwrap() = rng.random(),
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, rng.random()),
                }
            }
            answered += usize::from(exercise(&bytes));
        }
        assert!(
            answered > 200,
            "only {answered} inputs got as far as an answer"
        );
    }
}
