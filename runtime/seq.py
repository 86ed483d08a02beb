"""Token-sequence helpers shared by the engine and the compiler's client (pure Python, no torch)."""
from __future__ import annotations


def common_prefix_len(a: list, b: list) -> int:
    """Length of the longest common prefix of two lists, in O(n) C-level slice compares (no per-element loop
    in Python: prompts are thousands of tokens)."""
    n = min(len(a), len(b))
    if not n or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 1, n   # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo
