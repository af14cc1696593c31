//! General RESP2/RESP3 frame decoder, for replies (clients, tests) and for
//! peer messages. It works on a byte slice and reports how much it used, so
//! the caller advances its own buffer; an incomplete frame yields `Ok(None)`
//! and nothing is consumed.
//!
//! Lengths are checked against [`Limits`] before use, and aggregates reserve
//! at most a small, fixed number of elements up front: a peer announcing
//! `*4294967295` costs nothing until the elements arrive.

use bytes::Bytes;

use crate::{Frame, Limits, ProtocolError, parse_i64};

/// Elements reserved up front for an aggregate, whatever length it announces.
const AGGREGATE_RESERVE_MAX: usize = 64;

/// Decodes one frame from the start of `buf`.
///
/// Returns `Ok(Some((frame, used)))` when a whole frame is present,
/// `Ok(None)` when more bytes are needed, and an error when the bytes can
/// never form a valid frame.
pub fn decode_frame(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let mut pos = 0;
    match decode_at(buf, &mut pos, limits, 0)? {
        Some(frame) => Ok(Some((frame, pos))),
        None => Ok(None),
    }
}

/// Finds the `\r\n`-terminated line starting at `*pos`; returns it without
/// the terminator and moves `*pos` past it.
fn line<'a>(buf: &'a [u8], pos: &mut usize, limits: &Limits) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*pos..];
    match rest.iter().position(|&c| c == b'\n') {
        Some(nl) => {
            if nl == 0 || rest[nl - 1] != b'\r' {
                return Err(ProtocolError::InvalidFrame("line not terminated by CRLF"));
            }
            if nl > limits.inline_len_max {
                return Err(ProtocolError::InvalidFrame("line too long"));
            }
            *pos += nl + 1;
            Ok(Some(&rest[..nl - 1]))
        }
        None if rest.len() > limits.inline_len_max => Err(ProtocolError::InvalidFrame("line too long")),
        None => Ok(None),
    }
}

fn length(text: &[u8], max: usize, what: &'static str) -> Result<Option<usize>, ProtocolError> {
    let n = parse_i64(text).ok_or(ProtocolError::InvalidFrame(what))?;
    if n == -1 {
        return Ok(None);
    }
    if n < 0 || n as u64 > max as u64 {
        return Err(ProtocolError::InvalidFrame(what));
    }
    Ok(Some(n as usize))
}

fn blob(buf: &[u8], pos: &mut usize, len: usize) -> Result<Option<Bytes>, ProtocolError> {
    let start = *pos;
    let Some(end) = start.checked_add(len) else {
        return Err(ProtocolError::InvalidBulkLength);
    };
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError::ExpectedCrlf);
    }
    *pos = end + 2;
    Ok(Some(Bytes::copy_from_slice(&buf[start..end])))
}

fn decode_at(buf: &[u8], pos: &mut usize, limits: &Limits, depth: usize) -> Result<Option<Frame>, ProtocolError> {
    if depth > limits.nesting_max {
        return Err(ProtocolError::NestingTooDeep);
    }
    if *pos >= buf.len() {
        return Ok(None);
    }
    let kind = buf[*pos];
    let mut p = *pos + 1;
    let Some(text) = line(buf, &mut p, limits)? else {
        return Ok(None);
    };
    let frame = match kind {
        b'+' => Frame::Simple(Bytes::copy_from_slice(text)),
        b'-' => Frame::Error(Bytes::copy_from_slice(text)),
        b':' => Frame::Integer(parse_i64(text).ok_or(ProtocolError::InvalidFrame("invalid integer"))?),
        b'_' => {
            if !text.is_empty() {
                return Err(ProtocolError::InvalidFrame("invalid null"));
            }
            Frame::Null
        }
        b'#' => match text {
            b"t" => Frame::Boolean(true),
            b"f" => Frame::Boolean(false),
            _ => return Err(ProtocolError::InvalidFrame("invalid boolean")),
        },
        b',' => Frame::Double(parse_double(text).ok_or(ProtocolError::InvalidFrame("invalid double"))?),
        b'(' => {
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(ProtocolError::InvalidFrame("invalid big number"));
            }
            Frame::BigNumber(Bytes::copy_from_slice(text))
        }
        b'$' | b'!' | b'=' => {
            let Some(len) = length(text, limits.bulk_len_max, "invalid bulk length")? else {
                if kind != b'$' {
                    return Err(ProtocolError::InvalidFrame("invalid bulk length"));
                }
                *pos = p;
                return Ok(Some(Frame::Null));
            };
            let Some(data) = blob(buf, &mut p, len)? else {
                return Ok(None);
            };
            match kind {
                b'$' => Frame::Bulk(data),
                b'!' => Frame::BlobError(data),
                _ => {
                    if data.len() < 4 || data[3] != b':' {
                        return Err(ProtocolError::InvalidFrame("invalid verbatim string"));
                    }
                    Frame::Verbatim { format: [data[0], data[1], data[2]], text: data.slice(4..) }
                }
            }
        }
        b'*' | b'~' | b'>' => {
            let Some(n) = length(text, limits.multibulk_len_max, "invalid multibulk length")? else {
                if kind != b'*' {
                    return Err(ProtocolError::InvalidFrame("invalid aggregate length"));
                }
                *pos = p;
                return Ok(Some(Frame::Null));
            };
            let mut items = Vec::with_capacity(n.min(AGGREGATE_RESERVE_MAX));
            for _ in 0..n {
                let Some(item) = decode_at(buf, &mut p, limits, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
            }
            match kind {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            }
        }
        b'%' | b'|' => {
            let Some(n) = length(text, limits.multibulk_len_max, "invalid map length")? else {
                return Err(ProtocolError::InvalidFrame("invalid map length"));
            };
            let mut pairs = Vec::with_capacity(n.min(AGGREGATE_RESERVE_MAX));
            for _ in 0..n {
                let Some(k) = decode_at(buf, &mut p, limits, depth + 1)? else {
                    return Ok(None);
                };
                let Some(v) = decode_at(buf, &mut p, limits, depth + 1)? else {
                    return Ok(None);
                };
                pairs.push((k, v));
            }
            if kind == b'%' {
                Frame::Map(pairs)
            } else {
                let Some(inner) = decode_at(buf, &mut p, limits, depth + 1)? else {
                    return Ok(None);
                };
                Frame::Attribute { attributes: pairs, frame: Box::new(inner) }
            }
        }
        _ => return Err(ProtocolError::InvalidFrame("unknown frame type")),
    };
    *pos = p;
    Ok(Some(frame))
}

/// Parses a RESP3 double (`inf`, `-inf`, `nan` or a decimal/exponent number).
pub fn parse_double(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => {
            // Rust also accepts "infinity"/"NaN" spellings; RESP does not.
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')) {
                return None;
            }
            s.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        decode_frame(s, &Limits::default())
    }

    #[test]
    fn decodes_every_type() {
        let cases: Vec<(&[u8], Frame)> = vec![
            (b"+OK\r\n", Frame::simple("OK")),
            (b"-ERR no\r\n", Frame::Error("ERR no".into())),
            (b":-12\r\n", Frame::Integer(-12)),
            (b"$3\r\nfoo\r\n", Frame::bulk("foo")),
            (b"$-1\r\n", Frame::Null),
            (b"*-1\r\n", Frame::Null),
            (b"_\r\n", Frame::Null),
            (b"#t\r\n", Frame::Boolean(true)),
            (b",1.5\r\n", Frame::Double(1.5)),
            (b",-inf\r\n", Frame::Double(f64::NEG_INFINITY)),
            (b"(123456789012345678901234567890\r\n", Frame::BigNumber("123456789012345678901234567890".into())),
            (b"=8\r\ntxt:abcd\r\n", Frame::Verbatim { format: *b"txt", text: "abcd".into() }),
            (b"!5\r\nERR x\r\n", Frame::BlobError("ERR x".into())),
            (b"*2\r\n:1\r\n$1\r\na\r\n", Frame::Array(vec![Frame::Integer(1), Frame::bulk("a")])),
            (b"~1\r\n:1\r\n", Frame::Set(vec![Frame::Integer(1)])),
            (b">1\r\n:1\r\n", Frame::Push(vec![Frame::Integer(1)])),
            (b"%1\r\n+a\r\n:1\r\n", Frame::Map(vec![(Frame::simple("a"), Frame::Integer(1))])),
            (
                b"|1\r\n+ttl\r\n:3\r\n:5\r\n",
                Frame::Attribute {
                    attributes: vec![(Frame::simple("ttl"), Frame::Integer(3))],
                    frame: Box::new(Frame::Integer(5)),
                },
            ),
        ];
        for (bytes, frame) in cases {
            assert_eq!(dec(bytes).unwrap(), Some((frame, bytes.len())), "{:?}", String::from_utf8_lossy(bytes));
            // Every strict prefix is incomplete, never an error.
            for cut in 0..bytes.len() {
                assert_eq!(dec(&bytes[..cut]).unwrap(), None, "prefix {cut} of {:?}", String::from_utf8_lossy(bytes));
            }
        }
    }

    #[test]
    fn rejects_bad_frames_without_allocating() {
        assert!(dec(b"*4294967296\r\n").is_err());
        assert!(dec(b"$4294967296\r\n").is_err());
        assert!(dec(b"$-7\r\n").is_err());
        assert!(dec(b"?\r\n").is_err());
        assert!(dec(b"$3\r\nfoobar\r\n").is_err());
        // A huge announced array with no elements yet is simply incomplete.
        assert_eq!(dec(b"*1048576\r\n").unwrap(), None);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = b"*1\r\n".repeat(200);
        assert_eq!(dec(&deep), Err(ProtocolError::NestingTooDeep));
    }
}
