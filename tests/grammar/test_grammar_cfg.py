"""Context-free constraints (grammar/cfg.py, grammar/pda.py): the pushdown matcher against lark's Earley parser."""
from __future__ import annotations

import json
import random

import lark
import numpy as np
import pytest
from grammar_helpers import random_walk
from hypothesis import given, settings
from hypothesis import strategies as st

from grammar import compile_constraint
from grammar.cfg import Grammar, compile_grammar
from grammar.ebnf import JSON_GRAMMAR as JSON_EBNF
from grammar.ebnf import ebnf_to_grammar
from grammar.utf8_bytes import utf8_sequences

EXPR = r"""
start: expr
?expr: term (("+" | "-") term)*
?term: atom ("*" atom)*
?atom: NUMBER | "(" expr ")" | "-" atom | "[" [expr ("," expr)*] "]"
NUMBER: /[0-9]+/
%ignore " "
"""

PARENS = 'start: p*\np: "(" p* ")" | "[" p* "]"\n'


def _pda(text: str):
    g = ebnf_to_grammar(text)
    assert isinstance(g, Grammar)
    return compile_grammar(g)


@pytest.fixture(scope="module")
def expr():
    return _pda(EXPR), lark.Lark(EXPR, parser="earley")


def _lark_ok(parser, text: str) -> bool:
    try:
        parser.parse(text)
        return True
    except lark.exceptions.LarkError:
        return False


# -- strings derived from the grammar ---------------------------------------------------------
_number = st.integers(0, 10**6).map(str)
_exprs = st.recursive(_number, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(["+", "-", "*", " + ", " * "]), inner).map("".join),
    inner.map(lambda e: f"({e})"), inner.map(lambda e: f"-{e}"),
    st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")), max_leaves=30)


@settings(max_examples=150, deadline=None)
@given(_exprs)
def test_derived_strings_are_accepted(expr, text):
    pda, parser = expr
    assert pda.fullmatch(text.encode())
    assert _lark_ok(parser, text)


@settings(max_examples=200, deadline=None)
@given(_exprs, st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from("()[]+-*,0 x")), max_size=3),
       st.integers(0, 2))
def test_mutated_strings_agree_with_lark(expr, text, edits, how):
    pda, parser = expr
    chars = list(text)
    for pos, ch in edits:
        i = pos % (len(chars) + 1)
        if how == 0 or i == len(chars):
            chars.insert(i, ch)
        elif how == 1:
            chars[i] = ch
        else:
            del chars[i]
    mutated = "".join(chars)
    assert pda.fullmatch(mutated.encode()) == _lark_ok(parser, mutated), mutated


@settings(max_examples=200, deadline=None)
@given(st.text("()[]", max_size=16))
def test_parens_agree_with_lark(text):
    assert _pda(PARENS).fullmatch(text.encode()) == _lark_ok(lark.Lark(PARENS, parser="earley"), text)


@pytest.mark.parametrize("depth", [50, 200])
def test_deep_nesting_has_no_bound(expr, depth):
    pda, parser = expr
    text = "(" * depth + "1" + "+[2,(3)]" + ")" * depth
    assert pda.fullmatch(text.encode()) and _lark_ok(parser, text)
    assert not pda.fullmatch(text[:-1].encode())


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0x10FFFF), st.integers(0, 0x10FFFF))
def test_utf8_sequences_cover_exactly(a, b):
    lo, hi = min(a, b), max(a, b)
    if hi - lo > 5000:
        hi = lo + 5000
    seqs = utf8_sequences(lo, hi)
    for cp in {lo, hi, (lo + hi) // 2}:
        if 0xD800 <= cp <= 0xDFFF:
            continue
        enc = chr(cp).encode("utf-8")
        hits = [s for s in seqs if len(s) == len(enc) and all(x <= c <= y for c, (x, y) in zip(enc, s))]
        assert len(hits) == 1


# -- tokens ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def json_fsm(info):
    return compile_constraint("ebnf", JSON_EBNF, info)


def _bits(m, info) -> np.ndarray:
    row = np.zeros((info.vocab_size + 31) // 32, dtype=np.int32)
    m.fill_bitmask(row)
    return np.unpackbits(row.view(np.uint8), bitorder="little")[: info.vocab_size].astype(bool)


def test_json_grammar_tokens_deep_and_mask_consistent(json_fsm, info, hf_tokenizer):
    doc = {"name": "Ünï \"q\"", "a": [1, -2.5e3, {"b": [[True, None]], "c": {}}], "d": []}
    for _ in range(50):
        doc = {"k": [doc]}
    text = json.dumps(doc)
    m = json_fsm.matcher()
    rng = random.Random(0)
    for tid in hf_tokenizer.encode(text, add_special_tokens=False):
        bits = _bits(m, info)
        assert bits[tid], repr(hf_tokenizer.decode([tid]))
        assert not bits[info.eos_token_id]
        assert not any(bits[s] for s in info.special_ids)
        for probe in rng.sample(range(info.vocab_size), 20):  # mask ⇔ accept_token
            ok = m.accept_token(probe)
            if ok:
                m.rollback(1)
            assert ok == bool(bits[probe])
        assert m.accept_token(tid)
    assert m.is_accepting() and _bits(m, info)[info.eos_token_id]
    assert m.accept_token(info.eos_token_id) and m.is_terminated() and not _bits(m, info).any()


@pytest.mark.parametrize("grammar", [JSON_EBNF, EXPR, PARENS], ids=["json", "expr", "parens"])
def test_random_token_walks_parse_with_lark(info, grammar):
    fsm = compile_constraint("ebnf", grammar, info)
    parser = lark.Lark(grammar, parser="earley")
    rng = random.Random(7)
    done = 0
    for _ in range(6):
        data, finished = random_walk(fsm, rng, max_steps=120, eos_prob=0.4, bias=0.8)
        if finished:
            done += 1
            assert _lark_ok(parser, data.decode("utf-8")), data
    assert done >= 3


def test_rollback_reset_and_forced_string(info, hf_tokenizer):
    fsm = compile_constraint("ebnf", 'start: "call(" args ")"\nargs: "x" | "f(" args ")"\n', info)
    m = fsm.matcher()
    assert m.forced_string() == "call("
    assert m.accept_string("call(f(")
    assert m.forced_string() == ""  # x or f(
    assert m.accept_string("x")
    assert m.forced_string() == "))"
    m.rollback(1)
    assert m.num_steps == 1 and not m.accept_string(")")
    m.reset()
    assert m.num_steps == 0 and m.forced_string() == "call("


def test_special_tokens_never_inside_strings(json_fsm, info, hf_tokenizer):
    m = json_fsm.matcher()
    for tid in hf_tokenizer.encode('{"a": "hello', add_special_tokens=False):
        assert m.accept_token(tid)
    bits = _bits(m, info)
    assert bits.sum() > 10_000  # free text inside the string
    assert not any(bits[s] for s in info.special_ids)


# -- recursive JSON schemas --------------------------------------------------------------------
TREE = {"$defs": {"node": {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8},
    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3}},
    "required": ["name", "children"], "additionalProperties": False}}, "$ref": "#/$defs/node"}


def _tree(depth: int) -> dict:
    return {"name": f"n{depth}", "children": [_tree(depth - 1)] if depth else []}


def test_recursive_ref_schema_is_pushdown_and_unbounded(info, hf_tokenizer):
    import jsonschema
    fsm = compile_constraint("json_schema", json.dumps(TREE), info)
    assert type(fsm).__name__ == "CfgFSM"
    m = fsm.matcher()
    doc = _tree(60)
    jsonschema.validate(doc, TREE)
    for tid in hf_tokenizer.encode(json.dumps(doc), add_special_tokens=False):
        assert m.accept_token(tid)
    assert m.is_accepting() and m.is_terminated()  # nothing may follow the closing brace
    m.reset()
    assert m.forced_string() == '{"name": "'
    rng = random.Random(3)
    done = 0
    for _ in range(8):
        data, finished = random_walk(fsm, rng, max_steps=150, eos_prob=0.5, bias=0.8)
        if finished:
            done += 1
            jsonschema.validate(json.loads(data.decode("utf-8")), TREE)
    assert done >= 3
