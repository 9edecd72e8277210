#!/usr/bin/env bash
# What the Redis deployment costs the relay, medians of RUNS (default 3):
#
#   - one Redis vs a three-shard Redis Cluster (sharded pub/sub), at 2 and at
#     4 nodes: signals/s at saturation, CPU per signal (nodes + every Redis
#     process), Redis publishes and deliveries per signal;
#   - TLS vs plain (one Redis, 2 nodes, `rediss://` with a CA this script
#     makes with openssl): CPU per signal at saturation and at 5,000
#     signals/s, p99 latency at 5,000/s;
#   - how 2, 4 and 8 node channels spread over the three shards
#     (`CLUSTER KEYSLOT` of each channel → its primary, checked with
#     `PUBSUB SHARDNUMSUB` while 8 nodes run).
#
# Loads (bench/run.sh's): per-message saturation (--pairs 100 --window 16
# --size 200 --duration 10 --warmup 2; --one-way on 2 nodes, round robin
# over all nodes on 4), the same at --rate 5000 (with a 5 s idle baseline),
# and the batched saturation row (--send-mode batched --pairs 32 --window
# 64, round robin as before) where Redis's own per-shard capacity shows. Every run restarts its
# Redis and nodes; the setups take turns within each run, so a slow spell of
# the machine falls on all of them.
#
# Writes one JSON line per run to bench/results/redis_modes.jsonl and the
# median tables to bench/results/redis_modes.md. See BENCHMARKS.md, "One
# Redis or a Redis Cluster". About 11 minutes with RUNS=3.
#
#   bash bench/redis_modes.sh
#   RUNS=1 bash bench/redis_modes.sh
#   BENCH_NOTE="quiet machine" bash bench/redis_modes.sh   # printed above the tables
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source bench/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/signal-manager/target}"

RUNS="${RUNS:-3}"
RESULTS="${RESULTS:-bench/results}"
mkdir -p "$RESULTS"
RAW="$RESULTS/redis_modes.jsonl"
SUMMARY="$RESULTS/redis_modes.md"
: >"$RAW"
WORK="$(mktemp -d)"
SECRET="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
# Fixed names, so the shard of each node channel is the same in every run:
# channels are <prefix>:node:<node id> (src/redis_names.rs).
PREFIX=sm
NODE_ID=bench-node
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for tool in redis-server redis-cli openssl curl python3; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing (apt-get install -y redis-server redis-tools openssl curl python3)" >&2
        exit 1
    }
done

echo "building release..." >&2
cargo build --release --quiet -p signal-manager-service -p signal-manager-loadgen
BIN="$CARGO_TARGET_DIR/release/signal-manager-service"
LOADGEN="$CARGO_TARGET_DIR/release/signal-manager-loadgen"

REDIS_PIDS=()
REDIS_PORTS=()
NODE_PIDS=()
NODE_ARGS=()
CLI_TLS=() # redis-cli flags for the running Redis (TLS or none)

stop_all() {
    local pid
    for pid in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}" "${REDIS_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
    NODE_ARGS=()
    REDIS_PIDS=()
    REDIS_PORTS=()
    CLI_TLS=()
}
trap 'stop_all; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

rcli() { # rcli PORT args...: redis-cli on the running Redis
    local port="$1"
    shift
    redis-cli "${CLI_TLS[@]}" -p "$port" "$@"
}

# A CA and a certificate for 127.0.0.1/localhost signed by it.
make_certificates() {
    local d="$WORK/tls"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 -subj "/CN=redis_modes bench CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        "extendedKeyUsage=serverAuth" >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -out "$d/server.crt" -days 2 -extfile "$d/server.ext" 2>/dev/null
    TLS_DIR="$d"
}

start_redis() { # start_redis PORT [extra args...]
    local port="$1"
    shift
    redis-server --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis-$port.log" "$@" &
    REDIS_PIDS+=($!)
    REDIS_PORTS+=("$port")
}

start_standalone() {
    local port
    port="$(free_port)"
    start_redis "$port" --port "$port"
    wait_for redis rcli "$port" ping
    MODE=standalone
    TLS=false
    URL="redis://127.0.0.1:$port"
    NODE_ENV=()
}

start_tls() {
    local port
    port="$(free_port)"
    start_redis "$port" --port 0 --tls-port "$port" --tls-cert-file "$TLS_DIR/server.crt" \
        --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.crt" \
        --tls-auth-clients no
    CLI_TLS=(--tls --cacert "$TLS_DIR/ca.crt")
    wait_for "TLS redis" rcli "$port" ping
    MODE=standalone
    TLS=true
    URL="rediss://127.0.0.1:$port"
    NODE_ENV=("SIGNAL_MANAGER_CLUSTER_REDIS_TLS_CA_PATH=$TLS_DIR/ca.crt")
}

start_cluster() {
    local ports=() p seeds=()
    for _ in 1 2 3; do ports+=("$(free_port)"); done
    for p in "${ports[@]}"; do
        start_redis "$p" --port "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" \
            --cluster-port "$(free_port)"
    done
    for p in "${ports[@]}"; do
        wait_for "cluster node $p" rcli "$p" ping
        seeds+=("redis://127.0.0.1:$p")
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-yes >/dev/null
    for p in "${ports[@]}"; do
        wait_for "cluster_state:ok on $p" sh -c "redis-cli -p $p cluster info | grep -q cluster_state:ok"
    done
    MODE=cluster
    TLS=false
    URL="$(IFS=,; echo "${seeds[*]}")"
    NODE_ENV=()
}

start_nodes() { # start_nodes N: all at once, then wait until each is ready
    local n="$1" i port admin admins=()
    for i in $(seq 1 "$n"); do
        port="$(free_port)"
        admin="$(free_port)"
        env "${NODE_ENV[@]}" \
            SIGNAL_MANAGER_AUTH_TOKEN_SECRET="$SECRET" \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_PER_SECOND=1000000 \
            SIGNAL_MANAGER_SERVER_RATE_LIMIT_BURST=1000000 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_FRAMES=65536 \
            SIGNAL_MANAGER_SERVER_OUTBOUND_QUEUE_BYTES=67108864 \
            SIGNAL_MANAGER_CLUSTER_KEY_PREFIX="$PREFIX" \
            SIGNAL_MANAGER_CLUSTER_REDIS_MODE="$MODE" \
            SIGNAL_MANAGER_LOGGING_LEVEL=warn \
            SIGNAL_MANAGER_SERVER_WORKER_THREADS="${NODE_WORKER_THREADS:-1}" \
            "$BIN" --port "$port" --admin-port "$admin" \
            --redis-url "$URL" --node-id "$NODE_ID-$i" \
            >>"$WORK/node-$i.log" 2>&1 &
        NODE_PIDS+=($!)
        NODE_ARGS+=(--url "ws://127.0.0.1:$port" --node-pid "$!" --admin-url "http://127.0.0.1:$admin")
        admins+=("$admin")
    done
    for admin in "${admins[@]}"; do
        wait_for "node on admin port $admin" curl -fsS "http://127.0.0.1:$admin/readyz"
    done
}

publishes() { # PUBLISH + SPUBLISH calls summed over every Redis
    local port total=0 n
    for port in "${REDIS_PORTS[@]}"; do
        n="$(rcli "$port" info commandstats |
            awk -F'[=,:]' '/^cmdstat_(s)?publish:/ {s += $3} END {print s + 0}')"
        total=$((total + n))
    done
    echo "$total"
}

shard_of() { # shard_of NAME: the port of the primary owning NAME's slot
    local slot
    slot="$(redis-cli -p "${REDIS_PORTS[0]}" cluster keyslot "$1")"
    redis-cli -p "${REDIS_PORTS[0]}" cluster nodes | python3 -c '
import sys
slot = int(sys.argv[1])
for line in sys.stdin:
    f = line.split()
    if "master" not in f[2].split(","):
        continue
    for r in f[8:]:
        if r.startswith("["):
            continue
        lo, _, hi = r.partition("-")
        if int(lo) <= slot <= int(hi or lo):
            print(slot, f[1].split("@")[0].rsplit(":", 1)[1])
' "$slot"
}

# relay SETUP LOAD RUN loadgen-args...: one measured run, one JSON line.
relay() {
    local setup="$1" load="$2" run="$3"
    shift 3
    local before after line pids=() pid
    for pid in "${REDIS_PIDS[@]}"; do pids+=(--redis-pid "$pid"); done
    echo "=== $setup $load, run $run of $RUNS ($(uptime | sed 's/.*load/load/')) ===" >&2
    before="$(publishes)"
    line="$("$LOADGEN" relay "${NODE_ARGS[@]}" "${pids[@]}" --secret "$SECRET" \
        --key-prefix "$PREFIX" --label "${setup}_$load" "$@" \
        2> >(tee -a "$WORK/loadgen.log" | grep -v '^\[[a-z]*\] *[0-9]*s ' >&2))" || true
    after="$(publishes)"
    [[ -n "$line" ]] || line='{"pass": false, "failures": ["loadgen produced no result"]}'
    python3 - "$line" "$setup" "$load" "$run" "$MODE" "$TLS" "${#NODE_PIDS[@]}" \
        "${#REDIS_PIDS[@]}" "$((after - before))" "$(uptime | sed 's/.*average: //')" \
        <<'PY' | tee -a "$RAW" >/dev/null
import json, sys
line, setup, load, run, mode, tls, nodes, processes, pubs, loadavg = sys.argv[1:]
r = json.loads(line)
r.update(setup=setup, load=load, run=int(run), redis_mode=mode, tls=tls == "true",
         node_count=int(nodes), redis_processes=int(processes), loadavg=loadavg)
total = r.get("delivered", 0) + r.get("errors", 0)
# Over the whole run (warm-up and drain too), as every signal of it is counted.
r["redis_publishes_per_signal"] = round(int(pubs) / total, 4) if total else None
print(json.dumps(r))
PY
    sleep 2
}

SAT=(--pairs 100 --window 16 --size 200 --duration 10 --warmup 2)
RATE=(--pairs 100 --rate 5000 --size 200 --duration 10 --warmup 2 --baseline 5)
BATCHED=(--send-mode batched --pairs 32 --window 64 --size 200 --duration 10 --warmup 2)

# measure SETUP N: the loads this setup is measured under.
measure() {
    local setup="$1" n="$2" run="$3" spread=()
    # On 2 nodes every sender on one node and every receiver on the other;
    # on more, round robin: pair p from node p to node p + 1.
    if [[ "$n" == 2 ]]; then spread=(--one-way); fi
    relay "$setup" sat "$run" "${SAT[@]}" "${spread[@]}"
    case "$setup" in
    plain_2 | tls_2) relay "$setup" rate5k "$run" "${RATE[@]}" "${spread[@]}" ;;
    esac
    case "$setup" in
    tls_2) ;;
    # As the earlier batched figures: round robin on 2 nodes too.
    *) relay "$setup" batched "$run" "${BATCHED[@]}" ;;
    esac
}

make_certificates
for run in $(seq 1 "$RUNS"); do
    for setup in plain_2 tls_2 cluster_2 plain_4 cluster_4; do
        stop_all
        case "$setup" in
        plain_*) start_standalone ;;
        tls_*) start_tls ;;
        cluster_*) start_cluster ;;
        esac
        start_nodes "${setup#*_}"
        measure "$setup" "${setup#*_}" "$run"
    done
done

# Where 8 node channels land, with 8 nodes subscribed.
stop_all
start_cluster
start_nodes 8
python3 - "$PREFIX" "$NODE_ID" "$(printf '%s,' "${REDIS_PORTS[@]}")" \
    "$(for i in $(seq 1 8); do
        c="$PREFIX:node:$NODE_ID-$i"
        read -r slot port <<<"$(shard_of "$c")"
        echo "$c $slot $port $(redis-cli -p "$port" pubsub shardnumsub "$c" | tail -1)"
    done)" <<'PY' | tee -a "$RAW" >/dev/null
import json, sys
prefix, node_id, ports, rows = sys.argv[1:]
primaries = [int(p) for p in ports.split(",") if p]
channels = []
for line in rows.splitlines():
    name, slot, port, subscribers = line.split()
    channels.append({"channel": name, "slot": int(slot),
                     "shard": primaries.index(int(port)) + 1,
                     "subscribers_on_shard": int(subscribers)})
print(json.dumps({"scenario": "channel_spread", "primaries": len(primaries),
                  "channels": channels}))
PY
stop_all

python3 - "$RAW" "$SUMMARY" "${BENCH_NOTE:-}" "$(git rev-parse --short HEAD)" <<'PY'
import json, statistics, sys
raw, out, note, rev = sys.argv[1:]
rows = [json.loads(l) for l in open(raw) if l.strip()]
runs = [r for r in rows if "setup" in r]
spread = next((r for r in rows if r.get("scenario") == "channel_spread"), None)

def pick(setup, load):
    return [r for r in runs if r["setup"] == setup and r["load"] == load]

def med(rs, f):
    vals = [v for v in (f(r) for r in rs) if v is not None]
    return statistics.median(vals) if vals else None

def cpu(r, part):
    c = r.get("cpu") or {}
    d = r.get("delivered_per_s", 0) * (c.get("window_s") or 0)
    if not d:
        return None
    s = {"nodes": sum(v or 0 for v in c.get("nodes_s") or []),
         "redis": c.get("redis_s")}[part]
    return None if s is None else s * 1e6 / d

fmt = lambda v, p=2: "?" if v is None else f"{v:,.{p}f}"
n_runs = max((r["run"] for r in runs), default=0)
lines = [f"# Redis modes at {rev}: medians of {n_runs} run{'s' if n_runs != 1 else ''}", ""]
if note:
    lines += [note, ""]
loads = [float(r["loadavg"].split(",")[0]) for r in runs if r.get("loadavg")]
if loads:
    lines += [f"1-minute load average at the end of each run: {min(loads):.2f} to {max(loads):.2f} "
              f"(median {statistics.median(loads):.2f}).", ""]

def mode_table(load, title):
    out = [f"## {title}", "",
           "| nodes | Redis | signals/s | CPU µs/signal (nodes + Redis) | nodes µs | Redis µs | publishes/signal | deliveries/signal | p99 ms | lost / dup / reordered / errors | runs passed |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in (2, 4):
        for setup, name in ((f"plain_{n}", "one Redis"), (f"cluster_{n}", "3-shard cluster")):
            rs = pick(setup, load)
            if not rs:
                continue
            bad = "{} / {} / {} / {}".format(*(sum(r.get(k, 0) for r in rs) for k in ("lost", "duplicates", "reordered", "errors")))
            p99 = med(rs, lambda r: (r.get("latency") or {}).get("p99_us"))
            out.append(f"| {n} | {name} | {fmt(med(rs, lambda r: r.get('delivered_per_s')), 0)} "
                       f"| {fmt(med(rs, lambda r: r.get('cpu_us_per_signal')))} "
                       f"| {fmt(med(rs, lambda r: cpu(r, 'nodes')))} | {fmt(med(rs, lambda r: cpu(r, 'redis')))} "
                       f"| {fmt(med(rs, lambda r: r.get('redis_publishes_per_signal')), 3)} "
                       f"| {fmt(med(rs, lambda r: (r.get('cluster') or {}).get('redis_deliveries_per_signal')), 3)} "
                       f"| {fmt(None if p99 is None else p99 / 1000, 1)} | {bad} "
                       f"| {sum(1 for r in rs if r.get('pass'))} of {len(rs)} |")
    return out + [""]

lines += mode_table("sat", "One Redis or a three-shard Redis Cluster, per-message saturation")
lines += ["2 nodes: 100 pairs, every sender on node 1 and every receiver on node 2 "
          "(`--one-way`); 4 nodes: pair p from node p to node p + 1 (round robin). "
          "Window 16, 200 B, 10 s after a 2 s warm-up. CPU over the measured window; "
          "publishes (PUBLISH + SPUBLISH over every Redis) over the whole run.", ""]
lines += mode_table("batched", "The same, batched saturation (32 pairs, window 64)")
counts = [v for r in runs if r["load"] in ("sat", "batched")
          for v in (r.get("redis_publishes_per_signal"),
                    (r.get("cluster") or {}).get("redis_deliveries_per_signal")) if v is not None]
if counts:
    ok = all(0.98 <= v <= 1.02 for v in counts)
    lines += [f"Publishes and deliveries per signal in every run above: {min(counts):.3f} to "
              f"{max(counts):.3f} ({'all' if ok else 'NOT all'} within 1 ± 2 %). Publishes "
              "count every PUBLISH and SPUBLISH: the signal's own, and the few that carry "
              "batched delivery confirmations and the nodes' marks; deliveries are the "
              "envelopes the nodes received in the window.", ""]

def paired(load, f):
    by_run = {}
    for r in pick("plain_2", load):
        by_run.setdefault(r["run"], {})["plain"] = f(r)
    for r in pick("tls_2", load):
        by_run.setdefault(r["run"], {})["tls"] = f(r)
    diffs = [v["tls"] - v["plain"] for v in by_run.values()
             if v.get("tls") is not None and v.get("plain") is not None]
    return statistics.median(diffs) if diffs else None

lines += ["## TLS or plain: one Redis, 2 nodes", "",
          "| load | signals/s plain / TLS | CPU µs/signal plain | CPU µs/signal TLS | added by TLS | of it nodes / Redis | net of idle, added | p99 ms plain / TLS |",
          "|---|---|---|---|---|---|---|---|"]
for load, name in (("sat", "saturation"), ("rate5k", "5,000 signals/s")):
    p, t = pick("plain_2", load), pick("tls_2", load)
    if not p or not t:
        continue
    c = lambda r: r.get("cpu_us_per_signal")
    added = paired(load, c)
    base = med(p, c)
    pct = "" if added is None or not base else f" ({added / base * 100:+.0f} %)"
    net = paired(load, lambda r: r.get("cpu_us_per_signal_net"))
    p99 = lambda rs: fmt(med(rs, lambda r: ((r.get("latency") or {}).get("p99_us") or 0) / 1000), 1)
    lines.append(f"| {name} | {fmt(med(p, lambda r: r.get('delivered_per_s')), 0)} / {fmt(med(t, lambda r: r.get('delivered_per_s')), 0)} "
                 f"| {fmt(base)} | {fmt(med(t, c))} | {fmt(added)}{pct} "
                 f"| {fmt(paired(load, lambda r: cpu(r, 'nodes')))} / {fmt(paired(load, lambda r: cpu(r, 'redis')))} "
                 f"| {fmt(net) if load == 'rate5k' else '—'} | {p99(p)} / {p99(t)} |")
lines += ["", "`rediss://` with a CA made by the script (openssl, P-256); the server does not ask "
          "for client certificates. \"Added\" is the median of the per-run differences (TLS minus "
          "the plain run just before it); \"net of idle\" takes each run's 5 s idle baseline "
          "(upkeep, probes) out first.", ""]

if spread:
    lines += ["## Node channels over the three shards", "",
              "| nodes | channels per shard (1 / 2 / 3) |", "|---|---|"]
    ch = spread["channels"]
    for n in (2, 4, 8):
        counts = [sum(1 for c in ch[:n] if c["shard"] == s) for s in (1, 2, 3)]
        lines.append(f"| {n} | {' / '.join(map(str, counts))} |")
    lines += ["", "| channel | slot | shard | subscribers there |", "|---|---|---|---|"]
    for c in ch:
        lines.append(f"| `{c['channel']}` | {c['slot']} | {c['shard']} | {c['subscribers_on_shard']} |")
    lines += ["", f"Channel names are `<prefix>:node:<node id>` (src/redis_names.rs), here prefix "
              f"`{spread['channels'][0]['channel'].split(':')[0]}` and node ids `bench-node-1…8`; "
              "node i of the 2- and 4-node rows is channel i. Other ids land elsewhere.", ""]

open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
