#!/usr/bin/env bash
# The GPU test stage: TEST_SHARDS (default 4) pytest processes side by side, each keeping every N-th test
# (SGLC_TEST_SHARD, tests/gpu/conftest.py). The kernel tests spend most of their time compiling Triton kernels
# on one CPU core each; the engine tests set small KV pools, so the shards share the GPU. Logs: $OUT/tests_I.log.
#   bash scripts/gpu_tests.sh [PYTEST ARGS ...]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:-out/gpu_check}
n=${TEST_SHARDS:-4}
mkdir -p "$OUT"
pids=()
for ((i = 0; i < n; i++)); do
  SGLC_TEST_SHARD=$i/$n $PY -m pytest -q -m gpu tests/gpu -p no:cacheprovider --durations=5 "$@" \
    > "$OUT/tests_$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for ((i = 0; i < n; i++)); do
  wait "${pids[$i]}" || rc=1
  echo "--- shard $i/$n"
  tail -n 12 "$OUT/tests_$i.log"
done
exit $rc
