//! # ringcache-server
//!
//! A ringcache node. The layout keeps every dependency pointing down:
//!
//! - [`net`]: every socket (client connections, admin HTTP) and the tasks
//!   that drive the modules below. The only place that knows about IO.
//! - [`command`]: one file per command family; parse → act → reply.
//! - [`store`]: the keyspace, expiry, eviction, memory accounting. Pure:
//!   time is passed in.
//! - [`cluster`]: pure cluster state machines (versions now; membership,
//!   ring, replication and rebalancing as they land). No tokio, no clock.
//! - [`config`], [`shared`], [`metrics`], [`process`]: configuration, the
//!   state connections share, Prometheus exposition, /proc readings.
//! - [`node`]: the composition root that binds sockets and starts tasks.
//!
//! `net` → `command` → `store`/`cluster` → `ringcache-protocol`.

#[deny(missing_docs)]
pub mod cluster;
pub mod command;
pub mod config;
pub mod metrics;
pub mod net;
pub mod node;
pub mod peers;
pub mod process;
pub mod shared;
pub mod store;
pub mod tls;

#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Dependencies point down: only `node` and `main` name `net`; the
    /// pure layers (`cluster`, `store`) name nothing above them.
    #[test]
    fn dependencies_point_down() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        // Spelled in pieces so this file does not match itself.
        let net = [concat!("crate::", "net"), concat!("super::", "net::"), concat!("use ", "net")];
        let above_pure = ["shared", "command", "net", "peers", "metrics", "tls", "node"]
            .map(|m| format!("{}{m}", concat!("crate", "::")));
        for path in all {
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            if !(rel.starts_with("net/") || rel == "node.rs" || rel == "main.rs" || rel == "lib.rs") {
                for n in net {
                    assert!(!text.contains(n), "{rel} names {n}: only node.rs drives net/");
                }
            }
            if rel.starts_with("cluster/") || rel.starts_with("store/") {
                for m in &above_pure {
                    assert!(!text.contains(m.as_str()), "{rel} names {m}, a layer above it");
                }
            }
        }
    }
}
