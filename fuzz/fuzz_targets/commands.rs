//! Fuzzes command argument parsing and execution: arbitrary argument lists
//! for every command, run through the real dispatcher against a real store
//! (in process, no sockets), in RESP2 and RESP3. Checked: no panic, every
//! request gets exactly one well-formed reply, and the store's memory
//! accounting stays consistent (`used_memory` never wraps).
//!
//! Input: byte 0 picks the command (so every command gets coverage), byte 1
//! the protocol version and the clock offset; the rest is split on 0xFF
//! into arguments. A small keyspace is shared across runs, so commands see
//! keys other inputs created.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringcache_protocol::{Args, Limits, Version, decode_frame};
use ringcache_server::cluster::topology::{NodeInfo, Topology};
use ringcache_server::command::{COMMANDS, ConnState, Ctx, Reply, execute};
use ringcache_server::config::Config;
use ringcache_server::shared::{LocalStats, Shared};

fn shared() -> &'static Arc<Shared> {
    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let addr: SocketAddr = "127.0.0.1:6379".parse().unwrap();
        let config = Config::default();
        let topology = Topology::single(NodeInfo::new("fuzz", addr, 16379, 1), 3, 16);
        let s = Arc::new(Shared::new(config, 1_700_000_000_000, topology));
        s.store.set_maxmemory(4 * 1024 * 1024);
        s.store.set_policy(ringcache_server::store::Policy::AllKeysLru);
        s
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let shared = shared();
    let spec = &COMMANDS[usize::from(data[0]) % COMMANDS.len()];
    // SHUTDOWN would only set a flag; keep the fuzzer's process state simple.
    if spec.name == "shutdown" {
        return;
    }
    let version = if data[1] & 1 == 0 { Version::Resp2 } else { Version::Resp3 };
    let now_ms = 1_700_000_000_000 + u64::from(data[1] >> 1) * 997;
    let mut args: Vec<&[u8]> = vec![spec.name.as_bytes()];
    args.extend(data[2..].split(|&b| b == 0xFF).take(64));
    let addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let Some(info) = shared.clients.register(addr, addr, now_ms, 1 << 20) else { return };
    let mut conn = ConnState::new(info.clone(), false);
    conn.resp = version;
    let mut out = BytesMut::new();
    let mut stats = LocalStats::default();
    {
        let mut ctx = Ctx { shared, conn: &mut conn, out: Reply { buf: &mut out, v: version }, now_ms, stats: &mut stats };
        execute(&mut ctx, Args::from_slices(&args));
    }
    shared.clients.unregister(info.id);
    // Exactly one complete reply frame (SHUTDOWN aside, every command answers).
    let (frame, used) = decode_frame(&out, &Limits::default())
        .expect("the reply is valid RESP")
        .unwrap_or_else(|| panic!("{} wrote an incomplete reply: {:?}", spec.name, String::from_utf8_lossy(&out)));
    assert_eq!(used, out.len(), "{} wrote more than one reply", spec.name);
    let _ = frame;
    assert!(shared.store.used_memory() < 1 << 40, "used_memory wrapped: {}", shared.store.used_memory());
});
