//! The membership driver: the one task that owns this node's `foca`
//! instance and its UDP socket (the cluster port).
//!
//! It feeds foca three kinds of input — packets (after checking their MAC),
//! timers (kept in a deadline-ordered queue and handed back in order), and
//! announces — and carries out what foca asks: sealed packets to send,
//! timers to schedule, notifications. Membership changes are debounced
//! (`PUBLISH_DELAY`, 25 ms) and then turned into a new [`Topology`] that replaces
//! the node's whole.
//!
//! Joining: until this node has members it announces to every seed each
//! `ANNOUNCE_PERIOD`; afterwards it still announces to any seed that is not
//! a member, so nodes started in any order, or two halves that formed
//! separately, end up as one cluster. foca does not retry announces itself.
//! On shutdown the node leaves the cluster before the socket closes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use crate::cluster::lifecycle::{Event, Phase};
use crate::cluster::membership::{
    CheckedCodec, NodeIdentity, PacketKey, Rejected, SEAL_OVERHEAD, announce_targets, connected_after, members_digest,
    name_conflicts, topology_of,
};
use crate::cluster::{absence, majority};
use crate::config::GossipTiming;
use crate::shared::Shared;

const ANNOUNCE_PERIOD: Duration = Duration::from_millis(500);
const PUBLISH_DELAY: Duration = Duration::from_millis(25);
const PACKET_MAX: usize = 1400;
const REJECT_LOG_PERIOD: Duration = Duration::from_secs(10);
/// How long two live members may share a name before it is reported (a
/// node that came back under a new address shares it with its old self
/// until that is declared down).
const CONFLICT_GRACE: Duration = Duration::from_secs(10);

type Node = Foca<NodeIdentity, CheckedCodec, StdRng, NoCustomBroadcast>;

/// foca's settings from ours.
pub fn foca_config(t: &GossipTiming) -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::new(32).expect("non-zero"));
    c.probe_period = t.probe_period;
    c.probe_rtt = t.probe_rtt;
    c.suspect_to_down_after = t.suspect;
    c.max_packet_size = NonZeroUsize::new(PACKET_MAX - SEAL_OVERHEAD).expect("non-zero");
    c.periodic_gossip =
        Some(foca::PeriodicParams { frequency: t.interval, num_members: NonZeroUsize::new(3).expect("3") });
    c.periodic_announce =
        Some(foca::PeriodicParams { frequency: Duration::from_secs(5), num_members: NonZeroUsize::new(1).expect("1") });
    c.periodic_announce_to_down_members =
        Some(foca::PeriodicParams { frequency: Duration::from_secs(5), num_members: NonZeroUsize::new(2).expect("2") });
    c
}

/// Whether `timer` is a suspicion's down timer that no longer stands: the
/// member refuted it (a higher incarnation) or is gone under that identity.
/// foca 2.0 would still send it `TurnUndead` (its `apply_existing_if`
/// answers `Some` when the "still suspected" condition fails, and the
/// caller sends on any `Some`), so a healthy member whose probe failed once
/// rejoins under a new generation: under 5 % packet loss that was a table
/// change every 1.6 s in a 3-node cluster, each re-copying the rejoiner's
/// slots (TESTING.md). Such a timer is dropped before foca sees it; a
/// suspicion that stands goes on to Down as before.
/// `members` is foca's `iter_membership_state()` (the simulation asks the
/// same).
pub fn suspicion_refuted<'a>(
    mut members: impl Iterator<Item = &'a foca::Member<NodeIdentity>>,
    timer: &Timer<NodeIdentity>,
) -> bool {
    let Timer::ChangeSuspectToDown { member_id, incarnation, .. } = timer else { return false };
    !members.any(|m| m.id() == member_id && m.state() == foca::State::Suspect && m.incarnation() == *incarnation)
}

/// The absence rule for `config`: it tolerates the tombstone grace less
/// the failure detection that passes before an absence is noticed, and
/// waits a settle window for the news that the others went on.
fn absence_of(config: &crate::config::Config) -> absence::Absence {
    let probe = config.gossip.probe_period.as_millis() as u64;
    let suspect = config.gossip.suspect.as_millis() as u64;
    absence::Absence::new(
        config.tombstone_grace.as_millis() as u64,
        probe + suspect,
        majority::settle_ms(probe, suspect),
    )
}

/// Everything the driver needs to start.
pub struct Gossip {
    pub socket: UdpSocket,
    pub me: NodeIdentity,
    pub seeds: Vec<String>,
    pub key: PacketKey,
    pub timing: GossipTiming,
    /// The seeds resolved (without this node), by [`Gossip::resolve_seeds`]
    /// before the driver starts; the driver resolves again while empty.
    pub seed_addrs: Vec<SocketAddr>,
    /// No seed but itself: serve as the first node after
    /// `--founding-wait-ms` unless a member finds it first.
    pub founding: bool,
}

struct Driver {
    shared: Arc<Shared>,
    /// Set once this node leaves on shutdown.
    leaving: bool,
    socket: UdpSocket,
    key: PacketKey,
    foca: Node,
    runtime: AccumulatingRuntime<NodeIdentity>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer<NodeIdentity>)>>,
    /// foca's periodic gossip timer while foca has nothing to spread (see
    /// `drain`), with the time it was due.
    held_gossip: Option<(Instant, Timer<NodeIdentity>)>,
    timer_seq: u64,
    seeds: Vec<String>,
    seed_addrs: Vec<SocketAddr>,
    /// Announce ticks so far (known addresses take turns while not
    /// connected), and whether foca is connected (`connected_after`).
    announce_tick: u64,
    connected: bool,
    publish_at: Option<Instant>,
    epoch: u64,
    digest: u64,
    send_buf: Vec<u8>,
    rejected_since_log: u64,
    last_reject_log: Option<Instant>,
    /// Member records the codec refused (shared with it), and how many of
    /// them were reported already.
    refused: Arc<std::sync::atomic::AtomicU64>,
    refused_seen: u64,
    last_refuse_log: Option<Instant>,
    last_conflict_log: Option<Instant>,
    last_settings_log: Option<Instant>,
    /// Since when some name has had two live members.
    conflict_since: Option<Instant>,
    /// Which tables this node may adopt (`cluster::majority`), on the
    /// driver's clock (ms since `started`).
    view: majority::View,
    started: Instant,
    /// Away longer than the tombstone grace (`cluster::absence`), on the
    /// driver's clock.
    absence: absence::Absence,
}

pub async fn run(shared: Arc<Shared>, g: Gossip, mut stop: watch::Receiver<bool>) {
    let seed = xxhash_rust::xxh3::xxh3_64(format!("{:?}", g.me).as_bytes());
    let codec = CheckedCodec::default();
    let refused = codec.refused.clone();
    let foca = Foca::new(g.me.clone(), foca_config(&g.timing), StdRng::seed_from_u64(seed), codec);
    let topology = shared.topology();
    let absence = absence_of(&shared.config);
    let mut d = Driver {
        absence,
        digest: members_digest(&topology),
        epoch: topology.table.epoch,
        shared,
        socket: g.socket,
        key: g.key,
        foca,
        runtime: AccumulatingRuntime::new(),
        timers: BinaryHeap::new(),
        held_gossip: None,
        timer_seq: 0,
        leaving: false,
        seeds: g.seeds,
        seed_addrs: g.seed_addrs,
        announce_tick: 0,
        connected: false,
        publish_at: None,
        send_buf: Vec::with_capacity(PACKET_MAX),
        rejected_since_log: 0,
        last_reject_log: None,
        refused,
        refused_seen: 0,
        last_refuse_log: None,
        last_conflict_log: None,
        last_settings_log: None,
        conflict_since: None,
        view: majority::View::new(&g.me.name),
        started: Instant::now(),
    };
    let join_by = Instant::now() + d.shared.config.join_timeout;
    let found_by = Instant::now() + d.shared.config.founding_wait;
    let founding = g.founding;
    let mut announce = tokio::time::interval(ANNOUNCE_PERIOD);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let next_timer = d.timers.peek().map(|Reverse((at, _, _))| *at);
        let publish_at = d.publish_at;
        tokio::select! {
            r = d.socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => d.packet(&buf[..n], from),
                Err(e) => debug!(error = %e, "gossip receive failed"),
            },
            _ = async { sleep_until(next_timer.expect("guarded")).await }, if next_timer.is_some() => d.due_timers(),
            _ = announce.tick() => {
                if founding
                    && Instant::now() >= found_by
                    && d.shared.lifecycle.on(Event::SeedsAreMe) == (Phase::AwaitingSeed, Phase::Joining)
                {
                    info!(
                        waited_ms = d.shared.config.founding_wait.as_millis() as u64,
                        "no member found this node within --founding-wait-ms: serving as the first node of its cluster"
                    );
                }
                let waited_out = !founding && !d.shared.config.join_timeout.is_zero() && Instant::now() >= join_by;
                if waited_out && d.shared.lifecycle.on(Event::JoinTimeout) == (Phase::AwaitingSeed, Phase::Alone) {
                    warn!(
                        seeds = ?d.seeds,
                        waited_ms = d.shared.config.join_timeout.as_millis() as u64,
                        "no seed answered within the join timeout: serving alone"
                    );
                }
                d.absence_tick();
                d.announce().await;
                d.report_conflicts();
            }
            _ = async { sleep_until(publish_at.expect("guarded")).await }, if publish_at.is_some() => d.publish(),
            _ = d.shared.leave_notice.notified() => {
                if d.take_leaves() {
                    d.publish_at.get_or_insert(Instant::now() + PUBLISH_DELAY);
                }
            }
            _ = stop.changed() => {
                d.leaving = true;
                if let Err(e) = d.foca.leave_cluster(&mut d.runtime) {
                    debug!(error = %e, "leaving the cluster");
                }
                d.drain().await;
                info!("left the cluster");
                return;
            }
        }
        d.drain().await;
    }
}

/// Whether seed address `a` is this node's own cluster port (`mine`, or
/// this port on loopback or the unspecified address).
fn is_me(a: SocketAddr, mine: SocketAddr) -> bool {
    a == mine || (a.port() == mine.port() && (a.ip().is_loopback() || a.ip().is_unspecified()))
}

/// The seeds' addresses, leaving out this node's own (`mine`), and
/// whether every seed resolved.
async fn resolve(seeds: &[String], mine: SocketAddr) -> (Vec<SocketAddr>, bool) {
    let mut addrs = Vec::new();
    let mut all = true;
    for s in seeds {
        match tokio::net::lookup_host(s.as_str()).await {
            Ok(found) => addrs.extend(found.filter(|a| !is_me(*a, mine))),
            Err(e) => {
                all = false;
                warn!(seed = %s, error = %e, "cannot resolve seed")
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    (addrs, all)
}

impl Gossip {
    /// Resolves the seeds into `seed_addrs`; whether they all name this
    /// node (or there are none): it is then a cluster of its own, not a
    /// member waiting to meet one.
    pub async fn resolve_seeds(&mut self) -> bool {
        let (others, all) = resolve(&self.seeds, self.me.gossip_addr).await;
        self.seed_addrs = others;
        all && self.seed_addrs.is_empty()
    }
}

impl Driver {
    /// Resolves the seeds again; a seed that does not resolve now (DNS
    /// down for a moment) keeps its last addresses.
    async fn resolve_seeds(&mut self) {
        let (addrs, all) = resolve(&self.seeds, self.foca.identity().gossip_addr).await;
        if all || self.seed_addrs.is_empty() {
            self.seed_addrs = addrs;
        } else {
            self.seed_addrs.extend(addrs);
            self.seed_addrs.sort();
            self.seed_addrs.dedup();
        }
    }

    fn packet(&mut self, packet: &[u8], from: SocketAddr) {
        match self.key.open(packet) {
            Ok(payload) => {
                if let Err(e) = self.foca.handle_data(payload, &mut self.runtime) {
                    let refused = self.refused.load(Relaxed);
                    if refused > self.refused_seen {
                        self.shared.metrics.gossip_members_refused.fetch_add(refused - self.refused_seen, Relaxed);
                        self.refused_seen = refused;
                        let now = Instant::now();
                        if self.last_refuse_log.is_none_or(|t| now.duration_since(t) >= REJECT_LOG_PERIOD) {
                            warn!(%from, error = %e, refused, "refused a gossip packet with an invalid member record");
                            self.last_refuse_log = Some(now);
                        }
                    } else {
                        self.shared.metrics.gossip_errors.fetch_add(1, Relaxed);
                        debug!(%from, error = %e, "gossip packet not usable");
                    }
                }
            }
            Err(Rejected::SettingsDiffer(theirs)) => {
                self.shared.metrics.gossip_settings_mismatch.fetch_add(1, Relaxed);
                let now = Instant::now();
                if self.last_settings_log.is_none_or(|t| now.duration_since(t) >= REJECT_LOG_PERIOD) {
                    error!(
                        %from,
                        "a node at {from} runs with other cluster settings ({theirs}) than this one ({}); it is \
                         refused: every member needs the same --replicas, --vnodes, --write-quorum, --read-quorum, \
                         --tombstone-grace and --partition-mode",
                        self.shared.config.cluster_settings()
                    );
                    self.last_settings_log = Some(now);
                }
            }
            Err(why) => {
                self.shared.metrics.gossip_rejected.fetch_add(1, Relaxed);
                self.rejected_since_log += 1;
                let now = Instant::now();
                if self.last_reject_log.is_none_or(|t| now.duration_since(t) >= REJECT_LOG_PERIOD) {
                    warn!(
                        %from,
                        reason = ?why,
                        dropped = self.rejected_since_log,
                        "dropping gossip packets that are not from this cluster (other cluster name, or a wrong or missing secret)"
                    );
                    self.last_reject_log = Some(now);
                    self.rejected_since_log = 0;
                }
            }
        }
    }

    fn due_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, _, timer)) = self.timers.pop().expect("peeked");
            if suspicion_refuted(self.foca.iter_membership_state(), &timer) {
                self.shared.metrics.gossip_refuted_suspicions.fetch_add(1, Relaxed);
                continue;
            }
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                debug!(error = %e, "gossip timer");
            }
        }
    }

    async fn announce(&mut self) {
        // Every time: a seed that is a host name may have moved (a pod
        // restarted with a new address).
        if !self.seeds.is_empty() {
            self.resolve_seeds().await;
        }
        let me = self.foca.identity().gossip_addr;
        let active: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().gossip_addr).collect();
        let down: Vec<SocketAddr> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| m.id().gossip_addr)
            .collect();
        self.announce_tick += 1;
        for addr in announce_targets(me, &self.seed_addrs, &active, &down, self.connected, self.announce_tick) {
            let _ = self.foca.announce(NodeIdentity::seed(addr), &mut self.runtime);
        }
    }

    /// Carries out what foca asked for.
    async fn drain(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.send_buf.clear();
            self.key.seal(&data, &mut self.send_buf);
            if let Err(e) = self.socket.send_to(&self.send_buf, to.gossip_addr).await {
                debug!(to = ?to, error = %e, "gossip send failed");
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            if matches!(timer, Timer::PeriodicGossip(_)) {
                // The newest one stands (an older token is void anyway).
                self.held_gossip = Some((now + after, timer));
                continue;
            }
            self.timer_seq += 1;
            self.timers.push(Reverse((now + after, self.timer_seq, timer)));
        }
        // foca's periodic gossip timer only re-arms itself while it has no
        // update to spread: it is held back until foca has one, so an idle
        // member does not wake for it (`interval` times a second). It then
        // fires at its time, or at once if that has passed.
        if self.foca.updates_backlog() > 0
            && let Some((at, timer)) = self.held_gossip.take()
        {
            self.timer_seq += 1;
            self.timers.push(Reverse((at.max(now), self.timer_seq, timer)));
        }
        while let Some(n) = self.runtime.to_notify() {
            self.connected = connected_after(self.connected, &n);
            match &n {
                OwnedNotification::MemberUp(m) => info!(member = ?m, "member up"),
                OwnedNotification::MemberDown(m) => info!(member = ?m, "member down"),
                OwnedNotification::Rename(a, b) => info!(from = ?a, to = ?b, "member renewed its identity"),
                OwnedNotification::Active => info!("joined the cluster"),
                OwnedNotification::Idle => info!("no other members known"),
                // Leaving makes this node defunct on purpose: only news
                // otherwise.
                OwnedNotification::Defunct if self.leaving => debug!("this node left its membership"),
                OwnedNotification::Defunct => {
                    // The others moved on without this node: any slot may
                    // have newer writes elsewhere.
                    warn!("this node was declared down");
                    self.declared_down();
                }
                OwnedNotification::Rejoin(id) => {
                    // Declared down (foca renewed the identity without a
                    // Defunct first): as above.
                    info!(identity = ?id, "rejoined under a new generation");
                    self.declared_down();
                }
            }
            // Debounce: a burst of changes (a node joining a big cluster,
            // a refuted suspicion) becomes one new topology.
            self.publish_at.get_or_insert(now + PUBLISH_DELAY);
        }
    }

    /// The absence rule's tick (`cluster::absence`): how many members of
    /// the reference table this node sees, and whether it is returning.
    fn absence_tick(&mut self) {
        if self.take_leaves() {
            self.publish_at.get_or_insert(Instant::now() + PUBLISH_DELAY);
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        let me = self.foca.identity().name.clone();
        let live: std::collections::HashSet<&str> =
            self.foca.iter_members().map(|m| m.id().name.as_str()).chain([me.as_str()]).collect();
        let of = self.view.reference().count().max(1);
        let seen = self.view.reference().filter(|n| live.contains(n)).count().clamp(1, of);
        let verdict = self.absence.tick(now_ms, seen, of);
        if verdict == absence::Verdict::Returning && !self.shared.returning(super::unix_ms()) {
            warn!(
                grace_ms = self.shared.config.tombstone_grace.as_millis() as u64,
                "this node has been away from most of its cluster for longer than --tombstone-grace: it spreads \
                 none of its data and refuses writes until it learns whether the others went on without it"
            );
        }
        self.shared.set_presence(super::unix_ms(), self.absence.limit(), verdict == absence::Verdict::Returning);
    }

    /// The others declared this node down: any slot may have newer writes
    /// elsewhere, and after an absence longer than the tombstone grace
    /// this node's copy may hold keys they deleted and forgot.
    fn declared_down(&mut self) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if let absence::Verdict::Wipe { away_ms } = self.absence.declared_down(now_ms) {
            warn!(
                away_ms,
                grace_ms = self.shared.config.tombstone_grace.as_millis() as u64,
                "this node was away longer than --tombstone-grace while the others went on without it: emptying its \
                 copy (deletes it missed would come back) and taking the cluster's data again, as a newcomer does"
            );
            let old = self.shared.store.flush();
            std::thread::spawn(move || drop(old));
            self.shared.metrics.absence_wipes.fetch_add(1, Relaxed);
        }
        self.shared.set_presence(super::unix_ms(), self.absence.limit(), self.absence.returning());
        self.shared.unsettle(0..ringcache_protocol::SLOT_COUNT);
    }

    /// The settle window of `cluster::majority` for this node's gossip
    /// timing (ms).
    fn settle_ms(&self) -> u64 {
        let g = &self.shared.config.gossip;
        majority::settle_ms(g.probe_period.as_millis() as u64, g.suspect.as_millis() as u64)
    }

    /// Takes the graceful leaves peers announced into the majority view;
    /// whether the member set should be read anew.
    fn take_leaves(&mut self) -> bool {
        let leaves = self.shared.take_leaves();
        let now_ms = self.started.elapsed().as_millis() as u64;
        let window = self.settle_ms();
        for name in &leaves {
            // The generation gossip knows it by now: a later one is the
            // node restarted, a newcomer.
            let generation =
                self.foca.iter_members().map(|m| m.id()).find(|m| m.name == *name).map_or(0, |m| m.generation);
            self.view.depart(name, generation, now_ms, window);
        }
        // Past the window, a member of that name that gossip still lists
        // (restarted under its old name) counts again.
        self.view.expire_departed(now_ms, window) || !leaves.is_empty()
    }

    fn publish(&mut self) {
        self.publish_at = None;
        self.take_leaves();
        let me = self.foca.identity().clone();
        let now_ms = self.started.elapsed().as_millis() as u64;
        let settle = self.settle_ms();
        // A member that announced its leave is gone even while gossip
        // still spreads the news.
        let members: Vec<NodeIdentity> = self
            .foca
            .iter_members()
            .map(|m| m.id().clone())
            .filter(|m| !self.view.departed(&m.name, m.generation, now_ms, settle))
            .collect();
        let config = &self.shared.config;
        let probe = topology_of(&me, &members, self.epoch, config.replicas as usize, config.vnodes);
        // Only a side that sees most of the members this node last agreed
        // with changes the table (`cluster::majority`); the other keeps it
        // and refuses writes until they are back.
        let decision =
            self.view.decide(config.partition_mode, probe.nodes.iter().map(|n| n.name.as_str()), now_ms, settle);
        if let majority::Decision::Minority { seen, of } = decision {
            if self.shared.minority().is_none() {
                warn!(
                    seen,
                    of,
                    "this node sees only {seen} of the {of} members of its slot table: on the minority side of a \
                     partition, it keeps its table and refuses writes until most of them are back \
                     (--partition-mode available serves both sides)"
                );
            }
            self.shared.set_minority(Some((seen, of)));
            return;
        }
        if self.shared.minority().is_some() {
            info!("most members of the slot table are back: accepting writes again");
            self.shared.set_minority(None);
        }
        let digest = members_digest(&probe);
        if digest == self.digest {
            return;
        }
        self.epoch += 1;
        self.digest = digest;
        let topology = topology_of(&me, &members, self.epoch, config.replicas as usize, config.vnodes);
        let names: Vec<&str> = topology.nodes.iter().map(|n| n.name.as_str()).collect();
        info!(epoch = self.epoch, members = ?names, "slot table changed");
        self.shared.metrics.topology_changes.fetch_add(1, Relaxed);
        // Links first, so requests routed by the new table find them.
        if topology.nodes.len() > 1 {
            self.shared.store.set_keep_tombstones(true);
        }
        // Distinct version node ids within the table (ties never happen).
        let id =
            crate::cluster::topology::version_node_id(names.iter().copied(), &me.name, crate::store::VERSION_NODE_BITS);
        self.shared.store.set_node_id(id);
        super::link::sync(&self.shared, &topology);
        // Members of the last table gone from this one that announced
        // their leave: they drained their slots first (`cluster::keepers`).
        let last = self.shared.topology();
        let graceful: Vec<&str> = last
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| !names.contains(n) && self.view.departed(n, 0, now_ms, settle))
            .collect();
        super::rebalance::before_publish(&self.shared, &topology, &graceful);
        let met = topology.nodes.len() > 1;
        self.shared.set_topology(topology);
        // `before_publish` marked the slots whose owners changed before the
        // table was in force; a comparison that read the marking generation
        // after that but the table before it would settle them on the old
        // owners (a lone node settling everything just as the table with
        // its returning peers came). A second mark after the publish voids
        // it (`RebalanceState::unsettle_gen`).
        self.shared.unsettle(std::iter::empty());
        if met {
            // Only now: until the table names a member, keys stay refused.
            self.shared.lifecycle.met();
        }
    }

    /// Two live members with one name: only one of them (this node, else
    /// the newest generation) is in the table. A node restarted with a new
    /// address looks like that until its old self is declared down, so
    /// only a conflict that lasts `CONFLICT_GRACE` is counted and logged
    /// (at a limited rate).
    fn report_conflicts(&mut self) {
        let me = self.foca.identity().clone();
        let members: Vec<NodeIdentity> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        let conflicts = name_conflicts(&me, &members);
        let now = Instant::now();
        if conflicts.is_empty() {
            self.conflict_since = None;
            return;
        }
        let since = *self.conflict_since.get_or_insert(now);
        if now.duration_since(since) < CONFLICT_GRACE
            || self.last_conflict_log.is_some_and(|t| now.duration_since(t) < REJECT_LOG_PERIOD)
        {
            return;
        }
        self.last_conflict_log = Some(now);
        self.shared.metrics.gossip_name_conflicts.fetch_add(conflicts.len() as u64, Relaxed);
        for (refused, kept) in conflicts {
            error!(
                name = %refused.name,
                refused = %refused.gossip_addr,
                kept = %kept.gossip_addr,
                "two live nodes use one node name: the one at `refused` is left out of the table; \
                 give each node a unique --node-name (the default is host name:port)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::AccumulatingRuntime as Rt;

    fn id(name: &str, n: u8) -> NodeIdentity {
        NodeIdentity {
            name: name.into(),
            generation: 1,
            gossip_addr: SocketAddr::from(([10, 0, 0, n], 17379)),
            client_addr: SocketAddr::from(([10, 0, 0, n], 7379)),
            weight: 1,
        }
    }

    /// One foca with its runtime and the timers it asked for.
    struct Peer {
        foca: Node,
        rt: Rt<NodeIdentity>,
        timers: Vec<Timer<NodeIdentity>>,
    }

    impl Peer {
        fn new(me: NodeIdentity) -> Peer {
            let t = GossipTiming {
                probe_period: Duration::from_millis(200),
                probe_rtt: Duration::from_millis(100),
                suspect: Duration::from_millis(400),
                interval: Duration::from_millis(100),
            };
            let foca = Foca::new(me, foca_config(&t), StdRng::seed_from_u64(7), CheckedCodec::default());
            Peer { foca, rt: Rt::new(), timers: Vec::new() }
        }

        /// Moves the timers asked for into `timers`; returns the packets.
        fn outbox(&mut self) -> Vec<Vec<u8>> {
            while let Some((_, t)) = self.rt.to_schedule() {
                self.timers.push(t);
            }
            while self.rt.to_notify().is_some() {}
            std::iter::from_fn(|| self.rt.to_send()).map(|(_, d)| d.to_vec()).collect()
        }

        /// Takes the first pending timer `pick` accepts.
        fn take_timer(&mut self, pick: impl Fn(&Timer<NodeIdentity>) -> bool) -> Timer<NodeIdentity> {
            self.outbox();
            let i = self.timers.iter().position(pick).expect("such a timer is pending");
            self.timers.remove(i)
        }
    }

    /// Delivers every packet each side has for the other until both are quiet.
    fn pump(a: &mut Peer, b: &mut Peer) {
        for _ in 0..20 {
            let (to_b, to_a) = (a.outbox(), b.outbox());
            if to_a.is_empty() && to_b.is_empty() {
                return;
            }
            to_b.iter().for_each(|d| drop(b.foca.handle_data(d, &mut b.rt)));
            to_a.iter().for_each(|d| drop(a.foca.handle_data(d, &mut a.rt)));
        }
        panic!("gossip between two members did not go quiet");
    }

    /// a probes b, loses the ping and suspects b; b hears of it and refutes
    /// it before a's down timer fires. Returns b's identity after the timer
    /// ran through the shell's check (`checked`) or straight into foca.
    fn refuted_suspicion(checked: bool) -> (NodeIdentity, NodeIdentity) {
        let (mut a, mut b) = (Peer::new(id("a", 1)), Peer::new(id("b", 2)));
        a.foca.announce(id("b", 2), &mut a.rt).expect("announce");
        pump(&mut a, &mut b);
        assert_eq!((a.foca.num_members(), b.foca.num_members()), (1, 1), "they met");
        let probe = |t: &Timer<NodeIdentity>| matches!(t, Timer::ProbeRandomMember(_));
        // First probe: the ping to b is lost, and a has nobody to ask instead.
        let t = a.take_timer(probe);
        a.foca.handle_timer(t, &mut a.rt).expect("probe");
        a.outbox();
        let t = a.take_timer(|t| matches!(t, Timer::SendIndirectProbe { .. }));
        a.foca.handle_timer(t, &mut a.rt).expect("indirect");
        a.outbox();
        // The next probe round marks b suspect and pings it again, with the news.
        let t = a.take_timer(probe);
        a.foca.handle_timer(t, &mut a.rt).expect("probe");
        let suspected = a.foca.iter_membership_state().any(|m| m.state() == foca::State::Suspect);
        assert!(suspected, "a suspects b");
        // b refutes; a learns it.
        pump(&mut a, &mut b);
        assert!(a.foca.iter_membership_state().all(|m| m.state() == foca::State::Alive), "b refuted in time");
        let down = a.take_timer(|t| matches!(t, Timer::ChangeSuspectToDown { .. }));
        if !(checked && suspicion_refuted(a.foca.iter_membership_state(), &down)) {
            a.foca.handle_timer(down, &mut a.rt).expect("down timer");
        }
        pump(&mut a, &mut b);
        (id("b", 2), b.foca.identity().clone())
    }

    #[test]
    fn a_refuted_suspicion_does_not_force_the_member_to_rejoin() {
        let (before, after) = refuted_suspicion(true);
        assert_eq!(after, before, "b keeps its identity: no table change, no re-copy");
        // Without the check foca 2.0 tells b it is down anyway. If this
        // fails, foca no longer does: `suspicion_refuted` may go.
        let (before, after) = refuted_suspicion(false);
        assert_ne!(after, before, "foca itself forces b to rejoin after a refuted suspicion");
    }

    #[test]
    fn a_standing_suspicion_still_goes_down() {
        let (mut a, mut b) = (Peer::new(id("a", 1)), Peer::new(id("b", 2)));
        a.foca.announce(id("b", 2), &mut a.rt).expect("announce");
        pump(&mut a, &mut b);
        for _ in 0..2 {
            let t = a.take_timer(|t| matches!(t, Timer::ProbeRandomMember(_)));
            a.foca.handle_timer(t, &mut a.rt).expect("probe");
            let t = a.take_timer(|t| matches!(t, Timer::SendIndirectProbe { .. }));
            a.foca.handle_timer(t, &mut a.rt).expect("indirect");
            a.outbox(); // every packet to b is lost
        }
        let down = a.take_timer(|t| matches!(t, Timer::ChangeSuspectToDown { .. }));
        assert!(!suspicion_refuted(a.foca.iter_membership_state(), &down), "b never answered");
        a.foca.handle_timer(down, &mut a.rt).expect("down timer");
        assert_eq!(a.foca.num_members(), 0, "b is down");
    }
}
