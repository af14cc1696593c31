//! Explicit pipelines: commands collected first, then sent together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringcache_protocol::Frame;

use crate::conn::{Conn, Pending};
use crate::retry::{Outcome, Retry, classify};
use crate::routing::routing_key;
use crate::{Client, Error, Result};

/// Commands queued to run together; built by [`Client::pipeline`].
///
/// [`execute`](Pipeline::execute) groups the commands by the node that owns
/// each one's key (by slot), sends each node's group back to back on one
/// connection (every node's group is sent before any reply is awaited) and
/// returns one result per command, in the order they were added. A command
/// is retried on its own terms, as single calls are: after `MOVED`,
/// `TRYAGAIN` or a failure before sending always, after a lost connection
/// only if idempotent; a retried command runs after the rest of its batch.
/// Commands are not a transaction: others' commands may interleave.
///
/// ```no_run
/// # async fn demo(client: ringcache_client::Client) {
/// let replies = client.pipeline().set("a", "1").get("a").incr_by("n", 5).execute().await;
/// assert_eq!(replies.len(), 3);
/// for reply in replies {
///     println!("{:?}", reply);   // Ok(Frame) or Err(Error::Server(..)) per command
/// }
/// # }
/// ```
pub struct Pipeline {
    client: Client,
    cmds: Vec<Vec<Bytes>>,
}

fn arg(a: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(a.as_ref())
}

impl Pipeline {
    pub(crate) fn new(client: Client) -> Pipeline {
        Pipeline { client, cmds: Vec::new() }
    }

    /// Any command, routed by its first key (keyless ones to any node).
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> &mut Self {
        self.cmds.push(args.iter().map(arg).collect());
        self
    }

    /// Queues GET.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.cmds.push(vec![Bytes::from_static(b"GET"), arg(key)]);
        self
    }

    /// Queues SET.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.cmds.push(vec![Bytes::from_static(b"SET"), arg(key), arg(value)]);
        self
    }

    /// SET with a TTL (PX).
    pub fn set_ex(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, ttl: Duration) -> &mut Self {
        let ms = ttl.as_millis().max(1).to_string();
        self.cmds.push(vec![Bytes::from_static(b"SET"), arg(key), arg(value), Bytes::from_static(b"PX"), arg(ms)]);
        self
    }

    /// Queues INCRBY.
    pub fn incr_by(&mut self, key: impl AsRef<[u8]>, by: i64) -> &mut Self {
        self.cmds.push(vec![Bytes::from_static(b"INCRBY"), arg(key), arg(by.to_string())]);
        self
    }

    /// DEL of one key (a multi-key DEL in a pipeline must keep to one slot).
    pub fn del(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.cmds.push(vec![Bytes::from_static(b"DEL"), arg(key)]);
        self
    }

    /// Queues PEXPIRE.
    pub fn expire(&mut self, key: impl AsRef<[u8]>, ttl: Duration) -> &mut Self {
        self.cmds.push(vec![Bytes::from_static(b"PEXPIRE"), arg(key), arg(ttl.as_millis().to_string())]);
        self
    }

    /// Commands queued.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Runs the commands; one result per command, in the order added.
    /// Error replies are `Err(Error::Server(..))` of their own command.
    pub async fn execute(&self) -> Vec<Result<Frame>> {
        let client = &self.client;
        let mut results: Vec<Option<Result<Frame>>> = (0..self.cmds.len()).map(|_| None).collect();
        let mut todo: Vec<usize> = (0..self.cmds.len()).collect();
        let mut retry = Retry::new(&client.inner.opts);
        while !todo.is_empty() {
            retry.attempts += 1;
            let routing = client.routing();
            let seen = routing.version;
            // Groups per node, each in the order its commands were added.
            let mut groups: Vec<(Option<SocketAddr>, Vec<usize>)> = Vec::new();
            for &i in &todo {
                let args = &self.cmds[i];
                let addr = client.addr_in(&routing, routing_key(args), client.replica_read(args));
                match groups.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, g)) => g.push(i),
                    None => groups.push((addr, vec![i])),
                }
            }
            drop(routing);
            // Everything is sent before any reply is awaited; the
            // connections are held until the replies are in.
            let mut sent: Vec<(usize, Result<Pending>)> = Vec::with_capacity(todo.len());
            let mut held: Vec<Arc<Conn>> = Vec::new();
            for (addr, group) in groups {
                let batch = match addr {
                    None => Err(Error::NotSent("no node known".into())),
                    Some(a) => match client.conn(a).await {
                        Ok(c) => {
                            let args: Vec<&[Bytes]> = group.iter().map(|&i| self.cmds[i].as_slice()).collect();
                            let r = c.send_many(&args).await;
                            held.push(c);
                            r
                        }
                        Err(e) => Err(e),
                    },
                };
                match batch {
                    Ok(pending) => sent.extend(group.into_iter().zip(pending.into_iter().map(Ok))),
                    Err(e) => sent.extend(group.into_iter().map(|i| (i, Err(e.clone())))),
                }
            }
            let mut again = Vec::new();
            let mut last = None;
            for (i, p) in sent {
                let reply = match p {
                    Ok(p) => p.reply().await,
                    Err(e) => Err(e),
                };
                match classify(reply, &self.cmds[i]) {
                    Outcome::Done(r) => results[i] = Some(r),
                    Outcome::Retry(e) => {
                        again.push(i);
                        last = Some(e);
                    }
                }
            }
            drop(held);
            again.sort_unstable();
            if let Some(last) = last
                && let Err(gave_up) = client.before_retry(&mut retry, seen, last).await
            {
                for &i in &again {
                    results[i] = Some(Err(gave_up.clone()));
                }
                again.clear();
            }
            todo = again;
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::Protocol("no reply".into())))).collect()
    }
}
