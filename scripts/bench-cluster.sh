#!/usr/bin/env bash
# 1 local evaluator vs 1 local + 1 remote evaluator process, default MNIST config, tract.
mkdir -p "${BENCH_DIR:-/tmp/bench}"
set -u
cd "$(dirname "$0")/.."
B=target/release/pareidolia
G=${G:-150}
rm -rf ${BENCH_DIR:-/tmp/bench}/local ${BENCH_DIR:-/tmp/bench}/remote
/usr/bin/time -f "local wall %e s" $B run --out ${BENCH_DIR:-/tmp/bench}/local --generations $G --seed 3 --workers 1 --mutators 1 --backend tract --quiet 2>&1 | tail -1
python3 -c "import json;s=json.load(open('${BENCH_DIR:-/tmp/bench}/local/summary.json'));print('local evals',s['evaluations'],'evals/s',s.get('evaluations_per_s'))"
$B daemon --out ${BENCH_DIR:-/tmp/bench}/remote --generations $G --seed 3 --workers 1 --mutators 1 --backend tract --cluster-listen 127.0.0.1:7947 --wait-workers 1 2>${BENCH_DIR:-/tmp/bench}/daemon.log &
D=$!
sleep 1
$B worker --join 127.0.0.1:7947 --role evaluator --backend tract 2>${BENCH_DIR:-/tmp/bench}/worker.log &
W=$!
last=""
while kill -0 $D 2>/dev/null; do
  x=$(ss -tin state established '( sport = :7947 )' 2>/dev/null | grep -o 'bytes_sent:[0-9]*\|bytes_received:[0-9]*' | tr '\n' ' ')
  [ -n "$x" ] && last=$x
  sleep 0.2
done
wait $W
echo "daemon side of the worker connection: $last"
python3 -c "import json;s=json.load(open('${BENCH_DIR:-/tmp/bench}/remote/summary.json'));print('remote evals',s['evaluations'],'evals/s',s.get('evaluations_per_s'))"
grep "worker done" ${BENCH_DIR:-/tmp/bench}/worker.log
