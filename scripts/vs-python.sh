#!/usr/bin/env bash
# The default MNIST run against the Python loop (scripts/python_loop.py), back to back, seed by
# seed (issue 31; BENCHMARKS.md, "The default backend: auto, against the Python loop"):
# evaluations/s over 200 generations and the time until every digit is at >= 99.99%, for
# pareidolia on its default backend (auto), on tract, and the Python loop (numpy + ONNX
# Runtime, 2 intra-op threads). Prints one CSV line per run.
#
#   scripts/vs-python.sh [SEEDS...]        (default seeds: 1 2 3)
#
# Needs the release build and ONNX Runtime (ORT_DYLIB_PATH or the onnxruntime wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("${@:-1 2 3}")
# shellcheck disable=SC2206
seeds=(${seeds[*]})
bin=./target/release/pareidolia
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "runner,seed,generations,evaluations,seconds,evaluations_per_s,target_generation,target_seconds"
summary() { # runner seed folder
    python3 - "$1" "$2" "$3" <<'PY'
import csv, json, sys
runner, seed, run = sys.argv[1:]
s = json.load(open(f"{run}/summary.json"))
rows = list(csv.DictReader(open(f"{run}/history.csv")))
hit = next((r for r in rows if r["at_least_0.9999"] == str(len(s["classes"]))), None)
print(",".join(map(str, [runner, seed, s["generations"], s["evaluations"],
      round(s["wall_time_s"], 3), round(s["evaluations_per_s"]),
      hit["generation"] if hit else "", hit["elapsed_s"] if hit else ""])))
PY
}
for seed in "${seeds[@]}"; do
    for backend in auto tract; do
        $bin run --quiet --seed "$seed" --backend "$backend" --out "$tmp/$backend-$seed" >/dev/null 2>&1
        summary "pareidolia-$backend" "$seed" "$tmp/$backend-$seed"
        $bin run --quiet --seed "$seed" --backend "$backend" --generations 5000 \
            --until 'min>=0.9999' --out "$tmp/$backend-$seed-until" >/dev/null 2>&1
        summary "pareidolia-$backend-until" "$seed" "$tmp/$backend-$seed-until"
    done
    python3 scripts/python_loop.py --seeds "$seed" --threads 2 --generations 200 \
        | grep -v '^#' | tail -n 1 | sed 's/^/python-loop,/' | cut -d, -f1-8
    python3 scripts/python_loop.py --seeds "$seed" --threads 2 --generations 5000 \
        --until 0.9999 --stop-at-target | grep -v '^#' | tail -n 1 \
        | sed 's/^/python-loop-until,/' | cut -d, -f1-8
done
