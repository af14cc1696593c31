use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn get(store: &Store, key: &[u8], now: u64) -> Option<Vec<u8>> {
    store.with_key(key, now, |k| k.value().map(<[u8]>::to_vec))
}

fn set(store: &Store, key: &[u8], value: &[u8], expiry: Option<u64>, now: u64) {
    store.with_key(key, now, |k| k.set(value, expiry));
}

/// Every slot's digest computed from scratch, to check the kept ones.
fn redigest(store: &Store) -> Vec<u64> {
    let mut out = vec![0u64; usize::from(SLOT_COUNT)];
    for s in 0..SHARD_COUNT {
        let g = store.lock(s);
        for (_, e) in g.table.iter() {
            out[usize::from(key_slot(e.key()))] ^= digest_of(e.key(), e.version(), false);
        }
        for (k, t) in g.tombs.iter() {
            out[usize::from(key_slot(k))] ^= digest_of(k, t.version, true);
        }
    }
    out
}

fn recount(store: &Store) -> u64 {
    let mut total = 0;
    for s in 0..SHARD_COUNT {
        let g = store.lock(s);
        total += g.table.bucket_bytes() as u64;
        total += g.table.iter().map(|(_, e)| e.mem_cost() as u64).sum::<u64>();
        total += g.tombs.iter().map(|(k, _)| tomb_cost(k) as u64).sum::<u64>();
    }
    total
}

#[test]
fn set_get_expire() {
    let store = Store::new();
    set(&store, b"a", b"1", None, NOW);
    set(&store, b"b", b"2", Some(NOW + 1000), NOW);
    assert_eq!(get(&store, b"a", NOW), Some(b"1".to_vec()));
    assert_eq!(get(&store, b"b", NOW + 999), Some(b"2".to_vec()));
    assert_eq!(get(&store, b"b", NOW + 1000), None);
    assert_eq!(store.stats.expired_keys.load(Relaxed), 1);
    assert_eq!(store.len(), 1);
    assert_eq!(store.used_memory(), recount(&store));
}

#[test]
fn active_expiry_collects_without_access() {
    let store = Store::new();
    for i in 0..1000 {
        let key = format!("k{i}");
        let expiry = if i % 2 == 0 { Some(NOW + 10) } else { None };
        set(&store, key.as_bytes(), b"v", expiry, NOW);
    }
    assert_eq!(store.volatile_len(), 500);
    let mut total = 0;
    for _ in 0..100 {
        total += store.active_expire(NOW + 10, 1000).1;
    }
    assert_eq!(total, 500);
    assert_eq!(store.len(), 500);
    assert_eq!(store.volatile_len(), 0);
    assert_eq!(store.used_memory(), recount(&store));
}

#[test]
fn scan_returns_every_key_once_despite_growth() {
    let store = Store::new();
    for i in 0..2000 {
        set(&store, format!("k{i}").as_bytes(), b"v", None, NOW);
    }
    let mut seen = HashMap::new();
    let mut cursor = 0;
    let mut extra = 0;
    loop {
        let (next, keys) = store.scan(cursor, 10, NOW);
        for k in keys {
            *seen.entry(k).or_insert(0) += 1;
        }
        // Grow the keyspace while scanning: tables resize under the cursor.
        for _ in 0..3 {
            set(&store, format!("x{extra}").as_bytes(), b"v", None, NOW);
            extra += 1;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    for i in 0..2000 {
        assert_eq!(seen.get(format!("k{i}").as_bytes()), Some(&1), "k{i}");
    }
}

#[test]
fn multi_key_locks_in_order() {
    let store = Store::new();
    let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
    store.with_keys(keys.iter().map(Vec::as_slice), NOW, |m| {
        for k in &keys {
            m.key(k).set(b"x", None);
        }
    });
    assert_eq!(store.len(), 50);
}

fn fill(store: &Store, n: usize, ttl_every: usize) {
    for i in 0..n {
        let expiry = if ttl_every > 0 && i % ttl_every == 0 { Some(NOW + 1_000_000 + i as u64) } else { None };
        set(store, format!("key:{i:08}").as_bytes(), &[b'v'; 100], expiry, NOW + i as u64);
    }
}

#[test]
fn noeviction_refuses() {
    let store = Store::new();
    fill(&store, 100, 0);
    store.set_maxmemory(1000);
    assert_eq!(store.make_room(NOW), Err(OutOfMemory));
}

#[test]
fn every_policy_stays_under_maxmemory() {
    for policy in Policy::ALL.into_iter().filter(|p| *p != Policy::NoEviction) {
        let store = Store::new();
        store.set_policy(policy);
        store.set_maxmemory(200_000);
        let mut refused = 0;
        for i in 0..5000u64 {
            let now = NOW + i;
            if store.make_room(now).is_err() {
                refused += 1;
                continue;
            }
            // One key in ten has no expiry: 500 of them fit under maxmemory,
            // so volatile policies always find something to evict.
            let expiry = if i % 10 != 0 { Some(now + 1_000_000 + i) } else { None };
            set(&store, format!("key:{i:08}").as_bytes(), &[b'v'; 100], expiry, now);
        }
        assert_eq!(refused, 0, "{policy}");
        assert!(store.used_memory() <= 200_000 + 1000, "{policy}: {}", store.used_memory());
        assert!(store.stats.evicted_keys.load(Relaxed) > 0, "{policy}");
        assert_eq!(store.used_memory(), recount(&store), "{policy}");
        if policy.volatile_only() {
            // Only keys with an expiry were evicted: every key without one survives.
            for i in (0..5000u64).step_by(10) {
                assert!(get(&store, format!("key:{i:08}").as_bytes(), NOW + 6000).is_some(), "{policy} key {i}");
            }
        }
    }
}

#[test]
fn volatile_policy_without_volatile_keys_is_oom() {
    let store = Store::new();
    store.set_policy(Policy::VolatileLru);
    fill(&store, 100, 0);
    store.set_maxmemory(1000);
    assert_eq!(store.make_room(NOW), Err(OutOfMemory));
}

#[test]
fn lru_prefers_old_keys() {
    let store = Store::new();
    store.set_policy(Policy::AllKeysLru);
    store.set_samples(10);
    // 1000 keys written long ago, then the second half read recently.
    fill(&store, 1000, 0);
    for i in 500..1000 {
        store.with_key(format!("key:{i:08}").as_bytes(), NOW + 3_600_000, |k| k.touch());
    }
    store.set_maxmemory(store.used_memory() / 2);
    store.make_room(NOW + 3_600_000).unwrap();
    let recent_alive = (500..1000).filter(|i| get(&store, format!("key:{i:08}").as_bytes(), NOW).is_some()).count();
    let old_alive = (0..500).filter(|i| get(&store, format!("key:{i:08}").as_bytes(), NOW).is_some()).count();
    assert!(recent_alive > old_alive * 3, "recent {recent_alive} old {old_alive}");
}

#[test]
fn volatile_ttl_prefers_nearest_expiry() {
    let store = Store::new();
    store.set_policy(Policy::VolatileTtl);
    store.set_samples(10);
    for i in 0..1000u64 {
        set(&store, format!("key:{i:08}").as_bytes(), &[b'v'; 100], Some(NOW + 1_000_000 * (i + 1)), NOW);
    }
    store.set_maxmemory(store.used_memory() / 2);
    store.make_room(NOW).unwrap();
    let late_alive = (500..1000).filter(|i| get(&store, format!("key:{i:08}").as_bytes(), NOW).is_some()).count();
    let early_alive = (0..500).filter(|i| get(&store, format!("key:{i:08}").as_bytes(), NOW).is_some()).count();
    assert!(late_alive > early_alive * 3, "late {late_alive} early {early_alive}");
}

proptest! {
    /// The store behaves like a HashMap with expiry, and its memory
    /// accounting always equals a recount.
    #[test]
    fn behaves_like_a_model(ops in proptest::collection::vec((0u8..4, 0u16..200, any::<u8>(), 0u64..4), 0..800)) {
        let store = Store::new();
        let mut model: HashMap<Vec<u8>, (Vec<u8>, Option<u64>)> = HashMap::new();
        let mut now = NOW;
        for (op, k, v, dt) in ops {
            now += dt;
            let key = format!("k{k}").into_bytes();
            model.retain(|_, (_, e)| e.is_none_or(|e| e > now));
            match op {
                0 => { set(&store, &key, &[v], None, now); model.insert(key, (vec![v], None)); }
                1 => { set(&store, &key, &[v; 3], Some(now + 2), now); model.insert(key, (vec![v; 3], Some(now + 2))); }
                2 => {
                    let removed = store.with_key(&key, now, |r| r.remove()).is_some();
                    prop_assert_eq!(removed, model.remove(&key).is_some());
                }
                _ => { prop_assert_eq!(get(&store, &key, now), model.get(&key).map(|(v, _)| v.clone())); }
            }
            prop_assert_eq!(store.used_memory(), recount(&store));
        }
    }
}

/// Keys that all share one hash tag live in one shard: eviction and
/// RANDOMKEY must still find them (no false "nothing to evict").
#[test]
fn one_hash_tag_still_evicts_and_finds_random_keys() {
    for policy in [Policy::AllKeysLru, Policy::AllKeysRandom, Policy::VolatileTtl, Policy::VolatileLfu] {
        let store = Store::new();
        store.set_policy(policy);
        store.set_maxmemory(100_000);
        for i in 0..3000u64 {
            store.make_room(NOW + i).unwrap_or_else(|_| panic!("{policy}: OOM at key {i}"));
            set(&store, format!("{{tag}}:{i}").as_bytes(), &[b'v'; 100], Some(NOW + 1_000_000 + i), NOW + i);
        }
        assert!(store.used_memory() <= 101_000, "{policy}: {}", store.used_memory());
    }
    let store = Store::new();
    set(&store, b"{tag}:only", b"v", None, NOW);
    for _ in 0..200 {
        assert_eq!(store.random_key(NOW), Some(b"{tag}:only".to_vec()));
    }
}

#[test]
fn scan_cursors_stay_below_2_pow_63() {
    let store = Store::new();
    for i in 0..5000 {
        set(&store, format!("k{i}").as_bytes(), b"v", None, NOW);
    }
    let mut cursor = 0;
    let mut seen = 0;
    loop {
        let (next, keys) = store.scan(cursor, 7, NOW);
        seen += keys.len();
        assert!(next < 1 << 56, "cursor {next}");
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen, 5000);
}

#[test]
fn versions_carry_the_node_id_and_grow() {
    let store = Store::new();
    store.set_node_id(0xabc);
    set(&store, b"k", b"1", None, NOW);
    let v1 = store.with_key(b"k", NOW, |k| k.version());
    // Same millisecond: the logical counter moves it forward.
    set(&store, b"k", b"2", None, NOW);
    let v2 = store.with_key(b"k", NOW, |k| k.version());
    assert!(v2 > v1);
    assert_eq!(version_parts(v1), (NOW, 0, 0xabc));
    assert_eq!(version_parts(v2), (NOW, 1, 0xabc));
    // A clock that went back still gives a larger version.
    set(&store, b"k", b"3", None, NOW - 5000);
    assert!(store.with_key(b"k", NOW, |k| k.version()) > v2);
}

#[test]
fn apply_keeps_the_newer_version() {
    let store = Store::new();
    let put = |v: &'static [u8]| Incoming::Put { value: v, expiry_ms: None };
    let v = |ms: u64, node: u64| (ms << 22) | node;
    assert!(store.with_key(b"k", NOW, |k| k.apply(v(NOW, 1), put(b"a"))));
    assert!(!store.with_key(b"k", NOW, |k| k.apply(v(NOW - 1, 2), put(b"old"))));
    assert!(!store.with_key(b"k", NOW, |k| k.apply(v(NOW, 1), put(b"same"))));
    assert_eq!(get(&store, b"k", NOW).as_deref(), Some(&b"a"[..]));
    // A delete leaves a tombstone that an older put cannot get past.
    assert!(store.with_key(b"k", NOW, |k| k.apply(v(NOW + 1, 1), Incoming::Delete)));
    assert_eq!(get(&store, b"k", NOW), None);
    assert!(!store.with_key(b"k", NOW, |k| k.apply(v(NOW, 3), put(b"zombie"))));
    assert_eq!(get(&store, b"k", NOW), None);
    assert_eq!(store.tombstones(), 1);
    // The local clock moved past what it applied: a local write wins.
    set(&store, b"k", b"local", None, NOW - 10);
    assert!(store.with_key(b"k", NOW, |k| k.version()) > v(NOW + 1, 1));
    assert_eq!(store.tombstones(), 0);
    assert_eq!(store.used_memory(), recount(&store));
}

#[test]
fn deletes_leave_tombstones_until_the_grace_period_ends() {
    let store = Store::new();
    store.set_tombstone_grace_ms(1000);
    set(&store, b"k", b"1", None, NOW);
    let removed = store.with_key(b"k", NOW, |k| k.remove().is_some());
    assert!(removed);
    let tomb = store.with_key(b"k", NOW, |k| k.tombstone());
    assert!(tomb.is_some_and(|t| t > 0));
    assert_eq!(store.len(), 0);
    assert_eq!(store.gc_tombstones(NOW + 999), 0);
    assert_eq!(store.gc_tombstones(NOW + 1000), 1);
    assert_eq!(store.with_key(b"k", NOW, |k| k.tombstone()), None);
}

#[test]
fn chores_follow_expiring_keys_and_tombstones() {
    let store = Store::new();
    store.set_tombstone_grace_ms(1000);
    set(&store, b"plain", b"1", None, NOW);
    assert!(!store.has_chores(), "plain keys leave nothing to do");
    set(&store, b"ttl", b"1", Some(NOW + 10), NOW);
    assert!(store.has_chores());
    let expired: usize = (0..SHARD_COUNT).map(|_| store.active_expire(NOW + 10, 1000).1).sum();
    assert_eq!(expired, 1);
    assert!(!store.has_chores(), "the expired key is gone");
    assert!(store.with_key(b"plain", NOW, |k| k.remove().is_some()));
    assert!(store.has_chores(), "the delete's tombstone waits for collection");
    assert_eq!(store.gc_tombstones(NOW + 1000), 1);
    assert!(!store.has_chores());
    set(&store, b"ttl", b"1", Some(NOW + 10), NOW);
    store.flush_all(NOW, true);
    assert!(store.has_chores(), "the flush waits to be shared");
    assert!(store.take_flush_to_share() > 0);
    assert!(!store.has_chores(), "the flush dropped the expiring key");
}

#[test]
fn tombstones_are_bounded_per_shard() {
    let store = Store::new();
    // Keys of one hash tag share a shard.
    for i in 0..(TOMBS_PER_SHARD_MAX + 10) {
        let key = format!("{{t}}{i}");
        store.with_key(key.as_bytes(), NOW + i as u64, |k| k.apply(((NOW + i as u64) << 22) | 1, Incoming::Delete));
    }
    assert_eq!(store.tombstones(), TOMBS_PER_SHARD_MAX);
    assert_eq!(store.stats.tombstones_dropped.load(Relaxed), 10);
    // The oldest went first.
    assert_eq!(store.with_key(b"{t}0", NOW, |k| k.tombstone()), None);
    assert_eq!(store.used_memory(), recount(&store), "tombstones count in used_memory");
    // Its delete is not forgotten: a copy at or below the dropped
    // tombstones' versions is refused while the key is absent here...
    let put = Incoming::Put { value: b"zombie", expiry_ms: None };
    assert!(!store.with_key(b"{t}0", NOW, |k| k.apply((NOW << 22) | 2, put)));
    assert_eq!(store.stats.horizon_refusals.load(Relaxed), 1);
    assert_eq!(get(&store, b"{t}0", NOW), None);
    // ...a newer write is taken, and a slot dropped here starts afresh.
    assert!(store.with_key(b"{t}0", NOW, |k| k.apply(((NOW + 10) << 22) | 2, put)));
    store.drop_slot(key_slot(b"{t}0"));
    assert!(store.with_key(b"{t}0", NOW, |k| k.apply((NOW << 22) | 2, put)));
    assert_eq!(store.used_memory(), recount(&store));
}

#[test]
fn a_delete_of_an_absent_key_leaves_a_tombstone() {
    let store = Store::new();
    // An evicted or never-seen key: a co-owner may still hold it.
    assert!(store.with_key(b"gone", NOW, |k| k.delete()).is_none());
    let tomb = store.with_key(b"gone", NOW, |k| k.tombstone());
    assert!(tomb.is_some_and(|t| version_parts(t).0 == NOW));
    let put = Incoming::Put { value: b"old", expiry_ms: None };
    assert!(!store.with_key(b"gone", NOW, |k| k.apply(((NOW - 5) << 22) | 7, put)));
    assert_eq!(store.used_memory(), recount(&store));
    // A standalone node keeps none.
    let alone = Store::new();
    alone.set_keep_tombstones(false);
    alone.with_key(b"gone", NOW, |k| k.delete());
    assert_eq!(alone.tombstones(), 0);
}

#[test]
fn an_expired_copy_of_an_absent_key_leaves_nothing() {
    let store = Store::new();
    let expired = Incoming::Put { value: b"v", expiry_ms: Some(NOW - 1) };
    assert!(store.with_key(b"k", NOW, |k| k.apply((NOW << 22) | 1, expired)));
    assert_eq!((store.len(), store.tombstones()), (0, 0));
    // Over an older value: the value goes and a tombstone keeps it gone.
    // (The local write observed the first version, so the second comes later.)
    set(&store, b"k", b"old", None, NOW - 100);
    assert!(store.with_key(b"k", NOW, |k| k.apply(((NOW + 1) << 22) | 1, expired)));
    assert_eq!((store.len(), store.tombstones()), (0, 1));
    assert_eq!(store.used_memory(), recount(&store));
}

#[test]
fn filtered_views_see_only_their_slots() {
    let store = Store::new();
    for i in 0..200 {
        set(&store, format!("key:{i}").as_bytes(), b"v", None, NOW);
    }
    let keep = |slot: u16| slot < 8192;
    let want = (0..200).filter(|i| keep(key_slot(format!("key:{i}").as_bytes()))).count();
    assert_eq!(store.count_keys_where(keep), want);
    assert_eq!(store.keys_where(b"*", NOW, keep).len(), want);
    let mut cursor = 0;
    let mut seen = 0;
    loop {
        let (next, keys) = store.scan_where(cursor, 10, NOW, keep);
        seen += keys.len();
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen, want);
}

#[test]
fn slots_can_be_visited_and_dropped() {
    let store = Store::new();
    store.set_tombstone_grace_ms(60_000);
    // A third of the keys share one slot through a hash tag.
    let keys: Vec<String> = (0..3000).map(|i| if i % 3 == 0 { format!("{{t}}{i}") } else { format!("k{i}") }).collect();
    for k in &keys {
        set(&store, k.as_bytes(), b"value", None, NOW);
    }
    let slot = key_slot(keys[0].as_bytes());
    let in_slot: Vec<&String> = keys.iter().filter(|k| key_slot(k.as_bytes()) == slot).collect();
    store.with_key(in_slot[0].as_bytes(), NOW, |k| k.remove());
    let (mut live, mut dead) = (0, 0);
    store.visit_slot(
        slot,
        NOW,
        |e| {
            assert_eq!(key_slot(e.key()), slot);
            live += 1;
        },
        |k, v| {
            assert_eq!(key_slot(k), slot);
            assert!(v > 0);
            dead += 1;
        },
    );
    assert_eq!((live, dead), (in_slot.len() - 1, 1));
    assert_eq!(store.drop_slot(slot), in_slot.len() - 1);
    assert_eq!(store.count_keys_in_slot(slot), 0);
    assert_eq!(store.len(), keys.len() - in_slot.len());
    assert_eq!(store.tombstones(), 0);
    assert_eq!(store.used_memory(), recount(&store));
}

#[test]
fn slot_digests_depend_on_contents_not_order() {
    let (a, b) = (Store::new(), Store::new());
    let keys: Vec<String> = (0..200).map(|i| format!("{{d}}{i}")).collect();
    let slot = key_slot(keys[0].as_bytes());
    let put = |s: &Store, k: &str, v: u64| {
        s.with_key(k.as_bytes(), NOW, |r| r.apply(v, Incoming::Put { value: b"x", expiry_ms: None }))
    };
    for (i, k) in keys.iter().enumerate() {
        put(&a, k, (i as u64 + 1) << 22);
    }
    for (i, k) in keys.iter().enumerate().rev() {
        put(&b, k, (i as u64 + 1) << 22);
    }
    let slots: Vec<u16> =
        (0..SLOTS_PER_SHARD).map(|i| (i * SHARD_COUNT + usize::from(slot) % SHARD_COUNT) as u16).collect();
    assert_eq!(a.slot_digests(&slots), b.slot_digests(&slots));
    // A newer version of one key, or a tombstone instead of a value, differs.
    put(&b, &keys[3], 1 << 40);
    assert_ne!(a.slot_digests(&slots), b.slot_digests(&slots));
    put(&a, &keys[3], 1 << 40);
    assert_eq!(a.slot_digests(&slots), b.slot_digests(&slots));
    a.with_key(keys[4].as_bytes(), NOW, |r| r.apply(1 << 41, Incoming::Delete));
    assert_ne!(a.slot_digests(&slots), b.slot_digests(&slots));
    b.with_key(keys[4].as_bytes(), NOW, |r| r.apply(1 << 41, Incoming::Delete));
    assert_eq!(a.slot_digests(&slots), b.slot_digests(&slots));
}

proptest! {
    /// The digests kept on every write equal the ones computed from the
    /// contents, whatever mix of writes, deletes, expiry, replicated
    /// states, tombstone collection, slot drops and flushes came before.
    #[test]
    fn kept_slot_digests_match_the_contents(ops in proptest::collection::vec((0u8..9, 0u16..40, 0u64..50), 1..300)) {
        let store = Store::new();
        store.set_tombstone_grace_ms(20);
        let mut now = NOW;
        for (op, k, n) in ops {
            let key = format!("{{t{}}}k{k}", k % 3);
            let key = key.as_bytes();
            now += n;
            match op {
                0 => set(&store, key, b"v", None, now),
                1 => set(&store, key, b"w", Some(now + n), now),
                2 => { store.with_key(key, now, |r| r.delete()); }
                3 => { store.with_key(key, now, |r| r.set_expiry(Some(now + 1 + n))); }
                4 => { store.with_key(key, now, |r| r.apply((now + n) << 22, Incoming::Put { value: b"r", expiry_ms: None })); }
                5 => { store.with_key(key, now, |r| r.apply((now + n) << 22, Incoming::Delete)); }
                6 => { store.gc_tombstones(now); store.active_expire(now, 1000); }
                7 => { store.drop_slot(key_slot(key)); }
                _ if n == 0 => { store.flush(); }
                _ => { store.with_key(key, now, |r| r.touch()); }
            }
            prop_assert_eq!(store.all_slot_digests(), redigest(&store));
            prop_assert_eq!(store.used_memory(), recount(&store));
        }
    }
}

#[test]
fn evictions_are_queued_for_the_other_owners_and_followed_by_version() {
    let store = Store::new();
    store.set_maxmemory(64 * 1024);
    store.set_policy(Policy::AllKeysRandom);
    for i in 0..2000 {
        store.make_room(NOW).unwrap();
        set(&store, format!("k{i}").as_bytes(), &[b'x'; 100], None, NOW);
    }
    let evicted = store.take_evictions(usize::MAX);
    assert!(!evicted.is_empty());
    assert_eq!(evicted.len() as u64, store.stats.evicted_keys.load(Relaxed));
    assert!(evicted.iter().all(|(k, _)| store.with_key(k, NOW, |k| k.version()) == 0), "evicted means gone here");
    assert!(store.take_evictions(usize::MAX).is_empty(), "taken once");
    // Another owner's eviction drops a copy that is not newer, and leaves
    // no tombstone: a later copy may come back.
    let other = Store::new();
    let (key, version) = &evicted[0];
    assert!(other.with_key(key, NOW, |k| k.apply(*version, Incoming::Put { value: b"v", expiry_ms: None })));
    assert!(!other.with_key(key, NOW, |k| k.drop_evicted(version - 1)), "a newer copy stays");
    assert!(other.with_key(key, NOW, |k| k.drop_evicted(*version)));
    assert_eq!((other.len(), other.tombstones()), (0, 0));
    assert_eq!(other.used_memory(), recount(&other));
    // A lone node (no tombstones kept) queues nothing.
    let lone = Store::new();
    lone.set_keep_tombstones(false);
    lone.set_maxmemory(64 * 1024);
    lone.set_policy(Policy::AllKeysRandom);
    for i in 0..2000 {
        lone.make_room(NOW).unwrap();
        set(&lone, format!("k{i}").as_bytes(), &[b'x'; 100], None, NOW);
    }
    assert!(lone.take_evictions(usize::MAX).is_empty());
}

#[test]
fn a_flush_epoch_removes_and_refuses_older_states_only() {
    let store = Store::new();
    set(&store, b"old", b"v", None, NOW);
    let old_version = store.with_key(b"old", NOW, |k| k.version());
    store.flush_all(NOW, true);
    let epoch = store.flushed_before();
    assert!(epoch > old_version);
    assert_eq!(store.take_flush_to_share(), epoch);
    assert_eq!(store.take_flush_to_share(), 0, "taken once");
    // A copy from before the flush (a member that missed it) is refused;
    // a write after it is newer than the epoch and stays.
    assert!(!store.with_key(b"old", NOW, |k| k.apply(old_version, Incoming::Put { value: b"v", expiry_ms: None })));
    assert_eq!(store.stats.flush_refusals.load(Relaxed), 1);
    set(&store, b"new", b"v", None, NOW);
    assert!(store.with_key(b"new", NOW, |k| k.version()) > epoch);
    // The member that missed it: keys older than the epoch go, newer stay.
    let missed = Store::new();
    assert!(missed.with_key(b"old", NOW, |k| k.apply(old_version, Incoming::Put { value: b"v", expiry_ms: None })));
    assert!(missed.with_key(b"newer", NOW, |k| k.apply(epoch + 1, Incoming::Put { value: b"v", expiry_ms: None })));
    assert_eq!(missed.flush_before(epoch), 1);
    assert_eq!(missed.len(), 1);
    assert_eq!(missed.flush_before(epoch), 0, "once");
    assert_eq!(missed.used_memory(), recount(&missed));
    assert_eq!(missed.slot_digests(&[key_slot(b"old")]), redigest(&missed)[usize::from(key_slot(b"old"))..][..1]);
    // A shard clock moved past the epoch: later local writes are newer.
    set(&missed, b"later", b"v", None, NOW - 1000);
    assert!(missed.with_key(b"later", NOW, |k| k.version()) > epoch);
    // A lone node keeps no epoch.
    let lone = Store::new();
    lone.set_keep_tombstones(false);
    lone.flush_all(NOW, true);
    assert_eq!((lone.flushed_before(), lone.take_flush_to_share()), (0, 0));
}
