"""EBNF frontend: a lark grammar → ``rx`` IR (the ``ebnf`` constraint kind).

The grammar is read with lark's own loader (``%import``, templates-free EBNF, ``?``/``_`` rules,
``%ignore``). Terminals become regexes; rules are expanded with recursion bounded by
``max_recursion`` re-entries of recursive rules (deeper derivations are not generated), so the
constraint is a finite automaton that accepts a subset of the context-free language. Ignored
terminals (``%ignore WS``) may appear between any two symbols of a rule. The language is the
concatenation of terminal *languages*: lark's maximal-munch lexing is not modelled, so keep
adjacent terminals separable (e.g. by a delimiter) when that matters.
"""
from __future__ import annotations

import ast
from typing import Any

from . import rx
from .errors import GrammarError
from .regex_parser import parse_regex

MAX_RECURSION = 12  # re-entries of recursive rules along one derivation


def ebnf_to_rx(text: str, start: str = "start", max_recursion: int = MAX_RECURSION) -> rx.Node:
    """Compile lark grammar text (start rule ``start``) to the ``rx`` IR."""
    try:
        from lark.exceptions import LarkError
        from lark.load_grammar import load_grammar
        grammar, _ = load_grammar(text, "<ebnf constraint>", [], False)
    except LarkError as e:
        raise GrammarError(f"invalid lark grammar: {e}") from None
    return _Converter(grammar, max_recursion).compile(start)


class _Converter:
    def __init__(self, grammar: Any, max_recursion: int) -> None:
        self.rules = {}
        for name, params, tree, _options in grammar.rule_defs:
            if params:
                raise GrammarError(f"rule templates ({name}{{...}}) are not supported in ebnf constraints")
            self.rules[str(name)] = tree
        self.terms = {str(name): tree for name, (tree, _prio) in grammar.term_defs}
        self.ignore = [str(n) for n in grammar.ignore]
        self.max_recursion = max_recursion
        self.recursive = _recursive_rules(self.rules)
        self._memo: dict[tuple[str, int], rx.Node] = {}
        self._terms: dict[str, rx.Node] = {}
        self._active: set[tuple[str, int]] = set()
        self.gap = rx.star(rx.alt(*(self.terminal(n) for n in self.ignore))) if self.ignore else rx.EMPTY

    def compile(self, start: str) -> rx.Node:
        if start not in self.rules:
            raise GrammarError(f"the grammar has no rule {start!r}; name the entry rule 'start'")
        return rx.seq(self.gap, self.rule(start, self.max_recursion), self.gap)

    def rule(self, name: str, budget: int) -> rx.Node:
        if name not in self.rules:
            raise GrammarError(f"rule {name!r} is used but not defined")
        key = (name, budget)
        node = self._memo.get(key)
        if node is None:
            if key in self._active:  # a cycle that consumes no budget: nothing finite derives
                return rx.NOTHING
            self._active.add(key)
            node = rx.unit(self.tree(self.rules[name], budget, in_rule=True))
            self._active.discard(key)
            self._memo[key] = node
        return node

    def terminal(self, name: str) -> rx.Node:
        node = self._terms.get(name)
        if node is None:
            if name not in self.terms:
                raise GrammarError(f"terminal {name!r} is used but not defined")
            node = self._terms[name] = rx.unit(self.tree(self.terms[name], 0, in_rule=False))
        return node

    def tree(self, t: Any, budget: int, in_rule: bool) -> rx.Node:
        from lark import Token, Tree
        from lark.grammar import NonTerminal, Terminal
        if isinstance(t, NonTerminal):
            name = str(t.name)
            if name in self.recursive:
                return rx.NOTHING if budget == 0 else self.rule(name, budget - 1)
            return self.rule(name, budget)
        if isinstance(t, Terminal):
            return self.terminal(str(t.name))
        if not isinstance(t, Tree):
            raise GrammarError(f"unexpected grammar element {t!r}")
        kids = t.children
        if t.data == "expansions":
            return rx.alt(*(self.tree(k, budget, in_rule) for k in kids))
        if t.data == "expansion":
            parts = [self.tree(k, budget, in_rule) for k in kids]
            if in_rule and self.ignore:
                parts = [p for part in parts for p in (self.gap, part)][1:]
            return rx.seq(*parts)
        if t.data == "value":
            return self.tree(kids[0], budget, in_rule)
        if t.data == "maybe":
            return rx.opt(self.tree(kids[0], budget, in_rule))
        if t.data == "literal":
            return _literal(kids[0])
        if t.data == "range":
            lo, hi = (ast.literal_eval(str(k)) for k in kids)
            return rx.chars([(ord(lo), ord(hi))])
        if t.data == "expr":
            inner = self.tree(kids[0], budget, in_rule)
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
