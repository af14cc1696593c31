//! Real network partitions for the fault suite: every node in its own
//! Linux network namespace, all of them on one bridge (itself in a
//! namespace of ours), and a veth from the test's own namespace to the
//! bridge so the test's clients reach every node. A partition is a set of
//! nftables DROP rules inside the node namespaces, so it cuts gossip (UDP)
//! and peer links (TCP) between chosen nodes while the test still reaches
//! them all. Everything is made by the test and removed on drop: deleting
//! the namespaces removes their interfaces, rules and the host's veth.
//!
//! Needs root (CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables).
//! [`Netns::unavailable`] says why not, so a test can say it skipped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);
/// Namespaces are made one set at a time (subnet choice and cleanup).
static SETUP: Mutex<()> = Mutex::new(());

/// One test's namespaces: a bridge and one namespace per node.
pub struct Netns {
    prefix: String,
    subnet: u8,
    nodes: usize,
    /// Each node's address (see [`Netns::readdress`]).
    addrs: Vec<Ipv4Addr>,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    run(args).unwrap_or_else(|e| panic!("{e}"))
}

impl Netns {
    /// Why partitions cannot be made here, if they cannot.
    pub fn unavailable() -> Option<String> {
        let uid = run(&["id", "-u"]).unwrap_or_default();
        if uid.trim() != "0" {
            return Some("network namespaces need root (CAP_NET_ADMIN)".into());
        }
        for tool in [["ip", "-V"], ["nft", "--version"]] {
            if let Err(e) = run(&tool) {
                return Some(format!("`{}` is not usable ({e}); install iproute2 and nftables", tool[0]));
            }
        }
        None
    }

    /// Makes the bridge and `n` node namespaces, each with one address.
    pub fn create(n: usize) -> Netns {
        let _guard = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale();
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        // A /24 of 10.213.x.0 that no interface on this machine uses yet.
        let used = must(&["ip", "-4", "-o", "addr", "show"]);
        let subnet = (0..200u32)
            .map(|i| ((pid.wrapping_mul(7).wrapping_add(k).wrapping_add(i)) % 200 + 20) as u8)
            .find(|s| !used.contains(&format!("10.213.{s}.")))
            .expect("a free 10.213.x.0/24");
        let net = Netns { prefix: format!("rcf-{pid}-{k}"), subnet, nodes: 0, addrs: Vec::new() };
        let br = net.bridge_ns();
        must(&["ip", "netns", "add", &br]);
        must(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        // The test's own leg: host side in our namespace, the other end on
        // the bridge. Interface names are at most 15 bytes.
        let host_if = net.host_if();
        must(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", "host", "netns", &br]);
        must(&["ip", "-n", &br, "link", "set", "host", "master", "br0", "up"]);
        must(&["ip", "addr", "add", &format!("10.213.{subnet}.254/24"), "dev", &host_if]);
        must(&["ip", "link", "set", &host_if, "up"]);
        let mut net = net;
        for _ in 0..n {
            net.add_node();
        }
        net
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    fn host_if(&self) -> String {
        let pid = std::process::id();
        let k = self.prefix.rsplit('-').next().unwrap_or("0");
        format!("rc{pid:x}h{k}")
    }

    /// The namespace of node `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// The address of node `i` (nodes 0..=99).
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.addrs[i]
    }

    /// The test's own address on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    /// Gives node `i` another address (as a pod that comes back on a new
    /// IP); returns it. Processes in the namespace should be stopped first.
    pub fn readdress(&mut self, i: usize) -> Ipv4Addr {
        let (old, new) = (self.addrs[i], Ipv4Addr::new(10, 213, self.subnet, self.addrs[i].octets()[3] + 100));
        let ns = self.ns(i);
        must(&["ip", "-n", &ns, "addr", "del", &format!("{old}/24"), "dev", "eth0"]);
        must(&["ip", "-n", &ns, "addr", "add", &format!("{new}/24"), "dev", "eth0"]);
        self.addrs[i] = new;
        new
    }

    /// Writes `/etc/hosts` as every node namespace sees it (`ip netns
    /// exec` mounts `/etc/netns/<ns>/hosts` over it): loopback plus
    /// `names[i]` for node `i`'s current address. Rewritten in place, so
    /// processes already running see the change. Removed on drop.
    pub fn write_hosts(&self, names: &[&str]) {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!("{} {name}\n", self.ip(i)));
        }
        for i in 0..self.nodes {
            let dir = format!("/etc/netns/{}", self.ns(i));
            std::fs::create_dir_all(&dir).expect("mkdir /etc/netns/<ns>");
            std::fs::write(format!("{dir}/hosts"), &text).expect("write hosts");
        }
    }

    /// Like [`Netns::command`], in a UTS namespace of its own whose host
    /// name is `host` (as a container has): `program` and the arguments
    /// added to the returned command run as `exec` of the shell.
    pub fn command_as_host(&self, i: usize, host: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i), "unshare", "--uts", "--", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
            .arg(host)
            .arg(program);
        c
    }

    pub fn len(&self) -> usize {
        self.nodes
    }

    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    /// One more node namespace on the bridge; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes;
        let (br, ns) = (self.bridge_ns(), self.ns(i));
        let leg = format!("n{i}");
        must(&["ip", "netns", "add", &ns]);
        must(&["ip", "-n", &br, "link", "add", &leg, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        must(&["ip", "-n", &br, "link", "set", &leg, "master", "br0", "up"]);
        self.addrs.push(Ipv4Addr::new(10, 213, self.subnet, i as u8 + 1));
        must(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        // An empty filter table per node that partitions add rules to.
        must(&["ip", "netns", "exec", &ns, "nft", "add", "table", "inet", "rcfault"]);
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            must(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "nft",
                "add",
                "chain",
                "inet",
                "rcfault",
                chain,
                &format!("{{ type filter hook {hook} priority 0; policy accept; }}"),
            ]);
        }
        self.nodes += 1;
        i
    }

    /// A command that runs `program` inside node `i`'s namespace (`ip netns
    /// exec` execs it: the child's pid is the program's).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }

    /// Drops all traffic between nodes `a` and `b`, both ways (the test
    /// still reaches both).
    pub fn cut(&self, a: usize, b: usize) {
        for (me, other) in [(a, b), (b, a)] {
            let ns = self.ns(me);
            let peer = self.ip(other).to_string();
            for (chain, dir) in [("in", "saddr"), ("out", "daddr")] {
                must(&[
                    "ip", "netns", "exec", &ns, "nft", "add", "rule", "inet", "rcfault", chain, "ip", dir, &peer,
                    "drop",
                ]);
            }
        }
    }

    /// Drops TCP between nodes `a` and `b`, both ways, and nothing else:
    /// gossip (UDP) still sees both alive while no peer link connects.
    pub fn cut_tcp(&self, a: usize, b: usize) {
        self.cut_proto(a, b, "tcp");
    }

    /// Drops UDP between nodes `a` and `b`, both ways, and nothing else:
    /// gossip cannot pass while peer links (TCP) stay up.
    pub fn cut_udp(&self, a: usize, b: usize) {
        self.cut_proto(a, b, "udp");
    }

    fn cut_proto(&self, a: usize, b: usize, proto: &str) {
        for (me, other) in [(a, b), (b, a)] {
            let ns = self.ns(me);
            let peer = self.ip(other).to_string();
            for (chain, dir) in [("in", "saddr"), ("out", "daddr")] {
                must(&[
                    "ip", "netns", "exec", &ns, "nft", "add", "rule", "inet", "rcfault", chain, "ip", dir, &peer,
                    "meta", "l4proto", proto, "drop",
                ]);
            }
        }
    }

    /// Drops `percent` % of the packets (random, each way, UDP and TCP)
    /// between node `i` and every other node: a flaky link, not a cut.
    pub fn lossy(&self, i: usize, percent: u32) {
        let ns = self.ns(i);
        let p = percent.min(100).to_string();
        for other in (0..self.nodes).filter(|&o| o != i) {
            let peer = self.ip(other).to_string();
            for (chain, dir) in [("in", "saddr"), ("out", "daddr")] {
                must(&[
                    "ip", "netns", "exec", &ns, "nft", "add", "rule", "inet", "rcfault", chain, "ip", dir, &peer,
                    "numgen", "random", "mod", "100", "<", &p, "drop",
                ]);
            }
        }
    }

    /// Cuts every link between nodes of different groups.
    pub fn partition(&self, groups: &[&[usize]]) {
        for (gi, g) in groups.iter().enumerate() {
            for h in &groups[gi + 1..] {
                for &a in *g {
                    for &b in *h {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        for i in 0..self.nodes {
            let ns = self.ns(i);
            for chain in ["in", "out"] {
                must(&["ip", "netns", "exec", &ns, "nft", "flush", "chain", "inet", "rcfault", chain]);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns(i)));
        }
        let _ = run(&["ip", "netns", "del", &self.bridge_ns()]);
    }
}

/// Namespaces left by a test process that no longer runs (killed before
/// its drops ran).
fn remove_stale() {
    let Ok(list) = run(&["ip", "netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("rcf-") else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", name]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
        }
    }
}
