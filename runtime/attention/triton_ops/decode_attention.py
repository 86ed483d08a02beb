"""Decode attention over the token-paged KV pool (Triton): GQA-grouped, split-KV, two stages.

One query token per request. Request ``b`` attends to pool slots
``kv_indices[kv_indptr[b]:kv_indptr[b+1]]`` (page size 1).

Stage 1 — grid ``(B, Hkv, S)``: each program takes one KV head, *all* the query heads of its GQA group
and one of ``S`` contiguous splits of the request's KV. It writes an unnormalised partial result
(``acc / l``) and its log-sum-exp to fp32 scratch buffers.
Stage 2 — grid ``(B, H)``: merges the ``S`` partials by their log-sum-exp.

Shared-prefix (cascade) stage — grid ``(C, Hkv, S2)``, optional: when groups of requests share a cached
prefix (fork branches, radix hits on one prompt), each *chunk* of up to ``CHUNK`` members of a group reads
the prefix's K/V once for all its members' queries (``CHUNK * GROUP`` query rows: a tensor-core tile instead
of ``CHUNK`` separate reads of the same KV). It writes its ``S2`` partials into splits ``S .. S+S2-1``;
stage 1 then covers only each member's own tokens after the prefix (``skip[b]``), and writes ``-inf`` into
those extra splits for requests outside any group. Stage 2 merges all ``S + S2`` partials as before.
The plan (which rows share which prefix) comes from ``runtime/attention/cascade.py``.

One split (``S = 1``: large batches — fork, offline decode): stage 1 holds each row's whole own part, so it
writes the final output itself, merging the cascade partials (the shared stage is launched first); no stage 2.

Every size the kernels read from the batch lives on the device (``kv_indptr``, the cascade plan), and the
grids depend only on ``B``, the static ``S``/``S2`` and the chunk capacity, so all stages can be captured
in a CUDA graph.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634
MAX_GRID_Y = 65535   # CUDA's limit on a grid's second dimension


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get exact (IEEE) dots, as cuBLAS does by default; 16-bit inputs use the tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


@triton.jit
def softmax_step(q, k, v, m_i, l_i, acc, sm_scale_log2, mask, MASKED: tl.constexpr, DOT_PREC: tl.constexpr):
    """One online-softmax step of flash attention over a key block (decode and extend kernels): ``k [D, N]``,
    ``v [N, D]``; scores where ``mask`` (broadcast to ``[M, N]``) is false are dropped when MASKED."""
    # NOTE: scores in the log2 domain (scale folded with log2(e)) so the softmax uses exp2.
    qk = tl.dot(q, k, input_precision=DOT_PREC) * sm_scale_log2
    if MASKED:
        qk = tl.where(mask, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    if MASKED:
        # Rows that have seen no key yet keep m = -inf; shift them by 0 so exp2 gives 0, not NaN.
        m_new = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(qk - m_new[:, None])
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _attend(q, K_Buf, V_Buf, KV_Indices, kv_start, s_start, s_end, kvh, sm_scale_log2,
            stride_kt, stride_kh, stride_vt, stride_vh, offs_d, mask_d,
            BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
            F16: tl.constexpr):
    """Online softmax of ``q`` ([BLOCK_ROWS, D], one KV head) over ``kv_indices[kv_start + s_start :
    kv_start + s_end]``: the normalised partial output and its log2-domain log-sum-exp (-inf if empty).

    ``F16`` (an fp8 pool, 16-bit queries): the dots run in fp16. e4m3 widens to fp16 in one packed conversion,
    while bf16 takes three (e4m3 -> f16 -> f32 -> bf16), which bounds the fp8 kernel by conversions rather than
    bytes. The query is scaled by the softmax scale first and clamped to fp16's range (only absurd values,
    |q| > 5e5 at d=128, would be clipped)."""
    if F16:
        q = tl.minimum(tl.maximum(q.to(tl.float32) * sm_scale_log2, -65504.0, propagate_nan=tl.PropagateNan.ALL),
                       65504.0, propagate_nan=tl.PropagateNan.ALL).to(tl.float16)   # (a NaN stays NaN)
        scale = 1.0
    else:
        scale = sm_scale_log2
    m_i = tl.full([BLOCK_ROWS], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_ROWS], dtype=tl.float32)
    acc = tl.zeros([BLOCK_ROWS, BLOCK_D], dtype=tl.float32)
    for start in range(s_start, s_end, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = offs_n < s_end
        loc = tl.load(KV_Indices + kv_start + offs_n, mask=mask_n, other=0).to(tl.int64)
        # K is read transposed ([D, N]) so that q @ k is a plain tensor-core dot.
        # NOTE: .to(q.dtype): an fp8 pool (kv_cache_dtype) is widened to the query's type before the dots
        k = tl.load(K_Buf + loc[None, :] * stride_kt + kvh * stride_kh + offs_d[:, None],
                    mask=mask_n[None, :] & mask_d[:, None], other=0.0).to(q.dtype)
        v = tl.load(V_Buf + loc[:, None] * stride_vt + kvh * stride_vh + offs_d[None, :],
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0).to(q.dtype)
        m_i, l_i, acc = softmax_step(q, k, v, m_i, l_i, acc, scale, mask_n[None, :], True, DOT_PREC)
    has = l_i > 0.0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    return out, lse


@triton.jit
def _merge_shared(out, lse, Mid_O, Mid_LSE, b, heads, mask_h, offs_d, mask_d,
                  stride_mob, stride_moh, stride_mos, stride_mlb, stride_mlh,
                  NUM_SPLITS: tl.constexpr, SHARED_SPLITS: tl.constexpr):
    """``out`` (normalised, log-sum-exp ``lse``) merged with the row's cascade partials in splits
    ``NUM_SPLITS ..``: the softmax over both key sets. Empty partials (lse -inf) are not read (may be stale)."""
    lse_base = Mid_LSE + b * stride_mlb + heads * stride_mlh + NUM_SPLITS
    m = lse
    for s in tl.static_range(SHARED_SPLITS):
        m = tl.maximum(m, tl.load(lse_base + s, mask=mask_h, other=float("-inf")))
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp2(lse - m)
    acc = out * w[:, None]
    wsum = w
    for s in tl.static_range(SHARED_SPLITS):
        lse_s = tl.load(lse_base + s, mask=mask_h, other=float("-inf"))
        live = mask_h & (lse_s > float("-inf"))
        o_s = tl.load(Mid_O + b * stride_mob + heads[:, None] * stride_moh + (NUM_SPLITS + s) * stride_mos
                      + offs_d[None, :], mask=live[:, None] & mask_d[None, :], other=0.0)
        w_s = tl.exp2(lse_s - m)
        acc += o_s * w_s[:, None]
        wsum += w_s
    return acc / tl.maximum(wsum, 1e-30)[:, None]


@triton.jit
def _decode_stage1(
    Q, K_Buf, V_Buf, KV_Indptr, KV_Indices, Skip, Mid_O, Mid_LSE, O,
    sm_scale_log2,
    stride_qb, stride_qh,
    stride_kt, stride_kh,
    stride_vt, stride_vh,
    stride_mob, stride_moh, stride_mos,
    stride_mlb, stride_mlh,
    stride_ob, stride_oh,
    GROUP: tl.constexpr, BLOCK_H: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, MIN_SPLIT: tl.constexpr,
    SHARED_SPLITS: tl.constexpr, BLOCK_S2: tl.constexpr,
    DOT_PREC: tl.constexpr, FUSED: tl.constexpr, F16: tl.constexpr, HEADS_FIRST: tl.constexpr,
):
    if HEADS_FIRST:   # grid (Hkv, B, S): a row's KV heads are neighbouring programs (see decode_attention_fwd)
        kvh = tl.program_id(0)
        b = tl.program_id(1)
    else:
        b = tl.program_id(0)
        kvh = tl.program_id(1)
    split = tl.program_id(2)

    offs_h = tl.arange(0, BLOCK_H)
    mask_h = offs_h < GROUP
    heads = kvh * GROUP + offs_h
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM

    kv_start = tl.load(KV_Indptr + b)
    seq_len = tl.load(KV_Indptr + b + 1) - kv_start
    skip = 0
    if SHARED_SPLITS > 0:
        # Tokens [0, skip) are the group's shared prefix: the cascade stage attends to them.
        skip = tl.load(Skip + b)
        if not FUSED:  # noqa: SIM102 - a compile-time test around a run-time one (fused: nothing reads these)
            if (split == 0) & (skip == 0):
                # Outside any group: the cascade splits of this row are empty (weight 0 in stage 2).
                offs_s2 = tl.arange(0, BLOCK_S2)
                tl.store(Mid_LSE + b * stride_mlb + heads[:, None] * stride_mlh + NUM_SPLITS + offs_s2[None, :],
                         tl.full([BLOCK_H, BLOCK_S2], float("-inf"), tl.float32),
                         mask=mask_h[:, None] & (offs_s2[None, :] < SHARED_SPLITS))
    # NOTE: a split never shrinks below MIN_SPLIT tokens: short contexts use fewer (non-empty) splits,
    # so the launch overhead of empty programs is all that the static S costs them.
    split_len = tl.maximum(tl.cdiv(seq_len - skip, NUM_SPLITS), MIN_SPLIT)
    s_start = skip + split * split_len
    s_end = tl.minimum(s_start + split_len, seq_len)

    q = tl.load(Q + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_h[:, None] & mask_d[None, :], other=0.0)

    out, lse = _attend(q, K_Buf, V_Buf, KV_Indices, kv_start, s_start, s_end, kvh, sm_scale_log2,
                       stride_kt, stride_kh, stride_vt, stride_vh, offs_d, mask_d,
                       BLOCK_H, BLOCK_D, BLOCK_N, DOT_PREC, F16)
    if FUSED:
        # One split: this program holds the row's whole own part, so it writes the final output; a row in a
        # cascade chunk first merges the shared stage's partials (that kernel ran before this one).
        if SHARED_SPLITS > 0:  # noqa: SIM102 - a compile-time test around a run-time one
            if skip > 0:
                out = _merge_shared(out, lse, Mid_O, Mid_LSE, b, heads, mask_h, offs_d, mask_d, stride_mob,
                                    stride_moh, stride_mos, stride_mlb, stride_mlh, NUM_SPLITS, SHARED_SPLITS)
        tl.store(O + b * stride_ob + heads[:, None] * stride_oh + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=mask_h[:, None] & mask_d[None, :])
    else:
        tl.store(Mid_O + b * stride_mob + heads[:, None] * stride_moh + split * stride_mos + offs_d[None, :],
                 out, mask=mask_h[:, None] & mask_d[None, :])
        tl.store(Mid_LSE + b * stride_mlb + heads * stride_mlh + split, lse, mask=mask_h)


@triton.jit
def _decode_shared_stage(
    Q, K_Buf, V_Buf, KV_Indices, Chunk_Rows, Chunk_Start, Chunk_Len, Mid_O, Mid_LSE,
    sm_scale_log2,
    stride_qb, stride_qh,
    stride_kt, stride_kh,
    stride_vt, stride_vh,
    stride_mob, stride_moh, stride_mos,
    stride_mlb, stride_mlh,
    GROUP: tl.constexpr, CHUNK: tl.constexpr, BLOCK_M: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr, SHARED_SPLITS: tl.constexpr, MIN_SPLIT: tl.constexpr,
    DOT_PREC: tl.constexpr, F16: tl.constexpr,
):
    """One chunk of a group, one KV head, one split of the shared prefix: ``CHUNK * GROUP`` query rows."""
    c = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    plen = tl.load(Chunk_Len + c)
    # NOTE: capacity padding (CUDA graphs) has plen 0: nothing to do, and no row of its own to write.
    if plen > 0:
        kv_start = tl.load(Chunk_Start + c)
        offs_m = tl.arange(0, BLOCK_M)
        member = offs_m // GROUP
        rows = tl.load(Chunk_Rows + c * CHUNK + member, mask=member < CHUNK, other=-1)
        mask_m = rows >= 0
        heads = kvh * GROUP + offs_m % GROUP
        offs_d = tl.arange(0, BLOCK_D)
        mask_d = offs_d < HEAD_DIM
        rows64 = tl.where(mask_m, rows, 0).to(tl.int64)

        split_len = tl.maximum(tl.cdiv(plen, SHARED_SPLITS), MIN_SPLIT)
        s_start = split * split_len
        s_end = tl.minimum(s_start + split_len, plen)

        q = tl.load(Q + rows64[:, None] * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                    mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        out, lse = _attend(q, K_Buf, V_Buf, KV_Indices, kv_start, s_start, s_end, kvh, sm_scale_log2,
                           stride_kt, stride_kh, stride_vt, stride_vh, offs_d, mask_d,
                           BLOCK_M, BLOCK_D, BLOCK_N, DOT_PREC, F16)
        slot = NUM_SPLITS + split
        tl.store(Mid_O + rows64[:, None] * stride_mob + heads[:, None] * stride_moh + slot * stride_mos
                 + offs_d[None, :], out, mask=mask_m[:, None] & mask_d[None, :])
        tl.store(Mid_LSE + rows64 * stride_mlb + heads * stride_mlh + slot, lse, mask=mask_m)


@triton.jit
def _decode_stage2(
    Mid_O, Mid_LSE, O,
    stride_mob, stride_moh, stride_mos,
    stride_mlb, stride_mlh,
    stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    mask_s = offs_s < NUM_SPLITS
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM

    lse = tl.load(Mid_LSE + b * stride_mlb + h * stride_mlh + offs_s, mask=mask_s, other=float("-inf"))
    m = tl.max(lse, 0)
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp2(lse - m)  # empty splits: exp2(-inf) = 0
    # NOTE: empty splits (lse -inf, weight 0) are not read: their partials may be stale (cascade splits).
    live = mask_s & (lse > float("-inf"))
    o = tl.load(Mid_O + b * stride_mob + h * stride_moh + offs_s[:, None] * stride_mos + offs_d[None, :],
                mask=live[:, None] & mask_d[None, :], other=0.0)
    out = tl.sum(o * w[:, None], 0) / tl.maximum(tl.sum(w, 0), 1e-30)
    tl.store(O + b * stride_ob + h * stride_oh + offs_d, out.to(O.dtype.element_ty), mask=mask_d)


def decode_num_splits(batch_size: int, num_kv_heads: int, num_sms: int = 132, max_splits: int = 16) -> int:
    """Static split count for a batch size: enough programs to cover the SMs about twice over.

    NOTE: a function of the batch size alone, so each CUDA graph (one per batch size) fixes its own.
    """
    want = max(1, (2 * num_sms) // max(1, batch_size * num_kv_heads))
    return int(min(max_splits, triton.next_power_of_2(want)))


def cascade_num_splits(batch_size: int, num_kv_heads: int, num_sms: int = 132, max_splits: int = 8) -> int:
    """Static split count of the shared-prefix stage: assumes about one chunk per 16 rows (fork-like groups),
    and enough programs to cover the SMs about twice (a split never drops below ``min_split`` tokens, so a
    short prefix uses fewer). A function of the batch size alone, like :func:`decode_num_splits`.

    NOTE: twice, not four times (session 13, ``bench/bench_cascade.py`` on an H200): each split writes an fp32
    partial per row and head that stage 1 reads back, so at fork's 256 rows 4 splits moved more partial bytes
    than prefix K/V; 2 splits ran the two stages 1.11-1.56x faster (8 x 32 branches of a 1,000-token prefix),
    and 1.2x with 64 groups of 4."""
    chunks = max(1, batch_size // 16)
    want = max(1, (2 * num_sms) // (chunks * num_kv_heads))
    return int(min(max_splits, triton.next_power_of_2(want)))


def alloc_decode_buffers(batch_size: int, num_heads: int, head_dim: int, num_splits: int,
                         device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scratch for stage 1: partial outputs ``[B, H, S, D]`` and log-sum-exps ``[B, H, S]``."""
    mid_o = torch.empty((batch_size, num_heads, num_splits, head_dim), dtype=torch.float32, device=device)
    mid_lse = torch.empty((batch_size, num_heads, num_splits), dtype=torch.float32, device=device)
    return mid_o, mid_lse


def decode_attention_fwd(q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, o: torch.Tensor,
                         kv_indptr: torch.Tensor, kv_indices: torch.Tensor, mid_o: torch.Tensor,
                         mid_lse: torch.Tensor, sm_scale: float, block_n: int | None = None,
                         min_split: int = 64, num_warps: int | None = None, num_stages: int = 3,
                         cascade=None, fp16_dots: bool = True, heads_first: bool = True,
                         shared_block_n: int | None = None, shared_warps: int = 4) -> torch.Tensor:
    """Decode attention. ``q``/``o``: ``[B, H, D]``; ``k_buffer``/``v_buffer``: ``[S_pool, Hkv, D]``.

    ``mid_o``/``mid_lse`` come from :func:`alloc_decode_buffers`; their split dimension is ``S + S2``.
    ``cascade`` (a ``runtime.forward_batch.CascadeMeta``, or None: ``S2 = 0``) adds the shared-prefix stage
    with ``S2 = cascade.splits`` splits. ``fp16_dots``: over an fp8 pool with 16-bit queries, run the dots in
    fp16 (see ``_attend``; off: K/V widen to the query's type). ``block_n``/``num_warps`` None: the defaults
    below (``shared_block_n``/``shared_warps``: the shared-prefix stage's, for ``bench/bench_cascade.py``).
    ``heads_first``: stage 1's grid is ``(Hkv, B, S)`` instead of ``(B, Hkv, S)``, so the programs of one
    row's KV heads run side by side and read the same tokens' K/V rows (``[slot, Hkv, D]``: one token's heads are
    contiguous) at about the same time. The engine's default (``SGLC_DECODE_GRID``, runtime/envs.py): on an H200
    it was 1-3% faster at 256-665 rows over bf16 and fp8 pools, and no slower at 32 rows (session 11).
    """
    batch, num_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    group = num_heads // num_kv_heads
    total_splits = mid_lse.shape[-1]
    shared_splits = cascade.splits if cascade is not None else 0
    num_splits = total_splits - shared_splits
    assert num_splits >= 1, (total_splits, shared_splits)
    assert k_buffer.stride(-1) == 1 and v_buffer.stride(-1) == 1 and q.stride(-1) == 1
    block_d = triton.next_power_of_2(head_dim)
    sm_scale_log2 = sm_scale * _LOG2E
    dot_prec = dot_precision(q.dtype)
    f16 = bool(fp16_dots) and k_buffer.element_size() == 1 and q.dtype in (torch.bfloat16, torch.float16)
    q_strides = (q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0),
                 v_buffer.stride(1), mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0),
                 mid_lse.stride(1))
    # NOTE: defaults from the H100 sweeps (bench_kernels.py --decode-sweep, docs/gpu.md): 3 pipeline stages
    # over 64-token blocks won at every batch size (bs 32: 41 -> 30 us; bs 256 x 800: 374 -> 315 us);
    # 8 warps only when there are few programs (batch-1 shapes). The fp16-dots path over an fp8 pool is
    # bound by its conversions, not its loads: 128-token blocks on 2 warps (470 x U[256, 1536]: 451 -> 358 us
    # against 64 on 4; session 10).
    few = batch * num_kv_heads * num_splits <= 64
    if num_warps is None:
        num_warps = 8 if few else (2 if f16 else 4)
    shared_block_n = shared_block_n or block_n or 64   # (the shared stage: 64 unless set; fp8 unswept)
    if block_n is None:
        block_n = 128 if f16 and not few else 64
    # NOTE: tl.dot needs M >= 16: the GQA group is padded to 16 rows (the KV read, not the dot, bounds decode).
    block_h = max(16, triton.next_power_of_2(group))
    skip = cascade.skip if cascade is not None else kv_indptr   # (not read without the cascade stage)
    if shared_splits:
        # NOTE: before stage 1: with one split, stage 1 merges these partials itself (no stage-2 launch)
        chunk = cascade.chunk_rows.shape[1]
        _decode_shared_stage[(cascade.chunk_rows.shape[0], num_kv_heads, shared_splits)](
            q, k_buffer, v_buffer, kv_indices, cascade.chunk_rows, cascade.chunk_start, cascade.chunk_len,
            mid_o, mid_lse, sm_scale_log2, *q_strides,
            GROUP=group, CHUNK=chunk, BLOCK_M=max(16, triton.next_power_of_2(chunk * group)),
            HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_N=shared_block_n, NUM_SPLITS=num_splits,
            SHARED_SPLITS=shared_splits, MIN_SPLIT=2 * min_split, DOT_PREC=dot_prec, F16=f16,
            num_warps=shared_warps, num_stages=num_stages,
        )
    # NOTE: one split of the own part (large batches: fork, offline decode) needs no merge pass: stage 1
    # writes the output (and merges the cascade partials) — one launch and one scratch round trip less.
    fused = num_splits == 1
    # NOTE: a grid's second dimension holds at most 65,535 programs (CUDA): larger batches keep rows first
    heads_first = heads_first and batch <= MAX_GRID_Y
    grid = (num_kv_heads, batch, num_splits) if heads_first else (batch, num_kv_heads, num_splits)
    _decode_stage1[grid](
        q, k_buffer, v_buffer, kv_indptr, kv_indices, skip, mid_o, mid_lse, o, sm_scale_log2, *q_strides,
        o.stride(0), o.stride(1),
        GROUP=group, BLOCK_H=block_h, HEAD_DIM=head_dim, BLOCK_D=block_d,
        BLOCK_N=block_n, NUM_SPLITS=num_splits, MIN_SPLIT=min_split,
        SHARED_SPLITS=shared_splits, BLOCK_S2=triton.next_power_of_2(max(1, shared_splits)),
        DOT_PREC=dot_prec, FUSED=fused, F16=f16, HEADS_FIRST=bool(heads_first), num_warps=num_warps,
        num_stages=num_stages,
    )
    if fused:
        return o
    _decode_stage2[(batch, num_heads)](
        mid_o, mid_lse, o,
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2),
        mid_lse.stride(0), mid_lse.stride(1),
        o.stride(0), o.stride(1),
        HEAD_DIM=head_dim, BLOCK_D=block_d,
        NUM_SPLITS=total_splits, BLOCK_S=triton.next_power_of_2(total_splits),
        num_warps=4 if head_dim <= 128 else 8,
    )
    return o
