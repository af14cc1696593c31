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
//!   TCP by default; [`TlsConnector`] speaks TLS (rustls) to a server's
//!   `--tls-port`.
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

#![deny(missing_docs)]

mod commands;
mod conn;
mod error;
mod pipeline;
mod retry;
mod routing;
mod tls;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use ringcache_protocol as protocol;
use ringcache_protocol::Frame;

pub use commands::Ttl;
use conn::{Conn, Handshake, Pending};
pub use conn::{Connecting, Connector, Protocol, Stream};
pub use error::{Error, Result};
pub use pipeline::Pipeline;
use retry::{Outcome, Retry, classify, is_moved};
use routing::{Routing, info_epoch, parse_slots, read_only};
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
    /// Sent with `AUTH` (inside `HELLO 3`, or alone under RESP2).
    pub password: Option<String>,
    /// How long one TCP (and TLS) connection attempt may take.
    pub connect_timeout: Duration,
    /// Overall deadline of one call, retries included.
    pub deadline: Duration,
    /// The first pause between retries; it doubles after each.
    pub backoff_min: Duration,
    /// The longest pause between retries.
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
    /// See `source`.
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

impl Client {
    /// Connects to a cluster through any of `seeds` (`host:port`).
    pub async fn connect<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Result<Client> {
        Client::with_options(seeds, Options::default()).await
    }

    /// Connects to the first seed (`host:port`) that answers, with
    /// `opts`, and loads the slot map from it.
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
            match classify(reply, args) {
                Outcome::Done(r) => return r,
                Outcome::Retry(last) => self.before_retry(&mut retry, seen, last).await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::float;
    use ringcache_protocol::key_slot;

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
        let retry = |r: Result<Frame>, args: &[&str]| matches!(classify(r, args), Outcome::Retry(_));
        let lost = || Err(Error::Unknown("x".into()));
        assert!(retry(Ok(Frame::Error("MOVED 1 127.0.0.1:7000".into())), &["INCR", "k"]));
        assert!(retry(Ok(Frame::Error("TRYAGAIN busy".into())), &["INCR", "k"]));
        assert!(!retry(Ok(Frame::Error("ERR no".into())), &["GET", "k"]));
        assert!(retry(Err(Error::NotSent("x".into())), &["INCR", "k"]));
        assert!(retry(lost(), &["GET", "k"]));
        assert!(!retry(lost(), &["INCR", "k"]));
        // Sent and lost: only what answers the same the second time.
        assert!(retry(lost(), &["SET", "k", "v"]));
        assert!(retry(lost(), &["set", "k", "v", "PX", "100", "XX"]));
        assert!(!retry(lost(), &["SET", "k", "v", "NX"]));
        assert!(!retry(lost(), &["SET", "k", "v", "px", "100", "get"]));
        assert!(!retry(lost(), &["DEL", "k"]));
        assert!(!retry(lost(), &["PERSIST", "k"]));
        // A value spelled like an option is a value.
        assert!(retry(lost(), &["SET", "k", "NX"]));
        assert!(matches!(float(Frame::Double(1.5)), Ok(f) if f == 1.5));
        assert!(matches!(float(Frame::Bulk("2.25".into())), Ok(f) if f == 2.25));
    }
}
