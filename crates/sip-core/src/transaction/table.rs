//! The transaction table's storage: a slab of transactions addressed by
//! [`TransactionKey`], the index from matching key to transaction, and the queue of
//! pending timers.
//!
//! All three grow without ever moving or rehashing everything at once. A `Vec` that
//! doubles copies all it holds (a binary heap is a `Vec`), and a hash map that grows
//! rehashes every key: with half a million transactions alive (16,000 REGISTERs a
//! second, each kept 32 s by Timer J) that is one pause of up to half a second on the
//! thread that also reads the sockets, long enough for the kernel's receive buffer to
//! overflow (`cargo bench -p sip-core --bench transaction_pause` measures it). So the
//! slab grows by fixed-size chunks that never move, the index is split into shards that
//! grow one at a time and remember their keys' hashes so that growing does not hash
//! again, and the timers are a B-tree, which grows a node at a time.

use super::key::TransactionKey;
use super::machine::TimerEntry;
use hashbrown::HashTable;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Transactions per slab chunk: a chunk is allocated whole, so this bounds the work of
/// one growth step.
const CHUNK: usize = 1024;

/// Slots of the first chunk when it is made: it doubles up to [`CHUNK`] before a second
/// chunk is added, so a table with few transactions (a phone's, one of thousands of
/// simulated user agents) holds a few kilobytes, not a whole chunk.
const FIRST_CHUNK: usize = 8;

/// One slot of the slab. The generation is bumped when the slot is freed, so a key
/// that names an earlier occupant no longer matches.
#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Values addressed by [`TransactionKey`]s, stored in chunks of [`CHUNK`] slots that
/// stay where they are once allocated. Freed slots are reused, last freed first.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    /// Every chunk holds [`CHUNK`] slots but the first, which may hold fewer while it is
    /// the only one.
    chunks: Vec<Vec<Slot<T>>>,
    /// Slots handed out so far, in use or free.
    allocated: usize,
    free: Vec<u32>,
    live: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            chunks: Vec::new(),
            allocated: 0,
            free: Vec::new(),
            live: 0,
        }
    }

    /// How many values are stored.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    fn slot(&self, index: u32) -> Option<&Slot<T>> {
        let i = index as usize;
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<T>> {
        let i = index as usize;
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// The key the next [`Slab::insert`] will use, so that the value can be built
    /// knowing its own key.
    pub(crate) fn vacant_key(&mut self) -> TransactionKey {
        let index = match self.free.last() {
            Some(&i) => i,
            None => {
                self.grow_if_full();
                // More than 4 billion live transactions would exhaust memory long before.
                let i = u32::try_from(self.allocated).unwrap_or(u32::MAX);
                self.allocated += 1;
                self.free.push(i);
                i
            }
        };
        let generation = self.slot(index).map_or(0, |s| s.generation);
        TransactionKey { index, generation }
    }

    /// Makes room for one more slot when every allocated slot is handed out: the first
    /// chunk doubles until it is whole, then whole chunks are added.
    fn grow_if_full(&mut self) {
        let capacity = match self.chunks.last() {
            None => 0,
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
        };
        if self.allocated < capacity {
            return;
        }
        let empty = || Slot {
            generation: 0,
            value: None,
        };
        match self.chunks.as_mut_slice() {
            [first] if first.len() < CHUNK => {
                let more = first.len().min(CHUNK - first.len());
                first.extend((0..more).map(|_| empty()));
            }
            [] => self
                .chunks
                .push((0..FIRST_CHUNK).map(|_| empty()).collect()),
            _ => self.chunks.push((0..CHUNK).map(|_| empty()).collect()),
        }
    }

    /// Stores `value` under `key`, which must come from the [`Slab::vacant_key`] call
    /// just before (no other insert or removal in between).
    pub(crate) fn insert(&mut self, key: TransactionKey, value: T) {
        debug_assert_eq!(self.free.last(), Some(&key.index));
        self.free.pop();
        if let Some(slot) = self.slot_mut(key.index) {
            slot.value = Some(value);
            self.live += 1;
        }
    }

    pub(crate) fn get(&self, key: TransactionKey) -> Option<&T> {
        let slot = self.slot(key.index)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: TransactionKey) -> Option<&mut T> {
        let slot = self.slot_mut(key.index)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// Takes the value out of `key`'s slot and frees the slot; `key` is dead from now on.
    pub(crate) fn remove(&mut self, key: TransactionKey) -> Option<T> {
        let slot = self.slot_mut(key.index)?;
        if slot.generation != key.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.live -= 1;
        Some(value)
    }
}

/// Shards of the [`MatchIndex`]. With 64, a table of a million transactions grows one
/// shard of ~16,000 at a time.
const SHARDS: usize = 64;

/// An index entry: the key's hash is kept so that a growing shard moves entries
/// without hashing their text again (or even reading it).
#[derive(Debug)]
struct Indexed {
    hash: u64,
    text: Arc<str>,
    key: TransactionKey,
}

/// Matching key (§17.1.3, §17.2.3) to transaction, hashed with a randomly keyed SipHash
/// (the keys are chosen by whoever sends us messages) and split into [`SHARDS`] tables.
#[derive(Debug)]
pub(crate) struct MatchIndex {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[HashTable<Indexed>]>,
}

impl MatchIndex {
    pub(crate) fn new() -> Self {
        MatchIndex {
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS).map(|_| HashTable::new()).collect(),
        }
    }

    /// The hash of `text` and the shard it lives in. The shard is taken from bits the
    /// shard's own table does not use: it finds buckets with the low bits and tags them
    /// with the top seven.
    fn locate(&self, text: &str) -> (u64, usize) {
        let hash = self.hasher.hash_one(text);
        (hash, (hash >> 32) as usize % SHARDS)
    }

    pub(crate) fn get(&self, text: &str) -> Option<TransactionKey> {
        let (hash, shard) = self.locate(text);
        self.shards[shard]
            .find(hash, |e| &*e.text == text)
            .map(|e| e.key)
    }

    pub(crate) fn contains(&self, text: &str) -> bool {
        self.get(text).is_some()
    }

    /// Indexes `key` under `text`, replacing what `text` named before.
    pub(crate) fn insert(&mut self, text: Arc<str>, key: TransactionKey) {
        let (hash, shard) = self.locate(&text);
        let table = &mut self.shards[shard];
        match table.find_mut(hash, |e| e.text == text) {
            Some(e) => e.key = key,
            None => {
                table.insert_unique(hash, Indexed { hash, text, key }, |e| e.hash);
            }
        }
    }

    pub(crate) fn remove(&mut self, text: &str) {
        let (hash, shard) = self.locate(text);
        if let Ok(entry) = self.shards[shard].find_entry(hash, |e| &*e.text == text) {
            entry.remove();
        }
    }
}

/// Pending timers, earliest first. Two entries equal in every field are one: the
/// transaction armed the same timer for the same instant twice, and it fires once.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    entries: BTreeSet<TimerEntry>,
}

impl TimerQueue {
    pub(crate) fn push(&mut self, entry: TimerEntry) {
        self.entries.insert(entry);
    }

    /// The earliest entry.
    pub(crate) fn peek(&self) -> Option<&TimerEntry> {
        self.entries.first()
    }

    pub(crate) fn pop(&mut self) -> Option<TimerEntry> {
        self.entries.pop_first()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Slots the slab holds, used or not.
    fn slots<T>(slab: &Slab<T>) -> usize {
        slab.chunks.iter().map(Vec::len).sum()
    }

    #[test]
    fn a_small_slab_holds_few_slots_and_grows_to_whole_chunks() {
        let mut slab = Slab::new();
        let mut keys = Vec::new();
        for i in 0..3 {
            let k = slab.vacant_key();
            slab.insert(k, i);
            keys.push(k);
        }
        assert_eq!(slots(&slab), FIRST_CHUNK, "a few transactions, a few slots");
        for i in 3..CHUNK + 1 {
            let k = slab.vacant_key();
            slab.insert(k, i);
            keys.push(k);
        }
        assert_eq!(slab.chunks.len(), 2);
        assert_eq!(slots(&slab), 2 * CHUNK, "the first chunk grew whole first");
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                slab.get(*k),
                Some(&i),
                "every value stays where its key says"
            );
        }
    }

    #[test]
    fn slab_keys_go_stale_when_their_slot_is_reused() {
        let mut slab = Slab::new();
        let a = slab.vacant_key();
        slab.insert(a, "a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.vacant_key();
        assert_eq!(b.index, a.index, "the freed slot is reused");
        slab.insert(b, "b");
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.len(), 1);
    }

    #[test]
    fn slab_grows_across_chunks_without_losing_values() {
        let mut slab = Slab::new();
        let keys: Vec<_> = (0..3 * CHUNK + 7)
            .map(|i| {
                let k = slab.vacant_key();
                slab.insert(k, i);
                k
            })
            .collect();
        assert_eq!(slab.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(slab.get(*k), Some(&i));
        }
        *slab.get_mut(keys[CHUNK]).unwrap() += 1;
        assert_eq!(slab.get(keys[CHUNK]), Some(&(CHUNK + 1)));
        // A key beyond anything allocated names nothing.
        let far = TransactionKey {
            index: 10 * CHUNK as u32,
            generation: 0,
        };
        assert_eq!(slab.get(far), None);
    }

    #[test]
    fn index_finds_replaces_and_forgets_keys_in_every_shard() {
        let mut index = MatchIndex::new();
        let key = |i: u32| TransactionKey {
            index: i,
            generation: 0,
        };
        for i in 0..5_000u32 {
            index.insert(format!("z9hG4bK{i}|REGISTER").into(), key(i));
        }
        assert!(index.shards.iter().all(|s| !s.is_empty()));
        assert_eq!(index.get("z9hG4bK42|REGISTER"), Some(key(42)));
        index.insert("z9hG4bK42|REGISTER".into(), key(7));
        assert_eq!(index.get("z9hG4bK42|REGISTER"), Some(key(7)));
        index.remove("z9hG4bK42|REGISTER");
        assert!(!index.contains("z9hG4bK42|REGISTER"));
        assert_eq!(index.get("z9hG4bK43|REGISTER"), Some(key(43)));
        let total: usize = index.shards.iter().map(HashTable::len).sum();
        assert_eq!(total, 4_999);
    }
}
