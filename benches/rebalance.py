#!/usr/bin/env python3
"""Rebalancing: how fast a joining node receives its slots, and what the
move costs the clients.

Starts 3 ringcache nodes (release build, RF=3), loads --keys keys with
100-byte values, then starts a 4th node and measures the time until every
node reports no slot copies pending, in flight or importing; keys and bytes
moved come from INFO. A client (one connection, GET of random loaded keys,
one request at a time) measures latency during the move and during a
steady phase before it: p50/p99 and misses. Repeated for each
--rebalance-rate given.

    cargo build --release -p ringcache-server
    python3 benches/rebalance.py [--keys 1000000] [--rates 0,200000]
"""

from __future__ import annotations

import argparse
import random
import socket
import subprocess
import sys
import tempfile
import multiprocessing
import time
from pathlib import Path

from ringlib import BIN, Conn, cli, free_port, info, node_argv, settled, settled_conns


class Node:
    def __init__(self, i: int, port: int, cport: int, seeds: list[int], extra: list[str], logs: Path):
        self.port = port
        self.p = subprocess.Popen(node_argv(i, port, cport, seeds) + extra, stdout=subprocess.DEVNULL, stderr=open(logs / f"node{i}.log", "w"))

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.p.kill()


def wait(pred, what: str, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def load(port: int, keys: int) -> None:
    value = "x" * 100
    proc = subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin
    batch = []
    for i in range(keys):
        k = f"key:{i:012d}"
        batch.append(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(value)}\r\n{value}\r\n")
        if len(batch) == 10000:
            proc.stdin.write("".join(batch).encode())
            batch = []
    proc.stdin.write("".join(batch).encode())
    proc.stdin.close()
    proc.wait(timeout=600)


class Prober:
    """GETs of random loaded keys, one at a time, with their latencies, in
    a process of its own: in a thread of this one, the polling below held
    the GIL for up to its 5 ms switch interval while a reply waited, which
    showed as server latency."""

    def __init__(self, port: int, keys: int):
        self.stop_ev = multiprocessing.Event()
        self.rx, tx = multiprocessing.Pipe(duplex=False)
        self.p = multiprocessing.Process(target=Prober.loop, args=(port, keys, self.stop_ev, tx), daemon=True)
        self.lat: list[float] = []
        self.misses = self.errors = 0

    def start(self) -> None:
        self.p.start()

    def stop(self) -> None:
        self.stop_ev.set()
        self.lat, self.misses, self.errors = self.rx.recv()
        self.p.join()

    @staticmethod
    def loop(port: int, keys: int, stop, tx) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        rnd = random.Random(7)
        lat: list[float] = []
        misses = errors = 0
        while not stop.is_set():
            k = f"key:{rnd.randrange(keys):012d}"
            t0 = time.perf_counter()
            s.sendall(f"*2\r\n$3\r\nGET\r\n${len(k)}\r\n{k}\r\n".encode())
            line = f.readline()
            if line.startswith(b"$"):
                n = int(line[1:])
                if n < 0:
                    misses += 1
                else:
                    f.read(n + 2)
            else:
                errors += 1
            lat.append(time.perf_counter() - t0)
        tx.send((lat, misses, errors))

    def summary(self) -> dict:
        lat = sorted(self.lat)
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0  # noqa: E731
        return {"requests": len(lat), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "misses": self.misses, "errors": self.errors}


def run(keys: int, rate: int) -> dict:
    logs = Path(tempfile.mkdtemp(prefix="ringcache-rebalance-"))
    ports = [(free_port(), free_port()) for _ in range(4)]
    extra = ["--rebalance-rate", str(rate)]
    nodes = [Node(i, ports[i][0], ports[i][1], [c for j, (_, c) in enumerate(ports[:3]) if j != i], extra, logs) for i in range(3)]
    try:
        wait(lambda: all(cli(n.port, "ping").strip() == "PONG" for n in nodes), "nodes")
        wait(lambda: settled([n.port for n in nodes], 3), "formation")
        t0 = time.time()
        load(nodes[0].port, keys)
        load_s = time.time() - t0
        wait(lambda: all(int(info(n.port, "keyspace").get("db0", "keys=0").split(",")[0][5:]) == keys for n in nodes), "replicas", 300)
        steady = Prober(nodes[1].port, keys)
        steady.start()
        time.sleep(3)
        steady.stop()
        moved_before = sum(int(info(n.port, "cluster")["rebalance_keys_moved"]) for n in nodes)
        bytes_before = sum(int(info(n.port, "cluster")["rebalance_bytes_moved"]) for n in nodes)
        during = Prober(nodes[1].port, keys)
        during.start()
        t0 = time.time()
        nodes.append(Node(3, ports[3][0], ports[3][1], [ports[0][1]], extra, logs))
        wait(lambda: cli(nodes[3].port, "ping").strip() == "PONG", "node3")
        # Polled over open connections: a redis-cli per check would spend
        # the CPU the move and the probe need.
        conns = [Conn(n.port) for n in nodes]
        wait(lambda: all(c.info("cluster").get("cluster_known_nodes", "").strip() == "4" for c in conns), "join")
        wait(lambda: settled_conns(conns, 4), "rebalance", 600)
        move_s = time.time() - t0
        for c in conns:
            c.close()
        during.stop()
        moved = sum(int(info(n.port, "cluster")["rebalance_keys_moved"]) for n in nodes) - moved_before
        moved_bytes = sum(int(info(n.port, "cluster")["rebalance_bytes_moved"]) for n in nodes) - bytes_before
        node3_keys = int(info(nodes[3].port, "keyspace").get("db0", "keys=0").split(",")[0][5:])
        return {
            "rate": rate,
            "keys": keys,
            "load_s": load_s,
            "move_s": move_s,
            "keys_moved": moved,
            "mb_moved": moved_bytes / 1e6,
            "node3_keys": node3_keys,
            "steady": steady.summary(),
            "during": during.summary(),
        }
    finally:
        for n in nodes:
            n.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rates", default="0,200000", help="--rebalance-rate values (keys/s, 0 = unlimited)")
    args = ap.parse_args()
    if not BIN.exists():
        print("needs target/release/ringcache: cargo build --release -p ringcache-server")
        return 2
    rows = []
    for rate in [int(r) for r in args.rates.split(",")]:
        r = run(args.keys, rate)
        rows.append(r)
        print(r, flush=True)
    print("| --rebalance-rate | keys | join → settled, s | keys moved | keys/s | MB moved | MB/s | GET p50 / p99 steady, ms | GET p50 / p99 during, ms | misses | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, d = r["steady"], r["during"]
        print(
            f"| {r['rate'] or 'unlimited'} | {r['keys']} | {r['move_s']:.2f} | {r['keys_moved']} | "
            f"{r['keys_moved'] / r['move_s']:.0f} | {r['mb_moved']:.1f} | {r['mb_moved'] / r['move_s']:.1f} | "
            f"{s['p50_ms']:.3f} / {s['p99_ms']:.3f} | {d['p50_ms']:.3f} / {d['p99_ms']:.3f} | {d['misses']} | {d['errors']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
