//! # ringcache-client
//!
//! The embedded async Rust client is not built yet (see the client issue).
//! Today this crate only re-exports the protocol types a client needs, so
//! that the workspace layout of DESIGN.md §1 exists and other crates can
//! depend on it. Use any Redis client (e.g. the `redis` crate) meanwhile.

pub use ringcache_protocol as protocol;
