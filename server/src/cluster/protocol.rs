//! The peer protocol: every request one member sends another on the cluster
//! port's TCP side, and every reply, as types with one encoder, one decoder
//! and one set of limits ([`LIMITS`] for requests, [`REPLY_LIMITS`] for
//! replies, [`HANDSHAKE_LIMITS`] before a peer has proved it knows the
//! cluster key).
//!
//! On the wire each request is a RESP array of bulk strings, the command
//! name first; numbers are decimal (a table digest in `RC.FWD` is 16 hex
//! digits); replies are RESP frames whose shape depends on the request
//! ([`Kind`]). A peer's error reply is a [`PeerError`], which says whether
//! the request ran.
//!
//! | request | reply |
//! |---|---|
//! | `RC.HELLO name nonce` | `*2 $nonce $proof` (then `RC.AUTH proof` → `+OK`) |
//! | `RC.PUT key version expiry_ms value` (expiry 0 = none) | `+OK` (applied if newer) |
//! | `RC.DEL key version` | `+OK` (applied if newer) |
//! | `RC.EVICT key version` | `+OK` (the live copy dropped if not newer; no tombstone) |
//! | `RC.FLUSH version` | `+OK` (every older state removed, and refused from now on) |
//! | `RC.READ key [table]` | `*3 :version :expiry $value`, `*1 :version` (tombstone), `*-1` (unknown); with `table` (16 hex) `-TRYAGAIN` unless the receiver's members digest is the same |
//! | `RC.FWD 2\|3 p\|s sent_ms+ttl_ms table command args...` | the command's own reply |
//! | `RC.SLOTDONE slot`, `RC.DROPOK slot` | `+OK` |
//! | `RC.SENDING me table slot...` | `*n :1\|0` (still sending each slot?) |
//! | `RC.DIGESTS shard`, `RC.SUMS asker` | `*n+1 :digest... :members_digest` |
//! | `RC.KEYVERS slot` | `*2n $key :version ...` |
//! | `RC.PING` | `+PONG` |
//!
//! Integers that are u64 on our side (versions, digests) travel as RESP
//! integers holding the same 64 bits (`as i64`), so every u64 round-trips.

use bytes::{Bytes, BytesMut};
use ringcache_protocol::{Args, Frame, Limits, SLOT_COUNT, encode};

use super::replication::ReadState;
use crate::store::SHARD_COUNT;

/// What an authenticated peer may send or answer: one value as large as a
/// client's, requests of up to 1 Mi arguments.
pub const LIMITS: Limits =
    Limits { bulk_len_max: 512 << 20, multibulk_len_max: 1 << 20, inline_len_max: 64 << 10, nesting_max: 128 };

/// What a reply from an authenticated peer may hold: a forwarded
/// command's reply can be a whole share of a cluster-wide `KEYS`.
pub const REPLY_LIMITS: Limits =
    Limits { bulk_len_max: 1 << 30, multibulk_len_max: 1 << 24, inline_len_max: 64 << 10, nesting_max: 128 };

/// Before the handshake: a few small arguments.
pub const HANDSHAKE_LIMITS: Limits =
    Limits { bulk_len_max: 4096, multibulk_len_max: 16, inline_len_max: 4096, nesting_max: 4 };

/// Bytes a handshake message may take, at most.
pub const HANDSHAKE_BYTES_MAX: usize = 8192;

/// Slots one `RC.SENDING` may ask about.
pub const SENDING_SLOTS_MAX: usize = 4096;

/// Keepers one `RC.SLOTDONE` may name.
pub const KEEPERS_MAX: usize = 16;

/// Longest handshake nonce (hex) accepted.
pub const NONCE_HEX_MAX: usize = 64;

/// How `RC.FWD` runs the command at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardHead {
    /// Answer in RESP3 (else RESP2).
    pub resp3: bool,
    /// `s`: run this node's share of a cluster-wide command; `p`: run it
    /// as the key's primary.
    pub share: bool,
    /// When the receiver must not run it any more (the sender has
    /// answered the client by then).
    pub deadline: Deadline,
    /// The sender's members digest: the receiver runs it only on the same.
    pub table: u64,
}

/// A forwarded request's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Sent at `sent_ms` on the sender's monotonic clock, to run within
    /// `ttl_ms` of that: wall clocks never compared (wire `sent+ttl`).
    Relative {
        /// The sender's monotonic ms when it first sent the request.
        sent_ms: u64,
        /// How long after that it may still run.
        ttl_ms: u64,
    },
    /// Unix ms on the receiver's wall clock (the form of nodes before the
    /// relative one; accepted, never sent).
    Absolute(u64),
}

/// How late forwarded requests on one peer connection arrive. The delay
/// of a request is its arrival on this node's monotonic clock less its
/// sending on the sender's; the two clocks differ by an unknown constant,
/// so the least delay seen lately (the last two windows of
/// [`LATENESS_WINDOW_MS`], so that slow drift is followed) stands for "on
/// time". A request delayed more than its time to live beyond that — held
/// in TCP retransmission through a partition, say — is expired, however
/// far apart the hosts' wall clocks are.
#[derive(Debug, Clone, Default)]
pub struct Lateness {
    current: Option<i64>,
    previous: Option<i64>,
    window_start_ms: u64,
}

/// See [`Lateness`].
pub const LATENESS_WINDOW_MS: u64 = 30_000;

impl Lateness {
    /// Whether a request with `deadline`, arriving at `mono_ms` on this
    /// node's monotonic clock and `unix_ms` on its wall clock, must not run.
    pub fn expired(&mut self, deadline: Deadline, mono_ms: u64, unix_ms: u64) -> bool {
        let (sent_ms, ttl_ms) = match deadline {
            Deadline::Absolute(at) => return unix_ms > at,
            Deadline::Relative { sent_ms, ttl_ms } => (sent_ms, ttl_ms),
        };
        let delay = mono_ms as i64 - sent_ms as i64;
        if mono_ms >= self.window_start_ms.saturating_add(LATENESS_WINDOW_MS) {
            // Rotated on arrivals only: after a silence, the window before
            // it still says what "on time" was.
            self.previous = self.current.take();
            self.window_start_ms = mono_ms;
        }
        let current = self.current.map_or(delay, |c| c.min(delay));
        self.current = Some(current);
        let on_time = self.previous.map_or(current, |p| p.min(current));
        delay - on_time > ttl_ms as i64
    }
}

/// One request of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Opens the handshake: the connecting member's name and a fresh nonce.
    Hello {
        /// The connecting member's node name.
        name: &'a [u8],
        /// Its nonce (hex), at most [`NONCE_HEX_MAX`] bytes.
        nonce: &'a [u8],
    },
    /// Ends the handshake: the connecting side's proof of the cluster key.
    Auth {
        /// MAC over both nonces (`LinkKey::client_proof`).
        proof: &'a [u8],
    },
    /// A key's live state, applied if newer than the receiver's.
    Put {
        /// The key.
        key: &'a [u8],
        /// Its version (hybrid logical clock and node id).
        version: u64,
        /// Unix ms it expires at, if it does.
        expiry_ms: Option<u64>,
        /// The value.
        value: &'a [u8],
    },
    /// A key's deletion, applied (as a tombstone) if newer.
    Del {
        /// The key.
        key: &'a [u8],
        /// The deletion's version.
        version: u64,
    },
    /// What the receiver holds of a key.
    Read {
        /// The key.
        key: &'a [u8],
        /// Set by a node fetching a key before a write (the slot is
        /// importing or unsettled): answered only on the same table (else
        /// [`PeerError::TableDiffers`], asked again), so the receiver no
        /// longer coordinates the slot's writes by the old one.
        table: Option<u64>,
    },
    /// A client command routed to the receiver to run.
    Forward {
        /// How and under which table it runs.
        head: ForwardHead,
        /// The command, its name first.
        command: Args<'a>,
    },
    /// The sender finished copying `slot` to the receiver.
    SlotDone {
        /// The slot.
        slot: u16,
        /// The members that hold the slot's writes as far as the sender
        /// knows (`cluster::keepers`; empty: it does not track them); at
        /// most `KEEPERS_MAX`.
        keepers: Vec<&'a [u8]>,
    },
    /// The copies of `slot` were confirmed; a former owner may drop it.
    DropOk {
        /// The slot.
        slot: u16,
    },
    /// Which of `slots` the receiver still has to copy to `to`.
    Sending {
        /// The asking member (the copies' target).
        to: &'a [u8],
        /// The asker's members digest.
        table: u64,
        /// The slots it still awaits from the receiver.
        slots: Vec<u16>,
    },
    /// The digests of the slots of one store shard.
    Digests {
        /// The store shard (below `SHARD_COUNT`).
        shard: u16,
        /// From a primary: the asker's members digest, and a bit per slot
        /// of the shard (in `shard_slots` order) that settled at the
        /// asker, its keepers now its owners (`cluster::keepers`); the
        /// receiver, on the same table, takes the same keepers.
        settled: Option<(u64, u64)>,
    },
    /// Per shard, the XOR of the digests of the slots `asker` is primary
    /// for and the receiver co-owns.
    Sums {
        /// The asking member's name.
        asker: &'a [u8],
        /// The asker's members digest, and a bit per store shard (256)
        /// where every slot it is primary for and the receiver co-owns has
        /// settled there, its keepers now its owners: the receiver, on the
        /// same table, takes the same keepers (a co-owner that missed a
        /// settled bit of `Digests` — its table was behind — would
        /// otherwise keep older keepers, and after a later failure answer
        /// "short" for ever).
        settled: Option<(u64, [u64; 4])>,
    },
    /// Every key and tombstone of a slot with its version.
    KeyVersions {
        /// The slot.
        slot: u16,
    },
    /// Liveness check.
    Ping,
    /// The sender evicted `key` at `version` (its memory limit): drop the
    /// live copy if it is not newer, leaving no tombstone, so owners keep
    /// the same keys instead of copying evicted ones back for ever.
    Evict {
        /// The key.
        key: &'a [u8],
        /// The evicted entry's version.
        version: u64,
    },
    /// The sender ran FLUSHALL at `version`: remove every older state and
    /// refuse older ones from now on (the flush epoch).
    Flush {
        /// The flush's version.
        version: u64,
    },
    /// The sender leaves the cluster gracefully (its slots are handed
    /// over): it no longer counts towards the majority of the receiver's
    /// table (`cluster::majority`).
    Leave,
}

/// Which request a reply answers (what shape to decode it as).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Request::Hello`].
    Hello,
    /// [`Request::Auth`].
    Auth,
    /// [`Request::Put`].
    Put,
    /// [`Request::Del`].
    Del,
    /// [`Request::Read`].
    Read,
    /// [`Request::Forward`].
    Forward,
    /// [`Request::SlotDone`].
    SlotDone,
    /// [`Request::DropOk`].
    DropOk,
    /// [`Request::Sending`].
    Sending,
    /// [`Request::Digests`].
    Digests,
    /// [`Request::Sums`].
    Sums,
    /// [`Request::KeyVersions`].
    KeyVersions,
    /// [`Request::Ping`].
    Ping,
    /// [`Request::Evict`].
    Evict,
    /// [`Request::Flush`].
    Flush,
    /// [`Request::Leave`].
    Leave,
}

const NAMES: [(Kind, &[u8]); 16] = [
    (Kind::Hello, b"RC.HELLO"),
    (Kind::Auth, b"RC.AUTH"),
    (Kind::Put, b"RC.PUT"),
    (Kind::Del, b"RC.DEL"),
    (Kind::Read, b"RC.READ"),
    (Kind::Forward, b"RC.FWD"),
    (Kind::SlotDone, b"RC.SLOTDONE"),
    (Kind::DropOk, b"RC.DROPOK"),
    (Kind::Sending, b"RC.SENDING"),
    (Kind::Digests, b"RC.DIGESTS"),
    (Kind::Sums, b"RC.SUMS"),
    (Kind::KeyVersions, b"RC.KEYVERS"),
    (Kind::Ping, b"RC.PING"),
    (Kind::Evict, b"RC.EVICT"),
    (Kind::Flush, b"RC.FLUSH"),
    (Kind::Leave, b"RC.LEAVE"),
];

impl Kind {
    /// The command name on the wire.
    pub fn name(self) -> &'static [u8] {
        // NAMES lists the kinds in declaration order (every replicated
        // write encodes a name: no search).
        let (kind, name) = NAMES[self as usize];
        debug_assert_eq!(kind, self, "NAMES follows the order of Kind");
        name
    }

    fn of_name(name: &[u8]) -> Option<Kind> {
        NAMES.iter().find(|(_, n)| name.eq_ignore_ascii_case(n)).map(|(k, _)| *k)
    }
}

/// A decimal u64: digits only, no sign, no leading zeros beyond "0".
pub fn parse_u64(a: &[u8]) -> Option<u64> {
    if a.is_empty() || a.len() > 20 || !a.iter().all(u8::is_ascii_digit) || (a.len() > 1 && a[0] == b'0') {
        return None;
    }
    std::str::from_utf8(a).ok()?.parse().ok()
}

fn parse_slot(a: &[u8]) -> Option<u16> {
    parse_u64(a).filter(|&s| s < u64::from(SLOT_COUNT)).map(|s| s as u16)
}

fn parse_hex_u64(a: &[u8]) -> Option<u64> {
    if a.len() != 16 || !a.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(a).ok()?, 16).ok()
}

fn dec(n: u64) -> String {
    n.to_string()
}

impl<'a> Request<'a> {
    /// What kind of request this is.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Hello { .. } => Kind::Hello,
            Request::Auth { .. } => Kind::Auth,
            Request::Put { .. } => Kind::Put,
            Request::Del { .. } => Kind::Del,
            Request::Read { .. } => Kind::Read,
            Request::Forward { .. } => Kind::Forward,
            Request::SlotDone { .. } => Kind::SlotDone,
            Request::DropOk { .. } => Kind::DropOk,
            Request::Sending { .. } => Kind::Sending,
            Request::Digests { .. } => Kind::Digests,
            Request::Sums { .. } => Kind::Sums,
            Request::KeyVersions { .. } => Kind::KeyVersions,
            Request::Ping => Kind::Ping,
            Request::Evict { .. } => Kind::Evict,
            Request::Flush { .. } => Kind::Flush,
            Request::Leave => Kind::Leave,
        }
    }

    /// Decodes one parsed request (parsed under [`LIMITS`], or
    /// [`HANDSHAKE_LIMITS`] before the handshake).
    pub fn decode(args: Args<'a>) -> Result<Request<'a>, PeerError> {
        if args.is_empty() {
            return Err(PeerError::Malformed("empty request"));
        }
        let Some(kind) = Kind::of_name(args.get(0)) else {
            return Err(PeerError::UnknownCommand);
        };
        let n = args.len();
        let a = |i: usize| args.get(i);
        let bad = PeerError::Malformed;
        let req = match kind {
            Kind::Hello if n == 3 && a(2).len() <= NONCE_HEX_MAX => Request::Hello { name: a(1), nonce: a(2) },
            Kind::Auth if n == 2 => Request::Auth { proof: a(1) },
            Kind::Put if n == 5 => {
                let version = parse_u64(a(2)).ok_or(bad("version"))?;
                let expiry = parse_u64(a(3)).ok_or(bad("expiry"))?;
                Request::Put { key: a(1), version, expiry_ms: (expiry != 0).then_some(expiry), value: a(4) }
            }
            Kind::Del if n == 3 => Request::Del { key: a(1), version: parse_u64(a(2)).ok_or(bad("version"))? },
            Kind::Evict if n == 3 => Request::Evict { key: a(1), version: parse_u64(a(2)).ok_or(bad("version"))? },
            Kind::Flush if n == 2 => Request::Flush { version: parse_u64(a(1)).ok_or(bad("version"))? },
            Kind::Read if n == 2 => Request::Read { key: a(1), table: None },
            Kind::Read if n == 3 => {
                Request::Read { key: a(1), table: Some(parse_hex_u64(a(2)).ok_or(bad("table digest"))?) }
            }
            Kind::Forward if n >= 6 => {
                let resp3 = match a(1) {
                    b"2" => false,
                    b"3" => true,
                    _ => return Err(bad("protocol version")),
                };
                let share = match a(2) {
                    b"p" => false,
                    b"s" => true,
                    _ => return Err(bad("mode")),
                };
                let deadline = parse_deadline(a(3)).ok_or(bad("deadline"))?;
                let table = parse_hex_u64(a(4)).ok_or(bad("table digest"))?;
                Request::Forward { head: ForwardHead { resp3, share, deadline, table }, command: args.skip(5) }
            }
            Kind::SlotDone if (2..=2 + KEEPERS_MAX).contains(&n) => {
                Request::SlotDone { slot: parse_slot(a(1)).ok_or(bad("slot"))?, keepers: (2..n).map(a).collect() }
            }
            Kind::DropOk if n == 2 => Request::DropOk { slot: parse_slot(a(1)).ok_or(bad("slot"))? },
            Kind::Sending if (3..=3 + SENDING_SLOTS_MAX).contains(&n) => {
                let slots = (3..n).map(|i| parse_slot(a(i))).collect::<Option<Vec<u16>>>().ok_or(bad("slot"))?;
                Request::Sending { to: a(1), table: parse_u64(a(2)).ok_or(bad("table digest"))?, slots }
            }
            Kind::Digests if n == 2 || n == 4 => Request::Digests {
                shard: parse_u64(a(1)).filter(|&s| s < SHARD_COUNT as u64).ok_or(bad("shard"))? as u16,
                settled: if n == 4 {
                    Some((
                        parse_hex_u64(a(2)).ok_or(bad("table digest"))?,
                        parse_hex_u64(a(3)).ok_or(bad("settled slots"))?,
                    ))
                } else {
                    None
                },
            },
            Kind::Sums if n == 2 || n == 7 => Request::Sums {
                asker: a(1),
                settled: if n == 7 {
                    let word = |i: usize| parse_hex_u64(a(3 + i)).ok_or(bad("settled shards"));
                    Some((parse_hex_u64(a(2)).ok_or(bad("table digest"))?, [word(0)?, word(1)?, word(2)?, word(3)?]))
                } else {
                    None
                },
            },
            Kind::KeyVersions if n == 2 => Request::KeyVersions { slot: parse_slot(a(1)).ok_or(bad("slot"))? },
            Kind::Ping if n == 1 => Request::Ping,
            Kind::Leave if n == 1 => Request::Leave,
            _ => return Err(bad("wrong number of arguments")),
        };
        Ok(req)
    }

    /// Appends this request's wire form to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let name = self.kind().name();
        match self {
            Request::Hello { name: me, nonce } => encode::command(buf, &[name, me, nonce]),
            Request::Auth { proof } => encode::command(buf, &[name, proof]),
            Request::Put { key, version, expiry_ms, value } => {
                let (v, e) = (dec(*version), dec(expiry_ms.unwrap_or(0)));
                encode::command(buf, &[name, key, v.as_bytes(), e.as_bytes(), value]);
            }
            Request::Del { key, version } => encode::command(buf, &[name, key, dec(*version).as_bytes()]),
            Request::Evict { key, version } => encode::command(buf, &[name, key, dec(*version).as_bytes()]),
            Request::Flush { version } => encode::command(buf, &[name, dec(*version).as_bytes()]),
            Request::Read { key, table: None } => encode::command(buf, &[name, key]),
            Request::Read { key, table: Some(t) } => encode::command(buf, &[name, key, format!("{t:016x}").as_bytes()]),
            Request::Forward { head, command } => {
                encode_forward_head(buf, head, command.len());
                for a in command.iter() {
                    encode::bulk(buf, a);
                }
            }
            Request::SlotDone { slot, keepers } => {
                encode::array_header(buf, 2 + keepers.len());
                encode::bulk(buf, name);
                encode::bulk(buf, dec(u64::from(*slot)).as_bytes());
                for k in keepers {
                    encode::bulk(buf, k);
                }
            }
            Request::DropOk { slot } | Request::KeyVersions { slot } => {
                encode::command(buf, &[name, dec(u64::from(*slot)).as_bytes()]);
            }
            Request::Sending { to, table, slots } => {
                encode::array_header(buf, 3 + slots.len());
                encode::bulk(buf, name);
                encode::bulk(buf, to);
                encode::bulk(buf, dec(*table).as_bytes());
                for s in slots {
                    encode::bulk(buf, dec(u64::from(*s)).as_bytes());
                }
            }
            Request::Digests { shard, settled: None } => {
                encode::command(buf, &[name, dec(u64::from(*shard)).as_bytes()])
            }
            Request::Digests { shard, settled: Some((table, bits)) } => encode::command(
                buf,
                &[
                    name,
                    dec(u64::from(*shard)).as_bytes(),
                    format!("{table:016x}").as_bytes(),
                    format!("{bits:016x}").as_bytes(),
                ],
            ),
            Request::Sums { asker, settled: None } => encode::command(buf, &[name, asker]),
            Request::Sums { asker, settled: Some((table, shards)) } => {
                let hex: Vec<String> = std::iter::once(table).chain(shards).map(|w| format!("{w:016x}")).collect();
                let mut args: Vec<&[u8]> = vec![name, asker];
                args.extend(hex.iter().map(String::as_bytes));
                encode::command(buf, &args)
            }
            Request::Ping | Request::Leave => encode::command(buf, &[name]),
        }
    }

    /// This request's wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

/// The head of an `RC.FWD` carrying a command of `argc` arguments, whose
/// bulks follow (the sender keeps them encoded, to send again with a newer
/// table digest without re-encoding the command).
pub fn encode_forward_head(buf: &mut BytesMut, head: &ForwardHead, argc: usize) {
    encode::array_header(buf, 5 + argc);
    encode::bulk(buf, Kind::Forward.name());
    encode::bulk(buf, if head.resp3 { b"3" } else { b"2" });
    encode::bulk(buf, if head.share { b"s" } else { b"p" });
    // On the stack: this runs for every forwarded request.
    let mut text = [0u8; 41];
    let len = match head.deadline {
        Deadline::Relative { sent_ms, ttl_ms } => {
            let a = put_u64(&mut text, 0, sent_ms);
            text[a] = b'+';
            put_u64(&mut text, a + 1, ttl_ms)
        }
        Deadline::Absolute(at) => put_u64(&mut text, 0, at),
    };
    encode::bulk(buf, &text[..len]);
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = b"0123456789abcdef"[((head.table >> (60 - 4 * i)) & 0xf) as usize];
    }
    encode::bulk(buf, &hex);
}

/// Writes `n` in decimal into `out` at `at`; returns the end.
fn put_u64(out: &mut [u8], at: usize, n: u64) -> usize {
    let mut tmp = [0u8; 20];
    let digits = encode::decimal(n, &mut tmp);
    out[at..at + digits.len()].copy_from_slice(digits);
    at + digits.len()
}

/// `sent+ttl` (relative) or a plain unix ms (absolute, older nodes).
fn parse_deadline(b: &[u8]) -> Option<Deadline> {
    match b.iter().position(|&c| c == b'+') {
        Some(i) => Some(Deadline::Relative { sent_ms: parse_u64(&b[..i])?, ttl_ms: parse_u64(&b[i + 1..])? }),
        None => parse_u64(b).map(Deadline::Absolute),
    }
}

/// Whether a request that failed ran at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// It did not run (or was not even sent): safe to send again.
    No,
    /// It may have run: sending it again may apply it twice.
    Maybe,
}

/// A peer's error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// `RC.FWD` read after its deadline: not run.
    Expired,
    /// `RC.FWD` from a member whose table differs: not run (send again
    /// once the tables agree).
    TableDiffers,
    /// A replicated version too far ahead of the receiver's clock: not
    /// applied.
    VersionAhead,
    /// The receiver is at maxmemory and could not make room: not applied.
    OutOfMemory,
    /// The receiver is on the minority side of a partition: a replicated
    /// write is not applied (it would count towards a quorum the other
    /// side does not know of).
    Minority,
    /// A write's fetch (`RC.READ` with a table) of a key whose slot's
    /// keepers the receiver cannot reach (`cluster::keepers`): not
    /// answered, so the asker refuses the write.
    KeepersShort,
    /// A request the receiver could not decode: not run.
    Malformed(&'static str),
    /// An `RC.*` name the receiver does not know: not run.
    UnknownCommand,
    /// Any other error text (a forwarded command's own error): whether it
    /// ran is the command's business; a `TRYAGAIN` did not.
    Other(Bytes),
}

impl PeerError {
    /// The Redis-style error text (without `-` and CRLF).
    pub fn text(&self) -> std::borrow::Cow<'static, [u8]> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            PeerError::Expired => Borrowed(b"TIMEOUT forwarded request expired before it ran (not run)"),
            PeerError::TableDiffers => Borrowed(b"TRYAGAIN the asking node's table differs from this node's"),
            PeerError::VersionAhead => Borrowed(b"ERR version too far ahead of this node's clock (not applied)"),
            PeerError::OutOfMemory => Borrowed(b"OOM command not allowed when used memory > 'maxmemory'."),
            PeerError::Minority => {
                Borrowed(b"CLUSTERDOWN the receiver is on the minority side of a partition (not applied)")
            }
            PeerError::KeepersShort => Borrowed(
                b"CLUSTERDOWN too few of the members holding this key's writes are in the receiver's table (not answered)",
            ),
            PeerError::Malformed(what) => Owned(format!("ERR malformed peer request ({what})").into_bytes()),
            PeerError::UnknownCommand => Borrowed(b"ERR unknown peer command"),
            PeerError::Other(b) => Owned(b.to_vec()),
        }
    }

    /// Appends the error reply to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        encode::error(buf, &self.text());
    }

    /// Reads an error reply's text back as a typed error.
    pub fn from_text(text: &[u8]) -> PeerError {
        let known = [
            PeerError::Expired,
            PeerError::TableDiffers,
            PeerError::VersionAhead,
            PeerError::OutOfMemory,
            PeerError::Minority,
            PeerError::KeepersShort,
            PeerError::UnknownCommand,
        ];
        if let Some(e) = known.into_iter().find(|e| e.text().as_ref() == text) {
            return e;
        }
        if let Some(what) = text.strip_prefix(b"ERR malformed peer request (").and_then(|t| t.strip_suffix(b")"))
            && let Some(w) = MALFORMED.iter().find(|w| w.as_bytes() == what)
        {
            return PeerError::Malformed(w);
        }
        // One line, as the encoder writes it (a RESP3 blob error may span lines).
        let line: Vec<u8> = text.iter().map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }).collect();
        if line != text {
            return PeerError::from_text(&line);
        }
        PeerError::Other(Bytes::copy_from_slice(text))
    }

    /// Whether the request ran.
    pub fn ran(&self) -> Ran {
        match self {
            PeerError::Other(t) if !t.starts_with(b"TRYAGAIN") => Ran::Maybe,
            _ => Ran::No,
        }
    }

    /// A refusal the sender should send again shortly (the receiver's
    /// view of the cluster is moving).
    pub fn retryable(&self) -> bool {
        match self {
            PeerError::TableDiffers => true,
            PeerError::Other(t) => t.starts_with(b"TRYAGAIN"),
            _ => false,
        }
    }
}

/// Every `Malformed` reason, so a decoded error is the same value.
const MALFORMED: [&str; 11] = [
    "empty request",
    "version",
    "expiry",
    "protocol version",
    "mode",
    "deadline",
    "table digest",
    "slot",
    "shard",
    "wrong number of arguments",
    "reply",
];

/// A reply of the peer protocol (forwarded commands answer with the
/// command's own reply, passed to the client as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// `+PONG`.
    Pong,
    /// The accepting side's nonce and its proof (`RC.HELLO`).
    Challenge {
        /// The accepting side's nonce (hex).
        nonce: Bytes,
        /// Its proof over both nonces (`LinkKey::server_proof`).
        proof: Bytes,
    },
    /// A key's state (`RC.READ`).
    State(ReadState),
    /// Per-slot or per-shard digests and the members digest they were
    /// taken under (`RC.DIGESTS`, `RC.SUMS`).
    Digests {
        /// One per slot (or per shard), in the order asked.
        digests: Vec<u64>,
        /// The members digest of the replier's table when it took them.
        table: u64,
        /// `RC.DIGESTS`: a bit per slot (in the order asked) whose
        /// keepers the replier cannot reach (`cluster::keepers`): it must
        /// not settle. Zero for `RC.SUMS`.
        short: u64,
    },
    /// Per asked slot, whether a copy is still coming (`RC.SENDING`).
    Flags(Vec<bool>),
    /// A slot's keys and tombstones with their versions (`RC.KEYVERS`).
    KeyVersions(Vec<(Bytes, u64)>),
    /// The peer refused or failed.
    Error(PeerError),
}

impl Reply {
    /// Appends this reply's wire form to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Reply::Ok => buf.extend_from_slice(b"+OK\r\n"),
            Reply::Pong => buf.extend_from_slice(b"+PONG\r\n"),
            Reply::Challenge { nonce, proof } => {
                encode::array_header(buf, 2);
                encode::bulk(buf, nonce);
                encode::bulk(buf, proof);
            }
            Reply::State(s) => s.encode(buf),
            Reply::Digests { digests, table, short } => encode_digests(buf, digests, *table, *short),
            Reply::Flags(flags) => {
                encode::array_header(buf, flags.len());
                for f in flags {
                    encode::integer(buf, i64::from(*f));
                }
            }
            Reply::KeyVersions(list) => {
                encode::array_header(buf, 2 * list.len());
                for (k, v) in list {
                    encode::bulk(buf, k);
                    encode::integer(buf, *v as i64);
                }
            }
            Reply::Error(e) => e.encode(buf),
        }
    }

    /// Decodes the reply to a request of `kind` (any error reply becomes
    /// [`Reply::Error`]); a reply of the wrong shape is malformed.
    pub fn decode(kind: Kind, frame: &Frame) -> Reply {
        if let Frame::Error(t) | Frame::BlobError(t) = frame {
            return Reply::Error(PeerError::from_text(t));
        }
        let int = |f: &Frame| if let Frame::Integer(n) = f { Some(*n as u64) } else { None };
        let reply = match (kind, frame) {
            (
                Kind::Auth
                | Kind::Put
                | Kind::Del
                | Kind::Evict
                | Kind::Flush
                | Kind::Leave
                | Kind::SlotDone
                | Kind::DropOk,
                Frame::Simple(s),
            ) if s == "OK" => Some(Reply::Ok),
            (Kind::Ping, Frame::Simple(s)) if s == "PONG" => Some(Reply::Pong),
            (Kind::Hello, Frame::Array(a)) => match a.as_slice() {
                [Frame::Bulk(nonce), Frame::Bulk(proof)] => {
                    Some(Reply::Challenge { nonce: nonce.clone(), proof: proof.clone() })
                }
                _ => None,
            },
            (Kind::Read, f) => ReadState::decode(f).map(Reply::State),
            (Kind::Digests | Kind::Sums, Frame::Array(a)) if a.len() >= 2 => {
                let all: Option<Vec<u64>> = a.iter().map(int).collect();
                all.map(|mut digests| {
                    let short = digests.pop().expect("two at least");
                    let table = digests.pop().expect("two at least");
                    Reply::Digests { digests, table, short }
                })
            }
            (Kind::Sending, Frame::Array(a)) => a
                .iter()
                .map(|f| match f {
                    Frame::Integer(0) => Some(false),
                    Frame::Integer(1) => Some(true),
                    _ => None,
                })
                .collect::<Option<Vec<bool>>>()
                .map(Reply::Flags),
            (Kind::KeyVersions, Frame::Array(a)) if a.len() % 2 == 0 => a
                .chunks(2)
                .map(|p| match p {
                    [Frame::Bulk(k), v] => Some((k.clone(), int(v)?)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Reply::KeyVersions),
            _ => None,
        };
        reply.unwrap_or(Reply::Error(PeerError::Malformed("reply")))
    }

    /// Decodes one raw reply (as a link returns it) to a request of `kind`.
    pub fn parse(kind: Kind, raw: &[u8]) -> Reply {
        match ringcache_protocol::decode_frame(raw, &REPLY_LIMITS) {
            Ok(Some((f, n))) if n == raw.len() => Reply::decode(kind, &f),
            _ => Reply::Error(PeerError::Malformed("reply")),
        }
    }
}

/// `*n+1 :digest... :table` without building a `Vec` first.
pub fn encode_digests(buf: &mut BytesMut, digests: &[u64], table: u64, short: u64) {
    encode::array_header(buf, digests.len() + 2);
    for d in digests {
        encode::integer(buf, *d as i64);
    }
    encode::integer(buf, table as i64);
    encode::integer(buf, short as i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringcache_protocol::RequestParser;

    /// Parses `wire` as one request under [`LIMITS`], decodes it and hands
    /// it to `f` (the request borrows the buffer).
    fn reparse(wire: &[u8], f: impl FnOnce(Result<Request<'_>, PeerError>)) {
        let mut p = RequestParser::new();
        assert_eq!(p.parse(wire, &LIMITS, true), Ok(true), "one whole request");
        assert_eq!(p.consumed(), wire.len());
        f(Request::decode(p.args(wire)));
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..24)
    }

    /// The owned inputs of one request (requests borrow).
    #[derive(Debug, Clone)]
    struct Parts {
        kind: usize,
        a: Vec<u8>,
        b: Vec<u8>,
        n: u64,
        m: u64,
        slots: Vec<u16>,
        command: Vec<Vec<u8>>,
        flags: (bool, bool),
    }

    fn parts() -> impl Strategy<Value = Parts> {
        (
            0..16usize,
            bytes(),
            proptest::collection::vec(any::<u8>(), 0..NONCE_HEX_MAX),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(0..SLOT_COUNT, 0..40),
            proptest::collection::vec(bytes(), 1..6),
            (any::<bool>(), any::<bool>()),
        )
            .prop_map(|(kind, a, b, n, m, slots, command, flags)| Parts {
                kind,
                a,
                b,
                n,
                m,
                slots,
                command,
                flags,
            })
    }

    fn build<'a>(p: &'a Parts, cmd: &'a [&'a [u8]]) -> Request<'a> {
        match p.kind {
            0 => Request::Hello { name: &p.a, nonce: &p.b },
            1 => Request::Auth { proof: &p.a },
            2 => Request::Put { key: &p.a, version: p.n, expiry_ms: (p.m != 0).then_some(p.m), value: &p.b },
            3 => Request::Del { key: &p.a, version: p.n },
            4 => Request::Read { key: &p.a, table: p.flags.0.then_some(p.n) },
            5 => Request::Forward {
                head: ForwardHead {
                    resp3: p.flags.0,
                    share: p.flags.1,
                    deadline: if p.n.is_multiple_of(2) {
                        Deadline::Relative { sent_ms: p.n, ttl_ms: p.m >> 40 }
                    } else {
                        Deadline::Absolute(p.n)
                    },
                    table: p.m,
                },
                command: Args::from_slices(cmd),
            },
            6 => Request::SlotDone {
                slot: (p.n % u64::from(SLOT_COUNT)) as u16,
                keepers: cmd.iter().take(KEEPERS_MAX).copied().collect(),
            },
            7 => Request::DropOk { slot: (p.n % u64::from(SLOT_COUNT)) as u16 },
            8 => Request::Sending { to: &p.a, table: p.n, slots: p.slots.clone() },
            9 => {
                Request::Digests { shard: (p.n % SHARD_COUNT as u64) as u16, settled: p.flags.0.then_some((p.m, p.n)) }
            }
            10 => Request::Sums {
                asker: &p.a,
                settled: p.flags.0.then_some((p.n, [p.m, p.n ^ p.m, p.m.rotate_left(7), !p.n])),
            },
            11 => Request::KeyVersions { slot: (p.n % u64::from(SLOT_COUNT)) as u16 },
            12 => Request::Evict { key: &p.a, version: p.n },
            13 => Request::Flush { version: p.n },
            14 => Request::Leave,
            _ => Request::Ping,
        }
    }

    #[test]
    fn lateness_ignores_clock_offsets_and_catches_held_requests() {
        const TTL: u64 = 2_000;
        let rel = |sent_ms| Deadline::Relative { sent_ms, ttl_ms: TTL };
        // The sender's monotonic clock is 5 000 000 ms behind this node's,
        // and the wall clocks do not matter: prompt requests run.
        let mut l = Lateness::default();
        for i in 0..100u64 {
            let sent = 1_000 + i * 10;
            assert!(!l.expired(rel(sent), 5_000_000 + sent + 3 + i % 5, 0), "request {i}");
        }
        // One held for 10 s (TCP retransmission through a partition).
        assert!(l.expired(rel(2_000), 5_000_000 + 12_000, 0));
        // Prompt again after a minute of silence; a held one still caught.
        assert!(!l.expired(rel(70_000), 5_070_004, 0));
        assert!(l.expired(rel(70_100), 5_075_000, 0));
        // The other side's clock ahead: the delay is negative, still fine.
        let mut m = Lateness::default();
        assert!(!m.expired(rel(9_000_000), 1_000, 0));
        assert!(!m.expired(rel(9_000_500), 1_501, 0));
        assert!(m.expired(rel(9_001_000), 5_000, 0));
        // The older, absolute form is the receiver's wall clock.
        assert!(!m.expired(Deadline::Absolute(100), 0, 100));
        assert!(m.expired(Deadline::Absolute(100), 0, 101));
    }

    #[test]
    fn a_forward_head_is_written_as_text() {
        let mut b = BytesMut::new();
        let head = ForwardHead {
            resp3: false,
            share: true,
            deadline: Deadline::Relative { sent_ms: 12, ttl_ms: 2000 },
            table: 0x0123_4567_89ab_cdef,
        };
        encode_forward_head(&mut b, &head, 0);
        assert_eq!(
            &b[..],
            &b"*5\r\n$6\r\nRC.FWD\r\n$1\r\n2\r\n$1\r\ns\r\n$7\r\n12+2000\r\n$16\r\n0123456789abcdef\r\n"[..]
        );
        let mut b = BytesMut::new();
        let head = ForwardHead { deadline: Deadline::Absolute(u64::MAX), table: 0xa, ..head };
        encode_forward_head(&mut b, &head, 0);
        assert!(b.ends_with(b"$20\r\n18446744073709551615\r\n$16\r\n000000000000000a\r\n"), "{b:?}");
    }

    #[test]
    fn both_deadline_forms_decode() {
        assert_eq!(parse_deadline(b"12+2000"), Some(Deadline::Relative { sent_ms: 12, ttl_ms: 2000 }));
        assert_eq!(parse_deadline(b"1795431954344"), Some(Deadline::Absolute(1_795_431_954_344)));
        for bad in [&b"+5"[..], b"5+", b"1+2+3", b"-1", b"", b"x"] {
            assert_eq!(parse_deadline(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn every_request_round_trips(p in parts()) {
            let cmd: Vec<&[u8]> = p.command.iter().map(Vec::as_slice).collect();
            let req = build(&p, &cmd);
            let wire = req.to_bytes();
            reparse(&wire, |back| assert_eq!(back, Ok(req.clone())));
        }

        #[test]
        fn every_reply_round_trips(
            kind in 0..7usize,
            n in any::<u64>(),
            m in any::<u64>(),
            list in proptest::collection::vec((bytes(), any::<u64>()), 0..8),
            flags in proptest::collection::vec(any::<bool>(), 0..8),
            err in 0..9usize,
        ) {
            let (k, reply) = match kind {
                0 => (Kind::Put, Reply::Ok),
                1 => (Kind::Ping, Reply::Pong),
                2 => (Kind::Hello, Reply::Challenge { nonce: n.to_string().into(), proof: m.to_string().into() }),
                3 => (Kind::Read, Reply::State(match n % 3 {
                    0 => ReadState::Unknown,
                    1 => ReadState::Deleted { version: m },
                    _ => ReadState::Live {
                        version: m,
                        expiry_ms: (n != 0).then_some(n),
                        value: list.first().map(|(b, _)| b.clone().into()).unwrap_or_default(),
                    },
                })),
                4 => (
                    Kind::Digests,
                    Reply::Digests { digests: list.iter().map(|(_, v)| *v).collect(), table: n, short: m },
                ),
                5 => (Kind::Sending, Reply::Flags(flags)),
                _ => (Kind::KeyVersions, Reply::KeyVersions(list.into_iter().map(|(k, v)| (k.into(), v)).collect())),
            };
            let mut wire = BytesMut::new();
            reply.encode(&mut wire);
            prop_assert_eq!(Reply::parse(k, &wire), reply);
            let e = [
                PeerError::Expired, PeerError::TableDiffers, PeerError::VersionAhead, PeerError::OutOfMemory,
                PeerError::Malformed("slot"), PeerError::UnknownCommand, PeerError::Other("TRYAGAIN later".into()),
                PeerError::Minority, PeerError::KeepersShort,
            ][err].clone();
            let mut wire = BytesMut::new();
            Reply::Error(e.clone()).encode(&mut wire);
            prop_assert_eq!(Reply::parse(k, &wire), Reply::Error(e));
        }
    }

    #[test]
    fn decoding_refuses_what_a_member_never_sends() {
        let refused: [&[&[u8]]; 9] = [
            &[b"RC.PUT", b"k", b"-1", b"0", b"v"],
            &[b"RC.PUT", b"k", b"+1", b"0", b"v"],
            &[b"RC.DEL", b"k", b"18446744073709551616"],
            &[b"RC.SLOTDONE", b"16384"],
            &[b"RC.DIGESTS", b"256"],
            &[b"RC.FWD", b"4", b"p", b"1", b"0123456789abcdef", b"GET"],
            &[b"RC.FWD", b"2", b"p", b"1", b"0", b"GET"],
            &[b"RC.SENDING", b"me", b"1", b"x"],
            &[b"RC.READ"],
        ];
        for args in refused {
            assert!(matches!(Request::decode(Args::from_slices(args)), Err(PeerError::Malformed(_))), "{args:?}");
        }
        assert_eq!(Request::decode(Args::from_slices(&[b"RC.NOPE"])), Err(PeerError::UnknownCommand));
        assert_eq!(Request::decode(Args::from_slices(&[b"GET", b"k"])), Err(PeerError::UnknownCommand));
        // The largest version there is travels intact (versions are u64).
        let big = u64::MAX.to_string();
        assert_eq!(
            Request::decode(Args::from_slices(&[b"RC.DEL", b"k", big.as_bytes()])),
            Ok(Request::Del { key: b"k", version: u64::MAX })
        );
    }

    #[test]
    fn a_refusal_says_whether_it_ran() {
        assert_eq!(PeerError::Expired.ran(), Ran::No);
        assert_eq!(PeerError::TableDiffers.ran(), Ran::No);
        assert!(PeerError::TableDiffers.retryable());
        assert_eq!(PeerError::Other("TRYAGAIN moving".into()).ran(), Ran::No);
        assert_eq!(PeerError::Other("ERR wrong type".into()).ran(), Ran::Maybe);
        assert!(!PeerError::Expired.retryable());
    }
}
