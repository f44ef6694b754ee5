//! A bounded in-memory copy of committed values that queries have asked for.
//!
//! A RocksDB point lookup, even from the memtable, is most of what a RESP `GET` spends in the
//! server. Queries tend to ask for the same keys again, so the query path keeps the values it
//! read here, and every commit refreshes the entries it changes. It holds committed state only
//! (it is filled from the store and refreshed after a commit is written), so a read through it
//! returns exactly what a read of the store would.
//!
//! Only reads fill it: a workload nobody queries pays one hash probe per committed change and
//! no memory. Full shards are emptied rather than evicted entry by entry: simple, O(1)
//! amortised, and the hot keys come back on their next read.
//!
//! Keys and values live inside the entries (up to [`INLINE_KEY`] and [`INLINE_VALUE`] bytes;
//! longer ones are not cached), so a probe touches one bucket instead of chasing a pointer to a boxed key, and a fill does
//! not allocate. The hasher is seeded (keys come from clients) but much cheaper than SipHash
//! (BENCHMARKS.md, "Why the code is the way it is").

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use foldhash::fast::RandomState;

const SHARDS: usize = 16;

/// Longest key kept in the cache: room for a UUID with a prefix.
pub const INLINE_KEY: usize = 47;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct InlineKey {
    len: u8,
    bytes: [u8; INLINE_KEY],
}

/// Longest value kept in the cache.
pub const INLINE_VALUE: usize = 62;

#[derive(Clone, Copy)]
pub struct InlineValue {
    len: u8,
    bytes: [u8; INLINE_VALUE],
}

impl InlineValue {
    fn new(value: &[u8]) -> Option<InlineValue> {
        let mut bytes = [0; INLINE_VALUE];
        bytes.get_mut(..value.len())?.copy_from_slice(value);
        Some(InlineValue {
            len: value.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl InlineKey {
    fn new(key: &[u8]) -> Option<InlineKey> {
        let mut bytes = [0; INLINE_KEY];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(InlineKey {
            len: key.len() as u8,
            bytes,
        })
    }
}

pub struct StateCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    /// `None` remembers a key the store does not hold.
    entries: HashMap<InlineKey, Option<InlineValue>, RandomState>,
    /// Bumped by every write to a key of this shard. A fill that started before a write
    /// would insert what may be the old value, so it only lands if this did not move.
    writes: u64,
    /// Counted under the shard's lock, which a lookup takes anyway.
    hits: u64,
    misses: u64,
}

/// Lookups since the cache was made, and what it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

/// What a lookup found: the cached value (`None`: the store does not hold the key), or a ticket to [`StateCache::fill`] with after
/// reading the store.
pub enum Cached {
    Hit(Option<InlineValue>),
    Miss(Ticket),
}

pub struct Ticket {
    /// `None`: the key is too long to cache.
    slot: Option<(usize, InlineKey)>,
    writes: u64,
}

impl StateCache {
    /// A cache sized for `capacity` keys. Each shard may hold a quarter more than its even
    /// share: keys never spread evenly over the shards, and without the headroom a cache
    /// sized to the keyspace kept emptying its fullest shards (BENCHMARKS.md, "Why the code is
    /// the way it is").
    pub fn new(capacity: usize) -> StateCache {
        let share = capacity.div_ceil(SHARDS);
        // A seed of its own for the maps: with the shard hasher's, every key of a shard
        // would share the top bits that the map uses to tell keys in a bucket group apart.
        let map_hasher = RandomState::default();
        StateCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::with_hasher(map_hasher.clone()),
                        writes: 0,
                        hits: 0,
                        misses: 0,
                    })
                })
                .collect(),
            hasher: RandomState::default(),
            per_shard: (share + share / 4).max(1),
        }
    }

    fn shard_of(&self, key: &InlineKey) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // The shard's data stays consistent even if a holder panicked: every critical
        // section is a single map operation.
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &[u8]) -> Cached {
        let Some(key) = InlineKey::new(key) else {
            return Cached::Miss(Ticket {
                slot: None,
                writes: 0,
            });
        };
        let shard = self.shard_of(&key);
        let mut guard = self.lock(shard);
        match guard.entries.get(&key) {
            Some(value) => {
                let value = *value;
                guard.hits += 1;
                Cached::Hit(value)
            }
            None => {
                guard.misses += 1;
                Cached::Miss(Ticket {
                    slot: Some((shard, key)),
                    writes: guard.writes,
                })
            }
        }
    }

    /// Remembers what the store returned for `key`, unless a write to the shard came in
    /// since the ticket was issued.
    pub fn fill(&self, value: Option<&[u8]>, ticket: Ticket) {
        let Some((shard, key)) = ticket.slot else {
            return;
        };
        let value = match value {
            None => None,
            Some(value) => match InlineValue::new(value) {
                Some(value) => Some(value),
                None => return, // too long to cache
            },
        };
        let mut guard = self.lock(shard);
        if guard.writes != ticket.writes {
            return;
        }
        if guard.entries.len() >= self.per_shard {
            guard.entries.clear();
        }
        guard.entries.insert(key, value);
    }

    /// Called after `value` was committed to the store for `key` (`None`: deleted):
    /// refreshes the entry if the key is cached and stops fills that read the store before
    /// this write.
    pub fn committed(&self, key: &[u8], value: Option<&[u8]>) {
        let Some(key) = InlineKey::new(key) else {
            return; // never cached
        };
        let mut guard = self.lock(self.shard_of(&key));
        guard.writes += 1;
        let Some(entry) = guard.entries.get_mut(&key) else {
            return;
        };
        match value.map(InlineValue::new) {
            None => *entry = None,
            Some(Some(value)) => *entry = Some(value),
            Some(None) => {
                guard.entries.remove(&key);
            }
        }
    }

    /// Forgets everything (after the store was written behind the cache's back: a restore).
    pub fn clear(&self) {
        for shard in 0..SHARDS {
            let mut guard = self.lock(shard);
            guard.writes += 1;
            guard.entries.clear();
        }
    }

    pub fn stats(&self) -> CacheStats {
        (0..SHARDS).fold(CacheStats::default(), |total, s| {
            let shard = self.lock(s);
            CacheStats {
                hits: total.hits + shard.hits,
                misses: total.misses + shard.misses,
                entries: total.entries + shard.entries.len(),
            }
        })
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.lock(s).entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        (0..SHARDS).all(|s| self.lock(s).entries.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(count: u64) -> Vec<u8> {
        count.to_be_bytes().to_vec()
    }

    fn miss(cache: &StateCache, key: &[u8]) -> Ticket {
        match cache.get(key) {
            Cached::Miss(ticket) => ticket,
            Cached::Hit(_) => panic!("expected a miss"),
        }
    }

    fn hit(cache: &StateCache, key: &[u8]) -> Option<Vec<u8>> {
        match cache.get(key) {
            Cached::Hit(value) => value.map(|v| v.as_bytes().to_vec()),
            Cached::Miss(_) => panic!("expected a hit"),
        }
    }

    #[test]
    fn a_filled_key_hits_and_commits_refresh_it() {
        let cache = StateCache::new(64);
        let ticket = miss(&cache, b"alice");
        cache.fill(Some(&state(1)), ticket);
        assert_eq!(hit(&cache, b"alice"), Some(state(1)));
        cache.committed(b"alice", Some(&state(2)));
        assert_eq!(hit(&cache, b"alice"), Some(state(2)));
    }

    #[test]
    fn absent_keys_are_remembered_until_committed() {
        let cache = StateCache::new(64);
        let ticket = miss(&cache, b"ghost");
        cache.fill(None, ticket);
        assert_eq!(hit(&cache, b"ghost"), None);
        cache.committed(b"ghost", Some(&state(1)));
        assert_eq!(hit(&cache, b"ghost"), Some(state(1)));
    }

    #[test]
    fn a_fill_that_raced_a_commit_is_dropped() {
        let cache = StateCache::new(64);
        let ticket = miss(&cache, b"bob");
        // The reader read the old value from the store, then a commit landed.
        cache.committed(b"bob", Some(&state(5)));
        cache.fill(Some(&state(4)), ticket);
        assert!(matches!(cache.get(b"bob"), Cached::Miss(_)));
    }

    #[test]
    fn commits_do_not_fill_and_clear_forgets() {
        let cache = StateCache::new(64);
        cache.committed(b"carol", Some(&state(1)));
        assert_eq!(cache.len(), 0);
        let ticket = miss(&cache, b"carol");
        cache.fill(Some(&state(1)), ticket);
        let stale = miss(&cache, b"dave");
        cache.clear();
        assert_eq!(cache.len(), 0);
        cache.fill(Some(&state(9)), stale);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_budget_the_size_of_the_keyspace_holds_it() {
        let cache = StateCache::new(10_000);
        for i in 0..10_000u64 {
            let key = format!("k:{i:012}");
            let ticket = miss(&cache, key.as_bytes());
            cache.fill(Some(&state(i)), ticket);
        }
        assert_eq!(cache.len(), 10_000);
    }

    #[test]
    fn long_keys_are_read_through_and_never_cached() {
        let cache = StateCache::new(64);
        let long = [b'x'; INLINE_KEY + 1];
        let ticket = miss(&cache, &long);
        cache.fill(Some(&state(1)), ticket);
        cache.committed(&long, Some(&state(2)));
        assert!(matches!(cache.get(&long), Cached::Miss(_)));
        assert_eq!(cache.len(), 0);
        let longest = [b'y'; INLINE_KEY];
        let ticket = miss(&cache, &longest);
        cache.fill(Some(&state(3)), ticket);
        assert_eq!(hit(&cache, &longest), Some(state(3)));
    }

    #[test]
    fn deletes_and_long_values_leave_no_stale_entry() {
        let cache = StateCache::new(64);
        let ticket = miss(&cache, b"erin");
        cache.fill(Some(&state(1)), ticket);
        cache.committed(b"erin", None);
        assert_eq!(hit(&cache, b"erin"), None);
        cache.committed(b"erin", Some(&[7; INLINE_VALUE + 1]));
        assert!(matches!(cache.get(b"erin"), Cached::Miss(_)));
        let ticket = miss(&cache, b"erin");
        cache.fill(Some(&[7; INLINE_VALUE + 1]), ticket);
        assert!(matches!(cache.get(b"erin"), Cached::Miss(_)));
    }

    #[test]
    fn size_stays_bounded() {
        let cache = StateCache::new(32);
        for i in 0..10_000u64 {
            let key = i.to_be_bytes();
            let ticket = miss(&cache, &key);
            cache.fill(Some(&state(i)), ticket);
        }
        assert!(cache.len() <= 40, "{} entries", cache.len());
    }
}
