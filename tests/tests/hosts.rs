//! Deployment across hosts and the secure defaults, with real processes:
//! nodes in network namespaces of their own (their own addresses on one
//! bridge, their own host names), started the way a container starts them
//! — same ports everywhere, `--bind 0.0.0.0`, seeds by host name, no
//! `--node-name` — and the test's clients on another address, as an
//! application host would be.
//!
//! Needs root, iproute2, nftables and util-linux's `unshare`
//! (`scripts/test.sh` installs them); without them each test says it
//! skipped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ringcache_protocol::Frame;
use ringcache_tests::reply::*;
use ringcache_tests::{Netns, Raw, Server, Starting, binary, cluster_info_field, poll_until};

const PORT: u16 = 6379;
const CPORT: u16 = 16379;
const PASS: &str = "hosts-test-password";
const SECRET: &str = "hosts-test-secret";
const NAMES: [&str; 3] = ["cache-0", "cache-1", "cache-2"];

fn netns_or_skip(what: &str) -> Option<Netns> {
    match Netns::unavailable() {
        Some(why) => {
            eprintln!("skipped ({what}): {why}");
            None
        }
        None => Some(Netns::create(NAMES.len())),
    }
}

/// Node `i` started as a container is: its own host name, every node on
/// the same ports, bound to 0.0.0.0, seeded by the first host's name.
fn start_host(net: &Netns, i: usize, extra: &[&str]) -> Server {
    let seed = format!("{}:{CPORT}", NAMES[0]);
    let (port, cport) = (PORT.to_string(), CPORT.to_string());
    let mut args = vec!["--bind", "0.0.0.0", "--port", &port, "--cluster-port", &cport, "--seed", &seed];
    args.extend_from_slice(extra);
    let cmd = net.command_as_host(i, NAMES[i], &binary());
    let mut s = Starting::try_wait_ready(Server::spawn_cmd(cmd, &args, &[]))
        .unwrap_or_else(|log| panic!("node {i} did not start:\n{log}"));
    // The log names the bound address (0.0.0.0): reach it at the host's.
    s.addr = SocketAddr::new(IpAddr::V4(net.ip(i)), PORT);
    s
}

fn authed(s: &Server) -> Raw {
    let mut r = s.raw();
    assert_eq!(r.cmd(&["AUTH", PASS]), ok());
    r
}

/// Every (host:port) CLUSTER SLOTS names, primaries and replicas.
fn slot_addrs(r: &mut Raw) -> Vec<String> {
    let Frame::Array(ranges) = r.cmd(&["CLUSTER", "SLOTS"]) else { panic!("CLUSTER SLOTS") };
    let mut out = Vec::new();
    for range in ranges {
        let Frame::Array(parts) = range else { panic!("range") };
        for node in &parts[2..] {
            let Frame::Array(n) = node else { panic!("node") };
            let (Frame::Bulk(host), Frame::Integer(port)) = (&n[0], &n[1]) else { panic!("node {n:?}") };
            out.push(format!("{}:{port}", String::from_utf8_lossy(host)));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn state(nodes: &[&Server]) -> String {
    let mut out = String::new();
    for (i, s) in nodes.iter().enumerate() {
        let info = match authed(s).cmd(&["INFO", "cluster"]) {
            Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            other => format!("{other:?}"),
        };
        let log = s.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        out.push_str(&format!("--- node {i} at {}\n{info}\n{}\n", s.addr, tail.join("\n")));
    }
    out
}

/// `cmd`'s reply through `s`: the cluster's own work shows as latency,
/// never as `-TRYAGAIN` (issue 16).
fn through(s: &Server, cmd: &[&str]) -> Frame {
    let reply = authed(s).cmd(cmd);
    assert!(!matches!(&reply, Frame::Error(e) if e.starts_with(b"TRYAGAIN")), "{cmd:?}: {reply:?}");
    reply
}

fn wait_members(nodes: &[&Server], n: usize, what: &str) {
    let known = |s: &Server| cluster_info_field(&mut authed(s), "cluster_known_nodes") == n.to_string();
    if poll_until(Duration::from_secs(30), || nodes.iter().all(|s| known(s))).is_err() {
        panic!("timed out waiting for {what}\n{}", state(nodes));
    }
}

#[test]
fn three_hosts_bound_to_any_address_form_one_cluster() {
    let Some(mut net) = netns_or_skip("three hosts") else { return };
    net.write_hosts(&NAMES);
    let extra = ["--cluster-secret", SECRET, "--requirepass", PASS];
    let mut nodes: Vec<Server> = (0..3).map(|i| start_host(&net, i, &extra)).collect();
    let refs: Vec<&Server> = nodes.iter().collect();
    wait_members(&refs, 3, "three hosts to form one cluster");

    // What clients are told: the hosts' own addresses, never 0.0.0.0 or
    // loopback; each default node name is the host's.
    let want: Vec<String> = (0..3).map(|i| format!("{}:{PORT}", net.ip(i))).collect();
    let mut sorted = want.clone();
    sorted.sort();
    let settled = || (0..3).all(|i| slot_addrs(&mut authed(&nodes[i])) == sorted);
    if poll_until(Duration::from_secs(30), settled).is_err() {
        panic!("CLUSTER SLOTS never named {sorted:?}: {:?}\n{}", slot_addrs(&mut authed(&nodes[0])), state(&refs));
    }
    let Frame::Bulk(text) = authed(&nodes[0]).cmd(&["CLUSTER", "NODES"]) else { panic!("CLUSTER NODES") };
    let text = String::from_utf8_lossy(&text).into_owned();
    for (i, name) in NAMES.iter().enumerate() {
        assert!(text.contains(&format!("{}:{PORT}@{CPORT}", net.ip(i))), "{text}");
        let got = authed(&nodes[i]).cmd(&["CONFIG", "GET", "node-name"]);
        assert_eq!(got, Frame::Array(vec![bulk("node-name"), bulk(&format!("{name}:{PORT}"))]), "node {i}");
    }
    assert!(!text.contains("0.0.0.0") && !text.contains("127.0.0.1"), "{text}");

    // A key written through one host reads back through another.
    assert_eq!(through(&nodes[0], &["SET", "across", "hosts"]), ok());
    assert_eq!(through(&nodes[1], &["GET", "across"]), bulk("hosts"));
    assert_eq!(through(&nodes[2], &["GET", "across"]), bulk("hosts"));

    // redis-py's RedisCluster, from the test's own address, routes by
    // the advertised addresses.
    let script = format!(
        "import redis.cluster as c\n\
         r = c.RedisCluster(host='{}', port={PORT}, password='{PASS}', socket_timeout=10)\n\
         for i in range(200): r.set(f'py:{{i}}', i)\n\
         assert all(int(r.get(f'py:{{i}}')) == i for i in range(200))\n\
         print('ok', len(r.get_nodes()))\n",
        net.ip(1)
    );
    let mut py = std::process::Command::new(ringcache_tests::redis_py());
    py.args(["-c", &script]);
    let out = ringcache_tests::output_within(py, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok 3"),
        "redis-py: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Host 2 comes back on a new address (a rescheduled pod): same host
    // name, seeds re-resolved; the cluster names it at the new address.
    let mut gone = nodes.pop().expect("node 2");
    gone.stop();
    drop(gone);
    let new_ip = net.readdress(2);
    net.write_hosts(&NAMES);
    nodes.push(start_host(&net, 2, &extra));
    let refs: Vec<&Server> = nodes.iter().collect();
    let want: Vec<String> = (0..3).map(|i| format!("{}:{PORT}", net.ip(i))).collect();
    let mut sorted = want.clone();
    sorted.sort();
    let moved = || (0..3).all(|i| slot_addrs(&mut authed(&nodes[i])) == sorted);
    if poll_until(Duration::from_secs(30), moved).is_err() {
        panic!(
            "the cluster never named host 2 at {new_ip}: {:?}\n{}",
            slot_addrs(&mut authed(&nodes[0])),
            state(&refs)
        );
    }
    wait_members(&refs, 3, "host 2 to rejoin under its new address");
    assert_eq!(through(&nodes[2], &["GET", "across"]), bulk("hosts"));
}

#[test]
fn protected_mode_refuses_other_hosts_until_a_password_is_set() {
    let Some(net) = netns_or_skip("protected mode") else { return };
    // No secret: a standalone cache on 0.0.0.0 with no password.
    let port = PORT.to_string();
    let start = |extra: &[&str]| {
        let mut args = vec!["--bind", "0.0.0.0", "--port", &port];
        args.extend_from_slice(extra);
        let mut s = Server::spawn_in(Some((&net, 0)), &args, &[]).wait_ready();
        s.addr = SocketAddr::new(IpAddr::V4(net.ip(0)), PORT);
        s
    };
    let mut s = start(&[]);
    let mut r = s.raw();
    let Frame::Error(e) = r.cmd(&["PING"]) else { panic!("protected mode let another host in") };
    assert!(e.starts_with(b"DENIED") && e.windows(14).any(|w| w == b"protected mode"), "{e:?}");
    assert!(r.is_closed(), "a denied connection stays open");
    // On loopback inside its host it serves.
    let mut cli = net.command(0, std::path::Path::new("redis-cli"));
    cli.args(["-p", &port, "PING"]);
    let out = ringcache_tests::output_within(cli, Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(info_on_loopback(&net, "clients_denied"), "1");
    s.stop();
    drop(s);

    // With a password, other hosts get the usual NOAUTH, then serve.
    let s = start(&["--requirepass", PASS]);
    let mut r = s.raw();
    assert!(matches!(r.cmd(&["GET", "k"]), Frame::Error(e) if e.starts_with(b"NOAUTH")));
    assert_eq!(r.cmd(&["AUTH", PASS]), ok());
    assert_eq!(r.cmd(&["PING"]), simple("PONG"));
    drop(s);

    // Turned off, as an operator who firewalled the port would.
    let s = start(&["--protected-mode", "no"]);
    assert_eq!(s.raw().cmd(&["PING"]), simple("PONG"));
}

/// A field of INFO stats, read from inside node 0's namespace.
fn info_on_loopback(net: &Netns, field: &str) -> String {
    let mut cli = net.command(0, std::path::Path::new("redis-cli"));
    cli.args(["-p", &PORT.to_string(), "INFO", "stats"]);
    let out = ringcache_tests::output_within(cli, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        .trim()
        .to_string()
}
