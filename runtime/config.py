"""Runtime configuration: one frozen dataclass; ``resolve`` turns "auto" values into concrete ones."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import EngineError, EngineUnsupported


@dataclass(frozen=True)
class RuntimeConfig:
    model_path: str | None = None          # None: the embedded SmolLM2-135M-Instruct
    tokenizer_path: str | None = None
    load_format: str = "auto"              # "auto" | "dummy" (random weights of the right shapes)
    dtype: str = "auto"                    # "auto" | "float32" | "bfloat16" | "float16"
    kv_cache_dtype: str = "auto"           # "auto" (the model's dtype) | "fp8_e4m3" (half the bytes; scale 1, saturated)
    device: str = "auto"                   # "auto" | "cpu" | "cuda" | "cuda:N"
    context_length: int | None = None
    # KV memory: GPU from a fraction of free memory, CPU from a token budget.
    mem_fraction_static: float = 0.9
    max_total_tokens: int | None = None
    # Scheduling.
    max_running_requests: int | None = None
    chunked_prefill_size: int | None = None
    max_prefill_tokens: int | None = None
    schedule_policy: str = "lpm"           # "lpm" (longest cached prefix first) | "fcfs"
    disable_radix_cache: bool = False
    overlap_schedule: str = "auto"         # "auto" (on for CUDA) | "on" | "off": queue step N+1 before N ends
    mixed_chunk: str = "auto"              # "auto" (on for CUDA) | "on" | "off": decode rows ride in prefill passes
    # Kernels.
    attention_backend: str = "auto"        # "auto" | "torch" | "triton" | "flashinfer"
    disable_cuda_graph: bool = False
    cuda_graph_max_bs: int | None = None   # largest decode batch captured (None: max_running_requests, at most 1,024)
    disable_cascade_attention: bool = False  # decode rows sharing a cached prefix read it once per chunk
    disable_warmup: bool = False           # GPU: no start-up passes of the largest prefill (ModelRunner.warmup)
    # Features.
    skip_tokenizer_init: bool = False
    disable_jump_forward: bool = False
    random_seed: int = 0
    worker_mode: str = "process"           # "process" | "thread"
    num_threads: int | None = None         # CPU threads of the worker (None: torch's default, all cores)
    log_level: str = "warning"
    tp_size: int = 1
    dp_size: int = 1
    quantization: str | None = None
    chat_template: str | None = None

    @classmethod
    def from_kwargs(cls, **kw: Any) -> RuntimeConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise EngineError(f"unknown runtime option(s) {unknown}; known options: {sorted(names)}")
        cfg = cls(**kw)
        cfg.verify()
        return cfg

    def verify(self) -> None:
        if self.tp_size != 1 or self.dp_size != 1:
            raise EngineUnsupported("tensor/data parallelism (tp_size/dp_size > 1) is not implemented yet")
        if self.quantization:
            raise EngineUnsupported(f"quantization={self.quantization!r} is not implemented yet")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise EngineError(f"dtype must be auto/float32/bfloat16/float16, got {self.dtype!r}")
        if self.kv_cache_dtype not in ("auto", "fp8_e4m3"):
            raise EngineError(f"kv_cache_dtype must be 'auto' or 'fp8_e4m3', got {self.kv_cache_dtype!r}")
        if self.kv_cache_dtype != "auto" and self.attention_backend == "flashinfer":
            raise EngineUnsupported("kv_cache_dtype='fp8_e4m3' with the FlashInfer backend is not implemented; "
                                    "use attention_backend='triton' (or 'torch')")
        if self.load_format not in ("auto", "dummy"):
            raise EngineError(f"load_format must be 'auto' or 'dummy', got {self.load_format!r}")
        if self.schedule_policy not in ("lpm", "fcfs"):
            raise EngineError(f"schedule_policy must be 'lpm' or 'fcfs', got {self.schedule_policy!r}")
        if self.overlap_schedule not in ("auto", "on", "off"):
            raise EngineError(f"overlap_schedule must be 'auto', 'on' or 'off', got {self.overlap_schedule!r}")
        if self.mixed_chunk not in ("auto", "on", "off"):
            raise EngineError(f"mixed_chunk must be 'auto', 'on' or 'off', got {self.mixed_chunk!r}")
        if self.worker_mode not in ("process", "thread"):
            raise EngineError(f"worker_mode must be 'process' or 'thread', got {self.worker_mode!r}")
        if not 0 < self.mem_fraction_static < 1:
            raise EngineError(f"mem_fraction_static must be in (0, 1), got {self.mem_fraction_static}")
        for name in ("max_total_tokens", "max_running_requests", "chunked_prefill_size", "context_length",
                     "cuda_graph_max_bs"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise EngineError(f"{name} must be positive, got {v}")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device={device!r} but CUDA is not available here; use device='cpu'")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # NOTE: this CPU class has no bf16 units (bf16 matmuls run at half fp32 speed): fp32 on CPU.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def use_overlap(cfg: RuntimeConfig, device: str) -> bool:
    """Overlap scheduling (runtime/scheduler/overlap.py): on by default where the model runs asynchronously."""
    return cfg.overlap_schedule == "on" or (cfg.overlap_schedule == "auto" and device.startswith("cuda"))


def use_mixed_chunk(cfg: RuntimeConfig, device: str) -> bool:
    """Mixed batches (running requests' decode rows in a prefill pass): on by default on the GPU, where the
    pass reads the weights once for both; on CPU the torch backend runs each row's attention separately."""
    return cfg.mixed_chunk == "on" or (cfg.mixed_chunk == "auto" and device.startswith("cuda"))


def scheduler_defaults(cfg: RuntimeConfig, device: str, pool_tokens: int | None = None) -> dict[str, int]:
    """Defaults that depend on the device and the KV pool's size (pure function of its arguments)."""
    gpu = device.startswith("cuda")
    return {
        "max_running_requests": cfg.max_running_requests or (gpu_max_running(pool_tokens) if gpu else 128),
        "chunked_prefill_size": cfg.chunked_prefill_size or (8192 if gpu else 1024),
        "max_prefill_tokens": cfg.max_prefill_tokens or (16384 if gpu else 2048),
    }


# NOTE: 1,024 running requests where the pool holds ~768 tokens (a prompt and its output) for each, else 512.
# Session 10, H100, Llama-3-8B offline: the fp8 pool (888k tokens) ran 8,804 -> 9,244 output tok/s at 1,024
# (decode batch 403 -> 665); the bf16 pool (444k) fell 8,718 -> 8,431 at 1,024 (81 retractions): 512 stays.
RUNNING_TOKENS_PER_REQUEST = 768


def gpu_max_running(pool_tokens: int | None) -> int:
    """The GPU's default ``max_running_requests`` for a KV pool of ``pool_tokens`` (None: not known yet)."""
    if not pool_tokens:
        return 512
    fit = pool_tokens // RUNNING_TOKENS_PER_REQUEST
    return 1024 if fit >= 1024 else 512


def cuda_graph_max_bs(cfg: RuntimeConfig, max_running: int) -> int:
    """The largest decode batch captured in a CUDA graph; larger batches run eagerly. Default: the running cap,
    at most 1,024 (``default_batch_sizes`` ends there). An eager pass of the 8B model launches ~400 kernels, as
    long on the host as the GPU takes to run them: session 11 (H100, fp8 pool, running cap 1,024, decode batches
    of ~560-665 rows) measured graphs up to 1,024 against up to 512 at 9,970 -> 10,266 offline output tok/s."""
    return min(cfg.cuda_graph_max_bs or 1024, max_running)
