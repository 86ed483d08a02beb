"""JSON Schema (draft 2020-12 subset) → ``rx`` IR, under the policy of :mod:`grammar.json_values`.

Every schema compiles to a :class:`Lang`: a language that is a *subset* of the schema's valid
serializations (never a superset: zero false accepts) plus ``exact`` — whether it is all of them
within the depth bound. Set operations that need exactness (``not``, ``if``/``else``, ``oneOf``
on overlapping branches, ``maxContains``) are refused when a side is not exact.

Two bounds keep the automata finite (both documented in docs/grammar.md): free-form values
(``{}``, ``true``, unconstrained ``items``/``additionalProperties``) nest at most
``free_depth`` levels, and a recursive ``$ref`` is unrolled at most ``max_recursion`` times
(deeper instances are not generated, so such languages are not exact). Declared structure
nests freely. Whatever cannot be expressed raises :class:`GrammarError`.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Optional

from . import json_values as J
from . import rx
from .errors import GrammarError
from .json_keywords import ANNOTATIONS, KeywordCompiler, Lang

logger = logging.getLogger(__name__)
FREE_DEPTH = 2          # nesting of free-form JSON values inside schemas
JSON_OBJECT_DEPTH = 4   # nesting of the json_object kind
MAX_RECURSION = 3       # unrollings of a recursive $ref


def schema_text_to_rx(text: str) -> rx.Node:
    """Parse JSON-schema text and compile it (the ``json_schema`` constraint kind)."""
    try:
        schema = json.loads(text)
    except ValueError as e:
        raise GrammarError(f"the json_schema constraint is not valid JSON: {e}") from None
    return schema_to_rx(schema)


def schema_to_rx(schema: Any, free_depth: int = FREE_DEPTH, max_recursion: int = MAX_RECURSION) -> rx.Node:
    """Compile a parsed JSON schema (dict or bool) to the ``rx`` IR."""
    return SchemaCompiler(schema, free_depth).compile(schema, max_recursion).node


def json_object_rx(depth: int = JSON_OBJECT_DEPTH) -> rx.Node:
    """Any JSON object (``json_object`` kind), nesting bounded by ``depth`` levels."""
    comp = SchemaCompiler({"type": "object"}, depth - 1)
    return comp.object_of(J.STRING, comp.free_value())


class SchemaCompiler(KeywordCompiler):
    """Walks one schema document; ``compile(subschema, budget)`` is the recursive entry."""

    def __init__(self, root: Any, free_depth: int) -> None:
        super().__init__()
        self.root = root
        self.free_depth = free_depth
        self._memo: dict[tuple[int, int], Lang] = {}
        self._active: set[tuple[int, int]] = set()
        self._stack: list[int] = []
        self._any: dict[int, rx.Node] = {}
        self._anchors = _collect_anchors(root)
        _check_ids(root)

    # -- universes -------------------------------------------------------------------------
    def free_value(self) -> rx.Node:
        """The universe of free-form values (``{}``, ``not``'s complement, ...)."""
        return self.any_value(self.free_depth)

    def any_value(self, budget: int) -> rx.Node:
        """Every canonical JSON value with at most ``budget`` container levels."""
        node = self._any.get(budget)
        if node is None:
            scalars = [J.STRING, J.number_any(), rx.lit("true"), rx.lit("false"), rx.lit("null")]
            if budget > 0:
                inner = self.any_value(budget - 1)
                scalars.append(self.array_of(inner))
                scalars.append(self.object_of(J.STRING, inner))
            node = self._any[budget] = rx.unit(rx.alt(*scalars))
        return node

    @staticmethod
    def array_of(item: rx.Node, lo: int = 0, hi: Optional[int] = None) -> rx.Node:
        if hi is not None and hi < lo:
            return rx.NOTHING
        if hi == 0:
            return rx.lit("[]")
        more = rx.rep(rx.seq(rx.lit(", "), item), max(lo - 1, 0), None if hi is None else hi - 1)
        body = rx.seq(item, more)
        return rx.seq(rx.lit("["), body if lo > 0 else rx.opt(body), rx.lit("]"))

    @staticmethod
    def object_of(key: rx.Node, value: rx.Node, lo: int = 0, hi: Optional[int] = None) -> rx.Node:
        member = rx.seq(key, rx.lit(": "), value)
        if hi is not None and hi < lo:
            return rx.NOTHING
        if hi == 0:
            return rx.lit("{}")
        more = rx.rep(rx.seq(rx.lit(", "), member), max(lo - 1, 0), None if hi is None else hi - 1)
        body = rx.seq(member, more)
        return rx.seq(rx.lit("{"), body if lo > 0 else rx.opt(body), rx.lit("}"))

    # -- the recursive entry ---------------------------------------------------------------
    def compile(self, schema: Any, budget: int) -> Lang:
        """``budget``: how many more times a $ref already being expanded may be re-entered."""
        if schema is True or schema == {}:
            return Lang(self.free_value(), True)
        if schema is False:
            return Lang(rx.NOTHING, True)
        if not isinstance(schema, dict):
            raise GrammarError(f"a schema must be an object or a boolean, got {schema!r}")
        key = (id(schema), budget)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        if key in self._active:  # a cycle that consumes no input: nothing finite matches
            return Lang(rx.NOTHING, False)
        self._active.add(key)
        self._stack.append(id(schema))
        try:
            lang = self.compile_keywords(schema, budget)
        finally:
            self._active.discard(key)
            self._stack.pop()
        lang = Lang(rx.unit(lang.node), lang.exact)
        self._memo[key] = lang
        return lang

    def compile_ref(self, ref: str, budget: int) -> Lang:
        """Compile a ``$ref``; re-entering a schema being expanded costs one unit of budget."""
        target = self.resolve_ref(ref)
        if id(target) in self._stack:
            if budget == 0:
                return Lang(rx.NOTHING, False)
            budget -= 1
        return self.compile(target, budget)

    def resolve_ref(self, ref: str) -> Any:
        """The subschema a ``$ref`` points to (local JSON pointers and ``$anchor`` names)."""
        root_id = self.root.get("$id") if isinstance(self.root, dict) else None
        if isinstance(root_id, str) and ref.startswith(root_id.split("#")[0]) and root_id:
            ref = ref[len(root_id.split("#")[0]):] or "#"
        if ref in self._anchors:
            return self._anchors[ref]
        if not ref.startswith("#"):
            raise GrammarError(f"$ref {ref!r} points outside this schema; inline it under $defs "
                               "and use '#/$defs/...' (remote references are not fetched)")
        target = self.root
        for raw in filter(None, ref[1:].split("/")):
            part = _unescape(raw)
            try:
                target = target[int(part)] if isinstance(target, list) else target[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise GrammarError(f"$ref {ref!r} does not resolve inside the schema") from None
        return target


def _unescape(part: str) -> str:
    from urllib.parse import unquote
    return unquote(part).replace("~1", "/").replace("~0", "~")


def _walk(schema: Any, path: str = ""):
    if isinstance(schema, dict):
        yield path, schema
        for k, v in schema.items():
            if k in ("enum", "const") or k in ANNOTATIONS:
                continue
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from _walk(v, f"{path}/{i}")


def _collect_anchors(root: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _, sub in _walk(root):
        anchor = sub.get("$anchor")
        if isinstance(anchor, str):
            out["#" + anchor] = sub
    return out


def _check_ids(root: Any) -> None:
    for path, sub in _walk(root):
        if path and "$id" in sub:
            raise GrammarError(f"nested $id at {path or '/'} (an embedded schema resource) is not "
                               "supported; move it under $defs without $id")
