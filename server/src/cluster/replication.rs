//! Replication as data: the messages owners exchange about a key's state,
//! the peer-link handshake, the hint queue kept for an unreachable owner,
//! and the quorum arithmetic. No sockets, no clock: the link and connection
//! tasks in `net/` move these bytes and decide when.
//!
//! The wire form of every message is in [`super::protocol`].

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use ringcache_protocol::{Args, Frame, encode};

use super::protocol::{Kind, Reply, Request};

use crate::store::{Entry, Incoming, KeyRef};

/// Encodes the request that gives a replica `entry` (a live key).
pub fn encode_put(buf: &mut BytesMut, entry: &Entry) {
    Request::Put { key: entry.key(), version: entry.version(), expiry_ms: entry.expiry_ms(), value: entry.value() }
        .encode(buf);
}

/// Encodes the request that tells a replica `key` was deleted at `version`.
pub fn encode_del(buf: &mut BytesMut, key: &[u8], version: u64) {
    Request::Del { key, version }.encode(buf);
}

/// Encodes the request that gives another owner what `k` holds here: its
/// value, or its tombstone; nothing if the key is unknown here.
pub fn encode_current(buf: &mut BytesMut, k: &KeyRef<'_>) {
    if let Some(e) = k.entry() {
        encode_put(buf, e);
    } else if let Some(v) = k.tombstone() {
        encode_del(buf, k.key(), v);
    }
}

/// A replicated state: key, version and what to do.
#[derive(Debug, PartialEq, Eq)]
pub struct Op<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The version the state carries.
    pub version: u64,
    /// What to apply: a value or a deletion.
    pub incoming: Incoming<'a>,
}

impl<'a> Op<'a> {
    /// The state an `RC.PUT` or `RC.DEL` carries; None for other requests.
    pub fn of(req: &Request<'a>) -> Option<Op<'a>> {
        match *req {
            Request::Put { key, version, expiry_ms, value } => {
                Some(Op { key, version, incoming: Incoming::Put { value, expiry_ms } })
            }
            Request::Del { key, version } => Some(Op { key, version, incoming: Incoming::Delete }),
            _ => None,
        }
    }
}

/// Decodes `RC.PUT` / `RC.DEL` (None for anything else or malformed).
pub fn parse_op<'a>(args: &Args<'a>) -> Option<Op<'a>> {
    Op::of(&Request::decode(*args).ok()?)
}

/// A key's state as an owner reports it to a reader (`RC.READ`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadState {
    /// The owner has never seen the key (or forgot its tombstone).
    Unknown,
    /// The owner holds a tombstone.
    Deleted {
        /// The deletion's version.
        version: u64,
    },
    /// The owner holds a live value.
    Live {
        /// The value's version.
        version: u64,
        /// Unix ms it expires at, if it does.
        expiry_ms: Option<u64>,
        /// The value.
        value: Bytes,
    },
}

impl ReadState {
    /// What `k` holds here.
    pub fn of(k: &KeyRef<'_>) -> ReadState {
        match (k.entry(), k.tombstone()) {
            (Some(e), _) => ReadState::Live {
                version: e.version(),
                expiry_ms: e.expiry_ms(),
                value: Bytes::copy_from_slice(e.value()),
            },
            (None, Some(version)) => ReadState::Deleted { version },
            (None, None) => ReadState::Unknown,
        }
    }

    /// Applies this state to `k` if it is newer (see `KeyRef::apply`).
    pub fn apply_to(&self, k: &mut KeyRef<'_>) -> bool {
        match self {
            ReadState::Unknown => false,
            ReadState::Deleted { version } => k.apply(*version, Incoming::Delete),
            ReadState::Live { version, expiry_ms, value } => {
                k.apply(*version, Incoming::Put { value, expiry_ms: *expiry_ms })
            }
        }
    }

    /// Decodes a raw `RC.READ` reply (None for an error or a bad shape).
    pub fn parse(raw: &[u8]) -> Option<ReadState> {
        match Reply::parse(Kind::Read, raw) {
            Reply::State(s) => Some(s),
            _ => None,
        }
    }

    /// The state's version (0 for unknown).
    pub fn version(&self) -> u64 {
        match self {
            ReadState::Unknown => 0,
            ReadState::Deleted { version } | ReadState::Live { version, .. } => *version,
        }
    }

    /// Appends the `RC.READ` reply for this state.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            ReadState::Unknown => buf.extend_from_slice(b"*-1\r\n"),
            ReadState::Deleted { version } => {
                encode::array_header(buf, 1);
                encode::integer(buf, *version as i64);
            }
            ReadState::Live { version, expiry_ms, value } => {
                encode::array_header(buf, 3);
                encode::integer(buf, *version as i64);
                encode::integer(buf, expiry_ms.unwrap_or(0) as i64);
                encode::bulk(buf, value);
            }
        }
    }

    /// Reads an `RC.READ` reply (None for another shape).
    pub fn decode(frame: &Frame) -> Option<ReadState> {
        // u64s travel as the same 64 bits in a RESP integer.
        let int = |f: &Frame| match f {
            Frame::Integer(n) => Some(*n as u64),
            _ => None,
        };
        match frame {
            Frame::Null => Some(ReadState::Unknown),
            Frame::Array(items) => match items.as_slice() {
                [v] => Some(ReadState::Deleted { version: int(v)? }),
                [v, e, Frame::Bulk(value)] => {
                    let e = int(e)?;
                    Some(ReadState::Live { version: int(v)?, expiry_ms: (e != 0).then_some(e), value: value.clone() })
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The request that brings a stale owner to this state.
    pub fn encode_repair(&self, key: &[u8], buf: &mut BytesMut) {
        match self {
            ReadState::Unknown => {}
            ReadState::Deleted { version } => encode_del(buf, key, *version),
            ReadState::Live { version, expiry_ms, value } => {
                Request::Put { key, version: *version, expiry_ms: *expiry_ms, value }.encode(buf)
            }
        }
    }
}

/// Write and read quorums in force for a slot with `owners` owners: the
/// configured values capped at the owners there are (DESIGN §6), at least 1.
pub fn quorum(configured: u32, owners: usize) -> usize {
    (configured as usize).clamp(1, owners.max(1))
}

// ---- peer authentication ------------------------------------------------------

/// Proves knowledge of the cluster secret on a peer connection: both sides
/// send a fresh nonce and answer the other's with a keyed BLAKE3 MAC, so a
/// recorded exchange cannot be replayed and neither side learns the key.
#[derive(Clone)]
pub struct LinkKey {
    key: [u8; 32],
}

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

/// Nonce length in bytes (hex on the wire).
pub const NONCE_LEN: usize = 16;

impl LinkKey {
    /// The key of cluster `cluster_name` with `secret` (derived with BLAKE3).
    pub fn new(cluster_name: &str, secret: Option<&str>) -> Self {
        LinkKey { key: super::membership::cluster_key("ringcache peer link v1", cluster_name, secret) }
    }

    fn mac(&self, role: &[u8], a: &[u8], b: &[u8]) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(role);
        h.update(&(a.len() as u64).to_le_bytes());
        h.update(a);
        h.update(b);
        hex(&h.finalize().as_bytes()[..16])
    }

    /// What the accepting side answers to the connecting side's nonce.
    pub fn server_proof(&self, client_nonce: &[u8], server_nonce: &[u8]) -> String {
        self.mac(b"server", client_nonce, server_nonce)
    }

    /// What the connecting side answers to the accepting side's nonce.
    pub fn client_proof(&self, server_nonce: &[u8], client_nonce: &[u8]) -> String {
        self.mac(b"client", server_nonce, client_nonce)
    }
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares two proofs without an early exit.
pub fn proof_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- hints ------------------------------------------------------------------

/// The unix ms at which the write an encoded `RC.PUT`/`RC.DEL` carries was
/// made (its version's clock part); None if `op` is not one.
pub fn op_written_ms(op: &[u8]) -> Option<u64> {
    let mut p = ringcache_protocol::RequestParser::new();
    if p.parse(op, &super::protocol::LIMITS, true) != Ok(true) {
        return None;
    }
    let req = Request::decode(p.args(op)).ok()?;
    Op::of(&req).map(|o| crate::store::version_parts(o.version).0)
}

/// Replicated writes an owner has not received, kept for when it is
/// reachable again. Bounded by count and bytes: past either bound the
/// oldest hint goes and `dropped` counts it (anti-entropy must repair it).
///
/// A hint whose write is older than the tombstone grace is never replayed
/// (`expired` counts it): the owner's tombstone of a later delete may be
/// gone by then, and the old value would come back (Cassandra's rule that
/// hints do not outlive gc_grace). Anti-entropy compares what is left.
#[derive(Debug)]
pub struct Hints {
    /// (slot, encoded op, unix ms the write was made; MAX: not a write).
    queue: VecDeque<(u16, Bytes, u64)>,
    bytes: usize,
    count_max: usize,
    bytes_max: usize,
    /// Hints stored so far.
    pub stored: u64,
    /// Hints dropped so far (bounds, or replayed to a member that no longer owns the slot).
    pub dropped: u64,
    /// Hints dropped because their write outlived the tombstone grace.
    pub expired: u64,
}

impl Hints {
    /// An empty queue holding at most `count_max` hints and `bytes_max` bytes.
    pub fn new(count_max: usize, bytes_max: usize) -> Self {
        Hints { queue: VecDeque::new(), bytes: 0, count_max, bytes_max, stored: 0, dropped: 0, expired: 0 }
    }

    /// Keeps the request `op` for `slot`: an encoded `RC.PUT`/`RC.DEL`,
    /// or a transfer message sent like one (`RC.DROPOK`, which never
    /// expires).
    pub fn push(&mut self, slot: u16, op: Bytes) {
        let written_ms = op_written_ms(&op).unwrap_or(u64::MAX);
        if op.len() > self.bytes_max || self.count_max == 0 {
            self.dropped += 1;
            return;
        }
        while self.queue.len() >= self.count_max || self.bytes + op.len() > self.bytes_max {
            let (_, old, _) = self.queue.pop_front().expect("bounds exceeded, so not empty");
            self.bytes -= old.len();
            self.dropped += 1;
        }
        self.bytes += op.len();
        self.stored += 1;
        self.queue.push_back((slot, op, written_ms));
    }

    /// Takes up to `n` hints, oldest first, leaving out (and counting) those
    /// whose write was made more than `grace_ms` before `now_ms`.
    pub fn take(&mut self, n: usize, now_ms: u64, grace_ms: u64) -> Vec<(u16, Bytes)> {
        let n = n.min(self.queue.len());
        let mut out = Vec::with_capacity(n);
        for (slot, op, written_ms) in self.queue.drain(..n) {
            self.bytes -= op.len();
            if now_ms.saturating_sub(written_ms) > grace_ms {
                self.expired += 1;
            } else {
                out.push((slot, op));
            }
        }
        out
    }

    /// Hints queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No hint queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes of the hints queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringcache_protocol::{Limits, RequestParser, decode_frame};

    fn parse(buf: &[u8]) -> Vec<Vec<u8>> {
        let mut p = RequestParser::new();
        assert_eq!(p.parse(buf, &Limits::default(), true), Ok(true));
        p.args(buf).iter().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn ops_round_trip() {
        let e = Entry::new(b"k", b"value", Some(1234), 99 << 22, 0);
        let mut buf = BytesMut::new();
        encode_put(&mut buf, &e);
        let args = parse(&buf);
        let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let op = parse_op(&Args::from_slices(&slices)).unwrap();
        assert_eq!(
            op,
            Op { key: b"k", version: 99 << 22, incoming: Incoming::Put { value: b"value", expiry_ms: Some(1234) } }
        );
        buf.clear();
        encode_del(&mut buf, b"k", 7);
        let args = parse(&buf);
        let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        assert_eq!(parse_op(&Args::from_slices(&slices)).unwrap().incoming, Incoming::Delete);
        // Malformed versions are refused, not misread.
        assert_eq!(parse_op(&Args::from_slices(&[b"RC.DEL", b"k", b"-1"])), None);
        assert_eq!(parse_op(&Args::from_slices(&[b"RC.PUT", b"k", b"1", b"x", b"v"])), None);
    }

    #[test]
    fn read_states_round_trip() {
        for s in [
            ReadState::Unknown,
            ReadState::Deleted { version: 5 },
            ReadState::Live { version: 6, expiry_ms: Some(9), value: Bytes::from_static(b"v") },
            ReadState::Live { version: 6, expiry_ms: None, value: Bytes::new() },
        ] {
            let mut buf = BytesMut::new();
            s.encode(&mut buf);
            let (f, n) = decode_frame(&buf, &Limits::default()).unwrap().unwrap();
            assert_eq!(n, buf.len());
            assert_eq!(ReadState::decode(&f), Some(s));
        }
    }

    #[test]
    fn quorums_are_capped_by_owners() {
        assert_eq!(quorum(2, 3), 2);
        assert_eq!(quorum(3, 2), 2);
        assert_eq!(quorum(2, 1), 1);
        assert_eq!(quorum(0, 3), 1);
    }

    #[test]
    fn proofs_need_the_key_and_the_nonces() {
        let a = LinkKey::new("c", Some("s"));
        let b = LinkKey::new("c", Some("other"));
        let p = a.server_proof(b"n1", b"n2");
        assert!(proof_eq(p.as_bytes(), a.server_proof(b"n1", b"n2").as_bytes()));
        assert!(!proof_eq(p.as_bytes(), b.server_proof(b"n1", b"n2").as_bytes()));
        assert!(!proof_eq(p.as_bytes(), a.server_proof(b"n1", b"n3").as_bytes()));
        assert!(!proof_eq(p.as_bytes(), a.client_proof(b"n1", b"n2").as_bytes()));
    }

    /// An encoded `RC.PUT` of `len` bytes in all, written at unix ms `ms`.
    fn put_op(len: usize, ms: u64) -> Bytes {
        let value = vec![b'x'; len];
        (0..len)
            .map(|n| {
                let mut b = BytesMut::new();
                Request::Put { key: b"k", version: ms << 22, expiry_ms: None, value: &value[..n] }.encode(&mut b);
                b
            })
            .find(|b| b.len() == len)
            .expect("some value length gives that size")
            .freeze()
    }

    #[test]
    fn hints_are_bounded_and_count_what_they_drop() {
        const NOW: u64 = 1_700_000_000_000;
        let mut h = Hints::new(3, 400);
        for i in 0..5u16 {
            h.push(i, put_op(80, NOW));
        }
        assert_eq!((h.len(), h.dropped, h.stored), (3, 2, 5));
        h.push(9, put_op(390, NOW));
        assert_eq!((h.len(), h.bytes()), (1, 390));
        h.push(9, put_op(401, NOW));
        assert_eq!(h.len(), 1);
        assert_eq!(h.take(10, NOW, 1000).len(), 1);
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
    }

    #[test]
    fn hints_older_than_the_grace_are_not_replayed() {
        const NOW: u64 = 1_700_000_000_000;
        let mut h = Hints::new(10, 10_000);
        h.push(1, put_op(80, NOW - 5000));
        let mut del = BytesMut::new();
        encode_del(&mut del, b"k", (NOW - 5000) << 22);
        h.push(2, del.freeze());
        h.push(3, put_op(80, NOW - 500));
        h.push(4, Request::DropOk { slot: 4 }.to_bytes());
        let kept = h.take(10, NOW, 1000);
        assert_eq!(kept.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!((h.expired, h.dropped, h.bytes()), (2, 0, 0));
        assert_eq!(op_written_ms(&kept[0].1), Some(NOW - 500));
        assert_eq!(op_written_ms(b"*1\r\n$4\r\nPING\r\n"), None);
    }
}
