//! The Via header value (RFC 3261 §20.42, §18.2.1 `received`, RFC 3581 `rport`, RFC 5118 IPv6
//! `sent-by`) and the CSeq header value (RFC 3261 §20.16).

use std::fmt;

use super::uri::{
    find_param, is_token, parse_hostport, parse_params, set_param, write_host, write_params,
};
use super::{Fault, Method, ParseError};

/// One Via value: `SIP/2.0/UDP host:port;branch=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Uppercase: `UDP`, `TCP`, `TLS`, `SCTP`, `WS`... (unknown transports are kept).
    pub transport: String,
    /// The sent-by host; IPv6 without brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Parameters in order; values as received (quoted values keep their quotes).
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses one Via value. LWS is allowed around the slashes, the sent-by colon, `;` and `=`
    /// (RFC 3261 §25.1 `SLASH`, `COLON`, `SEMI`, `EQUAL`). Only `SIP/2.0` is accepted.
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        Self::parse_inner(s).ok_or(ParseError::Invalid(Fault::Via))
    }

    fn parse_inner(s: &str) -> Option<Via> {
        let (name, rest) = s.split_once('/')?;
        let (version, rest) = rest.split_once('/')?;
        if !name.trim().eq_ignore_ascii_case("SIP") || version.trim() != "2.0" {
            return None;
        }
        let rest = rest.trim_start();
        let transport_end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let transport = rest.get(..transport_end)?;
        if !is_token(transport) {
            return None;
        }
        let rest = rest.get(transport_end..)?;
        let (sent_by, params) = match rest.find(';') {
            Some(semi) => (rest.get(..semi)?, rest.get(semi..)?),
            None => (rest, ""),
        };
        let (host, port) = parse_hostport(sent_by)?;
        Some(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params: parse_params(params)?,
        })
    }

    /// A Via for `transport` from `host[:port]` with a `branch` parameter.
    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str) -> Via {
        Via {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
            params: vec![("branch".to_owned(), Some(branch.to_owned()))],
        }
    }

    /// The `branch` parameter (the transaction id when it starts with `z9hG4bK`, §17.2.3).
    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    /// The `received` parameter (§18.2.1), as received (an IPv6 address may be bracketed).
    pub fn received(&self) -> Option<&str> {
        find_param(&self.params, "received").flatten()
    }

    /// The `rport` parameter (RFC 3581): `Some(None)` when present without a value (the client
    /// asks for it), `Some(Some(port))` when filled in. A value that is not a port counts as
    /// absent value, `Some(None)`.
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// A parameter, looked up case-insensitively: `Some(None)` when present without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Sets (replacing) or adds a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} ", self.transport)?;
        write_host(f, &self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

/// The CSeq header: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// At most 2³²−1; a larger number is a parse error (RFC 4475 §3.1.2.4).
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let s = s.trim();
        let (seq, method) = s
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or(ParseError::Invalid(Fault::CSeq))?;
        let method = method.trim_start();
        let seq = super::headers::parse_decimal(seq).ok_or(ParseError::Invalid(Fault::CSeq))?;
        if !is_token(method) {
            return Err(ParseError::Invalid(Fault::CSeq));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn via_allows_lws_around_every_separator() {
        let via = Via::parse("SIP  /   2.0 /UDP    192.0.2.2 ;branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.host, "192.0.2.2");
        assert_eq!(via.port, None);
        assert_eq!(via.branch(), Some("z9hG4bK9ikj8"));
        let via = Via::parse("SIP/2.0/tcp host : 5061;rport;received=10.0.0.1").unwrap();
        assert_eq!(via.transport, "TCP");
        assert_eq!(via.port, Some(5061));
        assert_eq!(via.rport(), Some(None));
        assert_eq!(via.received(), Some("10.0.0.1"));
    }

    #[test]
    fn via_ipv6_sent_by_and_received_keep_their_meaning() {
        let via = Via::parse(
            "SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];branch=z9hG4bKas3",
        )
        .unwrap();
        assert_eq!(via.host, "2001:db8::9:1");
        assert_eq!(via.port, Some(6050));
        assert_eq!(via.received(), Some("[2001:db8::9:255]"));
        let via =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
                .unwrap();
        assert_eq!(via.received(), Some("2001:db8::9:255"));
        assert_eq!(
            via.to_string(),
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3"
        );
    }

    #[test]
    fn rport_and_received_are_filled_in_by_set_param() {
        let mut via = Via::new("udp", "10.0.0.2", Some(5060), "z9hG4bK1");
        via.set_param("rport", None);
        assert_eq!(via.rport(), Some(None));
        via.set_param("rport", Some("40000".into()));
        via.set_param("received", Some("198.51.100.7".into()));
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(
            via.to_string(),
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport=40000;received=198.51.100.7"
        );
        assert_eq!(Via::parse(&via.to_string()).unwrap(), via);
    }

    #[test]
    fn malformed_vias_are_rejected() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP",
            "SIP/2.0 192.0.2.1",
            "SIP/7.0/UDP host",
            "SIP/2.0/UDP host:port",
            "SIP/2.0/UDP 2001:db8::1",
            "SIP/2.0/UDP host;branch=",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn cseq_numbers_above_2_pow_32_minus_1_are_rejected() {
        assert_eq!(
            CSeq::parse("0009\t INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse("4294967295 BYE").unwrap().seq, u32::MAX);
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("-1 INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
    }
}
