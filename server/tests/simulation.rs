//! A deterministic simulation of the cluster core (issue 7, item 4).
//!
//! Several nodes run in one process, one thread, on simulated time: each has
//! a real `foca::Foca` (configured by `net::gossip::foca_config`, packets
//! sealed and opened with the real `PacketKey`), derives its topology with
//! `topology_of` as the gossip driver does, keeps its data in a real
//! `store::Store` (driven with simulated `now_ms`, so versions, tombstones
//! and `KeyRef::apply` are the production code), replicates writes as the
//! real `RC.PUT`/`RC.DEL` requests (encoded by `replication`, parsed back with
//! the protocol's `RequestParser` and the typed peer protocol), plans slot copies with
//! `rebalance::plan`/`add_newcomer_copies`, and runs anti-entropy over the store's slot
//! digests. The IO shells (`net/`) are modelled here in a few lines each:
//! what they do on a table change, on a write, on a copy, on a digest
//! mismatch.
//!
//! The network delays, drops, partitions; nodes crash (state lost), restart
//! and join. Everything random comes from one seeded generator, and nothing
//! reads a clock or spawns a thread, so a seed replays exactly:
//!
//! ```text
//! RINGCACHE_SIM_SEED=<n> cargo test -p ringcache-server --test simulation
//! RINGCACHE_SIM_SEEDS=<count> [RINGCACHE_SIM_FIRST=<n>] cargo test -p ringcache-server --test simulation
//! ```
//!
//! Partitions: each node runs `cluster::majority::decide` as the gossip
//! driver does; a minority node keeps its table and refuses writes. A
//! node still stuck in a minority in a quiet period because members of
//! its table crashed for good is restarted, the operator's remedy
//! (`stuck_restarts`).
//!
//! Keepers: each node runs the real `cluster::keepers::Keepers` as the
//! shell does (table changes, settles, the primary's settled bit in its
//! anti-entropy offers, keepers carried by slot copies, `KeepersShort`
//! answers to a write's fetch and to anti-entropy); a write to a slot
//! too few of whose keepers are members is refused. Graceful leaves hand
//! over and announce themselves (only when the drain would have
//! finished: every other member up and reachable); the drain's copies
//! are not modelled (a leaver's data goes as in a crash, and is excused
//! as one).
//!
//! Not modelled: reads (and read-through while importing), hints (a lost
//! replication message is left to anti-entropy), the write-quorum precheck
//! (a write that cannot reach W owners is simply not acknowledged),
//! expiry, eviction, tombstone collection (runs are shorter than the grace
//! period), the drain, pauses.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use ringcache_protocol::{Limits, RequestParser, SLOT_COUNT, key_slot};
use ringcache_server::cluster::antientropy::Divergence;
use ringcache_server::cluster::coordinate::{
    Admit, Attempt, Gate, HOLD_ROUNDS_MAX, Receive, Refusal, Step, Target, admit, converging_until_ms, fetch_step,
    keepers_step, quorum_short, receive_forward, resend_target, retry_forward, retry_pause,
};
use ringcache_server::cluster::keepers::Keepers;
use ringcache_server::cluster::lifecycle::{Event, Lifecycle, Phase};
use ringcache_server::cluster::majority::{Decision, PartitionMode, View, settle_ms};
use ringcache_server::cluster::membership::{
    ClusterSettings, NodeIdentity, PacketKey, announce_targets, connected_after, members_digest, topology_of,
};
use ringcache_server::cluster::protocol::{Deadline, Lateness};
use ringcache_server::cluster::rebalance::{Plan, add_newcomer_copies, imports, plan};
use ringcache_server::cluster::replication::{ReadState, encode_current, encode_del, encode_put, parse_op, quorum};
use ringcache_server::cluster::settle::{Fetch, KeyState, Verdict, fetch_for, owners_changed, verdict_with_keepers};
use ringcache_server::cluster::topology::{NodeInfo, Topology};
use ringcache_server::cluster::transfer::RebalanceState;
use ringcache_server::config::GossipTiming;
use ringcache_server::net::gossip::{foca_config, suspicion_refuted};
use ringcache_server::store::{Incoming, SHARD_COUNT, Store};

// ---- parameters -----------------------------------------------------------------

/// Replicas (N) and write quorum (W), the defaults.
const RF: usize = 3;
const W: u32 = 2;
/// Virtual nodes per member. Fewer than the default 256 to keep a table
/// computation cheap in a debug build; placement logic is the same.
const VNODES: u32 = 32;
const MAX_NODES: usize = 6;
/// Simulated unix time at t = 0 (ms).
const BASE_MS: u64 = 1_700_000_000_000;

const MS: u64 = 1000; // simulated time is in microseconds
const ANNOUNCE_PERIOD: u64 = 500 * MS;
/// `--join-timeout-ms` default with `--partition-mode majority`: a seeded
/// node that met no one waits for ever (serving alone would be a writing
/// side of its own).
const JOIN_TIMEOUT: Option<u64> = None;
const PUBLISH_DELAY: u64 = 25 * MS;
/// `node::LEAVE_GRACE`: a leaving node serves this long after its leave.
const LEAVE_GRACE: u64 = 1000 * MS;
const WRITE_TIMEOUT: u64 = 2000 * MS;
/// A forward's deadline: twice the replication timeout (`net::exec`).
const FORWARD_TTL: u64 = 2 * WRITE_TIMEOUT;
/// `net::exec::fetch`'s pause before asking a member again.
const ASK_AGAIN: u64 = 25 * MS;
/// `net::exec`'s pause before a held request looks again.
const UNREACHABLE_PAUSE: u64 = ringcache_server::cluster::coordinate::UNREACHABLE_PAUSE_MS * MS;
const CONFIRM_TIMEOUT: u64 = 2000 * MS;
const RETRY_DELAY: u64 = 200 * MS;
const PULL_AFTER: u64 = 100 * MS;
const PULL_EVERY: u64 = 100 * MS;
const IMPORT_MAX: u64 = 30_000 * MS;
/// Anti-entropy compares one store shard's slots per round.
const AE_ROUND: u64 = 30 * MS;
/// After the faults stop: membership must agree within this, then the
/// owners' data within the second bound.
const MEMBERSHIP_QUIET_MAX: u64 = 30_000 * MS;
const DATA_QUIET_MAX: u64 = 45_000 * MS;
/// Then every unsettled slot whose keepers are all present must settle
/// (writes to it are accepted again) within this.
const SETTLE_QUIET_MAX: u64 = 30_000 * MS;
/// In a quiet period, a node still on the minority side this long after
/// the partitions healed is stuck: the members of its table it cannot see
/// crashed for good. The operator's remedy (README) is to restart it.
const STUCK_MINORITY_AFTER: u64 = 10_000 * MS;

/// `majority::settle_ms` for the simulated gossip timing.
fn settle_window() -> u64 {
    let t = timing();
    settle_ms(t.probe_period.as_millis() as u64, t.suspect.as_millis() as u64)
}

fn timing() -> GossipTiming {
    GossipTiming {
        probe_period: Duration::from_millis(200),
        probe_rtt: Duration::from_millis(100),
        suspect: Duration::from_millis(400),
        interval: Duration::from_millis(100),
    }
}

/// Counters: keys clients only ever INCR (checked exactly).
const COUNTERS: usize = 4;

fn counter_key(i: usize) -> Vec<u8> {
    format!("ctr:{i}").into_bytes()
}

/// The keys clients write: plain keys, a few sharing a hash tag, and the
/// counters.
fn key_universe() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..16).map(|i| format!("key:{i}").into_bytes()).collect();
    for tag in 0..4 {
        for part in ["a", "b"] {
            keys.push(format!("{{user{tag}}}.{part}").into_bytes());
        }
    }
    // Last: `client_op` picks plain keys among the others.
    keys.extend((0..COUNTERS).map(counter_key));
    keys
}

// ---- randomness -------------------------------------------------------------------

/// splitmix64: the one source of randomness of a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---- the model ------------------------------------------------------------------

type Gossip = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;

#[derive(Debug, Clone)]
enum ClientOp {
    Set(u64),
    Del,
    Incr,
}

/// Peer messages (the TCP side of the cluster port).
#[derive(Debug)]
enum Msg {
    /// A client's write forwarded to the key's primary (`RC.FWD`), under
    /// the sender's table, with its deadline on the sender's monotonic
    /// clock.
    Fwd {
        id: u64,
        key: Vec<u8>,
        op: ClientOp,
        table: u64,
        deadline: Deadline,
    },
    /// Its answer: `retry` for a refusal for the moment (`-TRYAGAIN`: not
    /// run); otherwise it ran, or was refused for good.
    FwdReply {
        id: u64,
        retry: bool,
    },
    /// One `RC.PUT`/`RC.DEL`; `write` is set when the primary waits for it.
    Repl {
        write: Option<u64>,
        req: Vec<u8>,
    },
    ReplAck {
        write: u64,
    },
    /// Slot copies (their keys and tombstones), each followed by
    /// `RC.SLOTDONE`: one message for many slots to keep runs cheap.
    Copy {
        id: u64,
        slots: Vec<u16>,
        reqs: Vec<Vec<u8>>,
        /// Per slot, the sender's keepers (`RC.SLOTDONE`'s).
        keepers: Vec<Vec<String>>,
    },
    CopyDone {
        id: u64,
    },
    DropOk {
        #[allow(dead_code)] // RC.DROPOK deletes nothing at the receiver.
        slots: Vec<u16>,
    },
    /// `RC.SENDING`: which of these slots are still coming to me?
    Sending {
        table: u64,
        slots: Vec<u16>,
    },
    SendingReply {
        slots: Vec<(u16, bool)>,
    },
    /// Anti-entropy: the primary's digest and states of a slot, under its
    /// table (members digest).
    AeOffer {
        slot: u16,
        digest: u64,
        table: u64,
        reqs: Vec<Vec<u8>>,
        /// The slot settled at the primary, its keepers now its owners
        /// (the bit of `RC.DIGESTS`, `cluster::keepers`).
        settled: bool,
        /// The slot is unsettled at the primary: a difference is repaired
        /// at once; else only per `cluster::antientropy::Divergence`.
        unsettled: bool,
    },
    /// The states the other owner had newer, and whether it compared on
    /// the same table (only then does the comparison settle the slot).
    AeReply {
        slot: u16,
        same_table: bool,
        reqs: Vec<Vec<u8>>,
        /// The replier cannot reach the slot's keepers: not settled.
        short: bool,
        /// The slot differed but its repair waits for a second look
        /// (`Divergence`): not compared.
        deferred: bool,
    },
    /// `RC.READ` for a write's fetch (`cluster::settle`).
    Read {
        fetch: u64,
        member: usize,
        key: Vec<u8>,
        /// The asker's members digest (answered only on the same table,
        /// as `net::peer`).
        table: Option<u64>,
    },
    /// Its answer: the key's state as the real reply encodes it.
    ReadReply {
        fetch: u64,
        member: usize,
        state: Vec<u8>,
        /// `PeerError::KeepersShort` (no state).
        short: bool,
    },
    /// `RC.LEAVE`: the sender leaves gracefully (`node::announce_leave`).
    Leave,
}

#[derive(Debug)]
enum Ev {
    Timer {
        node: usize,
        life: u64,
        timer: Timer<NodeIdentity>,
    },
    Packet {
        to: usize,
        bytes: Vec<u8>,
    },
    Announce {
        node: usize,
        life: u64,
    },
    Publish {
        node: usize,
        life: u64,
    },
    Deliver {
        from: usize,
        to: usize,
        to_life: u64,
        msg: Msg,
    },
    WriteTimeout {
        node: usize,
        life: u64,
        write: u64,
    },
    StartCopy {
        node: usize,
        life: u64,
        job: u64,
    },
    CopyTimeout {
        node: usize,
        life: u64,
        id: u64,
    },
    Pull {
        node: usize,
        life: u64,
    },
    AntiEntropy {
        node: usize,
        life: u64,
    },
    FetchTimeout {
        node: usize,
        life: u64,
        fetch: u64,
    },
    /// A member refused a fenced `RC.READ` for the moment: ask again.
    AskAgain {
        node: usize,
        life: u64,
        fetch: u64,
        member: usize,
        key: Vec<u8>,
    },
    /// A leaving node that handed its slots over announces its leave once
    /// the writes it coordinates ended (or at `until`), as `node::hand_over`.
    AnnounceLeave {
        node: usize,
        life: u64,
        until: u64,
    },
    /// A leaving node's process ends (`node.rs`: after its leave spread).
    Exit {
        node: usize,
        life: u64,
    },
    /// A forward refused for the moment or unsent goes again.
    ForwardAgain {
        node: usize,
        life: u64,
        id: u64,
    },
    /// A forward's deadline: the forwarding node stops waiting.
    ForwardGiveUp {
        node: usize,
        life: u64,
        id: u64,
    },
    /// A client's write held because its slot's keepers looked short
    /// right after a table change: runs again once the table moved or
    /// the convergence time passed (`net::exec::fetch::wait_for_table`).
    KeepersWait {
        node: usize,
        life: u64,
        key: Vec<u8>,
        op: ClientOp,
        round: u32,
        table_at: u64,
    },
}

/// Where a write a primary coordinates came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A client of this node.
    Client,
    /// Forward `id` of member `from` (this node itself when it became the
    /// primary of a forward it had sent: `run_as_primary`).
    Forward { from: usize, id: u64 },
}

/// A forward the forwarding node waits for.
#[derive(Debug)]
struct PendingForward {
    key: Vec<u8>,
    op: ClientOp,
    deadline: Deadline,
    /// When it gives up (simulated time).
    until: u64,
    /// Times it was sent again.
    tries: u32,
}

/// Slot copies to one member (queued or in flight). The real shell has a
/// job per slot with several targets; batching per target changes no rule
/// (each slot is confirmed by its copy's answer, then dropped).
#[derive(Debug, Clone)]
struct Job {
    slots: BTreeSet<u16>,
    to: String,
    attempts: u64,
}

/// A slot copy sent and not confirmed yet: its job, and what its target
/// must hold once it confirms (the live keys sent and their versions, as
/// the target's life then).
#[derive(Debug)]
struct InFlight {
    job: u64,
    to: usize,
    to_life: u64,
    live: Vec<(Vec<u8>, u64)>,
}

/// A write waiting for its key's newest state (`cluster::settle`).
#[derive(Debug)]
struct PendingFetch {
    op: ClientOp,
    origin: Origin,
    /// Held once already for keepers that looked short.
    held: bool,
    /// The node's unsettle generation when the fetch began.
    generation: u64,
    fetch: Fetch,
    answered: Vec<bool>,
    short: Vec<bool>,
    /// Times this write was held (bounded, as `net::exec`).
    round: u32,
}

/// A primary's anti-entropy comparison of one slot (`net::antientropy`'s
/// round): the members still to answer (co-owners, and keepers that are
/// not owners), and those that matched on the same table.
#[derive(Debug)]
struct PendingAe {
    generation: u64,
    left: BTreeSet<usize>,
    compared: BTreeSet<usize>,
}

/// A write waiting for its quorum at the primary.
#[derive(Debug)]
struct PendingWrite {
    key: Vec<u8>,
    version: u64,
    deleted: bool,
    holders: BTreeSet<usize>,
    need: usize,
    /// What an INCR answered.
    incr: Option<u64>,
    origin: Origin,
}

struct Node {
    name: String,
    gossip_addr: SocketAddr,
    client_addr: SocketAddr,
    /// Bumped on every start and crash: events of an earlier life are void.
    life: u64,
    up: bool,
    started: bool,
    generation: u64,
    foca: Option<Gossip>,
    rt: AccumulatingRuntime<NodeIdentity>,
    store: Store,
    topo: Rc<Topology>,
    epoch: u64,
    digest: u64,
    publish_pending: bool,
    /// Gossip packets sent since the last quiet period began (diagnostics).
    packets_sent: u64,
    // Rebalancing (the shell's state).
    /// The real lifecycle machine (`cluster::lifecycle`).
    phase: Lifecycle,
    /// When this life started (the join timeout counts from it).
    started_at: u64,
    /// Announce ticks so far and whether foca is connected
    /// (`membership::announce_targets`, `connected_after`).
    announce_tick: u64,
    connected: bool,
    imports: BTreeMap<u16, String>,
    received: BTreeSet<u16>,
    planned: u64,
    /// (slot, member index) copies still to confirm (`RC.SENDING`).
    outgoing: BTreeSet<(u16, usize)>,
    jobs: BTreeMap<u64, Job>,
    /// In flight: copy id -> job id.
    flying: BTreeMap<u64, InFlight>,
    /// Per slot sent: whether this node lost it, and the other former
    /// owners (indices) that did.
    after_copy: BTreeMap<u16, (bool, Vec<usize>)>,
    changed_at: u64,
    pull_scheduled: bool,
    writes: BTreeMap<u64, PendingWrite>,
    ae_shard: usize,
    /// On the minority side of a partition (`cluster::majority`): keeps
    /// its table, refuses writes. Members seen of its table's.
    minority: Option<(u32, u32)>,
    /// Forwards sent and waiting for their answer.
    forwards: BTreeMap<u64, PendingForward>,
    /// Per sending member and its life: how late its forwards arrive
    /// (`protocol::Lateness`, one per peer connection in the shell).
    lateness: BTreeMap<(usize, u64), Lateness>,
    /// This life's monotonic clock: `now` plus an offset drawn at start.
    mono_offset_ms: u64,
    /// Left gracefully; its process ends at the `Ev::Exit` due.
    leaving: bool,
    view: View,
    /// The shell's `RebalanceState`, for its unsettled slots, marking
    /// generation and keys fetched since (its imports and keepers are
    /// still kept here).
    rb: RebalanceState,
    fetches: BTreeMap<u64, PendingFetch>,
    /// Slot -> (generation, co-owners still to answer) of this node's
    /// anti-entropy comparisons as primary.
    ae_pending: BTreeMap<u16, PendingAe>,
    /// Who holds each owned slot's writes (`RebalanceState::keepers`).
    keepers: Keepers,
    /// Settled slots that differed from an offer once, and the (table
    /// epoch, life) they were seen under (`net::antientropy` keeps them at
    /// the primary and forgets them on a table change; here the co-owner
    /// decides, per offering primary).
    divergence: (Divergence, u64, u64),
}

impl Node {
    fn new(i: usize) -> Node {
        let gossip_addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 17000));
        let client_addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 7000));
        let name = format!("n{i}");
        let me = identity(&name, 0, gossip_addr, client_addr);
        let topo = topology_of(&me, &[], 1, RF, VNODES);
        Node {
            name,
            gossip_addr,
            client_addr,
            life: 0,
            up: false,
            started: false,
            generation: 0,
            foca: None,
            rt: AccumulatingRuntime::new(),
            store: Store::new(),
            digest: members_digest(&topo),
            topo: Rc::new(topo),
            epoch: 1,
            publish_pending: false,
            packets_sent: 0,
            phase: Lifecycle::new(true),
            started_at: 0,
            announce_tick: 0,
            connected: false,
            imports: BTreeMap::new(),
            received: BTreeSet::new(),
            planned: 0,
            outgoing: BTreeSet::new(),
            jobs: BTreeMap::new(),
            flying: BTreeMap::new(),
            after_copy: BTreeMap::new(),
            changed_at: 0,
            pull_scheduled: false,
            writes: BTreeMap::new(),
            ae_shard: 0,
            minority: None,
            forwards: BTreeMap::new(),
            lateness: BTreeMap::new(),
            mono_offset_ms: 0,
            leaving: false,
            view: View::new(&format!("n{i}")),
            rb: RebalanceState::default(),
            fetches: BTreeMap::new(),
            ae_pending: BTreeMap::new(),
            keepers: Keepers::default(),
            divergence: (Divergence::default(), 0, 0),
        }
    }
}

impl Node {
    /// Whether its table changed recently enough to count as converging
    /// (`Shared::converging_until_ms`).
    fn converging(&self, now: u64) -> bool {
        let t = timing();
        let detection = (t.probe_period + t.probe_rtt + t.suspect).as_millis() as u64;
        now_ms(now) < converging_until_ms(now_ms(self.changed_at), detection)
    }

    /// `RebalanceState::settle_compared`: a primary's slot compared with
    /// every co-owner (and the members in `compared`) settles only if
    /// they include enough keepers.
    fn settle_compared(&mut self, slot: u16, generation: u64, compared: &BTreeSet<usize>, sabotage: Sabotage) {
        let topo = self.topo.clone();
        let matched = |name: &str| compared.iter().any(|&c| format!("n{c}") == name);
        if sabotage != Sabotage::NoKeepers && !self.keepers.covered_by(slot, &topo, matched, W) {
            return;
        }
        if self.rb.settle(slot, generation) {
            self.keepers.settled(slot, &topo);
        }
    }
}

fn identity(name: &str, generation: u64, gossip_addr: SocketAddr, client_addr: SocketAddr) -> NodeIdentity {
    NodeIdentity { name: name.to_string(), generation, gossip_addr, client_addr, weight: 1 }
}

fn index_of(name: &str) -> usize {
    name[1..].parse().expect("node names are n<index>")
}

/// The latest acknowledged write of a key.
#[derive(Debug, Clone)]
struct Acked {
    version: u64,
    deleted: bool,
    /// Nodes that held it when it was acknowledged.
    holders: usize,
    /// Owners or holders of the key that crashed since.
    crashed: BTreeSet<usize>,
}

impl Acked {
    /// Loss is allowed once as many nodes that could hold it crashed as
    /// held it when it was acknowledged (two, with W = 2 of 3 owners; one
    /// when the table had a single member and W was capped to 1).
    fn excused(&self) -> bool {
        self.crashed.len() >= self.holders.min(2)
    }
}

/// What the checker knows about every write.
#[derive(Default)]
struct Oracle {
    /// (key, version) -> value written (None: a delete).
    written: BTreeMap<(Vec<u8>, u64), Option<Vec<u8>>>,
    acked: BTreeMap<Vec<u8>, Acked>,
    /// Version each node last held for a key (monotonic until the node
    /// crashes or drops the slot).
    seen: BTreeMap<(usize, Vec<u8>), u64>,
    writes_acked: u64,
    writes_failed: u64,
    /// (counter, value an acknowledged INCR answered) -> its holders: in a
    /// linearizable counter no two acknowledged INCRs answer the same
    /// value, unless every holder of the first crashed before the second
    /// ran (then the count may legitimately restart lower).
    incr_answers: BTreeMap<(Vec<u8>, u64), Acked>,
}

/// Counters reported at the end of a run.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    steps: u64,
    packets: u64,
    packets_lost: u64,
    msgs: u64,
    msgs_lost: u64,
    crashes: u64,
    restarts: u64,
    joins: u64,
    partitions: u64,
    table_changes: u64,
    copies: u64,
    drops: u64,
    repairs: u64,
    /// Offers of a settled slot that differed, left for a second look.
    repairs_deferred: u64,
    converged: u64,
    excused: u64,
    /// Client writes refused by the join gate.
    refused_awaiting_seed: u64,
    /// Writes refused on the minority side of a partition.
    refused_minority: u64,
    /// Nodes restarted in a quiet period because they stayed in a
    /// minority whose missing members had crashed for good.
    stuck_restarts: u64,
    /// Writes that fetched their key first, and those refused by the
    /// fetch's verdict.
    fetches: u64,
    fetch_refusals: u64,
    /// Acknowledged INCRs of the counters.
    counter_incrs: u64,
    /// Writes refused because too few of their slot's keepers were members.
    keeper_refusals: u64,
    /// Graceful leaves (`RC.LEAVE`, then foca's leave).
    leaves: u64,
    /// At the end of quiet periods: slots of the key universe still
    /// refusing writes because too many of their keepers crashed (gone for
    /// good, or restarted empty): by design, they wait for one to return.
    blocked_for_good: u64,
    /// Members declared down (and rejoining) during quiet periods: false
    /// suspicions from delay spikes alone.
    quiet_rejoins: u64,
    /// Forwards sent again (refused for the moment, or unsent), read
    /// after their deadline, and given up at it.
    forwards_again: u64,
    forwards_expired: u64,
    forwards_given_up: u64,
    /// Client writes held once for short keepers right after a change.
    keeper_holds: u64,
    /// Fetches for a member's forward whose verdict refused the write.
    forward_fetch_refusals: u64,
}

struct Sim {
    rng: Rng,
    now: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    key: PacketKey,
    seeds: Vec<SocketAddr>,
    /// Group of each node while partitioned.
    partition: Option<Vec<u8>>,
    loss: f64,
    msg_loss: f64,
    delay_max: u64,
    /// In a quiet period (`converge`): no faults, no writes.
    quiet: bool,
    keys: Vec<Vec<u8>>,
    /// Store shards (ascending) holding a key of the universe, with those keys' slots.
    key_shards: Vec<(usize, Vec<u16>)>,
    /// Whether a slot holds any key of the universe (no other slot ever
    /// holds data, so copying or dropping it is skipped: it costs time and
    /// changes nothing).
    data_slot: Vec<bool>,
    oracle: Oracle,
    touched: Vec<(usize, Vec<u8>)>,
    trace: VecDeque<String>,
    trace_len: usize,
    next_id: u64,
    stats: Stats,
    /// Sabotage switches for checking that the invariants can fail.
    sabotage: Sabotage,
    /// Whether two acknowledged INCRs answering the same value fail the
    /// run (off in a few sabotage checks only).
    check_counters: bool,
    /// Whether the nemesis partitions the network.
    partitions: bool,
}

/// What a run checks and which faults it draws.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Two acknowledged INCRs answering the same value fail the run.
    counters: bool,
    /// The nemesis partitions the network (else a partition draw does
    /// nothing, so the other draws stay as they were).
    partitions: bool,
}

impl Mode {
    /// Every fault, partitions included; counters exact.
    const ALL_FAULTS: Mode = Mode { counters: true, partitions: true };
    /// Crashes, restarts, joins, leaves and message loss; counters exact.
    const EXACT_COUNTERS: Mode = Mode { counters: true, partitions: false };
}

/// Ways to break the model on purpose (see `sabotaged_runs_are_caught`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Sabotage {
    #[default]
    None,
    /// Rebalancing plans but sends nothing (drops still happen), and
    /// slots held without being owned are not handed off either (the
    /// hand-off alone repairs what missing copies leave).
    NoCopies,
    /// Replicas apply a replicated state even when it is older.
    ApplyOlder,
    /// Anti-entropy never runs.
    NoAntiEntropy,
    /// A replica acknowledges without applying.
    AckWithoutApply,
    /// The table keeps only the primary for every slot (one owner).
    OneOwner,
    /// Replicas store a value other than the one sent.
    CorruptValue,
    /// Nodes never announce themselves: no cluster forms.
    NoAnnounce,
    /// Slot copies and anti-entropy both skipped.
    NoCopiesNoAntiEntropy,
    /// A leaving node keeps coordinating by its old table until it exits
    /// (no `node::hand_over`).
    NoHandover,
    /// No keepers rule: a slot whose keepers are across a partition (or
    /// failed together) takes writes, and settles, on what is left.
    NoKeepers,
    /// Anti-entropy defers every settled slot's repair for ever (a
    /// `Divergence` that never says "now").
    NeverRepairSettled,
}

impl Sabotage {
    const ALL: [Sabotage; 11] = [
        Sabotage::NoCopies,
        Sabotage::ApplyOlder,
        Sabotage::NoAntiEntropy,
        Sabotage::AckWithoutApply,
        Sabotage::OneOwner,
        Sabotage::CorruptValue,
        Sabotage::NoAnnounce,
        Sabotage::NoCopiesNoAntiEntropy,
        Sabotage::NoHandover,
        Sabotage::NoKeepers,
        Sabotage::NeverRepairSettled,
    ];

    /// How a sabotaged run is checked: the missing handover is checked
    /// where leaves are dense, without partitions.
    fn mode(self) -> Mode {
        match self {
            Sabotage::NoHandover => Mode::EXACT_COUNTERS,
            _ => Mode::ALL_FAULTS,
        }
    }

    /// Replicas per slot: one owner under `OneOwner`.
    fn replicas(self) -> usize {
        if self == Sabotage::OneOwner { 1 } else { RF }
    }

    fn no_copies(self) -> bool {
        matches!(self, Sabotage::NoCopies | Sabotage::NoCopiesNoAntiEntropy)
    }

    fn no_anti_entropy(self) -> bool {
        matches!(self, Sabotage::NoAntiEntropy | Sabotage::NoCopiesNoAntiEntropy)
    }
}

const TRACE_LEN: usize = 40;

fn now_ms(t: u64) -> u64 {
    BASE_MS + t / MS
}

fn snapshot(store: &Store, slot: u16, now_ms: u64) -> Vec<(Vec<u8>, u64, Vec<u8>)> {
    let (mut live, mut dead) = (Vec::new(), Vec::new());
    store.visit_slot(
        slot,
        now_ms,
        |e| {
            let mut b = BytesMut::new();
            encode_put(&mut b, e);
            live.push((e.key().to_vec(), e.version(), b.to_vec()));
        },
        |k, v| {
            let mut b = BytesMut::new();
            encode_del(&mut b, k, v);
            dead.push((k.to_vec(), v, b.to_vec()));
        },
    );
    live.extend(dead);
    // The store's tombstone map iterates in a random order; a run must not.
    live.sort();
    live
}

/// Parses one `RC.PUT`/`RC.DEL` request: (key, version).
fn parse_req(req: &[u8]) -> (Vec<u8>, u64) {
    let mut p = RequestParser::new();
    assert_eq!(p.parse(req, &Limits::default(), true), Ok(true), "replication request does not parse");
    let args = p.args(req);
    let op = parse_op(&args).expect("RC.PUT or RC.DEL");
    (op.key.to_vec(), op.version)
}

impl Sim {
    fn new(seed: u64, sabotage: Sabotage) -> Sim {
        let mut rng = Rng(seed ^ 0x005E_ED0F_C1A5_7E12);
        let keys = key_universe();
        let mut shards: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
        for k in &keys {
            let s = key_slot(k);
            shards.entry(usize::from(s) % SHARD_COUNT).or_default().insert(s);
        }
        let mut data_slot = vec![false; usize::from(SLOT_COUNT)];
        for k in &keys {
            data_slot[usize::from(key_slot(k))] = true;
        }
        let key_shards = shards.into_iter().map(|(sh, s)| (sh, s.into_iter().collect())).collect();
        let loss = [0.0, 0.01, 0.05, 0.15][rng.below(4) as usize];
        let msg_loss = [0.0, 0.005, 0.02][rng.below(3) as usize];
        let delay_max = [2 * MS, 10 * MS, 60 * MS][rng.below(3) as usize];
        let nodes = (0..MAX_NODES).map(Node::new).collect::<Vec<_>>();
        let seeds = vec![nodes[0].gossip_addr, nodes[1].gossip_addr];
        Sim {
            rng,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            key: PacketKey::new(
                "sim",
                Some("secret"),
                ClusterSettings {
                    replicas: RF as u32,
                    vnodes: VNODES,
                    write_quorum: W,
                    read_quorum: 1,
                    tombstone_grace_s: 600,
                    partition_available: false,
                },
            ),
            seeds,
            partition: None,
            loss,
            msg_loss,
            delay_max,
            quiet: false,
            keys,
            key_shards,
            data_slot,
            oracle: Oracle::default(),
            touched: Vec::new(),
            trace: VecDeque::new(),
            trace_len: env_u64("RINGCACHE_SIM_TRACE").map_or(TRACE_LEN, |n| n as usize),
            next_id: 0,
            stats: Stats::default(),
            sabotage,
            check_counters: false,
            partitions: true,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn log(&mut self, text: String) {
        if self.trace.len() >= self.trace_len {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("[{:>9.3}ms] {text}", self.now as f64 / MS as f64));
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert((t, self.seq), ev);
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_some_and(|g| g[a] != g[b])
    }

    fn delay(&mut self) -> u64 {
        // Mostly short, sometimes long (a queue somewhere).
        if self.rng.chance(0.05) {
            self.rng.range(self.delay_max, self.delay_max * 5)
        } else {
            self.rng.range(50, self.delay_max)
        }
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].up).collect()
    }

    // ---- network ------------------------------------------------------------------

    fn send_packet(&mut self, from: usize, to_addr: SocketAddr, bytes: Vec<u8>) {
        self.stats.packets += 1;
        self.nodes[from].packets_sent += 1;
        let Some(to) = self.nodes.iter().position(|n| n.gossip_addr == to_addr) else { return };
        if self.cut(from, to) || self.rng.chance(self.loss) {
            self.stats.packets_lost += 1;
            return;
        }
        let d = self.delay();
        self.at(self.now + d, Ev::Packet { to, bytes });
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.stats.msgs += 1;
        if !self.nodes[to].up || self.cut(from, to) || self.rng.chance(self.msg_loss) {
            self.stats.msgs_lost += 1;
            return;
        }
        let d = self.delay();
        let to_life = self.nodes[to].life;
        self.at(self.now + d, Ev::Deliver { from, to, to_life, msg });
    }

    // ---- membership (net::gossip) ------------------------------------------------

    fn start(&mut self, i: usize) {
        let now_ms = now_ms(self.now);
        let mono_offset = self.rng.below(1 << 40);
        let n = &mut self.nodes[i];
        let rejoin = n.started;
        n.life += 1;
        n.up = true;
        n.started = true;
        // Grows across restarts (the real node uses unix ms).
        n.generation = (n.generation + 1).max(now_ms);
        let me = identity(&n.name, n.generation, n.gossip_addr, n.client_addr);
        let rng = StdRng::seed_from_u64(self.rng.next());
        n.foca = Some(Foca::new(me.clone(), foca_config(&timing()), rng, PostcardCodec));
        n.rt = AccumulatingRuntime::new();
        n.connected = false;
        n.started_at = self.now;
        n.store = Store::new();
        n.store.set_node_id(xxhash_rust::xxh3::xxh3_64(n.name.as_bytes()));
        let topo = topology_of(&me, &[], 1, RF, VNODES);
        n.digest = members_digest(&topo);
        n.topo = Rc::new(topo);
        n.epoch = 1;
        n.publish_pending = false;
        n.phase = Lifecycle::new(true);
        n.imports.clear();
        n.received.clear();
        n.planned = 0;
        n.outgoing.clear();
        n.jobs.clear();
        n.flying.clear();
        n.after_copy.clear();
        n.pull_scheduled = false;
        n.writes.clear();
        n.ae_shard = self.key_shards[0].0;
        n.minority = None;
        n.forwards.clear();
        n.lateness.clear();
        n.mono_offset_ms = mono_offset;
        n.leaving = false;
        n.view = View::new(&n.name);
        n.rb = RebalanceState::default();
        n.fetches.clear();
        n.ae_pending.clear();
        n.keepers = Keepers::default();
        let life = n.life;
        if rejoin {
            self.stats.restarts += 1;
        } else {
            self.stats.joins += 1;
        }
        self.log(format!("{} starts (generation {})", self.nodes[i].name, self.nodes[i].generation));
        self.at(self.now, Ev::Announce { node: i, life });
        self.at(self.now + AE_ROUND, Ev::AntiEntropy { node: i, life });
    }

    fn crash(&mut self, i: usize) {
        let now_ms = now_ms(self.now);
        // The acknowledged writes this node could have held lose a copy.
        let topo = self.nodes[i].topo.clone();
        let name = self.nodes[i].name.clone();
        for (key, a) in self.oracle.acked.iter_mut() {
            let held = self.nodes[i].store.with_key(key, now_ms, |k| k.version()) >= a.version;
            if held || topo.table.owns(&name, key_slot(key)) {
                a.crashed.insert(i);
            }
        }
        for ((key, _), a) in self.oracle.incr_answers.iter_mut() {
            let held = self.nodes[i].store.with_key(key, now_ms, |k| k.version()) >= a.version;
            if held || topo.table.owns(&name, key_slot(key)) {
                a.crashed.insert(i);
            }
        }
        self.oracle.seen.retain(|(n, _), _| *n != i);
        let n = &mut self.nodes[i];
        n.up = false;
        n.life += 1;
        n.foca = None;
        n.store = Store::new();
        n.jobs.clear();
        n.flying.clear();
        n.writes.clear();
        n.fetches.clear();
        self.stats.crashes += 1;
        self.log(format!("{name} crashes"));
    }

    fn drain(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let mut packets = Vec::new();
        while let Some((to, data)) = n.rt.to_send() {
            let mut sealed = Vec::with_capacity(data.len() + 20);
            self.key.seal(&data, &mut sealed);
            packets.push((to.gossip_addr, sealed));
        }
        let mut timers = Vec::new();
        while let Some((after, timer)) = n.rt.to_schedule() {
            timers.push((after.as_micros() as u64, timer));
        }
        let mut notes = Vec::new();
        while let Some(note) = n.rt.to_notify() {
            n.connected = connected_after(n.connected, &note);
            notes.push(note);
        }
        let life = n.life;
        for (to, bytes) in packets {
            self.send_packet(i, to, bytes);
        }
        for (after, timer) in timers {
            self.at(self.now + after, Ev::Timer { node: i, life, timer });
        }
        for note in &notes {
            // Declared down: the others moved on without this node (as
            // `net::gossip`).
            if matches!(note, OwnedNotification::Defunct | OwnedNotification::Rejoin(_)) {
                self.nodes[i].rb.unsettle(0..SLOT_COUNT);
                if self.quiet {
                    self.stats.quiet_rejoins += 1;
                }
            }
            let text = match note {
                OwnedNotification::MemberUp(m) => format!("sees {m:?} up"),
                OwnedNotification::MemberDown(m) => format!("sees {m:?} down"),
                OwnedNotification::Rename(a, b) => format!("sees {a:?} renamed {b:?}"),
                OwnedNotification::Active => "is active".into(),
                OwnedNotification::Idle => "is idle".into(),
                OwnedNotification::Defunct => "was declared down".into(),
                OwnedNotification::Rejoin(id) => format!("rejoins as {id:?}"),
            };
            self.log(format!("{} {text}", self.nodes[i].name));
        }
        if !notes.is_empty() && !self.nodes[i].publish_pending {
            self.nodes[i].publish_pending = true;
            self.at(self.now + PUBLISH_DELAY, Ev::Publish { node: i, life });
        }
    }

    fn schedule_publish(&mut self, i: usize) {
        if !self.nodes[i].publish_pending {
            self.nodes[i].publish_pending = true;
            let life = self.nodes[i].life;
            self.at(self.now + PUBLISH_DELAY, Ev::Publish { node: i, life });
        }
    }

    /// A graceful leave as `node.rs` runs it after the drain (not
    /// modelled): the handover (its table gives it no slot, so its clients'
    /// writes go to the next owners; it waits for the writes it still
    /// coordinates), then `RC.LEAVE` to every member, then foca's leave,
    /// then the process ends a moment later.
    fn leave(&mut self, i: usize) {
        self.stats.leaves += 1;
        self.log(format!("{} leaves gracefully", self.nodes[i].name));
        let n = &mut self.nodes[i];
        n.leaving = true;
        if self.sabotage == Sabotage::NoHandover || n.topo.nodes.len() < 2 {
            return self.announce_leave(i);
        }
        n.topo = Rc::new(n.topo.handed_over(self.sabotage.replicas(), VNODES));
        let life = n.life;
        self.at(self.now, Ev::AnnounceLeave { node: i, life, until: self.now + 2 * WRITE_TIMEOUT });
    }

    fn announce_leave(&mut self, i: usize) {
        // `RC.LEAVE` only after a drain that copied every slot, and not
        // from a minority (`node.rs`); the drain itself is not modelled:
        // it would finish if every other member of its table is up and
        // reachable.
        let drained = self.nodes[i].topo.nodes.iter().all(|m| {
            let j = index_of(&m.name);
            j == i || (self.nodes[j].up && !self.cut(i, j))
        });
        if drained && self.nodes[i].minority.is_none() {
            let others: Vec<usize> = self.up_nodes().into_iter().filter(|&j| j != i).collect();
            for j in others {
                self.send(i, j, Msg::Leave);
            }
        }
        let n = &mut self.nodes[i];
        if let Some(foca) = n.foca.as_mut() {
            let _ = foca.leave_cluster(&mut n.rt);
        }
        let life = n.life;
        self.drain(i);
        self.at(self.now + LEAVE_GRACE, Ev::Exit { node: i, life });
    }

    fn announce(&mut self, i: usize) {
        // The gossip driver's announce tick also ends the wait for a seed.
        if JOIN_TIMEOUT.is_some_and(|t| self.now - self.nodes[i].started_at >= t)
            && self.nodes[i].phase.on(Event::JoinTimeout) == (Phase::AwaitingSeed, Phase::Alone)
        {
            let text = format!("{} serves alone: no seed answered within the join timeout", self.nodes[i].name);
            self.log(text);
        }
        // As the driver's absence tick: a leave past the window is
        // forgotten, and a member of that name counts again.
        if self.nodes[i].view.expire_departed(self.now / MS, settle_window()) {
            self.schedule_publish(i);
        }
        let n = &mut self.nodes[i];
        let Some(foca) = n.foca.as_mut() else { return };
        if self.sabotage == Sabotage::NoAnnounce {
            return;
        }
        // What net::gossip's driver does on its announce tick.
        let active: Vec<SocketAddr> = foca.iter_members().map(|m| m.id().gossip_addr).collect();
        let down: Vec<SocketAddr> = foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| m.id().gossip_addr)
            .collect();
        n.announce_tick += 1;
        for addr in announce_targets(n.gossip_addr, &self.seeds, &active, &down, n.connected, n.announce_tick) {
            let _ = foca.announce(NodeIdentity::seed(addr), &mut n.rt);
        }
        let life = n.life;
        self.drain(i);
        self.at(self.now + ANNOUNCE_PERIOD, Ev::Announce { node: i, life });
    }

    /// `gossip::Driver::publish` + `rebalance::before_publish` + the
    /// rebalance task's reaction to a new table.
    fn publish(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.publish_pending = false;
        let foca = n.foca.as_ref().expect("up");
        let me = foca.identity().clone();
        let (now_ms, settle) = (self.now / MS, settle_window());
        // Members that announced their leave are gone (as `net::gossip`).
        let members: Vec<NodeIdentity> = foca
            .iter_members()
            .map(|m| m.id().clone())
            .filter(|m| !n.view.departed(&m.name, m.generation, now_ms, settle))
            .collect();
        let replicas = self.sabotage.replicas();
        let (topo, fresh) = memo_topology(&me, &members, n.epoch, replicas);
        // Only a side that sees most of its table changes it (as
        // `net::gossip`'s publish, with the same function).
        let decision =
            n.view.decide(PartitionMode::Majority, topo.nodes.iter().map(|m| m.name.as_str()), now_ms, settle);
        let was = n.minority;
        n.minority = match decision {
            Decision::Adopt => None,
            Decision::Minority { seen, of } => Some((seen as u32, of as u32)),
        };
        if n.minority.is_some() != was.is_some() {
            let text = format!("{} {decision:?}", self.nodes[i].name);
            self.log(text);
        }
        let n = &mut self.nodes[i];
        if n.minority.is_some() {
            return;
        }
        let digest = members_digest(&topo);
        if digest == n.digest {
            return;
        }
        n.epoch += 1;
        n.digest = digest;
        self.stats.table_changes += 1;
        if fresh {
            self.check_table(i, &topo);
        }
        let names: Vec<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
        let text = format!("{} publishes epoch {} members {names:?}", self.nodes[i].name, self.nodes[i].epoch);
        self.log(text);
        let new = topo;
        let n = &mut self.nodes[i];
        if n.leaving && self.sabotage != Sabotage::NoHandover {
            // Handed over (`Shared::set_topology`): no slot for this node;
            // the rebalance task plans nothing while it drains.
            n.topo = Rc::new(new.handed_over(replicas, VNODES));
            return;
        }
        // before_publish
        let last = n.topo.clone();
        let newcomer = n.phase.plans_as_newcomer(last.nodes.len() == 1);
        let old = effective_old(n, newcomer, &last, &new, replicas);
        expect_imports(n, newcomer, &old, &new, replicas);
        let graceful: Vec<&str> = last
            .nodes
            .iter()
            .map(|m| m.name.as_str())
            .filter(|m| !new.nodes.iter().any(|x| x.name == *m) && n.view.departed(m, 0, now_ms, settle))
            .collect();
        n.keepers.on_table(&old, &new, &graceful, newcomer);
        let changed = owners_changed(&last, &new);
        if !changed.is_empty() {
            n.rb.unsettle(changed);
        }
        n.topo = new.clone();
        if new.nodes.len() > 1 {
            n.phase.met();
        }
        n.changed_at = self.now;
        // The rebalance task plans for the new table.
        let me = n.name.clone();
        let p = memo_plan(&old, &new, &me, replicas);
        let lost: BTreeSet<u16> = p.drops.iter().copied().collect();
        let mut sends = p.sends.clone();
        let established = !newcomer;
        // New members, and members back under a new generation (restarted
        // before they were declared down): as net/rebalance.rs, with the
        // same planner (`add_newcomer_copies`).
        let is_new =
            |m: &&NodeInfo| last.nodes.iter().find(|o| o.name == m.name).is_none_or(|o| o.generation != m.generation);
        for m in new.nodes.iter().filter(|m| established && m.name != me).filter(is_new) {
            let before = without(&new, &m.name, replicas);
            add_newcomer_copies(&mut sends, &before.table, &new.table, &me, &m.name);
        }
        let mut jobs: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for s in sends {
            let losers: Vec<usize> = old
                .table
                .owners(s.slot)
                .iter()
                .map(|&k| old.table.members[usize::from(k)].name.as_str())
                .filter(|m| *m != me && new.table.member_index(m).is_some() && !new.table.owns(m, s.slot))
                .map(index_of)
                .collect();
            n.after_copy.insert(s.slot, (lost.contains(&s.slot), losers));
            for t in &s.to {
                n.outgoing.insert((s.slot, index_of(t)));
            }
            for t in s.to {
                jobs.entry(t).or_default().insert(s.slot);
            }
        }
        n.planned = members_digest(&new);
        let life = n.life;
        let imports = !n.imports.is_empty();
        for (to, slots) in jobs {
            let id = self.id();
            self.nodes[i].jobs.insert(id, Job { slots, to, attempts: 0 });
            self.at(self.now, Ev::StartCopy { node: i, life, job: id });
        }
        self.check_joining(i);
        if imports && !self.nodes[i].pull_scheduled {
            self.nodes[i].pull_scheduled = true;
            self.at(self.now + PULL_AFTER, Ev::Pull { node: i, life });
        }
    }

    /// Every slot has min(N, members) distinct owners, and this node is a member.
    fn check_table(&self, i: usize, t: &Topology) {
        let want = RF.min(t.table.members.len());
        if t.table.member_index(&self.nodes[i].name).is_none() {
            self.fail(format!("{}'s table lacks itself", self.nodes[i].name));
        }
        for slot in 0..SLOT_COUNT {
            let o = t.table.owners(slot);
            let distinct = o.iter().enumerate().all(|(k, a)| !o[..k].contains(a));
            if o.len() != want || !distinct {
                self.fail(format!(
                    "{}'s table: slot {slot} has owners {o:?}, expected {want} distinct of {} members",
                    self.nodes[i].name,
                    t.table.members.len()
                ));
            }
        }
    }

    fn check_joining(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.phase.phase() == Phase::Joining && n.topo.nodes.len() > 1 && n.imports.is_empty() {
            n.phase.on(Event::SlotsArrived);
            n.received.clear();
        }
    }

    // ---- rebalancing (net::rebalance) -------------------------------------------

    fn start_copy(&mut self, i: usize, job_id: u64) {
        let now_ms = now_ms(self.now);
        let n = &mut self.nodes[i];
        let Some(job) = n.jobs.get_mut(&job_id) else { return };
        let topo = n.topo.clone();
        let to = job.to.clone();
        // A newer table may have made some copies pointless.
        job.slots.retain(|&slot| {
            let keep = topo.table.owns(&to, slot);
            if !keep {
                n.outgoing.remove(&(slot, index_of(&to)));
            }
            keep
        });
        if job.slots.is_empty() {
            n.jobs.remove(&job_id);
            return;
        }
        let slots: Vec<u16> = job.slots.iter().copied().collect();
        let mut reqs = Vec::new();
        let mut live = Vec::new();
        for &slot in slots.iter().filter(|&&s| self.data_slot[usize::from(s)]) {
            reqs.extend(snapshot(&n.store, slot, now_ms).into_iter().map(|(_, _, r)| r));
            n.store.visit_slot(slot, now_ms, |e| live.push((e.key().to_vec(), e.version())), |_, _| {});
        }
        let id = self.id();
        let life = self.nodes[i].life;
        let (to_i, to_life) = (index_of(&to), self.nodes[index_of(&to)].life);
        self.nodes[i].flying.insert(id, InFlight { job: job_id, to: to_i, to_life, live });
        self.stats.copies += slots.len() as u64;
        self.log(format!("{} copies {} slots ({} keys) to {to}", self.nodes[i].name, slots.len(), reqs.len()));
        if self.sabotage.no_copies() {
            // Broken on purpose: the target "confirms" a copy never sent.
            self.at(self.now, Ev::Deliver { from: index_of(&to), to: i, to_life: life, msg: Msg::CopyDone { id } });
        } else {
            let n = &self.nodes[i];
            let keepers = slots
                .iter()
                .map(|&s| n.keepers.for_copy(s).unwrap_or_default().iter().map(|k| k.to_string()).collect())
                .collect();
            self.send(i, index_of(&to), Msg::Copy { id, slots, reqs, keepers });
        }
        self.at(self.now + CONFIRM_TIMEOUT, Ev::CopyTimeout { node: i, life, id });
    }

    fn copy_done(&mut self, i: usize, id: u64) {
        let n = &mut self.nodes[i];
        let Some(InFlight { job: job_id, to, to_life, live }) = n.flying.remove(&id) else { return };
        // A confirmed copy delivered what it sent (unless its target
        // restarted since: a new life holds none of it).
        if self.life_ok(to, to_life) {
            let now_ms = now_ms(self.now);
            for (key, version) in &live {
                let held = self.nodes[to].store.with_key(key, now_ms, |k| k.version());
                if held < *version {
                    self.fail(format!(
                        "{} confirmed a copy of {} v{version} it does not hold (v{held}), sent by {}",
                        self.nodes[to].name,
                        String::from_utf8_lossy(key),
                        self.nodes[i].name
                    ));
                }
            }
        }
        let n = &mut self.nodes[i];
        let Some(job) = n.jobs.remove(&job_id) else { return };
        let mut drop_here = Vec::new();
        let mut drop_ok: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
        let to = index_of(&job.to);
        for &slot in &job.slots {
            n.outgoing.remove(&(slot, to));
            let pending_same = n.jobs.values().any(|j| j.slots.contains(&slot));
            if !pending_same && let Some((mine, losers)) = n.after_copy.remove(&slot) {
                if mine {
                    drop_here.push(slot);
                }
                for l in losers {
                    drop_ok.entry(l).or_default().push(slot);
                }
            }
        }
        for slot in drop_here {
            self.drop_ok(i, slot);
        }
        for (l, slots) in drop_ok {
            self.send(i, l, Msg::DropOk { slots });
        }
    }

    fn copy_timeout(&mut self, i: usize, id: u64) {
        let n = &mut self.nodes[i];
        let Some(InFlight { job: job_id, .. }) = n.flying.remove(&id) else { return };
        let Some(job) = n.jobs.get_mut(&job_id) else { return };
        job.attempts += 1;
        let delay = RETRY_DELAY * job.attempts.min(10);
        let life = n.life;
        self.at(self.now + delay, Ev::StartCopy { node: i, life, job: job_id });
    }

    fn drop_ok(&mut self, i: usize, slot: u16) {
        let n = &mut self.nodes[i];
        if n.topo.table.owners(slot).contains(&n.topo.me) {
            return;
        }
        self.stats.drops += 1;
        if !self.data_slot[usize::from(slot)] {
            return;
        }
        n.store.drop_slot(slot);
        for k in self.keys.iter().filter(|k| key_slot(k) == slot) {
            self.oracle.seen.remove(&(i, k.clone()));
        }
        self.log(format!("{} drops slot {slot}", self.nodes[i].name));
    }

    fn pull(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.pull_scheduled = false;
        if n.imports.is_empty() {
            return;
        }
        if self.now.saturating_sub(n.changed_at) > IMPORT_MAX {
            // Liveness: with no faults, a sender that is up and a member
            // sends what it owes well within the limit.
            let n = &self.nodes[i];
            let open: Vec<(u16, String)> = n
                .imports
                .iter()
                .filter(|(_, from)| n.topo.table.member_index(from).is_some())
                .filter(|(_, from)| self.nodes[index_of(from)].up)
                .map(|(&slot, from)| (slot, from.clone()))
                .take(4)
                .collect();
            if self.quiet && !open.is_empty() {
                self.fail(format!(
                    "{} gave up imports its senders never sent in a quiet period, e.g. {open:?}",
                    self.nodes[i].name
                ));
            }
            let n = &mut self.nodes[i];
            n.imports.clear();
            self.check_joining(i);
            return;
        }
        let life = n.life;
        if self.now.saturating_sub(n.changed_at) >= PULL_AFTER {
            let mut by: BTreeMap<String, Vec<u16>> = BTreeMap::new();
            for (&slot, from) in &n.imports {
                by.entry(from.clone()).or_default().push(slot);
            }
            let table = members_digest(&n.topo);
            for (from, slots) in by {
                if self.nodes[i].topo.table.member_index(&from).is_none() {
                    for s in slots {
                        self.nodes[i].imports.remove(&s);
                    }
                    continue;
                }
                self.send(i, index_of(&from), Msg::Sending { table, slots });
            }
            self.check_joining(i);
        }
        if !self.nodes[i].imports.is_empty() {
            self.nodes[i].pull_scheduled = true;
            self.at(self.now + PULL_EVERY, Ev::Pull { node: i, life });
        }
    }

    // ---- data -------------------------------------------------------------------

    /// Applies one replicated request as `net::peer` does.
    fn apply(&mut self, i: usize, req: &[u8]) {
        let now_ms = now_ms(self.now);
        let mut p = RequestParser::new();
        assert_eq!(p.parse(req, &Limits::default(), true), Ok(true), "replication request does not parse");
        let args = p.args(req);
        let op = parse_op(&args).expect("RC.PUT or RC.DEL");
        let store = &self.nodes[i].store;
        if self.sabotage == Sabotage::ApplyOlder && op.version < store.with_key(op.key, now_ms, |k| k.version()) {
            // Broken on purpose: the older state replaces the newer one
            // (the slot is rebuilt without the key, then the state applied).
            let slot = key_slot(op.key);
            let rest: Vec<Vec<u8>> =
                snapshot(store, slot, now_ms).into_iter().filter(|(k, _, _)| k != op.key).map(|(_, _, r)| r).collect();
            store.drop_slot(slot);
            for r in rest {
                let mut p = RequestParser::new();
                assert_eq!(p.parse(&r, &Limits::default(), true), Ok(true));
                let o = parse_op(&p.args(&r)).expect("op");
                store.with_key(o.key, now_ms, |k| k.apply(o.version, o.incoming));
            }
        }
        let incoming = match op.incoming {
            Incoming::Put { expiry_ms, .. } if self.sabotage == Sabotage::CorruptValue => {
                Incoming::Put { value: b"corrupt", expiry_ms }
            }
            other => other,
        };
        store.with_key(op.key, now_ms, |k| k.apply(op.version, incoming));
        self.touched.push((i, op.key.to_vec()));
    }

    fn client(&mut self, i: usize, key: Vec<u8>, op: ClientOp) {
        // The gate (`net::exec::run`): the join gate, the minority side.
        if let Some(r) = self.refused(i, Origin::Client) {
            self.count_refusal(&r);
            return;
        }
        let slot = key_slot(&key);
        match resend_target(&self.nodes[i].topo, slot) {
            Target::Here => self.coordinate(i, key, op, 0, Origin::Client),
            Target::Member(_) => {
                let id = self.id();
                let n = &mut self.nodes[i];
                let sent_ms = n.mono_offset_ms + self.now / MS;
                let deadline = Deadline::Relative { sent_ms, ttl_ms: FORWARD_TTL / MS };
                let life = n.life;
                n.forwards.insert(id, PendingForward { key, op, deadline, until: self.now + FORWARD_TTL, tries: 0 });
                self.at(self.now + FORWARD_TTL, Ev::ForwardGiveUp { node: i, life, id });
                self.send_forward(i, id);
            }
        }
    }

    /// The gate's verdict on a write at node `i` (`coordinate::admit`).
    fn refused(&self, i: usize, origin: Origin) -> Option<Refusal> {
        let n = &self.nodes[i];
        let gate = Gate {
            members: n.topo.nodes.len(),
            awaiting_seed: n.phase.phase() == Phase::AwaitingSeed,
            seeded: true,
            from_peer: origin != Origin::Client,
            keyed: true,
            write: true,
            minority: n.minority,
            minority_refuses_reads: false,
            returning: false,
        };
        match admit(&gate) {
            Admit::Refuse(r) => Some(r),
            Admit::Alone | Admit::Cluster => None,
        }
    }

    fn count_refusal(&mut self, r: &Refusal) {
        match r {
            Refusal::AwaitingSeed { .. } => self.stats.refused_awaiting_seed += 1,
            Refusal::Minority { .. } => self.stats.refused_minority += 1,
            Refusal::KeepersShort { .. } => self.stats.keeper_refusals += 1,
            _ => {}
        }
    }

    /// Sends forward `id` of node `i` to its key's primary in `i`'s table
    /// of now (`net::exec::forward`, `await_forwards`).
    fn send_forward(&mut self, i: usize, id: u64) {
        let n = &self.nodes[i];
        let Some(f) = n.forwards.get(&id) else { return };
        let slot = key_slot(&f.key);
        match resend_target(&n.topo, slot) {
            Target::Here => {
                // This node became the slot's primary: it runs the forward
                // as a primary runs a member's (`run_as_primary`).
                let (key, op) = (f.key.clone(), f.op.clone());
                self.coordinate(i, key, op, 0, Origin::Forward { from: i, id });
            }
            Target::Member(p) => {
                let to = index_of(&n.topo.nodes[usize::from(p)].name);
                if !self.nodes[to].up {
                    // The link refuses it unsent (connection refused).
                    return self.forward_ended(i, id, Attempt::Unsent);
                }
                let msg =
                    Msg::Fwd { id, key: f.key.clone(), op: f.op.clone(), table: n.topo.digest, deadline: f.deadline };
                self.send(i, to, msg);
            }
        }
    }

    /// How an attempt of forward `id` ended at its forwarding node `i`:
    /// sent again after a pause (`coordinate::retry_forward`) or done.
    fn forward_ended(&mut self, i: usize, id: u64, attempt: Attempt) {
        let n = &mut self.nodes[i];
        let minority = n.minority.is_some();
        let Some(f) = n.forwards.get_mut(&id) else { return };
        let again = retry_forward(attempt, minority, f.tries)
            .and_then(|pause_ms| retry_pause(self.now / MS, pause_ms, f.until / MS));
        match again {
            Some(pause_ms) => {
                f.tries += u32::from(attempt != Attempt::Unsent);
                self.stats.forwards_again += 1;
                let life = n.life;
                self.at(self.now + pause_ms * MS, Ev::ForwardAgain { node: i, life, id });
            }
            None => {
                self.nodes[i].forwards.remove(&id);
            }
        }
    }

    /// Answers the origin of a write coordinated at node `i`.
    fn answer(&mut self, i: usize, origin: Origin, retry: bool) {
        match origin {
            Origin::Client => {}
            Origin::Forward { from, id } if from == i => {
                let attempt = Attempt::Answered { refused_for_now: retry };
                self.forward_ended(i, id, attempt);
            }
            Origin::Forward { from, id } => self.send(i, from, Msg::FwdReply { id, retry }),
        }
    }

    /// The primary runs the write once, snapshots the key and sends the
    /// state to the other owners (`net::exec`). `round` counts the fetches
    /// a client's held write took; `held` says it was held for its
    /// keepers once already.
    fn coordinate(&mut self, i: usize, key: Vec<u8>, op: ClientOp, round: u32, origin: Origin) {
        self.coordinate_held(i, key, op, round, origin, false);
    }

    fn coordinate_held(&mut self, i: usize, key: Vec<u8>, op: ClientOp, round: u32, origin: Origin, held: bool) {
        let now_ms = now_ms(self.now);
        let slot = key_slot(&key);
        if resend_target(&self.nodes[i].topo, slot) != Target::Here {
            match origin {
                // A client's write held while the table moved: run again,
                // it goes to the slot's primary of now.
                Origin::Client => return self.client(i, key, op),
                // -TRYAGAIN: the tables disagree for a moment.
                Origin::Forward { .. } => return self.answer(i, origin, true),
            }
        }
        // A write held for a fetch runs through the gate again.
        if let Some(r) = self.refused(i, origin) {
            self.count_refusal(&r);
            return self.answer(i, origin, r.retryable());
        }
        // Too few of the slot's keepers are members: its writes may be
        // only across a partition, or on members that failed
        // (`cluster::keepers`, as `net::exec::fetch`).
        let n = &self.nodes[i];
        if n.rb.is_unsettled(slot) && self.sabotage != Sabotage::NoKeepers {
            let short = n.keepers.short(slot, &n.topo, W);
            match keepers_step(slot, short, n.converging(self.now), origin != Origin::Client, held) {
                Step::Go => {}
                Step::Hold => {
                    self.stats.keeper_holds += 1;
                    let (life, table_at) = (n.life, n.changed_at);
                    self.at(self.now + UNREACHABLE_PAUSE, Ev::KeepersWait { node: i, life, key, op, round, table_at });
                    return;
                }
                Step::Refuse(r) => {
                    self.count_refusal(&r);
                    return self.answer(i, origin, r.retryable());
                }
            }
        }
        // A key of an importing or unsettled slot: its newest state first
        // (`cluster::settle`): a client's write is held meanwhile; a
        // member's forward is answered -TRYAGAIN once the fetch ended
        // (`net::exec::local`, `finish`), and sent again.
        let n = &self.nodes[i];
        let state = KeyState {
            unsettled: n.rb.is_unsettled(slot),
            importing_from: n.imports.get(&slot).map(|s| Arc::from(s.as_str())),
            here: n.store.with_key(&key, now_ms, |k| k.exists() || k.tombstone().is_some()),
            fetched: n.rb.checked(&key),
        };
        if let Some(fetch) = fetch_for(&n.topo, slot, &key, &state, true) {
            if origin == Origin::Client && round >= HOLD_ROUNDS_MAX {
                self.stats.fetch_refusals += 1;
                return;
            }
            let table = Some(n.topo.digest);
            let id = self.id();
            let targets: Vec<(usize, Option<u64>)> = fetch.from.iter().map(|(m, _)| (index_of(m), table)).collect();
            let answered = vec![false; targets.len()];
            let n = &mut self.nodes[i];
            let short = answered.clone();
            let generation = n.rb.unsettle_gen();
            n.fetches
                .insert(id, PendingFetch { op, origin, held, generation, fetch, answered, short, round: round + 1 });
            let life = n.life;
            self.stats.fetches += 1;
            for (member, (t, table)) in targets.into_iter().enumerate() {
                self.send(i, t, Msg::Read { fetch: id, member, key: key.clone(), table });
            }
            self.at(self.now + WRITE_TIMEOUT, Ev::FetchTimeout { node: i, life, fetch: id });
            return;
        }
        let n = &mut self.nodes[i];
        let done = n.store.with_key(&key, now_ms, |k| {
            match &op {
                ClientOp::Set(v) => k.set(v.to_string().as_bytes(), None),
                ClientOp::Del => {
                    k.remove()?;
                }
                ClientOp::Incr => {
                    let cur: u64 = k.value().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
                    k.set_keep_ttl((cur + 1).to_string().as_bytes());
                }
            }
            let mut req = BytesMut::new();
            encode_current(&mut req, k);
            Some((req.to_vec(), k.version(), k.value().map(<[u8]>::to_vec)))
        });
        let Some((req, version, value)) = done else { return };
        let incr = match op {
            ClientOp::Incr => value.as_deref().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()),
            _ => None,
        };
        if n.topo.nodes.len() == 1 {
            n.phase.wrote_alone();
        }
        let owners: Vec<usize> =
            n.topo.table.owners(slot).iter().map(|&o| index_of(&n.topo.table.members[usize::from(o)].name)).collect();
        let need = quorum(W, owners.len());
        let deleted = value.is_none();
        self.oracle.written.insert((key.clone(), version), value.clone());
        self.touched.push((i, key.clone()));
        let n = &self.nodes[i];
        let how = if n.rb.is_unsettled(slot) {
            format!(
                " (unsettled, keepers {:?}, fetched from {:?})",
                n.keepers.of(slot),
                fetch_for(
                    &n.topo,
                    slot,
                    &key,
                    &KeyState { unsettled: true, importing_from: None, here: true, fetched: false },
                    true
                )
                .map(|f| f.from.iter().map(|(m, _)| m.to_string()).collect::<Vec<_>>())
            )
        } else {
            String::new()
        };
        self.log(format!(
            "{} writes {} v{version} = {:?} ({op:?}) for owners {owners:?}{how}",
            self.nodes[i].name,
            String::from_utf8_lossy(&key),
            value.as_deref().map(String::from_utf8_lossy)
        ));
        let write = self.id();
        let mut holders = BTreeSet::new();
        holders.insert(i);
        let pending = PendingWrite { key, version, deleted, holders, need, incr, origin };
        if need <= 1 {
            self.acked(pending);
            return self.answer(i, origin, false);
        }
        self.nodes[i].writes.insert(write, pending);
        for o in owners.into_iter().filter(|&o| o != i) {
            self.send(i, o, Msg::Repl { write: Some(write), req: req.clone() });
        }
        let life = self.nodes[i].life;
        self.at(self.now + WRITE_TIMEOUT, Ev::WriteTimeout { node: i, life, write });
    }

    /// A write's fetch ended (every member answered, or the timeout):
    /// the verdict runs it or refuses it.
    fn finish_fetch(&mut self, i: usize, id: u64) {
        let Some(pf) = self.nodes[i].fetches.remove(&id) else { return };
        let verdict = verdict_with_keepers(&pf.fetch, &pf.answered, &pf.short, W);
        // A fetch that a table change overlapped asked the owners of the
        // table before: not counted (`RebalanceState::mark_checked`; seed
        // 134 lost an increment without it, found 2026-12-08).
        if verdict == Verdict::Fetched {
            self.nodes[i].rb.mark_checked(pf.fetch.key.clone(), pf.generation);
        }
        let slot = key_slot(&pf.fetch.key);
        let from_peer = pf.origin != Origin::Client;
        match fetch_step(slot, &verdict, self.nodes[i].converging(self.now), from_peer, pf.held) {
            // A member's forward was answered -TRYAGAIN: it comes again
            // and runs on the state fetched.
            Step::Go if from_peer => self.answer(i, pf.origin, true),
            Step::Go => self.coordinate_held(i, pf.fetch.key, pf.op, pf.round, Origin::Client, pf.held),
            Step::Hold => {
                self.stats.keeper_holds += 1;
                let n = &self.nodes[i];
                let (life, table_at) = (n.life, n.changed_at);
                let (key, op, round) = (pf.fetch.key, pf.op, pf.round);
                self.at(self.now + UNREACHABLE_PAUSE, Ev::KeepersWait { node: i, life, key, op, round, table_at });
            }
            Step::Refuse(r) => {
                if !r.retryable() {
                    self.stats.fetch_refusals += 1;
                    self.stats.forward_fetch_refusals += u64::from(from_peer);
                }
                let text =
                    format!("{} refuses {:?}: {r:?}", self.nodes[i].name, String::from_utf8_lossy(&pf.fetch.key));
                self.log(text);
                self.answer(i, pf.origin, r.retryable());
            }
        }
    }

    fn acked(&mut self, w: PendingWrite) {
        self.oracle.writes_acked += 1;
        self.log(format!("ack {} v{} by {:?}", String::from_utf8_lossy(&w.key), w.version, w.holders));
        if let Some(n) = w.incr
            && w.key.starts_with(b"ctr:")
        {
            self.stats.counter_incrs += 1;
            let k = (w.key.clone(), n);
            if let Some(first) = self.oracle.incr_answers.get(&k)
                && !first.excused()
                && self.check_counters
            {
                self.fail(format!(
                    "two acknowledged INCRs of {} answered {n} (v{} and v{}): an increment was lost",
                    String::from_utf8_lossy(&w.key),
                    first.version,
                    w.version
                ));
            }
            let crashed: BTreeSet<usize> = w.holders.iter().copied().filter(|&h| !self.nodes[h].up).collect();
            let record = Acked { version: w.version, deleted: false, holders: w.holders.len(), crashed };
            self.oracle.incr_answers.insert(k, record);
        }
        let newer = self.oracle.acked.get(&w.key).is_none_or(|a| a.version < w.version);
        if newer {
            // A holder may have crashed after applying, while its ack was
            // on the way: that copy is gone already.
            let crashed: BTreeSet<usize> = w.holders.iter().copied().filter(|&h| !self.nodes[h].up).collect();
            self.oracle
                .acked
                .insert(w.key, Acked { version: w.version, deleted: w.deleted, holders: w.holders.len(), crashed });
        }
    }

    /// One anti-entropy round: the slots of one store shard this node is
    /// primary for, offered to their other owners (`net::antientropy`).
    fn anti_entropy(&mut self, i: usize) {
        let now_ms = now_ms(self.now);
        let shard = self.nodes[i].ae_shard;
        let pos = self.key_shards.iter().position(|(s, _)| *s == shard).unwrap_or(0);
        let (_, slots) = self.key_shards[pos].clone();
        let next = self.key_shards[(pos + 1) % self.key_shards.len()].0;
        let gap = (next + SHARD_COUNT - shard - 1) % SHARD_COUNT + 1;
        let n = &mut self.nodes[i];
        n.ae_shard = next;
        let life = n.life;
        self.at(self.now + AE_ROUND * gap as u64, Ev::AntiEntropy { node: i, life });
        let n = &mut self.nodes[i];
        if !n.imports.is_empty() || self.sabotage.no_anti_entropy() {
            return;
        }
        let generation = n.rb.unsettle_gen();
        if n.topo.nodes.len() < 2 {
            // Alone: no co-owner can hold anything newer (unless the
            // slot's keepers failed).
            for slot in 0..SLOT_COUNT {
                n.settle_compared(slot, generation, &BTreeSet::new(), self.sabotage);
            }
            return;
        }
        let topo = n.topo.clone();
        let table = members_digest(&topo);
        for slot in slots {
            let owners = topo.table.owners(slot);
            if !owners.contains(&topo.me) {
                // A slot held here without being owned (`hand_off`): offered
                // to its primary.
                let digest = self.nodes[i].store.slot_digests(&[slot])[0];
                if digest != 0 && !self.sabotage.no_copies() {
                    let reqs: Vec<Vec<u8>> =
                        snapshot(&self.nodes[i].store, slot, now_ms).into_iter().map(|(_, _, r)| r).collect();
                    let to = index_of(&topo.table.members[usize::from(owners[0])].name);
                    self.send(i, to, Msg::AeOffer { slot, digest, table, reqs, settled: false, unsettled: true });
                }
                continue;
            }
            if owners.first() != Some(&topo.me) {
                // Writes run at the primary only: nothing to settle here.
                self.nodes[i].rb.settle(slot, generation);
                continue;
            }
            let digest = self.nodes[i].store.slot_digests(&[slot])[0];
            let reqs: Vec<Vec<u8>> =
                snapshot(&self.nodes[i].store, slot, now_ms).into_iter().map(|(_, _, r)| r).collect();
            let co_owners: BTreeSet<usize> =
                owners.iter().skip(1).map(|&o| index_of(&topo.table.members[usize::from(o)].name)).collect();
            let n = &mut self.nodes[i];
            // Keepers no longer owners are compared too (they only give).
            let beyond: BTreeSet<usize> = if n.rb.is_unsettled(slot) {
                n.keepers
                    .beyond_owners(slot, &topo)
                    .iter()
                    .map(|&o| index_of(&topo.nodes[usize::from(o)].name))
                    .collect()
            } else {
                BTreeSet::new()
            };
            let left = co_owners.union(&beyond).copied().collect();
            n.ae_pending.insert(slot, PendingAe { generation, left, compared: BTreeSet::new() });
            let unsettled = n.rb.is_unsettled(slot);
            let settled = !unsettled && n.keepers.current(slot, &topo);
            for to in co_owners {
                self.send(i, to, Msg::AeOffer { slot, digest, table, reqs: reqs.clone(), settled, unsettled });
            }
            for to in beyond {
                self.send(i, to, Msg::AeOffer { slot, digest, table, reqs: Vec::new(), settled: false, unsettled });
            }
        }
    }

    /// A co-owner's side of anti-entropy: `offer` is a `Msg::AeOffer`.
    fn ae_offer(&mut self, i: usize, from: usize, offer: Msg) {
        let Msg::AeOffer { slot, digest, table, reqs, settled, unsettled } = offer else { unreachable!("an offer") };
        let now_ms = now_ms(self.now);
        let same_table = members_digest(&self.nodes[i].topo) == table;
        let short =
            self.sabotage != Sabotage::NoKeepers && self.nodes[i].keepers.short(slot, &self.nodes[i].topo, W).is_some();
        // Its primary settled the slot on this same table: its owners
        // hold its writes (`net::peer`'s `RC.DIGESTS`).
        let topo = self.nodes[i].topo.clone();
        if settled && same_table && topo.table.owners(slot).contains(&topo.me) {
            self.nodes[i].keepers.settled(slot, &topo);
        }
        let n = &mut self.nodes[i];
        if (n.divergence.1, n.divergence.2) != (topo.table.epoch, n.life) {
            n.divergence = (Divergence::default(), topo.table.epoch, n.life);
        }
        let mine = n.store.slot_digests(&[slot])[0];
        if mine == digest {
            n.divergence.0.agreed(slot, from as u16);
            self.send(i, from, Msg::AeReply { slot, same_table, reqs: Vec::new(), short, deferred: false });
            return;
        }
        let defer = !unsettled
            && (self.sabotage == Sabotage::NeverRepairSettled
                || !n.divergence.0.repair_now(slot, from as u16, mine, digest, now_ms));
        if defer {
            // Settled at the primary, and maybe only a write on its way.
            self.stats.repairs_deferred += 1;
            self.send(i, from, Msg::AeReply { slot, same_table, reqs: Vec::new(), short, deferred: true });
            return;
        }
        let offered: BTreeMap<Vec<u8>, u64> = reqs.iter().map(|r| parse_req(r)).collect();
        let mine = snapshot(&self.nodes[i].store, slot, now_ms);
        let newer_here: Vec<Vec<u8>> =
            mine.into_iter().filter(|(k, v, _)| offered.get(k).is_none_or(|o| o < v)).map(|(_, _, r)| r).collect();
        for r in &reqs {
            let (key, v) = parse_req(r);
            let had = self.nodes[i].store.with_key(&key, now_ms, |k| k.version());
            if v > had {
                self.stats.repairs += 1;
            }
            self.apply(i, r);
        }
        self.send(i, from, Msg::AeReply { slot, same_table, reqs: newer_here, short, deferred: false });
    }

    // ---- events -------------------------------------------------------------------

    fn life_ok(&self, node: usize, life: u64) -> bool {
        self.nodes[node].up && self.nodes[node].life == life
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Timer { node, life, timer } => {
                if !self.life_ok(node, life) {
                    return;
                }
                let n = &mut self.nodes[node];
                let foca = n.foca.as_mut().expect("up");
                // The shell's filter (a refuted suspicion forces no rejoin).
                if suspicion_refuted(foca.iter_membership_state(), &timer) {
                    return;
                }
                let _ = foca.handle_timer(timer, &mut n.rt);
                self.drain(node);
            }
            Ev::Packet { to, bytes } => {
                if !self.nodes[to].up {
                    return;
                }
                let payload = match self.key.open(&bytes) {
                    Ok(payload) => payload,
                    Err(e) => self.fail(format!("a packet sealed with the cluster key was rejected: {e:?}")),
                };
                let n = &mut self.nodes[to];
                let _ = n.foca.as_mut().expect("up").handle_data(payload, &mut n.rt);
                self.drain(to);
            }
            Ev::Announce { node, life } => {
                if self.life_ok(node, life) {
                    self.announce(node);
                }
            }
            Ev::Publish { node, life } => {
                if self.life_ok(node, life) {
                    self.publish(node);
                }
            }
            Ev::WriteTimeout { node, life, write } => {
                if self.life_ok(node, life)
                    && let Some(w) = self.nodes[node].writes.remove(&write)
                {
                    // -TIMEOUT: it may have run; not sent again.
                    self.oracle.writes_failed += 1;
                    self.answer(node, w.origin, false);
                }
            }
            Ev::ForwardAgain { node, life, id } => {
                if self.life_ok(node, life) {
                    self.send_forward(node, id);
                }
            }
            Ev::ForwardGiveUp { node, life, id } => {
                if self.life_ok(node, life) && self.nodes[node].forwards.remove(&id).is_some() {
                    self.stats.forwards_given_up += 1;
                }
            }
            Ev::KeepersWait { node, life, key, op, round, table_at } => {
                if !self.life_ok(node, life) {
                    return;
                }
                let n = &self.nodes[node];
                if n.changed_at == table_at && n.converging(self.now) {
                    self.at(self.now + UNREACHABLE_PAUSE, Ev::KeepersWait { node, life, key, op, round, table_at });
                } else {
                    self.coordinate_held(node, key, op, round, Origin::Client, true);
                }
            }
            Ev::StartCopy { node, life, job } => {
                if self.life_ok(node, life) {
                    self.start_copy(node, job);
                }
            }
            Ev::CopyTimeout { node, life, id } => {
                if self.life_ok(node, life) {
                    self.copy_timeout(node, id);
                }
            }
            Ev::Pull { node, life } => {
                if self.life_ok(node, life) {
                    self.pull(node);
                }
            }
            Ev::AntiEntropy { node, life } => {
                if self.life_ok(node, life) {
                    self.anti_entropy(node);
                }
            }
            Ev::AskAgain { node, life, fetch, member, key } => {
                let n = &self.nodes[node];
                if self.life_ok(node, life)
                    && let Some(pf) = n.fetches.get(&fetch)
                    && !pf.answered[member]
                {
                    let to = index_of(&pf.fetch.from[member].0);
                    let table = Some(n.topo.digest);
                    self.send(node, to, Msg::Read { fetch, member, key, table });
                }
            }
            Ev::FetchTimeout { node, life, fetch } => {
                if self.life_ok(node, life) {
                    self.finish_fetch(node, fetch);
                }
            }
            Ev::AnnounceLeave { node, life, until } => {
                if self.life_ok(node, life) {
                    if self.nodes[node].writes.is_empty() || self.now >= until {
                        self.announce_leave(node);
                    } else {
                        self.at(self.now + MS, Ev::AnnounceLeave { node, life, until });
                    }
                }
            }
            Ev::Exit { node, life } => {
                if self.life_ok(node, life) {
                    // Without the drain modelled, its copies are lost as
                    // in a crash (and excused as one).
                    self.crash(node);
                }
            }
            Ev::Deliver { from, to, to_life, msg } => {
                // A crash or a partition breaks the connection: what was
                // in flight is lost.
                if !self.life_ok(to, to_life) || self.cut(from, to) {
                    self.stats.msgs_lost += 1;
                    return;
                }
                self.deliver(from, to, msg);
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        match msg {
            Msg::Fwd { id, key, op, table, deadline } => {
                // `net::peer`: late, or routed by another table, it does not
                // run; else the gate and the primary's rules decide.
                let n = &mut self.nodes[to];
                let mono_ms = n.mono_offset_ms + self.now / MS;
                let from_life = self.nodes[from].life;
                let n = &mut self.nodes[to];
                let late = n.lateness.entry((from, from_life)).or_default();
                let expired = late.expired(deadline, mono_ms, now_ms(self.now));
                let origin = Origin::Forward { from, id };
                match receive_forward(expired, false, table == n.topo.digest) {
                    Receive::Expired => {
                        self.stats.forwards_expired += 1;
                        self.send(to, from, Msg::FwdReply { id, retry: false });
                    }
                    Receive::KeepOrder | Receive::TableDiffers => {
                        self.send(to, from, Msg::FwdReply { id, retry: true })
                    }
                    Receive::Run => self.coordinate(to, key, op, 0, origin),
                }
            }
            Msg::FwdReply { id, retry } => {
                self.forward_ended(to, id, Attempt::Answered { refused_for_now: retry });
            }
            // A minority node applies and acknowledges no replicated write
            // (`PeerError::Minority`, net/peer.rs).
            Msg::Repl { .. } if self.nodes[to].minority.is_some() => self.stats.refused_minority += 1,
            Msg::Leave => {
                let name = self.nodes[from].name.clone();
                let n = &mut self.nodes[to];
                let Some(foca) = n.foca.as_ref() else { return };
                // As `net::gossip`'s take_leaves: the generation gossip knows.
                let generation =
                    foca.iter_members().map(|m| m.id()).find(|m| m.name == name).map_or(0, |m| m.generation);
                n.view.depart(&name, generation, self.now / MS, settle_window());
                let text = format!("{} takes note that {name} leaves", n.name);
                self.log(text);
                self.schedule_publish(to);
            }
            Msg::Repl { write, req } => {
                if self.sabotage != Sabotage::AckWithoutApply {
                    self.apply(to, &req);
                }
                if let Some(write) = write {
                    self.send(to, from, Msg::ReplAck { write });
                }
            }
            Msg::ReplAck { write } => {
                let n = &mut self.nodes[to];
                let Some(w) = n.writes.get_mut(&write) else { return };
                w.holders.insert(from);
                if quorum_short(w.need, w.holders.len() - 1).is_none() {
                    let w = n.writes.remove(&write).expect("present");
                    let origin = w.origin;
                    self.acked(w);
                    self.answer(to, origin, false);
                }
            }
            Msg::Copy { id, slots, reqs, keepers } => {
                for r in &reqs {
                    self.apply(to, r);
                }
                let n = &mut self.nodes[to];
                let topo = n.topo.clone();
                for (slot, theirs) in slots.iter().zip(&keepers) {
                    if self.sabotage != Sabotage::NoKeepers {
                        let theirs: Vec<&str> = theirs.iter().map(String::as_str).collect();
                        n.keepers.received(*slot, &theirs, &topo);
                    }
                }
                for slot in slots {
                    n.imports.remove(&slot);
                    if n.phase.phase().newcomer() {
                        n.received.insert(slot);
                    }
                }
                self.check_joining(to);
                self.send(to, from, Msg::CopyDone { id });
            }
            Msg::CopyDone { id } => self.copy_done(to, id),
            // `RC.DROPOK` deletes nothing (net/peer.rs): a former owner's
            // slot goes to its primary by anti-entropy's hand-off.
            Msg::DropOk { .. } => {}
            Msg::Sending { table, slots } => {
                let n = &self.nodes[to];
                let flags =
                    slots.into_iter().map(|s| (s, n.planned != table || n.outgoing.contains(&(s, from)))).collect();
                self.send(to, from, Msg::SendingReply { slots: flags });
            }
            Msg::SendingReply { slots } => {
                let from_name = self.nodes[from].name.clone();
                let n = &mut self.nodes[to];
                for (s, coming) in slots {
                    if !coming && n.imports.get(&s) == Some(&from_name) {
                        n.imports.remove(&s);
                    }
                }
                self.check_joining(to);
            }
            offer @ Msg::AeOffer { .. } => self.ae_offer(to, from, offer),
            Msg::AeReply { slot, same_table, reqs, short, deferred } => {
                for r in &reqs {
                    self.apply(to, r);
                }
                // Compared with this co-owner on the same table: once every
                // co-owner did, the slot settles (`net::antientropy`).
                let n = &mut self.nodes[to];
                if same_table
                    && !short
                    && !deferred
                    && let Some(p) = n.ae_pending.get_mut(&slot)
                {
                    p.left.remove(&from);
                    p.compared.insert(from);
                    if p.left.is_empty() {
                        let p = n.ae_pending.remove(&slot).expect("pending");
                        n.settle_compared(slot, p.generation, &p.compared, self.sabotage);
                    }
                }
            }
            Msg::Read { fetch, member, key, table: Some(t) } if t != self.nodes[to].topo.digest => {
                // -TRYAGAIN: the sender has not taken the asker's table yet;
                // the asker asks again a moment later (`net::exec::fetch`).
                let life = self.nodes[from].life;
                self.at(self.now + ASK_AGAIN, Ev::AskAgain { node: from, life, fetch, member, key });
            }
            Msg::Read { fetch, member, key, table: Some(_) }
                if self.sabotage != Sabotage::NoKeepers
                    && self.nodes[to].keepers.short(key_slot(&key), &self.nodes[to].topo, W).is_some() =>
            {
                // `PeerError::KeepersShort` (`net::peer`).
                self.send(to, from, Msg::ReadReply { fetch, member, state: Vec::new(), short: true });
            }
            Msg::Read { fetch, member, key, .. } => {
                let now_ms = now_ms(self.now);
                let st = self.nodes[to].store.with_key(&key, now_ms, |k| ReadState::of(k));
                let mut buf = BytesMut::new();
                st.encode(&mut buf);
                self.send(to, from, Msg::ReadReply { fetch, member, state: buf.to_vec(), short: false });
            }
            Msg::ReadReply { fetch, member, short: true, .. } => {
                let n = &mut self.nodes[to];
                let Some(pf) = n.fetches.get_mut(&fetch) else { return };
                pf.short[member] = true;
                if pf.answered.iter().zip(&pf.short).all(|(&a, &s)| a || s) {
                    self.finish_fetch(to, fetch);
                }
            }
            Msg::ReadReply { fetch, member, state, .. } => {
                let now_ms = now_ms(self.now);
                let Some(st) = ReadState::parse(&state) else { self.fail("an RC.READ reply did not parse".into()) };
                let n = &mut self.nodes[to];
                let Some(pf) = n.fetches.get_mut(&fetch) else { return };
                pf.answered[member] = true;
                let key = pf.fetch.key.clone();
                let done = pf.answered.iter().zip(&pf.short).all(|(&a, &s)| a || s);
                n.store.with_key(&key, now_ms, |k| st.apply_to(k));
                self.touched.push((to, key));
                if done {
                    self.finish_fetch(to, fetch);
                }
            }
        }
    }

    // ---- checks -----------------------------------------------------------------------

    fn fail(&self, why: String) -> ! {
        panic!("invariant violated: {why}");
    }

    /// After every step: every key state a node holds was written, with
    /// that value; a node's version of a key never goes back.
    fn check_touched(&mut self) {
        let now_ms = now_ms(self.now);
        let touched = std::mem::take(&mut self.touched);
        for (i, key) in touched {
            if !self.nodes[i].up {
                continue;
            }
            let state = self.nodes[i].store.with_key(&key, now_ms, |k| ReadState::of(k));
            self.check_state(i, &key, &state);
        }
    }

    fn check_state(&mut self, i: usize, key: &[u8], state: &ReadState) {
        let name = self.nodes[i].name.clone();
        let k = String::from_utf8_lossy(key).into_owned();
        let v = state.version();
        match state {
            ReadState::Unknown => {}
            ReadState::Deleted { version } => match self.oracle.written.get(&(key.to_vec(), *version)) {
                Some(None) => {}
                other => {
                    self.fail(format!("{name} holds a tombstone of {k} v{version} that no delete made ({other:?})"))
                }
            },
            ReadState::Live { version, value, .. } => match self.oracle.written.get(&(key.to_vec(), *version)) {
                Some(Some(w)) if w[..] == value[..] => {}
                other => self.fail(format!(
                    "{name} holds {k} v{version} = {:?}, which was never written (written: {other:?})",
                    String::from_utf8_lossy(value)
                )),
            },
        }
        let seen = self.oracle.seen.entry((i, key.to_vec())).or_insert(0);
        if v < *seen {
            let was = *seen;
            if let Some(a) = self.oracle.acked.get(key)
                && a.deleted
                && v < a.version
                && was >= a.version
                && matches!(state, ReadState::Live { .. })
            {
                self.fail(format!("{name}: deleted key {k} (acknowledged delete v{}) came back as v{v}", a.version));
            }
            self.fail(format!("{name}: {k} went back from v{was} to v{v}"));
        }
        *seen = v;
    }

    /// Every key on every live node (cheap enough now and then).
    fn check_all(&mut self) {
        let now_ms = now_ms(self.now);
        for i in self.up_nodes() {
            for key in self.keys.clone() {
                let state = self.nodes[i].store.with_key(&key, now_ms, |k| ReadState::of(k));
                self.check_state(i, &key, &state);
            }
        }
    }

    /// Whether every live node sees exactly the live nodes, with one table.
    fn membership_agrees(&self) -> bool {
        let up = self.up_nodes();
        let names: BTreeSet<&str> = up.iter().map(|&i| self.nodes[i].name.as_str()).collect();
        let first = &self.nodes[up[0]].topo;
        up.iter().all(|&i| {
            let t = &self.nodes[i].topo;
            let mine: BTreeSet<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
            mine == names && members_digest(t) == members_digest(first) && t.table.members == first.table.members
        })
    }

    /// Whether the owners of every key's slot hold identical contents, and
    /// no other node holds anything of it newer than its primary (a stray
    /// copy not yet handed off).
    fn data_agrees(&self) -> bool {
        let now_ms = now_ms(self.now);
        let up = self.up_nodes();
        let t = &self.nodes[up[0]].topo;
        self.key_shards.iter().flat_map(|(_, s)| s.iter().copied()).all(|slot| {
            let owners: Vec<usize> =
                t.table.owners(slot).iter().map(|&o| index_of(&t.table.members[usize::from(o)].name)).collect();
            let digests: BTreeSet<u64> = owners.iter().map(|&o| self.nodes[o].store.slot_digests(&[slot])[0]).collect();
            let primary = &self.nodes[owners[0]].store;
            digests.len() == 1
                && up.iter().filter(|i| !owners.contains(i)).all(|&i| {
                    snapshot(&self.nodes[i].store, slot, now_ms)
                        .into_iter()
                        .all(|(k, v, _)| primary.with_key(&k, now_ms, |key| key.version()) >= v)
                })
        })
    }

    /// Heals, stops faults and writes, and checks that membership, tables
    /// and then data converge, and that no acknowledged write was lost.
    fn converge(&mut self) {
        self.partition = None;
        let (loss, msg_loss) = (self.loss, self.msg_loss);
        self.loss = 0.0;
        self.msg_loss = 0.0;
        self.log("quiet period: partitions healed, no faults, no writes".into());
        self.quiet = true;
        // A leave under way is a fault too: its process ends now.
        for i in self.up_nodes() {
            if self.nodes[i].leaving {
                self.crash(i);
            }
        }
        // Operators keep the seeds up: a seed that crashed comes back (as
        // an empty newcomer). Without a live seed a node that never met a
        // live member (it started while every seed was down) cannot be
        // found by anyone, so membership could not converge.
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.started && !n.up && self.seeds.contains(&n.gossip_addr) {
                self.start(i);
            }
        }
        let start = self.now;
        for n in &mut self.nodes {
            n.packets_sent = 0;
        }
        let mut restarted_stuck = false;
        while !self.membership_agrees() {
            if !restarted_stuck && self.now - start > STUCK_MINORITY_AFTER {
                restarted_stuck = true;
                let stuck: Vec<usize> =
                    self.up_nodes().into_iter().filter(|&i| self.nodes[i].minority.is_some()).collect();
                for i in stuck {
                    let gone: Vec<&str> = self.nodes[i]
                        .topo
                        .nodes
                        .iter()
                        .map(|m| m.name.as_str())
                        .filter(|m| !self.nodes[index_of(m)].up)
                        .collect();
                    if gone.is_empty() {
                        // Stuck although every member of its table is up:
                        // the checks below report it.
                        continue;
                    }
                    let text =
                        format!("operator restarts {} (stuck in a minority; {gone:?} are gone)", self.nodes[i].name);
                    self.log(text);
                    self.stats.stuck_restarts += 1;
                    self.crash(i);
                    self.start(i);
                }
            }
            if self.now - start > MEMBERSHIP_QUIET_MAX {
                let views: Vec<String> = self
                    .up_nodes()
                    .iter()
                    .map(|&i| {
                        let names: Vec<String> =
                            self.nodes[i].topo.nodes.iter().map(|n| format!("{}#{}", n.name, n.generation)).collect();
                        let n = &self.nodes[i];
                        format!("{} sees {names:?} (sent {} gossip packets meanwhile)", n.name, n.packets_sent)
                    })
                    .collect();
                self.fail(format!("membership did not converge within {} ms: {views:?}", MEMBERSHIP_QUIET_MAX / MS));
            }
            self.run_until(self.now + 250 * MS);
        }
        // Tables agree too (same members give the same table; check it).
        let up = self.up_nodes();
        let first = self.nodes[up[0]].topo.clone();
        for &i in &up[1..] {
            if self.nodes[i].topo.table.ranges() != first.table.ranges() {
                self.fail(format!(
                    "{} and {} agree on members but not on the slot table",
                    self.nodes[up[0]].name, self.nodes[i].name
                ));
            }
        }
        let settled = self.now;
        while !self.data_agrees() {
            if self.now - settled > DATA_QUIET_MAX {
                let detail = self.data_detail();
                self.fail(format!(
                    "owners still differ {} ms after membership converged:\n{detail}",
                    DATA_QUIET_MAX / MS
                ));
            }
            self.run_until(self.now + 250 * MS);
        }
        // Liveness: once everything healed, every owned slot settles (its
        // writes stop fetching first), unless some owner finds too many of
        // its keepers gone (for good, or restarted empty): its writes wait
        // for one to return, by design. Checked on this run's network, delay
        // spikes included (until foca's forced rejoins after refuted
        // suspicions were filtered, `net::gossip::suspicion_refuted`, it
        // needed a calm one).
        let agreed = self.now;
        loop {
            let stuck = self.unsettled_with_keepers_present();
            if stuck.is_empty() {
                break;
            }
            if self.now - agreed > SETTLE_QUIET_MAX {
                self.fail(format!(
                    "slots whose keepers are all present stayed unsettled {} ms after the owners agreed (their \
                     writes fetch first for ever):\n{}",
                    SETTLE_QUIET_MAX / MS,
                    stuck.join("\n")
                ));
            }
            self.run_until(self.now + 250 * MS);
        }
        let blocked = (self.key_shards.iter().flat_map(|(_, s)| s.iter().copied()))
            .filter(|&s| self.keepers_short_somewhere(s))
            .count();
        self.stats.blocked_for_good += blocked as u64;
        self.check_all();
        // No acknowledged write lost: the primary holds it or something newer.
        let now_ms = now_ms(self.now);
        let table = &self.nodes[up[0]].topo.table;
        for (key, a) in self.oracle.acked.clone() {
            let primary = index_of(&table.primary(key_slot(&key)).expect("members").name);
            let state = self.nodes[primary].store.with_key(&key, now_ms, |k| ReadState::of(k));
            if state.version() >= a.version {
                continue;
            }
            if a.excused() {
                self.stats.excused += 1;
                continue;
            }
            let k = String::from_utf8_lossy(&key);
            if a.deleted && matches!(state, ReadState::Live { .. }) {
                self.fail(format!(
                    "deleted key {k} came back: acknowledged delete v{} but primary {} holds {state:?} (owner crashes since: {:?})",
                    a.version, self.nodes[primary].name, a.crashed
                ));
            }
            self.fail(format!(
                "acknowledged write lost: {k} v{} ({}), primary {} holds {state:?}; holders at ack {}, owners crashed since {:?}",
                a.version,
                if a.deleted { "delete" } else { "put" },
                self.nodes[primary].name,
                a.holders,
                a.crashed
            ));
        }
        self.stats.converged += 1;
        self.log(format!("converged after {} ms", (self.now - start) / MS));
        self.loss = loss;
        self.msg_loss = msg_loss;
        self.quiet = false;
    }

    /// Whether some up owner of `slot` finds its keepers short: too few
    /// are members, or (a node that started empty) its own name does not
    /// count. Its writes then wait for a keeper to return, by design.
    fn keepers_short_somewhere(&self, slot: u16) -> bool {
        self.up_nodes().into_iter().any(|j| {
            let n = &self.nodes[j];
            n.topo.table.owners(slot).contains(&n.topo.me) && n.keepers.short(slot, &n.topo, W).is_some()
        })
    }

    /// Per up node, its unsettled owned slots of the key universe that no
    /// up owner finds short of keepers (first few of each), for the liveness
    /// check.
    fn unsettled_with_keepers_present(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in self.up_nodes() {
            let n = &self.nodes[i];
            if n.rb.unsettled() == 0 {
                continue;
            }
            // Only the slots of the key universe: anti-entropy here visits
            // just the store shards that hold them.
            let slots: Vec<String> = (self.key_shards.iter().flat_map(|(_, s)| s.iter().copied()))
                .filter(|&s| {
                    // The bit of a slot no longer owned here is left over and
                    // unused (a write is not coordinated here).
                    n.rb.is_unsettled(s)
                        && n.topo.table.owners(s).contains(&n.topo.me)
                        && !self.keepers_short_somewhere(s)
                })
                .map(|s| format!("{s} ({})", self.slot_views(s)))
                .collect();
            if !slots.is_empty() {
                let first: Vec<&String> = slots.iter().take(8).collect();
                out.push(format!(
                    "{}: {} slots, e.g. {first:?}; {} imports open, phase {:?}",
                    n.name,
                    slots.len(),
                    n.imports.len(),
                    n.phase.phase()
                ));
            }
        }
        out
    }

    /// Every up node's view of `slot`: owner or not, settled or not, its
    /// keepers and whether they are short there.
    fn slot_views(&self, slot: u16) -> String {
        let views: Vec<String> = self
            .up_nodes()
            .into_iter()
            .map(|i| {
                let n = &self.nodes[i];
                let owners: Vec<&str> = n
                    .topo
                    .table
                    .owners(slot)
                    .iter()
                    .map(|&o| n.topo.table.members[usize::from(o)].name.as_str())
                    .collect();
                format!(
                    "{}: owners {owners:?}{}, keepers {:?}{}{}",
                    n.name,
                    if n.rb.is_unsettled(slot) { " unsettled" } else { "" },
                    n.keepers.of(slot),
                    if n.keepers.short(slot, &n.topo, W).is_some() { " SHORT" } else { "" },
                    n.ae_pending.get(&slot).map(|p| format!(", waiting for {:?}", p.left)).unwrap_or_default()
                )
            })
            .collect();
        views.join("; ")
    }

    fn data_detail(&self) -> String {
        let now_ms = now_ms(self.now);
        let up = self.up_nodes();
        let t = &self.nodes[up[0]].topo;
        let mut out = String::new();
        for (_, slots) in &self.key_shards {
            for &slot in slots {
                let owners: Vec<usize> =
                    t.table.owners(slot).iter().map(|&o| index_of(&t.table.members[usize::from(o)].name)).collect();
                let views: Vec<String> = owners
                    .iter()
                    .map(|&o| {
                        let s = snapshot(&self.nodes[o].store, slot, now_ms);
                        let kv: Vec<String> =
                            s.iter().map(|(k, v, _)| format!("{}@{v}", String::from_utf8_lossy(k))).collect();
                        format!("{}(imports {}): {kv:?}", self.nodes[o].name, self.nodes[o].imports.len())
                    })
                    .collect();
                let distinct: BTreeSet<&String> = views.iter().collect();
                if distinct.len() > 1 {
                    out.push_str(&format!("  slot {slot}: {views:?}\n"));
                }
            }
        }
        out
    }

    // ---- driving --------------------------------------------------------------------

    fn run_until(&mut self, t: u64) {
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            self.now = at;
            self.handle(ev);
            self.stats.steps += 1;
            self.check_touched();
        }
        self.now = t;
    }

    /// One fault, chosen at random.
    fn fault(&mut self) {
        let up = self.up_nodes();
        let down: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].started && !self.nodes[i].up).collect();
        let fresh: Vec<usize> = (0..self.nodes.len()).filter(|&i| !self.nodes[i].started).collect();
        match self.rng.below(7) {
            0 | 1 if up.len() > 2 => {
                let i = self.rng.pick(&up);
                self.crash(i);
            }
            6 if up.len() > 2 => {
                let i = self.rng.pick(&up);
                self.leave(i);
            }
            2 if !down.is_empty() => {
                let i = self.rng.pick(&down);
                self.start(i);
            }
            3 if !fresh.is_empty() => {
                let i = self.rng.pick(&fresh);
                self.start(i);
            }
            4 if self.partition.is_none() && self.partitions => {
                let mut groups: Vec<u8> = (0..self.nodes.len()).map(|_| self.rng.below(2) as u8).collect();
                if groups.iter().all(|&g| g == groups[0]) {
                    groups[0] ^= 1;
                }
                self.stats.partitions += 1;
                self.log(format!("partition {groups:?}"));
                self.partition = Some(groups);
            }
            _ if self.partition.is_some() => {
                self.partition = None;
                self.log("partition healed".into());
            }
            _ => {}
        }
    }

    fn client_op(&mut self) {
        let up = self.up_nodes();
        let leaving: Vec<usize> = up.iter().copied().filter(|&j| self.nodes[j].leaving).collect();
        if !leaving.is_empty() && self.rng.chance(0.5) {
            // While a node leaves, its clients keep sending to it until it
            // exits, and others send the same counters elsewhere: the
            // shape that catches two coordinators of one key.
            let i = if self.rng.chance(0.5) { self.rng.pick(&leaving) } else { self.rng.pick(&up) };
            let key = counter_key(self.rng.below(COUNTERS as u64) as usize);
            self.client(i, key, ClientOp::Incr);
            self.check_touched();
            return;
        }
        let i = self.rng.pick(&up);
        if self.rng.chance(0.2) {
            let key = counter_key(self.rng.below(COUNTERS as u64) as usize);
            self.client(i, key, ClientOp::Incr);
            self.check_touched();
            return;
        }
        let plain = self.keys.len() - COUNTERS;
        let key = self.keys[self.rng.below(plain as u64) as usize].clone();
        let op = match self.rng.below(10) {
            0..=4 => ClientOp::Set(self.rng.below(1_000_000)),
            5..=7 => ClientOp::Incr,
            _ => ClientOp::Del,
        };
        self.client(i, key, op);
        self.check_touched();
    }

    fn chaos(&mut self, duration: u64) {
        let end = self.now + duration;
        let mut next_fault = self.now + self.rng.range(500 * MS, 3000 * MS);
        let mut ops = 0u64;
        while self.now < end {
            // Denser while a node leaves: the moment two coordinators of
            // one key could overlap is short (`LEAVE_GRACE`).
            let leaving = self.up_nodes().iter().any(|&j| self.nodes[j].leaving);
            let next_op = self.now + self.rng.range(MS, if leaving { 8 * MS } else { 40 * MS });
            self.run_until(next_op.min(end));
            if self.now >= end {
                break;
            }
            self.client_op();
            if self.now >= next_fault {
                self.fault();
                next_fault = self.now + self.rng.range(500 * MS, 3000 * MS);
            }
            ops += 1;
            if ops.is_multiple_of(50) {
                self.check_all();
            }
        }
    }

    fn run(&mut self, phases: usize, phase_ms: u64) {
        let initial = self.rng.range(3, MAX_NODES as u64) as usize;
        for i in 0..initial {
            self.start(i);
            let t = self.now + self.rng.range(0, 50 * MS);
            self.run_until(t);
        }
        // A cluster that formed and holds data before the faults begin.
        self.run_until(self.now + 2000 * MS);
        for _ in 0..phases {
            self.chaos(phase_ms * MS);
            self.converge();
        }
    }
}

/// The table to plan from (`net::rebalance::effective_old`).
fn effective_old(n: &Node, newcomer: bool, last: &Rc<Topology>, now: &Topology, replicas: usize) -> Rc<Topology> {
    if newcomer && now.nodes.len() > 1 { without(now, &n.name, replicas) } else { last.clone() }
}

/// `Topology::without`, memoized: the topology of `t`'s members but `name`.
fn without(t: &Topology, name: &str, replicas: usize) -> Rc<Topology> {
    let rest: Vec<String> = t.nodes.iter().filter(|n| n.name != name).map(|n| n.name.clone()).collect();
    let key = (rest[0].clone(), rest, replicas);
    memo(|m| &mut m.topos, key, || t.without(name, replicas, VNODES)).0
}

/// `RebalanceState::expect_imports`, over the same `rebalance::imports`.
fn expect_imports(n: &mut Node, joining: bool, old: &Topology, new: &Topology, replicas: usize) {
    if joining {
        n.imports.clear();
    }
    n.imports.retain(|&slot, _| new.table.owners(slot).contains(&new.me));
    let key = (names(old), names(new), n.name.clone(), replicas);
    let me = n.name.clone();
    let candidates = memo(
        |m| &mut m.imports,
        key,
        || imports(&old.table, &new.table, &me).into_iter().map(|(slot, from)| (slot, from.to_string())).collect(),
    )
    .0;
    for (slot, from) in candidates.iter() {
        if !(joining && n.received.contains(slot)) {
            n.imports.insert(*slot, from.clone());
        }
    }
}

// ---- memoized pure functions --------------------------------------------------------

/// The cluster modules are pure, and the same inputs recur constantly (every
/// node derives the same tables; a seed revisits the member sets of the
/// last one). Each distinct input still goes through the real code once per
/// test; a debug build could not afford it on every use.
#[derive(Default)]
struct Memo {
    /// (this node, member names, replicas) -> topology.
    topos: HashMap<(String, Vec<String>, usize), Rc<Topology>>,
    plans: HashMap<ChangeKey, Rc<Plan>>,
    /// The slots `me` must import, with their senders (before filtering by
    /// what a joining node already received).
    imports: HashMap<ChangeKey, Rc<Vec<(u16, String)>>>,
}

/// (old member names, new member names, this node, replicas).
type ChangeKey = (Vec<String>, Vec<String>, String, usize);

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// The value for `key` in the map `pick` selects, computed on a miss; and
/// whether it was computed now.
fn memo<K: std::hash::Hash + Eq, V>(
    pick: impl Fn(&mut Memo) -> &mut HashMap<K, Rc<V>>,
    key: K,
    compute: impl FnOnce() -> V,
) -> (Rc<V>, bool) {
    if let Some(v) = MEMO.with(|m| pick(&mut m.borrow_mut()).get(&key).cloned()) {
        return (v, false);
    }
    let v = Rc::new(compute());
    MEMO.with(|m| pick(&mut m.borrow_mut()).insert(key, v.clone()));
    (v, true)
}

fn names(t: &Topology) -> Vec<String> {
    t.nodes.iter().map(|n| n.name.clone()).collect()
}

/// `topology_of`, its placement memoized by the names it places (addresses
/// and weights are fixed per name here), with the generations of now
/// (topology_of keeps the newest of each name; they are in the members
/// digest, so a cached table must not carry another run's). The epoch is
/// the node's own count, kept beside it.
fn memo_topology(me: &NodeIdentity, members: &[NodeIdentity], epoch: u64, replicas: usize) -> (Rc<Topology>, bool) {
    let mut placed: BTreeSet<String> =
        members.iter().filter(|m| !m.is_seed_placeholder()).map(|m| m.name.clone()).collect();
    placed.insert(me.name.clone());
    let key = (me.name.clone(), placed.into_iter().collect(), replicas);
    let (cached, fresh) = memo(|m| &mut m.topos, key, || topology_of(me, members, epoch, replicas, VNODES));
    let newest = |name: &str| {
        if name == me.name {
            return me.generation;
        }
        members.iter().filter(|m| m.name == name).map(|m| m.generation).max().unwrap_or(0)
    };
    if cached.nodes.iter().all(|n| n.generation == newest(&n.name)) {
        return (cached, fresh);
    }
    (Rc::new(cached.with_generations(newest)), fresh)
}

fn memo_plan(old: &Topology, new: &Topology, me: &str, replicas: usize) -> Rc<Plan> {
    let key = (names(old), names(new), me.to_string(), replicas);
    memo(|m| &mut m.plans, key, || plan(&old.table, &new.table, me)).0
}

// ---- the tests ----------------------------------------------------------------------

/// Seeds per `cargo test` run; RINGCACHE_SIM_SEEDS overrides.
const DEFAULT_SEEDS: u64 = 40;
const PHASES: usize = 2;
const PHASE_MS: u64 = 6000;
/// Seeds each sabotage gets to be caught in. `NoCopies` takes the most
/// (seed 119 since leaves hand over and draw denser INCRs; 67 since
/// graceful leaves joined the fault mix; 27 before): since writes fetch a
/// key still arriving from the slot's previous owner, missing copies lose
/// no acknowledged write and show only as owners that never agree.
const SABOTAGE_SEEDS: u64 = 160;

thread_local! {
    /// Set while a simulation runs: its panics become reports, not noise.
    static IN_SIM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn quiet_panics_in_simulations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_SIM.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
}

fn run_seed(seed: u64, sabotage: Sabotage) -> Result<Stats, String> {
    run_seed_checking(seed, sabotage, sabotage.mode())
}

fn run_seed_checking(seed: u64, sabotage: Sabotage, mode: Mode) -> Result<Stats, String> {
    quiet_panics_in_simulations();
    let mut sim = Sim::new(seed, sabotage);
    sim.check_counters = mode.counters;
    sim.partitions = mode.partitions;
    IN_SIM.with(|f| f.set(true));
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| sim.run(PHASES, PHASE_MS)));
    IN_SIM.with(|f| f.set(false));
    match r {
        Ok(()) => Ok(sim.stats),
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            let trace: Vec<String> = sim.trace.iter().cloned().collect();
            Err(format!(
                "simulation seed {seed} failed at t={:.3} ms, step {}: {why}\n\
                 replay: RINGCACHE_SIM_SEED={seed} cargo test -p ringcache-server --test simulation\n\
                 last events:\n  {}",
                sim.now as f64 / MS as f64,
                sim.stats.steps,
                trace.join("\n  ")
            ))
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number")))
}

/// The checker itself: every way of breaking the model must be caught
/// within a few seeds (each is expected to fail; a pass is the error).
/// About 25 s, so not part of the default run:
/// `cargo test -p ringcache-server --test simulation sabotaged -- --ignored --nocapture`;
/// `RINGCACHE_SIM_SABOTAGE=<Name>` runs just one, with its report.
#[test]
#[ignore = "checks the checker; about 25 s"]
fn sabotaged_models_are_caught() {
    let only = std::env::var("RINGCACHE_SIM_SABOTAGE").ok();
    let mut missed = Vec::new();
    for sabotage in Sabotage::ALL {
        if only.as_ref().is_some_and(|o| *o != format!("{sabotage:?}")) {
            continue;
        }
        let seeds = env_u64("RINGCACHE_SIM_SEEDS").unwrap_or(SABOTAGE_SEEDS);
        let caught = (0..seeds).find_map(|seed| run_seed(seed, sabotage).err());
        match caught {
            Some(report) => {
                let first = report.lines().next().unwrap_or_default().to_string();
                eprintln!("{sabotage:?} caught: {first}");
                if only.is_some() {
                    eprintln!("{report}");
                }
            }
            None => missed.push(sabotage),
        }
    }
    assert!(missed.is_empty(), "sabotage not caught in {SABOTAGE_SEEDS} seeds: {missed:?}");
}

#[test]
fn simulated_clusters_keep_their_invariants() {
    run_seeds(Mode::ALL_FAULTS);
}

/// Without partitions every acknowledged INCR answers a distinct value:
/// one coordinator per counter at a time through crashes, restarts,
/// joins and graceful leaves (a leaver hands its slots over first).
#[test]
fn counters_stay_exact_without_partitions() {
    run_seeds(Mode::EXACT_COUNTERS);
}

/// Seeds that once failed the exact-counter check, run by it besides the
/// default range. 389 (without partitions): a joining node, new primary
/// of a counter, fetched it from the old primary before that one had the
/// new table, which then kept coordinating its own clients' INCRs (two
/// answered 76); the fenced `RC.READ` fixed it. 90, 116, 210, 417, 549,
/// 559 (with partitions): INCRs two owners on the minority side
/// acknowledged before they noticed the partition, lost when the
/// majority side took the counter over from the third owner's copy (90,
/// 116); the same through a node that joined the majority side meanwhile
/// (210: keepers travel with slot copies), a minority node's graceful
/// leave whose drain could not finish (549: it no longer announces the
/// leave), a restarted node counting itself among the keepers (417,
/// 559); `cluster::keepers` fixed them.
const EXACT_COUNTER_REGRESSIONS: &[(u64, Mode)] = &[
    (389, Mode::EXACT_COUNTERS),
    (90, Mode::ALL_FAULTS),
    (116, Mode::ALL_FAULTS),
    (210, Mode::ALL_FAULTS),
    (417, Mode::ALL_FAULTS),
    (549, Mode::ALL_FAULTS),
    (559, Mode::ALL_FAULTS),
];

#[test]
fn counters_stay_exact_in_past_failures() {
    if env_u64("RINGCACHE_SIM_SEED").is_some() {
        return; // a replay runs its one seed in the other tests
    }
    for &(seed, mode) in EXACT_COUNTER_REGRESSIONS {
        if let Err(report) = run_seed_checking(seed, Sabotage::None, mode) {
            panic!("{report}");
        }
    }
}

fn run_seeds(mode: Mode) {
    let seeds: Vec<u64> = match env_u64("RINGCACHE_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let first = env_u64("RINGCACHE_SIM_FIRST").unwrap_or(0);
            let count = env_u64("RINGCACHE_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
            (first..first + count).collect()
        }
    };
    let mut total = Stats::default();
    let mut failures: Vec<String> = Vec::new();
    for &seed in &seeds {
        match run_seed_checking(seed, Sabotage::None, mode) {
            Ok(s) => {
                total.steps += s.steps;
                total.crashes += s.crashes;
                total.restarts += s.restarts;
                total.joins += s.joins;
                total.partitions += s.partitions;
                total.table_changes += s.table_changes;
                total.copies += s.copies;
                total.drops += s.drops;
                total.repairs += s.repairs;
                total.repairs_deferred += s.repairs_deferred;
                total.converged += s.converged;
                total.excused += s.excused;
                total.refused_awaiting_seed += s.refused_awaiting_seed;
                total.refused_minority += s.refused_minority;
                total.stuck_restarts += s.stuck_restarts;
                total.fetches += s.fetches;
                total.fetch_refusals += s.fetch_refusals;
                total.counter_incrs += s.counter_incrs;
                total.leaves += s.leaves;
                total.keeper_refusals += s.keeper_refusals;
                total.blocked_for_good += s.blocked_for_good;
                total.quiet_rejoins += s.quiet_rejoins;
                total.forwards_again += s.forwards_again;
                total.forwards_expired += s.forwards_expired;
                total.forwards_given_up += s.forwards_given_up;
                total.keeper_holds += s.keeper_holds;
                total.forward_fetch_refusals += s.forward_fetch_refusals;
                total.packets += s.packets;
                total.packets_lost += s.packets_lost;
                total.msgs += s.msgs;
                total.msgs_lost += s.msgs_lost;
            }
            Err(report) => failures.push(report),
        }
    }
    if let Some(first) = failures.first() {
        let list: Vec<String> = failures
            .iter()
            .map(|r| r.lines().next().unwrap_or_default().chars().take(300).collect::<String>())
            .collect();
        panic!(
            "{} of {} seeds failed:\n  {}\n\nfirst failure:\n{first}",
            failures.len(),
            seeds.len(),
            list.join("\n  ")
        );
    }
    eprintln!("{} seeds passed: {total:?}", seeds.len());
}
