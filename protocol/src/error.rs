//! Protocol errors. Their `Display` text is what Redis says after `-ERR `,
//! so clients and operators see the messages they already know.

use std::fmt;

/// A framing error: the connection that produced it cannot be trusted to be
/// in sync any more and is closed after the error reply (as Redis does).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    InvalidMultibulkLength,
    InvalidBulkLength,
    UnauthenticatedMultibulkLength,
    UnauthenticatedBulkLength,
    ExpectedDollar(u8),
    ExpectedCrlf,
    TooBigInlineRequest,
    TooBigMultibulkCountString,
    TooBigBulkCountString,
    UnbalancedQuotes,
    /// A reply frame (not a request) was malformed; the text says how.
    InvalidFrame(&'static str),
    NestingTooDeep,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::UnauthenticatedMultibulkLength => f.write_str("unauthenticated multibulk length"),
            ProtocolError::UnauthenticatedBulkLength => f.write_str("unauthenticated bulk length"),
            ProtocolError::ExpectedDollar(c) => {
                write!(f, "expected '$', got '{}'", char::from(*c).escape_default())
            }
            ProtocolError::ExpectedCrlf => f.write_str("expected CRLF after bulk string"),
            ProtocolError::TooBigInlineRequest => f.write_str("too big inline request"),
            ProtocolError::TooBigMultibulkCountString => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCountString => f.write_str("too big bulk count string"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::InvalidFrame(what) => f.write_str(what),
            ProtocolError::NestingTooDeep => f.write_str("frame nesting too deep"),
        }
    }
}

impl std::error::Error for ProtocolError {}
