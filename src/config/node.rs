//! `[node]`: this box's name in a fleet (several earshots behind one SIP dispatcher), shown as
//! `source_node` in the API's call records so that records gathered from every box can be told
//! apart.

use serde::Deserialize;

use super::Errors;

/// The longest `[node].name`.
const MAX_NAME: usize = 64;

/// `[node]`: who this box is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Letters, digits, `.`, `-` and `_`; the host name (from the kernel) when not set.
    pub name: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { name: host_name() }
    }
}

/// The kernel's host name, or `earshot` when it cannot be read or would not be a valid name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| name_fault(s).is_none())
        .unwrap_or_else(|| "earshot".to_string())
}

/// Why `name` cannot name a node, if it cannot.
fn name_fault(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Some(format!("{name:?} is longer than {MAX_NAME} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Some(format!(
            "{name:?} has {c:?}: only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    None
}

/// `[node]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNode {
    name: Option<String>,
}

pub(super) fn validate_node(e: &mut Errors, raw: RawNode) -> NodeConfig {
    match raw.name {
        None => NodeConfig::default(),
        Some(name) => {
            if let Some(fault) = name_fault(&name) {
                e.push("node.name", fault);
            }
            NodeConfig { name }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{invalid, paths};

    #[test]
    fn name_defaults_to_a_valid_host_name_and_is_taken_as_written() {
        let config = Config::from_toml_str("").unwrap();
        assert!(!config.node.name.is_empty());
        let config = Config::from_toml_str("[node]\nname = \"box-2.eu\"\n").unwrap();
        assert_eq!(config.node.name, "box-2.eu");
    }

    #[test]
    fn name_must_be_a_short_token() {
        for bad in ["", "a b", "x\\\"y", &"n".repeat(65)] {
            let errors = invalid(&format!("[node]\nname = \"{bad}\"\n"));
            assert_eq!(paths(&errors), ["node.name"], "{bad}");
        }
    }
}
