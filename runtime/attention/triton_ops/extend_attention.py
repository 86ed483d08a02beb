"""Extend (prefill) attention over the token-paged KV pool (Triton), with a cached radix prefix.

Request ``b`` has ``qo_indptr[b+1] - qo_indptr[b]`` new tokens; its KV is the pool slots
``kv_indices[kv_indptr[b]:kv_indptr[b+1]]`` — the cached prefix followed by the new tokens, whose K/V
the backend stores before calling this kernel. New token ``i`` sits at position ``prefix + i`` with
``prefix = seq_len - extend_len`` and sees KV positions ``<= prefix + i``.

Grid ``(B, H, cdiv(max_extend_len, BLOCK_M))``: a program takes ``BLOCK_M`` query rows of one head,
streams the request's KV through ``kv_indices`` in ``BLOCK_N`` blocks with an online softmax
(flash-attention style), and writes the normalised output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .decode_attention import dot_precision

_LOG2E = 1.4426950408889634


@triton.jit
def _extend_fwd(
    Q, K_Buf, V_Buf, O, QO_Indptr, KV_Indptr, KV_Indices,
    sm_scale_log2,
    stride_qt, stride_qh,
    stride_kt, stride_kh,
    stride_vt, stride_vh,
    stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    mblk = tl.program_id(2)
    kvh = h // GROUP

    q_start = tl.load(QO_Indptr + b)
    ext_len = tl.load(QO_Indptr + b + 1) - q_start
    kv_start = tl.load(KV_Indptr + b)
    seq_len = tl.load(KV_Indptr + b + 1) - kv_start
    prefix = seq_len - ext_len

    offs_m = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < ext_len
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    q = tl.load(Q + (q_start + offs_m)[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)

    # Keys this block can see: up to the last valid query's position. A block past the end of the
    # request's new tokens (the grid covers the longest request) loops zero times and stores nothing.
    kv_end = tl.minimum(seq_len, prefix + (mblk + 1) * BLOCK_M)
    kv_end = tl.where(mblk * BLOCK_M < ext_len, kv_end, 0)
    # NOTE: two loops: keys before the block's first query (whole BLOCK_N blocks) need no mask at all,
    # which keeps the main loop branch-free for the software pipeliner; only the diagonal pays for it.
    full_end = tl.minimum((prefix + mblk * BLOCK_M) // BLOCK_N * BLOCK_N, kv_end // BLOCK_N * BLOCK_N)
    qpos = prefix + offs_m

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    kv_base = KV_Indices + kv_start
    k_base = K_Buf + kvh * stride_kh + offs_d[:, None]
    v_base = V_Buf + kvh * stride_vh + offs_d[None, :]

    for start in range(0, full_end, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        loc = tl.load(kv_base + offs_n).to(tl.int64)
        k = tl.load(k_base + loc[None, :] * stride_kt, mask=mask_d[:, None], other=0.0)
        # NOTE: scores in the log2 domain (scale folded with log2(e)) so the softmax uses exp2.
        qk = tl.dot(q, k, input_precision=DOT_PREC) * sm_scale_log2
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        v = tl.load(v_base + loc[:, None] * stride_vt, mask=mask_d[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new

    for start in range(full_end, kv_end, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < kv_end
        loc = tl.load(kv_base + offs_n, mask=mask_n, other=0).to(tl.int64)
        k = tl.load(k_base + loc[None, :] * stride_kt, mask=mask_n[None, :] & mask_d[:, None], other=0.0)
        qk = tl.dot(q, k, input_precision=DOT_PREC) * sm_scale_log2
        causal = (offs_n[None, :] <= qpos[:, None]) & mask_n[None, :]
        qk = tl.where(causal, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # Rows that have seen no key yet keep m = -inf; shift them by 0 so exp2 gives 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        v = tl.load(v_base + loc[:, None] * stride_vt, mask=mask_n[:, None] & mask_d[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new

    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    tl.store(O + (q_start + offs_m)[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def extend_block_config(head_dim: int, device: torch.device | str | None = None,
                        prefix_heavy: bool = False) -> tuple[int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` for this head size, device and batch shape.

    NOTE: from the H100 sweep (docs/gpu.md): plain prefill 8x1024 peaks with 128-row query blocks
    (233 TFLOP/s); batches that are mostly cached prefix (few new tokens over long KV: few-shot, fork) with
    64-row blocks, twice as many programs (221 vs 157 TFLOP/s; FlashInfer 190).
    """
    major = torch.cuda.get_device_capability(device)[0] if torch.cuda.is_available() else 0
    if major >= 9 and head_dim <= 128:
        return (64, 64, 4, 3) if prefix_heavy else (128, 64, 4, 3)
    if head_dim <= 128:
        return 64, 64, 4, 2
    return 64, 32, 4, 1


def extend_attention_fwd(q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, o: torch.Tensor,
                         qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
                         max_extend_len: int, sm_scale: float,
                         config: tuple[int, int, int, int] | None = None,
                         prefix_heavy: bool = False) -> torch.Tensor:
    """Causal extend attention. ``q``/``o``: ``[T, H, D]``; ``k_buffer``/``v_buffer``: ``[S_pool, Hkv, D]``
    (this pass's K/V already stored); ``max_extend_len`` sizes the grid (a host int)."""
    num_tokens, num_heads, head_dim = q.shape
    batch = qo_indptr.shape[0] - 1
    if num_tokens == 0 or batch == 0:
        return o
    group = num_heads // k_buffer.shape[1]
    assert k_buffer.stride(-1) == 1 and v_buffer.stride(-1) == 1 and q.stride(-1) == 1
    block_m, block_n, num_warps, num_stages = config or extend_block_config(head_dim, q.device, prefix_heavy)
    grid = (batch, num_heads, triton.cdiv(max_extend_len, block_m))
    _extend_fwd[grid](
        q, k_buffer, v_buffer, o, qo_indptr, kv_indptr, kv_indices,
        sm_scale * _LOG2E,
        q.stride(0), q.stride(1),
        k_buffer.stride(0), k_buffer.stride(1),
        v_buffer.stride(0), v_buffer.stride(1),
        o.stride(0), o.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_M=block_m, BLOCK_N=block_n, DOT_PREC=dot_precision(q.dtype),
        num_warps=num_warps, num_stages=num_stages,
    )
    return o
