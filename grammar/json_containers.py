"""Array and object keywords of the JSON-schema compiler (methods of ``KeywordCompiler``)."""
from __future__ import annotations

import itertools
import json
import re
from typing import Any

from . import json_values as J
from . import rx
from .errors import GrammarError

MAX_DEPENDENCIES = 3
SEP = rx.lit(", ")


def _lang(node: rx.Node, exact: bool):
    from .json_keywords import Lang
    return Lang(node, exact)


def _refuse(what: str, fix: str) -> GrammarError:
    return GrammarError(f"JSON schema: {what} is not supported; {fix}")


def _evaluated(self, schema: dict, kind: str) -> tuple[list, list, bool]:
    """What in-place subschemas ($ref, allOf; always applied) evaluate: for objects (property
    names, patterns, everything?), for arrays (a list as long as the longest prefixItems, [],
    everything?). Conditional applicators make the set depend on the instance: refused."""
    names: dict = {}
    patterns: dict = {}
    longest: list = []
    everything = False
    stack, seen = [(schema, True)], set()
    while stack:
        sub, top = stack.pop()
        if not isinstance(sub, dict) or id(sub) in seen:
            continue
        seen.add(id(sub))
        if any(k in sub for k in ("anyOf", "oneOf", "not", "if", "dependentSchemas", "$dynamicRef")):
            raise _refuse(f"unevaluated{'Properties' if kind == 'object' else 'Items'} next to conditional "
                          "applicators (anyOf, oneOf, not, if, dependentSchemas)",
                          "merge the subschemas into one and use additionalProperties/items")
        if not top:
            if kind == "object":
                names.update(dict.fromkeys(sub.get("properties", {})))
                patterns.update(dict.fromkeys(sub.get("patternProperties", {})))
                everything |= "additionalProperties" in sub or sub.get("unevaluatedProperties") is True
            else:
                longest = max(longest, list(sub.get("prefixItems", [])), key=len)
                everything |= "items" in sub or sub.get("unevaluatedItems") is True
        stack.extend((s, False) for s in sub.get("allOf", []))
        if "$ref" in sub:
            stack.append((self.resolve_ref(sub["$ref"], self._bases.get(id(sub), "")), False))
    return (list(names) if kind == "object" else longest), list(patterns), everything


# -- arrays ------------------------------------------------------------------------------------
def _type_array(self, schema: dict, budget: int):
    inner = budget
    prefix = [self.compile(s, inner) for s in schema.get("prefixItems", [])]
    items_schema = schema.get("items", True)
    uneval = schema.get("unevaluatedItems", True)
    if uneval is not True and "items" not in schema:
        longest, _, everything = _evaluated(self, schema, "array")
        if not everything:
            if "contains" in schema:
                raise _refuse("unevaluatedItems next to contains", "use items/prefixItems instead")
            prefix += [self.compile(True, inner)] * (len(longest) - len(prefix))
            items_schema = uneval
    rest = self.compile(items_schema, inner)
    lo, hi = int(schema.get("minItems", 0)), schema.get("maxItems")
    hi = None if hi is None else int(hi)
    if schema.get("uniqueItems") is True and not (hi is not None and hi <= 1):
        raise _refuse("uniqueItems: true (not expressible as a finite automaton)",
                      "drop it, or use maxItems ≤ 1 or an enum of whole arrays")
    node = _array_body(prefix, rest, lo, hi)
    exact = all(x.exact for x in prefix) and rest.exact
    lang = _lang(node, exact)
    if "contains" in schema:
        lang = self._contains(schema, inner, lang)
    return lang


def _array_body(prefix: list, rest, lo: int, hi: int | None) -> rx.Node:
    k = len(prefix)
    start = max(k, lo)
    if hi is not None and hi < lo:
        return rx.NOTHING
    # elements from index k on: each of them is `rest`
    def tail(i: int) -> rx.Node:
        need = max(lo - i, 0)
        more = None if hi is None else max(hi - i, 0)
        if i == 0:
            if more == 0:
                return rx.EMPTY
            body = rx.seq(rest.node, rx.rep(rx.seq(SEP, rest.node), max(need - 1, 0),
                                            None if more is None else more - 1))
            return body if need > 0 else rx.opt(body)
        return rx.rep(rx.seq(SEP, rest.node), need, more)
    node = tail(k) if start >= k else rx.EMPTY
    for i in range(k - 1, -1, -1):
        if hi is not None and i >= hi:
            node = rx.EMPTY
            continue
        element = rx.seq(SEP if i else rx.EMPTY, prefix[i].node, node)
        node = element if i < lo else rx.alt(rx.EMPTY, element)
    return rx.seq(rx.lit("["), node, rx.lit("]"))


def _contains(self, schema: dict, inner: int, lang):
    from .json_keywords import _and
    cond = self.compile(schema["contains"], inner)
    least = int(schema.get("minContains", 1))
    most = schema.get("maxContains")
    if most is None and least == 0:
        return lang
    if most is not None and not cond.exact:
        raise _refuse("maxContains over an approximated 'contains' schema", "simplify the contains schema")
    other = self.free_value() if most is None else rx.minus(self.free_value(), cond.node)
    counted = self._count_list(cond.node, other, least, None if most is None else int(most))
    return _and([lang, _lang(counted, cond.exact and most is not None)])


def _count_list(self, hit: rx.Node, other: rx.Node, least: int, most: int | None) -> rx.Node:
    """Arrays with between ``least`` and ``most`` elements from ``hit``, the others from ``other``."""
    if most is not None and most < least:
        return rx.NOTHING
    others = rx.star(rx.seq(SEP, other))
    group = rx.seq(SEP, hit, others)
    starts = [rx.seq(other, others, rx.rep(group, least, most))]
    if most is None or most >= 1:
        starts.append(rx.seq(hit, others, rx.rep(group, max(least - 1, 0), None if most is None else most - 1)))
    body = rx.alt(*starts)
    return rx.seq(rx.lit("["), rx.opt(body) if least == 0 else body, rx.lit("]"))


# -- objects -----------------------------------------------------------------------------------
def _type_object(self, schema: dict, budget: int):
    inner = budget
    schema = dict(schema)
    if self.strict and "additionalProperties" not in schema and "unevaluatedProperties" not in schema:
        schema["additionalProperties"] = False
    uneval = schema.pop("unevaluatedProperties", True)
    if uneval is not True:
        names, patterns, everything = _evaluated(self, schema, "object")
        if not everything and "additionalProperties" not in schema:
            own = schema.get("properties", {})
            schema["properties"] = {**own, **{n: True for n in names if n not in own}}
            schema["patternProperties"] = {**{p: True for p in patterns}, **schema.get("patternProperties", {})}
            schema["additionalProperties"] = uneval
    deps = dict(schema.get("dependentRequired", {}))
    dep_schemas = dict(schema.get("dependentSchemas", {}))
    triggers = sorted(set(deps) | set(dep_schemas))
    if len(triggers) > MAX_DEPENDENCIES:
        raise _refuse(f"more than {MAX_DEPENDENCIES} dependentRequired/dependentSchemas triggers",
                      "split the schema with anyOf")
    from .json_keywords import _and
    cases = []
    for present in itertools.product((False, True), repeat=len(triggers)):
        required = dict.fromkeys(schema.get("required", []))  # an ordered set: instance order
        forbidden = set()
        extra = []
        for name, on in zip(triggers, present):
            if on:
                required.update(dict.fromkeys([*deps.get(name, []), name]))
                if name in dep_schemas:
                    extra.append(self.compile(dep_schemas[name], budget))
            else:
                forbidden.add(name)
        if forbidden.intersection(required):
            continue
        case = self._members(schema, inner, required, forbidden)
        cases.append(_and([case, *extra]) if extra else case)
    lang = _lang(rx.alt(*(c.node for c in cases)), bool(cases) and all(c.exact for c in cases) and not triggers)
    lo, hi = int(schema.get("minProperties", 0)), schema.get("maxProperties")
    if lo or hi is not None:
        counted = self.object_of(J.STRING, self.free_value(), lo, None if hi is None else int(hi))
        lang = _and([lang, _lang(counted, True)])
    return lang


def _members(self, schema: dict, inner: int, required: dict, forbidden: set):
    props = {k: v for k, v in schema.get("properties", {}).items() if k not in forbidden}
    patterns = list(schema.get("patternProperties", {}).items())
    if len(patterns) > 3:
        raise _refuse("more than 3 patternProperties", "list the properties explicitly")
    extra_schema = schema.get("additionalProperties", True)
    names_check = _names_dfa(self, schema.get("propertyNames"))
    names = list(props) + [n for n in required if n not in props]
    items, exact = [], not names
    for name in names:
        if names_check is not None and not names_check.fullmatch(json.dumps(name, ensure_ascii=False)):
            if name in required:
                return _lang(rx.NOTHING, False)
            continue
        matched = [s for p, s in patterns if re.search(p, name)]
        subs = ([props[name]] if name in props else ([] if matched else [extra_schema])) + matched
        value = _and_schemas(self, subs, inner)
        member = rx.seq(rx.lit(json.dumps(name, ensure_ascii=False)), rx.lit(": "), value.node)
        items.append((member, name in required))
    taken = rx.alt(*(rx.lit(json.dumps(n, ensure_ascii=False)) for n in set(names) | forbidden))
    regions = []
    for mask in itertools.product((False, True), repeat=len(patterns)):
        key = rx.minus(J.STRING, taken) if (names or forbidden) else J.STRING
        for (pattern, _), on in zip(patterns, mask):
            pat = J.string_of(_pattern(pattern))
            key = rx.both(key, pat) if on else rx.minus(key, pat)
        subs = [s for (_, s), on in zip(patterns, mask) if on] or [extra_schema]
        if any(s is False for s in subs):
            continue
        value = _and_schemas(self, subs, inner)
        exact = exact and value.exact
        if schema.get("propertyNames") is not None:
            pn = self.compile(schema["propertyNames"], 0)
            key, exact = rx.both(key, pn.node), exact and pn.exact
        regions.append(rx.seq(key, rx.lit(": "), value.node))
    extra = rx.unit(rx.alt(*regions)) if regions else None
    return _lang(_object_members(items, extra), exact)


def _pattern(pattern: str) -> rx.Node:
    from .regex_parser import parse_regex
    return parse_regex(pattern, search=True, ecma=True)


def _and_schemas(self, schemas: list, inner: int):
    from .json_keywords import _and
    langs = [self.compile(s, inner) for s in schemas if s is not True]
    return _and(langs) if langs else _lang(self.free_value(), True)


def _names_dfa(self, names_schema: Any):
    if names_schema is None:
        return None
    from .fsm import compile_rx
    return compile_rx(rx.both(J.STRING, self.compile(names_schema, 0).node))


def _object_members(items: list, extra: rx.Node | None) -> rx.Node:
    """``{...}`` with ``items`` (member node, required) in schema order; ``extra`` members may
    appear in any gap. Size stays quadratic in the number of members (no duplication blow-up)."""
    gap = rx.star(rx.seq(SEP, extra)) if extra is not None else rx.EMPTY
    after = gap                                                   # something was emitted
    first = rx.opt(rx.seq(extra, gap)) if extra is not None else rx.EMPTY   # nothing yet
    for member, required in reversed(items):
        member = rx.unit(member)
        sep_member = rx.seq(SEP, member)
        nxt = rx.seq(gap, sep_member if required else rx.opt(sep_member), after)
        starts = [rx.seq(member, after)]
        if extra is not None:
            starts.append(rx.seq(extra, nxt))
        if not required:
            starts.append(first)
        after, first = nxt, rx.alt(*starts)
    return rx.seq(rx.lit("{"), first, rx.lit("}"))
