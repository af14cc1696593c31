//! Anti-entropy as data: which slots a shard holds, the per-shard sums two
//! co-owners compare before any slot digest, and the progress counters.
//! The comparison rounds over the links are `net::antientropy`'s.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use ringcache_protocol::SLOT_COUNT;

use super::topology::Topology;
use crate::store::{SHARD_COUNT, SLOTS_PER_SHARD};

/// Progress counters (INFO cluster, /metrics).
#[derive(Debug, Default)]
pub struct AntiEntropyStats {
    /// Shard-sum comparisons (one request per co-owner each).
    pub sum_checks: AtomicU64,
    /// Shards compared slot by slot.
    pub rounds: AtomicU64,
    /// Slot digests compared with a co-owner.
    pub slots_compared: AtomicU64,
    /// Slot digests that differed from a co-owner's.
    pub slots_differing: AtomicU64,
    /// Keys sent or fetched by repair.
    pub keys_repaired: AtomicU64,
    /// Unsettled slots a co-owner matched but answered "short" for (it
    /// cannot reach their keepers), so they did not settle.
    pub short_answers: AtomicU64,
    /// Settled slots that differed but were left for a second look
    /// (writes in flight, see [`Divergence`]).
    pub repairs_deferred: AtomicU64,
}

/// How long a settled slot may keep differing from a co-owner, with the
/// digests changing between looks, before it is repaired anyway.
pub const DIVERGENCE_PATIENCE_MS: u64 = 10_000;
/// Divergences remembered at most; past it, differing slots are repaired
/// at once (as before this rule), so the map stays bounded.
const DIVERGENCE_MAX: usize = 65_536;

/// Which differing settled slots to repair now. A slot's digest differs
/// from a co-owner's for a moment after every write, until the write's
/// replication lands there; repairing then lists and copies the whole slot
/// for nothing (under a write load, most repairs were such). So a settled
/// slot is repaired when it differs with the *same* pair of digests at two
/// looks (nothing was written to it meanwhile on either side: the
/// difference will not go away by itself), or after
/// [`DIVERGENCE_PATIENCE_MS`] of differing. Unsettled slots are not asked
/// about: their writes wait for the comparison.
#[derive(Debug, Default)]
pub struct Divergence {
    /// (slot, co-owner) → (digest here, digest there, first seen ms).
    seen: HashMap<(u16, u16), (u64, u64, u64)>,
}

impl Divergence {
    /// Whether to repair `slot` with `peer` now, their digests differing.
    pub fn repair_now(&mut self, slot: u16, peer: u16, mine: u64, theirs: u64, now_ms: u64) -> bool {
        debug_assert_ne!(mine, theirs, "asked about a slot that agrees");
        let full = self.seen.len() >= DIVERGENCE_MAX;
        match self.seen.get_mut(&(slot, peer)) {
            Some(&mut (m, t, first)) if (m, t) == (mine, theirs) || now_ms >= first + DIVERGENCE_PATIENCE_MS => {
                self.seen.remove(&(slot, peer));
                true
            }
            Some(entry) => {
                (entry.0, entry.1) = (mine, theirs);
                false
            }
            None if full => true,
            None => {
                self.seen.insert((slot, peer), (mine, theirs, now_ms));
                false
            }
        }
    }

    /// `slot` agrees with `peer` (or was repaired): forget it.
    pub fn agreed(&mut self, slot: u16, peer: u16) {
        if !self.seen.is_empty() {
            self.seen.remove(&(slot, peer));
        }
    }

    /// Divergences remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Per store shard: the XOR of the digests of the slots whose primary is
/// member `primary` and that member `other` also owns (what `RC.SUMS`
/// answers, and what the asker compares it with).
pub fn shard_sums(t: &Topology, digests: &[u64], primary: u16, other: u16) -> Vec<u64> {
    let mut sums = vec![0u64; SHARD_COUNT];
    for slot in 0..SLOT_COUNT {
        let owners = t.table.owners(slot);
        if owners.first() == Some(&primary) && owners[1..].contains(&other) {
            sums[usize::from(slot) % SHARD_COUNT] ^= digests[usize::from(slot)];
        }
    }
    sums
}

/// The slots of `shard`, in the order `RC.DIGESTS` answers them.
pub fn shard_slots(shard: usize) -> Vec<u16> {
    (0..SLOTS_PER_SHARD).map(|i| (i * SHARD_COUNT + shard) as u16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_that_stays_the_same_is_repaired_at_the_second_look() {
        let mut d = Divergence::default();
        assert!(!d.repair_now(7, 1, 10, 20, 0), "first look: may be a write in flight");
        assert!(d.repair_now(7, 1, 10, 20, 1_000), "same digests: nothing is on its way");
        assert!(d.is_empty());
    }

    #[test]
    fn a_slot_under_writes_waits_until_the_patience_runs_out() {
        let mut d = Divergence::default();
        assert!(!d.repair_now(7, 1, 10, 20, 0));
        assert!(!d.repair_now(7, 1, 11, 21, 1_000), "digests moved: writes in flight");
        assert!(!d.repair_now(7, 1, 12, 22, DIVERGENCE_PATIENCE_MS - 1));
        assert!(d.repair_now(7, 1, 13, 23, DIVERGENCE_PATIENCE_MS), "differing for the whole patience");
    }

    #[test]
    fn agreeing_forgets_and_peers_are_apart() {
        let mut d = Divergence::default();
        assert!(!d.repair_now(7, 1, 10, 20, 0));
        assert!(!d.repair_now(7, 2, 10, 20, 0), "another co-owner is its own look");
        d.agreed(7, 1);
        assert!(!d.repair_now(7, 1, 10, 20, 500), "a first look again after agreeing");
        assert!(d.repair_now(7, 2, 10, 20, 500));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut d = Divergence::default();
        for i in 0..DIVERGENCE_MAX {
            assert!(!d.repair_now((i % 16_384) as u16, (i / 16_384) as u16, 1, 2, 0));
        }
        assert!(d.repair_now(0, 100, 1, 2, 0), "full: repaired at once, not remembered");
        assert_eq!(d.len(), DIVERGENCE_MAX);
    }
}
