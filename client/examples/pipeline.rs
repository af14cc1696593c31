//! Explicit pipelines: commands collected, then sent in one batch per node
//! (split by slot across a cluster), replies returned in the order added.
//!
//!     cargo run -p ringcache-client --example pipeline -- 127.0.0.1:7000

use ringcache_client::{Client, Error, protocol::Frame};

#[tokio::main]
async fn main() -> ringcache_client::Result<()> {
    let seed = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6379".to_string());
    let client = Client::connect([seed]).await?;

    // A thousand writes and reads in two round trips per node.
    let mut p = client.pipeline();
    for i in 0..1000 {
        p.set(format!("item:{i}"), format!("value {i}"));
    }
    for i in 0..1000 {
        p.get(format!("item:{i}"));
    }
    let replies = p.execute().await;
    let found = replies[1000..].iter().filter(|r| matches!(r, Ok(Frame::Bulk(_)))).count();
    println!("{} replies, {found} values read back", replies.len());

    // Errors belong to their own command; the others still run.
    let replies = client.pipeline().set("word", "hello").cmd(&["INCR", "word"]).get("word").execute().await;
    for r in &replies {
        match r {
            Ok(frame) => println!("ok:    {frame:?}"),
            Err(Error::Server(e)) => println!("error: {e}"),
            Err(e) => return Err(e.clone()),
        }
    }
    Ok(())
}
