//! The composition root: builds a node's shared state, binds its sockets,
//! starts its tasks, and runs the graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::lifecycle::{Event, Phase};
use crate::cluster::membership::{NodeIdentity, PacketKey};
use crate::cluster::topology::{NodeInfo, Topology};
use crate::config::Config;
use crate::net::gossip::Gossip;
use crate::net::{self, unix_ms};
use crate::shared::Shared;

/// The housekeeping tick: a clustered node notes that it runs
/// (`Shared::notice_pause`), and active expiry runs when the store has
/// chores.
const TICK_PERIOD: Duration = Duration::from_millis(100);
/// Tombstone collection: every this many chores rounds (one per tick
/// while there are chores).
const GC_EVERY_ROUNDS: u64 = 10;
/// Active expiry: how many buckets one pass visits, and how long one round
/// may go on while more than a quarter of the keys seen had expired.
const EXPIRE_BUDGET_BUCKETS: usize = 8192;
const EXPIRE_ROUND_MAX: Duration = Duration::from_millis(25);
/// How long a leaving node keeps serving after announcing its leave.
const LEAVE_GRACE: Duration = Duration::from_millis(1000);
/// How long a leaving node waits for the members to take note of its leave.
const LEAVE_NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

fn listen_addr(bind: &str, port: u16) -> String {
    if bind.contains(':') && !bind.starts_with('[') { format!("[{bind}]:{port}") } else { format!("{bind}:{port}") }
}

/// Binds the cluster port: gossip on UDP and peer links on TCP, the same
/// number. For port 0 the UDP port is picked first and may be taken for
/// TCP by someone else: then another pair is tried.
async fn bind_cluster_port(bind: &str, port: u16) -> anyhow::Result<(tokio::net::UdpSocket, TcpListener)> {
    const ATTEMPTS: usize = 64;
    for attempt in 0.. {
        let addr = listen_addr(bind, port);
        let udp = tokio::net::UdpSocket::bind(&addr)
            .await
            .with_context(|| format!("cannot listen for gossip (UDP) on {addr}"))?;
        let chosen = udp.local_addr().context("gossip socket address")?.port();
        let tcp_addr = listen_addr(bind, chosen);
        match TcpListener::bind(&tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(_) if port == 0 && attempt + 1 < ATTEMPTS => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen for peer links (TCP) on {tcp_addr}"));
            }
        }
    }
    unreachable!("the loop returns")
}

/// A node whose sockets are bound. [`Node::run`] serves until shutdown.
pub struct Node {
    pub shared: Arc<Shared>,
    clients: TcpListener,
    admin: Option<TcpListener>,
    /// The TLS client port and its certificates.
    tls: Option<(TcpListener, Arc<crate::tls::Tls>)>,
    /// The cluster port's TCP side; None for a standalone node.
    peers: Option<TcpListener>,
    gossip: Option<Gossip>,
}

/// The address other hosts and clients reach this node at:
/// `--cluster-announce-ip`; else a specific bind address; else the local
/// address this host uses to reach its first reachable seed; else its
/// first non-loopback interface address; loopback only as the last resort
/// (logged: other hosts cannot reach it).
async fn announce_ip(config: &crate::config::Config, bound: IpAddr) -> IpAddr {
    if let Some(ip) = config.cluster_announce_ip {
        return ip;
    }
    if !bound.is_unspecified() {
        return bound;
    }
    for seed in &config.seeds {
        let Ok(found) = tokio::net::lookup_host(seed.as_str()).await else { continue };
        for addr in found {
            if let Some(ip) = crate::net::route_source(addr).await {
                info!(%ip, %seed, "advertising the address this host reaches its seed from (set --cluster-announce-ip to choose)");
                return ip;
            }
        }
    }
    if let Some(ip) = crate::net::first_interface_ip(bound.is_ipv6()) {
        info!(%ip, "advertising this host's first non-loopback address (set --cluster-announce-ip to choose)");
        return ip;
    }
    let ip = if bound.is_ipv6() { std::net::Ipv6Addr::LOCALHOST.into() } else { std::net::Ipv4Addr::LOCALHOST.into() };
    warn!(%ip, "no non-loopback address found: advertising loopback, other hosts cannot reach this node; set --cluster-announce-ip");
    ip
}

impl Node {
    pub async fn bind(config: Config) -> anyhow::Result<Node> {
        anyhow::ensure!(
            crate::store::heap_supports_tags(),
            "this heap tags pointers itself (memory tagging or a hardware-assisted sanitizer): \
             ringcache keeps its hash tags in the top byte of entry pointers and cannot run here"
        );
        let addr = listen_addr(&config.bind, config.port);
        let clients = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen for clients on {addr}"))?;
        let admin = match config.admin_port {
            Some(p) => {
                let a = listen_addr(&config.admin_bind, p);
                Some(TcpListener::bind(&a).await.with_context(|| format!("cannot listen for admin HTTP on {a}"))?)
            }
            None => None,
        };
        let tls = match crate::tls::TlsFiles::of(&config) {
            Some(files) => {
                let tls = crate::tls::Tls::load(files).map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
                let a = listen_addr(&config.bind, config.tls_port.unwrap_or(0));
                let l = TcpListener::bind(&a).await.with_context(|| format!("cannot listen for TLS clients on {a}"))?;
                Some((l, Arc::new(tls)))
            }
            None => None,
        };
        let mut config = config;
        let bound = clients.local_addr().context("client listener address")?;
        // The default name is host:port; with --port 0 the real port is
        // only known now.
        if config.node_name_default && config.port == 0 {
            config.node_name = format!("{}:{}", crate::config::host_name(), bound.port());
        }
        // What other hosts and clients are told (CLUSTER SLOTS, MOVED,
        // gossip): never 0.0.0.0, and loopback only when nothing else is.
        let ip = announce_ip(&config, bound.ip()).await;
        let client_addr = SocketAddr::new(ip, bound.port());
        // Grows across restarts, so a restarted node wins over its old self.
        let generation = unix_ms();
        let (gossip, peers) = match &config.cluster_secret {
            Some(secret) => {
                let (gossip_socket, peers) = bind_cluster_port(&config.bind, config.cluster_port).await?;
                config.cluster_port = gossip_socket.local_addr().context("gossip socket address")?.port();
                let me = NodeIdentity {
                    name: config.node_name.clone(),
                    generation,
                    gossip_addr: SocketAddr::new(ip, config.cluster_port),
                    client_addr,
                    weight: config.weight,
                };
                let gossip = Gossip {
                    socket: gossip_socket,
                    me,
                    seeds: config.seeds.clone(),
                    key: PacketKey::new(&config.cluster_name, Some(secret), config.cluster_settings()),
                    timing: config.gossip,
                    seed_addrs: Vec::new(),
                    founding: false,
                };
                (Some(gossip), Some(peers))
            }
            None => (None, None),
        };
        let myself = NodeInfo {
            generation,
            ..NodeInfo::new(&config.node_name, client_addr, config.cluster_port, config.weight)
        };
        let topology = Topology::single(myself, config.replicas as usize, config.vnodes);
        let cluster_tls = crate::tls::ClusterTls::load(&config).map_err(|e| anyhow::anyhow!("cluster TLS: {e}"))?;
        let shared = Arc::new(Shared::new(config, unix_ms(), topology));
        *shared.cluster_tls.write().unwrap_or_else(std::sync::PoisonError::into_inner) = cluster_tls;
        *shared.client_addr.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bound);
        Ok(Node { shared, clients, admin, tls, peers, gossip })
    }

    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.clients.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until SIGTERM, SIGINT or SHUTDOWN; then stops accepting, lets
    /// open connections finish the requests they sent (bounded by
    /// `shutdown-timeout`) and returns.
    pub async fn run(self) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        // Gossip stops first: the node leaves the cluster while it still
        // serves, so peers switch tables before its sockets close.
        let (leave_tx, leave_rx) = watch::channel(false);
        if let Some(addr) = self.client_addr() {
            let mode = if shared.config.clustered() { "cluster" } else { "standalone (no cluster secret)" };
            info!(%addr, node = %shared.config.node_name, mode, "listening for clients");
        }
        if let Some(addr) = self.admin_addr() {
            info!(%addr, "admin HTTP listening");
        }
        let mut gossip_task = None;
        if let Some(mut g) = self.gossip {
            // Decided before the first client is accepted.
            if g.resolve_seeds().await {
                // No one to ask. A restart looks the same as a first start,
                // so members that remember this node get a moment to find
                // it before it counts from nothing as the first node.
                let wait = shared.config.founding_wait;
                if wait.is_zero() {
                    if shared.lifecycle.on(Event::SeedsAreMe) == (Phase::AwaitingSeed, Phase::Joining) {
                        info!("no seed but this node: serving as the first node of its cluster");
                    }
                } else {
                    g.founding = true;
                    info!(
                        wait_ms = wait.as_millis() as u64,
                        "no seed but this node: waiting for members that may remember it (a restart) before serving \
                         as the first node of its cluster (--founding-wait-ms)"
                    );
                }
            }
            info!(addr = %g.me.gossip_addr, cluster = %shared.config.cluster_name, seeds = ?g.seeds, "gossip listening");
            gossip_task = Some(tokio::spawn(net::gossip::run(shared.clone(), g, leave_rx)));
        }
        let mut tasks =
            vec![tokio::spawn(net::client::accept_loop(shared.clone(), self.clients, stop_rx.clone(), None))];
        let client_tls = self.tls.as_ref().map(|(_, tls)| tls.clone());
        if client_tls.is_some() || shared.config.tls_cluster {
            let config = Arc::new(shared.config.clone());
            let cluster = shared.cluster_tls.clone();
            tasks.push(tokio::spawn(crate::tls::watch_files(config, cluster, client_tls, stop_rx.clone())));
        }
        if let Some((listener, tls)) = self.tls {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, auth_clients = ?shared.config.tls_auth_clients, "listening for TLS clients");
            }
            tasks.push(tokio::spawn(net::client::accept_loop(shared.clone(), listener, stop_rx.clone(), Some(tls))));
        }
        if let Some(admin) = self.admin {
            tasks.push(tokio::spawn(net::admin::accept_loop(shared.clone(), admin, stop_rx.clone())));
        }
        if let Some(peers) = self.peers {
            tasks.push(tokio::spawn(net::peer::accept_loop(shared.clone(), peers, stop_rx.clone())));
            tasks.push(tokio::spawn(net::rebalance::run(shared.clone(), stop_rx.clone())));
            tasks.push(tokio::spawn(net::antientropy::run(shared.clone(), stop_rx.clone())));
        }
        let chores = Arc::new(tokio::sync::Notify::new());
        tasks.push(tokio::spawn(tick_loop(shared.clone(), chores.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(chores_loop(shared.clone(), chores, stop_rx.clone())));

        wait_for_stop(&shared).await;
        shared.lifecycle.on(Event::Shutdown);
        // Hand this node's slots over while still serving and a member.
        let drained = net::rebalance::drain(&shared, Instant::now() + shared.config.drain_timeout).await;
        hand_over(&shared).await;
        if !drained {
            // Its slots' next owners may lack writes only it had: they must
            // treat it as failed (`cluster::keepers`), not as gone with
            // nothing left behind.
            warn!("the drain did not copy every slot: leaving without announcing it, as a failed member");
        } else if let Some((seen, of)) = shared.minority() {
            // Its table is the old one; what it drained went by that table.
            warn!(seen, of, "on the minority side of a partition: leaving without announcing it, as a failed member");
        } else {
            announce_leave(&shared).await;
        }
        let _ = leave_tx.send(true);
        if shared.topology().nodes.len() > 1 {
            // Let the leave spread: requests routed here meanwhile are served.
            tokio::time::sleep(LEAVE_GRACE).await;
        }
        shared.lifecycle.on(Event::Drained);
        info!(clients = shared.clients.connected(), "shutting down: no new connections, finishing open ones");
        let _ = stop_tx.send(true);
        let deadline = Instant::now() + shared.config.shutdown_timeout;
        while shared.clients.connected() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if shared.clients.connected() > 0 {
            warn!(clients = shared.clients.connected(), "shutdown timeout: closing remaining connections");
            shared.clients.kill_all();
        }
        for t in tasks.into_iter().chain(gossip_task) {
            let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
        }
        info!("stopped");
        Ok(())
    }
}

async fn wait_for_stop(shared: &Shared) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        tokio::select! {
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => info!("SIGTERM received"),
            _ = async { match int.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => info!("SIGINT received"),
            _ = shared.shutdown.notified() => {}
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("interrupt received"),
            _ = shared.shutdown.notified() => {}
        }
    }
}

/// After the drain, before the others hear of the leave: this node stops
/// coordinating writes (its table gives it no slot, so its clients'
/// requests go to the owners the others will have without it), and waits
/// for the writes it is still coordinating to end. Otherwise, once the
/// others took its slots over, it and the new primary would both run
/// INCRs of one key, each from its own copy, and acknowledged increments
/// would be lost (two clients answered the same count).
async fn hand_over(shared: &Shared) {
    if !shared.hand_over() {
        return;
    }
    let deadline = Instant::now() + 2 * shared.config.replication_timeout;
    while shared.coordinating.load(std::sync::atomic::Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let left = shared.coordinating.load(std::sync::atomic::Ordering::Relaxed);
    info!(writes_still_coordinated = left, "handed this node's slots over: its requests now go to their next owners");
}

/// Tells every member that this node leaves gracefully (`RC.LEAVE`), so
/// that it leaves their majority count (`cluster::majority`): scaling in,
/// down to one node, leaves the others writing, where a failure of as many
/// members would leave them a minority. Waits for the answers (at most
/// `LEAVE_NOTICE_TIMEOUT`) so the notice lands before gossip's news.
async fn announce_leave(shared: &Shared) {
    if shared.topology().nodes.len() < 2 {
        return;
    }
    let req = crate::cluster::protocol::Request::Leave.to_bytes();
    let links = shared.links.all();
    let of = links.len();
    let mut waits = Vec::new();
    for link in links {
        // Never waits on a full queue (a stuck link must not hold the
        // shutdown): such a member is told nothing.
        if let Ok(rx) = link.try_call(req.clone(), 1, false) {
            waits.push((link.name.clone(), rx));
        }
    }
    let deadline = tokio::time::Instant::now() + LEAVE_NOTICE_TIMEOUT;
    let mut told = 0;
    for (member, rx) in waits {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(replies))) if replies.first().is_some_and(|r| r.starts_with(b"+OK")) => told += 1,
            _ => info!(%member, "a member did not acknowledge this node's leave: it may count it as failed"),
        }
    }
    info!(told, of, "announced this node's leave to the members");
}

/// A FLUSHALL a client ran here goes as `RC.FLUSH` (its flush epoch) to
/// the members the broadcast did not reach, like a replicated write: one
/// that is down or cut off gets it from the hint queue when it is back,
/// and drops the keys it held from before the flush instead of spreading
/// them again.
async fn share_flush(shared: &Shared) {
    let version = shared.store.take_flush_to_share();
    if version == 0 {
        return;
    }
    let op = crate::cluster::protocol::Request::Flush { version }.to_bytes();
    // The members of the table ran the broadcast's shares (each with its
    // own epoch: an epoch from this node's clock could remove writes they
    // took since if their clock is behind). The others — former members,
    // cut off long enough to leave the table — missed it.
    let t = shared.topology();
    for link in shared.links.all() {
        if t.nodes.iter().all(|n| *n.name != *link.name) {
            link.send(crate::peers::Msg::Repl { ops: vec![(crate::peers::ANY_SLOT, op.clone())], done: None }).await;
        }
    }
}

/// Evicted keys passed on per tick at most.
const EVICTIONS_BATCH: usize = 8192;

/// Tells the other owners of each key this node evicted to drop their
/// copies too (`RC.EVICT`, version-guarded, no tombstone): owners then hold
/// the same keys, and anti-entropy does not copy evicted keys back for
/// ever (issue 16 item 3). Sent like replicated writes (hinted while a
/// link is down).
async fn share_evictions(shared: &Shared) {
    let evicted = shared.store.take_evictions(EVICTIONS_BATCH);
    if evicted.is_empty() {
        return;
    }
    let t = shared.topology();
    if t.nodes.len() < 2 {
        return;
    }
    let me = t.myself().name.as_str();
    let mut per_owner: std::collections::HashMap<&str, Vec<(u16, bytes::Bytes)>> = Default::default();
    for (key, version) in &evicted {
        let slot = ringcache_protocol::key_slot(key);
        let op = crate::cluster::protocol::Request::Evict { key, version: *version }.to_bytes();
        for &i in t.table.owners(slot) {
            let name = t.table.members[usize::from(i)].name.as_str();
            if name != me {
                per_owner.entry(name).or_default().push((slot, op.clone()));
            }
        }
    }
    for (name, ops) in per_owner {
        if let Some(link) = shared.links.get(name) {
            let n = ops.len() as u64;
            link.send(crate::peers::Msg::Repl { ops, done: None }).await;
            shared.metrics.evictions_shared.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Ticks every `TICK_PERIOD` and does nothing else that could stretch a
/// tick: on a clustered node it beats, so that a gap between beats means
/// this process was not scheduled (`Shared::notice_pause`); and when the
/// store has chores (keys with an expiry, tombstones, evictions or a flush
/// to share) it wakes `chores_loop`. An idle store of plain keys costs one
/// wake-up per tick and no shard lock.
async fn tick_loop(shared: Arc<Shared>, chores: Arc<tokio::sync::Notify>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let clustered = shared.config.clustered();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if clustered {
            shared.heartbeat(unix_ms());
        }
        if shared.store.has_chores() {
            // One permit at most: a tick while the last round still runs
            // leaves one more round, not a queue of them.
            chores.notify_one();
        }
    }
}

/// Active expiry, tombstone collection and sharing evictions and flushes,
/// one round per wake-up from `tick_loop`.
async fn chores_loop(shared: Arc<Shared>, chores: Arc<tokio::sync::Notify>, mut stop: watch::Receiver<bool>) {
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = chores.notified() => {}
            _ = stop.changed() => return,
        }
        rounds += 1;
        if rounds.is_multiple_of(GC_EVERY_ROUNDS) {
            shared.store.gc_tombstones(unix_ms());
        }
        share_flush(&shared).await;
        share_evictions(&shared).await;
        let started = Instant::now();
        loop {
            let (seen, expired) = shared.store.active_expire(unix_ms(), EXPIRE_BUDGET_BUCKETS);
            if seen == 0 || expired * 4 <= seen || started.elapsed() > EXPIRE_ROUND_MAX {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}
