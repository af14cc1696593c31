//! Outgoing peer links: one task per other member, owning one TCP
//! connection to that member's cluster port.
//!
//! Callers hand a link [`Msg`]s through a bounded channel: replicated
//! writes (`RC.PUT`/`RC.DEL`, acknowledged as a group) and calls whose raw
//! replies they want (forwarded commands, reads, cluster-wide commands).
//! The task writes whatever is queued in one go (many requests per
//! syscall) and matches replies to requests in order.
//!
//! Bounds and failure: at most `INFLIGHT_OPS_MAX` requests (plus the
//! requests of one call, a batch's forward group at most) /
//! `INFLIGHT_BYTES_MAX` bytes are outstanding; beyond that, and whenever
//! the member is unreachable, replicated writes become hints (bounded, see
//! [`Hints`]) and calls fail at once with [`LinkError::Unreachable`] (never
//! sent: safe to retry). When a connection breaks, the writes it had not
//! had acknowledged become hints and its calls fail with
//! [`LinkError::Closed`] (they may have run). Hints are replayed, oldest
//! first, as soon as the link is up again, except those for slots the
//! member no longer owns. Reconnects back off from 50 ms to 1 s.
//!
//! A link that has just started, or whose connection has just broken, is
//! not yet "unreachable" for calls: while it has been failing to connect
//! for less than the replication timeout — counted afresh when the member
//! (re)appears in the table under a new generation — calls that arrive are held (at
//! most `HELD_MAX`) and sent as soon as it connects, so a member that
//! joined a moment ago or restarted its socket never shows as
//! `-CLUSTERDOWN` to a client. A held call is refused (unsent) once it has
//! waited the replication timeout; past that streak calls fail at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ringcache_protocol::{Limits, decode_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

use crate::cluster::lifecycle::Phase;
use crate::cluster::protocol::{self, Kind, PeerError, Reply, Request};
use crate::cluster::replication::{Hints, LinkKey, NONCE_LEN, hex, proof_eq};
use crate::cluster::topology::Topology;
use crate::peers::{Ack, Link, LinkError, LinkStats, Msg};
use crate::shared::Shared;

const CHANNEL_MSGS: usize = 4096;
const INFLIGHT_OPS_MAX: usize = 100_000;
const INFLIGHT_BYTES_MAX: usize = 64 << 20;
/// Bytes written per call at most, so replies keep being read meanwhile.
const WRITE_CHUNK_MAX: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection whose oldest request has waited twice the replication
/// timeout (at least this) is given up: its unacknowledged writes become
/// hints, replayed once the peer answers again (a paused peer, a lost
/// route), instead of waiting on a socket that may never answer.
const REPLY_TIMEOUT_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Messages taken from the channel at once before writing.
const DRAIN_MSGS_MAX: usize = 256;
/// Hints replayed per round, once fewer than this many requests wait.
const REPLAY_BATCH: usize = 1024;
/// How often a failing link looks for its member (re)appearing in the table.
const TABLE_POLL: Duration = Duration::from_millis(50);

/// Calls held at most while a link (re)connects.
const HELD_MAX: usize = 1024;

/// Which of a link's two connections a task drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Repl,
    Forward,
}

/// Starts a link to every member of `t` that has none. Links to former
/// members stay: they keep their hints (dropped at replay if the slots
/// moved) and reconnect if the member comes back.
pub fn sync(shared: &Arc<Shared>, t: &Topology) {
    for (i, n) in t.nodes.iter().enumerate() {
        if i == usize::from(t.me) {
            continue;
        }
        shared.links.get_or_insert(n.name.as_str(), |name| {
            let (tx, rx) = mpsc::channel(CHANNEL_MSGS);
            let (fwd, fwd_rx) = mpsc::channel(CHANNEL_MSGS);
            let link = Link { name: name.clone(), tx, fwd, stats: Arc::default() };
            tokio::spawn(run(shared.clone(), name.clone(), rx, link.stats.clone(), Lane::Repl));
            tokio::spawn(run(shared.clone(), name, fwd_rx, Arc::default(), Lane::Forward));
            link
        });
    }
}

/// The member's peer address, if it is in the current topology.
fn target(shared: &Shared, name: &str) -> Option<SocketAddr> {
    let t = shared.topology();
    t.nodes.iter().find(|n| n.name == name).map(|n| SocketAddr::new(n.client_addr.ip(), n.cluster_port))
}

struct State {
    hints: Hints,
    stats: Arc<LinkStats>,
}

impl State {
    fn hint(&mut self, ops: Vec<(u16, Bytes)>) {
        for (slot, op) in ops {
            // A copy of its own: an op cut from a batch's shared buffer
            // (`Exec::ops_buf`) would keep the whole buffer alive for as
            // long as the hint waits, beyond what the hint bytes count.
            self.hints.push(slot, Bytes::copy_from_slice(&op));
        }
        self.publish();
    }

    fn publish(&self) {
        let s = &self.stats;
        s.hints.store(self.hints.len() as u64, Relaxed);
        s.hint_bytes.store(self.hints.bytes() as u64, Relaxed);
        s.hints_stored.store(self.hints.stored, Relaxed);
        s.hints_dropped.store(self.hints.dropped, Relaxed);
        s.hints_expired.store(self.hints.expired, Relaxed);
    }

    /// While disconnected: writes become hints, calls fail unsent.
    fn refuse(&mut self, msg: Msg) {
        match msg {
            Msg::Repl { ops, done } => {
                self.hint(ops);
                if let Some(d) = done {
                    d.send(false);
                }
            }
            Msg::Call { done, .. } => {
                let _ = done.send(Err(LinkError::Unreachable));
            }
        }
    }
}

async fn run(shared: Arc<Shared>, name: Arc<str>, mut rx: mpsc::Receiver<Msg>, stats: Arc<LinkStats>, lane: Lane) {
    let config = &shared.config;
    let hints = Hints::new(config.hints_max_keys as usize, config.hints_max_bytes as usize);
    let mut st = State { hints, stats };
    let key = LinkKey::new(&config.cluster_name, config.cluster_secret.as_deref());
    let mut backoff = BACKOFF_MIN;
    let mut logged_down = false;
    // Calls held while the link connects, with when each arrived; and
    // since when the connection has been failing (None: never tried yet).
    let mut held: VecDeque<(Instant, Msg)> = VecDeque::new();
    let mut failing_since: Option<Instant> = None;
    let hold = config.replication_timeout;
    // The member's generation in the table (None: not in it). When it
    // (re)appears — a restart, a partition healed — the link reconnects
    // at once and holds calls meanwhile, as for a young failure: a client
    // must not see the link's old backoff as "unreachable".
    // Also when a new table still names it (a partition healed on this
    // node's side: the member was there all along, unreachable). (`seen`
    // starts at the first table naming the member: links are made just
    // before that table is published.)
    let generation = |shared: &Shared| {
        let t = shared.topology();
        t.nodes.iter().find(|n| *n.name == *name).map(|n| (t.table.epoch, n.generation))
    };
    let mut seen = generation(&shared);
    let came_back = |seen: &mut Option<(u64, u64)>, g: Option<(u64, u64)>| {
        let back = g.is_some() && seen.is_some() && g != *seen;
        if g.is_some() {
            *seen = g;
        }
        back
    };
    loop {
        if shared.lifecycle.phase() == Phase::Left {
            for (_, m) in held.drain(..) {
                st.refuse(m);
            }
            return;
        }
        let stream = match target(&shared, &name) {
            Some(addr) => connect(&key, &shared.config.node_name, addr, shared.cluster_tls().as_ref()).await,
            None => Err("not a member".to_string()),
        };
        match stream {
            Ok(stream) => {
                backoff = BACKOFF_MIN;
                logged_down = false;
                info!(peer = %name, "peer link up");
                st.stats.connects.fetch_add(1, Relaxed);
                st.stats.down.store(false, Relaxed);
                st.stats.connected.store(true, Relaxed);
                let held_now = std::mem::take(&mut held).into_iter().map(|(_, m)| m);
                let why = match stream {
                    PeerStream::Tcp(s) => {
                        let (rd, wr) = s.into_split();
                        session(&shared, &name, rd, wr, held_now, &mut rx, &mut st, lane).await
                    }
                    PeerStream::Tls(s) => {
                        let (rd, wr) = tokio::io::split(*s);
                        session(&shared, &name, rd, wr, held_now, &mut rx, &mut st, lane).await
                    }
                };
                failing_since = Some(Instant::now());
                st.stats.connected.store(false, Relaxed);
                st.stats.down.store(true, Relaxed);
                st.stats.inflight.store(0, Relaxed);
                st.stats.oldest_ms.store(0, Relaxed);
                match why {
                    End::ChannelClosed => return,
                    End::Broken(e) => warn!(peer = %name, error = %e, "peer link down"),
                }
            }
            Err(e) => {
                failing_since.get_or_insert_with(Instant::now);
                st.stats.down.store(true, Relaxed);
                if !logged_down {
                    debug!(peer = %name, error = %e, "cannot reach peer");
                    logged_down = true;
                }
            }
        }
        // Wait before the next attempt: hold calls while the failure is
        // young, refuse the rest (writes become hints).
        let until = Instant::now() + backoff;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        loop {
            let now = Instant::now();
            if came_back(&mut seen, generation(&shared)) {
                failing_since = Some(now);
                backoff = BACKOFF_MIN;
                break;
            }
            while held.front().is_some_and(|(at, _)| *at + hold <= now) {
                if let Some((_, m)) = held.pop_front() {
                    st.refuse(m);
                }
            }
            let young = failing_since.is_some_and(|t| now < t + hold);
            let wake = held.front().map_or(until, |(at, _)| until.min(*at + hold)).min(now + TABLE_POLL);
            tokio::select! {
                m = rx.recv() => match m {
                    // The member may have (re)joined since the last poll:
                    // look before refusing, and reconnect at once if so.
                    Some(m @ Msg::Call { .. })
                        if !young && held.len() < HELD_MAX && came_back(&mut seen, generation(&shared)) =>
                    {
                        held.push_back((now, m));
                        failing_since = Some(now);
                        backoff = BACKOFF_MIN;
                        break;
                    }
                    Some(m @ Msg::Call { .. }) if young && held.len() < HELD_MAX => held.push_back((now, m)),
                    Some(m) => st.refuse(m),
                    None => {
                        for (_, m) in held.drain(..) {
                            st.refuse(m);
                        }
                        return;
                    }
                },
                _ = tokio::time::sleep_until(wake) => if wake >= until { break },
            }
        }
    }
}

pub(crate) fn nonce() -> [u8; NONCE_LEN] {
    use rand::TryRng;
    let mut b = [0u8; NONCE_LEN];
    if rand::rngs::SysRng.try_fill_bytes(&mut b).is_err() {
        // No OS randomness: fall back to time and address entropy, still
        // fresh per connection, which is what the handshake needs.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let h =
            xxhash_rust::xxh3::xxh3_128(&[t.to_le_bytes(), (&b as *const _ as usize as u128).to_le_bytes()].concat());
        b.copy_from_slice(&h.to_le_bytes());
    }
    b
}

/// Reads one reply frame of the handshake, as a reply to `kind`.
async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut, kind: Kind) -> Result<Reply, String> {
    loop {
        if let Some((f, n)) = decode_frame(buf, &protocol::HANDSHAKE_LIMITS).map_err(|e| e.to_string())? {
            buf.advance(n);
            return Ok(Reply::decode(kind, &f));
        }
        if buf.len() > protocol::HANDSHAKE_BYTES_MAX {
            return Err("handshake reply too long".into());
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed during handshake".into());
        }
    }
}

/// A connected peer link: plain TCP, or mutual TLS (`--tls-cluster`).
enum PeerStream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects (with TLS when `tls`: the peer's certificate must name `addr`)
/// and proves both sides know the cluster key (see
/// `cluster::replication::LinkKey`).
async fn connect(
    key: &LinkKey,
    me: &str,
    addr: SocketAddr,
    tls: Option<&crate::tls::ClusterTls>,
) -> Result<PeerStream, String> {
    let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => {
            let mut s = tcp;
            handshake(&mut s, key, me).await?;
            Ok(PeerStream::Tcp(s))
        }
        Some(tls) => {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let mut s = timeout(HANDSHAKE_TIMEOUT, tls.connector.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS: {e}"))?;
            handshake(&mut s, key, me).await?;
            Ok(PeerStream::Tls(Box::new(s)))
        }
    }
}

/// The connecting side of the cluster-key handshake.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, key: &LinkKey, me: &str) -> Result<(), String> {
    let refused = |e: PeerError| String::from_utf8_lossy(&e.text()).into_owned();
    let hs = async {
        let cn = hex(&nonce());
        let mut out = BytesMut::new();
        Request::Hello { name: me.as_bytes(), nonce: cn.as_bytes() }.encode(&mut out);
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::new();
        let (sn, proof) = match read_reply(stream, &mut buf, Kind::Hello).await? {
            Reply::Challenge { nonce, proof } => (nonce, proof),
            Reply::Error(e) => return Err(refused(e)),
            _ => return Err("unexpected handshake reply".to_string()),
        };
        if !proof_eq(&proof, key.server_proof(cn.as_bytes(), &sn).as_bytes()) {
            return Err("peer does not know the cluster secret".to_string());
        }
        out.clear();
        let mine = key.client_proof(&sn, cn.as_bytes());
        Request::Auth { proof: mine.as_bytes() }.encode(&mut out);
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        match read_reply(stream, &mut buf, Kind::Auth).await? {
            Reply::Ok => Ok(()),
            Reply::Error(e) => Err(refused(e)),
            _ => Err("unexpected handshake reply".to_string()),
        }
    };
    timeout(HANDSHAKE_TIMEOUT, hs).await.map_err(|_| "handshake timed out".to_string())?
}

enum End {
    ChannelClosed,
    Broken(String),
}

enum Waiting {
    Repl { ops: Vec<(u16, Bytes)>, done: Option<Ack>, ok: bool, replay: bool },
    Call { replies: Vec<Bytes>, done: oneshot::Sender<Result<Vec<Bytes>, LinkError>> },
}

struct Pending {
    left: usize,
    bytes: usize,
    sent_ms: u64,
    at: Instant,
    what: Waiting,
}

#[allow(clippy::too_many_arguments)]
async fn session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    shared: &Shared,
    name: &str,
    mut rd: R,
    mut wr: W,
    held: impl Iterator<Item = Msg>,
    rx: &mut mpsc::Receiver<Msg>,
    st: &mut State,
    lane: Lane,
) -> End {
    let mut wbuf = BytesMut::new();
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut inflight_ops = 0usize;
    let mut inflight_bytes = 0usize;
    let limits = protocol::REPLY_LIMITS;
    // A replica answers replicated writes at once: silence for twice the
    // replication timeout means it is paused or gone. A forwarded request
    // may itself wait up to the timeout for its quorum, so that lane
    // allows three.
    let t = shared.config.replication_timeout;
    let reply_timeout = match lane {
        Lane::Repl => t * 2,
        Lane::Forward => t * 3,
    }
    .max(REPLY_TIMEOUT_MIN);
    // Calls held while connecting go first, in the order they came.
    let mut o = Outbox { wbuf: &mut wbuf, pending: &mut pending, ops: &mut inflight_ops, bytes: &mut inflight_bytes };
    for m in held {
        o.take(m, st);
    }
    let end = loop {
        // Replay hints when the link is not busy.
        if !st.hints.is_empty() && inflight_ops < REPLAY_BATCH {
            let t = shared.topology();
            let grace = shared.store.tombstone_grace_ms();
            let mut ops = st.hints.take(REPLAY_BATCH, super::unix_ms(), grace);
            let before = ops.len();
            ops.retain(|(slot, _)| *slot == crate::peers::ANY_SLOT || t.table.owns(name, *slot));
            st.hints.dropped += (before - ops.len()) as u64;
            st.stats.hints_replayed.fetch_add(ops.len() as u64, Relaxed);
            st.publish();
            if !ops.is_empty() {
                queue(&mut wbuf, &mut pending, &mut inflight_ops, &mut inflight_bytes, ops, None, true);
            }
        }
        let oldest = pending.front().map(|p| p.at + reply_timeout);
        tokio::select! {
            m = rx.recv() => match m {
                None => break End::ChannelClosed,
                Some(m) => {
                    // Take everything already queued: one write carries the
                    // replicated writes of many client batches.
                    let mut o = Outbox { wbuf: &mut wbuf, pending: &mut pending, ops: &mut inflight_ops, bytes: &mut inflight_bytes };
                    o.take(m, st);
                    for _ in 0..DRAIN_MSGS_MAX {
                        match rx.try_recv() {
                            Ok(m) => o.take(m, st),
                            Err(_) => break,
                        }
                    }
                }
            },
            r = rd.read_buf(&mut rbuf) => match r {
                Ok(0) => break End::Broken("closed by peer".into()),
                Err(e) => break End::Broken(e.to_string()),
                Ok(_) => {
                    if let Err(e) = take_replies(&mut rbuf, &limits, &mut pending, &mut inflight_ops, &mut inflight_bytes) {
                        break End::Broken(e);
                    }
                    if rbuf.is_empty() && rbuf.capacity() > 1 << 20 {
                        rbuf = BytesMut::with_capacity(64 * 1024);
                    }
                }
            },
            w = wr.write(&wbuf[..wbuf.len().min(WRITE_CHUNK_MAX)]), if !wbuf.is_empty() => match w {
                Ok(n) => {
                    wbuf.advance(n);
                    // TLS buffers records until flushed (TCP: a no-op).
                    if wbuf.is_empty() && let Err(e) = wr.flush().await {
                        break End::Broken(e.to_string());
                    }
                }
                Err(e) => break End::Broken(e.to_string()),
            },
            _ = async {
                match oldest {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => break End::Broken(format!("no reply in {} ms", reply_timeout.as_millis())),
            _ = sleep(Duration::from_millis(100)), if !st.hints.is_empty() => {}
        }
        st.stats.inflight.store(inflight_ops as u64, Relaxed);
        st.stats.oldest_ms.store(pending.front().map_or(0, |p| p.sent_ms), Relaxed);
    };
    // Unanswered writes go back to the hints; calls may have run.
    for p in pending {
        match p.what {
            Waiting::Repl { ops, done, .. } => {
                st.hint(ops);
                if let Some(d) = done {
                    d.send(false);
                }
            }
            Waiting::Call { done, .. } => {
                let _ = done.send(Err(LinkError::Closed));
            }
        }
    }
    end
}

/// The sending side of a session, lent to [`Outbox::take`].
struct Outbox<'a> {
    wbuf: &'a mut BytesMut,
    pending: &'a mut VecDeque<Pending>,
    ops: &'a mut usize,
    bytes: &'a mut usize,
}

impl Outbox<'_> {
    /// Queues a message for writing, or refuses it past the bounds.
    fn take(&mut self, m: Msg, st: &mut State) {
        let full = |n: usize, ops: usize, bytes: usize| ops + n > INFLIGHT_OPS_MAX || bytes > INFLIGHT_BYTES_MAX;
        match m {
            Msg::Repl { ops, done } => {
                if full(ops.len(), *self.ops, *self.bytes) {
                    st.refuse(Msg::Repl { ops, done });
                } else {
                    st.stats.ops_sent.fetch_add(ops.len() as u64, Relaxed);
                    queue(self.wbuf, self.pending, self.ops, self.bytes, ops, done, false);
                }
            }
            Msg::Call { req, count, done } => {
                if done.is_closed() {
                    return; // the caller gave up: never run it late
                }
                // Refused only when the link is already full, whatever the
                // call's size (a group of forwards may pass the bound by
                // its own count): a big group refused while a smaller,
                // later one of the same batch got in would reorder the
                // client's pipeline when the first is sent again.
                if full(1, *self.ops, *self.bytes) {
                    let _ = done.send(Err(LinkError::Unreachable));
                    return;
                }
                st.stats.calls_sent.fetch_add(count as u64, Relaxed);
                self.wbuf.extend_from_slice(&req);
                *self.ops += count;
                *self.bytes += req.len();
                self.pending.push_back(Pending {
                    left: count,
                    bytes: req.len(),
                    sent_ms: super::unix_ms(),
                    at: Instant::now(),
                    what: Waiting::Call { replies: Vec::with_capacity(count), done },
                });
            }
        }
    }
}

fn queue(
    wbuf: &mut BytesMut,
    pending: &mut VecDeque<Pending>,
    inflight_ops: &mut usize,
    inflight_bytes: &mut usize,
    ops: Vec<(u16, Bytes)>,
    done: Option<Ack>,
    replay: bool,
) {
    let mut bytes = 0;
    for (_, op) in &ops {
        wbuf.extend_from_slice(op);
        bytes += op.len();
    }
    *inflight_ops += ops.len();
    *inflight_bytes += bytes;
    pending.push_back(Pending {
        left: ops.len(),
        bytes,
        sent_ms: super::unix_ms(),
        at: Instant::now(),
        what: Waiting::Repl { ops, done, ok: true, replay },
    });
}

/// Matches complete replies in `rbuf` to the oldest pending requests.
fn take_replies(
    rbuf: &mut BytesMut,
    limits: &Limits,
    pending: &mut VecDeque<Pending>,
    inflight_ops: &mut usize,
    inflight_bytes: &mut usize,
) -> Result<(), String> {
    loop {
        let Some(p) = pending.front_mut() else {
            if rbuf.is_empty() {
                return Ok(());
            }
            return Err("reply to nothing".into());
        };
        match &mut p.what {
            // The usual answer to a replicated write, taken without
            // decoding or copying it.
            Waiting::Repl { .. } if rbuf.starts_with(b"+OK\r\n") => rbuf.advance(5),
            Waiting::Repl { ok, .. } => {
                let Some((frame, n)) = decode_frame(rbuf, limits).map_err(|e| e.to_string())? else {
                    return Ok(());
                };
                rbuf.advance(n);
                *ok &= !frame.is_error();
            }
            Waiting::Call { replies, .. } => {
                let Some((_, n)) = decode_frame(rbuf, limits).map_err(|e| e.to_string())? else {
                    return Ok(());
                };
                replies.push(rbuf.split_to(n).freeze());
            }
        }
        p.left -= 1;
        *inflight_ops -= 1;
        if p.left == 0 {
            let p = pending.pop_front().expect("front exists");
            *inflight_bytes -= p.bytes;
            match p.what {
                Waiting::Repl { done, ok, replay, .. } => {
                    if !ok && replay {
                        debug!("a replayed hint was refused");
                    }
                    if let Some(d) = done {
                        d.send(ok);
                    }
                }
                Waiting::Call { replies, done } => {
                    let _ = done.send(Ok(replies));
                }
            }
        }
    }
}
