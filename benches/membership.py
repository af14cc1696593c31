#!/usr/bin/env python3
"""Membership timings of ringcache on this machine (loopback, release build).

- Convergence: N nodes (3, 5, 10) started at the same moment, each seeded
  with the others; time from the first spawn until every node reports N
  members in CLUSTER INFO.
- Failure detection: in a 5-node cluster, kill -9 one node (not the same
  one twice in a row) and time until every survivor reports 4 members
  (crash -> Down on every peer -> new slot table); restart it under the same
  name, wait for 5 again; repeat --kills times. Reports mean, min, max.

    cargo build --release -p ringcache-server
    python3 benches/membership.py            # ~1 minute
    python3 benches/membership.py --kills 40 --sizes 3,5,10,20

Standard library only. Polls every 5 ms over raw RESP; the figures include
that polling granularity and the node's 50 ms debounce of membership changes.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    while True:
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()


def known_nodes(port):
    """cluster_known_nodes of the node on `port`, or None if it does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.startswith(b"$"):
                    header, _, rest = data.partition(b"\r\n")
                    if len(rest) >= int(header[1:]) + 2:
                        break
            for line in data.decode(errors="replace").split("\r\n"):
                if line.startswith("cluster_known_nodes:"):
                    return int(line.split(":")[1])
    except OSError:
        return None
    return None


class Cluster:
    def __init__(self, binary, n, extra):
        self.binary = binary
        self.ports = [(free_port(), free_port()) for _ in range(n)]
        self.extra = extra
        self.procs = [None] * n

    def spawn(self, i):
        port, cport = self.ports[i]
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(port), "--cluster-port", str(cport),
                "--node-name", f"node{i}", "--cluster-secret", "bench-secret"] + self.extra
        for j, (_, seed) in enumerate(self.ports):
            if j != i:
                args += ["--seed", f"127.0.0.1:{seed}"]
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, i):
        p = self.procs[i]
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.procs[i] = None

    def stop(self):
        for p in self.procs:
            if p is not None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def wait_members(self, nodes, want, deadline_s=30):
        start = time.monotonic()
        while time.monotonic() - start < deadline_s:
            if all(known_nodes(self.ports[i][0]) == want for i in nodes):
                return time.monotonic()
            time.sleep(0.005)
        raise SystemExit(f"timed out waiting for {want} members on nodes {nodes}")


def describe(xs):
    return f"mean {statistics.mean(xs):.0f} ms, min {min(xs):.0f} ms, max {max(xs):.0f} ms (n={len(xs)})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ringcache-bin", default=os.path.join(ROOT, "target/release/ringcache"))
    ap.add_argument("--sizes", default="3,5,10")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--ringcache-arg", action="append", default=[], help="extra flag for every node")
    ap.add_argument("--load-seconds", type=int, default=15)
    a = ap.parse_args()
    if not os.path.exists(a.ringcache_bin):
        sys.exit(f"{a.ringcache_bin} missing: cargo build --release -p ringcache-server")
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} CPUs; ringcache {a.ringcache_bin}")

    for n in [int(x) for x in a.sizes.split(",")]:
        times = []
        for _ in range(3):
            c = Cluster(a.ringcache_bin, n, a.ringcache_arg)
            try:
                t0 = time.monotonic()
                for i in range(n):
                    c.spawn(i)
                t1 = c.wait_members(range(n), n)
                times.append((t1 - t0) * 1000)
            finally:
                c.stop()
        print(f"convergence, {n} nodes started together: {describe(times)}")

    c = Cluster(a.ringcache_bin, 5, a.ringcache_arg)
    detect = []
    rejoin = []
    try:
        for i in range(5):
            c.spawn(i)
        c.wait_members(range(5), 5)
        victim = 0
        for k in range(a.kills):
            victim = 1 + (victim % 4)
            survivors = [i for i in range(5) if i != victim]
            t0 = time.monotonic()
            c.kill(victim)
            t1 = c.wait_members(survivors, 4)
            detect.append((t1 - t0) * 1000)
            t2 = time.monotonic()
            c.spawn(victim)
            t3 = c.wait_members(range(5), 5)
            rejoin.append((t3 - t2) * 1000)
    finally:
        c.stop()
    print(f"failure detection, kill -9 in a 5-node cluster -> every survivor shows 4 members: {describe(detect)}")
    print(f"rejoin, restart under the same name -> every node shows 5 members: {describe(rejoin)}")
    false_downs(a)


def false_downs(a):
    """Both CPUs saturated by redis-benchmark against one node of a 5-node
    cluster for --load-seconds: every node must keep seeing 5 members."""
    c = Cluster(a.ringcache_bin, 5, a.ringcache_arg)
    try:
        for i in range(5):
            c.spawn(i)
        c.wait_members(range(5), 5)
        bench = subprocess.Popen(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(c.ports[0][0]), "-t", "set,get", "-d", "100",
             "-r", "1000000", "-c", "50", "-P", "16", "-n", "100000000", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.monotonic()
        polls = 0
        lapses = 0
        try:
            while time.monotonic() - start < a.load_seconds:
                for i in range(5):
                    polls += 1
                    if known_nodes(c.ports[i][0]) != 5:
                        lapses += 1
                time.sleep(0.02)
        finally:
            bench.kill()
            bench.wait()
        print(f"false downs under load: {lapses} of {polls} member-count polls below 5 "
              f"({a.load_seconds} s of redis-benchmark -P 16 -c 50 on node0, both CPUs busy)")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
