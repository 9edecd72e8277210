#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need when it is
# missing (redis-server, Chromium, npm packages), so it works on a fresh
# machine: Rust unit, property and integration tests (real nodes, real
# redis-server processes), the JS client tests, the deployment checks, the
# deployment test (the image built and the compose stack run with a Docker
# engine), and the end-to-end WebRTC call between two browsers through two
# nodes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# A build folder outside the clone is reused across checkouts when present.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/signal-manager/target}"
mkdir -p "$CARGO_TARGET_DIR"

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z "${SM_APT_UPDATED:-}" ]]; then
    apt-get update -q
    export SM_APT_UPDATED=1
  fi
  apt-get install -y -q "$@"
}

if ! command -v redis-server >/dev/null && [[ ! -x /usr/bin/redis-server ]]; then
  echo "test: installing redis-server"
  apt_install redis-server
fi
if ! command -v node >/dev/null; then
  echo "test: installing nodejs and npm"
  apt_install nodejs npm
fi

# The deployment test (tests/deploy/compose-test.sh) builds the Dockerfile and
# runs docker-compose.yml with a Docker engine of its own; it runs beside the
# tests below and is waited for at the end.
deploy_log=$(mktemp)
echo "== Deployment test: started in the background (log at the end)"
bash tests/deploy/compose-test.sh >"$deploy_log" 2>&1 &
deploy_pid=$!
trap 'kill "$deploy_pid" 2>/dev/null || true' EXIT

echo "== Rust: unit, property and integration tests"
cargo test --workspace --all-targets
cargo test --workspace --doc

echo "== JS client"
(cd clients/js && node --test)

echo "== Deployment (Dockerfile, compose, Helm, systemd)"
bash scripts/validate-deploy.sh

echo "== Browser: a WebRTC call through two nodes"
SM_BIN="$CARGO_TARGET_DIR/debug/signal-manager-service" bash tests/browser/scripts/browser-test.sh

echo "== Deployment test: the image built and the compose stack run"
deploy_rc=0
wait "$deploy_pid" || deploy_rc=$?
trap - EXIT
cat "$deploy_log"
rm -f "$deploy_log"
if [ "$deploy_rc" -ne 0 ]; then
  echo "test: the deployment test failed (exit $deploy_rc)"
  exit 1
fi
