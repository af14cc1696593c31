//! Forwarding a request to the member that runs it, and sending it again
//! when that member refused it for the moment.

use super::*;
use crate::cluster::coordinate::{Attempt, Target, resend_target, retry_forward, retry_pause};

impl Exec {
    /// Sends `args` to member `m` as `RC.FWD v mode deadline table args...`.
    /// `table` is this node's members digest: the receiver runs it only on
    /// the same table (else `-TRYAGAIN`, which is retried here), so a node
    /// whose view is still partial (just restarted) never coordinates a
    /// write the rest of the cluster routed to it by a fuller table.
    /// `deadline` (unix ms) is when this node gives up waiting (twice the
    /// replication timeout from now, never later than `finish` answers
    /// `-TIMEOUT`): the receiver does not run a request it reads after
    /// that (queued behind others, or delivered late by TCP after a
    /// partition healed), so a write this node reported as timed out cannot
    /// take effect after the client moved on.
    pub(super) fn forward<'b>(
        &mut self,
        env: &mut Env<'_>,
        t: &Topology,
        m: u16,
        args: impl Iterator<Item = &'b [u8]> + Clone,
        share: Mode,
    ) -> Chunk {
        let link = self.peers.get(env.shared, t, m).1.cloned();
        let head = ForwardHead {
            resp3: env.conn.resp == Version::Resp3,
            share: share == Mode::Share,
            deadline: Deadline::Relative {
                sent_ms: crate::process::mono_ms(),
                ttl_ms: 2 * env.shared.config.replication_timeout.as_millis() as u64,
            },
            table: t.digest,
        };
        let argc = args.clone().count();
        let slot = if share == Mode::Primary { args.clone().nth(1).map(key_slot) } else { None };
        // A request that waited for its primary already (`await_primary`)
        // does not wait again for a link still down: it is answered.
        let waited = self.primary_waited && link.as_ref().is_some_and(|l| !l.connected());
        let link = match link {
            Some(link) if !waited => link,
            _ => {
                self.push_answer(Answer::Unreachable, None);
                return Chunk::Forward(self.answers.len() - 1);
            }
        };
        // Encoded straight into the member's group; the body (what a
        // resend needs) is copied out of it at its exact size.
        let need = 64 + args.clone().map(|a| a.len() + 16).sum::<usize>();
        let g = self.forward_group(&link, need);
        let group = &mut self.forward_groups[g];
        encode_forward_head(&mut group.req, &head, argc);
        let body_at = group.req.len();
        for a in args {
            encode::bulk(&mut group.req, a);
        }
        // The body is cut out of the group's buffer once it is frozen.
        group.answers.push((self.answers.len(), body_at..group.req.len()));
        self.push_answer(Answer::Queued, Some(Resend { head, body: Bytes::new(), argc, slot, link }));
        Chunk::Forward(self.answers.len() - 1)
    }

    /// The index of the forward group for `link` with room for `need` more
    /// bytes: a full one is sent first and a new one started.
    fn forward_group(&mut self, link: &Link, need: usize) -> usize {
        if let Some(i) = self.forward_groups.iter().position(|g| g.link.name == link.name) {
            if self.forward_groups[i].req.len() + need <= FORWARD_GROUP_BYTES {
                return i;
            }
            let full = self.forward_groups.swap_remove(i);
            self.send_forward_group(full);
        }
        self.forward_groups.push(ForwardGroup {
            link: link.clone(),
            req: BytesMut::with_capacity(need.max(FORWARD_GROUP_BYTES)),
            answers: Vec::new(),
        });
        self.forward_groups.len() - 1
    }

    /// Sends the forwards planned so far, one call per member group. Done
    /// before the batch waits for anything, so they run at their primaries
    /// meanwhile.
    pub(super) fn send_forwards(&mut self) {
        for g in std::mem::take(&mut self.forward_groups) {
            self.send_forward_group(g);
        }
    }

    fn send_forward_group(&mut self, g: ForwardGroup) {
        let ForwardGroup { link, req, answers } = g;
        let req = req.freeze();
        for (i, body) in &answers {
            if let Some(Some(r)) = self.resend.get_mut(*i) {
                r.body = req.slice(body.clone());
            }
        }
        match link.try_call(req, answers.len(), true) {
            Ok(rx) => {
                let call = self.calls.len();
                self.calls.push(Call::Waiting(rx));
                for (pos, (i, _)) in answers.into_iter().enumerate() {
                    self.answers[i] = Answer::InCall { call, pos };
                }
            }
            Err(_) => {
                for (i, _) in answers {
                    self.answers[i] = Answer::Unreachable;
                }
            }
        }
    }

    /// Waits for the calls that carry forward groups (until `until`) and
    /// gives each of their requests its answer. Returns whether one was
    /// sent and lost (its link failed after sending, or no answer came):
    /// it may still run at the primary.
    async fn await_calls(&mut self, until: Instant) -> bool {
        for call in &mut self.calls {
            if let Call::Waiting(rx) = call {
                *call = Call::Done(match timeout_at(until, rx).await {
                    Ok(Ok(r)) => Some(r),
                    Ok(Err(_)) => Some(Err(LinkError::Closed)),
                    Err(_) => None,
                });
            }
        }
        let mut lost = false;
        for i in 0..self.answers.len() {
            let Answer::InCall { call, pos } = self.answers[i] else { continue };
            let Call::Done(outcome) = &self.calls[call] else { continue };
            self.answers[i] = match outcome {
                Some(Ok(replies)) => match replies.get(pos) {
                    Some(r) => Answer::One(r.clone()),
                    None => {
                        lost = true;
                        Answer::Unknown
                    }
                },
                Some(Err(LinkError::Unreachable)) => Answer::Unreachable,
                // The link failed with the forward sent: a read has no
                // effect to wait for, and goes again like an unsent one.
                Some(Err(_)) if self.resend.get(i).is_some_and(|r| r.as_ref().is_some_and(Resend::is_read)) => {
                    Answer::Unreachable
                }
                _ => {
                    lost = true;
                    Answer::Unknown
                }
            };
        }
        lost
    }

    pub(super) fn split(&mut self, env: &mut Env<'_>, spec: &'static Spec, args: Args<'_>, t: &Topology, s: Split<'_>) {
        let Split { combine, parts, step } = s;
        self.seal();
        let mut chunks = Vec::with_capacity(parts.len());
        for p in parts {
            let mut sub: Vec<&[u8]> = vec![args.get(0)];
            for &i in &p.keys {
                sub.extend((i..i + step).map(|j| args.get(j)));
            }
            let c = if p.member == t.me {
                self.part(|x| x.local(env, spec, Args::from_slices(&sub), t))
            } else {
                self.forward(env, t, p.member, sub.iter().copied(), Mode::Primary)
            };
            chunks.push(c);
        }
        let v = env.conn.resp;
        let first = spec.first_key as usize;
        let order = parts.iter().flat_map(|p| p.keys.iter().map(|&i| (i - first) / step)).collect();
        self.defer(Chunk::Gather { parts: chunks, combine, v, order });
    }

    pub(super) fn push_answer(&mut self, a: Answer, resend: Option<Resend>) {
        self.answers.push(a);
        self.resend.push(resend);
    }

    /// Runs forwarded request `i` here as a primary runs a peer's forward
    /// (a peer's connection state, its own quorum wait): this node became
    /// the primary of its slot since the request was planned. Its reply,
    /// or `-TRYAGAIN` if the table moved again or the slot is not settled
    /// here yet (sent again like a peer's).
    async fn run_as_primary(&mut self, shared: &Shared, i: usize) -> Answer {
        let Some(Some(r)) = self.resend.get(i) else { return Answer::Unreachable };
        let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let mut conn = ConnState::new(Arc::new(ClientInfo::new(0, any, any, crate::net::unix_ms())), false);
        conn.peer = true;
        conn.resp = if r.head.resp3 { Version::Resp3 } else { Version::Resp2 };
        conn.share = r.head.share;
        let mut stats = LocalStats::default();
        let mut sub = Exec::new(256);
        let mut env = Env { shared, conn: &mut conn, stats: &mut stats, now_ms: crate::net::unix_ms() };
        sub.run(&mut env, Args::from_slices(&r.args()));
        // A peer's request is planned here or refused, never forwarded:
        // this recursion is one level deep.
        Box::pin(sub.finish(shared)).await;
        stats.flush(&shared.metrics);
        Answer::Replies(vec![sub.out.freeze()])
    }

    /// Waits for the forwarded requests' answers (reads until `deadline`,
    /// forwards until `forward_deadline`), sending again those refused for
    /// the moment or never sent.
    pub(super) async fn await_forwards(&mut self, shared: &Shared, deadline: Instant, forward_deadline: Instant) {
        // A forward whose link failed after sending may still run at the
        // primary until the deadline it carries: its -TIMEOUT is not
        // answered before then (the client's next request must come after
        // any effect of this one).
        let mut sent_and_lost = false;
        // Requests held for an unreachable primary (each counted once).
        let mut held: Vec<bool> = Vec::new();
        // Per answer: times it was refused for the moment and sent again
        // (its pause grows with them).
        let mut tries: Vec<u32> = Vec::new();
        loop {
            sent_and_lost |= self.await_calls(forward_deadline).await;
            for (i, a) in self.answers.iter_mut().enumerate() {
                let (rx, until, forward) = match a {
                    Answer::Waiting(rx) => (rx, forward_deadline, true),
                    Answer::Reading(rx) => (rx, deadline, false),
                    _ => continue,
                };
                *a = match timeout_at(until, rx).await {
                    Ok(Ok(Ok(replies))) => Answer::Replies(replies),
                    Ok(Ok(Err(LinkError::Unreachable))) => Answer::Unreachable,
                    // The link failed with the forward sent: a read has no
                    // effect to wait for, and goes again like an unsent one.
                    Ok(_) if forward && self.resend.get(i).is_some_and(|r| r.as_ref().is_some_and(Resend::is_read)) => {
                        Answer::Unreachable
                    }
                    _ => {
                        sent_and_lost |= forward;
                        Answer::Unknown
                    }
                };
            }
            // Forwarded requests the primary refused before running them
            // because its table is behind ours (a join in progress), and
            // requests never sent because the primary was unreachable (it
            // failed and gossip has not declared it down yet, or its link
            // is reconnecting): send again, all together, within the
            // deadline, to the slot's primary of then, so the client sees
            // latency instead of the cluster's own transition.
            let minority = shared.minority().is_some();
            tries.resize(self.answers.len(), 0);
            let mut pause_ms: Option<u64> = None;
            let again: Vec<usize> = (0..self.answers.len())
                .filter(|&i| {
                    let attempt = match &self.answers[i] {
                        a if a.replies().and_then(<[Bytes]>::first).is_some_and(|b| refused_for_now(b)) => {
                            Attempt::Answered { refused_for_now: true }
                        }
                        Answer::Unreachable => Attempt::Unsent,
                        _ => return false,
                    };
                    let Some(p) = retry_forward(attempt, minority, tries[i]) else { return false };
                    tries[i] += u32::from(attempt != Attempt::Unsent);
                    let resendable = self.resend.get(i).is_some_and(Option::is_some);
                    if resendable {
                        pause_ms = Some(pause_ms.map_or(p, |q| q.min(p)));
                    }
                    resendable
                })
                .collect();
            let again = self.with_later_reads(again);
            let left_ms = forward_deadline.saturating_duration_since(Instant::now()).as_millis() as u64;
            let Some(pause_ms) = pause_ms.filter(|_| !again.is_empty()).and_then(|p| retry_pause(0, p, left_ms)) else {
                break;
            };
            for &i in &again {
                if matches!(self.answers[i], Answer::Unreachable) {
                    held.resize(self.answers.len(), false);
                    if !std::mem::replace(&mut held[i], true) {
                        shared.metrics.forwards_held.fetch_add(1, Relaxed);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            let t = shared.topology();
            for i in again {
                let Some(Some(r)) = self.resend.get(i) else { continue };
                let link = match r.slot.map(|slot| resend_target(&t, slot)) {
                    Some(Target::Here) => {
                        // This node became the slot's primary: run it here,
                        // as the primary runs a peer's forward.
                        self.answers[i] = self.run_as_primary(shared, i).await;
                        continue;
                    }
                    Some(Target::Member(p)) => shared.links.get(&t.nodes[usize::from(p)].name),
                    None => Some(r.link.clone()),
                };
                if let Some(Ok(rx)) = link.map(|l| l.try_call(r.request(t.digest), 1, true)) {
                    self.answers[i] = Answer::Waiting(rx);
                }
            }
        }
        if sent_and_lost {
            tokio::time::sleep_until(forward_deadline).await;
        }
    }
}

impl Exec {
    /// `again` (ascending answer indices to send again) and the reads
    /// after them in the batch of the same slot that did run: a pipelined
    /// `SET k; GET k` whose SET must be sent again would otherwise answer
    /// the GET from before the SET.
    fn with_later_reads(&self, again: Vec<usize>) -> Vec<usize> {
        let Some(&first) = again.first() else { return again };
        let slots: Vec<(usize, u16)> =
            again.iter().filter_map(|&i| Some((i, self.resend.get(i)?.as_ref()?.slot?))).collect();
        if slots.is_empty() {
            return again;
        }
        let mut out = again.clone();
        for j in first + 1..self.answers.len() {
            let Some(Some(r)) = self.resend.get(j) else { continue };
            let Some(slot) = r.slot else { continue };
            if again.binary_search(&j).is_err()
                && self.answers[j].replies().is_some()
                && slots.iter().any(|&(i, s)| i < j && s == slot)
                && r.is_read()
            {
                out.push(j);
            }
        }
        out.sort_unstable();
        out
    }
}

/// A forwarded request's raw reply that refused it for the moment
/// (`-TRYAGAIN`: the primary's view is moving): it did not run.
pub(super) fn refused_for_now(raw: &[u8]) -> bool {
    raw.first() == Some(&b'-') && matches!(PeerReply::parse(Kind::Forward, raw), PeerReply::Error(e) if e.retryable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_forward_carries_the_table_of_now() {
        let head = ForwardHead {
            resp3: false,
            share: false,
            deadline: Deadline::Relative { sent_ms: 1_954_344, ttl_ms: 2000 },
            table: 0xdead_beef,
        };
        let mut body = BytesMut::new();
        for a in [&b"SET"[..], b"k", b"v"] {
            encode::bulk(&mut body, a);
        }
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let link = Link::for_test("m", tx);
        let r = Resend { head, body: body.freeze(), argc: 3, slot: None, link };
        let patched = r.request(0x0123_4567_89ab_cdef);
        let want = Request::Forward {
            head: ForwardHead { table: 0x0123_4567_89ab_cdef, ..head },
            command: Args::from_slices(&[b"SET", b"k", b"v"]),
        }
        .to_bytes();
        assert_eq!(patched, want);
    }

    #[test]
    fn reads_are_told_from_writes_by_the_forwarded_command() {
        let resend = |args: &[&[u8]]| {
            let mut body = BytesMut::new();
            for a in args {
                encode::bulk(&mut body, a);
            }
            let (tx, _rx) = tokio::sync::mpsc::channel(1);
            let head = ForwardHead {
                resp3: false,
                share: false,
                deadline: Deadline::Relative { sent_ms: 0, ttl_ms: 2000 },
                table: 1,
            };
            Resend { head, body: body.freeze(), argc: args.len(), slot: Some(7), link: Link::for_test("m", tx) }
        };
        assert!(resend(&[b"GET", b"k"]).is_read());
        assert!(resend(&[b"get", b"k"]).is_read());
        assert!(resend(&[b"MGET", b"k", b"j"]).is_read());
        assert!(!resend(&[b"SET", b"k", b"v"]).is_read());
        assert!(!resend(&[b"INCR", b"k"]).is_read());
        assert!(!resend(&[b"NOSUCHCOMMAND", b"k"]).is_read());
        let long = vec![b'x'; 70_000];
        let args: [&[u8]; 4] = [b"SET", b"key", &long, b""];
        assert_eq!(resend(&args).args(), args);
    }

    #[test]
    fn only_a_tryagain_is_sent_again() {
        assert!(refused_for_now(b"-TRYAGAIN the asking node's table differs from this node's\r\n"));
        assert!(refused_for_now(b"-TRYAGAIN this key is moving to this node; retry\r\n"));
        assert!(!refused_for_now(b"-TIMEOUT forwarded request expired before it ran (not run)\r\n"));
        assert!(!refused_for_now(b"+OK\r\n"));
    }
}
