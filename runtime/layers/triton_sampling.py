"""Sampling as one pass over the logits (Gumbel-max), for the GPU.

``argmax_i p_i / E_i`` with ``E ~ Exp(1)`` — the exponential race the sampler uses to draw from ``p =
softmax(l / T)`` without a host sync — equals ``argmax_i (l_i / T - log E_i)``: the softmax, its
normalization and the division need not be computed. The torch version of the race costs about eight
passes over the ``[R, V]`` float32 logits (softmax read + write, temperature, clamp, ``p / E``, argmax,
and an unused greedy argmax): ~0.8 ms per step at 256 rows × 128k vocab on an H100, 7% of a fork decode
step. Here: the noise is still drawn by torch (so seeded rows keep their generator streams), and one kernel
reads logits and noise once, each program reducing a chunk of a row to its best (value, index); torch
picks the best chunk per row.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_CHUNK = 8192   # vocabulary entries per program: 16 programs per row at 128k, enough rows x chunks to fill the GPU


@triton.jit
def _gumbel_max_kernel(L, E, InvT, Val, Idx, V, stride_l, stride_e, n_chunks,
                       CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    inv_t = tl.load(InvT + row)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK], tl.int32)
    for off in range(0, CHUNK, BLOCK):
        cols = chunk * CHUNK + off + tl.arange(0, BLOCK)
        m = cols < V
        lg = tl.load(L + row * stride_l + cols, mask=m, other=float("-inf")).to(tl.float32)
        e = tl.load(E + row * stride_e + cols, mask=m, other=1.0)
        # NOTE: E == 0 would give +inf; the torch race clamps E to the smallest normal float too
        v = lg * inv_t - tl.log(tl.maximum(e, 1.1754943508222875e-38))
        v = tl.where(m, v, float("-inf"))
        upd = v > best
        best = tl.where(upd, v, best)
        best_i = tl.where(upd, cols, best_i)
    top = tl.max(best, 0)
    # ties: the smallest index, as torch.argmax
    idx = tl.min(tl.where(best == top, best_i, 2147483647), 0)
    tl.store(Val + row * n_chunks + chunk, top)
    tl.store(Idx + row * n_chunks + chunk, idx)


def gumbel_max(logits: torch.Tensor, noise: torch.Tensor, inv_temp: torch.Tensor) -> torch.Tensor:
    """``argmax(logits * inv_temp[:, None] - log(noise))`` per row (int64 ``[R]``); ``noise`` ~ Exp(1)."""
    rows, vocab = logits.shape
    assert logits.stride(1) == 1 and noise.stride(1) == 1 and noise.shape == logits.shape
    n_chunks = triton.cdiv(vocab, _CHUNK)
    val = torch.empty((rows, n_chunks), dtype=torch.float32, device=logits.device)
    idx = torch.empty((rows, n_chunks), dtype=torch.int32, device=logits.device)
    _gumbel_max_kernel[(rows, n_chunks)](logits, noise, inv_temp, val, idx, vocab, logits.stride(0),
                                         noise.stride(0), n_chunks, CHUNK=_CHUNK, BLOCK=1024, num_warps=4)
    best = val.argmax(dim=1, keepdim=True)
    return idx.gather(1, best).squeeze(1).long()
