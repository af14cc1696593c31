//! Load through client libraries: 100 concurrent tasks doing SET then GET
//! (100-byte values, 100 000 keys) for a fixed time, through
//! ringcache-client and through the `redis` crate's multiplexed connection,
//! against one ringcache node; then ringcache-client against a 3-node
//! cluster. Servers are started here on free loopback ports and stopped at
//! the end. Rounds alternate between the clients; medians are reported.
//!
//!     cargo build --release -p ringcache-server
//!     cargo run --release -p ringcache-benches --bin client_load -- [ringcache-bin] [seconds] [rounds] [connections-per-node]
//!
//! `connections-per-node` sets `Options::connections_per_node` of
//! ringcache-client (default: the client's default).

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const TASKS: usize = 100;
const KEYS: u64 = 100_000;

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn start(bin: &str, n: usize) -> (Vec<Node>, Vec<SocketAddr>) {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let mut nodes = Vec::new();
    for (i, (p, cp)) in ports.iter().enumerate() {
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--port", &p.to_string(), "--cluster-port", &cp.to_string()]);
        cmd.args(["--node-name", &format!("n{i}"), "--cluster-secret", "bench-secret"]);
        for (j, (_, seed)) in ports.iter().enumerate() {
            if j != i {
                cmd.args(["--seed", &format!("127.0.0.1:{seed}")]);
            }
        }
        nodes.push(Node(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn ringcache")));
    }
    let addrs: Vec<SocketAddr> = ports.iter().map(|(p, _)| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for a in &addrs {
        while TcpStream::connect(a).is_err() {
            assert!(Instant::now() < deadline, "ringcache did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (nodes, addrs)
}

fn key(i: u64) -> String {
    format!("key:{i:012}")
}

/// Runs `op` from TASKS tasks for `secs`; returns operations per second.
async fn drive<F, Fut>(secs: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS as u64 {
        let (op, done) = (op.clone(), done.clone());
        tasks.spawn(async move {
            let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            while Instant::now() < stop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                op(x % KEYS).await;
                done.fetch_add(2, Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    done.load(Relaxed) as f64 / secs as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).cloned().unwrap_or_else(|| "target/release/ringcache".into());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let defaults = ringcache_client::Options::default();
    let opts = ringcache_client::Options {
        connections_per_node: args.get(4).and_then(|s| s.parse().ok()).unwrap_or(defaults.connections_per_node),
        ..defaults
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let value = Arc::new(vec![b'x'; 100]);
    println!("command: {}", args.join(" "));
    println!("{TASKS} tasks, SET+GET pairs of 100-byte values over {KEYS} keys, {secs} s per run, {rounds} rounds");
    println!("ringcache-client: {:?}, {} connection(s) per node", opts.protocol, opts.connections_per_node);

    let (_single, addrs) = start(&bin, 1);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let v = value.clone();
        let client =
            rt.block_on(ringcache_client::Client::with_options([addrs[0].to_string()], opts.clone())).expect("connect");
        ours.push(rt.block_on(drive(secs, move |i| {
            let (c, v) = (client.clone(), v.clone());
            async move {
                c.set(key(i), v.as_slice()).await.expect("set");
                c.get(key(i)).await.expect("get");
            }
        })));
        let v = value.clone();
        let con = rt
            .block_on(async {
                redis::Client::open(format!("redis://{}/", addrs[0]))?.get_multiplexed_async_connection().await
            })
            .expect("redis connect");
        theirs.push(rt.block_on(drive(secs, move |i| {
            let (mut c, v) = (con.clone(), v.clone());
            async move {
                let _: () = redis::cmd("SET").arg(key(i)).arg(v.as_slice()).query_async(&mut c).await.expect("set");
                let _: Option<Vec<u8>> = redis::cmd("GET").arg(key(i)).query_async(&mut c).await.expect("get");
            }
        })));
    }
    let (o, t) = (median(ours.clone()), median(theirs.clone()));
    println!("single node, ringcache-client:          {o:>10.0} ops/s  (rounds {ours:.0?})");
    println!("single node, redis crate (multiplexed): {t:>10.0} ops/s  (rounds {theirs:.0?})");
    println!("ratio ringcache-client / redis crate:   {:.2}x", o / t);
    drop(_single);

    let (_cluster, addrs) = start(&bin, 3);
    std::thread::sleep(Duration::from_secs(2)); // let the three nodes converge before routing
    let mut cluster = Vec::new();
    for _ in 0..rounds {
        let v = value.clone();
        let client = rt
            .block_on(ringcache_client::Client::with_options(addrs.iter().map(ToString::to_string), opts.clone()))
            .expect("connect");
        cluster.push(rt.block_on(drive(secs, move |i| {
            let (c, v) = (client.clone(), v.clone());
            async move {
                c.set(key(i), v.as_slice()).await.expect("set");
                c.get(key(i)).await.expect("get");
            }
        })));
    }
    println!("3-node cluster, ringcache-client:       {:>10.0} ops/s  (rounds {cluster:.0?})", median(cluster.clone()));
}
