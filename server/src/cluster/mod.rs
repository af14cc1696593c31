//! Pure cluster state machines: input events and `now` in, actions out; no
//! sockets, no clock reads, no tokio (a test keeps it that way).
//!
//! - [`ring`]: the consistent-hash ring and the slot table computed from a
//!   member set (DESIGN.md §2).
//! - [`topology`]: the slot table with members' addresses and node ids, as
//!   the Redis Cluster views (CLUSTER SLOTS, SHARDS, NODES) show it.
//! - [`membership`]: gossip identities, packet authentication, and the
//!   topology of a member set (foca, itself sans-IO, runs the protocol).
//!
//! - [`replication`]: what owners tell each other about a key (versioned
//!   puts and deletes, reads for quorum reads), the peer-link handshake,
//!   bounded hint queues and quorum arithmetic.
//!
//! - [`majority`]: whether a node may change its table to the members it
//!   sees (a majority of its last table), or is in a minority and refuses
//!   writes.
//!
//! - [`absence`]: Cassandra's gc_grace rule: a node away from the others
//!   longer than the tombstone grace, while they went on, comes back empty.
//!
//! - [`lifecycle`]: a node's phase (awaiting a seed, alone, joining,
//!   serving, draining, left) and the events that move it, forward only.
//!
//! - [`protocol`]: the peer protocol, every request and reply between
//!   members as types with one encoder, one decoder and one set of limits.
//!
//! - [`settle`]: what a request must fetch before it runs on a key whose
//!   slot is importing or unsettled, and when the fetch counts as done.
//!
//! - [`keepers`]: which members hold a slot's acknowledged writes; a slot
//!   too few of them can reach refuses writes (failures together, the
//!   majority side of a partition), and settles only after comparing
//!   with enough of them.
//!
//! - [`coordinate`]: whether a node runs a request (the join gate, the
//!   minority, a long absence), the keepers and quorum rules of a write,
//!   and what happens to a forwarded request at both ends.
//!
//! - [`rebalance`]: which slot copies a node sends, and to whom, when the
//!   slot table changes; which slots it may drop.
//!
//! Write versions are hybrid logical clocks kept per store shard (see
//! `store::ShardInner`).

pub mod absence;
pub mod antientropy;
pub mod coordinate;
pub mod keepers;
pub mod lifecycle;
pub mod majority;
pub mod membership;
pub mod protocol;
pub mod rebalance;
pub mod replication;
pub mod ring;
pub mod settle;
pub mod topology;
pub mod transfer;

#[cfg(test)]
mod tests {
    /// Files under `cluster/` must stay free of IO and clocks.
    #[test]
    fn cluster_modules_are_sans_io() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cluster");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // Sockets, the runtime and clocks; plain data such as SocketAddr is
            // fine. (Spelled in pieces so this file does not match itself.)
            let banned_names = [
                concat!("tok", "io::"),
                concat!("Tcp", "Stream"),
                concat!("Udp", "Socket"),
                concat!("Instant::", "now"),
                concat!("SystemTime::", "now"),
            ];
            for banned in banned_names {
                let hits = text.lines().filter(|l| l.contains(banned)).count();
                assert_eq!(hits, 0, "{} names {banned}", path.display());
            }
        }
    }
}
