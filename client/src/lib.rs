//! # ringcache-client
//!
//! An async client for ringcache (and for Redis Cluster, which speaks the
//! same views). It learns where slots live from `CLUSTER SLOTS`, sends each
//! key straight to its slot's primary over one multiplexed connection per
//! node (requests issued concurrently by many tasks share writes: automatic
//! pipelining), follows `MOVED` by refreshing its map, and retries within a
//! deadline when that is safe: always when the request provably never left
//! this process, and after a lost connection only for idempotent commands.
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
//! Reads may go to replicas ([`ReadFrom`]); the slot map is also
//! refreshed in the background every [`Options::refresh_every`].
//!
//! Not yet (see the client issue): several connections per node, RESP3,
//! TLS.

mod conn;
mod error;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use ringcache_protocol as protocol;
use ringcache_protocol::{Frame, SLOT_COUNT, key_slot};

use conn::Conn;
pub use error::{Error, Result};

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
#[derive(Debug, Clone)]
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
    /// The slot map is reloaded in the background this often (besides on
    /// MOVED and failures). Zero: never.
    pub refresh_every: Duration,
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
            refresh_every: Duration::from_secs(5),
        }
    }
}

/// Where each slot's owners are.
struct Routing {
    /// Grows with every refresh: a task that saw an older map knows someone
    /// refreshed since and need not ask the cluster again.
    version: u64,
    primaries: Vec<Option<SocketAddr>>,
    /// Each slot's other owners (replicas), as CLUSTER SLOTS lists them.
    replicas: Vec<Vec<SocketAddr>>,
    nodes: Vec<SocketAddr>,
}

/// Commands that only read, which [`ReadFrom`] may send to a replica.
fn read_only(name: &[u8]) -> bool {
    const READS: &[&str] =
        &["GET", "MGET", "EXISTS", "TTL", "PTTL", "STRLEN", "GETRANGE", "TYPE", "EXPIRETIME", "PEXPIRETIME"];
    READS.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

struct Inner {
    seeds: Vec<String>,
    opts: Options,
    routing: RwLock<Arc<Routing>>,
    conns: Mutex<HashMap<SocketAddr, Arc<Conn>>>,
    refresh: tokio::sync::Mutex<()>,
    /// Turns for spreading reads over owners.
    turn: std::sync::atomic::AtomicUsize,
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
                seeds,
                opts,
                routing: RwLock::new(Arc::new(Routing {
                    version: 0,
                    primaries: Vec::new(),
                    replicas: Vec::new(),
                    nodes: Vec::new(),
                })),
                conns: Mutex::new(HashMap::new()),
                refresh: tokio::sync::Mutex::new(()),
                turn: std::sync::atomic::AtomicUsize::new(0),
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
                    let _ = Client { inner }.refresh_topology().await;
                }
            });
        }
        Ok(client)
    }

    fn routing(&self) -> Arc<Routing> {
        self.inner.routing.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn conn(&self, addr: SocketAddr) -> Result<Arc<Conn>> {
        if let Some(c) = self.inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&addr)
            && !c.is_broken()
        {
            return Ok(c.clone());
        }
        let opts = &self.inner.opts;
        let c = Arc::new(Conn::connect(addr, opts.connect_timeout, opts.password.as_deref()).await?);
        if opts.read_from != ReadFrom::Primary {
            c.request(&["READONLY"]).await?;
        }
        self.inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(addr, c.clone());
        Ok(c)
    }

    /// Reloads the slot map from the first node that answers CLUSTER SLOTS.
    pub async fn refresh_topology(&self) -> Result<()> {
        self.refresh_since(u64::MAX).await
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
        candidates.dedup();
        let mut last = Error::NoTopology("no node answered".into());
        for addr in candidates {
            let conn = match self.conn(addr).await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match conn.request(&["CLUSTER", "SLOTS"]).await {
                Ok(Frame::Array(ranges)) => {
                    let routing = parse_slots(&ranges, addr, current + 1);
                    *self.inner.routing.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routing);
                    return Ok(());
                }
                Ok(other) => last = Error::Protocol(format!("CLUSTER SLOTS from {addr}: {other:?}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn addr_in(&self, r: &Routing, key: Option<&[u8]>, read: bool) -> Option<SocketAddr> {
        let Some(k) = key else { return r.nodes.first().copied() };
        let slot = usize::from(key_slot(k));
        let primary = r.primaries.get(slot).copied().flatten();
        let replicas = r.replicas.get(slot).map(Vec::as_slice).unwrap_or_default();
        let turn = || self.inner.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let chosen = match self.inner.opts.read_from {
            _ if !read || replicas.is_empty() => primary,
            ReadFrom::Primary => primary,
            ReadFrom::PreferReplica => Some(replicas[turn() % replicas.len()]),
            ReadFrom::Any => {
                let i = turn() % (replicas.len() + 1);
                if i == 0 { primary } else { Some(replicas[i - 1]) }
            }
        };
        chosen.or_else(|| r.nodes.first().copied())
    }

    /// Runs a command on the node that owns `key` (or any node), following
    /// MOVED and retrying within the deadline when that is safe.
    async fn run<A: AsRef<[u8]>>(&self, key: Option<&[u8]>, args: &[A]) -> Result<Frame> {
        // The clock and the idempotency check are only needed once a try
        // has failed: the common path reads neither.
        let mut started: Option<Instant> = None;
        let opts = &self.inner.opts;
        let mut backoff = opts.backoff_min;
        let mut attempts = 0;
        let read =
            self.inner.opts.read_from != ReadFrom::Primary && args.first().is_some_and(|n| read_only(n.as_ref()));
        loop {
            attempts += 1;
            let routing = self.routing();
            let seen = routing.version;
            let outcome = match self.addr_in(&routing, key, read) {
                Some(addr) => match self.conn(addr).await {
                    Ok(c) => c.request(args).await,
                    Err(e) => Err(e),
                },
                None => Err(Error::NotSent("no node known".into())),
            };
            let last = match outcome {
                Ok(frame) => match server_error(&frame) {
                    // MOVED and TRYAGAIN mean the command did not run here.
                    Some(e) if e.starts_with("MOVED ") || e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {
                        Error::NotSent(e)
                    }
                    Some(e) => return Err(Error::Server(e)),
                    None => return Ok(frame),
                },
                Err(e)
                    if e.not_sent()
                        || (matches!(e, Error::Unknown(_)) && args.first().is_some_and(|n| idempotent(n.as_ref()))) =>
                {
                    e
                }
                Err(e) => return Err(e),
            };
            let started = *started.get_or_insert_with(Instant::now);
            if started.elapsed() >= opts.deadline {
                return Err(Error::Deadline { attempts, elapsed: started.elapsed(), last: Box::new(last) });
            }
            let moved = matches!(&last, Error::NotSent(m) if m.starts_with("MOVED "));
            if !moved {
                tokio::time::sleep(backoff.min(opts.deadline.saturating_sub(started.elapsed()))).await;
                backoff = (backoff * 2).min(opts.backoff_max);
            }
            // Best effort: a failed refresh leaves the old map for the retry.
            let _ = self.refresh_since(seen).await;
        }
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
    let mut primaries = vec![None; usize::from(SLOT_COUNT)];
    let mut replicas = vec![Vec::new(); usize::from(SLOT_COUNT)];
    let mut nodes = Vec::new();
    for r in ranges {
        let Frame::Array(parts) = r else { continue };
        let (Some(Frame::Integer(a)), Some(Frame::Integer(b)), Some(addr)) =
            (parts.first(), parts.get(1), parts.get(2).and_then(node_addr))
        else {
            continue;
        };
        let others: Vec<SocketAddr> = parts[3..].iter().filter_map(node_addr).collect();
        for s in (*a).max(0)..=(*b).min(i64::from(SLOT_COUNT) - 1) {
            primaries[s as usize] = Some(addr);
            replicas[s as usize] = others.clone();
        }
        for n in std::iter::once(addr).chain(others) {
            if !nodes.contains(&n) {
                nodes.push(n);
            }
        }
    }
    if nodes.is_empty() {
        nodes.push(via);
    }
    Routing { version, primaries, replicas, nodes }
}
