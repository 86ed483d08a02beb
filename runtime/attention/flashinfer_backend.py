"""FlashInfer attention backend (page size 1), available only when ``flashinfer`` imports.

FlashInfer's paged API at page size 1 is exactly our CSR layout: ``kv_indptr``/``kv_indices`` are its
``paged_kv_indptr``/``paged_kv_indices`` and every ``last_page_len`` is 1. One ``plan`` per batch (host
work on the host copies of the lengths, no device sync), then one ``run`` per layer. A mixed pass (prefill
entries, then running requests' one-token decode rows) plans its prefill rows on the prefill wrapper and its
decode rows on the decode wrapper, as the Triton backend splits it between its two kernels.

CUDA graphs (decode): FlashInfer's wrappers keep their plan in buffers a captured kernel reads, so each captured
batch size gets its own wrapper (``use_cuda_graph=True``) over fixed index buffers, planned once before the
capture (``prepare_graph``) and again, with the real lengths and indices, before every replay
(``prepare_replay``). The graph wrappers share one int32 index buffer and one plan workspace: only one graph
replays at a time, and each replay is planned right before it, in stream order.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..errors import EngineError
from ..forward_batch import ForwardBatch, ForwardMode
from ..host_copy import pinned
from .base import AttentionBackend, AttentionLayer, trailing_decode_rows

try:  # pragma: no cover - only on GPU machines with flashinfer installed
    import flashinfer
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flashinfer = None

_WORKSPACE_BYTES = 256 * 1024 * 1024
_INT_WORKSPACE_BYTES = 8 * 1024 * 1024   # FlashInfer's own size for a wrapper's plan workspace


def flashinfer_available() -> bool:
    return flashinfer is not None and torch.cuda.is_available()


@dataclass
class FlashInferMeta:
    mode: ForwardMode
    planned_scale: float | None = None
    graph_wrapper: object | None = None   # a captured decode batch's own wrapper (prepare_graph)
    decode_rows: int = 0   # EXTEND: trailing one-token rows, planned on the decode wrapper


class FlashInferAttentionBackend(AttentionBackend):
    """Decode through ``BatchDecodeWithPagedKVCacheWrapper``, extend through
    ``BatchPrefillWithPagedKVCacheWrapper`` (causal, cached prefix included). ``num_heads`` is needed
    for the plan: pass it, or the first layer's call plans lazily."""

    supports_cuda_graph = True   # decode: a wrapper per captured batch size (prepare_graph / prepare_replay)

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
        self.graph_wrappers: dict[int, object] = {}   # captured batch size -> its decode wrapper
        self._graph_indices: torch.Tensor | None = None
        self._graph_int_workspace: torch.Tensor | None = None

    @property
    def decode_wrapper(self):
        """The decode wrapper, on tensor cores when a KV head serves >= 4 query heads (see ``_new_decode_wrapper``)."""
        if self._decode_wrapper is None:
            self._decode_wrapper = self._new_decode_wrapper()
        return self._decode_wrapper

    def _new_decode_wrapper(self, **graph_buffers):
        """NOTE: built lazily because the choice needs the query head count: the tensor-core kernel wins from a
        GQA group of 4 up, and FlashInfer's CUDA-core kernel only exists for groups 1, 2, 3, 4 and 8 (Qwen2's
        groups of 5, 6 and 7 would fail on it at the first decode)."""
        group = self.num_heads // self.kv_pool.num_kv_heads
        return flashinfer.BatchDecodeWithPagedKVCacheWrapper(self.workspace, "NHD", use_tensor_cores=group >= 4,
                                                             **graph_buffers)

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        if _graph_meta(batch) is not None:
            return   # a captured decode batch: planned by prepare_graph / prepare_replay
        batch.attn_meta = FlashInferMeta(batch.mode)
        self._batch = batch
        if self.num_heads is not None:
            self._plan(batch, self.sm_scale or self.kv_pool.head_dim ** -0.5)

    def _plan(self, batch: ForwardBatch, sm_scale: float) -> None:
        seq_cpu = _seq_lens(batch)
        indices = batch.kv_indices.to(torch.int32)
        if batch.mode is ForwardMode.DECODE:
            self._plan_decode(self.decode_wrapper, seq_cpu, indices, sm_scale)
        else:
            # A mixed pass: its trailing one-token rows go through the decode wrapper. In the prefill wrapper they
            # would share the prefill rows' query tile (up to 128 rows for one token) over their whole context.
            ext = batch.extend_lens_cpu
            d = trailing_decode_rows(ext)
            head = len(ext) - d
            split = sum(seq_cpu[:head])
            if head:
                pool = self.kv_pool
                qo_indptr = pinned([0, *itertools.accumulate(ext[:head])])
                self.prefill_wrapper.plan(qo_indptr, _kv_indptr(seq_cpu[:head]), indices[:split],
                                          pinned([1] * head), self.num_heads, pool.num_kv_heads, pool.head_dim, 1,
                                          causal=True, **self._dtypes(sm_scale))
            if d:
                self._plan_decode(self.decode_wrapper, seq_cpu[head:], indices[split:], sm_scale)
            batch.attn_meta.decode_rows = d
        batch.attn_meta.planned_scale = sm_scale

    def _plan_decode(self, wrapper, seq_cpu: list[int], indices: torch.Tensor, sm_scale: float) -> None:
        pool = self.kv_pool
        wrapper.plan(_kv_indptr(seq_cpu), indices, pinned([1] * len(seq_cpu)), self.num_heads, pool.num_kv_heads,
                     pool.head_dim, 1, pos_encoding_mode="NONE", **self._dtypes(sm_scale))

    def _dtypes(self, sm_scale: float) -> dict:
        dt = self.kv_pool.dtype
        return {"q_data_type": dt, "kv_data_type": dt, "sm_scale": sm_scale}

    # -- decode CUDA graphs (see the module docstring) ---------------------------------------------
    def prepare_graph(self, batch: ForwardBatch, bs: int) -> None:
        if self.num_heads is None:
            raise EngineError("the flashinfer backend needs num_heads before decode graphs are captured")
        dev = self.kv_pool.device
        # one index buffer for every graph wrapper, as large as the runner's index buffer (a later runner, e.g.
        # bench_latency's one per batch size, may have a larger one: FlashInfer refuses to plan past the buffer)
        if self._graph_indices is None or self._graph_indices.numel() < batch.kv_indices.numel():
            self._graph_indices = torch.empty(batch.kv_indices.numel(), dtype=torch.int32, device=dev)
        if self._graph_int_workspace is None:
            self._graph_int_workspace = torch.empty(_INT_WORKSPACE_BYTES, dtype=torch.uint8, device=dev)
        wrapper = self._new_decode_wrapper(
            use_cuda_graph=True, paged_kv_indptr_buffer=torch.empty(bs + 1, dtype=torch.int32, device=dev),
            paged_kv_indices_buffer=self._graph_indices,
            paged_kv_last_page_len_buffer=torch.ones(bs, dtype=torch.int32, device=dev))
        # NOTE: one plan workspace for every graph wrapper (each replay is planned right before it)
        wrapper.reset_workspace_buffer(self.workspace, self._graph_int_workspace)
        self.graph_wrappers[bs] = wrapper
        scale = self.sm_scale or self.kv_pool.head_dim ** -0.5
        batch.attn_meta = FlashInferMeta(ForwardMode.DECODE, planned_scale=scale, graph_wrapper=wrapper)
        # the runner's static batch: row i reads kv_indices[i], the scratch slot
        self._plan_decode(wrapper, [1] * bs, batch.kv_indices[:bs].to(torch.int32), scale)

    def prepare_replay(self, batch: ForwardBatch, graph_batch: ForwardBatch, bs: int) -> None:
        meta = _graph_meta(graph_batch)
        pad = bs - batch.batch_size
        # the runner has copied the batch's indices into the graph's buffer and put the padding rows' scratch
        # slots after them
        indices = graph_batch.kv_indices[:batch.kv_indices.numel() + pad].to(torch.int32)
        self._plan_decode(meta.graph_wrapper, _seq_lens(batch) + [1] * pad, indices, meta.planned_scale)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: AttentionLayer,
                batch: ForwardBatch) -> torch.Tensor:
        pool = self.kv_pool
        lid = layer.layer_id
        if k is not None:
            self._store_kv(pool.k_buffer[lid], pool.v_buffer[lid], batch.out_cache_loc, k, v)
        graph = _graph_meta(batch)
        if graph is not None:
            if graph.planned_scale != layer.scaling:
                raise EngineError(f"the flashinfer decode graphs were planned with softmax scale "
                                  f"{graph.planned_scale}, but layer {lid} uses {layer.scaling}; pass sm_scale "
                                  "to the backend or disable CUDA graphs")
            wrapper = graph.graph_wrapper
        else:
            if batch.attn_meta is None or self._batch is not batch:
                self.init_forward_metadata(batch)
            if self.num_heads is None:
                self.num_heads = layer.num_heads
            if batch.attn_meta.planned_scale != layer.scaling:
                self._plan(batch, layer.scaling)
            wrapper = self.decode_wrapper if batch.mode is ForwardMode.DECODE else self.prefill_wrapper
        q = q.reshape(q.shape[0], layer.num_heads, layer.head_dim)
        # Page size 1: the pool's [S, Hkv, D] buffers are [S, 1, Hkv, D] pages in NHD layout.
        cache = (pool.k_buffer[lid].unsqueeze(1), pool.v_buffer[lid].unsqueeze(1))
        d = batch.attn_meta.decode_rows
        if not d:
            return wrapper.run(q, cache)
        t = q.shape[0] - d
        if not t:
            return self.decode_wrapper.run(q, cache)
        return torch.cat([self.prefill_wrapper.run(q[:t], cache), self.decode_wrapper.run(q[t:], cache)])


def _graph_meta(batch: ForwardBatch) -> FlashInferMeta | None:
    meta = batch.attn_meta
    return meta if isinstance(meta, FlashInferMeta) and meta.graph_wrapper is not None else None


def _seq_lens(batch: ForwardBatch) -> list[int]:
    """Each request's KV length after this pass (host ints)."""
    return [p + e for p, e in zip(batch.prefix_lens_cpu, batch.extend_lens_cpu)]


def _kv_indptr(seq_cpu: list[int]) -> torch.Tensor:
    # NOTE: host-side indptrs: plan reads them on the host anyway, so no device->host sync; pinned, because
    # plan copies them to the GPU with non_blocking=True, which from pageable memory may sync the stream
    # (and so undo overlap scheduling). FlashInfer's plan still makes small pageable copies of its own
    # (a range buffer, the prefill's kv lengths): check with SGLC_PROFILE_SYNC=1 before relying on overlap.
    return pinned([0, *itertools.accumulate(seq_cpu)])
