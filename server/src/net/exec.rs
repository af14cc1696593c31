//! Running requests in a cluster: the plan of `command::plan` carried out
//! over the peer links, with replication and quorums.
//!
//! An [`Exec`] collects the replies of one batch of requests. A request
//! that runs here writes its reply straight into `out` (the single-node
//! path costs one branch). One whose answer comes later — forwarded to its
//! primary, split across primaries, a cluster-wide command, or a write
//! waiting for its quorum — leaves a placeholder [`Chunk`]; [`Exec::finish`]
//! sends the batch's replicated writes (grouped per owner: one message per
//! peer per batch), waits for every answer with one deadline, and splices
//! the replies together in request order.
//!
//! Write path (DESIGN §4): the primary first checks that W owners are
//! reachable (else `-CLUSTERDOWN`, nothing applied), runs the command once,
//! then sends the resulting state of every key it names, with its version,
//! to the other owners. The reply is released when W owners (itself
//! included) hold it; otherwise it becomes `-TIMEOUT ...` (applied here,
//! maybe elsewhere: the outcome is unknown, so clients must not blindly
//! retry a non-idempotent command).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use ringcache_protocol::{Args, Frame, Version, decode_frame, encode, key_slot};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::cluster::lifecycle::Phase;
use crate::cluster::protocol::{ForwardHead, Kind, Reply as PeerReply, Request, encode_forward_head};
use crate::cluster::replication::{ReadState, encode_current, quorum};
use crate::cluster::topology::Topology;
use crate::command::plan::{Combine, Part, Plan, SCAN_MEMBER_SHIFT, plan};
use crate::command::{self, ConnState, Ctx, Reply, Spec};
use crate::config::Redirect;
use crate::peers::{Ack, Link, LinkError, Msg};
use crate::shared::{ClientInfo, LocalStats, Outcome, Shared};

const UNSPECIFIED: std::net::SocketAddr =
    std::net::SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

/// What a request runs with.
pub struct Env<'a> {
    pub shared: &'a Shared,
    pub conn: &'a mut ConnState,
    pub stats: &'a mut LocalStats,
    pub now_ms: u64,
}

/// Pause before a forwarded request refused with `-TRYAGAIN` is sent again.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(3);

fn rejected(env: &mut Env<'_>, spec: &Spec) {
    if let Some(i) = command::lookup(spec.name.as_bytes()) {
        env.stats.record(i, Outcome::Rejected);
    }
}

/// How a forwarded call ended.
#[derive(Debug)]
enum Answer {
    Waiting(oneshot::Receiver<Result<Vec<Bytes>, LinkError>>),
    /// An owner's answer to RC.READ: due within the replication timeout.
    Reading(oneshot::Receiver<Result<Vec<Bytes>, LinkError>>),
    Replies(Vec<Bytes>),
    /// Never sent: the primary is unreachable.
    Unreachable,
    /// Sent, no answer: it may have run.
    Unknown,
}

/// A reply, or the place of one that is not known yet.
#[derive(Debug)]
enum Chunk {
    Ready(usize, usize),
    Forward(usize),
    /// A write's reply, released if every replicated item in `items`
    /// reached its quorum.
    Quorum {
        reply: (usize, usize),
        items: (usize, usize),
    },
    /// Parts combined into one reply. `order` (MGET only): the position
    /// in the reply of each value the parts return, in part order.
    Gather {
        parts: Vec<Chunk>,
        combine: Combine,
        v: Version,
        order: Vec<usize>,
    },
    /// A read with R > 1: the local reply, and the other owners asked.
    Read(Box<QuorumRead>),
    /// A reply settled in `finish` (a repaired read).
    Bytes(Bytes),
}

#[derive(Debug)]
struct QuorumRead {
    reply: (usize, usize),
    args: Vec<Vec<u8>>,
    slot: u16,
    /// Owners asked and the index of their answer.
    asked: Vec<(Arc<str>, usize)>,
    need: usize,
    v: Version,
    /// A read-through to the slot's previous owner: no answer from it
    /// means "unknown", never "missing".
    through: bool,
}

/// A key state to send to the other owners of its slot.
#[derive(Debug)]
struct Item {
    slot: u16,
    op: Bytes,
    replicas: Vec<Arc<str>>,
    need: usize,
}

/// Member names and links by member index, for the topology last seen:
/// saves a name allocation and a registry lookup per key and replica.
#[derive(Debug, Default)]
struct Peers {
    /// The epoch of the topology the vectors were filled for (it grows
    /// with every member change this node sees).
    epoch: u64,
    names: Vec<Arc<str>>,
    links: Vec<Option<Link>>,
}

impl Peers {
    fn get(&mut self, shared: &Shared, t: &Topology, m: u16) -> (&Arc<str>, Option<&Link>) {
        if self.epoch != t.table.epoch || self.names.len() != t.nodes.len() {
            self.epoch = t.table.epoch;
            self.names = t.nodes.iter().map(|n| Arc::<str>::from(n.name.as_str())).collect();
            self.links = self.names.iter().map(|n| shared.links.get(n)).collect();
        }
        let i = usize::from(m);
        if self.links[i].is_none() && i != usize::from(t.me) {
            // A link made after this cache was filled.
            self.links[i] = shared.links.get(&self.names[i]);
        }
        (&self.names[i], self.links[i].as_ref())
    }
}

/// How a forwarded command runs at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As the primary of its key.
    Primary,
    /// That member's share of a cluster-wide command.
    Share,
}

/// A forwarded request kept for sending again after `-TRYAGAIN`: to the
/// slot's primary in the table of that moment (or the same member, for a
/// cluster-wide command's share).
#[derive(Debug, Clone)]
struct Resend {
    head: ForwardHead,
    /// The command's arguments, encoded (the request's tail).
    body: Bytes,
    argc: usize,
    slot: Option<u16>,
    link: Link,
}

impl Resend {
    /// The request again, under the table digest `table`.
    fn request(&self, table: u64) -> Bytes {
        let mut b = BytesMut::with_capacity(self.body.len() + 64);
        encode_forward_head(&mut b, &ForwardHead { table, ..self.head }, self.argc);
        b.extend_from_slice(&self.body);
        b.freeze()
    }
}

/// A split command's parts.
struct Split<'p> {
    combine: Combine,
    parts: &'p [Part],
    step: usize,
}

/// A key of a write this node coordinates: who else must hold it.
struct KeyPlan<'a> {
    key: &'a [u8],
    slot: u16,
    replicas: Vec<Arc<str>>,
    need: usize,
}

type OwnerBatch = (Vec<(u16, Bytes)>, bool);

/// The replies of one batch (see the module doc).
#[derive(Debug, Default)]
pub struct Exec {
    pub out: BytesMut,
    /// Start of the bytes of `out` not yet covered by a chunk.
    mark: usize,
    chunks: Vec<Chunk>,
    deferred: bool,
    answers: Vec<Answer>,
    /// For each answer of a forwarded request: where it went and what, so
    /// a `-TRYAGAIN` (the primary's table is behind ours) is sent again.
    resend: Vec<Option<Resend>>,
    items: Vec<Item>,
    peers: Peers,
    /// Keys to fetch from the previous owner of their (importing) slot
    /// before the batch's replies go out.
    fetches: Vec<(Arc<str>, Vec<u8>)>,
}

impl Exec {
    pub fn new(capacity: usize) -> Self {
        Exec { out: BytesMut::with_capacity(capacity), ..Exec::default() }
    }

    /// Whether some reply of this batch is still to come.
    pub fn pending(&self) -> bool {
        self.deferred || !self.items.is_empty() || !self.fetches.is_empty()
    }

    /// Covers the bytes written since the last chunk with a ready chunk.
    fn seal(&mut self) {
        if self.out.len() > self.mark {
            self.chunks.push(Chunk::Ready(self.mark, self.out.len()));
        }
        self.mark = self.out.len();
    }

    fn defer(&mut self, c: Chunk) {
        self.seal();
        self.chunks.push(c);
        self.deferred = true;
    }

    fn run_here(&mut self, env: &mut Env<'_>, args: Args<'_>) {
        self.execute_here(env, args);
    }

    /// Runs the request on this node's store; the command, if it ran.
    fn execute_here(&mut self, env: &mut Env<'_>, args: Args<'_>) -> Option<&'static Spec> {
        let v = env.conn.resp;
        let mut ctx = Ctx {
            shared: env.shared,
            conn: env.conn,
            out: Reply { buf: &mut self.out, v },
            now_ms: env.now_ms,
            stats: env.stats,
        };
        command::execute(&mut ctx, args)
    }

    /// Runs one request: here, or wherever its plan says.
    pub fn run(&mut self, env: &mut Env<'_>, args: Args<'_>) {
        if env.conn.topology(env.shared).nodes.len() < 2 {
            let awaiting = env.shared.lifecycle.phase() == Phase::AwaitingSeed;
            if (env.conn.peer || awaiting)
                && let Some(spec) = command::precheck(env.conn, env.shared, args)
                && spec.first_key > 0
            {
                // A member forwarded a key here while this node does not
                // know it has members yet, or a client asked for one
                // before any seed answered: it holds none of their data.
                let text: &[u8] = if env.conn.peer {
                    b"TRYAGAIN this node has not joined the cluster's table yet"
                } else {
                    b"CLUSTERDOWN this node has not joined its cluster yet (no seed has answered)"
                };
                encode::error(&mut self.out, text);
                return;
            }
            let ran = self.execute_here(env, args);
            if ran.is_some_and(|spec| spec.write) && !env.conn.peer {
                env.shared.lifecycle.wrote_alone();
            }
            return;
        }
        let Some(spec) = command::precheck(env.conn, env.shared, args) else {
            return self.run_here(env, args);
        };
        let t = env.conn.topology(env.shared).clone();
        let planned = plan(spec, args, &t, env.conn.readonly, env.conn.peer);
        if env.shared.config.cluster_redirect == Redirect::Moved {
            // Redis Cluster's way: keys of another primary are redirected
            // (`command::route` answers MOVED / CROSSSLOT); keyless commands
            // count this node's primary slots, as a Redis master does.
            return match planned {
                Plan::Local => self.local(env, spec, args, &t),
                Plan::Broadcast(_) | Plan::Scan { .. } => self.share_here(env, args),
                _ => self.run_here(env, args),
            };
        }
        match planned {
            Plan::Local => self.local(env, spec, args, &t),
            Plan::Refuse(e) => {
                rejected(env, spec);
                encode::error(&mut self.out, e.text().as_bytes());
            }
            Plan::Forward(m) => {
                env.shared.metrics.forwarded.fetch_add(1, Relaxed);
                let c = self.forward(env, &t, m, args.iter(), Mode::Primary);
                self.defer(c);
            }
            Plan::Split { combine, parts, step } => {
                env.shared.metrics.forwarded.fetch_add(1, Relaxed);
                self.split(env, spec, args, &t, Split { combine, parts: &parts, step });
            }
            Plan::Broadcast(combine) => {
                let mut chunks = Vec::with_capacity(t.nodes.len());
                self.seal();
                for m in 0..t.nodes.len() as u16 {
                    let c = if m == t.me {
                        self.part(|x| x.share_here(env, args))
                    } else {
                        self.forward(env, &t, m, args.iter(), Mode::Share)
                    };
                    chunks.push(c);
                }
                let v = env.conn.resp;
                self.defer(Chunk::Gather { parts: chunks, combine, v, order: Vec::new() });
            }
            Plan::Scan { member, cursor } => {
                let members = t.nodes.len() as u16;
                if member >= members {
                    // A cursor from another topology: the scan is over.
                    encode::array_header(&mut self.out, 2);
                    encode::bulk(&mut self.out, b"0");
                    encode::array_header(&mut self.out, 0);
                    return;
                }
                let c = cursor.to_string();
                let mut sub: Vec<&[u8]> = args.iter().collect();
                sub[1] = c.as_bytes();
                self.seal();
                let part = if member == t.me {
                    self.part(|x| x.share_here(env, Args::from_slices(&sub)))
                } else {
                    self.forward(env, &t, member, sub.iter().copied(), Mode::Share)
                };
                let v = env.conn.resp;
                self.defer(Chunk::Gather {
                    parts: vec![part],
                    combine: Combine::Scan { member, members },
                    v,
                    order: Vec::new(),
                });
            }
        }
    }

    /// This member's share of a cluster-wide command.
    fn share_here(&mut self, env: &mut Env<'_>, args: Args<'_>) {
        let was = env.conn.share;
        env.conn.share = true;
        self.run_here(env, args);
        env.conn.share = was;
    }

    /// Runs `f` and returns what it produced as one chunk.
    fn part(&mut self, f: impl FnOnce(&mut Self)) -> Chunk {
        self.seal();
        let outer = std::mem::take(&mut self.chunks);
        f(self);
        self.seal();
        let mut inner = std::mem::replace(&mut self.chunks, outer);
        if inner.len() == 1 {
            inner.pop().expect("one chunk")
        } else {
            // Only a request that wrote nothing (cannot happen) or several
            // chunks; keep them in order as one reply.
            Chunk::Gather { parts: inner, combine: Combine::AllOk, v: Version::Resp2, order: Vec::new() }
        }
    }

    /// Sends `args` to member `m` as `RC.FWD v mode deadline table args...`.
    /// `table` is this node's members digest: the receiver runs it only on
    /// the same table (else `-TRYAGAIN`, which is retried here), so a node
    /// whose view is still partial (just restarted) never coordinates a
    /// write the rest of the cluster routed to it by a fuller table.
    /// `deadline` (unix ms) is when this node gives up waiting (twice the
    /// replication timeout from now, never later than `finish` answers
    /// `-TIMEOUT`): the receiver does not run a request it reads after
    /// that (queued behind others, or delivered late by TCP after a
    /// partition healed), so a write this node reported as timed out cannot
    /// take effect after the client moved on.
    fn forward<'b>(
        &mut self,
        env: &mut Env<'_>,
        t: &Topology,
        m: u16,
        args: impl Iterator<Item = &'b [u8]>,
        share: Mode,
    ) -> Chunk {
        let link = self.peers.get(env.shared, t, m).1.cloned();
        let head = ForwardHead {
            resp3: env.conn.resp == Version::Resp3,
            share: share == Mode::Share,
            deadline_ms: env.now_ms + 2 * env.shared.config.replication_timeout.as_millis() as u64,
            table: t.digest,
        };
        let mut body = BytesMut::new();
        let mut argc = 0;
        let mut first_key = None;
        for a in args {
            if argc == 1 {
                first_key = Some(key_slot(a));
            }
            encode::bulk(&mut body, a);
            argc += 1;
        }
        let slot = if share == Mode::Primary { first_key } else { None };
        let resend = link.as_ref().map(|link| Resend { head, body: body.freeze(), argc, slot, link: link.clone() });
        let req = match &resend {
            Some(r) => r.request(t.digest),
            None => Bytes::new(),
        };
        let answer = match &link {
            Some(link) => match link.try_call(req.clone(), 1, true) {
                Ok(rx) => Answer::Waiting(rx),
                Err(_) => Answer::Unreachable,
            },
            None => Answer::Unreachable,
        };
        self.push_answer(answer, resend);
        Chunk::Forward(self.answers.len() - 1)
    }

    fn split(&mut self, env: &mut Env<'_>, spec: &'static Spec, args: Args<'_>, t: &Topology, s: Split<'_>) {
        let Split { combine, parts, step } = s;
        self.seal();
        let mut chunks = Vec::with_capacity(parts.len());
        for p in parts {
            let mut sub: Vec<&[u8]> = vec![args.get(0)];
            for &i in &p.keys {
                sub.extend((i..i + step).map(|j| args.get(j)));
            }
            let c = if p.member == t.me {
                self.part(|x| x.local(env, spec, Args::from_slices(&sub), t))
            } else {
                self.forward(env, t, p.member, sub.iter().copied(), Mode::Primary)
            };
            chunks.push(c);
        }
        let v = env.conn.resp;
        let first = spec.first_key as usize;
        let order = parts.iter().flat_map(|p| p.keys.iter().map(|&i| (i - first) / step)).collect();
        self.defer(Chunk::Gather { parts: chunks, combine, v, order });
    }

    fn push_answer(&mut self, a: Answer, resend: Option<Resend>) {
        self.answers.push(a);
        self.resend.push(resend);
    }

    /// Runs a request this node coordinates; a write is replicated.
    fn local(&mut self, env: &mut Env<'_>, spec: &'static Spec, args: Args<'_>, t: &Topology) {
        if !spec.write {
            // A slot still arriving from its previous owner: a local miss
            // reads through to that owner (DESIGN §5), so a moving key is
            // never a miss.
            if spec.first_key == 1
                && spec.last_key == 1
                && env.shared.rebalance.importing() > 0
                && let slot = key_slot(args.get(1))
                && let Some(from) = env.shared.rebalance.importing_from(slot)
                && !env.shared.store.with_key(args.get(1), env.now_ms, |k| k.exists() || k.tombstone().is_some())
            {
                env.shared.rebalance.read_through.fetch_add(1, Relaxed);
                let link = env.shared.links.get(&from);
                return self.ask_read(env, args, slot, vec![(from, link)], 1, true);
            }
            if spec.first_key == 1 && spec.last_key == 1 && env.shared.config.read_quorum > 1 && !env.conn.share {
                let slot = key_slot(args.get(1));
                let owners = t.table.owners(slot);
                let need = quorum(env.shared.config.read_quorum, owners.len());
                if need > 1 {
                    return self.quorum_read(env, args, t, slot, need);
                }
            }
            return self.run_here(env, args);
        }
        if spec.first_key <= 0 {
            return self.run_here(env, args);
        }
        let argc = args.len() as i32;
        let last = if spec.last_key < 0 { argc + spec.last_key } else { spec.last_key.min(argc - 1) };
        let keys = (spec.first_key..=last).step_by(spec.step.max(1) as usize).map(|i| args.get(i as usize));
        // A write must see its keys' current state (INCR, APPEND, SET NX,
        // DEL...). Two cases fetch a key before it runs, then answer
        // -TRYAGAIN (the forwarding node, or the client, sends it again):
        // - its slot is still arriving here and the key is not here yet:
        //   from the slot's previous owner;
        // - the slot's owners changed (a failover, a return, a restart, a
        //   healed partition) and anti-entropy has not compared it since:
        //   another owner may hold acknowledged writes this node missed,
        //   so from every co-owner.
        // Both at once when both hold (a restarted node imports from one
        // former co-owner, which may itself lack writes another has): the
        // key counts as fetched only once every member asked answered.
        if env.shared.rebalance.importing() > 0 || env.shared.rebalance.unsettled() > 0 {
            let mut missing: Vec<(Arc<str>, Vec<u8>)> = Vec::new();
            let mut unsettled = false;
            for key in keys.clone() {
                if env.shared.rebalance.checked(key) {
                    continue;
                }
                let slot = key_slot(key);
                let before = missing.len();
                if env.shared.rebalance.is_unsettled(slot) {
                    unsettled = true;
                    for &o in t.table.owners(slot).iter().filter(|&&o| o != t.me) {
                        missing.push((t.nodes[usize::from(o)].name.as_str().into(), key.to_vec()));
                    }
                }
                if let Some(from) = env.shared.rebalance.importing_from(slot)
                    && !missing[before..].iter().any(|(m, _)| *m == from)
                    && !env.shared.store.with_key(key, env.now_ms, |k| k.exists() || k.tombstone().is_some())
                {
                    missing.push((from, key.to_vec()));
                }
            }
            if !missing.is_empty() {
                let text: &[u8] = if unsettled {
                    env.shared.rebalance.settle_fetches.fetch_add(1, Relaxed);
                    b"TRYAGAIN this key's owners changed; fetching its newest state; retry"
                } else {
                    b"TRYAGAIN this key is moving to this node; retry"
                };
                self.fetches.extend(missing);
                rejected(env, spec);
                encode::error(&mut self.out, text);
                return;
            }
        }
        // Replicas of each key and the quorum; refuse before running when
        // too few owners are reachable.
        let mut plans: Vec<KeyPlan<'_>> = Vec::new();
        for key in keys {
            let slot = key_slot(key);
            let owners = t.table.owners(slot);
            if owners.len() < 2 {
                continue;
            }
            let need = quorum(env.shared.config.write_quorum, owners.len());
            let mut replicas: Vec<Arc<str>> = Vec::with_capacity(owners.len());
            let mut reachable = 1;
            for &o in owners.iter().filter(|&&o| o != t.me) {
                let (name, link) = self.peers.get(env.shared, t, o);
                reachable += usize::from(link.is_some_and(|l| l.reachable()));
                replicas.push(name.clone());
            }
            if reachable < need {
                env.shared.metrics.quorum_failures.fetch_add(1, Relaxed);
                rejected(env, spec);
                let text = format!(
                    "CLUSTERDOWN not enough owners of slot {slot} are reachable for the write quorum \
                     (need {need}, reachable {reachable})"
                );
                encode::error(&mut self.out, text.as_bytes());
                return;
            }
            plans.push(KeyPlan { key, slot, replicas, need });
        }
        if plans.is_empty() {
            return self.run_here(env, args);
        }
        self.seal();
        let start = self.out.len();
        self.run_here(env, args);
        let end = self.out.len();
        if self.out.get(start) == Some(&b'-') {
            return; // refused or failed: nothing changed
        }
        let first_item = self.items.len();
        let mut wait = false;
        for KeyPlan { key, slot, replicas, need } in plans {
            let mut op = BytesMut::new();
            env.shared.store.with_key(key, env.now_ms, |k| encode_current(&mut op, k));
            if op.is_empty() {
                continue; // nothing there, nothing deleted (an expired key)
            }
            wait |= need > 1;
            self.items.push(Item { slot, op: op.freeze(), replicas, need });
        }
        if wait {
            self.chunks.push(Chunk::Quorum { reply: (start, end), items: (first_item, self.items.len()) });
            self.mark = end;
            self.deferred = true;
        }
    }

    /// Runs a read here and asks the slot's other owners for the key's
    /// state; `finish` answers with the newest and repairs stale owners.
    fn quorum_read(&mut self, env: &mut Env<'_>, args: Args<'_>, t: &Topology, slot: u16, need: usize) {
        let mut owners: Vec<(Arc<str>, Option<Link>)> = Vec::new();
        for &o in t.table.owners(slot).iter().filter(|&&o| o != t.me) {
            let (name, link) = self.peers.get(env.shared, t, o);
            owners.push((name.clone(), link.cloned()));
        }
        self.ask_read(env, args, slot, owners, need, false);
    }

    /// Runs a read here and asks `owners` for the key's state (RC.READ);
    /// `finish` settles it (see [`Exec::settle_reads`]).
    fn ask_read(
        &mut self,
        env: &mut Env<'_>,
        args: Args<'_>,
        slot: u16,
        owners: Vec<(Arc<str>, Option<Link>)>,
        need: usize,
        through: bool,
    ) {
        self.seal();
        let start = self.out.len();
        self.run_here(env, args);
        let end = self.out.len();
        let req = Request::Read { key: args.get(1) }.to_bytes();
        let mut asked = Vec::new();
        for (name, link) in owners {
            let answer = match link.map(|l| l.try_call(req.clone(), 1, false)) {
                Some(Ok(rx)) => Answer::Reading(rx),
                _ => Answer::Unreachable,
            };
            self.push_answer(answer, None);
            asked.push((name, self.answers.len() - 1));
        }
        let args = args.iter().map(<[u8]>::to_vec).collect();
        let v = env.conn.resp;
        self.chunks.push(Chunk::Read(Box::new(QuorumRead {
            reply: (start, end),
            args,
            slot,
            asked,
            need,
            v,
            through,
        })));
        self.mark = end;
        self.deferred = true;
    }

    /// Settles quorum reads once their answers are in: the newest state
    /// wins; this node applies it and runs the read again if it was
    /// behind, and stale owners are sent the newest state.
    async fn settle_reads(&mut self, shared: &Shared) {
        for i in 0..self.chunks.len() {
            let Chunk::Read(r) = &self.chunks[i] else { continue };
            let (key, slot) = (r.args[1].clone(), r.slot);
            let mut states = Vec::new();
            for (name, a) in &r.asked {
                if let Answer::Replies(replies) = &self.answers[*a]
                    && let Some(st) = replies.first().and_then(|raw| ReadState::parse(raw))
                {
                    states.push((name.clone(), st));
                }
            }
            if r.through && states.is_empty() {
                let mut b = BytesMut::new();
                encode::error(&mut b, b"TRYAGAIN this slot is moving here and its previous owner did not answer");
                self.chunks[i] = Chunk::Bytes(b.freeze());
                continue;
            }
            if states.len() + 1 < r.need {
                let text =
                    format!("CLUSTERDOWN read quorum not reached ({} of {} owners answered)", states.len() + 1, r.need);
                let mut b = BytesMut::new();
                encode::error(&mut b, text.as_bytes());
                self.chunks[i] = Chunk::Bytes(b.freeze());
                continue;
            }
            let now_ms = super::unix_ms();
            let local = shared.store.with_key(&key, now_ms, |k| k.version());
            let newest =
                states.iter().map(|(_, s)| s).max_by_key(|s| s.version()).cloned().unwrap_or(ReadState::Unknown);
            let mut repair = BytesMut::new();
            // A read-through runs again in any case: the slot's copy may
            // have landed here meanwhile, and its sender may have dropped
            // the slot since (so its "unknown" would be a false miss).
            if newest.version() > local || r.through {
                // This node was behind: catch up, then answer again.
                if newest.version() > local && shared.version_ok(newest.version(), now_ms) {
                    shared.store.with_key(&key, now_ms, |k| newest.apply_to(k));
                    shared.metrics.read_repairs.fetch_add(1, Relaxed);
                }
                let mut conn = ConnState::new(Arc::new(ClientInfo::new(0, UNSPECIFIED, UNSPECIFIED, now_ms)), false);
                conn.resp = r.v;
                let mut stats = LocalStats::default();
                let mut buf = BytesMut::new();
                let slices: Vec<&[u8]> = r.args.iter().map(Vec::as_slice).collect();
                let v = r.v;
                let mut ctx =
                    Ctx { shared, conn: &mut conn, out: Reply { buf: &mut buf, v }, now_ms, stats: &mut stats };
                command::execute(&mut ctx, Args::from_slices(&slices));
                if newest.version() > local {
                    newest.encode_repair(&key, &mut repair);
                }
                self.chunks[i] = Chunk::Bytes(buf.freeze());
            } else {
                shared.store.with_key(&key, now_ms, |k| encode_current(&mut repair, k));
            }
            let newest_v = newest.version().max(local);
            if repair.is_empty() {
                continue;
            }
            let repair = repair.freeze();
            for (name, st) in &states {
                if st.version() < newest_v {
                    shared.metrics.read_repairs.fetch_add(1, Relaxed);
                    self.send_repair(shared, name, slot, repair.clone()).await;
                }
            }
        }
    }

    async fn send_repair(&self, shared: &Shared, owner: &Arc<str>, slot: u16, op: Bytes) {
        if let Some(link) = shared.links.get(owner) {
            link.send(Msg::Repl { ops: vec![(slot, op)], done: None }).await;
        }
    }

    /// Sends the batch's replicated writes, waits for every pending answer
    /// (bounded by the replication timeout) and leaves the batch's replies
    /// in `out`, in request order.
    pub async fn finish(&mut self, shared: &Shared) {
        if !self.pending() {
            self.chunks.clear();
            self.mark = 0;
            return;
        }
        let timeout = shared.config.replication_timeout;
        let deadline = Instant::now() + timeout;
        if !self.fetches.is_empty() {
            fetch_moving_keys(shared, std::mem::take(&mut self.fetches), deadline).await;
        }
        // A forwarded write waits for its own quorum at the primary first.
        let forward_deadline = deadline + timeout;
        let acked = self.replicate(shared, deadline).await;
        // A forward whose link failed after sending may still run at the
        // primary until the deadline it carries: its -TIMEOUT is not
        // answered before then (the client's next request must come after
        // any effect of this one).
        let mut sent_and_lost = false;
        loop {
            for a in self.answers.iter_mut() {
                let (rx, until, forward) = match a {
                    Answer::Waiting(rx) => (rx, forward_deadline, true),
                    Answer::Reading(rx) => (rx, deadline, false),
                    _ => continue,
                };
                *a = match timeout_at(until, rx).await {
                    Ok(Ok(Ok(replies))) => Answer::Replies(replies),
                    Ok(Ok(Err(LinkError::Unreachable))) => Answer::Unreachable,
                    _ => {
                        sent_and_lost |= forward;
                        Answer::Unknown
                    }
                };
            }
            // Forwarded requests the primary refused before running them
            // because its table is behind ours (a join in progress): ask
            // again shortly, all together, within the deadline, so the
            // client never sees the transition.
            let again: Vec<usize> = (0..self.answers.len())
                .filter(|&i| {
                    matches!(&self.answers[i], Answer::Replies(r) if r.first().is_some_and(|b| refused_for_now(b)))
                        && self.resend.get(i).is_some_and(Option::is_some)
                })
                .collect();
            if again.is_empty() || Instant::now() + RETRY_PAUSE * 2 >= forward_deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            let t = shared.topology();
            for i in again {
                let Some(Some(r)) = self.resend.get(i) else { continue };
                let link = match r.slot {
                    Some(slot) => {
                        let p = t.table.owners(slot)[0];
                        if p == t.me {
                            continue; // primary here now: the client retries
                        }
                        shared.links.get(&t.nodes[usize::from(p)].name)
                    }
                    None => Some(r.link.clone()),
                };
                if let Some(Ok(rx)) = link.map(|l| l.try_call(r.request(t.digest), 1, true)) {
                    self.answers[i] = Answer::Waiting(rx);
                }
            }
        }
        if sent_and_lost {
            tokio::time::sleep_until(forward_deadline).await;
        }
        self.settle_reads(shared).await;
        if self.deferred {
            self.seal();
            let chunks = std::mem::take(&mut self.chunks);
            let mut done = BytesMut::with_capacity(self.out.len() + 64);
            for c in &chunks {
                self.emit(c, &mut done, &acked, shared);
            }
            self.out = done;
        }
        self.chunks.clear();
        self.answers.clear();
        self.resend.clear();
        self.items.clear();
        self.mark = 0;
        self.deferred = false;
    }

    /// Sends each owner its items in one message; returns which owners
    /// acknowledged everything. Stops waiting at `deadline`, or as soon as
    /// every item has its quorum (a slow or paused replica beyond the
    /// quorum does not hold the batch up).
    async fn replicate(&mut self, shared: &Shared, deadline: Instant) -> HashMap<Arc<str>, bool> {
        // Per owner: its items, and whether some caller waits for them.
        let mut per_owner: HashMap<Arc<str>, OwnerBatch> = HashMap::new();
        for it in &self.items {
            for r in &it.replicas {
                let e = per_owner.entry(r.clone()).or_default();
                e.0.push((it.slot, it.op.clone()));
                e.1 |= it.need > 1;
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut owners: Vec<Arc<str>> = Vec::new();
        for (owner, (ops, ack)) in per_owner {
            let Some(link) = shared.links.get(&owner) else { continue };
            let done = ack.then(|| Ack { tx: tx.clone(), id: owners.len() });
            if ack {
                owners.push(owner);
            }
            // A full queue (4096 messages) means the link is far behind:
            // the writes are counted as dropped hints rather than holding
            // every client of this node up.
            link.try_replicate(ops, done);
        }
        drop(tx);
        let mut acked: HashMap<Arc<str>, bool> = HashMap::new();
        let mut answered = 0;
        while answered < owners.len() && !self.quorums_met(&acked) {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some((id, ok))) => {
                    answered += 1;
                    acked.insert(owners[id].clone(), ok);
                }
                Ok(None) | Err(_) => break,
            }
        }
        acked
    }

    fn quorums_met(&self, acked: &HashMap<Arc<str>, bool>) -> bool {
        self.items.iter().all(|it| {
            it.need <= 1
                || 1 + it.replicas.iter().filter(|r| acked.get(*r).copied().unwrap_or(false)).count() >= it.need
        })
    }

    fn emit(&self, c: &Chunk, to: &mut BytesMut, acked: &HashMap<Arc<str>, bool>, shared: &Shared) {
        match c {
            Chunk::Ready(a, b) => to.extend_from_slice(&self.out[*a..*b]),
            Chunk::Read(r) => to.extend_from_slice(&self.out[r.reply.0..r.reply.1]),
            Chunk::Bytes(b) => to.extend_from_slice(b),
            Chunk::Forward(i) => match &self.answers[*i] {
                Answer::Replies(r) => {
                    for b in r {
                        to.extend_from_slice(b);
                    }
                }
                Answer::Unreachable | Answer::Waiting(_) | Answer::Reading(_) => {
                    encode::error(to, b"CLUSTERDOWN the primary of this key is unreachable (not sent)")
                }
                Answer::Unknown => encode::error(
                    to,
                    b"TIMEOUT no answer from the primary of this key in time; the command may have run",
                ),
            },
            Chunk::Quorum { reply, items } => {
                let short = self.items[items.0..items.1].iter().find_map(|it| {
                    let have = 1 + it.replicas.iter().filter(|r| acked.get(*r).copied().unwrap_or(false)).count();
                    (have < it.need).then_some((have, it.need))
                });
                match short {
                    None => to.extend_from_slice(&self.out[reply.0..reply.1]),
                    Some((have, need)) => {
                        shared.metrics.quorum_failures.fetch_add(1, Relaxed);
                        let text = format!(
                            "TIMEOUT write quorum not reached ({have} of {need} owners acknowledged in time); \
                             the write is applied on the primary and may reach the others later"
                        );
                        encode::error(to, text.as_bytes());
                    }
                }
            }
            Chunk::Gather { parts, combine, v, order } => {
                let mut frames = Vec::with_capacity(parts.len());
                // Replies of authenticated peers and of this node.
                let limits = crate::cluster::protocol::REPLY_LIMITS;
                for p in parts {
                    let mut buf = BytesMut::new();
                    self.emit(p, &mut buf, acked, shared);
                    match decode_frame(&buf, &limits) {
                        Ok(Some((f, _))) => frames.push(f),
                        _ => frames.push(Frame::Error(Bytes::from_static(b"ERR malformed reply from a peer"))),
                    }
                }
                encode::encode_frame(to, &gather(*combine, frames, order), *v);
            }
        }
    }
}

/// A forwarded request's raw reply that refused it for the moment
/// (`-TRYAGAIN`: the primary's view is moving): it did not run.
fn refused_for_now(raw: &[u8]) -> bool {
    raw.first() == Some(&b'-') && matches!(PeerReply::parse(Kind::Forward, raw), PeerReply::Error(e) if e.retryable())
}

/// Brings keys here from the members named with them (the previous owner
/// of an importing slot, or every co-owner of an unsettled one), all asked
/// at once, and marks a key fetched, found or not, once every member named
/// for it answered: the newest state may be on any of them.
async fn fetch_moving_keys(shared: &Shared, keys: Vec<(Arc<str>, Vec<u8>)>, deadline: Instant) {
    let mut waits = Vec::with_capacity(keys.len());
    let mut missing: HashMap<Vec<u8>, usize> = HashMap::new();
    for (from, key) in keys {
        let req = Request::Read { key: &key }.to_bytes();
        let rx = shared.links.get(&from).and_then(|l| l.try_call(req, 1, false).ok());
        *missing.entry(key.clone()).or_default() += 1;
        waits.push((key, rx));
    }
    for (key, rx) in waits {
        let Some(rx) = rx else { continue };
        let Ok(Ok(Ok(replies))) = timeout_at(deadline, rx).await else { continue };
        let Some(state) = replies.first().and_then(|raw| ReadState::parse(raw)) else { continue };
        let now_ms = super::unix_ms();
        if shared.version_ok(state.version(), now_ms) {
            shared.store.with_key(&key, now_ms, |k| state.apply_to(k));
        }
        if let Some(n) = missing.get_mut(&key) {
            *n -= 1;
        }
    }
    for (key, n) in missing {
        if n == 0 {
            shared.rebalance.mark_checked(key);
        }
    }
}

/// Combines the parts' replies. An error wins; if other parts succeeded,
/// the command partly ran, which a `CLUSTERDOWN` (meaning "did not run")
/// must not claim: the reply then says so.
fn gather(combine: Combine, frames: Vec<Frame>, order: &[usize]) -> Frame {
    if let Some(e) = frames.iter().find(|f| f.is_error()) {
        let ran = frames.iter().filter(|f| !f.is_error()).count();
        let text = match e {
            Frame::Error(b) | Frame::BlobError(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        if ran > 0 && text.starts_with("CLUSTERDOWN") {
            let text = format!(
                "TIMEOUT {ran} of {} parts of this multi-key command ran; another failed: {text}",
                frames.len()
            );
            return Frame::Error(text.into());
        }
        return e.clone();
    }
    match combine {
        Combine::Sum => Frame::Integer(frames.iter().map(|f| if let Frame::Integer(n) = f { *n } else { 0 }).sum()),
        Combine::AllOk => Frame::Simple(Bytes::from_static(b"OK")),
        Combine::Concat => Frame::Array(
            frames.into_iter().flat_map(|f| if let Frame::Array(a) = f { a } else { Vec::new() }).collect(),
        ),
        Combine::Mget => {
            let values = frames.into_iter().flat_map(|f| if let Frame::Array(a) = f { a } else { Vec::new() });
            let mut out = vec![Frame::Null; order.len()];
            for (v, &at) in values.zip(order) {
                out[at] = v;
            }
            Frame::Array(out)
        }
        Combine::Scan { member, members } => {
            let Some(Frame::Array(mut a)) = frames.into_iter().next() else {
                return Frame::Error(Bytes::from_static(b"ERR malformed SCAN reply from a peer"));
            };
            if a.len() != 2 {
                return Frame::Error(Bytes::from_static(b"ERR malformed SCAN reply from a peer"));
            }
            let next = a[0].as_bytes().and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok()).unwrap_or(0);
            let cursor = if next != 0 {
                (u64::from(member) << SCAN_MEMBER_SHIFT) | next
            } else if member + 1 < members {
                u64::from(member + 1) << SCAN_MEMBER_SHIFT
            } else {
                0
            };
            a[0] = Frame::bulk(cursor.to_string());
            Frame::Array(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_forward_carries_the_table_of_now() {
        let head = ForwardHead { resp3: false, share: false, deadline_ms: 1_795_431_954_344, table: 0xdead_beef };
        let mut body = BytesMut::new();
        for a in [&b"SET"[..], b"k", b"v"] {
            encode::bulk(&mut body, a);
        }
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let link = Link::for_test("m", tx);
        let r = Resend { head, body: body.freeze(), argc: 3, slot: None, link };
        let patched = r.request(0x0123_4567_89ab_cdef);
        let want = Request::Forward {
            head: ForwardHead { table: 0x0123_4567_89ab_cdef, ..head },
            command: Args::from_slices(&[b"SET", b"k", b"v"]),
        }
        .to_bytes();
        assert_eq!(patched, want);
    }

    #[test]
    fn only_a_tryagain_is_sent_again() {
        assert!(refused_for_now(b"-TRYAGAIN the forwarding node's table differs from this node's\r\n"));
        assert!(refused_for_now(b"-TRYAGAIN this key is moving to this node; retry\r\n"));
        assert!(!refused_for_now(b"-TIMEOUT forwarded request expired before it ran (not run)\r\n"));
        assert!(!refused_for_now(b"+OK\r\n"));
    }
}
