"""Fused Triton kernels for the non-GEMM part of a decoder layer: RMSNorm (+ residual add),
SiLU-and-mul, and neox-style rotary embedding.

Each replaces a chain of 4–10 small torch kernels with one launch. At batch 1 a decode step is
~32 layers × (2 norms + 1 activation + 1 rotary): the torch versions cost ~20 launches per layer,
which, even inside a CUDA graph, adds about a millisecond per token. The numerics follow the torch
references in ``runtime/layers/basic.py`` (fp32 math, the same rounding points).

``enable_fused_ops(model)`` switches the ``RMSNorm`` and ``RotaryEmbedding`` modules of a model on the
GPU to these kernels, and the one-row case of its linear layers to the Triton GEMV (``triton_gemv.py``;
per instance, nothing global).
"""
from __future__ import annotations

import types

import torch
import triton
import triton.language as tl

from ..envs import ENV
from .triton_gemv import linear as gemv_linear


@triton.jit
def _rmsnorm_kernel(X, R, W, Out, ResOut, stride_x, stride_r, stride_o, stride_ro, n_cols, eps,
                    HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0)
        # Round the sum to the activation dtype first, as the torch reference does.
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty)
        tl.store(ResOut + row * stride_ro + cols, x, mask=mask)
    h = x.to(tl.float32)
    var = tl.sum(h * h, 0) / n_cols
    normed = (h * tl.rsqrt(var + eps)).to(X.dtype.element_ty)
    w = tl.load(W + cols, mask=mask, other=0.0)
    tl.store(Out + row * stride_o + cols, (normed.to(tl.float32) * w.to(tl.float32)).to(Out.dtype.element_ty),
             mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """``norm(x)``; with ``residual``: ``(norm(x + residual), x + residual)`` — one kernel either way."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    out = torch.empty_like(x2)
    n = x2.shape[-1]
    block = triton.next_power_of_2(n)
    # NOTE: one program per row; 8 warps keep a 4096-wide row at 16 bytes per thread per load.
    warps = 8 if block >= 2048 else 4
    if residual is None:
        _rmsnorm_kernel[(x2.shape[0],)](x2, x2, weight, out, out, x2.stride(0), 0, out.stride(0), 0, n, eps,
                                        HAS_RES=False, BLOCK=block, num_warps=warps)
        return out.view(shape)
    r2 = residual.reshape(-1, n)
    res_out = torch.empty_like(x2)
    _rmsnorm_kernel[(x2.shape[0],)](x2, r2, weight, out, res_out, x2.stride(0), r2.stride(0), out.stride(0),
                                    res_out.stride(0), n, eps, HAS_RES=True, BLOCK=block, num_warps=warps)
    return out.view(shape), res_out.view(shape)


@triton.jit
def _silu_mul_kernel(X, Out, stride_x, stride_o, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(X + row * stride_x + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(X.dtype.element_ty).to(tl.float32)
    tl.store(Out + row * stride_o + cols, (act * u).to(Out.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[..., :n]) * x[..., n:]`` for ``x [..., 2n]`` in one pass."""
    shape = x.shape
    n = shape[-1] // 2
    x2 = x.reshape(-1, shape[-1])
    out = torch.empty((x2.shape[0], n), dtype=x.dtype, device=x.device)
    block = min(2048, triton.next_power_of_2(n))
    _silu_mul_kernel[(x2.shape[0], triton.cdiv(n, block))](x2, out, x2.stride(0), out.stride(0), n,
                                                            BLOCK=block, num_warps=4)
    return out.view(*shape[:-1], n)


@triton.jit
def _rotary_kernel(Q, K, QO, KO, Pos, Cos, Sin, stride_qt, stride_qh, stride_kt, stride_kh,
                   stride_qot, stride_qoh, stride_kot, stride_koh, stride_cos,
                   NQ: tl.constexpr, NK: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr,
                   HALF: tl.constexpr, BLOCK_HALF: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(Pos + t).to(tl.int64)
    offs = tl.arange(0, BLOCK_HALF)
    mask_d = offs < HALF
    cos = tl.load(Cos + pos * stride_cos + offs, mask=mask_d, other=0.0)[None, :]
    sin = tl.load(Sin + pos * stride_cos + offs, mask=mask_d, other=0.0)[None, :]
    # q heads
    hq = tl.arange(0, BLOCK_HQ)
    mq = (hq < NQ)[:, None] & mask_d[None, :]
    base = Q + t * stride_qt + hq[:, None] * stride_qh + offs[None, :]
    x1 = tl.load(base, mask=mq, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF, mask=mq, other=0.0).to(tl.float32)
    obase = QO + t * stride_qot + hq[:, None] * stride_qoh + offs[None, :]
    tl.store(obase, (x1 * cos - x2 * sin).to(QO.dtype.element_ty), mask=mq)
    tl.store(obase + HALF, (x2 * cos + x1 * sin).to(QO.dtype.element_ty), mask=mq)
    # k heads
    hk = tl.arange(0, BLOCK_HK)
    mk = (hk < NK)[:, None] & mask_d[None, :]
    base = K + t * stride_kt + hk[:, None] * stride_kh + offs[None, :]
    y1 = tl.load(base, mask=mk, other=0.0).to(tl.float32)
    y2 = tl.load(base + HALF, mask=mk, other=0.0).to(tl.float32)
    obase = KO + t * stride_kot + hk[:, None] * stride_koh + offs[None, :]
    tl.store(obase, (y1 * cos - y2 * sin).to(KO.dtype.element_ty), mask=mk)
    tl.store(obase + HALF, (y2 * cos + y1 * sin).to(KO.dtype.element_ty), mask=mk)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neox-style rotary on ``q [T, H, D]`` and ``k [T, Hkv, D]`` (strided views allowed) with the fp32
    ``cos``/``sin`` caches ``[max_pos, D/2]``; returns new contiguous tensors, one kernel for both."""
    t, nq, d = q.shape
    nk = k.shape[1]
    qo = torch.empty((t, nq, d), dtype=q.dtype, device=q.device)
    ko = torch.empty((t, nk, d), dtype=k.dtype, device=k.device)
    if t == 0:
        return qo, ko
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and cos.stride(-1) == 1
    half = d // 2
    _rotary_kernel[(t,)](q, k, qo, ko, positions, cos, sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                         qo.stride(0), qo.stride(1), ko.stride(0), ko.stride(1), cos.stride(0),
                         NQ=nq, NK=nk, BLOCK_HQ=triton.next_power_of_2(nq), BLOCK_HK=triton.next_power_of_2(nk),
                         HALF=half, BLOCK_HALF=triton.next_power_of_2(half), num_warps=4)
    return qo, ko


def _fused_rmsnorm_forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
    return rms_norm(x, self.weight, self.eps, residual)


def _fused_rotary_forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
    return rotary_embedding(positions, q, k, self.cos, self.sin)


def _gemv_linear_forward(self, x: torch.Tensor) -> torch.Tensor:
    return gemv_linear(x, self.weight, self.bias)


def enable_fused_ops(model: torch.nn.Module, gemv: bool | None = None) -> int:
    """Route the model's ``RMSNorm`` / ``RotaryEmbedding`` modules and MLP activations (by class name, on CUDA)
    to the fused kernels, and its linear layers' one-row case to the Triton GEMV (``gemv``; default: the
    ``SGLC_GEMV`` switch). Returns how many modules were switched. The torch versions stay the reference."""
    gemv = ENV.triton_gemv if gemv is None else gemv
    n = 0
    for mod in model.modules():
        name = type(mod).__name__
        if gemv and isinstance(mod, torch.nn.Linear) and mod.weight.is_cuda:
            mod.forward = types.MethodType(_gemv_linear_forward, mod)
            n += 1
        if gemv and hasattr(mod, "lm_linear") and next(mod.parameters()).is_cuda:
            mod.lm_linear = gemv_linear
            n += 1
        if name == "RMSNorm" and hasattr(mod, "eps") and mod.weight.is_cuda:
            mod.forward = types.MethodType(_fused_rmsnorm_forward, mod)
            n += 1
        elif name == "RotaryEmbedding" and hasattr(mod, "cos") and mod.cos.is_cuda and mod.cos.dim() == 2:
            mod.forward = types.MethodType(_fused_rotary_forward, mod)
            n += 1
        elif name == "MLP" and hasattr(mod, "act") and mod.down_proj.weight.is_cuda:
            # NOTE: torch's silu(gate) * up is two passes over [T, 2I]: 12% of an 8 x 1,024 prefill.
            mod.act = silu_and_mul
            n += 1
    return n
