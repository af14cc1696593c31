//! One key/value pair in a single heap allocation.
//!
//! Layout (no padding, byte-aligned):
//!
//! ```text
//! 0      flags   u8   (bit 0: has expiry)
//! 1..5   access  u32  LRU clock or LFU counter+time, see `policy`
//! 5..13  version u64  hybrid logical clock of the last write
//! 13..21 expiry  u64  absolute unix ms, present only if flagged
//! ..     klen, vlen   LEB128 varints
//! ..     key bytes, value bytes
//! ```
//!
//! A 16-byte key with a 100-byte value takes 131 bytes, which glibc serves
//! from a 144-byte chunk: the per-key budget of BENCHMARKS.md depends on this
//! header staying small. Changing whether a key has an expiry rebuilds the
//! entry (EXPIRE on a key without one is rare next to GET and SET).
//!
//! This is the only `unsafe` in the store: the allocation's size is derived
//! from its own header, which is written once in [`Entry::new`] and never
//! changes afterwards (only `access` and `version` are rewritten in place).
//!
//! The pointer's top byte carries the table's 1-byte hash tag ([`Entry::tag`]),
//! so a probe compares tags without a separate array and without touching
//! the entry's memory. User-space addresses on the 64-bit Linux targets we
//! support stay below 2^56 (x86-64: 2^47, or 2^56 with 5-level paging only
//! for mappings that ask for it; aarch64: 2^48/2^52); `new` asserts it.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::NonNull;

const FLAG_EXPIRY: u8 = 1;
const OFF_ACCESS: usize = 1;
const OFF_VERSION: usize = 5;
const FIXED_LEN: usize = 13;

/// An owned key/value pair with its metadata.
pub struct Entry {
    /// The allocation's address, with the table tag in the top byte.
    ptr: NonNull<u8>,
}

const ADDR_MASK: usize = (1 << 56) - 1;

// SAFETY: an Entry exclusively owns its allocation, like a Box<[u8]>.
unsafe impl Send for Entry {}
// SAFETY: shared references only read; mutation needs &mut.
unsafe impl Sync for Entry {}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut [u8], mut n: usize) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        out[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    out[i] = n as u8;
    i + 1
}

/// Where the parts of an entry lie.
struct Parts {
    key_at: usize,
    key_len: usize,
    value_len: usize,
}

impl Parts {
    fn total(&self) -> usize {
        self.key_at + self.key_len + self.value_len
    }
}

impl Entry {
    /// Builds an entry. `expiry_ms` is an absolute unix time in ms.
    pub fn new(key: &[u8], value: &[u8], expiry_ms: Option<u64>, version: u64, access: u32) -> Entry {
        let header =
            FIXED_LEN + if expiry_ms.is_some() { 8 } else { 0 } + varint_len(key.len()) + varint_len(value.len());
        let size = header + key.len() + value.len();
        let layout = Layout::from_size_align(size, 1).expect("entry size fits isize");
        // SAFETY: size >= FIXED_LEN > 0.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else { handle_alloc_error(layout) };
        assert_eq!(raw as usize & !ADDR_MASK, 0, "heap address above 2^56: the table tag would not fit");
        // Every byte is written through the raw pointer, in order, before
        // any slice over the allocation exists (no reference to
        // uninitialised memory, and no memset).
        let mut at = 0usize;
        let mut put = |bytes: &[u8]| {
            // SAFETY: `at + bytes.len() <= size` by the size computed above;
            // the regions are disjoint (fresh allocation vs. caller's slices).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.add(at), bytes.len()) };
            at += bytes.len();
        };
        put(&[if expiry_ms.is_some() { FLAG_EXPIRY } else { 0 }]);
        put(&access.to_le_bytes());
        put(&version.to_le_bytes());
        if let Some(e) = expiry_ms {
            put(&e.to_le_bytes());
        }
        let mut varint = [0u8; 10];
        let n = put_varint(&mut varint, key.len());
        put(&varint[..n]);
        let n = put_varint(&mut varint, value.len());
        put(&varint[..n]);
        put(key);
        put(value);
        debug_assert_eq!(at, size);
        Entry { ptr }
    }

    /// The allocation's address, without the tag.
    #[inline]
    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr().map_addr(|a| a & ADDR_MASK)
    }

    /// The table's tag for this entry (0 until a table sets it).
    #[inline]
    pub fn tag(&self) -> u8 {
        (self.ptr.as_ptr().addr() >> 56) as u8
    }

    #[inline]
    pub fn set_tag(&mut self, tag: u8) {
        let p = self.ptr.as_ptr().map_addr(|a| (a & ADDR_MASK) | (usize::from(tag) << 56));
        // SAFETY: the address part is the non-null allocation.
        self.ptr = unsafe { NonNull::new_unchecked(p) };
    }

    #[inline]
    fn byte(&self, i: usize) -> u8 {
        // SAFETY: callers only read header bytes, all within the allocation
        // (the header is written before any read and the varints end it).
        unsafe { *self.base().add(i) }
    }

    #[inline]
    fn varint_at(&self, mut at: usize) -> (usize, usize) {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = self.byte(at);
            n |= usize::from(b & 0x7f) << shift;
            at += 1;
            if b & 0x80 == 0 {
                return (n, at);
            }
            shift += 7;
        }
    }

    #[inline]
    fn parts(&self) -> Parts {
        let at = if self.byte(0) & FLAG_EXPIRY != 0 { FIXED_LEN + 8 } else { FIXED_LEN };
        let (key_len, at) = self.varint_at(at);
        let (value_len, key_at) = self.varint_at(at);
        Parts { key_at, key_len, value_len }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        let total = self.parts().total();
        // SAFETY: `total` is the size the allocation was made with.
        unsafe { std::slice::from_raw_parts(self.base(), total) }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        let total = self.parts().total();
        // SAFETY: as in `bytes`, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.base(), total) }
    }

    #[inline]
    pub fn key(&self) -> &[u8] {
        let p = self.parts();
        &self.bytes()[p.key_at..p.key_at + p.key_len]
    }

    #[inline]
    pub fn value(&self) -> &[u8] {
        let p = self.parts();
        &self.bytes()[p.key_at + p.key_len..]
    }

    /// Absolute expiry in unix ms, if any.
    #[inline]
    pub fn expiry_ms(&self) -> Option<u64> {
        if self.byte(0) & FLAG_EXPIRY == 0 {
            return None;
        }
        let b = self.bytes();
        Some(u64::from_le_bytes(b[FIXED_LEN..FIXED_LEN + 8].try_into().expect("8 bytes")))
    }

    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expiry_ms().is_some_and(|e| e <= now_ms)
    }

    #[inline]
    pub fn access(&self) -> u32 {
        let b = self.bytes();
        u32::from_le_bytes(b[OFF_ACCESS..OFF_VERSION].try_into().expect("4 bytes"))
    }

    #[inline]
    pub fn set_access(&mut self, access: u32) {
        self.bytes_mut()[OFF_ACCESS..OFF_VERSION].copy_from_slice(&access.to_le_bytes());
    }

    #[inline]
    pub fn version(&self) -> u64 {
        let b = self.bytes();
        u64::from_le_bytes(b[OFF_VERSION..FIXED_LEN].try_into().expect("8 bytes"))
    }

    /// Size of the allocation in bytes (header + key + value).
    #[inline]
    pub fn alloc_len(&self) -> usize {
        self.parts().total()
    }

    /// Bytes this entry costs the process: the allocation rounded up the way
    /// glibc's malloc does (8 bytes of chunk header, 16-byte granularity,
    /// 32 bytes at least). Used for `used_memory` and `maxmemory`.
    #[inline]
    pub fn mem_cost(&self) -> usize {
        malloc_cost(self.alloc_len())
    }

    /// A copy of this entry under another key, expiry or version.
    pub fn rebuild(&self, key: &[u8], expiry_ms: Option<u64>, version: u64) -> Entry {
        Entry::new(key, self.value(), expiry_ms, version, self.access())
    }
}

/// Whether the heap hands out addresses whose top byte is free for the
/// table tag. False on heaps that tag pointers themselves (aarch64 memory
/// tagging in glibc, HWASan, Scudo): the node refuses to start there rather
/// than fail on the first write.
pub fn heap_supports_tags() -> bool {
    let probes: Vec<Box<[u8; 64]>> = (0..16).map(|_| Box::new([0u8; 64])).collect();
    probes.iter().all(|b| (b.as_ptr() as usize) & !ADDR_MASK == 0)
}

/// What a `len`-byte allocation costs with glibc's malloc.
#[inline]
pub fn malloc_cost(len: usize) -> usize {
    ((len + 8 + 15) & !15).max(32)
}

impl Drop for Entry {
    fn drop(&mut self) {
        let size = self.alloc_len();
        let layout = Layout::from_size_align(size, 1).expect("entry size fits isize");
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { dealloc(self.base(), layout) }
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("value_len", &self.value().len())
            .field("expiry_ms", &self.expiry_ms())
            .field("version", &self.version())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_fields() {
        for (k, v, e) in [
            (&b""[..], &b""[..], None),
            (b"key:000000000001", &[7u8; 100][..], None),
            (b"k", &[1u8; 300][..], Some(1_700_000_000_000u64)),
        ] {
            let mut entry = Entry::new(k, v, e, 42, 7);
            assert_eq!(entry.key(), k);
            assert_eq!(entry.value(), v);
            assert_eq!(entry.expiry_ms(), e);
            assert_eq!(entry.version(), 42);
            assert_eq!(entry.access(), 7);
            entry.set_access(99);
            assert_eq!(entry.access(), 99);
            assert_eq!(entry.value(), v);
            entry.set_tag(0xAB);
            assert_eq!(entry.tag(), 0xAB);
            assert_eq!(entry.key(), k);
            assert_eq!(entry.value(), v);
        }
    }

    #[test]
    fn typical_entry_fits_a_144_byte_chunk() {
        let e = Entry::new(b"key:000000000001", &[b'x'; 100], None, 1, 1);
        assert_eq!(e.alloc_len(), 131);
        assert_eq!(e.mem_cost(), 144);
    }

    #[test]
    fn large_values_use_longer_varints() {
        let v = vec![3u8; 70_000];
        let e = Entry::new(b"big", &v, Some(5), 1, 1);
        assert_eq!(e.value().len(), 70_000);
        assert_eq!(e.key(), b"big");
        assert_eq!(e.rebuild(b"other", None, 2).value(), &v[..]);
    }
}
