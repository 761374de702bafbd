//! What the DNS proxy has learned: names, their addresses, the runtime classes those open,
//! and when each entry ends. Pure bookkeeping against a compiled image: it says which
//! datapath changes to make (`Change`) and the daemon makes them. No sockets, no maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use fwd_common::CLASS_AUDIT;
use serde::{Deserialize, Serialize};

use crate::compile::{MapImage, PortEntry, learned::Learned};

/// Runtime class numbers start here, far above the compiler's (which count from 0).
pub const FIRST_CLASS: u32 = 1 << 30;

pub use crate::config::DnsLimits as Limits;

/// An upstream answer, as the proxy read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The question's name, then each CNAME target in chain order (lowercase, no
    /// trailing dot).
    pub chain: Vec<String>,
    /// The A and AAAA addresses of the chain's last name, each with the smallest TTL
    /// on the way to it.
    pub addrs: Vec<(IpAddr, u32)>,
}

pub use crate::compile::learned::Change;

/// What observing one answer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// A name of the chain is one a domain rule names.
    pub covered: bool,
    /// Addresses the answer opened (new, or kept longer).
    pub opened: usize,
    /// Entries the answer ended (learned before, no room under a pattern's cap now): a
    /// change the journal does not hold.
    pub dropped: usize,
    /// Name patterns whose address cap kept an address of this answer out.
    pub capped: Vec<String>,
    /// Name patterns that reached their cap with this answer (for the log, once).
    pub now_full: Vec<String>,
    pub changes: Vec<Change>,
}

/// One learned address of one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The question's name, then its CNAME targets.
    pub chain: Vec<String>,
    pub addr: IpAddr,
    /// Unix time in milliseconds when the entry ends, unless a live flow keeps it.
    pub expires_ms: u64,
    /// The domain rules (ids) it opens.
    #[serde(skip)]
    pub rules: Vec<u32>,
    /// The name patterns it counts against.
    #[serde(skip)]
    pub patterns: Vec<String>,
}

/// What `learned.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub version: u32,
    /// Shared with the table that was saved: taking a snapshot under the daemon's lock
    /// copies pointers, not names (the file is written after the lock is let go).
    pub entries: Vec<Arc<Entry>>,
}

impl Saved {
    /// An empty table of the current format.
    pub fn current() -> Self {
        Self {
            version: 1,
            entries: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
struct ClassUse {
    number: u32,
    /// Host entries using it.
    refs: usize,
}

/// An entry's key: the question's name and the address.
type Key = (String, IpAddr);

/// The entries by key, and their keys by end: finding what is due costs what is due, not
/// the whole table (the daemon looks every second, holding the lock answers wait for).
/// Entries are shared with the snapshots being written (`DnsTable::saved`); one changed
/// while a snapshot holds it is copied first.
#[derive(Clone, Debug, Default)]
struct Entries {
    by_key: BTreeMap<Key, Arc<Entry>>,
    by_end: BTreeSet<(u64, Key)>,
    /// Distinct question names among the keys, kept as keys come and go: a metrics scrape
    /// reads it without walking the table.
    names: usize,
}

impl Entries {
    fn get(&self, key: &Key) -> Option<&Entry> {
        self.by_key.get(key).map(|e| &**e)
    }

    fn insert(&mut self, key: Key, entry: Arc<Entry>) {
        // The old end leaves the index before the new one enters: the two may be equal.
        let end = entry.expires_ms;
        match self.by_key.insert(key.clone(), entry) {
            Some(old) => {
                self.by_end.remove(&(old.expires_ms, key.clone()));
            }
            None if self.keys_of(&key.0) == 1 => self.names += 1,
            None => {}
        }
        self.by_end.insert((end, key));
    }

    fn remove(&mut self, key: &Key) -> Option<Arc<Entry>> {
        let old = self.by_key.remove(key)?;
        self.by_end.remove(&(old.expires_ms, key.clone()));
        if self.keys_of(&key.0) == 0 {
            self.names -= 1;
        }
        Some(old)
    }

    /// Keys of `name`, counted up to 2 (the keys sort by name, then address).
    fn keys_of(&self, name: &str) -> usize {
        let first = (name.to_string(), IpAddr::from([0u8; 4]));
        let last = (name.to_string(), IpAddr::from([0xffu8; 16]));
        self.by_key.range(first..=last).take(2).count()
    }

    fn set_end(&mut self, key: &Key, expires_ms: u64) {
        if let Some(e) = self.by_key.get_mut(key) {
            self.by_end.remove(&(e.expires_ms, key.clone()));
            Arc::make_mut(e).expires_ms = expires_ms;
            self.by_end.insert((expires_ms, key.clone()));
        }
    }

    /// The keys of entries that end at `now_ms` or before, soonest first.
    fn due(&self, now_ms: u64) -> impl Iterator<Item = &Key> {
        self.by_end
            .iter()
            .take_while(move |(end, _)| *end <= now_ms)
            .map(|(_, key)| key)
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.by_key.values()
    }
}

impl IntoIterator for Entries {
    type Item = (Key, Arc<Entry>);
    type IntoIter = std::collections::btree_map::IntoIter<Key, Arc<Entry>>;

    fn into_iter(self) -> Self::IntoIter {
        self.by_key.into_iter()
    }
}

/// The learned names and the runtime classes they need.
#[derive(Clone, Debug, Default)]
pub struct DnsTable {
    limits: Limits,
    /// (question name, address) -> entry.
    entries: Entries,
    /// Address -> rule -> entries giving the address that rule.
    addr_rules: BTreeMap<IpAddr, BTreeMap<u32, usize>>,
    /// Address -> (class members, map value).
    hosts: BTreeMap<IpAddr, (Vec<u32>, u32)>,
    /// Class members -> number and users.
    classes: BTreeMap<Vec<u32>, ClassUse>,
    /// Class number -> its port entries.
    ports: BTreeMap<u32, Vec<PortEntry>>,
    free: Vec<u32>,
    next: u32,
    /// Name pattern -> address -> entries counting it.
    patterns: BTreeMap<String, BTreeMap<IpAddr, usize>>,
}

/// Whether an answer's address may be opened: one host, and a unicast one.
fn learnable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.to_ipv4_mapped().is_some())
        }
    }
}

impl DnsTable {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            next: FIRST_CLASS,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// New limits apply to the next answers and the next `rebuild`.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Learns what `answer` opens under `image`; `now_ms` is Unix time in milliseconds.
    pub fn observe(&mut self, image: &MapImage, answer: &Answer, now_ms: u64) -> Observed {
        let named = named_rules(image, &answer.chain);
        let mut out = Observed {
            covered: !named.is_empty(),
            ..Observed::default()
        };
        let Some(name) = answer.chain.first() else {
            return out;
        };
        if named.is_empty() {
            return out;
        }
        for &(addr, ttl) in &answer.addrs {
            if !learnable(addr) {
                continue;
            }
            let key = (name.clone(), addr);
            // The entry's old patterns are released before the new ones are counted.
            let old = self.entries.remove(&key);
            if let Some(old) = &old {
                self.release(old);
            }
            let lifetime = ttl.clamp(self.limits.min_ttl, self.limits.max_ttl.max(1));
            let mut entry = Entry {
                chain: answer.chain.clone(),
                addr,
                expires_ms: now_ms + u64::from(lifetime) * 1000,
                rules: Vec::new(),
                patterns: Vec::new(),
            };
            self.admit(&named, &mut entry, &mut out);
            // A refresh with the same rules leaves the address's class as it is.
            let unchanged = old.as_ref().is_some_and(|o| o.rules == entry.rules);
            if !entry.rules.is_empty() {
                self.entries.insert(key, Arc::new(entry));
                out.opened += 1;
            } else if old.is_some() {
                out.dropped += 1;
            }
            if !unchanged {
                let changes = self.rehost(image, addr);
                out.changes.extend(changes);
            }
        }
        out.capped.sort();
        out.capped.dedup();
        out
    }

    /// Gives `entry` the rules of `named` whose patterns have room for its address.
    fn admit(&mut self, named: &BTreeMap<u32, String>, entry: &mut Entry, out: &mut Observed) {
        let max = self.limits.max_addresses;
        for (&rule, pattern) in named {
            let held = self.patterns.get(pattern);
            let counted = held.is_some_and(|m| m.contains_key(&entry.addr));
            if counted || held.map_or(0, BTreeMap::len) < max {
                entry.rules.push(rule);
                if !entry.patterns.contains(pattern) {
                    entry.patterns.push(pattern.clone());
                }
            } else {
                out.capped.push(pattern.clone());
            }
        }
        for pattern in &entry.patterns {
            let held = self.patterns.entry(pattern.clone()).or_default();
            *held.entry(entry.addr).or_insert(0) += 1;
            if held.len() == max && !out.now_full.contains(pattern) {
                out.now_full.push(pattern.clone());
            }
        }
        if !entry.rules.is_empty() {
            let rules = self.addr_rules.entry(entry.addr).or_default();
            for &rule in &entry.rules {
                *rules.entry(rule).or_insert(0) += 1;
            }
        }
    }

    /// Gives back what `admit` took for `entry` (its patterns and rules).
    fn release(&mut self, entry: &Entry) {
        if let Some(rules) = self.addr_rules.get_mut(&entry.addr) {
            for rule in &entry.rules {
                if let Some(n) = rules.get_mut(rule) {
                    *n -= 1;
                    if *n == 0 {
                        rules.remove(rule);
                    }
                }
            }
            if rules.is_empty() {
                self.addr_rules.remove(&entry.addr);
            }
        }
        for pattern in &entry.patterns {
            let Some(held) = self.patterns.get_mut(pattern) else {
                continue;
            };
            if let Some(n) = held.get_mut(&entry.addr) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&entry.addr);
                }
            }
            if held.is_empty() {
                self.patterns.remove(pattern);
            }
        }
    }

    /// Brings `addr`'s host entry in line with the entries holding it.
    fn rehost(&mut self, image: &MapImage, addr: IpAddr) -> Vec<Change> {
        let rules: Vec<u32> = self
            .addr_rules
            .get(&addr)
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        let old = self.hosts.get(&addr).cloned();
        let mut changes = Vec::new();
        let Some(class) = image.learned_class(addr, &rules, 0) else {
            if let Some((members, _)) = old {
                self.hosts.remove(&addr);
                changes.push(Change::RemoveHost(addr));
                changes.extend(self.release_class(&members));
            }
            return changes;
        };
        if old.as_ref().is_some_and(|(m, _)| *m == class.members) {
            return changes;
        }
        let number = match self.classes.get_mut(&class.members) {
            Some(used) => {
                used.refs += 1;
                used.number
            }
            None => {
                let number = self.free.pop().unwrap_or_else(|| {
                    self.next += 1;
                    self.next - 1
                });
                let ports = image
                    .learned_class(addr, &rules, number)
                    .map(|c| c.ports)
                    .unwrap_or_default();
                changes.push(Change::AddClass(number, ports.clone()));
                self.ports.insert(number, ports);
                self.classes
                    .insert(class.members.clone(), ClassUse { number, refs: 1 });
                number
            }
        };
        let value = number | if class.audit { CLASS_AUDIT } else { 0 };
        changes.push(Change::SetHost(addr, value));
        self.hosts.insert(addr, (class.members, value));
        if let Some((members, _)) = old {
            changes.extend(self.release_class(&members));
        }
        changes
    }

    fn release_class(&mut self, members: &[u32]) -> Vec<Change> {
        let Some(used) = self.classes.get_mut(members) else {
            return Vec::new();
        };
        used.refs -= 1;
        if used.refs > 0 {
            return Vec::new();
        }
        let number = used.number;
        self.classes.remove(members);
        self.ports.remove(&number);
        self.free.push(number);
        vec![Change::RemoveClass(number)]
    }

    /// The addresses of entries that end at `now_ms` or before.
    pub fn due(&self, now_ms: u64) -> BTreeSet<IpAddr> {
        self.entries.due(now_ms).map(|(_, addr)| *addr).collect()
    }

    /// Ends the entries due at `now_ms`, except those whose address is in `live` (a flow
    /// to it is live): they get `grace_ms` more. Returns the changes and how many ended.
    pub fn expire(
        &mut self,
        image: &MapImage,
        now_ms: u64,
        live: &BTreeSet<IpAddr>,
        grace_ms: u64,
    ) -> (Vec<Change>, usize) {
        let due: Vec<Key> = self.entries.due(now_ms).cloned().collect();
        let mut touched = BTreeSet::new();
        let mut ended = 0;
        for key in due {
            if live.contains(&key.1) {
                self.entries.set_end(&key, now_ms + grace_ms);
                continue;
            }
            if let Some(old) = self.entries.remove(&key) {
                self.release(&old);
                touched.insert(key.1);
                ended += 1;
            }
        }
        let mut changes = Vec::new();
        for addr in touched {
            changes.extend(self.rehost(image, addr));
        }
        (changes, ended)
    }

    /// Recomputes every entry against a new image (its rules, caps and classes) and says
    /// what the datapath's learned entries must then be. Entries no rule names any more
    /// are dropped.
    pub fn rebuild(&mut self, image: &MapImage) -> Learned {
        let entries = std::mem::take(&mut self.entries);
        *self = Self::new(self.limits);
        let mut scratch = Observed::default();
        let mut addrs = BTreeSet::new();
        for ((name, addr), mut shared) in entries {
            let entry = Arc::make_mut(&mut shared);
            let named = named_rules(image, &entry.chain);
            entry.rules.clear();
            entry.patterns.clear();
            self.admit(&named, entry, &mut scratch);
            if entry.rules.is_empty() {
                continue;
            }
            self.entries.insert((name, addr), shared);
            addrs.insert(addr);
        }
        for addr in addrs {
            self.rehost(image, addr);
        }
        self.learned()
    }

    /// The datapath's learned entries as this table has them.
    pub fn learned(&self) -> Learned {
        Learned {
            hosts: self.hosts.iter().map(|(a, (_, v))| (*a, *v)).collect(),
            classes: self.ports.clone(),
        }
    }

    /// Puts back what `saved` holds (entries past their end too: the first sweep keeps
    /// those with live flows); `rebuild` then computes rules and classes.
    /// Takes in the entries of a saved table; an entry seen twice (the table, then the
    /// journal) keeps its later end, the one a client was told last.
    pub fn restore(&mut self, saved: Saved) {
        for entry in saved.entries {
            let Some(name) = entry.chain.first().cloned() else {
                continue;
            };
            if !learnable(entry.addr) {
                continue;
            }
            let key = (name, entry.addr);
            if self
                .entries
                .get(&key)
                .is_none_or(|known| entry.expires_ms >= known.expires_ms)
            {
                self.entries.insert(key, entry);
            }
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            entries: self.entries.values().cloned().collect(),
            ..Saved::current()
        }
    }

    /// The entry of `name` (the question's) and `addr`, if learned.
    pub fn entry(&self, name: &str, addr: IpAddr) -> Option<&Entry> {
        self.entries.get(&(name.to_string(), addr))
    }

    /// Entries (a name and an address each).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|e| &**e)
    }

    /// Question names with at least one entry.
    pub fn names_active(&self) -> usize {
        self.entries.names
    }

    pub fn addresses_active(&self) -> usize {
        self.hosts.len()
    }

    /// Each pattern with the addresses it holds.
    pub fn pattern_use(&self) -> impl Iterator<Item = (&str, usize)> {
        self.patterns.iter().map(|(p, m)| (p.as_str(), m.len()))
    }

    /// The class value of a learned address.
    pub fn host_value(&self, addr: IpAddr) -> Option<u32> {
        self.hosts.get(&addr).map(|(_, v)| *v)
    }
}

/// The domain rules naming any name of `chain`, each with the first pattern that matched.
fn named_rules(image: &MapImage, chain: &[String]) -> BTreeMap<u32, String> {
    let mut named = BTreeMap::new();
    for name in chain {
        for (rule, pattern) in image.patterns_naming(name) {
            named.entry(rule).or_insert(pattern);
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::{
        compile::{Evaluator, Probe, Selection, Verdict, compile},
        policy::{Date, PolicySet, parse_vendor_file},
    };

    const POLICY: &str = r#"
[vendor]
id = "meet"
name = "Meet"

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = ["10000-20000"]
remote = ["*.sfu.meet.example", "turn.meet.example"]

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["*.meet.example", "198.51.100.0/24"]
"#;

    fn image(text: &str) -> MapImage {
        let vendor = parse_vendor_file(Path::new("meet.toml"), text).unwrap();
        let set = PolicySet {
            vendors: vec![vendor],
        };
        let today = Date::parse("2026-11-21").unwrap();
        compile(&set, &Selection::widest(today)).unwrap().image
    }

    fn id(image: &MapImage, rule: &str) -> u32 {
        image.rules.iter().find(|r| r.rule == rule).unwrap().id
    }

    fn answer(chain: &[&str], addrs: &[(&str, u32)]) -> Answer {
        Answer {
            chain: chain.iter().map(std::string::ToString::to_string).collect(),
            addrs: addrs
                .iter()
                .map(|(a, t)| (a.parse().unwrap(), *t))
                .collect(),
        }
    }

    /// Applies changes to a model of the datapath's learned entries, checking their order.
    fn apply(model: &mut Learned, changes: &[Change]) {
        for change in changes {
            match change {
                Change::AddClass(n, ports) => {
                    assert!(
                        model.classes.insert(*n, ports.clone()).is_none(),
                        "class {n} added twice"
                    );
                }
                Change::SetHost(a, v) => {
                    assert!(
                        model.classes.contains_key(&(v & !CLASS_AUDIT)),
                        "host {a} before its class"
                    );
                    model.hosts.insert(*a, *v);
                }
                Change::RemoveHost(a) => {
                    assert!(model.hosts.remove(a).is_some(), "{a} removed but not there");
                }
                Change::RemoveClass(n) => {
                    assert!(
                        !model.hosts.values().any(|v| v & !CLASS_AUDIT == *n),
                        "class {n} removed while in use"
                    );
                    assert!(model.classes.remove(n).is_some());
                }
            }
        }
    }

    /// What the datapath would decide for `probe` to a learned address.
    fn verdict(learned: &Learned, addr: IpAddr, port: u16) -> Option<u32> {
        let value = *learned.hosts.get(&addr)?;
        let ports = &learned.classes[&(value & !CLASS_AUDIT)];
        ports
            .iter()
            .filter(|e| {
                let key = &e.key;
                let port_be = u16::from_be(key.port_be);
                let span = 1u32 << (64 - e.prefix_len);
                key.protocol == fwd_common::proto::UDP
                    && key.direction == fwd_common::direction::EGRESS
                    && u32::from(port) >= u32::from(port_be)
                    && u32::from(port) < u32::from(port_be) + span
            })
            .max_by_key(|e| e.prefix_len)
            .map(|e| e.verdict.rule)
    }

    /// The same entry restored twice with the same end (from `learned.json`, then from
    /// the journal) is still due at that end.
    #[test]
    fn an_entry_restored_twice_at_one_end_is_still_due() {
        let entry = Arc::new(Entry {
            chain: vec!["x.sfu.meet.example".into()],
            addr: "203.0.113.7".parse().unwrap(),
            expires_ms: 60_000,
            rules: Vec::new(),
            patterns: Vec::new(),
        });
        let saved = Saved {
            entries: vec![entry.clone(), entry],
            ..Saved::current()
        };
        let mut table = DnsTable::new(Limits::default());
        table.restore(saved);
        assert_eq!(table.entries.by_end.len(), 1);
        assert_eq!(
            table.due(60_000),
            BTreeSet::from(["203.0.113.7".parse::<IpAddr>().unwrap()])
        );
    }

    #[test]
    fn an_answer_opens_its_rules_ports_and_nothing_else() {
        let image = image(POLICY);
        let mut table = DnsTable::new(Limits::default());
        let mut model = Learned::default();
        let seen = table.observe(
            &image,
            &answer(&["x.sfu.meet.example"], &[("203.0.113.7", 60)]),
            0,
        );
        assert!(seen.covered);
        assert_eq!(seen.opened, 1);
        apply(&mut model, &seen.changes);
        assert_eq!(model, table.learned());
        let addr: IpAddr = "203.0.113.7".parse().unwrap();
        // The class is what `explain` says of the name.
        let ev = Evaluator::new(&image);
        let probe = Probe {
            direction: crate::policy::Direction::Egress,
            protocol: fwd_common::proto::UDP,
            remote: addr,
            port: 15000,
            local_port: 0,
        };
        assert_eq!(
            ev.evaluate_name("x.sfu.meet.example", &probe),
            Verdict::Allow {
                rule: id(&image, "media")
            }
        );
        assert_eq!(verdict(&model, addr, 15000), Some(id(&image, "media")));
        assert_eq!(verdict(&model, addr, 9999), None);
        // A name no rule names resolves but opens nothing.
        let seen = table.observe(
            &image,
            &answer(&["cdn.other.example"], &[("203.0.113.8", 60)]),
            0,
        );
        assert!(!seen.covered);
        assert!(seen.changes.is_empty());
        // Unspecified, loopback and multicast answers open nothing.
        let seen = table.observe(
            &image,
            &answer(
                &["y.sfu.meet.example"],
                &[
                    ("0.0.0.0", 60),
                    ("127.0.0.1", 60),
                    ("224.0.0.1", 60),
                    ("::", 60),
                ],
            ),
            0,
        );
        assert!(seen.covered);
        assert_eq!(seen.opened, 0);
        assert!(seen.changes.is_empty());
    }

    #[test]
    fn a_cname_target_named_by_a_rule_opens_the_question() {
        let image = image(POLICY);
        let mut table = DnsTable::new(Limits::default());
        let seen = table.observe(
            &image,
            &answer(
                &["meet.customer.example", "edge7.sfu.meet.example"],
                &[("203.0.113.9", 60)],
            ),
            0,
        );
        assert_eq!(seen.opened, 1);
        let entry = table.entries().next().unwrap();
        assert_eq!(entry.chain[0], "meet.customer.example");
        let mut rules = entry.rules.clone();
        rules.sort();
        let mut want = vec![id(&image, "media"), id(&image, "web")];
        want.sort();
        assert_eq!(rules, want);
    }

    #[test]
    fn ttls_are_clamped_and_live_flows_keep_entries() {
        let image = image(POLICY);
        let limits = Limits {
            min_ttl: 10,
            max_ttl: 100,
            max_addresses: 8,
        };
        let mut table = DnsTable::new(limits);
        let mut model = Learned::default();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let seen = table.observe(
            &image,
            &answer(
                &["a.sfu.meet.example"],
                &[("203.0.113.1", 1), ("203.0.113.2", 5000)],
            ),
            0,
        );
        apply(&mut model, &seen.changes);
        // Both addresses share one class (same rules).
        assert_eq!(model.classes.len(), 1);
        assert_eq!(table.due(9_999), BTreeSet::new());
        assert_eq!(table.due(10_000), BTreeSet::from([a]));
        // Due, but a live flow keeps it for the grace time.
        let (changes, ended) = table.expire(&image, 10_000, &BTreeSet::from([a]), 10_000);
        assert_eq!((changes.len(), ended), (0, 0));
        assert_eq!(table.due(19_999), BTreeSet::new());
        // No flow: it ends; the class stays for b.
        let (changes, ended) = table.expire(&image, 20_000, &BTreeSet::new(), 10_000);
        assert_eq!(ended, 1);
        apply(&mut model, &changes);
        assert_eq!(changes, vec![Change::RemoveHost(a)]);
        // b lives max_ttl, then goes, and its class with it.
        assert_eq!(table.due(99_999), BTreeSet::new());
        let (changes, _) = table.expire(&image, 100_000, &BTreeSet::new(), 10_000);
        apply(&mut model, &changes);
        assert_eq!(model, Learned::default());
        assert_eq!(table.learned(), Learned::default());
        let _ = b;
    }

    #[test]
    fn a_pattern_holds_at_most_max_addresses() {
        let image = image(POLICY);
        let mut table = DnsTable::new(Limits {
            min_ttl: 1,
            max_ttl: 60,
            max_addresses: 2,
        });
        let first = table.observe(
            &image,
            &answer(
                &["a.sfu.meet.example"],
                &[("203.0.113.1", 60), ("203.0.113.2", 60)],
            ),
            0,
        );
        assert_eq!(first.opened, 2);
        // *.sfu.meet.example and *.meet.example are both full now, each said once.
        assert_eq!(
            first.now_full,
            vec![
                "*.sfu.meet.example".to_string(),
                "*.meet.example".to_string()
            ]
        );
        let third = table.observe(
            &image,
            &answer(&["b.sfu.meet.example"], &[("203.0.113.3", 60)]),
            0,
        );
        assert_eq!(third.opened, 0);
        assert_eq!(
            third.capped,
            vec![
                "*.meet.example".to_string(),
                "*.sfu.meet.example".to_string()
            ]
        );
        assert!(third.changes.is_empty());
        // An address already held may be learned again (another name, a refresh).
        let again = table.observe(
            &image,
            &answer(&["c.sfu.meet.example"], &[("203.0.113.2", 60)]),
            0,
        );
        assert_eq!(again.opened, 1);
        assert!(again.capped.is_empty());
        // A host name of another pattern is not held back by the full wildcard.
        let turn = table.observe(
            &image,
            &answer(&["turn.meet.example"], &[("203.0.113.4", 60)]),
            0,
        );
        assert_eq!(turn.opened, 1);
        assert_eq!(turn.capped, vec!["*.meet.example".to_string()]);
        assert_eq!(turn.dropped, 0);
        // Under a lower cap, a refresh of an address that no longer has room ends its
        // entry: a change the journal does not hold, so the daemon saves the table.
        table.set_limits(Limits {
            max_addresses: 1,
            ..table.limits()
        });
        let ended = table.observe(
            &image,
            &answer(&["a.sfu.meet.example"], &[("203.0.113.1", 60)]),
            0,
        );
        assert_eq!((ended.opened, ended.dropped), (0, 1));
        assert!(
            table
                .entry("a.sfu.meet.example", "203.0.113.1".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn rebuild_follows_the_policy_and_save_restore_round_trips() {
        let image1 = image(POLICY);
        let mut table = DnsTable::new(Limits::default());
        table.observe(
            &image1,
            &answer(&["a.sfu.meet.example"], &[("203.0.113.1", 60)]),
            0,
        );
        table.observe(
            &image1,
            &answer(&["www.meet.example"], &[("2001:db8::5", 60)]),
            0,
        );
        let saved = table.saved();
        let text = serde_json::to_string(&saved).unwrap();
        let mut restored = DnsTable::new(Limits::default());
        restored.restore(serde_json::from_str(&text).unwrap());
        assert_eq!(restored.rebuild(&image1), table.learned());
        // The web rule is gone: www opens nothing any more, a.sfu keeps media only.
        let image2 = image(&POLICY.replace(
            "remote = [\"*.meet.example\", \"198.51.100.0/24\"]",
            "remote = \"198.51.100.0/24\"",
        ));
        let learned = restored.rebuild(&image2);
        assert_eq!(learned.hosts.len(), 1);
        assert_eq!(restored.names_active(), 1);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(verdict(&learned, a, 15000), Some(id(&image2, "media")));
    }

    #[test]
    fn a_listed_network_keeps_its_rules_for_a_learned_address() {
        let image = image(POLICY);
        let mut table = DnsTable::new(Limits::default());
        // 198.51.100.9 is in web's listed network; media's name resolves to it.
        let seen = table.observe(
            &image,
            &answer(&["z.sfu.meet.example"], &[("198.51.100.9", 60)]),
            0,
        );
        let mut model = Learned::default();
        apply(&mut model, &seen.changes);
        let members = &table.hosts[&"198.51.100.9".parse().unwrap()].0;
        assert!(members.contains(&id(&image, "web")) && members.contains(&id(&image, "media")));
    }

    proptest! {
        /// Whatever answers arrive and whenever entries end, the changes the table asks for,
        /// applied in order, leave the datapath with exactly `learned()`; every address's
        /// class is what the compiler computes for its names.
        #[test]
        fn changes_reproduce_the_table(
            steps in proptest::collection::vec(
                (0usize..4, 0usize..6, 0u8..4, 1u32..120, any::<bool>()),
                1..60,
            )
        ) {
            let image = image(POLICY);
            let names = ["a.sfu.meet.example", "b.sfu.meet.example", "turn.meet.example", "www.meet.example"];
            let mut table = DnsTable::new(Limits { min_ttl: 5, max_ttl: 60, max_addresses: 3 });
            let mut model = Learned::default();
            let mut now = 0u64;
            for (name, host, count, ttl, expire) in steps {
                now += 7_000;
                if expire {
                    let live: BTreeSet<IpAddr> = table.due(now).into_iter().step_by(2).collect();
                    let (changes, _) = table.expire(&image, now, &live, 5_000);
                    apply(&mut model, &changes);
                } else {
                    let addrs: Vec<(IpAddr, u32)> = (0..count)
                        .map(|i| (IpAddr::from([203, 0, 113, (host as u8 + i) % 6 + 1]), ttl))
                        .collect();
                    let seen = table.observe(&image, &Answer { chain: vec![names[name].into()], addrs }, now);
                    apply(&mut model, &seen.changes);
                }
                prop_assert_eq!(&model, &table.learned());
                // The index by end holds every entry once, at its end: what is due is
                // what a scan of the whole table finds.
                prop_assert_eq!(table.entries.by_end.len(), table.entry_count());
                let names: BTreeSet<&str> = table.entries().map(|e| e.chain[0].as_str()).collect();
                prop_assert_eq!(table.names_active(), names.len());
                for later in [now, now + 20_000, now + 60_000] {
                    let scanned: BTreeSet<IpAddr> = table.entries()
                        .filter(|e| e.expires_ms <= later)
                        .map(|e| e.addr)
                        .collect();
                    prop_assert_eq!(table.due(later), scanned);
                }
                for (pattern, held) in table.pattern_use() {
                    prop_assert!(held <= 3, "{} holds {}", pattern, held);
                }
                for (addr, value) in &model.hosts {
                    let named: Vec<u32> = table.entries()
                        .filter(|e| e.addr == *addr)
                        .flat_map(|e| e.rules.iter().copied())
                        .collect::<BTreeSet<_>>().into_iter().collect();
                    let want = image.learned_class(*addr, &named, value & !CLASS_AUDIT).unwrap();
                    prop_assert_eq!(&model.classes[&(value & !CLASS_AUDIT)], &want.ports);
                }
            }
        }
    }
}
