#!/usr/bin/env bash
# Starts a local ringcache cluster of N nodes (default 3) on 127.0.0.1:
# client ports 7000, 7001, ... and cluster ports 17000, 17001, ...; each
# node is seeded with every other. Logs go to ${RINGCACHE_CLUSTER_DIR:-/tmp/ringcache-cluster}.
# Clustering needs a shared secret: the script makes one (kept in
# $dir/cluster-secret, mode 600) unless RINGCACHE_CLUSTER_SECRET is set.
# Ctrl-C (or SIGTERM) stops every node gracefully.
#
#   scripts/local-cluster.sh            # 3 nodes
#   scripts/local-cluster.sh 5 --maxmemory 100mb   # 5 nodes, extra flags for each
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-3}"
shift || true
base="${RINGCACHE_BASE_PORT:-7000}"
dir="${RINGCACHE_CLUSTER_DIR:-/tmp/ringcache-cluster}"
mkdir -p "$dir"
if [ -z "${RINGCACHE_CLUSTER_SECRET:-}" ]; then
  if [ ! -s "$dir/cluster-secret" ]; then
    (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$dir/cluster-secret")
  fi
  export RINGCACHE_CLUSTER_SECRET_FILE="$dir/cluster-secret"
fi
cargo build --release -q -p ringcache-server
bin=target/release/ringcache
pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT
for ((i = 0; i < n; i++)); do
  port=$((base + i))
  seeds=()
  for ((j = 0; j < n; j++)); do
    [ "$j" -eq "$i" ] || seeds+=(--seed "127.0.0.1:$((base + 10000 + j))")
  done
  "$bin" --port "$port" --node-name "node$i" "${seeds[@]}" "$@" 2>"$dir/node$i.log" &
  pids+=($!)
  echo "node$i: redis-cli -p $port   (log: $dir/node$i.log)"
done
echo "inspect: redis-cli -p $base cluster nodes | redis-cli -p $base cluster info | redis-cli -c -p $base set k v"
echo "Ctrl-C stops the cluster."
wait
