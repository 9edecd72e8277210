"""Paired ratios of bench/ab.sh's runs: each product run divided by the
floor run right after it, per build and scenario (median, range), and the
medians of the product's own figures.

usage: python3 bench/ab_summary.py AB.jsonl
       python3 bench/ab_summary.py --tag RAW.jsonl BUILD ROUND   (prints RAW's
       lines with "build" and "round" added, for bench/ab.sh)
"""

import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = [json.loads(line) for line in open(path) if line.strip()]
    # (build, round, scenario) -> {"product": doc, "floor": doc}
    pairs = defaultdict(dict)
    builds = []
    for doc in runs:
        label = doc.get("label", "")
        build = doc.get("build", "?")
        if build not in builds:
            builds.append(build)
        side = "floor" if label.startswith("floor_") else "product"
        # run.sh names the pair relay_X and floor_X.
        scenario = label.split("_", 1)[1] if "_" in label else label
        pairs[(build, doc.get("round"), scenario)][side] = doc
    scenarios = sorted({key[2] for key in pairs})
    print("| scenario | build | runs | CPU µs/signal (median) | paired ratio to the floor (median, range) | p99 ms (median) |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in scenarios:
        for build in builds:
            cpu, ratios, p99 = [], [], []
            for (b, _, s), pair in pairs.items():
                if b != build or s != scenario or "product" not in pair:
                    continue
                product = pair["product"]
                cpu.append(product["cpu_us_per_signal"])
                p99.append(product["latency"]["p99_us"] / 1000)
                floor = pair.get("floor")
                if floor and floor.get("cpu_us_per_signal"):
                    ratios.append(product["cpu_us_per_signal"] / floor["cpu_us_per_signal"])
            if not cpu:
                continue
            ratio = (
                f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
                if ratios
                else "n/a"
            )
            print(
                f"| {scenario} | {build} | {len(cpu)} | {statistics.median(cpu):.1f} | {ratio} "
                f"| {statistics.median(p99):.2f} |"
            )


def tag(path, build, round_):
    for line in open(path):
        if line.strip():
            doc = json.loads(line)
            doc["build"] = build
            doc["round"] = int(round_)
            print(json.dumps(doc, sort_keys=True))


if __name__ == "__main__":
    if sys.argv[1] == "--tag":
        tag(*sys.argv[2:5])
    else:
        main(sys.argv[1])
