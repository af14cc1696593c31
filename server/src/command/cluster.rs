//! Redis Cluster views from the slot table: CLUSTER SLOTS, SHARDS, NODES,
//! INFO, MYID, KEYSLOT, COUNTKEYSINSLOT, GETKEYSINSLOT, and READONLY /
//! READWRITE. Cluster-aware clients (redis-py `RedisCluster`, redis-rs's
//! cluster client, `redis-cli -c`) read them to route each key to its
//! slot's primary. Commands that would let an operator move slots by hand
//! are refused: ringcache places slots itself.

use std::fmt::Write as _;
use std::net::SocketAddr;

use ringcache_protocol::{Args, SLOT_COUNT, key_slot};

use super::connection::help;
use super::{CmdError, CmdResult, Ctx, Reply, arg_i64, eq_ic, sub_name};
use crate::cluster::topology::{NodeInfo, Topology};

/// The address to show for a member: for this node, the address the client
/// reached it on (right even when bound to 0.0.0.0); for others, their own.
fn shown_addr(ctx: &Ctx<'_>, t: &Topology, m: u16) -> SocketAddr {
    let node = &t.nodes[usize::from(m)];
    if m == t.me { SocketAddr::new(ctx.conn.info.laddr.ip(), node.client_addr.port()) } else { node.client_addr }
}

fn write_node(out: &mut Reply<'_>, addr: SocketAddr, node: &NodeInfo) {
    out.array(4);
    out.bulk(addr.ip().to_string().as_bytes());
    out.int(i64::from(addr.port()));
    out.bulk(node.id.as_bytes());
    out.map(0); // hostname and other networking metadata: none
}

fn slots(ctx: &mut Ctx<'_>) {
    let t = ctx.shared.topology();
    let ranges = t.table.ranges();
    ctx.out.array(ranges.len());
    for (start, end, owners) in ranges {
        ctx.out.array(2 + owners.len());
        ctx.out.int(i64::from(start));
        ctx.out.int(i64::from(end));
        for &m in owners {
            let addr = shown_addr(ctx, &t, m);
            write_node(&mut ctx.out, addr, &t.nodes[usize::from(m)]);
        }
    }
}

fn shards(ctx: &mut Ctx<'_>) {
    let t = ctx.shared.topology();
    let shards: Vec<(u16, Vec<(u16, u16)>)> =
        (0..t.nodes.len() as u16).map(|m| (m, t.primary_ranges(m))).filter(|(_, r)| !r.is_empty()).collect();
    ctx.out.array(shards.len());
    for (m, ranges) in shards {
        let node = &t.nodes[usize::from(m)];
        let addr = shown_addr(ctx, &t, m);
        ctx.out.map(2);
        ctx.out.bulk(b"slots");
        ctx.out.array(ranges.len() * 2);
        for (a, b) in ranges {
            ctx.out.int(i64::from(a));
            ctx.out.int(i64::from(b));
        }
        ctx.out.bulk(b"nodes");
        ctx.out.array(1);
        ctx.out.map(7);
        ctx.out.bulk(b"id");
        ctx.out.bulk(node.id.as_bytes());
        ctx.out.bulk(b"port");
        ctx.out.int(i64::from(addr.port()));
        ctx.out.bulk(b"ip");
        ctx.out.bulk(addr.ip().to_string().as_bytes());
        ctx.out.bulk(b"endpoint");
        ctx.out.bulk(addr.ip().to_string().as_bytes());
        ctx.out.bulk(b"role");
        ctx.out.bulk(b"master");
        ctx.out.bulk(b"replication-offset");
        ctx.out.int(0);
        ctx.out.bulk(b"health");
        ctx.out.bulk(b"online");
    }
}

fn nodes_text(ctx: &Ctx<'_>, t: &Topology) -> String {
    let mut text = String::new();
    for (m, node) in t.nodes.iter().enumerate() {
        let m = m as u16;
        let addr = shown_addr(ctx, t, m);
        let flags = if m == t.me { "myself,master" } else { "master" };
        let _ = write!(text, "{} {}@{} {flags} - 0 0 {} connected", node.id, addr, node.cluster_port, t.table.epoch);
        for (a, b) in t.primary_ranges(m) {
            if a == b {
                let _ = write!(text, " {a}");
            } else {
                let _ = write!(text, " {a}-{b}");
            }
        }
        text.push('\n');
    }
    text
}

/// Redis's answer to cluster commands on a standalone server (a node with
/// no cluster secret).
const DISABLED: &str = "ERR This instance has cluster support disabled";

/// `down`: keys are refused (started with seeds, none answered yet; or
/// on the minority side of a partition): `cluster_state:fail`.
fn info_text(t: &Topology, down: bool, join_state: &str) -> String {
    let assigned = if t.table.replicas() > 0 { SLOT_COUNT } else { 0 };
    let size = (0..t.nodes.len() as u16).filter(|&m| !t.primary_ranges(m).is_empty()).count();
    format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{assigned}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:{}\r\ncluster_size:{size}\r\n\
         cluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\ncluster_stats_messages_sent:0\r\n\
         cluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n\
         cluster_join_state:{join_state}\r\n",
        if assigned == SLOT_COUNT && !down { "ok" } else { "fail" },
        t.nodes.len(),
        t.table.epoch,
        t.table.epoch,
    )
}

fn slot_arg(a: &[u8]) -> Result<u16, CmdError> {
    let n = arg_i64(a).map_err(|_| CmdError::msg("ERR Invalid slot"))?;
    u16::try_from(n).ok().filter(|s| *s < SLOT_COUNT).ok_or_else(|| CmdError::msg("ERR Invalid slot"))
}

const CLUSTER_HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "SLOTS | SHARDS | NODES",
    "    The slot table: ranges with their owners (primary first), shards, node lines.",
    "INFO | MYID",
    "    Cluster state / this node's id.",
    "KEYSLOT <key> | COUNTKEYSINSLOT <slot> | GETKEYSINSLOT <slot> <count>",
    "    Slot of a key; keys held here in a slot.",
    "ringcache places slots itself: MEET, ADDSLOTS, SETSLOT, FAILOVER and the like are refused.",
];

pub fn cluster(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    let sub = args.get(1);
    let n = args.len();
    let arity =
        |want: usize| -> CmdResult { if n == want { Ok(()) } else { Err(CmdError::Arity(sub_name("cluster", sub))) } };
    if !ctx.shared.config.clustered() && !eq_ic(sub, "HELP") {
        return Err(CmdError::msg(DISABLED));
    }
    if eq_ic(sub, "SLOTS") {
        arity(2)?;
        slots(ctx);
    } else if eq_ic(sub, "SHARDS") {
        arity(2)?;
        shards(ctx);
    } else if eq_ic(sub, "NODES") {
        arity(2)?;
        let t = ctx.shared.topology();
        let text = nodes_text(ctx, &t);
        ctx.out.verbatim(text.as_bytes());
    } else if eq_ic(sub, "INFO") {
        arity(2)?;
        let text = info_text(
            &ctx.shared.topology(),
            ctx.shared.lifecycle.phase() == crate::cluster::lifecycle::Phase::AwaitingSeed
                || ctx.shared.minority().is_some(),
            ctx.shared.join_state(),
        );
        ctx.out.verbatim(text.as_bytes());
    } else if eq_ic(sub, "MYID") {
        arity(2)?;
        let t = ctx.shared.topology();
        ctx.out.bulk(t.myself().id.as_bytes());
    } else if eq_ic(sub, "KEYSLOT") {
        arity(3)?;
        ctx.out.int(i64::from(key_slot(args.get(2))));
    } else if eq_ic(sub, "COUNTKEYSINSLOT") {
        arity(3)?;
        let slot = slot_arg(args.get(2))?;
        ctx.out.int(ctx.shared.store.count_keys_in_slot(slot) as i64);
    } else if eq_ic(sub, "GETKEYSINSLOT") {
        arity(4)?;
        let slot = slot_arg(args.get(2))?;
        let count =
            arg_i64(args.get(3)).ok().filter(|c| *c >= 0).ok_or_else(|| CmdError::msg("ERR Invalid number of keys"))?;
        let keys = ctx.shared.store.keys_in_slot(slot, usize::try_from(count).unwrap_or(usize::MAX), ctx.now_ms);
        ctx.out.array(keys.len());
        for k in &keys {
            ctx.out.bulk(k);
        }
    } else if eq_ic(sub, "HELP") {
        help(ctx, CLUSTER_HELP);
    } else if [
        "MEET",
        "FORGET",
        "ADDSLOTS",
        "ADDSLOTSRANGE",
        "DELSLOTS",
        "DELSLOTSRANGE",
        "SETSLOT",
        "FAILOVER",
        "REPLICATE",
        "RESET",
        "FLUSHSLOTS",
        "SET-CONFIG-EPOCH",
        "BUMPEPOCH",
        "SAVECONFIG",
    ]
    .iter()
    .any(|s| eq_ic(sub, s))
    {
        return Err(CmdError::msg(format!(
            "ERR CLUSTER {} is not supported: ringcache places slots itself",
            String::from_utf8_lossy(sub).to_ascii_uppercase()
        )));
    } else {
        return Err(CmdError::UnknownSubcommand(String::from_utf8_lossy(sub).into_owned(), "CLUSTER"));
    }
    Ok(())
}

/// READONLY / READWRITE: after READONLY, read commands for slots this node
/// owns (as primary or replica) are answered here, as a Redis Cluster
/// replica does; other requests are routed as usual.
pub fn readonly(ctx: &mut Ctx<'_>, args: Args<'_>) -> CmdResult {
    if !ctx.shared.config.clustered() {
        return Err(CmdError::msg(DISABLED));
    }
    ctx.conn.readonly = args.get(0).eq_ignore_ascii_case(b"READONLY");
    ctx.out.ok();
    Ok(())
}
