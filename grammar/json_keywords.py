"""Per-keyword compilation of JSON schemas (mixed into :class:`grammar.json_schema.SchemaCompiler`)."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from . import json_values as J
from . import rx
from .errors import GrammarError
from .regex_parser import parse_regex

logger = logging.getLogger(__name__)

ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
               "discriminator",  # OpenAPI/Pydantic: an annotation; disjointness is checked on consts
               "writeOnly", "contentMediaType", "contentEncoding", "contentSchema", "$schema", "$id",
               "$anchor", "$dynamicAnchor", "$vocabulary", "$defs", "definitions"}
KNOWN = {"$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "enum", "const", "type",
         "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
         "maxItems", "contains", "minContains", "maxContains", "uniqueItems", "minLength", "maxLength",
         "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
         "multipleOf", "propertyNames", "minProperties", "maxProperties", "dependentRequired",
         "unevaluatedProperties", "unevaluatedItems", "nullable", "patternProperties", "dependentSchemas"}
TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
_TYPE_KEYWORDS = {
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
    "array": ("items", "prefixItems", "minItems", "maxItems", "contains", "minContains", "maxContains",
              "uniqueItems", "unevaluatedItems"),
    "object": ("properties", "required", "additionalProperties", "propertyNames", "minProperties",
               "maxProperties", "dependentRequired", "unevaluatedProperties", "patternProperties",
               "dependentSchemas"),
}
_IN_PLACE = ("$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")


@dataclass(frozen=True)
class Lang:
    """A subset of a schema's valid serializations; ``exact`` if it is all of them (depth-bounded)."""

    node: rx.Node
    exact: bool


def _and(langs: list[Lang]) -> Lang:
    node = langs[0].node
    for lang in langs[1:]:
        node = rx.NOTHING if rx.NOTHING in (node, lang.node) else rx.both(node, lang.node)
    return Lang(node, all(lang.exact for lang in langs))


def _refuse(what: str, fix: str) -> GrammarError:
    return GrammarError(f"JSON schema: {what} is not supported; {fix}")


class KeywordCompiler:
    """Keyword handlers; the host provides ``compile``, ``any_value``, ``array_of``, ``object_of``,
    ``resolve_ref``."""

    def __init__(self) -> None:
        self._string_lang = None

    def compile_keywords(self, schema: dict, budget: int) -> Lang:
        unknown = sorted(set(schema) - KNOWN - ANNOTATIONS)
        if unknown:
            raise _refuse(f"keyword(s) {unknown}", "remove them or express them with supported keywords")
        parts: list[Lang] = []
        if "$ref" in schema:
            parts.append(self.compile_ref(schema, budget))
        for sub in schema.get("allOf", []):
            parts.append(self.compile(sub, budget))
        if "anyOf" in schema:
            langs = [self.compile(s, budget) for s in schema["anyOf"]]
            parts.append(Lang(rx.alt(*(x.node for x in langs)), all(x.exact for x in langs)))
        if "oneOf" in schema:
            parts.append(self._one_of(schema["oneOf"], budget))
        if "not" in schema:
            inner = self.compile(schema["not"], budget)
            if not inner.exact:
                raise _refuse("'not' over this subschema (it is only approximated)",
                              "use 'not' with types, const/enum or simple string/array constraints")
            parts.append(Lang(rx.minus(self.free_value(), inner.node), True))
        if "if" in schema and ("then" in schema or "else" in schema):
            parts.append(self._if_then_else(schema, budget))
        if "enum" in schema or "const" in schema:
            parts.append(self._enum(schema))
        typed = self._typed(schema, budget)
        if typed is not None:
            parts.append(typed)
        if schema.get("nullable") is True and parts:
            joined = _and(parts)
            return Lang(rx.alt(joined.node, rx.lit("null")), joined.exact)
        return _and(parts) if parts else Lang(self.free_value(), True)

    # -- combinators -----------------------------------------------------------------------
    def _one_of(self, branches: list, budget: int) -> Lang:
        langs = [self.compile(s, budget) for s in branches]
        if all(x.exact for x in langs):
            alts = []
            for i, x in enumerate(langs):
                others = [y.node for j, y in enumerate(langs) if j != i]
                alts.append(rx.minus(x.node, rx.alt(*others)) if others else x.node)
            return Lang(rx.alt(*alts), True)
        kinds = [_possible_types(s) for s in branches]
        if all(a.isdisjoint(b) for i, a in enumerate(kinds) for b in kinds[i + 1:]) or self._discriminated(branches):
            return Lang(rx.alt(*(x.node for x in langs)), False)
        raise _refuse("'oneOf' with overlapping, approximated branches",
                      "make the branches disjoint (different types or a const discriminator) or use anyOf")

    def _discriminated(self, branches: list) -> bool:
        """Object branches that all require one property with pairwise different const values
        (a discriminated union): no instance can match two of them."""
        consts: list[dict] = []
        for branch in branches:
            while isinstance(branch, dict) and set(branch) - ANNOTATIONS == {"$ref"}:
                branch = self.resolve_ref(branch["$ref"], self._bases.get(id(branch), ""))
            if not isinstance(branch, dict) or branch.get("type") != "object":
                return False
            props, required = branch.get("properties", {}), set(branch.get("required", []))
            found = {}
            for name, sub in props.items():
                vals = [sub["const"]] if isinstance(sub, dict) and "const" in sub else (
                    sub.get("enum") if isinstance(sub, dict) and isinstance(sub.get("enum"), list) else None)
                if name in required and vals is not None:
                    found[name] = [_canonical(v) for v in vals]
            consts.append(found)
        for name in set.intersection(*(set(c) for c in consts)) if consts else ():
            seen: set[str] = set()
            if all(not seen.intersection(c[name]) and not seen.update(c[name]) for c in consts):
                return True
        return False

    def _if_then_else(self, schema: dict, budget: int) -> Lang:
        cond = self.compile(schema["if"], budget)
        if not cond.exact:
            raise _refuse("'if' over this subschema (it is only approximated)",
                          "use a simpler condition (types, const/enum) or anyOf")
        then = self.compile(schema.get("then", True), budget)
        other = self.compile(schema.get("else", True), budget)
        node = rx.alt(rx.both(cond.node, then.node),
                      rx.both(rx.minus(self.free_value(), cond.node), other.node))
        return Lang(node, then.exact and other.exact)

    def _enum(self, schema: dict) -> Lang:
        values = list(schema["enum"]) if "enum" in schema else None
        if "const" in schema:
            values = [v for v in values if _json_equal(v, schema["const"])] if values is not None else [schema["const"]]
        langs = [J.literal(v) for v in values or []]
        return Lang(rx.alt(*(x[0] for x in langs)), all(x[1] for x in langs))

    # -- types -----------------------------------------------------------------------------
    def _typed(self, schema: dict, budget: int) -> Lang | None:
        declared = schema.get("type")
        used = {t for t, kws in _TYPE_KEYWORDS.items() if any(k in schema for k in kws)}
        if declared is None and not used:
            return None
        types = [declared] if isinstance(declared, str) else list(declared or TYPES)
        if "number" in types and "integer" in types:
            types.remove("integer")
        langs = []
        for t in types:
            if t not in TYPES:
                raise GrammarError(f"JSON schema: unknown type {t!r}; use one of {list(TYPES)}")
            langs.append(getattr(self, "_type_" + t)(schema, budget))
        return Lang(rx.alt(*(x.node for x in langs)), all(x.exact for x in langs))

    def _type_null(self, schema: dict, budget: int) -> Lang:
        return Lang(rx.lit("null"), True)

    def _type_boolean(self, schema: dict, budget: int) -> Lang:
        return Lang(rx.alt(rx.lit("true"), rx.lit("false")), True)

    def _type_string(self, schema: dict, budget: int) -> Lang:
        content: list[rx.Node] = []
        exact = True
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        if lo or hi is not None:
            content.append(rx.rep(rx.ANY_CHAR, int(lo), None if hi is None else int(hi)))
        if "pattern" in schema:
            content.append(parse_regex(schema["pattern"], search=True, ecma=True))
        fmt = schema.get("format") if self.strict else None  # spec mode: formats are annotations
        if fmt in J.FORMATS:
            content.append(parse_regex(J.FORMATS[fmt]))
            exact = False
        elif fmt is not None:
            logger.warning("JSON schema format %r is not enforced (an annotation)", fmt)
        if not content:
            return Lang(J.STRING, True)
        node = content[0]
        for extra in content[1:]:
            node = rx.both(node, extra)
        return Lang(J.string_of(node), exact)

    def _type_integer(self, schema: dict, budget: int) -> Lang:
        lo, hi = _int_bounds(schema)
        if lo is None and hi is None:
            lang = Lang(J.integer_any(), "multipleOf" not in schema)
        else:
            lang = Lang(J.int_range(lo, hi), False)
        if "multipleOf" in schema:
            lang = Lang(rx.both(lang.node, self._multiple_of(schema["multipleOf"], True)), False)
        return lang

    def _type_number(self, schema: dict, budget: int) -> Lang:
        lang = self._number_bounds(schema)
        if "multipleOf" in schema:
            lang = Lang(rx.both(lang.node, self._multiple_of(schema["multipleOf"], False)), False)
        return lang

    def _number_bounds(self, schema: dict) -> Lang:
        bounds = [k for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema]
        if not bounds:
            return Lang(J.number_any(), True)
        ilo, ihi = _int_bounds(schema)
        integral = rx.seq(J.int_range(ilo, ihi), rx.opt(rx.lit(".0")))
        flo = _num(schema, "minimum", "exclusiveMinimum", max)
        fhi = _num(schema, "maximum", "exclusiveMaximum", min)
        pos_lo = max(0, math.ceil(flo)) if flo is not None else 0
        pos_hi = math.floor(fhi) - 1 if fhi is not None else None
        neg_lo = max(0, math.ceil(-fhi)) if fhi is not None else 0
        neg_hi = math.floor(-flo) - 1 if flo is not None else None
        frac = rx.alt(rx.seq(J.nat_range(pos_lo, pos_hi), J.FRAC_NONZERO),
                      rx.seq(rx.lit("-"), J.nat_range(neg_lo, neg_hi), J.FRAC_NONZERO))
        edges = []  # non-integer, non-negative bounds: the fractions beside the bound itself
        lo_strict = "exclusiveMinimum" in schema and flo == schema["exclusiveMinimum"]
        hi_strict = "exclusiveMaximum" in schema and fhi == schema["exclusiveMaximum"]
        if flo is not None and flo >= 0 and not float(flo).is_integer() and "e" not in repr(float(flo)):
            whole, digits = repr(float(flo)).split(".")
            if fhi is None or fhi >= int(whole) + 1:
                edges.append(rx.seq(rx.lit(whole + "."), _frac_cmp(digits, True, lo_strict)))
        if fhi is not None and fhi >= 0 and not float(fhi).is_integer() and "e" not in repr(float(fhi)):
            whole, digits = repr(float(fhi)).split(".")
            if flo is None or flo <= int(whole):
                edges.append(rx.seq(rx.lit(whole + "."), _frac_cmp(digits, False, hi_strict)))
        return Lang(rx.alt(integral, frac, *edges), False)

    def _multiple_of(self, step: float, integer: bool) -> rx.Node:
        """Canonical spellings of multiples of ``step`` (integers, or powers of ten like 0.01)."""
        if float(step).is_integer() and 0 < step <= 10_000:
            return rx.multiples_of(int(step))
        if 0 < step < 1 and float(1 / step).is_integer() and str(int(1 / step)).rstrip("0") == "1":
            places = len(str(int(1 / step))) - 1  # at most `places` decimals
            if integer:
                return rx.seq(J.NEG, J.NAT)
            return rx.seq(J.NEG, J.NAT, rx.opt(rx.alt(rx.lit(".0"), rx.seq(
                rx.lit("."), rx.rep(J.DIGIT, 0, places - 1), J.NONZERO))))
        raise _refuse(f"multipleOf {step}", "use an integer, or a power of ten such as 0.01")

    # arrays and objects live in json_containers (kept separate for size)
    from .json_containers import _contains, _count_list, _members, _type_array, _type_object


def _frac_cmp(d: str, greater: bool, strict: bool) -> rx.Node:
    """Canonical fraction digits f (no trailing zero) with 0.f ≥ 0.d (``greater``) or ≤ 0.d."""
    alts = []
    for i, ch in enumerate(d):
        lo, hi = (int(ch) + 1, 9) if greater else (0, int(ch) - 1)
        if lo <= hi:
            alts.append(rx.seq(rx.lit(d[:i]), rx.chars([(48 + lo, 48 + hi)]), rx.star(J.DIGIT)))
        if not greater and i:
            alts.append(rx.lit(d[:i]))  # a proper prefix is smaller
    if greater:
        alts.append(rx.seq(rx.lit(d), rx.rep(J.DIGIT, 1 if strict else 0, None)))
    elif not strict:
        alts.append(rx.lit(d))
    return rx.both(rx.alt(*alts), rx.seq(rx.star(J.DIGIT), J.NONZERO))


def _num(schema: dict, inclusive: str, exclusive: str, pick) -> float | None:
    vals = [schema[k] for k in (inclusive, exclusive) if isinstance(schema.get(k), (int, float))]
    return pick(vals) if vals else None


def _int_bounds(schema: dict) -> tuple[int | None, int | None]:
    """Integer bounds implied by minimum/maximum/exclusive* (may be floats)."""
    lo = hi = None
    if isinstance(schema.get("minimum"), (int, float)):
        lo = math.ceil(schema["minimum"])
    if isinstance(schema.get("exclusiveMinimum"), (int, float)):
        v = math.floor(schema["exclusiveMinimum"]) + 1
        lo = v if lo is None else max(lo, v)
    if isinstance(schema.get("maximum"), (int, float)):
        hi = math.floor(schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), (int, float)):
        v = math.ceil(schema["exclusiveMaximum"]) - 1
        hi = v if hi is None else min(hi, v)
    return lo, hi


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def _canonical(v: Any) -> str:
    """A key equal for JSON-equal values (1 and 1.0 included)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(float(v))
    return json.dumps(v, sort_keys=True)


def _possible_types(schema: Any) -> set[str]:
    """Types a schema can possibly accept (a superset), for oneOf disjointness."""
    if not isinstance(schema, dict):
        return set(TYPES) if schema is not False else set()
    found = set(TYPES)
    if "type" in schema:
        t = schema["type"]
        found &= {t} if isinstance(t, str) else set(t)
        if "number" in found:
            found.add("integer")
    for key in ("enum", "const"):
        if key in schema:
            vals = schema[key] if key == "enum" else [schema[key]]
            found &= {_type_of(v) for v in vals} | ({"number"} if any(_type_of(v) == "integer" for v in vals) else set())
    return found


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}[type(v)]
