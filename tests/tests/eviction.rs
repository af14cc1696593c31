//! maxmemory under every policy: a write flood far larger than the limit
//! keeps the server's memory bounded, evicts the kind of key the policy
//! names, and noeviction answers OOM; and a 3-node cluster at maxmemory
//! stays bounded and settles.

use std::io::Write;

use ringcache_protocol::Frame;
use ringcache_tests::reply::*;
use ringcache_tests::{Raw, Server, rss_kb};

const VALUE_LEN: usize = 1000;
const KEYS: usize = 40_000; // ~44 MB of entries against a 4 MB limit
const BATCH: usize = 500;

fn info_field(c: &mut Raw, field: &str) -> u64 {
    let Frame::Bulk(text) = c.cmd(&["INFO", "everything"]) else { panic!("INFO") };
    let text = String::from_utf8_lossy(&text).into_owned();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("{field} in INFO"));
    line.split(':').nth(1).unwrap().trim().parse().unwrap()
}

/// Writes keys `from..to` in pipelined batches; keys with `ttl(i)` get an
/// expiry (seconds). Returns how many writes were refused with OOM.
fn flood(
    c: &mut Raw,
    from: usize,
    to: usize,
    ttl: impl Fn(usize) -> Option<u64>,
    mut between: impl FnMut(&mut Raw),
) -> usize {
    let value = "x".repeat(VALUE_LEN);
    let mut refused = 0;
    let mut i = from;
    while i < to {
        let end = (i + BATCH).min(to);
        let mut wire = Vec::new();
        for k in i..end {
            let key = format!("key:{k:08}");
            match ttl(k) {
                Some(t) => {
                    let t = t.to_string();
                    write!(
                        wire,
                        "*5\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${VALUE_LEN}\r\n{value}\r\n$2\r\nEX\r\n${}\r\n{t}\r\n",
                        key.len(),
                        t.len()
                    )
                    .unwrap()
                }
                None => {
                    write!(wire, "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${VALUE_LEN}\r\n{value}\r\n", key.len()).unwrap()
                }
            }
        }
        c.send(&wire);
        for _ in i..end {
            match c.read() {
                Frame::Simple(_) => {}
                Frame::Error(e) if e.starts_with(b"OOM") => refused += 1,
                other => panic!("unexpected reply {other:?}"),
            }
        }
        between(c);
        i = end;
    }
    refused
}

fn exists(c: &mut Raw, k: usize) -> bool {
    c.cmd(&["EXISTS", &format!("key:{k:08}")]) == int(1)
}

fn start(policy: &str) -> (Server, Raw) {
    let s = Server::start(&["--maxmemory", "4mb", "--maxmemory-policy", policy]);
    let c = s.raw();
    (s, c)
}

fn assert_bounded(s: &Server, c: &mut Raw, policy: &str) {
    let used = info_field(c, "used_memory");
    assert!(used <= 4 * 1024 * 1024 + 64 * 1024, "{policy}: used_memory {used}");
    assert!(info_field(c, "evicted_keys") > 0, "{policy}: nothing evicted");
    // 44 MB were written; the process must stay far below that.
    let rss = rss_kb(s.pid());
    assert!(rss < 40 * 1024, "{policy}: RSS {rss} kB");
}

#[test]
fn noeviction_answers_oom_and_keeps_serving_reads() {
    let (_s, mut c) = start("noeviction");
    let refused = flood(&mut c, 0, 10_000, |_| None, |_| {});
    assert!(refused > 0, "no OOM under noeviction");
    assert!(exists(&mut c, 0), "noeviction lost a key");
    assert_eq!(c.cmd(&["SET", "one-more", "v"]), err("OOM command not allowed when used memory > 'maxmemory'."));
    assert_eq!(info_field(&mut c, "evicted_keys"), 0);
    // Reads and deletes still work at the limit.
    assert_eq!(c.cmd(&["STRLEN", "key:00000000"]), int(VALUE_LEN as i64));
    assert_eq!(c.cmd(&["DEL", "key:00000000"]), int(1));
}

#[test]
fn allkeys_random_stays_bounded() {
    let (s, mut c) = start("allkeys-random");
    assert_eq!(flood(&mut c, 0, KEYS, |_| None, |_| {}), 0);
    assert_bounded(&s, &mut c, "allkeys-random");
}

#[test]
fn allkeys_lru_keeps_recently_used_keys() {
    let (s, mut c) = start("allkeys-lru");
    // Keys 0..100 are read between every batch: they stay recently used.
    let hot = 0..100;
    let touch = |c: &mut Raw| {
        for k in hot.clone() {
            c.cmd(&["GET", &format!("key:{k:08}")]);
        }
    };
    assert_eq!(flood(&mut c, 0, KEYS, |_| None, touch), 0);
    assert_bounded(&s, &mut c, "allkeys-lru");
    // Sampled LRU is approximate, and a flood this fast writes many keys
    // within one clock tick of the hot keys' last read (ties are broken at
    // random), so a few hot keys may go; what must hold is the contrast:
    // hot keys nearly all survive, old cold keys nearly all go (about 9% of
    // all keys written fit in memory).
    let hot_alive = hot.clone().filter(|&k| exists(&mut c, k)).count();
    let cold_alive = (1000..2000).filter(|&k| exists(&mut c, k)).count();
    assert!(hot_alive >= 80, "only {hot_alive}/100 hot keys survived");
    assert!(cold_alive < 50, "{cold_alive}/1000 old cold keys survived");
}

#[test]
fn allkeys_lfu_keeps_frequently_used_keys() {
    let (s, mut c) = start("allkeys-lfu");
    let hot = 0..100;
    let touch = |c: &mut Raw| {
        for k in hot.clone() {
            c.cmd(&["GET", &format!("key:{k:08}")]);
        }
    };
    assert_eq!(flood(&mut c, 0, KEYS, |_| None, touch), 0);
    assert_bounded(&s, &mut c, "allkeys-lfu");
    let hot_alive = hot.clone().filter(|&k| exists(&mut c, k)).count();
    assert!(hot_alive >= 90, "only {hot_alive}/100 hot keys survived");
}

/// Volatile policies evict only keys with a TTL: every key without one
/// survives. One key in twenty has no TTL (2000 keys × ~1 KB fit in 4 MB).
fn volatile_policy(policy: &str) -> (Server, Raw) {
    let (s, mut c) = start(policy);
    let refused = flood(&mut c, 0, KEYS, |k| (k % 20 != 0).then_some(3600 + k as u64), |_| {});
    assert_eq!(refused, 0, "{policy}");
    assert_bounded(&s, &mut c, policy);
    for k in (0..KEYS).step_by(20) {
        assert!(exists(&mut c, k), "{policy} evicted key {k}, which has no TTL");
    }
    (s, c)
}

#[test]
fn volatile_lru_spares_persistent_keys() {
    volatile_policy("volatile-lru");
}

#[test]
fn volatile_lfu_spares_persistent_keys() {
    volatile_policy("volatile-lfu");
}

#[test]
fn volatile_random_spares_persistent_keys() {
    volatile_policy("volatile-random");
}

#[test]
fn volatile_ttl_evicts_the_nearest_expiry_first() {
    let (_s, mut c) = volatile_policy("volatile-ttl");
    // TTLs grow with the key number: the survivors with a TTL should be the
    // late ones. Compare the first and the last thousand keys with a TTL.
    let early = (1..10_000).filter(|k| k % 20 != 0).filter(|&k| exists(&mut c, k)).count();
    let late = (KEYS - 10_000..KEYS).filter(|k| k % 20 != 0).filter(|&k| exists(&mut c, k)).count();
    assert!(late > early * 3, "late {late} early {early}");
}

#[test]
fn volatile_policy_without_volatile_keys_is_oom() {
    let (_s, mut c) = start("volatile-lru");
    assert!(flood(&mut c, 0, 10_000, |_| None, |_| {}) > 0);
}

#[test]
fn config_set_maxmemory_evicts_at_once() {
    let s = Server::start(&["--maxmemory-policy", "allkeys-random"]);
    let mut c = s.raw();
    assert_eq!(flood(&mut c, 0, 8_000, |_| None, |_| {}), 0);
    assert_eq!(c.cmd(&["DBSIZE"]), int(8_000));
    assert_eq!(c.cmd(&["CONFIG", "SET", "maxmemory", "2mb"]), ok());
    assert!(info_field(&mut c, "used_memory") <= 2 * 1024 * 1024 + 64 * 1024);
    assert_eq!(c.cmd(&["CONFIG", "GET", "maxmemory"]), bulks(&["maxmemory", "2097152"]));
}

/// Issue 16 item 3, measured: 3 nodes (every node owns every key) at an
/// 8 MB maxmemory under allkeys-lru take a flood five times larger through
/// one node, plus deletes. Every node stays within maxmemory, no deleted
/// key is live anywhere afterwards, and once the flood stops anti-entropy
/// repairs reach a steady state instead of re-copying evicted keys for
/// ever. Prints the figures TESTING.md records.
#[test]
fn a_cluster_at_maxmemory_stays_bounded_and_settles() {
    const MAX: u64 = 8 * 1024 * 1024;
    let c = ringcache_tests::Cluster::start(3, &["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru"]);
    c.wait_converged(3);
    let rss_before: Vec<u64> = (0..3).map(|i| rss_kb(c.node(i).pid())).collect();
    let mut r = c.node(0).raw();
    let retry_flood = |r: &mut Raw, from: usize, to: usize| {
        for k in from..to {
            let key = format!("key:{k:08}");
            c.eventually(&format!("SET {key}"), || r.cmd(&["SET", key.as_str(), &"x".repeat(VALUE_LEN)]) == ok());
        }
    };
    retry_flood(&mut r, 0, 40_000);
    // Deletes of keys written early (most evicted somewhere by now) and late.
    let deleted: Vec<usize> = (0..40_000).step_by(97).collect();
    for &k in &deleted {
        let key = format!("key:{k:08}");
        c.eventually(&format!("DEL {key}"), || matches!(r.cmd(&["DEL", key.as_str()]), Frame::Integer(_)));
    }
    let field = |i: usize, f: &str| -> u64 {
        ringcache_tests::info_field(c.node(i), "everything", f).parse().unwrap_or_else(|_| panic!("{f}"))
    };
    let repaired = || -> u64 { (0..3).map(|i| field(i, "antientropy_keys_repaired")).sum() };
    // Steady state: two 5 s windows after the flood, repairs per window.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let a = repaired();
    std::thread::sleep(std::time::Duration::from_secs(5));
    let b = repaired();
    std::thread::sleep(std::time::Duration::from_secs(5));
    let d = repaired();
    let used: Vec<u64> = (0..3).map(|i| field(i, "used_memory")).collect();
    let rss: Vec<u64> = (0..3).map(|i| rss_kb(c.node(i).pid())).collect();
    let evicted: Vec<u64> = (0..3).map(|i| field(i, "evicted_keys")).collect();
    let live_deleted: usize = deleted
        .iter()
        .map(|k| format!("key:{k:08}"))
        .filter(|key| {
            (0..3)
                .any(|i| matches!(c.key_state(i, key), ringcache_server::cluster::replication::ReadState::Live { .. }))
        })
        .count();
    println!(
        "cluster at maxmemory: used {used:?} (max {MAX}), RSS kB {rss:?} (before {rss_before:?}), evicted {evicted:?}, \
         repairs in the 5 s windows after the flood: {} then {}, deleted keys live: {live_deleted} of {}",
        b - a,
        d - b,
        deleted.len()
    );
    assert!(used.iter().all(|&u| u <= MAX + MAX / 64), "used_memory {used:?}");
    for i in 0..3 {
        let grown = rss[i].saturating_sub(rss_before[i]) * 1024;
        assert!(grown <= MAX + MAX * 15 / 100, "node {i} RSS grew {grown} bytes: more than maxmemory + 15 %");
    }
    assert_eq!(live_deleted, 0, "deleted keys came back");
    // Before evictions were passed on (RC.EVICT), owners re-copied each
    // other's evicted keys: 1569 then 1104 repairs in these windows.
    assert!(d - b <= 100, "anti-entropy still repairing {} keys per 5 s after the flood", d - b);
}
