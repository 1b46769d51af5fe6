#!/usr/bin/env bash
# Seed sweep (issue 17): runs one experiment config for several seeds and writes the table of
# scripts/sweep_table.py (per seed: classes >= 99.99% at generations 50 and 200, the generation
# at which every class first reaches 99.99%, final median and minimum; then the median and the
# range over seeds). Not a test: what it measures varies with the seed, which is its point.
#
# Usage: scripts/sweep.sh CONFIG SEEDS GENERATIONS [OUT_DIR] [-- EXTRA_RUN_ARGS...]
#   CONFIG       an experiment config (configs/mnist-direct.toml, ...)
#   SEEDS        1-10, or 1,3,7, or 1-5,11
#   GENERATIONS  generations per run (after the initial population)
#   OUT_DIR      default runs/sweep-<config name>-g<GENERATIONS>; one run folder per seed,
#                seed-<N>/, plus table.csv and table.md
#   EXTRA_RUN_ARGS go to `pareidolia run` (e.g. --backend ort-cpu)
# Environment: PAREIDOLIA (the binary; default target/release/pareidolia), MILESTONES
# (generations to report, default "50 200"), THRESHOLD (default 0.9999), NICE (niceness of
# the runs, default 19).
# Runs go one after another. A seed whose run folder already has a summary.json is not run
# again (delete the folder to redo it); the table refuses runs of another length.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 3 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
config=$1 seeds=$2 generations=$3
shift 3
out=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  out=$1
  shift
fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
name=$(basename "$config" .toml)
out=${out:-$root/runs/sweep-$name-g$generations}
bin=${PAREIDOLIA:-$root/target/release/pareidolia}
milestones=${MILESTONES:-50 200}
threshold=${THRESHOLD:-0.9999}
[ -x "$bin" ] || { echo "sweep: $bin is missing; run cargo build --release --workspace" >&2; exit 2; }
[ -f "$config" ] || { echo "sweep: no config file $config" >&2; exit 2; }
[[ $generations =~ ^[0-9]+$ ]] || { echo "sweep: GENERATIONS must be a number, got $generations" >&2; exit 2; }

list=()
IFS=, read -ra parts <<< "$seeds"
for part in "${parts[@]}"; do
  if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
    for ((s = BASH_REMATCH[1]; s <= BASH_REMATCH[2]; s++)); do list+=("$s"); done
  elif [[ $part =~ ^[0-9]+$ ]]; then
    list+=("$part")
  else
    echo "sweep: SEEDS must look like 1-10 or 1,3,7, got $seeds" >&2
    exit 2
  fi
done

mkdir -p "$out"
for seed in "${list[@]}"; do
  run="$out/seed-$seed"
  if [ -f "$run/summary.json" ]; then
    echo "seed $seed: $run already done" >&2
    continue
  fi
  rm -rf "$run.partial"
  nice -n "${NICE:-19}" "$bin" run --quiet --config "$config" --seed "$seed" \
    --generations "$generations" --out "$run.partial" "$@" >&2
  mv "$run.partial" "$run"
  echo "seed $seed: $(tail -n 1 "$run/history.csv")" >&2
done
python3 "$root/scripts/sweep_table.py" "$out" --milestones "${milestones// /,}" --threshold "$threshold"
