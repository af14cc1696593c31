//! Server commands: INFO, CONFIG, DBSIZE, FLUSHALL/FLUSHDB, TIME, LATENCY,
//! SLOWLOG, SHUTDOWN.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ringcache_protocol::Args;

use super::connection::{REDIS_COMPAT_VERSION, help};
use super::{COMMANDS, CmdError, CmdResult, Ctx, arg_i64, eq_ic, sub_name};
use crate::config::parse_memory;
use crate::process::{cpu_seconds, human_bytes, rss_bytes};
use crate::shared::Shared;
use crate::store::Policy;
use crate::store::glob::glob_match;

pub fn dbsize(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let n = match ctx.conn.slot_filter(ctx.shared) {
        Some(t) => ctx.shared.store.count_keys_where(|s| t.table.owners(s).first() == Some(&t.me)),
        None => ctx.shared.store.len(),
    };
    ctx.out.int(n as i64);
    Ok(())
}

pub fn flushall(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let asynchronous = match args.len() {
        1 => false,
        2 if eq_ic(args.get(1), "ASYNC") => true,
        2 if eq_ic(args.get(1), "SYNC") => false,
        _ => return Err(CmdError::Syntax),
    };
    // In a cluster FLUSHALL runs on every member (a broadcast); the member
    // the client asked also passes the flush epoch on to those that were
    // not reached (see `Store::flush_all`).
    let old = ctx.shared.store.flush_all(ctx.now_ms, !ctx.conn.peer);
    if asynchronous {
        // Freeing millions of entries takes a while; do it off the workers.
        std::thread::spawn(move || drop(old));
    } else {
        drop(old);
    }
    ctx.out.ok();
    Ok(())
}

pub fn time(ctx: &mut Ctx<'_>, _args: Args<'_>) -> CmdResult {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ctx.out.array(2);
    ctx.out.bulk(now.as_secs().to_string().as_bytes());
    ctx.out.bulk(now.subsec_micros().to_string().as_bytes());
    Ok(())
}

pub fn shutdown(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    for a in args.iter().skip(1) {
        if !["NOSAVE", "SAVE", "NOW", "FORCE"].iter().any(|o| eq_ic(a, o)) {
            return Err(CmdError::Syntax);
        }
    }
    tracing::warn!(client = ctx.conn.info.id, "SHUTDOWN requested by a client");
    ctx.shared.request_shutdown();
    ctx.conn.quit = true;
    Ok(())
}

pub fn latency(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    if eq_ic(sub, "LATEST") || eq_ic(sub, "HISTORY") || eq_ic(sub, "HISTOGRAM") {
        ctx.out.array(0);
    } else if eq_ic(sub, "RESET") {
        ctx.out.int(0);
    } else if eq_ic(sub, "DOCTOR") {
        ctx.out.verbatim(b"ringcache does not record latency events yet; nothing to report.\n");
    } else if eq_ic(sub, "HELP") {
        help(ctx, &["LATENCY <subcommand>. LATEST, HISTORY, HISTOGRAM and RESET answer empty; DOCTOR explains."]);
    } else {
        return Err(CmdError::UnknownSubcommand(String::from_utf8_lossy(sub).into_owned(), "LATENCY"));
    }
    Ok(())
}

pub fn slowlog(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    if eq_ic(sub, "GET") {
        if args.len() > 3 {
            return Err(CmdError::Arity(sub_name("slowlog", sub)));
        }
        if args.len() == 3 && arg_i64(args.get(2))? < -1 {
            return Err(CmdError::msg("ERR count should be greater than or equal to -1"));
        }
        ctx.out.array(0);
    } else if eq_ic(sub, "LEN") {
        ctx.out.int(0);
    } else if eq_ic(sub, "RESET") {
        ctx.out.ok();
    } else if eq_ic(sub, "HELP") {
        help(ctx, &["SLOWLOG <subcommand>. The slow log is not recorded yet: GET and LEN answer empty."]);
    } else {
        return Err(CmdError::UnknownSubcommand(String::from_utf8_lossy(sub).into_owned(), "SLOWLOG"));
    }
    Ok(())
}

// ---- INFO ---------------------------------------------------------------------

const DEFAULT_SECTIONS: &[&str] =
    &["server", "clients", "memory", "persistence", "stats", "replication", "cpu", "cluster", "keyspace"];
const ALL_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "cluster",
    "keyspace",
];

/// The text of INFO for the given section names (empty: the defaults).
pub fn info_text(shared: &Shared, now_ms: u64, sections: &[String]) -> String {
    let wanted: Vec<&str> = if sections.is_empty() {
        DEFAULT_SECTIONS.to_vec()
    } else {
        let mut w = Vec::new();
        for s in sections {
            match s.as_str() {
                "all" | "everything" => w.extend_from_slice(ALL_SECTIONS),
                "default" => w.extend_from_slice(DEFAULT_SECTIONS),
                other => {
                    if let Some(known) = ALL_SECTIONS.iter().find(|k| **k == other) {
                        w.push(known);
                    }
                }
            }
        }
        w
    };
    let mut out = String::new();
    for (i, section) in ALL_SECTIONS.iter().filter(|s| wanted.contains(s)).enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        write_section(&mut out, shared, now_ms, section);
    }
    out
}

fn write_section(o: &mut String, s: &Shared, now_ms: u64, section: &str) {
    let m = &s.metrics;
    let store = &s.store;
    let title = {
        let mut t = section.to_string();
        t[..1].make_ascii_uppercase();
        t
    };
    let _ = write!(o, "# {title}\r\n");
    let mut kv = |k: &str, v: &dyn std::fmt::Display| {
        let _ = write!(o, "{k}:{v}\r\n");
    };
    match section {
        "server" => {
            let uptime = now_ms.saturating_sub(s.started_ms) / 1000;
            let port = s.client_addr.lock().ok().and_then(|a| a.map(|a| a.port())).unwrap_or(s.config.port);
            kv("redis_version", &REDIS_COMPAT_VERSION);
            kv("ringcache_version", &env!("CARGO_PKG_VERSION"));
            kv("redis_mode", &if s.config.clustered() { "cluster" } else { "standalone" });
            kv("os", &format!("{} {}", std::env::consts::OS, std::env::consts::ARCH));
            kv("arch_bits", &(usize::BITS));
            kv("multiplexing_api", &"epoll");
            kv("process_id", &std::process::id());
            kv("run_id", &s.run_id);
            kv("node_name", &s.config.node_name);
            kv("tcp_port", &port);
            kv("server_time_usec", &(now_ms * 1000));
            kv("uptime_in_days", &(uptime / 86400));
            kv("hz", &10);
            kv("executable", &std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default());
            kv("config_file", &s.config.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
        }
        "clients" => {
            kv("maxclients", &s.settings.maxclients.load(Relaxed));
            kv("blocked_clients", &0);
        }
        "memory" => {
            let used = store.used_memory();
            let rss = rss_bytes();
            let max = store.maxmemory();
            kv("used_memory_human", &human_bytes(used));
            kv("used_memory_rss_human", &human_bytes(rss));
            kv("used_memory_dataset", &used);
            kv("maxmemory_human", &human_bytes(max));
            kv("maxmemory_policy", &store.policy());
            kv("mem_fragmentation_ratio", &format!("{:.2}", if used > 0 { rss as f64 / used as f64 } else { 0.0 }));
            kv("mem_allocator", &"libc");
        }
        "persistence" => {
            kv("loading", &0);
            kv("rdb_changes_since_last_save", &0);
            kv("rdb_bgsave_in_progress", &0);
            kv("aof_enabled", &0);
        }
        "stats" => {}
        "replication" => {
            // Every node is a primary for some slots and a replica for
            // others; the peer lines show each link's state.
            kv("role", &"master");
            kv("connected_slaves", &0);
            let c = &s.config;
            kv("replicas", &c.replicas);
            kv("write_quorum", &c.write_quorum);
            kv("read_quorum", &c.read_quorum);
        }
        "cpu" => {
            let (user, sys) = cpu_seconds();
            kv("used_cpu_sys", &format!("{sys:.6}"));
            kv("used_cpu_user", &format!("{user:.6}"));
        }
        "commandstats" => {
            for (spec, c) in COMMANDS.iter().zip(m.commands.iter()) {
                let (calls, failed, rejected) =
                    (c.calls.load(Relaxed), c.failed.load(Relaxed), c.rejected.load(Relaxed));
                if calls + rejected > 0 {
                    kv(
                        &format!("cmdstat_{}", spec.name),
                        &format!(
                            "calls={calls},usec=0,usec_per_call=0.00,rejected_calls={rejected},failed_calls={failed}"
                        ),
                    );
                }
            }
        }
        "cluster" => {
            let t = s.topology();
            kv("cluster_enabled", &u8::from(s.config.clustered()));
            kv("cluster_join_state", &s.join_state());
            kv("cluster_name", &s.config.cluster_name);
            kv("cluster_members_digest", &format!("{:016x}", crate::cluster::membership::members_digest(&t)));
        }
        "keyspace" => {
            let keys = store.len();
            if keys > 0 {
                kv("db0", &format!("keys={keys},expires={},avg_ttl=0", store.volatile_len()));
            }
        }
        _ => {}
    }
    // The numbers: one table feeds INFO and /metrics.
    crate::metrics::info_rows(s, section, now_ms, &mut kv);
}

pub fn info(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sections: Vec<String> = args.iter().skip(1).map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
    let text = info_text(ctx.shared, ctx.now_ms, &sections);
    ctx.out.verbatim(text.as_bytes());
    Ok(())
}

// ---- CONFIG ---------------------------------------------------------------------

/// Settings CONFIG GET shows; the boolean says whether CONFIG SET may change it.
const PARAMS: &[(&str, bool)] = &[
    ("maxmemory", true),
    ("maxmemory-policy", true),
    ("maxmemory-samples", true),
    ("lfu-log-factor", true),
    ("lfu-decay-time", true),
    ("timeout", true),
    ("maxclients", true),
    ("requirepass", true),
    ("protected-mode", true),
    ("proto-max-bulk-len", true),
    ("client-query-buffer-limit", true),
    ("max-multibulk-len", true),
    ("bind", false),
    ("port", false),
    ("cluster-port", false),
    ("node-name", false),
    ("replicas", false),
    ("write-quorum", false),
    ("read-quorum", false),
    ("vnodes", false),
    ("weight", false),
    ("admin-port", false),
    ("admin-bind", false),
    ("cluster-announce-ip", false),
    ("databases", false),
    ("save", false),
    ("appendonly", false),
    ("cluster-enabled", false),
];

fn param_value(s: &Shared, name: &str) -> String {
    let c = &s.config;
    match name {
        "maxmemory" => s.store.maxmemory().to_string(),
        "maxmemory-policy" => s.store.policy().to_string(),
        "maxmemory-samples" => s.store.samples().to_string(),
        "lfu-log-factor" => s.store.lfu_log_factor().to_string(),
        "lfu-decay-time" => s.store.lfu_decay_time().to_string(),
        "timeout" => s.settings.timeout_secs.load(Relaxed).to_string(),
        "maxclients" => s.settings.maxclients.load(Relaxed).to_string(),
        "requirepass" => s.settings.requirepass().map(|p| p.to_string()).unwrap_or_default(),
        "protected-mode" => if s.settings.protected_mode.load(Relaxed) { "yes" } else { "no" }.to_string(),
        "proto-max-bulk-len" => s.settings.proto_max_bulk_len.load(Relaxed).to_string(),
        "client-query-buffer-limit" => s.settings.client_query_buffer_limit.load(Relaxed).to_string(),
        "max-multibulk-len" => s.settings.max_multibulk_len.load(Relaxed).to_string(),
        "bind" => c.bind.clone(),
        "port" => s.client_addr.lock().ok().and_then(|a| a.map(|a| a.port())).unwrap_or(c.port).to_string(),
        "cluster-port" => c.cluster_port.to_string(),
        "node-name" => c.node_name.clone(),
        "replicas" => c.replicas.to_string(),
        "write-quorum" => c.write_quorum.to_string(),
        "read-quorum" => c.read_quorum.to_string(),
        "vnodes" => c.vnodes.to_string(),
        "weight" => c.weight.to_string(),
        "admin-port" => c.admin_port.map(|p| p.to_string()).unwrap_or_default(),
        "admin-bind" => c.admin_bind.clone(),
        "cluster-announce-ip" => s.topology().myself().client_addr.ip().to_string(),
        "databases" => "1".to_string(),
        "save" => String::new(),
        "appendonly" => "no".to_string(),
        "cluster-enabled" => if c.clustered() { "yes" } else { "no" }.to_string(),
        _ => String::new(),
    }
}

/// A validated CONFIG SET change, applied only once every pair is valid.
enum Change {
    Maxmemory(u64),
    Policy(Policy),
    Samples(u32),
    LfuLogFactor(u32),
    LfuDecayTime(u32),
    Timeout(u64),
    Maxclients(u32),
    Requirepass(Option<Arc<str>>),
    ProtectedMode(bool),
    ProtoMaxBulkLen(u64),
    QueryBufferLimit(u64),
    MaxMultibulkLen(u32),
    Nothing,
}

fn parse_change(name: &str, value: &[u8]) -> Result<Change, CmdError> {
    let text = String::from_utf8_lossy(value).into_owned();
    let failed =
        |why: &str| CmdError::msg(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"));
    let memory = || parse_memory(&text).ok_or_else(|| failed("argument must be a memory value"));
    let number = |lo: u64, hi: u64| {
        text.parse::<u64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| failed(&format!("argument must be between {lo} and {hi} inclusive")))
    };
    Ok(match name {
        "maxmemory" => Change::Maxmemory(memory()?),
        "maxmemory-policy" => Change::Policy(text.parse().map_err(|_| failed("argument(s) must be one of the following: volatile-lru, allkeys-lru, volatile-lfu, allkeys-lfu, volatile-random, allkeys-random, volatile-ttl, noeviction"))?),
        "maxmemory-samples" => Change::Samples(number(1, 64)? as u32),
        "lfu-log-factor" => Change::LfuLogFactor(number(0, i32::MAX as u64)? as u32),
        "lfu-decay-time" => Change::LfuDecayTime(number(0, i32::MAX as u64)? as u32),
        "timeout" => Change::Timeout(number(0, i32::MAX as u64)?),
        "maxclients" => Change::Maxclients(number(1, 1_000_000)? as u32),
        "requirepass" => Change::Requirepass(Some(text).filter(|t| !t.is_empty()).map(Arc::from)),
        "protected-mode" => match text.to_ascii_lowercase().as_str() {
            "yes" => Change::ProtectedMode(true),
            "no" => Change::ProtectedMode(false),
            _ => return Err(failed("argument must be 'yes' or 'no'")),
        },
        "proto-max-bulk-len" => {
            let n = memory()?;
            if n < 1024 {
                return Err(failed("argument must be a memory value of at least 1kb"));
            }
            Change::ProtoMaxBulkLen(n)
        }
        "client-query-buffer-limit" => {
            let n = memory()?;
            if n < 1024 * 1024 {
                return Err(failed("argument must be a memory value of at least 1mb"));
            }
            Change::QueryBufferLimit(n)
        }
        "max-multibulk-len" => Change::MaxMultibulkLen(number(1, i32::MAX as u64)? as u32),
        // Accepted for tools that switch persistence off: it is off already.
        "save" if text.is_empty() => Change::Nothing,
        "appendonly" if text.eq_ignore_ascii_case("no") => Change::Nothing,
        _ => return Err(failed("can't set immutable config")),
    })
}

fn apply_change(ctx: &mut Ctx<'_>, c: Change) {
    let s = ctx.shared;
    match c {
        Change::Maxmemory(n) => {
            s.store.set_maxmemory(n);
            // Evict now rather than at the next write, as Redis does.
            s.store.evict_to_limit(ctx.now_ms);
        }
        Change::Policy(p) => s.store.set_policy(p),
        Change::Samples(n) => s.store.set_samples(n),
        Change::LfuLogFactor(n) => s.store.set_lfu_log_factor(n),
        Change::LfuDecayTime(n) => s.store.set_lfu_decay_time(n),
        Change::Timeout(n) => s.settings.timeout_secs.store(n, Relaxed),
        Change::Maxclients(n) => s.settings.maxclients.store(n, Relaxed),
        Change::Requirepass(p) => {
            *s.settings.requirepass.write().unwrap_or_else(std::sync::PoisonError::into_inner) = p;
        }
        Change::ProtectedMode(on) => s.settings.protected_mode.store(on, Relaxed),
        Change::ProtoMaxBulkLen(n) => s.settings.proto_max_bulk_len.store(n, Relaxed),
        Change::QueryBufferLimit(n) => s.settings.client_query_buffer_limit.store(n, Relaxed),
        Change::MaxMultibulkLen(n) => s.settings.max_multibulk_len.store(n, Relaxed),
        Change::Nothing => {}
    }
}

pub fn config(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    if eq_ic(sub, "GET") {
        if args.len() < 3 {
            return Err(CmdError::Arity(sub_name("config", sub)));
        }
        // (name to reply with, parameter). An exact name is echoed as
        // typed, a pattern's matches in their own spelling, as Redis does.
        let mut found: Vec<(Vec<u8>, &str)> = Vec::new();
        for pattern in args.iter().skip(2) {
            let is_glob = pattern.iter().any(|c| matches!(c, b'*' | b'?' | b'['));
            for (name, _) in PARAMS {
                if glob_match(pattern, name.as_bytes(), true) && !found.iter().any(|(_, n)| n == name) {
                    found.push((if is_glob { name.as_bytes().to_vec() } else { pattern.to_vec() }, name));
                }
            }
        }
        ctx.out.map(found.len());
        for (shown, name) in found {
            ctx.out.bulk(&shown);
            let v = param_value(ctx.shared, name);
            ctx.out.bulk(v.as_bytes());
        }
    } else if eq_ic(sub, "SET") {
        if args.len() < 4 || !args.len().is_multiple_of(2) {
            return Err(CmdError::Arity(sub_name("config", sub)));
        }
        let mut changes = Vec::new();
        for i in (2..args.len()).step_by(2) {
            let name = String::from_utf8_lossy(args.get(i)).to_ascii_lowercase();
            if !PARAMS.iter().any(|(n, _)| *n == name) {
                return Err(CmdError::msg(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                    String::from_utf8_lossy(args.get(i))
                )));
            }
            changes.push(parse_change(&name, args.get(i + 1))?);
        }
        for c in changes {
            apply_change(ctx, c);
        }
        ctx.out.ok();
    } else if eq_ic(sub, "RESETSTAT") {
        if args.len() != 2 {
            return Err(CmdError::Arity(sub_name("config", sub)));
        }
        ctx.shared.metrics.reset();
        ctx.shared.store.stats.expired_keys.store(0, Relaxed);
        ctx.shared.store.stats.evicted_keys.store(0, Relaxed);
        ctx.out.ok();
    } else if eq_ic(sub, "REWRITE") {
        return Err(CmdError::msg("ERR CONFIG REWRITE is not supported: edit the TOML file given with --config"));
    } else if eq_ic(sub, "HELP") {
        help(
            ctx,
            &[
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern>",
                "    Return parameters matching the glob-like <pattern> and their values.",
                "SET <directive> <value> [<directive> <value> ...]",
                "    Set the configuration <directive> to <value>.",
                "RESETSTAT",
                "    Reset statistics reported by the INFO command.",
                "HELP",
                "    Print this help.",
            ],
        );
    } else {
        return Err(CmdError::UnknownSubcommand(String::from_utf8_lossy(sub).into_owned(), "CONFIG"));
    }
    Ok(())
}
