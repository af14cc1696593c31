//! The rebalancing shell: watches the slot table and carries out the plans
//! of `cluster::rebalance` over the peer links.
//!
//! Sending: on every table change this node plans which slot copies it
//! sends. A job copies one slot to its new owners: every live key and
//! tombstone of the slot, read under the shard lock, goes as `RC.PUT` /
//! `RC.DEL` in bounded chunks (the receiver keeps the newer version, so
//! writes replicated meanwhile win), followed by `RC.SLOTDONE slot`, whose
//! answer confirms the copy. At most `SLOTS_IN_FLIGHT` slots are in flight;
//! `--rebalance-rate` (keys/s) paces the copies. A job whose target no
//! longer owns the slot in the newest table is dropped; a failed job is
//! retried with backoff.
//!
//! Receiving: a node that became an owner of a slot it did not hold marks
//! the slot as importing from its sender until `RC.SLOTDONE` arrives; reads
//! that miss locally meanwhile read through to the sender (`net::exec`).
//!
//! Dropping: when every copy of a slot this node sent is confirmed and this
//! node no longer owns the slot, it deletes its data for the slot and tells
//! the other former owners (`RC.DROPOK slot`) to do the same.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::cluster::lifecycle::{Event, Phase};
use crate::cluster::membership::members_digest;
use crate::cluster::protocol::{Kind, Reply, Request};
use crate::cluster::rebalance::{add_newcomer_copies, plan};
use crate::cluster::replication::{encode_del, encode_put};
use crate::cluster::topology::Topology;
use crate::cluster::transfer::lock;
use crate::peers::{Ack, LinkError, Msg};
use crate::shared::Shared;

/// Slots whose copies may be unconfirmed at once.
const SLOTS_IN_FLIGHT: usize = 64;
/// Keys per replication message of a copy.
const CHUNK_KEYS: usize = 512;
const CHUNK_BYTES: usize = 1 << 20;
/// How long a copy may wait for its confirmation before it is retried.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// The pause between steps while copies wait for a retry or slots are
/// still importing; with neither, the task sleeps until the table changes
/// (or `IDLE_MAX`).
const IDLE_POLL: Duration = Duration::from_millis(20);
const IDLE_MAX: Duration = Duration::from_secs(1);
/// Slots still marked importing this long after the table change stop
/// reading through (their sender is gone or never had them, e.g. nodes
/// that all started empty together).
const IMPORT_MAX: Duration = Duration::from_secs(30);
/// Slots still importing this long after a table change are checked with
/// their senders (`RC.SENDING`), then every `PULL_EVERY`: a sender with
/// nothing left to copy for a slot releases it.
const PULL_AFTER: Duration = Duration::from_millis(100);
const PULL_EVERY: Duration = Duration::from_millis(100);
const PULL_SLOTS_MAX: usize = 2048;
/// One slot to copy to some members.
#[derive(Debug, Clone)]
struct Job {
    slot: u16,
    to: Vec<String>,
    attempts: u32,
    not_before: Instant,
}

/// A copy waiting for its confirmations.
struct InFlight {
    job: Job,
    started: Instant,
    /// Per target: the acknowledgement of its writes and of RC.SLOTDONE.
    waits: Vec<CopyWait>,
}

/// A copy to one target: its chunks' acknowledgements, and the answer to
/// the `RC.SLOTDONE` that follows them.
type CopyWait = (String, mpsc::UnboundedReceiver<(usize, bool)>, oneshot::Receiver<Result<Vec<Bytes>, LinkError>>);

/// Runs until `stop`: plans on every table change and carries the jobs out.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut last = shared.topology();
    let mut seen = shared.topology_version();
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut flying: VecDeque<InFlight> = VecDeque::new();
    // Per slot being sent: whether this node lost it, and the other former
    // owners that did; acted on once every copy is confirmed.
    let mut after_copy: HashMap<u16, (bool, Vec<String>)> = HashMap::new();
    let mut failures_logged = Instant::now() - Duration::from_secs(60);
    let mut started: Option<Instant> = None;
    let mut budget = Pace::new(shared.config.rebalance_rate);
    let mut changed_at = Instant::now();
    let mut last_pull = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        let v = shared.topology_version();
        if v != seen {
            seen = v;
            let now = shared.topology();
            if shared.lifecycle.phase() >= Phase::Draining {
                // The drain hands this node's slots over (and its table
                // then gives it none): nothing more to plan.
                last = now;
            } else if now.table.epoch != last.table.epoch {
                let me = now.myself().name.clone();
                let old = effective_old(&shared, &last, &now);
                let p = plan(&old.table, &now.table, &me);
                changed_at = Instant::now();
                let sends = p.sends.len();
                if sends > 0 || shared.rebalance.importing() > 0 {
                    info!(
                        epoch = now.table.epoch,
                        slots_to_send = sends,
                        slots_lost = p.drops.len(),
                        slots_importing = shared.rebalance.importing(),
                        "rebalance started"
                    );
                    started.get_or_insert_with(Instant::now);
                    shared.rebalance.rebalances.fetch_add(1, Relaxed);
                }
                let lost: std::collections::HashSet<u16> = p.drops.iter().copied().collect();
                let mut sends = p.sends;
                // A member that just joined, or came back under a new
                // generation (restarted, so empty, even if never declared
                // down), expects each of its slots from the sender of the
                // table without it (what it plans from, as it started
                // empty). Confirm those too, even where this node's own
                // plan sends nothing (all nodes started empty together):
                // an empty copy is then the truth, and the joiner stops
                // waiting.
                // (A node that is joining itself has nothing to give.)
                let established = !newcomer(&shared, &last);
                let is_new = |n: &&crate::cluster::topology::NodeInfo| {
                    last.nodes.iter().find(|o| o.name == n.name).is_none_or(|o| o.generation != n.generation)
                };
                for n in now.nodes.iter().filter(|n| established && n.name != me).filter(is_new) {
                    let before = now.without(&n.name, shared.config.replicas as usize, shared.config.vnodes);
                    add_newcomer_copies(&mut sends, &before.table, &now.table, &me, &n.name);
                }
                for s in sends {
                    // Once the copies are confirmed: the former owners that
                    // lost the slot may drop it (this node too, if it did).
                    let losers: Vec<String> = old
                        .table
                        .owners(s.slot)
                        .iter()
                        .map(|&i| old.table.members[usize::from(i)].name.clone())
                        .filter(|n| *n != me && now.table.member_index(n).is_some() && !now.table.owns(n, s.slot))
                        .collect();
                    after_copy.insert(s.slot, (lost.contains(&s.slot), losers));
                    {
                        let mut out = lock(&shared.rebalance.outgoing);
                        for t in &s.to {
                            out.insert((s.slot, t.as_str().into()));
                        }
                    }
                    queue.push_back(Job { slot: s.slot, to: s.to, attempts: 0, not_before: Instant::now() });
                }
                shared.rebalance.planned.store(members_digest(&now), Relaxed);
                last = now;
            }
        }
        let r = &shared.rebalance;
        if shared.lifecycle.phase() == Phase::Joining && last.nodes.len() > 1 && r.importing() == 0 {
            // Every slot arrived: from now on table changes are planned
            // from the previous table like any member's.
            shared.lifecycle.on(Event::SlotsArrived);
            lock(&r.received).clear();
        }
        if r.importing() > 0 && changed_at.elapsed() > PULL_AFTER && last_pull.elapsed() > PULL_EVERY {
            last_pull = Instant::now();
            pull_check(&shared, &last.myself().name, members_digest(&last)).await;
        }
        if shared.rebalance.importing() > 0 && changed_at.elapsed() > IMPORT_MAX {
            let n = shared.rebalance.clear_imports();
            warn!(slots = n, "slots never confirmed by their senders; reading them locally only");
        }
        // Start copies while there is room, a shard's worth at a time (none
        // while returning from a long absence: the copy may be stale).
        while flying.len() < SLOTS_IN_FLIGHT && !shared.returning(super::unix_ms()) {
            let t = shared.topology();
            let group = take_group(&mut queue, |job| {
                job.to.retain(|n| {
                    let keep = t.table.owns(n, job.slot);
                    if !keep {
                        lock(&shared.rebalance.outgoing).remove(&(job.slot, n.as_str().into()));
                    }
                    keep
                });
                // Empty: a newer table made this copy pointless.
                !job.to.is_empty()
            });
            if group.is_empty() {
                break;
            }
            let keys = start_group(&shared, group, &mut flying).await;
            budget.spend(keys).await;
        }
        shared.rebalance.slots_pending.store(queue.len() as u64, Relaxed);
        shared.rebalance.slots_in_flight.store(flying.len() as u64, Relaxed);
        // Settle the oldest copy in flight, or wait a little.
        if let Some(f) = flying.pop_front() {
            match settle(f).await {
                Ok(job) => {
                    shared.rebalance.slots_sent.fetch_add(1, Relaxed);
                    {
                        let mut out = lock(&shared.rebalance.outgoing);
                        for t in &job.to {
                            out.remove(&(job.slot, t.as_str().into()));
                        }
                    }
                    let slot = job.slot;
                    let pending_same = queue.iter().chain(flying.iter().map(|f| &f.job)).any(|j| j.slot == slot);
                    if !pending_same && let Some((mine, losers)) = after_copy.remove(&slot) {
                        drop_lost_slot(&shared, slot, mine, &losers).await;
                    }
                }
                Err((mut job, why)) => {
                    shared.rebalance.transfer_errors.fetch_add(1, Relaxed);
                    job.attempts += 1;
                    if failures_logged.elapsed() > Duration::from_secs(10) {
                        failures_logged = Instant::now();
                        warn!(
                            slot = job.slot,
                            to = ?job.to,
                            attempts = job.attempts,
                            errors = shared.rebalance.transfer_errors.load(Relaxed),
                            error = why,
                            "slot copies failing; retrying (logged at most every 10 s)"
                        );
                    }
                    job.not_before = Instant::now() + RETRY_DELAY * job.attempts.min(10);
                    queue.push_back(job);
                }
            }
        } else {
            // Slots lost without a copy to send (another node sends): drop
            // them when the sender says so (RC.DROPOK); nothing to do here.
            if let Some(t0) = started.take_if(|_| queue.is_empty()) {
                let ms = t0.elapsed().as_millis() as u64;
                shared.rebalance.last_ms.store(ms, Relaxed);
                info!(
                    ms,
                    keys_moved = shared.rebalance.keys_moved.load(Relaxed),
                    slots_importing = shared.rebalance.importing(),
                    "rebalance finished (this node's copies)"
                );
            }
            // Retries and imports are timed; otherwise nothing happens
            // until the table changes (woken at once) or stop.
            let busy = !queue.is_empty() || shared.rebalance.importing() > 0;
            let pause = if busy { IDLE_POLL } else { IDLE_MAX };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shared.topology_changed.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// Asks each sender whether it still has copies coming for the slots this
/// node awaits from it; releases the slots it has not (views of the table
/// differed when they were planned, or the copy was lost with a node).
async fn pull_check(shared: &Shared, me: &str, table: u64) {
    for (from, slots) in shared.rebalance.imports_by_sender(PULL_SLOTS_MAX) {
        // A sender that is no longer a member and cannot be reached will
        // not send (links to former members stay, so a link alone proves
        // nothing; one that drains is still reachable until it stops).
        let member = shared.topology().nodes.iter().any(|n| n.name == *from);
        let Some(link) = shared.links.get(&from).filter(|l| member || l.reachable()) else {
            for s in slots {
                shared.rebalance.import_abandoned(s, &from);
            }
            continue;
        };
        let req = Request::Sending { to: me.as_bytes(), table, slots: slots.clone() };
        let Ok(Ok(replies)) = tokio::time::timeout(CONFIRM_TIMEOUT, link.call(req.to_bytes(), 1)).await else {
            continue;
        };
        let Some(Reply::Flags(flags)) = replies.first().map(|raw| Reply::parse(Kind::Sending, raw)) else { continue };
        for (slot, sending) in slots.iter().zip(flags) {
            if !sending {
                shared.rebalance.import_abandoned(*slot, &from);
            }
        }
    }
}

/// Takes the first job that may start and every other startable job of
/// the same shard (so the shard is read once); `keep` may edit a job and
/// says whether it is still wanted.
fn take_group(queue: &mut VecDeque<Job>, mut keep: impl FnMut(&mut Job) -> bool) -> Vec<Job> {
    let now = Instant::now();
    let mut group: Vec<Job> = Vec::new();
    let mut shard = None;
    let mut i = 0;
    while i < queue.len() {
        let j = &queue[i];
        let ready = j.not_before <= now;
        let same = shard.is_none_or(|s| s == usize::from(j.slot) % crate::store::SHARD_COUNT);
        if ready && same {
            let mut job = queue.remove(i).expect("index in range");
            if keep(&mut job) {
                shard = Some(usize::from(job.slot) % crate::store::SHARD_COUNT);
                group.push(job);
            }
        } else {
            i += 1;
        }
    }
    group
}

/// Reads the group's slots (one shard, one pass) and sends each slot to
/// its targets; returns the keys sent.
async fn start_group(shared: &Shared, jobs: Vec<Job>, flying: &mut VecDeque<InFlight>) -> usize {
    let slots: Vec<u16> = jobs.iter().map(|j| j.slot).collect();
    let mut ops: HashMap<u16, Vec<BytesMut>> = HashMap::new();
    let mut dead: HashMap<u16, Vec<BytesMut>> = HashMap::new();
    shared.store.visit_slots(
        &slots,
        super::unix_ms(),
        |slot, e| {
            let mut b = BytesMut::new();
            encode_put(&mut b, e);
            ops.entry(slot).or_default().push(b);
        },
        |slot, k, v| {
            let mut b = BytesMut::new();
            encode_del(&mut b, k, v);
            dead.entry(slot).or_default().push(b);
        },
    );
    let mut keys = 0;
    for job in jobs {
        let mut these = ops.remove(&job.slot).unwrap_or_default();
        these.extend(dead.remove(&job.slot).unwrap_or_default());
        keys += start_copy(shared, &job, these, flying).await;
    }
    keys
}

/// Sends one slot's encoded keys to every target of `job`, then
/// `RC.SLOTDONE`; returns the keys sent.
async fn start_copy(shared: &Shared, job: &Job, slot_ops: Vec<BytesMut>, flying: &mut VecDeque<InFlight>) -> usize {
    let mut chunks: Vec<Vec<(u16, Bytes)>> = vec![Vec::new()];
    let mut chunk_bytes = 0;
    let keys = slot_ops.len();
    for op in slot_ops {
        let op = op.freeze();
        if chunks.last().is_some_and(|c| c.len() >= CHUNK_KEYS || chunk_bytes >= CHUNK_BYTES) {
            chunks.push(Vec::new());
            chunk_bytes = 0;
        }
        chunk_bytes += op.len();
        chunks.last_mut().expect("one chunk").push((job.slot, op));
    }
    let bytes: usize = chunks.iter().flatten().map(|(_, b)| b.len()).sum();
    let done_req = {
        let k = shared.rebalance.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let keepers: Vec<&[u8]> = k
            .for_copy(job.slot)
            .unwrap_or_default()
            .iter()
            .take(crate::cluster::protocol::KEEPERS_MAX)
            .map(|n| n.as_bytes())
            .collect();
        Request::SlotDone { slot: job.slot, keepers }.to_bytes()
    };
    let mut waits = Vec::new();
    for target in &job.to {
        let Some(link) = shared.links.get(target) else { continue };
        let (tx, rx) = mpsc::unbounded_channel();
        for (i, c) in chunks.iter().enumerate() {
            if !c.is_empty() {
                link.send(Msg::Repl { ops: c.clone(), done: Some(Ack { tx: tx.clone(), id: i }) }).await;
            }
        }
        drop(tx);
        let (done, call) = oneshot::channel();
        link.send(Msg::Call { req: done_req.clone(), count: 1, done }).await;
        waits.push((target.clone(), rx, call));
        shared.rebalance.keys_moved.fetch_add(keys as u64, Relaxed);
        shared.rebalance.bytes_moved.fetch_add(bytes as u64, Relaxed);
    }
    flying.push_back(InFlight { job: job.clone(), started: Instant::now(), waits });
    keys * job.to.len()
}

/// Waits for a copy's confirmations; the job back on failure.
async fn settle(f: InFlight) -> Result<Job, (Job, &'static str)> {
    let deadline = tokio::time::Instant::from_std(f.started + CONFIRM_TIMEOUT);
    let mut failed = Vec::new();
    for (target, mut acks, call) in f.waits {
        let mut ok = true;
        while let Ok(Some((_, chunk_ok))) = tokio::time::timeout_at(deadline, acks.recv()).await {
            ok &= chunk_ok;
        }
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(Ok(r))) if ok && r.first().is_some_and(|b| Reply::parse(Kind::SlotDone, b) == Reply::Ok) => {}
            _ => failed.push(target),
        }
    }
    if failed.is_empty() {
        Ok(f.job)
    } else {
        let mut job = f.job;
        job.to = failed;
        Err((job, "not confirmed"))
    }
}

/// After a slot's copies were confirmed: deletes it here if this node lost
/// it (and still does not own it), and tells the other former owners they
/// may delete it too.
async fn drop_lost_slot(shared: &Shared, slot: u16, mine: bool, losers: &[String]) {
    if mine {
        drop_ok(shared, slot);
    }
    let req = Request::DropOk { slot }.to_bytes();
    for l in losers {
        if let Some(link) = shared.links.get(l) {
            // Sent like a replicated write: no one waits for the answer,
            // and a call nobody waits for would be skipped.
            link.send(Msg::Repl { ops: vec![(slot, req.clone())], done: None }).await;
        }
    }
}

/// Whether this node plans from `last` as a newcomer (see
/// `Lifecycle::plans_as_newcomer`).
fn newcomer(shared: &Shared, last: &Topology) -> bool {
    shared.lifecycle.plans_as_newcomer(last.nodes.len() == 1)
}

/// The table to plan a change from: `last`, except for a node that starts
/// empty and joins, which holds nothing whatever its first one-member table
/// said: it plans as if the cluster before it were the others alone.
fn effective_old(shared: &Shared, last: &Arc<Topology>, now: &Topology) -> Arc<Topology> {
    if newcomer(shared, last) && now.nodes.len() > 1 {
        Arc::new(now.without(&now.myself().name, shared.config.replicas as usize, shared.config.vnodes))
    } else {
        last.clone()
    }
}

/// Called by the membership task before it publishes `now`: marks the
/// slots this node starts receiving, so reads that reach it under the new
/// table already read through.
pub fn before_publish(shared: &Shared, now: &Topology, graceful: &[&str]) {
    let last = shared.topology();
    let old = effective_old(shared, &last, now);
    shared.rebalance.expect_imports(&old, now, newcomer(shared, &last));
    shared.rebalance.keepers.write().unwrap_or_else(std::sync::PoisonError::into_inner).on_table(
        &old,
        now,
        graceful,
        newcomer(shared, &last),
    );
    let changed = crate::cluster::settle::owners_changed(&last, now);
    if !changed.is_empty() {
        shared.unsettle(changed);
    }
}

/// `RC.DROPOK slot` from the sender of a slot this node lost (or this
/// node's own copies confirmed): delete the slot if it is still not ours.
pub fn drop_ok(shared: &Shared, slot: u16) {
    let t = shared.topology();
    if !t.table.owners(slot).contains(&t.me) {
        shared.store.drop_slot(slot);
        shared.rebalance.slots_dropped.fetch_add(1, Relaxed);
    }
}

/// Paces copies to `--rebalance-rate` keys per second (0: no limit).
struct Pace {
    rate: u64,
    owed: f64,
    since: Instant,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Pace { rate, owed: 0.0, since: Instant::now() }
    }

    async fn spend(&mut self, keys: usize) {
        if self.rate == 0 {
            return;
        }
        let elapsed = self.since.elapsed().as_secs_f64();
        self.since = Instant::now();
        self.owed = (self.owed - elapsed).max(0.0) + keys as f64 / self.rate as f64;
        if self.owed > 0.01 {
            tokio::time::sleep(Duration::from_secs_f64(self.owed)).await;
            self.owed = 0.0;
            self.since = Instant::now();
        }
    }
}

/// Graceful leave (SIGTERM, SHUTDOWN): before this node leaves, copies
/// every slot it owns to the member that takes its place in the table
/// without it, so that member holds the data when the others switch
/// tables (they then copy again from the surviving owners, which only adds
/// what was written meanwhile). Bounded by `deadline`; slots not confirmed
/// by then are left to the surviving owners' copies. Returns whether
/// every slot was copied (a node alone has nothing to copy).
pub async fn drain(shared: &Shared, deadline: Instant) -> bool {
    let now = shared.topology();
    if now.nodes.len() < 2 {
        return true;
    }
    let me = now.myself().name.clone();
    let after = now.without(&me, shared.config.replicas as usize, shared.config.vnodes);
    let mut queue: VecDeque<Job> = VecDeque::new();
    for slot in 0..ringcache_protocol::SLOT_COUNT {
        if !now.table.owners(slot).contains(&now.me) {
            continue;
        }
        let to: Vec<String> = after
            .table
            .owners(slot)
            .iter()
            .map(|&i| after.table.members[usize::from(i)].name.clone())
            .filter(|n| !now.table.owns(n, slot))
            .collect();
        if !to.is_empty() {
            queue.push_back(Job { slot, to, attempts: 0, not_before: Instant::now() });
        }
    }
    info!(slots = queue.len(), "draining: copying this node's slots to their next owners before leaving");
    let started = Instant::now();
    let mut flying: VecDeque<InFlight> = VecDeque::new();
    let (mut copied, mut failed, mut given_up) = (0usize, 0usize, 0usize);
    while (!queue.is_empty() || !flying.is_empty()) && Instant::now() < deadline {
        while flying.len() < SLOTS_IN_FLIGHT {
            let group = take_group(&mut queue, |_| true);
            if group.is_empty() {
                break;
            }
            start_group(shared, group, &mut flying).await;
        }
        if let Some(f) = flying.pop_front() {
            match settle(f).await {
                Ok(_) => copied += 1,
                Err((mut job, _)) => {
                    failed += 1;
                    job.attempts += 1;
                    if job.attempts < 3 {
                        queue.push_back(job);
                    } else {
                        given_up += 1;
                    }
                }
            }
        }
    }
    info!(
        ms = started.elapsed().as_millis() as u64,
        slots_copied = copied,
        failures = failed,
        slots_left = queue.len() + flying.len() + given_up,
        "drain finished"
    );
    queue.is_empty() && flying.is_empty() && given_up == 0
}
