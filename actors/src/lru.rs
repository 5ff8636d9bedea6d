//! A map with a fixed capacity that knows which entry was used least
//! recently, and hands that one back when a new key needs its room.
//!
//! Every operation is O(1): a hash index over a slab whose entries are
//! chained from most to least recently used, so a hit costs two link
//! updates and an eviction never scans. It keeps no clock: callers that
//! expire by age read and pop the least recent end ([`Lru::oldest`],
//! [`Lru::pop_oldest`]). It is not the DNS cache's policy (that is CLOCK,
//! sharded, in `dns/cache.rs`): it serves small pools under one lock.

use std::collections::HashMap;
use std::hash::Hash;

/// No entry: the end of the chain.
const NIL: usize = usize::MAX;

struct Entry<K, V> {
    key: K,
    value: V,
    /// The entry used next after this one (towards the newest).
    newer: usize,
    /// The entry used last before this one (towards the oldest).
    older: usize,
}

pub struct Lru<K, V> {
    index: HashMap<K, usize>,
    entries: Vec<Entry<K, V>>,
    newest: usize,
    oldest: usize,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map holding at most `cap` entries (at least one). Room is
    /// taken as entries come, not up front.
    pub fn new(cap: usize) -> Self {
        Lru {
            index: HashMap::new(),
            entries: Vec::new(),
            newest: NIL,
            oldest: NIL,
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, which becomes the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        self.unlink(i);
        self.link_newest(i);
        Some(&mut self.entries[i].value)
    }

    /// The value of `key`, leaving the order alone.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.index.get(key).map(|&i| &self.entries[i].value)
    }

    /// The least recently used entry.
    pub fn oldest(&self) -> Option<(&K, &V)> {
        self.entries
            .get(self.oldest)
            .map(|entry| (&entry.key, &entry.value))
    }

    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        (self.oldest != NIL).then(|| self.remove_at(self.oldest))
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = *self.index.get(key)?;
        Some(self.remove_at(i).1)
    }

    /// Puts `value` under `key` as the most recently used entry (replacing
    /// what `key` held). A new key at the cap first takes the room of the
    /// least recently used entry, which is returned.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(held) = self.get(&key) {
            *held = value;
            return None;
        }
        let evicted = if self.entries.len() >= self.cap {
            self.pop_oldest()
        } else {
            None
        };
        let i = self.entries.len();
        self.entries.push(Entry {
            key: key.clone(),
            value,
            newer: NIL,
            older: NIL,
        });
        self.index.insert(key, i);
        self.link_newest(i);
        evicted
    }

    /// Makes `newer` the entry used next after `older`; either may be
    /// [`NIL`], for an end of the chain.
    fn join(&mut self, older: usize, newer: usize) {
        match older {
            NIL => self.oldest = newer,
            o => self.entries[o].newer = newer,
        }
        match newer {
            NIL => self.newest = older,
            n => self.entries[n].older = older,
        }
    }

    /// Takes entry `i` out of the chain (its own links are left stale).
    fn unlink(&mut self, i: usize) {
        self.join(self.entries[i].older, self.entries[i].newer);
    }

    fn link_newest(&mut self, i: usize) {
        self.join(self.newest, i);
        self.join(i, NIL);
    }

    /// Removes entry `i`. The slab stays dense: its last entry moves into
    /// the hole, and its neighbours and index follow it.
    fn remove_at(&mut self, i: usize) -> (K, V) {
        self.unlink(i);
        let entry = self.entries.swap_remove(i);
        self.index.remove(&entry.key);
        if let Some(moved) = self.entries.get(i) {
            let (older, newer) = (moved.older, moved.newer);
            if let Some(at) = self.index.get_mut(&moved.key) {
                *at = i;
            }
            self.join(older, i);
            self.join(i, newer);
        }
        (entry.key, entry.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys from the least to the most recently used, following the chain.
    fn order(lru: &Lru<u32, u32>) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = lru.oldest;
        while i != NIL {
            out.push(lru.entries[i].key);
            i = lru.entries[i].newer;
        }
        assert_eq!(out.len(), lru.len(), "the chain holds every entry");
        out
    }

    #[test]
    fn at_the_cap_the_least_recently_used_makes_room() {
        let mut lru = Lru::new(3);
        for k in 1..=3 {
            assert_eq!(lru.insert(k, k * 10), None);
        }
        // 1 is used again: 2 is now the least recently used.
        assert_eq!(lru.get(&1), Some(&mut 10));
        assert_eq!(lru.insert(4, 40), Some((2, 20)));
        assert_eq!(order(&lru), [3, 1, 4]);
        // Peeking does not count as use.
        assert_eq!(lru.peek(&3), Some(&30));
        assert_eq!(lru.insert(5, 50), Some((3, 30)));
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.peek(&2), None);
    }

    #[test]
    fn replacing_a_key_refreshes_it_and_evicts_nothing() {
        let mut lru = Lru::new(2);
        lru.insert(1, 1);
        lru.insert(2, 2);
        assert_eq!(lru.insert(1, 11), None);
        assert_eq!(order(&lru), [2, 1]);
        assert_eq!(lru.pop_oldest(), Some((2, 2)));
        assert_eq!(lru.oldest(), Some((&1, &11)));
    }

    #[test]
    fn removing_anywhere_keeps_the_order_and_the_index_true() {
        let mut lru = Lru::new(8);
        for k in 0..8 {
            lru.insert(k, k);
        }
        // The newest, the oldest, and one between (each moves the slab's
        // last entry into its hole).
        assert_eq!(lru.remove(&7), Some(7));
        assert_eq!(lru.remove(&0), Some(0));
        assert_eq!(lru.remove(&4), Some(4));
        assert_eq!(lru.remove(&4), None);
        assert_eq!(order(&lru), [1, 2, 3, 5, 6]);
        for k in [1, 2, 3, 5, 6] {
            assert_eq!(lru.peek(&k), Some(&k));
        }
        lru.get(&2);
        while lru.pop_oldest().is_some() {}
        assert!(lru.is_empty());
        assert_eq!(lru.oldest(), None);
        lru.insert(9, 9);
        assert_eq!(order(&lru), [9]);
    }

    #[test]
    fn any_mix_of_operations_agrees_with_a_list_in_use_order() {
        // The model: keys from least to most recently used.
        let mut model: Vec<(u32, u32)> = Vec::new();
        let mut lru = Lru::new(7);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..20_000u32 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let key = (seed >> 32) as u32 % 12;
            let at = model.iter().position(|(k, _)| *k == key);
            match seed % 4 {
                0 => {
                    let evicted = lru.insert(key, step);
                    if let Some(i) = at {
                        model.remove(i);
                        assert_eq!(evicted, None);
                    } else if model.len() == 7 {
                        assert_eq!(evicted, Some(model.remove(0)));
                    }
                    model.push((key, step));
                }
                1 => {
                    let got = lru.get(&key).map(|v| *v);
                    assert_eq!(got, at.map(|i| model[i].1));
                    if let Some(i) = at {
                        let entry = model.remove(i);
                        model.push(entry);
                    }
                }
                2 => assert_eq!(lru.remove(&key), at.map(|i| model.remove(i).1)),
                _ => {
                    let oldest = (!model.is_empty()).then(|| model.remove(0));
                    assert_eq!(lru.pop_oldest(), oldest);
                }
            }
            let keys: Vec<u32> = model.iter().map(|(k, _)| *k).collect();
            assert_eq!(order(&lru), keys, "after step {step}");
            assert!(model.iter().all(|(k, v)| lru.peek(k) == Some(v)));
        }
    }

    #[test]
    fn many_keys_through_a_small_map_stay_within_the_cap() {
        let mut lru = Lru::new(16);
        let mut evicted = 0;
        for k in 0..10_000u32 {
            if lru.insert(k, k).is_some() {
                evicted += 1;
            }
            // A hot key used every time survives all of it.
            lru.get(&0);
        }
        assert_eq!(lru.len(), 16);
        assert_eq!(evicted, 10_000 - 16);
        assert_eq!(lru.peek(&0), Some(&0));
        assert_eq!(order(&lru).last(), Some(&0));
    }
}
