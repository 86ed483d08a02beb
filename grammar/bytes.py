"""UTF-8 lowering: a code point range → byte-range sequences (each a product of byte ranges)."""
from __future__ import annotations

import functools

ByteSeq = tuple[tuple[int, int], ...]
_SURROGATES = (0xD800, 0xDFFF)
_BOUNDS = ((0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF))


def _encode(cp: int) -> bytes:
    return chr(cp).encode("utf-8", "surrogatepass")


@functools.lru_cache(maxsize=65536)
def utf8_sequences(lo: int, hi: int) -> tuple[ByteSeq, ...]:
    """Byte-range sequences whose union encodes exactly the code points [lo, hi] (no surrogates)."""
    out: list[ByteSeq] = []
    stack = []
    for blo, bhi in _BOUNDS:  # split by encoded length
        a, b = max(lo, blo), min(hi, bhi)
        if a <= b:
            stack.append((a, b))
    pieces = []
    for a, b in stack:  # drop surrogates
        if b < _SURROGATES[0] or a > _SURROGATES[1]:
            pieces.append((a, b))
        else:
            if a < _SURROGATES[0]:
                pieces.append((a, _SURROGATES[0] - 1))
            if b > _SURROGATES[1]:
                pieces.append((_SURROGATES[1] + 1, b))
    work = list(reversed(pieces))
    while work:
        a, b = work.pop()
        split = _split(a, b)
        if split:
            work.extend(reversed(split))
            continue
        ea, eb = _encode(a), _encode(b)
        out.append(tuple((x, y) for x, y in zip(ea, eb)))
    return tuple(out)


def _split(a: int, b: int):
    """Split [a, b] (same encoded length) until every byte position is an independent range."""
    n = len(_encode(a))
    for i in range(1, n):
        m = (1 << (6 * i)) - 1
        if a & ~m != b & ~m:
            if a & m != 0:
                return [(a, a | m), ((a | m) + 1, b)]
            if b & m != m:
                return [(a, (b & ~m) - 1), (b & ~m, b)]
    return None


def complete_utf8_prefix(data: bytes) -> str:
    """The longest prefix of ``data`` made of complete UTF-8 characters, decoded."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return ""
