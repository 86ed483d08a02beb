"""RadixAttention's prefix cache: a radix tree over token ids whose nodes hold KV slot indices.

Contract (no torch, no model: testable anywhere):

* ``match_prefix(tokens)`` → :class:`MatchResult` — the slots of the longest cached prefix and the
  node where it ends (split if the match ends inside an edge).
* ``lock(node)`` / ``unlock(node)`` — reference counts along the path to the root; a locked node is
  never evicted, so a prefix in use stays in the pool.
* ``insert(tokens, slots)`` → how many leading tokens were already cached. The caller owns the slots it
  passed; slots covering the already-cached part are duplicates the caller must free
  (``slots[cached_before:returned]`` for a request that had matched ``cached_before`` tokens).
* ``evict(n)`` frees at least ``n`` slots from unlocked leaves in LRU order (or all it can).
* ``pin(...)`` / ``use_pins(tokens)`` / ``unpin(...)`` — hint locks (``Engine.warm(prefix, expect=n)``):
  a pinned prefix stays locked until ``n`` requests extending it were admitted, its deadline passed, its
  owner was aborted, or the cache is flushed (``clear`` drops pins first). See :class:`Pin`.

With ``disabled=True`` nothing is ever cached: ``match_prefix`` is empty and ``insert`` frees everything.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .allocator import SlotAllocator

_clock = itertools.count()


@dataclass(eq=False)
class TreeNode:
    key: list[int] = field(default_factory=list)      # token ids on the edge into this node
    value: list[int] = field(default_factory=list)    # KV slots, one per key token
    parent: TreeNode | None = None
    children: dict[int, TreeNode] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0

    def touch(self) -> None:
        self.last_access = next(_clock)


@dataclass(frozen=True)
class MatchResult:
    slots: list[int]
    node: TreeNode

    @property
    def length(self) -> int:
        return len(self.slots)


@dataclass(eq=False)
class Pin:
    """A hint lock on ``node`` (where ``tokens`` end): a prefix warmed for ``uses`` requests still to come."""

    owner: str
    tokens: list[int]
    node: TreeNode
    uses: int
    deadline: float


class RadixCache:
    def __init__(self, allocator: SlotAllocator, disabled: bool = False) -> None:
        self.allocator = allocator
        self.disabled = disabled
        self.reset()

    def reset(self) -> None:
        self.root = TreeNode()
        self.root.lock_ref = 1  # the root is never evicted
        self.evictable_size = 0   # slots held by unlocked nodes
        self.protected_size = 0   # slots held by locked nodes
        self.pins: list[Pin] = []  # oldest first

    @property
    def total_size(self) -> int:
        return self.evictable_size + self.protected_size

    # -- lookup -----------------------------------------------------------------------------
    def match_prefix(self, tokens: Sequence[int]) -> MatchResult:
        if self.disabled or not tokens:
            return MatchResult([], self.root)
        node, pos, slots = self.root, 0, []
        node.touch()
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                break
            n = _common_len(child.key, tokens, pos)
            if n < len(child.key):
                child = self._split(child, n)
            slots.extend(child.value)
            pos += n
            node = child
            node.touch()
            if n < len(child.key):
                break
        return MatchResult(slots, node)

    def _split(self, child: TreeNode, n: int) -> TreeNode:
        """Split ``child``'s edge after ``n`` tokens; returns the new upper node."""
        upper = TreeNode(key=child.key[:n], value=child.value[:n], parent=child.parent,
                         lock_ref=child.lock_ref, last_access=child.last_access)
        upper.children = {child.key[n]: child}
        child.parent.children[child.key[0]] = upper
        child.key, child.value, child.parent = child.key[n:], child.value[n:], upper
        return upper

    # -- insert -----------------------------------------------------------------------------
    def insert(self, tokens: Sequence[int], slots: Sequence[int]) -> int:
        """Cache ``tokens`` → ``slots``; returns the number of leading tokens that were already cached."""
        if len(tokens) != len(slots):
            raise ValueError(f"insert: {len(tokens)} tokens but {len(slots)} slots")
        if self.disabled:
            return 0
        node, pos = self.root, 0
        tokens, slots = list(tokens), list(slots)
        while pos < len(tokens):
            node.touch()
            child = node.children.get(tokens[pos])
            if child is None:
                leaf = TreeNode(key=tokens[pos:], value=slots[pos:], parent=node)
                leaf.touch()
                node.children[tokens[pos]] = leaf
                self.evictable_size += len(leaf.value)
                return pos
            n = _common_len(child.key, tokens, pos)
            if n < len(child.key):
                child = self._split(child, n)
            pos += n
            node = child
        node.touch()
        return pos

    # -- locking ----------------------------------------------------------------------------
    def lock(self, node: TreeNode) -> None:
        while node is not self.root and node is not None:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.value)
                self.protected_size += len(node.value)
            node.lock_ref += 1
            node = node.parent

    def unlock(self, node: TreeNode) -> None:
        while node is not self.root and node is not None:
            if node.lock_ref <= 0:
                raise AssertionError("unlock of an unlocked radix node")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.evictable_size += len(node.value)
                self.protected_size -= len(node.value)
            node = node.parent

    # -- pins (hint locks) -------------------------------------------------------------------
    def pin(self, owner: str, tokens: Sequence[int], node: TreeNode, uses: int, deadline: float) -> None:
        """Lock ``node`` (the end of cached ``tokens``) until ``uses`` requests extending ``tokens`` were
        admitted (:meth:`use_pins`), ``deadline`` passed (:meth:`expire_pins`) or :meth:`unpin`."""
        if self.disabled or uses <= 0 or node is self.root:
            return
        self.lock(node)
        self.pins.append(Pin(owner, list(tokens), node, uses, deadline))

    def use_pins(self, tokens: Sequence[int]) -> None:
        """A request with prompt ``tokens`` was admitted: it is one use of every pin it extends; a pin with
        no uses left is released (the admitted requests' own locks keep the prefix from now on)."""
        done = []
        for p in self.pins:
            if len(tokens) >= len(p.tokens) and tokens[:len(p.tokens)] == p.tokens:
                p.uses -= 1
                if p.uses <= 0:
                    done.append(p)
        self._drop_pins(done)

    def expire_pins(self, now: float) -> None:
        if self.pins:
            self._drop_pins([p for p in self.pins if p.deadline <= now])

    def unpin(self, owner: Callable[[str], bool] | None = None) -> int:
        """Release the pins whose owner matches (all when None); returns how many."""
        return self._drop_pins([p for p in self.pins if owner is None or owner(p.owner)])

    def _drop_pins(self, pins: list[Pin]) -> int:
        for p in pins:
            self.pins.remove(p)
            self.unlock(p.node)
        return len(pins)

    # -- eviction ---------------------------------------------------------------------------
    def evict(self, num_slots: int) -> int:
        """Free at least ``num_slots`` slots from unlocked leaves, least recently used first."""
        if self.disabled or num_slots <= 0:
            return 0
        heap = [(n.last_access, id(n), n) for n in self._leaves() if n.lock_ref == 0]
        heapq.heapify(heap)
        freed = 0
        while freed < num_slots and heap:
            _, _, leaf = heapq.heappop(heap)
            self.allocator.free(leaf.value)
            freed += len(leaf.value)
            self.evictable_size -= len(leaf.value)
            parent = leaf.parent
            del parent.children[leaf.key[0]]
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        return freed

    def clear(self) -> bool:
        """Drop every cached prefix (``flush_cache``) and every pin; refuses while a request holds a lock."""
        self.unpin()
        if self.protected_size > 0:
            return False
        self.evict(self.evictable_size)
        self.reset()
        return True

    def _leaves(self):
        stack = [self.root]
        while stack:
            n = stack.pop()
            if not n.children and n is not self.root:
                yield n
            stack.extend(n.children.values())

    def cached_slots(self) -> list[int]:
        """All slots held by the tree (for leak checks in tests)."""
        out, stack = [], [self.root]
        while stack:
            n = stack.pop()
            out.extend(n.value)
            stack.extend(n.children.values())
        return out


def _common_len(key: list[int], tokens: Sequence[int], start: int) -> int:
    n = min(len(key), len(tokens) - start)
    if key[:n] == tokens[start:start + n]:
        return n  # NOTE: the common case (whole edge matches) as one C-level list compare
    i = 0
    while i < n and key[i] == tokens[start + i]:
        i += 1
    return i
