#!/usr/bin/env bash
# Reproduces every number in BENCHMARKS.md: builds ringcache in release mode,
# runs the side-by-side load harness against redis-server (installed with apt
# if missing), then the criterion micro-benchmarks. Results go to
# bench-results/ (summary.md, results.json, the SVG chart, membership.txt,
# criterion.txt, replication.md/json, rebalance.md). Run it on an idle machine; about 10 minutes on 2 CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results}"
cargo build --release -p ringcache-server
python3 benches/compare.py --out "$out"
python3 benches/membership.py | tee "$out/membership.txt"
python3 benches/replication.py --out "$out"
python3 benches/rebalance.py --rates 0,50000 | tee "$out/rebalance.md"
python3 benches/tls.py | tee "$out/tls.md"
cargo bench -p ringcache-benches 2>&1 | grep -E '^[a-z_0-9/]+|time:|thrpt:' | tee "$out/criterion.txt"
echo "wrote $out/summary.md, $out/results.json, $out/throughput-by-pipeline.svg, $out/membership.txt, $out/criterion.txt, $out/replication.md, $out/rebalance.md, $out/tls.md"
