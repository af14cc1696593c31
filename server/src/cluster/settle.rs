//! What a request must fetch before it runs on a key whose slot is in
//! motion, and when that fetch counts as done.
//!
//! Two states of a slot make this node's copy of a key possibly stale:
//! the slot is still arriving from its previous owner (importing), or its
//! owners changed and anti-entropy has not compared it with them since
//! (unsettled: a failover, a return, a healed partition). A write there
//! must first see the key's newest state (INCR, APPEND, SET NX and DEL
//! depend on it), and a multi-key read must not miss a key still on its
//! way. The node asks the members named here, applies the newest answer,
//! then runs the request (`net::exec` holds a client's request meanwhile:
//! the cluster's own work is latency, never an error).
//!
//! When a member does not answer in time the fetch ends by a rule, not
//! after a retry loop: the importing sender must answer (until the copy
//! lands it may be the only holder); co-owners by the write quorum (the
//! node itself and the co-owners that answered must make W of the slot's
//! owners). So one co-owner cut off while gossip still sees it alive
//! delays writes by one timeout instead of refusing them for ever.

use std::sync::Arc;

use super::replication::quorum;
use super::topology::Topology;

/// The slots `now` gives this node whose owners differ from `last`'s
/// (by name, in order): a co-owner may hold writes this node has not seen
/// (it was primary meanwhile, or accepted writes on the other side of a
/// partition), so they become unsettled. None while both tables are this
/// node alone.
pub fn owners_changed(last: &Topology, now: &Topology) -> Vec<u16> {
    if last.nodes.len() < 2 && now.nodes.len() < 2 {
        return Vec::new();
    }
    fn name(t: &Topology, o: u16) -> &str {
        t.nodes[usize::from(o)].name.as_str()
    }
    (0..ringcache_protocol::SLOT_COUNT)
        .filter(|&slot| {
            let (a, b) = (last.table.owners(slot), now.table.owners(slot));
            b.contains(&now.me) && (a.len() != b.len() || a.iter().zip(b).any(|(&x, &y)| name(last, x) != name(now, y)))
        })
        .collect()
}

/// Why a member is asked for a key's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The previous owner of a slot still arriving here: until the copy
    /// lands it may be the only holder of the key.
    Importing,
    /// A co-owner of an unsettled slot: it may hold writes this node missed.
    CoOwner,
}

/// What this node knows of one key of a request.
#[derive(Clone, Debug)]
pub struct KeyState {
    /// The key's slot is unsettled here.
    pub unsettled: bool,
    /// The member the key's slot is arriving from, if it is.
    pub importing_from: Option<Arc<str>>,
    /// The key, or its tombstone, is here.
    pub here: bool,
    /// A fetch of the key already ended in [`Verdict::Fetched`] since the
    /// slot's owners last changed.
    pub fetched: bool,
}

/// The members to ask for one key, and how many owners its slot has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// The key.
    pub key: Vec<u8>,
    /// Owners of the key's slot in the table of the request (this node included).
    pub owners: usize,
    /// Members to ask, each once.
    pub from: Vec<(Arc<str>, Source)>,
}

/// What must be fetched before a request runs on `key` of `slot` in
/// table `t`, if anything. A write fetches from every co-owner of an
/// unsettled slot and from the sender of an importing one when the key
/// is not here; a read only the latter. A key this node does not own
/// needs nothing (its owner decides).
pub fn fetch_for(t: &Topology, slot: u16, key: &[u8], k: &KeyState, write: bool) -> Option<Fetch> {
    let owners = t.table.owners(slot);
    if k.fetched || !owners.contains(&t.me) {
        return None;
    }
    let mut from: Vec<(Arc<str>, Source)> = Vec::new();
    if write && k.unsettled {
        for &o in owners.iter().filter(|&&o| o != t.me) {
            from.push((t.nodes[usize::from(o)].name.as_str().into(), Source::CoOwner));
        }
    }
    if let Some(sender) = &k.importing_from
        && !k.here
    {
        // Asked once: as the sender when it is also a co-owner (it must answer).
        from.retain(|(m, _)| m != sender);
        from.push((sender.clone(), Source::Importing));
    }
    (!from.is_empty()).then(|| Fetch { key: key.to_vec(), owners: owners.len(), from })
}

/// How a fetch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request may run on what is here now.
    Fetched,
    /// The importing sender did not answer: the key may exist only there.
    SenderSilent(Arc<str>),
    /// A member asked cannot reach enough of the slot's keepers
    /// (`cluster::keepers`): writes acknowledged across a partition may
    /// be missing from every copy here.
    KeepersShort(Arc<str>),
    /// Too few co-owners answered for the write quorum.
    Short {
        /// Owners whose state this node has (itself included).
        have: usize,
        /// The write quorum over the slot's owners.
        need: usize,
    },
}

/// Like [`verdict`], where `short[i]` says that `f.from[i]` refused to
/// answer because it cannot reach the slot's keepers: that refuses the
/// write whatever the others said.
pub fn verdict_with_keepers(f: &Fetch, answered: &[bool], short: &[bool], write_quorum: u32) -> Verdict {
    assert_eq!(f.from.len(), short.len(), "one flag per member asked");
    match short.iter().position(|&s| s) {
        Some(i) => Verdict::KeepersShort(f.from[i].0.clone()),
        None => verdict(f, answered, write_quorum),
    }
}

/// The verdict on `f` once its answers are in: `answered[i]` says whether
/// `f.from[i]` answered. `write_quorum` is the configured W.
pub fn verdict(f: &Fetch, answered: &[bool], write_quorum: u32) -> Verdict {
    assert_eq!(f.from.len(), answered.len(), "one answer flag per member asked");
    let mut have = 1;
    for ((member, source), &ok) in f.from.iter().zip(answered) {
        match source {
            Source::Importing if !ok => return Verdict::SenderSilent(member.clone()),
            _ => have += usize::from(ok),
        }
    }
    let need = quorum(write_quorum, f.owners);
    let co_owners = f.from.iter().filter(|(_, s)| *s == Source::CoOwner).count();
    if co_owners == 0 || have >= need { Verdict::Fetched } else { Verdict::Short { have, need } }
}

impl Verdict {
    /// The error a client is answered with when the fetch failed (the
    /// request did not run).
    pub fn refusal(&self, slot: u16) -> Option<String> {
        match self {
            Verdict::Fetched => None,
            Verdict::SenderSilent(from) => Some(format!(
                "CLUSTERDOWN slot {slot} is moving to this node and its previous owner {from} did not answer \
                 (not run)"
            )),
            Verdict::KeepersShort(member) => Some(format!(
                "CLUSTERDOWN slot {slot}'s writes were last held by members that {member} cannot reach (failed \
                 together, or across a partition): writes wait until they are back (not run)"
            )),
            Verdict::Short { have, need } => Some(format!(
                "CLUSTERDOWN slot {slot}'s owners changed and too few answered to settle the key \
                 ({have} of {need} needed; not run)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn topo(names: &[&str], me: &str) -> Topology {
        Topology::for_test(names, me)
    }

    fn state(unsettled: bool, importing_from: Option<&str>, here: bool) -> KeyState {
        KeyState { unsettled, importing_from: importing_from.map(Arc::from), here, fetched: false }
    }

    #[test]
    fn a_new_member_unsettles_only_slots_whose_owners_changed_here() {
        let last = topo(&["a", "b", "c"], "a");
        assert!(owners_changed(&last, &last).is_empty());
        let now = topo(&["a", "b", "c", "d"], "a");
        let changed = owners_changed(&last, &now);
        assert!(!changed.is_empty());
        for slot in 0..ringcache_protocol::SLOT_COUNT {
            let mine = now.table.owners(slot).contains(&now.me);
            let same = last.table.owners(slot).len() == now.table.owners(slot).len()
                && last
                    .table
                    .owners(slot)
                    .iter()
                    .zip(now.table.owners(slot))
                    .all(|(&x, &y)| last.nodes[usize::from(x)].name == now.nodes[usize::from(y)].name);
            assert_eq!(changed.contains(&slot), mine && !same, "slot {slot}");
        }
        assert!(owners_changed(&topo(&["a"], "a"), &topo(&["a"], "a")).is_empty());
    }

    #[test]
    fn settled_keys_and_other_owners_keys_fetch_nothing() {
        let t = topo(&["a", "b", "c"], "a");
        assert_eq!(fetch_for(&t, 7, b"k", &state(false, None, false), true), None);
        let done = KeyState { fetched: true, ..state(true, Some("b"), false) };
        assert_eq!(fetch_for(&t, 7, b"k", &done, true), None);
        let t4 = topo(&["a", "b", "c", "d"], "a");
        let theirs = (0..16384).find(|&s| !t4.table.owners(s).contains(&t4.me)).unwrap();
        assert_eq!(fetch_for(&t4, theirs, b"k", &state(true, Some("b"), false), true), None);
    }

    #[test]
    fn a_write_asks_every_co_owner_and_the_sender_once() {
        let t = topo(&["a", "b", "c"], "a");
        let f = fetch_for(&t, 7, b"k", &state(true, Some("b"), false), true).unwrap();
        assert_eq!(f.owners, 3);
        assert_eq!(f.from, vec![("c".into(), Source::CoOwner), ("b".into(), Source::Importing)]);
        // A read asks only the sender, and only when the key is not here.
        let r = fetch_for(&t, 7, b"k", &state(true, Some("b"), false), false).unwrap();
        assert_eq!(r.from, vec![("b".into(), Source::Importing)]);
        assert_eq!(fetch_for(&t, 7, b"k", &state(true, Some("b"), true), false), None);
    }

    #[test]
    fn co_owners_count_by_the_write_quorum_and_the_sender_must_answer() {
        let f = Fetch {
            key: b"k".to_vec(),
            owners: 3,
            from: vec![("b".into(), Source::CoOwner), ("c".into(), Source::CoOwner)],
        };
        assert_eq!(verdict(&f, &[true, true], 2), Verdict::Fetched);
        assert_eq!(verdict(&f, &[false, true], 2), Verdict::Fetched);
        assert_eq!(verdict(&f, &[false, false], 2), Verdict::Short { have: 1, need: 2 });
        assert_eq!(verdict(&f, &[true, false], 3), Verdict::Short { have: 2, need: 3 });
        let g = Fetch { from: vec![("b".into(), Source::Importing), ("c".into(), Source::CoOwner)], ..f };
        assert_eq!(verdict(&g, &[false, true], 2), Verdict::SenderSilent("b".into()));
        assert_eq!(verdict(&g, &[true, false], 2), Verdict::Fetched);
        assert!(Verdict::Short { have: 1, need: 2 }.refusal(9).unwrap().starts_with("CLUSTERDOWN slot 9"));
    }
}
