//! # ringcache-protocol
//!
//! Everything ringcache says on the wire, with no IO and no async runtime:
//!
//! - [`frame`]: the RESP2/RESP3 value model ([`Frame`]).
//! - [`decode`]: a general frame decoder (replies, peer messages, tests).
//! - [`request`]: the server's incremental request parser. It never copies
//!   arguments: it records ranges into the connection's read buffer, so a
//!   pipeline of many commands is parsed without a single allocation.
//! - [`encode`]: reply encoding straight into a `BytesMut`, aware of RESP2/RESP3.
//! - [`limits`]: the bounds every stranger's bytes meet ([`Limits`]).
//! - [`slot`]: Redis Cluster's key → slot function (CRC16-XMODEM mod 16384,
//!   hash tags).
//!
//! Invariants: no function here panics on input from a peer, and no function
//! allocates memory in proportion to a length the peer announced before the
//! bytes themselves have arrived. This crate knows nothing about tokio.

#![deny(missing_docs)]

pub mod decode;
pub mod encode;
pub mod error;
pub mod frame;
pub mod limits;
pub mod request;
pub mod slot;

pub use decode::decode_frame;
pub use error::ProtocolError;
pub use frame::Frame;
pub use limits::Limits;
pub use request::{Args, RequestParser};
pub use slot::{SLOT_COUNT, key_slot};

/// RESP protocol version spoken on a connection (HELLO 2 / HELLO 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// RESP2, every connection's protocol until `HELLO 3`.
    #[default]
    Resp2,
    /// RESP3: maps, sets, doubles, booleans, nulls and pushes as such.
    Resp3,
}

/// Parses a decimal `i64` exactly as Redis's `string2ll` does: an optional
/// leading `-`, digits only, no leading zeros (except "0"), no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = if s[0] == b'-' { (true, &s[1..]) } else { (false, s) };
    if digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    if neg && digits == b"0" {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if neg {
        if v <= i64::MAX as u64 + 1 { Some((v as i128).wrapping_neg() as i64) } else { None }
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    #[test]
    fn parse_i64_is_strict() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        for bad in [&b""[..], b"-", b"+1", b" 1", b"1 ", b"01", b"-0", b"1a", b"99999999999999999999999"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
