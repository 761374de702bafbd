//! The policy lookups: remote address -> class record, then (class, direction, protocol,
//! port) -> rule, over one slot's flat tables (`fwd_common::tables`, whose search and port
//! stage `fwd explain` shares).
//!
//! Precedence: an exemption owns its addresses; a learned host (the DNS proxy's) beats a
//! covering network; otherwise the longest listed prefix (the compiler flattened them into
//! ranges). Within a class the port lists hold the compiler's choice (narrowest range, named
//! addresses over `any`, unconditional over `related`); a protocol without a list, and the
//! ports a list leaves open, take the class's `any`-protocol rule.

use fwd_common::{
    Addr, PortVerdict,
    tables::{
        ClassRecord, MAX_DEPTH4, MAX_DEPTH6, SEARCH_STEPS4, SEARCH_STEPS6, chunk_class, chunk4,
        chunk6, class, descend, node_byte4, node_byte6,
    },
};

use crate::maps::Slot;

/// The remote's class: `class::EXEMPT`, `class::NONE` or a record index, and whether it is
/// a learned host's. `hosts`: the slot has learned hosts of this family.
#[inline(always)]
pub fn class_of<S: Slot>(family: u8, addr: &Addr, hosts: bool) -> (u32, bool) {
    let v4 = [addr[12], addr[13], addr[14], addr[15]];
    let listed = if family == 4 {
        class_of4::<S>(u32::from_be_bytes(v4))
    } else {
        class_of6::<S>(addr)
    };
    if listed == class::EXEMPT || !hosts {
        return (listed, false);
    }
    // SAFETY: plain value reads.
    let learned = unsafe {
        if family == 4 {
            S::hosts4().get(v4)
        } else {
            S::hosts6().get(addr)
        }
    };
    match learned {
        Some(class) => (*class, true),
        None => (listed, false),
    }
}

#[inline(always)]
fn class_of4<S: Slot>(addr: u32) -> u32 {
    let Some(entry) = S::idx4().get(chunk4(addr)) else {
        return class::NONE;
    };
    let nodes = S::nodes4();
    let Some(leaf) = descend(
        entry,
        MAX_DEPTH4,
        |l| node_byte4(addr, l),
        |i| nodes.get(i).copied(),
    ) else {
        return class::NONE;
    };
    let ranges = S::rng4();
    chunk_class(&leaf, SEARCH_STEPS4, addr, |i| {
        ranges.get(i).map(|r| (r.start, r.class))
    })
}

#[inline(always)]
fn class_of6<S: Slot>(addr: &Addr) -> u32 {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let Some(entry) = S::idx6().get(chunk6(hi)) else {
        return class::NONE;
    };
    let nodes = S::nodes6();
    let Some(leaf) = descend(
        entry,
        MAX_DEPTH6,
        |l| node_byte6(hi, lo, l),
        |i| nodes.get(i).copied(),
    ) else {
        return class::NONE;
    };
    let ranges = S::rng6();
    chunk_class(&leaf, SEARCH_STEPS6, (hi, lo), |i| {
        ranges.get(i).map(|r| ((r.start_hi, r.start_lo), r.class))
    })
}

/// The class record of a class index (none for `NONE` and `EXEMPT`).
#[inline(always)]
pub fn record<S: Slot>(class: u32) -> Option<&'static ClassRecord> {
    S::classes().get(class)
}

/// The rule of `record` for a packet going `direction` with `protocol` and `port`.
#[inline(always)]
pub fn port_verdict<S: Slot>(
    record: &ClassRecord,
    direction: u8,
    protocol: u8,
    port: u16,
) -> Option<PortVerdict> {
    let ports = S::port_ranges();
    fwd_common::tables::port_verdict(record, direction, protocol, port, |i| ports.get(i).copied())
}
