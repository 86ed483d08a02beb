"""EBNF (lark) constraints: bounded-recursion automata accept only what lark parses."""
from __future__ import annotations

import random

import lark
import pytest
from grammar_helpers import random_walk

from grammar import GrammarError, compile_constraint
from grammar.ebnf import ebnf_to_rx
from grammar.fsm import compile_rx

ARITH = r"""
start: expr
?expr: term (("+" | "-") term)*
term: NUMBER | "(" expr ")" | NAME "(" [expr ("," expr)*] ")"
NAME: /[a-z]{1,8}/
NUMBER: /[0-9]{1,4}/
%ignore " "
"""
CALL = r"""
start: "call " NAME "(" args? ")"
args: arg (", " arg)*
arg: STR | SIGNED_INT | "true" | "false"
NAME: /[a-z_]{1,10}/
STR: /"([^"\\]|\\.){0,12}"/
%import common.SIGNED_INT
"""


@pytest.mark.parametrize("text,ok", [
    ("1+2", True), ("(1 + 2) - f(3, 4)", True), ("g()", True), ("1+", False), ("(1", False),
    ("((((1))))", True), ("1 2", False),
])
def test_arith_table(text, ok):
    dfa = compile_rx(ebnf_to_rx(ARITH))
    assert dfa.fullmatch(text) is ok
    if ok:
        lark.Lark(ARITH, parser="earley").parse(text)


@pytest.mark.parametrize("grammar", [ARITH, CALL], ids=["arith", "call"])
def test_random_walks_parse_with_lark(info, grammar):
    fsm = compile_constraint("ebnf", grammar, info)
    parser = lark.Lark(grammar, parser="earley")
    rng = random.Random(5)
    done = 0
    for _ in range(10):
        data, finished = random_walk(fsm, rng, max_steps=200, bias=0.6)
        if finished:
            done += 1
            parser.parse(data.decode("utf-8"))
    assert done >= 5


def test_jump_forward_in_ebnf(info):
    fsm = compile_constraint("ebnf", CALL, info)
    assert fsm.matcher().forced_string() == "call "


@pytest.mark.parametrize("grammar,word", [
    ("start: a\n", "not defined"), ("start: x{\"a\"}\nx{p}: p\n", "templates"),
    ("start: \"a\"i\n", "flags"), ("start: (\n", "invalid lark grammar"), ("other: \"a\"\n", "start"),
    ("start: ESCAPED_STRING\n%import common.ESCAPED_STRING\n", "lookaround"),
])
def test_refused_grammars(grammar, word):
    with pytest.raises(GrammarError, match=word):
        ebnf_to_rx(grammar)
