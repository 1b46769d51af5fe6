#!/usr/bin/env bash
# Issue 15, item 2: evaluations/s of the default MNIST run with 1 and 2 inference workers (and
# the default split), on tract and ort-cpu, against the all-cores inference ceiling
# (`pareidolia bench --workers N`), in alternating rounds so that drift in the machine's speed
# hits every variant alike. Optionally the ImageNet CPPN config on ort-cpu.
#
#   scripts/bench-workers.sh [ROUNDS] [BINARY...]
#
# ROUNDS defaults to 3; BINARY defaults to target/release/pareidolia (give two to compare
# builds back to back). IMAGENET=1 adds `--config configs/imagenet-cppn.toml --generations 2`
# (IMAGENET_GENERATIONS=N for another count). LAGS="0 1" runs every run once per lag
# (`--lag L`, left out for 0 so that older binaries run too); the default is "0".
# Prints one line per run (binary, backend, workers, evaluations/s) and the medians. Needs
# ORT_DYLIB_PATH (or the Python onnxruntime package) for ort-cpu.
set -euo pipefail
# (a binary finds the plugins beside it: keep compared builds in target/release)
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
binaries=("$@")
[ ${#binaries[@]} -eq 0 ] && binaries=(target/release/pareidolia)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
results="$out/results.txt"
echo "uptime before: $(uptime)"
evals_per_s() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['evaluations_per_s']))" "$1/summary.json"; }
for round in $(seq "$rounds"); do
    for bin in "${binaries[@]}"; do
        for backend in tract ort-cpu; do
            for workers in 1 2 default; do
                for lag in ${LAGS:-0}; do
                    flags=(--backend "$backend")
                    [ "$workers" != default ] && flags+=(--workers "$workers" --mutators 1)
                    [ "$lag" != 0 ] && flags+=(--lag "$lag")
                    rm -rf "$out/run"
                    "$bin" run --quiet --out "$out/run" "${flags[@]}" >/dev/null 2>&1
                    echo "$bin mnist $backend $workers lag$lag $(evals_per_s "$out/run")" | tee -a "$results"
                done
            done
            for workers in 1 2; do
                rate=$("$bin" bench --backend "$backend" --batch 20 --seconds 2 --workers "$workers" 2>/dev/null |
                    sed -n 's/.*batch *20: *\([0-9]*\) images\/s.*/\1/p')
                echo "$bin ceiling $backend $workers $rate" | tee -a "$results"
            done
        done
        if [ "${IMAGENET:-0}" = 1 ]; then
            for workers in 1 2; do
                for lag in ${LAGS:-0}; do
                    flags=()
                    [ "$lag" != 0 ] && flags+=(--lag "$lag")
                    rm -rf "$out/run"
                    "$bin" run --quiet --out "$out/run" --config configs/imagenet-cppn.toml \
                        --backend ort-cpu --generations "${IMAGENET_GENERATIONS:-2}" \
                        --workers "$workers" --mutators 1 "${flags[@]}" >/dev/null 2>&1
                    echo "$bin imagenet-cppn ort-cpu $workers lag$lag $(evals_per_s "$out/run")" | tee -a "$results"
                done
            done
        fi
    done
done
echo "uptime after: $(uptime)"
echo "medians over $rounds rounds:"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    *key, value = line.split()
    rows.setdefault(tuple(key), []).append(float(value))
for key, values in rows.items():
    print(" ".join(key), round(statistics.median(values)), "from", [round(v) for v in values])
PY
