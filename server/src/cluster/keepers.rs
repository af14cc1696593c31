//! Which members hold a slot's acknowledged writes (its keepers), so that
//! owners that take a slot over after failures never write from a copy
//! that misses writes acknowledged elsewhere.
//!
//! A write is acknowledged once W of its slot's owners hold it. While a
//! slot has the owners it had when it last settled, they are its keepers:
//! any `keepers - W + 1` of them include one that holds each acknowledged
//! write (a read quorum that meets every write quorum). When members fail,
//! the survivors give the slot new owners, which hold those writes only
//! once they have compared the slot with that many keepers. A partition
//! shows why this matters: before the minority side notices it is one, two
//! of a slot's three owners there can acknowledge writes the third, on the
//! majority side, never sees; the majority side's new owners would count
//! on from the third's copy, and the heal would keep their newer versions.
//!
//! So each node remembers, per slot it owns, the keepers as of the slot's
//! last settle; a write to a slot is refused (`-CLUSTERDOWN`) while fewer
//! than that read quorum of its keepers are members of the table (they
//! failed together, or are across a partition): it is writable again when
//! they are back. A slot settles (its keepers become its owners) only when
//! its primary has compared it with owners that include the read quorum;
//! the primary tells its co-owners so in its next anti-entropy request
//! ([`Keepers::current`]). A member that left gracefully drained its slots
//! to their next owners first: it counts as present. Off with
//! `--partition-mode available` (both sides write; last writer wins).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::replication::quorum;
use super::topology::Topology;

/// Graceful leavers remembered (bounded: the oldest is forgotten first,
/// which can only refuse more, never lose a write).
const GRACEFUL_MAX: usize = 256;

/// Owner names, shared by every slot with the same owners.
type Names = Arc<[Arc<str>]>;

/// A node's keepers per slot (see the module).
#[derive(Clone, Debug)]
pub struct Keepers {
    /// Per slot: `None` while this node does not own it (or never had a
    /// table), else the owners as of the slot's last settle here.
    slots: Vec<Option<Names>>,
    /// Per slot this node no longer owns: its keepers when it last did,
    /// which the copy it sends to the new owners carries.
    lost: Vec<Option<Names>>,
    /// Per slot: this node's own name among its keepers does not count,
    /// because it did not hold the slot when they were set (it started
    /// empty, or the keepers came with a copy it received); cleared when
    /// the slot settles here.
    self_absent: Vec<bool>,
    /// Members that left gracefully (their copies were drained), oldest
    /// first; a name that is back in a table is dropped from here.
    graceful: Vec<Arc<str>>,
    /// Per slot: the epoch of the table it last settled on here (0: never),
    /// so a copy's older keepers that arrive after it do not undo it.
    settled_epoch: Vec<u64>,
    /// Grows at every change, so callers can skip work when nothing
    /// changed (`RC.SUMS` once a second).
    version: u64,
}

impl Default for Keepers {
    fn default() -> Self {
        let n = usize::from(ringcache_protocol::SLOT_COUNT);
        Keepers {
            slots: vec![None; n],
            lost: vec![None; n],
            self_absent: vec![false; n],
            graceful: Vec::new(),
            settled_epoch: vec![0; n],
            version: 0,
        }
    }
}

/// How a slot's keepers stand in a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Keepers present (members of the table, or gone gracefully).
    pub have: usize,
    /// The read quorum over the keepers.
    pub need: usize,
}

impl Keepers {
    /// The read quorum over `keepers` members for write quorum `w`: it
    /// meets every set of W of them.
    pub fn need(keepers: usize, w: u32) -> usize {
        keepers + 1 - quorum(w, keepers)
    }

    /// The table changes from `old` (for a node that joins empty: the
    /// table without it) to `now`; `graceful` are the members `old` had
    /// that announced their leave. When no member failed (joins, graceful
    /// leaves: slot copies and drains carry the writes to the new owners,
    /// which settle only once they landed) a slot settled under `old`
    /// takes its owners in `now` as keepers. When a member failed, a slot
    /// keeps its keepers, and one this node starts owning takes `old`'s
    /// owners (as far as this node knows, they had it settled). A slot it
    /// no longer owns is forgotten. A `newcomer` (a node that starts empty
    /// and joins) forgets what its own earlier tables said: it held
    /// nothing.
    pub fn on_table(&mut self, old: &Topology, now: &Topology, graceful: &[&str], newcomer: bool) {
        self.version += 1;
        if newcomer && now.nodes.len() > 1 {
            self.slots.iter_mut().chain(self.lost.iter_mut()).for_each(|s| *s = None);
            self.self_absent.iter_mut().for_each(|a| *a = true);
        }
        for name in graceful {
            if !self.graceful.iter().any(|g| &**g == *name) {
                if self.graceful.len() >= GRACEFUL_MAX {
                    self.graceful.remove(0);
                }
                self.graceful.push(Arc::from(*name));
            }
        }
        let failed = old
            .nodes
            .iter()
            .any(|o| !now.nodes.iter().any(|n| n.name == o.name) && !self.graceful.iter().any(|g| **g == *o.name));
        self.graceful.retain(|g| !now.nodes.iter().any(|n| n.name == **g));
        let mut interned: HashMap<(bool, &[u16]), Names> = HashMap::new();
        fn intern<'a>(map: &mut HashMap<(bool, &'a [u16]), Names>, t: &Topology, side: bool, o: &'a [u16]) -> Names {
            map.entry((side, o)).or_insert_with(|| names_of(t, o)).clone()
        }
        for slot in 0..ringcache_protocol::SLOT_COUNT {
            let i = usize::from(slot);
            let mine = now.table.owners(slot);
            if !mine.contains(&now.me) {
                if let Some(k) = self.slots[i].take() {
                    self.lost[i] = Some(k);
                }
                continue;
            }
            self.lost[i] = None;
            let before = old.table.owners(slot);
            let prior = match self.slots[i].take() {
                Some(k) => k,
                None if before.is_empty() => intern(&mut interned, now, true, mine),
                None => intern(&mut interned, old, false, before),
            };
            let settled_before = prior.len() == before.len()
                && before.iter().all(|&o| prior.iter().any(|k| **k == *old.nodes[usize::from(o)].name));
            self.slots[i] = Some(if !failed && settled_before {
                // The new owners, and the keepers that left gracefully
                // (still counted present: a newcomer's own name is not).
                let owners = intern(&mut interned, now, true, mine);
                let gone = |k: &Arc<str>| self.graceful.iter().any(|g| g == k);
                if prior.iter().any(gone) {
                    owners.iter().chain(prior.iter().filter(|k| gone(k))).cloned().collect()
                } else {
                    owners
                }
            } else {
                prior
            });
        }
    }

    /// `slot` settled in `now`: its owners there hold its writes.
    pub fn settled(&mut self, slot: u16, now: &Topology) {
        self.version += 1;
        self.self_absent[usize::from(slot)] = false;
        self.settled_epoch[usize::from(slot)] = now.table.epoch;
        let owners = now.table.owners(slot);
        self.slots[usize::from(slot)] = owners.contains(&now.me).then(|| names_of(now, owners));
    }

    /// The keepers a copy of `slot` sent from here carries: this node's,
    /// whether it still owns the slot or lost it.
    pub fn for_copy(&self, slot: u16) -> Option<&[Arc<str>]> {
        let i = usize::from(slot);
        self.slots[i].as_deref().or(self.lost[i].as_deref())
    }

    /// A copy of `slot` landed here from a member whose keepers for it are
    /// `theirs`. A node that starts owning a slot takes its previous
    /// owners as keepers, which is wrong when they had not settled it (a
    /// failure, a partition): the sender knows better. Taken unless this
    /// node's own keepers already differ from its owners in `now` (it
    /// knows of a failure itself), or when the slot already settled here
    /// on `now` (its primary compared it, this copy included or not, before
    /// the copy's confirmation came: the sender's keepers are older).
    pub fn received(&mut self, slot: u16, theirs: &[&str], now: &Topology) {
        if theirs.is_empty() || !now.table.owners(slot).contains(&now.me) {
            return;
        }
        if now.table.epoch != 0 && self.settled_epoch[usize::from(slot)] == now.table.epoch {
            return;
        }
        if self.of(slot).is_none() || self.current(slot, now) {
            self.version += 1;
            self.slots[usize::from(slot)] = Some(theirs.iter().map(|&n| Arc::from(n)).collect());
            self.self_absent[usize::from(slot)] = true;
        }
    }

    /// Grows at every change of these keepers.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The keepers of `slot` (None: not tracked here).
    pub fn of(&self, slot: u16) -> Option<&[Arc<str>]> {
        self.slots[usize::from(slot)].as_deref()
    }

    fn count(&self, slot: u16, me: &str, present: impl Fn(&str) -> bool, w: u32) -> Option<Shortfall> {
        let keepers = self.of(slot)?;
        let absent = |k: &str| k == me && self.self_absent[usize::from(slot)];
        let have =
            keepers.iter().filter(|k| !absent(k) && (present(k) || self.graceful.iter().any(|g| g == *k))).count();
        let need = if keepers.iter().any(|k| absent(k)) {
            // This node's own earlier self is among the keepers but held
            // nothing it still has (it started empty): no point waiting for
            // it, and writes that only it (and keepers gone for good) held
            // are lost already. So only keepers that may return count as
            // missing: refused while one is missing and, with this node's
            // earlier self, they reach W (with W = 1, while any is
            // missing). Without this a newcomer with W = 1 could never
            // settle (it would need itself).
            let q = quorum(w, keepers.len());
            keepers.len().saturating_sub(q.saturating_sub(1).max(1))
        } else {
            Self::need(keepers.len(), w)
        };
        Some(Shortfall { have, need })
    }

    /// Whether a write to `slot` must be refused in `now`: too few of its
    /// keepers are members (the read quorum cannot be reached).
    pub fn short(&self, slot: u16, now: &Topology, w: u32) -> Option<Shortfall> {
        let s = self.count(slot, &now.myself().name, |k| now.nodes.iter().any(|n| *n.name == *k), w)?;
        (s.have < s.need).then_some(s)
    }

    /// Whether `slot`'s owners in `now` (which its primary has compared)
    /// include the read quorum of its keepers, so it may settle (the
    /// shell asks [`Keepers::covered_by`] with the members it compared).
    #[cfg(test)]
    pub fn covered(&self, slot: u16, now: &Topology, w: u32) -> bool {
        let owners = now.table.owners(slot);
        self.covered_by(slot, now, |k| owners.iter().any(|&o| *now.nodes[usize::from(o)].name == *k), w)
    }

    /// Whether the members this node compared `slot` with (`compared`)
    /// and itself hold the read quorum of its keepers, so it may settle.
    pub fn covered_by(&self, slot: u16, now: &Topology, compared: impl Fn(&str) -> bool, w: u32) -> bool {
        let me = now.myself().name.as_str();
        self.count(slot, me, |k| k == me || compared(k), w).is_none_or(|s| s.have >= s.need)
    }

    /// Keepers of `slot` that are members of `now` but neither its owners
    /// there nor this node: its primary compares the slot with them too,
    /// so a slot whose keepers are alive always settles.
    pub fn beyond_owners(&self, slot: u16, now: &Topology) -> Vec<u16> {
        let Some(keepers) = self.of(slot) else { return Vec::new() };
        let owners = now.table.owners(slot);
        keepers
            .iter()
            .filter_map(|k| now.nodes.iter().position(|n| *n.name == **k))
            .map(|i| i as u16)
            .filter(|i| *i != now.me && !owners.contains(i))
            .collect()
    }

    /// Whether `slot`'s keepers are its owners in `now` (it settled
    /// there): what a primary tells its co-owners.
    pub fn current(&self, slot: u16, now: &Topology) -> bool {
        let owners = now.table.owners(slot);
        self.of(slot).is_some_and(|k| {
            k.len() == owners.len() && owners.iter().all(|&o| k.iter().any(|n| **n == *now.nodes[usize::from(o)].name))
        })
    }

    /// Like [`Keepers::current`], and this node's own name counts (the
    /// slot settled here since its keepers were set).
    pub fn current_here(&self, slot: u16, now: &Topology) -> bool {
        !self.self_absent[usize::from(slot)] && self.current(slot, now)
    }

    /// How many slots this node owns in `now` whose writes are refused.
    pub fn short_slots(&self, now: &Topology, w: u32) -> usize {
        let members: BTreeSet<&str> = now.nodes.iter().map(|n| n.name.as_str()).collect();
        (0..ringcache_protocol::SLOT_COUNT)
            .filter(|&s| self.count(s, &now.myself().name, |k| members.contains(k), w).is_some_and(|s| s.have < s.need))
            .count()
    }
}

fn names_of(t: &Topology, owners: &[u16]) -> Names {
    owners.iter().map(|&o| Arc::from(t.nodes[usize::from(o)].name.as_str())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(names: &[&str], me: &str) -> Topology {
        Topology::for_test(names, me)
    }

    /// A slot whose owners in `t` are exactly `want` (by name, any order).
    fn slot_owned_by(t: &Topology, want: &[&str]) -> u16 {
        (0..ringcache_protocol::SLOT_COUNT)
            .find(|&s| {
                let o = t.table.owners(s);
                o.len() == want.len() && o.iter().all(|&i| want.contains(&t.nodes[usize::from(i)].name.as_str()))
            })
            .expect("some slot has those owners")
    }

    #[test]
    fn a_slot_two_of_whose_three_keepers_failed_refuses_writes_until_they_return() {
        let all = topo(&["a", "b", "c", "d", "e"], "c");
        let slot = slot_owned_by(&all, &["a", "b", "c"]);
        let mut k = Keepers::default();
        k.on_table(&all, &all, &[], false);
        k.settled(slot, &all);
        assert_eq!(k.short(slot, &all, 2), None);
        // a and b are across a partition: c, d, e make a new table.
        let rest = topo(&["c", "d", "e"], "c");
        k.on_table(&all, &rest, &[], false);
        assert_eq!(k.short(slot, &rest, 2), Some(Shortfall { have: 1, need: 2 }));
        assert!(!k.covered(slot, &rest, 2), "comparing with d and e proves nothing");
        // One of them back: c and a make the read quorum again.
        let back = topo(&["a", "c", "d", "e"], "c");
        k.on_table(&rest, &back, &[], false);
        assert_eq!(k.short(slot, &back, 2), None);
    }

    #[test]
    fn newcomers_with_write_quorum_one_settle_once_they_compared_every_other_keeper() {
        // Three newcomers form a cluster with W = 1: each one's own name
        // among a slot's keepers holds nothing, and must not be waited for.
        let alone = topo(&["b", "c"], "b");
        let all = topo(&["a", "b", "c"], "a");
        let slot = slot_owned_by(&all, &["a", "b", "c"]);
        let mut k = Keepers::default();
        k.on_table(&alone, &all, &[], true);
        assert_eq!(k.short(slot, &all, 1), None, "b and c are members");
        assert!(!k.covered_by(slot, &all, |m| m == "b", 1), "c may hold a write b lacks");
        assert!(k.covered_by(slot, &all, |m| m == "b" || m == "c", 1));
        // With W = 1 any missing keeper may hold the only copy of a write.
        let two = topo(&["a", "b"], "a");
        k.on_table(&all, &two, &[], false);
        assert!(k.short(slot, &two, 1).is_some());
        // W = 2: the same rule as without the newcomer's own name (one
        // missing keeper plus its own empty self reach W).
        assert!(k.short(slot, &two, 2).is_some());
        assert_eq!(k.short(slot, &all, 2), None);
        k.settled(slot, &all);
        assert_eq!(k.short(slot, &two, 2), None, "settled: a itself holds the writes now");
    }

    /// CI (fresh clone of 245b8cd): after a graceful leave and then a
    /// kill, a co-owner answered "short" for three slots for good. It had
    /// gained them with the leave; their primary settled them (comparing
    /// with it by repair before the copy's confirmation came) and told it;
    /// then `RC.SLOTDONE` brought the sender's keepers from before the
    /// settle (the owners and the leaver) and made its own name not count
    /// again. After the kill those looked short.
    #[test]
    fn a_copy_confirmed_after_the_slot_settled_does_not_undo_the_settle() {
        let names = ["node0", "node1", "node2", "node3", "node4"];
        let mut e2 = topo(&names, "node3");
        e2.table.epoch = 2;
        let mut e3 = topo(&["node0", "node2", "node3", "node4"], "node3");
        e3.table.epoch = 3;
        let mut e4 = topo(&["node0", "node3", "node4"], "node3");
        e4.table.epoch = 4;
        let slot = (0..ringcache_protocol::SLOT_COUNT)
            .find(|&s| {
                let o = |t: &Topology| -> Vec<String> {
                    t.table.owners(s).iter().map(|&i| t.nodes[usize::from(i)].name.clone()).collect()
                };
                o(&e2).contains(&"node1".to_string())
                    && !o(&e2).contains(&"node3".to_string())
                    && o(&e3).contains(&"node3".to_string())
                    && o(&e3).contains(&"node2".to_string())
            })
            .expect("a slot node3 gains when node1 leaves");
        let mut k = Keepers::default();
        k.on_table(&topo(&["node0", "node1", "node2", "node4"], "node0"), &e2, &[], true);
        k.on_table(&e2, &e3, &["node1"], false);
        let sender: Vec<String> = k.of(slot).unwrap().iter().map(|n| n.to_string()).collect();
        assert!(sender.contains(&"node1".to_string()), "the leaver stays a keeper until the slot settles");
        k.settled(slot, &e3);
        let theirs: Vec<&str> = sender.iter().map(String::as_str).collect();
        k.received(slot, &theirs, &e3);
        k.on_table(&e3, &e4, &[], false);
        assert_eq!(k.short(slot, &e4, 2), None, "keepers {:?}", k.of(slot));
        // Before a slot settles, the sender's keepers are taken (it may
        // know of a failure this node does not).
        let other = (0..ringcache_protocol::SLOT_COUNT)
            .find(|&s| {
                let has = |t: &Topology, n: &str| t.table.owners(s).iter().any(|&i| t.nodes[usize::from(i)].name == n);
                !has(&e2, "node1") && has(&e2, "node3") && has(&e3, "node3")
            })
            .expect("a slot node3 keeps, without node1");
        assert!(k.current(other, &e3));
        k.received(other, &["node0", "node2", "node4", "node1"], &e3);
        assert_eq!(k.of(other).map(<[Arc<str>]>::len), Some(4));
    }

    #[test]
    fn one_failure_of_three_keepers_leaves_writes_open() {
        let all = topo(&["a", "b", "c", "d", "e"], "c");
        let slot = slot_owned_by(&all, &["a", "b", "c"]);
        let mut k = Keepers::default();
        k.on_table(&all, &all, &[], false);
        let rest = topo(&["b", "c", "d", "e"], "c");
        k.on_table(&all, &rest, &[], false);
        assert_eq!(k.short(slot, &rest, 2), None);
        assert!(k.covered(slot, &rest, 2), "b and c are owners still");
        k.settled(slot, &rest);
        assert!(k.current(slot, &rest));
    }

    #[test]
    fn failures_in_a_row_count_from_the_last_settle_not_the_last_table() {
        let all = topo(&["a", "b", "c", "d", "e"], "c");
        let slot = slot_owned_by(&all, &["a", "b", "c"]);
        let mut k = Keepers::default();
        k.on_table(&all, &all, &[], false);
        let one = topo(&["b", "c", "d", "e"], "c");
        k.on_table(&all, &one, &[], false);
        // Not settled (b was cut off before it compared): b fails too.
        let two = topo(&["c", "d", "e"], "c");
        k.on_table(&one, &two, &[], false);
        assert!(k.short(slot, &two, 2).is_some(), "keepers are still a, b, c");
    }

    #[test]
    fn a_join_moves_the_keepers_of_settled_slots_with_their_owners() {
        let old = topo(&["a", "b", "c", "d"], "a");
        let now = topo(&["a", "b", "c", "d", "e"], "e");
        let mut k = Keepers::default();
        k.on_table(&old, &now, &[], true);
        let slot = (0..ringcache_protocol::SLOT_COUNT).find(|&s| now.table.owners(s).contains(&now.me)).unwrap();
        assert!(k.current(slot, &now), "slot copies carry the writes; the import gate holds the settle");
    }

    #[test]
    fn a_slot_taken_over_after_a_failure_keeps_the_previous_owners_as_keepers() {
        let all = topo(&["a", "b", "c", "d", "e"], "e");
        let rest = topo(&["b", "c", "d", "e"], "e");
        let mut k = Keepers::default();
        k.on_table(&all, &all, &[], false);
        let slot = (0..ringcache_protocol::SLOT_COUNT)
            .find(|&s| rest.table.owners(s).contains(&rest.me) && !all.table.owners(s).contains(&all.me))
            .expect("e takes some slot over");
        k.on_table(&all, &rest, &[], false);
        let before: Vec<&str> =
            all.table.owners(slot).iter().map(|&o| all.nodes[usize::from(o)].name.as_str()).collect();
        assert_eq!(k.of(slot).unwrap().iter().map(|n| &**n).collect::<Vec<_>>(), before);
        assert!(!k.current(slot, &rest));
    }

    #[test]
    fn a_copy_carries_the_senders_keepers_to_a_node_that_joined_meanwhile() {
        // c owned the slot with a and b; a and b are across a partition;
        // f joins c's side and takes the slot with c.
        let all = topo(&["a", "b", "c", "d", "e"], "c");
        let joined = topo(&["c", "d", "e", "f"], "f");
        let slot = (0..ringcache_protocol::SLOT_COUNT)
            .find(|&s| {
                let o = all.table.owners(s);
                let names: Vec<&str> = o.iter().map(|&i| all.nodes[usize::from(i)].name.as_str()).collect();
                names.len() == 3
                    && ["a", "b", "c"].iter().all(|n| names.contains(n))
                    && joined.table.owners(s).contains(&joined.me)
            })
            .expect("f takes over some slot a, b and c owned");
        let mut c = Keepers::default();
        c.on_table(&all, &all, &[], false);
        let side = topo(&["c", "d", "e"], "c");
        c.on_table(&all, &side, &[], false);
        let mut f = Keepers::default();
        f.on_table(&side, &joined, &[], true);
        assert!(f.short(slot, &joined, 2).is_none(), "f alone cannot tell");
        let theirs: Vec<&str> = c.for_copy(slot).unwrap().iter().map(|n| &**n).collect();
        f.received(slot, &theirs, &joined);
        assert!(f.short(slot, &joined, 2).is_some(), "the copy told it");
        assert!(!f.covered(slot, &joined, 2));
    }

    #[test]
    fn keepers_that_are_members_but_not_owners_are_compared_too() {
        // The keepers of a slot are a, b, c (c is this node); joins then
        // gave the slot to c and two newcomers before it settled.
        let all = topo(&["a", "b", "c", "d", "e"], "c");
        let more = topo(&["a", "b", "c", "d", "e", "f", "g", "h"], "c");
        let name = |t: &Topology, i: u16| t.nodes[usize::from(i)].name.clone();
        let slot = (0..ringcache_protocol::SLOT_COUNT)
            .find(|&s| {
                let before: Vec<String> = all.table.owners(s).iter().map(|&i| name(&all, i)).collect();
                let after: Vec<String> = more.table.owners(s).iter().map(|&i| name(&more, i)).collect();
                ["a", "b", "c"].iter().all(|n| before.iter().any(|b| b == n))
                    && after.iter().any(|n| n == "c")
                    && !after.iter().any(|n| n == "a" || n == "b")
            })
            .expect("a slot that moves from a, b, c to c and two newcomers");
        let mut k = Keepers::default();
        k.on_table(&all, &all, &[], false);
        k.settled(slot, &all);
        let mut beyond: Vec<String> = k.beyond_owners(slot, &more).iter().map(|&i| name(&more, i)).collect();
        beyond.sort();
        assert_eq!(beyond, ["a", "b"].map(String::from), "compared with besides the owners");
        assert!(!k.covered(slot, &more, 2), "the owners alone do not cover a, b, c");
        assert!(k.covered_by(slot, &more, |n| n == "a", 2), "c and a make 2 of 3");
        assert!(!k.covered_by(slot, &more, |n| n == "f", 2));
    }

    #[test]
    fn a_newcomer_scaled_in_to_alone_by_graceful_leaves_settles() {
        // c joined a and b (empty: its own name does not count), then b
        // and a left gracefully one after the other.
        let abc = topo(&["a", "b", "c"], "c");
        let mut k = Keepers::default();
        k.on_table(&topo(&["a", "b"], "a"), &abc, &[], true);
        let slot = slot_owned_by(&abc, &["a", "b", "c"]);
        let ac = topo(&["a", "c"], "c");
        k.on_table(&abc, &ac, &["b"], false);
        let alone = topo(&["c"], "c");
        k.on_table(&ac, &alone, &["a"], false);
        assert_eq!(k.short(slot, &alone, 2), None, "a and b drained to it");
        assert!(k.covered(slot, &alone, 2));
    }

    #[test]
    fn members_that_left_gracefully_count_as_present() {
        let all = topo(&["a", "b", "c"], "c");
        let slot = slot_owned_by(&all, &["a", "b", "c"]);
        let mut k = Keepers::default();
        k.on_table(&all, &all, &[], false);
        let alone = topo(&["c"], "c");
        k.on_table(&all, &alone, &["a", "b"], false);
        assert_eq!(k.short(slot, &alone, 2), None);
        assert!(k.covered(slot, &alone, 2));
        // The same departures unannounced (failures) refuse.
        let mut k = Keepers::default();
        k.on_table(&all, &all, &[], false);
        k.on_table(&all, &alone, &[], false);
        assert!(k.short(slot, &alone, 2).is_some());
        assert_eq!(k.short_slots(&alone, 2), usize::from(ringcache_protocol::SLOT_COUNT));
    }

    #[test]
    fn the_read_quorum_meets_every_write_quorum() {
        for n in 1..=5usize {
            for w in 1..=n as u32 {
                let need = Keepers::need(n, w);
                assert!(need + quorum(w, n) > n, "n={n} w={w}");
                assert!(need >= 1 && need <= n);
            }
        }
    }
}
