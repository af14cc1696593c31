//! One multiplexed connection to one node, driven by a single task.
//!
//! Callers encode their request straight into the connection's shared
//! output buffer (under a short lock) and park on a oneshot; nothing is
//! allocated per request but the oneshot. The driver task takes the whole
//! buffer in one go and writes it (automatic pipelining), reads replies
//! whenever the stream is readable and hands each to the oldest waiting
//! request. Reads and writes are polled non-blockingly in one `poll`, so a
//! large write never stops replies from being read (no deadlock with a
//! server that is writing to us).
//!
//! Wake-ups are what costs under load, so they are kept to about one per
//! batch: a caller wakes the driver only if no wake-up is pending already,
//! and after handing out a group of replies (at most `REPLY_BATCH`) the
//! driver puts itself at the back of the run queue once (a self-wake), so
//! the callers it just woke run first and queue their next requests, which
//! it then writes together, before it hands out the next group. Small
//! groups keep the server busy with the first requests of a round while
//! this process still handles the rest of the replies.
//!
//! Bounds: a semaphore caps what is in flight (one permit per request plus
//! one per KiB); callers wait for permits beyond that, which the driver
//! returns as replies arrive. The driver takes no more requests while
//! `OUT_MAX` bytes are unwritten.
//!
//! The driver is generic over the stream ([`Stream`]: any
//! `AsyncRead + AsyncWrite`), so a TLS stream plugs in through a
//! [`Connector`]; TCP is the default.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use ringcache_protocol::{Frame, Limits, decode_frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};

use crate::error::{Error, Result};

/// Permits of one connection: bounds requests and bytes in flight.
const PERMITS: usize = 1 << 16;
const BYTES_PER_PERMIT: usize = 1024;
const OUT_MAX: usize = 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// Replies handed out per turn of the driver. Their callers run, and their
/// next requests are written, before the next group is handed out: the
/// server works on those while this process handles the rest (measured:
/// 16 beat 8, 24, 32, 64 and "all at once" by 10-30% with 100 tasks).
const REPLY_BATCH: usize = 16;

/// A byte stream a connection can run over: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A stream being opened by a [`Connector`].
pub type Connecting<'a> = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Stream>>> + Send + 'a>>;

/// Opens the stream to a node. The default (no connector) is plain TCP
/// with `TCP_NODELAY`; [`crate::TlsConnector`] is TLS; implement this to
/// connect through anything else.
///
/// ```
/// use std::net::SocketAddr;
/// use ringcache_client::{Connecting, Connector, Stream};
///
/// /// TCP with a larger receive buffer (a TLS connector would wrap the
/// /// stream in its TLS session here).
/// struct Tuned;
///
/// impl Connector for Tuned {
///     fn connect(&self, addr: SocketAddr) -> Connecting<'_> {
///         Box::pin(async move {
///             let socket = tokio::net::TcpSocket::new_v4()?;
///             socket.set_recv_buffer_size(1 << 20)?;
///             let stream = socket.connect(addr).await?;
///             stream.set_nodelay(true)?;
///             Ok(Box::new(stream) as Box<dyn Stream>)
///         })
///     }
/// }
///
/// let opts = ringcache_client::Options {
///     connector: Some(std::sync::Arc::new(Tuned)),
///     ..Default::default()
/// };
/// # let _ = opts;
/// ```
pub trait Connector: Send + Sync + 'static {
    /// Opens a stream to `addr` (a node's client port).
    fn connect(&self, addr: SocketAddr) -> Connecting<'_>;
}

/// The RESP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2: what every Redis-compatible server speaks.
    Resp2,
    /// RESP3 through `HELLO 3` (with `AUTH` inside when a password is
    /// set); falls back to RESP2 when the server refuses HELLO.
    #[default]
    Resp3,
}

type Reply = oneshot::Sender<Result<Frame>>;

struct Queued {
    reply: Reply,
    len: usize,
    permits: u32,
}

/// What callers and the driver share.
struct State {
    /// Encoded requests the driver has not taken yet.
    out: BytesMut,
    /// Their waiters, in order.
    queued: Vec<Queued>,
    /// The driver's waker.
    waker: Option<Waker>,
    /// The driver will look at `out` soon: no need to wake it.
    wake_pending: bool,
    /// Set once the driver ended (why), or the last handle went away.
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    permits: Semaphore,
    broken: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A live connection.
pub struct Conn {
    shared: Arc<Shared>,
    pub addr: SocketAddr,
    /// The connection speaks RESP3 (HELLO 3 was accepted).
    pub resp3: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

impl Conn {
    /// Ends the connection once every reply owed has arrived; new requests
    /// are refused (`NotSent`).
    pub fn close(&self) {
        let waker = {
            let mut s = self.shared.lock();
            s.closed.get_or_insert_with(|| "client dropped".into());
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Settings of a connection's handshake.
pub struct Handshake<'a> {
    pub timeout: Duration,
    pub password: Option<&'a str>,
    pub protocol: Protocol,
    pub readonly: bool,
}

impl Conn {
    /// Connects over `connector` (plain TCP when `None`) and shakes hands.
    pub async fn connect(addr: SocketAddr, connector: Option<&dyn Connector>, hs: &Handshake<'_>) -> Result<Conn> {
        let timed_out = || Error::NotSent(format!("connect to {addr} timed out"));
        let failed = |e: std::io::Error| Error::NotSent(format!("connect to {addr}: {e}"));
        let mut conn = match connector {
            None => {
                let stream = tokio::time::timeout(hs.timeout, TcpStream::connect(addr))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(failed)?;
                let _ = stream.set_nodelay(true);
                Conn::over(stream, addr)
            }
            Some(c) => {
                let stream = tokio::time::timeout(hs.timeout, c.connect(addr))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(failed)?;
                Conn::over(stream, addr)
            }
        };
        tokio::time::timeout(hs.timeout, conn.handshake(hs))
            .await
            .map_err(|_| Error::NotSent(format!("handshake with {addr} timed out")))??;
        Ok(conn)
    }

    /// A connection over an already open stream (no handshake yet).
    pub fn over<S: Stream>(stream: S, addr: SocketAddr) -> Conn {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                out: BytesMut::with_capacity(16 * 1024),
                queued: Vec::new(),
                waker: None,
                wake_pending: false,
                closed: None,
            }),
            permits: Semaphore::new(PERMITS),
            broken: AtomicBool::new(false),
        });
        tokio::spawn(drive(Driver::new(stream, shared.clone())));
        Conn { shared, addr, resp3: false }
    }

    /// HELLO 3 (with AUTH), falling back to RESP2 (and AUTH) when the
    /// server does not know HELLO or RESP3; then READONLY if asked.
    async fn handshake(&mut self, hs: &Handshake<'_>) -> Result<()> {
        let refused = |what: &str, e: &[u8]| Error::NotSent(format!("{what}: {}", String::from_utf8_lossy(e)));
        let mut authed = hs.password.is_none();
        if hs.protocol == Protocol::Resp3 {
            let mut args: Vec<&[u8]> = vec![b"HELLO", b"3"];
            if let Some(p) = hs.password {
                args.extend([b"AUTH".as_slice(), b"default", p.as_bytes()]);
            }
            match self.request(&args).await? {
                Frame::Error(e) | Frame::BlobError(e) => {
                    // An old server: unknown command, or no RESP3. A wrong
                    // password is final.
                    let old = e.starts_with(b"NOPROTO") || e.starts_with(b"ERR unknown command");
                    if !old {
                        return Err(refused("HELLO", &e));
                    }
                }
                _ => {
                    self.resp3 = true;
                    authed = true;
                }
            }
        }
        if !authed
            && let Some(p) = hs.password
            && let Frame::Error(e) = self.request(&[b"AUTH".as_slice(), p.as_bytes()]).await?
        {
            return Err(refused("AUTH", &e));
        }
        if hs.readonly
            && let Frame::Error(e) = self.request(&["READONLY"]).await?
        {
            return Err(refused("READONLY", &e));
        }
        Ok(())
    }

    pub fn is_broken(&self) -> bool {
        self.shared.broken.load(Relaxed)
    }

    fn weight(args_len: usize) -> u32 {
        (1 + args_len / BYTES_PER_PERMIT).min(PERMITS) as u32
    }

    /// Waits for `n` permits (returned by the driver with the replies).
    async fn acquire(&self, n: u32) -> Result<()> {
        match self.shared.permits.try_acquire_many(n) {
            Ok(p) => p.forget(),
            Err(_) => self
                .shared
                .permits
                .acquire_many(n)
                .await
                .map_err(|_| Error::NotSent(format!("connection to {} closed", self.addr)))?
                .forget(),
        }
        Ok(())
    }

    /// Queues commands (encoded in place) and wakes the driver if needed;
    /// the receivers yield the replies in order.
    fn enqueue<'a, A: AsRef<[u8]> + 'a>(
        &self,
        cmds: impl IntoIterator<Item = (&'a [A], u32)>,
        mut each: impl FnMut(oneshot::Receiver<Result<Frame>>),
    ) -> Result<()> {
        let waker = {
            let mut s = self.shared.lock();
            if let Some(why) = &s.closed {
                let e = Error::NotSent(format!("connection to {} is broken: {why}", self.addr));
                drop(s);
                return Err(e);
            }
            for (args, permits) in cmds {
                let before = s.out.len();
                ringcache_protocol::encode::command(&mut s.out, args);
                let len = s.out.len() - before;
                let (reply, rx) = oneshot::channel();
                s.queued.push(Queued { reply, len, permits });
                each(rx);
            }
            if s.wake_pending {
                None
            } else {
                s.wake_pending = true;
                s.waker.clone()
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn broken_error(&self) -> Error {
        Error::Unknown(format!("connection to {} closed", self.addr))
    }

    /// Queues one command if the connection has permits free right now
    /// (the common case): no await, no reference to the connection kept.
    /// `None`: wait for permits through [`Conn::request`].
    pub fn try_send<A: AsRef<[u8]>>(&self, args: &[A]) -> Option<Result<Pending>> {
        if self.is_broken() {
            return Some(Err(Error::NotSent(format!("connection to {} is broken", self.addr))));
        }
        let permits = Self::weight(args.iter().map(|a| a.as_ref().len()).sum());
        self.shared.permits.try_acquire_many(permits).ok()?.forget();
        let mut rx = None;
        Some(self.enqueue([(args, permits)], |r| rx = Some(r)).and_then(|()| match rx {
            Some(rx) => Ok(Pending { rx, addr: self.addr }),
            None => Err(self.broken_error()),
        }))
    }

    /// Sends one command, returns its reply frame (error replies included).
    pub async fn request<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Frame> {
        if self.is_broken() {
            return Err(Error::NotSent(format!("connection to {} is broken", self.addr)));
        }
        let permits = Self::weight(args.iter().map(|a| a.as_ref().len()).sum());
        self.acquire(permits).await?;
        let mut rx = None;
        self.enqueue([(args, permits)], |r| rx = Some(r))?;
        let Some(rx) = rx else { return Err(self.broken_error()) };
        rx.await.map_err(|_| self.broken_error())?
    }

    /// Sends several commands back to back (one write when the connection
    /// is idle) and returns the receivers of their replies, in order.
    pub async fn send_many<A: AsRef<[u8]>>(&self, cmds: &[&[A]]) -> Result<Vec<Pending>> {
        if self.is_broken() {
            return Err(Error::NotSent(format!("connection to {} is broken", self.addr)));
        }
        let weights: Vec<u32> =
            cmds.iter().map(|args| Self::weight(args.iter().map(|a| a.as_ref().len()).sum())).collect();
        let total = weights.iter().map(|&w| w as usize).sum::<usize>().min(PERMITS) as u32;
        self.acquire(total).await?;
        // The first command carries the whole acquisition, the rest none,
        // so the driver returns exactly what was taken.
        let mut first = true;
        let mut out = Vec::with_capacity(cmds.len());
        self.enqueue(
            cmds.iter().map(|args| {
                let w = if first { total } else { 0 };
                first = false;
                (*args, w)
            }),
            |rx| out.push(Pending { rx, addr: self.addr }),
        )?;
        Ok(out)
    }
}

/// A reply still to come (from [`Conn::send_many`]).
pub struct Pending {
    rx: oneshot::Receiver<Result<Frame>>,
    addr: SocketAddr,
}

impl Pending {
    pub async fn reply(self) -> Result<Frame> {
        self.rx.await.map_err(|_| Error::Unknown(format!("connection to {} closed", self.addr)))?
    }
}

/// The state the driver task owns alone.
struct Driver<S> {
    stream: S,
    shared: Arc<Shared>,
    /// Bytes being written (swapped with the shared buffer when empty).
    wbuf: BytesMut,
    /// Requests whose bytes have not all reached the stream, by length
    /// (the newest of `pending`), so a failure can tell sent from unsent.
    unsent: VecDeque<usize>,
    /// Replies owed, oldest first, with the permits each returns.
    pending: VecDeque<(Reply, u32)>,
    input: Vec<u8>,
    start: usize,
    end: usize,
    limits: Limits,
    /// The last poll put the driver at the back of the run queue.
    yielded: bool,
    /// Bytes written since the last flush.
    unflushed: bool,
}

impl<S: Stream> Driver<S> {
    fn new(stream: S, shared: Arc<Shared>) -> Self {
        Driver {
            stream,
            shared,
            wbuf: BytesMut::with_capacity(16 * 1024),
            unsent: VecDeque::new(),
            pending: VecDeque::new(),
            input: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            limits: Limits::default(),
            yielded: false,
            unflushed: false,
        }
    }

    /// Reads until the stream has nothing more; hands out every whole reply.
    /// Returns how many were handed out, or why the connection ended.
    fn poll_read(&mut self, cx: &mut Context<'_>, budget: usize) -> std::result::Result<(usize, bool), String> {
        let mut handed = 0;
        let mut permits = 0usize;
        let result = loop {
            // Hand out the whole replies buffered, up to the budget.
            let mut full = false;
            loop {
                if handed >= budget {
                    full = true;
                    break;
                }
                match decode_frame(&self.input[self.start..self.end], &self.limits) {
                    Ok(Some((frame, used))) => {
                        self.start += used;
                        // Out-of-band pushes answer no request; attributes
                        // (RESP3) only annotate the reply they precede.
                        let frame = match frame {
                            Frame::Push(_) => continue,
                            Frame::Attribute { frame, .. } => *frame,
                            f => f,
                        };
                        if let Some((w, p)) = self.pending.pop_front() {
                            let _ = w.send(Ok(frame));
                            permits += p as usize;
                            handed += 1;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(format!("bad reply: {e}")),
                }
            }
            if full {
                break Ok((handed, true));
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                // Buffers that grew for one large reply are released.
                if self.input.len() > 4 * READ_CHUNK {
                    self.input = vec![0; READ_CHUNK];
                }
            }
            if self.end == self.input.len() {
                if self.start > 0 {
                    self.input.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                }
                if self.end + READ_CHUNK / 4 > self.input.len() {
                    self.input.resize(self.input.len() * 2, 0);
                }
            }
            let mut rb = ReadBuf::new(&mut self.input[self.end..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
                Poll::Pending => break Ok((handed, false)),
                Poll::Ready(Err(e)) => break Err(format!("read: {e}")),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        break Err("closed by the server".to_string());
                    }
                    self.end += n;
                }
            }
        };
        if permits > 0 {
            self.shared.permits.add_permits(permits);
        }
        result
    }

    /// Takes the requests callers queued (if there is room). Returns false
    /// when the connection should end because every handle is gone.
    fn take(&mut self, cx: &mut Context<'_>) -> bool {
        let mut s = self.shared.lock();
        if s.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        if s.closed.is_some() && s.out.is_empty() && self.pending.is_empty() {
            return false;
        }
        if self.wbuf.len() < OUT_MAX && !s.out.is_empty() {
            if self.wbuf.is_empty() {
                std::mem::swap(&mut self.wbuf, &mut s.out);
            } else {
                self.wbuf.extend_from_slice(&s.out);
                s.out.clear();
            }
            for q in s.queued.drain(..) {
                self.unsent.push_back(q.len);
                self.pending.push_back((q.reply, q.permits));
            }
        }
        s.wake_pending = false;
        true
    }

    /// Writes what the stream takes now.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> std::result::Result<(), String> {
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(format!("write: {e}")),
                Poll::Ready(Ok(0)) => return Err("write: zero bytes written".into()),
                Poll::Ready(Ok(mut n)) => {
                    self.wbuf.advance(n);
                    self.unflushed = true;
                    while n > 0 {
                        let Some(front) = self.unsent.front_mut() else { break };
                        let take = n.min(*front);
                        *front -= take;
                        n -= take;
                        if *front == 0 {
                            self.unsent.pop_front();
                        }
                    }
                }
            }
        }
        // A drained buffer is kept as the next spare (when not too big).
        if self.wbuf.capacity() > 4 * OUT_MAX {
            self.wbuf = BytesMut::with_capacity(16 * 1024);
        } else {
            self.wbuf.clear();
        }
        if self.unflushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Err(e)) => return Err(format!("flush: {e}")),
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        let may_yield = !std::mem::take(&mut self.yielded);
        let (handed, more) = match self.poll_read(cx, REPLY_BATCH) {
            Ok(r) => r,
            Err(why) => return Poll::Ready(why),
        };
        if more {
            // Replies are still buffered: come back for them.
            cx.waker().wake_by_ref();
        }
        if may_yield {
            // Callers just woken (by replies handed out now), or the one
            // whose wake-up ran us straight away, are followed by others:
            // going to the back of the run queue once lets them all queue
            // their requests, which then go out in one write. Meanwhile
            // callers need not wake us.
            let mut s = self.shared.lock();
            if handed > 0 || !s.out.is_empty() {
                s.wake_pending = true;
                drop(s);
                self.yielded = true;
                cx.waker().wake_by_ref();
                if let Err(why) = self.poll_write(cx) {
                    return Poll::Ready(why);
                }
                return Poll::Pending;
            }
        }
        if !self.take(cx) {
            return Poll::Ready("client dropped".into());
        }
        if let Err(why) = self.poll_write(cx) {
            return Poll::Ready(why);
        }
        Poll::Pending
    }
}

/// The connection's task. Ends when the stream fails or every `Conn` handle
/// is gone; then every request still owed a reply learns whether it was
/// sent (may have run) or not.
async fn drive<S: Stream>(mut d: Driver<S>) {
    let why = std::future::poll_fn(|cx| d.poll_step(cx)).await;
    d.shared.broken.store(true, Relaxed);
    let queued = {
        let mut s = d.shared.lock();
        s.closed.get_or_insert_with(|| why.clone());
        std::mem::take(&mut s.queued)
    };
    d.shared.permits.close();
    // The newest `unsent.len()` requests never reached the stream.
    let unsent = d.unsent.len().min(d.pending.len());
    let sent = d.pending.len() - unsent;
    for (i, (waiter, _)) in d.pending.drain(..).enumerate() {
        let e = if i < sent { Error::Unknown(why.clone()) } else { Error::NotSent(why.clone()) };
        let _ = waiter.send(Err(e));
    }
    for q in queued {
        let _ = q.reply.send(Err(Error::NotSent(why.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    /// Any `AsyncRead + AsyncWrite` carries a connection: here an in-memory
    /// pipe to a fake server that answers each command with its second
    /// argument, so replies show which request they answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_over_an_in_memory_stream_get_their_own_replies() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let limits = Limits::default();
            let mut input = Vec::new();
            let mut buf = vec![0u8; 8192];
            loop {
                let n = theirs.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                input.extend_from_slice(&buf[..n]);
                let mut out = BytesMut::new();
                while let Some((Frame::Array(args), used)) = decode_frame(&input, &limits).unwrap() {
                    input.drain(..used);
                    ringcache_protocol::encode::bulk(&mut out, args[1].as_bytes().unwrap());
                }
                theirs.write_all(&out).await.unwrap();
            }
        });
        let conn = Arc::new(Conn::over(ours, addr()));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..50 {
            let conn = conn.clone();
            tasks.spawn(async move {
                for i in 0..200 {
                    let v = format!("{t}-{i}-{}", "z".repeat(i % 40));
                    assert_eq!(conn.request(&["ECHO", &v]).await.unwrap(), Frame::Bulk(v.into()));
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let batch = conn.send_many(&[&["ECHO", "a"][..], &["ECHO", "b"][..]]).await.unwrap();
        let mut got = Vec::new();
        for p in batch {
            got.push(p.reply().await.unwrap());
        }
        assert_eq!(got, vec![Frame::Bulk("a".into()), Frame::Bulk("b".into())]);
    }

    /// A request written before the stream broke may have run (`Unknown`);
    /// one queued on a broken connection was never sent (`NotSent`).
    #[tokio::test]
    async fn a_broken_stream_tells_sent_from_unsent() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let conn = Conn::over(ours, addr());
        let sent = conn.send_many(&[&["GET", "k"][..]]).await.unwrap();
        let mut buf = [0u8; 64];
        let n = theirs.read(&mut buf).await.unwrap();
        assert!(n > 0, "the request reached the server");
        drop(theirs);
        for p in sent {
            assert!(matches!(p.reply().await, Err(Error::Unknown(_))));
        }
        assert!(matches!(conn.request(&["GET", "k"]).await, Err(Error::NotSent(_))));
        assert!(conn.is_broken());
    }
}
