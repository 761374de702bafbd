//! Policy -> map images: normalisation, prefix flattening, class deduplication, port
//! expansion and the capacity check. Knows nothing of aya: the datapath loads the image.
//!
//! Match semantics (the kernel's, and `MapImage::evaluate`'s):
//! 1. the remote address's longest matching prefix gives a class; the compiler flattened
//!    overlapping prefixes so that class is the set of every rule whose remote contains it;
//! 2. the (class, direction, protocol, port) key's longest matching entry gives the rule.
//!    Where several rules of a class cover a port, a rule that needs no live flow beats a
//!    `related` one (which would drop what the other allows), then the narrowest port
//!    range owns it; on a tie a rule that names addresses beats a `remote = "any"` rule,
//!    then the rule compiled first (file-name order, then order in the file) wins. A protocol-specific rule beats an
//!    `any`-protocol rule.
//!
//! Rule ids (counter slots) are stable: see [`RuleIds`].
//! 3. ingress looks up both the local-port key and the remote-port key; a rule that needs no
//!    live flow beats a `related` one, a rule naming addresses beats a `remote = "any"`
//!    rule, then the local-port rule wins.

pub mod learned;
pub mod lpm;
pub mod tables;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, hash_map::Entry},
    fmt,
    net::IpAddr,
    rc::Rc,
};

use fwd_common::tables::port_verdict;
use fwd_common::{
    CLASS_AUDIT, MAX_RULES, PortKey, PortVerdict, direction, port_range_blocks, proto,
    tables::{ClassRecord, PortRange as TablePortRange, class},
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tables::{SlotTables, class_record};

use crate::policy::{
    Date, Direction, Level, Location, PolicySet, PortRange, PortSide, Protocol, Remote, Rule,
    RuleRef, remote::any_nets,
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
    /// Vendors whose rules are rolled out in audit mode: a packet to one of their
    /// addresses that no rule allows passes and counts as `audit_would_drop`.
    pub audit_vendors: BTreeSet<String>,
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
            audit_vendors: BTreeSet::new(),
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

/// The counter slot (rule id) of every compiled rule, keyed by `vendor/rule`.
///
/// A rule's id derives from its name (a hash into `0..MAX_RULES`, probing on a collision) and,
/// given the ids of the previous compile, stays what it was while the rule exists; the slots
/// of rules that disappeared are not handed to new rules while others are free. So counters
/// and dashboards survive reloads and edits of other rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleIds(BTreeMap<String, u32>);

impl RuleIds {
    /// Ids recorded by an earlier run: (`vendor/rule`, id).
    pub fn from_recorded(ids: impl IntoIterator<Item = (String, u32)>) -> Self {
        RuleIds(ids.into_iter().collect())
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.0.get(name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Ids for `names` (distinct `vendor/rule` names, at most `MAX_RULES` of them), keeping
    /// the ids `self` gave them.
    fn assign(&self, names: &[String]) -> (RuleIds, Vec<u32>) {
        let capacity = MAX_RULES as usize;
        let mut taken = vec![false; capacity];
        let mut ids = vec![u32::MAX; names.len()];
        for (name, id) in names.iter().zip(ids.iter_mut()) {
            if let Some(old) = self.get(name).filter(|&i| (i as usize) < capacity)
                && !taken[old as usize]
            {
                taken[old as usize] = true;
                *id = old;
            }
        }
        let mut reserved = vec![false; capacity];
        for (_, old) in self.iter() {
            if let Some(r) = reserved.get_mut(old as usize) {
                *r = true;
            }
        }
        for (name, id) in names.iter().zip(ids.iter_mut()) {
            if *id != u32::MAX {
                continue;
            }
            let home = home_slot(name) as usize;
            let probe = |avoid_reserved: bool| {
                (0..capacity)
                    .map(|step| (home + step) % capacity)
                    .find(|&slot| !(taken[slot] || (avoid_reserved && reserved[slot])))
            };
            let slot = probe(true)
                .or_else(|| probe(false))
                .expect("no more names than MAX_RULES");
            taken[slot] = true;
            *id = slot as u32;
        }
        let map = names.iter().cloned().zip(ids.iter().copied()).collect();
        (RuleIds(map), ids)
    }
}

/// Where a rule's id search starts: FNV-1a of `vendor/rule`, fixed across builds and hosts.
fn home_slot(name: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(MAX_RULES)) as u32
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A rule opens ports to every address.
    AnyRemote { rule: String, location: Location },
    /// A rule names hostnames or domains, which only the DNS proxy can open.
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
                "{location}: rule `{rule}` names {}; these open only what fwd's DNS proxy resolves ([dns], docs/dns.md)",
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
    /// The ids given to the compiled rules; pass them to the next compile.
    pub ids: RuleIds,
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

/// The compiled tables as the kernel reads them (`tables::SlotTables`, with the kernel's
/// search), so what it says is what the kernel does.
pub struct Evaluator<'a> {
    image: &'a MapImage,
    tables: SlotTables,
}

impl<'a> Evaluator<'a> {
    pub fn new(image: &'a MapImage) -> Self {
        Self {
            image,
            tables: SlotTables::build(image, &[]),
        }
    }

    pub fn evaluate(&self, probe: &Probe) -> Verdict {
        let class = self.tables.lookup_address(probe.remote);
        let Some(record) = self.tables.classes.get(class as usize) else {
            debug_assert!(
                class == class::NONE,
                "no exemptions in an evaluator's tables"
            );
            return Verdict::NoAddressMatch;
        };
        decide(record, &self.tables.ports, class, probe)
    }

    /// What happens to `probe` sent to a host called `name`, once the DNS proxy has
    /// learned its address: the domain rules matching the name and the `remote = "any"`
    /// rules form its class, as they do in the kernel for a learned address that no listed
    /// network covers (`MapImage::learned_class`; a name no rule names is not learned and
    /// its address keeps the class of `any`). `probe.remote` is ignored.
    pub fn evaluate_name(&self, name: &str, probe: &Probe) -> Verdict {
        let members: Vec<&CompiledRule> = self
            .image
            .rules
            .iter()
            .filter(|r| r.any_remote || r.matches_name(name))
            .collect();
        if members.is_empty() {
            return Verdict::NoAddressMatch;
        }
        let mut entries = Vec::new();
        class_ports(NAME_CLASS, &members, &mut entries);
        decide_entries(&entries, false, NAME_CLASS, probe)
    }

    /// What happens to `probe` sent to an address the DNS proxy learned with `learned`'s
    /// class (`MapImage::learned_class`): the kernel's verdict for that address.
    pub fn evaluate_learned(&self, learned: &LearnedClass, probe: &Probe) -> Verdict {
        decide_entries(&learned.ports, learned.audit, NAME_CLASS, probe)
    }

    pub fn rule(&self, id: u32) -> Option<&'a CompiledRule> {
        self.image.rule(id)
    }
}

/// The class `evaluate_name` gives the rules matching a name (any value works: the record
/// is that class's only).
const NAME_CLASS: u32 = 0;

/// The verdict of one class given as port entries (a name's or a learned address's), made
/// into its record first as the datapath does.
fn decide_entries(entries: &[PortEntry], audit: bool, class: u32, probe: &Probe) -> Verdict {
    let mut ports = Vec::new();
    let record = class_record(entries, audit, &mut ports);
    decide(&record, &ports, class, probe)
}

/// Steps 2 and 3 of the match: `class`'s record and port ranges decide the packet.
fn decide(record: &ClassRecord, ports: &[TablePortRange], class: u32, probe: &Probe) -> Verdict {
    let lookup = |dir: u8, port: u16| {
        port_verdict(record, dir, probe.protocol, port, |i| {
            ports.get(i as usize).copied()
        })
    };
    let chosen = match probe.direction {
        Direction::Egress => lookup(direction::EGRESS, probe.port),
        Direction::Ingress => PortVerdict::choose_ingress(
            lookup(direction::INGRESS_LOCAL_PORT, probe.local_port),
            lookup(direction::INGRESS_REMOTE_PORT, probe.port),
        ),
    };
    chosen.map_or(Verdict::NoPortMatch { class }, |v| Verdict::Allow {
        rule: v.rule,
    })
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
/// that names addresses over an `any` rule, then the rule compiled first. Returns disjoint
/// ascending (range, rule id) runs.
fn port_owners(ranges: &[(PortRange, &CompiledRule)]) -> Vec<(PortRange, u32)> {
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
            .min_by_key(|(r, rule)| {
                let any_protocol = rule.protocols.contains(&Protocol::Any);
                (
                    rule.related,
                    r.hi - r.lo,
                    any_protocol,
                    rule.any_remote,
                    rule.order,
                )
            })
            .map(|(_, rule)| rule.id);
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

/// The port entries of the class made of `members`; each verdict names the member's `id`.
pub fn class_ports(class: u32, members: &[&CompiledRule], out: &mut Vec<PortEntry>) {
    // (direction, protocol) -> (range, rule)
    let mut by_proto: BTreeMap<(u8, u8), Vec<(PortRange, &CompiledRule)>> = BTreeMap::new();
    let mut any_proto: BTreeMap<u8, &CompiledRule> = BTreeMap::new();
    for &rule in members {
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
                    list.extend(rule.ports.iter().map(|r| (*r, rule)));
                }
                Protocol::Icmp => {
                    for p in [proto::ICMP, proto::ICMPV6] {
                        by_proto
                            .entry((dir, p))
                            .or_default()
                            .push((PortRange::ALL, rule));
                    }
                }
                Protocol::Any => {
                    let best = any_proto.entry(dir).or_insert(rule);
                    if (best.related, best.any_remote, best.order)
                        > (rule.related, rule.any_remote, rule.order)
                    {
                        *best = rule;
                    }
                }
            }
        }
    }
    let flags_of = |rule: &CompiledRule| {
        let mut flags = 0;
        if rule.related {
            flags |= PortVerdict::FLAG_RELATED;
        }
        if rule.any_remote {
            flags |= PortVerdict::FLAG_ANY_REMOTE;
        }
        flags
    };
    let by_id: HashMap<u32, u32> = members.iter().map(|r| (r.id, flags_of(r))).collect();
    let verdict = |rule: u32| PortVerdict {
        rule,
        flags: by_id[&rule],
    };
    for (&dir, rule) in &any_proto {
        out.push(PortEntry {
            key: PortKey::new(class, dir, 0, 0),
            prefix_len: 40,
            verdict: verdict(rule.id),
        });
    }
    for ((dir, protocol), mut ranges) in by_proto {
        // A protocol-specific entry hides the `any`-protocol entry (a shorter prefix) for its
        // ports. Where the specific rule is `related` and the `any` rule is not, the `any`
        // rule must own those ports, or the kernel would drop what it allows.
        if let Some(any) = any_proto.get(&dir)
            && !any.related
            && ranges.iter().any(|(_, r)| r.related)
        {
            ranges.push((PortRange::ALL, any));
        }
        for (range, rule) in port_owners(&ranges) {
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

/// Compiles the rules of `set` that `selection` picks and that are valid today, with ids
/// derived from the rule names.
pub fn compile(set: &PolicySet, selection: &Selection) -> Result<Compiled, CompileError> {
    compile_with_ids(set, selection, &RuleIds::default())
}

/// Like [`compile`], keeping the ids `previous` gave to rules that still exist.
pub fn compile_with_ids(
    set: &PolicySet,
    selection: &Selection,
    previous: &RuleIds,
) -> Result<Compiled, CompileError> {
    let started = std::time::Instant::now();
    let mut rules: Vec<&Rule> = Vec::new();
    let mut infos = Vec::new();
    let mut warnings = Vec::new();
    let mut pairs4 = Vec::new();
    let mut pairs6 = Vec::new();
    let (mut pending, mut expired, mut unselected) = (Vec::new(), Vec::new(), 0);

    for vp in &set.vendors {
        let (mut has4, mut has6) = (false, false);
        // What each rule opens -> the first rule of this vendor that opens it.
        let mut effects: HashMap<Effect<'_>, &str> = HashMap::new();
        for rule in &vp.rules {
            let name = RuleRef::new(&vp.vendor.id, &rule.id).to_string();
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
            match effects.entry(Effect::of(rule)) {
                Entry::Occupied(first) => warnings.push(Warning::Duplicate {
                    rule: name.clone(),
                    first: first.get().to_string(),
                    location: rule.location.clone(),
                }),
                Entry::Vacant(slot) => {
                    slot.insert(&rule.id);
                }
            }
            let id = rules.len() as u32;
            rules.push(rule);
            infos.push(CompiledRule {
                id,
                vendor: vp.vendor.id.clone(),
                rule: rule.id.clone(),
                service: rule.service.clone(),
                level: rule.level,
                direction: rule.direction,
                related: rule.related,
                source: rule.location.clone(),
                order: id,
                protocols: rule.protocols.clone(),
                ports: rule.ports.clone(),
                port_side: rule.port_side,
                any_remote: rule.remotes.contains(&Remote::Any),
                names: rule
                    .remotes
                    .iter()
                    .filter(|r| matches!(r, Remote::Host(_) | Remote::Wildcard(_)))
                    .cloned()
                    .collect(),
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

    let mut ports = Vec::new();
    let mut members = Vec::new();
    for (class, set) in classes.sets.iter().enumerate() {
        members.clear();
        members.extend(set.iter().map(|&i| &infos[i as usize]));
        class_ports(class as u32, &members, &mut ports);
    }
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
                rule: info.rule_ref().to_string(),
                location: info.source.clone(),
            });
        }
    }

    // Classes holding a rule of an audited vendor carry the audit bit in the address maps.
    let audited: Vec<bool> = classes
        .sets
        .iter()
        .map(|set| {
            set.iter()
                .any(|&i| selection.audit_vendors.contains(&infos[i as usize].vendor))
        })
        .collect();
    let value = |class: u32| {
        if audited[class as usize] {
            class | CLASS_AUDIT
        } else {
            class
        }
    };
    // Dense compile-order indices -> stable ids.
    let names: Vec<String> = infos.iter().map(|i| i.rule_ref().to_string()).collect();
    let (ids, by_index) = previous.assign(&names);
    for info in &mut infos {
        info.id = by_index[info.id as usize];
    }
    infos.sort_by_key(|i| i.id);
    for entry in &mut ports {
        entry.verdict.rule = by_index[entry.verdict.rule as usize];
    }

    let image = MapImage {
        dst4: flat4
            .into_iter()
            .map(|((addr, len), class)| {
                let net = Ipv4Net::new((addr as u32).into(), len).expect("valid v4 prefix");
                (net, value(class))
            })
            .collect(),
        dst6: flat6
            .into_iter()
            .map(|((addr, len), class)| {
                let net = Ipv6Net::new(addr.into(), len).expect("valid v6 prefix");
                (net, value(class))
            })
            .collect(),
        ports,
        rules: infos,
        classes: classes.sets.len() as u32,
        class_members: classes
            .sets
            .iter()
            .map(|set| {
                let mut ids: Vec<u32> = set.iter().map(|&i| by_index[i as usize]).collect();
                ids.sort_unstable();
                ids
            })
            .collect(),
        audit_vendors: selection.audit_vendors.clone(),
    };
    Ok(Compiled {
        image,
        warnings,
        pending,
        expired,
        unselected,
        ids,
    })
}

/// What a rule opens: two rules with equal effects open exactly the same packets.
#[derive(PartialEq, Eq, Hash)]
struct Effect<'a> {
    direction: Direction,
    port_side: PortSide,
    related: bool,
    protocols: &'a [Protocol],
    ports: &'a [PortRange],
    remotes: &'a [Remote],
}

impl<'a> Effect<'a> {
    fn of(rule: &'a Rule) -> Self {
        Effect {
            direction: rule.direction,
            port_side: rule.port_side,
            related: rule.related,
            protocols: &rule.protocols,
            ports: &rule.ports,
            remotes: &rule.remotes,
        }
    }
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
