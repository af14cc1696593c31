//! A shard's tombstones: deleted keys' versions, kept for the grace period
//! (see the store's invariants), indexed by key and by end of grace.

use std::collections::HashMap;

use ringcache_protocol::key_slot;

use super::{SLOTS_PER_SHARD, TOMB_OVERHEAD, digest_of, slot_index};

#[inline]
pub(super) fn tomb_cost(key: &[u8]) -> usize {
    2 * key.len() + TOMB_OVERHEAD
}

/// A deleted key's version and when its tombstone may go.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tomb {
    pub(super) version: u64,
    pub(super) until_ms: u64,
}

/// A shard's tombstones, with an index by end of grace period so that the
/// oldest goes first at the bound and expired ones are found without a
/// scan: every delete stays O(log n) however many tombstones there are.
#[derive(Debug)]
pub(super) struct Tombs {
    by_key: HashMap<Box<[u8]>, Tomb>,
    by_until: std::collections::BTreeSet<(u64, Box<[u8]>)>,
    /// Per slot of the shard: XOR of [`digest_of`] over its tombstones.
    pub(super) digests: [u64; SLOTS_PER_SHARD],
    /// Sum of [`tomb_cost`] over the tombstones held (part of `used`).
    pub(super) bytes: usize,
}

impl Default for Tombs {
    fn default() -> Self {
        Tombs { by_key: HashMap::new(), by_until: Default::default(), digests: [0; SLOTS_PER_SHARD], bytes: 0 }
    }
}

impl Tombs {
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&Tomb> {
        self.by_key.get(key)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &Tomb)> {
        self.by_key.iter().map(|(k, t)| (&**k, t))
    }

    /// Flips `key`'s tombstone in or out of its slot's digest.
    pub(super) fn flip(&mut self, key: &[u8], version: u64) {
        self.digests[slot_index(key_slot(key))] ^= digest_of(key, version, true);
    }

    pub(super) fn remove(&mut self, key: &[u8]) -> Option<Tomb> {
        let t = self.by_key.remove(key)?;
        self.by_until.remove(&(t.until_ms, Box::from(key)));
        self.flip(key, t.version);
        self.bytes -= tomb_cost(key);
        Some(t)
    }

    /// Records `key`'s tombstone; at `max`, the one nearest to the end of
    /// its grace period goes first: its slot and version are returned.
    pub(super) fn insert(&mut self, key: &[u8], tomb: Tomb, max: usize) -> Option<(u16, u64)> {
        self.remove(key);
        let mut dropped = None;
        if self.by_key.len() >= max
            && let Some((_, oldest)) = self.by_until.pop_first()
            && let Some(t) = self.by_key.remove(&oldest)
        {
            self.flip(&oldest, t.version);
            self.bytes -= tomb_cost(&oldest);
            dropped = Some((key_slot(&oldest), t.version));
        }
        self.flip(key, tomb.version);
        self.bytes += tomb_cost(key);
        self.by_key.insert(key.into(), tomb);
        self.by_until.insert((tomb.until_ms, key.into()));
        dropped
    }

    /// Drops the tombstones whose grace period ended; how many.
    pub(super) fn expire(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        while self.by_until.first().is_some_and(|(until, _)| *until <= now_ms) {
            let (_, k) = self.by_until.pop_first().expect("checked");
            if let Some(t) = self.by_key.remove(&k) {
                self.flip(&k, t.version);
                self.bytes -= tomb_cost(&k);
            }
            n += 1;
        }
        n
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let (by_key, digests, bytes) = (&mut self.by_key, &mut self.digests, &mut self.bytes);
        self.by_until.retain(|(_, k)| {
            let kept = keep(k);
            if !kept && let Some(t) = by_key.remove(k) {
                digests[slot_index(key_slot(k))] ^= digest_of(k, t.version, true);
                *bytes -= tomb_cost(k);
            }
            kept
        });
    }

    pub(super) fn clear(&mut self) {
        self.by_key.clear();
        self.by_until.clear();
        self.digests = [0; SLOTS_PER_SHARD];
        self.bytes = 0;
    }
}
