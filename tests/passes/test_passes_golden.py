"""Golden IR tests: input IR text → pass pipeline → expected IR text (plan block included).

Regenerate an expected file only after reading the diff: each one is a reviewed decision of a pass.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import passes

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "fold_text": ("fold_text", "fold-text"),
    "hoist_prefix": ("hoist_prefix", "hoist-prefix"),
    "batch_forks": ("batch", "batch-forks"),
    "batch_selects": ("batch", "batch-selects"),
    "compile_constraints": ("constraints", "compile-constraints"),
    # joins move past what cannot observe their wait; stop at forks, name clashes, concat joins
    "sink_joins": ("sink_joins", "sink-joins"),
    "sink_joins_o2": ("sink_joins", 2),
    "o2_hoist": ("hoist_prefix", 2),
    "o2_batch": ("batch", 2),
    "o2_fold": ("fold_text", 2),
    "o1_fold": ("fold_text", 1),
    # a switch: passes work inside its cases and never treat the cases as if all ran
    "switch_fold_text": ("switch", "fold-text"),
    "switch_hoist_prefix": ("switch", "hoist-prefix"),
    "switch_batch_forks": ("switch", "batch-forks"),
    "switch_batch_selects": ("switch", "batch-selects"),
    "switch_compile_constraints": ("switch", "compile-constraints"),
    "switch_o2": ("switch", 2),
}


def fake_compile(kind: str, source: str) -> tuple[str, int]:
    """Stands in for the grammar compiler: a content hash and a made-up state count."""
    return hashlib.sha256((kind + "\0" + source).encode()).hexdigest(), len(source)


OVERRIDES = {"compile-constraints": {"compile_fn": fake_compile, "dtype_regex": (("int", "[0-9]+"),)}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    source, pipeline = CASES[case]
    graph = passes.parse_graph((GOLDEN / f"{source}.in.ir").read_text())
    out = passes.optimize(graph, pipeline, overrides=OVERRIDES)
    assert passes.format_graph(out) == (GOLDEN / f"{case}.out.ir").read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_output_parses_back(case: str) -> None:
    text = (GOLDEN / f"{case}.out.ir").read_text()
    assert passes.format_graph(passes.parse_graph(text)) == text


def test_passes_do_not_mutate_their_input() -> None:
    text = (GOLDEN / "fold_text.in.ir").read_text()
    graph = passes.parse_graph(text)
    passes.optimize(graph, 2, overrides=OVERRIDES)
    assert passes.format_graph(graph) == text


def test_passes_are_idempotent() -> None:
    graph = passes.parse_graph((GOLDEN / "hoist_prefix.in.ir").read_text())
    once = passes.optimize(graph, 2, overrides=OVERRIDES)
    twice = passes.optimize(once, 2, overrides=OVERRIDES)
    assert passes.format_graph(twice) == passes.format_graph(once)
