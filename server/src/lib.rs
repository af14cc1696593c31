//! # ringcache-server
pub mod store;
