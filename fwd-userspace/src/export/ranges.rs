//! Address ranges for nftables' interval sets and maps: the image's nested prefixes
//! flattened into disjoint ranges with their longest match's class, merged and written.

use std::{
    io::{self, Write},
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

/// The largest value of `width` bits.
pub(super) fn max_of(width: u8) -> u128 {
    u128::MAX >> (128 - u32::from(width))
}

/// Calls `emit` with the disjoint, ascending ranges of an LPM table over `width`-bit keys,
/// each with the value of its longest matching prefix; keys no prefix covers are left out.
/// `prefixes` are (key, prefix length, value); host bits are ignored, and of two equal
/// prefixes the later one wins (as a later insert replaces an earlier one).
pub(super) fn disjoint_ranges<V: Copy, E>(
    mut prefixes: Vec<(u128, u8, V)>,
    width: u8,
    mut emit: impl FnMut(u128, u128, V) -> Result<(), E>,
) -> Result<(), E> {
    let max = max_of(width);
    for p in &mut prefixes {
        p.0 = crate::compile::lpm::mask(p.0 & max, p.1.min(width), width);
        p.1 = p.1.min(width);
    }
    // A prefix sorts after the prefixes that contain it; stable, so equal ones keep order.
    prefixes.sort_by_key(|&(start, len, _)| (start, len));
    // The prefixes containing the current one, outermost first: (last key, value).
    let mut stack: Vec<(u128, V)> = Vec::new();
    // The first key not yet emitted; `None` once past the last key.
    let mut cursor: Option<u128> = Some(0);
    for (start, len, value) in prefixes {
        let end = start | max.checked_shr(u32::from(len)).unwrap_or(0);
        while let Some(&(top_end, top_value)) = stack.last() {
            if top_end >= start {
                break;
            }
            if let Some(c) = cursor
                && c <= top_end
            {
                emit(c, top_end, top_value)?;
                cursor = top_end.checked_add(1);
            }
            stack.pop();
        }
        if let Some(&(_, top_value)) = stack.last()
            && let Some(c) = cursor
            && c < start
        {
            emit(c, start - 1, top_value)?;
        }
        cursor = Some(start);
        stack.push((end, value));
    }
    while let Some((top_end, top_value)) = stack.pop() {
        if let Some(c) = cursor
            && c <= top_end
        {
            emit(c, top_end, top_value)?;
            cursor = top_end.checked_add(1);
        }
    }
    Ok(())
}

/// Joins adjacent ranges with equal values before passing them on.
pub(super) struct Coalesce<T> {
    pub(super) pending: Option<(u128, u128, T)>,
}

impl<T: PartialEq> Coalesce<T> {
    pub(super) fn new() -> Self {
        Self { pending: None }
    }

    /// Adds `lo..=hi` (ascending, disjoint from earlier ranges); returns a finished range.
    pub(super) fn push(&mut self, lo: u128, hi: u128, value: T) -> Option<(u128, u128, T)> {
        if let Some((_, phi, pv)) = &mut self.pending
            && phi.checked_add(1) == Some(lo)
            && *pv == value
        {
            *phi = hi;
            return None;
        }
        self.pending.replace((lo, hi, value))
    }

    pub(super) fn finish(&mut self) -> Option<(u128, u128, T)> {
        self.pending.take()
    }
}

/// `a.b.c.d`, `a.b.c.d/len` or `a.b.c.d-e.f.g.h` (and IPv6 alike), as nft reads them.
pub(super) fn write_range<W: Write>(out: &mut W, lo: u128, hi: u128, v6: bool) -> io::Result<()> {
    let addr = |v: u128| -> String {
        if v6 {
            Ipv6Addr::from(v).to_string()
        } else {
            Ipv4Addr::from(v as u32).to_string()
        }
    };
    let width: u32 = if v6 { 128 } else { 32 };
    let span = hi - lo;
    // An aligned block of 2^k keys is a prefix.
    if span & span.wrapping_add(1) == 0 && lo & span == 0 {
        let bits = 128 - span.leading_zeros();
        let len = width - bits;
        if len == width {
            write!(out, "{}", addr(lo))
        } else {
            write!(out, "{}/{len}", addr(lo))
        }
    } else {
        write!(out, "{}-{}", addr(lo), addr(hi))
    }
}

/// Inclusive address ranges.
pub(super) type Ranges = Vec<(u128, u128)>;

/// The exemptions as disjoint, merged ranges per family.
pub(super) fn exempt_ranges(nets: &[IpNet]) -> (Ranges, Ranges) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in nets {
        match net {
            IpNet::V4(n) => v4.push((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
    }
    (merge_ranges(v4), merge_ranges(v6))
}

pub(super) fn merge_ranges(mut ranges: Ranges) -> Ranges {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some((_, phi)) if phi.checked_add(1).is_none_or(|next| lo <= next) => {
                *phi = (*phi).max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

pub(super) fn write_range_set<W: Write>(
    out: &mut W,
    name: &str,
    kind: &str,
    ranges: &[(u128, u128)],
    v6: bool,
) -> io::Result<()> {
    write!(
        out,
        "\tset {name} {{\n\t\ttype {kind}\n\t\tflags interval\n\t\telements = {{ "
    )?;
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        if i > 0 {
            write!(out, ", ")?;
        }
        write_range(out, lo, hi, v6)?;
    }
    writeln!(out, " }}\n\t}}")
}
