"""What one model forward pass computes: the flattened tokens of a batch and their KV layout.

The KV pool is token-paged (page size 1): every token's K/V lives in one pool slot. A request's
KV is the list of its slot indices. The batch stores them CSR-style, as FlashInfer's paged API
does at page size 1, so the torch, Triton and FlashInfer backends read the same metadata:

* ``qo_indptr[B+1]`` — request i's new (query) tokens are rows ``qo_indptr[i]:qo_indptr[i+1]``
  of ``input_ids``/``positions``/``out_cache_loc`` and of q/k/v.
* ``kv_indptr[B+1]``, ``kv_indices[N]`` — request i attends to pool slots
  ``kv_indices[kv_indptr[i]:kv_indptr[i+1]]`` (its cached prefix followed by its new tokens).
* ``prefix_lens[B]`` — tokens already in the KV before this pass; ``seq_lens = prefix_lens + extend_lens``.
  New token j of request i sits at position ``prefix_lens[i] + j`` and sees KV positions ``<= prefix_lens[i] + j``.
* ``cascade`` (decode only, optional) — which rows share a cached prefix (``CascadeMeta``). It changes no
  result, only how a backend that ``supports_cascade`` reads the shared K/V; other backends ignore it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class CascadeMeta:
    """Device copy of a ``runtime.attention.cascade.CascadePlan`` (int32): rows ``chunk_rows[c]`` (-1 padded)
    share ``kv_indices[chunk_start[c] : chunk_start[c] + chunk_len[c]]``; row b's own part starts at
    ``skip[b]``. ``splits`` (the kernel's static split count of the shared stage) is set by the backend."""

    skip: torch.Tensor          # [B]
    chunk_rows: torch.Tensor    # [C, chunk]
    chunk_start: torch.Tensor   # [C]
    chunk_len: torch.Tensor     # [C]
    splits: int = 0


class ForwardMode(enum.Enum):
    EXTEND = "extend"   # prefill, possibly over a cached prefix (radix hit or chunked prefill)
    DECODE = "decode"   # exactly one new token per request


@dataclass
class ForwardBatch:
    mode: ForwardMode
    input_ids: torch.Tensor        # [T] int64
    positions: torch.Tensor        # [T] int64
    out_cache_loc: torch.Tensor    # [T] int64 — pool slots receiving the new tokens' K/V
    qo_indptr: torch.Tensor        # [B+1] int32
    kv_indptr: torch.Tensor        # [B+1] int32
    kv_indices: torch.Tensor       # [N] int64
    prefix_lens: torch.Tensor      # [B] int32
    seq_lens: torch.Tensor         # [B] int32
    # Host copies (python ints) for backends that loop over requests and for the sampler.
    extend_lens_cpu: list[int] = field(default_factory=list)
    prefix_lens_cpu: list[int] = field(default_factory=list)
    # Rows of the hidden states whose logits are needed (e.g. the last token of each request).
    logits_rows: torch.Tensor | None = None
    attn_meta: Any = None          # backend-private metadata from init_forward_metadata
    cascade: CascadeMeta | None = None

    @property
    def batch_size(self) -> int:
        return len(self.extend_lens_cpu)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])
