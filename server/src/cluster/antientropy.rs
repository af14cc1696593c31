//! Anti-entropy as data: which slots a shard holds, the per-shard sums two
//! co-owners compare before any slot digest, and the progress counters.
//! The comparison rounds over the links are `net::antientropy`'s.

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
