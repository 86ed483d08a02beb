"""EBNF (lark) constraints: recursive grammars run as pushdown automata and accept what lark parses."""
from __future__ import annotations

import random

import lark
import pytest
from grammar_helpers import random_walk

from grammar import GrammarError, compile_constraint
from grammar.cfg import Grammar, compile_grammar
from grammar.ebnf import ebnf_to_grammar
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
    ("((((1))))", True), ("1 2", False), ("(" * 60 + "1" + ")" * 60, True), ("(" * 60 + "1" + ")" * 59, False),
])
def test_arith_table(text, ok):
    grammar = ebnf_to_grammar(ARITH)
    assert isinstance(grammar, Grammar)  # recursive: the pushdown path, no depth bound
    assert compile_grammar(grammar).fullmatch(text.encode()) is ok
    if ok:
        lark.Lark(ARITH, parser="earley").parse(text)


def test_non_recursive_grammar_stays_regular(info):
    node = ebnf_to_grammar('start: "call " NAME\nNAME: /[a-z]{1,4}/\n')
    assert not isinstance(node, Grammar)
    assert compile_rx(node).fullmatch("call ab")
    assert type(compile_constraint("ebnf", CALL, info)).__name__ == "TokenFSM"


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
    ('start: e\ne: e "+" "1" | "1"\n', "left-recursive"), ('start: e\ne: "(" e ")"\n', "no finite string"),
])
def test_refused_grammars(grammar, word):
    with pytest.raises(GrammarError, match=word):
        compile_grammar(g) if isinstance(g := ebnf_to_grammar(grammar), Grammar) else g
