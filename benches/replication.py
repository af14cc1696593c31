#!/usr/bin/env python3
"""Replication cost: a 3-node RF=3 cluster (W=1 and W=2) beside a single
node and redis-server, in one run, on this machine.

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


def wait_ready(ports: list[int], check=None) -> None:
    deadline = time.time() + 30
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
    lines = [
        "| setup | op | P | req/s | p50 ms | p99 ms | server CPU µs/req | CPU vs 1 node |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = single[(r["test"], r["pipeline"])]["cpu_us_per_req"]
        lines.append(
            f"| {r['setup']} | {r['test'].upper()} | {r['pipeline']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {r['cpu_us_per_req']:.2f} | "
            # CPU time is counted in 10 ms ticks: a short run may show none.
            + (f"{r['cpu_us_per_req'] / base:.2f}x |" if base else "n/a |")
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
