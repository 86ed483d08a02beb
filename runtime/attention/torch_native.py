"""The torch-native attention backend: runs anywhere, and is the reference for the GPU kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..forward_batch import ForwardBatch, ForwardMode
from .base import AttentionBackend, AttentionLayer
from .decode_staging import DecodeStaging


class TorchNativeBackend(AttentionBackend):
    """Decode: one padded SDPA over the batch, over K/V staged across steps (``DecodeStaging``).
    Extend: one SDPA per request (causal with prefix offset)."""

    def __init__(self, kv_pool, **_: object) -> None:
        super().__init__(kv_pool)
        self.staging = DecodeStaging(kv_pool.num_layers, kv_pool.scratch_slot)

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        if batch.mode is not ForwardMode.DECODE:
            self.staging.invalidate()
            batch.attn_meta = None
            return
        batch.attn_meta = self.staging.plan(batch)

    def forward(self, q, k, v, layer: AttentionLayer, batch: ForwardBatch) -> torch.Tensor:
        self.kv_pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        kbuf, vbuf = self.kv_pool.k_buffer[layer.layer_id], self.kv_pool.v_buffer[layer.layer_id]
        if batch.mode is ForwardMode.DECODE:
            return self._decode(q, k, v, kbuf, vbuf, layer, batch)
        return self._extend(q, kbuf, vbuf, layer, batch)

    def _decode(self, q, k, v, kbuf, vbuf, layer, batch) -> torch.Tensor:
        plan = batch.attn_meta
        kk, vv = self.staging.kv(layer.layer_id, kbuf, vbuf, k, v, plan)   # [B, Hkv, L, D]
        out = F.scaled_dot_product_attention(q.unsqueeze(2), kk.to(q.dtype), vv.to(q.dtype), attn_mask=plan.mask,
                                             scale=layer.scaling, enable_gqa=layer.num_heads != layer.num_kv_heads)
        return out.squeeze(2)

    def _extend(self, q, kbuf, vbuf, layer, batch) -> torch.Tensor:
        out = torch.empty_like(q)
        gqa = layer.num_heads != layer.num_kv_heads
        qo = batch.qo_indptr.tolist()
        kvp = batch.kv_indptr.tolist()
        for i, (n, prefix) in enumerate(zip(batch.extend_lens_cpu, batch.prefix_lens_cpu)):
            if n == 0:
                continue
            slots = batch.kv_indices[kvp[i]:kvp[i + 1]]
            qq = q[qo[i]:qo[i + 1]].transpose(0, 1).unsqueeze(0)        # [1, H, n, D]
            kk = torch.index_select(kbuf, 0, slots).transpose(0, 1).unsqueeze(0).to(q.dtype)  # [1, Hkv, L, D]
            vv = torch.index_select(vbuf, 0, slots).transpose(0, 1).unsqueeze(0).to(q.dtype)
            if prefix == 0:
                o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=layer.scaling,
                                                   enable_gqa=gqa)
            else:
                L = prefix + n
                mask = (torch.arange(L, device=q.device)[None, :]
                        <= (prefix + torch.arange(n, device=q.device))[:, None])
                o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, scale=layer.scaling,
                                                   enable_gqa=gqa)
            out[qo[i]:qo[i + 1]] = o[0].transpose(0, 1)
        return out

