"""Attention backends over the token-paged KV pool, behind one registry."""
from __future__ import annotations

import importlib

from ..errors import EngineError
from .base import AttentionBackend, AttentionLayer

# name -> "module:Class" (imported lazily: GPU backends import triton/flashinfer)
BACKENDS: dict[str, str] = {
    "torch": "runtime.attention.torch_native:TorchNativeBackend",
    "triton": "runtime.attention.triton_backend:TritonAttentionBackend",
    "flashinfer": "runtime.attention.flashinfer_backend:FlashInferAttentionBackend",
}


def resolve_backend_name(name: str, device: str) -> str:
    if name != "auto":
        return name
    return "triton" if device.startswith("cuda") else "torch"


def create_attention_backend(name: str, kv_pool, **kwargs) -> AttentionBackend:
    if name not in BACKENDS:
        raise EngineError(f"unknown attention backend {name!r}; choose one of {sorted(BACKENDS)}")
    mod, cls = BACKENDS[name].split(":")
    try:
        klass = getattr(importlib.import_module(mod), cls)
    except ImportError as e:
        raise EngineError(f"attention backend {name!r} is unavailable here: {e}") from e
    return klass(kv_pool, **kwargs)


__all__ = ["BACKENDS", "AttentionBackend", "AttentionLayer", "create_attention_backend", "resolve_backend_name"]
