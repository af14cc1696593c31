#!/usr/bin/env python3
"""TLS cost, side by side in one run: redis-benchmark SET and GET at P=1 and
P=16 against ringcache's plain port and its TLS port, and against
redis-server's plain and TLS ports when Debian's build has TLS. Each
server gets one core's worth of work from the same client; the table gives
requests per second and the TLS/plain ratio of each server.

    cargo build --release -p ringcache-server && python3 benches/tls.py

Standard library only; certificates are made with openssl in a scratch
directory (server auth only: --tls-auth-clients no, as the benchmark client
presents none)."""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ringlib import BIN, free_port  # noqa: E402


def sh(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh(["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    sh(["openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=bench"], d)
    sh(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext"], d)


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {proc.stderr.read() if proc.stderr else ''}")
        r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if r.stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def bench(port: int, tls: bool, ca: Path, test: str, pipeline: int, requests: int) -> float:
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-n", str(requests), "-c", "50",
           "-P", str(pipeline), "-d", "100", "-r", "100000", "--csv", "-q"]
    if tls:
        cmd += ["--tls", "--cacert", str(ca)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    for row in csv.reader(io.StringIO(out)):
        if row and row[0].upper().startswith(test.upper()):
            return float(row[1])
    raise SystemExit(f"no result from {' '.join(cmd)}: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    if not BIN.exists():
        raise SystemExit(f"build first: cargo build --release -p ringcache-server ({BIN} missing)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_pki(d)
        servers = []
        rc_port, rc_tls = free_port(), free_port()
        rc = subprocess.Popen([str(BIN), "--port", str(rc_port), "--tls-port", str(rc_tls),
                               "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
                               "--tls-auth-clients", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        wait_port(rc_port, rc, "ringcache")
        servers.append(("ringcache", rc_port, rc_tls, rc))
        rs_port, rs_tls = free_port(), free_port()
        rs = subprocess.Popen(["redis-server", "--port", str(rs_port), "--tls-port", str(rs_tls), "--save", "",
                               "--appendonly", "no", "--tls-cert-file", str(d / "server.crt"), "--tls-key-file",
                               str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.crt"),
                               "--tls-auth-clients", "no"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        try:
            wait_port(rs_port, rs, "redis-server")
            servers.append(("redis-server", rs_port, rs_tls, rs))
        except SystemExit as e:
            print(f"redis-server with TLS unavailable here ({e}); ringcache only", file=sys.stderr)
        try:
            rows = []
            for name, port, tls_port, _ in servers:
                for test in ("SET", "GET"):
                    for p in (1, 16):
                        plain = bench(port, False, d / "ca.crt", test, p, args.requests)
                        tls = bench(tls_port, True, d / "ca.crt", test, p, args.requests)
                        rows.append((name, test, p, plain, tls))
            print("| server | test | P | plain req/s | TLS req/s | TLS / plain |")
            print("|---|---|---|---|---|---|")
            for name, test, p, plain, tls in rows:
                print(f"| {name} | {test} | {p} | {plain:,.0f} | {tls:,.0f} | {tls / plain:.2f} |")
            by = {(n, t, p): tls for n, t, p, _, tls in rows}
            if len(servers) == 2:
                print("\nringcache TLS / redis-server TLS:")
                for test in ("SET", "GET"):
                    for p in (1, 16):
                        print(f"- {test} P={p}: {by[('ringcache', test, p)] / by[('redis-server', test, p)]:.2f}")
        finally:
            for _, _, _, proc in servers:
                proc.terminate()
                proc.wait(timeout=10)
            if rs.poll() is None:
                rs.terminate()


if __name__ == "__main__":
    main()
