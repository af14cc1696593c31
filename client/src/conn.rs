//! One multiplexed connection to one node, driven by a single task.
//! Requests from any number of tasks go into a bounded channel; the task
//! takes every request waiting at that moment (up to `BATCH_MAX`), appends
//! them to its output buffer and writes as much as the socket takes
//! (automatic pipelining); it reads replies whenever the socket is readable
//! and hands each to the oldest waiting request. Reads and writes are
//! non-blocking and interleaved, so a large write never stops the replies
//! from being read (no deadlock with a server that is writing to us). The
//! queue of owed replies belongs to the task alone: no locks.
//!
//! Bounds: the channel holds at most `QUEUE_MAX` requests (callers wait
//! beyond that); the task takes no new request while `IN_FLIGHT_MAX` are
//! unanswered or `OUT_MAX` bytes are unwritten.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ringcache_protocol::{Frame, Limits, decode_frame};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

const BATCH_MAX: usize = 256;
const QUEUE_MAX: usize = 4096;
const IN_FLIGHT_MAX: usize = 16384;
const OUT_MAX: usize = 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

type Reply = oneshot::Sender<Result<Frame>>;

struct Request {
    bytes: BytesMut,
    reply: Reply,
}

/// A live connection.
pub struct Conn {
    tx: mpsc::Sender<Request>,
    broken: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, timeout: Duration, password: Option<&str>) -> Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::NotSent(format!("connect to {addr} timed out")))?
            .map_err(|e| Error::NotSent(format!("connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let broken = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(stream, rx, broken.clone()));
        let conn = Conn { tx, broken, addr };
        if let Some(p) = password
            && let Frame::Error(e) = conn.request(&[b"AUTH".as_slice(), p.as_bytes()]).await?
        {
            return Err(Error::NotSent(format!("AUTH: {}", String::from_utf8_lossy(&e))));
        }
        Ok(conn)
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Relaxed) || self.tx.is_closed()
    }

    /// Sends one command, returns its reply frame (error replies included).
    pub async fn request<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Frame> {
        if self.is_broken() {
            return Err(Error::NotSent(format!("connection to {} is broken", self.addr)));
        }
        let size: usize = args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>() + 16;
        let mut bytes = BytesMut::with_capacity(size);
        ringcache_protocol::encode::command(&mut bytes, args);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { bytes, reply })
            .await
            .map_err(|_| Error::NotSent(format!("connection to {} closed", self.addr)))?;
        rx.await.map_err(|_| Error::Unknown(format!("connection to {} closed", self.addr)))?
    }
}

/// The connection's task. Ends when the socket fails or every `Conn` handle
/// is gone; then every request still owed a reply learns whether it was
/// sent (may have run) or not.
async fn drive(stream: TcpStream, mut rx: mpsc::Receiver<Request>, broken: Arc<AtomicBool>) {
    let limits = Limits::default();
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    // Replies owed, oldest first; `unsent` of them (the newest) still have
    // bytes in `out` that never reached the socket.
    let mut pending: VecDeque<Reply> = VecDeque::new();
    let mut unsent_bytes: VecDeque<usize> = VecDeque::new();
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let why = loop {
        let room = out.len() < OUT_MAX && pending.len() < IN_FLIGHT_MAX;
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH_MAX), if room => {
                if n == 0 {
                    break "client dropped".to_string();
                }
                for req in batch.drain(..) {
                    out.extend_from_slice(&req.bytes);
                    unsent_bytes.push_back(req.bytes.len());
                    pending.push_back(req.reply);
                }
                // Write at once rather than waiting for the next turn.
                if let Err(e) = write_some(&stream, &mut out, &mut unsent_bytes) {
                    break format!("write: {e}");
                }
            }
            r = stream.readable() => {
                if let Err(e) = r {
                    break format!("read: {e}");
                }
                match read_some(&stream, &mut input) {
                    Ok(0) => break "closed by the server".to_string(),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => break format!("read: {e}"),
                }
                let mut bad = None;
                loop {
                    match decode_frame(&input, &limits) {
                        Ok(Some((frame, used))) => {
                            input.advance(used);
                            if let Some(w) = pending.pop_front() {
                                let _ = w.send(Ok(frame));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            bad = Some(format!("bad reply: {e}"));
                            break;
                        }
                    }
                }
                if let Some(why) = bad {
                    break why;
                }
            }
            w = stream.writable(), if !out.is_empty() => {
                if let Err(e) = w.and_then(|()| write_some(&stream, &mut out, &mut unsent_bytes)) {
                    break format!("write: {e}");
                }
            }
        }
    };
    broken.store(true, Relaxed);
    // The newest `unsent_bytes.len()` requests never reached the socket.
    let unsent = unsent_bytes.len().min(pending.len());
    let sent = pending.len() - unsent;
    for (i, waiter) in pending.drain(..).enumerate() {
        let e = if i < sent { Error::Unknown(why.clone()) } else { Error::NotSent(why.clone()) };
        let _ = waiter.send(Err(e));
    }
    rx.close();
    for req in batch.drain(..) {
        let _ = req.reply.send(Err(Error::NotSent(why.clone())));
    }
    while let Some(req) = rx.recv().await {
        let _ = req.reply.send(Err(Error::NotSent(why.clone())));
    }
}

/// Writes what the socket takes now; keeps `unsent` (bytes per request not
/// yet fully written) in step, so a failure can tell sent from unsent.
fn write_some(stream: &TcpStream, out: &mut BytesMut, unsent: &mut VecDeque<usize>) -> std::io::Result<()> {
    while !out.is_empty() {
        match stream.try_write(out) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                out.advance(n);
                while n > 0 {
                    let Some(front) = unsent.front_mut() else { break };
                    let take = n.min(*front);
                    *front -= take;
                    n -= take;
                    if *front == 0 {
                        unsent.pop_front();
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_some(stream: &TcpStream, input: &mut BytesMut) -> std::io::Result<usize> {
    input.reserve(READ_CHUNK);
    let mut total = 0;
    loop {
        match stream.try_read_buf(input) {
            Ok(0) if total == 0 => return Ok(0),
            Ok(0) => return Ok(total),
            Ok(n) => {
                total += n;
                if input.capacity() - input.len() < 4096 {
                    return Ok(total);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && total > 0 => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}
