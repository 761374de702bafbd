//! A userspace longest-prefix-match table with the kernel LPM trie's semantics, used to
//! evaluate compiled map images (`fwd explain`) and to check the compiler.

use std::collections::{BTreeMap, HashMap};

/// Keys are the first `width` bits of a `u128`, most significant first (big-endian order,
/// exactly as the kernel trie compares the key bytes).
#[derive(Debug, Clone)]
pub struct LpmTable<V> {
    width: u8,
    by_len: BTreeMap<u8, HashMap<u128, V>>,
}

pub fn mask(value: u128, len: u8, width: u8) -> u128 {
    let drop = u32::from(width - len);
    value
        .checked_shr(drop)
        .and_then(|v| v.checked_shl(drop))
        .unwrap_or(0)
}

impl<V> LpmTable<V> {
    pub fn new(width: u8) -> Self {
        Self {
            width,
            by_len: BTreeMap::new(),
        }
    }

    /// Inserts `value` for `key/len`, replacing any value of that exact prefix.
    pub fn insert(&mut self, key: u128, len: u8, value: V) {
        assert!(
            len <= self.width,
            "prefix length {len} over width {}",
            self.width
        );
        self.by_len
            .entry(len)
            .or_default()
            .insert(mask(key, len, self.width), value);
    }

    /// The value of the longest prefix containing `key`, with that prefix's length.
    pub fn lookup(&self, key: u128) -> Option<(u8, &V)> {
        self.by_len
            .iter()
            .rev()
            .find_map(|(len, entries)| entries.get(&mask(key, *len, self.width)).map(|v| (*len, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut t = LpmTable::new(32);
        t.insert(0, 0, "default");
        t.insert(0x0a00_0000, 8, "ten");
        t.insert(0x0a01_0000, 16, "ten-one");
        assert_eq!(t.lookup(0x0a01_0203), Some((16, &"ten-one")));
        assert_eq!(t.lookup(0x0a02_0203), Some((8, &"ten")));
        assert_eq!(t.lookup(0x0b00_0000), Some((0, &"default")));
        let empty: LpmTable<()> = LpmTable::new(128);
        assert_eq!(empty.lookup(5), None);
    }

    #[test]
    fn mask_handles_full_and_empty_prefixes() {
        assert_eq!(mask(u128::MAX, 0, 128), 0);
        assert_eq!(mask(u128::MAX, 128, 128), u128::MAX);
        assert_eq!(mask(0xffff_ffff, 24, 32), 0xffff_ff00);
    }
}
