//! Which side of a partition may change the slot table, and so accept
//! writes (issue 16 item 1).
//!
//! Without this, a node that lost sight of the others dropped them from
//! its table, became the owner of every slot, and acknowledged writes that
//! the other side acknowledged too; on heal last-writer-wins kept one side
//! (INCRs on both sides lost acknowledged increments).
//!
//! The rule: a node adopts the member set gossip shows it only while that
//! set holds a strict majority of its *reference* table's members.
//! Otherwise it keeps its table and is in the *minority*: it refuses writes (`-CLUSTERDOWN`, not run) and serves
//! reads from its copy (or refuses them, `--minority-reads refuse`) until
//! enough of those members are back. Joins count as well: a newcomer is
//! added only by a side that holds a majority. `--partition-mode
//! available` keeps the old behaviour: every side adopts what it sees and
//! accepts writes; last writer wins on heal.
//!
//! The reference is the last table that stayed unchanged for a settle
//! window (a few failure-detection periods), or the last table that only
//! added members to it, not simply the previous one:
//! gossip declares the members across a partition down one at a time, and
//! a chain of single drops, each a majority of the table before it, would
//! walk a minority down to a "majority" of itself (the simulation found
//! exactly that: {n0, n4} of six). A node's first table with members
//! becomes its reference at once (a fresh node adopts whatever it first
//! sees). Two disjoint sides cannot both hold a majority of one reference,
//! so a clean partition has at most one writing side. Views that differ per node
//! (a node that missed a change) are not a consensus protocol: see
//! ARCHITECTURE.md for what this does not cover.
//!
//! A member that leaves gracefully (SIGTERM, SHUTDOWN) says so first
//! (`RC.LEAVE`): it leaves the count at once ([`View::depart`]), so
//! scaling a cluster in, down to one node, never strands the rest in a
//! minority. Two disjoint sides still cannot both adopt: the member that
//! left takes part on neither.

use std::collections::{BTreeMap, BTreeSet};

/// `--partition-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMode {
    /// Only a side holding a majority of the last table changes it and
    /// accepts writes (default).
    Majority,
    /// Every side adopts what it sees and accepts writes; last writer wins
    /// on heal.
    Available,
}

/// What a node does with the member set gossip shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Publish the table of the members seen.
    Adopt,
    /// Keep the current table; this node is in a minority and refuses writes.
    Minority {
        /// Members of the current table seen (this node included).
        seen: usize,
        /// Members of the current table.
        of: usize,
    },
}

/// A node's tables as this rule sees them (time is data: `now_ms` in).
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The table majorities are counted against; `None` until the node
    /// first adopted a table with other members.
    reference: Option<BTreeSet<String>>,
    /// The members of the table in force, and since when (ms).
    current: BTreeSet<String>,
    since_ms: u64,
    /// The last decision was [`Decision::Minority`]: the table in force is
    /// not agreed, and never becomes the reference.
    minority: bool,
    /// Members that announced a graceful leave: the gossip generation they
    /// had then, and when (ms). Out of the count, and out of the member
    /// set under that generation, for [`View::departed`]'s window.
    departed: BTreeMap<String, (u64, u64)>,
    /// Members a graceful leave took out of the reference: one that comes
    /// back (restarted under its name) counts in it again, as before its
    /// leave.
    left: BTreeSet<String>,
}

/// Graceful leaves remembered at most (older ones are forgotten first).
pub const DEPARTED_MAX: usize = 256;

impl View {
    /// The view of a node that has met no one yet.
    pub fn new(me: &str) -> View {
        View {
            reference: None,
            current: [me.to_string()].into(),
            since_ms: 0,
            minority: false,
            departed: BTreeMap::new(),
            left: BTreeSet::new(),
        }
    }

    /// `name`, of gossip generation `generation` (0: gossip does not list
    /// it), announced at `now_ms` that it leaves gracefully: it stops
    /// counting at once (the reference and the table in force forget it),
    /// and for `window_ms` gossip's news of that generation is not taken
    /// back (its leave spreads within a few detection periods). A newer
    /// generation — the node restarted under its old name — counts at
    /// once, as a newcomer.
    pub fn depart(&mut self, name: &str, generation: u64, now_ms: u64, window_ms: u64) {
        self.expire_departed(now_ms, window_ms);
        if self.departed.len() >= DEPARTED_MAX {
            let oldest = self.departed.iter().min_by_key(|(_, (_, at))| *at).map(|(n, _)| n.clone());
            self.departed.remove(&oldest.expect("not empty"));
        }
        self.departed.insert(name.to_string(), (generation, now_ms));
        if let Some(r) = self.reference.as_mut()
            && r.remove(name)
        {
            if self.left.len() >= DEPARTED_MAX {
                let first = self.left.iter().next().cloned().expect("not empty");
                self.left.remove(&first);
            }
            self.left.insert(name.to_string());
        }
        self.current.remove(name);
        debug_assert!(self.departed.len() <= DEPARTED_MAX);
    }

    /// Forgets the graceful leaves older than `window_ms`; whether there
    /// were any (a member of that name still in gossip counts again: the
    /// member set should be read anew).
    pub fn expire_departed(&mut self, now_ms: u64, window_ms: u64) -> bool {
        let before = self.departed.len();
        self.departed.retain(|_, (_, at)| now_ms.saturating_sub(*at) < window_ms);
        self.departed.len() != before
    }

    /// Whether `name` at gossip generation `generation` announced a
    /// graceful leave less than `window_ms` ago (gossip's member list
    /// should be read without it).
    pub fn departed(&self, name: &str, generation: u64, now_ms: u64, window_ms: u64) -> bool {
        self.departed.get(name).is_some_and(|(g, at)| generation <= *g && now_ms.saturating_sub(*at) < window_ms)
    }

    /// The decision on `seen` (member names gossip shows, this node
    /// included) at `now_ms`; a table that stayed in force `settle_ms`,
    /// while this node was not in a minority, becomes the reference first. On [`Decision::Adopt`] `seen` is the
    /// table in force from now on.
    pub fn decide<'a>(
        &mut self,
        mode: PartitionMode,
        seen: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
        settle_ms: u64,
    ) -> Decision {
        let seen: BTreeSet<String> = seen.into_iter().map(str::to_string).collect();
        // A member back after its graceful leave counts as before it (two
        // disjoint sides still cannot both hold a majority: one counts it
        // in the larger table, the other not at all).
        let back: Vec<String> = self.left.intersection(&seen).cloned().collect();
        for name in back {
            self.left.remove(&name);
            if let Some(r) = self.reference.as_mut() {
                r.insert(name);
            }
        }
        if self.reference.is_some() && !self.minority && now_ms.saturating_sub(self.since_ms) >= settle_ms {
            self.reference = Some(self.current.clone());
        }
        let base = self.reference.as_ref().unwrap_or(&self.current);
        let d = decide(mode, base.iter().map(String::as_str), seen.iter().map(String::as_str));
        if d == Decision::Adopt {
            if seen != self.current {
                self.since_ms = now_ms;
            }
            // Joins only (nothing of the reference dropped): the bigger
            // table counts at once; any drop waits for the window.
            let joins_only = self.reference.as_ref().is_none_or(|r| r.is_subset(&seen));
            if joins_only && seen.len() > 1 {
                self.reference = Some(seen.clone());
            }
            self.current = seen;
        }
        self.minority = d != Decision::Adopt;
        d
    }

    /// The members majorities are counted against now.
    pub fn reference(&self) -> impl Iterator<Item = &str> {
        self.reference.as_ref().unwrap_or(&self.current).iter().map(String::as_str)
    }
}

/// The settle window for gossip that probes every `probe_ms` and suspects
/// for `suspect_ms`: ten detection periods, long enough for every member
/// across one partition to be declared down.
pub fn settle_ms(probe_ms: u64, suspect_ms: u64) -> u64 {
    10 * (probe_ms + suspect_ms)
}

/// The decision on `seen` (member names gossip shows, this node included)
/// for a node whose reference table names `table` (this node included).
pub fn decide<'a>(
    mode: PartitionMode,
    table: impl IntoIterator<Item = &'a str>,
    seen: impl IntoIterator<Item = &'a str>,
) -> Decision {
    let table: BTreeSet<&str> = table.into_iter().collect();
    let seen: BTreeSet<&str> = seen.into_iter().collect();
    assert!(!seen.is_empty(), "a node always sees itself");
    if mode == PartitionMode::Available {
        return Decision::Adopt;
    }
    let present = table.intersection(&seen).count();
    // A table of one (a node that has met no one, or a single node) is
    // always left for whatever the node sees.
    if table.len() <= 1 || 2 * present > table.len() {
        Decision::Adopt
    } else {
        Decision::Minority { seen: present, of: table.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(table: &[&str], seen: &[&str]) -> Decision {
        decide(PartitionMode::Majority, table.iter().copied(), seen.iter().copied())
    }

    #[test]
    fn a_majority_adopts_and_a_minority_keeps_its_table() {
        assert_eq!(d(&["a", "b", "c"], &["a", "b"]), Decision::Adopt);
        assert_eq!(d(&["a", "b", "c"], &["c"]), Decision::Minority { seen: 1, of: 3 });
        // Half is not a majority: a 2-2 split writes nowhere.
        assert_eq!(d(&["a", "b", "c", "d"], &["a", "b"]), Decision::Minority { seen: 2, of: 4 });
        // Newcomers count only once the side holds a majority of the old table.
        assert_eq!(d(&["a", "b", "c"], &["c", "x", "y"]), Decision::Minority { seen: 1, of: 3 });
        assert_eq!(d(&["a", "b", "c"], &["a", "b", "x"]), Decision::Adopt);
        // A lone node (just started, or single) takes whatever it sees.
        assert_eq!(d(&["a"], &["a", "b", "c"]), Decision::Adopt);
        assert_eq!(d(&["a"], &["a"]), Decision::Adopt);
        assert_eq!(
            decide(PartitionMode::Available, ["a", "b", "c"], ["c"]),
            Decision::Adopt,
            "available mode adopts anything"
        );
    }

    #[test]
    fn joins_count_at_once() {
        let mut v = View::new("a");
        assert_eq!(v.decide(PartitionMode::Majority, ["a", "b"], 0, 6000), Decision::Adopt);
        assert_eq!(v.decide(PartitionMode::Majority, ["a", "b", "c", "d", "e"], 100, 6000), Decision::Adopt);
        // Formed a moment ago: {a, b} of five is not a majority.
        assert_eq!(v.decide(PartitionMode::Majority, ["a", "b"], 200, 6000), Decision::Minority { seen: 2, of: 5 });
    }

    #[test]
    fn drops_one_at_a_time_count_against_the_settled_table() {
        let mut v = View::new("a");
        let names = |s: &[&'static str]| s.to_vec();
        assert_eq!(v.decide(PartitionMode::Majority, names(&["a", "b", "c", "d", "e", "f"]), 0, 6000), Decision::Adopt);
        // Settled; then a partition {a, e} | {b, c, d, f} is detected one
        // member at a time.
        assert_eq!(v.decide(PartitionMode::Majority, names(&["a", "b", "c", "e", "f"]), 10_000, 6000), Decision::Adopt);
        assert_eq!(v.decide(PartitionMode::Majority, names(&["a", "b", "e", "f"]), 10_100, 6000), Decision::Adopt);
        assert_eq!(
            v.decide(PartitionMode::Majority, names(&["a", "b", "e"]), 10_200, 6000),
            Decision::Minority { seen: 3, of: 6 }
        );
        assert_eq!(
            v.decide(PartitionMode::Majority, names(&["a", "e"]), 10_300, 6000),
            Decision::Minority { seen: 2, of: 6 }
        );
        // In a minority the table in force never settles into the reference
        // (it would let {a, e} count as 2 of 4 later).
        assert_eq!(
            v.decide(PartitionMode::Majority, names(&["a", "e"]), 60_000, 6000),
            Decision::Minority { seen: 2, of: 6 }
        );
        // Failures far apart each count against the table before them.
        let mut w = View::new("a");
        assert_eq!(w.decide(PartitionMode::Majority, names(&["a", "b", "c"]), 0, 6000), Decision::Adopt);
        assert_eq!(w.decide(PartitionMode::Majority, names(&["a", "b"]), 10_000, 6000), Decision::Adopt);
        assert_eq!(
            w.decide(PartitionMode::Majority, names(&["a"]), 30_000, 6000),
            Decision::Minority { seen: 1, of: 2 }
        );
        assert_eq!(w.reference().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn members_that_left_gracefully_leave_the_count() {
        let m = PartitionMode::Majority;
        // Two nodes, one leaves: the other goes on alone.
        let mut v = View::new("a");
        assert_eq!(v.decide(m, ["a", "b"], 0, 6000), Decision::Adopt);
        v.depart("b", 7, 100, 6000);
        assert_eq!(v.decide(m, ["a"], 200, 6000), Decision::Adopt);
        // Three nodes, two leave one right after the other (within the
        // settle window): the last one still writes.
        let mut w = View::new("a");
        assert_eq!(w.decide(m, ["a", "b", "c"], 0, 6000), Decision::Adopt);
        w.depart("c", 7, 10_000, 6000);
        assert_eq!(w.decide(m, ["a", "b"], 10_100, 6000), Decision::Adopt);
        w.depart("b", 7, 10_200, 6000);
        assert_eq!(w.decide(m, ["a"], 10_300, 6000), Decision::Adopt);
        assert!(w.departed("b", 7, 10_300, 6000), "gossip still listing b is old news");
        assert!(!w.departed("b", 8, 10_300, 6000), "b restarted: a newcomer");
        assert!(!w.departed("b", 7, 16_200, 6000), "forgotten after the window");
        // A failure is still a failure: without the notice, one of three
        // is a minority.
        let mut x = View::new("a");
        assert_eq!(x.decide(m, ["a", "b", "c"], 0, 6000), Decision::Adopt);
        x.depart("c", 7, 10_000, 6000);
        assert_eq!(x.decide(m, ["a"], 10_100, 6000), Decision::Minority { seen: 1, of: 2 });
        // A leaver back under its old name counts as a newcomer.
        assert_eq!(x.decide(m, ["a", "b", "c"], 20_000, 6000), Decision::Adopt);
        assert_eq!(x.reference().collect::<Vec<_>>(), ["a", "b", "c"]);
        // ... and as a member of the table it left (the simulation's seed
        // 332): c and d fail, b leaves, and the rest is a minority of what
        // is left; b back makes three of five again.
        let mut y = View::new("a");
        assert_eq!(y.decide(m, ["a", "b", "c", "d", "e"], 0, 6000), Decision::Adopt);
        assert_eq!(y.decide(m, ["a", "b", "e"], 10_000, 6000), Decision::Adopt);
        y.depart("b", 7, 10_100, 6000);
        assert_eq!(y.decide(m, ["a", "e"], 10_200, 6000), Decision::Minority { seen: 2, of: 4 });
        assert_eq!(y.decide(m, ["a", "b", "e"], 12_000, 6000), Decision::Adopt);
        assert_eq!(y.reference().collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn departed_members_are_bounded() {
        let mut v = View::new("a");
        for i in 0..(DEPARTED_MAX as u64 + 10) {
            v.depart(&format!("n{i}"), 1, i, u64::MAX);
        }
        assert_eq!(v.departed.len(), DEPARTED_MAX);
        assert!(!v.departed("n0", 1, 300, u64::MAX), "the oldest went first");
        assert!(v.departed(&format!("n{}", DEPARTED_MAX + 9), 1, 300, u64::MAX));
    }

    proptest! {
        /// Two disjoint sides never both adopt a change of the same table.
        #[test]
        fn disjoint_sides_never_both_adopt(n in 2usize..9, split in proptest::collection::vec(0u8..3, 9)) {
            let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let table: Vec<&str> = names.iter().map(String::as_str).collect();
            // Group 2 is down (seen by nobody).
            let side = |g: u8| -> Vec<&str> { table.iter().zip(&split).filter(|(_, s)| **s == g).map(|(t, _)| *t).collect() };
            let (left, right) = (side(0), side(1));
            prop_assume!(!left.is_empty() && !right.is_empty());
            let adopt = |s: &[&str]| d(&table, s) == Decision::Adopt;
            prop_assert!(!(adopt(&left) && adopt(&right)));
        }
    }
}
