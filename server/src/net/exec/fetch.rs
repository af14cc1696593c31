//! Fetching keys' newest state before a request runs on them (the rules
//! are `cluster::settle`'s): a client's request is held meanwhile; a
//! peer's fetch runs after the batch, and its reply is `-TRYAGAIN` (its
//! forwarding node sends it again) unless the fetch failed
//! (`coordinate::fetch_step`: then the fetch's refusal).

use crate::cluster::coordinate::{HOLD_ROUNDS_MAX, Step, fetch_step, keepers_step};
use crate::cluster::settle::{Fetch, KeyState, Verdict, fetch_for, verdict_with_keepers};

use super::*;

impl Exec {
    /// What `args` must fetch before it runs here, key by key with its slot.
    pub(super) fn fetches_for(&self, env: &Env<'_>, spec: &Spec, args: Args<'_>, t: &Topology) -> Vec<(u16, Fetch)> {
        let r = &env.shared.rebalance;
        if spec.first_key <= 0 || (r.importing() == 0 && r.unsettled() == 0) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for key in keys_of(spec, args) {
            let slot = key_slot(key);
            let importing_from = r.importing_from(slot);
            let unsettled = r.is_unsettled(slot);
            if importing_from.is_none() && !unsettled {
                continue;
            }
            let state = KeyState {
                unsettled,
                here: importing_from.is_some()
                    && env.shared.store.with_key(key, env.now_ms, |k| k.exists() || k.tombstone().is_some()),
                importing_from,
                fetched: r.checked(key),
            };
            if let Some(f) = fetch_for(t, slot, key, &state, spec.write) {
                out.push((slot, f));
            }
        }
        out
    }

    /// Refuses a write to a slot too few of whose keepers are members of
    /// `t` (`cluster::keepers`): the writes acknowledged there may be only
    /// on members this node cannot reach. Right after a table change a
    /// client's request is held instead (once) and a forwarded one is
    /// answered `-TRYAGAIN`. Returns whether it answered or held.
    pub(super) fn keepers_refused(&mut self, env: &mut Env<'_>, spec: &Spec, args: Args<'_>, t: &Topology) -> bool {
        let r = &env.shared.rebalance;
        if !spec.write || spec.first_key <= 0 || r.unsettled() == 0 {
            return false;
        }
        for key in keys_of(spec, args) {
            let slot = key_slot(key);
            if !r.is_unsettled(slot) || !t.table.owners(slot).contains(&t.me) {
                continue;
            }
            let short = r.keepers_short(slot, t, env.shared.config.write_quorum);
            let converging = env.now_ms < env.shared.converging_until_ms();
            match keepers_step(slot, short, converging, env.conn.peer, self.keepers_waited) {
                Step::Go => {}
                Step::Hold => {
                    // A client's request waits for the table to move (once).
                    self.keepers_hold = Some(env.shared.topology_version());
                    return true;
                }
                Step::Refuse(refusal) => {
                    if !refusal.retryable() {
                        r.keeper_refusals.fetch_add(1, Relaxed);
                    }
                    rejected(env, spec);
                    encode::error(&mut self.out, &refusal.text());
                    return true;
                }
            }
        }
        false
    }

    /// Whether the request just run is held until its keys are fetched
    /// (see [`Exec::fetch_held`]); it wrote no reply.
    pub fn held(&self) -> bool {
        !self.hold.is_empty()
    }

    /// Fetches what the held request needs, for the `round`th time (from
    /// 1). `Ok`: run it again (its keys count as fetched); `Err`: answer
    /// it with this error (it did not run).
    pub async fn fetch_held(&mut self, shared: &Shared, round: u32) -> Result<(), String> {
        // The batch's forwards so far run meanwhile.
        self.send_forwards();
        let fetches = std::mem::take(&mut self.hold);
        if round > HOLD_ROUNDS_MAX {
            shared.rebalance.fetch_refusals.fetch_add(1, Relaxed);
            return Err(
                "CLUSTERDOWN this key's owners kept changing while its newest state was fetched (not run)".to_string()
            );
        }
        shared.rebalance.held_requests.fetch_add(1, Relaxed);
        let deadline = Instant::now() + shared.config.replication_timeout;
        let version = shared.topology_version();
        let verdicts = fetch_keys(shared, &fetches, deadline, self.hold_gen).await;
        let converging = crate::process::unix_ms() < shared.converging_until_ms();
        for ((slot, _), v) in fetches.iter().zip(&verdicts) {
            match fetch_step(*slot, v, converging, false, self.keepers_waited) {
                Step::Go => {}
                Step::Hold => {
                    // A co-owner still misses members its table lists (as
                    // right after a change: members learn of each other at
                    // different moments): wait for the table to move, as
                    // for this node's own keepers ([`Exec::keepers_refused`]),
                    // then fetch again (the caller runs the request again).
                    self.keepers_waited = true;
                    wait_for_table(shared, version).await;
                    return Ok(());
                }
                Step::Refuse(r) => {
                    shared.rebalance.fetch_refusals.fetch_add(1, Relaxed);
                    return Err(String::from_utf8_lossy(&r.text()).into_owned());
                }
            }
        }
        Ok(())
    }

    /// Whether the request just run is held because its slot's keepers
    /// looked short right after a table change (see
    /// [`Exec::await_keepers`]); it wrote no reply.
    pub fn awaits_keepers(&self) -> bool {
        self.keepers_hold.is_some()
    }

    /// Waits until the slot table moves again or the time a table takes
    /// to converge has passed; then the request runs again (once: then it
    /// is refused if the keepers are still short).
    pub async fn await_keepers(&mut self, shared: &Shared) {
        let Some(version) = self.keepers_hold.take() else { return };
        self.send_forwards();
        self.keepers_waited = true;
        shared.rebalance.held_requests.fetch_add(1, Relaxed);
        wait_for_table(shared, version).await;
    }

    /// Whether the request just run is held because its key's primary is
    /// unreachable (see [`Exec::await_primary`]); it wrote no reply.
    pub fn awaits_primary(&self) -> bool {
        self.primary_hold.is_some()
    }

    /// Waits until the slot table moves or the held request's primary is
    /// reachable again, at most twice the failure-detection time (probe,
    /// its timeout, suspicion) and never longer than a forward would wait
    /// (twice the replication timeout); then run the request again. It is
    /// held once: run again, it is forwarded even to an unreachable
    /// primary (and answered `-CLUSTERDOWN ... (not sent)`).
    pub async fn await_primary(&mut self, shared: &Shared) {
        let Some((version, link)) = self.primary_hold.take() else { return };
        self.send_forwards();
        self.primary_waited = true;
        shared.metrics.forwards_held.fetch_add(1, Relaxed);
        let g = &shared.config.gossip;
        let detection = g.probe_period + g.probe_rtt + g.suspect;
        let until = Instant::now() + (2 * detection).min(2 * shared.config.replication_timeout);
        // Until the table moves, the link is back, or this node finds
        // itself in a minority (its table then stays: the request is
        // refused at once).
        while Instant::now() < until
            && shared.topology_version() == version
            && !link.connected()
            && shared.minority().is_none()
        {
            tokio::time::sleep(super::UNREACHABLE_PAUSE).await;
        }
    }

    /// The request just run is answered (or deferred): the next one may
    /// wait for its primary again.
    pub fn request_done(&mut self) {
        self.primary_waited = false;
        self.keepers_waited = false;
    }

    /// Answers the held request with `text` (an error that says it did not run).
    pub fn refuse_held(&mut self, env: &mut Env<'_>, args: Args<'_>, text: &str) {
        self.hold.clear();
        if let Some(spec) = command::lookup(args.get(0)).map(|i| &command::COMMANDS[i]) {
            rejected(env, spec);
        }
        encode::error(&mut self.out, text.as_bytes());
    }
}

/// Waits until the slot table moves from `version` or the time a table
/// takes to converge after its last change has passed.
async fn wait_for_table(shared: &Shared, version: u64) {
    while shared.topology_version() == version && crate::process::unix_ms() < shared.converging_until_ms() {
        tokio::time::sleep(super::UNREACHABLE_PAUSE).await;
    }
}

/// The keys `spec` names in `args`.
pub(super) fn keys_of<'a>(spec: &Spec, args: Args<'a>) -> impl Iterator<Item = &'a [u8]> + Clone {
    let argc = args.len() as i32;
    let last = if spec.last_key < 0 { argc + spec.last_key } else { spec.last_key.min(argc - 1) };
    let first = spec.first_key.max(1);
    (first..=last).step_by(spec.step.max(1) as usize).map(move |i| args.get(i as usize))
}

/// Pause before asking again a member whose link refused a fetch unsent
/// (down, or reconnecting after a partition healed).
const ASK_AGAIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// Asks every member named in `fetches` at once (each bounded by
/// `deadline`; a member whose link refused the request unsent, or that
/// refused it for the moment, is asked again until then), applies the
/// states they answer, and returns each
/// fetch's verdict; a key whose verdict is [`Verdict::Fetched`] is
/// remembered as fetched until its slot's owners change again — if no
/// slot was marked unsettled since `generation`, read before the table
/// the fetches were planned on (`Exec::run_gen`; see `mark_checked`).
pub(super) async fn fetch_keys(
    shared: &Shared,
    fetches: &[(u16, Fetch)],
    deadline: Instant,
    generation: u64,
) -> Vec<Verdict> {
    // answered[f][m]: member m of fetch f answered.
    let mut answered: Vec<Vec<bool>> = fetches.iter().map(|(_, f)| vec![false; f.from.len()]).collect();
    // short[f][m]: member m cannot reach the keepers of fetch f's slot
    // (its last answer). While the table converges it is asked again: it
    // may lack a member the table already lists.
    let mut short = answered.clone();
    loop {
        let converging = crate::process::unix_ms() < shared.converging_until_ms();
        let mut waits = Vec::new();
        // Members answer on this node's table only: until one has it, it
        // may still coordinate the slot's writes by the old one (a join's
        // old primary, importing sender; the interim primary when a
        // member it stood in for comes back, co-owner), and a write here
        // would then count from a copy missing them.
        let table = shared.topology().digest;
        for (fi, (_, f)) in fetches.iter().enumerate() {
            let req = Request::Read { key: &f.key, table: Some(table) }.to_bytes();
            for (mi, (member, _)) in f.from.iter().enumerate() {
                if !answered[fi][mi] && (converging || !short[fi][mi]) {
                    let rx = shared.links.get(member).and_then(|l| l.try_call(req.clone(), 1, false).ok());
                    waits.push((fi, mi, rx));
                }
            }
        }
        let mut unsent = false;
        for (fi, mi, rx) in waits {
            let reply = match rx {
                Some(rx) => timeout_at(deadline, rx).await,
                None => Ok(Ok(Err(LinkError::Unreachable))),
            };
            let state = match reply {
                Ok(Ok(Ok(replies))) if replies.first().is_some_and(|raw| raw.starts_with(b"-TRYAGAIN")) => {
                    unsent = true; // its table differs for the moment
                    None
                }
                Ok(Ok(Ok(replies)))
                    if replies.first().is_some_and(|raw| {
                        PeerReply::parse(Kind::Read, raw)
                            == PeerReply::Error(crate::cluster::protocol::PeerError::KeepersShort)
                    }) =>
                {
                    short[fi][mi] = true;
                    unsent |= converging;
                    None
                }
                Ok(Ok(Ok(replies))) => replies.first().and_then(|raw| ReadState::parse(raw)),
                Ok(Ok(Err(LinkError::Unreachable))) => {
                    unsent = true;
                    None
                }
                _ => None,
            };
            let Some(state) = state else { continue };
            short[fi][mi] = false;
            answered[fi][mi] = true;
            let now_ms = crate::process::unix_ms();
            if shared.version_ok(state.version(), now_ms) {
                // Room first, as any insert (the held request runs next).
                let _ = shared.store.make_room(now_ms);
                shared.store.with_key(&fetches[fi].1.key, now_ms, |k| state.apply_to(k));
            }
        }
        if !unsent || Instant::now() + ASK_AGAIN_PAUSE >= deadline {
            break;
        }
        tokio::time::sleep(ASK_AGAIN_PAUSE).await;
    }
    let mut verdicts = Vec::with_capacity(fetches.len());
    for (((_, f), answered), short) in fetches.iter().zip(&answered).zip(&short) {
        let v = verdict_with_keepers(f, answered, short, shared.config.write_quorum);
        if v == Verdict::Fetched && !shared.rebalance.mark_checked(f.key.clone(), generation) {
            // Asked by the table before: the request runs again and
            // fetches by the table of now.
            shared.rebalance.stale_fetches.fetch_add(1, Relaxed);
        }
        verdicts.push(v);
    }
    verdicts
}
