//! Client connections.
//!
//! Each connection is one task: read whatever is available, parse every
//! complete request in the buffer, execute each and append its reply to one
//! output buffer, then write that buffer with one call. A pipeline of N
//! commands therefore costs one read and one write, not N.
//!
//! Bounds: reads are at most `READ_CHUNK_MAX` at a time; unparsed input may
//! not exceed `client-query-buffer-limit`; the output buffer is written out
//! whenever it passes `OUT_FLUSH_BYTES` in the middle of a pipeline; buffers
//! that grew for one large request are released afterwards.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use ringcache_protocol::{Args, RequestParser, encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::exec::{Env, Exec};
use super::unix_ms;
use crate::command::ConnState;
use crate::shared::{ClientInfo, LocalStats, Shared};

const READ_CHUNK: usize = 16 * 1024;
const READ_CHUNK_MAX: usize = 1024 * 1024;
const OUT_FLUSH_BYTES: usize = 64 * 1024;
const BUFFER_KEEP_MAX: usize = 256 * 1024;
/// RESET may drop authentication, which changes the limits the requests
/// after it are parsed with: it runs on its own, never inside a batch.
fn is_reset(input: &[u8], ranges: &[(usize, usize)]) -> bool {
    ranges.first().is_some_and(|&(a, b)| input[a..b].eq_ignore_ascii_case(b"RESET"))
}

/// Redis's protected-mode refusal, adapted.
const DENIED: &[u8] = b"-DENIED ringcache is running in protected mode because protected mode is enabled and no \
password is set for the default user. In this mode connections are only accepted from the loopback interface. \
If you want to connect from external computers, either set a password (--requirepass, or CONFIG SET requirepass \
from loopback) or disable protected mode (--protected-mode no, or CONFIG SET protected-mode no from loopback) \
after making sure the port is not reachable from untrusted networks.\r\n";

/// Protected mode: no password and a client that is not on loopback.
fn denied(shared: &Shared, ip: std::net::IpAddr) -> bool {
    let loopback = match ip {
        std::net::IpAddr::V4(a) => a.is_loopback(),
        std::net::IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    !loopback && shared.settings.protected_mode.load(Relaxed) && shared.settings.requirepass().is_none()
}

/// How long a TLS client has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts clients until `shutdown` turns true; with `tls`, each
/// connection completes a TLS handshake first (bounded by
/// `TLS_HANDSHAKE_TIMEOUT`, and counted against maxclients meanwhile).
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<Arc<crate::tls::Tls>>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (mut stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        shared.metrics.connections_received.fetch_add(1, Relaxed);
        if denied(&shared, addr.ip()) {
            shared.metrics.clients_denied.fetch_add(1, Relaxed);
            debug!(%addr, "protected mode: refused a client that is not on loopback");
            tokio::spawn(async move {
                let _ = stream.write_all(DENIED).await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        let laddr = stream.local_addr().unwrap_or(addr);
        let max = shared.settings.maxclients.load(Relaxed) as usize;
        let Some(info) = shared.clients.register(addr, laddr, unix_ms(), max) else {
            shared.metrics.connections_rejected.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            });
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let id = info.id;
            debug!(id, %addr, "client connected");
            // Unregisters even if serving panics, so a bug cannot use up
            // maxclients one connection at a time.
            let _registered = Registered(&shared, id);
            match acceptor {
                None => serve(&shared, stream, info, shutdown).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve(&shared, tls, info, shutdown).await,
                    Ok(Err(e)) => {
                        shared.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
                        debug!(id, %addr, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        shared.metrics.tls_handshake_failures.fetch_add(1, Relaxed);
                        debug!(id, %addr, "TLS handshake timed out");
                    }
                },
            }
            debug!(id, %addr, "client disconnected");
        });
    }
}

struct Registered<'a>(&'a Shared, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.clients.unregister(self.1);
    }
}

enum Read {
    Data(usize),
    Closed,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut stream: S,
    info: Arc<ClientInfo>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conn = ConnState::new(info.clone(), shared.settings.requirepass().is_some());
    let mut parser = RequestParser::new();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut exec = Exec::new(READ_CHUNK);
    let mut stats = LocalStats::default();
    let mut batch = super::batch::Batch::default();
    loop {
        // Read more at once for a large bulk, but never reserve more than
        // what already arrived: an announced length alone buys nothing.
        let want = match parser.bulk_remaining(input.len()) {
            Some(left) => left.min(input.len()).clamp(READ_CHUNK, READ_CHUNK_MAX),
            None => READ_CHUNK,
        };
        input.reserve(want);
        let timeout = shared.settings.timeout();
        // After shutdown a connection drains what its client already sent
        // (replies and all), then closes.
        let read = if *shutdown.borrow() {
            drain(&mut stream, &mut input).await
        } else {
            tokio::select! {
                biased;
                r = stream.read_buf(&mut input) => match r {
                    Ok(0) | Err(_) => Read::Closed,
                    Ok(n) => Read::Data(n),
                },
                _ = info.kill.notified() => Read::Closed,
                _ = shutdown.changed() => drain(&mut stream, &mut input).await,
                _ = async {
                    match timeout {
                        Some(t) => tokio::time::sleep(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    debug!(id = info.id, "closing idle client");
                    Read::Closed
                }
            }
        };
        let Read::Data(n) = read else { break };
        stats.input_bytes += n as u64;
        let now_ms = unix_ms();
        let limits = shared.settings.limits();
        let mut close = false;
        batch.clear();
        loop {
            let parsed = parser.parse(&input, &limits, conn.authenticated);
            // Multibulk requests of an authenticated connection are collected
            // and run together (see `Batch`). Anything else first runs what
            // was collected, to keep replies in order: an inline request owns
            // its arguments, and an unauthenticated connection's limits
            // depend on whether the AUTH before it succeeded.
            let mut in_batch = false;
            if let Ok(true) = parsed
                && conn.authenticated
                && let Some(ranges) = parser.ranges()
                && !is_reset(&input, ranges)
            {
                batch.push(ranges);
                in_batch = true;
                if batch.len() < super::batch::BATCH_REQUESTS_MAX {
                    continue;
                }
            }
            if !batch.is_empty() {
                batch.prefetch(&shared.store, &input);
                for i in 0..batch.len() {
                    let io = Io { stream: &mut stream, exec: &mut exec, stats: &mut stats };
                    if !run_request(shared, &mut conn, io, now_ms, batch.args(&input, i)).await {
                        close = true;
                        break;
                    }
                }
                batch.clear();
                if close {
                    break;
                }
                if in_batch {
                    // The request just parsed filled the batch and has run.
                    continue;
                }
            }
            match parsed {
                Ok(true) => {
                    let io = Io { stream: &mut stream, exec: &mut exec, stats: &mut stats };
                    if !run_request(shared, &mut conn, io, now_ms, parser.args(&input)).await {
                        close = true;
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    shared.metrics.protocol_errors.fetch_add(1, Relaxed);
                    info!(id = info.id, addr = %info.addr, error = %e, "closing client after a protocol error");
                    encode::error(&mut exec.out, format!("ERR {e}").as_bytes());
                    close = true;
                    break;
                }
            }
        }
        parser.compact(&mut input);
        if !close && input.len() as u64 > shared.settings.client_query_buffer_limit.load(Relaxed) {
            shared.metrics.protocol_errors.fetch_add(1, Relaxed);
            warn!(id = info.id, addr = %info.addr, bytes = input.len(), "closing client that reached the query buffer limit");
            encode::error(
                &mut exec.out,
                b"ERR Protocol error: query buffer limit (client-query-buffer-limit) exceeded",
            );
            close = true;
        }
        let written = write_out(shared, &mut stats, &mut stream, &mut exec).await;
        info.last_ms.store(now_ms, Relaxed);
        if close || written.is_err() || info.killed.load(Relaxed) {
            break;
        }
        if input.is_empty() && input.capacity() > BUFFER_KEEP_MAX {
            input = BytesMut::with_capacity(READ_CHUNK);
        }
        if exec.out.capacity() > BUFFER_KEEP_MAX {
            exec.out = BytesMut::with_capacity(READ_CHUNK);
        }
    }
    stats.flush_all(&shared.metrics);
    let _ = stream.shutdown().await;
}

/// What the client already sent, without waiting for more (one poll of a
/// read: a zero timeout polls its future once before it expires).
async fn drain<S: AsyncRead + Unpin>(stream: &mut S, input: &mut BytesMut) -> Read {
    match tokio::time::timeout(std::time::Duration::ZERO, stream.read_buf(input)).await {
        Ok(Ok(n)) if n > 0 => Read::Data(n),
        _ => Read::Closed,
    }
}

/// The connection's output side, lent to [`run_request`].
struct Io<'a, S> {
    stream: &'a mut S,
    exec: &'a mut Exec,
    stats: &'a mut LocalStats,
}

/// Runs one request and writes out the replies if they passed
/// `OUT_FLUSH_BYTES`. False: the connection must close (QUIT, a failed write).
async fn run_request<S: AsyncWrite + Unpin>(
    shared: &Shared,
    conn: &mut ConnState,
    io: Io<'_, S>,
    now_ms: u64,
    args: Args<'_>,
) -> bool {
    let mut env = Env { shared, conn, stats: io.stats, now_ms };
    io.exec.run(&mut env, args);
    // Held: its keys' newest state is fetched from the members that may
    // hold it, then it runs (or is refused, having not run).
    let mut round = 0;
    loop {
        if io.exec.awaits_primary() {
            io.exec.await_primary(shared).await;
            env.now_ms = unix_ms();
            io.exec.run(&mut env, args);
            continue;
        }
        if io.exec.awaits_keepers() {
            io.exec.await_keepers(shared).await;
            env.now_ms = unix_ms();
            io.exec.run(&mut env, args);
            continue;
        }
        if !io.exec.held() {
            break;
        }
        round += 1;
        match io.exec.fetch_held(shared, round).await {
            Ok(()) => {
                env.now_ms = unix_ms();
                io.exec.run(&mut env, args);
            }
            Err(text) => io.exec.refuse_held(&mut env, args, &text),
        }
    }
    io.exec.request_done();
    if conn.quit {
        return false;
    }
    io.exec.out.len() < OUT_FLUSH_BYTES || write_out(shared, io.stats, io.stream, io.exec).await.is_ok()
}

/// Waits for the batch's pending replies (forwards, quorums), then writes
/// every reply so far.
async fn write_out<S: AsyncWrite + Unpin>(
    shared: &Shared,
    stats: &mut LocalStats,
    stream: &mut S,
    exec: &mut Exec,
) -> std::io::Result<()> {
    exec.finish(shared).await;
    // Counted before the replies leave: a client that sees an answer and
    // then asks INFO finds its command counted.
    stats.flush(&shared.metrics);
    if exec.out.is_empty() {
        return Ok(());
    }
    stats.output_bytes += exec.out.len() as u64;
    let r = stream.write_all(&exec.out).await;
    exec.out.clear();
    r?;
    // TLS buffers records; a TcpStream's flush is a no-op.
    stream.flush().await
}
