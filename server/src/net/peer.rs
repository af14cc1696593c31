//! The accepting side of peer links: TCP on the cluster port.
//!
//! A connection must first prove it knows the cluster key (`RC.HELLO name
//! nonce`, answered with this node's nonce and proof, then `RC.AUTH
//! proof`); anything else gets `-NOAUTH peer authentication required` and
//! is closed, as is a wrong proof, and both are counted
//! (`peer_rejected`). The handshake is bounded in time and bytes.
//!
//! After it, requests run in batches like a client's: replicated states
//! (`RC.PUT`/`RC.DEL`) are applied if newer, `RC.READ` reports a key's
//! state, and `RC.FWD` runs a command routed here by another member
//! through the same [`Exec`] as client requests (so a forwarded write is
//! replicated and waits for its quorum here, at its primary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use ringcache_protocol::{Args, RequestParser, Version, encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::batch::{BATCH_REQUESTS_MAX, Batch};
use super::exec::{Env, Exec};
use super::link::nonce;
use super::unix_ms;
use crate::cluster::coordinate::{Receive, receive_forward};
use crate::cluster::protocol::{self, Lateness, PeerError, Reply, Request};
use crate::cluster::replication::{LinkKey, Op, ReadState, hex, proof_eq};
use crate::command::ConnState;
use crate::shared::{ClientInfo, LocalStats, Shared};
use crate::store::SHARD_COUNT;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 64 * 1024;
const READ_CHUNK_MAX: usize = 4 << 20;
/// Unparsed input a peer may leave (one large value plus some).
const INPUT_MAX: usize = 600 << 20;
const BATCH_MAX: usize = 1024;

pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let laddr = stream.local_addr().unwrap_or(addr);
            let Some(tls) = shared.cluster_tls() else {
                return serve(shared, stream, addr, laddr, shutdown).await;
            };
            // Mutual TLS: a certificate signed by the cluster's CA that
            // names the address the member connects from.
            let accepted = timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await;
            match accepted {
                Ok(Ok(s)) if crate::tls::names_address(s.get_ref().1.peer_certificates(), addr.ip()) => {
                    serve(shared, s, addr, laddr, shutdown).await
                }
                Ok(Ok(_)) => {
                    shared.metrics.peer_rejected.fetch_add(1, Relaxed);
                    info!(%addr, "refused a peer connection: its certificate does not name its address");
                }
                Ok(Err(e)) => {
                    shared.metrics.peer_rejected.fetch_add(1, Relaxed);
                    info!(%addr, error = %e, "refused a peer connection: TLS handshake failed");
                }
                Err(_) => {
                    shared.metrics.peer_rejected.fetch_add(1, Relaxed);
                    info!(%addr, "refused a peer connection: TLS handshake timed out");
                }
            }
        });
    }
}

/// Runs the accepting side of the handshake; the peer's name on success.
/// Handshake refusals that answered the stranger (counted before the answer).
const NOT_A_PEER: &str = "not a peer handshake";
const WRONG_PROOF: &str = "wrong proof (another cluster or secret)";
const IN_MINORITY: &str = "this node is on the minority side of a partition";

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &LinkKey,
    input: &mut BytesMut,
    parser: &mut RequestParser,
    refused: &AtomicU64,
    in_minority: impl Fn() -> bool,
) -> Result<String, &'static str> {
    // Unauthenticated: small arguments, few of them, few bytes in all.
    let mut next = async |stream: &mut S, input: &mut BytesMut| -> Result<Vec<Vec<u8>>, &'static str> {
        loop {
            match parser.parse(input, &protocol::HANDSHAKE_LIMITS, false) {
                Ok(true) => {
                    let args: Vec<Vec<u8>> = parser.args(input).iter().map(<[u8]>::to_vec).collect();
                    parser.compact(input);
                    return Ok(args);
                }
                Ok(false) => {}
                Err(_) => return Err("protocol error"),
            }
            if input.len() > protocol::HANDSHAKE_BYTES_MAX {
                return Err("handshake too long");
            }
            input.reserve(1024);
            if stream.read_buf(input).await.map_err(|_| "read failed")? == 0 {
                return Err("closed");
            }
        }
    };
    let hello = next(stream, input).await?;
    let hello_args: Vec<&[u8]> = hello.iter().map(Vec::as_slice).collect();
    let Ok(Request::Hello { name, nonce: client_nonce }) = Request::decode(Args::from_slices(&hello_args)) else {
        // Counted before the refusal leaves: whoever reads it and then
        // asks INFO finds it counted.
        refused.fetch_add(1, Relaxed);
        let _ = stream.write_all(b"-NOAUTH peer authentication required\r\n").await;
        let _ = stream.flush().await;
        return Err(NOT_A_PEER);
    };
    let sn = hex(&nonce());
    let proof = key.server_proof(client_nonce, sn.as_bytes());
    let mut out = BytesMut::new();
    Reply::Challenge { nonce: sn.clone().into(), proof: proof.into() }.encode(&mut out);
    stream.write_all(&out).await.map_err(|_| "write failed")?;
    stream.flush().await.map_err(|_| "write failed")?;
    let auth = next(stream, input).await?;
    let auth_args: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
    let ok = matches!(Request::decode(Args::from_slices(&auth_args)),
        Ok(Request::Auth { proof }) if proof_eq(proof, key.client_proof(sn.as_bytes(), client_nonce).as_bytes()));
    if !ok {
        refused.fetch_add(1, Relaxed);
        let _ = stream.write_all(b"-ERR peer authentication failed\r\n").await;
        let _ = stream.flush().await;
        return Err(WRONG_PROOF);
    }
    if in_minority() {
        // A member, but this side must not make quorums: a node restarted
        // here (it sees only this side) would otherwise count this node's
        // acknowledgements and write as a side of its own. Its link stays
        // down until this node is back in a majority.
        let _ = stream.write_all(b"-CLUSTERDOWN the receiver is on the minority side of a partition\r\n").await;
        let _ = stream.flush().await;
        return Err(IN_MINORITY);
    }
    stream.write_all(b"+OK\r\n").await.map_err(|_| "write failed")?;
    stream.flush().await.map_err(|_| "write failed")?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut stream: S,
    addr: SocketAddr,
    laddr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = LinkKey::new(&shared.config.cluster_name, shared.config.cluster_secret.as_deref());
    let mut input = BytesMut::with_capacity(4096);
    let mut parser = RequestParser::new();
    let refused = &shared.metrics.peer_rejected;
    let in_minority = || shared.minority().is_some();
    let shaking = handshake(&mut stream, &key, &mut input, &mut parser, refused, in_minority);
    let peer = match timeout(HANDSHAKE_TIMEOUT, shaking).await {
        Ok(Ok(name)) => name,
        Ok(Err(why)) => {
            // (Refusals that answered were counted before the answer.)
            if why == IN_MINORITY {
                shared.metrics.minority_refusals.fetch_add(1, Relaxed);
                debug!(%addr, why, "refused a peer connection");
                return;
            }
            if why != NOT_A_PEER && why != WRONG_PROOF {
                refused.fetch_add(1, Relaxed);
            }
            info!(%addr, why, "refused a peer connection");
            return;
        }
        Err(_) => {
            shared.metrics.peer_rejected.fetch_add(1, Relaxed);
            info!(%addr, "refused a peer connection: handshake timed out");
            return;
        }
    };
    debug!(%addr, %peer, "peer connected");
    let mut conn = ConnState::new(Arc::new(ClientInfo::new(0, addr, laddr, unix_ms())), false);
    conn.peer = true;
    let mut exec = Exec::new(READ_CHUNK);
    let mut batch = Batch::default();
    let mut stats = LocalStats::default();
    // How late this connection's forwarded requests arrive.
    let mut late = Lateness::default();
    // Set when a batch stopped at BATCH_MAX with requests left in `input`:
    // run those before reading more (a read could wait forever).
    let mut more = false;
    loop {
        if !more {
            let want = match parser.bulk_remaining(input.len()) {
                Some(left) => left.min(input.len()).clamp(READ_CHUNK, READ_CHUNK_MAX),
                None => READ_CHUNK,
            };
            input.reserve(want);
            let n = tokio::select! {
                r = stream.read_buf(&mut input) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                _ = shutdown.changed() => break,
            };
            stats.input_bytes += n as u64;
        }
        more = false;
        let now_ms = unix_ms();
        let mono_ms = crate::process::mono_ms();
        let mut close = false;
        let mut done = 0;
        // Slots of forwarded requests this batch refused for the moment.
        let mut blocked: Vec<u16> = Vec::new();
        batch.clear();
        loop {
            let parsed = parser.parse(&input, &protocol::LIMITS, true);
            // Requests are collected (up to `BATCH_REQUESTS_MAX`) and run
            // together after prefetching their keys' buckets (see `Batch`).
            let mut in_batch = false;
            if let Ok(true) = parsed
                && let Some(ranges) = parser.ranges()
            {
                batch.push(ranges);
                in_batch = true;
                done += 1;
                if batch.len() < BATCH_REQUESTS_MAX && done < BATCH_MAX {
                    continue;
                }
            }
            if !batch.is_empty() {
                batch.prefetch(&shared.store, &input);
                for i in 0..batch.len() {
                    let mut env = Env { shared: &shared, conn: &mut conn, stats: &mut stats, now_ms };
                    let at = Here { late: &mut late, mono_ms, peer: &peer, blocked: &mut blocked };
                    handle(&mut exec, &mut env, at, batch.args(&input, i));
                }
                batch.clear();
            }
            match parsed {
                Ok(true) => {
                    if !in_batch {
                        // An inline request (no peer sends one): on its own.
                        let mut env = Env { shared: &shared, conn: &mut conn, stats: &mut stats, now_ms };
                        let at = Here { late: &mut late, mono_ms, peer: &peer, blocked: &mut blocked };
                        handle(&mut exec, &mut env, at, parser.args(&input));
                        done += 1;
                    }
                    if done >= BATCH_MAX {
                        // Bound the batch: answer these, then parse on.
                        more = true;
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "closing a peer link after a protocol error");
                    encode::error(&mut exec.out, format!("ERR {e}").as_bytes());
                    close = true;
                    break;
                }
            }
        }
        parser.compact(&mut input);
        if input.len() > INPUT_MAX {
            close = true;
        }
        exec.finish(&shared).await;
        stats.output_bytes += exec.out.len() as u64;
        // Counted before the replies leave (see net::client::write_out).
        stats.flush(&shared.metrics);
        let written = match stream.write_all(&exec.out).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        exec.out.clear();
        if close || written.is_err() {
            break;
        }
    }
    stats.flush_all(&shared.metrics);
    debug!(%addr, %peer, "peer disconnected");
}

/// What a request of a peer connection is handled with besides the
/// node's state: the connection's lateness, the monotonic time, the
/// member it authenticated as, and the slots of forwarded requests its
/// batch refused for the moment.
struct Here<'a> {
    late: &'a mut Lateness,
    mono_ms: u64,
    peer: &'a str,
    blocked: &'a mut Vec<u16>,
}

/// The slot of a forwarded command's first key, if it names keys.
fn forward_slot(command: Args<'_>) -> Option<u16> {
    let spec = &crate::command::COMMANDS[crate::command::lookup(command.get(0))?];
    let first = usize::try_from(spec.first_key).ok().filter(|&f| f > 0 && f < command.len())?;
    Some(ringcache_protocol::key_slot(command.get(first)))
}

/// Runs one request of an authenticated peer, its reply into `exec.out`.
fn handle(exec: &mut Exec, env: &mut Env<'_>, at: Here<'_>, args: Args<'_>) {
    let Here { late, mono_ms, peer, blocked } = at;
    let req = match Request::decode(args) {
        Ok(r) => r,
        Err(e) => {
            env.shared.metrics.peer_malformed.fetch_add(1, Relaxed);
            return e.encode(&mut exec.out);
        }
    };
    let serves_data = matches!(
        req,
        Request::Read { .. }
            | Request::Forward { .. }
            | Request::Digests { .. }
            | Request::Sums { .. }
            | Request::KeyVersions { .. }
    );
    if serves_data && env.shared.returning(env.now_ms) {
        // This copy may hold keys the others deleted and forgot
        // (`cluster::absence`): the asker tries another owner or later.
        env.shared.metrics.returning_refusals.fetch_add(1, Relaxed);
        return Reply::Error(PeerError::Other(bytes::Bytes::from_static(
            b"TRYAGAIN this node is returning from an absence longer than the tombstone grace (not run)",
        )))
        .encode(&mut exec.out);
    }
    let reply = match req {
        Request::Put { .. } | Request::Del { .. } => {
            let op = Op::of(&req).expect("a put or a delete");
            if env.shared.minority().is_some() {
                // A minority node acknowledges no write, its own or a
                // peer's: a member that reached only the minority side (a
                // node restarted there) cannot make a quorum of it.
                env.shared.metrics.minority_refusals.fetch_add(1, Relaxed);
                Reply::Error(PeerError::Minority)
            } else if !env.shared.version_ok(op.version, env.now_ms) {
                Reply::Error(PeerError::VersionAhead)
            } else if env.shared.store.make_room(env.now_ms).is_ok() {
                // A replica honours maxmemory like any write: evict first,
                // and refuse (not acknowledged, so it does not count for
                // the quorum) when nothing can go.
                env.shared.store.with_key(op.key, env.now_ms, |k| k.apply(op.version, op.incoming));
                Reply::Ok
            } else {
                Reply::Error(PeerError::OutOfMemory)
            }
        }
        Request::Flush { version } => {
            let removed = env.shared.store.flush_before(version);
            if removed > 0 {
                tracing::info!(removed, "a FLUSHALL this node missed removed the keys written before it");
            }
            Reply::Ok
        }
        Request::Leave => {
            // The name this link authenticated as: a member speaks only
            // for itself.
            tracing::info!(member = peer, "a member announced that it leaves gracefully: it leaves the majority count");
            env.shared.member_leaves(peer);
            Reply::Ok
        }
        Request::Evict { key, version } => {
            env.shared.store.with_key(key, env.now_ms, |k| k.drop_evicted(version));
            Reply::Ok
        }
        Request::Read { table: Some(t), .. } if t != env.shared.topology().digest => {
            // A node fetching the key before a write asks: until this node
            // has its table it may still coordinate the slot's writes by
            // the old one, so an answer now could miss some.
            Reply::Error(PeerError::TableDiffers)
        }
        Request::Read { key, table: Some(_) }
            if env
                .shared
                .rebalance
                .keepers_short(
                    ringcache_protocol::key_slot(key),
                    &env.shared.topology(),
                    env.shared.config.write_quorum,
                )
                .is_some() =>
        {
            // A write's fetch of a key whose slot's writes may be only on
            // members this node cannot reach: answering from this copy
            // would let the asker count from it (`cluster::keepers`).
            env.shared.rebalance.keeper_refusals.fetch_add(1, Relaxed);
            Reply::Error(PeerError::KeepersShort)
        }
        Request::Read { key, .. } => Reply::State(env.shared.store.with_key(key, env.now_ms, |k| ReadState::of(k))),
        Request::Forward { head, command } => {
            let slot = forward_slot(command);
            let expired = late.expired(head.deadline, mono_ms, env.now_ms);
            let slot_blocked = slot.is_some_and(|s| blocked.contains(&s));
            let same_table = head.table == env.shared.topology().digest;
            match receive_forward(expired, slot_blocked, same_table) {
                Receive::Expired => {
                    env.shared.metrics.forwards_expired.fetch_add(1, Relaxed);
                    Reply::Error(PeerError::Expired)
                }
                // Running it now would reorder the client's pipeline (SET k
                // 1 refused, SET k 2 run, SET k 1 run again).
                Receive::KeepOrder => Reply::Error(PeerError::Other(bytes::Bytes::from_static(
                    b"TRYAGAIN an earlier request of this slot was refused for the moment (kept in order)",
                ))),
                Receive::TableDiffers => {
                    blocked.extend(slot);
                    Reply::Error(PeerError::TableDiffers)
                }
                Receive::Run => {
                    env.conn.resp = if head.resp3 { Version::Resp3 } else { Version::Resp2 };
                    env.conn.share = head.share;
                    let before = exec.out.len();
                    exec.run(env, command);
                    env.conn.share = false;
                    if exec.out.get(before..).is_some_and(|r| r.starts_with(b"-TRYAGAIN")) {
                        blocked.extend(slot);
                    }
                    return;
                }
            }
        }
        Request::SlotDone { slot, keepers } => {
            // The sender's keepers first: writes may be refused from now.
            let theirs: Vec<String> = keepers.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
            let theirs: Vec<&str> = theirs.iter().map(String::as_str).collect();
            let t = env.shared.topology();
            env.shared
                .rebalance
                .keepers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .received(slot, &theirs, &t);
            env.shared.rebalance.import_done(slot, env.shared.lifecycle.phase().newcomer());
            Reply::Ok
        }
        // The sender's copy is confirmed, but this former owner may hold
        // writes the sender never had (views that disagreed across a
        // partition): anti-entropy hands the slot to its primary, newer
        // keys included, before deleting it here.
        Request::DropOk { .. } => Reply::Ok,
        Request::Sending { to, table, slots } => {
            let to = String::from_utf8_lossy(to);
            Reply::Flags(env.shared.rebalance.sending(&to, table, &slots))
        }
        Request::Digests { shard, settled } => {
            let slots = crate::cluster::antientropy::shard_slots(usize::from(shard));
            // The table first: the digests then cover every write this
            // node applied under an older table.
            let t = env.shared.topology();
            let table = crate::cluster::membership::members_digest(&t);
            if let Some((theirs, bits)) = settled
                && theirs == table
                && bits != 0
            {
                // Their primary settled these slots on this same table
                // (compared with this node among the rest): their owners
                // hold their writes (`cluster::keepers`).
                let mut k = env.shared.rebalance.keepers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (i, &slot) in slots.iter().enumerate() {
                    if bits & (1 << i) != 0 && t.table.owners(slot).contains(&t.me) {
                        k.settled(slot, &t);
                    }
                }
            }
            // Slots whose keepers this node cannot reach: the asking
            // primary must not settle them (`cluster::keepers`).
            let r = &env.shared.rebalance;
            let short =
                if r.keepers_enforced.load(Relaxed) {
                    let k = r.keepers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let w = env.shared.config.write_quorum;
                    slots.iter().enumerate().fold(0u64, |bits, (i, &slot)| {
                        if k.short(slot, &t, w).is_some() { bits | 1 << i } else { bits }
                    })
                } else {
                    0
                };
            protocol::encode_digests(&mut exec.out, &env.shared.store.slot_digests(&slots), table, short);
            return;
        }
        Request::Sums { asker, settled } => {
            // Per shard, the XOR of the digests of the slots the asker is
            // primary for and this node co-owns; then the members digest.
            // An asker this table does not know gets zeros (its table
            // differs).
            let t = env.shared.topology();
            let asker = String::from_utf8_lossy(asker);
            let digests = match t.nodes.iter().position(|n| n.name == asker) {
                Some(i) => {
                    if let Some((table, shards)) = settled
                        && table == crate::cluster::membership::members_digest(&t)
                    {
                        // In those shards, every slot it is primary for and
                        // this node co-owns settled there on this same table.
                        env.shared.rebalance.keepers_settled_by(i as u16, &t, table, &shards);
                    }
                    crate::cluster::antientropy::shard_sums(&t, &env.shared.store.all_slot_digests(), i as u16, t.me)
                }
                None => vec![0; SHARD_COUNT],
            };
            Reply::Digests { digests, table: crate::cluster::membership::members_digest(&t), short: 0 }
        }
        Request::KeyVersions { slot } => {
            let list = std::cell::RefCell::new(Vec::new());
            let add = |k: &[u8], v: u64| list.borrow_mut().push((bytes::Bytes::copy_from_slice(k), v));
            env.shared.store.visit_slot(slot, env.now_ms, |e| add(e.key(), e.version()), |k, v| add(k, v));
            Reply::KeyVersions(list.into_inner())
        }
        Request::Ping => Reply::Pong,
        // Only valid before the handshake ended.
        Request::Hello { .. } | Request::Auth { .. } => Reply::Error(PeerError::Malformed("wrong number of arguments")),
    };
    reply.encode(&mut exec.out);
}
