//! Where requests go: the slot map learned from `CLUSTER SLOTS`, the key
//! a raw command is routed by, and which commands only read.

use std::net::SocketAddr;

use ringcache_protocol::{Frame, SLOT_COUNT, key_slot};

/// Where each slot's owners are.
pub(crate) struct Routing {
    /// Grows with every refresh: a task that saw an older map knows someone
    /// refreshed since and need not ask the cluster again.
    pub(crate) version: u64,
    /// The node the map came from, and its epoch (`cluster_current_epoch`)
    /// read just before the map, if it told it. Epochs are counted by each
    /// node for itself, so only that node's epoch is compared with it.
    pub(crate) source: Option<SocketAddr>,
    pub(crate) epoch: Option<u64>,
    /// Each slot's shard (index into `shards`; `NO_SHARD` if uncovered):
    /// 32 KiB, so lookups stay in cache.
    pub(crate) slot_shard: Vec<u16>,
    pub(crate) shards: Vec<Shard>,
    pub(crate) nodes: Vec<SocketAddr>,
}

pub(crate) const NO_SHARD: u16 = u16::MAX;

/// The owners of a slot range, as indices into `Routing::nodes`.
pub(crate) struct Shard {
    pub(crate) primary: usize,
    /// The other owners (replicas), as CLUSTER SLOTS lists them.
    pub(crate) replicas: Vec<usize>,
}

impl Routing {
    pub(crate) fn shard(&self, key: &[u8]) -> Option<&Shard> {
        self.shards.get(usize::from(*self.slot_shard.get(usize::from(key_slot(key)))?))
    }
}

/// Commands that only read, which [`ReadFrom`] may send to a replica.
pub(crate) fn read_only(name: &[u8]) -> bool {
    const READS: &[&str] =
        &["GET", "MGET", "EXISTS", "TTL", "PTTL", "STRLEN", "GETRANGE", "TYPE", "EXPIRETIME", "PEXPIRETIME"];
    READS.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// The key a raw command is routed by (its first key), if it has one.
pub(crate) fn routing_key<A: AsRef<[u8]>>(args: &[A]) -> Option<&[u8]> {
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

/// The text of a bulk or verbatim reply (RESP2 / RESP3 forms of one text).
pub(crate) fn text(frame: &Frame) -> Option<&[u8]> {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b),
        Frame::Verbatim { text, .. } => Some(text),
        _ => None,
    }
}

/// `cluster_current_epoch` out of a CLUSTER INFO reply.
pub(crate) fn info_epoch(frame: &Frame) -> Option<u64> {
    let t = std::str::from_utf8(text(frame)?).ok()?;
    t.lines().find_map(|l| l.strip_prefix("cluster_current_epoch:")).and_then(|v| v.trim().parse().ok())
}

/// CLUSTER SLOTS → primaries by slot. Node entries are `[ip, port, ...]`.
/// A CLUSTER SLOTS node entry: `[ip, port, id, ...]`.
pub(crate) fn node_addr(node: &Frame) -> Option<SocketAddr> {
    let Frame::Array(node) = node else { return None };
    let (Some(ip), Some(Frame::Integer(port))) = (node.first().and_then(Frame::as_bytes), node.get(1)) else {
        return None;
    };
    format!("{}:{port}", String::from_utf8_lossy(ip)).parse::<SocketAddr>().ok()
}

pub(crate) fn parse_slots(ranges: &[Frame], via: SocketAddr, version: u64) -> Routing {
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
