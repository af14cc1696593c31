//! Requests parsed from one read, kept as argument ranges into the read
//! buffer until they run. Running them together lets the store prefetch
//! every request's bucket first: the cache misses of a pipeline overlap
//! instead of queueing (the same idea as Valkey's batch key prefetching).
//! Client connections batch their pipelines; peer connections the
//! replicated writes of a link's batch (`RC.PUT key …`: the key is the
//! first argument too).

use ringcache_protocol::Args;

use crate::store::Store;

/// Requests collected before running them; bounds the prefetch distance.
pub const BATCH_REQUESTS_MAX: usize = 64;

/// See the module.
#[derive(Default)]
pub struct Batch {
    ranges: Vec<(usize, usize)>,
    /// Each request's slice of `ranges`.
    requests: Vec<(usize, usize)>,
}

impl Batch {
    pub fn push(&mut self, ranges: &[(usize, usize)]) {
        let start = self.ranges.len();
        self.ranges.extend_from_slice(ranges);
        self.requests.push((start, self.ranges.len()));
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
        self.requests.clear();
    }

    pub fn args<'a>(&'a self, input: &'a [u8], i: usize) -> Args<'a> {
        let (a, b) = self.requests[i];
        Args::from_ranges(input, &self.ranges[a..b])
    }

    /// Prefetches the bucket of each request's first argument after the
    /// name: the key, for every command with keys (for others it is a
    /// harmless wasted hint).
    pub fn prefetch(&self, store: &Store, input: &[u8]) {
        if self.len() < 2 {
            return;
        }
        for i in 0..self.len() {
            let args = self.args(input, i);
            if args.len() >= 2 {
                store.prefetch(args.get(1));
            }
        }
    }
}
