//! A node's phase in its cluster: one enum, moved only by [`next`], instead
//! of flags written from five files.
//!
//! ```text
//! AwaitingSeed --JoinTimeout--> Alone
//!      |  \--SeedsAreMe--\        |
//!      |                  v       |
//!      +------Met------> Joining <+--Met   (Met with own writes: Serving)
//!                           |
//!                      SlotsArrived
//!                           v
//!                        Serving --Shutdown--> Draining --Drained--> Left
//! ```
//!
//! The phase never moves back (asserted): a node that has held its slots
//! in a table with others never again refuses keys as a newcomer would.
//! [`Shutdown`](Event::Shutdown) moves any earlier phase to `Draining`.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};

/// Where a node stands, in the order it goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Started with seeds, none has answered yet: it may be missing the
    /// cluster's data, so keyed commands are refused.
    AwaitingSeed = 0,
    /// No seed answered within the join timeout: it serves its own keys
    /// alone and is not ready.
    Alone = 1,
    /// Has not yet held a full set of slots in a table with other members:
    /// a newcomer receiving its slots, or the first node of a cluster
    /// before anyone joined it. Table changes are planned as if the
    /// cluster before it were the others alone (it holds nothing of
    /// theirs).
    Joining = 2,
    /// Holds its slots; table changes are planned from the previous table.
    Serving = 3,
    /// Shutting down: handing its slots over.
    Draining = 4,
    /// Done; nothing more is served.
    Left = 5,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::AwaitingSeed,
            1 => Phase::Alone,
            2 => Phase::Joining,
            3 => Phase::Serving,
            4 => Phase::Draining,
            5 => Phase::Left,
            _ => unreachable!("phase {n} was never stored"),
        }
    }

    /// Still a newcomer to its cluster's data (see [`Phase::Joining`]).
    pub fn newcomer(self) -> bool {
        self <= Phase::Joining
    }
}

/// What moves a node's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every seed resolves to this node: there is no one to wait for.
    SeedsAreMe,
    /// The join timeout passed and no seed has answered.
    JoinTimeout,
    /// A table with another member was published. `wrote_alone`: a client
    /// write ran here while it was alone, so its data is its own and it is
    /// a source for its slots, not a newcomer.
    Met {
        /// See above.
        wrote_alone: bool,
    },
    /// In a table with others, every slot it awaited has arrived.
    SlotsArrived,
    /// SHUTDOWN, a signal, or a graceful leave.
    Shutdown,
    /// The drain finished.
    Drained,
}

/// The phase after `event` in phase `from`. Events that do not apply in
/// `from` (a late timer, a repeated table) leave it as it is.
pub fn next(from: Phase, event: Event) -> Phase {
    use Phase::*;
    let to = match (from, event) {
        (AwaitingSeed, Event::SeedsAreMe) => Joining,
        (AwaitingSeed, Event::JoinTimeout) => Alone,
        (AwaitingSeed | Alone | Joining, Event::Met { wrote_alone: true }) => Serving,
        (AwaitingSeed | Alone, Event::Met { wrote_alone: false }) => Joining,
        (Joining, Event::SlotsArrived) => Serving,
        (AwaitingSeed | Alone | Joining | Serving, Event::Shutdown) => Draining,
        (Draining, Event::Drained) => Left,
        (p, _) => p,
    };
    assert!(to >= from, "a node's phase never moves back: {from:?} -> {to:?} on {event:?}");
    to
}

/// The phase of a running node, read on the request path without a lock,
/// and the one fact the phase depends on (`wrote_alone`).
#[derive(Debug)]
pub struct Lifecycle {
    phase: AtomicU8,
    wrote_alone: AtomicBool,
}

impl Lifecycle {
    /// A node started with seeds begins awaiting one; without seeds it is
    /// the first node of its cluster.
    pub fn new(seeded: bool) -> Self {
        let start = if seeded { Phase::AwaitingSeed } else { Phase::Joining };
        Lifecycle { phase: AtomicU8::new(start as u8), wrote_alone: AtomicBool::new(false) }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Relaxed))
    }

    /// Applies `event`; returns the phase before and after.
    pub fn on(&self, event: Event) -> (Phase, Phase) {
        let mut from = self.phase.load(Relaxed);
        loop {
            let to = next(Phase::from_u8(from), event) as u8;
            match self.phase.compare_exchange_weak(from, to, Relaxed, Relaxed) {
                Ok(_) => return (Phase::from_u8(from), Phase::from_u8(to)),
                Err(now) => from = now,
            }
        }
    }

    /// A client write ran here while no other member was in the table.
    pub fn wrote_alone(&self) {
        if !self.wrote_alone.load(Relaxed) {
            self.wrote_alone.store(true, Relaxed);
        }
    }

    /// Whether a client write ran here while it was alone in its table.
    pub fn has_written_alone(&self) -> bool {
        self.wrote_alone.load(Relaxed)
    }

    /// Whether a table change is planned as by a newcomer that holds none
    /// of the cluster's data: a newcomer phase, unless this node served
    /// writes while its last table (`last_alone`) held only itself — then
    /// it is a source for its slots, and the table it publishes next makes
    /// it `Serving` ([`Event::Met`]).
    pub fn plans_as_newcomer(&self, last_alone: bool) -> bool {
        self.phase().newcomer() && !(last_alone && self.has_written_alone())
    }

    /// [`Event::Met`] with this node's own `wrote_alone`.
    pub fn met(&self) -> (Phase, Phase) {
        self.on(Event::Met { wrote_alone: self.has_written_alone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVENTS: [Event; 7] = [
        Event::SeedsAreMe,
        Event::JoinTimeout,
        Event::Met { wrote_alone: false },
        Event::Met { wrote_alone: true },
        Event::SlotsArrived,
        Event::Shutdown,
        Event::Drained,
    ];

    #[test]
    fn a_seeded_node_joins_then_serves() {
        let l = Lifecycle::new(true);
        assert_eq!(l.phase(), Phase::AwaitingSeed);
        assert_eq!(l.on(Event::SlotsArrived).1, Phase::AwaitingSeed, "not before it met anyone");
        assert_eq!(l.met().1, Phase::Joining);
        assert_eq!(l.on(Event::SlotsArrived).1, Phase::Serving);
        assert_eq!(l.on(Event::JoinTimeout).1, Phase::Serving, "a late timer changes nothing");
        assert_eq!(l.on(Event::Shutdown).1, Phase::Draining);
        assert_eq!(l.on(Event::Drained).1, Phase::Left);
    }

    #[test]
    fn a_node_that_wrote_alone_is_a_source_when_others_come() {
        let l = Lifecycle::new(false);
        assert_eq!(l.phase(), Phase::Joining);
        l.wrote_alone();
        assert_eq!(l.met().1, Phase::Serving);
        let l = Lifecycle::new(true);
        assert_eq!(l.on(Event::JoinTimeout).1, Phase::Alone);
        assert_eq!(l.met().1, Phase::Joining, "alone without writes: a newcomer");
    }

    proptest! {
        /// Whatever arrives in whatever order, the phase only moves forward
        /// (`next` asserts it) and `Left` is final.
        #[test]
        fn the_phase_never_moves_back(seeded in any::<bool>(), events in proptest::collection::vec(0..7usize, 0..40)) {
            let l = Lifecycle::new(seeded);
            for e in events {
                let (from, to) = l.on(EVENTS[e]);
                prop_assert!(to >= from);
                if from == Phase::Left {
                    prop_assert_eq!(to, Phase::Left);
                }
            }
        }
    }
}
