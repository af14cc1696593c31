//! Access to keys while their shards are locked: [`KeyRef`] (one key) and
//! [`MultiKey`] (several, shards locked in order), where every read,
//! write, replicated apply and tombstone of a key goes through.

use super::*;

/// Several shards locked at once (see [`Store::with_keys`]).
pub struct MultiKey<'a> {
    pub(super) store: &'a Store,
    pub(super) guards: Vec<(usize, ShardGuard<'a>)>,
    pub(super) now_ms: u64,
}

impl MultiKey<'_> {
    /// Access to one of the keys given to [`Store::with_keys`].
    pub fn key<'b>(&'b mut self, key: &'b [u8]) -> KeyRef<'b> {
        let slot = key_slot(key);
        let s = shard_of(slot);
        let idx = self.guards.binary_search_by_key(&s, |(i, _)| *i).expect("key was locked by with_keys");
        let shard: &mut ShardInner = &mut self.guards[idx].1;
        KeyRef::new(shard, self.store, key, slot, self.now_ms)
    }
}

/// Exclusive access to one key while its shard is locked.
pub struct KeyRef<'a> {
    shard: &'a mut ShardInner,
    store: &'a Store,
    key: &'a [u8],
    slot: u16,
    hash: u64,
    pos: Option<usize>,
    now_ms: u64,
}

impl<'a> KeyRef<'a> {
    pub(super) fn new(shard: &'a mut ShardInner, store: &'a Store, key: &'a [u8], slot: u16, now_ms: u64) -> Self {
        let hash = hash_key(key);
        let mut pos = shard.table.find(key, hash);
        if let Some(p) = pos
            && shard.table.get(p).is_some_and(|e| e.is_expired(now_ms))
        {
            let (_, delta) = shard.remove(p, Some(slot));
            store.account(delta);
            store.stats.expired_keys.fetch_add(1, Relaxed);
            pos = None;
        }
        KeyRef { shard, store, key, slot, hash, pos, now_ms }
    }

    #[inline]
    pub fn exists(&self) -> bool {
        self.pos.is_some()
    }

    pub fn key(&self) -> &[u8] {
        self.key
    }

    #[inline]
    pub fn entry(&self) -> Option<&Entry> {
        self.pos.and_then(|p| self.shard.table.get(p))
    }

    #[inline]
    pub fn value(&self) -> Option<&[u8]> {
        self.entry().map(Entry::value)
    }

    #[inline]
    pub fn expiry_ms(&self) -> Option<u64> {
        self.entry().and_then(Entry::expiry_ms)
    }

    fn new_access(&self) -> u32 {
        if self.store.policy().is_lfu() { policy::lfu_new(self.now_ms) } else { policy::lru_clock(self.now_ms) }
    }

    /// Records an access for LRU/LFU.
    #[inline]
    pub fn touch(&mut self) {
        let Some(p) = self.pos else { return };
        let policy = self.store.policy();
        let access = if policy.is_lfu() {
            let r = self.shard.random();
            let old = self.shard.table.get(p).expect("present").access();
            policy::lfu_touch(old, self.now_ms, self.store.lfu_decay_time(), self.store.lfu_log_factor(), r)
        } else {
            policy::lru_clock(self.now_ms)
        };
        if let Some(e) = self.shard.table.get_mut(p) {
            e.set_access(access);
        }
    }

    /// Stores `value` with `expiry_ms`, replacing any old value.
    pub fn set(&mut self, value: &[u8], expiry_ms: Option<u64>) {
        let version = self.next_version();
        let access = self.new_access();
        let entry = Entry::new(self.key, value, expiry_ms, version, access);
        self.put(entry);
    }

    /// Replaces the value and keeps the key's expiry (INCR, APPEND,
    /// SETRANGE, INCRBYFLOAT rewrite values without touching the TTL).
    pub fn set_keep_ttl(&mut self, value: &[u8]) {
        let expiry = self.expiry_ms();
        self.set(value, expiry);
    }

    /// Stores an entry built elsewhere (RENAME, COPY); its key must be this key.
    pub fn put_entry_from(&mut self, other: &Entry, expiry_ms: Option<u64>) {
        let version = self.next_version();
        let entry = other.rebuild(self.key, expiry_ms, version);
        self.put(entry);
    }

    fn next_version(&mut self) -> u64 {
        self.shard.next_version(self.now_ms, self.store.node_id.load(Relaxed))
    }

    fn put(&mut self, entry: Entry) {
        if !self.shard.tombs.is_empty() && self.shard.tombs.remove(self.key).is_some() {
            self.store.account(-(tomb_cost(self.key) as i64));
        }
        let delta = match self.pos {
            Some(p) => self.shard.replace(p, self.slot, entry),
            None => {
                let (p, d) = self.shard.insert(self.hash, self.slot, entry);
                self.pos = Some(p);
                d
            }
        };
        self.store.account(delta);
    }

    /// Changes the expiry of an existing key. False if the key is missing.
    pub fn set_expiry(&mut self, expiry_ms: Option<u64>) -> bool {
        let Some(p) = self.pos else { return false };
        if self.shard.table.get(p).expect("present").expiry_ms() == expiry_ms {
            return true;
        }
        let version = self.next_version();
        let entry = self.shard.table.get(p).expect("present").rebuild(self.key, expiry_ms, version);
        let delta = self.shard.replace(p, self.slot, entry);
        self.store.account(delta);
        true
    }

    /// Deletes the key, returning its entry, and leaves a tombstone with a
    /// new version so replicas learn of the delete and keep it (unless
    /// tombstones are off: see [`Store::set_keep_tombstones`]).
    pub fn remove(&mut self) -> Option<Entry> {
        let p = self.pos.take()?;
        let (old, delta) = self.shard.remove(p, Some(self.slot));
        self.store.account(delta);
        if self.store.keep_tombstones.load(Relaxed) {
            let version = self.next_version();
            self.put_tomb(version);
        }
        Some(old)
    }

    /// Another owner evicted this key at `version`: drops the live copy if
    /// it is not newer, leaving no tombstone (an eviction is no delete: a
    /// later copy may come back). True if dropped.
    pub fn drop_evicted(&mut self, version: u64) -> bool {
        let Some(p) = self.pos else { return false };
        if self.shard.table.get(p).is_none_or(|e| e.version() > version) {
            return false;
        }
        self.pos = None;
        let (_, delta) = self.shard.remove(p, Some(self.slot));
        self.store.account(delta);
        self.store.stats.evictions_followed.fetch_add(1, Relaxed);
        true
    }

    /// A client's delete (DEL, UNLINK, GETDEL): [`KeyRef::remove`], and a
    /// tombstone even when nothing is here — a replica or a co-owner may
    /// still hold the key (this node evicted it, or missed its write), and
    /// without one the delete would replicate nothing and anti-entropy
    /// would copy the key back.
    pub fn delete(&mut self) -> Option<Entry> {
        let old = self.remove();
        if old.is_none() && self.store.keep_tombstones.load(Relaxed) {
            let version = self.next_version();
            self.put_tomb(version);
        }
        old
    }

    /// A tombstone lives for the grace from when its delete happened (its
    /// version's time, never later than now): copying it again (repair,
    /// replication) does not make it live longer, and one whose grace has
    /// passed is not made again. Otherwise two owners whose copies of it
    /// expire moments apart hand it back and forth for ever.
    fn put_tomb(&mut self, version: u64) {
        let stamped = super::version_parts(version).0.min(self.now_ms);
        let until = stamped.saturating_add(self.store.tomb_grace_ms.load(Relaxed));
        if until <= self.now_ms {
            return;
        }
        let delta = self.shard.tomb(self.key, version, until, &self.store.stats.tombstones_dropped);
        self.store.account(delta);
    }

    /// The version of the live entry, else of the tombstone, else 0.
    pub fn version(&self) -> u64 {
        match self.entry() {
            Some(e) => e.version(),
            None => self.tombstone().unwrap_or(0),
        }
    }

    /// The version of the key's tombstone, if it was deleted recently.
    pub fn tombstone(&self) -> Option<u64> {
        if self.shard.tombs.is_empty() {
            return None;
        }
        self.shard.tombs.get(self.key).map(|t| t.version)
    }

    /// Applies a state made by another node if it is newer than what this
    /// key holds (last writer wins by version). True if applied.
    ///
    /// A key absent here (no value, no tombstone) whose version is at or
    /// below its slot's horizon — the newest tombstone this node had to
    /// drop early — is refused: it may be one this node deleted, and a
    /// refused copy is safer than a resurrected delete
    /// (`tombstone_horizon_refusals`).
    pub fn apply(&mut self, version: u64, incoming: Incoming<'_>) -> bool {
        let mine = self.version();
        if version <= mine {
            self.store.stats.stale.fetch_add(1, Relaxed);
            return false;
        }
        if mine == 0 && version <= self.shard.horizons[slot_index(self.slot)] {
            self.store.stats.horizon_refusals.fetch_add(1, Relaxed);
            return false;
        }
        if version < self.store.flushed_before.load(Relaxed) {
            // Written before a FLUSHALL: it stays flushed.
            self.store.stats.flush_refusals.fetch_add(1, Relaxed);
            return false;
        }
        self.shard.observe(version);
        match incoming {
            Incoming::Put { value, expiry_ms } if expiry_ms.is_none_or(|e| e > self.now_ms) => {
                let access = self.new_access();
                self.put(Entry::new(self.key, value, expiry_ms, version, access));
            }
            // Already expired: an older value here goes, and its tombstone
            // keeps it from coming back; with nothing here, nothing is
            // kept (a tombstone would only crowd out real deletes').
            Incoming::Put { .. } => {
                if let Some(p) = self.pos.take() {
                    let (_, delta) = self.shard.remove(p, Some(self.slot));
                    self.store.account(delta);
                    self.put_tomb(version);
                }
            }
            Incoming::Delete => {
                if let Some(p) = self.pos.take() {
                    let (_, delta) = self.shard.remove(p, Some(self.slot));
                    self.store.account(delta);
                }
                self.put_tomb(version);
            }
        }
        self.store.stats.applied.fetch_add(1, Relaxed);
        true
    }
}
