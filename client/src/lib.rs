//! # ringcache-client
//!
//! An async (tokio) client for ringcache (and for Redis Cluster, which
//! speaks the same views). It learns where slots live from `CLUSTER SLOTS`,
//! sends each key straight to its slot's primary over multiplexed
//! connections (requests issued concurrently by many tasks share writes:
//! automatic pipelining), follows `MOVED` by refreshing its map, and
//! retries within a deadline when that is safe: always when the request
//! provably never left this process, and after a lost connection only for
//! idempotent commands. Errors say which ([`Error`]).
//!
//! ```no_run
//! # async fn demo() -> ringcache_client::Result<()> {
//! let client = ringcache_client::Client::connect(["127.0.0.1:7000"]).await?;
//! client.set("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! let n = client.incr_by("visits", 1).await?;
//! let values = client.mget(&["greeting", "visits", "missing"]).await?;
//! # let _ = (n, values); Ok(()) }
//! ```
//!
//! Explicit pipelines group commands per node and keep their order
//! ([`Pipeline`]):
//!
//! ```no_run
//! # async fn demo(client: ringcache_client::Client) {
//! let replies = client.pipeline().set("a", "1").get("a").incr_by("n", 1).execute().await;
//! # let _ = replies; }
//! ```
//!
//! Settings ([`Options`]):
//! - [`Protocol`]: RESP3 by default (`HELLO 3`, with `AUTH` inside when a
//!   password is set), falling back to RESP2 when a server refuses HELLO;
//!   typed methods answer the same in both.
//! - `connections_per_node`: each is one task that writes every queued
//!   request in one go and hands replies back in order; requests are
//!   spread over them in turn. One is the default (the fastest measured on
//!   a 2-CPU machine, see BENCHMARKS.md).
//! - [`ReadFrom`]: reads may go to replicas.
//! - `refresh_every`: a background task asks the node the map came from
//!   for its epoch (`CLUSTER INFO`) and reloads the map only when it moved,
//!   so a node joining or leaving is learned without waiting for a `MOVED`
//!   ([`Client::stats`] counts reloads, checks and MOVED replies).
//! - `connector`: the stream each connection runs over is any
//!   `AsyncRead + AsyncWrite` ([`Stream`]) opened by a [`Connector`]; plain
//!   TCP by default. This is where TLS plugs in; ringcache servers do not
//!   speak TLS yet, and this crate ships no TLS implementation.
//!
//! ```
//! use std::time::Duration;
//! use ringcache_client::{Options, Protocol, ReadFrom};
//!
//! let opts = Options {
//!     password: Some("s3cret".into()),
//!     protocol: Protocol::Resp3,
//!     connections_per_node: 1,
//!     read_from: ReadFrom::PreferReplica,
//!     deadline: Duration::from_secs(5),
//!     ..Options::default()
//! };
//! assert_eq!(opts.refresh_every, Duration::from_secs(1));
//! ```

mod conn;
mod error;
mod pipeline;
mod tls;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use ringcache_protocol as protocol;
use ringcache_protocol::{Frame, SLOT_COUNT, key_slot};

use conn::{Conn, Handshake, Pending};
pub use conn::{Connecting, Connector, Protocol, Stream};
pub use error::{Error, Result};
pub use pipeline::Pipeline;
pub use tls::TlsConnector;

/// Which owner of a slot answers reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The primary: every read sees every acknowledged write.
    #[default]
    Primary,
    /// A replica when the slot has one, else the primary. Spreads reads;
    /// a replica may lag the primary by the replication delay.
    PreferReplica,
    /// Any owner, primary included, in turn.
    Any,
}

/// Client settings.
#[derive(Clone)]
pub struct Options {
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// Overall deadline of one call, retries included.
    pub deadline: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Where reads go. Anything but `Primary` sends READONLY on every
    /// connection, so replicas answer reads from their own copy.
    pub read_from: ReadFrom,
    /// How often the client asks a node for the cluster's epoch
    /// (`CLUSTER INFO`, one small reply); the slot map is reloaded only
    /// when the epoch changed (and besides on MOVED and failures). Zero:
    /// never.
    pub refresh_every: Duration,
    /// RESP version: RESP3 (the default) says `HELLO 3` on connect and
    /// falls back to RESP2 when the server refuses.
    pub protocol: Protocol,
    /// Multiplexed connections per node; requests are spread over them in
    /// turn. One is the fastest on a small machine (see BENCHMARKS.md):
    /// every connection pipelines already, and more connections mean
    /// smaller batches. More help when one connection's server-side
    /// thread is the bottleneck.
    pub connections_per_node: usize,
    /// Opens the stream to each node; `None` is plain TCP,
    /// [`TlsConnector`] is TLS (a server's `--tls-port`).
    pub connector: Option<Arc<dyn Connector>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("deadline", &self.deadline)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("read_from", &self.read_from)
            .field("refresh_every", &self.refresh_every)
            .field("protocol", &self.protocol)
            .field("connections_per_node", &self.connections_per_node)
            .field("connector", &self.connector.as_ref().map(|_| "<custom>"))
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            password: None,
            connect_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            read_from: ReadFrom::Primary,
            refresh_every: Duration::from_secs(1),
            protocol: Protocol::Resp3,
            connections_per_node: 1,
            connector: None,
        }
    }
}

/// Where each slot's owners are.
struct Routing {
    /// Grows with every refresh: a task that saw an older map knows someone
    /// refreshed since and need not ask the cluster again.
    version: u64,
    /// The node the map came from, and its epoch (`cluster_current_epoch`)
    /// read just before the map, if it told it. Epochs are counted by each
    /// node for itself, so only that node's epoch is compared with it.
    source: Option<SocketAddr>,
    epoch: Option<u64>,
    /// Each slot's shard (index into `shards`; `NO_SHARD` if uncovered):
    /// 32 KiB, so lookups stay in cache.
    slot_shard: Vec<u16>,
    shards: Vec<Shard>,
    nodes: Vec<SocketAddr>,
}

const NO_SHARD: u16 = u16::MAX;

/// The owners of a slot range, as indices into `Routing::nodes`.
struct Shard {
    primary: usize,
    /// The other owners (replicas), as CLUSTER SLOTS lists them.
    replicas: Vec<usize>,
}

impl Routing {
    fn shard(&self, key: &[u8]) -> Option<&Shard> {
        self.shards.get(usize::from(*self.slot_shard.get(usize::from(key_slot(key)))?))
    }
}

/// Commands that only read, which [`ReadFrom`] may send to a replica.
fn read_only(name: &[u8]) -> bool {
    const READS: &[&str] =
        &["GET", "MGET", "EXISTS", "TTL", "PTTL", "STRLEN", "GETRANGE", "TYPE", "EXPIRETIME", "PEXPIRETIME"];
    READS.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// Counters of what the client did, for tests and monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Slot maps loaded (the first one included).
    pub refreshes: u64,
    /// Epoch checks made by the background task.
    pub epoch_checks: u64,
    /// MOVED replies met (each followed by a refresh).
    pub moved: u64,
    /// Tries after the first, over all calls.
    pub retries: u64,
    /// The node the current slot map came from, and its epoch then (if it
    /// reports one); the background check asks that node.
    pub source: Option<SocketAddr>,
    pub epoch: Option<u64>,
}

#[derive(Default)]
struct Counters {
    refreshes: AtomicU64,
    epoch_checks: AtomicU64,
    moved: AtomicU64,
    retries: AtomicU64,
}

struct Inner {
    /// Tells clients apart in the per-thread caches.
    id: u64,
    seeds: Vec<String>,
    opts: Options,
    routing: RwLock<Arc<Routing>>,
    /// The version of `routing`, readable without its lock.
    published: AtomicU64,
    /// Up to `connections_per_node` live connections per node.
    conns: Mutex<HashMap<SocketAddr, Vec<Arc<Conn>>>>,
    /// One connect at a time per node (many tasks meeting a new node open
    /// one connection, not one each).
    connecting: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
    refresh: tokio::sync::Mutex<()>,
    /// Turns for spreading reads over owners.
    turn: std::sync::atomic::AtomicUsize,
    counters: Counters,
}

impl Drop for Inner {
    /// Connections end with the client (once their replies are in), even
    /// if a thread's cache still holds a handle.
    fn drop(&mut self) {
        for list in self.conns.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).values() {
            list.iter().for_each(|c| c.close());
        }
    }
}

/// What a thread last used of one client: its slot map and connections,
/// so the common path takes no lock and bumps no shared counter.
struct Cached {
    client: u64,
    version: u64,
    routing: Arc<Routing>,
    /// Per node of `routing`: the connections seen.
    conns: Vec<Vec<Arc<Conn>>>,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

static CLIENT_IDS: AtomicU64 = AtomicU64::new(0);

/// Where the fast path got a command.
enum Sent {
    /// Queued on a connection.
    Queued(Result<Pending>),
    /// The slow path must go on: connect to this node, or wait for permits.
    Slow(Option<SocketAddr>),
}

/// A cluster client; clone it freely (clones share connections).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The TTL of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    Persistent,
    Expires(Duration),
}

/// Commands that may be sent again when the connection broke after
/// sending: running them twice leaves the same state.
fn idempotent(name: &[u8]) -> bool {
    const SAFE: &[&str] = &[
        "GET",
        "MGET",
        "EXISTS",
        "TTL",
        "PTTL",
        "STRLEN",
        "GETRANGE",
        "TYPE",
        "PING",
        "ECHO",
        "DBSIZE",
        "SET",
        "MSET",
        "DEL",
        "UNLINK",
        "PERSIST",
        "PEXPIREAT",
        "EXPIREAT",
        "CLUSTER",
        "INFO",
        "KEYS",
        "SCAN",
        "TOUCH",
    ];
    SAFE.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// The key a raw command is routed by (its first key), if it has one.
fn routing_key<A: AsRef<[u8]>>(args: &[A]) -> Option<&[u8]> {
    const KEYLESS: &[&str] = &[
        "PING",
        "ECHO",
        "INFO",
        "DBSIZE",
        "KEYS",
        "SCAN",
        "FLUSHALL",
        "FLUSHDB",
        "CLUSTER",
        "COMMAND",
        "CONFIG",
        "CLIENT",
        "HELLO",
        "AUTH",
        "SELECT",
        "TIME",
        "RANDOMKEY",
        "READONLY",
        "READWRITE",
    ];
    let name = args.first()?.as_ref();
    if KEYLESS.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(name)) {
        return None;
    }
    args.get(1).map(AsRef::as_ref)
}

fn server_error(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Error(e) | Frame::BlobError(e) => Some(String::from_utf8_lossy(e).into_owned()),
        _ => None,
    }
}

/// What one try of a command came to.
enum Outcome {
    Done(Result<Frame>),
    /// Safe to try again (after a refresh when `moved`).
    Retry(Error),
}

/// Sorts a reply (or a failure to get one) into done or retryable.
fn classify(reply: Result<Frame>, name: &[u8]) -> Outcome {
    match reply {
        Ok(frame) => match server_error(&frame) {
            // MOVED and TRYAGAIN mean the command did not run here.
            Some(e) if e.starts_with("MOVED ") || e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {
                Outcome::Retry(Error::NotSent(e))
            }
            Some(e) => Outcome::Done(Err(Error::Server(e))),
            None => Outcome::Done(Ok(frame)),
        },
        Err(e) if e.not_sent() || (matches!(e, Error::Unknown(_)) && idempotent(name)) => Outcome::Retry(e),
        Err(e) => Outcome::Done(Err(e)),
    }
}

fn is_moved(e: &Error) -> bool {
    matches!(e, Error::NotSent(m) if m.starts_with("MOVED "))
}

/// The text of a bulk or verbatim reply (RESP2 / RESP3 forms of one text).
fn text(frame: &Frame) -> Option<&[u8]> {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b),
        Frame::Verbatim { text, .. } => Some(text),
        _ => None,
    }
}

/// `cluster_current_epoch` out of a CLUSTER INFO reply.
fn info_epoch(frame: &Frame) -> Option<u64> {
    let t = std::str::from_utf8(text(frame)?).ok()?;
    t.lines().find_map(|l| l.strip_prefix("cluster_current_epoch:")).and_then(|v| v.trim().parse().ok())
}

thread_local! {
    /// Turns for spreading requests over a node's connections; per thread,
    /// so no cache line bounces between threads.
    static CONN_TURN: Cell<usize> = const { Cell::new(usize::MAX) };
}

static THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Which of `want` connections to a node the next request of this thread
/// takes: in turn (threads start at different ones). Measured better than
/// a thread keeping to one connection.
fn conn_turn(want: usize) -> usize {
    CONN_TURN.with(|t| {
        let v = match t.get() {
            usize::MAX => THREADS.fetch_add(1, Relaxed),
            v => v.wrapping_add(1),
        };
        t.set(v);
        v % want
    })
}

/// Retry pacing of one call: started lazily, so the common path reads no
/// clock.
struct Retry {
    started: Option<Instant>,
    backoff: Duration,
    attempts: u32,
}

impl Retry {
    fn new(opts: &Options) -> Self {
        Retry { started: None, backoff: opts.backoff_min, attempts: 0 }
    }

    /// After a failed try: the error to give up with once past the
    /// deadline, else waits (unless `moved`, where the refresh is the cure).
    async fn wait(&mut self, opts: &Options, last: Error) -> Result<()> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if started.elapsed() >= opts.deadline {
            return Err(Error::Deadline { attempts: self.attempts, elapsed: started.elapsed(), last: Box::new(last) });
        }
        if !is_moved(&last) {
            tokio::time::sleep(self.backoff.min(opts.deadline.saturating_sub(started.elapsed()))).await;
            self.backoff = (self.backoff * 2).min(opts.backoff_max);
        }
        Ok(())
    }
}

impl Client {
    /// Connects to a cluster through any of `seeds` (`host:port`).
    pub async fn connect<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Result<Client> {
        Client::with_options(seeds, Options::default()).await
    }

    pub async fn with_options<S: Into<String>>(seeds: impl IntoIterator<Item = S>, opts: Options) -> Result<Client> {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        if seeds.is_empty() {
            return Err(Error::NoTopology("no seed address given".into()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                id: CLIENT_IDS.fetch_add(1, Relaxed),
                published: AtomicU64::new(0),
                seeds,
                opts,
                routing: RwLock::new(Arc::new(Routing {
                    version: 0,
                    source: None,
                    epoch: None,
                    slot_shard: Vec::new(),
                    shards: Vec::new(),
                    nodes: Vec::new(),
                })),
                conns: Mutex::new(HashMap::new()),
                connecting: Mutex::new(HashMap::new()),
                refresh: tokio::sync::Mutex::new(()),
                turn: std::sync::atomic::AtomicUsize::new(0),
                counters: Counters::default(),
            }),
        };
        client.refresh_topology().await?;
        let every = client.inner.opts.refresh_every;
        if !every.is_zero() {
            // Holds the client weakly: the task ends with the last clone.
            let weak = Arc::downgrade(&client.inner);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(inner) = weak.upgrade() else { return };
                    Client { inner }.check_epoch().await;
                }
            });
        }
        Ok(client)
    }

    fn routing(&self) -> Arc<Routing> {
        self.inner.routing.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// What the client did so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            refreshes: c.refreshes.load(Relaxed),
            epoch_checks: c.epoch_checks.load(Relaxed),
            moved: c.moved.load(Relaxed),
            retries: c.retries.load(Relaxed),
            source: self.routing().source,
            epoch: self.routing().epoch,
        }
    }

    /// Whether connections to `addr` speak RESP3 (after a first call that
    /// used them); `None` when none is open.
    pub fn speaks_resp3(&self, addr: SocketAddr) -> Option<bool> {
        let conns = self.inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        conns.get(&addr).and_then(|v| v.first()).map(|c| c.resp3)
    }

    /// The nodes of the current slot map.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.routing().nodes.clone()
    }

    /// The node a key's writes go to, by the current slot map.
    pub fn primary_of(&self, key: impl AsRef<[u8]>) -> Option<SocketAddr> {
        let r = self.routing();
        r.shard(key.as_ref()).map(|s| r.nodes[s.primary])
    }

    /// A live connection to `addr`: one of up to `connections_per_node`,
    /// in turn; opens one when a turn finds none (or a broken one).
    async fn conn(&self, addr: SocketAddr) -> Result<Arc<Conn>> {
        let want = self.inner.opts.connections_per_node.max(1);
        let turn = if want == 1 { 0 } else { conn_turn(want) };
        if let Some(c) = self.inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&addr)
            && let Some(c) = c.get(turn)
            && !c.is_broken()
        {
            return Ok(c.clone());
        }
        let gate = {
            let mut g = self.inner.connecting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            g.entry(addr).or_default().clone()
        };
        let _one = gate.lock().await;
        // Someone else may have connected while this task waited.
        {
            let mut conns = self.inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let list = conns.entry(addr).or_default();
            list.retain(|c| !c.is_broken());
            if list.len() >= want {
                return Ok(list[turn % list.len()].clone());
            }
        }
        let opts = &self.inner.opts;
        let hs = Handshake {
            timeout: opts.connect_timeout,
            password: opts.password.as_deref(),
            protocol: opts.protocol,
            readonly: opts.read_from != ReadFrom::Primary,
        };
        let c = Arc::new(Conn::connect(addr, opts.connector.as_deref(), &hs).await?);
        let mut conns = self.inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = conns.entry(addr).or_default();
        list.retain(|c| !c.is_broken());
        if list.len() < want {
            list.push(c.clone());
        }
        Ok(c)
    }

    /// Reloads the slot map from the first node that answers CLUSTER SLOTS.
    pub async fn refresh_topology(&self) -> Result<()> {
        self.refresh_since(u64::MAX).await
    }

    /// The background check: asks the node the map came from for its epoch
    /// (one small reply) and reloads the map only if the epoch moved (or
    /// the node cannot tell, or does not answer).
    async fn check_epoch(&self) {
        self.inner.counters.epoch_checks.fetch_add(1, Relaxed);
        let r = self.routing();
        if r.shards.is_empty() && r.source.is_some() && r.epoch.is_none() {
            return; // a standalone server: no map to keep
        }
        if let (Some(known), Some(addr)) = (r.epoch, r.source)
            && let Ok(c) = self.conn(addr).await
            && let Ok(info) = c.request(&["CLUSTER", "INFO"]).await
            && info_epoch(&info) == Some(known)
        {
            return;
        }
        let _ = self.refresh_since(r.version).await;
    }

    /// Refreshes unless the map changed since version `seen` (many tasks
    /// hitting MOVED at once cause one refresh, not one each).
    async fn refresh_since(&self, seen: u64) -> Result<()> {
        let _one_at_a_time = self.inner.refresh.lock().await;
        let current = self.routing().version;
        if seen != u64::MAX && current > seen {
            return Ok(());
        }
        let mut candidates: Vec<SocketAddr> = self.routing().nodes.clone();
        for s in &self.inner.seeds {
            if let Ok(found) = tokio::net::lookup_host(s.as_str()).await {
                candidates.extend(found);
            }
        }
        let mut seen_addrs = std::collections::HashSet::new();
        candidates.retain(|a| seen_addrs.insert(*a));
        let mut last = Error::NoTopology("no node answered".into());
        for addr in candidates {
            let conn = match self.conn(addr).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            // The epoch first: a map newer than its epoch only causes one
            // more reload later, never a missed one.
            let replies = match conn.send_many(&[&["CLUSTER", "INFO"][..], &["CLUSTER", "SLOTS"][..]]).await {
                Ok(p) => p,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let mut replies = replies.into_iter();
            let (Some(info), Some(slots)) = (replies.next(), replies.next()) else { continue };
            let epoch = info.reply().await.ok().as_ref().and_then(info_epoch);
            let routing = match slots.reply().await {
                Ok(Frame::Array(ranges)) => {
                    let mut routing = parse_slots(&ranges, addr, current + 1);
                    routing.epoch = epoch;
                    routing
                }
                // A standalone server (ringcache without a cluster secret,
                // or a plain Redis): every key lives on it.
                Ok(Frame::Error(e)) if e.windows(24).any(|w| w == b"cluster support disabled") => {
                    parse_slots(&[], addr, current + 1)
                }
                Ok(other) => {
                    last = Error::Protocol(format!("CLUSTER SLOTS from {addr}: {other:?}"));
                    continue;
                }
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let version = routing.version;
            *self.inner.routing.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routing);
            self.inner.published.store(version, std::sync::atomic::Ordering::Release);
            self.inner.counters.refreshes.fetch_add(1, Relaxed);
            return Ok(());
        }
        Err(last)
    }

    /// The node (index into `r.nodes`) a command goes to.
    fn node_in(&self, r: &Routing, key: Option<&[u8]>, read: bool) -> Option<usize> {
        let any = if r.nodes.is_empty() { None } else { Some(0) };
        let Some(k) = key else { return any };
        let Some(shard) = r.shard(k) else { return any };
        let replicas = &shard.replicas;
        let turn = || self.inner.turn.fetch_add(1, Relaxed);
        Some(match self.inner.opts.read_from {
            _ if !read || replicas.is_empty() => shard.primary,
            ReadFrom::Primary => shard.primary,
            ReadFrom::PreferReplica => replicas[turn() % replicas.len()],
            ReadFrom::Any => {
                let i = turn() % (replicas.len() + 1);
                if i == 0 { shard.primary } else { replicas[i - 1] }
            }
        })
    }

    fn addr_in(&self, r: &Routing, key: Option<&[u8]>, read: bool) -> Option<SocketAddr> {
        self.node_in(r, key, read).map(|i| r.nodes[i])
    }

    /// Whether a command may go to a replica under the read preference.
    fn replica_read<A: AsRef<[u8]>>(&self, args: &[A]) -> bool {
        self.inner.opts.read_from != ReadFrom::Primary && args.first().is_some_and(|n| read_only(n.as_ref()))
    }

    /// After a retryable failure: counts it, waits as the policy says, and
    /// refreshes the map if nobody did since `seen`.
    async fn before_retry(&self, retry: &mut Retry, seen: u64, last: Error) -> Result<()> {
        self.inner.counters.retries.fetch_add(1, Relaxed);
        if is_moved(&last) {
            self.inner.counters.moved.fetch_add(1, Relaxed);
        }
        retry.wait(&self.inner.opts, last).await?;
        // Best effort: a failed refresh leaves the old map for the retry.
        let _ = self.refresh_since(seen).await;
        Ok(())
    }

    /// The fast path of one try: the thread's cached map and connections,
    /// a non-blocking enqueue. Returns the map version it used.
    fn send_cached<A: AsRef<[u8]>>(&self, key: Option<&[u8]>, read: bool, args: &[A]) -> (u64, Sent) {
        let inner = &*self.inner;
        CACHE.with(|cell| {
            let mut cache = cell.borrow_mut();
            let published = inner.published.load(std::sync::atomic::Ordering::Acquire);
            let c = match &mut *cache {
                Some(c) if c.client == inner.id && c.version == published => c,
                stale => {
                    let routing = self.routing();
                    let conns = vec![Vec::new(); routing.nodes.len()];
                    stale.insert(Cached { client: inner.id, version: routing.version, routing, conns })
                }
            };
            let seen = c.version;
            let Some(node) = self.node_in(&c.routing, key, read) else { return (seen, Sent::Slow(None)) };
            let addr = c.routing.nodes[node];
            let want = inner.opts.connections_per_node.max(1);
            let turn = if want == 1 { 0 } else { conn_turn(want) };
            let list = &mut c.conns[node];
            if list.get(turn).is_none_or(|c| c.is_broken()) {
                let pool = inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                list.clear();
                list.extend(pool.get(&addr).into_iter().flatten().filter(|c| !c.is_broken()).cloned());
                if list.len() < want {
                    return (seen, Sent::Slow(Some(addr)));
                }
            }
            match list[turn % list.len()].try_send(args) {
                Some(r) => (seen, Sent::Queued(r)),
                None => (seen, Sent::Slow(Some(addr))),
            }
        })
    }

    /// Runs a command on the node that owns `key` (or any node), following
    /// MOVED and retrying within the deadline when that is safe.
    async fn run<A: AsRef<[u8]>>(&self, key: Option<&[u8]>, args: &[A]) -> Result<Frame> {
        let mut retry = Retry::new(&self.inner.opts);
        let read = self.replica_read(args);
        let name = args.first().map_or(&b""[..], AsRef::as_ref);
        loop {
            retry.attempts += 1;
            let (seen, sent) = self.send_cached(key, read, args);
            let reply = match sent {
                Sent::Queued(Ok(p)) => p.reply().await,
                Sent::Queued(Err(e)) => Err(e),
                Sent::Slow(Some(addr)) => match self.conn(addr).await {
                    Ok(c) => c.request(args).await,
                    Err(e) => Err(e),
                },
                Sent::Slow(None) => Err(Error::NotSent("no node known".into())),
            };
            match classify(reply, name) {
                Outcome::Done(r) => return r,
                Outcome::Retry(last) => self.before_retry(&mut retry, seen, last).await?,
            }
        }
    }

    /// A pipeline: commands queued here are sent together, one batch per
    /// node, when [`Pipeline::execute`] runs.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone())
    }

    /// Sends any command, routed by its first key (or to any node for
    /// keyless commands). Error replies become [`Error::Server`].
    pub async fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Frame> {
        self.run(routing_key(args), args).await
    }

    pub async fn ping(&self) -> Result<()> {
        self.run(None, &["PING"]).await.map(|_| ())
    }

    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let k = key.as_ref();
        bulk_opt(self.run(Some(k), &[b"GET".as_slice(), k]).await?)
    }

    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let k = key.as_ref();
        self.run(Some(k), &[b"SET".as_slice(), k, value.as_ref()]).await.map(|_| ())
    }

    /// SET with a TTL (PX).
    pub async fn set_ex(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, ttl: Duration) -> Result<()> {
        let k = key.as_ref();
        let ms = ttl.as_millis().max(1).to_string();
        self.run(Some(k), &[b"SET".as_slice(), k, value.as_ref(), b"PX", ms.as_bytes()]).await.map(|_| ())
    }

    /// SET NX: true if the key was set.
    pub async fn set_nx(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        let k = key.as_ref();
        Ok(!matches!(self.run(Some(k), &[b"SET".as_slice(), k, value.as_ref(), b"NX"]).await?, Frame::Null))
    }

    pub async fn getdel(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let k = key.as_ref();
        bulk_opt(self.run(Some(k), &[b"GETDEL".as_slice(), k]).await?)
    }

    pub async fn incr_by(&self, key: impl AsRef<[u8]>, by: i64) -> Result<i64> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"INCRBY".as_slice(), k, by.to_string().as_bytes()]).await?)
    }

    /// INCRBYFLOAT; the new value (a bulk string in RESP2, and in RESP3 a
    /// bulk or a double, both read).
    pub async fn incr_by_float(&self, key: impl AsRef<[u8]>, by: f64) -> Result<f64> {
        let k = key.as_ref();
        float(self.run(Some(k), &[b"INCRBYFLOAT".as_slice(), k, by.to_string().as_bytes()]).await?)
    }

    pub async fn append(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"APPEND".as_slice(), k, value.as_ref()]).await?).map(|n| n as u64)
    }

    pub async fn strlen(&self, key: impl AsRef<[u8]>) -> Result<u64> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"STRLEN".as_slice(), k]).await?).map(|n| n as u64)
    }

    /// Sets a TTL; false if the key does not exist.
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<bool> {
        let k = key.as_ref();
        let ms = ttl.as_millis().to_string();
        int(self.run(Some(k), &[b"PEXPIRE".as_slice(), k, ms.as_bytes()]).await?).map(|n| n == 1)
    }

    pub async fn persist(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"PERSIST".as_slice(), k]).await?).map(|n| n == 1)
    }

    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Ttl> {
        let k = key.as_ref();
        Ok(match int(self.run(Some(k), &[b"PTTL".as_slice(), k]).await?)? {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    /// Keys grouped by slot, each group with the positions it came from.
    fn by_slot<K: AsRef<[u8]>>(keys: &[K]) -> Vec<Vec<usize>> {
        let mut groups: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            groups.entry(key_slot(k.as_ref())).or_default().push(i);
        }
        let mut out: Vec<Vec<usize>> = groups.into_values().collect();
        out.sort();
        out
    }

    /// MGET over any keys: split by slot, sent concurrently, answered in order.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let mut out = vec![None; keys.len()];
        let mut tasks = tokio::task::JoinSet::new();
        for group in Self::by_slot(keys) {
            let mut args: Vec<Bytes> = vec![Bytes::from_static(b"MGET")];
            args.extend(group.iter().map(|&i| Bytes::copy_from_slice(keys[i].as_ref())));
            let c = self.clone();
            tasks.spawn(async move { (group, c.run(Some(&args[1].clone()), &args).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (group, reply) = done.map_err(|e| Error::Protocol(format!("task: {e}")))?;
            let Frame::Array(items) = reply? else { return Err(Error::Protocol("MGET reply is not an array".into())) };
            for (&i, item) in group.iter().zip(items) {
                out[i] = bulk_opt(item)?;
            }
        }
        Ok(out)
    }

    /// MSET over any keys: split by slot (atomic within a slot only).
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) -> Result<()> {
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for group in Self::by_slot(&keys) {
            let mut args: Vec<Bytes> = vec![Bytes::from_static(b"MSET")];
            for &i in &group {
                args.push(Bytes::copy_from_slice(pairs[i].0.as_ref()));
                args.push(Bytes::copy_from_slice(pairs[i].1.as_ref()));
            }
            let c = self.clone();
            tasks.spawn(async move { c.run(Some(&args[1].clone()), &args).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| Error::Protocol(format!("task: {e}")))??;
        }
        Ok(())
    }

    async fn count_by_slot<K: AsRef<[u8]>>(&self, name: &'static [u8], keys: &[K]) -> Result<u64> {
        let mut tasks = tokio::task::JoinSet::new();
        for group in Self::by_slot(keys) {
            let mut args: Vec<Bytes> = vec![Bytes::from_static(name)];
            args.extend(group.iter().map(|&i| Bytes::copy_from_slice(keys[i].as_ref())));
            let c = self.clone();
            tasks.spawn(async move { c.run(Some(&args[1].clone()), &args).await });
        }
        let mut total = 0;
        while let Some(done) = tasks.join_next().await {
            total += int(done.map_err(|e| Error::Protocol(format!("task: {e}")))??)? as u64;
        }
        Ok(total)
    }

    /// DEL over any keys; the number deleted.
    pub async fn del<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        self.count_by_slot(b"DEL", keys).await
    }

    /// EXISTS over any keys; how many exist (duplicates count).
    pub async fn exists<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        self.count_by_slot(b"EXISTS", keys).await
    }

    /// Keys in the whole cluster, each counted once (any node answers
    /// for the cluster: it asks every primary for its share).
    pub async fn dbsize(&self) -> Result<u64> {
        Ok(int(self.run(None, &["DBSIZE"]).await?)? as u64)
    }
}

fn bulk_opt(f: Frame) -> Result<Option<Bytes>> {
    match f {
        Frame::Bulk(b) => Ok(Some(b)),
        Frame::Null => Ok(None),
        other => Err(Error::Protocol(format!("expected a bulk string, got {other:?}"))),
    }
}

fn float(f: Frame) -> Result<f64> {
    match &f {
        Frame::Double(d) => Ok(*d),
        other => text(other)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Protocol(format!("expected a number, got {f:?}"))),
    }
}

fn int(f: Frame) -> Result<i64> {
    match f {
        Frame::Integer(n) => Ok(n),
        other => Err(Error::Protocol(format!("expected an integer, got {other:?}"))),
    }
}

/// CLUSTER SLOTS → primaries by slot. Node entries are `[ip, port, ...]`.
/// A CLUSTER SLOTS node entry: `[ip, port, id, ...]`.
fn node_addr(node: &Frame) -> Option<SocketAddr> {
    let Frame::Array(node) = node else { return None };
    let (Some(ip), Some(Frame::Integer(port))) = (node.first().and_then(Frame::as_bytes), node.get(1)) else {
        return None;
    };
    format!("{}:{port}", String::from_utf8_lossy(ip)).parse::<SocketAddr>().ok()
}

fn parse_slots(ranges: &[Frame], via: SocketAddr, version: u64) -> Routing {
    let mut slot_shard = vec![NO_SHARD; usize::from(SLOT_COUNT)];
    let mut shards = Vec::new();
    let mut nodes: Vec<SocketAddr> = Vec::new();
    let mut index = |n: SocketAddr| match nodes.iter().position(|&m| m == n) {
        Some(i) => i,
        None => {
            nodes.push(n);
            nodes.len() - 1
        }
    };
    for r in ranges {
        let Frame::Array(parts) = r else { continue };
        let (Some(Frame::Integer(a)), Some(Frame::Integer(b)), Some(addr)) =
            (parts.first(), parts.get(1), parts.get(2).and_then(node_addr))
        else {
            continue;
        };
        let primary = index(addr);
        let replicas: Vec<usize> = parts[3..].iter().filter_map(node_addr).map(&mut index).collect();
        // Ranges with the same owners share one shard entry.
        let shard = match shards.iter().position(|s: &Shard| s.primary == primary && s.replicas == replicas) {
            Some(i) => i,
            None => {
                shards.push(Shard { primary, replicas });
                shards.len() - 1
            }
        };
        let Ok(shard) = u16::try_from(shard) else { continue };
        for s in (*a).max(0)..=(*b).min(i64::from(SLOT_COUNT) - 1) {
            slot_shard[s as usize] = shard;
        }
    }
    if nodes.is_empty() {
        nodes.push(via);
    }
    Routing { version, source: Some(via), epoch: None, slot_shard, shards, nodes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: i64) -> Frame {
        Frame::Array(vec![Frame::Bulk("127.0.0.1".into()), Frame::Integer(port), Frame::Bulk("id".into())])
    }

    #[test]
    fn slot_map_from_cluster_slots() {
        let ranges = vec![
            Frame::Array(vec![Frame::Integer(0), Frame::Integer(99), node(7000), node(7001)]),
            Frame::Array(vec![Frame::Integer(100), Frame::Integer(16383), node(7001), node(7000)]),
        ];
        let via: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let r = parse_slots(&ranges, via, 1);
        assert_eq!(r.nodes.len(), 2);
        let key_in = |lo: u16, hi: u16| {
            (0..).map(|i| format!("k{i}")).find(|k| (lo..=hi).contains(&key_slot(k.as_bytes()))).unwrap()
        };
        let a = r.shard(key_in(0, 99).as_bytes()).unwrap();
        assert_eq!((r.nodes[a.primary].port(), r.nodes[a.replicas[0]].port()), (7000, 7001));
        let b = r.shard(key_in(100, 16383).as_bytes()).unwrap();
        assert_eq!((r.nodes[b.primary].port(), r.nodes[b.replicas[0]].port()), (7001, 7000));
        assert_eq!(r.source, Some(via));
    }

    #[test]
    fn epoch_from_cluster_info_in_both_protocols() {
        let t = "cluster_state:ok\r\ncluster_current_epoch:42\r\ncluster_my_epoch:42\r\n";
        assert_eq!(info_epoch(&Frame::Bulk(t.into())), Some(42));
        assert_eq!(info_epoch(&Frame::Verbatim { format: *b"txt", text: t.into() }), Some(42));
        assert_eq!(info_epoch(&Frame::Bulk("cluster_state:ok\r\n".into())), None);
    }

    #[test]
    fn retries_only_what_is_safe() {
        let retry = |r: Result<Frame>, name: &[u8]| matches!(classify(r, name), Outcome::Retry(_));
        assert!(retry(Ok(Frame::Error("MOVED 1 127.0.0.1:7000".into())), b"INCR"));
        assert!(retry(Ok(Frame::Error("TRYAGAIN busy".into())), b"INCR"));
        assert!(!retry(Ok(Frame::Error("ERR no".into())), b"GET"));
        assert!(retry(Err(Error::NotSent("x".into())), b"INCR"));
        assert!(retry(Err(Error::Unknown("x".into())), b"GET"));
        assert!(!retry(Err(Error::Unknown("x".into())), b"INCR"));
        assert!(matches!(float(Frame::Double(1.5)), Ok(f) if f == 1.5));
        assert!(matches!(float(Frame::Bulk("2.25".into())), Ok(f) if f == 2.25));
    }
}
