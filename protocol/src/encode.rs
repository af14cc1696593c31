//! Reply encoding into a `BytesMut`. The server writes replies with these
//! functions directly (no intermediate [`Frame`]); [`encode_frame`] encodes a
//! whole frame for clients and tests. Every function that has a RESP3 type
//! takes the connection's [`Version`] and falls back to RESP2's spelling.

use bytes::{BufMut, BytesMut};

use crate::{Frame, Version};

/// The decimal digits of `n`, written at the end of `tmp`.
#[inline]
pub fn decimal(n: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut i = tmp.len();
    let mut v = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &tmp[i..]
}

/// Writes `n` in decimal.
#[inline]
pub fn put_decimal(buf: &mut BytesMut, n: i64) {
    if n < 0 {
        buf.put_u8(b'-');
    }
    buf.put_slice(decimal(n.unsigned_abs(), &mut [0u8; 20]));
}

#[inline]
fn header(buf: &mut BytesMut, kind: u8, n: i64) {
    buf.put_u8(kind);
    put_decimal(buf, n);
    buf.put_slice(b"\r\n");
}

/// `+text`. The caller guarantees `text` holds no CR or LF.
#[inline]
pub fn simple(buf: &mut BytesMut, text: &[u8]) {
    buf.put_u8(b'+');
    buf.put_slice(text);
    buf.put_slice(b"\r\n");
}

/// `-text`, with any CR/LF replaced by spaces so the reply stays one line.
pub fn error(buf: &mut BytesMut, text: &[u8]) {
    buf.put_u8(b'-');
    for &c in text {
        buf.put_u8(if c == b'\r' || c == b'\n' { b' ' } else { c });
    }
    buf.put_slice(b"\r\n");
}

/// `:n`.
#[inline]
pub fn integer(buf: &mut BytesMut, n: i64) {
    header(buf, b':', n);
}

/// `$len` and the bytes.
#[inline]
pub fn bulk(buf: &mut BytesMut, data: &[u8]) {
    buf.reserve(data.len() + 16);
    header(buf, b'$', data.len() as i64);
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// The null reply: `_` in RESP3, the null bulk string `$-1` in RESP2.
#[inline]
pub fn null(buf: &mut BytesMut, v: Version) {
    match v {
        Version::Resp3 => buf.put_slice(b"_\r\n"),
        Version::Resp2 => buf.put_slice(b"$-1\r\n"),
    }
}

/// A null where RESP2 uses the null array (`*-1`).
pub fn null_array(buf: &mut BytesMut, v: Version) {
    match v {
        Version::Resp3 => buf.put_slice(b"_\r\n"),
        Version::Resp2 => buf.put_slice(b"*-1\r\n"),
    }
}

/// `*n`: an array of `n` elements follows.
#[inline]
pub fn array_header(buf: &mut BytesMut, n: usize) {
    header(buf, b'*', n as i64);
}

/// A map of `n` pairs: `%n` in RESP3, an array of `2n` elements in RESP2.
pub fn map_header(buf: &mut BytesMut, n: usize, v: Version) {
    match v {
        Version::Resp3 => header(buf, b'%', n as i64),
        Version::Resp2 => header(buf, b'*', 2 * n as i64),
    }
}

/// A set of `n` elements: `~n` in RESP3, an array in RESP2.
pub fn set_header(buf: &mut BytesMut, n: usize, v: Version) {
    match v {
        Version::Resp3 => header(buf, b'~', n as i64),
        Version::Resp2 => header(buf, b'*', n as i64),
    }
}

/// A push of `n` elements: `>n` in RESP3, an array in RESP2.
pub fn push_header(buf: &mut BytesMut, n: usize, v: Version) {
    match v {
        Version::Resp3 => header(buf, b'>', n as i64),
        Version::Resp2 => header(buf, b'*', n as i64),
    }
}

/// Formats a double the way Redis spells it (`inf`, `-inf`, `nan`, or the
/// shortest text that reads back to the same value). Like Redis's `%.17g`,
/// very large and very small magnitudes use an exponent: 1e264 is `1e264`,
/// not 265 digits (the fuzzer found such a line exceeding a small line limit
/// when decoded again).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "inf".to_string() } else { "-inf".to_string() }
    } else if d != 0.0 && (d.abs() >= 1e17 || d.abs() < 1e-4) {
        format!("{d:e}")
    } else {
        format!("{d}")
    }
}

/// `,d` in RESP3, a bulk string in RESP2.
pub fn double(buf: &mut BytesMut, d: f64, v: Version) {
    let text = format_double(d);
    match v {
        Version::Resp3 => {
            buf.put_u8(b',');
            buf.put_slice(text.as_bytes());
            buf.put_slice(b"\r\n");
        }
        Version::Resp2 => bulk(buf, text.as_bytes()),
    }
}

/// `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
pub fn boolean(buf: &mut BytesMut, b: bool, v: Version) {
    match v {
        Version::Resp3 => buf.put_slice(if b { b"#t\r\n" } else { b"#f\r\n" }),
        Version::Resp2 => integer(buf, i64::from(b)),
    }
}

/// `=len\r\nfmt:text` in RESP3, a bulk of the text in RESP2.
pub fn verbatim(buf: &mut BytesMut, format: &[u8; 3], text: &[u8], v: Version) {
    match v {
        Version::Resp3 => {
            header(buf, b'=', text.len() as i64 + 4);
            buf.put_slice(format);
            buf.put_u8(b':');
            buf.put_slice(text);
            buf.put_slice(b"\r\n");
        }
        Version::Resp2 => bulk(buf, text),
    }
}

/// Encodes a whole frame for protocol version `v`.
pub fn encode_frame(buf: &mut BytesMut, frame: &Frame, v: Version) {
    match frame {
        Frame::Simple(s) => simple(buf, s),
        Frame::Error(e) => error(buf, e),
        Frame::Integer(n) => integer(buf, *n),
        Frame::Bulk(b) => bulk(buf, b),
        Frame::Null => null(buf, v),
        Frame::Array(items) => {
            array_header(buf, items.len());
            items.iter().for_each(|f| encode_frame(buf, f, v));
        }
        Frame::Set(items) => {
            set_header(buf, items.len(), v);
            items.iter().for_each(|f| encode_frame(buf, f, v));
        }
        Frame::Push(items) => {
            push_header(buf, items.len(), v);
            items.iter().for_each(|f| encode_frame(buf, f, v));
        }
        Frame::Map(pairs) => {
            map_header(buf, pairs.len(), v);
            for (k, val) in pairs {
                encode_frame(buf, k, v);
                encode_frame(buf, val, v);
            }
        }
        Frame::Double(d) => double(buf, *d, v),
        Frame::Boolean(b) => boolean(buf, *b, v),
        Frame::BigNumber(n) => match v {
            Version::Resp3 => {
                buf.put_u8(b'(');
                buf.put_slice(n);
                buf.put_slice(b"\r\n");
            }
            Version::Resp2 => bulk(buf, n),
        },
        Frame::Verbatim { format, text } => verbatim(buf, format, text, v),
        Frame::BlobError(e) => match v {
            Version::Resp3 => {
                header(buf, b'!', e.len() as i64);
                buf.put_slice(e);
                buf.put_slice(b"\r\n");
            }
            Version::Resp2 => error(buf, e),
        },
        Frame::Attribute { attributes, frame } => {
            if v == Version::Resp3 {
                header(buf, b'|', attributes.len() as i64);
                for (k, val) in attributes {
                    encode_frame(buf, k, v);
                    encode_frame(buf, val, v);
                }
            }
            encode_frame(buf, frame, v);
        }
    }
}

/// Encodes a command as an array of bulk strings (what clients send).
pub fn command<A: AsRef<[u8]>>(buf: &mut BytesMut, args: &[A]) {
    array_header(buf, args.len());
    for a in args {
        bulk(buf, a.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0, 1, -1, 9, 10, 12345, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            put_decimal(&mut b, n);
            assert_eq!(&b[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn resp2_fallbacks() {
        let mut b = BytesMut::new();
        encode_frame(
            &mut b,
            &Frame::Map(vec![(Frame::simple("a"), Frame::Boolean(true)), (Frame::simple("b"), Frame::Double(2.5))]),
            Version::Resp2,
        );
        assert_eq!(&b[..], b"*4\r\n+a\r\n:1\r\n+b\r\n$3\r\n2.5\r\n");
        let mut b = BytesMut::new();
        encode_frame(&mut b, &Frame::Null, Version::Resp2);
        encode_frame(&mut b, &Frame::Null, Version::Resp3);
        assert_eq!(&b[..], b"$-1\r\n_\r\n");
    }

    #[test]
    fn doubles_use_an_exponent_at_the_extremes() {
        assert_eq!(format_double(1e264), "1e264");
        assert_eq!(format_double(-2.5e-300), "-2.5e-300");
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(0.0), "0");
        assert_eq!(format_double(123456.789), "123456.789");
        for d in [1e264, -2.5e-300, f64::MAX, f64::MIN_POSITIVE, 1e16, 1e17, 1e-4, 9.99e-5] {
            let text = format_double(d);
            assert!(text.len() < 32, "{text}");
            assert_eq!(crate::decode::parse_double(text.as_bytes()), Some(d), "{text}");
        }
    }

    #[test]
    fn errors_stay_on_one_line() {
        let mut b = BytesMut::new();
        error(&mut b, b"ERR a\r\nb");
        assert_eq!(&b[..], b"-ERR a  b\r\n");
    }
}
