//! The client's errors. Each says whether the request may have run, which
//! decides whether a retry is safe.

use std::time::Duration;

/// What went wrong with a request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error reply (`ERR ...`, `WRONGTYPE ...`).
    #[error("server error: {0}")]
    Server(String),
    /// The request was never written to any node: it did not run.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The connection broke after the request was written: it may have run.
    #[error("connection lost after sending; the request may have run: {0}")]
    Unknown(String),
    /// Retries ran out of time.
    #[error("gave up after {attempts} attempts in {elapsed:?}: {last}")]
    Deadline {
        /// Tries made.
        attempts: u32,
        /// Time spent since the first.
        elapsed: Duration,
        /// Why the last one failed.
        last: Box<Error>,
    },
    /// No node could tell where slots live.
    #[error("no topology: {0}")]
    NoTopology(String),
    /// The server sent something this call cannot use.
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl Error {
    /// True if the request certainly did not run.
    pub fn not_sent(&self) -> bool {
        matches!(self, Error::NotSent(_))
    }
}

/// The result of a client call.
pub type Result<T> = std::result::Result<T, Error>;
