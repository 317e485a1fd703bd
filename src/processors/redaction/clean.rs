//! Strings lately found clean, so that a string that comes again skips the detectors.
//!
//! Telemetry repeats itself: methods, routes, status codes, user agents, database
//! systems, span names and every resource attribute come again in request after
//! request. Whether the rules change a string depends on nothing but its bytes (the
//! rules are fixed for the redactor's life), so a string found clean is clean the next
//! time too.
//!
//! The memory is a direct-mapped table of [`SLOTS`] slots of 64 bytes (64 KiB per
//! redactor): a string's hash picks its slot, which holds one string of up to
//! [`MAX_LEN`] bytes with its full hash. A new clean string takes its slot from
//! whatever was there, so the table never grows, never allocates after it is built, and
//! a stream of distinct strings only costs a hash and a 64-byte copy each. The hash is
//! keyed per redactor, so no client can aim its strings at one slot.

use std::hash::BuildHasher;

/// The longest string remembered: a slot's 64 bytes less its hash and length.
pub const MAX_LEN: usize = 55;

/// Slots in the table (a power of two).
pub const SLOTS: usize = 1024;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    hash: u64,
    /// 0 for an empty slot (the empty string is never remembered).
    len: u8,
    bytes: [u8; MAX_LEN],
}

const EMPTY: Slot = Slot {
    hash: 0,
    len: 0,
    bytes: [0; MAX_LEN],
};

pub struct CleanStrings {
    slots: Box<[Slot]>,
    hasher: foldhash::fast::RandomState,
}

impl Default for CleanStrings {
    fn default() -> Self {
        CleanStrings {
            slots: vec![EMPTY; SLOTS].into_boxed_slice(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl CleanStrings {
    /// The string's hash if it can be remembered (1 to [`MAX_LEN`] bytes).
    pub fn hash(&self, bytes: &[u8]) -> Option<u64> {
        (1..=MAX_LEN)
            .contains(&bytes.len())
            .then(|| self.hasher.hash_one(bytes))
    }

    /// Whether `bytes`, of hash `hash`, was found clean and is still remembered.
    pub fn contains(&self, hash: u64, bytes: &[u8]) -> bool {
        let slot = &self.slots[slot_of(hash)];
        slot.hash == hash
            && usize::from(slot.len) == bytes.len()
            && slot.bytes[..bytes.len()] == *bytes
    }

    /// Remembers `bytes` (of hash `hash`, so of 1 to [`MAX_LEN`] bytes) as clean.
    pub fn insert(&mut self, hash: u64, bytes: &[u8]) {
        let slot = &mut self.slots[slot_of(hash)];
        slot.hash = hash;
        slot.len = bytes.len() as u8;
        slot.bytes[..bytes.len()].copy_from_slice(bytes);
    }
}

fn slot_of(hash: u64) -> usize {
    hash as usize & (SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_one_cache_line_and_the_table_64_kib() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<Slot>() * SLOTS, 64 << 10);
    }

    #[test]
    fn remembers_what_was_inserted_and_only_that() {
        let mut clean = CleanStrings::default();
        let get = clean.hash(b"GET").unwrap();
        assert!(!clean.contains(get, b"GET"), "an empty table knows nothing");
        clean.insert(get, b"GET");
        assert!(clean.contains(get, b"GET"));
        let put = clean.hash(b"PUT").unwrap();
        assert!(!clean.contains(put, b"PUT"));
        assert!(!clean.contains(get, b"GE"), "the length must match");
        assert!(!clean.contains(get, b"PUT"), "the bytes must match");
    }

    #[test]
    fn only_strings_of_1_to_55_bytes_are_remembered() {
        let clean = CleanStrings::default();
        assert!(clean.hash(b"").is_none());
        assert!(clean.hash(&[b'a'; MAX_LEN]).is_some());
        assert!(clean.hash(&[b'a'; MAX_LEN + 1]).is_none());
    }

    #[test]
    fn a_string_taking_the_slot_evicts_the_one_before() {
        let mut clean = CleanStrings::default();
        let first = b"first".as_slice();
        let first_hash = clean.hash(first).unwrap();
        let rival = (0..)
            .map(|n: u32| n.to_string().into_bytes())
            .find(|s| {
                let hash = clean.hash(s).unwrap();
                slot_of(hash) == slot_of(first_hash) && hash != first_hash
            })
            .unwrap();
        clean.insert(first_hash, first);
        let rival_hash = clean.hash(&rival).unwrap();
        clean.insert(rival_hash, &rival);
        assert!(clean.contains(rival_hash, &rival));
        assert!(!clean.contains(first_hash, first));
    }
}
