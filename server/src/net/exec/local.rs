//! Requests this node coordinates: reads (with read-through and quorum
//! reads) and writes (fetch first, quorum precheck, replicated items).

use crate::cluster::coordinate::quorum_reachable;
use crate::cluster::settle::Source;

use super::*;

impl Exec {
    /// Runs a request this node coordinates; a write is replicated.
    pub(super) fn local(&mut self, env: &mut Env<'_>, spec: &'static Spec, args: Args<'_>, t: &Topology) {
        if !spec.write {
            // A slot still arriving from its previous owner: a local miss
            // reads through to that owner (DESIGN §5), so a moving key is
            // never a miss.
            if spec.first_key == 1
                && spec.last_key == 1
                && env.shared.rebalance.importing() > 0
                && let slot = key_slot(args.get(1))
                && let Some(from) = env.shared.rebalance.importing_from(slot)
                && !env.shared.store.with_key(args.get(1), env.now_ms, |k| k.exists() || k.tombstone().is_some())
            {
                env.shared.rebalance.read_through.fetch_add(1, Relaxed);
                // The sender first; the slot's other owners too, for when
                // the sender cannot answer (it failed while sending, or is
                // across a partition): a co-owner's copy beats an error.
                let mut ask = vec![(from.clone(), env.shared.links.get(&from))];
                let me = t.myself().name.as_str();
                for &i in t.table.owners(slot) {
                    let name = t.table.members[usize::from(i)].name.as_str();
                    if name != me && *name != *from {
                        ask.push((Arc::from(name), env.shared.links.get(name)));
                    }
                }
                return self.ask_read(env, args, slot, ask, 1, true);
            }
            if spec.first_key == 1 && spec.last_key == 1 && env.shared.config.read_quorum > 1 && !env.conn.share {
                let slot = key_slot(args.get(1));
                let owners = t.table.owners(slot);
                let need = quorum(env.shared.config.read_quorum, owners.len());
                if need > 1 {
                    return self.quorum_read(env, args, t, slot, need);
                }
            }
            return self.run_here(env, args);
        }
        if spec.first_key <= 0 {
            return self.run_here(env, args);
        }
        let keys = fetch::keys_of(spec, args);
        // A write must see its keys' current state (INCR, APPEND, SET NX,
        // DEL...): where a slot is importing or unsettled, its keys are
        // fetched first (`cluster::settle`). A client's request was held
        // for that in `run`; a forwarded one's fetch runs after this
        // batch, then it is answered -TRYAGAIN (its forwarding node sends
        // it again, within its deadline) or the fetch's refusal.
        if self.keepers_refused(env, spec, args, t) {
            return;
        }
        let fetches = self.fetches_for(env, spec, args, t);
        if !fetches.is_empty() {
            let unsettled = fetches.iter().any(|(_, f)| f.from.iter().any(|(_, s)| *s == Source::CoOwner));
            let text: &[u8] = if unsettled {
                env.shared.rebalance.settle_fetches.fetch_add(1, Relaxed);
                b"TRYAGAIN this key's owners changed; fetching its newest state; retry"
            } else {
                b"TRYAGAIN this key is moving to this node; retry"
            };
            // Its reply waits for the fetch: a fetch that fails refuses it
            // for good instead (`coordinate::fetch_step`).
            let first = self.fetches.len();
            self.fetches.extend(fetches);
            // The oldest generation of the batch's fetches (it only grows).
            self.fetch_gen.get_or_insert(self.run_gen);
            rejected(env, spec);
            self.seal();
            let start = self.out.len();
            encode::error(&mut self.out, text);
            let reply = (start, self.out.len());
            self.chunks.push(Chunk::Fetching { reply, fetches: (first, self.fetches.len()) });
            self.mark = reply.1;
            self.deferred = true;
            return;
        }
        // Replicas of each key and the quorum; refuse before running when
        // too few owners are reachable.
        let mut plans: Vec<KeyPlan<'_>> = Vec::new();
        for key in keys {
            let slot = key_slot(key);
            let owners = t.table.owners(slot);
            if owners.len() < 2 {
                continue;
            }
            let need = quorum(env.shared.config.write_quorum, owners.len());
            let mut replicas: Vec<Arc<str>> = Vec::with_capacity(owners.len());
            let mut reachable = 1;
            for &o in owners.iter().filter(|&&o| o != t.me) {
                let (name, link) = self.peers.get(env.shared, t, o);
                reachable += usize::from(link.is_some_and(|l| l.reachable()));
                replicas.push(name.clone());
            }
            if let Err(refusal) = quorum_reachable(slot, need, reachable) {
                env.shared.metrics.quorum_failures.fetch_add(1, Relaxed);
                rejected(env, spec);
                encode::error(&mut self.out, &refusal.text());
                return;
            }
            plans.push(KeyPlan { key, slot, replicas, need });
        }
        if plans.is_empty() {
            return self.run_here(env, args);
        }
        self.seal();
        let start = self.out.len();
        self.run_here(env, args);
        let end = self.out.len();
        if self.out.get(start) == Some(&b'-') {
            return; // refused or failed: nothing changed
        }
        let first_item = self.items.len();
        let mut wait = false;
        for KeyPlan { key, slot, replicas, need } in plans {
            self.ops_room();
            let buf = &mut self.ops_buf;
            env.shared.store.with_key(key, env.now_ms, |k| encode_current(buf, k));
            if self.ops_buf.is_empty() {
                continue; // nothing there, nothing deleted (an expired key)
            }
            wait |= need > 1;
            self.items.push(Item { slot, op: self.ops_buf.split().freeze(), replicas, need });
        }
        if !self.items.is_empty() && self.coordinating.is_none() {
            self.coordinating = Some(crate::shared::Coordinating::new(&env.shared.coordinating));
        }
        if wait {
            self.chunks.push(Chunk::Quorum { reply: (start, end), items: (first_item, self.items.len()) });
            self.mark = end;
            self.deferred = true;
        }
    }
}
