#!/usr/bin/env bash
# The long fault run (TESTING.md): a 5-node cluster, each node in its own
# network namespace, under the Jepsen-style workload while a seeded nemesis
# kills, pauses, gracefully restarts, isolates and cuts links at random;
# then the checker (no lost acknowledged write, no resurrected delete, no
# phantom read, exact counters, owners agreeing).
#
#   scripts/fault-soak.sh [seconds] [seed]     (defaults: 600, time-based)
#
# Needs root for the namespaces (without it, the run says it skipped them
# only if RINGCACHE_SKIP_NETNS=1, and then uses kill/pause/restart alone).
set -euo pipefail
cd "$(dirname "$0")/.."
export RINGCACHE_FAULT_SECS="${1:-600}"
[ -n "${2:-}" ] && export RINGCACHE_FAULT_SEED="$2"
cargo test --release -p ringcache-tests --test faults random_faults -- --ignored --nocapture
