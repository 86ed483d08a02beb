"""Extend (prefill) attention over the token-paged KV pool (Triton), with a cached radix prefix.

Request ``b`` has ``qo_indptr[b+1] - qo_indptr[b]`` new tokens; its KV is the pool slots
``kv_indices[kv_indptr[b]:kv_indptr[b+1]]`` — the cached prefix followed by the new tokens, whose K/V
the backend stores before calling this kernel. New token ``i`` sits at position ``prefix + i`` with
``prefix = seq_len - extend_len`` and sees KV positions ``<= prefix + i``.

Grid ``(H, B, cdiv(max_extend_len, BLOCK_M))``, heaviest query blocks first: a program takes ``BLOCK_M``
query rows of one head, streams the request's cached prefix through ``kv_indices`` and then its new
tokens — from this pass's contiguous K/V when the caller passes them (``k_ext``/``v_ext``: no index
loads, no gathers), else through ``kv_indices`` too — in ``BLOCK_N`` blocks with an online softmax
(flash-attention style), and writes the normalised output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .decode_attention import dot_precision, softmax_step

_LOG2E = 1.4426950408889634


@triton.jit
def _extend_fwd(
    Q, K_Buf, V_Buf, K_Ext, V_Ext, O, QO_Indptr, KV_Indptr, KV_Indices, Tile_B, Tile_M,
    sm_scale_log2,
    stride_qt, stride_qh,
    stride_kt, stride_kh,
    stride_vt, stride_vh,
    stride_ket, stride_keh,
    stride_vet, stride_veh,
    stride_ot, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, EXT_CONTIG: tl.constexpr,
    PACK: tl.constexpr, TILED: tl.constexpr,
):
    # A program's BLOCK_M query rows are BLOCK_T = BLOCK_M // PACK tokens x PACK heads of one GQA group
    # (row r: token r // PACK, head r % PACK); PACK > 1 reads each K/V block once for PACK heads.
    BLOCK_T: tl.constexpr = BLOCK_M // PACK
    head0 = tl.program_id(0) * PACK
    if TILED:
        # the host's list of live (request, query block) tiles, heaviest first (runtime/attention/extend_plan.py)
        b = tl.load(Tile_B + tl.program_id(1))
        mblk = tl.load(Tile_M + tl.program_id(1))
    else:
        b = tl.program_id(1)
        # NOTE: the last query blocks of a request see the most keys; the grid's slowest axis runs them first
        # (blocks launch in grid order), so the cheap diagonal-only blocks fill the tail of the launch.
        mblk = tl.num_programs(2) - 1 - tl.program_id(2)
    kvh = head0 // GROUP

    q_start = tl.load(QO_Indptr + b)
    ext_len = tl.load(QO_Indptr + b + 1) - q_start
    if mblk * BLOCK_T >= ext_len:   # the grid covers the longest request
        return
    kv_start = tl.load(KV_Indptr + b)
    prefix = tl.load(KV_Indptr + b + 1) - kv_start - ext_len

    offs_r = tl.arange(0, BLOCK_M)
    offs_m = mblk * BLOCK_T + offs_r // PACK      # each row's token (within the request's new tokens)
    head = head0 + offs_r % PACK
    mask_m = offs_m < ext_len
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    q = tl.load(Q + (q_start + offs_m)[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    kv_base = KV_Indices + kv_start
    k_base = K_Buf + kvh * stride_kh + offs_d[:, None]
    v_base = V_Buf + kvh * stride_vh + offs_d[None, :]

    # 1. The cached prefix, through the pool's slot indices (widened to q's type: the pool may be fp8): every
    #    query sees all of it, so whole blocks
    #    need no mask (keeps the main loop branch-free for the software pipeliner); the last partial one does.
    prefix_full = prefix // BLOCK_N * BLOCK_N
    for start in range(0, prefix_full, BLOCK_N):
        loc = tl.load(kv_base + start + tl.arange(0, BLOCK_N)).to(tl.int64)
        k = tl.load(k_base + loc[None, :] * stride_kt, mask=mask_d[:, None], other=0.0).to(q.dtype)
        v = tl.load(v_base + loc[:, None] * stride_vt, mask=mask_d[None, :], other=0.0).to(q.dtype)
        m_i, l_i, acc = softmax_step(q, k, v, m_i, l_i, acc, sm_scale_log2, None, False, DOT_PREC)
    for start in range(prefix_full, prefix, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < prefix
        loc = tl.load(kv_base + offs_n, mask=mask_n, other=0).to(tl.int64)
        k = tl.load(k_base + loc[None, :] * stride_kt, mask=mask_n[None, :] & mask_d[:, None], other=0.0).to(q.dtype)
        v = tl.load(v_base + loc[:, None] * stride_vt, mask=mask_n[:, None] & mask_d[None, :], other=0.0).to(q.dtype)
        m_i, l_i, acc = softmax_step(q, k, v, m_i, l_i, acc, sm_scale_log2,
                                      mask_n[None, :], True, DOT_PREC)

    # 2. This pass's new tokens: contiguous rows of K_Ext/V_Ext (aligned with Q's rows) when EXT_CONTIG,
    #    else pool slots after the prefix. Key blocks wholly before the tile's first token are all visible (no
    #    mask); the blocks from there to its last token are causal.
    if EXT_CONTIG:
        ke_base = K_Ext + q_start * stride_ket + kvh * stride_keh + offs_d[:, None]
        ve_base = V_Ext + q_start * stride_vet + kvh * stride_veh + offs_d[None, :]
    diag = mblk * BLOCK_T // BLOCK_N * BLOCK_N
    for start in range(0, diag, BLOCK_N):
        offs_j = start + tl.arange(0, BLOCK_N)
        if EXT_CONTIG:
            k = tl.load(ke_base + offs_j[None, :] * stride_ket, mask=mask_d[:, None], other=0.0)
            v = tl.load(ve_base + offs_j[:, None] * stride_vet, mask=mask_d[None, :], other=0.0)
        else:
            loc = tl.load(kv_base + prefix + offs_j).to(tl.int64)
            k = tl.load(k_base + loc[None, :] * stride_kt, mask=mask_d[:, None], other=0.0).to(q.dtype)
            v = tl.load(v_base + loc[:, None] * stride_vt, mask=mask_d[None, :], other=0.0).to(q.dtype)
        m_i, l_i, acc = softmax_step(q, k, v, m_i, l_i, acc, sm_scale_log2, None, False, DOT_PREC)
    for start in range(diag, tl.minimum(ext_len, mblk * BLOCK_T + BLOCK_T), BLOCK_N):
        offs_j = start + tl.arange(0, BLOCK_N)
        mask_j = offs_j < ext_len
        if EXT_CONTIG:
            k = tl.load(ke_base + offs_j[None, :] * stride_ket, mask=mask_j[None, :] & mask_d[:, None], other=0.0)
            v = tl.load(ve_base + offs_j[:, None] * stride_vet, mask=mask_j[:, None] & mask_d[None, :], other=0.0)
        else:
            loc = tl.load(kv_base + prefix + offs_j, mask=mask_j, other=0).to(tl.int64)
            k = tl.load(k_base + loc[None, :] * stride_kt, mask=mask_j[None, :] & mask_d[:, None], other=0.0).to(q.dtype)
            v = tl.load(v_base + loc[:, None] * stride_vt, mask=mask_j[:, None] & mask_d[None, :], other=0.0).to(q.dtype)
        causal = (offs_j[None, :] <= offs_m[:, None]) & mask_j[None, :]
        m_i, l_i, acc = softmax_step(q, k, v, m_i, l_i, acc, sm_scale_log2, causal, True, DOT_PREC)

    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    tl.store(O + (q_start + offs_m)[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


def extend_block_config(head_dim: int, device: torch.device | str | None = None, prefix_heavy: bool = False,
                        group: int = 1, extend_len: int = 0, batch: int = 0,
                        num_kv_heads: int = 0) -> tuple[int, int, int, int, int]:
    """``(BLOCK_M, BLOCK_N, num_warps, num_stages, PACK)`` for this head size, device and batch shape: BLOCK_M
    query rows (``BLOCK_M // PACK`` tokens x ``PACK`` heads of one GQA group) per program.

    NOTE: from the H100 sweep (``bench_kernels.py --extend-configs``, session 6; TFLOP/s): 4 heads per tile win
    everywhere the GQA group allows. Plain prefill 8 x 1,024: 128 x 32 blocks, 293 (283 unpacked). Mostly-cached
    batches want the tile's tokens to match the requests' new tokens: few-shot 256 x (1,500 + 64) 287 with
    64 tokens x 4 heads (256 rows; 256 with the old 64 x 64 unpacked), fork 32 x (1,000 + 16) 122 with
    16 tokens x 4 heads (56 unpacked); a 256-row tile needs enough programs to fill the GPU (a mixed pass of
    4 x (1,024 + 64) ran at 65 with it, 106 with 64 rows).
    """
    major = torch.cuda.get_device_capability(device)[0] if torch.cuda.is_available() else 0
    if major >= 9 and head_dim <= 128:
        if group % 4:
            return (64, 64, 4, 3, 1) if prefix_heavy else (128, 32, 4, 3, 1)
        if not prefix_heavy:
            return 128, 32, 4, 3, 4
        big = extend_len >= 48 and batch * triton.cdiv(extend_len, 64) * num_kv_heads >= 256
        return (256, 64, 8, 3, 4) if big else (64, 64, 4, 3, 4)
    if head_dim <= 128:
        return 64, 64, 4, 2, 1
    return 64, 32, 4, 1, 1


def _pack(want: int, group: int, block_m: int) -> int:
    """The largest power of two <= ``want`` that divides the GQA group and leaves at least one token per block."""
    p = 1
    while p * 2 <= want and group % (p * 2) == 0 and block_m // (p * 2) >= 1:
        p *= 2
    return p


def extend_attention_fwd(q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, o: torch.Tensor,
                         qo_indptr: torch.Tensor, kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
                         max_extend_len: int, sm_scale: float,
                         config: tuple[int, ...] | None = None,
                         prefix_heavy: bool = False, k_ext: torch.Tensor | None = None,
                         v_ext: torch.Tensor | None = None, typical_extend_len: int = 0,
                         tiles: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Causal extend attention. ``q``/``o``: ``[T, H, D]``; ``k_buffer``/``v_buffer``: ``[S_pool, Hkv, D]``
    (this pass's K/V already stored); ``max_extend_len`` sizes the grid (a host int). ``k_ext``/``v_ext``
    ``[T, Hkv, D]`` (rows aligned with ``q``, strided views allowed): this pass's K/V, read contiguously
    instead of through the pool's slots. ``typical_extend_len`` (default: ``max_extend_len``) sizes the query
    tile of a prefix-heavy batch: a fork's branches (16 new tokens each) next to the one request computing
    their prefix (1,000) want the small tile. ``tiles`` (int32 request and block indices from
    ``extend_plan.lpt_tiles`` for this config's ``BLOCK_M // PACK`` tokens per block, on the device): the
    programs take their tiles from that list instead of the ``(requests, blocks)`` grid."""
    num_tokens, num_heads, head_dim = q.shape
    batch = qo_indptr.shape[0] - 1
    if num_tokens == 0 or batch == 0:
        return o
    group = num_heads // k_buffer.shape[1]
    assert k_buffer.stride(-1) == 1 and v_buffer.stride(-1) == 1 and q.stride(-1) == 1
    contig = k_ext is not None and v_ext is not None
    if contig:
        assert k_ext.stride(-1) == 1 and v_ext.stride(-1) == 1 and k_ext.shape[0] >= num_tokens
    else:
        k_ext = v_ext = k_buffer
    # NOTE: the kernel's row offsets of q/o/k_ext/v_ext are int32 (they stay in registers as such): a pass is
    # chunked far below this bound (~350k tokens at Llama-3-8B's fused qkv width)
    assert num_tokens * max(q.stride(0), o.stride(0), k_ext.stride(0), v_ext.stride(0)) < 2**31, \
        "extend pass too large for 32-bit row offsets: lower chunked_prefill_size"
    block_m, block_n, num_warps, num_stages, *rest = config or extend_block_config(
        head_dim, q.device, prefix_heavy, group, typical_extend_len or max_extend_len, batch, k_buffer.shape[1])
    pack = _pack(rest[0] if rest else 1, group, block_m)
    if tiles is not None:
        # NOTE: the tiles must be made for this config's block (extend_block_tokens): the caller passes both.
        # They stay on grid axis 1 (heads on axis 0 launch together, so the list's order holds across heads);
        # its 65,535 cap is over a million tokens in one pass.
        assert config is not None and tiles[0].shape[0] <= 65535, "tiles need their config, and fit grid axis 1"
        grid = (num_heads // pack, tiles[0].shape[0], 1)
        tile_b, tile_m = tiles
    else:
        grid = (num_heads // pack, batch, triton.cdiv(max_extend_len, block_m // pack))
        tile_b = tile_m = qo_indptr   # (not read)
    _extend_fwd[grid](
        q, k_buffer, v_buffer, k_ext, v_ext, o, qo_indptr, kv_indptr, kv_indices, tile_b, tile_m,
        sm_scale * _LOG2E,
        q.stride(0), q.stride(1),
        k_buffer.stride(0), k_buffer.stride(1),
        v_buffer.stride(0), v_buffer.stride(1),
        k_ext.stride(0), k_ext.stride(1),
        v_ext.stride(0), v_ext.stride(1),
        o.stride(0), o.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_M=block_m, BLOCK_N=block_n, DOT_PREC=dot_precision(q.dtype), EXT_CONTIG=contig,
        PACK=pack, TILED=tiles is not None, num_warps=num_warps, num_stages=num_stages,
    )
    return o


def extend_block_tokens(config: tuple[int, ...], group: int) -> int:
    """Query tokens per program of ``config`` (``BLOCK_M // PACK``): the block size of ``lpt_tiles``."""
    block_m, want = config[0], config[4] if len(config) > 4 else 1
    return block_m // _pack(want, group, block_m)
