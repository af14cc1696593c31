//! One multiplexed connection to one node. Requests from any number of
//! tasks go into a bounded channel; a writer task takes every request
//! waiting at that moment (up to `BATCH_MAX`) and writes them with one
//! syscall (automatic pipelining); a reader task decodes replies and hands
//! each to the oldest waiting request. The channel bound and the in-flight
//! semaphore bound memory: callers wait, nothing grows without limit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use ringcache_protocol::{Frame, Limits, decode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::error::{Error, Result};

const BATCH_MAX: usize = 256;
const QUEUE_MAX: usize = 4096;
const IN_FLIGHT_MAX: usize = 16384;

type Reply = oneshot::Sender<Result<Frame>>;

struct Request {
    bytes: BytesMut,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// A live connection; cheap to clone.
#[derive(Clone)]
pub struct Conn {
    tx: mpsc::Sender<Request>,
    in_flight: Arc<Semaphore>,
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
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::channel(QUEUE_MAX);
        let pending: Arc<Mutex<VecDeque<Reply>>> = Arc::new(Mutex::new(VecDeque::new()));
        let broken = Arc::new(AtomicBool::new(false));
        tokio::spawn(writer(wr, rx, pending.clone(), broken.clone()));
        tokio::spawn(reader(rd, pending, broken.clone()));
        let conn = Conn { tx, in_flight: Arc::new(Semaphore::new(IN_FLIGHT_MAX)), broken, addr };
        if let Some(p) = password {
            if let Frame::Error(e) = conn.request(&[b"AUTH".as_slice(), p.as_bytes()]).await? {
                return Err(Error::NotSent(format!("AUTH: {}", String::from_utf8_lossy(&e))));
            }
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
        let permit =
            self.in_flight.clone().acquire_owned().await.map_err(|_| Error::NotSent("client closed".into()))?;
        let mut bytes = BytesMut::new();
        ringcache_protocol::encode::command(&mut bytes, args);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { bytes, reply, _permit: permit })
            .await
            .map_err(|_| Error::NotSent(format!("connection to {} closed", self.addr)))?;
        rx.await.map_err(|_| Error::Unknown(format!("connection to {} closed", self.addr)))?
    }
}

async fn writer(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Request>,
    pending: Arc<Mutex<VecDeque<Reply>>>,
    broken: Arc<AtomicBool>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut batch, BATCH_MAX).await > 0 {
        buf.clear();
        {
            // Queue the reply slots before writing, in the order written,
            // so the reader never sees a reply without its waiter.
            let mut p = pending.lock().await;
            for req in batch.drain(..) {
                buf.extend_from_slice(&req.bytes);
                p.push_back(req.reply);
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            broken.store(true, Relaxed);
            fail_all(&pending, &format!("write: {e}")).await;
            break;
        }
    }
    // Requests still queued were never written.
    rx.close();
    while let Some(req) = rx.recv().await {
        let _ = req.reply.send(Err(Error::NotSent("connection closed".into())));
    }
}

async fn reader(mut rd: tokio::net::tcp::OwnedReadHalf, pending: Arc<Mutex<VecDeque<Reply>>>, broken: Arc<AtomicBool>) {
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let why = loop {
        loop {
            match decode_frame(&buf, &limits) {
                Ok(Some((frame, used))) => {
                    let _ = buf.split_to(used);
                    if let Some(waiter) = pending.lock().await.pop_front() {
                        let _ = waiter.send(Ok(frame));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    broken.store(true, Relaxed);
                    fail_all(&pending, &format!("bad reply: {e}")).await;
                    return;
                }
            }
        }
        buf.reserve(16 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "closed by the server".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read: {e}"),
        }
    };
    broken.store(true, Relaxed);
    fail_all(&pending, &why).await;
}

/// Written but unanswered: they may have run.
async fn fail_all(pending: &Mutex<VecDeque<Reply>>, why: &str) {
    for waiter in pending.lock().await.drain(..) {
        let _ = waiter.send(Err(Error::Unknown(why.to_string())));
    }
}
