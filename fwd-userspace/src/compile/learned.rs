//! Runtime additions to a compiled image: what the DNS proxy asks of the image (the rules
//! naming a host, the class a learned address gets), the hosts it learned and the changes
//! that keep the datapath in step. Plain values: the DNS table computes them, the
//! datapath installs them.

use std::{collections::BTreeMap, net::IpAddr};

use fwd_common::CLASS_AUDIT;

use super::{CompiledRule, MapImage, PortEntry, ports::class_ports};

/// Entries learned at run time (the DNS proxy's), beside a slot's compiled image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Host address (a /32 or /128 entry) -> class value, `CLASS_AUDIT` included.
    pub hosts: BTreeMap<IpAddr, u32>,
    /// Classes made at run time -> their port entries. Their numbers must not be classes
    /// of the image (the compiler numbers from 0 up; take them from high up).
    pub classes: BTreeMap<u32, Vec<PortEntry>>,
}

/// One change to the datapath's learned entries, in the order they must be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A runtime class's port entries (before any address uses the class).
    AddClass(u32, Vec<PortEntry>),
    /// A host entry with its class value (`CLASS_AUDIT` included).
    SetHost(IpAddr, u32),
    RemoveHost(IpAddr),
    /// A runtime class no address uses any more.
    RemoveClass(u32),
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
