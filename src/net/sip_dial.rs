//! Outbound calls in the SIP task: from a dial request (`POST /api/calls`) to the endpoint's
//! [`OutboundCall`] and the call task that carries it.
//!
//! The destination is checked against `[calls].outbound_allow` here, in the task that holds
//! the reloadable configuration, before anything is sent: a disallowed target places no
//! INVITE. A number goes through a trunk (the named one, else the first):
//! `sip:NUMBER@domain`, sent to the trunk's registrar with its credentials. A `sip:` URI goes
//! through the named trunk the same way, or else straight to its host, which must then be an IP
//! address (the SIP task never waits on DNS).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::call::CallHandle;
use crate::config::{CallsConfig, DialPattern, DialTarget, outbound_allowed};
use crate::sip::dialog::{Flow, Transport};
use crate::sip::endpoint::{OutboundCall, PlaceError, TrunkCredentials};
use crate::sip::message::Uri;
use crate::sip::registration::TrunkRegistration;
use crate::sip::sdp::LocalMedia;

/// A call to place, from the API.
#[derive(Debug)]
pub struct DialRequest {
    pub target: DialTarget,
    /// A `[[sip.trunk]]` name; the first trunk for a number when unset.
    pub trunk: Option<String>,
    /// The new call, once its INVITE is on the wire, or why there is none.
    pub reply: oneshot::Sender<Result<CallHandle, DialError>>,
}

/// Why no call was placed. No INVITE was sent for any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("the target is not allowed by [calls].outbound_allow")]
    NotAllowed,
    #[error("no [[sip.trunk]] is named {0:?}")]
    UnknownTrunk(String),
    #[error("a number is dialled through a trunk, and no [[sip.trunk]] is configured")]
    NoTrunk,
    #[error("a sip: URI called without a trunk must name an IP address")]
    NeedsAddress,
    #[error("no free RTP ports")]
    NoMediaPorts,
    #[error("cannot place the call: {0}")]
    Refused(PlaceError),
}

/// What placing calls needs from the configuration (reloadable).
#[derive(Debug, Clone, Default)]
pub struct DialPolicy {
    /// `[calls].outbound_allow`.
    pub allow: Vec<DialPattern>,
    /// The trunks, resolved.
    pub trunks: Vec<TrunkRegistration>,
    /// `[calls].ring_timeout_secs`: how long a placed call may ring before it is cancelled.
    pub ring_timeout: Duration,
    /// `[calls].max_redirects`.
    pub max_redirects: usize,
    /// `[calls].transfer_trunk`: bridged transfers to a number from a call that did not come
    /// in on a trunk.
    pub transfer_trunk: Option<String>,
}

impl DialPolicy {
    /// The policy of `[calls]`, with the resolved trunks.
    pub fn new(calls: &CallsConfig, trunks: Vec<TrunkRegistration>) -> Self {
        Self {
            allow: calls.outbound_allow.clone(),
            trunks,
            ring_timeout: Duration::from_secs(calls.ring_timeout_secs),
            max_redirects: calls.max_redirects,
            transfer_trunk: calls.transfer_trunk.clone(),
        }
    }

    /// Works out where a bridged transfer's far leg goes. A number goes through the trunk the
    /// call came in on (its INVITE came from that trunk's registrar address: `came_from`),
    /// else `[calls].transfer_trunk`, else the first trunk; a `sip:` URI goes as any call to
    /// it without a trunk.
    pub fn route_transfer(
        &self,
        target: &DialTarget,
        came_from: Option<SocketAddr>,
        advertised: SocketAddr,
    ) -> Result<Route, DialError> {
        let trunk = match target {
            DialTarget::Number(_) => came_from
                .and_then(|from| self.trunks.iter().find(|t| t.registrar.ip() == from.ip()))
                .map(|t| t.name.as_str())
                .or(self.transfer_trunk.as_deref()),
            DialTarget::Uri(_) => None,
        };
        self.route(target, trunk, advertised)
    }
}

/// Where a call goes, as decided from its request before any media is taken.
#[derive(Debug)]
pub struct Route {
    target: Uri,
    from: Uri,
    credentials: Option<TrunkCredentials>,
    next_hop: Flow,
    via_proxy: bool,
    /// The trunk's name, for the call's `placed` event.
    pub trunk: Option<String>,
    /// The called party, as routes and the call record name it: the number, or the URI's user.
    pub callee: String,
    /// Our user, as the call record names the caller.
    pub caller: String,
    ring_timeout: Duration,
    max_redirects: usize,
}

impl Route {
    /// The endpoint's call, with our media.
    pub fn into_call(self, media: LocalMedia) -> OutboundCall {
        OutboundCall {
            target: self.target,
            from: self.from,
            credentials: self.credentials,
            next_hop: self.next_hop,
            via_proxy: self.via_proxy,
            media,
            ring_timeout: self.ring_timeout,
            max_redirects: self.max_redirects,
            referred_by: None,
        }
    }
}

impl DialPolicy {
    /// Checks a request and works out where it goes; `advertised` is our SIP address.
    pub fn route(
        &self,
        target: &DialTarget,
        trunk: Option<&str>,
        advertised: SocketAddr,
    ) -> Result<Route, DialError> {
        if !outbound_allowed(&self.allow, target) {
            return Err(DialError::NotAllowed);
        }
        let trunk = match trunk {
            Some(name) => Some(
                self.trunks
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or_else(|| DialError::UnknownTrunk(name.to_string()))?,
            ),
            None => None,
        };
        match (target, trunk) {
            (DialTarget::Number(number), trunk) => {
                let trunk = trunk.or(self.trunks.first()).ok_or(DialError::NoTrunk)?;
                let uri = Uri::sip(Some(number), &trunk.domain, None);
                Ok(self.via_trunk(uri, trunk, number.clone()))
            }
            (DialTarget::Uri(text), Some(trunk)) => {
                let uri = Uri::parse(text).map_err(|_| DialError::NeedsAddress)?;
                let callee = uri.user.clone().unwrap_or_default();
                Ok(self.via_trunk(uri, trunk, callee))
            }
            (DialTarget::Uri(text), None) => {
                let uri = Uri::parse(text).map_err(|_| DialError::NeedsAddress)?;
                let ip = uri.host.parse().map_err(|_| DialError::NeedsAddress)?;
                let tcp = uri
                    .param("transport")
                    .flatten()
                    .is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
                let next_hop = Flow {
                    transport: if tcp {
                        Transport::Tcp(None)
                    } else {
                        Transport::Udp
                    },
                    remote: SocketAddr::new(ip, uri.port.unwrap_or(5060)),
                };
                let host = advertised.ip().to_string();
                Ok(Route {
                    callee: uri.user.clone().unwrap_or_default(),
                    target: uri,
                    from: Uri::sip(Some("earshot"), &host, Some(advertised.port())),
                    credentials: None,
                    next_hop,
                    via_proxy: false,
                    trunk: None,
                    caller: "earshot".into(),
                    ring_timeout: self.ring_timeout,
                    max_redirects: self.max_redirects,
                })
            }
        }
    }

    fn via_trunk(&self, target: Uri, trunk: &TrunkRegistration, callee: String) -> Route {
        Route {
            target,
            from: Uri::sip(Some(&trunk.username), &trunk.domain, None),
            credentials: Some(TrunkCredentials {
                username: trunk.auth_username.clone(),
                password: trunk.password.clone(),
            }),
            next_hop: Flow {
                transport: trunk.transport,
                remote: trunk.registrar,
            },
            via_proxy: true,
            trunk: Some(trunk.name.clone()),
            callee,
            caller: trunk.username.clone(),
            ring_timeout: self.ring_timeout,
            max_redirects: self.max_redirects,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn trunk(name: &str) -> TrunkRegistration {
        TrunkRegistration {
            name: name.into(),
            registrar: "192.0.2.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            domain: "trunk.example".into(),
            username: "alice".into(),
            auth_username: "alice-auth".into(),
            password: "secret".into(),
            expires: 300,
            contact_user: "earshot".into(),
        }
    }

    fn policy(allow: &[&str], trunks: &[&str]) -> DialPolicy {
        policy_with(allow, trunks, "")
    }

    /// The policy of a `[calls]` section with `allow` and the `extra` lines.
    fn policy_with(allow: &[&str], trunks: &[&str], extra: &str) -> DialPolicy {
        let toml = format!("[calls]\noutbound_allow = {allow:?}\n{extra}");
        let config = crate::config::Config::from_toml_str(&toml).unwrap();
        DialPolicy::new(&config.calls, trunks.iter().map(|n| trunk(n)).collect())
    }

    fn media() -> LocalMedia {
        LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            port: 40000,
            codecs: vec![crate::sip::sdp::Codec::Pcmu],
            session_id: 1,
            session_version: 1,
            direction: crate::sip::sdp::Direction::SendRecv,
        }
    }

    #[test]
    fn a_bridged_number_goes_through_the_trunk_the_call_came_in_on() {
        let mut p = policy(&["+4420*", "sip:*"], &["first", "second", "third"]);
        p.trunks[1].registrar = "203.0.113.2:5060".parse().unwrap();
        p.trunks[2].registrar = "203.0.113.3:5060".parse().unwrap();
        let number = DialTarget::parse("+442071234567").unwrap();
        let us = US.parse().unwrap();
        let via = |p: &DialPolicy, from: Option<&str>| {
            let from = from.map(|f| f.parse().unwrap());
            p.route_transfer(&number, from, us).unwrap().trunk
        };
        // From the second trunk's registrar (any port: TCP and some carriers send from others).
        assert_eq!(
            via(&p, Some("203.0.113.2:41000")).as_deref(),
            Some("second")
        );
        assert_eq!(via(&p, Some("203.0.113.3:5060")).as_deref(), Some("third"));
        // Not a trunk call: the first trunk, unless transfer_trunk names another.
        assert_eq!(
            via(&p, Some("198.51.100.99:5060")).as_deref(),
            Some("first")
        );
        assert_eq!(via(&p, None).as_deref(), Some("first"));
        p.transfer_trunk = Some("third".into());
        assert_eq!(
            via(&p, Some("198.51.100.99:5060")).as_deref(),
            Some("third")
        );
        assert_eq!(via(&p, Some("203.0.113.2:5060")).as_deref(), Some("second"));
        // A sip: URI still goes straight to its address.
        let uri = DialTarget::parse("sip:bob@192.0.2.7").unwrap();
        let route = p
            .route_transfer(&uri, Some("203.0.113.2:5060".parse().unwrap()), us)
            .unwrap();
        assert!(route.trunk.is_none());
        assert_eq!(route.next_hop.remote.to_string(), "192.0.2.7:5060");
        // And the allow-list still applies.
        let blocked = DialTarget::parse("+15551234567").unwrap();
        assert_eq!(
            p.route_transfer(&blocked, None, us).unwrap_err(),
            DialError::NotAllowed
        );
    }

    #[test]
    fn placed_calls_ring_and_redirect_as_configured() {
        let target = DialTarget::parse("+442071234567").unwrap();
        let call = policy(&["+4420*"], &["t"])
            .route(&target, None, US.parse().unwrap())
            .unwrap()
            .into_call(media());
        assert_eq!(call.ring_timeout, Duration::from_secs(60));
        assert_eq!(call.max_redirects, 3);
        let p = policy_with(
            &["+4420*", "sip:*"],
            &["t"],
            "ring_timeout_secs = 7\nmax_redirects = 0\n",
        );
        for (to, trunk) in [
            ("+442071234567", None),
            ("sip:bob@192.0.2.5", None),
            ("sip:bob@x.example", Some("t")),
        ] {
            let target = DialTarget::parse(to).unwrap();
            let call = p
                .route(&target, trunk, US.parse().unwrap())
                .unwrap()
                .into_call(media());
            assert_eq!(call.ring_timeout, Duration::from_secs(7), "{to}");
            assert_eq!(call.max_redirects, 0, "{to}");
        }
    }

    const US: &str = "198.51.100.7:5060";

    #[test]
    fn nothing_is_allowed_by_default() {
        let target = DialTarget::parse("+442071234567").unwrap();
        let err = policy(&[], &["a"])
            .route(&target, None, US.parse().unwrap())
            .unwrap_err();
        assert_eq!(err, DialError::NotAllowed);
    }

    #[test]
    fn a_number_goes_through_the_first_trunk_or_the_named_one() {
        let p = policy(&["+4420*"], &["first", "second"]);
        let target = DialTarget::parse("+442071234567").unwrap();
        let route = p.route(&target, None, US.parse().unwrap()).unwrap();
        assert_eq!(route.target.to_string(), "sip:+442071234567@trunk.example");
        assert_eq!(route.trunk.as_deref(), Some("first"));
        assert_eq!(route.credentials.unwrap().username, "alice-auth");
        assert_eq!(route.next_hop.remote.to_string(), "192.0.2.1:5060");
        let route = p
            .route(&target, Some("second"), US.parse().unwrap())
            .unwrap();
        assert_eq!(route.trunk.as_deref(), Some("second"));
        let err = p
            .route(&target, Some("third"), US.parse().unwrap())
            .unwrap_err();
        assert_eq!(err, DialError::UnknownTrunk("third".into()));
        let err = policy(&["+4420*"], &[])
            .route(&target, None, US.parse().unwrap())
            .unwrap_err();
        assert_eq!(err, DialError::NoTrunk);
    }

    #[test]
    fn a_sip_uri_goes_direct_to_its_address() {
        let p = policy(&["sip:*@127.0.0.1:*"], &["t"]);
        let target = DialTarget::parse("sip:bob@127.0.0.1:5070").unwrap();
        let route = p.route(&target, None, US.parse().unwrap()).unwrap();
        assert_eq!(route.next_hop.remote.to_string(), "127.0.0.1:5070");
        assert!(route.credentials.is_none() && route.trunk.is_none());
        assert_eq!(route.callee, "bob");
        let p = policy(&["sip:*"], &[]);
        let target = DialTarget::parse("sip:bob@pbx.example.com").unwrap();
        let err = p.route(&target, None, US.parse().unwrap()).unwrap_err();
        assert_eq!(err, DialError::NeedsAddress);
    }
}
