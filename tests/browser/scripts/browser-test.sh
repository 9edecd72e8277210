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
if ! command -v turnserver >/dev/null; then
  echo "browser-test: installing Debian coturn"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q coturn
fi
if ! command -v redis-server >/dev/null && [[ "${SM_E2E_TOPOLOGY:-cluster}" != single ]]; then
  echo "browser-test: installing Debian redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q redis-server
fi
for tool in node unshare ip openssl; do
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
# coturn, inside the namespace below, with the TURN REST API shared secret the
# nodes derive their clients' credentials from (tests/browser/e2e.mjs).
export SM_E2E_TURN_PORT=3478
SM_E2E_TURN_SECRET="$(openssl rand -hex 16)"
export SM_E2E_TURN_SECRET
SM_E2E_TURN_LOG="$(mktemp -t sm-e2e-turnserver.XXXXXX)"
export SM_E2E_TURN_LOG
# A new network namespace (only loopback, so nothing leaves the machine and
# the host's interfaces don't matter) and a new PID namespace: when the test
# ends or is killed, --kill-child takes every process it started with it.
# bash stays PID 1 there (no exec) so orphaned browser helpers are reaped.
exec unshare --net --pid --fork --kill-child \
  bash -c 'ip link set lo up || exit 1
    turnserver -n --listening-ip=127.0.0.1 --listening-port="$SM_E2E_TURN_PORT" --relay-ip=127.0.0.1 \
      --use-auth-secret --static-auth-secret="$SM_E2E_TURN_SECRET" --realm=test.local \
      --no-tls --no-dtls --no-cli --min-port=49160 --max-port=49200 \
      --allow-loopback-peers --log-file=stdout --simple-log >"$SM_E2E_TURN_LOG" 2>&1 &
    turn_pid=$!
    node tests/browser/e2e.mjs
    rc=$?
    kill "$turn_pid" 2>/dev/null
    wait "$turn_pid" 2>/dev/null
    if [ "$rc" -ne 0 ]; then echo "# --- last lines of turnserver ---"; tail -n 20 "$SM_E2E_TURN_LOG"; fi
    rm -f "$SM_E2E_TURN_LOG"
    exit "$rc"'
