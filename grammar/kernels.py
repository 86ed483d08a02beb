"""Applying token bitmasks to logits (torch imported lazily; CPU and CUDA)."""
from __future__ import annotations

from typing import Any


def apply_token_bitmask_(logits: Any, bitmask: Any) -> None:
    """In place: ``logits[b, i] = -inf`` where bit ``i`` of ``bitmask[b]`` is clear.

    ``logits`` [B, V] float, ``bitmask`` [B, W] int32 (on any device; moved to logits' device).
    Columns past ``32 * W`` are masked too. One vectorized op, no loop over the vocabulary.
    """
    import torch

    batch, vocab = logits.shape
    mask = bitmask.to(device=logits.device, dtype=torch.int32, non_blocking=True)
    shifts = torch.arange(32, device=logits.device, dtype=torch.int32)
    # NOTE: unpack all words at once: [B, W, 32] bits, little-endian within each word
    bits = ((mask.unsqueeze(-1) >> shifts) & 1).view(batch, -1).bool()
    if bits.shape[1] >= vocab:
        allowed = bits[:, :vocab]
    else:
        allowed = torch.zeros(batch, vocab, dtype=torch.bool, device=logits.device)
        allowed[:, : bits.shape[1]] = bits
    logits.masked_fill_(~allowed, float("-inf"))
