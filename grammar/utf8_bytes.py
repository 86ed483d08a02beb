"""Code-point ranges → UTF-8 byte-range sequences, and per-state byte tries (for the byte PDA)."""
from __future__ import annotations

from collections.abc import Callable

# (lo, hi) blocks with one UTF-8 length each; surrogates (never valid UTF-8) are left out
_BLOCKS = ((0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF))

ByteSeq = tuple[tuple[int, int], ...]


def utf8_sequences(lo: int, hi: int) -> list[ByteSeq]:
    """Byte-range sequences whose concatenated products are exactly the UTF-8 encodings of [lo, hi]."""
    out: list[ByteSeq] = []
    for a, b in _BLOCKS:
        l, h = max(lo, a), min(hi, b)
        if l <= h:
            _split(l, h, out)
    return out


def _split(lo: int, hi: int, out: list[ByteSeq]) -> None:
    n = len(chr(lo).encode("utf-8"))
    for i in range(1, n):
        m = (1 << (6 * i)) - 1
        if lo & ~m != hi & ~m:
            if lo & m:
                _split(lo, lo | m, out)
                _split((lo | m) + 1, hi, out)
                return
            if hi & m != m:
                _split(lo, (hi & ~m) - 1, out)
                _split(hi & ~m, hi, out)
                return
    a, b = chr(lo).encode("utf-8"), chr(hi).encode("utf-8")
    out.append(tuple(zip(a, b)))


def fill_row(row: list[int], items: list[tuple[ByteSeq, int]], rows: list[list[int]],
             new_state: Callable[[], int], memo: dict) -> None:
    """Write byte transitions for ``items`` ((byte-range sequence, target state)) into ``row``.

    Intermediate (mid-character) states are hash-consed in ``memo`` by their remaining items, so a
    free-text class over all of Unicode costs a handful of states, shared across the automaton.
    """
    groups: dict[tuple[int, int], list[tuple[ByteSeq, int]]] = {}
    for seq, tgt in items:
        groups.setdefault(seq[0], []).append((seq[1:], tgt))
    for (lo, hi), sub in groups.items():
        if not sub[0][0]:
            assert len(sub) == 1, "overlapping code-point ranges in one DFA state"
            tgt = sub[0][1]
        else:
            key = tuple(sorted(sub))
            tgt = memo.get(key)
            if tgt is None:
                tgt = memo[key] = new_state()
                fill_row(rows[tgt], sub, rows, new_state, memo)
        for b in range(lo, hi + 1):
            assert row[b] in (0, tgt), "UTF-8 sequences of one state overlap"
            row[b] = tgt
