//! Sending a batch's replicated writes to the owners and counting acks.

use super::*;

impl Exec {
    /// Sends each owner its items in one message; returns which owners
    /// acknowledged everything. Stops waiting at `deadline`, or as soon as
    /// every item has its quorum (a slow or paused replica beyond the
    /// quorum does not hold the batch up).
    pub(super) async fn replicate(&mut self, shared: &Shared, deadline: Instant) -> HashMap<Arc<str>, bool> {
        // Per owner: its items, and whether some caller waits for them.
        let mut per_owner: HashMap<Arc<str>, OwnerBatch> = HashMap::new();
        for it in &self.items {
            for r in &it.replicas {
                let e = per_owner.entry(r.clone()).or_default();
                e.0.push((it.slot, it.op.clone()));
                e.1 |= it.need > 1;
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut owners: Vec<Arc<str>> = Vec::new();
        for (owner, (ops, ack)) in per_owner {
            let Some(link) = shared.links.get(&owner) else { continue };
            let done = ack.then(|| Ack { tx: tx.clone(), id: owners.len() });
            if ack {
                owners.push(owner);
            }
            // A full queue (4096 messages) means the link is far behind:
            // the writes are counted as dropped hints rather than holding
            // every client of this node up.
            link.try_replicate(ops, done);
        }
        drop(tx);
        let mut acked: HashMap<Arc<str>, bool> = HashMap::new();
        let mut answered = 0;
        while answered < owners.len() && !self.quorums_met(&acked) {
            match timeout_at(deadline, rx.recv()).await {
                Ok(Some((id, ok))) => {
                    answered += 1;
                    acked.insert(owners[id].clone(), ok);
                }
                Ok(None) | Err(_) => break,
            }
        }
        acked
    }

    pub(super) fn quorums_met(&self, acked: &HashMap<Arc<str>, bool>) -> bool {
        self.items.iter().all(|it| it.short(acked).is_none())
    }
}

impl Item {
    /// `None` when the owners that hold this item (this node and the
    /// replicas in `acked` that acknowledged) make its quorum, else
    /// (have, need).
    pub(super) fn short(&self, acked: &HashMap<Arc<str>, bool>) -> Option<(usize, usize)> {
        if self.need <= 1 {
            return None;
        }
        let n = self.replicas.iter().filter(|r| acked.get(*r).copied().unwrap_or(false)).count();
        crate::cluster::coordinate::quorum_short(self.need, n)
    }
}
