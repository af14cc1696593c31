//! The keyspace: key → value bytes with expiry, version, LRU/LFU data.
//!
//! Pure: no IO, no clock reads. Every operation that cares about time takes
//! `now_ms` (unix ms) from the caller, so tests drive time by hand.
//!
//! Layout: 256 shards, each a `Mutex` around an open-addressing [`Table`].
//! A key's shard is its Redis Cluster slot modulo 256, so all keys of a slot
//! live in one shard: per-slot counts, per-slot iteration and (later) slot
//! transfers touch one shard only. Keys in one hash tag share a shard, as
//! they share a slot in Redis Cluster.
//!
//! Invariants:
//! - `used` is the sum of every entry's [`Entry::mem_cost`] plus every
//!   table's bucket bytes; each mutation adjusts it by exactly its delta.
//! - `ShardInner::volatile` counts the shard's entries that have an expiry,
//!   and `slot_counts` its entries per slot.
//! - Locks on several shards are taken in ascending shard order only
//!   ([`Store::with_keys`]); everything else holds one shard at a time.
//! - An expired entry is never returned: lookups remove it first.
//! - Versions: every write gets a hybrid-logical-clock version from its
//!   shard: unix ms in bits 63..22, a logical counter in 21..12, the node id
//!   in 11..0 ([`version_parts`]). A shard's clock never goes back and moves
//!   past every version it applies from elsewhere, so a key's versions grow
//!   across every node that coordinates it.
//! - `ShardInner::digests` holds, per slot, the XOR of [`digest_of`] over
//!   the slot's entries (expired ones too, until removed) and `Tombs::digests`
//!   the same over its tombstones; every insert, replace and removal of
//!   either updates it, so anti-entropy reads a slot's digest without
//!   touching its keys.
//! - A delete by a command leaves a tombstone (key → version) for the grace
//!   period, so a replicated older value arriving later cannot bring the key
//!   back; a key is never both live and tombstoned.

mod entry;
pub mod glob;
mod key;
pub mod policy;
mod shard;
mod table;
mod tombs;

use std::sync::Mutex;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};

use ringcache_protocol::{SLOT_COUNT, key_slot};

pub use entry::{Entry, heap_supports_tags};
pub use key::{KeyRef, MultiKey};
pub use policy::Policy;
pub use table::{Table, hash_key};

pub use shard::ShardInner;
use shard::{Shard, ShardGuard, prefetch_read, shard_of, slot_index};
use tombs::tomb_cost;

/// Number of shards; a power of two dividing [`SLOT_COUNT`].
pub const SHARD_COUNT: usize = 256;
/// Slots that share a shard (`slot % SHARD_COUNT`).
pub const SLOTS_PER_SHARD: usize = SLOT_COUNT as usize / SHARD_COUNT;

/// Bits of a version that hold the node id, and the logical counter above it.
pub const VERSION_NODE_BITS: u32 = 12;
const VERSION_LOGICAL_BITS: u32 = 10;
/// Tombstones kept per shard at most (262 144 in all); past it the one
/// nearest to the end of its grace period goes first, counted, and its
/// slot's horizon rises to its version (see [`KeyRef::apply`]).
const TOMBS_PER_SHARD_MAX: usize = 1024;
/// Evicted keys queued for the other owners at most.
pub const EVICTIONS_MAX: usize = 65_536;
/// Bytes a tombstone costs besides twice its key (the key is held by both
/// indexes): map and tree nodes, two boxes, version and deadline.
const TOMB_OVERHEAD: usize = 96;

/// (unix ms, logical counter, node id) of a version.
pub fn version_parts(v: u64) -> (u64, u64, u64) {
    let node = v & ((1 << VERSION_NODE_BITS) - 1);
    let logical = (v >> VERSION_NODE_BITS) & ((1 << VERSION_LOGICAL_BITS) - 1);
    (v >> (VERSION_NODE_BITS + VERSION_LOGICAL_BITS), logical, node)
}

/// A key's share of its slot's digest: a hash of key, version and whether
/// it is a tombstone. XOR-ed together, so equal contents give equal
/// digests whatever the order they were written in.
#[inline]
fn digest_of(key: &[u8], version: u64, dead: bool) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, version ^ (u64::from(dead) << 63))
}

/// What a replica is told about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    Put { value: &'a [u8], expiry_ms: Option<u64> },
    Delete,
}

/// `maxmemory` is reached and the policy cannot free anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("OOM command not allowed when used memory > 'maxmemory'.")]
pub struct OutOfMemory;

/// Counters the store keeps itself.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub expired_keys: AtomicU64,
    pub evicted_keys: AtomicU64,
    /// Tombstones dropped before their grace period ended (shard full).
    pub tombstones_dropped: AtomicU64,
    /// Copies refused by a slot's horizon (see [`KeyRef::apply`]).
    pub horizon_refusals: AtomicU64,
    /// States refused because a FLUSHALL came after them.
    pub flush_refusals: AtomicU64,
    /// Evictions not passed on to the other owners (queue full).
    pub evictions_unshared: AtomicU64,
    /// Copies dropped because another owner evicted them (`RC.EVICT`).
    pub evictions_followed: AtomicU64,
    /// Replicated states applied / ignored because the key had a newer one.
    pub applied: AtomicU64,
    pub stale: AtomicU64,
}

/// A value alone on its cache line: `used` is written by every write on
/// every thread and must not share a line with fields that every request
/// reads (policy, maxmemory), or each write would evict them from the other
/// cores' caches.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Lone<T>(T);

/// The sharded keyspace.
pub struct Store {
    shards: Box<[Shard]>,
    used: Lone<AtomicI64>,
    maxmemory: AtomicU64,
    policy: AtomicU8,
    samples: AtomicU32,
    lfu_log_factor: AtomicU32,
    lfu_decay_time: AtomicU32,
    expire_shard: AtomicUsize,
    rng: AtomicU64,
    node_id: AtomicU64,
    tomb_grace_ms: AtomicU64,
    keep_tombstones: std::sync::atomic::AtomicBool,
    /// Keys evicted here (key, version), for the other owners to drop too
    /// (kept while tombstones are: only with peers). Bounded by
    /// [`EVICTIONS_MAX`]; overflow is counted and left to anti-entropy.
    evictions: Mutex<std::collections::VecDeque<(Box<[u8]>, u64)>>,
    /// The flush epoch: every state older than this version was removed by
    /// a FLUSHALL (here or on another member) and is refused from now on.
    flushed_before: AtomicU64,
    /// A FLUSHALL run here, not yet passed on to the other members (its
    /// version; 0 none).
    flush_to_share: AtomicU64,
    pub stats: StoreStats,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let shards = (0..SHARD_COUNT)
            .map(|i| Shard {
                lock: Mutex::new(ShardInner::new((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))),
                buckets: AtomicPtr::new(std::ptr::null_mut()),
                capacity: AtomicUsize::new(0),
                chores: AtomicBool::new(false),
            })
            .collect();
        Store {
            shards,
            used: Lone(AtomicI64::new(0)),
            maxmemory: AtomicU64::new(0),
            policy: AtomicU8::new(Policy::NoEviction as u8),
            samples: AtomicU32::new(5),
            lfu_log_factor: AtomicU32::new(10),
            lfu_decay_time: AtomicU32::new(1),
            expire_shard: AtomicUsize::new(0),
            rng: AtomicU64::new(0x1234_5678_9ABC_DEF1),
            node_id: AtomicU64::new(0),
            tomb_grace_ms: AtomicU64::new(600_000),
            keep_tombstones: std::sync::atomic::AtomicBool::new(true),
            evictions: Mutex::new(std::collections::VecDeque::new()),
            flushed_before: AtomicU64::new(0),
            flush_to_share: AtomicU64::new(0),
            stats: StoreStats::default(),
        }
    }

    // ---- settings -------------------------------------------------------

    /// The node id stamped into the low bits of every version made here.
    pub fn set_node_id(&self, id: u64) {
        self.node_id.store(id & ((1 << VERSION_NODE_BITS) - 1), Relaxed);
    }
    pub fn set_tombstone_grace_ms(&self, ms: u64) {
        self.tomb_grace_ms.store(ms, Relaxed);
    }
    /// How long a delete's tombstone is kept (`--tombstone-grace`).
    pub fn tombstone_grace_ms(&self) -> u64 {
        self.tomb_grace_ms.load(Relaxed)
    }
    /// Whether deletes leave tombstones (on by default). A node that never
    /// had peers has no replica a tombstone could protect, and its deletes
    /// then cost nothing extra.
    pub fn set_keep_tombstones(&self, keep: bool) {
        self.keep_tombstones.store(keep, Relaxed);
    }

    pub fn set_maxmemory(&self, bytes: u64) {
        self.maxmemory.store(bytes, Relaxed);
    }
    pub fn maxmemory(&self) -> u64 {
        self.maxmemory.load(Relaxed)
    }
    pub fn set_policy(&self, p: Policy) {
        self.policy.store(p as u8, Relaxed);
    }
    pub fn policy(&self) -> Policy {
        Policy::from_u8(self.policy.load(Relaxed))
    }
    pub fn set_samples(&self, n: u32) {
        self.samples.store(n.clamp(1, 64), Relaxed);
    }
    pub fn samples(&self) -> u32 {
        self.samples.load(Relaxed)
    }
    pub fn set_lfu_log_factor(&self, n: u32) {
        self.lfu_log_factor.store(n, Relaxed);
    }
    pub fn lfu_log_factor(&self) -> u32 {
        self.lfu_log_factor.load(Relaxed)
    }
    pub fn set_lfu_decay_time(&self, n: u32) {
        self.lfu_decay_time.store(n, Relaxed);
    }
    pub fn lfu_decay_time(&self) -> u32 {
        self.lfu_decay_time.load(Relaxed)
    }

    /// Estimated bytes held by keys, values and tables.
    pub fn used_memory(&self) -> u64 {
        self.used.0.load(Relaxed).max(0) as u64
    }

    fn random(&self) -> u64 {
        // splitmix64 over an atomic counter: lock-free, good enough to sample.
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn lock(&self, shard: usize) -> ShardGuard<'_> {
        let s = &self.shards[shard];
        // A panic while a shard was held leaves the shard structurally sound
        // (every mutation completes before unlocking or never starts), so a
        // poisoned lock is taken over rather than taking the node down.
        ShardGuard { guard: s.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner), shard: s }
    }

    /// Starts loading the bucket where `key`'s lookup will begin, without
    /// taking the shard's lock. Called for every request of a pipeline
    /// before any of them runs, so their cache misses overlap instead of
    /// queueing one after another.
    #[inline]
    pub fn prefetch(&self, key: &[u8]) {
        let shard = &self.shards[shard_of(key_slot(key))];
        let cap = shard.capacity.load(Relaxed);
        if cap == 0 {
            return;
        }
        let base = shard.buckets.load(Relaxed);
        let bucket = table::home(hash_key(key), cap) * std::mem::size_of::<Option<Entry>>();
        prefetch_read(base.wrapping_add(bucket));
    }

    fn account(&self, delta: i64) {
        if delta != 0 {
            self.used.0.fetch_add(delta, Relaxed);
        }
    }

    // ---- single and multi-key access ----------------------------------

    /// Runs `f` with exclusive access to `key` (its shard locked).
    #[inline]
    pub fn with_key<R>(&self, key: &[u8], now_ms: u64, f: impl FnOnce(&mut KeyRef<'_>) -> R) -> R {
        let slot = key_slot(key);
        let mut guard = self.lock(shard_of(slot));
        let mut k = KeyRef::new(&mut guard, self, key, slot, now_ms);
        f(&mut k)
    }

    /// Runs `f` with every shard holding one of `keys` locked, so that
    /// multi-key commands (MSET, MSETNX, RENAME, COPY) are atomic.
    pub fn with_keys<'k, R>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        now_ms: u64,
        f: impl FnOnce(&mut MultiKey<'_>) -> R,
    ) -> R {
        let mut shards: Vec<usize> = keys.into_iter().map(|k| shard_of(key_slot(k))).collect();
        shards.sort_unstable();
        shards.dedup();
        let guards = shards.into_iter().map(|s| (s, self.lock(s))).collect();
        let mut multi = MultiKey { store: self, guards, now_ms };
        f(&mut multi)
    }

    // ---- eviction ---------------------------------------------------------

    /// Frees memory until `used <= maxmemory`, as the policy allows. Called
    /// before every command that may grow the keyspace.
    pub fn make_room(&self, now_ms: u64) -> Result<(), OutOfMemory> {
        const ROUNDS_MAX: usize = 1024;
        let max = self.maxmemory();
        if max == 0 {
            return Ok(());
        }
        for round in 0..ROUNDS_MAX {
            if self.used_memory() <= max {
                return Ok(());
            }
            if !self.evict_one(now_ms) {
                // Nothing could be evicted. If an earlier round freed
                // something, let this write through; the next one goes on.
                return if round == 0 { Err(OutOfMemory) } else { Ok(()) };
            }
        }
        Ok(())
    }

    /// Evicts until `used <= maxmemory` or nothing more can go (after
    /// lowering maxmemory at run time). Returns false if still over.
    pub fn evict_to_limit(&self, now_ms: u64) -> bool {
        let max = self.maxmemory();
        let rounds = self.len() / 1024 + 2;
        for _ in 0..rounds {
            if max == 0 || self.used_memory() <= max {
                return true;
            }
            if self.make_room(now_ms).is_err() {
                return false;
            }
        }
        max == 0 || self.used_memory() <= max
    }

    /// Removes the entry at `pos` of a locked shard, releases the shard,
    /// then accounts the freed memory and counts the removal (as expired or
    /// evicted): what lookups, sampling and eviction all do with a victim.
    fn remove_counted(&self, mut g: ShardGuard<'_>, pos: usize, counter: &AtomicU64) {
        let (old, delta) = g.remove(pos, None);
        drop(g);
        self.account(delta);
        counter.fetch_add(1, Relaxed);
        if std::ptr::eq(counter, &self.stats.evicted_keys) && self.keep_tombstones.load(Relaxed) {
            let mut q = self.evictions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if q.len() < EVICTIONS_MAX {
                q.push_back((old.key().into(), old.version()));
            } else {
                self.stats.evictions_unshared.fetch_add(1, Relaxed);
            }
        }
    }

    /// Takes up to `n` of the keys evicted here since the last call, oldest
    /// first, for the other owners to drop as well (`RC.EVICT`).
    pub fn take_evictions(&self, n: usize) -> Vec<(Box<[u8]>, u64)> {
        let mut q = self.evictions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    /// Evicts one key chosen by the policy. False: nothing evictable.
    fn evict_one(&self, now_ms: u64) -> bool {
        let policy = self.policy();
        if policy == Policy::NoEviction {
            return false;
        }
        let volatile = policy.volatile_only();
        let samples = self.samples() as usize;
        let decay = self.lfu_decay_time();
        let mut best: Option<(u64, usize, Vec<u8>)> = None;
        let mut sampled = 0;
        let mut tries = 0;
        while sampled < samples && tries < samples * 2 {
            tries += 1;
            // Walk the shards from a random one to the first that can give
            // a candidate: never a false "nothing to evict" when keys sit
            // in a few shards only (one hash tag, few keys with a TTL).
            let start = (self.random() % SHARD_COUNT as u64) as usize;
            let mut found = None;
            for d in 0..SHARD_COUNT {
                let s = (start + d) % SHARD_COUNT;
                let g = self.lock(s);
                if !g.table.is_empty() && (!volatile || g.volatile > 0) {
                    found = Some((s, g));
                    break;
                }
            }
            let Some((s, g)) = found else { break };
            let cap = g.table.capacity();
            let start = (self.random() % cap as u64) as usize;
            let pos = if volatile {
                (0..cap).map(|d| (start + d) % cap).find(|&i| g.table.get(i).is_some_and(|e| e.expiry_ms().is_some()))
            } else {
                g.table.occupied_from(start)
            };
            let Some(pos) = pos else { continue };
            let entry = g.table.get(pos).expect("occupied");
            if entry.is_expired(now_ms) {
                self.remove_counted(g, pos, &self.stats.expired_keys);
                return true;
            }
            let score = match policy {
                Policy::AllKeysRandom | Policy::VolatileRandom => {
                    self.remove_counted(g, pos, &self.stats.evicted_keys);
                    return true;
                }
                Policy::AllKeysLru | Policy::VolatileLru => policy::lru_idle_ms(entry.access(), now_ms),
                Policy::AllKeysLfu | Policy::VolatileLfu => {
                    255 - u64::from(policy::lfu_count(entry.access(), now_ms, decay))
                }
                Policy::VolatileTtl => u64::MAX - entry.expiry_ms().unwrap_or(u64::MAX),
                Policy::NoEviction => unreachable!("checked above"),
            };
            sampled += 1;
            if best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                best = Some((score, s, entry.key().to_vec()));
            }
        }
        let Some((_, s, key)) = best else { return false };
        let g = self.lock(s);
        let Some(pos) = g.table.find(&key, hash_key(&key)) else {
            // Changed under us; the caller's loop samples again.
            return true;
        };
        self.remove_counted(g, pos, &self.stats.evicted_keys);
        true
    }

    // ---- active expiry --------------------------------------------------

    /// Visits up to `budget` buckets of shards holding keys with an expiry,
    /// continuing where the last call stopped, and deletes expired keys.
    /// Returns (keys with an expiry looked at, keys expired).
    pub fn active_expire(&self, now_ms: u64, budget: usize) -> (usize, usize) {
        let mut left = budget;
        let mut seen = 0;
        let mut expired = 0;
        for _ in 0..SHARD_COUNT {
            if left == 0 {
                break;
            }
            let s = self.expire_shard.load(Relaxed) % SHARD_COUNT;
            if !self.shards[s].chores.load(Relaxed) {
                self.expire_shard.store(s + 1, Relaxed);
                continue;
            }
            let mut g = self.lock(s);
            let cap = g.table.capacity();
            if g.volatile == 0 || cap == 0 {
                g.expire_cursor = 0;
                drop(g);
                self.expire_shard.store(s + 1, Relaxed);
                continue;
            }
            let mut pos = g.expire_cursor.min(cap);
            let mut delta = 0;
            while pos < cap && left > 0 {
                left -= 1;
                let Some(e) = g.table.get(pos) else {
                    pos += 1;
                    continue;
                };
                if e.expiry_ms().is_some() {
                    seen += 1;
                }
                if e.is_expired(now_ms) {
                    let (_, d) = g.remove(pos, None);
                    delta += d;
                    expired += 1;
                    if g.table.capacity() != cap {
                        pos = 0; // shrunk: start the shard again next time
                        break;
                    }
                    // A later entry may have shifted into `pos`: look again.
                } else {
                    pos += 1;
                }
            }
            let done = pos >= g.table.capacity();
            g.expire_cursor = if done { 0 } else { pos };
            drop(g);
            self.account(delta);
            if done {
                self.expire_shard.store(s + 1, Relaxed);
            }
        }
        self.stats.expired_keys.fetch_add(expired as u64, Relaxed);
        (seen, expired)
    }

    /// Whether active expiry or tombstone collection may find work: some
    /// shard holds a key with an expiry or a tombstone (read without
    /// locks, from the copies guards leave on drop), or evicted keys or a
    /// flush wait to be shared. False on an idle store of plain keys.
    pub fn has_chores(&self) -> bool {
        self.flush_to_share.load(Relaxed) != 0
            || self.shards.iter().any(|s| s.chores.load(Relaxed))
            || !self.evictions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Drops tombstones whose grace period ended. Returns how many.
    pub fn gc_tombstones(&self, now_ms: u64) -> usize {
        let mut n = 0;
        for s in 0..SHARD_COUNT {
            if !self.shards[s].chores.load(Relaxed) {
                continue;
            }
            let mut g = self.lock(s);
            if g.tombs.is_empty() {
                continue;
            }
            let before = g.tombs.bytes as i64;
            n += g.tombs.expire(now_ms);
            let freed = g.tombs.bytes as i64 - before;
            drop(g);
            self.account(freed);
        }
        n
    }

    /// Bytes the tombstones take (counted in `used_memory`).
    pub fn tombstone_bytes(&self) -> usize {
        (0..SHARD_COUNT).map(|s| self.lock(s).tombs.bytes).sum()
    }

    /// Tombstones held.
    pub fn tombstones(&self) -> usize {
        (0..SHARD_COUNT).map(|s| self.lock(s).tombs.len()).sum()
    }

    // ---- whole-keyspace operations --------------------------------------

    /// Number of keys (expired ones not yet collected included, as Redis).
    pub fn len(&self) -> usize {
        (0..SHARD_COUNT).map(|s| self.lock(s).table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of keys with an expiry.
    pub fn volatile_len(&self) -> usize {
        (0..SHARD_COUNT).map(|s| self.lock(s).volatile).sum()
    }

    /// Empties the keyspace and returns the old tables, so the caller can
    /// free them on another thread (FLUSHALL ASYNC).
    pub fn flush(&self) -> Vec<Table> {
        let mut old = Vec::with_capacity(SHARD_COUNT);
        // Hold every shard (ascending, like `with_keys`) so no multi-key
        // command straddles the flush: it happens wholly before or after.
        let mut guards: Vec<ShardGuard<'_>> = (0..SHARD_COUNT).map(|s| self.lock(s)).collect();
        for g in guards.iter_mut() {
            let mut freed = (g.table.bucket_bytes() + g.tombs.bytes) as i64;
            for (_, e) in g.table.iter() {
                freed += e.mem_cost() as i64;
            }
            old.push(g.table.take_all());
            g.volatile = 0;
            g.expire_cursor = 0;
            g.slot_counts = [0; SLOTS_PER_SHARD];
            g.digests = [0; SLOTS_PER_SHARD];
            g.tombs.clear();
            g.horizons = [0; SLOTS_PER_SHARD];
            self.account(-freed);
        }
        drop(guards);
        old
    }

    /// FLUSHALL: [`Store::flush`], and with peers a flush epoch: a version
    /// newer than anything this node made or applied becomes the floor
    /// below which no state is accepted again. `coordinator`: the node the
    /// client asked (the others run the broadcast's shares) queues it for
    /// the members the broadcast could not reach
    /// ([`Store::take_flush_to_share`]), so one that missed the flush drops
    /// what it held and nobody copies it back.
    pub fn flush_all(&self, now_ms: u64, coordinator: bool) -> Vec<Table> {
        let old = self.flush();
        if self.keep_tombstones.load(Relaxed) {
            let node = self.node_id.load(Relaxed);
            let v = (0..SHARD_COUNT).map(|s| self.lock(s).next_version(now_ms, node)).max().unwrap_or(0);
            self.flush_before(v);
            if coordinator {
                self.flush_to_share.fetch_max(v, Relaxed);
            }
        }
        old
    }

    /// The flush epoch of a FLUSHALL at `version` (here or elsewhere):
    /// removes every key older than it, raises the floor below which states
    /// are refused, and moves every shard's clock past it. Keys written
    /// after it (newer versions) stay. Returns the keys removed.
    pub fn flush_before(&self, version: u64) -> usize {
        let prev = self.flushed_before.fetch_max(version, Relaxed);
        if prev >= version {
            return 0;
        }
        let mut removed = 0;
        for s in 0..SHARD_COUNT {
            let mut g = self.lock(s);
            g.observe(version);
            let old: Vec<Vec<u8>> =
                g.table.iter().filter(|(_, e)| e.version() < version).map(|(_, e)| e.key().to_vec()).collect();
            let mut delta = 0;
            for key in old {
                if let Some(pos) = g.table.find(&key, hash_key(&key)) {
                    delta += g.remove(pos, Some(key_slot(&key))).1;
                    removed += 1;
                }
            }
            drop(g);
            self.account(delta);
        }
        removed
    }

    /// The flush epoch (0: none).
    pub fn flushed_before(&self) -> u64 {
        self.flushed_before.load(Relaxed)
    }

    /// The version of a FLUSHALL run here that the other members have not
    /// been told of yet (0: none); taking it clears it.
    pub fn take_flush_to_share(&self) -> u64 {
        self.flush_to_share.swap(0, Relaxed)
    }

    /// Keys matching a glob pattern (KEYS).
    pub fn keys(&self, pattern: &[u8], now_ms: u64) -> Vec<Vec<u8>> {
        self.keys_where(pattern, now_ms, |_| true)
    }

    /// Keys matching a glob pattern in the slots `keep` accepts.
    pub fn keys_where(&self, pattern: &[u8], now_ms: u64, keep: impl Fn(u16) -> bool) -> Vec<Vec<u8>> {
        let all = pattern == b"*";
        let mut out = Vec::new();
        for s in 0..SHARD_COUNT {
            let g = self.lock(s);
            if g.table.is_empty() || !(0..SLOTS_PER_SHARD).any(|i| keep((i * SHARD_COUNT + s) as u16)) {
                continue;
            }
            for (_, e) in g.table.iter() {
                if !e.is_expired(now_ms)
                    && (all || glob::glob_match(pattern, e.key(), false))
                    && keep(key_slot(e.key()))
                {
                    out.push(e.key().to_vec());
                }
            }
        }
        out
    }

    /// One step of SCAN. The cursor is `shard << 48 | h`, meaning "every key
    /// of this shard whose hash (top 48 bits) is below `h` was returned";
    /// it stays below 2^56, which leaves the cluster room to put a member
    /// index above it and still stay below 2^63 for clients that read
    /// cursors as signed.
    /// Hashes do not change when tables grow, so a full scan returns every
    /// key present from its start to its end, whatever happens meanwhile.
    /// Returns the next cursor (0: done) and up to about `count` keys.
    pub fn scan(&self, cursor: u64, count: usize, now_ms: u64) -> (u64, Vec<Vec<u8>>) {
        self.scan_where(cursor, count, now_ms, |_| true)
    }

    /// [`Store::scan`] over the slots `keep` accepts.
    pub fn scan_where(
        &self,
        cursor: u64,
        count: usize,
        now_ms: u64,
        keep: impl Fn(u16) -> bool,
    ) -> (u64, Vec<Vec<u8>>) {
        const H_BITS: u32 = 48;
        const H_MASK: u64 = (1 << H_BITS) - 1;
        let count = count.max(1);
        let mut shard = (cursor >> H_BITS) as usize;
        let mut from = cursor & H_MASK;
        let mut out = Vec::new();
        while shard < SHARD_COUNT && out.len() < count {
            let g = self.lock(shard);
            let mut found: Vec<(u64, &[u8])> = g
                .table
                .iter()
                .filter(|(_, e)| !e.is_expired(now_ms) && keep(key_slot(e.key())))
                .map(|(_, e)| (hash_key(e.key()) >> (64 - H_BITS), e.key()))
                .filter(|(h, _)| *h >= from)
                .collect();
            found.sort_unstable();
            let want = count - out.len();
            if found.len() <= want {
                out.extend(found.iter().map(|(_, k)| k.to_vec()));
                shard += 1;
                from = 0;
            } else {
                // Take `want` keys, plus any that share the last hash so the
                // cursor never splits keys with equal hashes.
                let last = found[want - 1].0;
                let end = found.iter().position(|(h, _)| *h > last).unwrap_or(found.len());
                out.extend(found[..end].iter().map(|(_, k)| k.to_vec()));
                if end == found.len() {
                    shard += 1;
                    from = 0;
                } else {
                    from = last + 1;
                    break;
                }
            }
        }
        let next = if shard >= SHARD_COUNT { 0 } else { ((shard as u64) << H_BITS) | from };
        (next, out)
    }

    /// A random live key (RANDOMKEY).
    pub fn random_key(&self, now_ms: u64) -> Option<Vec<u8>> {
        for _ in 0..SHARD_COUNT * 4 {
            // From a random shard on to the first non-empty one, so that a
            // non-empty keyspace always yields a key.
            let start = (self.random() % SHARD_COUNT as u64) as usize;
            let found = (0..SHARD_COUNT).map(|d| (start + d) % SHARD_COUNT).find_map(|s| {
                let g = self.lock(s);
                (!g.table.is_empty()).then_some(g)
            });
            let g = found?;
            let start = (self.random() % g.table.capacity() as u64) as usize;
            let pos = g.table.occupied_from(start).expect("non-empty table");
            let e = g.table.get(pos).expect("occupied");
            if e.is_expired(now_ms) {
                self.remove_counted(g, pos, &self.stats.expired_keys);
                continue;
            }
            return Some(e.key().to_vec());
        }
        None
    }

    /// Keys stored in the slots `keep` accepts (expired ones included).
    pub fn count_keys_where(&self, keep: impl Fn(u16) -> bool) -> usize {
        let mut n = 0;
        for s in 0..SHARD_COUNT {
            let g = self.lock(s);
            for i in 0..SLOTS_PER_SHARD {
                if keep((i * SHARD_COUNT + s) as u16) {
                    n += g.slot_counts[i] as usize;
                }
            }
        }
        n
    }

    /// Keys stored in `slot` (expired ones included until collected).
    pub fn count_keys_in_slot(&self, slot: u16) -> usize {
        self.lock(shard_of(slot)).slot_counts[slot_index(slot)] as usize
    }

    /// Visits every live entry and every tombstone of `slot` with its shard
    /// locked (a slot copy for rebalancing sees one consistent moment).
    pub fn visit_slot(&self, slot: u16, now_ms: u64, mut live: impl FnMut(&Entry), mut dead: impl FnMut(&[u8], u64)) {
        self.visit_slots(&[slot], now_ms, |_, e| live(e), |_, k, v| dead(k, v));
    }

    /// [`Store::visit_slot`] for several slots of one shard in one pass
    /// (each key's slot computed once), with the slot of each callback.
    pub fn visit_slots(
        &self,
        slots: &[u16],
        now_ms: u64,
        mut live: impl FnMut(u16, &Entry),
        mut dead: impl FnMut(u16, &[u8], u64),
    ) {
        let Some(&first) = slots.first() else { return };
        let shard = shard_of(first);
        assert!(slots.iter().all(|&s| shard_of(s) == shard), "slots of one shard only");
        let mut wanted = [false; SLOTS_PER_SHARD];
        for &s in slots {
            wanted[slot_index(s)] = true;
        }
        let g = self.lock(shard);
        for (_, e) in g.table.iter() {
            let slot = key_slot(e.key());
            if wanted[slot_index(slot)] && !e.is_expired(now_ms) {
                live(slot, e);
            }
        }
        for (k, t) in g.tombs.iter() {
            let slot = key_slot(k);
            if wanted[slot_index(slot)] {
                dead(slot, k, t.version);
            }
        }
    }

    /// Deletes every key and tombstone of `slot` (a slot this node no
    /// longer owns, after its new owners confirmed their copies). Returns
    /// the keys removed.
    pub fn drop_slot(&self, slot: u16) -> usize {
        let mut g = self.lock(shard_of(slot));
        let mut delta = 0;
        let mut removed = 0;
        let mut pos = 0;
        while pos < g.table.capacity() {
            match g.table.get(pos) {
                Some(e) if key_slot(e.key()) == slot => {
                    let cap = g.table.capacity();
                    let (_, d) = g.remove(pos, Some(slot));
                    delta += d;
                    removed += 1;
                    if g.table.capacity() != cap {
                        pos = 0; // shrunk: walk again from the start
                    }
                    // Else a later entry may have shifted into `pos`.
                }
                _ => pos += 1,
            }
        }
        let before = g.tombs.bytes as i64;
        g.tombs.retain(|k| key_slot(k) != slot);
        delta += g.tombs.bytes as i64 - before;
        // Whatever this node deleted of the slot is forgotten with it: a
        // later copy (the slot coming back) is taken whole.
        g.horizons[slot_index(slot)] = 0;
        drop(g);
        self.account(delta);
        removed
    }

    /// Digests of `slots` (of one shard): for each, the XOR over its keys (expired ones
    /// not yet removed included) and tombstones of [`digest_of`]. Equal
    /// contents give equal digests whatever the order they were written in
    /// (anti-entropy compares them between owners). Kept up to date by
    /// every write, so this reads one word per slot and hashes no key.
    pub fn slot_digests(&self, slots: &[u16]) -> Vec<u64> {
        let Some(&first) = slots.first() else { return Vec::new() };
        assert!(slots.iter().all(|&s| shard_of(s) == shard_of(first)), "slots of one shard only");
        let g = self.lock(shard_of(first));
        slots.iter().map(|&s| g.digests[slot_index(s)] ^ g.tombs.digests[slot_index(s)]).collect()
    }

    /// [`Store::slot_digests`] of every slot, indexed by slot.
    pub fn all_slot_digests(&self) -> Vec<u64> {
        let mut out = vec![0; usize::from(SLOT_COUNT)];
        for s in 0..SHARD_COUNT {
            let g = self.lock(s);
            for i in 0..SLOTS_PER_SHARD {
                out[i * SHARD_COUNT + s] = g.digests[i] ^ g.tombs.digests[i];
            }
        }
        out
    }

    /// Up to `count` live keys of `slot`.
    pub fn keys_in_slot(&self, slot: u16, count: usize, now_ms: u64) -> Vec<Vec<u8>> {
        let g = self.lock(shard_of(slot));
        g.table
            .iter()
            .filter(|(_, e)| !e.is_expired(now_ms) && key_slot(e.key()) == slot)
            .take(count)
            .map(|(_, e)| e.key().to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests;
