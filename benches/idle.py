#!/usr/bin/env python3
"""Idle cost: what a converged 3-node RF=3 cluster that serves no request
costs, with no keys and with many, beside redis-server holding the same
keys, in one run on this machine (issue 17: an idle node should cost
nothing, whatever it holds).

For each key count the cluster is started, loaded through one node
(`redis-cli --pipe`, 100-byte values), left to settle, and then measured
over a quiet window: CPU time of each server process (from /proc, as %
of one core), its wake-ups (context switches of all its threads, which
vary less between runs than CPU time on a virtual host), and the
cluster's own traffic in that window — peer calls
(requests other than replicated writes: anti-entropy's sums, digests and
key lists, pings), anti-entropy shard-sum checks, slot-digest comparisons
and keys repaired. redis-server holds the same keys for the same window.

    cargo build --release -p ringcache-server
    python3 benches/idle.py [--keys 0,1000000] [--window 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from replication import Setup, cpu_seconds, start_redis, start_ringcache
from ringlib import cli, info


def load(port: int, keys: int) -> None:
    """SET key:0..keys-1 to 100-byte values through one node."""
    if keys == 0:
        return
    value = "v" * 100
    cmds = "".join(
        f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$100\r\n{value}\r\n" for k in (f"key:{i}" for i in range(keys))
    )
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "--pipe"], input=cmds, capture_output=True, text=True, timeout=600
    )
    if "errors: 0" not in out.stdout:
        raise SystemExit(f"loading {keys} keys failed: {out.stdout[-500:]} {out.stderr[-500:]}")


def peer_calls(port: int) -> int:
    total = 0
    for line in cli(port, "info", "replication").splitlines():
        if line.startswith("peer") and "calls_sent=" in line:
            total += int(line.split("calls_sent=")[1].split(",")[0])
    return total


def wakeups(pid: int) -> int:
    """Context switches of every thread of `pid` so far: how often it was
    woken. Steadier than CPU time on a shared or virtual host, where the
    cost of one wake-up varies from run to run."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def counters(setup: Setup, ringcache: bool) -> dict[str, int]:
    c = {"cpu_ms": int(1000 * sum(cpu_seconds(p.pid) for p in setup.procs))}
    c["wakeups"] = sum(wakeups(p.pid) for p in setup.procs)
    if ringcache:
        c["peer_calls"] = sum(peer_calls(p) for p in setup.ports)
        for f in ("antientropy_sum_checks", "antientropy_rounds", "antientropy_slots_compared",
                  "antientropy_keys_repaired"):
            c[f] = sum(int(info(p, "cluster").get(f, "0")) for p in setup.ports)
    return c


def measure(setup: Setup, ringcache: bool, window: float) -> dict[str, float]:
    before = counters(setup, ringcache)
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    after = counters(setup, ringcache)
    diff = {k: after[k] - before[k] for k in before}
    n = len(setup.procs)
    out = {"cpu_pct_per_node": 100 * diff.pop("cpu_ms") / 1000 / elapsed / n}
    out["wakeups_per_s_per_node"] = diff.pop("wakeups") / elapsed / n
    out.update({f"{k}_per_s": v / elapsed for k, v in diff.items()})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", default="0,1000000", help="comma-separated key counts")
    ap.add_argument("--window", type=float, default=30.0, help="seconds measured per setup")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds left quiet before measuring")
    args = ap.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="ringcache-idle-"))
    rows = []
    for keys in [int(k) for k in args.keys.split(",")]:
        for name in ("redis-server", "ringcache x3"):
            ringcache = name != "redis-server"
            setup = start_ringcache(3, [], logs, f"idle{keys}") if ringcache else start_redis(logs)
            try:
                load(setup.ports[0], keys)
                held = sum(int(info(p, "keyspace").get("db0", "keys=0").split("keys=")[1].split(",")[0])
                           for p in setup.ports)
                time.sleep(args.settle)
                m = measure(setup, ringcache, args.window)
                m.update({"setup": name, "keys": keys, "keys_held_total": held})
                rows.append(m)
                print(m, flush=True)
            finally:
                setup.stop()
    print()
    print("| setup | keys | CPU per node (% of a core) | wake-ups/s per node | peer calls/s | AE sum checks/s "
          "| slot digests compared/s | keys repaired/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['setup']} | {r['keys']:,} | {r['cpu_pct_per_node']:.2f} | {r['wakeups_per_s_per_node']:.0f} "
            f"| {r.get('peer_calls_per_s', 0):.1f} | "
            f"{r.get('antientropy_sum_checks_per_s', 0):.1f} | {r.get('antientropy_slots_compared_per_s', 0):.1f} | "
            f"{r.get('antientropy_keys_repaired_per_s', 0):.1f} |"
        )
    print(f"\nlogs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
