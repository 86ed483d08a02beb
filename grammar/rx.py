"""The character-level regular expression IR: plain nested tuples (serializable, hashable).

Nodes::

    ("chars", ((lo, hi), ...))   one code point from sorted, merged inclusive ranges
    ("seq", (node, ...))         concatenation ("seq", ()) is the empty string
    ("alt", (node, ...))         alternation ("alt", ()) is the empty language
    ("rep", node, min, max)      repetition, max None for unbounded
    ("and", a, b) / ("diff", a, b)   intersection / difference (done on DFAs)
    ("mod", k)                   integer spellings -?(0|[1-9][0-9]*) of multiples of k
    ("unit", node)               same language; compiled once to a minimal DFA and embedded
                                 (keeps shared subtrees such as nested JSON values small)
"""
from __future__ import annotations

from collections.abc import Iterable

Node = tuple
MAX_CP = 0x10FFFF
EMPTY: Node = ("seq", ())
NOTHING: Node = ("alt", ())


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort and merge overlapping or adjacent inclusive ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def negate_ranges(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Complement within [0, 0x10FFFF]."""
    out, nxt = [], 0
    for lo, hi in merge_ranges(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CP:
        out.append((nxt, MAX_CP))
    return tuple(out)


def chars(ranges: Iterable[tuple[int, int]]) -> Node:
    return ("chars", merge_ranges(ranges))


def char_set(text: str) -> Node:
    return chars((ord(c), ord(c)) for c in text)


def lit(text: str) -> Node:
    """The literal string ``text``."""
    if len(text) == 1:
        return ("chars", ((ord(text), ord(text)),))
    return ("seq", tuple(("chars", ((ord(c), ord(c)),)) for c in text))


def seq(*nodes: Node) -> Node:
    flat: list[Node] = []
    for n in nodes:
        if n[0] == "seq":
            flat.extend(n[1])
        else:
            flat.append(n)
    if any(n == NOTHING for n in flat):
        return NOTHING
    return flat[0] if len(flat) == 1 else ("seq", tuple(flat))


def alt(*nodes: Node) -> Node:
    flat: list[Node] = []
    for n in nodes:
        items = n[1] if n[0] == "alt" else (n,)
        for m in items:
            if m not in flat:
                flat.append(m)
    return flat[0] if len(flat) == 1 else ("alt", tuple(flat))


def rep(node: Node, lo: int, hi: int | None) -> Node:
    if hi is not None and hi < lo:
        return NOTHING
    if (lo, hi) == (1, 1):
        return node
    if hi == 0:
        return EMPTY
    return ("rep", node, lo, hi)


def opt(node: Node) -> Node:
    return rep(node, 0, 1)


def star(node: Node) -> Node:
    return rep(node, 0, None)


def both(a: Node, b: Node) -> Node:
    return ("and", a, b)


def minus(a: Node, b: Node) -> Node:
    return ("diff", a, b)


ANY_CHAR: Node = ("chars", ((0, MAX_CP),))


def unit(node: Node) -> Node:
    """Mark ``node`` to be determinized and minimized on its own, once per compile."""
    return node if node[0] in ("unit", "chars") else ("unit", node)


def multiples_of(k: int) -> Node:
    """Plain integer spellings of the multiples of ``k`` (a cyclic automaton; not a regex)."""
    return ("mod", int(k))
