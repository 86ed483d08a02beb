"""Canonical JSON pieces: integer ranges, number bounds, string escapes (vs Python / jsonschema)."""
from __future__ import annotations

import functools
import json
from decimal import Decimal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammar import json_values as J
from grammar.fsm import compile_rx
from grammar.json_schema import schema_to_rx

RANGES = [(0, 0), (5, 123), (-50, 7), (None, -3), (-7, None), (100, None), (None, None), (0, 9999)]
NUMBER_SCHEMAS = [
    {"type": "number", "minimum": 1.1}, {"type": "number", "exclusiveMinimum": 1.1},
    {"type": "number", "minimum": 0, "maximum": 3.25}, {"type": "number", "exclusiveMaximum": 3.25},
    {"type": "number", "minimum": -2, "exclusiveMaximum": 5}, {"type": "integer", "minimum": -3.5, "maximum": 9.9},
    {"type": "number", "multipleOf": 0.01, "maximum": 2}, {"type": "integer", "multipleOf": 7},
]


@pytest.fixture(scope="module")
def int_dfas():
    return {r: compile_rx(J.int_range(*r)) for r in RANGES}


@pytest.fixture(scope="module")
def number_dfas():
    return [compile_rx(schema_to_rx(s)) for s in NUMBER_SCHEMAS]


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**6, 10**6), st.sampled_from(RANGES))
def test_int_range_exact(int_dfas, n, bounds):
    lo, hi = bounds
    assert int_dfas[bounds].fullmatch(str(n)) == ((lo is None or n >= lo) and (hi is None or n <= hi))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.integers(-100, 100), st.floats(-20, 20, allow_nan=False).map(lambda x: round(x, 3))),
       st.integers(0, len(NUMBER_SCHEMAS) - 1))
def test_number_bounds_never_false_accept(number_dfas, value, which):
    text = json.dumps(value)
    if number_dfas[which].fullmatch(text):
        schema = dict(NUMBER_SCHEMAS[which])
        step = schema.pop("multipleOf", None)
        jsonschema.validate(value, schema)
        # multipleOf is checked exactly (jsonschema's float division says -4.81 % 0.01 != 0)
        assert step is None or Decimal(text) % Decimal(str(step)) == 0


def test_number_bounds_accept_the_boundary(number_dfas):
    assert number_dfas[0].fullmatch("1.1") and not number_dfas[0].fullmatch("1.09")
    assert number_dfas[1].fullmatch("1.2") and not number_dfas[1].fullmatch("1.1")
    assert number_dfas[2].fullmatch("3.25") and number_dfas[2].fullmatch("3.2") and not number_dfas[2].fullmatch("3.3")
    assert number_dfas[7].fullmatch("-14") and not number_dfas[7].fullmatch("15")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=8))
def test_string_literal_is_json_dumps(text):
    dfa = _string_dfa()
    assert dfa.fullmatch(json.dumps(text, ensure_ascii=False))  # st.text() has no lone surrogates


@functools.lru_cache(maxsize=1)
def _string_dfa():
    return compile_rx(J.STRING)


def test_non_canonical_escapes_rejected():
    assert not _string_dfa().fullmatch('"\\u0041"') and not _string_dfa().fullmatch('"\\/"')
