//! Splicing a batch's replies together in request order.

use super::forward::refused_for_now;
use super::*;
use crate::cluster::coordinate::{Step, fetch_step};

impl Exec {
    pub(super) fn emit(&self, c: &Chunk, to: &mut BytesMut, acked: &HashMap<Arc<str>, bool>, shared: &Shared) {
        match c {
            Chunk::Ready(a, b) => to.extend_from_slice(&self.out[*a..*b]),
            Chunk::Read(r) => to.extend_from_slice(&self.out[r.reply.0..r.reply.1]),
            Chunk::Bytes(b) => to.extend_from_slice(b),
            Chunk::Fetching { reply, fetches } => {
                let refusal = (fetches.0..fetches.1).find_map(|i| {
                    let (slot, verdict) = (self.fetches[i].0, self.verdicts.get(i)?);
                    match fetch_step(slot, verdict, self.fetch_converging, true, false) {
                        Step::Refuse(r) if !r.retryable() => Some(r),
                        _ => None,
                    }
                });
                match refusal {
                    Some(r) => {
                        shared.rebalance.fetch_refusals.fetch_add(1, Relaxed);
                        encode::error(to, &r.text());
                    }
                    None => to.extend_from_slice(&self.out[reply.0..reply.1]),
                }
            }
            Chunk::Forward(i) => match &self.answers[*i] {
                a @ (Answer::Replies(_) | Answer::One(_)) => {
                    let r = a.replies().unwrap_or_default();
                    if r.len() == 1 && refused_for_now(&r[0]) {
                        // Refused for the moment until the deadline passed
                        // (the primary could not settle the key, or the
                        // tables kept moving): not run, which is what a
                        // client is told, not "try again" (the sending
                        // again happened here).
                        let text = String::from_utf8_lossy(&r[0][1..r[0].len().saturating_sub(2)]).into_owned();
                        let text = format!("CLUSTERDOWN the key's owners did not settle in time (not run): {text}");
                        encode::error(to, text.as_bytes());
                    } else {
                        for b in r {
                            to.extend_from_slice(b);
                        }
                    }
                }
                Answer::Unreachable | Answer::Waiting(_) | Answer::Reading(_) | Answer::Queued => {
                    encode::error(to, b"CLUSTERDOWN the primary of this key is unreachable (not sent)")
                }
                // (`await_calls` resolves every call first: sent, no answer.)
                Answer::Unknown | Answer::InCall { .. } => encode::error(
                    to,
                    b"TIMEOUT no answer from the primary of this key in time; the command may have run",
                ),
            },
            Chunk::Quorum { reply, items } => {
                let short = self.items[items.0..items.1].iter().find_map(|it| it.short(acked));
                match short {
                    None => to.extend_from_slice(&self.out[reply.0..reply.1]),
                    Some((have, need)) => {
                        shared.metrics.quorum_failures.fetch_add(1, Relaxed);
                        let text = format!(
                            "TIMEOUT write quorum not reached ({have} of {need} owners acknowledged in time); \
                             the write is applied on the primary and may reach the others later"
                        );
                        encode::error(to, text.as_bytes());
                    }
                }
            }
            Chunk::Gather { parts, combine, v, order } => {
                let mut frames = Vec::with_capacity(parts.len());
                // Replies of authenticated peers and of this node.
                let limits = crate::cluster::protocol::REPLY_LIMITS;
                for p in parts {
                    let mut buf = BytesMut::new();
                    self.emit(p, &mut buf, acked, shared);
                    match decode_frame(&buf, &limits) {
                        Ok(Some((f, _))) => frames.push(f),
                        _ => frames.push(Frame::Error(Bytes::from_static(b"ERR malformed reply from a peer"))),
                    }
                }
                encode::encode_frame(to, &gather(*combine, frames, order), *v);
            }
        }
    }
}

/// Combines the parts' replies. An error wins; if other parts succeeded,
/// the command partly ran, which a `CLUSTERDOWN` (meaning "did not run")
/// must not claim: the reply then says so.
pub(super) fn gather(combine: Combine, frames: Vec<Frame>, order: &[usize]) -> Frame {
    if let Some(e) = frames.iter().find(|f| f.is_error()) {
        let ran = frames.iter().filter(|f| !f.is_error()).count();
        let text = match e {
            Frame::Error(b) | Frame::BlobError(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        if ran > 0 && text.starts_with("CLUSTERDOWN") {
            let text = format!(
                "TIMEOUT {ran} of {} parts of this multi-key command ran; another failed: {text}",
                frames.len()
            );
            return Frame::Error(text.into());
        }
        return e.clone();
    }
    match combine {
        Combine::Sum => Frame::Integer(frames.iter().map(|f| if let Frame::Integer(n) = f { *n } else { 0 }).sum()),
        Combine::AllOk => Frame::Simple(Bytes::from_static(b"OK")),
        Combine::Concat => Frame::Array(
            frames.into_iter().flat_map(|f| if let Frame::Array(a) = f { a } else { Vec::new() }).collect(),
        ),
        Combine::Mget => {
            let values = frames.into_iter().flat_map(|f| if let Frame::Array(a) = f { a } else { Vec::new() });
            let mut out = vec![Frame::Null; order.len()];
            for (v, &at) in values.zip(order) {
                out[at] = v;
            }
            Frame::Array(out)
        }
        Combine::Scan { member, members } => {
            let Some(Frame::Array(mut a)) = frames.into_iter().next() else {
                return Frame::Error(Bytes::from_static(b"ERR malformed SCAN reply from a peer"));
            };
            if a.len() != 2 {
                return Frame::Error(Bytes::from_static(b"ERR malformed SCAN reply from a peer"));
            }
            let next = a[0].as_bytes().and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok()).unwrap_or(0);
            let cursor = if next != 0 {
                (u64::from(member) << SCAN_MEMBER_SHIFT) | next
            } else if member + 1 < members {
                u64::from(member + 1) << SCAN_MEMBER_SHIFT
            } else {
                0
            };
            a[0] = Frame::bulk(cursor.to_string());
            Frame::Array(a)
        }
    }
}
