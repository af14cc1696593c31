//! The node's numbers: one table ([`STATS`], and [`PEER_STATS`] per peer
//! link) that feeds both INFO and the Prometheus exposition of `/metrics`
//! (through the `prometheus-client` crate's encoder). The counters
//! themselves are plain atomics updated on the request path; both readers
//! load them only when asked, so reporting costs the request path nothing.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::command::COMMANDS;
use crate::peers::LinkStats;
use crate::shared::Shared;

/// Whether a number only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
}

/// One number the node reports, under one INFO name and one metric name.
#[derive(Debug)]
pub struct Stat {
    /// INFO section it is listed in (lowercase).
    pub section: &'static str,
    /// INFO field (Redis's name where Redis has the field).
    pub info: &'static str,
    /// Metric name after `ringcache_` (counters gain `_total`).
    pub prom: &'static str,
    pub help: &'static str,
    pub kind: Type,
    pub read: fn(&Shared) -> u64,
}

/// A counter listed as `name` in INFO `section` and as `ringcache_name`.
const fn c(section: &'static str, name: &'static str, help: &'static str, read: fn(&Shared) -> u64) -> Stat {
    Stat { section, info: name, prom: name, help, kind: Type::Counter, read }
}

/// A gauge, named as [`c`] names a counter.
const fn g(section: &'static str, name: &'static str, help: &'static str, read: fn(&Shared) -> u64) -> Stat {
    Stat { section, info: name, prom: name, help, kind: Type::Gauge, read }
}

impl Stat {
    /// The same number under another metric name (where INFO keeps Redis's).
    const fn metric(self, prom: &'static str) -> Stat {
        Stat { prom, ..self }
    }

    /// Only on `/metrics` (INFO shows it in another form).
    const fn metric_only(self) -> Stat {
        Stat { info: "", ..self }
    }
}

fn links_sum(s: &Shared, f: fn(&LinkStats) -> &AtomicU64) -> u64 {
    s.links.all().iter().map(|l| f(&l.stats).load(Relaxed)).sum()
}

/// Every node-wide number, in INFO's order within each section.
pub static STATS: &[Stat] = &[
    g("server", "uptime_in_seconds", "Seconds since the node started.", |s| {
        crate::process::unix_ms().saturating_sub(s.started_ms) / 1000
    })
    .metric("uptime_seconds"),
    g("clients", "connected_clients", "Client connections open now.", |s| s.clients.connected() as u64),
    g("memory", "used_memory", "Bytes used by keys, values and tables (the maxmemory measure).", |s| {
        s.store.used_memory()
    })
    .metric("used_memory_bytes"),
    g("memory", "used_memory_rss", "Resident set size of the process.", |_| crate::process::rss_bytes())
        .metric("resident_memory_bytes"),
    g("memory", "maxmemory", "Configured maxmemory (0 = no limit).", |s| s.store.maxmemory()).metric("maxmemory_bytes"),
    c("stats", "total_connections_received", "Client connections accepted.", |s| {
        s.metrics.connections_received.load(Relaxed)
    })
    .metric("connections_received"),
    c("stats", "total_commands_processed", "Commands run (all commands).", |s| s.metrics.total_commands())
        .metric("commands_processed"),
    c("stats", "total_net_input_bytes", "Bytes read from clients.", |s| s.metrics.net_input_bytes.load(Relaxed))
        .metric("net_input_bytes"),
    c("stats", "total_net_output_bytes", "Bytes written to clients.", |s| s.metrics.net_output_bytes.load(Relaxed))
        .metric("net_output_bytes"),
    c("stats", "rejected_connections", "Client connections refused at maxclients.", |s| {
        s.metrics.connections_rejected.load(Relaxed)
    })
    .metric("connections_rejected"),
    c("stats", "clients_denied", "Client connections refused by protected mode (no password, not loopback).", |s| {
        s.metrics.clients_denied.load(Relaxed)
    }),
    c("stats", "admin_unauthorized", "Admin HTTP requests refused for a missing or wrong bearer token.", |s| {
        s.metrics.admin_unauthorized.load(Relaxed)
    }),
    c("stats", "tls_handshake_failures", "TLS client connections whose handshake failed or timed out.", |s| {
        s.metrics.tls_handshake_failures.load(Relaxed)
    }),
    c("stats", "expired_keys", "Keys deleted because their TTL passed.", |s| s.store.stats.expired_keys.load(Relaxed)),
    c("stats", "evicted_keys", "Keys evicted to stay under maxmemory.", |s| s.store.stats.evicted_keys.load(Relaxed)),
    c("stats", "keyspace_hits", "Key lookups that found a key.", |s| s.metrics.keyspace_hits.load(Relaxed)),
    c("stats", "keyspace_misses", "Key lookups that found nothing.", |s| s.metrics.keyspace_misses.load(Relaxed)),
    c("stats", "total_error_replies", "Commands answered with an error (failed or refused).", |s| {
        s.metrics.commands.iter().map(|c| c.failed.load(Relaxed) + c.rejected.load(Relaxed)).sum()
    })
    .metric("error_replies"),
    c("stats", "unknown_commands", "Requests naming no known command.", |s| s.metrics.unknown_commands.load(Relaxed)),
    c("stats", "protocol_errors", "Connections closed for malformed input or a full query buffer.", |s| {
        s.metrics.protocol_errors.load(Relaxed)
    }),
    c(
        "replication",
        "forwarded_requests",
        "Requests sent to another member to run (forwarded, or parts of a split command).",
        |s| s.metrics.forwarded.load(Relaxed),
    ),
    c(
        "replication",
        "forwards_expired",
        "Forwarded requests that arrived after their sender's deadline and were not run.",
        |s| s.metrics.forwards_expired.load(Relaxed),
    ),
    c(
        "cluster",
        "forwards_held",
        "Forwarded requests held unsent while their key's primary was unreachable (until failure detection moved \
         the slot, or the link came back).",
        |s| s.metrics.forwards_held.load(Relaxed),
    ),
    c(
        "cluster",
        "pauses_noticed",
        "Times this node found it had not been scheduled for longer than half the failure-detection time (it was \
         stopped) and unsettled every slot before serving on.",
        |s| s.metrics.pauses_noticed.load(Relaxed),
    ),
    g(
        "cluster",
        "cluster_minority",
        "1 while this node is on the minority side of a partition (it refuses writes).",
        |s| u64::from(s.minority().is_some()),
    ),
    c(
        "cluster",
        "minority_refusals",
        "Requests refused because this node is on the minority side of a partition.",
        |s| s.metrics.minority_refusals.load(Relaxed),
    ),
    g(
        "cluster",
        "cluster_returning",
        "1 while this node returns from an absence longer than the tombstone grace (it spreads nothing, refuses writes).",
        |s| u64::from(s.returning(crate::process::unix_ms())),
    ),
    c(
        "cluster",
        "absence_wipes",
        "Times this node emptied its copy: away longer than the tombstone grace while the others went on.",
        |s| s.metrics.absence_wipes.load(Relaxed),
    ),
    c(
        "cluster",
        "returning_refusals",
        "Requests refused while this node returned from an absence longer than the tombstone grace.",
        |s| s.metrics.returning_refusals.load(Relaxed),
    ),
    c(
        "replication",
        "quorum_failures",
        "Writes refused for lack of reachable owners or not acknowledged by the write quorum in time.",
        |s| s.metrics.quorum_failures.load(Relaxed),
    ),
    c(
        "replication",
        "read_repairs",
        "Owners sent the newest state of a key after a quorum read found them stale.",
        |s| s.metrics.read_repairs.load(Relaxed),
    ),
    c("replication", "replicated_applied", "Replicated key states applied (newer than what this node held).", |s| {
        s.store.stats.applied.load(Relaxed)
    }),
    c("replication", "replicated_stale", "Replicated key states ignored (this node held a newer version).", |s| {
        s.store.stats.stale.load(Relaxed)
    }),
    g("replication", "tombstones", "Deleted keys remembered for the grace period.", |s| s.store.tombstones() as u64),
    c("replication", "tombstones_dropped", "Tombstones forgotten before their grace ended (per-shard bound).", |s| {
        s.store.stats.tombstones_dropped.load(Relaxed)
    }),
    c("replication", "flush_refusals", "Replicated states refused because a FLUSHALL came after them.", |s| {
        s.store.stats.flush_refusals.load(Relaxed)
    }),
    c("replication", "evictions_shared", "Evicted keys passed on to their other owners (RC.EVICT, per owner).", |s| {
        s.metrics.evictions_shared.load(Relaxed)
    }),
    c("replication", "evictions_followed", "Copies dropped because another owner evicted the key.", |s| {
        s.store.stats.evictions_followed.load(Relaxed)
    }),
    c(
        "replication",
        "evictions_unshared",
        "Evictions not passed on (queue of 65536 full): anti-entropy compares those.",
        |s| s.store.stats.evictions_unshared.load(Relaxed),
    ),
    g("replication", "tombstone_bytes", "Memory the tombstones take (counted in used_memory).", |s| {
        s.store.tombstone_bytes() as u64
    }),
    c(
        "replication",
        "tombstone_horizon_refusals",
        "Copies of keys absent here refused because a tombstone of their slot was dropped early: safety over repair.",
        |s| s.store.stats.horizon_refusals.load(Relaxed),
    ),
    c("replication", "peer_rejected_connections", "Peer TCP connections refused (failed handshake, strangers).", |s| {
        s.metrics.peer_rejected.load(Relaxed)
    }),
    c(
        "replication",
        "peer_malformed_requests",
        "Requests from authenticated peers that could not be decoded (answered with an error).",
        |s| s.metrics.peer_malformed.load(Relaxed),
    ),
    c(
        "replication",
        "versions_refused",
        "Replicated states refused: their version was too far ahead of this node's clock.",
        |s| s.metrics.versions_refused.load(Relaxed),
    ),
    g("replication", "hints_pending", "Replicated writes kept for unreachable owners, all peers.", |s| {
        links_sum(s, |x| &x.hints)
    }),
    c("replication", "hints_stored", "Hints stored, all peers.", |s| links_sum(s, |x| &x.hints_stored)),
    c("replication", "hints_replayed", "Hints replayed, all peers.", |s| links_sum(s, |x| &x.hints_replayed)),
    c("replication", "hints_dropped", "Hints dropped (bounds, or slots the peer no longer owns), all peers.", |s| {
        links_sum(s, |x| &x.hints_dropped)
    }),
    c(
        "replication",
        "hints_expired",
        "Hints not replayed because their write outlived the tombstone grace, all peers.",
        |s| links_sum(s, |x| &x.hints_expired),
    ),
    g("cluster", "cluster_known_nodes", "Members in this node's slot table (itself included).", |s| {
        s.topology().nodes.len() as u64
    })
    .metric("cluster_members"),
    g("cluster", "cluster_epoch", "Epoch of this node's slot table.", |s| s.topology().table.epoch),
    c(
        "cluster",
        "gossip_rejected_packets",
        "Gossip packets dropped: other cluster, wrong or missing secret, garbage.",
        |s| s.metrics.gossip_rejected.load(Relaxed),
    ),
    c(
        "cluster",
        "gossip_settings_mismatch",
        "Gossip packets refused from members with other --replicas, --vnodes, quorums, grace or partition mode.",
        |s| s.metrics.gossip_settings_mismatch.load(Relaxed),
    ),
    c("cluster", "gossip_errors", "Authenticated gossip packets the protocol could not use.", |s| {
        s.metrics.gossip_errors.load(Relaxed)
    }),
    c(
        "cluster",
        "gossip_members_refused",
        "Gossip packets refused for an invalid member record (weight, name, address).",
        |s| s.metrics.gossip_members_refused.load(Relaxed),
    ),
    c("cluster", "gossip_name_conflicts", "Times two live members were seen using one node name.", |s| {
        s.metrics.gossip_name_conflicts.load(Relaxed)
    }),
    c("cluster", "gossip_refuted_suspicions", "Suspicions a member refuted in time (no rejoin forced).", |s| {
        s.metrics.gossip_refuted_suspicions.load(Relaxed)
    }),
    c("cluster", "topology_changes", "Membership changes that produced a new slot table.", |s| {
        s.metrics.topology_changes.load(Relaxed)
    }),
    g("cluster", "rebalance_slots_pending", "Slot copies waiting to start.", |s| {
        s.rebalance.slots_pending.load(Relaxed)
    }),
    g("cluster", "rebalance_slots_in_flight", "Slot copies sent and not yet confirmed.", |s| {
        s.rebalance.slots_in_flight.load(Relaxed)
    }),
    g("cluster", "rebalance_slots_importing", "Slots this node is still receiving.", |s| {
        s.rebalance.importing() as u64
    }),
    c("cluster", "rebalance_slots_sent", "Slot copies sent and confirmed.", |s| s.rebalance.slots_sent.load(Relaxed)),
    c("cluster", "rebalance_slots_received", "Slot copies received completely.", |s| {
        s.rebalance.slots_received.load(Relaxed)
    }),
    c("cluster", "rebalance_slots_dropped", "Slots deleted here after their new owners confirmed them.", |s| {
        s.rebalance.slots_dropped.load(Relaxed)
    }),
    c("cluster", "rebalance_keys_moved", "Keys sent in slot copies.", |s| s.rebalance.keys_moved.load(Relaxed)),
    c("cluster", "rebalance_bytes_moved", "Bytes sent in slot copies.", |s| s.rebalance.bytes_moved.load(Relaxed)),
    c("cluster", "rebalance_transfer_errors", "Slot copies that failed and were retried.", |s| {
        s.rebalance.transfer_errors.load(Relaxed)
    }),
    c("cluster", "rebalance_read_through", "Reads of importing slots answered by the previous owner.", |s| {
        s.rebalance.read_through.load(Relaxed)
    }),
    g(
        "cluster",
        "rebalance_slots_unsettled",
        "Slots whose owners changed and that anti-entropy has not compared since.",
        |s| s.rebalance.unsettled() as u64,
    ),
    c(
        "cluster",
        "rebalance_settle_fetches",
        "Writes to slots whose owners changed that fetched their key from the co-owners first.",
        |s| s.rebalance.settle_fetches.load(Relaxed),
    ),
    c(
        "cluster",
        "rebalance_stale_fetches",
        "Fetches of a key's newest state that a table change overlapped: not counted, the write fetched again.",
        |s| s.rebalance.stale_fetches.load(Relaxed),
    ),
    c(
        "cluster",
        "rebalance_held_requests",
        "Client requests held while their keys' newest state was fetched (importing or unsettled slot), or while \
         the table converged.",
        |s| s.rebalance.held_requests.load(Relaxed),
    ),
    c(
        "cluster",
        "rebalance_fetch_refusals",
        "Requests refused because a fetch before them got too few answers (the sender, or a write quorum).",
        |s| s.rebalance.fetch_refusals.load(Relaxed),
    ),
    g(
        "cluster",
        "slots_without_keepers",
        "Slots owned here whose writes are refused: too few of the members that last held them are in the table.",
        |s| {
            if !s.rebalance.keepers_enforced.load(Relaxed) || s.rebalance.unsettled() == 0 {
                return 0;
            }
            let t = s.topology();
            let k = s.rebalance.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            k.short_slots(&t, s.config.write_quorum) as u64
        },
    ),
    c(
        "cluster",
        "keeper_refusals",
        "Writes refused because too few of the members that last held their slot are in the table.",
        |s| s.rebalance.keeper_refusals.load(Relaxed),
    ),
    c(
        "cluster",
        "rebalance_slots_handed_off",
        "Slots held here without being owned, handed to their primary by anti-entropy and deleted.",
        |s| s.rebalance.slots_handed_off.load(Relaxed),
    ),
    c("cluster", "rebalance_rounds", "Slot-table changes the rebalance planned for.", |s| {
        s.rebalance.rebalances.load(Relaxed)
    }),
    g("cluster", "rebalance_last_ms", "Duration of the last rebalance that finished, in ms.", |s| {
        s.rebalance.last_ms.load(Relaxed)
    }),
    c("cluster", "antientropy_sum_checks", "Per-peer shard-sum comparisons made.", |s| {
        s.antientropy.sum_checks.load(Relaxed)
    }),
    c("cluster", "antientropy_rounds", "Shards compared slot by slot.", |s| s.antientropy.rounds.load(Relaxed)),
    c("cluster", "antientropy_slots_compared", "Slot digests compared with a co-owner.", |s| {
        s.antientropy.slots_compared.load(Relaxed)
    }),
    c("cluster", "antientropy_slots_differing", "Slot digests that differed from a co-owner's.", |s| {
        s.antientropy.slots_differing.load(Relaxed)
    }),
    c("cluster", "antientropy_keys_repaired", "Keys sent or fetched by anti-entropy repair.", |s| {
        s.antientropy.keys_repaired.load(Relaxed)
    }),
    c(
        "cluster",
        "antientropy_short_answers",
        "Unsettled slots a co-owner matched but that did not settle: it cannot reach their keepers.",
        |s| s.antientropy.short_answers.load(Relaxed),
    ),
    c(
        "cluster",
        "antientropy_repairs_deferred",
        "Settled slots that differed from a co-owner but were left for a second look (writes in flight).",
        |s| s.antientropy.repairs_deferred.load(Relaxed),
    ),
    g("keyspace", "keys", "Keys held by this node.", |s| s.store.len() as u64).metric_only(),
    g("keyspace", "keys_with_expiry", "Keys with a TTL held by this node.", |s| s.store.volatile_len() as u64)
        .metric_only(),
];

/// One number per peer link (INFO's `peerN:` lines, labelled metrics).
#[derive(Debug)]
pub struct PeerStat {
    pub info: &'static str,
    pub prom: &'static str,
    pub help: &'static str,
    pub kind: Type,
    /// Reads the link's stats at unix ms `now`.
    pub read: fn(&LinkStats, u64) -> u64,
}

const fn pc(info: &'static str, prom: &'static str, help: &'static str, read: fn(&LinkStats, u64) -> u64) -> PeerStat {
    PeerStat { info, prom, help, kind: Type::Counter, read }
}

const fn pg(info: &'static str, prom: &'static str, help: &'static str, read: fn(&LinkStats, u64) -> u64) -> PeerStat {
    PeerStat { info, prom, help, kind: Type::Gauge, read }
}

/// Every per-link number, in the order INFO lists them.
pub static PEER_STATS: &[PeerStat] = &[
    pg("connected", "peer_connected", "1 if the link to the peer is up.", |x, _| u64::from(x.connected.load(Relaxed))),
    pg(
        "inflight",
        "peer_inflight",
        "Requests sent to the peer and not yet answered (replication queue depth).",
        |x, _| x.inflight.load(Relaxed),
    ),
    pg(
        "lag_ms",
        "peer_lag_ms",
        "Age of the oldest unanswered request to the peer (replication lag).",
        |x, now| match x.oldest_ms.load(Relaxed) {
            0 => 0,
            oldest => now.saturating_sub(oldest),
        },
    ),
    pg("hints", "peer_hints", "Replicated writes kept for the peer until it is reachable.", |x, _| {
        x.hints.load(Relaxed)
    }),
    pg("hint_bytes", "peer_hint_bytes", "Bytes of hints kept for the peer.", |x, _| x.hint_bytes.load(Relaxed)),
    pc("hints_stored", "peer_hints_stored", "Hints stored for the peer.", |x, _| x.hints_stored.load(Relaxed)),
    pc("hints_replayed", "peer_hints_replayed", "Hints replayed to the peer.", |x, _| x.hints_replayed.load(Relaxed)),
    pc("hints_dropped", "peer_hints_dropped", "Hints dropped (bounds, or slots the peer no longer owns).", |x, _| {
        x.hints_dropped.load(Relaxed)
    }),
    pc(
        "hints_expired",
        "peer_hints_expired",
        "Hints not replayed because their write outlived the tombstone grace.",
        |x, _| x.hints_expired.load(Relaxed),
    ),
    pc("ops_sent", "peer_replicated_ops", "Replicated writes sent to the peer.", |x, _| x.ops_sent.load(Relaxed)),
    pc("calls_sent", "peer_calls", "Requests other than replicated writes sent to the peer.", |x, _| {
        x.calls_sent.load(Relaxed)
    }),
    pc("connects", "peer_connects", "Connections made to the peer.", |x, _| x.connects.load(Relaxed)),
];

/// Writes INFO `section`'s numbers from the table as `field:value` lines.
pub fn info_rows(s: &Shared, section: &str, now_ms: u64, kv: &mut dyn FnMut(&str, &dyn std::fmt::Display)) {
    for st in STATS.iter().filter(|st| st.section == section && !st.info.is_empty()) {
        kv(st.info, &(st.read)(s));
    }
    if section == "replication" {
        for (i, l) in s.links.all().iter().enumerate() {
            let mut line = format!("name={},state={}", l.name, if l.connected() { "up" } else { "down" });
            for st in PEER_STATS.iter().filter(|st| st.info != "connected") {
                let _ = write!(line, ",{}={}", st.info, (st.read)(&l.stats, now_ms));
            }
            kv(&format!("peer{i}"), &line);
        }
    }
}

/// Reads a node's counters at scrape time.
#[derive(Debug)]
struct NodeCollector {
    shared: Arc<Shared>,
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s: &Shared = &self.shared;
        let m = &s.metrics;
        {
            let mut family = e.encode_descriptor(
                "ringcache_commands",
                "Commands executed, by command and result (ok, error, rejected before running).",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (spec, c) in COMMANDS.iter().zip(m.commands.iter()) {
                let (calls, failed, rejected) =
                    (c.calls.load(Relaxed), c.failed.load(Relaxed), c.rejected.load(Relaxed));
                for (result, v) in [("ok", calls - failed.min(calls)), ("error", failed), ("rejected", rejected)] {
                    if v > 0 {
                        let labels = [("command", spec.name), ("result", result)];
                        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        for st in STATS {
            let name = format!("ringcache_{}", st.prom);
            let v = (st.read)(s);
            match st.kind {
                Type::Counter => counter(&mut e, &name, st.help, v)?,
                Type::Gauge => gauge(&mut e, &name, st.help, v as i64)?,
            }
        }
        let links = s.links.all();
        let now = crate::process::unix_ms();
        for st in PEER_STATS {
            let kind = match st.kind {
                Type::Counter => prometheus_client::metrics::MetricType::Counter,
                Type::Gauge => prometheus_client::metrics::MetricType::Gauge,
            };
            let name = format!("ringcache_{}", st.prom);
            let mut family = e.encode_descriptor(&name, st.help, None, kind)?;
            for l in &links {
                let labels = [("peer", &*l.name)];
                let v = (st.read)(&l.stats, now);
                match st.kind {
                    Type::Counter => ConstCounter::new(v).encode(family.encode_family(&labels)?)?,
                    Type::Gauge => ConstGauge::new(v as i64).encode(family.encode_family(&labels)?)?,
                }
            }
        }
        Ok(())
    }
}

/// The text of `/metrics`.
pub fn render(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector { shared: shared.clone() }));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One name per number in each place, and names Prometheus accepts.
    #[test]
    fn every_number_has_one_name_in_each_place() {
        let mut prom = std::collections::HashSet::new();
        let mut info = std::collections::HashSet::new();
        for st in STATS {
            assert!(prom.insert(st.prom), "metric {} twice", st.prom);
            assert!(st.info.is_empty() || info.insert(st.info), "INFO field {} twice", st.info);
            assert!(st.prom.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", st.prom);
            assert!(!st.help.is_empty());
        }
        for st in PEER_STATS {
            assert!(prom.insert(st.prom), "metric {} twice", st.prom);
            assert!(st.prom.starts_with("peer_"));
        }
    }
}
