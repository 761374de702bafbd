//! Address prefixes flattened into classes: each distinct set of rules whose remotes
//! contain an address is one class.

use std::{collections::HashMap, rc::Rc};

use ipnet::{Ipv4Net, Ipv6Net};

use super::lpm;

/// A prefix as (network bits left-aligned to the family width, length).
pub(super) type Prefix = (u128, u8);

pub(super) fn contains(outer: Prefix, inner: Prefix, width: u8) -> bool {
    outer.1 <= inner.1 && lpm::mask(inner.0, outer.1, width) == outer.0
}

/// Sorted union of two sorted rule-id lists.
pub(super) fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
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
pub(super) struct Classes {
    pub(super) ids: HashMap<Rc<[u32]>, u32>,
    pub(super) sets: Vec<Rc<[u32]>>,
}

impl Classes {
    pub(super) fn intern(&mut self, rules: Rc<[u32]>) -> u32 {
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
pub(super) fn flatten(
    mut pairs: Vec<(Prefix, u32)>,
    width: u8,
    classes: &mut Classes,
) -> Vec<(Prefix, u32)> {
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

pub(super) fn v4_prefix(net: &Ipv4Net) -> Prefix {
    (u128::from(u32::from(net.network())), net.prefix_len())
}

pub(super) fn v6_prefix(net: &Ipv6Net) -> Prefix {
    (u128::from(net.network()), net.prefix_len())
}
