"""Regex frontend: Python ``re`` syntax → ``rx`` IR, through ``re._parser`` (the stdlib parser).

Supported: literals, classes (incl. negated, ``\\d \\w \\s`` with Python's Unicode semantics),
``.``, quantifiers (lazy and possessive treated as greedy), alternation, groups (capturing,
non-capturing, named), ``^``/``$``/``\\A``/``\\Z`` at the ends, flags ``(?s)``, ``(?a)``, ``(?x)``.
Refused with :class:`GrammarError`: backreferences, lookarounds, conditionals, word boundaries,
anchors in the middle, case-insensitive and multiline flags.
"""
from __future__ import annotations

import re
from typing import Any

from . import rx
from .errors import GrammarError
from .unicode_tables import category_ranges

try:  # Python ≥ 3.11
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as P  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse as P  # type: ignore[no-redef]

_CATEGORIES = {
    "CATEGORY_DIGIT": ("digit", False), "CATEGORY_NOT_DIGIT": ("digit", True),
    "CATEGORY_WORD": ("word", False), "CATEGORY_NOT_WORD": ("word", True),
    "CATEGORY_SPACE": ("space", False), "CATEGORY_NOT_SPACE": ("space", True),
}
_REFUSED = {
    "GROUPREF": "backreferences (\\1, (?P=name))",
    "GROUPREF_EXISTS": "conditional groups (?(id)yes|no)",
    "ASSERT": "lookarounds ((?=...), (?<=...))",
    "ASSERT_NOT": "negative lookarounds ((?!...), (?<!...))",
}


class _Ctx:
    def __init__(self, flags: int, ecma: bool = False) -> None:
        self.dotall = bool(flags & re.DOTALL)
        self.ascii = bool(flags & re.ASCII) or ecma
        self.ecma = ecma


def parse_regex(pattern: str, *, search: bool = False, ecma: bool = False) -> rx.Node:
    """Parse ``pattern`` (fullmatch semantics) into the ``rx`` IR.

    With ``search=True`` (JSON-schema ``pattern``), an unanchored start/end matches anything
    before/after, like ``re.search``. ``ecma=True`` (JSON-schema patterns) reads ``\\d``/``\\w``
    as ASCII and ``.`` as any character but line terminators (an under-approximation of ECMA-262).
    """
    try:
        parsed = P.parse(pattern, 0)
    except (re.error, RecursionError, OverflowError) as e:
        raise GrammarError(f"invalid regex {pattern!r}: {e}") from None
    flags = parsed.state.flags
    for flag, name in ((re.IGNORECASE, "IGNORECASE (?i)"), (re.MULTILINE, "MULTILINE (?m)"),
                       (re.LOCALE, "LOCALE")):
        if flags & flag:
            raise GrammarError(f"regex flag {name} is not supported in {pattern!r}; "
                               "spell the alternatives out instead")
    items = list(parsed.data)
    head = bool(items) and _is_at(items[0], ("AT_BEGINNING", "AT_BEGINNING_STRING"))
    items = items[1:] if head else items
    tail = bool(items) and _is_at(items[-1], ("AT_END", "AT_END_STRING"))
    items = items[:-1] if tail else items
    ctx = _Ctx(flags, ecma)
    node = rx.seq(*(_convert(it, ctx, pattern) for it in items))
    if search:
        anything = rx.star(rx.ANY_CHAR)
        node = rx.seq(rx.EMPTY if head else anything, node, rx.EMPTY if tail else anything)
    return node


def _is_at(item: Any, names: tuple[str, ...]) -> bool:
    op, arg = item
    return str(op) == "AT" and str(arg) in names


def _convert_list(data: Any, ctx: _Ctx, pattern: str) -> rx.Node:
    return rx.seq(*(_convert(it, ctx, pattern) for it in data))


def _convert(item: Any, ctx: _Ctx, pattern: str) -> rx.Node:
    op, arg = item
    name = str(op)
    if name == "LITERAL":
        return ("chars", ((arg, arg),))
    if name == "NOT_LITERAL":
        return ("chars", rx.negate_ranges([(arg, arg)]))
    if name == "ANY":
        if ctx.ecma:
            return ("chars", rx.negate_ranges([(10, 10), (13, 13), (0x2028, 0x2029)]))
        return rx.ANY_CHAR if ctx.dotall else ("chars", rx.negate_ranges([(10, 10)]))
    if name == "IN":
        return _convert_class(arg, ctx)
    if name == "CATEGORY":
        return ("chars", _category(arg, ctx))
    if name == "BRANCH":
        return rx.alt(*(_convert_list(b, ctx, pattern) for b in arg[1]))
    if name == "SUBPATTERN":
        _group, add_flags, del_flags, sub = arg
        if add_flags & (re.IGNORECASE | re.MULTILINE):
            raise GrammarError(f"inline flags (?i)/(?m) are not supported in {pattern!r}")
        inner = _Ctx(0, ctx.ecma)
        inner.dotall = (ctx.dotall or bool(add_flags & re.DOTALL)) and not del_flags & re.DOTALL
        inner.ascii = ctx.ascii or bool(add_flags & re.ASCII)
        return _convert_list(sub, inner, pattern)
    if name == "ATOMIC_GROUP":
        raise GrammarError(f"atomic groups (?>...) are not supported in {pattern!r}")
    if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        lo, hi, sub = arg
        return rx.rep(_convert_list(sub, ctx, pattern), lo, None if hi == C.MAXREPEAT else hi)
    if name in _REFUSED:
        raise GrammarError(f"{_REFUSED[name]} are not supported in {pattern!r}: "
                           "a finite automaton cannot express them; rewrite without them")
    if name == "AT":
        raise GrammarError(f"anchor/boundary {arg} in the middle of {pattern!r} is not supported; "
                           "only ^ and $ at the very start and end are")
    raise GrammarError(f"regex construct {name} in {pattern!r} is not supported")


_ECMA_SPACE = ((9, 13), (32, 32), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
               (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF))


def _category(arg: Any, ctx: _Ctx) -> tuple[tuple[int, int], ...]:
    cat, neg = _CATEGORIES[str(arg)]
    ranges = _ECMA_SPACE if ctx.ecma and cat == "space" else category_ranges(cat, ctx.ascii)
    return rx.negate_ranges(ranges) if neg else ranges


def _convert_class(items: Any, ctx: _Ctx) -> rx.Node:
    ranges: list[tuple[int, int]] = []
    negate = False
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            ranges.append((arg, arg))
        elif name == "RANGE":
            ranges.append((arg[0], arg[1]))
        elif name == "CATEGORY":
            ranges.extend(_category(arg, ctx))
        else:
            raise GrammarError(f"character class item {name} is not supported")
    return ("chars", rx.negate_ranges(ranges) if negate else rx.merge_ranges(ranges))
