//! Handles on the peer links: what the rest of the node holds to send a
//! member replicated writes and calls ([`Link`]), the registry of them by
//! member name ([`Links`]) and what a link shows ([`LinkStats`]). The tasks
//! behind the handles (connections, hints, replies) are `net::link`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// Why a link could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Not connected (or too busy): the request was never sent.
    Unreachable,
    /// The connection broke after the request was sent: it may have run.
    Closed,
}

/// What a link is asked to do.
#[derive(Debug)]
pub enum Msg {
    /// Replicated writes, each `(slot, encoded RC.PUT/RC.DEL)`. `done`, if
    /// given, learns whether every one was acknowledged.
    Repl { ops: Vec<(u16, Bytes)>, done: Option<Ack> },
    /// `count` requests encoded in `req`; `done` gets their raw replies.
    Call { req: Bytes, count: usize, done: oneshot::Sender<Result<Vec<Bytes>, LinkError>> },
}

/// Where a link reports whether a group of replicated writes was
/// acknowledged: one channel per batch collects every owner's answer, so
/// the batch can stop waiting as soon as its quorums are met.
#[derive(Debug)]
pub struct Ack {
    pub tx: mpsc::UnboundedSender<(usize, bool)>,
    pub id: usize,
}

impl Ack {
    pub fn send(self, ok: bool) {
        let _ = self.tx.send((self.id, ok));
    }
}

/// What the rest of the node sees of a link.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub connected: AtomicBool,
    /// The last connection attempt failed (and none succeeded since).
    pub down: AtomicBool,
    /// Requests sent and not yet answered.
    pub inflight: AtomicU64,
    /// Unix ms at which the oldest unanswered request was sent (0: none).
    pub oldest_ms: AtomicU64,
    pub hints: AtomicU64,
    pub hint_bytes: AtomicU64,
    pub hints_stored: AtomicU64,
    pub hints_replayed: AtomicU64,
    pub hints_dropped: AtomicU64,
    /// Hints not replayed because their write outlived the tombstone grace.
    pub hints_expired: AtomicU64,
    pub ops_sent: AtomicU64,
    pub calls_sent: AtomicU64,
    pub connects: AtomicU64,
}

/// A handle on one member's link: two connections ("lanes"). The
/// replication lane carries replicated writes, reads and transfer control,
/// which the peer answers at once; the forward lane carries forwarded
/// commands, which the peer may hold while they wait for their own quorum.
/// Apart, a forwarded write waiting for a quorum can never hold up the
/// acknowledgements that quorum needs (two nodes forwarding to each other
/// would otherwise wait on each other until the timeout).
#[derive(Debug, Clone)]
pub struct Link {
    pub name: Arc<str>,
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) fwd: mpsc::Sender<Msg>,
    pub stats: Arc<LinkStats>,
}

impl Link {
    /// A link whose both lanes feed `tx` (no task behind it).
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, tx: mpsc::Sender<Msg>) -> Link {
        Link { name: name.into(), tx: tx.clone(), fwd: tx, stats: Arc::default() }
    }

    pub fn connected(&self) -> bool {
        self.stats.connected.load(Relaxed)
    }

    /// Connected, or still making its first connection: what the write
    /// quorum counts (a member that just joined is reachable before its
    /// link is up; one whose connection attempt failed is not).
    pub fn reachable(&self) -> bool {
        !self.stats.down.load(Relaxed)
    }

    /// Queues `msg`, waiting while the channel is full (backpressure); a
    /// link whose task is gone answers as unreachable.
    pub async fn send(&self, msg: Msg) {
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(msg).await {
            fail(msg, LinkError::Unreachable);
        }
    }

    /// Queues `count` requests without waiting; fails at once (unsent) if
    /// the queue is full. A link that is connecting answers when the
    /// attempt ends; one that is down refuses them unsent. `forward`: on
    /// the forward lane (RC.FWD), else on the replication lane.
    pub fn try_call(
        &self,
        req: Bytes,
        count: usize,
        forward: bool,
    ) -> Result<oneshot::Receiver<Result<Vec<Bytes>, LinkError>>, LinkError> {
        let (done, rx) = oneshot::channel();
        let tx = if forward { &self.fwd } else { &self.tx };
        tx.try_send(Msg::Call { req, count, done }).map_err(|_| LinkError::Unreachable)?;
        Ok(rx)
    }

    /// Queues replicated writes without waiting. False: the queue is full
    /// (the caller counts them as dropped hints).
    pub fn try_replicate(&self, ops: Vec<(u16, Bytes)>, done: Option<Ack>) -> bool {
        match self.tx.try_send(Msg::Repl { ops, done }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => {
                let n = if let Msg::Repl { ops, done } = m {
                    if let Some(d) = done {
                        d.send(false);
                    }
                    ops.len()
                } else {
                    0
                };
                self.stats.hints_dropped.fetch_add(n as u64, Relaxed);
                false
            }
        }
    }

    /// Sends `count` requests and waits for their raw replies.
    pub async fn call(&self, req: Bytes, count: usize) -> Result<Vec<Bytes>, LinkError> {
        let (done, rx) = oneshot::channel();
        self.send(Msg::Call { req, count, done }).await;
        rx.await.unwrap_or(Err(LinkError::Closed))
    }
}

fn fail(msg: Msg, e: LinkError) {
    match msg {
        Msg::Repl { done, .. } => {
            if let Some(d) = done {
                d.send(false);
            }
        }
        Msg::Call { done, .. } => {
            let _ = done.send(Err(e));
        }
    }
}

/// The slot of a replicated message that concerns no slot (`RC.FLUSH`):
/// replayed from the hints to the member whatever it owns then.
pub const ANY_SLOT: u16 = u16::MAX;

/// Every link of this node, by member name.
#[derive(Debug, Default)]
pub struct Links {
    map: RwLock<HashMap<Arc<str>, Link>>,
}

impl Links {
    pub fn get(&self, name: &str) -> Option<Link> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    pub fn all(&self) -> Vec<Link> {
        let mut v: Vec<Link> =
            self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The link to `name`, made by `make` if there is none yet.
    pub fn get_or_insert(&self, name: &str, make: impl FnOnce(Arc<str>) -> Link) {
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !map.contains_key(name) {
            let name: Arc<str> = name.into();
            map.insert(name.clone(), make(name));
        }
    }
}
