#!/usr/bin/env bash
# Before/after on this machine: alternates an older build of the node
# (OLD_BIN, labelled OLD) and the one built here (labelled NEW), ROUNDS
# times, each run followed at once by the floor with the same arguments,
# so that every product run has its own floor run to be divided by. The
# machine's speed drifts between minutes; the pairs cancel most of it.
# Appends the raw lines, with a "build" field, to OUT and prints the
# paired ratios per build (bench/ab_summary.py).
#
#   git worktree add /tmp/old <rev> && (cd /tmp/old && cargo build --release -p signal-manager-service)
#   OLD_BIN=$CARGO_TARGET_DIR/release/signal-manager-service OLD=<rev> NEW=$(git rev-parse --short HEAD) \
#       ROUNDS=5 ONLY=relay_sat_200,relay_5k,relay_1k bash bench/ab.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OLD_BIN:?path of the older signal-manager-service build}"
OLD="${OLD:-old}"
NEW="${NEW:-$(git rev-parse --short HEAD)}"
ROUNDS="${ROUNDS:-5}"
ONLY="${ONLY:-relay_sat_200,relay_5k,relay_1k}"
OUT="${OUT:-bench/results/ab-$OLD-$NEW.jsonl}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# One build first, so that no run below compiles.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/signal-manager/target}"
cargo build --release --quiet -p signal-manager-service -p signal-manager-loadgen \
    -p signal-manager-floor
NEW_BIN="$WORK/signal-manager-service-$NEW"
cp "$CARGO_TARGET_DIR/release/signal-manager-service" "$NEW_BIN"
for round in $(seq 1 "$ROUNDS"); do
    for side in old new; do
        if [[ "$side" == old ]]; then bin="$OLD_BIN" label="$OLD"; else bin="$NEW_BIN" label="$NEW"; fi
        echo "round $round/$ROUNDS: $label" >&2
        SERVER_BIN="$bin" RUNS=1 ONLY="$ONLY" RESULTS="$WORK/$side-$round" \
            bash bench/run.sh >/dev/null
        python3 bench/ab_summary.py --tag "$WORK/$side-$round/latest.jsonl" "$label" "$round" \
            >>"$OUT"
    done
done
python3 bench/ab_summary.py "$OUT"
