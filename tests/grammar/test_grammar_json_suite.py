"""The JSON Schema Test Suite (draft 2020-12): compile-or-refuse, never a silent wrong answer."""
from __future__ import annotations

import logging

import pytest
from json_suite import run_suite, suite_dir

ROOT = suite_dir()
pytestmark = pytest.mark.skipif(ROOT is None, reason="JSON Schema Test Suite not found "
                                "(set SGLC_JSON_SCHEMA_SUITE or place it at ../shared/data/...)")


@pytest.fixture(scope="module")
def result():
    logging.getLogger("grammar").setLevel(logging.ERROR)  # unenforced formats are logged
    return run_suite(ROOT)


def test_no_crashes(result):
    assert result.errors == []


def test_zero_false_accepts(result):
    assert result.false_accepts == []


def test_coverage_and_false_rejects(result):
    print(f"\nJSON Schema Test Suite: {result.compiled}/{result.groups} schemas compiled "
          f"({result.pushdown} with recursive $ref, run as pushdown automata), "
          f"{result.checked} instances checked, {len(result.false_rejects)} false rejects")
    assert result.compiled >= 300
    assert result.pushdown >= 3  # recursive $ref groups compile to grammars, not bounded unrollings
    assert len(result.false_rejects) <= 0.01 * result.checked
