#!/usr/bin/env bash
# All GPU checks and benchmarks in one command; prints a table per stage (and writes logs/JSON to $OUT).
#   bash scripts/gpu_check.sh [STAGE ...]   STAGE: tests kernels gemv latency prefill offline prefix fp8 flashinfer setup
#                                           (default: all but fp8, flashinfer and setup)
# flashinfer: the FlashInfer GPU tests alone; setup: nothing but the FlashInfer install below (a call that only carries
# the first wheel folder, .fi, before the call that carries .fi2).
# STAGE_TIMEOUT=SECONDS bounds each stage (its log so far stays in $OUT): a device call that hits its own limit
# returns only the last lines printed.
# FlashInfer is optional: wheels in /tmp/fiw (or .fi/ and .fi2/), installed to /tmp/fisite; a compiled
# kernel cache in .fi*/fi_cache.tgz.* (a gzip'd tar in 15 MB parts: a device call returns files of 16 MiB at most;
# parts may come over several calls) is unpacked to skip its first-use JIT (see docs/gpu.md).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
PY=${PY:-python3}
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests kernels gemv latency prefill offline prefix)

# -- FlashInfer (optional) ------------------------------------------------------------------------
mkdir -p /tmp/fiw
for d in .fi .fi2; do [ -d "$d" ] && cp -n "$d"/*.whl /tmp/fiw/ 2>/dev/null; done
if [ ! -f /tmp/fisite/.ok ] && [ "$(ls /tmp/fiw/*.whl 2>/dev/null | wc -l)" -ge 3 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/fisite /tmp/fiw/*.whl && touch /tmp/fisite/.ok
fi
[ -f /tmp/fisite/.ok ] && export PYTHONPATH=/tmp/fisite${PYTHONPATH:+:$PYTHONPATH}
# the kernel cache's parts may come over several calls (any .fi* folder): unpacked once they are all here
mkdir -p /tmp/fic
for f in .fi*/fi_cache.tgz.*; do [ -f "$f" ] && cp -n "$f" /tmp/fic/; done
if [ ! -d ~/.cache/flashinfer ] && [ -n "$(ls /tmp/fic/fi_cache.tgz.* 2>/dev/null)" ] &&
   cat /tmp/fic/fi_cache.tgz.* | gzip -t 2>/dev/null; then
  mkdir -p ~/.cache && cat /tmp/fic/fi_cache.tgz.* | tar -xzf - -C ~/.cache && touch /tmp/fic/.saved &&
    echo "# flashinfer kernel cache unpacked"
fi
$PY - <<'EOF'
import torch, triton
print(f"# {torch.cuda.get_device_name(0)}  torch {torch.__version__}  triton {triton.__version__}")
try:
    import flashinfer; print(f"# flashinfer {flashinfer.__version__}")
except Exception as e:
    print(f"# flashinfer unavailable: {type(e).__name__}")
EOF

status=0
run() {  # run NAME CMD...: tee the log into $OUT, remember failures
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  if [ -n "${STAGE_TIMEOUT:-}" ]; then
    timeout "$STAGE_TIMEOUT" "$@" 2>&1 | tee "$OUT/$name.log"
  else
    "$@" 2>&1 | tee "$OUT/$name.log"
  fi
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc in $((SECONDS - t0))s"
  [ "$rc" -ne 0 ] && status=1
  return 0
}

for s in "${stages[@]}"; do
  case $s in
    tests)   run tests env PY="$PY" OUT="$OUT" bash scripts/gpu_tests.sh ;;
    kernels) run kernels $PY bench/bench_kernels.py ${KERNEL_ARGS:-} ;;
    gemv)    run gemv $PY bench/bench_gemv.py ${GEMV_ARGS:-} ;;
    latency) run latency $PY bench/bench_latency.py --batch 1,32 --input-len 256 --output-len 32 \
                 --backends ${LAT_BACKENDS:-triton,flashinfer} --graph ${LAT_GRAPH:-both} ;;
    prefill) run prefill $PY bench/bench_latency.py --batch 8 --input-len 1024 --output-len 1 \
                 --backends triton --graph off --json bench_prefill.json ;;
    offline) run offline $PY bench/bench_offline_gpu.py ${OFFLINE_ARGS:-} ;;
    prefix)  run prefix $PY bench/bench_prefix.py ${PREFIX_ARGS:-} ;;
    flashinfer) run fi_tests $PY -m pytest -q -m gpu tests/gpu -k flashinfer -p no:cacheprovider ;;
    setup)   ;;
    fp8)     run fp8_offline $PY bench/bench_offline_gpu.py --kv-cache-dtype fp8_e4m3 ${OFFLINE_ARGS:-}
             run fp8_prefix $PY bench/bench_prefix.py --kv-cache-dtype fp8_e4m3 ${PREFIX_ARGS:-}
             run fp8_tests $PY -m pytest -q -m gpu tests/gpu/test_fp8_kv.py -p no:cacheprovider ;;
    *) echo "unknown stage $s"; status=1 ;;
  esac
done
# the compiled FlashInfer kernels come back in $OUT (to put into .fi2/) when new ones were compiled here
if [ -d ~/.cache/flashinfer ] && { [ ! -f /tmp/fic/.saved ] ||
     [ -n "$(find ~/.cache/flashinfer -newer /tmp/fic/.saved -type f -print -quit)" ]; }; then
  tar -czf - -C ~/.cache flashinfer | split -b 15M - "$OUT/fi_cache.tgz."
  echo "# flashinfer kernel cache: $(du -ch "$OUT"/fi_cache.tgz.* | tail -1 | cut -f1) in $(ls "$OUT"/fi_cache.tgz.* | wc -l) parts (put them into .fi2/ or another .fi* folder)"
  touch /tmp/fic/.saved   # (the state saved: later calls of this sitting re-pack only new kernels)
fi
exit $status
