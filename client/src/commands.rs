//! The typed commands of [`Client`] (`get`, `set`, `incr_by`, `mget`...),
//! each one request (or one per slot for the multi-key ones) through the
//! client's routing and retries.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ringcache_protocol::{Frame, key_slot};

use crate::routing::{routing_key, text};
use crate::{Client, Error, Pipeline, Result};

/// The TTL of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No such key.
    Missing,
    /// The key has no TTL.
    Persistent,
    /// The key expires after this long.
    Expires(Duration),
}

impl Client {
    /// A pipeline: commands queued here are sent together, one batch per
    /// node, when [`Pipeline::execute`] runs.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.clone())
    }

    /// Sends any command, routed by its first key (or to any node for
    /// keyless commands). Error replies become [`Error::Server`].
    pub async fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Frame> {
        self.run(routing_key(args), args).await
    }

    /// PING any node.
    pub async fn ping(&self) -> Result<()> {
        self.run(None, &["PING"]).await.map(|_| ())
    }

    /// GET: the value, or None for a missing key.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let k = key.as_ref();
        bulk_opt(self.run(Some(k), &[b"GET".as_slice(), k]).await?)
    }

    /// SET without options.
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let k = key.as_ref();
        self.run(Some(k), &[b"SET".as_slice(), k, value.as_ref()]).await.map(|_| ())
    }

    /// SET with a TTL (PX).
    pub async fn set_ex(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, ttl: Duration) -> Result<()> {
        let k = key.as_ref();
        let ms = ttl.as_millis().max(1).to_string();
        self.run(Some(k), &[b"SET".as_slice(), k, value.as_ref(), b"PX", ms.as_bytes()]).await.map(|_| ())
    }

    /// SET NX: true if the key was set.
    pub async fn set_nx(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        let k = key.as_ref();
        Ok(!matches!(self.run(Some(k), &[b"SET".as_slice(), k, value.as_ref(), b"NX"]).await?, Frame::Null))
    }

    /// GETDEL: the value it deleted, if any.
    pub async fn getdel(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let k = key.as_ref();
        bulk_opt(self.run(Some(k), &[b"GETDEL".as_slice(), k]).await?)
    }

    /// INCRBY: the new value.
    pub async fn incr_by(&self, key: impl AsRef<[u8]>, by: i64) -> Result<i64> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"INCRBY".as_slice(), k, by.to_string().as_bytes()]).await?)
    }

    /// INCRBYFLOAT; the new value (a bulk string in RESP2, and in RESP3 a
    /// bulk or a double, both read).
    pub async fn incr_by_float(&self, key: impl AsRef<[u8]>, by: f64) -> Result<f64> {
        let k = key.as_ref();
        float(self.run(Some(k), &[b"INCRBYFLOAT".as_slice(), k, by.to_string().as_bytes()]).await?)
    }

    /// APPEND: the new length.
    pub async fn append(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"APPEND".as_slice(), k, value.as_ref()]).await?).map(|n| n as u64)
    }

    /// STRLEN (0 for a missing key).
    pub async fn strlen(&self, key: impl AsRef<[u8]>) -> Result<u64> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"STRLEN".as_slice(), k]).await?).map(|n| n as u64)
    }

    /// Sets a TTL; false if the key does not exist.
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<bool> {
        let k = key.as_ref();
        let ms = ttl.as_millis().to_string();
        int(self.run(Some(k), &[b"PEXPIRE".as_slice(), k, ms.as_bytes()]).await?).map(|n| n == 1)
    }

    /// PERSIST: whether a TTL was removed.
    pub async fn persist(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let k = key.as_ref();
        int(self.run(Some(k), &[b"PERSIST".as_slice(), k]).await?).map(|n| n == 1)
    }

    /// PTTL as a [`Ttl`].
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Ttl> {
        let k = key.as_ref();
        Ok(match int(self.run(Some(k), &[b"PTTL".as_slice(), k]).await?)? {
            -2 => Ttl::Missing,
            -1 => Ttl::Persistent,
            ms => Ttl::Expires(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    /// Keys grouped by slot, each group with the positions it came from.
    fn by_slot<K: AsRef<[u8]>>(keys: &[K]) -> Vec<Vec<usize>> {
        let mut groups: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            groups.entry(key_slot(k.as_ref())).or_default().push(i);
        }
        let mut out: Vec<Vec<usize>> = groups.into_values().collect();
        out.sort();
        out
    }

    /// MGET over any keys: split by slot, sent concurrently, answered in order.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let mut out = vec![None; keys.len()];
        let mut tasks = tokio::task::JoinSet::new();
        for group in Self::by_slot(keys) {
            let mut args: Vec<Bytes> = vec![Bytes::from_static(b"MGET")];
            args.extend(group.iter().map(|&i| Bytes::copy_from_slice(keys[i].as_ref())));
            let c = self.clone();
            tasks.spawn(async move { (group, c.run(Some(&args[1].clone()), &args).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (group, reply) = done.map_err(|e| Error::Protocol(format!("task: {e}")))?;
            let Frame::Array(items) = reply? else { return Err(Error::Protocol("MGET reply is not an array".into())) };
            for (&i, item) in group.iter().zip(items) {
                out[i] = bulk_opt(item)?;
            }
        }
        Ok(out)
    }

    /// MSET over any keys: split by slot (atomic within a slot only).
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) -> Result<()> {
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| k.as_ref()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for group in Self::by_slot(&keys) {
            let mut args: Vec<Bytes> = vec![Bytes::from_static(b"MSET")];
            for &i in &group {
                args.push(Bytes::copy_from_slice(pairs[i].0.as_ref()));
                args.push(Bytes::copy_from_slice(pairs[i].1.as_ref()));
            }
            let c = self.clone();
            tasks.spawn(async move { c.run(Some(&args[1].clone()), &args).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| Error::Protocol(format!("task: {e}")))??;
        }
        Ok(())
    }

    async fn count_by_slot<K: AsRef<[u8]>>(&self, name: &'static [u8], keys: &[K]) -> Result<u64> {
        let mut tasks = tokio::task::JoinSet::new();
        for group in Self::by_slot(keys) {
            let mut args: Vec<Bytes> = vec![Bytes::from_static(name)];
            args.extend(group.iter().map(|&i| Bytes::copy_from_slice(keys[i].as_ref())));
            let c = self.clone();
            tasks.spawn(async move { c.run(Some(&args[1].clone()), &args).await });
        }
        let mut total = 0;
        while let Some(done) = tasks.join_next().await {
            total += int(done.map_err(|e| Error::Protocol(format!("task: {e}")))??)? as u64;
        }
        Ok(total)
    }

    /// DEL over any keys; the number deleted.
    pub async fn del<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        self.count_by_slot(b"DEL", keys).await
    }

    /// EXISTS over any keys; how many exist (duplicates count).
    pub async fn exists<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        self.count_by_slot(b"EXISTS", keys).await
    }

    /// Keys in the whole cluster, each counted once (any node answers
    /// for the cluster: it asks every primary for its share).
    pub async fn dbsize(&self) -> Result<u64> {
        Ok(int(self.run(None, &["DBSIZE"]).await?)? as u64)
    }
}

pub(crate) fn bulk_opt(f: Frame) -> Result<Option<Bytes>> {
    match f {
        Frame::Bulk(b) => Ok(Some(b)),
        Frame::Null => Ok(None),
        other => Err(Error::Protocol(format!("expected a bulk string, got {other:?}"))),
    }
}

pub(crate) fn float(f: Frame) -> Result<f64> {
    match &f {
        Frame::Double(d) => Ok(*d),
        other => text(other)
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Protocol(format!("expected a number, got {f:?}"))),
    }
}

pub(crate) fn int(f: Frame) -> Result<i64> {
    match f {
        Frame::Integer(n) => Ok(n),
        other => Err(Error::Protocol(format!("expected an integer, got {other:?}"))),
    }
}
