//! Protocol errors. Their `Display` text is what Redis says after `-ERR `,
//! so clients and operators see the messages they already know.

use std::fmt;

/// A framing error: the connection that produced it cannot be trusted to be
/// in sync any more and is closed after the error reply (as Redis does).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*n` with n not a number or above the multibulk limit.
    InvalidMultibulkLength,
    /// `$n` with n not a number or above the bulk limit.
    InvalidBulkLength,
    /// More arguments than an unauthenticated connection may send.
    UnauthenticatedMultibulkLength,
    /// A longer argument than an unauthenticated connection may send.
    UnauthenticatedBulkLength,
    /// An argument of a multibulk request did not start with `$`.
    ExpectedDollar(u8),
    /// A bulk string was not followed by CRLF.
    ExpectedCrlf,
    /// An inline request longer than the inline limit.
    TooBigInlineRequest,
    /// A `*` header line longer than the inline limit.
    TooBigMultibulkCountString,
    /// A `$` header line longer than the inline limit.
    TooBigBulkCountString,
    /// An inline request with an unclosed quote.
    UnbalancedQuotes,
    /// A reply frame (not a request) was malformed; the text says how.
    InvalidFrame(&'static str),
    /// Aggregates nested deeper than the nesting limit.
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
