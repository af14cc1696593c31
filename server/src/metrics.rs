//! Prometheus exposition of the node's counters, through the
//! `prometheus-client` crate's encoder. The counters themselves are plain
//! atomics updated on the request path; a [`Collector`] reads them only when
//! `/metrics` is scraped, so scraping costs the request path nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::command::COMMANDS;
use crate::shared::Shared;

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
        counter(&mut e, "ringcache_keyspace_hits", "Key lookups that found a key.", m.keyspace_hits.load(Relaxed))?;
        counter(
            &mut e,
            "ringcache_keyspace_misses",
            "Key lookups that found nothing.",
            m.keyspace_misses.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_expired_keys",
            "Keys deleted because their TTL passed.",
            s.store.stats.expired_keys.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_evicted_keys",
            "Keys evicted to stay under maxmemory.",
            s.store.stats.evicted_keys.load(Relaxed),
        )?;
        gauge(&mut e, "ringcache_keys", "Keys held by this node.", s.store.len() as i64)?;
        gauge(
            &mut e,
            "ringcache_keys_with_expiry",
            "Keys with a TTL held by this node.",
            s.store.volatile_len() as i64,
        )?;
        gauge(
            &mut e,
            "ringcache_used_memory_bytes",
            "Bytes used by keys, values and tables (the maxmemory measure).",
            s.store.used_memory() as i64,
        )?;
        gauge(&mut e, "ringcache_maxmemory_bytes", "Configured maxmemory (0 = no limit).", s.store.maxmemory() as i64)?;
        gauge(
            &mut e,
            "ringcache_resident_memory_bytes",
            "Resident set size of the process.",
            crate::process::rss_bytes() as i64,
        )?;
        gauge(&mut e, "ringcache_connected_clients", "Client connections open now.", s.clients.connected() as i64)?;
        counter(
            &mut e,
            "ringcache_connections_received",
            "Client connections accepted.",
            m.connections_received.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_connections_rejected",
            "Client connections refused at maxclients.",
            m.connections_rejected.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_protocol_errors",
            "Connections closed for malformed input or a full query buffer.",
            m.protocol_errors.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_unknown_commands",
            "Requests naming no known command.",
            m.unknown_commands.load(Relaxed),
        )?;
        counter(&mut e, "ringcache_net_input_bytes", "Bytes read from clients.", m.net_input_bytes.load(Relaxed))?;
        counter(&mut e, "ringcache_net_output_bytes", "Bytes written to clients.", m.net_output_bytes.load(Relaxed))?;
        counter(
            &mut e,
            "ringcache_gossip_rejected_packets",
            "Gossip packets dropped: other cluster, wrong or missing secret, garbage.",
            m.gossip_rejected.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_gossip_errors",
            "Authenticated gossip packets the protocol could not use.",
            m.gossip_errors.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_topology_changes",
            "Membership changes that produced a new slot table.",
            m.topology_changes.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_forwarded_requests",
            "Requests sent to another member to run (forwarded, or parts of a split command).",
            m.forwarded.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_forwards_expired",
            "Forwarded requests that arrived after their sender's deadline and were not run.",
            m.forwards_expired.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_quorum_failures",
            "Writes refused for lack of reachable owners or not acknowledged by the write quorum in time.",
            m.quorum_failures.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_read_repairs",
            "Owners sent the newest state of a key after a quorum read found them stale.",
            m.read_repairs.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_gossip_members_refused",
            "Gossip packets refused for an invalid member record (weight, name, address).",
            m.gossip_members_refused.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_gossip_name_conflicts",
            "Times two live members were seen using one node name.",
            m.gossip_name_conflicts.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_versions_refused",
            "Replicated states refused: their version was too far ahead of this node's clock.",
            m.versions_refused.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_clients_denied",
            "Client connections refused by protected mode (no password, not loopback).",
            m.clients_denied.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_admin_unauthorized",
            "Admin HTTP requests refused for a missing or wrong bearer token.",
            m.admin_unauthorized.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_tls_handshake_failures",
            "TLS client connections whose handshake failed or timed out.",
            m.tls_handshake_failures.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_peer_rejected_connections",
            "Peer TCP connections refused (failed handshake, strangers).",
            m.peer_rejected.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_replicated_applied",
            "Replicated key states applied (newer than what this node held).",
            s.store.stats.applied.load(Relaxed),
        )?;
        counter(
            &mut e,
            "ringcache_replicated_stale",
            "Replicated key states ignored (this node held a newer version).",
            s.store.stats.stale.load(Relaxed),
        )?;
        let r = &s.rebalance;
        gauge(
            &mut e,
            "ringcache_rebalance_slots_pending",
            "Slot copies waiting to start.",
            r.slots_pending.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "ringcache_rebalance_slots_in_flight",
            "Slot copies sent and not yet confirmed.",
            r.slots_in_flight.load(Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "ringcache_rebalance_slots_importing",
            "Slots this node is still receiving.",
            r.importing() as i64,
        )?;
        for (name, help, v) in [
            ("ringcache_rebalance_slots_sent", "Slot copies sent and confirmed.", &r.slots_sent),
            ("ringcache_rebalance_slots_received", "Slot copies received completely.", &r.slots_received),
            (
                "ringcache_rebalance_slots_dropped",
                "Slots deleted here after their new owners confirmed them.",
                &r.slots_dropped,
            ),
            ("ringcache_rebalance_keys_moved", "Keys sent in slot copies.", &r.keys_moved),
            ("ringcache_rebalance_bytes_moved", "Bytes sent in slot copies.", &r.bytes_moved),
            ("ringcache_rebalance_transfer_errors", "Slot copies that failed and were retried.", &r.transfer_errors),
            (
                "ringcache_rebalance_read_through",
                "Reads of importing slots answered by the previous owner.",
                &r.read_through,
            ),
            (
                "ringcache_rebalance_slots_handed_off",
                "Slots held here without being owned, handed to their primary by anti-entropy and deleted.",
                &r.slots_handed_off,
            ),
            (
                "ringcache_rebalance_settle_fetches",
                "Writes to slots whose owners changed that fetched their key from the co-owners first.",
                &r.settle_fetches,
            ),
        ] {
            counter(&mut e, name, help, v.load(Relaxed))?;
        }
        gauge(
            &mut e,
            "ringcache_rebalance_slots_unsettled",
            "Slots whose owners changed and that anti-entropy has not compared since.",
            r.unsettled() as i64,
        )?;
        gauge(
            &mut e,
            "ringcache_tombstones",
            "Deleted keys remembered for the grace period.",
            s.store.tombstones() as i64,
        )?;
        let links = s.links.all();
        type Field = fn(&crate::net::link::LinkStats) -> u64;
        let per_peer: [(&str, &str, bool, Field); 8] = [
            ("ringcache_peer_connected", "1 if the link to the peer is up.", false, |x| {
                x.connected.load(Relaxed) as u64
            }),
            (
                "ringcache_peer_inflight",
                "Requests sent to the peer and not yet answered (replication queue depth).",
                false,
                |x| x.inflight.load(Relaxed),
            ),
            ("ringcache_peer_hints", "Replicated writes kept for the peer until it is reachable.", false, |x| {
                x.hints.load(Relaxed)
            }),
            ("ringcache_peer_hint_bytes", "Bytes of hints kept for the peer.", false, |x| x.hint_bytes.load(Relaxed)),
            ("ringcache_peer_hints_stored", "Hints stored for the peer.", true, |x| x.hints_stored.load(Relaxed)),
            ("ringcache_peer_hints_replayed", "Hints replayed to the peer.", true, |x| x.hints_replayed.load(Relaxed)),
            ("ringcache_peer_hints_dropped", "Hints dropped (bounds, or slots the peer no longer owns).", true, |x| {
                x.hints_dropped.load(Relaxed)
            }),
            ("ringcache_peer_replicated_ops", "Replicated writes sent to the peer.", true, |x| {
                x.ops_sent.load(Relaxed)
            }),
        ];
        for (name, help, is_counter, f) in per_peer {
            let kind = if is_counter {
                prometheus_client::metrics::MetricType::Counter
            } else {
                prometheus_client::metrics::MetricType::Gauge
            };
            let mut family = e.encode_descriptor(name, help, None, kind)?;
            for l in &links {
                let labels = [("peer", &*l.name)];
                if is_counter {
                    ConstCounter::new(f(&l.stats)).encode(family.encode_family(&labels)?)?;
                } else {
                    ConstGauge::new(f(&l.stats) as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let now = crate::net::unix_ms();
        let mut family = e.encode_descriptor(
            "ringcache_peer_lag_ms",
            "Age of the oldest unanswered request to the peer (replication lag).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for l in &links {
            let oldest = l.stats.oldest_ms.load(Relaxed);
            let lag = if oldest == 0 { 0 } else { now.saturating_sub(oldest) };
            ConstGauge::new(lag as i64).encode(family.encode_family(&[("peer", &*l.name)])?)?;
        }
        let t = s.topology();
        gauge(
            &mut e,
            "ringcache_cluster_members",
            "Members in this node's slot table (itself included).",
            t.nodes.len() as i64,
        )?;
        gauge(&mut e, "ringcache_cluster_epoch", "Epoch of this node's slot table.", t.table.epoch as i64)?;
        let uptime = crate::net::unix_ms().saturating_sub(s.started_ms) / 1000;
        gauge(&mut e, "ringcache_uptime_seconds", "Seconds since the node started.", uptime as i64)?;
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
