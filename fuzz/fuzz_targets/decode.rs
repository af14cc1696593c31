//! Fuzzes what strangers send: the request parser (fed in arbitrary pieces)
//! and the reply/peer frame decoder.
//!
//! Checked on every input: no panic; no single allocation larger than the
//! limits allow for the bytes seen (a tracking allocator records the largest
//! request); the request parser gives the same requests whatever the read
//! boundaries; a decoded frame re-encodes and decodes to itself.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcache_protocol::encode::encode_frame;
use ringcache_protocol::{Limits, RequestParser, Version, decode_frame};

struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Small limits so the fuzzer reaches them.
const LIMITS: Limits = Limits { bulk_len_max: 4096, multibulk_len_max: 64, inline_len_max: 256, nesting_max: 16 };

fn requests(data: &[u8], chunk: usize) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&buf, &LIMITS, true) {
                Ok(true) => out.push(parser.args(&buf).iter().map(<[u8]>::to_vec).collect()),
                Ok(false) => break,
                Err(_) => return (out, true),
            }
        }
        parser.compact(&mut buf);
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let chunk = usize::from(data[0] % 16) + 1;
    let body = &data[1..];
    LARGEST.store(0, Relaxed);

    let (whole, whole_err) = requests(body, body.len());
    let (pieces, pieces_err) = requests(body, chunk);
    assert_eq!(whole_err, pieces_err, "error depends on read boundaries");
    assert_eq!(whole, pieces, "requests depend on read boundaries");

    if let Ok(Some((frame, used))) = decode_frame(body, &LIMITS) {
        assert!(used <= body.len());
        let mut again = BytesMut::new();
        encode_frame(&mut again, &frame, Version::Resp3);
        let (back, n) = decode_frame(&again, &LIMITS).expect("re-encoded frame decodes").expect("complete");
        assert_eq!(n, again.len());
        // NaN never equals itself; compare the encodings instead.
        let mut twice = BytesMut::new();
        encode_frame(&mut twice, &back, Version::Resp3);
        assert_eq!(again, twice);
    }

    // Nothing may be reserved in proportion to an announced length: the
    // largest allocation is bounded by the input (buffers hold copies of it)
    // plus fixed-size reservations.
    let largest = LARGEST.load(Relaxed);
    assert!(largest <= 4 * body.len() + 64 * 1024, "allocated {largest} bytes for {} input bytes", body.len());
});
