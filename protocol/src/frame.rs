//! The RESP value model shared by the decoder and the encoder.

use bytes::Bytes;

/// One RESP2 or RESP3 value.
///
/// RESP2's null bulk (`$-1`) and null array (`*-1`) both decode to
/// [`Frame::Null`]; encoding picks the right spelling for the version.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR ...` (the text after `-`).
    Error(Bytes),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// `_` in RESP3, `$-1` / `*-1` in RESP2.
    Null,
    /// `*n`
    Array(Vec<Frame>),
    /// `%n` (RESP3); a flat array of pairs in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// `~n` (RESP3); an array in RESP2.
    Set(Vec<Frame>),
    /// `>n` (RESP3 out-of-band push); an array in RESP2.
    Push(Vec<Frame>),
    /// `,3.14` (RESP3); a bulk string in RESP2.
    Double(f64),
    /// `#t` (RESP3); an integer 1/0 in RESP2.
    Boolean(bool),
    /// `(3492890328409238509324850943850943825024385` (RESP3); bulk in RESP2.
    BigNumber(Bytes),
    /// `=15\r\ntxt:Some string` (RESP3); a bulk of the text in RESP2.
    Verbatim {
        /// The three-letter format (`txt`, `mkd`).
        format: [u8; 3],
        /// The text after `format:`.
        text: Bytes,
    },
    /// `!21\r\nSYNTAX invalid syntax` (RESP3 blob error).
    BlobError(Bytes),
    /// `|n` attributes (RESP3) attached to the frame that follows them.
    /// RESP2 has no attributes: only the frame is encoded.
    Attribute {
        /// The attribute pairs.
        attributes: Vec<(Frame, Frame)>,
        /// The frame they describe.
        frame: Box<Frame>,
    },
}

impl Frame {
    /// A bulk string frame from anything byte-like.
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// A simple string frame.
    pub fn simple(text: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(text.as_bytes()))
    }

    /// The bytes of a simple, bulk or verbatim string, if this is one.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim { text: b, .. } => Some(b),
            _ => None,
        }
    }

    /// Is this an error reply (simple or blob)?
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::BlobError(_))
    }
}
