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

pub mod cluster;
pub mod command;
pub mod config;
pub mod metrics;
pub mod net;
pub mod node;
pub mod process;
pub mod shared;
pub mod store;
