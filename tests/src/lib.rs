//! # ringcache-tests
//!
//! A harness that starts real `ringcache` processes on loopback ports they
//! pick themselves (`--port 0`, the port read back from the log), and a
//! blocking raw RESP client for asserting exact replies. Every process is
//! killed when its [`Server`] is dropped, also when a test panics, and by
//! the kernel when the test process itself dies (killed by a timeout or
//! Ctrl-C): children are spawned with `PR_SET_PDEATHSIG` from one thread
//! that lives as long as the process (see [`spawn_child`]).
//!
//! No wait is unbounded: every poll has a deadline ([`WAIT`]), every socket
//! a read timeout, and a cluster wait that times out panics with each
//! node's `INFO cluster`, `INFO replication` and the tail of its log
//! ([`Cluster::eventually`]). Helper threads inside `std::thread::scope`
//! are told to stop by a [`StopOnDrop`] guard, so a failed assertion in
//! the scope ends the test instead of joining a thread that loops for ever.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringcache_protocol::encode::command;
use ringcache_protocol::{Frame, Limits, decode_frame};

pub mod history;
pub mod netns;

pub use netns::Netns;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// The cluster secret test clusters share unless a test names its own
/// (`--cluster-secret`): clustering needs one.
pub const TEST_SECRET: &str = "ringcache-test-secret";

/// The `ringcache` binary: `$RINGCACHE_BIN`, or the one cargo builds next
/// to this test executable (`target/<profile>/ringcache`). A test package
/// cannot depend on another package's binary, so the first call runs
/// `cargo build` for it (a no-op when it is fresh): tests never run a stale
/// server.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    if let Ok(p) = std::env::var("RINGCACHE_BIN") {
        return PathBuf::from(p);
    }
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current exe");
            let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
            let target_dir = profile_dir.parent().expect("target dir");
            let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
            let profile = if profile == "debug" { "dev" } else { profile };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
            let out = Command::new(cargo)
                .current_dir(workspace)
                .args(["build", "--quiet", "-p", "ringcache-server", "--bin", "ringcache", "--profile", profile])
                .env("CARGO_TARGET_DIR", target_dir)
                .output()
                .expect("run cargo build for the ringcache binary");
            assert!(out.status.success(), "building ringcache failed:\n{}", String::from_utf8_lossy(&out.stderr));
            let bin = profile_dir.join(format!("ringcache{}", std::env::consts::EXE_SUFFIX));
            assert!(bin.exists(), "{} missing after cargo build", bin.display());
            bin
        })
        .clone()
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` so that the child dies with this test process.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// not the process; test threads end with their test, and a node started
/// from a helper thread must outlive it. So every child is forked by one
/// spawner thread that never exits: the signal then comes exactly when the
/// test process dies, however it dies (SIGKILL from a timeout included).
/// The setting survives `exec`, also through `ip netns exec`, which execs
/// the node in place.
pub fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_deathsig(&mut cmd));
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).send((cmd, reply_tx)).expect("spawner alive");
    reply_rx.recv().expect("spawner answers")
}

fn spawn_with_deathsig(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Runs `cmd` to completion like [`Command::output`], but kills it and
/// panics (with what it printed) if it takes longer than `limit`: an
/// external tool (redis-cli, redis-benchmark, python) that waits on a node
/// that never answers must not hang the test. stdin is closed.
pub fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_child(cmd).unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let (mut out, mut err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default());
            panic!(
                "{what} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    std::process::Output { status, stdout, stderr }
}

/// Sets its flag when dropped: create one inside `std::thread::scope`
/// next to the helper threads that loop until the flag is set, so that a
/// panic in the scope's body stops them before the scope joins them.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A process that was spawned and has not reported its address yet.
pub struct Starting {
    child: Option<Child>,
    rx: std::sync::mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    want_admin: bool,
}

impl Starting {
    /// Waits (bounded) until the node listens; kills it and panics if not.
    pub fn wait_ready(self) -> Server {
        self.try_wait_ready().unwrap_or_else(|log| panic!("ringcache did not start: {log}"))
    }

    /// Like [`Starting::wait_ready`], but gives the log back on failure.
    pub fn try_wait_ready(mut self) -> Result<Server, String> {
        let mut child = self.child.take().expect("child");
        let (mut addr, mut admin) = (None, None);
        let deadline = Instant::now() + WAIT;
        while addr.is_none() || (self.want_admin && admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains("admin HTTP") => admin = find_addr(&line),
                Ok(line) => addr = find_addr(&line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.log.lock().unwrap().join("\n"));
                }
            }
        }
        Ok(Server { child, addr: addr.expect("addr"), admin, log: self.log.clone() })
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running ringcache process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

/// The address in a startup log line, text (`addr=1.2.3.4:5`) or JSON
/// (`"addr":"1.2.3.4:5"`).
fn find_addr(line: &str) -> Option<SocketAddr> {
    if let Some(at) = line.find("\"addr\":\"") {
        return line[at + 8..].split('"').next()?.parse().ok();
    }
    let at = line.find("addr=")?;
    line[at + 5..].split_whitespace().next()?.parse().ok()
}

impl Server {
    /// Starts a node on a free loopback port with extra flags, and waits
    /// until it listens (and its admin port too, with `--admin-port 0`).
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(extra, env).wait_ready()
    }

    /// Starts the process without waiting for it (see [`Starting::wait_ready`]).
    pub fn spawn(extra: &[&str], env: &[(&str, &str)]) -> Starting {
        Self::spawn_in(None, extra, env)
    }

    /// Like [`Server::spawn`], inside node `i`'s namespace of `net` when given.
    pub fn spawn_in(net: Option<(&Netns, usize)>, extra: &[&str], env: &[(&str, &str)]) -> Starting {
        let cmd = match net {
            Some((net, i)) => net.command(i, &binary()),
            None => Command::new(binary()),
        };
        Self::spawn_cmd(cmd, extra, env)
    }

    /// Starts `cmd` (the binary, or a wrapper that execs it, such as
    /// [`Netns::command_as_host`]) with `extra` and the harness's defaults.
    pub fn spawn_cmd(mut cmd: Command, extra: &[&str], env: &[(&str, &str)]) -> Starting {
        if !extra.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        if !extra.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1"]);
        }
        // A seedless clustered node serves at once unless a test asks for
        // the founding wait (membership.rs tests it).
        if !extra.contains(&"--founding-wait-ms") {
            cmd.args(["--founding-wait-ms", "0"]);
        }
        cmd.args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // Tests must not pick up a developer's environment.
        for (k, _) in std::env::vars() {
            if k.starts_with("RINGCACHE_") && k != "RINGCACHE_BIN" {
                cmd.env_remove(k);
            }
        }
        // A developer's log filter for the nodes (e.g. `info,foca=debug`).
        if let Ok(filter) = std::env::var("RINGCACHE_TEST_NODE_LOG") {
            cmd.env("RINGCACHE_LOG", filter);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = spawn_child(cmd).expect("spawn ringcache");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let started = line.contains("listening for clients") || line.contains("admin HTTP listening");
                sink.lock().unwrap().push(line.clone());
                if started {
                    let _ = tx.send(line);
                }
            }
        });
        Starting { child: Some(child), rx, log, want_admin: extra.contains(&"--admin-port") }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until the log has a line containing `needle`: the
    /// log is read from the process's stderr by another thread, so a line
    /// the node wrote before the state the test saw may not be here yet.
    pub fn wait_log(&self, needle: &str) {
        if poll_until(WAIT, || self.log().contains(needle)).is_err() {
            panic!("no log line containing {needle:?}:\n{}", self.log());
        }
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.addr)
    }

    /// A redis-crate connection; every read and write is bounded by
    /// [`WAIT`] (an unanswered request fails the test instead of hanging it).
    pub fn redis(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).expect("redis url");
        let con = client.get_connection_with_timeout(WAIT).expect("redis connection");
        con.set_read_timeout(Some(WAIT)).expect("read timeout");
        con.set_write_timeout(Some(WAIT)).expect("write timeout");
        con
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(ok.success(), "kill -{name} failed");
        if name == "STOP" {
            // kill(2) only queues the signal: on a loaded machine a thread
            // may still run for a moment. Return once every thread is
            // stopped, so "paused" means paused for what the test does next.
            let pid = self.pid();
            Server::eventually("the process to stop", || {
                std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                    tasks.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .is_ok_and(|st| st.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T')))
                    })
                })
            });
        }
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ringcache did not exit: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// Polls `f` until it is true or the deadline passes.
    pub fn eventually(what: &str, f: impl FnMut() -> bool) {
        Self::eventually_within(WAIT, what, f)
    }

    /// Like [`Server::eventually`] with another bound.
    pub fn eventually_within(limit: Duration, what: &str, f: impl FnMut() -> bool) {
        if let Err(waited) = poll_until(limit, f) {
            panic!("timed out after {waited:?} waiting for {what}");
        }
    }
}

/// The path of libfaketime's multi-threaded library, if installed.
pub fn faketime_lib() -> Option<String> {
    ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_string)
}

/// Polls `f` every 10 ms until it is true (`Ok`) or `limit` passed
/// (`Err` with the time waited).
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), Duration> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() >= limit {
            return Err(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port for TCP and UDP both (the client and cluster ports
/// of a node). Another process may take it before it is used; tests that
/// start nodes retry is not needed on loopback in practice, and the node
/// fails loudly if it cannot bind.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Several nodes started together, every node seeded with every other
/// node's cluster address.
pub struct Cluster {
    pub nodes: Vec<Option<Server>>,
    /// (client port, cluster port) of each node, kept for restarts.
    pub ports: Vec<(u16, u16)>,
    extra: Vec<String>,
    /// Environment of each node's process (empty: the test's own).
    env: Vec<Vec<(String, String)>>,
    /// Every process ever started as node `i`, oldest first: their logs
    /// outlive the processes, so a failed long run can print them all.
    incarnations: Vec<Vec<Arc<Mutex<Vec<String>>>>>,
    /// Nodes in network namespaces (declared last: dropped after the
    /// processes in them are killed).
    pub net: Option<Netns>,
}

/// Lines of each node's log printed when a test fails (the whole logs go
/// to files).
const FAILED_TAIL_LINES: usize = 30;

impl Drop for Cluster {
    /// When the test is failing, keeps what the nodes logged: every
    /// incarnation's whole log in `target/test-logs/<test>-node<i>.txt`,
    /// and the last lines of each printed (CI shows only the output).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let test = std::thread::current().name().unwrap_or("test").replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").join("target/test-logs");
        let _ = std::fs::create_dir_all(&dir);
        for i in 0..self.incarnations.len() {
            let log = self.logs_of_every_incarnation(i);
            let path = dir.join(format!("{test}-node{i}.txt"));
            let _ = std::fs::write(&path, &log);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(FAILED_TAIL_LINES)..].join("\n");
            eprintln!("---- node{i}: last {FAILED_TAIL_LINES} log lines (all in {}):\n{tail}", path.display());
        }
    }
}

impl Cluster {
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        Self::start_on(n, extra, ports, None)
    }

    /// Like [`Cluster::start`], but every node in its own network namespace
    /// (see [`Netns`]) on fixed ports, so the test can partition them.
    pub fn start_in_netns(n: usize, extra: &[&str]) -> Cluster {
        let net = Netns::create(n);
        Self::start_on(n, extra, vec![(7379, 17379); n], Some(net))
    }

    fn start_on(n: usize, extra: &[&str], ports: Vec<(u16, u16)>, net: Option<Netns>) -> Cluster {
        Self::start_full(n, extra, ports, net, Vec::new())
    }

    /// Like [`Cluster::start`], with node `i`'s wall clock `offsets_s[i]`
    /// seconds off the host's (libfaketime, Debian's `faketime` package;
    /// monotonic time is left alone, as NTP leaves it).
    pub fn start_with_clock_offsets(n: usize, extra: &[&str], offsets_s: &[i64]) -> Cluster {
        let lib = faketime_lib().unwrap_or_else(|| {
            panic!("clock offsets need libfaketime: apt-get install faketime (scripts/test.sh installs it)")
        });
        let env = (0..n)
            .map(|i| {
                let off = offsets_s.get(i).copied().unwrap_or(0);
                vec![
                    ("LD_PRELOAD".to_string(), lib.clone()),
                    ("FAKETIME".to_string(), format!("{off:+}s")),
                    ("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
                ]
            })
            .collect();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        Self::start_full(n, extra, ports, None, env)
    }

    fn start_full(
        n: usize,
        extra: &[&str],
        ports: Vec<(u16, u16)>,
        net: Option<Netns>,
        env: Vec<Vec<(String, String)>>,
    ) -> Cluster {
        let mut c = Cluster {
            nodes: Vec::new(),
            ports,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
            incarnations: Vec::new(),
            net,
        };
        // Spawn every process before waiting for any: they start together.
        let children: Vec<_> = (0..n).map(|i| c.spawn(i)).collect();
        let started: Vec<Result<Server, String>> = children.into_iter().map(Starting::try_wait_ready).collect();
        for (i, s) in started.into_iter().enumerate() {
            let s = match s {
                Ok(s) => s,
                Err(log) => c.respawn_on_new_ports(i, log),
            };
            c.nodes.push(Some(s));
        }
        c
    }

    /// A free port chosen by `free_port` can be taken by another test's
    /// process before ours binds it: try again on other ports (the seeds
    /// of the others still name the old cluster port, but this node names
    /// theirs, so it joins anyway).
    fn respawn_on_new_ports(&mut self, i: usize, mut log: String) -> Server {
        for _ in 0..5 {
            if self.net.is_some() || !log.contains("Address already in use") {
                break;
            }
            self.ports[i] = (free_port(), free_port());
            match self.spawn(i).try_wait_ready() {
                Ok(s) => return s,
                Err(l) => log = l,
            }
        }
        panic!("ringcache did not start: {log}")
    }

    /// The address node `i` binds: loopback, or its namespace's address.
    pub fn host(&self, i: usize) -> String {
        match &self.net {
            Some(net) => net.ip(i).to_string(),
            None => "127.0.0.1".into(),
        }
    }

    fn args(&self, i: usize) -> Vec<String> {
        let (port, cport) = self.ports[i];
        let mut args = vec![
            "--bind".into(),
            self.host(i),
            "--port".into(),
            port.to_string(),
            "--cluster-port".into(),
            cport.to_string(),
            "--node-name".into(),
            format!("node{i}"),
        ];
        for (j, (_, seed)) in self.ports.iter().enumerate() {
            if j != i {
                args.push("--seed".into());
                args.push(format!("{}:{seed}", self.host(j)));
            }
        }
        if !self.extra.iter().any(|a| a == "--cluster-secret") {
            args.extend(["--cluster-secret".into(), TEST_SECRET.into()]);
        }
        if self.net.is_some() {
            // The test reaches namespaced nodes from another address; the
            // network is the test's own.
            args.extend(["--protected-mode".into(), "no".into()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// The cluster secret the nodes were started with.
    pub fn secret(&self) -> &str {
        self.extra.iter().position(|a| a == "--cluster-secret").map_or(TEST_SECRET, |i| &self.extra[i + 1])
    }

    fn spawn(&mut self, i: usize) -> Starting {
        let args = self.args(i);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> =
            self.env.get(i).map(|e| e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap_or_default();
        let starting = Server::spawn_in(self.net.as_ref().map(|n| (n, i)), &refs, &env);
        if self.incarnations.len() <= i {
            self.incarnations.resize_with(i + 1, Vec::new);
        }
        self.incarnations[i].push(starting.log.clone());
        starting
    }

    /// The logs of every process started as node `i` so far (restarts
    /// included, each headed by a `---- process N` line), oldest first.
    pub fn logs_of_every_incarnation(&self, i: usize) -> String {
        let mut out = String::new();
        for (n, log) in self.incarnations.get(i).into_iter().flatten().enumerate() {
            out.push_str(&format!("---- process {n} of node{i}\n"));
            for line in log.lock().unwrap().iter() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Starts one more node, seeded with all the others; returns its index.
    pub fn add(&mut self) -> usize {
        match &mut self.net {
            Some(net) => {
                net.add_node();
                self.ports.push(self.ports[0]);
            }
            None => self.ports.push((free_port(), free_port())),
        }
        let i = self.ports.len() - 1;
        let s = match self.spawn(i).try_wait_ready() {
            Ok(s) => s,
            Err(log) => self.respawn_on_new_ports(i, log),
        };
        self.nodes.push(Some(s));
        i
    }

    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Restarts node `i` under the same name and ports.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is still running");
        self.nodes[i] = Some(self.spawn(i).wait_ready());
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.nodes[i].take() {
            s.signal("KILL");
            s.wait();
        }
    }

    /// `cluster_known_nodes` of node `i`.
    pub fn known_nodes(&self, i: usize) -> usize {
        cluster_info_field(&mut self.node(i).raw(), "cluster_known_nodes").parse().expect("known nodes")
    }

    /// Waits until every running node knows exactly `n` members and all
    /// report the same CLUSTER SHARDS.
    pub fn wait_converged(&self, n: usize) {
        self.wait_converged_within(n, WAIT)
    }

    /// Like [`Cluster::wait_converged`], each wait bounded by `limit`.
    pub fn wait_converged_within(&self, n: usize, limit: Duration) {
        let running = self.running();
        self.eventually_within(limit, &format!("{} nodes to agree on {n} members", running.len()), || {
            running.iter().all(|&i| self.known_nodes(i) == n) && {
                let shards: Vec<_> = running.iter().map(|&i| self.node(i).raw().cmd(&["CLUSTER", "SHARDS"])).collect();
                shards.windows(2).all(|w| w[0] == w[1])
            }
        });
        // And every node has its peer links to the others up, and no slot
        // still arriving (a cluster that just formed settles in a moment).
        self.eventually_within(limit, "peer links up", || running.iter().all(|&i| self.links_up(i) + 1 >= n));
        self.eventually_within(limit, "no slot importing", || {
            running.iter().all(|&i| info_field(self.node(i), "cluster", "rebalance_slots_importing") == "0")
        });
        // Nor any slot whose owners changed still to be compared with its
        // co-owners (writes there fetch first: slower, not wrong).
        self.eventually_within(limit, "no slot unsettled", || {
            running.iter().all(|&i| info_field(self.node(i), "cluster", "rebalance_slots_unsettled") == "0")
        });
    }

    /// Indices of the nodes that run.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some()).collect()
    }

    /// Polls `f` until it is true; on timeout panics with what every
    /// running node says about itself ([`Cluster::diagnose`]).
    pub fn eventually(&self, what: &str, f: impl FnMut() -> bool) {
        self.eventually_within(WAIT, what, f)
    }

    /// Like [`Cluster::eventually`] with another bound.
    pub fn eventually_within(&self, limit: Duration, what: &str, f: impl FnMut() -> bool) {
        if let Err(waited) = poll_until(limit, f) {
            panic!("timed out after {waited:?} waiting for {what}\n{}", self.diagnose());
        }
    }

    /// Each running node's `INFO cluster`, `INFO replication` (members,
    /// epoch, importing, unsettled, links) and the tail of its log: what a
    /// failed wait prints, so a CI failure can be read from its output.
    pub fn diagnose(&self) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let Some(s) = &self.nodes[i] else {
                out.push_str(&format!("---- node{i}: not running\n"));
                continue;
            };
            out.push_str(&format!("---- node{i} (pid {}, {})\n", s.pid(), s.addr));
            for section in ["cluster", "replication"] {
                match info_text(s, section) {
                    Ok(text) => out.push_str(&text),
                    Err(e) => out.push_str(&format!("INFO {section}: {e}\n")),
                }
            }
            out.push_str(&format!("-- last log lines of node{i}:\n{}\n", s.log_tail(40)));
        }
        out
    }

    /// Peer links of node `i` that are up (INFO replication `peerN` lines).
    pub fn links_up(&self, i: usize) -> usize {
        let Frame::Bulk(info) = self.node(i).raw().cmd(&["INFO", "replication"]) else { panic!("info") };
        String::from_utf8_lossy(&info).lines().filter(|l| l.starts_with("peer") && l.contains(",state=up,")).count()
    }
}

impl Cluster {
    /// Indices of the running nodes that own `key`'s slot, primary first,
    /// as node `via`'s CLUSTER SLOTS says.
    pub fn owners_of(&self, via: usize, key: &str) -> Vec<usize> {
        let Frame::Integer(slot) = self.node(via).raw().cmd(&["CLUSTER", "KEYSLOT", key]) else { panic!("keyslot") };
        let Frame::Array(ranges) = self.node(via).raw().cmd(&["CLUSTER", "SLOTS"]) else { panic!("slots") };
        for r in ranges {
            let Frame::Array(r) = r else { panic!("range") };
            let (Frame::Integer(a), Frame::Integer(b)) = (&r[0], &r[1]) else { panic!("range bounds") };
            if !(*a..=*b).contains(&slot) {
                continue;
            }
            return r[2..]
                .iter()
                .map(|n| {
                    let Frame::Array(n) = n else { panic!("node") };
                    let Frame::Integer(port) = n[1] else { panic!("port") };
                    let ip = match &n[0] {
                        Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                        other => panic!("node ip {other:?}"),
                    };
                    (0..self.nodes.len())
                        .find(|&i| {
                            self.nodes[i].is_some()
                                && i64::from(self.node(i).port()) == port
                                && self.node(i).addr.ip().to_string() == ip
                        })
                        .expect("owner is a running node")
                })
                .collect();
        }
        panic!("slot {slot} not covered")
    }

    /// A connection to node `i`'s cluster port, authenticated as a member
    /// would be (default cluster name, the cluster's secret): for `RC.*`
    /// requests.
    pub fn peer(&self, i: usize) -> Raw {
        use ringcache_server::cluster::replication::LinkKey;
        let key = LinkKey::new("ringcache", Some(self.secret()));
        let addr = SocketAddr::new(self.node(i).addr.ip(), self.ports[i].1);
        let mut r = Raw::connect(addr);
        let cn = "00112233445566778899aabbccddeeff";
        let Frame::Array(h) = r.cmd(&["RC.HELLO", "harness", cn]) else { panic!("peer handshake") };
        let (Frame::Bulk(sn), Frame::Bulk(proof)) = (&h[0], &h[1]) else { panic!("peer handshake") };
        assert_eq!(&proof[..], key.server_proof(cn.as_bytes(), sn).as_bytes(), "node proof");
        assert_eq!(r.cmd(&["RC.AUTH", &key.client_proof(sn, cn.as_bytes())]), Frame::Simple("OK".into()));
        r
    }

    /// `key`'s state (value, expiry, version, or tombstone) on node `i`'s
    /// own copy.
    pub fn key_state(&self, i: usize, key: &str) -> ringcache_server::cluster::replication::ReadState {
        let reply = self.peer(i).cmd(&["RC.READ", key]);
        ringcache_server::cluster::replication::ReadState::decode(&reply)
            .unwrap_or_else(|| panic!("RC.READ {key} on node {i}: {reply:?}"))
    }

    /// The first key `prefix:N` whose owners satisfy `want` (owners as in
    /// [`Cluster::owners_of`]).
    pub fn key_where(&self, prefix: &str, want: impl Fn(&[usize]) -> bool) -> String {
        (0..10_000)
            .map(|i| format!("{prefix}:{i}"))
            .find(|k| want(&self.owners_of(0, k)))
            .expect("some key has such owners")
    }
}

/// Keys stored on this node itself (INFO keyspace: replicas' copies
/// included), unlike DBSIZE, which counts the whole cluster.
pub fn local_keys(s: &Server) -> i64 {
    let Frame::Bulk(info) = s.raw().cmd(&["INFO", "keyspace"]) else { panic!("info") };
    let text = String::from_utf8_lossy(&info).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("db0:keys="))
        .map_or(0, |rest| rest.split(',').next().unwrap_or("0").parse().expect("key count"))
}

/// INFO `section` of node `s` as text, without panicking (a node that
/// does not answer within a few seconds gives an error): for diagnostics.
pub fn info_text(s: &Server, section: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&s.addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    let mut req = BytesMut::new();
    command(&mut req, &["INFO", section]);
    stream.write_all(&req).map_err(|e| format!("write: {e}"))?;
    let mut buf = BytesMut::new();
    loop {
        match decode_frame(&buf, &Limits::default()) {
            Ok(Some((Frame::Bulk(b), _))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Ok(Some((other, _))) => return Err(format!("reply {other:?}")),
            Ok(None) => {}
            Err(e) => return Err(format!("bad reply: {e:?}")),
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A field of INFO `section` on node `s`.
pub fn info_field(s: &Server, section: &str, field: &str) -> String {
    let Frame::Bulk(info) = s.raw().cmd(&["INFO", section]) else { panic!("info") };
    let text = String::from_utf8_lossy(&info).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// Through redis-rs's cluster client (which routes by CLUSTER SLOTS), SETs
/// `key:0`..`key:{n}` and reads every one back.
pub fn redis_rs_cluster_roundtrip(addrs: &[SocketAddr], n: i64) {
    let urls: Vec<String> = addrs.iter().map(|a| format!("redis://{a}/")).collect();
    let client = redis::cluster::ClusterClient::new(urls).expect("cluster client");
    let mut con = client.get_connection().expect("cluster connection");
    for i in 0..n {
        let _: () = redis::cmd("SET").arg(format!("key:{i}")).arg(i).query(&mut con).expect("SET");
    }
    for i in 0..n {
        let v: i64 = redis::cmd("GET").arg(format!("key:{i}")).query(&mut con).expect("GET");
        assert_eq!(v, i, "key:{i}");
    }
}

/// A field of CLUSTER INFO.
pub fn cluster_info_field(c: &mut Raw, field: &str) -> String {
    let Frame::Bulk(text) = c.cmd(&["CLUSTER", "INFO"]) else { panic!("CLUSTER INFO") };
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} not in CLUSTER INFO: {text}"))
        .trim()
        .to_string()
}

/// A blocking RESP client that shows replies exactly as sent.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream, buf: BytesMut::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one command as an array of bulk strings, returns its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Frame {
        let mut b = BytesMut::new();
        command(&mut b, args);
        self.send(&b);
        self.read()
    }

    /// Reads one reply frame (panics on timeout or close).
    pub fn read(&mut self) -> Frame {
        self.try_read()
            .unwrap_or_else(|| panic!("connection closed; unparsed: {:?}", String::from_utf8_lossy(&self.buf)))
    }

    /// Reads one reply frame; `None` if the server closed the connection.
    pub fn try_read(&mut self) -> Option<Frame> {
        let limits = Limits::default();
        loop {
            if let Some((frame, used)) = decode_frame(&self.buf, &limits).expect("server sent a valid frame") {
                let _ = self.buf.split_to(used);
                return Some(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk).expect("read (timed out?)");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True once the server has closed the connection (bounded wait).
    pub fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Reply builders for assertions.
pub mod reply {
    use bytes::Bytes;
    use ringcache_protocol::Frame;

    pub fn ok() -> Frame {
        Frame::Simple(Bytes::from_static(b"OK"))
    }
    pub fn simple(s: &str) -> Frame {
        Frame::Simple(Bytes::copy_from_slice(s.as_bytes()))
    }
    pub fn bulk(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }
    pub fn int(n: i64) -> Frame {
        Frame::Integer(n)
    }
    pub fn err(s: &str) -> Frame {
        Frame::Error(Bytes::copy_from_slice(s.as_bytes()))
    }
    pub fn null() -> Frame {
        Frame::Null
    }
    pub fn array(items: Vec<Frame>) -> Frame {
        Frame::Array(items)
    }
    pub fn bulks(items: &[&str]) -> Frame {
        Frame::Array(items.iter().map(|s| bulk(s)).collect())
    }
}

/// Resident memory of a process in KiB (VmRSS).
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

/// HTTP GET on the admin port: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect admin");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A Python with redis-py, for tests that drive ringcache with it: a
/// virtualenv under `target/redis-py` (`.ci/run` creates it; a test creates
/// it on first use if missing, which needs PyPI).
pub fn redis_py() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        let venv = workspace.join("target/redis-py");
        let python = venv.join("bin/python");
        let ready =
            || Command::new(&python).args(["-c", "import redis.cluster"]).output().is_ok_and(|o| o.status.success());
        if !ready() {
            let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().expect("python3 -m venv");
            assert!(made.success(), "cannot create a virtualenv at {}", venv.display());
            let pip = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "redis>=5,<6"])
                .status()
                .expect("pip install redis");
            assert!(pip.success(), "pip install redis failed (PyPI unreachable?)");
            assert!(ready(), "redis-py did not install");
        }
        python
    })
    .clone()
}
