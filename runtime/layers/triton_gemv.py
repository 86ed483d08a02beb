"""Matrix-vector product for one-row activations (batch-1 decode): ``y = x @ W.T`` with ``x [1, K]``.

A batch-1 decode step reads every weight once, so its speed is the GEMVs' memory bandwidth. cuBLAS picks
GEMM tilings for ``[1, K] x [K, N]`` that leave the smaller projections under the HBM rate (on an H100,
inside a CUDA graph: o_proj 4096 x 4096 at 2.05 TB/s, qkv 2.39; this kernel 2.62 and 2.78; the whole
Llama-3-8B step 5.61 → 5.02 ms, ``bench/bench_gemv.py``). This kernel streams ``W [N, K]`` (row-major, as ``nn.Linear``
stores it) once: a program owns ``BLOCK_N`` output rows, walks K in ``BLOCK_K`` chunks with 16-byte loads,
keeps the per-lane products in fp32 and reduces once at the end. Many small programs (``N / BLOCK_N`` of
them, thousands for a 4096-row weight) keep enough loads in flight to saturate HBM without split-K, so
one launch per projection, no partial-sum pass.

``linear(x, w)`` dispatches: one row on CUDA → this kernel, anything else → ``F.linear``. The numerics
are cuBLAS's: bf16/fp16 inputs, fp32 accumulation, one rounding at the end (only the summation order differs).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

# NOTE: chosen by bench/bench_gemv.py on an H100 (Llama-3-8B projections): see docs/gpu.md.
_DEFAULT_CONFIG = (2, 2048, 2)   # BLOCK_N, BLOCK_K, num_warps


@triton.jit
def _gemv_kernel(X, W, Y, N, K, stride_wn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 EVEN_K: tl.constexpr):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    # Rows past N re-read row N-1 (no load mask on the hot path); only the store is masked.
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    w_ptrs = W + rows[:, None] * stride_wn + offs_k[None, :]
    x_ptrs = X + offs_k
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        if EVEN_K:
            # NOTE: the weight is read once per step: stream it past L2 (evict_first), keep x resident.
            w = tl.load(w_ptrs, eviction_policy="evict_first")
            x = tl.load(x_ptrs, eviction_policy="evict_last")
        else:
            mk = (k + offs_k) < K
            w = tl.load(w_ptrs, mask=mk[None, :], other=0.0, eviction_policy="evict_first")
            x = tl.load(x_ptrs, mask=mk, other=0.0, eviction_policy="evict_last")
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        w_ptrs += BLOCK_K
        x_ptrs += BLOCK_K
    y = tl.sum(acc, axis=1)
    tl.store(Y + offs_n, y.to(Y.dtype.element_ty), mask=offs_n < N)


def gemv(x: torch.Tensor, w: torch.Tensor, config: tuple[int, int, int] | None = None,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [1, K] @ w[N, K].T`` → ``[1, N]`` in ``x``'s dtype (``w`` contiguous along K), into ``out`` if given."""
    n, k = w.shape
    assert x.shape == (1, k) and x.stride(-1) == 1 and w.stride(-1) == 1
    block_n, block_k, warps = config or _DEFAULT_CONFIG
    block_k = min(block_k, triton.next_power_of_2(k))
    y = torch.empty((1, n), dtype=x.dtype, device=x.device) if out is None else out
    assert y.shape == (1, n) and y.is_contiguous()
    _gemv_kernel[(triton.cdiv(n, block_n),)](x, w, y, n, k, w.stride(0), BLOCK_N=block_n, BLOCK_K=block_k,
                                             EVEN_K=k % block_k == 0, num_warps=warps)
    return y


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` with the one-row case (batch-1 decode, CUDA, 16-bit) on the GEMV kernel."""
    # NOTE: the row count first: every multi-row call (prefill, batched decode) leaves after two checks
    if (x.dim() == 2 and x.shape[0] == 1 and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)
            and weight.dtype == x.dtype and x.stride(-1) == 1 and weight.stride(-1) == 1):
        y = gemv(x, weight)
        return y if bias is None else y + bias
    return F.linear(x, weight, bias)
