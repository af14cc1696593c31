//! ringcache-client against real 3-node clusters: its typed methods agree
//! with the `redis` crate, keys land on the primaries the slot table names,
//! many tasks share one client without mixing replies, and requests ride
//! through a node being killed.

use std::time::Duration;

use ringcache_client::{Client, Options, ReadFrom, Ttl};
use ringcache_protocol::Frame;
use ringcache_tests::{Cluster, local_keys};

const CALM: &[&str] = &["--gossip-suspect-ms", "2000"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn seeds(c: &Cluster) -> Vec<String> {
    (0..c.nodes.len()).filter(|&i| c.nodes[i].is_some()).map(|i| c.node(i).addr.to_string()).collect()
}

/// What a SET+GET loop saw: requests that failed after the client's
/// retries, and reads that missed a value just written.
#[derive(Debug, Default)]
struct LoopResult {
    errors: usize,
    misses: usize,
}

/// SET then GET of a fresh key, `ops` times, through `client`, running
/// `event` before operation 500.
///
/// Errors are the client's business: after retries, none may remain. A miss
/// (the SET was acknowledged, the GET finds nothing) is the cluster's:
/// rebalancing copies slots to a joining node and reads through to the
/// previous owner meanwhile, so there must be none either.
fn set_get_loop(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    prefix: &str,
    ops: usize,
    mut event: impl FnMut(),
) -> LoopResult {
    let mut r = LoopResult::default();
    for i in 0..ops {
        if i == 500 {
            event();
        }
        let (k, v) = (format!("{prefix}:{i}"), format!("v{i}"));
        let outcome = rt.block_on(async {
            client.set(&k, &v).await?;
            client.get(&k).await
        });
        match outcome {
            Ok(Some(got)) if got == v.as_bytes() => {}
            Ok(None) => {
                r.misses += 1;
                eprintln!("op {i}: acknowledged write not found (ownership moved)");
            }
            other => {
                r.errors += 1;
                eprintln!("op {i}: {other:?}");
            }
        }
    }
    eprintln!("{prefix}: {r:?}");
    r
}

#[test]
fn typed_methods_agree_with_the_redis_crate() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let redis =
        redis::cluster::ClusterClient::new(seeds(&c).iter().map(|s| format!("redis://{s}/")).collect::<Vec<_>>())
            .unwrap();
    let mut r = redis.get_connection().unwrap();
    runtime().block_on(async {
        let ours = Client::connect(seeds(&c)).await.unwrap();
        // Same operations on two key spaces: "o:" through ours, "r:" through redis-rs.
        ours.set("o:a", "1").await.unwrap();
        let _: () = redis::cmd("SET").arg("r:a").arg("1").query(&mut r).unwrap();
        let got = ours.get("o:a").await.unwrap();
        let want: Option<Vec<u8>> = redis::cmd("GET").arg("r:a").query(&mut r).unwrap();
        assert_eq!(got.map(|b| b.to_vec()), want);
        assert_eq!(ours.get("o:missing").await.unwrap(), None);
        let n = ours.incr_by("o:n", 41).await.unwrap();
        let m: i64 = redis::cmd("INCRBY").arg("r:n").arg(41).query(&mut r).unwrap();
        assert_eq!(n, m);
        assert_eq!(ours.append("o:a", "xyz").await.unwrap(), 4);
        let m: u64 = redis::cmd("APPEND").arg("r:a").arg("xyz").query(&mut r).unwrap();
        assert_eq!(m, 4);
        assert_eq!(ours.strlen("o:a").await.unwrap(), 4);
        assert!(ours.set_nx("o:nx", "v").await.unwrap());
        assert!(!ours.set_nx("o:nx", "w").await.unwrap());
        let keys: Vec<String> = (0..50).map(|i| format!("o:k{i}")).collect();
        let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
        ours.mset(&pairs).await.unwrap();
        let mut probe = keys.clone();
        probe.insert(7, "o:absent".into());
        let values = ours.mget(&probe).await.unwrap();
        for (k, v) in probe.iter().zip(&values) {
            let want: Option<String> = redis::cmd("GET").arg(k).query(&mut r).unwrap();
            assert_eq!(v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()), want, "{k}");
        }
        assert_eq!(ours.exists(&probe).await.unwrap(), 50);
        assert!(ours.expire("o:a", Duration::from_secs(100)).await.unwrap());
        match ours.ttl("o:a").await.unwrap() {
            Ttl::Expires(d) => assert!(d > Duration::from_secs(90) && d <= Duration::from_secs(100), "{d:?}"),
            other => panic!("{other:?}"),
        }
        assert!(ours.persist("o:a").await.unwrap());
        assert_eq!(ours.ttl("o:a").await.unwrap(), Ttl::Persistent);
        assert_eq!(ours.ttl("o:missing").await.unwrap(), Ttl::Missing);
        assert_eq!(ours.getdel("o:a").await.unwrap().as_deref(), Some(&b"1xyz"[..]));
        assert_eq!(ours.del(&keys).await.unwrap(), 50);
        // DBSIZE is cluster-wide on every node: each key counted once.
        let total = ours.dbsize().await.unwrap();
        for i in 0..3 {
            assert_eq!(c.node(i).raw().cmd(&["DBSIZE"]), Frame::Integer(total as i64));
        }
        match ours.cmd(&["INCR", "o:nx"]).await {
            Err(ringcache_client::Error::Server(e)) => assert!(e.contains("not an integer"), "{e}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn keys_land_on_the_primaries_of_their_slots() {
    // One copy per key, so what each node holds is what it is primary for.
    let c = Cluster::start(3, &[CALM, &["--replicas", "1", "--write-quorum", "1"]].concat());
    c.wait_converged(3);
    runtime().block_on(async {
        let client = Client::connect(seeds(&c)).await.unwrap();
        for i in 0..10_000 {
            client.set(format!("k:{i}"), i.to_string()).await.unwrap();
        }
    });
    // Each key is on the node CLUSTER SLOTS names as its primary.
    let total: i64 = (0..3)
        .map(|i| {
            let n = local_keys(c.node(i));
            assert!(n > 2000, "node {i} holds only {n} keys");
            n
        })
        .sum();
    assert_eq!(total, 10_000);
    for i in (0..10_000).step_by(97) {
        let key = format!("k:{i}");
        let primary = c.owners_of(0, &key)[0];
        let mut r = c.node(primary).raw();
        assert_eq!(r.cmd(&["READONLY"]), Frame::Simple("OK".into()));
        assert_eq!(r.cmd(&["EXISTS", &key]), Frame::Integer(1), "{key} is not on its primary");
    }
}

#[test]
fn two_hundred_tasks_share_one_client() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    runtime().block_on(async {
        let client = Client::connect(seeds(&c)).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..200 {
            let client = client.clone();
            tasks.spawn(async move {
                for i in 0..50 {
                    let (k, v) = (format!("t{t}:k{i}"), format!("task {t} value {i} {}", "x".repeat(i)));
                    client.set(&k, &v).await.unwrap();
                    let got = client.get(&k).await.unwrap().expect("just written");
                    assert_eq!(got, v.as_bytes(), "reply of another request");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_eq!(client.dbsize().await.unwrap(), 200 * 50);
    });
}

#[test]
fn requests_ride_through_a_killed_node() {
    let mut c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let rt = runtime();
    let client = rt
        .block_on(Client::with_options(seeds(&c), Options { deadline: Duration::from_secs(15), ..Options::default() }))
        .unwrap();
    let r = set_get_loop(&rt, &client, "loop", 3000, || c.kill(2));
    assert_eq!((r.errors, r.misses), (0, 0), "requests failed after their retries, or missed: {r:?}");
}

/// A node joining moves slots: the client meets MOVED, refreshes its map and
/// carries on, with no request failing (see `set_get_loop` on misses).
#[test]
fn requests_ride_through_a_joining_node() {
    let mut c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let rt = runtime();
    let client = rt.block_on(Client::connect(seeds(&c))).unwrap();
    let r = set_get_loop(&rt, &client, "join", 3000, || assert_eq!(c.add(), 3));
    assert_eq!((r.errors, r.misses), (0, 0), "requests failed after their retries, or missed: {r:?}");
    c.wait_converged(4);
    // The newcomer owns slots now, and the client routes to it.
    assert!(rt.block_on(async {
        client.refresh_topology().await.unwrap();
        for i in 0..200 {
            client.set(format!("after:{i}"), "x").await.unwrap();
        }
        true
    }));
    assert!(local_keys(c.node(3)) > 0, "the new node received no keys");
}

/// GET calls node `i` has run (INFO commandstats).
fn gets_on(c: &Cluster, i: usize) -> u64 {
    let Frame::Bulk(info) = c.node(i).raw().cmd(&["INFO", "commandstats"]) else { panic!() };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

#[test]
fn reads_go_to_replicas_when_asked() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let owners = c.owners_of(0, "rf:key");
    runtime().block_on(async {
        let opts = Options { read_from: ReadFrom::PreferReplica, ..Options::default() };
        let client = Client::with_options(seeds(&c), opts).await.unwrap();
        client.set("rf:key", "v").await.unwrap();
        // A replica answers from its own copy, which follows the write.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while client.get("rf:key").await.unwrap().as_deref() != Some(&b"v"[..]) {
            assert!(std::time::Instant::now() < deadline, "replicas never got the write");
        }
        let before: Vec<u64> = (0..3).map(|i| gets_on(&c, i)).collect();
        for _ in 0..30 {
            assert_eq!(client.get("rf:key").await.unwrap().as_deref(), Some(&b"v"[..]));
        }
        let after: Vec<u64> = (0..3).map(|i| gets_on(&c, i)).collect();
        let served: Vec<u64> = (0..3).map(|i| after[i] - before[i]).collect();
        assert_eq!(served[owners[0]], 0, "the primary served replica reads: {served:?}");
        assert_eq!(served.iter().sum::<u64>(), 30, "{served:?}");
        // Writes still go to the primary, whatever the read preference.
        client.set("rf:key", "w").await.unwrap();
        assert_eq!(c.node(owners[0]).raw().cmd(&["GET", "rf:key"]), Frame::Bulk("w".into()));
    });
}
