//! Policy -> map images: normalisation, prefix flattening, class deduplication, port
//! expansion and the capacity check. Knows nothing of aya: the datapath loads the image.
//!
//! Match semantics (the kernel's, and `MapImage::evaluate`'s):
//! 1. the remote address's longest matching prefix gives a class; the compiler flattened
//!    overlapping prefixes so that class is the set of every rule whose remote contains it;
//! 2. the (class, direction, protocol, port) key's longest matching entry gives the rule.
//!    Where several rules of a class cover a port, the narrowest port range owns it; on a
//!    tie a rule that names addresses beats a `remote = "any"` rule, then the lower rule id
//!    wins. A protocol-specific rule beats an `any`-protocol rule.
//! 3. ingress looks up both the local-port key and the remote-port key; a rule naming
//!    addresses beats a `remote = "any"` rule, then the local-port rule wins.

pub mod lpm;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    rc::Rc,
};

use fwd_common::{
    DST4_CAPACITY, DST6_CAPACITY, MAX_RULES, PORTS_CAPACITY, PortKey, PortVerdict, direction,
    port_range_blocks, proto,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use lpm::LpmTable;

use crate::policy::{
    Date, Direction, Level, Location, PolicySet, PortRange, PortSide, Protocol, Remote, Rule,
    remote::any_nets,
};

/// Which rules of a policy directory a site enforces. Rules without a profile or region
/// apply whatever is selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The day validity windows are judged against.
    pub today: Date,
    /// `None`: every vendor.
    pub vendors: Option<Vec<String>>,
    /// `None`: every level.
    pub levels: Option<Vec<Level>>,
    /// vendor -> the one profile enforced for it; vendors not listed keep every profile.
    pub profiles: BTreeMap<String, String>,
    /// `None`: every region.
    pub regions: Option<Vec<String>>,
}

impl Selection {
    /// Every vendor, level, profile and region, judged today.
    pub fn widest(today: Date) -> Selection {
        Selection {
            today,
            vendors: None,
            levels: None,
            profiles: BTreeMap::new(),
            regions: None,
        }
    }

    fn includes(&self, vendor: &str, rule: &Rule) -> bool {
        self.vendors
            .as_ref()
            .is_none_or(|v| v.iter().any(|v| v == vendor))
            && self.levels.as_ref().is_none_or(|l| l.contains(&rule.level))
            && match (self.profiles.get(vendor), &rule.profile) {
                (Some(wanted), Some(profile)) => wanted == profile,
                _ => true,
            }
            && match (&self.regions, &rule.region) {
                (Some(regions), Some(region)) => regions.contains(region),
                _ => true,
            }
    }
}

/// A rule left out because of its validity window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatedRule {
    pub rule: String,
    pub date: Date,
    pub location: Location,
}

/// What the counters and `explain` say about a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: u32,
    pub vendor: String,
    pub rule: String,
    pub service: String,
    pub level: Level,
    pub direction: Direction,
    /// Ingress only from remotes with a live flow.
    pub related: bool,
    pub source: Location,
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
    /// Indexed by rule id.
    pub rules: Vec<RuleInfo>,
    pub classes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A rule opens ports to every address.
    AnyRemote { rule: String, location: Location },
    /// A rule names hostnames or domains, which only DNS-based enforcement can open.
    NeedsDns {
        rule: String,
        names: Vec<String>,
        location: Location,
    },
    /// A vendor has addresses of one family only.
    SingleFamily {
        vendor: String,
        family: &'static str,
    },
    /// Every packet a rule covers is owned by other rules: it can never count.
    Shadowed { rule: String, location: Location },
    /// Two rules of a vendor say the same thing.
    Duplicate {
        rule: String,
        first: String,
        location: Location,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::AnyRemote { rule, location } => write!(
                f,
                "{location}: rule `{rule}` allows its ports to every address (remote = \"any\")"
            ),
            Warning::NeedsDns {
                rule,
                names,
                location,
            } => write!(
                f,
                "{location}: rule `{rule}` names {}; these open nothing until DNS-based enforcement resolves them",
                names.join(", ")
            ),
            Warning::SingleFamily { vendor, family } => {
                write!(f, "vendor `{vendor}` lists {family} addresses only")
            }
            Warning::Shadowed { rule, location } => write!(
                f,
                "{location}: rule `{rule}` is shadowed: narrower or earlier rules own every port it covers, so it never counts"
            ),
            Warning::Duplicate {
                rule,
                first,
                location,
            } => write!(f, "{location}: rule `{rule}` repeats rule `{first}`"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Compiled {
    pub image: MapImage,
    pub warnings: Vec<Warning>,
    /// Selected rules whose `not_before` is still ahead.
    pub pending: Vec<DatedRule>,
    /// Selected rules whose `not_after` has passed.
    pub expired: Vec<DatedRule>,
    /// Rules the selection left out (vendor, level, profile or region).
    pub unselected: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the policy needs {needed} entries in map {map}, which holds {capacity}; select fewer vendors or regions"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        capacity: u32,
    },
}

/// A packet as `explain` and the datapath see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub direction: Direction,
    /// IP protocol number.
    pub protocol: u8,
    pub remote: IpAddr,
    /// The remote's port for TCP/UDP (0 otherwise).
    pub port: u16,
    /// The local port of an ingress packet (0 for egress and portless protocols).
    pub local_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow { rule: u32 },
    NoAddressMatch,
    NoPortMatch { class: u32 },
}

/// The direction byte of a rule's port keys. Portless ingress rules live with local ports.
fn direction_code(d: Direction, side: PortSide) -> u8 {
    match (d, side) {
        (Direction::Egress, _) => direction::EGRESS,
        (Direction::Ingress, PortSide::Local) => direction::INGRESS_LOCAL_PORT,
        (Direction::Ingress, PortSide::Remote) => direction::INGRESS_REMOTE_PORT,
    }
}

fn port_key_bits(key: &PortKey) -> u128 {
    (u128::from(key.class()) << 32)
        | (u128::from(key.direction) << 24)
        | (u128::from(key.protocol) << 16)
        | u128::from(key.port())
}

/// The compiled tables as lookup structures, evaluated with the kernel's semantics.
pub struct Evaluator<'a> {
    image: &'a MapImage,
    dst4: LpmTable<u32>,
    dst6: LpmTable<u32>,
    ports: LpmTable<PortVerdict>,
}

impl<'a> Evaluator<'a> {
    pub fn new(image: &'a MapImage) -> Self {
        let mut dst4 = LpmTable::new(32);
        for (net, class) in &image.dst4 {
            dst4.insert(
                u128::from(u32::from(net.network())),
                net.prefix_len(),
                *class,
            );
        }
        let mut dst6 = LpmTable::new(128);
        for (net, class) in &image.dst6 {
            dst6.insert(u128::from(net.network()), net.prefix_len(), *class);
        }
        let mut ports = LpmTable::new(64);
        for e in &image.ports {
            ports.insert(port_key_bits(&e.key), e.prefix_len as u8, e.verdict);
        }
        Self {
            image,
            dst4,
            dst6,
            ports,
        }
    }

    pub fn evaluate(&self, probe: &Probe) -> Verdict {
        let class = match probe.remote {
            IpAddr::V4(a) => self.dst4.lookup(u128::from(u32::from(a))),
            IpAddr::V6(a) => self.dst6.lookup(u128::from(a)),
        };
        let Some((_, &class)) = class else {
            return Verdict::NoAddressMatch;
        };
        let lookup = |dir: u8, port: u16| {
            let key = PortKey::new(class, dir, probe.protocol, port);
            self.ports.lookup(port_key_bits(&key)).map(|(_, v)| *v)
        };
        let chosen = match probe.direction {
            Direction::Egress => lookup(direction::EGRESS, probe.port),
            // Ingress: both keys; a rule naming addresses beats a `remote = "any"` rule, then
            // the local-port rule beats the remote-port rule.
            Direction::Ingress => {
                let local = lookup(direction::INGRESS_LOCAL_PORT, probe.local_port);
                let remote = lookup(direction::INGRESS_REMOTE_PORT, probe.port);
                match (local, remote) {
                    (Some(l), Some(r))
                        if l.flags & PortVerdict::FLAG_ANY_REMOTE != 0
                            && r.flags & PortVerdict::FLAG_ANY_REMOTE == 0 =>
                    {
                        Some(r)
                    }
                    (l, r) => l.or(r),
                }
            }
        };
        chosen.map_or(Verdict::NoPortMatch { class }, |v| Verdict::Allow {
            rule: v.rule,
        })
    }

    pub fn rule(&self, id: u32) -> Option<&'a RuleInfo> {
        self.image.rules.get(id as usize)
    }
}

/// A prefix as (network bits left-aligned to the family width, length).
type Prefix = (u128, u8);

fn contains(outer: Prefix, inner: Prefix, width: u8) -> bool {
    outer.1 <= inner.1 && lpm::mask(inner.0, outer.1, width) == outer.0
}

/// Sorted union of two sorted rule-id lists.
fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x < y => {
                i += 1;
                *x
            }
            (Some(x), Some(y)) if x > y => {
                j += 1;
                *y
            }
            (Some(x), Some(_)) => {
                i += 1;
                j += 1;
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => unreachable!(),
        };
        out.push(next);
    }
    out
}

/// Interns rule sets as class ids (0, 1, ...), in first-seen order.
#[derive(Default)]
struct Classes {
    ids: HashMap<Rc<[u32]>, u32>,
    sets: Vec<Rc<[u32]>>,
}

impl Classes {
    fn intern(&mut self, rules: Rc<[u32]>) -> u32 {
        if let Some(id) = self.ids.get(&rules) {
            return *id;
        }
        let id = self.sets.len() as u32;
        self.ids.insert(rules.clone(), id);
        self.sets.push(rules);
        id
    }
}

/// Flattens (prefix, rule) pairs of one family so each output prefix carries the class of
/// every rule whose prefix contains it. Input need not be sorted or unique.
fn flatten(mut pairs: Vec<(Prefix, u32)>, width: u8, classes: &mut Classes) -> Vec<(Prefix, u32)> {
    pairs.sort_unstable();
    pairs.dedup();
    let mut out = Vec::new();
    // Enclosing prefixes of the current one, outermost first, with their accumulated rules.
    let mut stack: Vec<(Prefix, Rc<[u32]>)> = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let prefix = pairs[i].0;
        let mut own = Vec::new();
        while i < pairs.len() && pairs[i].0 == prefix {
            own.push(pairs[i].1);
            i += 1;
        }
        while stack
            .last()
            .is_some_and(|(outer, _)| !contains(*outer, prefix, width))
        {
            stack.pop();
        }
        let rules: Rc<[u32]> = match stack.last() {
            Some((_, inherited)) => union(inherited, &own).into(),
            None => own.into(),
        };
        out.push((prefix, classes.intern(rules.clone())));
        stack.push((prefix, rules));
    }
    out
}

/// The owner of each port of `0..=65535` among `ranges`: the narrowest range, then a rule
/// that names addresses over an `any` rule, then the lowest rule id. Returns disjoint
/// ascending (range, rule) runs.
fn port_owners(ranges: &[(PortRange, u32)], any_remote: &[bool]) -> Vec<(PortRange, u32)> {
    let mut bounds: Vec<u32> = ranges
        .iter()
        .flat_map(|(r, _)| [u32::from(r.lo), u32::from(r.hi) + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(PortRange, u32)> = Vec::new();
    for w in bounds.windows(2) {
        let (lo, hi) = (w[0] as u16, (w[1] - 1) as u16);
        let owner = ranges
            .iter()
            .filter(|(r, _)| r.contains(lo))
            .min_by_key(|(r, rule)| (r.hi - r.lo, any_remote[*rule as usize], *rule))
            .map(|(_, rule)| *rule);
        let Some(owner) = owner else { continue };
        match out.last_mut() {
            Some((prev, prev_owner))
                if *prev_owner == owner && u32::from(prev.hi) + 1 == u32::from(lo) =>
            {
                prev.hi = hi;
            }
            _ => out.push((PortRange { lo, hi }, owner)),
        }
    }
    out
}

/// The port entries of one class.
fn class_ports(
    class: u32,
    rules: &[u32],
    all: &[&Rule],
    any_remote: &[bool],
    out: &mut Vec<PortEntry>,
) {
    // (direction, protocol) -> (range, rule)
    let mut by_proto: BTreeMap<(u8, u8), Vec<(PortRange, u32)>> = BTreeMap::new();
    let mut any_proto: BTreeMap<u8, u32> = BTreeMap::new();
    for &id in rules {
        let rule = all[id as usize];
        let dir = direction_code(rule.direction, rule.port_side);
        for protocol in &rule.protocols {
            match protocol {
                Protocol::Tcp | Protocol::Udp => {
                    let p = if *protocol == Protocol::Tcp {
                        proto::TCP
                    } else {
                        proto::UDP
                    };
                    let list = by_proto.entry((dir, p)).or_default();
                    list.extend(rule.ports.iter().map(|r| (*r, id)));
                }
                Protocol::Icmp => {
                    for p in [proto::ICMP, proto::ICMPV6] {
                        by_proto
                            .entry((dir, p))
                            .or_default()
                            .push((PortRange::ALL, id));
                    }
                }
                Protocol::Any => {
                    let best = any_proto.entry(dir).or_insert(id);
                    if any_remote[*best as usize] && !any_remote[id as usize] {
                        *best = id;
                    }
                }
            }
        }
    }
    let verdict = |rule: u32| {
        let mut flags = 0;
        if all[rule as usize].related {
            flags |= PortVerdict::FLAG_RELATED;
        }
        if any_remote[rule as usize] {
            flags |= PortVerdict::FLAG_ANY_REMOTE;
        }
        PortVerdict { rule, flags }
    };
    for (dir, rule) in any_proto {
        out.push(PortEntry {
            key: PortKey::new(class, dir, 0, 0),
            prefix_len: 40,
            verdict: verdict(rule),
        });
    }
    for ((dir, protocol), ranges) in by_proto {
        for (range, rule) in port_owners(&ranges, any_remote) {
            port_range_blocks(range.lo, range.hi, |port, bits| {
                out.push(PortEntry {
                    key: PortKey::new(class, dir, protocol, port),
                    prefix_len: PortKey::PORT_OFFSET_BITS + bits,
                    verdict: verdict(rule),
                });
            });
        }
    }
}

fn v4_prefix(net: &Ipv4Net) -> Prefix {
    (u128::from(u32::from(net.network())), net.prefix_len())
}

fn v6_prefix(net: &Ipv6Net) -> Prefix {
    (u128::from(net.network()), net.prefix_len())
}

/// Compiles the rules of `set` that `selection` picks and that are valid today.
/// Rule ids follow (vendor file order, rule order) over the compiled rules.
pub fn compile(set: &PolicySet, selection: &Selection) -> Result<Compiled, CompileError> {
    let started = std::time::Instant::now();
    let mut rules: Vec<&Rule> = Vec::new();
    let mut infos = Vec::new();
    let mut warnings = Vec::new();
    let mut pairs4 = Vec::new();
    let mut pairs6 = Vec::new();
    let (mut pending, mut expired, mut unselected) = (Vec::new(), Vec::new(), 0);

    for vp in &set.vendors {
        let (mut has4, mut has6) = (false, false);
        for rule in &vp.rules {
            let name = format!("{}/{}", vp.vendor.id, rule.id);
            if !selection.includes(&vp.vendor.id, rule) {
                unselected += 1;
                continue;
            }
            if let Some(date) = rule.not_before.filter(|d| *d > selection.today) {
                pending.push(DatedRule {
                    rule: name,
                    date,
                    location: rule.location.clone(),
                });
                continue;
            }
            if let Some(date) = rule.not_after.filter(|d| *d < selection.today) {
                expired.push(DatedRule {
                    rule: name,
                    date,
                    location: rule.location.clone(),
                });
                continue;
            }
            if let Some(first) =
                rules
                    .iter()
                    .zip(&infos)
                    .find_map(|(r, info): (&&Rule, &RuleInfo)| {
                        (info.vendor == vp.vendor.id && same_effect(r, rule))
                            .then(|| info.rule.clone())
                    })
            {
                warnings.push(Warning::Duplicate {
                    rule: name.clone(),
                    first,
                    location: rule.location.clone(),
                });
            }
            let id = rules.len() as u32;
            rules.push(rule);
            infos.push(RuleInfo {
                id,
                vendor: vp.vendor.id.clone(),
                rule: rule.id.clone(),
                service: rule.service.clone(),
                level: rule.level,
                direction: rule.direction,
                related: rule.related,
                source: rule.location.clone(),
            });
            let mut names = Vec::new();
            for remote in &rule.remotes {
                let nets: Vec<IpNet> = match remote {
                    Remote::Any => {
                        has4 = true;
                        has6 = true;
                        warnings.push(Warning::AnyRemote {
                            rule: name.clone(),
                            location: rule.location.clone(),
                        });
                        any_nets().to_vec()
                    }
                    Remote::Nets(nets) => {
                        has4 |= nets.iter().any(|n| matches!(n, IpNet::V4(_)));
                        has6 |= nets.iter().any(|n| matches!(n, IpNet::V6(_)));
                        nets.clone()
                    }
                    Remote::Host(name) => {
                        names.push(name.clone());
                        Vec::new()
                    }
                    Remote::Wildcard(domain) => {
                        names.push(format!("*.{domain}"));
                        Vec::new()
                    }
                };
                for net in nets {
                    match net {
                        IpNet::V4(n) => pairs4.push((v4_prefix(&n), id)),
                        IpNet::V6(n) => pairs6.push((v6_prefix(&n), id)),
                    }
                }
            }
            if !names.is_empty() {
                warnings.push(Warning::NeedsDns {
                    rule: name.clone(),
                    names,
                    location: rule.location.clone(),
                });
            }
        }
        match (has4, has6) {
            (true, false) => warnings.push(Warning::SingleFamily {
                vendor: vp.vendor.id.clone(),
                family: "IPv4",
            }),
            (false, true) => warnings.push(Warning::SingleFamily {
                vendor: vp.vendor.id.clone(),
                family: "IPv6",
            }),
            _ => {}
        }
    }
    check_capacity("RULE_COUNTERS", rules.len(), MAX_RULES)?;

    tracing::debug!(elapsed = ?started.elapsed(), rules = rules.len(), "compile: rules selected");
    let mut classes = Classes::default();
    let flat4 = flatten(pairs4, 32, &mut classes);
    let flat6 = flatten(pairs6, 128, &mut classes);
    tracing::debug!(elapsed = ?started.elapsed(), classes = classes.sets.len(), "compile: prefixes flattened");
    check_capacity("DST4", flat4.len(), DST4_CAPACITY)?;
    check_capacity("DST6", flat6.len(), DST6_CAPACITY)?;

    let any_remote: Vec<bool> = rules
        .iter()
        .map(|r| r.remotes.contains(&Remote::Any))
        .collect();
    let mut ports = Vec::new();
    for (class, set) in classes.sets.iter().enumerate() {
        class_ports(class as u32, set, &rules, &any_remote, &mut ports);
    }
    check_capacity("PORTS", ports.len(), PORTS_CAPACITY)?;
    tracing::debug!(elapsed = ?started.elapsed(), entries = ports.len(), "compile: port keys built");

    let mut owning = vec![false; rules.len()];
    for entry in &ports {
        owning[entry.verdict.rule as usize] = true;
    }
    let has_addresses = |r: &Rule| {
        r.remotes
            .iter()
            .any(|x| matches!(x, Remote::Any | Remote::Nets(_)))
    };
    for (info, rule) in infos.iter().zip(&rules) {
        if !owning[info.id as usize] && has_addresses(rule) {
            warnings.push(Warning::Shadowed {
                rule: format!("{}/{}", info.vendor, info.rule),
                location: info.source.clone(),
            });
        }
    }

    let image = MapImage {
        dst4: flat4
            .into_iter()
            .map(|((addr, len), class)| {
                let net = Ipv4Net::new((addr as u32).into(), len).expect("valid v4 prefix");
                (net, class)
            })
            .collect(),
        dst6: flat6
            .into_iter()
            .map(|((addr, len), class)| {
                let net = Ipv6Net::new(addr.into(), len).expect("valid v6 prefix");
                (net, class)
            })
            .collect(),
        ports,
        rules: infos,
        classes: classes.sets.len() as u32,
    };
    Ok(Compiled {
        image,
        warnings,
        pending,
        expired,
        unselected,
    })
}

/// Whether two rules open exactly the same packets.
fn same_effect(a: &Rule, b: &Rule) -> bool {
    a.direction == b.direction
        && a.port_side == b.port_side
        && a.related == b.related
        && a.protocols == b.protocols
        && a.ports == b.ports
        && a.remotes == b.remotes
}

fn check_capacity(map: &'static str, needed: usize, capacity: u32) -> Result<(), CompileError> {
    if needed > capacity as usize {
        return Err(CompileError::Capacity {
            map,
            needed,
            capacity,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
