"""Shared-prefix (cascade) decode: which rows of a decode batch share a cached prefix (host side, pure Python).

Fork branches and requests that hit one radix prefix decode side by side, each attending to the same
prefix K/V. Plain decode attention reads that K/V once per row; the cascade stage of the Triton decode
kernel (``triton_ops/decode_attention.py``) reads it once per *chunk* of rows. This module finds the
groups and lays them out as the kernel's device metadata.

Groups come from the radix tree, not from comparing slot lists: a running request holds a lock on
``req.last_node``, and every request below a tree node shares that node's whole path — the same tokens *and*
the same KV slots (a locked node's slots never change, and a request's ``kv_slots`` start with the slots
of the nodes it matched). A row joins the deepest node on its path that at least one other row also has
below it, if that node is at least ``min_shared`` tokens deep. Rows are then cut into chunks of ``chunk``
members (one tile of ``chunk * GQA group`` query rows, ~64); the largest groups get chunks first while
``max_chunks`` (the CUDA graph's capacity) lasts. A row outside every chunk simply attends on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_SHARED = 32        # tokens: a shorter shared prefix is not worth a chunk
MIN_BATCH = 8          # decode batches below this never plan (nor capture) the cascade stage
TILE_ROWS = 64         # query rows of one chunk's tile (members x GQA group)


def chunk_members(gqa_group: int) -> int:
    """Members per chunk: one tile of about ``TILE_ROWS`` query rows."""
    return max(1, TILE_ROWS // max(1, gqa_group))


def chunk_capacity(batch_size: int) -> int:
    """Chunks a decode batch of ``batch_size`` rows may use (monotone in the batch size, so a batch padded
    to a larger captured size always fits its graph's buffers)."""
    return max(1, batch_size // 8)


@dataclass
class CascadePlan:
    """Host lists for one decode batch: ``skip[b]`` prefix tokens of row b the chunks cover (0: none);
    chunk c covers rows ``rows[c*chunk:(c+1)*chunk]`` (-1 padded), whose KV starts at ``kv_indices[start[c]]``
    (a member's own list: every member has the same first ``length[c]`` slots)."""

    skip: list[int]
    rows: list[int]
    start: list[int]
    length: list[int]
    chunk: int

    @property
    def num_chunks(self) -> int:
        return len(self.start)


def find_groups(nodes: list, min_shared: int = MIN_SHARED) -> list[tuple[int, list[int]]]:
    """``(shared length, rows)`` of each set of at least two rows sharing a prefix of ``>= min_shared``
    tokens; ``nodes[b]`` is row b's locked radix node (``req.last_node``; None or the root: no prefix)."""
    count: dict[int, int] = {}
    chains: list[list] = []
    for n in nodes:
        chain = []
        while n is not None and n.parent is not None:   # the root (no parent) is no shared prefix
            chain.append(n)
            n = n.parent
        for x in chain:
            count[id(x)] = count.get(id(x), 0) + 1
        chains.append(chain)
    # NOTE: a row's deepest node that another row also has is its group; its ancestors are shallower, so if it
    # is under ``min_shared`` tokens deep, none qualifies. Depths only for those nodes: most rows of a batch
    # that shares nothing (offline) have none, and this runs whenever a request finishes (CascadePlanner).
    depth: dict[int, int] = {}
    groups: dict[int, tuple[int, list[int]]] = {}
    for b, chain in enumerate(chains):
        for i, x in enumerate(chain):   # deepest first
            if count[id(x)] >= 2:
                d = depth.get(id(x))
                if d is None:   # tokens from the root to the node's end
                    d = depth[id(x)] = sum(len(y.key) for y in chain[i:])
                if d >= min_shared:
                    groups.setdefault(id(x), (d, []))[1].append(b)
                break
    return [g for g in groups.values() if len(g[1]) >= 2]


def plan_cascade(nodes: list, kv_starts: list[int], chunk: int, max_chunks: int,
                 min_shared: int = MIN_SHARED) -> CascadePlan | None:
    """The chunk layout for a decode batch (``kv_starts[b]``: row b's offset in ``kv_indices``), or None
    when no rows share a prefix worth it."""
    return _layout(_largest_first(find_groups(nodes, min_shared)), kv_starts, chunk, max_chunks)


class CascadePlanner:
    """``plan_cascade`` for consecutive decode steps: the groups are recomputed only when the rows' locked
    nodes change (a decode batch usually keeps its requests from one step to the next; only the KV offsets
    move). Same nodes means same groups: a running request's shared prefix never changes (its nodes are
    locked), even if later inserts split the tree above it."""

    def __init__(self, chunk: int, min_shared: int = MIN_SHARED) -> None:
        self.chunk = chunk
        self.min_shared = min_shared
        self._nodes: list | None = None
        self._groups: list[tuple[int, list[int]]] = []

    def plan(self, nodes: list, kv_starts: list[int]) -> CascadePlan | None:
        # NOTE: list equality on TreeNodes (eq=False) is identity per element, in C; holding the list keeps
        # the nodes alive, so an id can't be reused by a new node.
        if nodes != self._nodes:
            self._nodes = nodes
            self._groups = _largest_first(find_groups(nodes, self.min_shared))
        return _layout(self._groups, kv_starts, self.chunk, chunk_capacity(len(nodes)))


def _largest_first(groups: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
    return sorted(groups, key=lambda g: -len(g[1]))


def _layout(groups: list[tuple[int, list[int]]], kv_starts: list[int], chunk: int,
            max_chunks: int) -> CascadePlan | None:
    if not groups:
        return None
    skip = [0] * len(kv_starts)
    rows: list[int] = []
    start: list[int] = []
    length: list[int] = []
    for plen, members in groups:
        for i in range(0, len(members), chunk):
            part = members[i:i + chunk]
            if len(start) >= max_chunks or len(part) < 2:
                break
            for b in part:
                skip[b] = plen
            rows.extend(part + [-1] * (chunk - len(part)))
            start.append(kv_starts[part[0]])
            length.append(plen)
    if not start:
        return None
    return CascadePlan(skip, rows, start, length, chunk)
