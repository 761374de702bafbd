//! The compiled image: rules as compiled, the port entries per class, the address
//! entries. What the DNS proxy asks of it is in `learned`.

use std::collections::BTreeSet;

use fwd_common::{PortKey, PortVerdict};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::policy::{
    Date, Direction, Level, Location, PortRange, PortSide, Protocol, Remote, RuleRef,
};

/// A rule left out because of its validity window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatedRule {
    pub rule: String,
    pub date: Date,
    pub location: Location,
}

/// A rule as compiled: what the counters and `explain` say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRule {
    pub id: u32,
    pub vendor: String,
    pub rule: String,
    pub service: String,
    pub level: Level,
    pub direction: Direction,
    /// Ingress only from remotes with a live flow.
    pub related: bool,
    pub source: Location,
    /// Position in compile order (file-name order, then order in the file): the last
    /// tie-break between rules covering the same port.
    pub order: u32,
    pub protocols: Vec<Protocol>,
    /// Ports on `port_side`; empty for portless protocols.
    pub ports: Vec<PortRange>,
    pub port_side: PortSide,
    /// The rule's remote is `any`.
    pub any_remote: bool,
    /// Hostnames and `*.domain` patterns of the rule (lowercase, no `*.`-prefix in
    /// `Remote::Wildcard`).
    pub names: Vec<Remote>,
}

impl CompiledRule {
    /// The rule's identity, `vendor/rule`.
    pub fn rule_ref(&self) -> RuleRef {
        RuleRef::new(&self.vendor, &self.rule)
    }

    /// Whether a hostname (any case, optional trailing dot) is one of the rule's names.
    pub fn matches_name(&self, name: &str) -> bool {
        self.name_pattern(name).is_some()
    }

    /// The rule's first name that a hostname (any case, optional trailing dot) matches, as
    /// written: `host.example.com` or `*.example.com`.
    pub fn name_pattern(&self, name: &str) -> Option<String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().find_map(|n| match n {
            Remote::Host(host) => (*host == name).then(|| host.clone()),
            Remote::Wildcard(domain) => name
                .strip_suffix(domain.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
                .then(|| format!("*.{domain}")),
            Remote::Any | Remote::Nets(_) => None,
        })
    }
}

/// One entry of a `PORTS` trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortEntry {
    pub key: PortKey,
    pub prefix_len: u32,
    pub verdict: PortVerdict,
}

/// Everything one policy slot holds, ready to be written into the maps.
#[derive(Clone, Debug, Default)]
pub struct MapImage {
    pub dst4: Vec<(Ipv4Net, u32)>,
    pub dst6: Vec<(Ipv6Net, u32)>,
    pub ports: Vec<PortEntry>,
    /// Sorted by rule id.
    pub rules: Vec<CompiledRule>,
    pub classes: u32,
    /// The rule ids of each class (indexed by class), sorted.
    pub class_members: Vec<Vec<u32>>,
    /// Vendors in audit mode while the policy enforces (their classes carry `CLASS_AUDIT`).
    pub audit_vendors: BTreeSet<String>,
}

impl MapImage {
    pub fn rule(&self, id: u32) -> Option<&CompiledRule> {
        self.rules
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .map(|i| &self.rules[i])
    }
}
