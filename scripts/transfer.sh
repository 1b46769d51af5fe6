#!/usr/bin/env bash
# The paper's transfer experiment on MNIST (issue 12; PAPER.md section 7): for each encoding
# and seed, evolve against DNN_A (the shipped LeNet), against DNN_B (the LeNet trained from
# another initialisation) and against both at once (ensemble, min); score every run's
# champions on the networks it was not evolved against, and on a third network none of them
# saw (models/lenet-mnist-split3); then scripts/transfer_table.py writes the table.
#
# Usage: scripts/transfer.sh SEEDS GENERATIONS [OUT_DIR]
#   SEEDS        1-5, or 1,3,7
#   GENERATIONS  generations per run
#   OUT_DIR      default runs/transfer-g<GENERATIONS>; <encoding>-<source>-seed-<N>/ per run
#                (its transfer/ folder holds `pareidolia transfer`'s files), table.md
# Environment: PAREIDOLIA (the binary; default target/release/pareidolia), NICE (niceness,
# default 19). A run folder that already has transfer/transfer.csv is not run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
seeds=$1 generations=$2
out=${3:-$root/runs/transfer-g$generations}
bin=${PAREIDOLIA:-$root/target/release/pareidolia}
[ -x "$bin" ] || { echo "transfer: $bin is missing; run cargo build --release --workspace" >&2; exit 2; }
[[ $generations =~ ^[0-9]+$ ]] || { echo "transfer: GENERATIONS must be a number, got $generations" >&2; exit 2; }
expand() {
  local part a b
  for part in ${1//,/ }; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
      a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]}
      seq "$a" "$b"
    elif [[ $part =~ ^[0-9]+$ ]]; then
      echo "$part"
    else
      echo "transfer: bad seed list $1" >&2
      exit 2
    fi
  done
}
a="builtin:lenet-mnist"
b="$root/models/lenet-mnist-seed2/manifest.toml"
held_out="$root/models/lenet-mnist-split3/manifest.toml"
mkdir -p "$out"
for encoding in direct cppn; do
  for seed in $(expand "$seeds"); do
    for source in A B ensemble; do
      case $source in
        A) config=$root/configs/mnist-$encoding.toml targets=("$b" "$held_out") ;;
        B) config=$root/configs/transfer/mnist-$encoding-b.toml targets=("$a" "$held_out") ;;
        ensemble) config=$root/configs/transfer/mnist-$encoding-ensemble.toml targets=("$a" "$b" "$held_out") ;;
      esac
      run=$out/$encoding-$source-seed-$seed
      [ -f "$run/transfer/transfer.csv" ] && continue
      rm -rf "$run"
      nice -n "${NICE:-19}" "$bin" run --quiet --config "$config" --seed "$seed" \
        --generations "$generations" --out "$run" > /dev/null
      args=()
      for t in "${targets[@]}"; do args+=(--model "$t"); done
      nice -n "${NICE:-19}" "$bin" transfer "$run" "${args[@]}" > /dev/null
      echo "$encoding $source seed $seed: done" >&2
    done
  done
done
python3 "$root/scripts/transfer_table.py" "$out" > "$out/table.md"
cat "$out/table.md"
