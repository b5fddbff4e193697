//! Network value types of the configuration: [`Cidr`] (`[sip].allow`), [`PortRange`]
//! (`[rtp].ports`) and [`HostPort`] (`[sip].public_addr`, trunk registrars), with the host-name
//! and socket-address checks the sections share.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address with its host bits clear, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address; host bits are always zero (checked at construction).
    addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

/// Why a string is not a [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("not an IP address")]
    BadAddress,
    /// The part after `/` is not a number.
    #[error("prefix is not a number")]
    BadPrefix,
    /// The prefix is longer than the address.
    #[error("prefix longer than {max}")]
    PrefixTooLong {
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits beyond the prefix are set, which usually means a mistyped network.
    #[error("host bits set; did you mean {network}?")]
    HostBitsSet {
        /// The network with the host bits cleared.
        network: String,
    },
}

impl Cidr {
    /// `127.0.0.0/8`, the IPv4 loopback network.
    pub(super) const LOOPBACK_V4: Cidr = Cidr {
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };

    /// `::1/128`, the IPv6 loopback address.
    pub(super) const LOOPBACK_V6: Cidr = Cidr {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// The network `addr/prefix`; fails when the prefix is too long or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong { max });
        }
        let network = mask(addr, prefix);
        if network != addr {
            return Err(CidrError::HostBitsSet {
                network: Cidr {
                    addr: network,
                    prefix,
                }
                .to_string(),
            });
        }
        Ok(Cidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports for IPv4 peers) match IPv4 networks and vice versa.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip.to_canonical()) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (_, ip) => ip,
        };
        let same_family = self.addr.is_ipv4() == ip.is_ipv4();
        same_family && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `addr/prefix`; a bare address is a single host (/32 or /128).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress)?;
        let prefix = match prefix {
            None => max_prefix(addr),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                // More digits than fit in a u8 are certainly too long, not "not a number".
                p.parse().unwrap_or(u8::MAX)
            }
            Some(_) => return Err(CidrError::BadPrefix),
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// 32 for IPv4, 128 for IPv6.
fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit past `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

/// An inclusive UDP port range for media, starting on an even port so RTP/RTCP pairs line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port (even, at least 1024).
    pub start: u16,
    /// Last port, inclusive.
    pub end: u16,
}

impl PortRange {
    /// How many RTP/RTCP pairs (one per call) fit in the range.
    pub fn pairs(&self) -> usize {
        let ports = usize::from(self.end) - usize::from(self.start) + 1;
        // An odd last port has no RTCP partner and is left unused.
        ports / 2
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// Parses `START-END`.
    fn from_str(s: &str) -> Result<PortRange, String> {
        let (start, end) = s.split_once('-').ok_or_else(|| {
            format!("{s:?} is not a port range (expected START-END, e.g. \"10000-20000\")")
        })?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{s:?} is not a port range ({:?} is not a port)", p.trim()))
        };
        let (start, end) = (port(start)?, port(end)?);
        if start < 1024 {
            return Err(format!("{s:?} starts below 1024 (privileged ports)"));
        }
        if start % 2 != 0 {
            return Err(format!(
                "{s:?} must start on an even port (RTP even, RTCP odd)"
            ));
        }
        if end <= start {
            return Err(format!(
                "{s:?} must hold at least 2 ports (one RTP/RTCP pair)"
            ));
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A host (IP address or DNS name) with an optional port: `pbx.example.com:5080`,
/// `203.0.113.7`, `[2001:db8::1]:5060`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// IP literal (IPv6 without brackets) or DNS name.
    pub host: String,
    /// Port, when one was given; SIP's default (5060) applies otherwise.
    pub port: Option<u16>,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPort, String> {
        let bad = |why: &str| format!("{s:?} is not host[:port] ({why})");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address inside [ ]"));
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| bad("junk after ']'"))?,
                    ),
                ),
            }
        } else if s.parse::<Ipv6Addr>().is_ok() {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        check_host(host).map_err(|why| bad(&why))?;
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => Some(p),
                _ => return Err(bad(&format!("bad port {p:?}"))),
            },
        };
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Checks that `host` is an IP literal or a well-formed DNS name (RFC 1123 labels).
pub(super) fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if host.is_empty() || host.len() > 253 {
        return Err("host name must be 1 to 253 characters".to_owned());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(format!("{host:?} is not a valid host name"));
        }
    }
    Ok(())
}

/// `IP:PORT`, for the `listen` keys.
pub(super) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an address (expected IP:PORT, e.g. \"0.0.0.0:5060\")"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_networks_and_bare_addresses() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!((net.addr(), net.prefix()), ("10.0.0.0".parse().unwrap(), 8));
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix(), 32);
        assert_eq!("2001:db8::1".parse::<Cidr>().unwrap().prefix(), 128);
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn cidr_rejects_bad_input_with_a_reason() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { max: 32 })
        );
        assert_eq!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { max: 128 })
        );
        assert_eq!(
            "10.0.0.0/999".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { max: 32 })
        );
        assert_eq!("10.0.0/8".parse::<Cidr>(), Err(CidrError::BadAddress));
        assert_eq!("10.0.0.0/".parse::<Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!("10.0.0.0/-1".parse::<Cidr>(), Err(CidrError::BadPrefix));
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>(),
            Err(CidrError::HostBitsSet {
                network: "10.0.0.0/8".to_owned()
            })
        );
    }

    #[test]
    fn cidr_contains_checks_the_prefix() {
        let net: Cidr = "192.168.1.0/24".parse().unwrap();
        assert!(net.contains("192.168.1.0".parse().unwrap()));
        assert!(net.contains("192.168.1.255".parse().unwrap()));
        assert!(!net.contains("192.168.2.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn cidr_matches_ipv4_mapped_ipv6_addresses() {
        let v4: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(v4.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!v4.contains("::ffff:10.0.0.1".parse().unwrap()));
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains("10.1.2.3".parse().unwrap()));
        assert!(mapped.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!mapped.contains("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn host_port_forms() {
        let hp = |s: &str| s.parse::<HostPort>();
        assert_eq!(
            hp("203.0.113.7").unwrap(),
            HostPort {
                host: "203.0.113.7".into(),
                port: None
            }
        );
        assert_eq!(hp("pbx.example.com:5080").unwrap().port, Some(5080));
        assert_eq!(hp("2001:db8::1").unwrap().host, "2001:db8::1");
        assert_eq!(
            hp("[2001:db8::1]:5060").unwrap().to_string(),
            "[2001:db8::1]:5060"
        );
        for bad in [
            "",
            "host:",
            "host:0",
            "host:99999",
            "bad_host",
            "-x.com",
            "[::1",
            "[x]:5",
            "a..b",
        ] {
            assert!(hp(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_range_rules() {
        assert_eq!("10000-10001".parse::<PortRange>().unwrap().pairs(), 1);
        assert_eq!("10000-20000".parse::<PortRange>().unwrap().pairs(), 5000);
        for bad in [
            "10000",
            "10001-20000",
            "1000-2000",
            "10000-10000",
            "20000-10000",
            "a-b",
            "10000-70000",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
    }
}
