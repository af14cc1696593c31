//! ringcache-client against real 3-node clusters: its typed methods agree
//! with the `redis` crate (in RESP2 and RESP3), keys land on the primaries
//! the slot table names, many tasks share one client (over one or several
//! connections per node) without mixing replies, pipelines keep their order
//! across nodes, requests ride through a node being killed or joining, and
//! an epoch change reloads the slot map before any MOVED.

use std::net::SocketAddr;
use std::time::Duration;

use ringcache_client::{Client, Options, Protocol, ReadFrom, Ttl};
use ringcache_protocol::Frame;
use ringcache_tests::{Cluster, Server, cluster_info_field, info_field, local_keys};

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

/// The redis crate's cluster connection to `c`, the reference answers.
fn redis_cluster(c: &Cluster) -> redis::cluster::ClusterConnection {
    let urls: Vec<String> = seeds(c).iter().map(|s| format!("redis://{s}/")).collect();
    redis::cluster::ClusterClient::new(urls).unwrap().get_connection().unwrap()
}

#[test]
fn typed_methods_agree_with_the_redis_crate() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let mut r = redis_cluster(&c);
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
        // Each GET ran exactly once: a retry (MOVED after a table change,
        // a lost connection) would show here; say which.
        let why = || format!("{served:?}; client {:?}\n{}", client.stats(), c.diagnose());
        assert_eq!(served[owners[0]], 0, "the primary served replica reads: {}", why());
        assert_eq!(served.iter().sum::<u64>(), 30, "{}", why());
        // Writes still go to the primary, whatever the read preference.
        client.set("rf:key", "w").await.unwrap();
        assert_eq!(c.node(owners[0]).raw().cmd(&["GET", "rf:key"]), Frame::Bulk("w".into()));
    });
}

/// The same typed calls through RESP2 and RESP3 clients and through the
/// redis crate give the same answers; raw replies decode in both (RESP3
/// maps, nulls), and the RESP3 client really speaks RESP3.
#[test]
fn resp3_and_resp2_agree_with_each_other_and_the_redis_crate() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let mut r = redis_cluster(&c);
    // What each client saw, per step, as text.
    let mut seen: Vec<Vec<String>> = Vec::new();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let p = format!("{protocol:?}");
        let got = runtime().block_on(async {
            let client = Client::with_options(seeds(&c), Options { protocol, ..Options::default() }).await.unwrap();
            let mut out = Vec::new();
            client.set(format!("{p}:s"), "v").await.unwrap();
            out.push(format!("{:?}", client.get(format!("{p}:s")).await.unwrap()));
            out.push(format!("{:?}", client.get(format!("{p}:missing")).await.unwrap()));
            out.push(client.incr_by(format!("{p}:n"), 7).await.unwrap().to_string());
            out.push(client.incr_by_float(format!("{p}:f"), 1.5).await.unwrap().to_string());
            out.push(client.set_nx(format!("{p}:s"), "w").await.unwrap().to_string());
            out.push(client.append(format!("{p}:s"), "xy").await.unwrap().to_string());
            out.push(client.expire(format!("{p}:s"), Duration::from_secs(100)).await.unwrap().to_string());
            out.push(format!("{:?}", client.ttl(format!("{p}:missing")).await.unwrap()));
            let keys: Vec<String> = (0..20).map(|i| format!("{p}:m{i}")).collect();
            let pairs: Vec<(String, String)> =
                keys.iter().map(|k| (k.clone(), format!("val{}", &k[p.len()..]))).collect();
            client.mset(&pairs).await.unwrap();
            let mut probe = keys.clone();
            probe.push(format!("{p}:none"));
            out.push(format!("{:?}", client.mget(&probe).await.unwrap()));
            out.push(client.exists(&probe).await.unwrap().to_string());
            out.push(client.del(&keys).await.unwrap().to_string());
            out.push(format!("{:?}", client.getdel(format!("{p}:s")).await.unwrap()));
            // A server error is the same error in both.
            out.push(format!("{:?}", client.cmd(&["INCR", &format!("{p}:f")]).await.unwrap_err()));
            // A map: CONFIG GET is a flat array in RESP2, a map in RESP3.
            let config = client.cmd(&["CONFIG", "GET", "maxmemory-policy"]).await.unwrap();
            let pairs: Vec<(Frame, Frame)> = match config {
                Frame::Map(m) => {
                    assert_eq!(protocol, Protocol::Resp3);
                    m
                }
                Frame::Array(a) => {
                    assert_eq!(protocol, Protocol::Resp2);
                    a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
                }
                other => panic!("{other:?}"),
            };
            out.push(format!("{pairs:?}"));
            // Every connection opened spoke what was asked.
            let addr: SocketAddr = seeds(&c)[0].parse().unwrap();
            client.ping().await.unwrap();
            for node in client.nodes() {
                if let Some(resp3) = client.speaks_resp3(node) {
                    assert_eq!(resp3, protocol == Protocol::Resp3, "{node} ({addr})");
                }
            }
            out
        });
        seen.push(got.into_iter().map(|s| s.replace(&p, "P")).collect());
    }
    assert_eq!(seen[0], seen[1], "RESP2 and RESP3 answers differ");
    // The redis crate on a third key space agrees on what it can express.
    let _: () = redis::cmd("SET").arg("rc:s").arg("v").query(&mut r).unwrap();
    let v: Option<String> = redis::cmd("GET").arg("rc:s").query(&mut r).unwrap();
    assert_eq!(seen[1][0], format!("{:?}", v.map(|v| bytes::Bytes::from(v.into_bytes()))));
    let n: i64 = redis::cmd("INCRBY").arg("rc:n").arg(7).query(&mut r).unwrap();
    assert_eq!(seen[1][2], n.to_string());
    let f: f64 = redis::cmd("INCRBYFLOAT").arg("rc:f").arg(1.5).query(&mut r).unwrap();
    assert_eq!(seen[1][3], f.to_string());
    let len: u64 = redis::cmd("APPEND").arg("rc:s").arg("xy").query(&mut r).unwrap();
    assert_eq!(seen[1][5], len.to_string());
}

/// RESP3 with a password says `HELLO 3 AUTH default <pw>`; RESP2 says AUTH.
#[test]
fn both_protocols_authenticate() {
    let s = Server::start(&["--requirepass", "s3cret"]);
    runtime().block_on(async {
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            let opts = Options { protocol, password: Some("s3cret".into()), ..Options::default() };
            let client = Client::with_options([s.addr.to_string()], opts).await.unwrap();
            client.set("k", "v").await.unwrap();
            assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
            assert_eq!(client.speaks_resp3(s.addr), Some(protocol == Protocol::Resp3));
            let wrong = Options {
                protocol,
                password: Some("nope".into()),
                deadline: Duration::from_millis(300),
                ..Options::default()
            };
            let e = Client::with_options([s.addr.to_string()], wrong).await.err().expect("wrong password refused");
            assert!(format!("{e}").contains("WRONGPASS"), "{e}");
        }
    });
}

/// A server that refuses HELLO (an old Redis-like server): the client falls
/// back to RESP2 and works. The fake answers HELLO with an error, CLUSTER
/// INFO/SLOTS with itself owning every slot, and GET with "fake".
#[test]
fn falls_back_to_resp2_when_hello_is_refused() {
    let rt = runtime();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                tokio::spawn(fake_old_server(sock, addr));
            }
        });
        let client = Client::connect([addr.to_string()]).await.unwrap();
        assert_eq!(client.speaks_resp3(addr), Some(false));
        assert_eq!(client.get("anything").await.unwrap().as_deref(), Some(&b"fake"[..]));
    });
}

async fn fake_old_server(mut sock: tokio::net::TcpStream, me: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = ringcache_protocol::Limits::default();
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = sock.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        input.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Ok(Some((frame, used))) = ringcache_protocol::decode_frame(&input, &limits) {
            input.drain(..used);
            let Frame::Array(args) = frame else { return };
            let words: Vec<String> =
                args.iter().map(|a| String::from_utf8_lossy(a.as_bytes().unwrap()).to_uppercase()).collect();
            let reply = match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["HELLO", ..] => "-ERR unknown command 'HELLO', with args beginning with: '3'\r\n".to_string(),
                ["CLUSTER", "INFO"] => {
                    let t = "cluster_state:ok\r\ncluster_current_epoch:1\r\n";
                    format!("${}\r\n{t}\r\n", t.len())
                }
                ["CLUSTER", "SLOTS"] => {
                    format!("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{}\r\n", me.port())
                }
                ["GET", _] => "$4\r\nfake\r\n".to_string(),
                ["PING"] => "+PONG\r\n".to_string(),
                _ => "-ERR unknown command\r\n".to_string(),
            };
            out.extend_from_slice(reply.as_bytes());
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// An explicit pipeline against one node: replies in the order the
/// commands were added, an error reply is its own command's error only.
#[test]
fn a_pipeline_keeps_order_and_errors_per_command() {
    let s = Server::start(&[]);
    runtime().block_on(async {
        for protocol in [Protocol::Resp2, Protocol::Resp3] {
            let client =
                Client::with_options([s.addr.to_string()], Options { protocol, ..Options::default() }).await.unwrap();
            let k = |name: &str| format!("{protocol:?}:{name}");
            let replies = client
                .pipeline()
                .set(k("a"), "1")
                .get(k("a"))
                .incr_by(k("a"), 41)
                .cmd(&["INCR", &k("text")])
                .set(k("text"), "abc")
                .cmd(&["INCR", &k("text")])
                .get(k("missing"))
                .del(k("a"))
                .execute()
                .await;
            assert_eq!(replies.len(), 8);
            assert_eq!(replies[0].as_ref().unwrap(), &Frame::Simple("OK".into()));
            assert_eq!(replies[1].as_ref().unwrap(), &Frame::Bulk("1".into()));
            assert_eq!(replies[2].as_ref().unwrap(), &Frame::Integer(42));
            assert_eq!(replies[3].as_ref().unwrap(), &Frame::Integer(1));
            assert_eq!(replies[4].as_ref().unwrap(), &Frame::Simple("OK".into()));
            match &replies[5] {
                Err(ringcache_client::Error::Server(e)) => assert!(e.contains("not an integer"), "{e}"),
                other => panic!("{other:?}"),
            }
            assert_eq!(replies[6].as_ref().unwrap(), &Frame::Null);
            assert_eq!(replies[7].as_ref().unwrap(), &Frame::Integer(1));
            assert!(client.pipeline().execute().await.is_empty());
        }
    });
}

/// A pipeline over keys of every node is split per node and gathered back
/// in order: each GET returns the value its own SET wrote.
#[test]
fn a_pipeline_across_nodes_is_split_and_gathered_in_order() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    runtime().block_on(async {
        let client = Client::connect(seeds(&c)).await.unwrap();
        let mut p = client.pipeline();
        for i in 0..300 {
            p.set(format!("pl:{i}"), format!("value {i}"));
        }
        for i in 0..300 {
            p.get(format!("pl:{i}"));
        }
        p.cmd(&["INCR", "pl:7"]); // an error in the middle of another node's batch
        p.incr_by("pl:counter", 5);
        let nodes: std::collections::HashSet<_> =
            (0..300).map(|i| client.primary_of(format!("pl:{i}")).unwrap()).collect();
        assert_eq!(nodes.len(), 3, "the keys should span every node");
        let replies = p.execute().await;
        assert_eq!(replies.len(), 602);
        for (i, r) in replies[..300].iter().enumerate() {
            assert_eq!(r.as_ref().unwrap(), &Frame::Simple("OK".into()), "SET {i}");
        }
        for (i, r) in replies[300..600].iter().enumerate() {
            assert_eq!(r.as_ref().unwrap(), &Frame::Bulk(format!("value {i}").into()), "GET {i}");
        }
        assert!(matches!(&replies[600], Err(ringcache_client::Error::Server(_))), "{:?}", replies[600]);
        assert_eq!(replies[601].as_ref().unwrap(), &Frame::Integer(5));
        // And the values are where single calls find them.
        for i in (0..300).step_by(37) {
            assert_eq!(client.get(format!("pl:{i}")).await.unwrap().unwrap(), format!("value {i}").as_bytes());
        }
    });
}

/// 200 tasks over 4 connections per node: every reply still answers its
/// own request (unique keys and values), and the connections exist.
#[test]
fn two_hundred_tasks_over_several_connections_per_node() {
    let c = Cluster::start(3, CALM);
    c.wait_converged(3);
    runtime().block_on(async {
        let opts = Options { connections_per_node: 4, ..Options::default() };
        let client = Client::with_options(seeds(&c), opts).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..200 {
            let client = client.clone();
            tasks.spawn(async move {
                for i in 0..50 {
                    let (k, v) = (format!("c{t}:k{i}"), format!("task {t} value {i} {}", "y".repeat(i * 3)));
                    client.set(&k, &v).await.unwrap();
                    let got = client.get(&k).await.unwrap().expect("just written");
                    assert_eq!(got, v.as_bytes(), "reply of another request");
                    if i % 10 == 0 {
                        // Pipelines share the connections too.
                        let r = client.pipeline().get(&k).incr_by(format!("{k}:n"), 2).execute().await;
                        assert_eq!(r[0].as_ref().unwrap(), &Frame::Bulk(v.clone().into()));
                        assert_eq!(r[1].as_ref().unwrap(), &Frame::Integer(2));
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_eq!(client.dbsize().await.unwrap(), 200 * 50 + 200 * 5);
        // Each node has the client's 4 connections (plus this probe's own).
        for i in 0..3 {
            let n: usize = info_field(c.node(i), "clients", "connected_clients").parse().unwrap();
            assert!(n >= 5, "node {i} has {n} clients");
        }
    });
}

/// The background check compares the cluster epoch with the map's and
/// reloads only on a change: a calm cluster causes no reload; after a node
/// joins, the client learns the new map by itself and writes to the
/// newcomer's slots go straight there, without a MOVED.
#[test]
fn an_epoch_change_reloads_the_slot_map_without_a_moved() {
    let mut c = Cluster::start(3, CALM);
    c.wait_converged(3);
    let rt = runtime();
    let opts = Options { refresh_every: Duration::from_millis(100), ..Options::default() };
    let client = rt.block_on(Client::with_options(seeds(&c), opts)).unwrap();
    // Epochs are each node's own count: compare with the map's source node.
    let epoch_of = |c: &Cluster, addr: SocketAddr| -> u64 {
        let i = (0..c.nodes.len()).find(|&i| c.nodes[i].is_some() && c.node(i).addr == addr).unwrap();
        cluster_info_field(&mut c.node(i).raw(), "cluster_current_epoch").parse().unwrap()
    };
    let start = client.stats();
    let source = start.source.unwrap();
    assert_eq!(start.epoch, Some(epoch_of(&c, source)));
    // Calm: checks go on, reloads do not.
    Server::eventually("five epoch checks", || client.stats().epoch_checks >= start.epoch_checks + 5);
    if epoch_of(&c, source) == start.epoch.unwrap() {
        assert_eq!(client.stats().refreshes, start.refreshes, "reloaded with an unchanged epoch");
    }
    let joined = c.add();
    c.wait_converged(4);
    let new_addr = c.node(joined).addr;
    Server::eventually("the client to load the new map", || {
        let s = client.stats();
        s.epoch == Some(epoch_of(&c, s.source.unwrap())) && client.nodes().contains(&new_addr)
    });
    // No request was made meanwhile: only the epoch check can have
    // reloaded the map.
    let after = client.stats();
    assert!(after.refreshes > start.refreshes);
    let mut to_new = 0;
    rt.block_on(async {
        for i in 0..300 {
            let k = format!("ep:{i}");
            client.set(&k, "x").await.unwrap();
            to_new += usize::from(client.primary_of(&k) == Some(new_addr));
        }
    });
    assert!(to_new > 0, "no key is owned by the new node");
    assert_eq!(client.stats().moved, after.moved, "writes met MOVED after the map was reloaded");
    assert!(local_keys(c.node(joined)) > 0);
}
