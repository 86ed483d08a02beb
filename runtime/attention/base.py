"""The attention backend interface.

A backend computes attention for one layer over the token-paged KV pool. The model calls
``backend.forward(q, k, v, layer, batch)``: the backend writes this pass's ``k``/``v`` into the pool at
``batch.out_cache_loc`` and returns ``softmax(q K^T * scale) V`` over each request's KV slots
(``batch.kv_indices`` per ``batch.kv_indptr``), causal within the request's new tokens.

Shapes: ``q [T, H, D]``, ``k``/``v`` ``[T, Hkv, D]`` (GQA: ``H % Hkv == 0``), output ``[T, H, D]``.
The pool is ``runtime.mem.kv_pool.KVPool``: ``pool.k_buffer[layer_id]`` / ``v_buffer`` are ``[S, Hkv, D]``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..forward_batch import ForwardBatch


@dataclass(frozen=True)
class AttentionLayer:
    layer_id: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float


class AttentionBackend(ABC):
    """Per-batch metadata once (``init_forward_metadata``), then one ``forward`` per layer."""

    # Handles any EXTEND batch, so also a mixed one (prefill entries, then one-token decode rows of running
    # requests; runtime/scheduler). A backend that special-cases EXTEND batches sets this to False.
    supports_mixed = True
    # Decode steps can be captured in CUDA graphs (runtime/cuda_graph_runner.py). A backend whose decode
    # metadata depends on the batch size alone needs nothing more (Triton: every length lives on the device);
    # one that plans on the host (FlashInfer) overrides ``prepare_graph`` and ``prepare_replay``.
    supports_cuda_graph = False

    def __init__(self, kv_pool) -> None:
        self.kv_pool = kv_pool

    def init_forward_metadata(self, batch: ForwardBatch) -> None:
        """Prepare backend-private metadata for ``batch`` (stored in ``batch.attn_meta``)."""

    def prepare_graph(self, batch: ForwardBatch, bs: int) -> None:
        """Before the decode graph of ``bs`` rows is captured over the runner's static ``batch`` (every row one
        KV slot, the scratch slot), outside the capture."""

    def prepare_replay(self, batch: ForwardBatch, graph_batch: ForwardBatch, bs: int) -> None:
        """Before the ``bs``-row graph (captured over ``graph_batch``) replays for ``batch``, whose
        ``batch.batch_size <= bs`` rows come first; each padding row reads one KV slot, the scratch slot. The
        runner has already copied the batch's inputs into ``graph_batch``'s buffers, padding rows included."""

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: AttentionLayer,
                batch: ForwardBatch) -> torch.Tensor:
        """Store k/v at ``batch.out_cache_loc`` in layer ``layer.layer_id`` and attend."""


def trailing_decode_rows(extend_lens: list[int]) -> int:
    """How many entries at the end of an EXTEND batch have exactly one new token: a mixed pass's decode rows
    (running requests riding along with the prefills), which a backend may send through its decode kernel."""
    n = 0
    for e in reversed(extend_lens):
        if e != 1:
            break
        n += 1
    return n
