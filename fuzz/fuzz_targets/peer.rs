//! Fuzzes the peer protocol as an authenticated member would speak it:
//! arbitrary bytes through the request parser under the peer limits, then
//! the typed decoder; and arbitrary bytes as a reply to every request kind.
//!
//! Checked on every input: no panic; a request that decodes re-encodes to
//! bytes that parse and decode to the same request; a reply that decodes
//! to a value re-encodes and decodes to the same value.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcache_protocol::RequestParser;
use ringcache_server::cluster::protocol::{Kind, LIMITS, Reply, Request};

const KINDS: [Kind; 13] = [
    Kind::Hello,
    Kind::Auth,
    Kind::Put,
    Kind::Del,
    Kind::Read,
    Kind::Forward,
    Kind::SlotDone,
    Kind::DropOk,
    Kind::Sending,
    Kind::Digests,
    Kind::Sums,
    Kind::KeyVersions,
    Kind::Ping,
];

fuzz_target!(|data: &[u8]| {
    let mut parser = RequestParser::new();
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        match parser.parse(rest, &LIMITS, true) {
            Ok(true) => {
                if let Ok(req) = Request::decode(parser.args(rest)) {
                    let wire = req.to_bytes();
                    let mut again = RequestParser::new();
                    assert_eq!(again.parse(&wire, &LIMITS, true), Ok(true), "an encoded request parses");
                    assert_eq!(again.consumed(), wire.len());
                    assert_eq!(Request::decode(again.args(&wire)).as_ref(), Ok(&req), "round trip");
                }
                let used = parser.consumed();
                if used == 0 {
                    break;
                }
                at += used;
                parser = RequestParser::new();
            }
            Ok(false) | Err(_) => break,
        }
    }
    if let Some(&k) = data.first() {
        let kind = KINDS[usize::from(k) % KINDS.len()];
        let reply = Reply::parse(kind, &data[1..]);
        let mut wire = BytesMut::new();
        reply.encode(&mut wire);
        assert_eq!(Reply::parse(kind, &wire), reply, "reply round trip");
    }
});
