"""Slot bookkeeping for the token-paged KV pool (no torch: testable anywhere)."""
from __future__ import annotations


class SlotAllocator:
    """Hands out KV slot indices ``0..size-1``; one slot holds one token's K/V for every layer.

    Free slots are a stack; ``alloc`` is all-or-nothing so a failed allocation leaks nothing.
    """

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"KV pool size must be positive, got {size}")
        self.size = size
        self._free: list[int] = list(range(size - 1, -1, -1))
        self._is_free = bytearray(b"\x01") * size

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def used(self) -> int:
        return self.size - len(self._free)

    def alloc(self, n: int) -> list[int] | None:
        """``n`` free slots, or ``None`` (and nothing taken) when fewer are free."""
        if n > len(self._free):
            return None
        if n == 0:
            return []
        out = self._free[-n:]
        del self._free[-n:]
        out.reverse()
        for s in out:
            self._is_free[s] = 0
        return out

    def free(self, slots) -> None:
        for s in slots:
            s = int(s)
            if self._is_free[s]:
                raise AssertionError(f"double free of KV slot {s}")
            self._is_free[s] = 1
            self._free.append(s)

    def reset(self) -> None:
        self._free = list(range(self.size - 1, -1, -1))
        self._is_free = bytearray(b"\x01") * self.size
