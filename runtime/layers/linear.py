"""Linear layers that own their weight loading (fused projections load per-shard)."""
from __future__ import annotations

import torch
from torch import nn


class MergedLinear(nn.Linear):
    """Several projections of one input stacked along the output dim (e.g. q|k|v, gate|up).

    ``load_shard(name, weight)`` copies a checkpoint's separate projection into its rows.
    """

    def __init__(self, in_features: int, shards: dict[str, int], bias: bool = False) -> None:
        super().__init__(in_features, sum(shards.values()), bias=bias)
        self.shard_offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for name, size in shards.items():
            self.shard_offsets[name] = (off, size)
            off += size

    def load_shard(self, shard: str, tensor: torch.Tensor, is_bias: bool = False) -> None:
        off, size = self.shard_offsets[shard]
        target = self.bias if is_bias else self.weight
        if tensor.shape[0] != size:
            raise ValueError(f"shard {shard}: expected {size} rows, checkpoint has {tuple(tensor.shape)}")
        with torch.no_grad():
            target[off:off + size].copy_(tensor)
