//! A store shard: its lock, the copy of its bucket array that prefetching
//! reads without the lock, and what the lock guards (table, per-slot
//! counts and digests, clock, tombstones, horizons).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use ringcache_protocol::key_slot;

use super::tombs::{Tomb, Tombs};
use super::{
    Entry, SHARD_COUNT, SLOTS_PER_SHARD, TOMBS_PER_SHARD_MAX, Table, VERSION_LOGICAL_BITS, VERSION_NODE_BITS, digest_of,
};

#[inline]
pub(super) fn shard_of(slot: u16) -> usize {
    usize::from(slot) & (SHARD_COUNT - 1)
}

#[inline]
pub(super) fn slot_index(slot: u16) -> usize {
    usize::from(slot) / SHARD_COUNT
}

/// A shard: its lock, and a copy of its bucket array's address and length
/// that [`Store::prefetch`] reads without the lock. The copy is refreshed
/// whenever a guard is dropped ([`ShardGuard`]); a stale copy only makes a
/// prefetch useless, never wrong (a prefetch never faults). Aligned so each
/// shard's lock has its own cache line. `chores` is likewise a copy, of
/// whether the shard holds keys with an expiry or tombstones, so the
/// housekeeping tick can tell an idle store without taking 256 locks.
#[repr(align(64))]
pub(super) struct Shard {
    pub(super) lock: Mutex<ShardInner>,
    pub(super) buckets: AtomicPtr<u8>,
    pub(super) capacity: AtomicUsize,
    pub(super) chores: AtomicBool,
}

/// A locked shard. On drop it publishes the table's bucket array for
/// prefetching, so every path that grows, shrinks or replaces a table
/// (inserts, deletes, expiry, eviction, flush) keeps the copy current.
pub(super) struct ShardGuard<'a> {
    pub(super) guard: MutexGuard<'a, ShardInner>,
    pub(super) shard: &'a Shard,
}

impl Deref for ShardGuard<'_> {
    type Target = ShardInner;
    fn deref(&self) -> &ShardInner {
        &self.guard
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut ShardInner {
        &mut self.guard
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        let (ptr, cap) = self.guard.table.raw_parts();
        if self.shard.capacity.load(Relaxed) != cap || self.shard.buckets.load(Relaxed) != ptr {
            self.shard.buckets.store(ptr, Relaxed);
            self.shard.capacity.store(cap, Relaxed);
        }
        let chores = self.guard.volatile > 0 || !self.guard.tombs.is_empty();
        if self.shard.chores.load(Relaxed) != chores {
            self.shard.chores.store(chores, Relaxed);
        }
    }
}

/// Asks the CPU to bring `p`'s cache line in; a hint that never faults.
#[inline(always)]
pub(super) fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` reads no memory the program can observe and
    // cannot fault, whatever the address; SSE is part of x86-64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

pub struct ShardInner {
    pub(super) table: Table,
    pub(super) volatile: usize,
    pub(super) expire_cursor: usize,
    pub(super) slot_counts: [u32; SLOTS_PER_SHARD],
    /// Per slot: XOR of [`digest_of`] over its entries (see the invariants).
    pub(super) digests: [u64; SLOTS_PER_SHARD],
    /// The shard's hybrid logical clock: the last version handed out or
    /// seen, without its node bits (unix ms << 10 | counter).
    pub(super) clock: u64,
    pub(super) rng: u64,
    pub(super) tombs: Tombs,
    /// Per slot: the newest version of a tombstone dropped before its grace
    /// period ended (the bound). A key absent here at or below it may have
    /// been deleted here, so copies of it from elsewhere are refused.
    pub(super) horizons: [u64; SLOTS_PER_SHARD],
}

impl ShardInner {
    pub(super) fn new(seed: u64) -> Self {
        ShardInner {
            table: Table::new(),
            volatile: 0,
            expire_cursor: 0,
            slot_counts: [0; SLOTS_PER_SHARD],
            digests: [0; SLOTS_PER_SHARD],
            clock: 0,
            rng: seed | 1,
            tombs: Tombs::default(),
            horizons: [0; SLOTS_PER_SHARD],
        }
    }

    pub(super) fn next_version(&mut self, now_ms: u64, node: u64) -> u64 {
        let t = (self.clock + 1).max(now_ms << VERSION_LOGICAL_BITS);
        self.clock = t;
        (t << VERSION_NODE_BITS) | node
    }

    /// Moves the clock past a version made elsewhere.
    pub(super) fn observe(&mut self, version: u64) {
        self.clock = self.clock.max(version >> VERSION_NODE_BITS);
    }

    /// Records a tombstone; the change in bytes held.
    pub(super) fn tomb(&mut self, key: &[u8], version: u64, until_ms: u64, dropped: &AtomicU64) -> i64 {
        let before = self.tombs.bytes as i64;
        if let Some((slot, v)) = self.tombs.insert(key, Tomb { version, until_ms }, TOMBS_PER_SHARD_MAX) {
            dropped.fetch_add(1, Relaxed);
            let h = &mut self.horizons[slot_index(slot)];
            *h = (*h).max(v);
        }
        self.tombs.bytes as i64 - before
    }

    pub(super) fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn insert(&mut self, hash: u64, slot: u16, entry: Entry) -> (usize, i64) {
        let before = self.table.bucket_bytes() as i64;
        let cost = entry.mem_cost() as i64;
        if entry.expiry_ms().is_some() {
            self.volatile += 1;
        }
        self.slot_counts[slot_index(slot)] += 1;
        self.digests[slot_index(slot)] ^= digest_of(entry.key(), entry.version(), false);
        let pos = self.table.insert_new(hash, entry);
        (pos, cost + self.table.bucket_bytes() as i64 - before)
    }

    pub(super) fn replace(&mut self, pos: usize, slot: u16, entry: Entry) -> i64 {
        let new_cost = entry.mem_cost() as i64;
        let new_volatile = entry.expiry_ms().is_some();
        let new_digest = digest_of(entry.key(), entry.version(), false);
        let old = self.table.replace(pos, entry);
        self.digests[slot_index(slot)] ^= new_digest ^ digest_of(old.key(), old.version(), false);
        match (old.expiry_ms().is_some(), new_volatile) {
            (false, true) => self.volatile += 1,
            (true, false) => self.volatile -= 1,
            _ => {}
        }
        new_cost - old.mem_cost() as i64
    }

    /// Removes the entry at `pos`. `slot` is its key's slot if the caller
    /// knows it (saves hashing the key again).
    pub(super) fn remove(&mut self, pos: usize, slot: Option<u16>) -> (Entry, i64) {
        let before = self.table.bucket_bytes() as i64;
        let old = self.table.remove_at(pos);
        if old.expiry_ms().is_some() {
            self.volatile -= 1;
        }
        let slot = slot.unwrap_or_else(|| key_slot(old.key()));
        self.slot_counts[slot_index(slot)] -= 1;
        self.digests[slot_index(slot)] ^= digest_of(old.key(), old.version(), false);
        let delta = -(old.mem_cost() as i64) + self.table.bucket_bytes() as i64 - before;
        (old, delta)
    }
}
