#!/usr/bin/env bash
# Bounded-memory benchmark (issue 4): runs the MNIST default as a daemon and records its
# resident set size when it passes 10^4, 10^5 and 10^6 evaluations. Not a test.
# Usage: scripts/rss-bench.sh [run-folder]   (needs curl; builds nothing: run cargo build first)
# BACKEND=tract (or ort-cpu, ...) overrides the config's backend; MAX=N adds a fourth sample
# at N evaluations.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)/rss-run}
cfg=$(mktemp --suffix=.toml)
sed 's/^generations = 200/generations = 100000/' configs/mnist-direct.toml > "$cfg"
printf '\n[http]\nlisten = "127.0.0.1:0"\n' >> "$cfg"
log=$(mktemp)
./target/release/pareidolia daemon --config "$cfg" --out "$out" ${BACKEND:+--backend "$BACKEND"} 2> "$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until url=$(grep -o 'http://[0-9.:]*' "$log" | head -1) && [ -n "$url" ]; do sleep 0.2; done
for target in 10000 100000 1000000 ${MAX:-}; do
  while :; do
    evals=$(curl -s "$url/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["evaluations"])' 2>/dev/null || echo 0)
    [ "$evals" -ge "$target" ] && break
    sleep 0.5
  done
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "evaluations=$evals rss_mib=$((rss_kb / 1024)) peak_rss_mib=$((hwm_kb / 1024))"
done
kill -TERM $pid
wait $pid
