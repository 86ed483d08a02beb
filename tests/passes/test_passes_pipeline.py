"""Pipelines, the registry, options, verification around passes, and pass helpers."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

import ir
import passes
import sglc as sgl
from passes.hoist_prefix import common_prefix, token_safe
from passes.plan import Plan, get_plan, with_plan


def test_parse_pipeline_with_options() -> None:
    ps = passes.parse_pipeline("fold-text, hoist-prefix{min_fanout=3, selects=False},batch-forks")
    assert [p.name for p in ps] == ["fold-text", "hoist-prefix", "batch-forks"]
    assert ps[1] == passes.HoistPrefix(min_fanout=3, selects=False)
    assert passes.PassManager(ps).spec() == "fold-text,hoist-prefix{min_fanout=3,selects=False},batch-forks"


def test_boolean_options_in_either_spelling() -> None:
    """``entry=false`` (lowercase, as on a command line) is False, not the truthy string "false"."""
    for text in ("false", "False", "FALSE"):
        assert passes.parse_pipeline(f"hoist-prefix{{entry={text}}}")[0].entry is False
    assert passes.parse_pipeline("hoist-prefix{entry=true,selects=False}")[0] == passes.HoistPrefix(entry=True,
                                                                                                     selects=False)


@pytest.mark.parametrize("text, message", [
    ("fold-text,nope", "unknown pass 'nope'"),
    ("hoist-prefix{entry=flase}", "option entry='flase' of pass 'hoist-prefix' must be bool"),
    ("hoist-prefix{min_fanout=two}", "option min_fanout='two' of pass 'hoist-prefix' must be int"),
    ("hoist-prefix{min_fanout=True}", "must be int"),
    ("fold-text{drop_empty=1}", "must be bool"),
    ("hoist-prefix{bogus=1}", "has no option(s) ['bogus']"),
    ("hoist-prefix{min_fanout}", "needs a value"),
    ("fold-text;;", "cannot parse pipeline"),
])
def test_bad_pipelines_raise_pass_error(text: str, message: str) -> None:
    with pytest.raises(passes.PassError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        passes.parse_pipeline(text)


def test_opt_levels() -> None:
    assert passes.pipeline_for(0) == ""
    assert "compile-constraints" in passes.pipeline_for(1) and "hoist-prefix" not in passes.pipeline_for(1)
    assert passes.pipeline_for(2).split(",") == ["fold-text", "sink-joins", "hoist-prefix", "batch-forks", "batch-selects",
                                                  "compile-constraints"]
    with pytest.raises(passes.PassError, match="-O7"):
        passes.pipeline_for(7)


@dataclass(frozen=True)
class _Breaker(passes.Pass):
    """A broken pass: points a var_ref at a node that defines nothing."""

    name = "breaker"

    def apply(self, graph: ir.Graph) -> ir.Graph:
        out = graph.copy()
        nid = next(i for i, n in out.items() if n.kind == "var_ref")
        out.replace(nid, ir.VarRef(stream=out.node(nid).stream, name="x", source=0))
        return out


def test_verifier_runs_after_every_pass() -> None:
    graph = _program().trace()
    with pytest.raises(passes.PassError, match="after pass 'breaker'"):
        passes.PassManager([passes.FoldText(), _Breaker()]).run(graph)


def test_plan_naming_a_missing_node_fails_verification() -> None:
    graph = with_plan(_program().trace(), Plan(gen_batches=((998, 999),)))
    with pytest.raises(passes.PassError, match="before the pipeline"):
        passes.optimize(graph, "fold-text")


def test_print_after_all_callback_sees_each_pass() -> None:
    seen: list[str] = []
    passes.optimize(_program().trace(), 2, after_pass=lambda p, g: seen.append(p.name))
    assert seen == passes.pipeline_for(2).split(",")


def test_constraint_that_does_not_compile_names_the_gen() -> None:
    @sgl.function
    def prog(s):
        s += "x" + sgl.gen("bad", regex="(")

    def broken(kind: str, source: str) -> tuple[str, int]:
        raise ValueError("unbalanced parenthesis")

    with pytest.raises(passes.PassError, match="gen 'bad'.*unbalanced"):
        passes.optimize(prog.trace(), "compile-constraints", overrides={"compile-constraints": {"compile_fn": broken}})


@pytest.mark.parametrize("texts, expected", [
    (["Tip 1: ", "Tip 2: "], "Tip"),
    (["Tell me about cats", "Tell me about dogs"], "Tell me about"),
    (["Same text", "Same text"], "Same text"),
    (["line one\nA", "line one\nB"], "line one"),
    (["Q1", "Q2"], ""),
    (["abc"], "abc"),
])
def test_token_safe_common_prefix(texts: list[str], expected: str) -> None:
    assert token_safe(common_prefix(texts), texts) == expected


def test_traced_programs_round_trip_through_ir_text() -> None:
    graph = _program().trace()
    assert passes.parse_graph(ir.print_graph(graph)) == graph
    optimized = passes.optimize(graph, 2)
    back = passes.parse_graph(passes.format_graph(optimized))
    assert back == optimized and get_plan(back) == get_plan(optimized)


def _program() -> sgl.SglFunction:
    @sgl.function
    def tips(s, topic):
        s += "Two tips about " + topic + ":\n"
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += "Tip " + str(i + 1) + ": " + sgl.gen("tip", max_tokens=8)
        forks.join()
        s += "First: " + forks[0]["tip"]
        s += sgl.select("ok", choices=["yes", "no"])

    return tips
