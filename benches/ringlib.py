"""Helpers the cluster benchmarks share (replication.py, rebalance.py):
free loopback ports, redis-cli and INFO (or one open connection), the argv of a ringcache node
seeded with its peers, and "the cluster has settled". Standard library
only."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# RINGCACHE_BIN: another build (e.g. an older commit's) to measure instead.
BIN = Path(os.environ.get("RINGCACHE_BIN", ROOT / "target" / "release" / "ringcache"))


def free_port() -> int:
    """A free loopback port below the kernel's usual ephemeral range."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 55000:
            return p


def cli(port: int, *args: str, timeout: float = 30) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout).stdout


def info(port: int, section: str) -> dict[str, str]:
    out = {}
    for line in cli(port, "info", section).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


class Conn:
    """One RESP connection kept open, for polling a node while it works
    (spawning redis-cli for each check costs milliseconds of CPU on the
    machine under test)."""

    def __init__(self, port: int):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.s.makefile("rb")

    def cmd(self, *args: str) -> str:
        """The reply as text: a bulk or simple string, an integer, an error
        line; arrays are not read (no caller needs one)."""
        req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        self.s.sendall(req.encode())
        line = self.f.readline()
        if line[:1] == b"$":
            n = int(line[1:])
            return "" if n < 0 else self.f.read(n + 2)[:-2].decode()
        if line[:1] == b"*":
            raise ValueError("array replies are not read here")
        return line[1:].decode().strip()

    def info(self, section: str) -> dict[str, str]:
        return dict(line.split(":", 1) for line in self.cmd("INFO", section).splitlines() if ":" in line)

    def close(self) -> None:
        self.s.close()


def settled_conns(conns: list[Conn], members: int) -> bool:
    """`settled` over open connections (see there)."""
    for c in conns:
        if "cluster_state:ok" not in c.cmd("CLUSTER", "INFO"):
            return False
        if members > 1 and c.cmd("INFO", "replication").count(",state=up,") != members - 1:
            return False
        i = c.info("cluster")
        if any(i.get(f, "1").strip() != "0" for f in ("rebalance_slots_pending", "rebalance_slots_in_flight", "rebalance_slots_importing")):
            return False
    return True


def node_argv(i: int, port: int, cport: int, seed_cports: list[int]) -> list[str]:
    """A ringcache node `node{i}` on `port`/`cport`, seeded with the others."""
    argv = [str(BIN), "--port", str(port), "--cluster-port", str(cport), "--node-name", f"node{i}",
            "--cluster-secret", "bench-secret"]
    for s in seed_cports:
        argv += ["--seed", f"127.0.0.1:{s}"]
    return argv


def settled(ports: list[int], members: int) -> bool:
    """Every node serves keys (a seedless first node waits
    --founding-wait-ms first), has its peer links up and no slot copy
    pending, in flight or importing (a cluster that just formed settles in
    a moment)."""
    for p in ports:
        if "cluster_state:ok" not in cli(p, "cluster", "info"):
            return False
        if members > 1 and cli(p, "info", "replication").count(",state=up,") != members - 1:
            return False
        i = info(p, "cluster")
        if any(i.get(f, "1") != "0" for f in ("rebalance_slots_pending", "rebalance_slots_in_flight", "rebalance_slots_importing")):
            return False
    return True
