//! Decision caches: what was decided for traces no longer held, so late spans follow it.
//!
//! * Sampled ids go in an LRU (`lru` crate) of `sampled_cache_size` ids: a hit is exact.
//! * Not-sampled ids go in a compact fingerprint filter of `non_sampled_cache_size`
//!   entries: a 4-way set-associative table of 32-bit fingerprints (4 bytes per id, where
//!   an LRU entry costs ~60). A lookup compares the 4 fingerprints of one set, so the
//!   false-positive rate is at most 4 / 2^31 ≈ 1.9e-9 per lookup of an unknown id (one
//!   fingerprint bit marks a used slot); a false positive drops a new trace's spans as if
//!   its trace had been decided "not sampled". When a set is full its oldest entry is
//!   replaced, so old decisions are forgotten first.

use super::policy::TraceId;
use lru::LruCache;
use std::num::NonZeroUsize;

/// Mixes a trace id into 64 bits (ids are mostly random, but not all generators are).
pub fn id_hash(id: &TraceId) -> u64 {
    let (high, low) = id.split_at(8);
    let high = u64::from_le_bytes(high.try_into().expect("8 bytes"));
    let low = u64::from_le_bytes(low.try_into().expect("8 bytes"));
    let mixed = (high ^ low.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed ^ (mixed >> 31)
}

/// Sampled trace ids, least recently used forgotten first.
pub struct SampledCache(Option<LruCache<TraceId, ()>>);

impl SampledCache {
    pub fn new(size: usize) -> SampledCache {
        SampledCache(NonZeroUsize::new(size).map(LruCache::new))
    }

    pub fn insert(&mut self, id: TraceId) {
        if let Some(cache) = &mut self.0 {
            cache.put(id, ());
        }
    }

    pub fn contains(&mut self, id: &TraceId) -> bool {
        self.0.as_mut().is_some_and(|cache| cache.get(id).is_some())
    }
}

const WAYS: usize = 4;

/// Not-sampled trace ids as fingerprints; see the module docs for its error rate.
pub struct FingerprintFilter {
    sets: Vec<[u32; WAYS]>,
    /// The slot each set replaces next.
    next: Vec<u8>,
}

impl FingerprintFilter {
    pub fn new(size: usize) -> FingerprintFilter {
        let sets = size.div_ceil(WAYS);
        FingerprintFilter {
            sets: vec![[0; WAYS]; sets],
            next: vec![0; sets],
        }
    }

    fn locate(&self, id: &TraceId) -> Option<(usize, u32)> {
        if self.sets.is_empty() {
            return None;
        }
        let hash = id_hash(id);
        let set = (hash as usize) % self.sets.len();
        let fingerprint = (hash >> 32) as u32 | 1;
        Some((set, fingerprint))
    }

    pub fn insert(&mut self, id: &TraceId) {
        let Some((set, fingerprint)) = self.locate(id) else {
            return;
        };
        if self.sets[set].contains(&fingerprint) {
            return;
        }
        let slot = usize::from(self.next[set]);
        self.sets[set][slot] = fingerprint;
        self.next[set] = ((slot + 1) % WAYS) as u8;
    }

    pub fn contains(&self, id: &TraceId) -> bool {
        self.locate(id)
            .is_some_and(|(set, fingerprint)| self.sets[set].contains(&fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> TraceId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_be_bytes());
        id[8..].copy_from_slice(&n.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        id
    }

    #[test]
    fn the_filter_remembers_recent_ids_and_rarely_claims_unknown_ones() {
        let mut filter = FingerprintFilter::new(10_000);
        (0..10_000).for_each(|n| filter.insert(&id(n)));
        let remembered = (9_000..10_000).filter(|&n| filter.contains(&id(n))).count();
        assert!(remembered > 900, "recent ids mostly kept, got {remembered}");
        let false_positives = (1_000_000..1_200_000)
            .filter(|&n| filter.contains(&id(n)))
            .count();
        assert_eq!(false_positives, 0);
    }

    #[test]
    fn a_zero_size_cache_is_off() {
        let mut filter = FingerprintFilter::new(0);
        filter.insert(&id(1));
        assert!(!filter.contains(&id(1)));
        let mut sampled = SampledCache::new(0);
        sampled.insert(id(1));
        assert!(!sampled.contains(&id(1)));
    }

    #[test]
    fn the_sampled_cache_forgets_the_least_recently_used() {
        let mut sampled = SampledCache::new(2);
        sampled.insert(id(1));
        sampled.insert(id(2));
        assert!(sampled.contains(&id(1)));
        sampled.insert(id(3));
        assert!(sampled.contains(&id(1)) && sampled.contains(&id(3)));
        assert!(!sampled.contains(&id(2)));
    }
}
