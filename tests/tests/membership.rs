//! Membership with real processes: nodes started together form one cluster
//! and agree on the slot table; a killed node is declared down and dropped,
//! and rejoins under a new generation when restarted; a short pause is not a
//! failure; a node without the cluster secret never joins; a cluster-aware
//! client routes every key to its slot's primary.
//!
//! Convergence tests give suspicion a generous timeout (2 s) so a loaded CI
//! machine running several debug-build nodes does not flap; the detection
//! speed of the defaults is measured in BENCHMARKS.md, not asserted here.

use std::time::{Duration, Instant};

use ringcache_protocol::Frame;
use ringcache_tests::reply::*;
use ringcache_tests::{Cluster, Server, TEST_SECRET, cluster_info_field};

const CALM: &[&str] = &["--gossip-suspect-ms", "2000"];

#[test]
fn five_nodes_started_together_form_one_cluster() {
    let c = Cluster::start(5, CALM);
    c.wait_converged(5);
    // Every node answers CLUSTER SHARDS identically (wait_converged checked)
    // and covers all 16384 slots with five primaries.
    let mut n = c.node(3).raw();
    assert_eq!(cluster_info_field(&mut n, "cluster_slots_assigned"), "16384");
    assert_eq!(cluster_info_field(&mut n, "cluster_size"), "5");
    let digests: Vec<String> = (0..5).map(|i| info_field(c.node(i), "cluster_members_digest")).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

fn info_field(s: &Server, field: &str) -> String {
    let Frame::Bulk(text) = s.raw().cmd(&["INFO", "cluster"]) else { panic!("INFO") };
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field}: {text}"))
        .to_string()
}

#[test]
fn killed_node_is_dropped_and_rejoins_when_restarted() {
    let mut c = Cluster::start(5, CALM);
    c.wait_converged(5);
    let id_before = c.node(2).raw().cmd(&["CLUSTER", "MYID"]);
    c.kill(2);
    c.wait_converged(4);
    let Frame::Bulk(nodes) = c.node(0).raw().cmd(&["CLUSTER", "NODES"]) else { panic!() };
    let Frame::Bulk(id) = &id_before else { panic!() };
    assert!(!String::from_utf8_lossy(&nodes).contains(&*String::from_utf8_lossy(id)), "the dead node is still listed");
    c.restart(2);
    c.wait_converged(5);
    // Same name, same id, same placement; a newer generation on the wire.
    assert_eq!(c.node(2).raw().cmd(&["CLUSTER", "MYID"]), id_before);
    let seen = |l: String| l.contains("member renewed its identity") || l.contains("member up");
    c.eventually("node0 to log the restarted member", || seen(c.node(0).log()));
}

#[test]
fn a_pause_shorter_than_suspicion_is_not_a_failure() {
    let c = Cluster::start(3, &["--gossip-suspect-ms", "1500"]);
    c.wait_converged(3);
    c.node(1).signal("STOP");
    let stopped = Instant::now();
    // Watch the others while node 1 is paused for 300 ms.
    while stopped.elapsed() < Duration::from_millis(300) {
        assert_eq!(c.known_nodes(0), 3);
        assert_eq!(c.known_nodes(2), 3);
        std::thread::sleep(Duration::from_millis(20));
    }
    c.node(1).signal("CONT");
    // And for a while after: a suspicion raised during the pause must be
    // refuted, never turned into a Down.
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_millis(2500) {
        assert_eq!(c.known_nodes(0), 3);
        assert_eq!(c.known_nodes(2), 3);
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in [0, 2] {
        assert!(!c.node(i).log().contains("member down"), "node {i} declared a paused node down:\n{}", c.node(i).log());
    }
}

/// Issue 16 item 7: a node with the right secret but other cluster-wide
/// settings would build another slot table from the same members; it is
/// refused (the members log which settings it has) instead of silently
/// splitting the cluster.
#[test]
fn nodes_with_other_cluster_settings_never_join() {
    let c = Cluster::start(2, &["--gossip-suspect-ms", "2000"]);
    c.wait_converged(2);
    let seed = format!("127.0.0.1:{}", c.ports[0].1);
    let odd = Server::start(&[
        "--node-name",
        "odd",
        "--seed",
        &seed,
        "--cluster-secret",
        c.secret(),
        "--vnodes",
        "128",
        "--join-timeout-ms",
        "0",
    ]);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.known_nodes(0), 2);
        assert_eq!(cluster_info_field(&mut odd.raw(), "cluster_known_nodes"), "1");
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused: u64 = info_field(c.node(0), "gossip_settings_mismatch").parse().unwrap();
    assert!(refused > 0, "no packet was refused for its settings");
    // The members say which settings the stranger has (it hears nothing
    // back: they never answer it).
    c.node(0).wait_log("--vnodes 128");
}

#[test]
fn nodes_without_the_secret_never_join() {
    let c = Cluster::start(2, &["--cluster-secret", "right", "--gossip-suspect-ms", "2000"]);
    c.wait_converged(2);
    let seeds: Vec<String> = c.ports.iter().map(|(_, cp)| format!("127.0.0.1:{cp}")).collect();
    let mut args =
        vec!["--node-name", "intruder", "--seed", &seeds[0], "--seed", &seeds[1], "--cluster-secret", "wrong"];
    let wrong = Server::start(&args);
    // No secret at all: a node with seeds refuses to start, and says how.
    args.truncate(6);
    let mut cmd = std::process::Command::new(ringcache_tests::binary());
    cmd.args(&args).args(["--port", "0"]);
    let out = ringcache_tests::output_within(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "a node with seeds and no secret started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no cluster secret") && err.contains("--cluster-secret"), "{err}");
    let other_cluster = Server::start(&[
        "--node-name",
        "neighbour",
        "--seed",
        &seeds[0],
        "--cluster-secret",
        "right",
        "--cluster-name",
        "another",
    ]);
    // Give them time to try (they announce every 500 ms), watching the whole while.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(c.known_nodes(0), 2);
        assert_eq!(c.known_nodes(1), 2);
        for s in [&wrong, &other_cluster] {
            assert_eq!(cluster_info_field(&mut s.raw(), "cluster_known_nodes"), "1");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rejected: u64 = info_field(c.node(0), "gossip_rejected_packets").parse().unwrap();
    assert!(rejected > 0, "no packets were rejected");
    c.node(0).wait_log("dropping gossip packets");
}

#[test]
fn cluster_client_routes_keys_to_their_primaries() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let addrs: Vec<_> = (0..3).map(|i| c.node(i).addr).collect();
    ringcache_tests::redis_rs_cluster_roundtrip(&addrs, 1000);
    // Each key sits on the primary CLUSTER SLOTS names for its slot.
    let Frame::Array(ranges) = c.node(0).raw().cmd(&["CLUSTER", "SLOTS"]) else { panic!() };
    let primary_port = |slot: i64| -> i64 {
        for r in &ranges {
            let Frame::Array(parts) = r else { panic!() };
            let (Frame::Integer(a), Frame::Integer(b)) = (&parts[0], &parts[1]) else { panic!() };
            if (*a..=*b).contains(&slot) {
                let Frame::Array(node) = &parts[2] else { panic!() };
                let Frame::Integer(port) = node[1] else { panic!() };
                return port;
            }
        }
        panic!("slot {slot} not covered");
    };
    let mut per_node = [0; 3];
    for i in 0..1000 {
        let key = format!("key:{i}");
        let Frame::Integer(slot) = c.node(0).raw().cmd(&["CLUSTER", "KEYSLOT", &key]) else { panic!() };
        let port = primary_port(slot);
        let n = (0..3).find(|&n| i64::from(c.node(n).port()) == port).expect("a node has that port");
        assert_eq!(c.node(n).raw().cmd(&["EXISTS", &key]), int(1), "{key} is not on its primary");
        per_node[n] += 1;
    }
    assert!(per_node.iter().all(|&k| k > 200), "uneven spread {per_node:?}");
}

/// With `--cluster-redirect moved`, a node redirects keys it is not primary
/// for (MOVED, with the primary's address) and refuses multi-key requests
/// that span slots (CROSSSLOT), exactly as Redis Cluster does; `redis-cli
/// -c` follows the redirects, so any node reaches every key.
#[test]
fn moved_and_crossslot_like_redis_cluster() {
    let c = Cluster::start(3, &[CALM, &["--cluster-redirect", "moved"]].concat());
    c.wait_converged(3);
    let Frame::Array(ranges) = c.node(0).raw().cmd(&["CLUSTER", "SLOTS"]) else { panic!() };
    let Frame::Integer(slot) = c.node(0).raw().cmd(&["CLUSTER", "KEYSLOT", "somekey"]) else { panic!() };
    let primary = ranges
        .iter()
        .find_map(|r| {
            let Frame::Array(p) = r else { panic!() };
            let (Frame::Integer(a), Frame::Integer(b)) = (&p[0], &p[1]) else { panic!() };
            let Frame::Array(node) = &p[2] else { panic!() };
            let Frame::Integer(port) = node[1] else { panic!() };
            (*a..=*b).contains(&slot).then_some(port)
        })
        .unwrap();
    let owner = (0..3).find(|&i| i64::from(c.node(i).port()) == primary).unwrap();
    let other = (owner + 1) % 3;
    assert_eq!(c.node(other).raw().cmd(&["SET", "somekey", "v"]), err(&format!("MOVED {slot} 127.0.0.1:{primary}")));
    assert_eq!(c.node(owner).raw().cmd(&["SET", "somekey", "v"]), ok());
    assert_eq!(
        c.node(owner).raw().cmd(&["MSET", "a", "1", "b", "2", "c", "3", "d", "4"]),
        err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    // Keys that share a hash tag share a slot: fine on their primary.
    let tag_owner = (0..3)
        .find(|&i| c.node(i).raw().cmd(&["MSET", "{t}a", "1", "{t}b", "2"]) == ok())
        .expect("the tag's primary accepts the MSET");
    assert_eq!(c.node(tag_owner).raw().cmd(&["MGET", "{t}a", "{t}b"]), bulks(&["1", "2"]));
    // Keyless commands answer locally.
    assert_eq!(c.node(other).raw().cmd(&["PING"]), simple("PONG"));
    // redis-cli -c: write through one node, read through another.
    let cli = |port: u16, args: &[&str]| {
        let mut cmd = std::process::Command::new("redis-cli");
        cmd.args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
        let out = ringcache_tests::output_within(cmd, ringcache_tests::WAIT);
        String::from_utf8(out.stdout).unwrap()
    };
    for i in 0..20 {
        let key = format!("cli:{i}");
        assert_eq!(cli(c.node(i % 3).port(), &["set", &key, &format!("v{i}")]), "OK\n");
        assert_eq!(cli(c.node((i + 1) % 3).port(), &["get", &key]), format!("v{i}\n"));
    }
}

/// redis-py's `RedisCluster`, the most common cluster-aware Python client,
/// discovers a 3-node cluster from CLUSTER SLOTS and routes 1000 keys.
#[test]
fn redis_py_cluster_client_works() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/cluster_client.py");
    let mut cmd = std::process::Command::new(ringcache_tests::redis_py());
    cmd.arg(script).args((0..3).map(|i| c.node(i).addr.to_string()));
    let out = ringcache_tests::output_within(cmd, std::time::Duration::from_secs(120));
    assert!(
        out.status.success(),
        "redis-py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1000 keys through RedisCluster over 3 nodes"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: plain redis-py through every node"));
}

/// `cmd`'s reply: the cluster's own work (a table change, slots moving)
/// shows as latency, never as `-TRYAGAIN` (issue 16).
fn answered(s: &Server, cmd: &[&str]) -> Frame {
    let reply = s.raw().cmd(cmd);
    assert!(!matches!(&reply, Frame::Error(e) if e.starts_with(b"TRYAGAIN")), "{cmd:?}: {reply:?}");
    reply
}

fn is_clusterdown(f: &Frame) -> bool {
    matches!(f, Frame::Error(e) if e.starts_with(b"CLUSTERDOWN"))
}

/// A restarted node is empty: until it has met a member it refuses keys
/// (rather than answer misses and count INCRs from nothing, acknowledged
/// and then lost when it merges), says so on /ready and CLUSTER INFO, and
/// serves as soon as a member answers.
#[test]
fn a_seeded_node_serves_no_keys_before_it_meets_a_member() {
    // Nothing listens on the seed's port; 0 = wait for a member for ever.
    let nobody = format!("127.0.0.1:{}", ringcache_tests::free_port());
    let (port, cport) = (ringcache_tests::free_port(), ringcache_tests::free_port());
    let (port, cport) = (port.to_string(), cport.to_string());
    let a = Server::start(&[
        "--port",
        &port,
        "--cluster-port",
        &cport,
        "--seed",
        &nobody,
        "--join-timeout-ms",
        "0",
        "--admin-port",
        "0",
        "--cluster-secret",
        TEST_SECRET,
    ]);
    let mut r = a.raw();
    for cmd in [&["SET", "k", "v"][..], &["GET", "k"], &["INCR", "n"], &["DEL", "k"]] {
        let reply = r.cmd(cmd);
        assert!(is_clusterdown(&reply), "{cmd:?} before joining: {reply:?}");
    }
    assert_eq!(r.cmd(&["PING"]), simple("PONG"), "keyless commands still answer");
    assert_eq!(cluster_info_field(&mut r, "cluster_state"), "fail");
    let admin = a.admin.expect("admin port");
    assert_eq!(ringcache_tests::http_get(admin, "/ready").0, 503);

    // A node seeded with it joins: both serve, the first one included.
    let seed = format!("127.0.0.1:{cport}");
    let b = Server::start(&["--seed", &seed, "--cluster-secret", TEST_SECRET]);
    Server::eventually("the seeded node to serve keys once a member answered", || {
        a.raw().cmd(&["SET", "k", "v"]) == ok()
    });
    assert_eq!(answered(&a, &["GET", "k"]), bulk("v"));
    // b refuses keys until its own table names a (it may publish that a
    // moment after a published its table with b).
    Server::eventually("the new node to join", || cluster_info_field(&mut b.raw(), "cluster_state") == "ok");
    assert_eq!(answered(&b, &["GET", "k"]), bulk("v"));
    assert_eq!(cluster_info_field(&mut r, "cluster_state"), "ok");
    assert_eq!(ringcache_tests::http_get(admin, "/ready").0, 200);
}

/// With a join timeout a node whose seeds never answer serves alone once
/// it ran out; seeds that all name the node itself count as none.
#[test]
fn a_node_whose_seeds_never_answer_serves_alone_after_the_join_timeout() {
    let nobody = format!("127.0.0.1:{}", ringcache_tests::free_port());
    let a = Server::start(&[
        "--seed",
        &nobody,
        "--join-timeout-ms",
        "1000",
        "--cluster-secret",
        TEST_SECRET,
        "--admin-port",
        "0",
    ]);
    Server::eventually("the node to serve alone after its join timeout", || a.raw().cmd(&["SET", "k", "v"]) == ok());
    a.wait_log("no seed answered within the join timeout");
    // It serves, but it is not what the operator asked for: not ready.
    assert_eq!(cluster_info_field(&mut a.raw(), "cluster_join_state"), "alone");
    let (status, body) = ringcache_tests::http_get(a.admin.expect("admin"), "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("running alone"), "{body}");

    let (port, cport) = (ringcache_tests::free_port(), ringcache_tests::free_port());
    let me = format!("127.0.0.1:{cport}");
    let first = Server::start(&[
        "--port",
        &port.to_string(),
        "--cluster-port",
        &cport.to_string(),
        "--seed",
        &me,
        "--cluster-secret",
        TEST_SECRET,
    ]);
    // (The harness passes --founding-wait-ms 0; the wait itself is tested
    // by a_restarted_seedless_node_rejoins_instead_of_counting_from_nothing.)
    assert_eq!(first.raw().cmd(&["SET", "k", "v"]), ok(), "a node seeded only with itself serves at once");
    assert_eq!(cluster_info_field(&mut first.raw(), "cluster_join_state"), "joined");
}

/// Issue 16 item 8: the first node of a cluster (no seed) is killed and
/// restarted, still without seeds. Before, it served at once from an empty
/// store as the whole cluster, and its INCRs answered 1, 2, ... with fresh
/// versions that then overwrote the cluster's counters. Now it waits
/// `--founding-wait-ms` (the default, 6 s) for members that remember it,
/// refusing keys meanwhile; the others find it and it joins as a newcomer,
/// so every INCR through it counts on from the cluster's value.
#[test]
fn a_restarted_seedless_node_rejoins_instead_of_counting_from_nothing() {
    let (port, cport) = (ringcache_tests::free_port().to_string(), ringcache_tests::free_port().to_string());
    let founder_args = [
        "--port",
        &port,
        "--cluster-port",
        &cport,
        "--node-name",
        "founder",
        "--founding-wait-ms",
        "6000",
        "--gossip-suspect-ms",
        "2000",
        "--cluster-secret",
        TEST_SECRET,
    ];
    let mut a = Server::start(&founder_args);
    let seed = format!("127.0.0.1:{cport}");
    let others: Vec<Server> = (0..2)
        .map(|_| Server::start(&["--seed", &seed, "--gossip-suspect-ms", "2000", "--cluster-secret", TEST_SECRET]))
        .collect();
    let members = |s: &Server| cluster_info_field(&mut s.raw(), "cluster_known_nodes");
    Server::eventually("three members", || others.iter().chain([&a]).all(|s| members(s) == "3"));
    Server::eventually("the founder to serve keys", || matches!(a.raw().cmd(&["INCR", "ctr"]), Frame::Integer(_)));
    let mut b = others[0].raw();
    let mut n = answered_int(&mut b, "ctr");
    for _ in 0..9 {
        n = answered_int(&mut b, "ctr");
    }
    assert!(n >= 10, "ten increments counted: {n}");
    a.signal("KILL");
    a.wait();
    Server::eventually("the others to drop the founder", || others.iter().all(|s| members(s) == "2"));
    let a = Server::start(&founder_args);
    let mut r = a.raw();
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        assert!(Instant::now() < deadline, "the restarted founder never counted on: {}", a.log_tail(30));
        match r.cmd(&["INCR", "ctr"]) {
            Frame::Integer(v) => break v,
            e if is_clusterdown(&e) => refused += 1,
            other => panic!("INCR through the restarted founder: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("the restarted founder refused {refused} INCRs, then answered {got} (cluster had {n})");
    assert_eq!(got, n + 1, "the restarted founder counted on from the cluster's value");
    assert_eq!(answered(&others[1], &["GET", "ctr"]), bulk(&(n + 1).to_string()));
}

/// INCR `key` through `r`, retrying the answers that mean "not run".
fn answered_int(r: &mut ringcache_tests::Raw, key: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match r.cmd(&["INCR", key]) {
            Frame::Integer(v) => return v,
            e if is_clusterdown(&e) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("INCR {key}: {other:?}"),
        }
    }
}
