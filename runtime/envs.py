"""Every environment variable sglc reads, in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Env:
    cache_dir: str = os.environ.get("SGLC_CACHE_DIR", "~/.cache/sglc")
    dump_ir: bool = os.environ.get("SGLC_DUMP_IR", "") not in ("", "0")
    log_level: str = os.environ.get("SGLC_LOG_LEVEL", "WARNING")
    # the worker process moves its start-up objects out of the garbage collector's scans (0: don't)
    gc_freeze: bool = os.environ.get("SGLC_GC_FREEZE", "1") not in ("", "0")
    # overlap scheduling also launches the next batch before an in-flight *prefill* is applied (0: it waits)
    overlap_prefill: bool = os.environ.get("SGLC_OVERLAP_PREFILL", "1") not in ("", "0")
    # one-row linear layers (batch-1 decode) use the Triton GEMV on CUDA (0: cuBLAS for every shape)
    triton_gemv: bool = os.environ.get("SGLC_GEMV", "1") not in ("", "0")


ENV = Env()
