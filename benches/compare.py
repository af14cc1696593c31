#!/usr/bin/env python3
"""Load/compare harness: ringcache against Redis on this machine.

Starts redis-server and ringcache on free loopback ports, drives both with
redis-benchmark (SET and GET, 100-byte values, 1M-key random keyspace, 50
clients) in interleaved rounds, samples each server's CPU time around every
run, sweeps the pipeline depth for a chart, and measures resident memory for
1,000,000 keys on fresh instances.

Writes results.json, summary.md (a table for BENCHMARKS.md) and
throughput-by-pipeline.svg to --out. Python 3.11 standard library only.

    python3 benches/compare.py                      # full run, ~2 min on 2 CPUs (Redis vs Redis)
    python3 benches/compare.py --quick              # smoke test, ~5 s
"""

from __future__ import annotations

import argparse
import atexit
import csv
import datetime
import io
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("redis", "ringcache")
LABEL = {"redis": "Redis", "ringcache": "ringcache"}
TESTS = ("set", "get")
MAIN_PIPELINES = (1, 16)
CHART_PIPELINES = (1, 4, 16, 64)
VALUE_LEN = 100
KEYSPACE = 1_000_000
CLIENTS = 50
MEMORY_KEYS = 1_000_000
# Other work on the machine above this many CPUs makes a run suspect.
BUSY_CORES = 0.25
SUSPECT = "this figure is suspect"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=check)


def text(cmd: list[str], timeout: float = 10) -> str | None:
    try:
        return run(cmd, timeout=timeout).stdout.decode(errors="replace").strip()
    except (OSError, subprocess.SubprocessError):
        return None


# ---- tools ---------------------------------------------------------------

def ensure_redis_tools() -> None:
    missing = [t for t in ("redis-server", "redis-cli", "redis-benchmark") if shutil.which(t) is None]
    if not missing:
        return
    log(f"missing {', '.join(missing)}: installing redis-server and redis-tools with apt-get")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "--no-install-recommends", "redis-server", "redis-tools"],
                   check=True, env=env)
    still = [t for t in ("redis-server", "redis-cli", "redis-benchmark") if shutil.which(t) is None]
    if still:
        sys.exit(f"still missing after apt-get: {', '.join(still)}")


def machine_facts(ringcache_bin: Path) -> dict:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_total = int(m.group(1)) * 1024 if m else None
    except OSError:
        pass
    commit = text(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    # Only changes that can change the binary count: docs and results do not.
    dirty = text(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--",
                  ".", ":(exclude)*.md", ":(exclude)bench-results"])
    return {
        "nproc": text(["nproc"]) or str(os.cpu_count()),
        "cpu_model": cpu_model,
        "mem_total_bytes": mem_total,
        "kernel": platform.release(),
        "os": text(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "python": platform.python_version(),
        "redis_server_version": text(["redis-server", "--version"]),
        "redis_benchmark_version": text(["redis-benchmark", "--version"]),
        "ringcache_commit": commit,
        "ringcache_tree_dirty": bool(dirty),
        "ringcache_bin": str(ringcache_bin),
        "ringcache_bin_mtime": (datetime.datetime.fromtimestamp(ringcache_bin.stat().st_mtime).isoformat(timespec="seconds")
                                if ringcache_bin.exists() else None),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


# ---- processes -----------------------------------------------------------

def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A free loopback port P whose P + 10000 (ringcache's default cluster
    port) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 <= 65535 and port_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair found")


def group_pids(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (the server and anything a
    wrapper script around it started)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] is field 3 (state); field 5 (pgrp) is fields[2].
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(d))
    return pids


def cpu_seconds(pgid: int) -> float:
    """utime + stime of every process in the group, in seconds."""
    total = 0
    for pid in group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime
    return total / CLK_TCK


def rss_bytes(pgid: int) -> int:
    """VmRSS of every process in the group, in bytes."""
    total = 0
    for pid in group_pids(pgid):
        try:
            m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        except OSError:
            continue
        if m:
            total += int(m.group(1)) * 1024
    return total


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from
    /proc/stat. Busy is user + nice + system time, so it compares with the
    utime + stime of processes; irq and softirq time (the loopback traffic
    itself) is left out, steal (a neighbour on the host) is kept apart."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (f + [0] * 8)[:8]
    return (user + nice + system) / CLK_TCK, steal / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of our waited-for children (redis-benchmark, redis-cli)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_busy(seconds: float = 1.0) -> float:
    """CPUs' worth of work done on the machine over `seconds` while we idle."""
    b0, _ = system_cpu()
    time.sleep(seconds)
    b1, _ = system_cpu()
    return (b1 - b0) / seconds


class Server:
    def __init__(self, kind: str, argv_of, log_dir: Path, tag: str):
        self.kind = kind
        self.port = free_port()
        self.argv = argv_of(self.port)
        self.log_path = log_dir / f"{kind}-{tag}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, deadline_s: float) -> "Server":
        log(f"starting {self.kind} on 127.0.0.1:{self.port}: {shlex.join(self.argv)}")
        logf = open(self.log_path, "wb")
        # Own session and process group: we stop exactly what we started.
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        LIVE.append(self)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode} before answering PING; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            if self.cli("PING", timeout=2) == "PONG":
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer PING within {deadline_s}s; log {self.log_path}:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def cli(self, *args: str, timeout: float = 30) -> str | None:
        try:
            r = run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args], timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return None
        if r.returncode != 0:
            return None
        return r.stdout.decode(errors="replace").strip()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        else:
            # The leader is gone; make sure nothing it started lingers.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self in LIVE:
            LIVE.remove(self)


LIVE: list[Server] = []


def stop_all() -> None:
    for s in list(LIVE):
        try:
            s.stop()
        except Exception as e:  # cleanup must go on
            print(f"warning: stopping {s.kind} (pid {s.proc.pid if s.proc else '?'}): {e}", file=sys.stderr)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---- workloads -----------------------------------------------------------

def benchmark(server: Server, test: str, pipeline: int, requests: int, warnings: list[str]) -> dict:
    """One redis-benchmark run of one test, with the server's CPU time."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port), "-t", test, "-d", str(VALUE_LEN),
           "-r", str(KEYSPACE), "-c", str(CLIENTS), "-P", str(pipeline), "-n", str(requests), "--csv"]
    rec = {"server": server.kind, "test": test.upper(), "pipeline": pipeline, "requests": requests,
           "command": shlex.join(cmd)}
    others = [o for o in LIVE if o is not server]
    cpu0, sys0, client0, self0 = server.cpu(), system_cpu(), children_cpu(), self_cpu()
    others0 = sum(o.cpu() for o in others)
    t0 = time.monotonic()
    try:
        r = run(cmd, timeout=max(120.0, requests / 2000), check=False)
    except subprocess.TimeoutExpired:
        warnings.append(f"{server.kind} {test} P={pipeline}: redis-benchmark timed out")
        log(warnings[-1])
        return rec | {"error": "timeout"}
    wall = time.monotonic() - t0
    cpu = server.cpu() - cpu0
    client_cpu = children_cpu() - client0
    sys1 = system_cpu()
    # Everything the machine did that was not this server, the client or us:
    # the other (idle) server, and any other work such as a build.
    other = (sys1[0] - sys0[0]) - cpu - client_cpu - (self_cpu() - self0) - (sum(o.cpu() for o in others) - others0)
    steal = sys1[1] - sys0[1]
    err = r.stderr.decode(errors="replace")
    rows = [row for row in csv.DictReader(io.StringIO(r.stdout.decode(errors="replace")))
            if row.get("test", "").upper() == test.upper()]
    if r.returncode != 0 or not rows:
        warnings.append(f"{server.kind} {test} P={pipeline}: redis-benchmark rc={r.returncode}: {err.strip()[-300:]}")
        log(warnings[-1])
        return rec | {"error": err.strip()[-300:] or f"rc={r.returncode}"}
    if "rror" in err:
        warnings.append(f"{server.kind} {test} P={pipeline}: redis-benchmark stderr: {err.strip()[-300:]}")
        log(warnings[-1])
    row = rows[0]

    def num(key: str) -> float | None:
        try:
            return float(row[key])
        except (KeyError, TypeError, ValueError):
            return None

    rec |= {
        "rps": num("rps"),
        "avg_latency_ms": num("avg_latency_ms"),
        "p50_latency_ms": num("p50_latency_ms"),
        "p99_latency_ms": num("p99_latency_ms"),
        "max_latency_ms": num("max_latency_ms"),
        "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_s_per_mop": round(cpu / requests * 1e6, 3),
        "client_cpu_s": round(client_cpu, 3),
        # CPU time is counted in ticks (10 ms): too coarse for short runs.
        "other_cpu_cores": round(max(0.0, other) / wall, 3) if wall >= 1 else None,
        "steal_cpu_cores": round(steal / wall, 3) if wall >= 1 else None,
    }
    if (rec["other_cpu_cores"] or 0) > BUSY_CORES or (rec["steal_cpu_cores"] or 0) > BUSY_CORES:
        warnings.append(f"{server.kind} {test.upper()} P={pipeline}: other processes used "
                        f"{rec['other_cpu_cores']:.2f} CPUs during the run (steal {rec['steal_cpu_cores']:.2f}); "
                        f"{SUSPECT}")
        log(warnings[-1])
    log(f"  {server.kind:9} {test.upper():3} P={pipeline:<2} n={requests}: {rec['rps']:>12,.0f} req/s  "
        f"p99 {rec['p99_latency_ms']} ms  cpu {cpu:.2f}s ({rec['server_cpu_s_per_mop']:.2f} s/Mop)")
    return rec


def flushall(server: Server, warnings: list[str]) -> None:
    if server.cli("FLUSHALL") != "OK":
        warnings.append(f"{server.kind}: FLUSHALL failed; the run starts on a non-empty keyspace")
        log(warnings[-1])


def write_load_file(path: Path, keys: int) -> None:
    """`keys` SET commands in RESP, keys `key:%012d` as redis-benchmark -r
    makes them, 100-byte values."""
    value = b"x" * VALUE_LEN
    head = b"*3\r\n$3\r\nSET\r\n$16\r\n"
    tail = b"\r\n$%d\r\n%s\r\n" % (VALUE_LEN, value)
    with open(path, "wb") as f:
        chunk = 50_000
        for start in range(0, keys, chunk):
            f.write(b"".join(head + b"key:%012d" % n + tail for n in range(start, min(keys, start + chunk))))


def load_pipe(server: Server, path: Path, keys: int) -> dict:
    with open(path, "rb") as f:
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(server.port), "--pipe"], stdin=f,
                           capture_output=True, timeout=600)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    m = re.search(r"errors:\s*(\d+),\s*replies:\s*(\d+)", out)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"redis-cli --pipe into {server.kind} failed (rc={r.returncode}): {out.strip()[-500:]}")
    errors, replies = int(m.group(1)), int(m.group(2))
    if errors or replies != keys:
        raise RuntimeError(f"redis-cli --pipe into {server.kind}: errors={errors} replies={replies}, wanted 0/{keys}")
    return {"pipe_errors": errors, "pipe_replies": replies}


def load_socket(server: Server, keys: int) -> dict:
    """Fallback loader for a server without ECHO (which `redis-cli --pipe`
    needs to find its last reply): the same SETs in pipelined batches of
    1000 over one connection."""
    value = b"x" * VALUE_LEN
    errors = replies = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        pending = b""
        for start in range(0, keys, 1000):
            batch = range(start, min(keys, start + 1000))
            sock.sendall(b"".join(b"*3\r\n$3\r\nSET\r\n$16\r\nkey:%012d\r\n$%d\r\n%s\r\n" % (n, VALUE_LEN, value)
                                  for n in batch))
            want = replies + len(batch)
            while replies < want:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise RuntimeError(f"{server.kind} closed the connection after {replies} replies")
                pending += chunk
                *lines, pending = pending.split(b"\r\n")
                replies += len(lines)
                errors += sum(1 for line in lines if line.startswith(b"-"))
    if errors or replies != keys:
        raise RuntimeError(f"loading {server.kind} over a socket: errors={errors} replies={replies}, wanted 0/{keys}")
    return {"pipe_errors": errors, "pipe_replies": replies}


def info_field(server: Server, section: str, field: str) -> int | None:
    out = server.cli("INFO", section) or ""
    m = re.search(rf"^{field}:(\d+)", out, re.M)
    return int(m.group(1)) if m else None


def memory_run(kind: str, argv_of, log_dir: Path, load_file: Path, keys: int, tag: str, start_deadline: float) -> dict:
    server = Server(kind, argv_of, log_dir, tag).start(start_deadline)
    try:
        time.sleep(0.5)
        before = server.rss()
        t0 = time.monotonic()
        if server.cli("ECHO", "ringcache-compare") == "ringcache-compare":
            pipe = load_pipe(server, load_file, keys) | {"loader": "redis-cli --pipe"}
        else:
            pipe = load_socket(server, keys) | {"loader": "python socket (no ECHO for redis-cli --pipe)"}
        load_s = time.monotonic() - t0
        dbsize_out = server.cli("DBSIZE")
        dbsize = int(dbsize_out) if dbsize_out and dbsize_out.lstrip("-").isdigit() else None
        if dbsize != keys:
            raise RuntimeError(f"{kind}: DBSIZE is {dbsize_out!r} after loading {keys} keys")
        time.sleep(1.0)  # let background work (allocator purges, rehash steps) settle
        after = server.rss()
        used = info_field(server, "memory", "used_memory")
        rec = {"server": kind, "keys": keys, "dbsize": dbsize, "rss_before_bytes": before, "rss_after_bytes": after,
               "rss_bytes_per_key": round(after / keys, 1), "rss_delta_bytes_per_key": round((after - before) / keys, 1),
               "info_used_memory_bytes": used, "load_s": round(load_s, 2)} | pipe
        log(f"  {kind:9} {keys} keys: RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB; "
            f"{rec['rss_bytes_per_key']} B/key total, {rec['rss_delta_bytes_per_key']} B/key added; load {load_s:.1f}s")
        return rec
    finally:
        server.stop()


# ---- statistics and reports ---------------------------------------------

def spread(values: list[float]) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals), "values": vals}


def summarize(runs: list[dict], memory: list[dict]) -> list[dict]:
    rows = []
    metrics = [("rps", "req/s", "higher"), ("p99_latency_ms", "p99 latency, ms", "lower"),
               ("server_cpu_s_per_mop", "server CPU s per 1M requests", "lower")]
    for pipeline in MAIN_PIPELINES:
        for test in TESTS:
            for key, unit, better in metrics:
                row = {"figure": f"{test.upper()} P={pipeline} {unit}", "metric": key, "test": test.upper(),
                       "pipeline": pipeline, "better": better}
                for kind in SERVERS:
                    row[kind] = spread([r.get(key) for r in runs
                                        if r["server"] == kind and r["test"] == test.upper() and r["pipeline"] == pipeline])
                rows.append(row)
    for key, unit in [("rss_bytes_per_key", "RSS bytes/key (RSS after load / keys)"),
                      ("rss_delta_bytes_per_key", "RSS bytes/key ((after - before load) / keys)"),
                      ("rss_after_bytes", "RSS after load")]:
        row = {"figure": unit, "metric": key, "better": "lower"}
        for kind in SERVERS:
            row[kind] = spread([m.get(key) for m in memory if m["server"] == kind])
        rows.append(row)
    for row in rows:
        a, b = row.get("redis"), row.get("ringcache")
        row["ratio_ringcache_over_redis"] = (b["median"] / a["median"]) if a and b and a["median"] else None
    return rows


def fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "–"
    if metric == "rps":
        return f"{v:,.0f}"
    if metric == "rss_after_bytes":
        return f"{v / 2**20:,.1f} MiB"
    if metric.startswith("rss"):
        return f"{v:,.1f}"
    return f"{v:,.2f}" if v >= 1 else f"{v:.3f}"


def cell(s: dict | None, metric: str) -> str:
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"], metric)
    return f"{fmt(s['median'], metric)} ({fmt(s['min'], metric)}–{fmt(s['max'], metric)})"


def loaders(memory: list[dict]) -> str:
    by_server = {kind: sorted({m["loader"] for m in memory if m["server"] == kind and "loader" in m}) for kind in SERVERS}
    every = {x for v in by_server.values() for x in v}
    if len(every) <= 1:
        return f"`{next(iter(every), 'redis-cli --pipe')}`"
    return "; ".join(f"{LABEL[k]}: {', '.join(v) or '–'}" for k, v in by_server.items())


def markdown(results: dict) -> str:
    m, cfg = results["machine"], results["config"]
    lines = [
        f"### ringcache vs Redis — {m['date'][:10]}",
        "",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, {m.get('os') or ''}".rstrip(", "),
        f"- Redis: `{m['redis_server_version']}`",
        f"- ringcache: commit `{m['ringcache_commit']}`{' (uncommitted changes)' if m['ringcache_tree_dirty'] else ''}, "
        f"`{m['ringcache_bin']}`",
        f"- Command: `{results['command']}`",
        f"- Load: `redis-benchmark -t set|get -d {VALUE_LEN} -r {KEYSPACE} -c {CLIENTS} -P <P> -n <N> --csv` on the same "
        f"machine (client and server share the {m['nproc']} CPUs); N = {cfg['requests_p1']:,} at P=1 and "
        f"{cfg['requests']:,} at P=16; {cfg['rounds']} round{'s' if cfg['rounds'] != 1 else ''}, FLUSHALL at the start of "
        f"each; the servers take turns run by run, alternating which goes first. SET and GET are separate "
        f"redis-benchmark runs so each has its own server CPU figure (utime + stime from /proc).",
        f"- Cells: median (min–max) over rounds. Ratio: ringcache median / Redis median "
        f"(above 1 is better for req/s; below 1 is better for latency, CPU and memory).",
        f"- Memory: fresh server each round; {cfg['memory_keys']:,} keys `key:000000000000`.. (16 bytes) with "
        f"{VALUE_LEN}-byte values loaded by "
        f"{loaders(results['memory'])}, "
        f"DBSIZE checked; VmRSS from /proc 1 s after loading.",
        "",
        "| figure | Redis | ringcache | ringcache / Redis |",
        "|---|---:|---:|---:|",
    ]
    for row in results["summary"]:
        ratio = row["ratio_ringcache_over_redis"]
        lines.append(f"| {row['figure']} | {cell(row['redis'], row['metric'])} | "
                     f"{cell(row['ringcache'], row['metric'])} | {'–' if ratio is None else f'{ratio:.2f}×'} |")
    if results["chart"]:
        lines += ["", f"Throughput by pipeline depth (one run each, N = {cfg['chart_requests']:,}, "
                      f"{cfg['requests_p1']:,} at P=1), req/s:", "",
                  "| test | P | Redis | ringcache | ringcache / Redis |", "|---|---:|---:|---:|---:|"]
        for test in TESTS:
            for p in CHART_PIPELINES:
                vals = {r["server"]: r.get("rps") for r in results["chart"]
                        if r["test"] == test.upper() and r["pipeline"] == p}
                a, b = vals.get("redis"), vals.get("ringcache")
                ratio = f"{b / a:.2f}×" if a and b else "–"
                lines.append(f"| {test.upper()} | {p} | {fmt(a, 'rps')} | {fmt(b, 'rps')} | {ratio} |")
        lines += ["", "![requests per second by pipeline depth](bench-results/throughput-by-pipeline.svg)"]
    if results["warnings"]:
        busy = [w for w in results["warnings"] if w.endswith(SUSPECT)]
        rest = [w for w in results["warnings"] if not w.endswith(SUSPECT)]
        lines += ["", "Warnings during the run (details in results.json):", ""]
        if busy:
            every = results["runs"] + results["chart"]
            worst = max((r.get("other_cpu_cores") or 0) for r in every)
            lines.append(f"- {len(busy)} of {len(every)} load runs had other work on the machine above "
                         f"{BUSY_CORES} CPUs (up to {worst:.2f} CPUs): their figures are suspect.")
        lines += [f"- {w.splitlines()[0] if w else w}" for w in rest]
    return "\n".join(lines) + "\n"


def nice_step(top: float, ticks: int = 5) -> float:
    raw = top / ticks
    mag = 10 ** (len(str(int(raw))) - 1) if raw >= 1 else 1
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * mag:
            return mult * mag
    return 10 * mag


def short(v: float) -> str:
    """Compact req/s for labels: 77k, 1.3M, 2M."""
    if v >= 1e6:
        return f"{v / 1e6:.2f}".rstrip("0").rstrip(".") + "M"
    if v >= 1e3:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def bar_label(v: float) -> str:
    return f"{v / 1e6:.1f}M" if v >= 1e6 else short(v)


def redis_version(line: str | None) -> str:
    m = re.search(r"v=(\S+)", line or "")
    return f"Redis {m.group(1)}" if m else "Redis"


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(chart: list[dict], machine: dict) -> str:
    """Two panels (SET, GET) of grouped bars: req/s by pipeline depth, Redis
    beside ringcache, one shared linear y axis."""
    colors = {"redis": "#d62728", "ringcache": "#1f77b4"}
    rps = {(r["server"], r["test"], r["pipeline"]): r.get("rps") or 0 for r in chart}
    top = max(list(rps.values()) + [1])
    step = nice_step(top)
    ymax = step * (int(top / step) + 1)
    W, H = 900, 480
    left, right, top_m, bottom = 80, 20, 70, 90
    gap = 40
    panel_w = (W - left - right - gap) / 2
    plot_h = H - top_m - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
           f'Requests per second by pipeline depth (50 clients, 100-byte values)</text>',
           f'<text x="{W / 2}" y="42" text-anchor="middle" fill="#555">'
           f'{esc(str(machine.get("nproc")))} CPUs, {esc(str(machine.get("cpu_model")))}; '
           f'{esc(redis_version(machine.get("redis_server_version")))} vs ringcache {esc(str(machine.get("ringcache_commit")))}'
           f'</text>']

    def y(v: float) -> float:
        return top_m + plot_h - v / ymax * plot_h

    # y axis label
    out.append(f'<text transform="translate(18,{top_m + plot_h / 2}) rotate(-90)" text-anchor="middle">'
               f'requests per second</text>')
    for pi, test in enumerate(TESTS):
        x0 = left + pi * (panel_w + gap)
        # grid and ticks
        v = 0.0
        while v <= ymax + 1e-9:
            yy = y(v)
            out.append(f'<line x1="{x0:.1f}" y1="{yy:.1f}" x2="{x0 + panel_w:.1f}" y2="{yy:.1f}" '
                       f'stroke="{"#000" if v == 0 else "#e5e5e5"}"/>')
            out.append(f'<text x="{x0 - 6:.1f}" y="{yy + 4:.1f}" text-anchor="end" fill="#333">{short(v)}</text>')
            v += step
        out.append(f'<line x1="{x0:.1f}" y1="{top_m}" x2="{x0:.1f}" y2="{top_m + plot_h}" stroke="#000"/>')
        out.append(f'<text x="{x0 + panel_w / 2:.1f}" y="{top_m - 8}" text-anchor="middle" font-size="14" '
                   f'font-weight="bold">{test.upper()}</text>')
        group_w = panel_w / len(CHART_PIPELINES)
        bar_w = group_w * 0.32
        for gi, p in enumerate(CHART_PIPELINES):
            gx = x0 + gi * group_w + group_w / 2
            for si, kind in enumerate(SERVERS):
                val = rps.get((kind, test.upper(), p), 0)
                bx = gx - bar_w + si * bar_w
                out.append(f'<rect x="{bx:.1f}" y="{y(val):.1f}" width="{bar_w - 2:.1f}" '
                           f'height="{max(0.0, top_m + plot_h - y(val)):.1f}" fill="{colors[kind]}">'
                           f'<title>{LABEL[kind]} {test.upper()} P={p}: {val:,.0f} req/s</title></rect>')
                out.append(f'<text x="{bx + (bar_w - 2) / 2:.1f}" y="{y(val) - 4:.1f}" text-anchor="middle" '
                           f'font-size="10" fill="#333">{bar_label(val) if val else "n/a"}</text>')
            out.append(f'<text x="{gx:.1f}" y="{top_m + plot_h + 18:.1f}" text-anchor="middle">{p}</text>')
        out.append(f'<text x="{x0 + panel_w / 2:.1f}" y="{top_m + plot_h + 40:.1f}" text-anchor="middle">'
                   f'pipeline depth (redis-benchmark -P)</text>')
    # legend
    lx = W / 2 - 110
    for si, kind in enumerate(SERVERS):
        out.append(f'<rect x="{lx + si * 120:.1f}" y="{H - 20}" width="14" height="14" fill="{colors[kind]}"/>')
        out.append(f'<text x="{lx + si * 120 + 20:.1f}" y="{H - 8}">{LABEL[kind]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---- main ----------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ringcache-bin", default="target/release/ringcache", help="ringcache binary (default %(default)s)")
    ap.add_argument("--ringcache-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for ringcache (repeatable), e.g. --ringcache-arg=--log-format=json")
    ap.add_argument("--redis-server", default="redis-server", help="redis-server binary (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick: 1)")
    ap.add_argument("--requests", type=int, default=None,
                    help="requests per test at P=16 (default 1000000; --quick: 20000)")
    ap.add_argument("--requests-p1", type=int, default=None,
                    help="requests per test at P=1 (default: --requests / 5)")
    ap.add_argument("--chart-requests", type=int, default=None,
                    help="requests per test at P=4/16/64 for the chart (default: --requests / 2; P=1 uses --requests-p1)")
    ap.add_argument("--memory-keys", type=int, default=None,
                    help=f"keys for the memory test (default {MEMORY_KEYS}; --quick: 20000)")
    ap.add_argument("--out", default="bench-results", help="output directory (default %(default)s/)")
    ap.add_argument("--quick", action="store_true", help="tiny counts and one round: a smoke test of the harness")
    ap.add_argument("--skip-chart", action="store_true", help="skip the pipeline-depth sweep")
    ap.add_argument("--skip-memory", action="store_true", help="skip the memory test")
    ap.add_argument("--from-json", metavar="RESULTS_JSON",
                    help="run nothing: rewrite summary.md and the chart in --out from an earlier results.json")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="seconds to wait for PONG (default %(default)s)")
    a = ap.parse_args()
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if a.requests is None:
        a.requests = 20_000 if a.quick else 1_000_000
    if a.memory_keys is None:
        a.memory_keys = 20_000 if a.quick else MEMORY_KEYS
    if a.requests_p1 is None:
        a.requests_p1 = max(1, a.requests // 5)
    if a.chart_requests is None:
        a.chart_requests = max(1, a.requests // 2)
    if a.rounds < 1 or a.requests < 1 or a.memory_keys < 1:
        ap.error("--rounds, --requests and --memory-keys must be positive")
    return a


def main() -> int:
    args = parse_args()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        results["summary"] = summarize(results["runs"], results["memory"])
        write_reports(results, out)
        return 0
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    ensure_redis_tools()
    ringcache_bin = Path(args.ringcache_bin)
    if not ringcache_bin.exists() and not ringcache_bin.is_absolute() and (REPO_ROOT / ringcache_bin).exists():
        ringcache_bin = REPO_ROOT / ringcache_bin
    if not ringcache_bin.exists():
        sys.exit(f"ringcache binary not found: {args.ringcache_bin} "
                 f"(build it: cargo build --release -p ringcache-server)")
    ringcache_bin = ringcache_bin.resolve()
    out = Path(args.out)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    machine = machine_facts(ringcache_bin)
    print(f"command: {command}")
    print(f"cwd:     {os.getcwd()}")
    for k, v in machine.items():
        print(f"{k + ':':24} {v}")
    sys.stdout.flush()

    busy = machine_busy()
    machine["busy_cpus_before_start"] = round(busy, 2)
    if busy > BUSY_CORES:
        log(f"warning: the machine is busy ({busy:.2f} CPUs in use before starting); results will be noisy")

    argv_of = {
        "redis": lambda port: [args.redis_server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--protected-mode", "no"],
        "ringcache": lambda port: [str(ringcache_bin), "--bind", "127.0.0.1", "--port", str(port),
                                   "--admin-port", "0", *args.ringcache_arg],
    }
    warnings: list[str] = []
    if busy > BUSY_CORES:
        warnings.append(f"the machine was busy before the start: {busy:.2f} CPUs in use")
    runs: list[dict] = []
    chart: list[dict] = []
    memory: list[dict] = []
    fatal: str | None = None
    started = time.monotonic()
    tmpdir = Path(tempfile.mkdtemp(prefix="ringcache-compare-"))
    try:
        # ---- throughput rounds, one long-lived instance per server
        servers = {kind: Server(kind, argv_of[kind], log_dir, "load").start(args.start_timeout) for kind in SERVERS}
        # Servers alternate run by run, and which goes first alternates from
        # one (P, test) to the next and from one round to the next, so slow
        # spells of the machine hit both alike.
        for rnd in range(args.rounds):
            log(f"round {rnd + 1}/{args.rounds}")
            for kind in SERVERS:
                flushall(servers[kind], warnings)
            j = 0
            for p in MAIN_PIPELINES:
                n = args.requests_p1 if p == 1 else args.requests
                for test in TESTS:
                    order = list(SERVERS) if (rnd + j) % 2 == 0 else list(reversed(SERVERS))
                    j += 1
                    for kind in order:
                        runs.append(benchmark(servers[kind], test, p, n, warnings)
                                    | {"round": rnd + 1, "first": order[0] == kind})
            for kind, s in servers.items():
                if not s.alive():
                    raise RuntimeError(f"{kind} died during round {rnd + 1}; log {s.log_path}:\n{s.log_tail()}")
        # ---- pipeline sweep for the chart, one run each, servers interleaved
        if not args.skip_chart:
            log("pipeline sweep for the chart")
            j = 0
            for p in CHART_PIPELINES:
                n = args.requests_p1 if p == 1 else args.chart_requests
                for kind in SERVERS:
                    flushall(servers[kind], warnings)
                for test in TESTS:
                    order = list(SERVERS) if j % 2 == 0 else list(reversed(SERVERS))
                    j += 1
                    for kind in order:
                        chart.append(benchmark(servers[kind], test, p, n, warnings))
        for s in servers.values():
            s.stop()
        # ---- memory, on fresh instances
        if not args.skip_memory:
            load_file = tmpdir / "load.resp"
            log(f"writing {args.memory_keys:,} SET commands to {load_file}")
            write_load_file(load_file, args.memory_keys)
            for rnd in range(args.rounds):
                order = list(SERVERS) if rnd % 2 == 0 else list(reversed(SERVERS))
                log(f"memory round {rnd + 1}/{args.rounds}")
                for kind in order:
                    try:
                        memory.append(memory_run(kind, argv_of[kind], log_dir, load_file, args.memory_keys,
                                                 f"mem{rnd + 1}", args.start_timeout) | {"round": rnd + 1})
                    except (RuntimeError, subprocess.SubprocessError) as e:
                        warnings.append(f"memory round {rnd + 1} {kind}: {e}")
                        log(warnings[-1])
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        fatal = str(e)
        warnings.append(f"fatal, run stopped early: {e}")
        log(warnings[-1])
    finally:
        stop_all()
        shutil.rmtree(tmpdir, ignore_errors=True)

    results = {
        "command": command,
        "cwd": os.getcwd(),
        "machine": machine,
        "config": {"rounds": args.rounds, "requests": args.requests, "requests_p1": args.requests_p1,
                   "chart_requests": args.chart_requests, "memory_keys": args.memory_keys, "clients": CLIENTS,
                   "value_len": VALUE_LEN, "keyspace": KEYSPACE, "quick": args.quick,
                   "ringcache_args": args.ringcache_arg,
                   # names only: values may be secrets (RINGCACHE_REQUIREPASS)
                   "ringcache_env_set": sorted(k for k in os.environ if k.startswith("RINGCACHE_"))},
        "elapsed_s": round(time.monotonic() - started, 1),
        "summary": summarize(runs, memory),
        "runs": runs,
        "chart": chart,
        "memory": memory,
        "warnings": warnings,
        "fatal": fatal,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_reports(results, out)
    log(f"done in {results['elapsed_s']}s; wrote {out / 'results.json'}")
    return 2 if fatal else 1 if warnings else 0


def write_reports(results: dict, out: Path) -> None:
    chart = results["chart"]
    md = markdown(results)
    (out / "summary.md").write_text(md)
    if chart:
        (out / "throughput-by-pipeline.svg").write_text(svg_chart(chart, results["machine"]))
    print()
    print(md)
    log(f"wrote {out / 'summary.md'}" + (f" and {out / 'throughput-by-pipeline.svg'}" if chart else ""))


if __name__ == "__main__":
    sys.exit(main())
