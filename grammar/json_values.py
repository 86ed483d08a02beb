"""Canonical JSON building blocks as ``rx`` nodes: strings, numbers, integer ranges, literals.

The serialization policy (what the constraints accept) is Python's ``json.dumps(value,
ensure_ascii=False)`` with its default separators ``", "`` and ``": "``:
strings escape only ``"``, ``\\`` and control characters (``\\n``-style short forms, else
``\\u00XX``); integers are plain digits; floats are spelled like ``repr`` (``1.5``, ``2.0``,
``1e-05``, ``1e+16``). Every value has exactly one spelling, which keeps set operations exact.
"""
from __future__ import annotations

import json
import math
from typing import Any

from . import rx

_SHORT = {0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f", 0x0D: "r"}
DIGIT = rx.chars([(48, 57)])
NONZERO = rx.chars([(49, 57)])
NAT = rx.alt(rx.lit("0"), rx.seq(NONZERO, rx.star(DIGIT)))          # 0 | [1-9][0-9]*
NEG = rx.opt(rx.lit("-"))
FRAC_NONZERO = rx.seq(rx.lit("."), rx.star(DIGIT), NONZERO)           # .[0-9]*[1-9]
FRAC = rx.alt(rx.lit(".0"), FRAC_NONZERO)
EXP_MANTISSA = rx.seq(NONZERO, rx.opt(FRAC_NONZERO))


def encode_char(cp: int) -> str:
    """The canonical JSON spelling of one character inside a string literal."""
    if cp == 0x22:
        return '\\"'
    if cp == 0x5C:
        return "\\\\"
    if cp < 0x20:
        return "\\" + _SHORT[cp] if cp in _SHORT else f"\\u{cp:04x}"
    return chr(cp)


def encode_class(ranges: tuple[tuple[int, int], ...]) -> rx.Node:
    """A class of decoded characters → the alternatives of their canonical spellings."""
    raw = [r for r in rx.merge_ranges(_subtract(ranges, [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]))]
    special = [cp for lo, hi in ranges for cp in range(max(lo, 0), min(hi, 0x5C) + 1)
               if cp < 0x20 or cp in (0x22, 0x5C)]
    if not special:
        return ("chars", tuple(raw))
    # NOTE: a unit: the escape alternatives are determinized once, not once per repetition
    return rx.unit(rx.alt(("chars", tuple(raw)), *(rx.lit(encode_char(cp)) for cp in special)))


def _subtract(ranges, holes):
    out = []
    for lo, hi in ranges:
        pieces = [(lo, hi)]
        for hlo, hhi in holes:
            nxt = []
            for a, b in pieces:
                if b < hlo or a > hhi:
                    nxt.append((a, b))
                    continue
                if a < hlo:
                    nxt.append((a, hlo - 1))
                if b > hhi:
                    nxt.append((hhi + 1, b))
            pieces = nxt
        out.extend(pieces)
    return out


def encode_node(node: rx.Node) -> rx.Node:
    """Map a regex over decoded characters to one over canonical JSON spellings (a homomorphism)."""
    kind = node[0]
    if kind == "chars":
        return encode_class(node[1])
    if kind in ("seq", "alt"):
        return (kind, tuple(encode_node(n) for n in node[1]))
    if kind == "rep":
        return ("rep", encode_node(node[1]), node[2], node[3])
    if kind == "unit":
        return ("unit", encode_node(node[1]))
    if kind == "mod":
        return node
    return (kind, encode_node(node[1]), encode_node(node[2]))


STRING_CHAR = encode_class(((0, rx.MAX_CP),))
STRING = rx.seq(rx.lit('"'), rx.star(STRING_CHAR), rx.lit('"'))


def string_of(content: rx.Node) -> rx.Node:
    """A JSON string whose decoded content matches ``content`` (a regex over characters)."""
    return rx.seq(rx.lit('"'), encode_node(content), rx.lit('"'))


def number_any() -> rx.Node:
    """Every canonical number: integers, fixed floats, exponent floats."""
    fixed = rx.seq(NEG, NAT, FRAC)
    exp = rx.seq(NEG, EXP_MANTISSA, rx.lit("e"), rx.char_set("+-"), DIGIT, DIGIT, rx.opt(DIGIT))
    return rx.alt(rx.seq(NEG, NAT), fixed, exp)


def integer_any() -> rx.Node:
    """Every canonical spelling of an integral value: ``5``, ``5.0``, ``1e+16``."""
    exp = rx.seq(NEG, EXP_MANTISSA, rx.lit("e+"), DIGIT, DIGIT, rx.opt(DIGIT))
    return rx.alt(rx.seq(NEG, NAT, rx.opt(rx.lit(".0"))), exp)


def nat_range(lo: int, hi: int | None) -> rx.Node:
    """Decimal spellings (no leading zeros) of the naturals in [lo, hi] (hi None: unbounded)."""
    lo = max(lo, 0)
    if hi is not None and hi < lo:
        return rx.NOTHING
    if hi is None:
        width = len(str(lo))
        tail = rx.seq(NONZERO, rx.rep(DIGIT, width, None))  # all numbers with more digits
        return rx.alt(nat_range(lo, 10 ** width - 1), tail)
    parts = []
    for width in range(len(str(lo)), len(str(hi)) + 1):
        a, b = max(lo, 10 ** (width - 1) if width > 1 else 0), min(hi, 10 ** width - 1)
        if a <= b:
            parts.append(_same_width(str(a), str(b)))
    return rx.alt(*parts)


def _same_width(a: str, b: str) -> rx.Node:
    """Digit strings between ``a`` and ``b`` (same length), as a regex."""
    if not a:
        return rx.EMPTY
    if a[0] == b[0]:
        return rx.seq(rx.lit(a[0]), _same_width(a[1:], b[1:]))
    n = len(a) - 1
    parts = [rx.seq(rx.lit(a[0]), _same_width(a[1:], "9" * n))]
    if int(b[0]) - int(a[0]) > 1:
        parts.append(rx.seq(rx.chars([(ord(a[0]) + 1, ord(b[0]) - 1)]), rx.rep(DIGIT, n, n)))
    parts.append(rx.seq(rx.lit(b[0]), _same_width("0" * n, b[1:])))
    return rx.alt(*parts)


def int_range(lo: int | None, hi: int | None) -> rx.Node:
    """Plain integer spellings of the integers in [lo, hi] (None: unbounded)."""
    parts = []
    if hi is None or hi >= 0:
        parts.append(nat_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        neg_hi = None if lo is None else -lo
        parts.append(rx.seq(rx.lit("-"), nat_range(max(1, -hi if hi is not None else 1), neg_hi)))
    return rx.alt(*parts)


def literal(value: Any) -> tuple[rx.Node, bool]:
    """The spellings of a JSON value (for ``const``/``enum``) and whether they are all of them."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return rx.lit(json.dumps(value, ensure_ascii=False)), True
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return rx.NOTHING, True
        if float(value).is_integer() and abs(value) < 1e16:
            n = int(value)
            return rx.alt(rx.lit(str(n)), rx.lit(f"{n}.0")), True
        return rx.lit(json.dumps(value)), abs(value) < 1e16
    text = json.dumps(value, ensure_ascii=False)
    simple = _no_numbers(value) and _small_objects(value)
    return rx.lit(text), simple


def _no_numbers(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return False
    items = value.values() if isinstance(value, dict) else value
    return all(_no_numbers(v) for v in items)


def _small_objects(value: Any) -> bool:
    if isinstance(value, dict):
        return len(value) <= 1 and all(_small_objects(v) for v in value.values())
    if isinstance(value, list):
        return all(_small_objects(v) for v in value)
    return True


# Known string formats, enforced as these regexes (a subset of what the format allows).
FORMATS = {
    "date": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    "date-time": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                 r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    "email": r"[a-zA-Z0-9_%+-]+(\.[a-zA-Z0-9_%+-]+)*@[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
             r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*\.[a-zA-Z]{2,}",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "ipv4": r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
}
