//! The policy tables of one slot, as the kernel reads them and the compiler writes them.
//!
//! Remote address -> class: a direct index on the address's top `INDEX_BITS` bits
//! (`IDX4`/`IDX6`), whose entry is the class of the whole chunk, or a slice of the sorted,
//! disjoint ranges (`RNG4`/`RNG6`) searched for the last range starting at or below the
//! address (DXR), or, where a chunk holds more than `LEAF_RANGES` ranges, a node of 256
//! entries on the next 8 bits (`NODES4`/`NODES6`), down until the slices are short. So a
//! search is a few steps in one cache line or two, however skewed the prefixes are. Class -> verdict: one `ClassRecord` (`CLASSES`), then a search
//! of that class's sorted port ranges for the packet's direction and protocol (`PORT_RANGES`).
//! Every table is a plain array: no pointers to chase, lookups the verifier inlines, and
//! userspace writes a whole slot through `mmap`.
//!
//! `search` is the one binary search both sides use, so `fwd explain` reads the tables
//! exactly as the kernel does.

use crate::PortVerdict;

/// Address bits of the direct index.
pub const INDEX_BITS: u32 = 16;
/// Entries of `IDX4`/`IDX6`.
pub const INDEX_ENTRIES: u32 = 1 << INDEX_BITS;

/// Class values of the address tables that are not class records.
pub mod class {
    /// No rule covers the address.
    pub const NONE: u32 = u32::MAX;
    /// A configured exemption (management networks, the gateway's own addresses).
    pub const EXEMPT: u32 = u32::MAX - 1;
}

/// `rule` of a `PortRange` or `PortVerdict` that allows nothing.
pub const NO_RULE: u32 = u32::MAX;

/// The most ranges one index entry's slice holds; a longer one is split by a node.
pub const LEAF_RANGES: u32 = 64;
/// Address bits a node indexes.
pub const NODE_BITS: u32 = 8;
/// Entries of one node.
pub const NODE_ENTRIES: u32 = 1 << NODE_BITS;
/// `IndexEntry::count` of an entry that is a node: `base` is its first entry.
pub const NODE: u32 = 1 << 31;
/// Node levels below the direct index: down to single addresses.
pub const MAX_DEPTH4: u32 = (32 - INDEX_BITS) / NODE_BITS;
pub const MAX_DEPTH6: u32 = (128 - INDEX_BITS) / NODE_BITS;
/// Search steps that cover any slice (at most `LEAF_RANGES` ranges).
pub const SEARCH_STEPS4: u32 = 7;
pub const SEARCH_STEPS6: u32 = 7;
/// Search steps that cover any port list (at most 2^16 ranges).
pub const SEARCH_STEPS_PORTS: u32 = 17;

/// One entry of the direct index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    /// With `count == 0`: the class of every address it covers. With `count == NODE`: the
    /// first entry of its node. Otherwise the position of the first range of its slice (the
    /// range holding its first address) in the range table.
    pub base: u32,
    /// Ranges of its slice, 0, or `NODE`.
    pub count: u32,
}

/// An IPv4 range: from `start` (host order) up to the next range's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Range4 {
    pub start: u32,
    pub class: u32,
}

/// An IPv6 range: from `start` (the address as a big-endian number, in two halves) up to
/// the next range's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Range6 {
    pub start_hi: u64,
    pub start_lo: u64,
    pub class: u32,
    pub _pad: u32,
}

impl Range6 {
    #[inline(always)]
    pub const fn start(&self) -> u128 {
        ((self.start_hi as u128) << 64) | self.start_lo as u128
    }
}

/// Ports from `start` up to the next range's start, owned by `rule` (or `NO_RULE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub start: u16,
    /// `PortVerdict::FLAG_*` of the rule.
    pub flags: u16,
    pub rule: u32,
}

/// Where one (direction, protocol) list of a class sits in `PORT_RANGES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortList {
    pub base: u32,
    /// 0: the class has no rule for this protocol; its `any`-protocol verdict applies.
    pub count: u32,
}

/// Protocols with port lists of their own; any other protocol takes the `any` verdict.
pub const LIST_PROTOCOLS: [u8; 4] = [
    crate::proto::TCP,
    crate::proto::UDP,
    crate::proto::ICMP,
    crate::proto::ICMPV6,
];
/// Directions of a class record, indexed by the `direction` codes.
pub const DIRECTIONS: usize = 3;

/// The position of `protocol` in `LIST_PROTOCOLS`.
#[inline(always)]
pub const fn list_index(protocol: u8) -> Option<usize> {
    match protocol {
        crate::proto::TCP => Some(0),
        crate::proto::UDP => Some(1),
        crate::proto::ICMP => Some(2),
        crate::proto::ICMPV6 => Some(3),
        _ => None,
    }
}

/// What a class allows, per direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClassRecord {
    /// `ClassRecord::FLAG_*`.
    pub flags: u32,
    pub _pad: u32,
    /// Per direction: the `any`-protocol rule (`rule == NO_RULE`: none). It covers every
    /// protocol without a list, and the ports a list leaves to it.
    pub any: [PortVerdict; DIRECTIONS],
    /// Per direction and `LIST_PROTOCOLS` entry: the sorted port ranges.
    pub lists: [[PortList; LIST_PROTOCOLS.len()]; DIRECTIONS],
    /// With `FLAG_INLINE_EGRESS`: the egress lists' ranges, which their `base` and `count`
    /// index here rather than in `PORT_RANGES`. Most classes open a few egress ports: their
    /// packets then read no port table, and the read of these ranges does not wait for the
    /// list's `base` (one cache miss fewer on a new flow's path at large policies).
    pub inline: [PortRange; INLINE_PORT_RANGES],
}

/// Port ranges a class record holds for its egress lists (one cache line).
pub const INLINE_PORT_RANGES: usize = 8;

impl ClassRecord {
    /// The class holds a rule of a vendor in audit mode: what no rule allows passes as
    /// `audit_would_drop`.
    pub const FLAG_AUDIT: u32 = 1;
    /// Some ingress rule of the class is `related`: it asks whether the protected network
    /// has a live flow with the remote. The programs record the remotes of allowed
    /// outbound flows (`REMOTES`) only for such classes and for learned hosts (whose
    /// expiry asks the same): a lookup or insert of an LRU map on every new flow otherwise
    /// (`cargo xtask bench`, alternating builds: new flows at 1,000,000 prefixes 843/880 ns
    /// with it, 745/725 ns without).
    pub const FLAG_RELATED_INGRESS: u32 = 2;
    /// The egress lists are in `inline`.
    pub const FLAG_INLINE_EGRESS: u32 = 4;

    pub const EMPTY: ClassRecord = ClassRecord {
        flags: 0,
        _pad: 0,
        any: [PortVerdict {
            rule: NO_RULE,
            flags: 0,
        }; DIRECTIONS],
        lists: [[PortList { base: 0, count: 0 }; LIST_PROTOCOLS.len()]; DIRECTIONS],
        inline: [PortRange {
            start: 0,
            flags: 0,
            rule: NO_RULE,
        }; INLINE_PORT_RANGES],
    };

    /// Whether `direction`'s lists are in `inline`.
    #[inline(always)]
    pub const fn inline_lists(&self, direction: usize) -> bool {
        direction == crate::direction::EGRESS as usize && self.flags & Self::FLAG_INLINE_EGRESS != 0
    }

    /// Moves the lists kept in `PORT_RANGES` by `offset` entries (their ranges were written
    /// `offset` further on); inline lists stay.
    pub fn rebase(&mut self, offset: u32) {
        for dir in 0..DIRECTIONS {
            if self.inline_lists(dir) {
                continue;
            }
            for list in &mut self.lists[dir] {
                list.base += offset;
            }
        }
    }
}

impl Default for ClassRecord {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// The position of the last of `count` ascending starts (read by `start_at`, from `base`)
/// that is at or below `key`, in at most `steps` halvings; `None` if `key` is below the
/// first, or a read fails. `count` must be at most `2^(steps-1)`; the first start of every
/// table here is the lowest key, so a hit is certain.
#[inline(always)]
pub fn search<K: PartialOrd + Copy>(
    base: u32,
    count: u32,
    steps: u32,
    key: K,
    start_at: impl Fn(u32) -> Option<K>,
) -> Option<u32> {
    let mut lo = base;
    let mut n = count;
    // A bounded loop the verifier accepts (5.3+): one halving per step.
    for _ in 0..steps {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        if start_at(lo + half)? <= key {
            lo += half;
            n -= half;
        } else {
            n = half;
        }
    }
    if n == 1 && start_at(lo)? <= key {
        Some(lo)
    } else {
        None
    }
}

/// From a direct-index entry down through its nodes to the entry whose slice holds `key`:
/// `byte_at(level)` is the key's 8 bits that node level indexes, `node_at` reads a node
/// entry. `None` if a read fails (never by construction).
#[inline(always)]
pub fn descend(
    entry: &IndexEntry,
    max_depth: u32,
    byte_at: impl Fn(u32) -> u32,
    node_at: impl Fn(u32) -> Option<IndexEntry>,
) -> Option<IndexEntry> {
    let mut e = *entry;
    // A bounded loop the verifier accepts (5.3+): one node level per step.
    for level in 0..max_depth {
        if e.count != NODE {
            return Some(e);
        }
        e = node_at(e.base + (byte_at(level) & (NODE_ENTRIES - 1)))?;
    }
    if e.count == NODE { None } else { Some(e) }
}

/// The 8 bits of an IPv4 address (host order) that node `level` indexes.
#[inline(always)]
pub const fn node_byte4(addr: u32, level: u32) -> u32 {
    (addr >> (32 - INDEX_BITS - NODE_BITS * (level + 1))) & 0xff
}

/// The 8 bits of an IPv6 address (two big-endian halves) that node `level` indexes.
#[inline(always)]
pub const fn node_byte6(hi: u64, lo: u64, level: u32) -> u32 {
    let shift = 128 - INDEX_BITS - NODE_BITS * (level + 1);
    if shift >= 64 {
        ((hi >> (shift - 64)) & 0xff) as u32
    } else {
        ((lo >> shift) & 0xff) as u32
    }
}

/// The class of `key` in the slice of `entry` (a leaf, not a node): its own class, or the
/// class of the range `key` falls in (`range_at` reads (start, class) of a range);
/// `class::NONE` if a read fails.
#[inline(always)]
pub fn chunk_class<K: PartialOrd + Copy>(
    entry: &IndexEntry,
    steps: u32,
    key: K,
    range_at: impl Fn(u32) -> Option<(K, u32)>,
) -> u32 {
    if entry.count == 0 {
        return entry.base;
    }
    search(entry.base, entry.count, steps, key, |i| {
        range_at(i).map(|r| r.0)
    })
    .and_then(|i| range_at(i).map(|r| r.1))
    .unwrap_or(class::NONE)
}

/// The rule of `record` for a packet going `direction` (a `direction::` code) with
/// `protocol` and `port` (the remote port for egress and `INGRESS_REMOTE_PORT`, the local
/// one for `INGRESS_LOCAL_PORT`), reading the port ranges with `port_at`.
#[inline(always)]
pub fn port_verdict(
    record: &ClassRecord,
    direction: u8,
    protocol: u8,
    port: u16,
    port_at: impl Fn(u32) -> Option<PortRange>,
) -> Option<PortVerdict> {
    let dir = direction as usize;
    let any = *record.any.get(dir)?;
    let list = match list_index(protocol) {
        Some(p) => *record.lists.get(dir)?.get(p)?,
        None => PortList { base: 0, count: 0 },
    };
    let inline = record.inline_lists(dir);
    let read = |i: u32| {
        if inline {
            record.inline.get(i as usize).copied()
        } else {
            port_at(i)
        }
    };
    let verdict = if list.count == 0 {
        any
    } else {
        let at = search(list.base, list.count, SEARCH_STEPS_PORTS, port, |i| {
            read(i).map(|r| r.start)
        })?;
        let r = read(at)?;
        PortVerdict {
            rule: r.rule,
            flags: r.flags as u32,
        }
    };
    if verdict.rule == NO_RULE {
        None
    } else {
        Some(verdict)
    }
}

/// The chunk of the direct index an IPv4 address (host order) falls in.
#[inline(always)]
pub const fn chunk4(addr: u32) -> u32 {
    addr >> (32 - INDEX_BITS)
}

/// The chunk of the direct index an IPv6 address falls in.
#[inline(always)]
pub const fn chunk6(addr_hi: u64) -> u32 {
    (addr_hi >> (64 - INDEX_BITS)) as u32
}

const _: () = {
    assert!(core::mem::size_of::<IndexEntry>() == 8);
    assert!(core::mem::size_of::<Range4>() == 8);
    assert!(core::mem::size_of::<Range6>() == 24);
    assert!(core::mem::size_of::<PortRange>() == 8);
    assert!(core::mem::size_of::<PortList>() == 8);
    assert!(core::mem::size_of::<ClassRecord>() == 192);
    // `search` halves `n` once per step: the bounds must cover the longest slice.
    assert!(1u64 << (SEARCH_STEPS6 - 1) >= LEAF_RANGES as u64);
    assert!(1u64 << (SEARCH_STEPS4 - 1) >= LEAF_RANGES as u64);
    assert!(INDEX_BITS + MAX_DEPTH4 * NODE_BITS == 32);
    assert!(INDEX_BITS + MAX_DEPTH6 * NODE_BITS == 128);
    assert!(1u64 << (SEARCH_STEPS_PORTS - 1) >= 65536);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] plain integers with no implicit padding (sizes checked above).
    unsafe impl aya::Pod for super::IndexEntry {}
    unsafe impl aya::Pod for super::Range4 {}
    unsafe impl aya::Pod for super::Range6 {}
    unsafe impl aya::Pod for super::PortRange {}
    unsafe impl aya::Pod for super::PortList {}
    unsafe impl aya::Pod for super::ClassRecord {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brute-force answer: the last start at or below `key`.
    fn reference(starts: &[u32], key: u32) -> Option<u32> {
        starts.iter().rposition(|&s| s <= key).map(|i| i as u32)
    }

    #[test]
    fn search_finds_the_last_start_at_or_below_the_key() {
        let mut seed = 0x1234_5678_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [1usize, 2, 3, 7, 8, 9, 100, 4096] {
            let mut starts: Vec<u32> = (0..len).map(|_| next() % 100_000).collect();
            starts.sort_unstable();
            starts.dedup();
            for _ in 0..200 {
                let key = next() % 110_000;
                let got = search(0, starts.len() as u32, SEARCH_STEPS_PORTS, key, |i| {
                    starts.get(i as usize).copied()
                });
                assert_eq!(got, reference(&starts, key), "{len} starts, key {key}");
            }
            // Edges: each start, one below it, one above.
            for (i, &s) in starts.iter().enumerate() {
                let at = |k| {
                    search(0, starts.len() as u32, SEARCH_STEPS_PORTS, k, |j| {
                        starts.get(j as usize).copied()
                    })
                };
                assert_eq!(at(s), Some(i as u32));
                if s > 0 {
                    assert_eq!(at(s - 1), reference(&starts, s - 1));
                }
            }
        }
    }

    #[test]
    fn node_bytes_follow_the_index_bits() {
        assert_eq!(node_byte4(0x0a0b_0c0d, 0), 0x0c);
        assert_eq!(node_byte4(0x0a0b_0c0d, 1), 0x0d);
        let (hi, lo) = (0x2001_0db8_1234_5678_u64, 0x9abc_def0_1122_3344_u64);
        assert_eq!(node_byte6(hi, lo, 0), 0x0d);
        assert_eq!(node_byte6(hi, lo, 5), 0x78);
        assert_eq!(node_byte6(hi, lo, 6), 0x9a);
        assert_eq!(node_byte6(hi, lo, MAX_DEPTH6 - 1), 0x44);
        // Through a node to its leaf.
        let nodes: Vec<IndexEntry> = (0..NODE_ENTRIES)
            .map(|i| IndexEntry { base: i, count: 0 })
            .collect();
        let root = IndexEntry {
            base: 0,
            count: NODE,
        };
        let leaf = descend(&root, 1, |_| 0x42, |i| nodes.get(i as usize).copied());
        assert_eq!(
            leaf,
            Some(IndexEntry {
                base: 0x42,
                count: 0
            })
        );
        assert_eq!(descend(&root, 0, |_| 0, |_| None), None, "too deep");
    }

    #[test]
    fn search_respects_the_base_and_the_step_bound() {
        let table = [5u32, 0, 10, 20, 30, 99];
        // The list is table[1..5]: 0, 10, 20, 30.
        let at = |k| search(1, 4, 3, k, |i| table.get(i as usize).copied());
        assert_eq!(at(0), Some(1));
        assert_eq!(at(15), Some(2));
        assert_eq!(at(30), Some(4));
        assert_eq!(at(1000), Some(4));
        // The longest slice fits the bound.
        let full: Vec<u32> = (0..LEAF_RANGES).collect();
        for key in [0, 1, LEAF_RANGES / 2, LEAF_RANGES - 1] {
            assert_eq!(
                search(0, LEAF_RANGES, SEARCH_STEPS4, key, |i| full
                    .get(i as usize)
                    .copied()),
                Some(key)
            );
        }
    }
}
