"""The torch-native attention backend: runs anywhere, and is the reference for the GPU kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..forward_batch import ForwardBatch, ForwardMode
from .base import AttentionBackend, AttentionLayer


class TorchNativeBackend(AttentionBackend):
    """Decode: one padded SDPA over the batch. Extend: one SDPA per request (causal with prefix offset)."""

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        if batch.mode is not ForwardMode.DECODE:
            batch.attn_meta = None
            return
        # NOTE: built once per batch, reused by every layer: padded [B, L] slot table + validity mask.
        seq = batch.seq_lens.long()
        max_len = int(seq.max())
        ar = torch.arange(max_len, device=seq.device)
        valid = ar.unsqueeze(0) < seq.unsqueeze(1)
        idx = batch.kv_indptr[:-1].long().unsqueeze(1) + ar.unsqueeze(0)
        idx = torch.where(valid, idx, torch.zeros_like(idx))
        slots = batch.kv_indices[idx.clamp(max=max(batch.kv_indices.numel() - 1, 0))]
        slots = torch.where(valid, slots, torch.full_like(slots, self.kv_pool.scratch_slot))
        batch.attn_meta = (slots, valid[:, None, None, :])

    def forward(self, q, k, v, layer: AttentionLayer, batch: ForwardBatch) -> torch.Tensor:
        self.kv_pool.set_kv(layer.layer_id, batch.out_cache_loc, k, v)
        kbuf, vbuf = self.kv_pool.k_buffer[layer.layer_id], self.kv_pool.v_buffer[layer.layer_id]
        if batch.mode is ForwardMode.DECODE:
            return self._decode(q, kbuf, vbuf, layer, batch)
        return self._extend(q, kbuf, vbuf, layer, batch)

    def _decode(self, q, kbuf, vbuf, layer, batch) -> torch.Tensor:
        slots, mask = batch.attn_meta
        B, L = slots.shape
        # NOTE: index_select on the flattened slot table is ~2x faster than advanced indexing on CPU.
        flat = slots.reshape(-1)
        kk = torch.index_select(kbuf, 0, flat).view(B, L, *kbuf.shape[1:]).transpose(1, 2)  # [B, Hkv, L, D]
        vv = torch.index_select(vbuf, 0, flat).view(B, L, *vbuf.shape[1:]).transpose(1, 2)
        qq = q.unsqueeze(2)               # [B, H, 1, D]
        out = F.scaled_dot_product_attention(qq, kk.to(q.dtype), vv.to(q.dtype), attn_mask=mask,
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
