"""Write one pass's K and V rows into the token-paged pool in one launch (Triton)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...mem.kv_pool import fp8_max, to_kv


@triton.jit
def _store_kv_kernel(K, V, K_Buf, V_Buf, Loc, stride_k, stride_v, stride_kb, stride_vb,
                     ROW: tl.constexpr, BLOCK: tl.constexpr, FP8_MAX: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < ROW
    slot = tl.load(Loc + t).to(tl.int64)
    k = tl.load(K + t * stride_k + cols, mask=mask)
    v = tl.load(V + t * stride_v + cols, mask=mask)
    if FP8_MAX > 0:   # an fp8 pool: saturate (e4m3fn has no infinity) as runtime.mem.kv_pool.to_kv does
        k = tl.minimum(tl.maximum(k.to(tl.float32), -FP8_MAX), FP8_MAX)
        v = tl.minimum(tl.maximum(v.to(tl.float32), -FP8_MAX), FP8_MAX)
    tl.store(K_Buf + slot * stride_kb + cols, k.to(K_Buf.dtype.element_ty), mask=mask)
    tl.store(V_Buf + slot * stride_vb + cols, v.to(V_Buf.dtype.element_ty), mask=mask)


def _rows_contiguous(x: torch.Tensor) -> bool:
    return x.stride(-1) == 1 and x.stride(-2) == x.shape[-1]


def store_kv(k_buf: torch.Tensor, v_buf: torch.Tensor, loc: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor) -> None:
    """``k_buf[loc] = k; v_buf[loc] = v`` for ``k``/``v`` ``[T, Hkv, D]`` (row-strided views allowed).

    NOTE: one kernel for both tensors instead of two ``index_copy_`` launches: at batch 1 a decode step
    is launch-bound, and this saves one launch per layer.
    """
    t = k.shape[0]
    if t == 0:
        return
    k = k.view(t, k_buf.shape[1], k_buf.shape[2]) if k.dim() == 2 else k
    v = v.view(t, v_buf.shape[1], v_buf.shape[2]) if v.dim() == 2 else v
    if not (_rows_contiguous(k) and _rows_contiguous(v) and _rows_contiguous(k_buf) and _rows_contiguous(v_buf)):
        for buf, x in ((k_buf, k), (v_buf, v)):
            x = to_kv(x, buf.dtype)
            if fp8_max(buf.dtype):   # NOTE: index_copy_ has no fp8 kernel: copy the bytes
                buf, x = buf.view(torch.uint8), x.view(torch.uint8)
            buf.index_copy_(0, loc, x)
        return
    row = k_buf.shape[1] * k_buf.shape[2]
    block = min(4096, triton.next_power_of_2(row))
    _store_kv_kernel[(t, triton.cdiv(row, block))](k, v, k_buf, v_buf, loc, k.stride(0), v.stride(0),
                                                   k_buf.stride(0), v_buf.stride(0), ROW=row, BLOCK=block,
                                                   FP8_MAX=fp8_max(k_buf.dtype), num_warps=4)
