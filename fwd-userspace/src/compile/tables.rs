//! A compiled image as the kernel's flat tables (`fwd_common::tables`): the address
//! prefixes become disjoint ranges behind a direct index, each class a record with sorted
//! port ranges. The longest-prefix semantics of the image are kept exactly: a prefix inside
//! another owns its addresses, and an exemption owns its addresses over any policy.
//!
//! `SlotTables::lookup_address` and `fwd_common::tables::port_verdict` read the tables with
//! the kernel's own search, so what they say is what the kernel does.

use std::net::IpAddr;

use fwd_common::{
    CLASS_AUDIT, PortVerdict,
    tables::{
        ClassRecord, DIRECTIONS, INDEX_BITS, INDEX_ENTRIES, INLINE_PORT_RANGES, IndexEntry,
        LEAF_RANGES, LIST_PROTOCOLS, MAX_DEPTH4, MAX_DEPTH6, NODE, NODE_BITS, NODE_ENTRIES,
        PortList, PortRange, Range4, Range6, SEARCH_STEPS4, SEARCH_STEPS6, chunk_class, chunk4,
        chunk6, class, descend, node_byte4, node_byte6,
    },
};
use ipnet::IpNet;

use super::{MapImage, PortEntry};

/// One slot's tables, ready to be written into the kernel's arrays.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotTables {
    /// `INDEX_ENTRIES` entries.
    pub idx4: Vec<IndexEntry>,
    /// Nodes of `NODE_ENTRIES` entries each, for chunks with many ranges.
    pub nodes4: Vec<IndexEntry>,
    pub rng4: Vec<Range4>,
    /// `INDEX_ENTRIES` entries.
    pub idx6: Vec<IndexEntry>,
    pub nodes6: Vec<IndexEntry>,
    pub rng6: Vec<Range6>,
    /// One record per class of the image (index = class id).
    pub classes: Vec<ClassRecord>,
    pub ports: Vec<PortRange>,
}

/// How big the tables of an image are, for capacities and `fwd status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    pub ranges4: usize,
    pub ranges6: usize,
    /// Node entries (`NODE_ENTRIES` per node).
    pub nodes4: usize,
    pub nodes6: usize,
    pub classes: usize,
    pub port_ranges: usize,
}

impl SlotTables {
    /// The tables of `image`, with `exempt` networks owning their addresses.
    pub fn build(image: &MapImage, exempt: &[IpNet]) -> Self {
        let v4: Vec<(u128, u8, u32)> = image
            .dst4
            .iter()
            .map(|(n, c)| (u128::from(u32::from(n.network())), n.prefix_len(), *c))
            .collect();
        let v6: Vec<(u128, u8, u32)> = image
            .dst6
            .iter()
            .map(|(n, c)| (u128::from(n.network()), n.prefix_len(), *c))
            .collect();
        let exempt4: Vec<(u128, u8, bool)> = exempt
            .iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some((u128::from(u32::from(n.network())), n.prefix_len(), true)),
                IpNet::V6(_) => None,
            })
            .collect();
        let exempt6: Vec<(u128, u8, bool)> = exempt
            .iter()
            .filter_map(|n| match n {
                IpNet::V6(n) => Some((u128::from(n.network()), n.prefix_len(), true)),
                IpNet::V4(_) => None,
            })
            .collect();
        let ranges4 = address_ranges(v4, exempt4, 32);
        let ranges6 = address_ranges(v6, exempt6, 128);
        let (idx4, nodes4) = indexed(&ranges4, 32);
        let (idx6, nodes6) = indexed(&ranges6, 128);
        let rng4 = ranges4
            .iter()
            .map(|&(start, class)| Range4 {
                start: start as u32,
                class,
            })
            .collect();
        let rng6 = ranges6
            .iter()
            .map(|&(start, class)| Range6 {
                start_hi: (start >> 64) as u64,
                start_lo: start as u64,
                class,
                _pad: 0,
            })
            .collect();
        let mut by_class: Vec<Vec<PortEntry>> = vec![Vec::new(); image.classes as usize];
        for e in &image.ports {
            if let Some(list) = by_class.get_mut(e.key.class() as usize) {
                list.push(*e);
            }
        }
        let mut classes = Vec::with_capacity(by_class.len());
        let mut ports = Vec::new();
        for (id, entries) in by_class.iter().enumerate() {
            let audit = image.class_members.get(id).is_some_and(|members| {
                members.iter().any(|&r| {
                    image
                        .rule(r)
                        .is_some_and(|r| image.audit_vendors.contains(&r.vendor))
                })
            });
            classes.push(class_record(entries, audit, &mut ports));
        }
        SlotTables {
            idx4,
            nodes4,
            rng4,
            idx6,
            nodes6,
            rng6,
            classes,
            ports,
        }
    }

    pub fn sizes(&self) -> TableSizes {
        TableSizes {
            ranges4: self.rng4.len(),
            ranges6: self.rng6.len(),
            nodes4: self.nodes4.len(),
            nodes6: self.nodes6.len(),
            classes: self.classes.len(),
            port_ranges: self.ports.len(),
        }
    }

    /// The class of a remote address (`class::NONE`, `class::EXEMPT` or a record index),
    /// as the kernel's address lookup finds it (learned hosts aside).
    pub fn lookup_address(&self, addr: IpAddr) -> u32 {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.idx4
                    .get(chunk4(a) as usize)
                    .and_then(|e| {
                        descend(
                            e,
                            MAX_DEPTH4,
                            |l| node_byte4(a, l),
                            |i| self.nodes4.get(i as usize).copied(),
                        )
                    })
                    .map_or(class::NONE, |e| {
                        chunk_class(&e, SEARCH_STEPS4, a, |i| {
                            self.rng4.get(i as usize).map(|r| (r.start, r.class))
                        })
                    })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let (hi, lo) = ((a >> 64) as u64, a as u64);
                self.idx6
                    .get(chunk6(hi) as usize)
                    .and_then(|e| {
                        descend(
                            e,
                            MAX_DEPTH6,
                            |l| node_byte6(hi, lo, l),
                            |i| self.nodes6.get(i as usize).copied(),
                        )
                    })
                    .map_or(class::NONE, |e| {
                        chunk_class(&e, SEARCH_STEPS6, a, |i| {
                            self.rng6.get(i as usize).map(|r| (r.start(), r.class))
                        })
                    })
            }
        }
    }
}

/// The record of one class from its port entries (LPM entries: an `any`-protocol entry per
/// direction, and blocks per direction and protocol), appending its port lists to `ports`.
pub fn class_record(entries: &[PortEntry], audit: bool, ports: &mut Vec<PortRange>) -> ClassRecord {
    let mut record = ClassRecord {
        flags: if audit { ClassRecord::FLAG_AUDIT } else { 0 },
        ..ClassRecord::EMPTY
    };
    let related_ingress = entries.iter().any(|e| {
        e.key.direction != fwd_common::direction::EGRESS
            && e.verdict.flags & PortVerdict::FLAG_RELATED != 0
    });
    if related_ingress {
        record.flags |= ClassRecord::FLAG_RELATED_INGRESS;
    }
    for e in entries {
        // The `any`-protocol entry stops before the protocol byte.
        if e.prefix_len == 40
            && let Some(any) = record.any.get_mut(usize::from(e.key.direction))
        {
            *any = e.verdict;
        }
    }
    for dir in 0..DIRECTIONS {
        let any = record.any[dir];
        // This direction's lists, each as (protocol's place, ranges).
        let mut lists: Vec<(usize, Vec<PortRange>)> = Vec::new();
        for (p, &protocol) in LIST_PROTOCOLS.iter().enumerate() {
            let blocks: Vec<(u128, u8, PortVerdict)> = entries
                .iter()
                .filter(|e| {
                    usize::from(e.key.direction) == dir
                        && e.key.protocol == protocol
                        && e.prefix_len >= 48
                })
                .map(|e| {
                    (
                        u128::from(e.key.port()),
                        (e.prefix_len - 48) as u8,
                        e.verdict,
                    )
                })
                .collect();
            if blocks.is_empty() {
                continue;
            }
            let ranges = disjoint(blocks, 16, any)
                .into_iter()
                .map(|(start, v)| PortRange {
                    start: start as u16,
                    flags: v.flags as u16,
                    rule: v.rule,
                })
                .collect();
            lists.push((p, ranges));
        }
        // Egress lists that fit go into the record itself.
        let total: usize = lists.iter().map(|(_, r)| r.len()).sum();
        let inline = dir == usize::from(fwd_common::direction::EGRESS)
            && total > 0
            && total <= INLINE_PORT_RANGES;
        if inline {
            record.flags |= ClassRecord::FLAG_INLINE_EGRESS;
        }
        let mut next = 0;
        for (p, ranges) in lists {
            let base = if inline { next } else { ports.len() };
            record.lists[dir][p] = PortList {
                base: base as u32,
                count: ranges.len() as u32,
            };
            if inline {
                record.inline[next..next + ranges.len()].copy_from_slice(&ranges);
                next += ranges.len();
            } else {
                ports.extend(ranges);
            }
        }
    }
    record
}

/// Disjoint ranges covering the whole `width`-bit space from prefixes `(start, len,
/// value)`: the longest prefix containing an address gives its value, `default` where none
/// does. Adjacent ranges with equal values are merged; the first range starts at 0.
fn disjoint<V: Copy + PartialEq>(
    mut prefixes: Vec<(u128, u8, V)>,
    width: u8,
    default: V,
) -> Vec<(u128, V)> {
    let last = |len: u8, start: u128| {
        if u32::from(width - len) >= 128 {
            u128::MAX
        } else {
            start | ((1u128 << (width - len)) - 1)
        }
    };
    // Outer prefixes before the ones they contain.
    prefixes.sort_by_key(|&(start, len, _)| (start, len));
    let mut out: Vec<(u128, V)> = vec![(0, default)];
    let push = |out: &mut Vec<(u128, V)>, start: u128, value: V| {
        if let Some(&mut (s, ref mut v)) = out.last_mut()
            && s == start
        {
            *v = value;
            // A range replaced in place may now equal its predecessor.
            if out.len() >= 2 && out[out.len() - 2].1 == value {
                out.pop();
            }
            return;
        }
        if out.last().is_some_and(|&(_, v)| v == value) {
            return;
        }
        out.push((start, value));
    };
    // Open prefixes, innermost last: (last address, value).
    let mut open: Vec<(u128, V)> = Vec::new();
    let close_until = |out: &mut Vec<(u128, V)>, open: &mut Vec<(u128, V)>, bound: Option<u128>| {
        while let Some(&(end, _)) = open.last() {
            if bound.is_some_and(|b| end >= b) {
                break;
            }
            open.pop();
            if end == u128::MAX || (width < 128 && end == (1u128 << width) - 1) {
                continue;
            }
            let value = open.last().map_or(default, |&(_, v)| v);
            push(out, end + 1, value);
        }
    };
    for (start, len, value) in prefixes {
        close_until(&mut out, &mut open, Some(start));
        push(&mut out, start, value);
        open.push((last(len, start), value));
    }
    close_until(&mut out, &mut open, None);
    out
}

/// Address ranges of one family: the policy's, with the exemptions' over them.
fn address_ranges(
    policy: Vec<(u128, u8, u32)>,
    exempt: Vec<(u128, u8, bool)>,
    width: u8,
) -> Vec<(u128, u32)> {
    let policy = disjoint(
        policy
            .into_iter()
            .map(|(s, l, c)| (s, l, c & !CLASS_AUDIT))
            .collect(),
        width,
        class::NONE,
    );
    if exempt.is_empty() {
        return policy;
    }
    let exempt = disjoint(exempt, width, false);
    // Walk both boundary lists; each output range takes the exemption if it is one.
    let mut out: Vec<(u128, u32)> = Vec::with_capacity(policy.len() + exempt.len());
    let (mut i, mut j) = (0, 0);
    loop {
        let start = policy[i].0.max(exempt[j].0);
        let value = if exempt[j].1 {
            class::EXEMPT
        } else {
            policy[i].1
        };
        if out.last().is_none_or(|&(_, v)| v != value) {
            out.push((start, value));
        }
        let next_p = policy.get(i + 1).map(|r| r.0);
        let next_e = exempt.get(j + 1).map(|r| r.0);
        match (next_p, next_e) {
            (None, None) => break,
            (Some(p), Some(e)) if p == e => {
                i += 1;
                j += 1;
            }
            (Some(p), Some(e)) if p < e => i += 1,
            (Some(_), None) => i += 1,
            _ => j += 1,
        }
    }
    out
}

/// The direct index and the nodes over one family's disjoint ranges (which the entries'
/// slices point into): an entry whose addresses hold more than `LEAF_RANGES` ranges is a
/// node on the next `NODE_BITS` bits, recursively.
fn indexed(ranges: &[(u128, u32)], width: u8) -> (Vec<IndexEntry>, Vec<IndexEntry>) {
    let mut nodes = Vec::new();
    let bits = u32::from(width) - INDEX_BITS;
    let mut index = Vec::with_capacity(INDEX_ENTRIES as usize);
    // ranges[i] holds the current entry's first address.
    let mut i = 0;
    for chunk in 0..u128::from(INDEX_ENTRIES) {
        let lo = chunk << bits;
        while ranges.get(i + 1).is_some_and(|r| r.0 <= lo) {
            i += 1;
        }
        index.push(entry(ranges, i, lo, bits, &mut nodes));
    }
    (index, nodes)
}

/// The entry for the addresses `lo .. lo + 2^bits`, whose first address is in `ranges[i]`.
fn entry(
    ranges: &[(u128, u32)],
    i: usize,
    lo: u128,
    bits: u32,
    nodes: &mut Vec<IndexEntry>,
) -> IndexEntry {
    let hi = lo | ((1u128 << bits) - 1);
    // The ranges starting in the block after its first: a search over ranges[i..=j].
    let mut j = i;
    let limit = i + LEAF_RANGES as usize - 1;
    while j < limit && ranges.get(j + 1).is_some_and(|r| r.0 <= hi) {
        j += 1;
    }
    if j == i {
        return IndexEntry {
            base: ranges[i].1,
            count: 0,
        };
    }
    let more = ranges.get(j + 1).is_some_and(|r| r.0 <= hi);
    if !more || bits < NODE_BITS {
        return IndexEntry {
            base: i as u32,
            count: (j - i + 1) as u32,
        };
    }
    // Too many for one slice: a node on the next bits.
    let base = nodes.len();
    nodes.resize(base + NODE_ENTRIES as usize, IndexEntry::default());
    let sub = bits - NODE_BITS;
    let mut k = i;
    for n in 0..u128::from(NODE_ENTRIES) {
        let sub_lo = lo | (n << sub);
        while ranges.get(k + 1).is_some_and(|r| r.0 <= sub_lo) {
            k += 1;
        }
        nodes[base + n as usize] = entry(ranges, k, sub_lo, sub, nodes);
    }
    IndexEntry {
        base: base as u32,
        count: NODE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute<V: Copy>(prefixes: &[(u128, u8, V)], width: u8, default: V, addr: u128) -> V {
        prefixes
            .iter()
            .filter(|&&(s, l, _)| {
                let host = width - l;
                u32::from(host) >= 128 || (addr >> host) == (s >> host)
            })
            .max_by_key(|&&(_, l, _)| l)
            .map_or(default, |&(_, _, v)| v)
    }

    fn value_at<V: Copy>(ranges: &[(u128, V)], addr: u128) -> V {
        ranges.iter().rev().find(|r| r.0 <= addr).unwrap().1
    }

    #[test]
    fn nested_prefixes_become_disjoint_ranges() {
        // 10.0.0.0/8 -> 1, 10.1.0.0/16 -> 2, 10.1.2.0/24 -> 3, 10.1.2.255/32 -> 1
        let p = |a: [u8; 4], l, v| (u128::from(u32::from_be_bytes(a)), l, v);
        let prefixes = vec![
            p([10, 0, 0, 0], 8, 1u32),
            p([10, 1, 0, 0], 16, 2),
            p([10, 1, 2, 0], 24, 3),
            p([10, 1, 2, 255], 32, 1),
        ];
        let ranges = disjoint(prefixes.clone(), 32, u32::MAX);
        for w in ranges.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 != w[1].1, "{ranges:?}");
        }
        for a in [
            [9, 255, 255, 255],
            [10, 0, 0, 0],
            [10, 1, 0, 0],
            [10, 1, 2, 0],
            [10, 1, 2, 254],
            [10, 1, 2, 255],
            [10, 1, 3, 0],
            [10, 255, 255, 255],
            [11, 0, 0, 0],
        ] {
            let addr = u128::from(u32::from_be_bytes(a));
            assert_eq!(
                value_at(&ranges, addr),
                brute(&prefixes, 32, u32::MAX, addr),
                "{a:?}"
            );
        }
        // /0 and the last address of the space.
        let all = disjoint(vec![(0, 0, 7u32), (u128::from(u32::MAX), 32, 8)], 32, 0);
        assert_eq!(all, vec![(0, 7), (u128::from(u32::MAX), 8)]);
        let v6 = disjoint(vec![(0, 0, 7u32), (u128::MAX, 128, 8)], 128, 0);
        assert_eq!(v6, vec![(0, 7), (u128::MAX, 8)]);
    }

    /// Tables of many prefixes in one chunk (nodes below the index) look up as the
    /// longest match does, in both families.
    #[test]
    fn crowded_chunks_go_through_nodes_and_match_the_longest_match() {
        let mut seed = 0x51ed_2701_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // IPv4: 3,000 hosts and some /24s and /28s in 10.9.0.0/16; IPv6: the same shape in
        // 2001:db8:5::/48 (one chunk of the index, several node levels down).
        let mut v4: Vec<(u128, u8, u32)> = Vec::new();
        let mut v6: Vec<(u128, u8, u32)> = Vec::new();
        for i in 0..3000u32 {
            let (len, class) = match i % 10 {
                0 => (24, 1),
                1 => (28, 2),
                _ => (32, 3 + i % 5),
            };
            let a = (0x0a09_0000 | (next() as u32 & 0xffff)) >> (32 - len) << (32 - len);
            v4.push((u128::from(a), len, class));
            let len6 = len + 96;
            let b = ((0x2001_0db8_0005_u128 << 80) | u128::from(next() as u16)) >> (128 - len6)
                << (128 - len6);
            v6.push((b, len6, class));
        }
        for list in [&mut v4, &mut v6] {
            list.sort_by_key(|p| (p.0, p.1));
            list.dedup_by_key(|p| (p.0, p.1));
        }
        let image = MapImage {
            dst4: v4
                .iter()
                .map(|&(a, l, c)| (ipnet::Ipv4Net::new((a as u32).into(), l).unwrap(), c))
                .collect(),
            dst6: v6
                .iter()
                .map(|&(a, l, c)| (ipnet::Ipv6Net::new(a.into(), l).unwrap(), c))
                .collect(),
            classes: 8,
            ..MapImage::default()
        };
        let tables = SlotTables::build(&image, &[]);
        assert!(
            !tables.nodes4.is_empty() && !tables.nodes6.is_empty(),
            "nodes built"
        );
        for _ in 0..20_000 {
            let a4 = 0x0a09_0000 | (next() as u32 & 0xffff);
            assert_eq!(
                tables.lookup_address(IpAddr::V4(a4.into())),
                brute(&v4, 32, class::NONE, u128::from(a4)),
                "{a4:#x}"
            );
            let a6 = (0x2001_0db8_0005_u128 << 80) | u128::from(next() as u16);
            assert_eq!(
                tables.lookup_address(IpAddr::V6(a6.into())),
                brute(&v6, 128, class::NONE, a6),
                "{a6:#x}"
            );
        }
        // Every prefix's edges.
        for &(a, l, _) in &v4 {
            let last = a | ((1u128 << (32 - l)) - 1);
            for x in [a.wrapping_sub(1), a, last, last + 1] {
                let x = x as u32;
                assert_eq!(
                    tables.lookup_address(IpAddr::V4(x.into())),
                    brute(&v4, 32, class::NONE, u128::from(x)),
                    "{x:#x}"
                );
            }
        }
    }

    #[test]
    fn random_prefixes_match_the_brute_force_longest_match() {
        let mut seed = 0x9e37_79b9_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..50 {
            // Few high bits so prefixes nest and touch.
            let n = 1 + (next() % 40) as usize;
            let prefixes: Vec<(u128, u8, u32)> = (0..n)
                .map(|_| {
                    let len = (next() % 13) as u8 + 20;
                    let addr =
                        (0x0a00_0000 | (next() as u32 & 0x000f_ffff)) >> (32 - len) << (32 - len);
                    (u128::from(addr), len, (next() % 4) as u32)
                })
                .collect();
            let mut dedup = prefixes.clone();
            dedup.sort_by_key(|p| (p.0, p.1));
            dedup.dedup_by_key(|p| (p.0, p.1));
            let ranges = disjoint(dedup.clone(), 32, 99);
            for _ in 0..500 {
                let addr = u128::from(0x0a00_0000 | (next() as u32 & 0x001f_ffff));
                assert_eq!(
                    value_at(&ranges, addr),
                    brute(&dedup, 32, 99, addr),
                    "round {round}, {addr:#x}, {dedup:?}"
                );
            }
        }
    }
}
