//! Quick start: connect through any node, then use typed calls.
//!
//!     scripts/local-cluster.sh &        # or a single node: cargo run --release -p ringcache-server
//!     cargo run -p ringcache-client --example quickstart -- 127.0.0.1:7000

use std::time::Duration;

use ringcache_client::{Client, Ttl};

#[tokio::main]
async fn main() -> ringcache_client::Result<()> {
    let seed = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6379".to_string());
    let client = Client::connect([seed]).await?;

    client.set("greeting", "hello").await?;
    println!("greeting = {:?}", client.get("greeting").await?);

    client.set_ex("session:42", "alice", Duration::from_secs(60)).await?;
    if let Ttl::Expires(left) = client.ttl("session:42").await? {
        println!("session:42 expires in {left:?}");
    }

    println!("visits = {}", client.incr_by("visits", 1).await?);

    // Multi-key calls are split by slot and gathered in order.
    client.mset(&[("a", "1"), ("b", "2"), ("c", "3")]).await?;
    println!("mget = {:?}", client.mget(&["a", "b", "c", "missing"]).await?);
    println!("deleted {}", client.del(&["a", "b", "c"]).await?);

    // Anything else: a raw command, routed by its first key.
    println!("strlen = {:?}", client.cmd(&["STRLEN", "greeting"]).await?);
    Ok(())
}
