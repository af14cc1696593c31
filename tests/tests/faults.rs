//! The fault suite (DESIGN §4–§5): a Jepsen-style workload (history.rs)
//! runs against real clusters while a nemesis kills, pauses, stops,
//! restarts, partitions (network namespaces) and grows or shrinks them;
//! afterwards the checker proves no acknowledged write was lost, no delete
//! came back, no read saw a value never written, every counter equals its
//! acknowledged increments (within the unknown ones), and every owner of
//! every key agrees. Each scenario prints one line of figures (and appends
//! it to target/fault-report.txt), which TESTING.md records.
//!
//! Scenarios are bounded by operation counts and the harness's waits, and
//! run one at a time (they share 2 CPUs with the nodes they start).
//!
//! Partition scenarios need root for network namespaces. Without it they
//! fail with the reason, unless RINGCACHE_SKIP_NETNS=1 asks to skip them,
//! in which case they print that they skipped: they never pass silently.
//!
//! `random_faults` (ignored by default) is the long run:
//! `RINGCACHE_FAULT_SECS=600 cargo test -p ringcache-tests --test faults -- --ignored --nocapture`
//! (scripts/fault-soak.sh).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringcache_protocol::Frame;
use ringcache_tests::history::{self, Op, Report, Running, Targets, Workload};
use ringcache_tests::{Cluster, Netns, Server};

/// Short failure detection, and a replication timeout under the
/// workload's 3 s reply timeout.
const ARGS: &[&str] = &["--gossip-suspect-ms", "2000", "--replication-timeout-ms", "1000"];

/// One scenario at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether partition scenarios can run; panics (with the reason) when they
/// cannot and skipping was not asked for.
fn netns_or_skip(scenario: &str) -> bool {
    let Some(why) = Netns::unavailable() else { return true };
    if std::env::var("RINGCACHE_SKIP_NETNS").is_ok_and(|v| v == "1") {
        println!("SKIPPED {scenario}: {why} (RINGCACHE_SKIP_NETNS=1)");
        return false;
    }
    panic!("{scenario} needs network namespaces: {why}. Run as root, or set RINGCACHE_SKIP_NETNS=1 to skip it.");
}

fn running(c: &Cluster) -> Vec<usize> {
    (0..c.nodes.len()).filter(|&i| c.nodes[i].is_some()).collect()
}

fn addrs(c: &Cluster, nodes: &[usize]) -> Vec<SocketAddr> {
    nodes.iter().map(|&i| c.node(i).addr).collect()
}

fn set_targets(t: &Targets, all: Vec<SocketAddr>) {
    for w in t.lock().unwrap().iter_mut() {
        *w = all.clone();
    }
}

fn workload() -> Workload {
    Workload::default()
}

/// A key's value as the cluster answers it through `node` (retrying the
/// answers that mean "ask again").
fn read_through(node: &Server, key: &str) -> Option<String> {
    let mut last = None;
    for _ in 0..100 {
        match node.raw().cmd(&["GET", key]) {
            Frame::Bulk(b) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Frame::Null => return None,
            other => last = Some(other),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("GET {key} kept failing: {last:?}")
}

/// The key's state (version included) on each of its owners, from their
/// own copies: owners agree when these are equal.
fn owner_values(c: &Cluster, via: usize, key: &str) -> Vec<Option<String>> {
    c.owners_of(via, key).into_iter().map(|o| Some(format!("{:?}", c.key_state(o, key)))).collect()
}

/// Stops the workload, waits for the running nodes to agree, then checks
/// the history until it is clean or a bounded wait ran out; prints and
/// records the figures, and fails the test on any violation.
fn finish(scenario: &str, c: &Cluster, run: Running, converged: Duration) -> Report {
    let ops: Vec<Op> = run.stop();
    let live = running(c);
    c.wait_converged(live.len());
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(60);
    let via = live[0];
    let report = loop {
        let mut r = history::check(&ops, &mut |k| read_through(c.node(via), k), &mut |k| owner_values(c, via, k));
        r.converge = converged;
        r.settle = stopped.elapsed();
        if r.is_clean() || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let line = report.line(scenario);
    println!("{line}");
    for (why, n) in history::failure_reasons(&ops) {
        println!("  {n:>6} × {why}");
    }
    record(&line);
    if !report.is_clean() || std::env::var_os("RINGCACHE_FAULT_HISTORY").is_some() {
        dump_history(scenario, &ops);
    }
    if !report.is_clean() {
        for i in 0..c.nodes.len() {
            dump_log(scenario, i, &c.logs_of_every_incarnation(i));
        }
        for &i in &live {
            for line in c
                .node(i)
                .log()
                .lines()
                .filter(|l| l.contains("member") || l.contains("declared") || l.contains("rejoin"))
            {
                println!("node{i} log: {line}");
            }
        }
        for what in report.lost_writes.iter().chain(&report.resurrected_deletes).chain(&report.counter_errors) {
            let key = what.split(':').take(3).collect::<Vec<_>>().join(":");
            let key = if key.starts_with("jc:") { what.split(':').take(2).collect::<Vec<_>>().join(":") } else { key };
            for &i in &live {
                println!("{key} on node{i}: {:?}", c.key_state(i, &key));
            }
        }
    }
    assert!(report.ok > 0, "{scenario}: no operation was acknowledged");
    assert!(
        report.is_clean(),
        "{line}\nlost: {:#?}\nresurrected: {:#?}\nphantoms: {:#?}\ncounters: {:#?}\ndisagreements: {:#?}",
        report.lost_writes,
        report.resurrected_deletes,
        report.phantom_reads,
        report.counter_errors,
        report.disagreements
    );
    report
}

/// The whole history of a failed scenario, for reading (one op a line).
fn dump_history(scenario: &str, ops: &[Op]) {
    let path = artifact("history", scenario, "");
    let text: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
    let _ = std::fs::write(&path, text.join("\n"));
    println!("history written to {}", path.display());
}

/// Every log node `node` wrote (each process it ran as) after a failed scenario, beside its history.
fn dump_log(scenario: &str, node: usize, log: &str) {
    let _ = std::fs::write(artifact("log", scenario, &format!("-node{node}")), log);
}

/// `target/fault-<what>-<scenario><suffix>.txt`, the scenario's text made a file name.
fn artifact(what: &str, scenario: &str, suffix: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").join("target");
    let name: String = scenario.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    dir.join(format!("fault-{what}-{name}{suffix}.txt"))
}

fn record(line: &str) {
    use std::io::Write;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").join("target");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("fault-report.txt")) {
        let _ = writeln!(f, "{line}");
    }
}

/// Waits until node `by` no longer lists node `gone` (it was declared
/// Down and left the table).
fn wait_down(c: &Cluster, by: &[usize], members: usize) {
    c.eventually("the others to declare the node down", || by.iter().all(|&i| c.known_nodes(i) == members));
}

/// Waits for the cluster to settle after a fault ended at `since`; the
/// time it took.
fn converge(c: &Cluster, n: usize, since: Instant) -> Duration {
    c.wait_converged(n);
    since.elapsed()
}

/// A started cluster of `n` loopback nodes (or in namespaces) under the
/// workload, which has done `warmup` operations; the guard keeps
/// scenarios one at a time.
struct Scene {
    _serial: std::sync::MutexGuard<'static, ()>,
    c: Cluster,
    t: Targets,
    run: Running,
}

fn begin(n: usize, netns: bool, warmup: u64) -> Scene {
    begin_with(n, netns, warmup, &[], workload())
}

/// [`begin`] with more server flags and another workload.
fn begin_with(n: usize, netns: bool, warmup: u64, extra: &[&str], w: Workload) -> Scene {
    let args: Vec<&str> = ARGS.iter().chain(extra).copied().collect();
    begin_on(|| if netns { Cluster::start_in_netns(n, &args) } else { Cluster::start(n, &args) }, n, warmup, w)
}

/// The cluster `start` makes (`n` nodes) under workload `w`.
fn begin_on(start: impl FnOnce() -> Cluster, n: usize, warmup: u64, w: Workload) -> Scene {
    let serial = serial();
    let c = start();
    c.wait_converged(n);
    let all: Vec<usize> = (0..n).collect();
    let t = history::targets(w.workers, &addrs(&c, &all));
    let run = w.start(t.clone());
    run.run_for(warmup, Duration::from_secs(60));
    Scene { _serial: serial, c, t, run }
}

#[test]
fn kill_primary() {
    let Scene { _serial, mut c, t, run } = begin(3, false, 1500);
    // The primary of the first worker's first key: a node many keys use.
    let victim = c.owners_of(0, &history::plain_key(0, 0))[0];
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    set_targets(&t, addrs(&c, &others));
    c.kill(victim);
    run.run_for(1500, Duration::from_secs(60));
    let back = Instant::now();
    c.restart(victim);
    let converged = converge(&c, 3, back);
    set_targets(&t, addrs(&c, &[0, 1, 2]));
    run.run_for(1000, Duration::from_secs(60));
    finish("kill -9 the primary, restart it", &c, run, converged);
}

#[test]
fn kill_random_node_repeatedly() {
    let Scene { _serial, mut c, t, run } = begin(4, false, 800);
    let mut converged = Duration::ZERO;
    // A fixed "random" order: replays the same way every time.
    for victim in [2, 0, 3, 1, 2] {
        let others: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
        set_targets(&t, addrs(&c, &others));
        c.kill(victim);
        run.run_for(800, Duration::from_secs(60));
        let back = Instant::now();
        c.restart(victim);
        converged = converged.max(converge(&c, 4, back));
        set_targets(&t, addrs(&c, &[0, 1, 2, 3]));
        run.run_for(500, Duration::from_secs(60));
    }
    finish("kill -9 a node and restart it, 5 times (4 nodes)", &c, run, converged);
}

#[test]
fn pause_past_down() {
    let Scene { _serial, c, t, run } = begin(3, false, 1000);
    set_targets(&t, addrs(&c, &[0, 1]));
    c.node(2).signal("STOP");
    wait_down(&c, &[0, 1], 2);
    run.run_for(1000, Duration::from_secs(60));
    let back = Instant::now();
    c.node(2).signal("CONT");
    let converged = converge(&c, 3, back);
    set_targets(&t, addrs(&c, &[0, 1, 2]));
    run.run_for(800, Duration::from_secs(60));
    finish("SIGSTOP a node past the Down timeout, SIGCONT", &c, run, converged);
}

/// A primary stopped (SIGSTOP) past Down while a client's INCR waits in
/// its socket, and the counter is incremented elsewhere meanwhile: on
/// waking it must not run that INCR on its stale copy (its newer version
/// would overwrite the increments made meanwhile). It notices the pause
/// (`Shared::notice_pause`) and fetches from the co-owners first. Its
/// gossip (UDP) stays cut until the INCR was answered, so it cannot learn
/// from the others that it was declared down first (on loopback it often
/// did, and the INCR then ran right without the fix). The 10-minute soak
/// lost 198 acknowledged increments this way (2026-12-07).
#[test]
fn a_stopped_primary_does_not_count_from_its_stale_copy_on_waking() {
    if !netns_or_skip("a stopped primary") {
        return;
    }
    let _s = serial();
    let c = Cluster::start_in_netns(3, ARGS);
    c.wait_converged(3);
    let key = "ctr:paused";
    let p = c.owners_of(0, key)[0];
    let other = (p + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    let incr = |i: usize| -> i64 {
        match c.node(i).raw().cmd(&["INCR", key]) {
            Frame::Integer(n) => n,
            f => panic!("INCR via node {i}: {f:?}"),
        }
    };
    for n in 1..=10 {
        assert_eq!(incr(other), n);
    }
    let mut queued = c.node(p).raw();
    c.node(p).signal("STOP");
    let net = c.net.as_ref().expect("netns");
    for &o in &others {
        net.cut_udp(p, o);
    }
    // Read by the primary only when it wakes.
    queued.send(b"*2\r\n$4\r\nINCR\r\n$10\r\nctr:paused\r\n");
    wait_down(&c, &others, 2);
    let mut answers: Vec<i64> = (0..5).map(|_| incr(other)).collect();
    assert_eq!(answers, vec![11, 12, 13, 14, 15], "the survivors count on from the acknowledged 10");
    c.node(p).signal("CONT");
    let woke = queued.try_read();
    println!("the INCR queued at the stopped primary answered {woke:?}");
    net.heal();
    let queued_ran = match woke {
        Some(Frame::Integer(n)) => {
            answers.push(n);
            1
        }
        _ => 0, // refused, timed out or closed: it may or may not have run
    };
    c.wait_converged(3);
    let last = incr(other);
    answers.push(last);
    let mut distinct = answers.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let noticed = ringcache_tests::info_field(c.node(p), "cluster", "pauses_noticed");
    println!("INCR answers {answers:?}; pauses noticed by node {p}: {noticed}");
    assert_eq!(distinct.len(), answers.len(), "two acknowledged INCRs answered the same count: {answers:?}");
    assert!(last >= 16 + queued_ran, "acknowledged increments were lost: answers {answers:?}");
}

/// Issue 16 item 1, the window before a partition is detected: two of a
/// counter's three owners (its primary and a replica) end up on the
/// minority side of a 2|3 split and keep acknowledging INCRs until they
/// notice they are a minority; the third owner, on the majority side,
/// never sees those. Once the majority side declares the two down, it
/// must not count on from the third's copy (its answers would repeat
/// ones the minority gave, and its newer versions would win on heal):
/// the slot's writes are refused there until the two are back
/// (`cluster::keepers`). Deterministic: the split is made right after
/// the counter reached 10.
#[test]
fn the_majority_side_does_not_count_from_a_copy_missing_the_minoritys_increments() {
    if !netns_or_skip("majority side and minority increments") {
        return;
    }
    let _s = serial();
    let c = Cluster::start_in_netns(5, ARGS);
    c.wait_converged(5);
    let key = "ctr:split";
    let owners = c.owners_of(0, key);
    assert_eq!(owners.len(), 3, "three owners");
    let minority = [owners[0], owners[1]];
    let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
    let incr = |i: usize| c.node(i).raw().cmd(&["INCR", key]);
    for n in 1..=10 {
        assert_eq!(incr(owners[0]), Frame::Integer(n));
    }
    let net = c.net.as_ref().expect("netns");
    net.partition(&[&majority, &minority]);
    // Before anyone notices: the primary and its replica acknowledge.
    let mut answers: Vec<i64> = Vec::new();
    for _ in 0..5 {
        if let Frame::Integer(n) = incr(owners[0]) {
            answers.push(n);
        }
    }
    println!("INCRs acknowledged by the minority before it noticed: {answers:?}");
    wait_down(&c, &majority, 3);
    c.eventually("the two to know they are a minority", || {
        minority.iter().all(|&i| ringcache_tests::info_field(c.node(i), "cluster", "cluster_minority") == "1")
    });
    let mut refusals = Vec::new();
    for &i in &majority {
        match incr(i) {
            Frame::Integer(n) => answers.push(n),
            other => refusals.push(format!("{other:?}")),
        }
    }
    println!("the majority side's INCRs of the same counter: {refusals:?}");
    let refused: u64 = majority
        .iter()
        .map(|&i| ringcache_tests::info_field(c.node(i), "cluster", "keeper_refusals").parse::<u64>().unwrap_or(0))
        .sum();
    net.heal();
    c.wait_converged(5);
    let last = match incr(owners[2]) {
        Frame::Integer(n) => n,
        f => panic!("INCR after the heal: {f:?}"),
    };
    answers.push(last);
    let mut distinct = answers.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!("INCR answers {answers:?}; keeper refusals on the majority side: {refused}");
    assert_eq!(distinct.len(), answers.len(), "two acknowledged INCRs answered the same count: {answers:?}");
    assert!(last >= 10 + answers.len() as i64, "acknowledged increments were lost: answers {answers:?}");
}

/// Issue 16, clocks: the nodes' wall clocks 4 s apart each way (node 1
/// ahead, node 2 behind; within `--max-clock-skew`), while the workload
/// runs and node 1 — the one ahead — is killed and restarted. Versions
/// are hybrid logical clocks and forward deadlines travel as time left,
/// so no acknowledged write is lost and forwarding keeps working.
#[test]
fn clocks_seconds_apart() {
    if ringcache_tests::faketime_lib().is_none() {
        panic!("clocks_seconds_apart needs libfaketime: apt-get install faketime (scripts/test.sh installs it)");
    }
    let Scene { _serial, mut c, t, run } =
        begin_on(|| Cluster::start_with_clock_offsets(3, ARGS, &[0, 4, -4]), 3, 1500, workload());
    let now = |i: usize| -> i64 {
        match c.node(i).raw().cmd(&["TIME"]) {
            Frame::Array(a) => match &a[0] {
                Frame::Bulk(b) => String::from_utf8_lossy(b).parse().unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        }
    };
    let (t0, t1, t2) = (now(0), now(1), now(2));
    println!("node clocks (s): {t0}, {t1}, {t2}");
    assert!(t1 - t0 >= 3 && t0 - t2 >= 3, "the offsets took effect");
    set_targets(&t, addrs(&c, &[0, 2]));
    c.kill(1);
    run.run_for(1000, Duration::from_secs(60));
    let back = Instant::now();
    c.restart(1);
    let converged = converge(&c, 3, back);
    set_targets(&t, addrs(&c, &[0, 1, 2]));
    run.run_for(1500, Duration::from_secs(60));
    let r =
        finish("clocks 4 s apart each way (node 1 ahead, node 2 behind), kill -9 node 1, restart", &c, run, converged);
    let expired: u64 = (0..3)
        .map(|i| ringcache_tests::info_field(c.node(i), "replication", "forwards_expired").parse::<u64>().unwrap_or(0))
        .sum();
    println!("forwards expired on arrival: {expired}; unknown outcomes: {}", r.unknown);
}

#[test]
fn rolling_restart() {
    let Scene { _serial, mut c, t, run } = begin(3, false, 800);
    let mut converged = Duration::ZERO;
    for i in 0..3 {
        let others: Vec<usize> = (0..3).filter(|&j| j != i).collect();
        set_targets(&t, addrs(&c, &others));
        let mut s = c.nodes[i].take().expect("running");
        let status = s.stop();
        assert!(status.success(), "node {i} exited with {status}");
        run.run_for(400, Duration::from_secs(60));
        let back = Instant::now();
        c.restart(i);
        converged = converged.max(converge(&c, 3, back));
        set_targets(&t, addrs(&c, &[0, 1, 2]));
        run.run_for(400, Duration::from_secs(60));
    }
    finish("rolling restart: SIGTERM and restart each of 3 nodes", &c, run, converged);
}

/// Graceful restarts while every worker keeps sending to every node, the
/// leaving one included, and all increment the same counters: a leaving
/// node must not coordinate a counter's INCR while its new primary does.
/// It hands its slots over after the drain (`node::hand_over`): without
/// that, counter errors (two acknowledged INCRs answering the same value)
/// in 4 of 4 runs (3, 2, 9, 3); with it, 0 in 3 of 3.
#[test]
fn graceful_restarts_under_shared_counters() {
    let w = Workload { shared_counters: 2, ..workload() };
    let Scene { _serial, mut c, run, .. } = begin_with(5, false, 800, &[], w);
    let mut converged = Duration::ZERO;
    for i in [0, 1, 2, 3, 4, 0, 1, 2] {
        let mut s = c.nodes[i].take().expect("running");
        assert!(s.stop().success(), "node {i} exited");
        run.run_for(300, Duration::from_secs(60));
        let back = Instant::now();
        c.restart(i);
        converged = converged.max(converge(&c, 5, back));
        run.run_for(300, Duration::from_secs(60));
    }
    finish("graceful restarts of 5 nodes, every node targeted, shared counters", &c, run, converged);
}

#[test]
fn join_and_leave_under_load() {
    let Scene { _serial, mut c, t, run } = begin(3, false, 800);
    let joined = Instant::now();
    let new = c.add();
    let mut converged = converge(&c, 4, joined);
    set_targets(&t, addrs(&c, &[0, 1, 2, new]));
    run.run_for(1000, Duration::from_secs(60));
    // A graceful leave of an original node while the load goes on.
    set_targets(&t, addrs(&c, &[0, 2, new]));
    let left = Instant::now();
    let mut s = c.nodes[1].take().expect("running");
    let status = s.stop();
    assert!(status.success(), "leaving node exited with {status}");
    converged = converged.max(converge(&c, 3, left));
    run.run_for(1000, Duration::from_secs(60));
    finish("a 4th node joins, then one leaves (SIGTERM), under load", &c, run, converged);
}

/// Issue 16 item 1: node 2 is cut off from the others while workers on
/// both sides increment the same counters. Only the majority side changes
/// its table and acknowledges writes; the minority answers them
/// `-CLUSTERDOWN` (not run). On heal every counter equals its acknowledged
/// increments (within the unknown ones). Before, both sides acknowledged
/// and last-writer-wins lost a side's increments.
#[test]
fn isolate_minority_then_heal() {
    if !netns_or_skip("isolate a minority") {
        return;
    }
    let w = Workload { shared_counters: 2, ..workload() };
    let Scene { _serial, c, t, run } = begin_with(3, true, 1000, &[], w);
    let all = addrs(&c, &[0, 1, 2]);
    // Node 2 is cut off from the others; the test still reaches every node.
    // A third of the workers stay on the minority side while it lasts.
    {
        let mut tl = t.lock().unwrap();
        for (i, ws) in tl.iter_mut().enumerate() {
            *ws = if i % 3 == 2 { vec![all[2]] } else { vec![all[0], all[1]] };
        }
    }
    let net = c.net.as_ref().expect("netns");
    net.partition(&[&[0, 1], &[2]]);
    wait_down(&c, &[0, 1], 2);
    c.eventually("node 2 to know it is in a minority", || {
        ringcache_tests::info_field(c.node(2), "cluster", "cluster_minority") == "1"
    });
    let majority_before = run.count();
    run.run_for(1500, Duration::from_secs(60));
    // The minority's workers may still be in requests that began before it
    // knew (held for an unreachable primary, then timed out): wait for
    // their next write rather than count within a fixed number of ops.
    c.eventually("the minority to refuse a write", || {
        ringcache_tests::info_field(c.node(2), "cluster", "minority_refusals") != "0"
    });
    let refused = ringcache_tests::info_field(c.node(2), "cluster", "minority_refusals");
    println!("minority refusals on node 2: {refused}; operations meanwhile: {}", run.count() - majority_before);
    let healed = Instant::now();
    net.heal();
    let converged = converge(&c, 3, healed);
    assert_eq!(ringcache_tests::info_field(c.node(2), "cluster", "cluster_minority"), "0");
    set_targets(&t, all);
    run.run_for(800, Duration::from_secs(60));
    finish("isolate one node of 3 (majority writes, same counters both sides), then heal", &c, run, converged);
}

/// Issue 16 item 1 with a 2|3 split of 5 nodes: every worker sends each
/// operation to a random node of all five, so the same keys (its plain
/// keys and two shared counters) are written on both sides while the
/// partition lasts. Only the side of three acknowledges writes.
#[test]
fn split_five_nodes_two_three_then_heal() {
    if !netns_or_skip("split 5 nodes 2|3") {
        return;
    }
    let w = Workload { shared_counters: 2, ..workload() };
    let Scene { _serial, c, run, .. } = begin_with(5, true, 1000, &[], w);
    let net = c.net.as_ref().expect("netns");
    net.partition(&[&[0, 1, 2], &[3, 4]]);
    wait_down(&c, &[0, 1, 2], 3);
    c.eventually("nodes 3 and 4 to know they are in a minority", || {
        [3, 4].iter().all(|&i| ringcache_tests::info_field(c.node(i), "cluster", "cluster_minority") == "1")
    });
    run.run_for(2000, Duration::from_secs(90));
    let refused: Vec<String> =
        [3, 4].iter().map(|&i| ringcache_tests::info_field(c.node(i), "cluster", "minority_refusals")).collect();
    println!("minority refusals on nodes 3, 4: {refused:?}");
    assert!(refused.iter().any(|r| r != "0"), "the minority refused writes");
    let healed = Instant::now();
    net.heal();
    let converged = converge(&c, 5, healed);
    run.run_for(1000, Duration::from_secs(60));
    finish("split 5 nodes 2|3 (same keys and counters written on both sides), then heal", &c, run, converged);
}

/// Node 2's links to the others lose 20 % of their packets (both ways,
/// gossip and peer links) for a while under the workload, the same
/// counters written through every node: suspicion may flap and links
/// reconnect; nothing acknowledged is lost and the counters stay exact.
#[test]
fn a_lossy_node_loses_nothing() {
    if !netns_or_skip("a lossy node") {
        return;
    }
    let w = Workload { shared_counters: 2, ..workload() };
    let Scene { _serial, c, run, .. } = begin_with(3, true, 1000, &[], w);
    let net = c.net.as_ref().expect("netns");
    net.lossy(2, 20);
    run.run_for(3000, Duration::from_secs(120));
    let healed = Instant::now();
    net.heal();
    let converged = converge(&c, 3, healed);
    run.run_for(800, Duration::from_secs(60));
    finish("node 2's links lose 20 % of their packets, then heal", &c, run, converged);
}

/// A node of the minority side of a 2|3 split is killed and restarted
/// while the split lasts: empty, it meets only the other minority node and
/// builds a table of the two. It must not become a writing side with it
/// (the minority node refuses its peer link and replicated writes, and
/// the restarted node then has no write quorum). Workers send every op to
/// any of the five nodes, the same counters included; on heal nothing
/// acknowledged is lost and every counter is exact.
#[test]
fn a_node_restarted_on_the_minority_side_acknowledges_nothing() {
    if !netns_or_skip("restart a node on the minority side") {
        return;
    }
    let w = Workload { shared_counters: 2, ..workload() };
    let Scene { _serial, mut c, run, .. } = begin_with(5, true, 1000, &[], w);
    let net = c.net.as_ref().expect("netns");
    net.partition(&[&[0, 1, 2], &[3, 4]]);
    wait_down(&c, &[0, 1, 2], 3);
    c.eventually("nodes 3 and 4 to know they are in a minority", || {
        [3, 4].iter().all(|&i| ringcache_tests::info_field(c.node(i), "cluster", "cluster_minority") == "1")
    });
    c.kill(4);
    c.restart(4);
    c.eventually("the restarted node 4 to meet node 3", || c.known_nodes(4) == 2);
    // Keys node 4's table of {3, 4} makes it the primary of: before the
    // fix node 4 acknowledged INCRs of them with node 3's replica ack.
    let mut r4 = c.node(4).raw();
    for i in 0..8 {
        let k = format!("probe:{i}");
        let reply = r4.cmd(&["INCR", k.as_str()]);
        println!("INCR {k} through the restarted node 4 (owners {:?}): {reply:?}", c.owners_of(4, &k));
        assert!(!matches!(reply, Frame::Integer(_)), "node 4 acknowledged a write on the minority side");
    }
    run.run_for(2000, Duration::from_secs(90));
    let refused = ringcache_tests::info_field(c.node(3), "cluster", "minority_refusals");
    println!("minority refusals on node 3: {refused}");
    let healed = Instant::now();
    c.net.as_ref().expect("netns").heal();
    let converged = converge(&c, 5, healed);
    run.run_for(1000, Duration::from_secs(60));
    finish("restart a minority node during a 2|3 split, then heal", &c, run, converged);
}

/// `--partition-mode available`: both sides of a partition keep serving
/// writes (each worker's keys on one side only), and last-writer-wins
/// merges the sides on heal without losing an acknowledged write.
#[test]
fn isolate_minority_in_available_mode_then_heal() {
    if !netns_or_skip("isolate a minority (available mode)") {
        return;
    }
    let Scene { _serial, c, t, run } = begin_with(3, true, 1000, &["--partition-mode", "available"], workload());
    let all = addrs(&c, &[0, 1, 2]);
    {
        let mut tl = t.lock().unwrap();
        for (i, ws) in tl.iter_mut().enumerate() {
            *ws = if i % 3 == 2 { vec![all[2]] } else { vec![all[0], all[1]] };
        }
    }
    let net = c.net.as_ref().expect("netns");
    net.partition(&[&[0, 1], &[2]]);
    wait_down(&c, &[0, 1], 2);
    wait_down(&c, &[2], 1);
    run.run_for(1500, Duration::from_secs(60));
    let healed = Instant::now();
    net.heal();
    let converged = converge(&c, 3, healed);
    set_targets(&t, all);
    run.run_for(800, Duration::from_secs(60));
    finish("isolate one node of 3 (available mode: both sides serve), then heal", &c, run, converged);
}

#[test]
fn cut_one_link_between_majority_nodes() {
    if !netns_or_skip("cut a majority link") {
        return;
    }
    let Scene { _serial, c, run, .. } = begin(3, true, 1000);
    // Nodes 0 and 1 cannot talk; both still reach node 2 (a partial,
    // non-transitive partition: gossip's indirect probes keep them Up).
    let net = c.net.as_ref().expect("netns");
    net.cut(0, 1);
    run.run_for(2000, Duration::from_secs(90));
    let healed = Instant::now();
    net.heal();
    let converged = converge(&c, 3, healed);
    run.run_for(800, Duration::from_secs(60));
    finish("cut the link between two of 3 nodes, then heal", &c, run, converged);
}

/// Issue 16 item 5: a co-owner that gossip still sees alive but that no
/// TCP connection reaches delays a write on an unsettled slot by one
/// replication timeout; the write then runs by the quorum rule (this node
/// and the co-owner that answered make W = 2) instead of answering
/// `-TRYAGAIN` for as long as the link stays cut.
#[test]
fn a_co_owner_cut_off_over_tcp_delays_writes_instead_of_refusing_them() {
    if !netns_or_skip("cut TCP to a co-owner") {
        return;
    }
    let _serial = serial();
    let c = Cluster::start_in_netns(3, ARGS);
    c.wait_converged(3);
    let net = c.net.as_ref().expect("netns");
    // Node 2 leaves node 0's table and comes back: the slots it owns again
    // are unsettled on node 0, and stay so while the two cannot compare.
    net.partition(&[&[0, 1], &[2]]);
    wait_down(&c, &[0, 1], 2);
    net.heal();
    net.cut_tcp(0, 2);
    c.eventually("node 2 back in node 0's table", || c.known_nodes(0) == 3);
    let keys: Vec<String> =
        (0..4).map(|k| c.key_where(&format!("cut{k}"), |o| o.len() == 3 && o[0] == 0 && o.contains(&2))).collect();
    let unsettled = ringcache_tests::info_field(c.node(0), "cluster", "rebalance_slots_unsettled");
    assert_ne!(unsettled, "0", "node 0 has unsettled slots");
    let mut r = c.node(0).raw();
    for k in &keys {
        assert_eq!(r.cmd(&["INCR", k]), Frame::Integer(1), "INCR {k}");
        assert_eq!(r.cmd(&["INCR", k]), Frame::Integer(2), "INCR {k} again");
    }
    let held = ringcache_tests::info_field(c.node(0), "cluster", "rebalance_held_requests");
    println!("unsettled slots on node 0: {unsettled}; requests held: {held}");
    net.heal();
    c.wait_converged(3);
    for k in &keys {
        for i in 0..3 {
            c.eventually(&format!("{k} = 2 on node {i}"), || {
                matches!(c.key_state(i, k), ringcache_server::cluster::replication::ReadState::Live { ref value, .. } if &value[..] == b"2")
            });
        }
    }
}

/// The long run: random faults for RINGCACHE_FAULT_SECS (default 600).
#[test]
#[ignore = "long: scripts/fault-soak.sh"]
fn random_faults() {
    let secs: u64 = std::env::var("RINGCACHE_FAULT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let seed: u64 = std::env::var("RINGCACHE_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    println!("random_faults: seed {seed} (replay with RINGCACHE_FAULT_SEED={seed}), {secs} s");
    let netns = netns_or_skip("random faults with partitions");
    let _s = serial();
    let n = 5;
    let mut c = if netns { Cluster::start_in_netns(n, ARGS) } else { Cluster::start(n, ARGS) };
    c.wait_converged(n);
    // Every worker increments three counters shared by all, and during a
    // partition or a cut link sends to every node: the same keys are
    // written from every side (issue 16).
    let mut w = Workload { shared_counters: 3, ..workload() };
    w.max_ops = usize::MAX;
    let all_nodes: Vec<usize> = (0..n).collect();
    let t = history::targets(w.workers, &addrs(&c, &all_nodes));
    let run = w.start(t.clone());
    let mut rng = seed | 1;
    let mut next = move |k: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % k as u64) as usize
    };
    let end = Instant::now() + Duration::from_secs(secs);
    let mut faults = Vec::new();
    let mut converged = Duration::ZERO;
    while Instant::now() < end {
        let victim = next(n);
        let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
        let fault = next(if netns { 5 } else { 3 });
        // A dead or paused node gets no requests; a cut-off one does.
        set_targets(&t, addrs(&c, if fault >= 3 { &all_nodes } else { &others }));
        match fault {
            0 => {
                c.kill(victim);
                run.run_for(500, Duration::from_secs(30));
                c.restart(victim);
            }
            1 => {
                c.node(victim).signal("STOP");
                std::thread::sleep(Duration::from_millis(500 + next(4000) as u64));
                c.node(victim).signal("CONT");
            }
            2 => {
                let mut s = c.nodes[victim].take().expect("running");
                assert!(s.stop().success(), "graceful stop of node {victim}");
                run.run_for(300, Duration::from_secs(30));
                c.restart(victim);
            }
            3 => {
                c.net.as_ref().expect("netns").partition(&[&others, &[victim]]);
                std::thread::sleep(Duration::from_millis(1000 + next(5000) as u64));
                c.net.as_ref().expect("netns").heal();
            }
            _ => {
                let other = others[next(others.len())];
                c.net.as_ref().expect("netns").cut(victim, other);
                std::thread::sleep(Duration::from_millis(1000 + next(5000) as u64));
                c.net.as_ref().expect("netns").heal();
            }
        }
        faults.push((fault, victim));
        // Up to 60 s: an import whose sender never confirms is released
        // after 30 s (IMPORT_MAX); the slowest convergence is reported.
        let ended = Instant::now();
        c.wait_converged_within(n, Duration::from_secs(60));
        let took = ended.elapsed();
        converged = converged.max(took);
        println!(
            "random_faults: {:>4} s: {} node{victim}, converged in {} ms",
            run.start.elapsed().as_secs(),
            ["kill", "pause", "graceful restart", "isolate", "cut link"][fault],
            took.as_millis()
        );
        set_targets(&t, addrs(&c, &all_nodes));
        run.run_for(300, Duration::from_secs(30));
    }
    let names = ["kill", "pause", "graceful restart", "isolate", "cut link"];
    let mut counts = [0usize; 5];
    for (f, _) in &faults {
        counts[*f] += 1;
    }
    let summary: Vec<String> = names.iter().zip(counts).map(|(n, k)| format!("{n}={k}")).collect();
    println!("random_faults: {} faults: {}", faults.len(), summary.join(" "));
    finish(&format!("random faults for {secs} s (seed {seed}; {})", summary.join(" ")), &c, run, converged);
}

/// Issue 16 item 2 ("deletes come back"): node 2 is away — `away` pauses
/// or isolates it — while every key it holds is deleted, and stays away
/// until the others forgot the tombstones (a short `--tombstone-grace`).
/// Before, it came back with the old values and anti-entropy spread them
/// again. Now it learns the others went on without it, empties its copy
/// (`absence_wipes`) and takes the cluster's data again: no deleted key
/// comes back, and the keys that were not deleted return to it.
fn deletes_stay_deleted_after_an_absence(netns: bool, away: impl FnOnce(&Cluster), back: impl FnOnce(&Cluster)) {
    let _serial = serial();
    let args: Vec<&str> = ARGS.iter().copied().chain(["--tombstone-grace", "4"]).collect();
    let c = if netns { Cluster::start_in_netns(3, &args) } else { Cluster::start(3, &args) };
    c.wait_converged(3);
    let gone: Vec<String> = (0..100).map(|i| format!("gone:{i}")).collect();
    let kept: Vec<String> = (0..20).map(|i| format!("kept:{i}")).collect();
    let mut r = c.node(0).raw();
    for k in gone.iter().chain(&kept) {
        c.eventually(&format!("SET {k}"), || r.cmd(&["SET", k.as_str(), "v"]) == Frame::Simple("OK".into()));
    }
    let live =
        |i: usize, k: &str| matches!(c.key_state(i, k), ringcache_server::cluster::replication::ReadState::Live { .. });
    c.eventually("node 2 to hold every key (3 owners of 3 nodes)", || gone.iter().chain(&kept).all(|k| live(2, k)));
    away(&c);
    wait_down(&c, &[0, 1], 2);
    for k in &gone {
        // (0 after a retry whose first try ran: deleted either way.)
        c.eventually(&format!("DEL {k}"), || matches!(r.cmd(&["DEL", k.as_str()]), Frame::Integer(_)));
    }
    c.eventually("nodes 0 and 1 to forget their tombstones (the grace passed)", || {
        (0..2).all(|i| ringcache_tests::info_field(c.node(i), "replication", "tombstones") == "0")
    });
    back(&c);
    c.wait_converged(3);
    c.eventually("node 2 to empty its copy", || {
        ringcache_tests::info_field(c.node(2), "cluster", "absence_wipes") == "1"
    });
    // Its clients see the cluster's data, not a miss, while it refills.
    for k in &kept {
        assert_eq!(read_through(c.node(2), k).as_deref(), Some("v"), "{k} through node 2 after it emptied");
    }
    // Anti-entropy would have spread the old keys within a few comparisons.
    let checks = |i: usize| -> u64 {
        ringcache_tests::info_field(c.node(i), "cluster", "antientropy_sum_checks").parse().unwrap_or(0)
    };
    let before: Vec<u64> = (0..3).map(checks).collect();
    c.eventually("node 2 to take the kept keys again", || kept.iter().all(|k| live(2, k)));
    c.eventually("ten more anti-entropy comparisons on every node", || (0..3).all(|i| checks(i) >= before[i] + 10));
    let back_again: Vec<(usize, &String)> =
        (0..3).flat_map(|i| gone.iter().map(move |k| (i, k))).filter(|&(i, k)| live(i, k)).collect();
    assert!(back_again.is_empty(), "deleted keys came back: {back_again:?}\n{}", c.diagnose());
    for k in &gone {
        assert_eq!(read_through(c.node(0), k), None, "{k} through node 0");
    }
    for k in &kept {
        assert_eq!(read_through(c.node(0), k).as_deref(), Some("v"), "{k} through node 0");
    }
    let line = format!(
        "deletes while a node was away past the tombstone grace ({}): 0 of {} deleted keys back, {} kept keys back on it",
        if netns { "partition" } else { "SIGSTOP" },
        gone.len(),
        kept.len()
    );
    println!("{line}");
    record(&line);
}

#[test]
fn deletes_while_a_node_is_paused_past_the_grace_stay_deleted() {
    deletes_stay_deleted_after_an_absence(false, |c| c.node(2).signal("STOP"), |c| c.node(2).signal("CONT"));
}

#[test]
fn deletes_while_a_node_is_partitioned_past_the_grace_stay_deleted() {
    if !netns_or_skip("deletes across a long partition") {
        return;
    }
    deletes_stay_deleted_after_an_absence(
        true,
        |c| c.net.as_ref().expect("netns").partition(&[&[0, 1], &[2]]),
        |c| c.net.as_ref().expect("netns").heal(),
    );
}

/// Issue 16 item 2, FLUSHALL: node 2 is paused past Down while a client
/// flushes the cluster. FLUSHALL leaves no tombstones, so before its flush
/// epoch node 2 came back with every old key and anti-entropy spread them
/// again. Now the others refuse states older than the flush
/// (`flush_refusals`) and node 2 gets `RC.FLUSH` from the hint queue when
/// it is back: no old key is live anywhere, and a key written after the
/// flush is kept.
#[test]
fn flushall_while_a_node_is_away_stays_flushed() {
    let _serial = serial();
    let c = Cluster::start(3, ARGS);
    c.wait_converged(3);
    let old: Vec<String> = (0..100).map(|i| format!("old:{i}")).collect();
    let mut r = c.node(0).raw();
    for k in &old {
        c.eventually(&format!("SET {k}"), || r.cmd(&["SET", k.as_str(), "v"]) == Frame::Simple("OK".into()));
    }
    let live =
        |i: usize, k: &str| matches!(c.key_state(i, k), ringcache_server::cluster::replication::ReadState::Live { .. });
    c.eventually("node 2 to hold every key", || old.iter().all(|k| live(2, k)));
    c.node(2).signal("STOP");
    wait_down(&c, &[0, 1], 2);
    c.eventually("FLUSHALL", || r.cmd(&["FLUSHALL"]) == Frame::Simple("OK".into()));
    c.eventually("SET after", || r.cmd(&["SET", "after", "v"]) == Frame::Simple("OK".into()));
    c.node(2).signal("CONT");
    c.wait_converged(3);
    c.eventually("node 2 to drop what the flush removed", || old.iter().all(|k| !live(2, k)));
    let checks = |i: usize| -> u64 {
        ringcache_tests::info_field(c.node(i), "cluster", "antientropy_sum_checks").parse().unwrap_or(0)
    };
    let before: Vec<u64> = (0..3).map(checks).collect();
    c.eventually("ten more anti-entropy comparisons on every node", || (0..3).all(|i| checks(i) >= before[i] + 10));
    let back: Vec<(usize, &String)> =
        (0..3).flat_map(|i| old.iter().map(move |k| (i, k))).filter(|&(i, k)| live(i, k)).collect();
    assert!(back.is_empty(), "flushed keys came back: {back:?}\n{}", c.diagnose());
    assert_eq!(read_through(c.node(2), "after").as_deref(), Some("v"));
    let refused: Vec<String> =
        (0..3).map(|i| ringcache_tests::info_field(c.node(i), "replication", "flush_refusals")).collect();
    let line =
        format!("FLUSHALL while a node was paused past Down: 0 of 100 flushed keys back; flush_refusals {refused:?}");
    println!("{line}");
    record(&line);
}

/// Measurement, run by hand (`cargo test --release -p ringcache-tests --test
/// faults packet_loss -- --ignored --nocapture`; root): 3 nodes in
/// namespaces with the default failure-detection timing, idle, while every
/// link drops `RINGCACHE_LOSS_PERCENT` (default 5) % of its packets each way
/// for `RINGCACHE_LOSS_SECS` (default 60); `RINGCACHE_LOSS_ARGS` adds node
/// flags (e.g. other timing). (Delay spikes would be the other
/// shape; this machine's kernel has no netem.) Prints each node's table
/// epoch and rejoin count before and after: every change is a member
/// declared down by loss alone, and its return unsettles its slots.
#[test]
#[ignore = "a measurement (TESTING.md), not a check"]
fn packet_loss_with_the_default_timing() {
    if !netns_or_skip("packet_loss_with_the_default_timing") {
        return;
    }
    let _serial = serial();
    let extra = std::env::var("RINGCACHE_LOSS_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    let c = Cluster::start_in_netns(3, &extra);
    c.wait_converged(3);
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let (percent, secs) = (env("RINGCACHE_LOSS_PERCENT", 5), env("RINGCACHE_LOSS_SECS", 60));
    let epochs = |c: &Cluster| -> Vec<String> {
        (0..3)
            .map(|i| {
                let f = |k| ringcache_tests::info_field(c.node(i), "cluster", k);
                format!(
                    "epoch {} changes {} slots received {} refuted suspicions {}",
                    f("cluster_epoch"),
                    f("topology_changes"),
                    f("rebalance_slots_received"),
                    f("gossip_refuted_suspicions")
                )
            })
            .collect()
    };
    let before = epochs(&c);
    let net = c.net.as_ref().expect("netns");
    for i in 0..3 {
        net.lossy(i, percent as u32);
    }
    std::thread::sleep(Duration::from_secs(secs));
    net.heal();
    let after = epochs(&c);
    // Why each table changed, as each node logged it.
    let why = ["member down", "member renewed its identity", "rejoined under a new generation", "member up"];
    for i in 0..3 {
        let log = c.node(i).log();
        let counts: Vec<String> =
            why.iter().map(|w| format!("{w}: {}", log.lines().filter(|l| l.contains(w)).count())).collect();
        println!("node{i}: {}", counts.join(", "));
        if std::env::var_os("RINGCACHE_LOSS_LOG").is_some() {
            println!("{log}");
        }
    }
    println!(
        "packet loss ({percent} % each way on every link, {secs} s, flags {extra:?}): \
         before {before:?}, after {after:?}"
    );
}
