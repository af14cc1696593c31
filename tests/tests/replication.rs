//! Replication and routing on real 3-node clusters (DESIGN §4, §6): any
//! node answers for any key, every key is on its N owners with the same
//! version and expiry, acknowledged writes survive the loss of their
//! primary, deletes stay deleted, quorums are enforced.

use std::time::Duration;

use redis::Commands;
use ringcache_protocol::Frame;
use ringcache_tests::reply::*;
use ringcache_tests::{Cluster, info_field, local_keys};

/// Two seconds of suspicion so a loaded CI machine does not flap; a short
/// replication timeout so that failure cases answer quickly.
const ARGS: &[&str] = &["--gossip-suspect-ms", "2000", "--replication-timeout-ms", "500"];

fn cluster(extra: &[&str]) -> Cluster {
    let args: Vec<&str> = ARGS.iter().chain(extra).copied().collect();
    let c = Cluster::start(3, &args);
    c.wait_converged(3);
    c
}

/// `cmds` on one connection after READONLY: what node `i` itself holds.
fn local(c: &Cluster, i: usize, cmds: &[&[&str]]) -> Vec<Frame> {
    let mut r = c.node(i).raw();
    assert_eq!(r.cmd(&["READONLY"]), ok());
    cmds.iter().map(|a| r.cmd(a)).collect()
}

#[test]
fn keys_written_through_one_node_are_on_every_owner() {
    let c = cluster(&[]);
    let mut con = c.node(0).redis();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.set(format!("k:{i}"), format!("v{i}")).ignore();
    }
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("ttl:{i}")).arg("x").arg("EX").arg(1000 + i).ignore();
    }
    let () = pipe.query(&mut con).unwrap();
    // Through every node, every key.
    for n in 0..3 {
        let mut con = c.node(n).redis();
        for chunk in (0..10_000).collect::<Vec<_>>().chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|i| format!("k:{i}")).collect();
            let got: Vec<Option<String>> = con.mget(&keys).unwrap();
            for (i, g) in chunk.iter().zip(got) {
                assert_eq!(g.as_deref(), Some(format!("v{i}").as_str()), "k:{i} through node {n}");
            }
        }
        assert_eq!(c.node(n).raw().cmd(&["DBSIZE"]), int(10_100), "DBSIZE counts each key once");
    }
    // RF=3 on 3 nodes: each node holds every key itself, with the same
    // absolute expiry.
    c.eventually("every owner to hold every key", || (0..3).all(|n| local_keys(c.node(n)) == 10_100));
    for i in 0..100 {
        let key = format!("ttl:{i}");
        let at: Vec<Frame> = (0..3).map(|n| local(&c, n, &[&["PEXPIRETIME", &key]]).remove(0)).collect();
        assert!(matches!(at[0], Frame::Integer(t) if t > 0), "{at:?}");
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{key}: expiry differs between owners: {at:?}");
    }
}

/// A fresh cluster of newcomers with W = 1 settles its slots and takes
/// writes: before the fix each node waited for its own (empty) earlier
/// self among a slot's keepers and refused every write for ever.
#[test]
fn a_fresh_cluster_with_write_quorum_one_takes_writes() {
    let c = cluster(&["--write-quorum", "1"]);
    c.eventually("every slot settled (no slot without its keepers)", || {
        (0..3).all(|n| info_field(c.node(n), "cluster", "slots_without_keepers") == "0")
    });
    let mut con = c.node(0).redis();
    for i in 0..300 {
        let () = con.set(format!("w1:{i}"), i).unwrap();
    }
    for n in 0..3 {
        let mut con = c.node(n).redis();
        let got: Option<String> = con.get("w1:299").unwrap();
        assert_eq!(got.as_deref(), Some("299"), "through node {n}");
        assert_eq!(info_field(c.node(n), "cluster", "keeper_refusals"), "0");
    }
}

#[test]
fn acknowledged_writes_survive_a_killed_primary() {
    let mut c = cluster(&[]);
    // Keys whose primary is node 2, written through node 0.
    let keys: Vec<String> =
        (0..10_000).map(|i| format!("ack:{i}")).filter(|k| c.owners_of(0, k)[0] == 2).take(300).collect();
    let mut con = c.node(0).redis();
    for k in &keys {
        let () = con.set(k, format!("value of {k}")).unwrap();
    }
    c.kill(2);
    // Until the survivors declare node 2 down, its keys cannot be read
    // (their primary is unreachable); afterwards every one must be there.
    c.wait_converged(2);
    for n in 0..2 {
        let mut con = c.node(n).redis();
        let mut lost = Vec::new();
        for k in &keys {
            let got: Option<String> = con.get(k).unwrap();
            if got.as_deref() != Some(format!("value of {k}").as_str()) {
                lost.push(k.clone());
            }
        }
        assert!(lost.is_empty(), "{} acknowledged writes lost through node {n}: {lost:?}", lost.len());
    }
}

#[test]
fn concurrent_incrs_through_three_nodes_count_exactly() {
    let c = cluster(&[]);
    let acked: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|t| {
                let node = c.node(t % 3);
                s.spawn(move || {
                    let mut con = node.redis();
                    let mut ok = 0;
                    for _ in 0..200 {
                        if con.incr::<_, _, i64>("counter", 1).is_ok() {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(acked, 2000, "every INCR is acknowledged on a healthy cluster");
    for n in 0..3 {
        assert_eq!(c.node(n).raw().cmd(&["GET", "counter"]), bulk("2000"));
    }
    c.eventually("every owner to hold the final count", || {
        (0..3).all(|n| local(&c, n, &[&["GET", "counter"]]) == vec![bulk("2000")])
    });
}

#[test]
fn a_delete_while_an_owner_is_paused_stays_deleted() {
    let c = cluster(&[]);
    // A key whose primary is not node 2 (node 2 is an owner: RF=3).
    let key = c.key_where("del", |o| o[0] != 2);
    assert_eq!(c.node(0).raw().cmd(&["SET", &key, "old"]), ok());
    c.eventually("node 2 to hold the key", || local(&c, 2, &[&["GET", &key]]) == vec![bulk("old")]);
    c.node(2).signal("STOP");
    // W=2: the primary and the other replica acknowledge.
    assert_eq!(c.node(0).raw().cmd(&["DEL", &key]), int(1));
    assert_eq!(c.node(1).raw().cmd(&["GET", &key]), null());
    // Long enough for the link to give the paused node up (2 x 500 ms)
    // and keep the delete as a hint.
    std::thread::sleep(Duration::from_millis(1500));
    c.node(2).signal("CONT");
    c.eventually("the paused owner to learn of the delete", || local(&c, 2, &[&["GET", &key]]) == vec![null()]);
    for n in 0..3 {
        assert_eq!(local(&c, n, &[&["EXISTS", &key]]), vec![int(0)], "node {n} brought the key back");
        assert_eq!(c.node(n).raw().cmd(&["GET", &key]), null());
    }
}

#[test]
fn a_paused_replica_receives_missed_writes_after_it_resumes() {
    let c = cluster(&[]);
    let keys: Vec<String> =
        (0..5000).map(|i| format!("hint:{i}")).filter(|k| c.owners_of(0, k)[0] != 2).take(200).collect();
    c.node(2).signal("STOP");
    let mut con = c.node(0).redis();
    for k in &keys {
        let () = con.set(k, "during the pause").unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    c.node(2).signal("CONT");
    c.eventually("the resumed replica to hold every write", || {
        let mut r = c.node(2).raw();
        assert_eq!(r.cmd(&["READONLY"]), ok());
        keys.iter().all(|k| r.cmd(&["GET", k]) == bulk("during the pause"))
    });
    let replayed: u64 = info_field(c.node(0), "replication", "hints_replayed").parse().unwrap();
    let stored: u64 = info_field(c.node(0), "replication", "hints_stored").parse().unwrap();
    assert!(
        stored > 0 && replayed > 0,
        "writes reached the paused node by hints: stored {stored}, replayed {replayed}"
    );
}

#[test]
fn multi_key_commands_across_slots_answer_like_redis() {
    let c = cluster(&[]);
    let mut r = c.node(1).raw();
    let keys: Vec<String> = (0..40).map(|i| format!("multi:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            mset.push(k.clone());
            mset.push(format!("v{i}"));
        }
    }
    assert_eq!(r.cmd(&mset), ok());
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().cloned());
    let want: Vec<Frame> = (0..40).map(|i| if i % 2 == 0 { bulk(&format!("v{i}")) } else { null() }).collect();
    assert_eq!(r.cmd(&mget), array(want));
    let mut exists = vec!["EXISTS".to_string()];
    exists.extend(keys.iter().cloned());
    exists.push(keys[0].clone()); // counted twice, as Redis does
    assert_eq!(r.cmd(&exists), int(21));
    let mut del = vec!["DEL".to_string()];
    del.extend(keys.iter().take(10).cloned());
    assert_eq!(r.cmd(&del), int(5));
    assert_eq!(r.cmd(&["DBSIZE"]), int(15));
    // RESP3 through the same path.
    assert!(!r.cmd(&["HELLO", "3"]).is_error());
    assert_eq!(r.cmd(&["MGET", &keys[10], &keys[11], &keys[12]]), array(vec![bulk("v10"), null(), bulk("v12")]));
    // MSETNX must be atomic: refused across primaries.
    let (a, b) = (c.key_where("nx", |o| o[0] == 0), c.key_where("nx", |o| o[0] == 1));
    assert_eq!(r.cmd(&["MSETNX", &a, "1", &b, "2"]), err("CROSSSLOT Keys in request don't hash to the same slot"));
    // KEYS and SCAN walk every primary once.
    let Frame::Array(all) = r.cmd(&["KEYS", "multi:*"]) else { panic!() };
    assert_eq!(all.len(), 15);
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let Frame::Array(step) = r.cmd(&["SCAN", &cursor, "COUNT", "4"]) else { panic!() };
        let (Frame::Bulk(next), Frame::Array(found)) = (&step[0], &step[1]) else { panic!("{step:?}") };
        for k in found {
            let Frame::Bulk(k) = k else { panic!("{k:?}") };
            assert!(seen.insert(k.to_vec()), "SCAN returned {k:?} twice");
        }
        cursor = String::from_utf8(next.to_vec()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 15);
    assert_eq!(r.cmd(&["FLUSHALL"]), ok());
    for n in 0..3 {
        assert_eq!(local_keys(c.node(n)), 0, "FLUSHALL reached node {n}");
    }
}

#[test]
fn write_quorum_of_three_with_an_owner_paused_fails_clearly() {
    // A long suspicion: the paused owner must stay a member (a Down owner
    // would leave N = 2, and W is capped at N by design).
    let c =
        Cluster::start(3, &["--gossip-suspect-ms", "20000", "--replication-timeout-ms", "500", "--write-quorum", "3"]);
    c.wait_converged(3);
    let key = c.key_where("w3", |o| o[0] == 0);
    assert_eq!(c.node(0).raw().cmd(&["SET", &key, "before"]), ok());
    c.eventually("node 2 to hold the key", || local(&c, 2, &[&["GET", &key]]) == vec![bulk("before")]);
    c.node(2).signal("STOP");
    let reply = c.node(1).raw().cmd(&["SET", &key, "during"]);
    let Frame::Error(e) = &reply else { panic!("a write without its quorum succeeded: {reply:?}") };
    let e = String::from_utf8_lossy(e).into_owned();
    assert!(e.starts_with("TIMEOUT write quorum not reached") || e.starts_with("CLUSTERDOWN"), "{e}");
    // Reads still work (R=1, the primary is up).
    assert!(matches!(c.node(1).raw().cmd(&["GET", &key]), Frame::Bulk(_)));
    // Once the link has given the paused owner up, writes are refused
    // before they run.
    std::thread::sleep(Duration::from_millis(1200));
    let reply = c.node(0).raw().cmd(&["SET", &key, "again"]);
    assert!(reply.is_error(), "{reply:?}");
    c.node(2).signal("CONT");
    c.eventually("writes to succeed again", || c.node(0).raw().cmd(&["SET", &key, "after"]) == ok());
    let failures: u64 = info_field(c.node(0), "replication", "quorum_failures").parse().unwrap();
    assert!(failures >= 1);
}

#[test]
fn read_quorum_answers_the_newest_and_repairs_stale_owners() {
    let c = cluster(&["--read-quorum", "3"]);
    let key = c.key_where("rq", |o| o[0] == 0);
    assert_eq!(c.node(0).raw().cmd(&["SET", &key, "v1"]), ok());
    c.eventually("every owner to hold v1", || (0..3).all(|n| local(&c, n, &[&["GET", &key]]) == vec![bulk("v1")]));
    // A newer state that only node 2 received (as if the others missed it).
    let version = ((ringcache_server::net::unix_ms() + 30_000) << 22) | 1;
    assert_eq!(c.peer(2).cmd(&["RC.PUT", &key, &version.to_string(), "0", "v2"]), ok());
    // R=3: the primary asks every owner and answers the newest...
    assert_eq!(c.node(1).raw().cmd(&["GET", &key]), bulk("v2"));
    // ...and brings every owner to it.
    c.eventually("stale owners repaired", || (0..3).all(|n| local(&c, n, &[&["GET", &key]]) == vec![bulk("v2")]));
    let repairs: u64 = info_field(c.node(0), "replication", "read_repairs").parse().unwrap();
    assert!(repairs >= 1);
    // A replicated state older than what a node holds is ignored.
    assert_eq!(c.peer(1).cmd(&["RC.PUT", &key, "1", "0", "ancient"]), ok());
    assert_eq!(local(&c, 1, &[&["GET", &key]]), vec![bulk("v2")]);
}

#[test]
fn redirect_mode_answers_moved() {
    let c = cluster(&["--cluster-redirect", "moved"]);
    let key = c.key_where("mv", |o| o[0] == 1);
    let Frame::Integer(slot) = c.node(0).raw().cmd(&["CLUSTER", "KEYSLOT", &key]) else { panic!() };
    assert_eq!(c.node(0).raw().cmd(&["SET", &key, "v"]), err(&format!("MOVED {slot} 127.0.0.1:{}", c.node(1).port())));
    assert_eq!(c.node(1).raw().cmd(&["SET", &key, "v"]), ok());
}

#[test]
fn strangers_on_the_cluster_port_are_refused() {
    let c = cluster(&[]);
    let cport = c.ports[0].1;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{cport}").parse().unwrap();
    let mut r = ringcache_tests::Raw::connect(addr);
    assert_eq!(r.cmd(&["PING"]), err("NOAUTH peer authentication required"));
    assert!(r.is_closed());
    // A handshake with a made-up proof.
    let mut r = ringcache_tests::Raw::connect(addr);
    let Frame::Array(hello) = r.cmd(&["RC.HELLO", "intruder", "00112233445566778899aabbccddeeff"]) else { panic!() };
    assert_eq!(hello.len(), 2);
    assert_eq!(r.cmd(&["RC.AUTH", "0000"]), err("ERR peer authentication failed"));
    assert!(r.is_closed());
    let rejected: u64 = info_field(c.node(0), "replication", "peer_rejected_connections").parse().unwrap();
    assert_eq!(rejected, 2);
    // A node of another cluster secret cannot open a link either.
    assert_eq!(c.node(0).raw().cmd(&["SET", "still", "fine"]), ok());
}

/// redis-benchmark (not cluster-aware) against one node of the cluster:
/// every request is answered, keys of every slot included.
#[test]
fn redis_benchmark_works_against_any_node() {
    let c = cluster(&[]);
    let mut cmd = std::process::Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &c.node(1).port().to_string()])
        .args(["-t", "set,get", "-n", "3000", "-r", "1000", "-P", "8", "-c", "4", "-q"]);
    let out = ringcache_tests::output_within(cmd, std::time::Duration::from_secs(120));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
    let Frame::Integer(n) = c.node(0).raw().cmd(&["DBSIZE"]) else { panic!() };
    assert!(n > 500 && n <= 1000, "{n} keys");
}

/// A forwarded request refused for the moment (here: routed by another
/// table) makes the later ones of its slot in the same batch wait their
/// turn: its sender sends them all again in order, so a client's pipeline
/// `SET k 1; SET k 2` never ends as `k = 1`.
#[test]
fn a_refused_forward_keeps_the_later_ones_of_its_slot_in_order() {
    let c = cluster(&[]);
    let key = c.key_where("order", |o| o[0] == 1);
    let digest = info_field(c.node(1), "cluster", "cluster_members_digest");
    let wrong = if digest == "0123456789abcdef" { "fedcba9876543210" } else { "0123456789abcdef" };
    let fwd = |table: &str, value: &str| -> Vec<String> {
        ["RC.FWD", "2", "p", "0+60000", table, "SET", key.as_str(), value].map(String::from).to_vec()
    };
    let mut p = c.peer(1);
    let mut batch = bytes::BytesMut::new();
    ringcache_protocol::encode::command(&mut batch, &fwd(wrong, "1"));
    ringcache_protocol::encode::command(&mut batch, &fwd(&digest, "2"));
    p.send(&batch);
    let first = p.read();
    assert!(matches!(&first, Frame::Error(e) if e.starts_with(b"TRYAGAIN the asking node's table")), "{first:?}");
    let second = p.read();
    assert!(matches!(&second, Frame::Error(e) if e.starts_with(b"TRYAGAIN an earlier request")), "{second:?}");
    assert_eq!(c.node(1).raw().cmd(&["GET", key.as_str()]), null(), "neither ran");
    // Sent again in order (the sender's resend), they run in order.
    assert_eq!(p.cmd(&fwd(&digest, "1")), ok());
    assert_eq!(p.cmd(&fwd(&digest, "2")), ok());
    assert_eq!(c.node(1).raw().cmd(&["GET", key.as_str()]), bulk("2"));
}

/// A plain client's pipeline through one node, over keys whose primaries
/// are all three members: the forwards for each member go out grouped
/// (several requests per call, a group full at about 1 KB), and every
/// reply still answers its own request in order: SET then APPEND then GET
/// of one key see each other, counters count, values of 10 B to 3 KB
/// (some alone past a group's size) come back whole.
#[test]
fn a_plain_pipeline_through_one_node_keeps_every_reply_in_place() {
    let c = cluster(&[]);
    let keys: Vec<String> = (0..3)
        .flat_map(|p| (0..12).map(move |i| (p, i)))
        .map(|(p, i)| c.key_where(&format!("grp{i}"), |o| o[0] == p))
        .collect();
    let value = |i: usize| format!("{i}:{}", "v".repeat([10, 200, 900, 3000][i % 4]));
    let mut batch = bytes::BytesMut::new();
    for (i, k) in keys.iter().enumerate() {
        ringcache_protocol::encode::command(&mut batch, &["SET", k.as_str(), &value(i)]);
        ringcache_protocol::encode::command(&mut batch, &["APPEND", k.as_str(), "+"]);
        ringcache_protocol::encode::command(&mut batch, &["GET", k.as_str()]);
        ringcache_protocol::encode::command(&mut batch, &["INCR", &format!("{k}:n")]);
        ringcache_protocol::encode::command(&mut batch, &["INCR", &format!("{k}:n")]);
    }
    let mut r = c.node(0).raw();
    r.send(&batch);
    for (i, k) in keys.iter().enumerate() {
        let v = value(i);
        assert_eq!(r.read(), ok(), "SET {k}");
        assert_eq!(r.read(), Frame::Integer(v.len() as i64 + 1), "APPEND {k}");
        assert_eq!(r.read(), bulk(&format!("{v}+")), "GET {k}");
        assert_eq!(r.read(), Frame::Integer(1), "INCR {k}:n");
        assert_eq!(r.read(), Frame::Integer(2), "INCR {k}:n again");
    }
    // Two thirds of the keys live elsewhere: at least their 5 requests
    // each were forwarded (not run here from a stale copy).
    let forwarded: usize = info_field(c.node(0), "replication", "forwarded_requests").parse().expect("counter");
    assert!(forwarded >= 24 * 5, "node 0 forwarded {forwarded} requests");
}
