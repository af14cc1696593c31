//! A Jepsen-style workload and checker for the fault suite.
//!
//! Workers (threads) issue SET, GET, DEL and INCR through plain RESP
//! connections to any node they are given, and record every operation:
//! when it was invoked and completed, and its outcome: `Ok` (acknowledged),
//! `Fail` (the server said it did not run: `-CLUSTERDOWN`, `-TRYAGAIN`,
//! `-OOM`), `Unknown` (`-TIMEOUT` or any other error: it may have run, and
//! if so before the answer), or `NoReply` (a lost connection or no reply
//! in time: it may take effect at any later time). Values are unique
//! (`w<worker>-<seq>`), so a read names the write it saw.
//!
//! Each key belongs to one worker, which works on it one operation at a
//! time: the key's history is a sequence, so "the newest acknowledged
//! write" is well defined (writes from one client in order carry growing
//! versions, so last-writer-wins keeps that order). The checker then finds:
//! - reads of a value that no SET that may have run wrote (phantoms);
//! - at the end, after healing: a key whose value is neither its last
//!   acknowledged write, nor a later write that may have run, nor a write
//!   that got no reply at all (a lost acknowledged write; a resurrected
//!   delete when that write was a DEL);
//! - a counter outside [acknowledged INCRs, acknowledged + unknown INCRs];
//! - owners of a key that disagree once the cluster has converged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Set(String),
    Get,
    Del,
    Incr,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: for GET the value read, for INCR the new count.
    Ok(Option<String>),
    /// Definitely did not run.
    Fail(String),
    /// The server said it may have run (`-TIMEOUT`): if it did, it took
    /// effect before that answer.
    Unknown(String),
    /// No answer (lost connection, client timeout): it may still take
    /// effect at any later time (e.g. a paused node that runs it when it
    /// resumes).
    NoReply(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub worker: usize,
    /// The node the worker sent it to.
    pub node: SocketAddr,
    pub key: String,
    pub kind: Kind,
    pub invoked: Duration,
    pub completed: Duration,
    pub outcome: Outcome,
}

/// Workload settings.
#[derive(Debug, Clone)]
pub struct Workload {
    pub workers: usize,
    /// Plain keys per worker (each also has one counter).
    pub keys_per_worker: usize,
    /// Upper bound of operations per worker.
    pub max_ops: usize,
    /// A pause between one worker's operations (keeps 2 CPUs usable).
    pub think: Duration,
    /// How long a reply may take before the operation counts as unknown.
    pub timeout: Duration,
    /// 0: each worker increments its own counter. n > 0: every worker
    /// increments one of n counters shared by all (the same keys written
    /// from both sides of a partition).
    pub shared_counters: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            workers: 6,
            keys_per_worker: 8,
            max_ops: 20_000,
            think: Duration::from_millis(1),
            timeout: Duration::from_secs(3),
            shared_counters: 0,
        }
    }
}

/// A running workload; [`Running::stop`] ends it and returns the history.
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    ops: Arc<Mutex<Vec<Op>>>,
    done: Arc<AtomicU64>,
    pub start: Instant,
}

/// The nodes each worker may talk to; a worker picks one at random per
/// operation among those it is given.
pub type Targets = Arc<Mutex<Vec<Vec<SocketAddr>>>>;

/// Gives every worker the same node list.
pub fn targets(workers: usize, addrs: &[SocketAddr]) -> Targets {
    Arc::new(Mutex::new(vec![addrs.to_vec(); workers]))
}

pub fn plain_key(worker: usize, i: usize) -> String {
    format!("jk:{worker}:{i}")
}

pub fn counter_key(worker: usize) -> String {
    format!("jc:{worker}")
}

impl Workload {
    pub fn start(&self, targets: Targets) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let threads = (0..self.workers)
            .map(|w| {
                let (stop, ops, done, targets, cfg) =
                    (stop.clone(), ops.clone(), done.clone(), targets.clone(), self.clone());
                std::thread::spawn(move || worker(w, cfg, targets, stop, ops, done, start))
            })
            .collect();
        Running { stop, threads, ops, done, start }
    }
}

impl Running {
    /// Operations completed so far.
    pub fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Lets the workload run until `n` more operations completed (bounded
    /// by `limit`): scenarios step by work done, not by the clock alone.
    pub fn run_for(&self, n: u64, limit: Duration) {
        let target = self.count() + n;
        let deadline = Instant::now() + limit;
        while self.count() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            t.join().expect("worker thread");
        }
        let mut ops = std::mem::take(&mut *self.ops.lock().unwrap());
        ops.sort_by_key(|o| o.invoked);
        ops
    }
}

impl Drop for Running {
    /// A scenario that panics before [`Running::stop`] stops its workers
    /// too (they are detached then: nobody waits for them).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A small seeded generator (xorshift64*): workers need no real randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

fn worker(
    w: usize,
    cfg: Workload,
    targets: Targets,
    stop: Arc<AtomicBool>,
    ops: Arc<Mutex<Vec<Op>>>,
    done: Arc<AtomicU64>,
    start: Instant,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1).wrapping_mul(0x1000_0000_01B3));
    let mut conns: HashMap<SocketAddr, redis::Connection> = HashMap::new();
    let mut local = Vec::new();
    for seq in 0..cfg.max_ops {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let addrs = targets.lock().unwrap()[w].clone();
        if addrs.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let addr = addrs[rng.below(addrs.len())];
        let roll = rng.below(100);
        let (key, kind) = if roll < 15 {
            let key = match cfg.shared_counters {
                0 => counter_key(w),
                n => format!("jc:shared{}", rng.below(n)),
            };
            (key, Kind::Incr)
        } else {
            let key = plain_key(w, rng.below(cfg.keys_per_worker));
            match roll {
                15..=54 => (key, Kind::Set(format!("w{w}-{seq}"))),
                55..=89 => (key, Kind::Get),
                _ => (key, Kind::Del),
            }
        };
        let invoked = start.elapsed();
        let outcome = perform(&mut conns, addr, &key, &kind, cfg.timeout);
        local.push(Op { worker: w, node: addr, key, kind, invoked, completed: start.elapsed(), outcome });
        done.fetch_add(1, Ordering::Relaxed);
        if local.len() >= 256 {
            ops.lock().unwrap().append(&mut local);
        }
        std::thread::sleep(cfg.think);
    }
    ops.lock().unwrap().append(&mut local);
}

fn perform(
    conns: &mut HashMap<SocketAddr, redis::Connection>,
    addr: SocketAddr,
    key: &str,
    kind: &Kind,
    timeout: Duration,
) -> Outcome {
    let conn = match conns.entry(addr) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let client = redis::Client::open(format!("redis://{addr}/")).expect("url");
            match client.get_connection_with_timeout(Duration::from_secs(1)) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(timeout));
                    let _ = c.set_write_timeout(Some(timeout));
                    v.insert(c)
                }
                // Never connected: nothing was sent.
                Err(e) => return Outcome::Fail(format!("connect: {e}")),
            }
        }
    };
    let cmd = match kind {
        Kind::Set(v) => {
            let mut c = redis::cmd("SET");
            c.arg(key).arg(v);
            c
        }
        Kind::Get => {
            let mut c = redis::cmd("GET");
            c.arg(key);
            c
        }
        Kind::Del => {
            let mut c = redis::cmd("DEL");
            c.arg(key);
            c
        }
        Kind::Incr => {
            let mut c = redis::cmd("INCR");
            c.arg(key);
            c
        }
    };
    match cmd.query::<redis::Value>(conn) {
        Ok(v) => Outcome::Ok(match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            redis::Value::Int(n) if *kind == Kind::Incr => Some(n.to_string()),
            _ => None,
        }),
        Err(e) => {
            let text = e.to_string();
            if e.kind() == redis::ErrorKind::IoError || e.is_timeout() || e.is_connection_dropped() {
                conns.remove(&addr);
                return Outcome::NoReply(text);
            }
            classify_error(&text, e.code())
        }
    }
}

/// A server error reply: the prefixes documented as "did not run" are
/// failures, anything else may have run.
fn classify_error(text: &str, code: Option<&str>) -> Outcome {
    match code {
        Some("CLUSTERDOWN" | "TRYAGAIN" | "OOM") => Outcome::Fail(text.to_string()),
        _ => Outcome::Unknown(text.to_string()),
    }
}

/// What the checker found, and the run's figures.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub ops: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub phantom_reads: Vec<String>,
    pub lost_writes: Vec<String>,
    pub resurrected_deletes: Vec<String>,
    pub counter_errors: Vec<String>,
    pub disagreements: Vec<String>,
    /// From the end of the last fault (heal, restart, resume) until every
    /// node agreed on the members and slot table, with links up and no
    /// slot importing.
    pub converge: Duration,
    /// From the end of the workload until the final state passed every
    /// check (owners agreeing included).
    pub settle: Duration,
    /// Stale reads during the run (a value older than the last
    /// acknowledged write at the read's start): allowed with R=1 during a
    /// failover, reported only.
    pub stale_reads: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.phantom_reads.is_empty()
            && self.lost_writes.is_empty()
            && self.resurrected_deletes.is_empty()
            && self.counter_errors.is_empty()
            && self.disagreements.is_empty()
    }

    /// One line for the test output and TESTING.md.
    pub fn line(&self, scenario: &str) -> String {
        format!(
            "{scenario}: ops={} ok={} failed={} unknown={} lost_acked_writes={} resurrected_deletes={} \
             phantom_reads={} counter_errors={} owner_disagreements={} stale_reads={} converge_ms={} settle_ms={}",
            self.ops,
            self.ok,
            self.failed,
            self.unknown,
            self.lost_writes.len(),
            self.resurrected_deletes.len(),
            self.phantom_reads.len(),
            self.counter_errors.len(),
            self.disagreements.len(),
            self.stale_reads,
            self.converge.as_millis(),
            self.settle.as_millis()
        )
    }
}

/// The states a key may be in after `ops` (one worker's sequence):
/// `None` is absent. Also the last acknowledged write.
struct Possible<'a> {
    allowed: Vec<Option<String>>,
    /// Writes that got no reply: possible from then on, forever.
    late: Vec<Option<String>>,
    last_ok: Option<&'a Op>,
}

impl<'a> Possible<'a> {
    fn new() -> Self {
        Possible { allowed: vec![None], late: Vec::new(), last_ok: None }
    }

    fn allows(&self, state: &Option<String>) -> bool {
        self.allowed.contains(state) || self.late.contains(state)
    }

    fn after(&mut self, o: &'a Op) {
        let state = match &o.kind {
            Kind::Set(v) => Some(v.clone()),
            Kind::Del => None,
            _ => return,
        };
        match o.outcome {
            Outcome::Ok(_) => {
                self.allowed = vec![state];
                self.last_ok = Some(o);
            }
            Outcome::Unknown(_) => self.allowed.push(state),
            Outcome::NoReply(_) => self.late.push(state),
            Outcome::Fail(_) => {}
        }
    }
}

/// Checks a history against the final state read from the cluster.
/// `final_value(key)` reads the key through the cluster (after healing);
/// `owner_values(key)` reads it from every owner directly.
pub fn check(
    ops: &[Op],
    final_value: &mut dyn FnMut(&str) -> Option<String>,
    owner_values: &mut dyn FnMut(&str) -> Vec<Option<String>>,
) -> Report {
    let mut r = Report { ops: ops.len(), ..Report::default() };
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for o in ops {
        match o.outcome {
            Outcome::Ok(_) => r.ok += 1,
            Outcome::Fail(_) => r.failed += 1,
            Outcome::Unknown(_) | Outcome::NoReply(_) => r.unknown += 1,
        }
        by_key.entry(o.key.as_str()).or_default().push(o);
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort();
    for key in keys {
        let ops = &by_key[key];
        if key.starts_with("jc:") {
            check_counter(key, ops, final_value(key), &mut r);
        } else {
            check_plain(key, ops, final_value(key), &mut r);
        }
        let owners = owner_values(key);
        if owners.windows(2).any(|w| w[0] != w[1]) {
            r.disagreements.push(format!("{key}: owners hold {owners:?}"));
        }
    }
    r
}

fn check_plain(key: &str, ops: &[&Op], fin: Option<String>, r: &mut Report) {
    // Every value a read returned was written by a SET that may have run.
    let written: std::collections::HashSet<&str> = ops
        .iter()
        .filter_map(|o| match (&o.kind, &o.outcome) {
            (Kind::Set(v), Outcome::Ok(_) | Outcome::Unknown(_) | Outcome::NoReply(_)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let mut possible = Possible::new();
    for o in ops {
        if let (Kind::Get, Outcome::Ok(seen)) = (&o.kind, &o.outcome) {
            if let Some(v) = seen
                && !written.contains(v.as_str())
            {
                r.phantom_reads.push(format!("{key}: read {v:?} at {:?}, never written", o.invoked));
            }
            if !possible.allows(seen) {
                r.stale_reads += 1;
            }
        }
        possible.after(o);
    }
    if !possible.allows(&fin) {
        let what =
            format!("{key}: final {fin:?}, allowed {:?} (last acknowledged: {:?})", possible.allowed, possible.last_ok);
        match possible.last_ok.map(|o| &o.kind) {
            Some(Kind::Del) => r.resurrected_deletes.push(what),
            _ => r.lost_writes.push(what),
        }
    }
}

fn check_counter(key: &str, ops: &[&Op], fin: Option<String>, r: &mut Report) {
    let acked = ops.iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count() as i64;
    let maybe = ops.iter().filter(|o| matches!(o.outcome, Outcome::Unknown(_) | Outcome::NoReply(_))).count() as i64;
    let value: i64 = fin.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    if value < acked || value > acked + maybe {
        r.counter_errors.push(format!("{key}: {value}, acknowledged {acked} INCRs and {maybe} unknown"));
    }
    // Each acknowledged INCR's answer is unique and within the same bounds.
    let mut seen = std::collections::HashSet::new();
    for o in ops {
        if let Outcome::Ok(Some(n)) = &o.outcome
            && !seen.insert(n.clone())
        {
            r.counter_errors.push(format!("{key}: two acknowledged INCRs both answered {n}"));
        }
    }
}

/// Failed, unknown and unanswered operations grouped by what the server
/// (or the connection) said, numbers left out, most frequent first: where
/// a scenario's failures come from.
pub fn failure_reasons(ops: &[Op]) -> Vec<(String, usize)> {
    let mut by: HashMap<String, usize> = HashMap::new();
    for op in ops {
        let text = match &op.outcome {
            Outcome::Ok(_) => continue,
            Outcome::Fail(t) | Outcome::Unknown(t) | Outcome::NoReply(t) => t,
        };
        let words: Vec<&str> = text.split_whitespace().filter(|w| !w.chars().any(|c| c.is_ascii_digit())).collect();
        *by.entry(words.join(" ")).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}
