//! An open-addressing hash table of [`Entry`]s, built for memory.
//!
//! Why not hashbrown or dashmap: both grow by doubling, so at some sizes
//! half the table is empty (at exactly 1M keys hashbrown holds 2^21 buckets:
//! ~19 bytes per key). This table maps a hash to a bucket with a multiply
//! (`fastrange`), so its capacity can be any number and it grows by 1.5x,
//! keeping the load between ~0.53 and 0.8: 8 bytes per bucket (a pointer),
//! 10-15 bytes per key.
//!
//! Collisions are resolved by linear probing. Each entry's pointer carries a
//! 1-byte tag (the low byte of the hash, never 0) in its top byte, so a probe
//! skips other keys by reading only the bucket, without touching their
//! memory: a lookup costs the bucket's cache line and the entry's. Deletion shifts later members of the run back
//! (no tombstones), re-hashing their keys to find their home bucket.
//! Entries do not store their hash: growth and deletion hash keys again.

use xxhash_rust::xxh3::xxh3_64;

use super::entry::Entry;

const LOAD_MAX_NUM: usize = 4;
const LOAD_MAX_DEN: usize = 5;
const CAPACITY_MIN: usize = 8;

/// The table hash of a key.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The 1-byte tag of a hash. It must come from bits the bucket index does
/// not use: `home` takes the *high* bits (fastrange), so neighbouring
/// buckets share high bits and a tag made of them would not tell their
/// keys apart. The low byte is independent of the position.
#[inline]
fn tag_of(hash: u64) -> u8 {
    let t = hash as u8;
    if t == 0 { 1 } else { t }
}

/// The bucket a hash starts probing at, for a table of `cap` buckets.
#[inline]
pub fn home(hash: u64, cap: usize) -> usize {
    ((u128::from(hash) * cap as u128) >> 64) as usize
}

pub struct Table {
    slots: Box<[Option<Entry>]>,
    len: usize,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    pub fn new() -> Self {
        Table { slots: Box::new([]), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Address and length of the bucket array, published for prefetching.
    pub fn raw_parts(&self) -> (*mut u8, usize) {
        (self.slots.as_ptr() as *mut u8, self.capacity())
    }

    /// Bytes held by the bucket array.
    pub fn bucket_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<Option<Entry>>()
    }

    /// Position of `key`, if present.
    #[inline]
    pub fn find(&self, key: &[u8], hash: u64) -> Option<usize> {
        let cap = self.capacity();
        if cap == 0 {
            return None;
        }
        let tag = tag_of(hash);
        let mut i = home(hash, cap);
        loop {
            match &self.slots[i] {
                None => return None,
                Some(e) if e.tag() == tag && e.key() == key => return Some(i),
                Some(_) => {}
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// Inserts an entry whose key is not in the table. Returns its position.
    pub fn insert_new(&mut self, hash: u64, entry: Entry) -> usize {
        if (self.len + 1) * LOAD_MAX_DEN > self.capacity() * LOAD_MAX_NUM {
            let grown = (self.capacity() * 3 / 2).max(CAPACITY_MIN);
            self.resize(grown);
        }
        let pos = self.place(hash, entry);
        self.len += 1;
        pos
    }

    fn place(&mut self, hash: u64, mut entry: Entry) -> usize {
        let cap = self.capacity();
        let mut i = home(hash, cap);
        while self.slots[i].is_some() {
            i += 1;
            if i == cap {
                i = 0;
            }
        }
        entry.set_tag(tag_of(hash));
        self.slots[i] = Some(entry);
        i
    }

    fn resize(&mut self, cap: usize) {
        assert!(cap * LOAD_MAX_NUM >= self.len * LOAD_MAX_DEN, "resize below the load limit");
        let old = std::mem::replace(&mut self.slots, std::iter::repeat_with(|| None).take(cap).collect());
        for entry in old.into_vec().into_iter().flatten() {
            let hash = hash_key(entry.key());
            self.place(hash, entry);
        }
    }

    #[inline]
    pub fn get(&self, pos: usize) -> Option<&Entry> {
        self.slots.get(pos).and_then(Option::as_ref)
    }

    #[inline]
    pub fn get_mut(&mut self, pos: usize) -> Option<&mut Entry> {
        self.slots.get_mut(pos).and_then(Option::as_mut)
    }

    /// Replaces the entry at an occupied position with one of the same key.
    pub fn replace(&mut self, pos: usize, mut entry: Entry) -> Entry {
        debug_assert_eq!(self.get(pos).map(Entry::key), Some(entry.key()));
        let slot = &mut self.slots[pos];
        // Same key, same hash: the tag carries over.
        entry.set_tag(slot.as_ref().expect("replace at an occupied position").tag());
        slot.replace(entry).expect("occupied")
    }

    /// Removes the entry at an occupied position, shifting back the rest of
    /// its probe run so that lookups never meet a hole inside a run.
    pub fn remove_at(&mut self, pos: usize) -> Entry {
        let cap = self.capacity();
        let removed = self.slots[pos].take().expect("remove at an occupied position");
        self.len -= 1;
        let mut hole = pos;
        let mut j = pos;
        loop {
            j += 1;
            if j == cap {
                j = 0;
            }
            let Some(moving) = &self.slots[j] else { break };
            let h = home(hash_key(moving.key()), cap);
            // The entry at j may move to the hole unless its home lies
            // cyclically in (hole, j]: then moving it would put it before
            // its home, where lookups never look.
            let home_in_between = if hole <= j { hole < h && h <= j } else { h > hole || h <= j };
            if !home_in_between {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
        if cap > CAPACITY_MIN * 2 && self.len * 4 < cap {
            self.resize((self.len * 2).max(CAPACITY_MIN));
        }
        removed
    }

    /// Removes every entry, returning the old buckets (drop them elsewhere
    /// to free a large table without stalling the caller).
    pub fn take_all(&mut self) -> Table {
        std::mem::take(self)
    }

    /// Iterates over (position, entry).
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|e| (i, e)))
    }

    /// The first occupied position at or after `pos` (cyclically).
    pub fn occupied_from(&self, pos: usize) -> Option<usize> {
        let cap = self.capacity();
        if self.len == 0 {
            return None;
        }
        let start = pos % cap;
        (0..cap).map(|d| (start + d) % cap).find(|&i| self.slots[i].is_some())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u8),
        Remove(u16),
    }

    proptest! {
        /// The table behaves like a HashMap under any sequence of inserts and
        /// removes (small key space so that runs collide and shift).
        #[test]
        fn behaves_like_a_hashmap(ops in proptest::collection::vec(
            prop_oneof![(0u16..300, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)), (0u16..300).prop_map(Op::Remove)],
            0..2000,
        )) {
            let mut table = Table::new();
            let mut model: HashMap<Vec<u8>, u8> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let key = format!("k{k}").into_bytes();
                        let hash = hash_key(&key);
                        let entry = Entry::new(&key, &[v], None, 0, 0);
                        match table.find(&key, hash) {
                            Some(pos) => { table.replace(pos, entry); }
                            None => { table.insert_new(hash, entry); }
                        }
                        model.insert(key, v);
                    }
                    Op::Remove(k) => {
                        let key = format!("k{k}").into_bytes();
                        let found = table.find(&key, hash_key(&key)).map(|pos| table.remove_at(pos));
                        prop_assert_eq!(found.map(|e| e.value()[0]), model.remove(&key));
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for (k, v) in &model {
                let pos = table.find(k, hash_key(k));
                prop_assert_eq!(pos.and_then(|p| table.get(p)).map(|e| e.value()[0]), Some(*v));
            }
            prop_assert_eq!(table.iter().count(), model.len());
        }
    }
}
