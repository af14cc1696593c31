//! A load loop: N tasks sharing one client do SET+GET for a few seconds and
//! print the rate. All tasks' requests share the client's connections (one
//! per node unless a fourth argument says more) and are pipelined
//! automatically.
//!
//!     cargo run --release -p ringcache-client --example load_loop -- 127.0.0.1:7000 100 5 [connections-per-node]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> ringcache_client::Result<()> {
    let mut args = std::env::args().skip(1);
    let seed = args.next().unwrap_or_else(|| "127.0.0.1:6379".to_string());
    let tasks: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let opts = ringcache_client::Options {
        connections_per_node: args.next().and_then(|s| s.parse().ok()).unwrap_or(1),
        ..Default::default()
    };
    let client = ringcache_client::Client::with_options([seed], opts).await?;
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (client, ops) = (client.clone(), ops.clone());
        set.spawn(async move {
            let mut i = t;
            while Instant::now() < stop {
                let key = format!("load:{}", i % 100_000);
                client.set(&key, "0123456789").await?;
                client.get(&key).await?;
                ops.fetch_add(2, Relaxed);
                i += tasks;
            }
            Ok::<(), ringcache_client::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task")?;
    }
    println!("{tasks} tasks: {:.0} ops/s", ops.load(Relaxed) as f64 / secs as f64);
    Ok(())
}
