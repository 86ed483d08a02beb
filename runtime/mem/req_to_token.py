"""A device-resident copy of each in-flight request's KV slot list: one row per request.

The attention backends read a batch's KV through CSR ``kv_indices`` (every slot of every request, ~250k
entries for 256 requests of ~1k tokens). Building that list on the host from Python lists and uploading it
every decode step cost ~10 ms per step on a GPU host — as long as the forward pass itself. Here the slots
live on the device in ``table[row, position]``; a step uploads only what changed (the new tokens' slots,
B ints in decode, plus a request's cached prefix the first time it runs) and gathers ``kv_indices`` on the
device.

Sync protocol (host side, no device reads): a request remembers which list object its row mirrors
(``req.table_ref``) and how many leading slots are valid (``req.table_len``). The scheduler only ever
*extends* ``req.kv_slots`` in place or *replaces* it with a new list (cache insert, release, retraction);
a replaced list is compared with the old one on the host (C speed) and only the differing tail is
rewritten. A row whose request finished, or whose list was replaced, may be handed to another request.
"""
from __future__ import annotations

import torch

from ..scheduler.request import Req

# A fresh row whose cached radix prefix (at least this long) another fresh row of the same batch also starts with
# copies it from that row on the device instead of uploading it again (fork branches, few-shot requests).
COPY_MIN = 32


class Writes:
    """Row segments to upload: segment i writes ``vals[off_i : off_i + lens[i]]`` to
    ``table[rows[i], start_i :]``; ``shifts[i] = start_i - off_i``, so value j lands in column ``j + shift``.
    Then copies on the device: ``table[dst[k], :n[k]] = table[src[k], :n[k]]`` (sources are rows written here)."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.lens: list[int] = []
        self.shifts: list[int] = []
        self.vals: list[int] = []
        self.dst: list[int] = []
        self.src: list[int] = []
        self.n: list[int] = []

    def add(self, row: int, start: int, vals: list[int]) -> None:
        self.rows.append(row)
        self.lens.append(len(vals))
        self.shifts.append(start - len(self.vals))
        self.vals.extend(vals)

    def copy(self, dst: int, src: int, n: int) -> None:
        self.dst.append(dst)
        self.src.append(src)
        self.n.append(n)

    def __bool__(self) -> bool:
        return bool(self.rows) or bool(self.dst)


class ReqToTokenTable:
    def __init__(self, rows: int, width: int, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.table = torch.zeros((rows, width), dtype=torch.int32, device=self.device)
        self.free = list(range(rows - 1, -1, -1))
        self.owner: dict[int, Req] = {}

    @property
    def rows(self) -> int:
        return self.table.shape[0]

    @property
    def width(self) -> int:
        return self.table.shape[1]

    def plan(self, reqs: list[Req], prefix_lens: list[int], new_lens: list[int], writes: Writes) -> list[int]:
        """Assign rows to ``reqs`` and queue the host->device writes that make ``table[row, :prefix_len]``
        equal ``req.kv_slots[:prefix_len]`` (into ``writes``, see ``Writes``). Records that after this step
        the row holds ``prefix_len + new_len`` slots (the caller scatters the new tokens' slots)."""
        need = max((p + n for p, n in zip(prefix_lens, new_lens)), default=0)
        if need > self.width:
            self._grow(self.rows, max(need, 2 * self.width))
        rows = []
        # NOTE: requests locked on the same radix node with the same cached length hold the same leading slots
        # (the node's path): (node, length) -> the fresh row of this batch that uploads them first
        written: dict[tuple[int, int], int] = {}
        for req, p, n in zip(reqs, prefix_lens, new_lens):
            row = req.table_row
            if row < 0 or self.owner.get(row) is not req:
                row, valid = self._take(req, reqs), 0
            else:
                valid = self._valid(req, p)
            c = req.cached_len
            if valid == 0 and COPY_MIN <= c <= p and req.last_node is not None:
                key = (id(req.last_node), c)
                src = written.get(key)
                if src is None:
                    written[key] = row
                else:
                    writes.copy(row, src, c)
                    valid = c
            if valid < p:
                writes.add(row, valid, req.kv_slots[valid:p])
            req.table_ref, req.table_len = req.kv_slots, p + n
            rows.append(row)
        return rows

    @staticmethod
    def _valid(req: Req, p: int) -> int:
        """How many leading slots of the row still equal ``req.kv_slots`` (at most ``p``)."""
        ref, n = req.table_ref, min(req.table_len, p)
        if ref is req.kv_slots:
            return n
        if ref is None:
            return 0
        if ref[:n] == req.kv_slots[:n]:  # NOTE: list equality runs in C: ~1 ns per slot
            return n
        lo, hi = 0, n   # first differing position (lists usually share a long head)
        while lo < hi:
            mid = (lo + hi) // 2
            if ref[:mid + 1] == req.kv_slots[:mid + 1]:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _take(self, req: Req, batch: list[Req]) -> int:
        if not self.free:
            self._reclaim({id(r) for r in batch})
        if not self.free:
            old = self.rows
            self._grow(2 * old, self.width)
        row = self.free.pop()
        self.owner[row] = req
        req.table_row, req.table_ref, req.table_len = row, None, 0
        return row

    def _reclaim(self, in_batch: set[int]) -> None:
        """Rows of finished requests and of requests whose slot list was replaced (they rewrite anyway)."""
        for row, req in list(self.owner.items()):
            if id(req) in in_batch:
                continue
            if req.finished or req.table_ref is not req.kv_slots or not req.kv_slots:
                del self.owner[row]
                req.table_row = -1
                self.free.append(row)

    def _grow(self, rows: int, width: int) -> None:
        old = self.table
        self.table = torch.zeros((rows, width), dtype=torch.int32, device=self.device)
        self.table[:old.shape[0], :old.shape[1]] = old
        self.free = list(range(rows - 1, old.shape[0] - 1, -1)) + self.free

    @staticmethod
    def cells(rows: torch.Tensor, lens: torch.Tensor, shifts: torch.Tensor, total: int):
        """(row, column) of every cell of the segments: entry j of segment i is ``(rows[i], j + shifts[i])``,
        entries numbered across segments. No host sync (``output_size`` is given)."""
        row_of = torch.repeat_interleave(rows, lens, output_size=total)
        cols = torch.arange(total, dtype=torch.int32, device=rows.device)
        cols += torch.repeat_interleave(shifts, lens, output_size=total)
        return row_of, cols

    def write(self, rows: torch.Tensor, lens: torch.Tensor, shifts: torch.Tensor, vals: torch.Tensor,
              copies: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None) -> None:
        """Apply a ``Writes`` uploaded as device tensors: its segments, then its copies ``(dst, src, n, sum(n))``."""
        if vals.numel():
            self.table[self.cells(rows, lens, shifts, vals.numel())] = vals
        if copies is not None and copies[3]:
            dst, src, n, total = copies
            d_rows, cols = self.cells(dst, n, n - torch.cumsum(n, 0, dtype=n.dtype), total)   # column j of copy k
            self.table[d_rows, cols] = self.table[torch.repeat_interleave(src, n, output_size=total), cols]

    def put(self, rows: torch.Tensor, cols: torch.Tensor, slots: torch.Tensor) -> None:
        """``table[rows[k], cols[k]] = slots[k]``: the new tokens' slots of a batch."""
        self.table[rows, cols] = slots.int()

    def gather(self, rows: torch.Tensor, seq_lens: torch.Tensor, kv_indptr: torch.Tensor,
               total: int) -> torch.Tensor:
        """``kv_indices`` (int64, ``total`` entries): ``table[rows[i], :seq_lens[i]]`` concatenated."""
        return self.table[self.cells(rows, seq_lens, -kv_indptr[:-1], total)].long()
