"""The token-paged KV pool: per-layer K and V buffers of ``[size, num_kv_heads, head_dim]``."""
from __future__ import annotations

import torch

from .allocator import SlotAllocator

FP8_DTYPES = {"fp8_e4m3": torch.float8_e4m3fn}


def fp8_max(dtype: torch.dtype) -> float:
    """The largest finite value of an fp8 KV dtype (0.0 for any other dtype)."""
    return float(torch.finfo(dtype).max) if dtype in FP8_DTYPES.values() else 0.0


def to_kv(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in the pool's dtype; into fp8 saturated (scale 1: e4m3fn has no infinity, overflow would be NaN)."""
    m = fp8_max(dtype)
    if m:
        t = t.clamp(-m, m)
    return t.to(dtype)


class KVPool:
    """Preallocated K/V storage for ``size`` tokens; slots are handed out by ``self.allocator``.

    NOTE: one extra slot (index ``size``) is a scratch slot that padded rows (e.g. CUDA-graph padding)
    may write to without touching live data.
    """

    def __init__(self, size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        self.size = size
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (size + 1, num_kv_heads, head_dim)
        self.k_buffer = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v_buffer = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.allocator = SlotAllocator(size)

    @property
    def scratch_slot(self) -> int:
        return self.size

    def set_kv(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k_buffer[layer_id][loc] = to_kv(k, self.dtype)
        self.v_buffer[layer_id][loc] = to_kv(v, self.dtype)

    @staticmethod
    def bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        return 2 * num_layers * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
