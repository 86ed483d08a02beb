"""Triton decode/extend kernels and the Triton backend vs an fp32 torch reference (fresh random inputs,
outputs poisoned with NaN before each run)."""
from __future__ import annotations

import pytest
import torch
from gpu_helpers import INTERPRET, kv_dtype, ref_attention, rel_err

pytestmark = pytest.mark.gpu

# (batch context lengths, H, Hkv, D): lengths 1, block-size non-multiples, long contexts; GQA 1, 3, 4, 8.
DECODE_CASES = [
    ([1], 8, 8, 64),
    ([1, 17, 65, 300], 32, 8, 128),
    ([63, 64, 129], 9, 3, 64),
    ([2000, 1, 777], 32, 4, 128),
    ([513] * 7, 16, 2, 128),
    ([5, 3000], 8, 1, 96),
]
# (prefix lengths, extend lengths, H, Hkv, D)
EXTEND_CASES = [
    ([0], [1], 8, 8, 64),
    ([0, 5, 64], [130, 1, 63], 32, 8, 128),
    ([100, 0, 1], [7, 200, 129], 9, 3, 64),
    ([1500, 1500], [64, 64], 32, 8, 128),
    ([0] * 3, [1024, 17, 300], 16, 4, 128),
    ([31], [33], 8, 2, 96),
]
if INTERPRET:  # the interpreter is slow: keep the small shapes
    DECODE_CASES = [c for c in DECODE_CASES if max(c[0]) <= 300 and c[1] <= 16][:2] + [([70, 3], 8, 2, 64)]
    EXTEND_CASES = [([0], [1], 8, 8, 64), ([5, 0], [70, 3], 4, 2, 64), ([65], [9], 3, 1, 64),
                    ([40, 0], [37, 50], 8, 2, 64)]

TOL = 2e-2  # bf16 storage and operands; fp32 accumulation


def _pool(total: int, hkv: int, d: int, dtype, device):
    size = total + 37
    k = torch.randn(size + 1, hkv, d, dtype=dtype, device=device)
    v = torch.randn(size + 1, hkv, d, dtype=dtype, device=device)
    slots = torch.randperm(size, device=device)[:total]
    return k, v, slots


def _indptr(lens, device):
    out = torch.zeros(len(lens) + 1, dtype=torch.int32, device=device)
    out[1:] = torch.tensor(lens, device=device).cumsum(0)
    return out


@pytest.mark.parametrize("lens,h,hkv,d", DECODE_CASES)
@pytest.mark.parametrize("splits", [1, 4, 16])
@pytest.mark.parametrize("heads_first", [False, True])
def test_decode_kernel(device, lens, h, hkv, d, splits, heads_first):
    from runtime.attention.triton_ops.decode_attention import alloc_decode_buffers, decode_attention_fwd

    dtype = kv_dtype(device)
    kb, vb, slots = _pool(sum(lens), hkv, d, dtype, device)
    kv_indptr = _indptr(lens, device)
    q = torch.randn(len(lens), h, d, dtype=dtype, device=device)
    o = torch.full_like(q, float("nan"))
    mid_o, mid_lse = alloc_decode_buffers(len(lens), h, d, splits, device)
    mid_o.fill_(float("nan"))
    mid_lse.fill_(float("nan"))
    scale = d ** -0.5
    decode_attention_fwd(q, kb, vb, o, kv_indptr, slots, mid_o, mid_lse, scale, heads_first=heads_first)
    for i, n in enumerate(lens):
        idx = slots[kv_indptr[i]:kv_indptr[i + 1]]
        ref = ref_attention(q[i:i + 1], kb[idx], vb[idx], n - 1, scale)
        assert rel_err(o[i:i + 1], ref) < TOL, (i, n)


def test_decode_heads_first_past_the_grid_limit(device, monkeypatch):
    """More rows than a CUDA grid's second dimension holds (65,535): the heads-first grid falls back to rows first.
    Each row attends to one token, so its output is that token's V for every head of the group."""
    import runtime.attention.triton_ops.decode_attention as da

    rows = 65_536
    if INTERPRET:   # (the interpreter has no grid limit: lower the bound so the fallback still runs)
        rows = 9
        monkeypatch.setattr(da, "MAX_GRID_Y", 8)
    h, hkv, d = 4, 2, 16
    dtype = kv_dtype(device)
    kb, vb, slots = _pool(rows, hkv, d, dtype, device)
    q = torch.randn(rows, h, d, dtype=dtype, device=device)
    o = torch.full_like(q, float("nan"))
    mid_o, mid_lse = da.alloc_decode_buffers(rows, h, d, 1, device)
    da.decode_attention_fwd(q, kb, vb, o, _indptr([1] * rows, device), slots, mid_o, mid_lse, d ** -0.5,
                            heads_first=True)
    want = vb[slots].repeat_interleave(h // hkv, dim=1)
    assert torch.equal(o, want)


# the default block configs (plain prefill / prefix-heavy), and GQA-packed tiles (BLOCK_M rows = tokens x heads
# of a group): PACK 2 and 4 (reduced to what divides the group), token blocks not multiples of the key block
EXTEND_CONFIGS = ["plain", "heavy", (64, 32, 4, 2, 4), (128, 64, 4, 2, 2), (64, 64, 4, 2, 4), (256, 64, 8, 3, 4)]


@pytest.mark.parametrize("prefix,ext,h,hkv,d", EXTEND_CASES)
@pytest.mark.parametrize("cfg", EXTEND_CONFIGS, ids=str)
@pytest.mark.parametrize("contig", [False, True])  # new tokens' K/V from the pool / from this pass's tensors
def test_extend_kernel(device, prefix, ext, h, hkv, d, cfg, contig):
    _check_extend(device, prefix, ext, h, hkv, d, cfg, contig)


@pytest.mark.parametrize("prefix,ext,h,hkv,d", EXTEND_CASES)
@pytest.mark.parametrize("cfg", [c for c in EXTEND_CONFIGS if not isinstance(c, str)], ids=str)
@pytest.mark.parametrize("contig", [False, True])
def test_extend_kernel_lpt_tiles(device, prefix, ext, h, hkv, d, cfg, contig):
    """The programs take (request, query block) tiles from the host's longest-first list (extend_plan)."""
    _check_extend(device, prefix, ext, h, hkv, d, cfg, contig, tiled=True)


def _check_extend(device, prefix, ext, h, hkv, d, cfg, contig, tiled=False):
    from runtime.attention.extend_plan import lpt_tiles
    from runtime.attention.triton_ops.extend_attention import extend_attention_fwd, extend_block_tokens

    dtype = kv_dtype(device)
    seq = [p + e for p, e in zip(prefix, ext)]
    kb, vb, slots = _pool(sum(seq), hkv, d, dtype, device)
    kv_indptr, qo_indptr = _indptr(seq, device), _indptr(ext, device)
    q = torch.randn(sum(ext), h, d, dtype=dtype, device=device)
    o = torch.full_like(q, float("nan"))
    scale = d ** -0.5
    kw = {}
    if contig:
        # this pass's K/V as strided views of one [T, 2, Hkv, D] tensor (as a fused QKV output gives them);
        # the pool's copies of the new tokens are poisoned, so reading them instead would fail the check
        new = torch.cat([slots[kv_indptr[i] + p:kv_indptr[i + 1]] for i, p in enumerate(prefix)])
        kv = torch.stack([kb[new], vb[new]], dim=1)
        kw = {"k_ext": kv[:, 0], "v_ext": kv[:, 1]}
        kb, vb = kb.clone(), vb.clone()
        kb[new] = float("nan")
        vb[new] = float("nan")
    if isinstance(cfg, str):
        kw["prefix_heavy"] = cfg == "heavy"
    else:
        kw["config"] = cfg
    if tiled:
        tb, tm = lpt_tiles(ext, prefix, extend_block_tokens(cfg, h // hkv))
        kw["tiles"] = (torch.tensor(tb, dtype=torch.int32, device=device),
                       torch.tensor(tm, dtype=torch.int32, device=device))
    extend_attention_fwd(q, kb, vb, o, qo_indptr, kv_indptr, slots, max(ext), scale, **kw)
    if contig:
        kb[new], vb[new] = kw["k_ext"], kw["v_ext"]
    for i in range(len(ext)):
        idx = slots[kv_indptr[i]:kv_indptr[i + 1]]
        qi = q[qo_indptr[i]:qo_indptr[i + 1]]
        ref = ref_attention(qi, kb[idx], vb[idx], prefix[i], scale)
        assert rel_err(o[qo_indptr[i]:qo_indptr[i + 1]], ref) < TOL, (i, prefix[i], ext[i])


def _random_pool(prefix, ext, hkv, d, dtype, device):
    """A 2-layer KVPool of random K/V and random slots for requests of ``prefix + ext`` tokens."""
    from runtime.mem.kv_pool import KVPool

    total = sum(prefix) + sum(ext)
    pool = KVPool(total + 50, 2, hkv, d, dtype, device)
    for buf in pool.k_buffer + pool.v_buffer:
        buf.normal_()
    return pool, torch.randperm(pool.size, device=device)[:total]


def _layer_qkv(t, h, hkv, d, dtype, device):
    """Layer 1 of ``h``/``hkv`` heads of size ``d``, and random q/k/v for ``t`` tokens."""
    from runtime.attention.base import AttentionLayer

    layer = AttentionLayer(layer_id=1, num_heads=h, num_kv_heads=hkv, head_dim=d, scaling=d ** -0.5)
    return (layer, torch.randn(t, h, d, dtype=dtype, device=device), torch.randn(t, hkv, d, dtype=dtype, device=device),
            torch.randn(t, hkv, d, dtype=dtype, device=device))


def _batch(mode, prefix, ext, slots, device):
    from runtime.forward_batch import ForwardBatch

    seq = [p + e for p, e in zip(prefix, ext)]
    kv_indptr, qo_indptr = _indptr(seq, device), _indptr(ext, device)
    out_loc = torch.cat([slots[kv_indptr[i] + prefix[i]:kv_indptr[i + 1]] for i in range(len(ext))])
    positions = torch.cat([torch.arange(p, p + e) for p, e in zip(prefix, ext)]).to(device)
    return ForwardBatch(
        mode=mode, input_ids=torch.zeros(sum(ext), dtype=torch.long, device=device), positions=positions,
        out_cache_loc=out_loc.long(), qo_indptr=qo_indptr, kv_indptr=kv_indptr, kv_indices=slots.long(),
        prefix_lens=torch.tensor(prefix, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq, dtype=torch.int32, device=device),
        extend_lens_cpu=list(ext), prefix_lens_cpu=list(prefix))


@pytest.mark.parametrize("decode", [False, True])
def test_triton_backend_store_and_attend(device, decode):
    """The backend stores this pass's K/V at out_cache_loc and attends over prefix + new tokens."""
    from runtime.attention.triton_backend import TritonAttentionBackend
    from runtime.forward_batch import ForwardMode

    h, hkv, d = 8, 2, 64
    prefix = [0, 40, 7] if not decode else [9, 40, 1]
    ext = [21, 3, 66] if not decode else [1, 1, 1]
    dtype = kv_dtype(device)
    pool, slots = _random_pool(prefix, ext, hkv, d, dtype, device)
    mode = ForwardMode.DECODE if decode else ForwardMode.EXTEND
    batch = _batch(mode, prefix, ext, slots, device)
    backend = TritonAttentionBackend(pool)
    backend.init_forward_metadata(batch)
    layer, q, k, v = _layer_qkv(sum(ext), h, hkv, d, dtype, device)
    out = backend.forward(q, k, v, layer, batch)
    assert torch.equal(pool.k_buffer[1][batch.out_cache_loc], k)
    assert torch.equal(pool.v_buffer[1][batch.out_cache_loc], v)
    _check_rows(out, q, pool, slots, batch, prefix, layer.scaling)


class _Node:
    """A radix-tree node as cascade.find_groups sees it: its edge's tokens and its parent."""

    def __init__(self, n: int, parent=None) -> None:
        self.key, self.parent = [0] * n, parent


# (shared prefix length of each group, members per group, own tokens after the prefix per member (cycled),
#  loners (rows sharing nothing), H, Hkv, D, chunk members)
CASCADE_CASES = [
    ([1000, 300], [32, 5], [16, 1, 129, 64], 3, 32, 8, 128, 16),   # fork-like; 2 chunks for the 32
    ([40], [3], [1, 70], 1, 9, 3, 64, 2),                          # GQA 3, chunks of 2 (a loner chunk left)
    ([64, 33], [4, 2], [5], 0, 8, 1, 96, 64),                       # MHA-like group 8
]
if INTERPRET:
    CASCADE_CASES = [([70, 40], [3, 2], [1, 9], 1, 8, 2, 64, 2)]


@pytest.mark.parametrize("plens,members,own,loners,h,hkv,d,chunk", CASCADE_CASES)
@pytest.mark.parametrize("pad_chunks", [0, 3])   # CUDA-graph capacity padding: empty chunks
@pytest.mark.parametrize("one_split", [False, True])   # one split of the own part: stage 1 merges (no stage 2)
def test_decode_cascade_kernel(device, plens, members, own, loners, h, hkv, d, chunk, pad_chunks, one_split):
    """Rows sharing a prefix (read once per chunk by the shared stage) give the same attention as reading
    every row's whole KV; loners and rows left out of a chunk attend alone. Scratch poisoned with NaN."""
    from runtime.attention.cascade import plan_cascade
    from runtime.attention.triton_ops.decode_attention import (
        alloc_decode_buffers,
        cascade_num_splits,
        decode_attention_fwd,
        decode_num_splits,
    )
    from runtime.forward_batch import CascadeMeta

    dtype = kv_dtype(device)
    root = _Node(0)
    nodes, lens, shared_of = [], [], []
    k = 0
    for p, m in zip(plens, members):
        pnode = _Node(p, root)
        for _ in range(m):
            n_own = own[k % len(own)]
            k += 1
            nodes.append(_Node(n_own, pnode))
            lens.append(p + n_own)
            shared_of.append(len(plens) and plens.index(p))
    for i in range(loners):
        nodes.append(_Node(50 + 7 * i, root))
        lens.append(50 + 7 * i)
        shared_of.append(None)
    # Slots: each group's prefix slots once, then every row's own slots.
    total = sum(lens)
    kb, vb, pool_slots = _pool(total, hkv, d, dtype, device)
    prefix_slots = []
    used = 0
    for p in plens:
        prefix_slots.append(pool_slots[used:used + p])
        used += p
    rows = []
    for i, n in enumerate(lens):
        g = shared_of[i]
        head = prefix_slots[g] if g is not None else pool_slots[:0]
        tail = pool_slots[used:used + n - head.numel()]
        used += n - head.numel()
        rows.append(torch.cat([head, tail]))
    slots = torch.cat(rows)
    kv_indptr = _indptr(lens, device)
    plan = plan_cascade(nodes, kv_indptr[:-1].tolist(), chunk, max_chunks=64)
    assert plan is not None and plan.num_chunks >= len(plens)
    t = lambda x: torch.tensor(x, dtype=torch.int32, device=device)
    c_rows = plan.rows + [-1] * (chunk * pad_chunks)
    meta = CascadeMeta(t(plan.skip), t(c_rows).view(-1, chunk), t(plan.start + [0] * pad_chunks),
                       t(plan.length + [0] * pad_chunks))
    b = len(lens)
    meta.splits = 1 if INTERPRET else cascade_num_splits(b, hkv)
    splits = (1 if one_split else 2 if INTERPRET else max(2, decode_num_splits(b, hkv))) + meta.splits
    q = torch.randn(b, h, d, dtype=dtype, device=device)
    o = torch.full_like(q, float("nan"))
    mid_o, mid_lse = alloc_decode_buffers(b, h, d, splits, device)
    mid_o.fill_(float("nan"))
    mid_lse.fill_(float("nan"))
    scale = d ** -0.5
    decode_attention_fwd(q, kb, vb, o, kv_indptr, slots, mid_o, mid_lse, scale, cascade=meta)
    for i, n in enumerate(lens):
        idx = slots[kv_indptr[i]:kv_indptr[i + 1]]
        ref = ref_attention(q[i:i + 1], kb[idx], vb[idx], n - 1, scale)
        assert rel_err(o[i:i + 1], ref) < TOL, (i, n, plan.skip[i])


# Mixed batches: (prefix lengths, extend lengths, H, Hkv, D). Trailing one-token rows go through the decode
# kernel, the rest through the extend kernel (a one-token row before a longer one stays in the extend part).
MIXED_CASES = [
    ([0, 40, 7, 100, 3], [21, 3, 1, 1, 1], 8, 2, 64),
    ([5, 0, 66], [1, 30, 1], 4, 1, 64),
    ([9, 0, 130], [1, 1, 1], 8, 2, 64),            # all one-token: decode kernel only
    ([0, 1500, 300] + [700, 5, 2000] * 7, [300, 64, 129] + [1] * 21, 32, 8, 128),
    ([17] + [64] * 40, [513] + [1] * 40, 28, 4, 128),
]
if INTERPRET:
    MIXED_CASES = MIXED_CASES[:3]


@pytest.mark.parametrize("prefix,ext,h,hkv,d", MIXED_CASES)
@pytest.mark.parametrize("lpt", [False, True])   # SGLC_EXTEND_TILES=lpt: query tiles from the host's list
def test_triton_backend_mixed_batch(device, monkeypatch, prefix, ext, h, hkv, d, lpt):
    """An EXTEND batch with trailing decode rows (a mixed batch) vs the fp32 reference, every output row and
    the decode scratch poisoned with NaN before the pass."""
    from runtime.attention import triton_backend as tb
    from runtime.forward_batch import ForwardMode

    dtype = kv_dtype(device)
    pool, slots = _random_pool(prefix, ext, hkv, d, dtype, device)
    batch = _batch(ForwardMode.EXTEND, prefix, ext, slots, device)
    backend = tb.TritonAttentionBackend(pool)
    backend.lpt = lpt
    backend.init_forward_metadata(batch)
    tail = 0
    while tail < len(ext) and ext[len(ext) - 1 - tail] == 1:
        tail += 1
    assert batch.attn_meta.decode_rows == tail
    empty = torch.empty

    def poisoned(*args, **kw):
        t = empty(*args, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(tb.torch, "empty", poisoned)
    layer, q, k, v = _layer_qkv(sum(ext), h, hkv, d, dtype, device)
    out = backend.forward(q, k, v, layer, batch)
    out2 = backend.forward(q, k, v, layer, batch)   # the second layer call reuses the batch's decode scratch
    monkeypatch.undo()
    assert len(batch.attn_meta.decode_bufs) == (1 if tail else 0)
    assert (batch.attn_meta.tiles is not None) == (lpt and tail < len(ext))
    _check_rows(out, q, pool, slots, batch, prefix, layer.scaling)
    assert torch.equal(out, out2)


def _check_rows(out, q, pool, slots, batch, prefix, scale) -> None:
    """Every request's output rows of a backend pass (layer 1 of the pool) against the fp32 reference."""
    qo = batch.qo_indptr
    for i in range(len(prefix)):
        idx = slots[batch.kv_indptr[i]:batch.kv_indptr[i + 1]]
        ref = ref_attention(q[qo[i]:qo[i + 1]], pool.k_buffer[1][idx], pool.v_buffer[1][idx], prefix[i], scale)
        assert rel_err(out[qo[i]:qo[i + 1]], ref) < TOL, (i, prefix[i])


# (prefix, new tokens, H, Hkv, D): the block configs the backend picks on Hopper, for GQA groups 3, 6, 4 and 8
HOPPER_CONFIG_CASES = [
    ([0, 40, 7, 100], [21, 3, 70, 1], 12, 4, 32),     # group 3, plain: (128, 32, 4, 3, 1)
    ([300, 500, 0], [9, 20, 1], 12, 2, 32),           # group 6, prefix-heavy: (64, 64, 4, 3, 1)
    ([300, 500, 0, 9], [9, 20, 2, 1], 8, 2, 32),      # group 4, prefix-heavy, small: (64, 64, 4, 3, 4)
    ([0, 10], [130, 5], 8, 1, 32),                    # group 8, plain: (128, 32, 4, 3, 4), 4 heads a tile
]


@pytest.mark.parametrize("prefix,ext,h,hkv,d", HOPPER_CONFIG_CASES)
def test_triton_backend_lpt_tiles_with_hopper_configs(device, monkeypatch, prefix, ext, h, hkv, d):
    """SGLC_EXTEND_TILES=lpt through the backend with the block configs it uses on an H100 (in the interpreter
    the device is made to look like one, so the packed tiles and their token blocks are the real ones)."""
    from runtime.attention import triton_backend as tb
    from runtime.attention.triton_ops.extend_attention import extend_block_tokens
    from runtime.forward_batch import ForwardMode

    if device != "cuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    dtype = kv_dtype(device)
    pool, slots = _random_pool(prefix, ext, hkv, d, dtype, device)
    batch = _batch(ForwardMode.EXTEND, prefix, ext, slots, device)
    backend = tb.TritonAttentionBackend(pool, num_sms=132)
    backend.lpt = True
    backend.init_forward_metadata(batch)
    layer, q, k, v = _layer_qkv(sum(ext), h, hkv, d, dtype, device)
    out = backend.forward(q, k, v, layer, batch)
    meta = batch.attn_meta
    head = len(ext) - meta.decode_rows
    bt = extend_block_tokens(meta.extend_config, h // hkv)
    assert meta.tiles[0].shape[0] == sum(-(-e // bt) for e in ext[:head])   # every live block, no empty one
    _check_rows(out, q, pool, slots, batch, prefix, layer.scaling)
