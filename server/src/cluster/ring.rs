//! The consistent-hash ring and the slot table (DESIGN.md §2). Pure: members
//! in, a [`SlotTable`] out; no IO, no clock, no randomness, so every node
//! computes the same table from the same member set.
//!
//! - The token space is 64-bit. Slot `s` sits at position `s << 50`.
//! - A member of weight `w` owns `vnodes × w` tokens; token `i` of member
//!   `name` is `xxh3_64("{name}#{i}")`.
//! - The owners of a slot are the first `replicas` distinct members met
//!   walking clockwise from the slot's position (a token at the position
//!   counts). The first owner is the slot's primary.
//! - Equal tokens (a 64-bit collision) are ordered by member name, so the
//!   walk never depends on the order members were learned.
//!
//! Placement depends only on names, weights and the vnode count: a node that
//! restarts under the same name gets the same tokens back.

use xxhash_rust::xxh3::xxh3_64;

use ringcache_protocol::SLOT_COUNT;

/// Bits a slot number is shifted by to reach its ring position.
const SLOT_SHIFT: u32 = 50;

/// A member as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's node name.
    pub name: String,
    /// Its weight (share of the ring).
    pub weight: u32,
}

/// Ring position of a slot.
pub fn slot_position(slot: u16) -> u64 {
    u64::from(slot) << SLOT_SHIFT
}

/// Token `i` of a member.
pub fn token(name: &str, i: u32) -> u64 {
    xxh3_64(format!("{name}#{i}").as_bytes())
}

/// Which members own each slot, for one epoch of membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    /// Grows with every membership change; given by the membership layer.
    pub epoch: u64,
    /// Members that count (alive or suspect), sorted by name.
    pub members: Vec<Member>,
    /// Owners per slot: `replicas` member indices per slot, primary first.
    replicas: usize,
    owners: Vec<u16>,
}

impl SlotTable {
    /// Computes the table. `replicas` is N; the effective N is
    /// `min(replicas, members)`. Member order does not matter; duplicate
    /// names are an error of the caller (asserted).
    pub fn compute(epoch: u64, members: &[Member], replicas: usize, vnodes: u32) -> SlotTable {
        let mut members = members.to_vec();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(members.windows(2).all(|w| w[0].name != w[1].name), "duplicate member names");
        assert!(members.len() <= usize::from(u16::MAX), "too many members");
        let n = replicas.min(members.len());
        let mut owners = Vec::with_capacity(usize::from(SLOT_COUNT) * n);
        if n == 0 {
            return SlotTable { epoch, members, replicas: 0, owners };
        }
        let mut tokens: Vec<(u64, u16)> = Vec::new();
        for (m, member) in members.iter().enumerate() {
            for i in 0..vnodes.saturating_mul(member.weight.max(1)) {
                tokens.push((token(&member.name, i), m as u16));
            }
        }
        // Members are sorted by name, so (token, index) orders collisions by name.
        tokens.sort_unstable();
        let mut first = 0; // first token at or after the current slot position
        let mut picked: Vec<u16> = Vec::with_capacity(n);
        for slot in 0..SLOT_COUNT {
            let pos = slot_position(slot);
            while first < tokens.len() && tokens[first].0 < pos {
                first += 1;
            }
            picked.clear();
            for k in 0..tokens.len() {
                let m = tokens[(first + k) % tokens.len()].1;
                if !picked.contains(&m) {
                    picked.push(m);
                    if picked.len() == n {
                        break;
                    }
                }
            }
            owners.extend_from_slice(&picked);
        }
        SlotTable { epoch, members, replicas: n, owners }
    }

    /// Effective N: owners per slot.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Owners of a slot (member indices), primary first.
    pub fn owners(&self, slot: u16) -> &[u16] {
        let s = usize::from(slot) * self.replicas;
        &self.owners[s..s + self.replicas]
    }

    /// This table with member `m` owning nothing: placement as the others
    /// compute it once `m` has left (epoch one later), indexed like this
    /// table so `m` keeps its index. What a leaving member routes by after
    /// handing its slots over.
    pub fn without_member(&self, m: u16, replicas: usize, vnodes: u32) -> SlotTable {
        let others: Vec<Member> =
            self.members.iter().enumerate().filter(|&(i, _)| i != usize::from(m)).map(|(_, x)| x.clone()).collect();
        let mut t = SlotTable::compute(self.epoch + 1, &others, replicas, vnodes);
        for o in &mut t.owners {
            if *o >= m {
                *o += 1;
            }
        }
        t.members = self.members.clone();
        t
    }

    /// The primary owner of `slot`.
    pub fn primary(&self, slot: u16) -> Option<&Member> {
        self.owners(slot).first().map(|&m| &self.members[usize::from(m)])
    }

    /// The index of member `name` in this table.
    pub fn member_index(&self, name: &str) -> Option<u16> {
        self.members.binary_search_by(|m| m.name.as_str().cmp(name)).ok().map(|i| i as u16)
    }

    /// Whether member `name` owns `slot` (false for a non-member).
    pub fn owns(&self, name: &str, slot: u16) -> bool {
        self.member_index(name).is_some_and(|i| self.owners(slot).contains(&i))
    }

    /// Maximal runs of consecutive slots with the same owners, in slot order:
    /// `(first slot, last slot, owners)`. What CLUSTER SLOTS reports.
    pub fn ranges(&self) -> Vec<(u16, u16, &[u16])> {
        let mut out: Vec<(u16, u16, &[u16])> = Vec::new();
        if self.replicas == 0 {
            return out;
        }
        for slot in 0..SLOT_COUNT {
            let o = self.owners(slot);
            match out.last_mut() {
                Some((_, end, owners)) if *owners == o => *end = slot,
                _ => out.push((slot, slot, o)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names.iter().map(|n| Member { name: n.to_string(), weight: 1 }).collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:6379")).collect()
    }

    fn table(ns: &[String], replicas: usize) -> SlotTable {
        let ms: Vec<Member> = ns.iter().map(|n| Member { name: n.clone(), weight: 1 }).collect();
        SlotTable::compute(1, &ms, replicas, 256)
    }

    #[test]
    fn one_node_owns_everything() {
        let t = SlotTable::compute(7, &members(&["a"]), 3, 256);
        assert_eq!(t.replicas(), 1);
        assert_eq!(t.ranges(), vec![(0, 16383, &[0u16][..])]);
        assert_eq!(t.primary(123).unwrap().name, "a");
        assert_eq!(t.epoch, 7);
    }

    #[test]
    fn a_member_without_slots_keeps_its_index_and_the_others_placement() {
        let ns = names(5);
        let full = table(&ns, 3);
        for m in 0..5u16 {
            let gone = full.without_member(m, 3, 256);
            let rest: Vec<String> =
                ns.iter().enumerate().filter(|&(i, _)| i != usize::from(m)).map(|(_, n)| n.clone()).collect();
            let want = table(&rest, 3);
            assert_eq!(gone.members, full.members);
            assert_eq!(gone.epoch, full.epoch + 1);
            for slot in 0..SLOT_COUNT {
                assert!(!gone.owners(slot).contains(&m));
                let names: Vec<&str> =
                    gone.owners(slot).iter().map(|&i| gone.members[usize::from(i)].name.as_str()).collect();
                let expect: Vec<&str> =
                    want.owners(slot).iter().map(|&i| want.members[usize::from(i)].name.as_str()).collect();
                assert_eq!(names, expect, "slot {slot} without member {m}");
            }
        }
        // Two members, one leaving: the other owns everything alone.
        let two = table(&names(2), 3).without_member(0, 3, 256);
        assert_eq!(two.replicas(), 1);
        assert_eq!(two.ranges(), vec![(0, 16383, &[1u16][..])]);
    }

    #[test]
    fn no_members_no_owners() {
        let t = SlotTable::compute(1, &[], 3, 256);
        assert_eq!(t.replicas(), 0);
        assert!(t.ranges().is_empty());
        assert!(t.primary(0).is_none());
    }

    #[test]
    fn primary_shares_are_fair_with_256_vnodes() {
        for n in 3..=10 {
            let t = table(&names(n), 3);
            let mut counts = vec![0usize; n];
            for s in 0..SLOT_COUNT {
                counts[usize::from(t.owners(s)[0])] += 1;
            }
            let fair = f64::from(SLOT_COUNT) / n as f64;
            for (m, c) in counts.iter().enumerate() {
                let dev = (*c as f64 - fair).abs() / fair;
                assert!(
                    dev <= 0.15,
                    "{n} nodes: member {m} has {c} primary slots, fair is {fair:.0} ({:.1}% off)",
                    dev * 100.0
                );
            }
        }
    }

    #[test]
    fn weight_scales_the_share() {
        let mut ms = members(&["a", "b", "c"]);
        ms[0].weight = 2;
        let t = SlotTable::compute(1, &ms, 1, 256);
        let a = (0..SLOT_COUNT).filter(|&s| t.owners(s)[0] == 0).count() as f64;
        let b = (0..SLOT_COUNT).filter(|&s| t.owners(s)[0] == 1).count() as f64;
        let ratio = a / b;
        assert!((1.6..2.4).contains(&ratio), "weight 2 vs 1 gave {ratio:.2}x the slots");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Every slot has exactly min(N, members) distinct owners.
        #[test]
        fn owners_are_distinct_and_complete(n in 1usize..8, replicas in 1usize..5) {
            let t = table(&names(n), replicas);
            let want = replicas.min(n);
            for s in 0..SLOT_COUNT {
                let o = t.owners(s);
                prop_assert_eq!(o.len(), want);
                prop_assert_eq!(o.iter().collect::<HashSet<_>>().len(), want);
            }
        }

        /// The table does not depend on the order members were learned.
        #[test]
        fn order_independent(n in 1usize..8, seed in any::<u64>()) {
            let ns = names(n);
            let mut shuffled = ns.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(table(&ns, 3), table(&shuffled, 3));
        }

        /// Adding one node to M changes about 1/M of the owner sets... and
        /// only by that node: every changed owner set contains the newcomer,
        /// and what it lost is exactly one old owner.
        #[test]
        fn a_join_moves_about_one_mth_and_only_to_the_newcomer(m in 3usize..9, replicas in 1usize..4) {
            let ns = names(m + 1);
            let before = table(&ns[..m], replicas);
            let after = table(&ns, replicas);
            let new = after.member_index(&ns[m]).unwrap();
            let name_of = |t: &SlotTable, i: u16| t.members[usize::from(i)].name.clone();
            let mut changed_primaries = 0usize;
            for s in 0..SLOT_COUNT {
                let old: HashSet<String> = before.owners(s).iter().map(|&i| name_of(&before, i)).collect();
                let cur: HashSet<String> = after.owners(s).iter().map(|&i| name_of(&after, i)).collect();
                if old != cur {
                    prop_assert!(after.owners(s).contains(&new), "slot {s} changed without the newcomer");
                    prop_assert_eq!(old.difference(&cur).count(), 1);
                }
                if name_of(&before, before.owners(s)[0]) != name_of(&after, after.owners(s)[0]) {
                    prop_assert_eq!(after.owners(s)[0], new);
                    changed_primaries += 1;
                }
            }
            // About 1/(M+1) of the primaries move to the newcomer (±50% slack for vnode variance).
            let expect = f64::from(SLOT_COUNT) / (m + 1) as f64;
            prop_assert!((changed_primaries as f64) < expect * 1.5, "{changed_primaries} primaries moved, expected about {expect:.0}");
            prop_assert!((changed_primaries as f64) > expect * 0.5, "{changed_primaries} primaries moved, expected about {expect:.0}");
        }

        /// Removing a node is the same move in reverse: only slots it owned change.
        #[test]
        fn a_leave_only_moves_the_leavers_slots(m in 3usize..9) {
            let ns = names(m);
            let before = table(&ns, 3);
            let after = table(&ns[1..], 3);
            let gone = before.member_index(&ns[0]).unwrap();
            for s in 0..SLOT_COUNT {
                let old: Vec<&str> = before.owners(s).iter().map(|&i| before.members[usize::from(i)].name.as_str()).collect();
                let cur: Vec<&str> = after.owners(s).iter().map(|&i| after.members[usize::from(i)].name.as_str()).collect();
                if !before.owners(s).contains(&gone) {
                    prop_assert_eq!(old, cur, "slot {} changed although the leaver did not own it", s);
                }
            }
        }
    }

    #[test]
    fn ranges_cover_every_slot_once() {
        let t = table(&names(5), 3);
        let r = t.ranges();
        assert_eq!(r.first().unwrap().0, 0);
        assert_eq!(r.last().unwrap().1, SLOT_COUNT - 1);
        for w in r.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
            assert_ne!(w[0].2, w[1].2);
        }
    }
}
