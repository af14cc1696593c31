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
//!
//! Files: this one (the batch, `run`, `finish`); `local` (requests this
//! node coordinates); `forward` (sending to another member, resending);
//! `reads` (quorum reads, read-through, read repair); `fetch` (a key's
//! newest state before a write); `replicate` (owners' acks); `gather`
//! (splicing replies in order).

mod fetch;
mod forward;
mod gather;
mod local;
mod reads;
mod replicate;

use fetch::fetch_keys;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use ringcache_protocol::{Args, Frame, Version, decode_frame, encode, key_slot};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

use crate::cluster::coordinate::{Admit, Gate, Refusal, admit};
use crate::cluster::lifecycle::Phase;
use crate::cluster::protocol::{Deadline, ForwardHead, Kind, Reply as PeerReply, Request, encode_forward_head};
use crate::cluster::replication::{ReadState, encode_current, quorum};
use crate::cluster::settle::Fetch;
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

/// Pause before a request whose primary was unreachable is tried again
/// (failure detection takes hundreds of milliseconds).
const UNREACHABLE_PAUSE: std::time::Duration =
    std::time::Duration::from_millis(crate::cluster::coordinate::UNREACHABLE_PAUSE_MS);

fn rejected(env: &mut Env<'_>, spec: &Spec) {
    if let Some(i) = command::lookup(spec.name.as_bytes()) {
        env.stats.record(i, Outcome::Rejected);
    }
}

/// A read of one key: a miss on an importing slot reads through to the
/// previous owner (`local`) instead of being held for a fetch.
fn is_single_key_read(spec: &Spec) -> bool {
    !spec.write && spec.first_key == 1 && spec.last_key == 1
}

/// How a forwarded call ended.
#[derive(Debug)]
enum Answer {
    /// A forward planned, to be sent with the others for its member
    /// ([`Exec::send_forwards`]).
    Queued,
    /// A forward sent in call `call` of the batch ([`Exec::calls`]), as
    /// its `pos`th request.
    InCall {
        call: usize,
        pos: usize,
    },
    Waiting(oneshot::Receiver<Result<Vec<Bytes>, LinkError>>),
    /// An owner's answer to RC.READ: due within the replication timeout.
    Reading(oneshot::Receiver<Result<Vec<Bytes>, LinkError>>),
    Replies(Vec<Bytes>),
    /// One raw reply (a forward's, out of its group's call).
    One(Bytes),
    /// Never sent: the primary is unreachable.
    Unreachable,
    /// Sent, no answer: it may have run.
    Unknown,
}

impl Answer {
    /// The raw replies, once they came.
    fn replies(&self) -> Option<&[Bytes]> {
        match self {
            Answer::Replies(r) => Some(r),
            Answer::One(b) => Some(std::slice::from_ref(b)),
            _ => None,
        }
    }
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
    /// A member's forward answered `-TRYAGAIN` (`reply`) while the keys
    /// `fetches` of [`Exec::fetches`] are fetched: the reply stands unless
    /// a fetch failed, which refuses it.
    Fetching {
        reply: (usize, usize),
        fetches: (usize, usize),
    },
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
    /// A read-through to the slot's previous owner (asked first) and its
    /// co-owners: without the sender's answer, only a co-owner that knows
    /// the key counts; otherwise "unknown", never "missing".
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
    /// Whether the command forwarded is a read (safe to send again after
    /// it ran).
    fn is_read(&self) -> bool {
        self.args().first().and_then(|name| command::lookup(name)).is_some_and(|i| !command::COMMANDS[i].write)
    }

    /// The forwarded command's arguments, from the bulk strings encoded
    /// here (`$3\r\nGET\r\n...`).
    fn args(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(self.argc);
        let mut b = &self.body[..];
        while out.len() < self.argc {
            let Some(end) = b.iter().take(24).position(|&c| c == b'\r') else { break };
            let Some(len) = std::str::from_utf8(&b[1..end]).ok().and_then(|n| n.parse::<usize>().ok()) else {
                break;
            };
            let Some(arg) = b.get(end + 2..end + 2 + len) else { break };
            out.push(arg);
            b = b.get(end + 4 + len..).unwrap_or_default();
        }
        debug_assert_eq!(out.len(), self.argc, "a body this node encoded");
        out
    }

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

/// The forwards of a batch for one member, encoded one after the other:
/// sent as one call (one queue message, one reply channel, one buffer)
/// instead of one per request.
#[derive(Debug)]
struct ForwardGroup {
    link: Link,
    req: BytesMut,
    /// The answer index of each request in `req`, in order, and where its
    /// body (the command's arguments) lies in `req`.
    answers: Vec<(usize, std::ops::Range<usize>)>,
}

/// A call carrying a group of forwards, then its outcome.
#[derive(Debug)]
enum Call {
    Waiting(oneshot::Receiver<Result<Vec<Bytes>, LinkError>>),
    /// The replies, or how the link failed (`None`: no answer in time).
    Done(Option<Result<Vec<Bytes>, LinkError>>),
}

/// A forward group is sent once adding a request would take it past this
/// (the request then starts the next group), so its buffer stays below
/// glibc's large-chunk size (see [`OPS_BUF_CHUNK`]).
const FORWARD_GROUP_BYTES: usize = 960;

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
    /// Keys of forwarded requests answered -TRYAGAIN, to fetch (with
    /// their slots) before the batch's replies go out, and how each
    /// fetch ended.
    fetches: Vec<(u16, Fetch)>,
    verdicts: Vec<crate::cluster::settle::Verdict>,
    /// The unsettle generation before the table of the batch's first
    /// fetch, and whether the table was converging when they ended.
    fetch_gen: Option<u64>,
    fetch_converging: bool,
    /// The unsettle generation read before the table of the request
    /// running, and of the held request (see `fetch_keys`).
    run_gen: u64,
    hold_gen: u64,
    /// Keys the request just run is held for (a client's request on an
    /// importing or unsettled slot); see [`Exec::fetch_held`].
    hold: Vec<(u16, Fetch)>,
    /// The request just run is held because its key's primary is
    /// unreachable: the table version then and the primary's link; see
    /// [`Exec::await_primary`].
    primary_hold: Option<(u64, Link)>,
    /// The request running waited for its primary once already.
    primary_waited: bool,
    /// The request just run is held because its slot's keepers looked
    /// short right after a table change: the table version then; see
    /// [`Exec::await_keepers`].
    keepers_hold: Option<u64>,
    /// The request running waited for its keepers once already.
    keepers_waited: bool,
    /// Counts this batch while it coordinates replicated writes (see
    /// `Shared::coordinating`).
    coordinating: Option<crate::shared::Coordinating>,
    /// Where replicated states are encoded: each item's `op` is split off
    /// it, so the ops of many writes share one allocation.
    ops_buf: BytesMut,
    /// Forwards planned and not sent yet, per member.
    forward_groups: Vec<ForwardGroup>,
    /// The calls that carried forward groups ([`Answer::InCall`]).
    calls: Vec<Call>,
}

/// The room `Exec::ops_buf` is given when it runs low: several small
/// writes' states, let go when the batch finishes (an idle connection
/// keeps none). Below glibc's 1 KiB large-chunk size on purpose: each
/// large allocation made while small chunks wait in the fast bins
/// consolidates them all (`malloc_consolidate` was 5.5 % of a forwarding
/// node's CPU with a 4 KiB chunk per batch).
const OPS_BUF_CHUNK: usize = 960;

impl Exec {
    pub fn new(capacity: usize) -> Self {
        Exec { out: BytesMut::with_capacity(capacity), ..Exec::default() }
    }

    /// Whether some reply of this batch is still to come.
    pub fn pending(&self) -> bool {
        self.deferred || !self.items.is_empty() || !self.fetches.is_empty()
    }

    /// A fresh chunk for `ops_buf` when it has little room left, so the
    /// next states are encoded without allocating each on its own (the
    /// old chunk lives on in the ops split off it until they are acked).
    fn ops_room(&mut self) {
        if self.ops_buf.capacity() - self.ops_buf.len() < OPS_BUF_CHUNK / 4 {
            self.ops_buf = BytesMut::with_capacity(OPS_BUF_CHUNK);
        }
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
        // Before the table: a fetch planned on it counts only if nothing
        // was marked unsettled since (`RebalanceState::mark_checked`).
        self.run_gen = env.shared.rebalance.unsettle_gen();
        let members = env.conn.topology(env.shared).nodes.len();
        if members >= 2 {
            // A node that was stopped long enough to be declared down may
            // be running a request it read on waking: unsettle before it
            // runs.
            env.shared.notice_pause(env.now_ms);
        }
        let awaiting_seed = env.shared.lifecycle.phase() == Phase::AwaitingSeed;
        // Alone, only a peer's or an awaiting node's request needs its
        // command looked up before it runs (the single-node path looks
        // it up once, in `execute`).
        let spec = if members >= 2 || env.conn.peer || awaiting_seed {
            command::precheck(env.conn, env.shared, args)
        } else {
            None
        };
        let write = spec.is_some_and(|s| s.write);
        let gate = Gate {
            members,
            awaiting_seed,
            seeded: !env.shared.config.seeds.is_empty(),
            from_peer: env.conn.peer,
            keyed: spec.is_some_and(|s| s.first_key > 0),
            write,
            minority: if members >= 2 { env.shared.minority() } else { None },
            minority_refuses_reads: env.shared.config.minority_refuses_reads,
            returning: write && members >= 2 && env.shared.returning(env.now_ms),
        };
        match admit(&gate) {
            Admit::Alone => {
                let ran = self.execute_here(env, args);
                if ran.is_some_and(|spec| spec.write) && !env.conn.peer {
                    env.shared.lifecycle.wrote_alone();
                }
                return;
            }
            Admit::Refuse(r) => {
                match r {
                    Refusal::Minority { .. } => env.shared.metrics.minority_refusals.fetch_add(1, Relaxed),
                    Refusal::Returning => env.shared.metrics.returning_refusals.fetch_add(1, Relaxed),
                    _ => 0,
                };
                if let Some(spec) = spec {
                    rejected(env, spec);
                }
                encode::error(&mut self.out, &r.text());
                return;
            }
            Admit::Cluster => {}
        }
        let Some(spec) = spec else {
            return self.run_here(env, args);
        };
        let t = env.conn.topology(env.shared).clone();
        // On the minority side reads of keys this node holds are answered
        // from its copy (as after READONLY): their primary may be across
        // the partition.
        let readonly = env.conn.readonly || (!spec.write && env.shared.minority().is_some());
        let planned = plan(spec, args, &t, readonly, env.conn.peer);
        if !env.conn.peer && matches!(planned, Plan::Local | Plan::Split { .. }) && !is_single_key_read(spec) {
            // Keys here whose slot is importing or unsettled are fetched
            // before the request runs; the client waits, and sees no error
            // for the cluster's own work. (A single-key read reads through
            // instead, in `local`.)
            if self.keepers_refused(env, spec, args, &t) {
                return;
            }
            let fetches = self.fetches_for(env, spec, args, &t);
            if !fetches.is_empty() {
                self.hold = fetches;
                self.hold_gen = self.run_gen;
                return;
            }
        }
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
                if !env.conn.peer
                    && !self.primary_waited
                    && let Some(link) = self.peers.get(env.shared, &t, m).1
                    && !link.connected()
                {
                    // The primary's link is down: it may have failed, and
                    // gossip will soon say so and move its slots. Wait for
                    // that (or for the link) instead of answering an error;
                    // then run it where the table says, here included.
                    self.primary_hold = Some((env.shared.topology_version(), link.clone()));
                    return;
                }
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

    /// Sends the batch's replicated writes, waits for every pending answer
    /// (bounded by the replication timeout) and leaves the batch's replies
    /// in `out`, in request order.
    pub async fn finish(&mut self, shared: &Shared) {
        if !self.pending() {
            self.chunks.clear();
            self.mark = 0;
            return;
        }
        self.send_forwards();
        let timeout = shared.config.replication_timeout;
        let deadline = Instant::now() + timeout;
        if !self.fetches.is_empty() {
            let generation = self.fetch_gen.take().unwrap_or(0);
            self.verdicts = fetch_keys(shared, &self.fetches, deadline, generation).await;
            self.fetch_converging = crate::process::unix_ms() < shared.converging_until_ms();
        }
        // A forwarded write waits for its own quorum at the primary first.
        let forward_deadline = deadline + timeout;
        let acked = self.replicate(shared, deadline).await;
        self.await_forwards(shared, deadline, forward_deadline).await;
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
        self.calls.clear();
        self.resend.clear();
        self.items.clear();
        self.fetches.clear();
        self.verdicts.clear();
        // The ops sent keep their chunk alive until acknowledged; this
        // connection keeps none while it waits for its next batch.
        self.ops_buf = BytesMut::new();
        self.coordinating = None;
        self.mark = 0;
        self.deferred = false;
    }
}
