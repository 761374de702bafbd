//! One egress rule set for the side-by-side benches, rendered for each firewall: a fwd
//! policy directory, an ipset restore file with its iptables rules, and a plain iptables
//! chain. (nftables gets `fwd export nftables` of the fwd policy.) Every rendering allows
//! exactly the same (destination, protocol, port) triples, so the firewalls do the same job.
//!
//! The rule set is IPv4, with narrow port ranges (at most 8 ports): `hash:net,port` stores
//! one element per port, so wide ranges such as 10000-60000 would make the ipset
//! rendering explode; fwd and nftables hold any range in a few entries.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

/// A small deterministic generator (xorshift64*), so every run measures the same rules.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// One fwd rule: a protocol, a port range and the networks it opens.
#[derive(Clone, Debug)]
pub struct Rule {
    pub proto: Proto,
    pub ports: (u16, u16),
    /// (network address, prefix length), host bits zero.
    pub nets: Vec<(Ipv4Addr, u8)>,
}

/// Every destination of the rule set lies in this block (32.0.0.0/3): far from the lab's
/// own 10.250/10.251 networks.
pub const SPACE: (u32, u8) = (0x2000_0000, 3);

/// Destinations outside every rule (the "denied by address" part of the traffic).
pub const OUTSIDE: (u32, u8) = (0x4000_0000, 8);

/// Ports the rule set never opens (the "denied by port" part of the traffic).
pub const CLOSED_PORT: u16 = 9;

/// Prefix lengths drawn for the networks: mostly /24 and /32, some wider, as vendor lists.
const LENGTHS: [u8; 9] = [20, 22, 24, 24, 26, 28, 32, 32, 32];

#[derive(Clone, Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// `prefixes` networks in rules of `per_rule` networks each (the last may hold fewer).
    pub fn generate(prefixes: usize, per_rule: usize, seed: u64) -> RuleSet {
        let mut rng = Rng(seed | 1);
        let per_rule = per_rule.max(1);
        let mut rules = Vec::new();
        let mut left = prefixes;
        while left > 0 {
            let n = left.min(per_rule);
            left -= n;
            let lo = 1024 + rng.below(59_000) as u16;
            let hi = lo + rng.below(8) as u16;
            let proto = if rng.below(3) == 0 {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            // Each rule owns a /16 of the space, as a vendor's list sits in its own
            // blocks; blocks of different rules collide now and then, so some networks
            // nest across rules.
            let block = SPACE.0 | ((rng.below(1 << (16 - SPACE.1)) as u32) << 16);
            let nets = (0..n)
                .map(|_| {
                    let len = LENGTHS[rng.below(LENGTHS.len() as u64) as usize];
                    let addr = block | (rng.next() as u32 & 0xffff);
                    let masked = if len == 32 {
                        addr
                    } else {
                        addr >> (32 - len) << (32 - len)
                    };
                    (Ipv4Addr::from(masked), len)
                })
                .collect();
            rules.push(Rule {
                proto,
                ports: (lo, hi),
                nets,
            });
        }
        RuleSet { rules }
    }

    #[cfg(test)]
    pub fn prefixes(&self) -> usize {
        self.rules.iter().map(|r| r.nets.len()).sum()
    }

    /// (network, protocol, ports) triples: the plain iptables chain's rule count.
    pub fn triples(&self) -> impl Iterator<Item = ((Ipv4Addr, u8), Proto, (u16, u16))> + '_ {
        self.rules
            .iter()
            .flat_map(|r| r.nets.iter().map(move |&n| (n, r.proto, r.ports)))
    }

    /// Whether the rule set allows `proto` to `dst:port` (a linear scan: the tests'
    /// reference).
    #[cfg(test)]
    pub fn allows(&self, dst: Ipv4Addr, proto: Proto, port: u16) -> bool {
        let d = u32::from(dst);
        self.triples().any(|((net, len), p, (lo, hi))| {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            p == proto && d & mask == u32::from(net) && (lo..=hi).contains(&port)
        })
    }

    /// An allowed destination: a random address inside a random rule's network, with the
    /// rule's protocol and a port of its range.
    pub fn allowed_packet(&self, rng: &mut Rng) -> (Ipv4Addr, Proto, u16) {
        let rule = &self.rules[rng.below(self.rules.len() as u64) as usize];
        let (net, len) = rule.nets[rng.below(rule.nets.len() as u64) as usize];
        let host = if len == 32 {
            0
        } else {
            rng.next() as u32 >> len
        };
        let port = rule.ports.0 + rng.below(u64::from(rule.ports.1 - rule.ports.0) + 1) as u16;
        (Ipv4Addr::from(u32::from(net) | host), rule.proto, port)
    }

    /// A denied destination: half outside every network (with an allowed-looking port),
    /// half inside one but to a port no rule opens.
    pub fn denied_packet(&self, rng: &mut Rng) -> (Ipv4Addr, Proto, u16) {
        if rng.below(2) == 0 {
            let addr = OUTSIDE.0 | (rng.next() as u32 >> OUTSIDE.1);
            let rule = &self.rules[rng.below(self.rules.len() as u64) as usize];
            (Ipv4Addr::from(addr), rule.proto, rule.ports.0)
        } else {
            let (addr, proto, _) = self.allowed_packet(rng);
            (addr, proto, CLOSED_PORT)
        }
    }

    /// Writes the rule set as one fwd vendor policy (`bench.toml`) into `dir`.
    pub fn write_fwd_policy(&self, dir: &Path) -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let mut text = String::from("[vendor]\nid = \"bench\"\nname = \"Bench rule set\"\n");
        for (i, rule) in self.rules.iter().enumerate() {
            let ports = if rule.ports.0 == rule.ports.1 {
                rule.ports.0.to_string()
            } else {
                format!("\"{}-{}\"", rule.ports.0, rule.ports.1)
            };
            let _ = write!(
                text,
                "\n[[rule]]\nid = \"r{i}\"\nservice = \"s\"\nprotocol = \"{}\"\nports = [{ports}]\nremote = [\n",
                rule.proto.name()
            );
            for (net, len) in &rule.nets {
                let _ = writeln!(text, "  \"{net}/{len}\",");
            }
            text.push_str("]\n");
        }
        std::fs::write(dir.join("bench.toml"), text)?;
        Ok(())
    }

    /// `ipset restore` input creating `set` (type `hash:net,port`) with every network and
    /// port of the rule set (one element per port: ipset expands ranges). Networks may
    /// repeat: restore it with `-exist`.
    pub fn ipset_restore(&self, set: &str) -> String {
        let elements: usize = self
            .rules
            .iter()
            .map(|r| r.nets.len() * usize::from(r.ports.1 - r.ports.0 + 1))
            .sum();
        let mut text = format!(
            "create {set} hash:net,port family inet hashsize {} maxelem {}\n",
            elements.next_power_of_two().clamp(1024, 1 << 22),
            elements.max(65_536)
        );
        for ((net, len), proto, (lo, hi)) in self.triples() {
            for port in lo..=hi {
                let _ = writeln!(text, "add {set} {net}/{len},{}:{port}", proto.name());
            }
        }
        text
    }

    /// `iptables-restore` input for the filter table: traffic forwarded from `lan` is
    /// allowed if it belongs to an established flow, or (`set` given) matches the ipset
    /// `set`, or (no set) one rule per (network, protocol, ports) triple of a chain; the
    /// rest from `lan` is dropped. Return traffic passes by conntrack, as with fwd's flows.
    pub fn iptables_restore(&self, lan: &str, set: Option<&str>) -> String {
        let mut text = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:fwd-egress - [0:0]\n",
        );
        let _ = writeln!(text, "-A FORWARD -i {lan} -j fwd-egress");
        text.push_str("-A fwd-egress -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
        match set {
            Some(set) => {
                let _ = writeln!(
                    text,
                    "-A fwd-egress -m set --match-set {set} dst,dst -j ACCEPT"
                );
            }
            None => {
                for ((net, len), proto, (lo, hi)) in self.triples() {
                    let ports = if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}:{hi}")
                    };
                    let _ = writeln!(
                        text,
                        "-A fwd-egress -d {net}/{len} -p {} --dport {ports} -j ACCEPT",
                        proto.name()
                    );
                }
            }
        }
        text.push_str("-A fwd-egress -j DROP\nCOMMIT\n");
        text
    }
}

/// One element of a concatenated `ipv4_addr . inet_proto . inet_service` interval set:
/// addresses `first..=last`, a protocol, ports `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConcatElement {
    pub first: u32,
    pub last: u32,
    pub proto: Proto,
    pub ports: (u16, u16),
}

impl RuleSet {
    /// The rule set as elements of a concatenated interval set. nftables refuses
    /// overlapping elements there, so the address axis is cut into pieces on which the same
    /// rules apply, each piece's port ranges merged per protocol, and neighbouring pieces
    /// with the same ports joined: what a user writing such a set by hand has to do.
    pub fn concat_elements(&self) -> Vec<ConcatElement> {
        use std::collections::BTreeMap;
        // (address, +1 start / -1 end) events; an end is at the last address + 1.
        let mut events: Vec<(u64, i32, Proto, (u16, u16))> = Vec::new();
        for ((net, len), proto, ports) in self.triples() {
            let first = u64::from(u32::from(net));
            let size = 1u64 << (32 - u32::from(len));
            events.push((first, 1, proto, ports));
            events.push((first + size, -1, proto, ports));
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut active: BTreeMap<(u8, u16, u16), usize> = BTreeMap::new();
        let mut out: Vec<ConcatElement> = Vec::new();
        let mut i = 0;
        while i < events.len() {
            let at = events[i].0;
            while i < events.len() && events[i].0 == at {
                let (_, delta, proto, (lo, hi)) = events[i];
                let key = (proto.number(), lo, hi);
                let n = active.entry(key).or_insert(0);
                if delta > 0 {
                    *n += 1;
                } else {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&key);
                    }
                }
                i += 1;
            }
            let Some(&(next, ..)) = events.get(i) else {
                break;
            };
            if active.is_empty() {
                continue;
            }
            // Merge the active port ranges per protocol (the map iterates in order).
            let mut merged: Vec<(u8, u16, u16)> = Vec::new();
            for &(proto, lo, hi) in active.keys() {
                match merged.last_mut() {
                    Some(last) if last.0 == proto && u32::from(lo) <= u32::from(last.2) + 1 => {
                        last.2 = last.2.max(hi);
                    }
                    _ => merged.push((proto, lo, hi)),
                }
            }
            let (first, last) = (at as u32, (next - 1) as u32);
            // Join with the previous piece when it ends just before and has the same ports.
            let start = out.len()
                - out
                    .iter()
                    .rev()
                    .take_while(|e| e.last.wrapping_add(1) == first)
                    .count();
            let previous: Vec<(u8, u16, u16)> = out[start..]
                .iter()
                .map(|e| (e.proto.number(), e.ports.0, e.ports.1))
                .collect();
            if !previous.is_empty() && previous == merged {
                for e in &mut out[start..] {
                    e.last = last;
                }
                continue;
            }
            for (proto, lo, hi) in merged {
                out.push(ConcatElement {
                    first,
                    last,
                    proto: if proto == 6 { Proto::Tcp } else { Proto::Udp },
                    ports: (lo, hi),
                });
            }
        }
        out
    }

    /// An `nft -f` script for `table inet TABLE`: traffic forwarded from `lan` passes if it
    /// belongs to an established flow or its destination . protocol . port is in one
    /// concatenated interval set; the rest from `lan` is dropped. Loading it replaces the
    /// table in one transaction.
    pub fn nft_concat(&self, table: &str, lan: &str) -> String {
        let mut text = format!(
            "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n\
             \tset allow4 {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags interval\n"
        );
        let elements = self.concat_elements();
        if !elements.is_empty() {
            text.push_str("\t\telements = {\n");
            for e in &elements {
                let addr = if e.first == e.last {
                    Ipv4Addr::from(e.first).to_string()
                } else {
                    format!("{}-{}", Ipv4Addr::from(e.first), Ipv4Addr::from(e.last))
                };
                let ports = if e.ports.0 == e.ports.1 {
                    e.ports.0.to_string()
                } else {
                    format!("{}-{}", e.ports.0, e.ports.1)
                };
                let _ = writeln!(text, "\t\t\t{addr} . {} . {ports},", e.proto.name());
            }
            text.push_str("\t\t}\n");
        }
        let _ = write!(
            text,
            "\t}}\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"{lan}\" ct state established,related accept\n\
             \t\tiifname \"{lan}\" ip daddr . meta l4proto . th dport @allow4 accept\n\
             \t\tiifname \"{lan}\" drop\n\t}}\n}}\n"
        );
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_packets_are_what_they_claim() {
        let set = RuleSet::generate(500, 50, 7);
        assert_eq!(set.prefixes(), 500);
        assert_eq!(set.rules.len(), 10);
        let mut rng = Rng(11);
        for _ in 0..200 {
            let (dst, proto, port) = set.allowed_packet(&mut rng);
            assert!(set.allows(dst, proto, port), "{dst} {proto:?} {port}");
            let (dst, proto, port) = set.denied_packet(&mut rng);
            assert!(!set.allows(dst, proto, port), "{dst} {proto:?} {port}");
        }
        for rule in &set.rules {
            assert!(rule.ports.1 - rule.ports.0 < 8 && rule.ports.0 > CLOSED_PORT);
            for (net, len) in &rule.nets {
                let n = u32::from(*net);
                assert_eq!(n >> (32 - SPACE.1), SPACE.0 >> (32 - SPACE.1));
                assert_eq!(
                    n & !(u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0)),
                    0
                );
            }
        }
    }

    #[test]
    fn concatenated_elements_are_disjoint_and_allow_what_the_rules_allow() {
        // Few rules in a small space, so networks nest and overlap across rules.
        let mut set = RuleSet::generate(300, 30, 5);
        for (i, rule) in set.rules.iter_mut().enumerate() {
            rule.ports = (1000 + (i as u16 % 3) * 2, 1003 + (i as u16 % 3) * 2);
            for net in &mut rule.nets {
                let a = (u32::from(net.0) & 0xfff0_00ff) | 0x2000_0000;
                let len = net.1.max(24);
                net.0 = Ipv4Addr::from(a >> (32 - len) << (32 - len));
                net.1 = len;
            }
        }
        let elements = set.concat_elements();
        for (i, a) in elements.iter().enumerate() {
            for b in &elements[i + 1..] {
                let overlap = a.proto == b.proto
                    && a.first <= b.last
                    && b.first <= a.last
                    && a.ports.0 <= b.ports.1
                    && b.ports.0 <= a.ports.1;
                assert!(!overlap, "{a:?} overlaps {b:?}");
            }
        }
        let inside = |dst: Ipv4Addr, proto: Proto, port: u16| {
            let d = u32::from(dst);
            elements.iter().any(|e| {
                e.proto == proto
                    && (e.first..=e.last).contains(&d)
                    && (e.ports.0..=e.ports.1).contains(&port)
            })
        };
        let mut rng = Rng(99);
        for _ in 0..2000 {
            for (dst, proto, port) in [set.allowed_packet(&mut rng), set.denied_packet(&mut rng), {
                let (d, p, _) = set.allowed_packet(&mut rng);
                (d, p, 998 + rng.below(12) as u16)
            }] {
                assert_eq!(
                    inside(dst, proto, port),
                    set.allows(dst, proto, port),
                    "{dst} {proto:?} {port}"
                );
            }
        }
        let text = set.nft_concat("bench_concat", "lan0");
        assert_eq!(
            text.matches(" . ").count(),
            2 * elements.len() + 4,
            "{text}"
        );
        assert!(text.contains("ip daddr . meta l4proto . th dport @allow4 accept"));
    }

    #[test]
    fn renderings_carry_every_triple() {
        let set = RuleSet::generate(30, 10, 3);
        let chain = set.iptables_restore("lan0", None);
        assert_eq!(chain.matches(" -j ACCEPT").count(), 30 + 1);
        assert!(chain.contains("-A FORWARD -i lan0 -j fwd-egress\n"));
        assert!(chain.ends_with("-A fwd-egress -j DROP\nCOMMIT\n"));
        let ports: usize = set
            .rules
            .iter()
            .map(|r| r.nets.len() * usize::from(r.ports.1 - r.ports.0 + 1))
            .sum();
        let ipset = set.ipset_restore("s");
        assert_eq!(
            ipset.lines().filter(|l| l.starts_with("add s ")).count(),
            ports
        );
        let ((net, len), proto, (lo, _)) = set.triples().next().unwrap();
        assert!(ipset.contains(&format!("add s {net}/{len},{}:{lo}\n", proto.name())));
        assert!(
            set.iptables_restore("lan0", Some("s"))
                .contains("-m set --match-set s dst,dst -j ACCEPT")
        );
        let dir = std::env::temp_dir().join(format!("fwd-bench-rules-{}", std::process::id()));
        set.write_fwd_policy(&dir).unwrap();
        let policy = std::fs::read_to_string(dir.join("bench.toml")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(policy.matches("[[rule]]").count(), 3);
        assert_eq!(policy.matches("\",\n").count(), 30);
    }
}
