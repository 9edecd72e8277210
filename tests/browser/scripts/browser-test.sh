#!/usr/bin/env bash
# End-to-end browser test: two headless Chromium pages call each other over
# WebRTC through two Signal Manager nodes and a Redis, all inside a fresh
# network namespace with only loopback up. See tests/browser/e2e.mjs.
#
# Usage: bash tests/browser/scripts/browser-test.sh
#   SM_BIN           server binary (default ${CARGO_TARGET_DIR:-target}/debug/signal-manager-service);
#                    this script never builds it
#   SM_E2E_TOPOLOGY  cluster (default) or single (no Redis; see e2e.mjs)
# Needs root (apt-get, unshare). Prints "browser e2e: N passed, M failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"

SM_BIN="${SM_BIN:-${CARGO_TARGET_DIR:-target}/debug/signal-manager-service}"
case "$SM_BIN" in /*) ;; *) SM_BIN="$ROOT/$SM_BIN" ;; esac
if [[ ! -x "$SM_BIN" ]]; then
  echo "browser-test: no server binary at $SM_BIN; build it first (cargo build) or set SM_BIN" >&2
  echo "browser e2e: 0 passed, 1 failed"
  exit 1
fi

if [[ ! -x /usr/bin/chromium ]]; then
  echo "browser-test: installing Debian chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q chromium
fi
if ! command -v redis-server >/dev/null && [[ "${SM_E2E_TOPOLOGY:-cluster}" != single ]]; then
  echo "browser-test: installing Debian redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q redis-server
fi
for tool in node unshare ip; do
  if ! command -v "$tool" >/dev/null; then
    echo "browser-test: $tool is missing (node: apt-get install -y nodejs; unshare: util-linux; ip: iproute2)" >&2
    echo "browser e2e: 0 passed, 1 failed"
    exit 1
  fi
done

if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  (cd tests/browser && npm ci --no-audit --no-fund)
fi

export SM_BIN
# A new network namespace (only loopback, so nothing leaves the machine and
# the host's interfaces don't matter) and a new PID namespace: when the test
# ends or is killed, --kill-child takes every process it started with it.
# bash stays PID 1 there (no exec) so orphaned browser helpers are reaped.
exec unshare --net --pid --fork --kill-child \
  bash -c 'ip link set lo up && node tests/browser/e2e.mjs; exit $?'
