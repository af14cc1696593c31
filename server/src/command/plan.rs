//! Where a request runs in a cluster (DESIGN §6: any node accepts any key).
//!
//! [`plan`] is pure: from the command, its keys and the topology it says
//! whether the request runs here, goes to one other member (the primary of
//! every key it names), is split by primary and gathered, or is a
//! cluster-wide command every member answers for its own primary slots.
//! `net::exec` carries the plan out.

use ringcache_protocol::{Args, key_slot};

use super::{CmdError, Spec};
use crate::cluster::topology::Topology;

/// How the answers of a split or cluster-wide command become one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Integers added (DEL, UNLINK, EXISTS, TOUCH, DBSIZE).
    Sum,
    /// Every part answered OK (MSET, FLUSHALL).
    AllOk,
    /// Arrays concatenated (KEYS).
    Concat,
    /// MGET: each part's values go back to their keys' positions.
    Mget,
    /// SCAN step on member `member` of `members`: its cursor is rewritten
    /// to point into the cluster-wide cursor space.
    Scan { member: u16, members: u16 },
}

/// One member's part of a split command: the argument positions of its
/// keys (each key followed by its value for MSET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub member: u16,
    pub keys: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Local,
    Forward(u16),
    Split { combine: Combine, parts: Vec<Part>, step: usize },
    Broadcast(Combine),
    Scan { member: u16, cursor: u64 },
    Refuse(CmdError),
}

/// Bits of a cluster SCAN cursor below the member index.
pub const SCAN_MEMBER_SHIFT: u32 = 56;

fn splittable(name: &str) -> Option<Combine> {
    match name {
        "mget" => Some(Combine::Mget),
        "mset" => Some(Combine::AllOk),
        "del" | "unlink" | "exists" | "touch" => Some(Combine::Sum),
        _ => None,
    }
}

/// Plans `args` (already known to be a well-formed call of `spec`).
/// `readonly`: the connection sent READONLY. `peer`: the request came from
/// another member, which routed it here already.
pub fn plan(spec: &Spec, args: Args<'_>, t: &Topology, readonly: bool, peer: bool) -> Plan {
    if t.nodes.len() < 2 {
        return Plan::Local;
    }
    if spec.first_key <= 0 {
        if peer {
            return Plan::Local;
        }
        return match spec.name {
            "dbsize" => Plan::Broadcast(Combine::Sum),
            "keys" => Plan::Broadcast(Combine::Concat),
            "flushall" | "flushdb" => Plan::Broadcast(Combine::AllOk),
            "scan" => match std::str::from_utf8(args.get(1)).ok().and_then(|s| s.parse::<u64>().ok()) {
                Some(c) => {
                    Plan::Scan { member: (c >> SCAN_MEMBER_SHIFT) as u16, cursor: c & ((1 << SCAN_MEMBER_SHIFT) - 1) }
                }
                // Let the command give its own error.
                None => Plan::Local,
            },
            _ => Plan::Local,
        };
    }
    let argc = args.len();
    let last =
        if spec.last_key < 0 { (argc as i32 + spec.last_key) as usize } else { (spec.last_key as usize).min(argc - 1) };
    let step = spec.step.max(1) as usize;
    if !(argc - spec.first_key as usize).is_multiple_of(step) {
        // MSET with a key and no value: the command answers the error.
        return Plan::Local;
    }
    // Argument positions of the keys (no allocation: most requests have one).
    let keys = (spec.first_key as usize..=last).step_by(step);
    let primary = |i: usize| t.table.owners(key_slot(args.get(i)))[0];
    let first = primary(spec.first_key as usize);
    let one_primary = keys.clone().skip(1).all(|i| primary(i) == first);
    if one_primary && first == t.me {
        return Plan::Local;
    }
    if readonly
        && spec.has_flag("readonly")
        && keys.clone().all(|i| t.table.owners(key_slot(args.get(i))).contains(&t.me))
    {
        return Plan::Local;
    }
    if peer {
        return Plan::Refuse(CmdError::msg("TRYAGAIN this node is not the primary of the keys any more"));
    }
    if one_primary {
        return Plan::Forward(first);
    }
    let Some(combine) = splittable(spec.name) else {
        return Plan::Refuse(CmdError::msg("CROSSSLOT Keys in request don't hash to the same slot"));
    };
    let mut parts: Vec<Part> = Vec::new();
    for i in keys {
        let m = primary(i);
        match parts.iter_mut().find(|p| p.member == m) {
            Some(p) => p.keys.push(i),
            None => parts.push(Part { member: m, keys: vec![i] }),
        }
    }
    Plan::Split { combine, parts, step }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::NodeInfo;
    use crate::command::{COMMANDS, lookup};

    fn topo(n: usize, me: usize) -> Topology {
        let nodes: Vec<NodeInfo> = (0..n)
            .map(|i| NodeInfo::new(&format!("n{i}"), format!("127.0.0.1:{}", 7000 + i).parse().unwrap(), 1, 1))
            .collect();
        Topology::new(1, nodes, &format!("n{me}"), 3, 64)
    }

    fn plan_of(t: &Topology, args: &[&[u8]], readonly: bool, peer: bool) -> Plan {
        let spec = &COMMANDS[lookup(args[0]).unwrap()];
        plan(spec, Args::from_slices(args), t, readonly, peer)
    }

    /// A key whose slot has member `m` as primary.
    fn key_of(t: &Topology, m: u16) -> Vec<u8> {
        (0..).map(|i| format!("k{i}").into_bytes()).find(|k| t.table.owners(key_slot(k))[0] == m).unwrap()
    }

    #[test]
    fn single_node_runs_everything_here() {
        let t = topo(1, 0);
        assert_eq!(plan_of(&t, &[b"get", b"x"], false, false), Plan::Local);
        assert_eq!(plan_of(&t, &[b"dbsize"], false, false), Plan::Local);
    }

    #[test]
    fn keys_go_to_their_primary() {
        let t = topo(3, 0);
        let (mine, theirs) = (key_of(&t, 0), key_of(&t, 1));
        assert_eq!(plan_of(&t, &[b"set", &mine, b"v"], false, false), Plan::Local);
        assert_eq!(plan_of(&t, &[b"set", &theirs, b"v"], false, false), Plan::Forward(1));
        // A peer already routed it: never forwarded twice.
        assert!(matches!(plan_of(&t, &[b"set", &theirs, b"v"], false, true), Plan::Refuse(_)));
        // READONLY reads of an owned slot stay here; writes do not.
        let owned = (0..)
            .map(|i| format!("r{i}").into_bytes())
            .find(|k| {
                let o = t.table.owners(key_slot(k));
                o[0] != 0 && o.contains(&0)
            })
            .unwrap();
        assert_eq!(plan_of(&t, &[b"get", &owned], true, false), Plan::Local);
        assert!(matches!(plan_of(&t, &[b"set", &owned, b"v"], true, false), Plan::Forward(_)));
    }

    #[test]
    fn multi_key_commands_split_by_primary() {
        let t = topo(3, 0);
        let (a, b, c) = (key_of(&t, 0), key_of(&t, 1), key_of(&t, 2));
        match plan_of(&t, &[b"mget", &a, &b, &c, &b], false, false) {
            Plan::Split { combine: Combine::Mget, parts, step: 1 } => {
                assert_eq!(parts.len(), 3);
                assert_eq!(parts.iter().find(|p| p.member == 1).unwrap().keys, vec![2, 4]);
            }
            p => panic!("{p:?}"),
        }
        match plan_of(&t, &[b"mset", &a, b"1", &b, b"2"], false, false) {
            Plan::Split { combine: Combine::AllOk, parts, step: 2 } => {
                assert_eq!(parts.iter().map(|p| p.keys.clone()).collect::<Vec<_>>(), vec![vec![1], vec![3]]);
            }
            p => panic!("{p:?}"),
        }
        assert!(matches!(plan_of(&t, &[b"msetnx", &a, b"1", &b, b"2"], false, false), Plan::Refuse(_)));
        // A key without its value is the command's error to give, here.
        assert_eq!(plan_of(&t, &[b"mset", &a, b"1", &b], false, false), Plan::Local);
        assert!(matches!(plan_of(&t, &[b"rename", &b, &c], false, false), Plan::Refuse(_)));
    }

    #[test]
    fn keyless_commands_span_the_cluster() {
        let t = topo(3, 0);
        assert_eq!(plan_of(&t, &[b"dbsize"], false, false), Plan::Broadcast(Combine::Sum));
        assert_eq!(plan_of(&t, &[b"dbsize"], false, true), Plan::Local);
        assert_eq!(plan_of(&t, &[b"ping"], false, false), Plan::Local);
        let c = (2u64 << SCAN_MEMBER_SHIFT) | 77;
        assert_eq!(
            plan_of(&t, &[b"scan", c.to_string().as_bytes()], false, false),
            Plan::Scan { member: 2, cursor: 77 }
        );
        assert_eq!(plan_of(&t, &[b"scan", b"x"], false, false), Plan::Local);
    }
}
