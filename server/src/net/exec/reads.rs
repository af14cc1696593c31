//! Quorum reads and read-through: owners asked for a key's state, the
//! newest answer wins, stale owners are repaired.

use super::*;

impl Exec {
    /// Runs a read here and asks the slot's other owners for the key's
    /// state; `finish` answers with the newest and repairs stale owners.
    pub(super) fn quorum_read(&mut self, env: &mut Env<'_>, args: Args<'_>, t: &Topology, slot: u16, need: usize) {
        let mut owners: Vec<(Arc<str>, Option<Link>)> = Vec::new();
        for &o in t.table.owners(slot).iter().filter(|&&o| o != t.me) {
            let (name, link) = self.peers.get(env.shared, t, o);
            owners.push((name.clone(), link.cloned()));
        }
        self.ask_read(env, args, slot, owners, need, false);
    }

    /// Runs a read here and asks `owners` for the key's state (RC.READ);
    /// `finish` settles it (see [`Exec::settle_reads`]).
    pub(super) fn ask_read(
        &mut self,
        env: &mut Env<'_>,
        args: Args<'_>,
        slot: u16,
        owners: Vec<(Arc<str>, Option<Link>)>,
        need: usize,
        through: bool,
    ) {
        self.seal();
        let start = self.out.len();
        self.run_here(env, args);
        let end = self.out.len();
        let req = Request::Read { key: args.get(1), table: None }.to_bytes();
        let mut asked = Vec::new();
        for (name, link) in owners {
            let answer = match link.map(|l| l.try_call(req.clone(), 1, false)) {
                Some(Ok(rx)) => Answer::Reading(rx),
                _ => Answer::Unreachable,
            };
            self.push_answer(answer, None);
            asked.push((name, self.answers.len() - 1));
        }
        let args = args.iter().map(<[u8]>::to_vec).collect();
        let v = env.conn.resp;
        self.chunks.push(Chunk::Read(Box::new(QuorumRead {
            reply: (start, end),
            args,
            slot,
            asked,
            need,
            v,
            through,
        })));
        self.mark = end;
        self.deferred = true;
    }

    /// Settles quorum reads once their answers are in: the newest state
    /// wins; this node applies it and runs the read again if it was
    /// behind, and stale owners are sent the newest state.
    pub(super) async fn settle_reads(&mut self, shared: &Shared) {
        for i in 0..self.chunks.len() {
            let Chunk::Read(r) = &self.chunks[i] else { continue };
            let (key, slot) = (r.args[1].clone(), r.slot);
            let mut states = Vec::new();
            for (name, a) in &r.asked {
                if let Some(replies) = self.answers[*a].replies()
                    && let Some(st) = replies.first().and_then(|raw| ReadState::parse(raw))
                {
                    states.push((name.clone(), st));
                }
            }
            // A read-through needs the sender's answer, or a co-owner that
            // knows the key (its "unknown" could be a false miss).
            let sender_answered = r.asked.first().is_some_and(|(n, _)| states.iter().any(|(m, _)| m == n));
            if r.through && !sender_answered && states.iter().all(|(_, s)| *s == ReadState::Unknown) {
                let mut b = BytesMut::new();
                encode::error(&mut b, b"CLUSTERDOWN this slot is moving here and its previous owner did not answer");
                self.chunks[i] = Chunk::Bytes(b.freeze());
                continue;
            }
            if states.len() + 1 < r.need {
                let text =
                    format!("CLUSTERDOWN read quorum not reached ({} of {} owners answered)", states.len() + 1, r.need);
                let mut b = BytesMut::new();
                encode::error(&mut b, text.as_bytes());
                self.chunks[i] = Chunk::Bytes(b.freeze());
                continue;
            }
            let now_ms = crate::process::unix_ms();
            let local = shared.store.with_key(&key, now_ms, |k| k.version());
            let newest =
                states.iter().map(|(_, s)| s).max_by_key(|s| s.version()).cloned().unwrap_or(ReadState::Unknown);
            let mut repair = BytesMut::new();
            // A read-through runs again in any case: the slot's copy may
            // have landed here meanwhile, and its sender may have dropped
            // the slot since (so its "unknown" would be a false miss).
            if newest.version() > local || r.through {
                // This node was behind: catch up, then answer again.
                if newest.version() > local && shared.version_ok(newest.version(), now_ms) {
                    // Room first, as any insert (at noeviction it goes in
                    // anyway: the read must run on the newest state).
                    let _ = shared.store.make_room(now_ms);
                    shared.store.with_key(&key, now_ms, |k| newest.apply_to(k));
                    shared.metrics.read_repairs.fetch_add(1, Relaxed);
                }
                let mut conn = ConnState::new(Arc::new(ClientInfo::new(0, UNSPECIFIED, UNSPECIFIED, now_ms)), false);
                conn.resp = r.v;
                let mut stats = LocalStats::default();
                let mut buf = BytesMut::new();
                let slices: Vec<&[u8]> = r.args.iter().map(Vec::as_slice).collect();
                let v = r.v;
                let mut ctx =
                    Ctx { shared, conn: &mut conn, out: Reply { buf: &mut buf, v }, now_ms, stats: &mut stats };
                command::execute(&mut ctx, Args::from_slices(&slices));
                if newest.version() > local {
                    newest.encode_repair(&key, &mut repair);
                }
                self.chunks[i] = Chunk::Bytes(buf.freeze());
            } else {
                shared.store.with_key(&key, now_ms, |k| encode_current(&mut repair, k));
            }
            let newest_v = newest.version().max(local);
            if repair.is_empty() {
                continue;
            }
            let repair = repair.freeze();
            for (name, st) in &states {
                if st.version() < newest_v {
                    shared.metrics.read_repairs.fetch_add(1, Relaxed);
                    self.send_repair(shared, name, slot, repair.clone()).await;
                }
            }
        }
    }

    pub(super) async fn send_repair(&self, shared: &Shared, owner: &Arc<str>, slot: u16, op: Bytes) {
        if let Some(link) = shared.links.get(owner) {
            link.send(Msg::Repl { ops: vec![(slot, op)], done: None }).await;
        }
    }
}
