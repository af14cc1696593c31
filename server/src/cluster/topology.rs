//! What this node knows of the cluster: the slot table plus, for every
//! member, the addresses and the node id that Redis Cluster views show.
//! Pure data; the membership layer builds a new one on every change and the
//! node swaps it in whole.

use std::net::SocketAddr;

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use super::ring::{Member, SlotTable};

/// A member's addresses and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node name.
    pub name: String,
    /// 40 hex characters, derived from the name: every node computes the same
    /// id for a member, and a node restarted under its name keeps its id.
    pub id: String,
    /// Where clients reach it.
    pub client_addr: SocketAddr,
    /// Its cluster port (gossip and peer links), on the client address's host.
    pub cluster_port: u16,
    /// Its weight (share of the ring).
    pub weight: u32,
    /// The member's gossip generation: a restarted process (empty, as data
    /// lives in memory only) comes back under a higher one, so a table
    /// naming it is a different table even though placement is the same.
    pub generation: u64,
}

impl NodeInfo {
    /// A member of generation 0 with the id its name gives.
    pub fn new(name: &str, client_addr: SocketAddr, cluster_port: u16, weight: u32) -> Self {
        NodeInfo { name: name.to_string(), id: node_id(name), client_addr, cluster_port, weight, generation: 0 }
    }
}

/// The Redis Cluster node id (40 hex characters) of a member name.
pub fn node_id(name: &str) -> String {
    // xxh3_64 equals the low half of xxh3_128, so the tail hashes a
    // different input to add bits rather than repeat them.
    let tail = xxh3_64(format!("{name}#node-id").as_bytes()) as u32;
    format!("{:032x}{tail:08x}", xxh3_128(name.as_bytes()))
}

/// The version node id (the low `bits` of every write version this node
/// makes) of member `me` among `names`: distinct for every member of one
/// table. Members take the hash of their name in name order; one whose
/// id is taken probes the next hashes of its name. (Hashing alone
/// collided in ~4.5 % of 20-node clusters, and two owners with equal
/// versions of different values never converge.) Ids only have to be
/// distinct while writes are made, so one may change with the table.
pub fn version_node_id<'a>(names: impl IntoIterator<Item = &'a str>, me: &str, bits: u32) -> u64 {
    let mask = (1u64 << bits) - 1;
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let mut taken = std::collections::HashSet::new();
    let mut mine = xxh3_64(me.as_bytes()) & mask;
    for name in names {
        let mut id = xxh3_64(name.as_bytes()) & mask;
        let mut probe = 0u64;
        while taken.contains(&id) && (taken.len() as u64) <= mask {
            probe += 1;
            id = xxh3_64(format!("{name}#{probe}").as_bytes()) & mask;
        }
        taken.insert(id);
        if name == me {
            mine = id;
        }
    }
    mine
}

/// A digest of a member set (names, client addresses, weights and
/// generations), in name order. Generations count: a member restarted
/// before it was declared down holds nothing, and nodes must not take a
/// table naming its empty self for the one naming its old self (its slots
/// are sent to it again, `RC.SENDING` and `RC.FWD` compare tables).
fn digest_of(nodes: &[NodeInfo]) -> u64 {
    let mut text = String::new();
    for n in nodes {
        text.push_str(&n.name);
        text.push('|');
        text.push_str(&n.client_addr.to_string());
        text.push('|');
        text.push_str(&n.weight.to_string());
        text.push('|');
        text.push_str(&n.generation.to_string());
        text.push('\n');
    }
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// The slot table and the members it refers to.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Which members own each slot.
    pub table: SlotTable,
    /// Indexed like `table.members`.
    pub nodes: Vec<NodeInfo>,
    /// This node's index.
    pub me: u16,
    /// `membership::members_digest` of `nodes`, computed once.
    pub digest: u64,
}

impl Topology {
    /// A table of `names` (one vnode weight each, 3 replicas, 16 vnodes,
    /// made-up local addresses) seen from `me`, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(names: &[&str], me: &str) -> Topology {
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo::new(n, SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)), 17000 + i as u16, 1))
            .collect();
        Topology::new(1, nodes, me, 3, 16)
    }

    /// Builds the topology of `nodes` (this node among them, named `me`).
    pub fn new(epoch: u64, nodes: Vec<NodeInfo>, me: &str, replicas: usize, vnodes: u32) -> Topology {
        let members: Vec<Member> = nodes.iter().map(|n| Member { name: n.name.clone(), weight: n.weight }).collect();
        let table = SlotTable::compute(epoch, &members, replicas, vnodes);
        let mut nodes = nodes;
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let me = table.member_index(me).expect("this node is a member of its own topology");
        let digest = digest_of(&nodes);
        Topology { table, nodes, me, digest }
    }

    /// The same placement with each member's generation replaced by
    /// `generation(name)` (and the digest recomputed): what a renewed
    /// identity changes, without computing the table again.
    pub fn with_generations(&self, generation: impl Fn(&str) -> u64) -> Topology {
        let mut t = self.clone();
        for n in &mut t.nodes {
            n.generation = generation(&n.name);
        }
        t.digest = digest_of(&t.nodes);
        t
    }

    /// This topology once this node has handed its slots over (a graceful
    /// leave): the others' placement without it, with the members digest
    /// of their table without it, so requests it forwards are run by the
    /// owners of that table and it coordinates nothing (two coordinators
    /// of one key would each count from their own copy). It stays listed,
    /// owning nothing, so its own entry and index stay valid.
    pub fn handed_over(&self, replicas: usize, vnodes: u32) -> Topology {
        let table = self.table.without_member(self.me, replicas, vnodes);
        let others: Vec<NodeInfo> =
            self.nodes.iter().enumerate().filter(|&(i, _)| i != usize::from(self.me)).map(|(_, n)| n.clone()).collect();
        Topology { table, nodes: self.nodes.clone(), me: self.me, digest: digest_of(&others) }
    }

    /// The topology of these members but `name` (what the cluster looked
    /// like before `name` joined), seen from the first remaining member.
    /// `name` must not be the only member.
    pub fn without(&self, name: &str, replicas: usize, vnodes: u32) -> Topology {
        let nodes: Vec<NodeInfo> = self.nodes.iter().filter(|n| n.name != name).cloned().collect();
        let me = nodes[0].name.clone();
        Topology::new(self.table.epoch, nodes, &me, replicas, vnodes)
    }

    /// A cluster of one: this node owns every slot.
    pub fn single(node: NodeInfo, replicas: usize, vnodes: u32) -> Topology {
        let name = node.name.clone();
        Topology::new(1, vec![node], &name, replicas, vnodes)
    }

    /// This node's own entry.
    pub fn myself(&self) -> &NodeInfo {
        &self.nodes[usize::from(self.me)]
    }

    /// Slot ranges where member `m` is the primary, merged.
    pub fn primary_ranges(&self, m: u16) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (start, end, owners) in self.table.ranges() {
            if owners.first() != Some(&m) {
                continue;
            }
            match out.last_mut() {
                Some((_, e)) if *e + 1 == start => *e = end,
                _ => out.push((start, end)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_node_ids_are_distinct_within_a_table() {
        for n in [2usize, 20, 200, 2000] {
            let names: Vec<String> = (0..n).map(|i| format!("node-{i}:6379")).collect();
            let ids: std::collections::HashSet<u64> =
                names.iter().map(|me| version_node_id(names.iter().map(String::as_str), me, 12)).collect();
            assert_eq!(ids.len(), n, "{n} members");
            assert!(ids.iter().all(|&id| id < 4096));
        }
        // Alone, a node's id is the hash of its name, as before it met anyone.
        assert_eq!(version_node_id(["a"], "a", 12), xxh3_64(b"a") & 4095);
    }

    #[test]
    fn a_handed_over_topology_routes_as_the_others_do_without_it() {
        let names = ["a", "b", "c", "d"];
        let full = Topology::for_test(&names, "b");
        let gone = full.handed_over(3, 16);
        let rest: Vec<NodeInfo> = full.nodes.iter().filter(|n| n.name != "b").cloned().collect();
        let others = Topology::new(1, rest, "a", 3, 16);
        assert_eq!(gone.digest, others.digest, "forwards carry the digest the others check");
        assert_eq!(gone.myself().name, "b");
        let owns_nothing =
            |t: &Topology| (0..ringcache_protocol::SLOT_COUNT).all(|s| !t.table.owners(s).contains(&t.me));
        assert!(owns_nothing(&gone));
        assert!(!owns_nothing(&full));
        for slot in 0..ringcache_protocol::SLOT_COUNT {
            let name = |t: &Topology, o: &u16| t.nodes[usize::from(*o)].name.clone();
            let a: Vec<String> = gone.table.owners(slot).iter().map(|o| name(&gone, o)).collect();
            let b: Vec<String> = others.table.owners(slot).iter().map(|o| name(&others, o)).collect();
            assert_eq!(a, b, "slot {slot}");
        }
    }

    #[test]
    fn ids_are_stable_and_40_hex() {
        let id = node_id("127.0.0.1:6379");
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(id, node_id("127.0.0.1:6379"));
        assert_ne!(id, node_id("127.0.0.1:6380"));
    }

    #[test]
    fn single_node_is_primary_everywhere() {
        let t = Topology::single(NodeInfo::new("a", "127.0.0.1:1".parse().unwrap(), 2, 1), 3, 256);
        assert_eq!(t.primary_ranges(t.me), vec![(0, 16383)]);
        assert_eq!(t.myself().name, "a");
    }
}
