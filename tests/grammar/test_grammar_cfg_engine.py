"""A context-free (ebnf) constraint end to end through ``Engine.generate`` on the embedded model."""
from __future__ import annotations

import lark
import pytest

EXPR = r"""
start: expr
?expr: term (("+" | "-") term)*
?term: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,3}/
%ignore " "
"""


@pytest.fixture(scope="module")
def engine():
    from runtime.engine import Engine
    with Engine(max_total_tokens=4096) as e:
        yield e


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ebnf_generate_parses_with_lark(engine, info, temperature):
    from grammar import compile_constraint
    out = engine.generate("Write a nested arithmetic expression: ",
                          {"temperature": temperature, "max_new_tokens": 40, "ebnf": EXPR, "seed": 3})
    text = out["text"]
    m = compile_constraint("ebnf", EXPR, info).matcher()
    assert m.accept_string(text), text  # always a prefix of a sentence
    if out["meta_info"]["finish_reason"]["type"] == "stop":
        lark.Lark(EXPR, parser="earley").parse(text)
        assert m.is_accepting()
