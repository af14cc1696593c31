//! Configuration: command-line flags, `RINGCACHE_*` environment variables
//! and a TOML file (`--config`).
//!
//! Precedence, highest first: flag, environment variable, config file,
//! built-in default. A key in the file uses the flag's name (`maxmemory =
//! "100mb"`, `maxmemory-policy = "allkeys-lru"`); unknown keys are errors,
//! so a typo never silently falls back to a default.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::cluster::majority::PartitionMode;
use crate::store::Policy;

/// The largest weight a node may have (also the bound on remote members).
pub const WEIGHT_MAX: u32 = 64;
/// The longest node name (also the bound on remote members).
pub const NAME_MAX: usize = 255;

/// Command-line flags. Every flag is optional here so that the file and the
/// defaults can fill what is absent; see [`Config`] for the resolved values.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "ringcache", version, about = "ringcache: a distributed in-memory cache that speaks RESP")]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, env = "RINGCACHE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for clients.
    #[arg(long, env = "RINGCACHE_BIND")]
    pub bind: Option<String>,
    /// Client port (0 picks a free port and logs it).
    #[arg(long, env = "RINGCACHE_PORT")]
    pub port: Option<u16>,
    /// Cluster port (gossip UDP and peer TCP); default port + 10000.
    #[arg(long, env = "RINGCACHE_CLUSTER_PORT")]
    pub cluster_port: Option<u16>,
    /// This node's name in the cluster; default host name:port (unique per
    /// host, stable across restarts with new addresses).
    #[arg(long, env = "RINGCACHE_NODE_NAME")]
    pub node_name: Option<String>,
    /// The address this node gives other nodes and clients (CLUSTER SLOTS,
    /// MOVED, gossip); default: the bind address, or when that is
    /// unspecified (0.0.0.0, ::) the local address used to reach the seeds.
    #[arg(long, env = "RINGCACHE_CLUSTER_ANNOUNCE_IP")]
    pub cluster_announce_ip: Option<IpAddr>,
    /// Seed node HOST:PORT (repeatable; comma-separated in the environment).
    #[arg(long = "seed", env = "RINGCACHE_SEED", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Milliseconds a node started with seeds waits for one to answer
    /// before it serves keys alone (0 = wait for ever; the default with
    /// `--partition-mode majority`, 30000 with `available`).
    #[arg(long, env = "RINGCACHE_JOIN_TIMEOUT_MS")]
    pub join_timeout_ms: Option<u64>,
    /// Milliseconds a clustered node with no seed but itself waits for
    /// members that remember it (a restart) before it serves as the first
    /// node of its cluster (0 = serve at once).
    #[arg(long, env = "RINGCACHE_FOUNDING_WAIT_MS")]
    pub founding_wait_ms: Option<u64>,
    /// Copies of each key (N).
    #[arg(long, env = "RINGCACHE_REPLICAS")]
    pub replicas: Option<u32>,
    /// Owners that must hold a write before it is acknowledged (W).
    #[arg(long, env = "RINGCACHE_WRITE_QUORUM")]
    pub write_quorum: Option<u32>,
    /// Owners asked on a read (R).
    #[arg(long, env = "RINGCACHE_READ_QUORUM")]
    pub read_quorum: Option<u32>,
    /// Virtual nodes per weight unit.
    #[arg(long, env = "RINGCACHE_VNODES")]
    pub vnodes: Option<u32>,
    /// This node's weight on the ring.
    #[arg(long, env = "RINGCACHE_WEIGHT")]
    pub weight: Option<u32>,
    /// Memory limit for data (0 = none; accepts 100mb, 2gb, ...).
    #[arg(long, env = "RINGCACHE_MAXMEMORY")]
    pub maxmemory: Option<String>,
    /// What to do at maxmemory (Redis policy names).
    #[arg(long, env = "RINGCACHE_MAXMEMORY_POLICY")]
    pub maxmemory_policy: Option<String>,
    /// Keys sampled per eviction.
    #[arg(long, env = "RINGCACHE_MAXMEMORY_SAMPLES")]
    pub maxmemory_samples: Option<u32>,
    /// Password clients must give with AUTH or HELLO.
    #[arg(long, env = "RINGCACHE_REQUIREPASS")]
    pub requirepass: Option<String>,
    /// Shared secret authenticating cluster traffic. Without one (here or
    /// in --cluster-secret-file) the node is a standalone cache: no
    /// cluster port, no seeds.
    #[arg(long, env = "RINGCACHE_CLUSTER_SECRET")]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (one line; e.g. a mounted Secret).
    #[arg(long, env = "RINGCACHE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// yes (default): without a password, refuse clients that are not on
    /// loopback with -DENIED, as Redis; no: serve every address.
    #[arg(long, env = "RINGCACHE_PROTECTED_MODE")]
    pub protected_mode: Option<String>,
    /// Name of the cluster; nodes of other clusters are never admitted.
    #[arg(long, env = "RINGCACHE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// SWIM probe period in ms (each node probes one member per period).
    #[arg(long, env = "RINGCACHE_GOSSIP_PROBE_PERIOD_MS")]
    pub gossip_probe_period_ms: Option<u64>,
    /// How long a probe waits for an answer before asking others, in ms.
    #[arg(long, env = "RINGCACHE_GOSSIP_PROBE_RTT_MS")]
    pub gossip_probe_rtt_ms: Option<u64>,
    /// How long a member stays suspect before it is declared down, in ms.
    #[arg(long, env = "RINGCACHE_GOSSIP_SUSPECT_MS")]
    pub gossip_suspect_ms: Option<u64>,
    /// Period of gossip to a few random members, in ms.
    #[arg(long, env = "RINGCACHE_GOSSIP_INTERVAL_MS")]
    pub gossip_interval_ms: Option<u64>,
    /// HTTP port for /metrics, /health, /ready, /cluster (off if absent).
    #[arg(long, env = "RINGCACHE_ADMIN_PORT")]
    pub admin_port: Option<u16>,
    /// Address the admin HTTP port listens on (default 127.0.0.1).
    #[arg(long, env = "RINGCACHE_ADMIN_BIND")]
    pub admin_bind: Option<String>,
    /// Bearer token the admin HTTP port requires (`Authorization: Bearer
    /// TOKEN`); without it /health and /ready give their status only.
    #[arg(long, env = "RINGCACHE_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// TLS port for clients (off if absent); needs --tls-cert-file and
    /// --tls-key-file.
    #[arg(long, env = "RINGCACHE_TLS_PORT")]
    pub tls_port: Option<u16>,
    /// The server's certificate chain (PEM).
    #[arg(long, env = "RINGCACHE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "RINGCACHE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates that client certificates must chain to (PEM).
    #[arg(long, env = "RINGCACHE_TLS_CA_CERT_FILE")]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// yes (default, as Redis): clients must present a certificate signed
    /// by the CA; optional: checked if presented; no: not asked for.
    #[arg(long, env = "RINGCACHE_TLS_AUTH_CLIENTS")]
    pub tls_auth_clients: Option<String>,
    /// yes: peer links between nodes use mutual TLS with the same
    /// certificate, key and CA files (each node's certificate must name
    /// its advertised address).
    #[arg(long, env = "RINGCACHE_TLS_CLUSTER")]
    pub tls_cluster: Option<String>,
    /// Resolve and validate the configuration, print it, and exit (0 if
    /// valid) without binding anything.
    #[arg(long)]
    pub check_config: bool,
    /// Log format: text or json.
    #[arg(long, env = "RINGCACHE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Most client connections at once.
    #[arg(long, env = "RINGCACHE_MAXCLIENTS")]
    pub maxclients: Option<u32>,
    /// Close client connections idle this many seconds (0 = never).
    #[arg(long, env = "RINGCACHE_TIMEOUT")]
    pub timeout: Option<u64>,
    /// Largest bulk string accepted (accepts 512mb, ...).
    #[arg(long, env = "RINGCACHE_PROTO_MAX_BULK_LEN")]
    pub proto_max_bulk_len: Option<String>,
    /// Largest unparsed input held per client (accepts 1gb, ...).
    #[arg(long, env = "RINGCACHE_CLIENT_QUERY_BUFFER_LIMIT")]
    pub client_query_buffer_limit: Option<String>,
    /// Most arguments in one request.
    #[arg(long, env = "RINGCACHE_MAX_MULTIBULK_LEN")]
    pub max_multibulk_len: Option<u32>,
    /// Worker threads (0 = one per core).
    #[arg(long, env = "RINGCACHE_THREADS")]
    pub threads: Option<u32>,
    /// Seconds to let connections finish on shutdown.
    #[arg(long, env = "RINGCACHE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
    /// Keys another node is primary for: `forward` them (default) or answer
    /// `moved` (-MOVED slot host:port, as Redis Cluster).
    #[arg(long, env = "RINGCACHE_CLUSTER_REDIRECT")]
    pub cluster_redirect: Option<String>,
    /// `majority` (default): only a side of a partition that sees most of
    /// the members it last agreed with changes its table and accepts
    /// writes; the other side answers writes -CLUSTERDOWN. `available`:
    /// both sides accept writes; the last writer wins on heal.
    #[arg(long, env = "RINGCACHE_PARTITION_MODE")]
    pub partition_mode: Option<String>,
    /// Reads on the minority side of a partition: `serve` them from the
    /// node's copy (default) or `refuse` them (-CLUSTERDOWN).
    #[arg(long, env = "RINGCACHE_MINORITY_READS")]
    pub minority_reads: Option<String>,
    /// Milliseconds a write waits for its quorum, and a forwarded request
    /// for the primary's answer (plus this again), before failing.
    #[arg(long, env = "RINGCACHE_REPLICATION_TIMEOUT_MS")]
    pub replication_timeout_ms: Option<u64>,
    /// Most replicated writes kept per unreachable owner (hints).
    #[arg(long, env = "RINGCACHE_HINTS_MAX_KEYS")]
    pub hints_max_keys: Option<u64>,
    /// Most bytes of hints kept per unreachable owner (accepts 64mb, ...).
    #[arg(long, env = "RINGCACHE_HINTS_MAX_BYTES")]
    pub hints_max_bytes: Option<String>,
    /// Replicated versions stamped more than this many ms ahead of this
    /// node's clock are refused (and counted): a peer with a runaway clock
    /// must not write values nothing can overwrite.
    #[arg(long, env = "RINGCACHE_MAX_CLOCK_SKEW_MS")]
    pub max_clock_skew_ms: Option<u64>,
    /// Seconds a deleted key's tombstone is kept.
    #[arg(long, env = "RINGCACHE_TOMBSTONE_GRACE")]
    pub tombstone_grace: Option<u64>,
    /// Keys per second this node sends when copying slots to new owners
    /// (0 = as fast as the links go).
    #[arg(long, env = "RINGCACHE_REBALANCE_RATE")]
    pub rebalance_rate: Option<u64>,
    /// Seconds a stopping node spends handing its slots to their next
    /// owners before it leaves the cluster.
    #[arg(long, env = "RINGCACHE_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
}

impl Config {
    /// The settings every member must share (checked on every gossip packet).
    pub fn cluster_settings(&self) -> crate::cluster::membership::ClusterSettings {
        crate::cluster::membership::ClusterSettings {
            replicas: self.replicas,
            vnodes: self.vnodes,
            write_quorum: self.write_quorum,
            read_quorum: self.read_quorum,
            tombstone_grace_s: u32::try_from(self.tombstone_grace.as_secs()).unwrap_or(u32::MAX),
            partition_available: self.partition_mode == PartitionMode::Available,
        }
    }
}

/// What a node does with a key whose slot another node is primary for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    Forward,
    Moved,
}

/// The TOML file: the same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    bind: Option<String>,
    port: Option<u16>,
    cluster_port: Option<u16>,
    node_name: Option<String>,
    cluster_announce_ip: Option<IpAddr>,
    #[serde(alias = "seeds")]
    seed: Option<Vec<String>>,
    replicas: Option<u32>,
    write_quorum: Option<u32>,
    read_quorum: Option<u32>,
    vnodes: Option<u32>,
    weight: Option<u32>,
    maxmemory: Option<Size>,
    maxmemory_policy: Option<String>,
    maxmemory_samples: Option<u32>,
    requirepass: Option<String>,
    cluster_secret: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    protected_mode: Option<String>,
    cluster_name: Option<String>,
    gossip_probe_period_ms: Option<u64>,
    gossip_probe_rtt_ms: Option<u64>,
    gossip_suspect_ms: Option<u64>,
    gossip_interval_ms: Option<u64>,
    admin_port: Option<u16>,
    admin_bind: Option<String>,
    admin_token: Option<String>,
    tls_port: Option<u16>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_ca_cert_file: Option<PathBuf>,
    tls_auth_clients: Option<String>,
    tls_cluster: Option<String>,
    log_format: Option<String>,
    maxclients: Option<u32>,
    timeout: Option<u64>,
    proto_max_bulk_len: Option<Size>,
    client_query_buffer_limit: Option<Size>,
    max_multibulk_len: Option<u32>,
    threads: Option<u32>,
    shutdown_timeout: Option<u64>,
    cluster_redirect: Option<String>,
    partition_mode: Option<String>,
    minority_reads: Option<String>,
    replication_timeout_ms: Option<u64>,
    hints_max_keys: Option<u64>,
    hints_max_bytes: Option<Size>,
    tombstone_grace: Option<u64>,
    max_clock_skew_ms: Option<u64>,
    rebalance_rate: Option<u64>,
    drain_timeout: Option<u64>,
    join_timeout_ms: Option<u64>,
    founding_wait_ms: Option<u64>,
}

/// A size in the file: a number of bytes or a string like "100mb".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self, what: &str) -> Result<u64, ConfigError> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => parse_memory(s).ok_or_else(|| ConfigError::Invalid(what.into(), s.clone())),
        }
    }
}

/// SWIM timing. The defaults are tuned for a LAN or loopback: a crashed
/// node is declared down on every peer in well under a second (see
/// BENCHMARKS.md), a node paused for less than `suspect` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipTiming {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub suspect: Duration,
    pub interval: Duration,
}

/// Whether TLS clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAuthClients {
    Yes,
    No,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid value for {0}: '{1}'")]
    Invalid(String, String),
    #[error("{0}")]
    Inconsistent(String),
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: String,
    pub port: u16,
    pub cluster_port: u16,
    pub node_name: String,
    /// Whether `node_name` is the default (host name:port): with `--port
    /// 0` the port in it is filled in once bound.
    pub node_name_default: bool,
    pub cluster_announce_ip: Option<IpAddr>,
    pub seeds: Vec<String>,
    pub replicas: u32,
    pub write_quorum: u32,
    pub read_quorum: u32,
    pub vnodes: u32,
    pub weight: u32,
    pub maxmemory: u64,
    pub maxmemory_policy: Policy,
    pub maxmemory_samples: u32,
    pub requirepass: Option<String>,
    /// Some: this node clusters (gossip, peer links, seeds); None: a
    /// standalone cache with no cluster port.
    pub cluster_secret: Option<String>,
    pub protected_mode: bool,
    pub cluster_name: String,
    pub gossip: GossipTiming,
    pub admin_port: Option<u16>,
    pub admin_bind: String,
    pub admin_token: Option<String>,
    pub tls_port: Option<u16>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_cert_file: Option<PathBuf>,
    pub tls_auth_clients: TlsAuthClients,
    pub tls_cluster: bool,
    pub log_format: LogFormat,
    pub maxclients: u32,
    pub timeout: Duration,
    pub proto_max_bulk_len: u64,
    pub client_query_buffer_limit: u64,
    pub max_multibulk_len: u32,
    pub threads: u32,
    pub shutdown_timeout: Duration,
    pub cluster_redirect: Redirect,
    pub partition_mode: PartitionMode,
    /// `--minority-reads refuse`.
    pub minority_refuses_reads: bool,
    pub replication_timeout: Duration,
    pub hints_max_keys: u64,
    pub hints_max_bytes: u64,
    pub tombstone_grace: Duration,
    pub max_clock_skew: Duration,
    pub rebalance_rate: u64,
    pub drain_timeout: Duration,
    /// How long a node with seeds refuses keys while no member answered.
    /// Zero: until one does.
    pub join_timeout: Duration,
    /// How long a clustered node whose seeds name only itself (or that has
    /// none) refuses keys, so that members that remember it find it first.
    pub founding_wait: Duration,
    pub config_file: Option<PathBuf>,
    /// `--check-config`: validate, print, exit.
    pub check_config: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(Flags::default()).expect("defaults are valid")
    }
}

/// Parses a memory size the way Redis's `memtoll` does: `1k` = 1000,
/// `1kb` = 1024, likewise m/mb and g/gb; case-insensitive; a plain number is
/// bytes.
pub fn parse_memory(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

/// `yes`/`no` (Redis's spelling; true/false too).
fn yes_no(what: &str, v: String) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(ConfigError::Invalid(what.into(), v)),
    }
}

/// The cluster secret, given inline or in a file (not both); empty is none.
fn secret(inline: Option<String>, file: Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    let inline = inline.filter(|s| !s.is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::Inconsistent(
            "give the cluster secret once: --cluster-secret or --cluster-secret-file, not both".into(),
        )),
        (Some(s), None) => Ok(Some(s)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read(path.clone(), e))?;
            let s = text.trim_end_matches(['\r', '\n']).to_string();
            if s.is_empty() {
                return Err(ConfigError::Invalid("cluster-secret-file (empty)".into(), path.display().to_string()));
            }
            Ok(Some(s))
        }
        (None, None) => Ok(None),
    }
}

/// This host's name (a container's or pod's own), for the default node
/// name; `localhost` when the system has none.
pub fn host_name() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_kernel.or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_default();
    let name = name.trim();
    if name.is_empty() { "localhost".into() } else { name.to_string() }
}

impl Config {
    /// Parses the process arguments and environment, reads the file if one
    /// is named, and resolves everything.
    pub fn load() -> Result<Config, ConfigError> {
        Config::resolve(Flags::parse())
    }

    /// Resolves flags (already merged with the environment by clap) against
    /// the config file they name and the defaults.
    pub fn resolve(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.clone(), e))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse(path.clone(), e.to_string()))?
            }
            None => FileConfig::default(),
        };
        let size = |flag: Option<String>, file: Option<Size>, what: &str, default: u64| -> Result<u64, ConfigError> {
            match (flag, file) {
                (Some(s), _) => parse_memory(&s).ok_or_else(|| ConfigError::Invalid(what.into(), s)),
                (None, Some(sz)) => sz.bytes(what),
                (None, None) => Ok(default),
            }
        };
        let bind = pick(flags.bind, file.bind, "127.0.0.1".to_string());
        let port = pick(flags.port, file.port, 6379);
        let cluster_port = match flags.cluster_port.or(file.cluster_port) {
            Some(p) => p,
            None if port == 0 => 0,
            None => port.checked_add(10000).ok_or_else(|| {
                ConfigError::Inconsistent(format!("port {port} + 10000 is not a port: set --cluster-port"))
            })?,
        };
        let node_name_default = flags.node_name.is_none() && file.node_name.is_none();
        let node_name = pick(flags.node_name, file.node_name, format!("{}:{port}", host_name()));
        let seeds = if flags.seeds.is_empty() { file.seed.unwrap_or_default() } else { flags.seeds };
        let policy_text = pick(flags.maxmemory_policy, file.maxmemory_policy, "noeviction".to_string());
        let maxmemory_policy =
            Policy::from_str(&policy_text).map_err(|_| ConfigError::Invalid("maxmemory-policy".into(), policy_text))?;
        let log_text = pick(flags.log_format, file.log_format, "text".to_string());
        let log_format = match log_text.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(ConfigError::Invalid("log-format".into(), log_text)),
        };
        let redirect_text = pick(flags.cluster_redirect, file.cluster_redirect, "forward".to_string());
        let cluster_redirect = match redirect_text.as_str() {
            "forward" => Redirect::Forward,
            "moved" => Redirect::Moved,
            _ => return Err(ConfigError::Invalid("cluster-redirect".into(), redirect_text)),
        };
        let mode_text = pick(flags.partition_mode, file.partition_mode, "majority".to_string());
        let partition_mode = match mode_text.as_str() {
            "majority" => PartitionMode::Majority,
            "available" => PartitionMode::Available,
            _ => return Err(ConfigError::Invalid("partition-mode".into(), mode_text)),
        };
        let reads_text = pick(flags.minority_reads, file.minority_reads, "serve".to_string());
        let minority_refuses_reads = match reads_text.as_str() {
            "serve" => false,
            "refuse" => true,
            _ => return Err(ConfigError::Invalid("minority-reads".into(), reads_text)),
        };
        let config = Config {
            cluster_redirect,
            partition_mode,
            minority_refuses_reads,
            replication_timeout: Duration::from_millis(pick(
                flags.replication_timeout_ms,
                file.replication_timeout_ms,
                2000,
            )),
            hints_max_keys: pick(flags.hints_max_keys, file.hints_max_keys, 100_000),
            hints_max_bytes: size(flags.hints_max_bytes, file.hints_max_bytes, "hints-max-bytes", 64 << 20)?,
            tombstone_grace: Duration::from_secs(pick(flags.tombstone_grace, file.tombstone_grace, 600)),
            max_clock_skew: Duration::from_millis(pick(flags.max_clock_skew_ms, file.max_clock_skew_ms, 60_000)),
            rebalance_rate: pick(flags.rebalance_rate, file.rebalance_rate, 0),
            drain_timeout: Duration::from_secs(pick(flags.drain_timeout, file.drain_timeout, 30)),
            // Serving alone is a side of its own: with one writing side
            // (majority mode) a node restarted where it reaches no seed
            // (a partition) waits for ever unless told otherwise.
            join_timeout: Duration::from_millis(pick(
                flags.join_timeout_ms,
                file.join_timeout_ms,
                if partition_mode == PartitionMode::Majority { 0 } else { 30_000 },
            )),
            founding_wait: Duration::from_millis(pick(flags.founding_wait_ms, file.founding_wait_ms, 6_000)),
            bind,
            port,
            cluster_port,
            node_name,
            seeds,
            replicas: pick(flags.replicas, file.replicas, 3),
            write_quorum: pick(flags.write_quorum, file.write_quorum, 2),
            read_quorum: pick(flags.read_quorum, file.read_quorum, 1),
            vnodes: pick(flags.vnodes, file.vnodes, 256),
            weight: pick(flags.weight, file.weight, 1),
            maxmemory: size(flags.maxmemory, file.maxmemory, "maxmemory", 0)?,
            maxmemory_policy,
            maxmemory_samples: pick(flags.maxmemory_samples, file.maxmemory_samples, 5),
            requirepass: flags.requirepass.or(file.requirepass).filter(|p| !p.is_empty()),
            cluster_secret: secret(
                flags.cluster_secret.or(file.cluster_secret),
                flags.cluster_secret_file.or(file.cluster_secret_file),
            )?,
            protected_mode: yes_no("protected-mode", pick(flags.protected_mode, file.protected_mode, "yes".into()))?,
            node_name_default,
            cluster_announce_ip: flags.cluster_announce_ip.or(file.cluster_announce_ip),
            admin_bind: pick(flags.admin_bind, file.admin_bind, "127.0.0.1".to_string()),
            admin_token: flags.admin_token.or(file.admin_token).filter(|t| !t.is_empty()),
            tls_port: flags.tls_port.or(file.tls_port),
            tls_cert_file: flags.tls_cert_file.or(file.tls_cert_file),
            tls_key_file: flags.tls_key_file.or(file.tls_key_file),
            tls_ca_cert_file: flags.tls_ca_cert_file.or(file.tls_ca_cert_file),
            tls_cluster: yes_no("tls-cluster", pick(flags.tls_cluster, file.tls_cluster, "no".into()))?,
            tls_auth_clients: {
                let text = pick(flags.tls_auth_clients, file.tls_auth_clients, "yes".to_string());
                match text.to_ascii_lowercase().as_str() {
                    "yes" => TlsAuthClients::Yes,
                    "no" => TlsAuthClients::No,
                    "optional" => TlsAuthClients::Optional,
                    _ => return Err(ConfigError::Invalid("tls-auth-clients (yes, no, optional)".into(), text)),
                }
            },
            cluster_name: pick(flags.cluster_name, file.cluster_name, "ringcache".to_string()),
            gossip: GossipTiming {
                probe_period: Duration::from_millis(pick(
                    flags.gossip_probe_period_ms,
                    file.gossip_probe_period_ms,
                    200,
                )),
                probe_rtt: Duration::from_millis(pick(flags.gossip_probe_rtt_ms, file.gossip_probe_rtt_ms, 100)),
                suspect: Duration::from_millis(pick(flags.gossip_suspect_ms, file.gossip_suspect_ms, 400)),
                interval: Duration::from_millis(pick(flags.gossip_interval_ms, file.gossip_interval_ms, 100)),
            },
            admin_port: flags.admin_port.or(file.admin_port),
            log_format,
            maxclients: pick(flags.maxclients, file.maxclients, 10_000),
            timeout: Duration::from_secs(pick(flags.timeout, file.timeout, 0)),
            proto_max_bulk_len: size(
                flags.proto_max_bulk_len,
                file.proto_max_bulk_len,
                "proto-max-bulk-len",
                512 * 1024 * 1024,
            )?,
            client_query_buffer_limit: size(
                flags.client_query_buffer_limit,
                file.client_query_buffer_limit,
                "client-query-buffer-limit",
                1024 * 1024 * 1024,
            )?,
            max_multibulk_len: pick(flags.max_multibulk_len, file.max_multibulk_len, 1024 * 1024),
            threads: pick(flags.threads, file.threads, 0),
            shutdown_timeout: Duration::from_secs(pick(flags.shutdown_timeout, file.shutdown_timeout, 10)),
            config_file: flags.config,
            check_config: flags.check_config,
        };
        config.validate()?;
        Ok(config)
    }

    /// The resolved settings that shape a deployment, one per line, secrets
    /// shown only as set or not (`--check-config`).
    pub fn describe(&self) -> String {
        let set = |o: &Option<String>| if o.is_some() { "(set)" } else { "(none)" };
        let mode = if self.cluster_secret.is_some() { "cluster" } else { "standalone" };
        let announce = self.cluster_announce_ip.map_or("(auto)".to_string(), |ip| ip.to_string());
        format!(
            "config ok\nmode = {mode}\nbind = {}\nport = {}\ncluster-port = {}\nnode-name = {}\n\
             cluster-announce-ip = {announce}\nseeds = {:?}\ncluster-name = {}\ncluster-secret = {}\n\
             requirepass = {}\nprotected-mode = {}\nreplicas = {}\nwrite-quorum = {}\nread-quorum = {}\n\
             maxmemory = {}\nmaxmemory-policy = {:?}\nadmin = {}\nadmin-token = {}\ntls-port = {}\n",
            self.bind,
            self.port,
            self.cluster_port,
            self.node_name,
            self.seeds,
            self.cluster_name,
            set(&self.cluster_secret),
            set(&self.requirepass),
            if self.protected_mode { "yes" } else { "no" },
            self.replicas,
            self.write_quorum,
            self.read_quorum,
            self.maxmemory,
            self.maxmemory_policy,
            self.admin_port.map_or("(off)".to_string(), |p| format!("{}:{p}", self.admin_bind)),
            set(&self.admin_token),
            self.tls_port.map_or("(off)".to_string(), |p| format!("{p} (clients: {:?})", self.tls_auth_clients)),
        )
    }

    /// Whether this node clusters (it has a secret): otherwise it opens no
    /// cluster port and is a standalone cache.
    pub fn clustered(&self) -> bool {
        self.cluster_secret.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str, v: &dyn std::fmt::Display| Err(ConfigError::Invalid(what.into(), v.to_string()));
        if self.replicas == 0 {
            return bad("replicas", &self.replicas);
        }
        if self.max_clock_skew < Duration::from_secs(1) {
            return bad("max-clock-skew-ms (at least 1000)", &self.max_clock_skew.as_millis());
        }
        if self.replication_timeout.is_zero() {
            return bad("replication-timeout-ms", &0);
        }
        if self.write_quorum == 0 || self.write_quorum > self.replicas {
            return Err(ConfigError::Inconsistent(format!(
                "write-quorum must be between 1 and replicas ({}), got {}",
                self.replicas, self.write_quorum
            )));
        }
        if self.read_quorum == 0 || self.read_quorum > self.replicas {
            return Err(ConfigError::Inconsistent(format!(
                "read-quorum must be between 1 and replicas ({}), got {}",
                self.replicas, self.read_quorum
            )));
        }
        if self.vnodes == 0 || self.vnodes > 4096 {
            return bad("vnodes (1..=4096)", &self.vnodes);
        }
        if self.weight == 0 || self.weight > WEIGHT_MAX {
            return bad("weight (1..=64)", &self.weight);
        }
        if self.maxmemory_samples == 0 || self.maxmemory_samples > 64 {
            return bad("maxmemory-samples (1..=64)", &self.maxmemory_samples);
        }
        if self.maxclients == 0 {
            return bad("maxclients", &self.maxclients);
        }
        if self.proto_max_bulk_len < 1024 || self.proto_max_bulk_len > (1 << 40) {
            return bad("proto-max-bulk-len (1kb..=1tb)", &self.proto_max_bulk_len);
        }
        if self.client_query_buffer_limit < 1024 * 1024 {
            return bad("client-query-buffer-limit (at least 1mb)", &self.client_query_buffer_limit);
        }
        let g = &self.gossip;
        if g.probe_rtt.is_zero() || g.probe_period <= g.probe_rtt {
            return Err(ConfigError::Inconsistent(format!(
                "gossip-probe-rtt-ms ({}) must be above 0 and below gossip-probe-period-ms ({})",
                g.probe_rtt.as_millis(),
                g.probe_period.as_millis()
            )));
        }
        if g.suspect.is_zero() || g.interval.is_zero() {
            return bad("gossip-suspect-ms / gossip-interval-ms (above 0)", &0);
        }
        if self.cluster_name.is_empty() {
            return bad("cluster-name", &"");
        }
        if self.max_multibulk_len == 0 {
            return bad("max-multibulk-len", &self.max_multibulk_len);
        }
        if !self.seeds.is_empty() && self.cluster_secret.is_none() {
            return Err(ConfigError::Inconsistent(
                "seeds are given but no cluster secret: every node of a cluster needs the same secret \
                 (--cluster-secret, RINGCACHE_CLUSTER_SECRET or --cluster-secret-file; \
                 make one with `openssl rand -hex 32`); without seeds and a secret the node runs standalone"
                    .into(),
            ));
        }
        if self.node_name.is_empty() || self.node_name.len() > NAME_MAX {
            return bad("node-name (1 to 255 bytes)", &self.node_name);
        }
        if self.tls_port.is_some() {
            if self.tls_cert_file.is_none() || self.tls_key_file.is_none() {
                return Err(ConfigError::Inconsistent("tls-port needs --tls-cert-file and --tls-key-file".into()));
            }
            if self.tls_auth_clients != TlsAuthClients::No && self.tls_ca_cert_file.is_none() {
                return Err(ConfigError::Inconsistent(
                    "tls-auth-clients yes/optional (the default is yes) needs --tls-ca-cert-file; \
                     or set --tls-auth-clients no"
                        .into(),
                ));
            }
        }
        if self.tls_cluster
            && (self.tls_cert_file.is_none() || self.tls_key_file.is_none() || self.tls_ca_cert_file.is_none())
        {
            return Err(ConfigError::Inconsistent(
                "tls-cluster needs --tls-cert-file, --tls-key-file and --tls-ca-cert-file".into(),
            ));
        }
        if let Some(ip) = self.cluster_announce_ip
            && (ip.is_unspecified() || ip.is_multicast())
        {
            return bad("cluster-announce-ip (an address others can reach)", &ip);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_follow_redis() {
        assert_eq!(parse_memory("0"), Some(0));
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("1kb"), Some(1024));
        assert_eq!(parse_memory("100mb"), Some(100 * 1024 * 1024));
        assert_eq!(parse_memory("2GB"), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_memory("1x"), None);
        assert_eq!(parse_memory("mb"), None);
        assert_eq!(parse_memory("99999999999999999999gb"), None);
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.bind, "127.0.0.1");
        assert_eq!(c.port, 6379);
        assert_eq!(c.cluster_port, 16379);
        assert_eq!(c.node_name, format!("{}:6379", host_name()));
        assert!(c.node_name_default && c.cluster_secret.is_none() && c.protected_mode);
        assert_eq!(c.admin_bind, "127.0.0.1");
        assert_eq!((c.replicas, c.write_quorum, c.read_quorum, c.vnodes, c.weight), (3, 2, 1, 256, 1));
        assert_eq!(c.maxmemory_policy, Policy::NoEviction);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("ringcache-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "port = 7000\nmaxmemory = \"10mb\"\nmaxmemory-policy = \"allkeys-lru\"\nseed = [\"a:1\"]\ncluster-secret = \"s\"\n",
        )
        .unwrap();
        let flags = Flags { config: Some(path.clone()), port: Some(7001), ..Flags::default() };
        let c = Config::resolve(flags).unwrap();
        assert_eq!(c.port, 7001);
        assert_eq!(c.cluster_port, 17001);
        assert_eq!(c.maxmemory, 10 * 1024 * 1024);
        assert_eq!(c.maxmemory_policy, Policy::AllKeysLru);
        assert_eq!(c.seeds, vec!["a:1".to_string()]);
        std::fs::write(&path, "prot = 1\n").unwrap();
        let err = Config::resolve(Flags { config: Some(path), ..Flags::default() }).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn clustering_needs_a_secret_given_once() {
        let seeds = || vec!["a:1".to_string()];
        let err = Config::resolve(Flags { seeds: seeds(), ..Flags::default() }).unwrap_err().to_string();
        assert!(err.contains("no cluster secret") && err.contains("openssl rand"), "{err}");
        let c =
            Config::resolve(Flags { seeds: seeds(), cluster_secret: Some("s".into()), ..Flags::default() }).unwrap();
        assert!(c.clustered());
        let path = std::env::temp_dir().join(format!("ringcache-secret-test-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        let from_file = Flags { seeds: seeds(), cluster_secret_file: Some(path.clone()), ..Flags::default() };
        assert_eq!(Config::resolve(from_file).unwrap().cluster_secret.as_deref(), Some("from-file"));
        let both =
            Flags { cluster_secret: Some("s".into()), cluster_secret_file: Some(path.clone()), ..Flags::default() };
        assert!(Config::resolve(both).unwrap_err().to_string().contains("not both"));
        std::fs::write(&path, "\n").unwrap();
        assert!(Config::resolve(Flags { cluster_secret_file: Some(path.clone()), ..Flags::default() }).is_err());
        let _ = std::fs::remove_file(path);
        assert!(!Config::default().clustered(), "no secret: standalone");
        assert!(Config::resolve(Flags { protected_mode: Some("maybe".into()), ..Flags::default() }).is_err());
        let announce = Flags { cluster_announce_ip: Some("0.0.0.0".parse().unwrap()), ..Flags::default() };
        assert!(Config::resolve(announce).is_err());
    }

    #[test]
    fn inconsistent_values_are_refused() {
        assert!(Config::resolve(Flags { write_quorum: Some(4), ..Flags::default() }).is_err());
        assert!(Config::resolve(Flags { maxmemory_policy: Some("lru".into()), ..Flags::default() }).is_err());
        assert!(Config::resolve(Flags { port: Some(60000), ..Flags::default() }).is_err());
        assert!(Config::resolve(Flags { port: Some(0), ..Flags::default() }).unwrap().cluster_port == 0);
    }
}
