//! `[[route]]`: which calls are bridged to the `[agent]`, by called number, caller or source.
//! Routes are tried in order; the first that matches decides. A call no route matches is
//! bridged when `[agent]` is set (and gets the greeting otherwise).

use serde::Deserialize;

use super::Errors;

/// Routes at most.
const MAX_ROUTES: usize = 64;
/// Longest number pattern.
const MAX_PATTERN: usize = 64;

/// A number to match: exactly, or by prefix (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumberPattern {
    Exact(String),
    Prefix(String),
}

impl NumberPattern {
    fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_PATTERN {
            return Err(format!("{s:?} must be 1 to {MAX_PATTERN} characters"));
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') || body.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{s:?}: a number, or a prefix with one trailing * (\"+1555*\")"
            ));
        }
        Ok(if prefix {
            NumberPattern::Prefix(body.to_owned())
        } else {
            NumberPattern::Exact(body.to_owned())
        })
    }

    pub fn matches(&self, number: &str) -> bool {
        match self {
            NumberPattern::Exact(n) => number == n,
            NumberPattern::Prefix(p) => number.starts_with(p.as_str()),
        }
    }
}

/// Where a call came from, as routes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    Sip,
    Twilio,
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The called number (or SIP user); any when unset.
    pub callee: Option<NumberPattern>,
    /// The caller's number; any when unset.
    pub caller: Option<NumberPattern>,
    /// Any when unset.
    pub source: Option<RouteSource>,
    /// Whether matching calls are bridged to `[agent]` (false: the greeting).
    pub agent: bool,
}

impl Route {
    /// Whether a call from `caller` to `callee` from `source` matches.
    pub fn matches(&self, source: RouteSource, caller: &str, callee: &str) -> bool {
        self.source.is_none_or(|s| s == source)
            && self.caller.as_ref().is_none_or(|p| p.matches(caller))
            && self.callee.as_ref().is_none_or(|p| p.matches(callee))
    }
}

/// Whether a call is bridged to the agent: the first matching route decides, else
/// `default` (whether `[agent]` is set).
pub fn wants_agent(
    routes: &[Route],
    default: bool,
    source: RouteSource,
    caller: &str,
    callee: &str,
) -> bool {
    routes
        .iter()
        .find(|r| r.matches(source, caller, callee))
        .map_or(default, |r| r.agent)
}

/// `[[route]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRoute {
    callee: Option<String>,
    caller: Option<String>,
    source: Option<String>,
    agent: Option<bool>,
}

pub(super) fn validate_routes(e: &mut Errors, raw: Vec<RawRoute>, has_agent: bool) -> Vec<Route> {
    if raw.len() > MAX_ROUTES {
        e.push(
            "route",
            format!("{} routes; at most {MAX_ROUTES}", raw.len()),
        );
    }
    raw.into_iter()
        .take(MAX_ROUTES)
        .enumerate()
        .map(|(i, r)| {
            let at = |field: &str| format!("route[{i}].{field}");
            let callee = e.parse_opt(&at("callee"), r.callee, NumberPattern::parse);
            let caller = e.parse_opt(&at("caller"), r.caller, NumberPattern::parse);
            let source = e.parse_opt(&at("source"), r.source, |s| match s {
                "sip" => Ok(RouteSource::Sip),
                "twilio" => Ok(RouteSource::Twilio),
                other => Err(format!("{other:?}: \"sip\" or \"twilio\"")),
            });
            let agent = match r.agent {
                Some(agent) => agent,
                None => {
                    e.push(at("agent"), "required: true (bridge to [agent]) or false");
                    false
                }
            };
            if agent && !has_agent {
                e.push(at("agent"), "true needs an [agent] section");
            }
            Route {
                callee,
                caller,
                source,
                agent,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Config;
    use super::super::test_support::{invalid, paths};
    use super::*;

    const AGENT: &str = "[agent]\nurl = \"ws://127.0.0.1:9/ws\"\n";

    #[test]
    fn the_first_matching_route_decides_and_the_agent_is_the_default() {
        let config = Config::from_toml_str(&format!(
            "{AGENT}[[route]]\ncallee = \"1000\"\nagent = false\n\
             [[route]]\ncaller = \"+1555*\"\nsource = \"twilio\"\nagent = false\n"
        ))
        .unwrap();
        let routes = &config.routes;
        assert_eq!(routes.len(), 2);
        let agent = |source, caller, callee| wants_agent(routes, true, source, caller, callee);
        assert!(!agent(RouteSource::Sip, "2000", "1000"));
        assert!(agent(RouteSource::Sip, "+15551234", "1001"));
        assert!(!agent(RouteSource::Twilio, "+15551234", "1001"));
        assert!(agent(RouteSource::Twilio, "+4930", "1001"));
    }

    #[test]
    fn bad_routes_are_reported_by_field() {
        let errors = invalid(
            "[[route]]\ncallee = \"1*0\"\nsource = \"pots\"\nagent = true\n[[route]]\ncaller = \"\"\n",
        );
        assert_eq!(
            paths(&errors),
            [
                "route[0].callee",
                "route[0].source",
                "route[0].agent",
                "route[1].caller",
                "route[1].agent"
            ],
            "{errors:?}"
        );
    }
}
