"""JSON Schema (draft 2020-12 subset) → ``rx`` IR, under the policy of :mod:`grammar.json_values`.

Every schema compiles to a :class:`Lang`: a language that is a *subset* of the schema's valid
serializations (never a superset: zero false accepts) plus ``exact`` — whether it is all of them
within the depth bound. Set operations that need exactness (``not``, ``if``/``else``, ``oneOf``
on overlapping branches, ``maxContains``) are refused when a side is not exact.

Free-form values (``{}``, ``true``, unconstrained ``items``/``additionalProperties``) nest at most
``free_depth`` levels (documented in docs/grammar.md). A recursive ``$ref`` becomes a rule call of a
context-free :class:`~grammar.cfg.Grammar` (:func:`schema_to_grammar`, unbounded nesting, run by the
pushdown matcher); where that is impossible (a recursive reference under ``not``/``allOf``
intersections, left recursion) it is unrolled at most ``max_recursion`` times instead (deeper
instances are not generated, so such languages are not exact). Declared structure nests freely.
Whatever cannot be expressed raises :class:`GrammarError`.
"""
from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urljoin

from . import json_values as J
from . import rx
from .cfg import CfgUnsupported, Grammar, call, compile_grammar
from .errors import GrammarError
from .json_keywords import KeywordCompiler, Lang

logger = logging.getLogger(__name__)
ROOT_URI = "https://sglc.invalid/root.json"  # base URI of a schema without $id
FREE_DEPTH = 2          # nesting of free-form JSON values inside schemas
JSON_OBJECT_DEPTH = 4   # nesting of the json_object kind
MAX_RECURSION = 3       # unrollings of a recursive $ref


def schema_text_to_rx(text: str, strict: bool = True) -> rx.Node | Grammar:
    """Parse JSON-schema text and compile it (the ``json_schema`` constraint kind): an ``rx`` node,
    or a :class:`Grammar` when a ``$ref`` is recursive (see :func:`schema_to_grammar`).

    ``strict`` (the default for generation): an object schema that does not mention
    ``additionalProperties``/``unevaluatedProperties`` allows no extra properties (write
    ``"additionalProperties": true`` to get the JSON-Schema default back), and known ``format``s
    are enforced. ``strict=False`` follows the spec: extras allowed, formats are annotations.
    """
    try:
        schema = json.loads(text)
    except ValueError as e:
        raise GrammarError(f"the json_schema constraint is not valid JSON: {e}") from None
    return schema_to_grammar(schema, strict=strict)


def schema_to_grammar(schema: Any, free_depth: int = FREE_DEPTH, strict: bool = False) -> rx.Node | Grammar:
    """Compile a parsed schema; recursive ``$ref``s become rule calls (unbounded nesting).

    Returns an ``rx`` node when nothing recursive is reached (the DFA path). Falls back to
    :func:`schema_to_rx` (bounded unrolling) when the pushdown form is refused.
    """
    comp = SchemaCompiler(schema, free_depth, strict, cfg=True)
    root = comp.compile(schema, 0).node
    if not comp.rule_targets:
        return root
    bodies = [root]
    while len(bodies) <= len(comp.rule_targets):  # a body may reach further recursive schemas
        bodies.append(comp.compile(comp.rule_targets[len(bodies) - 1], 0).node)
    names = ("<root>",) + tuple(comp._pointers.get(id(t), "$ref") for t in comp.rule_targets)
    grammar = Grammar(tuple(bodies), names)
    try:
        compile_grammar(grammar)  # NOTE: memoized, so the compiler's own call is free
    except CfgUnsupported as e:
        logger.info("recursive $ref unrolled %d times instead (%s)", MAX_RECURSION, e)
        return schema_to_rx(schema, free_depth, strict=strict)
    return grammar


def schema_to_rx(schema: Any, free_depth: int = FREE_DEPTH, max_recursion: int = MAX_RECURSION,
                 strict: bool = False) -> rx.Node:
    """Compile a parsed JSON schema (dict or bool) to the ``rx`` IR (``strict``: see above)."""
    return SchemaCompiler(schema, free_depth, strict).compile(schema, max_recursion).node


def json_object_rx(depth: int = JSON_OBJECT_DEPTH) -> rx.Node:
    """Any JSON object (``json_object`` kind), nesting bounded by ``depth`` levels."""
    comp = SchemaCompiler({"type": "object"}, depth - 1)
    return comp.object_of(J.STRING, comp.free_value())


class SchemaCompiler(KeywordCompiler):
    """Walks one schema document; ``compile(subschema, budget)`` is the recursive entry."""

    def __init__(self, root: Any, free_depth: int, strict: bool = False, cfg: bool = False) -> None:
        super().__init__()
        self.root = root
        self.strict = strict
        self.cfg = cfg                      # recursive $refs become rule calls (rule i+1 = rule_targets[i])
        self.rule_targets: list[Any] = []
        self._rule_ids: dict[int, int] = {}
        self.free_depth = free_depth
        self._memo: dict[tuple[int, int], Lang] = {}
        self._active: set[tuple[int, int]] = set()
        self._stack: list[int] = []
        self._any: dict[int, rx.Node] = {}
        self._uris, self._bases = _index(root)
        self._uris.setdefault(ROOT_URI, root)
        self._pointers = {id(sub): path or "#" for path, sub, _ in _walk(root, "", ROOT_URI)}

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
    def array_of(item: rx.Node, lo: int = 0, hi: int | None = None) -> rx.Node:
        if hi is not None and hi < lo:
            return rx.NOTHING
        if hi == 0:
            return rx.lit("[]")
        more = rx.rep(rx.seq(rx.lit(", "), item), max(lo - 1, 0), None if hi is None else hi - 1)
        body = rx.seq(item, more)
        return rx.seq(rx.lit("["), body if lo > 0 else rx.opt(body), rx.lit("]"))

    @staticmethod
    def object_of(key: rx.Node, value: rx.Node, lo: int = 0, hi: int | None = None) -> rx.Node:
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

    def compile_ref(self, schema: dict, budget: int) -> Lang:
        """Compile ``schema["$ref"]``; re-entering a schema being expanded costs one budget unit."""
        target = self.resolve_ref(schema["$ref"], self._bases.get(id(schema), ROOT_URI))
        if id(target) in self._stack and self.cfg:
            rid = self._rule_ids.get(id(target))
            if rid is None:
                self.rule_targets.append(target)
                rid = self._rule_ids[id(target)] = len(self.rule_targets)
            return Lang(call(rid), True)  # exactness of the body is decided where it is compiled
        if id(target) in self._stack:
            if budget == 0:
                return Lang(rx.NOTHING, False)
            budget -= 1
        return self.compile(target, budget)

    def resolve_ref(self, ref: str, base: str = "") -> Any:
        """The subschema ``ref`` points to: resources by ``$id``, anchors, JSON pointers."""
        base = base or ROOT_URI
        uri = base.split("#")[0] + ref if ref.startswith("#") else urljoin(base, ref)
        resource_uri, _, fragment = uri.partition("#")
        if fragment and not fragment.startswith("/") and uri in self._uris:
            return self._uris[uri]
        target = self._uris.get(resource_uri)
        if target is None:
            raise GrammarError(f"$ref {ref!r} points outside this schema (remote references are not "
                               "fetched); inline the target under $defs and use '#/$defs/...'")
        for raw in fragment.split("/")[1:] if fragment else []:
            part = _unescape(raw)
            try:
                target = target[int(part)] if isinstance(target, list) else target[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise GrammarError(f"$ref {ref!r} does not resolve inside the schema") from None
        return target


def _unescape(part: str) -> str:
    from urllib.parse import unquote
    return unquote(part).replace("~1", "/").replace("~0", "~")


_NOT_SCHEMAS = {"enum", "const", "default", "examples"}


def _walk(schema: Any, path: str = "", base: str = ""):
    """Yield (pointer, subschema, base URI) for every subschema (``$id`` changes the base)."""
    if isinstance(schema, dict):
        sid = schema.get("$id")
        if isinstance(sid, str):
            base = (sid if ":" in sid.split("/")[0] else urljoin(base, sid)).split("#")[0]
        yield path, schema, base
        for k, v in schema.items():
            if k not in _NOT_SCHEMAS:
                yield from _walk(v, f"{path}/{k}", base)
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from _walk(v, f"{path}/{i}", base)


def _index(root: Any) -> tuple[dict[str, Any], dict[int, str]]:
    """URI → schema for every resource (``$id``) and anchor; and each subschema's base URI."""
    uris: dict[str, Any] = {}
    bases: dict[int, str] = {}
    for _, sub, base in _walk(root, "", ROOT_URI):
        bases[id(sub)] = base
        if isinstance(sub.get("$id"), str):
            uris.setdefault(base, sub)
        for key in ("$anchor", "$dynamicAnchor"):
            if isinstance(sub.get(key), str):
                uris.setdefault(f"{base}#{sub[key]}", sub)
    return uris, bases
