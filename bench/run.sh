#!/usr/bin/env bash
# Runs the load benchmarks on this machine: builds release once, starts
# redis-server and the nodes on free loopback ports, runs every loadgen
# scenario RUNS times with fixed parameters, and writes the medians to
# bench/results/latest.md (raw JSON lines beside it). See BENCHMARKS.md.
#
#   bash bench/run.sh                 # everything, 3 runs each (~20 min)
#   RUNS=1 ONLY=relay_sat_200,idle bash bench/run.sh
#
# Each connection-heavy scenario uses its own range of source addresses:
# the sockets a run closes sit in TIME_WAIT for a minute and keep their
# local ports, so reusing a range at once would make the load generator
# itself the bottleneck (bind() hunting for a free port).
#
# Scenario names: relay_sat_200 relay_sat_2000 relay_5k relay_1k connect
# idle storm scale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/signal-manager/target}"

RUNS="${RUNS:-3}"
ONLY="${ONLY:-all}"
RESULTS="${RESULTS:-bench/results}"
mkdir -p "$RESULTS"
RAW="$RESULTS/latest.jsonl"
: >"$RAW"
WORK="$(mktemp -d)"
SECRET="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"

# One process may hold at most the hard limit of open files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

command -v redis-server >/dev/null || {
    echo "redis-server is missing: apt-get install -y redis-server" >&2
    exit 1
}

echo "building release..." >&2
cargo build --release --quiet -p signal-manager-service -p signal-manager-loadgen
BIN="$CARGO_TARGET_DIR/release/signal-manager-service"
LOADGEN="$CARGO_TARGET_DIR/release/signal-manager-loadgen"

REDIS_PID=""
REDIS_PORT=""
NODE_PIDS=()
NODE_URLS=()
ADMIN_URLS=()

stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
    NODE_URLS=()
    ADMIN_URLS=()
}

stop_redis() {
    if [[ -n "$REDIS_PID" ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=""
    fi
}

cleanup() {
    stop_nodes
    stop_redis
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (bounded) until a command succeeds.
wait_for() {
    local what="$1"
    shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for $what" >&2
    return 1
}

start_redis() {
    REDIS_PORT="$(free_port)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    wait_for "redis" redis-cli -p "$REDIS_PORT" ping
}

# start_nodes N: N nodes on one fresh key prefix, each ready.
start_nodes() {
    local n="$1" prefix="bench$RANDOM" i port admin
    for i in $(seq 1 "$n"); do
        port="$(free_port)"
        admin="$(free_port)"
        SIGNAL_MANAGER_AUTH_TOKEN_SECRET="$SECRET" \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_PER_SECOND=1000000 \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_BURST=1000000 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_FRAMES=65536 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_BYTES=67108864 \
            SIGNAL_MANAGER_CLUSTER_KEY_PREFIX="$prefix" \
            SIGNAL_MANAGER_LOGGING_LEVEL=warn \
            SIGNAL_MANAGER_SERVER_WORKER_THREADS="${NODE_WORKER_THREADS:-1}" \
            "$BIN" --port "$port" --admin-port "$admin" \
            --redis-url "redis://127.0.0.1:$REDIS_PORT" --node-id "bench-node-$i" \
            >>"$WORK/node-$i.log" 2>&1 &
        NODE_PIDS+=($!)
        NODE_URLS+=("ws://127.0.0.1:$port")
        ADMIN_URLS+=("http://127.0.0.1:$admin")
        wait_for "node $i" curl -fsS "http://127.0.0.1:$admin/readyz"
    done
    PREFIX="$prefix"
}

restart_cluster() {
    stop_nodes
    stop_redis
    start_redis
    start_nodes "$1"
}

# lg NAME [node indexes as "0 1"] -- loadgen args...: one run, one JSON line.
lg() {
    local name="$1" nodes="$2"
    shift 3
    local flags=() i
    for i in $nodes; do
        flags+=(--url "${NODE_URLS[$i]}" --node-pid "${NODE_PIDS[$i]}" --admin-url "${ADMIN_URLS[$i]}")
    done
    local line
    line="$("$LOADGEN" "$1" "${flags[@]}" "${@:2}" --secret "$SECRET" \
        --redis-pid "$REDIS_PID" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
        --key-prefix "$PREFIX" --label "$name" 2> >(tee -a "$WORK/loadgen.log" | grep -v '^\[[a-z]*\] *[0-9]*s ' >&2))" || true
    if [[ -z "$line" ]]; then
        line="{\"label\":\"$name\",\"pass\":false,\"failures\":[\"loadgen produced no result\"]}"
    fi
    echo "$line" >>"$RAW"
    sleep 2
}

want() { [[ "$ONLY" == all || ",$ONLY," == *",$1,"* ]]; }

all_nodes() { seq -s ' ' 0 $((${#NODE_PIDS[@]} - 1)); }

restart_cluster 2
for run in $(seq 1 "$RUNS"); do
    echo "=== run $run of $RUNS ===" >&2
    want relay_sat_200 && lg relay_sat_200 "$(all_nodes)" -- relay \
        --pairs 32 --window 64 --size 200 --duration 10 --warmup 2
    want relay_sat_2000 && lg relay_sat_2000 "$(all_nodes)" -- relay \
        --pairs 32 --window 64 --size 2000 --duration 10 --warmup 2
    want relay_5k && lg relay_5k "$(all_nodes)" -- relay \
        --pairs 50 --rate 5000 --size 200 --duration 10 --warmup 2 --baseline 5
    want relay_1k && lg relay_1k "$(all_nodes)" -- relay \
        --pairs 50 --rate 1000 --size 200 --duration 10 --warmup 2 --baseline 5
    # Per-node capacity: one node takes every connection; then both nodes.
    want connect && lg connect "0" -- connect \
        --connections 15000 --concurrency 64 --source-base 10 --source-count 16
    want connect && lg connect_2 "$(all_nodes)" -- connect \
        --connections 15000 --concurrency 64 --source-base 30 --source-count 16
    if want idle; then
        # A fresh cluster, so RSS "before" is a node that never held clients.
        restart_cluster 2
        lg idle "0" -- idle --connections 19000 --concurrency 200 --hold 5 \
            --source-base 50 --source-count 16
    fi
    if want storm; then
        restart_cluster 2
        lg storm "$(all_nodes)" -- storm --clients 19000 --setup-concurrency 200 \
            --source-base 70 --source-count 32 --deadline 60
    fi
    if want idle || want storm; then restart_cluster 2; fi
done

if want scale; then
    for n in 2 4 8; do
        restart_cluster "$n"
        for run in $(seq 1 "$RUNS"); do
            echo "=== scale $n nodes, run $run of $RUNS ===" >&2
            lg "scale_$n" "$(all_nodes)" -- relay --pairs 48 --rate 5000 --size 200 \
                --duration 8 --warmup 2 --baseline 5
        done
    done
fi

REVISION="$(git describe --always --dirty 2>/dev/null || echo unknown)" \
    python3 bench/summarize.py "$RAW" "$RESULTS/latest.md" "$RUNS"
cat "$RESULTS/latest.md"
