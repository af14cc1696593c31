//! Which side of a partition may change the slot table, and so accept
//! writes (issue 16 item 1).
//!
//! Without this, a node that lost sight of the others dropped them from
//! its table, became the owner of every slot, and acknowledged writes that
//! the other side acknowledged too; on heal last-writer-wins kept one side
//! (INCRs on both sides lost acknowledged increments).
//!
//! The rule: a node adopts the member set gossip shows it only while that
//! set holds a strict majority of its current table's members (the members
//! it last agreed with). Otherwise it keeps its table and is in the
//! *minority*: it refuses writes (`-CLUSTERDOWN`, not run) and serves
//! reads from its copy (or refuses them, `--minority-reads refuse`) until
//! enough of those members are back. Joins count as well: a newcomer is
//! added only by a side that holds a majority. `--partition-mode
//! available` keeps the old behaviour: every side adopts what it sees and
//! accepts writes; last writer wins on heal.
//!
//! Two disjoint sides cannot both hold a majority of one table, so a clean
//! partition has at most one writing side. Views that differ per node
//! (a node that missed a change) are not a consensus protocol: see
//! ARCHITECTURE.md for what this does not cover.

use std::collections::BTreeSet;

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

/// The decision on `seen` (member names gossip shows, this node included)
/// for a node whose current table names `table` (this node included).
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
