//! State shared by every connection of a node: configuration, run-time
//! settings, the store, the client registry and the counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ringcache_protocol::Limits;
use tokio::sync::Notify;

use crate::cluster::antientropy::AntiEntropyStats;
use crate::cluster::lifecycle::{Lifecycle, Phase};
use crate::cluster::topology::Topology;
use crate::cluster::transfer::RebalanceState;
use crate::command::COMMANDS;
use crate::config::Config;
use crate::peers::Links;
use crate::store::Store;

/// Settings that CONFIG SET may change while the node runs.
#[derive(Debug)]
pub struct Settings {
    pub timeout_secs: AtomicU64,
    pub maxclients: AtomicU32,
    pub proto_max_bulk_len: AtomicU64,
    pub client_query_buffer_limit: AtomicU64,
    pub max_multibulk_len: AtomicU32,
    pub requirepass: RwLock<Option<Arc<str>>>,
    /// Refuse non-loopback clients while no password is set.
    pub protected_mode: AtomicBool,
}

impl Settings {
    fn new(c: &Config) -> Self {
        Settings {
            timeout_secs: AtomicU64::new(c.timeout.as_secs()),
            maxclients: AtomicU32::new(c.maxclients),
            proto_max_bulk_len: AtomicU64::new(c.proto_max_bulk_len),
            client_query_buffer_limit: AtomicU64::new(c.client_query_buffer_limit),
            max_multibulk_len: AtomicU32::new(c.max_multibulk_len),
            requirepass: RwLock::new(c.requirepass.as_deref().map(Arc::from)),
            protected_mode: AtomicBool::new(c.protected_mode),
        }
    }

    pub fn requirepass(&self) -> Option<Arc<str>> {
        self.requirepass.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn limits(&self) -> Limits {
        Limits {
            bulk_len_max: usize::try_from(self.proto_max_bulk_len.load(Relaxed)).unwrap_or(usize::MAX),
            multibulk_len_max: self.max_multibulk_len.load(Relaxed) as usize,
            ..Limits::default()
        }
    }

    pub fn timeout(&self) -> Option<Duration> {
        match self.timeout_secs.load(Relaxed) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        }
    }
}

/// Calls and errors of one command.
#[derive(Debug, Default)]
pub struct CommandCounters {
    pub calls: AtomicU64,
    pub failed: AtomicU64,
    pub rejected: AtomicU64,
}

/// Node-wide counters (INFO stats, /metrics).
#[derive(Debug)]
pub struct Metrics {
    pub commands: Box<[CommandCounters]>,
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
    pub connections_received: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub unknown_commands: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    /// Gossip packets dropped: another cluster, a wrong secret, garbage.
    pub gossip_rejected: AtomicU64,
    /// Authentic gossip packets from members with other cluster settings.
    pub gossip_settings_mismatch: AtomicU64,
    /// Gossip packets foca could not use (decode errors and the like).
    pub gossip_errors: AtomicU64,
    /// Membership changes that produced a new topology.
    pub topology_changes: AtomicU64,
    /// Requests sent to another member to run (forwarded or split).
    pub forwarded: AtomicU64,
    /// Forwarded requests received after their sender's deadline, not run.
    pub forwards_expired: AtomicU64,
    /// Forwarded requests held (not sent) while their key's primary was
    /// unreachable, until the table moved or the link came back.
    pub forwards_held: AtomicU64,
    /// Times this node found it had not been scheduled for longer than
    /// its pause limit (SIGSTOP, a frozen VM) and unsettled every slot.
    pub pauses_noticed: AtomicU64,
    /// Writes refused (too few owners reachable) or not acknowledged by
    /// their write quorum in time.
    pub quorum_failures: AtomicU64,
    /// Requests refused on the minority side of a partition.
    pub minority_refusals: AtomicU64,
    /// Times this node emptied its copy after an absence longer than the
    /// tombstone grace (`cluster::absence`).
    pub absence_wipes: AtomicU64,
    /// Requests refused while returning from such an absence.
    pub returning_refusals: AtomicU64,
    /// `RC.EVICT`s sent: keys this node evicted, per other owner.
    pub evictions_shared: AtomicU64,
    /// Peer connections refused: failed handshake, strangers.
    pub peer_rejected: AtomicU64,
    /// Requests from authenticated peers that could not be decoded.
    pub peer_malformed: AtomicU64,
    /// Stale owners sent the newest state after a quorum read.
    pub read_repairs: AtomicU64,
    /// Gossip packets refused for an invalid member record (weight, name, address).
    pub gossip_members_refused: AtomicU64,
    /// Times two live members were seen using one node name.
    pub gossip_name_conflicts: AtomicU64,
    /// Suspicions a member refuted in time, whose down timer was dropped
    /// (see `net::gossip::suspicion_refuted`).
    pub gossip_refuted_suspicions: AtomicU64,
    /// Replicated states refused: their version was too far ahead of this node's clock.
    pub versions_refused: AtomicU64,
    /// Client connections refused by protected mode (no password, not loopback).
    pub clients_denied: AtomicU64,
    /// Admin HTTP requests refused for a missing or wrong bearer token.
    pub admin_unauthorized: AtomicU64,
    /// TLS client connections whose handshake failed or timed out
    /// (plain text on the TLS port, an untrusted client certificate).
    pub tls_handshake_failures: AtomicU64,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            commands: (0..COMMANDS.len()).map(|_| CommandCounters::default()).collect(),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            connections_received: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            unknown_commands: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            gossip_rejected: AtomicU64::new(0),
            gossip_settings_mismatch: AtomicU64::new(0),
            gossip_errors: AtomicU64::new(0),
            topology_changes: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            forwards_expired: AtomicU64::new(0),
            forwards_held: AtomicU64::new(0),
            pauses_noticed: AtomicU64::new(0),
            quorum_failures: AtomicU64::new(0),
            minority_refusals: AtomicU64::new(0),
            absence_wipes: AtomicU64::new(0),
            returning_refusals: AtomicU64::new(0),
            evictions_shared: AtomicU64::new(0),
            peer_rejected: AtomicU64::new(0),
            peer_malformed: AtomicU64::new(0),
            read_repairs: AtomicU64::new(0),
            gossip_members_refused: AtomicU64::new(0),
            gossip_name_conflicts: AtomicU64::new(0),
            gossip_refuted_suspicions: AtomicU64::new(0),
            versions_refused: AtomicU64::new(0),
            clients_denied: AtomicU64::new(0),
            admin_unauthorized: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
        }
    }

    pub fn reset(&self) {
        for c in self.commands.iter() {
            c.calls.store(0, Relaxed);
            c.failed.store(0, Relaxed);
            c.rejected.store(0, Relaxed);
        }
        for a in [
            &self.keyspace_hits,
            &self.keyspace_misses,
            &self.connections_received,
            &self.connections_rejected,
            &self.protocol_errors,
            &self.unknown_commands,
            &self.net_input_bytes,
            &self.net_output_bytes,
        ] {
            a.store(0, Relaxed);
        }
    }

    pub fn total_commands(&self) -> u64 {
        self.commands.iter().map(|c| c.calls.load(Relaxed)).sum()
    }
}

/// Per-connection counters, added to [`Metrics`] once per batch of
/// commands so that pipelined commands do not each touch shared cache lines.
#[derive(Debug)]
pub struct LocalStats {
    calls: Vec<u32>,
    failed: Vec<u32>,
    rejected: Vec<u32>,
    touched: Vec<u16>,
    pub hits: u64,
    pub misses: u64,
    pub unknown: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

impl Default for LocalStats {
    fn default() -> Self {
        LocalStats {
            calls: vec![0; COMMANDS.len()],
            failed: vec![0; COMMANDS.len()],
            rejected: vec![0; COMMANDS.len()],
            touched: Vec::new(),
            hits: 0,
            misses: 0,
            unknown: 0,
            input_bytes: 0,
            output_bytes: 0,
        }
    }
}

const FLUSH_BYTES: u64 = 64 * 1024;

/// How a command ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    Rejected,
}

impl LocalStats {
    #[inline]
    pub fn record(&mut self, cmd: usize, outcome: Outcome) {
        if self.calls[cmd] == 0 && self.rejected[cmd] == 0 {
            self.touched.push(cmd as u16);
        }
        match outcome {
            Outcome::Ok => self.calls[cmd] += 1,
            Outcome::Failed => {
                self.calls[cmd] += 1;
                self.failed[cmd] += 1;
            }
            Outcome::Rejected => self.rejected[cmd] += 1,
        }
    }

    pub fn flush(&mut self, m: &Metrics) {
        for &i in &self.touched {
            let i = usize::from(i);
            let c = &m.commands[i];
            c.calls.fetch_add(u64::from(self.calls[i]), Relaxed);
            if self.failed[i] > 0 {
                c.failed.fetch_add(u64::from(self.failed[i]), Relaxed);
            }
            if self.rejected[i] > 0 {
                c.rejected.fetch_add(u64::from(self.rejected[i]), Relaxed);
            }
            self.calls[i] = 0;
            self.failed[i] = 0;
            self.rejected[i] = 0;
        }
        self.touched.clear();
        if self.hits > 0 {
            m.keyspace_hits.fetch_add(std::mem::take(&mut self.hits), Relaxed);
        }
        if self.misses > 0 {
            m.keyspace_misses.fetch_add(std::mem::take(&mut self.misses), Relaxed);
        }
        if self.unknown > 0 {
            m.unknown_commands.fetch_add(std::mem::take(&mut self.unknown), Relaxed);
        }
        // Byte counters are flushed in bulk: at one command per batch a
        // shared atomic per read and write would bounce between cores.
        if self.input_bytes >= FLUSH_BYTES {
            m.net_input_bytes.fetch_add(std::mem::take(&mut self.input_bytes), Relaxed);
        }
        if self.output_bytes >= FLUSH_BYTES {
            m.net_output_bytes.fetch_add(std::mem::take(&mut self.output_bytes), Relaxed);
        }
    }

    /// Flushes everything, byte counters included (connection close).
    pub fn flush_all(&mut self, m: &Metrics) {
        self.flush(m);
        m.net_input_bytes.fetch_add(std::mem::take(&mut self.input_bytes), Relaxed);
        m.net_output_bytes.fetch_add(std::mem::take(&mut self.output_bytes), Relaxed);
    }
}

/// What CLIENT LIST shows of a connection; owned by the registry and the
/// connection together.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created_ms: u64,
    pub last_ms: AtomicU64,
    /// Index into `COMMANDS` of the last command, `u16::MAX` if none.
    pub last_cmd: AtomicU16,
    pub resp: AtomicU8,
    pub name: Mutex<Vec<u8>>,
    pub lib_name: Mutex<Vec<u8>>,
    pub lib_ver: Mutex<Vec<u8>>,
    pub killed: AtomicBool,
    /// Wakes the connection's task when it is killed.
    pub kill: Notify,
}

impl ClientInfo {
    /// A connection's record; [`Clients::register`] lists it, peer
    /// connections keep theirs to themselves.
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr, now_ms: u64) -> Self {
        ClientInfo {
            id,
            addr,
            laddr,
            created_ms: now_ms,
            last_ms: AtomicU64::new(now_ms),
            last_cmd: AtomicU16::new(u16::MAX),
            resp: AtomicU8::new(2),
            name: Mutex::new(Vec::new()),
            lib_name: Mutex::new(Vec::new()),
            lib_ver: Mutex::new(Vec::new()),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        }
    }

    pub fn name(&self) -> Vec<u8> {
        self.name.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn kill(&self) {
        self.killed.store(true, Relaxed);
        self.kill.notify_one();
    }

    /// The CLIENT LIST / CLIENT INFO line (without the trailing newline).
    pub fn line(&self, now_ms: u64) -> String {
        let lock =
            |m: &Mutex<Vec<u8>>| String::from_utf8_lossy(&m.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        let cmd = COMMANDS.get(usize::from(self.last_cmd.load(Relaxed))).map_or("NULL", |c| c.name);
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 \
             qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
             cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            lock(&self.name),
            now_ms.saturating_sub(self.created_ms) / 1000,
            now_ms.saturating_sub(self.last_ms.load(Relaxed)) / 1000,
            cmd,
            self.resp.load(Relaxed),
            lock(&self.lib_name),
            lock(&self.lib_ver),
        )
    }
}

/// Every connected client.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    connected: AtomicUsize,
}

impl Clients {
    /// Registers a connection unless `maxclients` are connected already.
    pub fn register(&self, addr: SocketAddr, laddr: SocketAddr, now_ms: u64, max: usize) -> Option<Arc<ClientInfo>> {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let info = Arc::new(ClientInfo::new(id, addr, laddr, now_ms));
        map.insert(id, info.clone());
        self.connected.store(map.len(), Relaxed);
        Some(info)
    }

    pub fn unregister(&self, id: u64) {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&id);
        self.connected.store(map.len(), Relaxed);
    }

    pub fn connected(&self) -> usize {
        self.connected.load(Relaxed)
    }

    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    pub fn kill_all(&self) {
        for c in self.all() {
            c.kill();
        }
    }
}

/// Everything a connection can reach.
#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub settings: Settings,
    pub store: Store,
    pub clients: Clients,
    pub metrics: Metrics,
    pub started_ms: u64,
    pub run_id: String,
    /// Signalled by SHUTDOWN; the node's main task waits on it.
    pub shutdown: Notify,
    /// Signalled at every table change (the rebalance task waits on it).
    pub topology_changed: Notify,
    /// The address actually bound for clients (differs from the config
    /// when it asked for port 0).
    pub client_addr: Mutex<Option<SocketAddr>>,
    /// Links to the other members (peer TCP), by name.
    pub links: Links,
    /// Slot transfers: what is imported, progress counters.
    pub rebalance: RebalanceState,
    /// Anti-entropy progress counters.
    pub antientropy: AntiEntropyStats,
    /// Wakes anti-entropy early: slots were marked unsettled or the table
    /// changed.
    pub antientropy_wake: Notify,
    /// This node's phase in its cluster (see `cluster::lifecycle`).
    pub lifecycle: Lifecycle,
    /// While this node is on the minority side of a partition
    /// (`cluster::majority`): members of its table it sees (high 32 bits)
    /// and how many the table has; 0 otherwise.
    minority: AtomicU64,
    /// Members that announced a graceful leave (`RC.LEAVE`), for the
    /// gossip driver to take out of its majority count; at most
    /// `majority::DEPARTED_MAX`.
    leaves: Mutex<Vec<String>>,
    /// Unix ms of the last heartbeat (`node::tick_loop`, every 100 ms)
    /// or request that checked it; see [`Shared::notice_pause`].
    heartbeat_ms: AtomicU64,
    /// Half the failure-detection time (probe timeout + suspicion), ms:
    /// a longer gap between beats is a pause ([`Shared::notice_pause`]).
    pause_limit_ms: u64,
    /// Wakes the gossip driver when a leave is announced: the members
    /// take the leaver's slots over at once, not at the next tick.
    pub leave_notice: Notify,
    /// `cluster::absence` as the other tasks see it: unix ms of the gossip
    /// driver's last tick (0: none yet), the absence it tolerates (ms), and
    /// whether it counts this node as returning from a long absence.
    presence_ms: AtomicU64,
    absence_limit_ms: AtomicU64,
    returning: std::sync::atomic::AtomicBool,
    /// Mutual TLS for peer links (`--tls-cluster yes`), replaced whole when
    /// its files change (`tls::watch_files`).
    pub cluster_tls: Arc<RwLock<Option<crate::tls::ClusterTls>>>,
    /// When `version_ok` last logged a refusal (unix ms).
    last_skew_log_ms: AtomicU64,
    /// The current slot table and members, replaced whole on every change.
    topology: RwLock<Arc<Topology>>,
    /// Bumped on every `set_topology`; connections cache the topology and
    /// reload it only when this moves (one relaxed load per command). On a
    /// cache line of its own so writes to neighbours never evict it.
    topology_version: Padded<AtomicU64>,
    /// When the table last changed (unix ms): a slot whose keepers look
    /// short right after is more likely a table still converging than a
    /// failure (`cluster::keepers`).
    table_changed_ms: AtomicU64,
    /// Set once this node has handed its slots over (a graceful leave):
    /// every table it publishes from then on gives it no slot
    /// (`Topology::handed_over`). Read and written under `topology`'s lock.
    handed_over: AtomicBool,
    /// Client writes this node coordinates whose replication has not
    /// ended (see [`Coordinating`]): a leaving node waits for them before
    /// the others take its slots over.
    pub coordinating: Arc<AtomicUsize>,
}

/// One batch of writes this node coordinates, counted in
/// [`Shared::coordinating`] from its first replicated key until dropped.
#[derive(Debug)]
pub struct Coordinating(Arc<AtomicUsize>);

impl Coordinating {
    pub fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Relaxed);
        Coordinating(count.clone())
    }
}

impl Drop for Coordinating {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[repr(align(64))]
#[derive(Debug)]
struct Padded<T>(T);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("used_memory", &self.used_memory()).finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(config: Config, now_ms: u64, topology: Topology) -> Self {
        let store = Store::new();
        store.set_node_id(xxhash_rust::xxh3::xxh3_64(config.node_name.as_bytes()));
        store.set_tombstone_grace_ms(config.tombstone_grace.as_millis() as u64);
        // Tombstones matter once there are peers; a node started without
        // seeds turns them on when others first join it.
        store.set_keep_tombstones(!config.seeds.is_empty());
        store.set_maxmemory(config.maxmemory);
        store.set_policy(config.maxmemory_policy);
        store.set_samples(config.maxmemory_samples);
        let run_id = {
            // 40 hex characters like Redis's run_id; unique per process start.
            let seed = now_ms ^ (u64::from(std::process::id()) << 32);
            let a = xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes());
            let b = xxhash_rust::xxh3::xxh3_64(&a.to_le_bytes());
            let c = xxhash_rust::xxh3::xxh3_64(&b.to_le_bytes());
            format!("{a:016x}{b:016x}{:08x}", c as u32)
        };
        // Every clustered node waits to meet its cluster before serving
        // keys: for seeds to answer, or — with no seed but itself — for
        // members that remember it (`--founding-wait-ms`, see net::gossip).
        let seeded = config.clustered();
        let keepers_enforced = config.partition_mode != crate::cluster::majority::PartitionMode::Available;
        let pause_limit_ms = (((config.gossip.probe_rtt + config.gossip.suspect) / 2).as_millis() as u64).max(1);
        Shared {
            settings: Settings::new(&config),
            config,
            store,
            clients: Clients::default(),
            metrics: Metrics::new(),
            started_ms: now_ms,
            run_id,
            shutdown: Notify::new(),
            topology_changed: Notify::new(),
            client_addr: Mutex::new(None),
            links: Links::default(),
            rebalance: {
                let r = RebalanceState::default();
                r.keepers_enforced.store(keepers_enforced, Relaxed);
                r
            },
            antientropy: AntiEntropyStats::default(),
            antientropy_wake: Notify::new(),
            lifecycle: Lifecycle::new(seeded),
            minority: AtomicU64::new(0),
            leaves: Mutex::new(Vec::new()),
            leave_notice: Notify::new(),
            heartbeat_ms: AtomicU64::new(0),
            pause_limit_ms,
            presence_ms: AtomicU64::new(0),
            absence_limit_ms: AtomicU64::new(u64::MAX),
            returning: std::sync::atomic::AtomicBool::new(false),
            cluster_tls: Arc::default(),
            last_skew_log_ms: AtomicU64::new(0),
            topology: RwLock::new(Arc::new(topology)),
            topology_version: Padded(AtomicU64::new(1)),
            table_changed_ms: AtomicU64::new(now_ms),
            handed_over: AtomicBool::new(false),
            coordinating: Arc::default(),
        }
    }

    /// The peer-link TLS in force (`--tls-cluster`), if any.
    pub fn cluster_tls(&self) -> Option<crate::tls::ClusterTls> {
        self.cluster_tls.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Whether a replicated `version` may be applied: refused (counted,
    /// logged at most every 10 s) when it is stamped more than
    /// `max-clock-skew` ahead of this node's clock.
    pub fn version_ok(&self, version: u64, now_ms: u64) -> bool {
        let stamped = crate::store::version_parts(version).0;
        let skew = self.config.max_clock_skew.as_millis() as u64;
        if stamped <= now_ms.saturating_add(skew) {
            return true;
        }
        let n = self.metrics.versions_refused.fetch_add(1, Relaxed) + 1;
        let last = self.last_skew_log_ms.load(Relaxed);
        if now_ms >= last + 10_000 && self.last_skew_log_ms.compare_exchange(last, now_ms, Relaxed, Relaxed).is_ok() {
            tracing::warn!(
                ahead_ms = stamped - now_ms,
                max_ms = skew,
                refused = n,
                "refused a replicated write stamped too far in the future: check the clocks of the cluster's hosts (NTP)"
            );
        }
        false
    }

    /// Where this node stands in joining its cluster: `standalone` (no
    /// secret), `awaiting-seed`, `alone` (gave up waiting), `joined`
    /// (met a member, or the first node of its cluster), or `leaving`
    /// (draining or stopped).
    pub fn join_state(&self) -> &'static str {
        if !self.config.clustered() {
            "standalone"
        } else {
            match self.lifecycle.phase() {
                Phase::AwaitingSeed => "awaiting-seed",
                Phase::Alone => "alone",
                Phase::Joining | Phase::Serving => "joined",
                Phase::Draining | Phase::Left => "leaving",
            }
        }
    }

    /// Whether this node is in a minority (it refuses writes): members of
    /// its table it sees, of how many.
    pub fn minority(&self) -> Option<(u32, u32)> {
        let m = self.minority.load(Relaxed);
        (m != 0).then_some(((m >> 32) as u32, m as u32))
    }

    /// Records the gossip driver's decision (`None`: it adopted what it sees).
    pub fn set_minority(&self, m: Option<(usize, usize)>) {
        let packed = m.map_or(0, |(seen, of)| ((seen as u64) << 32) | (of as u64).max(1));
        self.minority.store(packed, Relaxed);
    }

    /// Member `name` announced that it leaves gracefully (`RC.LEAVE`).
    pub fn member_leaves(&self, name: &str) {
        let mut l = self.leaves.lock().expect("leaves lock");
        if l.len() < crate::cluster::majority::DEPARTED_MAX && !l.iter().any(|n| n == name) {
            l.push(name.to_string());
        }
        drop(l);
        self.leave_notice.notify_one();
    }

    /// Called by the heartbeat and before a request runs in a cluster: if
    /// this node has not been scheduled for longer than half the time the
    /// others need to declare it down (probe timeout + suspicion) — it
    /// was stopped (SIGSTOP, a frozen VM) — they may have declared it
    /// down and written its slots meanwhile. Its copy may then be stale
    /// while it still takes itself for their primary: a request it read
    /// on waking (queued in its socket) would count from that copy, and
    /// its newer version would overwrite the writes made meanwhile. So
    /// every slot becomes unsettled first: writes fetch their key from
    /// the co-owners before they run. Returns whether it did.
    pub fn notice_pause(&self, now_ms: u64) -> bool {
        let last = self.heartbeat_ms.load(Relaxed);
        if now_ms <= last.saturating_add(self.pause_limit_ms) {
            return false;
        }
        if self.heartbeat_ms.compare_exchange(last, now_ms, Relaxed, Relaxed).is_err() || last == 0 {
            return false; // another caller noticed it (or the first beat)
        }
        self.unsettle(0..ringcache_protocol::SLOT_COUNT);
        self.metrics.pauses_noticed.fetch_add(1, Relaxed);
        tracing::warn!(
            not_scheduled_ms = now_ms - last,
            "this node was not scheduled for longer than its pause limit (stopped?): others may have taken its \
             slots meanwhile, so every slot's writes fetch from the co-owners first until compared"
        );
        true
    }

    /// The heartbeat (`node::tick_loop`): notices a pause, then beats.
    pub fn heartbeat(&self, now_ms: u64) {
        self.notice_pause(now_ms);
        self.heartbeat_ms.fetch_max(now_ms, Relaxed);
    }

    /// The graceful leaves announced since the last call.
    pub fn take_leaves(&self) -> Vec<String> {
        std::mem::take(&mut *self.leaves.lock().expect("leaves lock"))
    }

    /// Whether this node must not spread its data nor accept writes: it is
    /// returning from an absence longer than the tombstone grace, or its
    /// gossip driver has not run for that long (a pause it has not noticed
    /// yet). Anti-entropy, slot copies, peer reads and client writes wait.
    pub fn returning(&self, now_ms: u64) -> bool {
        if self.returning.load(Relaxed) {
            return true;
        }
        let last = self.presence_ms.load(Relaxed);
        last != 0 && now_ms.saturating_sub(last) > self.absence_limit_ms.load(Relaxed)
    }

    /// The gossip driver's tick: `now_ms`, the absence tolerated, and
    /// whether this node is returning (`cluster::absence`).
    pub fn set_presence(&self, now_ms: u64, limit_ms: u64, returning: bool) {
        self.absence_limit_ms.store(limit_ms, Relaxed);
        self.returning.store(returning, Relaxed);
        self.presence_ms.store(now_ms, Relaxed);
    }

    pub fn topology_version(&self) -> u64 {
        self.topology_version.0.load(Relaxed)
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn set_topology(&self, t: Topology) {
        {
            let mut cur = self.topology.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let t = if self.handed_over.load(Relaxed) { self.without_me(&t) } else { t };
            *cur = Arc::new(t);
        }
        self.topology_version.0.fetch_add(1, Relaxed);
        self.table_changed_ms.store(crate::process::unix_ms(), Relaxed);
        self.topology_changed.notify_one();
        self.antientropy_wake.notify_one();
    }

    /// Until when (unix ms) a slot whose keepers look short is taken for a
    /// table still converging after its last change (members learn of
    /// each other at different moments): twice the failure-detection time.
    pub fn converging_until_ms(&self) -> u64 {
        let g = &self.config.gossip;
        let detection = (g.probe_period + g.probe_rtt + g.suspect).as_millis() as u64;
        crate::cluster::coordinate::converging_until_ms(self.table_changed_ms.load(Relaxed), detection)
    }

    fn without_me(&self, t: &Topology) -> Topology {
        t.handed_over(self.config.replicas as usize, self.config.vnodes)
    }

    /// A leaving node's handover (after its drain): from now on its tables
    /// give it no slot, so it forwards every keyed request to the owners
    /// the others will have once it is gone, and coordinates none itself.
    /// Returns whether the table changed (false if done already or alone).
    pub fn hand_over(&self) -> bool {
        {
            let mut cur = self.topology.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if cur.nodes.len() < 2 || self.handed_over.swap(true, Relaxed) {
                return false;
            }
            *cur = Arc::new(self.without_me(&cur));
        }
        self.topology_version.0.fetch_add(1, Relaxed);
        self.topology_changed.notify_one();
        true
    }

    /// Marks `slots` unsettled and wakes anti-entropy to compare them.
    pub fn unsettle(&self, slots: impl IntoIterator<Item = u16>) {
        self.rebalance.unsettle(slots);
        self.antientropy_wake.notify_one();
    }

    pub fn request_shutdown(&self) {
        self.shutdown.notify_one();
    }
}
