"""Shared helpers for the GPU benchmarks: a dummy-weight model runner, backend switching, tables."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LLAMA3_8B = str(ROOT / "bench" / "configs" / "llama3-8b")


def make_runner(model_dir: str = LLAMA3_8B, backend: str = "triton", max_total_tokens: int | None = None,
                mem_fraction_static: float = 0.85):
    """A ModelRunner with random (dummy) bf16 weights; CUDA graphs are managed by the caller."""
    from runtime.config import RuntimeConfig
    from runtime.model_runner import ModelRunner

    # SGLC_BENCH_DEVICE=cpu: a smoke run of the script logic on a tiny config (no timings worth reading).
    device = os.environ.get("SGLC_BENCH_DEVICE", "cuda")
    cfg = RuntimeConfig(model_path=model_dir, load_format="dummy", dtype="bfloat16" if device == "cuda" else "float32",
                        device=device,
                        attention_backend=backend, max_total_tokens=max_total_tokens,
                        mem_fraction_static=mem_fraction_static, disable_cuda_graph=True,
                        skip_tokenizer_init=True)
    return ModelRunner(cfg)


def set_backend(runner, name: str) -> None:
    """Point every attention layer of ``runner`` at a fresh backend ``name`` over the same KV pool."""
    from runtime.attention import create_attention_backend

    backend = create_attention_backend(name, runner.kv_pool, num_heads=runner.hf_config.num_attention_heads)
    runner.attn_backend = backend
    runner.backend_name = name
    for mod in runner.model.modules():
        if hasattr(mod, "backend") and hasattr(mod, "layer"):
            mod.backend = backend


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_info() -> dict:
    import torch

    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = "-"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"gpu": gpu, "torch": torch.__version__, "triton": tv,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit(), "knobs": knobs()}


def knobs() -> str:
    """The ``SGLC_*`` settings of this run (runtime/envs.py; ``SGLC_COMMIT`` aside), e.g. the kernel variants an
    A/B compares: ``SGLC_EXTEND_TILES=grid SGLC_FP8_DOT_DTYPE=bf16``, or "defaults"."""
    set_ = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("SGLC_") and k != "SGLC_COMMIT")
    return " ".join(set_) or "defaults"


def git_commit() -> str:
    """``SGLC_COMMIT`` when set (a device call's copy of the tree may carry a stale ``.git``: pass the commit in
    the command), else the checkout's HEAD."""
    if os.environ.get("SGLC_COMMIT"):
        return os.environ["SGLC_COMMIT"][:10]
    head = ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref:"):
            return (ROOT / ".git" / ref[5:]).read_text().strip()[:10]
        return ref[:10]
    except OSError:
        return os.environ.get("SGLC_COMMIT", "unknown")


def wrap_methods(targets, wrap):
    """Replace the method ``name`` of each ``(obj, name)`` in ``targets`` that has one by ``wrap(name, method)``
    (timing, profiler ranges); returns a function that puts the originals back."""
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets if hasattr(obj, name)]
    for obj, name, fn in saved:
        setattr(obj, name, wrap(name, fn))

    def restore() -> None:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    return restore


def print_table(rows: list[dict], title: str) -> None:
    """A fixed-width table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return
    keys = list(rows[0].keys())
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print(f"\n## {title}")
    print(" | ".join(k.ljust(w) for k, w in zip(keys, widths)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths)))
    sys.stdout.flush()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def save_json(obj, name: str) -> None:
    out = os.environ.get("OUT") or os.environ.get("SGLC_BENCH_OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / name).write_text(json.dumps(obj, indent=1))


def make_engine(backend: str = "triton", context_length: int = 2048, radix: bool = True, **kw):
    """An Engine over the dummy Llama-3-8B (input ids only, no tokenizer)."""
    from runtime.engine import Engine

    device = os.environ.get("SGLC_BENCH_DEVICE", "cuda")
    model = kw.pop("model_path", LLAMA3_8B)
    return Engine(model_path=model, load_format="dummy", skip_tokenizer_init=True,
                  dtype="bfloat16" if device == "cuda" else "float32", device=device,
                  attention_backend=backend, context_length=context_length,
                  disable_radix_cache=not radix, **kw)


def token_prompt(rng, n: int, vocab: int = 128256) -> list[int]:
    """Random token ids exactly as the vLLM peer scripts draw them (same generator, same calls)."""
    lo = min(1000, vocab // 4)
    return rng.integers(lo, vocab - lo, n).tolist()
