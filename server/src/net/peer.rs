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
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use ringcache_protocol::{Args, Limits, RequestParser, SLOT_COUNT, Version, encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::exec::{Env, Exec};
use super::link::nonce;
use super::unix_ms;
use crate::cluster::replication::{LinkKey, ReadState, hex, parse_op, proof_eq};
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
                Ok(Ok(s)) if super::tls::names_address(s.get_ref().1.peer_certificates(), addr.ip()) => {
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
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &LinkKey,
    input: &mut BytesMut,
    parser: &mut RequestParser,
) -> Result<String, &'static str> {
    let limits = Limits::default();
    let mut next = async |stream: &mut S, input: &mut BytesMut| -> Result<Vec<Vec<u8>>, &'static str> {
        loop {
            // Unauthenticated limits: small bulks, few arguments.
            match parser.parse(input, &limits, false) {
                Ok(true) => {
                    let args: Vec<Vec<u8>> = parser.args(input).iter().map(<[u8]>::to_vec).collect();
                    parser.compact(input);
                    return Ok(args);
                }
                Ok(false) => {}
                Err(_) => return Err("protocol error"),
            }
            if input.len() > 4096 {
                return Err("handshake too long");
            }
            input.reserve(1024);
            if stream.read_buf(input).await.map_err(|_| "read failed")? == 0 {
                return Err("closed");
            }
        }
    };
    let hello = next(stream, input).await?;
    if hello.len() != 3 || !hello[0].eq_ignore_ascii_case(b"RC.HELLO") || hello[2].len() > 64 {
        let _ = stream.write_all(b"-NOAUTH peer authentication required\r\n").await;
        let _ = stream.flush().await;
        return Err("not a peer handshake");
    }
    let sn = hex(&nonce());
    let mut out = BytesMut::new();
    encode::array_header(&mut out, 2);
    encode::bulk(&mut out, sn.as_bytes());
    encode::bulk(&mut out, key.server_proof(&hello[2], sn.as_bytes()).as_bytes());
    stream.write_all(&out).await.map_err(|_| "write failed")?;
    stream.flush().await.map_err(|_| "write failed")?;
    let auth = next(stream, input).await?;
    let ok = auth.len() == 2
        && auth[0].eq_ignore_ascii_case(b"RC.AUTH")
        && proof_eq(&auth[1], key.client_proof(sn.as_bytes(), &hello[2]).as_bytes());
    if !ok {
        let _ = stream.write_all(b"-ERR peer authentication failed\r\n").await;
        let _ = stream.flush().await;
        return Err("wrong proof (another cluster or secret)");
    }
    stream.write_all(b"+OK\r\n").await.map_err(|_| "write failed")?;
    stream.flush().await.map_err(|_| "write failed")?;
    Ok(String::from_utf8_lossy(&hello[1]).into_owned())
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
    let peer = match timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, &key, &mut input, &mut parser)).await {
        Ok(Ok(name)) => name,
        Ok(Err(why)) => {
            shared.metrics.peer_rejected.fetch_add(1, Relaxed);
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
    let mut stats = LocalStats::default();
    let limits = Limits { bulk_len_max: 512 << 20, multibulk_len_max: 1 << 20, ..Limits::default() };
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
        let mut close = false;
        let mut done = 0;
        loop {
            match parser.parse(&input, &limits, true) {
                Ok(true) => {
                    let mut env = Env { shared: &shared, conn: &mut conn, stats: &mut stats, now_ms };
                    handle(&mut exec, &mut env, &parser, &input);
                    done += 1;
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
        let written = match stream.write_all(&exec.out).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        exec.out.clear();
        stats.flush(&shared.metrics);
        if close || written.is_err() {
            break;
        }
    }
    stats.flush_all(&shared.metrics);
    debug!(%addr, %peer, "peer disconnected");
}

/// A decimal argument of a peer request.
fn num<T: std::str::FromStr>(a: &[u8]) -> Option<T> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

fn handle(exec: &mut Exec, env: &mut Env<'_>, parser: &RequestParser, input: &[u8]) {
    let args = parser.args(input);
    let name = args.get(0);
    if name.eq_ignore_ascii_case(b"RC.PUT") || name.eq_ignore_ascii_case(b"RC.DEL") {
        match parse_op(&args) {
            // A replica honours maxmemory like any write: evict first, and
            // refuse (not acknowledged, so it does not count for the
            // quorum) when nothing can go.
            Some(op) if !env.shared.version_ok(op.version, env.now_ms) => {
                encode::error(&mut exec.out, b"ERR version too far ahead of this node's clock (not applied)");
            }
            Some(op) if env.shared.store.make_room(env.now_ms).is_ok() => {
                env.shared.store.with_key(op.key, env.now_ms, |k| k.apply(op.version, op.incoming));
                exec.out.extend_from_slice(b"+OK\r\n");
            }
            Some(_) => encode::error(&mut exec.out, b"OOM command not allowed when used memory > 'maxmemory'."),
            None => encode::error(&mut exec.out, b"ERR malformed replication request"),
        }
    } else if name.eq_ignore_ascii_case(b"RC.READ") && args.len() == 2 {
        let state = env.shared.store.with_key(args.get(1), env.now_ms, |k| ReadState::of(k));
        state.encode(&mut exec.out);
    } else if name.eq_ignore_ascii_case(b"RC.FWD") && args.len() >= 6 {
        let (Some(ranges), Some(deadline), Some(table)) =
            (parser.ranges(), num::<u64>(args.get(3)), hex_u64(args.get(4)))
        else {
            encode::error(&mut exec.out, b"ERR malformed forwarded request");
            return;
        };
        if env.now_ms > deadline {
            // The forwarding node has answered -TIMEOUT already: running
            // it now could undo writes acknowledged since.
            env.shared.metrics.forwards_expired.fetch_add(1, Relaxed);
            encode::error(&mut exec.out, b"TIMEOUT forwarded request expired before it ran (not run)");
            return;
        }
        if table != env.shared.topology().digest {
            // The sender routed by another member set: both views are
            // still converging (the sender retries shortly).
            encode::error(&mut exec.out, b"TRYAGAIN the forwarding node's table differs from this node's");
            return;
        }
        env.conn.resp = if args.get(1) == b"3" { Version::Resp3 } else { Version::Resp2 };
        env.conn.share = args.get(2) == b"s";
        exec.run(env, Args::from_ranges(input, &ranges[5..]));
        env.conn.share = false;
    } else if (name.eq_ignore_ascii_case(b"RC.SLOTDONE") || name.eq_ignore_ascii_case(b"RC.DROPOK")) && args.len() == 2
    {
        match num::<u16>(args.get(1)).filter(|&s| s < SLOT_COUNT) {
            Some(slot) if name.eq_ignore_ascii_case(b"RC.SLOTDONE") => {
                env.shared.rebalance.import_done(slot);
                exec.out.extend_from_slice(b"+OK\r\n");
            }
            Some(_) => {
                // The sender's copy is confirmed, but this former owner may
                // hold writes the sender never had (views that disagreed
                // across a partition): anti-entropy hands the slot to its
                // primary, newer keys included, before deleting it here.
                exec.out.extend_from_slice(b"+OK\r\n");
            }
            None => encode::error(&mut exec.out, b"ERR invalid slot"),
        }
    } else if name.eq_ignore_ascii_case(b"RC.SENDING") && args.len() >= 3 && args.len() <= 3 + 4096 {
        let to = String::from_utf8_lossy(args.get(1)).into_owned();
        let table = num::<u64>(args.get(2)).unwrap_or(0);
        let slots: Vec<u16> = args.iter().skip(3).map(|a| num::<u16>(a).unwrap_or(u16::MAX)).collect();
        let flags = env.shared.rebalance.sending(&to, table, &slots);
        encode::array_header(&mut exec.out, flags.len());
        for f in flags {
            encode::integer(&mut exec.out, i64::from(f));
        }
    } else if name.eq_ignore_ascii_case(b"RC.DIGESTS") && args.len() == 2 {
        match num::<usize>(args.get(1)).filter(|&s| s < SHARD_COUNT) {
            Some(shard) => {
                let slots = super::antientropy::shard_slots(shard);
                // The table first: the digests then cover every write this
                // node applied under an older table.
                let table = crate::cluster::membership::members_digest(&env.shared.topology());
                let digests = env.shared.store.slot_digests(&slots);
                encode::array_header(&mut exec.out, digests.len() + 1);
                for d in digests {
                    encode::integer(&mut exec.out, d as i64);
                }
                encode::integer(&mut exec.out, table as i64);
            }
            None => encode::error(&mut exec.out, b"ERR invalid shard"),
        }
    } else if name.eq_ignore_ascii_case(b"RC.SUMS") && args.len() == 2 {
        // Per shard, the XOR of the digests of the slots the asker is
        // primary for and this node co-owns; then the members digest. An
        // asker this table does not know gets zeros (its table differs).
        let t = env.shared.topology();
        let asker = String::from_utf8_lossy(args.get(1));
        let sums = match t.nodes.iter().position(|n| n.name == asker) {
            Some(i) => super::antientropy::shard_sums(&t, &env.shared.store.all_slot_digests(), i as u16, t.me),
            None => vec![0; SHARD_COUNT],
        };
        encode::array_header(&mut exec.out, sums.len() + 1);
        for d in sums {
            encode::integer(&mut exec.out, d as i64);
        }
        encode::integer(&mut exec.out, crate::cluster::membership::members_digest(&t) as i64);
    } else if name.eq_ignore_ascii_case(b"RC.KEYVERS") && args.len() == 2 {
        match num::<u16>(args.get(1)).filter(|&s| s < SLOT_COUNT) {
            Some(slot) => {
                let body = std::cell::RefCell::new((BytesMut::new(), 0usize));
                let add = |k: &[u8], v: u64| {
                    let (b, n) = &mut *body.borrow_mut();
                    encode::bulk(b, k);
                    encode::integer(b, v as i64);
                    *n += 2;
                };
                env.shared.store.visit_slot(slot, env.now_ms, |e| add(e.key(), e.version()), |k, v| add(k, v));
                let (body, n) = body.into_inner();
                encode::array_header(&mut exec.out, n);
                exec.out.extend_from_slice(&body);
            }
            None => encode::error(&mut exec.out, b"ERR invalid slot"),
        }
    } else if name.eq_ignore_ascii_case(b"RC.PING") {
        exec.out.extend_from_slice(b"+PONG\r\n");
    } else {
        let text = format!("ERR unknown peer command '{}'", String::from_utf8_lossy(&name[..name.len().min(64)]));
        encode::error(&mut exec.out, text.as_bytes());
    }
}

/// A 16-hex-digit u64 (`RC.FWD`'s table digest).
fn hex_u64(b: &[u8]) -> Option<u64> {
    if b.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}
