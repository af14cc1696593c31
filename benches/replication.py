#!/usr/bin/env python3
"""Replication cost: a 3-node RF=3 cluster (W=1 and W=2) beside a single
node, redis-server and a Redis Cluster of 3 primaries with 2 replicas each
(so every key is on 3 processes, as with RF=3), in one run, on this machine.

For each setup redis-benchmark drives SET then GET (100-byte values,
100,000-key random keyspace, 50 clients) at pipeline depth 1 and 16, in
cluster mode (`--cluster`: each request goes straight to its key's
primary, as a cluster-aware client does). The plain mode row sends
everything to one node, which forwards two thirds of the requests. The
total CPU time of every server process of the setup is sampled around each
run, giving server CPU per request; BENCHMARKS.md compares a replicated
write's with a single-node write's (goal <= 1.5x).

All processes share this machine's CPUs, so a 3-node cluster's throughput
here is bounded by the same 2 cores that serve a single node: the CPU per
request is the figure that carries over to real deployments.

Redis Cluster replicates asynchronously (its primaries answer before any
replica has the write), so its rows compare most directly with W=1; W=2
waits for one replica's acknowledgement. The "vs Redis Cluster" column
divides each row's server CPU per request by Redis Cluster's for the same
operation and pipeline depth (issue goal: <= 1.0x for SET and GET).

    cargo build --release -p ringcache-server
    python3 benches/replication.py [--requests 100000] [--out bench-results]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ringlib import BIN, ROOT, free_port, node_argv, settled

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def ping(port: int) -> bool:
    try:
        out = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, timeout=2)
        return out.stdout.strip() == "PONG"
    except subprocess.TimeoutExpired:
        return False


class Setup:
    """A set of server processes started together and stopped together."""

    def __init__(self, name: str, procs: list[subprocess.Popen], ports: list[int]):
        self.name, self.procs, self.ports = name, procs, ports

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_ready(ports: list[int], check=None, deadline_s: float = 30) -> None:
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if all(ping(p) for p in ports) and (check is None or check()):
            return
        time.sleep(0.1)
    raise SystemExit(f"servers on {ports} did not start")


def start_redis(logs: Path) -> Setup:
    port = free_port()
    p = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=open(logs / "redis.log", "w"),
        stderr=subprocess.STDOUT,
    )
    wait_ready([port])
    return Setup("redis-server", [p], [port])


def start_redis_cluster(logs: Path, primaries: int = 3, replicas: int = 2) -> Setup:
    """Redis in cluster mode: `primaries` primaries, each with `replicas`
    replicas, created by `redis-cli --cluster create`; ready once every node
    says `cluster_state:ok` and every replica's link to its primary is up."""
    n = primaries * (1 + replicas)
    ports = [free_port() for _ in range(n)]
    procs = []
    for port in ports:
        argv = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", str(logs / f"nodes-{port}.conf")]
        argv += ["--dir", str(logs)]
        procs.append(subprocess.Popen(argv, stdout=open(logs / f"redis-cluster-{port}.log", "w"), stderr=subprocess.STDOUT))
    setup = Setup("redis cluster", procs, ports)
    try:
        wait_ready(ports)
        create = ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports]]
        create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        out = subprocess.run(create, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise SystemExit(f"redis-cli --cluster create failed:\n{out.stdout}\n{out.stderr}")

        def formed() -> bool:
            for p in ports:
                if "cluster_state:ok" not in cli_text(p, "cluster", "info"):
                    return False
                role = cli_text(p, "info", "replication")
                if "role:slave" in role and "master_link_status:up" not in role:
                    return False
            return True

        wait_ready(ports, formed, deadline_s=120)
    except BaseException:
        setup.stop()
        raise
    # Clients are pointed at a primary (redis-benchmark --cluster finds the rest).
    primaries_first = [p for p in ports if "role:master" in cli_text(p, "info", "replication")]
    setup.ports = primaries_first + [p for p in ports if p not in primaries_first]
    return setup


def cli_text(port: int, *args: str) -> str:
    try:
        out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=5)
        return out.stdout
    except subprocess.TimeoutExpired:
        return ""


def start_ringcache(n: int, extra: list[str], logs: Path, name: str) -> Setup:
    ports = [(free_port(), free_port()) for _ in range(n)]
    procs = []
    for i, (port, cport) in enumerate(ports):
        argv = node_argv(i, port, cport, [c for j, (_, c) in enumerate(ports) if j != i])
        procs.append(
            subprocess.Popen(argv + extra, stdout=subprocess.DEVNULL, stderr=open(logs / f"{name}-{i}.log", "w"))
        )
    client_ports = [p for p, _ in ports]
    wait_ready(client_ports, lambda: settled(client_ports, n))
    return Setup(name, procs, client_ports)


def bench(setup: Setup, test: str, pipeline: int, requests: int, cluster: bool) -> dict:
    argv = ["redis-benchmark", "-p", str(setup.ports[0]), "-t", test, "-n", str(requests), "-c", "50"]
    argv += ["-P", str(pipeline), "-d", "100", "-r", "100000", "--csv"]
    if cluster:
        argv.append("--cluster")
    before = setup.cpu()
    t0 = time.time()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    wall = time.time() - t0
    cpu = setup.cpu() - before
    # Cluster mode prints the masters it found before the CSV.
    text = out.stdout[out.stdout.find('"test"') :]
    rows = list(csv.reader(io.StringIO(text)))
    head, vals = rows[0], rows[-1]
    row = dict(zip(head, vals))
    return {
        "rps": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
        "cpu_us_per_req": cpu / requests * 1e6,
        "wall_s": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "bench-results"))
    args = ap.parse_args()
    if not BIN.exists() or not shutil.which("redis-benchmark"):
        print("needs target/release/ringcache (cargo build --release -p ringcache-server) and redis-benchmark")
        return 2
    logs = Path(tempfile.mkdtemp(prefix="ringcache-repl-bench-"))
    setups = [
        ("redis-server", lambda: start_redis(logs), False),
        ("redis cluster 3 primaries x 2 replicas", lambda: start_redis_cluster(logs), True),
        ("ringcache 1 node", lambda: start_ringcache(1, [], logs, "single"), False),
        ("ringcache 3 nodes RF=3 W=1", lambda: start_ringcache(3, ["--write-quorum", "1"], logs, "w1"), True),
        ("ringcache 3 nodes RF=3 W=2", lambda: start_ringcache(3, ["--write-quorum", "2"], logs, "w2"), True),
        ("ringcache 3 nodes RF=3 W=2, one node forwards", lambda: start_ringcache(3, [], logs, "fwd"), False),
    ]
    results = []
    for name, start, cluster in setups:
        s = start()
        try:
            for pipeline in (1, 16):
                for test in ("set", "get"):
                    r = bench(s, test, pipeline, args.requests, cluster)
                    r.update(setup=name, test=test, pipeline=pipeline)
                    results.append(r)
                    print(
                        f"{name:48} {test:3} P={pipeline:<2} {r['rps']:>10.0f} rps  p50 {r['p50_ms']:.3f} ms  "
                        f"p99 {r['p99_ms']:.3f} ms  server CPU {r['cpu_us_per_req']:.2f} us/req",
                        flush=True,
                    )
        finally:
            s.stop()
    single = {(r["test"], r["pipeline"]): r for r in results if r["setup"] == "ringcache 1 node"}
    rcluster = {(r["test"], r["pipeline"]): r for r in results if r["setup"].startswith("redis cluster")}

    def ratio(r: dict, base: dict) -> str:
        # CPU time is counted in 10 ms ticks: a short run may show none.
        b = base[(r["test"], r["pipeline"])]["cpu_us_per_req"]
        return f"{r['cpu_us_per_req'] / b:.2f}x" if b else "n/a"

    lines = [
        "| setup | op | P | req/s | p50 ms | p99 ms | server CPU µs/req | CPU vs 1 node | CPU vs Redis Cluster |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['setup']} | {r['test'].upper()} | {r['pipeline']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {r['cpu_us_per_req']:.2f} | {ratio(r, single)} | {ratio(r, rcluster)} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replication.md").write_text("\n".join(lines) + "\n")
    (out / "replication.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    print(f"wrote {out}/replication.md and replication.json (server logs in {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
