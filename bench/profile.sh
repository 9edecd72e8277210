#!/usr/bin/env bash
# Profiles the two nodes of a relay scenario with perf: the product's or
# the floor's (TARGET=product|floor), at RATE signals/s (0: saturation) in
# the headline shape (PAIRS pairs, 100 by default, senders on node 1,
# receivers on node 2, 200 B, one WebSocket message per signal). Prints each node's hottest
# symbols (self time) and the loadgen's result line; the perf data stays in
# OUT for `perf report -i`. With MODE=stat, counts instead what each
# process does per signal over the measured part: context switches, CPU
# migrations, system calls and task-clock time (`perf stat`). With
# MODE=callgrind, runs one node (CG_NODE: 2, the receiving one, by default;
# 1 is the sending one) under valgrind's callgrind and counts the instructions it executes in user space per
# signal over the measured part: unlike time, the count repeats from run
# to run whatever else the machine does, so it shows a change of a few
# per cent in the node's own code. The node runs about fifty times slower
# under callgrind, so use a low RATE with fewer pairs: PAIRS=20 RATE=200
# gives each connection the traffic of the 1,000/s headline (10 signals/s).
#
#   TARGET=product RATE=1000 bash bench/profile.sh
#   TARGET=floor RATE=1000 bash bench/profile.sh
#   TARGET=floor RATE=1000 MODE=stat bash bench/profile.sh
#   TARGET=product PAIRS=20 RATE=200 MODE=callgrind bash bench/profile.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/signal-manager/target}"
TARGET="${TARGET:-product}"
RATE="${RATE:-1000}"
DURATION="${DURATION:-15}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
TOP="${TOP:-35}"
MODE="${MODE:-record}"
SECRET="profile-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
if [[ "$MODE" == callgrind ]]; then
    command -v valgrind >/dev/null || {
        echo "valgrind is missing (apt-get install -y valgrind)" >&2
        exit 1
    }
else
    command -v perf >/dev/null || {
        echo "perf is missing (apt-get install -y linux-perf)" >&2
        exit 1
    }
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --quiet -p signal-manager-service -p signal-manager-loadgen \
    -p signal-manager-floor
BIN="${SERVER_BIN:-$CARGO_TARGET_DIR/release/signal-manager-service}"
FLOOR_BIN="$CARGO_TARGET_DIR/release/signal-manager-floor"
LOADGEN="$CARGO_TARGET_DIR/release/signal-manager-loadgen"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$OUT" --logfile "$OUT/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_for redis listening "$REDIS_PORT"

FLAGS=()
NODES=()
for i in 1 2; do
    port="$(free_port)"
    WRAP=()
    if [[ "$MODE" == callgrind && "$i" == "${CG_NODE:-2}" ]]; then
        # Instrumented only from the start of the measured part.
        WRAP=(valgrind -q --tool=callgrind --instr-atstart=no
            --callgrind-out-file="$OUT/node-$i.callgrind")
    fi
    if [[ "$TARGET" == floor ]]; then
        "${WRAP[@]}" "$FLOOR_BIN" --port "$port" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
            --node-id "floor-$i" --key-prefix floor --worker-threads 1 \
            >>"$OUT/node-$i.log" 2>&1 &
    else
        admin="$(free_port)"
        SIGNAL_MANAGER_AUTH_TOKEN_SECRET="$SECRET" \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_PER_SECOND=1000000 \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_BURST=1000000 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_FRAMES=65536 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_BYTES=67108864 \
            SIGNAL_MANAGER_CLUSTER_KEY_PREFIX=profile \
            SIGNAL_MANAGER_LOGGING_LEVEL=warn \
            SIGNAL_MANAGER_SERVER_WORKER_THREADS=1 \
            "${WRAP[@]}" "$BIN" --port "$port" --admin-port "$admin" \
            --redis-url "redis://127.0.0.1:$REDIS_PORT" --node-id "profile-node-$i" \
            >>"$OUT/node-$i.log" 2>&1 &
    fi
    PIDS+=($!)
    NODES+=($!)
    FLAGS+=(--url "ws://127.0.0.1:$port" --node-pid "$!")
    wait_for "node $i" listening "$port"
done

LOAD=(--window 16)
if [[ "$RATE" != 0 ]]; then LOAD=(--rate "$RATE"); fi
"$LOADGEN" relay "${FLAGS[@]}" --pairs "${PAIRS:-100}" --one-way --duration "$DURATION" --warmup 2 \
    --size 200 "${LOAD[@]}" --secret "$SECRET" --label "profile_$TARGET" \
    --redis-pid "$REDIS_PID" >"$OUT/result.json" 2>"$OUT/loadgen.log" &
LG=$!
# Recorded over the measured part only (after the warm-up and the logins).
sleep 5
WINDOW=$((DURATION - 4))
PROCS=("${NODES[0]}" "${NODES[1]}" "$REDIS_PID")
NAMES=(node-1 node-2 redis)
PERFS=()
if [[ "$MODE" == callgrind ]]; then
    CG_NODE="${CG_NODE:-2}"
    CG_PID="${NODES[$((CG_NODE - 1))]}"
    callgrind_control -i on "$CG_PID" >/dev/null 2>&1
    sleep "$WINDOW"
    callgrind_control -d "$CG_PID" >/dev/null 2>&1
    callgrind_control -i off "$CG_PID" >/dev/null 2>&1
    wait "$LG" || true
    signals="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered_per_s"])' \
        "$OUT/result.json" 2>/dev/null || echo 0)"
    dump="$(ls -t "$OUT"/node-$CG_NODE.callgrind* | head -1)"
    total="$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")"
    echo "== $TARGET node-$CG_NODE under callgrind (at $signals signals/s over ${WINDOW} s)"
    awk -v t="$total" -v n="$signals" -v w="$WINDOW" 'BEGIN {
        printf "  %-24s %12d\n", "instructions", t
        if (n > 0) printf "  %-24s %12.0f\n", "instructions per signal", t / (n * w)
    }'
    echo "  top functions: callgrind_annotate $dump | head -60"
    echo "== result"
    cat "$OUT/result.json"
    exit 0
fi
for i in 0 1 2; do
    if [[ "$MODE" == stat ]]; then
        perf stat -x, -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter \
            -p "${PROCS[$i]}" -o "$OUT/${NAMES[$i]}.stat" -- sleep "$WINDOW" 2>/dev/null &
    else
        perf record -q -F 1999 -g -p "${PROCS[$i]}" -o "$OUT/${NAMES[$i]}.perf" \
            -- sleep "$WINDOW" 2>/dev/null &
    fi
    PERFS+=($!)
done
wait "$LG" || true
# Only the recorders: the nodes and Redis run until the exit trap.
for pid in "${PERFS[@]}"; do wait "$pid" || true; done
for f in "${NAMES[@]}"; do
    if [[ "$MODE" == stat ]]; then
        # Per signal: the events over the window divided by the signals
        # delivered per second in the load generator's window.
        signals="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered_per_s"])' \
            "$OUT/result.json" 2>/dev/null || echo 0)"
        echo "== $TARGET $f per signal (at $signals signals/s over ${WINDOW} s)"
        awk -F, -v n="$signals" -v w="$WINDOW" '$1 ~ /^[0-9.]+$/ && n > 0 {
            if ($3 == "task-clock") printf "  %-24s %10.2f\n", "task-clock (us)", $1 * 1000 / (n * w)
            else printf "  %-24s %10.2f\n", $3, $1 / (n * w)
        }' "$OUT/$f.stat"
        continue
    fi
    echo "== $TARGET $f (self time, top $TOP)"
    perf report -q -i "$OUT/$f.perf" --no-children --sort dso,symbol --percent-limit 0.5 \
        2>/dev/null | grep -v '^$' | grep -v '^ *|' | grep -v -- '---' | head -"$TOP"
done
echo "== result"
cat "$OUT/result.json"
echo "perf data in $OUT" >&2
