//! Every socket of a node. `client` serves RESP clients, `admin` the HTTP
//! endpoints, `gossip` runs membership on the cluster port (UDP), `peer`
//! accepts and `link` makes the peer TCP connections on the same port
//! number, and `exec` runs requests wherever the cluster says (forwarding,
//! splitting, replication, quorums). Tasks here drive the pure modules;
//! nothing below `net` knows about sockets.

pub mod admin;
pub mod antientropy;
pub mod client;
pub mod exec;
pub mod gossip;
pub mod link;
pub mod peer;
pub mod rebalance;

/// Unix time in ms: the one clock read of the request path (once a batch).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
