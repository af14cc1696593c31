//! Transfer planning (DESIGN §5): when the slot table changes, which slot
//! copies this node must send, to whom, and which slots it may drop once
//! their new owners confirmed them. Pure: two tables and a name in, a plan
//! out; the `net` shell streams the copies over the peer links.
//!
//! Rules, for each slot whose owner set changed:
//! - The new owners that were not old owners need a copy.
//! - One sender per slot: the old primary if it is still a member, else the
//!   first old owner that still is. Every node computes the same sender
//!   from the same two tables, so no copy is sent twice.
//! - A node that owned the slot and no longer does may drop it only after
//!   every new owner confirmed holding it (the caller tracks that).

use super::ring::SlotTable;
use ringcache_protocol::SLOT_COUNT;

/// One slot to copy from this node to `to` (member names of the new table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The slot to copy.
    pub slot: u16,
    /// The members to copy it to (its new owners that lacked it).
    pub to: Vec<String>,
}

/// What one node does after a table change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The copies this node sends.
    pub sends: Vec<Send>,
    /// Slots this node held and no longer owns.
    pub drops: Vec<u16>,
}

fn names(t: &SlotTable, slot: u16) -> Vec<&str> {
    t.owners(slot).iter().map(|&i| t.members[usize::from(i)].name.as_str()).collect()
}

/// The member of `old` that sends `slot`'s copies under `new`, if any old
/// owner is still a member.
pub fn sender<'a>(old: &'a SlotTable, new: &SlotTable, slot: u16) -> Option<&'a str> {
    old.owners(slot).iter().map(|&i| old.members[usize::from(i)].name.as_str()).find(|n| new.member_index(n).is_some())
}

/// The plan of node `me` for the change from `old` to `new`.
pub fn plan(old: &SlotTable, new: &SlotTable, me: &str) -> Plan {
    let mut p = Plan::default();
    for slot in 0..SLOT_COUNT {
        let (was, now) = (names(old, slot), names(new, slot));
        if was.iter().all(|n| now.contains(n)) && now.iter().all(|n| was.contains(n)) {
            continue;
        }
        if was.contains(&me) && !now.contains(&me) {
            p.drops.push(slot);
        }
        if sender(old, new, slot) != Some(me) {
            continue;
        }
        let to: Vec<String> = now.iter().filter(|n| !was.contains(n)).map(|n| n.to_string()).collect();
        if !to.is_empty() {
            p.sends.push(Send { slot, to });
        }
    }
    p
}

/// The slots member `me` owns in `new` and did not in `old`, each with the
/// member of `old` that sends it (its [`sender`]; none if every old owner
/// is gone, and never `me`): what `me` waits for after the change.
pub fn imports<'a>(old: &'a SlotTable, new: &SlotTable, me: &str) -> Vec<(u16, &'a str)> {
    let Some(mine) = new.member_index(me) else { return Vec::new() };
    (0..SLOT_COUNT)
        .filter(|&slot| new.owners(slot).contains(&mine) && !old.owns(me, slot))
        .filter_map(|slot| Some((slot, sender(old, new, slot).filter(|&from| from != me)?)))
        .collect()
}

/// Adds to `sends` the copies node `me` owes `newcomer`, a member of `new`
/// that just joined or came back under a new generation (restarted, so
/// empty): it expects each slot it owns from that slot's sender in
/// `before`, the table without it, and waits until that sender confirms,
/// even where `me`'s own plan sends nothing (an empty copy is then the
/// truth). Linear in the slots: a rejoining member must not make the
/// planner walk `sends` once per slot (16,384 × thousands of sends stalled
/// debug nodes past their pause limit).
pub fn add_newcomer_copies(sends: &mut Vec<Send>, before: &SlotTable, new: &SlotTable, me: &str, newcomer: &str) {
    let Some(joiner) = new.member_index(newcomer) else { return };
    let mut at: Vec<Option<usize>> = vec![None; usize::from(SLOT_COUNT)];
    for (i, s) in sends.iter().enumerate() {
        at[usize::from(s.slot)] = Some(i);
    }
    for slot in 0..SLOT_COUNT {
        if !new.owners(slot).contains(&joiner) || sender(before, new, slot) != Some(me) {
            continue;
        }
        match at[usize::from(slot)] {
            Some(i) if sends[i].to.iter().any(|t| t == newcomer) => {}
            Some(i) => sends[i].to.push(newcomer.to_string()),
            None => {
                at[usize::from(slot)] = Some(sends.len());
                sends.push(Send { slot, to: vec![newcomer.to_string()] });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::cluster::ring::Member;

    fn table(names: &[String], replicas: usize) -> SlotTable {
        let members: Vec<Member> = names.iter().map(|n| Member { name: n.clone(), weight: 1 }).collect();
        SlotTable::compute(1, &members, replicas, 16)
    }

    /// Plans of every node alive in either table, applied: who holds each
    /// slot afterwards (before drops, then after drops).
    fn check(old_names: &[String], new_names: &[String], replicas: usize) {
        let (old, new) = (table(old_names, replicas), table(new_names, replicas));
        let everyone: BTreeSet<&String> = old_names.iter().chain(new_names).collect();
        let mut sent: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        let mut drops: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
        for me in &everyone {
            let p = plan(&old, &new, me);
            // Only live members send: a node gone from the new table has
            // left or failed.
            if !p.sends.is_empty() {
                assert!(new_names.contains(me), "{me} left but plans to send");
            }
            for s in p.sends {
                let to = sent.entry(s.slot).or_default();
                for t in s.to {
                    assert!(!to.contains(&t), "slot {}: a copy to {t} is sent twice", s.slot);
                    to.push(t);
                }
            }
            for d in p.drops {
                drops.entry(d).or_default().insert(me.to_string());
            }
        }
        for slot in 0..SLOT_COUNT {
            let was: BTreeSet<String> = names(&old, slot).into_iter().map(String::from).collect();
            let now: BTreeSet<String> = names(&new, slot).into_iter().map(String::from).collect();
            let alive_holders: BTreeSet<String> = was.iter().filter(|n| new_names.contains(n)).cloned().collect();
            if alive_holders.is_empty() {
                continue; // every old owner is gone: nothing can be copied
            }
            let mut holders = alive_holders.clone();
            holders.extend(sent.get(&slot).into_iter().flatten().cloned());
            assert!(now.is_subset(&holders), "slot {slot}: new owners {now:?} not all hold it ({holders:?})");
            // Dropping after the copies leaves exactly the new owners among
            // the live holders, and never zero holders.
            let dropped = drops.get(&slot).cloned().unwrap_or_default();
            let after: BTreeSet<String> = holders.difference(&dropped).cloned().collect();
            let live_after: BTreeSet<String> = after.into_iter().filter(|n| new_names.contains(n)).collect();
            assert_eq!(live_after, now, "slot {slot}");
            assert!(!live_after.is_empty());
        }
    }

    fn names_of(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn unchanged_tables_plan_nothing() {
        let t = table(&names_of(3), 3);
        assert_eq!(plan(&t, &t, "node-0"), Plan::default());
    }

    #[test]
    fn a_join_sends_to_the_newcomer_only() {
        let (old, new) = (table(&names_of(3), 3), table(&names_of(4), 3));
        for me in names_of(4) {
            for s in plan(&old, &new, &me).sends {
                assert_eq!(s.to, vec!["node-3".to_string()], "slot {}", s.slot);
            }
        }
        assert!(plan(&old, &new, "node-3").sends.is_empty());
        check(&names_of(3), &names_of(4), 3);
    }

    #[test]
    fn a_failure_restores_the_replication_factor() {
        let mut survivors = names_of(4);
        survivors.remove(1);
        check(&names_of(4), &survivors, 3);
        // Slots that lost node-1 get a copy to their new third owner.
        let (old, new) = (table(&names_of(4), 3), table(&survivors, 3));
        let sends: usize = survivors.iter().map(|m| plan(&old, &new, m).sends.len()).sum();
        assert!(sends > 0);
    }

    /// What each member waits for after a join: every slot it gained,
    /// from that slot's sender; a newcomer waits for all of its slots.
    #[test]
    fn imports_are_the_slots_gained_with_their_senders() {
        let (old, new) = (table(&names_of(3), 2), table(&names_of(4), 2));
        for me in names_of(4) {
            let got = imports(&old, &new, &me);
            let want: Vec<u16> = (0..SLOT_COUNT).filter(|&s| new.owns(&me, s) && !old.owns(&me, s)).collect();
            assert_eq!(got.iter().map(|&(s, _)| s).collect::<Vec<_>>(), want, "{me}");
            for (slot, from) in got {
                assert_eq!(Some(from), sender(&old, &new, slot));
                assert!(old.owns(from, slot) && from != me);
            }
        }
        assert!(!imports(&old, &new, "node-3").is_empty());
        assert!(imports(&old, &new, "node-9").is_empty(), "not a member");
    }

    /// A member that restarted under a new generation (same name, same
    /// table) gets every slot it owns from that slot's sender without it,
    /// once, on top of what the plan already sends.
    #[test]
    fn a_restarted_member_gets_each_of_its_slots_once_from_its_sender() {
        let all = names_of(4);
        let now = table(&all, 3);
        let before = table(&all.iter().filter(|n| *n != "node-2").cloned().collect::<Vec<_>>(), 3);
        let mut covered = vec![0u32; usize::from(SLOT_COUNT)];
        for me in all.iter().filter(|n| *n != "node-2") {
            // A plan that already sends some slots to node-2 and others
            // elsewhere: the additions must neither repeat nor drop them.
            let mut sends: Vec<Send> = (0..SLOT_COUNT)
                .step_by(7)
                .filter(|&s| sender(&before, &now, s) == Some(me.as_str()))
                .map(|slot| {
                    let to = if slot % 2 == 0 && now.owns("node-2", slot) { "node-2" } else { "node-x" };
                    Send { slot, to: vec![to.to_string()] }
                })
                .collect();
            let planned = sends.clone();
            add_newcomer_copies(&mut sends, &before, &now, me, "node-2");
            let mut slots: Vec<u16> = sends.iter().map(|s| s.slot).collect();
            slots.dedup();
            assert_eq!(slots.len(), sends.len(), "one entry per slot");
            for p in &planned {
                let s = sends.iter().find(|s| s.slot == p.slot).expect("planned send kept");
                assert!(p.to.iter().all(|t| s.to.contains(t)), "slot {}: planned targets kept", p.slot);
            }
            for s in &sends {
                assert_eq!(sender(&before, &now, s.slot), Some(me.as_str()), "slot {}: sent by its sender", s.slot);
                let to_newcomer = s.to.iter().filter(|t| *t == "node-2").count();
                assert!(to_newcomer <= 1, "slot {}: one copy to the newcomer", s.slot);
                covered[usize::from(s.slot)] += u32::try_from(to_newcomer).expect("count");
            }
        }
        for slot in 0..SLOT_COUNT {
            let want = u32::from(now.owns("node-2", slot));
            assert_eq!(covered[usize::from(slot)], want, "slot {slot}: copies to node-2");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn plans_reach_the_new_placement(
            n in 1usize..7,
            replicas in 1usize..4,
            change in 0usize..3,
            pick in 0usize..8,
        ) {
            let old = names_of(n);
            let mut new = old.clone();
            match change {
                0 => new.push(format!("node-{n}")),                 // join
                _ if n > 1 => { new.remove(pick % n); }            // leave or fail
                _ => new.push(format!("node-{n}")),
            }
            check(&old, &new, replicas);
        }
    }
}
