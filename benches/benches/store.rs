//! Store micro-benchmarks: SET (overwrite), GET hit, GET miss on a keyspace
//! of 1,000,000 keys, and SET/GET from two threads at once on one store.
//!
//! Keys are redis-benchmark's `key:%012d` (16 bytes), values 100 bytes, and
//! keys are visited in a pseudo-random order, as `redis-benchmark -r 1000000`
//! does, so the hash table is not walked in a cache-friendly order.
//!
//! Run: `cargo bench -p ringcache-benches --bench store`

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcache_server::store::Store;

/// Keys loaded before measuring.
const KEYS: u64 = 1_000_000;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
/// A fixed "now" (unix ms); nothing here expires.
const NOW_MS: u64 = 1_700_000_000_000;

/// Writes redis-benchmark's key number `n` (`key:%012d`) into `buf`. Keys
/// are made on the fly, as a request would bring them in a hot read buffer:
/// a table of a million keys would add a cache miss of its own to every
/// operation.
#[inline]
fn key(n: u64, buf: &mut [u8; KEY_LEN]) -> &[u8] {
    buf[..4].copy_from_slice(b"key:");
    let mut n = n;
    for d in buf[4..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf
}

/// xorshift64*: a cheap pseudo-random key order.
struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn loaded_store(value: &[u8]) -> Store {
    let store = Store::new();
    let mut buf = [0; KEY_LEN];
    for n in 0..KEYS {
        store.with_key(key(n, &mut buf), NOW_MS, |k| k.set(value, None));
    }
    assert_eq!(store.len(), KEYS as usize);
    store
}

#[inline]
fn set(store: &Store, key: &[u8], value: &[u8]) {
    store.with_key(key, NOW_MS, |k| k.set(value, None));
}

/// GET as the command would do it, minus encoding: look up and read the value.
#[inline]
fn get(store: &Store, key: &[u8]) -> usize {
    store.with_key(key, NOW_MS, |k| k.value().map_or(0, |v| black_box(v).len()))
}

fn single_thread(c: &mut Criterion) {
    let value = vec![b'x'; VALUE_LEN];
    let store = loaded_store(&value);
    let mut buf = [0; KEY_LEN];

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("set_overwrite_100b", |b| {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        b.iter(|| set(&store, key(rng.next() % KEYS, &mut buf), black_box(&value)));
    });
    g.bench_function("get_hit", |b| {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        b.iter(|| {
            let n = get(&store, key(rng.next() % KEYS, &mut buf));
            debug_assert_eq!(n, VALUE_LEN);
            n
        });
    });
    // Same length and format as the loaded keys, none of them loaded.
    g.bench_function("get_miss", |b| {
        let mut rng = Rng(0xFEDC_BA98_7654_3210);
        b.iter(|| {
            let n = get(&store, key(KEYS + rng.next() % KEYS, &mut buf));
            debug_assert_eq!(n, 0);
            n
        });
    });
    // EXPIRE on an existing key: the entry is rebuilt with the new expiry
    // (changing whether or when a key expires reallocates it).
    g.bench_function("expire_existing", |b| {
        let mut rng = Rng(0x5555_AAAA_5555_AAAA);
        b.iter(|| {
            let r = rng.next();
            store.with_key(key(r % KEYS, &mut buf), NOW_MS, |k| k.set_expiry(Some(NOW_MS + 3_600_000 + r % 1000)))
        });
    });
    // One pass of the active expiry cycle over 8192 buckets (what the node
    // runs every 100 ms), on a keyspace where many keys carry a TTL and
    // none has expired: the cost of looking.
    g.bench_function("active_expire_pass_8192_buckets", |b| {
        b.iter(|| black_box(store.active_expire(NOW_MS, 8192)));
    });
    // The cost of making the key and picking it, to subtract from the above.
    g.bench_function("key_generation_only", |b| {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        b.iter(|| black_box(key(rng.next() % KEYS, &mut buf)).len());
    });
    g.finish();
    assert_eq!(store.len(), KEYS as usize);
}

/// Runs `a` and `b` on two threads, `iters` operations each, started
/// together; returns the wall time until both are done.
fn two_threads(iters: u64, a: impl Fn(u64) + Sync, b: impl Fn(u64) + Sync) -> Duration {
    let start = Barrier::new(3);
    thread::scope(|s| {
        let ha = s.spawn(|| {
            start.wait();
            a(iters);
        });
        let hb = s.spawn(|| {
            start.wait();
            b(iters);
        });
        start.wait();
        let t = Instant::now();
        ha.join().expect("thread a");
        hb.join().expect("thread b");
        t.elapsed()
    })
}

fn contention(c: &mut Criterion) {
    let value = vec![b'x'; VALUE_LEN];
    let store = Arc::new(loaded_store(&value));
    let hot: &[u8] = b"key:000000000042";

    let mut g = c.benchmark_group("store_2_threads");
    // One iteration is one operation on each thread: throughput is the total.
    g.throughput(Throughput::Elements(2));

    // Random keys over 256 shards: the threads rarely want the same lock.
    g.bench_function("set_and_get_random_keys", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                |n| {
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
                    let mut buf = [0; KEY_LEN];
                    for _ in 0..n {
                        set(&store, key(rng.next() % KEYS, &mut buf), &value);
                    }
                },
                |n| {
                    let mut rng = Rng(0x0123_4567_89AB_CDEF);
                    let mut buf = [0; KEY_LEN];
                    for _ in 0..n {
                        black_box(get(&store, key(rng.next() % KEYS, &mut buf)));
                    }
                },
            )
        });
    });
    // One hot key: both threads fight over one shard lock and cache line.
    g.bench_function("set_and_get_one_key", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                |n| {
                    for _ in 0..n {
                        set(&store, hot, &value);
                    }
                },
                |n| {
                    for _ in 0..n {
                        black_box(get(&store, hot));
                    }
                },
            )
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = ringcache_benches::criterion_config();
    targets = single_thread, contention
}
criterion_main!(benches);
