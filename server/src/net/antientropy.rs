//! Anti-entropy: owners compare slot digests and copy the newer entries
//! both ways where they differ, repairing what hints and slot copies
//! missed (a replica that was cut off while its hint queue overflowed, a
//! write that raced a table change).
//!
//! The store keeps every slot's digest (an XOR of a hash of each key with
//! its version, and of each tombstone) up to date on every write, so
//! comparing costs no key reads. Top-down, once per `IDLE_PERIOD` (or at
//! once when slots become unsettled or the table changes): this node asks
//! each co-owner of the slots it is primary for for `RC.SUMS`, 256 words
//! (per store shard, the XOR of the digests of those slots) and its
//! table's members digest. Only shards whose sums differ, or that hold
//! slots this node does not own (strays), are compared slot by slot
//! (`RC.DIGESTS shard`: 64 slot digests), one per `ROUND_PERIOD`. For a
//! slot that differs, `RC.KEYVERS slot` lists the peer's keys with
//! versions; keys newer here are sent as replicated writes, keys newer
//! there are fetched with `RC.READ` and applied. A converged, idle cluster
//! thus exchanges one small request per co-owner per period and reads no
//! key, whatever it holds.
//!
//! Unsettled slots (owners changed) are compared shard by shard without
//! the pause, and settle once every co-owner on the same table matched.
//! Strays are left to the rebalance for `STRAY_GRACE` after a table change
//! and never handled in unsettled rounds, which stay one digest request per
//! co-owner per shard.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringcache_protocol::SLOT_COUNT;
use tokio::sync::watch;

use crate::cluster::antientropy::{Divergence, shard_slots, shard_sums};
use crate::cluster::membership::members_digest;
use crate::cluster::protocol::{Reply, Request};
use crate::cluster::replication::{encode_del, encode_put};
use crate::cluster::topology::Topology;
use crate::cluster::transfer::lock;
use crate::peers::{Link, Msg};
use crate::shared::Shared;
use crate::store::SHARD_COUNT;

/// A converged cluster compares shard sums this often.
const IDLE_PERIOD: Duration = Duration::from_secs(1);
/// Between two shards compared slot by slot (sums differed, or unsettled
/// slots that made no progress).
const ROUND_PERIOD: Duration = Duration::from_millis(30);
/// Answers to a round's requests must come within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a table change slots this node lost are left to the
/// rebalance (whose sender drops them with RC.DROPOK once the new owners
/// confirmed their copies) before anti-entropy hands them off itself.
/// Without it, every unsettled round after a join also pushed each lost
/// slot to its new primary, one call per slot, doubling the transfer and
/// keeping slots unsettled for tens of seconds on a loaded node.
const STRAY_GRACE: Duration = Duration::from_secs(10);

type Versions = HashMap<Vec<u8>, u64>;

/// When a co-owner's "short" answer was last logged (see `round`).
static LAST_SHORT_LOG: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
const SHORT_LOG_EVERY: Duration = Duration::from_secs(10);

pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut shard = 0usize;
    let mut progress = true;
    // Shards whose sums differed, compared slot by slot one per round.
    let mut backlog: VecDeque<usize> = VecDeque::new();
    // The table's epoch, and since when it has been the table.
    let mut table = (0u64, tokio::time::Instant::now());
    // Settled slots that differed once, for a second look.
    let mut divergence = Divergence::default();
    loop {
        // Unsettled slots (owners changed) are compared first, and without
        // the pause while that settles some (writes to them fetch first
        // until they are); with it when a co-owner does not answer.
        let unsettled = shared.rebalance.unsettled();
        if unsettled > 0 && progress {
            if stop.has_changed().unwrap_or(true) {
                return;
            }
            tokio::task::yield_now().await;
        } else {
            let pause = if unsettled > 0 || !backlog.is_empty() { ROUND_PERIOD } else { IDLE_PERIOD };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shared.antientropy_wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
        if shared.returning(super::unix_ms()) {
            // Back from an absence longer than the tombstone grace: this
            // copy may hold keys the others deleted and forgot; it spreads
            // nothing until the gossip driver has decided (`cluster::absence`).
            progress = false;
            continue;
        }
        // The generation before the table (`RebalanceState::unsettle_gen`).
        let generation = shared.rebalance.unsettle_gen();
        let t = shared.topology();
        if t.table.epoch != table.0 {
            table = (t.table.epoch, tokio::time::Instant::now());
            // Member indexes and owners change with the table.
            divergence = Divergence::default();
        }
        if shared.rebalance.importing() > 0 {
            progress = false;
            continue;
        }
        if t.nodes.len() < 2 {
            // Alone: no co-owner can hold anything newer (unless its
            // keepers failed: `settle_compared` leaves those unsettled).
            for slot in 0..SLOT_COUNT {
                shared.rebalance.settle_compared(slot, generation, &t, |_| false, shared.config.write_quorum);
            }
            continue;
        }
        let before = shared.rebalance.unsettled();
        if before > 0 {
            if let Some(next) = (0..SHARD_COUNT)
                .map(|i| (shard + i) % SHARD_COUNT)
                .find(|&s| shard_slots(s).into_iter().any(|slot| shared.rebalance.is_unsettled(slot)))
            {
                shard = next;
            }
            round(&shared, shard, false, &mut divergence).await;
            progress = shared.rebalance.unsettled() < before;
            shard = (shard + 1) % SHARD_COUNT;
            continue;
        }
        progress = true;
        let strays = table.1.elapsed() >= STRAY_GRACE;
        if backlog.is_empty() {
            backlog = differing_shards(&shared, &t, strays).await;
        }
        if let Some(s) = backlog.pop_front() {
            round(&shared, s, strays, &mut divergence).await;
        }
    }
}

/// The shards to compare slot by slot: those holding a slot this node
/// does not own (a stray copy), and those whose sums differ from a
/// co-owner's (every shard shared with it, if its table differs).
async fn differing_shards(shared: &Shared, t: &Topology, strays: bool) -> VecDeque<usize> {
    let digests = shared.store.all_slot_digests();
    let mut differ = [false; SHARD_COUNT];
    let mut peers = BTreeSet::new();
    for slot in 0..SLOT_COUNT {
        let owners = t.table.owners(slot);
        if owners.first() == Some(&t.me) {
            peers.extend(owners[1..].iter().copied());
        } else if strays
            && digests[usize::from(slot)] != 0
            && !owners.contains(&t.me)
            && !shared.rebalance.is_sending(slot)
        {
            differ[usize::from(slot) % SHARD_COUNT] = true;
        }
    }
    let me = t.myself().name.as_bytes();
    let table = members_digest(t);
    for peer in peers {
        let Some(link) = shared.links.get(&t.nodes[usize::from(peer)].name) else { continue };
        shared.antientropy.sum_checks.fetch_add(1, Relaxed);
        let shards = shared.rebalance.settled_with(peer, t);
        let settled = (shards != [0; 4]).then_some((table, shards));
        let Some((theirs, their_table, _)) = call_digests(&link, &Request::Sums { asker: me, settled }).await else {
            continue;
        };
        if theirs.len() != SHARD_COUNT {
            continue;
        }
        let mine = shard_sums(t, &digests, t.me, peer);
        let same_table = their_table == table;
        for s in 0..SHARD_COUNT {
            // Another table: compare every shared shard slot by slot.
            let shared_shard = !same_table
                && shard_slots(s).into_iter().any(|slot| {
                    let owners = t.table.owners(slot);
                    owners.first() == Some(&t.me) && owners[1..].contains(&peer)
                });
            if shared_shard || (same_table && theirs[s] != mine[s]) {
                differ[s] = true;
            }
        }
    }
    (0..SHARD_COUNT).filter(|&s| differ[s]).collect()
}

/// Compares `shard` with the co-owners of the slots this node is primary
/// for (settling what agrees); with `strays`, also hands slots held here
/// but no longer owned to their primary.
async fn round(shared: &Shared, shard: usize, strays: bool, divergence: &mut Divergence) {
    // The generation before the table (see `RebalanceState::unsettle_gen`).
    let generation = shared.rebalance.unsettle_gen();
    let t = shared.topology();
    let slots = shard_slots(shard);
    // Peers sharing a slot this node is primary for, with those slots;
    // and how many co-owners each slot has still to be compared with.
    let mut peers: HashMap<u16, Vec<usize>> = HashMap::new();
    let mut unanswered = vec![0usize; slots.len()];
    // Per slot, the members that matched it on this table (keepers count).
    let mut compared: Vec<Vec<u16>> = vec![Vec::new(); slots.len()];
    for (i, &slot) in slots.iter().enumerate() {
        let owners = t.table.owners(slot);
        if owners.first() != Some(&t.me) {
            // Writes run at the primary only: nothing to settle here.
            shared.rebalance.settle(slot, generation);
            continue;
        }
        unanswered[i] = owners.len() - 1;
        for &o in &owners[1..] {
            peers.entry(o).or_default().push(i);
        }
        if shared.rebalance.is_unsettled(slot) {
            // Keepers the table no longer makes owners (joins moved the
            // slot before it settled): compared too, or it never could.
            let k = shared.rebalance.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            for o in k.beyond_owners(slot, &t) {
                peers.entry(o).or_default().push(i);
            }
        }
    }
    // Slots held here without being owned here (a copy nobody planned:
    // views that disagreed when a partition healed named different
    // senders): handed to their primary, then deleted.
    let strays: Vec<usize> = (0..slots.len())
        .filter(|&i| strays && !t.table.owners(slots[i]).contains(&t.me) && !shared.rebalance.is_sending(slots[i]))
        .collect();
    let settle = |unanswered: &[usize], compared: &[Vec<u16>]| {
        for (i, &n) in unanswered.iter().enumerate() {
            if n == 0 && t.table.owners(slots[i]).first() == Some(&t.me) {
                let matched = |name: &str| compared[i].iter().any(|&o| t.nodes[usize::from(o)].name == name);
                shared.rebalance.settle_compared(slots[i], generation, &t, matched, shared.config.write_quorum);
            }
        }
    };
    // The slots settled here with their keepers now their owners: the
    // co-owners on this table take the same keepers.
    let settled_bits = || {
        let k = shared.rebalance.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.iter().enumerate().fold(0u64, |bits, (i, &slot)| {
            let mine = t.table.owners(slot).first() == Some(&t.me);
            if mine && !shared.rebalance.is_unsettled(slot) && k.current(slot, &t) { bits | 1 << i } else { bits }
        })
    };
    let before = settled_bits();
    let digests_request = Request::Digests { shard: shard as u16, settled: Some((members_digest(&t), before)) };
    if peers.is_empty() && strays.is_empty() {
        settle(&unanswered, &compared);
        return;
    }
    shared.antientropy.rounds.fetch_add(1, Relaxed);
    let mine = shared.store.slot_digests(&slots);
    for &i in strays.iter().filter(|&&i| mine[i] != 0) {
        let primary = t.table.owners(slots[i])[0];
        if let Some(link) = shared.links.get(&t.nodes[usize::from(primary)].name) {
            hand_off(shared, &link, slots[i]).await;
        }
    }
    let mut asked = Vec::with_capacity(peers.len());
    for (peer, idx) in peers {
        let Some(link) = shared.links.get(&t.nodes[usize::from(peer)].name) else { continue };
        asked.push(link.clone());
        let Some((theirs, their_table, short)) = call_digests(&link, &digests_request).await else {
            continue;
        };
        if theirs.len() != slots.len() {
            continue;
        }
        // A peer on another table may still take writes for these slots
        // without this node (it is primary there): comparing with it
        // repairs, but settles nothing.
        let same_table = their_table == members_digest(&t);
        for i in idx {
            shared.antientropy.slots_compared.fetch_add(1, Relaxed);
            if theirs[i] == mine[i] {
                divergence.agreed(slots[i], peer);
            } else {
                shared.antientropy.slots_differing.fetch_add(1, Relaxed);
                if !shared.rebalance.is_unsettled(slots[i])
                    && !divergence.repair_now(slots[i], peer, mine[i], theirs[i], super::unix_ms())
                {
                    // Settled, and maybe only a write on its way there.
                    shared.antientropy.repairs_deferred.fetch_add(1, Relaxed);
                    continue;
                }
                // A keeper that is no longer an owner only gives.
                let owner = t.table.owners(slots[i]).contains(&peer);
                if !repair_slot(shared, &link, slots[i], owner).await {
                    continue;
                }
            }
            // A co-owner that cannot reach the slot's keepers (it knows
            // of writes this node may not have, `cluster::keepers`):
            // compared, not settled.
            if same_table && short & (1 << i) == 0 {
                if t.table.owners(slots[i]).contains(&peer) {
                    unanswered[i] -= 1;
                }
                compared[i].push(peer);
            } else if same_table && shared.rebalance.is_unsettled(slots[i]) {
                shared.antientropy.short_answers.fetch_add(1, Relaxed);
                let mut last = lock(&LAST_SHORT_LOG);
                if last.is_none_or(|at| at.elapsed() > SHORT_LOG_EVERY) {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(
                        slot = slots[i],
                        member = %t.nodes[usize::from(peer)].name,
                        "an unsettled slot's co-owner cannot reach its keepers: the slot does not settle \
                         (logged at most every 10 s)"
                    );
                }
            }
        }
    }
    settle(&unanswered, &compared);
    // Slots this round settled: tell the co-owners now (a settled,
    // converged shard may not be compared slot by slot again for long).
    let after = settled_bits();
    if after & !before != 0 {
        let tell = Request::Digests { shard: shard as u16, settled: Some((members_digest(&t), after)) };
        for link in asked {
            let _ = call(&link, &tell).await;
        }
    }
}

/// Sends one request and returns its typed reply (None: no answer in
/// time, or the link failed).
async fn call(link: &Link, req: &Request<'_>) -> Option<Reply> {
    let replies = tokio::time::timeout(CALL_TIMEOUT, link.call(req.to_bytes(), 1)).await.ok()?.ok()?;
    Some(Reply::parse(req.kind(), replies.first()?))
}

/// The digests `req` (`RC.SUMS` or `RC.DIGESTS`) answers, and the members
/// digest they were taken under.
async fn call_digests(link: &Link, req: &Request<'_>) -> Option<(Vec<u64>, u64, u64)> {
    match call(link, req).await? {
        Reply::Digests { digests, table, short } => Some((digests, table, short)),
        _ => None,
    }
}

/// The keys and versions a member holds of `slot`.
async fn key_versions(link: &Link, slot: u16) -> Option<HashMap<Bytes, u64>> {
    match call(link, &Request::KeyVersions { slot }).await? {
        Reply::KeyVersions(list) => Some(list.into_iter().collect()),
        _ => None,
    }
}

/// Brings this node and `link`'s member to the newer version of every key
/// of `slot`, each way.
/// Sends the primary of a slot this node does not own whatever it holds
/// of it that is newer there; once the primary has everything at least as
/// new, deletes the slot here (if it is still not ours).
async fn hand_off(shared: &Shared, link: &Link, slot: u16) {
    let Some(theirs) = key_versions(link, slot).await else { return };
    let push = newer_here(shared, slot, &theirs).0;
    if push.is_empty() {
        let t = shared.topology();
        if !t.table.owners(slot).contains(&t.me) && !shared.rebalance.is_sending(slot) {
            shared.store.drop_slot(slot);
            shared.rebalance.slots_handed_off.fetch_add(1, Relaxed);
        }
        return;
    }
    shared.antientropy.keys_repaired.fetch_add(push.len() as u64, Relaxed);
    link.send(Msg::Repl { ops: push, done: None }).await;
}

/// The replicated writes of what this node holds of `slot` that is newer
/// than (or missing in) `theirs`, and every key's version here.
fn newer_here(shared: &Shared, slot: u16, theirs: &HashMap<Bytes, u64>) -> (Vec<(u16, Bytes)>, Versions) {
    let acc: RefCell<(Vec<(u16, Bytes)>, Versions)> = RefCell::default();
    shared.store.visit_slot(
        slot,
        super::unix_ms(),
        |e| {
            let (push, mine) = &mut *acc.borrow_mut();
            mine.insert(e.key().to_vec(), e.version());
            if theirs.get(e.key()).is_none_or(|&v| v < e.version()) {
                let mut b = BytesMut::new();
                encode_put(&mut b, e);
                push.push((slot, b.freeze()));
            }
        },
        |k, v| {
            let (push, mine) = &mut *acc.borrow_mut();
            mine.insert(k.to_vec(), v);
            if theirs.get(k).is_none_or(|&t| t < v) {
                let mut b = BytesMut::new();
                encode_del(&mut b, k, v);
                push.push((slot, b.freeze()));
            }
        },
    );
    acc.into_inner()
}

/// Brings `slot` here up to the member's copy (and, with `push_newer`,
/// the member up to this one's); whether every newer key there was
/// fetched (this node now holds the newest of both).
async fn repair_slot(shared: &Shared, link: &Link, slot: u16, push_newer: bool) -> bool {
    let Some(theirs) = key_versions(link, slot).await else {
        return false;
    };
    let now = super::unix_ms();
    // Newer here (or missing there): send as replicated writes.
    let (push, mine) = newer_here(shared, slot, &theirs);
    let pushed = if push_newer { push.len() as u64 } else { 0 };
    if push_newer && !push.is_empty() {
        link.send(Msg::Repl { ops: push, done: None }).await;
    }
    // Newer there (or missing here): fetch and apply.
    let wanted: Vec<&Bytes> =
        theirs.iter().filter(|(k, v)| mine.get(k.as_ref()).is_none_or(|m| m < *v)).map(|(k, _)| k).collect();
    let mut fetched = 0u64;
    let mut complete = true;
    for k in wanted {
        let Some(Reply::State(state)) = call(link, &Request::Read { key: k, table: None }).await else {
            complete = false;
            continue;
        };
        // A repair makes room like any insert, and waits when none can be
        // made (noeviction at the limit) rather than overshoot.
        let applied = shared.version_ok(state.version(), now)
            && shared.store.make_room(now).is_ok()
            && shared.store.with_key(k, now, |key| state.apply_to(key));
        fetched += u64::from(applied);
    }
    shared.antientropy.keys_repaired.fetch_add(pushed + fetched, Relaxed);
    complete
}
