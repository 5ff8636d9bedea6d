//! The answer cache: sharded, bounded by entries, every operation O(1)
//! amortised, read on the hot path without any actor.
//!
//! Each shard is a hash map from key to slot plus a CLOCK ring over the
//! slots: a hit sets the slot's reference bit; an insert into a full shard
//! advances the hand, clearing bits, until it finds an unreferenced slot to
//! reuse. So a full cache under churn costs what an empty one does.
//! Expired answers stay (for serve-stale) until CLOCK reclaims them or they
//! are past the stale window.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::answer::{AnswerKind, CachedAnswer};
use super::wire::Query;

const SHARDS: usize = 32;
/// Key layout: qtype (2), qclass (2), DO|CD bits (1), lowercased qname.
const KEY_PREFIX: usize = 5;
const MAX_KEY: usize = KEY_PREFIX + 255;

/// A cache key built on the stack.
pub struct KeyBuf {
    buf: [u8; MAX_KEY],
    len: usize,
}

impl KeyBuf {
    /// The key of a query: lowercased qname, qtype, qclass, DO and CD bits.
    pub fn of(query: &Query<'_>) -> KeyBuf {
        let mut buf = [0u8; MAX_KEY];
        buf[0..2].copy_from_slice(&query.qtype.to_be_bytes());
        buf[2..4].copy_from_slice(&query.qclass.to_be_bytes());
        buf[4] = u8::from(query.dnssec_ok()) | (u8::from(query.checking_disabled()) << 1);
        let name_len = query.qname.len().min(255);
        let name = &mut buf[KEY_PREFIX..KEY_PREFIX + name_len];
        name.copy_from_slice(&query.qname[..name_len]);
        name.make_ascii_lowercase();
        KeyBuf {
            buf,
            len: KEY_PREFIX + name_len,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// What a lookup found.
pub enum Lookup {
    Fresh(Arc<CachedAnswer>),
    /// Expired, within the serve-stale window.
    Stale(Arc<CachedAnswer>),
    Miss,
}

struct Slot {
    key: Box<[u8]>,
    answer: Arc<CachedAnswer>,
    referenced: bool,
}

struct Shard {
    index: HashMap<Box<[u8]>, usize, RandomState>,
    slots: Vec<Slot>,
    hand: usize,
    capacity: usize,
}

impl Shard {
    fn get(&mut self, key: &[u8]) -> Option<Arc<CachedAnswer>> {
        let at = *self.index.get(key)?;
        let slot = &mut self.slots[at];
        slot.referenced = true;
        Some(slot.answer.clone())
    }

    fn insert(&mut self, key: &[u8], answer: Arc<CachedAnswer>) -> bool {
        if let Some(&at) = self.index.get(key) {
            let slot = &mut self.slots[at];
            slot.answer = answer;
            slot.referenced = true;
            return false;
        }
        let key: Box<[u8]> = key.into();
        if self.slots.len() < self.capacity {
            self.index.insert(key.clone(), self.slots.len());
            self.slots.push(Slot {
                key,
                answer,
                referenced: false,
            });
            return false;
        }
        let victim = self.next_victim();
        let slot = &mut self.slots[victim];
        self.index.remove(&slot.key);
        self.index.insert(key.clone(), victim);
        *slot = Slot {
            key,
            answer,
            referenced: false,
        };
        true
    }

    /// CLOCK: the first slot past the hand without its reference bit.
    fn next_victim(&mut self) -> usize {
        loop {
            let at = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[at];
            if !slot.referenced {
                return at;
            }
            slot.referenced = false;
        }
    }

    fn remove(&mut self, key: &[u8]) {
        let Some(at) = self.index.remove(key) else {
            return;
        };
        let last = self.slots.len() - 1;
        self.slots.swap_remove(at);
        if at != last {
            let moved = &self.slots[at].key;
            if let Some(index) = self.index.get_mut(moved) {
                *index = at;
            }
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }
}

/// Counters of the cache, read by metrics and `ward ctl stats`.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    pub evictions: AtomicU64,
    pub inserts: AtomicU64,
}

/// The cache.
pub struct Cache {
    shards: Vec<Mutex<Shard>>,
    /// Picks the shard; seeded apart from the shards' own maps, so keys of
    /// one shard still spread over its whole table.
    hasher: RandomState,
    serve_stale_s: AtomicU32,
    pub counters: CacheCounters,
}

impl Cache {
    /// A cache of at most `capacity` answers; expired answers are kept for
    /// `serve_stale_s` seconds past their TTL.
    pub fn new(capacity: usize, serve_stale_s: u32) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        index: HashMap::with_capacity_and_hasher(
                            per_shard.min(1 << 16),
                            RandomState::default(),
                        ),
                        slots: Vec::with_capacity(per_shard.min(1 << 16)),
                        hand: 0,
                        capacity: per_shard,
                    })
                })
                .collect(),
            hasher: Default::default(),
            serve_stale_s: AtomicU32::new(serve_stale_s),
            counters: CacheCounters::default(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Looks `key` up; counts a hit, a stale hit or a miss.
    pub fn lookup(&self, key: &[u8], now: Instant) -> Lookup {
        let found = self
            .shard(key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key);
        let result = match found {
            Some(answer) if answer.is_fresh(now) => Lookup::Fresh(answer),
            Some(answer)
                if answer.kind() != AnswerKind::ServFail
                    && answer.expired_for(now) < self.serve_stale_s.load(Ordering::Relaxed) =>
            {
                Lookup::Stale(answer)
            }
            _ => Lookup::Miss,
        };
        let counter = match result {
            Lookup::Fresh(_) => &self.counters.hits,
            _ => &self.counters.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Counts an answer served stale.
    pub fn count_stale(&self) {
        self.counters.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores an answer. A SERVFAIL never replaces an answer that could
    /// still be served stale.
    pub fn insert(&self, key: &[u8], answer: Arc<CachedAnswer>, now: Instant) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if answer.kind() == AnswerKind::ServFail {
            if let Some(existing) = shard.get(key) {
                if existing.kind() != AnswerKind::ServFail
                    && existing.expired_for(now) < self.serve_stale_s.load(Ordering::Relaxed)
                {
                    return;
                }
            }
        }
        let evicted = shard.insert(key, answer);
        drop(shard);
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        if evicted {
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn remove(&self, key: &[u8]) {
        self.shard(key)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Answers held, fresh or stale.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).slots.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most answers it holds.
    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).capacity)
            .sum()
    }

    /// Holds at most `capacity` answers from now on (a reload), dropping
    /// what a smaller size has no room for; keeps stale answers for
    /// `serve_stale_s` past their TTL.
    pub fn resize(&self, capacity: usize, serve_stale_s: u32) {
        self.serve_stale_s.store(serve_stale_s, Ordering::Relaxed);
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.capacity = per_shard;
            while shard.slots.len() > per_shard {
                if let Some(slot) = shard.slots.pop() {
                    shard.index.remove(&slot.key);
                }
            }
            if shard.hand >= shard.slots.len() {
                shard.hand = 0;
            }
        }
    }

    /// Forgets every answer (`ward ctl cache flush`); returns how many.
    pub fn flush(&self) -> usize {
        let mut flushed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            flushed += shard.slots.len();
            shard.slots.clear();
            shard.index.clear();
            shard.hand = 0;
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_proto::op::ResponseCode;

    use super::*;
    use crate::dns::answer::tests::upstream_answer;
    use crate::dns::answer::TtlPolicy;
    use crate::dns::wire::parse_query;
    use crate::dns::wire::tests::query_bytes;

    fn answer(name: &str, ttl: u32, now: Instant) -> (Vec<u8>, CachedAnswer) {
        let query = query_bytes(name, 1, None);
        let response = upstream_answer(name, ResponseCode::NoError, &[ttl], None);
        let q = parse_query(&query).unwrap();
        let answer =
            CachedAnswer::from_upstream(&response, q.question(), &TtlPolicy::default(), now)
                .unwrap()
                .answer;
        (KeyBuf::of(&q).as_bytes().to_vec(), answer)
    }

    #[test]
    fn keys_ignore_case_and_separate_type_class_and_bits() {
        let a = query_bytes("WWW.Example.", 1, None);
        let b = query_bytes("www.example.", 1, None);
        let aaaa = query_bytes("www.example.", 28, None);
        let dnssec = query_bytes("www.example.", 1, Some((1232, true)));
        let key = |bytes: &[u8]| KeyBuf::of(&parse_query(bytes).unwrap()).as_bytes().to_vec();
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&aaaa));
        assert_ne!(key(&a), key(&dnssec));
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let cache = Cache::new(100, 60);
        let t0 = Instant::now();
        let (key, answer) = answer("a.test.", 10, t0);
        assert!(matches!(cache.lookup(&key, t0), Lookup::Miss));
        cache.insert(&key, Arc::new(answer), t0);
        assert!(matches!(
            cache.lookup(&key, t0 + Duration::from_secs(9)),
            Lookup::Fresh(_)
        ));
        assert!(matches!(
            cache.lookup(&key, t0 + Duration::from_secs(30)),
            Lookup::Stale(_)
        ));
        assert!(matches!(
            cache.lookup(&key, t0 + Duration::from_secs(71)),
            Lookup::Miss
        ));
        assert_eq!(cache.counters.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.counters.misses.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn servfail_does_not_replace_a_stale_answer() {
        let cache = Cache::new(100, 3600);
        let t0 = Instant::now();
        let (key, answer) = answer("a.test.", 10, t0);
        cache.insert(&key, Arc::new(answer), t0);
        let later = t0 + Duration::from_secs(20);
        let query = query_bytes("a.test.", 1, None);
        let q = parse_query(&query).unwrap();
        cache.insert(
            &key,
            Arc::new(CachedAnswer::servfail(&q, &TtlPolicy::default(), later)),
            later,
        );
        assert!(matches!(cache.lookup(&key, later), Lookup::Stale(_)));
    }

    #[test]
    fn a_full_cache_evicts_unreferenced_entries_first_and_stays_bounded() {
        let cache = Cache::new(SHARDS * 4, 0);
        let t0 = Instant::now();
        let (hot_key, hot) = answer("hot.test.", 3600, t0);
        cache.insert(&hot_key, Arc::new(hot), t0);
        for i in 0..10_000 {
            assert!(
                matches!(cache.lookup(&hot_key, t0), Lookup::Fresh(_)),
                "hot entry evicted at {i}"
            );
            let (key, answer) = answer(&format!("n{i}.test."), 3600, t0);
            cache.insert(&key, Arc::new(answer), t0);
        }
        assert_eq!(cache.len(), SHARDS * 4);
        assert!(cache.counters.evictions.load(Ordering::Relaxed) > 9_000);
        assert_eq!(cache.flush(), SHARDS * 4);
        assert!(cache.is_empty());
    }

    #[test]
    fn remove_keeps_the_index_consistent() {
        let cache = Cache::new(SHARDS * 8, 0);
        let t0 = Instant::now();
        let keys: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                let (key, answer) = answer(&format!("r{i}.test."), 3600, t0);
                cache.insert(&key, Arc::new(answer), t0);
                key
            })
            .collect();
        for key in keys.iter().step_by(2) {
            cache.remove(key);
        }
        for (i, key) in keys.iter().enumerate() {
            let found = matches!(cache.lookup(key, t0), Lookup::Fresh(_));
            assert_eq!(found, i % 2 == 1, "entry {i}");
        }
    }
}
