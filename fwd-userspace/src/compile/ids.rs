//! Rule ids (counter slots), stable across edits: derived from `vendor/rule`, kept from
//! the previous compile.

use std::collections::BTreeMap;

use fwd_common::MAX_RULES;

/// The counter slot (rule id) of every compiled rule, keyed by `vendor/rule`.
///
/// A rule's id derives from its name (a hash into `0..MAX_RULES`, probing on a collision) and,
/// given the ids of the previous compile, stays what it was while the rule exists; the slots
/// of rules that disappeared are not handed to new rules while others are free. So counters
/// and dashboards survive reloads and edits of other rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleIds(pub(super) BTreeMap<String, u32>);

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
    pub(super) fn assign(&self, names: &[String]) -> (RuleIds, Vec<u32>) {
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
pub fn home_slot(name: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(MAX_RULES)) as u32
}
