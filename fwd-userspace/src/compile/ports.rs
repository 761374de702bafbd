//! Each class's port entries: which rule owns each (direction, protocol, port) in the
//! kernel's precedence.

use std::collections::{BTreeMap, HashMap};

use fwd_common::{PortKey, PortVerdict, direction, port_range_blocks, proto};

use crate::policy::{Direction, PortRange, PortSide, Protocol};

use super::{image::CompiledRule, image::PortEntry};

/// The direction byte of a rule's port keys. Portless ingress rules live with local ports.
pub(super) fn direction_code(d: Direction, side: PortSide) -> u8 {
    match (d, side) {
        (Direction::Egress, _) => direction::EGRESS,
        (Direction::Ingress, PortSide::Local) => direction::INGRESS_LOCAL_PORT,
        (Direction::Ingress, PortSide::Remote) => direction::INGRESS_REMOTE_PORT,
    }
}

/// The owner of each port of `0..=65535` among `ranges`: the narrowest range, then a rule
/// that names addresses over an `any` rule, then the rule compiled first. Returns disjoint
/// ascending (range, rule id) runs.
pub(super) fn port_owners(ranges: &[(PortRange, &CompiledRule)]) -> Vec<(PortRange, u32)> {
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
pub(super) fn class_ports(class: u32, members: &[&CompiledRule], out: &mut Vec<PortEntry>) {
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
