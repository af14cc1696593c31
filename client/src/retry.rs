//! When a command may be tried again: which failures mean it never ran,
//! which commands are safe to run twice, and the pacing of the retries.

use std::time::{Duration, Instant};

use ringcache_protocol::Frame;

use crate::{Error, Options, Result};

/// Whether a command may be sent again when the connection broke after
/// sending it: running it twice leaves the same state *and* gives the same
/// answer. Not so: `SET ... NX` (the second run answers nil) and `SET ...
/// GET` (it answers the value the first run wrote), `DEL`/`UNLINK`/`PERSIST`
/// (the second run counts 0), and every read-modify-write (INCR, APPEND...).
pub(crate) fn idempotent<A: AsRef<[u8]>>(args: &[A]) -> bool {
    const SAFE: &[&str] = &[
        "GET",
        "MGET",
        "EXISTS",
        "TTL",
        "PTTL",
        "STRLEN",
        "GETRANGE",
        "TYPE",
        "PING",
        "ECHO",
        "DBSIZE",
        "SET",
        "MSET",
        "PEXPIREAT",
        "EXPIREAT",
        "CLUSTER",
        "INFO",
        "KEYS",
        "SCAN",
        "TOUCH",
    ];
    let Some(name) = args.first().map(AsRef::as_ref) else { return false };
    if !SAFE.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(name)) {
        return false;
    }
    if name.eq_ignore_ascii_case(b"SET") {
        // Options follow the key and the value.
        let answer_changes = |o: &[u8]| o.eq_ignore_ascii_case(b"NX") || o.eq_ignore_ascii_case(b"GET");
        return !args.iter().skip(3).any(|o| answer_changes(o.as_ref()));
    }
    true
}

pub(crate) fn server_error(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Error(e) | Frame::BlobError(e) => Some(String::from_utf8_lossy(e).into_owned()),
        _ => None,
    }
}

/// What one try of a command came to.
pub(crate) enum Outcome {
    Done(Result<Frame>),
    /// Safe to try again (after a refresh when `moved`).
    Retry(Error),
}

/// Sorts a reply (or a failure to get one) into done or retryable.
pub(crate) fn classify<A: AsRef<[u8]>>(reply: Result<Frame>, args: &[A]) -> Outcome {
    match reply {
        Ok(frame) => match server_error(&frame) {
            // MOVED and TRYAGAIN mean the command did not run here.
            Some(e) if e.starts_with("MOVED ") || e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN") => {
                Outcome::Retry(Error::NotSent(e))
            }
            Some(e) => Outcome::Done(Err(Error::Server(e))),
            None => Outcome::Done(Ok(frame)),
        },
        Err(e) if e.not_sent() || (matches!(e, Error::Unknown(_)) && idempotent(args)) => Outcome::Retry(e),
        Err(e) => Outcome::Done(Err(e)),
    }
}

pub(crate) fn is_moved(e: &Error) -> bool {
    matches!(e, Error::NotSent(m) if m.starts_with("MOVED "))
}

/// Retry pacing of one call: started lazily, so the common path reads no
/// clock.
pub(crate) struct Retry {
    pub(crate) started: Option<Instant>,
    pub(crate) backoff: Duration,
    pub(crate) attempts: u32,
}

impl Retry {
    pub(crate) fn new(opts: &Options) -> Self {
        Retry { started: None, backoff: opts.backoff_min, attempts: 0 }
    }

    /// After a failed try: the error to give up with once past the
    /// deadline, else waits (unless `moved`, where the refresh is the cure).
    pub(crate) async fn wait(&mut self, opts: &Options, last: Error) -> Result<()> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if started.elapsed() >= opts.deadline {
            return Err(Error::Deadline { attempts: self.attempts, elapsed: started.elapsed(), last: Box::new(last) });
        }
        if !is_moved(&last) {
            tokio::time::sleep(self.backoff.min(opts.deadline.saturating_sub(started.elapsed()))).await;
            self.backoff = (self.backoff * 2).min(opts.backoff_max);
        }
        Ok(())
    }
}
