"""FlashInfer attention backend (page size 1), available only when ``flashinfer`` imports.

FlashInfer's paged API at page size 1 is exactly our CSR layout: ``kv_indptr``/``kv_indices`` are its
``paged_kv_indptr``/``paged_kv_indices`` and every ``last_page_len`` is 1. One ``plan`` per batch (host
work on the host copies of the lengths, no device sync), then one ``run`` per layer.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..errors import EngineError
from ..forward_batch import ForwardBatch, ForwardMode
from ..host_copy import pinned
from .base import AttentionBackend, AttentionLayer

try:  # pragma: no cover - only on GPU machines with flashinfer installed
    import flashinfer
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flashinfer = None

_WORKSPACE_BYTES = 256 * 1024 * 1024


def flashinfer_available() -> bool:
    return flashinfer is not None and torch.cuda.is_available()


@dataclass
class FlashInferMeta:
    mode: ForwardMode
    planned_scale: float | None = None


class FlashInferAttentionBackend(AttentionBackend):
    """Decode through ``BatchDecodeWithPagedKVCacheWrapper``, extend through
    ``BatchPrefillWithPagedKVCacheWrapper`` (causal, cached prefix included). ``num_heads`` is needed
    for the plan: pass it, or the first layer's call plans lazily."""

    def __init__(self, kv_pool, num_heads: int | None = None, sm_scale: float | None = None,
                 **_: object) -> None:
        super().__init__(kv_pool)
        if flashinfer is None:
            raise EngineError("the flashinfer backend needs the `flashinfer` package "
                              "(see docs/gpu.md); use attention_backend='triton' instead")
        if kv_pool.dtype not in (torch.float16, torch.bfloat16):
            raise EngineError(f"the flashinfer backend needs a float16/bfloat16 model and KV cache, not "
                              f"{kv_pool.dtype}; use attention_backend='triton' (or 'torch')")
        # NOTE: imported here, so the module imports without triton (the CPU tests of the plan)
        from .triton_ops.store_kv import store_kv

        self._store_kv = store_kv
        self.num_heads = num_heads
        self.sm_scale = sm_scale
        dev = kv_pool.device
        self.workspace = torch.zeros(_WORKSPACE_BYTES, dtype=torch.uint8, device=dev)
        self._decode_wrapper = None   # made once the query head count is known (see decode_wrapper)
        self.prefill_wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(self.workspace, "NHD")
        self._batch: ForwardBatch | None = None

    @property
    def decode_wrapper(self):
        """The decode wrapper, on tensor cores when a KV head serves >= 4 query heads.

        NOTE: built lazily because the choice needs the query head count: the tensor-core kernel wins from a
        GQA group of 4 up, and FlashInfer's CUDA-core kernel only exists for groups 1, 2, 3, 4 and 8 (Qwen2's
        groups of 5, 6 and 7 would fail on it at the first decode)."""
        if self._decode_wrapper is None:
            group = self.num_heads // self.kv_pool.num_kv_heads
            self._decode_wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                self.workspace, "NHD", use_tensor_cores=group >= 4)
        return self._decode_wrapper

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        batch.attn_meta = FlashInferMeta(batch.mode)
        self._batch = batch
        if self.num_heads is not None:
            self._plan(batch, self.sm_scale or self.kv_pool.head_dim ** -0.5)

    def _plan(self, batch: ForwardBatch, sm_scale: float) -> None:
        pool = self.kv_pool
        seq_cpu = [p + e for p, e in zip(batch.prefix_lens_cpu, batch.extend_lens_cpu)]
        bsz = len(seq_cpu)
        # NOTE: host-side indptrs: plan reads them on the host anyway, so no device->host sync; pinned, because
        # plan copies them to the GPU with non_blocking=True, which from pageable memory may sync the stream
        # (and so undo overlap scheduling). FlashInfer's plan still makes small pageable copies of its own
        # (a range buffer, the prefill's kv lengths): check with SGLC_PROFILE_SYNC=1 before relying on overlap.
        kv_indptr, last = pinned([0, *itertools.accumulate(seq_cpu)]), pinned([1] * bsz)
        indices = batch.kv_indices.to(torch.int32)
        common = {"q_data_type": pool.dtype, "kv_data_type": pool.dtype, "sm_scale": sm_scale}
        if batch.mode is ForwardMode.DECODE:
            self.decode_wrapper.plan(kv_indptr, indices, last, self.num_heads, pool.num_kv_heads,
                                     pool.head_dim, 1, pos_encoding_mode="NONE", **common)
        else:
            qo_indptr = pinned([0, *itertools.accumulate(batch.extend_lens_cpu)])
            self.prefill_wrapper.plan(qo_indptr, kv_indptr, indices, last, self.num_heads,
                                      pool.num_kv_heads, pool.head_dim, 1, causal=True, **common)
        batch.attn_meta.planned_scale = sm_scale

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: AttentionLayer,
                batch: ForwardBatch) -> torch.Tensor:
        pool = self.kv_pool
        lid = layer.layer_id
        if k is not None:
            self._store_kv(pool.k_buffer[lid], pool.v_buffer[lid], batch.out_cache_loc, k, v)
        if batch.attn_meta is None or self._batch is not batch:
            self.init_forward_metadata(batch)
        if self.num_heads is None:
            self.num_heads = layer.num_heads
        if batch.attn_meta.planned_scale != layer.scaling:
            self._plan(batch, layer.scaling)
        q = q.reshape(q.shape[0], layer.num_heads, layer.head_dim)
        # Page size 1: the pool's [S, Hkv, D] buffers are [S, 1, Hkv, D] pages in NHD layout.
        cache = (pool.k_buffer[lid].unsqueeze(1), pool.v_buffer[lid].unsqueeze(1))
        wrapper = self.decode_wrapper if batch.mode is ForwardMode.DECODE else self.prefill_wrapper
        return wrapper.run(q, cache)
