"""Helpers shared by the GPU tests (imported as a plain module: tests/ has no packages)."""
from __future__ import annotations

import os

import torch

INTERPRET = os.environ.get("SGLC_TRITON_INTERPRET", "") == "1" and os.environ.get("TRITON_INTERPRET") == "1"


def has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def kv_dtype(device: str) -> torch.dtype:
    # NOTE: the interpreter runs numpy, which has no bfloat16: use fp32 there.
    return torch.bfloat16 if device == "cuda" else torch.float32


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "output has NaN/inf (an unwritten or poisoned element)"
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def ref_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix: int, scale: float) -> torch.Tensor:
    """fp32 reference for one request: ``q [n, H, D]`` new tokens at positions ``prefix..prefix+n-1``,
    ``k``/``v`` ``[prefix+n, Hkv, D]``; causal."""
    n, h, _ = q.shape
    g = h // k.shape[1]
    kf = k.float().repeat_interleave(g, dim=1)
    vf = v.float().repeat_interleave(g, dim=1)
    s = torch.einsum("nhd,mhd->hnm", q.float(), kf) * scale
    m = k.shape[0]
    mask = torch.arange(m, device=q.device)[None, :] > (torch.arange(n, device=q.device)[:, None] + prefix)
    s = s.masked_fill(mask[None], float("-inf"))
    return torch.einsum("hnm,mhd->nhd", s.softmax(-1), vf)
