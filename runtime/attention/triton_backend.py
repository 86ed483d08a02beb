"""Triton attention backend over the token-paged KV pool (the default on GPU).

Decode: GQA-grouped split-KV kernel (``triton_ops/decode_attention.py``); extend/prefill over a cached
radix prefix: a flash-attention style kernel that reads the prefix through ``kv_indices`` and the new
tokens from this pass's K/V (``triton_ops/extend_attention.py``). Both read the batch's CSR metadata as is, so this backend needs no
per-batch host work beyond sizing the grid. Decode batches with a ``cascade`` plan (rows sharing a cached
prefix, ``cascade.py``) add the kernel's shared-prefix stage: each shared prefix is read once per chunk of
rows instead of once per row.

Mixed batches (an EXTEND batch whose trailing entries have one new token each: running requests' decode rows
riding along in a prefill pass): the leading multi-token rows go through the extend kernel, the trailing
one-token rows through the decode kernel, which groups the GQA heads and splits the KV (the extend kernel
would read each such row's KV once per query head into a mostly empty 128-row tile). The decode kernel reads
``kv_indptr`` entries as absolute offsets into ``kv_indices``, so the tail is just ``kv_indptr[B-d:]`` and
q/o rows ``[T-d:]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..envs import extend_lpt_tiles, triton_decode_kwargs
from ..forward_batch import ForwardBatch, ForwardMode
from ..host_copy import aligned, h2d
from .base import AttentionBackend, AttentionLayer, trailing_decode_rows
from .extend_plan import lpt_tiles
from .triton_ops.decode_attention import (
    alloc_decode_buffers,
    cascade_num_splits,
    decode_attention_fwd,
    decode_num_splits,
)
from .triton_ops.extend_attention import extend_attention_fwd, extend_block_config, extend_block_tokens
from .triton_ops.store_kv import store_kv


@dataclass
class TritonAttnMeta:
    """Per-batch metadata: the grid sizes, and the decode scratch (allocated by the first layer)."""

    mode: ForwardMode
    max_extend_len: int = 0
    prefix_heavy: bool = False
    typical_extend_len: int = 0   # EXTEND: the median request's new tokens (sizes the query tile)
    num_splits: int = 1
    decode_rows: int = 0     # EXTEND: trailing one-token entries that go through the decode kernel
    decode_bufs: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    tail_kv_indptr: torch.Tensor | None = None   # EXTEND: the decode rows' kv_indptr (16-byte aligned)
    # EXTEND with SGLC_EXTEND_TILES=lpt: the block config and its longest-first tile list (made by the first layer)
    extend_config: tuple | None = None
    tiles: tuple[torch.Tensor, torch.Tensor] | None = None


class TritonAttentionBackend(AttentionBackend):
    """Attention through Triton kernels; see the module docstring.

    ``max_kv_splits`` caps the split-KV factor of decode; ``num_sms`` defaults to the device's count.
    """

    # Decode metadata depends on the batch size alone (all lengths stay on the device): graph-capturable.
    supports_cuda_graph = True
    supports_cascade = True

    def __init__(self, kv_pool, max_kv_splits: int = 16, num_sms: int | None = None, **_: object) -> None:
        super().__init__(kv_pool)
        self.max_kv_splits = max_kv_splits
        if num_sms is None:
            dev = kv_pool.device
            num_sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 1
        self.num_sms = num_sms
        self.decode_kw = triton_decode_kwargs()
        self.lpt = extend_lpt_tiles()

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        if batch.mode is ForwardMode.DECODE:
            bs = batch.batch_size or batch.num_tokens
            hkv = self.kv_pool.num_kv_heads
            splits = decode_num_splits(bs, hkv, self.num_sms, self.max_kv_splits)
            if batch.cascade is not None:
                batch.cascade.splits = cascade_num_splits(bs, hkv, self.num_sms)
                splits += batch.cascade.splits
            batch.attn_meta = TritonAttnMeta(ForwardMode.DECODE, num_splits=splits)
        else:
            ext, pre = batch.extend_lens_cpu, batch.prefix_lens_cpu
            d = trailing_decode_rows(ext)
            head = len(ext) - d
            max_ext = max(ext[:head]) if head else (0 if ext else batch.num_tokens)
            heavy = sum(pre[:head]) >= 4 * max(1, sum(ext[:head]))
            splits = decode_num_splits(d, self.kv_pool.num_kv_heads, self.num_sms, self.max_kv_splits) if d else 1
            typical = sorted(ext[:head])[head // 2] if head else 0
            batch.attn_meta = TritonAttnMeta(ForwardMode.EXTEND, max_extend_len=max_ext, prefix_heavy=heavy,
                                             typical_extend_len=typical, num_splits=splits, decode_rows=d,
                                             tail_kv_indptr=aligned(batch.kv_indptr[head:]) if d else None)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: AttentionLayer,
                batch: ForwardBatch) -> torch.Tensor:
        pool = self.kv_pool
        lid = layer.layer_id
        if k is not None:
            store_kv(pool.k_buffer[lid], pool.v_buffer[lid], batch.out_cache_loc, k, v)
        meta = batch.attn_meta
        if meta is None:
            self.init_forward_metadata(batch)
            meta = batch.attn_meta
        q = q.view(q.shape[0], layer.num_heads, layer.head_dim)
        o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        if meta.mode is ForwardMode.DECODE:
            bufs = self._decode_bufs(meta, q.shape[0], layer, q.device)
            decode_attention_fwd(q, pool.k_buffer[lid], pool.v_buffer[lid], o, batch.kv_indptr,
                                 batch.kv_indices, bufs[0], bufs[1], layer.scaling, cascade=batch.cascade,
                                 **self.decode_kw)
            return o
        d = meta.decode_rows
        b = batch.batch_size - d
        if b:
            if self.lpt and meta.tiles is None:
                self._plan_tiles(meta, batch, b, layer, q.device)
            # NOTE: the grid covers entries [0, b) only; their q/o rows are addressed through qo_indptr.
            extend_attention_fwd(q, pool.k_buffer[lid], pool.v_buffer[lid], o, batch.qo_indptr[:b + 1],
                                 batch.kv_indptr[:b + 1], batch.kv_indices, meta.max_extend_len, layer.scaling,
                                 prefix_heavy=meta.prefix_heavy, k_ext=k, v_ext=v,
                                 typical_extend_len=meta.typical_extend_len, config=meta.extend_config,
                                 tiles=meta.tiles)
        if d:
            t = q.shape[0] - d
            bufs = self._decode_bufs(meta, d, layer, q.device)
            decode_attention_fwd(q[t:], pool.k_buffer[lid], pool.v_buffer[lid], o[t:], meta.tail_kv_indptr,
                                 batch.kv_indices, bufs[0], bufs[1], layer.scaling, **self.decode_kw)
        return o

    @staticmethod
    def _plan_tiles(meta: TritonAttnMeta, batch: ForwardBatch, b: int, layer: AttentionLayer, device) -> None:
        """The block config of this pass and its query tiles, heaviest first (once per batch: every layer
        shares them)."""
        group = layer.num_heads // layer.num_kv_heads
        cfg = extend_block_config(layer.head_dim, device, meta.prefix_heavy, group,
                                  meta.typical_extend_len or meta.max_extend_len, b, layer.num_kv_heads)
        tb, tm = lpt_tiles(batch.extend_lens_cpu[:b], batch.prefix_lens_cpu[:b], extend_block_tokens(cfg, group))
        meta.extend_config = cfg
        meta.tiles = (h2d(tb, torch.int32, device), h2d(tm, torch.int32, device))

    @staticmethod
    def _decode_bufs(meta: TritonAttnMeta, rows: int, layer: AttentionLayer, device) -> tuple:
        key = (layer.num_heads, layer.head_dim)
        bufs = meta.decode_bufs.get(key)
        if bufs is None:
            # NOTE: one scratch allocation per batch, shared by every layer (layers run in sequence).
            bufs = alloc_decode_buffers(rows, layer.num_heads, layer.head_dim, meta.num_splits, device)
            meta.decode_bufs[key] = bufs
        return bufs

