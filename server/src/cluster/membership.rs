//! Membership, the pure parts: who a node is on the gossip wire, how gossip
//! packets are authenticated, and how the members foca reports become a
//! [`Topology`]. The SWIM protocol itself is foca's (sans-IO as well); the
//! task that owns it and its socket lives in `net::gossip`.
//!
//! Identity: a member is `(name, generation)` plus the addresses and weight
//! other nodes need. Placement keys on the name only, so a renewed identity
//! (higher generation, after a restart or a refuted suspicion that foca
//! turned into a rejoin) changes no placement. foca addresses members by
//! their gossip address; of two identities with one address, the higher
//! generation wins. Carrying the client address and weight in the identity
//! means every member record tells a late joiner everything placement needs:
//! nothing depends on having seen an earlier broadcast.
//!
//! Packets: `MAGIC | settings(21) | MAC(16) | payload`, the MAC a keyed
//! BLAKE3 hash of the settings and the payload under a key derived from
//! the cluster name and the cluster secret (a node without one does not
//! gossip at all). A packet from another cluster, or without the secret,
//! fails the MAC and is dropped before foca sees it; an authentic one from
//! a member whose [`ClusterSettings`] differ is dropped too, and says which
//! settings it has (members that differ would build different tables from
//! the same member set); one that passes is decoded by [`CheckedCodec`],
//! which refuses member records outside the bounds of
//! [`NodeIdentity::check`] (a member with the secret is still not trusted
//! to size this node's ring).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::topology::{NodeInfo, Topology};

/// A member on the gossip wire.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node name (unique in its cluster).
    pub name: String,
    /// Grows at every start and identity renewal: a restarted node is a new member.
    pub generation: u64,
    /// Where its gossip (UDP) and peer links (TCP) listen.
    pub gossip_addr: SocketAddr,
    /// Where clients reach it (the announced address and client port).
    pub client_addr: SocketAddr,
    /// Its share of the ring (virtual nodes are weight × vnodes).
    pub weight: u32,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.gossip_addr, self.generation)
    }
}

impl NodeIdentity {
    /// A stand-in for a seed whose identity is not known yet: foca accepts
    /// an announce addressed to any identity with its gossip address.
    pub fn seed(gossip_addr: SocketAddr) -> Self {
        NodeIdentity { name: String::new(), generation: 0, gossip_addr, client_addr: gossip_addr, weight: 0 }
    }

    /// Whether this is the stand-in identity announced to a seed address.
    pub fn is_seed_placeholder(&self) -> bool {
        self.generation == 0 && self.name.is_empty()
    }

    /// Whether a member record from the wire is one this node may use: a
    /// name of 1..=`NAME_MAX` printable bytes, a weight within the local
    /// limit (each unit is `vnodes` ring tokens), and addresses another
    /// host can reach. Records that fail are refused whole.
    pub fn check(&self) -> Result<(), &'static str> {
        use crate::config::{NAME_MAX, WEIGHT_MAX};
        if self.is_seed_placeholder() {
            return Ok(()); // an announce's destination, never a member
        }
        if self.name.is_empty() || self.name.len() > NAME_MAX {
            return Err("name length");
        }
        if self.name.bytes().any(|b| b.is_ascii_control()) {
            return Err("control character in name");
        }
        if self.weight == 0 || self.weight > WEIGHT_MAX {
            return Err("weight out of range");
        }
        for a in [self.gossip_addr, self.client_addr] {
            if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err("unreachable address");
            }
        }
        Ok(())
    }
}

/// Members that share a name with another live member at another gossip
/// address (two nodes started with one `--node-name`, or one default name
/// on two hosts with one host name): each pair once, the one that does not
/// count (older generation, or not this node) first.
pub fn name_conflicts<'a>(
    me: &'a NodeIdentity,
    members: &'a [NodeIdentity],
) -> Vec<(&'a NodeIdentity, &'a NodeIdentity)> {
    let mut newest: HashMap<&str, &NodeIdentity> = HashMap::new();
    newest.insert(&me.name, me);
    let mut out = Vec::new();
    for m in members.iter().filter(|m| !m.is_seed_placeholder()) {
        match newest.get(m.name.as_str()) {
            Some(&old) if old.gossip_addr != m.gossip_addr => {
                let keep_old = std::ptr::eq(old, me) || old.generation >= m.generation;
                if keep_old {
                    out.push((m, old));
                } else {
                    out.push((old, m));
                    newest.insert(&m.name, m);
                }
            }
            Some(_) => {}
            None => {
                newest.insert(&m.name, m);
            }
        }
    }
    out
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeIdentity { generation: self.generation + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// foca's postcard codec, refusing member records that fail
/// [`NodeIdentity::check`] as they are decoded: a packet naming one is
/// dropped whole before foca acts on it. `refused` counts them (shared
/// with the driver, which reports it).
#[derive(Debug, Default)]
pub struct CheckedCodec {
    /// Member records refused so far (shared with the driver, which reports them).
    pub refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

use foca::PostcardCodec as Postcard;
type PostcardError = <Postcard as foca::Codec<NodeIdentity>>::Error;

/// Why [`CheckedCodec`] did not decode.
#[derive(Debug)]
pub enum CodecError {
    /// The bytes are not a foca message.
    Decode(PostcardError),
    /// A member record failed `NodeIdentity::check`; why.
    Refused(&'static str),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Decode(e) => write!(f, "{e}"),
            CodecError::Refused(why) => write!(f, "member record refused: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl CheckedCodec {
    fn admit(&self, id: &NodeIdentity) -> Result<(), CodecError> {
        id.check().map_err(|why| {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            CodecError::Refused(why)
        })
    }
}

impl foca::Codec<NodeIdentity> for CheckedCodec {
    type Error = CodecError;

    fn encode_header(&mut self, h: &foca::Header<NodeIdentity>, buf: impl bytes::BufMut) -> Result<(), CodecError> {
        Postcard.encode_header(h, buf).map_err(CodecError::Decode)
    }

    fn decode_header(&mut self, buf: impl bytes::Buf) -> Result<foca::Header<NodeIdentity>, CodecError> {
        let h = Postcard.decode_header(buf).map_err(CodecError::Decode)?;
        self.admit(&h.src)?;
        if h.src.is_seed_placeholder() {
            return Err(CodecError::Refused("anonymous sender"));
        }
        self.admit(&h.dst)?;
        match &h.message {
            foca::Message::PingReq { target: t, .. }
            | foca::Message::IndirectPing { origin: t, .. }
            | foca::Message::IndirectAck { target: t, .. }
            | foca::Message::ForwardedAck { origin: t, .. } => self.admit(t)?,
            _ => {}
        }
        Ok(h)
    }

    fn encode_member(&mut self, m: &foca::Member<NodeIdentity>, buf: impl bytes::BufMut) -> Result<(), CodecError> {
        Postcard.encode_member(m, buf).map_err(CodecError::Decode)
    }

    fn decode_member(&mut self, buf: impl bytes::Buf) -> Result<foca::Member<NodeIdentity>, CodecError> {
        let m = Postcard.decode_member(buf).map_err(CodecError::Decode)?;
        self.admit(m.id())?;
        Ok(m)
    }
}

const MAGIC: &[u8; 4] = b"RCg2";
const MAC_LEN: usize = 16;
/// Bytes a sealed packet adds to foca's payload.
pub const SEAL_OVERHEAD: usize = MAGIC.len() + SETTINGS_LEN + MAC_LEN;

/// The settings every member of a cluster must share: members that
/// differ would build different slot tables, quorums or tombstone horizons
/// from the same member set while their members digests agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `--replicas`.
    pub replicas: u32,
    /// `--vnodes`.
    pub vnodes: u32,
    /// `--write-quorum`.
    pub write_quorum: u32,
    /// `--read-quorum`.
    pub read_quorum: u32,
    /// `--tombstone-grace`, seconds (saturating at u32::MAX).
    pub tombstone_grace_s: u32,
    /// `--partition-mode available`.
    pub partition_available: bool,
}

const SETTINGS_LEN: usize = 21;

impl ClusterSettings {
    fn encode(&self) -> [u8; SETTINGS_LEN] {
        let mut out = [0u8; SETTINGS_LEN];
        let words = [self.replicas, self.vnodes, self.write_quorum, self.read_quorum, self.tombstone_grace_s];
        for (i, w) in words.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        out[20] = u8::from(self.partition_available);
        out
    }

    fn decode(b: &[u8; SETTINGS_LEN]) -> Self {
        let w = |i: usize| u32::from_be_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        ClusterSettings {
            replicas: w(0),
            vnodes: w(1),
            write_quorum: w(2),
            read_quorum: w(3),
            tombstone_grace_s: w(4),
            partition_available: b[20] != 0,
        }
    }
}

impl fmt::Display for ClusterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--replicas {} --vnodes {} --write-quorum {} --read-quorum {} --tombstone-grace {} --partition-mode {}",
            self.replicas,
            self.vnodes,
            self.write_quorum,
            self.read_quorum,
            self.tombstone_grace_s,
            if self.partition_available { "available" } else { "majority" }
        )
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than the magic and the MAC.
    TooShort,
    /// Does not start with the ringcache magic.
    NotRingcache,
    /// Another cluster, or a wrong or missing secret.
    BadMac,
    /// An authentic packet from a member whose settings differ (these).
    SettingsDiffer(ClusterSettings),
}

/// Seals and opens gossip packets of one cluster.
#[derive(Clone)]
pub struct PacketKey {
    key: [u8; 32],
    settings: ClusterSettings,
}

impl fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PacketKey(..)")
    }
}

/// A 32-byte key for `purpose` derived from the cluster name and secret:
/// without a secret the key is public and only separates clusters.
pub fn cluster_key(purpose: &str, cluster_name: &str, secret: Option<&str>) -> [u8; 32] {
    let mut material = Vec::new();
    material.extend_from_slice(cluster_name.as_bytes());
    material.push(0);
    if let Some(s) = secret {
        material.push(1);
        material.extend_from_slice(s.as_bytes());
    }
    blake3::derive_key(purpose, &material)
}

impl PacketKey {
    /// The key of cluster `cluster_name` with `secret` (derived with
    /// BLAKE3), for a node with `settings`.
    pub fn new(cluster_name: &str, secret: Option<&str>, settings: ClusterSettings) -> Self {
        PacketKey { key: cluster_key("ringcache gossip packet v1", cluster_name, secret), settings }
    }

    fn mac(&self, settings: &[u8], payload: &[u8]) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(settings);
        h.update(payload);
        let full = h.finalize();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
        out
    }

    /// Appends the sealed packet for `payload` to `out`.
    pub fn seal(&self, payload: &[u8], out: &mut Vec<u8>) {
        let settings = self.settings.encode();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&settings);
        out.extend_from_slice(&self.mac(&settings, payload));
        out.extend_from_slice(payload);
    }

    /// The payload of a packet sealed with this key.
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], Rejected> {
        if packet.len() < SEAL_OVERHEAD {
            return Err(Rejected::TooShort);
        }
        if &packet[..MAGIC.len()] != MAGIC {
            return Err(Rejected::NotRingcache);
        }
        let (settings, rest) = packet[MAGIC.len()..].split_at(SETTINGS_LEN);
        let (mac, payload) = rest.split_at(MAC_LEN);
        let want = self.mac(settings, payload);
        // Constant time: no early exit on the first differing byte.
        if mac.iter().zip(want.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return Err(Rejected::BadMac);
        }
        let theirs = ClusterSettings::decode(settings.try_into().expect("SETTINGS_LEN bytes"));
        if theirs != self.settings {
            return Err(Rejected::SettingsDiffer(theirs));
        }
        Ok(payload)
    }
}

/// The topology of `me` plus the active members foca reports. A name seen
/// under several generations counts once, with its newest identity.
pub fn topology_of<'a>(
    me: &'a NodeIdentity,
    members: impl IntoIterator<Item = &'a NodeIdentity>,
    epoch: u64,
    replicas: usize,
    vnodes: u32,
) -> Topology {
    let mut by_name: HashMap<&str, &NodeIdentity> = HashMap::new();
    for m in members.into_iter().chain(std::iter::once(me)) {
        // Records are checked as they are decoded; this is the last guard
        // before ring tokens are built from a weight.
        if m.is_seed_placeholder() || m.check().is_err() {
            continue;
        }
        let newer = by_name.get(m.name.as_str()).is_none_or(|old| old.generation < m.generation);
        if newer {
            by_name.insert(&m.name, m);
        }
    }
    // This node is always itself, whatever stale records say.
    by_name.insert(&me.name, me);
    let nodes = by_name
        .values()
        .map(|m| NodeInfo {
            generation: m.generation,
            ..NodeInfo::new(&m.name, m.client_addr, m.gossip_addr.port(), m.weight.max(1))
        })
        .collect();
    Topology::new(epoch, nodes, &me.name, replicas, vnodes)
}

/// Other addresses announced to per tick while foca is not connected.
pub const OTHER_ANNOUNCES_PER_TICK: usize = 2;

/// Whether foca is connected (has an active member that answered this
/// identity) after `note`; `was` before it. foca starts disconnected, is
/// connected from `Active`, and not from `Idle` (no member left) or an
/// identity change (`Defunct`, `Rejoin`: messages to the old identity are
/// dropped, and foca schedules no timer until a member reaches the new one).
pub fn connected_after<T>(was: bool, note: &foca::OwnedNotification<T>) -> bool {
    use foca::OwnedNotification as N;
    match note {
        N::Active => true,
        N::Idle | N::Defunct | N::Rejoin(_) => false,
        _ => was,
    }
}

/// Where the gossip driver announces this node on one announce tick
/// (`tick` counts them). Connected: every seed that is not an active
/// member. Not connected: every seed, and up to
/// [`OTHER_ANNOUNCES_PER_TICK`] other addresses of members it knows, active
/// or down, taking turns (an announce is accepted by address, whatever
/// identity the receiver now has).
///
/// foca reaches down members itself only while connected, and after an
/// identity change it sends nothing until a member answers the new
/// identity; without the second rule two nodes that lost each other while
/// their seeds were gone, or that renewed their identities at the same
/// moment (each then addressing the other's old one), never met again.
pub fn announce_targets(
    me: SocketAddr,
    seeds: &[SocketAddr],
    active: &[SocketAddr],
    down: &[SocketAddr],
    connected: bool,
    tick: u64,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> =
        seeds.iter().copied().filter(|a| *a != me && !(connected && active.contains(a))).collect();
    out.sort();
    out.dedup();
    if !connected {
        let mut others: Vec<SocketAddr> =
            active.iter().chain(down).copied().filter(|a| *a != me && !out.contains(a)).collect();
        others.sort();
        others.dedup();
        if !others.is_empty() {
            let start = (tick as usize) % others.len();
            let take = OTHER_ANNOUNCES_PER_TICK.min(others.len());
            out.extend((0..take).map(|k| others[(start + k) % others.len()]));
        }
    }
    out
}

/// A digest of a member set (names, addresses and generations): equal on
/// every node that sees the same cluster, so tests and operators can tell
/// that nodes agree without comparing lists.
pub fn members_digest(t: &Topology) -> u64 {
    t.digest
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ClusterSettings = ClusterSettings {
        replicas: 3,
        vnodes: 256,
        write_quorum: 2,
        read_quorum: 1,
        tombstone_grace_s: 600,
        partition_available: false,
    };

    #[test]
    fn members_with_other_settings_are_refused_and_named() {
        let mut p = Vec::new();
        let other = ClusterSettings { vnodes: 128, ..SETTINGS };
        PacketKey::new("c", Some("s"), other).seal(b"x", &mut p);
        let mine = PacketKey::new("c", Some("s"), SETTINGS);
        assert_eq!(mine.open(&p), Err(Rejected::SettingsDiffer(other)));
        assert!(other.to_string().contains("--vnodes 128"));
        // The settings are under the MAC: changing them in flight fails it.
        let mut forged = p.clone();
        forged[4 + 7] ^= 1;
        assert_eq!(mine.open(&forged), Err(Rejected::BadMac));
        let mut q = Vec::new();
        PacketKey::new("c", Some("s"), SETTINGS).seal(b"x", &mut q);
        assert_eq!(mine.open(&q), Ok(&b"x"[..]));
    }

    fn id(name: &str, port: u16, generation: u64) -> NodeIdentity {
        NodeIdentity {
            name: name.to_string(),
            generation,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], port + 10000)),
            client_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
        }
    }

    #[test]
    fn sealed_packets_open_only_with_the_same_cluster_and_secret() {
        let key = PacketKey::new("prod", Some("s3cret"), SETTINGS);
        let mut packet = Vec::new();
        key.seal(b"hello", &mut packet);
        assert_eq!(key.open(&packet), Ok(&b"hello"[..]));
        assert_eq!(PacketKey::new("prod", Some("other"), SETTINGS).open(&packet), Err(Rejected::BadMac));
        assert_eq!(PacketKey::new("prod", None, SETTINGS).open(&packet), Err(Rejected::BadMac));
        assert_eq!(PacketKey::new("staging", Some("s3cret"), SETTINGS).open(&packet), Err(Rejected::BadMac));
        let mut tampered = packet.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&tampered), Err(Rejected::BadMac));
        assert_eq!(key.open(b"RCg1"), Err(Rejected::TooShort));
        assert_eq!(key.open(&[0u8; 64]), Err(Rejected::NotRingcache));
        // Without a secret the cluster name alone separates clusters.
        let mut p = Vec::new();
        PacketKey::new("a", None, SETTINGS).seal(b"x", &mut p);
        assert_eq!(PacketKey::new("b", None, SETTINGS).open(&p), Err(Rejected::BadMac));
        assert_eq!(PacketKey::new("a", None, SETTINGS).open(&p), Ok(&b"x"[..]));
    }

    #[test]
    fn newest_generation_of_a_name_counts_once() {
        let me = id("a", 1, 5);
        let members = [id("b", 2, 1), id("b", 2, 3), id("c", 3, 1), NodeIdentity::seed("127.0.0.1:9".parse().unwrap())];
        let t = topology_of(&me, &members, 1, 3, 16);
        let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        assert_eq!(t.myself().name, "a");
        // A renewed identity (new generation) changes nothing in placement,
        // but it is another table: the member may have restarted empty.
        let t2 = topology_of(&me, &[id("b", 2, 9), id("c", 3, 1)], 2, 3, 16);
        assert_ne!(members_digest(&t), members_digest(&t2));
        assert_eq!(t.table.ranges(), t2.table.ranges());
        let t3 = topology_of(&me, &[id("c", 3, 1), id("b", 2, 3)], 3, 3, 16);
        assert_eq!(members_digest(&t), members_digest(&t3), "the same members in any order");
    }

    #[test]
    fn remote_records_are_bounded() {
        assert_eq!(id("a", 1, 1).check(), Ok(()));
        assert!(NodeIdentity::seed("10.0.0.1:16379".parse().unwrap()).check().is_ok());
        let huge = NodeIdentity { weight: u32::MAX, ..id("b", 2, 1) };
        assert_eq!(huge.check(), Err("weight out of range"));
        assert!(NodeIdentity { weight: 0, ..id("b", 2, 1) }.check().is_err());
        assert!(NodeIdentity { name: "x".repeat(256), ..id("b", 2, 1) }.check().is_err());
        assert!(NodeIdentity { name: "a\nb".into(), ..id("b", 2, 1) }.check().is_err());
        assert!(NodeIdentity { client_addr: "0.0.0.0:6379".parse().unwrap(), ..id("b", 2, 1) }.check().is_err());
        assert!(NodeIdentity { gossip_addr: "224.0.0.1:16379".parse().unwrap(), ..id("b", 2, 1) }.check().is_err());
        // A record that slipped through anyway builds no tokens.
        let t = topology_of(&id("a", 1, 1), &[huge], 1, 3, 16);
        assert_eq!(t.nodes.len(), 1);
    }

    #[test]
    fn one_name_at_two_addresses_is_a_conflict() {
        let me = id("a", 1, 5);
        assert!(name_conflicts(&me, &[id("b", 2, 1), id("b", 2, 2)]).is_empty(), "same address: a renewal");
        let other_a = id("a", 7, 9);
        let c = name_conflicts(&me, std::slice::from_ref(&other_a));
        assert_eq!(c, vec![(&other_a, &me)], "this node keeps its name");
        let (b1, b2) = (id("b", 2, 1), id("b", 3, 4));
        let members = [b1.clone(), b2.clone()];
        assert_eq!(name_conflicts(&me, &members), vec![(&b1, &b2)], "the newer generation counts");
    }

    #[test]
    fn renew_bumps_the_generation_and_wins() {
        use foca::Identity;
        let a = id("a", 1, 7);
        let b = a.renew().unwrap();
        assert_eq!(b.generation, 8);
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        assert_eq!(a.addr(), b.addr());
    }

    #[test]
    fn a_disconnected_node_announces_to_every_address_it_knows_in_turn() {
        let a = |n: u8| SocketAddr::from(([10, 0, 0, n], 17000));
        let me = a(1);
        // Connected: seeds that are not members (foca reaches the rest).
        assert_eq!(announce_targets(me, &[a(2), a(3), me], &[a(3)], &[a(4)], true, 0), vec![a(2)]);
        // Not connected: every seed, then two other known addresses per
        // tick, active or down, taking turns.
        let down = [a(5), a(4), me];
        assert_eq!(announce_targets(me, &[a(2)], &[a(6)], &down, false, 0), vec![a(2), a(4), a(5)]);
        assert_eq!(announce_targets(me, &[a(2)], &[a(6)], &down, false, 1), vec![a(2), a(5), a(6)]);
        assert_eq!(announce_targets(me, &[a(2)], &[a(6)], &down, false, 2), vec![a(2), a(6), a(4)]);
        // A seed that is an active member under an old identity: still
        // announced to while not connected.
        assert_eq!(announce_targets(me, &[a(2)], &[a(2)], &[], false, 0), vec![a(2)]);
        assert_eq!(announce_targets(me, &[], &[], &[], false, 7), Vec::<SocketAddr>::new());
    }

    #[test]
    fn connected_follows_foca_notifications() {
        use foca::OwnedNotification as N;
        let id = NodeIdentity::seed(SocketAddr::from(([10, 0, 0, 1], 1)));
        assert!(connected_after(false, &N::<NodeIdentity>::Active));
        assert!(!connected_after(true, &N::<NodeIdentity>::Idle));
        assert!(!connected_after(true, &N::Rejoin(id.clone())));
        assert!(!connected_after(true, &N::<NodeIdentity>::Defunct));
        assert!(connected_after(true, &N::MemberUp(id.clone())));
        assert!(!connected_after(false, &N::MemberDown(id)));
    }
}
