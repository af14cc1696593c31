//! The server's incremental request parser.
//!
//! Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or
//! inline lines typed by hand (`GET k\r\n`). The parser keeps its place
//! between reads, so a request that arrives one byte at a time, or a million
//! arguments over many reads, is scanned once: never quadratic.
//!
//! It does not copy arguments. A complete request is a list of ranges into
//! the caller's read buffer ([`Args`]); the caller executes it, then calls
//! [`RequestParser::compact`] to drop the bytes of finished requests. Inline
//! arguments may contain escapes (`"a\x00b"`), so those are owned.
//!
//! Limits ([`Limits`]) are checked as soon as a length is read: nothing is
//! reserved in proportion to an announced length.

use bytes::{Buf, BytesMut};

use crate::{Limits, ProtocolError, parse_i64};

/// Argument ranges reserved up front for a request, whatever it announces.
const ARGS_RESERVE_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests.
    Idle,
    /// Inside a multibulk request: `remaining` bulks still to read; `bulk_len`
    /// is the announced length of the next bulk once its header is read.
    Multibulk { remaining: usize, bulk_len: Option<usize> },
    /// A whole request is ready in `ranges` or `inline`.
    Ready,
}

/// Stateful parser for the requests on one connection.
#[derive(Debug)]
pub struct RequestParser {
    state: State,
    /// Offset in the buffer of the next byte to look at.
    pos: usize,
    /// Offset where the request being parsed begins.
    start: usize,
    ranges: Vec<(usize, usize)>,
    inline: Vec<Vec<u8>>,
    is_inline: bool,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestParser {
    /// A parser waiting for the first request.
    pub fn new() -> Self {
        RequestParser { state: State::Idle, pos: 0, start: 0, ranges: Vec::new(), inline: Vec::new(), is_inline: false }
    }

    /// Parses the next request from `buf`. Returns `Ok(true)` when a whole
    /// request is ready (read it with [`args`](Self::args)), `Ok(false)` when
    /// more bytes are needed. Empty requests (`*0`, blank lines) are skipped.
    ///
    /// `authenticated` is false while a password is required and not yet
    /// given; such a connection gets Redis's small unauthenticated limits.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits, authenticated: bool) -> Result<bool, ProtocolError> {
        loop {
            if self.state == State::Ready {
                self.state = State::Idle;
                self.ranges.clear();
                self.inline.clear();
                self.start = self.pos;
            }
            if self.state == State::Idle {
                if self.pos >= buf.len() {
                    return Ok(false);
                }
                self.start = self.pos;
                if buf[self.pos] == b'*' {
                    let Some(n) = self.multibulk_header(buf, limits, authenticated)? else {
                        return Ok(false);
                    };
                    if n == 0 {
                        continue;
                    }
                    self.is_inline = false;
                    self.ranges.reserve(n.min(ARGS_RESERVE_MAX));
                    self.state = State::Multibulk { remaining: n, bulk_len: None };
                } else {
                    if !self.inline_request(buf, limits)? {
                        return Ok(false);
                    }
                    if self.inline.is_empty() {
                        self.state = State::Idle;
                        continue;
                    }
                    self.is_inline = true;
                    self.state = State::Ready;
                    return Ok(true);
                }
            }
            if let State::Multibulk { .. } = self.state {
                if !self.bulks(buf, limits, authenticated)? {
                    return Ok(false);
                }
                self.state = State::Ready;
                return Ok(true);
            }
        }
    }

    /// Reads `*<n>\r\n`. `Ok(None)`: incomplete.
    fn multibulk_header(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        authenticated: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        let Some(text) = header_line(buf, self.pos, limits, ProtocolError::TooBigMultibulkCountString)? else {
            return Ok(None);
        };
        let n = parse_i64(&buf[self.pos + 1..text]).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if n < -1 || n > limits.multibulk_len_max as i64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        if !authenticated && n > Limits::UNAUTHENTICATED_MULTIBULK_MAX as i64 {
            return Err(ProtocolError::UnauthenticatedMultibulkLength);
        }
        self.pos = text + 2;
        Ok(Some(n.max(0) as usize))
    }

    /// Reads the remaining bulks of a multibulk request. `Ok(false)`: incomplete.
    fn bulks(&mut self, buf: &[u8], limits: &Limits, authenticated: bool) -> Result<bool, ProtocolError> {
        while let State::Multibulk { remaining, bulk_len } = self.state {
            if remaining == 0 {
                return Ok(true);
            }
            let len = match bulk_len {
                Some(len) => len,
                None => {
                    if self.pos >= buf.len() {
                        return Ok(false);
                    }
                    if buf[self.pos] != b'$' {
                        return Err(ProtocolError::ExpectedDollar(buf[self.pos]));
                    }
                    let Some(text) = header_line(buf, self.pos, limits, ProtocolError::TooBigBulkCountString)? else {
                        return Ok(false);
                    };
                    let n = parse_i64(&buf[self.pos + 1..text]).ok_or(ProtocolError::InvalidBulkLength)?;
                    if n < 0 || n as u64 > limits.bulk_len_max as u64 {
                        return Err(ProtocolError::InvalidBulkLength);
                    }
                    if !authenticated && n as usize > Limits::UNAUTHENTICATED_BULK_MAX {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    self.pos = text + 2;
                    self.state = State::Multibulk { remaining, bulk_len: Some(n as usize) };
                    n as usize
                }
            };
            if buf.len() - self.pos < len + 2 {
                return Ok(false);
            }
            if &buf[self.pos + len..self.pos + len + 2] != b"\r\n" {
                return Err(ProtocolError::ExpectedCrlf);
            }
            self.ranges.push((self.pos, self.pos + len));
            self.pos += len + 2;
            self.state = State::Multibulk { remaining: remaining - 1, bulk_len: None };
        }
        Ok(true)
    }

    /// Reads one inline line into `self.inline`. `Ok(false)`: incomplete.
    fn inline_request(&mut self, buf: &[u8], limits: &Limits) -> Result<bool, ProtocolError> {
        let rest = &buf[self.pos..];
        let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
            if rest.len() > limits.inline_len_max {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            return Ok(false);
        };
        if nl > limits.inline_len_max {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        self.inline = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
        self.pos += nl + 1;
        Ok(true)
    }

    /// The arguments of the request that [`parse`](Self::parse) just made
    /// ready. `buf` must be the buffer given to `parse`.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Args<'a> {
        debug_assert_eq!(self.state, State::Ready);
        if self.is_inline {
            Args(ArgsInner::Owned(&self.inline))
        } else {
            Args(ArgsInner::Ranges { buf, ranges: &self.ranges })
        }
    }

    /// The argument ranges of the ready request, if it is a multibulk one
    /// (inline requests own their arguments). With [`Args::from_ranges`]
    /// a caller can collect several requests before executing them.
    pub fn ranges(&self) -> Option<&[(usize, usize)]> {
        debug_assert_eq!(self.state, State::Ready);
        if self.is_inline { None } else { Some(&self.ranges) }
    }

    /// Bytes at the front of the buffer that belong to finished requests.
    pub fn consumed(&self) -> usize {
        match self.state {
            State::Idle | State::Ready => self.pos,
            State::Multibulk { .. } => self.start,
        }
    }

    /// Bytes still needed to finish the bulk being read, if known: a hint for
    /// how much to read next (callers still bound each read).
    pub fn bulk_remaining(&self, buf_len: usize) -> Option<usize> {
        match self.state {
            State::Multibulk { bulk_len: Some(len), .. } => Some((self.pos + len + 2).saturating_sub(buf_len)),
            _ => None,
        }
    }

    /// Drops the bytes of finished requests from the front of `buf`.
    /// A request that is ready but not yet executed must not be pending.
    pub fn compact(&mut self, buf: &mut BytesMut) {
        if self.state == State::Ready {
            self.state = State::Idle;
            self.ranges.clear();
            self.inline.clear();
        }
        let n = self.consumed();
        if n == 0 {
            return;
        }
        buf.advance(n);
        self.pos -= n;
        self.start = self.start.saturating_sub(n);
        for r in &mut self.ranges {
            r.0 -= n;
            r.1 -= n;
        }
    }
}

/// Finds the `\r\n` ending the length header that starts at `at` and returns
/// the offset of its `\r`. `Ok(None)`: not all there yet.
fn header_line(buf: &[u8], at: usize, limits: &Limits, too_big: ProtocolError) -> Result<Option<usize>, ProtocolError> {
    let rest = &buf[at..];
    match rest.iter().position(|&c| c == b'\r') {
        Some(cr) if cr > limits.inline_len_max => Err(too_big),
        Some(cr) => {
            if at + cr + 1 >= buf.len() {
                return Ok(None);
            }
            if buf[at + cr + 1] != b'\n' {
                return Err(if matches!(too_big, ProtocolError::TooBigBulkCountString) {
                    ProtocolError::InvalidBulkLength
                } else {
                    ProtocolError::InvalidMultibulkLength
                });
            }
            Ok(Some(at + cr))
        }
        None if rest.len() > limits.inline_len_max => Err(too_big),
        None => Ok(None),
    }
}

/// Splits an inline command line the way Redis's `sdssplitargs` does:
/// whitespace separates arguments; "double quotes" understand `\n \r \t \b
/// \a \\ \" \xHH`; 'single quotes' understand `\'`; a closing quote must be
/// followed by whitespace or the end. `None`: unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    cur.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 1;
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                }
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    c if c.is_ascii_whitespace() => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        args.push(cur);
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[derive(Debug, Clone, Copy)]
enum ArgsInner<'a> {
    Ranges { buf: &'a [u8], ranges: &'a [(usize, usize)] },
    Owned(&'a [Vec<u8>]),
    Slices(&'a [&'a [u8]]),
}

/// The arguments of one request, the command name first. Borrowed from the
/// read buffer (or from the parser for inline requests).
#[derive(Debug, Clone, Copy)]
pub struct Args<'a>(ArgsInner<'a>);

impl<'a> Args<'a> {
    /// Arguments given as ranges into `buf` (see [`RequestParser::ranges`]).
    pub fn from_ranges(buf: &'a [u8], ranges: &'a [(usize, usize)]) -> Self {
        Args(ArgsInner::Ranges { buf, ranges })
    }

    /// Arguments made by the server itself (tests, internal calls).
    pub fn from_slices(args: &'a [&'a [u8]]) -> Self {
        Args(ArgsInner::Slices(args))
    }

    /// How many arguments, the command name included.
    pub fn len(&self) -> usize {
        match self.0 {
            ArgsInner::Ranges { ranges, .. } => ranges.len(),
            ArgsInner::Owned(v) => v.len(),
            ArgsInner::Slices(v) => v.len(),
        }
    }

    /// No arguments at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Argument `i`. Panics if `i >= len()`: callers check arity first.
    #[inline]
    pub fn get(&self, i: usize) -> &'a [u8] {
        match self.0 {
            ArgsInner::Ranges { buf, ranges } => {
                let (s, e) = ranges[i];
                &buf[s..e]
            }
            ArgsInner::Owned(v) => &v[i],
            ArgsInner::Slices(v) => v[i],
        }
    }

    /// The arguments in order, the command name first.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Total bytes of all arguments.
    pub fn byte_len(&self) -> usize {
        self.iter().map(<[u8]>::len).sum()
    }

    /// The arguments after the first `n` (none if there are fewer).
    pub fn skip(&self, n: usize) -> Args<'a> {
        match self.0 {
            ArgsInner::Ranges { buf, ranges } => {
                Args(ArgsInner::Ranges { buf, ranges: &ranges[n.min(ranges.len())..] })
            }
            ArgsInner::Owned(v) => Args(ArgsInner::Owned(&v[n.min(v.len())..])),
            ArgsInner::Slices(v) => Args(ArgsInner::Slices(&v[n.min(v.len())..])),
        }
    }
}

/// Equal when they hold the same arguments, however they are stored.
impl PartialEq for Args<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Args<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::new();
        let mut out = Vec::new();
        while p.parse(input, &Limits::default(), true)? {
            out.push(p.args(input).iter().map(<[u8]>::to_vec).collect());
        }
        Ok(out)
    }

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_pipeline() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*0\r\n\r\n*1\r\n$4\r\nPING\r\nset a \"b c\"\n";
        assert_eq!(
            parse_all(input).unwrap(),
            vec![v(&["GET", "k"]), v(&["PING"]), v(&["PING"]), v(&["set", "a", "b c"])]
        );
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\nECHO 'x y'\r\n";
        let mut p = RequestParser::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            while p.parse(&buf, &Limits::default(), true).unwrap() {
                got.push(p.args(&buf).iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
            }
            p.compact(&mut buf);
        }
        assert_eq!(got, vec![v(&["SET", "key", "value"]), v(&["ECHO", "x y"])]);
        assert!(buf.is_empty());
    }

    #[test]
    fn compact_keeps_partial_request() {
        let mut p = RequestParser::new();
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1"[..]);
        assert!(p.parse(&buf, &Limits::default(), true).unwrap());
        assert!(!p.parse(&buf, &Limits::default(), true).unwrap());
        p.compact(&mut buf);
        assert_eq!(&buf[..], b"*2\r\n$3\r\nGET\r\n$1");
        buf.extend_from_slice(b"\r\nk\r\n");
        assert!(p.parse(&buf, &Limits::default(), true).unwrap());
        assert_eq!(p.args(&buf).get(1), b"k");
    }

    #[test]
    fn redis_protocol_errors() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*-5\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*99999999999\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n$-7\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$4294967296\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\nfoo\r\n", ProtocolError::ExpectedDollar(b'f')),
            (b"*1\r\n$5\r\nabc\r\n*1\r\n", ProtocolError::ExpectedCrlf),
            (b"SET \"a\"b\r\n", ProtocolError::UnbalancedQuotes),
            (b"SET \"ab\r\n", ProtocolError::UnbalancedQuotes),
        ];
        for (input, err) in cases {
            assert_eq!(parse_all(input), Err(err.clone()), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn long_lines_are_refused_before_they_end() {
        let limits = Limits::default();
        let mut p = RequestParser::new();
        let inline = vec![b'a'; limits.inline_len_max + 1];
        assert_eq!(p.parse(&inline, &limits, true), Err(ProtocolError::TooBigInlineRequest));
        let mut p = RequestParser::new();
        let mut header = b"*".to_vec();
        header.extend(vec![b'1'; limits.inline_len_max + 1]);
        assert_eq!(p.parse(&header, &limits, true), Err(ProtocolError::TooBigMultibulkCountString));
    }

    #[test]
    fn unauthenticated_limits() {
        let mut p = RequestParser::new();
        assert_eq!(p.parse(b"*11\r\n", &Limits::default(), false), Err(ProtocolError::UnauthenticatedMultibulkLength));
        let mut p = RequestParser::new();
        assert_eq!(
            p.parse(b"*1\r\n$16385\r\n", &Limits::default(), false),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
    }

    #[test]
    fn inline_escapes() {
        assert_eq!(
            split_args(br#"a "\x41\n" 'it\'s' "#).unwrap(),
            vec![b"a".to_vec(), b"A\n".to_vec(), b"it's".to_vec()]
        );
        assert_eq!(split_args(b"   ").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(split_args(br#""""#).unwrap(), vec![Vec::<u8>::new()]);
    }
}
