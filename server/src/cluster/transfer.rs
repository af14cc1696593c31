//! What a node knows about slots in motion: the slots it is importing
//! (and from whom), the copies it still has to confirm, the slots whose
//! owners changed and that anti-entropy has not settled since, and the
//! keys a write already fetched. Shared by the request path (read-through,
//! the write fetch), the peer handlers (`RC.SLOTDONE`, `RC.SENDING`) and
//! the rebalance and anti-entropy tasks; no clocks, no IO.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use ringcache_protocol::SLOT_COUNT;

use super::keepers::{Keepers, Shortfall};
use super::rebalance::imports;
use super::topology::Topology;

/// Keys remembered as fetched for writes while importing.
const CHECKED_MAX: usize = 1 << 20;

/// What the node shows of rebalancing (INFO, /metrics) and what requests
/// consult (read-through while importing).
#[derive(Debug)]
pub struct RebalanceState {
    /// Slot → the member sending it to this node.
    importing: RwLock<HashMap<u16, Arc<str>>>,
    importing_n: AtomicUsize,
    /// Slots received while joining (not awaited again).
    pub received: Mutex<HashSet<u16>>,
    /// (slot, member) copies this node still has to confirm: what a
    /// receiver asking `RC.SENDING` learns.
    pub outgoing: Mutex<HashSet<(u16, Arc<str>)>>,
    /// Members digest of the last table the rebalance task planned for.
    pub planned: AtomicU64,
    /// Keys of importing (or unsettled) slots already fetched from their
    /// previous owner (or co-owners) for a write, found or not; forgotten
    /// when the imports end or owners change again.
    checked: Mutex<HashSet<Vec<u8>>>,
    /// Slots whose owners changed (or all of them, after this node was
    /// declared down) and that anti-entropy has not compared with every
    /// co-owner since: a co-owner may hold writes this node missed, so a
    /// write here first fetches its key's newest state (one bit a slot).
    unsettled: Box<[AtomicU64]>,
    unsettled_n: AtomicUsize,
    /// Grows at every marking: a comparison that started before a marking
    /// settles nothing.
    unsettle_gen: AtomicU64,
    /// Which members hold each owned slot's acknowledged writes
    /// (`cluster::keepers`).
    pub keepers: RwLock<Keepers>,
    /// `RC.SUMS` shard bits per peer index, with what they were computed
    /// from (table epoch, marking generation, keepers version): recomputed
    /// only when one changed (a converged node sends the same each second).
    sums_sent: Mutex<HashMap<u16, SumsSent>>,
    /// Per asker index: the last `RC.SUMS` shard bits applied (table
    /// digest, bits) and the keepers version after: the same again with
    /// nothing changed since is skipped.
    sums_applied: Mutex<HashMap<u16, SumsApplied>>,
    /// Whether the keepers rule refuses writes and holds settles
    /// (`--partition-mode majority`; off with `available`).
    pub keepers_enforced: std::sync::atomic::AtomicBool,
    /// Writes refused because too few of their slot's keepers are members.
    pub keeper_refusals: AtomicU64,
    /// Slot copies waiting to start.
    pub slots_pending: AtomicU64,
    /// Slot copies sent and not yet confirmed.
    pub slots_in_flight: AtomicU64,
    /// Slot copies sent and confirmed.
    pub slots_sent: AtomicU64,
    /// Slot copies received completely.
    pub slots_received: AtomicU64,
    /// Slots deleted here after their new owners confirmed them.
    pub slots_dropped: AtomicU64,
    /// Keys sent in slot copies.
    pub keys_moved: AtomicU64,
    /// Bytes sent in slot copies.
    pub bytes_moved: AtomicU64,
    /// Slot copies that failed and were retried.
    pub transfer_errors: AtomicU64,
    /// Reads of importing slots answered by the previous owner.
    pub read_through: AtomicU64,
    /// Writes that fetched their key from co-owners first (unsettled slot).
    pub settle_fetches: AtomicU64,
    /// Fetches that a table change overlapped: not counted, fetched again.
    pub stale_fetches: AtomicU64,
    /// Client requests held while their keys were fetched.
    pub held_requests: AtomicU64,
    /// Requests refused because a fetch before them got too few answers.
    pub fetch_refusals: AtomicU64,
    /// Slots this node held without owning them, handed to their primary
    /// by anti-entropy and then deleted here.
    pub slots_handed_off: AtomicU64,
    /// Table changes the rebalance planned for.
    pub rebalances: AtomicU64,
    /// Duration of the last rebalance that finished (ms).
    pub last_ms: AtomicU64,
}

/// Shard bits, per store shard (256), as `RC.SUMS` carries them.
type ShardBits = [u64; 4];
/// What `RC.SUMS` bits sent to a peer were computed from (table epoch,
/// marking generation, keepers version), and the bits.
type SumsSent = (u64, u64, u64, ShardBits);
/// The last `RC.SUMS` bits applied from an asker (table digest, bits) and
/// the keepers version after.
type SumsApplied = (u64, ShardBits, u64);

impl Default for RebalanceState {
    fn default() -> Self {
        RebalanceState {
            importing: RwLock::default(),
            importing_n: AtomicUsize::new(0),
            received: Mutex::default(),
            outgoing: Mutex::default(),
            checked: Mutex::default(),
            unsettled: (0..SLOT_COUNT / 64).map(|_| AtomicU64::new(0)).collect(),
            unsettled_n: AtomicUsize::new(0),
            unsettle_gen: AtomicU64::new(0),
            planned: AtomicU64::new(0),
            keepers: RwLock::default(),
            sums_sent: Mutex::default(),
            sums_applied: Mutex::default(),
            keepers_enforced: std::sync::atomic::AtomicBool::new(true),
            keeper_refusals: AtomicU64::new(0),
            slots_pending: AtomicU64::new(0),
            slots_in_flight: AtomicU64::new(0),
            slots_sent: AtomicU64::new(0),
            slots_received: AtomicU64::new(0),
            slots_dropped: AtomicU64::new(0),
            keys_moved: AtomicU64::new(0),
            bytes_moved: AtomicU64::new(0),
            transfer_errors: AtomicU64::new(0),
            read_through: AtomicU64::new(0),
            settle_fetches: AtomicU64::new(0),
            stale_fetches: AtomicU64::new(0),
            held_requests: AtomicU64::new(0),
            fetch_refusals: AtomicU64::new(0),
            slots_handed_off: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }
}

/// Locks `m`, whatever a panicking holder left (the state stays usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RebalanceState {
    /// Whether a write already fetched `key` from its importing slot's
    /// previous owner.
    pub fn checked(&self, key: &[u8]) -> bool {
        lock(&self.checked).contains(key)
    }

    /// Remembers that a write fetched `key` already (bounded: cleared when
    /// full), if no slot was marked unsettled since the fetch began (at
    /// [`RebalanceState::unsettle_gen`] `generation`): a fetch that
    /// overlapped a table change asked the owners of the table before it
    /// and may have missed the newest state; the write fetches again.
    /// Returns whether it was remembered.
    pub fn mark_checked(&self, key: Vec<u8>, generation: u64) -> bool {
        let mut c = lock(&self.checked);
        // Under the lock: `unsettle` moves the generation before it
        // clears, so a stale mark is either refused here or cleared there.
        if self.unsettle_gen.load(Acquire) != generation {
            return false;
        }
        if c.len() >= CHECKED_MAX {
            c.clear(); // bounded: a key fetched again costs one round trip
        }
        c.insert(key);
        true
    }

    /// Whether this node still has a copy of `slot` to send (and confirm).
    pub fn is_sending(&self, slot: u16) -> bool {
        lock(&self.outgoing).iter().any(|(s, _)| *s == slot)
    }

    /// Marks `slots` unsettled (see the field).
    pub fn unsettle(&self, slots: impl IntoIterator<Item = u16>) {
        self.unsettle_gen.fetch_add(1, AcqRel);
        lock(&self.checked).clear();
        for slot in slots {
            let bit = 1u64 << (slot % 64);
            if self.unsettled[usize::from(slot / 64)].fetch_or(bit, Relaxed) & bit == 0 {
                self.unsettled_n.fetch_add(1, Relaxed);
            }
        }
    }

    /// Whether `slot` is unsettled (see the field).
    pub fn is_unsettled(&self, slot: u16) -> bool {
        self.unsettled_n.load(Relaxed) > 0
            && self.unsettled[usize::from(slot / 64)].load(Relaxed) & (1 << (slot % 64)) != 0
    }

    /// How many slots are unsettled.
    pub fn unsettled(&self) -> usize {
        self.unsettled_n.load(Relaxed)
    }

    /// The marking generation, read before a comparison starts and before
    /// the table it compares on: the table is published between two marks
    /// (`net::gossip`), so a generation that is still current at settle
    /// time was read after the table in force was published.
    pub fn unsettle_gen(&self) -> u64 {
        self.unsettle_gen.load(Acquire)
    }

    /// Settles `slot` if nothing was marked since `generation`.
    pub fn settle(&self, slot: u16, generation: u64) -> bool {
        if self.unsettle_gen.load(Relaxed) != generation {
            return false;
        }
        let bit = 1u64 << (slot % 64);
        if self.unsettled[usize::from(slot / 64)].fetch_and(!bit, Relaxed) & bit != 0 {
            self.unsettled_n.fetch_sub(1, Relaxed);
        }
        true
    }

    /// Settles `slot`, whose primary this node is and which it has compared
    /// with every co-owner in `t` (and the members `compared` names), if
    /// nothing was marked since `generation` and those members include
    /// enough of its keepers; its keepers are then its owners. Returns
    /// whether it settled.
    pub fn settle_compared(
        &self,
        slot: u16,
        generation: u64,
        t: &Topology,
        compared: impl Fn(&str) -> bool,
        w: u32,
    ) -> bool {
        let enforced = self.keepers_enforced.load(Relaxed);
        if enforced
            && !self.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner).covered_by(slot, t, compared, w)
        {
            return false;
        }
        if !self.settle(slot, generation) {
            return false;
        }
        self.keepers.write().unwrap_or_else(std::sync::PoisonError::into_inner).settled(slot, t);
        true
    }

    /// `RC.SUMS` from `primary` (a member of `t`, on the same table) said
    /// that in the store shards whose bits `shards` sets every slot it is
    /// primary for and this node co-owns settled there: those slots take
    /// their owners in `t` as keepers here too.
    pub fn keepers_settled_by(&self, primary: u16, t: &Topology, table: u64, shards: &[u64; 4]) {
        let seen = (table, *shards);
        let applied = |k: &Keepers| lock(&self.sums_applied).get(&primary) == Some(&(seen.0, seen.1, k.version()));
        if applied(&self.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner)) {
            return;
        }
        let theirs = |slot: u16| {
            let owners = t.table.owners(slot);
            let shard = usize::from(slot) % crate::store::SHARD_COUNT;
            shards[shard / 64] & (1 << (shard % 64)) != 0 && owners.first() == Some(&primary) && owners.contains(&t.me)
        };
        let stale: Vec<u16> = {
            let k = self.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            (0..ringcache_protocol::SLOT_COUNT).filter(|&s| theirs(s) && !k.current_here(s, t)).collect()
        };
        let mut k = self.keepers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for slot in stale {
            k.settled(slot, t);
        }
        lock(&self.sums_applied).insert(primary, (seen.0, seen.1, k.version()));
    }

    /// Per store shard (a bit each), whether every slot of it this node is
    /// primary for and `peer` co-owns in `t` has settled here with its
    /// owners as keepers (what `RC.SUMS` tells the peer).
    pub fn settled_with(&self, peer: u16, t: &Topology) -> [u64; 4] {
        const { assert!(crate::store::SHARD_COUNT == 256, "four words of shard bits") };
        let k = self.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let from = (t.table.epoch, self.unsettle_gen(), k.version());
        if let Some(&(e, g, v, bits)) = lock(&self.sums_sent).get(&peer)
            && (e, g, v) == from
        {
            return bits;
        }
        let mut shards = [u64::MAX; 4];
        for slot in 0..ringcache_protocol::SLOT_COUNT {
            let owners = t.table.owners(slot);
            if owners.first() == Some(&t.me)
                && owners[1..].contains(&peer)
                && (self.is_unsettled(slot) || !k.current_here(slot, t))
            {
                let shard = usize::from(slot) % crate::store::SHARD_COUNT;
                shards[shard / 64] &= !(1 << (shard % 64));
            }
        }
        lock(&self.sums_sent).insert(peer, (from.0, from.1, from.2, shards));
        shards
    }

    /// Whether a write to `slot` must be refused in `t` (keepers rule).
    pub fn keepers_short(&self, slot: u16, t: &Topology, w: u32) -> Option<Shortfall> {
        if !self.keepers_enforced.load(Relaxed) {
            return None;
        }
        self.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner).short(slot, t, w)
    }

    /// Forgets the keys fetched while importing (nothing is importing any more).
    pub fn imports_ended(&self) {
        lock(&self.checked).clear();
    }

    /// `RC.SENDING`: which of `slots` this node still has to copy to `to`,
    /// asked by a node whose table has members digest `table`. Until this
    /// node has planned for that same table it cannot tell: all "yes".
    pub fn sending(&self, to: &str, table: u64, slots: &[u16]) -> Vec<bool> {
        if self.planned.load(Relaxed) != table {
            return vec![true; slots.len()];
        }
        let out = lock(&self.outgoing);
        let to: Arc<str> = to.into();
        slots.iter().map(|&s| out.contains(&(s, to.clone()))).collect()
    }

    /// The importing slots grouped by sender, at most `max` per sender.
    pub fn imports_by_sender(&self, max: usize) -> HashMap<Arc<str>, Vec<u16>> {
        let m = self.importing.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut by: HashMap<Arc<str>, Vec<u16>> = HashMap::new();
        for (&slot, from) in m.iter() {
            let v = by.entry(from.clone()).or_default();
            if v.len() < max {
                v.push(slot);
            }
        }
        by
    }

    /// The member `slot` is being received from, if it is still coming.
    pub fn importing_from(&self, slot: u16) -> Option<Arc<str>> {
        if self.importing_n.load(Relaxed) == 0 {
            return None;
        }
        self.importing.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&slot).cloned()
    }

    /// How many slots are still arriving.
    pub fn importing(&self) -> usize {
        self.importing_n.load(Relaxed)
    }

    /// `RC.SLOTDONE`: the sender finished copying `slot` here. `joining`:
    /// this node is still a newcomer (`Phase::newcomer`).
    pub fn import_done(&self, slot: u16, joining: bool) {
        let mut m = self.importing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.remove(&slot).is_some() {
            self.slots_received.fetch_add(1, Relaxed);
        }
        if joining {
            lock(&self.received).insert(slot);
        }
        self.importing_n.store(m.len(), Relaxed);
        if m.is_empty() {
            self.imports_ended();
        }
    }

    /// `from` has nothing (more) to copy for `slot`. Nothing changes if
    /// the slot is awaited from another member by now (a newer table
    /// named another sender while the answer was on its way).
    pub fn import_abandoned(&self, slot: u16, from: &str) {
        let mut m = self.importing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.get(&slot).is_none_or(|f| &**f != from) {
            return;
        }
        m.remove(&slot);
        self.importing_n.store(m.len(), Relaxed);
        if m.is_empty() {
            self.imports_ended();
        }
    }

    /// Stops waiting for every slot still importing.
    pub fn clear_imports(&self) -> usize {
        let mut m = self.importing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.len();
        m.clear();
        self.importing_n.store(0, Relaxed);
        self.imports_ended();
        n
    }

    /// Recomputes what this node imports after a change from `old` to
    /// `new`; `joining`: this node is still a newcomer.
    pub fn expect_imports(&self, old: &Topology, new: &Topology, joining: bool) {
        let me = new.myself().name.as_str();
        let received = lock(&self.received);
        let mut m = self.importing.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if joining {
            // While joining, each table is planned afresh from the cluster
            // without this node: the senders may have changed.
            m.clear();
        }
        // Slots no longer owned here are not awaited any more. A sender
        // that left the table is still awaited: a node that drains sends
        // its slots and leaves before they all landed, and answers
        // (read-through, fetches) until it stops; `RC.SENDING`, or its
        // link going down, releases them (`net::rebalance::pull_check`).
        m.retain(|&slot, _| new.table.owners(slot).contains(&new.me));
        for (slot, from) in imports(&old.table, &new.table, me) {
            if !(joining && received.contains(&slot)) {
                m.insert(slot, from.into());
            }
        }
        self.importing_n.store(m.len(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_that_a_table_change_overlapped_counts_for_nothing() {
        let r = RebalanceState::default();
        let before = r.unsettle_gen();
        r.unsettle([7]);
        assert!(!r.mark_checked(b"k".to_vec(), before), "asked by the table before the change");
        assert!(!r.checked(b"k"));
        assert!(r.mark_checked(b"k".to_vec(), r.unsettle_gen()));
        assert!(r.checked(b"k"));
        r.unsettle([8]);
        assert!(!r.checked(b"k"), "a change forgets what was fetched");
    }
    fn topo(names: &[&str], me: &str) -> Topology {
        Topology::for_test(names, me)
    }

    /// Slots `me` awaits when it joins `a, b` (as a newcomer).
    fn joined(r: &RebalanceState) -> Topology {
        let old = topo(&["a", "b"], "a");
        let new = topo(&["a", "b", "me"], "me");
        r.expect_imports(&old, &new, true);
        new
    }

    #[test]
    fn a_sender_that_drains_is_still_awaited() {
        let r = RebalanceState::default();
        let _ = joined(&r);
        let from_b = r.imports_by_sender(usize::MAX).get("b").map_or(0, Vec::len);
        assert!(from_b > 0, "b sends some slots");
        // b leaves (drains) before its copies came: the slots this node
        // still owns stay awaited from it while it answers.
        let after_leave = topo(&["a", "me"], "me");
        r.expect_imports(&topo(&["a", "b", "me"], "me"), &after_leave, false);
        assert!(r.imports_by_sender(usize::MAX).get("b").is_some_and(|v| !v.is_empty()));
    }

    fn index(t: &Topology, name: &str) -> u16 {
        t.nodes.iter().position(|n| n.name == name).expect("a member") as u16
    }

    /// A co-owner whose table was behind when its primary told it a slot
    /// settled (the `RC.DIGESTS` bit) kept the keepers it had as a
    /// newcomer, its own name not counting; after a later failure it
    /// answered "short" for ever and the slot's new primary could never
    /// settle it (CI: four slots unsettled after a leave and a kill). The
    /// primary's `RC.SUMS` now says so once every slot they share settled.
    #[test]
    fn a_co_owner_that_missed_a_settled_bit_takes_it_from_the_sums() {
        let r = RebalanceState::default();
        let t1 = topo(&["a", "b", "c", "r"], "r");
        let (a, b) = (index(&t1, "a"), index(&t1, "b"));
        let slot = (0..SLOT_COUNT)
            .find(|&s| {
                let o = t1.table.owners(s);
                o[0] == a && o.contains(&t1.me) && o.contains(&b)
            })
            .expect("a slot of a, b and r with a primary");
        lock_keepers(&r).on_table(&topo(&["a", "b", "c"], "a"), &t1, &[], true);
        // b fails: without a word from the primary, r finds it short.
        let t2 = topo(&["a", "c", "r"], "r");
        let mut missed = lock_keepers(&r).clone();
        missed.on_table(&t1, &t2, &[], false);
        assert!(missed.short(slot, &t2, 2).is_some());
        // The primary settled everything it shares with r, and said so.
        let p = RebalanceState::default();
        let at_a = topo(&["a", "b", "c", "r"], "a");
        lock_keepers(&p).on_table(&topo(&["b", "c", "r"], "b"), &at_a, &[], true);
        p.unsettle(0..SLOT_COUNT);
        let peer = index(&at_a, "r");
        assert_eq!(p.settled_with(peer, &at_a), [0; 4]);
        let generation = p.unsettle_gen();
        let shard_of = |s: u16| usize::from(s) % crate::store::SHARD_COUNT;
        let primary_with_r = |s: &u16| {
            let o = at_a.table.owners(*s);
            o[0] == at_a.me && o.contains(&peer)
        };
        // One slot of another shard stays unsettled: its shard's bit stays
        // clear, the others' are set.
        let keep = (0..SLOT_COUNT).filter(primary_with_r).find(|&s| shard_of(s) != shard_of(slot)).expect("a slot");
        let other_shard = shard_of(keep);
        for s in (0..SLOT_COUNT).filter(|&s| at_a.table.owners(s)[0] == at_a.me && s != keep) {
            assert!(p.settle_compared(s, generation, &at_a, |_| true, 2), "slot {s}");
        }
        let shards = p.settled_with(peer, &at_a);
        let bit = |shard: usize| shards[shard / 64] & (1 << (shard % 64)) != 0;
        assert!(bit(shard_of(slot)));
        assert_eq!(shards.iter().map(|w| w.count_zeros()).sum::<u32>(), 1, "{shards:x?}");
        assert!(!bit(other_shard));
        r.keepers_settled_by(a, &t1, 1, &shards);
        lock_keepers(&r).on_table(&t1, &t2, &[], false);
        assert_eq!(r.keepers_short(slot, &t2, 2), None, "r and a hold its writes");
    }

    fn lock_keepers(r: &RebalanceState) -> std::sync::RwLockWriteGuard<'_, Keepers> {
        r.keepers.write().unwrap()
    }

    #[test]
    fn an_answer_from_a_former_sender_releases_nothing() {
        let r = RebalanceState::default();
        let _ = joined(&r);
        let (from, slots) = r.imports_by_sender(usize::MAX).into_iter().next().expect("some import");
        let other = if &*from == "a" { "b" } else { "a" };
        r.import_abandoned(slots[0], other);
        assert_eq!(r.importing_from(slots[0]).as_deref(), Some(&*from));
        r.import_abandoned(slots[0], &from);
        assert_eq!(r.importing_from(slots[0]), None);
    }
}
