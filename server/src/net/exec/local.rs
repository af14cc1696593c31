//! Requests this node coordinates: reads (with read-through and quorum
//! reads) and writes (fetch first, quorum precheck, replicated items).

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
                let link = env.shared.links.get(&from);
                return self.ask_read(env, args, slot, vec![(from, link)], 1, true);
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
        let argc = args.len() as i32;
        let last = if spec.last_key < 0 { argc + spec.last_key } else { spec.last_key.min(argc - 1) };
        let keys = (spec.first_key..=last).step_by(spec.step.max(1) as usize).map(|i| args.get(i as usize));
        // A write must see its keys' current state (INCR, APPEND, SET NX,
        // DEL...). Two cases fetch a key before it runs, then answer
        // -TRYAGAIN (the forwarding node, or the client, sends it again):
        // - its slot is still arriving here and the key is not here yet:
        //   from the slot's previous owner;
        // - the slot's owners changed (a failover, a return, a restart, a
        //   healed partition) and anti-entropy has not compared it since:
        //   another owner may hold acknowledged writes this node missed,
        //   so from every co-owner.
        // Both at once when both hold (a restarted node imports from one
        // former co-owner, which may itself lack writes another has): the
        // key counts as fetched only once every member asked answered.
        if env.shared.rebalance.importing() > 0 || env.shared.rebalance.unsettled() > 0 {
            let mut missing: Vec<(Arc<str>, Vec<u8>)> = Vec::new();
            let mut unsettled = false;
            for key in keys.clone() {
                if env.shared.rebalance.checked(key) {
                    continue;
                }
                let slot = key_slot(key);
                let before = missing.len();
                if env.shared.rebalance.is_unsettled(slot) {
                    unsettled = true;
                    for &o in t.table.owners(slot).iter().filter(|&&o| o != t.me) {
                        missing.push((t.nodes[usize::from(o)].name.as_str().into(), key.to_vec()));
                    }
                }
                if let Some(from) = env.shared.rebalance.importing_from(slot)
                    && !missing[before..].iter().any(|(m, _)| *m == from)
                    && !env.shared.store.with_key(key, env.now_ms, |k| k.exists() || k.tombstone().is_some())
                {
                    missing.push((from, key.to_vec()));
                }
            }
            if !missing.is_empty() {
                let text: &[u8] = if unsettled {
                    env.shared.rebalance.settle_fetches.fetch_add(1, Relaxed);
                    b"TRYAGAIN this key's owners changed; fetching its newest state; retry"
                } else {
                    b"TRYAGAIN this key is moving to this node; retry"
                };
                self.fetches.extend(missing);
                rejected(env, spec);
                encode::error(&mut self.out, text);
                return;
            }
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
            if reachable < need {
                env.shared.metrics.quorum_failures.fetch_add(1, Relaxed);
                rejected(env, spec);
                let text = format!(
                    "CLUSTERDOWN not enough owners of slot {slot} are reachable for the write quorum \
                     (need {need}, reachable {reachable})"
                );
                encode::error(&mut self.out, text.as_bytes());
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
            let mut op = BytesMut::new();
            env.shared.store.with_key(key, env.now_ms, |k| encode_current(&mut op, k));
            if op.is_empty() {
                continue; // nothing there, nothing deleted (an expired key)
            }
            wait |= need > 1;
            self.items.push(Item { slot, op: op.freeze(), replicas, need });
        }
        if wait {
            self.chunks.push(Chunk::Quorum { reply: (start, end), items: (first_item, self.items.len()) });
            self.mark = end;
            self.deferred = true;
        }
    }
}
