"""Contiguous K/V copies of the running decode batch, carried from one decode step to the next (CPU).

Gathering every request's K/V rows out of the token-paged pool costs as much as the attention itself on a
CPU, every layer of every step. Between two decode steps the batch usually differs only by one new token
per request (and sometimes by finished requests), so the backend keeps a padded ``[B, Hkv, cap, D]`` copy
per layer, appends the new token, drops finished rows, and gathers from the pool only when requests join
or anything else ran in between. The pool stays the source of truth: a rebuild reads only the pool.

A row continues from the last step iff the slot of its previous token (position ``seq_len - 2``) is a slot
that step wrote, for a sequence one token shorter: a slot is written by exactly one request per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..forward_batch import ForwardBatch
from ..mem.kv_pool import to_kv

HEADROOM = 64  # NOTE: positions allocated ahead so appending rarely reallocates


@dataclass
class StagingPlan:
    rows: torch.Tensor | None     # previous-step row of each current row (None: rebuild from the pool)
    identity: bool                # rows is 0..B-1: no reordering needed
    pos: torch.Tensor             # [B] position of each row's new token
    table: torch.Tensor | None    # [B, L] slots for a rebuild
    mask: torch.Tensor            # [B, 1, 1, L] valid positions
    length: int                   # L = longest sequence


class DecodeStaging:
    def __init__(self, num_layers: int, scratch_slot: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * num_layers
        self.v: list[torch.Tensor | None] = [None] * num_layers
        self.scratch = scratch_slot
        self._prev: dict[int, tuple[int, int]] | None = None   # out slot -> (row, seq_len) of the last step

    def invalidate(self) -> None:
        """Anything but a decode step ran (or may have reused slots): the next decode rebuilds."""
        self._prev = None

    def plan(self, batch: ForwardBatch) -> StagingPlan:
        seq = batch.seq_lens.tolist()
        dev = batch.seq_lens.device
        B, L = len(seq), max(seq)
        rows = self._continuing(batch, seq)
        outs = batch.out_cache_loc.tolist()
        self._prev = {s: (i, n) for i, (s, n) in enumerate(zip(outs, seq))}
        lens = torch.tensor(seq, device=dev)
        mask = (torch.arange(L, device=dev).unsqueeze(0) < lens.unsqueeze(1))[:, None, None, :]
        table = None
        if rows is None:
            starts = batch.kv_indptr.tolist()
            table = torch.full((B, L), self.scratch, dtype=torch.long, device=dev)
            for r in range(B):
                table[r, :seq[r]] = batch.kv_indices[starts[r]:starts[r] + seq[r]]
        return StagingPlan(None if rows is None else torch.tensor(rows, device=dev),
                           rows is not None and rows == list(range(B)), lens - 1, table, mask, L)

    def _continuing(self, batch: ForwardBatch, seq: list[int]) -> list[int] | None:
        if self._prev is None or min(seq) < 2:
            return None
        at = batch.kv_indptr[:-1].long() + batch.seq_lens.long() - 2
        prev_slots = batch.kv_indices[at].tolist()
        rows = []
        for slot, n in zip(prev_slots, seq):
            hit = self._prev.get(slot)
            if hit is None or hit[1] != n - 1:
                return None
            rows.append(hit[0])
        return rows

    def kv(self, layer_id: int, kbuf: torch.Tensor, vbuf: torch.Tensor, k_new: torch.Tensor,
           v_new: torch.Tensor, p: StagingPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's ``[B, Hkv, L, D]`` K and V for the step (the new token included)."""
        if p.rows is None or self.k[layer_id] is None:
            sk, sv = self._rebuild(kbuf, p), self._rebuild(vbuf, p)
        else:
            sk, sv = self.k[layer_id], self.v[layer_id]
            if not p.identity or sk.shape[0] != p.rows.shape[0]:  # requests finished, or rows reordered
                sk, sv = sk.index_select(0, p.rows), sv.index_select(0, p.rows)
            if sk.shape[2] < p.length:
                sk, sv = _grow(sk, p.length + HEADROOM), _grow(sv, p.length + HEADROOM)
            b = torch.arange(sk.shape[0], device=sk.device)
            sk[b, :, p.pos] = to_kv(k_new, sk.dtype)   # NOTE: exactly what the pool stored (fp8: saturated)
            sv[b, :, p.pos] = to_kv(v_new, sv.dtype)
        self.k[layer_id], self.v[layer_id] = sk, sv
        return sk[:, :, :p.length], sv[:, :, :p.length]

    @staticmethod
    def _rebuild(buf: torch.Tensor, p: StagingPlan) -> torch.Tensor:
        B, L = p.table.shape
        rows = torch.index_select(buf, 0, p.table.reshape(-1)).view(B, L, *buf.shape[1:])
        out = buf.new_zeros(B, buf.shape[1], L + HEADROOM, buf.shape[2])
        out[:, :, :L] = rows.transpose(1, 2)
        return out


def _grow(t: torch.Tensor, cap: int) -> torch.Tensor:
    out = t.new_zeros(t.shape[0], t.shape[1], cap, t.shape[3])
    out[:, :, :t.shape[2]] = t
    return out
