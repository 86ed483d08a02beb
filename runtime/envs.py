"""Every environment variable sglc reads, in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EngineError


def _get(name: str, default: str) -> str:
    """A variable's value; set but empty (``NAME=``) counts as unset."""
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Env:
    cache_dir: str = os.environ.get("SGLC_CACHE_DIR", "~/.cache/sglc")
    dump_ir: bool = os.environ.get("SGLC_DUMP_IR", "") not in ("", "0")
    log_level: str = os.environ.get("SGLC_LOG_LEVEL", "WARNING")
    # the worker process moves its start-up objects out of the garbage collector's scans (0: don't)
    gc_freeze: bool = os.environ.get("SGLC_GC_FREEZE", "1") not in ("", "0")
    # ... and runs a full collection only after this many collections of the middle generation (Python's own
    # threshold is 10), plus one whenever it runs out of work: a full collection walks every element of every
    # live list (the requests' token and slot lists), 35-70 ms with 1,000 requests in flight (session 11, H100:
    # 132 ms of 1,004 in 30 decode steps). 0: Python's threshold
    gc_full_every: str = _get("SGLC_GC_FULL_EVERY", "1000")
    # overlap scheduling also launches the next batch before an in-flight *prefill* is applied (0: it waits)
    overlap_prefill: bool = os.environ.get("SGLC_OVERLAP_PREFILL", "1") not in ("", "0")
    # one-row linear layers (batch-1 decode) use the Triton GEMV on CUDA (0: cuBLAS for every shape)
    triton_gemv: bool = os.environ.get("SGLC_GEMV", "1") not in ("", "0")
    # the Triton decode kernel's block config, "BLOCK_N,num_warps,num_stages" (empty: the built-in defaults);
    # for measuring a config from ``bench_kernels.py --decode-sweep`` through the engine. It applies to every
    # batch size and to the shared-prefix (cascade) stage's blocks too, and is not checked to compile until used
    decode_config: str = os.environ.get("SGLC_DECODE_CONFIG", "")
    # decode over an fp8 KV pool: "f16" (default) runs the dots in fp16 (one packed conversion per two e4m3
    # values); "bf16" widens K/V to the query's type (session 10, H100: 470 x U[256, 1536] 488 -> 358 us, offline
    # 8,220 -> 8,804 output tok/s; docs/PERFORMANCE.md)
    fp8_dot_dtype: str = _get("SGLC_FP8_DOT_DTYPE", "f16")
    # extend passes take their query tiles longest-first from a host list (runtime/attention/extend_plan.py):
    # "lpt" (default) | "grid" (the (requests, blocks) grid; session 10, H100: the mix of 16 cached prefixes
    # 0.77x -> 0.93x of FlashInfer, every other extend case equal or faster)
    extend_tiles: str = _get("SGLC_EXTEND_TILES", "lpt")
    # the decode kernel's grid: "heads" (default: (KV heads, requests, splits): a request's heads run side by side;
    # see decode_attention_fwd's heads_first) | "rows" ((requests, KV heads, splits); session 11, H200: heads 1-3%
    # faster at 256-665 rows, bf16 and fp8, and 1.8x at 32 rows of 288 tokens in bf16; not yet timed on an H100)
    decode_grid: str = _get("SGLC_DECODE_GRID", "heads")


ENV = Env()


def decode_config(text: str) -> dict:
    """``"BLOCK_N,num_warps,num_stages"`` (``SGLC_DECODE_CONFIG``) as keyword arguments of the decode kernel;
    empty: none (the kernel's defaults)."""
    if not text.strip():
        return {}
    try:
        bn, warps, stages = (int(x) for x in text.split(","))
    except ValueError:
        raise EngineError(f"SGLC_DECODE_CONFIG={text!r}: expected BLOCK_N,num_warps,num_stages, e.g. 64,4,3") from None
    if bn < 16 or bn & (bn - 1) or warps not in (1, 2, 4, 8, 16) or not 1 <= stages <= 8:
        raise EngineError(f"SGLC_DECODE_CONFIG={text!r}: BLOCK_N must be a power of two >= 16, num_warps one "
                          "of 1, 2, 4, 8, 16 and num_stages in 1..8")
    return {"block_n": bn, "num_warps": warps, "num_stages": stages}


def triton_decode_kwargs(env: Env = ENV) -> dict:
    """The Triton decode kernel's keyword arguments the environment sets: ``SGLC_DECODE_CONFIG``,
    ``SGLC_FP8_DOT_DTYPE`` and ``SGLC_DECODE_GRID`` (checked here, where every ``SGLC_*`` value is read)."""
    kw = decode_config(env.decode_config)
    # (only an fp8 pool with 16-bit queries takes fp16 dots)
    kw["fp16_dots"] = _choice("SGLC_FP8_DOT_DTYPE", env.fp8_dot_dtype, ("bf16", "f16")) == "f16"
    kw["heads_first"] = _choice("SGLC_DECODE_GRID", env.decode_grid, ("rows", "heads")) == "heads"
    return kw


def extend_lpt_tiles(env: Env = ENV) -> bool:
    """``SGLC_EXTEND_TILES=lpt`` (default): extend passes take their query tiles longest-first from a host
    list; ``grid``: from the (requests, blocks) grid."""
    return _choice("SGLC_EXTEND_TILES", env.extend_tiles, ("grid", "lpt")) == "lpt"


def gc_full_every(env: Env = ENV) -> int:
    """``SGLC_GC_FULL_EVERY`` as a count (0: Python's own threshold)."""
    try:
        n = int(env.gc_full_every)
    except ValueError:
        n = -1
    if n < 0:
        raise EngineError(f"SGLC_GC_FULL_EVERY={env.gc_full_every!r}: expected a whole number >= 0 (0: Python's "
                          "threshold)")
    return n


def _choice(name: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise EngineError(f"{name}={value!r}: expected {' or '.join(options)}")
    return value
