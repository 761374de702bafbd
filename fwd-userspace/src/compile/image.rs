//! The compiled image: rules as compiled, the port entries per class, the address
//! entries, and what the DNS proxy asks of it (rules naming a host, learned classes).

use std::{collections::BTreeSet, net::IpAddr};

use fwd_common::{CLASS_AUDIT, PortKey, PortVerdict};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::policy::{
    Date, Direction, Level, Location, PortRange, PortSide, Protocol, Remote, RuleRef,
};

use super::ports::class_ports;

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

/// A class made at run time for a learned host address: the rules whose networks cover
/// the address plus the domain rules naming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedClass {
    /// Sorted rule ids.
    pub members: Vec<u32>,
    /// The port entries of the class, under the class number given to `learned_class`.
    pub ports: Vec<PortEntry>,
    /// Whether a member belongs to an audited vendor (the address map value then carries
    /// `CLASS_AUDIT`).
    pub audit: bool,
}

impl MapImage {
    pub fn rule(&self, id: u32) -> Option<&CompiledRule> {
        self.rules
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .map(|i| &self.rules[i])
    }

    /// The domain rules that open `name` (any case, optional trailing dot), by id.
    pub fn rules_naming(&self, name: &str) -> Vec<u32> {
        self.rules
            .iter()
            .filter(|r| r.matches_name(name))
            .map(|r| r.id)
            .collect()
    }

    /// The domain rules that open `name`, each with the name pattern that matched.
    pub fn patterns_naming(&self, name: &str) -> Vec<(u32, String)> {
        self.rules
            .iter()
            .filter_map(|r| r.name_pattern(name).map(|p| (r.id, p)))
            .collect()
    }

    /// The rules whose listed networks cover `addr` (the class of its longest match).
    pub fn rules_covering(&self, addr: IpAddr) -> Vec<u32> {
        fn longest<N>(nets: &[(N, u32)], covers: impl Fn(&N) -> Option<u8>) -> Option<u32> {
            nets.iter()
                .filter_map(|(n, c)| covers(n).map(|len| (len, *c)))
                .max_by_key(|(len, _)| *len)
                .map(|(_, c)| c)
        }
        // A linear scan: learning is per DNS answer, not per packet.
        let class = match addr {
            IpAddr::V4(a) => longest(&self.dst4, |n| n.contains(&a).then(|| n.prefix_len())),
            IpAddr::V6(a) => longest(&self.dst6, |n| n.contains(&a).then(|| n.prefix_len())),
        };
        class
            .and_then(|c| self.class_members.get((c & !CLASS_AUDIT) as usize))
            .cloned()
            .unwrap_or_default()
    }

    /// The class for a learned `addr` that the domain rules `named` open, numbered `class`:
    /// its members are those rules plus the rules covering `addr`, so learning an address
    /// never takes away what a listed network already allows. `None` if `named` is empty
    /// (an answer that matches no domain rule opens nothing).
    pub fn learned_class(&self, addr: IpAddr, named: &[u32], class: u32) -> Option<LearnedClass> {
        if named.is_empty() {
            return None;
        }
        let mut members = self.rules_covering(addr);
        members.extend_from_slice(named);
        members.sort_unstable();
        members.dedup();
        let infos: Vec<&CompiledRule> = members.iter().filter_map(|&id| self.rule(id)).collect();
        let mut ports = Vec::new();
        class_ports(class, &infos, &mut ports);
        let audit = infos.iter().any(|r| self.audit_vendors.contains(&r.vendor));
        Some(LearnedClass {
            members,
            ports,
            audit,
        })
    }
}
