#!/usr/bin/env bash
# Relay at saturation through one Redis and through a three-shard Redis
# Cluster (sharded pub/sub), two nodes each, same load: signals/s, CPU per
# signal (nodes, and every Redis process), Redis publishes and deliveries
# per signal. Writes one JSON line per run to bench/results/redis_modes.jsonl
# and prints a summary. See BENCHMARKS.md, "One Redis or a Redis Cluster".
#
#   bash bench/redis_modes.sh            # 3 runs per mode
#   RUNS=1 bash bench/redis_modes.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/signal-manager/target}"

RUNS="${RUNS:-3}"
RESULTS="${RESULTS:-bench/results}"
mkdir -p "$RESULTS"
RAW="$RESULTS/redis_modes.jsonl"
: >"$RAW"
WORK="$(mktemp -d)"
SECRET="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
CLK_TCK="$(getconf CLK_TCK)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "building release..." >&2
cargo build --release --quiet -p signal-manager-service -p signal-manager-loadgen
BIN="$CARGO_TARGET_DIR/release/signal-manager-service"
LOADGEN="$CARGO_TARGET_DIR/release/signal-manager-loadgen"

REDIS_PIDS=()
REDIS_PORTS=()
NODE_PIDS=()
NODE_ARGS=()

stop_all() {
    local pid
    for pid in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
    NODE_ARGS=()
    REDIS_PIDS=()
    REDIS_PORTS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    local what="$1" i
    shift
    for i in $(seq 1 200); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for $what" >&2
    exit 1
}

start_redis() { # start_redis PORT [extra args...]
    local port="$1"
    shift
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis-$port.log" "$@" &
    REDIS_PIDS+=($!)
    REDIS_PORTS+=("$port")
}

start_standalone() {
    local port
    port="$(free_port)"
    start_redis "$port"
    wait_for redis redis-cli -p "$port" ping
    MODE=standalone
    URL="redis://127.0.0.1:$port"
}

start_cluster() {
    local ports=() p seeds=()
    for _ in 1 2 3; do ports+=("$(free_port)"); done
    for p in "${ports[@]}"; do
        start_redis "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf"
    done
    for p in "${ports[@]}"; do
        wait_for "cluster node $p" redis-cli -p "$p" ping
        seeds+=("redis://127.0.0.1:$p")
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-yes >/dev/null
    for p in "${ports[@]}"; do
        wait_for "cluster_state:ok on $p" sh -c "redis-cli -p $p cluster info | grep -q cluster_state:ok"
    done
    MODE=cluster
    URL="$(IFS=,; echo "${seeds[*]}")"
}

start_nodes() {
    local prefix="bench$RANDOM" i port admin
    for i in 1 2; do
        port="$(free_port)"
        admin="$(free_port)"
        SIGNAL_MANAGER_AUTH_TOKEN_SECRET="$SECRET" \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_PER_SECOND=1000000 \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_BURST=1000000 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_FRAMES=65536 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_BYTES=67108864 \
            SIGNAL_MANAGER_CLUSTER_KEY_PREFIX="$prefix" \
            SIGNAL_MANAGER_CLUSTER_REDIS_MODE="$MODE" \
            SIGNAL_MANAGER_LOGGING_LEVEL=warn \
            SIGNAL_MANAGER_SERVER_WORKER_THREADS="${NODE_WORKER_THREADS:-1}" \
            "$BIN" --port "$port" --admin-port "$admin" \
            --redis-url "$URL" --node-id "bench-node-$i" \
            >>"$WORK/node-$i.log" 2>&1 &
        NODE_PIDS+=($!)
        NODE_ARGS+=(--url "ws://127.0.0.1:$port" --node-pid "$!" --admin-url "http://127.0.0.1:$admin")
        wait_for "node $i" curl -fsS "http://127.0.0.1:$admin/readyz"
    done
    PREFIX="$prefix"
}

redis_ticks() {
    local pid total=0 t
    for pid in "${REDIS_PIDS[@]}"; do
        t="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
        total=$((total + t))
    done
    echo "$total"
}

publishes() { # sum of PUBLISH and SPUBLISH calls over every Redis
    local port total=0 n
    for port in "${REDIS_PORTS[@]}"; do
        n="$(redis-cli -p "$port" info commandstats |
            awk -F'[=,:]' '/^cmdstat_(s)?publish:/ {s += $3} END {print s + 0}')"
        total=$((total + n))
    done
    echo "$total"
}

run_relay() {
    local before_ticks after_ticks before_pub after_pub line
    before_ticks="$(redis_ticks)"
    before_pub="$(publishes)"
    line="$("$LOADGEN" relay "${NODE_ARGS[@]}" --secret "$SECRET" --key-prefix "$PREFIX" \
        --label "relay_sat_200_$MODE" --pairs 32 --window 64 --size 200 --duration 10 --warmup 2 \
        2>>"$WORK/loadgen.log")"
    after_ticks="$(redis_ticks)"
    after_pub="$(publishes)"
    python3 - "$line" "$MODE" "$((after_ticks - before_ticks))" "$CLK_TCK" \
        "$((after_pub - before_pub))" "${#REDIS_PIDS[@]}" <<'PY' | tee -a "$RAW"
import json, sys
line, mode, ticks, hz, pubs, shards = sys.argv[1:]
r = json.loads(line)
total = max(r["delivered"] + r["errors"], 1)
r["redis_mode"] = mode
r["redis_processes"] = int(shards)
r["redis_cpu_us_per_signal"] = round(int(ticks) / int(hz) * 1e6 / total, 2)
r["redis_publishes_per_signal"] = round(int(pubs) / total, 4)
print(json.dumps(r))
PY
}

for mode in standalone cluster; do
    stop_all
    "start_$mode"
    start_nodes
    for run in $(seq 1 "$RUNS"); do
        echo "=== $mode, run $run of $RUNS ===" >&2
        run_relay
        sleep 2
    done
done
stop_all

python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for mode in ("standalone", "cluster"):
    rs = [r for r in rows if r.get("redis_mode") == mode]
    if not rs:
        continue
    med = lambda f: statistics.median(f(r) for r in rs)
    print(f"{mode}: {med(lambda r: r['delivered_per_s']):.0f} signals/s, "
          f"node CPU {med(lambda r: r.get('cpu_us_per_signal') or 0):.2f} µs/signal, "
          f"Redis CPU {med(lambda r: r['redis_cpu_us_per_signal']):.2f} µs/signal "
          f"over {rs[0]['redis_processes']} process(es), "
          f"publishes/signal {med(lambda r: r['redis_publishes_per_signal']):.3f}, "
          f"deliveries/signal {med(lambda r: (r.get('cluster') or {}).get('redis_deliveries_per_signal') or 0):.3f}, "
          f"lost {sum(r['lost'] for r in rs)}, dup {sum(r['duplicates'] for r in rs)}, "
          f"reordered {sum(r['reordered'] for r in rs)}")
PY
