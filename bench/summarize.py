"""Turns the loadgen's JSON lines into the results table (medians of runs).

usage: python3 bench/summarize.py RAW.jsonl OUT.md RUNS
"""

import json
import os
import statistics
import sys
from collections import defaultdict


def get(doc, path):
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def median(runs, path):
    values = [get(r, path) for r in runs]
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def total(runs, path):
    values = [get(r, path) for r in runs]
    return sum(v for v in values if isinstance(v, (int, float)))


def fmt(value, unit="", digits=0):
    if value is None:
        return "n/a"
    if digits == 0:
        return f"{value:,.0f}{unit}"
    return f"{value:,.{digits}f}{unit}"


def verdict(value, target, higher_is_better):
    if value is None or target is None:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Linux {os.uname().release}"


def main():
    raw, out, runs_wanted = sys.argv[1], sys.argv[2], sys.argv[3]
    by_label = defaultdict(list)
    with open(raw, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                doc = json.loads(line)
                by_label[doc.get("label") or doc.get("scenario")].append(doc)

    rows = []

    def row(label, what, path, unit="", digits=0, target=None, higher=True, scale=1.0):
        runs = by_label.get(label)
        if not runs:
            return
        m = median(runs, path)
        if m is not None:
            m = m * scale
        target_text = ""
        if target is not None:
            target_text = ("≥ " if higher else "≤ ") + fmt(target, unit, digits)
        rows.append(
            (label, what, fmt(m, unit, digits), target_text, verdict(m, target, higher), len(runs))
        )

    def integrity(label):
        runs = by_label.get(label)
        if not runs:
            return
        bad = sum(total(runs, k) for k in ("lost", "duplicates", "reordered", "errors"))
        passed = sum(1 for r in runs if r.get("pass"))
        rows.append(
            (
                label,
                "lost + duplicated + reordered + errors (all runs)",
                f"{bad:.0f}",
                "= 0",
                "met" if bad == 0 and passed == len(runs) else "**missed**",
                len(runs),
            )
        )

    # Headline: one WebSocket message per signal (per-message mode), 100
    # pairs, senders on node 1, receivers on node 2.
    row("relay_sat_200", "delivered signals/s, 200 B, saturation, per-message", "delivered_per_s", target=60000)
    row("relay_sat_200", "server CPU µs per signal (2 nodes + Redis)", "cpu_us_per_signal", " µs", 1, 15, False)
    row("relay_sat_200", "one-way p99 at saturation", "latency.p99_us", " ms", 2, None, scale=1e-3)
    integrity("relay_sat_200")
    row("relay_sat_2000", "delivered signals/s, 2,000 B, saturation, per-message", "delivered_per_s")
    row("relay_sat_2000", "server CPU µs per signal", "cpu_us_per_signal", " µs", 1)
    integrity("relay_sat_2000")
    row("relay_5k", "delivered signals/s at 5,000/s offered", "delivered_per_s")
    row("relay_5k", "one-way p50 at 5,000/s", "latency.p50_us", " ms", 3, None, scale=1e-3)
    row("relay_5k", "one-way p99 at 5,000/s", "latency.p99_us", " ms", 3, 2.0, False, scale=1e-3)
    row("relay_5k", "one-way p99.9 at 5,000/s", "latency.p999_us", " ms", 3, 5.0, False, scale=1e-3)
    row("relay_5k", "one-way max at 5,000/s", "latency.max_us", " ms", 3, None, scale=1e-3)
    row("relay_5k", "server CPU µs per signal at 5,000/s", "cpu_us_per_signal", " µs", 1, 30, False)
    row("relay_5k", "same, net of the idle background", "cpu_us_per_signal_net", " µs", 1, 30, False)
    integrity("relay_5k")
    row("relay_1k", "one-way p99 at 1,000/s", "latency.p99_us", " ms", 3, None, scale=1e-3)
    row("relay_1k", "server CPU µs per signal at 1,000/s", "cpu_us_per_signal", " µs", 1)
    row("relay_1k", "same, net of the idle background", "cpu_us_per_signal_net", " µs", 1)
    integrity("relay_1k")
    # Secondary: the earlier method, a window of frames per write.
    row("relay_sat_200_batched", "delivered signals/s, 200 B, saturation, batched writes", "delivered_per_s")
    row("relay_sat_200_batched", "server CPU µs per signal, batched writes", "cpu_us_per_signal", " µs", 1)
    integrity("relay_sat_200_batched")
    row("relay_5k_batched", "one-way p99 at 5,000/s, batched writes", "latency.p99_us", " ms", 3, None, scale=1e-3)
    row("relay_5k_batched", "server CPU µs per signal at 5,000/s, batched writes", "cpu_us_per_signal", " µs", 1)
    integrity("relay_5k_batched")
    # The floor (bench/floor), same scenarios and arguments.
    for name in ("sat_200", "sat_2000", "5k", "1k", "sat_200_batched", "5k_batched"):
        label = f"floor_{name}"
        if name.startswith("sat"):
            row(label, "floor: delivered signals/s", "delivered_per_s")
        else:
            row(label, "floor: one-way p50", "latency.p50_us", " ms", 3, None, scale=1e-3)
            row(label, "floor: one-way p99", "latency.p99_us", " ms", 3, None, scale=1e-3)
        row(label, "floor: server CPU µs per signal", "cpu_us_per_signal", " µs", 1)
        integrity(label)
    row("connect", "connections/s, one node (JWT + presence write)", "connections_per_s_per_node", target=5000)
    row("connect", "CONNECT → ACK p50", "connect_ack_latency.p50_us", " ms", 2, None, scale=1e-3)
    row("connect", "CONNECT → ACK p99", "connect_ack_latency.p99_us", " ms", 2, None, scale=1e-3)
    row("connect", "server CPU µs per connection", "cpu_us_per_connection", " µs", 0)
    row("connect_2", "connections/s per node, two nodes", "connections_per_s_per_node", target=5000)
    row("connect_2", "CONNECT → ACK p99, two nodes", "connect_ack_latency.p99_us", " ms", 2, None, scale=1e-3)
    row("idle", "node RSS per idle authenticated connection (19,000 on one node)", "bytes_per_connection_max", " KiB", 2, 8.0, False, scale=1 / 1024)
    row("idle", "connections held", "held", target=19000)
    row("storm", "19,000 clients all reconnected after", "all_reconnected_s", " s", 2, 10.0, False)
    row("storm", "per-client reconnect p99", "reconnect_time.p99_us", " s", 2, None, scale=1e-6)
    row("storm", "clients reconnected", "reconnected", target=19000)
    # 19,000 sessions dropped at once, resumable for the window, 5,000 holding a signal.
    row("resumable", "node RSS per resumable session over baseline (peak while parked)", "bytes_per_resumable_over_baseline", " KiB", 2, None, scale=1 / 1024)
    row("resumable", "same, net of the held frames (target: the idle session's 6 KiB)", "bytes_per_resumable_net_of_held", " KiB", 2, 6.0, False, scale=1 / 1024)
    row("resumable", "per resumable session over the connected state", "bytes_per_resumable_over_connected", " KiB", 2, None, scale=1 / 1024)
    row("resumable", "RSS after the window, per session over baseline", "bytes_per_session_after_window", " KiB", 2, None, scale=1 / 1024)
    row("resumable", "RSS growth after the window, per further cycle", "rss_after_growth_per_cycle_bytes", " KiB", 1, None, scale=1 / 1024)
    row("resumable", "held signals answered PEER_NOT_FOUND after the window", "held_answered_peer_not_found", target=10000)
    for n in (2, 4, 8):
        label = f"scale_{n}"
        # Counters are read a moment apart from the delivered count: allow 1 %.
        row(label, f"{n} nodes: Redis deliveries per signal (target 1 ± 1 %)", "cluster.redis_deliveries_per_signal", "", 3, 1.01, False)
        row(label, f"{n} nodes: Redis PUBLISH per signal", "cluster.redis_publish_per_signal", "", 3)
        row(label, f"{n} nodes: Redis commands per signal", "cluster.redis_commands_per_signal", "", 3)
        row(label, f"{n} nodes: subscribers per node channel (max)", "pubsub.subscribers_per_channel_max", "", 0)
        row(label, f"{n} nodes: server CPU µs per signal at 5,000/s", "cpu_us_per_signal", " µs", 1)
        row(label, f"{n} nodes: same, net of the idle background", "cpu_us_per_signal_net", " µs", 1)
        row(label, f"{n} nodes: idle background, cores", "baseline_server_cores", "", 3)
        row(label, f"{n} nodes: one-way p99 at 5,000/s", "latency.p99_us", " ms", 3, None, scale=1e-3)
        integrity(label)

    # Each headline figure beside the floor's and their ratio.
    ratios = []

    def ratio(what, label, path, unit="", digits=0, scale=1.0):
        product = median(by_label.get(label, []), path)
        floor = median(by_label.get("floor_" + label[len("relay_"):], []), path)
        if product is None:
            return
        product *= scale
        floor = floor * scale if floor is not None else None
        r = f"{product / floor:.2f}×" if floor else "n/a"
        # Each product run beside the floor run right after it: the machine's
        # speed drifts between minutes, so the pairs' ratios are steadier
        # than the ratio of the medians.
        pairs = [
            (get(p, path), get(f, path))
            for p, f in zip(by_label.get(label, []), by_label.get("floor_" + label[len("relay_"):], []))
        ]
        paired = [a / b for a, b in pairs if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b]
        if paired:
            pr = f"{statistics.median(paired):.2f}× ({min(paired):.2f}–{max(paired):.2f})"
        else:
            pr = "n/a"
        ratios.append((what, fmt(product, unit, digits), fmt(floor, unit, digits), r, pr))

    ratio("saturation, 200 B, per-message (signals/s)", "relay_sat_200", "delivered_per_s")
    ratio("saturation, 2,000 B, per-message (signals/s)", "relay_sat_2000", "delivered_per_s")
    ratio("one-way p50 at 5,000/s", "relay_5k", "latency.p50_us", " ms", 3, 1e-3)
    ratio("one-way p99 at 5,000/s", "relay_5k", "latency.p99_us", " ms", 3, 1e-3)
    ratio("one-way p99 at 1,000/s", "relay_1k", "latency.p99_us", " ms", 3, 1e-3)
    ratio("server CPU µs per signal, saturated", "relay_sat_200", "cpu_us_per_signal", " µs", 1)
    ratio("server CPU µs per signal at 5,000/s", "relay_5k", "cpu_us_per_signal", " µs", 1)
    ratio("server CPU µs per signal at 1,000/s", "relay_1k", "cpu_us_per_signal", " µs", 1)
    ratio("batched writes: saturation, 200 B (signals/s)", "relay_sat_200_batched", "delivered_per_s")
    ratio("batched writes: server CPU µs per signal at 5,000/s", "relay_5k_batched", "cpu_us_per_signal", " µs", 1)

    note = os.environ.get("BENCH_NOTE", "").strip()
    lines = [
        "# Benchmark results",
        "",
        f"Medians of {runs_wanted} runs per row (`runs` says how many were recorded). "
        f"Machine: {machine()}; load generator, nodes and Redis share it "
        f"(load average {os.getloadavg()[0]:.1f} when the table was written). "
        "Absolute figures move between machines; compare the ratios to the floor, taken minutes apart. "
        "Produced by `bench/run.sh` at revision "
        f"`{os.environ.get('REVISION', 'unknown')}`; raw JSON lines in `latest.jsonl`.",
        "",
    ]
    if note:
        lines += [f"**Conditions:** {note}", ""]
    if ratios:
        lines += [
            "## Against the floor",
            "",
            "The product and the floor (`bench/floor`: WebSocket, route on the target, pipelined "
            "PUBLISH, nothing else) under the same load generator and arguments, one right after "
            "the other. Throughput: higher is better, so a ratio below 1 is the product's cost; "
            "latency and CPU: a ratio above 1 is.",
            "",
            "The last column is the median of each run's ratio to the floor run right after it "
            "(its range in brackets): the machine's speed drifts between minutes, so these pairs "
            "are steadier than the ratio of the two medians beside them.",
            "",
            "| figure | product | floor | product ÷ floor | paired runs' ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {w} | {p} | {f} | {r} | {pr} |" for w, p, f, r, pr in ratios]
        lines.append("")
    lines += [
        "## All figures",
        "",
        "| scenario | metric | median | target | verdict | runs |",
        "|---|---|---:|---|---|---:|",
    ]
    for label, what, value, target, ok, n in rows:
        lines.append(f"| {label} | {what} | {value} | {target} | {ok} | {n} |")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
