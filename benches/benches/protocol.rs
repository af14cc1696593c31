//! Protocol micro-benchmarks: the request parser on a pipeline, the reply
//! decoder, the bulk encoder and the key → slot function.
//!
//! Run: `cargo bench -p ringcache-benches --bench protocol`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcache_protocol::{Limits, RequestParser, decode_frame, encode, key_slot};

/// Requests per pipeline, as `redis-benchmark -P 16`.
const PIPELINE: usize = 16;
/// Value size, as `redis-benchmark -d 100`.
const VALUE_LEN: usize = 100;

/// A key in redis-benchmark's `-r` format: `key:%012d` (16 bytes).
fn bench_key(n: u64) -> Vec<u8> {
    format!("key:{n:012}").into_bytes()
}

fn value() -> Vec<u8> {
    vec![b'x'; VALUE_LEN]
}

/// `PIPELINE` requests encoded as a client sends them.
fn pipeline(args_of: impl Fn(u64) -> Vec<Vec<u8>>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for i in 0..PIPELINE as u64 {
        encode::command(&mut buf, &args_of(i * 7919 + 123_456));
    }
    buf.to_vec()
}

fn set_pipeline() -> Vec<u8> {
    pipeline(|n| vec![b"SET".to_vec(), bench_key(n), value()])
}

fn get_pipeline() -> Vec<u8> {
    pipeline(|n| vec![b"GET".to_vec(), bench_key(n)])
}

/// What a connection does with the bytes of one read: parse every complete
/// request, look at its arguments, then drop the consumed bytes. Returns the
/// number of requests and a checksum so nothing is optimised away.
fn drain(parser: &mut RequestParser, buf: &mut BytesMut, limits: &Limits) -> (usize, usize) {
    let mut n = 0;
    let mut sum = 0;
    while parser.parse(buf, limits, true).expect("valid request") {
        let args = parser.args(buf);
        sum += args.len() + args.get(1).len() + args.get(args.len() - 1).len();
        black_box(args.get(0));
        n += 1;
    }
    parser.compact(buf);
    (n, sum)
}

fn request_parser(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("request_parser");
    g.throughput(Throughput::Elements(PIPELINE as u64));

    for (name, input) in [("pipeline16_set_100b", set_pipeline()), ("pipeline16_get", get_pipeline())] {
        // The whole pipeline arrives in one read. Each iteration copies it into
        // the (reused) read buffer first, as the socket read would.
        g.bench_function(name, |b| {
            let mut parser = RequestParser::new();
            let mut buf = BytesMut::with_capacity(input.len() * 2);
            b.iter(|| {
                buf.extend_from_slice(&input);
                let (n, sum) = drain(&mut parser, &mut buf, &limits);
                debug_assert_eq!(n, PIPELINE);
                debug_assert!(buf.is_empty());
                black_box(sum)
            });
        });
    }

    // The same SET pipeline arriving in 512-byte reads: requests split across
    // reads, so the parser resumes mid-request (incremental path).
    let input = set_pipeline();
    g.bench_function("pipeline16_set_100b_512b_reads", |b| {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::with_capacity(input.len() * 2);
        b.iter(|| {
            let mut n = 0;
            let mut sum = 0;
            for chunk in input.chunks(512) {
                buf.extend_from_slice(chunk);
                let (k, s) = drain(&mut parser, &mut buf, &limits);
                n += k;
                sum += s;
            }
            debug_assert_eq!(n, PIPELINE);
            black_box(sum)
        });
    });
    g.finish();
}

fn reply_decoder(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode_frame");

    let mut ok = BytesMut::new();
    let mut bulks = BytesMut::new();
    for _ in 0..PIPELINE {
        encode::simple(&mut ok, b"OK");
        encode::bulk(&mut bulks, &value());
    }
    // One MGET-style reply: an array of 16 bulk strings of 100 bytes.
    let mut array = BytesMut::new();
    encode::array_header(&mut array, PIPELINE);
    for _ in 0..PIPELINE {
        encode::bulk(&mut array, &value());
    }

    g.throughput(Throughput::Elements(PIPELINE as u64));
    for (name, input) in [("pipeline16_ok", ok.to_vec()), ("pipeline16_bulk_100b", bulks.to_vec())] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut pos = 0;
                let mut n = 0;
                while let Some((frame, used)) = decode_frame(&input[pos..], &limits).expect("valid reply") {
                    black_box(&frame);
                    pos += used;
                    n += 1;
                }
                debug_assert_eq!(n, PIPELINE);
                n
            });
        });
    }
    g.throughput(Throughput::Elements(1));
    let input = array.to_vec();
    g.bench_function("array16_bulk_100b", |b| {
        b.iter(|| {
            let (frame, used) = decode_frame(black_box(&input), &limits).expect("valid reply").expect("complete");
            debug_assert_eq!(used, input.len());
            frame
        });
    });
    g.finish();
}

fn bulk_encoder(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_bulk");
    for (name, len, count) in [("pipeline16_100b", VALUE_LEN, PIPELINE), ("one_4kib", 4096, 1)] {
        let data = vec![b'x'; len];
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(name, |b| {
            // The connection's write buffer is reused; clearing keeps its capacity.
            let mut out = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    encode::bulk(&mut out, black_box(&data));
                }
                out.len()
            });
        });
    }
    g.finish();
}

fn slots(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_slot");
    g.throughput(Throughput::Elements(1));
    let keys: [(&str, Vec<u8>); 3] = [
        ("key16", bench_key(123_456)),
        ("hash_tag", b"user:{1000}:profile".to_vec()),
        ("key64", format!("session:{}", "a1b2c3d4".repeat(7)).into_bytes()),
    ];
    for (name, key) in keys {
        g.bench_function(name, |b| b.iter(|| key_slot(black_box(&key))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = ringcache_benches::criterion_config();
    targets = request_parser, reply_decoder, bulk_encoder, slots
}
criterion_main!(benches);
