#!/usr/bin/env bash
# The README's test command: installs what the test suite needs when it is
# missing, then runs the whole suite (`cargo test --workspace`). Works on a
# fresh Debian machine with only a Rust toolchain and python3; `.ci/run`
# calls it too. Extra arguments go to `cargo test` (e.g. `-p ringcache-tests
# --test faults`).
#
# What it installs, only when missing:
# - Debian packages (apt-get, as root or through sudo): redis-server (the
#   differential tests compare replies with a real Redis), redis-tools
#   (redis-cli, redis-benchmark), iproute2 and nftables (the fault suite puts
#   nodes in network namespaces and partitions them), python3-venv, openssl
#   (the TLS tests make their certificates), util-linux (unshare: host names),
#   faketime (libfaketime: the fault suite sets nodes' clocks apart).
# - redis-py in a virtualenv at target/redis-py (PyPI), for the cluster-client
#   tests (tests/src/lib.rs: redis_py).
# Without root and without sudo it stops and names the packages instead.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  # One name per package, in order.
  mapfile -t need < <(printf '%s\n' "${need[@]}" | awk '!seen[$0]++')
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "the test suite needs these Debian packages: ${need[*]}" >&2
      echo "install them as root (apt-get install ${need[*]}) and run $0 again" >&2
      exit 1
    fi
  fi
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine's package lists may be missing or stale; retry once,
  # since a mirror can fail for a moment.
  for attempt in 1 2; do
    if "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
      break
    fi
    [ "$attempt" -eq 2 ] && { echo "apt-get could not install ${need[*]}" >&2; exit 1; }
    sleep 5
  done
  # Debian starts redis-server as a service on 6379 when it installs it;
  # the tests never use that port, but an idle daemon is noise on 2 cores.
  if command -v systemctl >/dev/null 2>&1; then
    "${sudo[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
  if command -v service >/dev/null 2>&1; then
    "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true
  fi
fi

venv=target/redis-py
if ! "$venv/bin/python" -c 'import redis.cluster' >/dev/null 2>&1; then
  log "installing redis-py into $venv"
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
  for attempt in 1 2; do
    if "$venv/bin/pip" install --quiet --disable-pip-version-check 'redis>=5,<6'; then
      break
    fi
    [ "$attempt" -eq 2 ] && { echo "pip could not install redis-py (is PyPI reachable?)" >&2; exit 1; }
    sleep 5
  done
fi

log "cargo test --workspace $*"
exec cargo test --workspace "$@"
