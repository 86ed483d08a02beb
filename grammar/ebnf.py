"""EBNF frontend: a lark grammar → ``rx`` IR or a context-free :class:`~grammar.cfg.Grammar`.

The grammar is read with lark's own loader (``%import``, templates-free EBNF, ``?``/``_`` rules,
``%ignore``). Terminals become regexes; non-recursive rules are inlined. Without recursion the
result is a plain ``rx`` node (the DFA path, full jump-forward); otherwise every recursive rule
becomes a rule of a :class:`Grammar` called through :func:`grammar.cfg.call`, run by the pushdown
matcher (:mod:`grammar.pda`) with unbounded nesting. Ignored terminals (``%ignore WS``) may appear
between any two symbols of a rule. The language is the concatenation of terminal *languages*:
lark's maximal-munch lexing is not modelled, so keep adjacent terminals separable (e.g. by a
delimiter) when that matters.
"""
from __future__ import annotations

import ast
from typing import Any

from . import rx
from .cfg import Grammar, call
from .errors import GrammarError
from .regex_parser import parse_regex

# JSON (RFC 8259) as a lark grammar: an example `ebnf` constraint (tests, bench/bench_grammar_cfg.py).
JSON_GRAMMAR = r"""
start: value
?value: object | array | STRING | NUMBER | "true" | "false" | "null"
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
STRING: /"([^"\\\x00-\x1f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/
NUMBER: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/
%ignore /[ \t\n]+/
"""


def ebnf_to_grammar(text: str, start: str = "start") -> rx.Node | Grammar:
    """Compile lark grammar text (start rule ``start``): an ``rx`` node if no rule is recursive,
    else a :class:`Grammar` (rule 0 wraps ``start``; one rule per recursive lark rule)."""
    try:
        from lark.exceptions import LarkError
        from lark.load_grammar import load_grammar
        grammar, _ = load_grammar(text, "<ebnf constraint>", [], False)
    except LarkError as e:
        raise GrammarError(f"invalid lark grammar: {e}") from None
    return _Converter(grammar).compile(start)


class _Converter:
    def __init__(self, grammar: Any) -> None:
        self.rules = {}
        for name, params, tree, _options in grammar.rule_defs:
            if params:
                raise GrammarError(f"rule templates ({name}{{...}}) are not supported in ebnf constraints")
            self.rules[str(name)] = tree
        self.terms = {str(name): tree for name, (tree, _prio) in grammar.term_defs}
        self.ignore = [str(n) for n in grammar.ignore]
        self.recursive = _recursive_rules(self.rules)
        self._memo: dict[str, rx.Node] = {}
        self._terms: dict[str, rx.Node] = {}
        self._ids: dict[str, int] = {}      # recursive rule → Grammar rule id (0 is the wrapper)
        self.gap = rx.star(rx.alt(*(self.terminal(n) for n in self.ignore))) if self.ignore else rx.EMPTY

    def compile(self, start: str) -> rx.Node | Grammar:
        if start not in self.rules:
            raise GrammarError(f"the grammar has no rule {start!r}; name the entry rule 'start'")
        root = rx.seq(self.gap, self.ref(start), self.gap)
        if not self._ids:
            return root
        bodies: dict[int, rx.Node] = {0: root}
        names = {0: f"<{start}>"}
        while len(bodies) < len(self._ids) + 1:  # bodies may call rules not seen yet
            for name, rid in list(self._ids.items()):
                if rid not in bodies:
                    bodies[rid] = self.body(name)
                    names[rid] = name
        n = len(bodies)
        return Grammar(tuple(bodies[i] for i in range(n)), tuple(names[i] for i in range(n)))

    def ref(self, name: str) -> rx.Node:
        """A rule use: a call for recursive rules, the inlined body otherwise."""
        if name not in self.rules:
            raise GrammarError(f"rule {name!r} is used but not defined")
        if name in self.recursive:
            rid = self._ids.setdefault(name, len(self._ids) + 1)
            return call(rid)
        node = self._memo.get(name)
        if node is None:
            node = self._memo[name] = self.body(name)
        return node

    def body(self, name: str) -> rx.Node:
        return rx.unit(self.tree(self.rules[name], in_rule=True))

    def terminal(self, name: str) -> rx.Node:
        node = self._terms.get(name)
        if node is None:
            if name not in self.terms:
                raise GrammarError(f"terminal {name!r} is used but not defined")
            node = self._terms[name] = rx.unit(self.tree(self.terms[name], in_rule=False))
        return node

    def tree(self, t: Any, in_rule: bool) -> rx.Node:
        from lark import Token, Tree
        from lark.grammar import NonTerminal, Terminal
        if isinstance(t, NonTerminal):
            return self.ref(str(t.name))
        if isinstance(t, Terminal):
            return self.terminal(str(t.name))
        if not isinstance(t, Tree):
            raise GrammarError(f"unexpected grammar element {t!r}")
        kids = t.children
        if t.data == "expansions":
            return rx.alt(*(self.tree(k, in_rule) for k in kids))
        if t.data == "expansion":
            parts = [self.tree(k, in_rule) for k in kids]
            if in_rule and self.ignore:
                parts = [p for part in parts for p in (self.gap, part)][1:]
            return rx.seq(*parts)
        if t.data == "value":
            return self.tree(kids[0], in_rule)
        if t.data == "maybe":
            return rx.opt(self.tree(kids[0], in_rule))
        if t.data == "literal":
            return _literal(kids[0])
        if t.data == "range":
            lo, hi = (ast.literal_eval(str(k)) for k in kids)
            return rx.chars([(ord(lo), ord(hi))])
        if t.data == "expr":
            inner = self.tree(kids[0], in_rule)
            if in_rule and self.ignore:
                inner = rx.seq(inner, self.gap)
            op = kids[1]
            if isinstance(op, Token) and op.type == "TILDE":
                lo, hi = int(kids[2]), int(kids[3] if len(kids) > 3 else kids[2])
                return rx.rep(inner, lo, hi)
            return {"*": rx.star, "+": lambda n: rx.rep(n, 1, None), "?": rx.opt}[str(op)](inner)
        raise GrammarError(f"lark construct {t.data!r} is not supported in ebnf constraints")


def _literal(token: Any) -> rx.Node:
    text = str(token)
    if token.type == "STRING":
        body, _, flags = text.rpartition('"')
        if flags:
            raise GrammarError(f"string flags ({text}) are not supported; spell the alternatives out")
        return rx.lit(ast.literal_eval(body + '"'))
    body, _, flags = text[1:].rpartition("/")
    prefix = "".join(f"(?{f})" for f in flags if f in "sx")
    if set(flags) - set("sx"):
        raise GrammarError(f"regex flags {flags!r} in {text} are not supported (only s and x)")
    return parse_regex(prefix + body)


def _recursive_rules(rules: dict) -> set[str]:
    """Rules that can reach themselves (through other rules)."""
    from lark.grammar import NonTerminal
    refs = {name: {str(n.name) for n in tree.scan_values(lambda v: isinstance(v, NonTerminal))}
            for name, tree in rules.items()}
    out = set()
    for name in rules:
        seen, stack = set(), list(refs[name])
        while stack:
            cur = stack.pop()
            if cur == name:
                out.add(name)
                break
            if cur in seen or cur not in refs:
                continue
            seen.add(cur)
            stack.extend(refs[cur])
    return out
