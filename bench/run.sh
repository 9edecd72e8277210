#!/usr/bin/env bash
# Runs the load benchmarks on this machine: builds release once, starts
# redis-server and the nodes on free loopback ports, and beside them a
# second redis-server with two nodes of the floor (bench/floor, the least
# a relay does); runs every loadgen scenario RUNS times with fixed
# parameters, each relay scenario against the product and then at once
# against the floor, and writes the medians and the product ÷ floor ratios
# to bench/results/latest.md (raw JSON lines beside it). See BENCHMARKS.md.
#
#   bash bench/run.sh                 # everything, 3 runs each (~25 min)
#   RUNS=1 ONLY=relay_5k,idle bash bench/run.sh
#
# Relay scenarios write one WebSocket message per signal (the loadgen's
# default --send-mode per-message, as browsers send); the *_batched ones
# keep the earlier method (a window per write) for comparison.
#
# Scenario names (ONLY=...): relay_sat_200 relay_sat_2000 relay_5k relay_1k
# (each also runs on the floor as floor_*), relay_sat_200_batched
# relay_5k_batched (also floor_*_batched), connect idle storm resumable
# scale.
# FLOOR=0 skips the floor. SERVER_BIN=path measures another build of the
# node with this load generator (before/after comparisons).
# BENCH_NOTE="..." is printed above the tables
# (say how loaded the machine was).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
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
cargo build --release --quiet -p signal-manager-service -p signal-manager-loadgen \
    -p signal-manager-floor
# SERVER_BIN=path runs another build of the node (e.g. an older revision)
# under the same load generator and settings.
BIN="${SERVER_BIN:-$CARGO_TARGET_DIR/release/signal-manager-service}"
LOADGEN="$CARGO_TARGET_DIR/release/signal-manager-loadgen"
FLOOR_BIN="$CARGO_TARGET_DIR/release/signal-manager-floor"
FLOOR="${FLOOR:-1}"
WORKERS="${NODE_WORKER_THREADS:-1}"

REDIS_PID=""
REDIS_PORT=""
NODE_PIDS=()
NODE_URLS=()
ADMIN_URLS=()
# The floor's own Redis and nodes, started once and kept for the whole run.
FLOOR_REDIS_PID=""
FLOOR_REDIS_PORT=""
FLOOR_PIDS=()
FLOOR_URLS=()

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
    local pid
    for pid in "${FLOOR_PIDS[@]}" $FLOOR_REDIS_PID; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${FLOOR_PIDS[@]}" $FLOOR_REDIS_PID; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# redis_server NAME: starts one on a free port; sets STARTED_PID, STARTED_PORT.
redis_server() {
    STARTED_PORT="$(free_port)"
    mkdir -p "$WORK/$1"
    redis-server --port "$STARTED_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK/$1" --logfile "$WORK/$1.log" &
    STARTED_PID=$!
    wait_for "$1" redis-cli -p "$STARTED_PORT" ping
}

start_redis() {
    redis_server redis
    REDIS_PID="$STARTED_PID"
    REDIS_PORT="$STARTED_PORT"
}

# Two floor nodes on their own Redis, with the product's worker count.
start_floor() {
    redis_server floor-redis
    FLOOR_REDIS_PID="$STARTED_PID"
    FLOOR_REDIS_PORT="$STARTED_PORT"
    local i port
    for i in 1 2; do
        port="$(free_port)"
        "$FLOOR_BIN" --port "$port" --redis-url "redis://127.0.0.1:$FLOOR_REDIS_PORT" \
            --node-id "floor-$i" --key-prefix floor --worker-threads "$WORKERS" \
            >>"$WORK/floor-$i.log" 2>&1 &
        FLOOR_PIDS+=($!)
        FLOOR_URLS+=("ws://127.0.0.1:$port")
        wait_for "floor node $i" listening "$port"
    done
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
            SIGNAL_MANAGER_SERVER_WORKER_THREADS="$WORKERS" \
            SIGNAL_MANAGER_SERVER_RESUME_WINDOW="${RESUME_WINDOW:-30}" \
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

# lg NAME [node indexes as "0 1"] -- loadgen args...: one run against the
# product's nodes, one JSON line.
lg() {
    local name="$1" nodes="$2"
    shift 3
    local flags=() i
    for i in $nodes; do
        flags+=(--url "${NODE_URLS[$i]}" --node-pid "${NODE_PIDS[$i]}" --admin-url "${ADMIN_URLS[$i]}")
    done
    run_loadgen "$name" "$1" "${flags[@]}" "${@:2}" --redis-pid "$REDIS_PID" \
        --redis-url "redis://127.0.0.1:$REDIS_PORT" --key-prefix "$PREFIX"
}

# lg_floor NAME -- loadgen args...: the same against both floor nodes (no
# admin endpoint, so no node counters; Redis counters come from its own).
lg_floor() {
    local name="$1"
    shift 2
    local flags=() i
    for i in 0 1; do
        flags+=(--url "${FLOOR_URLS[$i]}" --node-pid "${FLOOR_PIDS[$i]}")
    done
    run_loadgen "$name" "$1" "${flags[@]}" "${@:2}" --redis-pid "$FLOOR_REDIS_PID" \
        --redis-url "redis://127.0.0.1:$FLOOR_REDIS_PORT" --key-prefix floor
}

run_loadgen() {
    local name="$1" scenario="$2"
    shift 2
    local line
    line="$("$LOADGEN" "$scenario" "$@" --secret "$SECRET" --label "$name" \
        2> >(tee -a "$WORK/loadgen.log" | grep -v '^\[[a-z]*\] *[0-9]*s ' >&2))" || true
    if [[ -z "$line" ]]; then
        line="{\"label\":\"$name\",\"pass\":false,\"failures\":[\"loadgen produced no result\"]}"
    fi
    echo "$line" >>"$RAW"
    sleep 2
}

# both NAME -- relay args...: the product, then the floor, same arguments.
both() {
    local name="$1"
    shift 1
    lg "$name" "$(all_nodes)" "$@"
    if [[ ${#FLOOR_PIDS[@]} -gt 0 ]]; then lg_floor "floor_${name#relay_}" "$@"; fi
}

want() { [[ "$ONLY" == all || ",$ONLY," == *",$1,"* ]]; }

all_nodes() { seq -s ' ' 0 $((${#NODE_PIDS[@]} - 1)); }

restart_cluster 2
RELAYS=(relay_sat_200 relay_sat_2000 relay_5k relay_1k relay_sat_200_batched relay_5k_batched)
if [[ "$FLOOR" == 1 ]]; then
    for r in "${RELAYS[@]}"; do
        if want "$r"; then start_floor; break; fi
    done
fi
# The headline shape is the one an independent Node.js load generator used:
# 100 pairs, every sender on node 1 and every receiver on node 2, 200 B.
# Saturation keeps 16 signals in flight per pair (1,600 in all): deeper
# queues only add latency, and a signal queued past cluster.delivery_timeout
# (2 s) is answered PEER_UNREACHABLE, which fails the run.
HEADLINE=(--pairs 100 --one-way --duration 10 --warmup 2)
for run in $(seq 1 "$RUNS"); do
    echo "=== run $run of $RUNS ===" >&2
    want relay_sat_200 && both relay_sat_200 -- relay "${HEADLINE[@]}" --window 16 --size 200
    want relay_sat_2000 && both relay_sat_2000 -- relay "${HEADLINE[@]}" --window 16 --size 2000
    want relay_5k && both relay_5k -- relay "${HEADLINE[@]}" --rate 5000 --size 200 --baseline 5
    want relay_1k && both relay_1k -- relay "${HEADLINE[@]}" --rate 1000 --size 200 --baseline 5
    # The earlier method: a whole window fed, then one flush (secondary table).
    want relay_sat_200_batched && both relay_sat_200_batched -- relay --send-mode batched \
        --pairs 32 --window 64 --size 200 --duration 10 --warmup 2
    want relay_5k_batched && both relay_5k_batched -- relay --send-mode batched \
        --pairs 50 --rate 5000 --size 200 --duration 10 --warmup 2 --baseline 5
    # Per-node capacity: one node takes every connection; then both nodes.
    # Client sockets defer their port choice to connect()
    # (IP_BIND_ADDRESS_NO_PORT), so the TIME_WAIT sockets of one scenario
    # no longer slow the next: no separate source ranges are needed.
    want connect && lg connect "0" -- connect --connections 15000 --concurrency 64
    want connect && lg connect_2 "$(all_nodes)" -- connect --connections 15000 --concurrency 64
    if want idle; then
        # A fresh cluster, so RSS "before" is a node that never held clients.
        restart_cluster 2
        lg idle "0" -- idle --connections 19000 --concurrency 200 --hold 5
    fi
    if want storm; then
        restart_cluster 2
        lg storm "$(all_nodes)" -- storm --clients 19000 --setup-concurrency 200 --deadline 60
    fi
    if want resumable; then
        # 19,000 sessions on one fresh node dropped at once stay resumable
        # for a 20 s window, 5,000 of them holding a signal from node 2;
        # twice on the same node, so memory kept by the node would show as
        # growth after the second window.
        RESUME_WINDOW=20 restart_cluster 2
        lg resumable "0 1" -- resumable --sessions 19000 --concurrency 200 --held 5000 \
            --size 200 --window 20 --settle 3 --cycles 2
    fi
    if want idle || want storm || want resumable; then restart_cluster 2; fi
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
