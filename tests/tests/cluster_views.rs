//! Redis Cluster views of a node: exact CLUSTER replies for a cluster of
//! one, and a real cluster-aware client (redis-rs's `ClusterClient`, which
//! routes every key by CLUSTER SLOTS) storing and reading keys through it.

use ringcache_protocol::Frame;
use ringcache_tests::reply::*;
use ringcache_tests::{Server, TEST_SECRET};

#[test]
fn cluster_of_one_views() {
    let s = Server::start(&["--node-name", "alpha", "--cluster-secret", TEST_SECRET]);
    let mut c = s.raw();
    let Frame::Bulk(id) = c.cmd(&["CLUSTER", "MYID"]) else { panic!("MYID") };
    assert_eq!(id.len(), 40);
    let id = String::from_utf8(id.to_vec()).unwrap();
    let port = i64::from(s.port());
    assert_eq!(
        c.cmd(&["CLUSTER", "SLOTS"]),
        array(vec![array(vec![
            int(0),
            int(16383),
            array(vec![bulk("127.0.0.1"), int(port), bulk(&id), array(vec![])]),
        ])])
    );
    let Frame::Bulk(nodes) = c.cmd(&["CLUSTER", "NODES"]) else { panic!("NODES") };
    let nodes = String::from_utf8(nodes.to_vec()).unwrap();
    assert!(nodes.starts_with(&format!("{id} 127.0.0.1:{port}@")), "{nodes}");
    assert!(nodes.trim_end().ends_with("myself,master - 0 0 1 connected 0-16383"), "{nodes}");
    let Frame::Bulk(info) = c.cmd(&["CLUSTER", "INFO"]) else { panic!("INFO") };
    let info = String::from_utf8(info.to_vec()).unwrap();
    for line in ["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:1", "cluster_size:1"] {
        assert!(info.contains(line), "{info}");
    }
    assert_eq!(c.cmd(&["CLUSTER", "KEYSLOT", "{user1000}.following"]), int(3443));
    assert_eq!(c.cmd(&["MSET", "{t}a", "1", "{t}b", "2", "other", "3"]), ok());
    let slot = 15891; // redis-server 7.0.15: CLUSTER KEYSLOT t
    assert_eq!(c.cmd(&["CLUSTER", "KEYSLOT", "t"]), int(slot));
    assert_eq!(c.cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]), int(2));
    match c.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "10"]) {
        Frame::Array(mut keys) => {
            keys.sort_by_key(|k| format!("{k:?}"));
            assert_eq!(keys, vec![bulk("{t}a"), bulk("{t}b")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.cmd(&["CLUSTER", "COUNTKEYSINSLOT", "16384"]), err("ERR Invalid slot"));
    assert_eq!(
        c.cmd(&["CLUSTER", "ADDSLOTS", "1"]),
        err("ERR CLUSTER ADDSLOTS is not supported: ringcache places slots itself")
    );
    assert_eq!(c.cmd(&["CLUSTER", "NOPE"]), err("ERR unknown subcommand 'NOPE'. Try CLUSTER HELP."));
    assert_eq!(c.cmd(&["READONLY"]), ok());
    assert_eq!(c.cmd(&["READWRITE"]), ok());
}

#[test]
fn redis_rs_cluster_client_routes_through_cluster_slots() {
    let s = Server::start(&["--cluster-secret", TEST_SECRET]);
    ringcache_tests::redis_rs_cluster_roundtrip(&[s.addr], 1000);
    let mut plain = s.raw();
    assert_eq!(plain.cmd(&["DBSIZE"]), int(1000));
}
