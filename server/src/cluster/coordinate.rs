//! Coordinating a request in a cluster: the decisions `net::exec` and
//! `net::peer` make about a request, and the simulation makes with them.
//!
//! - [`admit`]: whether a node runs a request at all — alone (no members
//!   yet), refused (still awaiting a seed, on a partition's minority side,
//!   back from a long absence), or in the cluster.
//! - [`keepers_step`], [`fetch_step`]: a write to an unsettled slot whose
//!   keepers look short, or whose fetch failed: held, sent again, or
//!   refused.
//! - [`quorum_reachable`], [`quorum_short`]: a write's quorum before it
//!   runs (enough owners reachable) and after (enough acknowledged).
//! - [`receive_forward`]: what a primary does with a forwarded request
//!   (run it, or refuse it for now or for good).
//! - [`retry_forward`], [`retry_pause`], [`resend_target`]: what the
//!   forwarding node does with a refused or unsent forward.
//!
//! Every refusal is a [`Refusal`]: its Redis-style text, and whether the
//! request ran (none of these did).

use std::borrow::Cow;

use super::keepers::Shortfall;
use super::protocol::Ran;
use super::settle::Verdict;
use super::topology::Topology;

/// What a node knows about a request and about itself when it arrives.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gate {
    /// Members of this node's slot table (itself included).
    pub members: usize,
    /// This node still awaits an answer from a seed (`Phase::AwaitingSeed`).
    pub awaiting_seed: bool,
    /// Seeds were configured (the refusal's text says what it waits for).
    pub seeded: bool,
    /// Forwarded by a member (`RC.FWD`), not a client's.
    pub from_peer: bool,
    /// The command names keys.
    pub keyed: bool,
    /// The command writes.
    pub write: bool,
    /// On the minority side of a partition: members seen of the table's.
    pub minority: Option<(u32, u32)>,
    /// `--minority-reads refuse`.
    pub minority_refuses_reads: bool,
    /// Back from an absence longer than the tombstone grace (`absence`).
    pub returning: bool,
}

/// How a request is run, by [`admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// This node is alone in its table: it runs everything itself.
    Alone,
    /// Refused before it ran.
    Refuse(Refusal),
    /// Planned over the cluster (here, forwarded, split...).
    Cluster,
}

/// A request the cluster's state refused; none of these ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A member forwarded a key to a node that does not know it has
    /// members yet (retryable: the sender sends it again).
    NotJoinedYet,
    /// A client asked for a key before this node joined its cluster.
    AwaitingSeed {
        /// Seeds were configured (else it waits `--founding-wait-ms`).
        seeded: bool,
    },
    /// This node is on the minority side of a partition.
    Minority {
        /// Members of its table it sees.
        seen: u32,
        /// Members of its table.
        of: u32,
        /// The request writes (else: a read, refused by configuration).
        write: bool,
    },
    /// A write on a node back from an absence longer than the grace.
    Returning,
    /// Too few of a slot's owners are reachable for the write quorum.
    QuorumUnreachable {
        /// The key's slot.
        slot: u16,
        /// The write quorum.
        need: usize,
        /// Owners reachable, this node included.
        reachable: usize,
    },
    /// The slot's writes were last held by members too few of which are
    /// in this node's table.
    KeepersShort {
        /// The key's slot.
        slot: u16,
        /// Keepers present, and needed.
        short: Shortfall,
    },
    /// The slot's table is still settling (retryable).
    Settling,
    /// The fetch of the key's newest state (`settle`) failed.
    Unsettled {
        /// The key's slot.
        slot: u16,
        /// How the fetch ended (never `Fetched`).
        verdict: Verdict,
    },
}

impl Refusal {
    /// The Redis-style error text (without `-` and CRLF).
    pub fn text(&self) -> Cow<'static, [u8]> {
        use Cow::{Borrowed, Owned};
        match self {
            Refusal::NotJoinedYet => Borrowed(b"TRYAGAIN this node has not joined the cluster's table yet"),
            Refusal::AwaitingSeed { seeded: true } => {
                Borrowed(b"CLUSTERDOWN this node has not joined its cluster yet (no seed has answered)")
            }
            Refusal::AwaitingSeed { seeded: false } => Borrowed(
                b"CLUSTERDOWN this node has not joined its cluster yet (it waits --founding-wait-ms for members \
                  that may remember it)",
            ),
            Refusal::Minority { seen, of, write } => Owned(
                format!(
                    "CLUSTERDOWN this node sees {seen} of the {of} members of its slot table (the minority side of \
                     a partition): {} refused until most are back (not run)",
                    if *write { "writes are" } else { "reads are" }
                )
                .into_bytes(),
            ),
            Refusal::Returning => Borrowed(
                b"CLUSTERDOWN this node is returning from an absence longer than the tombstone grace: writes are \
                  refused until it has rejoined (not run)",
            ),
            Refusal::QuorumUnreachable { slot, need, reachable } => Owned(
                format!(
                    "CLUSTERDOWN not enough owners of slot {slot} are reachable for the write quorum (need {need}, \
                     reachable {reachable})"
                )
                .into_bytes(),
            ),
            Refusal::KeepersShort { slot, short } => Owned(
                format!(
                    "CLUSTERDOWN slot {slot}'s writes were last held by members of which only {} of the {} needed \
                     are in this node's table (failed together, or across a partition): writes wait until they \
                     are back (not run)",
                    short.have, short.need
                )
                .into_bytes(),
            ),
            Refusal::Settling => Borrowed(b"TRYAGAIN this key's slot table is still settling; retry"),
            Refusal::Unsettled { slot, verdict } => Owned(verdict.refusal(*slot).unwrap_or_default().into_bytes()),
        }
    }

    /// Whether the request ran: never, for a refusal.
    pub fn ran(&self) -> Ran {
        Ran::No
    }

    /// Whether the sender of a forwarded request sends it again shortly.
    pub fn retryable(&self) -> bool {
        matches!(self, Refusal::NotJoinedYet | Refusal::Settling)
    }
}

/// Whether and how a node runs a request (see [`Gate`]).
pub fn admit(g: &Gate) -> Admit {
    if g.members < 2 {
        if g.keyed && (g.from_peer || g.awaiting_seed) {
            // A member forwarded a key here while this node does not know
            // it has members yet, or a client asked for one before any
            // seed answered: it holds none of their data.
            return Admit::Refuse(if g.from_peer {
                Refusal::NotJoinedYet
            } else {
                Refusal::AwaitingSeed { seeded: g.seeded }
            });
        }
        return Admit::Alone;
    }
    if let Some((seen, of)) = g.minority
        && (g.write || (g.keyed && g.minority_refuses_reads))
    {
        return Admit::Refuse(Refusal::Minority { seen, of, write: g.write });
    }
    if g.write && g.returning {
        return Admit::Refuse(Refusal::Returning);
    }
    Admit::Cluster
}

/// What a write to an unsettled slot does next ([`keepers_step`],
/// [`fetch_step`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Go on (for a member's forward answered `-TRYAGAIN` while its key
    /// was fetched: it runs when it comes again).
    Go,
    /// Held until the table moves (a client's request, once).
    Hold,
    /// Refused: for now (a forwarded request, sent again by its sender)
    /// or for good.
    Refuse(Refusal),
}

/// The keepers rule for a write to `slot` (`cluster::keepers`): `short`
/// is how they stand in this node's table; `converging` says the table
/// changed within two failure-detection times (a missing keeper is then
/// more likely a member the table does not list yet than a failure);
/// `held_once` that this request was held for that already.
pub fn keepers_step(slot: u16, short: Option<Shortfall>, converging: bool, from_peer: bool, held_once: bool) -> Step {
    match short {
        None => Step::Go,
        Some(short) => settling(converging, from_peer, held_once, Refusal::KeepersShort { slot, short }),
    }
}

/// The rule once a write's fetch (`settle`) ended with `verdict`: a
/// member that cannot reach the slot's keepers right after a table change
/// is waited out like this node's own keepers ([`keepers_step`]); any
/// other failure refuses the write, a forwarded one included (it would
/// fail again if sent again).
pub fn fetch_step(slot: u16, verdict: &Verdict, converging: bool, from_peer: bool, held_once: bool) -> Step {
    match verdict {
        Verdict::Fetched => Step::Go,
        Verdict::KeepersShort(_) => {
            settling(converging, from_peer, held_once, Refusal::Unsettled { slot, verdict: verdict.clone() })
        }
        _ => Step::Refuse(Refusal::Unsettled { slot, verdict: verdict.clone() }),
    }
}

/// Right after a table change a shortfall is more likely a member the
/// table does not list yet: a client's request waits (once), a forwarded
/// one is sent again by its sender; otherwise `refusal`.
fn settling(converging: bool, from_peer: bool, held_once: bool, refusal: Refusal) -> Step {
    if converging {
        if from_peer {
            return Step::Refuse(Refusal::Settling);
        }
        if !held_once {
            return Step::Hold;
        }
    }
    Step::Refuse(refusal)
}

/// Until when a table change counts as recent (a keeper missing from the
/// table is more likely a member it does not list yet than a failure):
/// two failure-detection times (probe, its timeout, suspicion) after it.
pub fn converging_until_ms(table_changed_ms: u64, detection_ms: u64) -> u64 {
    table_changed_ms.saturating_add(2 * detection_ms)
}

/// Before a write runs: refused unless `reachable` owners (this node
/// included) make the write quorum `need`.
pub fn quorum_reachable(slot: u16, need: usize, reachable: usize) -> Result<(), Refusal> {
    if reachable < need { Err(Refusal::QuorumUnreachable { slot, need, reachable }) } else { Ok(()) }
}

/// After a write ran here: `None` when the owners holding it (this node
/// and `acked` replicas) make the quorum `need`, else (have, need).
pub fn quorum_short(need: usize, acked: usize) -> Option<(usize, usize)> {
    let have = 1 + acked;
    (have < need).then_some((have, need))
}

/// Fetch rounds a held request may take before it is refused (its slot's
/// owners kept changing under it).
pub const HOLD_ROUNDS_MAX: u32 = 3;

/// What a primary does with a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// Run it.
    Run,
    /// Read after its deadline: the forwarding node has answered
    /// `-TIMEOUT`; running it now could undo writes acknowledged since.
    Expired,
    /// An earlier request of its slot in this batch was refused for the
    /// moment: refused too, so the sender's resends keep its order.
    KeepOrder,
    /// Routed by another member set: both views are converging (the
    /// sender sends it again).
    TableDiffers,
}

/// The receiving primary's rule for a forward: `expired` by its
/// deadline (`protocol::Lateness`), `slot_blocked` by an earlier refusal
/// in the batch, `same_table` when the sender's table digest is this
/// node's.
pub fn receive_forward(expired: bool, slot_blocked: bool, same_table: bool) -> Receive {
    if expired {
        Receive::Expired
    } else if slot_blocked {
        Receive::KeepOrder
    } else if !same_table {
        Receive::TableDiffers
    } else {
        Receive::Run
    }
}

/// How a forward's attempt ended, at the forwarding node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Answered; `refused_for_now`: a retryable refusal (it did not run).
    Answered {
        /// The answer was `-TRYAGAIN` (or the table differed).
        refused_for_now: bool,
    },
    /// Never sent (the primary unreachable), or a read lost in flight.
    Unsent,
    /// Sent and no answer: it may have run.
    Lost,
}

/// Pause before a forward refused for the moment is sent again the first
/// time (ms); it doubles with each refusal, up to 32 times this.
pub const RETRY_PAUSE_MS: u64 = 3;
/// Doublings of [`RETRY_PAUSE_MS`] at most.
const RETRY_DOUBLINGS_MAX: u32 = 5;
/// Pause before a forward whose primary was unreachable is tried again
/// (ms; failure detection takes hundreds of milliseconds).
pub const UNREACHABLE_PAUSE_MS: u64 = 20;

/// Whether a forward is sent again after its `tries`th refusal or
/// failure (from 0), and after what pause (ms): a refusal for the moment
/// soon, then less often (a table that settles in milliseconds costs
/// little latency; one that takes a second, as keepers waited out after
/// a failure, is not asked hundreds of times); an unsent one once failure
/// detection may have moved its slot, unless this node is on a
/// partition's minority side (it keeps its table: nothing to wait for). A
/// lost write is not: it may have run.
pub fn retry_forward(a: Attempt, minority: bool, tries: u32) -> Option<u64> {
    match a {
        Attempt::Answered { refused_for_now: true } => Some(RETRY_PAUSE_MS << tries.min(RETRY_DOUBLINGS_MAX)),
        Attempt::Unsent if !minority => Some(UNREACHABLE_PAUSE_MS),
        _ => None,
    }
}

/// The pause before a retry that leaves as much time again for its
/// answer before `deadline_ms`: `pause_ms`, shortened near the deadline,
/// or `None` once not even [`RETRY_PAUSE_MS`] fits.
pub fn retry_pause(now_ms: u64, pause_ms: u64, deadline_ms: u64) -> Option<u64> {
    let left = deadline_ms.saturating_sub(now_ms);
    let pause = pause_ms.min(left.saturating_sub(1) / 2);
    (pause >= RETRY_PAUSE_MS).then_some(pause)
}

/// Where a forward of a key of `slot` is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This node became the slot's primary: it runs it as a primary runs
    /// a member's forward.
    Here,
    /// The slot's primary in the table of now.
    Member(u16),
}

/// The slot's primary in `t` (see [`Target`]).
pub fn resend_target(t: &Topology, slot: u16) -> Target {
    let p = t.table.owners(slot)[0];
    if p == t.me { Target::Here } else { Target::Member(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate { members: 3, keyed: true, seeded: true, ..Gate::default() }
    }

    #[test]
    fn a_lone_node_refuses_keys_only_while_awaiting_a_seed_or_for_a_peer() {
        let alone = Gate { members: 1, ..gate() };
        assert_eq!(admit(&alone), Admit::Alone);
        assert_eq!(
            admit(&Gate { awaiting_seed: true, ..alone }),
            Admit::Refuse(Refusal::AwaitingSeed { seeded: true })
        );
        assert_eq!(admit(&Gate { from_peer: true, ..alone }), Admit::Refuse(Refusal::NotJoinedYet));
        // A keyless command (PING, INFO) runs whatever the phase.
        assert_eq!(admit(&Gate { awaiting_seed: true, keyed: false, ..alone }), Admit::Alone);
        assert!(Refusal::NotJoinedYet.retryable());
        assert!(!Refusal::AwaitingSeed { seeded: false }.retryable());
    }

    #[test]
    fn the_minority_refuses_writes_and_by_choice_reads() {
        let minority = Gate { minority: Some((1, 3)), ..gate() };
        assert_eq!(admit(&minority), Admit::Cluster, "a read is served by default");
        let refused = Admit::Refuse(Refusal::Minority { seen: 1, of: 3, write: true });
        assert_eq!(admit(&Gate { write: true, ..minority }), refused);
        assert!(matches!(admit(&Gate { minority_refuses_reads: true, ..minority }), Admit::Refuse(_)));
        assert_eq!(admit(&Gate { write: true, returning: true, ..gate() }), Admit::Refuse(Refusal::Returning));
        assert_eq!(admit(&Gate { returning: true, ..gate() }), Admit::Cluster);
        let text = Refusal::Minority { seen: 1, of: 3, write: true }.text();
        assert!(text.starts_with(b"CLUSTERDOWN this node sees 1 of the 3 members"));
        assert_eq!(Refusal::Returning.ran(), Ran::No);
    }

    #[test]
    fn short_keepers_hold_a_client_once_and_refuse_a_peer_for_now() {
        let shortfall = Shortfall { have: 1, need: 2 };
        let short = Some(shortfall);
        assert_eq!(keepers_step(7, None, true, false, false), Step::Go);
        assert_eq!(keepers_step(7, short, true, false, false), Step::Hold);
        assert_eq!(keepers_step(7, short, true, true, false), Step::Refuse(Refusal::Settling));
        let refused = Step::Refuse(Refusal::KeepersShort { slot: 7, short: shortfall });
        assert_eq!(keepers_step(7, short, true, false, true), refused);
        assert_eq!(keepers_step(7, short, false, true, false), refused);
    }

    #[test]
    fn a_failed_fetch_refuses_a_forward_for_good_unless_the_table_is_settling() {
        let keepers = Verdict::KeepersShort("b".into());
        assert_eq!(fetch_step(7, &Verdict::Fetched, false, true, false), Step::Go);
        assert_eq!(fetch_step(7, &keepers, true, true, false), Step::Refuse(Refusal::Settling));
        assert_eq!(fetch_step(7, &keepers, true, false, false), Step::Hold);
        let short = Verdict::Short { have: 1, need: 2 };
        let Step::Refuse(r) = fetch_step(7, &short, true, true, false) else { panic!("refused") };
        assert!(!r.retryable(), "a forward whose fetch failed is not sent again");
        assert!(r.text().starts_with(b"CLUSTERDOWN slot 7's owners changed"));
        assert!(matches!(fetch_step(7, &keepers, false, true, false), Step::Refuse(Refusal::Unsettled { .. })));
    }

    #[test]
    fn quorums_count_this_node() {
        assert_eq!(quorum_reachable(3, 2, 1), Err(Refusal::QuorumUnreachable { slot: 3, need: 2, reachable: 1 }));
        assert_eq!(quorum_reachable(3, 2, 2), Ok(()));
        assert_eq!(quorum_short(2, 0), Some((1, 2)));
        assert_eq!(quorum_short(2, 1), None);
        assert_eq!(quorum_short(1, 0), None);
    }

    #[test]
    fn forwards_are_refused_in_rule_order_and_retried_only_when_not_run() {
        assert_eq!(receive_forward(true, true, false), Receive::Expired);
        assert_eq!(receive_forward(false, true, false), Receive::KeepOrder);
        assert_eq!(receive_forward(false, false, false), Receive::TableDiffers);
        assert_eq!(receive_forward(false, false, true), Receive::Run);
        let refused = Attempt::Answered { refused_for_now: true };
        assert_eq!(retry_forward(refused, true, 0), Some(RETRY_PAUSE_MS));
        assert_eq!(retry_forward(refused, false, 2), Some(4 * RETRY_PAUSE_MS));
        assert_eq!(retry_forward(refused, false, 40), Some(32 * RETRY_PAUSE_MS));
        assert_eq!(retry_forward(Attempt::Answered { refused_for_now: false }, false, 0), None);
        assert_eq!(retry_forward(Attempt::Unsent, false, 3), Some(UNREACHABLE_PAUSE_MS));
        assert_eq!(retry_forward(Attempt::Unsent, true, 0), None);
        assert_eq!(retry_forward(Attempt::Lost, false, 0), None);
        assert_eq!(retry_pause(100, 3, 107), Some(3));
        assert_eq!(retry_pause(100, 3, 106), None);
        assert_eq!(retry_pause(0, 96, 100), Some(49), "shortened, not dropped, near the deadline");
        assert_eq!(retry_pause(0, 20, 1000), Some(20));
    }
}
