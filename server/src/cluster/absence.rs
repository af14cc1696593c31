//! Cassandra's gc_grace rule: a node that was away from its cluster longer
//! than the tombstone grace, while the others went on without it, comes back
//! empty (issue 16 item 2, "deletes come back").
//!
//! The others forget a delete's tombstone once the grace has passed. A node
//! that missed the delete and still holds the old value would then look
//! newer than "nothing" to anti-entropy, and the deleted key would spread
//! back. So such a node empties its copy and takes the cluster's data again
//! as any newcomer does (transfers, anti-entropy, writes fetching first).
//!
//! "Away" is one of two shapes, both measured on the node's own clock:
//!
//! - an *episode*: the members of its table it cannot see could form a
//!   majority of that table without it (they could accept deletes), for
//!   longer than `grace - margin` (the margin covers the failure detection
//!   that passed before the node noticed);
//! - a *gap*: the node itself did not run (paused, a stalled VM) for longer
//!   than that, in a table whose other members could form a majority.
//!
//! Either makes the node *returning*: it must not spread its data (the
//! shell's tasks check [`Absence::returning`]) and refuses writes. It empties
//! only on evidence that the others went on without it — gossip tells it
//! that it was declared down ([`Absence::declared_down`]). Without that
//! evidence within `confirm_ms` of coming back (the others were down, not
//! moving on), it keeps its data and serves again. A node that only lost
//! sight of crashed members thus never wipes the last copy.
//!
//! Known cost: after a partition in which *no* side held a majority
//! (1|1|1) for longer than the grace, every node was declared down by the
//! others and every node empties (a cold cache), although no side could
//! have accepted a delete.

/// The shortest absence the rule acts on (ms).
pub const LIMIT_MIN_MS: u64 = 2_000;

/// What the shell does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do: present, or away for less than the grace.
    Present,
    /// Away long enough (or back after it) and not yet resolved: spread
    /// nothing, accept no write.
    Returning,
    /// Empty the store and take the cluster's data again.
    Wipe {
        /// How long the node was away (ms).
        away_ms: u64,
    },
}

/// One node's absence bookkeeping (time is data: `now_ms` in).
#[derive(Debug, Clone)]
pub struct Absence {
    grace_ms: u64,
    margin_ms: u64,
    confirm_ms: u64,
    /// The last tick, and the size of the table then.
    last_ms: Option<u64>,
    last_of: usize,
    /// Since when the unseen members could have formed a majority.
    away_since: Option<u64>,
    /// Back (or away) longer than the grace: (how long away, the deadline
    /// for the evidence that the others went on).
    returning: Option<(u64, u64)>,
    /// Wipes so far.
    pub wipes: u64,
}

impl Absence {
    /// `grace_ms`: the tombstone grace; `margin_ms`: failure-detection time
    /// before an absence is noticed; `confirm_ms`: how long to wait, once
    /// back, for gossip to say the others declared this node down.
    pub fn new(grace_ms: u64, margin_ms: u64, confirm_ms: u64) -> Absence {
        Absence {
            grace_ms,
            margin_ms,
            confirm_ms,
            last_ms: None,
            last_of: 1,
            away_since: None,
            returning: None,
            wipes: 0,
        }
    }

    /// The longest absence tolerated (ms): the grace less the margin, but
    /// never under [`LIMIT_MIN_MS`] (a scheduling hiccup is no absence);
    /// a grace of 0 (tombstones not kept) turns the rule off.
    pub fn limit(&self) -> u64 {
        if self.grace_ms == 0 {
            return u64::MAX;
        }
        self.grace_ms.saturating_sub(self.margin_ms).max(LIMIT_MIN_MS)
    }

    /// A periodic tick: this node sees `seen` of the `of` members of the
    /// table majorities are counted against (itself included).
    pub fn tick(&mut self, now_ms: u64, seen: usize, of: usize) -> Verdict {
        debug_assert!(seen >= 1 && seen <= of.max(1), "a node sees itself and only its table's members");
        self.last_of = of;
        self.check_gap(now_ms);
        let unseen = of.saturating_sub(seen);
        if unseen * 2 > of {
            let since = *self.away_since.get_or_insert(now_ms);
            let away = now_ms.saturating_sub(since);
            if away > self.limit() {
                // Still away: nothing to confirm yet; the deadline runs
                // from coming back.
                self.returning = Some((away, u64::MAX));
            }
        } else if let Some(since) = self.away_since.take() {
            let away = now_ms.saturating_sub(since);
            if away > self.limit() {
                self.mark_returning(away, now_ms);
            }
        }
        match self.returning {
            Some((_, deadline)) if now_ms >= deadline => {
                // Back, and no member said it went on without this node.
                self.returning = None;
                Verdict::Present
            }
            Some(_) => Verdict::Returning,
            None => Verdict::Present,
        }
    }

    /// A gap since the last tick longer than the limit, in a table whose
    /// other members could decide without this node, is an absence.
    fn check_gap(&mut self, now_ms: u64) {
        let gap = self.last_ms.map_or(0, |t| now_ms.saturating_sub(t));
        self.last_ms = Some(now_ms);
        let others_decide = self.last_of.saturating_sub(1) * 2 > self.last_of;
        if gap > self.limit() && others_decide {
            self.mark_returning(gap, now_ms);
        }
    }

    fn mark_returning(&mut self, away_ms: u64, now_ms: u64) {
        let away = self.returning.map_or(away_ms, |(a, _)| a.max(away_ms));
        self.returning = Some((away, now_ms.saturating_add(self.confirm_ms)));
    }

    /// Gossip says the others declared this node down (they went on without
    /// it): a node away longer than the grace empties.
    /// (It may come before the first tick after a pause: the gap counts.)
    pub fn declared_down(&mut self, now_ms: u64) -> Verdict {
        self.check_gap(now_ms);
        let ongoing = self.away_since.map(|s| now_ms.saturating_sub(s)).filter(|&a| a > self.limit());
        let away = match (self.returning, ongoing) {
            (Some((a, _)), o) => a.max(o.unwrap_or(0)),
            (None, Some(a)) => a,
            (None, None) => return Verdict::Present,
        };
        self.returning = None;
        // A wiped node has nothing stale: an absence that goes on counts
        // from now.
        if self.away_since.is_some() {
            self.away_since = Some(now_ms);
        }
        self.wipes += 1;
        Verdict::Wipe { away_ms: away }
    }

    /// Whether the node must not spread its data nor accept writes.
    pub fn returning(&self) -> bool {
        self.returning.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: u64 = 10_000;

    fn absence() -> Absence {
        Absence::new(GRACE, 1_000, 5_000)
    }

    /// Ticks every 500 ms from `from` to `to` seeing `seen` of `of`.
    fn run(a: &mut Absence, from: u64, to: u64, seen: usize, of: usize) -> Verdict {
        let mut v = Verdict::Present;
        let mut t = from;
        while t <= to {
            v = a.tick(t, seen, of);
            t += 500;
        }
        v
    }

    #[test]
    fn a_minority_longer_than_the_grace_empties_when_declared_down() {
        let mut a = absence();
        assert_eq!(run(&mut a, 0, 5_000, 3, 3), Verdict::Present);
        // 1 of 3: the other two could accept deletes without it.
        assert_eq!(run(&mut a, 5_500, 10_000, 1, 3), Verdict::Present);
        assert_eq!(run(&mut a, 10_500, 20_000, 1, 3), Verdict::Returning);
        assert!(a.returning());
        // Healed; the others had declared it down.
        assert_eq!(a.tick(20_500, 3, 3), Verdict::Returning);
        assert!(matches!(a.declared_down(20_600), Verdict::Wipe { away_ms } if away_ms >= 9_000));
        assert!(!a.returning());
        assert_eq!(a.tick(21_000, 3, 3), Verdict::Present);
        assert_eq!(a.wipes, 1);
    }

    #[test]
    fn a_short_minority_or_a_majority_keeps_its_data() {
        let mut a = absence();
        run(&mut a, 0, 5_000, 1, 3);
        assert_eq!(a.tick(5_500, 3, 3), Verdict::Present);
        assert_eq!(a.declared_down(5_600), Verdict::Present);
        // Two of three seen for far longer than the grace: the unseen one
        // could not decide alone.
        assert_eq!(run(&mut a, 6_000, 60_000, 2, 3), Verdict::Present);
        assert_eq!(a.declared_down(60_100), Verdict::Present);
        // Two of four: neither half holds a majority.
        assert_eq!(run(&mut a, 60_500, 120_000, 2, 4), Verdict::Present);
        assert_eq!(a.wipes, 0);
    }

    #[test]
    fn a_pause_longer_than_the_grace_is_an_absence() {
        let mut a = absence();
        run(&mut a, 0, 5_000, 3, 3);
        assert_eq!(a.tick(30_000, 3, 3), Verdict::Returning);
        assert!(matches!(a.declared_down(30_400), Verdict::Wipe { away_ms: 25_000 }));
        // The news may come before the first tick after the pause.
        let mut d = absence();
        run(&mut d, 0, 5_000, 3, 3);
        assert!(matches!(d.declared_down(30_000), Verdict::Wipe { away_ms: 25_000 }));
        // The same pause in a lone node's table, or a two-node one, is not.
        let mut b = absence();
        b.tick(0, 1, 1);
        assert_eq!(b.tick(30_000, 1, 1), Verdict::Present);
        let mut c = absence();
        c.tick(0, 2, 2);
        assert_eq!(c.tick(30_000, 2, 2), Verdict::Present);
    }

    #[test]
    fn tiny_graces_are_floored_and_zero_turns_the_rule_off() {
        assert_eq!(Absence::new(1_000, 3_000, 0).limit(), LIMIT_MIN_MS);
        let mut a = Absence::new(0, 0, 0);
        run(&mut a, 0, 60_000, 1, 3);
        assert_eq!(a.tick(600_000, 1, 3), Verdict::Present);
        assert_eq!(a.declared_down(600_001), Verdict::Present);
    }

    #[test]
    fn without_evidence_the_others_went_on_the_data_stays() {
        // The others crashed (they come back fresh, never declaring this
        // node down): it holds the last copy and keeps it.
        let mut a = absence();
        run(&mut a, 0, 30_000, 1, 3);
        assert!(a.returning());
        assert_eq!(a.tick(30_500, 3, 3), Verdict::Returning);
        assert_eq!(run(&mut a, 31_000, 35_000, 3, 3), Verdict::Returning);
        assert_eq!(a.tick(35_500, 3, 3), Verdict::Present);
        assert_eq!(a.declared_down(36_000), Verdict::Present);
        assert_eq!(a.wipes, 0);
    }

    #[test]
    fn declared_down_while_still_away_empties_once() {
        let mut a = absence();
        run(&mut a, 0, 15_000, 1, 3);
        assert!(matches!(a.declared_down(15_100), Verdict::Wipe { .. }));
        // Still away: the absence counts again from the wipe.
        assert_eq!(run(&mut a, 15_500, 20_000, 1, 3), Verdict::Present);
        assert_eq!(a.declared_down(20_100), Verdict::Present);
        assert_eq!(a.wipes, 1);
    }
}
